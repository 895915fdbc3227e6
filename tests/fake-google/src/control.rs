//! The control API under `/fake/v1`: set up clients, users and calendars,
//! act as another client on events, and steer the fake (consent answers,
//! token invalidation, injected faults, push behaviour, clock, paging,
//! quotas); read back channels, request counters and discovery violations.
//! The wire types here are shared with the Rust client, [`crate::Control`].

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State as AxumState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post};
use axum::{Json, Router};
use chrono::{Duration, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::config::PagingQuirks;
use crate::discovery::Violation;
use crate::events::{self, WriteOptions};
use crate::model::{Calendar, ListEntry, Shared, User};
use crate::push;

/// `POST /fake/v1/clients`: registers an OAuth client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRegistration {
    /// The client id.
    pub client_id: String,
    /// The client secret (token requests must present it).
    pub client_secret: String,
    /// Redirect URIs; consent requests must use one of them exactly.
    pub redirect_uris: Vec<String>,
}

/// `POST /fake/v1/users`: adds a user with a primary calendar whose id is the e-mail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewUser {
    /// The user's e-mail address (also the primary calendar's id).
    pub email: String,
    /// IANA zone of the primary calendar (default `UTC`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
}

/// `POST /fake/v1/calendars`: adds a calendar to a user's list. An existing
/// calendar id is shared into the list with the given role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewCalendar {
    /// The user whose calendar list gets the entry.
    pub user: String,
    /// Calendar id (e-mail-like; may contain `@`, `#`, `.`).
    pub id: String,
    /// Title (default: the id).
    #[serde(default)]
    pub summary: Option<String>,
    /// IANA zone (default `UTC`).
    #[serde(default)]
    pub time_zone: Option<String>,
    /// `freeBusyReader`, `reader`, `writer` or `owner` (default `owner`).
    #[serde(default)]
    pub access_role: Option<String>,
}

/// `POST /fake/v1/consent`: how the next consent goes (one use).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentSpec {
    /// The user declines: redirect with `error=access_denied`.
    #[serde(default)]
    pub deny: bool,
    /// The user grants only these of the requested scopes (short or full
    /// form); `None` grants all requested scopes.
    #[serde(default)]
    pub granted_scopes: Option<Vec<String>>,
}

/// `POST /fake/v1/faults`: the next `count` matching calls fail so.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// HTTP status to answer, e.g. 503.
    pub status: u16,
    /// Google `reason`, e.g. `backendError`, `quotaExceeded`, `rateLimitExceeded`.
    pub reason: String,
    /// Adds a `Retry-After` header with this many seconds.
    #[serde(default)]
    pub retry_after_seconds: Option<u64>,
    /// How many calls fail (default 1).
    #[serde(default = "one")]
    pub count: u32,
    /// Only calls whose path or method id (`calendar.events.list`) contains
    /// this. Without it only Calendar API calls fail; with it `/token` and
    /// `/revoke` can be hit too.
    #[serde(default)]
    pub path_contains: Option<String>,
}

fn one() -> u32 {
    1
}

/// `POST /fake/v1/push`: delivery behaviour for messages queued from now on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushBehaviour {
    /// Drop every message (never delivered).
    #[serde(default)]
    pub drop: bool,
    /// Deliver every message twice.
    #[serde(default)]
    pub duplicate: bool,
    /// Hold each message until the next one overtakes it (or a short hold
    /// time passes), so consecutive messages arrive swapped.
    #[serde(default)]
    pub reorder: bool,
    /// Drop this percentage of messages at random (0-100), as Google does
    /// now and then.
    #[serde(default)]
    pub drop_percent: u8,
    /// Deliver this percentage of messages twice at random (0-100).
    #[serde(default)]
    pub duplicate_percent: u8,
}

/// One channel, as `GET /fake/v1/channels` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelInfo {
    /// Channel id chosen by the client.
    pub id: String,
    /// Opaque id of the watched collection.
    pub resource_id: String,
    /// Version-specific URI of the watched collection.
    pub resource_uri: String,
    /// The watched calendar.
    pub calendar: String,
    /// Webhook URL.
    pub address: String,
    /// Expiration, Unix milliseconds.
    pub expiration: i64,
    /// Stopped through `channels.stop`.
    pub stopped: bool,
    /// The user that created it.
    pub user: String,
    /// The channel token, if any.
    pub token: Option<String>,
    /// Number of the last message queued (1 is the `sync` message).
    pub last_message_number: u64,
    /// Deliveries the receiver acknowledged.
    pub delivered: u64,
}

/// `GET /fake/v1/requests`: API requests received.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCounts {
    /// Every Calendar API request, whatever its outcome.
    pub total: u64,
    /// Per discovery method id (`calendar.events.list`, ...; `unknown` for other paths).
    pub by_method: BTreeMap<String, u64>,
    /// Per user, for requests with a known access token.
    pub by_user: BTreeMap<String, u64>,
    /// OAuth endpoint calls: `authorize`, `token`, `revoke` (not in `total`).
    pub oauth: BTreeMap<String, u64>,
}

/// One response that did not match the discovery document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViolationRecord {
    /// Discovery method id.
    pub method: String,
    /// Request path.
    pub path: String,
    /// Schema the response was checked against.
    pub schema: String,
    /// What did not match.
    pub problems: Vec<Violation>,
}

/// `POST /fake/v1/clock`: moves the fake's clock forward.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockAdvance {
    /// Seconds to add.
    pub advance_seconds: i64,
}

/// `POST /fake/v1/quotas`: changes the sliding-window limits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaLimits {
    /// Requests per user per minute.
    #[serde(default)]
    pub per_user_per_minute: Option<u32>,
    /// Requests per project per minute.
    #[serde(default)]
    pub per_project_per_minute: Option<u32>,
}

type Shared_ = AxumState<Arc<Shared>>;

fn control_error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"error": message}))).into_response()
}

fn parse_zone(zone: Option<&str>) -> Result<Tz, String> {
    match zone {
        None => Ok(Tz::UTC),
        Some(z) => z.parse().map_err(|_| format!("unknown time zone {z}")),
    }
}

const ROLES: [&str; 4] = ["freeBusyReader", "reader", "writer", "owner"];

/// The control routes.
pub(crate) fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/fake/v1/clients", post(add_client))
        .route("/fake/v1/users", post(add_user))
        .route("/fake/v1/calendars", post(add_calendar))
        .route("/fake/v1/calendars/{cal}", delete(delete_calendar))
        .route("/fake/v1/consent", post(set_consent))
        .route(
            "/fake/v1/calendars/{cal}/events",
            post(insert_event).get(list_events),
        )
        .route(
            "/fake/v1/calendars/{cal}/events/{id}",
            patch(patch_event).delete(delete_event),
        )
        .route(
            "/fake/v1/calendars/{cal}/expire-sync-tokens",
            post(expire_sync_tokens),
        )
        .route("/fake/v1/calendars/{cal}/notify", post(notify))
        .route(
            "/fake/v1/users/{email}/invalidate-refresh-tokens",
            post(invalidate_refresh_tokens),
        )
        .route(
            "/fake/v1/users/{email}/expire-access-tokens",
            post(expire_access_tokens),
        )
        .route("/fake/v1/faults", post(add_fault).delete(clear_faults))
        .route("/fake/v1/push", post(set_push))
        .route("/fake/v1/channels", get(channels))
        .route("/fake/v1/requests", get(requests))
        .route("/fake/v1/violations", get(violations))
        .route("/fake/v1/reset-counters", post(reset_counters))
        .route("/fake/v1/clock", post(advance_clock))
        .route("/fake/v1/paging", post(set_paging))
        .route("/fake/v1/quotas", post(set_quotas))
}

async fn add_client(AxumState(shared): Shared_, Json(c): Json<ClientRegistration>) -> Response {
    shared.lock().clients.insert(
        c.client_id.clone(),
        crate::model::OAuthClient {
            secret: c.client_secret.clone(),
            redirect_uris: c.redirect_uris.clone(),
        },
    );
    Json(c).into_response()
}

fn new_calendar(state: &mut crate::model::State, id: &str, summary: &str, zone: Tz) -> Calendar {
    Calendar {
        id: id.to_string(),
        summary: summary.to_string(),
        time_zone: zone,
        events: Default::default(),
        seq: 0,
        token_epoch: 0,
        resource_id: state.random_token("", 27),
        updated: state.now(),
    }
}

fn add_entry(
    state: &mut crate::model::State,
    user: &str,
    calendar_id: &str,
    role: &str,
    primary: bool,
) {
    let etag = state.next_etag();
    let Some(u) = state.users.get_mut(user) else {
        return;
    };
    u.list_seq += 1;
    let seq = u.list_seq;
    match u.list.iter_mut().find(|e| e.calendar_id == calendar_id) {
        Some(e) => {
            e.access_role = role.to_string();
            e.deleted = false;
            e.seq = seq;
            e.etag = etag;
        }
        None => u.list.push(ListEntry {
            calendar_id: calendar_id.to_string(),
            access_role: role.to_string(),
            primary,
            hidden: false,
            deleted: false,
            seq,
            etag,
        }),
    }
}

async fn add_user(AxumState(shared): Shared_, Json(u): Json<NewUser>) -> Response {
    let zone = match parse_zone(u.time_zone.as_deref()) {
        Ok(z) => z,
        Err(m) => return control_error(StatusCode::BAD_REQUEST, &m),
    };
    let mut state = shared.lock();
    if !state.users.contains_key(&u.email) {
        state.users.insert(
            u.email.clone(),
            User {
                list: Vec::new(),
                list_seq: 0,
            },
        );
        state.user_order.push(u.email.clone());
    }
    if !state.calendars.contains_key(&u.email) {
        let cal = new_calendar(&mut state, &u.email, &u.email, zone);
        state.calendars.insert(u.email.clone(), cal);
    }
    add_entry(&mut state, &u.email, &u.email, "owner", true);
    Json(json!({"email": u.email, "primary_calendar": u.email})).into_response()
}

async fn add_calendar(AxumState(shared): Shared_, Json(c): Json<NewCalendar>) -> Response {
    let zone = match parse_zone(c.time_zone.as_deref()) {
        Ok(z) => z,
        Err(m) => return control_error(StatusCode::BAD_REQUEST, &m),
    };
    let role = c.access_role.clone().unwrap_or_else(|| "owner".into());
    if !ROLES.contains(&role.as_str()) {
        return control_error(
            StatusCode::BAD_REQUEST,
            &format!("unknown access role {role}"),
        );
    }
    let mut state = shared.lock();
    if !state.users.contains_key(&c.user) {
        return control_error(StatusCode::NOT_FOUND, &format!("no user {}", c.user));
    }
    if !state.calendars.contains_key(&c.id) {
        let summary = c.summary.clone().unwrap_or_else(|| c.id.clone());
        let cal = new_calendar(&mut state, &c.id, &summary, zone);
        state.calendars.insert(c.id.clone(), cal);
    }
    add_entry(&mut state, &c.user, &c.id, &role, false);
    Json(c).into_response()
}

async fn delete_calendar(AxumState(shared): Shared_, Path(cal): Path<String>) -> Response {
    let mut state = shared.lock();
    if !state.calendars.contains_key(&cal) {
        return control_error(StatusCode::NOT_FOUND, &format!("no calendar {cal}"));
    }
    push::close_calendar(&mut state, &cal);
    state.calendars.remove(&cal);
    let etag = state.next_etag();
    for u in state.users.values_mut() {
        if let Some(e) = u
            .list
            .iter_mut()
            .find(|e| e.calendar_id == cal && !e.deleted)
        {
            u.list_seq += 1;
            e.deleted = true;
            e.seq = u.list_seq;
            e.etag = etag.clone();
        }
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn set_consent(AxumState(shared): Shared_, Json(c): Json<ConsentSpec>) -> Response {
    shared.lock().next_consent = Some(c.clone());
    Json(c).into_response()
}

async fn insert_event(
    AxumState(shared): Shared_,
    Path(cal): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    let mut state = shared.lock();
    match events::insert(&mut state, &cal, body, &WriteOptions::default()) {
        Ok(stored) => {
            push::notify(&mut state, &cal, "exists");
            Json(Value::Object(stored)).into_response()
        }
        Err(e) => e.into_response(),
    }
}

async fn patch_event(
    AxumState(shared): Shared_,
    Path((cal, id)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> Response {
    let mut state = shared.lock();
    match events::patch(&mut state, &cal, &id, body, None, &WriteOptions::default()) {
        Ok(stored) => {
            push::notify(&mut state, &cal, "exists");
            Json(Value::Object(stored)).into_response()
        }
        Err(e) => e.into_response(),
    }
}

async fn delete_event(
    AxumState(shared): Shared_,
    Path((cal, id)): Path<(String, String)>,
) -> Response {
    let mut state = shared.lock();
    match events::delete(&mut state, &cal, &id, None) {
        Ok(()) => {
            push::notify(&mut state, &cal, "exists");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => e.into_response(),
    }
}

async fn list_events(AxumState(shared): Shared_, Path(cal): Path<String>) -> Response {
    let state = shared.lock();
    let Some(c) = state.calendars.get(&cal) else {
        return control_error(StatusCode::NOT_FOUND, &format!("no calendar {cal}"));
    };
    let mut all: Vec<_> = c.events.values().collect();
    all.sort_by_key(|e| e.insert_no);
    Json(
        all.into_iter()
            .map(|e| Value::Object(e.body.clone()))
            .collect::<Vec<_>>(),
    )
    .into_response()
}

async fn expire_sync_tokens(AxumState(shared): Shared_, Path(cal): Path<String>) -> Response {
    match shared.lock().calendars.get_mut(&cal) {
        Some(c) => {
            c.token_epoch += 1;
            StatusCode::NO_CONTENT.into_response()
        }
        None => control_error(StatusCode::NOT_FOUND, &format!("no calendar {cal}")),
    }
}

async fn notify(AxumState(shared): Shared_, Path(cal): Path<String>) -> Response {
    let mut state = shared.lock();
    if !state.calendars.contains_key(&cal) {
        return control_error(StatusCode::NOT_FOUND, &format!("no calendar {cal}"));
    }
    push::notify(&mut state, &cal, "exists");
    StatusCode::NO_CONTENT.into_response()
}

async fn invalidate_refresh_tokens(
    AxumState(shared): Shared_,
    Path(email): Path<String>,
) -> Response {
    let mut state = shared.lock();
    for g in state.grants.values_mut().filter(|g| g.user == email) {
        g.refresh_invalid = true;
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn expire_access_tokens(AxumState(shared): Shared_, Path(email): Path<String>) -> Response {
    let mut state = shared.lock();
    let past = state.now() - Duration::seconds(1);
    let grants: Vec<u64> = state
        .grants
        .iter()
        .filter(|(_, g)| g.user == email)
        .map(|(id, _)| *id)
        .collect();
    for t in state
        .access_tokens
        .values_mut()
        .filter(|t| grants.contains(&t.grant))
    {
        t.expires_at = t.expires_at.min(past);
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn add_fault(AxumState(shared): Shared_, Json(f): Json<Fault>) -> Response {
    if StatusCode::from_u16(f.status).is_err() || f.status < 400 {
        return control_error(
            StatusCode::BAD_REQUEST,
            "status must be an HTTP error status",
        );
    }
    shared.lock().faults.push(f.clone());
    Json(f).into_response()
}

async fn clear_faults(AxumState(shared): Shared_) -> Response {
    shared.lock().faults.clear();
    StatusCode::NO_CONTENT.into_response()
}

async fn set_push(AxumState(shared): Shared_, Json(p): Json<PushBehaviour>) -> Response {
    shared.lock().push = p.clone();
    Json(p).into_response()
}

async fn channels(AxumState(shared): Shared_) -> Response {
    Json(push::channels(&shared.lock())).into_response()
}

async fn requests(AxumState(shared): Shared_) -> Response {
    Json(shared.lock().counters.clone()).into_response()
}

async fn violations(AxumState(shared): Shared_) -> Response {
    Json(shared.lock().violations.clone()).into_response()
}

async fn reset_counters(AxumState(shared): Shared_) -> Response {
    shared.lock().counters = RequestCounts::default();
    StatusCode::NO_CONTENT.into_response()
}

async fn advance_clock(AxumState(shared): Shared_, Json(c): Json<ClockAdvance>) -> Response {
    let mut state = shared.lock();
    state.clock_offset += Duration::seconds(c.advance_seconds);
    let now = state.now();
    Json(json!({"now": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true), "offset_seconds": (now - Utc::now()).num_seconds()}))
        .into_response()
}

async fn set_paging(AxumState(shared): Shared_, Json(p): Json<PagingQuirks>) -> Response {
    shared.lock().paging = p;
    Json(p).into_response()
}

async fn set_quotas(AxumState(shared): Shared_, Json(q): Json<QuotaLimits>) -> Response {
    let mut state = shared.lock();
    if let Some(u) = q.per_user_per_minute {
        state.quota_per_user = u;
    }
    if let Some(p) = q.per_project_per_minute {
        state.quota_per_project = p;
    }
    Json(json!({"per_user_per_minute": state.quota_per_user, "per_project_per_minute": state.quota_per_project}))
        .into_response()
}
