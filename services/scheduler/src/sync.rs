//! The sync loop: which calendar to sync when (poll due times, push and
//! `SyncNow` marks), within a global and a per-account concurrency limit, with
//! exponential backoff and jitter on failure; and the sync of one calendar,
//! which applies each provider page, its cursor and its change-log entries in
//! one transaction and suppresses echoes of the platform's own writes.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use calbridge::pb::{self, AccessLevel, AccountStatus, ChangeKind};
use calbridge::ErrorKind;
use rand::Rng;
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::adapters::adapter_error;
use crate::clock::now_ms;
use crate::crypto::hash_hex;
use crate::mirror::{put_for, same_content, strip_content};
use crate::permits::FairPermits;
use crate::sealing::{change_aad, event_aad, open_event, seal_event};
use crate::state::Shared;
use crate::store::{ChangeDraft, MirrorRemove, PageCommit, StoreError, SyncRecord};

/// The shortest wait between two timer-driven scans of the sync states, ms
/// (urgent marks still wake the loop at once).
const SCAN_FLOOR_MS: i64 = 100;

/// Runs the sync loop until `shutdown` turns true.
///
/// Fairness: a sync first takes its account's permit and only then one of
/// the global permits, which go round-robin to the tenants waiting (see
/// [`FairPermits`]); due calendars are started round-robin by tenant, then
/// by account. So an account whose calendars are slow holds at most
/// `per_account_concurrency` global permits, and a tenant with many due
/// calendars does not queue in front of another tenant's.
pub async fn run_loop(shared: Arc<Shared>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let running: Arc<Mutex<HashSet<(String, String)>>> = Arc::default();
    // When the loop plans to scan next, ms: a finished sync whose calendar
    // is due sooner wakes it.
    let planned_wake = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let global = FairPermits::new(shared.config.sync.max_concurrent_syncs);
    let mut per_account: HashMap<String, Arc<Semaphore>> = HashMap::new();
    // Accounts never change tenant: each is looked up once.
    let mut tenants: HashMap<String, String> = HashMap::new();
    loop {
        // While this scan runs, any finished sync wakes the next one (its
        // new due time is not in `next_wake`).
        planned_wake.store(i64::MAX, std::sync::atomic::Ordering::Relaxed);
        let now = now_ms();
        let mut next_wake = now + 30_000;
        let states = match shared.store.all_sync_states() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot read sync states");
                Vec::new()
            }
        };
        let urgent: HashSet<(String, String)> =
            std::mem::take(&mut *shared.urgent.lock().expect("lock poisoned"));
        let mut still_urgent = HashSet::new();
        let mut due = Vec::new();
        for (account, calendar, st) in states {
            if st.paused || st.disabled {
                continue;
            }
            let k = (account, calendar);
            let is_urgent = urgent.contains(&k);
            if running.lock().expect("lock poisoned").contains(&k) {
                if is_urgent {
                    still_urgent.insert(k);
                }
                continue;
            }
            if !is_urgent && st.next_due_ms > now {
                next_wake = next_wake.min(st.next_due_ms);
                continue;
            }
            due.push(k);
        }
        for (account, calendar) in round_robin(due, |account| {
            tenants
                .entry(account.to_string())
                .or_insert_with(|| {
                    shared
                        .store
                        .account(account)
                        .ok()
                        .flatten()
                        .map(|a| a.tenant_id)
                        .unwrap_or_default()
                })
                .clone()
        }) {
            let k = (account.clone(), calendar.clone());
            running.lock().expect("lock poisoned").insert(k);
            let account_sem = per_account
                .entry(account.clone())
                .or_insert_with(|| {
                    Arc::new(Semaphore::new(shared.config.sync.per_account_concurrency))
                })
                .clone();
            let tenant = tenants.get(&account).cloned().unwrap_or_default();
            let (shared, running, global, planned_wake) = (
                shared.clone(),
                running.clone(),
                global.clone(),
                planned_wake.clone(),
            );
            let span = tracing::info_span!("sync.calendar", account_id = %account, calendar_id = %calbridge::redact::id(&calendar));
            tokio::spawn(
                async move {
                    // The account's permit first: a global permit is only
                    // ever held by a sync that can run.
                    let _a = account_sem.acquire_owned().await;
                    let _g = global.acquire(&tenant).await;
                    if let Err(e) = sync_calendar(&shared, &account, &calendar).await {
                        tracing::warn!(error = %e, "sync failed");
                    }
                    running
                        .lock()
                        .expect("lock poisoned")
                        .remove(&(account.clone(), calendar.clone()));
                    // Wake the loop only when needed: urgent marks held back
                    // while this calendar ran, or this calendar falling due
                    // before the loop's planned scan. (A wake per finished
                    // sync would rescan every sync state each time: a core
                    // busy at thousands of calendars.)
                    let due_sooner = shared
                        .store
                        .sync_state(&account, &calendar)
                        .ok()
                        .flatten()
                        .is_some_and(|st| {
                            st.next_due_ms < planned_wake.load(std::sync::atomic::Ordering::Relaxed)
                        });
                    if due_sooner || !shared.urgent.lock().expect("lock poisoned").is_empty() {
                        shared.sync_wake.notify_one();
                    }
                }
                .instrument(span),
            );
        }
        if !still_urgent.is_empty() {
            shared
                .urgent
                .lock()
                .expect("lock poisoned")
                .extend(still_urgent);
        }
        // Polls falling due within a moment of each other are started by
        // one scan, not one scan each.
        let wait =
            Duration::from_millis((next_wake - now_ms()).clamp(SCAN_FLOOR_MS, 30_000) as u64);
        planned_wake.store(
            now_ms() + wait.as_millis() as i64,
            std::sync::atomic::Ordering::Relaxed,
        );
        tokio::select! {
            _ = shared.sync_wake.notified() => {},
            _ = tokio::time::sleep(wait) => {},
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

/// Orders due `(account, calendar)` pairs round-robin: one calendar of one
/// account of each tenant in turn (tenants by `tenant_of`, accounts within
/// a tenant in turn too), so that no tenant's or account's backlog comes
/// first as a block. Each account's calendars keep their order.
fn round_robin(
    due: Vec<(String, String)>,
    mut tenant_of: impl FnMut(&str) -> String,
) -> Vec<(String, String)> {
    // Each account's calendars, accounts in order of first appearance.
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut accounts: Vec<VecDeque<(String, String)>> = Vec::new();
    let n = due.len();
    for (account, calendar) in due {
        let i = *index.entry(account.clone()).or_insert_with(|| {
            accounts.push(VecDeque::new());
            accounts.len() - 1
        });
        accounts[i].push_back((account, calendar));
    }
    // tenant → its accounts' queues, taken in turn.
    let mut by_tenant: BTreeMap<String, VecDeque<VecDeque<(String, String)>>> = BTreeMap::new();
    for queue in accounts {
        let tenant = tenant_of(&queue[0].0);
        by_tenant.entry(tenant).or_default().push_back(queue);
    }
    let mut out = Vec::with_capacity(n);
    while !by_tenant.is_empty() {
        by_tenant.retain(|_, queues| {
            if let Some(mut queue) = queues.pop_front() {
                out.extend(queue.pop_front());
                if !queue.is_empty() {
                    queues.push_back(queue);
                }
            }
            !queues.is_empty()
        });
    }
    out
}

/// The delay before retry number `failures` (1-based): exponential with
/// jitter in [50%, 100%], at least the provider's `retry_after`.
pub fn backoff(base_ms: u64, max_s: u64, failures: u32, retry_after: Option<Duration>) -> Duration {
    let exp = base_ms.saturating_mul(1u64 << failures.saturating_sub(1).min(20));
    let capped = exp.min(max_s * 1000);
    let jittered = rand::thread_rng().gen_range(capped / 2..=capped.max(1));
    Duration::from_millis(jittered).max(retry_after.unwrap_or_default())
}

/// How long a calendar whose interrupted writes are still being completed
/// waits before the loop looks at it again, ms (the replay also makes it
/// due as soon as it is done).
const IN_DOUBT_RETRY_MS: i64 = 5_000;

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
    account_id: &str,
    calendar_id: &str,
) -> Result<(), ErrorKind> {
    tracing::debug!("calendar sync started");
    let result = match sync_pages(shared, account_id, calendar_id).await {
        Ok(None) => Ok(()),
        Ok(Some(skipped)) => return set_aside(shared, account_id, calendar_id, skipped),
        Err(e) => Err(e),
    };
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
    account_id: &str,
    calendar_id: &str,
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
    account_id: &str,
    calendar_id: &str,
) -> Result<Option<Skipped>, ErrorKind> {
    let Some(account) = shared.store.account(account_id)? else {
        return Ok(Some(Skipped::AccountRevoked));
    };
    if account.status == AccountStatus::Revoked as i32 {
        return Ok(Some(Skipped::AccountRevoked));
    }
    if account.status != AccountStatus::Active as i32 {
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
    let busy_only = account.access_level == AccessLevel::FreeBusy as i32;
    let now = chrono::Utc::now();
    let window = pb::TimeWindow {
        start: Some(calbridge::time::to_timestamp(
            now - chrono::Duration::days(i64::from(shared.config.sync.window_past_days)),
        )),
        end: Some(calbridge::time::to_timestamp(
            now + chrono::Duration::days(i64::from(shared.config.sync.window_future_days)),
        )),
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
    let mut seen: HashSet<String> = HashSet::new();
    let mut skipped: Vec<(String, String)> = Vec::new();
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
                    seen.clear();
                    skipped.clear();
                    continue;
                }
                e => return Err(e),
            },
        };

        // A free/busy answer identical to the one last mirrored (the usual
        // poll) changes nothing: no event is compared, nothing is removed.
        // Only free/busy pages qualify: such a mirror is written by these
        // pages alone (FREE_BUSY accounts cannot write), whereas a listing
        // equal to the last one could still owe the removal of an event
        // written through calbridge since.
        let digest = native_busy.then(|| {
            let ids: Vec<&str> = page
                .upserted
                .iter()
                .map(|e| e.provider_event_id.as_str())
                .collect();
            hash_hex(&ids)
        });
        let unchanged_busy = digest.is_some() && digest == st.busy_digest;
        st.busy_digest = digest;
        if unchanged_busy {
            page.upserted.clear();
        }

        let mut puts = Vec::new();
        let mut removes = Vec::new();
        let mut changes = Vec::new();
        let full_listing = page.full_listing;
        // Provider data is held to the API's field limits: an item whose
        // identity cannot be stored is skipped and reported, never allowed
        // to block the rest of its calendar.
        calbridge::provider_data::bound_skipped(&mut page.skipped);
        skipped.extend(
            page.skipped
                .iter()
                .map(|s| (s.item_id.clone(), s.reason.clone())),
        );
        page.deleted
            .retain(|d| d.len() <= calbridge::provider_data::MAX_PROVIDER_EVENT_ID_BYTES);
        for mut e in page.upserted {
            if busy_only {
                strip_content(&mut e);
            }
            match calbridge::provider_data::bound_event(&mut e) {
                Ok(cut) if !cut.0.is_empty() => {
                    tracing::debug!(fields = ?cut.0, "provider event cut to the field limits");
                }
                Ok(_) => {}
                Err(reason) => {
                    tracing::warn!(%reason, "skipping a provider event beyond the field limits");
                    if skipped.len() < calbridge::provider_data::MAX_SKIPPED_PER_PAGE {
                        skipped.push((
                            calbridge::provider_data::report_id(&e.provider_event_id),
                            reason,
                        ));
                    }
                    continue;
                }
            }
            let pid = e.provider_event_id.clone();
            if page.full_listing {
                seen.insert(pid.clone());
            }
            let existing = shared.store.event(account_id, calendar_id, &pid)?;
            if existing.as_ref().is_some_and(|x| x.version == e.version) {
                // Already mirrored at this version: our own write, or a
                // duplicate page. Nothing changed.
                continue;
            }
            e.account_id = account_id.to_string();
            e.calendar_id = calendar_id.to_string();
            if e.client_event_id.is_empty() {
                if let Some(c) = existing.as_ref().and_then(|x| x.client_event_id.clone()) {
                    e.client_event_id = c;
                }
            }
            e.managed = !e.client_event_id.is_empty();
            let unchanged = match &existing {
                // A new version with the same content (say, another
                // instance of its series was edited): refresh the mirror's
                // version quietly; only real changes reach the feed.
                Some(x) => open_event(&key, &event_aad(account_id, calendar_id, &pid), &x.sealed)
                    .is_ok_and(|old| {
                        same_content(&old, &e) && old.recurrence_link == e.recurrence_link
                    }),
                None => false,
            };
            let kind = if existing.is_some() {
                ChangeKind::EventUpdated
            } else {
                ChangeKind::EventCreated
            };
            if unchanged {
                let mut put = put_for(&key, account_id, calendar_id, zone, &e, existing.as_ref());
                put.record.written_hash = existing.as_ref().and_then(|x| x.written_hash.clone());
                puts.push(put);
                continue;
            }
            changes.push(ChangeDraft {
                kind: kind as i32,
                account_id: account_id.to_string(),
                calendar_id: calendar_id.to_string(),
                provider_event_id: pid.clone(),
                account_status: 0,
                sealed_event: seal_event(&key, &change_aad(account_id, calendar_id, &pid), &e),
            });
            puts.push(put_for(
                &key,
                account_id,
                calendar_id,
                zone,
                &e,
                existing.as_ref(),
            ));
        }
        let mut deleted: Vec<String> = page.deleted;
        if page.full_listing && !page.more && !unchanged_busy {
            for pid in shared.store.event_ids(account_id, calendar_id)? {
                if !seen.contains(&pid) && !is_of_skipped(&pid, &skipped) {
                    deleted.push(pid);
                }
            }
        }
        for pid in deleted {
            let Some(existing) = shared.store.event(account_id, calendar_id, &pid)? else {
                continue;
            };
            let last = open_event(
                &key,
                &event_aad(account_id, calendar_id, &pid),
                &existing.sealed,
            )
            .ok();
            changes.push(ChangeDraft {
                kind: ChangeKind::EventDeleted as i32,
                account_id: account_id.to_string(),
                calendar_id: calendar_id.to_string(),
                provider_event_id: pid.clone(),
                account_status: 0,
                sealed_event: last
                    .map(|e| seal_event(&key, &change_aad(account_id, calendar_id, &pid), &e))
                    .unwrap_or_default(),
            });
            removes.push(MirrorRemove {
                provider_event_id: pid,
                start_ms: existing.start_ms,
                client_event_id: existing.client_event_id,
            });
        }

        st.cursor = page.next_cursor.clone();
        st.listing_in_progress = full_listing && page.more;
        if !page.more {
            let now = now_ms();
            if full_listing {
                st.skipped = std::mem::take(&mut skipped);
            } else {
                // Items read (or deleted) now are no longer broken; newly
                // broken ones join the list.
                st.skipped.retain(|(id, _)| {
                    !puts.iter().any(|p| belongs_to(&p.provider_event_id, id))
                        && !removes.iter().any(|r| r.provider_event_id == *id)
                });
                for item in std::mem::take(&mut skipped) {
                    if !st.skipped.iter().any(|(id, _)| *id == item.0) {
                        st.skipped.push(item);
                    }
                }
            }
            st.last_success_ms = Some(now);
            st.failures = 0;
            st.last_error.clear();
            st.next_due_ms = now + (poll_s as i64) * 1000;
        }
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

/// True when a mirrored event belongs to a skipped (unreadable) item: its id
/// belongs to one of the items (see [`belongs_to`]).
fn is_of_skipped(pid: &str, skipped: &[(String, String)]) -> bool {
    skipped.iter().any(|(id, _)| belongs_to(pid, id))
}

/// True when event `pid` is provider item `id` or one of its instances:
/// the item's id followed by "#" (CalDAV) or "_" (Google).
fn belongs_to(pid: &str, id: &str) -> bool {
    pid == id
        || pid
            .strip_prefix(id)
            .is_some_and(|rest| rest.starts_with('#') || rest.starts_with('_'))
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

/// Keeps sync state consistent after an account's credentials are fixed:
/// unpauses its calendars and makes them due now.
pub fn resume_account(shared: &Shared, account_id: &str) -> Result<(), ErrorKind> {
    shared
        .store
        .set_account_paused(account_id, false, now_ms())?;
    shared.sync_wake.notify_one();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AccountRecord, CalendarRecord, EventRecord, MirrorPut};

    fn account(status: AccountStatus) -> AccountRecord {
        AccountRecord {
            status: status as i32,
            ..AccountRecord::for_test("acc")
        }
    }

    /// A shared state with account "acc" (tenant "t") and its calendar
    /// "cal", due now.
    fn connected(dir: &std::path::Path) -> Shared {
        let s = Shared::for_test(dir);
        s.store
            .put_account_with_calendars(
                &account(AccountStatus::Active),
                &[CalendarRecord::for_test("cal")],
                0,
            )
            .unwrap();
        s
    }

    fn state(s: &Shared, calendar: &str) -> Option<SyncRecord> {
        s.store.sync_state("acc", calendar).unwrap()
    }

    #[tokio::test]
    async fn a_due_calendar_of_a_revoked_account_is_dropped_with_its_rows_not_started_again() {
        let dir = tempfile::tempdir().unwrap();
        let s = connected(dir.path());
        // What a sync page that landed after an unguarded revocation left:
        // the calendar record purged, but an event and a due sync state.
        s.store.purge_account_rows("acc").unwrap();
        let put = MirrorPut {
            provider_event_id: "late".into(),
            record: EventRecord {
                version: "1".into(),
                start_ms: 0,
                end_ms: 10,
                busy: 1,
                client_event_id: None,
                all_day: None,
                written_hash: None,
                sealed: vec![],
            },
            previous_start_ms: None,
            previous_client_id: None,
        };
        s.store
            .apply_sync_page(&PageCommit {
                tenant: "t",
                account: "acc",
                calendar: "cal",
                puts: &[put],
                removes: &[],
                state: &SyncRecord::default(),
                changes: &[],
                now_ms: 0,
            })
            .unwrap();
        s.store
            .put_account(&account(AccountStatus::Revoked))
            .unwrap();
        assert!(state(&s, "cal").is_some_and(|st| st.next_due_ms <= now_ms()));

        // The loop starts every due calendar: this one must not stay due.
        sync_calendar(&s, "acc", "cal").await.unwrap();
        assert!(
            s.store.all_sync_states().unwrap().is_empty(),
            "the revoked account's sync state is gone"
        );
        assert!(s.store.event_ids("acc", "cal").unwrap().is_empty());
    }

    #[tokio::test]
    async fn calendars_that_cannot_be_synced_leave_the_loop_until_something_changes() {
        let dir = tempfile::tempdir().unwrap();
        let s = connected(dir.path());
        // A sync state whose calendar is not stored: it goes.
        s.store
            .put_sync_state("acc", "ghost", &SyncRecord::default())
            .unwrap();
        sync_calendar(&s, "acc", "ghost").await.unwrap();
        assert!(state(&s, "ghost").is_none());

        // An account that needs re-authorisation: its calendar is paused.
        s.store
            .put_account(&account(AccountStatus::ReauthRequired))
            .unwrap();
        sync_calendar(&s, "acc", "cal").await.unwrap();
        assert!(state(&s, "cal").unwrap().paused);
    }

    #[tokio::test]
    async fn a_calendar_with_interrupted_writes_waits_for_their_replay() {
        let dir = tempfile::tempdir().unwrap();
        let s = connected(dir.path());
        s.in_doubt
            .lock()
            .unwrap()
            .insert(("acc".to_string(), "cal".to_string()));
        let before = now_ms();
        // No adapter is configured: a sync that went on would fail.
        sync_calendar(&s, "acc", "cal").await.unwrap();
        let st = state(&s, "cal").unwrap();
        assert_eq!((st.failures, st.last_error.as_str()), (0, ""));
        assert!(st.next_due_ms >= before + IN_DOUBT_RETRY_MS, "{st:?}");
    }

    #[test]
    fn events_of_skipped_items_are_recognised_by_id_or_instance_prefix() {
        let skipped = vec![("/cal/a.ics".to_string(), "broken".to_string())];
        assert!(is_of_skipped("/cal/a.ics", &skipped));
        assert!(is_of_skipped("/cal/a.ics#20261201T090000Z", &skipped));
        assert!(belongs_to("abc123_20261201T090000Z", "abc123"));
        assert!(!is_of_skipped("/cal/a.ics2", &skipped));
        assert!(!is_of_skipped("/cal/b.ics", &skipped));
    }

    #[test]
    fn due_calendars_are_started_round_robin_by_tenant_then_account() {
        let pair = |a: &str, c: &str| (a.to_string(), c.to_string());
        // Tenant t1 has a big account a1 and a small a2; t2 one account b1
        // listed last.
        let due = vec![
            pair("a1", "c1"),
            pair("a1", "c2"),
            pair("a1", "c3"),
            pair("a1", "c4"),
            pair("a2", "c1"),
            pair("b1", "c1"),
            pair("b1", "c2"),
        ];
        let order = round_robin(due, |a| {
            if a.starts_with('a') { "t1" } else { "t2" }.to_string()
        });
        assert_eq!(
            order,
            vec![
                pair("a1", "c1"),
                pair("b1", "c1"),
                pair("a2", "c1"),
                pair("b1", "c2"),
                pair("a1", "c2"),
                pair("a1", "c3"),
                pair("a1", "c4"),
            ]
        );
    }

    #[test]
    fn backoff_grows_exponentially_is_capped_and_honours_retry_after() {
        for failures in 1..=12 {
            let d = backoff(1000, 60, failures, None).as_millis() as u64;
            let ceiling = (1000u64 << (failures - 1)).min(60_000);
            assert!(d >= ceiling / 2 && d <= ceiling, "failures {failures}: {d}");
        }
        assert!(backoff(10, 60, 1, Some(Duration::from_secs(9))) >= Duration::from_secs(9));
    }
}
