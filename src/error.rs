//! Error kinds shared by every process and their one mapping to gRPC status
//! codes, plus field-level validation errors (`google.rpc.BadRequest`).

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// What went wrong, in the contract's terms. Every server turns its own errors
/// into one of these, and this module alone turns them into a [`Status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad input; each violation names a field.
    Invalid(Invalid),
    /// Missing or wrong credentials (API key, admin token, provider password).
    Unauthenticated(String),
    /// The caller may not do this (read-only calendar, access level).
    PermissionDenied(String),
    /// The object does not exist, or belongs to another tenant.
    NotFound(String),
    /// A version precondition failed; carries the current version when known.
    Conflict {
        /// What conflicted.
        message: String,
        /// The provider's current version.
        current_version: Option<String>,
    },
    /// The account needs the user to act (re-authorisation).
    FailedPrecondition(String),
    /// A cursor is out of the retained range.
    OutOfRange(String),
    /// A retryable outage, with an optional retry delay.
    Unavailable {
        /// What is unavailable.
        message: String,
        /// How long to wait before retrying.
        retry_after: Option<Duration>,
    },
    /// A rate limit, with an optional retry delay.
    RateLimited {
        /// Which limit.
        message: String,
        /// How long to wait before retrying.
        retry_after: Option<Duration>,
    },
    /// This build does not implement the operation.
    Unimplemented(String),
    /// A bug or a broken store; the message is safe to show.
    Internal(String),
}

impl ErrorKind {
    /// The gRPC code of this kind.
    pub fn code(&self) -> Code {
        match self {
            ErrorKind::Invalid(_) => Code::InvalidArgument,
            ErrorKind::Unauthenticated(_) => Code::Unauthenticated,
            ErrorKind::PermissionDenied(_) => Code::PermissionDenied,
            ErrorKind::NotFound(_) => Code::NotFound,
            ErrorKind::Conflict { .. } => Code::Aborted,
            ErrorKind::FailedPrecondition(_) => Code::FailedPrecondition,
            ErrorKind::OutOfRange(_) => Code::OutOfRange,
            ErrorKind::Unavailable { .. } => Code::Unavailable,
            ErrorKind::RateLimited { .. } => Code::ResourceExhausted,
            ErrorKind::Unimplemented(_) => Code::Unimplemented,
            ErrorKind::Internal(_) => Code::Internal,
        }
    }

    /// Reads a status received from another calbridge process back into a
    /// kind (retry delays and current versions included).
    pub fn from_status(status: &Status) -> ErrorKind {
        let message = status.message().to_string();
        let details = status.get_error_details();
        let retry_after = details.retry_info().and_then(|r| r.retry_delay);
        match status.code() {
            Code::InvalidArgument => {
                let violations = details
                    .bad_request()
                    .map(|b| {
                        b.field_violations
                            .iter()
                            .map(|v| FieldViolation::new(&v.field, &v.description))
                            .collect()
                    })
                    .unwrap_or_default();
                ErrorKind::Invalid(Invalid(violations))
            }
            Code::Unauthenticated => ErrorKind::Unauthenticated(message),
            Code::PermissionDenied => ErrorKind::PermissionDenied(message),
            Code::NotFound => ErrorKind::NotFound(message),
            Code::Aborted => ErrorKind::Conflict {
                message,
                current_version: status
                    .metadata()
                    .get(crate::metadata::CURRENT_VERSION)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string),
            },
            Code::FailedPrecondition => ErrorKind::FailedPrecondition(message),
            Code::OutOfRange => ErrorKind::OutOfRange(message),
            Code::ResourceExhausted => ErrorKind::RateLimited {
                message,
                retry_after,
            },
            Code::Unimplemented => ErrorKind::Unimplemented(message),
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => {
                ErrorKind::Unavailable {
                    message,
                    retry_after,
                }
            }
            _ => ErrorKind::Internal(message),
        }
    }

    /// True for outages and rate limits worth retrying.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ErrorKind::Unavailable { .. } | ErrorKind::RateLimited { .. }
        )
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ErrorKind::Invalid(i) => write!(f, "{i}"),
            ErrorKind::Unauthenticated(m)
            | ErrorKind::PermissionDenied(m)
            | ErrorKind::NotFound(m)
            | ErrorKind::FailedPrecondition(m)
            | ErrorKind::OutOfRange(m)
            | ErrorKind::Unimplemented(m)
            | ErrorKind::Internal(m)
            | ErrorKind::Conflict { message: m, .. }
            | ErrorKind::Unavailable { message: m, .. }
            | ErrorKind::RateLimited { message: m, .. } => f.write_str(m),
        }
    }
}

impl std::error::Error for ErrorKind {}

/// `s` cut to at most `max` bytes on a character boundary, marked with
/// "…" when cut.
pub fn bounded(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Longest field path or violation description sent, in bytes.
const MAX_VIOLATION_BYTES: usize = 256;

/// Statuses never carry unbounded input: messages are cut to
/// [`MAX_STATUS_MESSAGE_BYTES`](crate::limits::MAX_STATUS_MESSAGE_BYTES),
/// at most [`MAX_FIELD_VIOLATIONS`](crate::limits::MAX_FIELD_VIOLATIONS)
/// field violations are detailed (the message counts the rest), and a
/// current version longer than an id is left out.
impl From<ErrorKind> for Status {
    fn from(kind: ErrorKind) -> Status {
        use crate::limits::{MAX_FIELD_VIOLATIONS, MAX_STATUS_MESSAGE_BYTES, MAX_VERSION_BYTES};
        let code = kind.code();
        let cut = |m: &str| bounded(m, MAX_STATUS_MESSAGE_BYTES);
        match kind {
            ErrorKind::Invalid(invalid) => {
                let total = invalid.0.len();
                let mut shown = Invalid(
                    invalid
                        .0
                        .into_iter()
                        .take(MAX_FIELD_VIOLATIONS)
                        .map(|v| {
                            FieldViolation::new(
                                bounded(&v.field, MAX_VIOLATION_BYTES),
                                bounded(&v.description, MAX_VIOLATION_BYTES),
                            )
                        })
                        .collect(),
                );
                let mut message = shown.to_string();
                if total > shown.0.len() {
                    message.push_str(&format!("; and {} more violations", total - shown.0.len()));
                }
                let violations: Vec<tonic_types::FieldViolation> = std::mem::take(&mut shown.0)
                    .into_iter()
                    .map(|v| tonic_types::FieldViolation::new(v.field, v.description))
                    .collect();
                Status::with_error_details(
                    code,
                    cut(&message),
                    ErrorDetails::with_bad_request(violations),
                )
            }
            ErrorKind::Unavailable {
                message,
                retry_after,
            }
            | ErrorKind::RateLimited {
                message,
                retry_after,
            } => Status::with_error_details(
                code,
                cut(&message),
                ErrorDetails::with_retry_info(retry_after),
            ),
            ErrorKind::Conflict {
                message,
                current_version,
            } => {
                let mut status = Status::new(code, cut(&message));
                if let Some(v) = current_version
                    .filter(|v| v.len() <= MAX_VERSION_BYTES)
                    .and_then(|v| v.parse().ok())
                {
                    status
                        .metadata_mut()
                        .insert(crate::metadata::CURRENT_VERSION, v);
                }
                status
            }
            other => Status::new(code, cut(&other.to_string())),
        }
    }
}

impl From<Invalid> for ErrorKind {
    fn from(i: Invalid) -> Self {
        ErrorKind::Invalid(i)
    }
}

/// One bad field: its path in the request (for example `event.end`) and what
/// is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// The field's path, dotted, as in the proto (`window.start`).
    pub field: String,
    /// What is wrong and what to do.
    pub description: String,
}

impl FieldViolation {
    /// A violation of `field`.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        FieldViolation {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// A request's field violations; never empty when returned as an error.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Invalid(pub Vec<FieldViolation>);

impl Invalid {
    /// One violation.
    pub fn field(field: impl Into<String>, description: impl Into<String>) -> Self {
        Invalid(vec![FieldViolation::new(field, description)])
    }

    /// Adds a violation.
    pub fn push(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    /// `Ok(())` when there is no violation, the violations otherwise.
    pub fn into_result(self) -> Result<(), Invalid> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self)
        }
    }
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("invalid argument: ")?;
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", v.field, v.description)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_round_trips_through_status_with_field_names() {
        let status: Status =
            ErrorKind::Invalid(Invalid::field("event.end", "must be after event.start")).into();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("event.end"));
        match ErrorKind::from_status(&status) {
            ErrorKind::Invalid(i) => assert_eq!(i.0[0].field, "event.end"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn retry_delay_survives_the_wire() {
        let status: Status = ErrorKind::RateLimited {
            message: "slow down".into(),
            retry_after: Some(Duration::from_secs(7)),
        }
        .into();
        match ErrorKind::from_status(&status) {
            ErrorKind::RateLimited { retry_after, .. } => {
                assert_eq!(retry_after, Some(Duration::from_secs(7)))
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn statuses_never_echo_unbounded_input() {
        let huge = "é".repeat(600_000);
        let status: Status = ErrorKind::NotFound(format!("account {huge:?} not found")).into();
        assert!(status.message().len() <= crate::limits::MAX_STATUS_MESSAGE_BYTES);
        assert!(status.message().starts_with("account \"é"));
        let mut inv = Invalid::default();
        inv.push(format!("ids[0].{huge}"), huge.clone());
        for i in 1..10_000 {
            inv.push(format!("ids[{i}]"), "must not be empty");
        }
        let status: Status = ErrorKind::Invalid(inv).into();
        assert!(status.message().len() <= crate::limits::MAX_STATUS_MESSAGE_BYTES);
        let details = status.get_error_details();
        let violations = &details.bad_request().unwrap().field_violations;
        assert_eq!(violations.len(), crate::limits::MAX_FIELD_VIOLATIONS);
        assert!(violations
            .iter()
            .all(|v| v.field.len() <= 256 && v.description.len() <= 256));
        let status: Status = ErrorKind::Conflict {
            message: "stale".into(),
            current_version: Some("v".repeat(1_000_000)),
        }
        .into();
        assert!(status
            .metadata()
            .get(crate::metadata::CURRENT_VERSION)
            .is_none());
    }

    #[test]
    fn conflict_carries_current_version() {
        let status: Status = ErrorKind::Conflict {
            message: "stale".into(),
            current_version: Some("v9".into()),
        }
        .into();
        assert_eq!(status.code(), Code::Aborted);
        match ErrorKind::from_status(&status) {
            ErrorKind::Conflict {
                current_version, ..
            } => assert_eq!(current_version.as_deref(), Some("v9")),
            other => panic!("unexpected {other:?}"),
        }
    }
}
