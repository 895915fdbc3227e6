//! Google benchmark: prints figures, asserts nothing about speed.
//!
//! Run with `cargo build --release --workspace --bins && cargo bench -p calbridge-e2e --bench google`
//! (`BENCH_SCALE`, default 10, scales the number of operations).
//! Real processes on loopback (scheduler, Google adapter with its HTTPS
//! webhook) and the fake Google in this process. Measures:
//! - calbridge's own share of push latency: from a Google-shaped
//!   notification POSTed to the adapter's webhook to the change on
//!   `WatchChanges` (this includes the one incremental events.list the
//!   notification causes, answered by the fake on loopback);
//! - the whole path from an outside edit at the fake (which then delivers
//!   the notification itself) to `WatchChanges`, for comparison;
//! - webhook acknowledgement latency, one at a time and under a burst of
//!   concurrent (duplicate) notifications;
//! - upserts/s through gRPC → scheduler → Google adapter → fake;
//! - Google requests per calendar per idle hour: the requests of idle polls
//!   counted at the fake, times the polls an hour makes at the adapter's
//!   suggested cadence with push, plus channel renewals.
//!
//! The adapter's per-user request budget and the fake's quotas are lifted
//! for the run (one user makes thousands of requests a minute here).

use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use calbridge::pb;
use calbridge_e2e::figures::summary;
use calbridge_e2e::google::{GoogleOptions, GoogleStack};
use calbridge_e2e::timed_event;
use calbridge_fake_google::control::{ChannelInfo, PushBehaviour};
use chrono::Utc;
use serde_json::json;
use tokio_stream::StreamExt;

fn outside_event(i: usize) -> serde_json::Value {
    let start = Utc::now() + chrono::Duration::days(2) + chrono::Duration::minutes(i as i64 * 30);
    json!({
        "summary": format!("Outside {i}"),
        "start": {"dateTime": start.format("%Y-%m-%dT%H:%M:%SZ").to_string()},
        "end": {"dateTime": (start + chrono::Duration::minutes(30)).format("%Y-%m-%dT%H:%M:%SZ").to_string()},
    })
}

/// POSTs a Google-shaped `exists` notification for `ch` to the webhook;
/// true when it was acknowledged.
async fn notify(
    https: &reqwest::Client,
    webhook: &str,
    ch: &ChannelInfo,
    number: u64,
) -> Result<bool> {
    let r = https
        .post(webhook)
        .header("X-Goog-Channel-ID", &ch.id)
        .header("X-Goog-Channel-Token", ch.token.clone().unwrap_or_default())
        .header("X-Goog-Resource-ID", &ch.resource_id)
        .header("X-Goog-Resource-URI", &ch.resource_uri)
        .header("X-Goog-Resource-State", "exists")
        .header("X-Goog-Message-Number", number.to_string())
        .header("User-Agent", "APIs-Google")
        .send()
        .await?;
    Ok(r.status().is_success())
}

/// Reads the change stream until the event titled `title` arrives.
async fn wait_for_title(stream: &mut tonic::Streaming<pb::Change>, title: &str) -> Result<()> {
    loop {
        let ch = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await?
            .ok_or_else(|| anyhow!("stream ended"))??;
        if ch.event.as_ref().is_some_and(|e| e.title == title) {
            return Ok(());
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let scale: usize = std::env::var("BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    // One user here makes far more than Google's 600 requests a minute, so
    // the adapter's per-user budget (500/min by default, by design ~8
    // requests/s sustained) and the fake's quota are lifted: the figures
    // are calbridge's own latency, not the budget's.
    let g = GoogleStack::start(GoogleOptions {
        fake: Some(calbridge_fake_google::FakeConfig {
            quota_per_user_per_minute: 1_000_000,
            quota_per_project_per_minute: 1_000_000,
            ..Default::default()
        }),
        adapter_flags: vec!["--requests-per-minute-per-user".into(), "1000000".into()],
        ..Default::default()
    })
    .await?;
    let user = "bench@gmail.example";
    g.user(user).await?;
    let (_, key) = g.stack.tenant("bench").await?;
    let mut c = g.stack.client(Some(&key)).await?;
    let account = g
        .connect(&mut c, user, pb::AccessLevel::ReadWrite)
        .await?
        .account_id;
    let channel = g.channel(user, "a push channel", |ch| !ch.stopped).await?;
    let webhook = g.webhook_url.clone().context("webhook")?;
    let https = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&g.ca_pem)?)
        .build()?;
    let cursor = calbridge_e2e::change_cursor(&mut c).await?;
    let mut stream = c
        .watch_changes(pb::WatchChangesRequest { cursor })
        .await?
        .into_inner();
    let n = 20 * scale;

    // 1. calbridge's share: our own notification POSTed to the webhook.
    g.control
        .set_push(&PushBehaviour {
            drop: true,
            ..Default::default()
        })
        .await?;
    let mut share = Vec::with_capacity(n);
    let mut acks = Vec::with_capacity(n);
    for i in 0..n {
        g.control.insert_event(user, &outside_event(i)).await?;
        let t = Instant::now();
        let acked = notify(&https, &webhook, &channel, 1000 + i as u64 * 7).await?;
        acks.push(t.elapsed());
        anyhow::ensure!(acked, "the webhook refused a notification");
        wait_for_title(&mut stream, &format!("Outside {i}")).await?;
        share.push(t.elapsed());
    }

    // 2. The whole path with the fake delivering.
    g.control.set_push(&PushBehaviour::default()).await?;
    let mut whole = Vec::with_capacity(n);
    for i in n..2 * n {
        let t = Instant::now();
        g.control.insert_event(user, &outside_event(i)).await?;
        wait_for_title(&mut stream, &format!("Outside {i}")).await?;
        whole.push(t.elapsed());
    }

    // 3. Acknowledgements under a burst of 200 concurrent duplicates.
    let mut burst = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..200u64 {
        let https = https.clone();
        let webhook = webhook.clone();
        let ch = channel.clone();
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let acked = notify(&https, &webhook, &ch, 900_000 + i).await?;
            Ok::<_, anyhow::Error>((acked, t.elapsed()))
        }));
    }
    for t in tasks {
        let (ok, d) = t.await??;
        anyhow::ensure!(ok, "a burst notification was refused");
        burst.push(d);
    }

    // 4. Upserts through the scheduler.
    let m = 10 * scale;
    let base = Utc::now() + chrono::Duration::days(10);
    let mut ups = Vec::with_capacity(m);
    let started = Instant::now();
    for i in 0..m {
        let t = Instant::now();
        c.upsert_event(pb::UpsertEventRequest {
            account_id: account.clone(),
            calendar_id: "primary".into(),
            client_event_id: format!("bench-{i}"),
            event: Some(timed_event(
                "Bench",
                base + chrono::Duration::minutes(i as i64 * 30),
                30,
            )),
            ..Default::default()
        })
        .await?;
        ups.push(t.elapsed());
    }
    let rate = m as f64 / started.elapsed().as_secs_f64();

    // 5. Idle cost: polls with nothing changed (SyncNow, then wait until the
    // calendar's last success moves), requests counted at the fake.
    g.control.reset_counters().await?;
    let polls = 20;
    for _ in 0..polls {
        calbridge_e2e::sync_now_and_wait(&mut c, &account, "primary").await?;
    }
    let per_poll = g.control.requests().await?.total as f64 / f64::from(polls);
    let caps = pb::calendar_adapter_client::CalendarAdapterClient::new(
        calbridge_e2e::channel(&g.adapter.url()).await?,
    )
    .describe(pb::DescribeRequest {})
    .await?
    .into_inner();
    let polls_per_hour = 3600.0 / f64::from(caps.poll_interval_seconds.max(1));
    // Channels live 24 h and are renewed at three quarters: a watch and a
    // stop every 18 h.
    let renewals_per_hour = 2.0 / 18.0;

    println!("Google (fake Google on loopback, real scheduler and adapter processes)");
    summary(
        "push → WatchChanges, calbridge's share (webhook POST on)",
        &mut share,
    );
    summary(
        "outside edit at the fake → WatchChanges (whole path)",
        &mut whole,
    );
    summary("webhook acknowledgement, one at a time", &mut acks);
    summary(
        "webhook acknowledgement, 200 concurrent duplicates",
        &mut burst,
    );
    summary("upsert through scheduler → adapter → fake", &mut ups);
    println!("{:<58} {rate:.0}/s sequential", "upserts");
    println!(
        "{:<58} {per_poll:.2} requests per poll × {polls_per_hour:.0} polls/h (poll every {} s with push) + {renewals_per_hour:.2} renewal requests/h = {:.1} requests per calendar per idle hour",
        "idle cost",
        caps.poll_interval_seconds,
        per_poll * polls_per_hour + renewals_per_hour
    );
    Ok(())
}
