//! The optional HTTP endpoint that completes OAuth consent redirects:
//! `GET /oauth/callback?state=…&code=…` (or `?state=…&error=…` when the user
//! declined). It completes the authorisation exactly as
//! CompleteAuthorization does, with the configured callback URL as the
//! redirect URI and the tenant that began it, then sends the browser to the
//! configured return URL with `account_id=…` or `error=…` added (or shows a
//! short page when none is configured). No API key is involved: the
//! single-use state is the proof.
//!
//! An `error=…` redirect carries no proof at all: anyone who saw the consent
//! URL (browser history, a proxy's log, a shoulder) knows its state and can
//! send one. So an error redirect never consumes the pending state: it only
//! says so to the browser. The state stays completable by the provider's
//! real code (which needs the PKCE verifier held here) until it expires;
//! a user who declined simply never produces one.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

use calbridge::ErrorKind;

use crate::state::Shared;

/// Query parameters of the redirect.
#[derive(Debug, Default, Deserialize)]
struct CallbackQuery {
    state: Option<String>,
    code: Option<String>,
    error: Option<String>,
}

/// The callback endpoint's routes.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/oauth/callback", get(callback))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(shared)
}

async fn callback(State(shared): State<Arc<Shared>>, Query(q): Query<CallbackQuery>) -> Response {
    let Some(redirect_uri) = shared.config.oauth.callback_redirect_uri() else {
        return page(StatusCode::NOT_FOUND, "No OAuth callback is configured.");
    };
    let state = q.state.unwrap_or_default();
    if let Some(error) = q.error {
        // The user declined (or the provider refused), or someone says so:
        // the state is left to expire (see the module comment).
        let error: String = error
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(64)
            .collect();
        tracing::info!(%error, "authorisation declined at the provider");
        return finish(&shared, Err(("access_denied_or_failed", error)));
    }
    let code = q.code.unwrap_or_default();
    match crate::connections::oauth::complete(&shared, None, &state, &code, &redirect_uri).await {
        Ok(account) => finish(&shared, Ok(account.account_id)),
        Err(e) => {
            tracing::warn!(code = ?e.code(), "authorisation not completed");
            let kind = match &e {
                ErrorKind::Invalid(_) => "invalid_request",
                ErrorKind::Unauthenticated(_) => "invalid_grant",
                ErrorKind::FailedPrecondition(_) => "wrong_account",
                _ => "server_error",
            };
            finish(&shared, Err((kind, e.to_string())))
        }
    }
}

/// Sends the browser on: to the return URL with the outcome in the query,
/// or a short page.
fn finish(shared: &Shared, outcome: Result<String, (&str, String)>) -> Response {
    match &shared.config.oauth.return_url {
        Some(base) => {
            let sep = if base.contains('?') { '&' } else { '?' };
            let query = match &outcome {
                Ok(id) => format!("account_id={}", encode(id)),
                Err((kind, _)) => format!("error={}", encode(kind)),
            };
            (
                StatusCode::FOUND,
                [(header::LOCATION, format!("{base}{sep}{query}"))],
            )
                .into_response()
        }
        None => match outcome {
            Ok(id) => page(
                StatusCode::OK,
                &format!("Calendar connected (account {id}). You can close this window."),
            ),
            Err((_, message)) => page(
                StatusCode::BAD_REQUEST,
                &format!("The calendar was not connected: {message}"),
            ),
        },
    }
}

fn page(status: StatusCode, text: &str) -> Response {
    let body = format!(
        "<!doctype html><meta charset=\"utf-8\"><title>calbridge</title><p>{}</p>\n",
        escape_html(text)
    );
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_escape_and_queries_encode() {
        assert_eq!(
            escape_html("<a href='x'>&"),
            "&lt;a href=&#39;x&#39;&gt;&amp;"
        );
        assert_eq!(encode("acc_1 &x=y"), "acc_1%20%26x%3Dy");
    }
}
