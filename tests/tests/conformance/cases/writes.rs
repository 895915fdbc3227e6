//! Writes through the contract: creates idempotent on their key, updates
//! and deletes conditional on the version, deletes by provider id.

use anyhow::{Context, Result};
use calbridge::pb;
use calbridge_e2e::timed_event;
use tonic::Code;

use super::{at, code, current_version, find, says_deleted, Case};
use crate::fixtures::Fixture;

/// A create replayed with the same idempotency key (the key the scheduler
/// derives from the client event id) makes no second event: the answer is
/// the existing event, unchanged, with `already_existed` set.
pub(crate) async fn creating_twice_with_one_key_reports_the_existing_event<F: Fixture>(
) -> Result<()> {
    let mut c = Case::<F>::start().await?;
    let before = c.f.provider_event_ids().await?;
    let request = c.create_request("interview-17", timed_event("Interview", at(3, 14), 45));

    let first = c.adapter.create_event(request.clone()).await?.into_inner();
    assert!(!first.already_existed, "a first create is not a replay");
    let created = first.event.context("CreateEvent answered no event")?;
    assert!(!created.provider_event_id.is_empty(), "{created:?}");
    assert!(!created.version.is_empty(), "{created:?}");
    assert_eq!(created.title, "Interview");

    let second = c.adapter.create_event(request).await?.into_inner();
    assert!(second.already_existed, "the replay must say so: {second:?}");
    let again = second.event.context("the replay answered no event")?;
    assert_eq!(again.provider_event_id, created.provider_event_id);
    assert_eq!(
        again.version, created.version,
        "the existing event, unchanged"
    );
    assert_eq!(again.title, "Interview");

    let mut made: Vec<String> = c.f.provider_event_ids().await?;
    made.retain(|id| !before.contains(id));
    assert_eq!(
        made,
        vec![created.provider_event_id.clone()],
        "one event at the provider"
    );
    let listing = c.sync("", 0).await?;
    let listed = listing
        .iter()
        .flat_map(|p| &p.upserted)
        .filter(|e| e.provider_event_id == created.provider_event_id)
        .count();
    assert_eq!(listed, 1, "the listing names the event once");
    c.finish().await
}

/// An update or delete whose `expected_version` is stale is ABORTED with
/// the current version in the `x-calbridge-current-version` trailer, and
/// changes nothing; retried with that version, the update succeeds.
pub(crate) async fn a_stale_version_is_aborted_carrying_the_current_one<F: Fixture>() -> Result<()>
{
    let mut c = Case::<F>::start().await?;
    let created = c
        .create("review-1", timed_event("Review", at(4, 11), 30))
        .await?;
    let update = |c: &Case<F>, title: &str, version: &str| pb::ProviderUpdateEventRequest {
        credentials: Some(c.creds.clone()),
        calendar_id: c.calendar.clone(),
        provider_event_id: created.provider_event_id.clone(),
        event: Some(timed_event(title, at(4, 12), 30)),
        expected_version: version.into(),
    };
    let moved = c
        .adapter
        .update_event(update(&c, "Review (moved)", &created.version))
        .await?
        .into_inner();
    assert_ne!(
        moved.version, created.version,
        "an update makes a new version"
    );

    let stale = c
        .adapter
        .update_event(update(&c, "Review (stale)", &created.version))
        .await
        .expect_err("an update with a stale version must fail");
    assert_eq!(stale.code(), Code::Aborted, "{stale:?}");
    assert_eq!(
        current_version(&stale).as_deref(),
        Some(moved.version.as_str())
    );

    let stale_delete = c
        .adapter
        .delete_event(c.delete_request(&created.provider_event_id, &created.version))
        .await
        .expect_err("a delete with a stale version must fail");
    assert_eq!(stale_delete.code(), Code::Aborted, "{stale_delete:?}");
    if let Some(v) = current_version(&stale_delete) {
        assert_eq!(
            v, moved.version,
            "a delete's trailer, when sent, is current"
        );
    }

    // Neither stale write changed anything.
    let listing = c.sync("", 0).await?;
    let listed = find(&listing, &created.provider_event_id).context("the event is gone")?;
    assert_eq!(listed.title, "Review (moved)");
    assert_eq!(listed.version, moved.version);

    // The read-modify-write restarts with the version the trailer named.
    let retried = c
        .adapter
        .update_event(update(&c, "Review (retried)", &moved.version))
        .await?
        .into_inner();
    assert_eq!(retried.title, "Review (retried)");
    c.finish().await
}

/// A delete goes by provider id and removes only that event; a delete of
/// an event that is gone, or never was, is NOT_FOUND (the contract's
/// "NOT_FOUND when it is already gone"); a sync after the delete says it.
pub(crate) async fn deleting_goes_by_provider_id_and_a_missing_event_is_not_found<F: Fixture>(
) -> Result<()> {
    let mut c = Case::<F>::start().await?;
    let doomed = c
        .create("doomed-1", timed_event("Doomed", at(5, 9), 30))
        .await?;
    let kept = c
        .create("kept-1", timed_event("Kept", at(5, 10), 30))
        .await?;
    let (_, cursor) = c.listing_and_settled_cursor().await?;

    c.adapter
        .delete_event(c.delete_request(&doomed.provider_event_id, ""))
        .await?;
    let held = c.f.provider_event_ids().await?;
    assert!(!held.contains(&doomed.provider_event_id), "{held:?}");
    assert!(held.contains(&kept.provider_event_id), "{held:?}");

    let again = c
        .adapter
        .delete_event(c.delete_request(&doomed.provider_event_id, ""))
        .await;
    assert_eq!(code(&again), Code::NotFound, "deleting it again: {again:?}");
    let unknown = c.f.unknown_event_id();
    let never = c.adapter.delete_event(c.delete_request(&unknown, "")).await;
    assert_eq!(
        code(&never),
        Code::NotFound,
        "deleting {unknown}: {never:?}"
    );

    let changes = c.sync(&cursor, 0).await?;
    assert!(
        says_deleted(&changes, &doomed.provider_event_id),
        "{changes:?}"
    );
    assert!(
        !says_deleted(&changes, &kept.provider_event_id),
        "{changes:?}"
    );
    c.finish().await
}
