//! OAuth 2.0 on the Microsoft identity platform (v2.0 endpoints, tenant
//! segment from the configuration): the consent URL (authorization code
//! with PKCE S256, `offline_access` so a refresh token is issued), the code
//! exchange, and refreshes (each answer carries a new refresh token, which
//! the scheduler stores). Error answers are read by their AADSTS number:
//! expired, revoked or un-consented grants mean the user must sign in
//! again; an administrator-consent requirement is reported as such.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::Url;
use serde::Deserialize;

use calbridge::pb::AccessLevel;
use calbridge_runtime::metrics::{self, ProviderRequest};
use calbridge_runtime::Secret;
use tracing::Instrument as _;

use crate::client::{error_type, PROVIDER};
use crate::config::Validated;
use crate::error::GraphError;
use crate::retry::parse_retry_after;

/// Graph's resource prefix for scopes.
pub const GRAPH_PREFIX: &str = "https://graph.microsoft.com/";
/// Largest token answer read.
const MAX_TOKEN_BODY: usize = 64 << 10;

/// The scopes an access level asks for (short Graph names; sent with
/// `openid` and `offline_access`). FREE_BUSY asks for `Calendars.Read`,
/// the least privilege `getSchedule` accepts; the adapter strips content
/// from everything it returns for such accounts.
pub fn scopes_for(level: AccessLevel) -> Option<&'static [&'static str]> {
    match level {
        AccessLevel::Unspecified => None,
        AccessLevel::FreeBusy => Some(&["User.Read", "Calendars.Read"]),
        AccessLevel::Read => Some(&["User.Read", "Calendars.Read", "MailboxSettings.Read"]),
        AccessLevel::ReadWrite => {
            Some(&["User.Read", "Calendars.ReadWrite", "MailboxSettings.Read"])
        }
    }
}

/// A scope without Graph's resource prefix.
pub fn short_scope(s: &str) -> &str {
    s.strip_prefix(GRAPH_PREFIX).unwrap_or(s)
}

/// The calendar scopes `level` needs that `granted` lacks (ReadWrite
/// covers Read).
pub fn missing_scopes(level: AccessLevel, granted: &[String]) -> Vec<String> {
    let has = |s: &str| {
        granted.iter().any(|g| {
            let g = short_scope(g);
            g.eq_ignore_ascii_case(s)
                || (s == "Calendars.Read" && g.eq_ignore_ascii_case("Calendars.ReadWrite"))
        })
    };
    scopes_for(level)
        .unwrap_or(&[])
        .iter()
        .filter(|s| s.starts_with("Calendars."))
        .filter(|s| !has(s))
        .map(|s| s.to_string())
        .collect()
}

/// Tokens from the token endpoint.
#[derive(Debug)]
pub struct Tokens {
    /// The access token.
    pub access_token: Secret,
    /// The (new) refresh token, when one came.
    pub refresh_token: Option<Secret>,
    /// When the access token expires.
    pub expires_at: DateTime<Utc>,
    /// The granted scopes, short names, when the answer listed them.
    pub scopes: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct TokenBody {
    access_token: Option<String>,
    refresh_token: Option<String>,
    expires_in: Option<i64>,
    scope: Option<String>,
}

#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_codes: Vec<u64>,
    #[serde(default)]
    error_description: String,
}

/// The AADSTS number of an error answer (from `error_codes`, else the
/// description's prefix).
fn aadsts(b: &ErrorBody) -> u32 {
    if let Some(c) = b.error_codes.first() {
        return (*c).min(u32::MAX as u64) as u32;
    }
    b.error_description
        .strip_prefix("AADSTS")
        .map(|r| {
            r.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .and_then(|d| d.parse().ok())
        .unwrap_or(0)
}

/// The meaning of an identity-platform error answer.
pub fn token_error(status: u16, error: &str, code: u32) -> GraphError {
    match (error, code) {
        // Administrator consent required (or the app is blocked by policy).
        (_, 90094 | 90095 | 65004) => GraphError::AdminConsentRequired(code),
        ("invalid_client", _) | ("unauthorized_client", _) => GraphError::Config(format!(
            "Microsoft refused this adapter's application credentials (AADSTS{code}); check the client id and secret"
        )),
        ("invalid_grant" | "interaction_required" | "consent_required", _) => {
            GraphError::Unauthenticated(format!(
                "Microsoft no longer honours this grant (AADSTS{code}); the user must sign in again"
            ))
        }
        ("invalid_scope", _) => GraphError::Config(format!("Microsoft refused the requested scopes (AADSTS{code})")),
        _ if status == 429 => GraphError::Throttled("token endpoint".into(), None),
        _ if status >= 500 => GraphError::Unavailable(format!("the token endpoint answered {status}"), None),
        _ => GraphError::Protocol(format!(
            "the token endpoint answered {status} ({}, AADSTS{code})",
            crate::error::short(error)
        )),
    }
}

/// The OAuth client.
pub struct OAuth {
    http: reqwest::Client,
    client_id: String,
    client_secret: Secret,
    authorize_url: Url,
    token_url: Url,
}

impl OAuth {
    /// The client configured in `v`.
    pub fn new(v: &Validated, http: reqwest::Client) -> Self {
        OAuth {
            http,
            client_id: v.client_id.clone(),
            client_secret: v.client_secret.clone(),
            authorize_url: v.authorize_url.clone(),
            token_url: v.token_url.clone(),
        }
    }

    /// The consent URL for `level`.
    pub fn authorization_url(
        &self,
        level: AccessLevel,
        redirect_uri: &str,
        state: &str,
        code_challenge: &str,
        login_hint: &str,
    ) -> Result<String, calbridge::Invalid> {
        let mut inv = calbridge::Invalid::default();
        let scopes = scopes_for(level);
        if scopes.is_none() {
            inv.push("access_level", "must be set");
        }
        if Url::parse(redirect_uri).is_err() {
            inv.push("redirect_uri", "must be an absolute URL");
        }
        if state.is_empty() || state.len() > 512 {
            inv.push("state", "must be 1 to 512 characters");
        }
        if code_challenge.len() != 43 {
            inv.push(
                "code_challenge",
                "must be a PKCE S256 challenge (43 characters)",
            );
        }
        inv.into_result()?;
        let scope: Vec<String> = ["openid", "offline_access"]
            .iter()
            .map(|s| s.to_string())
            .chain(
                scopes
                    .unwrap_or(&[])
                    .iter()
                    .map(|s| format!("{GRAPH_PREFIX}{s}")),
            )
            .collect();
        let mut url = self.authorize_url.clone();
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("client_id", &self.client_id)
                .append_pair("response_type", "code")
                .append_pair("redirect_uri", redirect_uri)
                .append_pair("response_mode", "query")
                .append_pair("scope", &scope.join(" "))
                .append_pair("state", state)
                .append_pair("code_challenge", code_challenge)
                .append_pair("code_challenge_method", "S256");
            if !login_hint.is_empty() {
                q.append_pair("login_hint", login_hint);
            }
        }
        Ok(url.into())
    }

    /// Exchanges an authorization code.
    pub async fn exchange(
        &self,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
    ) -> Result<Tokens, GraphError> {
        let claims = token_claims(None);
        self.token(
            "oauth.token.code",
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("code_verifier", verifier),
                ("redirect_uri", redirect_uri),
                ("claims", &claims),
            ],
        )
        .await
    }

    /// Redeems a refresh token (the answer carries a new one).
    pub async fn refresh(&self, refresh_token: &str) -> Result<Tokens, GraphError> {
        self.refresh_with(refresh_token, None).await
    }

    /// Redeems a refresh token asking for the claims of a Continuous
    /// Access Evaluation challenge (`challenge`, the decoded JSON of the
    /// 401's `claims`), so the new access token satisfies them.
    pub async fn refresh_with(
        &self,
        refresh_token: &str,
        challenge: Option<&str>,
    ) -> Result<Tokens, GraphError> {
        if refresh_token.is_empty() {
            return Err(GraphError::Unauthenticated(
                "no refresh token is stored; the user must sign in again".into(),
            ));
        }
        let claims = token_claims(challenge);
        self.token(
            "oauth.token.refresh",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
                ("claims", &claims),
            ],
        )
        .await
    }

    /// One token request (`operation` names it in metrics).
    async fn token(
        &self,
        operation: &'static str,
        params: &[(&str, &str)],
    ) -> Result<Tokens, GraphError> {
        let mut form: Vec<(&str, &str)> = vec![
            ("client_id", &self.client_id),
            ("client_secret", self.client_secret.expose()),
        ];
        form.extend_from_slice(params);
        let mut sent =
            ProviderRequest::start(PROVIDER, operation, &reqwest::Method::POST, &self.token_url);
        let resp = self
            .http
            .post(self.token_url.clone())
            .form(&form)
            .send()
            .instrument(sent.span().clone())
            .await
            .map_err(|e| {
                sent.error(error_type(&e));
                GraphError::Unavailable(
                    if e.is_timeout() {
                        "the token endpoint timed out"
                    } else {
                        "the token endpoint is unreachable"
                    }
                    .into(),
                    None,
                )
            })?;
        let status = resp.status().as_u16();
        sent.status(status);
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, Utc::now()));
        if let Some(d) = retry_after {
            metrics::retry_after(PROVIDER, d);
        }
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_TOKEN_BODY as u64)
        {
            sent.error("too_large");
            return Err(GraphError::Protocol("the token answer is too large".into()));
        }
        let body = crate::client::read_capped(resp, MAX_TOKEN_BODY)
            .await
            .map_err(|e| {
                sent.error(match e {
                    crate::client::Capped::TooLarge => "too_large",
                    crate::client::Capped::CutOff => "body",
                });
                GraphError::Protocol("the token answer is too large or cut off".into())
            })?;
        drop(sent);
        if !(200..300).contains(&status) {
            let e: ErrorBody = serde_json::from_slice(&body).unwrap_or_default();
            return Err(match token_error(status, &e.error, aadsts(&e)) {
                GraphError::Throttled(m, None) => GraphError::Throttled(m, retry_after),
                GraphError::Unavailable(m, None) => GraphError::Unavailable(m, retry_after),
                other => other,
            });
        }
        let t: TokenBody = serde_json::from_slice(&body)
            .map_err(|_| GraphError::Protocol("the token answer is not JSON".into()))?;
        let access = t
            .access_token
            .filter(|a| !a.is_empty() && a.len() <= 16 << 10)
            .ok_or_else(|| {
                GraphError::Protocol("the token answer has no usable access token".into())
            })?;
        let lifetime = t.expires_in.unwrap_or(3600).clamp(60, 86_400 * 2);
        Ok(Tokens {
            access_token: Secret::new(access),
            refresh_token: t
                .refresh_token
                .filter(|r| !r.is_empty() && r.len() <= 16 << 10)
                .map(Secret::new),
            expires_at: Utc::now() + chrono::Duration::seconds(lifetime)
                - chrono::Duration::from_std(Duration::from_secs(30)).unwrap_or_default(),
            scopes: t.scope.map(|s| {
                s.split(' ')
                    .filter(|x| !x.is_empty())
                    .take(64)
                    .map(|x| short_scope(x).chars().take(128).collect())
                    .collect()
            }),
        })
    }
}

/// The longest claims challenge accepted.
pub const MAX_CLAIMS: usize = 4096;

/// The `claims` of a token request: the client capability `cp1` (this
/// client handles Continuous Access Evaluation challenges, so Microsoft
/// may revoke its tokens early instead of waiting out their lifetime),
/// merged with a challenge's claims when there is one. A challenge that is
/// not a JSON object is ignored.
pub fn token_claims(challenge: Option<&str>) -> String {
    let mut claims = challenge
        .and_then(|c| serde_json::from_str::<serde_json::Value>(c).ok())
        .filter(serde_json::Value::is_object)
        .unwrap_or_else(|| serde_json::json!({}));
    let access = &mut claims["access_token"];
    if !access.is_object() {
        *access = serde_json::json!({});
    }
    access["xms_cc"] = serde_json::json!({"values": ["cp1"]});
    claims.to_string()
}

/// The claims of a Continuous Access Evaluation challenge in a 401's
/// `WWW-Authenticate` (`Bearer ... error="insufficient_claims",
/// claims="<base64 JSON>"`), decoded; `None` when it is not one.
pub fn claims_challenge(www_authenticate: &str) -> Option<String> {
    use base64::Engine as _;
    if www_authenticate.len() > 2 * MAX_CLAIMS {
        return None;
    }
    let params = www_authenticate.trim().strip_prefix("Bearer")?;
    let mut error = None;
    let mut claims = None;
    for part in params.split(',') {
        let Some((k, v)) = part.trim().split_once('=') else {
            continue;
        };
        let v = v.trim().trim_matches('"');
        match k.trim() {
            "error" => error = Some(v),
            "claims" => claims = Some(v),
            _ => {}
        }
    }
    if error != Some("insufficient_claims") {
        return None;
    }
    let raw = claims?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(raw)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(raw))
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    (text.len() <= MAX_CLAIMS && serde_json::from_str::<serde_json::Value>(&text).is_ok())
        .then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn expired_revoked_and_unconsented_grants_mean_sign_in_again() {
        for code in [70008, 700082, 700084, 50173, 65001, 54005, 70043] {
            let e = token_error(400, "invalid_grant", code);
            assert_eq!(
                tonic::Status::from(e).code(),
                Code::Unauthenticated,
                "{code}"
            );
        }
        let admin = token_error(400, "invalid_grant", 90094);
        assert_eq!(tonic::Status::from(admin).code(), Code::FailedPrecondition);
        let client = token_error(401, "invalid_client", 7000215);
        assert_eq!(tonic::Status::from(client).code(), Code::Internal);
        let b: ErrorBody = serde_json::from_str(
            r#"{"error":"invalid_grant","error_description":"AADSTS700082: expired"}"#,
        )
        .unwrap();
        assert_eq!(aadsts(&b), 700082);
    }

    #[test]
    fn scopes_per_level_and_what_a_grant_lacks() {
        assert!(scopes_for(AccessLevel::ReadWrite)
            .unwrap()
            .contains(&"Calendars.ReadWrite"));
        assert!(!scopes_for(AccessLevel::FreeBusy)
            .unwrap()
            .contains(&"Calendars.ReadWrite"));
        let granted = vec![
            format!("{GRAPH_PREFIX}Calendars.ReadWrite"),
            "openid".into(),
        ];
        assert!(missing_scopes(AccessLevel::Read, &granted).is_empty());
        assert_eq!(
            missing_scopes(AccessLevel::ReadWrite, &["Calendars.Read".into()]),
            vec!["Calendars.ReadWrite".to_string()]
        );
    }

    #[test]
    fn claims_challenges_are_read_and_merged_with_the_client_capability() {
        use base64::Engine as _;
        let challenge = r#"{"access_token":{"nbf":{"essential":true,"value":"1702682181"}}}"#;
        let b64 = base64::engine::general_purpose::STANDARD.encode(challenge);
        let header = format!(
            r#"Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000", error="insufficient_claims", claims="{b64}""#
        );
        let got = claims_challenge(&header).unwrap();
        assert_eq!(got, challenge);
        let merged: serde_json::Value = serde_json::from_str(&token_claims(Some(&got))).unwrap();
        assert_eq!(merged["access_token"]["nbf"]["value"], "1702682181");
        assert_eq!(merged["access_token"]["xms_cc"]["values"][0], "cp1");
        let plain: serde_json::Value = serde_json::from_str(&token_claims(None)).unwrap();
        assert_eq!(
            plain,
            serde_json::json!({"access_token": {"xms_cc": {"values": ["cp1"]}}})
        );
        // Not a claims challenge, or not readable: none.
        assert_eq!(claims_challenge(r#"Bearer error="invalid_token""#), None);
        assert_eq!(
            claims_challenge(r#"Bearer error="insufficient_claims", claims="!!""#),
            None
        );
        assert_eq!(claims_challenge("Basic realm=x"), None);
        let huge = format!(
            r#"Bearer error="insufficient_claims", claims="{}""#,
            "A".repeat(3 * MAX_CLAIMS)
        );
        assert_eq!(claims_challenge(&huge), None);
        // A challenge that is not an object only adds the capability.
        assert!(token_claims(Some("[1]")).contains("cp1"));
    }
}
