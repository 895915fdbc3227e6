//! Time-zone resolution for iCalendar data: a TZID (IANA id, Windows name
//! as Outlook writes it, vendor-prefixed id, or a label whose VTIMEZONE
//! carries `X-LIC-LOCATION` / `X-MICROSOFT-CDO-TZID`) becomes an IANA zone.
//! Known names are resolved by `calcard` (which carries the CLDR Windows
//! table); a custom VTIMEZONE that names nothing known is matched by its
//! standard and daylight offsets against common zones.

use calcard::common::timezone::Tz as CalTz;
use calcard::icalendar::{ICalendar, ICalendarComponentType, ICalendarProperty, ICalendarValue};
use chrono_tz::Tz;

/// The IANA zone a TZID names in `ical`, if it can be told.
pub fn resolve_tzid(ical: &ICalendar, tzid: &str) -> Option<Tz> {
    if let Some(tz) = ical.build_tz_resolver().resolve(tzid).and_then(to_iana) {
        return Some(tz);
    }
    // Vendor prefixes such as "/mozilla.org/20050126_1/Europe/Berlin".
    if let Some(tz) = tzid
        .rsplit_once('/')
        .and_then(|_| iana_suffix(tzid))
        .and_then(|s| s.parse::<Tz>().ok())
    {
        return Some(tz);
    }
    by_offsets(ical, tzid)
}

/// The longest `Area/City` suffix of a prefixed TZID.
fn iana_suffix(tzid: &str) -> Option<&str> {
    let parts: Vec<&str> = tzid.split('/').collect();
    (0..parts.len()).find_map(|i| {
        let candidate = tzid.splitn(i + 1, '/').last()?;
        candidate.parse::<Tz>().ok().map(|_| candidate)
    })
}

/// An IANA zone from calcard's resolution (fixed offsets of whole hours
/// become `Etc/GMT±N`).
fn to_iana(tz: CalTz) -> Option<Tz> {
    match tz {
        CalTz::Tz(tz) => Some(tz),
        CalTz::Fixed(offset) => {
            let secs = offset.local_minus_utc();
            if secs == 0 {
                Some(Tz::UTC)
            } else if secs % 3600 == 0 {
                // Etc/GMT signs are inverted (Etc/GMT-2 is UTC+2).
                format!("Etc/GMT{:+}", -secs / 3600).parse().ok()
            } else {
                None
            }
        }
        CalTz::Floating => None,
    }
}

/// Common zones by (standard offset, daylight offset) in minutes, for
/// custom VTIMEZONEs ("Customized Time Zone") that name no known zone.
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
fn by_offsets(ical: &ICalendar, tzid: &str) -> Option<Tz> {
    let vtz = ical.components.iter().find(|c| {
        c.component_type == ICalendarComponentType::VTimezone
            && c.entries.iter().any(|e| {
                e.name == ICalendarProperty::Tzid
                    && e.values.first().and_then(|v| v.as_text()) == Some(tzid)
            })
    })?;
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
    fn a_custom_vtimezone_is_matched_by_its_offsets() {
        let ics = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:Microsoft Exchange Server 2010\r\n\
BEGIN:VTIMEZONE\r\nTZID:Customized Time Zone\r\n\
BEGIN:STANDARD\r\nDTSTART:16010101T030000\r\nTZOFFSETFROM:+0200\r\nTZOFFSETTO:+0100\r\nRRULE:FREQ=YEARLY;INTERVAL=1;BYDAY=-1SU;BYMONTH=10\r\nEND:STANDARD\r\n\
BEGIN:DAYLIGHT\r\nDTSTART:16010101T020000\r\nTZOFFSETFROM:+0100\r\nTZOFFSETTO:+0200\r\nRRULE:FREQ=YEARLY;INTERVAL=1;BYDAY=-1SU;BYMONTH=3\r\nEND:DAYLIGHT\r\n\
END:VTIMEZONE\r\nEND:VCALENDAR\r\n";
        assert_eq!(
            zone_of(ics, "Customized Time Zone"),
            Some(Tz::Europe__Berlin)
        );
    }

    #[test]
    fn the_calendar_timezone_property_names_the_calendar_zone() {
        let ics = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:x\r\nBEGIN:VTIMEZONE\r\nTZID:Europe/Paris\r\n\
BEGIN:STANDARD\r\nDTSTART:19701025T030000\r\nTZOFFSETFROM:+0200\r\nTZOFFSETTO:+0100\r\nEND:STANDARD\r\n\
END:VTIMEZONE\r\nEND:VCALENDAR\r\n";
        assert_eq!(calendar_zone(ics), Some(Tz::Europe__Paris));
    }
}
