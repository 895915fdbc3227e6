//! Connecting accounts: with a password (checked at the provider before
//! anything is stored) or through OAuth ([`oauth`]), storing what the
//! provider confirmed (a new account, or a re-authorised one proven to be
//! the same provider user), refreshing the calendar list, and revocation
//! ([`revoke`], which destroys the account's data key and every mirrored
//! byte).

pub mod oauth;
mod revoke;

pub use revoke::revoke;

use std::collections::{HashMap, HashSet};

use calbridge::pb::{self, AccountStatus};
use calbridge::ErrorKind;

use crate::accounts::{account_pb, provider_name, record_status_change};
use crate::adapters::adapter_error;
use crate::clock::now_ms;
use crate::crypto::{hash_hex, random_hex};
use crate::ids::{AccountId, CalendarId, TenantId};
use crate::sealing::{self, calendar_aad, identity_aad, seal_credentials};
use crate::state::Shared;
use crate::store::{AccountRecord, CalendarRecord};
use crate::watches::start_watches;

/// Connects (or re-authorises) a password account for `tenant`.
pub async fn connect_password(
    shared: &Shared,
    tenant: &TenantId,
    req: pb::ConnectPasswordAccountRequest,
) -> Result<pb::Account, ErrorKind> {
    let provider = crate::providers::from_request(req.provider);
    let mut client = shared.adapters.client(provider)?;
    let credentials = client
        .check_password(pb::CheckPasswordRequest {
            server_url: req.server_url.clone(),
            username: req.username.clone(),
            password: req.password.clone(),
            access_level: req.access_level,
        })
        .await
        .map_err(|s| match adapter_error(&s) {
            ErrorKind::Unauthenticated(_) => {
                ErrorKind::Unauthenticated("the provider rejected the user name or password".into())
            }
            other => other,
        })?
        .into_inner();
    store_connected(
        shared,
        tenant,
        Connected {
            provider,
            access_level: pb::AccessLevel::try_from(req.access_level)
                .unwrap_or(pb::AccessLevel::Unspecified),
            server_url: &req.server_url,
            credentials,
            expected_account: None,
        },
    )
    .await
}

/// What a provider confirmed about an account being connected.
pub struct Connected<'a> {
    /// The provider.
    pub provider: pb::Provider,
    /// What calbridge may read and write.
    pub access_level: pb::AccessLevel,
    /// The server URL asked for (CalDAV), used when the credentials carry none.
    pub server_url: &'a str,
    /// The credentials the provider accepted.
    pub credentials: pb::ProviderCredentials,
    /// When re-authorising a known account: its id. Credentials of another
    /// provider identity are then refused, and nothing is stored.
    pub expected_account: Option<&'a str>,
}

/// Lists the calendars of a freshly connected account and stores it (a new
/// account, or a known identity reconnected: its mirror is kept and a
/// paused sync resumes), then starts push channels and the first syncs.
pub async fn store_connected(
    shared: &Shared,
    tenant: &TenantId,
    c: Connected<'_>,
) -> Result<pb::Account, ErrorKind> {
    let credentials = c.credentials;
    let calendars = shared
        .adapters
        .client(c.provider)?
        .list_calendars(pb::ListProviderCalendarsRequest {
            credentials: Some(credentials.clone()),
        })
        .await
        .map_err(|s| adapter_error(&s))?
        .into_inner()
        .calendars;

    let identity_hash = identity_hash(tenant, c.provider, &credentials.provider_account_id);
    // The account this identity connected before, if any: found by the
    // exact identity's hash, and only when its own sealed identity is
    // exactly the one the provider confirmed now (the proof that this is
    // the same provider user; a mapping that says otherwise is ignored).
    let existing = match shared.store.account_by_identity(&identity_hash)? {
        Some(id) => shared.store.account(&id)?.filter(|a| {
            a.tenant_id == *tenant
                && a.provider == c.provider
                && sealed_identity(shared, a).as_deref()
                    == Some(credentials.provider_account_id.as_str())
        }),
        None => None,
    };
    if let Some(expected) = c.expected_account {
        if existing.as_ref().map(|a| a.account_id.as_str()) != Some(expected) {
            return Err(ErrorKind::FailedPrecondition(format!(
                "the user signed in as a different {} account than account {expected:?}; nothing was changed",
                provider_name(c.provider)
            )));
        }
    }
    // A new account (not a re-authorisation) must fit the tenant's quota.
    if !matches!(&existing, Some(a) if a.status != AccountStatus::Revoked) {
        check_account_quota(shared, tenant)?;
    }
    let was_reauth = existing
        .as_ref()
        .is_some_and(|a| a.status == AccountStatus::ReauthRequired);
    let (mut account, key) = match existing {
        Some(a) if a.status != AccountStatus::Revoked => {
            let key = shared.live_key(&a)?;
            (a, key)
        }
        _ => {
            let account_id = format!("acc_{}", random_hex(12));
            let key =
                sealing::create_data_key(&shared.vault, &AccountId::from(account_id.as_str()))
                    .await?;
            (
                AccountRecord {
                    account_id: account_id.clone().into(),
                    tenant_id: tenant.into(),
                    provider: c.provider,
                    access_level: c.access_level,
                    status: AccountStatus::Active,
                    status_reason: String::new(),
                    created_ms: now_ms(),
                    server_url: String::new(),
                    sealed_credentials: Vec::new(),
                    sealed_identity: Vec::new(),
                    identity_hash: identity_hash.clone(),
                    calendars_omitted: 0,
                },
                key,
            )
        }
    };
    account.access_level = c.access_level;
    account.status = AccountStatus::Active;
    account.status_reason.clear();
    account.server_url = match &credentials.secret {
        Some(pb::provider_credentials::Secret::Password(p)) => p.server_url.clone(),
        _ => c.server_url.to_string(),
    };
    account.sealed_credentials = seal_credentials(&key, &account.account_id, &credentials);
    account.sealed_identity = key.seal(
        identity_aad(&account.account_id).as_bytes(),
        credentials.provider_account_id.as_bytes(),
    );
    let (records, omitted) = calendar_records(shared, &key, &account.account_id, &calendars)?;
    account.calendars_omitted = omitted;
    shared
        .store
        .put_account_with_calendars(&account, &records, now_ms())?;
    if was_reauth {
        record_status_change(shared, &account, AccountStatus::Active)?;
        crate::sync::resume_account(shared, &account.account_id)?;
    }
    shared.store.flush().await?;
    start_watches(shared, &account).await;
    for c in &records {
        if c.synced {
            shared.sync_soon(&account.account_id, &c.calendar_id);
        }
    }
    Ok(account_pb(shared, &account))
}

/// The hash an account's identity is found by: (tenant, provider, provider
/// account id), the provider account id exactly as the provider gave it.
/// Two provider users whose ids differ in any way, letter case included
/// (CalDAV principal URLs are case-sensitive), are two accounts.
pub fn identity_hash(
    tenant: &TenantId,
    provider: pb::Provider,
    provider_account_id: &str,
) -> String {
    // The provider's contract number, as every stored hash was made.
    hash_hex(&[tenant, &(provider as i32).to_string(), provider_account_id])
}

/// The provider account id sealed in an account's record; `None` when it
/// cannot be opened (a revoked account).
fn sealed_identity(shared: &Shared, account: &AccountRecord) -> Option<String> {
    let key = shared.data_key(account).ok().flatten()?;
    let bytes = key
        .open(
            identity_aad(&account.account_id).as_bytes(),
            &account.sealed_identity,
        )
        .ok()?;
    String::from_utf8(bytes).ok()
}

/// The store's meta entry recording that identity hashes are exact.
const IDENTITY_HASHES_META: &str = "identity_hashes";

/// Recomputes the identity hash of every account from its sealed identity,
/// once per store: stores written before identities became exact hashed
/// the lower-cased provider account id. Accounts whose identity cannot be
/// opened (revoked ones) keep theirs; they are never reconnected.
pub fn migrate_identity_hashes(shared: &Shared) -> Result<usize, ErrorKind> {
    if shared
        .store
        .meta_get(IDENTITY_HASHES_META)?
        .is_some_and(|v| v == b"exact")
    {
        return Ok(0);
    }
    let mut changed = 0;
    for t in shared.store.tenants()? {
        for a in shared
            .store
            .tenant_accounts(&t.tenant_id, None, usize::MAX)?
        {
            let Some(identity) = sealed_identity(shared, &a) else {
                continue;
            };
            let exact = identity_hash(&a.tenant_id, a.provider, &identity);
            if exact != a.identity_hash {
                shared.store.set_identity_hash(&a.account_id, &exact)?;
                changed += 1;
            }
        }
    }
    shared.store.meta_put(IDENTITY_HASHES_META, b"exact")?;
    Ok(changed)
}

/// RESOURCE_EXHAUSTED when the tenant already holds
/// `quotas.max_accounts_per_tenant` accounts (revoked ones do not count).
fn check_account_quota(shared: &Shared, tenant: &TenantId) -> Result<(), ErrorKind> {
    let max = shared.config.quotas.max_accounts_per_tenant;
    let held = shared
        .store
        .tenant_accounts(tenant, None, usize::MAX)?
        .iter()
        .filter(|a| a.status != AccountStatus::Revoked)
        .count();
    if held >= max {
        return Err(ErrorKind::RateLimited {
            message: format!(
                "the tenant holds {held} accounts, its quota (quotas.max_accounts_per_tenant = {max}): revoke one first"
            ),
            retry_after: None,
        });
    }
    Ok(())
}

/// Merges the provider's calendar list with what is stored: new calendars
/// are synced by default when they are primary or writable; existing ones
/// keep their `synced` choice. At most `quotas.max_calendars_per_account`
/// calendars are kept: the ones already kept, then new ones primary first,
/// then writable ones, then by id (a stable order, whatever order the
/// provider lists them in).
/// Returns the records and how many listed calendars were left out.
fn calendar_records(
    shared: &Shared,
    key: &crate::crypto::DataKey,
    account_id: &AccountId,
    calendars: &[pb::Calendar],
) -> Result<(Vec<CalendarRecord>, u32), ErrorKind> {
    let stored: HashMap<CalendarId, CalendarRecord> = shared
        .store
        .calendars(account_id)?
        .into_iter()
        .map(|c| (c.calendar_id.clone(), c))
        .collect();
    let mut seen = HashSet::new();
    let mut listed: Vec<&pb::Calendar> = calendars
        .iter()
        .filter(|c| {
            !c.calendar_id.is_empty()
                && c.calendar_id.len() <= calbridge::limits::MAX_CALENDAR_ID_BYTES
                && !c
                    .calendar_id
                    .chars()
                    .any(calbridge::validate::forbidden_in_id)
                && seen.insert(c.calendar_id.as_str())
        })
        .collect();
    listed.sort_by(|a, b| {
        let rank = |c: &pb::Calendar| {
            (
                !stored.contains_key(c.calendar_id.as_str()),
                !c.primary,
                c.read_only,
            )
        };
        rank(a)
            .cmp(&rank(b))
            .then_with(|| a.calendar_id.cmp(&b.calendar_id))
    });
    let mut room = shared
        .config
        .quotas
        .max_calendars_per_account
        .saturating_sub(stored.len());
    let mut omitted = 0u32;
    let mut out = Vec::new();
    for c in listed {
        let existing = stored.get(c.calendar_id.as_str());
        if existing.is_none() {
            if room == 0 {
                omitted = omitted.saturating_add(1);
                continue;
            }
            room -= 1;
        }
        out.push(CalendarRecord {
            calendar_id: c.calendar_id.clone().into(),
            sealed_name: key.seal(
                calendar_aad(account_id, &CalendarId::from(c.calendar_id.as_str())).as_bytes(),
                c.name.as_bytes(),
            ),
            primary: c.primary,
            read_only: c.read_only,
            time_zone: c.time_zone.clone(),
            synced: existing
                .map(|s| s.synced)
                .unwrap_or(c.primary || !c.read_only),
            color: c.color.clone(),
        });
    }
    if omitted > 0 {
        tracing::warn!(
            account_id = %account_id,
            kept = out.len(),
            omitted,
            "the provider lists more calendars than an account may keep"
        );
    }
    Ok((out, omitted))
}

/// Asks the provider for the account's calendars again and stores them.
pub async fn refresh_calendars(shared: &Shared, account: &AccountRecord) -> Result<(), ErrorKind> {
    let key = shared.live_key(account)?;
    let credentials = crate::accounts::usable_credentials(shared, account).await?;
    let calendars = shared
        .adapters
        .client(account.provider)?
        .list_calendars(pb::ListProviderCalendarsRequest {
            credentials: Some(credentials),
        })
        .await
        .map_err(|s| adapter_error(&s))?
        .into_inner()
        .calendars;
    let (records, omitted) = calendar_records(shared, &key, &account.account_id, &calendars)?;
    // Re-read: the credentials may have been refreshed (and stored) above.
    let mut account = shared
        .store
        .account(&account.account_id)?
        .ok_or_else(|| ErrorKind::NotFound("the account is gone".into()))?;
    account.calendars_omitted = omitted;
    shared
        .store
        .put_account_with_calendars(&account, &records, now_ms())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::TenantRecord;

    #[test]
    fn identity_hashes_of_an_older_store_become_exact_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = Shared::for_test(dir.path());
        s.store
            .put_tenant(&TenantRecord {
                tenant_id: "t".into(),
                name: "t".into(),
                created_ms: 0,
            })
            .unwrap();
        let principal = "https://dav.example/dav/Ada/";
        let caldav = pb::Provider::Caldav;
        // As stores before exact identities hashed it: lower-cased.
        let old = hash_hex(&[
            "t",
            &(caldav as i32).to_string(),
            &principal.to_ascii_lowercase(),
        ]);
        let key = s.vault.create("acc").unwrap();
        let account = AccountRecord {
            provider: caldav,
            sealed_identity: key.seal(
                identity_aad(&AccountId::from("acc")).as_bytes(),
                principal.as_bytes(),
            ),
            identity_hash: old.clone(),
            ..AccountRecord::for_test("acc")
        };
        s.store
            .put_account_with_calendars(&account, &[], 0)
            .unwrap();
        // A revoked account's identity cannot be opened: it is left alone.
        let gone = AccountRecord {
            identity_hash: "kept".into(),
            ..AccountRecord::for_test("gone")
        };
        s.store.put_account_with_calendars(&gone, &[], 0).unwrap();
        s.store
            .put_account(&AccountRecord {
                status: AccountStatus::Revoked,
                ..gone
            })
            .unwrap();

        assert_eq!(migrate_identity_hashes(&s).unwrap(), 1);
        let exact = identity_hash(&TenantId::from("t"), caldav, principal);
        assert_ne!(exact, old);
        assert_eq!(
            s.store.account("acc").unwrap().unwrap().identity_hash,
            exact
        );
        assert_eq!(
            s.store.account_by_identity(&exact).unwrap().as_deref(),
            Some("acc")
        );
        assert_eq!(s.store.account_by_identity(&old).unwrap(), None);
        assert_eq!(
            s.store.account("gone").unwrap().unwrap().identity_hash,
            "kept"
        );
        // The lower-cased principal is another user now.
        assert_ne!(
            identity_hash(
                &TenantId::from("t"),
                caldav,
                &principal.to_ascii_lowercase()
            ),
            exact
        );
        // Once per store.
        assert_eq!(migrate_identity_hashes(&s).unwrap(), 0);
    }
}
