//! Provider data held to the contract's field limits. What a provider (or
//! an adapter) hands the scheduler is as hostile as caller input: an event
//! whose identity cannot be stored (an id, version or UID too long or with
//! control characters, times that do not parse or lie outside years
//! 1-9999, an end before its start) is refused, so the scheduler skips and
//! reports that one item and goes on with the rest of its calendar; text
//! over its limit is cut (at a character boundary) rather than losing the
//! event, and lists are cut to their bound.

use crate::limits;
use crate::pb::{Event, SkippedItem};
use crate::time::{parse_event_time, Boundary};

/// The longest provider event id kept: a calendar href plus an instance
/// suffix.
pub const MAX_PROVIDER_EVENT_ID_BYTES: usize = limits::MAX_CALENDAR_ID_BYTES + 64;
/// The most skipped items one page may report, and the longest item id and
/// reason kept of each.
pub const MAX_SKIPPED_PER_PAGE: usize = 1000;
/// The longest skipped-item reason kept.
pub const MAX_SKIPPED_REASON_BYTES: usize = 512;

/// What [`bound_event`] did to a kept event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trimmed(pub Vec<&'static str>);

/// Holds one provider event to the limits: `Err` (a reason that quotes
/// nothing of the event) when it cannot be kept, else the fields cut.
pub fn bound_event(e: &mut Event) -> Result<Trimmed, String> {
    id_like(
        "provider_event_id",
        &e.provider_event_id,
        MAX_PROVIDER_EVENT_ID_BYTES,
    )?;
    if e.version.is_empty() {
        return Err("the provider gave the event no version".into());
    }
    id_like("version", &e.version, limits::MAX_VERSION_BYTES)?;
    if !e.ical_uid.is_empty() {
        id_like("ical_uid", &e.ical_uid, limits::MAX_ICAL_UID_BYTES)?;
    }
    let start = when("start", e.start.as_ref())?;
    let end = when("end", e.end.as_ref())?;
    let ordered = match (start, end) {
        (Boundary::Instant(a), Boundary::Instant(b)) => b >= a,
        (Boundary::Date(a), Boundary::Date(b)) => b >= a,
        _ => false,
    };
    if !ordered {
        return Err("the event ends before it starts, or mixes a date with a time".into());
    }
    for t in [e.start.as_ref(), e.end.as_ref()].into_iter().flatten() {
        if t.time_zone.len() > limits::MAX_ZONE_BYTES {
            return Err("the event's time zone name is too long".into());
        }
    }
    let mut cut = Trimmed::default();
    text(&mut cut, "title", &mut e.title, limits::MAX_TITLE_BYTES);
    text(
        &mut cut,
        "location",
        &mut e.location,
        limits::MAX_TITLE_BYTES,
    );
    text(
        &mut cut,
        "description",
        &mut e.description,
        limits::MAX_DESCRIPTION_BYTES,
    );
    if e.attendees.len() > limits::MAX_ATTENDEES {
        e.attendees.truncate(limits::MAX_ATTENDEES);
        cut.0.push("attendees");
    }
    let before = e.attendees.len();
    e.attendees.retain(|a| email_ok(&a.email));
    if e.attendees.len() != before {
        cut.0.push("attendees.email");
    }
    for a in &mut e.attendees {
        text(
            &mut cut,
            "attendees.display_name",
            &mut a.display_name,
            limits::MAX_TITLE_BYTES,
        );
    }
    if let Some(o) = e.organizer.as_mut() {
        if !o.email.is_empty() && !email_ok(&o.email) {
            o.email.clear();
            cut.0.push("organizer.email");
        }
        text(
            &mut cut,
            "organizer.display_name",
            &mut o.display_name,
            limits::MAX_TITLE_BYTES,
        );
    }
    if e.recurrence.len() > limits::MAX_RECURRENCE_LINES
        || e.recurrence.iter().map(String::len).sum::<usize>() > limits::MAX_RECURRENCE_BYTES
    {
        return Err("the event's recurrence is longer than calbridge keeps".into());
    }
    if let Some(link) = &e.recurrence_link {
        id_like(
            "recurrence_link.series_event_id",
            &link.series_event_id,
            MAX_PROVIDER_EVENT_ID_BYTES,
        )?;
    }
    cut.0.dedup();
    Ok(cut)
}

/// Holds an adapter's skipped-item reports to their bounds (count, id and
/// reason lengths).
pub fn bound_skipped(items: &mut Vec<SkippedItem>) {
    items.truncate(MAX_SKIPPED_PER_PAGE);
    for s in items {
        cut_at(&mut s.item_id, MAX_PROVIDER_EVENT_ID_BYTES);
        cut_at(&mut s.reason, MAX_SKIPPED_REASON_BYTES);
    }
}

/// An id of at most `max` bytes without control or direction-changing
/// characters, shortened for a report (at most 256 bytes).
pub fn report_id(id: &str) -> String {
    let mut s: String = id
        .chars()
        .map(|c| if forbidden(c) { '\u{fffd}' } else { c })
        .collect();
    cut_at(&mut s, 256);
    s
}

fn id_like(field: &str, v: &str, max: usize) -> Result<(), String> {
    if v.is_empty() {
        return Err(format!("the event's {field} is empty"));
    }
    if v.len() > max {
        return Err(format!("the event's {field} is longer than {max} bytes"));
    }
    if v.chars().any(forbidden) {
        return Err(format!(
            "the event's {field} holds control or direction-changing characters"
        ));
    }
    Ok(())
}

/// Control characters, bidirectional marks, overrides and isolates, and
/// line or paragraph separators: never in an id (the API's own rule,
/// [`crate::validate::forbidden_in_id`]).
pub fn forbidden(c: char) -> bool {
    crate::validate::forbidden_in_id(c)
}

fn when(field: &str, t: Option<&crate::pb::EventTime>) -> Result<Boundary, String> {
    let t = t.ok_or_else(|| format!("the event has no {field}"))?;
    let b = parse_event_time(t).map_err(|_| format!("the event's {field} does not parse"))?;
    let year = match b {
        Boundary::Instant(i) => chrono::Datelike::year(&i),
        Boundary::Date(d) => chrono::Datelike::year(&d),
    };
    if !(1..=9999).contains(&year) {
        return Err(format!("the event's {field} is outside years 1 to 9999"));
    }
    Ok(b)
}

fn email_ok(e: &str) -> bool {
    !e.is_empty() && e.len() <= limits::MAX_EMAIL_BYTES && !e.chars().any(forbidden)
}

fn text(cut: &mut Trimmed, field: &'static str, v: &mut String, max: usize) {
    if v.len() > max {
        cut_at(v, max);
        cut.0.push(field);
    }
}

/// Cuts `s` to at most `max` bytes at a character boundary.
fn cut_at(s: &mut String, max: usize) {
    if s.len() > max {
        let mut at = max;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        s.truncate(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::{Attendee, RecurrenceLink};
    use crate::time::{date, instant};
    use chrono::{NaiveDate, TimeZone, Utc};

    fn event() -> Event {
        Event {
            provider_event_id: "/cal/a.ics".into(),
            version: "\"1\"".into(),
            title: "Standup".into(),
            start: Some(instant(
                Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap(),
                "Europe/London",
            )),
            end: Some(instant(
                Utc.with_ymd_and_hms(2026, 12, 1, 9, 15, 0).unwrap(),
                "Europe/London",
            )),
            ..Default::default()
        }
    }

    #[test]
    fn a_plain_event_is_kept_untouched() {
        let mut e = event();
        assert_eq!(bound_event(&mut e), Ok(Trimmed::default()));
        assert_eq!(e, event());
    }

    #[test]
    fn identities_that_cannot_be_stored_refuse_the_event() {
        type Change = Box<dyn Fn(&mut Event)>;
        let cases: Vec<Change> = vec![
            Box::new(|e| e.provider_event_id = "x".repeat(MAX_PROVIDER_EVENT_ID_BYTES + 1)),
            Box::new(|e| e.provider_event_id = "a\u{202e}b".into()),
            Box::new(|e| e.provider_event_id = "a\u{2028}b".into()),
            Box::new(|e| e.provider_event_id = "a\nb".into()),
            Box::new(|e| e.provider_event_id.clear()),
            Box::new(|e| e.version.clear()),
            Box::new(|e| e.ical_uid = "u".repeat(1 << 20)),
            Box::new(|e| std::mem::swap(&mut e.start, &mut e.end)),
            Box::new(|e| {
                e.start = Some(date(NaiveDate::from_ymd_opt(2026, 12, 1).unwrap()));
            }),
            Box::new(|e| e.recurrence = vec!["RRULE:FREQ=DAILY".into(); 20_000]),
            Box::new(|e| {
                e.recurrence_link = Some(RecurrenceLink {
                    series_event_id: "\u{0}".into(),
                    original_start: None,
                })
            }),
        ];
        for (i, f) in cases.iter().enumerate() {
            let mut e = event();
            f(&mut e);
            let err = bound_event(&mut e).expect_err(&format!("case {i}"));
            assert!(err.len() < 200, "the reason quotes nothing: {err}");
        }
    }

    #[test]
    fn dates_outside_years_one_to_9999_refuse_the_event() {
        let mut e = event();
        e.start = Some(crate::pb::EventTime {
            value: Some(crate::pb::event_time::Value::Instant(
                prost_types::Timestamp {
                    seconds: -62_200_000_000,
                    nanos: 0,
                },
            )),
            time_zone: String::new(),
        });
        assert!(bound_event(&mut e).is_err());
    }

    #[test]
    fn long_text_is_cut_at_a_character_boundary_and_lists_to_their_bound() {
        let mut e = event();
        e.title = "é".repeat(limits::MAX_TITLE_BYTES);
        e.description = "d".repeat(limits::MAX_DESCRIPTION_BYTES * 16);
        e.attendees = (0..limits::MAX_ATTENDEES + 10)
            .map(|i| Attendee {
                email: format!("p{i}@example.com"),
                display_name: "n".repeat(5000),
                ..Default::default()
            })
            .collect();
        e.attendees[0].email = format!("{}@example.com", "x".repeat(400));
        let cut = bound_event(&mut e).unwrap();
        assert!(e.title.len() <= limits::MAX_TITLE_BYTES && e.title.chars().all(|c| c == 'é'));
        assert_eq!(e.description.len(), limits::MAX_DESCRIPTION_BYTES);
        assert_eq!(e.attendees.len(), limits::MAX_ATTENDEES - 1);
        assert!(e
            .attendees
            .iter()
            .all(|a| a.display_name.len() <= limits::MAX_TITLE_BYTES));
        for f in ["title", "description", "attendees", "attendees.email"] {
            assert!(cut.0.contains(&f), "{f} in {cut:?}");
        }
    }

    #[test]
    fn skipped_reports_are_bounded() {
        let mut items: Vec<SkippedItem> = (0..MAX_SKIPPED_PER_PAGE + 5)
            .map(|_| SkippedItem {
                item_id: "i".repeat(4096),
                reason: "r".repeat(4096),
            })
            .collect();
        bound_skipped(&mut items);
        assert_eq!(items.len(), MAX_SKIPPED_PER_PAGE);
        assert!(items
            .iter()
            .all(|s| s.item_id.len() <= MAX_PROVIDER_EVENT_ID_BYTES
                && s.reason.len() <= MAX_SKIPPED_REASON_BYTES));
        assert_eq!(report_id(&"é".repeat(1000)).len(), 256);
    }
}
