//! Opens the store at start, upgrading an older schema first.
//!
//! Schema 1 kept each account's data key, wrapped by the master key, in its
//! account record. Moving the keys to the keyring is not enough: sled is
//! log-structured, so earlier versions of the records (wrapped keys
//! included) stay in its files, and the master key does not change. The
//! upgrade to schema 2 therefore rewrites the store into a fresh sled
//! directory next to it:
//!
//! 1. every live account's key is unwrapped and imported into the keyring
//!    (durable; importing again is harmless);
//! 2. every tree is copied into `store.upgrade`, account records without
//!    their key, the meta tree with the new schema version and an id floor
//!    above every id the old store handed out; then synced;
//! 3. `store.upgrade` is renamed `store.ready`: the marker that the copy is
//!    whole;
//! 4. `store` is renamed `store.old` and `store.ready` renamed `store`;
//! 5. every file of `store.old` is overwritten with zeros, and it is
//!    removed.
//!
//! Before the store opens, what a crash left is finished: a `store.upgrade`
//! (a copy cut short) is removed and the upgrade starts over from the old
//! store; a `store.ready` is moved into place (step 4); a `store.old` is
//! wiped (step 5).
//!
//! Schemas 1 and 2 kept calendar ids, provider event ids (CalDAV hrefs),
//! client event ids, server URLs and sync cursors in clear, in keys and
//! records; they often hold a user's e-mail address. Schema 3 keeps them
//! sealed under the store's id key ([`crate::crypto::IdCipher`], in the
//! keyring). The upgrade to 3 is the same rewrite into a fresh directory,
//! each row's ids sealed on the way ([`store::seal_legacy_row`]), so no
//! clear id stays behind in the old sled segments.

use std::path::{Path, PathBuf};

use base64::Engine;

use crate::crypto::{IdCipher, MasterKeys, RawKey};
use crate::disk;
use crate::keyring::{KeyVault, VaultError};
use crate::store::{self, Store, StoreError, ID_FLOOR_KEY, SCHEMA_KEY, SCHEMA_VERSION};

/// Why the store could not be opened or upgraded.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The keyring failed.
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// A directory could not be moved or removed.
    #[error("upgrading the store: {path}: {detail}")]
    Io {
        /// The directory.
        path: String,
        /// What failed.
        detail: String,
    },
    /// An account's key in the old store opens under no configured key.
    #[error("the data key of account {account_id} in the store opens under neither the master key nor the previous master key: configure the master key the store was created with")]
    LegacyKey {
        /// The account.
        account_id: String,
    },
    /// Directories a crash cannot have left exist together.
    #[error("both {0} and {1} exist: keep the store you trust and move the other aside")]
    Layout(String, String),
}

impl From<sled::Error> for UpgradeError {
    fn from(e: sled::Error) -> Self {
        UpgradeError::Store(e.into())
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> UpgradeError + '_ {
    move |e| UpgradeError::Io {
        path: path.display().to_string(),
        detail: e.to_string(),
    }
}

/// Where an upgrade stops early: tests use the points between its steps to
/// leave what a crash there would leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Never,
    AfterImport,
    MidCopy,
    AfterReady,
    AfterOldMoved,
    AfterSwap,
}

/// The directories next to the store.
struct Dirs {
    store: PathBuf,
    upgrade: PathBuf,
    ready: PathBuf,
    old: PathBuf,
    parent: PathBuf,
}

impl Dirs {
    fn of(store: &Path) -> Dirs {
        let name = store
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "store".into());
        let parent = store
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        Dirs {
            store: store.to_path_buf(),
            upgrade: parent.join(format!("{name}.upgrade")),
            ready: parent.join(format!("{name}.ready")),
            old: parent.join(format!("{name}.old")),
            parent,
        }
    }
}

/// Opens the store in `dir`, finishing an interrupted upgrade and
/// upgrading an older schema (see the module docs). `masters` opens the
/// keys a schema-1 store holds; `vault` receives them.
pub fn open_store(
    dir: &Path,
    masters: &MasterKeys,
    vault: &dyn KeyVault,
) -> Result<Store, UpgradeError> {
    Ok(open_until(dir, masters, vault, Stop::Never)?
        .expect("an upgrade without a stop runs to the end"))
}

fn open_until(
    dir: &Path,
    masters: &MasterKeys,
    vault: &dyn KeyVault,
    stop: Stop,
) -> Result<Option<Store>, UpgradeError> {
    let dirs = Dirs::of(dir);
    recover(&dirs)?;
    let ids = vault.id_cipher()?;
    let db = store::open_db(dir, true)?;
    let from = match store::stored_schema_version(&db, dir)? {
        Some(v @ (1 | 2)) => v,
        // New, current, or newer (which `from_db` refuses).
        _ => return Ok(Some(Store::from_db(db, dir, ids)?)),
    };
    if from == 1 {
        tracing::warn!(
            from,
            to = SCHEMA_VERSION,
            "upgrading the store: moving account keys into the keyring, then rewriting the store without them and with its ids sealed"
        );
        let keys = legacy_keys(&db, masters)?;
        let imported = vault.import(&keys)?;
        tracing::info!(imported, "account keys moved into the keyring");
    } else {
        tracing::warn!(
            from,
            to = SCHEMA_VERSION,
            "upgrading the store: rewriting it with its ids sealed"
        );
    }
    if stop == Stop::AfterImport {
        return Ok(None);
    }
    let floor = id_floor(&db)?;
    {
        let fresh = store::open_db(&dirs.upgrade, true)?;
        copy(&db, &fresh, floor, &ids, stop == Stop::MidCopy)?;
        fresh.flush()?;
    }
    drop(db);
    if stop == Stop::MidCopy {
        return Ok(None);
    }
    std::fs::rename(&dirs.upgrade, &dirs.ready).map_err(io(&dirs.ready))?;
    disk::sync_dir(&dirs.parent).map_err(io(&dirs.parent))?;
    if stop == Stop::AfterReady {
        return Ok(None);
    }
    if !finish(&dirs, stop)? {
        return Ok(None);
    }
    tracing::info!("store upgraded; the old store's files were overwritten and removed");
    let db = store::open_db(dir, true)?;
    Ok(Some(Store::from_db(db, dir, ids)?))
}

/// Finishes what an interrupted upgrade left (see the module docs).
fn recover(dirs: &Dirs) -> Result<(), UpgradeError> {
    if dirs.upgrade.exists() {
        tracing::warn!("an interrupted store upgrade is started over");
        std::fs::remove_dir_all(&dirs.upgrade).map_err(io(&dirs.upgrade))?;
        disk::sync_dir(&dirs.parent).map_err(io(&dirs.parent))?;
    }
    if dirs.ready.exists() || dirs.old.exists() {
        tracing::warn!("an interrupted store upgrade is finished");
        finish(dirs, Stop::Never)?;
    }
    Ok(())
}

/// Steps 4 and 5; false when a test stopped it.
fn finish(dirs: &Dirs, stop: Stop) -> Result<bool, UpgradeError> {
    if dirs.ready.exists() {
        if dirs.store.exists() {
            if dirs.old.exists() {
                return Err(UpgradeError::Layout(
                    dirs.store.display().to_string(),
                    dirs.old.display().to_string(),
                ));
            }
            std::fs::rename(&dirs.store, &dirs.old).map_err(io(&dirs.old))?;
            if stop == Stop::AfterOldMoved {
                disk::sync_dir(&dirs.parent).map_err(io(&dirs.parent))?;
                return Ok(false);
            }
        }
        std::fs::rename(&dirs.ready, &dirs.store).map_err(io(&dirs.store))?;
        disk::sync_dir(&dirs.parent).map_err(io(&dirs.parent))?;
        if stop == Stop::AfterSwap {
            return Ok(false);
        }
    }
    if dirs.old.exists() {
        disk::wipe_dir(&dirs.old).map_err(io(&dirs.old))?;
    }
    Ok(true)
}

/// The key of every account a schema-1 store holds one for.
fn legacy_keys(db: &sled::Db, masters: &MasterKeys) -> Result<Vec<(String, RawKey)>, UpgradeError> {
    #[derive(serde::Deserialize)]
    struct Legacy {
        account_id: String,
        #[serde(default)]
        wrapped_key: String,
    }
    let mut out = Vec::new();
    for item in db.open_tree("accounts")?.iter() {
        let (_, v) = item?;
        let a: Legacy =
            serde_json::from_slice(&v).map_err(|_| StoreError::Decode("account".into()))?;
        if a.wrapped_key.is_empty() {
            continue; // revoked
        }
        let wrapped = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(&a.wrapped_key)
            .map_err(|_| StoreError::Decode("account".into()))?;
        let raw =
            masters
                .unwrap_raw(&a.account_id, &wrapped)
                .map_err(|_| UpgradeError::LegacyKey {
                    account_id: a.account_id.clone(),
                })?;
        out.push((a.account_id, raw));
    }
    Ok(out)
}

/// The first id the rewritten store may hand out.
fn id_floor(db: &sled::Db) -> Result<u64, UpgradeError> {
    let floor = match db.open_tree("meta")?.get(ID_FLOOR_KEY)? {
        Some(v) => u64::from_be_bytes(
            v.as_ref()
                .try_into()
                .map_err(|_| StoreError::Decode("id floor".into()))?,
        ),
        None => 0,
    };
    Ok(floor + db.generate_id()? + 1)
}

/// Copies every tree of `from` into `to`: account records without their
/// key, every row with its ids sealed under `ids`, the meta tree with the
/// current schema version and `floor`. With `half`, stops after half of
/// the trees (a crash mid-copy, for tests).
fn copy(
    from: &sled::Db,
    to: &sled::Db,
    floor: u64,
    ids: &IdCipher,
    half: bool,
) -> Result<(), UpgradeError> {
    let names = from.tree_names();
    let take = if half { names.len() / 2 } else { names.len() };
    let mut dropped = 0usize;
    for name in names.into_iter().take(take) {
        let (src, dst) = (from.open_tree(&name)?, to.open_tree(&name)?);
        let tree = String::from_utf8_lossy(&name).into_owned();
        let mut batch = sled::Batch::default();
        let mut pending = 0;
        for item in src.iter() {
            let (k, v) = item?;
            let v = if tree == "accounts" {
                without_key(&v)?
            } else {
                v.to_vec()
            };
            match store::seal_legacy_row(&tree, &k, &v, ids)? {
                Some((k, v)) => batch.insert(k, v),
                None => {
                    dropped += 1;
                    continue;
                }
            }
            pending += 1;
            if pending == 1000 {
                dst.apply_batch(std::mem::take(&mut batch))?;
                pending = 0;
            }
        }
        dst.apply_batch(batch)?;
    }
    if dropped > 0 {
        tracing::warn!(
            dropped,
            "mirror rows that could not be read were left out (their calendars list again)"
        );
    }
    let meta = to.open_tree("meta")?;
    meta.insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())?;
    meta.insert(ID_FLOOR_KEY, &floor.to_be_bytes())?;
    Ok(())
}

/// A schema-1 account record without its `wrapped_key`, every other field
/// as it was.
fn without_key(v: &[u8]) -> Result<Vec<u8>, UpgradeError> {
    let mut record: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(v).map_err(|_| StoreError::Decode("account".into()))?;
    record.remove("wrapped_key");
    Ok(serde_json::to_vec(&record).expect("JSON values serialize"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{DataKey, MasterKey};
    use crate::ids::{AccountId, CalendarId, TenantId};
    use crate::keyring::FileKeyring;
    use crate::sealing::{cred_aad, event_aad};

    const ACCOUNT: &str = "acc_000000000000000000000001";
    const REVOKED: &str = "acc_000000000000000000000002";
    /// Ids as providers make them: a Google calendar id and a CalDAV href,
    /// each with the user's e-mail address, and a platform's client id.
    const CAL: &str = "zephyrine@example.com";
    const PID: &str = "/dav/zephyrine@example.com/calendar/ev1.ics";
    const CLIENT: &str = "meeting-for-zephyrine@example.com";
    const EMAIL: &[u8] = b"zephyrine@example.com";

    /// A schema-1 store as the previous build wrote it: one live account
    /// whose record holds its wrapped key, one revoked account, a mirrored
    /// event and a pending write. Returns the base64 of the wrapped key,
    /// the data key and the ids handed out.
    fn legacy_store(dir: &Path, master: &MasterKey) -> (String, DataKey, u64) {
        let db = sled::Config::new().path(dir).open().unwrap();
        let meta = db.open_tree("meta").unwrap();
        meta.insert(SCHEMA_KEY, &1u32.to_be_bytes()).unwrap();
        let (key, wrapped) = master.new_data_key(ACCOUNT);
        let b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
        let wrapped = b64.encode(&wrapped);
        let record = |id: &str, status: i32, wrapped: &str, creds: &[u8]| {
            serde_json::json!({
                "account_id": id, "tenant_id": "t", "provider": 5, "access_level": 3,
                "status": status, "status_reason": "", "created_ms": 7,
                "server_url": "", "wrapped_key": wrapped,
                "sealed_credentials": b64.encode(creds), "sealed_identity": "",
                "identity_hash": format!("hash-{id}"),
            })
        };
        let creds = key.seal(
            cred_aad(&AccountId::from(ACCOUNT)).as_bytes(),
            b"password: hunter2",
        );
        let accounts = db.open_tree("accounts").unwrap();
        accounts
            .insert(
                ACCOUNT,
                serde_json::to_vec(&record(ACCOUNT, 1, &wrapped, &creds)).unwrap(),
            )
            .unwrap();
        accounts
            .insert(
                REVOKED,
                serde_json::to_vec(&record(REVOKED, 3, "", &[])).unwrap(),
            )
            .unwrap();
        db.open_tree("tenant_accounts")
            .unwrap()
            .insert(store::key(&["t", ACCOUNT]), &[])
            .unwrap();
        db.open_tree("tenants")
            .unwrap()
            .insert(
                "t",
                br#"{"tenant_id":"t","name":"acme","created_ms":1}"#.as_slice(),
            )
            .unwrap();
        let event = key.seal(
            event_aad(&AccountId::from(ACCOUNT), &CalendarId::from(CAL), PID).as_bytes(),
            b"Dentist Zephyrine",
        );
        db.open_tree("events")
            .unwrap()
            .insert(
                store::key(&[ACCOUNT, CAL, PID]),
                serde_json::to_vec(&serde_json::json!({
                    "version": "v1", "start_ms": 0, "end_ms": 10, "busy": 1,
                    "client_event_id": CLIENT, "sealed": b64.encode(&event),
                }))
                .unwrap(),
            )
            .unwrap();
        let mut index_key = store::key(&[ACCOUNT, CAL]);
        index_key.push(0);
        index_key.extend_from_slice(&(1u64 << 63).to_be_bytes());
        index_key.extend_from_slice(PID.as_bytes());
        db.open_tree("event_index")
            .unwrap()
            .insert(index_key, br#"{"end_ms":10,"busy":1}"#.as_slice())
            .unwrap();
        db.open_tree("client_ids")
            .unwrap()
            .insert(store::key(&[ACCOUNT, CAL, CLIENT]), PID.as_bytes())
            .unwrap();
        db.open_tree("calendars")
            .unwrap()
            .insert(
                store::key(&[ACCOUNT, CAL]),
                serde_json::to_vec(&crate::store::CalendarRecord::for_test(CAL)).unwrap(),
            )
            .unwrap();
        let sync = crate::store::SyncRecord {
            cursor: format!("https://dav.example.com/{CAL}/sync/7"),
            skipped: vec![(PID.to_string(), "too large".to_string())],
            ..Default::default()
        };
        db.open_tree("sync")
            .unwrap()
            .insert(
                store::key(&[ACCOUNT, CAL]),
                serde_json::to_vec(&sync).unwrap(),
            )
            .unwrap();
        let change = crate::store::ChangeRecord {
            seq: 1,
            kind: calbridge::pb::ChangeKind::EventCreated,
            account_id: ACCOUNT.into(),
            calendar_id: CAL.into(),
            provider_event_id: PID.into(),
            account_status: calbridge::pb::AccountStatus::Unspecified,
            recorded_ms: 1,
            sealed_event: Vec::new(),
        };
        let mut change_key = store::key(&["t"]);
        change_key.push(0);
        change_key.extend_from_slice(&1u64.to_be_bytes());
        db.open_tree("changes")
            .unwrap()
            .insert(change_key, serde_json::to_vec(&change).unwrap())
            .unwrap();
        let mut last_id = 0;
        for _ in 0..3 {
            last_id = db.generate_id().unwrap();
        }
        let op = crate::store::OutboxRecord::for_test(last_id, ACCOUNT);
        db.open_tree("outbox")
            .unwrap()
            .insert(last_id.to_be_bytes(), serde_json::to_vec(&op).unwrap())
            .unwrap();
        db.flush().unwrap();
        (wrapped, key, last_id)
    }

    fn tree_bytes(dir: &Path) -> Vec<u8> {
        let mut out = Vec::new();
        if dir.is_dir() {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    out.extend(tree_bytes(&p));
                } else {
                    out.extend(std::fs::read(p).unwrap());
                }
            }
        }
        out
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    /// Checks an upgraded data directory: schema 2, the key in the keyring
    /// and nowhere in the store, every record readable, ids above the old
    /// ones, no leftover directory.
    fn check_upgraded(data: &Path, master: &MasterKey, wrapped: &str, key: &DataKey, last_id: u64) {
        let store_dir = data.join("store");
        let vault = FileKeyring::open(data, MasterKeys::new(master.clone())).unwrap();
        let store = open_store(&store_dir, &MasterKeys::new(master.clone()), &vault).unwrap();
        assert_eq!(
            store.meta_get(SCHEMA_KEY).unwrap().unwrap(),
            SCHEMA_VERSION.to_be_bytes().to_vec()
        );
        assert_eq!(vault.account_ids(), vec![ACCOUNT.to_string()]);
        let from_vault = vault.data_key(ACCOUNT).unwrap();
        let a = store.account(ACCOUNT).unwrap().unwrap();
        assert_eq!(a.identity_hash, format!("hash-{ACCOUNT}"));
        assert_eq!(
            from_vault
                .open(
                    cred_aad(&AccountId::from(ACCOUNT)).as_bytes(),
                    &a.sealed_credentials
                )
                .unwrap(),
            b"password: hunter2"
        );
        let e = store
            .event(&AccountId::from(ACCOUNT), &CalendarId::from(CAL), PID)
            .unwrap()
            .unwrap();
        assert_eq!(e.client_event_id.as_deref(), Some(CLIENT));
        assert_eq!(
            store
                .provider_id_for_client(&AccountId::from(ACCOUNT), &CalendarId::from(CAL), CLIENT)
                .unwrap()
                .as_deref(),
            Some(PID)
        );
        assert_eq!(
            store
                .event_ids(&AccountId::from(ACCOUNT), &CalendarId::from(CAL))
                .unwrap(),
            vec![PID.to_string()]
        );
        let index = store
            .events_overlapping(
                &AccountId::from(ACCOUNT),
                &CalendarId::from(CAL),
                -1,
                100,
                None,
                10,
            )
            .unwrap();
        assert_eq!(index.len(), 1);
        assert_eq!((index[0].0, index[0].1.as_str()), (0, PID));
        assert_eq!(
            store.calendars(&AccountId::from(ACCOUNT)).unwrap()[0].calendar_id,
            CAL
        );
        let st = store
            .sync_state(&AccountId::from(ACCOUNT), &CalendarId::from(CAL))
            .unwrap()
            .unwrap();
        assert_eq!(st.cursor, format!("https://dav.example.com/{CAL}/sync/7"));
        assert_eq!(st.skipped[0].0, PID);
        let log = store.changes_after(&TenantId::from("t"), 0, 10).unwrap();
        assert_eq!(
            (
                log[0].calendar_id.as_str(),
                log[0].provider_event_id.as_str()
            ),
            (CAL, PID)
        );
        let aad = event_aad(&AccountId::from(ACCOUNT), &CalendarId::from(CAL), PID);
        assert_eq!(
            key.open(aad.as_bytes(), &e.sealed).unwrap(),
            b"Dentist Zephyrine"
        );
        assert_eq!(store.tenant("t").unwrap().unwrap().name, "acme");
        assert_eq!(
            store
                .tenant_accounts(&TenantId::from("t"), None, 10)
                .unwrap()
                .len(),
            1
        );
        let pending = store.outbox_all().unwrap();
        assert_eq!(pending.len(), 1);
        assert!(store.next_id().unwrap() > pending[0].op_id);
        assert_eq!(pending[0].op_id, last_id);
        // Not in the live store's files, not anywhere in the data directory.
        assert!(!contains(&tree_bytes(data), wrapped.as_bytes()));
        // Nor any id with the user's e-mail address.
        assert!(!contains(&tree_bytes(data), EMAIL));
        for leftover in ["store.upgrade", "store.ready", "store.old"] {
            assert!(!data.join(leftover).exists(), "{leftover} left behind");
        }
    }

    #[test]
    fn a_schema_1_store_moves_its_keys_to_the_keyring_and_keeps_no_copy() {
        let data = tempfile::tempdir().unwrap();
        let master = MasterKey::from_bytes(&MasterKey::generate_bytes()).unwrap();
        let (wrapped, key, last_id) = legacy_store(&data.path().join("store"), &master);
        assert!(contains(
            &tree_bytes(&data.path().join("store")),
            wrapped.as_bytes()
        ));
        assert!(contains(&tree_bytes(&data.path().join("store")), EMAIL));
        let store_dir = data.path().join("store");
        assert!(matches!(
            Store::from_db(
                store::open_db(&store_dir, true).unwrap(),
                &store_dir,
                IdCipher::random()
            ),
            Err(StoreError::OlderSchema { found: 1 })
        ));
        check_upgraded(data.path(), &master, &wrapped, &key, last_id);
        // Reopening an upgraded store changes nothing.
        check_upgraded(data.path(), &master, &wrapped, &key, last_id);
    }

    #[test]
    fn a_schema_2_store_is_rewritten_with_its_ids_sealed() {
        let data = tempfile::tempdir().unwrap();
        let master = MasterKey::from_bytes(&MasterKey::generate_bytes()).unwrap();
        let store_dir = data.path().join("store");
        let (wrapped, key, last_id) = legacy_store(&store_dir, &master);
        // What schema 2 held: the same rows, the key already in the keyring.
        {
            let db = sled::Config::new().path(&store_dir).open().unwrap();
            let masters = MasterKeys::new(master.clone());
            let keys = legacy_keys(&db, &masters).unwrap();
            let accounts = db.open_tree("accounts").unwrap();
            for item in accounts.iter() {
                let (k, v) = item.unwrap();
                accounts.insert(k, without_key(&v).unwrap()).unwrap();
            }
            db.open_tree("meta")
                .unwrap()
                .insert(SCHEMA_KEY, &2u32.to_be_bytes())
                .unwrap();
            db.flush().unwrap();
            let vault = FileKeyring::open(data.path(), masters).unwrap();
            vault.import(&keys).unwrap();
        }
        assert!(contains(&tree_bytes(&store_dir), EMAIL));
        check_upgraded(data.path(), &master, &wrapped, &key, last_id);
    }

    #[test]
    fn a_crash_at_any_step_of_the_upgrade_is_finished_at_the_next_start() {
        for stop in [
            Stop::AfterImport,
            Stop::MidCopy,
            Stop::AfterReady,
            Stop::AfterOldMoved,
            Stop::AfterSwap,
        ] {
            let data = tempfile::tempdir().unwrap();
            let master = MasterKey::from_bytes(&MasterKey::generate_bytes()).unwrap();
            let store_dir = data.path().join("store");
            let (wrapped, key, last_id) = legacy_store(&store_dir, &master);
            {
                let vault =
                    FileKeyring::open(data.path(), MasterKeys::new(master.clone())).unwrap();
                let done =
                    open_until(&store_dir, &MasterKeys::new(master.clone()), &vault, stop).unwrap();
                assert!(done.is_none(), "{stop:?}");
            }
            check_upgraded(data.path(), &master, &wrapped, &key, last_id);
        }
    }

    #[test]
    fn a_key_under_an_unknown_master_key_stops_the_upgrade_and_changes_nothing() {
        let data = tempfile::tempdir().unwrap();
        let master = MasterKey::from_bytes(&MasterKey::generate_bytes()).unwrap();
        let other = MasterKey::from_bytes(&MasterKey::generate_bytes()).unwrap();
        let store_dir = data.path().join("store");
        let (wrapped, _, _) = legacy_store(&store_dir, &master);
        let vault = FileKeyring::open(data.path(), MasterKeys::new(other.clone())).unwrap();
        let Err(err) = open_store(&store_dir, &MasterKeys::new(other), &vault) else {
            panic!("the upgrade went ahead under a wrong master key");
        };
        assert!(matches!(err, UpgradeError::LegacyKey { .. }), "{err}");
        assert!(vault.account_ids().is_empty());
        assert!(contains(&tree_bytes(&store_dir), wrapped.as_bytes()));
    }
}
