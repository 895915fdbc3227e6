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

mod accounts;
mod caches;
mod codec;
mod log;
mod mirror;
mod records;
mod tenants;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::Arc;

use sled::transaction::TransactionError;

use crate::crypto::IdCipher;

pub use caches::FreshnessCell;
use caches::{EventCounts, SyncSlot, SyncStates};
pub(crate) use codec::seal_legacy_row;
use codec::*;
pub use codec::{key, Row};
use log::append_changes;
pub use records::*;

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

/// A store error as the API answers it, the detail logged: a write refused
/// because its account was revoked meanwhile is no failure of the store and
/// answers FAILED_PRECONDITION, as a revoked account does; anything else is
/// INTERNAL without detail.
impl From<StoreError> for calbridge::ErrorKind {
    fn from(e: StoreError) -> Self {
        if let StoreError::AccountRevoked = e {
            return calbridge::ErrorKind::FailedPrecondition("the account is revoked".into());
        }
        tracing::error!(error = %e, "store failure");
        calbridge::ErrorKind::Internal("the scheduler's store failed; see its log".into())
    }
}

/// A store error as a gRPC status (through [`calbridge::ErrorKind`]).
impl From<StoreError> for tonic::Status {
    fn from(e: StoreError) -> Self {
        calbridge::ErrorKind::from(e).into()
    }
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
    // sled reports a held lock as an I/O error of kind `Other` told only by
    // its text: whether that was the cause is asked of the lock itself. One
    // more try covers a lock released between the refusal and the probe.
    let mut once_more = true;
    loop {
        match sled::Config::new()
            .path(dir)
            .flush_every_ms(Some(200))
            .open()
        {
            Ok(db) => return Ok(db),
            Err(e @ sled::Error::Io(_))
                if wait_for_lock && std::time::Instant::now() < deadline =>
            {
                if db_file_locked(dir) {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                } else if !std::mem::take(&mut once_more) {
                    return Err(corrupt(dir, e));
                }
            }
            Err(e) => return Err(corrupt(dir, e)),
        }
    }
}

/// True when another handle holds the lock sled takes on `dir/db` (an
/// exclusive `flock`, which `File::try_lock` asks for too).
fn db_file_locked(dir: &Path) -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join("db"))
        .is_ok_and(|f| matches!(f.try_lock(), Err(std::fs::TryLockError::WouldBlock)))
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

    /// The store's size on disk, bytes.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db.size_on_disk()?)
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
}
