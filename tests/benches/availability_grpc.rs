//! Availability bench binary: prints figures, asserts nothing about speed.
//!
//! `cargo build --release --workspace --bins && cargo bench -p calbridge-e2e --bench availability_grpc`
//! (`BENCH_PARTICIPANTS`, default 50; `BENCH_POLL_SECONDS` to set the
//! scheduler's poll interval). On the deterministic scenario of
//! `calbridge_scheduler::availability::scenario` (four weeks, about eight
//! events a working day, working hours in eight zones, buffers, 30-minute
//! slots on a 15-minute grid) it prints, in one run:
//! - the engine's p50/p99 on the scenario in memory;
//! - the brute-force reference's time on the same input (the ratio's base);
//! - end-to-end `QueryAvailability` over gRPC on loopback, after the same
//!   busy time was put into sandbox calendars and synced into the mirror:
//!   the first request (which builds every participant from the store) and
//!   p50/p99 of the following ones (participants from the scheduler's cache;
//!   each calendar's freshness is still read per request).

use std::time::{Duration, Instant};

use anyhow::Result;
use calbridge::pb;
use calbridge_e2e::Stack;
use calbridge_scheduler::availability::{self, reference};

mod common;

fn pct(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let at = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    (at(0.5), at(0.99))
}

/// CPU time (user + system) of a process so far, from /proc (Linux).
fn cpu_time(pid: Option<u32>) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid?)).ok()?;
    // Fields after the command's closing parenthesis: utime is the 12th
    // and stime the 13th of them, in clock ticks (100 a second here).
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

const WEEK_MS: i64 = 7 * 86_400_000;

/// Scheduler configuration lifting the per-tenant request rate quota.
const LIFTED_QUOTAS: &str = "[quotas]\nrequests_per_second = 1000000\nrequest_burst = 1000000\n";

/// The scheduler's allocator here too, so that the client's share of the
/// end-to-end time (encoding 2,000 members, decoding the freshness of
/// every calendar) is not inflated by glibc's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<()> {
    let n: usize = std::env::var("BENCH_PARTICIPANTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let (req, people, now) = availability::scenario(n, 42);

    // The engine, in memory.
    let runs = if n > 500 { 100 } else { 1000 };
    let mut t = Vec::with_capacity(runs);
    let mut slots = 0;
    for _ in 0..runs {
        let s = Instant::now();
        slots = availability::query(&req, &people, now)
            .expect("valid")
            .slots
            .len();
        t.push(s.elapsed());
    }
    let (e50, e99) = pct(t);
    let s = Instant::now();
    let reference_runs = 3;
    for _ in 0..reference_runs {
        reference::query(&req, &people, now).expect("valid");
    }
    let r = s.elapsed() / reference_runs;
    println!("availability, {n} participants, 4 weeks, {slots} slots");
    println!("  engine            p50 {}  p99 {}", us(e50), us(e99));
    println!(
        "  brute force       {} per query  (engine p50 is {:.0}x faster)",
        us(r),
        r.as_secs_f64() / e50.as_secs_f64()
    );

    // The same busy time, in the mirror, shifted by whole weeks so the period
    // starts in the future (weekdays and local times are kept).
    let real_now = chrono::Utc::now().timestamp_millis();
    let weeks = ((real_now - now) / WEEK_MS) + 1;
    let shift = weeks * WEEK_MS;
    // `BENCH_POLL_SECONDS` sets the scheduler's poll interval, so that the
    // requests can also be measured without the sync loop polling every
    // calendar meanwhile (with 2,000 calendars it takes about a core).
    // The tenant's request rate quota is lifted: the figures are the
    // scheduler's, not the quota's.
    let mut toml = String::from(LIFTED_QUOTAS);
    if let Ok(s) = std::env::var("BENCH_POLL_SECONDS") {
        let seconds: u64 = s.parse()?;
        toml.push_str(&format!("[sync]\npoll_interval_seconds = {seconds}\n"));
        println!("  (scheduler polls every {seconds} s)");
    }
    let config = tempfile::NamedTempFile::new()?;
    std::fs::write(config.path(), toml)?;
    let stack = Stack::start_with_scheduler_flags(&[
        "--config".into(),
        config.path().display().to_string(),
    ])
    .await?;
    let (_, key) = stack.tenant("bench").await?;
    let mut c = stack.client(Some(&key)).await?;
    let mut sandbox = stack.sandbox().await?;
    let seed_started = Instant::now();
    let members = common::seed(&mut c, &mut sandbox, &people, shift, weeks).await?;
    println!(
        "  (seeded and synced {n} sandbox accounts in {:.1} s)",
        seed_started.elapsed().as_secs_f64()
    );

    // What the scheduler burns with no request in flight (its sync loop
    // polling every calendar) competes with the requests below.
    let pid = stack.scheduler.child.id();
    let (c0, w0) = (cpu_time(pid), Instant::now());
    tokio::time::sleep(Duration::from_secs(2)).await;
    if let (Some(a), Some(b)) = (c0, cpu_time(pid)) {
        println!(
            "  (scheduler CPU while idle: {:.0}% of a core)",
            100.0 * (b - a).as_secs_f64() / w0.elapsed().as_secs_f64()
        );
    }

    let member = |i: usize| pb::AvailabilityMember {
        account_id: members[i].0.clone(),
        working_hours_id: format!("wh{i}"),
        max_events_per_day: members[i].1,
        max_events_per_week: members[i].2,
        ..Default::default()
    };
    let request = calbridge_scheduler::meetings::scenario_request(&req, member, shift);
    // The first request builds every participant from the store; later ones
    // find them in the scheduler's participant cache.
    let s = Instant::now();
    c.query_availability(request.clone()).await?;
    println!(
        "  gRPC first request {} (participants built)",
        us(s.elapsed())
    );
    let runs = 1000;
    let mut t = Vec::with_capacity(runs);
    let mut got = 0;
    for _ in 0..runs {
        let s = Instant::now();
        got = c
            .query_availability(request.clone())
            .await?
            .into_inner()
            .slots
            .len();
        t.push(s.elapsed());
    }
    let mut sorted = t.clone();
    sorted.sort();
    let at = |p: f64| us(sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]);
    println!(
        "  gRPC distribution min {}  p10 {}  p90 {}  max {}",
        at(0.0),
        at(0.1),
        at(0.9),
        at(1.0)
    );
    let (g50, g99) = pct(t);
    println!(
        "  gRPC end to end   p50 {}  p99 {}  ({got} slots; brute force / gRPC p50 {:.0}x)",
        us(g50),
        us(g99),
        r.as_secs_f64() / g50.as_secs_f64()
    );
    Ok(())
}
