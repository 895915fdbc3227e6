//! JSON batching (`POST /$batch`): up to 20 Graph requests in one round
//! trip. Each request inside still counts against the mailbox's budget
//! and concurrency (a batch of N weighs N), Graph answers each on its own
//! and in any order, and each may be throttled on its own: requests
//! answered 429, 503 or 504 are sent again in a later batch after the
//! longest `Retry-After` among them (never earlier), within the same retry
//! policy as single requests. A request that `dependsOn` another one
//! that failed is answered 424 by Graph and fails with it.

use std::collections::HashMap;
use std::time::Duration;

use rand::Rng as _;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use calbridge_runtime::metrics;

use crate::client::{wait_reason, Answer, Call, Failure, Session, PROVIDER};
use crate::error::GraphError;
use crate::model::ErrorBody;
use crate::retry::{classify, parse_retry_after, Decision, Retryable};

/// Graph's limit on requests in one batch.
pub const MAX_BATCH: usize = 20;

/// One request of a batch.
#[derive(Debug, Clone)]
pub struct Item {
    /// The request (below the Graph base).
    pub call: Call,
    /// The index of an earlier item of the same batch this one runs after
    /// (and fails with).
    pub depends_on: Option<usize>,
}

impl Item {
    /// An independent request.
    pub fn new(call: Call) -> Self {
        Item {
            call,
            depends_on: None,
        }
    }
}

#[derive(Debug, Deserialize)]
struct Reply {
    responses: Vec<Response>,
}

#[derive(Debug, Deserialize)]
struct Response {
    id: String,
    status: u16,
    #[serde(default)]
    headers: HashMap<String, String>,
    #[serde(default)]
    body: Value,
}

/// The URL of `call` relative to the version root (`/me/...?...`), as a
/// batch names it; `None` when it is not below the Graph base.
fn relative_url(session: &Session<'_>, call: &Call) -> Option<String> {
    let base = session.api().base();
    if call.url.origin() != base.origin() {
        return None;
    }
    let path = call.url.path().strip_prefix(base.path())?;
    Some(match call.url.query() {
        Some(q) => format!("/{path}?{q}"),
        None => format!("/{path}"),
    })
}

/// `{base}$batch` (the `$` written as is, as Graph names the route).
fn batch_url(session: &Session<'_>) -> Result<reqwest::Url, GraphError> {
    session
        .api()
        .base()
        .join("$batch")
        .map_err(|_| GraphError::Protocol("the Graph base cannot take $batch".into()))
}

fn request_json(
    session: &Session<'_>,
    id: usize,
    item: &Item,
    ids: &[usize],
) -> Result<Value, GraphError> {
    let url = relative_url(session, &item.call)
        .ok_or_else(|| GraphError::Protocol("a batched request leaves the Graph base".into()))?;
    let mut headers = Map::new();
    headers.insert("Prefer".into(), json!(item.call.prefer()));
    if let Some(tag) = &item.call.if_match {
        headers.insert("If-Match".into(), json!(tag));
    }
    let mut r = json!({
        "id": id.to_string(),
        "method": item.call.method.as_str(),
        "url": url,
    });
    if let Some(b) = &item.call.body {
        headers.insert("Content-Type".into(), json!("application/json"));
        r["body"] = b.clone();
    }
    r["headers"] = Value::Object(headers);
    if let Some(d) = item.depends_on {
        if ids.contains(&d) {
            r["dependsOn"] = json!([d.to_string()]);
        }
    }
    Ok(r)
}

/// Sends `items` in as few batches as Graph allows and answers each: its
/// answer, or the failure Graph gave it (status and code) for the caller
/// to give a meaning. Retryable failures of single items are retried;
/// when the retry policy gives up, the whole call fails as a single
/// request would. Items that depend on another must come after it in the
/// same group of [`MAX_BATCH`].
pub async fn send_all(
    session: &Session<'_>,
    items: &[Item],
) -> Result<Vec<Result<Answer, Failure>>, GraphError> {
    let mut results: Vec<Option<Result<Answer, Failure>>> = vec![None; items.len()];
    let mut attempt = 0u32;
    let mut waited = Duration::ZERO;
    loop {
        let pending: Vec<usize> = (0..items.len()).filter(|i| results[*i].is_none()).collect();
        if pending.is_empty() {
            break;
        }
        attempt += 1;
        let mut retry: Option<(Retryable, Option<Duration>)> = None;
        for group in pending.chunks(MAX_BATCH) {
            let requests = group
                .iter()
                .map(|&i| request_json(session, i, &items[i], group))
                .collect::<Result<Vec<_>, _>>()?;
            let call = Call {
                body: Some(json!({ "requests": requests })),
                weight: group.len() as u32,
                ..Call::new("$batch", Method::POST, batch_url(session)?)
            };
            let reply: Reply = session.request(&call, "the batch").await?.json()?;
            for r in reply.responses {
                let Some(&i) =
                    r.id.parse::<usize>()
                        .ok()
                        .and_then(|i| group.iter().find(|g| **g == i))
                else {
                    return Err(GraphError::Protocol(
                        "a batch answer names an unknown request".into(),
                    ));
                };
                if (200..300).contains(&r.status) {
                    let body = serde_json::to_vec(&r.body).unwrap_or_default();
                    let status =
                        reqwest::StatusCode::from_u16(r.status).unwrap_or(reqwest::StatusCode::OK);
                    results[i] = Some(Ok(Answer { status, body }));
                    continue;
                }
                let after = r
                    .headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("retry-after"))
                    .and_then(|(_, v)| parse_retry_after(v, chrono::Utc::now()));
                if let Some(d) = after {
                    metrics::retry_after(PROVIDER, d);
                }
                match (r.status, classify(r.status)) {
                    (424, _) => {
                        // Its dependency failed: it fails with it, or goes
                        // again with it when that is retried.
                        let dep_failed = items[i]
                            .depends_on
                            .and_then(|d| results.get(d).cloned().flatten())
                            .is_some_and(|d| d.is_err());
                        if dep_failed {
                            results[i] = Some(Err(Failure {
                                status: 424,
                                code: "FailedDependency".into(),
                            }));
                        }
                    }
                    (_, Some(kind)) => {
                        let longest = match retry {
                            Some((_, Some(d))) => after.map(|a| a.max(d)).or(Some(d)),
                            _ => after,
                        };
                        retry = Some((kind, longest));
                    }
                    (status, None) => {
                        let code =
                            ErrorBody::code(&serde_json::to_vec(&r.body).unwrap_or_default());
                        results[i] = Some(Err(Failure { status, code }));
                    }
                }
            }
        }
        if results.iter().all(Option::is_some) {
            break;
        }
        let (kind, after) = retry.unwrap_or((Retryable::Outage, None));
        let jitter = rand::thread_rng().gen::<f64>();
        match session.api().retry().decide(attempt, waited, after, jitter) {
            Decision::Wait(d) => {
                tracing::debug!(
                    attempt,
                    wait_ms = d.as_millis() as u64,
                    "retrying batched requests"
                );
                tokio::time::sleep(d).await;
                metrics::throttle_wait(PROVIDER, wait_reason(after), d);
                waited += d;
            }
            Decision::GiveUp(d) => {
                return Err(match kind {
                    Retryable::Throttled => GraphError::Throttled("429 in a batch".into(), Some(d)),
                    Retryable::Outage => GraphError::Unavailable(
                        format!("batched requests failed after {attempt} attempts"),
                        Some(d),
                    ),
                });
            }
        }
    }
    Ok(results
        .into_iter()
        .map(|r| r.expect("every item answered"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_read_with_their_headers_and_bodies() {
        let r: Reply = serde_json::from_value(json!({"responses": [
            {"id": "1", "status": 200, "headers": {"Content-Type": "application/json"}, "body": {"value": []}},
            {"id": "0", "status": 429, "headers": {"Retry-After": "3"}, "body": {"error": {"code": "ApplicationThrottled"}}},
            {"id": "2", "status": 424, "body": {"error": {"code": "FailedDependency"}}},
        ]}))
        .unwrap();
        assert_eq!(r.responses.len(), 3);
        assert_eq!(r.responses[1].headers["Retry-After"], "3");
        assert_eq!(r.responses[2].status, 424);
        assert!(r.responses[2].headers.is_empty());
    }
}
