//! Fairness bench: prints figures, asserts nothing about speed.
//!
//! `cargo build --release --workspace --bins && cargo bench -p calbridge-e2e --bench fairness`
//! (`BENCH_SLOW_CALENDARS`, default 64; `BENCH_SLOW_MS`, default 1000).
//! Measures, over real processes on loopback, how long another tenant's
//! sandbox account takes from ConnectPasswordAccount to the end of its
//! initial sync: alone; beside one account (a tenant of its own) whose
//! provider takes `BENCH_SLOW_MS` to answer each listing, with
//! `BENCH_SLOW_CALENDARS` calendars polled every second; and beside eight
//! such accounts (together more slow syncs than the scheduler runs at once).

use std::time::{Duration, Instant};

use anyhow::Result;
use calbridge::pb;
use calbridge_e2e::scripted::{self, Provider, Scripted};
use calbridge_e2e::{eventually, wait_initial_sync, Stack};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// Connects a fresh sandbox account for a fresh tenant and times it until
/// its initial sync is done.
async fn other_tenant_sync(stack: &Stack, n: usize) -> Result<Duration> {
    let (_, key) = stack.tenant(&format!("other-{n}")).await?;
    let mut c = stack.client(Some(&key)).await?;
    let started = Instant::now();
    let a = c
        .connect_password_account(pb::ConnectPasswordAccountRequest {
            provider: pb::Provider::Sandbox as i32,
            server_url: String::new(),
            username: format!("other-{n}@example.com"),
            password: "pw-other".into(),
            access_level: pb::AccessLevel::ReadWrite as i32,
        })
        .await?
        .into_inner();
    wait_initial_sync(
        &mut c,
        &a.account_id,
        Duration::from_secs(600),
        Duration::from_millis(5),
    )
    .await?;
    Ok(started.elapsed())
}

async fn runs(stack: &Stack, from: usize, label: &str) -> Result<()> {
    let mut t = Vec::new();
    for i in 0..5 {
        t.push(other_tenant_sync(stack, from + i).await?);
    }
    t.sort();
    println!(
        "  {label}: median {}  max {}",
        ms(t[t.len() / 2]),
        ms(t[t.len() - 1])
    );
    Ok(())
}

async fn slow_tenant(stack: &Stack, scripted: &Scripted, n: usize) -> Result<()> {
    let (_, key) = stack.tenant(&format!("slow-{n}")).await?;
    let mut c = stack.client(Some(&key)).await?;
    scripted.connect(&mut c, "").await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let calendars = env("BENCH_SLOW_CALENDARS", 64) as usize;
    let slow = Duration::from_millis(env("BENCH_SLOW_MS", 1000));
    let (stack, scripted) = scripted::stack(
        Provider {
            lifetime_s: 3600,
            extra_calendars: calendars.saturating_sub(1),
            delay: Some(slow),
            ..Default::default()
        },
        &[],
    )
    .await?;
    println!(
        "another tenant's sandbox account, connect to end of initial sync (5 runs each; slow accounts: {calendars} calendars, {} per listing, polled every second):",
        ms(slow)
    );
    runs(&stack, 0, "alone").await?;
    slow_tenant(&stack, &scripted, 0).await?;
    eventually(Duration::from_secs(30), "slow syncs in flight", || async {
        (scripted.p().held >= 2).then_some(())
    })
    .await?;
    runs(&stack, 10, "beside 1 slow account").await?;
    for n in 1..8 {
        slow_tenant(&stack, &scripted, n).await?;
    }
    runs(&stack, 20, "beside 8 slow accounts").await?;
    println!(
        "  (slow listings in flight at the end: {})",
        scripted.p().held
    );
    Ok(())
}
