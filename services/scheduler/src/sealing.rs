//! Sealing of what the store keeps under an account's data key: the
//! additional authenticated data (AAD) that binds each sealed value to its
//! record, event content, credentials, and finding an account's key in the
//! keyring.

use std::sync::Arc;

use calbridge::pb;
use calbridge::ErrorKind;
use prost::Message;

use crate::crypto::DataKey;
use crate::ids::{AccountId, CalendarId};
use crate::keyring::{vault_err, KeyVault};
use crate::store::AccountRecord;

/// AAD of an account's credentials.
pub fn cred_aad(account_id: &AccountId) -> String {
    format!("credentials/{account_id}")
}

/// AAD of an account's provider identity.
pub fn identity_aad(account_id: &AccountId) -> String {
    format!("identity/{account_id}")
}

/// AAD of a calendar's name.
pub fn calendar_aad(account_id: &AccountId, calendar_id: &CalendarId) -> String {
    format!("calendar/{account_id}/{calendar_id}")
}

/// AAD of a mirrored event.
pub fn event_aad(account_id: &AccountId, calendar_id: &CalendarId, pid: &str) -> String {
    format!("event/{account_id}/{calendar_id}/{pid}")
}

/// AAD of an event snapshot in the change log.
pub fn change_aad(account_id: &AccountId, calendar_id: &CalendarId, pid: &str) -> String {
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

/// Seals credentials for storage.
pub fn seal_credentials(
    key: &DataKey,
    account_id: &AccountId,
    c: &pb::ProviderCredentials,
) -> Vec<u8> {
    key.seal(cred_aad(account_id).as_bytes(), &c.encode_to_vec())
}

/// Opens an account's sealed credentials.
pub fn open_credentials(
    key: &DataKey,
    account: &AccountRecord,
) -> Result<pb::ProviderCredentials, ErrorKind> {
    let bytes = key
        .open(
            cred_aad(&account.account_id).as_bytes(),
            &account.sealed_credentials,
        )
        .map_err(|_| ErrorKind::Internal("stored credentials cannot be opened".into()))?;
    pb::ProviderCredentials::decode(bytes.as_slice())
        .map_err(|_| ErrorKind::Internal("stored credentials cannot be decoded".into()))
}

/// The data key of an account; `None` when revoked.
pub fn data_key(
    vault: &dyn KeyVault,
    account: &AccountRecord,
) -> Result<Option<DataKey>, ErrorKind> {
    if account.status == pb::AccountStatus::Revoked {
        return Ok(None);
    }
    match vault.data_key(&account.account_id) {
        Some(k) => Ok(Some(k)),
        None => {
            tracing::error!(account_id = %account.account_id, "the keyring holds no data key for this account");
            Err(ErrorKind::Internal("the account's data key is missing from the keyring: was the keyring replaced by an older copy?".into()))
        }
    }
}

/// Makes the data key of a new account, stored durably in the vault.
pub async fn create_data_key(
    vault: &Arc<dyn KeyVault>,
    account_id: &AccountId,
) -> Result<DataKey, ErrorKind> {
    let (vault, id) = (vault.clone(), account_id.to_string());
    tokio::task::spawn_blocking(move || vault.create(&id))
        .await
        .map_err(|_| ErrorKind::Internal("the keyring task failed".into()))?
        .map_err(vault_err)
}

/// Destroys an account's data key in the vault, durably (revocation):
/// from then on nothing the scheduler keeps can open what it sealed.
pub async fn destroy_data_key(
    vault: &Arc<dyn KeyVault>,
    account_id: &AccountId,
) -> Result<(), ErrorKind> {
    let (vault, ids) = (vault.clone(), vec![account_id.to_string()]);
    tokio::task::spawn_blocking(move || vault.destroy(&ids))
        .await
        .map_err(|_| ErrorKind::Internal("the keyring task failed".into()))?
        .map_err(vault_err)?;
    Ok(())
}
