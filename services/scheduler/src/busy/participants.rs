//! The participant cache: availability participants built once from the
//! time lines, holds and working hours, and kept until one of their inputs
//! changes.

use std::hash::Hasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use calbridge::{pb, ErrorKind};
use chrono_tz::Tz;
use foldhash::{HashMap, HashMapExt};

use super::Timeline;
use crate::availability as engine;
use crate::ids::{AccountId, TenantId};
use crate::store::{FreshnessCell, HoldRecord, Store};

/// Turns stored working hours into the engine's (`None` when they cannot
/// be: the slow path then reports why).
pub type ConvertHours = fn(&[u8]) -> Option<(Tz, engine::WorkingHours)>;

/// Accounts are spread over this many change counters (a change of one
/// account also invalidates the few others on its stripe: harmless).
pub(crate) const STRIPES: usize = 4096;
/// Most busy intervals (events and holds) the participant cache keeps over
/// all participants. An interval costs about 90 bytes (the engine's busy
/// list, its two merged lists and the interval's source), so the cache's
/// own memory stays under about 100 MB; past the bound the least recently
/// used participants are dropped down to three quarters of it.
pub const MAX_CACHED_INTERVALS: usize = 1 << 20;
/// Most participants the cache keeps (each also costs a few hundred bytes
/// besides its intervals); evicted like [`MAX_CACHED_INTERVALS`].
pub const MAX_CACHED_PARTICIPANTS: usize = 50_000;
/// Most variants (read range, calendars, working hours) kept per account.
pub(crate) const MAX_VARIANTS: usize = 4;
/// Most stored working-hours entries kept decoded; the map is emptied when
/// it reaches the bound.
pub const MAX_CACHED_HOURS: usize = 50_000;
/// Most tenants whose holds are kept indexed; emptied at the bound.
pub(crate) const MAX_CACHED_TENANTS: usize = 1024;

/// Participants as built from the mirror, shared by availability requests
/// until one of their inputs changes.
///
/// A cached participant serves a request only when all of these hold, so it
/// never answers differently from a fresh build:
/// - the same tenant, account, explicit calendar ids, working-hours source
///   and read range (the key);
/// - its account's change counter is the one read before the build began.
///   [`AvailabilityCache::account_changed`] bumps it, and `Shared` calls it
///   from `mirror_changed` and `account_mirror_changed` (a sync page or a
///   write changed a calendar's mirror; a calendar's sync was turned off;
///   the account was revoked and purged) and from `sync_soon` (which
///   follows every write of calendar records: connect and re-connect after
///   re-authorisation, calendar refresh, turning a calendar's sync on).
///   Participants that consulted no calendar are never kept, since nothing
///   would signal a change of their calendar list;
/// - stored working hours: the entry read by the build is still current
///   (re-read and compared byte for byte after any put or delete);
/// - holds: the live holds of the account overlapping the read range are
///   exactly those built in (an expired hold drops out by time; creating
///   or releasing one re-reads the tenant's holds).
///
/// The freshness of each calendar is read (from the store's in-memory sync
/// states) for every request.
pub struct AvailabilityCache {
    pub(crate) stripes: Box<[AtomicU64]>,
    pub(crate) holds_version: AtomicU64,
    pub(crate) hours_version: AtomicU64,
    pub(crate) inner: Mutex<Inner>,
}

#[derive(Default)]
pub(crate) struct Inner {
    /// Account id → its cached variants.
    pub(crate) accounts: HashMap<String, Vec<Arc<Built>>>,
    pub(crate) participants: usize,
    pub(crate) intervals: usize,
    /// Clock for least-recently-used eviction.
    pub(crate) tick: u64,
    /// Tenant → working-hours id → the stored hours as last read.
    pub(crate) hours: HashMap<String, HashMap<String, Arc<StoredHours>>>,
    pub(crate) hours_len: usize,
    /// Tenant → its holds by account.
    pub(crate) holds: HashMap<String, Arc<TenantHolds>>,
}

/// Stored working hours as last read.
pub(crate) struct StoredHours {
    /// `hours_version` at which the bytes were last confirmed.
    pub(crate) checked: AtomicU64,
    pub(crate) bytes: Vec<u8>,
    /// Decoded and converted; `None` when they cannot be (the slow path
    /// then reports why, with the member's field path).
    pub(crate) converted: Option<(Tz, engine::WorkingHours)>,
}

/// A tenant's holds (expired ones included) by account, in store order.
pub(crate) struct TenantHolds {
    pub(crate) version: u64,
    pub(crate) by_account: HashMap<String, Vec<HoldRecord>>,
}

/// Where a participant's working hours came from.
pub(crate) enum HoursUsed {
    /// None given: the primary calendar's zone counts days.
    Absent,
    /// Stored, as read then.
    Stored(Arc<StoredHours>),
    /// Inline in the request.
    Inline(pb::WorkingHours),
}

/// What a busy interval handed to the engine stands for (its id is its
/// index in [`Built::sources`]).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Source {
    /// Entry `index` of consulted calendar `calendar`'s time line.
    Event { calendar: u32, index: u32 },
    /// Hold `0` of [`Built::holds`].
    Hold(u32),
}

/// One participant built from the mirror.
pub(crate) struct Built {
    pub(crate) tenant: String,
    pub(crate) account_id: Arc<str>,
    /// The member's explicit calendar ids (empty: every synced calendar).
    pub(crate) calendar_ids: Vec<String>,
    pub(crate) hours: HoursUsed,
    pub(crate) range: (i64, i64),
    /// The account's change counter read before the build began.
    pub(crate) epoch: u64,
    /// The live holds overlapping the range, as built in.
    pub(crate) holds: Vec<HoldRecord>,
    /// The engine's view, without caps (each request sets its own).
    pub(crate) data: engine::ParticipantData,
    /// Calendars consulted, in order.
    pub(crate) calendars: Vec<Consulted>,
    pub(crate) sources: Vec<Source>,
    pub(crate) last_used: AtomicU64,
}

/// A calendar a participant was built from.
pub(crate) struct Consulted {
    pub(crate) id: Arc<str>,
    /// The time line read.
    pub(crate) timeline: Arc<Timeline>,
    /// Its freshness, as the store keeps it current (read for every
    /// request, never cached as a value).
    pub(crate) freshness: Arc<FreshnessCell>,
}

impl Built {
    /// Intervals held, for the memory bound.
    pub(crate) fn weight(&self) -> usize {
        self.sources.len()
    }

    pub(crate) fn same_key(&self, other: &Built) -> bool {
        self.tenant == other.tenant
            && self.calendar_ids == other.calendar_ids
            && self.range == other.range
            && match (&self.hours, &other.hours) {
                (HoursUsed::Absent, HoursUsed::Absent) => true,
                (HoursUsed::Stored(_), HoursUsed::Stored(_)) => true,
                (HoursUsed::Inline(a), HoursUsed::Inline(b)) => a == b,
                _ => false,
            }
    }
}

/// The working hours a request asks for, as the cache compares them.
pub(crate) enum HoursWanted<'r> {
    Absent,
    Stored(Arc<StoredHours>),
    Inline(&'r pb::WorkingHours),
}

impl HoursUsed {
    pub(crate) fn is(&self, wanted: &HoursWanted<'_>) -> bool {
        match (self, wanted) {
            (HoursUsed::Absent, HoursWanted::Absent) => true,
            (HoursUsed::Stored(a), HoursWanted::Stored(b)) => Arc::ptr_eq(a, b),
            (HoursUsed::Inline(a), HoursWanted::Inline(b)) => a == *b,
            _ => false,
        }
    }
}

/// The stripe of an account (FNV-1a of its id).
pub(crate) fn stripe(account: &AccountId) -> usize {
    let mut h = Fnv::default();
    h.write(account.as_bytes());
    h.finish() as usize % STRIPES
}

#[derive(Default)]
pub(crate) struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        if self.0 == 0 {
            self.0 = 0xcbf2_9ce4_8422_2325;
        }
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// Whether a hold takes part in a participant built over `range` at `now`.
pub(crate) fn hold_counts(h: &HoldRecord, range: (i64, i64), now: i64) -> bool {
    h.expires_ms > now && h.start_ms < range.1 && h.end_ms > range.0
}

pub(crate) fn same_hold(a: &HoldRecord, b: &HoldRecord) -> bool {
    a.hold_id == b.hold_id && a.start_ms == b.start_ms && a.end_ms == b.end_ms
}

impl Default for AvailabilityCache {
    fn default() -> Self {
        Self {
            stripes: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            holds_version: AtomicU64::new(0),
            hours_version: AtomicU64::new(0),
            inner: Mutex::default(),
        }
    }
}

impl AvailabilityCache {
    /// Records that an account's availability inputs changed (its mirror,
    /// its calendar records, their sync set-up): cached participants of the
    /// account are dropped, and builds in flight are not kept.
    pub fn account_changed(&self, account: &AccountId) {
        self.stripes[stripe(account)].fetch_add(1, Ordering::SeqCst);
        let mut inner = self.lock();
        if let Some(v) = inner.accounts.remove(account.as_str()) {
            inner.participants -= v.len();
            inner.intervals -= v.iter().map(|b| b.weight()).sum::<usize>();
        }
    }

    /// Records that a hold was created, released, or changed by the
    /// revocation of an account it named.
    pub fn holds_changed(&self) {
        self.holds_version.fetch_add(1, Ordering::SeqCst);
    }

    /// Records that stored working hours were put or deleted.
    pub(crate) fn hours_changed(&self) {
        self.hours_version.fetch_add(1, Ordering::SeqCst);
    }

    /// Participants and busy intervals currently kept.
    pub fn usage(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.participants, inner.intervals)
    }

    /// Forgets everything (the next requests build afresh).
    pub fn clear(&self) {
        *self.lock() = Inner::default();
    }

    pub(crate) fn epoch(&self, account: &AccountId) -> u64 {
        self.stripes[stripe(account)].load(Ordering::SeqCst)
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        // Counters and maps stay consistent at every await-free step; a
        // panic elsewhere does not make them wrong.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The stored working hours `id` of `tenant` (`None` when there are
    /// none), re-read when any were put or deleted since last confirmed.
    pub(crate) fn stored_hours(
        &self,
        store: &Store,
        tenant: &TenantId,
        id: &str,
        convert: ConvertHours,
    ) -> Result<Option<Arc<StoredHours>>, ErrorKind> {
        let version = self.hours_version.load(Ordering::SeqCst);
        let known = self
            .lock()
            .hours
            .get(tenant.as_str())
            .and_then(|m| m.get(id))
            .cloned();
        if let Some(h) = &known {
            if h.checked.load(Ordering::SeqCst) == version {
                return Ok(known);
            }
        }
        let Some(bytes) = store.working_hours(tenant, id)? else {
            return Ok(None);
        };
        if let Some(h) = known {
            if h.bytes == bytes {
                h.checked.fetch_max(version, Ordering::SeqCst);
                return Ok(Some(h));
            }
        }
        let converted = convert(&bytes);
        let h = Arc::new(StoredHours {
            checked: AtomicU64::new(version),
            bytes,
            converted,
        });
        let mut inner = self.lock();
        if inner.hours_len >= MAX_CACHED_HOURS {
            inner.hours.clear();
            inner.hours_len = 0;
        }
        let previous = inner
            .hours
            .entry(tenant.to_string())
            .or_default()
            .insert(id.to_string(), h.clone());
        if previous.is_none() {
            inner.hours_len += 1;
        }
        Ok(Some(h))
    }

    /// The tenant's holds by account, re-read after any hold was created or
    /// released.
    pub(crate) fn tenant_holds(
        &self,
        store: &Store,
        tenant: &TenantId,
    ) -> Result<Arc<TenantHolds>, ErrorKind> {
        let version = self.holds_version.load(Ordering::SeqCst);
        if let Some(h) = self.lock().holds.get(tenant.as_str()) {
            if h.version == version {
                return Ok(h.clone());
            }
        }
        let mut by_account: HashMap<String, Vec<HoldRecord>> = HashMap::new();
        for h in store.holds(tenant)? {
            for (i, a) in h.account_ids.iter().enumerate() {
                if !h.account_ids[..i].contains(a) {
                    by_account.entry(a.to_string()).or_default().push(h.clone());
                }
            }
        }
        let holds = Arc::new(TenantHolds {
            version,
            by_account,
        });
        let mut inner = self.lock();
        if inner.holds.len() >= MAX_CACHED_TENANTS {
            inner.holds.clear();
        }
        inner.holds.insert(tenant.to_string(), holds.clone());
        Ok(holds)
    }

    /// A cached participant for this key that is still valid.
    pub(crate) fn find(
        &self,
        tenant: &TenantId,
        account: &AccountId,
        calendar_ids: &[String],
        hours: &HoursWanted<'_>,
        range: (i64, i64),
        live_holds: &[&HoldRecord],
    ) -> Option<Arc<Built>> {
        let epoch = self.epoch(account);
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        let found = inner.accounts.get(account.as_str())?.iter().find(|b| {
            b.epoch == epoch
                && b.range == range
                && b.tenant == tenant.as_str()
                && b.calendar_ids == calendar_ids
                && b.hours.is(hours)
                && b.holds.len() == live_holds.len()
                && b.holds.iter().zip(live_holds).all(|(a, b)| same_hold(a, b))
        })?;
        found.last_used.store(tick, Ordering::Relaxed);
        Some(found.clone())
    }

    /// Keeps a participant built from inputs read after its `epoch`, unless
    /// its account changed since.
    pub(crate) fn keep(&self, built: &Arc<Built>) {
        let epoch = self.epoch(&AccountId::from(&*built.account_id));
        let mut inner = self.lock();
        if epoch != built.epoch {
            return;
        }
        inner.tick += 1;
        built.last_used.store(inner.tick, Ordering::Relaxed);
        let variants = inner
            .accounts
            .entry(built.account_id.to_string())
            .or_default();
        let before: (usize, usize) = (
            variants.len(),
            variants.iter().map(|b| b.weight()).sum::<usize>(),
        );
        // Variants of other epochs are stale; one of the same key is
        // replaced; past the limit the least recently used goes.
        variants.retain(|b| b.epoch == epoch && !b.same_key(built));
        if variants.len() >= MAX_VARIANTS {
            if let Some(oldest) =
                (0..variants.len()).min_by_key(|&i| variants[i].last_used.load(Ordering::Relaxed))
            {
                variants.remove(oldest);
            }
        }
        variants.push(built.clone());
        let after: (usize, usize) = (
            variants.len(),
            variants.iter().map(|b| b.weight()).sum::<usize>(),
        );
        inner.participants = inner.participants + after.0 - before.0;
        inner.intervals = inner.intervals + after.1 - before.1;
        if inner.participants > MAX_CACHED_PARTICIPANTS || inner.intervals > MAX_CACHED_INTERVALS {
            evict(&mut inner);
        }
    }
}

/// Drops the least recently used participants until both counts are at
/// most three quarters of their bounds.
pub(crate) fn evict(inner: &mut Inner) {
    let mut all: Vec<(u64, usize)> = inner
        .accounts
        .values()
        .flatten()
        .map(|b| (b.last_used.load(Ordering::Relaxed), b.weight()))
        .collect();
    all.sort_unstable();
    let (mut participants, mut intervals) = (inner.participants, inner.intervals);
    let mut cut = 0;
    for (tick, weight) in all {
        if participants <= MAX_CACHED_PARTICIPANTS * 3 / 4
            && intervals <= MAX_CACHED_INTERVALS * 3 / 4
        {
            break;
        }
        participants -= 1;
        intervals -= weight;
        cut = tick + 1;
    }
    inner.accounts.retain(|_, v| {
        v.retain(|b| b.last_used.load(Ordering::Relaxed) >= cut);
        !v.is_empty()
    });
    inner.participants = inner.accounts.values().map(Vec::len).sum();
    inner.intervals = inner.accounts.values().flatten().map(|b| b.weight()).sum();
}
