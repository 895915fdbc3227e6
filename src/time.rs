//! Conversions between protobuf times and chrono, and the resolution of an
//! [`EventTime`](crate::pb::EventTime) (instant or all-day date) to UTC.

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use prost_types::Timestamp;

use crate::pb::{event_time, EventTime};

/// A `Timestamp` for a UTC time.
pub fn to_timestamp(t: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

/// The earliest `Timestamp` second accepted: 0001-01-01T00:00:00Z, the
/// start of protobuf's Timestamp range.
pub const MIN_SECONDS: i64 = -62_135_596_800;
/// The latest `Timestamp` second accepted: 9999-12-31T23:59:59Z, the end of
/// protobuf's Timestamp range.
pub const MAX_SECONDS: i64 = 253_402_300_799;

/// The UTC time of a `Timestamp`, `None` outside years 1..=9999 (protobuf's
/// Timestamp range) or when the nanos are out of range.
pub fn from_timestamp(t: &Timestamp) -> Option<DateTime<Utc>> {
    if !(0..1_000_000_000).contains(&t.nanos) || !(MIN_SECONDS..=MAX_SECONDS).contains(&t.seconds) {
        return None;
    }
    DateTime::from_timestamp(t.seconds, t.nanos as u32)
}

/// Parses a `YYYY-MM-DD` date of years 1..=9999.
pub fn parse_date(s: &str) -> Option<NaiveDate> {
    if s.len() != 10 {
        return None;
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .filter(|d| (1..=9999).contains(&d.year()))
}

/// A boundary of an event, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Boundary {
    /// A timed boundary.
    Instant(DateTime<Utc>),
    /// An all-day boundary.
    Date(NaiveDate),
}

/// Why an [`EventTime`] cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    /// Neither instant nor date is set.
    #[error("must be set: either an instant or a date")]
    Missing,
    /// The instant is out of range.
    #[error("instant must lie in years 0001..=9999 (UTC) with nanos below 1e9")]
    BadInstant,
    /// The date is not YYYY-MM-DD.
    #[error("date must be YYYY-MM-DD in years 0001..=9999")]
    BadDate,
    /// The zone is not an IANA zone.
    #[error("unknown time zone {0:?}: use an IANA name such as Europe/London")]
    UnknownZone(String),
}

/// Parses an IANA time zone name (at most
/// [`MAX_ZONE_BYTES`](crate::limits::MAX_ZONE_BYTES) bytes).
pub fn parse_zone(name: &str) -> Result<Tz, TimeError> {
    let unknown = || TimeError::UnknownZone(name.chars().take(64).collect());
    if name.len() > crate::limits::MAX_ZONE_BYTES {
        return Err(unknown());
    }
    name.parse::<Tz>().map_err(|_| unknown())
}

/// Parses an [`EventTime`], checking its zone.
pub fn parse_event_time(t: &EventTime) -> Result<Boundary, TimeError> {
    if !t.time_zone.is_empty() {
        parse_zone(&t.time_zone)?;
    }
    match &t.value {
        None => Err(TimeError::Missing),
        Some(event_time::Value::Instant(ts)) => from_timestamp(ts)
            .map(Boundary::Instant)
            .ok_or(TimeError::BadInstant),
        Some(event_time::Value::Date(d)) => {
            parse_date(d).map(Boundary::Date).ok_or(TimeError::BadDate)
        }
    }
}

/// The UTC instant a boundary stands for; dates start at local midnight in
/// `zone` (UTC when the calendar's zone is unknown).
pub fn boundary_utc(b: Boundary, zone: Option<Tz>) -> DateTime<Utc> {
    match b {
        Boundary::Instant(t) => t,
        Boundary::Date(d) => {
            let midnight = d.and_hms_opt(0, 0, 0).expect("midnight exists");
            match zone {
                Some(tz) => tz
                    .from_local_datetime(&midnight)
                    .earliest()
                    // A zone that skips midnight (DST at 00:00): take the
                    // first instant of the day.
                    .or_else(|| {
                        tz.from_local_datetime(&(midnight + chrono::Duration::hours(1)))
                            .earliest()
                    })
                    .map(|t| t.with_timezone(&Utc))
                    .unwrap_or_else(|| Utc.from_utc_datetime(&midnight)),
                None => Utc.from_utc_datetime(&midnight),
            }
        }
    }
}

/// An instant as an [`EventTime`].
pub fn instant(t: DateTime<Utc>, zone: &str) -> EventTime {
    EventTime {
        value: Some(event_time::Value::Instant(to_timestamp(t))),
        time_zone: zone.to_string(),
    }
}

/// A date as an all-day [`EventTime`].
pub fn date(d: NaiveDate) -> EventTime {
    EventTime {
        value: Some(event_time::Value::Date(d.format("%Y-%m-%d").to_string())),
        time_zone: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_day_dates_start_at_local_midnight() {
        let d = NaiveDate::from_ymd_opt(2026, 7, 1).unwrap();
        let london = parse_zone("Europe/London").unwrap();
        assert_eq!(
            boundary_utc(Boundary::Date(d), Some(london)).to_rfc3339(),
            "2026-06-30T23:00:00+00:00"
        );
        assert_eq!(
            boundary_utc(Boundary::Date(d), None).to_rfc3339(),
            "2026-07-01T00:00:00+00:00"
        );
    }

    #[test]
    fn times_outside_years_1_to_9999_are_refused() {
        let at = |seconds| Timestamp { seconds, nanos: 0 };
        assert!(from_timestamp(&at(MIN_SECONDS)).is_some());
        assert!(from_timestamp(&at(MAX_SECONDS)).is_some());
        assert_eq!(from_timestamp(&at(MIN_SECONDS - 1)), None);
        assert_eq!(from_timestamp(&at(MAX_SECONDS + 1)), None);
        assert_eq!(from_timestamp(&at(i64::MIN)), None);
        let on = |d: &str| EventTime {
            value: Some(event_time::Value::Date(d.into())),
            time_zone: String::new(),
        };
        assert!(parse_event_time(&on("0001-01-01")).is_ok());
        assert!(parse_event_time(&on("9999-12-31")).is_ok());
        for bad in ["0000-12-31", "+10000-01-01", "-0001-01-01", "2026-1-1"] {
            assert_eq!(parse_event_time(&on(bad)), Err(TimeError::BadDate), "{bad}");
        }
    }

    #[test]
    fn unknown_zone_is_named() {
        let t = EventTime {
            value: Some(event_time::Value::Date("2026-01-01".into())),
            time_zone: "Mars/Olympus".into(),
        };
        assert_eq!(
            parse_event_time(&t),
            Err(TimeError::UnknownZone("Mars/Olympus".into()))
        );
    }
}
