//! Writes whose outcome is in doubt, found by the crash soak. A write whose
//! first attempt the provider applied but whose answer was lost is
//! retried; meanwhile no sync of its calendar may run, or it would read the
//! provider's copy of the platform's own write back as an outside change
//! (an echo in the feed): a kill of an adapter after the provider accepted
//! a write, then a push-triggered sync before the scheduler's retry. And a
//! write of a killed scheduler that reaches the provider late must not make
//! the restarted scheduler's replay of it fail (and echo).

use std::time::Duration;

use anyhow::Result;
use calbridge::pb::{self, WriteOutcome};
use calbridge_e2e::fault_proxy::Window;
use calbridge_e2e::proxied::{Process, ProxiedOptions, ProxiedStack};
use calbridge_e2e::scripted::{self, Provider, CALENDAR};
use calbridge_e2e::soak::load::{self, Counters, Tenant};
use calbridge_e2e::{
    change_cursor, changes_after, eventually, sync_now_and_wait, timed_event, wait_synced,
};
use chrono::Utc;

#[tokio::test(flavor = "multi_thread")]
async fn a_write_applied_but_unanswered_is_not_fed_back_while_it_is_retried() -> Result<()> {
    let (stack, provider) = scripted::stack(
        Provider {
            lifetime_s: 3600,
            ..Default::default()
        },
        &[],
    )
    .await?;
    let (_, key) = stack.tenant("retried").await?;
    let mut client = stack.client(Some(&key)).await?;
    let account = provider.connect(&mut client, "").await?.account_id;
    wait_synced(&mut client, &account).await?;
    let cursor = change_cursor(&mut client).await?;

    // The provider applies the create and loses its answer; the scheduler
    // waits LOST_ANSWER_RETRY before its retry.
    provider.p().lose_create_answers = 1;
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
        "the create applied, its answer lost",
        || async { (provider.p().creates_lost == 1).then_some(()) },
    )
    .await?;
    // A sync asked for while the retry waits (LOST_ANSWER_RETRY): it must
    // not run before the retry has claimed the event.
    sync_now_and_wait(&mut client, &account, CALENDAR).await?;
    let written = writer.await??.into_inner();
    sync_now_and_wait(&mut client, &account, CALENDAR).await?;

    assert_eq!(provider.p().created.len(), 1, "one event at the provider");
    let outcome = written.outcome();
    let pid = written.event.expect("the event").provider_event_id;
    let echoes: Vec<pb::Change> = changes_after(&mut client, &cursor)
        .await?
        .into_iter()
        .filter(|c| c.provider_event_id == pid)
        .collect();
    assert!(
        echoes.is_empty(),
        "the platform's own write came back as an outside change: {echoes:#?}"
    );
    assert_eq!(outcome, WriteOutcome::Created);
    Ok(())
}

/// The PUT of an update reaches the provider late, after the scheduler
/// that sent it died: the scheduler's replay of the write read the event
/// before that ghost landed, so the replay's conditional PUT meets a
/// version it did not read. The platform gave no expected version, so
/// that conflict is the replay's own race: it must read again and finish
/// the write as the platform's own, not drop it and let the next sync
/// report the ghost's content as an outside change.
#[tokio::test(flavor = "multi_thread")]
async fn a_late_write_of_a_killed_scheduler_does_not_make_its_replay_echo() -> Result<()> {
    let mut stack = ProxiedStack::start(ProxiedOptions {
        scheduler_toml: "[sync]\npoll_interval_seconds = 3600\n".into(),
        ..Default::default()
    })
    .await?;
    let (id, key) = stack.tenant("ghost").await?;
    let tenant = Tenant { id, key };
    let (account, calendar) =
        load::reconnect(&stack.connector(), &tenant, None, &Counters::default()).await?;
    let mut client = stack.client(&tenant.key).await?;
    let start = Utc::now() + chrono::Duration::days(2);
    let upsert = |title: &str| pb::UpsertEventRequest {
        provider_event_id: String::new(),
        account_id: account.clone(),
        calendar_id: calendar.clone(),
        client_event_id: "order-1".into(),
        event: Some(timed_event(title, start, 30)),
        expected_version: String::new(),
        hold_id: String::new(),
    };
    let pid = client
        .upsert_event(upsert("Order v1"))
        .await?
        .into_inner()
        .event
        .expect("the event")
        .provider_event_id;
    sync_now_and_wait(&mut client, &account, "").await?;
    let cursor = change_cursor(&mut client).await?;

    // The update's PUT is parked on its way to Radicale; its scheduler dies.
    let parked = stack.dav_proxy.arm_before(Window::Write, 0);
    let update = {
        let mut client = client.clone();
        let request = upsert("Order v2");
        tokio::spawn(async move { client.upsert_event(request).await })
    };
    let ghost = tokio::time::timeout(Duration::from_secs(30), parked).await??;
    stack.kill(Process::Scheduler).await;
    assert!(update.await?.is_err(), "never acknowledged");

    // The restarted scheduler replays the update: it reads the event (v1),
    // and its PUT is parked in turn while the ghost lands.
    let parked = stack.dav_proxy.arm_before(Window::Write, 0);
    stack.restart(Process::Scheduler).await?;
    let replay = tokio::time::timeout(Duration::from_secs(30), parked).await??;
    let seen = stack.dav_proxy.log().len();
    let _ = ghost.send(());
    eventually(Duration::from_secs(30), "the ghost PUT applied", || async {
        stack.dav_proxy.log()[seen..]
            .iter()
            .any(|l| l.method == "PUT" && l.status.is_some_and(|s| s < 300))
            .then_some(())
    })
    .await?;
    let _ = replay.send(());

    let mut client = stack.client(&tenant.key).await?;
    sync_now_and_wait(&mut client, &account, "").await?;
    let echoes: Vec<pb::Change> = changes_after(&mut client, &cursor)
        .await?
        .into_iter()
        .filter(|c| c.provider_event_id == pid)
        .collect();
    assert!(
        echoes.is_empty(),
        "the platform's own write came back as an outside change: {echoes:#?}"
    );
    let mirrored = client
        .get_event(pb::GetEventRequest {
            account_id: account.clone(),
            calendar_id: calendar.clone(),
            client_event_id: "order-1".into(),
            provider_event_id: String::new(),
        })
        .await?
        .into_inner();
    assert_eq!(mirrored.title, "Order v2");
    assert_eq!(mirrored.provider_event_id, pid);
    Ok(())
}

/// After a restart, a new write of an event must not overtake the replay
/// of the older write of it that the restart interrupted: the replay would
/// then put the older content back over an acknowledged write. Here the
/// replay is held on another event of the calendar (replays of a calendar
/// run in order) while the platform writes the event again.
#[tokio::test(flavor = "multi_thread")]
async fn a_replayed_write_never_overwrites_a_newer_acknowledged_one() -> Result<()> {
    let mut stack = ProxiedStack::start(ProxiedOptions {
        scheduler_toml: "[sync]\npoll_interval_seconds = 3600\n".into(),
        ..Default::default()
    })
    .await?;
    let (id, key) = stack.tenant("overtaken").await?;
    let tenant = Tenant { id, key };
    let (account, calendar) =
        load::reconnect(&stack.connector(), &tenant, None, &Counters::default()).await?;
    let client = stack.client(&tenant.key).await?;
    let start = Utc::now() + chrono::Duration::days(2);
    let upsert = |cid: &str, title: &str| pb::UpsertEventRequest {
        provider_event_id: String::new(),
        account_id: account.clone(),
        calendar_id: calendar.clone(),
        client_event_id: cid.into(),
        event: Some(timed_event(title, start, 30)),
        expected_version: String::new(),
        hold_id: String::new(),
    };
    let in_flight = |request: pb::UpsertEventRequest| {
        let mut client = client.clone();
        tokio::spawn(async move { client.upsert_event(request).await })
    };

    // Two creates the scheduler dies during (their PUTs parked, then let
    // through): both wait in its outbox, "first" before "second".
    let (mut writes, mut releases) = (Vec::new(), Vec::new());
    for cid in ["first", "second"] {
        let parked = stack.dav_proxy.arm_before(Window::Write, 0);
        writes.push(in_flight(upsert(cid, &format!("{cid} v1"))));
        releases.push(tokio::time::timeout(Duration::from_secs(30), parked).await??);
    }
    stack.kill(Process::Scheduler).await;
    drop(releases);
    for w in writes {
        assert!(w.await?.is_err(), "never acknowledged");
    }

    // The restarted scheduler replays "first"; its PUT is parked, so the
    // replay of "second" waits behind it. Meanwhile the platform writes
    // "second" again.
    let parked = stack.dav_proxy.arm_before(Window::Write, 0);
    stack.restart(Process::Scheduler).await?;
    let replay = tokio::time::timeout(Duration::from_secs(30), parked).await??;
    let mut client = stack.client(&tenant.key).await?;
    let newer = {
        let mut client = client.clone();
        let request = upsert("second", "second v2");
        tokio::spawn(async move { client.upsert_event(request).await })
    };
    eventually(
        Duration::from_secs(30),
        "the new write acknowledged, or waiting for the replay",
        || async {
            let waits = stack
                .log_of(Process::Scheduler)
                .contains("write waits for the writes a restart interrupted");
            (waits || newer.is_finished()).then_some(())
        },
    )
    .await?;
    let _ = replay.send(());
    let acked = newer.await??.into_inner();
    assert_eq!(
        acked.event.as_ref().map(|e| e.title.as_str()),
        Some("second v2")
    );
    sync_now_and_wait(&mut client, &account, "").await?;

    let pid = acked.event.expect("the event").provider_event_id;
    let (status, body) = stack.dav.get(&pid).await?;
    assert_eq!(status, 200);
    assert!(
        body.contains("SUMMARY:second v2"),
        "the acknowledged write was overwritten by the replay of an older one: {body}"
    );
    let mirrored = client
        .get_event(pb::GetEventRequest {
            account_id: account.clone(),
            calendar_id: calendar.clone(),
            client_event_id: "second".into(),
            provider_event_id: String::new(),
        })
        .await?
        .into_inner();
    assert_eq!(mirrored.title, "second v2");
    Ok(())
}

/// A write that waited for the replay of interrupted writes answers for
/// the account as it is once the replay is done: revoked meanwhile, a
/// delete is refused, not reported done ("already gone") while the
/// interrupted create it names stays at the provider.
#[tokio::test(flavor = "multi_thread")]
async fn a_write_that_waited_for_a_replay_sees_a_revocation_made_meanwhile() -> Result<()> {
    let mut stack = ProxiedStack::start(ProxiedOptions {
        scheduler_toml: "[sync]\npoll_interval_seconds = 3600\n".into(),
        ..Default::default()
    })
    .await?;
    let (id, key) = stack.tenant("revoked-meanwhile").await?;
    let tenant = Tenant { id, key };
    let (account, calendar) =
        load::reconnect(&stack.connector(), &tenant, None, &Counters::default()).await?;
    let client = stack.client(&tenant.key).await?;

    // A create the scheduler dies during (its PUT reaches Radicale after).
    let parked = stack.dav_proxy.arm_before(Window::Write, 0);
    let create = {
        let mut client = client.clone();
        let request = pb::UpsertEventRequest {
            provider_event_id: String::new(),
            account_id: account.clone(),
            calendar_id: calendar.clone(),
            client_event_id: "order-1".into(),
            event: Some(timed_event(
                "Order v1",
                Utc::now() + chrono::Duration::days(2),
                30,
            )),
            expected_version: String::new(),
            hold_id: String::new(),
        };
        tokio::spawn(async move { client.upsert_event(request).await })
    };
    let release = tokio::time::timeout(Duration::from_secs(30), parked).await??;
    stack.kill(Process::Scheduler).await;
    drop(release);
    assert!(create.await?.is_err(), "never acknowledged");
    stack.dav_proxy.drained(Duration::from_secs(30)).await?;

    // Its replay is held; a delete of it waits; the account is revoked.
    let parked = stack.dav_proxy.arm_before(Window::Write, 0);
    stack.restart(Process::Scheduler).await?;
    let replay = tokio::time::timeout(Duration::from_secs(30), parked).await??;
    let mut client = stack.client(&tenant.key).await?;
    let delete = {
        let mut client = client.clone();
        let request = pb::DeleteEventRequest {
            account_id: account.clone(),
            calendar_id: calendar.clone(),
            client_event_id: "order-1".into(),
            provider_event_id: String::new(),
            expected_version: String::new(),
        };
        tokio::spawn(async move { client.delete_event(request).await })
    };
    eventually(Duration::from_secs(30), "the delete waiting", || async {
        stack
            .log_of(Process::Scheduler)
            .contains("write waits for the writes a restart interrupted")
            .then_some(())
    })
    .await?;
    client
        .revoke_account(pb::RevokeAccountRequest {
            account_id: account.clone(),
        })
        .await?;
    let _ = replay.send(());

    let answer = delete.await?;
    let status = answer.expect_err("a revoked account's delete is refused");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    Ok(())
}
