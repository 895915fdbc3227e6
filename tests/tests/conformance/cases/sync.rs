//! Reading through the contract: cursors (expired, invalid, and every
//! page's resuming on its own), free/busy pages, and outside changes in
//! the next sync.

use std::collections::BTreeSet;

use anyhow::{ensure, Context, Result};
use calbridge::pb;
use calbridge::time::to_timestamp;
use calbridge_e2e::conformance::{instant_of, sync_to_end, upserted_ids};
use calbridge_e2e::timed_event;
use tonic::Code;

use super::{at, code, find, last_cursor, says_deleted, window, Case};
use crate::fixtures::{Fixture, Outside};

/// A cursor the provider no longer honours (an expired sync token), and
/// one that was never a cursor, are OUT_OF_RANGE; a listing from scratch
/// then recovers.
pub(crate) async fn an_expired_or_invalid_cursor_is_out_of_range<F: Fixture>() -> Result<()> {
    let mut c = Case::<F>::start().await?;
    let created = c
        .create("standup-1", timed_event("Standup", at(2, 9), 15))
        .await?;
    let (_, settled) = c.listing_and_settled_cursor().await?;

    let garbage = c
        .adapter
        .sync_events(c.sync_request("not-a-cursor", 0))
        .await;
    assert_eq!(code(&garbage), Code::OutOfRange, "{garbage:?}");

    let expired = c.f.expire_cursor(&settled).await?;
    let answer = c.adapter.sync_events(c.sync_request(&expired, 0)).await;
    assert_eq!(code(&answer), Code::OutOfRange, "{answer:?}");

    // What the scheduler then does: list from scratch.
    let relisted = c.sync("", 0).await?;
    assert!(relisted.iter().all(|p| p.full_listing), "{relisted:?}");
    ensure!(
        find(&relisted, &created.provider_event_id).is_some(),
        "the relisting lacks the event: {relisted:?}"
    );
    c.finish().await
}

/// Listed in pages of two, every page stays within the page size, and the
/// cursor of every page, presented again in a fresh call, resumes the
/// listing by itself: what came before it plus what follows it is the
/// whole calendar, each event once.
pub(crate) async fn every_page_cursor_resumes_on_its_own<F: Fixture>() -> Result<()> {
    const PAGE: u32 = 2;
    let mut c = Case::<F>::start().await?;
    let mut made = BTreeSet::new();
    for i in 0..5 {
        let e = timed_event(&format!("Paged {i}"), at(i + 1, 10), 30);
        made.insert(c.create(&format!("paged-{i}"), e).await?.provider_event_id);
    }
    let whole = sorted(upserted_ids(&c.sync("", 0).await?));
    assert_eq!(whole.iter().cloned().collect::<BTreeSet<_>>(), made);
    assert_eq!(whole.len(), made.len(), "each event once: {whole:?}");

    let pages = c.sync("", PAGE).await?;
    for p in &pages {
        assert!(
            p.upserted.len() <= PAGE as usize,
            "a page of {}",
            p.upserted.len()
        );
    }
    let with_events = pages.iter().filter(|p| !p.upserted.is_empty()).count();
    assert!(
        with_events >= 3,
        "5 events in pages of 2 took {with_events} pages"
    );
    assert_eq!(sorted(upserted_ids(&pages)), whole);

    for (i, page) in pages.iter().enumerate() {
        let rest = c
            .sync(&page.next_cursor, PAGE)
            .await
            .with_context(|| format!("resuming after page {i}"))?;
        let mut union = upserted_ids(&pages[..=i]);
        union.extend(upserted_ids(&rest));
        assert_eq!(
            sorted(union),
            whole,
            "pages up to {i} and a fresh sync from page {i}'s cursor"
        );
    }
    c.finish().await
}

/// FREE_BUSY credentials see busy time and never event content. An
/// adapter with native free/busy answers QueryFreeBusy with the interval
/// (the scheduler syncs FREE_BUSY accounts from it alone), and may refuse
/// event pages to such a grant (PERMISSION_DENIED); an adapter without it
/// serves `busy_only` pages, which the scheduler syncs them from. Either
/// way, any page a FREE_BUSY grant gets carries times, status and
/// transparency only: no title, description, location, attendees or
/// organizer.
pub(crate) async fn free_busy_pages_carry_no_event_content<F: Fixture>() -> Result<()> {
    let mut c = Case::<F>::start().await?;
    let mut secret = timed_event("Salary talk", at(6, 15), 60);
    secret.description = "private notes".into();
    secret.location = "Room 4".into();
    secret.attendees = vec![pb::Attendee {
        email: "ada@example.com".into(),
        display_name: "Ada".into(),
        ..Default::default()
    }];
    let created = c.create("salary-1", secret).await?;
    let full = c.sync("", 0).await?;
    let seen = find(&full, &created.provider_event_id).context("not listed")?;
    // The content is there to leave out.
    assert_eq!(seen.title, "Salary talk");
    assert_eq!(seen.location, "Room 4");
    let (start, end) = (at(6, 15), at(6, 16));

    let busy_creds = c.f.credentials(pb::AccessLevel::FreeBusy).await?;
    let caps = c
        .adapter
        .describe(pb::DescribeRequest {})
        .await?
        .into_inner();
    if caps.native_free_busy {
        let answer = c
            .adapter
            .query_free_busy(pb::ProviderFreeBusyRequest {
                credentials: Some(busy_creds.clone()),
                calendar_ids: vec![c.calendar.clone()],
                window: Some(window()),
            })
            .await?
            .into_inner();
        let interval = (Some(to_timestamp(start)), Some(to_timestamp(end)));
        assert!(
            answer.busy.iter().any(|b| (b.start, b.end) == interval),
            "{answer:?}"
        );
    }

    let request = pb::SyncEventsRequest {
        credentials: Some(busy_creds),
        busy_only: true,
        ..c.sync_request("", 0)
    };
    let pages = match sync_to_end(&mut c.adapter, request).await {
        Ok(pages) => pages,
        Err(s) if caps.native_free_busy && s.code() == Code::PermissionDenied => {
            return c.finish().await;
        }
        Err(s) => return Err(s).context("busy-only pages"),
    };
    let busy = find(&pages, &created.provider_event_id).context("no busy time")?;
    assert_eq!(instant_of(busy.start.as_ref()), Some(start));
    assert_eq!(instant_of(busy.end.as_ref()), Some(end));
    for e in pages.iter().flat_map(|p| &p.upserted) {
        let content = (
            &e.title,
            &e.description,
            &e.location,
            &e.attendees,
            &e.organizer,
        );
        assert!(
            e.title.is_empty()
                && e.description.is_empty()
                && e.location.is_empty()
                && e.attendees.is_empty()
                && e.organizer.is_none(),
            "content in a busy-only page: {content:?}"
        );
    }
    c.finish().await
}

/// Changes made at the provider, outside calbridge, show up in the next
/// sync with their kind: a creation and an edit as upserted events with
/// the new fields, a deletion as deleted.
pub(crate) async fn outside_changes_show_up_in_the_next_sync<F: Fixture>() -> Result<()> {
    let mut c = Case::<F>::start().await?;
    let (_, cursor) = c.listing_and_settled_cursor().await?;
    let lunch = Outside {
        title: "Lunch".into(),
        start: at(7, 12),
        minutes: 60,
    };

    let id = c.f.outside_put(None, &lunch).await?;
    let created = c.sync(&cursor, 0).await?;
    let seen = find(&created, &id).context("the outside creation is not in the next sync")?;
    assert_eq!(seen.title, "Lunch");
    assert_eq!(instant_of(seen.start.as_ref()), Some(at(7, 12)));
    assert!(!says_deleted(&created, &id), "{created:?}");

    let moved = Outside {
        title: "Lunch (moved)".into(),
        start: at(8, 13),
        ..lunch
    };
    c.f.outside_put(Some(&id), &moved).await?;
    let updated = c.sync(&last_cursor(&created)?, 0).await?;
    let seen = find(&updated, &id).context("the outside edit is not in the next sync")?;
    assert_eq!(seen.title, "Lunch (moved)");
    assert_eq!(instant_of(seen.start.as_ref()), Some(at(8, 13)));
    assert_eq!(instant_of(seen.end.as_ref()), Some(at(8, 14)));

    c.f.outside_delete(&id).await?;
    let deleted = c.sync(&last_cursor(&updated)?, 0).await?;
    assert!(says_deleted(&deleted, &id), "{deleted:?}");
    assert!(find(&deleted, &id).is_none(), "{deleted:?}");
    c.finish().await
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}
