//! Expansion of a master's `recurrence[]` (RRULE, EXRULE, RDATE, EXDATE
//! lines, no DTSTART) into the original starts of its instances, in the
//! zone of the master's `start.timeZone`, with the `rrule` crate.

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

use crate::error::ApiError;
use crate::when::{local_to_utc, EventTime, When};

/// Safety stop for rules whose instances all fall before a window.
const MAX_STEPS: usize = 200_000;

/// A master's start and its recurrence lines, ready to expand.
#[derive(Debug)]
pub(crate) struct Series {
    set: rrule::RRuleSet,
    all_day: bool,
}

fn bad_rule() -> ApiError {
    ApiError::invalid("Invalid recurrence rule.")
}

impl Series {
    /// Builds the series; `zone` is the master's `start.timeZone` (or the
    /// calendar's, for all-day series).
    pub(crate) fn new(start: &EventTime, zone: Tz, lines: &[String]) -> Result<Series, ApiError> {
        let all_day = matches!(start.when, When::Date(_));
        let rzone = if all_day {
            rrule::Tz::UTC
        } else {
            rrule::Tz::Tz(zone)
        };
        let dt_start = match start.when {
            When::Date(d) => {
                rrule::Tz::UTC.from_utc_datetime(&d.and_hms_opt(0, 0, 0).expect("midnight"))
            }
            When::At(t) => t.with_timezone(&rzone),
        };
        let mut set = rrule::RRuleSet::new(dt_start);
        let mut generates = false;
        for line in lines {
            let (head, value) = line.split_once(':').ok_or_else(bad_rule)?;
            let mut params = head.split(';');
            let name = params.next().unwrap_or_default().to_ascii_uppercase();
            let mut tzid = None;
            let mut date_values = false;
            for p in params {
                match p.split_once('=') {
                    Some((k, v)) if k.eq_ignore_ascii_case("TZID") => {
                        tzid = Some(v.parse::<Tz>().map_err(|_| bad_rule())?);
                    }
                    Some((k, v)) if k.eq_ignore_ascii_case("VALUE") => {
                        match v.to_ascii_uppercase().as_str() {
                            "DATE" => date_values = true,
                            "DATE-TIME" => {}
                            _ => return Err(bad_rule()),
                        }
                    }
                    _ => return Err(bad_rule()),
                }
            }
            let value_zone = tzid.unwrap_or(zone);
            match name.as_str() {
                "RRULE" | "EXRULE" => {
                    let rule = parse_rule(value, all_day, zone)?;
                    let rule = rule.validate(dt_start).map_err(|_| bad_rule())?;
                    if name == "RRULE" {
                        generates = true;
                        set = set.rrule(rule);
                    } else {
                        set = set.exrule(rule);
                    }
                }
                "RDATE" | "EXDATE" => {
                    for v in value.split(',') {
                        let t =
                            parse_value(v.trim(), date_values, value_zone).ok_or_else(bad_rule)?;
                        let t = t.with_timezone(&rzone);
                        if name == "RDATE" {
                            generates = true;
                            set = set.rdate(t);
                        } else {
                            set = set.exdate(t);
                        }
                    }
                }
                _ => return Err(bad_rule()),
            }
        }
        if !generates {
            return Err(bad_rule());
        }
        // RFC 5545: DTSTART is the first instance even when the rule skips it.
        set = set.rdate(dt_start);
        Ok(Series { set, all_day })
    }

    /// Original starts of instances whose span (`duration` long) ends after
    /// `from` and starts before `to`, at most `limit` of them.
    pub(crate) fn occurrences(
        &self,
        duration: Duration,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        limit: usize,
        zone: Tz,
    ) -> Vec<When> {
        let mut out: Vec<When> = Vec::new();
        for (steps, d) in (&self.set).into_iter().enumerate() {
            if steps >= MAX_STEPS || out.len() >= limit {
                break;
            }
            let when = if self.all_day {
                When::Date(d.with_timezone(&Utc).date_naive())
            } else {
                When::At(d.with_timezone(&Utc))
            };
            let start = when.instant(zone);
            if to.is_some_and(|to| start >= to) {
                break;
            }
            if from.is_some_and(|from| {
                start + duration <= from && !(duration.is_zero() && start == from)
            }) {
                continue;
            }
            if out.last() != Some(&when) {
                out.push(when);
            }
        }
        out
    }

    /// Whether `original` is one of the series' instances.
    pub(crate) fn contains(&self, original: When, zone: Tz) -> bool {
        let at = original.instant(zone);
        self.occurrences(
            Duration::zero(),
            Some(at),
            Some(at + Duration::seconds(1)),
            1,
            zone,
        )
        .first()
            == Some(&original)
    }
}

/// An RRULE/EXRULE value with UNTIL handled here (dates and floating times
/// are read in the series' zone; the crate wants UTC).
fn parse_rule(
    value: &str,
    all_day: bool,
    zone: Tz,
) -> Result<rrule::RRule<rrule::Unvalidated>, ApiError> {
    let mut until = None;
    let mut rest = Vec::new();
    for part in value.split(';').filter(|p| !p.is_empty()) {
        match part.split_once('=') {
            Some((k, v)) if k.eq_ignore_ascii_case("UNTIL") => until = Some(v.to_string()),
            _ => rest.push(part),
        }
    }
    let mut rule: rrule::RRule<rrule::Unvalidated> =
        rest.join(";").parse().map_err(|_| bad_rule())?;
    if let Some(u) = until {
        let utc = if u.len() == 8 {
            let d = NaiveDate::parse_from_str(&u, "%Y%m%d").map_err(|_| bad_rule())?;
            let end = d.and_hms_opt(23, 59, 59).expect("valid time");
            if all_day {
                Utc.from_utc_datetime(&end)
            } else {
                local_to_utc(end, zone)
            }
        } else {
            parse_value(&u, false, if all_day { Tz::UTC } else { zone }).ok_or_else(bad_rule)?
        };
        rule = rule.until(utc.with_timezone(&rrule::Tz::UTC));
    }
    Ok(rule)
}

/// One RDATE/EXDATE/UNTIL value: `YYYYMMDD`, `YYYYMMDDTHHMMSS` (in
/// `zone`) or `YYYYMMDDTHHMMSSZ`.
fn parse_value(v: &str, date: bool, zone: Tz) -> Option<DateTime<Utc>> {
    if date || v.len() == 8 {
        let d = NaiveDate::parse_from_str(v, "%Y%m%d").ok()?;
        return Some(Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0)?));
    }
    if let Some(t) = v.strip_suffix('Z') {
        let n = NaiveDateTime::parse_from_str(t, "%Y%m%dT%H%M%S").ok()?;
        return Some(Utc.from_utc_datetime(&n));
    }
    let n = NaiveDateTime::parse_from_str(v, "%Y%m%dT%H%M%S").ok()?;
    Some(local_to_utc(n, zone))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn berlin_9am() -> EventTime {
        EventTime::parse(
            &json!({"dateTime": "2024-03-25T09:00:00+01:00", "timeZone": "Europe/Berlin"}),
            "start",
        )
        .unwrap()
    }

    #[test]
    fn weekly_series_keeps_wall_time_across_dst() {
        let s = Series::new(
            &berlin_9am(),
            chrono_tz::Europe::Berlin,
            &["RRULE:FREQ=DAILY;COUNT=3".into()],
        )
        .unwrap();
        let all = s.occurrences(Duration::hours(1), None, None, 10, Tz::UTC);
        let stamps: Vec<String> = all.iter().map(|w| w.stamp()).collect();
        // 2024-03-31 is the switch to summer time; this is before it.
        assert_eq!(
            stamps,
            ["20240325T080000Z", "20240326T080000Z", "20240327T080000Z"]
        );
        let s = Series::new(
            &berlin_9am(),
            chrono_tz::Europe::Berlin,
            &["RRULE:FREQ=WEEKLY;COUNT=2".into()],
        )
        .unwrap();
        let stamps: Vec<String> = s
            .occurrences(Duration::hours(1), None, None, 10, Tz::UTC)
            .iter()
            .map(|w| w.stamp())
            .collect();
        assert_eq!(stamps, ["20240325T080000Z", "20240401T070000Z"]);
    }

    #[test]
    fn exdate_and_until_are_honoured() {
        let s = Series::new(
            &berlin_9am(),
            chrono_tz::Europe::Berlin,
            &[
                "RRULE:FREQ=DAILY;UNTIL=20240328T235959Z".into(),
                "EXDATE;TZID=Europe/Berlin:20240326T090000".into(),
            ],
        )
        .unwrap();
        let n = s
            .occurrences(Duration::hours(1), None, None, 100, Tz::UTC)
            .len();
        assert_eq!(n, 3);
    }

    #[test]
    fn all_day_series_expand_to_dates_and_windows_cut() {
        let start = EventTime::parse(&json!({"date": "2024-01-01"}), "start").unwrap();
        let s = Series::new(&start, Tz::UTC, &["RRULE:FREQ=DAILY".into()]).unwrap();
        let from = Utc.with_ymd_and_hms(2024, 1, 10, 12, 0, 0).unwrap();
        let to = Utc.with_ymd_and_hms(2024, 1, 12, 0, 0, 0).unwrap();
        let got = s.occurrences(Duration::days(1), Some(from), Some(to), 100, Tz::UTC);
        assert_eq!(
            got.iter().map(|w| w.stamp()).collect::<Vec<_>>(),
            ["20240110", "20240111"]
        );
        assert!(s.contains(When::from_stamp("20240105").unwrap(), Tz::UTC));
    }

    #[test]
    fn rules_that_are_not_rules_are_refused() {
        let start = berlin_9am();
        assert!(Series::new(&start, Tz::UTC, &["DTSTART:20240101T000000Z".into()]).is_err());
        assert!(Series::new(&start, Tz::UTC, &["RRULE:FREQ=SOMETIMES".into()]).is_err());
        assert!(Series::new(&start, Tz::UTC, &["EXDATE:20240101T000000Z".into()]).is_err());
    }
}
