//! Reading and expanding fixtures shaped like real producers' output
//! (Google, Outlook/Exchange, Thunderbird, iCloud), plus floating times,
//! odd series and deliberately broken files: the mapping and the expansion
//! together.

use chrono::{Datelike, TimeZone, Utc};
use chrono_tz::Tz;

use calbridge::pb::{self, event_time, EventStatus, ResponseStatus, Transparency};

use super::*;
use crate::mapping::*;

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn window(y1: i32, m1: u32, y2: i32, m2: u32) -> Window {
    Window {
        start: Utc.with_ymd_and_hms(y1, m1, 1, 0, 0, 0).unwrap(),
        end: Utc.with_ymd_and_hms(y2, m2, 1, 0, 0, 0).unwrap(),
    }
}

fn instant(t: &Option<pb::EventTime>) -> (DateTime<Utc>, String) {
    let t = t.as_ref().expect("time set");
    match &t.value {
        Some(event_time::Value::Instant(ts)) => (
            calbridge::time::from_timestamp(ts).unwrap(),
            t.time_zone.clone(),
        ),
        other => panic!("expected an instant, got {other:?}"),
    }
}

fn date(t: &Option<pb::EventTime>) -> String {
    match &t.as_ref().expect("time set").value {
        Some(event_time::Value::Date(d)) => d.clone(),
        other => panic!("expected a date, got {other:?}"),
    }
}

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
}

#[test]
fn a_google_export_maps_every_field_and_ignores_x_wr_timezone_for_utc_times() {
    let obj = parse_object(&fixture("google.ics"), None).unwrap();
    assert!(!obj.is_recurring());
    let events = expand(
        &obj,
        "/cal/g.ics",
        "\"e1\"",
        window(2026, 3, 2026, 4),
        false,
    )
    .unwrap();
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e.provider_event_id, "/cal/g.ics");
    assert_eq!(e.version, "\"e1\"");
    assert_eq!(e.ical_uid, "5v8b2c@google.com");
    assert_eq!(e.title, "Design review");
    assert_eq!(e.description, "Agenda:\nitem one, item two");
    assert_eq!(e.location, "Room 4; Building B");
    assert_eq!(instant(&e.start), (utc(2026, 3, 2, 14, 0), String::new()));
    assert_eq!(instant(&e.end).0, utc(2026, 3, 2, 15, 0));
    assert_eq!(e.status(), EventStatus::Confirmed);
    assert_eq!(e.transparency(), Transparency::Opaque);
    assert_eq!(e.organizer.as_ref().unwrap().email, "ada@example.com");
    assert_eq!(e.organizer.as_ref().unwrap().display_name, "Ada Lovelace");
    assert_eq!(e.attendees.len(), 2);
    assert_eq!(e.attendees[0].display_name, "Ada Lovelace");
    assert_eq!(e.attendees[0].response_status(), ResponseStatus::Accepted);
    assert!(!e.attendees[0].optional);
    assert_eq!(e.attendees[1].email, "bob@example.com");
    assert!(e.attendees[1].optional);
    assert_eq!(
        e.attendees[1].response_status(),
        ResponseStatus::NeedsAction
    );
    assert_eq!(
        e.created_at.unwrap().seconds,
        utc(2026, 3, 1, 11, 0).timestamp()
    );
    assert_eq!(
        e.updated_at.unwrap().seconds,
        utc(2026, 3, 1, 11, 30).timestamp()
    );
    assert!(e.recurrence_link.is_none());
}

#[test]
fn outlook_windows_zone_names_and_custom_vtimezones_resolve() {
    let obj = parse_object(&fixture("outlook.ics"), None).unwrap();
    let events = expand(&obj, "/cal/o.ics", "\"o\"", window(2026, 7, 2026, 8), false).unwrap();
    let e = &events[0];
    // 09:00 Pacific (PDT, UTC-7) = 16:00Z; 19:00 in the custom +01/+02 zone
    // (CEST in July) = 17:00Z.
    assert_eq!(
        instant(&e.start),
        (utc(2026, 7, 15, 16, 0), "America/Los_Angeles".to_string())
    );
    assert_eq!(
        instant(&e.end),
        (utc(2026, 7, 15, 17, 0), "Europe/Berlin".to_string())
    );
    assert_eq!(e.status(), EventStatus::Tentative);
    assert_eq!(e.title, "Budget");
    assert_eq!(e.attendees[0].response_status(), ResponseStatus::Tentative);
}

#[test]
fn a_thunderbird_series_expands_with_exdate_rdate_and_overrides() {
    let obj = parse_object(&fixture("thunderbird-series.ics"), None).unwrap();
    assert!(obj.is_recurring());
    let events = expand(&obj, "/cal/s.ics", "\"s\"", window(2026, 1, 2026, 3), false).unwrap();
    let ids: Vec<&str> = events
        .iter()
        .map(|e| e.provider_event_id.as_str())
        .collect();
    assert_eq!(
        ids,
        [
            "/cal/s.ics#20260105T080000Z",
            "/cal/s.ics#20260107T080000Z",
            "/cal/s.ics#20260112T080000Z",
            "/cal/s.ics#20260117T090000Z",
            "/cal/s.ics#20260119T080000Z",
            "/cal/s.ics#20260121T080000Z",
            "/cal/s.ics#20260126T080000Z",
            "/cal/s.ics#20260128T080000Z",
            "/cal/s.ics#20260202T080000Z",
        ]
    );
    let moved = &events[1];
    assert_eq!(moved.title, "Standup (moved)");
    assert_eq!(
        instant(&moved.start),
        (utc(2026, 1, 7, 10, 0), "Europe/Berlin".to_string())
    );
    let link = moved.recurrence_link.as_ref().unwrap();
    assert_eq!(link.series_event_id, "/cal/s.ics");
    assert_eq!(instant(&link.original_start).0, utc(2026, 1, 7, 8, 0));
    assert_eq!(events[2].status(), EventStatus::Cancelled);
    assert_eq!(events[0].status(), EventStatus::Confirmed);
    assert_eq!(instant(&events[0].end).0, utc(2026, 1, 5, 8, 15));
    assert!(events.iter().all(|e| e.ical_uid == "6f1c3a52-thunderbird"));
    // A window that holds only the override's new time still lists it.
    let narrow = Window {
        start: utc(2026, 1, 7, 9, 30),
        end: utc(2026, 1, 7, 12, 0),
    };
    let only = expand(&obj, "/cal/s.ics", "\"s\"", narrow, false).unwrap();
    assert_eq!(only.len(), 1);
    assert_eq!(only[0].title, "Standup (moved)");
}

#[test]
fn an_icloud_all_day_event_with_apple_properties_and_two_dtstamps() {
    let obj = parse_object(&fixture("icloud-allday.ics"), None).unwrap();
    let events = expand(&obj, "/1/c/x.ics", "\"i\"", window(2026, 4, 2026, 5), false).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(date(&events[0].start), "2026-04-01");
    assert_eq!(date(&events[0].end), "2026-04-03");
    assert_eq!(events[0].transparency(), Transparency::Transparent);
    assert_eq!(events[0].title.trim(), "Offsite");
}

#[test]
fn floating_times_use_the_calendar_zone_else_utc() {
    let data = fixture("floating.ics");
    let w = window(2026, 6, 2026, 7);
    let in_paris = parse_object(&data, Some(Tz::Europe__Paris)).unwrap();
    let e = &expand(&in_paris, "/f.ics", "1", w, false).unwrap()[0];
    assert_eq!(
        instant(&e.start),
        (utc(2026, 6, 10, 7, 0), "Europe/Paris".to_string())
    );
    assert_eq!(instant(&e.end).0, utc(2026, 6, 10, 8, 30));
    let plain = parse_object(&data, None).unwrap();
    let e = &expand(&plain, "/f.ics", "1", w, false).unwrap()[0];
    assert_eq!(instant(&e.start), (utc(2026, 6, 10, 9, 0), String::new()));
}

#[test]
fn dtstart_counts_as_an_instance_even_off_its_rule() {
    let obj = parse_object(&fixture("dtstart-off-rule.ics"), None).unwrap();
    let events = expand(&obj, "/o.ics", "1", window(2026, 1, 2026, 3), false).unwrap();
    let starts: Vec<DateTime<Utc>> = events.iter().map(|e| instant(&e.start).0).collect();
    assert_eq!(
        starts[0],
        utc(2026, 1, 6, 10, 0),
        "DTSTART (a Tuesday) comes first"
    );
    assert_eq!(starts[1], utc(2026, 1, 9, 10, 0), "then the rule's Fridays");
    assert!(starts[1..]
        .iter()
        .all(|s| s.weekday() == chrono::Weekday::Fri));
    assert!((3..=4).contains(&starts.len()), "{starts:?}");
}

#[test]
fn busy_only_strips_content() {
    let obj = parse_object(&fixture("google.ics"), None).unwrap();
    let e = &expand(&obj, "/g.ics", "1", window(2026, 3, 2026, 4), true).unwrap()[0];
    assert!(e.title.is_empty() && e.description.is_empty() && e.location.is_empty());
    assert!(e.attendees.is_empty() && e.organizer.is_none());
    assert!(e.start.is_some() && e.end.is_some());
}

#[test]
fn events_outside_the_window_are_left_out() {
    let obj = parse_object(&fixture("google.ics"), None).unwrap();
    assert!(expand(&obj, "/g.ics", "1", window(2026, 4, 2026, 5), false)
        .unwrap()
        .is_empty());
}

#[test]
fn broken_files_give_clear_errors() {
    assert!(matches!(
        parse_object(&fixture("broken-unterminated.ics"), None),
        Err(IcalError::Broken(_))
    ));
    assert_eq!(
        parse_object(&fixture("broken-date.ics"), None).unwrap_err(),
        IcalError::BadTime("DTSTART")
    );
    let rule = parse_object(&fixture("broken-rrule.ics"), None)
        .and_then(|o| expand(&o, "/b.ics", "1", window(2026, 1, 2026, 2), false));
    assert!(matches!(rule, Err(IcalError::BadRule(_))), "{rule:?}");
    assert!(matches!(
        parse_object("<html>not found</html>", None),
        Err(IcalError::NotICalendar(_))
    ));
    assert_eq!(
        parse_object("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nEND:VCALENDAR\r\n", None).unwrap_err(),
        IcalError::NoEvent
    );
    for e in [
        IcalError::BadTime("DTSTART").to_string(),
        IcalError::NoEvent.to_string(),
    ] {
        assert!(!e.is_empty());
    }
}

fn series(dtstart: &str, rules: &str) -> String {
    format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:x\r\nBEGIN:VEVENT\r\nUID:s@x\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:{dtstart}\r\nDURATION:PT1M\r\n{rules}SUMMARY:flood\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )
}

#[test]
fn an_endless_minutely_series_is_cut_at_the_instance_bound_and_says_where() {
    let obj = parse_object(&series("20260101T000000Z", "RRULE:FREQ=MINUTELY\r\n"), None).unwrap();
    let w = window(2026, 1, 2027, 1);
    let x = expand_bounded(&obj, "/c/f.ics", "1", w, false).unwrap();
    assert_eq!(x.events.len(), bounds::MAX_INSTANCES);
    let last = x.truncated_after.expect("truncation reported");
    assert_eq!(
        last.id_suffix(),
        "20260107T223900Z",
        "the 10,000th minute: 9,999 after the first"
    );
    // A bounded series is not reported.
    let daily = parse_object(&series("20260101T090000Z", "RRULE:FREQ=DAILY\r\n"), None).unwrap();
    let x = expand_bounded(&daily, "/c/d.ics", "1", w, false).unwrap();
    assert_eq!(x.events.len(), 365);
    assert_eq!(x.truncated_after, None);
}

#[test]
fn a_secondly_series_from_long_ago_is_refused_as_too_costly() {
    let obj = parse_object(&series("20000101T000000Z", "RRULE:FREQ=SECONDLY\r\n"), None).unwrap();
    let started = std::time::Instant::now();
    let err = expand(&obj, "/c/f.ics", "1", window(2026, 1, 2026, 2), false).unwrap_err();
    assert!(matches!(err, IcalError::TooCostly(_)), "{err:?}");
    eprintln!("refused after {:?}", started.elapsed());
}

#[test]
fn objects_beyond_their_bounds_are_refused_before_expansion() {
    let many_rules = "RRULE:FREQ=DAILY;COUNT=2\r\n".repeat(20_000);
    let err = parse_object(&series("20260101T000000Z", &many_rules), None).unwrap_err();
    assert!(
        matches!(err, IcalError::TooLarge(ref m) if m.contains("RRULE")),
        "{err:?}"
    );
    let many_dates = format!(
        "RRULE:FREQ=DAILY\r\nEXDATE:{}\r\n",
        (0..bounds::MAX_DATES + 1)
            .map(|i| format!("2026{:02}{:02}T000000Z", 1 + (i / 28) % 12, 1 + i % 28))
            .collect::<Vec<_>>()
            .join(",")
    );
    let err = parse_object(&series("20260101T000000Z", &many_dates), None).unwrap_err();
    assert!(
        matches!(err, IcalError::TooLarge(ref m) if m.contains("EXDATE")),
        "{err:?}"
    );
    let huge = series(
        "20260101T000000Z",
        &format!("DESCRIPTION:{}\r\n", "x".repeat(bounds::MAX_OBJECT_BYTES)),
    );
    assert!(matches!(
        parse_object(&huge, None),
        Err(IcalError::TooLarge(_))
    ));
}
