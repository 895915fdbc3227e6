//! Recurrence rules between RFC 5545 and Graph's `patternedRecurrence`.
//! Graph expresses a subset of RRULE: one rule of frequency DAILY, WEEKLY
//! (with BYDAY), MONTHLY (BYMONTHDAY, or one BYDAY with an ordinal) or
//! YEARLY (BYMONTH with BYMONTHDAY or an ordinal BYDAY), an INTERVAL, and
//! COUNT or UNTIL; no RDATE or EXDATE (deleted occurrences are deleted one
//! by one), no BYSETPOS lists, no hourly or finer rules. Anything else is
//! refused as INVALID_ARGUMENT, never approximated.

use chrono::{Datelike, NaiveDate};
use chrono_tz::Tz;
use serde_json::{json, Value};

use calbridge::Invalid;

const DAYS: [(&str, &str); 7] = [
    ("SU", "sunday"),
    ("MO", "monday"),
    ("TU", "tuesday"),
    ("WE", "wednesday"),
    ("TH", "thursday"),
    ("FR", "friday"),
    ("SA", "saturday"),
];
const INDEXES: [(i32, &str); 5] = [
    (1, "first"),
    (2, "second"),
    (3, "third"),
    (4, "fourth"),
    (-1, "last"),
];

fn refuse(why: impl Into<String>) -> Invalid {
    Invalid::field("event.recurrence", why)
}

/// `lines` (RRULE only) as a `patternedRecurrence` for a series starting
/// on `start` (the local date in `zone`).
pub fn to_graph(lines: &[String], start: NaiveDate, zone: Tz) -> Result<Value, Invalid> {
    let mut rules = lines.iter().filter(|l| !l.trim().is_empty());
    let rule = rules.next().ok_or_else(|| refuse("needs an RRULE line"))?;
    if rules.next().is_some() {
        return Err(refuse(
            "Microsoft takes one RRULE and no RDATE or EXDATE lines",
        ));
    }
    let body = rule
        .strip_prefix("RRULE:")
        .ok_or_else(|| refuse("Microsoft takes one RRULE and no RDATE or EXDATE lines"))?;
    let (mut freq, mut interval, mut count, mut until) = ("", 1u32, None, None);
    let (mut byday, mut bymonthday, mut bymonth) = (Vec::new(), None, None);
    for part in body.split(';') {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| refuse("an RRULE part is not NAME=VALUE"))?;
        match k {
            "FREQ" => freq = v,
            "INTERVAL" => {
                interval = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=999).contains(n))
                    .ok_or_else(|| refuse("INTERVAL must be 1..999"))?
            }
            "COUNT" => {
                count = Some(
                    v.parse::<u32>()
                        .ok()
                        .filter(|n| (1..=999).contains(n))
                        .ok_or_else(|| refuse("COUNT must be 1..999"))?,
                )
            }
            "UNTIL" => {
                until = Some(
                    until_date(v, zone)
                        .ok_or_else(|| refuse("UNTIL is not a date or UTC date-time"))?,
                )
            }
            "BYDAY" => byday = v.split(',').map(str::to_string).collect(),
            "BYMONTHDAY" => {
                bymonthday = Some(
                    v.parse::<u32>()
                        .ok()
                        .filter(|d| (1..=31).contains(d))
                        .ok_or_else(|| refuse("Microsoft takes one BYMONTHDAY of 1..31"))?,
                )
            }
            "BYMONTH" => {
                bymonth = Some(
                    v.parse::<u32>()
                        .ok()
                        .filter(|m| (1..=12).contains(m))
                        .ok_or_else(|| refuse("Microsoft takes one BYMONTH"))?,
                )
            }
            "WKST" => {}
            other => {
                return Err(refuse(format!(
                    "Microsoft cannot express {}",
                    other.chars().take(20).collect::<String>()
                )))
            }
        }
    }
    let day_name = |code: &str| DAYS.iter().find(|(c, _)| *c == code).map(|(_, n)| *n);
    let ordinal = |d: &str| -> Result<(&'static str, &'static str), Invalid> {
        let split = d.len().saturating_sub(2);
        let (n, code) = d.split_at(split);
        let n: i32 = n
            .parse()
            .map_err(|_| refuse("a monthly BYDAY needs an ordinal (1MO, -1FR)"))?;
        let index = INDEXES
            .iter()
            .find(|(i, _)| *i == n)
            .map(|(_, s)| *s)
            .ok_or_else(|| refuse("Microsoft takes ordinals 1..4 and -1"))?;
        Ok((
            index,
            day_name(code).ok_or_else(|| refuse("unknown BYDAY"))?,
        ))
    };
    let pattern = match freq {
        "DAILY" if byday.is_empty() => json!({"type": "daily", "interval": interval}),
        "WEEKLY" => {
            let codes = if byday.is_empty() {
                vec![DAYS[start.weekday().num_days_from_sunday() as usize]
                    .0
                    .to_string()]
            } else {
                byday.clone()
            };
            let days: Option<Vec<&str>> = codes.iter().map(|c| day_name(c)).collect();
            json!({"type": "weekly", "interval": interval, "daysOfWeek": days.ok_or_else(|| refuse("unknown BYDAY"))?, "firstDayOfWeek": "sunday"})
        }
        "MONTHLY" if byday.is_empty() => {
            json!({"type": "absoluteMonthly", "interval": interval, "dayOfMonth": bymonthday.unwrap_or(start.day())})
        }
        "MONTHLY" if byday.len() == 1 => {
            let (index, day) = ordinal(&byday[0])?;
            json!({"type": "relativeMonthly", "interval": interval, "daysOfWeek": [day], "index": index})
        }
        "YEARLY" if byday.is_empty() => {
            json!({"type": "absoluteYearly", "interval": interval, "dayOfMonth": bymonthday.unwrap_or(start.day()), "month": bymonth.unwrap_or(start.month())})
        }
        "YEARLY" if byday.len() == 1 => {
            let (index, day) = ordinal(&byday[0])?;
            json!({"type": "relativeYearly", "interval": interval, "daysOfWeek": [day], "index": index, "month": bymonth.unwrap_or(start.month())})
        }
        _ => return Err(refuse(
            "Microsoft takes DAILY, WEEKLY, MONTHLY or YEARLY rules of the forms it can express",
        )),
    };
    let start_date = start.format("%Y-%m-%d").to_string();
    let range = match (count, until) {
        (Some(_), Some(_)) => return Err(refuse("COUNT and UNTIL exclude each other")),
        (Some(n), None) => {
            json!({"type": "numbered", "startDate": start_date, "numberOfOccurrences": n, "recurrenceTimeZone": zone.name()})
        }
        (None, Some(d)) => {
            json!({"type": "endDate", "startDate": start_date, "endDate": d.format("%Y-%m-%d").to_string(), "recurrenceTimeZone": zone.name()})
        }
        (None, None) => {
            json!({"type": "noEnd", "startDate": start_date, "recurrenceTimeZone": zone.name()})
        }
    };
    Ok(json!({"pattern": pattern, "range": range}))
}

fn until_date(v: &str, zone: Tz) -> Option<NaiveDate> {
    if v.len() == 8 {
        return NaiveDate::parse_from_str(v, "%Y%m%d").ok();
    }
    let t = chrono::NaiveDateTime::parse_from_str(v.strip_suffix('Z')?, "%Y%m%dT%H%M%S").ok()?;
    Some(t.and_utc().with_timezone(&zone).date_naive())
}

/// A `patternedRecurrence` as an RRULE line; `None` when it is unreadable.
pub fn from_graph(r: &Value) -> Option<String> {
    let p = &r["pattern"];
    let range = &r["range"];
    let interval = p["interval"].as_u64().unwrap_or(1).clamp(1, 999);
    let day_code = |n: &Value| {
        DAYS.iter()
            .find(|(_, name)| Some(*name) == n.as_str())
            .map(|(c, _)| *c)
    };
    let days: Vec<&str> = p["daysOfWeek"]
        .as_array()
        .map(|a| a.iter().take(7).filter_map(day_code).collect())
        .unwrap_or_default();
    let index = INDEXES
        .iter()
        .find(|(_, s)| Some(*s) == p["index"].as_str())
        .map(|(i, _)| *i)
        .unwrap_or(1);
    let mut rule = match p["type"].as_str()? {
        "daily" => format!("FREQ=DAILY;INTERVAL={interval}"),
        "weekly" => format!("FREQ=WEEKLY;INTERVAL={interval};BYDAY={}", days.join(",")),
        "absoluteMonthly" => format!(
            "FREQ=MONTHLY;INTERVAL={interval};BYMONTHDAY={}",
            p["dayOfMonth"].as_u64()?.min(31)
        ),
        "relativeMonthly" => format!(
            "FREQ=MONTHLY;INTERVAL={interval};BYDAY={index}{}",
            days.first()?
        ),
        "absoluteYearly" => format!(
            "FREQ=YEARLY;INTERVAL={interval};BYMONTH={};BYMONTHDAY={}",
            p["month"].as_u64()?.min(12),
            p["dayOfMonth"].as_u64()?.min(31)
        ),
        "relativeYearly" => format!(
            "FREQ=YEARLY;INTERVAL={interval};BYMONTH={};BYDAY={index}{}",
            p["month"].as_u64()?.min(12),
            days.first()?
        ),
        _ => return None,
    };
    match range["type"].as_str() {
        Some("numbered") => rule.push_str(&format!(
            ";COUNT={}",
            range["numberOfOccurrences"].as_u64()?.min(999)
        )),
        Some("endDate") => {
            let d = NaiveDate::parse_from_str(range["endDate"].as_str()?, "%Y-%m-%d").ok()?;
            rule.push_str(&format!(";UNTIL={}", d.format("%Y%m%d")));
        }
        _ => {}
    }
    Some(format!("RRULE:{rule}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn rules_graph_can_express_go_both_ways() {
        let r = to_graph(
            &["RRULE:FREQ=DAILY;COUNT=4".into()],
            d("2026-03-02"),
            Tz::Europe__London,
        )
        .unwrap();
        assert_eq!(r["pattern"]["type"], "daily");
        assert_eq!(r["range"]["numberOfOccurrences"], 4);
        assert_eq!(r["range"]["startDate"], "2026-03-02");
        assert_eq!(
            from_graph(&r).unwrap(),
            "RRULE:FREQ=DAILY;INTERVAL=1;COUNT=4"
        );
        let w = to_graph(
            &["RRULE:FREQ=WEEKLY;BYDAY=MO,WE;UNTIL=20260401T000000Z".into()],
            d("2026-03-02"),
            Tz::UTC,
        )
        .unwrap();
        assert_eq!(w["pattern"]["daysOfWeek"], json!(["monday", "wednesday"]));
        assert_eq!(w["range"]["endDate"], "2026-04-01");
        let m = to_graph(
            &["RRULE:FREQ=MONTHLY;BYDAY=-1FR".into()],
            d("2026-03-27"),
            Tz::UTC,
        )
        .unwrap();
        assert_eq!(
            (
                m["pattern"]["type"].as_str(),
                m["pattern"]["index"].as_str()
            ),
            (Some("relativeMonthly"), Some("last"))
        );
        assert_eq!(
            from_graph(&m).unwrap(),
            "RRULE:FREQ=MONTHLY;INTERVAL=1;BYDAY=-1FR"
        );
    }

    #[test]
    fn what_graph_cannot_express_is_refused() {
        let start = d("2026-03-02");
        for lines in [
            vec!["RRULE:FREQ=HOURLY".to_string()],
            vec!["RRULE:FREQ=DAILY".into(), "EXDATE:20260303T090000Z".into()],
            vec!["RRULE:FREQ=MONTHLY;BYSETPOS=1,2;BYDAY=MO".into()],
            vec!["RRULE:FREQ=DAILY;COUNT=2;UNTIL=20260401".into()],
            vec![],
        ] {
            assert!(to_graph(&lines, start, Tz::UTC).is_err(), "{lines:?}");
        }
    }
}
