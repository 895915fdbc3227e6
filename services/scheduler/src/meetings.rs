//! Availability over the mirror: turns `QueryAvailability`,
//! `QuerySequencedAvailability` and `ExplainAvailability` requests into the
//! pure engine's inputs (busy intervals from the time index, the tenant's live
//! holds, stored or inline working hours), runs the engine, and maps its
//! answers back. Also owns holds and stored working hours. No event content
//! is opened: the time index alone answers.
//!
//! Participants are built once and kept in an [`AvailabilityCache`] until
//! one of their inputs changes, so that an unchanged participant costs a
//! lookup and the in-memory read of its calendars' freshness (which changes
//! with every poll and is therefore never cached).

use foldhash::{HashMap, HashMapExt};
use std::hash::Hasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use calbridge::pb::{self, UnavailableReason};
use calbridge::time::{from_timestamp, to_timestamp};
use calbridge::validate::check_id;
use calbridge::{limits, ErrorKind, Invalid};
use chrono::{NaiveDate, NaiveTime, Timelike, Weekday};
use chrono_tz::Tz;
use prost::Message;

use crate::availability as engine;
use crate::state::{now_ms, random_hex, store_err, ts_ms as ts, Shared, Timeline};
use crate::store::{CalendarRecord, FreshnessCell, HoldRecord};

/// One day, ms.
const DAY_MS: i64 = 86_400_000;

/// How far around the query periods busy time is read, at least: a local
/// week for weekly caps plus a day for buffers and all-day events. The read
/// range is then rounded out to whole UTC days, so that requests whose
/// periods move with "now" share cached participants for a day.
const READ_MARGIN_MS: i64 = 8 * DAY_MS;

// ---- the participant cache ----------------------------------------------

/// Accounts are spread over this many change counters (a change of one
/// account also invalidates the few others on its stripe: harmless).
const STRIPES: usize = 4096;
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
const MAX_VARIANTS: usize = 4;
/// Most stored working-hours entries kept decoded; the map is emptied when
/// it reaches the bound.
pub const MAX_CACHED_HOURS: usize = 50_000;
/// Most tenants whose holds are kept indexed; emptied at the bound.
const MAX_CACHED_TENANTS: usize = 1024;

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
    stripes: Box<[AtomicU64]>,
    holds_version: AtomicU64,
    hours_version: AtomicU64,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Account id → its cached variants.
    accounts: HashMap<String, Vec<Arc<Built>>>,
    participants: usize,
    intervals: usize,
    /// Clock for least-recently-used eviction.
    tick: u64,
    /// Tenant → working-hours id → the stored hours as last read.
    hours: HashMap<String, HashMap<String, Arc<StoredHours>>>,
    hours_len: usize,
    /// Tenant → its holds by account.
    holds: HashMap<String, Arc<TenantHolds>>,
}

/// Stored working hours as last read.
struct StoredHours {
    /// `hours_version` at which the bytes were last confirmed.
    checked: AtomicU64,
    bytes: Vec<u8>,
    /// Decoded and converted; `None` when they cannot be (the slow path
    /// then reports why, with the member's field path).
    converted: Option<(Tz, engine::WorkingHours)>,
}

/// A tenant's holds (expired ones included) by account, in store order.
struct TenantHolds {
    version: u64,
    by_account: HashMap<String, Vec<HoldRecord>>,
}

/// Where a participant's working hours came from.
enum HoursUsed {
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
enum Source {
    /// Entry `index` of consulted calendar `calendar`'s time line.
    Event { calendar: u32, index: u32 },
    /// Hold `0` of [`Built::holds`].
    Hold(u32),
}

/// One participant built from the mirror.
struct Built {
    tenant: String,
    account_id: Arc<str>,
    /// The member's explicit calendar ids (empty: every synced calendar).
    calendar_ids: Vec<String>,
    hours: HoursUsed,
    range: (i64, i64),
    /// The account's change counter read before the build began.
    epoch: u64,
    /// The live holds overlapping the range, as built in.
    holds: Vec<HoldRecord>,
    /// The engine's view, without caps (each request sets its own).
    data: engine::ParticipantData,
    /// Calendars consulted, in order.
    calendars: Vec<Consulted>,
    sources: Vec<Source>,
    last_used: AtomicU64,
}

/// A calendar a participant was built from.
struct Consulted {
    id: Arc<str>,
    /// The time line read.
    timeline: Arc<Timeline>,
    /// Its freshness, as the store keeps it current (read for every
    /// request, never cached as a value).
    freshness: Arc<FreshnessCell>,
}

impl Built {
    /// Intervals held, for the memory bound.
    fn weight(&self) -> usize {
        self.sources.len()
    }

    fn same_key(&self, other: &Built) -> bool {
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
enum HoursWanted<'r> {
    Absent,
    Stored(Arc<StoredHours>),
    Inline(&'r pb::WorkingHours),
}

impl HoursUsed {
    fn is(&self, wanted: &HoursWanted<'_>) -> bool {
        match (self, wanted) {
            (HoursUsed::Absent, HoursWanted::Absent) => true,
            (HoursUsed::Stored(a), HoursWanted::Stored(b)) => Arc::ptr_eq(a, b),
            (HoursUsed::Inline(a), HoursWanted::Inline(b)) => a == *b,
            _ => false,
        }
    }
}

/// The stripe of an account (FNV-1a of its id).
fn stripe(account: &str) -> usize {
    let mut h = Fnv::default();
    h.write(account.as_bytes());
    h.finish() as usize % STRIPES
}

#[derive(Default)]
struct Fnv(u64);

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
fn hold_counts(h: &HoldRecord, range: (i64, i64), now: i64) -> bool {
    h.expires_ms > now && h.start_ms < range.1 && h.end_ms > range.0
}

fn same_hold(a: &HoldRecord, b: &HoldRecord) -> bool {
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
    pub fn account_changed(&self, account: &str) {
        self.stripes[stripe(account)].fetch_add(1, Ordering::SeqCst);
        let mut inner = self.lock();
        if let Some(v) = inner.accounts.remove(account) {
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
    fn hours_changed(&self) {
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

    fn epoch(&self, account: &str) -> u64 {
        self.stripes[stripe(account)].load(Ordering::SeqCst)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Counters and maps stay consistent at every await-free step; a
        // panic elsewhere does not make them wrong.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The stored working hours `id` of `tenant` (`None` when there are
    /// none), re-read when any were put or deleted since last confirmed.
    fn stored_hours(
        &self,
        shared: &Shared,
        tenant: &str,
        id: &str,
    ) -> Result<Option<Arc<StoredHours>>, ErrorKind> {
        let version = self.hours_version.load(Ordering::SeqCst);
        let known = self
            .lock()
            .hours
            .get(tenant)
            .and_then(|m| m.get(id))
            .cloned();
        if let Some(h) = &known {
            if h.checked.load(Ordering::SeqCst) == version {
                return Ok(known);
            }
        }
        let Some(bytes) = shared.store.working_hours(tenant, id).map_err(store_err)? else {
            return Ok(None);
        };
        if let Some(h) = known {
            if h.bytes == bytes {
                h.checked.fetch_max(version, Ordering::SeqCst);
                return Ok(Some(h));
            }
        }
        let converted = pb::WorkingHours::decode(bytes.as_slice())
            .ok()
            .and_then(|p| convert_hours("hours", &p).ok());
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
    fn tenant_holds(&self, shared: &Shared, tenant: &str) -> Result<Arc<TenantHolds>, ErrorKind> {
        let version = self.holds_version.load(Ordering::SeqCst);
        if let Some(h) = self.lock().holds.get(tenant) {
            if h.version == version {
                return Ok(h.clone());
            }
        }
        let mut by_account: HashMap<String, Vec<HoldRecord>> = HashMap::new();
        for h in shared.store.holds(tenant).map_err(store_err)? {
            for (i, a) in h.account_ids.iter().enumerate() {
                if !h.account_ids[..i].contains(a) {
                    by_account.entry(a.clone()).or_default().push(h.clone());
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
    fn find(
        &self,
        tenant: &str,
        account: &str,
        calendar_ids: &[String],
        hours: &HoursWanted<'_>,
        range: (i64, i64),
        live_holds: &[&HoldRecord],
    ) -> Option<Arc<Built>> {
        let epoch = self.epoch(account);
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        let found = inner.accounts.get(account)?.iter().find(|b| {
            b.epoch == epoch
                && b.range == range
                && b.tenant == tenant
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
    fn keep(&self, built: &Arc<Built>) {
        let epoch = self.epoch(&built.account_id);
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
fn evict(inner: &mut Inner) {
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

// ---- the benchmark scenario over the API -----------------------------------

/// The scenario of [`engine::scenario`] as a `QueryAvailability` request:
/// participant `i` becomes `member(i)` and the periods move by `shift_ms`
/// (whole weeks keep weekdays and local times). Shared by the scheduler's
/// timing test and the gRPC bench.
#[doc(hidden)]
pub fn scenario_request(
    req: &engine::Request,
    member: impl Fn(usize) -> pb::AvailabilityMember,
    shift_ms: i64,
) -> pb::QueryAvailabilityRequest {
    let at = |ms: i64| chrono::DateTime::from_timestamp_millis(ms + shift_ms).map(to_timestamp);
    pb::QueryAvailabilityRequest {
        groups: req
            .groups
            .iter()
            .map(|g| pb::ParticipantGroup {
                members: g.members.iter().map(|&i| member(i)).collect(),
                required: match g.required {
                    engine::Required::All => 0,
                    engine::Required::AtLeast(k) => k,
                },
            })
            .collect(),
        duration_minutes: req.duration_minutes,
        periods: req
            .periods
            .iter()
            .map(|p| pb::TimeWindow {
                start: at(p.start_ms),
                end: at(p.end_ms),
            })
            .collect(),
        buffer_before_minutes: req.buffer_before_minutes,
        buffer_after_minutes: req.buffer_after_minutes,
        start_interval_minutes: req.start_interval_minutes,
        minimum_notice_minutes: req.minimum_notice_minutes,
        tentative_is_busy: req.tentative_is_busy,
        format: pb::AvailabilityFormat::Slots as i32,
        max_results: req.max_results,
        max_staleness_seconds: 0,
    }
}

/// A scenario participant's working hours for `PutWorkingHours`, its date
/// overrides moved by `weeks`; `None` without working hours.
#[doc(hidden)]
pub fn scenario_hours(p: &engine::ParticipantData, weeks: i64) -> Option<pb::WorkingHours> {
    let h = p.working_hours()?;
    let hhmm = |m: u16| format!("{:02}:{:02}", m / 60, m % 60);
    Some(pb::WorkingHours {
        time_zone: p.time_zone().name().to_string(),
        weekly: h
            .weekly
            .iter()
            .map(|r| pb::WeeklyRule {
                weekday: r.weekday.number_from_monday(),
                start: hhmm(r.range.start_minute),
                end: hhmm(r.range.end_minute),
            })
            .collect(),
        overrides: h
            .overrides
            .iter()
            .map(|o| pb::DateOverride {
                date: (o.date + chrono::Duration::weeks(weeks))
                    .format("%Y-%m-%d")
                    .to_string(),
                ranges: o
                    .ranges
                    .iter()
                    .map(|r| pb::LocalRange {
                        start: hhmm(r.start_minute),
                        end: hhmm(r.end_minute),
                    })
                    .collect(),
            })
            .collect(),
    })
}

// ---- gathering the engine's inputs ---------------------------------------

/// The engine's inputs gathered for one request.
struct Gathered {
    participants: Vec<engine::ParticipantData>,
    /// Per participant: what it was built from (account, sources).
    built: Vec<Arc<Built>>,
    /// Every consulted calendar's freshness, filled by [`Gathered::run`].
    freshness: Vec<pb::CalendarFreshness>,
    /// When the request was gathered, ms.
    now: i64,
}

impl Gathered {
    /// Reads the freshness of every consulted calendar (from the store's
    /// cells: it changes with every poll, so a cached participant holds the
    /// cell, not the value) and applies `max_staleness_seconds`; then runs
    /// `work` on the participants unless a calendar was too stale.
    fn run<T>(
        &mut self,
        max_staleness_seconds: u32,
        work: impl FnOnce(&[engine::ParticipantData]) -> T,
    ) -> Result<T, ErrorKind> {
        let freshness: Vec<pb::CalendarFreshness> = self
            .built
            .iter()
            .flat_map(|b| {
                b.calendars.iter().map(|c| pb::CalendarFreshness {
                    account_id: b.account_id.to_string(),
                    calendar_id: c.id.to_string(),
                    as_of: c
                        .freshness
                        .get()
                        .and_then(chrono::DateTime::from_timestamp_millis)
                        .map(to_timestamp),
                })
            })
            .collect();
        self.check_staleness(&freshness, max_staleness_seconds)?;
        self.freshness = freshness;
        Ok(work(&self.participants))
    }

    /// FAILED_PRECONDITION when a consulted calendar is staler than allowed.
    fn check_staleness(
        &self,
        freshness: &[pb::CalendarFreshness],
        max_staleness_seconds: u32,
    ) -> Result<(), ErrorKind> {
        if max_staleness_seconds == 0 {
            return Ok(());
        }
        let limit = self.now - i64::from(max_staleness_seconds) * 1000;
        let stale: Vec<String> = freshness
            .iter()
            .filter(|f| {
                f.as_of
                    .as_ref()
                    .and_then(from_timestamp)
                    .is_none_or(|t| t.timestamp_millis() < limit)
            })
            .map(|f| format!("{}/{}", f.account_id, f.calendar_id))
            .collect();
        if stale.is_empty() {
            return Ok(());
        }
        Err(ErrorKind::FailedPrecondition(format!(
            "calendars last synced longer ago than max_staleness_seconds allows: {}; call SyncNow or relax the limit",
            stale.join(", ")
        )))
    }
}

/// Maps `(group, member)` to participants, one participant per account (an
/// account that appears more than once uses its first occurrence's
/// calendars, working hours and caps).
struct Builder<'a, 'r> {
    shared: &'a Shared,
    tenant: &'a str,
    range: (i64, i64),
    now: i64,
    index: HashMap<&'r str, usize>,
    out: Gathered,
    holds: Arc<TenantHolds>,
    invalid: Invalid,
}

impl<'a, 'r> Builder<'a, 'r> {
    fn new(
        shared: &'a Shared,
        tenant: &'a str,
        periods: &[engine::Period],
    ) -> Result<Self, ErrorKind> {
        let start = periods.iter().map(|p| p.start_ms).min().unwrap_or(0);
        let end = periods.iter().map(|p| p.end_ms).max().unwrap_or(0);
        let now = now_ms();
        let holds = shared.availability_cache.tenant_holds(shared, tenant)?;
        let from = start.saturating_sub(READ_MARGIN_MS);
        let to = end.saturating_add(READ_MARGIN_MS);
        Ok(Builder {
            shared,
            tenant,
            range: (
                from.div_euclid(DAY_MS).saturating_mul(DAY_MS),
                to.div_euclid(DAY_MS)
                    .saturating_add(i64::from(to.rem_euclid(DAY_MS) != 0))
                    .saturating_mul(DAY_MS),
            ),
            now,
            index: HashMap::new(),
            out: Gathered {
                participants: Vec::new(),
                built: Vec::new(),
                freshness: Vec::new(),
                now,
            },
            holds,
            invalid: Invalid::default(),
        })
    }

    fn cache(&self) -> &'a AvailabilityCache {
        &self.shared.availability_cache
    }

    /// The engine group of a proto group at `path` (e.g. `groups[0]`).
    fn group(
        &mut self,
        path: &str,
        g: &'r pb::ParticipantGroup,
    ) -> Result<engine::Group, ErrorKind> {
        let mut members = Vec::with_capacity(g.members.len());
        for (i, m) in g.members.iter().enumerate() {
            if let Some(p) = self.member(path, i, m)? {
                members.push(p);
            }
        }
        Ok(engine::Group {
            members,
            required: match g.required {
                0 => engine::Required::All,
                n => engine::Required::AtLeast(n),
            },
        })
    }

    /// The participant of member `i` of the group at `group_path`.
    fn member(
        &mut self,
        group_path: &str,
        i: usize,
        m: &'r pb::AvailabilityMember,
    ) -> Result<Option<usize>, ErrorKind> {
        let mut inv = Invalid::default();
        check_id(&mut inv, "", &m.account_id, limits::MAX_ID_BYTES);
        if !inv.0.is_empty() {
            // Only now is the field path worth formatting.
            check_id(
                &mut self.invalid,
                &format!("{group_path}.members[{i}].account_id"),
                &m.account_id,
                limits::MAX_ID_BYTES,
            );
            return Ok(None);
        }
        if let Some(&p) = self.index.get(m.account_id.as_str()) {
            return Ok(Some(p));
        }
        let built = match self.cached(m)? {
            Some(b) => b,
            None => match self.build(&format!("{group_path}.members[{i}]"), m)? {
                Some(b) => b,
                None => return Ok(None),
            },
        };
        let p = self.out.participants.len();
        self.out.participants.push(
            built
                .data
                .clone()
                .with_caps(m.max_events_per_day, m.max_events_per_week),
        );
        self.out.built.push(built);
        self.index.insert(&m.account_id, p);
        Ok(Some(p))
    }

    /// The live holds naming `account` that overlap the read range.
    fn live_holds(&self, account: &str) -> Vec<&HoldRecord> {
        self.holds
            .by_account
            .get(account)
            .map(|v| {
                v.iter()
                    .filter(|h| hold_counts(h, self.range, self.now))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The member's cached participant, when one is still valid.
    fn cached(&self, m: &pb::AvailabilityMember) -> Result<Option<Arc<Built>>, ErrorKind> {
        let hours = if !m.working_hours_id.is_empty() {
            match self
                .cache()
                .stored_hours(self.shared, self.tenant, &m.working_hours_id)?
            {
                Some(h) => HoursWanted::Stored(h),
                None => return Ok(None),
            }
        } else {
            match &m.working_hours {
                Some(h) => HoursWanted::Inline(h),
                None => HoursWanted::Absent,
            }
        };
        Ok(self.cache().find(
            self.tenant,
            &m.account_id,
            &m.calendar_ids,
            &hours,
            self.range,
            &self.live_holds(&m.account_id),
        ))
    }

    /// Builds the member's participant from the store (and keeps it when it
    /// may be cached); `None` after recording why it is invalid.
    fn build(
        &mut self,
        path: &str,
        m: &pb::AvailabilityMember,
    ) -> Result<Option<Arc<Built>>, ErrorKind> {
        // Read before any input, so that a change landing during the build
        // makes the result stale rather than wrong.
        let epoch = self.cache().epoch(&m.account_id);
        let account = self.shared.tenant_account(self.tenant, &m.account_id)?;
        // Revocation changes the account's epoch, so a participant cached
        // before it is never served after it.
        crate::accounts::check_not_revoked(&account, &format!("{path}.account_id"))?;
        let calendars = self
            .shared
            .store
            .calendars(&account.account_id)
            .map_err(store_err)?;
        let Some((zone, hours, used)) = self.hours(path, m, &calendars)? else {
            return Ok(None);
        };
        let Some(chosen) = self.chosen(path, m, &calendars) else {
            return Ok(None);
        };
        let mut busy = Vec::new();
        let mut sources = Vec::new();
        let mut consulted = Vec::with_capacity(chosen.len());
        for cal in chosen {
            let timeline = self.shared.timeline(&account.account_id, &cal)?;
            let k = consulted.len() as u32;
            for i in timeline.overlapping(self.range.0, self.range.1) {
                let entry = &timeline.entries[i];
                let status = match pb::BusyStatus::try_from(entry.busy) {
                    Ok(pb::BusyStatus::Busy) => engine::BusyStatus::Busy,
                    Ok(pb::BusyStatus::Tentative) => engine::BusyStatus::Tentative,
                    Ok(pb::BusyStatus::OutOfOffice) => engine::BusyStatus::OutOfOffice,
                    _ => continue,
                };
                let span = match entry.all_day.and_then(|(a, b)| {
                    Some((
                        NaiveDate::from_num_days_from_ce_opt(a)?,
                        NaiveDate::from_num_days_from_ce_opt(b)?,
                    ))
                }) {
                    Some((s, e)) => engine::BusySpan::AllDay { start: s, end: e },
                    None => engine::BusySpan::Timed {
                        start_ms: entry.start_ms,
                        end_ms: entry.end_ms,
                    },
                };
                busy.push(engine::BusyInterval {
                    id: sources.len() as u64,
                    span,
                    status,
                });
                sources.push(Source::Event {
                    calendar: k,
                    index: i as u32,
                });
            }
            consulted.push(Consulted {
                freshness: self.shared.store.freshness(&account.account_id, &cal),
                id: Arc::<str>::from(cal),
                timeline,
            });
        }
        let holds: Vec<HoldRecord> = self
            .live_holds(&account.account_id)
            .into_iter()
            .cloned()
            .collect();
        for (k, h) in holds.iter().enumerate() {
            busy.push(engine::BusyInterval {
                id: sources.len() as u64,
                span: engine::BusySpan::Timed {
                    start_ms: h.start_ms,
                    end_ms: h.end_ms,
                },
                status: engine::BusyStatus::Busy,
            });
            sources.push(Source::Hold(k as u32));
        }
        let built = Arc::new(Built {
            tenant: self.tenant.to_string(),
            account_id: account.account_id.as_str().into(),
            calendar_ids: m.calendar_ids.clone(),
            hours: used,
            range: self.range,
            epoch,
            holds,
            data: engine::ParticipantData::new(zone, busy, hours),
            calendars: consulted,
            sources,
            last_used: AtomicU64::new(0),
        });
        // Without a consulted calendar, no signal covers the calendar list
        // (a zone taken from an unsynced primary calendar, say): rebuild.
        if !built.calendars.is_empty() {
            self.cache().keep(&built);
        }
        Ok(Some(built))
    }

    /// The member's zone and working hours: stored by id, inline, or none (then
    /// the primary calendar's zone, else UTC, counts days and weeks).
    #[allow(clippy::type_complexity)]
    fn hours(
        &mut self,
        path: &str,
        m: &pb::AvailabilityMember,
        calendars: &[CalendarRecord],
    ) -> Result<Option<(Tz, Option<engine::WorkingHours>, HoursUsed)>, ErrorKind> {
        if !m.working_hours_id.is_empty() {
            let field = format!("{path}.working_hours_id");
            let Some(stored) =
                self.cache()
                    .stored_hours(self.shared, self.tenant, &m.working_hours_id)?
            else {
                self.invalid.push(
                    field,
                    "names no stored working hours (PutWorkingHours first)",
                );
                return Ok(None);
            };
            if let Some((tz, wh)) = &stored.converted {
                return Ok(Some((*tz, Some(wh.clone()), HoursUsed::Stored(stored))));
            }
            let h = pb::WorkingHours::decode(stored.bytes.as_slice()).map_err(|_| {
                ErrorKind::Internal("stored working hours cannot be decoded".into())
            })?;
            if let Err(inv) = convert_hours(&field, &h) {
                self.invalid.0.extend(inv.0);
            }
            return Ok(None);
        }
        match &m.working_hours {
            Some(h) => match convert_hours(&format!("{path}.working_hours"), h) {
                Ok((tz, wh)) => Ok(Some((tz, Some(wh), HoursUsed::Inline(h.clone())))),
                Err(inv) => {
                    self.invalid.0.extend(inv.0);
                    Ok(None)
                }
            },
            None => {
                let zone = calendars
                    .iter()
                    .find(|c| c.primary)
                    .and_then(|c| c.time_zone.parse::<Tz>().ok())
                    .unwrap_or(Tz::UTC);
                Ok(Some((zone, None, HoursUsed::Absent)))
            }
        }
    }

    /// The calendars to read: the member's (each must be a synced calendar
    /// of the account), else every synced one; `None` after recording the
    /// bad ids.
    fn chosen(
        &mut self,
        path: &str,
        m: &pb::AvailabilityMember,
        calendars: &[CalendarRecord],
    ) -> Option<Vec<String>> {
        if m.calendar_ids.is_empty() {
            return Some(
                calendars
                    .iter()
                    .filter(|c| c.synced)
                    .map(|c| c.calendar_id.clone())
                    .collect(),
            );
        }
        let synced: std::collections::HashSet<&str> = calendars
            .iter()
            .filter(|c| c.synced)
            .map(|c| c.calendar_id.as_str())
            .collect();
        let mut ok = true;
        for (i, id) in m.calendar_ids.iter().enumerate() {
            if !synced.contains(id.as_str()) {
                self.invalid.push(
                    format!("{path}.calendar_ids[{i}]"),
                    "is not a synced calendar of the account",
                );
                ok = false;
            }
        }
        ok.then(|| m.calendar_ids.clone())
    }

    /// Fails with the collected field violations; the freshness (and the
    /// staleness limit) comes with [`Gathered::run`].
    fn finish(self) -> Result<Gathered, ErrorKind> {
        self.invalid.into_result().map_err(ErrorKind::from)?;
        Ok(self.out)
    }
}

/// Parses "HH:MM" (00:00..=24:00) to minutes after midnight.
fn parse_hhmm(s: &str) -> Option<u16> {
    if s == "24:00" {
        return Some(1440);
    }
    let t = NaiveTime::parse_from_str(s, "%H:%M").ok()?;
    Some((t.hour() * 60 + t.minute()) as u16)
}

fn range(inv: &mut Invalid, path: &str, start: &str, end: &str) -> Option<engine::LocalRange> {
    match (parse_hhmm(start), parse_hhmm(end)) {
        (Some(s), Some(e)) if s < e && s < 1440 => Some(engine::LocalRange {
            start_minute: s,
            end_minute: e,
        }),
        (Some(_), Some(_)) => {
            inv.push(format!("{path}.end"), "must be after start");
            None
        }
        (None, _) => {
            inv.push(format!("{path}.start"), "must be HH:MM");
            None
        }
        (_, None) => {
            inv.push(format!("{path}.end"), "must be HH:MM (24:00 allowed)");
            None
        }
    }
}

/// Converts proto working hours at `path` to the engine's, with their zone:
/// every list within its bound (`limits::MAX_WEEKLY_RULES`,
/// `MAX_DATE_OVERRIDES`, `MAX_OVERRIDE_RANGES`), no date overridden twice.
/// Linear in the size of the hours.
pub fn convert_hours(
    path: &str,
    h: &pb::WorkingHours,
) -> Result<(Tz, engine::WorkingHours), Invalid> {
    let mut inv = Invalid::default();
    let tz = match calbridge::time::parse_zone(&h.time_zone) {
        Ok(tz) => Some(tz),
        Err(_) => {
            inv.push(
                format!("{path}.time_zone"),
                "must be an IANA time zone such as Europe/London",
            );
            None
        }
    };
    // Oversized lists are refused before any of their entries is looked at.
    let before = inv.0.len();
    for (field, len, max) in [
        ("weekly", h.weekly.len(), limits::MAX_WEEKLY_RULES),
        ("overrides", h.overrides.len(), limits::MAX_DATE_OVERRIDES),
    ] {
        if len > max {
            inv.push(
                format!("{path}.{field}"),
                format!("must have at most {max} entries"),
            );
        }
    }
    if let Some(i) = h
        .overrides
        .iter()
        .position(|o| o.ranges.len() > limits::MAX_OVERRIDE_RANGES)
    {
        inv.push(
            format!("{path}.overrides[{i}].ranges"),
            format!("must have at most {} entries", limits::MAX_OVERRIDE_RANGES),
        );
    }
    if inv.0.len() > before {
        return Err(inv);
    }
    let weekdays = [
        Weekday::Mon,
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
        Weekday::Sat,
        Weekday::Sun,
    ];
    let mut weekly = Vec::new();
    for (i, r) in h.weekly.iter().enumerate() {
        let p = format!("{path}.weekly[{i}]");
        let day = match r.weekday {
            1..=7 => Some(weekdays[r.weekday as usize - 1]),
            _ => {
                inv.push(format!("{p}.weekday"), "must be 1 (Monday) ..= 7 (Sunday)");
                None
            }
        };
        if let (Some(weekday), Some(range)) = (day, range(&mut inv, &p, &r.start, &r.end)) {
            weekly.push(engine::WeeklyRule { weekday, range });
        }
    }
    let mut overrides = Vec::new();
    let mut dates = std::collections::HashSet::with_capacity(h.overrides.len());
    for (i, o) in h.overrides.iter().enumerate() {
        let p = format!("{path}.overrides[{i}]");
        let date = calbridge::time::parse_date(&o.date);
        match date {
            None => inv.push(
                format!("{p}.date"),
                "must be YYYY-MM-DD in years 0001..=9999",
            ),
            Some(d) if !dates.insert(d) => inv.push(format!("{p}.date"), "duplicate date"),
            Some(_) => {}
        }
        let mut ranges = Vec::new();
        for (j, r) in o.ranges.iter().enumerate() {
            if let Some(x) = range(&mut inv, &format!("{p}.ranges[{j}]"), &r.start, &r.end) {
                ranges.push(x);
            }
        }
        if let Some(date) = date {
            overrides.push(engine::DateOverride { date, ranges });
        }
    }
    inv.into_result()?;
    Ok((
        tz.expect("checked"),
        engine::WorkingHours { weekly, overrides },
    ))
}

/// Refuses, before any participant is built, availability requests whose
/// lists exceed their bounds: groups and members (at most the engine's
/// member limit in all), each member's `calendar_ids`
/// (`limits::MAX_MEMBER_CALENDARS`) and the periods (`limits::MAX_PERIODS`).
fn check_sizes<'g>(
    inv: &mut Invalid,
    periods: usize,
    groups: impl Iterator<Item = (String, &'g pb::ParticipantGroup)>,
) {
    let max_members = engine::Limits::default().max_members;
    if periods > limits::MAX_PERIODS {
        inv.push(
            "periods",
            format!("must have at most {} entries", limits::MAX_PERIODS),
        );
    }
    let (mut n_groups, mut n_members) = (0usize, 0usize);
    for (path, g) in groups {
        n_groups += 1;
        n_members = n_members.saturating_add(g.members.len());
        if n_groups > max_members || n_members > max_members {
            inv.push(
                "groups",
                format!("must have at most {max_members} groups and members in all"),
            );
            return;
        }
        for (i, m) in g.members.iter().enumerate() {
            if m.calendar_ids.len() > limits::MAX_MEMBER_CALENDARS {
                inv.push(
                    format!("{path}.members[{i}].calendar_ids"),
                    format!("must have at most {} entries", limits::MAX_MEMBER_CALENDARS),
                );
            }
        }
    }
}

fn periods(inv: &mut Invalid, field: &str, windows: &[pb::TimeWindow]) -> Vec<engine::Period> {
    let mut out = Vec::new();
    for (i, w) in windows.iter().enumerate() {
        if let Some((s, e)) =
            calbridge::validate::check_window(inv, &format!("{field}[{i}]"), Some(w))
        {
            out.push(engine::Period {
                start_ms: s.timestamp_millis(),
                end_ms: e.timestamp_millis(),
            });
        }
    }
    out
}

fn engine_errors(errors: Vec<engine::FieldError>) -> ErrorKind {
    let mut inv = Invalid::default();
    for e in errors {
        inv.push(e.field, e.message);
    }
    ErrorKind::Invalid(inv)
}

fn slot_pb(g: &Gathered, s: &engine::Slot) -> pb::AvailableSlot {
    pb::AvailableSlot {
        start: ts(s.start_ms),
        end: ts(s.end_ms),
        available_account_ids: s
            .available
            .iter()
            .map(|&p| g.built[p].account_id.to_string())
            .collect(),
    }
}

fn format_of(f: i32) -> engine::Format {
    match pb::AvailabilityFormat::try_from(f) {
        Ok(pb::AvailabilityFormat::Periods) => engine::Format::Periods,
        Ok(pb::AvailabilityFormat::OverlappingSlots) => engine::Format::OverlappingSlots,
        _ => engine::Format::Slots,
    }
}

/// Builds the engine request and its inputs for a query (freshness not yet
/// read: see [`Gathered::run`]).
fn prepare(
    shared: &Shared,
    tenant: &str,
    req: &pb::QueryAvailabilityRequest,
) -> Result<(engine::Request, Gathered), ErrorKind> {
    let mut inv = Invalid::default();
    check_sizes(
        &mut inv,
        req.periods.len(),
        req.groups
            .iter()
            .enumerate()
            .map(|(i, g)| (format!("groups[{i}]"), g)),
    );
    inv.into_result().map_err(ErrorKind::from)?;
    let mut inv = Invalid::default();
    let periods = periods(&mut inv, "periods", &req.periods);
    inv.into_result().map_err(ErrorKind::from)?;
    if req.groups.is_empty() {
        return Err(Invalid::field("groups", "must have at least one group").into());
    }
    let mut b = Builder::new(shared, tenant, &periods)?;
    b.index
        .reserve(req.groups.iter().map(|g| g.members.len()).sum());
    let mut groups = Vec::new();
    for (i, g) in req.groups.iter().enumerate() {
        groups.push(b.group(&format!("groups[{i}]"), g)?);
    }
    let gathered = b.finish()?;
    Ok((
        engine::Request {
            groups,
            duration_minutes: req.duration_minutes,
            periods,
            buffer_before_minutes: req.buffer_before_minutes,
            buffer_after_minutes: req.buffer_after_minutes,
            start_interval_minutes: req.start_interval_minutes,
            minimum_notice_minutes: req.minimum_notice_minutes,
            max_results: req.max_results,
            tentative_is_busy: req.tentative_is_busy,
            format: format_of(req.format),
        },
        gathered,
    ))
}

/// Answers `QueryAvailability`.
pub fn query(
    shared: &Shared,
    tenant: &str,
    req: &pb::QueryAvailabilityRequest,
) -> Result<pb::QueryAvailabilityResponse, ErrorKind> {
    let (request, mut g) = prepare(shared, tenant, req)?;
    let now = now_ms();
    let answer = g
        .run(req.max_staleness_seconds, |p| {
            engine::query(&request, p, now)
        })?
        .map_err(engine_errors)?;
    Ok(pb::QueryAvailabilityResponse {
        slots: answer.slots.iter().map(|s| slot_pb(&g, s)).collect(),
        freshness: g.freshness,
    })
}

/// Answers `QuerySequencedAvailability`.
pub fn sequences(
    shared: &Shared,
    tenant: &str,
    req: &pb::QuerySequencedAvailabilityRequest,
) -> Result<pb::QuerySequencedAvailabilityResponse, ErrorKind> {
    let mut inv = Invalid::default();
    if req.steps.len() > engine::Limits::default().max_steps {
        inv.push(
            "steps",
            format!(
                "must have at most {} steps",
                engine::Limits::default().max_steps
            ),
        );
    }
    inv.into_result().map_err(ErrorKind::from)?;
    let mut inv = Invalid::default();
    check_sizes(
        &mut inv,
        req.periods.len(),
        req.steps.iter().enumerate().flat_map(|(i, s)| {
            s.groups
                .iter()
                .enumerate()
                .map(move |(j, g)| (format!("steps[{i}].groups[{j}]"), g))
        }),
    );
    inv.into_result().map_err(ErrorKind::from)?;
    let mut inv = Invalid::default();
    let periods = periods(&mut inv, "periods", &req.periods);
    if req.steps.is_empty() {
        inv.push("steps", "must have at least one step");
    }
    inv.into_result().map_err(ErrorKind::from)?;
    let mut b = Builder::new(shared, tenant, &periods)?;
    let mut steps = Vec::new();
    for (i, s) in req.steps.iter().enumerate() {
        let mut groups = Vec::new();
        for (j, g) in s.groups.iter().enumerate() {
            groups.push(b.group(&format!("steps[{i}].groups[{j}]"), g)?);
        }
        steps.push(engine::SequenceStep {
            groups,
            duration_minutes: s.duration_minutes,
            buffer_before_minutes: s.buffer_before_minutes,
            buffer_after_minutes: s.buffer_after_minutes,
            min_gap_minutes: s.min_gap_minutes,
            max_gap_minutes: s.max_gap_minutes,
        });
    }
    let mut g = b.finish()?;
    let request = engine::SequenceRequest {
        steps,
        periods,
        start_interval_minutes: req.start_interval_minutes,
        minimum_notice_minutes: req.minimum_notice_minutes,
        max_results: req.max_results,
        tentative_is_busy: req.tentative_is_busy,
    };
    let now = now_ms();
    let answer = g
        .run(req.max_staleness_seconds, |p| {
            engine::sequences(&request, p, now)
        })?
        .map_err(engine_errors)?;
    Ok(pb::QuerySequencedAvailabilityResponse {
        sequences: answer
            .sequences
            .iter()
            .map(|seq| pb::AvailableSequence {
                steps: seq.iter().map(|s| slot_pb(&g, s)).collect(),
            })
            .collect(),
        freshness: g.freshness,
    })
}

fn blocker(reason: UnavailableReason) -> pb::Blocker {
    pb::Blocker {
        reason: reason as i32,
        ..Default::default()
    }
}

fn window(start_ms: i64, end_ms: i64) -> Option<pb::TimeWindow> {
    Some(pb::TimeWindow {
        start: ts(start_ms),
        end: ts(end_ms),
    })
}

fn source_blocker(
    g: &Gathered,
    participant: usize,
    reason: UnavailableReason,
    id: u64,
    interval: Option<pb::TimeWindow>,
) -> pb::Blocker {
    let mut b = blocker(reason);
    b.interval = interval;
    let built = &g.built[participant];
    match built.sources.get(id as usize) {
        Some(&Source::Event { calendar, index }) => {
            let Consulted {
                id: calendar_id,
                timeline,
                ..
            } = &built.calendars[calendar as usize];
            b.calendar_id = calendar_id.to_string();
            b.provider_event_id = timeline.entries[index as usize].provider_event_id.clone();
        }
        Some(&Source::Hold(h)) => b.hold_id = built.holds[h as usize].hold_id.clone(),
        None => {}
    }
    b
}

/// Answers `ExplainAvailability`.
pub fn explain(
    shared: &Shared,
    tenant: &str,
    req: &pb::ExplainAvailabilityRequest,
) -> Result<pb::ExplainAvailabilityResponse, ErrorKind> {
    let Some(query) = &req.query else {
        return Err(Invalid::field("query", "must be set").into());
    };
    let mut inv = Invalid::default();
    let slot = calbridge::validate::check_window(&mut inv, "slot", req.slot.as_ref());
    inv.into_result().map_err(ErrorKind::from)?;
    let (start, end) = slot.expect("validated");
    let (request, mut g) = prepare(shared, tenant, query)?;
    let now = now_ms();
    let e = g
        .run(query.max_staleness_seconds, |p| {
            engine::explain(
                &request,
                p,
                now,
                start.timestamp_millis(),
                end.timestamp_millis(),
            )
        })?
        .map_err(engine_errors)?;
    let request_blockers = e
        .request
        .iter()
        .map(|r| match r {
            engine::RequestReason::NotAligned {
                start_interval_minutes,
            } => pb::Blocker {
                detail: format!(
                    "starts are on a {start_interval_minutes}-minute grid from 00:00 UTC"
                ),
                ..blocker(UnavailableReason::NotAligned)
            },
            engine::RequestReason::OutsideQueryPeriods => {
                blocker(UnavailableReason::OutsidePeriods)
            }
            engine::RequestReason::MinimumNotice { earliest_start_ms } => pb::Blocker {
                detail: format!(
                    "earliest allowed start is {}",
                    chrono::DateTime::from_timestamp_millis(*earliest_start_ms)
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_default()
                ),
                ..blocker(UnavailableReason::MinimumNotice)
            },
            engine::RequestReason::DurationMismatch { duration_minutes } => pb::Blocker {
                detail: format!("the slot must be {duration_minutes} minutes long"),
                ..blocker(UnavailableReason::DurationMismatch)
            },
        })
        .collect();
    let participants = e
        .participants
        .iter()
        .map(|p| pb::ParticipantExplanation {
            account_id: g.built[p.participant].account_id.to_string(),
            available: p.reasons.is_empty(),
            blockers: p
                .reasons
                .iter()
                .map(|r| match r {
                    engine::Reason::BusyEvent {
                        id,
                        start_ms,
                        end_ms,
                    } => source_blocker(
                        &g,
                        p.participant,
                        UnavailableReason::BusyEvent,
                        *id,
                        window(*start_ms, *end_ms),
                    ),
                    engine::Reason::Buffer { id } => {
                        source_blocker(&g, p.participant, UnavailableReason::Buffer, *id, None)
                    }
                    engine::Reason::OutsideWorkingHours => {
                        blocker(UnavailableReason::OutsideWorkingHours)
                    }
                    engine::Reason::DailyCap { date, count, max } => pb::Blocker {
                        detail: format!("{count} events on {date}, at most {max} allowed"),
                        ..blocker(UnavailableReason::DailyCap)
                    },
                    engine::Reason::WeeklyCap {
                        week_start,
                        count,
                        max,
                    } => pb::Blocker {
                        detail: format!(
                            "{count} events in the week of {week_start}, at most {max} allowed"
                        ),
                        ..blocker(UnavailableReason::WeeklyCap)
                    },
                })
                .collect(),
        })
        .collect();
    Ok(pb::ExplainAvailabilityResponse {
        offered: e.available,
        request_blockers,
        participants,
    })
}

fn hold_pb(h: &HoldRecord) -> pb::Hold {
    pb::Hold {
        hold_id: h.hold_id.clone(),
        account_ids: h.account_ids.clone(),
        slot: window(h.start_ms, h.end_ms),
        expires_at: ts(h.expires_ms),
    }
}

/// Creates a hold.
pub async fn create_hold(
    shared: &Shared,
    tenant: &str,
    req: &pb::CreateHoldRequest,
) -> Result<pb::Hold, ErrorKind> {
    let mut inv = Invalid::default();
    if req.account_ids.is_empty() || req.account_ids.len() > limits::MAX_FREE_BUSY_ACCOUNTS {
        inv.push("account_ids", "must name 1..=2000 accounts");
    }
    for (i, a) in req.account_ids.iter().enumerate() {
        check_id(
            &mut inv,
            &format!("account_ids[{i}]"),
            a,
            limits::MAX_ID_BYTES,
        );
    }
    let slot = calbridge::validate::check_window(&mut inv, "slot", req.slot.as_ref());
    if let Some((s, e)) = slot {
        if e - s > chrono::Duration::hours(24) {
            inv.push("slot", "must be at most 24 hours long");
        }
    }
    if req.ttl_minutes > 10_080 {
        inv.push("ttl_minutes", "must be at most 10080 (a week)");
    }
    inv.into_result().map_err(ErrorKind::from)?;
    for (i, a) in req.account_ids.iter().enumerate() {
        let account = shared.tenant_account(tenant, a)?;
        crate::accounts::check_not_revoked(&account, &format!("account_ids[{i}]"))?;
    }
    let (s, e) = slot.expect("validated");
    let ttl = if req.ttl_minutes == 0 {
        15
    } else {
        req.ttl_minutes
    };
    let h = HoldRecord {
        hold_id: format!("hold_{}", random_hex(12)),
        account_ids: req.account_ids.clone(),
        start_ms: s.timestamp_millis(),
        end_ms: e.timestamp_millis(),
        expires_ms: now_ms() + i64::from(ttl) * 60_000,
    };
    shared.store.put_hold(tenant, &h).map_err(store_err)?;
    shared.availability_cache.holds_changed();
    shared.store.flush().await.map_err(store_err)?;
    Ok(hold_pb(&h))
}

/// A live hold, or FAILED_PRECONDITION naming `field`.
pub fn live_hold(
    shared: &Shared,
    tenant: &str,
    field: &str,
    id: &str,
) -> Result<HoldRecord, ErrorKind> {
    match shared.store.hold(tenant, id).map_err(store_err)? {
        Some(h) if h.expires_ms > now_ms() => Ok(h),
        _ => Err(ErrorKind::FailedPrecondition(format!(
            "{field} names no live hold (it expired or was released)"
        ))),
    }
}

/// Releases a hold (idempotent).
pub async fn release_hold(shared: &Shared, tenant: &str, id: &str) -> Result<(), ErrorKind> {
    shared.store.remove_hold(tenant, id).map_err(store_err)?;
    shared.availability_cache.holds_changed();
    shared.store.flush().await.map_err(store_err)?;
    Ok(())
}

/// The tenant's live holds, by start.
pub fn list_holds(shared: &Shared, tenant: &str) -> Result<Vec<pb::Hold>, ErrorKind> {
    let now = now_ms();
    let mut holds: Vec<HoldRecord> = shared
        .store
        .holds(tenant)
        .map_err(store_err)?
        .into_iter()
        .filter(|h| h.expires_ms > now)
        .collect();
    holds.sort_by_key(|h| h.start_ms);
    Ok(holds.iter().map(hold_pb).collect())
}

/// Validates and stores working hours.
pub async fn put_working_hours(
    shared: &Shared,
    tenant: &str,
    req: &pb::PutWorkingHoursRequest,
) -> Result<pb::StoredWorkingHours, ErrorKind> {
    let mut inv = Invalid::default();
    check_id(
        &mut inv,
        "working_hours_id",
        &req.working_hours_id,
        limits::MAX_ID_BYTES,
    );
    match &req.hours {
        None => inv.push("hours", "must be set"),
        Some(h) => {
            if let Err(e) = convert_hours("hours", h) {
                inv.0.extend(e.0);
            }
        }
    }
    inv.into_result().map_err(ErrorKind::from)?;
    let hours = req.hours.clone().expect("validated");
    shared
        .store
        .put_working_hours(tenant, &req.working_hours_id, &hours.encode_to_vec())
        .map_err(store_err)?;
    shared.availability_cache.hours_changed();
    shared.store.flush().await.map_err(store_err)?;
    Ok(pb::StoredWorkingHours {
        working_hours_id: req.working_hours_id.clone(),
        hours: Some(hours),
    })
}

/// Stored working hours by id.
pub fn get_working_hours(
    shared: &Shared,
    tenant: &str,
    id: &str,
) -> Result<pb::StoredWorkingHours, ErrorKind> {
    let bytes = shared
        .store
        .working_hours(tenant, id)
        .map_err(store_err)?
        .ok_or_else(|| ErrorKind::NotFound(format!("working hours {id:?} not found")))?;
    Ok(pb::StoredWorkingHours {
        working_hours_id: id.to_string(),
        hours: Some(
            pb::WorkingHours::decode(bytes.as_slice()).map_err(|_| {
                ErrorKind::Internal("stored working hours cannot be decoded".into())
            })?,
        ),
    })
}

/// Every stored working-hours entry of a tenant.
pub fn list_working_hours(
    shared: &Shared,
    tenant: &str,
) -> Result<Vec<pb::StoredWorkingHours>, ErrorKind> {
    shared
        .store
        .all_working_hours(tenant)
        .map_err(store_err)?
        .into_iter()
        .map(|(id, bytes)| {
            Ok(pb::StoredWorkingHours {
                working_hours_id: id,
                hours: Some(pb::WorkingHours::decode(bytes.as_slice()).map_err(|_| {
                    ErrorKind::Internal("stored working hours cannot be decoded".into())
                })?),
            })
        })
        .collect()
}

/// Deletes stored working hours.
pub async fn delete_working_hours(
    shared: &Shared,
    tenant: &str,
    id: &str,
) -> Result<(), ErrorKind> {
    let deleted = shared
        .store
        .delete_working_hours(tenant, id)
        .map_err(store_err)?;
    shared.availability_cache.hours_changed();
    if !deleted {
        return Err(ErrorKind::NotFound(format!(
            "working hours {id:?} not found"
        )));
    }
    shared.store.flush().await.map_err(store_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Datelike;

    use crate::store::{AccountRecord, EventRecord, MirrorPut, MirrorRemove, PageCommit};
    use proptest::prelude::*;

    fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    const MIN: i64 = 60_000;

    /// Midnight UTC two days from now: every test period lies after it.
    fn base() -> i64 {
        (now_ms() / DAY_MS + 2) * DAY_MS
    }

    fn account_id(k: usize) -> String {
        format!("acc{k}")
    }

    fn calendar(id: &str, synced: bool, zone: &str) -> CalendarRecord {
        CalendarRecord {
            calendar_id: id.into(),
            sealed_name: Vec::new(),
            primary: id == "primary",
            read_only: false,
            time_zone: zone.into(),
            synced,
            color: String::new(),
        }
    }

    /// Connects account `k` of tenant "t" with a synced primary calendar, a
    /// synced calendar "work" and an unsynced "other", as the scheduler
    /// would (records, then the sync signal).
    fn connect(s: &Shared, k: usize) {
        let id = account_id(k);
        let account = AccountRecord {
            identity_hash: format!("h{k}"),
            ..AccountRecord::for_test(&id)
        };
        let zone = ["Europe/London", "America/New_York", "Asia/Kathmandu"][k % 3];
        let cals = [
            calendar("primary", true, zone),
            calendar("work", true, zone),
            calendar("other", false, zone),
        ];
        s.store
            .put_account_with_calendars(&account, &cals, 0)
            .unwrap();
        for c in &cals {
            if c.synced {
                synced_now(s, k, &c.calendar_id);
                s.sync_soon(&id, &c.calendar_id);
            }
        }
    }

    /// A successful sync that changed no event (no mirror signal).
    fn synced_now(s: &Shared, k: usize, cal: &str) {
        let id = account_id(k);
        let mut st = s.store.sync_state(&id, cal).unwrap().unwrap_or_default();
        st.last_success_ms = Some(now_ms() - 1000 * (k as i64 + 1));
        s.store.put_sync_state(&id, cal, &st).unwrap();
    }

    fn put_event(s: &Shared, k: usize, cal: &str, pid: &str, start: i64, len: i64, busy: i32) {
        let id = account_id(k);
        let previous = s.store.event(&id, cal, pid).unwrap();
        let put = MirrorPut {
            provider_event_id: pid.into(),
            record: EventRecord {
                version: format!("{start}"),
                start_ms: start,
                end_ms: start + len,
                busy,
                client_event_id: None,
                all_day: None,
                written_hash: None,
                sealed: Vec::new(),
            },
            previous_start_ms: previous.map(|p| p.start_ms),
            previous_client_id: None,
        };
        commit(s, k, cal, &[put], &[]);
    }

    fn remove_event(s: &Shared, k: usize, cal: &str, pid: &str) {
        let id = account_id(k);
        if let Some(e) = s.store.event(&id, cal, pid).unwrap() {
            let r = MirrorRemove {
                provider_event_id: pid.into(),
                start_ms: e.start_ms,
                client_event_id: None,
            };
            commit(s, k, cal, &[], &[r]);
        }
    }

    /// Applies a page as the sync loop does: store, then the signal.
    fn commit(s: &Shared, k: usize, cal: &str, puts: &[MirrorPut], removes: &[MirrorRemove]) {
        let id = account_id(k);
        let st = s.store.sync_state(&id, cal).unwrap().unwrap_or_default();
        s.store
            .apply_sync_page(&PageCommit {
                tenant: "t",
                account: &id,
                calendar: cal,
                puts,
                removes,
                state: &st,
                changes: &[],
                now_ms: now_ms(),
            })
            .unwrap();
        s.mirror_changed(&id, cal);
    }

    fn hours(zone: &str, start: &str, end: &str) -> pb::WorkingHours {
        pb::WorkingHours {
            time_zone: zone.into(),
            weekly: (1..=7)
                .map(|weekday| pb::WeeklyRule {
                    weekday,
                    start: start.into(),
                    end: end.into(),
                })
                .collect(),
            overrides: Vec::new(),
        }
    }

    fn put_hours(s: &Shared, id: &str, h: pb::WorkingHours) {
        block_on(put_working_hours(
            s,
            "t",
            &pb::PutWorkingHoursRequest {
                working_hours_id: id.into(),
                hours: Some(h),
            },
        ))
        .unwrap();
    }

    /// Members: account 0 with stored hours "wh0", account 1 with inline
    /// hours, account 2 without hours and only its "work" calendar.
    fn request(n: usize, format: pb::AvailabilityFormat) -> pb::QueryAvailabilityRequest {
        let member = |k: usize| pb::AvailabilityMember {
            account_id: account_id(k),
            working_hours_id: if k.is_multiple_of(3) {
                format!("wh{k}")
            } else {
                String::new()
            },
            working_hours: (k % 3 == 1).then(|| hours("Europe/Berlin", "07:00", "19:00")),
            calendar_ids: if k % 3 == 2 {
                vec!["work".into()]
            } else {
                vec![]
            },
            max_events_per_day: if k == 1 { 3 } else { 0 },
            ..Default::default()
        };
        let b = base();
        pb::QueryAvailabilityRequest {
            groups: vec![pb::ParticipantGroup {
                members: (0..n).map(member).collect(),
                required: if n > 1 { n as u32 - 1 } else { 0 },
            }],
            duration_minutes: 30,
            periods: vec![pb::TimeWindow {
                start: ts(b),
                end: ts(b + 3 * DAY_MS),
            }],
            buffer_before_minutes: 5,
            buffer_after_minutes: 10,
            start_interval_minutes: 15,
            tentative_is_busy: true,
            format: format as i32,
            max_results: 1000,
            ..Default::default()
        }
    }

    fn answer(s: &Shared, req: &pb::QueryAvailabilityRequest) -> String {
        format!("{:?}", query(s, "t", req))
    }

    fn explained(s: &Shared, req: &pb::QueryAvailabilityRequest, at: i64) -> String {
        let e = pb::ExplainAvailabilityRequest {
            query: Some(req.clone()),
            slot: Some(pb::TimeWindow {
                start: ts(at),
                end: ts(at + 30 * MIN),
            }),
        };
        format!("{:?}", explain(s, "t", &e))
    }

    fn revoked(s: &Shared, k: usize) -> bool {
        revoked_id(s, &account_id(k))
    }

    fn revoked_id(s: &Shared, id: &str) -> bool {
        s.store
            .account(id)
            .unwrap()
            .is_some_and(|a| a.status == pb::AccountStatus::Revoked as i32)
    }

    /// The cached answers (and explanations) equal those built afresh, for
    /// the members whose accounts are not revoked (a revoked one fails the
    /// request, see `revoked_members_fail_the_request`).
    fn check_cache(s: &Shared, n: usize) -> Result<(), TestCaseError> {
        let mut req = request(n, pb::AvailabilityFormat::OverlappingSlots);
        let group = &mut req.groups[0];
        group.members.retain(|m| !revoked_id(s, &m.account_id));
        group.required = group.required.min(group.members.len() as u32);
        let probes: Vec<i64> = (0..6).map(|i| base() + i * 11 * 60 * MIN).collect();
        let cached = answer(s, &req);
        let cached_x: Vec<String> = probes.iter().map(|&t| explained(s, &req, t)).collect();
        s.availability_cache.clear();
        let fresh = answer(s, &req);
        prop_assert_eq!(&cached, &fresh);
        s.availability_cache.clear();
        let fresh_x: Vec<String> = probes.iter().map(|&t| explained(s, &req, t)).collect();
        prop_assert_eq!(cached_x, fresh_x);
        // Warm again for the next step.
        prop_assert_eq!(answer(s, &req), fresh);
        Ok(())
    }

    #[derive(Debug, Clone)]
    enum Change {
        PutEvent {
            k: usize,
            work: bool,
            pid: u8,
            start5: i64,
            len5: i64,
            busy: i32,
        },
        RemoveEvent {
            k: usize,
            work: bool,
            pid: u8,
        },
        CreateHold {
            ks: Vec<usize>,
            start5: i64,
        },
        ReleaseHold(usize),
        PutHours {
            late: bool,
        },
        DeleteHours,
        SyncOff {
            k: usize,
        },
        SyncOn {
            k: usize,
        },
        NewCalendar {
            k: usize,
        },
        SyncedNow {
            k: usize,
        },
        Revoke {
            k: usize,
        },
        ReauthRequired {
            k: usize,
        },
    }

    fn arb_change(n: usize) -> impl Strategy<Value = Change> {
        let k = 0..n;
        prop_oneof![
            4 => (k.clone(), any::<bool>(), 0u8..6, 0i64..(3 * 288), 1i64..36, 1i32..4).prop_map(
                |(k, work, pid, start5, len5, busy)| Change::PutEvent { k, work, pid, start5, len5, busy }
            ),
            2 => (k.clone(), any::<bool>(), 0u8..6).prop_map(|(k, work, pid)| Change::RemoveEvent { k, work, pid }),
            2 => (prop::collection::vec(0..n, 1..3), 0i64..(3 * 288))
                .prop_map(|(ks, start5)| Change::CreateHold { ks, start5 }),
            1 => (0usize..4).prop_map(Change::ReleaseHold),
            1 => any::<bool>().prop_map(|late| Change::PutHours { late }),
            1 => Just(Change::DeleteHours),
            1 => k.clone().prop_map(|k| Change::SyncOff { k }),
            1 => k.clone().prop_map(|k| Change::SyncOn { k }),
            1 => k.clone().prop_map(|k| Change::NewCalendar { k }),
            2 => k.clone().prop_map(|k| Change::SyncedNow { k }),
            1 => k.clone().prop_map(|k| Change::Revoke { k }),
            1 => k.prop_map(|k| Change::ReauthRequired { k }),
        ]
    }

    /// Applies a change the way the scheduler's own code paths do (store
    /// writes followed by the same signals).
    fn apply(s: &Shared, c: &Change, holds: &mut Vec<String>) {
        let cal = |work: bool| if work { "work" } else { "primary" };
        // A revoked account takes no writes (the store refuses them, see
        // `a_revoked_account_takes_no_new_rows`): changes naming one are
        // refused as the scheduler's paths refuse them.
        let named = match c {
            Change::PutEvent { k, .. }
            | Change::RemoveEvent { k, .. }
            | Change::SyncOff { k }
            | Change::SyncOn { k }
            | Change::NewCalendar { k }
            | Change::SyncedNow { k } => Some(*k),
            _ => None,
        };
        if named.is_some_and(|k| revoked(s, k)) {
            return;
        }
        if let Change::CreateHold { ks, .. } = c {
            if ks.iter().any(|&k| revoked(s, k)) {
                let e = block_on(create_hold(
                    s,
                    "t",
                    &pb::CreateHoldRequest {
                        account_ids: ks.iter().map(|&k| account_id(k)).collect(),
                        slot: Some(pb::TimeWindow {
                            start: ts(base()),
                            end: ts(base() + 45 * MIN),
                        }),
                        ttl_minutes: 30,
                    },
                ))
                .expect_err("a hold on a revoked account");
                assert!(matches!(e, ErrorKind::FailedPrecondition(_)), "{e:?}");
                return;
            }
        }
        match c {
            Change::PutEvent {
                k,
                work,
                pid,
                start5,
                len5,
                busy,
            } => put_event(
                s,
                *k,
                cal(*work),
                &format!("e{pid}"),
                base() + start5 * 5 * MIN,
                len5 * 5 * MIN,
                *busy,
            ),
            Change::RemoveEvent { k, work, pid } => {
                remove_event(s, *k, cal(*work), &format!("e{pid}"))
            }
            Change::CreateHold { ks, start5 } => {
                let start = base() + start5 * 5 * MIN;
                let h = block_on(create_hold(
                    s,
                    "t",
                    &pb::CreateHoldRequest {
                        account_ids: ks.iter().map(|&k| account_id(k)).collect(),
                        slot: Some(pb::TimeWindow {
                            start: ts(start),
                            end: ts(start + 45 * MIN),
                        }),
                        ttl_minutes: 30,
                    },
                ))
                .unwrap();
                holds.push(h.hold_id);
            }
            Change::ReleaseHold(i) => {
                if !holds.is_empty() {
                    let id = holds.remove(i % holds.len());
                    block_on(release_hold(s, "t", &id)).unwrap();
                }
            }
            Change::PutHours { late } => {
                let (a, b) = if *late {
                    ("12:00", "23:00")
                } else {
                    ("08:00", "17:30")
                };
                put_hours(s, "wh0", hours("Asia/Tokyo", a, b));
            }
            Change::DeleteHours => {
                let _ = block_on(delete_working_hours(s, "t", "wh0"));
            }
            Change::SyncOff { k } => {
                // As SetCalendarSync does when turning sync off.
                let id = account_id(*k);
                if let Some(mut c) = s.store.calendar(&id, "work").unwrap() {
                    c.synced = false;
                    s.store.put_calendar(&id, &c).unwrap();
                    s.store.clear_calendar_mirror(&id, "work").unwrap();
                    s.mirror_changed(&id, "work");
                }
            }
            Change::SyncOn { k } => {
                // As SetCalendarSync does when turning sync on.
                let id = account_id(*k);
                if let Some(mut c) = s.store.calendar(&id, "other").unwrap() {
                    c.synced = true;
                    s.store.put_calendar(&id, &c).unwrap();
                    s.sync_soon(&id, "other");
                }
            }
            Change::NewCalendar { k } => {
                // A refresh of the calendar list (SyncNow) that finds one
                // more synced calendar and a new primary zone.
                let id = account_id(*k);
                let account = s.store.account(&id).unwrap().unwrap();
                let mut cals = s.store.calendars(&id).unwrap();
                if cals.is_empty() {
                    return;
                }
                for c in &mut cals {
                    c.time_zone = "Australia/Lord_Howe".into();
                }
                cals.push(calendar(&format!("new{}", cals.len()), true, "UTC"));
                s.store
                    .put_account_with_calendars(&account, &cals, 0)
                    .unwrap();
                for c in &cals {
                    if c.synced {
                        s.sync_soon(&id, &c.calendar_id);
                    }
                }
            }
            Change::SyncedNow { k } => {
                for cal in ["primary", "work"] {
                    if s.store.calendar(&account_id(*k), cal).unwrap().is_some() {
                        synced_now(s, *k, cal);
                    }
                }
            }
            Change::Revoke { k } => {
                // As accounts::revoke does.
                let id = account_id(*k);
                let mut a = s.store.account(&id).unwrap().unwrap();
                a.status = pb::AccountStatus::Revoked as i32;
                s.store.put_account(&a).unwrap();
                crate::accounts::purge_revoked_rows(s, &id).unwrap();
            }
            Change::ReauthRequired { k } => {
                block_on(crate::accounts::mark_reauth_required(
                    s,
                    &account_id(*k),
                    "test",
                ))
                .unwrap();
            }
        }
    }

    fn seeded(dir: &std::path::Path, n: usize) -> Shared {
        let s = Shared::for_test(dir);
        for k in 0..n {
            connect(&s, k);
            for (i, cal) in ["primary", "work"].iter().enumerate() {
                for j in 0..4 {
                    put_event(
                        &s,
                        k,
                        cal,
                        &format!("e{j}"),
                        base() + (k as i64 * 97 + j * 333 + i as i64 * 51) * 5 * MIN,
                        (30 + 15 * j) * MIN,
                        1 + (j as i32 % 3),
                    );
                }
            }
        }
        put_hours(&s, "wh0", hours("Europe/London", "09:00", "17:00"));
        put_hours(&s, "wh3", hours("America/New_York", "09:00", "17:00"));
        s
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn cached_participants_answer_like_fresh_ones_after_every_change(
            changes in prop::collection::vec(arb_change(4), 1..8),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let s = seeded(dir.path(), 4);
            let mut holds = Vec::new();
            check_cache(&s, 4)?;
            for c in &changes {
                apply(&s, c, &mut holds);
                check_cache(&s, 4)?;
            }
        }
    }

    #[test]
    fn revoked_members_fail_the_request_naming_them_even_when_cached() {
        let dir = tempfile::tempdir().unwrap();
        let s = seeded(dir.path(), 3);
        let req = request(3, pb::AvailabilityFormat::OverlappingSlots);
        // Cached while the account was active.
        query(&s, "t", &req).unwrap();
        apply(&s, &Change::Revoke { k: 1 }, &mut Vec::new());
        for e in [
            query(&s, "t", &req).map(|_| ()),
            explain(
                &s,
                "t",
                &pb::ExplainAvailabilityRequest {
                    query: Some(req.clone()),
                    slot: Some(pb::TimeWindow {
                        start: ts(base()),
                        end: ts(base() + 30 * MIN),
                    }),
                },
            )
            .map(|_| ()),
        ] {
            match e {
                Err(ErrorKind::FailedPrecondition(m)) => {
                    assert!(m.contains("groups[0].members[1].account_id"), "{m}");
                    assert!(m.contains("acc1") && m.contains("revoked"), "{m}");
                }
                other => panic!("a revoked member answered {other:?}"),
            }
        }
    }

    #[test]
    fn an_unchanged_participant_is_served_from_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let s = seeded(dir.path(), 4);
        let req = request(4, pb::AvailabilityFormat::Slots);
        let first = query(&s, "t", &req).unwrap();
        let (participants, intervals) = s.availability_cache.usage();
        assert_eq!(participants, 4);
        assert!(intervals > 0);
        let (_, g) = prepare(&s, "t", &req).unwrap();
        let (_, again) = prepare(&s, "t", &req).unwrap();
        for (a, b) in g.built.iter().zip(&again.built) {
            assert!(Arc::ptr_eq(a, b), "the same built participant is reused");
        }
        assert_eq!(query(&s, "t", &req).unwrap(), first);
        // A mirror change rebuilds that account only.
        put_event(&s, 1, "primary", "x", base() + 600 * MIN, 30 * MIN, 1);
        let (_, after) = prepare(&s, "t", &req).unwrap();
        assert!(!Arc::ptr_eq(&after.built[1], &g.built[1]));
        assert!(Arc::ptr_eq(&after.built[0], &g.built[0]));
    }

    #[test]
    fn stale_calendars_fail_the_request() {
        // One account consults 2 calendars, four consult 7.
        for n in [1, 4] {
            let dir = tempfile::tempdir().unwrap();
            let s = seeded(dir.path(), n);
            let mut req = request(n, pb::AvailabilityFormat::Slots);
            req.max_staleness_seconds = 3600;
            let ok = query(&s, "t", &req).unwrap();
            let consulted: Vec<(String, String)> = ok
                .freshness
                .iter()
                .map(|f| (f.account_id.clone(), f.calendar_id.clone()))
                .collect();
            let mut expected = Vec::new();
            for k in 0..n {
                let cals: &[&str] = if k % 3 == 2 {
                    &["work"]
                } else {
                    &["primary", "work"]
                };
                for c in cals {
                    expected.push((account_id(k), c.to_string()));
                }
            }
            assert_eq!(consulted, expected, "in member order");
            let id = account_id(n - 1);
            let mut st = s.store.sync_state(&id, "work").unwrap().unwrap();
            st.last_success_ms = Some(now_ms() - 7200 * 1000);
            s.store.put_sync_state(&id, "work", &st).unwrap();
            match query(&s, "t", &req) {
                Err(ErrorKind::FailedPrecondition(m)) => {
                    assert!(m.contains(&format!("{id}/work")), "{m}")
                }
                other => panic!("unexpected {other:?}"),
            }
            req.max_staleness_seconds = 0;
            let again = query(&s, "t", &req).unwrap();
            assert_eq!(again.slots, ok.slots);
        }
    }

    #[test]
    fn an_expired_hold_no_longer_blocks_a_cached_participant() {
        let dir = tempfile::tempdir().unwrap();
        let s = seeded(dir.path(), 1);
        let mut req = request(1, pb::AvailabilityFormat::Periods);
        req.groups[0].members[0].working_hours_id.clear();
        let before = query(&s, "t", &req).unwrap();
        let start = base() + 12 * 60 * MIN;
        s.store
            .put_hold(
                "t",
                &HoldRecord {
                    hold_id: "h1".into(),
                    account_ids: vec![account_id(0)],
                    start_ms: start,
                    end_ms: start + 60 * MIN,
                    expires_ms: now_ms() + 300,
                },
            )
            .unwrap();
        // As create_hold does after storing it.
        s.availability_cache.holds_changed();
        let held = query(&s, "t", &req).unwrap();
        assert_ne!(held, before, "the hold blocks its hour");
        std::thread::sleep(std::time::Duration::from_millis(400));
        assert_eq!(query(&s, "t", &req).unwrap(), before, "expired: free again");
    }

    const WEEK: i64 = 7 * 86_400_000;

    /// Seeds `people` as accounts of tenant "t", shifted by whole weeks so
    /// the scenario lies in the future; returns the request.
    fn seed_scenario(s: &Shared, n: usize) -> pb::QueryAvailabilityRequest {
        let (req, people, now) = engine::scenario(n, 42);
        let weeks = (now_ms() - now) / WEEK + 1;
        let shift = weeks * WEEK;
        let mut ids = Vec::new();
        for (i, p) in people.iter().enumerate() {
            let id = format!("acc_{i:024}");
            let account = AccountRecord {
                sealed_credentials: vec![7; 120],
                sealed_identity: vec![9; 60],
                identity_hash: "h".repeat(64),
                ..AccountRecord::for_test(&id)
            };
            let cal = CalendarRecord {
                calendar_id: "primary".into(),
                sealed_name: vec![3; 40],
                primary: true,
                read_only: false,
                time_zone: p.time_zone().name().into(),
                synced: true,
                color: "#123456".into(),
            };
            s.store
                .put_account_with_calendars(&account, &[cal], 0)
                .unwrap();
            let puts: Vec<MirrorPut> = p
                .busy()
                .iter()
                .enumerate()
                .map(|(k, b)| {
                    let (start_ms, end_ms, all_day) = match b.span {
                        engine::BusySpan::Timed { start_ms, end_ms } => {
                            (start_ms + shift, end_ms + shift, None)
                        }
                        engine::BusySpan::AllDay { start, end } => {
                            use chrono::Datelike;
                            let (a, b) = (
                                start + chrono::Duration::weeks(weeks),
                                end + chrono::Duration::weeks(weeks),
                            );
                            let ms = |d: NaiveDate| {
                                engine::local_to_utc(
                                    p.time_zone(),
                                    d.and_time(NaiveTime::MIN),
                                    engine::Edge::Start,
                                )
                            };
                            (
                                ms(a),
                                ms(b),
                                Some((a.num_days_from_ce(), b.num_days_from_ce())),
                            )
                        }
                    };
                    let busy = match b.status {
                        engine::BusyStatus::Busy => pb::BusyStatus::Busy,
                        engine::BusyStatus::Tentative => pb::BusyStatus::Tentative,
                        engine::BusyStatus::OutOfOffice => pb::BusyStatus::OutOfOffice,
                        engine::BusyStatus::Free => pb::BusyStatus::Unspecified,
                    } as i32;
                    MirrorPut {
                        provider_event_id: format!("ev{k}"),
                        record: EventRecord {
                            version: "1".into(),
                            start_ms,
                            end_ms,
                            busy,
                            client_event_id: None,
                            all_day,
                            written_hash: None,
                            sealed: vec![1; 200],
                        },
                        previous_start_ms: None,
                        previous_client_id: None,
                    }
                })
                .collect();
            let st = crate::store::SyncRecord {
                cursor: "c".repeat(40),
                last_success_ms: Some(now_ms()),
                ..Default::default()
            };
            s.store
                .apply_sync_page(&PageCommit {
                    tenant: "t",
                    account: &id,
                    calendar: "primary",
                    puts: &puts,
                    removes: &[],
                    state: &st,
                    changes: &[],
                    now_ms: 0,
                })
                .unwrap();
            let wh = scenario_hours(p, weeks).unwrap();
            s.store
                .put_working_hours("t", &format!("wh{i}"), &wh.encode_to_vec())
                .unwrap();
            ids.push((id, p.max_events_per_day(), p.max_events_per_week()));
        }
        let member = |i: usize| pb::AvailabilityMember {
            account_id: ids[i].0.clone(),
            working_hours_id: format!("wh{i}"),
            max_events_per_day: ids[i].1,
            max_events_per_week: ids[i].2,
            ..Default::default()
        };
        scenario_request(&req, member, shift)
    }

    /// Server-side time of `QueryAvailability` on the benchmark scenario
    /// (`HN` participants, default 50; `HR` runs), without gRPC and without
    /// a sync loop competing: `cargo test --release -p calbridge-scheduler
    /// --lib server_side_timing -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn server_side_timing() {
        let env = |k: &str, d: usize| {
            std::env::var(k)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(d)
        };
        let (n, runs) = (env("HN", 50), env("HR", 200));
        let dir = tempfile::tempdir().unwrap();
        let s = Shared::for_test(dir.path());
        let req = seed_scenario(&s, n);
        let t = std::time::Instant::now();
        let first = query(&s, "t", &req).unwrap();
        let cold = t.elapsed();
        let mut times: Vec<std::time::Duration> = (0..runs)
            .map(|_| {
                let t = std::time::Instant::now();
                assert_eq!(query(&s, "t", &req).unwrap(), first);
                t.elapsed()
            })
            .collect();
        times.sort();
        println!(
            "request {} bytes, response {} bytes",
            req.encoded_len(),
            first.encoded_len()
        );
        let (kept, intervals) = s.availability_cache.usage();
        println!(
            "{n} participants, {} slots: first {cold:?}, then p50 {:?} p99 {:?}; \
             cache: {kept} participants, {intervals} intervals ({} + {} + 2 x {} bytes each)",
            first.slots.len(),
            times[times.len() / 2],
            times[times.len() * 99 / 100],
            std::mem::size_of::<engine::BusyInterval>(),
            std::mem::size_of::<Source>(),
            std::mem::size_of::<(i64, i64)>(),
        );
    }

    #[test]
    fn eviction_keeps_the_most_recently_used_participants() {
        let dir = tempfile::tempdir().unwrap();
        let s = seeded(dir.path(), 2);
        let req = request(2, pb::AvailabilityFormat::Slots);
        query(&s, "t", &req).unwrap();
        let mut inner = s.availability_cache.lock();
        assert_eq!(inner.participants, 2);
        let ticks: Vec<u64> = inner
            .accounts
            .values()
            .flatten()
            .map(|b| b.last_used.load(Ordering::Relaxed))
            .collect();
        // Pretend the bound was exceeded: everything older than 3/4 goes.
        inner.participants = MAX_CACHED_PARTICIPANTS + 1;
        evict(&mut inner);
        assert!(inner.participants <= 2);
        let kept: Vec<u64> = inner
            .accounts
            .values()
            .flatten()
            .map(|b| b.last_used.load(Ordering::Relaxed))
            .collect();
        assert!(kept.iter().all(|t| t >= ticks.iter().min().unwrap()));
        assert_eq!(
            inner.intervals,
            inner
                .accounts
                .values()
                .flatten()
                .map(|b| b.weight())
                .sum::<usize>()
        );
    }

    #[test]
    fn working_hours_convert_with_fields_named() {
        let h = pb::WorkingHours {
            time_zone: "Europe/London".into(),
            weekly: vec![pb::WeeklyRule {
                weekday: 1,
                start: "09:00".into(),
                end: "17:30".into(),
            }],
            overrides: vec![pb::DateOverride {
                date: "2026-12-24".into(),
                ranges: vec![],
            }],
        };
        let (tz, wh) = convert_hours("hours", &h).unwrap();
        assert_eq!(tz, chrono_tz::Europe::London);
        assert_eq!(wh.weekly[0].range.end_minute, 17 * 60 + 30);
        assert_eq!(wh.overrides[0].date.day(), 24);

        let bad = pb::WorkingHours {
            time_zone: "Mars/Base".into(),
            weekly: vec![pb::WeeklyRule {
                weekday: 8,
                start: "17:00".into(),
                end: "09:00".into(),
            }],
            overrides: vec![],
        };
        let fields: Vec<String> = convert_hours("hours", &bad)
            .unwrap_err()
            .0
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(
            fields,
            vec![
                "hours.time_zone",
                "hours.weekly[0].weekday",
                "hours.weekly[0].end"
            ]
        );
    }

    #[test]
    fn working_hours_lists_are_bounded_and_dates_unique() {
        let day = |d: &str| pb::DateOverride {
            date: d.into(),
            ranges: vec![],
        };
        let hours = |overrides| pb::WorkingHours {
            time_zone: "Europe/London".into(),
            weekly: vec![],
            overrides,
        };
        let fields = |h: &pb::WorkingHours| -> Vec<String> {
            convert_hours("hours", h)
                .err()
                .map(|i| i.0.into_iter().map(|v| v.field).collect())
                .unwrap_or_default()
        };
        let h = hours(vec![
            day("2026-12-24"),
            day("0000-01-01"),
            day("2026-12-24"),
        ]);
        assert_eq!(
            fields(&h),
            vec!["hours.overrides[1].date", "hours.overrides[2].date"]
        );
        let h = hours(vec![day("2026-12-24"); limits::MAX_DATE_OVERRIDES + 1]);
        assert_eq!(fields(&h), vec!["hours.overrides"]);
        let mut h = hours(vec![day("2026-12-24")]);
        h.overrides[0].ranges = vec![
            pb::LocalRange {
                start: "09:00".into(),
                end: "10:00".into(),
            };
            limits::MAX_OVERRIDE_RANGES + 1
        ];
        h.weekly = vec![
            pb::WeeklyRule {
                weekday: 1,
                start: "09:00".into(),
                end: "17:00".into(),
            };
            limits::MAX_WEEKLY_RULES + 1
        ];
        assert_eq!(
            fields(&h),
            vec!["hours.weekly", "hours.overrides[0].ranges"]
        );
    }

    #[test]
    fn hh_mm_accepts_midnight_as_an_end_only() {
        assert_eq!(parse_hhmm("00:00"), Some(0));
        assert_eq!(parse_hhmm("24:00"), Some(1440));
        assert_eq!(parse_hhmm("25:00"), None);
    }
}
