//! What the fake Graph's HTTP tests share: a fake with the application
//! `app` (secret `secret`, redirect [`REDIRECT`]) and users, and the
//! identity platform's consent and code exchange done as a client would.

#![allow(dead_code)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use calbridge_fake_graph::{Control, FakeConfig, FakeHandle};
use reqwest::StatusCode;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The user signing in.
pub(crate) const USER: &str = "ada@contoso.example";
/// The application's redirect URI (read, never followed).
pub(crate) const REDIRECT: &str = "http://127.0.0.1:9/cb";
/// The PKCE verifier every sign-in uses.
const VERIFIER: &str = "a-verifier-long-enough-for-pkce-0123456789abcdef";

/// A running fake and a client that does not follow redirects.
pub(crate) struct Fake {
    pub(crate) fake: FakeHandle,
    pub(crate) control: Control,
    pub(crate) http: reqwest::Client,
}

/// A fake configured as `config` with the application and `users`
/// (address and time zone).
pub(crate) async fn start(config: FakeConfig, users: &[(&str, &str)]) -> Fake {
    let fake = calbridge_fake_graph::serve(config).await.unwrap();
    let control = fake.control();
    control.add_client("app", "secret", REDIRECT).await.unwrap();
    for (user, zone) in users {
        control.add_user(user, zone).await.unwrap();
    }
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap();
    Fake {
        fake,
        control,
        http,
    }
}

impl Fake {
    /// `path` at the fake.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.fake.base_url())
    }

    /// The code [`USER`]'s consent to `scope` redirects back with.
    pub(crate) async fn consent_code(&self, scope: &str) -> String {
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(VERIFIER.as_bytes()));
        let auth = self
            .http
            .get(self.url("/common/oauth2/v2.0/authorize"))
            .query(&[
                ("client_id", "app"),
                ("response_type", "code"),
                ("redirect_uri", REDIRECT),
                ("scope", scope),
                ("state", "s"),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
                ("login_hint", USER),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(auth.status(), StatusCode::FOUND);
        let location = reqwest::Url::parse(auth.headers()["location"].to_str().unwrap()).unwrap();
        location
            .query_pairs()
            .find(|(k, _)| k == "code")
            .unwrap()
            .1
            .into_owned()
    }

    /// The token endpoint's answer to redeeming `code`.
    pub(crate) async fn redeem(&self, code: &str) -> reqwest::Response {
        self.http
            .post(self.url("/common/oauth2/v2.0/token"))
            .form(&[
                ("client_id", "app"),
                ("client_secret", "secret"),
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", VERIFIER),
            ])
            .send()
            .await
            .unwrap()
    }

    /// An access token of [`USER`] for `scope`.
    pub(crate) async fn token(&self, scope: &str) -> String {
        let code = self.consent_code(scope).await;
        let answer: Value = self.redeem(&code).await.json().await.unwrap();
        answer["access_token"].as_str().unwrap().to_string()
    }

    /// Fails when any answer broke Microsoft's schemas.
    pub(crate) async fn verify(&self) {
        let v = self.control.violations().await.unwrap();
        assert!(v.is_empty(), "{v:#?}");
    }
}
