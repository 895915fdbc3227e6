//! Every method's JSON answers match Google's discovery document.

mod common;

use calbridge_fake_google::discovery::Discovery;
use common::*;
use reqwest::Method;
use serde_json::{json, Value};

#[tokio::test]
async fn every_method_answers_what_the_discovery_document_describes() {
    let receiver = receiver().await;
    let fake = start(calbridge_fake_google::FakeConfig {
        webhook_ca_pem: Some(receiver.pki.ca_pem.clone().into_bytes()),
        ..quiet()
    })
    .await;
    let api = fake.api(&["calendar"]).await;
    let doc = Discovery::calendar_v3();
    let check = |schema: &str, v: &Value| {
        let problems = doc.validate(schema, v);
        assert!(problems.is_empty(), "{schema}: {problems:?} in {v}");
    };
    let path = events_path("primary");
    let mut rich = json!({
        "id": "rich0001",
        "summary": "everything",
        "description": "<b>html</b>",
        "location": "room 1",
        "start": {"dateTime": "2024-05-01T10:00:00", "timeZone": "America/New_York"},
        "end": {"dateTime": "2024-05-01T11:00:00", "timeZone": "America/New_York"},
        "recurrence": ["RRULE:FREQ=DAILY;COUNT=2", "EXDATE;TZID=America/New_York:20240502T100000"],
        "attendees": [{"email": "b@example.com", "optional": true, "responseStatus": "needsAction"}],
        "reminders": {"useDefault": false, "overrides": [{"method": "email", "minutes": 30}]},
        "extendedProperties": {"private": {"k": "v"}, "shared": {"s": "t"}},
        "transparency": "opaque",
        "visibility": "private",
        "colorId": "3",
        "guestsCanModify": true,
        "source": {"title": "t", "url": "https://example.com"},
    });
    let inserted = api.insert("primary", rich.clone()).await;
    check("Event", &inserted);
    rich["summary"] = json!("changed");
    let u = api
        .call(
            Method::PUT,
            &format!("{path}/rich0001"),
            &[],
            Some(rich),
            &[],
        )
        .await;
    assert_eq!(u.status, 200, "{}", u.body);
    check("Event", &u.body);
    let p = api
        .call(
            Method::PATCH,
            &format!("{path}/rich0001_20240501T140000Z"),
            &[],
            Some(json!({"summary": "one"})),
            &[],
        )
        .await;
    assert_eq!(p.status, 200, "{}", p.body);
    check("Event", &p.body);
    api.insert("primary", json!({"start": {"date": "2024-05-03"}, "end": {"date": "2024-05-04"}, "eventType": "outOfOffice"}))
        .await;
    for q in [
        vec![],
        vec![
            ("singleEvents", "true"),
            ("orderBy", "startTime"),
            ("timeZone", "Asia/Tokyo"),
        ],
        vec![("showDeleted", "true"), ("maxAttendees", "1")],
    ] {
        let a = api.get(&path, &q).await;
        assert_eq!(a.status, 200);
        check("Events", &a.body);
    }
    let g = api.get(&format!("{path}/rich0001"), &[]).await;
    check("Event", &g.body);
    let i = api.get(&format!("{path}/rich0001/instances"), &[]).await;
    check("Events", &i.body);
    let cl = api.get("/calendar/v3/users/me/calendarList", &[]).await;
    check("CalendarList", &cl.body);
    let fb = api
        .post(
            "/calendar/v3/freeBusy",
            json!({"timeMin": "2024-05-01T00:00:00Z", "timeMax": "2024-05-05T00:00:00Z", "timeZone": "Europe/Berlin",
                   "items": [{"id": "primary"}, {"id": "missing@example.com"}]}),
        )
        .await;
    check("FreeBusyResponse", &fb.body);
    let w = api
        .post(&format!("{path}/watch"), json!({"id": "c1", "type": "web_hook", "address": receiver.url, "params": {"ttl": "100"}}))
        .await;
    check("Channel", &w.body);
    api.call(Method::DELETE, &format!("{path}/rich0001"), &[], None, &[])
        .await;
    let (items, _, _) = api
        .list_all(
            "primary",
            &[("showDeleted", "true"), ("singleEvents", "true")],
        )
        .await;
    check("Events", &json!({"items": items}));
    // And the fake's own bookkeeping agrees.
    fake.assert_no_violations().await;
}
