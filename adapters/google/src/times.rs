//! Event times as Google writes them: a start, end or original start read
//! from an `EventDateTime` into a [`When`], the instance ids Google derives
//! from original starts, and the error an item that cannot be mapped
//! raises. The lowest layer of the conversions: `rules`, `mapping` and
//! `recurrence` build on it.

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

use calbridge::pb::{self, event_time};
use calbridge::time::{boundary_utc, to_timestamp, Boundary};

use crate::model;

/// Why a Google item cannot be mapped. Messages never quote event content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// The item has no id.
    #[error("the item has no id")]
    MissingId,
    /// A required time is absent.
    #[error("the item has no {0}")]
    MissingTime(&'static str),
    /// A time does not parse.
    #[error("the item's {0} is not a valid date or RFC 3339 date-time")]
    BadTime(&'static str),
    /// The recurrence rule cannot be expanded.
    #[error("the series' recurrence cannot be expanded: {0}")]
    BadRule(String),
}

/// A parsed event boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// A timed boundary and the IANA zone it is expressed in, when known.
    At(DateTime<Utc>, Option<Tz>),
    /// An all-day date.
    Date(NaiveDate),
}

impl When {
    /// The UTC instant; dates start at midnight in `zone` (UTC when
    /// unknown).
    pub fn utc(&self, zone: Option<Tz>) -> DateTime<Utc> {
        match self {
            When::At(t, _) => *t,
            When::Date(d) => boundary_utc(Boundary::Date(*d), zone),
        }
    }

    /// The contract's form.
    pub fn event_time(&self) -> pb::EventTime {
        match self {
            When::At(t, zone) => pb::EventTime {
                value: Some(event_time::Value::Instant(to_timestamp(*t))),
                time_zone: zone.map(|z| z.name().to_string()).unwrap_or_default(),
            },
            When::Date(d) => calbridge::time::date(*d),
        }
    }

    /// The suffix Google gives instance ids: `yyyymmddThhmmssZ` (UTC) for
    /// timed series, `yyyymmdd` for all-day ones.
    pub fn id_suffix(&self) -> String {
        match self {
            When::At(t, _) => t.format("%Y%m%dT%H%M%SZ").to_string(),
            When::Date(d) => d.format("%Y%m%d").to_string(),
        }
    }
}

/// Reads an `EventDateTime`; `default_zone` (the calendar's) names the zone
/// of a date-time that carries none.
pub fn parse_when(
    t: &model::EventDateTime,
    field: &'static str,
    default_zone: Option<Tz>,
) -> Result<When, MapError> {
    if let Some(d) = t.date.as_deref().filter(|d| !d.is_empty()) {
        return NaiveDate::parse_from_str(d, "%Y-%m-%d")
            .map(When::Date)
            .map_err(|_| MapError::BadTime(field));
    }
    let Some(dt) = t.date_time.as_deref().filter(|d| !d.is_empty()) else {
        return Err(MapError::MissingTime(field));
    };
    let zone = t
        .time_zone
        .as_deref()
        .and_then(|z| z.parse::<Tz>().ok())
        .or(default_zone);
    if let Ok(parsed) = DateTime::parse_from_rfc3339(dt) {
        return Ok(When::At(parsed.with_timezone(&Utc), zone));
    }
    // Google requires an offset unless a zone is given; read such a local
    // time in that zone.
    let local = NaiveDateTime::parse_from_str(dt, "%Y-%m-%dT%H:%M:%S")
        .map_err(|_| MapError::BadTime(field))?;
    let z = zone.ok_or(MapError::BadTime(field))?;
    z.from_local_datetime(&local)
        .earliest()
        .map(|t| When::At(t.with_timezone(&Utc), Some(z)))
        .ok_or(MapError::BadTime(field))
}

/// The id Google gives an instance of a series.
pub fn instance_id(series_id: &str, original: &When) -> String {
    format!("{series_id}_{}", original.id_suffix())
}

/// Splits an instance id into its series id and original start (UTC for
/// timed series); `None` for ids of single events and series.
pub fn parse_instance_id(id: &str) -> Option<(&str, When)> {
    let (series, suffix) = id.rsplit_once('_')?;
    if series.is_empty() {
        return None;
    }
    let original = match suffix.len() {
        16 => When::At(
            Utc.from_utc_datetime(&NaiveDateTime::parse_from_str(suffix, "%Y%m%dT%H%M%SZ").ok()?),
            None,
        ),
        8 => When::Date(NaiveDate::parse_from_str(suffix, "%Y%m%d").ok()?),
        _ => return None,
    };
    Some((series, original))
}
