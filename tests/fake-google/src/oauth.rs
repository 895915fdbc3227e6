//! Google's OAuth 2.0 endpoints: consent (`/o/oauth2/v2/auth`, approved at
//! once), token (`authorization_code` with PKCE, `refresh_token`) and revoke,
//! plus the access-token check every Calendar API call goes through.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::{RawQuery, State as AxumState};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use chrono::Duration;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::api::take_fault;
use crate::error::{ApiError, OAuthError};
use crate::model::{AccessToken, AuthCode, Grant, Shared, State};

/// Prefix of Google's API scopes.
pub const SCOPE_PREFIX: &str = "https://www.googleapis.com/auth/";

/// Scopes that are not Calendar's but that Google accepts in the same request.
const IDENTITY_SCOPES: [&str; 3] = ["openid", "email", "profile"];

/// A scope in its full form: `calendar.readonly` becomes
/// `https://www.googleapis.com/auth/calendar.readonly`.
pub fn full_scope(scope: &str) -> String {
    if scope.contains("://") || IDENTITY_SCOPES.contains(&scope) {
        scope.to_string()
    } else {
        format!("{SCOPE_PREFIX}{scope}")
    }
}

/// The signed-in caller of an API request.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub user: String,
    pub client_id: String,
    pub scopes: BTreeSet<String>,
}

/// Checks the `Authorization` header of an API call.
pub(crate) fn authenticate(state: &State, authorization: Option<&str>) -> Result<Caller, ApiError> {
    let Some(value) = authorization else {
        return Err(ApiError::login_required());
    };
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or_else(ApiError::auth_error)?
        .trim();
    let access = state
        .access_tokens
        .get(token)
        .ok_or_else(ApiError::auth_error)?;
    let grant = state
        .grants
        .get(&access.grant)
        .ok_or_else(ApiError::auth_error)?;
    if grant.revoked || state.now() >= access.expires_at {
        return Err(ApiError::auth_error());
    }
    Ok(Caller {
        user: grant.user.clone(),
        client_id: grant.client_id.clone(),
        scopes: grant.scopes.clone(),
    })
}

fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    raw.map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

fn get<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Google shows an error page (no redirect) for a bad authorization request.
fn error_page(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("Error {}: {error}\n{description}\n", status.as_u16()),
    )
        .into_response()
}

fn redirect(uri: &str, params: &[(&str, &str)]) -> Response {
    let mut ser = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        ser.append_pair(k, v);
    }
    let sep = if uri.contains('?') { '&' } else { '?' };
    let location = format!("{uri}{sep}{}", ser.finish());
    (StatusCode::FOUND, [(header::LOCATION, location)]).into_response()
}

/// `GET /o/oauth2/v2/auth`.
pub(crate) async fn authorize(
    AxumState(shared): AxumState<Arc<Shared>>,
    RawQuery(raw): RawQuery,
) -> Response {
    let q = query_pairs(raw.as_deref());
    let mut state = shared.lock();
    *state.counters.oauth.entry("authorize".into()).or_default() += 1;
    let p = |k: &str| get(&q, k);
    let Some(client_id) = p("client_id") else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Missing required parameter: client_id",
        );
    };
    let Some(client) = state.clients.get(client_id).cloned() else {
        return error_page(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "The OAuth client was not found.",
        );
    };
    let Some(redirect_uri) =
        p("redirect_uri").filter(|r| client.redirect_uris.iter().any(|u| u == r))
    else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "redirect_uri_mismatch",
            "The redirect URI in the request does not match the ones authorized for the OAuth client.",
        );
    };
    if p("response_type") != Some("code") {
        return error_page(
            StatusCode::BAD_REQUEST,
            "unsupported_response_type",
            "Only response_type=code is supported.",
        );
    }
    let requested: BTreeSet<String> = p("scope")
        .unwrap_or_default()
        .split_whitespace()
        .map(full_scope)
        .collect();
    if requested.is_empty() {
        return error_page(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Missing required parameter: scope",
        );
    }
    let known = shared.discovery.scopes();
    if let Some(unknown) = requested
        .iter()
        .find(|s| !known.contains(s) && !IDENTITY_SCOPES.contains(&s.as_str()))
    {
        return error_page(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            &format!("Some requested scopes were invalid: {unknown}"),
        );
    }
    let challenge = match (
        p("code_challenge"),
        p("code_challenge_method").unwrap_or("plain"),
    ) {
        (None, _) if shared.config.require_pkce => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Missing required parameter: code_challenge",
            );
        }
        (None, _) => None,
        (Some(c), "S256") if c.len() == 43 && URL_SAFE_NO_PAD.decode(c).is_ok() => {
            Some((c.to_string(), "S256".to_string()))
        }
        (Some(c), "plain") if (43..=128).contains(&c.len()) => {
            Some((c.to_string(), "plain".to_string()))
        }
        _ => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Invalid code_challenge or code_challenge_method.",
            );
        }
    };
    let user = match p("login_hint").filter(|h| state.users.contains_key(*h)) {
        Some(u) => u.to_string(),
        None => match state.user_order.first() {
            Some(u) => u.clone(),
            None => {
                return error_page(
                    StatusCode::BAD_REQUEST,
                    "access_denied",
                    "No user exists in the fake.",
                )
            }
        },
    };
    let state_param = p("state").unwrap_or_default().to_string();
    let consent = state.next_consent.take().unwrap_or_default();
    if consent.deny {
        return redirect(
            redirect_uri,
            &[("error", "access_denied"), ("state", &state_param)],
        );
    }
    let mut granted: BTreeSet<String> = match &consent.granted_scopes {
        Some(list) => list
            .iter()
            .map(|s| full_scope(s))
            .filter(|s| requested.contains(s))
            .collect(),
        None => requested.clone(),
    };
    let pair = (user.clone(), client_id.to_string());
    if p("include_granted_scopes") == Some("true") {
        if let Some(earlier) = state.pair_scopes.get(&pair) {
            granted.extend(earlier.iter().cloned());
        }
    }
    let offline = p("access_type") == Some("offline");
    let forced = p("prompt").is_some_and(|pr| pr.split_whitespace().any(|x| x == "consent"));
    let issue_refresh_token = offline && (forced || !state.refresh_issued.contains(&pair));
    let code = state.random_token("4/0A", 40);
    let expires_at = state.now()
        + Duration::from_std(shared.config.authorization_code_lifetime).unwrap_or(Duration::MAX);
    let scope_text = granted.iter().cloned().collect::<Vec<_>>().join(" ");
    state.codes.insert(
        code.clone(),
        AuthCode {
            client_id: client_id.to_string(),
            redirect_uri: redirect_uri.to_string(),
            user,
            scopes: granted,
            code_challenge: challenge,
            issue_refresh_token,
            expires_at,
            used: false,
        },
    );
    redirect(
        redirect_uri,
        &[
            ("state", &state_param),
            ("code", &code),
            ("scope", &scope_text),
        ],
    )
}

/// The client of a token request: HTTP Basic or form fields.
fn client_credentials(headers: &HeaderMap, form: &[(String, String)]) -> Option<(String, String)> {
    if let Some(basic) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
    {
        let decoded = String::from_utf8(STANDARD.decode(basic.trim()).ok()?).ok()?;
        let (id, secret) = decoded.split_once(':')?;
        let unescape = |s: &str| {
            form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
        };
        return Some((unescape(id)?, unescape(secret)?));
    }
    Some((
        get(form, "client_id")?.to_string(),
        get(form, "client_secret").unwrap_or_default().to_string(),
    ))
}

fn issue_access_token(
    state: &mut State,
    grant_id: u64,
    lifetime: std::time::Duration,
) -> (String, i64) {
    let token = state.random_token("ya29.a0", 60);
    let seconds = lifetime.as_secs() as i64;
    let expires_at = state.now() + Duration::seconds(seconds);
    state.access_tokens.insert(
        token.clone(),
        AccessToken {
            grant: grant_id,
            expires_at,
        },
    );
    (token, seconds)
}

fn id_token(state: &State, user: &str, client_id: &str) -> String {
    let now = state.now().timestamp();
    let sub: String = Sha256::digest(user.as_bytes())
        .iter()
        .take(10)
        .map(|b| format!("{b}"))
        .collect();
    let header = json!({"alg": "RS256", "kid": "fake-google", "typ": "JWT"});
    let payload = json!({
        "iss": "https://accounts.google.com", "aud": client_id, "azp": client_id, "sub": sub,
        "email": user, "email_verified": true, "iat": now, "exp": now + 3600,
    });
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload.to_string()),
        URL_SAFE_NO_PAD.encode("fake-signature")
    )
}

/// `POST /token`.
pub(crate) async fn token(
    AxumState(shared): AxumState<Arc<Shared>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let form: Vec<(String, String)> = form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    let mut state = shared.lock();
    *state.counters.oauth.entry("token".into()).or_default() += 1;
    if let Some(fault) = take_fault(&mut state, "/token", true) {
        let mut e = OAuthError::new(
            StatusCode::from_u16(fault.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            &fault.reason,
            "Injected fault.",
        );
        e.retry_after = fault.retry_after_seconds;
        return e.into_response();
    }
    match token_inner(&shared, &mut state, &headers, &form) {
        Ok(v) => (
            StatusCode::OK,
            [(
                header::CACHE_CONTROL,
                "no-cache, no-store, max-age=0, must-revalidate",
            )],
            axum::Json(v),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

fn token_inner(
    shared: &Shared,
    state: &mut State,
    headers: &HeaderMap,
    form: &[(String, String)],
) -> Result<Value, OAuthError> {
    let (client_id, secret) =
        client_credentials(headers, form).ok_or_else(OAuthError::invalid_client)?;
    match state.clients.get(&client_id) {
        Some(c) if c.secret == secret => {}
        _ => return Err(OAuthError::invalid_client()),
    }
    let config = &shared.config;
    match get(form, "grant_type") {
        Some("authorization_code") => {
            let code = get(form, "code")
                .ok_or_else(|| OAuthError::invalid_request("Missing required parameter: code"))?;
            let now = state.now();
            let entry = state
                .codes
                .get(code)
                .cloned()
                .ok_or_else(|| OAuthError::invalid_grant("Malformed auth code."))?;
            if entry.used || entry.expires_at <= now || entry.client_id != client_id {
                return Err(OAuthError::invalid_grant("Bad Request"));
            }
            if get(form, "redirect_uri") != Some(entry.redirect_uri.as_str()) {
                return Err(OAuthError::new(
                    StatusCode::BAD_REQUEST,
                    "redirect_uri_mismatch",
                    "Bad Request",
                ));
            }
            if let Some((challenge, method)) = &entry.code_challenge {
                let verifier = get(form, "code_verifier")
                    .ok_or_else(|| OAuthError::invalid_grant("Missing code verifier."))?;
                let computed = if method == "S256" {
                    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
                } else {
                    verifier.to_string()
                };
                if &computed != challenge {
                    return Err(OAuthError::invalid_grant("Invalid code verifier."));
                }
            }
            if let Some(c) = state.codes.get_mut(code) {
                c.used = true;
            }
            let pair = (entry.user.clone(), client_id.clone());
            let refresh_token = if entry.issue_refresh_token {
                // The per-client limit: the oldest live refresh token goes.
                let mut live: Vec<(chrono::DateTime<chrono::Utc>, u64)> = state
                    .grants
                    .iter()
                    .filter(|(_, g)| {
                        g.user == entry.user
                            && g.client_id == client_id
                            && g.refresh_token.is_some()
                            && !g.revoked
                            && !g.refresh_invalid
                    })
                    .map(|(id, g)| (g.created, *id))
                    .collect();
                live.sort();
                while live.len() >= config.max_refresh_tokens_per_client.max(1) {
                    let (_, oldest) = live.remove(0);
                    if let Some(g) = state.grants.get_mut(&oldest) {
                        g.refresh_invalid = true;
                    }
                }
                Some(state.random_token("1//0g", 80))
            } else {
                None
            };
            let grant_id = state.next_grant;
            state.next_grant += 1;
            let refresh_expires_at = config
                .refresh_token_lifetime
                .map(|l| now + Duration::from_std(l).unwrap_or(Duration::MAX));
            state.grants.insert(
                grant_id,
                Grant {
                    user: entry.user.clone(),
                    client_id: client_id.clone(),
                    scopes: entry.scopes.clone(),
                    refresh_token: refresh_token.clone(),
                    revoked: false,
                    refresh_invalid: false,
                    refresh_expires_at,
                    created: now,
                },
            );
            if let Some(r) = &refresh_token {
                state.refresh_tokens.insert(r.clone(), grant_id);
                state.refresh_issued.insert(pair.clone());
            }
            state
                .pair_scopes
                .entry(pair)
                .or_default()
                .extend(entry.scopes.iter().cloned());
            let (access, expires_in) =
                issue_access_token(state, grant_id, config.access_token_lifetime);
            let mut out = json!({
                "access_token": access,
                "expires_in": expires_in,
                "token_type": "Bearer",
                "scope": entry.scopes.iter().cloned().collect::<Vec<_>>().join(" "),
            });
            if let Some(r) = refresh_token {
                out["refresh_token"] = json!(r);
                if let Some(l) = config.refresh_token_lifetime {
                    out["refresh_token_expires_in"] = json!(l.as_secs());
                }
            }
            if entry.scopes.contains("openid") {
                out["id_token"] = json!(id_token(state, &entry.user, &client_id));
            }
            Ok(out)
        }
        Some("refresh_token") => {
            let token = get(form, "refresh_token").ok_or_else(|| {
                OAuthError::invalid_request("Missing required parameter: refresh_token")
            })?;
            let grant_id = *state
                .refresh_tokens
                .get(token)
                .ok_or_else(OAuthError::expired_or_revoked)?;
            let now = state.now();
            let grant = state
                .grants
                .get(&grant_id)
                .cloned()
                .ok_or_else(OAuthError::expired_or_revoked)?;
            if grant.client_id != client_id {
                return Err(OAuthError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized_client",
                    "Unauthorized",
                ));
            }
            if grant.revoked
                || grant.refresh_invalid
                || grant.refresh_expires_at.is_some_and(|e| e <= now)
            {
                return Err(OAuthError::expired_or_revoked());
            }
            let (access, expires_in) =
                issue_access_token(state, grant_id, config.access_token_lifetime);
            let mut out = json!({
                "access_token": access,
                "expires_in": expires_in,
                "token_type": "Bearer",
                "scope": grant.scopes.iter().cloned().collect::<Vec<_>>().join(" "),
            });
            if let Some(e) = grant.refresh_expires_at {
                out["refresh_token_expires_in"] = json!((e - now).num_seconds());
            }
            if grant.scopes.contains("openid") {
                out["id_token"] = json!(id_token(state, &grant.user, &client_id));
            }
            Ok(out)
        }
        Some(other) => Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            &format!("Invalid grant_type: {other}"),
        )),
        None => Err(OAuthError::invalid_request(
            "Missing required parameter: grant_type",
        )),
    }
}

/// `POST /revoke`: an access or a refresh token; either revokes the grant.
pub(crate) async fn revoke(
    AxumState(shared): AxumState<Arc<Shared>>,
    RawQuery(raw): RawQuery,
    body: String,
) -> Response {
    let mut pairs = query_pairs(raw.as_deref());
    pairs.extend(form_urlencoded::parse(body.as_bytes()).into_owned());
    let mut state = shared.lock();
    *state.counters.oauth.entry("revoke".into()).or_default() += 1;
    let Some(token) = get(&pairs, "token") else {
        return OAuthError::invalid_request("Missing required parameter: token").into_response();
    };
    let grant_id = state
        .access_tokens
        .get(token)
        .map(|a| a.grant)
        .or_else(|| state.refresh_tokens.get(token).copied());
    let Some(grant) = grant_id.and_then(|id| state.grants.get_mut(&id)) else {
        return OAuthError::new(
            StatusCode::BAD_REQUEST,
            "invalid_token",
            "Token expired or revoked",
        )
        .into_response();
    };
    if grant.revoked {
        return OAuthError::new(
            StatusCode::BAD_REQUEST,
            "invalid_token",
            "Token expired or revoked",
        )
        .into_response();
    }
    grant.revoked = true;
    let pair = (grant.user.clone(), grant.client_id.clone());
    state.refresh_issued.remove(&pair);
    state.pair_scopes.remove(&pair);
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        "{}",
    )
        .into_response()
}

/// `GET /.well-known/openid-configuration`, pointing at this server.
pub(crate) async fn openid_configuration(AxumState(shared): AxumState<Arc<Shared>>) -> Response {
    let base = &shared.base_url;
    axum::Json(json!({
        "issuer": "https://accounts.google.com",
        "authorization_endpoint": format!("{base}/o/oauth2/v2/auth"),
        "token_endpoint": format!("{base}/token"),
        "revocation_endpoint": format!("{base}/revoke"),
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["plain", "S256"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_scopes_get_the_google_prefix() {
        assert_eq!(
            full_scope("calendar.readonly"),
            "https://www.googleapis.com/auth/calendar.readonly"
        );
        assert_eq!(
            full_scope("https://www.googleapis.com/auth/calendar"),
            "https://www.googleapis.com/auth/calendar"
        );
        assert_eq!(full_scope("openid"), "openid");
    }
}
