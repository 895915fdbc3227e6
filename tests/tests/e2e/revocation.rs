//! Revocation against bad timing: a revocation while a sync is reading a
//! page from the provider (the page arrives after it), and a restart over
//! the rows an interrupted revocation left. Nothing of the account shows in
//! the feed after REVOKED, no row of it stays in the store, its calendars
//! are never synced again (counted from the scheduler's debug log, not
//! timed), and it is never reported free nor held.

use std::time::Duration;

use anyhow::{anyhow, Result};
use calbridge::pb::{self, AccountStatus, ChangeKind};
use calbridge_e2e::scripted::{stack, Provider};
use calbridge_e2e::{
    change_cursor, changes_after, eventually, sync_now_and_wait, SchedulerClient, Stack,
};
use calbridge_scheduler::store::{
    ChannelRecord, EventRecord, HoldRecord, MirrorPut, OutboxRecord, PageCommit, Store, SyncRecord,
};
use chrono::Utc;

/// Logs every calendar sync the scheduler starts (with its account id).
const SYNC_DEBUG: &str = "info,calbridge_scheduler::sync=debug";

/// The syncs the scheduler started for `account`, from its log.
fn syncs_started(stack: &Stack, account: &str) -> Result<usize> {
    let log = stack
        .scheduler
        .log
        .lock()
        .map_err(|_| anyhow!("log lock"))?;
    Ok(log
        .lines()
        .filter(|l| l.contains("calendar sync started") && l.contains(account))
        .count())
}

/// The changes of one account after `cursor`.
async fn account_changes(
    c: &mut SchedulerClient,
    cursor: &str,
    account: &str,
) -> Result<Vec<pb::Change>> {
    Ok(changes_after(c, cursor)
        .await?
        .into_iter()
        .filter(|ch| ch.account_id == account)
        .collect())
}

fn is_revoked(ch: &pb::Change) -> bool {
    ch.kind == ChangeKind::AccountStatus as i32
        && ch.account_status == AccountStatus::Revoked as i32
}

/// Every row of `account` the store still holds, described (empty when
/// none): its calendars, sync states, mirror (events and time index) of
/// `calendars`, pending writes, push channels and the tenant's holds.
fn rows_of(
    store: &Store,
    tenant: &str,
    account: &str,
    calendars: &[String],
) -> Result<Vec<String>> {
    let mut rows: Vec<String> = store
        .calendars(&calbridge_scheduler::ids::AccountId::from(account))?
        .into_iter()
        .map(|c| format!("calendar {}", c.calendar_id))
        .collect();
    rows.extend(
        store
            .all_sync_states()?
            .into_iter()
            .filter(|(a, _, _)| a == account)
            .map(|(_, c, _)| format!("sync state {c}")),
    );
    for cal in calendars {
        rows.extend(
            store
                .event_ids(
                    &calbridge_scheduler::ids::AccountId::from(account),
                    &calbridge_scheduler::ids::CalendarId::from(cal),
                )?
                .into_iter()
                .map(|e| format!("event {cal}/{e}")),
        );
        rows.extend(
            store
                .events_overlapping(
                    &calbridge_scheduler::ids::AccountId::from(account),
                    &calbridge_scheduler::ids::CalendarId::from(cal),
                    i64::MIN,
                    i64::MAX,
                    None,
                    100,
                )?
                .into_iter()
                .map(|(_, e, _)| format!("index entry {cal}/{e}")),
        );
    }
    rows.extend(
        store
            .outbox_all()?
            .into_iter()
            .filter(|o| o.account_id == account)
            .map(|o| format!("pending write {}", o.op_id)),
    );
    rows.extend(
        store
            .channels()?
            .into_iter()
            .filter(|c| c.account_id == account)
            .map(|c| format!("channel {}", c.channel_id)),
    );
    rows.extend(
        store
            .holds(&calbridge_scheduler::ids::TenantId::from(tenant))?
            .into_iter()
            .filter(|h| h.account_ids.iter().any(|a| a == account))
            .map(|h| format!("hold {}", h.hold_id)),
    );
    Ok(rows)
}

/// Asserts that free/busy, availability and holds refuse the revoked
/// `account` with FAILED_PRECONDITION naming the field.
async fn refused_everywhere(c: &mut SchedulerClient, account: &str) -> Result<()> {
    let start = Utc::now() + chrono::Duration::days(1);
    let window = pb::TimeWindow {
        start: Some(calbridge::time::to_timestamp(start)),
        end: Some(calbridge::time::to_timestamp(
            start + chrono::Duration::hours(8),
        )),
    };
    let free_busy = c
        .query_free_busy(pb::QueryFreeBusyRequest {
            account_ids: vec![account.into()],
            window: Some(window),
        })
        .await
        .expect_err("a revoked account reported in free/busy");
    let availability = c
        .query_availability(pb::QueryAvailabilityRequest {
            groups: vec![pb::ParticipantGroup {
                members: vec![pb::AvailabilityMember {
                    account_id: account.into(),
                    ..Default::default()
                }],
                required: 0,
            }],
            duration_minutes: 30,
            periods: vec![window],
            ..Default::default()
        })
        .await
        .expect_err("a revoked account reported available");
    let hold = c
        .create_hold(pb::CreateHoldRequest {
            account_ids: vec![account.into()],
            slot: Some(pb::TimeWindow {
                start: window.start,
                end: Some(calbridge::time::to_timestamp(
                    start + chrono::Duration::minutes(30),
                )),
            }),
            ttl_minutes: 10,
        })
        .await
        .expect_err("a revoked account held");
    for (s, field) in [
        (free_busy, "account_ids[0]"),
        (availability, "groups[0].members[0].account_id"),
        (hold, "account_ids[0]"),
    ] {
        assert_eq!(s.code(), tonic::Code::FailedPrecondition, "{s:?}");
        assert!(
            s.message().contains(field) && s.message().contains(account),
            "{s:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn revoking_during_a_slow_sync_leaves_no_rows_nothing_after_revoked_and_an_idle_loop(
) -> Result<()> {
    // The initial sync's first page is held at the provider until the
    // account is revoked.
    let (mut stack, scripted) = stack(
        Provider {
            lifetime_s: 3600,
            listing: 3,
            hold_page: Some(0),
            ..Default::default()
        },
        &[],
    )
    .await?;
    let (tenant, key) = stack.tenant("revoke-race").await?;
    let mut c = stack.client(Some(&key)).await?;
    let cursor = change_cursor(&mut c).await?;
    let account = scripted.connect(&mut c, "").await?.account_id;
    let calendars = vec![calbridge_e2e::scripted::CALENDAR.to_string()];
    eventually(
        Duration::from_secs(30),
        "the sync reading the first page",
        || async { scripted.p().page_held.then_some(()) },
    )
    .await?;

    let revoked = c
        .revoke_account(pb::RevokeAccountRequest {
            account_id: account.clone(),
        })
        .await?
        .into_inner();
    assert_eq!(revoked.status, AccountStatus::Revoked as i32);
    // The page read before the revocation reaches the scheduler now.
    scripted.release();
    eventually(Duration::from_secs(30), "the late page handled", || {
        let mut c = c.clone();
        let (cursor, account) = (cursor.clone(), account.clone());
        let stopped = syncs_stopped(&stack);
        async move {
            let changes = account_changes(&mut c, &cursor, &account).await.ok()?;
            let after = changes.iter().skip_while(|ch| !is_revoked(ch)).count();
            (stopped || after > 1).then_some(())
        }
    })
    .await?;

    let changes = account_changes(&mut c, &cursor, &account).await?;
    let kinds: Vec<(i32, i32)> = changes
        .iter()
        .map(|ch| (ch.kind, ch.account_status))
        .collect();
    assert_eq!(
        changes.iter().filter(|ch| is_revoked(ch)).count(),
        1,
        "{kinds:?}"
    );
    assert!(
        changes.last().is_some_and(is_revoked),
        "nothing of the account after REVOKED: {kinds:?}"
    );
    assert!(c
        .list_calendars(pb::ListCalendarsRequest {
            account_id: account.clone(),
        })
        .await?
        .into_inner()
        .calendars
        .is_empty());
    assert!(calbridge_e2e::sync_status(&mut c, &account)
        .await?
        .is_empty());
    refused_everywhere(&mut c, &account).await?;

    // Stopped, the store holds no row of the account.
    drop(c);
    assert!(stack.scheduler.terminate().await?, "a clean stop");
    {
        let store =
            calbridge_e2e::open_store(stack.store_dir().parent().expect("a data directory"))?;
        assert_eq!(
            rows_of(&store, &tenant, &account, &calendars)?,
            Vec::<String>::new()
        );
    }

    // Restarted, the loop never starts a sync of the revoked account: when
    // another account's requested sync has finished, the loop has scanned
    // the sync states more than once, and none of them was the account's.
    stack
        .scheduler_env
        .push(("RUST_LOG".into(), SYNC_DEBUG.into()));
    stack.restart_scheduler().await?;
    let mut c = stack.client(Some(&key)).await?;
    let (other, _) = stack
        .sandbox_account(&mut c, "other@example.com", "pw-other-1")
        .await?;
    sync_now_and_wait(&mut c, &other, "").await?;
    assert!(syncs_started(&stack, &other)? >= 2);
    assert_eq!(syncs_started(&stack, &account)?, 0);
    Ok(())
}

/// True once the scheduler logged that a sync stopped on a revoked account.
fn syncs_stopped(stack: &Stack) -> bool {
    stack
        .scheduler
        .log
        .lock()
        .is_ok_and(|l| l.contains("sync stopped: the account is revoked"))
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_an_interrupted_revocation_left_are_purged_at_start_and_never_synced() -> Result<()> {
    let mut stack = Stack::start().await?;
    let (tenant, key) = stack.tenant("sweep").await?;
    let mut c = stack.client(Some(&key)).await?;
    let (gone, gone_cal) = stack
        .sandbox_account(&mut c, "gone@example.com", "pw-gone-1")
        .await?;
    let (kept, _) = stack
        .sandbox_account(&mut c, "kept@example.com", "pw-kept-1")
        .await?;
    let calendars: Vec<String> = c
        .list_calendars(pb::ListCalendarsRequest {
            account_id: gone.clone(),
        })
        .await?
        .into_inner()
        .calendars
        .into_iter()
        .map(|c| c.calendar_id)
        .collect();
    drop(c);
    assert!(stack.scheduler.terminate().await?, "a clean stop");

    // Offline, the rows a revocation left when it raced a sync before
    // revocations excluded syncs (its calendar records purged, then a
    // late page's event and a due sync state), and those a crash right
    // after a revocation's mark leaves (a pending write, a push channel, a
    // hold); then the mark.
    {
        let store =
            calbridge_e2e::open_store(stack.store_dir().parent().expect("a data directory"))?;
        store.purge_account_rows(&calbridge_scheduler::ids::AccountId::from(&gone))?;
        let late = MirrorPut {
            provider_event_id: "late".into(),
            record: EventRecord {
                series: false,
                version: "1".into(),
                start_ms: Utc::now().timestamp_millis(),
                end_ms: Utc::now().timestamp_millis() + 60_000,
                busy: pb::BusyStatus::Busy,
                client_event_id: Some("late-client".into()),
                all_day: None,
                written_hash: None,
                sealed: vec![1, 2, 3],
            },
            previous_start_ms: None,
            previous_client_id: None,
        };
        store.apply_sync_page(&PageCommit {
            tenant: &tenant.as_str().into(),
            account: &gone.as_str().into(),
            calendar: &gone_cal.as_str().into(),
            puts: &[late],
            removes: &[],
            state: &SyncRecord::default(),
            changes: &[],
            now_ms: Utc::now().timestamp_millis(),
        })?;
        store.outbox_put(&OutboxRecord {
            op_id: store.next_id()?,
            tenant_id: tenant.as_str().into(),
            account_id: gone.as_str().into(),
            calendar_id: gone_cal.as_str().into(),
            client_event_id: "pending".into(),
            provider_event_id: Default::default(),
            delete: false,
            sealed_event: vec![1, 2, 3],
            expected_version: String::new(),
            created_ms: 0,
        })?;
        store.put_channel(&ChannelRecord {
            channel_id: "ch_left".into(),
            account_id: gone.as_str().into(),
            calendar_id: gone_cal.as_str().into(),
            token_hash: String::new(),
            resource_id: String::new(),
            expires_ms: i64::MAX,
        })?;
        let now = Utc::now().timestamp_millis();
        store.put_hold(
            &calbridge_scheduler::ids::TenantId::from(&tenant),
            &HoldRecord {
                hold_id: "hold_left".into(),
                account_ids: vec![gone.as_str().into(), kept.as_str().into()],
                start_ms: now + 86_400_000,
                end_ms: now + 86_400_000 + 1_800_000,
                expires_ms: now + 3_600_000,
            },
        )?;
        let mut record = store
            .account(&gone)?
            .ok_or_else(|| anyhow!("account stored"))?;
        record.status = AccountStatus::Revoked;
        record.sealed_credentials.clear();
        record.sealed_identity.clear();
        store.put_account(&record)?;
        assert!(!rows_of(&store, &tenant, &gone, &calendars)?.is_empty());
        store.flush().await?;
    }

    stack
        .scheduler_env
        .push(("RUST_LOG".into(), SYNC_DEBUG.into()));
    stack.restart_scheduler().await?;
    let mut c = stack.client(Some(&key)).await?;
    sync_now_and_wait(&mut c, &kept, "").await?;
    assert!(syncs_started(&stack, &kept)? >= 1);
    assert_eq!(
        syncs_started(&stack, &gone)?,
        0,
        "the revoked account's due calendar was synced"
    );
    refused_everywhere(&mut c, &gone).await?;
    let holds = c
        .list_holds(pb::ListHoldsRequest {})
        .await?
        .into_inner()
        .holds;
    let left = holds
        .iter()
        .find(|h| h.hold_id == "hold_left")
        .ok_or_else(|| anyhow!("the hold still holds the other account: {holds:?}"))?;
    assert_eq!(left.account_ids, vec![kept.clone()]);
    assert!(calbridge_e2e::sync_status(&mut c, &gone).await?.is_empty());

    drop(c);
    assert!(stack.scheduler.terminate().await?, "a clean stop");
    let store = calbridge_e2e::open_store(stack.store_dir().parent().expect("a data directory"))?;
    assert_eq!(
        rows_of(&store, &tenant, &gone, &calendars)?,
        Vec::<String>::new()
    );
    Ok(())
}
