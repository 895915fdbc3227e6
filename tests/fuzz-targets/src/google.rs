//! The Google adapter's webhook: push notifications carry everything in
//! their headers (no body), the routing in the channel token.

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use calbridge_adapter_google::push;

/// The headers of a request written as an HTTP header block (`Name: value`
/// lines; lines that are no valid header are left out, as the HTTP server
/// would refuse them before the webhook sees them).
pub fn header_map(data: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let value = value.trim_ascii_start();
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            headers.append(n, v);
        }
    }
    headers
}

/// A notification's headers (an HTTP header block): read as the webhook
/// reads them. A delivery read from them keeps the limits, and its route
/// encodes to a token that reads back the same; the raw input and every
/// header value are also read as channel tokens.
pub fn google_push(data: &[u8]) {
    let _ = push::decode_token(&String::from_utf8_lossy(data));
    let headers = header_map(data);
    for v in headers.values() {
        if let Ok(s) = v.to_str() {
            let _ = push::decode_token(s);
        }
    }
    let Ok(d) = push::parse_delivery(&headers) else {
        return;
    };
    assert!(d.channel_id.len() <= push::MAX_CHANNEL_ID);
    assert!(!d.route.callback_endpoint.is_empty() && !d.route.channel_token.is_empty());
    if let Ok(token) = push::encode_token(&d.route) {
        assert!(token.len() <= push::MAX_CHANNEL_TOKEN);
        assert_eq!(push::decode_token(&token).as_ref(), Some(&d.route));
    }
}
