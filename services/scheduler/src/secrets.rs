//! Loading the master key and the admin token. In production mode both must
//! be configured; in local mode missing ones are generated into the data
//! directory (readable by the owner only) with a loud warning. Also the
//! online rotation of the master key.

use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use calbridge::ErrorKind;

use crate::config::{Config, Mode};
use crate::crypto::hash_hex;
use crate::crypto::{MasterKey, MasterKeys};
use crate::keyring::{vault_err, KeyVault, Rotation};

/// Why a secret could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// The file could not be read or written.
    #[error("{what} file {path}: {detail}")]
    File {
        /// Which secret.
        what: &'static str,
        /// The file.
        path: String,
        /// What failed.
        detail: String,
    },
    /// The master key is not 32 bytes in any accepted encoding.
    #[error("master key ({source_name}) must be 32 bytes: raw, 64 hex characters or base64")]
    BadMasterKey {
        /// Where it came from.
        source_name: String,
    },
    /// The admin token is too short.
    #[error("admin token in {path} must be at least 16 characters")]
    WeakAdminToken {
        /// The file.
        path: String,
    },
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, SecretsError> {
    std::fs::read(path).map_err(|e| SecretsError::File {
        what,
        path: path.display().to_string(),
        detail: e.to_string(),
    })
}

fn write_private(what: &'static str, path: &Path, bytes: &[u8]) -> Result<(), SecretsError> {
    let err = |e: std::io::Error| SecretsError::File {
        what,
        path: path.display().to_string(),
        detail: e.to_string(),
    };
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)
}

/// Decodes a 32-byte key given raw, as hex or as base64.
pub fn decode_key(bytes: &[u8]) -> Option<Vec<u8>> {
    if bytes.len() == 32 {
        return Some(bytes.to_vec());
    }
    let text = std::str::from_utf8(bytes).ok()?.trim();
    if let Ok(k) = hex::decode(text) {
        if k.len() == 32 {
            return Some(k);
        }
    }
    for engine in [
        base64::engine::general_purpose::STANDARD,
        base64::engine::general_purpose::URL_SAFE,
    ] {
        if let Ok(k) = engine.decode(text) {
            if k.len() == 32 {
                return Some(k);
            }
        }
    }
    None
}

/// The master key from `CALBRIDGE_MASTER_KEY`, the configured file, or (local
/// mode only) `<data-dir>/master.key`, generated when missing.
pub fn master_key(config: &Config) -> Result<MasterKey, SecretsError> {
    let (raw, source_name) = if let Some(k) = &config.master_key {
        (
            k.expose().as_bytes().to_vec(),
            "CALBRIDGE_MASTER_KEY".to_string(),
        )
    } else if let Some(p) = &config.master_key_file {
        (read("master key", p)?, p.display().to_string())
    } else {
        debug_assert_eq!(config.mode, Mode::Local);
        let p = config.data_dir.join("master.key");
        if !p.exists() {
            let key = hex::encode(MasterKey::generate_bytes());
            write_private("master key", &p, key.as_bytes())?;
            tracing::warn!(
                path = %p.display(),
                "LOCAL MODE: generated a development master key next to the store. Anyone who can read this file can read the store. Never use this in production: set master_key_file and mode = production."
            );
        }
        (read("master key", &p)?, p.display().to_string())
    };
    let key = decode_key(&raw).ok_or(SecretsError::BadMasterKey {
        source_name: source_name.clone(),
    })?;
    MasterKey::from_bytes(&key).map_err(|_| SecretsError::BadMasterKey { source_name })
}

/// The master key ([`master_key`]) and, during a rotation, the previous
/// one from `previous_master_key_file` or `CALBRIDGE_PREVIOUS_MASTER_KEY`
/// (ignored with a warning when it is the master key itself).
pub fn master_keys(config: &Config) -> Result<MasterKeys, SecretsError> {
    let current = master_key(config)?;
    let previous = match (
        &config.previous_master_key,
        &config.previous_master_key_file,
    ) {
        (Some(k), _) => Some((
            k.expose().as_bytes().to_vec(),
            "CALBRIDGE_PREVIOUS_MASTER_KEY".to_string(),
        )),
        (None, Some(p)) => Some((read("previous master key", p)?, p.display().to_string())),
        (None, None) => None,
    };
    let previous = match previous {
        None => None,
        Some((raw, source_name)) => {
            let key = decode_key(&raw)
                .and_then(|k| MasterKey::from_bytes(&k).ok())
                .ok_or(SecretsError::BadMasterKey { source_name })?;
            if key.same_key(&current) {
                tracing::warn!("the previous master key is the master key itself; ignored");
                None
            } else {
                Some(key)
            }
        }
    };
    Ok(MasterKeys { current, previous })
}

/// The hash of the admin token from the configured file, or (local mode
/// only) `<data-dir>/admin.token`, generated when missing.
pub fn admin_token_hash(config: &Config) -> Result<String, SecretsError> {
    let path = match &config.admin_token_file {
        Some(p) => p.clone(),
        None => {
            let p = config.data_dir.join("admin.token");
            if !p.exists() {
                let mut b = [0u8; 24];
                rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut b);
                write_private(
                    "admin token",
                    &p,
                    format!("cba_{}\n", hex::encode(b)).as_bytes(),
                )?;
                tracing::warn!(path = %p.display(), "LOCAL MODE: generated an admin token file for the Admin API");
            }
            p
        }
    };
    let raw = read("admin token", &path)?;
    let token = String::from_utf8_lossy(&raw);
    let token = token.lines().next().unwrap_or("").trim();
    if token.len() < 16 {
        return Err(SecretsError::WeakAdminToken {
            path: path.display().to_string(),
        });
    }
    Ok(hash_hex(&[token]))
}

/// Rotates the master key online: reads the configured master key again
/// and re-seals every account data key under it.
pub async fn rotate_master_key(
    config: &Config,
    vault: &Arc<dyn KeyVault>,
) -> Result<Rotation, ErrorKind> {
    if config.master_key.is_some() {
        return Err(ErrorKind::FailedPrecondition(
            "the master key comes from CALBRIDGE_MASTER_KEY, which cannot change while the scheduler runs: configure master_key_file to rotate online, or restart with the new key and the old one as previous_master_key_file".into(),
        ));
    }
    let master = master_key(config).map_err(|e| {
        ErrorKind::FailedPrecondition(format!("the master key cannot be read: {e}"))
    })?;
    let vault = vault.clone();
    let rotation = tokio::task::spawn_blocking(move || vault.rotate(master))
        .await
        .map_err(|_| ErrorKind::Internal("the rotation task failed".into()))?
        .map_err(vault_err)?;
    if rotation.rotated {
        tracing::warn!(
            account_keys = rotation.account_keys,
            "master key rotated: the keyring is sealed under the new key; keep the old key until backups taken before now have expired"
        );
    }
    Ok(rotation)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_decode_from_raw_hex_and_base64() {
        let raw = [7u8; 32];
        assert_eq!(decode_key(&raw).unwrap(), raw.to_vec());
        assert_eq!(
            decode_key(hex::encode(raw).as_bytes()).unwrap(),
            raw.to_vec()
        );
        let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
        assert_eq!(
            decode_key(format!("{b64}\n").as_bytes()).unwrap(),
            raw.to_vec()
        );
        assert!(decode_key(b"short").is_none());
    }
}
