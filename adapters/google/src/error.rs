//! The Google adapter's errors and their one mapping to the contract's
//! [`ErrorKind`] (and from there to `tonic::Status`). Messages carry no
//! tokens, event content or raw response bodies: Google's answers are
//! reduced to their HTTP status and `errors[0].reason`.

use std::time::Duration;

use calbridge::{ErrorKind, Invalid};

/// Why a Google operation failed, in meanings rather than status numbers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GoogleError {
    /// Google rejected the credentials (after one refresh attempt), or
    /// refused to refresh them (`invalid_grant`).
    #[error("{0}")]
    Unauthenticated(String),
    /// The credentials work but lack the right (scope, ACL, read-only
    /// calendar).
    #[error("{0}")]
    Forbidden(String),
    /// The granted scopes lack what the access level needs.
    #[error("Google granted too little access: missing scope {}", .0.join(", "))]
    MissingScopes(Vec<String>),
    /// The calendar or event does not exist (or is gone).
    #[error("{0} not found at Google")]
    NotFound(String),
    /// An `If-Match` precondition failed.
    #[error("the event changed at Google since it was read (version mismatch)")]
    VersionConflict {
        /// The event's current etag, when known.
        current: Option<String>,
    },
    /// An insert named an id that already exists (409 `duplicate`).
    #[error("an event with this id already exists at Google")]
    Duplicate,
    /// The sync token (or our cursor) is no longer valid.
    #[error("the Google sync token is no longer valid; resync from scratch")]
    SyncTokenExpired,
    /// The request cannot be expressed at Google.
    #[error("{0}")]
    Invalid(Invalid),
    /// Google is rate limiting this user or project.
    #[error("Google is rate limiting requests ({0})")]
    RateLimited(String, Option<Duration>),
    /// Google could not be reached or failed.
    #[error("Google is unavailable: {0}")]
    Unavailable(String, Option<Duration>),
    /// Google answered something this adapter cannot use.
    #[error("unexpected answer from Google: {0}")]
    Protocol(String),
    /// The operation is not offered.
    #[error("{0}")]
    Unsupported(String),
    /// The adapter itself is misconfigured (its OAuth client was refused).
    #[error("{0}")]
    Config(String),
}

impl From<Invalid> for GoogleError {
    fn from(i: Invalid) -> Self {
        GoogleError::Invalid(i)
    }
}

impl From<GoogleError> for ErrorKind {
    fn from(e: GoogleError) -> ErrorKind {
        let message = e.to_string();
        match e {
            GoogleError::Unauthenticated(_) => ErrorKind::Unauthenticated(message),
            GoogleError::Forbidden(_) | GoogleError::MissingScopes(_) => {
                ErrorKind::PermissionDenied(message)
            }
            GoogleError::NotFound(_) => ErrorKind::NotFound(message),
            GoogleError::VersionConflict { current } => ErrorKind::Conflict {
                message,
                current_version: current,
            },
            GoogleError::Duplicate => ErrorKind::Conflict {
                message,
                current_version: None,
            },
            GoogleError::SyncTokenExpired => ErrorKind::OutOfRange(message),
            GoogleError::Invalid(i) => ErrorKind::Invalid(i),
            GoogleError::RateLimited(_, retry_after) => ErrorKind::RateLimited {
                message,
                retry_after,
            },
            GoogleError::Unavailable(_, retry_after) => ErrorKind::Unavailable {
                message,
                retry_after,
            },
            // A garbled answer is usually a transient fault (a proxy's
            // error page, a cut body): worth a retry.
            GoogleError::Protocol(_) => ErrorKind::Unavailable {
                message,
                retry_after: None,
            },
            GoogleError::Unsupported(_) => ErrorKind::Unimplemented(message),
            GoogleError::Config(_) => ErrorKind::Internal(message),
        }
    }
}

impl From<GoogleError> for tonic::Status {
    fn from(e: GoogleError) -> tonic::Status {
        ErrorKind::from(e).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;
    use tonic_types::StatusExt;

    #[test]
    fn google_errors_map_to_the_contract_codes() {
        let cases = [
            (
                GoogleError::Unauthenticated("x".into()),
                Code::Unauthenticated,
            ),
            (GoogleError::Forbidden("x".into()), Code::PermissionDenied),
            (
                GoogleError::MissingScopes(vec!["s".into()]),
                Code::PermissionDenied,
            ),
            (GoogleError::NotFound("event".into()), Code::NotFound),
            (GoogleError::SyncTokenExpired, Code::OutOfRange),
            (
                GoogleError::Invalid(Invalid::field("f", "bad")),
                Code::InvalidArgument,
            ),
            (
                GoogleError::RateLimited("x".into(), None),
                Code::ResourceExhausted,
            ),
            (
                GoogleError::Unavailable("x".into(), None),
                Code::Unavailable,
            ),
            (GoogleError::Unsupported("x".into()), Code::Unimplemented),
            (GoogleError::Config("x".into()), Code::Internal),
            (
                GoogleError::VersionConflict { current: None },
                Code::Aborted,
            ),
        ];
        for (e, code) in cases {
            assert_eq!(tonic::Status::from(e).code(), code);
        }
    }

    #[test]
    fn a_version_conflict_carries_the_current_etag_trailer() {
        let status = tonic::Status::from(GoogleError::VersionConflict {
            current: Some("\"3181161784712000\"".into()),
        });
        assert_eq!(
            status
                .metadata()
                .get(calbridge::metadata::CURRENT_VERSION)
                .and_then(|v| v.to_str().ok()),
            Some("\"3181161784712000\"")
        );
    }

    #[test]
    fn rate_limits_carry_retry_info() {
        let status = tonic::Status::from(GoogleError::RateLimited(
            "userRateLimitExceeded".into(),
            Some(Duration::from_secs(3)),
        ));
        assert_eq!(
            status.get_details_retry_info().and_then(|r| r.retry_delay),
            Some(Duration::from_secs(3))
        );
    }

    #[test]
    fn missing_scopes_are_named() {
        let e = GoogleError::MissingScopes(vec![
            "https://www.googleapis.com/auth/calendar.events".into()
        ]);
        assert!(e.to_string().contains("calendar.events"));
    }
}
