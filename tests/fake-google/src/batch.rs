//! Batch requests: `POST /batch/calendar/v3` with a `multipart/mixed` body
//! of `application/http` parts, each a complete request whose request line
//! carries only the path. Outer headers (e.g. `Authorization`) apply to every
//! part unless the part sets them; the outer `Content-*` headers do not. Each
//! part runs through the normal pipeline (so each counts against quota), and
//! the answers come back in request order as `Content-ID: response-<id>`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State as AxumState;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use crate::api::{dispatch, PREFIX};
use crate::error::ApiError;
use crate::model::Shared;

/// Most calls in one batch.
const MAX_PARTS: usize = 1000;

/// One part of a batch request.
#[derive(Debug, PartialEq)]
struct Part {
    content_id: Option<String>,
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: String,
}

/// Splits at the first empty line (CRLF or LF line ends).
fn split_blank(s: &str) -> (&str, &str) {
    let crlf = s.find("\r\n\r\n").map(|i| (i, 4));
    let lf = s.find("\n\n").map(|i| (i, 2));
    match [crlf, lf].into_iter().flatten().min_by_key(|(i, _)| *i) {
        Some((i, n)) => (&s[..i], &s[i + n..]),
        None => (s, ""),
    }
}

fn header_lines(head: &str) -> impl Iterator<Item = (String, String)> + '_ {
    head.lines().filter_map(|l| {
        let (k, v) = l.split_once(':')?;
        Some((k.trim().to_string(), v.trim().to_string()))
    })
}

fn parse(body: &str, boundary: &str) -> Result<Vec<Part>, ApiError> {
    let delimiter = format!("--{boundary}");
    let mut parts = Vec::new();
    for chunk in body.split(delimiter.as_str()).skip(1) {
        if chunk.starts_with("--") {
            break;
        }
        let chunk = chunk.trim_start_matches(['\r', '\n']);
        let (part_head, http) = split_blank(chunk);
        let content_id = header_lines(part_head)
            .find(|(k, _)| k.eq_ignore_ascii_case("content-id"))
            .map(|(_, v)| v);
        let (request_head, request_body) = split_blank(http);
        let mut lines = request_head.lines();
        let request_line = lines.next().unwrap_or_default();
        let mut words = request_line.split_whitespace();
        let (Some(method), Some(target)) = (words.next(), words.next()) else {
            return Err(ApiError::invalid("Invalid request line in a batch part."));
        };
        let rest: Vec<&str> = lines.collect();
        parts.push(Part {
            content_id,
            method: method.to_string(),
            target: target.to_string(),
            headers: header_lines(&rest.join("\n")).collect(),
            body: request_body.trim_end_matches(['\r', '\n']).to_string(),
        });
    }
    Ok(parts)
}

fn boundary_of(headers: &HeaderMap) -> Option<String> {
    let ct = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    if !ct.to_ascii_lowercase().starts_with("multipart/mixed") {
        return None;
    }
    ct.split(';').find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.eq_ignore_ascii_case("boundary")
            .then(|| v.trim_matches('"').to_string())
    })
}

/// `POST /batch/calendar/v3`.
pub(crate) async fn batch(
    AxumState(shared): AxumState<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(boundary) = boundary_of(&headers) else {
        return ApiError::invalid("A batch request must be multipart/mixed with a boundary.")
            .into_response();
    };
    let text = String::from_utf8_lossy(&body);
    let parts = match parse(&text, &boundary) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    if parts.is_empty() {
        return ApiError::invalid("A batch request needs at least one part.").into_response();
    }
    if parts.len() > MAX_PARTS {
        return ApiError::invalid("A batch request cannot contain more than 1000 calls.")
            .into_response();
    }
    let mut out = String::new();
    let response_boundary = format!("batch_{}", shared.lock().random_token("", 20));
    for part in parts {
        let response = run_part(&shared, &headers, &part);
        let (head, body) = response.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX)
            .await
            .unwrap_or_default();
        out.push_str(&format!(
            "--{response_boundary}\r\nContent-Type: application/http\r\n"
        ));
        if let Some(id) = &part.content_id {
            let id = match id.strip_prefix('<').and_then(|i| i.strip_suffix('>')) {
                Some(inner) => format!("<response-{inner}>"),
                None => format!("response-{id}"),
            };
            out.push_str(&format!("Content-ID: {id}\r\n"));
        }
        out.push_str(&format!(
            "\r\nHTTP/1.1 {} {}\r\n",
            head.status.as_u16(),
            head.status.canonical_reason().unwrap_or_default()
        ));
        for (k, v) in &head.headers {
            out.push_str(&format!("{}: {}\r\n", k, v.to_str().unwrap_or_default()));
        }
        out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        out.push_str(&String::from_utf8_lossy(&body));
        out.push_str("\r\n");
    }
    out.push_str(&format!("--{response_boundary}--\r\n"));
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            format!("multipart/mixed; boundary={response_boundary}"),
        )],
        out,
    )
        .into_response()
}

fn run_part(shared: &Arc<Shared>, outer: &HeaderMap, part: &Part) -> Response {
    let Ok(method) = Method::from_bytes(part.method.as_bytes()) else {
        return ApiError::invalid("Invalid method in a batch part.").into_response();
    };
    // Only the path is sent; tolerate a full URL too.
    let target = match part.target.find(PREFIX) {
        Some(i) => &part.target[i..],
        None => return ApiError::not_found().into_response(),
    };
    let Ok(uri) = target.parse::<Uri>() else {
        return ApiError::invalid("Invalid path in a batch part.").into_response();
    };
    let mut headers = HeaderMap::new();
    for (k, v) in outer {
        let name = k.as_str();
        if !name.starts_with("content-") && name != "host" && name != "transfer-encoding" {
            headers.insert(k.clone(), v.clone());
        }
    }
    for (k, v) in &part.headers {
        if let (Ok(k), Ok(v)) = (HeaderName::try_from(k.as_str()), HeaderValue::from_str(v)) {
            headers.insert(k, v);
        }
    }
    dispatch(
        shared,
        &method,
        &uri,
        &headers,
        &Bytes::from(part.body.clone()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_read_with_their_content_ids_headers_and_bodies() {
        let body = "--b1\r\nContent-Type: application/http\r\nContent-ID: <item1>\r\n\r\n\
            GET /calendar/v3/calendars/primary/events/abc HTTP/1.1\r\n\r\n\
            --b1\r\nContent-Type: application/http\r\nContent-ID: 2\r\n\r\n\
            POST /calendar/v3/calendars/primary/events\r\nContent-Type: application/json\r\n\r\n{\"summary\":\"x\"}\r\n\
            --b1--\r\n";
        let parts = parse(body, "b1").unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].content_id.as_deref(), Some("<item1>"));
        assert_eq!(parts[0].method, "GET");
        assert_eq!(parts[0].target, "/calendar/v3/calendars/primary/events/abc");
        assert_eq!(
            parts[1].headers,
            vec![("Content-Type".to_string(), "application/json".to_string())]
        );
        assert_eq!(parts[1].body, "{\"summary\":\"x\"}");
    }
}
