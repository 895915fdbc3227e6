//! The sandbox provider's errors and their one mapping to the contract's
//! [`ErrorKind`] (and from there to `tonic::Status`). Messages carry no
//! passwords, tokens or event content.

use calbridge::{ErrorKind, Invalid};

/// Why the in-memory provider refused an operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The user name and password do not match, or access was revoked.
    #[error("wrong user name or password")]
    WrongCredentials,
    /// The control API named a user the sandbox does not know.
    #[error("unknown sandbox user")]
    UnknownUser,
    /// The calendar does not exist (or belongs to another user).
    #[error("calendar not found")]
    CalendarNotFound,
    /// The event does not exist in the calendar.
    #[error("event not found")]
    EventNotFound,
    /// The calendar cannot be written by its user.
    #[error("the calendar is read-only")]
    ReadOnly,
    /// The caller's expected version is not the event's current version.
    #[error("the event changed since it was read (version mismatch)")]
    VersionConflict {
        /// The event's current version.
        current: String,
    },
    /// The sync cursor does not parse or is older than the retained journal.
    #[error("sync cursor expired; resync from scratch")]
    CursorExpired,
    /// Bad input, with the offending fields named.
    #[error("{0}")]
    Invalid(Invalid),
}

impl From<Invalid> for ProviderError {
    fn from(i: Invalid) -> Self {
        ProviderError::Invalid(i)
    }
}

impl From<ProviderError> for ErrorKind {
    fn from(e: ProviderError) -> ErrorKind {
        let message = e.to_string();
        match e {
            ProviderError::WrongCredentials => ErrorKind::Unauthenticated(message),
            ProviderError::UnknownUser
            | ProviderError::CalendarNotFound
            | ProviderError::EventNotFound => ErrorKind::NotFound(message),
            ProviderError::ReadOnly => ErrorKind::PermissionDenied(message),
            ProviderError::VersionConflict { current } => ErrorKind::Conflict {
                message,
                current_version: Some(current),
            },
            ProviderError::CursorExpired => ErrorKind::OutOfRange(message),
            ProviderError::Invalid(i) => ErrorKind::Invalid(i),
        }
    }
}

impl From<ProviderError> for tonic::Status {
    fn from(e: ProviderError) -> tonic::Status {
        ErrorKind::from(e).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn provider_errors_map_to_the_contract_codes() {
        let cases = [
            (ProviderError::WrongCredentials, Code::Unauthenticated),
            (ProviderError::CalendarNotFound, Code::NotFound),
            (ProviderError::ReadOnly, Code::PermissionDenied),
            (ProviderError::CursorExpired, Code::OutOfRange),
            (
                ProviderError::VersionConflict {
                    current: "v3".into(),
                },
                Code::Aborted,
            ),
        ];
        for (e, code) in cases {
            assert_eq!(tonic::Status::from(e).code(), code);
        }
    }

    #[test]
    fn a_version_conflict_carries_the_current_version_trailer() {
        let status = tonic::Status::from(ProviderError::VersionConflict {
            current: "v9".into(),
        });
        assert_eq!(
            status
                .metadata()
                .get(calbridge::metadata::CURRENT_VERSION)
                .and_then(|v| v.to_str().ok()),
            Some("v9")
        );
    }
}
