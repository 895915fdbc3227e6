//! What the store keeps in memory beside sled: every calendar's sync state
//! and freshness, and mirrored-event counts.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::*;

/// Mirrored-event counts per calendar (sync status asks often, and a
/// count from scratch is a scan of the calendar's events). A calendar's
/// count is taken by a scan when first asked, and from then on moved by
/// every committed mirror write's own difference (events added less events
/// removed, as its transaction saw them). A scan is kept only when no write
/// was in flight from its start to its end, so every write either happened
/// before a kept count or adds its difference after it. Writes that drop
/// many rows at once (a mirror cleared, an account purged) forget the
/// counts instead.
#[derive(Debug, Default)]
pub(super) struct EventCounts(Mutex<CountsInner>);

#[derive(Debug, Default)]
pub(super) struct CountsInner {
    /// Writes begun.
    started: u64,
    /// Writes finished (counts adjusted or forgotten).
    finished: u64,
    /// Counts by (account, calendar).
    known: foldhash::HashMap<(String, String), u64>,
}

/// A count to take, from the write counters at its start.
pub(super) struct CountTicket(u64, u64);

impl EventCounts {
    pub(super) fn lock(&self) -> MutexGuard<'_, CountsInner> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The kept count, or the ticket to take one with.
    pub(super) fn get(&self, account: &str, calendar: &str) -> Result<u64, CountTicket> {
        let g = self.lock();
        g.known
            .get(&(account.to_string(), calendar.to_string()))
            .copied()
            .ok_or(CountTicket(g.started, g.finished))
    }

    /// Keeps a scanned count unless a write was in flight meanwhile.
    pub(super) fn keep(&self, account: &str, calendar: &str, t: CountTicket, n: u64) {
        let mut g = self.lock();
        if t.0 == t.1 && g.started == t.0 && g.finished == t.1 {
            g.known
                .insert((account.to_string(), calendar.to_string()), n);
        }
    }

    /// Before a mirror write.
    pub(super) fn begin(&self) {
        self.lock().started += 1;
    }

    /// After a mirror write, committed or not: moves the calendar's kept
    /// count by `delta` (the write's own difference; 0 when it failed).
    pub(super) fn finish(&self, account: &str, calendar: &str, delta: i64) {
        let mut g = self.lock();
        g.finished += 1;
        if let Some(n) = g
            .known
            .get_mut(&(account.to_string(), calendar.to_string()))
        {
            *n = n.saturating_add_signed(delta);
        }
    }

    /// After a write that dropped many rows: forgets the counts of one
    /// calendar or (with `None`) of every calendar of the account.
    pub(super) fn forget(&self, account: &str, calendar: Option<&str>) {
        let mut g = self.lock();
        g.finished += 1;
        match calendar {
            Some(c) => {
                g.known.remove(&(account.to_string(), c.to_string()));
            }
            None => g.known.retain(|(a, _), _| a != account),
        }
    }
}

/// When one calendar last synced successfully, kept current by every write
/// of its sync state. A holder (a cached availability participant) reads it
/// without a lookup; the cell of a calendar stays the same for the life of
/// the process, even across the account's removal and reconnection.
#[derive(Debug)]
pub struct FreshnessCell(AtomicI64);

impl FreshnessCell {
    const NEVER: i64 = i64::MIN;

    pub(super) fn new() -> Self {
        FreshnessCell(AtomicI64::new(Self::NEVER))
    }

    pub(super) fn set(&self, last_success_ms: Option<i64>) {
        self.0
            .store(last_success_ms.unwrap_or(Self::NEVER), Ordering::Release);
    }

    /// The last successful sync, ms; `None` when the calendar never synced
    /// (or has no sync state).
    pub fn get(&self) -> Option<i64> {
        Some(self.0.load(Ordering::Acquire)).filter(|&v| v != Self::NEVER)
    }
}

/// One calendar's entry in [`SyncStates`].
pub(super) struct SyncSlot {
    /// The stored state; `None` once removed (the slot stays for its cell).
    pub(super) state: Option<SyncRecord>,
    pub(super) fresh: Arc<FreshnessCell>,
}

impl SyncSlot {
    pub(super) fn empty() -> Self {
        SyncSlot {
            state: None,
            fresh: Arc::new(FreshnessCell::new()),
        }
    }
}

/// Hashed with foldhash: ids come from the store or from authenticated
/// tenants, and the lookups sit on the availability path.
pub(super) type SyncMap = foldhash::HashMap<String, foldhash::HashMap<String, SyncSlot>>;

/// Every calendar's sync state, account → calendar → state, mirrored from
/// the `sync` tree so that reads (the sync loop's scans, the freshness of
/// every calendar an availability request consults) never touch sled or
/// decode a record.
///
/// Every write of the tree holds `write` across the sled write and the
/// update of `map`, so writers cannot interleave between the two and the map
/// always equals the tree once a write returns. Readers take `map`'s read
/// lock alone, briefly.
#[derive(Default)]
pub(super) struct SyncStates {
    write: Mutex<()>,
    map: RwLock<SyncMap>,
}

impl SyncStates {
    pub(super) fn writer(&self) -> MutexGuard<'_, ()> {
        self.write.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn read(&self) -> RwLockReadGuard<'_, SyncMap> {
        self.map.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn map(&self) -> RwLockWriteGuard<'_, SyncMap> {
        self.map.write().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn set(&self, account: &str, calendar: &str, st: SyncRecord) {
        let mut map = self.map();
        let slot = map
            .entry(account.to_string())
            .or_default()
            .entry(calendar.to_string())
            .or_insert_with(SyncSlot::empty);
        slot.fresh.set(st.last_success_ms);
        slot.state = Some(st);
    }

    /// Forgets every sync state of an account (its cells read "never").
    pub(super) fn remove_account(&self, account: &str) {
        if let Some(slots) = self.map().get_mut(account) {
            for slot in slots.values_mut() {
                slot.state = None;
                slot.fresh.set(None);
            }
        }
    }

    /// Loads the tree. A record that cannot be decoded (never written by
    /// this schema) is replaced by the default state, as if the calendar
    /// had never synced: it lists from scratch, and the diff against the
    /// mirror keeps the change feed free of spurious entries.
    pub(super) fn load(tree: &sled::Tree, ids: &IdCipher) -> Result<SyncStates, StoreError> {
        let states = SyncStates::default();
        for item in tree.iter() {
            let (k, v) = item?;
            let s = String::from_utf8_lossy(&k);
            let Some((a, sealed)) = s.split_once('\0') else {
                continue;
            };
            let Ok(c) = ids.open(sealed) else {
                tracing::warn!(
                    "a sync state's key does not open under the store's id key; skipped"
                );
                continue;
            };
            let c = c.as_str();
            let st = dec_ids::<SyncRecord>(ids, "sync", &v).unwrap_or_else(|_| {
                tracing::warn!(
                    "a sync state could not be decoded; its calendar lists from scratch"
                );
                SyncRecord::default()
            });
            states.set(a, c, st);
        }
        Ok(states)
    }
}
