//! The pure part of a sync page: from what the mirror holds and one
//! provider page, the mirror writes, the change-log entries and the
//! calendar's next sync state. Nothing here touches the store except
//! through [`MirrorView`]'s two reads, so it is tested without sled; the
//! shell in `calendar.rs` reads the page, calls [`page`] and stores the
//! result in one transaction.

use std::collections::HashSet;

use calbridge::pb::{self, AccountStatus, ChangeKind};
use chrono_tz::Tz;

use crate::crypto::{hash_hex, DataKey};
use crate::ids::{AccountId, CalendarId};
use crate::mirror::{put_for, same_content, same_series_content};
use crate::sealing::{change_aad, event_aad, open_event, seal_event};
use crate::store::{
    ChangeDraft, EventRecord, MirrorPut, MirrorRemove, Store, StoreError, SyncRecord,
};

/// What the diff reads of a calendar's mirror.
pub trait MirrorView {
    /// The mirrored event `pid`, if any.
    fn event(&self, pid: &str) -> Result<Option<EventRecord>, StoreError>;
    /// Every mirrored event's id.
    fn event_ids(&self) -> Result<Vec<String>, StoreError>;
}

/// A calendar's mirror in the store.
pub struct StoredMirror<'a> {
    /// The store.
    pub store: &'a Store,
    /// Account.
    pub account_id: &'a AccountId,
    /// Calendar.
    pub calendar_id: &'a CalendarId,
}

impl MirrorView for StoredMirror<'_> {
    fn event(&self, pid: &str) -> Result<Option<EventRecord>, StoreError> {
        self.store.event(self.account_id, self.calendar_id, pid)
    }

    fn event_ids(&self) -> Result<Vec<String>, StoreError> {
        self.store.event_ids(self.account_id, self.calendar_id)
    }
}

/// The calendar a page belongs to, and how it is synced.
pub struct Calendar<'a> {
    /// Account.
    pub account_id: &'a AccountId,
    /// Calendar.
    pub calendar_id: &'a CalendarId,
    /// The account's data key.
    pub key: &'a DataKey,
    /// The calendar's zone (for all-day events).
    pub zone: Option<Tz>,
    /// A FREE_BUSY account: content is stripped before it is mirrored.
    pub busy_only: bool,
    /// Synced from the provider's free/busy answer alone.
    pub native_busy: bool,
    /// The poll interval, s (the next due time after a last page).
    pub poll_s: u64,
    /// The sync window asked of the provider, ms [start, end). A mirrored
    /// event wholly outside it that a full listing did not list has left
    /// the window as the clock moved on: it leaves the mirror without a
    /// change-feed entry, because nobody deleted it.
    pub window_ms: Option<(i64, i64)>,
}

/// What a listing has read so far, over its pages.
#[derive(Default)]
pub struct Listing {
    /// Ids of the events a full listing returned.
    pub seen: HashSet<String>,
    /// Items the provider could not give (id, reason).
    pub skipped: Vec<(String, String)>,
}

/// What one page changes.
#[derive(Default)]
pub struct PageWrites {
    /// Events to put into the mirror.
    pub puts: Vec<MirrorPut>,
    /// Events to remove from the mirror.
    pub removes: Vec<MirrorRemove>,
    /// Change-log entries.
    pub changes: Vec<ChangeDraft>,
}

/// Diffs one provider page against the mirror: the writes and changes it
/// makes, and `st` advanced (cursor, skipped items, and after a last page
/// the success and next due time). Events already mirrored at their version
/// are no change (the platform's own writes, duplicate pages); a new version
/// with the same content refreshes the mirror quietly; the last page of a
/// full listing deletes what it did not list, except events of skipped
/// items. `page`'s events and deletions are taken.
pub fn page(
    cal: &Calendar<'_>,
    mirror: &impl MirrorView,
    listing: &mut Listing,
    st: &mut SyncRecord,
    page: &mut pb::SyncEventsResponse,
    now: i64,
) -> Result<PageWrites, StoreError> {
    let Calendar {
        account_id,
        calendar_id,
        key,
        zone,
        busy_only,
        native_busy,
        poll_s,
        window_ms,
    } = *cal;
    // A free/busy answer identical to the one last mirrored (the usual
    // poll) changes nothing: no event is compared, nothing is removed.
    // Only free/busy pages qualify: such a mirror is written by these
    // pages alone (FREE_BUSY accounts cannot write), whereas a listing
    // equal to the last one could still owe the removal of an event
    // written through calbridge since.
    let digest = native_busy.then(|| {
        let ids: Vec<&str> = page
            .upserted
            .iter()
            .map(|e| e.provider_event_id.as_str())
            .collect();
        hash_hex(&ids)
    });
    let unchanged_busy = digest.is_some() && digest == st.busy_digest;
    st.busy_digest = digest;
    if unchanged_busy {
        page.upserted.clear();
    }

    let mut puts = Vec::new();
    let mut removes = Vec::new();
    let mut changes = Vec::new();
    let full_listing = page.full_listing;
    // Series the platform wrote, by master id: their content as written.
    let mut own_series: std::collections::HashMap<String, Option<pb::Event>> = Default::default();
    // Provider data is held to the API's field limits: an item whose
    // identity cannot be stored is skipped and reported, never allowed
    // to block the rest of its calendar.
    calbridge::provider_data::bound_skipped(&mut page.skipped);
    listing.skipped.extend(
        page.skipped
            .iter()
            .map(|s| (s.item_id.clone(), s.reason.clone())),
    );
    page.deleted
        .retain(|d| d.len() <= calbridge::provider_data::MAX_PROVIDER_EVENT_ID_BYTES);
    for mut e in std::mem::take(&mut page.upserted) {
        if busy_only {
            e = calbridge::adapter::free_busy_view(e);
        }
        match calbridge::provider_data::bound_event(&mut e) {
            Ok(cut) if !cut.0.is_empty() => {
                tracing::debug!(fields = ?cut.0, "provider event cut to the field limits");
            }
            Ok(_) => {}
            Err(reason) => {
                tracing::warn!(%reason, "skipping a provider event beyond the field limits");
                if listing.skipped.len() < calbridge::provider_data::MAX_SKIPPED_PER_PAGE {
                    listing.skipped.push((
                        calbridge::provider_data::report_id(&e.provider_event_id),
                        reason,
                    ));
                }
                continue;
            }
        }
        let pid = e.provider_event_id.clone();
        if page.full_listing {
            listing.seen.insert(pid.clone());
        }
        let existing = mirror.event(&pid)?;
        if existing.as_ref().is_some_and(|x| x.version == e.version) {
            // Already mirrored at this version: our own write, or a
            // duplicate page. Nothing changed.
            continue;
        }
        e.account_id = account_id.to_string();
        e.calendar_id = calendar_id.to_string();
        if e.client_event_id.is_empty() {
            if let Some(c) = existing.as_ref().and_then(|x| x.client_event_id.clone()) {
                e.client_event_id = c;
            }
        }
        e.managed = !e.client_event_id.is_empty();
        // An instance of a series the platform wrote, as it wrote it: the
        // platform's own expansion, never an outside change.
        let series = e
            .recurrence_link
            .as_ref()
            .map(|l| l.series_event_id.clone())
            .filter(|s| !s.is_empty() && *s != pid);
        if let Some(series) = series {
            if !own_series.contains_key(&series) {
                let master = mirror
                    .event(&series)?
                    .filter(|m| m.series && m.written_hash.is_some())
                    .and_then(|m| {
                        open_event(key, &event_aad(account_id, calendar_id, &series), &m.sealed)
                            .ok()
                    });
                own_series.insert(series.clone(), master);
            }
            if let Some(Some(master)) = own_series.get(&series) {
                if same_series_content(master, &e) {
                    e.managed = true;
                    puts.push(put_for(
                        key,
                        account_id,
                        calendar_id,
                        zone,
                        &e,
                        existing.as_ref(),
                    ));
                    continue;
                }
            }
        }
        let unchanged = match &existing {
            // A new version with the same content (say, another
            // instance of its series was edited): refresh the mirror's
            // version quietly; only real changes reach the feed.
            Some(x) => open_event(key, &event_aad(account_id, calendar_id, &pid), &x.sealed)
                .is_ok_and(|old| {
                    same_content(&old, &e) && old.recurrence_link == e.recurrence_link
                }),
            None => false,
        };
        let kind = if existing.is_some() {
            ChangeKind::EventUpdated
        } else {
            ChangeKind::EventCreated
        };
        if unchanged {
            let mut put = put_for(key, account_id, calendar_id, zone, &e, existing.as_ref());
            put.record.written_hash = existing.as_ref().and_then(|x| x.written_hash.clone());
            puts.push(put);
            continue;
        }
        changes.push(ChangeDraft {
            kind,
            account_id: account_id.into(),
            calendar_id: calendar_id.into(),
            provider_event_id: pid.clone().into(),
            account_status: AccountStatus::Unspecified,
            sealed_event: seal_event(key, &change_aad(account_id, calendar_id, &pid), &e),
        });
        puts.push(put_for(
            key,
            account_id,
            calendar_id,
            zone,
            &e,
            existing.as_ref(),
        ));
    }
    let mut deleted: Vec<String> = std::mem::take(&mut page.deleted);
    // The provider's own word first: each of these is a deletion.
    deleted.sort();
    deleted.dedup();
    let told = deleted.len();
    if page.full_listing && !page.more && !unchanged_busy {
        for pid in mirror.event_ids()? {
            if !listing.seen.contains(&pid)
                && !is_of_skipped(&pid, &listing.skipped)
                && deleted[..told].binary_search(&pid).is_err()
            {
                deleted.push(pid);
            }
        }
    }
    for (i, pid) in deleted.into_iter().enumerate() {
        let Some(existing) = mirror.event(&pid)? else {
            continue;
        };
        if i >= told && existing.series {
            // A series master the platform wrote is never listed (its
            // instances are): it stays until the platform or the provider
            // deletes the series.
            continue;
        }
        let left_window = i >= told
            && window_ms
                .is_some_and(|(start, end)| existing.end_ms <= start || existing.start_ms >= end);
        if left_window {
            removes.push(MirrorRemove {
                provider_event_id: pid.into(),
                start_ms: existing.start_ms,
                client_event_id: existing.client_event_id,
            });
            continue;
        }
        let last = open_event(
            key,
            &event_aad(account_id, calendar_id, &pid),
            &existing.sealed,
        )
        .ok();
        changes.push(ChangeDraft {
            kind: ChangeKind::EventDeleted,
            account_id: account_id.into(),
            calendar_id: calendar_id.into(),
            provider_event_id: pid.clone().into(),
            account_status: AccountStatus::Unspecified,
            sealed_event: last
                .map(|e| seal_event(key, &change_aad(account_id, calendar_id, &pid), &e))
                .unwrap_or_default(),
        });
        removes.push(MirrorRemove {
            provider_event_id: pid.into(),
            start_ms: existing.start_ms,
            client_event_id: existing.client_event_id,
        });
    }

    st.cursor = page.next_cursor.clone();
    st.listing_in_progress = full_listing && page.more;
    if st.drift_check {
        // What a drift-repair listing changes, the incremental syncs missed.
        st.drift_repaired += changes.len() as u64;
    }
    if !page.more {
        if full_listing {
            st.last_full_listing_ms = Some(now);
            st.drift_check = false;
            st.skipped = std::mem::take(&mut listing.skipped);
        } else {
            // Items read (or deleted) now are no longer broken; newly
            // broken ones join the list.
            st.skipped.retain(|(id, _)| {
                !puts.iter().any(|p| belongs_to(&p.provider_event_id, id))
                    && !removes.iter().any(|r| r.provider_event_id == *id)
            });
            for item in std::mem::take(&mut listing.skipped) {
                if !st.skipped.iter().any(|(id, _)| *id == item.0) {
                    st.skipped.push(item);
                }
            }
        }
        st.last_success_ms = Some(now);
        st.failures = 0;
        st.last_error.clear();
        st.next_due_ms = now + (poll_s as i64) * 1000;
    }
    Ok(PageWrites {
        puts,
        removes,
        changes,
    })
}

/// True when a mirrored event belongs to a skipped (unreadable) item: its id
/// belongs to one of the items (see [`belongs_to`]).
pub(super) fn is_of_skipped(pid: &str, skipped: &[(String, String)]) -> bool {
    skipped.iter().any(|(id, _)| belongs_to(pid, id))
}

/// True when event `pid` is provider item `id` or one of its instances:
/// the item's id followed by "#" (CalDAV) or "_" (Google).
pub(crate) fn belongs_to(pid: &str, id: &str) -> bool {
    pid == id
        || pid
            .strip_prefix(id)
            .is_some_and(|rest| rest.starts_with('#') || rest.starts_with('_'))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// A mirror held in memory.
    #[derive(Default)]
    struct Memory(BTreeMap<String, EventRecord>);

    impl MirrorView for Memory {
        fn event(&self, pid: &str) -> Result<Option<EventRecord>, StoreError> {
            Ok(self.0.get(pid).cloned())
        }

        fn event_ids(&self) -> Result<Vec<String>, StoreError> {
            Ok(self.0.keys().cloned().collect())
        }
    }

    fn event(pid: &str, version: &str, title: &str) -> pb::Event {
        pb::Event {
            provider_event_id: pid.into(),
            version: version.into(),
            title: title.into(),
            start: Some(calbridge::time::instant(
                chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
                "",
            )),
            end: Some(calbridge::time::instant(
                chrono::DateTime::from_timestamp(1_800_003_600, 0).unwrap(),
                "",
            )),
            ..Default::default()
        }
    }

    /// The tests' window starts a day before the events of [`event`].
    const WINDOW_START: i64 = (1_800_000_000 - 86_400) * 1000;

    /// An event of `event`'s shape that ended before the window starts.
    fn past_event(pid: &str) -> pb::Event {
        let t = |s: i64| {
            Some(calbridge::time::instant(
                chrono::DateTime::from_timestamp(s, 0).unwrap(),
                "",
            ))
        };
        pb::Event {
            start: t(1_800_000_000 - 3 * 86_400),
            end: t(1_800_000_000 - 3 * 86_400 + 3600),
            ..event(pid, "1", "Last week")
        }
    }

    #[test]
    fn the_expansion_of_a_series_the_platform_wrote_is_no_change_but_an_edited_instance_is() {
        let (key, _) = DataKey::generate();
        let mut master = event("series", "1", "Standup");
        master.recurrence = vec!["RRULE:FREQ=DAILY;COUNT=3".into()];
        let mut mirror = mirrored(&key, &[master.clone()]);
        let row = mirror.0.get_mut("series").unwrap();
        row.series = true;
        row.written_hash = Some(crate::mirror::content_hash(&master));
        let instance = |pid: &str, title: &str| pb::Event {
            recurrence_link: Some(pb::RecurrenceLink {
                series_event_id: "series".into(),
                original_start: None,
            }),
            client_event_id: "standup".into(),
            ..event(pid, "1", title)
        };
        let cal = calendar(&key);
        let mut st = SyncRecord::default();
        let w = super::page(
            &cal,
            &mirror,
            &mut Listing::default(),
            &mut st,
            &mut listing_page(
                vec![
                    instance("series_1", "Standup"),
                    instance("series_2", "Standup"),
                    instance("series_3", "Standup (moved outside)"),
                ],
                false,
            ),
            5,
        )
        .unwrap();
        assert_eq!(
            kinds(&w),
            vec![(ChangeKind::EventCreated, "series_3".into())],
            "only the instance someone else changed is a change"
        );
        assert_eq!(w.puts.len(), 3);
        // No instance takes the caller's id (it names the series), and the
        // series' row is not taken for deleted by the full listing.
        assert!(w.puts.iter().all(|p| p.record.client_event_id.is_none()));
        assert!(w.removes.is_empty(), "{:?}", w.removes.len());
    }

    #[test]
    fn a_drift_repair_listing_counts_what_it_changed_and_ends_with_the_listing() {
        let (key, _) = DataKey::generate();
        let mirror = mirrored(
            &key,
            &[event("a", "1", "A"), event("lost-edit", "1", "Old")],
        );
        let cal = calendar(&key);
        let mut listing = Listing::default();
        let mut st = SyncRecord {
            drift_check: true,
            ..SyncRecord::default()
        };
        // Page one: "a" as mirrored, "lost-edit" changed without the
        // incremental sync having said so.
        let w1 = super::page(
            &cal,
            &mirror,
            &mut listing,
            &mut st,
            &mut listing_page(
                vec![event("a", "1", "A"), event("lost-edit", "2", "New")],
                true,
            ),
            1,
        )
        .unwrap();
        assert_eq!(w1.changes.len(), 1);
        assert!(st.drift_check && st.last_full_listing_ms.is_none());
        // Page two: an event the mirror never heard of.
        let w2 = super::page(
            &cal,
            &mirror,
            &mut listing,
            &mut st,
            &mut listing_page(vec![event("missed", "1", "Missed")], false),
            7,
        )
        .unwrap();
        assert_eq!(
            kinds(&w2),
            vec![(ChangeKind::EventCreated, "missed".into())]
        );
        assert_eq!(st.drift_repaired, 2);
        assert!(!st.drift_check);
        assert_eq!(st.last_full_listing_ms, Some(7));
        // An ordinary full listing (a first sync, an expired cursor) is not
        // drift, however much it changes.
        let mut listing = Listing::default();
        let w3 = super::page(
            &cal,
            &Memory::default(),
            &mut listing,
            &mut st,
            &mut listing_page(vec![event("x", "1", "X")], false),
            9,
        )
        .unwrap();
        assert_eq!(w3.changes.len(), 1);
        assert_eq!((st.drift_repaired, st.last_full_listing_ms), (2, Some(9)));
    }

    #[test]
    fn an_event_that_left_the_window_leaves_the_mirror_without_a_change_but_a_deletion_is_told() {
        let (key, _) = DataKey::generate();
        let mirror = mirrored(
            &key,
            &[
                past_event("old"),
                past_event("old-deleted"),
                event("gone", "1", "Gone"),
            ],
        );
        let cal = calendar(&key);
        let mut listing = Listing::default();
        let mut st = SyncRecord::default();
        // A full listing of the moved window lists none of them; the
        // provider also says "old-deleted" was deleted.
        let mut last = listing_page(Vec::new(), false);
        last.deleted.push("old-deleted".into());
        let w = super::page(&cal, &mirror, &mut listing, &mut st, &mut last, 5).unwrap();
        let mut removed: Vec<&str> = w
            .removes
            .iter()
            .map(|r| r.provider_event_id.as_str())
            .collect();
        removed.sort();
        assert_eq!(removed, vec!["gone", "old", "old-deleted"]);
        let mut told = kinds(&w);
        told.sort_by(|a, b| a.1.cmp(&b.1));
        assert_eq!(
            told,
            vec![
                (ChangeKind::EventDeleted, "gone".into()),
                (ChangeKind::EventDeleted, "old-deleted".into()),
            ],
            "leaving the window is not a deletion; a deletion the provider told is"
        );
    }

    static ACC: std::sync::LazyLock<AccountId> = std::sync::LazyLock::new(|| "acc".into());
    static CAL: std::sync::LazyLock<CalendarId> = std::sync::LazyLock::new(|| "cal".into());

    fn calendar(key: &DataKey) -> Calendar<'_> {
        Calendar {
            account_id: &ACC,
            calendar_id: &CAL,
            key,
            zone: None,
            busy_only: false,
            native_busy: false,
            poll_s: 60,
            window_ms: Some((WINDOW_START, i64::MAX)),
        }
    }

    /// The mirror as a page of these events would have left it.
    fn mirrored(key: &DataKey, events: &[pb::Event]) -> Memory {
        let mut m = Memory::default();
        for e in events {
            let mut e = e.clone();
            e.account_id = "acc".into();
            e.calendar_id = "cal".into();
            let put = put_for(
                key,
                &AccountId::from("acc"),
                &CalendarId::from("cal"),
                None,
                &e,
                None,
            );
            m.0.insert(put.provider_event_id.into_string(), put.record);
        }
        m
    }

    fn listing_page(events: Vec<pb::Event>, more: bool) -> pb::SyncEventsResponse {
        pb::SyncEventsResponse {
            upserted: events,
            full_listing: true,
            more,
            next_cursor: if more { "next".into() } else { String::new() },
            ..Default::default()
        }
    }

    fn kinds(w: &PageWrites) -> Vec<(ChangeKind, String)> {
        w.changes
            .iter()
            .map(|c| (c.kind, c.provider_event_id.to_string()))
            .collect()
    }

    #[test]
    fn new_and_changed_events_are_put_with_a_change_and_known_versions_are_no_change() {
        let (key, _) = DataKey::generate();
        let mirror = mirrored(&key, &[event("a", "1", "A"), event("b", "1", "B")]);
        let mut page = listing_page(
            vec![
                event("a", "1", "A"),
                event("b", "2", "B moved"),
                event("c", "1", "C"),
            ],
            false,
        );
        let mut st = SyncRecord::default();
        let w = super::page(
            &calendar(&key),
            &mirror,
            &mut Listing::default(),
            &mut st,
            &mut page,
            1_000,
        )
        .unwrap();
        assert_eq!(
            kinds(&w),
            vec![
                (ChangeKind::EventUpdated, "b".into()),
                (ChangeKind::EventCreated, "c".into()),
            ]
        );
        let put: Vec<&str> = w
            .puts
            .iter()
            .map(|p| p.provider_event_id.as_str())
            .collect();
        assert_eq!(put, vec!["b", "c"]);
        assert!(w.removes.is_empty());
        // The change carries the new content, sealed for the change log.
        let opened = open_event(
            &key,
            &change_aad(&AccountId::from("acc"), &CalendarId::from("cal"), "b"),
            &w.changes[0].sealed_event,
        )
        .unwrap();
        assert_eq!(opened.title, "B moved");
        // A last page: synced now, due again after the poll interval.
        assert_eq!(st.last_success_ms, Some(1_000));
        assert_eq!(st.next_due_ms, 1_000 + 60_000);
        assert!(!st.listing_in_progress);
    }

    #[test]
    fn a_new_version_with_the_same_content_refreshes_the_mirror_quietly() {
        let (key, _) = DataKey::generate();
        let mirror = mirrored(&key, &[event("a", "1", "A")]);
        let mut page = listing_page(vec![event("a", "7", "A")], false);
        let w = super::page(
            &calendar(&key),
            &mirror,
            &mut Listing::default(),
            &mut SyncRecord::default(),
            &mut page,
            0,
        )
        .unwrap();
        assert!(w.changes.is_empty());
        assert_eq!(w.puts.len(), 1);
        assert_eq!(w.puts[0].record.version, "7");
    }

    #[test]
    fn the_last_page_of_a_full_listing_deletes_what_no_page_listed_but_spares_skipped_items() {
        let (key, _) = DataKey::generate();
        let mirror = mirrored(
            &key,
            &[
                event("a", "1", "A"),
                event("gone", "1", "Gone"),
                event("broken#1", "1", "instance of a broken item"),
            ],
        );
        let cal = calendar(&key);
        let mut listing = Listing::default();
        let mut st = SyncRecord::default();
        // Page one lists "a"; page two lists nothing but reports "broken".
        let w1 = super::page(
            &cal,
            &mirror,
            &mut listing,
            &mut st,
            &mut listing_page(vec![event("a", "1", "A")], true),
            0,
        )
        .unwrap();
        assert!(w1.removes.is_empty() && w1.changes.is_empty());
        assert!(st.listing_in_progress);
        assert_eq!(st.cursor, "next");
        let mut last = listing_page(Vec::new(), false);
        last.skipped.push(pb::SkippedItem {
            item_id: "broken".into(),
            reason: "unreadable".into(),
        });
        let w2 = super::page(&cal, &mirror, &mut listing, &mut st, &mut last, 5).unwrap();
        let removed: Vec<&str> = w2
            .removes
            .iter()
            .map(|r| r.provider_event_id.as_str())
            .collect();
        assert_eq!(removed, vec!["gone"]);
        assert_eq!(kinds(&w2), vec![(ChangeKind::EventDeleted, "gone".into())]);
        // The deletion carries the event's last content.
        let last_seen = open_event(
            &key,
            &change_aad(&AccountId::from("acc"), &CalendarId::from("cal"), "gone"),
            &w2.changes[0].sealed_event,
        )
        .unwrap();
        assert_eq!(last_seen.title, "Gone");
        assert_eq!(
            st.skipped,
            vec![("broken".to_string(), "unreadable".to_string())]
        );
        assert!(!st.listing_in_progress);
    }

    #[test]
    fn free_busy_accounts_mirror_no_content() {
        let (key, _) = DataKey::generate();
        let mut cal = calendar(&key);
        cal.busy_only = true;
        let mut page = listing_page(vec![event("a", "1", "Secret meeting")], false);
        let w = super::page(
            &cal,
            &Memory::default(),
            &mut Listing::default(),
            &mut SyncRecord::default(),
            &mut page,
            0,
        )
        .unwrap();
        let sealed = open_event(
            &key,
            &change_aad(&AccountId::from("acc"), &CalendarId::from("cal"), "a"),
            &w.changes[0].sealed_event,
        )
        .unwrap();
        assert!(sealed.title.is_empty(), "{sealed:?}");
    }
}
