//! The scheduler with the adapter: an event made outside calbridge is
//! edited by its provider id, with its version as a real precondition at
//! the provider, and never duplicated.

use anyhow::{Context, Result};
use calbridge::pb::{self, ChangeKind, WriteOutcome};
use calbridge_e2e::conformance::{wait_calendar_synced, Scheduler};
use calbridge_e2e::{change_cursor, changes_after, next_change, sync_now_and_wait, timed_event};

use super::{at, current_version};
use crate::fixtures::{Fixture, Outside};

/// Through a real scheduler: an outside event, seen on the feed, is
/// updated by its provider id. A stale version is ABORTED with the current
/// one and changes nothing; the current version updates that very event
/// (the provider still holds one event, the same id); the edit does not
/// echo on the feed; the caller's id attached on the way reaches the same
/// event later; an id the provider does not have is NOT_FOUND and creates
/// nothing.
pub(crate) async fn an_outside_event_is_edited_by_its_provider_id_never_duplicated<F: Fixture>(
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

    let outside = Outside {
        title: "Dentist".into(),
        start: at(11, 10),
        minutes: 30,
    };
    let id = f.outside_put(None, &outside).await?;
    sync_now_and_wait(&mut c, &account, "").await?;
    let created = next_change(&mut c, &start, |ch| ch.provider_event_id == id)
        .await
        .context("the outside event on the feed")?;
    assert_eq!(created.kind(), ChangeKind::EventCreated);
    let version = created.event.context("the created event")?.version;
    let held_before = held(&f).await?;

    let edit = |expected_version: &str, client_event_id: &str| pb::UpsertEventRequest {
        account_id: account.clone(),
        calendar_id: calendar.clone(),
        client_event_id: client_event_id.into(),
        event: Some(timed_event("Dentist (moved)", at(11, 15), 30)),
        expected_version: expected_version.into(),
        hold_id: String::new(),
        provider_event_id: id.clone(),
    };

    // A version that is not the provider's: refused, nothing written.
    let stale = c.upsert_event(edit("stale-version", "")).await;
    let status = stale.err().context("a stale version must be refused")?;
    assert_eq!(status.code(), tonic::Code::Aborted, "{status:?}");
    assert_eq!(current_version(&status).as_deref(), Some(version.as_str()));
    assert_eq!(held(&f).await?, held_before);

    // The current version: that event is updated, no second one made.
    let updated = c
        .upsert_event(edit(&version, "adopted-1"))
        .await?
        .into_inner();
    assert_eq!(updated.outcome(), WriteOutcome::Updated);
    let written = updated.event.context("the updated event")?;
    assert_eq!(written.provider_event_id, id);
    assert_eq!(written.title, "Dentist (moved)");
    assert_ne!(written.version, version);
    assert_eq!(held(&f).await?, held_before);

    // The caller's id attached above reaches the same event.
    let by_client = c
        .upsert_event(pb::UpsertEventRequest {
            provider_event_id: String::new(),
            event: Some(timed_event("Dentist (final)", at(11, 15), 30)),
            ..edit("", "adopted-1")
        })
        .await?
        .into_inner();
    assert_eq!(by_client.outcome(), WriteOutcome::Updated);
    assert_eq!(by_client.event.context("the event")?.provider_event_id, id);
    assert_eq!(held(&f).await?, held_before);

    // An id the provider does not have: NOT_FOUND, nothing created.
    let missing = c
        .upsert_event(pb::UpsertEventRequest {
            provider_event_id: format!("{id}-missing"),
            ..edit("", "")
        })
        .await;
    assert_eq!(missing.err().map(|s| s.code()), Some(tonic::Code::NotFound));
    assert_eq!(held(&f).await?, held_before);

    // The platform's edits do not come back as outside changes.
    sync_now_and_wait(&mut c, &account, "").await?;
    let feed: Vec<(ChangeKind, String)> = changes_after(&mut c, &start)
        .await?
        .into_iter()
        .map(|ch| (ch.kind(), ch.provider_event_id))
        .collect();
    assert_eq!(feed, vec![(ChangeKind::EventCreated, id.clone())]);
    f.verify().await
}

/// The provider's event ids, sorted.
async fn held<F: Fixture>(f: &F) -> Result<Vec<String>> {
    let mut ids = f.provider_event_ids().await?;
    ids.sort();
    Ok(ids)
}
