//! Each calendar's time line: its blocking mirrored events sorted by start,
//! built from the store's time index and kept until the mirror changes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use calbridge::ErrorKind;

use crate::ids::{AccountId, CalendarId};
use crate::store::Store;

/// One blocking mirrored event on a calendar's time line: what free/busy
/// and availability read. No content.
#[derive(Debug, Clone)]
pub struct BusyEntry {
    /// Start, ms.
    pub start_ms: i64,
    /// End, ms.
    pub end_ms: i64,
    /// `pb::BusyStatus` (never 0 here).
    pub busy: i32,
    /// All-day dates, days from the common era.
    pub all_day: Option<(i32, i32)>,
    /// Provider event id.
    pub provider_event_id: String,
}

/// A calendar's blocking events sorted by start, cached in memory.
#[derive(Debug, Default)]
pub struct Timeline {
    /// The entries, by start.
    pub entries: Vec<BusyEntry>,
    /// The longest entry, ms, so overlap queries can skip early entries.
    pub max_len_ms: i64,
}

impl Timeline {
    /// Indices of the entries overlapping [start, end).
    pub fn overlapping(&self, start: i64, end: i64) -> impl Iterator<Item = usize> + '_ {
        let from = self
            .entries
            .partition_point(|e| e.start_ms < start.saturating_sub(self.max_len_ms));
        let to = self.entries.partition_point(|e| e.start_ms < end);
        (from..to.max(from)).filter(move |&i| self.entries[i].end_ms > start)
    }
}

#[derive(Default)]
struct CachedTimeline {
    generation: u64,
    timeline: Option<Arc<Timeline>>,
}

/// The time lines built so far, by (account, calendar).
#[derive(Default)]
pub struct TimelineCache {
    timelines: Mutex<HashMap<(String, String), CachedTimeline>>,
}

impl TimelineCache {
    /// A calendar's blocking events, from memory when cached since the last
    /// change of its mirror.
    pub fn get(
        &self,
        store: &Store,
        account: &AccountId,
        calendar: &CalendarId,
    ) -> Result<Arc<Timeline>, ErrorKind> {
        let key = (account.to_string(), calendar.to_string());
        let generation = {
            let mut cache = self.timelines.lock().expect("lock poisoned");
            let entry = cache.entry(key.clone()).or_default();
            if let Some(t) = &entry.timeline {
                return Ok(t.clone());
            }
            entry.generation
        };
        let mut entries = Vec::new();
        let mut max_len_ms = 0;
        for (start_ms, pid, e) in
            store.events_overlapping(account, calendar, i64::MIN, i64::MAX, None, usize::MAX)?
        {
            if e.busy == calbridge::pb::BusyStatus::Unspecified {
                continue;
            }
            max_len_ms = max_len_ms.max(e.end_ms - start_ms);
            entries.push(BusyEntry {
                start_ms,
                end_ms: e.end_ms,
                busy: e.busy as i32,
                all_day: e.all_day,
                provider_event_id: pid,
            });
        }
        let timeline = Arc::new(Timeline {
            entries,
            max_len_ms,
        });
        let mut cache = self.timelines.lock().expect("lock poisoned");
        let entry = cache.entry(key).or_default();
        // A change that landed while this was built makes it stale: serve
        // it once, but do not keep it.
        if entry.generation == generation {
            entry.timeline = Some(timeline.clone());
        }
        Ok(timeline)
    }

    /// Forgets a calendar's time line after its mirror changed.
    pub fn forget(&self, account: &AccountId, calendar: &CalendarId) {
        let mut cache = self.timelines.lock().expect("lock poisoned");
        let entry = cache
            .entry((account.to_string(), calendar.to_string()))
            .or_default();
        entry.generation += 1;
        entry.timeline = None;
    }

    /// Forgets every time line of an account.
    pub fn forget_account(&self, account: &AccountId) {
        let mut cache = self.timelines.lock().expect("lock poisoned");
        for ((a, _), entry) in cache.iter_mut() {
            if a == account.as_str() {
                entry.generation += 1;
                entry.timeline = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(start_ms: i64, end_ms: i64) -> BusyEntry {
        BusyEntry {
            start_ms,
            end_ms,
            busy: 1,
            all_day: None,
            provider_event_id: format!("{start_ms}"),
        }
    }

    #[test]
    fn timeline_overlap_finds_long_early_events_and_nothing_else() {
        let t = Timeline {
            entries: vec![e(0, 1000), e(100, 150), e(200, 300), e(400, 500)],
            max_len_ms: 1000,
        };
        let hits: Vec<usize> = t.overlapping(250, 450).collect();
        assert_eq!(hits, vec![0, 2, 3]);
        assert_eq!(t.overlapping(1000, 2000).count(), 0);
        assert_eq!(t.overlapping(-10, 1).collect::<Vec<_>>(), vec![0]);
    }
}
