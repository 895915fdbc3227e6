//! The Microsoft identity platform's v2.0 endpoints under
//! `/{tenant}/oauth2/v2.0/`: `authorize` (approves at once for the user the
//! `login_hint` names, redirecting with a code) and `token` (authorization
//! code with PKCE, single-use codes; refresh tokens that rotate on every
//! use). Errors in the AAD shape, `error_description` starting with the
//! AADSTS code.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Form;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::Utc;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::state::{token, uuid_like, Access, Code, Grant};
use crate::Shared;

/// The scopes Graph knows by short name; they come back prefixed.
const GRAPH_SCOPES: &[&str] = &[
    "User.Read",
    "Calendars.Read",
    "Calendars.ReadBasic",
    "Calendars.ReadWrite",
    "Calendars.Read.Shared",
    "Calendars.ReadWrite.Shared",
    "MailboxSettings.Read",
];
const OIDC_SCOPES: &[&str] = &["openid", "profile", "email", "offline_access"];
const GRAPH_PREFIX: &str = "https://graph.microsoft.com/";

/// An AAD error answer.
pub(crate) fn aad_error(status: StatusCode, error: &str, code: u32, text: &str) -> Response {
    let trace = uuid_like();
    let correlation = uuid_like();
    let now = Utc::now().format("%Y-%m-%d %H:%M:%SZ").to_string();
    (
        status,
        axum::Json(json!({
            "error": error,
            "error_description": format!("AADSTS{code}: {text} Trace ID: {trace} Correlation ID: {correlation} Timestamp: {now}"),
            "error_codes": [code],
            "timestamp": now,
            "trace_id": trace,
            "correlation_id": correlation,
            "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
        })),
    )
        .into_response()
}

/// The scope list of a request, normalised to short names; `Err` with the
/// unknown one.
fn parse_scopes(scope: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for s in scope.split(' ').filter(|s| !s.is_empty()) {
        let short = s.strip_prefix(GRAPH_PREFIX).unwrap_or(s);
        if GRAPH_SCOPES.contains(&short) || OIDC_SCOPES.contains(&short) {
            if !out.iter().any(|x| x == short) {
                out.push(short.to_string());
            }
        } else {
            return Err(s.chars().take(60).collect());
        }
    }
    Ok(out)
}

fn tenant_ok(tenant: &str) -> bool {
    !tenant.is_empty()
        && tenant.len() <= 100
        && tenant
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

/// `GET /{tenant}/oauth2/v2.0/authorize`.
pub(crate) async fn authorize(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let get = |k: &str| q.get(k).map(String::as_str).unwrap_or("");
    if !tenant_ok(&tenant) {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            "Tenant not found.",
        );
    }
    let mut st = shared.lock();
    let Some(client) = st.clients.get(get("client_id")).cloned() else {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            "Application not found in the directory.",
        );
    };
    if get("redirect_uri") != client.redirect_uri {
        return aad_error(StatusCode::BAD_REQUEST, "invalid_request", 50011, "The redirect URI specified in the request does not match the redirect URIs configured for the application.");
    }
    if get("response_type") != "code" {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "unsupported_response_type",
            70005,
            "response_type must be code.",
        );
    }
    let method = get("code_challenge_method");
    if get("code_challenge").is_empty() || !(method == "S256" || method == "plain") {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            9002325,
            "Proof Key for Code Exchange is required.",
        );
    }
    let scopes = match parse_scopes(get("scope")) {
        Ok(s) if !s.is_empty() => s,
        Ok(_) => {
            return aad_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'scope'.",
            )
        }
        Err(bad) => {
            return aad_error(
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                70011,
                &format!("The provided value for scope {bad} is not valid."),
            )
        }
    };
    let hint = get("login_hint");
    let user = if st.users.contains_key(hint) {
        hint.to_string()
    } else if st.users.len() == 1 {
        st.users.keys().next().cloned().unwrap_or_default()
    } else {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            50034,
            "The user account does not exist in the directory.",
        );
    };
    let code = token(32);
    let challenge = if method == "plain" {
        URL_SAFE_NO_PAD.encode(Sha256::digest(get("code_challenge").as_bytes()))
    } else {
        get("code_challenge").to_string()
    };
    st.codes.insert(
        code.clone(),
        Code {
            client_id: get("client_id").into(),
            user,
            redirect_uri: client.redirect_uri.clone(),
            challenge,
            scopes,
            expires: Utc::now() + chrono::Duration::minutes(10),
            redeemed: false,
        },
    );
    let mut back = form_urlencoded::Serializer::new(String::new());
    back.append_pair("code", &code);
    if !get("state").is_empty() {
        back.append_pair("state", get("state"));
    }
    let sep = if client.redirect_uri.contains('?') {
        '&'
    } else {
        '?'
    };
    let location = format!("{}{sep}{}", client.redirect_uri, back.finish());
    (StatusCode::FOUND, [(header::LOCATION, location)]).into_response()
}

/// `POST /{tenant}/oauth2/v2.0/token`.
fn token_endpoint(shared: &Shared, tenant: &str, f: &HashMap<String, String>) -> Response {
    let get = |k: &str| f.get(k).map(String::as_str).unwrap_or("");
    if !tenant_ok(tenant) {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            "Tenant not found.",
        );
    }
    let mut st = shared.lock();
    match st.clients.get(get("client_id")) {
        Some(c) if c.secret == get("client_secret") => {}
        Some(_) => {
            return aad_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7000215,
                "Invalid client secret provided.",
            )
        }
        None => {
            return aad_error(
                StatusCode::BAD_REQUEST,
                "unauthorized_client",
                700016,
                "Application not found in the directory.",
            )
        }
    }
    let (user, scopes) = match get("grant_type") {
        "authorization_code" => {
            let Some(code) = st.codes.get_mut(get("code")) else {
                return aad_error(StatusCode::BAD_REQUEST, "invalid_grant", 70008, "The provided authorization code or refresh token has expired due to inactivity.");
            };
            if code.redeemed {
                return aad_error(StatusCode::BAD_REQUEST, "invalid_grant", 54005, "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token.");
            }
            if code.expires < Utc::now() {
                return aad_error(StatusCode::BAD_REQUEST, "invalid_grant", 70008, "The provided authorization code or refresh token has expired due to inactivity.");
            }
            if code.client_id != get("client_id") || code.redirect_uri != get("redirect_uri") {
                return aad_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    70000,
                    "The provided value for the 'code' parameter is not valid.",
                );
            }
            let verifier = get("code_verifier");
            if URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) != code.challenge {
                return aad_error(StatusCode::BAD_REQUEST, "invalid_grant", 501481, "The Code_Verifier does not match the code_challenge supplied in the authorization request.");
            }
            code.redeemed = true;
            (code.user.clone(), code.scopes.clone())
        }
        "refresh_token" => {
            let Some(grant) = st.grants.get(get("refresh_token")) else {
                return aad_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    9002313,
                    "Invalid request. Request is malformed or invalid.",
                );
            };
            if grant.client_id != get("client_id") {
                return aad_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    70000,
                    "The refresh token was issued to a different client.",
                );
            }
            if let Some(code) = grant.dead {
                let text = match code {
                    700082 => "The refresh token has expired due to inactivity.",
                    50173 => "The provided grant has expired due to it being revoked, a fresh auth token is needed.",
                    65001 => "The user or administrator has not consented to use the application.",
                    _ => "The provided authorization code or refresh token has expired due to inactivity.",
                };
                return aad_error(StatusCode::BAD_REQUEST, "invalid_grant", code, text);
            }
            (grant.user.clone(), grant.scopes.clone())
        }
        other => {
            return aad_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                70003,
                &format!(
                    "The app requested an unsupported grant type '{}'.",
                    other.chars().take(40).collect::<String>()
                ),
            );
        }
    };
    let access = format!("EwB{}", token(48));
    let claims: serde_json::Value =
        serde_json::from_str(get("claims")).unwrap_or(serde_json::Value::Null);
    let cae = claims["access_token"]["xms_cc"]["values"]
        .as_array()
        .is_some_and(|v| v.iter().any(|x| x == "cp1"));
    let nbf = claims["access_token"]["nbf"]["value"]
        .as_str()
        .map(str::to_string);
    st.access.insert(
        access.clone(),
        Access {
            user: user.clone(),
            scopes: scopes.clone(),
            expires: Utc::now() + chrono::Duration::seconds(shared.config.access_token_seconds),
            cae,
            nbf,
        },
    );
    let mut body = json!({
        "token_type": "Bearer",
        "scope": scopes.iter().filter(|s| *s != "offline_access").map(|s| if GRAPH_SCOPES.contains(&s.as_str()) { format!("{GRAPH_PREFIX}{s}") } else { s.clone() }).collect::<Vec<_>>().join(" "),
        "expires_in": shared.config.access_token_seconds,
        "ext_expires_in": shared.config.access_token_seconds,
        "access_token": access,
    });
    if scopes.iter().any(|s| s == "offline_access") {
        let refresh = format!("M.C5{}", token(64));
        st.grants.insert(
            refresh.clone(),
            Grant {
                client_id: get("client_id").into(),
                user,
                scopes,
                dead: None,
            },
        );
        body["refresh_token"] = json!(refresh);
    }
    (
        StatusCode::OK,
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(body),
    )
        .into_response()
}

/// The axum handler of the token endpoint.
pub(crate) async fn token_route(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    token_endpoint(&shared, &tenant, &f)
}
