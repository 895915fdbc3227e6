//! Revocation: at the provider where possible, then locally for good.

use calbridge::pb::{self, AccountStatus};
use calbridge::ErrorKind;

use crate::accounts::{account_pb, purge_revoked_rows, status_change, tenant_account};
use crate::clock::now_ms;
use crate::ids::{AccountId, CalendarId, TenantId};
use crate::sealing;
use crate::state::Shared;
use crate::watches::stop_watches;

/// Revokes an account: at the provider where possible, stops channels,
/// marks it revoked, destroys its data key in the keyring, deletes every
/// row and records the change.
///
/// In-flight work is excluded by the store rather than waited for: the
/// account is marked revoked in the same transaction that records REVOKED
/// in the feed, and every later write naming the account (a sync page read
/// before the mark, a write's result, a token refresh) sees the mark and
/// writes nothing. So the feed never has an entry of the account after
/// REVOKED. The key is destroyed durably before any row goes: a crash after
/// that leaves only unreadable rows, which the start-up sweep purges
/// ([`crate::accounts::sweep_revoked`]), as it does rows a crash left otherwise.
pub async fn revoke(
    shared: &Shared,
    tenant: &TenantId,
    account_id: &AccountId,
) -> Result<pb::Account, ErrorKind> {
    tenant_account(shared, tenant, account_id)?;
    // One revocation of an account at a time, so REVOKED is recorded once.
    // (No client event has an empty calendar id: this lock is no write's.)
    let lock = shared.client_lock(account_id, &CalendarId::from(""), "revoke");
    let _one_revocation = lock.lock().await;
    let mut account = tenant_account(shared, tenant, account_id)?;
    if account.status == AccountStatus::Revoked {
        // A revocation whose key destruction failed completes it.
        sealing::destroy_data_key(&shared.vault, account_id).await?;
        return Ok(account_pb(shared, &account));
    }
    stop_watches(shared, &account, None).await;
    if let (Ok(credentials), Ok(mut client)) = (
        crate::accounts::usable_credentials(shared, &account).await,
        shared.adapters.client(account.provider),
    ) {
        if let Err(s) = client
            .revoke_credentials(pb::RevokeCredentialsRequest {
                credentials: Some(credentials),
            })
            .await
        {
            tracing::warn!(account_id = %account_id, code = ?s.code(), "revocation at the provider failed; revoking locally");
        }
    }
    account.status = AccountStatus::Revoked;
    account.status_reason = "revoked through calbridge".into();
    account.sealed_credentials.clear();
    account.sealed_identity.clear();
    // The mark and its feed entry in one transaction: from here on no write
    // naming the account commits.
    shared.store.put_account_with_changes(
        &account,
        &[status_change(&account, AccountStatus::Revoked)],
        now_ms(),
    )?;
    shared.log_appended();
    shared.store.flush().await?;
    // Then the key, durably, before any row goes.
    sealing::destroy_data_key(&shared.vault, account_id).await?;
    shared.account_mirror_changed(account_id);
    purge_revoked_rows(shared, account_id)?;
    shared.store.remove_identity(&account.identity_hash)?;
    shared.store.flush().await?;
    Ok(account_pb(shared, &account))
}
