//! Input validation shared by the scheduler and the adapters: every check
//! names the offending field by its path in the request.

use crate::error::Invalid;
use crate::limits;
use crate::pb::{Event, TimeWindow};
use crate::time::{from_timestamp, parse_event_time, Boundary};

/// Checks an id: non-empty, at most `max` bytes, none of the characters
/// [`forbidden_in_id`] names. One pass over the bytes.
pub fn check_id(inv: &mut Invalid, field: &str, value: &str, max: usize) {
    if value.is_empty() {
        inv.push(field, "must not be empty");
    } else if value.len() > max {
        inv.push(field, format!("must be at most {max} bytes"));
    } else if !value.bytes().all(|b| (0x20..0x7f).contains(&b))
        && value.chars().any(forbidden_in_id)
    {
        inv.push(
            field,
            "must not contain control, bidirectional-formatting or line-separator characters",
        );
    }
}

/// True for the characters no id may contain: control characters (C0, DEL,
/// C1), the bidirectional formatting characters (U+200E/U+200F marks,
/// U+061C, the U+202A..U+202E embeddings and overrides, the U+2066..U+2069
/// isolates), which make an id display as another, and the U+2028/U+2029
/// line and paragraph separators, which split it in logs.
pub fn forbidden_in_id(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
                | '\u{2028}'
                | '\u{2029}'
        )
}

/// Checks a free-text field's length.
pub fn check_len(inv: &mut Invalid, field: &str, value: &str, max: usize) {
    if value.len() > max {
        inv.push(field, format!("must be at most {max} bytes"));
    }
}

/// Checks a time window: both ends set and `end` after `start`; returns the
/// parsed window when valid.
pub fn check_window(
    inv: &mut Invalid,
    field: &str,
    window: Option<&TimeWindow>,
) -> Option<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)> {
    let Some(w) = window else {
        inv.push(field, "must be set");
        return None;
    };
    let start = match w.start.as_ref().map(from_timestamp) {
        None => {
            inv.push(format!("{field}.start"), "must be set");
            None
        }
        Some(None) => {
            inv.push(format!("{field}.start"), "is out of range");
            None
        }
        Some(Some(t)) => Some(t),
    };
    let end = match w.end.as_ref().map(from_timestamp) {
        None => {
            inv.push(format!("{field}.end"), "must be set");
            None
        }
        Some(None) => {
            inv.push(format!("{field}.end"), "is out of range");
            None
        }
        Some(Some(t)) => Some(t),
    };
    let (start, end) = (start?, end?);
    if end <= start {
        inv.push(
            format!("{field}.end"),
            format!("must be after {field}.start"),
        );
        return None;
    }
    Some((start, end))
}

/// Checks the writable fields of an event (`prefix` is its path, e.g.
/// `event`): every string and list within its bound, times in years
/// 1..=9999. Linear in the event's size.
pub fn check_event(inv: &mut Invalid, prefix: &str, e: &Event) {
    for (name, value, max) in [
        ("account_id", &e.account_id, limits::MAX_ID_BYTES),
        ("calendar_id", &e.calendar_id, limits::MAX_CALENDAR_ID_BYTES),
        (
            "provider_event_id",
            &e.provider_event_id,
            limits::MAX_CALENDAR_ID_BYTES,
        ),
        ("client_event_id", &e.client_event_id, limits::MAX_ID_BYTES),
        ("ical_uid", &e.ical_uid, limits::MAX_ICAL_UID_BYTES),
        ("version", &e.version, limits::MAX_VERSION_BYTES),
    ] {
        check_len(inv, &format!("{prefix}.{name}"), value, max);
    }
    check_len(
        inv,
        &format!("{prefix}.title"),
        &e.title,
        limits::MAX_TITLE_BYTES,
    );
    check_len(
        inv,
        &format!("{prefix}.location"),
        &e.location,
        limits::MAX_TITLE_BYTES,
    );
    check_len(
        inv,
        &format!("{prefix}.description"),
        &e.description,
        limits::MAX_DESCRIPTION_BYTES,
    );
    let start = boundary(inv, &format!("{prefix}.start"), e.start.as_ref());
    let end = boundary(inv, &format!("{prefix}.end"), e.end.as_ref());
    if let (Some(s), Some(en)) = (start, end) {
        match (s, en) {
            (Boundary::Instant(a), Boundary::Instant(b)) if b <= a => inv.push(
                format!("{prefix}.end"),
                format!("must be after {prefix}.start"),
            ),
            (Boundary::Date(a), Boundary::Date(b)) if b <= a => inv.push(
                format!("{prefix}.end"),
                format!("must be after {prefix}.start (all-day end dates are exclusive)"),
            ),
            (Boundary::Instant(_), Boundary::Date(_))
            | (Boundary::Date(_), Boundary::Instant(_)) => inv.push(
                format!("{prefix}.end"),
                format!("must be of the same kind as {prefix}.start (both instants or both dates)"),
            ),
            _ => {}
        }
    }
    if e.attendees.len() > limits::MAX_ATTENDEES {
        inv.push(
            format!("{prefix}.attendees"),
            format!("must have at most {} entries", limits::MAX_ATTENDEES),
        );
    }
    for (i, a) in e.attendees.iter().enumerate() {
        let f = format!("{prefix}.attendees[{i}].email");
        if a.email.is_empty() {
            inv.push(f, "must not be empty");
        } else if a.email.len() > limits::MAX_EMAIL_BYTES || !a.email.contains('@') {
            inv.push(f, "must be an e-mail address of at most 320 bytes");
        }
        check_len(
            inv,
            &format!("{prefix}.attendees[{i}].display_name"),
            &a.display_name,
            limits::MAX_TITLE_BYTES,
        );
    }
    if let Some(o) = &e.organizer {
        if !o.email.is_empty()
            && (o.email.len() > limits::MAX_EMAIL_BYTES || !o.email.contains('@'))
        {
            inv.push(
                format!("{prefix}.organizer.email"),
                "must be an e-mail address of at most 320 bytes",
            );
        }
        check_len(
            inv,
            &format!("{prefix}.organizer.display_name"),
            &o.display_name,
            limits::MAX_TITLE_BYTES,
        );
    }
    check_recurrence(inv, &format!("{prefix}.recurrence"), &e.recurrence);
    if let Some(link) = &e.recurrence_link {
        check_len(
            inv,
            &format!("{prefix}.recurrence_link.series_event_id"),
            &link.series_event_id,
            limits::MAX_CALENDAR_ID_BYTES,
        );
        if let Some(t) = &link.original_start {
            boundary(
                inv,
                &format!("{prefix}.recurrence_link.original_start"),
                Some(t),
            );
        }
    }
}

/// Checks an event's recurrence lines at `field`: at most
/// [`MAX_RECURRENCE_LINES`](limits::MAX_RECURRENCE_LINES) lines of at most
/// [`MAX_RECURRENCE_BYTES`](limits::MAX_RECURRENCE_BYTES) in all, each one
/// line of printable ASCII (RRULE, RDATE and EXDATE values and their TZID
/// parameters are ASCII; rule parsers are not all safe on anything else).
/// Their meaning is the adapter's to check.
pub fn check_recurrence(inv: &mut Invalid, field: &str, lines: &[String]) {
    if lines.len() > limits::MAX_RECURRENCE_LINES {
        inv.push(
            field,
            format!("must have at most {} lines", limits::MAX_RECURRENCE_LINES),
        );
        return;
    }
    let total: usize = lines.iter().map(String::len).sum();
    if total > limits::MAX_RECURRENCE_BYTES {
        inv.push(
            field,
            format!(
                "must have at most {} bytes in all",
                limits::MAX_RECURRENCE_BYTES
            ),
        );
        return;
    }
    if let Some(i) = lines
        .iter()
        .position(|l| !l.bytes().all(|b| (0x20..0x7f).contains(&b)))
    {
        inv.push(
            format!("{field}[{i}]"),
            "must be one line of printable ASCII",
        );
    }
}

fn boundary(inv: &mut Invalid, field: &str, t: Option<&crate::pb::EventTime>) -> Option<Boundary> {
    let Some(t) = t else {
        inv.push(field, "must be set");
        return None;
    };
    match parse_event_time(t) {
        Ok(b) => Some(b),
        Err(e) => {
            let f = if matches!(e, crate::time::TimeError::UnknownZone(_)) {
                format!("{field}.time_zone")
            } else {
                field.to_string()
            };
            inv.push(f, e.to_string());
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::{date, instant};
    use chrono::{NaiveDate, TimeZone, Utc};

    fn event() -> Event {
        Event {
            title: "Planning".into(),
            start: Some(instant(
                Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap(),
                "Europe/London",
            )),
            end: Some(instant(
                Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap(),
                "Europe/London",
            )),
            ..Default::default()
        }
    }

    fn fields(e: &Event) -> Vec<String> {
        let mut inv = Invalid::default();
        check_event(&mut inv, "event", e);
        inv.0.into_iter().map(|v| v.field).collect()
    }

    #[test]
    fn a_good_event_passes() {
        assert!(fields(&event()).is_empty());
    }

    #[test]
    fn end_before_start_names_the_end() {
        let mut e = event();
        std::mem::swap(&mut e.start, &mut e.end);
        assert_eq!(fields(&e), vec!["event.end"]);
    }

    #[test]
    fn unknown_zone_names_the_zone_field() {
        let mut e = event();
        e.start.as_mut().unwrap().time_zone = "Nowhere/Special".into();
        assert_eq!(fields(&e), vec!["event.start.time_zone"]);
    }

    #[test]
    fn mixed_kinds_and_oversized_title_are_both_reported() {
        let mut e = event();
        e.end = Some(date(NaiveDate::from_ymd_opt(2026, 12, 2).unwrap()));
        e.title = "x".repeat(limits::MAX_TITLE_BYTES + 1);
        assert_eq!(fields(&e), vec!["event.title", "event.end"]);
    }

    #[test]
    fn ids_with_bidi_controls_or_line_separators_are_refused() {
        for bad in [
            "acc\u{202E}gpj.exe",
            "a\u{2066}b",
            "a\u{2069}",
            "\u{200F}x",
            "x\u{200E}",
            "x\u{061C}",
            "a\u{2028}b",
            "a\u{2029}b",
            "a\u{0085}b",
            "a\nb",
        ] {
            let mut inv = Invalid::default();
            check_id(&mut inv, "account_id", bad, 256);
            assert_eq!(inv.0.len(), 1, "{bad:?} accepted");
        }
        let mut inv = Invalid::default();
        check_id(&mut inv, "calendar_id", "Zürich-日本-כהן@example.com", 256);
        assert!(inv.0.is_empty(), "{inv:?}");
    }

    #[test]
    fn recurrence_lines_uid_and_organizer_name_are_bounded() {
        let mut e = event();
        e.recurrence = vec!["RRULE:FREQ=DAILY".to_string(); limits::MAX_RECURRENCE_LINES];
        assert!(fields(&e).is_empty());
        e.recurrence.push("EXDATE:20261201T090000Z".into());
        assert_eq!(fields(&e), vec!["event.recurrence"]);
        e.recurrence = vec!["RDATE:".to_string() + &"20261201T090000Z,".repeat(5000)];
        assert_eq!(fields(&e), vec!["event.recurrence"]);
        e.recurrence = vec!["RRULE:FREQ=DAILY".into(), "RDATE:x\r\nX-INJECTED:1".into()];
        assert_eq!(fields(&e), vec!["event.recurrence[1]"]);
        // Non-ASCII in a rule once panicked a rule parser.
        e.recurrence = vec!["RRULE:FREQ=WEEKLY;BYDAY=M\u{e9}".into()];
        assert_eq!(fields(&e), vec!["event.recurrence[0]"]);
        e.recurrence.clear();
        e.ical_uid = "u".repeat(limits::MAX_ICAL_UID_BYTES + 1);
        e.organizer = Some(crate::pb::Organizer {
            email: "o@example.com".into(),
            display_name: "n".repeat(limits::MAX_TITLE_BYTES + 1),
        });
        assert_eq!(
            fields(&e),
            vec!["event.ical_uid", "event.organizer.display_name"]
        );
    }

    #[test]
    fn times_outside_years_1_to_9999_name_the_field() {
        let mut e = event();
        e.start = Some(crate::pb::EventTime {
            value: Some(crate::pb::event_time::Value::Instant(
                prost_types::Timestamp {
                    seconds: crate::time::MIN_SECONDS - 1,
                    nanos: 0,
                },
            )),
            time_zone: String::new(),
        });
        assert_eq!(fields(&e), vec!["event.start"]);
        let mut e = event();
        e.start = Some(date(NaiveDate::from_ymd_opt(2026, 12, 1).unwrap()));
        e.end = Some(crate::pb::EventTime {
            value: Some(crate::pb::event_time::Value::Date("10000-01-01".into())),
            time_zone: String::new(),
        });
        assert_eq!(fields(&e), vec!["event.end"]);
    }

    #[test]
    fn ids_are_checked_for_emptiness_and_size() {
        let mut inv = Invalid::default();
        check_id(&mut inv, "client_event_id", "", 256);
        check_id(&mut inv, "account_id", &"a".repeat(257), 256);
        check_id(&mut inv, "calendar_id", "ok", 256);
        assert_eq!(inv.0.len(), 2);
    }
}
