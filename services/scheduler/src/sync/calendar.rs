//! The sync of one calendar: checks that it may be synced (or sets it
//! aside, see [`Skipped`]), reads the provider's pages on one stream, has
//! [`super::diff`] work out each page's writes and stores them with the
//! cursor and the change-log entries in one transaction; failures back off.

use calbridge::pb::{self, AccessLevel, AccountStatus};
use calbridge::ErrorKind;

use super::{backoff, diff};
use crate::adapters::adapter_error;
use crate::clock::now_ms;
use crate::ids::{AccountId, CalendarId};
use crate::state::Shared;
use crate::store::{PageCommit, StoreError, SyncRecord};

/// How long a calendar whose interrupted writes are still being completed
/// waits before the loop looks at it again, ms (the replay also makes it
/// due as soon as it is done).
pub(super) const IN_DOUBT_RETRY_MS: i64 = 5_000;

/// Why a due calendar was not synced. Each case changes the calendar's
/// sync state (see [`set_aside`]) so that the loop, which starts every due
/// calendar, does not start it again at once: a state left due would be
/// picked at every scan, a core kept busy forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Skipped {
    /// The account is revoked (or gone): its rows are purged, its sync
    /// states with them.
    AccountRevoked,
    /// The account needs re-authorisation: the calendar is paused until it
    /// is connected again.
    AccountInactive,
    /// The calendar is no longer stored: its sync state goes.
    CalendarGone,
    /// The calendar is not synced: its state is marked disabled.
    NotSynced,
    /// Writes a crash interrupted are being completed on the calendar: its
    /// sync waits until they are, so that the platform's own write is not
    /// read back as an outside change.
    WritesInDoubt,
}

/// Syncs one calendar to the provider's present state, recording failures
/// and the next due time in its sync state.
pub async fn sync_calendar(
    shared: &Shared,
    account_id: &AccountId,
    calendar_id: &CalendarId,
) -> Result<(), ErrorKind> {
    tracing::debug!("calendar sync started");
    let previous_success = shared
        .store
        .sync_state(account_id, calendar_id)
        .ok()
        .flatten()
        .and_then(|st| st.last_success_ms);
    let mut provider = None;
    let result = match sync_pages(shared, account_id, calendar_id, &mut provider).await {
        Ok(None) => Ok(()),
        Ok(Some(skipped)) => return set_aside(shared, account_id, calendar_id, skipped),
        Err(e) => Err(e),
    };
    if let Some(p) = provider {
        match &result {
            Ok(()) => crate::metrics::sync_succeeded(p, previous_success),
            Err(e) => crate::metrics::sync_failed(p, e),
        }
    }
    if let Err(e) = &result {
        if let ErrorKind::Unauthenticated(_) = e {
            crate::accounts::mark_reauth_required(
                shared,
                account_id,
                "the provider rejected the stored credentials",
            )
            .await?;
            return result;
        }
        // A state removed meanwhile (the account revoked, the calendar
        // gone) is not written again.
        let Some(mut st) = shared.store.sync_state(account_id, calendar_id)? else {
            return result;
        };
        st.failures += 1;
        st.last_error = e.to_string();
        let retry_after = match e {
            ErrorKind::Unavailable { retry_after, .. }
            | ErrorKind::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        };
        let delay = backoff(
            shared.config.sync.backoff_base_ms,
            shared.config.sync.backoff_max_seconds,
            st.failures,
            retry_after,
        );
        st.next_due_ms = now_ms() + delay.as_millis() as i64;
        match shared.store.put_sync_state(account_id, calendar_id, &st) {
            Err(StoreError::AccountRevoked) => {
                set_aside(shared, account_id, calendar_id, Skipped::AccountRevoked)?;
            }
            other => other?,
        }
    }
    result
}

/// Moves a calendar that was not synced out of the loop's way (see
/// [`Skipped`]).
fn set_aside(
    shared: &Shared,
    account_id: &AccountId,
    calendar_id: &CalendarId,
    why: Skipped,
) -> Result<(), ErrorKind> {
    let update = |change: &dyn Fn(&mut SyncRecord)| -> Result<(), ErrorKind> {
        let Some(mut st) = shared.store.sync_state(account_id, calendar_id)? else {
            return Ok(());
        };
        change(&mut st);
        match shared.store.put_sync_state(account_id, calendar_id, &st) {
            Err(StoreError::AccountRevoked) => {
                crate::accounts::purge_revoked_rows(shared, account_id).map(|_| ())
            }
            other => other.map_err(ErrorKind::from),
        }
    };
    match why {
        Skipped::AccountRevoked => {
            let rows = crate::accounts::purge_revoked_rows(shared, account_id)?;
            tracing::info!(
                rows,
                "sync stopped: the account is revoked; its rows are purged"
            );
            Ok(())
        }
        Skipped::AccountInactive => update(&|st| st.paused = true),
        Skipped::CalendarGone => shared
            .store
            .remove_sync_state(account_id, calendar_id)
            .map_err(ErrorKind::from),
        Skipped::NotSynced => update(&|st| st.disabled = true),
        Skipped::WritesInDoubt => {
            tracing::info!("sync deferred until the writes a restart interrupted are completed");
            update(&|st| st.next_due_ms = now_ms() + IN_DOUBT_RETRY_MS)
        }
    }
}

/// Syncs the calendar page by page; `Some` when it was not synced, and why.
async fn sync_pages(
    shared: &Shared,
    account_id: &AccountId,
    calendar_id: &CalendarId,
    provider: &mut Option<calbridge::pb::Provider>,
) -> Result<Option<Skipped>, ErrorKind> {
    let Some(account) = shared.store.account(account_id)? else {
        return Ok(Some(Skipped::AccountRevoked));
    };
    *provider = Some(account.provider);
    if account.status == AccountStatus::Revoked {
        return Ok(Some(Skipped::AccountRevoked));
    }
    if account.status != AccountStatus::Active {
        return Ok(Some(Skipped::AccountInactive));
    }
    let Some(calendar) = shared.store.calendar(account_id, calendar_id)? else {
        return Ok(Some(Skipped::CalendarGone));
    };
    if !calendar.synced {
        return Ok(Some(Skipped::NotSynced));
    }
    if shared.writes_in_doubt(account_id, calendar_id) {
        return Ok(Some(Skipped::WritesInDoubt));
    }
    let key = shared.live_key(&account)?;
    let credentials = crate::accounts::usable_credentials(shared, &account).await?;
    let zone = calendar.time_zone.parse::<chrono_tz::Tz>().ok();
    let caps = shared.adapters.capabilities(account.provider).await?;
    let poll_s = match shared.config.sync.poll_interval_seconds {
        0 => u64::from(caps.poll_interval_seconds.max(1)),
        n => n,
    };
    let busy_only = account.access_level == AccessLevel::FreeBusy;
    let now = chrono::Utc::now();
    let (window_start, window_end) = (
        now - chrono::Duration::days(i64::from(shared.config.sync.window_past_days)),
        now + chrono::Duration::days(i64::from(shared.config.sync.window_future_days)),
    );
    let window = pb::TimeWindow {
        start: Some(calbridge::time::to_timestamp(window_start)),
        end: Some(calbridge::time::to_timestamp(window_end)),
    };
    let mut client = shared.adapters.client(account.provider)?;

    let lock = shared.calendar_lock(account_id, calendar_id);
    let _guard = lock.write().await;
    let mut st = shared
        .store
        .sync_state(account_id, calendar_id)?
        .unwrap_or_default();
    // A listing interrupted midway (outage, crash) starts over: the pages
    // read before the interruption are not in `seen`, and the end of the
    // listing would take their events for deleted.
    let mut cursor = if st.listing_in_progress {
        tracing::info!("an interrupted full listing starts over");
        String::new()
    } else {
        st.cursor.clone()
    };
    if !cursor.is_empty() && caps.incremental_sync && !(busy_only && caps.native_free_busy) {
        let period_ms = relist_period_ms(
            shared.config.sync.full_relist_seconds,
            account_id,
            calendar_id,
        );
        match (period_ms, st.last_full_listing_ms) {
            // A calendar listed before drift repair existed starts its
            // period now rather than all of them re-listing at once.
            (Some(_), None) => st.last_full_listing_ms = Some(now_ms()),
            (Some(period), Some(last)) if now_ms() - last >= period => {
                tracing::info!("re-listing the calendar in full to repair drift");
                cursor.clear();
                st.drift_check = true;
            }
            _ => {}
        }
    }
    let mut listing = diff::Listing::default();
    let mut restarted = false;
    // FREE_BUSY accounts on providers that answer free/busy natively are
    // synced from free/busy alone: no event is ever fetched.
    let native_busy = busy_only && caps.native_free_busy;
    // Pages arrive on one stream (StreamSyncEvents), so the adapter computes
    // the next page while this one is stored.
    let mut stream = None;
    loop {
        let request = pb::SyncEventsRequest {
            credentials: Some(credentials.clone()),
            calendar_id: calendar_id.to_string(),
            cursor: cursor.clone(),
            window: Some(window),
            page_size: shared.config.sync.page_size.min(caps.max_page_size.max(1)),
            busy_only,
        };
        let result = if native_busy {
            free_busy_page(&mut client, request).await
        } else {
            next_page(&mut client, &mut stream, request).await
        };
        let mut page = match result {
            Ok(p) => p,
            Err(status) => match adapter_error(&status) {
                ErrorKind::OutOfRange(_) if !restarted => {
                    tracing::info!("provider cursor expired; resyncing from scratch");
                    restarted = true;
                    cursor.clear();
                    listing = diff::Listing::default();
                    continue;
                }
                e => return Err(e),
            },
        };

        let writes = diff::page(
            &diff::Calendar {
                account_id,
                calendar_id,
                key: &key,
                zone,
                busy_only,
                native_busy,
                poll_s,
                window_ms: Some((
                    window_start.timestamp_millis(),
                    window_end.timestamp_millis(),
                )),
            },
            &diff::StoredMirror {
                store: &shared.store,
                account_id,
                calendar_id,
            },
            &mut listing,
            &mut st,
            &mut page,
            now_ms(),
        )?;
        let (puts, removes, changes) = (writes.puts, writes.removes, writes.changes);
        // Refused when the account was revoked since the page was read:
        // nothing of it lands after the revocation.
        match shared.store.apply_sync_page(&PageCommit {
            tenant: &account.tenant_id,
            account: account_id,
            calendar: calendar_id,
            puts: &puts,
            removes: &removes,
            state: &st,
            changes: &changes,
            now_ms: now_ms(),
        }) {
            Err(StoreError::AccountRevoked) => return Ok(Some(Skipped::AccountRevoked)),
            other => other?,
        }
        if !puts.is_empty() || !removes.is_empty() {
            shared.mirror_changed(account_id, calendar_id);
        }
        if !changes.is_empty() {
            shared.log_appended();
        }
        if !page.more {
            return Ok(None);
        }
        cursor = page.next_cursor;
    }
}

/// The next page of `stream`; when none is open (the first page, after an
/// error, or when the adapter ended its stream after a page with `more`),
/// opens one from `request`, whose cursor is the last page's `next_cursor`.
async fn next_page(
    client: &mut crate::adapters::AdapterClient,
    stream: &mut Option<tonic::Streaming<pb::SyncEventsResponse>>,
    request: pb::SyncEventsRequest,
) -> Result<pb::SyncEventsResponse, tonic::Status> {
    if let Some(open) = stream.as_mut() {
        match open.message().await {
            Ok(Some(page)) => return Ok(page),
            Ok(None) => *stream = None,
            Err(e) => {
                *stream = None;
                return Err(e);
            }
        }
    }
    let mut open = client.stream_sync_events(request).await?.into_inner();
    match open.message().await? {
        Some(page) => {
            *stream = Some(open);
            Ok(page)
        }
        None => Err(tonic::Status::internal(
            "the adapter ended a page stream without a page",
        )),
    }
}

/// The calendar's own drift-repair period, ms: `full_relist_seconds`
/// stretched to 90–110 % by a hash of the calendar, so that calendars
/// connected together are not all re-listed together. `None` when off.
pub(super) fn relist_period_ms(
    full_relist_seconds: u64,
    account_id: &AccountId,
    calendar_id: &CalendarId,
) -> Option<i64> {
    if full_relist_seconds == 0 {
        return None;
    }
    let h = crate::crypto::hash_hex(&[account_id, calendar_id]);
    let spread = u64::from_str_radix(&h[..8], 16).unwrap_or(0) % 201;
    let ms = full_relist_seconds
        .saturating_mul(1000)
        .saturating_mul(900 + spread)
        / 1000;
    Some(i64::try_from(ms).unwrap_or(i64::MAX))
}

/// A FREE_BUSY calendar's "page": the provider's busy intervals over the
/// window as content-free events, listed in full so the mirror is diffed
/// against them. An interval's id is derived from its times and status, so a
/// moved meeting is one interval gone and one new.
async fn free_busy_page(
    client: &mut crate::adapters::AdapterClient,
    request: pb::SyncEventsRequest,
) -> Result<pb::SyncEventsResponse, tonic::Status> {
    let bounds = request.window.as_ref().and_then(|w| {
        Some((
            calbridge::time::from_timestamp(w.start.as_ref()?)?,
            calbridge::time::from_timestamp(w.end.as_ref()?)?,
        ))
    });
    let busy = client
        .query_free_busy(pb::ProviderFreeBusyRequest {
            credentials: request.credentials,
            calendar_ids: vec![request.calendar_id],
            window: request.window,
        })
        .await?
        .into_inner()
        .busy;
    let upserted = busy
        .into_iter()
        .filter_map(|b| {
            let (start, end) = (
                calbridge::time::from_timestamp(b.start.as_ref()?)?,
                calbridge::time::from_timestamp(b.end.as_ref()?)?,
            );
            // Intervals clipped by the sliding window's edges would get a
            // new id at every poll; the edges are a month back and a year
            // ahead, where nobody looks for a meeting.
            if bounds.is_some_and(|(ws, we)| start <= ws || end >= we) {
                return None;
            }
            let mut e = pb::Event {
                provider_event_id: format!(
                    "busy:{}:{}:{}",
                    start.timestamp_millis(),
                    end.timestamp_millis(),
                    b.status
                ),
                version: "1".into(),
                start: Some(calbridge::time::instant(start, "")),
                end: Some(calbridge::time::instant(end, "")),
                ..Default::default()
            };
            match pb::BusyStatus::try_from(b.status) {
                Ok(pb::BusyStatus::Tentative) => e.status = pb::EventStatus::Tentative as i32,
                Ok(pb::BusyStatus::OutOfOffice) => e.event_type = pb::EventType::OutOfOffice as i32,
                _ => {}
            }
            Some(e)
        })
        .collect();
    Ok(pb::SyncEventsResponse {
        upserted,
        full_listing: true,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_calendar_has_its_own_relist_period_within_ten_percent() {
        assert_eq!(relist_period_ms(0, &"a".into(), &"c".into()), None);
        let periods: Vec<i64> = (0..50)
            .map(|i| relist_period_ms(86_400, &"acc".into(), &format!("cal{i}").into()).unwrap())
            .collect();
        assert!(periods
            .iter()
            .all(|p| (77_760_000..=95_040_000).contains(p)));
        let distinct: std::collections::HashSet<_> = periods.iter().collect();
        assert!(distinct.len() > 25, "{periods:?}");
        // Stable: the same calendar always gets the same period.
        assert_eq!(
            relist_period_ms(86_400, &"acc".into(), &"cal1".into()),
            Some(periods[1])
        );
    }
}
