//! Tests of the conversions, against payloads as Google sends them.

use chrono::NaiveDate;

use calbridge::pb::event_time;

use super::*;

/// A timed single event as Google answers events.get.
const SINGLE: &str = r#"{
  "kind": "calendar#event",
  "etag": "\"3181161784712000\"",
  "id": "7cbh8rpc10lrc0ckih9tafss99",
  "status": "confirmed",
  "htmlLink": "https://www.google.com/calendar/event?eid=N2NiaDhycGMxMGxyYzBja2loOXRhZnNzOTkgYWxpY2VAZXhhbXBsZS5jb20",
  "created": "2026-01-02T10:00:00.000Z",
  "updated": "2026-01-03T11:30:00.123Z",
  "summary": "Design review",
  "description": "Agenda: <b>cursor</b> format",
  "location": "Room 4",
  "creator": {"email": "alice@example.com", "self": true},
  "organizer": {"email": "alice@example.com", "displayName": "Alice", "self": true},
  "start": {"dateTime": "2026-01-15T15:00:00+01:00", "timeZone": "Europe/Berlin"},
  "end": {"dateTime": "2026-01-15T16:00:00+01:00", "timeZone": "Europe/Berlin"},
  "iCalUID": "7cbh8rpc10lrc0ckih9tafss99@google.com",
  "sequence": 0,
  "attendees": [
    {"email": "alice@example.com", "organizer": true, "self": true, "responseStatus": "accepted"},
    {"email": "bob@example.com", "displayName": "Bob", "optional": true, "responseStatus": "tentative"},
    {"email": "room4@resource.calendar.google.com", "resource": true, "responseStatus": "needsAction"}
  ],
  "extendedProperties": {"private": {"calbridgeClientEventId": "order-17"}},
  "reminders": {"useDefault": true},
  "eventType": "default"
}"#;

fn parse(s: &str) -> model::Event {
    serde_json::from_str(s).unwrap()
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

#[test]
fn a_timed_single_event_maps_every_field() {
    let e = event_from_google(&parse(SINGLE), &Context::default()).unwrap();
    assert_eq!(e.provider_event_id, "7cbh8rpc10lrc0ckih9tafss99");
    assert_eq!(e.version, "\"3181161784712000\"");
    assert_eq!(e.ical_uid, "7cbh8rpc10lrc0ckih9tafss99@google.com");
    assert_eq!(e.title, "Design review");
    assert_eq!(e.location, "Room 4");
    assert_eq!(e.client_event_id, "order-17");
    assert!(e.managed);
    let start = e.start.clone().unwrap();
    assert_eq!(start.time_zone, "Europe/Berlin");
    assert_eq!(
        start.value,
        Some(event_time::Value::Instant(to_timestamp(at(
            "2026-01-15T14:00:00Z"
        ))))
    );
    assert_eq!(e.status(), pb::EventStatus::Confirmed);
    assert_eq!(e.transparency(), pb::Transparency::Opaque);
    assert_eq!(e.attendees.len(), 3);
    assert_eq!(e.attendees[1].display_name, "Bob");
    assert!(e.attendees[1].optional);
    assert_eq!(
        e.attendees[1].response_status(),
        pb::ResponseStatus::Tentative
    );
    assert_eq!(e.organizer.as_ref().unwrap().display_name, "Alice");
    assert_eq!(
        e.updated_at.unwrap().seconds,
        at("2026-01-03T11:30:00Z").timestamp()
    );
    assert!(e.recurrence_link.is_none());
    assert_eq!(e.event_type(), pb::EventType::Default);
}

#[test]
fn busy_only_mapping_drops_content() {
    let e = event_from_google(
        &parse(SINGLE),
        &Context {
            busy_only: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(e.title.is_empty() && e.description.is_empty() && e.location.is_empty());
    assert!(e.attendees.is_empty() && e.organizer.is_none());
    assert!(e.start.is_some() && e.end.is_some());
}

#[test]
fn an_all_day_event_keeps_its_exclusive_end_date() {
    let e = event_from_google(
        &parse(
            r#"{"id":"allday1","etag":"\"2\"","status":"tentative","transparency":"transparent",
               "start":{"date":"2026-11-26"},"end":{"date":"2026-11-27"},"eventType":"outOfOffice"}"#,
        ),
        &Context::default(),
    )
    .unwrap();
    assert_eq!(
        e.start.clone().unwrap().value,
        Some(event_time::Value::Date("2026-11-26".into()))
    );
    assert_eq!(
        e.end.clone().unwrap().value,
        Some(event_time::Value::Date("2026-11-27".into()))
    );
    assert_eq!(e.status(), pb::EventStatus::Tentative);
    assert_eq!(e.transparency(), pb::Transparency::Transparent);
    assert_eq!(e.event_type(), pb::EventType::OutOfOffice);
    assert!(!e.managed);
}

#[test]
fn an_exception_is_named_and_linked_as_its_instance() {
    let e = event_from_google(
        &parse(
            r#"{"id":"series1_20260112T090000Z","etag":"\"9\"","status":"confirmed",
               "summary":"Weekly (moved)","recurringEventId":"series1",
               "originalStartTime":{"dateTime":"2026-01-12T09:00:00Z","timeZone":"Europe/London"},
               "start":{"dateTime":"2026-01-12T11:00:00Z","timeZone":"Europe/London"},
               "end":{"dateTime":"2026-01-12T12:00:00Z","timeZone":"Europe/London"}}"#,
        ),
        &Context::default(),
    )
    .unwrap();
    assert_eq!(e.provider_event_id, "series1_20260112T090000Z");
    let link = e.recurrence_link.unwrap();
    assert_eq!(link.series_event_id, "series1");
    assert_eq!(
        link.original_start.unwrap().value,
        Some(event_time::Value::Instant(to_timestamp(at(
            "2026-01-12T09:00:00Z"
        ))))
    );
    assert!(e.recurrence.is_empty());
}

#[test]
fn a_date_time_without_zone_takes_the_calendars() {
    let e = event_from_google(
        &parse(
            r#"{"id":"x1234","start":{"dateTime":"2026-03-01T10:00:00-05:00"},
                "end":{"dateTime":"2026-03-01T11:00:00-05:00"}}"#,
        ),
        &Context {
            calendar_zone: Some(chrono_tz::America::New_York),
            busy_only: false,
        },
    )
    .unwrap();
    assert_eq!(e.start.unwrap().time_zone, "America/New_York");
}

#[test]
fn items_without_times_or_ids_are_refused_without_quoting_content() {
    let err = event_from_google(
        &parse(r#"{"id":"x","summary":"Secret"}"#),
        &Context::default(),
    )
    .unwrap_err();
    assert_eq!(err, MapError::MissingTime("start"));
    assert!(!err.to_string().contains("Secret"));
    assert_eq!(
        event_from_google(
            &parse(r#"{"start":{"date":"2026-01-01"}}"#),
            &Context::default()
        ),
        Err(MapError::MissingId)
    );
    assert_eq!(
        event_from_google(
            &parse(r#"{"id":"x","start":{"dateTime":"tomorrow"}}"#),
            &Context::default()
        ),
        Err(MapError::BadTime("start"))
    );
}

#[test]
fn instance_ids_follow_googles_form_and_round_trip() {
    let t = When::At(at("2024-01-15T15:00:00Z"), None);
    assert_eq!(instance_id("abc123", &t), "abc123_20240115T150000Z");
    let d = When::Date(NaiveDate::from_ymd_opt(2024, 1, 15).unwrap());
    assert_eq!(instance_id("abc123", &d), "abc123_20240115");
    assert_eq!(
        parse_instance_id("abc123_20240115T150000Z"),
        Some(("abc123", t))
    );
    assert_eq!(parse_instance_id("abc123_20240115"), Some(("abc123", d)));
    assert_eq!(parse_instance_id("abc123"), None);
    assert_eq!(parse_instance_id("_20240115"), None);
    assert_eq!(parse_instance_id("abc_notadate"), None);
}

#[test]
fn idempotency_keys_become_valid_google_ids() {
    let hex = "0123456789abcdef0123456789abcdef01234567";
    assert_eq!(event_id_for_key(hex), hex);
    for key in ["ABC", "x", "order/17 ü", "wxyz0123", "abcd"] {
        let id = event_id_for_key(key);
        assert!(
            (5..=1024).contains(&id.len())
                && id
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'v').contains(&b)),
            "{key:?} -> {id}"
        );
        assert_eq!(id, event_id_for_key(key), "deterministic");
        assert_eq!(id.len(), 54);
    }
    assert_ne!(event_id_for_key("ABC"), event_id_for_key("abc"));
    assert_eq!(base32hex_lower(b"f"), "co");
    assert_eq!(base32hex_lower(b"foobar"), "cpnmuoj1e8");
}

#[test]
fn calendar_entries_map_with_read_only_from_the_access_role() {
    let page: model::CalendarListPage = serde_json::from_str(
        r##"{"kind":"calendar#calendarList","etag":"\"p1\"","items":[
          {"kind":"calendar#calendarListEntry","id":"alice@example.com","summary":"alice@example.com",
           "timeZone":"Europe/London","backgroundColor":"#9fe1e7","accessRole":"owner","primary":true},
          {"id":"team@group.calendar.google.com","summary":"Team","summaryOverride":"My team",
           "timeZone":"Europe/Paris","accessRole":"reader"},
          {"id":"fb@group.calendar.google.com","summary":"Busy","accessRole":"freeBusyReader"},
          {"id":"w@group.calendar.google.com","summary":"W","accessRole":"writer"},
          {"id":"gone@group.calendar.google.com","deleted":true,"accessRole":"owner"}
        ]}"##,
    )
    .unwrap();
    let cals: Vec<pb::Calendar> = page
        .items
        .unwrap()
        .iter()
        .filter_map(calendar_from_entry)
        .collect();
    assert_eq!(cals.len(), 4);
    assert!(cals[0].primary && !cals[0].read_only);
    assert_eq!(cals[0].calendar_id, "primary");
    assert_eq!(cals[1].calendar_id, "team@group.calendar.google.com");
    assert_eq!(cals[0].color, "#9fe1e7");
    assert_eq!(cals[0].time_zone, "Europe/London");
    assert_eq!(cals[1].name, "My team");
    assert!(cals[1].read_only && cals[2].read_only && !cals[3].read_only);
}

fn event(start: pb::EventTime, end: pb::EventTime) -> pb::Event {
    pb::Event {
        title: "Lunch".into(),
        start: Some(start),
        end: Some(end),
        ..Default::default()
    }
}

#[test]
fn a_body_carries_every_owned_field() {
    let mut e = event(
        calbridge::time::instant(at("2026-07-01T11:00:00Z"), "Europe/London"),
        calbridge::time::instant(at("2026-07-01T12:00:00Z"), "Europe/London"),
    );
    e.client_event_id = "order-17".into();
    e.status = pb::EventStatus::Tentative as i32;
    e.transparency = pb::Transparency::Transparent as i32;
    e.attendees = vec![pb::Attendee {
        email: "bob@example.com".into(),
        display_name: "Bob".into(),
        response_status: pb::ResponseStatus::Accepted as i32,
        optional: true,
    }];
    let b = event_body(
        &e,
        BodyOptions {
            id: Some("abcde"),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(b["id"], "abcde");
    assert_eq!(b["summary"], "Lunch");
    assert_eq!(b["description"], "");
    assert_eq!(b["start"]["dateTime"], "2026-07-01T12:00:00+01:00");
    assert_eq!(b["start"]["timeZone"], "Europe/London");
    assert!(b["start"].get("date").is_none());
    assert_eq!(b["status"], "tentative");
    assert_eq!(b["transparency"], "transparent");
    assert_eq!(b["attendees"][0]["responseStatus"], "accepted");
    assert_eq!(b["attendees"][0]["optional"], true);
    assert_eq!(b["recurrence"], json!([]));
    assert_eq!(
        b["extendedProperties"]["private"][CLIENT_ID_PROPERTY],
        "order-17"
    );
}

#[test]
fn an_all_day_patch_clears_the_date_time_form() {
    let d = |s: &str| calbridge::time::date(NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap());
    let b = event_body(
        &event(d("2026-11-26"), d("2026-11-27")),
        BodyOptions {
            patch: true,
            instance: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(b["start"]["date"], "2026-11-26");
    assert_eq!(b["end"]["date"], "2026-11-27");
    assert!(b["start"]["dateTime"].is_null() && b["start"].get("dateTime").is_some());
    assert!(b.get("recurrence").is_none());
    assert!(b.get("extendedProperties").is_none());
}

#[test]
fn bad_events_are_refused_naming_the_field() {
    let bad_zone = pb::EventTime {
        value: Some(event_time::Value::Instant(to_timestamp(at(
            "2026-07-01T11:00:00Z",
        )))),
        time_zone: "Mars/Olympus".into(),
    };
    let inv = event_body(&event(bad_zone.clone(), bad_zone), BodyOptions::default()).unwrap_err();
    assert!(
        inv.0.iter().any(|v| v.field == "event.start.time_zone"),
        "{inv}"
    );
    let mut e = event(
        calbridge::time::instant(at("2026-07-01T11:00:00Z"), ""),
        calbridge::time::instant(at("2026-07-01T12:00:00Z"), ""),
    );
    e.recurrence = vec!["DTSTART:20260701T110000Z".into()];
    let inv = event_body(&e, BodyOptions::default()).unwrap_err();
    assert_eq!(inv.0[0].field, "event.recurrence[0]");
    e.recurrence = vec!["RRULE:FREQ=SOMETIMES".into()];
    let inv = event_body(&e, BodyOptions::default()).unwrap_err();
    assert_eq!(inv.0[0].field, "event.recurrence");
}

#[test]
fn overlap_counts_zero_length_events_starting_inside() {
    let (ws, we) = (at("2026-01-01T00:00:00Z"), at("2026-02-01T00:00:00Z"));
    let t = |s| When::At(at(s), None);
    assert!(overlaps(
        &t("2026-01-05T10:00:00Z"),
        &t("2026-01-05T10:00:00Z"),
        None,
        ws,
        we
    ));
    assert!(!overlaps(
        &t("2025-12-31T10:00:00Z"),
        &t("2026-01-01T00:00:00Z"),
        None,
        ws,
        we
    ));
    assert!(overlaps(
        &t("2025-12-31T10:00:00Z"),
        &t("2026-01-01T00:00:01Z"),
        None,
        ws,
        we
    ));
    assert!(!overlaps(
        &t("2026-02-01T00:00:00Z"),
        &t("2026-02-01T01:00:00Z"),
        None,
        ws,
        we
    ));
}
