//! Push: Google delivers channel notifications to the adapter's webhook
//! (HTTPS, served here with rustls, or plain HTTP behind a TLS-terminating
//! proxy), and the adapter forwards each to the scheduler replica that owns
//! the channel, through `AdapterCallback.NotifyProviderChange`.
//!
//! The adapter stores nothing: the channel token it gives Google carries
//! the scheduler's callback endpoint and the scheduler's own channel token
//! (URL-encoded `e=...&t=...`, at most 256 characters), which Google echoes
//! in `X-Goog-Channel-Token`. The webhook answers at once: 200 when the
//! scheduler took the notification or does not know the channel (it lets it
//! lapse), 503 when the scheduler cannot be reached (Google retries), 400
//! for a request that is not a well-formed notification.

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::Router;

use calbridge::pb::ProviderNotification;
use calbridge::Invalid;
use calbridge_runtime::metrics;
use calbridge_runtime::webhook::{Forwarded, Notifier};

use crate::client::PROVIDER;

/// Google's limit on a channel token.
pub const MAX_CHANNEL_TOKEN: usize = 256;
/// Google's limit on a channel id.
pub const MAX_CHANNEL_ID: usize = 64;

/// The routing data a channel token carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The scheduler's AdapterCallback endpoint.
    pub callback_endpoint: String,
    /// The scheduler's channel token (secret).
    pub channel_token: String,
}

/// Encodes a route as the channel token given to Google.
pub fn encode_token(route: &Route) -> Result<String, Invalid> {
    let token = form_urlencoded::Serializer::new(String::new())
        .append_pair("e", &route.callback_endpoint)
        .append_pair("t", &route.channel_token)
        .finish();
    if token.len() > MAX_CHANNEL_TOKEN {
        return Err(Invalid::field(
            "callback_endpoint",
            format!(
                "with channel_token, must fit Google's {MAX_CHANNEL_TOKEN}-character channel token once URL-encoded"
            ),
        ));
    }
    Ok(token)
}

/// Reads a channel token back; `None` when it is not one of ours.
pub fn decode_token(token: &str) -> Option<Route> {
    if token.len() > MAX_CHANNEL_TOKEN {
        return None;
    }
    let (mut endpoint, mut secret) = (None, None);
    for (k, v) in form_urlencoded::parse(token.as_bytes()) {
        match k.as_ref() {
            "e" if endpoint.is_none() => endpoint = Some(v.into_owned()),
            "t" if secret.is_none() => secret = Some(v.into_owned()),
            _ => return None,
        }
    }
    Some(Route {
        callback_endpoint: endpoint.filter(|e| !e.is_empty())?,
        channel_token: secret.filter(|t| !t.is_empty())?,
    })
}

/// A notification as Google delivers it (headers only, no body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// `X-Goog-Channel-ID`.
    pub channel_id: String,
    /// Decoded `X-Goog-Channel-Token`.
    pub route: Route,
    /// `X-Goog-Resource-State` (`sync`, `exists`, `not_exists`).
    pub resource_state: String,
    /// `X-Goog-Message-Number`.
    pub message_number: u64,
}

/// What [`parse_delivery`] answers for a channel token this adapter did not
/// make (a forged notification, or one for another application).
pub const FOREIGN_TOKEN: &str = "X-Goog-Channel-Token is not one of this adapter's";

/// Reads a delivery from its headers; `Err` names what is wrong (without
/// quoting the token).
pub fn parse_delivery(headers: &HeaderMap) -> Result<Delivery, &'static str> {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let channel_id = get("x-goog-channel-id").ok_or("missing X-Goog-Channel-ID")?;
    if channel_id.len() > MAX_CHANNEL_ID {
        return Err("X-Goog-Channel-ID is too long");
    }
    let token = get("x-goog-channel-token").ok_or("missing X-Goog-Channel-Token")?;
    let route = decode_token(token).ok_or(FOREIGN_TOKEN)?;
    let resource_state = get("x-goog-resource-state").ok_or("missing X-Goog-Resource-State")?;
    let message_number = match get("x-goog-message-number") {
        Some(n) => n
            .parse()
            .map_err(|_| "X-Goog-Message-Number is not a number")?,
        None => 0,
    };
    Ok(Delivery {
        channel_id: channel_id.to_string(),
        route,
        resource_state: resource_state.to_string(),
        message_number,
    })
}

/// How long one forward to the scheduler may take.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

/// Forwards one delivery to the scheduler its token names.
pub async fn forward(notifier: &Notifier, d: Delivery) -> Forwarded {
    let request = ProviderNotification {
        channel_id: d.channel_id,
        channel_token: d.route.channel_token,
        resource_state: d.resource_state,
        message_number: d.message_number,
    };
    notifier.forward(&d.route.callback_endpoint, request).await
}

/// Answers one webhook request, counting the notification in the
/// process's metrics (`calbridge.webhook.notifications`) by outcome:
/// `forwarded`, `forged` (a channel token not of ours, or a callback
/// endpoint not allowed), `refused` (the scheduler does not know the
/// channel or refused its token), `unreachable` (no scheduler answered;
/// Google delivers again) or `malformed`.
async fn notification(
    State(notifier): State<Notifier>,
    method: Method,
    headers: HeaderMap,
) -> StatusCode {
    if method != Method::POST {
        return StatusCode::METHOD_NOT_ALLOWED;
    }
    let delivery = match parse_delivery(&headers) {
        Ok(d) => d,
        Err(problem) => {
            tracing::debug!(problem, "malformed push notification");
            metrics::webhook_notification(
                PROVIDER,
                if problem == FOREIGN_TOKEN {
                    "forged"
                } else {
                    "malformed"
                },
            );
            return StatusCode::BAD_REQUEST;
        }
    };
    if !notifier.allows(&delivery.route.callback_endpoint) {
        // Answered like a channel the scheduler does not know, without any
        // connection: the webhook reveals nothing about other hosts.
        tracing::warn!("push notification names a callback endpoint that is not allowed; dropped");
        metrics::webhook_notification(PROVIDER, "forged");
        return StatusCode::OK;
    }
    let span = tracing::info_span!(
        "google.push",
        channel_id = %delivery.channel_id,
        resource_state = %delivery.resource_state,
        message_number = delivery.message_number,
    );
    let outcome = tracing::Instrument::instrument(forward(&notifier, delivery), span).await;
    metrics::webhook_notification(
        PROVIDER,
        match outcome {
            Forwarded::Delivered => "forwarded",
            Forwarded::UnknownChannel | Forwarded::Refused => "refused",
            Forwarded::Unreachable => "unreachable",
        },
    );
    match outcome {
        Forwarded::Delivered => StatusCode::OK,
        Forwarded::UnknownChannel => {
            tracing::debug!("scheduler does not know the channel; letting it lapse");
            StatusCode::OK
        }
        Forwarded::Refused => StatusCode::OK,
        Forwarded::Unreachable => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// The webhook's HTTP service: POST on any path is a notification.
pub fn router(notifier: Notifier) -> Router {
    Router::new().fallback(notification).with_state(notifier)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route() -> Route {
        Route {
            callback_endpoint: "http://scheduler-0.scheduler:50051".into(),
            channel_token: "9f2c1d0e8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a".into(),
        }
    }

    #[test]
    fn channel_tokens_round_trip_url_encoded() {
        let t = encode_token(&route()).unwrap();
        assert!(t.starts_with("e=http%3A%2F%2Fscheduler-0.scheduler%3A50051&t=9f2c"));
        assert!(t.len() <= MAX_CHANNEL_TOKEN);
        assert_eq!(decode_token(&t), Some(route()));
        let odd = Route {
            callback_endpoint: "127.0.0.1:7&x=1".into(),
            channel_token: "a b+c=d".into(),
        };
        assert_eq!(decode_token(&encode_token(&odd).unwrap()), Some(odd));
    }

    #[test]
    fn tokens_over_googles_limit_are_refused() {
        let long = Route {
            callback_endpoint: format!("http://{}.example:1", "s".repeat(200)),
            channel_token: "t".repeat(60),
        };
        assert_eq!(
            encode_token(&long).unwrap_err().0[0].field,
            "callback_endpoint"
        );
    }

    #[test]
    fn foreign_tokens_are_not_decoded() {
        for bad in [
            "",
            "e=",
            "t=x",
            "e=x",
            "e=x&t=",
            "e=x&t=y&z=1",
            "e=x&e=y&t=z",
        ] {
            assert_eq!(decode_token(bad), None, "{bad:?}");
        }
        assert_eq!(decode_token(&format!("e=x&t={}", "y".repeat(300))), None);
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn deliveries_are_read_from_googles_headers() {
        let token = encode_token(&route()).unwrap();
        let d = parse_delivery(&headers(&[
            ("X-Goog-Channel-ID", "ch_1"),
            ("X-Goog-Channel-Token", &token),
            ("X-Goog-Resource-State", "exists"),
            ("X-Goog-Message-Number", "417"),
            ("X-Goog-Resource-ID", "ret08u3rv24htgh289g"),
        ]))
        .unwrap();
        assert_eq!(d.channel_id, "ch_1");
        assert_eq!(d.route, route());
        assert_eq!(d.resource_state, "exists");
        assert_eq!(d.message_number, 417);

        for (missing, problem) in [
            ("X-Goog-Channel-ID", "missing X-Goog-Channel-ID"),
            ("X-Goog-Channel-Token", "missing X-Goog-Channel-Token"),
            ("X-Goog-Resource-State", "missing X-Goog-Resource-State"),
        ] {
            let all = [
                ("X-Goog-Channel-ID", "ch_1"),
                ("X-Goog-Channel-Token", token.as_str()),
                ("X-Goog-Resource-State", "sync"),
            ];
            let some: Vec<(&str, &str)> =
                all.iter().copied().filter(|(k, _)| *k != missing).collect();
            assert_eq!(parse_delivery(&headers(&some)), Err(problem));
        }
        assert!(parse_delivery(&headers(&[
            ("X-Goog-Channel-ID", "ch_1"),
            ("X-Goog-Channel-Token", "opaque-foreign-token"),
            ("X-Goog-Resource-State", "sync"),
        ]))
        .is_err());
        assert!(parse_delivery(&headers(&[
            ("X-Goog-Channel-ID", "ch_1"),
            ("X-Goog-Channel-Token", &token),
            ("X-Goog-Resource-State", "sync"),
            ("X-Goog-Message-Number", "one"),
        ]))
        .is_err());
    }
}
