//! Accounts and their credentials, as every other part of the scheduler
//! reads them: a tenant's account, its usable (refreshed) credentials, its
//! status (re-authorisation, revocation's purge) and the checks that a
//! revoked or read-only account fails. Connecting, re-authorising and
//! revoking are [`crate::connections`]'s.

mod credentials;
mod status;

pub use credentials::usable_credentials;
pub use status::{mark_reauth_required, purge_revoked_rows, sweep_revoked};
pub(crate) use status::{record_status_change, status_change};

use calbridge::pb::{self, AccessLevel, AccountStatus};
use calbridge::ErrorKind;

use crate::crypto::DataKey;
use crate::ids::{AccountId, TenantId};
use crate::sealing::{self, calendar_aad, identity_aad};
use crate::state::Shared;
use crate::store::{AccountRecord, CalendarRecord};

/// Loads an account of `tenant`; another tenant's account is NOT_FOUND.
pub fn tenant_account(
    shared: &Shared,
    tenant: &TenantId,
    account_id: &AccountId,
) -> Result<AccountRecord, ErrorKind> {
    match shared.store.account(account_id)? {
        Some(a) if a.tenant_id == *tenant => Ok(a),
        _ => Err(ErrorKind::NotFound(format!(
            "account {account_id:?} not found"
        ))),
    }
}

/// The decrypted provider credentials of an account.
pub fn credentials(
    shared: &Shared,
    account: &AccountRecord,
) -> Result<pb::ProviderCredentials, ErrorKind> {
    sealing::open_credentials(&shared.live_key(account)?, account)
}

/// One page of a tenant's accounts, `n` at most after account id `after`,
/// and the token of the next page (empty at the end).
pub fn list_page(
    shared: &Shared,
    tenant: &TenantId,
    after: Option<&str>,
    n: usize,
) -> Result<(Vec<pb::Account>, String), ErrorKind> {
    let list = shared.store.tenant_accounts(tenant, after, n + 1)?;
    let more = list.len() > n;
    let accounts: Vec<pb::Account> = list.iter().take(n).map(|a| account_pb(shared, a)).collect();
    let next = if more {
        accounts
            .last()
            .map(|a| a.account_id.clone())
            .unwrap_or_default()
    } else {
        String::new()
    };
    Ok((accounts, next))
}

/// Converts an account record to the contract message.
pub fn account_pb(shared: &Shared, a: &AccountRecord) -> pb::Account {
    let identity = shared
        .data_key(a)
        .ok()
        .flatten()
        .and_then(|k| {
            k.open(identity_aad(&a.account_id).as_bytes(), &a.sealed_identity)
                .ok()
        })
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    pb::Account {
        account_id: a.account_id.to_string(),
        provider: a.provider as i32,
        provider_account_id: identity,
        access_level: a.access_level as i32,
        status: a.status as i32,
        status_reason: a.status_reason.clone(),
        created_at: chrono::DateTime::from_timestamp_millis(a.created_ms)
            .map(calbridge::time::to_timestamp),
        server_url: a.server_url.clone(),
        calendars_omitted: a.calendars_omitted,
    }
}

/// Converts a calendar record to the contract message.
pub fn calendar_pb(
    key: Option<&DataKey>,
    account_id: &AccountId,
    c: &CalendarRecord,
) -> pb::Calendar {
    let name = key
        .and_then(|k| {
            k.open(
                calendar_aad(account_id, &c.calendar_id).as_bytes(),
                &c.sealed_name,
            )
            .ok()
        })
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    pb::Calendar {
        calendar_id: c.calendar_id.to_string(),
        account_id: account_id.to_string(),
        name,
        primary: c.primary,
        read_only: c.read_only,
        time_zone: c.time_zone.clone(),
        synced: c.synced,
        color: c.color.clone(),
    }
}

/// A provider's name for messages.
pub fn provider_name(provider: pb::Provider) -> &'static str {
    crate::providers::info(provider).map_or("provider", |p| p.name)
}

/// FAILED_PRECONDITION naming `field` when the account is revoked. A
/// revoked account has no calendars left, so answering for it would report
/// it free all the time: free/busy, availability and holds refuse it.
pub fn check_not_revoked(account: &AccountRecord, field: &str) -> Result<(), ErrorKind> {
    if account.status == AccountStatus::Revoked {
        return Err(ErrorKind::FailedPrecondition(format!(
            "{field}: account {:?} is revoked; leave it out",
            account.account_id
        )));
    }
    Ok(())
}

/// True when the account may be written to.
pub fn check_writable(account: &AccountRecord) -> Result<(), ErrorKind> {
    match account.status {
        AccountStatus::Active => {}
        AccountStatus::ReauthRequired => {
            return Err(ErrorKind::FailedPrecondition(
                "the account needs re-authorisation: connect it again".into(),
            ))
        }
        _ => {
            return Err(ErrorKind::FailedPrecondition(
                "the account is revoked".into(),
            ))
        }
    }
    if account.access_level != AccessLevel::ReadWrite {
        return Err(ErrorKind::PermissionDenied(
            "the account was connected without write access (access level READ_WRITE is needed)"
                .into(),
        ));
    }
    Ok(())
}
