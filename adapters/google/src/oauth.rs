//! Google OAuth 2.0 through the `oauth2` crate: the consent URL of the
//! authorization-code flow (PKCE S256 with the scheduler's challenge,
//! offline access, forced consent), the code exchange and refreshes,
//! revocation, and the check that the scopes Google granted (the user may
//! untick some) cover the account's access level. Tokens live only inside
//! the call that uses them; none is logged.

use std::borrow::Cow;
use std::time::Duration;

use chrono::{DateTime, Utc};
use oauth2::basic::{BasicClient, BasicErrorResponseType, BasicTokenResponse};
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet,
    EndpointSet, HttpClientError, PkceCodeVerifier, RedirectUrl, RefreshToken, RequestTokenError,
    Scope, TokenResponse, TokenUrl,
};

use calbridge::pb::AccessLevel;
use calbridge::Invalid;
use calbridge_runtime::metrics::ProviderRequest;
use calbridge_runtime::Secret;
use tracing::Instrument as _;

use crate::client::{error_type, PROVIDER};
use crate::config::Validated;
use crate::error::GoogleError;

/// The prefix of every Calendar scope.
pub const SCOPE_PREFIX: &str = "https://www.googleapis.com/auth/";

/// The scopes (short form) requested for an access level; `None` for
/// UNSPECIFIED. FREE_BUSY asks for no event access at all.
pub fn scopes_for(level: AccessLevel) -> Option<&'static [&'static str]> {
    match level {
        AccessLevel::ReadWrite => Some(&["calendar.events", "calendar.calendarlist.readonly"]),
        AccessLevel::Read => Some(&["calendar.events.readonly", "calendar.calendarlist.readonly"]),
        AccessLevel::FreeBusy => Some(&["calendar.freebusy", "calendar.calendarlist.readonly"]),
        AccessLevel::Unspecified => None,
    }
}

/// The full URL form of a short scope name.
pub fn full_scope(short: &str) -> String {
    format!("{SCOPE_PREFIX}{short}")
}

/// The granted scopes that also give what `needed` gives (Google's method
/// tables: a broader scope covers a narrower one).
fn covering(needed: &str) -> &'static [&'static str] {
    match needed {
        "calendar.events" => &["calendar", "calendar.events"],
        "calendar.events.readonly" => &[
            "calendar",
            "calendar.readonly",
            "calendar.events",
            "calendar.events.readonly",
        ],
        "calendar.calendarlist.readonly" => &[
            "calendar",
            "calendar.readonly",
            "calendar.calendarlist",
            "calendar.calendarlist.readonly",
        ],
        "calendar.freebusy" => &[
            "calendar",
            "calendar.readonly",
            "calendar.freebusy",
            "calendar.events.freebusy",
        ],
        _ => &[],
    }
}

/// The scopes (full form) the access level needs that `granted` does not
/// cover; empty when the grant suffices.
pub fn missing_scopes(level: AccessLevel, granted: &[String]) -> Vec<String> {
    let short: Vec<&str> = granted
        .iter()
        .map(|g| g.strip_prefix(SCOPE_PREFIX).unwrap_or(g))
        .collect();
    scopes_for(level)
        .unwrap_or(&[])
        .iter()
        .filter(|needed| !covering(needed).iter().any(|c| short.contains(c)))
        .map(|s| full_scope(s))
        .collect()
}

/// Tokens as Google answered them.
#[derive(Debug, Clone)]
pub struct Tokens {
    /// The access token.
    pub access_token: Secret,
    /// The refresh token, when Google sent one.
    pub refresh_token: Option<Secret>,
    /// When the access token expires, when Google said.
    pub expires_at: Option<DateTime<Utc>>,
    /// The granted scopes, when Google listed them.
    pub scopes: Option<Vec<String>>,
}

impl Tokens {
    fn from_response(r: &BasicTokenResponse, now: DateTime<Utc>) -> Tokens {
        Tokens {
            access_token: Secret::new(r.access_token().secret().clone()),
            refresh_token: r
                .refresh_token()
                .map(|t| Secret::new(t.secret().clone()))
                .filter(|t| !t.expose().is_empty()),
            expires_at: r
                .expires_in()
                .and_then(|d| chrono::Duration::from_std(d).ok())
                .map(|d| now + d),
            scopes: r
                .scopes()
                .map(|s| s.iter().map(|s| s.to_string()).collect()),
        }
    }
}

type GoogleClient =
    BasicClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

/// The adapter's OAuth client at Google.
pub struct OAuth {
    client: GoogleClient,
    http: reqwest::Client,
    revoke_url: reqwest::Url,
}

/// What an OAuth request is for, to name failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grant {
    Code,
    Refresh,
}

/// True for an S256 PKCE challenge or a verifier: 43 to 128 unreserved
/// characters (RFC 7636).
fn pkce_shaped(s: &str) -> bool {
    (43..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

fn redirect_url(field: &str, uri: &str) -> Result<RedirectUrl, Invalid> {
    match reqwest::Url::parse(uri) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
            RedirectUrl::new(uri.to_string())
                .map_err(|_| Invalid::field(field, "must be an absolute http(s) URL"))
        }
        _ => Err(Invalid::field(field, "must be an absolute http(s) URL")),
    }
}

fn required_level(level: AccessLevel) -> Result<&'static [&'static str], Invalid> {
    scopes_for(level).ok_or_else(|| Invalid::field("access_level", "must be set"))
}

impl OAuth {
    /// The client configured by `v`, sending requests with `http` (which
    /// must not follow redirects).
    pub fn new(v: &Validated, http: reqwest::Client) -> Self {
        let client = BasicClient::new(ClientId::new(v.client.client_id.clone()))
            .set_client_secret(ClientSecret::new(
                v.client.client_secret.expose().to_string(),
            ))
            .set_auth_uri(AuthUrl::from_url(v.auth_url.clone()))
            .set_token_uri(TokenUrl::from_url(v.token_url.clone()))
            // Google documents the client credentials in the form body.
            .set_auth_type(AuthType::RequestBody);
        OAuth {
            client,
            http,
            revoke_url: v.revoke_url.clone(),
        }
    }

    /// The HTTP client token requests named `operation` (in metrics) go
    /// through.
    fn token_client(&self, operation: &'static str) -> TokenClient {
        TokenClient {
            http: self.http.clone(),
            operation,
        }
    }

    /// The consent URL for `level`: authorization code with PKCE S256
    /// (the scheduler's `state` and challenge), offline access, consent
    /// forced (so Google issues a refresh token every time), no incremental
    /// authorization, and the login hint when given.
    pub fn authorization_url(
        &self,
        level: AccessLevel,
        redirect_uri: &str,
        state: &str,
        code_challenge: &str,
        login_hint: &str,
    ) -> Result<String, GoogleError> {
        let mut inv = Invalid::default();
        let scopes = match required_level(level) {
            Ok(s) => s,
            Err(i) => {
                inv.0.extend(i.0);
                &[]
            }
        };
        let redirect = match redirect_url("redirect_uri", redirect_uri) {
            Ok(r) => Some(r),
            Err(i) => {
                inv.0.extend(i.0);
                None
            }
        };
        if state.is_empty() || state.len() > 1024 {
            inv.push("state", "must be 1 to 1024 characters");
        }
        if !pkce_shaped(code_challenge) {
            inv.push(
                "code_challenge",
                "must be an S256 challenge: 43 to 128 characters of [A-Za-z0-9-._~]",
            );
        }
        if login_hint.len() > 320 {
            inv.push("login_hint", "must be at most 320 bytes");
        }
        inv.into_result()?;
        let state = state.to_string();
        let mut request = self
            .client
            .authorize_url(move || CsrfToken::new(state))
            .add_scopes(scopes.iter().map(|s| Scope::new(full_scope(s))))
            .set_redirect_uri(Cow::Owned(redirect.expect("checked")))
            // The scheduler keeps the verifier; only its challenge is here.
            .add_extra_param("code_challenge", code_challenge.to_string())
            .add_extra_param("code_challenge_method", "S256")
            .add_extra_param("access_type", "offline")
            .add_extra_param("prompt", "consent");
        if !login_hint.is_empty() {
            request = request.add_extra_param("login_hint", login_hint.to_string());
        }
        Ok(request.url().0.to_string())
    }

    /// Exchanges an authorization code (with the PKCE verifier and the exact
    /// redirect URI of the consent URL) for tokens.
    pub async fn exchange(
        &self,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
    ) -> Result<Tokens, GoogleError> {
        let mut inv = Invalid::default();
        if code.is_empty() {
            inv.push("code", "must not be empty");
        }
        if !pkce_shaped(verifier) {
            inv.push(
                "code_verifier",
                "must be 43 to 128 characters of [A-Za-z0-9-._~]",
            );
        }
        let redirect = redirect_url("redirect_uri", redirect_uri);
        if let Err(i) = &redirect {
            inv.0.extend(i.0.clone());
        }
        inv.into_result()?;
        let now = Utc::now();
        let response = self
            .client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .set_pkce_verifier(PkceCodeVerifier::new(verifier.to_string()))
            .set_redirect_uri(Cow::Owned(redirect.expect("checked")))
            .request_async(&self.token_client("oauth.token.code"))
            .await
            .map_err(|e| token_error(e, Grant::Code))?;
        Ok(Tokens::from_response(&response, now))
    }

    /// Refreshes an access token. UNAUTHENTICATED for `invalid_grant`.
    pub async fn refresh(&self, refresh_token: &str) -> Result<Tokens, GoogleError> {
        if refresh_token.is_empty() {
            return Err(GoogleError::Unauthenticated(
                "the credentials hold no refresh token: the account needs re-authorisation".into(),
            ));
        }
        let now = Utc::now();
        let token = RefreshToken::new(refresh_token.to_string());
        let response = self
            .client
            .exchange_refresh_token(&token)
            .request_async(&self.token_client("oauth.token.refresh"))
            .await
            .map_err(|e| token_error(e, Grant::Refresh))?;
        Ok(Tokens::from_response(&response, now))
    }

    /// Revokes a token at Google's revocation endpoint (`POST` with the
    /// form field `token`; a refresh token revokes the whole grant). True
    /// when Google confirmed, or said the token was already invalid.
    ///
    /// Sent by hand rather than through the `oauth2` crate, which insists
    /// on an `https` endpoint (the fake in tests speaks plain HTTP) and on
    /// RFC 7009 client authentication Google does not ask for.
    pub async fn revoke(&self, token: &str) -> Result<bool, GoogleError> {
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("token", token)
            .finish();
        let mut sent = ProviderRequest::start(
            PROVIDER,
            "oauth.revoke",
            &reqwest::Method::POST,
            &self.revoke_url,
        );
        let response = self
            .http
            .post(self.revoke_url.clone())
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body)
            .send()
            .instrument(sent.span().clone())
            .await
            .map_err(|e| {
                sent.error(error_type(&e));
                GoogleError::Unavailable("cannot reach Google's revocation endpoint".into(), None)
            })?;
        let status = response.status();
        sent.status(status.as_u16());
        if status.is_success() {
            return Ok(true);
        }
        let error = response
            .json::<serde_json::Value>()
            .await
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or_default();
        drop(sent);
        match (status.as_u16(), error.as_str()) {
            // Already revoked or expired: nothing is left to revoke.
            (400, "invalid_token" | "invalid_grant") => Ok(true),
            (429, _) | (500..=599, _) => Err(GoogleError::Unavailable(
                format!("Google's revocation endpoint answered {}", status.as_u16()),
                Some(Duration::from_secs(5)),
            )),
            (s, e) => Err(GoogleError::Protocol(format!(
                "the revocation endpoint answered {s} ({e:.40})"
            ))),
        }
    }
}

/// The `oauth2` crate's HTTP client for token requests: sends as its own
/// reqwest client would, in a provider request span with a duration
/// sample under a fixed operation name.
struct TokenClient {
    http: reqwest::Client,
    operation: &'static str,
}

impl<'c> oauth2::AsyncHttpClient<'c> for TokenClient {
    type Error = HttpClientError<reqwest::Error>;
    type Future = std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<oauth2::HttpResponse, Self::Error>> + Send + 'c,
        >,
    >;

    fn call(&'c self, request: oauth2::HttpRequest) -> Self::Future {
        Box::pin(send_token_request(
            self.http.clone(),
            self.operation,
            request,
        ))
    }
}

/// Sends one token-endpoint request (see [`TokenClient`]).
async fn send_token_request(
    http: reqwest::Client,
    operation: &'static str,
    request: oauth2::HttpRequest,
) -> Result<oauth2::HttpResponse, HttpClientError<reqwest::Error>> {
    let url = reqwest::Url::parse(&request.uri().to_string())
        .map_err(|_| HttpClientError::Other("the token endpoint is not a URL".into()))?;
    let mut sent = ProviderRequest::start(PROVIDER, operation, request.method(), &url);
    let request: reqwest::Request = request.try_into().map_err(Box::new)?;
    let span = sent.span().clone();
    let response = match http.execute(request).instrument(span).await {
        Ok(r) => r,
        Err(e) => {
            sent.error(error_type(&e));
            return Err(HttpClientError::Reqwest(Box::new(e)));
        }
    };
    sent.status(response.status().as_u16());
    let mut builder = oauth2::http::Response::builder()
        .status(response.status())
        .version(response.version());
    for (name, value) in response.headers() {
        builder = builder.header(name, value);
    }
    let body = match response.bytes().await {
        Ok(b) => b,
        Err(e) => {
            sent.error(error_type(&e));
            return Err(HttpClientError::Reqwest(Box::new(e)));
        }
    };
    builder.body(body.to_vec()).map_err(HttpClientError::Http)
}

/// Maps a token-endpoint failure; never quotes the response body.
fn token_error<RE: std::error::Error + 'static>(
    e: RequestTokenError<RE, oauth2::basic::BasicErrorResponse>,
    grant: Grant,
) -> GoogleError {
    match e {
        RequestTokenError::ServerResponse(r) => match r.error() {
            BasicErrorResponseType::InvalidGrant => GoogleError::Unauthenticated(match grant {
                Grant::Code => {
                    "Google refused the authorization code (invalid, expired, already used, or another redirect URI or verifier)".into()
                }
                Grant::Refresh => {
                    "Google refused the refresh token (invalid_grant: expired or revoked); the account needs re-authorisation".into()
                }
            }),
            BasicErrorResponseType::InvalidClient | BasicErrorResponseType::UnauthorizedClient => {
                GoogleError::Config(
                    "Google refused the adapter's OAuth client id or secret".into(),
                )
            }
            BasicErrorResponseType::InvalidScope => GoogleError::Invalid(Invalid::field(
                "access_level",
                "Google refused the requested scopes",
            )),
            other => GoogleError::Protocol(format!(
                "the token endpoint answered {:.40}",
                other.as_ref()
            )),
        },
        RequestTokenError::Request(_) => {
            GoogleError::Unavailable("cannot reach Google's token endpoint".into(), None)
        }
        // Non-JSON or empty answers: an outage page or a proxy error.
        RequestTokenError::Parse(..) | RequestTokenError::Other(_) => GoogleError::Unavailable(
            "Google's token endpoint answered unexpectedly".into(),
            Some(Duration::from_secs(5)),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClientCredentials;

    fn oauth() -> OAuth {
        let v = Validated {
            client: ClientCredentials {
                client_id: "client-1.apps.googleusercontent.com".into(),
                client_secret: Secret::new("s3cret"),
            },
            auth_url: "https://accounts.google.com/o/oauth2/v2/auth"
                .parse()
                .unwrap(),
            token_url: "https://oauth2.googleapis.com/token".parse().unwrap(),
            revoke_url: "https://oauth2.googleapis.com/revoke".parse().unwrap(),
            api_base_url: "https://www.googleapis.com/calendar/v3/".parse().unwrap(),
            webhook_public_url: None,
        };
        OAuth::new(&v, reqwest::Client::new())
    }

    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    fn query(url: &str) -> Vec<(String, String)> {
        reqwest::Url::parse(url)
            .unwrap()
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    fn get<'a>(q: &'a [(String, String)], k: &str) -> Option<&'a str> {
        q.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str())
    }

    #[test]
    fn the_consent_url_asks_for_offline_access_with_pkce_and_the_levels_scopes() {
        let url = oauth()
            .authorization_url(
                AccessLevel::ReadWrite,
                "https://app.example.com/oauth/callback",
                "state-123",
                CHALLENGE,
                "alice@example.com",
            )
            .unwrap();
        assert!(url.starts_with("https://accounts.google.com/o/oauth2/v2/auth?"));
        let q = query(&url);
        assert_eq!(get(&q, "response_type"), Some("code"));
        assert_eq!(
            get(&q, "client_id"),
            Some("client-1.apps.googleusercontent.com")
        );
        assert_eq!(
            get(&q, "redirect_uri"),
            Some("https://app.example.com/oauth/callback")
        );
        assert_eq!(get(&q, "state"), Some("state-123"));
        assert_eq!(get(&q, "code_challenge"), Some(CHALLENGE));
        assert_eq!(get(&q, "code_challenge_method"), Some("S256"));
        assert_eq!(get(&q, "access_type"), Some("offline"));
        assert_eq!(get(&q, "prompt"), Some("consent"));
        assert_eq!(get(&q, "login_hint"), Some("alice@example.com"));
        assert_eq!(get(&q, "include_granted_scopes"), None);
        assert_eq!(
            get(&q, "scope"),
            Some("https://www.googleapis.com/auth/calendar.events https://www.googleapis.com/auth/calendar.calendarlist.readonly")
        );
        assert!(!url.contains("s3cret"));
    }

    #[test]
    fn free_busy_asks_for_no_event_access() {
        let url = oauth()
            .authorization_url(
                AccessLevel::FreeBusy,
                "http://127.0.0.1:8080/cb",
                "s",
                CHALLENGE,
                "",
            )
            .unwrap();
        let q = query(&url);
        let scope = get(&q, "scope").unwrap();
        assert_eq!(
            scope,
            "https://www.googleapis.com/auth/calendar.freebusy https://www.googleapis.com/auth/calendar.calendarlist.readonly"
        );
        assert!(!scope.contains("events"));
        assert_eq!(get(&q, "login_hint"), None);
        let read = oauth()
            .authorization_url(
                AccessLevel::Read,
                "http://127.0.0.1:8080/cb",
                "s",
                CHALLENGE,
                "",
            )
            .unwrap();
        assert!(get(&query(&read), "scope")
            .unwrap()
            .starts_with("https://www.googleapis.com/auth/calendar.events.readonly "));
    }

    #[test]
    fn bad_consent_requests_name_every_field() {
        let e = oauth()
            .authorization_url(AccessLevel::Unspecified, "/cb", "", "short", "")
            .unwrap_err();
        let GoogleError::Invalid(inv) = e else {
            panic!("{e:?}")
        };
        let fields: Vec<&str> = inv.0.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            vec!["access_level", "redirect_uri", "state", "code_challenge"]
        );
    }

    #[test]
    fn granted_scopes_are_checked_against_the_access_level() {
        let s = |v: &[&str]| v.iter().map(|x| full_scope(x)).collect::<Vec<_>>();
        assert!(missing_scopes(
            AccessLevel::ReadWrite,
            &s(&["calendar.events", "calendar.calendarlist.readonly"])
        )
        .is_empty());
        assert_eq!(
            missing_scopes(
                AccessLevel::ReadWrite,
                &s(&["calendar.calendarlist.readonly"])
            ),
            vec![full_scope("calendar.events")]
        );
        // A read-only grant does not cover writes.
        assert_eq!(
            missing_scopes(
                AccessLevel::ReadWrite,
                &s(&["calendar.events.readonly", "calendar.calendarlist.readonly"])
            ),
            vec![full_scope("calendar.events")]
        );
        // Broader scopes cover narrower ones.
        assert!(missing_scopes(AccessLevel::ReadWrite, &s(&["calendar"])).is_empty());
        assert!(missing_scopes(AccessLevel::Read, &s(&["calendar.readonly"])).is_empty());
        assert!(missing_scopes(
            AccessLevel::Read,
            &s(&["calendar.events", "calendar.calendarlist"])
        )
        .is_empty());
        // Free/busy needs free/busy and the calendar list.
        assert_eq!(
            missing_scopes(AccessLevel::FreeBusy, &s(&["calendar.events.readonly"])),
            vec![
                full_scope("calendar.freebusy"),
                full_scope("calendar.calendarlist.readonly")
            ]
        );
        assert!(missing_scopes(
            AccessLevel::FreeBusy,
            &s(&["calendar.events.freebusy", "calendar.calendarlist.readonly"])
        )
        .is_empty());
        // Short forms are read too.
        assert!(missing_scopes(
            AccessLevel::FreeBusy,
            &[
                "calendar.freebusy".to_string(),
                "calendar.calendarlist.readonly".to_string()
            ]
        )
        .is_empty());
    }

    #[test]
    fn pkce_values_are_shape_checked() {
        assert!(pkce_shaped(CHALLENGE));
        assert!(pkce_shaped("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"));
        assert!(!pkce_shaped("too-short"));
        assert!(!pkce_shaped(&"a".repeat(129)));
        assert!(!pkce_shaped(&format!("{}+", "a".repeat(43))));
    }
}
