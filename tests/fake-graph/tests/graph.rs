//! The fake Graph behaves as Microsoft documents: identity-platform
//! sign-in, delta rounds and their failures, conditional writes,
//! transactionId de-duplication and throttling; every answer fits
//! Microsoft's OpenAPI schemas.

mod common;

use calbridge_fake_graph::{FakeConfig, Fault};
use chrono::{Duration, Utc};
use reqwest::StatusCode;
use serde_json::{json, Value};

use common::{Fake, USER};

async fn fake(config: FakeConfig) -> Fake {
    common::start(config, &[(USER, "Pacific Standard Time")]).await
}

trait GraphCalls {
    async fn sign_in(&self, scope: &str) -> Value;
    async fn get(&self, token: &str, url: &str, prefer: &str) -> reqwest::Response;
    async fn default_calendar(&self, token: &str) -> String;
}

impl GraphCalls for Fake {
    /// Consent plus code exchange (a code is single use); returns the
    /// token answer.
    async fn sign_in(&self, scope: &str) -> Value {
        let code = self.consent_code(scope).await;
        let first = self.redeem(&code).await;
        assert_eq!(first.status(), StatusCode::OK);
        let again: Value = self.redeem(&code).await.json().await.unwrap();
        assert_eq!(again["error"], "invalid_grant");
        assert_eq!(
            again["error_codes"][0], 54005,
            "a code is single use: {again}"
        );
        assert!(again["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS54005:"));
        first.json().await.unwrap()
    }

    async fn get(&self, token: &str, url: &str, prefer: &str) -> reqwest::Response {
        self.http
            .get(url)
            .bearer_auth(token)
            .header("Prefer", prefer)
            .send()
            .await
            .unwrap()
    }

    async fn default_calendar(&self, token: &str) -> String {
        let c: Value = self
            .get(token, &self.url("/v1.0/me/calendar"), "")
            .await
            .json()
            .await
            .unwrap();
        c["id"].as_str().unwrap().to_string()
    }
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn event(title: &str, days: i64) -> Value {
    let day = (Utc::now() + Duration::days(days)).format("%Y-%m-%d");
    json!({"subject": title, "start": {"dateTime": format!("{day}T10:00:00"), "timeZone": "Pacific Standard Time"}, "end": {"dateTime": format!("{day}T11:00:00"), "timeZone": "Pacific Standard Time"}})
}

#[tokio::test]
async fn refresh_tokens_rotate_only_with_offline_access_and_die_with_aadsts_codes() {
    let f = fake(FakeConfig::default()).await;
    let without = f
        .sign_in("openid https://graph.microsoft.com/Calendars.Read")
        .await;
    assert!(without.get("refresh_token").is_none(), "{without}");
    let with = f.sign_in("openid offline_access Calendars.Read").await;
    let r1 = with["refresh_token"].as_str().unwrap().to_string();
    let refresh = |rt: String| {
        let http = f.http.clone();
        let url = f.url("/organizations/oauth2/v2.0/token");
        async move {
            http.post(url)
                .form(&[
                    ("client_id", "app"),
                    ("client_secret", "secret"),
                    ("grant_type", "refresh_token"),
                    ("refresh_token", rt.as_str()),
                ])
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let next = refresh(r1.clone()).await;
    let r2 = next["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(r1, r2, "a new refresh token on every use");
    assert!(
        refresh(r1).await["access_token"].is_string(),
        "the old one still works until it expires"
    );
    f.control.kill_grants(USER, 50173).await.unwrap();
    let dead = refresh(r2).await;
    assert_eq!(
        (dead["error"].as_str(), dead["error_codes"][0].as_u64()),
        (Some("invalid_grant"), Some(50173))
    );
}

#[tokio::test]
async fn delta_rounds_page_report_removals_and_expire_on_demand() {
    let f = fake(FakeConfig::default()).await;
    let token = f.sign_in("openid offline_access Calendars.ReadWrite").await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let cal = f.default_calendar(&token).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            f.control
                .insert_event(USER, &event(&format!("E{i}"), i + 1))
                .await
                .unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let (s, e) = (
        (Utc::now() - Duration::days(1)).to_rfc3339(),
        (Utc::now() + Duration::days(30)).to_rfc3339(),
    );
    let q = format!("?startDateTime={}&endDateTime={}", enc(&s), enc(&e));
    for spelling in ["delta", "delta()", "microsoft.graph.delta()"] {
        let r = f
            .get(
                &token,
                &f.url(&format!(
                    "/v1.0/me/calendars/{}/calendarView/{spelling}{q}",
                    enc(&cal)
                )),
                "odata.maxpagesize=2",
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK, "{spelling}");
        assert_eq!(r.headers()["preference-applied"], "odata.maxpagesize=2");
    }
    let refused = f
        .get(
            &token,
            &f.url(&format!("/v1.0/me/calendarView/delta{q}&$select=subject")),
            "",
        )
        .await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let no_range = f
        .get(&token, &f.url("/v1.0/me/calendarView/delta"), "")
        .await;
    assert_eq!(no_range.status(), StatusCode::BAD_REQUEST);
    let too_long = "?startDateTime=2020-01-01T00:00:00&endDateTime=2026-01-01T00:00:00";
    assert_eq!(
        f.get(
            &token,
            &f.url(&format!("/v1.0/me/calendarView/delta{too_long}")),
            ""
        )
        .await
        .status(),
        StatusCode::BAD_REQUEST
    );

    // A whole round in pages of two, some empty, ending with a delta link.
    let mut url = f.url(&format!("/v1.0/me/calendarView/delta{q}"));
    let (mut seen, mut empty) = (Vec::new(), 0);
    let delta = loop {
        let page: Value = f
            .get(
                &token,
                &url,
                "odata.maxpagesize=2, outlook.timezone=\"Pacific Standard Time\"",
            )
            .await
            .json()
            .await
            .unwrap();
        let value = page["value"].as_array().unwrap();
        assert!(value.len() <= 2);
        empty += usize::from(value.is_empty());
        for v in value {
            assert_eq!(v["start"]["timeZone"], "Pacific Standard Time");
            assert_eq!(
                v["start"]["dateTime"].as_str().unwrap()[11..],
                *"10:00:00.0000000"
            );
            seen.push(v["id"].as_str().unwrap().to_string());
        }
        match (
            page["@odata.nextLink"].as_str(),
            page["@odata.deltaLink"].as_str(),
        ) {
            (Some(next), _) => url = next.to_string(),
            (None, Some(d)) => break d.to_string(),
            _ => panic!("{page}"),
        }
    };
    seen.sort();
    ids.sort();
    assert_eq!(seen, ids);
    assert!(empty >= 1, "some pages are empty but for their next link");

    f.control.delete_event(USER, &ids[0]).await.unwrap();
    f.control
        .patch_event(USER, &ids[1], &json!({"subject": "Changed"}))
        .await
        .unwrap();
    let round: Value = f
        .get(&token, &delta, "odata.maxpagesize=50")
        .await
        .json()
        .await
        .unwrap();
    let value = round["value"].as_array().unwrap();
    assert!(
        value
            .iter()
            .any(|v| v["id"] == ids[0].as_str() && v["@removed"]["reason"] == "deleted"),
        "{round}"
    );
    assert!(
        value
            .iter()
            .any(|v| v["id"] == ids[1].as_str() && v["subject"] == "Changed"),
        "{round}"
    );

    f.control.expire_delta_tokens(USER).await.unwrap();
    let gone = f.get(&token, &delta, "").await;
    assert_eq!(gone.status(), StatusCode::GONE);
    let body: Value = gone.json().await.unwrap();
    assert_eq!(body["error"]["code"], "SyncStateNotFound");
    f.verify().await;
}

#[tokio::test]
async fn writes_are_conditional_and_a_replayed_transaction_makes_no_second_event() {
    for conflict in [false, true] {
        let f = fake(FakeConfig {
            transaction_replay_conflict: conflict,
            ..FakeConfig::default()
        })
        .await;
        let token = f.sign_in("openid offline_access Calendars.ReadWrite").await["access_token"]
            .as_str()
            .unwrap()
            .to_string();
        let cal = f.default_calendar(&token).await;
        let mut body = event("Tx", 2);
        body["transactionId"] = json!("2f1c0a55-0000-4000-8000-000000000001");
        let post = || {
            f.http
                .post(f.url(&format!("/v1.0/me/calendars/{}/events", enc(&cal))))
                .bearer_auth(&token)
                .json(&body)
                .send()
        };
        let first = post().await.unwrap();
        assert_eq!(first.status(), StatusCode::CREATED);
        let created: Value = first.json().await.unwrap();
        let second = post().await.unwrap();
        assert_eq!(
            second.status(),
            if conflict {
                StatusCode::CONFLICT
            } else {
                StatusCode::CREATED
            }
        );
        assert_eq!(f.control.events(USER).await.unwrap().len(), 1);

        let id = enc(created["id"].as_str().unwrap());
        let etag = created["@odata.etag"].as_str().unwrap().to_string();
        let patch = |tag: &str| {
            f.http
                .patch(f.url(&format!("/v1.0/me/events/{id}")))
                .bearer_auth(&token)
                .header("If-Match", tag)
                .json(&json!({"subject": "New"}))
                .send()
        };
        let ok = patch(&etag).await.unwrap();
        assert_eq!(ok.status(), StatusCode::OK);
        let stale = patch(&etag).await.unwrap();
        assert_eq!(stale.status(), StatusCode::PRECONDITION_FAILED);
        assert_eq!(
            stale.json::<Value>().await.unwrap()["error"]["code"],
            "ErrorIrresolvableConflict"
        );
        let del = f
            .http
            .delete(f.url(&format!("/v1.0/me/events/{id}")))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(del.status(), StatusCode::NO_CONTENT);
        let unknown_zone = f.http.post(f.url("/v1.0/me/events")).bearer_auth(&token).json(&json!({"subject": "x", "start": {"dateTime": "2026-01-01T10:00:00", "timeZone": "Mars Standard Time"}, "end": {"dateTime": "2026-01-01T11:00:00", "timeZone": "UTC"}})).send().await.unwrap();
        assert_eq!(unknown_zone.status(), StatusCode::BAD_REQUEST);
        f.verify().await;
    }
}

#[tokio::test]
async fn a_retry_before_retry_after_has_passed_gets_another_429() {
    let f = fake(FakeConfig::default()).await;
    let token = f.sign_in("openid Calendars.Read").await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    f.control
        .inject(&Fault {
            status: 429,
            retry_after: Some(2),
            method: Some("GET".into()),
            count: 1,
        })
        .await
        .unwrap();
    let first = f.get(&token, &f.url("/v1.0/me/calendars"), "").await;
    assert_eq!(first.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(first.headers()["retry-after"], "2");
    let early = f.get(&token, &f.url("/v1.0/me/calendars"), "").await;
    assert_eq!(early.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(f.control.stats().await.unwrap().0, 1);
    let no_token = f
        .http
        .get(f.url("/v1.0/me/calendars"))
        .send()
        .await
        .unwrap();
    assert_eq!(no_token.status(), StatusCode::UNAUTHORIZED);
    f.verify().await;
}

#[tokio::test]
async fn a_batch_runs_each_request_on_its_own_with_dependencies_and_limits() {
    let f = fake(FakeConfig::default()).await;
    let token = f.sign_in("openid Calendars.ReadWrite").await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let post = |body: Value| {
        f.http
            .post(f.url("/v1.0/$batch"))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    // A failing request fails the one that depends on it (424); an
    // independent one runs; answers come in any order, matched by id.
    f.control
        .inject(&Fault {
            status: 503,
            retry_after: None,
            method: Some("POST".into()),
            count: 1,
        })
        .await
        .unwrap();
    let requests = json!({"requests": [
        {"id": "a", "method": "POST", "url": "/me/events", "headers": {"Content-Type": "application/json"}, "body": event("Batched", 1)},
        {"id": "b", "method": "GET", "url": "/me/events/AAMk-none", "dependsOn": ["a"]},
        {"id": "c", "method": "GET", "url": "/me/calendars"},
    ]});
    let answer = post(requests.clone()).await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let v: Value = answer.json().await.unwrap();
    let by_id = |v: &Value, id: &str| {
        v["responses"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .cloned()
            .unwrap()
    };
    assert_eq!(by_id(&v, "a")["status"], 503);
    assert_eq!(by_id(&v, "b")["status"], 424);
    assert_eq!(by_id(&v, "c")["status"], 200);
    assert!(by_id(&v, "c")["body"]["value"].as_array().is_some());
    assert_eq!(
        v["responses"][0]["id"], "c",
        "answers are not in request order"
    );

    // Throttled inside a batch: that item answers 429 with its own
    // Retry-After, and the mailbox waits for every request after it.
    f.control
        .inject(&Fault {
            status: 429,
            retry_after: Some(3),
            method: Some("POST".into()),
            count: 1,
        })
        .await
        .unwrap();
    let v: Value = post(requests).await.unwrap().json().await.unwrap();
    assert_eq!(by_id(&v, "a")["status"], 429);
    assert_eq!(by_id(&v, "a")["headers"]["retry-after"], "3");
    assert_eq!(by_id(&v, "b")["status"], 424);
    assert_eq!(by_id(&v, "c")["status"], 429);

    // More than 20, a repeated id, a dependency on a later request, a
    // nested batch: refused whole.
    let many: Vec<Value> = (0..21)
        .map(|i| json!({"id": i.to_string(), "method": "GET", "url": "/me/calendars"}))
        .collect();
    for bad in [
        json!({ "requests": many }),
        json!({"requests": [{"id": "1", "method": "GET", "url": "/me"}, {"id": "1", "method": "GET", "url": "/me"}]}),
        json!({"requests": [{"id": "1", "method": "GET", "url": "/me", "dependsOn": ["2"]}, {"id": "2", "method": "GET", "url": "/me"}]}),
        json!({"requests": [{"id": "1", "method": "POST", "url": "/$batch"}]}),
        json!({"requests": []}),
    ] {
        let r = post(bad.clone()).await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    f.verify().await;
}
