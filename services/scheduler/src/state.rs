//! The scheduler's shared state: handles to the store, the key vault
//! holding account data keys and the adapter clients, the in-memory caches
//! of busy time, and the signals that connect the API, the sync loop and
//! the change feed. What is done with them lives in the domain modules.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use calbridge::ErrorKind;
use tokio::sync::{watch, Notify};

use crate::adapters::Adapters;
use crate::busy::participants::AvailabilityCache;
use crate::busy::{Timeline, TimelineCache};
use crate::config::Config;
use crate::crypto::{hash_hex, DataKey};
use crate::ids::{AccountId, CalendarId, CalendarKey};
use crate::keyring::KeyVault;
use crate::sealing;
use crate::store::{AccountRecord, Store};

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
    pub urgent: Mutex<HashSet<CalendarKey>>,
    /// Calendars with writes a crash interrupted that the replay has not
    /// completed yet: (account, calendar). Filled at start, before the sync
    /// loop runs; their syncs wait (see [`crate::writes::replay_outbox`]).
    pub in_doubt: Mutex<HashSet<CalendarKey>>,
    /// Bumped after every change-log append; watchers re-read the log.
    pub log_tick: watch::Sender<u64>,
    /// Per-calendar locks: a sync holds the write side, writes the read side.
    pub calendar_locks: Mutex<HashMap<(String, String), CalendarLock>>,
    /// Per-client-id locks, so two upserts of one id never race.
    pub client_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    timelines: TimelineCache,
    /// Participants built for availability requests, kept until their
    /// inputs change (see [`AvailabilityCache`]; the signals below call
    /// its `account_changed`).
    pub availability_cache: AvailabilityCache,
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
            timelines: TimelineCache::default(),
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
    pub fn timeline(
        &self,
        account: &AccountId,
        calendar: &CalendarId,
    ) -> Result<Arc<Timeline>, ErrorKind> {
        self.timelines.get(&self.store, account, calendar)
    }

    /// Forgets a calendar's cached time line after its mirror changed.
    pub fn mirror_changed(&self, account: &AccountId, calendar: &CalendarId) {
        self.timelines.forget(account, calendar);
        // Availability cache hook: the account's participants are stale.
        self.availability_cache.account_changed(account);
    }

    /// Forgets every cached time line of an account.
    pub fn account_mirror_changed(&self, account: &AccountId) {
        self.timelines.forget_account(account);
        // Availability cache hook: the account's participants are stale.
        self.availability_cache.account_changed(account);
    }

    /// The lock of one calendar.
    pub fn calendar_lock(
        &self,
        account: &AccountId,
        calendar: &CalendarId,
    ) -> Arc<tokio::sync::RwLock<()>> {
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
        account: &AccountId,
        calendar: &CalendarId,
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
    pub fn sync_soon(&self, account: &AccountId, calendar: &CalendarId) {
        // Availability cache hook: every write of an account's calendar
        // records (connect, re-connect, refresh, turning sync on) is
        // followed by this call.
        self.availability_cache.account_changed(account);
        self.urgent
            .lock()
            .expect("lock poisoned")
            .insert((account.into(), calendar.into()));
        self.sync_wake.notify_one();
    }

    /// True while writes a crash interrupted on this calendar are not
    /// completed: what the provider holds may be the platform's own write
    /// whose result is not stored yet.
    pub fn writes_in_doubt(&self, account: &AccountId, calendar: &CalendarId) -> bool {
        let in_doubt = self.in_doubt.lock().expect("lock poisoned");
        !in_doubt.is_empty() && in_doubt.contains(&(account.into(), calendar.into()))
    }

    /// Tells change-feed watchers to look at the log.
    pub fn log_appended(&self) {
        self.log_tick.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The data key of an account; `None` when revoked.
    pub fn data_key(&self, account: &AccountRecord) -> Result<Option<DataKey>, ErrorKind> {
        sealing::data_key(self.vault.as_ref(), account)
    }

    /// The account's data key, or FAILED_PRECONDITION when revoked.
    pub fn live_key(&self, account: &AccountRecord) -> Result<DataKey, ErrorKind> {
        self.data_key(account)?
            .ok_or_else(|| ErrorKind::FailedPrecondition("the account is revoked".into()))
    }
}
