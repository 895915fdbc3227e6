//! An account's calendars as the platform sees them: the list, turning a
//! calendar's sync on or off, reading mirrored events, each calendar's sync
//! status, and asking for a sync now. Reads answer from the mirror alone.

use calbridge::pb::{self, AccountStatus, SyncState};
use calbridge::ErrorKind;

use crate::accounts::{calendar_pb, tenant_account};
use crate::clock::{now_ms, ts_ms as ts};
use crate::ids::{AccountId, CalendarId, TenantId};
use crate::sealing::{event_aad, open_event};
use crate::state::Shared;

/// The account's calendars, primary first.
pub fn list(
    shared: &Shared,
    tenant: &TenantId,
    account_id: &AccountId,
) -> Result<Vec<pb::Calendar>, ErrorKind> {
    let a = tenant_account(shared, tenant, account_id)?;
    let key = shared.data_key(&a)?;
    let mut calendars: Vec<pb::Calendar> = shared
        .store
        .calendars(&a.account_id)?
        .iter()
        .map(|c| calendar_pb(key.as_ref(), &a.account_id, c))
        .collect();
    calendars.sort_by_key(|c| !c.primary);
    Ok(calendars)
}

/// Turns a calendar's sync on (push channel, first sync now) or off (push
/// channel stopped, mirror cleared).
pub async fn set_sync(
    shared: &Shared,
    tenant: &TenantId,
    account_id: &AccountId,
    calendar_id: &CalendarId,
    synced: bool,
) -> Result<pb::Calendar, ErrorKind> {
    let a = tenant_account(shared, tenant, account_id)?;
    let mut c = shared
        .store
        .calendar(&a.account_id, calendar_id)?
        .ok_or_else(|| ErrorKind::NotFound(format!("calendar {calendar_id:?} not found")))?;
    if c.synced != synced {
        c.synced = synced;
        shared.store.put_calendar(&a.account_id, &c)?;
        let mut st = shared
            .store
            .sync_state(&a.account_id, &c.calendar_id)?
            .unwrap_or_default();
        st.disabled = !synced;
        st.next_due_ms = now_ms();
        if !synced {
            crate::watches::stop_watches(shared, &a, Some(&c.calendar_id)).await;
            shared
                .store
                .clear_calendar_mirror(&a.account_id, &c.calendar_id)?;
            shared.mirror_changed(&a.account_id, &c.calendar_id);
            st.cursor.clear();
            st.last_success_ms = None;
        }
        shared
            .store
            .put_sync_state(&a.account_id, &c.calendar_id, &st)?;
        shared.store.flush().await?;
        if synced {
            crate::watches::start_watches(shared, &a).await;
            shared.sync_soon(&a.account_id, &c.calendar_id);
        }
    }
    let key = shared.data_key(&a)?;
    Ok(calendar_pb(key.as_ref(), &a.account_id, &c))
}

/// One page of mirrored events.
pub struct EventPage {
    /// The events, by start.
    pub events: Vec<pb::Event>,
    /// Where the next page starts (start ms, provider event id), when there
    /// is one.
    pub next: Option<(i64, String)>,
    /// When the calendar was last synced, ms.
    pub as_of_ms: Option<i64>,
}

/// Mirrored events overlapping [start_ms, end_ms), `n` at most, after the
/// position `after` (start ms, provider event id) of an earlier page.
pub fn list_events(
    shared: &Shared,
    tenant: &TenantId,
    account_id: &AccountId,
    calendar_id: &CalendarId,
    (start_ms, end_ms): (i64, i64),
    after: Option<(i64, &str)>,
    n: usize,
) -> Result<EventPage, ErrorKind> {
    let a = tenant_account(shared, tenant, account_id)?;
    shared
        .store
        .calendar(&a.account_id, calendar_id)?
        .ok_or_else(|| ErrorKind::NotFound(format!("calendar {calendar_id:?} not found")))?;
    let key = shared.live_key(&a)?;
    let rows = shared.store.events_overlapping(
        &a.account_id,
        calendar_id,
        start_ms,
        end_ms,
        after,
        n + 1,
    )?;
    let more = rows.len() > n;
    let mut events = Vec::new();
    let mut last = None;
    for (s, pid, _) in rows.into_iter().take(n) {
        if let Some(rec) = shared.store.event(&a.account_id, calendar_id, &pid)? {
            events.push(open_event(
                &key,
                &event_aad(&a.account_id, calendar_id, &pid),
                &rec.sealed,
            )?);
        }
        last = Some((s, pid));
    }
    let as_of_ms = shared
        .store
        .sync_state(&a.account_id, calendar_id)?
        .and_then(|s| s.last_success_ms);
    Ok(EventPage {
        events,
        next: if more { last } else { None },
        as_of_ms,
    })
}

/// One mirrored event, by the caller's id or the provider's (one of the two
/// is empty).
pub fn get_event(
    shared: &Shared,
    tenant: &TenantId,
    account_id: &AccountId,
    calendar_id: &CalendarId,
    client_event_id: &str,
    provider_event_id: &str,
) -> Result<pb::Event, ErrorKind> {
    let a = tenant_account(shared, tenant, account_id)?;
    let key = shared.live_key(&a)?;
    let pid = if client_event_id.is_empty() {
        Some(provider_event_id.to_string())
    } else {
        shared
            .store
            .provider_id_for_client(&a.account_id, calendar_id, client_event_id)?
    };
    let not_found = || ErrorKind::NotFound("event not found in the mirror".into());
    let pid = pid.ok_or_else(not_found)?;
    let rec = shared
        .store
        .event(&a.account_id, calendar_id, &pid)?
        .ok_or_else(not_found)?;
    open_event(
        &key,
        &event_aad(&a.account_id, calendar_id, &pid),
        &rec.sealed,
    )
}

/// The sync status of each of the account's calendars.
pub fn sync_status(
    shared: &Shared,
    tenant: &TenantId,
    account_id: &AccountId,
) -> Result<Vec<pb::CalendarSyncStatus>, ErrorKind> {
    let a = tenant_account(shared, tenant, account_id)?;
    let mut out = Vec::new();
    for c in shared.store.calendars(&a.account_id)? {
        let st = shared
            .store
            .sync_state(&a.account_id, &c.calendar_id)?
            .unwrap_or_default();
        let state = if !c.synced || st.disabled {
            SyncState::Disabled
        } else if st.paused || a.status != AccountStatus::Active {
            SyncState::Paused
        } else if st.failures > 0 {
            SyncState::Backoff
        } else if st.last_success_ms.is_none() {
            SyncState::Initial
        } else {
            SyncState::Idle
        };
        out.push(pb::CalendarSyncStatus {
            calendar_id: c.calendar_id.to_string(),
            state: state as i32,
            last_success: st.last_success_ms.and_then(ts),
            next_due: ts(st.next_due_ms),
            last_error: st.last_error.clone(),
            failures: st.failures,
            events: shared.store.event_count(&a.account_id, &c.calendar_id),
            skipped_items: st
                .skipped
                .iter()
                .map(|(id, reason)| pb::SkippedItem {
                    item_id: id.clone(),
                    reason: reason.clone(),
                })
                .collect(),
            last_full_listing: st.last_full_listing_ms.and_then(ts),
            drift_repaired: st.drift_repaired,
        });
    }
    Ok(out)
}

/// Makes the account's synced calendars (all, or the one named) due now;
/// with none named, the calendar list is refreshed first. Returns the
/// calendars made due.
pub async fn sync_now(
    shared: &Shared,
    tenant: &TenantId,
    account_id: &AccountId,
    calendar_id: &CalendarId,
) -> Result<Vec<CalendarId>, ErrorKind> {
    let a = tenant_account(shared, tenant, account_id)?;
    if a.status != AccountStatus::Active {
        return Err(ErrorKind::FailedPrecondition(
            "the account is not active: it needs re-authorisation or was revoked".into(),
        ));
    }
    if calendar_id.is_empty() {
        if let Err(e) = crate::connections::refresh_calendars(shared, &a).await {
            tracing::warn!(error = %e, "calendar list not refreshed");
        }
    }
    let mut ids = Vec::new();
    for c in shared.store.calendars(&a.account_id)? {
        if c.synced && (calendar_id.is_empty() || *calendar_id == c.calendar_id) {
            shared.sync_soon(&a.account_id, &c.calendar_id);
            ids.push(c.calendar_id);
        }
    }
    if ids.is_empty() && !calendar_id.is_empty() {
        return Err(ErrorKind::NotFound(format!(
            "synced calendar {calendar_id:?} not found"
        )));
    }
    Ok(ids)
}
