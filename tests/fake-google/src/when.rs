//! Times as Google writes them: `EventDateTime` (`{date}` or
//! `{dateTime, timeZone?}`), RFC 3339 query parameters (offset mandatory),
//! the timestamps the fake prints, and instance-id stamps.

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, SecondsFormat, TimeZone, Utc};
use chrono_tz::Tz;
use serde_json::{json, Map, Value};

use crate::error::ApiError;

/// A point of an event: a whole day or an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum When {
    /// All-day value (`date`).
    Date(NaiveDate),
    /// Timed value (`dateTime`).
    At(DateTime<Utc>),
}

impl When {
    /// The instant this starts at; dates begin at midnight in `zone`.
    pub(crate) fn instant(self, zone: Tz) -> DateTime<Utc> {
        match self {
            When::At(t) => t,
            When::Date(d) => local_to_utc(d.and_hms_opt(0, 0, 0).expect("midnight"), zone),
        }
    }

    /// The suffix of an instance id: `20240115T150000Z` or `20240115`.
    pub(crate) fn stamp(self) -> String {
        match self {
            When::At(t) => t.format("%Y%m%dT%H%M%SZ").to_string(),
            When::Date(d) => d.format("%Y%m%d").to_string(),
        }
    }

    /// Parses an instance-id suffix.
    pub(crate) fn from_stamp(s: &str) -> Option<When> {
        if s.len() == 8 {
            return NaiveDate::parse_from_str(s, "%Y%m%d").ok().map(When::Date);
        }
        let t = s.strip_suffix('Z')?;
        NaiveDateTime::parse_from_str(t, "%Y%m%dT%H%M%S")
            .ok()
            .map(|n| When::At(Utc.from_utc_datetime(&n)))
    }

    /// Shifted by a duration (whole days for dates).
    pub(crate) fn shifted(self, by: Duration) -> When {
        match self {
            When::At(t) => When::At(t + by),
            When::Date(d) => When::Date(d + Duration::days(by.num_days())),
        }
    }
}

/// A parsed `EventDateTime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EventTime {
    pub when: When,
    /// The `timeZone` field, when given.
    pub zone: Option<Tz>,
}

impl EventTime {
    /// Reads an `EventDateTime` object; `field` names it in errors (`start`).
    pub(crate) fn parse(v: &Value, field: &str) -> Result<EventTime, ApiError> {
        let obj = v
            .as_object()
            .ok_or_else(|| ApiError::invalid(&format!("Invalid {field} time.")))?;
        let zone = match obj.get("timeZone").and_then(Value::as_str) {
            Some(name) => Some(name.parse::<Tz>().map_err(|_| {
                ApiError::invalid(&format!("Invalid time zone definition for {field} time."))
            })?),
            None => None,
        };
        if let Some(date) = obj.get("date").and_then(Value::as_str) {
            if obj.get("dateTime").and_then(Value::as_str).is_some() {
                return Err(ApiError::invalid(&format!("Invalid {field} time.")));
            }
            let d = NaiveDate::parse_from_str(date, "%Y-%m-%d")
                .map_err(|_| ApiError::invalid(&format!("Invalid {field} time.")))?;
            return Ok(EventTime {
                when: When::Date(d),
                zone,
            });
        }
        let Some(text) = obj.get("dateTime").and_then(Value::as_str) else {
            return Err(ApiError::required(&format!("{field} time")));
        };
        let at = match DateTime::parse_from_rfc3339(text) {
            Ok(t) => t.with_timezone(&Utc),
            Err(_) => {
                let local = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S")
                    .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f"))
                    .map_err(|_| ApiError::invalid(&format!("Invalid {field} time.")))?;
                let Some(z) = zone else {
                    return Err(ApiError::invalid(&format!(
                        "Missing time zone definition for {field} time."
                    )));
                };
                local_to_utc(local, z)
            }
        };
        Ok(EventTime {
            when: When::At(at),
            zone,
        })
    }

    /// The instant this starts at (dates at midnight in `fallback` unless
    /// the value names its own zone).
    pub(crate) fn instant(self, fallback: Tz) -> DateTime<Utc> {
        self.when.instant(self.zone.unwrap_or(fallback))
    }

    /// The stored (normalised) form: `dateTime` with offset in its own zone.
    pub(crate) fn to_json(self) -> Value {
        self.render(None)
    }

    /// The served form: `dateTime` rendered in `zone` (or its own zone, or UTC).
    pub(crate) fn render(self, zone: Option<Tz>) -> Value {
        let mut out = Map::new();
        match self.when {
            When::Date(d) => {
                out.insert("date".into(), json!(d.format("%Y-%m-%d").to_string()));
            }
            When::At(t) => {
                let z = zone.or(self.zone).unwrap_or(Tz::UTC);
                out.insert("dateTime".into(), json!(fmt_in_zone(t, z)));
            }
        }
        if let Some(z) = self.zone {
            out.insert("timeZone".into(), json!(z.name()));
        }
        Value::Object(out)
    }
}

/// A local wall time in `zone` as UTC (the earlier reading when ambiguous,
/// shifted forward across a gap).
pub(crate) fn local_to_utc(local: NaiveDateTime, zone: Tz) -> DateTime<Utc> {
    match zone.from_local_datetime(&local) {
        chrono::LocalResult::Single(t) => t.with_timezone(&Utc),
        chrono::LocalResult::Ambiguous(a, _) => a.with_timezone(&Utc),
        chrono::LocalResult::None => local_to_utc(local + Duration::hours(1), zone),
    }
}

/// `2024-01-15T10:00:00+01:00` (or `...Z` in UTC).
pub(crate) fn fmt_in_zone(t: DateTime<Utc>, zone: Tz) -> String {
    t.with_timezone(&zone)
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// `2024-01-15T10:00:00.000Z`, the form of `created` and `updated`.
pub(crate) fn fmt_millis(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A timestamp query parameter: RFC 3339 with a mandatory offset.
pub(crate) fn parse_param(raw: &str, name: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| ApiError::bad_request("badRequest", "Bad Request").at_param(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_time_without_offset_needs_a_zone() {
        assert!(EventTime::parse(&json!({"dateTime": "2024-01-15T10:00:00"}), "start").is_err());
        let t = EventTime::parse(
            &json!({"dateTime": "2024-01-15T10:00:00", "timeZone": "Europe/Berlin"}),
            "start",
        )
        .unwrap();
        assert_eq!(
            t.when,
            When::At(Utc.with_ymd_and_hms(2024, 1, 15, 9, 0, 0).unwrap())
        );
        assert_eq!(t.to_json()["dateTime"], "2024-01-15T10:00:00+01:00");
        assert_eq!(t.render(Some(Tz::UTC))["dateTime"], "2024-01-15T09:00:00Z");
    }

    #[test]
    fn stamps_round_trip() {
        let at = When::At(Utc.with_ymd_and_hms(2024, 1, 15, 15, 0, 0).unwrap());
        assert_eq!(at.stamp(), "20240115T150000Z");
        assert_eq!(When::from_stamp("20240115T150000Z"), Some(at));
        let day = When::Date(NaiveDate::from_ymd_opt(2024, 1, 15).unwrap());
        assert_eq!(day.stamp(), "20240115");
        assert_eq!(When::from_stamp("20240115"), Some(day));
    }

    #[test]
    fn query_timestamps_need_an_offset() {
        assert!(parse_param("2024-01-15T10:00:00Z", "timeMin").is_ok());
        assert!(parse_param("2024-01-15T10:00:00+01:00", "timeMin").is_ok());
        assert!(parse_param("2024-01-15T10:00:00", "timeMin").is_err());
        assert!(parse_param("2024-01-15T10:00:00 01:00", "timeMin").is_err());
    }
}
