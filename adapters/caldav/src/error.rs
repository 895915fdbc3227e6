//! The CalDAV adapter's errors and their one mapping to the contract's
//! [`ErrorKind`] (and from there to `tonic::Status`). Messages carry no
//! passwords, event content or raw server bodies.

use std::time::Duration;

use calbridge::{ErrorKind, Invalid};

/// Why a CalDAV operation failed, in meanings rather than status numbers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DavError {
    /// The server rejected the user name and password (401).
    #[error("the CalDAV server rejected the user name or password (for iCloud use an app-specific password)")]
    WrongCredentials,
    /// The credentials work but lack the right (403 on a write, read-only
    /// calendar).
    #[error("the CalDAV server refused the operation: {0}")]
    Forbidden(String),
    /// The calendar or event does not exist.
    #[error("{0} not found at the CalDAV server")]
    NotFound(String),
    /// A version precondition failed (412 on If-Match).
    #[error("the event changed at the CalDAV server since it was read (version mismatch)")]
    VersionConflict {
        /// The resource's current etag, when known.
        current: Option<String>,
    },
    /// The sync token is unknown or expired (`valid-sync-token`).
    #[error("the CalDAV sync token is no longer valid; resync from scratch")]
    SyncTokenExpired,
    /// The request cannot be expressed at the server.
    #[error("{0}")]
    Invalid(Invalid),
    /// The server is overloaded or rate limiting (429, 503).
    #[error("the CalDAV server is rate limiting requests")]
    RateLimited {
        /// The server's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
    },
    /// The server could not be reached or failed (5xx, network, timeout).
    #[error("the CalDAV server is unavailable: {0}")]
    Unavailable(String),
    /// The server answered something this adapter cannot use.
    #[error("unexpected answer from the CalDAV server: {0}")]
    Protocol(String),
    /// The operation is not supported.
    #[error("{0}")]
    Unsupported(String),
    /// The egress policy refused the destination: an address that is not
    /// public and not allow-listed, or a redirect to another site.
    #[error("the CalDAV server was refused: {0}")]
    Refused(String),
    /// An answer body was larger than the configured cap (bytes).
    #[error("the CalDAV server's answer is larger than {0} bytes")]
    TooLarge(usize),
}

impl From<Invalid> for DavError {
    fn from(i: Invalid) -> Self {
        DavError::Invalid(i)
    }
}

impl From<DavError> for ErrorKind {
    fn from(e: DavError) -> ErrorKind {
        let message = e.to_string();
        match e {
            DavError::WrongCredentials => ErrorKind::Unauthenticated(message),
            DavError::Forbidden(_) => ErrorKind::PermissionDenied(message),
            DavError::NotFound(_) => ErrorKind::NotFound(message),
            DavError::VersionConflict { current } => ErrorKind::Conflict {
                message,
                current_version: current,
            },
            DavError::SyncTokenExpired => ErrorKind::OutOfRange(message),
            DavError::Invalid(i) => ErrorKind::Invalid(i),
            DavError::RateLimited { retry_after } => ErrorKind::RateLimited {
                message,
                retry_after,
            },
            DavError::Unavailable(_) => ErrorKind::Unavailable {
                message,
                retry_after: None,
            },
            // A server speaking broken WebDAV is usually a transient fault
            // (proxy error page, half-written response): worth a retry.
            DavError::Protocol(_) => ErrorKind::Unavailable {
                message,
                retry_after: None,
            },
            DavError::Unsupported(_) => ErrorKind::Unimplemented(message),
            DavError::Refused(_) => ErrorKind::Invalid(Invalid::field("server_url", message)),
            DavError::TooLarge(_) => ErrorKind::FailedPrecondition(message),
        }
    }
}

impl From<DavError> for tonic::Status {
    fn from(e: DavError) -> tonic::Status {
        ErrorKind::from(e).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn dav_errors_map_to_the_contract_codes() {
        let cases = [
            (DavError::WrongCredentials, Code::Unauthenticated),
            (DavError::NotFound("calendar".into()), Code::NotFound),
            (
                DavError::Forbidden("read-only".into()),
                Code::PermissionDenied,
            ),
            (DavError::SyncTokenExpired, Code::OutOfRange),
            (
                DavError::RateLimited { retry_after: None },
                Code::ResourceExhausted,
            ),
            (DavError::Unavailable("timeout".into()), Code::Unavailable),
            (DavError::VersionConflict { current: None }, Code::Aborted),
        ];
        for (e, code) in cases {
            assert_eq!(tonic::Status::from(e).code(), code);
        }
    }

    #[test]
    fn a_version_conflict_carries_the_current_etag_trailer() {
        let status = tonic::Status::from(DavError::VersionConflict {
            current: Some("\"e9\"".into()),
        });
        assert_eq!(status.code(), Code::Aborted);
        assert_eq!(
            status
                .metadata()
                .get(calbridge::metadata::CURRENT_VERSION)
                .and_then(|v| v.to_str().ok()),
            Some("\"e9\"")
        );
    }
}
