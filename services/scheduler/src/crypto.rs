//! Envelope encryption of everything that could identify a person or grant
//! access: a master key (from a file or the environment) wraps one random
//! data key per account, and each data key seals that account's credentials
//! and event content with AES-256-GCM-SIV. Destroying an account's wrapped
//! data key makes every byte sealed under it unreadable, backups included.

use aes_gcm_siv::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm_siv::{Aes256GcmSiv, Nonce};

const NONCE_LEN: usize = 12;

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

/// The master key: wraps and unwraps account data keys. `Debug` prints no
/// key material.
#[derive(Clone)]
pub struct MasterKey(Sealer);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(***)")
    }
}

impl MasterKey {
    /// A master key from 32 raw bytes.
    pub fn from_bytes(key: &[u8]) -> Result<MasterKey, CryptoError> {
        Ok(MasterKey(Sealer::new(key)?))
    }

    /// 32 fresh random bytes, for generating a development key.
    pub fn generate_bytes() -> [u8; 32] {
        let key = Aes256GcmSiv::generate_key(&mut OsRng);
        let mut out = [0u8; 32];
        out.copy_from_slice(&key);
        out
    }

    /// Makes a new data key for `account_id`: the key and its wrapped form to
    /// store.
    pub fn new_data_key(&self, account_id: &str) -> (DataKey, Vec<u8>) {
        let raw = Self::generate_bytes();
        let wrapped = self.0.seal(wrap_aad(account_id).as_bytes(), &raw);
        (DataKey(Sealer::new(&raw).expect("32-byte key")), wrapped)
    }

    /// Unwraps a stored data key of `account_id`.
    pub fn unwrap_data_key(
        &self,
        account_id: &str,
        wrapped: &[u8],
    ) -> Result<DataKey, CryptoError> {
        let raw = self.0.open(wrap_aad(account_id).as_bytes(), wrapped)?;
        Ok(DataKey(Sealer::new(&raw)?))
    }

    /// Seals a value that belongs to no account (pending OAuth states).
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        self.0.seal(aad, plaintext)
    }

    /// Opens a value sealed with [`MasterKey::seal`].
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.0.open(aad, sealed)
    }
}

fn wrap_aad(account_id: &str) -> String {
    format!("calbridge/data-key/{account_id}")
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
    /// Seals `plaintext` for the record stored under `aad`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        self.0.seal(aad, plaintext)
    }

    /// Opens a value sealed for the record stored under `aad`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.0.open(aad, sealed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn keys_of_the_wrong_length_are_refused() {
        assert!(matches!(
            MasterKey::from_bytes(&[0u8; 16]),
            Err(CryptoError::KeyLength(16))
        ));
    }
}
