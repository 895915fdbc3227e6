//! Time-zone resolution for iCalendar data: the [`Zone`] a TZID stands
//! for. A known name (IANA id, Windows name as Outlook writes it,
//! vendor-prefixed id, or a label whose VTIMEZONE carries `X-LIC-LOCATION`
//! / `X-MICROSOFT-CDO-TZID`) is an IANA zone, resolved by `calcard` (which
//! carries the CLDR Windows table); a VTIMEZONE that names nothing known is
//! evaluated from its own observances ([`custom`]), and one that cannot be
//! read makes the times that use it unreadable, never guessed. Only the
//! calendar's own zone (`calendar-timezone`, and `X-WR-TIMEZONE`), which
//! the sync cursor carries by IANA name, is still matched by its offsets
//! against common zones when it names nothing known.

use std::sync::Arc;

use calcard::icalendar::{
    ICalendar, ICalendarComponent, ICalendarComponentType, ICalendarProperty, ICalendarValue,
};
use chrono::{DateTime, Duration, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

pub mod custom;

pub use custom::CustomZone;

/// The zone a time was written in: a known IANA zone, or a VTIMEZONE read
/// from its own rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Zone {
    /// A known zone.
    Named(Tz),
    /// A VTIMEZONE that names no known zone, evaluated from its rules.
    Custom(Arc<CustomZone>),
}

impl Zone {
    /// A wall-clock time as UTC (see [`local_to_utc`] for gaps and repeats).
    pub fn to_utc(&self, local: NaiveDateTime) -> DateTime<Utc> {
        match self {
            Zone::Named(z) => local_to_utc(local, *z),
            Zone::Custom(c) => c.to_utc(local),
        }
    }

    /// The wall-clock time at `t`.
    pub fn to_local(&self, t: DateTime<Utc>) -> NaiveDateTime {
        match self {
            Zone::Named(z) => t.with_timezone(z).naive_local(),
            Zone::Custom(c) => c.to_local(t),
        }
    }

    /// The IANA zone the contract names for a time at `t` in this zone.
    pub fn label_at(&self, t: DateTime<Utc>) -> Tz {
        match self {
            Zone::Named(z) => *z,
            Zone::Custom(c) => c.label_at(t),
        }
    }
}

/// A local wall-clock time in `zone` as UTC: the first of repeated times,
/// and the offset from before a gap for skipped times.
pub fn local_to_utc(naive: NaiveDateTime, zone: Tz) -> DateTime<Utc> {
    zone.from_local_datetime(&naive)
        .earliest()
        .or_else(|| {
            zone.from_local_datetime(&(naive + Duration::hours(1)))
                .earliest()
        })
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| Utc.from_utc_datetime(&naive))
}

/// What a TZID stands for in `ical`: a known zone, its VTIMEZONE read from
/// its own rules (`Err` with the reason when that VTIMEZONE cannot be
/// read), or `Ok(None)` when the name is unknown and the object holds no
/// VTIMEZONE for it.
pub fn zone_for_tzid(ical: &ICalendar, tzid: &str) -> Result<Option<Zone>, String> {
    if let Some(tz) = named(ical, tzid) {
        return Ok(Some(Zone::Named(tz)));
    }
    let Some(vtz) = vtimezone(ical, tzid) else {
        return Ok(None);
    };
    CustomZone::from_vtimezone(ical, vtz, by_offsets(ical, vtz))
        .map(|c| Some(Zone::Custom(Arc::new(c))))
}

/// The IANA zone a TZID names in `ical`, if it can be told: a known name,
/// else the common zone with the offsets of its VTIMEZONE (for the
/// calendar's own zone only, see the module docs).
pub fn resolve_tzid(ical: &ICalendar, tzid: &str) -> Option<Tz> {
    named(ical, tzid).or_else(|| by_offsets(ical, vtimezone(ical, tzid)?))
}

/// The IANA zone a known TZID names.
fn named(ical: &ICalendar, tzid: &str) -> Option<Tz> {
    if let Some(tz) = ical
        .build_tz_resolver()
        .resolve(tzid)
        .and_then(calbridge::zones::from_calcard)
    {
        return Some(tz);
    }
    // Vendor prefixes such as "/mozilla.org/20050126_1/Europe/Berlin".
    tzid.rsplit_once('/')
        .and_then(|_| iana_suffix(tzid))
        .and_then(|s| s.parse::<Tz>().ok())
}

/// The VTIMEZONE of `ical` with this TZID.
fn vtimezone<'a>(ical: &'a ICalendar, tzid: &str) -> Option<&'a ICalendarComponent> {
    ical.components.iter().find(|c| {
        c.component_type == ICalendarComponentType::VTimezone
            && c.entries.iter().any(|e| {
                e.name == ICalendarProperty::Tzid
                    && e.values.first().and_then(|v| v.as_text()) == Some(tzid)
            })
    })
}

/// The longest `Area/City` suffix of a prefixed TZID.
fn iana_suffix(tzid: &str) -> Option<&str> {
    let parts: Vec<&str> = tzid.split('/').collect();
    (0..parts.len()).find_map(|i| {
        let candidate = tzid.splitn(i + 1, '/').last()?;
        candidate.parse::<Tz>().ok().map(|_| candidate)
    })
}

/// Common zones by (standard offset, daylight offset) in minutes: the
/// names a custom VTIMEZONE ("Customized Time Zone") is given where their
/// offsets agree, and the calendar's own zone when it names nothing known.
const BY_OFFSETS: &[(i32, Option<i32>, &str)] = &[
    (-600, None, "Pacific/Honolulu"),
    (-540, Some(-480), "America/Anchorage"),
    (-480, Some(-420), "America/Los_Angeles"),
    (-420, Some(-360), "America/Denver"),
    (-420, None, "America/Phoenix"),
    (-360, Some(-300), "America/Chicago"),
    (-360, None, "America/Regina"),
    (-300, Some(-240), "America/New_York"),
    (-300, None, "America/Bogota"),
    (-240, Some(-180), "America/Halifax"),
    (-210, Some(-150), "America/St_Johns"),
    (-180, None, "America/Sao_Paulo"),
    (0, Some(60), "Europe/London"),
    (0, None, "UTC"),
    (60, Some(120), "Europe/Berlin"),
    (60, None, "Africa/Lagos"),
    (120, Some(180), "Europe/Athens"),
    (120, None, "Africa/Johannesburg"),
    (180, None, "Europe/Moscow"),
    (210, None, "Asia/Tehran"),
    (240, None, "Asia/Dubai"),
    (270, None, "Asia/Kabul"),
    (300, None, "Asia/Karachi"),
    (330, None, "Asia/Kolkata"),
    (345, None, "Asia/Kathmandu"),
    (360, None, "Asia/Dhaka"),
    (420, None, "Asia/Bangkok"),
    (480, None, "Asia/Shanghai"),
    (540, None, "Asia/Tokyo"),
    (570, Some(630), "Australia/Adelaide"),
    (570, None, "Australia/Darwin"),
    (600, Some(660), "Australia/Sydney"),
    (600, None, "Australia/Brisbane"),
    (720, Some(780), "Pacific/Auckland"),
];

/// Matches a VTIMEZONE's STANDARD/DAYLIGHT `TZOFFSETTO` values against
/// [`BY_OFFSETS`].
fn by_offsets(ical: &ICalendar, vtz: &ICalendarComponent) -> Option<Tz> {
    let mut standard = None;
    let mut daylight = None;
    for id in &vtz.component_ids {
        let Some(sub) = ical.components.get(*id as usize) else {
            continue;
        };
        let offset = sub
            .entries
            .iter()
            .find(|e| e.name == ICalendarProperty::Tzoffsetto)
            .and_then(|e| e.values.first())
            .and_then(offset_minutes);
        match sub.component_type {
            ICalendarComponentType::Standard => standard = standard.or(offset),
            ICalendarComponentType::Daylight => daylight = daylight.or(offset),
            _ => {}
        }
    }
    let standard = standard?;
    BY_OFFSETS
        .iter()
        .find(|(s, d, _)| *s == standard && *d == daylight)
        .or_else(|| BY_OFFSETS.iter().find(|(s, _, _)| *s == standard))
        .and_then(|(_, _, name)| name.parse().ok())
}

/// A UTC offset value (`+0100`, `-0530`) in minutes.
fn offset_minutes(v: &ICalendarValue) -> Option<i32> {
    match v {
        ICalendarValue::PartialDateTime(p) => {
            let minutes = i32::from(p.tz_hour?) * 60 + i32::from(p.tz_minute.unwrap_or(0));
            Some(if p.tz_minus { -minutes } else { minutes })
        }
        ICalendarValue::Integer(i) => {
            let i = *i as i32;
            Some((i / 100) * 60 + (i % 100))
        }
        ICalendarValue::Text(t) => {
            let t = t.trim();
            let (sign, rest) = match t.as_bytes().first()? {
                b'-' => (-1, &t[1..]),
                b'+' => (1, &t[1..]),
                _ => (1, t),
            };
            let h: i32 = rest.get(0..2)?.parse().ok()?;
            let m: i32 = rest.get(2..4)?.parse().ok()?;
            Some(sign * (h * 60 + m))
        }
        _ => None,
    }
}

/// The IANA zone of a calendar from its `C:calendar-timezone` property (a
/// VCALENDAR holding one VTIMEZONE).
pub fn calendar_zone(vcalendar: &str) -> Option<Tz> {
    let ical = crate::parse::parse_calendar(vcalendar).ok()?;
    let tzid = ical
        .components
        .iter()
        .filter(|c| c.component_type == ICalendarComponentType::VTimezone)
        .flat_map(|c| c.entries.iter())
        .find(|e| e.name == ICalendarProperty::Tzid)
        .and_then(|e| e.values.first())
        .and_then(|v| v.as_text())?
        .to_string();
    resolve_tzid(&ical, &tzid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse_calendar;

    fn zone_of(ics: &str, tzid: &str) -> Option<Tz> {
        resolve_tzid(&parse_calendar(ics).unwrap(), tzid)
    }

    const EMPTY: &str = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:x\r\nEND:VCALENDAR\r\n";

    #[test]
    fn iana_windows_and_prefixed_names_resolve() {
        assert_eq!(zone_of(EMPTY, "Europe/Berlin"), Some(Tz::Europe__Berlin));
        assert_eq!(
            zone_of(EMPTY, "Pacific Standard Time"),
            Some(Tz::America__Los_Angeles)
        );
        assert_eq!(
            zone_of(EMPTY, "W. Europe Standard Time"),
            Some(Tz::Europe__Berlin)
        );
        assert_eq!(
            zone_of(EMPTY, "/mozilla.org/20050126_1/America/New_York"),
            Some(Tz::America__New_York)
        );
        assert_eq!(zone_of(EMPTY, "Nowhere/Special"), None);
    }

    #[test]
    fn a_custom_vtimezone_names_the_calendar_zone_by_its_offsets_and_events_by_its_rules() {
        let ics = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:Microsoft Exchange Server 2010\r\n\
BEGIN:VTIMEZONE\r\nTZID:Customized Time Zone\r\n\
BEGIN:STANDARD\r\nDTSTART:16010101T030000\r\nTZOFFSETFROM:+0200\r\nTZOFFSETTO:+0100\r\nRRULE:FREQ=YEARLY;INTERVAL=1;BYDAY=-1SU;BYMONTH=10\r\nEND:STANDARD\r\n\
BEGIN:DAYLIGHT\r\nDTSTART:16010101T020000\r\nTZOFFSETFROM:+0100\r\nTZOFFSETTO:+0200\r\nRRULE:FREQ=YEARLY;INTERVAL=1;BYDAY=-1SU;BYMONTH=3\r\nEND:DAYLIGHT\r\n\
END:VTIMEZONE\r\nEND:VCALENDAR\r\n";
        // The calendar's own zone is named by its offsets; an event's TZID
        // is read by the VTIMEZONE's own rules.
        assert_eq!(
            zone_of(ics, "Customized Time Zone"),
            Some(Tz::Europe__Berlin)
        );
        let ical = parse_calendar(ics).unwrap();
        assert!(matches!(
            zone_for_tzid(&ical, "Customized Time Zone"),
            Ok(Some(Zone::Custom(_)))
        ));
        assert_eq!(
            zone_for_tzid(&ical, "Europe/Paris"),
            Ok(Some(Zone::Named(Tz::Europe__Paris)))
        );
        assert_eq!(zone_for_tzid(&ical, "Nowhere/Special"), Ok(None));
    }

    #[test]
    fn the_calendar_timezone_property_names_the_calendar_zone() {
        let ics = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:x\r\nBEGIN:VTIMEZONE\r\nTZID:Europe/Paris\r\n\
BEGIN:STANDARD\r\nDTSTART:19701025T030000\r\nTZOFFSETFROM:+0200\r\nTZOFFSETTO:+0100\r\nEND:STANDARD\r\n\
END:VTIMEZONE\r\nEND:VCALENDAR\r\n";
        assert_eq!(calendar_zone(ics), Some(Tz::Europe__Paris));
    }
}
