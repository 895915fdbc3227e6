//! Account life cycle: connecting with a password (checked at the provider
//! before anything is stored), refreshing the calendar list, push channels,
//! re-authorisation, and revocation (which destroys the account's data key
//! and every mirrored byte).

use std::collections::{HashMap, HashSet};

use calbridge::pb::{self, AccessLevel, AccountStatus, ChangeKind};
use calbridge::ErrorKind;

use crate::adapters::adapter_error;
use crate::state::{calendar_aad, hash_hex, identity_aad, now_ms, random_hex, store_err, Shared};
use crate::store::{AccountRecord, CalendarRecord, ChangeDraft, ChannelRecord, StoreError};

/// Connects (or re-authorises) a password account for `tenant`.
pub async fn connect_password(
    shared: &Shared,
    tenant: &str,
    req: pb::ConnectPasswordAccountRequest,
) -> Result<pb::Account, ErrorKind> {
    let mut client = shared.adapters.client(req.provider)?;
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
            provider: req.provider,
            access_level: req.access_level,
            server_url: &req.server_url,
            credentials,
            expected_account: None,
        },
    )
    .await
}

/// What a provider confirmed about an account being connected.
pub struct Connected<'a> {
    /// `pb::Provider` value.
    pub provider: i32,
    /// `pb::AccessLevel` value.
    pub access_level: i32,
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
    tenant: &str,
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
    let existing = match shared
        .store
        .account_by_identity(&identity_hash)
        .map_err(store_err)?
    {
        Some(id) => shared.store.account(&id).map_err(store_err)?.filter(|a| {
            a.tenant_id == tenant
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
    if !matches!(&existing, Some(a) if a.status != AccountStatus::Revoked as i32) {
        check_account_quota(shared, tenant)?;
    }
    let was_reauth = existing
        .as_ref()
        .is_some_and(|a| a.status == AccountStatus::ReauthRequired as i32);
    let (mut account, key) = match existing {
        Some(a) if a.status != AccountStatus::Revoked as i32 => {
            let key = shared.live_key(&a)?;
            (a, key)
        }
        _ => {
            let account_id = format!("acc_{}", random_hex(12));
            let key = shared.create_data_key(&account_id).await?;
            (
                AccountRecord {
                    account_id: account_id.clone(),
                    tenant_id: tenant.to_string(),
                    provider: c.provider,
                    access_level: c.access_level,
                    status: AccountStatus::Active as i32,
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
    account.status = AccountStatus::Active as i32;
    account.status_reason.clear();
    account.server_url = match &credentials.secret {
        Some(pb::provider_credentials::Secret::Password(p)) => p.server_url.clone(),
        _ => c.server_url.to_string(),
    };
    account.sealed_credentials = Shared::seal_credentials(&key, &account.account_id, &credentials);
    account.sealed_identity = key.seal(
        identity_aad(&account.account_id).as_bytes(),
        credentials.provider_account_id.as_bytes(),
    );
    let (records, omitted) = calendar_records(shared, &key, &account.account_id, &calendars)?;
    account.calendars_omitted = omitted;
    shared
        .store
        .put_account_with_calendars(&account, &records, now_ms())
        .map_err(store_err)?;
    if was_reauth {
        record_status_change(shared, &account, AccountStatus::Active)?;
        crate::sync::resume_account(shared, &account.account_id)?;
    }
    shared.store.flush().await.map_err(store_err)?;
    start_watches(shared, &account).await;
    for c in &records {
        if c.synced {
            shared.sync_soon(&account.account_id, &c.calendar_id);
        }
    }
    Ok(shared.account_pb(&account))
}

/// The hash an account's identity is found by: (tenant, provider, provider
/// account id), the provider account id exactly as the provider gave it.
/// Two provider users whose ids differ in any way, letter case included
/// (CalDAV principal URLs are case-sensitive), are two accounts.
pub fn identity_hash(tenant: &str, provider: i32, provider_account_id: &str) -> String {
    hash_hex(&[tenant, &provider.to_string(), provider_account_id])
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
        .meta_get(IDENTITY_HASHES_META)
        .map_err(store_err)?
        .is_some_and(|v| v == b"exact")
    {
        return Ok(0);
    }
    let mut changed = 0;
    for t in shared.store.tenants().map_err(store_err)? {
        for a in shared
            .store
            .tenant_accounts(&t.tenant_id, None, usize::MAX)
            .map_err(store_err)?
        {
            let Some(identity) = sealed_identity(shared, &a) else {
                continue;
            };
            let exact = identity_hash(&a.tenant_id, a.provider, &identity);
            if exact != a.identity_hash {
                shared
                    .store
                    .set_identity_hash(&a.account_id, &exact)
                    .map_err(store_err)?;
                changed += 1;
            }
        }
    }
    shared
        .store
        .meta_put(IDENTITY_HASHES_META, b"exact")
        .map_err(store_err)?;
    Ok(changed)
}

/// RESOURCE_EXHAUSTED when the tenant already holds
/// `quotas.max_accounts_per_tenant` accounts (revoked ones do not count).
fn check_account_quota(shared: &Shared, tenant: &str) -> Result<(), ErrorKind> {
    let max = shared.config.quotas.max_accounts_per_tenant;
    let held = shared
        .store
        .tenant_accounts(tenant, None, usize::MAX)
        .map_err(store_err)?
        .iter()
        .filter(|a| a.status != AccountStatus::Revoked as i32)
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

/// A provider's name for messages.
pub fn provider_name(provider: i32) -> &'static str {
    match pb::Provider::try_from(provider) {
        Ok(pb::Provider::Google) => "Google",
        Ok(pb::Provider::Microsoft) => "Microsoft",
        Ok(pb::Provider::Icloud) => "iCloud",
        Ok(pb::Provider::Caldav) => "CalDAV",
        Ok(pb::Provider::Sandbox) => "sandbox",
        _ => "provider",
    }
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
    account_id: &str,
    calendars: &[pb::Calendar],
) -> Result<(Vec<CalendarRecord>, u32), ErrorKind> {
    let stored: HashMap<String, CalendarRecord> = shared
        .store
        .calendars(account_id)
        .map_err(store_err)?
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
                !stored.contains_key(&c.calendar_id),
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
        let existing = stored.get(&c.calendar_id);
        if existing.is_none() {
            if room == 0 {
                omitted = omitted.saturating_add(1);
                continue;
            }
            room -= 1;
        }
        out.push(CalendarRecord {
            calendar_id: c.calendar_id.clone(),
            sealed_name: key.seal(
                calendar_aad(account_id, &c.calendar_id).as_bytes(),
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
            account_id,
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
    let credentials = crate::oauth::usable_credentials(shared, account).await?;
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
        .account(&account.account_id)
        .map_err(store_err)?
        .ok_or_else(|| ErrorKind::NotFound("the account is gone".into()))?;
    account.calendars_omitted = omitted;
    shared
        .store
        .put_account_with_calendars(&account, &records, now_ms())
        .map_err(store_err)?;
    Ok(())
}

/// Starts push channels for the account's synced calendars when its adapter
/// supports push. Failures are logged: polling remains the safety net.
pub async fn start_watches(shared: &Shared, account: &AccountRecord) {
    let Ok(caps) = shared.adapters.capabilities(account.provider).await else {
        return;
    };
    if !caps.push {
        return;
    }
    let (Ok(credentials), Ok(calendars), Ok(channels)) = (
        crate::oauth::usable_credentials(shared, account).await,
        shared.store.calendars(&account.account_id),
        shared.store.channels(),
    ) else {
        return;
    };
    for c in calendars.iter().filter(|c| c.synced) {
        let live = channels.iter().any(|ch| {
            ch.account_id == account.account_id
                && ch.calendar_id == c.calendar_id
                && ch.expires_ms > now_ms()
        });
        if live {
            continue;
        }
        if let Err(e) = start_watch(shared, account, &credentials, &c.calendar_id).await {
            tracing::warn!(calendar_id = %calbridge::redact::id(&c.calendar_id), error = %e, "push channel not started; polling only");
        }
    }
}

/// Starts one push channel and stores it.
pub async fn start_watch(
    shared: &Shared,
    account: &AccountRecord,
    credentials: &pb::ProviderCredentials,
    calendar_id: &str,
) -> Result<(), ErrorKind> {
    let channel_id = format!("ch_{}", random_hex(12));
    let token = random_hex(24);
    let ch = shared
        .adapters
        .client(account.provider)?
        .start_watch(pb::StartWatchRequest {
            credentials: Some(credentials.clone()),
            calendar_id: calendar_id.to_string(),
            channel_id: channel_id.clone(),
            channel_token: token.clone(),
            callback_endpoint: shared.callback_url.clone(),
            ttl_seconds: shared.config.sync.push_channel_ttl_seconds,
        })
        .await
        .map_err(|s| adapter_error(&s))?
        .into_inner();
    let expires_ms = ch
        .expires_at
        .as_ref()
        .and_then(calbridge::time::from_timestamp)
        .map(|t| t.timestamp_millis())
        .unwrap_or_else(|| {
            now_ms() + i64::from(shared.config.sync.push_channel_ttl_seconds) * 1000
        });
    shared
        .store
        .put_channel(&ChannelRecord {
            channel_id,
            account_id: account.account_id.clone(),
            calendar_id: calendar_id.to_string(),
            token_hash: hash_hex(&[&token]),
            resource_id: ch.resource_id,
            expires_ms,
        })
        .map_err(store_err)?;
    Ok(())
}

/// Stops an account's push channels (all, or one calendar's).
pub async fn stop_watches(shared: &Shared, account: &AccountRecord, calendar: Option<&str>) {
    let Ok(channels) = shared.store.channels() else {
        return;
    };
    let credentials = crate::oauth::usable_credentials(shared, account).await.ok();
    for ch in channels.into_iter().filter(|c| {
        c.account_id == account.account_id && calendar.is_none_or(|cal| cal == c.calendar_id)
    }) {
        if let (Some(creds), Ok(mut client)) = (
            credentials.clone(),
            shared.adapters.client(account.provider),
        ) {
            let r = client
                .stop_watch(pb::StopWatchRequest {
                    credentials: Some(creds),
                    channel_id: ch.channel_id.clone(),
                    resource_id: ch.resource_id.clone(),
                })
                .await;
            if let Err(s) = r {
                tracing::warn!(channel_id = %ch.channel_id, code = ?s.code(), "push channel not stopped at the provider");
            }
        }
        let _ = shared.store.remove_channel(&ch.channel_id);
    }
}

/// Renews channels that expire within a quarter of their lifetime.
pub async fn renew_channels(shared: &Shared) {
    let Ok(channels) = shared.store.channels() else {
        return;
    };
    let margin = i64::from(shared.config.sync.push_channel_ttl_seconds) * 1000 / 4;
    for ch in channels
        .into_iter()
        .filter(|c| c.expires_ms - now_ms() < margin)
    {
        let Ok(Some(account)) = shared.store.account(&ch.account_id) else {
            let _ = shared.store.remove_channel(&ch.channel_id);
            continue;
        };
        let Ok(credentials) = crate::oauth::usable_credentials(shared, &account).await else {
            continue;
        };
        if start_watch(shared, &account, &credentials, &ch.calendar_id)
            .await
            .is_ok()
        {
            if let Ok(mut client) = shared.adapters.client(account.provider) {
                let _ = client
                    .stop_watch(pb::StopWatchRequest {
                        credentials: Some(credentials.clone()),
                        channel_id: ch.channel_id.clone(),
                        resource_id: ch.resource_id.clone(),
                    })
                    .await;
            }
            let _ = shared.store.remove_channel(&ch.channel_id);
        }
    }
}

/// The change-log entry of an account's new status.
fn status_change(account: &AccountRecord, status: AccountStatus) -> ChangeDraft {
    ChangeDraft {
        kind: ChangeKind::AccountStatus as i32,
        account_id: account.account_id.clone(),
        calendar_id: String::new(),
        provider_event_id: String::new(),
        account_status: status as i32,
        sealed_event: Vec::new(),
    }
}

fn record_status_change(
    shared: &Shared,
    account: &AccountRecord,
    status: AccountStatus,
) -> Result<(), ErrorKind> {
    shared
        .store
        .append_account_changes(
            &account.account_id,
            &account.tenant_id,
            &[status_change(account, status)],
            now_ms(),
        )
        .map_err(store_err)?;
    shared.log_appended();
    Ok(())
}

/// Marks an account REAUTH_REQUIRED (once), pauses its sync and records the
/// change for the platform. The mirror is kept.
pub async fn mark_reauth_required(
    shared: &Shared,
    account_id: &str,
    reason: &str,
) -> Result<(), ErrorKind> {
    let Some(mut account) = shared.store.account(account_id).map_err(store_err)? else {
        return Ok(());
    };
    if account.status != AccountStatus::Active as i32 {
        return Ok(());
    }
    account.status = AccountStatus::ReauthRequired as i32;
    account.status_reason = reason.to_string();
    // The status and its feed entry at once; refused (nothing to do) when
    // the account was revoked meanwhile, so nothing follows REVOKED.
    match shared.store.put_account_with_changes(
        &account,
        &[status_change(&account, AccountStatus::ReauthRequired)],
        now_ms(),
    ) {
        Err(StoreError::AccountRevoked) => return Ok(()),
        other => other.map_err(store_err)?,
    }
    shared.log_appended();
    shared
        .store
        .set_account_paused(account_id, true, now_ms())
        .map_err(store_err)?;
    shared.store.flush().await.map_err(store_err)?;
    tracing::warn!(account_id, "account needs re-authorisation");
    Ok(())
}

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
/// ([`sweep_revoked`]), as it does rows a crash left otherwise.
pub async fn revoke(
    shared: &Shared,
    tenant: &str,
    account_id: &str,
) -> Result<pb::Account, ErrorKind> {
    shared.tenant_account(tenant, account_id)?;
    // One revocation of an account at a time, so REVOKED is recorded once.
    // (No client event has an empty calendar id: this lock is no write's.)
    let lock = shared.client_lock(account_id, "", "revoke");
    let _one_revocation = lock.lock().await;
    let mut account = shared.tenant_account(tenant, account_id)?;
    if account.status == AccountStatus::Revoked as i32 {
        // A revocation whose key destruction failed completes it.
        shared.destroy_data_key(account_id).await?;
        return Ok(shared.account_pb(&account));
    }
    stop_watches(shared, &account, None).await;
    if let (Ok(credentials), Ok(mut client)) = (
        crate::oauth::usable_credentials(shared, &account).await,
        shared.adapters.client(account.provider),
    ) {
        if let Err(s) = client
            .revoke_credentials(pb::RevokeCredentialsRequest {
                credentials: Some(credentials),
            })
            .await
        {
            tracing::warn!(account_id, code = ?s.code(), "revocation at the provider failed; revoking locally");
        }
    }
    account.status = AccountStatus::Revoked as i32;
    account.status_reason = "revoked through calbridge".into();
    account.sealed_credentials.clear();
    account.sealed_identity.clear();
    // The mark and its feed entry in one transaction: from here on no write
    // naming the account commits.
    shared
        .store
        .put_account_with_changes(
            &account,
            &[status_change(&account, AccountStatus::Revoked)],
            now_ms(),
        )
        .map_err(store_err)?;
    shared.log_appended();
    shared.store.flush().await.map_err(store_err)?;
    // Then the key, durably, before any row goes.
    shared.destroy_data_key(account_id).await?;
    shared.account_mirror_changed(account_id);
    purge_revoked_rows(shared, account_id)?;
    shared
        .store
        .remove_identity(&account.identity_hash)
        .map_err(store_err)?;
    shared.store.flush().await.map_err(store_err)?;
    Ok(shared.account_pb(&account))
}

/// Purges the rows of a revoked account (see
/// [`crate::store::Store::purge_accounts_rows`]) and drops what the caches
/// kept of it. Returns how many rows went.
pub fn purge_revoked_rows(shared: &Shared, account_id: &str) -> Result<usize, ErrorKind> {
    let n = shared
        .store
        .purge_account_rows(account_id)
        .map_err(store_err)?;
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
    for t in shared.store.tenants().map_err(store_err)? {
        for a in shared
            .store
            .tenant_accounts(&t.tenant_id, None, usize::MAX)
            .map_err(store_err)?
        {
            if a.status == AccountStatus::Revoked as i32 {
                revoked.insert(a.account_id);
            }
        }
    }
    shared
        .store
        .purge_accounts_rows(&revoked)
        .map_err(store_err)
}

/// FAILED_PRECONDITION naming `field` when the account is revoked. A
/// revoked account has no calendars left, so answering for it would report
/// it free all the time: free/busy, availability and holds refuse it.
pub fn check_not_revoked(account: &AccountRecord, field: &str) -> Result<(), ErrorKind> {
    if account.status == AccountStatus::Revoked as i32 {
        return Err(ErrorKind::FailedPrecondition(format!(
            "{field}: account {:?} is revoked; leave it out",
            account.account_id
        )));
    }
    Ok(())
}

/// True when the account may be written to.
pub fn check_writable(account: &AccountRecord) -> Result<(), ErrorKind> {
    match AccountStatus::try_from(account.status) {
        Ok(AccountStatus::Active) => {}
        Ok(AccountStatus::ReauthRequired) => {
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
    if account.access_level != AccessLevel::ReadWrite as i32 {
        return Err(ErrorKind::PermissionDenied(
            "the account was connected without write access (access level READ_WRITE is needed)"
                .into(),
        ));
    }
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
        let caldav = pb::Provider::Caldav as i32;
        // As stores before exact identities hashed it: lower-cased.
        let old = hash_hex(&["t", &caldav.to_string(), &principal.to_ascii_lowercase()]);
        let key = s.vault.create("acc").unwrap();
        let account = AccountRecord {
            provider: caldav,
            sealed_identity: key.seal(identity_aad("acc").as_bytes(), principal.as_bytes()),
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
                status: AccountStatus::Revoked as i32,
                ..gone
            })
            .unwrap();

        assert_eq!(migrate_identity_hashes(&s).unwrap(), 1);
        let exact = identity_hash("t", caldav, principal);
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
            identity_hash("t", caldav, &principal.to_ascii_lowercase()),
            exact
        );
        // Once per store.
        assert_eq!(migrate_identity_hashes(&s).unwrap(), 0);
    }
}
