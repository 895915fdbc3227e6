//! Graph's v1.0 routes under `/me`: the user, mailbox settings, calendars,
//! events (create, read, update, delete, list with the extended-property
//! filter) and `calendarView/delta` in its three spellings. Every request
//! needs a live bearer token with the right scope, and may meet an injected
//! fault; a request sent before a `Retry-After` has passed gets another 429.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use serde_json::{json, Map, Value};

use crate::events::{self, err, render, GraphErr, View};
use crate::state::{uuid_like, State as FakeState};
use crate::Shared;

type Q = Query<HashMap<String, String>>;

pub(crate) fn router(shared: Arc<Shared>) -> Router<Arc<Shared>> {
    Router::new()
        .route("/me", get(me))
        .route("/me/mailboxSettings", get(mailbox_settings))
        .route("/me/calendars", get(calendars))
        .route("/me/calendar", get(default_calendar))
        .route(
            "/me/calendar/getSchedule",
            post(crate::schedule::get_schedule),
        )
        .route(
            "/me/calendar/microsoft.graph.getSchedule",
            post(crate::schedule::get_schedule),
        )
        .route("/me/calendars/{cal}/calendarView/{function}", get(delta))
        .route("/me/calendarView/{function}", get(default_delta))
        .route("/me/calendars/{cal}/events", get(list_events).post(create))
        .route("/me/events", post(create_default))
        .route(
            "/me/events/{id}",
            get(get_event).patch(patch).delete(delete),
        )
        .route("/me/revokeSignInSessions", post(revoke_sessions))
        .merge(crate::subscriptions::router())
        .route("/$batch", post(crate::batch::batch))
        .layer(axum::middleware::from_fn_with_state(shared, validating))
}

/// The schema of a Graph answer, by route and status.
fn answer_schema(method: &Method, path: &str, status: u16) -> Option<&'static str> {
    if status >= 400 {
        return Some("microsoft.graph.ODataErrors.ODataError");
    }
    let p = path.trim_end_matches('/');
    if p.contains("/calendarView/") {
        return Some("microsoft.graph.eventCollectionResponse");
    }
    match (method.as_str(), p) {
        ("GET", "/me/calendars") => Some("microsoft.graph.calendarCollectionResponse"),
        ("GET", "/me/calendar") => Some("microsoft.graph.calendar"),
        ("GET", x) if x.starts_with("/me/calendars/") && x.ends_with("/events") => {
            Some("microsoft.graph.eventCollectionResponse")
        }
        ("POST", x) if x.ends_with("/events") => Some("microsoft.graph.event"),
        ("GET" | "PATCH", x) if x.starts_with("/me/events/") => Some("microsoft.graph.event"),
        ("GET", "/subscriptions") => Some("microsoft.graph.subscriptionCollectionResponse"),
        ("POST", "/subscriptions") => Some("microsoft.graph.subscription"),
        ("GET" | "PATCH", x) if x.starts_with("/subscriptions/") && x.matches('/').count() == 2 => {
            Some("microsoft.graph.subscription")
        }
        // An inline collection in the spec: crate::schedule checks each item.
        ("POST", x) if x.ends_with("getSchedule") => None,
        _ => None,
    }
}

/// Checks request bodies of event writes and every JSON answer against
/// Graph's schemas (see [`crate::schema`]).
async fn validating(
    State(s): State<Arc<Shared>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    // The mailbox's limits (a batch is not a request of its own: those
    // inside it are).
    let user = {
        let st = s.lock();
        st.access
            .get(crate::limits::bearer(req.headers()))
            .map(|a| a.user.clone())
    };
    let admitted = match user.filter(|_| path != "/$batch") {
        Some(u) => {
            let refused = s.lock().limits.admit(&u, Instant::now());
            match refused {
                Ok(()) => Some(u),
                Err(crate::limits::Refusal::Concurrency) => {
                    return throttled(1, "MailboxConcurrency", 429)
                }
                Err(crate::limits::Refusal::Budget(left)) => {
                    return throttled(left.as_secs().max(1), "ApplicationThrottled", 429)
                }
            }
        }
        None => None,
    };
    // Latency is spent while the request is in flight.
    let latency = s.lock().limits.latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let answer = validated(&s, method, path, req, next).await;
    if let Some(u) = admitted {
        s.lock().limits.done(&u);
    }
    answer
}

async fn validated(
    s: &Arc<Shared>,
    method: Method,
    path: String,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 4 << 20).await else {
        return graph_error(&err(
            413,
            "RequestEntityTooLarge",
            "The request body is too large.",
        ));
    };
    if matches!(method, Method::POST | Method::PATCH)
        && (path.ends_with("/events") || path.starts_with("/me/events/"))
    {
        if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
            s.check(
                &format!("request {method} {path}"),
                "microsoft.graph.event",
                &v,
            );
        }
    }
    let answer = next
        .run(axum::extract::Request::from_parts(
            parts,
            axum::body::Body::from(bytes),
        ))
        .await;
    let status = answer.status().as_u16();
    let Some(schema) = answer_schema(&method, &path, status) else {
        return answer;
    };
    let (parts, body) = answer.into_parts();
    let bytes = axum::body::to_bytes(body, 64 << 20)
        .await
        .unwrap_or_default();
    if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
        s.check(&format!("answer {status} to {method} {path}"), schema, &v);
    }
    Response::from_parts(parts, axum::body::Body::from(bytes))
}

/// A Graph error answer.
pub(crate) fn graph_error(e: &GraphErr) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        Json(
            json!({"error": {"code": e.code, "message": e.message, "innerError": {
                "date": Utc::now().format("%Y-%m-%dT%H:%M:%S").to_string(),
                "request-id": uuid_like(),
                "client-request-id": uuid_like(),
            }}}),
        ),
    )
        .into_response()
}

pub(crate) async fn not_found() -> Response {
    graph_error(&err(
        400,
        "BadRequest",
        "Resource not found for the segment.",
    ))
}

/// A Graph error answer, boxed (it is large).
fn boxed(e: GraphErr) -> Box<Response> {
    Box::new(graph_error(&e))
}

fn throttled(seconds: u64, code: &'static str, status: u16) -> Response {
    let mut r = graph_error(&err(
        status,
        code,
        "Application is over its MailboxConcurrency limit.",
    ));
    if let Ok(v) = seconds.to_string().parse() {
        r.headers_mut().insert("retry-after", v);
    }
    r
}

/// A Continuous Access Evaluation claims challenge: 401 with the claims
/// a new token must carry, base64 in `WWW-Authenticate`.
fn claims_challenge(nbf: &str) -> Response {
    use base64::Engine as _;
    let claims = json!({"access_token": {"nbf": {"essential": true, "value": nbf}}});
    let b64 = base64::engine::general_purpose::STANDARD.encode(claims.to_string());
    let mut r = graph_error(&err(
        401,
        "InvalidAuthenticationToken",
        "Continuous access evaluation resulted in challenge with result: InteractionRequired and code: TokenIssuedBeforeRevocationTimestamp",
    ));
    let value = format!(
        r#"Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000", error="insufficient_claims", claims="{b64}""#
    );
    if let Ok(v) = value.parse() {
        r.headers_mut().insert("www-authenticate", v);
    }
    r
}

/// The id of `user`'s default calendar (empty for an unknown user).
fn default_calendar_id(s: &Shared, user: &str) -> String {
    s.lock()
        .users
        .get(user)
        .and_then(|u| {
            u.calendars
                .iter()
                .find(|c| c.is_default)
                .map(|c| c.id.clone())
        })
        .unwrap_or_default()
}

/// Who is calling: the bearer token's user, after faults and throttling.
pub(crate) fn caller(
    shared: &Shared,
    headers: &HeaderMap,
    method: &Method,
    path: &str,
    write: bool,
) -> Result<String, Box<Response>> {
    let mut st = shared.lock();
    st.requests.push(format!("{method} {path}"));
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let Some(access) = st.access.get(bearer).cloned() else {
        return Err(boxed(err(
            401,
            "InvalidAuthenticationToken",
            "Access token is empty or invalid.",
        )));
    };
    if access.expires < Utc::now() {
        return Err(boxed(err(
            401,
            "InvalidAuthenticationToken",
            "Lifetime validation failed, the token is expired.",
        )));
    }
    let user = access.user.clone();
    let challenge = st.users.get(&user).and_then(|u| u.claims_nbf.clone());
    if let Some(nbf) = challenge.filter(|n| access.cae && access.nbf.as_ref() != Some(n)) {
        st.claims_challenges += 1;
        return Err(Box::new(claims_challenge(&nbf)));
    }
    let now = Instant::now();
    if let Some(u) = st.users.get(&user) {
        if let Some(nb) = u.not_before.filter(|nb| *nb > now) {
            st.early_retries += 1;
            let left = (nb - now).as_secs_f64().ceil() as u64;
            return Err(Box::new(throttled(
                left.max(1),
                "ApplicationThrottled",
                429,
            )));
        }
    }
    let fault = st.faults.iter().position(|f| {
        f.method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method.as_str()))
    });
    if let Some(i) = fault {
        let f = st.faults[i].clone();
        if f.count <= 1 {
            st.faults.remove(i);
        } else {
            st.faults[i].count -= 1;
        }
        if let (Some(secs), Some(u)) = (f.retry_after, st.users.get_mut(&user)) {
            u.not_before = Some(now + Duration::from_secs(secs));
        }
        let code = match f.status {
            429 => "ApplicationThrottled",
            503 => "serviceNotAvailable",
            504 => "UnknownError",
            507 => "ErrorQuotaExceeded",
            _ => "generalException",
        };
        let mut r = graph_error(&err(f.status, code, "An injected failure."));
        if let Some(secs) = f.retry_after {
            if let Ok(v) = secs.to_string().parse() {
                r.headers_mut().insert("retry-after", v);
            }
        }
        return Err(Box::new(r));
    }
    let has = |s: &str| access.scopes.iter().any(|x| x == s);
    let allowed = if write {
        has("Calendars.ReadWrite")
    } else {
        has("Calendars.Read")
            || has("Calendars.ReadWrite")
            || has("Calendars.ReadBasic")
            || has("User.Read")
    };
    if !allowed {
        return Err(boxed(err(
            403,
            "ErrorAccessDenied",
            "Access is denied. Check credentials and try again.",
        )));
    }
    Ok(user)
}

/// The view of `Prefer: outlook.timezone` and `$expand` of extended
/// properties.
pub(crate) fn view(headers: &HeaderMap, q: &HashMap<String, String>) -> View {
    let mut v = View::default();
    for p in headers
        .get_all("prefer")
        .iter()
        .filter_map(|h| h.to_str().ok())
    {
        for part in p.split(',') {
            if let Some(name) = part.trim().strip_prefix("outlook.timezone=") {
                let name = name.trim_matches('"');
                if let Some(tz) = events::zone(name) {
                    v.zone = tz;
                    v.zone_name = name.to_string();
                }
            }
        }
    }
    if let Some(x) = q.get("$expand") {
        // singleValueExtendedProperties($filter=id eq 'String {...} Name x')
        if let Some(rest) = x.strip_prefix("singleValueExtendedProperties($filter=id eq '") {
            if let Some(id) = rest.strip_suffix("')") {
                v.expand.push(id.to_string());
            }
        }
    }
    v
}

fn max_page(headers: &HeaderMap) -> Option<usize> {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|h| h.to_str().ok())
        .flat_map(|p| p.split(','))
        .find_map(|p| {
            p.trim()
                .strip_prefix("odata.maxpagesize=")?
                .trim()
                .parse()
                .ok()
        })
}

fn ok(status: StatusCode, v: Value) -> Response {
    (status, Json(v)).into_response()
}

async fn me(State(s): State<Arc<Shared>>, h: HeaderMap, m: Method) -> Response {
    let user = match caller(&s, &h, &m, "/me", false) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    let st = s.lock();
    let Some(u) = st.users.get(&user) else {
        return graph_error(&err(
            404,
            "ErrorInvalidUser",
            "The requested user is invalid.",
        ));
    };
    ok(
        StatusCode::OK,
        json!({"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users/$entity", "id": u.id, "displayName": u.email.split('@').next(), "mail": u.email, "userPrincipalName": u.email}),
    )
}

async fn mailbox_settings(State(s): State<Arc<Shared>>, h: HeaderMap, m: Method) -> Response {
    let user = match caller(&s, &h, &m, "/me/mailboxSettings", false) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    let st = s.lock();
    let tz = st
        .users
        .get(&user)
        .map(|u| u.time_zone.clone())
        .unwrap_or_default();
    ok(
        StatusCode::OK,
        json!({"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users('x')/mailboxSettings", "timeZone": tz, "dateFormat": "dd/MM/yyyy", "timeFormat": "HH:mm"}),
    )
}

fn calendar_json(u: &crate::state::User, c: &crate::state::Calendar) -> Value {
    json!({"id": c.id, "name": c.name, "color": c.color, "hexColor": c.hex_color, "isDefaultCalendar": c.is_default, "changeKey": "DxYSthXJXEWwAQSYQnXvIgAAIxGttg==", "canShare": c.can_edit, "canViewPrivateItems": true, "canEdit": c.can_edit, "isRemovable": !c.is_default, "isTallyingResponses": true, "allowedOnlineMeetingProviders": ["teamsForBusiness"], "defaultOnlineMeetingProvider": "teamsForBusiness", "owner": {"name": u.email.split('@').next(), "address": u.email}})
}

async fn calendars(State(s): State<Arc<Shared>>, h: HeaderMap, m: Method) -> Response {
    let user = match caller(&s, &h, &m, "/me/calendars", false) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    let st = s.lock();
    let Some(u) = st.users.get(&user) else {
        return graph_error(&err(
            404,
            "ErrorInvalidUser",
            "The requested user is invalid.",
        ));
    };
    let value: Vec<Value> = u.calendars.iter().map(|c| calendar_json(u, c)).collect();
    ok(
        StatusCode::OK,
        json!({"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users('x')/calendars", "value": value}),
    )
}

async fn default_calendar(State(s): State<Arc<Shared>>, h: HeaderMap, m: Method) -> Response {
    let user = match caller(&s, &h, &m, "/me/calendar", false) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    let st = s.lock();
    let Some(u) = st.users.get(&user) else {
        return graph_error(&err(
            404,
            "ErrorInvalidUser",
            "The requested user is invalid.",
        ));
    };
    match u.calendars.iter().find(|c| c.is_default) {
        Some(c) => ok(StatusCode::OK, calendar_json(u, c)),
        None => graph_error(&err(
            404,
            "ErrorItemNotFound",
            "The specified object was not found in the store.",
        )),
    }
}

fn is_delta(function: &str) -> bool {
    matches!(
        function,
        "delta" | "delta()" | "microsoft.graph.delta()" | "microsoft.graph.delta"
    )
}

fn delta_answer(
    s: &Shared,
    user: &str,
    cal: &str,
    h: &HeaderMap,
    q: &HashMap<String, String>,
) -> Response {
    let v = view(h, q);
    let mp = max_page(h);
    let mut st = s.lock();
    match crate::delta::page(&mut st, s, user, cal, q, mp, &v) {
        Ok(body) => {
            let mut r = ok(StatusCode::OK, body);
            let mut applied = Vec::new();
            if let Some(n) = mp {
                applied.push(format!("odata.maxpagesize={n}"));
            }
            if v.zone_name != "UTC" {
                applied.push(format!("outlook.timezone=\"{}\"", v.zone_name));
            }
            if let Ok(hv) = applied.join(", ").parse() {
                if !applied.is_empty() {
                    r.headers_mut().insert("preference-applied", hv);
                }
            }
            r
        }
        Err(e) => graph_error(&e),
    }
}

async fn delta(
    State(s): State<Arc<Shared>>,
    Path((cal, function)): Path<(String, String)>,
    h: HeaderMap,
    m: Method,
    Query(q): Q,
) -> Response {
    if !is_delta(&function) {
        return not_found().await;
    }
    let user = match caller(&s, &h, &m, "/me/calendars/{id}/calendarView/delta", false) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    delta_answer(&s, &user, &cal, &h, &q)
}

async fn default_delta(
    State(s): State<Arc<Shared>>,
    Path(function): Path<String>,
    h: HeaderMap,
    m: Method,
    Query(q): Q,
) -> Response {
    if !is_delta(&function) {
        return not_found().await;
    }
    let user = match caller(&s, &h, &m, "/me/calendarView/delta", false) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    let cal = default_calendar_id(&s, &user);
    delta_answer(&s, &user, &cal, &h, &q)
}

/// `$filter=singleValueExtendedProperties/Any(ep: ep/id eq 'ID' and ep/value eq 'VALUE')`.
fn property_filter(f: &str) -> Option<(String, String)> {
    let rest = f.strip_prefix("singleValueExtendedProperties/Any(ep: ep/id eq '")?;
    let (id, rest) = rest.split_once("' and ep/value eq '")?;
    let value = rest.strip_suffix("')")?;
    Some((id.to_string(), value.replace("''", "'")))
}

async fn list_events(
    State(s): State<Arc<Shared>>,
    Path(cal): Path<String>,
    h: HeaderMap,
    m: Method,
    Query(q): Q,
) -> Response {
    let user = match caller(&s, &h, &m, "/me/calendars/{id}/events", false) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    let filter = match q.get("$filter") {
        None => None,
        Some(f) => match property_filter(f) {
            Some(p) => Some(p),
            None => {
                return graph_error(&err(
                    400,
                    "ErrorInvalidUrlQueryFilter",
                    "The query filter contains one or more invalid nodes.",
                ))
            }
        },
    };
    let top: usize = q
        .get("$top")
        .and_then(|t| t.parse().ok())
        .unwrap_or(10)
        .clamp(1, 1000);
    let v = view(&h, &q);
    let st = s.lock();
    let Some(u) = st.users.get(&user) else {
        return graph_error(&err(
            404,
            "ErrorInvalidUser",
            "The requested user is invalid.",
        ));
    };
    if !u.calendars.iter().any(|c| c.id == cal) {
        return graph_error(&err(
            404,
            "ErrorItemNotFound",
            "The specified object was not found in the store.",
        ));
    }
    let value: Vec<Value> = u
        .events
        .values()
        .filter(|e| e.calendar == cal && !matches!(e.kind, crate::state::Kind::Exception { .. }))
        .filter(|e| match &filter {
            None => true,
            Some((id, value)) => e
                .fields
                .get("singleValueExtendedProperties")
                .and_then(Value::as_array)
                .is_some_and(|a| {
                    a.iter().any(|p| {
                        p["id"].as_str().is_some_and(|x| x.eq_ignore_ascii_case(id))
                            && p["value"].as_str() == Some(value)
                    })
                }),
        })
        .take(top)
        .map(|e| render(&events::as_item(e), &v))
        .collect();
    ok(
        StatusCode::OK,
        json!({"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users('x')/calendars('x')/events", "value": value}),
    )
}

fn body_map(body: &[u8]) -> Result<Map<String, Value>, GraphErr> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(err(
            400,
            "RequestBodyRead",
            "Unable to read JSON request payload.",
        )),
    }
}

fn created(s: &Shared, user: &str, cal: &str, h: &HeaderMap, body: &[u8]) -> Response {
    let map = match body_map(body) {
        Ok(m) => m,
        Err(e) => return graph_error(&e),
    };
    let v = view(h, &HashMap::new());
    let mut st = s.lock();
    match events::create(&mut st, user, cal, &map) {
        Ok((_, true)) if s.config.transaction_replay_conflict => graph_error(&err(
            409,
            "ErrorDuplicateTransactionId",
            "An item with this transactionId already exists.",
        )),
        Ok((id, _)) => match st.users.get(user).and_then(|u| events::get(u, &id)) {
            Some(item) => ok(StatusCode::CREATED, render(&item, &v)),
            None => graph_error(&err(500, "generalException", "lost")),
        },
        Err(e) => graph_error(&e),
    }
}

async fn create(
    State(s): State<Arc<Shared>>,
    Path(cal): Path<String>,
    h: HeaderMap,
    m: Method,
    body: axum::body::Bytes,
) -> Response {
    let user = match caller(&s, &h, &m, "/me/calendars/{id}/events", true) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    created(&s, &user, &cal, &h, &body)
}

async fn create_default(
    State(s): State<Arc<Shared>>,
    h: HeaderMap,
    m: Method,
    body: axum::body::Bytes,
) -> Response {
    let user = match caller(&s, &h, &m, "/me/events", true) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    let cal = default_calendar_id(&s, &user);
    created(&s, &user, &cal, &h, &body)
}

fn shown(st: &FakeState, user: &str, id: &str, v: &View, status: StatusCode) -> Response {
    match st.users.get(user).and_then(|u| events::get(u, id)) {
        Some(item) => ok(status, render(&item, v)),
        None => graph_error(&err(
            404,
            "ErrorItemNotFound",
            "The specified object was not found in the store.",
        )),
    }
}

async fn get_event(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    h: HeaderMap,
    m: Method,
    Query(q): Q,
) -> Response {
    let user = match caller(&s, &h, &m, "/me/events/{id}", false) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    let v = view(&h, &q);
    let st = s.lock();
    shown(&st, &user, &id, &v, StatusCode::OK)
}

fn if_match(h: &HeaderMap) -> Option<String> {
    h.get("if-match")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

async fn patch(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    h: HeaderMap,
    m: Method,
    body: axum::body::Bytes,
) -> Response {
    let user = match caller(&s, &h, &m, "/me/events/{id}", true) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    let map = match body_map(&body) {
        Ok(m) => m,
        Err(e) => return graph_error(&e),
    };
    let v = view(&h, &HashMap::new());
    let mut st = s.lock();
    match events::update(&mut st, &user, &id, &map, if_match(&h).as_deref()) {
        Ok(id) => shown(&st, &user, &id, &v, StatusCode::OK),
        Err(e) => graph_error(&e),
    }
}

async fn delete(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    h: HeaderMap,
    m: Method,
) -> Response {
    let user = match caller(&s, &h, &m, "/me/events/{id}", true) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    let mut st = s.lock();
    match events::delete(&mut st, &user, &id, if_match(&h).as_deref()) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => graph_error(&e),
    }
}

/// `POST /me/revokeSignInSessions`: every refresh token of the user dies
/// (AADSTS50173 on the next redemption).
async fn revoke_sessions(State(s): State<Arc<Shared>>, h: HeaderMap, m: Method) -> Response {
    let user = match caller(&s, &h, &m, "/me/revokeSignInSessions", false) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    let mut st = s.lock();
    for g in st.grants.values_mut().filter(|g| g.user == user) {
        g.dead = Some(50173);
    }
    ok(
        StatusCode::OK,
        json!({"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Edm.Boolean", "value": true}),
    )
}
