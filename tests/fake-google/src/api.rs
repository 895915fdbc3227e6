//! The Calendar API under `/calendar/v3/`: routing by Google's paths, then
//! one pipeline for every call: count it, injected faults, access token
//! (401), scopes of the method per the discovery document (403), the caller's
//! role on the calendar, sliding-window quotas (403/429), parameter checks
//! against the discovery document (400), the method itself, and, when
//! configured, validation of the JSON answer against the method's response
//! schema.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State as AxumState;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::Duration;
use percent_encoding::percent_decode_str;
use rand::Rng;
use serde_json::{json, Value};

use crate::control::{Fault, ViolationRecord};
use crate::error::ApiError;
use crate::events::{self, render, View, WriteOptions};
use crate::listing::Query;
use crate::model::{Shared, State};
use crate::oauth::{authenticate, Caller, SCOPE_PREFIX};
use crate::{freebusy, listing, push};

/// Path prefix of the Calendar API.
pub(crate) const PREFIX: &str = "/calendar/v3/";

/// A routed Calendar API call.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    /// Discovery method id, e.g. `calendar.events.list`.
    pub method: &'static str,
    pub calendar: Option<String>,
    pub event: Option<String>,
}

/// Maps an HTTP method and the path after `/calendar/v3/` to a method.
pub(crate) fn route(method: &Method, rest: &str) -> Option<Route> {
    let segments: Vec<String> = rest
        .trim_end_matches('/')
        .split('/')
        .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
        .collect();
    let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
    let r = |m: &'static str, cal: Option<&str>, ev: Option<&str>| {
        Some(Route {
            method: m,
            calendar: cal.map(str::to_string),
            event: ev.map(str::to_string),
        })
    };
    match (method.as_str(), seg.as_slice()) {
        ("GET", ["users", "me", "calendarList"]) => r("calendar.calendarList.list", None, None),
        ("GET", ["calendars", c, "events"]) => r("calendar.events.list", Some(c), None),
        ("POST", ["calendars", c, "events"]) => r("calendar.events.insert", Some(c), None),
        ("POST", ["calendars", c, "events", "watch"]) => r("calendar.events.watch", Some(c), None),
        ("GET", ["calendars", c, "events", e, "instances"]) => {
            r("calendar.events.instances", Some(c), Some(e))
        }
        ("GET", ["calendars", c, "events", e]) => r("calendar.events.get", Some(c), Some(e)),
        ("PUT", ["calendars", c, "events", e]) => r("calendar.events.update", Some(c), Some(e)),
        ("PATCH", ["calendars", c, "events", e]) => r("calendar.events.patch", Some(c), Some(e)),
        ("DELETE", ["calendars", c, "events", e]) => r("calendar.events.delete", Some(c), Some(e)),
        ("POST", ["channels", "stop"]) => r("calendar.channels.stop", None, None),
        ("POST", ["freeBusy"]) => r("calendar.freebusy.query", None, None),
        _ => None,
    }
}

/// What a method answers.
pub(crate) enum Reply {
    Json(Value),
    NoContent,
    NotModified,
}

/// Takes one use of the first injected fault that matches `path`. Faults
/// without `path_contains` only hit Calendar API calls.
pub(crate) fn take_fault(state: &mut State, path: &str, oauth: bool) -> Option<Fault> {
    let i = state.faults.iter().position(|f| {
        f.count > 0
            && match &f.path_contains {
                Some(p) => path.contains(p.as_str()),
                None => !oauth,
            }
    })?;
    let fault = state.faults[i].clone();
    state.faults[i].count -= 1;
    if state.faults[i].count == 0 {
        state.faults.remove(i);
    }
    Some(fault)
}

fn fault_error(f: &Fault) -> ApiError {
    let domain = match f.reason.as_str() {
        "quotaExceeded" | "rateLimitExceeded" | "userRateLimitExceeded" | "dailyLimitExceeded" => {
            "usageLimits"
        }
        _ => "global",
    };
    let message = match f.reason.as_str() {
        "backendError" => "Backend Error",
        "quotaExceeded" => "Calendar usage limits exceeded.",
        "rateLimitExceeded" | "userRateLimitExceeded" => "Rate Limit Exceeded",
        other => other,
    };
    let status = StatusCode::from_u16(f.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let mut e = ApiError::new(status, domain, &f.reason, message);
    e.retry_after = f.retry_after_seconds;
    e
}

/// Sliding one-minute windows per user and per project.
fn check_quota(state: &mut State, user_key: &str) -> Result<(), ApiError> {
    let now = state.now();
    let horizon = now - Duration::minutes(1);
    while state.project_window.front().is_some_and(|t| *t <= horizon) {
        state.project_window.pop_front();
    }
    let (per_user, per_project) = (
        state.quota_per_user as usize,
        state.quota_per_project as usize,
    );
    let user_full = {
        let w = state.user_windows.entry(user_key.to_string()).or_default();
        while w.front().is_some_and(|t| *t <= horizon) {
            w.pop_front();
        }
        w.len() >= per_user
    };
    let project_full = state.project_window.len() >= per_project;
    if user_full || project_full {
        // Google answers either way; clients must treat them alike.
        let choice = state.rng.gen_range(0..if user_full { 3 } else { 2 });
        let (status, reason) = match (user_full, choice) {
            (true, 0) => (StatusCode::FORBIDDEN, "userRateLimitExceeded"),
            (_, 1) => (StatusCode::TOO_MANY_REQUESTS, "rateLimitExceeded"),
            _ => (StatusCode::FORBIDDEN, "rateLimitExceeded"),
        };
        return Err(ApiError::new(
            status,
            "usageLimits",
            reason,
            "Rate Limit Exceeded",
        ));
    }
    state.project_window.push_back(now);
    if let Some(w) = state.user_windows.get_mut(user_key) {
        w.push_back(now);
    }
    Ok(())
}

/// How the caller may see a calendar's events.
struct Access {
    role: String,
    free_busy_only: bool,
}

const WRITES: [&str; 4] = [
    "calendar.events.insert",
    "calendar.events.update",
    "calendar.events.patch",
    "calendar.events.delete",
];

fn role_rank(role: &str) -> u8 {
    match role {
        "freeBusyReader" => 1,
        "reader" => 2,
        "writer" => 3,
        "owner" => 4,
        _ => 0,
    }
}

/// The scopes that let the caller use `method` at all (403 when none).
fn matching_scopes(
    shared: &Shared,
    method: &str,
    caller: &Caller,
) -> Result<Vec<String>, ApiError> {
    let accepted = shared
        .discovery
        .method(method)
        .map(|m| m.scopes.clone())
        .unwrap_or_default();
    let matching: Vec<String> = accepted
        .into_iter()
        .filter(|s| caller.scopes.contains(s))
        .collect();
    if matching.is_empty() {
        return Err(ApiError::insufficient_permissions());
    }
    Ok(matching)
}

/// The caller's role on a calendar, checked against what the method needs
/// and what the matching scopes allow.
fn access(
    state: &State,
    caller: &Caller,
    calendar: &str,
    method: &str,
    scopes: &[String],
) -> Result<Access, ApiError> {
    let entry = state
        .entry(&caller.user, calendar)
        .ok_or_else(ApiError::not_found)?;
    let role = entry.access_role.clone();
    let short: Vec<&str> = scopes
        .iter()
        .map(|s| s.trim_start_matches(SCOPE_PREFIX))
        .collect();
    let owned_only = short.iter().all(|s| s.starts_with("calendar.events.owned"));
    let unusable_only = short.iter().all(|s| {
        matches!(
            *s,
            "calendar.app.created" | "calendar.events.public.readonly"
        )
    });
    if unusable_only || (owned_only && role != "owner") {
        // Those scopes only reach calendars the fake never has (app-created,
        // public) or, for `.owned`, calendars the user owns.
        return Err(ApiError::insufficient_permissions());
    }
    if WRITES.contains(&method) && role_rank(&role) < 3 {
        return Err(ApiError::forbidden(
            "requiredAccessLevel",
            "You need to have writer access to this calendar.",
        ));
    }
    let free_busy_only =
        role == "freeBusyReader" || short.iter().all(|s| *s == "calendar.events.freebusy");
    Ok(Access {
        role,
        free_busy_only,
    })
}

fn parse_body(body: &Bytes) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(body).map_err(|_| ApiError::parse_error())
}

/// Entry point for every request under `/calendar/v3/`.
pub(crate) async fn calendar_api(
    AxumState(shared): AxumState<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    dispatch(&shared, &method, &uri, &headers, &body)
}

/// Runs one Calendar API call through the whole pipeline (also each part
/// of a batch).
pub(crate) fn dispatch(
    shared: &Arc<Shared>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let path = uri.path().to_string();
    let query: Vec<(String, String)> = uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let mut state = shared.lock();
    let routed = route(method, path.strip_prefix(PREFIX).unwrap_or_default());
    let method_id = routed.as_ref().map_or("unknown", |r| r.method);
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    count(&mut state, method_id, authorization);
    let result = handle(
        shared,
        &mut state,
        routed,
        &path,
        &query,
        headers,
        body,
        authorization,
    );
    match result {
        Ok(Reply::Json(v)) => {
            if shared.config.validate_responses {
                if let Some(schema) = shared
                    .discovery
                    .method(method_id)
                    .and_then(|m| m.response.clone())
                {
                    let problems = shared.discovery.validate(&schema, &v);
                    if !problems.is_empty() {
                        tracing::warn!(
                            method = method_id,
                            count = problems.len(),
                            "response does not match the discovery document"
                        );
                        state.violations.push(ViolationRecord {
                            method: method_id.to_string(),
                            path: path.clone(),
                            schema,
                            problems,
                        });
                    }
                }
            }
            drop(state);
            (StatusCode::OK, axum::Json(v)).into_response()
        }
        Ok(Reply::NoContent) => StatusCode::NO_CONTENT.into_response(),
        Ok(Reply::NotModified) => StatusCode::NOT_MODIFIED.into_response(),
        Err(e) => e.into_response(),
    }
}

fn count(state: &mut State, method_id: &str, authorization: Option<&str>) {
    state.counters.total += 1;
    *state
        .counters
        .by_method
        .entry(method_id.to_string())
        .or_default() += 1;
    let user = authorization
        .and_then(|a| a.strip_prefix("Bearer "))
        .and_then(|t| state.access_tokens.get(t.trim()))
        .and_then(|a| state.grants.get(&a.grant))
        .map(|g| g.user.clone());
    if let Some(u) = user {
        *state.counters.by_user.entry(u).or_default() += 1;
    }
}

#[allow(clippy::too_many_arguments)]
fn handle(
    shared: &Arc<Shared>,
    state: &mut State,
    routed: Option<Route>,
    path: &str,
    query: &[(String, String)],
    headers: &HeaderMap,
    body: &Bytes,
    authorization: Option<&str>,
) -> Result<Reply, ApiError> {
    let Some(r) = routed else {
        return Err(ApiError::not_found());
    };
    // Faults match the request path or the method id.
    if let Some(f) = take_fault(state, &format!("{path} {}", r.method), false) {
        return Err(fault_error(&f));
    }
    let caller = authenticate(state, authorization)?;
    let scopes = matching_scopes(shared, r.method, &caller)?;
    let q = Query(query);
    let quota_key = q
        .get("quotaUser")
        .map_or_else(|| caller.user.clone(), str::to_string);
    check_quota(state, &quota_key)?;
    if let Err(e) = shared.discovery.check_query(r.method, query) {
        return Err(ApiError::bad_request("invalidParameter", &e.message).at_param(&e.name));
    }
    let config = &shared.config;
    if r.method == "calendar.calendarList.list" {
        return listing::calendar_list(state, config, &caller.user, query).map(Reply::Json);
    }
    if r.method == "calendar.channels.stop" {
        push::stop(state, &caller.user, &caller.client_id, &parse_body(body)?)?;
        return Ok(Reply::NoContent);
    }
    if r.method == "calendar.freebusy.query" {
        return freebusy::query(state, config, &caller.user, &parse_body(body)?).map(Reply::Json);
    }
    let cal_id = state.resolve_calendar_id(&caller.user, r.calendar.as_deref().unwrap_or_default());
    let acc = access(state, &caller, &cal_id, r.method, &scopes)?;
    let zone = state
        .calendars
        .get(&cal_id)
        .ok_or_else(ApiError::not_found)?
        .time_zone;
    let header_of = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let event_id = r.event.clone().unwrap_or_default();
    let opts = WriteOptions {
        user: Some(caller.user.clone()),
        supports_attachments: q.flag("supportsAttachments") == Some(true),
        conference_data: q.get("conferenceDataVersion") == Some("1"),
    };
    let served = |body: &serde_json::Map<String, Value>| {
        Reply::Json(render(
            body,
            zone,
            View {
                free_busy_only: acc.free_busy_only,
                ..View::default()
            },
        ))
    };
    match r.method {
        "calendar.events.list" => {
            listing::events_list(state, config, &cal_id, &acc.role, query, acc.free_busy_only)
                .map(Reply::Json)
        }
        "calendar.events.instances" => listing::events_instances(
            state,
            config,
            &cal_id,
            &event_id,
            &acc.role,
            query,
            acc.free_busy_only,
        )
        .map(Reply::Json),
        "calendar.events.get" => {
            let cal = state
                .calendars
                .get(&cal_id)
                .ok_or_else(ApiError::not_found)?;
            let current = events::current(cal, &event_id)?;
            let etag = current
                .get("etag")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if header_of(header::IF_NONE_MATCH).is_some_and(|v| v.trim() == etag) {
                return Ok(Reply::NotModified);
            }
            let view = View {
                zone: match q.get("timeZone") {
                    Some(z) => Some(z.parse().map_err(|_| {
                        ApiError::invalid("Invalid time zone definition.").at_param("timeZone")
                    })?),
                    None => None,
                },
                max_attendees: q.get("maxAttendees").and_then(|m| m.parse().ok()),
                free_busy_only: acc.free_busy_only,
            };
            Ok(Reply::Json(render(&current, zone, view)))
        }
        "calendar.events.insert" => {
            let stored = events::insert(state, &cal_id, parse_body(body)?, &opts)?;
            push::notify(state, &cal_id, "exists");
            Ok(served(&stored))
        }
        "calendar.events.patch" => {
            let stored = events::patch(
                state,
                &cal_id,
                &event_id,
                parse_body(body)?,
                header_of(header::IF_MATCH),
                &opts,
            )?;
            push::notify(state, &cal_id, "exists");
            Ok(served(&stored))
        }
        "calendar.events.update" => {
            let stored = events::update(
                state,
                &cal_id,
                &event_id,
                parse_body(body)?,
                header_of(header::IF_MATCH),
                &opts,
            )?;
            push::notify(state, &cal_id, "exists");
            Ok(served(&stored))
        }
        "calendar.events.delete" => {
            events::delete(state, &cal_id, &event_id, header_of(header::IF_MATCH))?;
            push::notify(state, &cal_id, "exists");
            Ok(Reply::NoContent)
        }
        "calendar.events.watch" => {
            // Same query parameters as events.list; they must make sense.
            if q.get("orderBy") == Some("startTime") && q.flag("singleEvents") != Some(true) {
                return Err(ApiError::bad_request(
                    "badRequest",
                    "The requested ordering is not available for the particular query.",
                ));
            }
            push::watch(
                shared,
                state,
                &caller.user,
                &caller.client_id,
                &cal_id,
                &parse_body(body)?,
            )
            .map(Reply::Json)
        }
        _ => Err(ApiError::not_found()),
    }
}

/// Answer for any other path.
pub(crate) async fn not_found() -> Response {
    ApiError::not_found().into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_follow_googles_paths_and_decode_calendar_ids() {
        let r = route(&Method::GET, "calendars/a%40b.com/events").unwrap();
        assert_eq!(r.method, "calendar.events.list");
        assert_eq!(r.calendar.as_deref(), Some("a@b.com"));
        let r = route(&Method::POST, "calendars/x%23y/events/watch").unwrap();
        assert_eq!(r.method, "calendar.events.watch");
        assert_eq!(r.calendar.as_deref(), Some("x#y"));
        let r = route(&Method::GET, "calendars/c/events/abc_20240101T100000Z").unwrap();
        assert_eq!(r.event.as_deref(), Some("abc_20240101T100000Z"));
        assert!(route(&Method::POST, "calendars/c/events/abc").is_none());
    }
}
