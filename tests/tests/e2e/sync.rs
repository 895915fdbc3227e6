//! Sync both ways through the sandbox provider: outside edits, moves and
//! deletions arrive as the right change kinds; the platform's own writes do
//! not echo; recurring series appear as instances; a provider-side
//! revocation makes the account REAUTH_REQUIRED until it is reconnected;
//! FREE_BUSY accounts keep no content; revoking an account deletes its data.

use std::time::Duration;

use anyhow::Result;
use calbridge::pb::{self, ChangeKind};
use calbridge_e2e::{
    change_cursor as cursor, eventually, next_change, sync_now_and_wait, timed_event, Stack,
};
use chrono::{TimeZone, Utc};

#[tokio::test(flavor = "multi_thread")]
async fn outside_edits_arrive_with_the_right_kinds_and_own_writes_do_not_echo() -> Result<()> {
    let stack = Stack::start().await?;
    let (_, key) = stack.tenant("sync").await?;
    let mut c = stack.client(Some(&key)).await?;
    let (account, calendar) = stack
        .sandbox_account(&mut c, "sync@example.com", "pw-sync-1")
        .await?;
    let mut sandbox = stack.sandbox().await?;
    let user = "sync@example.com".to_string();
    let start = Utc::now() + chrono::Duration::days(5);

    // Our own write: no change.
    let written = c
        .upsert_event(pb::UpsertEventRequest {
            provider_event_id: String::new(),
            account_id: account.clone(),
            calendar_id: calendar.clone(),
            client_event_id: "standup".into(),
            event: Some(timed_event("Standup", start, 15)),
            expected_version: String::new(),
            hold_id: String::new(),
        })
        .await?
        .into_inner()
        .event
        .unwrap();
    assert!(!written.provider_event_id.is_empty() && !written.version.is_empty());

    // Outside create.
    let c0 = cursor(&mut c).await?;
    let outside = sandbox
        .put_event(pb::PutSandboxEventRequest {
            username: user.clone(),
            calendar_id: String::new(),
            event: Some(timed_event("Lunch", start + chrono::Duration::hours(2), 60)),
        })
        .await?
        .into_inner();
    let created = next_change(&mut c, &c0, |ch| {
        ch.provider_event_id == outside.provider_event_id
    })
    .await?;
    assert_eq!(created.kind, ChangeKind::EventCreated as i32);

    // Outside move of our managed event: an update, still linked to our id.
    let c1 = created.cursor.clone();
    let mut moved = written.clone();
    moved.start = Some(calbridge::time::instant(
        start + chrono::Duration::hours(1),
        "Europe/London",
    ));
    moved.end = Some(calbridge::time::instant(
        start + chrono::Duration::minutes(75),
        "Europe/London",
    ));
    sandbox
        .put_event(pb::PutSandboxEventRequest {
            username: user.clone(),
            calendar_id: String::new(),
            event: Some(moved),
        })
        .await?;
    let updated = next_change(&mut c, &c1, |ch| {
        ch.provider_event_id == written.provider_event_id
    })
    .await?;
    assert_eq!(updated.kind, ChangeKind::EventUpdated as i32);
    assert_eq!(updated.event.as_ref().unwrap().client_event_id, "standup");

    // Outside delete.
    let c2 = updated.cursor.clone();
    sandbox
        .remove_event(pb::RemoveSandboxEventRequest {
            username: user.clone(),
            calendar_id: String::new(),
            provider_event_id: outside.provider_event_id.clone(),
        })
        .await?;
    let deleted = next_change(&mut c, &c2, |ch| {
        ch.provider_event_id == outside.provider_event_id
    })
    .await?;
    assert_eq!(deleted.kind, ChangeKind::EventDeleted as i32);
    assert_eq!(
        deleted.event.as_ref().unwrap().title,
        "Lunch",
        "deletions carry the last known event"
    );

    // Our own delete: gone at the provider, no change.
    let c3 = deleted.cursor.clone();
    let r = c
        .delete_event(pb::DeleteEventRequest {
            account_id: account.clone(),
            calendar_id: calendar.clone(),
            client_event_id: "standup".into(),
            provider_event_id: String::new(),
            expected_version: String::new(),
        })
        .await?
        .into_inner();
    assert_eq!(r.outcome, pb::WriteOutcome::Deleted as i32);
    c.sync_now(pb::SyncNowRequest {
        account_id: account.clone(),
        calendar_id: calendar.clone(),
    })
    .await?;

    // A recurring series with a moved and a cancelled instance.
    let first = Utc.from_utc_datetime(
        &(Utc::now() + chrono::Duration::days(7))
            .date_naive()
            .and_hms_opt(9, 0, 0)
            .unwrap(),
    );
    let mut series = timed_event("Weekly 1:1", first, 30);
    series.start.as_mut().unwrap().time_zone = "UTC".into();
    series.end.as_mut().unwrap().time_zone = "UTC".into();
    series.recurrence = vec!["RRULE:FREQ=WEEKLY;COUNT=4".into()];
    let master = sandbox
        .put_event(pb::PutSandboxEventRequest {
            username: user.clone(),
            calendar_id: String::new(),
            event: Some(series),
        })
        .await?
        .into_inner();
    let exception = |week: i64, shift: i64, status: pb::EventStatus| {
        let orig = first + chrono::Duration::weeks(week);
        let mut e = timed_event("Weekly 1:1", orig + chrono::Duration::hours(shift), 30);
        e.status = status as i32;
        e.recurrence_link = Some(pb::RecurrenceLink {
            series_event_id: master.provider_event_id.clone(),
            original_start: Some(calbridge::time::instant(orig, "UTC")),
        });
        e
    };
    for e in [
        exception(1, 2, pb::EventStatus::Confirmed),
        exception(2, 0, pb::EventStatus::Cancelled),
    ] {
        sandbox
            .put_event(pb::PutSandboxEventRequest {
                username: user.clone(),
                calendar_id: String::new(),
                event: Some(e),
            })
            .await?;
    }
    let window = pb::TimeWindow {
        start: Some(calbridge::time::to_timestamp(
            first - chrono::Duration::hours(1),
        )),
        end: Some(calbridge::time::to_timestamp(
            first + chrono::Duration::weeks(5),
        )),
    };
    let instances = eventually(
        Duration::from_secs(30),
        "four instances, one moved, one cancelled",
        || {
            let mut c = c.clone();
            let (account, calendar) = (account.clone(), calendar.clone());
            async move {
                let events = c
                    .list_events(pb::ListEventsRequest {
                        account_id: account,
                        calendar_id: calendar,
                        window: Some(window),
                        page_size: 0,
                        page_token: String::new(),
                    })
                    .await
                    .ok()?
                    .into_inner()
                    .events;
                let series: Vec<pb::Event> = events
                    .into_iter()
                    .filter(|e| e.title == "Weekly 1:1")
                    .collect();
                let moved_to = calbridge::time::to_timestamp(
                    first + chrono::Duration::weeks(1) + chrono::Duration::hours(2),
                );
                let moved = series.iter().any(|e| {
                    matches!(e.start.as_ref().and_then(|s| s.value.as_ref()),
                    Some(pb::event_time::Value::Instant(t)) if *t == moved_to)
                });
                let cancelled = series
                    .iter()
                    .filter(|e| e.status == pb::EventStatus::Cancelled as i32)
                    .count();
                (series.len() == 4 && moved && cancelled == 1).then_some(series)
            }
        },
    )
    .await?;
    assert!(instances.iter().all(|e| e
        .recurrence_link
        .as_ref()
        .is_some_and(|l| l.series_event_id == master.provider_event_id)));

    // Echo check over the whole run: no change names our own write except
    // the outside move.
    let all = c
        .list_changes(pb::ListChangesRequest {
            cursor: String::new(),
            page_size: 1000,
        })
        .await?
        .into_inner()
        .changes;
    let ours: Vec<_> = all
        .iter()
        .filter(|ch| ch.provider_event_id == written.provider_event_id)
        .collect();
    assert_eq!(
        ours.len(),
        1,
        "only the outside move of our event is a change: {ours:?}"
    );
    let _ = c3;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn revocation_at_the_provider_needs_reauthorisation_and_revoke_deletes_everything(
) -> Result<()> {
    let stack = Stack::start().await?;
    let (_, key) = stack.tenant("life").await?;
    let mut c = stack.client(Some(&key)).await?;
    let (account, calendar) = stack
        .sandbox_account(&mut c, "life@example.com", "pw-life-1")
        .await?;
    let mut sandbox = stack.sandbox().await?;
    c.upsert_event(pb::UpsertEventRequest {
        provider_event_id: String::new(),
        account_id: account.clone(),
        calendar_id: calendar.clone(),
        client_event_id: "keep-me".into(),
        event: Some(timed_event(
            "Keep me",
            Utc::now() + chrono::Duration::days(1),
            30,
        )),
        expected_version: String::new(),
        hold_id: String::new(),
    })
    .await?;

    let c0 = cursor(&mut c).await?;
    sandbox
        .revoke_user_access(pb::RevokeUserAccessRequest {
            username: "life@example.com".into(),
        })
        .await?;
    // A sync already under way may notice first; then SyncNow finds the
    // account inactive, which is just as good.
    if let Err(s) = c
        .sync_now(pb::SyncNowRequest {
            account_id: account.clone(),
            calendar_id: String::new(),
        })
        .await
    {
        assert_eq!(s.code(), tonic::Code::FailedPrecondition, "{s:?}");
    }
    let ch = next_change(&mut c, &c0, |ch| {
        ch.kind == ChangeKind::AccountStatus as i32
    })
    .await?;
    assert_eq!(ch.account_status, pb::AccountStatus::ReauthRequired as i32);
    let a = c
        .get_account(pb::GetAccountRequest {
            account_id: account.clone(),
        })
        .await?
        .into_inner();
    assert_eq!(a.status, pb::AccountStatus::ReauthRequired as i32);
    let s = c
        .upsert_event(pb::UpsertEventRequest {
            provider_event_id: String::new(),
            account_id: account.clone(),
            calendar_id: calendar.clone(),
            client_event_id: "blocked".into(),
            event: Some(timed_event(
                "Blocked",
                Utc::now() + chrono::Duration::days(1),
                30,
            )),
            expected_version: String::new(),
            hold_id: String::new(),
        })
        .await
        .expect_err("writes need an active account");
    assert_eq!(s.code(), tonic::Code::FailedPrecondition);

    // Reconnecting the same provider account resumes it, mirror intact.
    let again = c
        .connect_password_account(pb::ConnectPasswordAccountRequest {
            provider: pb::Provider::Sandbox as i32,
            username: "life@example.com".into(),
            password: "pw-life-1".into(),
            access_level: pb::AccessLevel::ReadWrite as i32,
            server_url: String::new(),
        })
        .await?
        .into_inner();
    assert_eq!(again.account_id, account);
    assert_eq!(again.status, pb::AccountStatus::Active as i32);
    c.get_event(pb::GetEventRequest {
        account_id: account.clone(),
        calendar_id: calendar.clone(),
        client_event_id: "keep-me".into(),
        provider_event_id: String::new(),
    })
    .await?;

    // Revoke: status REVOKED on the feed, nothing readable any more.
    let c1 = cursor(&mut c).await?;
    let revoked = c
        .revoke_account(pb::RevokeAccountRequest {
            account_id: account.clone(),
        })
        .await?
        .into_inner();
    assert_eq!(revoked.status, pb::AccountStatus::Revoked as i32);
    let ch = next_change(&mut c, &c1, |ch| {
        ch.kind == ChangeKind::AccountStatus as i32
    })
    .await?;
    assert_eq!(ch.account_status, pb::AccountStatus::Revoked as i32);
    assert!(c
        .list_calendars(pb::ListCalendarsRequest {
            account_id: account.clone()
        })
        .await?
        .into_inner()
        .calendars
        .is_empty());
    let s = c
        .get_event(pb::GetEventRequest {
            account_id: account.clone(),
            calendar_id: calendar.clone(),
            client_event_id: "keep-me".into(),
            provider_event_id: String::new(),
        })
        .await
        .expect_err("revoked");
    assert!(matches!(
        s.code(),
        tonic::Code::FailedPrecondition | tonic::Code::NotFound
    ));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_free_busy_account_keeps_only_intervals() -> Result<()> {
    let stack = Stack::start().await?;
    let (_, key) = stack.tenant("fb").await?;
    let mut c = stack.client(Some(&key)).await?;
    let mut sandbox = stack.sandbox().await?;
    let start = Utc::now() + chrono::Duration::days(2);
    sandbox
        .create_user(pb::CreateSandboxUserRequest {
            username: "fb@example.com".into(),
            password: "pw-fb-1".into(),
        })
        .await?;
    sandbox
        .put_event(pb::PutSandboxEventRequest {
            username: "fb@example.com".into(),
            calendar_id: String::new(),
            event: Some(timed_event("Secret project Xylophone", start, 60)),
        })
        .await?;
    let a = c
        .connect_password_account(pb::ConnectPasswordAccountRequest {
            provider: pb::Provider::Sandbox as i32,
            username: "fb@example.com".into(),
            password: "pw-fb-1".into(),
            access_level: pb::AccessLevel::FreeBusy as i32,
            server_url: String::new(),
        })
        .await?
        .into_inner();
    calbridge_e2e::wait_synced(&mut c, &a.account_id).await?;
    // The account's busy intervals (their starts) and freshness.
    let busy = |c: &mut calbridge_e2e::SchedulerClient| {
        let mut c = c.clone();
        let account_id = a.account_id.clone();
        async move {
            let fb = c
                .query_free_busy(pb::QueryFreeBusyRequest {
                    account_ids: vec![account_id],
                    window: Some(pb::TimeWindow {
                        start: Some(calbridge::time::to_timestamp(
                            start - chrono::Duration::hours(1),
                        )),
                        end: Some(calbridge::time::to_timestamp(
                            start + chrono::Duration::hours(5),
                        )),
                    }),
                })
                .await?
                .into_inner();
            let account = &fb.accounts[0];
            assert!(account.as_of.is_some());
            anyhow::Ok(
                account
                    .busy
                    .iter()
                    .map(|b| b.start.as_ref().map_or(0, |t| t.seconds))
                    .collect::<Vec<i64>>(),
            )
        }
    };
    assert_eq!(busy(&mut c).await?, vec![start.timestamp()]);
    // Later polls: an unchanged answer (mirror left as it is), then an
    // added and a removed interval, each mirrored by the next poll.
    calbridge_e2e::sync_now_and_wait(&mut c, &a.account_id, "").await?;
    assert_eq!(busy(&mut c).await?, vec![start.timestamp()]);
    let later = sandbox
        .put_event(pb::PutSandboxEventRequest {
            username: "fb@example.com".into(),
            calendar_id: String::new(),
            event: Some(timed_event("Later", start + chrono::Duration::hours(3), 30)),
        })
        .await?
        .into_inner();
    calbridge_e2e::sync_now_and_wait(&mut c, &a.account_id, "").await?;
    let later_start = (start + chrono::Duration::hours(3)).timestamp();
    assert_eq!(busy(&mut c).await?, vec![start.timestamp(), later_start]);
    calbridge_e2e::sync_now_and_wait(&mut c, &a.account_id, "").await?;
    assert_eq!(busy(&mut c).await?, vec![start.timestamp(), later_start]);
    sandbox
        .remove_event(pb::RemoveSandboxEventRequest {
            username: "fb@example.com".into(),
            calendar_id: String::new(),
            provider_event_id: later.provider_event_id,
        })
        .await?;
    calbridge_e2e::sync_now_and_wait(&mut c, &a.account_id, "").await?;
    assert_eq!(busy(&mut c).await?, vec![start.timestamp()]);
    let s = c
        .upsert_event(pb::UpsertEventRequest {
            provider_event_id: String::new(),
            account_id: a.account_id.clone(),
            calendar_id: "fb@example.com/primary".into(),
            client_event_id: "nope".into(),
            event: Some(timed_event("Nope", start, 30)),
            expected_version: String::new(),
            hold_id: String::new(),
        })
        .await
        .expect_err("free/busy accounts are not writable");
    assert_eq!(s.code(), tonic::Code::PermissionDenied);
    drop(c);
    let mut sched = stack.scheduler;
    assert!(
        sched.terminate().await?,
        "scheduler stops cleanly on SIGTERM"
    );
    assert!(!calbridge_e2e::dir_contains(
        &stack.dir.path().join("store"),
        b"Xylophone"
    )?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_never_show_the_e_mail_addresses_in_calendar_and_event_ids() -> Result<()> {
    // Debug logging everywhere: the most the processes ever write.
    let stack = Stack::start_with(&[], &[("RUST_LOG", "debug")]).await?;
    let (_, key) = stack.tenant("logs").await?;
    let mut c = stack.client(Some(&key)).await?;
    let user = "grace.hopper@example.com";
    let (account, calendar) = stack.sandbox_account(&mut c, user, "pw").await?;
    assert!(
        calendar.contains(user),
        "the sandbox names calendars by user"
    );
    let start = chrono::Utc::now() + chrono::Duration::days(1);
    c.upsert_event(pb::UpsertEventRequest {
        account_id: account.clone(),
        calendar_id: calendar.clone(),
        client_event_id: "log-check".into(),
        event: Some(timed_event("Check", start, 30)),
        ..Default::default()
    })
    .await?;
    sync_now_and_wait(&mut c, &account, &calendar).await?;
    let mut sandbox = stack.sandbox().await?;
    sandbox
        .put_event(pb::PutSandboxEventRequest {
            username: user.into(),
            calendar_id: calendar.clone(),
            event: Some(timed_event("Outside", start, 30)),
        })
        .await?;
    sync_now_and_wait(&mut c, &account, &calendar).await?;
    for (who, log) in [
        (
            "scheduler",
            stack.scheduler.log.lock().expect("log").clone(),
        ),
        (
            "sandbox adapter",
            stack.sandbox.log.lock().expect("log").clone(),
        ),
    ] {
        assert!(!log.is_empty(), "{who} logged");
        assert!(
            !log.contains("grace.hopper"),
            "the {who}'s log shows the address:\n{}",
            log.lines()
                .filter(|l| l.contains("grace.hopper"))
                .take(5)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    Ok(())
}
