//! Credentials ready for an adapter call: every adapter call gets them
//! through [`usable_credentials`], which refreshes an OAuth access token
//! that expires within the configured margin, one refresh per account at a
//! time, and stores the new tokens (with a rotated refresh token, when the
//! provider sent one) in one write. A refresh the provider refuses
//! (`invalid_grant`) marks the account REAUTH_REQUIRED.

use calbridge::pb;
use calbridge::ErrorKind;

use crate::adapters::adapter_error;
use crate::clock::now_ms;
use crate::ids::CalendarId;
use crate::sealing::seal_credentials;
use crate::state::Shared;
use crate::store::AccountRecord;

/// When the OAuth access token of `c` expires, ms (`None`: not OAuth, or no
/// expiry given).
fn access_expiry_ms(c: &pb::ProviderCredentials) -> Option<i64> {
    match &c.secret {
        Some(pb::provider_credentials::Secret::Oauth(t)) => t
            .expires_at
            .as_ref()
            .and_then(calbridge::time::from_timestamp)
            .map(|t| t.timestamp_millis()),
        _ => None,
    }
}

/// The account's credentials, ready to hand to its adapter: an OAuth access
/// token that expires within the refresh margin is refreshed first (see the
/// module comment). UNAUTHENTICATED when the provider refused the refresh;
/// the account is then REAUTH_REQUIRED.
pub async fn usable_credentials(
    shared: &Shared,
    account: &AccountRecord,
) -> Result<pb::ProviderCredentials, ErrorKind> {
    let credentials = super::credentials(shared, account)?;
    if !needs_refresh(shared, &credentials) {
        return Ok(credentials);
    }
    // One refresh per account at a time. The per-client-id lock map serves:
    // an empty calendar id never names a real client event's lock.
    let lock = shared.client_lock(&account.account_id, &CalendarId::from(""), "");
    let _guard = lock.lock().await;
    // Another task may have refreshed while this one waited.
    let account = shared
        .store
        .account(&account.account_id)?
        .ok_or_else(|| ErrorKind::NotFound("the account is gone".into()))?;
    let credentials = super::credentials(shared, &account)?;
    if !needs_refresh(shared, &credentials) {
        return Ok(credentials);
    }
    refresh(shared, account, credentials).await
}

fn needs_refresh(shared: &Shared, c: &pb::ProviderCredentials) -> bool {
    let margin = i64::try_from(shared.config.oauth.refresh_margin_seconds).unwrap_or(300) * 1000;
    access_expiry_ms(c).is_some_and(|exp| exp - now_ms() <= margin)
}

async fn refresh(
    shared: &Shared,
    mut account: AccountRecord,
    old: pb::ProviderCredentials,
) -> Result<pb::ProviderCredentials, ErrorKind> {
    let result = shared
        .adapters
        .client(account.provider)?
        .refresh_credentials(pb::RefreshCredentialsRequest {
            credentials: Some(old.clone()),
        })
        .await;
    let mut fresh = match result {
        Ok(r) => r.into_inner(),
        Err(s) => {
            let e = adapter_error(&s);
            if let ErrorKind::Unauthenticated(_) = e {
                super::mark_reauth_required(
                    shared,
                    &account.account_id,
                    "the provider refused to refresh the access token (access revoked or expired)",
                )
                .await?;
                shared.sync_wake.notify_one();
                return Err(ErrorKind::Unauthenticated(
                    "the provider refused to refresh the account's access: it needs re-authorisation"
                        .into(),
                ));
            }
            return Err(e);
        }
    };
    // Providers that do not rotate refresh tokens send none back: keep the
    // stored one. Identity and access level are the account's.
    if let (
        Some(pb::provider_credentials::Secret::Oauth(new)),
        Some(pb::provider_credentials::Secret::Oauth(prev)),
    ) = (&mut fresh.secret, &old.secret)
    {
        if new.refresh_token.is_empty() {
            new.refresh_token = prev.refresh_token.clone();
        }
        if new.scopes.is_empty() {
            new.scopes = prev.scopes.clone();
        }
    }
    fresh.provider_account_id = old.provider_account_id.clone();
    fresh.access_level = old.access_level;
    let key = shared.live_key(&account)?;
    account.sealed_credentials = seal_credentials(&key, &account.account_id, &fresh);
    shared.store.put_account(&account)?;
    shared.store.flush().await?;
    tracing::info!(account_id = %account.account_id, "access token refreshed");
    Ok(fresh)
}
