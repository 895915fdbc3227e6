//! Push: Graph change notifications. `StartWatch` creates a subscription on
//! one calendar's events whose notifications (and lifecycle events) go to
//! the webhook this adapter serves; the webhook answers Graph's validation
//! handshake and forwards each notification to the scheduler replica that
//! owns the channel, through `AdapterCallback.NotifyProviderChange`.
//!
//! The adapter stores nothing. The scheduler's callback endpoint rides in
//! the notification URL's query (`?e=...`, not secret, checked against the
//! allow-list), and the channel id with the scheduler's secret channel
//! token in the subscription's `clientState` (`c=...&t=...`, at most 128
//! characters), which Graph echoes in every notification. A notification
//! whose `clientState` is not one of ours is dropped and counted; the
//! scheduler checks the token itself, and a wrong one is dropped and
//! counted too. The webhook answers within Graph's 3 seconds: 202 when
//! every notification was taken or dropped, 503 when a scheduler could not
//! be reached (Graph retries; duplicates are harmless).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, RawQuery, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use reqwest::Url;
use serde::Deserialize;
use tokio::task::JoinSet;

use calbridge::pb::ProviderNotification;
use calbridge::Invalid;
use calbridge_runtime::metrics;
use calbridge_runtime::webhook::{Forwarded, Notifier};

use crate::client::PROVIDER;

/// Graph's limit on `clientState`.
pub const MAX_CLIENT_STATE: usize = 128;
/// The longest subscription Graph grants on Outlook events (4,230 minutes;
/// a little less is asked for so clocks may differ).
pub const MAX_SUBSCRIPTION: Duration = Duration::from_secs(4_200 * 60);
/// The shortest subscription asked for.
pub const MIN_SUBSCRIPTION: Duration = Duration::from_secs(5 * 60);
/// How long one forward to the scheduler may take: Graph wants an answer
/// within 3 seconds.
pub const FORWARD_TIMEOUT: Duration = Duration::from_millis(2_000);
/// The largest notification body read.
pub const MAX_BODY: usize = 1 << 20;
/// The most notifications read from one delivery.
pub const MAX_ITEMS: usize = 1_000;
/// The longest validation token echoed.
pub const MAX_VALIDATION_TOKEN: usize = 4_096;
/// Notifications of one delivery forwarded to the scheduler at once.
pub const MAX_FORWARDS_AT_ONCE: usize = 16;

/// A channel's id and secret token, as `clientState` carries them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ChannelState {
    /// The scheduler's channel id.
    pub channel_id: String,
    /// The scheduler's channel token (secret).
    pub channel_token: String,
}

/// Encodes a channel as the subscription's `clientState`.
pub fn encode_client_state(c: &ChannelState) -> Result<String, Invalid> {
    let s = form_urlencoded::Serializer::new(String::new())
        .append_pair("c", &c.channel_id)
        .append_pair("t", &c.channel_token)
        .finish();
    if s.len() > MAX_CLIENT_STATE {
        return Err(Invalid::field(
            "channel_token",
            format!("with channel_id, must fit Graph's {MAX_CLIENT_STATE}-character clientState once URL-encoded"),
        ));
    }
    Ok(s)
}

/// Reads a `clientState` back; `None` when it is not one of ours.
pub fn decode_client_state(s: &str) -> Option<ChannelState> {
    if s.len() > MAX_CLIENT_STATE {
        return None;
    }
    let (mut id, mut token) = (None, None);
    for (k, v) in form_urlencoded::parse(s.as_bytes()) {
        match k.as_ref() {
            "c" if id.is_none() => id = Some(v.into_owned()),
            "t" if token.is_none() => token = Some(v.into_owned()),
            _ => return None,
        }
    }
    Some(ChannelState {
        channel_id: id.filter(|v| !v.is_empty())?,
        channel_token: token.filter(|v| !v.is_empty())?,
    })
}

/// The notification URL of subscriptions made for `callback_endpoint`:
/// the public webhook URL with the endpoint in its query.
pub fn notification_url(public: &Url, callback_endpoint: &str) -> Url {
    let mut u = public.clone();
    u.query_pairs_mut().append_pair("e", callback_endpoint);
    u
}

/// The subscription's end: `ttl_seconds` from `now` (Graph's maximum when
/// 0 or longer), never shorter than a few minutes.
pub fn expiration(
    now: chrono::DateTime<chrono::Utc>,
    ttl_seconds: u32,
) -> chrono::DateTime<chrono::Utc> {
    let ttl = match ttl_seconds {
        0 => MAX_SUBSCRIPTION,
        s => Duration::from_secs(u64::from(s)).clamp(MIN_SUBSCRIPTION, MAX_SUBSCRIPTION),
    };
    now + chrono::Duration::from_std(ttl).unwrap_or_else(|_| chrono::Duration::minutes(4_200))
}

/// One notification of a delivery, change or lifecycle event.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Item {
    #[serde(default)]
    client_state: Option<String>,
    #[serde(default)]
    change_type: Option<String>,
    #[serde(default)]
    lifecycle_event: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Delivery {
    value: Vec<Item>,
}

/// The resource states forwarded: Graph's change types and lifecycle
/// events (anything else is not forwarded).
const STATES: [&str; 6] = [
    "created",
    "updated",
    "deleted",
    "reauthorizationRequired",
    "subscriptionRemoved",
    "missed",
];

/// A delivery reduced to what the schedulers need: each channel and state
/// once (a batch may repeat a channel many times), and how many
/// notifications were not ours.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reduced {
    /// Distinct (channel, state) pairs, in a stable order.
    pub notifications: Vec<(ChannelState, &'static str)>,
    /// Notifications without a `clientState` of ours.
    pub forged: u64,
    /// Notifications of a kind not forwarded.
    pub ignored: u64,
}

/// Reads a delivery body; `Err` names what is wrong.
pub fn reduce(body: &[u8]) -> Result<Reduced, &'static str> {
    if body.len() > MAX_BODY {
        return Err("the body is too large");
    }
    let d: Delivery =
        serde_json::from_slice(body).map_err(|_| "the body is not a notification collection")?;
    if d.value.len() > MAX_ITEMS {
        return Err("too many notifications in one delivery");
    }
    let mut out = Reduced::default();
    let mut seen = BTreeSet::new();
    for item in d.value {
        let Some(channel) = item.client_state.as_deref().and_then(decode_client_state) else {
            out.forged += 1;
            continue;
        };
        let kind = item
            .lifecycle_event
            .as_deref()
            .or(item.change_type.as_deref());
        // A change notification may list several change types.
        let states: Vec<&'static str> = kind
            .unwrap_or_default()
            .split(',')
            .filter_map(|k| STATES.iter().copied().find(|s| *s == k.trim()))
            .collect();
        if states.is_empty() {
            out.ignored += 1;
            continue;
        }
        for s in states {
            if seen.insert((channel.clone(), s)) {
                out.notifications.push((channel.clone(), s));
            }
        }
    }
    Ok(out)
}

/// Counts of what the webhook saw, for logs and tests. Each notification
/// is also counted in the process's metrics
/// (`calbridge.webhook.notifications`) by outcome: `validation`,
/// `forwarded`, `forged` (a `clientState` not of ours, or a callback
/// endpoint not allowed, handshakes included), `refused` (the scheduler does not know the
/// channel or refused its token), `unreachable` (no scheduler answered;
/// Graph delivers again), `ignored` (a kind not forwarded) and
/// `malformed` (a request that is no handshake or delivery, counted once).
#[derive(Debug, Default)]
pub struct PushStats {
    deliveries: AtomicU64,
    forwarded: AtomicU64,
    forged: AtomicU64,
    validations: AtomicU64,
}

impl PushStats {
    /// Deliveries received (validation requests excluded).
    pub fn deliveries(&self) -> u64 {
        self.deliveries.load(Ordering::Relaxed)
    }
    /// Notifications a scheduler took.
    pub fn forwarded(&self) -> u64 {
        self.forwarded.load(Ordering::Relaxed)
    }
    /// Notifications dropped as forged: a `clientState` not of ours, a
    /// token the scheduler refused, or an endpoint not allowed.
    pub fn forged(&self) -> u64 {
        self.forged.load(Ordering::Relaxed)
    }
    /// Validation handshakes answered.
    pub fn validations(&self) -> u64 {
        self.validations.load(Ordering::Relaxed)
    }
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// Counts `n` notifications of one outcome in the process's metrics.
fn count(outcome: &'static str, n: u64) {
    for _ in 0..n {
        metrics::webhook_notification(PROVIDER, outcome);
    }
}

/// What the webhook's handler holds.
#[derive(Clone)]
pub struct Webhook {
    notifier: Notifier,
    stats: Arc<PushStats>,
}

impl Webhook {
    /// A webhook forwarding through `notifier`, counting into `stats`.
    pub fn new(notifier: Notifier, stats: Arc<PushStats>) -> Self {
        Webhook { notifier, stats }
    }
}

/// The query of a delivery: the callback endpoint and, for the handshake,
/// the validation token (decoded).
fn read_query(query: Option<&str>) -> (Option<String>, Option<String>) {
    let (mut endpoint, mut token) = (None, None);
    for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "e" if endpoint.is_none() => endpoint = Some(v.into_owned()),
            "validationToken" if token.is_none() => token = Some(v.into_owned()),
            _ => {}
        }
    }
    (endpoint, token)
}

/// Answers one webhook request.
async fn notification(
    State(hook): State<Webhook>,
    method: Method,
    RawQuery(query): RawQuery,
    _headers: HeaderMap,
    body: Bytes,
) -> Response {
    if method != Method::POST {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let (endpoint, validation) = read_query(query.as_deref());
    let allowed = endpoint.as_deref().is_some_and(|e| hook.notifier.allows(e));
    if let Some(token) = validation {
        // Graph's handshake: the token, decoded, as plain text. Only for
        // URLs this adapter hands out.
        if !allowed || token.is_empty() || token.len() > MAX_VALIDATION_TOKEN {
            count(if allowed { "malformed" } else { "forged" }, 1);
            return StatusCode::BAD_REQUEST.into_response();
        }
        PushStats::add(&hook.stats.validations, 1);
        count("validation", 1);
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            token,
        )
            .into_response();
    }
    PushStats::add(&hook.stats.deliveries, 1);
    let reduced = match reduce(&body) {
        Ok(r) => r,
        Err(problem) => {
            tracing::debug!(problem, "malformed Graph notification");
            count("malformed", 1);
            return StatusCode::BAD_REQUEST.into_response();
        }
    };
    count("ignored", reduced.ignored);
    if reduced.forged > 0 {
        PushStats::add(&hook.stats.forged, reduced.forged);
        count("forged", reduced.forged);
        tracing::warn!(
            count = reduced.forged,
            "Graph notifications with a clientState that is not ours dropped"
        );
    }
    let Some(endpoint) = endpoint.filter(|_| allowed) else {
        // Answered as accepted without any connection: the webhook reveals
        // nothing about other hosts.
        let n = reduced.notifications.len() as u64;
        PushStats::add(&hook.stats.forged, n);
        count("forged", n);
        if n > 0 {
            tracing::warn!(
                count = n,
                "Graph notifications for a callback endpoint that is not allowed dropped"
            );
        }
        return StatusCode::ACCEPTED.into_response();
    };
    let span = tracing::info_span!(
        "microsoft.push",
        notifications = reduced.notifications.len()
    );
    let outcome =
        tracing::Instrument::instrument(forward_all(&hook, &endpoint, reduced.notifications), span)
            .await;
    if outcome {
        StatusCode::ACCEPTED.into_response()
    } else {
        StatusCode::SERVICE_UNAVAILABLE.into_response()
    }
}

/// Forwards every notification at once; false when a scheduler could not
/// be reached (Graph should deliver again).
async fn forward_all(
    hook: &Webhook,
    endpoint: &str,
    items: Vec<(ChannelState, &'static str)>,
) -> bool {
    // A delivery may name up to MAX_ITEMS channels (forged ones too: the
    // scheduler tells); they go to the scheduler a few at a time, not all
    // at once.
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_FORWARDS_AT_ONCE));
    let mut tasks = JoinSet::new();
    for (channel, state) in items {
        let notifier = hook.notifier.clone();
        let endpoint = endpoint.to_string();
        let slots = slots.clone();
        tasks.spawn(async move {
            let Ok(_slot) = slots.acquire_owned().await else {
                return Forwarded::Unreachable;
            };
            let request = ProviderNotification {
                channel_id: channel.channel_id,
                channel_token: channel.channel_token,
                resource_state: state.to_string(),
                message_number: 0,
            };
            notifier.forward(&endpoint, request).await
        });
    }
    let mut ok = true;
    while let Some(done) = tasks.join_next().await {
        match done.unwrap_or(Forwarded::Unreachable) {
            Forwarded::Delivered => {
                PushStats::add(&hook.stats.forwarded, 1);
                count("forwarded", 1);
            }
            Forwarded::UnknownChannel | Forwarded::Refused => {
                PushStats::add(&hook.stats.forged, 1);
                count("refused", 1);
                tracing::debug!("the scheduler does not know the channel or its token; dropped");
            }
            Forwarded::Unreachable => {
                count("unreachable", 1);
                ok = false;
            }
        }
    }
    ok
}

/// The webhook's HTTP service: POST on any path is a delivery or a
/// validation handshake.
pub fn router(hook: Webhook) -> Router {
    Router::new()
        .fallback(notification)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(hook)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel() -> ChannelState {
        ChannelState {
            channel_id: "ch_0123456789abcdef01234567".into(),
            channel_token: "9f2c1d0e8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a".into(),
        }
    }

    #[test]
    fn client_states_round_trip_within_graphs_limit() {
        let s = encode_client_state(&channel()).unwrap();
        assert!(s.len() <= MAX_CLIENT_STATE);
        assert_eq!(decode_client_state(&s), Some(channel()));
        let long = ChannelState {
            channel_token: "t".repeat(120),
            ..channel()
        };
        assert_eq!(
            encode_client_state(&long).unwrap_err().0[0].field,
            "channel_token"
        );
        for bad in [
            "",
            "c=x",
            "t=y",
            "c=&t=y",
            "c=x&t=y&z=1",
            "c=x&c=y&t=z",
            "secret",
        ] {
            assert_eq!(decode_client_state(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_batch_is_reduced_to_each_channel_and_state_once() {
        let cs = encode_client_state(&channel()).unwrap();
        let other = encode_client_state(&ChannelState {
            channel_id: "ch_2".into(),
            ..channel()
        })
        .unwrap();
        let body = serde_json::json!({"value": [
            {"subscriptionId": "s1", "clientState": cs, "changeType": "updated", "resource": "Users/u/Events/e1"},
            {"subscriptionId": "s1", "clientState": cs, "changeType": "updated", "resource": "Users/u/Events/e2"},
            {"subscriptionId": "s2", "clientState": other, "changeType": "created"},
            {"subscriptionId": "s1", "clientState": cs, "lifecycleEvent": "missed"},
            {"subscriptionId": "sx", "clientState": "forged", "changeType": "deleted"},
            {"subscriptionId": "sy", "changeType": "deleted"},
            {"subscriptionId": "s1", "clientState": cs, "changeType": "unknownKind"},
        ]});
        let r = reduce(body.to_string().as_bytes()).unwrap();
        assert_eq!(r.forged, 2);
        assert_eq!(r.ignored, 1);
        let got: Vec<(&str, &str)> = r
            .notifications
            .iter()
            .map(|(c, s)| (c.channel_id.as_str(), *s))
            .collect();
        assert_eq!(
            got,
            [
                ("ch_0123456789abcdef01234567", "updated"),
                ("ch_2", "created"),
                ("ch_0123456789abcdef01234567", "missed"),
            ]
        );
        assert!(reduce(b"{}").is_err());
        assert!(reduce(b"not json").is_err());
        let many = serde_json::json!({"value": vec![serde_json::json!({}); MAX_ITEMS + 1]});
        assert!(reduce(many.to_string().as_bytes()).is_err());
    }

    #[test]
    fn subscriptions_end_within_graphs_maximum() {
        let now = chrono::Utc::now();
        assert_eq!(expiration(now, 0) - now, chrono::Duration::minutes(4_200));
        assert_eq!(
            expiration(now, 7 * 86_400) - now,
            chrono::Duration::minutes(4_200)
        );
        assert_eq!(expiration(now, 60) - now, chrono::Duration::minutes(5));
        assert_eq!(expiration(now, 3_600) - now, chrono::Duration::hours(1));
    }

    #[test]
    fn notification_urls_carry_the_endpoint_in_their_query() {
        let public = Url::parse("https://hooks.example/graph?k=1").unwrap();
        let u = notification_url(&public, "http://scheduler-0.scheduler:50051");
        assert_eq!(
            u.as_str(),
            "https://hooks.example/graph?k=1&e=http%3A%2F%2Fscheduler-0.scheduler%3A50051"
        );
        assert_eq!(
            read_query(u.query()),
            (Some("http://scheduler-0.scheduler:50051".into()), None)
        );
        assert_eq!(
            read_query(Some("e=x&validationToken=a%2Bb%20c")),
            (Some("x".into()), Some("a+b c".into()))
        );
    }

    /// Records what the scheduler would receive; a token "wrong" is
    /// refused as the scheduler refuses a forged one.
    #[derive(Clone, Default)]
    struct Recorder(Arc<std::sync::Mutex<Vec<ProviderNotification>>>);

    #[tonic::async_trait]
    impl calbridge::pb::adapter_callback_server::AdapterCallback for Recorder {
        async fn notify_provider_change(
            &self,
            request: tonic::Request<ProviderNotification>,
        ) -> Result<tonic::Response<calbridge::pb::ProviderNotificationAck>, tonic::Status>
        {
            let n = request.into_inner();
            if n.channel_token == "wrong" {
                return Err(tonic::Status::not_found("unknown push channel"));
            }
            self.0.lock().unwrap().push(n);
            Ok(tonic::Response::new(
                calbridge::pb::ProviderNotificationAck {},
            ))
        }
    }

    #[tokio::test]
    async fn the_webhook_answers_the_handshake_and_forwards_genuine_notifications_once() {
        // First: instruments bind to the global meter provider once.
        let metrics = calbridge_runtime::metrics::Metrics::install("test", None);
        let recorder = Recorder::default();
        let bound = calbridge_runtime::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let endpoint = format!("http://{}", bound.addr);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(
                    calbridge::pb::adapter_callback_server::AdapterCallbackServer::new(
                        recorder.clone(),
                    ),
                )
                .serve_with_incoming(bound.incoming),
        );
        let stats = Arc::new(PushStats::default());
        let hook = Webhook::new(
            Notifier::new(vec![endpoint.clone()], FORWARD_TIMEOUT),
            stats.clone(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let public =
            Url::parse(&format!("http://{}/graph", listener.local_addr().unwrap())).unwrap();
        tokio::spawn(calbridge_runtime::webhook::serve_webhook(
            listener,
            None,
            router(hook),
            std::future::pending(),
        ));
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let url = notification_url(&public, &endpoint);

        // The handshake: the token decoded, as plain text; refused for an
        // endpoint that is not allowed.
        let token = "Validation: Testing client application reachability Request-Id: 1+2";
        let mut v = url.clone();
        v.query_pairs_mut().append_pair("validationToken", token);
        let answer = http.post(v).send().await.unwrap();
        assert_eq!(answer.status(), 200);
        assert!(answer.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"));
        assert_eq!(answer.text().await.unwrap(), token);
        let mut elsewhere = notification_url(&public, "http://169.254.169.254:80");
        elsewhere
            .query_pairs_mut()
            .append_pair("validationToken", token);
        assert_eq!(http.post(elsewhere).send().await.unwrap().status(), 400);

        // A batch: one channel three times, a forged clientState, a token
        // the scheduler refuses, and a lifecycle event.
        let genuine = encode_client_state(&channel()).unwrap();
        let refused = encode_client_state(&ChannelState {
            channel_token: "wrong".into(),
            ..channel()
        })
        .unwrap();
        let batch = serde_json::json!({"value": [
            {"subscriptionId": "s1", "clientState": genuine, "changeType": "updated"},
            {"subscriptionId": "s1", "clientState": genuine, "changeType": "updated"},
            {"subscriptionId": "s1", "clientState": genuine, "changeType": "updated"},
            {"subscriptionId": "s9", "clientState": "c=ch_x&t=guess&z=1", "changeType": "created"},
            {"subscriptionId": "s1", "clientState": refused, "changeType": "deleted"},
            {"subscriptionId": "s1", "clientState": genuine, "lifecycleEvent": "subscriptionRemoved"},
        ]});
        let started = std::time::Instant::now();
        let answer = http.post(url.clone()).json(&batch).send().await.unwrap();
        let took = started.elapsed();
        assert_eq!(answer.status(), 202);
        assert!(took < Duration::from_secs(3), "acknowledged in {took:?}");
        let mut got: Vec<(String, String)> = recorder
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|n| (n.channel_id.clone(), n.resource_state.clone()))
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                (channel().channel_id, "subscriptionRemoved".to_string()),
                (channel().channel_id, "updated".to_string()),
            ]
        );
        assert!(recorder
            .0
            .lock()
            .unwrap()
            .iter()
            .all(|n| n.channel_token == channel().channel_token));
        assert_eq!(stats.forged(), 2);
        assert_eq!(stats.forwarded(), 2);
        assert_eq!(stats.validations(), 1);

        // A notification URL naming another endpoint goes nowhere.
        let foreign = notification_url(&public, "http://127.0.0.1:1");
        let answer = http.post(foreign).json(&batch).send().await.unwrap();
        assert_eq!(answer.status(), 202);
        assert_eq!(stats.forwarded(), 2);
        // Not a notification at all.
        let answer = http.post(url).body("<xml/>").send().await.unwrap();
        assert_eq!(answer.status(), 400);

        // Every notification counted by outcome: the handshake elsewhere
        // and everything of the foreign delivery (one forged clientState,
        // three distinct notifications) are forged too.
        let text = metrics.render();
        for (outcome, n) in [
            ("validation", 1),
            ("forwarded", 2),
            ("refused", 1),
            ("forged", 6),
            ("malformed", 1),
        ] {
            let line = text
                .lines()
                .find(|l| {
                    l.starts_with("calbridge_webhook_notifications_total{")
                        && l.contains("calbridge_provider=\"microsoft\"")
                        && l.contains(&format!("outcome=\"{outcome}\""))
                })
                .unwrap_or_else(|| panic!("no {outcome} count in:\n{text}"));
            assert!(line.ends_with(&format!(" {n}")), "{line}");
        }
        assert!(!text.contains("ch_0123"), "{text}");
    }

    /// Answers NOT_FOUND after a while, counting how many calls it holds
    /// at once.
    #[derive(Clone, Default)]
    struct Slow {
        now: Arc<AtomicU64>,
        most: Arc<AtomicU64>,
    }

    #[tonic::async_trait]
    impl calbridge::pb::adapter_callback_server::AdapterCallback for Slow {
        async fn notify_provider_change(
            &self,
            _request: tonic::Request<ProviderNotification>,
        ) -> Result<tonic::Response<calbridge::pb::ProviderNotificationAck>, tonic::Status>
        {
            let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(n, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            self.now.fetch_sub(1, Ordering::SeqCst);
            Err(tonic::Status::not_found("unknown push channel"))
        }
    }

    #[tokio::test]
    async fn a_delivery_naming_many_channels_reaches_the_scheduler_a_few_at_a_time() {
        let slow = Slow::default();
        let bound = calbridge_runtime::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let endpoint = format!("http://{}", bound.addr);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(
                    calbridge::pb::adapter_callback_server::AdapterCallbackServer::new(
                        slow.clone(),
                    ),
                )
                .serve_with_incoming(bound.incoming),
        );
        let stats = Arc::new(PushStats::default());
        let hook = Webhook::new(
            Notifier::new(vec![endpoint.clone()], FORWARD_TIMEOUT),
            stats.clone(),
        );
        // Well-formed clientStates with made-up tokens: only the scheduler
        // can tell them from genuine ones.
        let items = (0..100)
            .map(|i| {
                (
                    ChannelState {
                        channel_id: format!("ch_{i}"),
                        channel_token: "guess".into(),
                    },
                    "updated",
                )
            })
            .collect();
        assert!(forward_all(&hook, &endpoint, items).await);
        assert_eq!(stats.forged(), 100);
        let most = slow.most.load(Ordering::SeqCst);
        assert!(
            (2..=MAX_FORWARDS_AT_ONCE as u64).contains(&most),
            "{most} at once"
        );
    }
}
