//! The fake Graph's getSchedule over HTTP: both spellings of the action,
//! camelCase and PascalCase bodies, the digit view and items of a mailbox
//! (series occurrences included), an unknown address, `Prefer:
//! outlook.timezone`, Graph's limits as 400s, the scope it needs, and
//! injected throttling; every answer fits Microsoft's schemas.

mod common;

use calbridge_fake_graph::{FakeConfig, Fault};
use reqwest::StatusCode;
use serde_json::{json, Value};

use common::{Fake, USER};

const OTHER: &str = "bob@contoso.example";

async fn fake() -> Fake {
    common::start(
        FakeConfig::default(),
        &[(USER, "UTC"), (OTHER, "Pacific Standard Time")],
    )
    .await
}

trait ScheduleCalls {
    async fn schedule(
        &self,
        token: &str,
        action: &str,
        prefer: &str,
        body: &Value,
    ) -> reqwest::Response;
}

impl ScheduleCalls for Fake {
    async fn schedule(
        &self,
        token: &str,
        action: &str,
        prefer: &str,
        body: &Value,
    ) -> reqwest::Response {
        let mut r = self
            .http
            .post(self.url(&format!("/v1.0/me/calendar/{action}")))
            .bearer_auth(token)
            .json(body);
        if !prefer.is_empty() {
            r = r.header("Prefer", prefer);
        }
        r.send().await.unwrap()
    }
}

fn event(subject: &str, start: &str, end: &str, show_as: &str) -> Value {
    json!({
        "subject": subject,
        "location": {"displayName": "Room 4"},
        "start": {"dateTime": start, "timeZone": "UTC"},
        "end": {"dateTime": end, "timeZone": "UTC"},
        "showAs": show_as,
    })
}

/// Three days of `USER`'s calendar: a daily standup series (busy), a
/// tentative, an out-of-office, a working-elsewhere and a free event, a
/// cancelled one, and one after the window.
async fn seed(f: &Fake) {
    let mut standup = event(
        "Standup",
        "2026-03-02T09:00:00",
        "2026-03-02T09:30:00",
        "busy",
    );
    standup["recurrence"] = json!({
        "pattern": {"type": "daily", "interval": 1},
        "range": {"type": "numbered", "startDate": "2026-03-02", "numberOfOccurrences": 3},
    });
    let mut cancelled = event(
        "Called off",
        "2026-03-04T15:00:00",
        "2026-03-04T16:00:00",
        "busy",
    );
    cancelled["isCancelled"] = json!(true);
    for e in [
        standup,
        event(
            "Maybe",
            "2026-03-02T11:00:00",
            "2026-03-02T12:00:00",
            "tentative",
        ),
        event("Away", "2026-03-03T13:00:00", "2026-03-03T15:00:00", "oof"),
        event(
            "Elsewhere",
            "2026-03-03T16:00:00",
            "2026-03-03T17:00:00",
            "workingElsewhere",
        ),
        event(
            "Lunch",
            "2026-03-04T12:00:00",
            "2026-03-04T13:00:00",
            "free",
        ),
        cancelled,
        event(
            "Later",
            "2026-03-06T09:00:00",
            "2026-03-06T10:00:00",
            "busy",
        ),
    ] {
        f.control.insert_event(USER, &e).await.unwrap();
    }
    f.control
        .insert_event(
            OTHER,
            &event(
                "Bob's review",
                "2026-03-02T10:00:00",
                "2026-03-02T11:00:00",
                "busy",
            ),
        )
        .await
        .unwrap();
}

fn three_days(schedules: Value) -> Value {
    json!({
        "schedules": schedules,
        "startTime": {"dateTime": "2026-03-02T00:00:00", "timeZone": "UTC"},
        "endTime": {"dateTime": "2026-03-05T00:00:00", "timeZone": "UTC"},
        "availabilityViewInterval": 60,
    })
}

#[tokio::test]
async fn both_spellings_answer_the_view_items_and_hours_of_each_address() {
    let f = fake().await;
    seed(&f).await;
    let token = f.token("openid Calendars.Read").await;
    let body = three_days(json!([USER, OTHER, "nobody@contoso.example"]));
    let pascal = json!({
        "Schedules": [USER, OTHER, "nobody@contoso.example"],
        "StartTime": {"DateTime": "2026-03-02T00:00:00", "TimeZone": "UTC"},
        "EndTime": {"DateTime": "2026-03-05T00:00:00", "TimeZone": "UTC"},
        "AvailabilityViewInterval": 60,
    });
    let short = f.schedule(&token, "getSchedule", "", &body).await;
    assert_eq!(short.status(), StatusCode::OK);
    let short: Value = short.json().await.unwrap();
    let long: Value = f
        .schedule(&token, "microsoft.graph.getSchedule", "", &pascal)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(short["value"], long["value"], "one action, two spellings");
    let value = short["value"].as_array().unwrap();
    assert_eq!(value.len(), 3);

    let own = &value[0];
    assert_eq!(own["scheduleId"], USER);
    let mut digits = vec!['0'; 72];
    for (hour, d) in [
        (9, '2'),
        (11, '1'),
        (24 + 9, '2'),
        (24 + 13, '3'),
        (24 + 14, '3'),
        (24 + 16, '4'),
        (48 + 9, '2'),
    ] {
        digits[hour] = d;
    }
    assert_eq!(
        own["availabilityView"].as_str().unwrap(),
        digits.iter().collect::<String>()
    );
    let items = own["scheduleItems"].as_array().unwrap();
    let seen: Vec<(&str, &str, &str)> = items
        .iter()
        .map(|i| {
            (
                i["status"].as_str().unwrap(),
                i["start"]["dateTime"].as_str().unwrap(),
                i["subject"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("busy", "2026-03-02T09:00:00.0000000", "Standup"),
            ("tentative", "2026-03-02T11:00:00.0000000", "Maybe"),
            ("busy", "2026-03-03T09:00:00.0000000", "Standup"),
            ("oof", "2026-03-03T13:00:00.0000000", "Away"),
            (
                "workingElsewhere",
                "2026-03-03T16:00:00.0000000",
                "Elsewhere"
            ),
            ("busy", "2026-03-04T09:00:00.0000000", "Standup"),
            ("free", "2026-03-04T12:00:00.0000000", "Lunch"),
        ],
        "occurrences of the series, no cancelled event, nothing after the window"
    );
    assert!(items
        .iter()
        .all(|i| i["start"]["timeZone"] == "UTC" && i["end"]["timeZone"] == "UTC"));
    assert_eq!(own["workingHours"]["timeZone"]["name"], "UTC");
    assert!(own.get("error").is_none());

    let other = &value[1];
    assert_eq!(other["availabilityView"].as_str().unwrap().len(), 72);
    assert_eq!(&other["availabilityView"].as_str().unwrap()[10..11], "2");
    let theirs = other["scheduleItems"].as_array().unwrap();
    assert_eq!(theirs.len(), 1);
    assert!(
        theirs[0].get("subject").is_none() && theirs[0].get("location").is_none(),
        "another mailbox shares its free/busy alone: {theirs:?}"
    );
    assert_eq!(
        other["workingHours"]["timeZone"]["name"],
        "Pacific Standard Time"
    );

    let unknown = &value[2];
    assert_eq!(unknown["scheduleId"], "nobody@contoso.example");
    assert_eq!(
        unknown["error"]["responseCode"],
        "ErrorMailRecipientNotFound"
    );
    assert!(unknown["error"]["message"].as_str().is_some());
    assert_eq!(unknown["scheduleItems"], json!([]));

    let (_, requests) = f.control.stats().await.unwrap();
    assert_eq!(
        requests
            .iter()
            .filter(|r| *r == "POST /me/calendar/getSchedule")
            .count(),
        2,
        "{requests:?}"
    );
    f.verify().await;
}

#[tokio::test]
async fn prefer_outlook_timezone_shows_items_in_that_zone() {
    let f = fake().await;
    seed(&f).await;
    let token = f.token("openid Calendars.ReadWrite").await;
    let answer = f
        .schedule(
            &token,
            "getSchedule",
            "outlook.timezone=\"W. Europe Standard Time\"",
            &three_days(json!([USER])),
        )
        .await;
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(
        answer.headers()["preference-applied"],
        "outlook.timezone=\"W. Europe Standard Time\""
    );
    let v: Value = answer.json().await.unwrap();
    let first = &v["value"][0]["scheduleItems"][0];
    assert_eq!(
        first["start"],
        json!({"dateTime": "2026-03-02T10:00:00.0000000", "timeZone": "W. Europe Standard Time"})
    );
    f.verify().await;
}

#[tokio::test]
async fn graphs_limits_are_400s_in_its_error_shape() {
    let f = fake().await;
    let token = f.token("openid Calendars.Read").await;
    let many: Vec<String> = (0..21).map(|i| format!("u{i}@contoso.example")).collect();
    let mut too_long = three_days(json!([USER]));
    too_long["endTime"]["dateTime"] = json!("2026-05-03T00:00:00");
    let mut fine_grained = three_days(json!([USER]));
    fine_grained["availabilityViewInterval"] = json!(4);
    let mut coarse = three_days(json!([USER]));
    coarse["availabilityViewInterval"] = json!(1441);
    for (body, code) in [
        (three_days(json!(many)), "ErrorInvalidRequest"),
        (too_long, "ErrorTimeIntervalTooBig"),
        (fine_grained, "ErrorInvalidRequest"),
        (coarse, "ErrorInvalidRequest"),
        (json!({"schedules": [USER]}), "ErrorInvalidRequest"),
    ] {
        let answer = f.schedule(&token, "getSchedule", "", &body).await;
        assert_eq!(answer.status(), StatusCode::BAD_REQUEST, "{body}");
        let e: Value = answer.json().await.unwrap();
        assert_eq!(e["error"]["code"], code, "{body}");
    }
    let mut just_under = three_days(json!([USER]));
    just_under["endTime"]["dateTime"] = json!("2026-05-02T23:59:00");
    let answer = f.schedule(&token, "getSchedule", "", &just_under).await;
    assert_eq!(answer.status(), StatusCode::OK, "61 days and 23:59 is fine");
    f.verify().await;
}

#[tokio::test]
async fn getschedule_needs_calendars_read_and_meets_injected_throttling() {
    let f = fake().await;
    let body = three_days(json!([USER]));
    let profile_only = f.token("openid User.Read").await;
    let refused = f.schedule(&profile_only, "getSchedule", "", &body).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let token = f.token("openid User.Read Calendars.Read").await;
    f.control
        .inject(&Fault {
            status: 429,
            retry_after: Some(7),
            method: Some("POST".into()),
            count: 1,
        })
        .await
        .unwrap();
    let throttled = f.schedule(&token, "getSchedule", "", &body).await;
    assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(throttled.headers()["retry-after"], "7");
    f.verify().await;
}
