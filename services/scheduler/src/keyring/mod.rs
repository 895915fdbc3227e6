//! Where account data keys live: a vault outside the store. The store holds
//! only what the data keys sealed; the vault holds each live account's data
//! key, and revoking an account destroys its key there, durably, before its
//! rows are purged. A copy of the store taken at any time is then unreadable
//! for every account whose key the vault no longer holds.
//!
//! [`KeyVault`] is the seam: [`FileKeyring`] keeps the keys in one file next
//! to the store, each sealed under the master key; a KMS or a database
//! could hold them instead. This module also reconciles the vault with the
//! store at start.

mod file;

use calbridge::pb::AccountStatus;
use calbridge::ErrorKind;

use crate::crypto::{DataKey, IdCipher, MasterKey, RawKey};
use crate::store::{Store, StoreError};

pub use file::{entry_aad, FileKeyring, KEYRING_FILE};

/// Why the vault failed.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// The keyring file could not be read or written.
    #[error("keyring {path}: {detail}")]
    Io {
        /// The file.
        path: String,
        /// What failed.
        detail: String,
    },
    /// The keyring file is not one this build wrote, or is damaged.
    #[error("keyring {path} is damaged at line {line}: {detail}; restore it from the backup taken with the store")]
    Corrupt {
        /// The file.
        path: String,
        /// The line, counting from 1.
        line: usize,
        /// What is wrong.
        detail: String,
    },
    /// Entries open under no configured master key.
    #[error("{count} keyring entries (accounts {examples}) open under neither the master key nor the previous master key: configure the master key the keyring was sealed with (during a rotation, the old one as previous_master_key_file)")]
    WrongMasterKey {
        /// How many entries.
        count: usize,
        /// A few of their account ids.
        examples: String,
    },
    /// A key for this account exists already.
    #[error("the keyring already holds a data key for account {0}")]
    Exists(String),
    /// An id the keyring cannot hold.
    #[error("an account id in the keyring must be 1..=128 visible ASCII characters")]
    BadId,
    /// An imported key differs from the one held for the same account.
    #[error("the keyring holds another data key for account {0}")]
    Conflict(String),
}

/// What a master-key rotation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// Account data keys the vault holds, all now sealed under the new key.
    pub account_keys: usize,
    /// False when the new key is the one in use (nothing was rewritten).
    pub rotated: bool,
}

/// Holds account data keys outside the store. Every method that changes
/// what is held returns only once the change is durable, and may block
/// (callers on async workers run it on the blocking pool); reads answer
/// from memory.
pub trait KeyVault: Send + Sync {
    /// The data key of a live account; `None` when the vault holds none
    /// (never created, or destroyed).
    fn data_key(&self, account_id: &str) -> Option<DataKey>;

    /// Makes a data key for a new account and stores it durably.
    fn create(&self, account_id: &str) -> Result<DataKey, VaultError>;

    /// Stores existing keys (an upgrade moving them out of the store);
    /// keys already held are checked to be the same. Returns how many were
    /// added.
    fn import(&self, keys: &[(String, RawKey)]) -> Result<usize, VaultError>;

    /// Destroys the data keys of these accounts (unknown ones are skipped),
    /// so that nothing the vault keeps can yield them any more. Returns how
    /// many were destroyed.
    fn destroy(&self, account_ids: &[String]) -> Result<usize, VaultError>;

    /// The accounts whose keys the vault holds.
    fn account_ids(&self) -> Vec<String>;

    /// Seals every held key under `master` instead of the master key in
    /// use, which becomes the previous one.
    fn rotate(&self, master: MasterKey) -> Result<Rotation, VaultError>;

    /// A data key for a short-lived record `id` kept in the store (a
    /// pending authorisation) and its wrapped form to store with it.
    fn new_transient_key(&self, id: &str) -> (DataKey, Vec<u8>);

    /// Opens a key made by [`KeyVault::new_transient_key`].
    fn open_transient_key(&self, id: &str, wrapped: &[u8]) -> Result<DataKey, VaultError>;

    /// The store's id key ([`IdCipher`]), made and stored durably on first
    /// use. It outlives every account (ids in the change log stay
    /// readable) and is sealed under the master key like the data keys.
    fn id_cipher(&self) -> Result<IdCipher, VaultError>;
}

/// What [`reconcile`] found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reconciled {
    /// Keys destroyed: of revoked accounts (a revocation interrupted before
    /// its key was destroyed) and of accounts the store does not hold (a
    /// connect interrupted before its account was stored).
    pub destroyed: usize,
    /// Live accounts whose key the vault does not hold (their data cannot
    /// be read: the keyring is older than the store).
    pub missing: usize,
}

/// Brings the vault in line with the store at start: only accounts the
/// store holds and has not revoked keep a key.
pub fn reconcile(store: &Store, vault: &dyn KeyVault) -> Result<Reconciled, ReconcileError> {
    let mut gone = Vec::new();
    for id in vault.account_ids() {
        match store.account(&id)? {
            Some(a) if a.status != AccountStatus::Revoked => {}
            _ => gone.push(id),
        }
    }
    let destroyed = vault.destroy(&gone)?;
    let mut missing = 0;
    for t in store.tenants()? {
        for a in store.tenant_accounts(&t.tenant_id, None, usize::MAX)? {
            if a.status != AccountStatus::Revoked && vault.data_key(&a.account_id).is_none() {
                tracing::error!(account_id = %a.account_id, "the keyring holds no data key for this account: its data cannot be read (was the keyring replaced by an older copy?)");
                missing += 1;
            }
        }
    }
    Ok(Reconciled { destroyed, missing })
}

/// Why [`reconcile`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The vault failed.
    #[error(transparent)]
    Vault(#[from] VaultError),
}

/// Turns a vault error into a safe API error, logging the detail.
pub fn vault_err(e: VaultError) -> ErrorKind {
    match e {
        VaultError::WrongMasterKey { .. } => ErrorKind::FailedPrecondition(e.to_string()),
        other => {
            tracing::error!(error = %other, "keyring failure");
            ErrorKind::Internal("the scheduler's keyring failed; see its log".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKeys;
    use crate::store::AccountRecord;

    #[test]
    fn reconciling_drops_keys_of_revoked_and_unknown_accounts_and_counts_missing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Store::open(&dir.path().join("store"), crate::crypto::IdCipher::random()).unwrap();
        let master = MasterKey::from_bytes(&MasterKey::generate_bytes()).unwrap();
        let vault = FileKeyring::open(dir.path(), MasterKeys::new(master)).unwrap();
        store
            .put_tenant(&crate::store::TenantRecord {
                tenant_id: "t".into(),
                name: "t".into(),
                created_ms: 0,
            })
            .unwrap();
        let live = AccountRecord::for_test("acc_live");
        let revoked = AccountRecord {
            status: AccountStatus::Revoked,
            ..AccountRecord::for_test("acc_revoked")
        };
        let keyless = AccountRecord::for_test("acc_keyless");
        for a in [&live, &revoked, &keyless] {
            store.put_account_with_calendars(a, &[], 0).unwrap();
        }
        for id in ["acc_live", "acc_revoked", "acc_orphan"] {
            vault.create(id).unwrap();
        }
        let r = reconcile(&store, &vault).unwrap();
        assert_eq!(
            r,
            Reconciled {
                destroyed: 2,
                missing: 1
            }
        );
        assert_eq!(vault.account_ids(), vec!["acc_live".to_string()]);
    }
}
