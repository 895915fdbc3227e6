//! Request checks shared by the adapters' handlers, answered as gRPC
//! statuses (`INVALID_ARGUMENT` naming the field, `PERMISSION_DENIED`).

use chrono::{DateTime, Utc};
use tonic::Status;

use crate::pb::{self, AccessLevel};
use crate::{ErrorKind, Invalid};

/// `PERMISSION_DENIED` unless the credentials grant write access.
pub fn writable(c: Option<&pb::ProviderCredentials>) -> Result<(), Status> {
    match c.map(|c| c.access_level()) {
        Some(AccessLevel::ReadWrite) => Ok(()),
        _ => Err(ErrorKind::PermissionDenied(
            "the account was connected without write access".into(),
        )
        .into()),
    }
}

/// The bounds of a required, ordered time window at `field`.
pub fn window(
    field: &str,
    w: Option<&pb::TimeWindow>,
) -> Result<(DateTime<Utc>, DateTime<Utc>), Status> {
    let mut inv = Invalid::default();
    let parsed = crate::validate::check_window(&mut inv, field, w);
    inv.into_result().map_err(ErrorKind::Invalid)?;
    Ok(parsed.expect("valid when no violation"))
}

/// The message at `field`, which must be set.
pub fn required<'a, T>(field: &str, v: Option<&'a T>) -> Result<&'a T, Status> {
    v.ok_or_else(|| ErrorKind::Invalid(Invalid::field(field, "must be set")).into())
}

/// A provider calendar (or event) id at `field`: present, bounded, without
/// control characters.
pub fn check_calendar_id(field: &str, value: &str) -> Result<(), Status> {
    let mut inv = Invalid::default();
    crate::validate::check_id(&mut inv, field, value, crate::limits::MAX_CALENDAR_ID_BYTES);
    inv.into_result().map_err(|i| ErrorKind::Invalid(i).into())
}
