//! Custom VTIMEZONEs read from their own observances: offsets around
//! transitions, gaps and repeated hours by RFC 5545's rules, RDATE
//! transitions, the names given to their times, and the bounds.

use chrono::{NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

use super::*;
use crate::parse::parse_calendar;

fn zone(vtimezone_body: &str) -> Result<CustomZone, String> {
    let ics = format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:x\r\nBEGIN:VTIMEZONE\r\nTZID:Odd\r\n{}\r\nEND:VTIMEZONE\r\nEND:VCALENDAR\r\n",
        vtimezone_body.replace('\n', "\r\n")
    );
    let ical = parse_calendar(&ics).unwrap();
    let vtz = ical
        .components
        .iter()
        .find(|c| c.component_type == ICalendarComponentType::VTimezone)
        .unwrap();
    CustomZone::from_vtimezone(&ical, vtz, Some(Tz::Europe__Berlin))
}

/// Central European rules, as Outlook writes them.
const EUROPE: &str = "BEGIN:STANDARD
DTSTART:16010101T030000
TZOFFSETFROM:+0200
TZOFFSETTO:+0100
RRULE:FREQ=YEARLY;BYDAY=-1SU;BYMONTH=10
END:STANDARD
BEGIN:DAYLIGHT
DTSTART:16010101T020000
TZOFFSETFROM:+0100
TZOFFSETTO:+0200
RRULE:FREQ=YEARLY;BYDAY=-1SU;BYMONTH=3
END:DAYLIGHT";

fn local(y: i32, m: u32, d: u32, h: u32, mi: u32) -> NaiveDateTime {
    NaiveDate::from_ymd_opt(y, m, d)
        .unwrap()
        .and_hms_opt(h, mi, 0)
        .unwrap()
}

fn utc(y: i32, m: u32, d: u32, h: u32, mi: u32) -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, mi, 0).unwrap()
}

#[test]
fn yearly_rules_give_the_offsets_around_each_transition() {
    let z = zone(EUROPE).unwrap();
    // 2026: summer time from 03-29 01:00Z to 10-25 01:00Z.
    assert_eq!(z.offset_at(utc(2026, 3, 29, 0, 59)), 3600);
    assert_eq!(z.offset_at(utc(2026, 3, 29, 1, 0)), 7200);
    assert_eq!(z.offset_at(utc(2026, 10, 25, 0, 59)), 7200);
    assert_eq!(z.offset_at(utc(2026, 10, 25, 1, 0)), 3600);
    assert_eq!(z.to_utc(local(2026, 7, 1, 9, 0)), utc(2026, 7, 1, 7, 0));
    assert_eq!(z.to_utc(local(2026, 1, 1, 9, 0)), utc(2026, 1, 1, 8, 0));
    assert_eq!(z.to_local(utc(2026, 7, 1, 7, 0)), local(2026, 7, 1, 9, 0));
    // Every time agrees with the IANA zone these rules describe.
    for day in (0..3650).step_by(7) {
        let t = utc(2020, 1, 1, 12, 0) + chrono::Duration::days(day);
        assert_eq!(
            z.to_local(t),
            t.with_timezone(&Tz::Europe__Berlin).naive_local(),
            "{t}"
        );
    }
}

#[test]
fn a_skipped_time_takes_the_offset_before_the_gap_and_a_repeated_one_its_first() {
    let z = zone(EUROPE).unwrap();
    // 02:30 on 2026-03-29 does not exist: read at +01:00 it is 01:30Z
    // (03:30 summer time).
    assert_eq!(z.to_utc(local(2026, 3, 29, 2, 30)), utc(2026, 3, 29, 1, 30));
    // 02:30 on 2026-10-25 happens twice: the first is at +02:00.
    assert_eq!(
        z.to_utc(local(2026, 10, 25, 2, 30)),
        utc(2026, 10, 25, 0, 30)
    );
}

#[test]
fn rdate_transitions_and_ended_rules_count() {
    // +03:00, summer time at +04:00 by RDATE in 2026 only, and a daylight
    // rule that ended in 2020.
    let z = zone(
        "BEGIN:STANDARD
DTSTART:19700101T000000
TZOFFSETFROM:+0300
TZOFFSETTO:+0300
END:STANDARD
BEGIN:DAYLIGHT
DTSTART:20100328T020000
TZOFFSETFROM:+0300
TZOFFSETTO:+0400
RRULE:FREQ=YEARLY;BYDAY=-1SU;BYMONTH=3;UNTIL=20200328T230000Z
END:DAYLIGHT
BEGIN:STANDARD
DTSTART:20101031T030000
TZOFFSETFROM:+0400
TZOFFSETTO:+0300
RRULE:FREQ=YEARLY;BYDAY=-1SU;BYMONTH=10;UNTIL=20201025T000000Z
RDATE:20261004T030000
END:STANDARD
BEGIN:DAYLIGHT
DTSTART:20260405T020000
TZOFFSETFROM:+0300
TZOFFSETTO:+0400
END:DAYLIGHT",
    )
    .unwrap();
    assert_eq!(z.offset_at(utc(2019, 7, 1, 0, 0)), 4 * 3600);
    assert_eq!(z.offset_at(utc(2021, 7, 1, 0, 0)), 3 * 3600);
    assert_eq!(z.offset_at(utc(2026, 7, 1, 0, 0)), 4 * 3600);
    assert_eq!(z.offset_at(utc(2026, 11, 1, 0, 0)), 3 * 3600);
    assert_eq!(z.offset_at(utc(2027, 7, 1, 0, 0)), 3 * 3600);
}

#[test]
fn times_are_named_by_a_zone_whose_offset_agrees() {
    let z = zone(EUROPE).unwrap();
    assert_eq!(z.label_at(utc(2026, 7, 1, 0, 0)), Tz::Europe__Berlin);
    // Offsets the look-alike does not share: Etc/GMT names, else UTC.
    let odd = zone(
        "BEGIN:STANDARD\nDTSTART:19700101T000000\nTZOFFSETFROM:+0300\nTZOFFSETTO:+0300\nEND:STANDARD",
    )
    .unwrap();
    assert_eq!(odd.label_at(utc(2026, 7, 1, 0, 0)).name(), "Etc/GMT-3");
    let minutes = zone(
        "BEGIN:STANDARD\nDTSTART:19700101T000000\nTZOFFSETFROM:+0545\nTZOFFSETTO:+0545\nEND:STANDARD",
    )
    .unwrap();
    assert_eq!(minutes.label_at(utc(2026, 7, 1, 0, 0)), Tz::UTC);
    assert_eq!(
        minutes.to_utc(local(2026, 7, 1, 9, 0)),
        utc(2026, 7, 1, 3, 15)
    );
}

#[test]
fn unreadable_and_unbounded_vtimezones_are_refused() {
    for (body, why) in [
        ("", "no STANDARD or DAYLIGHT"),
        (
            "BEGIN:STANDARD\nDTSTART:19700101T000000\nTZOFFSETFROM:+0100\nEND:STANDARD",
            "TZOFFSETTO",
        ),
        (
            "BEGIN:STANDARD\nTZOFFSETFROM:+0100\nTZOFFSETTO:+0100\nEND:STANDARD",
            "DTSTART",
        ),
        (
            "BEGIN:STANDARD\nDTSTART:19700101T000000\nTZOFFSETFROM:+0100\nTZOFFSETTO:+9900\nEND:STANDARD",
            "TZOFFSETTO",
        ),
        (
            "BEGIN:STANDARD\nDTSTART:20200101T000000\nTZOFFSETFROM:+0100\nTZOFFSETTO:+0200\nRRULE:FREQ=DAILY\nEND:STANDARD",
            "transitions",
        ),
    ] {
        let started = std::time::Instant::now();
        let err = zone(body).unwrap_err();
        assert!(err.contains(why), "{body}: {err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }
    let many = "BEGIN:STANDARD\nDTSTART:19700101T000000\nTZOFFSETFROM:+0100\nTZOFFSETTO:+0100\nEND:STANDARD\n"
        .repeat(limits::MAX_OBSERVANCES + 1);
    assert!(zone(&many).unwrap_err().contains("more than"));
}
