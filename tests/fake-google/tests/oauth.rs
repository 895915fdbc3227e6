//! OAuth: consent, code exchange with PKCE, refresh, revoke, scopes.

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use calbridge_fake_google::ConsentSpec;
use common::*;
use serde_json::Value;
use sha2::{Digest, Sha256};

const VERIFIER: &str = "a-verifier-that-is-long-enough-0123456789-abcdefghijklmnop";

fn challenge() -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(VERIFIER.as_bytes()))
}

/// Runs the consent step; returns the redirect's query pairs (or the status when no redirect).
async fn consent(fake: &Fake, extra: &[(&str, &str)]) -> Result<Vec<(String, String)>, u16> {
    let c = client();
    let ch = challenge();
    let mut q: Vec<(&str, &str)> = vec![
        ("client_id", c.client_id.as_str()),
        ("redirect_uri", REDIRECT),
        ("response_type", "code"),
        (
            "scope",
            "https://www.googleapis.com/auth/calendar.events openid",
        ),
        ("state", "xyz"),
        ("code_challenge", ch.as_str()),
        ("code_challenge_method", "S256"),
    ];
    for (k, v) in extra {
        q.retain(|(qk, _)| qk != k);
        q.push((k, v));
    }
    let r = fake
        .http
        .get(format!("{}/o/oauth2/v2/auth", fake.base()))
        .query(&q)
        .send()
        .await
        .unwrap();
    if r.status().as_u16() != 302 {
        return Err(r.status().as_u16());
    }
    let location = r.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with(REDIRECT), "{location}");
    Ok(reqwest::Url::parse(&location)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect())
}

fn param<'a>(pairs: &'a [(String, String)], k: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(pk, _)| pk == k)
        .map(|(_, v)| v.as_str())
}

async fn token(fake: &Fake, form: &[(&str, &str)]) -> (u16, Value) {
    let r = fake
        .http
        .post(format!("{}/token", fake.base()))
        .form(form)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn exchange(fake: &Fake, code: &str, verifier: &str) -> (u16, Value) {
    let c = client();
    token(
        fake,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("client_id", &c.client_id),
            ("client_secret", &c.client_secret),
            ("code_verifier", verifier),
        ],
    )
    .await
}

async fn refresh(fake: &Fake, refresh_token: &str) -> (u16, Value) {
    let c = client();
    token(
        fake,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", &c.client_id),
            ("client_secret", &c.client_secret),
        ],
    )
    .await
}

#[tokio::test]
async fn consent_redirects_with_code_state_and_scope_and_the_code_is_single_use() {
    let fake = start(quiet()).await;
    let pairs = consent(&fake, &[("access_type", "offline")]).await.unwrap();
    assert_eq!(param(&pairs, "state"), Some("xyz"));
    let code = param(&pairs, "code").unwrap().to_string();
    assert!(param(&pairs, "scope").unwrap().contains("calendar.events"));
    let (status, body) = exchange(&fake, &code, VERIFIER).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["refresh_token"].is_string());
    assert!(body["id_token"].is_string(), "openid was requested");
    assert!(body["expires_in"].as_i64().unwrap() > 3000);
    let (status, body) = exchange(&fake, &code, VERIFIER).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
}

#[tokio::test]
async fn pkce_verifier_is_checked() {
    let fake = start(quiet()).await;
    let code = param(&consent(&fake, &[]).await.unwrap(), "code")
        .unwrap()
        .to_string();
    let (status, body) = exchange(
        &fake,
        &code,
        "wrong-verifier-wrong-verifier-wrong-verifier-x",
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let (status, _) = exchange(&fake, &code, VERIFIER).await;
    assert_eq!(status, 200, "a failed verifier does not burn the code");
}

#[tokio::test]
async fn consent_validates_client_redirect_response_type_and_challenge() {
    let fake = start(quiet()).await;
    assert_eq!(
        consent(&fake, &[("client_id", "nobody")])
            .await
            .unwrap_err(),
        401
    );
    assert_eq!(
        consent(&fake, &[("redirect_uri", "http://127.0.0.1:9/callback/")])
            .await
            .unwrap_err(),
        400
    );
    assert_eq!(
        consent(&fake, &[("response_type", "token")])
            .await
            .unwrap_err(),
        400
    );
    assert_eq!(
        consent(&fake, &[("code_challenge", "short")])
            .await
            .unwrap_err(),
        400
    );
    assert_eq!(
        consent(&fake, &[("code_challenge_method", "S512")])
            .await
            .unwrap_err(),
        400
    );
    assert_eq!(
        consent(&fake, &[("scope", "https://example.com/nope")])
            .await
            .unwrap_err(),
        400
    );
}

#[tokio::test]
async fn refresh_tokens_need_offline_access_and_come_once_without_prompt_consent() {
    let fake = start(quiet()).await;
    let online = param(&consent(&fake, &[]).await.unwrap(), "code")
        .unwrap()
        .to_string();
    assert!(exchange(&fake, &online, VERIFIER)
        .await
        .1
        .get("refresh_token")
        .is_none());
    let first = param(
        &consent(&fake, &[("access_type", "offline")]).await.unwrap(),
        "code",
    )
    .unwrap()
    .to_string();
    assert!(exchange(&fake, &first, VERIFIER).await.1["refresh_token"].is_string());
    let second = param(
        &consent(&fake, &[("access_type", "offline")]).await.unwrap(),
        "code",
    )
    .unwrap()
    .to_string();
    assert!(
        exchange(&fake, &second, VERIFIER)
            .await
            .1
            .get("refresh_token")
            .is_none(),
        "second consent: none"
    );
    let forced = param(
        &consent(&fake, &[("access_type", "offline"), ("prompt", "consent")])
            .await
            .unwrap(),
        "code",
    )
    .unwrap()
    .to_string();
    assert!(exchange(&fake, &forced, VERIFIER).await.1["refresh_token"].is_string());
}

#[tokio::test]
async fn refresh_returns_a_new_access_token_and_no_refresh_token_until_invalidated() {
    let fake = start(quiet()).await;
    let tokens = fake
        .control
        .sign_in(&client(), USER, &["calendar"])
        .await
        .unwrap();
    let rt = tokens.refresh_token.unwrap();
    let (status, body) = refresh(&fake, &rt).await;
    assert_eq!(status, 200, "{body}");
    assert_ne!(body["access_token"], tokens.access_token.as_str());
    assert!(body.get("refresh_token").is_none());
    fake.control.invalidate_refresh_tokens(USER).await.unwrap();
    let (status, body) = refresh(&fake, &rt).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        serde_json::json!({"error": "invalid_grant", "error_description": "Token has been expired or revoked."})
    );
}

#[tokio::test]
async fn bad_client_credentials_are_invalid_client_401() {
    let fake = start(quiet()).await;
    let (status, body) = token(
        &fake,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", "x"),
            ("client_id", "client-1.apps.googleusercontent.com"),
            ("client_secret", "bad"),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
}

#[tokio::test]
async fn revoking_the_access_token_revokes_the_refresh_token_too() {
    let fake = start(quiet()).await;
    let tokens = fake
        .control
        .sign_in(&client(), USER, &["calendar"])
        .await
        .unwrap();
    let r = fake
        .http
        .post(format!("{}/revoke", fake.base()))
        .form(&[("token", tokens.access_token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        refresh(&fake, tokens.refresh_token.as_deref().unwrap())
            .await
            .0,
        400
    );
    let api = Api {
        base: fake.base(),
        token: tokens.access_token.clone(),
        http: fake.http.clone(),
    };
    let a = api.get("/calendar/v3/users/me/calendarList", &[]).await;
    assert_eq!((a.status, a.reason()), (401, "authError"));
    let again = fake
        .http
        .post(format!("{}/revoke", fake.base()))
        .form(&[("token", "unknown")])
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 400);
}

#[tokio::test]
async fn expired_access_tokens_answer_401_auth_error() {
    let fake = start(quiet()).await;
    let api = fake.api(&["calendar"]).await;
    assert_eq!(
        api.get("/calendar/v3/users/me/calendarList", &[])
            .await
            .status,
        200
    );
    fake.control.expire_access_tokens(USER).await.unwrap();
    let a = api.get("/calendar/v3/users/me/calendarList", &[]).await;
    assert_eq!((a.status, a.reason()), (401, "authError"));
    assert_eq!(a.body["error"]["errors"][0]["location"], "Authorization");
    // The clock also expires them.
    let api = fake.api(&["calendar"]).await;
    fake.control.advance_clock(3601).await.unwrap();
    assert_eq!(
        api.get("/calendar/v3/users/me/calendarList", &[])
            .await
            .status,
        401
    );
    let anonymous = Api {
        token: "nope".into(),
        ..api
    };
    assert_eq!(
        anonymous
            .get("/calendar/v3/users/me/calendarList", &[])
            .await
            .status,
        401
    );
}

#[tokio::test]
async fn a_granted_subset_limits_what_the_token_can_do() {
    let fake = start(quiet()).await;
    fake.control
        .set_consent(&ConsentSpec {
            deny: false,
            granted_scopes: Some(vec!["calendar.events.readonly".into()]),
        })
        .await
        .unwrap();
    let tokens = fake
        .control
        .sign_in(
            &client(),
            USER,
            &["calendar.events", "calendar.events.readonly"],
        )
        .await
        .unwrap();
    assert_eq!(
        tokens.scope,
        "https://www.googleapis.com/auth/calendar.events.readonly"
    );
    let api = Api {
        base: fake.base(),
        token: tokens.access_token,
        http: fake.http.clone(),
    };
    assert_eq!(api.get(&events_path("primary"), &[]).await.status, 200);
    let write = api
        .post(
            &events_path("primary"),
            timed("x", "2024-01-01T10:00:00Z", "2024-01-01T11:00:00Z"),
        )
        .await;
    assert_eq!(
        (write.status, write.reason()),
        (403, "insufficientPermissions")
    );
    let fb = api
        .post(
            "/calendar/v3/freeBusy",
            serde_json::json!({"timeMin": "2024-01-01T00:00:00Z", "timeMax": "2024-01-02T00:00:00Z", "items": [{"id": USER}]}),
        )
        .await;
    assert_eq!(
        (fb.status, fb.reason()),
        (403, "insufficientPermissions"),
        "events.readonly is not a freebusy scope"
    );
    let cl = api.get("/calendar/v3/users/me/calendarList", &[]).await;
    assert_eq!(cl.status, 403, "calendarList needs a calendar-list scope");
}

#[tokio::test]
async fn a_denied_consent_redirects_with_access_denied() {
    let fake = start(quiet()).await;
    fake.control
        .set_consent(&ConsentSpec {
            deny: true,
            granted_scopes: None,
        })
        .await
        .unwrap();
    let pairs = consent(&fake, &[]).await.unwrap();
    assert_eq!(param(&pairs, "error"), Some("access_denied"));
    assert_eq!(param(&pairs, "state"), Some("xyz"));
    // Only the next consent.
    assert!(param(&consent(&fake, &[]).await.unwrap(), "code").is_some());
}

#[tokio::test]
async fn the_refresh_token_limit_invalidates_the_oldest() {
    let fake = start(calbridge_fake_google::FakeConfig {
        max_refresh_tokens_per_client: 2,
        ..quiet()
    })
    .await;
    let mut tokens = Vec::new();
    for _ in 0..3 {
        tokens.push(
            fake.control
                .sign_in(&client(), USER, &["calendar"])
                .await
                .unwrap()
                .refresh_token
                .unwrap(),
        );
    }
    assert_eq!(refresh(&fake, &tokens[0]).await.0, 400);
    assert_eq!(refresh(&fake, &tokens[1]).await.0, 200);
    assert_eq!(refresh(&fake, &tokens[2]).await.0, 200);
}
