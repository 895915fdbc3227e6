//! The scheduler with the adapter: outside changes reach the tenant's
//! change feed with their kind, the platform's own writes do not echo.

use anyhow::{Context, Result};
use calbridge::pb::{self, ChangeKind, WriteOutcome};
use calbridge_e2e::conformance::{wait_calendar_synced, Scheduler};
use calbridge_e2e::{change_cursor, changes_after, next_change, sync_now_and_wait, timed_event};

use super::at;
use crate::fixtures::{Fixture, Outside};

/// Through a real scheduler: an upsert replayed with the same client
/// event id lands once at the provider; an outside creation, edit and
/// deletion each reach the feed as CREATED, UPDATED and DELETED; the
/// platform's own creates, updates and deletes never show up in the feed,
/// not even after a sync that saw them.
pub(crate) async fn outside_changes_reach_the_feed_and_own_writes_do_not_echo<F: Fixture>(
) -> Result<()> {
    let f = F::start().await?;
    let scheduler = Scheduler::start(f.scheduler_port(), &f.scheduler_flags()).await?;
    let mut c = scheduler.tenant_client("conformance").await?;
    let account = f
        .connect(&mut c, pb::AccessLevel::ReadWrite)
        .await?
        .account_id;
    let calendar = f.calendar();
    wait_calendar_synced(&mut c, &account, &calendar).await?;
    let start = change_cursor(&mut c).await?;

    // Our own writes: a create, its replay, an update.
    let upsert = |title: &str| pb::UpsertEventRequest {
        provider_event_id: String::new(),
        account_id: account.clone(),
        calendar_id: calendar.clone(),
        client_event_id: "own-1".into(),
        event: Some(timed_event(title, at(9, 9), 30)),
        expected_version: String::new(),
        hold_id: String::new(),
    };
    let created = c.upsert_event(upsert("Own")).await?.into_inner();
    assert_eq!(created.outcome(), WriteOutcome::Created);
    let own = created.event.context("no event")?.provider_event_id;
    let replayed = c.upsert_event(upsert("Own")).await?.into_inner();
    assert_eq!(replayed.outcome(), WriteOutcome::Unchanged);
    assert_eq!(replayed.event.context("no event")?.provider_event_id, own);
    let held = f.provider_event_ids().await?;
    assert_eq!(held.iter().filter(|id| **id == own).count(), 1, "{held:?}");
    let updated = c.upsert_event(upsert("Own (renamed)")).await?.into_inner();
    assert_eq!(updated.outcome(), WriteOutcome::Updated);
    sync_now_and_wait(&mut c, &account, "").await?;

    // Outside changes, each awaited on the feed.
    let mut event = Outside {
        title: "Outside".into(),
        start: at(10, 14),
        minutes: 45,
    };
    let id = f.outside_put(None, &event).await?;
    let expect = [
        ChangeKind::EventCreated,
        ChangeKind::EventUpdated,
        ChangeKind::EventDeleted,
    ];
    let mut cursor = start.clone();
    for (step, kind) in expect.iter().enumerate() {
        match kind {
            ChangeKind::EventUpdated => {
                event.title = "Outside (renamed)".into();
                f.outside_put(Some(&id), &event).await?;
            }
            ChangeKind::EventDeleted => f.outside_delete(&id).await?,
            _ => {}
        }
        sync_now_and_wait(&mut c, &account, "").await?;
        let change = next_change(&mut c, &cursor, |ch| ch.provider_event_id == id)
            .await
            .with_context(|| format!("step {step}: no {kind:?} for {id}"))?;
        assert_eq!(change.kind(), *kind, "step {step}: {change:?}");
        assert_eq!(change.calendar_id, calendar);
        cursor = change.cursor;
    }

    // Our own delete, then a sync that sees it.
    let deleted = c
        .delete_event(pb::DeleteEventRequest {
            account_id: account.clone(),
            calendar_id: calendar.clone(),
            client_event_id: "own-1".into(),
            provider_event_id: String::new(),
            expected_version: String::new(),
        })
        .await?
        .into_inner();
    assert_eq!(deleted.outcome(), WriteOutcome::Deleted);
    assert!(!f.provider_event_ids().await?.contains(&own));
    sync_now_and_wait(&mut c, &account, "").await?;

    let feed: Vec<(ChangeKind, String)> = changes_after(&mut c, &start)
        .await?
        .into_iter()
        .map(|ch| (ch.kind(), ch.provider_event_id))
        .collect();
    let outside: Vec<(ChangeKind, String)> = expect.iter().map(|k| (*k, id.clone())).collect();
    assert_eq!(feed, outside, "the feed holds the outside changes only");
    f.verify().await
}
