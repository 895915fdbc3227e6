//! The Calendar API v3 wire: one [`Session`] per gRPC call carries the
//! account's access token and sends every request through the same path —
//! the per-user request budget, W3C trace context, percent-encoded path
//! segments (calendar ids hold `@`, `#`, `.`), a single refresh and retry
//! on 401, and retries with backoff on rate limits and outages. Answers are
//! turned into meanings ([`GoogleError`]) here, once.
//!
//! Each request sent (every retry too) is a span and a duration sample
//! ([`ProviderRequest`]) under Google's method name (`call.name`) with its
//! status or error type; waits on the budget and between attempts, and
//! every `Retry-After` Google sent, are recorded as well
//! ([`calbridge_runtime::metrics`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use rand::Rng;
use reqwest::header::{HeaderMap, HeaderValue, IF_MATCH, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tracing::Instrument;

use calbridge::Invalid;
use calbridge_runtime::metrics::{self, ProviderRequest};
use calbridge_runtime::Secret;

use crate::error::GoogleError;
use crate::limiter::Limiter;
use crate::model::{self, ErrorBody};
use crate::oauth::OAuth;
use crate::retry::{
    classify, parse_retry_after, Decision, RetryPolicy, Retryable, QUOTA_EXCEEDED_DELAY,
};

/// The most items asked for in one calendar-list page (Google's cap).
const CALENDAR_LIST_PAGE: u32 = 250;

/// The provider's name in spans and metrics.
pub(crate) const PROVIDER: &str = "google";

pub(crate) use calbridge_runtime::metrics::error_type;

/// Builds the shared HTTP client: no automatic redirects (OAuth endpoints
/// must not be followed blindly), a per-request timeout.
pub fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!(
            "calbridge-adapter-google/",
            env!("CARGO_PKG_VERSION")
        ))
        .build()
        .expect("the HTTP client configuration is valid")
}

/// The shared API client: HTTP pool, base URL, retry policy, request
/// budget and the OAuth client for refreshes.
pub struct Api {
    http: reqwest::Client,
    base: Url,
    retry: RetryPolicy,
    limiter: Limiter,
    oauth: Arc<OAuth>,
}

impl Api {
    /// An API client below `base` (ending with `/`).
    pub fn new(
        http: reqwest::Client,
        base: Url,
        retry: RetryPolicy,
        limiter: Limiter,
        oauth: Arc<OAuth>,
    ) -> Self {
        Api {
            http,
            base,
            retry,
            limiter,
            oauth,
        }
    }

    /// A session for one call on behalf of `account` (its provider id;
    /// empty before it is known) with its access and refresh tokens.
    pub fn session(&self, account: &str, access_token: &str, refresh_token: &str) -> Session<'_> {
        Session {
            api: self,
            account: account.to_string(),
            access_token: Mutex::new(Secret::new(access_token)),
            refresh_token: Secret::new(refresh_token),
            refreshed: AtomicBool::new(false),
        }
    }

    /// The URL of `segments` below the base, each percent-encoded.
    pub fn url(&self, segments: &[&str]) -> Url {
        Url::parse(&calbridge::adapter::path_below(
            self.base.as_str(),
            segments,
        ))
        .expect("an encoded path below a valid base is valid")
    }
}

/// One request.
#[derive(Debug, Clone)]
pub struct Call<'a> {
    /// Google's method name, for logs (`calendar.events.list`).
    pub name: &'static str,
    /// The HTTP method.
    pub method: Method,
    /// Path segments below the base.
    pub path: Vec<&'a str>,
    /// Query parameters.
    pub query: Vec<(&'static str, String)>,
    /// A JSON body.
    pub body: Option<Value>,
    /// An `If-Match` etag.
    pub if_match: Option<&'a str>,
}

impl<'a> Call<'a> {
    /// A request without query, body or precondition.
    pub fn new(name: &'static str, method: Method, path: Vec<&'a str>) -> Self {
        Call {
            name,
            method,
            path,
            query: Vec::new(),
            body: None,
            if_match: None,
        }
    }
}

/// A successful answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The status (2xx).
    pub status: StatusCode,
    /// The body.
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as JSON of type `T`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, GoogleError> {
        serde_json::from_slice(&self.body)
            .map_err(|_| GoogleError::Protocol("a response body is not the expected JSON".into()))
    }
}

/// An API failure, before it is given a meaning by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The HTTP status.
    pub status: u16,
    /// `errors[0].reason`.
    pub reason: Option<String>,
    /// `errors[0].location`.
    pub location: Option<String>,
}

/// Why [`Session::send`] got no successful answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// A non-retryable API failure, for the caller to give a meaning (a
    /// 404 means different things to different calls).
    Api(Failure),
    /// An error already given its meaning (authentication, exhausted
    /// retries).
    Final(GoogleError),
}

/// Gives a non-retryable API failure its meaning. `what` names the object
/// for NOT_FOUND messages.
pub fn meaning(f: &Failure, what: &str) -> GoogleError {
    let reason = f.reason.as_deref().unwrap_or("");
    match f.status {
        400 => {
            let field = f.location.clone().unwrap_or_else(|| "request".into());
            GoogleError::Invalid(Invalid::field(
                field,
                format!("Google refused the request ({})", or_unknown(reason)),
            ))
        }
        401 => GoogleError::Unauthenticated(
            "Google rejected the access token and a refreshed one".into(),
        ),
        403 => GoogleError::Forbidden(format!(
            "Google refused the operation ({}): the calendar or event is not writable, or the grant lacks a scope",
            or_unknown(reason)
        )),
        404 => GoogleError::NotFound(what.to_string()),
        409 if reason == "duplicate" => GoogleError::Duplicate,
        409 => GoogleError::VersionConflict { current: None },
        410 if matches!(reason, "fullSyncRequired" | "updatedMinTooLongAgo") => {
            GoogleError::SyncTokenExpired
        }
        410 => GoogleError::NotFound(what.to_string()),
        412 => GoogleError::VersionConflict { current: None },
        s => GoogleError::Protocol(format!("Google answered {s} ({})", or_unknown(reason))),
    }
}

fn or_unknown(reason: &str) -> &str {
    if reason.is_empty() {
        "no reason given"
    } else {
        // Reasons are short identifiers; never let a long string through.
        &reason[..reason.len().min(48)]
    }
}

/// An RFC 3339 UTC timestamp as Google takes it.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// One gRPC call's view of the API: the account, its tokens (the access
/// token replaced at most once by a refresh) and the shared client.
pub struct Session<'a> {
    api: &'a Api,
    account: String,
    access_token: Mutex<Secret>,
    refresh_token: Secret,
    refreshed: AtomicBool,
}

impl Session<'_> {
    fn token(&self) -> String {
        self.access_token
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .expose()
            .to_string()
    }

    /// Sends `call`: refreshes once on 401, retries rate limits and
    /// outages within the policy, waits for the request budget.
    pub async fn send(&self, call: &Call<'_>) -> Result<Answer, SendError> {
        let span = tracing::debug_span!("google.call", operation = call.name);
        self.send_inner(call).instrument(span).await
    }

    async fn send_inner(&self, call: &Call<'_>) -> Result<Answer, SendError> {
        let url = self.api.url(&call.path);
        let mut attempt = 0u32;
        let mut waited = Duration::ZERO;
        loop {
            attempt += 1;
            // One span and one duration sample per request sent, retries
            // included (with their resend count), closed once its answer is
            // read, before any wait for the next attempt.
            let mut sent = ProviderRequest::start(PROVIDER, call.name, &call.method, &url);
            if attempt > 1 {
                sent.resend(attempt - 1);
            }
            let budget = self.api.limiter.acquire(&self.account).await;
            if !budget.is_zero() {
                metrics::throttle_wait(PROVIDER, "budget", budget);
            }
            let mut request = self
                .api
                .http
                .request(call.method.clone(), url.clone())
                .bearer_auth(self.token())
                .headers(trace_headers());
            if !call.query.is_empty() {
                request = request.query(&call.query);
            }
            if let Some(etag) = call.if_match {
                let v = HeaderValue::from_str(etag).map_err(|_| {
                    SendError::Final(GoogleError::Invalid(Invalid::field(
                        "expected_version",
                        "is not a valid etag",
                    )))
                })?;
                request = request.header(IF_MATCH, v);
            }
            if let Some(b) = &call.body {
                request = request.json(b);
            }
            sent.sending();
            let span = sent.span().clone();
            let (retryable, retry_after, failure) = match request.send().instrument(span).await {
                Ok(resp) => {
                    let status = resp.status();
                    sent.status(status.as_u16());
                    let retry_after = resp
                        .headers()
                        .get(RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| parse_retry_after(v, Utc::now()));
                    if let Some(d) = retry_after {
                        metrics::retry_after(PROVIDER, d);
                    }
                    let body = match read_capped(resp, MAX_BODY_BYTES).await {
                        Ok(b) => b,
                        Err(Capped::TooLarge) => {
                            sent.error("too_large");
                            return Err(SendError::Final(GoogleError::Protocol(format!(
                                "the answer is larger than {MAX_BODY_BYTES} bytes"
                            ))));
                        }
                        Err(Capped::CutOff) if status.is_success() => {
                            sent.error("body");
                            return Err(SendError::Final(GoogleError::Unavailable(
                                "the response body was cut off".into(),
                                None,
                            )));
                        }
                        Err(Capped::CutOff) => Vec::new(),
                    };
                    if status.is_success() {
                        return Ok(Answer { status, body });
                    }
                    let parsed = ErrorBody::parse(&body);
                    let failure = Failure {
                        status: status.as_u16(),
                        reason: parsed.reason().map(str::to_string),
                        location: parsed.first().and_then(|f| f.location.clone()),
                    };
                    if status == StatusCode::UNAUTHORIZED {
                        drop(sent);
                        self.refresh_once().await.map_err(SendError::Final)?;
                        // A retry with a fresh token is not a backoff attempt.
                        attempt -= 1;
                        continue;
                    }
                    match classify(failure.status, failure.reason.as_deref()) {
                        Some(r) => (r, retry_after, Some(failure)),
                        None => return Err(SendError::Api(failure)),
                    }
                }
                Err(e) => {
                    sent.error(error_type(&e));
                    tracing::debug!(timeout = e.is_timeout(), "request failed before an answer");
                    (Retryable::Outage, None, None)
                }
            };
            // The request is over; what follows is waiting.
            drop(sent);
            let jitter = rand::thread_rng().gen::<f64>();
            match self.api.retry.decide(attempt, waited, retry_after, jitter) {
                Decision::Wait(d) => {
                    tracing::debug!(attempt, wait_ms = d.as_millis() as u64, "retrying");
                    tokio::time::sleep(d).await;
                    metrics::throttle_wait(
                        PROVIDER,
                        if retry_after.is_some() {
                            "retry_after"
                        } else {
                            "backoff"
                        },
                        d,
                    );
                    waited += d;
                }
                Decision::GiveUp(d) => {
                    let reason = failure
                        .as_ref()
                        .and_then(|f| f.reason.clone())
                        .unwrap_or_default();
                    tracing::info!(method = call.name, attempts = attempt, reason = %reason, "giving up on google");
                    return Err(SendError::Final(match retryable {
                        Retryable::RateLimited => {
                            let d = if reason == "quotaExceeded" {
                                d.max(QUOTA_EXCEEDED_DELAY)
                            } else {
                                d
                            };
                            GoogleError::RateLimited(
                                if reason.is_empty() {
                                    "429".into()
                                } else {
                                    or_unknown(&reason).to_string()
                                },
                                Some(d),
                            )
                        }
                        Retryable::Outage => GoogleError::Unavailable(
                            match failure {
                                Some(f) => {
                                    format!("it answered {} after {attempt} attempts", f.status)
                                }
                                None => format!("no answer after {attempt} attempts"),
                            },
                            Some(d),
                        ),
                    }));
                }
            }
        }
    }

    /// Replaces the access token by a refreshed one, once per session;
    /// afterwards (or without a refresh token) a 401 is final.
    async fn refresh_once(&self) -> Result<(), GoogleError> {
        let rejected = || {
            GoogleError::Unauthenticated(
                "Google rejected the access token and it could not be refreshed".into(),
            )
        };
        if self.refreshed.swap(true, Ordering::SeqCst) {
            return Err(rejected());
        }
        if self.refresh_token.expose().is_empty() {
            return Err(rejected());
        }
        tracing::debug!("access token rejected; refreshing once");
        let tokens = self.api.oauth.refresh(self.refresh_token.expose()).await?;
        *self.access_token.lock().unwrap_or_else(|e| e.into_inner()) = tokens.access_token;
        Ok(())
    }

    /// Sends `call` and gives any failure its meaning (`what` names the
    /// object for NOT_FOUND).
    pub async fn request(&self, call: &Call<'_>, what: &str) -> Result<Answer, GoogleError> {
        match self.send(call).await {
            Ok(a) => Ok(a),
            Err(SendError::Api(f)) => Err(meaning(&f, what)),
            Err(SendError::Final(e)) => Err(e),
        }
    }

    /// One page of the calendar list.
    pub async fn calendar_list_page(
        &self,
        page_token: Option<&str>,
    ) -> Result<model::CalendarListPage, GoogleError> {
        let mut call = Call::new(
            "calendar.calendarList.list",
            Method::GET,
            vec!["users", "me", "calendarList"],
        );
        call.query
            .push(("maxResults", CALENDAR_LIST_PAGE.to_string()));
        call.query.push(("showHidden", "true".into()));
        if let Some(t) = page_token {
            call.query.push(("pageToken", t.to_string()));
        }
        self.request(&call, "the calendar list").await?.json()
    }

    /// Every entry of the calendar list, following `nextPageToken`.
    pub async fn calendar_list(&self) -> Result<Vec<model::CalendarListEntry>, GoogleError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        // A bound against a server that never stops paging.
        for _ in 0..100 {
            let page = self.calendar_list_page(token.as_deref()).await?;
            out.extend(page.items.unwrap_or_default());
            match page.next_page_token.filter(|t| !t.is_empty()) {
                Some(t) => token = Some(t),
                None => return Ok(out),
            }
        }
        Err(GoogleError::Protocol(
            "the calendar list does not end".into(),
        ))
    }

    /// The id of the primary calendar (the user's e-mail address).
    pub async fn primary_calendar_id(&self) -> Result<String, GoogleError> {
        let mut token: Option<String> = None;
        for _ in 0..100 {
            let page = self.calendar_list_page(token.as_deref()).await?;
            if let Some(id) = page
                .items
                .unwrap_or_default()
                .into_iter()
                .find(|c| c.primary == Some(true))
                .and_then(|c| c.id)
            {
                return Ok(id);
            }
            match page.next_page_token.filter(|t| !t.is_empty()) {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        Err(GoogleError::Protocol(
            "the calendar list names no primary calendar".into(),
        ))
    }

    /// One page of `events.list` (`showDeleted=true`, `singleEvents=false`).
    pub async fn events_page(
        &self,
        calendar_id: &str,
        q: &crate::sync::ListQuery,
    ) -> Result<model::EventsPage, GoogleError> {
        let mut call = Call::new(
            "calendar.events.list",
            Method::GET,
            vec!["calendars", calendar_id, "events"],
        );
        call.query.push(("maxResults", q.max_results.to_string()));
        call.query.push(("showDeleted", "true".into()));
        call.query.push(("singleEvents", "false".into()));
        if let Some(t) = &q.sync_token {
            call.query.push(("syncToken", t.clone()));
        } else {
            if let Some(t) = q.time_min {
                call.query.push(("timeMin", rfc3339(t)));
            }
            if let Some(t) = q.time_max {
                call.query.push(("timeMax", rfc3339(t)));
            }
        }
        if let Some(t) = &q.page_token {
            call.query.push(("pageToken", t.clone()));
        }
        self.request(&call, "the calendar").await?.json()
    }

    /// `events.get`.
    pub async fn get_event(
        &self,
        calendar_id: &str,
        event_id: &str,
    ) -> Result<model::Event, GoogleError> {
        let call = Call::new(
            "calendar.events.get",
            Method::GET,
            vec!["calendars", calendar_id, "events", event_id],
        );
        self.request(&call, "the event").await?.json()
    }

    /// `events.insert`; `Err(Duplicate)` when the id is taken.
    pub async fn insert_event(
        &self,
        calendar_id: &str,
        body: Value,
        send_updates: &str,
    ) -> Result<model::Event, GoogleError> {
        let mut call = Call::new(
            "calendar.events.insert",
            Method::POST,
            vec!["calendars", calendar_id, "events"],
        );
        call.query.push(("sendUpdates", send_updates.to_string()));
        call.body = Some(body);
        self.request(&call, "the calendar").await?.json()
    }

    /// `events.patch`, conditional on `if_match`.
    pub async fn patch_event(
        &self,
        calendar_id: &str,
        event_id: &str,
        body: Value,
        if_match: Option<&str>,
        send_updates: &str,
    ) -> Result<model::Event, GoogleError> {
        let mut call = Call::new(
            "calendar.events.patch",
            Method::PATCH,
            vec!["calendars", calendar_id, "events", event_id],
        );
        call.query.push(("sendUpdates", send_updates.to_string()));
        call.body = Some(body);
        call.if_match = if_match;
        self.request(&call, "the event").await?.json()
    }

    /// `events.delete`, conditional on `if_match`; a deleted (410) event is
    /// NOT_FOUND.
    pub async fn delete_event(
        &self,
        calendar_id: &str,
        event_id: &str,
        if_match: Option<&str>,
        send_updates: &str,
    ) -> Result<(), GoogleError> {
        let mut call = Call::new(
            "calendar.events.delete",
            Method::DELETE,
            vec!["calendars", calendar_id, "events", event_id],
        );
        call.query.push(("sendUpdates", send_updates.to_string()));
        call.if_match = if_match;
        self.request(&call, "the event").await.map(|_| ())
    }

    /// `events.watch`.
    pub async fn watch(
        &self,
        calendar_id: &str,
        channel_id: &str,
        address: &str,
        token: &str,
        ttl_seconds: u32,
    ) -> Result<model::Channel, GoogleError> {
        let mut body = json!({
            "id": channel_id,
            "type": "web_hook",
            "address": address,
            "token": token,
        });
        if ttl_seconds > 0 {
            body["params"] = json!({ "ttl": ttl_seconds.to_string() });
        }
        let mut call = Call::new(
            "calendar.events.watch",
            Method::POST,
            vec!["calendars", calendar_id, "events", "watch"],
        );
        call.body = Some(body);
        self.request(&call, "the calendar").await?.json()
    }

    /// `channels.stop`; a channel already gone is not an error.
    pub async fn stop_channel(
        &self,
        channel_id: &str,
        resource_id: &str,
    ) -> Result<(), GoogleError> {
        let mut call = Call::new(
            "calendar.channels.stop",
            Method::POST,
            vec!["channels", "stop"],
        );
        call.body = Some(json!({ "id": channel_id, "resourceId": resource_id }));
        match self.request(&call, "the channel").await {
            Ok(_) | Err(GoogleError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `freebusy.query` for at most 50 calendars over at most the provider's
    /// range.
    pub async fn free_busy(
        &self,
        calendar_ids: &[String],
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<model::FreeBusyResponse, GoogleError> {
        let items: Vec<Value> = calendar_ids.iter().map(|id| json!({ "id": id })).collect();
        let mut call = Call::new("calendar.freebusy.query", Method::POST, vec!["freeBusy"]);
        call.body = Some(json!({
            "timeMin": rfc3339(start),
            "timeMax": rfc3339(end),
            "timeZone": "UTC",
            "items": items,
        }));
        self.request(&call, "a calendar").await?.json()
    }
}

/// The current span's W3C trace context as HTTP headers, so one trace
/// follows a request out to Google.
fn trace_headers() -> HeaderMap {
    let mut md = tonic::metadata::MetadataMap::new();
    calbridge_runtime::inject_trace_context(&mut md);
    md.into_headers()
}

/// The largest answer body read from Google: a full page of 2,500 events
/// is a few MiB; anything far larger is not an answer to use.
pub const MAX_BODY_BYTES: usize = 32 << 20;

/// Why a body was not read whole.
enum Capped {
    /// Longer than the cap (told by `Content-Length` or found reading).
    TooLarge,
    /// The connection failed or timed out mid-body.
    CutOff,
}

/// Reads a body in chunks, refusing one longer than `max` bytes before it
/// is all in memory.
async fn read_capped(mut resp: reqwest::Response, max: usize) -> Result<Vec<u8>, Capped> {
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err(Capped::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|_| Capped::CutOff)? {
        if body.len() + chunk.len() > max {
            return Err(Capped::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(status: u16, reason: Option<&str>) -> Failure {
        Failure {
            status,
            reason: reason.map(str::to_string),
            location: None,
        }
    }

    #[test]
    fn failures_get_their_meaning() {
        assert!(matches!(
            meaning(&failure(400, Some("timeRangeEmpty")), "x"),
            GoogleError::Invalid(_)
        ));
        assert!(matches!(
            meaning(&failure(403, Some("insufficientPermissions")), "x"),
            GoogleError::Forbidden(_)
        ));
        assert!(matches!(
            meaning(&failure(403, Some("forbidden")), "x"),
            GoogleError::Forbidden(_)
        ));
        assert_eq!(
            meaning(&failure(404, Some("notFound")), "the event"),
            GoogleError::NotFound("the event".into())
        );
        assert_eq!(
            meaning(&failure(409, Some("duplicate")), "x"),
            GoogleError::Duplicate
        );
        assert_eq!(
            meaning(&failure(410, Some("fullSyncRequired")), "x"),
            GoogleError::SyncTokenExpired
        );
        assert_eq!(
            meaning(&failure(410, Some("deleted")), "the event"),
            GoogleError::NotFound("the event".into())
        );
        assert_eq!(
            meaning(&failure(412, Some("conditionNotMet")), "x"),
            GoogleError::VersionConflict { current: None }
        );
        assert!(matches!(
            meaning(&failure(401, Some("authError")), "x"),
            GoogleError::Unauthenticated(_)
        ));
    }

    #[test]
    fn a_bad_parameter_is_named_by_its_location() {
        let f = Failure {
            status: 400,
            reason: Some("invalid".into()),
            location: Some("timeMin".into()),
        };
        let GoogleError::Invalid(inv) = meaning(&f, "x") else {
            panic!()
        };
        assert_eq!(inv.0[0].field, "timeMin");
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        let oauth = Arc::new(OAuth::new(
            &crate::config::Validated {
                client: crate::config::ClientCredentials {
                    client_id: "c".into(),
                    client_secret: Secret::new("s"),
                },
                auth_url: "http://127.0.0.1:1/auth".parse().unwrap(),
                token_url: "http://127.0.0.1:1/token".parse().unwrap(),
                revoke_url: "http://127.0.0.1:1/revoke".parse().unwrap(),
                api_base_url: "http://127.0.0.1:1/calendar/v3/".parse().unwrap(),
                webhook_public_url: None,
            },
            reqwest::Client::new(),
        ));
        let api = Api::new(
            reqwest::Client::new(),
            "https://www.googleapis.com/calendar/v3/".parse().unwrap(),
            RetryPolicy::default(),
            Limiter::new(500),
            oauth,
        );
        assert_eq!(
            api.url(&["calendars", "en.usa#holiday@group.v.calendar.google.com", "events"])
                .as_str(),
            "https://www.googleapis.com/calendar/v3/calendars/en.usa%23holiday%40group.v.calendar.google.com/events"
        );
        assert_eq!(
            api.url(&["calendars", "a/b c", "events", "x_20260101T000000Z"])
                .as_str(),
            "https://www.googleapis.com/calendar/v3/calendars/a%2Fb%20c/events/x_20260101T000000Z"
        );
    }
}
