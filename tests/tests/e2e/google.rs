//! Google Calendar end to end: the fake Google (checked against Google's
//! discovery document on every response), the real Google adapter process
//! with its HTTPS push webhook, and the real scheduler. The OAuth dance
//! through the CLI and the HTTP callback; initial and incremental sync with
//! recurring series; outside edits through push, and through polling when
//! push is dropped; upserts and deletes; a 410 resync without spurious
//! changes; a rate-limit storm waited out; invalid_grant; revocation; and a
//! FREE_BUSY account that stores no event content.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use calbridge::pb::{self, ChangeKind};
use calbridge_e2e::google::{GoogleOptions, GoogleStack};
use calbridge_e2e::{
    bin, change_cursor, changes_after, dir_contains, eventually, list_events, near_window,
    next_change, timed_event,
};
use calbridge_fake_google::control::{Fault, PushBehaviour};
use chrono::{Duration as Span, SubsecRound, Utc};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

/// The primary calendar's id as calbridge names it.
const PRIMARY: &str = "primary";

fn rfc3339(t: chrono::DateTime<Utc>) -> String {
    t.trunc_subsecs(0).to_rfc3339()
}

/// A timed Google event starting `days` from now at 10:00 UTC.
fn google_event(summary: &str, days: i64) -> Value {
    let start = (Utc::now() + Span::days(days))
        .date_naive()
        .and_hms_opt(10, 0, 0)
        .expect("valid time")
        .and_utc();
    json!({
        "summary": summary,
        "description": format!("{summary} description"),
        "start": {"dateTime": rfc3339(start), "timeZone": "Europe/London"},
        "end": {"dateTime": rfc3339(start + Span::minutes(30)), "timeZone": "Europe/London"},
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn the_oauth_dance_through_the_cli_and_the_http_callback() -> Result<()> {
    let g = GoogleStack::start(GoogleOptions::default()).await?;
    let user = "cli@gmail.example";
    g.user(user).await?;
    g.control
        .insert_event(user, &google_event("Seeded before connecting", 2))
        .await?;
    let (_, key) = g.stack.tenant("google-cli").await?;

    let mut cli = tokio::process::Command::new(bin("calbridge"))
        .args([
            "--server",
            &g.stack.scheduler.url(),
            "--api-key",
            &key,
            "--json",
            "accounts",
            "authorize",
            "--provider",
            "google",
            "--access",
            "read-write",
            "--login-hint",
            user,
            "--wait",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = BufReader::new(cli.stdout.take().context("stdout")?).lines();
    let first: Value = serde_json::from_str(&lines.next_line().await?.context("no URL line")?)?;
    let url = first["authorization_url"]
        .as_str()
        .ok_or_else(|| anyhow!("no authorization_url in {first}"))?;
    assert!(url.contains("code_challenge_method=S256"), "{url}");
    assert!(url.contains("access_type=offline"), "{url}");
    // The browser: consent at the fake, redirect to the scheduler's callback.
    let page = g.browse_consent(url).await?;
    assert!(page.contains("Calendar connected"), "{page}");
    let second = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await??
        .context("the CLI printed no account")?;
    let account: Value = serde_json::from_str(&second)?;
    assert_eq!(account["provider_account_id"], user, "{account}");
    assert!(cli.wait().await?.success());

    let mut c = g.stack.client(Some(&key)).await?;
    let account_id = account["account_id"].as_str().context("account_id")?;
    let events = list_events(&mut c, account_id, PRIMARY, near_window()).await?;
    assert!(
        events.iter().any(|e| e.title == "Seeded before connecting"),
        "{events:#?}"
    );
    g.assert_valid_responses().await
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_maps_series_and_outside_edits_arrive_by_push() -> Result<()> {
    let g = GoogleStack::start(GoogleOptions::default()).await?;
    let user = "push@gmail.example";
    g.user(user).await?;
    let mut series = google_event("Daily standup", 1);
    series["recurrence"] = json!(["RRULE:FREQ=DAILY;COUNT=5"]);
    let master = g.control.insert_event(user, &series).await?;
    let master_id = master["id"].as_str().context("id")?.to_string();
    let all_day_day = (Utc::now() + Span::days(3)).date_naive();
    g.control
        .insert_event(
            user,
            &json!({
                "summary": "Offsite",
                "start": {"date": all_day_day.to_string()},
                "end": {"date": (all_day_day + Span::days(1)).to_string()},
            }),
        )
        .await?;
    let mut c = g.stack.tenant_client("google-push").await?;
    let a = g.connect(&mut c, user, pb::AccessLevel::ReadWrite).await?;

    let events = list_events(&mut c, &a.account_id, PRIMARY, near_window()).await?;
    let standups: Vec<_> = events
        .iter()
        .filter(|e| e.title == "Daily standup")
        .collect();
    assert_eq!(standups.len(), 5, "{events:#?}");
    assert!(standups.iter().all(|e| e
        .recurrence_link
        .as_ref()
        .is_some_and(|l| l.series_event_id == master_id)));
    let offsite = events
        .iter()
        .find(|e| e.title == "Offsite")
        .context("all-day event")?;
    assert!(matches!(
        offsite.start.as_ref().and_then(|t| t.value.as_ref()),
        Some(pb::event_time::Value::Date(_))
    ));

    // Outside edits, with polling at its idle cadence (minutes): push. The
    // channel's first ("sync") message causes a sync of its own; let it
    // pass first so it cannot be what picks the edits up.
    g.channel(user, "the sync message", |ch| ch.delivered >= 1)
        .await?;
    g.settle(&mut c, &a.account_id).await?;
    let c0 = change_cursor(&mut c).await?;
    let created = g
        .control
        .insert_event(user, &google_event("Dentist", 4))
        .await?;
    let ch = next_change(&mut c, &c0, |ch| {
        ch.kind == ChangeKind::EventCreated as i32
            && ch.event.as_ref().is_some_and(|e| e.title == "Dentist")
    })
    .await?;
    let dentist_id = ch.event.context("event")?.provider_event_id;
    assert_eq!(dentist_id, created["id"].as_str().unwrap_or_default());

    let c1 = change_cursor(&mut c).await?;
    g.control
        .patch_event(user, &dentist_id, &json!({"summary": "Dentist (moved)"}))
        .await?;
    next_change(&mut c, &c1, |ch| {
        ch.kind == ChangeKind::EventUpdated as i32
            && ch
                .event
                .as_ref()
                .is_some_and(|e| e.title == "Dentist (moved)")
    })
    .await?;

    // Cancel one instance of the series, then delete the event.
    let c2 = change_cursor(&mut c).await?;
    let third = standups[2].provider_event_id.clone();
    g.control.delete_event(user, &third).await?;
    next_change(&mut c, &c2, |ch| {
        ch.provider_event_id == third
            && (ch.kind == ChangeKind::EventDeleted as i32
                || ch
                    .event
                    .as_ref()
                    .is_some_and(|e| e.status == pb::EventStatus::Cancelled as i32))
    })
    .await?;
    let c3 = change_cursor(&mut c).await?;
    g.control.delete_event(user, &dentist_id).await?;
    next_change(&mut c, &c3, |ch| {
        ch.kind == ChangeKind::EventDeleted as i32 && ch.provider_event_id == dentist_id
    })
    .await?;
    let channels = g.control.channels().await?;
    assert!(
        channels.iter().any(|ch| ch.calendar == user && !ch.stopped),
        "{channels:#?}"
    );
    g.assert_valid_responses().await
}

#[tokio::test(flavor = "multi_thread")]
async fn edits_arrive_by_polling_when_push_is_dropped() -> Result<()> {
    let g = GoogleStack::start(GoogleOptions {
        adapter_flags: vec!["--poll-interval-seconds".into(), "1".into()],
        ..Default::default()
    })
    .await?;
    let user = "poll@gmail.example";
    g.user(user).await?;
    // Every notification is lost, from the first ("sync") on.
    g.control
        .set_push(&PushBehaviour {
            drop: true,
            ..Default::default()
        })
        .await?;
    let mut c = g.stack.tenant_client("google-poll").await?;
    g.connect(&mut c, user, pb::AccessLevel::ReadWrite).await?;
    let c0 = change_cursor(&mut c).await?;
    g.control
        .insert_event(user, &google_event("Unannounced", 5))
        .await?;
    next_change(&mut c, &c0, |ch| {
        ch.event.as_ref().is_some_and(|e| e.title == "Unannounced")
    })
    .await?;
    g.assert_valid_responses().await
}

#[tokio::test(flavor = "multi_thread")]
async fn upserts_and_deletes_reach_google_once() -> Result<()> {
    let g = GoogleStack::start(GoogleOptions::default()).await?;
    let user = "writer@gmail.example";
    g.user(user).await?;
    let mut c = g.stack.tenant_client("google-write").await?;
    let a = g.connect(&mut c, user, pb::AccessLevel::ReadWrite).await?;
    let c0 = change_cursor(&mut c).await?;
    let start = Utc::now() + Span::days(6);
    let mut event = timed_event("Planning", start, 45);
    event.location = "Room 4".into();
    event.attendees = vec![pb::Attendee {
        email: "bob@example.com".into(),
        ..Default::default()
    }];
    let upsert = |e: pb::Event| pb::UpsertEventRequest {
        account_id: a.account_id.clone(),
        calendar_id: PRIMARY.into(),
        client_event_id: "order-17".into(),
        event: Some(e),
        ..Default::default()
    };
    let first = c.upsert_event(upsert(event.clone())).await?.into_inner();
    let again = c.upsert_event(upsert(event.clone())).await?.into_inner();
    let first_event = first.event.context("event")?;
    assert_eq!(
        first_event.provider_event_id,
        again.event.context("event")?.provider_event_id
    );
    let stored = g.control.events(user).await?;
    let ours: Vec<_> = stored
        .iter()
        .filter(|e| e["summary"] == "Planning" && e["status"] != "cancelled")
        .collect();
    assert_eq!(ours.len(), 1, "{stored:#?}");
    assert_eq!(ours[0]["location"], "Room 4");
    assert_eq!(ours[0]["attendees"][0]["email"], "bob@example.com");
    let private = &ours[0]["extendedProperties"]["private"];
    assert!(
        private
            .as_object()
            .is_some_and(|m| m.values().any(|v| v == "order-17")),
        "{private}"
    );

    event.title = "Planning (agenda)".into();
    c.upsert_event(upsert(event)).await?;
    g.fake_event(user, |e| e["summary"] == "Planning (agenda)")
        .await?;
    c.delete_event(pb::DeleteEventRequest {
        account_id: a.account_id.clone(),
        calendar_id: PRIMARY.into(),
        client_event_id: "order-17".into(),
        ..Default::default()
    })
    .await?;
    g.fake_event(user, |e| {
        e["id"] == first_event.provider_event_id.as_str() && e["status"] == "cancelled"
    })
    .await?;
    // The platform's own writes do not echo on the feed.
    let sync = c
        .sync_now(pb::SyncNowRequest {
            account_id: a.account_id.clone(),
            calendar_id: PRIMARY.into(),
        })
        .await;
    sync?;
    let changes = changes_after(&mut c, &c0).await?;
    assert!(
        changes
            .iter()
            .all(|ch| ch.kind == ChangeKind::AccountStatus as i32),
        "{changes:#?}"
    );
    g.assert_valid_responses().await
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_sync_token_resyncs_without_spurious_changes() -> Result<()> {
    let g = GoogleStack::start(GoogleOptions::default()).await?;
    let user = "gone@gmail.example";
    g.user(user).await?;
    for i in 0..30 {
        g.control
            .insert_event(user, &google_event(&format!("Existing {i}"), 1 + i % 20))
            .await?;
    }
    let mut c = g.stack.tenant_client("google-410").await?;
    let a = g.connect(&mut c, user, pb::AccessLevel::ReadWrite).await?;
    let c0 = change_cursor(&mut c).await?;
    g.control.expire_sync_tokens(user).await?;
    g.control
        .insert_event(user, &google_event("After expiry", 7))
        .await?;
    next_change(&mut c, &c0, |ch| {
        ch.event.as_ref().is_some_and(|e| e.title == "After expiry")
    })
    .await?;
    // The resync has happened (410 → full listing); only the real change
    // reached the feed.
    let requests = g.control.requests().await?;
    assert!(
        requests
            .by_method
            .get("calendar.events.list")
            .copied()
            .unwrap_or(0)
            >= 3,
        "{requests:#?}"
    );
    let changes = changes_after(&mut c, &c0).await?;
    assert_eq!(changes.len(), 1, "{changes:#?}");
    assert_eq!(
        list_events(&mut c, &a.account_id, PRIMARY, near_window())
            .await?
            .len(),
        31
    );
    g.assert_valid_responses().await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rate_limit_storm_is_waited_out_not_hammered() -> Result<()> {
    let g = GoogleStack::start(GoogleOptions::default()).await?;
    let user = "storm@gmail.example";
    g.user(user).await?;
    let mut c = g.stack.tenant_client("google-storm").await?;
    g.connect(&mut c, user, pb::AccessLevel::ReadWrite).await?;
    g.control.reset_counters().await?;
    g.control
        .inject_fault(&Fault {
            status: 429,
            reason: "rateLimitExceeded".into(),
            retry_after_seconds: Some(1),
            count: 6,
            path_contains: Some("/events".into()),
        })
        .await?;
    let c0 = change_cursor(&mut c).await?;
    g.control
        .insert_event(user, &google_event("Through the storm", 3))
        .await?;
    let started = std::time::Instant::now();
    next_change(&mut c, &c0, |ch| {
        ch.event
            .as_ref()
            .is_some_and(|e| e.title == "Through the storm")
    })
    .await?;
    let requests = g.control.requests().await?;
    let lists = requests
        .by_method
        .get("calendar.events.list")
        .copied()
        .unwrap_or(0);
    // Six refusals then success: at most a handful more than seven calls,
    // spread over at least the Retry-After of the refusals.
    assert!(lists <= 12, "hammered: {requests:#?}");
    assert!(started.elapsed() >= Duration::from_secs(3), "did not wait");
    g.assert_valid_responses().await
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_grant_makes_the_account_reauth_required() -> Result<()> {
    let g = GoogleStack::start(GoogleOptions::default()).await?;
    let user = "lapsed@gmail.example";
    g.user(user).await?;
    g.control
        .insert_event(user, &google_event("Kept", 2))
        .await?;
    let mut c = g.stack.tenant_client("google-lapsed").await?;
    let a = g.connect(&mut c, user, pb::AccessLevel::ReadWrite).await?;
    let c0 = change_cursor(&mut c).await?;
    g.control.invalidate_refresh_tokens(user).await?;
    g.control.expire_access_tokens(user).await?;
    c.sync_now(pb::SyncNowRequest {
        account_id: a.account_id.clone(),
        calendar_id: PRIMARY.into(),
    })
    .await?;
    let ch = next_change(&mut c, &c0, |ch| {
        ch.kind == ChangeKind::AccountStatus as i32
    })
    .await?;
    assert_eq!(ch.account_status, pb::AccountStatus::ReauthRequired as i32);
    assert_eq!(
        list_events(&mut c, &a.account_id, PRIMARY, near_window())
            .await?
            .len(),
        1
    );

    // Re-authorising the account resumes it with the mirror kept.
    let begun = c
        .begin_authorization(pb::BeginAuthorizationRequest {
            provider: pb::Provider::Google as i32,
            access_level: pb::AccessLevel::ReadWrite as i32,
            login_hint: user.into(),
            account_id: a.account_id.clone(),
            ..Default::default()
        })
        .await?
        .into_inner();
    g.browse_consent(&begun.authorization_url).await?;
    eventually(Duration::from_secs(30), "ACTIVE again", || {
        let mut c = c.clone();
        let id = a.account_id.clone();
        async move {
            let acc = c
                .get_account(pb::GetAccountRequest { account_id: id })
                .await
                .ok()?
                .into_inner();
            (acc.status == pb::AccountStatus::Active as i32).then_some(())
        }
    })
    .await?;
    assert_eq!(
        list_events(&mut c, &a.account_id, PRIMARY, near_window())
            .await?
            .len(),
        1
    );
    g.assert_valid_responses().await
}

#[tokio::test(flavor = "multi_thread")]
async fn revoking_stops_channels_and_removes_everything() -> Result<()> {
    let g = GoogleStack::start(GoogleOptions::default()).await?;
    let user = "leaver@gmail.example";
    g.user(user).await?;
    g.control
        .insert_event(user, &google_event("Confidential merger talk", 2))
        .await?;
    let mut c = g.stack.tenant_client("google-revoke").await?;
    let a = g.connect(&mut c, user, pb::AccessLevel::ReadWrite).await?;
    g.channel(user, "a live channel", |ch| !ch.stopped).await?;
    c.revoke_account(pb::RevokeAccountRequest {
        account_id: a.account_id.clone(),
    })
    .await?;
    g.assert_channels_stopped(user).await?;
    let oauth = g.control.requests().await?.oauth;
    assert!(oauth.get("revoke").copied().unwrap_or(0) >= 1, "{oauth:#?}");
    let mut stack = g.stack;
    stack.scheduler.kill9().await;
    assert!(!dir_contains(
        stack.dir.path(),
        b"Confidential merger talk"
    )?);
    assert!(!dir_contains(stack.dir.path(), user.as_bytes())?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_free_busy_account_reads_only_free_busy_and_stores_no_content() -> Result<()> {
    let g = GoogleStack::start(GoogleOptions::default()).await?;
    let user = "busy@gmail.example";
    g.user(user).await?;
    g.control
        .insert_event(user, &google_event("Secret interview", 2))
        .await?;
    let mut c = g.stack.tenant_client("google-fb").await?;
    let a = g.connect(&mut c, user, pb::AccessLevel::FreeBusy).await?;
    let fb = c
        .query_free_busy(pb::QueryFreeBusyRequest {
            account_ids: vec![a.account_id.clone()],
            window: Some(near_window()),
        })
        .await?
        .into_inner();
    let busy: usize = fb.accounts.iter().map(|x| x.busy.len()).sum();
    assert_eq!(busy, 1, "{fb:#?}");
    let requests = g.control.requests().await?;
    assert_eq!(
        requests.by_method.get("calendar.events.list"),
        None,
        "{requests:#?}"
    );
    assert!(requests.by_method.contains_key("calendar.freebusy.query"));
    g.assert_valid_responses().await?;
    let mut stack = g.stack;
    stack.scheduler.kill9().await;
    assert!(!dir_contains(stack.dir.path(), b"Secret interview")?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn channels_are_renewed_before_they_expire_and_stopped_on_deselect() -> Result<()> {
    let config = tempfile::NamedTempFile::new()?;
    std::fs::write(config.path(), "[sync]\npush_channel_ttl_seconds = 4\n")?;
    let g = GoogleStack::start(GoogleOptions {
        scheduler_flags: vec!["--config".into(), config.path().display().to_string()],
        ..Default::default()
    })
    .await?;
    let user = "renew@gmail.example";
    g.user(user).await?;
    let mut c = g.stack.tenant_client("google-renew").await?;
    let a = g.connect(&mut c, user, pb::AccessLevel::ReadWrite).await?;
    let first = g.channel(user, "a live channel", |ch| !ch.stopped).await?;
    // Renewed at a quarter of its 4 s life: a new channel, the old stopped,
    // before the old one expired.
    let renewed = eventually(Duration::from_secs(30), "a renewed channel", || async {
        let channels = g.control.channels().await.ok()?;
        let old_stopped = channels.iter().any(|ch| ch.id == first.id && ch.stopped);
        let new = channels
            .into_iter()
            .find(|ch| ch.calendar == user && !ch.stopped && ch.id != first.id)?;
        old_stopped.then_some(new)
    })
    .await?;
    assert!(renewed.expiration > first.expiration);

    // Outside edits still arrive through the renewed channel.
    let c0 = change_cursor(&mut c).await?;
    g.control
        .insert_event(user, &google_event("After renewal", 2))
        .await?;
    next_change(&mut c, &c0, |ch| {
        ch.event
            .as_ref()
            .is_some_and(|e| e.title == "After renewal")
    })
    .await?;

    // Turning the calendar's sync off stops its channel.
    c.set_calendar_sync(pb::SetCalendarSyncRequest {
        account_id: a.account_id.clone(),
        calendar_id: PRIMARY.into(),
        synced: false,
    })
    .await?;
    g.assert_channels_stopped(user).await?;
    g.assert_valid_responses().await
}
