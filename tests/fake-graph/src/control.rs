//! The control API under `/fake/v1` (what a test does as Microsoft, or as
//! the user in Outlook) and [`Control`], its client.

use std::sync::Arc;

use anyhow::{bail, Context as _};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::api::graph_error;
use crate::events::{self, err, render, View};
use crate::state::{Client, Fault};
use crate::Shared;

pub(crate) fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/fake/v1/clients", post(add_client))
        .route("/fake/v1/users", post(add_user))
        .route("/fake/v1/users/{email}/events", get(list).post(insert))
        .route(
            "/fake/v1/users/{email}/events/{id}",
            delete(remove).patch(patch),
        )
        .route("/fake/v1/users/{email}/expire-delta", post(expire))
        .route("/fake/v1/users/{email}/kill-grants", post(kill_grants))
        .route(
            "/fake/v1/users/{email}/critical-event",
            post(critical_event),
        )
        .route("/fake/v1/latency", post(set_latency))
        .route("/fake/v1/budget", post(set_budget))
        .route("/fake/v1/faults", post(add_fault))
        .route("/fake/v1/stats", get(stats))
        .route("/fake/v1/violations", get(violations))
        .route("/fake/v1/graph-url", post(set_graph_url))
}

async fn add_client(State(s): State<Arc<Shared>>, Json(b): Json<Value>) -> Response {
    let (Some(id), Some(secret), Some(redirect)) = (
        b["client_id"].as_str(),
        b["secret"].as_str(),
        b["redirect_uri"].as_str(),
    ) else {
        return (StatusCode::BAD_REQUEST, "client_id, secret, redirect_uri").into_response();
    };
    s.lock().clients.insert(
        id.into(),
        Client {
            secret: secret.into(),
            redirect_uri: redirect.into(),
        },
    );
    StatusCode::NO_CONTENT.into_response()
}

async fn add_user(State(s): State<Arc<Shared>>, Json(b): Json<Value>) -> Response {
    let Some(email) = b["email"].as_str() else {
        return (StatusCode::BAD_REQUEST, "email").into_response();
    };
    s.lock()
        .add_user(email, b["time_zone"].as_str().unwrap_or("UTC"));
    StatusCode::NO_CONTENT.into_response()
}

async fn list(State(s): State<Arc<Shared>>, Path(email): Path<String>) -> Response {
    let st = s.lock();
    let Some(u) = st.users.get(&email) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let v: Vec<Value> = u
        .events
        .values()
        .map(|e| render(&events::as_item(e), &View::default()))
        .collect();
    Json(json!({"value": v})).into_response()
}

fn default_calendar(s: &Shared, email: &str) -> String {
    s.lock()
        .users
        .get(email)
        .and_then(|u| {
            u.calendars
                .iter()
                .find(|c| c.is_default)
                .map(|c| c.id.clone())
        })
        .unwrap_or_default()
}

async fn insert(
    State(s): State<Arc<Shared>>,
    Path(email): Path<String>,
    Json(b): Json<Value>,
) -> Response {
    let cal = default_calendar(&s, &email);
    let Value::Object(map) = b else {
        return (StatusCode::BAD_REQUEST, "object").into_response();
    };
    let mut st = s.lock();
    match events::create(&mut st, &email, &cal, &map) {
        Ok((id, _)) => match st.users.get(&email).and_then(|u| events::get(u, &id)) {
            Some(i) => Json(render(&i, &View::default())).into_response(),
            None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        },
        Err(e) => graph_error(&e),
    }
}

async fn patch(
    State(s): State<Arc<Shared>>,
    Path((email, id)): Path<(String, String)>,
    Json(b): Json<Value>,
) -> Response {
    let Value::Object(map) = b else {
        return (StatusCode::BAD_REQUEST, "object").into_response();
    };
    let mut st = s.lock();
    match events::update(&mut st, &email, &id, &map, None) {
        Ok(id) => match st.users.get(&email).and_then(|u| events::get(u, &id)) {
            Some(i) => Json(render(&i, &View::default())).into_response(),
            None => graph_error(&err(404, "ErrorItemNotFound", "gone")),
        },
        Err(e) => graph_error(&e),
    }
}

async fn remove(
    State(s): State<Arc<Shared>>,
    Path((email, id)): Path<(String, String)>,
) -> Response {
    let mut st = s.lock();
    match events::delete(&mut st, &email, &id, None) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => graph_error(&e),
    }
}

async fn expire(State(s): State<Arc<Shared>>, Path(email): Path<String>) -> Response {
    match s.lock().users.get_mut(&email) {
        Some(u) => {
            u.delta_generation += 1;
            StatusCode::NO_CONTENT.into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn kill_grants(
    State(s): State<Arc<Shared>>,
    Path(email): Path<String>,
    Json(b): Json<Value>,
) -> Response {
    let code = b["aadsts"].as_u64().unwrap_or(700082) as u32;
    let mut st = s.lock();
    for g in st.grants.values_mut().filter(|g| g.user == email) {
        g.dead = Some(code);
    }
    StatusCode::NO_CONTENT.into_response()
}

/// A critical event for the user (a password change, a disabled
/// account, a location change): tokens of clients capable of Continuous
/// Access Evaluation are challenged until they are reissued with the
/// claims.
async fn critical_event(State(s): State<Arc<Shared>>, Path(email): Path<String>) -> Response {
    let mut st = s.lock();
    match st.users.get_mut(&email) {
        Some(u) => {
            u.claims_nbf = Some(chrono::Utc::now().timestamp().to_string());
            StatusCode::NO_CONTENT.into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn set_latency(State(s): State<Arc<Shared>>, Json(b): Json<Value>) -> Response {
    let ms = b["millis"].as_u64().unwrap_or(0).min(60_000);
    s.lock().limits.latency = std::time::Duration::from_millis(ms);
    StatusCode::NO_CONTENT.into_response()
}

async fn set_budget(State(s): State<Arc<Shared>>, Json(b): Json<Value>) -> Response {
    s.lock().limits.per_window = b["per_ten_minutes"].as_u64().map(|n| n as usize);
    StatusCode::NO_CONTENT.into_response()
}

async fn add_fault(State(s): State<Arc<Shared>>, Json(f): Json<Fault>) -> Response {
    s.lock().faults.push_back(f);
    StatusCode::NO_CONTENT.into_response()
}

async fn stats(State(s): State<Arc<Shared>>) -> Response {
    let st = s.lock();
    Json(json!({
        "early_retries": st.early_retries,
        "requests": st.requests,
        "claims_challenges": st.claims_challenges,
        "limit_refusals": st.limits.refused,
    }))
    .into_response()
}

async fn violations(State(s): State<Arc<Shared>>) -> Response {
    Json(json!({"value": s.lock().violations})).into_response()
}

async fn set_graph_url(State(s): State<Arc<Shared>>, Json(b): Json<Value>) -> Response {
    let Some(url) = b["url"].as_str() else {
        return (StatusCode::BAD_REQUEST, "url").into_response();
    };
    s.lock().graph_url = Some(url.trim_end_matches('/').to_string());
    StatusCode::NO_CONTENT.into_response()
}

/// A client of the control API.
#[derive(Debug, Clone)]
pub struct Control {
    base: String,
    http: reqwest::Client,
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

impl Control {
    /// A client of the fake at `base` (`http://ADDR`).
    pub fn new(base: String) -> Self {
        Control {
            base,
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .unwrap_or_default(),
        }
    }

    async fn send(&self, r: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let answer = r.send().await.context("calling the fake's control API")?;
        let status = answer.status();
        let text = answer.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!("the fake answered {status}: {text}");
        }
        Ok(if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)?
        })
    }

    /// Registers an application with its secret and one redirect URI.
    pub async fn add_client(
        &self,
        id: &str,
        secret: &str,
        redirect_uri: &str,
    ) -> anyhow::Result<()> {
        self.send(
            self.http
                .post(format!("{}/fake/v1/clients", self.base))
                .json(&json!({"client_id": id, "secret": secret, "redirect_uri": redirect_uri})),
        )
        .await
        .map(drop)
    }

    /// Adds a user whose mailbox is in `time_zone` (a Windows name), with a
    /// default calendar and a read-only holiday calendar.
    pub async fn add_user(&self, email: &str, time_zone: &str) -> anyhow::Result<()> {
        self.send(
            self.http
                .post(format!("{}/fake/v1/users", self.base))
                .json(&json!({"email": email, "time_zone": time_zone})),
        )
        .await
        .map(drop)
    }

    /// The user's stored events (singles, masters, exceptions) as Graph
    /// shows them.
    pub async fn events(&self, email: &str) -> anyhow::Result<Vec<Value>> {
        let v = self
            .send(
                self.http
                    .get(format!("{}/fake/v1/users/{}/events", self.base, enc(email))),
            )
            .await?;
        Ok(v["value"].as_array().cloned().unwrap_or_default())
    }

    /// Creates an event in the user's default calendar as the user would in
    /// Outlook (a Graph event body); returns it.
    pub async fn insert_event(&self, email: &str, body: &Value) -> anyhow::Result<Value> {
        self.send(
            self.http
                .post(format!("{}/fake/v1/users/{}/events", self.base, enc(email)))
                .json(body),
        )
        .await
    }

    /// Changes an event (or an occurrence) as the user would; returns it.
    pub async fn patch_event(&self, email: &str, id: &str, body: &Value) -> anyhow::Result<Value> {
        self.send(
            self.http
                .patch(format!(
                    "{}/fake/v1/users/{}/events/{}",
                    self.base,
                    enc(email),
                    enc(id)
                ))
                .json(body),
        )
        .await
    }

    /// Deletes an event (or an occurrence) as the user would.
    pub async fn delete_event(&self, email: &str, id: &str) -> anyhow::Result<()> {
        self.send(self.http.delete(format!(
            "{}/fake/v1/users/{}/events/{}",
            self.base,
            enc(email),
            enc(id)
        )))
        .await
        .map(drop)
    }

    /// Makes every delta token of the user's calendars one Graph no longer
    /// honours (410 `SyncStateNotFound`).
    pub async fn expire_delta_tokens(&self, email: &str) -> anyhow::Result<()> {
        self.send(self.http.post(format!(
            "{}/fake/v1/users/{}/expire-delta",
            self.base,
            enc(email)
        )))
        .await
        .map(drop)
    }

    /// Makes every refresh token of the user fail with `invalid_grant` and
    /// this AADSTS code.
    pub async fn kill_grants(&self, email: &str, aadsts: u32) -> anyhow::Result<()> {
        self.send(
            self.http
                .post(format!(
                    "{}/fake/v1/users/{}/kill-grants",
                    self.base,
                    enc(email)
                ))
                .json(&json!({"aadsts": aadsts})),
        )
        .await
        .map(drop)
    }

    /// How many claims challenges (401 `insufficient_claims`) were sent.
    pub async fn claims_challenges(&self) -> anyhow::Result<u64> {
        let v = self
            .send(self.http.get(format!("{}/fake/v1/stats", self.base)))
            .await?;
        Ok(v["claims_challenges"].as_u64().unwrap_or(0))
    }

    /// A critical event for the user: tokens issued before it get a
    /// Continuous Access Evaluation claims challenge (401
    /// `insufficient_claims`) when their client is capable of it.
    pub async fn critical_event(&self, email: &str) -> anyhow::Result<()> {
        self.send(self.http.post(format!(
            "{}/fake/v1/users/{}/critical-event",
            self.base,
            enc(email)
        )))
        .await
        .map(drop)
    }

    /// How many requests the per-mailbox concurrency limit or budget
    /// refused.
    pub async fn limit_refusals(&self) -> anyhow::Result<u64> {
        let v = self
            .send(self.http.get(format!("{}/fake/v1/stats", self.base)))
            .await?;
        Ok(v["limit_refusals"].as_u64().unwrap_or(0))
    }

    /// Delays every Graph request by `millis` (0 for none).
    pub async fn set_latency(&self, millis: u64) -> anyhow::Result<()> {
        self.send(
            self.http
                .post(format!("{}/fake/v1/latency", self.base))
                .json(&json!({ "millis": millis })),
        )
        .await
        .map(drop)
    }

    /// Sets each mailbox's request budget per 10 minutes (Graph's 10,000
    /// when `None`).
    pub async fn set_budget(&self, per_ten_minutes: Option<u64>) -> anyhow::Result<()> {
        self.send(
            self.http
                .post(format!("{}/fake/v1/budget", self.base))
                .json(&json!({ "per_ten_minutes": per_ten_minutes })),
        )
        .await
        .map(drop)
    }

    /// Fails the next Graph requests as `fault` says.
    pub async fn inject(&self, fault: &Fault) -> anyhow::Result<()> {
        self.send(
            self.http
                .post(format!("{}/fake/v1/faults", self.base))
                .json(fault),
        )
        .await
        .map(drop)
    }

    /// Where the fake's answers, or the event bodies it was sent, broke
    /// Microsoft's OpenAPI schemas.
    pub async fn violations(&self) -> anyhow::Result<Vec<String>> {
        let v = self
            .send(self.http.get(format!("{}/fake/v1/violations", self.base)))
            .await?;
        Ok(v["value"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Makes the fake's next and delta links start with `url` (a proxy in
    /// front of it, forwarding to its `/v1.0`) instead of its own
    /// `http://ADDR/v1.0/`.
    pub async fn set_graph_url(&self, url: &str) -> anyhow::Result<()> {
        self.send(
            self.http
                .post(format!("{}/fake/v1/graph-url", self.base))
                .json(&json!({ "url": url })),
        )
        .await
        .map(drop)
    }

    /// How many requests came before a `Retry-After` had passed, and every
    /// Graph request served (`METHOD route`).
    pub async fn stats(&self) -> anyhow::Result<(u64, Vec<String>)> {
        let v = self
            .send(self.http.get(format!("{}/fake/v1/stats", self.base)))
            .await?;
        let reqs = v["requests"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        Ok((v["early_retries"].as_u64().unwrap_or(0), reqs))
    }

    /// Every live subscription.
    pub async fn subscriptions(&self) -> anyhow::Result<Vec<crate::SubscriptionInfo>> {
        let v = self
            .send(
                self.http
                    .get(format!("{}/fake/v1/subscriptions", self.base)),
            )
            .await?;
        Ok(serde_json::from_value(v)?)
    }

    /// Sends lifecycle event `event` (`reauthorizationRequired`,
    /// `subscriptionRemoved`, `missed`) for subscription `id`, with its
    /// effect (removed; deliveries held until reauthorized).
    pub async fn lifecycle(&self, id: &str, event: &str) -> anyhow::Result<()> {
        self.send(self.http.post(format!(
            "{}/fake/v1/subscriptions/{}/lifecycle/{}",
            self.base,
            enc(id),
            enc(event)
        )))
        .await
        .map(drop)
    }

    /// Ends subscription `id` now, as its expiry would.
    pub async fn expire_subscription(&self, id: &str) -> anyhow::Result<()> {
        self.send(self.http.post(format!(
            "{}/fake/v1/subscriptions/{}/expire",
            self.base,
            enc(id)
        )))
        .await
        .map(drop)
    }

    /// Sets how deliveries misbehave.
    pub async fn set_delivery_options(&self, o: &crate::DeliveryOptions) -> anyhow::Result<()> {
        self.send(
            self.http
                .put(format!("{}/fake/v1/delivery-options", self.base))
                .json(o),
        )
        .await
        .map(drop)
    }

    /// Every delivery POST so far.
    pub async fn deliveries(&self) -> anyhow::Result<Vec<crate::DeliveryRecord>> {
        let v = self
            .send(self.http.get(format!("{}/fake/v1/deliveries", self.base)))
            .await?;
        Ok(serde_json::from_value(v)?)
    }
}
