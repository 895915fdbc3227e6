//! The scheduler with the adapter: a recurring series the platform writes
//! is mirrored as its instances, never echoed back as someone else's
//! changes, and one of its instances is edited by its instance id.

use anyhow::{Context, Result};
use calbridge::pb::{self, WriteOutcome};
use calbridge::time::to_timestamp;
use calbridge_e2e::caldav::list_events;
use calbridge_e2e::conformance::{wait_calendar_synced, Scheduler};
use calbridge_e2e::{change_cursor, changes_after, sync_now_and_wait, timed_event};

use super::at;
use crate::fixtures::Fixture;

/// Through a real scheduler: a daily series of four written by the
/// platform is listed as four instances linked to it (the master is no row
/// of its own); the same upsert again is UNCHANGED; one instance moved and
/// retitled by its instance id, with its version, changes that instance
/// only; another deleted by its instance id leaves the rest; deleting the
/// series by the caller's id empties it; and none of it reaches the change
/// feed.
pub(crate) async fn a_series_and_its_instances_written_through_the_scheduler_never_echo<
    F: Fixture,
>() -> Result<()> {
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
    let window = pb::TimeWindow {
        start: Some(to_timestamp(at(11, 0))),
        end: Some(to_timestamp(at(20, 0))),
    };

    let mut series = timed_event("Standup", at(12, 9), 15);
    series.recurrence = vec!["RRULE:FREQ=DAILY;COUNT=4".into()];
    let upsert = |e: pb::Event| pb::UpsertEventRequest {
        account_id: account.clone(),
        calendar_id: calendar.clone(),
        client_event_id: "standup-series".into(),
        event: Some(e),
        expected_version: String::new(),
        hold_id: String::new(),
        provider_event_id: String::new(),
    };
    let created = c.upsert_event(upsert(series.clone())).await?.into_inner();
    assert_eq!(created.outcome(), WriteOutcome::Created);
    let master = created.event.context("the series")?.provider_event_id;
    sync_now_and_wait(&mut c, &account, "").await?;

    let instances = |listed: &[pb::Event]| -> Vec<pb::Event> {
        let mut v: Vec<pb::Event> = listed
            .iter()
            .filter(|e| {
                e.recurrence_link
                    .as_ref()
                    .is_some_and(|l| l.series_event_id == master)
            })
            .cloned()
            .collect();
        v.sort_by_key(|e| e.start.as_ref().map(|t| format!("{t:?}")));
        v
    };
    let listed = list_events(&mut c, &account, &calendar, window).await?;
    let first = instances(&listed);
    assert_eq!(first.len(), 4, "{listed:#?}");
    assert!(first.iter().all(|e| e.title == "Standup"));
    assert!(
        !listed.iter().any(|e| e.provider_event_id == master),
        "the master is no row of its own"
    );

    // The same series again: nothing to do.
    let again = c.upsert_event(upsert(series.clone())).await?.into_inner();
    assert_eq!(again.outcome(), WriteOutcome::Unchanged);
    assert_eq!(again.event.context("the series")?.provider_event_id, master);

    // The second instance, moved an hour and retitled by its instance id.
    let second = &first[1];
    let moved = c
        .upsert_event(pb::UpsertEventRequest {
            client_event_id: String::new(),
            provider_event_id: second.provider_event_id.clone(),
            expected_version: second.version.clone(),
            ..upsert(timed_event("Standup (late)", at(13, 10), 15))
        })
        .await?
        .into_inner();
    assert_eq!(moved.outcome(), WriteOutcome::Updated);
    sync_now_and_wait(&mut c, &account, "").await?;
    let after = instances(&list_events(&mut c, &account, &calendar, window).await?);
    assert_eq!(after.len(), 4, "{after:#?}");
    let titles: Vec<&str> = after.iter().map(|e| e.title.as_str()).collect();
    assert_eq!(
        titles.iter().filter(|t| **t == "Standup (late)").count(),
        1,
        "{titles:?}"
    );
    assert_eq!(titles.iter().filter(|t| **t == "Standup").count(), 3);

    // The third instance deleted by its instance id: the others stay.
    let third = after
        .iter()
        .find(|e| e.title == "Standup" && e.provider_event_id != first[0].provider_event_id)
        .context("an untouched later instance")?;
    let dropped = c
        .delete_event(pb::DeleteEventRequest {
            account_id: account.clone(),
            calendar_id: calendar.clone(),
            client_event_id: String::new(),
            provider_event_id: third.provider_event_id.clone(),
            expected_version: String::new(),
        })
        .await?
        .into_inner();
    assert_eq!(dropped.outcome(), WriteOutcome::Deleted);
    sync_now_and_wait(&mut c, &account, "").await?;
    let left = instances(&list_events(&mut c, &account, &calendar, window).await?);
    assert_eq!(left.len(), 3, "{left:#?}");
    assert!(!left
        .iter()
        .any(|e| e.provider_event_id == third.provider_event_id));

    // The series deleted by the caller's id.
    let deleted = c
        .delete_event(pb::DeleteEventRequest {
            account_id: account.clone(),
            calendar_id: calendar.clone(),
            client_event_id: "standup-series".into(),
            provider_event_id: String::new(),
            expected_version: String::new(),
        })
        .await?
        .into_inner();
    assert_eq!(deleted.outcome(), WriteOutcome::Deleted);
    sync_now_and_wait(&mut c, &account, "").await?;
    let gone = instances(&list_events(&mut c, &account, &calendar, window).await?);
    assert!(gone.is_empty(), "{gone:#?}");

    let feed = changes_after(&mut c, &start).await?;
    assert!(
        feed.is_empty(),
        "the platform's own series echoed: {feed:#?}"
    );
    f.verify().await
}
