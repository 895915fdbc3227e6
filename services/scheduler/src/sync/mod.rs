//! The sync loop: which calendar to sync when (poll due times, push and
//! `SyncNow` marks), within a global and a per-account concurrency limit, with
//! exponential backoff and jitter on failure. The sync of one calendar is
//! [`calendar`]'s: it applies each provider page, its cursor and its
//! change-log entries in one transaction, the page's effect worked out by
//! the pure [`diff`], which also suppresses echoes of the platform's own
//! writes.

mod calendar;
pub mod diff;

pub use calendar::sync_calendar;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use calbridge::ErrorKind;
use rand::Rng;
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::clock::now_ms;
use crate::ids::{AccountId, CalendarKey, TenantId};
use crate::permits::FairPermits;
use crate::state::Shared;

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
    let running: Arc<Mutex<HashSet<CalendarKey>>> = Arc::default();
    // When the loop plans to scan next, ms: a finished sync whose calendar
    // is due sooner wakes it.
    let planned_wake = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let global = FairPermits::new(shared.config.sync.max_concurrent_syncs);
    let mut per_account: HashMap<AccountId, Arc<Semaphore>> = HashMap::new();
    // Accounts never change tenant: each is looked up once.
    let mut tenants: HashMap<AccountId, TenantId> = HashMap::new();
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
        let urgent: HashSet<CalendarKey> =
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
                .entry(account.clone())
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
    due: Vec<CalendarKey>,
    mut tenant_of: impl FnMut(&AccountId) -> TenantId,
) -> Vec<CalendarKey> {
    // Each account's calendars, accounts in order of first appearance.
    let mut index: HashMap<AccountId, usize> = HashMap::new();
    let mut accounts: Vec<VecDeque<CalendarKey>> = Vec::new();
    let n = due.len();
    for (account, calendar) in due {
        let i = *index.entry(account.clone()).or_insert_with(|| {
            accounts.push(VecDeque::new());
            accounts.len() - 1
        });
        accounts[i].push_back((account, calendar));
    }
    // tenant → its accounts' queues, taken in turn.
    let mut by_tenant: BTreeMap<TenantId, VecDeque<VecDeque<CalendarKey>>> = BTreeMap::new();
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

/// Keeps sync state consistent after an account's credentials are fixed:
/// unpauses its calendars and makes them due now.
pub fn resume_account(shared: &Shared, account_id: &AccountId) -> Result<(), ErrorKind> {
    shared
        .store
        .set_account_paused(account_id, false, now_ms())?;
    shared.sync_wake.notify_one();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::calendar::IN_DOUBT_RETRY_MS;
    use super::diff::{belongs_to, is_of_skipped};
    use super::*;
    use crate::ids::CalendarId;
    use crate::store::{
        AccountRecord, CalendarRecord, EventRecord, MirrorPut, PageCommit, SyncRecord,
    };
    use calbridge::pb::AccountStatus;

    fn account(status: AccountStatus) -> AccountRecord {
        AccountRecord {
            status,
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

    fn state(s: &Shared, calendar: &CalendarId) -> Option<SyncRecord> {
        s.store
            .sync_state(&AccountId::from("acc"), calendar)
            .unwrap()
    }

    #[tokio::test]
    async fn a_due_calendar_of_a_revoked_account_is_dropped_with_its_rows_not_started_again() {
        let dir = tempfile::tempdir().unwrap();
        let s = connected(dir.path());
        // What a sync page that landed after an unguarded revocation left:
        // the calendar record purged, but an event and a due sync state.
        s.store.purge_account_rows(&AccountId::from("acc")).unwrap();
        let put = MirrorPut {
            provider_event_id: "late".into(),
            record: EventRecord {
                series: false,
                version: "1".into(),
                start_ms: 0,
                end_ms: 10,
                busy: calbridge::pb::BusyStatus::Busy,
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
                tenant: &crate::ids::TenantId::from("t"),
                account: &crate::ids::AccountId::from("acc"),
                calendar: &crate::ids::CalendarId::from("cal"),
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
        assert!(state(&s, &CalendarId::from("cal")).is_some_and(|st| st.next_due_ms <= now_ms()));

        // The loop starts every due calendar: this one must not stay due.
        sync_calendar(&s, &"acc".into(), &"cal".into())
            .await
            .unwrap();
        assert!(
            s.store.all_sync_states().unwrap().is_empty(),
            "the revoked account's sync state is gone"
        );
        assert!(s
            .store
            .event_ids(&AccountId::from("acc"), &CalendarId::from("cal"))
            .unwrap()
            .is_empty());
    }

    #[tokio::test]
    async fn calendars_that_cannot_be_synced_leave_the_loop_until_something_changes() {
        let dir = tempfile::tempdir().unwrap();
        let s = connected(dir.path());
        // A sync state whose calendar is not stored: it goes.
        s.store
            .put_sync_state(
                &AccountId::from("acc"),
                &CalendarId::from("ghost"),
                &SyncRecord::default(),
            )
            .unwrap();
        sync_calendar(&s, &"acc".into(), &"ghost".into())
            .await
            .unwrap();
        assert!(state(&s, &CalendarId::from("ghost")).is_none());

        // An account that needs re-authorisation: its calendar is paused.
        s.store
            .put_account(&account(AccountStatus::ReauthRequired))
            .unwrap();
        sync_calendar(&s, &"acc".into(), &"cal".into())
            .await
            .unwrap();
        assert!(state(&s, &CalendarId::from("cal")).unwrap().paused);
    }

    #[tokio::test]
    async fn a_calendar_with_interrupted_writes_waits_for_their_replay() {
        let dir = tempfile::tempdir().unwrap();
        let s = connected(dir.path());
        s.in_doubt
            .lock()
            .unwrap()
            .insert(("acc".into(), "cal".into()));
        let before = now_ms();
        // No adapter is configured: a sync that went on would fail.
        sync_calendar(&s, &"acc".into(), &"cal".into())
            .await
            .unwrap();
        let st = state(&s, &CalendarId::from("cal")).unwrap();
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
        let pair = |a: &str, c: &str| -> CalendarKey { (a.into(), c.into()) };
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
        let order = round_robin(due, |a| if a.starts_with('a') { "t1" } else { "t2" }.into());
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
