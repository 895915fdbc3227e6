//! The cost of transport security, in one run: the same upsert and
//! availability workloads against a plaintext stack and against a stack
//! whose links are all mutual TLS (the scheduler's listener with client
//! certificates, and scheduler → sandbox adapter). Prints figures, asserts
//! nothing about speed.
//!
//! `cargo build --release --workspace --bins && cargo bench -p calbridge-e2e --bench mtls`
//! (`BENCH_SCALE`, default 10, scales the upserts; `BENCH_PARTICIPANTS`,
//! default 20, the availability query).
//! - Upsert: sequential `UpsertEvent` latency p50/p99 (client → scheduler
//!   → adapter `CreateEvent`, two hops), and upserts/s from 16 concurrent
//!   clients.
//! - Availability: `QueryAvailability` p50/p99 on the deterministic
//!   scenario (`calbridge_scheduler::availability::scenario`) seeded into
//!   sandbox calendars; answered from the mirror, so only the client →
//!   scheduler hop is on its path.
//!
//! Connections are reused, as real clients do: the figures are the
//! per-request cost of encryption, not of handshakes.

use std::time::{Duration, Instant};

use anyhow::Result;
use calbridge::pb;
use calbridge_e2e::figures::{ms, pct};
use calbridge_e2e::tls::{mtls_stack, tenant_with, tls_admin, tls_channel, tls_client, Links};
use calbridge_e2e::{timed_event, wait_synced, SandboxClient, SchedulerClient, Stack};
use calbridge_scheduler::availability;

mod common;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const WEEK_MS: i64 = 7 * 86_400_000;
const LIFTED_QUOTAS: &str = "[quotas]\nrequests_per_second = 1000000\nrequest_burst = 1000000\n";

/// What one stack measured.
struct Figures {
    upsert_p50: Duration,
    upsert_p99: Duration,
    upserts_per_second: f64,
    availability_p50: Duration,
    availability_p99: Duration,
}

/// A started stack and its clients.
struct Running {
    _stack: Stack,
    client: SchedulerClient,
    sandbox: SandboxClient,
}

async fn plain(config: &str) -> Result<Running> {
    let stack = Stack::start_with_scheduler_flags(&["--config".into(), config.into()]).await?;
    let (_, key) = stack.tenant("bench").await?;
    let client = stack.client(Some(&key)).await?;
    let sandbox = stack.sandbox().await?;
    Ok(Running {
        _stack: stack,
        client,
        sandbox,
    })
}

async fn mutual(links: &Links, config: &str) -> Result<Running> {
    let stack = mtls_stack(links, true, &["--config".into(), config.into()]).await?;
    let mut admin = tls_admin(&stack, links)?;
    let (_, key) = tenant_with(&mut admin, "bench").await?;
    let client = tls_client(&stack, links, &key)?;
    let sandbox = pb::sandbox_control_client::SandboxControlClient::new(tls_channel(
        &format!("https://{}", stack.sandbox.addr),
        Some(&links.client_tls(true)?),
    )?);
    Ok(Running {
        _stack: stack,
        client,
        sandbox,
    })
}

async fn measure(mut r: Running, n: usize, participants: usize) -> Result<Figures> {
    let c = &mut r.client;
    let a = c
        .connect_password_account(pb::ConnectPasswordAccountRequest {
            provider: pb::Provider::Sandbox as i32,
            server_url: String::new(),
            username: "bench@example.com".into(),
            password: "pw".into(),
            access_level: pb::AccessLevel::ReadWrite as i32,
        })
        .await?
        .into_inner()
        .account_id;
    wait_synced(c, &a).await?;
    let calendar = c
        .list_calendars(pb::ListCalendarsRequest {
            account_id: a.clone(),
        })
        .await?
        .into_inner()
        .calendars
        .into_iter()
        .find(|c| c.primary)
        .expect("a primary calendar")
        .calendar_id;
    let base = chrono::Utc::now() + chrono::Duration::days(1);
    let upsert = |id: String, minute: i64| pb::UpsertEventRequest {
        provider_event_id: String::new(),
        account_id: a.clone(),
        calendar_id: calendar.clone(),
        client_event_id: id,
        event: Some(timed_event(
            "Bench",
            base + chrono::Duration::minutes(minute),
            30,
        )),
        expected_version: String::new(),
        hold_id: String::new(),
    };
    // Warm-up: connections made, caches filled.
    for i in 0..20 {
        c.upsert_event(upsert(format!("warm-{i}"), i)).await?;
    }
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        c.upsert_event(upsert(format!("seq-{i}"), i as i64)).await?;
        lat.push(t.elapsed());
    }
    let workers = 16;
    let per = n / 8;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let mut c = c.clone();
        let reqs: Vec<_> = (0..per)
            .map(|i| upsert(format!("par-{w}-{i}"), (w * per + i) as i64))
            .collect();
        tasks.push(tokio::spawn(async move {
            for r in reqs {
                c.upsert_event(r).await.expect("upsert");
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let upserts_per_second = (workers * per) as f64 / started.elapsed().as_secs_f64();

    // Availability over the seeded scenario.
    let (req, people, now) = availability::scenario(participants, 42);
    let weeks = ((chrono::Utc::now().timestamp_millis() - now) / WEEK_MS) + 1;
    let shift = weeks * WEEK_MS;
    let members = common::seed(c, &mut r.sandbox, &people, shift, weeks).await?;
    let member = |i: usize| pb::AvailabilityMember {
        account_id: members[i].0.clone(),
        working_hours_id: format!("wh{i}"),
        max_events_per_day: members[i].1,
        max_events_per_week: members[i].2,
        ..Default::default()
    };
    let request = calbridge_scheduler::meetings::scenario_request(&req, member, shift);
    c.query_availability(request.clone()).await?;
    let mut t = Vec::with_capacity(500);
    for _ in 0..500 {
        let s = Instant::now();
        c.query_availability(request.clone()).await?;
        t.push(s.elapsed());
    }
    Ok(Figures {
        upsert_p50: pct(&mut lat, 0.5),
        upsert_p99: pct(&mut lat, 0.99),
        upserts_per_second,
        availability_p50: pct(&mut t, 0.5),
        availability_p99: pct(&mut t, 0.99),
    })
}

impl Figures {
    fn mean(&self, other: &Figures) -> Figures {
        Figures {
            upsert_p50: (self.upsert_p50 + other.upsert_p50) / 2,
            upsert_p99: (self.upsert_p99 + other.upsert_p99) / 2,
            upserts_per_second: (self.upserts_per_second + other.upserts_per_second) / 2.0,
            availability_p50: (self.availability_p50 + other.availability_p50) / 2,
            availability_p99: (self.availability_p99 + other.availability_p99) / 2,
        }
    }
}

fn overhead(plain: f64, tls: f64) -> String {
    format!("{:+.1} %", (tls / plain - 1.0) * 100.0)
}

#[tokio::main]
async fn main() -> Result<()> {
    let scale: usize = std::env::var("BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let participants: usize = std::env::var("BENCH_PARTICIPANTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let n = 50 * scale;
    let config = tempfile::NamedTempFile::new()?;
    std::fs::write(config.path(), LIFTED_QUOTAS)?;
    let config = config.path().display().to_string();

    // Plaintext, mutual TLS, mutual TLS, plaintext: neither side gains
    // from running first or last; each figure is the mean of its two.
    let links = Links::new(&["127.0.0.1", "localhost"])?;
    let p1 = measure(plain(&config).await?, n, participants).await?;
    let m1 = measure(mutual(&links, &config).await?, n, participants).await?;
    let m2 = measure(mutual(&links, &config).await?, n, participants).await?;
    let p2 = measure(plain(&config).await?, n, participants).await?;
    let (p, m) = (p1.mean(&p2), m1.mean(&m2));

    println!("transport security: plaintext vs mutual TLS on every link, same run (two stacks of each, ABBA)");
    println!(
        "{:<40} {:>14} {:>14} {:>10}",
        "", "plaintext", "mutual TLS", "overhead"
    );
    let row = |name: &str, a: Duration, b: Duration| {
        println!(
            "{name:<40} {:>14} {:>14} {:>10}",
            ms(a),
            ms(b),
            overhead(a.as_secs_f64(), b.as_secs_f64())
        )
    };
    row(&format!("upsert p50 (n={n})"), p.upsert_p50, m.upsert_p50);
    row("upsert p99", p.upsert_p99, m.upsert_p99);
    println!(
        "{:<40} {:>14.0} {:>14.0} {:>10}",
        "upserts/s, 16 concurrent clients",
        p.upserts_per_second,
        m.upserts_per_second,
        overhead(m.upserts_per_second, p.upserts_per_second)
    );
    row(
        &format!("availability p50 ({participants} participants)"),
        p.availability_p50,
        m.availability_p50,
    );
    row("availability p99", p.availability_p99, m.availability_p99);
    Ok(())
}
