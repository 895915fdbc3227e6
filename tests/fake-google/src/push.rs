//! Push notifications: `events.watch` creates a channel, `channels.stop`
//! ends it, and every change to a watched calendar queues an `exists`
//! message. Each channel has a background worker that POSTs its messages
//! over HTTPS (no body, the `X-Goog-*` headers, `User-Agent: APIs-Google`),
//! so API writes never wait for a receiver. 500/502/503/504 and connection
//! failures are retried with exponential backoff off the main queue; other
//! non-success answers drop the message. The control API can make deliveries
//! drop, duplicate or swap.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use rand::Rng;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::control::{ChannelInfo, PushBehaviour};
use crate::error::ApiError;
use crate::model::{Shared, State};

/// A notification channel.
#[derive(Debug)]
pub(crate) struct Channel {
    pub id: String,
    pub resource_id: String,
    pub resource_uri: String,
    pub calendar_id: String,
    pub user: String,
    pub client_id: String,
    pub address: String,
    pub token: Option<String>,
    pub expiration: DateTime<Utc>,
    pub stopped: bool,
    pub last_number: u64,
    pub delivered: u64,
    /// Queue of the channel's worker; gone once the channel stopped or expired.
    sender: Option<mpsc::UnboundedSender<Message>>,
}

impl Channel {
    pub(crate) fn info(&self) -> ChannelInfo {
        ChannelInfo {
            id: self.id.clone(),
            resource_id: self.resource_id.clone(),
            resource_uri: self.resource_uri.clone(),
            calendar: self.calendar_id.clone(),
            address: self.address.clone(),
            expiration: self.expiration.timestamp_millis(),
            stopped: self.stopped,
            user: self.user.clone(),
            token: self.token.clone(),
            last_message_number: self.last_number,
            delivered: self.delivered,
        }
    }
}

/// One queued notification.
#[derive(Debug, Clone)]
struct Message {
    number: u64,
    state: &'static str,
    behaviour: PushBehaviour,
}

/// What a delivery needs to know about its channel.
#[derive(Debug, Clone)]
struct Target {
    channel_id: String,
    address: String,
    token: Option<String>,
    resource_id: String,
    resource_uri: String,
    expiration: DateTime<Utc>,
}

/// Handles `events.watch` on a calendar the caller may read.
pub(crate) fn watch(
    shared: &Arc<Shared>,
    state: &mut State,
    user: &str,
    client_id: &str,
    calendar_id: &str,
    body: &Value,
) -> Result<Value, ApiError> {
    let s = |k: &str| body.get(k).and_then(Value::as_str);
    let id = s("id")
        .filter(|i| !i.is_empty())
        .ok_or_else(|| ApiError::required("channel id"))?;
    if id.chars().count() > 64 {
        return Err(ApiError::invalid(
            "Channel id must be at most 64 characters.",
        ));
    }
    match s("type") {
        Some("web_hook" | "webhook") => {}
        Some(_) => return Err(ApiError::invalid("Unknown channel type.")),
        None => return Err(ApiError::required("channel type")),
    }
    let address = s("address").ok_or_else(|| ApiError::required("channel address"))?;
    let url =
        reqwest::Url::parse(address).map_err(|_| ApiError::invalid("Invalid channel address."))?;
    if url.scheme() != "https" {
        return Err(ApiError::bad_request(
            "push.webhookUrlNotHttps",
            &format!("WebHook callback must be HTTPS: {address}"),
        ));
    }
    let token = s("token").map(str::to_string);
    if token.as_ref().is_some_and(|t| t.chars().count() > 256) {
        return Err(ApiError::invalid(
            "Channel token must be at most 256 characters.",
        ));
    }
    if state.channels.contains_key(id) {
        return Err(ApiError::bad_request(
            "channelIdNotUnique",
            "Channel id not unique",
        ));
    }
    let now = state.now();
    let ttl = match body
        .get("params")
        .and_then(|p| p.get("ttl"))
        .and_then(Value::as_str)
    {
        Some(t) => t
            .parse::<i64>()
            .ok()
            .filter(|t| *t > 0)
            .ok_or_else(|| ApiError::invalid("Invalid value for: params.ttl"))?,
        None => shared.config.channel_default_ttl.as_secs() as i64,
    };
    let mut expiration = now + Duration::seconds(ttl);
    if let Some(raw) = s("expiration") {
        let ms: i64 = raw
            .parse()
            .map_err(|_| ApiError::invalid("Invalid value for: expiration"))?;
        let asked = DateTime::<Utc>::from_timestamp_millis(ms)
            .ok_or_else(|| ApiError::invalid("Invalid value for: expiration"))?;
        if asked <= now {
            return Err(ApiError::invalid("Channel expiration is in the past."));
        }
        expiration = expiration.min(asked);
    }
    let cal = state
        .calendars
        .get(calendar_id)
        .ok_or_else(ApiError::not_found)?;
    let resource_id = cal.resource_id.clone();
    let resource_uri = format!(
        "https://www.googleapis.com/calendar/v3/calendars/{}/events?alt=json",
        percent_encoding::utf8_percent_encode(calendar_id, percent_encoding::NON_ALPHANUMERIC)
    );
    let (tx, rx) = mpsc::unbounded_channel();
    let target = Target {
        channel_id: id.to_string(),
        address: address.to_string(),
        token: token.clone(),
        resource_id: resource_id.clone(),
        resource_uri: resource_uri.clone(),
        expiration,
    };
    tokio::spawn(worker(shared.clone(), target, rx));
    let behaviour = resolve(state);
    let _ = tx.send(Message {
        number: 1,
        state: "sync",
        behaviour,
    });
    state.channels.insert(
        id.to_string(),
        Channel {
            id: id.to_string(),
            resource_id: resource_id.clone(),
            resource_uri: resource_uri.clone(),
            calendar_id: calendar_id.to_string(),
            user: user.to_string(),
            client_id: client_id.to_string(),
            address: address.to_string(),
            token: token.clone(),
            expiration,
            stopped: false,
            last_number: 1,
            delivered: 0,
            sender: Some(tx),
        },
    );
    state.channel_order.push(id.to_string());
    let mut out = json!({
        "kind": "api#channel",
        "id": id,
        "resourceId": resource_id,
        "resourceUri": resource_uri,
        "expiration": expiration.timestamp_millis().to_string(),
    });
    if let Some(t) = token {
        out["token"] = json!(t);
    }
    Ok(out)
}

/// Handles `channels.stop`: only the user and OAuth client that created a
/// channel can stop it.
pub(crate) fn stop(
    state: &mut State,
    user: &str,
    client_id: &str,
    body: &Value,
) -> Result<(), ApiError> {
    let s = |k: &str| body.get(k).and_then(Value::as_str);
    let id = s("id").ok_or_else(|| ApiError::required("channel id"))?;
    let resource_id = s("resourceId").ok_or_else(|| ApiError::required("resource id"))?;
    let not_found = || {
        ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "global",
            "notFound",
            &format!("Channel '{id}' not found for project"),
        )
    };
    let channel = state.channels.get_mut(id).ok_or_else(not_found)?;
    if channel.resource_id != resource_id
        || channel.user != user
        || channel.client_id != client_id
        || channel.stopped
    {
        return Err(not_found());
    }
    channel.stopped = true;
    // Messages already queued still go out (Google's trickle after stop).
    channel.sender = None;
    Ok(())
}

/// The behaviour for one message: random drops and duplicates decided now.
fn resolve(state: &mut State) -> PushBehaviour {
    let mut b = state.push.clone();
    if b.drop_percent > 0 && state.rng.gen_range(0..100u8) < b.drop_percent {
        b.drop = true;
    }
    if b.duplicate_percent > 0 && state.rng.gen_range(0..100u8) < b.duplicate_percent {
        b.duplicate = true;
    }
    b
}

/// Queues a message with `state` (`exists`, `not_exists`) on every live
/// channel watching `calendar_id`.
pub(crate) fn notify(state: &mut State, calendar_id: &str, resource_state: &'static str) {
    let now = state.now();
    let mut draws = Vec::new();
    for _ in 0..state.channels.len() {
        let gap = state.rng.gen_range(2..=4u64);
        draws.push((gap, resolve(state)));
    }
    for (channel, (gap, behaviour)) in state.channels.values_mut().zip(draws) {
        if channel.calendar_id != calendar_id || channel.stopped {
            continue;
        }
        if channel.expiration <= now {
            channel.sender = None;
            continue;
        }
        let Some(sender) = &channel.sender else {
            continue;
        };
        channel.last_number += gap;
        let _ = sender.send(Message {
            number: channel.last_number,
            state: resource_state,
            behaviour,
        });
    }
}

/// Ends every channel on a calendar (after its `not_exists`).
pub(crate) fn close_calendar(state: &mut State, calendar_id: &str) {
    notify(state, calendar_id, "not_exists");
    for channel in state.channels.values_mut() {
        if channel.calendar_id == calendar_id {
            channel.sender = None;
        }
    }
}

/// Snapshot of every channel, oldest first.
pub(crate) fn channels(state: &State) -> Vec<ChannelInfo> {
    state
        .channel_order
        .iter()
        .filter_map(|id| state.channels.get(id))
        .map(Channel::info)
        .collect()
}

async fn worker(shared: Arc<Shared>, target: Target, mut rx: mpsc::UnboundedReceiver<Message>) {
    let mut shutdown = shared.shutdown.clone();
    let mut held: Option<Message> = None;
    loop {
        let next = if held.is_some() {
            tokio::select! {
                m = rx.recv() => m,
                _ = tokio::time::sleep(shared.config.push_reorder_hold) => None,
                _ = shutdown.changed() => return,
            }
        } else {
            tokio::select! {
                m = rx.recv() => m,
                _ = shutdown.changed() => return,
            }
        };
        match (next, held.take()) {
            (Some(m), None) if m.behaviour.reorder => held = Some(m),
            (Some(m), None) => send(&shared, &target, m).await,
            (Some(m), Some(h)) => {
                send(&shared, &target, m).await;
                send(&shared, &target, h).await;
            }
            (None, Some(h)) => send(&shared, &target, h).await,
            (None, None) => return,
        }
    }
}

/// Delivers one message (twice with `duplicate`, never with `drop`).
async fn send(shared: &Arc<Shared>, target: &Target, m: Message) {
    if m.behaviour.drop {
        return;
    }
    let copies = if m.behaviour.duplicate { 2 } else { 1 };
    for _ in 0..copies {
        if !attempt(shared, target, &m).await {
            let (shared, target, m) = (shared.clone(), target.clone(), m.clone());
            tokio::spawn(async move { retry(shared, target, m).await });
        }
    }
}

/// Retries a delivery with exponential backoff after a retryable failure.
async fn retry(shared: Arc<Shared>, target: Target, m: Message) {
    let base = shared.config.push_retry_base;
    for n in 1..shared.config.push_max_attempts {
        let delay = base.saturating_mul(1u32 << (n - 1).min(16));
        tokio::time::sleep(delay).await;
        if *shared.shutdown.borrow() {
            return;
        }
        if attempt(&shared, &target, &m).await {
            return;
        }
    }
    tracing::debug!(channel = %target.channel_id, number = m.number, "push message given up");
}

/// One POST. `true` when done (delivered or dropped for good), `false`
/// when it should be retried.
async fn attempt(shared: &Arc<Shared>, target: &Target, m: &Message) -> bool {
    if shared.lock().now() >= target.expiration {
        return true;
    }
    let expiration = target
        .expiration
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    let mut request = shared
        .webhook
        .post(&target.address)
        .header("X-Goog-Channel-ID", &target.channel_id)
        .header("X-Goog-Message-Number", m.number.to_string())
        .header("X-Goog-Resource-ID", &target.resource_id)
        .header("X-Goog-Resource-State", m.state)
        .header("X-Goog-Resource-URI", &target.resource_uri)
        .header("X-Goog-Channel-Expiration", expiration)
        .header(reqwest::header::USER_AGENT, "APIs-Google")
        .header(reqwest::header::CONTENT_LENGTH, "0")
        .timeout(shared.config.push_timeout);
    if let Some(t) = &target.token {
        request = request.header("X-Goog-Channel-Token", t);
    }
    match request.send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            if matches!(status, 200 | 201 | 202 | 204 | 102) {
                if let Some(c) = shared.lock().channels.get_mut(&target.channel_id) {
                    c.delivered += 1;
                }
                true
            } else if matches!(status, 500 | 502 | 503 | 504) {
                false
            } else {
                tracing::debug!(channel = %target.channel_id, status, "push message refused; dropped");
                true
            }
        }
        Err(e) => {
            tracing::debug!(channel = %target.channel_id, error = %e, "push delivery failed");
            false
        }
    }
}
