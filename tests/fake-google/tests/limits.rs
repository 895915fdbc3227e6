//! Quotas, injected faults, freebusy.query limits, request counters.

mod common;

use calbridge_fake_google::{FakeConfig, Fault, QuotaLimits};
use common::*;
use serde_json::json;

#[tokio::test]
async fn the_per_user_quota_is_a_sliding_minute_answered_with_403_or_429() {
    let fake = start(FakeConfig {
        quota_per_user_per_minute: 5,
        seed: Some(3),
        ..quiet()
    })
    .await;
    let api = fake.api(&["calendar"]).await;
    for _ in 0..5 {
        assert_eq!(api.get(&events_path("primary"), &[]).await.status, 200);
    }
    let mut kinds = std::collections::BTreeSet::new();
    for _ in 0..40 {
        let a = api.get(&events_path("primary"), &[]).await;
        assert!(a.status == 403 || a.status == 429, "{}", a.status);
        assert!(a.headers.get("retry-after").is_none());
        assert_eq!(a.body["error"]["errors"][0]["domain"], "usageLimits");
        kinds.insert((a.status, a.reason().to_string()));
    }
    assert!(
        kinds.contains(&(429, "rateLimitExceeded".into())),
        "{kinds:?}"
    );
    assert!(kinds.iter().any(|(s, _)| *s == 403), "{kinds:?}");
    fake.control.advance_clock(61).await.unwrap();
    assert_eq!(
        api.get(&events_path("primary"), &[]).await.status,
        200,
        "the window slid"
    );
}

#[tokio::test]
async fn the_project_quota_counts_every_user() {
    let fake = start(quiet()).await;
    fake.control
        .set_quotas(&QuotaLimits {
            per_user_per_minute: None,
            per_project_per_minute: Some(3),
        })
        .await
        .unwrap();
    fake.control.add_user("bob@example.com").await.unwrap();
    let alice = fake.api(&["calendar"]).await;
    let bob = Api {
        token: fake.token_for("bob@example.com", &["calendar"]).await,
        ..fake.api(&["calendar"]).await
    };
    assert_eq!(alice.get(&events_path("primary"), &[]).await.status, 200);
    assert_eq!(alice.get(&events_path("primary"), &[]).await.status, 200);
    assert_eq!(bob.get(&events_path("primary"), &[]).await.status, 200);
    let a = bob.get(&events_path("primary"), &[]).await;
    assert!(a.status == 403 || a.status == 429);
    assert_eq!(a.reason(), "rateLimitExceeded");
}

#[tokio::test]
async fn injected_faults_fail_the_next_matching_calls_with_optional_retry_after() {
    let fake = start(quiet()).await;
    let api = fake.api(&["calendar"]).await;
    fake.control
        .inject_fault(&Fault {
            status: 503,
            reason: "backendError".into(),
            retry_after_seconds: Some(7),
            count: 2,
            path_contains: Some("/events".into()),
        })
        .await
        .unwrap();
    assert_eq!(
        api.get("/calendar/v3/users/me/calendarList", &[])
            .await
            .status,
        200,
        "path does not match"
    );
    for _ in 0..2 {
        let a = api.get(&events_path("primary"), &[]).await;
        assert_eq!((a.status, a.reason()), (503, "backendError"));
        assert_eq!(a.headers["retry-after"], "7");
    }
    assert_eq!(api.get(&events_path("primary"), &[]).await.status, 200);
    fake.control
        .inject_fault(&Fault {
            status: 403,
            reason: "quotaExceeded".into(),
            retry_after_seconds: None,
            count: 1,
            path_contains: None,
        })
        .await
        .unwrap();
    let a = api
        .post(
            &events_path("primary"),
            timed("x", "2024-01-01T10:00:00Z", "2024-01-01T11:00:00Z"),
        )
        .await;
    assert_eq!((a.status, a.reason()), (403, "quotaExceeded"));
    assert_eq!(a.body["error"]["errors"][0]["domain"], "usageLimits");
    assert_eq!(
        a.body["error"]["message"],
        "Calendar usage limits exceeded."
    );
    // The token endpoint only when asked for by path.
    fake.control
        .inject_fault(&Fault {
            status: 500,
            reason: "internal_failure".into(),
            retry_after_seconds: None,
            count: 1,
            path_contains: Some("/token".into()),
        })
        .await
        .unwrap();
    let r = fake.control.sign_in(&client(), USER, &["calendar"]).await;
    assert!(r.is_err());
    assert!(fake
        .control
        .sign_in(&client(), USER, &["calendar"])
        .await
        .is_ok());
}

#[tokio::test]
async fn requests_are_counted_per_method_and_user() {
    let fake = start(quiet()).await;
    let api = fake.api(&["calendar"]).await;
    api.get(&events_path("primary"), &[]).await;
    api.get(&events_path("primary"), &[]).await;
    api.get("/calendar/v3/users/me/calendarList", &[]).await;
    let c = fake.control.requests().await.unwrap();
    assert_eq!(c.total, 3);
    assert_eq!(c.by_method["calendar.events.list"], 2);
    assert_eq!(c.by_method["calendar.calendarList.list"], 1);
    assert_eq!(c.by_user[USER], 3);
    assert_eq!(c.oauth["token"], 1);
    fake.control.reset_counters().await.unwrap();
    assert_eq!(fake.control.requests().await.unwrap().total, 0);
}

fn fb(items: serde_json::Value, min: &str, max: &str) -> serde_json::Value {
    json!({"timeMin": min, "timeMax": max, "items": items})
}

#[tokio::test]
async fn freebusy_merges_busy_time_and_skips_transparent_cancelled_and_declined() {
    let fake = start(quiet()).await;
    let api = fake.api(&["calendar"]).await;
    api.insert(
        "primary",
        timed("a", "2024-01-01T09:00:00Z", "2024-01-01T10:00:00Z"),
    )
    .await;
    api.insert(
        "primary",
        timed("b", "2024-01-01T09:30:00Z", "2024-01-01T11:00:00Z"),
    )
    .await;
    let mut t = timed("free", "2024-01-01T12:00:00Z", "2024-01-01T13:00:00Z");
    t["transparency"] = json!("transparent");
    api.insert("primary", t).await;
    let mut d = timed("declined", "2024-01-01T14:00:00Z", "2024-01-01T15:00:00Z");
    d["attendees"] = json!([{"email": USER, "responseStatus": "declined"}]);
    api.insert("primary", d).await;
    let c = api
        .insert(
            "primary",
            timed("cancelled", "2024-01-01T16:00:00Z", "2024-01-01T17:00:00Z"),
        )
        .await;
    api.call(
        reqwest::Method::DELETE,
        &format!("{}/{}", events_path("primary"), c["id"].as_str().unwrap()),
        &[],
        None,
        &[],
    )
    .await;
    let mut series = timed("daily", "2024-01-01T20:00:00Z", "2024-01-01T21:00:00Z");
    series["start"]["timeZone"] = json!("UTC");
    series["recurrence"] = json!(["RRULE:FREQ=DAILY;COUNT=3"]);
    api.insert("primary", series).await;
    let a = api
        .post(
            "/calendar/v3/freeBusy",
            fb(
                json!([{"id": "primary"}, {"id": "nobody@example.com"}]),
                "2024-01-01T00:00:00Z",
                "2024-01-02T20:30:00Z",
            ),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        a.body["calendars"]["primary"]["busy"],
        json!([
            {"start": "2024-01-01T09:00:00Z", "end": "2024-01-01T11:00:00Z"},
            {"start": "2024-01-01T20:00:00Z", "end": "2024-01-01T21:00:00Z"},
            {"start": "2024-01-02T20:00:00Z", "end": "2024-01-02T20:30:00Z"},
        ])
    );
    assert_eq!(
        a.body["calendars"]["nobody@example.com"]["errors"][0]["reason"],
        "notFound"
    );
    fake.assert_no_violations().await;
}

#[tokio::test]
async fn freebusy_limits_range_and_expansion() {
    let fake = start(FakeConfig {
        freebusy_max_days: 30,
        ..quiet()
    })
    .await;
    let api = fake.api(&["calendar.freebusy"]).await;
    let a = api
        .post(
            "/calendar/v3/freeBusy",
            fb(
                json!([{"id": USER}]),
                "2024-01-01T00:00:00Z",
                "2024-02-15T00:00:00Z",
            ),
        )
        .await;
    assert_eq!(a.status, 400, "longer than the configured 30 days");
    let a = api
        .post(
            "/calendar/v3/freeBusy",
            fb(
                json!([{"id": USER}]),
                "2024-01-02T00:00:00Z",
                "2024-01-01T00:00:00Z",
            ),
        )
        .await;
    assert_eq!((a.status, a.reason()), (400, "timeRangeEmpty"));
    let mut body = fb(
        json!([{"id": USER}]),
        "2024-01-01T00:00:00Z",
        "2024-01-02T00:00:00Z",
    );
    body["calendarExpansionMax"] = json!(51);
    assert_eq!(api.post("/calendar/v3/freeBusy", body).await.status, 400);
    let many: Vec<_> = (0..52)
        .map(|i| json!({"id": format!("c{i}@example.com")}))
        .chain([json!({"id": USER})])
        .collect();
    let a = api
        .post(
            "/calendar/v3/freeBusy",
            fb(json!(many), "2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z"),
        )
        .await;
    assert_eq!(a.status, 200);
    assert_eq!(
        a.body["calendars"][USER]["errors"][0]["reason"],
        "tooManyCalendarsRequested"
    );
    assert_eq!(
        a.body["calendars"]["c0@example.com"]["errors"][0]["reason"],
        "notFound"
    );
    let a = api.get(&events_path("primary"), &[]).await;
    assert_eq!(a.status, 403, "calendar.freebusy does not read events");
}
