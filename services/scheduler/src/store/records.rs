//! The records the store keeps, as they are serialized (JSON), and the
//! drafts callers hand it.

use calbridge::pb::{AccessLevel, AccountStatus, BusyStatus, ChangeKind, Provider};

use crate::ids::{AccountId, CalendarId, EventId, TenantId};
use serde::{Deserialize, Serialize};

/// Serde helper storing bytes as base64 inside JSON records.
mod b64 {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD_NO_PAD.encode(v))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(s)
            .map_err(serde::de::Error::custom)
    }
}

/// Serde helper storing a proto enum as its number, as the store always
/// has: records written before the fields were typed read unchanged, and a
/// number this build does not know (a record of a newer build) is a decode
/// error rather than a silent default.
mod number {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<E: Copy + Into<i32>, S: Serializer>(
        v: &E,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_i32((*v).into())
    }

    pub(super) fn deserialize<'de, E: TryFrom<i32>, D: Deserializer<'de>>(
        d: D,
    ) -> Result<E, D::Error> {
        let n = i32::deserialize(d)?;
        E::try_from(n).map_err(|_| serde::de::Error::custom(format!("unknown enum value {n}")))
    }
}

/// A tenant (calling service).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TenantRecord {
    /// Id.
    pub tenant_id: TenantId,
    /// Name.
    pub name: String,
    /// Creation time, ms since the epoch.
    pub created_ms: i64,
}

/// An API key (stored under the hash of the key).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    /// Public id.
    pub key_id: String,
    /// The tenant it authenticates.
    pub tenant_id: TenantId,
    /// Label.
    pub label: String,
    /// Creation time, ms.
    pub created_ms: i64,
}

/// A connected account.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccountRecord {
    /// Id.
    pub account_id: AccountId,
    /// Owning tenant.
    pub tenant_id: TenantId,
    /// The provider.
    #[serde(with = "number")]
    pub provider: Provider,
    /// What calbridge may read and write.
    #[serde(with = "number")]
    pub access_level: AccessLevel,
    /// Active, waiting for re-authorisation, or revoked.
    #[serde(with = "number")]
    pub status: AccountStatus,
    /// Why the status is what it is.
    pub status_reason: String,
    /// Creation time, ms.
    pub created_ms: i64,
    /// Server URL for CalDAV-based providers.
    pub server_url: String,
    /// Sealed `pb::ProviderCredentials`; empty once revoked.
    #[serde(with = "b64")]
    pub sealed_credentials: Vec<u8>,
    /// Sealed provider account id (e-mail); empty once revoked.
    #[serde(with = "b64")]
    pub sealed_identity: Vec<u8>,
    /// Hash identifying (tenant, provider, provider account) for reconnects.
    pub identity_hash: String,
    /// Calendars the provider listed beyond the per-account quota at the
    /// last calendar refresh (not kept).
    #[serde(default)]
    pub calendars_omitted: u32,
}

#[cfg(test)]
impl AccountRecord {
    /// An active account of tenant `t` with empty secrets (tests).
    pub(crate) fn for_test(account_id: &str) -> AccountRecord {
        AccountRecord {
            account_id: account_id.into(),
            tenant_id: "t".into(),
            provider: Provider::Google,
            access_level: AccessLevel::FreeBusy,
            status: AccountStatus::Active,
            status_reason: String::new(),
            created_ms: 0,
            server_url: String::new(),
            sealed_credentials: vec![],
            sealed_identity: vec![],
            identity_hash: String::new(),
            calendars_omitted: 0,
        }
    }
}

#[cfg(test)]
impl CalendarRecord {
    /// A synced primary calendar in UTC with no name (tests).
    pub(crate) fn for_test(calendar_id: &str) -> CalendarRecord {
        CalendarRecord {
            calendar_id: calendar_id.into(),
            sealed_name: vec![],
            primary: true,
            read_only: false,
            time_zone: "UTC".into(),
            synced: true,
            color: String::new(),
        }
    }
}

#[cfg(test)]
impl OutboxRecord {
    /// A pending create of client id `mine` in calendar `cal` of tenant `t`
    /// (tests).
    pub(crate) fn for_test(op_id: u64, account_id: &str) -> OutboxRecord {
        OutboxRecord {
            op_id,
            tenant_id: "t".into(),
            account_id: account_id.into(),
            calendar_id: "cal".into(),
            client_event_id: "mine".into(),
            provider_event_id: Default::default(),
            delete: false,
            sealed_event: vec![],
            expected_version: String::new(),
            created_ms: 0,
        }
    }
}

/// A calendar of an account.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CalendarRecord {
    /// Provider id.
    pub calendar_id: CalendarId,
    /// Sealed display name.
    #[serde(with = "b64")]
    pub sealed_name: Vec<u8>,
    /// Primary calendar.
    pub primary: bool,
    /// Read-only at the provider.
    pub read_only: bool,
    /// IANA zone.
    pub time_zone: String,
    /// Kept in the mirror.
    pub synced: bool,
    /// Colour.
    pub color: String,
}

/// The sync state of one calendar.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SyncRecord {
    /// The provider cursor; empty means list from scratch.
    pub cursor: String,
    /// When the next poll is due, ms.
    pub next_due_ms: i64,
    /// Last successful sync, ms.
    pub last_success_ms: Option<i64>,
    /// Last error, safe to show.
    pub last_error: String,
    /// Consecutive failures.
    pub failures: u32,
    /// Paused because the account needs re-authorisation.
    pub paused: bool,
    /// The calendar is not synced.
    #[serde(default)]
    pub disabled: bool,
    /// Provider items that could not be read: (item id, reason).
    #[serde(default)]
    pub skipped: Vec<(String, String)>,
    /// A full listing was under way when the last page was stored: its
    /// cursor continues the listing, but the events of its earlier pages are
    /// not known to the next run, which therefore starts the listing over.
    #[serde(default)]
    pub listing_in_progress: bool,
    /// For calendars mirrored from free/busy alone: the digest of the busy
    /// answer the mirror was last brought to. An identical answer changes
    /// nothing, so the poll only moves the sync state on. Any other kind
    /// of page clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub busy_digest: Option<String>,
    /// When the last full listing finished, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_full_listing_ms: Option<i64>,
    /// A full listing for drift repair is under way: its changes are drift.
    #[serde(default)]
    pub drift_check: bool,
    /// Changes drift repair found, over the calendar's life.
    #[serde(default)]
    pub drift_repaired: u64,
}

/// A mirrored event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventRecord {
    /// Provider version.
    pub version: String,
    /// Start, ms (all-day resolved in the calendar's zone).
    pub start_ms: i64,
    /// End, ms.
    pub end_ms: i64,
    /// Busy status for free/busy (`Unspecified` = does not block).
    #[serde(with = "number")]
    pub busy: BusyStatus,
    /// The caller's id, when written through calbridge.
    pub client_event_id: Option<String>,
    /// For all-day events: the local dates [start, end) as days from the
    /// common era (availability blocks each participant's own local days).
    #[serde(default)]
    pub all_day: Option<(i32, i32)>,
    /// Hash of the content the platform last wrote at this version (so an
    /// identical upsert is recognised even when the provider stores the
    /// event a little differently); `None` after any outside change.
    #[serde(default)]
    pub written_hash: Option<String>,
    /// The master of a recurring series the platform wrote. Kept for its
    /// caller id, version and written hash (a repeated upsert is
    /// "unchanged", a replacement finds it), but the series' instances are
    /// what the mirror lists: the master is in no time index, listing or
    /// free/busy answer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub series: bool,
    /// Sealed `pb::Event`.
    #[serde(with = "b64")]
    pub sealed: Vec<u8>,
}

/// What the time index holds per event.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct IndexEntry {
    /// End, ms.
    pub end_ms: i64,
    /// Busy status, `Unspecified` when the event does not block.
    #[serde(with = "number")]
    pub busy: BusyStatus,
    /// For all-day events: local dates [start, end) as days from the CE.
    #[serde(default)]
    pub all_day: Option<(i32, i32)>,
}

/// A tentative hold on a slot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HoldRecord {
    /// Id.
    pub hold_id: String,
    /// The accounts held.
    pub account_ids: Vec<AccountId>,
    /// Start, ms.
    pub start_ms: i64,
    /// End, ms.
    pub end_ms: i64,
    /// Expiry, ms.
    pub expires_ms: i64,
}

/// A pending write.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutboxRecord {
    /// Outbox id (monotonic).
    pub op_id: u64,
    /// Tenant.
    pub tenant_id: TenantId,
    /// Account.
    pub account_id: AccountId,
    /// Calendar.
    pub calendar_id: CalendarId,
    /// The caller's id (upserts, and deletes by client id).
    pub client_event_id: String,
    /// Provider id (deletes by provider id).
    pub provider_event_id: EventId,
    /// True for a delete.
    pub delete: bool,
    /// Sealed `pb::Event` to write (upserts).
    #[serde(with = "b64")]
    pub sealed_event: Vec<u8>,
    /// Version precondition.
    pub expected_version: String,
    /// When the write was accepted, ms (0 in entries written before this
    /// was kept).
    #[serde(default)]
    pub created_ms: i64,
}

/// One change-log entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChangeRecord {
    /// Sequence (per tenant).
    pub seq: u64,
    /// What changed.
    #[serde(with = "number")]
    pub kind: ChangeKind,
    /// Account.
    pub account_id: AccountId,
    /// Calendar.
    pub calendar_id: CalendarId,
    /// Provider event id.
    pub provider_event_id: EventId,
    /// The new status for account changes (`Unspecified` otherwise).
    #[serde(with = "number")]
    pub account_status: AccountStatus,
    /// When recorded, ms.
    pub recorded_ms: i64,
    /// Sealed `pb::Event` under the account's data key.
    #[serde(with = "b64")]
    pub sealed_event: Vec<u8>,
}

/// A change before its sequence is assigned.
#[derive(Debug, Clone)]
pub struct ChangeDraft {
    /// What changed.
    pub kind: ChangeKind,
    /// Account.
    pub account_id: AccountId,
    /// Calendar.
    pub calendar_id: CalendarId,
    /// Provider event id.
    pub provider_event_id: EventId,
    /// The new status for account changes (`Unspecified` otherwise).
    pub account_status: AccountStatus,
    /// Sealed event, possibly empty.
    pub sealed_event: Vec<u8>,
}

/// The head and floor of a tenant's change log.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct LogBounds {
    /// Last assigned sequence (0 when none).
    pub head: u64,
    /// Every sequence at or below this one was pruned.
    pub pruned_through: u64,
}

/// A push channel.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChannelRecord {
    /// Id.
    pub channel_id: String,
    /// Account.
    pub account_id: AccountId,
    /// Calendar.
    pub calendar_id: CalendarId,
    /// SHA-256 of the channel token, hex.
    pub token_hash: String,
    /// Provider resource id.
    pub resource_id: String,
    /// Expiry, ms.
    pub expires_ms: i64,
}

/// An event to put into the mirror.
#[derive(Debug, Clone)]
pub struct MirrorPut {
    /// Provider id.
    pub provider_event_id: EventId,
    /// The record.
    pub record: EventRecord,
    /// The previous record's start, to move its index entry.
    pub previous_start_ms: Option<i64>,
    /// The previous record's client id, if it changed.
    pub previous_client_id: Option<String>,
}

/// An event to remove from the mirror.
#[derive(Debug, Clone)]
pub struct MirrorRemove {
    /// Provider id.
    pub provider_event_id: EventId,
    /// Its start, for the index.
    pub start_ms: i64,
    /// Its client id, if any.
    pub client_event_id: Option<String>,
}

/// One synced page to commit.
#[derive(Debug, Clone, Copy)]
pub struct PageCommit<'a> {
    /// The account's tenant (owner of the change log).
    pub tenant: &'a TenantId,
    /// Account.
    pub account: &'a AccountId,
    /// Calendar.
    pub calendar: &'a CalendarId,
    /// Events to put into the mirror.
    pub puts: &'a [MirrorPut],
    /// Events to remove from the mirror.
    pub removes: &'a [MirrorRemove],
    /// The calendar's new sync state.
    pub state: &'a SyncRecord,
    /// Change-log entries.
    pub changes: &'a [ChangeDraft],
    /// Now, ms.
    pub now_ms: i64,
}

/// A pending OAuth authorisation, stored under the hash of its `state` until
/// it is completed (once) or expires.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthStateRecord {
    /// The tenant that began it.
    pub tenant_id: TenantId,
    /// The provider.
    #[serde(with = "number")]
    pub provider: Provider,
    /// The access level asked for.
    #[serde(with = "number")]
    pub access_level: AccessLevel,
    /// The exact redirect URI of the consent URL.
    pub redirect_uri: String,
    /// The account being re-authorised; empty for a new account.
    pub account_id: AccountId,
    /// A data key for this authorisation, wrapped by the master key.
    #[serde(with = "b64")]
    pub wrapped_key: Vec<u8>,
    /// The PKCE code verifier, sealed with that key.
    #[serde(with = "b64")]
    pub sealed_verifier: Vec<u8>,
    /// When it expires, ms.
    pub expires_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An account record as every earlier build wrote it: enums as numbers.
    const STORED: &str = r#"{"account_id":"acc","tenant_id":"t","provider":4,"access_level":3,"status":2,"status_reason":"","created_ms":1,"server_url":"","sealed_credentials":"","sealed_identity":"","identity_hash":""}"#;

    #[test]
    fn stored_enum_numbers_read_as_enums_and_write_back_unchanged() {
        let a: AccountRecord = serde_json::from_str(STORED).unwrap();
        assert_eq!(a.provider, Provider::Caldav);
        assert_eq!(a.access_level, AccessLevel::ReadWrite);
        assert_eq!(a.status, AccountStatus::ReauthRequired);
        let v: serde_json::Value = serde_json::to_value(&a).unwrap();
        assert_eq!(
            (&v["provider"], &v["access_level"], &v["status"]),
            (&4.into(), &3.into(), &2.into())
        );
        let e: IndexEntry =
            serde_json::from_str(r#"{"end_ms":5,"busy":3,"all_day":null}"#).unwrap();
        assert_eq!(e.busy, BusyStatus::OutOfOffice);
    }

    #[test]
    fn an_enum_number_this_build_does_not_know_is_a_decode_error() {
        let newer = STORED.replace(r#""status":2"#, r#""status":99"#);
        let err = serde_json::from_str::<AccountRecord>(&newer).unwrap_err();
        assert!(err.to_string().contains("unknown enum value 99"), "{err}");
    }
}
