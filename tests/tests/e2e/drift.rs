//! Drift repair: every calendar is re-listed in full on its own cadence
//! and diffed against the mirror, so a mirror that went wrong while the
//! incremental cursor stayed current (a lost push, a provider that did not
//! report a change) is repaired with ordinary change-feed entries, counted
//! in the sync status.

use std::time::Duration;

use anyhow::{Context, Result};
use calbridge::pb::{self, ChangeKind};
use calbridge_e2e::{
    change_cursor, eventually, next_change, sync_now_and_wait, sync_status, timed_event, Stack,
};
use calbridge_scheduler::ids::{AccountId, CalendarId};
use calbridge_scheduler::store::{MirrorRemove, PageCommit};
use chrono::Utc;

/// Starts a stack whose scheduler re-lists every calendar after
/// `full_relist_seconds`.
async fn stack_relisting_every(seconds: u64) -> Result<(Stack, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("scheduler.toml");
    std::fs::write(
        &config,
        format!("[sync]\nfull_relist_seconds = {seconds}\n"),
    )?;
    let stack =
        Stack::start_with_scheduler_flags(&["--config".into(), config.display().to_string()])
            .await?;
    Ok((stack, dir))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mirror_that_lost_an_event_is_repaired_by_the_periodic_full_listing() -> Result<()> {
    let (mut stack, _config) = stack_relisting_every(1).await?;
    let (tenant, key) = stack.tenant("drift").await?;
    let mut c = stack.client(Some(&key)).await?;
    let user = "drift@example.com";
    let (account, calendar) = stack.sandbox_account(&mut c, user, "pw-drift-1").await?;
    let mut sandbox = stack.sandbox().await?;
    // The cursor comes first: the sandbox's push may have the event synced
    // before the test asks for a sync.
    let before = change_cursor(&mut c).await?;
    let outside = sandbox
        .put_event(pb::PutSandboxEventRequest {
            username: user.into(),
            calendar_id: String::new(),
            event: Some(timed_event(
                "Board meeting",
                Utc::now() + chrono::Duration::days(3),
                60,
            )),
        })
        .await?
        .into_inner();
    sync_now_and_wait(&mut c, &account, "").await?;
    next_change(&mut c, &before, |ch| {
        ch.provider_event_id == outside.provider_event_id
    })
    .await
    .context("the outside event reached the feed")?;

    // The mirror loses the event while the scheduler is down, its cursor
    // current: no incremental sync will ever bring it back.
    drop(c);
    assert!(stack.scheduler.terminate().await?, "a clean stop");
    {
        let store =
            calbridge_e2e::open_store(stack.store_dir().parent().context("a data directory")?)?;
        let (acc, cal) = (AccountId::from(&account), CalendarId::from(&calendar));
        let lost = store
            .event(&acc, &cal, &outside.provider_event_id)?
            .context("the event is mirrored")?;
        let state = store
            .sync_state(&acc, &cal)?
            .context("the calendar's sync state")?;
        assert!(state.drift_repaired == 0 && state.last_full_listing_ms.is_some());
        store.apply_sync_page(&PageCommit {
            tenant: &tenant.as_str().into(),
            account: &acc,
            calendar: &cal,
            puts: &[],
            removes: &[MirrorRemove {
                provider_event_id: outside.provider_event_id.as_str().into(),
                start_ms: lost.start_ms,
                client_event_id: None,
            }],
            state: &state,
            changes: &[],
            now_ms: Utc::now().timestamp_millis(),
        })?;
    }
    stack.restart_scheduler().await?;
    let mut c = stack.client(Some(&key)).await?;
    let after_loss = change_cursor(&mut c).await?;

    // The next full listing finds the event again: an ordinary change,
    // counted as drift repaired.
    let status = eventually(Duration::from_secs(30), "drift repaired", || {
        let mut c = c.clone();
        let (account, calendar) = (account.clone(), calendar.clone());
        async move {
            sync_now_and_wait(&mut c, &account, "").await.ok()?;
            let cal = status_of(&mut c, &account, &calendar).await?;
            (cal.drift_repaired >= 1).then_some(cal)
        }
    })
    .await?;
    assert_eq!(status.drift_repaired, 1, "{status:?}");
    assert!(status.last_full_listing.is_some());
    let back = next_change(&mut c, &after_loss, |ch| {
        ch.provider_event_id == outside.provider_event_id
    })
    .await
    .context("the repaired event on the feed")?;
    assert_eq!(back.kind(), ChangeKind::EventCreated);
    assert_eq!(back.event.context("event")?.title, "Board meeting");
    let listed = c
        .list_events(pb::ListEventsRequest {
            account_id: account.clone(),
            calendar_id: calendar.clone(),
            window: Some(pb::TimeWindow {
                start: Some(calbridge::time::to_timestamp(Utc::now())),
                end: Some(calbridge::time::to_timestamp(
                    Utc::now() + chrono::Duration::days(10),
                )),
            }),
            page_size: 0,
            page_token: String::new(),
        })
        .await?
        .into_inner()
        .events;
    assert!(listed
        .iter()
        .any(|e| e.provider_event_id == outside.provider_event_id));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn without_drift_a_periodic_full_listing_changes_nothing() -> Result<()> {
    let (stack, _config) = stack_relisting_every(1).await?;
    let (_, key) = stack.tenant("no-drift").await?;
    let mut c = stack.client(Some(&key)).await?;
    let (account, calendar) = stack
        .sandbox_account(&mut c, "steady@example.com", "pw-steady-1")
        .await?;
    let start = change_cursor(&mut c).await?;
    let first = status_of(&mut c, &account, &calendar)
        .await
        .and_then(|s| s.last_full_listing)
        .context("the initial listing is a full listing")?;
    // Syncs go on until a re-listing has happened.
    eventually(Duration::from_secs(30), "a full re-listing", || {
        let mut c = c.clone();
        let (account, calendar, first) = (account.clone(), calendar.clone(), first);
        async move {
            sync_now_and_wait(&mut c, &account, "").await.ok()?;
            let cal = status_of(&mut c, &account, &calendar).await?;
            (cal.last_full_listing.as_ref()? != &first).then_some(())
        }
    })
    .await?;
    let status = status_of(&mut c, &account, &calendar)
        .await
        .context("status")?;
    assert_eq!(status.drift_repaired, 0, "{status:?}");
    assert!(
        calbridge_e2e::changes_after(&mut c, &start)
            .await?
            .is_empty(),
        "a re-listing that found nothing new changes nothing"
    );
    Ok(())
}

/// The sync status of one calendar of an account.
async fn status_of(
    c: &mut calbridge_e2e::SchedulerClient,
    account: &str,
    calendar: &str,
) -> Option<pb::CalendarSyncStatus> {
    sync_status(c, account)
        .await
        .ok()?
        .into_iter()
        .find(|s| s.calendar_id == calendar)
}
