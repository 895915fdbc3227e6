//! The keyring file: `DATA_DIR/keyring`, owner-only, one line per live
//! account, each account's data key sealed on its own under the master key
//! with the account id and the format version as associated data:
//!
//! ```text
//! calbridge-keyring 1
//! acc_0123abcd... <base64 of nonce || sealed key>
//! @store-ids <base64 of nonce || sealed key>
//! ```
//!
//! The line `@store-ids` holds the store's id key ([`IdCipher`]); account
//! ids never start with `@`.
//!
//! A connect appends a line and syncs the file. Anything that removes or
//! re-seals a line rewrites the whole file: `keyring.new` is written and
//! synced, `keyring.old` is made a second name of the live file, the new
//! file is renamed over `keyring` and the directory synced; then the old
//! file, left only under `keyring.old`, is overwritten with zeros, synced
//! and unlinked. At open, a leftover `keyring.new` was never renamed (the
//! live file is still the old one) and is wiped; a leftover `keyring.old`
//! is unlinked when it is still the live file's second name and wiped
//! otherwise; a line torn by a crash during an append (its connect never
//! stored the account) is cut off. So a crash at any point leaves the old
//! keyring or the new one, whole.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use base64::Engine;

use super::{KeyVault, Rotation, VaultError};
use crate::crypto::{DataKey, IdCipher, MasterKey, MasterKeys, RawKey};
use crate::disk;

/// The keyring's file name inside the data directory.
pub const KEYRING_FILE: &str = "keyring";
const NEW_FILE: &str = "keyring.new";
const OLD_FILE: &str = "keyring.old";
const HEADER: &str = "calbridge-keyring 1";
/// The line of the store's id key.
const IDS_ENTRY: &str = "@store-ids";

/// Associated data of an account's keyring entry: binds the sealed key to
/// the account and to this format's version.
pub fn entry_aad(account_id: &str) -> String {
    format!("calbridge/keyring/1/{account_id}")
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD_NO_PAD
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic())
}

#[derive(Clone)]
struct Entry {
    sealed: Vec<u8>,
    key: DataKey,
}

/// Where a rewrite stops early: tests use the points between its steps to
/// leave the files a crash there would leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stop {
    /// Runs to the end.
    Never,
    /// `keyring.new` written and synced.
    AfterNewWritten,
    /// `keyring.old` made a second name of the live file.
    AfterLinked,
    /// `keyring.new` renamed over `keyring`.
    AfterRenamed,
    /// Half of the old file overwritten with zeros.
    MidWipe,
}

/// The keyring file with its entries opened in memory.
pub struct FileKeyring {
    dir: PathBuf,
    masters: RwLock<MasterKeys>,
    keys: RwLock<HashMap<String, Entry>>,
    /// The store's id key, once made.
    ids: RwLock<Option<IdCipher>>,
    /// Serialises every change of the file.
    write: Mutex<()>,
}

impl std::fmt::Debug for FileKeyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileKeyring")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl FileKeyring {
    /// Opens (or creates) the keyring in `dir`: finishes a rewrite a crash
    /// interrupted, opens every entry, and re-seals in one rewrite the
    /// entries that open only under the previous master key. Entries that
    /// open under neither refuse the keyring ([`VaultError::WrongMasterKey`]).
    pub fn open(dir: &Path, masters: MasterKeys) -> Result<FileKeyring, VaultError> {
        let path = dir.join(KEYRING_FILE);
        recover(dir).map_err(|e| io_err(&path, e))?;
        let lines = if path.exists() {
            read_repairing(&path)?
        } else {
            rewrite(dir, &BTreeMap::new(), Stop::Never).map_err(|e| io_err(&path, e))?;
            BTreeMap::new()
        };
        let mut keys = HashMap::new();
        let mut resealed = BTreeMap::new();
        let mut unopenable = Vec::new();
        let mut under_previous = 0;
        let mut ids = None;
        for (id, sealed) in lines {
            match masters.open_key(entry_aad(&id).as_bytes(), &sealed) {
                Ok((raw, previous)) => {
                    under_previous += usize::from(previous);
                    if id == IDS_ENTRY {
                        ids = Some(IdCipher::from_raw(&raw));
                    }
                    let sealed_now = masters.current.seal_key(entry_aad(&id).as_bytes(), &raw);
                    resealed.insert(id.clone(), sealed_now.clone());
                    keys.insert(
                        id,
                        Entry {
                            sealed: if previous { sealed_now } else { sealed },
                            key: DataKey::from_raw(&raw),
                        },
                    );
                }
                Err(_) => unopenable.push(id),
            }
        }
        if !unopenable.is_empty() {
            return Err(VaultError::WrongMasterKey {
                count: unopenable.len(),
                examples: unopenable
                    .iter()
                    .take(3)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        if under_previous > 0 {
            rewrite(dir, &resealed, Stop::Never).map_err(|e| io_err(&path, e))?;
            tracing::warn!(
                entries = under_previous,
                "keyring entries sealed under the previous master key were re-sealed under the current one"
            );
        }
        disk::restrict_file(&path).map_err(|e| io_err(&path, e))?;
        Ok(FileKeyring {
            dir: dir.to_path_buf(),
            masters: RwLock::new(masters),
            keys: RwLock::new(keys),
            ids: RwLock::new(ids),
            write: Mutex::new(()),
        })
    }

    fn path(&self) -> PathBuf {
        self.dir.join(KEYRING_FILE)
    }

    fn masters(&self) -> MasterKeys {
        self.masters
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn entries(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Entry>> {
        self.keys.read().unwrap_or_else(|p| p.into_inner())
    }

    fn entries_mut(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Entry>> {
        self.keys.write().unwrap_or_else(|p| p.into_inner())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.write.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The sealed lines as they are on disk.
    fn sealed_lines(&self) -> BTreeMap<String, Vec<u8>> {
        self.entries()
            .iter()
            .map(|(id, e)| (id.clone(), e.sealed.clone()))
            .collect()
    }

    /// [`KeyVault::destroy`], stopping where a test asks.
    pub(super) fn destroy_until(
        &self,
        account_ids: &[String],
        stop: Stop,
    ) -> Result<usize, VaultError> {
        let _w = self.lock();
        let mut lines = self.sealed_lines();
        let destroyed = account_ids
            .iter()
            .filter(|id| lines.remove(id.as_str()).is_some())
            .count();
        if destroyed == 0 {
            return Ok(0);
        }
        rewrite(&self.dir, &lines, stop).map_err(|e| io_err(&self.path(), e))?;
        self.entries_mut()
            .retain(|id, _| !account_ids.iter().any(|gone| gone == id));
        Ok(destroyed)
    }
}

impl KeyVault for FileKeyring {
    fn data_key(&self, account_id: &str) -> Option<DataKey> {
        if account_id == IDS_ENTRY {
            return None;
        }
        self.entries().get(account_id).map(|e| e.key.clone())
    }

    fn create(&self, account_id: &str) -> Result<DataKey, VaultError> {
        if !valid_id(account_id) || account_id == IDS_ENTRY {
            return Err(VaultError::BadId);
        }
        let _w = self.lock();
        if self.entries().contains_key(account_id) {
            return Err(VaultError::Exists(account_id.to_string()));
        }
        let (key, raw) = DataKey::generate();
        let sealed = self
            .masters()
            .current
            .seal_key(entry_aad(account_id).as_bytes(), &raw);
        append(&self.path(), &line(account_id, &sealed)).map_err(|e| io_err(&self.path(), e))?;
        self.entries_mut().insert(
            account_id.to_string(),
            Entry {
                sealed,
                key: key.clone(),
            },
        );
        Ok(key)
    }

    fn import(&self, keys: &[(String, RawKey)]) -> Result<usize, VaultError> {
        let _w = self.lock();
        let masters = self.masters();
        let mut lines = self.sealed_lines();
        let mut added = Vec::new();
        for (id, raw) in keys {
            if !valid_id(id) || id == IDS_ENTRY {
                return Err(VaultError::BadId);
            }
            if let Some(sealed) = lines.get(id) {
                let (held, _) = masters
                    .open_key(entry_aad(id).as_bytes(), sealed)
                    .map_err(|_| VaultError::Conflict(id.clone()))?;
                if *held != **raw {
                    return Err(VaultError::Conflict(id.clone()));
                }
                continue;
            }
            let sealed = masters.current.seal_key(entry_aad(id).as_bytes(), raw);
            lines.insert(id.clone(), sealed.clone());
            added.push((
                id.clone(),
                Entry {
                    sealed,
                    key: DataKey::from_raw(raw),
                },
            ));
        }
        if added.is_empty() {
            return Ok(0);
        }
        rewrite(&self.dir, &lines, Stop::Never).map_err(|e| io_err(&self.path(), e))?;
        let n = added.len();
        self.entries_mut().extend(added);
        Ok(n)
    }

    fn destroy(&self, account_ids: &[String]) -> Result<usize, VaultError> {
        let accounts: Vec<String> = account_ids
            .iter()
            .filter(|id| *id != IDS_ENTRY)
            .cloned()
            .collect();
        self.destroy_until(&accounts, Stop::Never)
    }

    fn account_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .entries()
            .keys()
            .filter(|id| *id != IDS_ENTRY)
            .cloned()
            .collect();
        ids.sort();
        ids
    }

    fn rotate(&self, master: MasterKey) -> Result<Rotation, VaultError> {
        let _w = self.lock();
        let masters = self.masters();
        let account_keys = self.entries().keys().filter(|id| *id != IDS_ENTRY).count();
        if master.same_key(&masters.current) {
            return Ok(Rotation {
                account_keys,
                rotated: false,
            });
        }
        let mut lines = BTreeMap::new();
        let mut unopenable = Vec::new();
        for (id, sealed) in self.sealed_lines() {
            match masters.open_key(entry_aad(&id).as_bytes(), &sealed) {
                Ok((raw, _)) => {
                    lines.insert(id.clone(), master.seal_key(entry_aad(&id).as_bytes(), &raw));
                }
                Err(_) => unopenable.push(id),
            }
        }
        if !unopenable.is_empty() {
            return Err(VaultError::WrongMasterKey {
                count: unopenable.len(),
                examples: unopenable
                    .into_iter()
                    .take(3)
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        rewrite(&self.dir, &lines, Stop::Never).map_err(|e| io_err(&self.path(), e))?;
        {
            let mut entries = self.entries_mut();
            for (id, sealed) in lines {
                if let Some(e) = entries.get_mut(&id) {
                    e.sealed = sealed;
                }
            }
        }
        *self.masters.write().unwrap_or_else(|p| p.into_inner()) = MasterKeys {
            current: master,
            previous: Some(masters.current),
        };
        Ok(Rotation {
            account_keys,
            rotated: true,
        })
    }

    fn new_transient_key(&self, id: &str) -> (DataKey, Vec<u8>) {
        self.masters().current.new_data_key(id)
    }

    fn open_transient_key(&self, id: &str, wrapped: &[u8]) -> Result<DataKey, VaultError> {
        self.masters()
            .unwrap_data_key(id, wrapped)
            .map_err(|_| VaultError::WrongMasterKey {
                count: 1,
                examples: "(a pending authorisation)".into(),
            })
    }

    fn id_cipher(&self) -> Result<IdCipher, VaultError> {
        if let Some(ids) = self.ids.read().unwrap_or_else(|p| p.into_inner()).clone() {
            return Ok(ids);
        }
        let _w = self.lock();
        let mut held = self.ids.write().unwrap_or_else(|p| p.into_inner());
        if let Some(ids) = held.clone() {
            return Ok(ids);
        }
        let (key, raw) = DataKey::generate();
        let sealed = self
            .masters()
            .current
            .seal_key(entry_aad(IDS_ENTRY).as_bytes(), &raw);
        append(&self.path(), &line(IDS_ENTRY, &sealed)).map_err(|e| io_err(&self.path(), e))?;
        self.entries_mut()
            .insert(IDS_ENTRY.to_string(), Entry { sealed, key });
        let ids = IdCipher::from_raw(&raw);
        *held = Some(ids.clone());
        Ok(ids)
    }
}

fn io_err(path: &Path, e: std::io::Error) -> VaultError {
    VaultError::Io {
        path: path.display().to_string(),
        detail: e.to_string(),
    }
}

fn line(id: &str, sealed: &[u8]) -> String {
    format!("{id} {}\n", b64().encode(sealed))
}

fn render(lines: &BTreeMap<String, Vec<u8>>) -> Vec<u8> {
    let mut out = format!("{HEADER}\n");
    for (id, sealed) in lines {
        out.push_str(&line(id, sealed));
    }
    out.into_bytes()
}

/// Reads the keyring, cutting off a line torn by a crash during an append.
fn read_repairing(path: &Path) -> Result<BTreeMap<String, Vec<u8>>, VaultError> {
    let bytes = std::fs::read(path).map_err(|e| io_err(path, e))?;
    let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if whole < bytes.len() {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| io_err(path, e))?;
        f.set_len(whole as u64).map_err(|e| io_err(path, e))?;
        f.sync_all().map_err(|e| io_err(path, e))?;
        tracing::warn!(
            "an unfinished keyring entry (a connect interrupted by a crash) was cut off"
        );
    }
    parse(path, &bytes[..whole])
}

fn parse(path: &Path, bytes: &[u8]) -> Result<BTreeMap<String, Vec<u8>>, VaultError> {
    let corrupt = |line: usize, detail: &str| VaultError::Corrupt {
        path: path.display().to_string(),
        line,
        detail: detail.to_string(),
    };
    let text = std::str::from_utf8(bytes).map_err(|_| corrupt(0, "not text"))?;
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, h)) if h == HEADER => {}
        // Torn before its first line was complete: created empty.
        None => return Ok(BTreeMap::new()),
        Some(_) => return Err(corrupt(1, "not a calbridge keyring of format 1")),
    }
    let mut out = BTreeMap::new();
    for (i, l) in lines {
        let (id, sealed) = l
            .split_once(' ')
            .ok_or_else(|| corrupt(i + 1, "not `ACCOUNT_ID SEALED_KEY`"))?;
        if !valid_id(id) {
            return Err(corrupt(i + 1, "bad account id"));
        }
        let sealed = b64()
            .decode(sealed)
            .map_err(|_| corrupt(i + 1, "the sealed key is not base64"))?;
        out.insert(id.to_string(), sealed);
    }
    Ok(out)
}

/// Appends one line and syncs; a failed append is cut off again, so that
/// the next one does not continue a torn line.
fn append(path: &Path, line: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new().append(true).open(path)?;
    let len = f.metadata()?.len();
    let written = f.write_all(line.as_bytes()).and_then(|()| f.sync_all());
    if written.is_err() {
        let _ = f.set_len(len).and_then(|()| f.sync_all());
    }
    written
}

/// Finishes a rewrite a crash interrupted (see the module docs).
fn recover(dir: &Path) -> std::io::Result<()> {
    let (live, new, old) = (
        dir.join(KEYRING_FILE),
        dir.join(NEW_FILE),
        dir.join(OLD_FILE),
    );
    let mut changed = false;
    if old.exists() {
        if live.exists() && disk::same_file(&live, &old)? {
            // Linked, not yet replaced: the live file is still the old one.
            std::fs::remove_file(&old)?;
        } else {
            disk::wipe_file(&old)?;
        }
        changed = true;
    }
    if new.exists() {
        disk::wipe_file(&new)?;
        changed = true;
    }
    if changed {
        disk::sync_dir(dir)?;
        tracing::warn!("an interrupted keyring rewrite was finished");
    }
    Ok(())
}

/// Replaces the keyring with `lines` (see the module docs).
fn rewrite(dir: &Path, lines: &BTreeMap<String, Vec<u8>>, stop: Stop) -> std::io::Result<()> {
    let (live, new, old) = (
        dir.join(KEYRING_FILE),
        dir.join(NEW_FILE),
        dir.join(OLD_FILE),
    );
    let mut f = disk::create_private(&new)?;
    f.write_all(&render(lines))?;
    f.sync_all()?;
    drop(f);
    if stop == Stop::AfterNewWritten {
        return Ok(());
    }
    let had_live = live.exists();
    if had_live {
        if old.exists() {
            // Left by a rewrite that failed: a second name of the live
            // file is only unlinked, anything else is wiped.
            if disk::same_file(&live, &old)? {
                std::fs::remove_file(&old)?;
            } else {
                disk::wipe_file(&old)?;
            }
        }
        std::fs::hard_link(&live, &old)?;
    }
    if stop == Stop::AfterLinked {
        return Ok(());
    }
    std::fs::rename(&new, &live)?;
    disk::sync_dir(dir)?;
    if stop == Stop::AfterRenamed || !had_live {
        return Ok(());
    }
    if stop == Stop::MidWipe {
        let len = std::fs::metadata(&old)?.len();
        let mut f = std::fs::OpenOptions::new().write(true).open(&old)?;
        f.write_all(&vec![0u8; (len / 2) as usize])?;
        return f.sync_all();
    }
    disk::wipe_file(&old)?;
    disk::sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn master() -> MasterKey {
        MasterKey::from_bytes(&MasterKey::generate_bytes()).unwrap()
    }

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("acc_{i:024}")).collect()
    }

    /// Every file of `dir` concatenated: what a copy of the directory holds.
    fn dir_bytes(dir: &Path) -> Vec<u8> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_file() {
                out.extend(std::fs::read(p).unwrap());
            }
        }
        out
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        [NEW_FILE, OLD_FILE]
            .iter()
            .filter(|f| dir.join(f).exists())
            .map(|f| f.to_string())
            .collect()
    }

    #[test]
    fn keys_survive_reopening_and_are_sealed_per_account() {
        let dir = tempfile::tempdir().unwrap();
        let m = master();
        let ring = FileKeyring::open(dir.path(), MasterKeys::new(m.clone())).unwrap();
        let a = ring.create("acc_a").unwrap();
        let sealed = a.seal(b"x", b"Dentist");
        ring.create("acc_b").unwrap();
        assert!(matches!(ring.create("acc_a"), Err(VaultError::Exists(_))));
        assert!(matches!(ring.create("acc a"), Err(VaultError::BadId)));
        drop(ring);
        let ring = FileKeyring::open(dir.path(), MasterKeys::new(m.clone())).unwrap();
        assert_eq!(ring.account_ids(), vec!["acc_a", "acc_b"]);
        let again = ring.data_key("acc_a").unwrap();
        assert_eq!(again.open(b"x", &sealed).unwrap(), b"Dentist");
        assert!(ring.data_key("acc_c").is_none());
        // An entry moved to another account's line does not open.
        let text = std::fs::read_to_string(dir.path().join(KEYRING_FILE)).unwrap();
        let swapped = text.replace("acc_a ", "acc_x ");
        std::fs::write(dir.path().join(KEYRING_FILE), swapped).unwrap();
        let err = FileKeyring::open(dir.path(), MasterKeys::new(m)).unwrap_err();
        assert!(
            matches!(err, VaultError::WrongMasterKey { count: 1, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("acc_x"), "{err}");
    }

    #[test]
    fn the_id_key_is_made_once_survives_rotation_and_is_no_account() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (master(), master());
        let ring = FileKeyring::open(dir.path(), MasterKeys::new(old.clone())).unwrap();
        ring.create("acc_a").unwrap();
        let sealed = ring.id_cipher().unwrap().seal("alice@example.com");
        assert_eq!(ring.id_cipher().unwrap().seal("alice@example.com"), sealed);
        assert_eq!(ring.account_ids(), vec!["acc_a"]);
        assert!(ring.data_key(IDS_ENTRY).is_none());
        assert!(matches!(ring.create(IDS_ENTRY), Err(VaultError::BadId)));
        // Reconciling destroys keys of accounts the store lacks: never this one.
        assert_eq!(ring.destroy(&[IDS_ENTRY.to_string()]).unwrap(), 0);
        assert_eq!(ring.rotate(new.clone()).unwrap().account_keys, 1);
        drop(ring);
        let ring = FileKeyring::open(dir.path(), MasterKeys::new(new)).unwrap();
        assert_eq!(
            ring.id_cipher().unwrap().open(&sealed).unwrap(),
            "alice@example.com"
        );
        assert!(matches!(
            FileKeyring::open(dir.path(), MasterKeys::new(old)),
            Err(VaultError::WrongMasterKey { count: 2, .. })
        ));
    }

    #[cfg(unix)]
    #[test]
    fn the_keyring_file_is_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let ring = FileKeyring::open(dir.path(), MasterKeys::new(master())).unwrap();
        ring.create("acc_a").unwrap();
        ring.destroy(&["acc_a".into()]).unwrap();
        let mode = std::fs::metadata(dir.path().join(KEYRING_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_destroyed_key_leaves_no_byte_of_its_entry_in_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let m = master();
        let ring = FileKeyring::open(dir.path(), MasterKeys::new(m.clone())).unwrap();
        for id in ids(3) {
            ring.create(&id).unwrap();
        }
        let gone = ids(3)[1].clone();
        let entry = ring.entries().get(&gone).unwrap().sealed.clone();
        let encoded = b64().encode(&entry);
        assert!(contains(&dir_bytes(dir.path()), encoded.as_bytes()));
        assert_eq!(ring.destroy(std::slice::from_ref(&gone)).unwrap(), 1);
        assert_eq!(ring.destroy(std::slice::from_ref(&gone)).unwrap(), 0);
        let bytes = dir_bytes(dir.path());
        assert!(!contains(&bytes, encoded.as_bytes()));
        assert!(!contains(&bytes, &entry[..24]));
        assert!(leftovers(dir.path()).is_empty());
        let ring = FileKeyring::open(dir.path(), MasterKeys::new(m)).unwrap();
        assert_eq!(
            ring.account_ids(),
            vec![ids(3)[0].clone(), ids(3)[2].clone()]
        );
    }

    #[test]
    fn a_crash_at_any_step_of_a_destroy_leaves_the_old_or_the_new_keyring_whole() {
        for stop in [
            Stop::AfterNewWritten,
            Stop::AfterLinked,
            Stop::AfterRenamed,
            Stop::MidWipe,
        ] {
            let dir = tempfile::tempdir().unwrap();
            let m = master();
            let ring = FileKeyring::open(dir.path(), MasterKeys::new(m.clone())).unwrap();
            let mut keys = Vec::new();
            for id in ids(4) {
                let k = ring.create(&id).unwrap();
                keys.push((id.clone(), k.seal(id.as_bytes(), b"content")));
            }
            let gone = ids(4)[2].clone();
            let entry = b64().encode(&ring.entries().get(&gone).unwrap().sealed);
            ring.destroy_until(std::slice::from_ref(&gone), stop)
                .unwrap();
            drop(ring);
            assert!(!leftovers(dir.path()).is_empty(), "{stop:?} leaves files");

            let ring = FileKeyring::open(dir.path(), MasterKeys::new(m.clone())).unwrap();
            assert!(
                leftovers(dir.path()).is_empty(),
                "{stop:?}: {:?}",
                leftovers(dir.path())
            );
            // Every live key opens what it sealed.
            for (id, sealed) in keys.iter().filter(|(id, _)| *id != gone) {
                let k = ring
                    .data_key(id)
                    .unwrap_or_else(|| panic!("{stop:?} lost {id}"));
                assert_eq!(k.open(id.as_bytes(), sealed).unwrap(), b"content");
            }
            let renamed = matches!(stop, Stop::AfterRenamed | Stop::MidWipe);
            // Before the rename the old keyring stands (the destroy was not
            // acknowledged, and start-up reconciliation destroys the key
            // again); after it the key is gone from every file.
            assert_eq!(ring.data_key(&gone).is_some(), !renamed, "{stop:?}");
            if renamed {
                assert!(
                    !contains(&dir_bytes(dir.path()), entry.as_bytes()),
                    "{stop:?}"
                );
            }
            ring.destroy(std::slice::from_ref(&gone)).unwrap();
            assert!(
                !contains(&dir_bytes(dir.path()), entry.as_bytes()),
                "{stop:?}"
            );
        }
    }

    #[test]
    fn a_line_torn_by_a_crash_during_an_append_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let m = master();
        let ring = FileKeyring::open(dir.path(), MasterKeys::new(m.clone())).unwrap();
        ring.create("acc_a").unwrap();
        drop(ring);
        let path = dir.path().join(KEYRING_FILE);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"acc_b QUJDREVGR0").unwrap();
        drop(f);
        let ring = FileKeyring::open(dir.path(), MasterKeys::new(m)).unwrap();
        assert_eq!(ring.account_ids(), vec!["acc_a"]);
        ring.create("acc_c").unwrap();
        assert!(std::fs::read_to_string(&path).unwrap().ends_with('\n'));
        assert!(!std::fs::read_to_string(&path).unwrap().contains("acc_b"));
    }

    #[test]
    fn a_damaged_keyring_is_refused_naming_the_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(KEYRING_FILE),
            format!("{HEADER}\nacc_a not-base64!\n"),
        )
        .unwrap();
        let err = FileKeyring::open(dir.path(), MasterKeys::new(master())).unwrap_err();
        assert!(matches!(err, VaultError::Corrupt { line: 2, .. }), "{err}");
    }

    #[test]
    fn after_a_rotation_only_the_new_master_key_opens_the_keyring() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (master(), master());
        let ring = FileKeyring::open(dir.path(), MasterKeys::new(old.clone())).unwrap();
        let mut sealed = Vec::new();
        for id in ids(3) {
            sealed.push((
                id.clone(),
                ring.create(&id).unwrap().seal(b"x", id.as_bytes()),
            ));
        }
        let before = dir.path().join("before");
        std::fs::create_dir(&before).unwrap();
        std::fs::copy(dir.path().join(KEYRING_FILE), before.join(KEYRING_FILE)).unwrap();
        let transient = ring.new_transient_key("state");

        let r = ring.rotate(new.clone()).unwrap();
        assert_eq!(
            r,
            Rotation {
                account_keys: 3,
                rotated: true
            }
        );
        // Still the same keys in memory; pending records sealed before
        // open under the previous key.
        assert!(ring.open_transient_key("state", &transient.1).is_ok());
        assert_eq!(
            ring.rotate(new.clone()).unwrap(),
            Rotation {
                account_keys: 3,
                rotated: false
            }
        );
        ring.create("acc_after").unwrap();
        drop(ring);

        let ring = FileKeyring::open(dir.path(), MasterKeys::new(new.clone())).unwrap();
        for (id, s) in &sealed {
            assert_eq!(
                ring.data_key(id).unwrap().open(b"x", s).unwrap(),
                id.as_bytes()
            );
        }
        assert!(ring.data_key("acc_after").is_some());
        assert!(matches!(
            FileKeyring::open(dir.path(), MasterKeys::new(old.clone())),
            Err(VaultError::WrongMasterKey { count: 4, .. })
        ));
        // The copy from before the rotation does not open with the new key
        // alone, and does with the old one.
        assert!(matches!(
            FileKeyring::open(&before, MasterKeys::new(new)),
            Err(VaultError::WrongMasterKey { count: 3, .. })
        ));
        assert_eq!(
            FileKeyring::open(&before, MasterKeys::new(old))
                .unwrap()
                .account_ids(),
            ids(3)
        );
    }

    #[test]
    fn entries_under_the_previous_master_key_are_resealed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (master(), master());
        let ring = FileKeyring::open(dir.path(), MasterKeys::new(old.clone())).unwrap();
        let s = ring.create("acc_a").unwrap().seal(b"x", b"y");
        drop(ring);
        // Without the previous key the keyring is refused, naming the fix.
        let err = FileKeyring::open(dir.path(), MasterKeys::new(new.clone())).unwrap_err();
        assert!(
            err.to_string().contains("previous_master_key_file"),
            "{err}"
        );
        let both = MasterKeys {
            current: new.clone(),
            previous: Some(old),
        };
        drop(FileKeyring::open(dir.path(), both).unwrap());
        let ring = FileKeyring::open(dir.path(), MasterKeys::new(new)).unwrap();
        assert_eq!(
            ring.data_key("acc_a").unwrap().open(b"x", &s).unwrap(),
            b"y"
        );
    }

    #[test]
    fn importing_keeps_held_keys_and_refuses_different_ones() {
        let dir = tempfile::tempdir().unwrap();
        let ring = FileKeyring::open(dir.path(), MasterKeys::new(master())).unwrap();
        let (_, raw) = DataKey::generate();
        let (_, other) = DataKey::generate();
        let batch = [("acc_a".to_string(), raw.clone())];
        assert_eq!(ring.import(&batch).unwrap(), 1);
        assert_eq!(ring.import(&batch).unwrap(), 0);
        assert!(matches!(
            ring.import(&[("acc_a".to_string(), other)]),
            Err(VaultError::Conflict(_))
        ));
        let sealed = DataKey::from_raw(&raw).seal(b"x", b"y");
        assert_eq!(
            ring.data_key("acc_a").unwrap().open(b"x", &sealed).unwrap(),
            b"y"
        );
    }
}
