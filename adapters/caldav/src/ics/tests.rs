//! Tests of writing iCalendar: new objects, merges into stored ones and dropped instances.

use super::*;
use crate::mapping::{parse_object, When};
use chrono::TimeZone;

fn at(y: i32, mo: u32, d: u32, h: u32, zone: &str) -> pb::EventTime {
    calbridge::time::instant(Utc.with_ymd_and_hms(y, mo, d, h, 0, 0).unwrap(), zone)
}

#[test]
fn a_zoned_event_round_trips_with_its_fields() {
    let event = pb::Event {
        title: "Plan; review, \"q3\"".into(),
        description: "line one\nline two".into(),
        location: "Room 1".into(),
        start: Some(at(2026, 7, 1, 8, "Europe/Berlin")),
        end: Some(at(2026, 7, 1, 9, "Europe/Berlin")),
        transparency: Transparency::Transparent as i32,
        status: EventStatus::Tentative as i32,
        organizer: Some(pb::Organizer {
            email: "boss@example.com".into(),
            display_name: "The Boss".into(),
        }),
        attendees: vec![pb::Attendee {
            email: "a@example.com".into(),
            display_name: "Ann, A.".into(),
            response_status: ResponseStatus::Accepted as i32,
            optional: true,
        }],
        ..Default::default()
    };
    let ics = event_to_ics(&event, "k1@calbridge", 0, Utc::now()).unwrap();
    assert!(
        ics.contains("DTSTART;TZID=Europe/Berlin:20260701T100000"),
        "{ics}"
    );
    assert!(ics.contains("BEGIN:VTIMEZONE"), "{ics}");
    assert!(ics.lines().all(|l| l.len() <= 75));
    let obj = parse_object(&ics, None).unwrap();
    let v = obj.master.unwrap();
    assert_eq!(v.uid, "k1@calbridge");
    assert_eq!(v.summary, event.title);
    assert_eq!(v.description, event.description);
    assert_eq!(
        v.start,
        When::At(
            Utc.with_ymd_and_hms(2026, 7, 1, 8, 0, 0).unwrap(),
            Tz::Europe__Berlin
        )
    );
    assert_eq!(v.status, EventStatus::Tentative);
    assert_eq!(v.transparency, Transparency::Transparent);
    assert_eq!(v.organizer, event.organizer);
    assert_eq!(v.attendees, event.attendees);
}

#[test]
fn all_day_and_utc_events_are_written_plainly() {
    let event = pb::Event {
        title: "Holiday".into(),
        start: Some(calbridge::time::date(
            chrono::NaiveDate::from_ymd_opt(2026, 12, 24).unwrap(),
        )),
        end: Some(calbridge::time::date(
            chrono::NaiveDate::from_ymd_opt(2026, 12, 26).unwrap(),
        )),
        ..Default::default()
    };
    let ics = event_to_ics(&event, "u", 1, Utc::now()).unwrap();
    assert!(ics.contains("DTSTART;VALUE=DATE:20261224\r\n"));
    assert!(ics.contains("DTEND;VALUE=DATE:20261226\r\n"));
    assert!(!ics.contains("VTIMEZONE"));
    let utc = pb::Event {
        start: Some(at(2026, 1, 5, 9, "")),
        end: Some(at(2026, 1, 5, 10, "")),
        ..Default::default()
    };
    assert!(event_to_ics(&utc, "u", 0, Utc::now())
        .unwrap()
        .contains("DTSTART:20260105T090000Z\r\n"));
}

/// An object as another client stored it: a Windows TZID, an alarm,
/// X- properties, a category, a summary with a language, an attendee
/// with RSVP, DURATION instead of DTEND, a folded description.
const STORED: &str = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Other//EN\r\n\
X-WR-CALNAME:Work\r\n\
BEGIN:VTIMEZONE\r\nTZID:W. Europe Standard Time\r\nBEGIN:STANDARD\r\n\
DTSTART:16010101T030000\r\nTZOFFSETFROM:+0200\r\nTZOFFSETTO:+0100\r\n\
RRULE:FREQ=YEARLY;BYDAY=-1SU;BYMONTH=10\r\nEND:STANDARD\r\nBEGIN:DAYLIGHT\r\n\
DTSTART:16010101T020000\r\nTZOFFSETFROM:+0100\r\nTZOFFSETTO:+0200\r\n\
RRULE:FREQ=YEARLY;BYDAY=-1SU;BYMONTH=3\r\nEND:DAYLIGHT\r\nEND:VTIMEZONE\r\n\
BEGIN:VEVENT\r\nUID:other-1\r\nDTSTAMP:20260101T000000Z\r\nSEQUENCE:3\r\n\
LAST-MODIFIED:20260101T000000Z\r\n\
DTSTART;TZID=W. Europe Standard Time:20260701T100000\r\nDURATION:PT1H\r\n\
SUMMARY;LANGUAGE=de:Planung\r\nLOCATION:Raum 1\r\n\
DESCRIPTION:A long description that another client folded at a place of i\r\n ts choosing.\r\n\
CATEGORIES:Work,Planning\r\nX-MOZ-GENERATION:7\r\nX-APPLE-TRAVEL-ADVISORY-BEHAVIOR:AUTOMATIC\r\n\
ORGANIZER;CN=Boss:mailto:boss@example.com\r\n\
ATTENDEE;CN=Ann;PARTSTAT=ACCEPTED;ROLE=REQ-PARTICIPANT;RSVP=TRUE;X-NUM-GUESTS=0:mailto:ann@example.com\r\n\
ATTENDEE;PARTSTAT=NEEDS-ACTION;ROLE=REQ-PARTICIPANT:mailto:bob@example.com\r\n\
BEGIN:VALARM\r\nACTION:DISPLAY\r\nDESCRIPTION:Reminder\r\nTRIGGER:-PT15M\r\nX-WR-ALARMUID:a1\r\nEND:VALARM\r\n\
END:VEVENT\r\nEND:VCALENDAR\r\n";

/// The stored object as a sync reads it.
fn stored_event() -> pb::Event {
    let obj = parse_object(STORED, None).unwrap();
    single_event_of(&obj)
}

fn single_event_of(obj: &crate::mapping::CalendarObject) -> pb::Event {
    let v = obj.master.as_ref().unwrap();
    crate::mapping::EventParts {
        vevent: v,
        id: "/c/other-1.ics".into(),
        etag: "\"1\"",
        start: v.start,
        end: v.end,
        link: None,
        busy_only: false,
    }
    .build()
}

#[test]
fn an_update_rewrites_only_the_owned_fields_that_changed() {
    let mut e = stored_event();
    assert_eq!(e.start.as_ref().unwrap().time_zone, "Europe/Berlin");
    e.title = "Planning (moved)".into();
    e.end = Some(at(2026, 7, 1, 10, "Europe/Berlin"));
    e.attendees.retain(|a| a.email != "bob@example.com");
    e.attendees.push(pb::Attendee {
        email: "cy@example.com".into(),
        response_status: ResponseStatus::NeedsAction as i32,
        ..Default::default()
    });
    let now = Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).unwrap();
    let out = merge_event(STORED, &e, "other-1", 4, now).unwrap().unwrap();
    // Kept as written: everything calbridge does not own, and the owned
    // fields that did not change.
    for kept in [
        "X-WR-CALNAME:Work\r\n",
        "TZID:W. Europe Standard Time\r\n",
        "DTSTART;TZID=W. Europe Standard Time:20260701T100000\r\n",
        "LOCATION:Raum 1\r\n",
        "DESCRIPTION:A long description that another client folded at a place of i\r\n ts choosing.\r\n",
        "CATEGORIES:Work,Planning\r\n",
        "X-MOZ-GENERATION:7\r\n",
        "X-APPLE-TRAVEL-ADVISORY-BEHAVIOR:AUTOMATIC\r\n",
        "ORGANIZER;CN=Boss:mailto:boss@example.com\r\n",
        "ATTENDEE;CN=Ann;PARTSTAT=ACCEPTED;ROLE=REQ-PARTICIPANT;RSVP=TRUE;X-NUM-GUESTS=0:mailto:ann@example.com\r\n",
        "BEGIN:VALARM\r\nACTION:DISPLAY\r\nDESCRIPTION:Reminder\r\nTRIGGER:-PT15M\r\nX-WR-ALARMUID:a1\r\nEND:VALARM\r\n",
        "UID:other-1\r\n",
    ] {
        assert!(out.contains(kept), "{kept:?} missing in\n{out}");
    }
    // Rewritten: the title, the end (DTEND replaces DURATION), the
    // attendee list, the revision stamps.
    for written in [
        "SUMMARY:Planning (moved)\r\n",
        "DTEND;TZID=Europe/Berlin:20260701T120000\r\n",
        "mailto:cy@example.com\r\n",
        "SEQUENCE:4\r\n",
        "DTSTAMP:20260601T120000Z\r\n",
        "LAST-MODIFIED:20260601T120000Z\r\n",
        "BEGIN:VTIMEZONE\r\nTZID:Europe/Berlin",
    ] {
        assert!(out.contains(written), "{written:?} missing in\n{out}");
    }
    for gone in [
        "DURATION",
        "bob@example.com",
        "LANGUAGE=de",
        "SEQUENCE:3",
        "20260101T000000Z",
    ] {
        assert!(!out.contains(gone), "{gone:?} left in\n{out}");
    }
    // It reads back as the event written.
    let obj = parse_object(&out, None).unwrap();
    let back = single_event_of(&obj);
    assert_eq!(back.title, e.title);
    assert_eq!(back.start, e.start);
    assert_eq!(back.end, e.end);
    assert_eq!(back.attendees, e.attendees);
    assert_eq!(back.organizer, e.organizer);
    assert_eq!(back.location, e.location);
    assert_eq!(back.description, e.description);
}

#[test]
fn an_unchanged_update_keeps_the_object_but_its_revision() {
    let e = stored_event();
    let out = merge_event(STORED, &e, "other-1", 4, Utc::now())
        .unwrap()
        .unwrap();
    let strip = |s: &str| {
        s.lines()
            .filter(|l| {
                !["DTSTAMP", "SEQUENCE", "LAST-MODIFIED"]
                    .iter()
                    .any(|p| l.starts_with(p))
            })
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let mut a = strip(&out);
    let mut b = strip(STORED);
    a.sort();
    b.sort();
    assert_eq!(a, b);
}

#[test]
fn objects_that_cannot_be_merged_are_left_to_a_fresh_write() {
    let e = pb::Event {
        start: Some(at(2026, 1, 5, 9, "")),
        end: Some(at(2026, 1, 5, 10, "")),
        ..Default::default()
    };
    for stored in [
        "garbage",
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VTODO\r\nUID:t\r\nEND:VTODO\r\nEND:VCALENDAR\r\n",
    ] {
        assert_eq!(merge_event(stored, &e, "u", 1, Utc::now()).unwrap(), None);
    }
    // The event itself is still checked.
    let bad = pb::Event {
        start: Some(at(2026, 1, 5, 9, "Mars/Base")),
        ..e
    };
    assert!(merge_event(STORED, &bad, "u", 1, Utc::now()).is_err());
}

#[test]
fn bad_events_name_the_field() {
    let e = pb::Event {
        start: Some(at(2026, 1, 5, 9, "Mars/Base")),
        end: Some(at(2026, 1, 5, 10, "")),
        ..Default::default()
    };
    let err = event_to_ics(&e, "u", 0, Utc::now()).unwrap_err();
    assert!(
        err.0.iter().any(|v| v.field.starts_with("event.start")),
        "{err}"
    );
    let series = pb::Event {
        start: Some(at(2026, 1, 5, 9, "")),
        end: Some(at(2026, 1, 5, 10, "")),
        recurrence: vec![
            "RRULE:FREQ=DAILY".into(),
            "DTSTART:20260105T090000Z".into(),
            "EXDATE;TZID=Mars/Base:20260106T090000".into(),
        ],
        ..Default::default()
    };
    let err = event_to_ics(&series, "u", 0, Utc::now()).unwrap_err();
    let fields: Vec<&str> = err.0.iter().map(|v| v.field.as_str()).collect();
    assert_eq!(
        fields,
        ["event.recurrence[1]", "event.recurrence[2]"],
        "{err}"
    );
    let unreadable = pb::Event {
        recurrence: vec!["RRULE:FREQ=SOMETIMES".into()],
        ..series
    };
    let err = event_to_ics(&unreadable, "u", 0, Utc::now()).unwrap_err();
    assert!(err.0.iter().any(|v| v.field == "event.recurrence"), "{err}");
}

/// The instance ids of `data`'s events in 2026.
fn instance_ids(data: &str) -> Vec<String> {
    let obj = parse_object(data, None).unwrap();
    let window = crate::recurrence::Window {
        start: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
        end: Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap(),
    };
    crate::recurrence::expand(&obj, "/c/s.ics", "e1", window, false)
        .unwrap()
        .into_iter()
        .map(|e| e.provider_event_id)
        .collect()
}

/// Drops the instance `suffix` of `data`; checks that exactly it left
/// and that `exdate` was written; returns the new object.
fn drop_checked(data: &str, suffix: &str, exdate: &str) -> String {
    let obj = parse_object(data, None).unwrap();
    let original = crate::recurrence::find_instance(&obj, suffix).expect("an instance");
    let out = drop_instance(data, &original, obj.floating_zone).expect("dropped");
    let before = instance_ids(data);
    let after = instance_ids(&out);
    let gone = format!("/c/s.ics#{suffix}");
    assert!(before.contains(&gone), "{before:?}");
    let expected: Vec<String> = before.into_iter().filter(|id| *id != gone).collect();
    assert_eq!(after, expected);
    assert!(out.contains(exdate), "{exdate} missing in\n{out}");
    out
}

#[test]
fn one_instance_of_a_zoned_series_is_dropped_by_an_exdate_in_its_zone() {
    let data = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//x//EN\r\n\
BEGIN:VTIMEZONE\r\nTZID:Europe/Berlin\r\nBEGIN:STANDARD\r\nDTSTART:19701025T030000\r\n\
TZOFFSETFROM:+0200\r\nTZOFFSETTO:+0100\r\nRRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU\r\n\
END:STANDARD\r\nBEGIN:DAYLIGHT\r\nDTSTART:19700329T020000\r\nTZOFFSETFROM:+0100\r\n\
TZOFFSETTO:+0200\r\nRRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU\r\nEND:DAYLIGHT\r\nEND:VTIMEZONE\r\n\
BEGIN:VEVENT\r\nUID:s1\r\nDTSTAMP:20260101T000000Z\r\n\
DTSTART;TZID=Europe/Berlin:20260105T090000\r\nDTEND;TZID=Europe/Berlin:20260105T093000\r\n\
RRULE:FREQ=WEEKLY;COUNT=4\r\nSUMMARY:Standup\r\nX-OTHER-CLIENT:kept\r\n\
BEGIN:VALARM\r\nACTION:DISPLAY\r\nTRIGGER:-PT5M\r\nDESCRIPTION:x\r\nEND:VALARM\r\n\
END:VEVENT\r\nEND:VCALENDAR\r\n";
    // 12 January, 09:00 in Berlin is 08:00 UTC.
    let out = drop_checked(
        data,
        "20260112T080000Z",
        "EXDATE;TZID=Europe/Berlin:20260112T090000",
    );
    assert!(out.contains("X-OTHER-CLIENT:kept") && out.contains("BEGIN:VALARM"));
    // The first instance (DTSTART itself) can go too.
    drop_checked(
        &out,
        "20260105T080000Z",
        "EXDATE;TZID=Europe/Berlin:20260105T090000",
    );
}

#[test]
fn an_overridden_instance_of_a_utc_series_loses_its_override_too() {
    let data = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//x//EN\r\n\
BEGIN:VEVENT\r\nUID:s2\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:20260301T100000Z\r\n\
DURATION:PT1H\r\nRRULE:FREQ=DAILY;COUNT=3\r\nSUMMARY:Daily\r\nEND:VEVENT\r\n\
BEGIN:VEVENT\r\nUID:s2\r\nDTSTAMP:20260101T000000Z\r\nRECURRENCE-ID:20260302T100000Z\r\n\
DTSTART:20260302T140000Z\r\nDURATION:PT1H\r\nSUMMARY:Moved\r\nEND:VEVENT\r\n\
BEGIN:VEVENT\r\nUID:s2\r\nDTSTAMP:20260101T000000Z\r\nRECURRENCE-ID:20260303T100000Z\r\n\
DTSTART:20260303T150000Z\r\nDURATION:PT1H\r\nSUMMARY:Kept override\r\nEND:VEVENT\r\n\
END:VCALENDAR\r\n";
    let out = drop_checked(data, "20260302T100000Z", "EXDATE:20260302T100000Z");
    assert!(!out.contains("SUMMARY:Moved"), "{out}");
    assert!(out.contains("SUMMARY:Kept override"), "{out}");
}

#[test]
fn an_instance_of_an_all_day_series_is_dropped_by_a_date() {
    let data = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//x//EN\r\n\
BEGIN:VEVENT\r\nUID:s3\r\nDTSTAMP:20260101T000000Z\r\nDTSTART;VALUE=DATE:20260601\r\n\
DTEND;VALUE=DATE:20260602\r\nRRULE:FREQ=MONTHLY;COUNT=3\r\nSUMMARY:Rent\r\nEND:VEVENT\r\n\
END:VCALENDAR\r\n";
    drop_checked(data, "20260701", "EXDATE;VALUE=DATE:20260701");
}

#[test]
fn a_floating_series_is_dropped_in_wall_clock_time_and_strangers_are_refused() {
    let data = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//x//EN\r\n\
BEGIN:VEVENT\r\nUID:s4\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:20260401T070000\r\n\
DTEND:20260401T080000\r\nRRULE:FREQ=DAILY;COUNT=2\r\nSUMMARY:Run\r\nEND:VEVENT\r\n\
END:VCALENDAR\r\n";
    drop_checked(data, "20260402T070000Z", "EXDATE:20260402T070000\r\n");
    let obj = parse_object(data, None).unwrap();
    assert_eq!(
        crate::recurrence::find_instance(&obj, "20260403T070000Z"),
        None
    );
    assert_eq!(crate::recurrence::find_instance(&obj, "garbage"), None);
    // Overrides without their master: nothing to carry an EXDATE.
    let orphan = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//x//EN\r\n\
BEGIN:VEVENT\r\nUID:s5\r\nDTSTAMP:20260101T000000Z\r\nRECURRENCE-ID:20260302T100000Z\r\n\
DTSTART:20260302T140000Z\r\nDURATION:PT1H\r\nSUMMARY:Invited\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
    let o = parse_object(orphan, None).unwrap();
    let original = crate::recurrence::find_instance(&o, "20260302T100000Z").unwrap();
    assert_eq!(drop_instance(orphan, &original, Tz::UTC), None);
}

#[test]
fn a_series_rewritten_keeps_one_of_each_property_a_vevent_may_hold_once() {
    // As Apple hands a stored series back: DTSTAMP twice in the master.
    let stored = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//x//EN\r\nBEGIN:VEVENT\r\nUID:s1\r\nDTSTAMP:20261201T000000Z\r\nDTSTAMP:20261201T000000Z \r\nDTSTART:20261210T090000Z\r\nDTEND:20261210T091500Z\r\nRRULE:FREQ=DAILY;COUNT=3\r\nSUMMARY:Standup\r\nX-APPLE-A:1\r\nX-APPLE-A:2\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
    let original = When::At(
        chrono::Utc.with_ymd_and_hms(2026, 12, 11, 9, 0, 0).unwrap(),
        chrono_tz::UTC,
    );
    let dropped = drop_instance(stored, &original, chrono_tz::UTC).expect("an instance dropped");
    assert_eq!(dropped.matches("DTSTAMP").count(), 1, "{dropped}");
    assert_eq!(
        dropped.matches("X-APPLE-A").count(),
        2,
        "other repeats stay"
    );
    assert!(dropped.contains("EXDATE:20261211T090000Z"), "{dropped}");
}

#[test]
fn a_series_whose_stored_overrides_are_too_costly_to_check_is_written_afresh_quickly() {
    // A server's object: a daily series from 2026 with 80 overrides of
    // instances near the year 9999, each of which would cost a bounded
    // expansion of its own (the series stepped through from 2026).
    let mut stored = String::from(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//x//EN\r\nBEGIN:VEVENT\r\nUID:far\r\nDTSTAMP:20261201T000000Z\r\nDTSTART:20260105T090000Z\r\nDTEND:20260105T091500Z\r\nRRULE:FREQ=DAILY\r\nSUMMARY:Standup\r\nEND:VEVENT\r\n",
    );
    for i in 0..80 {
        stored.push_str(&format!(
            "BEGIN:VEVENT\r\nUID:far\r\nDTSTAMP:20261201T000000Z\r\nRECURRENCE-ID:9998{:02}{:02}T090000Z\r\nDTSTART:9998{:02}{:02}T100000Z\r\nDTEND:9998{:02}{:02}T101500Z\r\nSUMMARY:Moved {i}\r\nEND:VEVENT\r\n",
            1 + i / 28,
            1 + i % 28,
            1 + i / 28,
            1 + i % 28,
            1 + i / 28,
            1 + i % 28,
        ));
    }
    stored.push_str("END:VCALENDAR\r\n");
    let mut event = stored_event();
    event.recurrence = vec!["RRULE:FREQ=DAILY".into()];
    let started = std::time::Instant::now();
    let rewritten = replace_series(&stored, &event, "far", 2, chrono::Utc::now(), None).unwrap();
    let took = started.elapsed();
    // One budget for all the overrides (each alone would take up to the
    // whole budget): past it the object is written afresh.
    assert_eq!(rewritten, None);
    assert!(
        took < calbridge::expansion::MAX_TIME * 8,
        "pruning took {took:?}"
    );
}
