//! The Graph wire: one [`Session`] per gRPC call carries the account's
//! access token and sends every request the same way — the per-mailbox
//! request budget, at most N requests in flight per mailbox,
//! percent-encoded path segments (Outlook ids hold `/`, `+` and `=`),
//! `Prefer` headers (UTC times, text bodies, immutable ids, page size),
//! bounded bodies, one refresh and retry on 401, and retries on throttling
//! and outages that honour `Retry-After` exactly.
//! Links Graph hands back (next and delta links) are followed only below
//! the configured Graph base, so a forged cursor cannot send the token
//! elsewhere.
//!
//! Each request sent (every retry too) is a span and a duration sample
//! ([`ProviderRequest`]) under a fixed operation name ([`Call::operation`])
//! with its status or error type; waits on the budget and the mailbox's
//! slots and between attempts, and every `Retry-After` Graph sent, are
//! recorded as well ([`calbridge_runtime::metrics`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use reqwest::header::{HeaderValue, IF_MATCH, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::Semaphore;
use tracing::Instrument as _;

use calbridge::Invalid;
use calbridge_runtime::metrics::{self, ProviderRequest};
use calbridge_runtime::Secret;

use crate::error::{meaning, GraphError};
use crate::limiter::Limiter;
use crate::model::{self, ErrorBody};
use crate::oauth::OAuth;
use crate::retry::{classify, parse_retry_after, Decision, RetryPolicy, Retryable};

/// Largest response body read.
pub const MAX_BODY_BYTES: usize = 16 << 20;
/// The provider's name in spans and metrics.
pub(crate) const PROVIDER: &str = "microsoft";
/// Most calendar pages followed.
const MAX_CALENDAR_PAGES: usize = 20;

/// The shared HTTP client: no redirects, a per-request timeout.
pub fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!(
            "calbridge-adapter-microsoft/",
            env!("CARGO_PKG_VERSION")
        ))
        .build()
        .expect("the HTTP client configuration is valid")
}

/// Why a body was not read whole.
#[derive(Debug)]
pub enum Capped {
    /// Longer than the cap.
    TooLarge,
    /// The connection failed mid-body.
    CutOff,
}

/// Reads a body, refusing one longer than `max` bytes before it is all in
/// memory.
pub async fn read_capped(mut resp: reqwest::Response, max: usize) -> Result<Vec<u8>, Capped> {
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

pub(crate) use calbridge_runtime::metrics::error_type;

/// Why a retry waits: the provider's `Retry-After`, or backoff without one.
pub(crate) fn wait_reason(retry_after: Option<Duration>) -> &'static str {
    if retry_after.is_some() {
        "retry_after"
    } else {
        "backoff"
    }
}

/// W3C trace context of the current span, as request headers.
fn trace_headers() -> reqwest::header::HeaderMap {
    let mut md = tonic::metadata::MetadataMap::new();
    calbridge_runtime::inject_trace_context(&mut md);
    md.into_headers()
}

/// The shared Graph client.
pub struct Api {
    http: reqwest::Client,
    base: Url,
    retry: RetryPolicy,
    oauth: Arc<OAuth>,
    per_mailbox: usize,
    slots: Mutex<HashMap<String, Arc<Semaphore>>>,
    limiter: Limiter,
    batching: bool,
    /// Access tokens refreshed during a call, by a digest of the token they
    /// replace, until they expire: later calls that still carry the old one
    /// (the scheduler refreshes on its own schedule) use the new one rather
    /// than being refused and refreshing again.
    renewed: Mutex<HashMap<[u8; 32], Renewed>>,
}

/// A refreshed access token and until when to hand it out.
type Renewed = (Secret, chrono::DateTime<chrono::Utc>);

/// Refreshed access tokens kept at most.
const MAX_RENEWED: usize = 10_000;

fn digest(token: &str) -> [u8; 32] {
    use sha2::{Digest as _, Sha256};
    Sha256::digest(token.as_bytes()).into()
}

impl Api {
    /// A client below `base` (ending with `/`).
    pub fn new(
        http: reqwest::Client,
        base: Url,
        retry: RetryPolicy,
        oauth: Arc<OAuth>,
        per_mailbox: usize,
        limiter: Limiter,
    ) -> Self {
        Api {
            http,
            base,
            retry,
            oauth,
            per_mailbox: per_mailbox.max(1),
            slots: Mutex::new(HashMap::new()),
            limiter,
            batching: true,
            renewed: Mutex::new(HashMap::new()),
        }
    }

    /// This client with JSON batching (`$batch`) on or off.
    pub fn with_batching(mut self, on: bool) -> Self {
        self.batching = on;
        self
    }

    /// True when independent requests may go in one `$batch`.
    pub fn batching(&self) -> bool {
        self.batching
    }

    /// A session for one call on behalf of `account` (empty before it is
    /// known).
    pub fn session(&self, account: &str, access_token: &str, refresh_token: &str) -> Session<'_> {
        let current = self.renewed_token(access_token);
        Session {
            api: self,
            origin: digest(access_token),
            account: account.to_string(),
            access_token: Mutex::new(current.unwrap_or_else(|| Secret::new(access_token))),
            refresh_token: Secret::new(refresh_token),
            refreshed: AtomicBool::new(false),
        }
    }

    /// The token that replaced `access_token` in an earlier call, while it
    /// is valid.
    fn renewed_token(&self, access_token: &str) -> Option<Secret> {
        let renewed = self.renewed.lock().unwrap_or_else(|e| e.into_inner());
        renewed
            .get(&digest(access_token))
            .filter(|(_, until)| *until > chrono::Utc::now())
            .map(|(t, _)| Secret::new(t.expose()))
    }

    /// Remembers that `new` replaces the token digested as `old` until
    /// `until`.
    fn remember_renewal(&self, old: [u8; 32], new: &Secret, until: chrono::DateTime<chrono::Utc>) {
        let mut renewed = self.renewed.lock().unwrap_or_else(|e| e.into_inner());
        if renewed.len() >= MAX_RENEWED {
            let now = chrono::Utc::now();
            renewed.retain(|_, (_, u)| *u > now);
            if renewed.len() >= MAX_RENEWED {
                renewed.clear();
            }
        }
        renewed.insert(old, (Secret::new(new.expose()), until));
    }

    /// The URL of `segments` below the base, each percent-encoded.
    pub fn url(&self, segments: &[&str]) -> Url {
        Url::parse(&calbridge::adapter::path_below(
            self.base.as_str(),
            segments,
        ))
        .expect("an encoded path below a valid base is valid")
    }

    /// The Graph base (ending with `/`).
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// The retry policy.
    pub fn retry(&self) -> &RetryPolicy {
        &self.retry
    }

    /// `link` when it lies below the Graph base; `None` otherwise.
    pub fn checked_link(&self, link: &str) -> Option<Url> {
        let u = Url::parse(link).ok()?;
        let same_origin = u.scheme() == self.base.scheme()
            && u.host_str() == self.base.host_str()
            && u.port_or_known_default() == self.base.port_or_known_default();
        (same_origin && u.path().starts_with(self.base.path()) && u.username().is_empty())
            .then_some(u)
    }

    fn slot(&self, account: &str) -> Arc<Semaphore> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if slots.len() > 10_000 {
            slots.retain(|_, s| Arc::strong_count(s) > 1);
        }
        slots
            .entry(account.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_mailbox)))
            .clone()
    }
}

/// One request.
#[derive(Debug, Clone)]
pub struct Call {
    /// What the request does, as metrics name it: a fixed name such as
    /// `calendarView.delta` or `events.create`, never a path or an id.
    pub operation: &'static str,
    /// The HTTP method.
    pub method: Method,
    /// The URL.
    pub url: Url,
    /// A JSON body.
    pub body: Option<Value>,
    /// An `If-Match` value.
    pub if_match: Option<String>,
    /// `Prefer: odata.maxpagesize`.
    pub max_page_size: Option<u32>,
    /// How many Graph requests this one stands for against the mailbox's
    /// budget and concurrency (a `$batch` of N counts N).
    pub weight: u32,
}

impl Call {
    /// A request for `operation` (see [`Call::operation`]) without body,
    /// precondition or page size.
    pub fn new(operation: &'static str, method: Method, url: Url) -> Self {
        Call {
            operation,
            method,
            url,
            body: None,
            if_match: None,
            max_page_size: None,
            weight: 1,
        }
    }

    /// The `Prefer` header every Graph request carries: times in UTC,
    /// text bodies, immutable ids, and the page size when asked.
    pub fn prefer(&self) -> String {
        let mut prefer = String::from(
            "outlook.timezone=\"UTC\", outlook.body-content-type=\"text\", IdType=\"ImmutableId\"",
        );
        if let Some(n) = self.max_page_size {
            prefer.push_str(&format!(", odata.maxpagesize={n}"));
        }
        prefer
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
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, GraphError> {
        serde_json::from_slice(&self.body)
            .map_err(|_| GraphError::Protocol("a response body is not the expected JSON".into()))
    }
}

/// A non-retryable failure: status and Graph's error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The HTTP status.
    pub status: u16,
    /// `error.code`.
    pub code: String,
}

/// One gRPC call's view of Graph.
pub struct Session<'a> {
    api: &'a Api,
    /// A digest of the access token the call came with.
    origin: [u8; 32],
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

    /// The shared client.
    pub fn api(&self) -> &Api {
        self.api
    }

    /// Sends `call`; a non-retryable failure comes back as `Err(Ok(..))`
    /// for the caller to give a meaning, a final one as `Err(Err(..))`.
    pub async fn send(&self, call: &Call) -> Result<Answer, Result<Failure, GraphError>> {
        let mut attempt = 0u32;
        let mut waited = Duration::ZERO;
        loop {
            attempt += 1;
            // One span and one duration sample per request sent, retries
            // included, closed once its answer is read, before any wait for
            // the next attempt.
            let mut sent =
                ProviderRequest::start(PROVIDER, call.operation, &call.method, &call.url);
            if attempt > 1 {
                sent.resend(attempt - 1);
            }
            let mut budget = Duration::ZERO;
            for _ in 0..call.weight.max(1) {
                budget += self.api.limiter.acquire(&self.account).await;
            }
            let slot = self.api.slot(&self.account);
            let slots = call.weight.clamp(1, self.api.per_mailbox as u32);
            let permit = match slot.clone().try_acquire_many_owned(slots) {
                Ok(permit) => Ok(permit),
                Err(_) => {
                    // Every slot of the mailbox is taken: wait for one.
                    let queued = tokio::time::Instant::now();
                    let permit = slot.acquire_many_owned(slots).await;
                    budget += queued.elapsed();
                    permit
                }
            }
            .map_err(|_| {
                Err(GraphError::Unavailable(
                    "the adapter is shutting down".into(),
                    None,
                ))
            })?;
            if !budget.is_zero() {
                metrics::throttle_wait(PROVIDER, "budget", budget);
            }
            let prefer = call.prefer();
            let mut request = self
                .api
                .http
                .request(call.method.clone(), call.url.clone())
                .bearer_auth(self.token())
                .headers(trace_headers())
                .header("Prefer", prefer);
            if let Some(tag) = &call.if_match {
                let v = HeaderValue::from_str(tag).map_err(|_| {
                    Err(GraphError::Invalid(Invalid::field(
                        "expected_version",
                        "is not a valid version",
                    )))
                })?;
                request = request.header(IF_MATCH, v);
            }
            if let Some(b) = &call.body {
                request = request.json(b);
            }
            sent.sending();
            let span = sent.span().clone();
            let answer = request.send().instrument(span).await;
            let (kind, retry_after, status) = match answer {
                Ok(resp) => {
                    let status = resp.status();
                    sent.status(status.as_u16());
                    let resp_challenge = resp
                        .headers()
                        .get(reqwest::header::WWW_AUTHENTICATE)
                        .and_then(|v| v.to_str().ok())
                        .and_then(crate::oauth::claims_challenge);
                    let retry_after = resp
                        .headers()
                        .get(RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| parse_retry_after(v, chrono::Utc::now()));
                    if let Some(d) = retry_after {
                        metrics::retry_after(PROVIDER, d);
                    }
                    let body = match read_capped(resp, MAX_BODY_BYTES).await {
                        Ok(b) => b,
                        Err(Capped::TooLarge) => {
                            sent.error("too_large");
                            return Err(Err(GraphError::Protocol(format!(
                                "the answer is larger than {MAX_BODY_BYTES} bytes"
                            ))));
                        }
                        Err(Capped::CutOff) if status.is_success() => {
                            sent.error("body");
                            return Err(Err(GraphError::Unavailable(
                                "the response body was cut off".into(),
                                None,
                            )));
                        }
                        Err(Capped::CutOff) => Vec::new(),
                    };
                    drop(permit);
                    if status.is_success() {
                        return Ok(Answer { status, body });
                    }
                    if status == StatusCode::UNAUTHORIZED {
                        drop(sent);
                        // A claims challenge (Continuous Access Evaluation)
                        // is answered with a token that carries the claims.
                        let challenge = resp_challenge.as_deref();
                        self.refresh_once(challenge).await.map_err(Err)?;
                        attempt -= 1;
                        continue;
                    }
                    let code = ErrorBody::code(&body);
                    match classify(status.as_u16()) {
                        Some(k) => (k, retry_after, Some(status.as_u16())),
                        None => {
                            return Err(Ok(Failure {
                                status: status.as_u16(),
                                code,
                            }))
                        }
                    }
                }
                Err(e) => {
                    drop(permit);
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
                    metrics::throttle_wait(PROVIDER, wait_reason(retry_after), d);
                    waited += d;
                }
                Decision::GiveUp(d) => {
                    tracing::info!(attempts = attempt, status = ?status, "giving up on microsoft graph");
                    return Err(Err(match kind {
                        Retryable::Throttled => GraphError::Throttled("429".into(), Some(d)),
                        Retryable::Outage => GraphError::Unavailable(
                            match status {
                                Some(s) => format!("it answered {s} after {attempt} attempts"),
                                None => format!("no answer after {attempt} attempts"),
                            },
                            Some(d),
                        ),
                    }));
                }
            }
        }
    }

    async fn refresh_once(&self, challenge: Option<&str>) -> Result<(), GraphError> {
        let rejected = || {
            GraphError::Unauthenticated(
                "Microsoft rejected the access token and it could not be refreshed".into(),
            )
        };
        if self.refreshed.swap(true, Ordering::SeqCst) || self.refresh_token.expose().is_empty() {
            return Err(rejected());
        }
        tracing::debug!(
            claims_challenge = challenge.is_some(),
            "access token rejected; refreshing once"
        );
        let tokens = self
            .api
            .oauth
            .refresh_with(self.refresh_token.expose(), challenge)
            .await?;
        // Kept for the token the call came with, a minute short of the new
        // one's expiry so it is never handed out stale.
        let until = tokens.expires_at - chrono::Duration::seconds(60);
        self.api
            .remember_renewal(self.origin, &tokens.access_token, until);
        *self.access_token.lock().unwrap_or_else(|e| e.into_inner()) = tokens.access_token;
        Ok(())
    }

    /// Sends `call` and gives a failure its meaning (`what` names the
    /// object for NOT_FOUND).
    pub async fn request(&self, call: &Call, what: &str) -> Result<Answer, GraphError> {
        match self.send(call).await {
            Ok(a) => Ok(a),
            Err(Ok(f)) => Err(meaning(f.status, &f.code, what)),
            Err(Err(e)) => Err(e),
        }
    }

    /// `GET /me`: the account's sign-in name.
    pub async fn me(&self) -> Result<String, GraphError> {
        let u: model::User = self
            .request(
                &Call::new("me.get", Method::GET, self.api.url(&["me"])),
                "the user",
            )
            .await?
            .json()?;
        u.user_principal_name
            .or(u.mail)
            .or(u.id)
            .filter(|s| !s.is_empty() && s.len() <= calbridge::limits::MAX_EMAIL_BYTES)
            .ok_or_else(|| GraphError::Protocol("the user has no usable name".into()))
    }

    /// The mailbox's time zone name, when readable.
    pub async fn mailbox_time_zone(&self) -> Option<String> {
        let call = Call::new(
            "mailboxSettings.get",
            Method::GET,
            self.api.url(&["me", "mailboxSettings"]),
        );
        let s: model::MailboxSettings = self
            .request(&call, "mailbox settings")
            .await
            .ok()?
            .json()
            .ok()?;
        s.time_zone
    }

    /// Every calendar of the default calendar group (bounded).
    pub async fn calendars(&self) -> Result<Vec<model::Calendar>, GraphError> {
        let mut out = Vec::new();
        let mut url = self.api.url(&["me", "calendars"]);
        for _ in 0..MAX_CALENDAR_PAGES {
            let page: model::Collection<model::Calendar> = self
                .request(&Call::new("calendars.list", Method::GET, url), "calendars")
                .await?
                .json()?;
            out.extend(page.value);
            match page.next_link.as_deref().map(|l| self.api.checked_link(l)) {
                Some(Some(next)) => url = next,
                Some(None) => return Err(GraphError::Protocol("a next link leaves Graph".into())),
                None => return Ok(out),
            }
        }
        Ok(out)
    }

    /// One delta page.
    pub async fn delta_page(
        &self,
        url: Url,
        page_size: u32,
    ) -> Result<model::Collection<model::Event>, GraphError> {
        let call = Call {
            max_page_size: Some(page_size),
            ..Call::new("calendarView.delta", Method::GET, url)
        };
        self.request(&call, "the calendar").await?.json()
    }

    /// One event, occurrence or exception.
    pub async fn get_event(&self, id: &str) -> Result<model::Event, GraphError> {
        self.request(
            &Call::new(
                "events.get",
                Method::GET,
                self.api.url(&["me", "events", id]),
            ),
            "the event",
        )
        .await?
        .json()
    }

    /// The event of `calendar` whose extended property `property` holds
    /// `value`, if any.
    pub async fn find_by_property(
        &self,
        calendar: &str,
        property: &str,
        value: &str,
    ) -> Result<Option<model::Event>, GraphError> {
        let mut url = self.api.url(&["me", "calendars", calendar, "events"]);
        let escaped = value.replace('\'', "''");
        url.query_pairs_mut()
            .append_pair(
                "$filter",
                &format!("singleValueExtendedProperties/Any(ep: ep/id eq '{property}' and ep/value eq '{escaped}')"),
            )
            .append_pair("$top", "1");
        let page: model::Collection<model::Event> = self
            .request(&Call::new("events.find", Method::GET, url), "the calendar")
            .await?
            .json()?;
        Ok(page.value.into_iter().next())
    }

    /// Creates an event in `calendar`.
    pub async fn create_event(
        &self,
        calendar: &str,
        body: Value,
    ) -> Result<Answer, Result<Failure, GraphError>> {
        let call = Call {
            body: Some(body),
            ..Call::new(
                "events.create",
                Method::POST,
                self.api.url(&["me", "calendars", calendar, "events"]),
            )
        };
        self.send(&call).await
    }

    /// Updates an event, conditionally on `if_match`.
    pub async fn patch_event(
        &self,
        id: &str,
        body: Value,
        if_match: Option<&str>,
    ) -> Result<model::Event, GraphError> {
        let call = Call {
            body: Some(body),
            if_match: if_match.map(str::to_string),
            ..Call::new(
                "events.update",
                Method::PATCH,
                self.api.url(&["me", "events", id]),
            )
        };
        self.request(&call, "the event").await?.json()
    }

    /// Deletes an event, conditionally on `if_match`.
    pub async fn delete_event(&self, id: &str, if_match: Option<&str>) -> Result<(), GraphError> {
        let call = Call {
            if_match: if_match.map(str::to_string),
            ..Call::new(
                "events.delete",
                Method::DELETE,
                self.api.url(&["me", "events", id]),
            )
        };
        self.request(&call, "the event").await.map(drop)
    }

    /// Creates a change-notification subscription; Graph validates the
    /// webhook before it answers.
    pub async fn create_subscription(
        &self,
        body: Value,
    ) -> Result<model::Subscription, GraphError> {
        let call = Call {
            body: Some(body),
            ..Call::new(
                "subscriptions.create",
                Method::POST,
                self.api.url(&["subscriptions"]),
            )
        };
        self.request(&call, "the calendar").await?.json()
    }

    /// Deletes a subscription; one already gone (expired or removed) is
    /// not an error.
    pub async fn delete_subscription(&self, id: &str) -> Result<(), GraphError> {
        let call = Call::new(
            "subscriptions.delete",
            Method::DELETE,
            self.api.url(&["subscriptions", id]),
        );
        match self.request(&call, "the subscription").await {
            Ok(_) | Err(GraphError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The path of `segments` below the Graph base, without the base: the
    /// form Graph wants in a subscription's `resource`.
    pub fn resource_path(&self, segments: &[&str]) -> String {
        let full = self.api.url(segments);
        full.path()
            .strip_prefix(self.api.base.path())
            .unwrap_or(full.path())
            .to_string()
    }
}
