//! [`Control`], a typed Rust client for the fake's control API, and
//! [`Control::sign_in`], which runs Google's real consent + token flow
//! against the fake (for tests that need an access token quickly).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::config::PagingQuirks;
use crate::control::{
    ChannelInfo, ClientRegistration, ClockAdvance, ConsentSpec, Fault, NewCalendar, NewUser,
    PushBehaviour, QuotaLimits, RequestCounts, ViolationRecord,
};

/// A control call that failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The request did not complete.
    #[error("control request failed: {0}")]
    Http(#[from] reqwest::Error),
    /// The fake answered with an error status.
    #[error("control call {call} answered {status}: {body}")]
    Status {
        /// Which call.
        call: String,
        /// HTTP status.
        status: u16,
        /// Response body.
        body: String,
    },
}

/// The token endpoint's answer, as [`Control::sign_in`] returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tokens {
    /// Bearer token for API calls.
    pub access_token: String,
    /// Present when consent was offline and a refresh token was due.
    #[serde(default)]
    pub refresh_token: Option<String>,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    /// Granted scopes, space separated.
    pub scope: String,
    /// Always `Bearer`.
    pub token_type: String,
}

/// Typed client for the control API under `/fake/v1` of one fake server.
#[derive(Debug, Clone)]
pub struct Control {
    base: String,
    http: reqwest::Client,
}

fn seg(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

impl Control {
    /// A client for the fake at `base_url` (`http://127.0.0.1:PORT`).
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base: base_url.into().trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("a plain HTTP client builds"),
        }
    }

    /// The fake's base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    async fn send(
        &self,
        call: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ControlError> {
        let response = request.send().await?;
        if response.status().is_success() {
            Ok(response)
        } else {
            let status = response.status().as_u16();
            let body = response.text().await.unwrap_or_default();
            Err(ControlError::Status {
                call: call.to_string(),
                status,
                body,
            })
        }
    }

    async fn post<B: Serialize + ?Sized>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<reqwest::Response, ControlError> {
        self.send(
            path,
            self.http.post(format!("{}{path}", self.base)).json(body),
        )
        .await
    }

    async fn post_empty(&self, path: &str) -> Result<(), ControlError> {
        self.send(path, self.http.post(format!("{}{path}", self.base)))
            .await?;
        Ok(())
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ControlError> {
        Ok(self
            .send(path, self.http.get(format!("{}{path}", self.base)))
            .await?
            .json()
            .await?)
    }

    /// `POST /fake/v1/clients`: registers an OAuth client.
    pub async fn add_client(&self, client: &ClientRegistration) -> Result<(), ControlError> {
        self.post("/fake/v1/clients", client).await?;
        Ok(())
    }

    /// `POST /fake/v1/users`: adds a user whose primary calendar (id = e-mail) is in UTC.
    pub async fn add_user(&self, email: &str) -> Result<(), ControlError> {
        self.add_user_with(&NewUser {
            email: email.to_string(),
            time_zone: None,
        })
        .await
    }

    /// `POST /fake/v1/users` with every option.
    pub async fn add_user_with(&self, user: &NewUser) -> Result<(), ControlError> {
        self.post("/fake/v1/users", user).await?;
        Ok(())
    }

    /// `POST /fake/v1/calendars`: adds (or shares) a calendar into a user's list.
    pub async fn add_calendar(&self, calendar: &NewCalendar) -> Result<(), ControlError> {
        self.post("/fake/v1/calendars", calendar).await?;
        Ok(())
    }

    /// `DELETE /fake/v1/calendars/{cal}`: deletes a calendar (channels get `not_exists`).
    pub async fn delete_calendar(&self, calendar: &str) -> Result<(), ControlError> {
        let path = format!("/fake/v1/calendars/{}", seg(calendar));
        self.send(&path, self.http.delete(format!("{}{path}", self.base)))
            .await?;
        Ok(())
    }

    /// `POST /fake/v1/consent`: how the next consent goes.
    pub async fn set_consent(&self, consent: &ConsentSpec) -> Result<(), ControlError> {
        self.post("/fake/v1/consent", consent).await?;
        Ok(())
    }

    /// `POST /fake/v1/calendars/{cal}/events`: inserts as another client; answers the stored event.
    pub async fn insert_event(&self, calendar: &str, event: &Value) -> Result<Value, ControlError> {
        let path = format!("/fake/v1/calendars/{}/events", seg(calendar));
        Ok(self.post(&path, event).await?.json().await?)
    }

    /// `PATCH /fake/v1/calendars/{cal}/events/{id}`: patches as another client; answers the stored event.
    pub async fn patch_event(
        &self,
        calendar: &str,
        id: &str,
        patch: &Value,
    ) -> Result<Value, ControlError> {
        let path = format!("/fake/v1/calendars/{}/events/{}", seg(calendar), seg(id));
        let request = self.http.patch(format!("{}{path}", self.base)).json(patch);
        Ok(self.send(&path, request).await?.json().await?)
    }

    /// `DELETE /fake/v1/calendars/{cal}/events/{id}`: deletes as another client.
    pub async fn delete_event(&self, calendar: &str, id: &str) -> Result<(), ControlError> {
        let path = format!("/fake/v1/calendars/{}/events/{}", seg(calendar), seg(id));
        self.send(&path, self.http.delete(format!("{}{path}", self.base)))
            .await?;
        Ok(())
    }

    /// `GET /fake/v1/calendars/{cal}/events`: every stored event, cancelled
    /// ones and private extended properties included, in creation order.
    pub async fn events(&self, calendar: &str) -> Result<Vec<Value>, ControlError> {
        self.get(&format!("/fake/v1/calendars/{}/events", seg(calendar)))
            .await
    }

    /// `POST /fake/v1/calendars/{cal}/expire-sync-tokens`: every sync token
    /// issued for the calendar answers 410 `fullSyncRequired` from now on.
    pub async fn expire_sync_tokens(&self, calendar: &str) -> Result<(), ControlError> {
        self.post_empty(&format!(
            "/fake/v1/calendars/{}/expire-sync-tokens",
            seg(calendar)
        ))
        .await
    }

    /// `POST /fake/v1/calendars/{cal}/notify`: an `exists` message on the
    /// calendar's channels without any change.
    pub async fn notify(&self, calendar: &str) -> Result<(), ControlError> {
        self.post_empty(&format!("/fake/v1/calendars/{}/notify", seg(calendar)))
            .await
    }

    /// `POST /fake/v1/users/{email}/invalidate-refresh-tokens`: refresh → 400 `invalid_grant`.
    pub async fn invalidate_refresh_tokens(&self, email: &str) -> Result<(), ControlError> {
        self.post_empty(&format!(
            "/fake/v1/users/{}/invalidate-refresh-tokens",
            seg(email)
        ))
        .await
    }

    /// `POST /fake/v1/users/{email}/expire-access-tokens`: current access
    /// tokens answer 401 `authError`.
    pub async fn expire_access_tokens(&self, email: &str) -> Result<(), ControlError> {
        self.post_empty(&format!(
            "/fake/v1/users/{}/expire-access-tokens",
            seg(email)
        ))
        .await
    }

    /// `POST /fake/v1/faults`: the next `count` matching calls fail so.
    pub async fn inject_fault(&self, fault: &Fault) -> Result<(), ControlError> {
        self.post("/fake/v1/faults", fault).await?;
        Ok(())
    }

    /// `DELETE /fake/v1/faults`: forgets faults not yet used.
    pub async fn clear_faults(&self) -> Result<(), ControlError> {
        let path = "/fake/v1/faults";
        self.send(path, self.http.delete(format!("{}{path}", self.base)))
            .await?;
        Ok(())
    }

    /// `POST /fake/v1/push`: delivery behaviour for messages from now on.
    pub async fn set_push(&self, behaviour: &PushBehaviour) -> Result<(), ControlError> {
        self.post("/fake/v1/push", behaviour).await?;
        Ok(())
    }

    /// `GET /fake/v1/channels`: every channel created, oldest first.
    pub async fn channels(&self) -> Result<Vec<ChannelInfo>, ControlError> {
        self.get("/fake/v1/channels").await
    }

    /// `GET /fake/v1/requests`: API request counters.
    pub async fn requests(&self) -> Result<RequestCounts, ControlError> {
        self.get("/fake/v1/requests").await
    }

    /// `GET /fake/v1/violations`: responses that did not match the discovery document.
    pub async fn violations(&self) -> Result<Vec<ViolationRecord>, ControlError> {
        self.get("/fake/v1/violations").await
    }

    /// `POST /fake/v1/reset-counters`: zeroes the request counters.
    pub async fn reset_counters(&self) -> Result<(), ControlError> {
        self.post_empty("/fake/v1/reset-counters").await
    }

    /// `POST /fake/v1/clock`: moves the fake's clock forward (token and
    /// channel expiry, quota windows, sync-token age).
    pub async fn advance_clock(&self, seconds: i64) -> Result<(), ControlError> {
        self.post(
            "/fake/v1/clock",
            &ClockAdvance {
                advance_seconds: seconds,
            },
        )
        .await?;
        Ok(())
    }

    /// `POST /fake/v1/paging`: when pages come back short or empty.
    pub async fn set_paging(&self, quirks: PagingQuirks) -> Result<(), ControlError> {
        self.post("/fake/v1/paging", &quirks).await?;
        Ok(())
    }

    /// `POST /fake/v1/quotas`: per-user and per-project requests per minute.
    pub async fn set_quotas(&self, limits: &QuotaLimits) -> Result<(), ControlError> {
        self.post("/fake/v1/quotas", limits).await?;
        Ok(())
    }

    /// Runs the real consent (PKCE S256, `access_type=offline`) and code
    /// exchange for `user` against this fake and returns the tokens. The
    /// client must be registered with `redirect_uri` among its URIs.
    pub async fn sign_in(
        &self,
        client: &ClientRegistration,
        user: &str,
        scopes: &[&str],
    ) -> Result<Tokens, ControlError> {
        let redirect_uri = client.redirect_uris.first().cloned().unwrap_or_default();
        let verifier = format!(
            "{:x}",
            Sha256::digest(format!("{user}{}", client.client_id).as_bytes())
        );
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let scope = scopes
            .iter()
            .map(|s| crate::oauth::full_scope(s))
            .collect::<Vec<_>>()
            .join(" ");
        let call = "sign_in";
        let response = self
            .http
            .get(format!("{}/o/oauth2/v2/auth", self.base))
            .query(&[
                ("client_id", client.client_id.as_str()),
                ("redirect_uri", redirect_uri.as_str()),
                ("response_type", "code"),
                ("scope", scope.as_str()),
                ("access_type", "offline"),
                ("prompt", "consent"),
                ("login_hint", user),
                ("state", "sign-in"),
                ("code_challenge", challenge.as_str()),
                ("code_challenge_method", "S256"),
            ])
            .send()
            .await?;
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let code = reqwest::Url::parse(&location)
            .ok()
            .and_then(|u| {
                u.query_pairs()
                    .find(|(k, _)| k == "code")
                    .map(|(_, v)| v.into_owned())
            })
            .ok_or_else(|| ControlError::Status {
                call: call.into(),
                status: response.status().as_u16(),
                body: format!("no code in redirect {location:?}"),
            })?;
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", redirect_uri.as_str()),
            ("client_id", client.client_id.as_str()),
            ("client_secret", client.client_secret.as_str()),
            ("code_verifier", verifier.as_str()),
        ];
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let request = self
            .http
            .post(format!("{}/token", self.base))
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body);
        Ok(self.send(call, request).await?.json().await?)
    }
}
