//! Expansion of a calendar object resource into the events of a sync
//! window: a single event stays one event (id = resource href); a series is
//! expanded with the `rrule` crate (RRULE, RDATE, EXDATE, with DTSTART
//! always the first instance as RFC 5545 counts it, even when it does not
//! match its own rule) and each instance gets the id
//! `<href>#<original start>`, replaced by its RECURRENCE-ID override when
//! there is one. Server-side `expand` is never used.
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
/// (EXDATEs removed). `None` when no instance has that original start.
pub fn find_instance(obj: &CalendarObject, suffix: &str) -> Option<When> {
    let around = if let Ok(t) = NaiveDateTime::parse_from_str(suffix, "%Y%m%dT%H%M%SZ") {
        Utc.from_utc_datetime(&t)
    } else {
        let d = NaiveDate::parse_from_str(suffix, "%Y%m%d").ok()?;
        Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0)?)
    };
    if let Some(w) = obj
        .overrides
        .iter()
        .filter_map(|ov| ov.recurrence_id)
        .find(|w| w.id_suffix() == suffix)
    {
        return Some(w);
    }
    let window = Window {
        start: around - Duration::days(2),
        end: around + Duration::days(2),
    };
    occurrences(obj.master.as_ref()?, window)
        .ok()?
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

    let found = bounded_occurrences(master, window)?;
    let last = found.whens.last().map(key);
    for original in &found.whens {
        let k = key(original);
        if overrides.contains_key(&k) {
            continue;
        }
        let end = shift_end(master, original);
        if overlaps(window, original, &end, zone) {
            out.push(instance_of(
                master, href, etag, *original, *original, end, busy_only,
            ));
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
        steps: found.steps + obj.overrides.len(),
    })
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
        (When::At(s, _), When::At(e, _), When::At(o, z)) => When::At(*o + (e - s), *z),
        (_, _, o) => *o,
    }
}

/// The original starts of a series' occurrences that may overlap `window`
/// (starting up to the series' duration before it), at most
/// [`MAX_INSTANCES`](crate::mapping::bounds::MAX_INSTANCES) of them.
pub fn occurrences(master: &VEvent, window: Window) -> Result<Vec<When>, IcalError> {
    Ok(bounded_occurrences(master, window)?.whens)
}

/// Occurrences, and whether there were more than [`MAX_INSTANCES`](crate::mapping::bounds::MAX_INSTANCES).
struct Found {
    whens: Vec<When>,
    truncated: bool,
    steps: usize,
}

fn bounded_occurrences(master: &VEvent, window: Window) -> Result<Found, IcalError> {
    let (dt_start, zone, all_day) = match master.start {
        When::Date(d) => (
            rrule::Tz::UTC.from_utc_datetime(&d.and_hms_opt(0, 0, 0).expect("midnight")),
            Tz::UTC,
            true,
        ),
        When::At(t, z) => (t.with_timezone(&rrule::Tz::Tz(z)), z, false),
    };
    let to_rrule = |w: &When| -> DateTime<rrule::Tz> {
        match w {
            When::Date(d) => {
                rrule::Tz::UTC.from_utc_datetime(&d.and_hms_opt(0, 0, 0).expect("midnight"))
            }
            When::At(t, _) => t.with_timezone(&rrule::Tz::Tz(zone)),
        }
    };
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
            let utc = match until {
                UntilValue::Utc(t) => t,
                UntilValue::Date(d) => {
                    let end = d.and_hms_opt(23, 59, 59).expect("valid time");
                    if all_day {
                        Utc.from_utc_datetime(&end)
                    } else {
                        local_to_utc(end, zone)
                    }
                }
                UntilValue::Local(t) => local_to_utc(t, zone),
            };
            parsed = parsed.until(utc.with_timezone(&rrule::Tz::UTC));
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
    // instances near the edges, read in the calendar's zone, are kept.
    let slack = Duration::days(1) + duration;
    let after = (window.start - slack).with_timezone(&Utc);
    let before = (window.end + Duration::days(1)).with_timezone(&Utc);
    let stepped = calbridge::expansion::step(set, after, before)
        .map_err(|e| IcalError::TooCostly(e.to_string()))?;
    Ok(Found {
        whens: stepped
            .starts
            .into_iter()
            .map(|utc| {
                if all_day {
                    When::Date(utc.date_naive())
                } else {
                    When::At(utc, zone)
                }
            })
            .collect(),
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
