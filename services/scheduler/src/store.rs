//! The scheduler's store: one narrow interface over sled with typed trees and
//! a schema version. Multi-key updates that must agree (a synced page, its
//! cursor and its change-log entries; a write's result and its outbox entry)
//! are single sled transactions, so a crash leaves the old state or the new
//! one. Values that could identify a person arrive here already sealed; this
//! module never sees plaintext content, nor any account data key (they live
//! in the keyring, [`crate::keyring`]). The ids it indexes by (calendar ids,
//! provider event ids and hrefs, client ids), which often hold an e-mail
//! address, it seals itself with the store's id key ([`IdCipher`]), in keys
//! and in records alike.

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::Transactional;

use crate::crypto::IdCipher;

/// The schema this build reads and writes. Version 1 kept each account's
/// data key, wrapped by the master key, in its account record; version 2
/// keeps no key material ([`crate::upgrade`] moves the keys out); version 3
/// keeps calendar, event and client ids, server URLs and cursors sealed
/// ([`IdCipher`]) instead of in clear.
pub const SCHEMA_VERSION: u32 = 3;

/// The meta record of the schema version.
pub(crate) const SCHEMA_KEY: &str = "schema_version";
/// The meta record added to sled's id counter (a store rewritten into a
/// fresh sled directory keeps handing out ids above the old ones).
pub(crate) const ID_FLOOR_KEY: &str = "id_floor";

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store's files are damaged; the mirror can be rebuilt from the
    /// providers, but credentials would have to be entered again.
    #[error("the store at {path} is corrupt ({detail}); move it aside and reconnect accounts, or restore a backup")]
    Corrupt {
        /// The store's directory.
        path: String,
        /// What sled reported.
        detail: String,
    },
    /// The store was written by a newer calbridge.
    #[error("the store has schema version {found}, this build understands up to {SCHEMA_VERSION}; upgrade calbridge")]
    NewerSchema {
        /// The version found.
        found: u32,
    },
    /// The store has an older schema, which the scheduler upgrades at start.
    #[error("the store has schema version {found}; start the scheduler, which upgrades it to {SCHEMA_VERSION}")]
    OlderSchema {
        /// The version found.
        found: u32,
    },
    /// An I/O or engine error.
    #[error("store error: {0}")]
    Engine(String),
    /// A record could not be decoded.
    #[error("store record {0} cannot be decoded")]
    Decode(String),
    /// The write names a revoked account: nothing was written. A revoked
    /// account takes no new rows (see [`Store::put_account`]).
    #[error("the account is revoked")]
    AccountRevoked,
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        match e {
            sled::Error::Corruption { .. } => StoreError::Corrupt {
                path: String::new(),
                detail: e.to_string(),
            },
            other => StoreError::Engine(other.to_string()),
        }
    }
}

/// Why a transaction gave up: the only reason a transaction here aborts is
/// that it found its account revoked ([`refuse_revoked`]).
#[derive(Debug, Clone, Copy)]
pub struct Revoked;

impl From<TransactionError<Revoked>> for StoreError {
    fn from(e: TransactionError<Revoked>) -> Self {
        match e {
            TransactionError::Abort(Revoked) => StoreError::AccountRevoked,
            TransactionError::Storage(s) => s.into(),
        }
    }
}

/// Serde helper storing bytes as base64 inside JSON records.
mod b64 {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD_NO_PAD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(s)
            .map_err(serde::de::Error::custom)
    }
}

/// A tenant (calling service).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TenantRecord {
    /// Id.
    pub tenant_id: String,
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
    pub tenant_id: String,
    /// Label.
    pub label: String,
    /// Creation time, ms.
    pub created_ms: i64,
}

/// A connected account.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccountRecord {
    /// Id.
    pub account_id: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// `pb::Provider` value.
    pub provider: i32,
    /// `pb::AccessLevel` value.
    pub access_level: i32,
    /// `pb::AccountStatus` value.
    pub status: i32,
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
            account_id: account_id.to_string(),
            tenant_id: "t".into(),
            provider: 1,
            access_level: 1,
            status: 1,
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
            provider_event_id: String::new(),
            delete: false,
            sealed_event: vec![],
            expected_version: String::new(),
        }
    }
}

/// A calendar of an account.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CalendarRecord {
    /// Provider id.
    pub calendar_id: String,
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
    /// Busy status for free/busy (`pb::BusyStatus`; 0 = does not block).
    pub busy: i32,
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
    /// Sealed `pb::Event`.
    #[serde(with = "b64")]
    pub sealed: Vec<u8>,
}

/// What the time index holds per event.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct IndexEntry {
    /// End, ms.
    pub end_ms: i64,
    /// `pb::BusyStatus`, 0 when the event does not block.
    pub busy: i32,
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
    pub account_ids: Vec<String>,
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
    pub tenant_id: String,
    /// Account.
    pub account_id: String,
    /// Calendar.
    pub calendar_id: String,
    /// The caller's id (upserts, and deletes by client id).
    pub client_event_id: String,
    /// Provider id (deletes by provider id).
    pub provider_event_id: String,
    /// True for a delete.
    pub delete: bool,
    /// Sealed `pb::Event` to write (upserts).
    #[serde(with = "b64")]
    pub sealed_event: Vec<u8>,
    /// Version precondition.
    pub expected_version: String,
}

/// One change-log entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChangeRecord {
    /// Sequence (per tenant).
    pub seq: u64,
    /// `pb::ChangeKind`.
    pub kind: i32,
    /// Account.
    pub account_id: String,
    /// Calendar.
    pub calendar_id: String,
    /// Provider event id.
    pub provider_event_id: String,
    /// `pb::AccountStatus` for account changes.
    pub account_status: i32,
    /// When recorded, ms.
    pub recorded_ms: i64,
    /// Sealed `pb::Event` under the account's data key.
    #[serde(with = "b64")]
    pub sealed_event: Vec<u8>,
}

/// A change before its sequence is assigned.
#[derive(Debug, Clone)]
pub struct ChangeDraft {
    /// `pb::ChangeKind`.
    pub kind: i32,
    /// Account.
    pub account_id: String,
    /// Calendar.
    pub calendar_id: String,
    /// Provider event id.
    pub provider_event_id: String,
    /// `pb::AccountStatus` for account changes.
    pub account_status: i32,
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
    pub account_id: String,
    /// Calendar.
    pub calendar_id: String,
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
    pub provider_event_id: String,
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
    pub provider_event_id: String,
    /// Its start, for the index.
    pub start_ms: i64,
    /// Its client id, if any.
    pub client_event_id: Option<String>,
}

/// One synced page to commit.
#[derive(Debug, Clone, Copy)]
pub struct PageCommit<'a> {
    /// The account's tenant (owner of the change log).
    pub tenant: &'a str,
    /// Account.
    pub account: &'a str,
    /// Calendar.
    pub calendar: &'a str,
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

/// Joins key parts with NUL (ids never contain control characters).
pub fn key(parts: &[&str]) -> Vec<u8> {
    parts.join("\0").into_bytes()
}

fn prefix(parts: &[&str]) -> Vec<u8> {
    let mut k = key(parts);
    k.push(0);
    k
}

/// The key of one calendar's row (calendars, sync): the account id, then
/// the calendar id sealed ([`IdCipher`]).
fn cal_key(ids: &IdCipher, account: &str, calendar: &str) -> Vec<u8> {
    key(&[account, &ids.seal(calendar)])
}

/// The prefix of every row of one calendar (events, index, client ids).
fn cal_prefix(ids: &IdCipher, account: &str, calendar: &str) -> Vec<u8> {
    prefix(&[account, &ids.seal(calendar)])
}

/// The key of an item of a calendar (an event by provider id, a client id):
/// both ids sealed.
fn item_key(ids: &IdCipher, account: &str, calendar: &str, item: &str) -> Vec<u8> {
    key(&[account, &ids.seal(calendar), &ids.seal(item)])
}

fn index_key(ids: &IdCipher, account: &str, calendar: &str, start_ms: i64, pid: &str) -> Vec<u8> {
    let mut k = cal_prefix(ids, account, calendar);
    k.extend_from_slice(&((start_ms as u64) ^ (1 << 63)).to_be_bytes());
    k.extend_from_slice(ids.seal(pid).as_bytes());
    k
}

/// The id sealed in a key part.
fn open_part(ids: &IdCipher, what: &str, part: &[u8]) -> Result<String, StoreError> {
    std::str::from_utf8(part)
        .ok()
        .and_then(|p| ids.open(p).ok())
        .ok_or_else(|| StoreError::Decode(what.to_string()))
}

/// A key and its value.
pub(crate) type Row = (Vec<u8>, Vec<u8>);

/// One row of a schema 1 or 2 store (ids in clear) as this schema keeps it,
/// for the upgrade's rewrite ([`crate::upgrade`]): key and value with their
/// ids sealed. `None` for a mirror row that cannot be read (its calendar
/// lists again); a sync state that cannot be read becomes the default one,
/// as when the store opens.
pub(crate) fn seal_legacy_row(
    tree: &str,
    k: &[u8],
    v: &[u8],
    ids: &IdCipher,
) -> Result<Option<Row>, StoreError> {
    fn parts(k: &[u8], n: usize) -> Option<Vec<&str>> {
        let p: Vec<&str> = std::str::from_utf8(k).ok()?.splitn(n, '\0').collect();
        (p.len() == n).then_some(p)
    }
    fn reseal<T: Serialize + DeserializeOwned + SealedIds>(
        ids: &IdCipher,
        v: &[u8],
    ) -> Option<Vec<u8>> {
        dec::<T>("record", v).ok().map(|r| enc_ids(ids, &r))
    }
    Ok(match tree {
        "accounts" => Some((
            k.to_vec(),
            enc_ids(ids, &dec::<AccountRecord>("account", v)?),
        )),
        "outbox" => Some((k.to_vec(), enc_ids(ids, &dec::<OutboxRecord>("outbox", v)?))),
        "changes" => Some((k.to_vec(), enc_ids(ids, &dec::<ChangeRecord>("change", v)?))),
        "channels" => Some((
            k.to_vec(),
            enc_ids(ids, &dec::<ChannelRecord>("channel", v)?),
        )),
        "calendars" => parts(k, 2)
            .and_then(|p| Some((cal_key(ids, p[0], p[1]), reseal::<CalendarRecord>(ids, v)?))),
        "sync" => parts(k, 2).map(|p| {
            let st = dec::<SyncRecord>("sync", v).unwrap_or_default();
            (cal_key(ids, p[0], p[1]), enc_ids(ids, &st))
        }),
        "events" => parts(k, 3).and_then(|p| {
            Some((
                item_key(ids, p[0], p[1], p[2]),
                reseal::<EventRecord>(ids, v)?,
            ))
        }),
        "client_ids" => parts(k, 3).and_then(|p| {
            let pid = std::str::from_utf8(v).ok()?;
            Some((item_key(ids, p[0], p[1], p[2]), ids.seal(pid).into_bytes()))
        }),
        "event_index" => {
            // account NUL calendar NUL start (8 bytes, may hold NULs) pid
            let mut it = k.splitn(3, |b| *b == 0);
            match (it.next(), it.next(), it.next()) {
                (Some(a), Some(c), Some(rest)) if rest.len() >= 8 => {
                    match (
                        std::str::from_utf8(a),
                        std::str::from_utf8(c),
                        std::str::from_utf8(&rest[8..]),
                    ) {
                        (Ok(a), Ok(c), Ok(pid)) => {
                            let mut nk = cal_prefix(ids, a, c);
                            nk.extend_from_slice(&rest[..8]);
                            nk.extend_from_slice(ids.seal(pid).as_bytes());
                            Some((nk, v.to_vec()))
                        }
                        _ => None,
                    }
                }
                _ => None,
            }
        }
        _ => Some((k.to_vec(), v.to_vec())),
    })
}

/// Records whose id fields the store keeps sealed ([`IdCipher`]): in memory
/// they hold the ids, on disk what [`IdCipher::seal`] made of them.
trait SealedIds: Clone {
    /// Calls `f` on every id field.
    fn each_id(&mut self, f: &mut dyn FnMut(&mut String));
}

fn each_opt(v: &mut Option<String>, f: &mut dyn FnMut(&mut String)) {
    if let Some(s) = v {
        f(s);
    }
}

impl SealedIds for AccountRecord {
    fn each_id(&mut self, f: &mut dyn FnMut(&mut String)) {
        f(&mut self.server_url);
    }
}

impl SealedIds for CalendarRecord {
    fn each_id(&mut self, f: &mut dyn FnMut(&mut String)) {
        f(&mut self.calendar_id);
    }
}

impl SealedIds for SyncRecord {
    fn each_id(&mut self, f: &mut dyn FnMut(&mut String)) {
        f(&mut self.cursor);
        f(&mut self.last_error);
        for (id, reason) in &mut self.skipped {
            f(id);
            f(reason);
        }
    }
}

impl SealedIds for EventRecord {
    fn each_id(&mut self, f: &mut dyn FnMut(&mut String)) {
        each_opt(&mut self.client_event_id, f);
    }
}

impl SealedIds for OutboxRecord {
    fn each_id(&mut self, f: &mut dyn FnMut(&mut String)) {
        f(&mut self.calendar_id);
        f(&mut self.client_event_id);
        f(&mut self.provider_event_id);
    }
}

impl SealedIds for ChangeRecord {
    fn each_id(&mut self, f: &mut dyn FnMut(&mut String)) {
        f(&mut self.calendar_id);
        f(&mut self.provider_event_id);
    }
}

impl SealedIds for ChannelRecord {
    fn each_id(&mut self, f: &mut dyn FnMut(&mut String)) {
        f(&mut self.calendar_id);
        f(&mut self.resource_id);
    }
}

/// A record serialized with its ids sealed.
fn enc_ids<T: Serialize + SealedIds>(ids: &IdCipher, v: &T) -> Vec<u8> {
    let mut sealed = v.clone();
    sealed.each_id(&mut |s| *s = ids.seal(s));
    enc(&sealed)
}

/// A record stored by [`enc_ids`], its ids opened.
fn dec_ids<T: DeserializeOwned + SealedIds>(
    ids: &IdCipher,
    what: &str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    let mut v: T = dec(what, bytes)?;
    let mut opened = true;
    v.each_id(&mut |s| match ids.open(s) {
        Ok(clear) => *s = clear,
        Err(_) => opened = false,
    });
    if opened {
        Ok(v)
    } else {
        Err(StoreError::Decode(what.to_string()))
    }
}

fn tx_get_ids<T: DeserializeOwned + SealedIds>(
    ids: &IdCipher,
    t: &TransactionalTree,
    k: &[u8],
) -> TxResult<Option<T>> {
    Ok(t.get(k)?.and_then(|v| dec_ids(ids, "record", &v).ok()))
}

fn seq_key(tenant: &str, seq: u64) -> Vec<u8> {
    let mut k = prefix(&[tenant]);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn enc<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("records serialize")
}

fn dec<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|_| StoreError::Decode(what.to_string()))
}

type TxResult<T> = Result<T, ConflictableTransactionError<Revoked>>;

fn tx_get<T: DeserializeOwned>(t: &TransactionalTree, k: &[u8]) -> TxResult<Option<T>> {
    Ok(t.get(k)?.and_then(|v| serde_json::from_slice(&v).ok()))
}

/// The status of an account record, decoded alone.
#[derive(Deserialize)]
struct StatusOnly {
    status: i32,
}

/// True when `bytes` is the record of a revoked account.
fn is_revoked_record(bytes: &[u8]) -> bool {
    serde_json::from_slice::<StatusOnly>(bytes)
        .is_ok_and(|a| a.status == calbridge::pb::AccountStatus::Revoked as i32)
}

/// Aborts the transaction when `account` is revoked. Every write that adds
/// rows naming an account runs it inside the transaction that writes them:
/// sled runs transactions one at a time, so a write either commits before
/// the account is marked revoked (and revocation's purge removes its rows)
/// or sees the mark and writes nothing. A sync page read before a
/// revocation can therefore never be applied after it.
fn refuse_revoked(accounts: &TransactionalTree, account: &str) -> TxResult<()> {
    match accounts.get(account.as_bytes())? {
        Some(v) if is_revoked_record(&v) => Err(ConflictableTransactionError::Abort(Revoked)),
        _ => Ok(()),
    }
}

/// A pending OAuth authorisation, stored under the hash of its `state` until
/// it is completed (once) or expires.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthStateRecord {
    /// The tenant that began it.
    pub tenant_id: String,
    /// `pb::Provider` value.
    pub provider: i32,
    /// `pb::AccessLevel` value.
    pub access_level: i32,
    /// The exact redirect URI of the consent URL.
    pub redirect_uri: String,
    /// The account being re-authorised; empty for a new account.
    pub account_id: String,
    /// A data key for this authorisation, wrapped by the master key.
    #[serde(with = "b64")]
    pub wrapped_key: Vec<u8>,
    /// The PKCE code verifier, sealed with that key.
    #[serde(with = "b64")]
    pub sealed_verifier: Vec<u8>,
    /// When it expires, ms.
    pub expires_ms: i64,
}

/// The store.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    meta: sled::Tree,
    tenants: sled::Tree,
    api_keys: sled::Tree,
    api_key_ids: sled::Tree,
    accounts: sled::Tree,
    tenant_accounts: sled::Tree,
    identities: sled::Tree,
    calendars: sled::Tree,
    sync: sled::Tree,
    events: sled::Tree,
    event_index: sled::Tree,
    client_ids: sled::Tree,
    outbox: sled::Tree,
    changes: sled::Tree,
    heads: sled::Tree,
    channels: sled::Tree,
    holds: sled::Tree,
    working_hours: sled::Tree,
    auth_states: sled::Tree,
    /// The `sync` tree, decoded and kept in memory.
    sync_states: Arc<SyncStates>,
    /// Mirrored-event counts per calendar, as last counted.
    event_counts: Arc<EventCounts>,
    /// Added to sled's id counter (see [`ID_FLOOR_KEY`]).
    id_floor: u64,
    /// The store's directory.
    dir: std::path::PathBuf,
    /// Seals the ids in keys and records.
    ids: IdCipher,
}

fn corrupt(dir: &Path, e: sled::Error) -> StoreError {
    match e {
        sled::Error::Corruption { .. } | sled::Error::Unsupported(_) => StoreError::Corrupt {
            path: dir.display().to_string(),
            detail: e.to_string(),
        },
        other => StoreError::Engine(format!("opening {}: {other}", dir.display())),
    }
}

/// Opens the sled database in `dir`. With `wait_for_lock`, an open refused
/// because the directory is still locked is retried for up to ten seconds:
/// sled releases the lock of a database this process dropped a moment
/// after the drop, when its background thread has stopped.
pub(crate) fn open_db(dir: &Path, wait_for_lock: bool) -> Result<sled::Db, StoreError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match sled::Config::new()
            .path(dir)
            .flush_every_ms(Some(200))
            .open()
        {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(e))
                if wait_for_lock
                    && e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(e) => return Err(corrupt(dir, e)),
        }
    }
}

/// The schema version recorded in an opened database; `None` for a new one.
pub(crate) fn stored_schema_version(db: &sled::Db, dir: &Path) -> Result<Option<u32>, StoreError> {
    let meta = db.open_tree("meta").map_err(|e| corrupt(dir, e))?;
    meta.get(SCHEMA_KEY)?
        .map(|v| {
            v.as_ref()
                .try_into()
                .map(u32::from_be_bytes)
                .map_err(|_| StoreError::Corrupt {
                    path: dir.display().to_string(),
                    detail: "schema version record is damaged".into(),
                })
        })
        .transpose()
}

/// Makes `dir` and the files below it owner-only.
pub(crate) fn restrict_permissions(dir: &Path) -> Result<(), StoreError> {
    crate::disk::restrict_tree(dir).map_err(|e| {
        StoreError::Engine(format!(
            "restricting the permissions of {}: {e}",
            dir.display()
        ))
    })
}

/// Mirrored-event counts per calendar (sync status asks often, and a
/// count from scratch is a scan of the calendar's events). A calendar's
/// count is taken by a scan when first asked, and from then on moved by
/// every committed mirror write's own difference (events added less events
/// removed, as its transaction saw them). A scan is kept only when no write
/// was in flight from its start to its end, so every write either happened
/// before a kept count or adds its difference after it. Writes that drop
/// many rows at once (a mirror cleared, an account purged) forget the
/// counts instead.
#[derive(Debug, Default)]
struct EventCounts(Mutex<CountsInner>);

#[derive(Debug, Default)]
struct CountsInner {
    /// Writes begun.
    started: u64,
    /// Writes finished (counts adjusted or forgotten).
    finished: u64,
    /// Counts by (account, calendar).
    known: foldhash::HashMap<(String, String), u64>,
}

/// A count to take, from the write counters at its start.
struct CountTicket(u64, u64);

impl EventCounts {
    fn lock(&self) -> MutexGuard<'_, CountsInner> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The kept count, or the ticket to take one with.
    fn get(&self, account: &str, calendar: &str) -> Result<u64, CountTicket> {
        let g = self.lock();
        g.known
            .get(&(account.to_string(), calendar.to_string()))
            .copied()
            .ok_or(CountTicket(g.started, g.finished))
    }

    /// Keeps a scanned count unless a write was in flight meanwhile.
    fn keep(&self, account: &str, calendar: &str, t: CountTicket, n: u64) {
        let mut g = self.lock();
        if t.0 == t.1 && g.started == t.0 && g.finished == t.1 {
            g.known
                .insert((account.to_string(), calendar.to_string()), n);
        }
    }

    /// Before a mirror write.
    fn begin(&self) {
        self.lock().started += 1;
    }

    /// After a mirror write, committed or not: moves the calendar's kept
    /// count by `delta` (the write's own difference; 0 when it failed).
    fn finish(&self, account: &str, calendar: &str, delta: i64) {
        let mut g = self.lock();
        g.finished += 1;
        if let Some(n) = g
            .known
            .get_mut(&(account.to_string(), calendar.to_string()))
        {
            *n = n.saturating_add_signed(delta);
        }
    }

    /// After a write that dropped many rows: forgets the counts of one
    /// calendar or (with `None`) of every calendar of the account.
    fn forget(&self, account: &str, calendar: Option<&str>) {
        let mut g = self.lock();
        g.finished += 1;
        match calendar {
            Some(c) => {
                g.known.remove(&(account.to_string(), c.to_string()));
            }
            None => g.known.retain(|(a, _), _| a != account),
        }
    }
}

/// When one calendar last synced successfully, kept current by every write
/// of its sync state. A holder (a cached availability participant) reads it
/// without a lookup; the cell of a calendar stays the same for the life of
/// the process, even across the account's removal and reconnection.
#[derive(Debug)]
pub struct FreshnessCell(AtomicI64);

impl FreshnessCell {
    const NEVER: i64 = i64::MIN;

    fn new() -> Self {
        FreshnessCell(AtomicI64::new(Self::NEVER))
    }

    fn set(&self, last_success_ms: Option<i64>) {
        self.0
            .store(last_success_ms.unwrap_or(Self::NEVER), Ordering::Release);
    }

    /// The last successful sync, ms; `None` when the calendar never synced
    /// (or has no sync state).
    pub fn get(&self) -> Option<i64> {
        Some(self.0.load(Ordering::Acquire)).filter(|&v| v != Self::NEVER)
    }
}

/// One calendar's entry in [`SyncStates`].
struct SyncSlot {
    /// The stored state; `None` once removed (the slot stays for its cell).
    state: Option<SyncRecord>,
    fresh: Arc<FreshnessCell>,
}

impl SyncSlot {
    fn empty() -> Self {
        SyncSlot {
            state: None,
            fresh: Arc::new(FreshnessCell::new()),
        }
    }
}

/// Hashed with foldhash: ids come from the store or from authenticated
/// tenants, and the lookups sit on the availability path.
type SyncMap = foldhash::HashMap<String, foldhash::HashMap<String, SyncSlot>>;

/// Every calendar's sync state, account → calendar → state, mirrored from
/// the `sync` tree so that reads (the sync loop's scans, the freshness of
/// every calendar an availability request consults) never touch sled or
/// decode a record.
///
/// Every write of the tree holds `write` across the sled write and the
/// update of `map`, so writers cannot interleave between the two and the map
/// always equals the tree once a write returns. Readers take `map`'s read
/// lock alone, briefly.
#[derive(Default)]
struct SyncStates {
    write: Mutex<()>,
    map: RwLock<SyncMap>,
}

impl SyncStates {
    fn writer(&self) -> MutexGuard<'_, ()> {
        self.write.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self) -> RwLockReadGuard<'_, SyncMap> {
        self.map.read().unwrap_or_else(|p| p.into_inner())
    }

    fn map(&self) -> RwLockWriteGuard<'_, SyncMap> {
        self.map.write().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, account: &str, calendar: &str, st: SyncRecord) {
        let mut map = self.map();
        let slot = map
            .entry(account.to_string())
            .or_default()
            .entry(calendar.to_string())
            .or_insert_with(SyncSlot::empty);
        slot.fresh.set(st.last_success_ms);
        slot.state = Some(st);
    }

    /// Forgets every sync state of an account (its cells read "never").
    fn remove_account(&self, account: &str) {
        if let Some(slots) = self.map().get_mut(account) {
            for slot in slots.values_mut() {
                slot.state = None;
                slot.fresh.set(None);
            }
        }
    }

    /// Loads the tree. A record that cannot be decoded (never written by
    /// this schema) is replaced by the default state, as if the calendar
    /// had never synced: it lists from scratch, and the diff against the
    /// mirror keeps the change feed free of spurious entries.
    fn load(tree: &sled::Tree, ids: &IdCipher) -> Result<SyncStates, StoreError> {
        let states = SyncStates::default();
        for item in tree.iter() {
            let (k, v) = item?;
            let s = String::from_utf8_lossy(&k);
            let Some((a, sealed)) = s.split_once('\0') else {
                continue;
            };
            let Ok(c) = ids.open(sealed) else {
                tracing::warn!(
                    "a sync state's key does not open under the store's id key; skipped"
                );
                continue;
            };
            let c = c.as_str();
            let st = dec_ids::<SyncRecord>(ids, "sync", &v).unwrap_or_else(|_| {
                tracing::warn!(
                    "a sync state could not be decoded; its calendar lists from scratch"
                );
                SyncRecord::default()
            });
            states.set(a, c, st);
        }
        Ok(states)
    }
}

impl Store {
    /// Opens (or creates) the store in `dir`, checking its schema version:
    /// an older store is refused ([`StoreError::OlderSchema`]; the
    /// scheduler upgrades it at start with [`crate::upgrade::open_store`]).
    /// `ids` seals the ids the store keeps ([`IdCipher`]).
    pub fn open(dir: &Path, ids: IdCipher) -> Result<Store, StoreError> {
        Store::from_db(open_db(dir, false)?, dir, ids)
    }

    /// The store over an opened sled database of the current schema (a new
    /// one gets the current schema version).
    pub(crate) fn from_db(db: sled::Db, dir: &Path, ids: IdCipher) -> Result<Store, StoreError> {
        let corrupt = |e: sled::Error| corrupt(dir, e);
        match stored_schema_version(&db, dir)? {
            None => {
                db.open_tree("meta")
                    .map_err(corrupt)?
                    .insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())?;
            }
            Some(found) if found > SCHEMA_VERSION => return Err(StoreError::NewerSchema { found }),
            Some(found) if found < SCHEMA_VERSION => return Err(StoreError::OlderSchema { found }),
            Some(_) => {}
        }
        let t = |name: &str| db.open_tree(name).map_err(corrupt);
        let sync = t("sync")?;
        let sync_states = Arc::new(SyncStates::load(&sync, &ids)?);
        let meta = t("meta")?;
        let id_floor = match meta.get(ID_FLOOR_KEY)? {
            None => 0,
            Some(v) => {
                u64::from_be_bytes(v.as_ref().try_into().map_err(|_| StoreError::Corrupt {
                    path: dir.display().to_string(),
                    detail: "id floor record is damaged".into(),
                })?)
            }
        };
        let store = Store {
            meta,
            tenants: t("tenants")?,
            api_keys: t("api_keys")?,
            api_key_ids: t("api_key_ids")?,
            accounts: t("accounts")?,
            tenant_accounts: t("tenant_accounts")?,
            identities: t("identities")?,
            calendars: t("calendars")?,
            sync,
            events: t("events")?,
            event_index: t("event_index")?,
            client_ids: t("client_ids")?,
            outbox: t("outbox")?,
            changes: t("changes")?,
            heads: t("heads")?,
            channels: t("channels")?,
            holds: t("holds")?,
            working_hours: t("working_hours")?,
            auth_states: t("auth_states")?,
            sync_states,
            event_counts: Arc::default(),
            id_floor,
            dir: dir.to_path_buf(),
            ids,
            db,
        };
        store.db.flush()?;
        store.restrict_permissions()?;
        Ok(store)
    }

    /// Makes the store's directory and files owner-only again: sled creates
    /// its files (snapshots, blobs) with the process's umask, though the
    /// directory's own mode already keeps other users out.
    pub fn restrict_permissions(&self) -> Result<(), StoreError> {
        restrict_permissions(&self.dir)
    }

    /// Flushes every pending write to disk. Writes are acknowledged to
    /// callers only after this returns.
    ///
    /// sled 0.34's `flush_async` deadlocks when awaited concurrently
    /// (sled issue #1308), so the blocking flush runs on the blocking pool.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|e| StoreError::Engine(format!("flush task failed: {e}")))??;
        Ok(())
    }

    /// A value kept in the meta tree.
    pub fn meta_get(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.meta.get(name)?.map(|v| v.to_vec()))
    }

    /// Sets a value in the meta tree.
    pub fn meta_put(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        self.meta.insert(name, value)?;
        Ok(())
    }

    /// A fresh id from sled's monotonic counter (above every id a store
    /// this one was rewritten from handed out).
    pub fn next_id(&self) -> Result<u64, StoreError> {
        Ok(self.id_floor + self.db.generate_id()?)
    }

    // ---- tenants and keys ----

    /// Stores a tenant.
    pub fn put_tenant(&self, t: &TenantRecord) -> Result<(), StoreError> {
        self.tenants.insert(t.tenant_id.as_bytes(), enc(t))?;
        Ok(())
    }

    /// A tenant.
    pub fn tenant(&self, id: &str) -> Result<Option<TenantRecord>, StoreError> {
        self.tenants.get(id)?.map(|v| dec("tenant", &v)).transpose()
    }

    /// Every tenant.
    pub fn tenants(&self) -> Result<Vec<TenantRecord>, StoreError> {
        self.tenants
            .iter()
            .values()
            .map(|v| dec("tenant", &v?))
            .collect()
    }

    /// Stores an API key under its hash.
    pub fn put_api_key(&self, hash: &str, k: &ApiKeyRecord) -> Result<(), StoreError> {
        (&self.api_keys, &self.api_key_ids).transaction(|(keys, ids)| {
            keys.insert(hash.as_bytes(), enc(k))?;
            ids.insert(k.key_id.as_bytes(), hash.as_bytes())?;
            Ok(())
        })?;
        Ok(())
    }

    /// The key stored under `hash`.
    pub fn api_key(&self, hash: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        self.api_keys
            .get(hash)?
            .map(|v| dec("api key", &v))
            .transpose()
    }

    /// Removes a key by its public id; false when unknown.
    pub fn revoke_api_key(&self, key_id: &str) -> Result<bool, StoreError> {
        let found = (&self.api_keys, &self.api_key_ids).transaction(|(keys, ids)| {
            match ids.remove(key_id.as_bytes())? {
                Some(hash) => {
                    keys.remove(hash)?;
                    Ok(true)
                }
                None => Ok(false),
            }
        })?;
        Ok(found)
    }

    // ---- accounts and calendars ----

    /// An account.
    pub fn account(&self, id: &str) -> Result<Option<AccountRecord>, StoreError> {
        self.accounts
            .get(id)?
            .map(|v| dec_ids(&self.ids, "account", &v))
            .transpose()
    }

    /// The account of `identity_hash`, if connected before.
    pub fn account_by_identity(&self, identity_hash: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .identities
            .get(identity_hash)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// A tenant's accounts after `after` (exclusive), oldest id order.
    pub fn tenant_accounts(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AccountRecord>, StoreError> {
        let p = prefix(&[tenant]);
        let start = match after {
            Some(a) => {
                let mut k = key(&[tenant, a]);
                k.push(0);
                k
            }
            None => p.clone(),
        };
        let mut out = Vec::new();
        for item in self.tenant_accounts.range(start..) {
            let (k, _) = item?;
            if !k.starts_with(&p) || out.len() >= limit {
                break;
            }
            let id = String::from_utf8_lossy(&k[p.len()..]).into_owned();
            if let Some(a) = self.account(&id)? {
                out.push(a);
            }
        }
        Ok(out)
    }

    /// Stores a new or updated account with its calendars and their sync
    /// states (existing sync states are kept), in one transaction.
    pub fn put_account_with_calendars(
        &self,
        account: &AccountRecord,
        calendars: &[CalendarRecord],
        initial_due_ms: i64,
    ) -> Result<(), StoreError> {
        let acc = enc_ids(&self.ids, account);
        let _writer = self.sync_states.writer();
        let written = std::cell::RefCell::new(Vec::new());
        (
            &self.accounts,
            &self.tenant_accounts,
            &self.identities,
            &self.calendars,
            &self.sync,
        )
            .transaction(|(accounts, tenant_accounts, identities, cals, sync)| {
                written.borrow_mut().clear();
                refuse_revoked(accounts, &account.account_id)?;
                accounts.insert(account.account_id.as_bytes(), acc.clone())?;
                tenant_accounts.insert(key(&[&account.tenant_id, &account.account_id]), &[])?;
                if !account.identity_hash.is_empty() {
                    identities.insert(
                        account.identity_hash.as_bytes(),
                        account.account_id.as_bytes(),
                    )?;
                }
                for c in calendars {
                    let k = cal_key(&self.ids, &account.account_id, &c.calendar_id);
                    cals.insert(k.clone(), enc_ids(&self.ids, c))?;
                    let mut st: SyncRecord = tx_get_ids(&self.ids, sync, &k)?.unwrap_or_default();
                    if st.last_success_ms.is_none() {
                        st.next_due_ms = initial_due_ms;
                    }
                    st.paused = false;
                    st.disabled = !c.synced;
                    sync.insert(k, enc_ids(&self.ids, &st))?;
                    written.borrow_mut().push((c.calendar_id.clone(), st));
                }
                Ok(())
            })?;
        for (calendar, st) in written.into_inner() {
            self.sync_states.set(&account.account_id, &calendar, st);
        }
        Ok(())
    }

    /// Stores an account record alone. A revoked account stays revoked: a
    /// record that is not revoked never replaces a revoked one (a token
    /// refresh or a status change that read the record before revocation
    /// would otherwise bring its credentials back); that write fails with
    /// [`StoreError::AccountRevoked`].
    pub fn put_account(&self, account: &AccountRecord) -> Result<(), StoreError> {
        let bytes = enc_ids(&self.ids, account);
        let revoking = account.status == calbridge::pb::AccountStatus::Revoked as i32;
        self.accounts.transaction(|accounts| {
            if !revoking {
                refuse_revoked(accounts, &account.account_id)?;
            }
            accounts.insert(account.account_id.as_bytes(), bytes.clone())?;
            Ok(())
        })?;
        Ok(())
    }

    /// Stores an account record and appends change-log entries for its
    /// tenant, atomically (revocation records REVOKED with the mark itself,
    /// so no sync page can land between the two). Same rule as
    /// [`Store::put_account`].
    pub fn put_account_with_changes(
        &self,
        account: &AccountRecord,
        changes: &[ChangeDraft],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let bytes = enc_ids(&self.ids, account);
        let revoking = account.status == calbridge::pb::AccountStatus::Revoked as i32;
        (&self.accounts, &self.changes, &self.heads).transaction(|(accounts, log, heads)| {
            if !revoking {
                refuse_revoked(accounts, &account.account_id)?;
            }
            accounts.insert(account.account_id.as_bytes(), bytes.clone())?;
            append_changes(&self.ids, log, heads, &account.tenant_id, changes, now_ms)?;
            Ok(())
        })?;
        Ok(())
    }

    /// Replaces an account's identity hash (and its mapping), atomically;
    /// the old mapping goes only when it names this account.
    pub fn set_identity_hash(
        &self,
        account_id: &str,
        identity_hash: &str,
    ) -> Result<(), StoreError> {
        (&self.accounts, &self.identities).transaction(|(accounts, identities)| {
            let Some(mut a) =
                tx_get_ids::<AccountRecord>(&self.ids, accounts, account_id.as_bytes())?
            else {
                return Ok(());
            };
            if a.identity_hash == identity_hash {
                return Ok(());
            }
            if identities
                .get(a.identity_hash.as_bytes())?
                .is_some_and(|v| v.as_ref() == account_id.as_bytes())
            {
                identities.remove(a.identity_hash.as_bytes())?;
            }
            a.identity_hash = identity_hash.to_string();
            accounts.insert(account_id.as_bytes(), enc_ids(&self.ids, &a))?;
            identities.insert(identity_hash.as_bytes(), account_id.as_bytes())?;
            Ok(())
        })?;
        Ok(())
    }

    /// An account's calendars, by calendar id.
    pub fn calendars(&self, account: &str) -> Result<Vec<CalendarRecord>, StoreError> {
        let mut out = self
            .calendars
            .scan_prefix(prefix(&[account]))
            .values()
            .map(|v| dec_ids(&self.ids, "calendar", &v?))
            .collect::<Result<Vec<CalendarRecord>, StoreError>>()?;
        out.sort_by(|a, b| a.calendar_id.cmp(&b.calendar_id));
        Ok(out)
    }

    /// One calendar.
    pub fn calendar(
        &self,
        account: &str,
        calendar: &str,
    ) -> Result<Option<CalendarRecord>, StoreError> {
        self.calendars
            .get(cal_key(&self.ids, account, calendar))?
            .map(|v| dec_ids(&self.ids, "calendar", &v))
            .transpose()
    }

    /// Updates one calendar record (refused for a revoked account).
    pub fn put_calendar(&self, account: &str, c: &CalendarRecord) -> Result<(), StoreError> {
        let bytes = enc_ids(&self.ids, c);
        (&self.accounts, &self.calendars).transaction(|(accounts, calendars)| {
            refuse_revoked(accounts, account)?;
            calendars.insert(cal_key(&self.ids, account, &c.calendar_id), bytes.clone())?;
            Ok(())
        })?;
        Ok(())
    }

    /// Removes a calendar's mirror (events, index, client ids) and resets its
    /// cursor, without change-log entries (used when sync is turned off).
    pub fn clear_calendar_mirror(&self, account: &str, calendar: &str) -> Result<(), StoreError> {
        let p = cal_prefix(&self.ids, account, calendar);
        self.event_counts.begin();
        let cleared = (|| -> Result<(), StoreError> {
            for tree in [&self.events, &self.event_index, &self.client_ids] {
                let mut batch = sled::Batch::default();
                for k in tree.scan_prefix(&p).keys() {
                    batch.remove(k?);
                }
                tree.apply_batch(batch)?;
            }
            Ok(())
        })();
        self.event_counts.forget(account, Some(calendar));
        cleared?;
        let _writer = self.sync_states.writer();
        if let Some(mut st) = self.sync_state(account, calendar)? {
            st.cursor.clear();
            st.last_success_ms = None;
            st.busy_digest = None;
            self.sync.insert(
                cal_key(&self.ids, account, calendar),
                enc_ids(&self.ids, &st),
            )?;
            self.sync_states.set(account, calendar, st);
        }
        Ok(())
    }

    // ---- sync state ----

    /// One calendar's sync state.
    pub fn sync_state(
        &self,
        account: &str,
        calendar: &str,
    ) -> Result<Option<SyncRecord>, StoreError> {
        Ok(self
            .sync_states
            .read()
            .get(account)
            .and_then(|m| m.get(calendar))
            .and_then(|slot| slot.state.clone()))
    }

    /// The freshness cell of a calendar: when it last synced successfully,
    /// kept current by every later write of its sync state.
    pub fn freshness(&self, account: &str, calendar: &str) -> Arc<FreshnessCell> {
        if let Some(slot) = self
            .sync_states
            .read()
            .get(account)
            .and_then(|m| m.get(calendar))
        {
            return slot.fresh.clone();
        }
        self.sync_states
            .map()
            .entry(account.to_string())
            .or_default()
            .entry(calendar.to_string())
            .or_insert_with(SyncSlot::empty)
            .fresh
            .clone()
    }

    /// Stores one calendar's sync state (refused for a revoked account).
    pub fn put_sync_state(
        &self,
        account: &str,
        calendar: &str,
        s: &SyncRecord,
    ) -> Result<(), StoreError> {
        let bytes = enc_ids(&self.ids, s);
        let _writer = self.sync_states.writer();
        (&self.accounts, &self.sync).transaction(|(accounts, sync)| {
            refuse_revoked(accounts, account)?;
            sync.insert(cal_key(&self.ids, account, calendar), bytes.clone())?;
            Ok(())
        })?;
        self.sync_states.set(account, calendar, s.clone());
        Ok(())
    }

    /// Removes one calendar's sync state (its calendar is gone): the sync
    /// loop no longer considers it.
    pub fn remove_sync_state(&self, account: &str, calendar: &str) -> Result<(), StoreError> {
        let _writer = self.sync_states.writer();
        self.sync.remove(cal_key(&self.ids, account, calendar))?;
        if let Some(slot) = self
            .sync_states
            .map()
            .get_mut(account)
            .and_then(|m| m.get_mut(calendar))
        {
            slot.state = None;
            slot.fresh.set(None);
        }
        Ok(())
    }

    /// Every calendar's sync state: (account, calendar, state), in no
    /// particular order.
    pub fn all_sync_states(&self) -> Result<Vec<(String, String, SyncRecord)>, StoreError> {
        Ok(self
            .sync_states
            .read()
            .iter()
            .flat_map(|(a, m)| {
                m.iter()
                    .filter_map(move |(c, slot)| Some((a.clone(), c.clone(), slot.state.clone()?)))
            })
            .collect())
    }

    /// Pauses or resumes every calendar of an account.
    pub fn set_account_paused(
        &self,
        account: &str,
        paused: bool,
        due_ms: i64,
    ) -> Result<(), StoreError> {
        let _writer = self.sync_states.writer();
        let calendars: Vec<(String, SyncRecord)> = self
            .sync_states
            .read()
            .get(account)
            .map(|m| {
                m.iter()
                    .filter_map(|(c, slot)| Some((c.clone(), slot.state.clone()?)))
                    .collect()
            })
            .unwrap_or_default();
        for (calendar, mut s) in calendars {
            s.paused = paused;
            if !paused {
                s.next_due_ms = due_ms;
            }
            self.sync.insert(
                cal_key(&self.ids, account, &calendar),
                enc_ids(&self.ids, &s),
            )?;
            self.sync_states.set(account, &calendar, s);
        }
        Ok(())
    }

    // ---- mirror ----

    /// One mirrored event.
    pub fn event(
        &self,
        account: &str,
        calendar: &str,
        pid: &str,
    ) -> Result<Option<EventRecord>, StoreError> {
        self.events
            .get(item_key(&self.ids, account, calendar, pid))?
            .map(|v| dec_ids(&self.ids, "event", &v))
            .transpose()
    }

    /// The provider id written for a client id.
    pub fn provider_id_for_client(
        &self,
        account: &str,
        calendar: &str,
        client_id: &str,
    ) -> Result<Option<String>, StoreError> {
        self.client_ids
            .get(item_key(&self.ids, account, calendar, client_id))?
            .map(|v| open_part(&self.ids, "client id", &v))
            .transpose()
    }

    /// Provider ids of every mirrored event of a calendar, in order.
    pub fn event_ids(&self, account: &str, calendar: &str) -> Result<Vec<String>, StoreError> {
        let p = cal_prefix(&self.ids, account, calendar);
        let mut out = self
            .events
            .scan_prefix(&p)
            .keys()
            .map(|k| open_part(&self.ids, "event key", &k?[p.len()..]))
            .collect::<Result<Vec<String>, StoreError>>()?;
        out.sort();
        Ok(out)
    }

    /// Number of mirrored events of a calendar (see [`EventCounts`]: a
    /// scan when first asked, then kept current by every mirror write).
    pub fn event_count(&self, account: &str, calendar: &str) -> u64 {
        match self.event_counts.get(account, calendar) {
            Ok(n) => n,
            Err(ticket) => {
                let n = self
                    .events
                    .scan_prefix(cal_prefix(&self.ids, account, calendar))
                    .keys()
                    .count() as u64;
                self.event_counts.keep(account, calendar, ticket, n);
                n
            }
        }
    }

    /// Index entries of a calendar overlapping [start, end), by start (events
    /// that start together in the order of their sealed ids: stable, not
    /// alphabetical), after the (start, pid) position `after` when given:
    /// (start, pid, entry).
    pub fn events_overlapping(
        &self,
        account: &str,
        calendar: &str,
        start_ms: i64,
        end_ms: i64,
        after: Option<(i64, &str)>,
        limit: usize,
    ) -> Result<Vec<(i64, String, IndexEntry)>, StoreError> {
        let p = cal_prefix(&self.ids, account, calendar);
        let from = match after {
            Some((s, pid)) => {
                let mut k = index_key(&self.ids, account, calendar, s, pid);
                k.push(0);
                k
            }
            None => p.clone(),
        };
        let to = index_key(&self.ids, account, calendar, end_ms, "");
        let mut out = Vec::new();
        for item in self.event_index.range(from..to) {
            let (k, v) = item?;
            if k.len() < p.len() + 8 {
                continue;
            }
            let mut be = [0u8; 8];
            be.copy_from_slice(&k[p.len()..p.len() + 8]);
            let s = (u64::from_be_bytes(be) ^ (1 << 63)) as i64;
            let entry: IndexEntry = dec("index", &v)?;
            if entry.end_ms <= start_ms {
                continue;
            }
            out.push((
                s,
                open_part(&self.ids, "index key", &k[p.len() + 8..])?,
                entry,
            ));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Applies one synced page atomically: mirror puts and removals, the new
    /// sync state and the change-log entries (sequences assigned here).
    pub fn apply_sync_page(&self, page: &PageCommit<'_>) -> Result<(), StoreError> {
        let state_bytes = enc_ids(&self.ids, page.state);
        let _writer = self.sync_states.writer();
        let (account, calendar) = (page.account, page.calendar);
        self.event_counts.begin();
        let committed = (
            &self.accounts,
            &self.events,
            &self.event_index,
            &self.client_ids,
            &self.sync,
            &self.changes,
            &self.heads,
        )
            .transaction(|(accounts, events, index, client_ids, sync, log, heads)| {
                refuse_revoked(accounts, account)?;
                let mut delta = 0;
                let m = MirrorTrees {
                    ids: &self.ids,
                    events,
                    index,
                    client_ids,
                    account,
                    calendar,
                };
                for p in page.puts {
                    delta += m.put(p)?;
                }
                for r in page.removes {
                    delta += m.remove(r)?;
                }
                sync.insert(cal_key(&self.ids, account, calendar), state_bytes.clone())?;
                append_changes(
                    &self.ids,
                    log,
                    heads,
                    page.tenant,
                    page.changes,
                    page.now_ms,
                )?;
                Ok(delta)
            });
        self.event_counts
            .finish(account, calendar, *committed.as_ref().unwrap_or(&0));
        committed?;
        self.sync_states.set(account, calendar, page.state.clone());
        Ok(())
    }

    /// Records the result of a write: the mirror entry and the removal of
    /// its outbox entry, atomically.
    pub fn commit_write(
        &self,
        account: &str,
        calendar: &str,
        put: Option<&MirrorPut>,
        remove: Option<&MirrorRemove>,
        outbox_id: u64,
    ) -> Result<(), StoreError> {
        self.event_counts.begin();
        let committed = (
            &self.accounts,
            &self.events,
            &self.event_index,
            &self.client_ids,
            &self.outbox,
        )
            .transaction(|(accounts, events, index, client_ids, outbox)| {
                refuse_revoked(accounts, account)?;
                let mut delta = 0;
                let m = MirrorTrees {
                    ids: &self.ids,
                    events,
                    index,
                    client_ids,
                    account,
                    calendar,
                };
                if let Some(p) = put {
                    delta += m.put(p)?;
                }
                if let Some(r) = remove {
                    delta += m.remove(r)?;
                }
                outbox.remove(&outbox_id.to_be_bytes())?;
                Ok(delta)
            });
        self.event_counts
            .finish(account, calendar, *committed.as_ref().unwrap_or(&0));
        committed?;
        Ok(())
    }

    // ---- outbox ----

    /// Adds a pending write (refused for a revoked account).
    pub fn outbox_put(&self, r: &OutboxRecord) -> Result<(), StoreError> {
        let bytes = enc_ids(&self.ids, r);
        (&self.accounts, &self.outbox).transaction(|(accounts, outbox)| {
            refuse_revoked(accounts, &r.account_id)?;
            outbox.insert(&r.op_id.to_be_bytes(), bytes.clone())?;
            Ok(())
        })?;
        Ok(())
    }

    /// Drops a pending write without result (it failed for good).
    pub fn outbox_remove(&self, op_id: u64) -> Result<(), StoreError> {
        self.outbox.remove(op_id.to_be_bytes())?;
        Ok(())
    }

    /// Every pending write, oldest first.
    pub fn outbox_all(&self) -> Result<Vec<OutboxRecord>, StoreError> {
        self.outbox
            .iter()
            .values()
            .map(|v| dec_ids(&self.ids, "outbox", &v?))
            .collect()
    }

    // ---- change log ----

    /// Appends change-log entries outside a sync page (account status).
    pub fn append_changes(
        &self,
        tenant: &str,
        changes: &[ChangeDraft],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        (&self.changes, &self.heads).transaction(|(log, heads)| {
            append_changes(&self.ids, log, heads, tenant, changes, now_ms)
        })?;
        Ok(())
    }

    /// Appends change-log entries about one account (its status), refused
    /// once the account is revoked: nothing of it follows REVOKED.
    pub fn append_account_changes(
        &self,
        account: &str,
        tenant: &str,
        changes: &[ChangeDraft],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        (&self.accounts, &self.changes, &self.heads).transaction(|(accounts, log, heads)| {
            refuse_revoked(accounts, account)?;
            append_changes(&self.ids, log, heads, tenant, changes, now_ms)
        })?;
        Ok(())
    }

    /// The bounds of a tenant's log.
    pub fn log_bounds(&self, tenant: &str) -> Result<LogBounds, StoreError> {
        Ok(self
            .heads
            .get(tenant)?
            .map(|v| dec("log bounds", &v))
            .transpose()?
            .unwrap_or_default())
    }

    /// Changes of a tenant after `after_seq`, at most `limit`.
    pub fn changes_after(
        &self,
        tenant: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<ChangeRecord>, StoreError> {
        let p = prefix(&[tenant]);
        let mut out = Vec::new();
        for item in self
            .changes
            .range(seq_key(tenant, after_seq.saturating_add(1))..)
        {
            let (k, v) = item?;
            if !k.starts_with(&p) || out.len() >= limit {
                break;
            }
            out.push(dec_ids(&self.ids, "change", &v)?);
        }
        Ok(out)
    }

    /// Deletes a tenant's changes recorded before `cutoff_ms`; returns how
    /// many went.
    pub fn prune_changes(&self, tenant: &str, cutoff_ms: i64) -> Result<usize, StoreError> {
        let p = prefix(&[tenant]);
        let mut last = None;
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for item in self.changes.scan_prefix(&p) {
            let (k, v) = item?;
            let c: ChangeRecord = dec("change", &v)?;
            if c.recorded_ms >= cutoff_ms {
                break;
            }
            batch.remove(k);
            last = Some(c.seq);
            n += 1;
        }
        if let Some(seq) = last {
            (&self.changes, &self.heads).transaction(|(log, heads)| {
                log.apply_batch(&batch)?;
                let mut b: LogBounds = tx_get(heads, tenant.as_bytes())?.unwrap_or_default();
                b.pruned_through = b.pruned_through.max(seq);
                heads.insert(tenant.as_bytes(), enc(&b))?;
                Ok(())
            })?;
        }
        Ok(n)
    }

    // ---- channels ----

    /// Stores a push channel (refused for a revoked account).
    pub fn put_channel(&self, c: &ChannelRecord) -> Result<(), StoreError> {
        let bytes = enc_ids(&self.ids, c);
        (&self.accounts, &self.channels).transaction(|(accounts, channels)| {
            refuse_revoked(accounts, &c.account_id)?;
            channels.insert(c.channel_id.as_bytes(), bytes.clone())?;
            Ok(())
        })?;
        Ok(())
    }

    /// A push channel.
    pub fn channel(&self, id: &str) -> Result<Option<ChannelRecord>, StoreError> {
        self.channels
            .get(id)?
            .map(|v| dec_ids(&self.ids, "channel", &v))
            .transpose()
    }

    /// Removes a push channel.
    pub fn remove_channel(&self, id: &str) -> Result<(), StoreError> {
        self.channels.remove(id)?;
        Ok(())
    }

    /// Every push channel.
    pub fn channels(&self) -> Result<Vec<ChannelRecord>, StoreError> {
        self.channels
            .iter()
            .values()
            .map(|v| dec_ids(&self.ids, "channel", &v?))
            .collect()
    }

    // ---- pending OAuth authorisations ----

    /// Stores a pending authorisation under the hash of its state.
    pub fn put_auth_state(&self, state_hash: &str, r: &AuthStateRecord) -> Result<(), StoreError> {
        self.auth_states.insert(state_hash.as_bytes(), enc(r))?;
        Ok(())
    }

    /// A pending authorisation, left in place.
    pub fn auth_state(&self, state_hash: &str) -> Result<Option<AuthStateRecord>, StoreError> {
        self.auth_states
            .get(state_hash.as_bytes())?
            .map(|v| dec("auth state", &v))
            .transpose()
    }

    /// Removes and returns a pending authorisation: of two callers with the
    /// same state, only one gets it.
    pub fn take_auth_state(&self, state_hash: &str) -> Result<Option<AuthStateRecord>, StoreError> {
        self.auth_states
            .remove(state_hash.as_bytes())?
            .map(|v| dec("auth state", &v))
            .transpose()
    }

    /// Removes pending authorisations that expired before `now_ms`.
    pub fn prune_auth_states(&self, now_ms: i64) -> Result<usize, StoreError> {
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for item in self.auth_states.iter() {
            let (k, v) = item?;
            let r: AuthStateRecord = dec("auth state", &v)?;
            if r.expires_ms <= now_ms {
                batch.remove(k);
                n += 1;
            }
        }
        self.auth_states.apply_batch(batch)?;
        Ok(n)
    }

    // ---- holds and working hours ----

    /// Stores a hold (refused when it names a revoked account).
    pub fn put_hold(&self, tenant: &str, h: &HoldRecord) -> Result<(), StoreError> {
        let bytes = enc(h);
        (&self.accounts, &self.holds).transaction(|(accounts, holds)| {
            for a in &h.account_ids {
                refuse_revoked(accounts, a)?;
            }
            holds.insert(key(&[tenant, &h.hold_id]), bytes.clone())?;
            Ok(())
        })?;
        Ok(())
    }

    /// A hold of a tenant.
    pub fn hold(&self, tenant: &str, id: &str) -> Result<Option<HoldRecord>, StoreError> {
        self.holds
            .get(key(&[tenant, id]))?
            .map(|v| dec("hold", &v))
            .transpose()
    }

    /// Removes a hold; false when it was not there.
    pub fn remove_hold(&self, tenant: &str, id: &str) -> Result<bool, StoreError> {
        Ok(self.holds.remove(key(&[tenant, id]))?.is_some())
    }

    /// A tenant's holds (expired ones included; callers filter).
    pub fn holds(&self, tenant: &str) -> Result<Vec<HoldRecord>, StoreError> {
        self.holds
            .scan_prefix(prefix(&[tenant]))
            .values()
            .map(|v| dec("hold", &v?))
            .collect()
    }

    /// Removes every tenant's holds that expired before `now_ms`.
    pub fn prune_holds(&self, now_ms: i64) -> Result<usize, StoreError> {
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for item in self.holds.iter() {
            let (k, v) = item?;
            let h: HoldRecord = dec("hold", &v)?;
            if h.expires_ms <= now_ms {
                batch.remove(k);
                n += 1;
            }
        }
        self.holds.apply_batch(batch)?;
        Ok(n)
    }

    /// Stores encoded working hours under a tenant's id.
    pub fn put_working_hours(
        &self,
        tenant: &str,
        id: &str,
        encoded: &[u8],
    ) -> Result<(), StoreError> {
        self.working_hours.insert(key(&[tenant, id]), encoded)?;
        Ok(())
    }

    /// Encoded working hours of a tenant's id.
    pub fn working_hours(&self, tenant: &str, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .working_hours
            .get(key(&[tenant, id]))?
            .map(|v| v.to_vec()))
    }

    /// Every working-hours entry of a tenant: (id, encoded).
    pub fn all_working_hours(&self, tenant: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let p = prefix(&[tenant]);
        self.working_hours
            .scan_prefix(&p)
            .map(|item| {
                let (k, v) = item?;
                Ok((
                    String::from_utf8_lossy(&k[p.len()..]).into_owned(),
                    v.to_vec(),
                ))
            })
            .collect()
    }

    /// Deletes working hours; false when unknown.
    pub fn delete_working_hours(&self, tenant: &str, id: &str) -> Result<bool, StoreError> {
        Ok(self.working_hours.remove(key(&[tenant, id]))?.is_some())
    }

    // ---- revocation ----

    /// Deletes every row of an account but its (already scrubbed) account
    /// record and its change-log entries; see [`Store::purge_accounts_rows`].
    pub fn purge_account_rows(&self, account: &str) -> Result<usize, StoreError> {
        self.purge_accounts_rows(&std::iter::once(account.to_string()).collect())
    }

    /// Deletes every row that names one of `accounts` but their (already
    /// scrubbed) account records and the change log (whose sequence must
    /// stay gapless): calendars, sync states, mirror, client ids, channels,
    /// pending writes, pending re-authorisations, identity mappings, and
    /// their place in holds (a hold that names no other account goes).
    /// Returns how many rows went.
    pub fn purge_accounts_rows(
        &self,
        accounts: &std::collections::HashSet<String>,
    ) -> Result<usize, StoreError> {
        if accounts.is_empty() {
            return Ok(0);
        }
        let mut n = 0;
        {
            let _writer = self.sync_states.writer();
            for account in accounts {
                let p = prefix(&[account]);
                self.event_counts.begin();
                let purged = (|| -> Result<usize, StoreError> {
                    let mut n = 0;
                    for tree in [
                        &self.calendars,
                        &self.sync,
                        &self.events,
                        &self.event_index,
                        &self.client_ids,
                    ] {
                        let mut batch = sled::Batch::default();
                        for k in tree.scan_prefix(&p).keys() {
                            batch.remove(k?);
                            n += 1;
                        }
                        tree.apply_batch(batch)?;
                        if std::ptr::eq(tree, &self.sync) {
                            self.sync_states.remove_account(account);
                        }
                    }
                    Ok(n)
                })();
                self.event_counts.forget(account, None);
                n += purged?;
            }
        }
        let named = |id: &str| accounts.contains(id);
        for c in self.channels()? {
            if named(&c.account_id) {
                self.channels.remove(c.channel_id.as_bytes())?;
                n += 1;
            }
        }
        for o in self.outbox_all()? {
            if named(&o.account_id) {
                self.outbox_remove(o.op_id)?;
                n += 1;
            }
        }
        for item in self.auth_states.iter() {
            let (k, v) = item?;
            if dec::<AuthStateRecord>("auth state", &v).is_ok_and(|r| named(&r.account_id)) {
                self.auth_states.remove(k)?;
                n += 1;
            }
        }
        for item in self.identities.iter() {
            let (k, v) = item?;
            if named(&String::from_utf8_lossy(&v)) {
                self.identities.remove(k)?;
                n += 1;
            }
        }
        for item in self.holds.iter() {
            let (k, v) = item?;
            let Ok(mut h) = dec::<HoldRecord>("hold", &v) else {
                continue;
            };
            if !h.account_ids.iter().any(|a| named(a)) {
                continue;
            }
            h.account_ids.retain(|a| !named(a));
            if h.account_ids.is_empty() {
                self.holds.remove(k)?;
            } else {
                self.holds.insert(k, enc(&h))?;
            }
            n += 1;
        }
        Ok(n)
    }

    /// Removes an identity mapping (after revocation).
    pub fn remove_identity(&self, identity_hash: &str) -> Result<(), StoreError> {
        self.identities.remove(identity_hash)?;
        Ok(())
    }
}

/// One calendar's mirror trees inside a transaction.
struct MirrorTrees<'a> {
    ids: &'a IdCipher,
    events: &'a TransactionalTree,
    index: &'a TransactionalTree,
    client_ids: &'a TransactionalTree,
    account: &'a str,
    calendar: &'a str,
}

impl MirrorTrees<'_> {
    fn index_key(&self, start_ms: i64, pid: &str) -> Vec<u8> {
        index_key(self.ids, self.account, self.calendar, start_ms, pid)
    }

    fn item_key(&self, item: &str) -> Vec<u8> {
        item_key(self.ids, self.account, self.calendar, item)
    }

    /// Puts an event; 1 when it was not mirrored before.
    fn put(&self, p: &MirrorPut) -> TxResult<i64> {
        let pid = &p.provider_event_id;
        if let Some(prev) = p.previous_start_ms {
            self.index.remove(self.index_key(prev, pid))?;
        }
        if let Some(prev) = &p.previous_client_id {
            if p.record.client_event_id.as_deref() != Some(prev) {
                self.client_ids.remove(self.item_key(prev))?;
            }
        }
        let added = self
            .events
            .insert(self.item_key(pid), enc_ids(self.ids, &p.record))?
            .is_none();
        self.index.insert(
            self.index_key(p.record.start_ms, pid),
            enc(&IndexEntry {
                end_ms: p.record.end_ms,
                busy: p.record.busy,
                all_day: p.record.all_day,
            }),
        )?;
        if let Some(c) = &p.record.client_event_id {
            self.client_ids
                .insert(self.item_key(c), self.ids.seal(pid).as_bytes())?;
        }
        Ok(i64::from(added))
    }

    /// Removes an event; -1 when it was mirrored.
    fn remove(&self, r: &MirrorRemove) -> TxResult<i64> {
        let removed = self
            .events
            .remove(self.item_key(&r.provider_event_id))?
            .is_some();
        self.index
            .remove(self.index_key(r.start_ms, &r.provider_event_id))?;
        if let Some(c) = &r.client_event_id {
            self.client_ids.remove(self.item_key(c))?;
        }
        Ok(-i64::from(removed))
    }
}

fn append_changes(
    ids: &IdCipher,
    log: &TransactionalTree,
    heads: &TransactionalTree,
    tenant: &str,
    changes: &[ChangeDraft],
    now_ms: i64,
) -> TxResult<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let mut bounds: LogBounds = tx_get(heads, tenant.as_bytes())?.unwrap_or_default();
    for c in changes {
        bounds.head += 1;
        let rec = ChangeRecord {
            seq: bounds.head,
            kind: c.kind,
            account_id: c.account_id.clone(),
            calendar_id: c.calendar_id.clone(),
            provider_event_id: c.provider_event_id.clone(),
            account_status: c.account_status,
            recorded_ms: now_ms,
            sealed_event: c.sealed_event.clone(),
        };
        log.insert(seq_key(tenant, bounds.head), enc_ids(ids, &rec))?;
    }
    heads.insert(tenant.as_bytes(), enc(&bounds))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The id key of the stores these tests open (the same across reopens).
    fn ids() -> IdCipher {
        IdCipher::from_raw(&[7; 32])
    }

    fn draft(kind: i32) -> ChangeDraft {
        ChangeDraft {
            kind,
            account_id: "a".into(),
            calendar_id: "c".into(),
            provider_event_id: "e".into(),
            account_status: 0,
            sealed_event: vec![],
        }
    }

    fn record(start: i64, end: i64) -> EventRecord {
        EventRecord {
            version: "v1".into(),
            start_ms: start,
            end_ms: end,
            busy: 1,
            client_event_id: Some("mine".into()),
            all_day: None,
            written_hash: None,
            sealed: vec![1, 2, 3],
        }
    }

    #[test]
    fn change_sequences_are_per_tenant_and_gapless() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), ids()).unwrap();
        s.append_changes("t1", &[draft(1), draft(2)], 0).unwrap();
        s.append_changes("t2", &[draft(1)], 0).unwrap();
        s.append_changes("t1", &[draft(3)], 0).unwrap();
        let seqs: Vec<u64> = s
            .changes_after("t1", 0, 100)
            .unwrap()
            .iter()
            .map(|c| c.seq)
            .collect();
        assert_eq!(seqs, vec![1, 2, 3]);
        assert_eq!(s.changes_after("t1", 2, 100).unwrap().len(), 1);
        assert_eq!(s.log_bounds("t2").unwrap().head, 1);
    }

    #[test]
    fn pruning_moves_the_floor() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), ids()).unwrap();
        s.append_changes("t", &[draft(1), draft(1)], 10).unwrap();
        s.append_changes("t", &[draft(1)], 50).unwrap();
        assert_eq!(s.prune_changes("t", 20).unwrap(), 2);
        let b = s.log_bounds("t").unwrap();
        assert_eq!((b.head, b.pruned_through), (3, 2));
        assert_eq!(s.changes_after("t", 0, 10).unwrap()[0].seq, 3);
    }

    #[test]
    fn overlap_query_uses_start_and_end() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), ids()).unwrap();
        let st = SyncRecord::default();
        let puts: Vec<MirrorPut> = [(0, 10, "a"), (5, 30, "b"), (40, 50, "c"), (-100, -50, "d")]
            .iter()
            .map(|(a, b, id)| MirrorPut {
                provider_event_id: id.to_string(),
                record: EventRecord {
                    client_event_id: None,
                    ..record(*a, *b)
                },
                previous_start_ms: None,
                previous_client_id: None,
            })
            .collect();
        s.apply_sync_page(&PageCommit {
            tenant: "t",
            account: "acc",
            calendar: "cal",
            puts: &puts,
            removes: &[],
            state: &st,
            changes: &[],
            now_ms: 0,
        })
        .unwrap();
        let ids: Vec<String> = s
            .events_overlapping("acc", "cal", 8, 45, None, 100)
            .unwrap()
            .into_iter()
            .map(|(_, id, _)| id)
            .collect();
        assert_eq!(ids, vec!["a", "b", "c"]);
        let page = s
            .events_overlapping("acc", "cal", 8, 45, Some((0, "a")), 100)
            .unwrap();
        assert_eq!(page.len(), 2);
    }

    #[test]
    fn a_write_commit_removes_the_outbox_entry_and_maps_the_client_id() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), ids()).unwrap();
        let op = OutboxRecord::for_test(7, "acc");
        s.outbox_put(&op).unwrap();
        let put = MirrorPut {
            provider_event_id: "p1".into(),
            record: record(0, 10),
            previous_start_ms: None,
            previous_client_id: None,
        };
        s.commit_write("acc", "cal", Some(&put), None, 7).unwrap();
        assert!(s.outbox_all().unwrap().is_empty());
        assert_eq!(
            s.provider_id_for_client("acc", "cal", "mine")
                .unwrap()
                .as_deref(),
            Some("p1")
        );
    }

    fn revoked_account(id: &str) -> AccountRecord {
        AccountRecord {
            status: calbridge::pb::AccountStatus::Revoked as i32,
            ..AccountRecord::for_test(id)
        }
    }

    fn channel_record(id: &str, account: &str) -> ChannelRecord {
        ChannelRecord {
            channel_id: id.into(),
            account_id: account.into(),
            calendar_id: "cal".into(),
            token_hash: String::new(),
            resource_id: String::new(),
            expires_ms: 0,
        }
    }

    fn hold_record(id: &str, accounts: &[&str]) -> HoldRecord {
        HoldRecord {
            hold_id: id.into(),
            account_ids: accounts.iter().map(|a| a.to_string()).collect(),
            start_ms: 0,
            end_ms: 10,
            expires_ms: i64::MAX,
        }
    }

    fn page<'a>(account: &'a str, puts: &'a [MirrorPut], st: &'a SyncRecord) -> PageCommit<'a> {
        PageCommit {
            tenant: "t",
            account,
            calendar: "cal",
            puts,
            removes: &[],
            state: st,
            changes: &[],
            now_ms: 0,
        }
    }

    /// Every row that names `account`, tree by tree (the account record
    /// and the change log aside).
    fn rows_naming(s: &Store, account: &str) -> Vec<String> {
        let p = prefix(&[account]);
        let mut out = Vec::new();
        for (name, tree) in [
            ("calendars", &s.calendars),
            ("sync", &s.sync),
            ("events", &s.events),
            ("event_index", &s.event_index),
            ("client_ids", &s.client_ids),
        ] {
            for k in tree.scan_prefix(&p).keys() {
                out.push(format!("{name} {:?}", k.unwrap()));
            }
        }
        out.extend(
            s.channels()
                .unwrap()
                .into_iter()
                .filter(|c| c.account_id == account)
                .map(|c| format!("channel {}", c.channel_id)),
        );
        out.extend(
            s.outbox_all()
                .unwrap()
                .into_iter()
                .filter(|o| o.account_id == account)
                .map(|o| format!("outbox {}", o.op_id)),
        );
        out.extend(
            s.holds("t")
                .unwrap()
                .into_iter()
                .filter(|h| h.account_ids.iter().any(|a| a == account))
                .map(|h| format!("hold {}", h.hold_id)),
        );
        for item in s.identities.iter() {
            let (k, v) = item.unwrap();
            if v.as_ref() == account.as_bytes() {
                out.push(format!("identity {k:?}"));
            }
        }
        for item in s.auth_states.iter() {
            let (k, v) = item.unwrap();
            if dec::<AuthStateRecord>("auth state", &v).unwrap().account_id == account {
                out.push(format!("auth state {k:?}"));
            }
        }
        if s.all_sync_states()
            .unwrap()
            .iter()
            .any(|(a, _, _)| a == account)
        {
            out.push("sync state in memory".into());
        }
        out
    }

    /// Writes one row of `account` into every tree that can name it.
    fn fill(s: &Store, account: &str) {
        let acc = AccountRecord {
            identity_hash: format!("id-{account}"),
            ..AccountRecord::for_test(account)
        };
        s.put_account_with_calendars(&acc, &[CalendarRecord::for_test("cal")], 0)
            .unwrap();
        let put = MirrorPut {
            provider_event_id: "p1".into(),
            record: record(0, 10),
            previous_start_ms: None,
            previous_client_id: None,
        };
        s.apply_sync_page(&page(account, &[put], &SyncRecord::default()))
            .unwrap();
        s.outbox_put(&OutboxRecord::for_test(s.next_id().unwrap(), account))
            .unwrap();
        s.put_channel(&channel_record(&format!("ch-{account}"), account))
            .unwrap();
        s.put_hold("t", &hold_record(&format!("alone-{account}"), &[account]))
            .unwrap();
        s.put_auth_state(
            &format!("state-{account}"),
            &AuthStateRecord {
                tenant_id: "t".into(),
                provider: 1,
                access_level: 1,
                redirect_uri: String::new(),
                account_id: account.into(),
                wrapped_key: vec![],
                sealed_verifier: vec![],
                expires_ms: i64::MAX,
            },
        )
        .unwrap();
    }

    #[test]
    fn a_revoked_account_takes_no_new_rows() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), ids()).unwrap();
        s.put_account_with_calendars(
            &AccountRecord::for_test("acc"),
            &[CalendarRecord::for_test("cal")],
            0,
        )
        .unwrap();
        s.purge_account_rows("acc").unwrap();
        s.put_account(&revoked_account("acc")).unwrap();

        let put = MirrorPut {
            provider_event_id: "late".into(),
            record: record(0, 10),
            previous_start_ms: None,
            previous_client_id: None,
        };
        let st = SyncRecord::default();
        let changes = [draft(calbridge::pb::ChangeKind::EventCreated as i32)];
        let refused = |r: Result<(), StoreError>, what: &str| {
            assert!(
                matches!(r, Err(StoreError::AccountRevoked)),
                "{what}: {r:?}"
            );
        };
        refused(
            s.apply_sync_page(&PageCommit {
                changes: &changes,
                ..page("acc", std::slice::from_ref(&put), &st)
            }),
            "a sync page",
        );
        refused(
            s.commit_write("acc", "cal", Some(&put), None, 1),
            "a write's result",
        );
        refused(s.put_sync_state("acc", "cal", &st), "a sync state");
        refused(
            s.put_account_with_calendars(
                &AccountRecord::for_test("acc"),
                &[CalendarRecord::for_test("cal")],
                0,
            ),
            "a reconnection",
        );
        refused(
            s.put_account(&AccountRecord::for_test("acc")),
            "an active record",
        );
        refused(
            s.put_account_with_changes(&AccountRecord::for_test("acc"), &changes, 0),
            "an active record with changes",
        );
        refused(
            s.append_account_changes("acc", "t", &changes, 0),
            "a status change",
        );
        refused(
            s.put_calendar("acc", &CalendarRecord::for_test("cal")),
            "a calendar",
        );
        refused(
            s.outbox_put(&OutboxRecord::for_test(9, "acc")),
            "a pending write",
        );
        refused(s.put_channel(&channel_record("ch", "acc")), "a channel");
        refused(
            s.put_hold("t", &hold_record("h", &["other", "acc"])),
            "a hold",
        );
        assert_eq!(rows_naming(&s, "acc"), Vec::<String>::new());
        assert!(
            s.changes_after("t", 0, 10).unwrap().is_empty(),
            "no change logged"
        );
        assert_eq!(
            s.account("acc").unwrap().unwrap().status,
            calbridge::pb::AccountStatus::Revoked as i32
        );
        // A revoked record may still be written (revocation itself).
        s.put_account(&revoked_account("acc")).unwrap();
    }

    #[test]
    fn purging_accounts_clears_every_tree_that_names_them_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), ids()).unwrap();
        for a in ["gone", "kept"] {
            fill(&s, a);
        }
        s.put_hold("t", &hold_record("shared", &["gone", "kept"]))
            .unwrap();
        assert!(
            rows_naming(&s, "gone").len() >= 12,
            "{:?}",
            rows_naming(&s, "gone")
        );
        let kept_before = rows_naming(&s, "kept");

        let n = s
            .purge_accounts_rows(&std::iter::once("gone".to_string()).collect())
            .unwrap();
        assert_eq!(rows_naming(&s, "gone"), Vec::<String>::new());
        // Calendar, sync state, event, index entry, client id, channel,
        // pending write, pending authorisation, identity, and two holds.
        assert_eq!(n, 11, "rows purged");
        assert_eq!(rows_naming(&s, "kept"), kept_before);
        // The hold both named still holds the other account.
        assert_eq!(
            s.hold("t", "shared").unwrap().unwrap().account_ids,
            vec!["kept".to_string()]
        );
        assert!(s.hold("t", "alone-gone").unwrap().is_none());
        assert_eq!(s.event_count("gone", "cal"), 0);
        assert_eq!(s.event_count("kept", "cal"), 1);
        let after_reopen = {
            drop(s);
            reopen(dir.path())
        };
        assert_eq!(rows_naming(&after_reopen, "gone"), Vec::<String>::new());
    }

    #[test]
    fn reopening_keeps_the_schema_version() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path(), ids()).unwrap());
        let s = reopen(dir.path());
        assert_eq!(
            s.meta_get(SCHEMA_KEY).unwrap().unwrap(),
            SCHEMA_VERSION.to_be_bytes().to_vec()
        );
    }

    /// Opens the store again after its previous handle was dropped. sled
    /// releases the directory's lock when its flusher thread has stopped,
    /// which can be a moment after the drop: the open is retried until then.
    fn reopen(dir: &Path) -> Store {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match Store::open(dir, ids()) {
                Ok(s) => return s,
                Err(e) if std::time::Instant::now() < deadline => {
                    assert!(e.to_string().contains("lock"), "{e}");
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// The `sync` tree decoded straight from sled, as `all_sync_states`
    /// shows it.
    fn tree_states(s: &Store) -> Vec<String> {
        let mut out: Vec<String> = s
            .sync
            .iter()
            .map(|item| {
                let (k, v) = item.unwrap();
                let k = String::from_utf8(k.to_vec()).unwrap();
                let (a, c) = k.split_once('\0').unwrap();
                let k = format!("{a}/{}", s.ids.open(c).unwrap());
                let st: SyncRecord = dec_ids(&s.ids, "sync", &v).unwrap();
                format!("{k} {st:?}")
            })
            .collect();
        out.sort();
        out
    }

    fn memory_states(s: &Store) -> Vec<String> {
        let mut out: Vec<String> = s
            .all_sync_states()
            .unwrap()
            .into_iter()
            .map(|(a, c, st)| format!("{a}/{c} {st:?}"))
            .collect();
        out.sort();
        out
    }

    #[derive(Debug, Clone)]
    enum SyncOp {
        Put(usize, usize, i64),
        Page(usize, usize, i64),
        Paused(usize, bool, i64),
        Clear(usize, usize),
        Connect(usize, Vec<bool>, i64),
        Purge(usize),
        Write(usize, usize, i64),
    }

    fn arb_sync_op() -> impl proptest::strategy::Strategy<Value = SyncOp> {
        use proptest::prelude::*;
        prop_oneof![
            (0..2usize, 0..3usize, 0..100i64).prop_map(|(a, c, t)| SyncOp::Put(a, c, t)),
            (0..2usize, 0..3usize, 0..100i64).prop_map(|(a, c, t)| SyncOp::Page(a, c, t)),
            (0..2usize, any::<bool>(), 0..100i64).prop_map(|(a, p, t)| SyncOp::Paused(a, p, t)),
            (0..2usize, 0..3usize).prop_map(|(a, c)| SyncOp::Clear(a, c)),
            (
                0..2usize,
                proptest::collection::vec(any::<bool>(), 0..3),
                0..100i64
            )
                .prop_map(|(a, cs, t)| SyncOp::Connect(a, cs, t)),
            (0..2usize).prop_map(SyncOp::Purge),
            (0..2usize, 0..3usize, 0..100i64).prop_map(|(a, c, t)| SyncOp::Write(a, c, t)),
        ]
    }

    /// A mirror put of `id` starting at `slot` hundred ms.
    fn mirror_put(id: &str, slot: i64) -> MirrorPut {
        MirrorPut {
            provider_event_id: id.to_string(),
            record: EventRecord {
                client_event_id: None,
                ..record(slot * 100, slot * 100 + 50)
            },
            previous_start_ms: None,
            previous_client_id: None,
        }
    }

    fn mirror_remove(id: &str, slot: i64) -> MirrorRemove {
        MirrorRemove {
            provider_event_id: id.to_string(),
            start_ms: slot * 100,
            client_event_id: None,
        }
    }

    fn apply_sync_op(s: &Store, op: &SyncOp) {
        let acc = |a: usize| format!("acc{a}");
        let cal = |c: usize| format!("cal{c}");
        let state = |t: i64| SyncRecord {
            cursor: format!("cursor-{t}"),
            next_due_ms: t,
            last_success_ms: Some(t * 1000),
            failures: (t % 3) as u32,
            ..Default::default()
        };
        match op {
            SyncOp::Put(a, c, t) => s.put_sync_state(&acc(*a), &cal(*c), &state(*t)).unwrap(),
            SyncOp::Page(a, c, t) => s
                .apply_sync_page(&PageCommit {
                    tenant: "t",
                    account: &acc(*a),
                    calendar: &cal(*c),
                    // Pages of odd times put one event and remove another
                    // (each id has one start, so its index entry is found).
                    puts: &if t % 2 == 1 {
                        vec![mirror_put(&format!("e{}", t % 4), t % 4)]
                    } else {
                        vec![]
                    },
                    removes: &if t % 2 == 1 {
                        vec![mirror_remove(&format!("e{}", (t + 1) % 4), (t + 1) % 4)]
                    } else {
                        vec![]
                    },
                    state: &state(*t),
                    changes: &[draft(calbridge::pb::ChangeKind::EventCreated as i32)],
                    now_ms: *t,
                })
                .unwrap(),
            SyncOp::Paused(a, p, t) => s.set_account_paused(&acc(*a), *p, *t).unwrap(),
            SyncOp::Clear(a, c) => s.clear_calendar_mirror(&acc(*a), &cal(*c)).unwrap(),
            SyncOp::Write(a, c, t) => {
                let id = format!("w{}", t % 2);
                let (put, remove) = if t % 3 == 0 {
                    (None, Some(mirror_remove(&id, t % 2)))
                } else {
                    (Some(mirror_put(&id, t % 2)), None)
                };
                s.commit_write(&acc(*a), &cal(*c), put.as_ref(), remove.as_ref(), 1)
                    .unwrap()
            }
            SyncOp::Connect(a, synced, t) => {
                let account = AccountRecord::for_test(&acc(*a));
                let calendars: Vec<CalendarRecord> = synced
                    .iter()
                    .enumerate()
                    .map(|(c, on)| CalendarRecord {
                        calendar_id: cal(c),
                        sealed_name: vec![],
                        primary: c == 0,
                        read_only: false,
                        time_zone: "UTC".into(),
                        synced: *on,
                        color: String::new(),
                    })
                    .collect();
                s.put_account_with_calendars(&account, &calendars, *t)
                    .unwrap()
            }
            SyncOp::Purge(a) => {
                s.purge_account_rows(&acc(*a)).unwrap();
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        #[test]
        fn sync_states_in_memory_and_event_counts_equal_the_trees_after_every_write(
            ops in proptest::collection::vec(arb_sync_op(), 1..24)
        ) {
            let dir = tempfile::tempdir().unwrap();
            let s = Store::open(dir.path(), ids()).unwrap();
            // Cells taken before any write (as a cached participant keeps
            // them) follow every later write.
            let cells: Vec<(String, String, Arc<FreshnessCell>)> = (0..2)
                .flat_map(|a| (0..3).map(move |c| (format!("acc{a}"), format!("cal{c}"))))
                .map(|(a, c)| {
                    let cell = s.freshness(&a, &c);
                    (a, c, cell)
                })
                .collect();
            for op in &ops {
                apply_sync_op(&s, op);
                proptest::prop_assert_eq!(memory_states(&s), tree_states(&s), "after {:?}", op);
                // Counts kept between writes equal a fresh count.
                for (a, c, _) in &cells {
                    let scanned = s.events.scan_prefix(cal_prefix(&s.ids, a, c)).count() as u64;
                    proptest::prop_assert_eq!(s.event_count(a, c), scanned, "{}/{} after {:?}", a, c, op);
                }
                for (a, c, cell) in &cells {
                    let stored = s.sync_state(a, c).unwrap().and_then(|st| st.last_success_ms);
                    proptest::prop_assert_eq!(cell.get(), stored, "{}/{} after {:?}", a, c, op);
                }
            }
            let before = memory_states(&s);
            drop(s);
            let s = reopen(dir.path());
            proptest::prop_assert_eq!(memory_states(&s), before, "after reopening");
        }
    }

    #[test]
    fn concurrent_sync_state_writers_leave_memory_and_counts_equal_to_the_trees() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), ids()).unwrap();
        std::thread::scope(|scope| {
            for w in 0..4i64 {
                let s = &s;
                scope.spawn(move || {
                    for i in 0..100i64 {
                        let op = match (w + i) % 4 {
                            0 => SyncOp::Put(0, 0, w * 1000 + i),
                            1 => SyncOp::Page(0, 0, w * 1000 + i),
                            2 => SyncOp::Paused(0, i % 2 == 0, w * 1000 + i),
                            _ => SyncOp::Connect(0, vec![true, i % 3 == 0], w * 1000 + i),
                        };
                        apply_sync_op(s, &op);
                    }
                });
            }
            // Counts asked for while the pages write the mirror.
            let s = &s;
            scope.spawn(move || {
                for _ in 0..400 {
                    s.event_count("acc0", "cal0");
                }
            });
        });
        assert_eq!(memory_states(&s), tree_states(&s));
        let scanned = s
            .events
            .scan_prefix(cal_prefix(&s.ids, "acc0", "cal0"))
            .count() as u64;
        assert_eq!(s.event_count("acc0", "cal0"), scanned);
        let expected = s
            .sync_state("acc0", "cal0")
            .unwrap()
            .unwrap()
            .last_success_ms;
        assert!(expected.is_some());
        assert_eq!(s.freshness("acc0", "cal0").get(), expected);
        assert_eq!(s.freshness("acc0", "nope").get(), None);
        assert_eq!(s.freshness("nobody", "cal0").get(), None);
    }
}
