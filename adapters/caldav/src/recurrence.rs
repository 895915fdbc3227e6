//! Expansion of a calendar object resource into the events of a sync
//! window: a single event stays one event (id = resource href); a series is
//! expanded with the `rrule` crate (RRULE, RDATE, EXDATE, with DTSTART
//! always the first instance as RFC 5545 counts it, even when it does not
//! match its own rule) and each instance gets the id
//! `<href>#<original start>`, replaced by its RECURRENCE-ID override when
//! there is one. Server-side `expand` is never used.
//!
//! An override with `RANGE=THISANDFUTURE` also changes every later
//! instance (RFC 5545 §3.8.4.4): each later instance moves by the shift
//! the override made to its own start (on the series' wall clock), takes
//! the override's duration and its other properties, unless a later
//! override of its own (or of a later range) replaces it. An RDATE period
//! keeps its own length. A series in a custom VTIMEZONE steps through its
//! wall-clock time and reads each instance by that zone's own rules.
//!
//! Expansion is bounded, since one invitation anyone can send must not
//! stop a calendar's sync: a series contributes at most
//! [`MAX_INSTANCES`](crate::mapping::bounds::MAX_INSTANCES) instances to a window (the earliest ones; the rest are
//! not mirrored and the resource is reported as truncated), and stepping
//! through its rule (instances before the window included) may take at
//! most [`MAX_STEPS`](crate::mapping::bounds::MAX_STEPS) candidates, beyond which the series is refused as
//! too costly and reported as skipped.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

use calbridge::pb;

use crate::mapping::{
    local_to_utc, CalendarObject, EventParts, IcalError, UntilValue, VEvent, When,
};
use crate::zones::Zone;

pub use calbridge::adapter::Window;

/// True when `[start, end)` (dates read in `zone`) overlaps `window`; a
/// zero-length event counts when its start is inside.
pub fn overlaps(window: Window, start: &When, end: &When, zone: Tz) -> bool {
    let (s, e) = (start.utc(zone), end.utc(zone));
    s < window.end && (e > window.start || (e == s && s >= window.start))
}

/// The id of an instance of the series stored at `href`.
pub fn instance_id(href: &str, original: &When) -> String {
    format!("{href}#{}", original.id_suffix())
}

/// The instance of a series whose id ends in `suffix` ([`When::id_suffix`]):
/// an override's recurrence id, or an occurrence of the master's rules
/// (EXDATEs removed, from both). `None` when no instance has that original start.
pub fn find_instance(obj: &CalendarObject, suffix: &str) -> Option<When> {
    let around = if let Ok(t) = NaiveDateTime::parse_from_str(suffix, "%Y%m%dT%H%M%SZ") {
        Utc.from_utc_datetime(&t)
    } else {
        let d = NaiveDate::parse_from_str(suffix, "%Y%m%d").ok()?;
        Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0)?)
    };
    // An override of an excluded instance (a THISANDFUTURE one stays to
    // change the later instances) is no instance.
    let excluded = |w: &When| {
        obj.master
            .as_ref()
            .is_some_and(|m| m.exdates.iter().any(|x| x.utc(Tz::UTC) == w.utc(Tz::UTC)))
    };
    if let Some(w) = obj
        .overrides
        .iter()
        .filter_map(|ov| ov.recurrence_id)
        .find(|w| w.id_suffix() == suffix && !excluded(w))
    {
        return Some(w);
    }
    let window = Window {
        start: around - Duration::days(2),
        end: around + Duration::days(2),
    };
    bounded_occurrences(obj.master.as_ref()?, window, Reach::default())
        .ok()?
        .whens
        .into_iter()
        .find(|w| w.id_suffix() == suffix)
}

/// The events of a resource inside `window`: the single event, or the
/// series' instances (overrides applied, cancelled overrides kept as
/// cancelled instances, EXDATEs removed), at most [`MAX_INSTANCES`](crate::mapping::bounds::MAX_INSTANCES) of the
/// series' own occurrences (see [`expand_bounded`]).
pub fn expand(
    obj: &CalendarObject,
    href: &str,
    etag: &str,
    window: Window,
    busy_only: bool,
) -> Result<Vec<pb::Event>, IcalError> {
    Ok(expand_bounded(obj, href, etag, window, busy_only)?.events)
}

/// What [`expand_bounded`] made of a resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Expansion {
    /// The events, sorted by start.
    pub events: Vec<pb::Event>,
    /// When the series had more than [`MAX_INSTANCES`](crate::mapping::bounds::MAX_INSTANCES) occurrences in the
    /// window: the original start of the last one mirrored.
    pub truncated_after: Option<When>,
    /// The candidate instances stepped through (the work done).
    pub steps: usize,
}

/// [`expand`], saying whether the series was cut at [`MAX_INSTANCES`](crate::mapping::bounds::MAX_INSTANCES).
pub fn expand_bounded(
    obj: &CalendarObject,
    href: &str,
    etag: &str,
    window: Window,
    busy_only: bool,
) -> Result<Expansion, IcalError> {
    let zone = obj.floating_zone;
    let mut out = Vec::new();
    let Some(master) = obj.master.as_ref() else {
        // Overrides without their master (an invitation to one instance):
        // each is an instance of a series we cannot see.
        for ov in &obj.overrides {
            if overlaps(window, &ov.start, &ov.end, zone) {
                out.push(instance(ov, href, etag, ov.start, ov.end, busy_only));
            }
        }
        return Ok(Expansion {
            events: out,
            truncated_after: None,
            steps: obj.overrides.len(),
        });
    };
    if !obj.is_recurring() {
        if overlaps(window, &master.start, &master.end, zone) {
            out.push(
                EventParts {
                    vevent: master,
                    id: href.to_string(),
                    etag,
                    start: master.start,
                    end: master.end,
                    link: None,
                    busy_only,
                }
                .build(),
            );
        }
        return Ok(Expansion {
            events: out,
            truncated_after: None,
            steps: 1,
        });
    }

    let key = |w: &When| w.utc(Tz::UTC);
    let excluded: BTreeSet<DateTime<Utc>> = master.exdates.iter().map(key).collect();
    let overrides: BTreeMap<DateTime<Utc>, &VEvent> = obj
        .overrides
        .iter()
        .filter_map(|ov| ov.recurrence_id.as_ref().map(|rid| (key(rid), ov)))
        .collect();
    // THISANDFUTURE overrides by recurrence id: each rules the instances
    // after it, up to the next one.
    let ranges: BTreeMap<DateTime<Utc>, Shift<'_>> = overrides
        .iter()
        .filter(|(_, ov)| ov.this_and_future)
        .filter_map(|(k, ov)| Some((*k, Shift::of(master, ov)?)))
        .collect();
    let periods: BTreeMap<DateTime<Utc>, When> =
        master.periods.iter().map(|(s, e)| (key(s), *e)).collect();

    let found = bounded_occurrences(master, window, Reach::of(master, ranges.values()))?;
    let last = found.whens.last().map(key);
    for original in &found.whens {
        let k = key(original);
        if overrides.contains_key(&k) {
            continue;
        }
        let (v, start, end) = match ranges.range(..k).next_back() {
            Some((_, shift)) => {
                let (start, end) = shift.apply(&master.zone, original);
                (shift.by, start, end)
            }
            None => match periods.get(&k) {
                Some(end) => (master, *original, *end),
                None => (master, *original, shift_end(master, original)),
            },
        };
        if overlaps(window, &start, &end, zone) {
            out.push(instance_of(v, href, etag, *original, start, end, busy_only));
        }
    }
    for (k, ov) in &overrides {
        // Past the truncation point, overrides go with the instances they
        // replace.
        if excluded.contains(k) || (found.truncated && last.is_some_and(|l| *k > l)) {
            continue;
        }
        if overlaps(window, &ov.start, &ov.end, zone) {
            let original = ov.recurrence_id.expect("overrides have a recurrence id");
            out.push(instance_of(
                ov, href, etag, original, ov.start, ov.end, busy_only,
            ));
        }
    }
    out.sort_by_key(|e| {
        e.start
            .as_ref()
            .and_then(|s| calbridge::time::parse_event_time(s).ok())
            .map(|b| calbridge::time::boundary_utc(b, Some(zone)))
    });
    Ok(Expansion {
        events: out,
        truncated_after: found
            .truncated
            .then(|| found.whens.last().copied())
            .flatten(),
        steps: found.steps + obj.overrides.len() + obj.steps,
    })
}

/// What a THISANDFUTURE override does to the instances after it.
struct Shift<'a> {
    /// The override, whose properties the instances take.
    by: &'a VEvent,
    /// How far it moved its own start: on the series' wall clock, or in
    /// days for an all-day series.
    moved: Duration,
    /// Its length.
    length: Duration,
}

impl<'a> Shift<'a> {
    /// The shift of the range override `ov` of `master`; `None` when the
    /// override's kind of time (date or date-time) is not the series'
    /// (it then changes only its own instance).
    fn of(master: &VEvent, ov: &'a VEvent) -> Option<Shift<'a>> {
        let (moved, length) = match (ov.recurrence_id?, ov.start, ov.end) {
            (When::Date(r), When::Date(s), When::Date(e)) => (s - r, e - s),
            (When::At(r, _), When::At(s, _), When::At(e, _)) => {
                (master.zone.to_local(s) - master.zone.to_local(r), e - s)
            }
            _ => return None,
        };
        Some(Shift {
            by: ov,
            moved,
            length,
        })
    }

    /// The start and end of the instance at `original`.
    fn apply(&self, zone: &Zone, original: &When) -> (When, When) {
        match original {
            When::Date(d) => {
                let start = d.checked_add_signed(self.moved).unwrap_or(*d);
                let end = start.checked_add_signed(self.length).unwrap_or(start);
                (When::Date(start), When::Date(end))
            }
            When::At(t, _) => {
                let start = zone.to_utc(zone.to_local(*t) + self.moved);
                let end = start + self.length;
                (
                    When::At(start, zone.label_at(start)),
                    When::At(end, zone.label_at(end)),
                )
            }
        }
    }
}

/// How far before and after a window a series' originals are looked for:
/// instances that start earlier may still last into it (the series'
/// longest instance), and THISANDFUTURE shifts may move instances in from
/// either side.
#[derive(Debug, Clone, Copy, Default)]
struct Reach {
    before: Duration,
    after: Duration,
}

impl Reach {
    fn of<'a, 'b: 'a>(master: &VEvent, ranges: impl Iterator<Item = &'a Shift<'b>>) -> Reach {
        let mut reach = Reach::default();
        for (s, e) in &master.periods {
            reach.before = reach.before.max(e.utc(Tz::UTC) - s.utc(Tz::UTC));
        }
        for shift in ranges {
            // A day more for the wall clock's offset changes.
            let moved = shift.moved.abs() + Duration::days(1);
            reach.before = reach.before.max(shift.length + moved);
            reach.after = reach.after.max(moved);
        }
        reach
    }
}

fn instance(
    v: &VEvent,
    href: &str,
    etag: &str,
    start: When,
    end: When,
    busy_only: bool,
) -> pb::Event {
    let original = v.recurrence_id.unwrap_or(start);
    instance_of(v, href, etag, original, start, end, busy_only)
}

fn instance_of(
    v: &VEvent,
    href: &str,
    etag: &str,
    original: When,
    start: When,
    end: When,
    busy_only: bool,
) -> pb::Event {
    EventParts {
        vevent: v,
        id: instance_id(href, &original),
        etag,
        start,
        end,
        link: Some(pb::RecurrenceLink {
            series_event_id: href.to_string(),
            original_start: Some(original.event_time()),
        }),
        busy_only,
    }
    .build()
}

/// The end of the instance starting at `original`: the master's duration
/// added (days for all-day series, exact time otherwise).
fn shift_end(master: &VEvent, original: &When) -> When {
    match (master.start, master.end, original) {
        (When::Date(s), When::Date(e), When::Date(o)) => When::Date(*o + (e - s)),
        (When::At(s, _), When::At(e, _), When::At(o, _)) => {
            let end = *o + (e - s);
            When::At(end, master.zone.label_at(end))
        }
        (_, _, o) => *o,
    }
}

/// The original starts of a series' occurrences that may overlap `window`
/// (starting up to the series' duration before it), at most
/// [`MAX_INSTANCES`](crate::mapping::bounds::MAX_INSTANCES) of them.
pub fn occurrences(master: &VEvent, window: Window) -> Result<Vec<When>, IcalError> {
    Ok(bounded_occurrences(master, window, Reach::default())?.whens)
}

/// Occurrences, and whether there were more than [`MAX_INSTANCES`](crate::mapping::bounds::MAX_INSTANCES).
struct Found {
    whens: Vec<When>,
    truncated: bool,
    steps: usize,
}

fn bounded_occurrences(master: &VEvent, window: Window, reach: Reach) -> Result<Found, IcalError> {
    // The clock the rules step through: UTC midnights for dates, the IANA
    // zone's own for a known zone, and for a custom VTIMEZONE its
    // wall-clock time written as if UTC (each start read by the zone's
    // rules afterwards).
    let custom = match (&master.start, &master.zone) {
        (When::At(..), Zone::Custom(c)) => Some(c.clone()),
        _ => None,
    };
    let (zone, all_day) = match (&master.start, &master.zone) {
        (When::Date(_), _) => (Tz::UTC, true),
        (When::At(..), Zone::Named(z)) => (*z, false),
        (When::At(..), Zone::Custom(_)) => (Tz::UTC, false),
    };
    let clock = if all_day || custom.is_some() {
        rrule::Tz::UTC
    } else {
        rrule::Tz::Tz(zone)
    };
    let on_clock = |t: DateTime<Utc>| -> DateTime<rrule::Tz> {
        match &custom {
            Some(c) => rrule::Tz::UTC.from_utc_datetime(&c.to_local(t)),
            None => t.with_timezone(&clock),
        }
    };
    let to_rrule = |w: &When| -> DateTime<rrule::Tz> {
        match w {
            When::Date(d) => {
                rrule::Tz::UTC.from_utc_datetime(&d.and_hms_opt(0, 0, 0).expect("midnight"))
            }
            When::At(t, _) => on_clock(*t),
        }
    };
    let dt_start = to_rrule(&master.start);
    let mut set = rrule::RRuleSet::new(dt_start);
    for rule in &master.rules {
        // The rule parser is not safe on non-ASCII input (it panics on a
        // multi-byte BYDAY); RFC 5545 rules are ASCII.
        if !rule.text.is_ascii() {
            return Err(IcalError::BadRule("the rule is not ASCII".into()));
        }
        let mut parsed: rrule::RRule<rrule::Unvalidated> = rule
            .text
            .parse()
            .map_err(|e: rrule::RRuleError| IcalError::BadRule(e.to_string()))?;
        if let Some(until) = rule.until {
            let until = match (until, &custom) {
                (UntilValue::Utc(t), _) => on_clock(t),
                (UntilValue::Date(d), _) if all_day => {
                    rrule::Tz::UTC.from_utc_datetime(&d.and_hms_opt(23, 59, 59).expect("valid"))
                }
                (UntilValue::Date(d), Some(_)) => {
                    rrule::Tz::UTC.from_utc_datetime(&d.and_hms_opt(23, 59, 59).expect("valid"))
                }
                (UntilValue::Date(d), None) => on_clock(local_to_utc(
                    d.and_hms_opt(23, 59, 59).expect("valid time"),
                    zone,
                )),
                (UntilValue::Local(t), Some(_)) => rrule::Tz::UTC.from_utc_datetime(&t),
                (UntilValue::Local(t), None) => on_clock(local_to_utc(t, zone)),
            };
            parsed = parsed.until(until.with_timezone(&rrule::Tz::UTC));
        }
        let validated = parsed
            .validate(dt_start)
            .map_err(|e| IcalError::BadRule(e.to_string()))?;
        set = set.rrule(validated);
    }
    for r in &master.rdates {
        set = set.rdate(to_rrule(r));
    }
    for x in &master.exdates {
        set = set.exdate(to_rrule(x));
    }
    // RFC 5545: DTSTART is the first instance even when its rule does not
    // produce it (an EXDATE still removes it).
    set = set.rdate(dt_start);
    let duration = match (master.start, master.end) {
        (When::Date(s), When::Date(e)) => Duration::days((e - s).num_days()),
        (When::At(s, _), When::At(e, _)) => e - s,
        _ => Duration::zero(),
    };
    // Dates are compared at UTC midnight here; widen by a day so all-day
    // instances near the edges, read in the calendar's zone, are kept (and
    // a custom zone's wall clock is within a day of UTC).
    let slack = Duration::days(1) + duration.max(reach.before);
    let after = (window.start - slack).with_timezone(&Utc);
    let before = (window.end + Duration::days(1) + reach.after).with_timezone(&Utc);
    let stepped = calbridge::expansion::step(set, after, before)
        .map_err(|e| IcalError::TooCostly(e.to_string()))?;
    let mut whens: Vec<When> = stepped
        .starts
        .into_iter()
        .map(|utc| match &custom {
            Some(c) => {
                let t = c.to_utc(utc.naive_utc());
                When::At(t, c.label_at(t))
            }
            None if all_day => When::Date(utc.date_naive()),
            None => When::At(utc, zone),
        })
        .collect();
    if custom.is_some() {
        // A wall-clock time in a gap reads as the hour after it: keep the
        // starts in order, each once.
        whens.sort_by_key(|w| w.utc(Tz::UTC));
        whens.dedup_by_key(|w| w.utc(Tz::UTC));
    }
    Ok(Found {
        whens,
        truncated: stepped.truncated,
        steps: stepped.steps,
    })
}

/// A permit to parse and expand on the blocking pool: as many at once as
/// there are CPUs, so costly calendars queue behind each other (fairly,
/// first come first served) instead of taking every core.
pub(crate) async fn expansion_permit() -> tokio::sync::SemaphorePermit<'static> {
    static CPU: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    CPU.get_or_init(|| {
        tokio::sync::Semaphore::new(
            std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get),
        )
    })
    .acquire()
    .await
    .expect("the semaphore is never closed")
}

#[cfg(test)]
mod tests;
