//! Microsoft benchmark: prints figures, asserts nothing about speed.
//!
//! Run with `cargo build --release --workspace --bins && cargo bench -p calbridge-e2e --bench google --bench microsoft`
//! to have Google's figures from the same run beside these (`BENCH_SCALE`,
//! default 10, scales the number of operations).
//! Real processes on loopback (scheduler, Microsoft adapter with its HTTPS
//! webhook) and the fake Graph in this process. Measures:
//! - calbridge's own share of push latency: from a Graph-shaped change
//!   notification POSTed to the adapter's webhook to the change on
//!   `WatchChanges` (including the delta round the notification causes,
//!   answered by the fake on loopback);
//! - the whole path from an outside edit at the fake (which then delivers
//!   the notification itself) to `WatchChanges`, for comparison;
//! - webhook acknowledgement latency, one at a time on one connection, and
//!   under a burst of 200 notifications each on a new TLS connection;
//! - upserts/s through gRPC → scheduler → Microsoft adapter → fake;
//! - Graph requests per calendar per idle hour: the requests of idle polls
//!   counted at the fake, times the polls an hour makes at the adapter's
//!   suggested cadence with push, plus subscription renewals.
//!
//! The adapter keeps its per-mailbox budget (at most 990 requests a
//! minute, below Graph's limit), so the default scale stays under it.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use calbridge::pb;
use calbridge_e2e::figures::summary;
use calbridge_e2e::microsoft::{MicrosoftOptions, MicrosoftStack};
use calbridge_e2e::timed_event;
use calbridge_fake_graph::{DeliveryOptions, SubscriptionInfo};
use chrono::Utc;
use serde_json::json;
use tokio_stream::StreamExt;

fn outside_event(i: usize) -> serde_json::Value {
    let start = Utc::now() + chrono::Duration::days(2) + chrono::Duration::minutes(i as i64 * 30);
    json!({
        "subject": format!("Outside {i}"),
        "start": {"dateTime": start.format("%Y-%m-%dT%H:%M:%S").to_string(), "timeZone": "UTC"},
        "end": {"dateTime": (start + chrono::Duration::minutes(30)).format("%Y-%m-%dT%H:%M:%S").to_string(), "timeZone": "UTC"},
    })
}

/// POSTs a Graph-shaped change notification for `sub` (with the
/// `clientState` StartWatch gave it) to its notification URL; true when
/// it was acknowledged.
async fn notify(
    https: &reqwest::Client,
    sub: &SubscriptionInfo,
    client_state: &str,
) -> Result<bool> {
    let body = json!({"value": [{
        "subscriptionId": sub.id,
        "subscriptionExpirationDateTime": sub.expires,
        "changeType": "updated",
        "clientState": client_state,
        "tenantId": "7b1e3c52-0d1e-4f7a-9c21-4f1b7a9e0c11",
        "resource": "Users/u/Events/e",
        "resourceData": {"@odata.type": "#Microsoft.Graph.Event", "id": "e"},
    }]});
    let r = https.post(&sub.notification_url).json(&body).send().await?;
    Ok(r.status().is_success())
}

/// Reads the change stream until the event titled `title` arrives.
async fn wait_for_title(stream: &mut tonic::Streaming<pb::Change>, title: &str) -> Result<()> {
    loop {
        let ch = tokio::time::timeout(Duration::from_secs(60), stream.next())
            .await?
            .ok_or_else(|| anyhow!("stream ended"))??;
        if ch.event.as_ref().is_some_and(|e| e.title == title) {
            return Ok(());
        }
    }
}

fn https_client(ca: &[u8]) -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca)?)
        .no_proxy()
        .build()?)
}

#[tokio::main]
async fn main() -> Result<()> {
    let scale: usize = std::env::var("BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let m = MicrosoftStack::start(MicrosoftOptions {
        no_prism: true,
        ..Default::default()
    })
    .await?;
    let user = "bench@contoso.example";
    m.user(user).await?;
    let (_, key) = m.stack.tenant("bench").await?;
    let mut c = m.stack.client(Some(&key)).await?;
    let account = m
        .connect(&mut c, user, pb::AccessLevel::ReadWrite)
        .await?
        .account_id;
    let primary = m.primary(&mut c, &account).await?;
    let sub = m.subscription(user, "a subscription", |_| true).await?;
    // The clientState Graph echoes: the one StartWatch gave the
    // subscription, as the fake recorded it.
    let client_state = sub
        .client_state
        .clone()
        .context("the subscription has no clientState")?;
    m.control.insert_event(user, &outside_event(0)).await?;
    let ca = m.ca_pem.clone();
    let https = https_client(&ca)?;
    let cursor = calbridge_e2e::change_cursor(&mut c).await?;
    let mut stream = c
        .watch_changes(pb::WatchChangesRequest { cursor })
        .await?
        .into_inner();
    wait_for_title(&mut stream, "Outside 0").await?;
    let n = 5 * scale;

    // 1. calbridge's share: our own notification POSTed to the webhook.
    m.control
        .set_delivery_options(&DeliveryOptions {
            drop: true,
            ..Default::default()
        })
        .await?;
    let mut share = Vec::with_capacity(n);
    let mut acks = Vec::with_capacity(n);
    for i in 1..=n {
        m.control.insert_event(user, &outside_event(i)).await?;
        let t = Instant::now();
        let acked = notify(&https, &sub, &client_state).await?;
        acks.push(t.elapsed());
        anyhow::ensure!(acked, "the webhook refused a notification");
        wait_for_title(&mut stream, &format!("Outside {i}")).await?;
        share.push(t.elapsed());
    }

    // 2. The whole path with the fake delivering.
    m.control
        .set_delivery_options(&DeliveryOptions::default())
        .await?;
    let mut whole = Vec::with_capacity(n);
    for i in n + 1..=2 * n {
        let t = Instant::now();
        m.control.insert_event(user, &outside_event(i)).await?;
        wait_for_title(&mut stream, &format!("Outside {i}")).await?;
        whole.push(t.elapsed());
    }

    // 3. Upserts through the scheduler (before the burst below, whose
    // syncs spend the mailbox's request budget).
    let count = 5 * scale;
    let base = Utc::now() + chrono::Duration::days(10);
    let mut ups = Vec::with_capacity(count);
    let started = Instant::now();
    for i in 0..count {
        let t = Instant::now();
        c.upsert_event(pb::UpsertEventRequest {
            account_id: account.clone(),
            calendar_id: primary.clone(),
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
    let rate = count as f64 / started.elapsed().as_secs_f64();

    // 4. Acknowledgements under a burst of 200, each on a new TLS
    // connection (its own client).
    let mut burst = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let https = https_client(&ca)?;
        let sub = sub.clone();
        let state = client_state.clone();
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let acked = notify(&https, &sub, &state).await?;
            Ok::<_, anyhow::Error>((acked, t.elapsed()))
        }));
    }
    for t in tasks {
        let (ok, d) = t.await??;
        anyhow::ensure!(ok, "a burst notification was refused");
        burst.push(d);
    }

    // 5. Idle cost: polls with nothing changed, requests counted at the
    // fake.
    let (_, before) = m.control.stats().await?;
    let polls = 20;
    for _ in 0..polls {
        calbridge_e2e::sync_now_and_wait(&mut c, &account, &primary).await?;
    }
    let (_, after) = m.control.stats().await?;
    let per_poll = (after.len() - before.len()) as f64 / f64::from(polls);
    let caps = pb::calendar_adapter_client::CalendarAdapterClient::new(
        calbridge_e2e::channel(&m.adapter.url()).await?,
    )
    .describe(pb::DescribeRequest {})
    .await?
    .into_inner();
    let polls_per_hour = 3600.0 / f64::from(caps.poll_interval_seconds.max(1));
    // Subscriptions get the scheduler's channel lifetime (24 h, within
    // Graph's 4,230 minutes) and are replaced at three quarters: a create
    // and a delete every 18 h.
    let renewals_per_hour = 2.0 / 18.0;

    println!("Microsoft (fake Graph on loopback, real scheduler and adapter processes)");
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
        "webhook acknowledgement, 200 new TLS connections at once",
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
