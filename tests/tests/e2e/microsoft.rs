//! Microsoft 365 end to end: the fake Graph (checked against Microsoft's
//! OpenAPI schemas on every answer), the real Microsoft adapter process
//! with its HTTPS webhook, and the real scheduler. Sign-in through the
//! scheduler's HTTP callback; initial and incremental sync with a series;
//! outside edits through change notifications, and through polling when
//! notifications are lost; lifecycle events (subscription removed, needing
//! reauthorization, missed notifications); writes and conflicts; a 410
//! resync without spurious changes; a throttling storm waited out;
//! invalid_grant; a claims challenge; revocation; and a FREE_BUSY account
//! synced from getSchedule alone, storing no event content.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use calbridge::pb::{self, ChangeKind};
use calbridge_e2e::microsoft::{MicrosoftOptions, MicrosoftStack};
use calbridge_e2e::{
    change_cursor, changes_after, dir_contains, eventually, list_events, near_window, next_change,
    timed_event, SchedulerClient,
};
use calbridge_fake_graph::{DeliveryOptions, FakeConfig, Fault};
use chrono::{Duration as Span, Utc};
use serde_json::{json, Value};

/// A timed Outlook event starting `days` from now at 10:00 in Berlin, as
/// Outlook writes it (Windows zone name).
fn graph_event(subject: &str, days: i64) -> Value {
    let day = (Utc::now() + Span::days(days)).date_naive();
    json!({
        "subject": subject,
        "body": {"contentType": "text", "content": format!("{subject} notes")},
        "start": {"dateTime": format!("{day}T10:00:00"), "timeZone": "W. Europe Standard Time"},
        "end": {"dateTime": format!("{day}T10:30:00"), "timeZone": "W. Europe Standard Time"},
    })
}

/// Waits for the feed entry after `cursor` whose event has `title`.
async fn titled(c: &mut SchedulerClient, cursor: &str, title: &str) -> Result<pb::Change> {
    next_change(c, cursor, |ch| {
        ch.event.as_ref().is_some_and(|e| e.title == title)
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_maps_series_and_outside_edits_arrive_by_push() -> Result<()> {
    let m = MicrosoftStack::start(MicrosoftOptions::default()).await?;
    let user = "push@contoso.example";
    m.user(user).await?;
    let mut series = graph_event("Daily standup", 1);
    series["recurrence"] = json!({
        "pattern": {"type": "daily", "interval": 1},
        "range": {"type": "numbered", "startDate": (Utc::now() + Span::days(1)).date_naive().to_string(), "numberOfOccurrences": 5},
    });
    let master = m.control.insert_event(user, &series).await?;
    let master_id = master["id"].as_str().context("id")?.to_string();
    let mut c = m.stack.tenant_client("ms-push").await?;
    let a = m.connect(&mut c, user, pb::AccessLevel::ReadWrite).await?;
    let primary = m.primary(&mut c, &a.account_id).await?;

    let events = list_events(&mut c, &a.account_id, &primary, near_window()).await?;
    let standups: Vec<_> = events
        .iter()
        .filter(|e| e.title == "Daily standup")
        .collect();
    assert_eq!(standups.len(), 5, "{events:#?}");
    assert!(standups.iter().all(|e| e
        .recurrence_link
        .as_ref()
        .is_some_and(|l| l.series_event_id == master_id)));

    // Outside edits, with polling at its idle cadence (10 minutes with
    // push): only a change notification can bring them. Every notification
    // comes twice and batches arrive in reverse order: harmless.
    m.control
        .set_delivery_options(&DeliveryOptions {
            duplicate: true,
            reverse: true,
            drop: false,
        })
        .await?;
    let sub = m
        .subscription(user, "a subscription", |s| s.resource.contains("/events"))
        .await?;
    assert!(sub.notification_url.starts_with("https://127.0.0.1:"));
    let c0 = change_cursor(&mut c).await?;
    let created = m
        .control
        .insert_event(user, &graph_event("Dentist", 4))
        .await?;
    let ch = next_change(&mut c, &c0, |ch| {
        ch.kind == ChangeKind::EventCreated as i32
            && ch.event.as_ref().is_some_and(|e| e.title == "Dentist")
    })
    .await?;
    let dentist = ch.event.context("event")?.provider_event_id;
    assert_eq!(dentist, created["id"].as_str().unwrap_or_default());

    let c1 = change_cursor(&mut c).await?;
    m.control
        .patch_event(user, &dentist, &json!({"subject": "Dentist (moved)"}))
        .await?;
    titled(&mut c, &c1, "Dentist (moved)").await?;

    let c2 = change_cursor(&mut c).await?;
    m.control.delete_event(user, &dentist).await?;
    next_change(&mut c, &c2, |ch| {
        ch.kind == ChangeKind::EventDeleted as i32 && ch.provider_event_id == dentist
    })
    .await?;
    let deliveries = m.control.deliveries().await?;
    assert!(
        deliveries.iter().filter(|d| d.status == 202).count() >= 3,
        "{deliveries:#?}"
    );
    m.assert_valid().await
}

#[tokio::test(flavor = "multi_thread")]
async fn edits_arrive_by_polling_when_notifications_are_lost() -> Result<()> {
    let m = MicrosoftStack::start(MicrosoftOptions {
        adapter_flags: vec!["--poll-interval-seconds".into(), "1".into()],
        ..Default::default()
    })
    .await?;
    let user = "poll@contoso.example";
    m.user(user).await?;
    m.control
        .set_delivery_options(&DeliveryOptions {
            drop: true,
            ..Default::default()
        })
        .await?;
    let mut c = m.stack.tenant_client("ms-poll").await?;
    m.connect(&mut c, user, pb::AccessLevel::ReadWrite).await?;
    let c0 = change_cursor(&mut c).await?;
    m.control
        .insert_event(user, &graph_event("Unannounced", 5))
        .await?;
    titled(&mut c, &c0, "Unannounced").await?;
    m.assert_valid().await
}

#[tokio::test(flavor = "multi_thread")]
async fn lifecycle_events_replace_the_subscription_or_resync() -> Result<()> {
    let m = MicrosoftStack::start(MicrosoftOptions::default()).await?;
    let user = "lifecycle@contoso.example";
    m.user(user).await?;
    let mut c = m.stack.tenant_client("ms-lifecycle").await?;
    let a = m.connect(&mut c, user, pb::AccessLevel::ReadWrite).await?;
    let primary = m.primary(&mut c, &a.account_id).await?;
    let first = m.subscription(user, "a subscription", |_| true).await?;

    // Removed by Graph: a new one is made, and notifications flow again.
    m.control
        .lifecycle(&first.id, "subscriptionRemoved")
        .await?;
    let second = m
        .subscription(user, "a new subscription", |s| s.id != first.id)
        .await?;
    let c0 = change_cursor(&mut c).await?;
    m.control
        .insert_event(user, &graph_event("After removal", 2))
        .await?;
    titled(&mut c, &c0, "After removal").await?;

    // Reauthorization required: replaced, the old one deleted.
    m.control
        .lifecycle(&second.id, "reauthorizationRequired")
        .await?;
    let third = m
        .subscription(user, "a replacement", |s| {
            s.id != first.id && s.id != second.id
        })
        .await?;
    eventually(
        Duration::from_secs(30),
        "the old subscription deleted",
        || {
            let control = m.control.clone();
            let id = second.id.clone();
            async move {
                let subs = control.subscriptions().await.ok()?;
                (!subs.iter().any(|s| s.id == id)).then_some(())
            }
        },
    )
    .await?;
    assert!(!third.needs_reauthorization);

    // Missed notifications: a change whose notification is lost arrives
    // once Graph says notifications were missed.
    m.control
        .set_delivery_options(&DeliveryOptions {
            drop: true,
            ..Default::default()
        })
        .await?;
    let c1 = change_cursor(&mut c).await?;
    m.control
        .insert_event(user, &graph_event("While missed", 3))
        .await?;
    m.control.lifecycle(&third.id, "missed").await?;
    titled(&mut c, &c1, "While missed").await?;

    // Turning the calendar's sync off deletes its subscription.
    c.set_calendar_sync(pb::SetCalendarSyncRequest {
        account_id: a.account_id.clone(),
        calendar_id: primary,
        synced: false,
    })
    .await?;
    let subs = m.control.subscriptions().await?;
    assert!(subs.iter().all(|s| s.user != user), "{subs:#?}");
    m.assert_valid().await
}

#[tokio::test(flavor = "multi_thread")]
async fn upserts_reach_graph_once_and_stale_versions_conflict() -> Result<()> {
    let m = MicrosoftStack::start(MicrosoftOptions::default()).await?;
    let user = "writer@contoso.example";
    m.user(user).await?;
    let mut c = m.stack.tenant_client("ms-write").await?;
    let a = m.connect(&mut c, user, pb::AccessLevel::ReadWrite).await?;
    let primary = m.primary(&mut c, &a.account_id).await?;
    let c0 = change_cursor(&mut c).await?;
    let mut event = timed_event("Planning", Utc::now() + Span::days(6), 45);
    event.location = "Room 4".into();
    event.attendees = vec![pb::Attendee {
        email: "bob@example.com".into(),
        ..Default::default()
    }];
    let upsert = |e: pb::Event, version: &str| pb::UpsertEventRequest {
        account_id: a.account_id.clone(),
        calendar_id: primary.clone(),
        client_event_id: "order-17".into(),
        event: Some(e),
        expected_version: version.into(),
        ..Default::default()
    };
    let first = c
        .upsert_event(upsert(event.clone(), ""))
        .await?
        .into_inner();
    let again = c
        .upsert_event(upsert(event.clone(), ""))
        .await?
        .into_inner();
    let first_event = first.event.context("event")?;
    assert_eq!(
        first_event.provider_event_id,
        again.event.context("event")?.provider_event_id
    );
    let stored = m.control.events(user).await?;
    let ours: Vec<_> = stored
        .iter()
        .filter(|e| e["subject"] == "Planning")
        .collect();
    assert_eq!(ours.len(), 1, "{stored:#?}");
    assert_eq!(ours[0]["location"]["displayName"], "Room 4");
    assert_eq!(
        ours[0]["attendees"][0]["emailAddress"]["address"],
        "bob@example.com"
    );

    // Someone edits it in Outlook; an upsert still naming the old version
    // is refused with the current one, and changes nothing.
    m.control
        .patch_event(
            user,
            &first_event.provider_event_id,
            &json!({"subject": "Planning (Outlook)"}),
        )
        .await?;
    event.title = "Planning (platform)".into();
    let stale = c
        .upsert_event(upsert(event.clone(), &first_event.version))
        .await
        .expect_err("a stale version must conflict");
    assert_eq!(stale.code(), tonic::Code::Aborted, "{stale:?}");
    let stored = m.control.events(user).await?;
    assert!(stored.iter().any(|e| e["subject"] == "Planning (Outlook)"));

    c.delete_event(pb::DeleteEventRequest {
        account_id: a.account_id.clone(),
        calendar_id: primary.clone(),
        client_event_id: "order-17".into(),
        ..Default::default()
    })
    .await?;
    let stored = m.control.events(user).await?;
    assert!(
        !stored
            .iter()
            .any(|e| e["id"] == first_event.provider_event_id.as_str()),
        "{stored:#?}"
    );
    // The platform's own writes do not come back on the feed; the Outlook
    // edit does.
    c.sync_now(pb::SyncNowRequest {
        account_id: a.account_id.clone(),
        calendar_id: primary.clone(),
    })
    .await?;
    let changes = changes_after(&mut c, &c0).await?;
    assert!(
        changes
            .iter()
            .all(|ch| ch.kind == ChangeKind::AccountStatus as i32
                || ch
                    .event
                    .as_ref()
                    .is_some_and(|e| e.title == "Planning (Outlook)")
                || ch.kind == ChangeKind::EventDeleted as i32),
        "{changes:#?}"
    );
    m.assert_valid().await
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_delta_token_resyncs_without_spurious_changes() -> Result<()> {
    let m = MicrosoftStack::start(MicrosoftOptions::default()).await?;
    let user = "gone@contoso.example";
    m.user(user).await?;
    for i in 0..30 {
        m.control
            .insert_event(user, &graph_event(&format!("Existing {i}"), 1 + i % 20))
            .await?;
    }
    let mut c = m.stack.tenant_client("ms-410").await?;
    let a = m.connect(&mut c, user, pb::AccessLevel::ReadWrite).await?;
    let primary = m.primary(&mut c, &a.account_id).await?;
    m.subscription(user, "a subscription", |_| true).await?;
    let c0 = change_cursor(&mut c).await?;
    m.control.expire_delta_tokens(user).await?;
    m.control
        .insert_event(user, &graph_event("After expiry", 7))
        .await?;
    titled(&mut c, &c0, "After expiry").await?;
    let changes = changes_after(&mut c, &c0).await?;
    assert_eq!(changes.len(), 1, "{changes:#?}");
    assert_eq!(
        list_events(&mut c, &a.account_id, &primary, near_window())
            .await?
            .len(),
        31
    );
    m.assert_valid().await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_throttling_storm_is_waited_out_not_hammered() -> Result<()> {
    let m = MicrosoftStack::start(MicrosoftOptions::default()).await?;
    let user = "storm@contoso.example";
    m.user(user).await?;
    let mut c = m.stack.tenant_client("ms-storm").await?;
    m.connect(&mut c, user, pb::AccessLevel::ReadWrite).await?;
    m.subscription(user, "a subscription", |_| true).await?;
    let (early_before, _) = m.control.stats().await?;
    m.control
        .inject(&Fault {
            status: 429,
            retry_after: Some(1),
            method: Some("GET".into()),
            count: 4,
        })
        .await?;
    let c0 = change_cursor(&mut c).await?;
    let started = Instant::now();
    m.control
        .insert_event(user, &graph_event("Through the storm", 3))
        .await?;
    titled(&mut c, &c0, "Through the storm").await?;
    // Four refusals, each with a Retry-After of one second: waited out,
    // and no request came before its Retry-After had passed.
    assert!(started.elapsed() >= Duration::from_secs(3), "did not wait");
    let (early_after, _) = m.control.stats().await?;
    assert_eq!(early_after, early_before, "retried before Retry-After");
    m.assert_valid().await
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_writes_stay_within_the_mailboxs_four_requests() -> Result<()> {
    let m = MicrosoftStack::start(MicrosoftOptions::default()).await?;
    let user = "busy-writer@contoso.example";
    m.user(user).await?;
    let mut c = m.stack.tenant_client("ms-concurrency").await?;
    let a = m.connect(&mut c, user, pb::AccessLevel::ReadWrite).await?;
    let primary = m.primary(&mut c, &a.account_id).await?;
    // Slow answers keep requests in flight: twelve writes at once must
    // still never have more than four of the mailbox's requests at Graph.
    m.control.set_latency(150).await?;
    let mut writes = Vec::new();
    for i in 0..12 {
        let mut c = c.clone();
        let request = pb::UpsertEventRequest {
            account_id: a.account_id.clone(),
            calendar_id: primary.clone(),
            client_event_id: format!("parallel-{i}"),
            event: Some(timed_event(
                &format!("Parallel {i}"),
                Utc::now() + Span::days(3) + Span::hours(i),
                30,
            )),
            ..Default::default()
        };
        writes.push(tokio::spawn(async move { c.upsert_event(request).await }));
    }
    for w in writes {
        w.await??;
    }
    m.control.set_latency(0).await?;
    assert_eq!(m.control.limit_refusals().await?, 0);
    let stored = m.control.events(user).await?;
    assert_eq!(
        stored
            .iter()
            .filter(|e| e["subject"]
                .as_str()
                .is_some_and(|s| s.starts_with("Parallel ")))
            .count(),
        12
    );
    m.assert_valid().await
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_grant_makes_the_account_reauth_required() -> Result<()> {
    let m = MicrosoftStack::start(MicrosoftOptions {
        fake: Some(FakeConfig {
            access_token_seconds: 2,
            ..FakeConfig::default()
        }),
        ..Default::default()
    })
    .await?;
    let user = "lapsed@contoso.example";
    m.user(user).await?;
    m.control
        .insert_event(user, &graph_event("Kept", 2))
        .await?;
    let mut c = m.stack.tenant_client("ms-lapsed").await?;
    let a = m.connect(&mut c, user, pb::AccessLevel::ReadWrite).await?;
    let primary = m.primary(&mut c, &a.account_id).await?;
    let c0 = change_cursor(&mut c).await?;
    // AADSTS50173: the grant was revoked (a password change).
    m.control.kill_grants(user, 50173).await?;
    let ch = eventually(Duration::from_secs(60), "REAUTH_REQUIRED", || {
        let mut c = c.clone();
        let (account, calendar, c0) = (a.account_id.clone(), primary.clone(), c0.clone());
        async move {
            let _ = c
                .sync_now(pb::SyncNowRequest {
                    account_id: account,
                    calendar_id: calendar,
                })
                .await;
            changes_after(&mut c, &c0)
                .await
                .ok()?
                .into_iter()
                .find(|ch| ch.kind == ChangeKind::AccountStatus as i32)
        }
    })
    .await?;
    assert_eq!(ch.account_status, pb::AccountStatus::ReauthRequired as i32);
    assert_eq!(
        list_events(&mut c, &a.account_id, &primary, near_window())
            .await?
            .len(),
        1
    );
    m.assert_valid().await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_claims_challenge_is_answered_with_a_token_that_carries_the_claims() -> Result<()> {
    let m = MicrosoftStack::start(MicrosoftOptions::default()).await?;
    let user = "cae@contoso.example";
    m.user(user).await?;
    let mut c = m.stack.tenant_client("ms-cae").await?;
    let a = m.connect(&mut c, user, pb::AccessLevel::ReadWrite).await?;
    m.subscription(user, "a subscription", |_| true).await?;
    // A critical event (say, a password change the user made themselves):
    // the adapter declared it handles claims challenges, so its token is
    // challenged at once instead of living out its hour.
    m.control.critical_event(user).await?;
    let c0 = change_cursor(&mut c).await?;
    m.control
        .insert_event(user, &graph_event("After the challenge", 2))
        .await?;
    titled(&mut c, &c0, "After the challenge").await?;
    let challenged = m.control.claims_challenges().await?;
    assert!(challenged >= 1);
    // Later calls still carry the challenged token (the scheduler renews
    // it on its own schedule); the adapter uses the one it got instead of
    // being challenged again.
    let c1 = change_cursor(&mut c).await?;
    m.control
        .insert_event(user, &graph_event("Second after the challenge", 3))
        .await?;
    titled(&mut c, &c1, "Second after the challenge").await?;
    assert_eq!(m.control.claims_challenges().await?, challenged);
    let account = c
        .get_account(pb::GetAccountRequest {
            account_id: a.account_id.clone(),
        })
        .await?
        .into_inner();
    assert_eq!(account.status, pb::AccountStatus::Active as i32);
    m.assert_valid().await
}

/// An Outlook event at `start` (UTC) with a secret subject, body and
/// location, shown as `show_as`.
fn shown(subject: &str, start: chrono::DateTime<Utc>, minutes: i64, show_as: &str) -> Value {
    let at = |t: chrono::DateTime<Utc>| json!({"dateTime": t.format("%Y-%m-%dT%H:%M:%S").to_string(), "timeZone": "UTC"});
    json!({
        "subject": subject,
        "body": {"contentType": "text", "content": "Secret agenda"},
        "location": {"displayName": "Boardroom"},
        "start": at(start),
        "end": at(start + Span::minutes(minutes)),
        "showAs": show_as,
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_free_busy_account_is_synced_from_getschedule_and_stores_no_content() -> Result<()> {
    let m = MicrosoftStack::start(MicrosoftOptions::default()).await?;
    let user = "busy@contoso.example";
    m.user(user).await?;
    let day = (Utc::now() + Span::days(2))
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .context("midnight")?
        .and_utc();
    let at = |days: i64, hours: i64, minutes: i64| {
        day + Span::days(days) + Span::hours(hours) + Span::minutes(minutes)
    };
    let mut standup = shown("Secret standup", at(0, 9, 0), 15, "busy");
    standup["recurrence"] = json!({
        "pattern": {"type": "daily", "interval": 1},
        "range": {"type": "numbered", "startDate": day.format("%Y-%m-%d").to_string(), "numberOfOccurrences": 2},
    });
    for e in [
        shown("Secret interview", at(0, 11, 0), 60, "busy"),
        shown("Secret maybe", at(0, 14, 0), 30, "tentative"),
        shown("Secret leave", at(3, 8, 0), 8 * 60, "oof"),
        shown("Secret focus", at(0, 16, 0), 60, "free"),
        standup,
    ] {
        m.control.insert_event(user, &e).await?;
    }
    let mut c = m.stack.tenant_client("ms-free-busy").await?;
    let a = m.connect(&mut c, user, pb::AccessLevel::FreeBusy).await?;
    let fb = c
        .query_free_busy(pb::QueryFreeBusyRequest {
            account_ids: vec![a.account_id.clone()],
            window: Some(pb::TimeWindow {
                start: Some(calbridge::time::to_timestamp(day)),
                end: Some(calbridge::time::to_timestamp(day + Span::days(7))),
            }),
        })
        .await?
        .into_inner();
    let busy: Vec<_> = fb
        .accounts
        .iter()
        .flat_map(|a| &a.busy)
        .filter_map(|b| {
            Some((
                calbridge::time::from_timestamp(b.start.as_ref()?)?,
                calbridge::time::from_timestamp(b.end.as_ref()?)?,
                b.status(),
            ))
        })
        .collect();
    use pb::BusyStatus::*;
    assert_eq!(
        busy,
        vec![
            (at(0, 9, 0), at(0, 9, 15), Busy),
            (at(0, 11, 0), at(0, 12, 0), Busy),
            (at(0, 14, 0), at(0, 14, 30), Tentative),
            (at(1, 9, 0), at(1, 9, 15), Busy),
            (at(3, 8, 0), at(3, 16, 0), OutOfOffice),
        ],
        "{fb:#?}"
    );
    let (_, requests) = m.control.stats().await?;
    assert!(
        requests
            .iter()
            .any(|r| r == "POST /me/calendar/getSchedule"),
        "{requests:?}"
    );
    assert!(
        !requests
            .iter()
            .any(|r| r.contains("events") || r.contains("calendarView")),
        "a FREE_BUSY account never has an event read: {requests:?}"
    );
    m.assert_valid().await?;
    let mut stack = m.stack;
    stack.scheduler.kill9().await;
    assert!(!dir_contains(stack.dir.path(), b"Secret")?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn revoking_deletes_subscriptions_and_every_stored_byte() -> Result<()> {
    let m = MicrosoftStack::start(MicrosoftOptions::default()).await?;
    let user = "leaver@contoso.example";
    m.user(user).await?;
    m.control
        .insert_event(user, &graph_event("Confidential merger talk", 2))
        .await?;
    let mut c = m.stack.tenant_client("ms-revoke").await?;
    let a = m.connect(&mut c, user, pb::AccessLevel::ReadWrite).await?;
    m.subscription(user, "a subscription", |_| true).await?;
    c.revoke_account(pb::RevokeAccountRequest {
        account_id: a.account_id.clone(),
    })
    .await?;
    let subs = m.control.subscriptions().await?;
    assert!(subs.iter().all(|s| s.user != user), "{subs:#?}");
    let mut stack = m.stack;
    stack.scheduler.kill9().await;
    assert!(!dir_contains(
        stack.dir.path(),
        b"Confidential merger talk"
    )?);
    assert!(!dir_contains(stack.dir.path(), user.as_bytes())?);
    Ok(())
}
