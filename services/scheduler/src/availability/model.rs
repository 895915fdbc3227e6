//! The availability engine's vocabulary: requests (groups, periods, buffers,
//! grid, formats, sequences), participant data (busy intervals, zone, working
//! hours, caps) and answers (slots, sequences, explanations). Pure data; no
//! proto types and no behaviour beyond normalising a participant's busy list.

use std::hash::{Hash, Hasher};
use std::sync::{Arc, OnceLock};

use chrono::{NaiveDate, Weekday};
use chrono_tz::Tz;

use super::localtime::{self, Edge};

/// How many members of a group must be free for the whole slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Required {
    /// Every member.
    All,
    /// At least this many members (1..=members).
    AtLeast(u32),
}

/// A participant group: a slot is offered only when every group of the
/// request has at least its required count of members free for the whole
/// slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Indices into the `participants` slice passed with the request. A
    /// participant may belong to several groups, but not twice to one.
    pub members: Vec<usize>,
    /// How many members must be free.
    pub required: Required,
}

/// A half-open UTC span `[start_ms, end_ms)` in Unix milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    /// Start (inclusive), Unix ms.
    pub start_ms: i64,
    /// End (exclusive), Unix ms.
    pub end_ms: i64,
}

/// The shape of an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// Non-overlapping slots of the duration on the start-interval grid,
    /// chosen greedily earliest-first: the earliest valid start, then the
    /// earliest valid start at or after its end, and so on.
    #[default]
    Slots,
    /// Merged free periods at least the duration long, clipped to the query
    /// periods (not aligned to the grid).
    Periods,
    /// Every grid start whose `[start, start + duration)` is free.
    OverlappingSlots,
}

/// A request for proposed meeting times.
///
/// Slot starts lie on the *start-interval grid*: multiples of
/// `start_interval_minutes` counted from 1970-01-01T00:00:00Z (so a 15-minute
/// grid is :00/:15/:30/:45 UTC, and a participant at UTC+05:45 sees local
/// starts at :00/:15/:30/:45 too, while a 30-minute grid gives local :15/:45
/// there). Tentative holds created by the platform are passed as ordinary
/// busy intervals; nothing distinguishes them here.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Request {
    /// Participant groups; every group's requirement must hold.
    pub groups: Vec<Group>,
    /// Required duration, 1..=1440 minutes.
    pub duration_minutes: u32,
    /// Periods to search: ordered, non-overlapping (touching is allowed and
    /// the union is searched, so a slot may span two touching periods).
    pub periods: Vec<Period>,
    /// Free time required before existing busy time, minutes.
    pub buffer_before_minutes: u32,
    /// Free time required after existing busy time, minutes.
    pub buffer_after_minutes: u32,
    /// Grid step, 1..=1440 minutes; 0 means 15.
    pub start_interval_minutes: u32,
    /// No slot starts before `now + minimum_notice_minutes`.
    pub minimum_notice_minutes: u32,
    /// Most results; 0 means 100.
    pub max_results: u32,
    /// Whether tentative busy time blocks (and counts towards caps).
    pub tentative_is_busy: bool,
    /// The answer's shape.
    pub format: Format,
}

/// How busy a participant is during an interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BusyStatus {
    /// Busy: always blocks.
    Busy,
    /// Tentative: blocks when the request says tentative is busy.
    Tentative,
    /// Out of office: always blocks.
    OutOfOffice,
    /// Free (transparent): never blocks and never counts towards caps. The
    /// caller normally filters these out; accepted here to be safe.
    Free,
}

impl BusyStatus {
    /// Whether this status blocks time (and counts as an event for caps).
    pub fn blocks(self, tentative_is_busy: bool) -> bool {
        match self {
            BusyStatus::Busy | BusyStatus::OutOfOffice => true,
            BusyStatus::Tentative => tentative_is_busy,
            BusyStatus::Free => false,
        }
    }
}

/// When a busy interval happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusySpan {
    /// A timed interval `[start_ms, end_ms)` in UTC ms. Empty or inverted
    /// intervals are ignored (they neither block nor count).
    Timed {
        /// Start (inclusive), Unix ms.
        start_ms: i64,
        /// End (exclusive), Unix ms.
        end_ms: i64,
    },
    /// An all-day event over local dates `[start, end)` in the participant's
    /// zone: it blocks from local midnight starting `start` to local
    /// midnight starting `end`.
    AllDay {
        /// First local date.
        start: NaiveDate,
        /// The local date after the last one (exclusive).
        end: NaiveDate,
    },
}

/// One busy interval of a participant, as read from the mirror.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusyInterval {
    /// The caller's opaque id, echoed back by explanations.
    pub id: u64,
    /// When.
    pub span: BusySpan,
    /// How busy.
    pub status: BusyStatus,
}

/// A local time range on one day, in minutes after local midnight:
/// `0 <= start_minute < end_minute <= 1440` (1440 is the next midnight).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LocalRange {
    /// Local start, minutes after midnight.
    pub start_minute: u16,
    /// Local end, minutes after midnight (exclusive).
    pub end_minute: u16,
}

/// Available hours on one weekday.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WeeklyRule {
    /// The weekday.
    pub weekday: Weekday,
    /// The local hours.
    pub range: LocalRange,
}

/// Hours for one local date, replacing that date's weekly rules.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DateOverride {
    /// The local date.
    pub date: NaiveDate,
    /// Local ranges; empty means unavailable that whole day.
    pub ranges: Vec<LocalRange>,
}

/// Weekly working hours in the participant's own zone, with date overrides.
///
/// DST rules when turning local times into instants: a local time that
/// does not exist (spring-forward gap) resolves to the first valid instant
/// after the gap; an ambiguous local time (fall-back overlap) resolves to
/// the earlier instant for a range start and the later one for a range end.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct WorkingHours {
    /// Weekly rules (several per weekday allowed; they are unioned).
    pub weekly: Vec<WeeklyRule>,
    /// Per-date replacements.
    pub overrides: Vec<DateOverride>,
}

/// A busy interval resolved to UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Resolved {
    pub start: i64,
    pub end: i64,
    pub status: BusyStatus,
}

/// Blocking events per local start day, sparse and sorted by day: `[0]`
/// without tentative, `[1]` with it.
pub(crate) type DayCounts = [Vec<(i64, u32)>; 2];

/// What a participant is apart from the caps: built once by
/// [`ParticipantData::new`] and shared (behind an `Arc`) by every clone, so
/// that a caller who keeps participants between queries pays for a clone
/// with one reference count.
struct Core {
    time_zone: Tz,
    busy: Vec<BusyInterval>,
    /// Blocking time merged (sorted, disjoint): `[0]` without tentative,
    /// `[1]` with it. Widening by buffers commutes with merging, so the
    /// engine widens these instead of the raw list.
    merged: [Vec<(i64, i64)>; 2],
    working_hours: Option<WorkingHours>,
    /// Hash of the working hours (0 without), so that the engine groups
    /// participants with equal hours without hashing them per query.
    hours_hash: u64,
    /// Whether the working hours pass validation (so a query need not
    /// check them again).
    hours_valid: bool,
    /// Computed on first use (only queries with caps need it).
    day_counts: OnceLock<DayCounts>,
}

/// Everything the engine knows about one participant.
///
/// Built with [`ParticipantData::new`], which resolves all-day intervals in
/// the participant's zone, sorts the busy list by UTC start and merges the
/// blocking time once, so that every query can scan it in order. Cloning is
/// cheap: the busy data is shared; only the caps are per clone.
#[derive(Clone)]
pub struct ParticipantData {
    core: Arc<Core>,
    max_events_per_day: u32,
    max_events_per_week: u32,
}

impl PartialEq for ParticipantData {
    fn eq(&self, other: &Self) -> bool {
        // Everything else in the core is derived from these three.
        self.max_events_per_day == other.max_events_per_day
            && self.max_events_per_week == other.max_events_per_week
            && (Arc::ptr_eq(&self.core, &other.core)
                || (self.core.time_zone == other.core.time_zone
                    && self.core.busy == other.core.busy
                    && self.core.working_hours == other.core.working_hours))
    }
}

impl Eq for ParticipantData {}

impl std::fmt::Debug for ParticipantData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParticipantData")
            .field("time_zone", &self.core.time_zone)
            .field("busy", &self.core.busy)
            .field("working_hours", &self.core.working_hours)
            .field("max_events_per_day", &self.max_events_per_day)
            .field("max_events_per_week", &self.max_events_per_week)
            .finish()
    }
}

impl ParticipantData {
    /// A participant in `time_zone` (the zone of their working hours, and
    /// the zone their local days and weeks are counted in), with busy
    /// intervals in any order and optional working hours (`None` means
    /// available at any time).
    ///
    /// Caps count the busy intervals given here, so for caps to be exact
    /// the caller passes every busy interval that starts in the local weeks
    /// the query periods touch.
    pub fn new(
        time_zone: Tz,
        mut busy: Vec<BusyInterval>,
        working_hours: Option<WorkingHours>,
    ) -> Self {
        let mut resolved: Vec<Resolved> = busy.iter().map(|b| resolve(time_zone, b)).collect();
        if !resolved.is_sorted_by_key(|r| r.start) {
            // Stable, like sorting the pairs by start: equal starts keep
            // their given order.
            let mut order: Vec<u32> = (0..busy.len() as u32).collect();
            order.sort_by_key(|&i| resolved[i as usize].start);
            busy = order.iter().map(|&i| busy[i as usize]).collect();
            resolved = order.iter().map(|&i| resolved[i as usize]).collect();
        }
        let merged = [false, true].map(|tentative| {
            let mut m: Vec<(i64, i64)> = Vec::new();
            for r in resolved
                .iter()
                .filter(|r| r.end > r.start && r.status.blocks(tentative))
            {
                match m.last_mut() {
                    Some(last) if r.start <= last.1 => last.1 = last.1.max(r.end),
                    _ => m.push((r.start, r.end)),
                }
            }
            m
        });
        let (hours_hash, hours_valid) = match &working_hours {
            None => (0, true),
            Some(h) => {
                let mut hasher = Fnv::default();
                h.hash(&mut hasher);
                (hasher.finish(), hours_are_valid(h))
            }
        };
        Self {
            core: Arc::new(Core {
                time_zone,
                busy,
                merged,
                working_hours,
                hours_hash,
                hours_valid,
                day_counts: OnceLock::new(),
            }),
            max_events_per_day: 0,
            max_events_per_week: 0,
        }
    }

    /// Sets the caps: a participant who already has at least `per_day`
    /// blocking events starting on a local day (or `per_week` in a local
    /// ISO week, Monday first) is unavailable that whole day (week). 0 means
    /// no cap.
    pub fn with_caps(mut self, per_day: u32, per_week: u32) -> Self {
        self.max_events_per_day = per_day;
        self.max_events_per_week = per_week;
        self
    }

    /// The participant's zone.
    pub fn time_zone(&self) -> Tz {
        self.core.time_zone
    }

    /// Busy intervals, sorted by UTC start.
    pub fn busy(&self) -> &[BusyInterval] {
        &self.core.busy
    }

    /// Working hours, if any.
    pub fn working_hours(&self) -> Option<&WorkingHours> {
        self.core.working_hours.as_ref()
    }

    /// Most events per local day, 0 for no cap.
    pub fn max_events_per_day(&self) -> u32 {
        self.max_events_per_day
    }

    /// Most events per local ISO week, 0 for no cap.
    pub fn max_events_per_week(&self) -> u32 {
        self.max_events_per_week
    }

    /// Whether `self` and `other` share their busy data and hours (clones
    /// of one [`ParticipantData::new`]), whatever their caps.
    pub fn shares_data_with(&self, other: &ParticipantData) -> bool {
        Arc::ptr_eq(&self.core, &other.core)
    }

    pub(crate) fn merged(&self, tentative_is_busy: bool) -> &[(i64, i64)] {
        &self.core.merged[usize::from(tentative_is_busy)]
    }

    pub(crate) fn hours_hash(&self) -> u64 {
        self.core.hours_hash
    }

    pub(crate) fn hours_valid(&self) -> bool {
        self.core.hours_valid
    }

    /// Blocking events per local start day (day numbers from 1970-01-01 in
    /// the participant's zone, through chrono like the explanations),
    /// computed on first use.
    pub(crate) fn day_counts(&self, tentative_is_busy: bool) -> &[(i64, u32)] {
        let counts = self.core.day_counts.get_or_init(|| {
            let tz = self.core.time_zone;
            [false, true].map(|tentative| {
                let mut days: Vec<i64> = self
                    .core
                    .busy
                    .iter()
                    .map(|b| resolve(tz, b))
                    .filter(|r| r.end > r.start && r.status.blocks(tentative))
                    .map(|r| localtime::local_ms(tz, r.start).div_euclid(localtime::DAY))
                    .collect();
                days.sort_unstable();
                let mut out: Vec<(i64, u32)> = Vec::new();
                for d in days {
                    match out.last_mut() {
                        Some((last, n)) if *last == d => *n += 1,
                        _ => out.push((d, 1)),
                    }
                }
                out
            })
        });
        &counts[usize::from(tentative_is_busy)]
    }
}

/// Whether working hours pass the checks of request validation (every
/// range `start < end <= 1440`, no date overridden twice). Sorts the dates
/// to find a repeated one: n log n, whatever the number of overrides.
fn hours_are_valid(h: &WorkingHours) -> bool {
    let ok = |r: &LocalRange| r.start_minute < r.end_minute && r.end_minute <= 1440;
    if !(h.weekly.iter().all(|r| ok(&r.range))
        && h.overrides.iter().all(|o| o.ranges.iter().all(ok)))
    {
        return false;
    }
    let mut dates: Vec<NaiveDate> = h.overrides.iter().map(|o| o.date).collect();
    dates.sort_unstable();
    dates.windows(2).all(|w| w[0] != w[1])
}

/// FNV-1a: working-hours records are small and trusted, so a cheap hash
/// beats SipHash when thousands of participants are grouped.
pub(crate) struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// Resolves a busy interval to UTC ms in `tz` (all-day: local midnight to
/// local midnight, start edge then end edge).
pub(crate) fn resolve(tz: Tz, b: &BusyInterval) -> Resolved {
    let (start, end) = match b.span {
        BusySpan::Timed { start_ms, end_ms } => (start_ms, end_ms),
        BusySpan::AllDay { start, end } => (
            localtime::local_to_utc(tz, start.and_time(chrono::NaiveTime::MIN), Edge::Start),
            localtime::local_to_utc(tz, end.and_time(chrono::NaiveTime::MIN), Edge::End),
        ),
    };
    Resolved {
        start,
        end,
        status: b.status,
    }
}

/// One proposed slot or period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// Start (inclusive), Unix ms.
    pub start_ms: i64,
    /// End (exclusive), Unix ms.
    pub end_ms: i64,
    /// Indices of the participants (of any group) free for the whole
    /// `[start_ms, end_ms)`, ascending. For N-of-M groups this may exceed N.
    /// For a merged PERIOD of an N-of-M group it may fall short of N, when
    /// the period is the union of slots that different members can take.
    pub available: Vec<usize>,
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Answer {
    /// Slots or periods, by start; at most `max_results`.
    pub slots: Vec<Slot>,
}

/// One step of a sequence: its own groups, duration and buffers, and the
/// allowed gap after the previous step.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SequenceStep {
    /// Participant groups of this step.
    pub groups: Vec<Group>,
    /// Duration, 1..=1440 minutes.
    pub duration_minutes: u32,
    /// Buffer before existing busy time, minutes.
    pub buffer_before_minutes: u32,
    /// Buffer after existing busy time, minutes.
    pub buffer_after_minutes: u32,
    /// Least gap `this.start - previous.end`, minutes (ignored on the first
    /// step).
    pub min_gap_minutes: u32,
    /// Largest gap `this.start - previous.end`, minutes (ignored on the
    /// first step); at least `min_gap_minutes`.
    pub max_gap_minutes: u32,
}

/// A request for sequenced availability (for example an interview loop):
/// ordered steps, each a slot on the shared grid within the shared periods.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SequenceRequest {
    /// The steps, in order.
    pub steps: Vec<SequenceStep>,
    /// Periods to search (as in [`Request::periods`]); every step's slot
    /// lies within them.
    pub periods: Vec<Period>,
    /// Grid step, 1..=1440 minutes; 0 means 15.
    pub start_interval_minutes: u32,
    /// No first step starts before `now + minimum_notice_minutes`.
    pub minimum_notice_minutes: u32,
    /// Most sequences; 0 means 100.
    pub max_results: u32,
    /// Whether tentative busy time blocks.
    pub tentative_is_busy: bool,
}

/// The answer to a [`SequenceRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SequenceAnswer {
    /// Candidate sequences, by first start; each has one slot per step.
    pub sequences: Vec<Vec<Slot>>,
}

/// Why a slot is not offered, at request level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestReason {
    /// The start is not on the start-interval grid.
    NotAligned {
        /// The grid step, minutes.
        start_interval_minutes: u32,
    },
    /// The slot is not inside the union of the query periods.
    OutsideQueryPeriods,
    /// The slot starts before now + minimum notice.
    MinimumNotice {
        /// The earliest allowed start, Unix ms.
        earliest_start_ms: i64,
    },
    /// The slot's length is not the requested duration.
    DurationMismatch {
        /// The requested duration, minutes.
        duration_minutes: u32,
    },
}

/// Why one participant is not free for a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A busy interval overlaps the slot.
    BusyEvent {
        /// The caller's id of the interval.
        id: u64,
        /// Its UTC start, ms (all-day intervals resolved in the zone).
        start_ms: i64,
        /// Its UTC end, ms.
        end_ms: i64,
    },
    /// Only the buffer around a busy interval overlaps the slot.
    Buffer {
        /// The caller's id of the interval.
        id: u64,
    },
    /// The slot is not entirely within working hours.
    OutsideWorkingHours,
    /// A local day the slot touches has reached the daily cap.
    DailyCap {
        /// The local date.
        date: NaiveDate,
        /// Events starting that day.
        count: u32,
        /// The cap.
        max: u32,
    },
    /// A local ISO week the slot touches has reached the weekly cap.
    WeeklyCap {
        /// The Monday of the week.
        week_start: NaiveDate,
        /// Events starting that week.
        count: u32,
        /// The cap.
        max: u32,
    },
}

/// The reasons of one participant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParticipantReasons {
    /// Index into `participants`.
    pub participant: usize,
    /// Empty when the participant is free for the slot.
    pub reasons: Vec<Reason>,
}

/// Whether one group's requirement holds for the slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupVerdict {
    /// Members free for the whole slot.
    pub available: Vec<usize>,
    /// How many must be.
    pub required: usize,
    /// `available.len() >= required`.
    pub satisfied: bool,
}

/// Why a slot is (or is not) offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// True when the slot satisfies every rule, that is when it would be
    /// listed in an OVERLAPPING_SLOTS answer without a result limit.
    pub available: bool,
    /// Request-level reasons.
    pub request: Vec<RequestReason>,
    /// One verdict per group, in request order.
    pub groups: Vec<GroupVerdict>,
    /// Every participant of any group, ascending by index.
    pub participants: Vec<ParticipantReasons>,
}
