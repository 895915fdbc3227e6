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
mod tests;
