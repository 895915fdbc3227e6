//! kill -9 of the scheduler while it processes a stream of upserts: after a
//! restart every acknowledged upsert exists exactly once at the provider, and
//! the change log has no gap. A write the provider applied just before the
//! kill (its answer lost) is completed after the restart as the platform's
//! own write, never fed back as an outside change.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use calbridge::pb;
use calbridge_e2e::scripted::{self, Provider, CALENDAR};
use calbridge_e2e::{
    change_cursor, changes_after, eventually, sync_now_and_wait, timed_event, wait_synced, Stack,
};
use chrono::Utc;

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_upserts_survive_kill_9_exactly_once_and_the_log_has_no_gap() -> Result<()> {
    let mut stack = Stack::start().await?;
    let (_, key) = stack.tenant("crash").await?;
    let mut client = stack.client(Some(&key)).await?;
    let (account, calendar) = stack
        .sandbox_account(&mut client, "crash@example.com", "pw-crash-1")
        .await?;
    let mut sandbox = stack.sandbox().await?;
    let base = Utc::now() + chrono::Duration::days(1);

    // A stream of upserts, each acknowledged one recorded, plus outside edits
    // so the change log grows while the scheduler dies.
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let writer = {
        let (mut client, acked, account, calendar) = (
            client.clone(),
            acked.clone(),
            account.clone(),
            calendar.clone(),
        );
        tokio::spawn(async move {
            for i in 0..10_000 {
                let id = format!("order-{i}");
                let r = client
                    .upsert_event(pb::UpsertEventRequest {
                        provider_event_id: String::new(),
                        account_id: account.clone(),
                        calendar_id: calendar.clone(),
                        client_event_id: id.clone(),
                        event: Some(timed_event(
                            &format!("Order {i}"),
                            base + chrono::Duration::minutes(i),
                            30,
                        )),
                        expected_version: String::new(),
                        hold_id: String::new(),
                    })
                    .await;
                match r {
                    Ok(_) => acked.lock().unwrap().push(id),
                    Err(_) => return,
                }
            }
        })
    };
    for i in 0..5 {
        sandbox
            .put_event(pb::PutSandboxEventRequest {
                username: "crash@example.com".into(),
                calendar_id: String::new(),
                event: Some(timed_event(
                    &format!("Outside {i}"),
                    base - chrono::Duration::hours(i + 1),
                    15,
                )),
            })
            .await?;
    }
    eventually(
        Duration::from_secs(30),
        "some upserts acknowledged",
        || async { (acked.lock().unwrap().len() >= 20).then_some(()) },
    )
    .await?;
    stack.scheduler.kill9().await;
    let _ = writer.await;
    let acked: Vec<String> = acked.lock().unwrap().clone();

    stack.restart_scheduler().await?;
    let mut client = stack.client(Some(&key)).await?;
    wait_synced(&mut client, &account).await?;
    for i in 5..8 {
        sandbox
            .put_event(pb::PutSandboxEventRequest {
                username: "crash@example.com".into(),
                calendar_id: String::new(),
                event: Some(timed_event(
                    &format!("Outside {i}"),
                    base - chrono::Duration::hours(i + 1),
                    15,
                )),
            })
            .await?;
    }

    // At the provider: every acknowledged upsert exactly once, nothing twice.
    let at_provider = sandbox
        .list_provider_events(pb::ListSandboxEventsRequest {
            username: "crash@example.com".into(),
            calendar_id: String::new(),
        })
        .await?
        .into_inner()
        .events;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for e in &at_provider {
        if !e.client_event_id.is_empty() {
            *counts.entry(e.client_event_id.clone()).or_default() += 1;
        }
    }
    for id in &acked {
        assert_eq!(counts.get(id), Some(&1), "{id} at the provider");
    }
    assert!(
        counts.values().all(|n| *n == 1),
        "a write was duplicated: {counts:?}"
    );

    // In the mirror: every acknowledged upsert readable after the restart.
    for id in &acked {
        client
            .get_event(pb::GetEventRequest {
                account_id: account.clone(),
                calendar_id: calendar.clone(),
                client_event_id: id.clone(),
                provider_event_id: String::new(),
            })
            .await?;
    }

    // The change log: the eight outside events, sequences 1.. without gaps,
    // and none of the platform's own writes.
    let changes = eventually(
        Duration::from_secs(30),
        "eight outside events in the feed",
        || {
            let mut c = client.clone();
            async move {
                let r = c
                    .list_changes(pb::ListChangesRequest {
                        cursor: String::new(),
                        page_size: 1000,
                    })
                    .await
                    .ok()?
                    .into_inner();
                (r.changes.len() >= 8).then_some(r.changes)
            }
        },
    )
    .await?;
    let seqs: Vec<u64> = changes.iter().map(|c| c.sequence).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "gap in the change log"
    );
    assert!(changes.iter().all(|c| c
        .event
        .as_ref()
        .is_some_and(|e| e.title.starts_with("Outside"))));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn many_concurrent_upserts_all_complete_once() -> Result<()> {
    let stack = Stack::start().await?;
    let (_, key) = stack.tenant("busy").await?;
    let mut client = stack.client(Some(&key)).await?;
    let (account, calendar) = stack
        .sandbox_account(&mut client, "busy@example.com", "pw-busy-1")
        .await?;
    let base = Utc::now() + chrono::Duration::days(1);
    let mut tasks = Vec::new();
    for w in 0..16 {
        let (mut c, account, calendar) = (client.clone(), account.clone(), calendar.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..5 {
                c.upsert_event(pb::UpsertEventRequest {
                    provider_event_id: String::new(),
                    account_id: account.clone(),
                    calendar_id: calendar.clone(),
                    // Workers share three id families (w0, w1, w2) and race on
                    // them: each id must still end as exactly one event.
                    client_event_id: format!("w{}-{i}", w.min(1 + w % 2)),
                    event: Some(timed_event(
                        "Busy",
                        base + chrono::Duration::minutes(w * 10 + i),
                        5,
                    )),
                    expected_version: String::new(),
                    hold_id: String::new(),
                })
                .await?;
            }
            Ok::<(), tonic::Status>(())
        }));
    }
    tokio::time::timeout(Duration::from_secs(60), async {
        for t in tasks {
            t.await.expect("task").expect("upsert");
        }
    })
    .await?;
    let at_provider = stack
        .sandbox()
        .await?
        .list_provider_events(pb::ListSandboxEventsRequest {
            username: "busy@example.com".into(),
            calendar_id: String::new(),
        })
        .await?
        .into_inner()
        .events;
    let mut ids: Vec<&str> = at_provider
        .iter()
        .map(|e| e.client_event_id.as_str())
        .collect();
    ids.sort();
    let before = ids.len();
    ids.dedup();
    assert_eq!(before, ids.len(), "an id was written twice: {ids:?}");
    assert_eq!(ids.len(), 15, "w0, w1 and w2 ids, five each: {ids:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_outage_answers_unavailable_with_retry_info_and_keeps_nothing_half_done(
) -> Result<()> {
    let cfg = tempfile::NamedTempFile::new()?;
    std::fs::write(cfg.path(), "write_timeout_seconds = 1\n")?;
    let cfg_path = cfg.path().display().to_string();
    let mut stack = Stack::start_with(&[], &[("CALBRIDGE_CONFIG", cfg_path.as_str())]).await?;
    let (_, key) = stack.tenant("outage").await?;
    let mut client = stack.client(Some(&key)).await?;
    let (account, calendar) = stack
        .sandbox_account(&mut client, "outage@example.com", "pw-out-1")
        .await?;
    stack.sandbox.kill9().await;

    let started = std::time::Instant::now();
    let status = client
        .upsert_event(pb::UpsertEventRequest {
            provider_event_id: String::new(),
            account_id: account.clone(),
            calendar_id: calendar.clone(),
            client_event_id: "during-outage".into(),
            event: Some(timed_event(
                "Outage",
                Utc::now() + chrono::Duration::days(1),
                30,
            )),
            expected_version: String::new(),
            hold_id: String::new(),
        })
        .await
        .expect_err("the provider is down");
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "gave up after the write timeout"
    );
    assert!(
        !status.message().contains("127.0.0.1"),
        "no socket details: {}",
        status.message()
    );
    use tonic_types::StatusExt;
    assert!(
        status.get_error_details().retry_info().is_some(),
        "retry info attached"
    );

    // Nothing half-done: the event is not in the mirror, the account stays
    // active, and the sync status reports the outage.
    let missing = client
        .get_event(pb::GetEventRequest {
            account_id: account.clone(),
            calendar_id: calendar.clone(),
            client_event_id: "during-outage".into(),
            provider_event_id: String::new(),
        })
        .await
        .expect_err("not written");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    client
        .sync_now(pb::SyncNowRequest {
            account_id: account.clone(),
            calendar_id: calendar.clone(),
        })
        .await?;
    eventually(
        Duration::from_secs(30),
        "sync status shows the outage",
        || {
            let mut c = client.clone();
            let account = account.clone();
            async move {
                let s = c
                    .get_sync_status(pb::GetSyncStatusRequest {
                        account_id: account,
                    })
                    .await
                    .ok()?
                    .into_inner();
                s.calendars
                    .iter()
                    .any(|c| c.state == pb::SyncState::Backoff as i32 && !c.last_error.is_empty())
                    .then_some(())
            }
        },
    )
    .await?;
    let a = client
        .get_account(pb::GetAccountRequest {
            account_id: account,
        })
        .await?
        .into_inner();
    assert_eq!(a.status, pb::AccountStatus::Active as i32);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_the_provider_applied_before_a_kill_9_is_not_fed_back_as_an_outside_change(
) -> Result<()> {
    let (mut stack, provider) = scripted::stack(
        Provider {
            lifetime_s: 3600,
            ..Default::default()
        },
        &[],
    )
    .await?;
    let (_, key) = stack.tenant("echo").await?;
    let mut client = stack.client(Some(&key)).await?;
    let account = provider.connect(&mut client, "").await?.account_id;
    wait_synced(&mut client, &account).await?;
    let cursor = change_cursor(&mut client).await?;

    // The provider applies the create but its answer never arrives: the
    // scheduler dies first.
    provider.p().hold_creates = true;
    let writer = {
        let (mut client, account) = (client.clone(), account.clone());
        tokio::spawn(async move {
            client
                .upsert_event(pb::UpsertEventRequest {
                    provider_event_id: String::new(),
                    account_id: account,
                    calendar_id: CALENDAR.into(),
                    client_event_id: "order-1".into(),
                    event: Some(timed_event(
                        "Order 1",
                        Utc::now() + chrono::Duration::days(1),
                        30,
                    )),
                    expected_version: String::new(),
                    hold_id: String::new(),
                })
                .await
        })
    };
    eventually(
        Duration::from_secs(30),
        "the create applied at the provider",
        || async { (provider.p().creates_held >= 1).then_some(()) },
    )
    .await?;
    stack.scheduler.kill9().await;
    assert!(writer.await?.is_err(), "the write was never acknowledged");

    // After the restart the provider refuses creates for a while: the
    // replay of the write retries, and meanwhile the calendar's poll comes
    // due (and would list the event as new).
    let polls = {
        let mut p = provider.p();
        p.hold_creates = false;
        p.fail_creates = true;
        p.sync_calls
    };
    stack.restart_scheduler().await?;
    let mut client = stack.client(Some(&key)).await?;
    eventually(
        Duration::from_secs(30),
        "the replay retrying and the calendar's poll due",
        || async {
            let deferred = stack
                .scheduler
                .log
                .lock()
                .is_ok_and(|l| l.contains("sync deferred until the writes"));
            let p = provider.p();
            (p.creates_failed >= 1 && (deferred || p.sync_calls > polls)).then_some(())
        },
    )
    .await?;
    provider.p().fail_creates = false;
    let event = eventually(
        Duration::from_secs(30),
        "the interrupted write completed",
        || {
            let mut c = client.clone();
            let account = account.clone();
            async move {
                c.get_event(pb::GetEventRequest {
                    account_id: account,
                    calendar_id: CALENDAR.into(),
                    client_event_id: "order-1".into(),
                    provider_event_id: String::new(),
                })
                .await
                .ok()
                .map(|r| r.into_inner())
            }
        },
    )
    .await?;
    sync_now_and_wait(&mut client, &account, CALENDAR).await?;

    assert_eq!(provider.p().created.len(), 1, "one event at the provider");
    let echoes: Vec<pb::Change> = changes_after(&mut client, &cursor)
        .await?
        .into_iter()
        .filter(|c| c.provider_event_id == event.provider_event_id)
        .collect();
    assert!(
        echoes.is_empty(),
        "the platform's own write came back as an outside change: {echoes:#?}"
    );
    Ok(())
}
