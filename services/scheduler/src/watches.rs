//! Push watches: channels at the provider that tell the scheduler a
//! calendar changed, started for an account's synced calendars when its
//! adapter supports push, stopped with the calendar's sync or the account,
//! and renewed before they expire. Polling remains the safety net.

use calbridge::pb;
use calbridge::ErrorKind;

use crate::accounts::usable_credentials;
use crate::adapters::adapter_error;
use crate::clock::now_ms;
use crate::crypto::{constant_time_eq, hash_hex, random_hex};
use crate::ids::CalendarId;
use crate::state::Shared;
use crate::store::{AccountRecord, ChannelRecord};

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
        usable_credentials(shared, account).await,
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
    calendar_id: &CalendarId,
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
    shared.store.put_channel(&ChannelRecord {
        channel_id,
        account_id: account.account_id.clone(),
        calendar_id: calendar_id.into(),
        token_hash: hash_hex(&[&token]),
        resource_id: ch.resource_id,
        expires_ms,
    })?;
    // A notification the provider sent before the channel was stored here
    // was answered NOT_FOUND and is lost; one sync now covers that gap
    // (Graph sends no first message of its own, as Google's "sync" is).
    shared.sync_soon(&account.account_id, calendar_id);
    Ok(())
}

/// Stops an account's push channels (all, or one calendar's).
pub async fn stop_watches(shared: &Shared, account: &AccountRecord, calendar: Option<&str>) {
    let Ok(channels) = shared.store.channels() else {
        return;
    };
    let credentials = usable_credentials(shared, account).await.ok();
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
        renew_channel(shared, &ch).await;
    }
}

/// Replaces one channel: a new one is started, then the old one stopped
/// (one already gone at the provider is fine) and forgotten. The old one
/// stays when the new one cannot be started, so a later round tries
/// again.
pub async fn renew_channel(shared: &Shared, ch: &ChannelRecord) {
    let Ok(Some(account)) = shared.store.account(&ch.account_id) else {
        let _ = shared.store.remove_channel(&ch.channel_id);
        return;
    };
    let Ok(credentials) = usable_credentials(shared, &account).await else {
        return;
    };
    let started = start_watch(shared, &account, &credentials, &ch.calendar_id)
        .await
        .is_ok();
    crate::metrics::channel_renewed(account.provider, if started { "renewed" } else { "failed" });
    if started {
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

/// Provider states that say a channel itself must be replaced: Graph's
/// lifecycle events for a subscription that needs reauthorization or was
/// removed.
const REPLACE_STATES: [&str; 2] = ["reauthorizationRequired", "subscriptionRemoved"];

/// A provider's notification that a watched calendar changed, as the
/// adapter relays it: the calendar becomes due now, and when the state
/// says the channel itself must be replaced, the channel to replace comes
/// back. An unknown channel or a wrong channel token is NOT_FOUND alike.
pub fn notified(
    shared: &Shared,
    channel_id: &str,
    channel_token: &str,
    resource_state: &str,
) -> Result<Option<ChannelRecord>, ErrorKind> {
    let unknown = || ErrorKind::NotFound("unknown push channel".into());
    let ch = shared.store.channel(channel_id)?.ok_or_else(unknown)?;
    if !constant_time_eq(
        hash_hex(&[channel_token]).as_bytes(),
        ch.token_hash.as_bytes(),
    ) {
        tracing::warn!("push notification with a wrong channel token ignored");
        return Err(unknown());
    }
    shared.sync_soon(&ch.account_id, &ch.calendar_id);
    Ok(REPLACE_STATES.contains(&resource_state).then_some(ch))
}
