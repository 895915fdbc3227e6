//! The Microsoft adapter's errors and their one mapping to the contract's
//! [`ErrorKind`] (and from there to `tonic::Status`). Messages carry no
//! tokens, event content or raw response bodies: Graph's answers are
//! reduced to their status and error code, the identity platform's to
//! their AADSTS number.

use std::time::Duration;

use calbridge::{ErrorKind, Invalid};

/// Why a Graph or identity-platform operation failed, in meanings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    /// The credentials were rejected (after one refresh attempt), or the
    /// grant is gone (`invalid_grant`): the user must sign in again.
    #[error("{0}")]
    Unauthenticated(String),
    /// The credentials work but lack the right.
    #[error("{0}")]
    Forbidden(String),
    /// An administrator must consent to the application first.
    #[error(
        "the Microsoft tenant requires an administrator's consent for this application (AADSTS{0})"
    )]
    AdminConsentRequired(u32),
    /// The calendar or event does not exist.
    #[error("{0} not found at Microsoft")]
    NotFound(String),
    /// An `If-Match` precondition failed.
    #[error("the event changed at Microsoft since it was read (version mismatch)")]
    VersionConflict {
        /// The event's current version, when known.
        current: Option<String>,
    },
    /// The delta state is no longer valid (410 `SyncStateNotFound`, or our
    /// cursor is unreadable).
    #[error("the Microsoft delta state is no longer valid; resync from scratch")]
    SyncStateExpired,
    /// The request cannot be expressed at Microsoft.
    #[error("{0}")]
    Invalid(Invalid),
    /// Graph is throttling this mailbox or application.
    #[error("Microsoft Graph is throttling requests ({0})")]
    Throttled(String, Option<Duration>),
    /// Graph could not be reached or failed.
    #[error("Microsoft Graph is unavailable: {0}")]
    Unavailable(String, Option<Duration>),
    /// Graph answered something this adapter cannot use.
    #[error("unexpected answer from Microsoft: {0}")]
    Protocol(String),
    /// The operation is not offered.
    #[error("{0}")]
    Unsupported(String),
    /// The adapter itself is misconfigured (its client was refused).
    #[error("{0}")]
    Config(String),
}

impl From<Invalid> for GraphError {
    fn from(i: Invalid) -> Self {
        GraphError::Invalid(i)
    }
}

impl From<GraphError> for ErrorKind {
    fn from(e: GraphError) -> ErrorKind {
        let message = e.to_string();
        match e {
            GraphError::Unauthenticated(_) => ErrorKind::Unauthenticated(message),
            GraphError::Forbidden(_) => ErrorKind::PermissionDenied(message),
            GraphError::AdminConsentRequired(_) => ErrorKind::FailedPrecondition(message),
            GraphError::NotFound(_) => ErrorKind::NotFound(message),
            GraphError::VersionConflict { current } => ErrorKind::Conflict {
                message,
                current_version: current,
            },
            GraphError::SyncStateExpired => ErrorKind::OutOfRange(message),
            GraphError::Invalid(i) => ErrorKind::Invalid(i),
            GraphError::Throttled(_, retry_after) => ErrorKind::RateLimited {
                message,
                retry_after,
            },
            GraphError::Unavailable(_, retry_after) => ErrorKind::Unavailable {
                message,
                retry_after,
            },
            // A garbled answer is usually transient (a proxy's error page).
            GraphError::Protocol(_) => ErrorKind::Unavailable {
                message,
                retry_after: None,
            },
            GraphError::Unsupported(_) => ErrorKind::Unimplemented(message),
            GraphError::Config(_) => ErrorKind::Internal(message),
        }
    }
}

impl From<GraphError> for tonic::Status {
    fn from(e: GraphError) -> tonic::Status {
        ErrorKind::from(e).into()
    }
}

/// A non-retryable Graph failure given its meaning; `what` names the
/// object for NOT_FOUND messages.
pub fn meaning(status: u16, code: &str, what: &str) -> GraphError {
    let code = short(code);
    match status {
        400 => GraphError::Invalid(Invalid::field(
            "request",
            format!("Microsoft refused the request ({code})"),
        )),
        401 => GraphError::Unauthenticated(
            "Microsoft rejected the access token and a refreshed one".into(),
        ),
        403 => GraphError::Forbidden(format!(
            "Microsoft refused the operation ({code}): the calendar is not writable or the grant lacks a scope"
        )),
        404 => GraphError::NotFound(what.to_string()),
        409 | 412 => GraphError::VersionConflict { current: None },
        410 => GraphError::SyncStateExpired,
        s => GraphError::Protocol(format!("Microsoft answered {s} ({code})")),
    }
}

/// An error code, bounded and never empty.
pub fn short(code: &str) -> String {
    if code.is_empty() {
        "no code given".into()
    } else {
        code.chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
            .take(48)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn graph_failures_map_to_the_contract_codes() {
        let code = |e: GraphError| tonic::Status::from(e).code();
        assert_eq!(
            code(meaning(412, "ErrorIrresolvableConflict", "event")),
            Code::Aborted
        );
        assert_eq!(
            code(meaning(410, "SyncStateNotFound", "delta")),
            Code::OutOfRange
        );
        assert_eq!(
            code(meaning(404, "ErrorItemNotFound", "event")),
            Code::NotFound
        );
        assert_eq!(
            code(meaning(403, "ErrorAccessDenied", "event")),
            Code::PermissionDenied
        );
        assert_eq!(
            code(meaning(400, "ErrorInvalidRequest", "event")),
            Code::InvalidArgument
        );
        assert_eq!(
            code(GraphError::AdminConsentRequired(90094)),
            Code::FailedPrecondition
        );
        assert_eq!(
            code(GraphError::Throttled(
                "429".into(),
                Some(Duration::from_secs(3))
            )),
            Code::ResourceExhausted
        );
        assert_eq!(short(&"x".repeat(500)).len(), 48);
    }
}
