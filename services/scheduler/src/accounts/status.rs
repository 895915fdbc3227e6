//! An account's status: the change-log entries of a new status,
//! re-authorisation, and the purge of a revoked account's rows.

use calbridge::pb::{AccountStatus, ChangeKind};
use calbridge::ErrorKind;

use crate::clock::now_ms;
use crate::ids::AccountId;
use crate::state::Shared;
use crate::store::{AccountRecord, ChangeDraft, StoreError};

/// The change-log entry of an account's new status.
pub(crate) fn status_change(account: &AccountRecord, status: AccountStatus) -> ChangeDraft {
    ChangeDraft {
        kind: ChangeKind::AccountStatus,
        account_id: account.account_id.clone(),
        calendar_id: Default::default(),
        provider_event_id: Default::default(),
        account_status: status,
        sealed_event: Vec::new(),
    }
}

/// Records an account's new status in the change log and tells the
/// feed's watchers.
pub(crate) fn record_status_change(
    shared: &Shared,
    account: &AccountRecord,
    status: AccountStatus,
) -> Result<(), ErrorKind> {
    shared.store.append_account_changes(
        &account.account_id,
        &account.tenant_id,
        &[status_change(account, status)],
        now_ms(),
    )?;
    shared.log_appended();
    Ok(())
}

/// Marks an account REAUTH_REQUIRED (once), pauses its sync and records the
/// change for the platform. The mirror is kept.
pub async fn mark_reauth_required(
    shared: &Shared,
    account_id: &AccountId,
    reason: &str,
) -> Result<(), ErrorKind> {
    let Some(mut account) = shared.store.account(account_id)? else {
        return Ok(());
    };
    if account.status != AccountStatus::Active {
        return Ok(());
    }
    account.status = AccountStatus::ReauthRequired;
    account.status_reason = reason.to_string();
    // The status and its feed entry at once; refused (nothing to do) when
    // the account was revoked meanwhile, so nothing follows REVOKED.
    match shared.store.put_account_with_changes(
        &account,
        &[status_change(&account, AccountStatus::ReauthRequired)],
        now_ms(),
    ) {
        Err(StoreError::AccountRevoked) => return Ok(()),
        other => other?,
    }
    shared.log_appended();
    shared
        .store
        .set_account_paused(account_id, true, now_ms())?;
    shared.store.flush().await?;
    tracing::warn!(account_id = %account_id, "account needs re-authorisation");
    Ok(())
}

/// Purges the rows of a revoked account (see
/// [`crate::store::Store::purge_accounts_rows`]) and drops what the caches
/// kept of it. Returns how many rows went.
pub fn purge_revoked_rows(shared: &Shared, account_id: &AccountId) -> Result<usize, ErrorKind> {
    let n = shared.store.purge_account_rows(account_id)?;
    shared.account_mirror_changed(account_id);
    shared.availability_cache.holds_changed();
    Ok(n)
}

/// Purges every row of every revoked account (run at start, before the
/// sync loop): what a crash during a revocation left, and what a sync or
/// write racing a revocation left before revocation excluded them. Returns
/// how many rows went.
pub fn sweep_revoked(shared: &Shared) -> Result<usize, ErrorKind> {
    let mut revoked = std::collections::HashSet::new();
    for t in shared.store.tenants()? {
        for a in shared
            .store
            .tenant_accounts(&t.tenant_id, None, usize::MAX)?
        {
            if a.status == AccountStatus::Revoked {
                revoked.insert(a.account_id);
            }
        }
    }
    shared
        .store
        .purge_accounts_rows(&revoked)
        .map_err(ErrorKind::from)
}
