//! Metrics end to end: a real Prometheus (Debian's, see
//! `calbridge_e2e::prometheus`) scrapes the scheduler and the Google
//! adapter while a scenario runs (a connected account with push, a write,
//! an outside change, throttling with Retry-After, a failed sync, a
//! free/busy query, a live change stream, channel renewals); PromQL answers
//! what the dashboard shows, `promtool check metrics` finds nothing wrong
//! with either exposition, every query of the shipped Grafana dashboard
//! returns data, and no label carries a user's address, an id or a token.

use std::time::Duration;

use anyhow::{Context as _, Result};
use calbridge::pb;
use calbridge_e2e::google::{GoogleOptions, GoogleStack};
use calbridge_e2e::prometheus::{promtool_check_metrics, Prometheus, Sample};
use calbridge_e2e::{change_cursor, next_change, sync_now_and_wait, timed_event};
use calbridge_fake_google::control::Fault;
use chrono::{Duration as Span, Utc};
use serde_json::json;

const USER: &str = "metrics.user@gmail.example";
const WAIT: Duration = Duration::from_secs(60);

fn total(samples: &[Sample]) -> f64 {
    samples.iter().map(|s| s.value).sum()
}

async fn at_least(prom: &Prometheus, promql: &str, min: f64) -> Result<Vec<Sample>> {
    prom.wait_for(promql, |s| !s.is_empty() && total(s) >= min, WAIT)
        .await
}

async fn exposition(addr: std::net::SocketAddr) -> Result<String> {
    let resp = reqwest::get(format!("http://{addr}/metrics")).await?;
    anyhow::ensure!(
        resp.status().is_success(),
        "GET /metrics: {}",
        resp.status()
    );
    let ct = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    anyhow::ensure!(ct.starts_with("text/plain"), "content type {ct}");
    Ok(resp.text().await?)
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_scrapes_every_process_and_every_dashboard_query_answers() -> Result<()> {
    let config = tempfile::NamedTempFile::new()?;
    // Channels live 8 s, so renewals happen within the test.
    std::fs::write(config.path(), "[sync]\npush_channel_ttl_seconds = 8\n")?;
    let metrics_flags = vec!["--metrics-listen".to_string(), "127.0.0.1:0".to_string()];
    let mut scheduler_flags = metrics_flags.clone();
    scheduler_flags.extend(["--config".into(), config.path().display().to_string()]);
    let g = GoogleStack::start(GoogleOptions {
        adapter_flags: metrics_flags,
        scheduler_flags,
        ..Default::default()
    })
    .await?;
    let scheduler_metrics = g
        .stack
        .scheduler
        .metrics
        .context("the scheduler announced no metrics address")?;
    let adapter_metrics = g
        .adapter
        .metrics
        .context("the Google adapter announced no metrics address")?;
    let prom = Prometheus::start(&[
        ("scheduler", scheduler_metrics),
        ("google", adapter_metrics),
    ])
    .await?;

    // The scenario.
    g.user(USER).await?;
    let mut c = g.stack.tenant_client("metrics").await?;
    let a = g.connect(&mut c, USER, pb::AccessLevel::ReadWrite).await?;
    let c0 = change_cursor(&mut c).await?;
    let mut watch = c
        .watch_changes(pb::WatchChangesRequest { cursor: c0.clone() })
        .await?
        .into_inner();
    c.upsert_event(pb::UpsertEventRequest {
        account_id: a.account_id.clone(),
        calendar_id: "primary".into(),
        client_event_id: "metrics-1".into(),
        event: Some(timed_event(
            "Metrics review",
            Utc::now() + Span::days(2),
            30,
        )),
        ..Default::default()
    })
    .await?;
    // An outside change arrives by push (the webhook forwards it).
    let start = (Utc::now() + Span::days(3)).to_rfc3339();
    let end = (Utc::now() + Span::days(3) + Span::minutes(30)).to_rfc3339();
    g.control
        .insert_event(
            USER,
            &json!({"summary": "Outside", "start": {"dateTime": start}, "end": {"dateTime": end}}),
        )
        .await?;
    next_change(&mut c, &c0, |ch| {
        ch.event.as_ref().is_some_and(|e| e.title == "Outside")
    })
    .await?;
    // The live stream delivers too.
    tokio::time::timeout(WAIT, watch.message())
        .await
        .context("no change on the live stream")??;
    // Throttled: two 429s with Retry-After, then the sync goes through.
    g.control
        .inject_fault(&Fault {
            status: 429,
            reason: "rateLimitExceeded".into(),
            retry_after_seconds: Some(1),
            count: 2,
            path_contains: Some("/events".into()),
        })
        .await?;
    sync_now_and_wait(&mut c, &a.account_id, "primary").await?;
    c.query_free_busy(pb::QueryFreeBusyRequest {
        account_ids: vec![a.account_id.clone()],
        window: Some(pb::TimeWindow {
            start: Some(prost_types::Timestamp {
                seconds: Utc::now().timestamp(),
                nanos: 0,
            }),
            end: Some(prost_types::Timestamp {
                seconds: (Utc::now() + Span::days(7)).timestamp(),
                nanos: 0,
            }),
        }),
    })
    .await?;
    // A sync that fails: the provider refuses the listing outright.
    g.control
        .inject_fault(&Fault {
            status: 400,
            reason: "badRequest".into(),
            retry_after_seconds: None,
            count: 1,
            path_contains: Some("/events".into()),
        })
        .await?;
    c.sync_now(pb::SyncNowRequest {
        account_id: a.account_id.clone(),
        calendar_id: "primary".into(),
    })
    .await?;

    // What Prometheus answers.
    prom.targets_up(WAIT).await?;
    let j = |job: &str, rest: &str| format!("{{job=\"{job}\"{rest}}}");
    at_least(
        &prom,
        &format!(
            "sum(rpc_server_duration_seconds_count{})",
            j(
                "scheduler",
                ",rpc_method=\"UpsertEvent\",rpc_grpc_status_code=\"0\""
            )
        ),
        1.0,
    )
    .await?;
    at_least(
        &prom,
        &format!(
            "sum(rpc_client_duration_seconds_count{})",
            j(
                "scheduler",
                ",rpc_service=\"calbridge.v1.CalendarAdapter\",rpc_method=~\".*SyncEvents\""
            )
        ),
        1.0,
    )
    .await?;
    at_least(
        &prom,
        &format!(
            "sum(rpc_server_duration_seconds_count{})",
            j("google", ",rpc_service=\"calbridge.v1.CalendarAdapter\"")
        ),
        1.0,
    )
    .await?;
    for status in ["200", "429"] {
        at_least(
            &prom,
            &format!(
                "sum(http_client_request_duration_seconds_count{})",
                j(
                    "google",
                    &format!(
                        ",calbridge_provider=\"google\",http_response_status_code=\"{status}\""
                    )
                )
            ),
            1.0,
        )
        .await?;
    }
    at_least(
        &prom,
        "sum(calbridge_provider_retry_after_seconds_count{calbridge_provider=\"google\"})",
        2.0,
    )
    .await?;
    at_least(
        &prom,
        "sum(calbridge_provider_throttle_wait_seconds_sum{calbridge_wait_reason=\"retry_after\"})",
        1.0,
    )
    .await?;
    at_least(
        &prom,
        "sum(calbridge_webhook_notifications_total{outcome=\"forwarded\"})",
        1.0,
    )
    .await?;
    at_least(
        &prom,
        "sum(calbridge_sync_failures_total{calbridge_provider=\"google\"})",
        1.0,
    )
    .await?;
    at_least(
        &prom,
        "sum(calbridge_sync_lag_seconds_count{calbridge_provider=\"google\"})",
        1.0,
    )
    .await?;
    at_least(
        &prom,
        "sum(calbridge_availability_query_duration_seconds_count{rpc_method=\"QueryFreeBusy\"})",
        1.0,
    )
    .await?;
    at_least(&prom, "calbridge_change_feed_head_sequence", 1.0).await?;
    at_least(&prom, "calbridge_push_channels_active", 1.0).await?;
    // Every calendar synced within the last minute: the lag stays bounded.
    prom.wait_for(
        "calbridge_sync_lag_max_seconds",
        |s| !s.is_empty() && total(s) > 0.0 && total(s) < 60.0,
        WAIT,
    )
    .await?;
    at_least(&prom, "calbridge_store_size_bytes", 1.0).await?;
    at_least(
        &prom,
        "sum(calbridge_push_channel_renewals_total{outcome=\"renewed\"})",
        1.0,
    )
    .await?;
    // The stream is open: one watcher; every write confirmed: an empty outbox.
    prom.wait_for("calbridge_change_feed_watchers", |s| total(s) == 1.0, WAIT)
        .await?;
    prom.wait_for(
        "calbridge_outbox_depth",
        |s| !s.is_empty() && total(s) == 0.0,
        WAIT,
    )
    .await?;
    drop(watch);
    prom.wait_for("calbridge_change_feed_watchers", |s| total(s) == 0.0, WAIT)
        .await?;

    // Every panel's query of the shipped dashboard answers with data.
    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../helm/calbridge/dashboards/calbridge.json"),
    )?)?;
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .context("panels")?
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_string))
        .collect();
    assert!(exprs.len() >= 20, "{exprs:?}");
    for expr in &exprs {
        let q = expr
            .replace("$namespace", ".*")
            .replace("$__rate_interval", "5m");
        prom.wait_for(&q, |s| !s.is_empty(), WAIT)
            .await
            .with_context(|| format!("dashboard query {expr}"))?;
    }

    // Both expositions pass promtool, and no label holds a user, an id or
    // a token.
    for (name, addr) in [
        ("scheduler", scheduler_metrics),
        ("google", adapter_metrics),
    ] {
        let text = exposition(addr).await?;
        promtool_check_metrics(&text).with_context(|| format!("{name}'s /metrics"))?;
        for secret in [
            USER,
            "gmail.example",
            a.account_id.as_str(),
            "metrics-1",
            "ya29",
        ] {
            assert!(
                !text.contains(secret),
                "{name}'s /metrics holds {secret:?}:\n{text}"
            );
        }
    }
    Ok(())
}
