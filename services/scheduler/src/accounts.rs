//! Account life cycle: connecting with a password (checked at the provider
//! before anything is stored), refreshing the calendar list, push channels,
//! re-authorisation, and revocation (which destroys the account's data key
//! and every mirrored byte).

use std::collections::{HashMap, HashSet};

use calbridge::pb::{self, AccessLevel, AccountStatus, ChangeKind};
use calbridge::ErrorKind;

use crate::adapters::adapter_error;
use crate::state::{calendar_aad, hash_hex, identity_aad, now_ms, random_hex, store_err, Shared};
use crate::store::{AccountRecord, CalendarRecord, ChangeDraft, ChannelRecord};

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

    let identity_hash = hash_hex(&[
        tenant,
        &c.provider.to_string(),
        &credentials.provider_account_id.to_ascii_lowercase(),
    ]);
    let existing = match shared
        .store
        .account_by_identity(&identity_hash)
        .map_err(store_err)?
    {
        Some(id) => shared.store.account(&id).map_err(store_err)?,
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
    if !matches!(&existing, Some(a) if !a.wrapped_key.is_empty()) {
        check_account_quota(shared, tenant)?;
    }
    let was_reauth = existing
        .as_ref()
        .is_some_and(|a| a.status == AccountStatus::ReauthRequired as i32);
    let (mut account, key) = match existing {
        Some(a) if !a.wrapped_key.is_empty() => {
            let key = shared.live_key(&a)?;
            (a, key)
        }
        _ => {
            let account_id = format!("acc_{}", random_hex(12));
            let (key, wrapped) = shared.master.new_data_key(&account_id);
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
                    wrapped_key: wrapped,
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
            tracing::warn!(calendar_id = %c.calendar_id, error = %e, "push channel not started; polling only");
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

fn record_status_change(
    shared: &Shared,
    account: &AccountRecord,
    status: AccountStatus,
) -> Result<(), ErrorKind> {
    shared
        .store
        .append_changes(
            &account.tenant_id,
            &[ChangeDraft {
                kind: ChangeKind::AccountStatus as i32,
                account_id: account.account_id.clone(),
                calendar_id: String::new(),
                provider_event_id: String::new(),
                account_status: status as i32,
                sealed_event: Vec::new(),
            }],
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
    shared.store.put_account(&account).map_err(store_err)?;
    shared
        .store
        .set_account_paused(account_id, true, now_ms())
        .map_err(store_err)?;
    record_status_change(shared, &account, AccountStatus::ReauthRequired)?;
    shared.store.flush().await.map_err(store_err)?;
    tracing::warn!(account_id, "account needs re-authorisation");
    Ok(())
}

/// Revokes an account: at the provider where possible, stops channels,
/// destroys the data key, deletes every row and records the change.
pub async fn revoke(
    shared: &Shared,
    tenant: &str,
    account_id: &str,
) -> Result<pb::Account, ErrorKind> {
    let mut account = shared.tenant_account(tenant, account_id)?;
    if account.status == AccountStatus::Revoked as i32 {
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
    account.wrapped_key.clear();
    account.sealed_credentials.clear();
    account.sealed_identity.clear();
    shared.store.put_account(&account).map_err(store_err)?;
    shared.forget_data_key(account_id);
    shared.store.flush().await.map_err(store_err)?;
    shared
        .store
        .purge_account_rows(account_id)
        .map_err(store_err)?;
    shared.account_mirror_changed(account_id);
    shared
        .store
        .remove_identity(&account.identity_hash)
        .map_err(store_err)?;
    record_status_change(shared, &account, AccountStatus::Revoked)?;
    shared.store.flush().await.map_err(store_err)?;
    Ok(shared.account_pb(&account))
}

/// Finishes revocations a crash interrupted: rows of revoked accounts.
pub fn sweep_revoked(shared: &Shared) -> Result<(), ErrorKind> {
    for t in shared.store.tenants().map_err(store_err)? {
        for a in shared
            .store
            .tenant_accounts(&t.tenant_id, None, usize::MAX)
            .map_err(store_err)?
        {
            if a.status == AccountStatus::Revoked as i32
                && !shared
                    .store
                    .calendars(&a.account_id)
                    .map_err(store_err)?
                    .is_empty()
            {
                shared
                    .store
                    .purge_account_rows(&a.account_id)
                    .map_err(store_err)?;
            }
        }
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
