//! The scheduler's shared state: the store, the key vault holding account
//! data keys, the adapter clients, and the signals that
//! connect the API, the sync loop and the change feed. Also the sealing of
//! event content and credentials, and the conversion of stored records to
//! contract messages.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use calbridge::pb;
use calbridge::ErrorKind;
use chrono::Utc;
use prost::Message;
use sha2::{Digest, Sha256};
use tokio::sync::{watch, Notify};

use crate::adapters::Adapters;
use crate::config::Config;
use crate::crypto::DataKey;
use crate::keyring::{vault_err, KeyVault};
use crate::store::{AccountRecord, CalendarRecord, ChangeRecord, Store, StoreError};

/// Turns a store error into a safe API error, logging the detail. A write
/// refused because its account was revoked meanwhile is no failure of the
/// store: it answers FAILED_PRECONDITION, as a revoked account does.
pub fn store_err(e: StoreError) -> ErrorKind {
    if let StoreError::AccountRevoked = e {
        return ErrorKind::FailedPrecondition("the account is revoked".into());
    }
    tracing::error!(error = %e, "store failure");
    ErrorKind::Internal("the scheduler's store failed; see its log".into())
}

/// The current time in ms since the epoch.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// `bytes` random bytes as lowercase hex, for ids and tokens.
pub fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut b);
    hex::encode(b)
}

/// A `Timestamp` for ms since the epoch (`None` out of range).
pub fn ts_ms(ms: i64) -> Option<prost_types::Timestamp> {
    chrono::DateTime::from_timestamp_millis(ms).map(calbridge::time::to_timestamp)
}

/// Lowercase hex SHA-256 of `parts` joined by NUL.
pub fn hash_hex(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h.update([0u8]);
        }
        h.update(p.as_bytes());
    }
    hex::encode(h.finalize())
}

/// One blocking mirrored event on a calendar's time line: what free/busy
/// and availability read. No content.
#[derive(Debug, Clone)]
pub struct BusyEntry {
    /// Start, ms.
    pub start_ms: i64,
    /// End, ms.
    pub end_ms: i64,
    /// `pb::BusyStatus` (never 0 here).
    pub busy: i32,
    /// All-day dates, days from the common era.
    pub all_day: Option<(i32, i32)>,
    /// Provider event id.
    pub provider_event_id: String,
}

/// A calendar's blocking events sorted by start, cached in memory.
#[derive(Debug, Default)]
pub struct Timeline {
    /// The entries, by start.
    pub entries: Vec<BusyEntry>,
    /// The longest entry, ms, so overlap queries can skip early entries.
    pub max_len_ms: i64,
}

impl Timeline {
    /// Indices of the entries overlapping [start, end).
    pub fn overlapping(&self, start: i64, end: i64) -> impl Iterator<Item = usize> + '_ {
        let from = self
            .entries
            .partition_point(|e| e.start_ms < start.saturating_sub(self.max_len_ms));
        let to = self.entries.partition_point(|e| e.start_ms < end);
        (from..to.max(from)).filter(move |&i| self.entries[i].end_ms > start)
    }
}

#[derive(Default)]
struct CachedTimeline {
    generation: u64,
    timeline: Option<Arc<Timeline>>,
}

/// A calendar's lock: a sync holds the write side, writes the read side.
pub type CalendarLock = Arc<tokio::sync::RwLock<()>>;

/// Everything the scheduler's tasks share.
pub struct Shared {
    /// The store.
    pub store: Store,
    /// Account data keys (and the master key that seals them).
    pub vault: Arc<dyn KeyVault>,
    /// Adapter clients.
    pub adapters: Adapters,
    /// Configuration.
    pub config: Config,
    /// The URL adapters call back on.
    pub callback_url: String,
    /// Wakes the sync loop.
    pub sync_wake: Notify,
    /// Calendars to sync as soon as possible: (account, calendar).
    pub urgent: Mutex<HashSet<(String, String)>>,
    /// Calendars with writes a crash interrupted that the replay has not
    /// completed yet: (account, calendar). Filled at start, before the sync
    /// loop runs; their syncs wait (see [`crate::writes::replay_outbox`]).
    pub in_doubt: Mutex<HashSet<(String, String)>>,
    /// Bumped after every change-log append; watchers re-read the log.
    pub log_tick: watch::Sender<u64>,
    /// Per-calendar locks: a sync holds the write side, writes the read side.
    pub calendar_locks: Mutex<HashMap<(String, String), CalendarLock>>,
    /// Per-client-id locks, so two upserts of one id never race.
    pub client_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    timelines: Mutex<HashMap<(String, String), CachedTimeline>>,
    /// Participants built for availability requests, kept until their
    /// inputs change (see [`crate::meetings::AvailabilityCache`]; the
    /// signals below call its `account_changed`).
    pub availability_cache: crate::meetings::AvailabilityCache,
}

impl Shared {
    /// Builds the shared state.
    pub fn new(
        store: Store,
        vault: Arc<dyn KeyVault>,
        adapters: Adapters,
        config: Config,
        callback_url: String,
    ) -> Shared {
        let (log_tick, _) = watch::channel(0);
        Shared {
            store,
            vault,
            adapters,
            config,
            callback_url,
            sync_wake: Notify::new(),
            urgent: Mutex::new(HashSet::new()),
            in_doubt: Mutex::new(HashSet::new()),
            log_tick,
            calendar_locks: Mutex::new(HashMap::new()),
            client_locks: Mutex::new(HashMap::new()),
            timelines: Mutex::new(HashMap::new()),
            availability_cache: Default::default(),
        }
    }

    /// Shared state for unit tests: a store in `dir/store`, a keyring in
    /// `dir` under a fresh master key, no adapters and the default
    /// configuration.
    #[cfg(test)]
    pub fn for_test(dir: &std::path::Path) -> Shared {
        use crate::crypto::{MasterKey, MasterKeys};
        let config =
            crate::config::Config::load(crate::config::Flags::default(), &Default::default())
                .unwrap();
        let master = MasterKey::from_bytes(&MasterKey::generate_bytes()).unwrap();
        let vault = crate::keyring::FileKeyring::open(dir, MasterKeys::new(master)).unwrap();
        let ids = crate::keyring::KeyVault::id_cipher(&vault).unwrap();
        Shared::new(
            Store::open(&dir.join("store"), ids).unwrap(),
            Arc::new(vault),
            Adapters::new(&Default::default()).unwrap(),
            config,
            "http://127.0.0.1:1".into(),
        )
    }

    /// A calendar's blocking events, from memory when cached since the last
    /// change of its mirror.
    pub fn timeline(&self, account: &str, calendar: &str) -> Result<Arc<Timeline>, ErrorKind> {
        let key = (account.to_string(), calendar.to_string());
        let generation = {
            let mut cache = self.timelines.lock().expect("lock poisoned");
            let entry = cache.entry(key.clone()).or_default();
            if let Some(t) = &entry.timeline {
                return Ok(t.clone());
            }
            entry.generation
        };
        let mut entries = Vec::new();
        let mut max_len_ms = 0;
        for (start_ms, pid, e) in self
            .store
            .events_overlapping(account, calendar, i64::MIN, i64::MAX, None, usize::MAX)
            .map_err(store_err)?
        {
            if e.busy == 0 {
                continue;
            }
            max_len_ms = max_len_ms.max(e.end_ms - start_ms);
            entries.push(BusyEntry {
                start_ms,
                end_ms: e.end_ms,
                busy: e.busy,
                all_day: e.all_day,
                provider_event_id: pid,
            });
        }
        let timeline = Arc::new(Timeline {
            entries,
            max_len_ms,
        });
        let mut cache = self.timelines.lock().expect("lock poisoned");
        let entry = cache.entry(key).or_default();
        // A change that landed while this was built makes it stale: serve
        // it once, but do not keep it.
        if entry.generation == generation {
            entry.timeline = Some(timeline.clone());
        }
        Ok(timeline)
    }

    /// Forgets a calendar's cached time line after its mirror changed.
    pub fn mirror_changed(&self, account: &str, calendar: &str) {
        let mut cache = self.timelines.lock().expect("lock poisoned");
        let entry = cache
            .entry((account.to_string(), calendar.to_string()))
            .or_default();
        entry.generation += 1;
        entry.timeline = None;
        drop(cache);
        // Availability cache hook: the account's participants are stale.
        self.availability_cache.account_changed(account);
    }

    /// Forgets every cached time line of an account.
    pub fn account_mirror_changed(&self, account: &str) {
        let mut cache = self.timelines.lock().expect("lock poisoned");
        for ((a, _), entry) in cache.iter_mut() {
            if a == account {
                entry.generation += 1;
                entry.timeline = None;
            }
        }
        drop(cache);
        // Availability cache hook: the account's participants are stale.
        self.availability_cache.account_changed(account);
    }

    /// The lock of one calendar.
    pub fn calendar_lock(&self, account: &str, calendar: &str) -> Arc<tokio::sync::RwLock<()>> {
        self.calendar_locks
            .lock()
            .expect("lock poisoned")
            .entry((account.to_string(), calendar.to_string()))
            .or_default()
            .clone()
    }

    /// The lock of one client event id.
    pub fn client_lock(
        &self,
        account: &str,
        calendar: &str,
        client_id: &str,
    ) -> Arc<tokio::sync::Mutex<()>> {
        self.client_locks
            .lock()
            .expect("lock poisoned")
            .entry(hash_hex(&[account, calendar, client_id]))
            .or_default()
            .clone()
    }

    /// Marks a calendar due now and wakes the sync loop.
    pub fn sync_soon(&self, account: &str, calendar: &str) {
        // Availability cache hook: every write of an account's calendar
        // records (connect, re-connect, refresh, turning sync on) is
        // followed by this call.
        self.availability_cache.account_changed(account);
        self.urgent
            .lock()
            .expect("lock poisoned")
            .insert((account.to_string(), calendar.to_string()));
        self.sync_wake.notify_one();
    }

    /// True while writes a crash interrupted on this calendar are not
    /// completed: what the provider holds may be the platform's own write
    /// whose result is not stored yet.
    pub fn writes_in_doubt(&self, account: &str, calendar: &str) -> bool {
        let in_doubt = self.in_doubt.lock().expect("lock poisoned");
        !in_doubt.is_empty() && in_doubt.contains(&(account.to_string(), calendar.to_string()))
    }

    /// Tells change-feed watchers to look at the log.
    pub fn log_appended(&self) {
        self.log_tick.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The data key of an account; `None` when revoked.
    pub fn data_key(&self, account: &AccountRecord) -> Result<Option<DataKey>, ErrorKind> {
        if account.status == pb::AccountStatus::Revoked as i32 {
            return Ok(None);
        }
        match self.vault.data_key(&account.account_id) {
            Some(k) => Ok(Some(k)),
            None => {
                tracing::error!(account_id = %account.account_id, "the keyring holds no data key for this account");
                Err(ErrorKind::Internal("the account's data key is missing from the keyring: was the keyring replaced by an older copy?".into()))
            }
        }
    }

    /// Makes the data key of a new account, stored durably in the vault.
    pub async fn create_data_key(&self, account_id: &str) -> Result<DataKey, ErrorKind> {
        let (vault, id) = (self.vault.clone(), account_id.to_string());
        tokio::task::spawn_blocking(move || vault.create(&id))
            .await
            .map_err(|_| ErrorKind::Internal("the keyring task failed".into()))?
            .map_err(vault_err)
    }

    /// Destroys an account's data key in the vault, durably (revocation):
    /// from then on nothing the scheduler keeps can open what it sealed.
    pub async fn destroy_data_key(&self, account_id: &str) -> Result<(), ErrorKind> {
        let (vault, ids) = (self.vault.clone(), vec![account_id.to_string()]);
        tokio::task::spawn_blocking(move || vault.destroy(&ids))
            .await
            .map_err(|_| ErrorKind::Internal("the keyring task failed".into()))?
            .map_err(vault_err)?;
        Ok(())
    }

    /// The account's data key, or FAILED_PRECONDITION when revoked.
    pub fn live_key(&self, account: &AccountRecord) -> Result<DataKey, ErrorKind> {
        self.data_key(account)?
            .ok_or_else(|| ErrorKind::FailedPrecondition("the account is revoked".into()))
    }

    /// Loads an account of `tenant`; another tenant's account is NOT_FOUND.
    pub fn tenant_account(
        &self,
        tenant: &str,
        account_id: &str,
    ) -> Result<AccountRecord, ErrorKind> {
        match self.store.account(account_id).map_err(store_err)? {
            Some(a) if a.tenant_id == tenant => Ok(a),
            _ => Err(ErrorKind::NotFound(format!(
                "account {account_id:?} not found"
            ))),
        }
    }

    /// The decrypted provider credentials of an account.
    pub fn credentials(
        &self,
        account: &AccountRecord,
    ) -> Result<pb::ProviderCredentials, ErrorKind> {
        let key = self.live_key(account)?;
        let bytes = key
            .open(
                cred_aad(&account.account_id).as_bytes(),
                &account.sealed_credentials,
            )
            .map_err(|_| ErrorKind::Internal("stored credentials cannot be opened".into()))?;
        pb::ProviderCredentials::decode(bytes.as_slice())
            .map_err(|_| ErrorKind::Internal("stored credentials cannot be decoded".into()))
    }

    /// Seals credentials for storage.
    pub fn seal_credentials(
        key: &DataKey,
        account_id: &str,
        c: &pb::ProviderCredentials,
    ) -> Vec<u8> {
        key.seal(cred_aad(account_id).as_bytes(), &c.encode_to_vec())
    }

    /// Converts an account record to the contract message.
    pub fn account_pb(&self, a: &AccountRecord) -> pb::Account {
        let identity = self
            .data_key(a)
            .ok()
            .flatten()
            .and_then(|k| {
                k.open(identity_aad(&a.account_id).as_bytes(), &a.sealed_identity)
                    .ok()
            })
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        pb::Account {
            account_id: a.account_id.clone(),
            provider: a.provider,
            provider_account_id: identity,
            access_level: a.access_level,
            status: a.status,
            status_reason: a.status_reason.clone(),
            created_at: chrono::DateTime::from_timestamp_millis(a.created_ms)
                .map(calbridge::time::to_timestamp),
            server_url: a.server_url.clone(),
            calendars_omitted: a.calendars_omitted,
        }
    }

    /// Converts a calendar record to the contract message.
    pub fn calendar_pb(
        &self,
        key: Option<&DataKey>,
        account_id: &str,
        c: &CalendarRecord,
    ) -> pb::Calendar {
        let name = key
            .and_then(|k| {
                k.open(
                    calendar_aad(account_id, &c.calendar_id).as_bytes(),
                    &c.sealed_name,
                )
                .ok()
            })
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        pb::Calendar {
            calendar_id: c.calendar_id.clone(),
            account_id: account_id.to_string(),
            name,
            primary: c.primary,
            read_only: c.read_only,
            time_zone: c.time_zone.clone(),
            synced: c.synced,
            color: c.color.clone(),
        }
    }

    /// Converts a change record to the contract message, opening its event
    /// when the account still has its data key.
    pub fn change_pb(
        &self,
        c: &ChangeRecord,
        keys: &mut HashMap<String, Option<DataKey>>,
    ) -> pb::Change {
        let key = keys
            .entry(c.account_id.clone())
            .or_insert_with(|| {
                self.store
                    .account(&c.account_id)
                    .ok()
                    .flatten()
                    .and_then(|a| self.data_key(&a).ok().flatten())
            })
            .clone();
        let event = if c.sealed_event.is_empty() {
            None
        } else {
            key.and_then(|k| {
                open_event(
                    &k,
                    &change_aad(&c.account_id, &c.calendar_id, &c.provider_event_id),
                    &c.sealed_event,
                )
                .ok()
            })
        };
        pb::Change {
            sequence: c.seq,
            cursor: crate::feed::cursor_of(c.seq),
            recorded_at: chrono::DateTime::from_timestamp_millis(c.recorded_ms)
                .map(calbridge::time::to_timestamp),
            kind: c.kind,
            account_id: c.account_id.clone(),
            calendar_id: c.calendar_id.clone(),
            event,
            account_status: c.account_status,
            provider_event_id: c.provider_event_id.clone(),
        }
    }
}

/// AAD of an account's credentials.
pub fn cred_aad(account_id: &str) -> String {
    format!("credentials/{account_id}")
}

/// AAD of an account's provider identity.
pub fn identity_aad(account_id: &str) -> String {
    format!("identity/{account_id}")
}

/// AAD of a calendar's name.
pub fn calendar_aad(account_id: &str, calendar_id: &str) -> String {
    format!("calendar/{account_id}/{calendar_id}")
}

/// AAD of a mirrored event.
pub fn event_aad(account_id: &str, calendar_id: &str, pid: &str) -> String {
    format!("event/{account_id}/{calendar_id}/{pid}")
}

/// AAD of an event snapshot in the change log.
pub fn change_aad(account_id: &str, calendar_id: &str, pid: &str) -> String {
    format!("change/{account_id}/{calendar_id}/{pid}")
}

/// AAD of an event waiting in the outbox.
pub fn outbox_aad(op_id: u64) -> String {
    format!("outbox/{op_id}")
}

/// Seals an event.
pub fn seal_event(key: &DataKey, aad: &str, e: &pb::Event) -> Vec<u8> {
    key.seal(aad.as_bytes(), &e.encode_to_vec())
}

/// Opens a sealed event.
pub fn open_event(key: &DataKey, aad: &str, sealed: &[u8]) -> Result<pb::Event, ErrorKind> {
    let bytes = key
        .open(aad.as_bytes(), sealed)
        .map_err(|_| ErrorKind::Internal("a stored event cannot be opened".into()))?;
    pb::Event::decode(bytes.as_slice())
        .map_err(|_| ErrorKind::Internal("a stored event cannot be decoded".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(start_ms: i64, end_ms: i64) -> BusyEntry {
        BusyEntry {
            start_ms,
            end_ms,
            busy: 1,
            all_day: None,
            provider_event_id: format!("{start_ms}"),
        }
    }

    #[test]
    fn timeline_overlap_finds_long_early_events_and_nothing_else() {
        let t = Timeline {
            entries: vec![e(0, 1000), e(100, 150), e(200, 300), e(400, 500)],
            max_len_ms: 1000,
        };
        let hits: Vec<usize> = t.overlapping(250, 450).collect();
        assert_eq!(hits, vec![0, 2, 3]);
        assert_eq!(t.overlapping(1000, 2000).count(), 0);
        assert_eq!(t.overlapping(-10, 1).collect::<Vec<_>>(), vec![0]);
    }
}
