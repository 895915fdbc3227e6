//! Change-notification subscriptions on events, as Graph runs them:
//! `POST /subscriptions` validates the notification URL (and the lifecycle
//! URL) with the `validationToken` handshake before answering 201; the
//! expiration is capped (4,230 minutes for events by default), a
//! `clientState` is at most 128 characters, a mailbox holds at most 1,000;
//! PATCH renews (a lifecycle URL cannot be added), DELETE removes, an
//! expired subscription is gone (404), and `reauthorize` resumes one that
//! needed reauthorization.
//!
//! Every change to a watched calendar's events queues a basic notification
//! (ids only) for its subscriptions; a delivery task posts them in batches
//! (`{"value": [...]}`) per notification URL over HTTPS, waits at most 3
//! seconds for a 2xx, and retries with backoff for up to the configured
//! window. An endpoint whose answers are slow (over 2,900 ms for 10 % of
//! at least 100 deliveries) gets its notifications delayed, and at 15 %
//! dropped with a `missed` lifecycle event. Lifecycle events are sent on
//! demand through the control API, which can also make deliveries
//! duplicate, arrive in reverse order, or be dropped.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::api::{caller, graph_error};
use crate::events::{err, GraphErr};
use crate::state::uuid_like;
use crate::Shared;

/// At most this many subscriptions per mailbox.
const MAX_PER_MAILBOX: usize = 1_000;
/// Graph's limit on `clientState`.
const MAX_CLIENT_STATE: usize = 128;
/// How long Graph waits for the validation answer.
const VALIDATION_TIMEOUT: Duration = Duration::from_secs(10);
/// A delivery answered slower than this counts as slow.
const SLOW: Duration = Duration::from_millis(2_900);
/// Notifications per POST.
const MAX_BATCH: usize = 100;
/// The tenant id notifications carry.
const TENANT_ID: &str = "7b1e3c52-0d1e-4f7a-9c21-4f1b7a9e0c11";

/// A subscription.
#[derive(Debug, Clone)]
pub(crate) struct Subscription {
    pub(crate) id: String,
    pub(crate) user: String,
    /// The watched calendar; `None` watches every calendar of the user.
    pub(crate) calendar: Option<String>,
    pub(crate) resource: String,
    pub(crate) change_types: Vec<String>,
    pub(crate) notification_url: String,
    pub(crate) lifecycle_url: Option<String>,
    pub(crate) client_state: Option<String>,
    pub(crate) expires: DateTime<Utc>,
    pub(crate) tls_version: String,
    /// Deliveries are held until the subscription is reauthorized.
    pub(crate) needs_reauthorization: bool,
}

/// A notification waiting to be delivered.
#[derive(Debug, Clone)]
struct Pending {
    url: String,
    item: Value,
    lifecycle: bool,
    attempts: u32,
    due: Instant,
    first: Instant,
}

/// How deliveries misbehave, set through the control API.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DeliveryOptions {
    /// Every notification is delivered twice.
    #[serde(default)]
    pub duplicate: bool,
    /// Each batch is sent in reverse order.
    #[serde(default)]
    pub reverse: bool,
    /// Change notifications are dropped (as if lost); lifecycle events
    /// still go out.
    #[serde(default)]
    pub drop: bool,
}

/// One POST to a webhook, for tests and benchmarks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeliveryRecord {
    /// The notification URL without its query.
    pub endpoint: String,
    /// The answer's status; 0 when none came in time.
    pub status: u16,
    /// How long the answer took, in microseconds.
    pub micros: u64,
    /// Notifications in the POST.
    pub notifications: usize,
    /// A lifecycle delivery.
    pub lifecycle: bool,
}

/// A subscription as the control API lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubscriptionInfo {
    /// The subscription id.
    pub id: String,
    /// The mailbox (user's address).
    pub user: String,
    /// The watched resource as given.
    pub resource: String,
    /// The notification URL.
    pub notification_url: String,
    /// When it ends (RFC 3339).
    pub expires: String,
    /// Waiting for reauthorization.
    pub needs_reauthorization: bool,
    /// The secret Graph echoes in each notification.
    pub client_state: Option<String>,
}

/// Per endpoint: deliveries and slow ones, for slow-endpoint throttling.
#[derive(Debug, Clone, Default)]
struct Health {
    total: u64,
    slow: u64,
    missed_sent: bool,
}

/// Everything about subscriptions the fake holds.
#[derive(Debug, Default)]
pub(crate) struct Book {
    pub(crate) subs: BTreeMap<String, Subscription>,
    outbox: Vec<Pending>,
    options: DeliveryOptions,
    log: Vec<DeliveryRecord>,
    health: HashMap<String, Health>,
}

impl Book {
    /// Subscriptions still alive (expired ones are dropped first).
    fn live(&mut self) -> &mut BTreeMap<String, Subscription> {
        let now = Utc::now();
        self.subs.retain(|_, s| s.expires > now);
        &mut self.subs
    }

    fn queue(&mut self, url: &str, item: Value, lifecycle: bool, delay: Duration) {
        let now = Instant::now();
        let copies = if self.options.duplicate { 2 } else { 1 };
        for _ in 0..copies {
            self.outbox.push(Pending {
                url: url.to_string(),
                item: item.clone(),
                lifecycle,
                attempts: 0,
                due: now + delay,
                first: now,
            });
        }
    }
}

fn endpoint_of(url: &str) -> String {
    url.split('?').next().unwrap_or(url).to_string()
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Queues change notifications for `event_id` of `calendar` in `user`'s
/// mailbox (`change`: created, updated or deleted).
pub(crate) fn changed(
    st: &mut crate::state::State,
    user: &str,
    calendar: &str,
    event_id: &str,
    change_key: Option<&str>,
    change: &str,
) {
    let Some(user_id) = st.users.get(user).map(|u| u.id.clone()) else {
        return;
    };
    let slow_delay = st.slow_endpoint_delay;
    let book = &mut st.subscriptions;
    if book.options.drop {
        return;
    }
    let targets: Vec<Subscription> = book
        .live()
        .values()
        .filter(|s| {
            s.user == user
                && s.calendar.as_deref().is_none_or(|c| c == calendar)
                && s.change_types.iter().any(|c| c == change)
        })
        .cloned()
        .collect();
    for s in targets {
        let resource = format!("Users/{user_id}/Events/{event_id}");
        let mut data = json!({
            "@odata.type": "#Microsoft.Graph.Event",
            "@odata.id": resource,
            "id": event_id,
        });
        if let Some(k) = change_key {
            data["@odata.etag"] = json!(format!("W/\"{k}\""));
        }
        let item = json!({
            "subscriptionId": s.id,
            "subscriptionExpirationDateTime": rfc3339(s.expires),
            "changeType": change,
            "clientState": s.client_state,
            "tenantId": TENANT_ID,
            "resource": resource,
            "resourceData": data,
        });
        let health = book
            .health
            .get(&endpoint_of(&s.notification_url))
            .cloned()
            .unwrap_or_default();
        let ratio = if health.total >= 100 {
            health.slow as f64 / health.total as f64
        } else {
            0.0
        };
        if ratio >= 0.15 {
            // Dropped; the owner hears of it once through `missed`.
            if !health.missed_sent {
                if let Some(l) = s.lifecycle_url.clone() {
                    let item = lifecycle_item(&s, "missed");
                    book.queue(&l, item, true, Duration::ZERO);
                }
                book.health
                    .entry(endpoint_of(&s.notification_url))
                    .or_default()
                    .missed_sent = true;
            }
            continue;
        }
        let delay = if ratio >= 0.10 {
            slow_delay
        } else {
            Duration::ZERO
        };
        book.queue(&s.notification_url, item, false, delay);
    }
    st.wake.notify_one();
}

fn lifecycle_item(s: &Subscription, event: &str) -> Value {
    json!({
        "subscriptionId": s.id,
        "subscriptionExpirationDateTime": rfc3339(s.expires),
        "tenantId": TENANT_ID,
        "clientState": s.client_state,
        "lifecycleEvent": event,
    })
}

/// The Graph routes (below `/v1.0`).
pub(crate) fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/subscriptions", get(list).post(create))
        .route(
            "/subscriptions/{id}",
            get(get_one).patch(renew).delete(remove),
        )
        .route("/subscriptions/{id}/{function}", post(reauthorize))
}

/// The control routes (below `/fake/v1`).
pub(crate) fn control_router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/fake/v1/subscriptions", get(control_list))
        .route(
            "/fake/v1/subscriptions/{id}/lifecycle/{event}",
            post(control_lifecycle),
        )
        .route("/fake/v1/subscriptions/{id}/expire", post(control_expire))
        .route(
            "/fake/v1/delivery-options",
            get(control_options).put(control_set_options),
        )
        .route("/fake/v1/deliveries", get(control_deliveries))
}

fn json_answer(status: StatusCode, v: Value) -> Response {
    (status, Json(v)).into_response()
}

fn subscription_json(base: &str, s: &Subscription) -> Value {
    json!({
        "@odata.context": format!("{base}/v1.0/$metadata#subscriptions/$entity"),
        "id": s.id,
        "resource": s.resource,
        "applicationId": "00000000-0000-0000-0000-000000000000",
        "changeType": s.change_types.join(","),
        "clientState": s.client_state,
        "notificationUrl": s.notification_url,
        "lifecycleNotificationUrl": s.lifecycle_url,
        "expirationDateTime": rfc3339(s.expires),
        "creatorId": uuid_like(),
        "latestSupportedTlsVersion": s.tls_version,
        "includeResourceData": false,
        "encryptionCertificate": null,
        "encryptionCertificateId": null,
        "notificationUrlAppId": null,
        "notificationQueryOptions": null,
    })
}

fn invalid(message: &str) -> GraphErr {
    err(400, "InvalidRequest", message)
}

/// The calendar a `resource` names in `user`'s mailbox: `Some(None)` for
/// every calendar, `Some(Some(id))` for one.
fn watched(
    st: &crate::state::State,
    user: &str,
    resource: &str,
) -> Result<Option<String>, GraphErr> {
    let path = resource.trim_start_matches('/');
    let segments: Vec<String> = path
        .split('/')
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let u = st
        .users
        .get(user)
        .ok_or_else(|| err(404, "ErrorInvalidUser", "The requested user is invalid."))?;
    let s: Vec<&str> = segments.iter().map(String::as_str).collect();
    match s.as_slice() {
        ["me", "events"] => Ok(None),
        ["me", "calendar", "events"] => Ok(u
            .calendars
            .iter()
            .find(|c| c.is_default)
            .map(|c| c.id.clone())),
        ["me", "calendars", id, "events"] => {
            if u.calendars.iter().any(|c| c.id == *id) {
                Ok(Some((*id).to_string()))
            } else {
                Err(err(
                    404,
                    "ErrorItemNotFound",
                    "The specified object was not found in the store.",
                ))
            }
        }
        _ => Err(invalid(
            "Resource is not supported for change notifications.",
        )),
    }
}

fn parse_expiration(v: Option<&Value>, cap: Duration) -> Result<DateTime<Utc>, GraphErr> {
    let t = v
        .and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| {
            invalid("expirationDateTime is required and must be a UTC date and time.")
        })?;
    let now = Utc::now();
    if t <= now {
        return Err(invalid("Subscription expiration must be in the future."));
    }
    let max = now + chrono::Duration::from_std(cap).unwrap_or_default();
    if t > max {
        return Err(invalid(&format!(
            "Subscription expiration can only be {} minutes in the future.",
            cap.as_secs() / 60
        )));
    }
    Ok(t)
}

/// Graph's validation handshake against `url`.
async fn validate(http: &reqwest::Client, url: &str) -> Result<(), GraphErr> {
    let token = format!(
        "Validation: Testing client application reachability for subscription Request-Id: {}",
        uuid_like()
    );
    let mut target = reqwest::Url::parse(url).map_err(|_| invalid("Invalid notification URL."))?;
    target
        .query_pairs_mut()
        .append_pair("validationToken", &token);
    let failed = || {
        invalid("Subscription validation request failed. Notification endpoint must respond with 200 OK to validation request.")
    };
    let resp = http
        .post(target)
        .header("content-type", "text/plain; charset=utf-8")
        .timeout(VALIDATION_TIMEOUT)
        .send()
        .await
        .map_err(|_| failed())?;
    let plain = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain"));
    if resp.status() != reqwest::StatusCode::OK || !plain {
        return Err(failed());
    }
    let body = resp.text().await.map_err(|_| failed())?;
    if body != token {
        return Err(failed());
    }
    Ok(())
}

fn https_url(v: Option<&Value>, field: &str) -> Result<Option<String>, GraphErr> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let s = v
        .as_str()
        .ok_or_else(|| invalid(&format!("{field} must be a string.")))?;
    let u = reqwest::Url::parse(s).map_err(|_| invalid(&format!("Invalid {field}.")))?;
    if u.scheme() != "https" {
        return Err(invalid(&format!(
            "The {field} must be an HTTPS URL: {}",
            endpoint_of(s)
        )));
    }
    Ok(Some(s.to_string()))
}

async fn create(
    State(s): State<Arc<Shared>>,
    h: HeaderMap,
    m: Method,
    body: axum::body::Bytes,
) -> Response {
    let user = match caller(&s, &h, &m, "/subscriptions", false) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    match create_inner(&s, &user, &body).await {
        Ok(sub) => json_answer(StatusCode::CREATED, subscription_json(&s.base_url, &sub)),
        Err(e) => graph_error(&e),
    }
}

async fn create_inner(s: &Shared, user: &str, body: &[u8]) -> Result<Subscription, GraphErr> {
    let b: Map<String, Value> =
        serde_json::from_slice(body).map_err(|_| invalid("The request body is not JSON."))?;
    let change_types: Vec<String> = b
        .get("changeType")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .split(',')
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .collect();
    if change_types.is_empty()
        || change_types
            .iter()
            .any(|c| !matches!(c.as_str(), "created" | "updated" | "deleted"))
    {
        return Err(invalid(
            "changeType must be a comma-separated list of created, updated and deleted.",
        ));
    }
    let notification_url = https_url(b.get("notificationUrl"), "notificationUrl")?
        .ok_or_else(|| invalid("notificationUrl is required."))?;
    let lifecycle_url = https_url(
        b.get("lifecycleNotificationUrl"),
        "lifecycleNotificationUrl",
    )?;
    let client_state = match b.get("clientState") {
        None | Some(Value::Null) => None,
        Some(Value::String(c)) if c.chars().count() <= MAX_CLIENT_STATE => Some(c.clone()),
        Some(_) => {
            return Err(invalid(
                "clientState must be a string of at most 128 characters.",
            ))
        }
    };
    let resource = b
        .get("resource")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("resource is required."))?
        .to_string();
    let expires = parse_expiration(b.get("expirationDateTime"), s.config.subscription_max)?;
    let tls_version = b
        .get("latestSupportedTlsVersion")
        .and_then(Value::as_str)
        .unwrap_or("v1_2")
        .to_string();
    let calendar = {
        let mut st = s.lock();
        let calendar = watched(&st, user, &resource)?;
        let count = st
            .subscriptions
            .live()
            .values()
            .filter(|x| x.user == user)
            .count();
        if count >= MAX_PER_MAILBOX {
            return Err(err(
                403,
                "ExtensionError",
                "Operation: Create; Exception: [Status Code: Forbidden; Reason: The maximum number of subscriptions for this mailbox has been reached.]",
            ));
        }
        calendar
    };
    validate(&s.webhook, &notification_url).await?;
    if let Some(l) = &lifecycle_url {
        if l != &notification_url {
            validate(&s.webhook, l).await?;
        }
    }
    let sub = Subscription {
        id: uuid_like(),
        user: user.to_string(),
        calendar,
        resource,
        change_types,
        notification_url,
        lifecycle_url,
        client_state,
        expires,
        tls_version,
        needs_reauthorization: false,
    };
    s.lock()
        .subscriptions
        .subs
        .insert(sub.id.clone(), sub.clone());
    Ok(sub)
}

/// The caller's live subscription `id`.
fn owned(s: &Shared, user: &str, id: &str) -> Result<Subscription, GraphErr> {
    s.lock()
        .subscriptions
        .live()
        .get(id)
        .filter(|x| x.user == user)
        .cloned()
        .ok_or_else(|| {
            err(
                404,
                "ResourceNotFound",
                format!("The object was not found. Subscription '{id}' does not exist."),
            )
        })
}

async fn list(State(s): State<Arc<Shared>>, h: HeaderMap, m: Method) -> Response {
    let user = match caller(&s, &h, &m, "/subscriptions", false) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    let value: Vec<Value> = s
        .lock()
        .subscriptions
        .live()
        .values()
        .filter(|x| x.user == user)
        .map(|x| subscription_json(&s.base_url, x))
        .collect();
    json_answer(
        StatusCode::OK,
        json!({
            "@odata.context": format!("{}/v1.0/$metadata#subscriptions", s.base_url),
            "value": value,
        }),
    )
}

async fn get_one(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    h: HeaderMap,
    m: Method,
) -> Response {
    let user = match caller(&s, &h, &m, "/subscriptions/{id}", false) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    match owned(&s, &user, &id) {
        Ok(sub) => json_answer(StatusCode::OK, subscription_json(&s.base_url, &sub)),
        Err(e) => graph_error(&e),
    }
}

async fn renew(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    h: HeaderMap,
    m: Method,
    body: axum::body::Bytes,
) -> Response {
    let user = match caller(&s, &h, &m, "/subscriptions/{id}", false) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    let result = (|| {
        let sub = owned(&s, &user, &id)?;
        let b: Map<String, Value> =
            serde_json::from_slice(&body).map_err(|_| invalid("The request body is not JSON."))?;
        if b.contains_key("lifecycleNotificationUrl") && sub.lifecycle_url.is_none() {
            return Err(invalid(
                "lifecycleNotificationUrl cannot be added to an existing subscription.",
            ));
        }
        if b.keys().any(|k| {
            !matches!(
                k.as_str(),
                "expirationDateTime"
                    | "notificationUrl"
                    | "lifecycleNotificationUrl"
                    | "@odata.type"
            )
        }) {
            return Err(invalid("Only expirationDateTime can be updated."));
        }
        let expires = parse_expiration(b.get("expirationDateTime"), s.config.subscription_max)?;
        let mut st = s.lock();
        let entry = st
            .subscriptions
            .subs
            .get_mut(&id)
            .ok_or_else(|| err(404, "ResourceNotFound", "The object was not found."))?;
        entry.expires = expires;
        entry.needs_reauthorization = false;
        Ok(entry.clone())
    })();
    s.lock().wake.notify_one();
    match result {
        Ok(sub) => json_answer(StatusCode::OK, subscription_json(&s.base_url, &sub)),
        Err(e) => graph_error(&e),
    }
}

async fn remove(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    h: HeaderMap,
    m: Method,
) -> Response {
    let user = match caller(&s, &h, &m, "/subscriptions/{id}", false) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    match owned(&s, &user, &id) {
        Ok(_) => {
            s.lock().subscriptions.subs.remove(&id);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => graph_error(&e),
    }
}

async fn reauthorize(
    State(s): State<Arc<Shared>>,
    Path((id, function)): Path<(String, String)>,
    h: HeaderMap,
    m: Method,
) -> Response {
    if !matches!(
        function.as_str(),
        "reauthorize" | "reauthorize()" | "microsoft.graph.reauthorize"
    ) {
        return crate::api::not_found().await;
    }
    let user = match caller(&s, &h, &m, "/subscriptions/{id}/reauthorize", false) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    match owned(&s, &user, &id) {
        Ok(_) => {
            let mut st = s.lock();
            if let Some(x) = st.subscriptions.subs.get_mut(&id) {
                x.needs_reauthorization = false;
            }
            st.wake.notify_one();
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => graph_error(&e),
    }
}

/// Delivers queued notifications until `stop` turns true.
pub(crate) async fn deliver(shared: Arc<Shared>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let wake = shared.lock().wake.clone();
    loop {
        let (batches, next) = take_due(&shared);
        for (url, lifecycle, items) in batches {
            let shared = shared.clone();
            tokio::spawn(async move { post_batch(&shared, url, lifecycle, items).await });
        }
        let sleep = next.map_or(Duration::from_secs(3600), |n| {
            n.saturating_duration_since(Instant::now())
        });
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(sleep) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

type Batch = (String, bool, Vec<Pending>);

/// The batches due now, and when the next one falls due.
fn take_due(shared: &Shared) -> (Vec<Batch>, Option<Instant>) {
    let mut st = shared.lock();
    let now = Instant::now();
    let paused: Vec<String> = st
        .subscriptions
        .subs
        .values()
        .filter(|x| x.needs_reauthorization)
        .map(|x| x.id.clone())
        .collect();
    let book = &mut st.subscriptions;
    let (due, rest): (Vec<Pending>, Vec<Pending>) =
        std::mem::take(&mut book.outbox).into_iter().partition(|p| {
            let held = !p.lifecycle
                && p.item
                    .get("subscriptionId")
                    .and_then(Value::as_str)
                    .is_some_and(|id| paused.iter().any(|x| x == id));
            p.due <= now && !held
        });
    book.outbox = rest;
    let next = book.outbox.iter().map(|p| p.due).min();
    let mut groups: BTreeMap<(String, bool), Vec<Pending>> = BTreeMap::new();
    for p in due {
        groups
            .entry((p.url.clone(), p.lifecycle))
            .or_default()
            .push(p);
    }
    let reverse = book.options.reverse;
    let mut out = Vec::new();
    for ((url, lifecycle), mut items) in groups {
        if reverse {
            items.reverse();
        }
        while !items.is_empty() {
            let rest = items.split_off(items.len().min(MAX_BATCH));
            out.push((url.clone(), lifecycle, std::mem::replace(&mut items, rest)));
        }
    }
    (out, next)
}

async fn post_batch(shared: &Shared, url: String, lifecycle: bool, items: Vec<Pending>) {
    let body = json!({"value": items.iter().map(|p| p.item.clone()).collect::<Vec<_>>()});
    let started = Instant::now();
    let answer = shared
        .webhook
        .post(&url)
        .json(&body)
        .timeout(shared.config.delivery_timeout)
        .send()
        .await;
    let took = started.elapsed();
    let status = answer.as_ref().map(|r| r.status().as_u16()).unwrap_or(0);
    let ok = (200..300).contains(&status);
    let mut st = shared.lock();
    let retry_window = st.delivery_retry_window;
    let book = &mut st.subscriptions;
    let endpoint = endpoint_of(&url);
    let health = book.health.entry(endpoint.clone()).or_default();
    health.total += 1;
    if took > SLOW || status == 0 {
        health.slow += 1;
    }
    if book.log.len() < 100_000 {
        book.log.push(DeliveryRecord {
            endpoint,
            status,
            micros: took.as_micros() as u64,
            notifications: items.len(),
            lifecycle,
        });
    }
    if !ok {
        let now = Instant::now();
        for mut p in items {
            if now.duration_since(p.first) >= retry_window {
                continue;
            }
            p.attempts += 1;
            let backoff = Duration::from_millis(250u64 << p.attempts.min(8));
            p.due = now + backoff;
            book.outbox.push(p);
        }
        st.wake.notify_one();
    }
}

async fn control_list(State(s): State<Arc<Shared>>) -> Response {
    let list: Vec<SubscriptionInfo> = s
        .lock()
        .subscriptions
        .live()
        .values()
        .map(|x| SubscriptionInfo {
            id: x.id.clone(),
            user: x.user.clone(),
            resource: x.resource.clone(),
            notification_url: x.notification_url.clone(),
            expires: rfc3339(x.expires),
            needs_reauthorization: x.needs_reauthorization,
            client_state: x.client_state.clone(),
        })
        .collect();
    Json(list).into_response()
}

async fn control_lifecycle(
    State(s): State<Arc<Shared>>,
    Path((id, event)): Path<(String, String)>,
) -> Response {
    if !matches!(
        event.as_str(),
        "reauthorizationRequired" | "subscriptionRemoved" | "missed"
    ) {
        return (StatusCode::BAD_REQUEST, "unknown lifecycle event").into_response();
    }
    let mut st = s.lock();
    let Some(sub) = st.subscriptions.live().get(&id).cloned() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match event.as_str() {
        "subscriptionRemoved" => {
            st.subscriptions.subs.remove(&id);
        }
        "reauthorizationRequired" => {
            if let Some(x) = st.subscriptions.subs.get_mut(&id) {
                x.needs_reauthorization = true;
            }
        }
        _ => {}
    }
    if let Some(url) = sub.lifecycle_url.as_deref() {
        let item = lifecycle_item(&sub, &event);
        st.subscriptions.queue(url, item, true, Duration::ZERO);
        st.wake.notify_one();
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn control_expire(State(s): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    match s.lock().subscriptions.subs.remove(&id) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn control_options(State(s): State<Arc<Shared>>) -> Response {
    Json(s.lock().subscriptions.options.clone()).into_response()
}

async fn control_set_options(
    State(s): State<Arc<Shared>>,
    Json(o): Json<DeliveryOptions>,
) -> Response {
    s.lock().subscriptions.options = o;
    StatusCode::NO_CONTENT.into_response()
}

async fn control_deliveries(State(s): State<Arc<Shared>>) -> Response {
    Json(s.lock().subscriptions.log.clone()).into_response()
}
