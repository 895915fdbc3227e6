//! Expansion of Graph's `patternedRecurrence` into occurrence start dates:
//! `daily`, `weekly` (with `daysOfWeek`), `absoluteMonthly`,
//! `absoluteYearly`, `relativeMonthly` and `relativeYearly` patterns (the
//! relative ones with one or more weekdays taken as "the nth of each
//! weekday listed"); `endDate`, `noEnd` and `numbered` ranges.

use chrono::{Datelike, NaiveDate, Weekday};
use serde_json::Value;

/// Most occurrences a series expands to.
pub(crate) const MAX_OCCURRENCES: usize = 1000;
/// Furthest an unbounded series expands, in days from its start.
const HORIZON_DAYS: i64 = 5 * 366;

fn weekday(name: &str) -> Option<Weekday> {
    Some(match name {
        "sunday" => Weekday::Sun,
        "monday" => Weekday::Mon,
        "tuesday" => Weekday::Tue,
        "wednesday" => Weekday::Wed,
        "thursday" => Weekday::Thu,
        "friday" => Weekday::Fri,
        "saturday" => Weekday::Sat,
        _ => return None,
    })
}

/// Checks a `patternedRecurrence`; `Err` says what is wrong.
pub(crate) fn check(r: &Value) -> Result<(), String> {
    dates(r, None).map(|_| ())
}

/// The occurrence dates of `r` (the series' local start dates), at most
/// [`MAX_OCCURRENCES`], or until `until` when given.
pub(crate) fn dates(r: &Value, until: Option<NaiveDate>) -> Result<Vec<NaiveDate>, String> {
    let pattern = &r["pattern"];
    let range = &r["range"];
    let kind = pattern["type"].as_str().ok_or("pattern.type is required")?;
    let interval = pattern["interval"].as_u64().unwrap_or(1).max(1);
    let start = range["startDate"]
        .as_str()
        .and_then(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
        .ok_or("range.startDate must be a date")?;
    let (end, count) = match range["type"].as_str() {
        Some("endDate") => (
            Some(
                range["endDate"]
                    .as_str()
                    .and_then(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
                    .ok_or("range.endDate must be a date")?,
            ),
            None,
        ),
        Some("numbered") => (
            None,
            Some(
                range["numberOfOccurrences"]
                    .as_u64()
                    .filter(|n| *n > 0)
                    .ok_or("range.numberOfOccurrences must be positive")? as usize,
            ),
        ),
        Some("noEnd") => (None, None),
        _ => return Err("range.type must be endDate, noEnd or numbered".into()),
    };
    let days: Vec<Weekday> = pattern["daysOfWeek"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d.as_str().and_then(weekday))
                .collect()
        })
        .unwrap_or_default();
    let matches: Box<dyn Fn(NaiveDate) -> bool> = match kind {
        "daily" => Box::new(move |d| ((d - start).num_days() as u64).is_multiple_of(interval)),
        "weekly" => {
            if days.is_empty() {
                return Err("pattern.daysOfWeek is required for weekly".into());
            }
            let week0 =
                start - chrono::Duration::days(start.weekday().num_days_from_sunday() as i64);
            Box::new(move |d| {
                let weeks = (d - week0).num_days() / 7;
                (weeks as u64).is_multiple_of(interval) && days.contains(&d.weekday())
            })
        }
        "absoluteMonthly" => {
            let dom = pattern["dayOfMonth"]
                .as_u64()
                .filter(|d| (1..=31).contains(d))
                .ok_or("pattern.dayOfMonth must be 1..31")? as u32;
            Box::new(move |d| {
                let months =
                    (d.year() - start.year()) as i64 * 12 + d.month() as i64 - start.month() as i64;
                d.day() == dom && (months as u64).is_multiple_of(interval)
            })
        }
        "absoluteYearly" => {
            let dom = pattern["dayOfMonth"]
                .as_u64()
                .filter(|d| (1..=31).contains(d))
                .ok_or("pattern.dayOfMonth must be 1..31")? as u32;
            let month = pattern["month"]
                .as_u64()
                .filter(|m| (1..=12).contains(m))
                .ok_or("pattern.month must be 1..12")? as u32;
            Box::new(move |d| {
                d.day() == dom
                    && d.month() == month
                    && ((d.year() - start.year()) as u64).is_multiple_of(interval)
            })
        }
        "relativeMonthly" | "relativeYearly" => {
            let index = match pattern["index"].as_str().unwrap_or("first") {
                "first" => 1,
                "second" => 2,
                "third" => 3,
                "fourth" => 4,
                "last" => -1,
                _ => return Err("pattern.index is unknown".into()),
            };
            if days.is_empty() {
                return Err("pattern.daysOfWeek is required".into());
            }
            let month = if kind == "relativeYearly" {
                Some(
                    pattern["month"]
                        .as_u64()
                        .filter(|m| (1..=12).contains(m))
                        .ok_or("pattern.month must be 1..12")? as u32,
                )
            } else {
                None
            };
            Box::new(move |d| {
                let months =
                    (d.year() - start.year()) as i64 * 12 + d.month() as i64 - start.month() as i64;
                let step_ok = match month {
                    Some(m) => {
                        d.month() == m
                            && ((d.year() - start.year()) as u64).is_multiple_of(interval)
                    }
                    None => (months as u64).is_multiple_of(interval),
                };
                if !step_ok || !days.contains(&d.weekday()) {
                    return false;
                }
                // The nth (or last) of the listed weekdays in d's month.
                let nth = (d.day() as i32 - 1) / 7 + 1;
                let last = d + chrono::Duration::days(7);
                if index == -1 {
                    last.month() != d.month()
                } else {
                    nth == index
                }
            })
        }
        _ => return Err("pattern.type is unknown".into()),
    };
    let mut out = Vec::new();
    let last = start + chrono::Duration::days(HORIZON_DAYS);
    let mut d = start;
    while d <= last && out.len() < count.unwrap_or(MAX_OCCURRENCES).min(MAX_OCCURRENCES) {
        if end.is_some_and(|e| d > e) || until.is_some_and(|u| d > u) {
            break;
        }
        if matches(d) {
            out.push(d);
        }
        d = d.succ_opt().ok_or("date overflow")?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn daily_numbered_and_weekly_end_dated_series_expand() {
        let daily = json!({"pattern": {"type": "daily", "interval": 1}, "range": {"type": "numbered", "startDate": "2026-03-01", "numberOfOccurrences": 3}});
        assert_eq!(dates(&daily, None).unwrap().len(), 3);
        let weekly = json!({"pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["monday", "wednesday"]}, "range": {"type": "endDate", "startDate": "2026-03-02", "endDate": "2026-03-15"}});
        let d = dates(&weekly, None).unwrap();
        assert_eq!(d.len(), 4, "{d:?}");
        let last_friday = json!({"pattern": {"type": "relativeMonthly", "interval": 1, "daysOfWeek": ["friday"], "index": "last"}, "range": {"type": "numbered", "startDate": "2026-03-01", "numberOfOccurrences": 2}});
        let d = dates(&last_friday, None).unwrap();
        assert_eq!(
            d,
            vec![
                NaiveDate::from_ymd_opt(2026, 3, 27).unwrap(),
                NaiveDate::from_ymd_opt(2026, 4, 24).unwrap()
            ]
        );
        assert!(check(&json!({"pattern": {"type": "relativeMonthly"}, "range": {"type": "noEnd", "startDate": "2026-03-01"}})).is_err());
    }
}
