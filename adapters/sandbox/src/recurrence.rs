//! Recurrence rules of series masters: validating an event's RRULE, RDATE and
//! EXDATE lines, listing a series' occurrences in a time range with the
//! `rrule` crate, and naming instances (`<series id>_<original start>`).
//!
//! A series' DTSTART is its `start`. Timed series recur in the zone of their
//! start (UTC when none), so a weekly 09:00 Europe/London meeting stays at
//! 09:00 local across daylight-saving changes; all-day series recur on dates.
//! Date-times in RDATE/EXDATE lines without a zone are read in the series'
//! zone (never the machine's), and an UNTIL without `Z` is converted to UTC,
//! as RFC 5545 asks.
//!
//! Expansion is bounded, since it runs under the provider's lock that every
//! tenant shares: it looks at no more than [`MAX_CANDIDATES`] occurrences
//! from the series' start (a minutely series begun years ago costs no more
//! than that) and returns at most [`MAX_INSTANCES`] of them. Occurrences
//! beyond either bound are not shown: not listed, synced, free/busy or
//! writable as instances.

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

use calbridge::pb::Event;
use calbridge::time::{parse_event_time, parse_zone, Boundary};

/// The most occurrences one expansion returns (the earliest in its range).
pub const MAX_INSTANCES: usize = 1000;
/// The most occurrences one expansion looks at, counted from the series'
/// start: the work bound of one expansion.
pub const MAX_CANDIDATES: usize = 200_000;

/// How a series' rule is anchored.
struct Anchor {
    dt_start: DateTime<rrule::Tz>,
    zone: Tz,
    all_day: bool,
}

fn anchor(master: &Event) -> Result<Anchor, String> {
    let start = master
        .start
        .as_ref()
        .ok_or_else(|| "the series has no start".to_string())?;
    match parse_event_time(start).map_err(|e| e.to_string())? {
        Boundary::Instant(t) => {
            let zone = if start.time_zone.is_empty() {
                Tz::UTC
            } else {
                parse_zone(&start.time_zone).map_err(|e| e.to_string())?
            };
            Ok(Anchor {
                dt_start: t.with_timezone(&rrule::Tz::Tz(zone)),
                zone,
                all_day: false,
            })
        }
        Boundary::Date(d) => Ok(Anchor {
            dt_start: rrule::Tz::UTC.from_utc_datetime(&midnight(d)),
            zone: Tz::UTC,
            all_day: true,
        }),
    }
}

fn midnight(d: NaiveDate) -> NaiveDateTime {
    d.and_hms_opt(0, 0, 0).expect("midnight exists")
}

/// Rewrites one recurrence line so that the `rrule` crate reads it in the
/// series' zone; `None` for lines to drop (DTSTART: the start is the
/// event's).
fn normalize_line(line: &str, anchor: &Anchor) -> Option<String> {
    let line = line.trim();
    if line.is_empty() {
        return None;
    }
    let (head, value) = line.split_once(':')?;
    let name = head.split(';').next().unwrap_or("").to_ascii_uppercase();
    match name.as_str() {
        "DTSTART" => None,
        "RDATE" | "EXDATE" => {
            let has_zone = head
                .split(';')
                .any(|p| p.to_ascii_uppercase().starts_with("TZID="));
            let floating = value.split(',').any(|v| !v.ends_with('Z'));
            if has_zone || !floating {
                Some(line.to_string())
            } else {
                Some(format!("{head};TZID={}:{value}", anchor.zone.name()))
            }
        }
        "RRULE" | "EXRULE" => {
            let parts: Vec<String> = value
                .split(';')
                .map(|p| match p.split_once('=') {
                    Some((k, v)) if k.eq_ignore_ascii_case("UNTIL") && !v.ends_with('Z') => {
                        format!("UNTIL={}", until_utc(v, anchor))
                    }
                    _ => p.to_string(),
                })
                .collect();
            Some(format!("{head}:{}", parts.join(";")))
        }
        _ => Some(line.to_string()),
    }
}

/// An UNTIL value without `Z` as a UTC date-time: a date includes its whole
/// day, a floating date-time is read in the series' zone.
fn until_utc(v: &str, anchor: &Anchor) -> String {
    if let Ok(d) = NaiveDate::parse_from_str(v, "%Y%m%d") {
        let end = d.and_hms_opt(23, 59, 59).expect("valid time");
        let utc = if anchor.all_day {
            Utc.from_utc_datetime(&end)
        } else {
            anchor
                .zone
                .from_local_datetime(&end)
                .latest()
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or_else(|| Utc.from_utc_datetime(&end))
        };
        return utc.format("%Y%m%dT%H%M%SZ").to_string();
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(v, "%Y%m%dT%H%M%S") {
        let utc = anchor
            .zone
            .from_local_datetime(&t)
            .earliest()
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(|| Utc.from_utc_datetime(&t));
        return utc.format("%Y%m%dT%H%M%SZ").to_string();
    }
    // Let the rrule parser name the bad value.
    v.to_string()
}

fn rule_set(master: &Event, anchor: &Anchor) -> Result<rrule::RRuleSet, String> {
    let lines: Vec<String> = master
        .recurrence
        .iter()
        .filter_map(|l| normalize_line(l, anchor))
        .collect();
    let set = rrule::RRuleSet::new(anchor.dt_start);
    let set = if lines.is_empty() {
        set
    } else {
        set.set_from_string(&lines.join("\n"))
            .map_err(|e| e.to_string())?
    };
    // RFC 5545: DTSTART is always the first instance, even when the rule
    // does not produce it (EXDATE still removes it).
    Ok(set.rdate(anchor.dt_start))
}

/// Checks that a series master's recurrence lines parse and fit its start.
pub fn check(master: &Event) -> Result<(), String> {
    let anchor = anchor(master)?;
    rule_set(master, &anchor).map(|_| ())
}

/// The original starts of the series' instances whose start lies in
/// `[from, to]` (for all-day series, whose date's UTC midnight does), sorted;
/// at most [`MAX_INSTANCES`], among the first [`MAX_CANDIDATES`]
/// occurrences of the series.
pub fn occurrences(
    master: &Event,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<Boundary>, String> {
    let anchor = anchor(master)?;
    // `limit` keeps the crate's own guard against rules that never match.
    let set = rule_set(master, &anchor)?.limit();
    let (from, to) = (
        from.with_timezone(&rrule::Tz::UTC),
        to.with_timezone(&rrule::Tz::UTC),
    );
    let mut starts: Vec<DateTime<Utc>> = Vec::new();
    for t in set.into_iter().take(MAX_CANDIDATES) {
        if t > to {
            break;
        }
        if t >= from {
            starts.push(t.with_timezone(&Utc));
            if starts.len() == MAX_INSTANCES {
                break;
            }
        }
    }
    starts.sort();
    starts.dedup();
    Ok(starts
        .into_iter()
        .map(|t| {
            if anchor.all_day {
                Boundary::Date(t.date_naive())
            } else {
                Boundary::Instant(t)
            }
        })
        .collect())
}

/// True when `original` is one of the series' original starts.
pub fn is_occurrence(master: &Event, original: Boundary) -> bool {
    let at = match original {
        Boundary::Instant(t) => t,
        Boundary::Date(d) => Utc.from_utc_datetime(&midnight(d)),
    };
    occurrences(master, at, at)
        .map(|o| o.contains(&original))
        .unwrap_or(false)
}

/// The suffix naming an instance by its original start: `%Y%m%dT%H%M%SZ`
/// (UTC) for timed series, `%Y%m%d` for all-day ones.
pub fn instance_suffix(original: Boundary) -> String {
    match original {
        Boundary::Instant(t) => t.format("%Y%m%dT%H%M%SZ").to_string(),
        Boundary::Date(d) => d.format("%Y%m%d").to_string(),
    }
}

/// The provider id of a series' instance.
pub fn instance_id(series_id: &str, original: Boundary) -> String {
    format!("{series_id}_{}", instance_suffix(original))
}

/// Splits an instance id into its series id and original start.
pub fn parse_instance_id(id: &str) -> Option<(&str, Boundary)> {
    let (series, suffix) = id.rsplit_once('_')?;
    if series.is_empty() {
        return None;
    }
    let original = if suffix.len() == 16 {
        let t = NaiveDateTime::parse_from_str(suffix, "%Y%m%dT%H%M%SZ").ok()?;
        Boundary::Instant(Utc.from_utc_datetime(&t))
    } else if suffix.len() == 8 {
        Boundary::Date(NaiveDate::parse_from_str(suffix, "%Y%m%d").ok()?)
    } else {
        return None;
    };
    Some((series, original))
}

/// How long each instance of a series lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Span {
    /// A timed series: the time between start and end.
    Timed(Duration),
    /// An all-day series: the number of days.
    Days(i64),
}

/// The span of an event (start to end), `None` when its times do not parse.
pub fn span_of(e: &Event) -> Option<Span> {
    let start = parse_event_time(e.start.as_ref()?).ok()?;
    let end = parse_event_time(e.end.as_ref()?).ok()?;
    match (start, end) {
        (Boundary::Instant(a), Boundary::Instant(b)) => Some(Span::Timed(b - a)),
        (Boundary::Date(a), Boundary::Date(b)) => Some(Span::Days((b - a).num_days())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use calbridge::time::{date, instant};
    use chrono::Timelike;

    fn weekly(recurrence: &[&str]) -> Event {
        Event {
            provider_event_id: "s".into(),
            start: Some(instant(
                Utc.with_ymd_and_hms(2026, 1, 5, 9, 0, 0).unwrap(),
                "Europe/London",
            )),
            end: Some(instant(
                Utc.with_ymd_and_hms(2026, 1, 5, 10, 0, 0).unwrap(),
                "Europe/London",
            )),
            recurrence: recurrence.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_weekly_series_keeps_its_local_time_across_daylight_saving() {
        let e = weekly(&["RRULE:FREQ=WEEKLY;COUNT=20"]);
        let all = occurrences(
            &e,
            Utc.with_ymd_and_hms(2026, 4, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(2026, 4, 10, 0, 0, 0).unwrap(),
        )
        .unwrap();
        // 09:00 BST is 08:00 UTC.
        assert_eq!(
            all,
            vec![Boundary::Instant(
                Utc.with_ymd_and_hms(2026, 4, 6, 8, 0, 0).unwrap()
            )]
        );
    }

    #[test]
    fn floating_exdates_are_read_in_the_series_zone() {
        let e = weekly(&["RRULE:FREQ=WEEKLY;COUNT=3", "EXDATE:20260112T090000"]);
        let all = occurrences(
            &e,
            Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap(),
        )
        .unwrap();
        assert_eq!(all.len(), 2);
    }

    #[test]
    fn all_day_series_recur_on_dates_with_a_date_until() {
        let e = Event {
            start: Some(date(NaiveDate::from_ymd_opt(2026, 3, 2).unwrap())),
            end: Some(date(NaiveDate::from_ymd_opt(2026, 3, 3).unwrap())),
            recurrence: vec![
                "RRULE:FREQ=DAILY;UNTIL=20260304".into(),
                "EXDATE;VALUE=DATE:20260303".into(),
            ],
            ..Default::default()
        };
        let all = occurrences(
            &e,
            Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(2026, 3, 31, 0, 0, 0).unwrap(),
        )
        .unwrap();
        let d = |day| Boundary::Date(NaiveDate::from_ymd_opt(2026, 3, day).unwrap());
        assert_eq!(all, vec![d(2), d(4)]);
    }

    #[test]
    fn expanding_a_minutely_series_begun_long_ago_is_bounded() {
        let start = Utc::now() - Duration::days(3 * 365);
        let mut e = weekly(&["RRULE:FREQ=SECONDLY"]);
        e.start = Some(instant(start, "Europe/London"));
        e.end = Some(instant(start + Duration::seconds(1), "Europe/London"));
        let window = (Utc::now(), Utc::now() + Duration::days(365));
        let started = std::time::Instant::now();
        // Its occurrences in the window lie beyond the first MAX_CANDIDATES:
        // none is shown.
        assert_eq!(occurrences(&e, window.0, window.1).unwrap(), vec![]);
        assert!(!is_occurrence(
            &e,
            Boundary::Instant(Utc::now().with_nanosecond(0).unwrap() + Duration::days(30))
        ));
        e.recurrence = vec!["RRULE:FREQ=MINUTELY".into()];
        e.start = Some(instant(window.0, "Europe/London"));
        let shown = occurrences(&e, window.0, window.1).unwrap();
        assert_eq!(shown.len(), MAX_INSTANCES);
        // Unbounded, these took tens of seconds (unoptimised) under the
        // provider's lock; bounded, a fraction of a second.
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn a_bad_rule_is_refused() {
        assert!(check(&weekly(&["RRULE:FREQ=SOMETIMES"])).is_err());
    }

    #[test]
    fn instance_ids_round_trip() {
        let t = Boundary::Instant(Utc.with_ymd_and_hms(2026, 1, 12, 9, 0, 0).unwrap());
        let id = instance_id("cbabc_1", t);
        assert_eq!(id, "cbabc_1_20260112T090000Z");
        assert_eq!(parse_instance_id(&id), Some(("cbabc_1", t)));
        let d = Boundary::Date(NaiveDate::from_ymd_opt(2026, 1, 1).unwrap());
        assert_eq!(parse_instance_id(&instance_id("h", d)), Some(("h", d)));
        assert_eq!(parse_instance_id("plain"), None);
    }
}
