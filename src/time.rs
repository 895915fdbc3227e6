//! Conversions between protobuf times and chrono, and the resolution of an
//! [`EventTime`](crate::pb::EventTime) (instant or all-day date) to UTC.

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
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

/// The UTC time of a `Timestamp`, `None` when out of chrono's range or when
/// the nanos are out of range.
pub fn from_timestamp(t: &Timestamp) -> Option<DateTime<Utc>> {
    if !(0..1_000_000_000).contains(&t.nanos) {
        return None;
    }
    DateTime::from_timestamp(t.seconds, t.nanos as u32)
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
    #[error("instant is out of range")]
    BadInstant,
    /// The date is not YYYY-MM-DD.
    #[error("date must be YYYY-MM-DD")]
    BadDate,
    /// The zone is not an IANA zone.
    #[error("unknown time zone {0:?}: use an IANA name such as Europe/London")]
    UnknownZone(String),
}

/// Parses an IANA time zone name.
pub fn parse_zone(name: &str) -> Result<Tz, TimeError> {
    name.parse::<Tz>()
        .map_err(|_| TimeError::UnknownZone(name.chars().take(64).collect()))
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
        Some(event_time::Value::Date(d)) => NaiveDate::parse_from_str(d, "%Y-%m-%d")
            .map(Boundary::Date)
            .map_err(|_| TimeError::BadDate),
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
