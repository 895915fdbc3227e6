//! Time-zone names as providers write them, resolved to IANA zones: IANA
//! ids, Windows names (Microsoft Graph, Outlook-made iCalendar) through
//! Unicode CLDR's `windowsZones` table as the `calcard` crate carries it,
//! Outlook's "(UTC+01:00) Amsterdam, Berlin, ..." labels, and whole-hour
//! fixed offsets as `Etc/GMT±N`. One table for every adapter, so CalDAV
//! and Microsoft Graph read a Windows name the same way.

use std::str::FromStr;

use calcard::common::timezone::Tz as CalTz;
use chrono_tz::Tz;

/// The IANA zone a provider's zone name stands for: an IANA id, a Windows
/// name ("W. Europe Standard Time"), an Outlook display label, or a
/// whole-hour fixed offset. `None` when the name is unknown or floating.
pub fn iana_zone(name: &str) -> Option<Tz> {
    if name.is_empty() || name.len() > crate::limits::MAX_ZONE_BYTES * 2 {
        return None;
    }
    CalTz::from_str(name).ok().and_then(from_calcard)
}

/// An IANA zone from `calcard`'s resolution (fixed offsets of whole hours
/// become `Etc/GMT±N`; other fixed offsets and floating times none).
pub fn from_calcard(tz: CalTz) -> Option<Tz> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_iana_and_label_names_resolve_to_iana_zones() {
        assert_eq!(
            iana_zone("Pacific Standard Time"),
            Some(Tz::America__Los_Angeles)
        );
        assert_eq!(
            iana_zone("W. Europe Standard Time"),
            Some(Tz::Europe__Berlin)
        );
        assert_eq!(iana_zone("Europe/Paris"), Some(Tz::Europe__Paris));
        assert_eq!(iana_zone("UTC"), Some(Tz::UTC));
        assert_eq!(iana_zone("No Such Standard Time"), None);
        assert_eq!(iana_zone(""), None);
    }
}
