//! Input validation shared by the scheduler and the adapters: every check
//! names the offending field by its path in the request.

use crate::error::Invalid;
use crate::limits;
use crate::pb::{Event, TimeWindow};
use crate::time::{from_timestamp, parse_event_time, Boundary};

/// Checks an id: non-empty, at most `max` bytes, no control characters.
pub fn check_id(inv: &mut Invalid, field: &str, value: &str, max: usize) {
    if value.is_empty() {
        inv.push(field, "must not be empty");
    } else if value.len() > max {
        inv.push(field, format!("must be at most {max} bytes"));
    } else if !value.bytes().all(|b| (0x20..0x7f).contains(&b))
        && value.chars().any(char::is_control)
    {
        inv.push(field, "must not contain control characters");
    }
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
/// `event`).
pub fn check_event(inv: &mut Invalid, prefix: &str, e: &Event) {
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
    fn ids_are_checked_for_emptiness_and_size() {
        let mut inv = Invalid::default();
        check_id(&mut inv, "client_event_id", "", 256);
        check_id(&mut inv, "account_id", &"a".repeat(257), 256);
        check_id(&mut inv, "calendar_id", "ok", 256);
        assert_eq!(inv.0.len(), 2);
    }
}
