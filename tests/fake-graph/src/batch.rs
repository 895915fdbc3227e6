//! JSON batching, `POST /v1.0/$batch`: up to 20 requests, each run as if
//! sent on its own with the batch's bearer token (so faults, throttling
//! and schema checks apply to each), in order of their `dependsOn`; a
//! request whose dependency failed answers 424. Answers come back in
//! reverse order, as Graph does not promise any.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};
use tower::ServiceExt as _;

use crate::api::graph_error;
use crate::events::err;
use crate::Shared;

/// Graph's limit on requests in one batch.
const MAX_REQUESTS: usize = 20;

/// Headers of an inner answer that are handed back.
const KEPT: [&str; 5] = [
    "retry-after",
    "etag",
    "location",
    "content-type",
    "preference-applied",
];

fn bad(message: &str) -> Response {
    graph_error(&err(400, "BadRequest", message))
}

pub(crate) async fn batch(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    {
        // The batch itself needs a live token; throttling and faults apply
        // to the requests inside it, each on its own.
        let mut st = s.lock();
        st.requests.push("POST /$batch".into());
        let bearer = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if st
            .access
            .get(bearer)
            .is_none_or(|a| a.expires <= chrono::Utc::now())
        {
            return graph_error(&err(
                401,
                "InvalidAuthenticationToken",
                "Access token is empty or invalid.",
            ));
        }
    }
    let Ok(b) = serde_json::from_slice::<Value>(&body) else {
        return bad("Invalid batch payload format.");
    };
    let Some(requests) = b["requests"].as_array() else {
        return bad("Invalid batch payload format.");
    };
    if requests.is_empty() {
        return bad("Invalid batch payload format.");
    }
    if requests.len() > MAX_REQUESTS {
        return bad("Limit of 20 requests exceeded.");
    }
    let mut seen: Vec<String> = Vec::new();
    for r in requests {
        let Some(id) = r["id"].as_str().filter(|i| !i.is_empty()) else {
            return bad("Each request needs an id.");
        };
        if seen.iter().any(|x| x == id) {
            return bad("Request Id must be unique.");
        }
        for d in r["dependsOn"].as_array().into_iter().flatten() {
            if !d.as_str().is_some_and(|d| seen.iter().any(|x| x == d)) {
                return bad("dependsOn must name an earlier request of the batch.");
            }
        }
        let url = r["url"].as_str().unwrap_or_default();
        if !url.starts_with('/') || url.starts_with("/$batch") || url.contains("://") {
            return bad("Invalid request URL.");
        }
        if Method::from_bytes(r["method"].as_str().unwrap_or_default().as_bytes()).is_err() {
            return bad("Invalid request method.");
        }
        seen.push(id.to_string());
    }
    let auth = headers.get("authorization").cloned();
    let mut statuses: HashMap<String, u16> = HashMap::new();
    let mut responses = Vec::new();
    for r in requests {
        let id = r["id"].as_str().unwrap_or_default().to_string();
        let failed_dependency = r["dependsOn"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .any(|d| !statuses.get(d).is_some_and(|s| (200..300).contains(s)));
        if failed_dependency {
            statuses.insert(id.clone(), 424);
            responses.push(json!({"id": id, "status": 424, "body": {"error": {
                "code": "FailedDependency",
                "message": "The request could not be processed because a request it depends on failed.",
            }}}));
            continue;
        }
        let (status, kept, body) = run(&s, r, auth.clone()).await;
        statuses.insert(id.clone(), status);
        let mut answer = json!({"id": id, "status": status, "headers": kept});
        if !body.is_null() {
            answer["body"] = body;
        }
        responses.push(answer);
    }
    responses.reverse();
    (StatusCode::OK, Json(json!({ "responses": responses }))).into_response()
}

/// Runs one request of a batch through Graph's routes.
async fn run(
    s: &Arc<Shared>,
    r: &Value,
    auth: Option<HeaderValue>,
) -> (u16, Map<String, Value>, Value) {
    let method =
        Method::from_bytes(r["method"].as_str().unwrap_or("GET").as_bytes()).unwrap_or(Method::GET);
    let body = match &r["body"] {
        Value::Null => Vec::new(),
        v => serde_json::to_vec(v).unwrap_or_default(),
    };
    let mut req = Request::builder()
        .method(method)
        .uri(r["url"].as_str().unwrap_or("/"));
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    for (k, v) in r["headers"].as_object().into_iter().flatten() {
        if let (Ok(k), Some(Ok(v))) = (
            HeaderName::from_bytes(k.as_bytes()),
            v.as_str().map(HeaderValue::from_str),
        ) {
            req = req.header(k, v);
        }
    }
    let Ok(req) = req.body(axum::body::Body::from(body)) else {
        return (400, Map::new(), Value::Null);
    };
    let app = crate::api::router(s.clone()).with_state(s.clone());
    let Ok(answer) = app.oneshot(req).await;
    let status = answer.status().as_u16();
    let mut kept = Map::new();
    for name in KEPT {
        if let Some(v) = answer.headers().get(name).and_then(|v| v.to_str().ok()) {
            kept.insert(name.to_string(), json!(v));
        }
    }
    let bytes = axum::body::to_bytes(answer.into_body(), 16 << 20)
        .await
        .unwrap_or_default();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|_| json!(String::from_utf8_lossy(&bytes)))
    };
    (status, kept, body)
}
