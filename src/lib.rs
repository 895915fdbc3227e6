//! The calbridge contract: the generated `calbridge.v1` gRPC types (as [`pb`]),
//! the descriptor set served by reflection, and what every process shares
//! about the contract: metadata keys, time conversions, input validation with
//! field-level errors, and the mapping of error kinds to gRPC status codes.

mod generated {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("calbridge.v1");
}

/// The generated `calbridge.v1` messages, clients and servers.
pub mod pb {
    pub use super::generated::*;
}

pub mod adapter;
pub mod checks;
pub mod error;
pub mod expansion;
pub mod paging;
pub mod provider_data;
pub mod redact;
pub mod time;
pub mod validate;
pub mod zones;

pub use error::{ErrorKind, FieldViolation, Invalid};

/// The encoded `FileDescriptorSet` of `proto/`, with imports and comments, as
/// served through gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/calbridge_descriptor.bin"));

/// Metadata key names used on the wire.
pub mod metadata {
    /// Carries `Bearer <key>`: a tenant API key on the Scheduler service, the
    /// operator's admin token on the Admin service.
    pub const AUTHORIZATION: &str = "authorization";
    /// Trailer an adapter sets on ABORTED with the provider's current version.
    pub const CURRENT_VERSION: &str = "x-calbridge-current-version";
}

/// Fully qualified gRPC service names, as used by health checking.
pub mod services {
    /// The public scheduler API.
    pub const SCHEDULER: &str = "calbridge.v1.Scheduler";
    /// The operator API.
    pub const ADMIN: &str = "calbridge.v1.Admin";
    /// The adapter contract.
    pub const CALENDAR_ADAPTER: &str = "calbridge.v1.CalendarAdapter";
    /// The adapter-to-scheduler callback.
    pub const ADAPTER_CALLBACK: &str = "calbridge.v1.AdapterCallback";
    /// The sandbox provider's control API.
    pub const SANDBOX_CONTROL: &str = "calbridge.v1.SandboxControl";
}

/// Size limits on input, shared by validation everywhere.
pub mod limits {
    /// Longest id (client event id, account id, calendar id), in bytes.
    pub const MAX_ID_BYTES: usize = 256;
    /// Longest calendar id (CalDAV hrefs can be long), in bytes.
    pub const MAX_CALENDAR_ID_BYTES: usize = 1024;
    /// Longest title or location, in bytes.
    pub const MAX_TITLE_BYTES: usize = 1024;
    /// Longest description, in bytes.
    pub const MAX_DESCRIPTION_BYTES: usize = 65_536;
    /// Longest e-mail address, in bytes.
    pub const MAX_EMAIL_BYTES: usize = 320;
    /// Most attendees on one event.
    pub const MAX_ATTENDEES: usize = 500;
    /// Longest free/busy window, in days.
    pub const MAX_FREE_BUSY_DAYS: i64 = 366;
    /// Most accounts in one free/busy query.
    pub const MAX_FREE_BUSY_ACCOUNTS: usize = 2000;
    /// Longest iCalendar UID, in bytes.
    pub const MAX_ICAL_UID_BYTES: usize = 1024;
    /// Longest provider version (etag, change key), in bytes.
    pub const MAX_VERSION_BYTES: usize = 1024;
    /// Longest IANA time zone name, in bytes.
    pub const MAX_ZONE_BYTES: usize = 64;
    /// Most recurrence lines (RRULE, EXRULE, RDATE, EXDATE) on one event.
    pub const MAX_RECURRENCE_LINES: usize = 1000;
    /// Most bytes in all recurrence lines of one event together.
    pub const MAX_RECURRENCE_BYTES: usize = 65_536;
    /// Most calendar ids one availability member names.
    pub const MAX_MEMBER_CALENDARS: usize = 1000;
    /// Most weekly rules in one set of working hours.
    pub const MAX_WEEKLY_RULES: usize = 100;
    /// Most date overrides in one set of working hours.
    pub const MAX_DATE_OVERRIDES: usize = 1000;
    /// Most local ranges on one overridden date.
    pub const MAX_OVERRIDE_RANGES: usize = 48;
    /// Most query periods in one availability request.
    pub const MAX_PERIODS: usize = 1000;
    /// Longest page token or change cursor, in bytes.
    pub const MAX_TOKEN_BYTES: usize = 2048;
    /// Longest status message an error carries, in bytes: longer messages
    /// are cut (never echoing unbounded input).
    pub const MAX_STATUS_MESSAGE_BYTES: usize = 1024;
    /// Most field violations an error carries (the rest are counted).
    pub const MAX_FIELD_VIOLATIONS: usize = 50;
}
