//! A write whose first attempt the provider applied but whose answer was
//! lost is retried; meanwhile no sync of its calendar may run, or it would
//! read the provider's copy of the platform's own write back as an outside
//! change (an echo in the feed). Found by the crash soak: a kill of an
//! adapter after the provider accepted a write, then a push-triggered sync
//! before the scheduler's retry.

use std::time::Duration;

use anyhow::Result;
use calbridge::pb::{self, WriteOutcome};
use calbridge_e2e::scripted::{self, Provider, CALENDAR};
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
