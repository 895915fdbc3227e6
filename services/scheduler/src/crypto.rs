//! Envelope encryption of everything that could identify a person or grant
//! access: one random data key per account seals that account's credentials
//! and event content with AES-256-GCM-SIV, and a master key (from a file or
//! the environment) seals the data keys. The sealed data keys live in the
//! keyring ([`crate::keyring`]), never in the store, so destroying an
//! account's keyring entry makes every byte sealed under its data key
//! unreadable, in the store and in any copy of it.

use aes_gcm_siv::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm_siv::{Aes256GcmSiv, Nonce};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

const NONCE_LEN: usize = 12;

/// `bytes` random bytes as lowercase hex, for ids and tokens.
pub fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut b);
    hex::encode(b)
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

/// Why sealed bytes could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// The ciphertext is truncated, was sealed under another key or for
    /// another record, or was tampered with.
    #[error("sealed data cannot be opened (wrong key, wrong record or corrupted)")]
    Open,
    /// A key is not 32 bytes.
    #[error("a key must be 32 bytes, got {0}")]
    KeyLength(usize),
}

/// Whether two byte strings are equal, in time that depends on their
/// length only (for comparing secrets' hashes).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A cipher for one key.
#[derive(Clone)]
struct Sealer(Aes256GcmSiv);

impl Sealer {
    fn new(key: &[u8]) -> Result<Sealer, CryptoError> {
        if key.len() != 32 {
            return Err(CryptoError::KeyLength(key.len()));
        }
        Ok(Sealer(
            Aes256GcmSiv::new_from_slice(key).map_err(|_| CryptoError::KeyLength(key.len()))?,
        ))
    }

    /// `nonce || ciphertext`, bound to `aad` (the record's key), so a sealed
    /// value copied under another key does not open.
    fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let nonce = Aes256GcmSiv::generate_nonce(&mut OsRng);
        let ct = self
            .0
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .expect("AES-GCM-SIV encryption of in-memory data cannot fail");
        let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if sealed.len() < NONCE_LEN {
            return Err(CryptoError::Open);
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        self.0
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
            .map_err(|_| CryptoError::Open)
    }
}

/// The raw bytes of a key, wiped from memory when dropped.
pub type RawKey = Zeroizing<[u8; 32]>;

/// The master key: seals and opens data keys. `Debug` prints no key
/// material.
#[derive(Clone)]
pub struct MasterKey {
    sealer: Sealer,
    /// SHA-256 of a label and the key: tells two master keys apart without
    /// keeping the key's bytes.
    fingerprint: [u8; 32],
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(***)")
    }
}

impl MasterKey {
    /// A master key from 32 raw bytes.
    pub fn from_bytes(key: &[u8]) -> Result<MasterKey, CryptoError> {
        let sealer = Sealer::new(key)?;
        let mut h = Sha256::new();
        h.update(b"calbridge/master-key-fingerprint\0");
        h.update(key);
        Ok(MasterKey {
            sealer,
            fingerprint: h.finalize().into(),
        })
    }

    /// True when both are the same key.
    pub fn same_key(&self, other: &MasterKey) -> bool {
        self.fingerprint == other.fingerprint
    }

    /// 32 fresh random bytes, for generating a development key.
    pub fn generate_bytes() -> [u8; 32] {
        let key = Aes256GcmSiv::generate_key(&mut OsRng);
        let mut out = [0u8; 32];
        out.copy_from_slice(&key);
        out
    }

    /// Seals the raw bytes of a key for the record stored under `aad`.
    pub fn seal_key(&self, aad: &[u8], raw: &[u8; 32]) -> Vec<u8> {
        self.sealer.seal(aad, raw)
    }

    /// Opens a key sealed with [`MasterKey::seal_key`].
    pub fn open_key(&self, aad: &[u8], sealed: &[u8]) -> Result<RawKey, CryptoError> {
        let bytes = Zeroizing::new(self.sealer.open(aad, sealed)?);
        let raw: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::KeyLength(bytes.len()))?;
        Ok(Zeroizing::new(raw))
    }

    /// Makes a new data key for a short-lived record `id` kept in the store
    /// (a pending authorisation): the key and its wrapped form to store. The
    /// first schema also wrapped account data keys this way.
    pub fn new_data_key(&self, id: &str) -> (DataKey, Vec<u8>) {
        let (key, raw) = DataKey::generate();
        (key, self.seal_key(wrap_aad(id).as_bytes(), &raw))
    }

    /// Unwraps a data key made by [`MasterKey::new_data_key`] for `id`.
    pub fn unwrap_data_key(&self, id: &str, wrapped: &[u8]) -> Result<DataKey, CryptoError> {
        let raw = self.open_key(wrap_aad(id).as_bytes(), wrapped)?;
        Ok(DataKey::from_raw(&raw))
    }

    /// Seals a value that belongs to no account.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        self.sealer.seal(aad, plaintext)
    }

    /// Opens a value sealed with [`MasterKey::seal`].
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.sealer.open(aad, sealed)
    }
}

/// AAD of a data key wrapped by [`MasterKey::new_data_key`].
fn wrap_aad(id: &str) -> String {
    format!("calbridge/data-key/{id}")
}

/// The master key in use and, while a rotation is under way, the one it
/// replaces: what was sealed under either opens.
#[derive(Clone, Debug)]
pub struct MasterKeys {
    /// Seals everything new.
    pub current: MasterKey,
    /// Still opens what was sealed before the rotation.
    pub previous: Option<MasterKey>,
}

impl MasterKeys {
    /// Only `current`.
    pub fn new(current: MasterKey) -> MasterKeys {
        MasterKeys {
            current,
            previous: None,
        }
    }

    /// Opens a sealed key under the current key, else the previous one;
    /// the flag is true when it took the previous one.
    pub fn open_key(&self, aad: &[u8], sealed: &[u8]) -> Result<(RawKey, bool), CryptoError> {
        match self.current.open_key(aad, sealed) {
            Ok(k) => Ok((k, false)),
            Err(e) => match &self.previous {
                Some(p) => p.open_key(aad, sealed).map(|k| (k, true)),
                None => Err(e),
            },
        }
    }

    /// [`MasterKey::unwrap_data_key`] under the current key, else the
    /// previous one.
    pub fn unwrap_data_key(&self, id: &str, wrapped: &[u8]) -> Result<DataKey, CryptoError> {
        self.unwrap_raw(id, wrapped)
            .map(|raw| DataKey::from_raw(&raw))
    }

    /// The raw bytes of a data key made by [`MasterKey::new_data_key`] for
    /// `id`, under the current key, else the previous one.
    pub fn unwrap_raw(&self, id: &str, wrapped: &[u8]) -> Result<RawKey, CryptoError> {
        self.open_key(wrap_aad(id).as_bytes(), wrapped)
            .map(|(raw, _)| raw)
    }
}

/// One account's data key. `Debug` prints no key material.
#[derive(Clone)]
pub struct DataKey(Sealer);

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(***)")
    }
}

impl DataKey {
    /// A fresh random data key and its raw bytes (to seal for storage).
    pub fn generate() -> (DataKey, RawKey) {
        let raw = Zeroizing::new(MasterKey::generate_bytes());
        (DataKey::from_raw(&raw), raw)
    }

    /// The data key with these raw bytes.
    pub fn from_raw(raw: &[u8; 32]) -> DataKey {
        DataKey(Sealer::new(raw).expect("a 32-byte key"))
    }

    /// Seals `plaintext` for the record stored under `aad`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        self.0.seal(aad, plaintext)
    }

    /// Opens a value sealed for the record stored under `aad`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.0.open(aad, sealed)
    }
}

/// Deterministic sealing of the ids the store keeps in its keys and
/// records (calendar ids, provider event ids and hrefs, client event ids,
/// server URLs, sync cursors): they often carry a user's e-mail address,
/// and a key must stay the same for the same id to be found again.
///
/// AES-256-GCM-SIV under the store's id key (in the keyring, never in the
/// store) with one fixed nonce: GCM-SIV is built to stay safe when a nonce
/// repeats, revealing then only whether two ids are equal. The output is
/// URL-safe base64 (no NUL, so it can sit between the NULs that join key
/// parts); the empty id stays empty. `Debug` prints no key material.
#[derive(Clone)]
pub struct IdCipher(Aes256GcmSiv);

/// The fixed nonce of [`IdCipher`] (12 bytes).
const ID_NONCE: &[u8; NONCE_LEN] = b"calbridge-id";
/// The associated data of every sealed id: this format's version.
const ID_AAD: &[u8] = b"calbridge/ids/1";

impl std::fmt::Debug for IdCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdCipher(***)")
    }
}

impl IdCipher {
    /// The cipher of these raw key bytes.
    pub fn from_raw(raw: &[u8; 32]) -> IdCipher {
        IdCipher(Aes256GcmSiv::new_from_slice(raw).expect("a 32-byte key"))
    }

    /// A cipher under a fresh random key (tests and throw-away stores).
    pub fn random() -> IdCipher {
        IdCipher::from_raw(&MasterKey::generate_bytes())
    }

    /// The sealed form of `id`: the same for the same id.
    pub fn seal(&self, id: &str) -> String {
        use base64::Engine;
        if id.is_empty() {
            return String::new();
        }
        let ct = self
            .0
            .encrypt(
                Nonce::from_slice(ID_NONCE),
                Payload {
                    msg: id.as_bytes(),
                    aad: ID_AAD,
                },
            )
            .expect("AES-GCM-SIV encryption of in-memory data cannot fail");
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(ct)
    }

    /// The id sealed by [`IdCipher::seal`].
    pub fn open(&self, sealed: &str) -> Result<String, CryptoError> {
        use base64::Engine;
        if sealed.is_empty() {
            return Ok(String::new());
        }
        let ct = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(sealed)
            .map_err(|_| CryptoError::Open)?;
        let pt = self
            .0
            .decrypt(
                Nonce::from_slice(ID_NONCE),
                Payload {
                    msg: &ct,
                    aad: ID_AAD,
                },
            )
            .map_err(|_| CryptoError::Open)?;
        String::from_utf8(pt).map_err(|_| CryptoError::Open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_ids_are_stable_opaque_and_open_only_under_their_key() {
        let ids = IdCipher::random();
        let id = "alice@example.com";
        let sealed = ids.seal(id);
        assert_eq!(sealed, ids.seal(id));
        assert_ne!(sealed, ids.seal("bob@example.com"));
        assert!(!sealed.contains("alice") && !sealed.contains('@') && !sealed.contains('\0'));
        assert_eq!(ids.open(&sealed).unwrap(), id);
        assert!(IdCipher::random().open(&sealed).is_err());
        assert!(ids.open("not sealed").is_err());
        assert_eq!(ids.seal(""), "");
        assert_eq!(ids.open("").unwrap(), "");
    }

    #[test]
    fn a_data_key_round_trips_and_binds_the_record_key() {
        let master = MasterKey::from_bytes(&MasterKey::generate_bytes()).unwrap();
        let (key, wrapped) = master.new_data_key("acc_1");
        let sealed = key.seal(b"events/1", b"Dentist");
        assert!(!sealed.windows(7).any(|w| w == b"Dentist"));
        let again = master.unwrap_data_key("acc_1", &wrapped).unwrap();
        assert_eq!(again.open(b"events/1", &sealed).unwrap(), b"Dentist");
        assert!(again.open(b"events/2", &sealed).is_err());
        assert!(master.unwrap_data_key("acc_2", &wrapped).is_err());
    }

    #[test]
    fn another_master_key_cannot_unwrap() {
        let a = MasterKey::from_bytes(&MasterKey::generate_bytes()).unwrap();
        let b = MasterKey::from_bytes(&MasterKey::generate_bytes()).unwrap();
        let (_, wrapped) = a.new_data_key("acc");
        assert!(b.unwrap_data_key("acc", &wrapped).is_err());
    }

    #[test]
    fn the_previous_master_key_opens_what_it_sealed_and_is_reported() {
        let old = MasterKey::from_bytes(&MasterKey::generate_bytes()).unwrap();
        let new = MasterKey::from_bytes(&MasterKey::generate_bytes()).unwrap();
        let (_, raw) = DataKey::generate();
        let sealed = old.seal_key(b"k/acc", &raw);
        let keys = MasterKeys {
            current: new.clone(),
            previous: Some(old.clone()),
        };
        let (opened, under_previous) = keys.open_key(b"k/acc", &sealed).unwrap();
        assert_eq!(*opened, *raw);
        assert!(under_previous);
        assert!(MasterKeys::new(new.clone())
            .open_key(b"k/acc", &sealed)
            .is_err());
        assert!(keys.open_key(b"k/other", &sealed).is_err());
        assert!(!old.same_key(&new));
        assert!(old.same_key(&old.clone()));
    }

    #[test]
    fn keys_of_the_wrong_length_are_refused() {
        assert!(matches!(
            MasterKey::from_bytes(&[0u8; 16]),
            Err(CryptoError::KeyLength(16))
        ));
    }
}
