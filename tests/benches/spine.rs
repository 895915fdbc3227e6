//! Spine benchmark: prints figures, asserts nothing about speed.
//!
//! Run with `cargo build --release --workspace --bins && cargo bench -p calbridge-e2e --bench spine`
//! (`BENCH_SCALE`, default 10, scales the number of operations).
//! Measures, over real processes on loopback:
//! - upsert latency p50/p99 and upserts/s through gRPC → scheduler → sandbox adapter,
//!   beside the adapter's own CreateEvent latency called directly (the baseline, same run);
//! - `WatchChanges` delivery latency from a sandbox "outside edit";
//! - free/busy RPC throughput for one account over one week.

use std::time::{Duration, Instant};

use anyhow::Result;
use calbridge::pb;
use calbridge_e2e::figures::{ms, pct};
use calbridge_e2e::{channel, timed_event, Stack};
use chrono::Utc;
use tokio_stream::StreamExt;

#[tokio::main]
async fn main() -> Result<()> {
    // The tenant's request rate quota is lifted (4 clients ask for free/busy
    // as fast as they can): the figures are the scheduler's, not the quota's.
    let config = tempfile::NamedTempFile::new()?;
    std::fs::write(
        config.path(),
        "[quotas]\nrequests_per_second = 1000000\nrequest_burst = 1000000\n",
    )?;
    let stack = Stack::start_with_scheduler_flags(&[
        "--config".into(),
        config.path().display().to_string(),
    ])
    .await?;
    let (_, key) = stack.tenant("bench").await?;
    let mut c = stack.client(Some(&key)).await?;
    let (account, calendar) = stack
        .sandbox_account(&mut c, "bench@example.com", "pw-bench")
        .await?;
    let base = Utc::now() + chrono::Duration::days(1);

    // Baseline: the adapter's CreateEvent, called directly.
    let mut adapter = pb::calendar_adapter_client::CalendarAdapterClient::new(
        channel(&stack.sandbox.url()).await?,
    );
    let creds = adapter
        .check_password(pb::CheckPasswordRequest {
            server_url: String::new(),
            username: "baseline@example.com".into(),
            password: "pw".into(),
            access_level: pb::AccessLevel::ReadWrite as i32,
        })
        .await?
        .into_inner();
    let scale: usize = std::env::var("BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let n = 50 * scale;
    let mut direct = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        adapter
            .create_event(pb::ProviderCreateEventRequest {
                credentials: Some(creds.clone()),
                calendar_id: "baseline@example.com/primary".into(),
                event: Some(timed_event(
                    "Direct",
                    base + chrono::Duration::minutes(i as i64),
                    30,
                )),
                idempotency_key: format!("k{i}"),
            })
            .await?;
        direct.push(t.elapsed());
    }

    // Sequential upserts through the scheduler.
    let mut lat = Vec::with_capacity(n);
    let started = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        c.upsert_event(pb::UpsertEventRequest {
            provider_event_id: String::new(),
            account_id: account.clone(),
            calendar_id: calendar.clone(),
            client_event_id: format!("seq-{i}"),
            event: Some(timed_event(
                "Bench",
                base + chrono::Duration::minutes(i as i64),
                30,
            )),
            expected_version: String::new(),
            hold_id: String::new(),
        })
        .await?;
        lat.push(t.elapsed());
    }
    let seq_rate = n as f64 / started.elapsed().as_secs_f64();

    // Concurrent upserts: 16 clients.
    let workers = 16;
    let per = 10 * scale;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (mut c, account, calendar) = (c.clone(), account.clone(), calendar.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..per {
                c.upsert_event(pb::UpsertEventRequest {
                    provider_event_id: String::new(),
                    account_id: account.clone(),
                    calendar_id: calendar.clone(),
                    client_event_id: format!("par-{w}-{i}"),
                    event: Some(timed_event(
                        "Bench",
                        base + chrono::Duration::minutes((w * per + i) as i64),
                        30,
                    )),
                    expected_version: String::new(),
                    hold_id: String::new(),
                })
                .await
                .expect("upsert");
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let par_rate = (workers * per) as f64 / started.elapsed().as_secs_f64();

    println!("upsert (gRPC -> scheduler -> sandbox), {n} sequential:");
    let (p50, p99) = (pct(&mut lat, 0.5), pct(&mut lat, 0.99));
    let (d50, d99) = (pct(&mut direct, 0.5), pct(&mut direct, 0.99));
    println!(
        "  p50 {}  p99 {}  {:.0} upserts/s",
        ms(p50),
        ms(p99),
        seq_rate
    );
    println!(
        "  baseline adapter CreateEvent direct: p50 {}  p99 {}",
        ms(d50),
        ms(d99)
    );
    println!(
        "  scheduler cost (durable outbox, two flushes, encryption): p50 x{:.1} the direct call",
        p50.as_secs_f64() / d50.as_secs_f64()
    );
    println!("upsert, {workers} concurrent clients: {par_rate:.0} upserts/s");

    // WatchChanges delivery latency from an outside edit.
    let mut sandbox = stack.sandbox().await?;
    let cursor = c
        .get_change_cursor(pb::GetChangeCursorRequest {})
        .await?
        .into_inner()
        .cursor;
    let mut stream = c
        .watch_changes(pb::WatchChangesRequest { cursor })
        .await?
        .into_inner();
    let rounds = 20 * scale;
    let mut delivery = Vec::with_capacity(rounds);
    for i in 0..rounds {
        let t = Instant::now();
        let e = sandbox
            .put_event(pb::PutSandboxEventRequest {
                username: "bench@example.com".into(),
                calendar_id: String::new(),
                event: Some(timed_event(
                    "Outside",
                    base - chrono::Duration::minutes(i as i64 + 1),
                    10,
                )),
            })
            .await?
            .into_inner();
        loop {
            let ch = tokio::time::timeout(Duration::from_secs(30), stream.next())
                .await?
                .ok_or_else(|| anyhow::anyhow!("stream ended"))??;
            if ch.provider_event_id == e.provider_event_id {
                break;
            }
        }
        delivery.push(t.elapsed());
    }
    println!(
        "WatchChanges delivery from a sandbox outside edit ({rounds} edits, push): p50 {}  p99 {}",
        ms(pct(&mut delivery, 0.5)),
        ms(pct(&mut delivery, 0.99))
    );

    // Free/busy for one FREE_BUSY account over one week, ~8 events a day.
    let day0 = (base + chrono::Duration::days(1))
        .date_naive()
        .and_hms_opt(8, 0, 0)
        .unwrap()
        .and_utc();
    sandbox
        .create_user(pb::CreateSandboxUserRequest {
            username: "fb@example.com".into(),
            password: "pw-fb".into(),
        })
        .await?;
    for d in 0..7 {
        for k in 0..8 {
            sandbox
                .put_event(pb::PutSandboxEventRequest {
                    username: "fb@example.com".into(),
                    calendar_id: String::new(),
                    event: Some(timed_event(
                        "Busy",
                        day0 + chrono::Duration::days(d) + chrono::Duration::minutes(90 * k),
                        45,
                    )),
                })
                .await?;
        }
    }
    let fb_account = c
        .connect_password_account(pb::ConnectPasswordAccountRequest {
            provider: pb::Provider::Sandbox as i32,
            server_url: String::new(),
            username: "fb@example.com".into(),
            password: "pw-fb".into(),
            access_level: pb::AccessLevel::FreeBusy as i32,
        })
        .await?
        .into_inner()
        .account_id;
    calbridge_e2e::wait_synced(&mut c, &fb_account).await?;
    let account = fb_account;
    let week = pb::TimeWindow {
        start: Some(calbridge::time::to_timestamp(
            day0 - chrono::Duration::hours(8),
        )),
        end: Some(calbridge::time::to_timestamp(
            day0 + chrono::Duration::days(7),
        )),
    };
    let busy = c
        .query_free_busy(pb::QueryFreeBusyRequest {
            account_ids: vec![account.clone()],
            window: Some(week),
        })
        .await?
        .into_inner();
    let intervals = busy.accounts[0].busy.len();
    let duration = Duration::from_secs(3);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (mut c, account) = (c.clone(), account.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while started.elapsed() < duration {
                let t = Instant::now();
                c.query_free_busy(pb::QueryFreeBusyRequest {
                    account_ids: vec![account.clone()],
                    window: Some(week),
                })
                .await
                .expect("free/busy");
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await?);
    }
    println!(
        "free/busy, one account, one week ({intervals} merged intervals), 4 clients: {:.0} queries/s  p50 {}  p99 {}",
        all.len() as f64 / started.elapsed().as_secs_f64(),
        ms(pct(&mut all, 0.5)),
        ms(pct(&mut all, 0.99))
    );
    Ok(())
}
