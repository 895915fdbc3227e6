//! Recurrence rules of a Google series (`RRULE`, `RDATE`, `EXDATE` lines)
//! read against the series' start with the `rrule` crate: the original
//! starts of a series in a span of time, and the check a written series
//! must pass. Knows nothing of Google's payloads beyond [`When`].
//!
//! A timed series recurs in its start's zone (the calendar's zone, then
//! UTC, when absent); an all-day series recurs on dates. RDATE/EXDATE values
//! without a zone are read in the series' zone, an UNTIL without `Z` is
//! converted to UTC, and the start itself is always the first instance
//! (RFC 5545), unless an EXDATE removes it.

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

use calbridge::pb;
use calbridge::time::{parse_event_time, parse_zone, Boundary};

use crate::times::{MapError, When};

/// How a series' rule is anchored.
#[derive(Debug, Clone, Copy)]
struct Anchor {
    dt_start: DateTime<rrule::Tz>,
    zone: Tz,
    all_day: bool,
}

fn anchor(start: &When, default_zone: Option<Tz>) -> Anchor {
    match start {
        When::Date(d) => Anchor {
            dt_start: rrule::Tz::UTC.from_utc_datetime(&midnight(*d)),
            zone: Tz::UTC,
            all_day: true,
        },
        When::At(t, z) => {
            let zone = z.or(default_zone).unwrap_or(Tz::UTC);
            Anchor {
                dt_start: t.with_timezone(&rrule::Tz::Tz(zone)),
                zone,
                all_day: false,
            }
        }
    }
}

fn midnight(d: NaiveDate) -> NaiveDateTime {
    d.and_hms_opt(0, 0, 0).expect("midnight exists")
}

fn bad(m: impl Into<String>) -> MapError {
    MapError::BadRule(m.into())
}

/// A local date-time in `zone`; the earlier reading in a repeated hour,
/// the first instant after a skipped one.
fn local_in(zone: Tz, t: NaiveDateTime) -> DateTime<Utc> {
    zone.from_local_datetime(&t)
        .earliest()
        .or_else(|| {
            zone.from_local_datetime(&(t + Duration::hours(1)))
                .earliest()
        })
        .map(|x| x.with_timezone(&Utc))
        .unwrap_or_else(|| Utc.from_utc_datetime(&t))
}

/// An UNTIL value as UTC: a date includes its whole day; a floating
/// date-time is read in the series' zone.
fn until_utc(v: &str, a: &Anchor) -> Result<DateTime<Utc>, MapError> {
    if let Some(z) = v.strip_suffix(['Z', 'z']) {
        let t = NaiveDateTime::parse_from_str(z, "%Y%m%dT%H%M%S")
            .map_err(|_| bad("UNTIL is not a date or date-time"))?;
        return Ok(Utc.from_utc_datetime(&t));
    }
    if let Ok(d) = NaiveDate::parse_from_str(v, "%Y%m%d") {
        let end = d.and_hms_opt(23, 59, 59).expect("valid time");
        return Ok(if a.all_day {
            Utc.from_utc_datetime(&end)
        } else {
            local_in(a.zone, end)
        });
    }
    let t = NaiveDateTime::parse_from_str(v, "%Y%m%dT%H%M%S")
        .map_err(|_| bad("UNTIL is not a date or date-time"))?;
    Ok(local_in(a.zone, t))
}

/// Parses an RRULE value; `None` when its UNTIL lies before the start (the
/// rule then adds nothing).
fn parse_rule(value: &str, a: &Anchor) -> Result<Option<rrule::RRule>, MapError> {
    // The rule parser is not safe on non-ASCII input (it panics on a
    // multi-byte BYDAY); RFC 5545 rules are ASCII.
    if !value.is_ascii() {
        return Err(bad("the rule is not ASCII"));
    }
    let mut until = None;
    let mut parts = Vec::new();
    for p in value.split(';').filter(|p| !p.is_empty()) {
        match p.split_once('=') {
            Some((k, v)) if k.eq_ignore_ascii_case("UNTIL") => until = Some(until_utc(v, a)?),
            _ => parts.push(p),
        }
    }
    let mut rule: rrule::RRule<rrule::Unvalidated> = parts
        .join(";")
        .parse()
        .map_err(|e: rrule::RRuleError| bad(e.to_string()))?;
    if let Some(u) = until {
        if u < a.dt_start.with_timezone(&Utc) {
            return Ok(None);
        }
        rule = rule.until(u.with_timezone(&rrule::Tz::UTC));
    }
    rule.validate(a.dt_start)
        .map(Some)
        .map_err(|e| bad(e.to_string()))
}

/// Parses the values of an RDATE/EXDATE line: `Z` times are UTC, floating
/// ones are read in the line's TZID (else the series' zone), dates are
/// taken at the series' time of day (midnight UTC for all-day series).
fn parse_dates(
    params: &[&str],
    value: &str,
    a: &Anchor,
) -> Result<Vec<DateTime<rrule::Tz>>, MapError> {
    let mut zone = a.zone;
    for p in params {
        if let Some((k, v)) = p.split_once('=') {
            if k.eq_ignore_ascii_case("TZID") {
                zone = parse_zone(v.trim_matches('"')).map_err(|e| bad(e.to_string()))?;
            } else if k.eq_ignore_ascii_case("VALUE") && v.eq_ignore_ascii_case("PERIOD") {
                return Err(bad("RDATE periods are not supported"));
            }
        }
    }
    let mut out = Vec::new();
    for v in value.split(',').map(str::trim).filter(|v| !v.is_empty()) {
        let utc = if let Some(z) = v.strip_suffix(['Z', 'z']) {
            let t = NaiveDateTime::parse_from_str(z, "%Y%m%dT%H%M%S")
                .map_err(|_| bad("an RDATE/EXDATE value is not a date-time"))?;
            Utc.from_utc_datetime(&t)
        } else if let Ok(d) = NaiveDate::parse_from_str(v, "%Y%m%d") {
            if a.all_day {
                Utc.from_utc_datetime(&midnight(d))
            } else {
                let time = a.dt_start.with_timezone(&a.zone).time();
                local_in(a.zone, d.and_time(time))
            }
        } else {
            let t = NaiveDateTime::parse_from_str(v, "%Y%m%dT%H%M%S")
                .map_err(|_| bad("an RDATE/EXDATE value is not a date-time"))?;
            if a.all_day {
                Utc.from_utc_datetime(&midnight(t.date()))
            } else {
                local_in(zone, t)
            }
        };
        out.push(utc.with_timezone(&rrule::Tz::UTC));
    }
    Ok(out)
}

fn rule_set(a: &Anchor, lines: &[String]) -> Result<rrule::RRuleSet, MapError> {
    let mut set = rrule::RRuleSet::new(a.dt_start);
    for line in lines.iter().map(|l| l.trim()).filter(|l| !l.is_empty()) {
        let (head, value) = line
            .split_once(':')
            .ok_or_else(|| bad("a recurrence line has no value"))?;
        let mut head = head.split(';');
        let name = head.next().unwrap_or("").to_ascii_uppercase();
        let params: Vec<&str> = head.collect();
        match name.as_str() {
            "RRULE" => {
                if let Some(rule) = parse_rule(value, a)? {
                    set = set.rrule(rule);
                }
            }
            "RDATE" => {
                for t in parse_dates(&params, value, a)? {
                    set = set.rdate(t);
                }
            }
            "EXDATE" => {
                for t in parse_dates(&params, value, a)? {
                    set = set.exdate(t);
                }
            }
            // EXRULE is deprecated (RFC 5545) and not produced by Google;
            // the start and end come from the event itself.
            "EXRULE" | "DTSTART" | "DTEND" => {}
            _ => return Err(bad(format!("unknown recurrence line {name:.16}"))),
        }
    }
    Ok(set.rdate(a.dt_start))
}

/// The original starts of the series anchored at `start` whose start lies
/// in `[from, to]`, sorted and without duplicates, at most
/// [`calbridge::expansion::MAX_INSTANCES`] (the earliest), and whether
/// there were more.
pub fn occurrences(
    start: &When,
    default_zone: Option<Tz>,
    lines: &[String],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<(Vec<When>, bool), MapError> {
    let a = anchor(start, default_zone);
    let stepped = calbridge::expansion::step(rule_set(&a, lines)?, from, to)
        .map_err(|e| MapError::BadRule(e.to_string()))?;
    let whens = stepped
        .starts
        .into_iter()
        .map(|t| {
            if a.all_day {
                When::Date(t.date_naive())
            } else {
                When::At(t, Some(a.zone))
            }
        })
        .collect();
    Ok((whens, stepped.truncated))
}

/// Checks that a series' recurrence lines parse against its start (for
/// writes).
pub fn check(e: &pb::Event) -> Result<(), MapError> {
    let start = e.start.as_ref().ok_or(MapError::MissingTime("start"))?;
    let when = match parse_event_time(start).map_err(|_| MapError::BadTime("start"))? {
        Boundary::Instant(t) => When::At(
            t,
            if start.time_zone.is_empty() {
                None
            } else {
                Some(parse_zone(&start.time_zone).map_err(|_| MapError::BadTime("start"))?)
            },
        ),
        Boundary::Date(d) => When::Date(d),
    };
    rule_set(&anchor(&when, None), &e.recurrence).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn writes_are_checked_against_the_events_start() {
        let mut e = pb::Event {
            start: Some(calbridge::time::instant(
                at("2026-03-02T09:00:00Z"),
                "Europe/London",
            )),
            end: Some(calbridge::time::instant(
                at("2026-03-02T10:00:00Z"),
                "Europe/London",
            )),
            recurrence: vec!["RRULE:FREQ=WEEKLY;UNTIL=20260401".into()],
            ..Default::default()
        };
        assert!(check(&e).is_ok());
        e.recurrence = vec!["RRULE:FREQ=WEEKLY;BYDAY=XX".into()];
        assert!(check(&e).is_err());
    }
}
