//! Error answers in Google's two shapes: the Calendar API's
//! `{"error":{"code","message","errors":[{domain,reason,message,locationType,location}]}}`
//! and the OAuth endpoints' `{"error","error_description"}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// A Calendar API error answer (boxed: it travels in many `Result`s).
#[derive(Debug, Clone)]
pub(crate) struct ApiError(Box<ApiErrorBody>);

/// What an [`ApiError`] says.
#[derive(Debug, Clone)]
pub(crate) struct ApiErrorBody {
    pub status: StatusCode,
    pub domain: &'static str,
    pub reason: String,
    pub message: String,
    /// `(locationType, location)`, e.g. `("parameter", "timeMax")`.
    pub location: Option<(&'static str, String)>,
    pub retry_after: Option<u64>,
}

impl std::ops::Deref for ApiError {
    type Target = ApiErrorBody;

    fn deref(&self) -> &ApiErrorBody {
        &self.0
    }
}

impl std::ops::DerefMut for ApiError {
    fn deref_mut(&mut self) -> &mut ApiErrorBody {
        &mut self.0
    }
}

impl ApiError {
    pub(crate) fn new(
        status: StatusCode,
        domain: &'static str,
        reason: &str,
        message: &str,
    ) -> Self {
        Self(Box::new(ApiErrorBody {
            status,
            domain,
            reason: reason.to_string(),
            message: message.to_string(),
            location: None,
            retry_after: None,
        }))
    }

    /// Names the query parameter at fault.
    pub(crate) fn at_param(mut self, name: &str) -> Self {
        self.location = Some(("parameter", name.to_string()));
        self
    }

    /// Names the header at fault.
    pub(crate) fn at_header(mut self, name: &str) -> Self {
        self.location = Some(("header", name.to_string()));
        self
    }

    pub(crate) fn bad_request(reason: &str, message: &str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "global", reason, message)
    }

    pub(crate) fn invalid(message: &str) -> Self {
        Self::bad_request("invalid", message)
    }

    pub(crate) fn parse_error() -> Self {
        Self::bad_request("parseError", "Parse Error")
    }

    pub(crate) fn required(what: &str) -> Self {
        Self::bad_request("required", &format!("Missing {what}."))
    }

    pub(crate) fn time_range_empty() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "calendar",
            "timeRangeEmpty",
            "The specified time range is empty.",
        )
        .at_param("timeMax")
    }

    pub(crate) fn auth_error() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "global",
            "authError",
            "Invalid Credentials",
        )
        .at_header("Authorization")
    }

    pub(crate) fn login_required() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "global",
            "required",
            "Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
        )
        .at_header("Authorization")
    }

    pub(crate) fn insufficient_permissions() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "global",
            "insufficientPermissions",
            "Request had insufficient authentication scopes.",
        )
    }

    pub(crate) fn forbidden(reason: &str, message: &str) -> Self {
        Self::new(StatusCode::FORBIDDEN, "calendar", reason, message)
    }

    pub(crate) fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "global", "notFound", "Not Found")
    }

    pub(crate) fn duplicate() -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "global",
            "duplicate",
            "The requested identifier already exists.",
        )
    }

    pub(crate) fn deleted() -> Self {
        Self::new(
            StatusCode::GONE,
            "global",
            "deleted",
            "Resource has been deleted",
        )
    }

    pub(crate) fn condition_not_met() -> Self {
        Self::new(
            StatusCode::PRECONDITION_FAILED,
            "global",
            "conditionNotMet",
            "Precondition Failed",
        )
        .at_header("If-Match")
    }

    pub(crate) fn full_sync_required() -> Self {
        Self::new(
            StatusCode::GONE,
            "calendar",
            "fullSyncRequired",
            "Sync token is no longer valid, a full sync is required.",
        )
        .at_param("syncToken")
    }

    /// The body Google sends.
    pub(crate) fn body(&self) -> Value {
        let mut item =
            json!({"domain": self.domain, "reason": self.reason, "message": self.message});
        if let Some((kind, location)) = &self.location {
            item["locationType"] = json!(kind);
            item["location"] = json!(location);
        }
        json!({"error": {"code": self.status.as_u16(), "message": self.message, "errors": [item]}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        let headers = response.headers_mut();
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(
                    "Bearer realm=\"https://accounts.google.com/\", error=\"invalid_token\"",
                ),
            );
        }
        response
    }
}

/// An OAuth endpoint error answer (`/token`, `/revoke`).
#[derive(Debug, Clone)]
pub(crate) struct OAuthError {
    pub status: StatusCode,
    pub error: String,
    pub description: String,
    pub retry_after: Option<u64>,
}

impl OAuthError {
    pub(crate) fn new(status: StatusCode, error: &str, description: &str) -> Self {
        Self {
            status,
            error: error.to_string(),
            description: description.to_string(),
            retry_after: None,
        }
    }

    pub(crate) fn invalid_grant(description: &str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_grant", description)
    }

    pub(crate) fn expired_or_revoked() -> Self {
        Self::invalid_grant("Token has been expired or revoked.")
    }

    pub(crate) fn invalid_request(description: &str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    pub(crate) fn invalid_client() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_client", "Unauthorized")
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = json!({"error": self.error, "error_description": self.description});
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
