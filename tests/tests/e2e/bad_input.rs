//! Bad input gets a clear status naming the field, and stores nothing.

use anyhow::Result;
use calbridge::pb;
use calbridge_e2e::{timed_event, SchedulerClient, Stack};
use chrono::Utc;
use tonic::Code;
use tonic_types::StatusExt;

fn fields(s: &tonic::Status) -> Vec<String> {
    s.get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

async fn upsert(
    c: &mut SchedulerClient,
    account: &str,
    calendar: &str,
    id: &str,
    e: pb::Event,
) -> tonic::Status {
    c.upsert_event(pb::UpsertEventRequest {
        account_id: account.into(),
        calendar_id: calendar.into(),
        client_event_id: id.into(),
        event: Some(e),
        expected_version: String::new(),
        hold_id: String::new(),
    })
    .await
    .expect_err("bad input must be refused")
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_refused_with_the_field_named_and_nothing_is_stored() -> Result<()> {
    let stack = Stack::start().await?;
    let (_, key) = stack.tenant("acme").await?;
    let (_, other_key) = stack.tenant("globex").await?;
    let mut c = stack.client(Some(&key)).await?;
    let (account, calendar) = stack
        .sandbox_account(&mut c, "bad@example.com", "pw-bad-1")
        .await?;
    let start = Utc::now() + chrono::Duration::days(3);
    let good = timed_event("Valid", start, 30);

    // End before start.
    let mut e = good.clone();
    std::mem::swap(&mut e.start, &mut e.end);
    let s = upsert(&mut c, &account, &calendar, "x1", e).await;
    assert_eq!(s.code(), Code::InvalidArgument);
    assert_eq!(fields(&s), vec!["event.end"]);
    assert!(s.message().contains("event.end"));

    // Unknown time zone.
    let mut e = good.clone();
    e.start.as_mut().unwrap().time_zone = "Europe/Atlantis".into();
    let s = upsert(&mut c, &account, &calendar, "x2", e).await;
    assert_eq!(fields(&s), vec!["event.start.time_zone"]);

    // Empty and oversized ids and fields.
    let s = upsert(&mut c, &account, &calendar, "", good.clone()).await;
    assert_eq!(fields(&s), vec!["client_event_id"]);
    let s = upsert(&mut c, &account, &calendar, &"z".repeat(300), good.clone()).await;
    assert_eq!(fields(&s), vec!["client_event_id"]);
    let s = upsert(&mut c, "", &calendar, "x3", good.clone()).await;
    assert_eq!(fields(&s), vec!["account_id"]);
    let mut e = good.clone();
    e.title = "t".repeat(5000);
    let s = upsert(&mut c, &account, &calendar, "x4", e).await;
    assert_eq!(fields(&s), vec!["event.title"]);
    let mut e = good.clone();
    e.attendees.push(pb::Attendee {
        email: "not-an-address".into(),
        ..Default::default()
    });
    let s = upsert(&mut c, &account, &calendar, "x5", e).await;
    assert_eq!(fields(&s), vec!["event.attendees[0].email"]);
    let s = c
        .query_free_busy(pb::QueryFreeBusyRequest {
            account_ids: vec![account.clone()],
            window: Some(pb::TimeWindow {
                start: good.end.as_ref().and_then(|t| match &t.value {
                    Some(pb::event_time::Value::Instant(i)) => Some(*i),
                    _ => None,
                }),
                end: good.start.as_ref().and_then(|t| match &t.value {
                    Some(pb::event_time::Value::Instant(i)) => Some(*i),
                    _ => None,
                }),
            }),
        })
        .await
        .expect_err("reversed window");
    assert_eq!(fields(&s), vec!["window.end"]);
    let s = c
        .connect_password_account(pb::ConnectPasswordAccountRequest {
            provider: pb::Provider::Sandbox as i32,
            username: "x@example.com".into(),
            password: String::new(),
            access_level: 0,
            server_url: String::new(),
        })
        .await
        .expect_err("no password, no access level");
    assert_eq!(fields(&s), vec!["password", "access_level"]);

    // Missing and wrong API keys.
    let mut anon = stack.client(None).await?;
    let s = anon
        .list_accounts(pb::ListAccountsRequest::default())
        .await
        .expect_err("no key");
    assert_eq!(s.code(), Code::Unauthenticated);
    let mut wrong = stack.client(Some("cbk_not-a-key")).await?;
    let s = wrong
        .list_accounts(pb::ListAccountsRequest::default())
        .await
        .expect_err("wrong key");
    assert_eq!(s.code(), Code::Unauthenticated);

    // Another tenant's account is NOT_FOUND, exactly like a missing one.
    let mut other = stack.client(Some(&other_key)).await?;
    let s = upsert_ok_or_status(&mut other, &account, &calendar, good.clone()).await;
    assert_eq!(s.code(), Code::NotFound);
    let s = other
        .get_account(pb::GetAccountRequest {
            account_id: account.clone(),
        })
        .await
        .expect_err("another tenant's account");
    assert_eq!(s.code(), Code::NotFound);
    assert!(other
        .list_accounts(pb::ListAccountsRequest::default())
        .await?
        .into_inner()
        .accounts
        .is_empty());

    // Wrong provider password: UNAUTHENTICATED, and no account stored.
    let s = c
        .connect_password_account(pb::ConnectPasswordAccountRequest {
            provider: pb::Provider::Sandbox as i32,
            username: "bad@example.com".into(),
            password: "not-the-password".into(),
            access_level: pb::AccessLevel::Read as i32,
            server_url: String::new(),
        })
        .await
        .expect_err("wrong password");
    assert_eq!(s.code(), Code::Unauthenticated);
    assert!(!s.message().contains("not-the-password"));

    // Nothing was stored: no event at the provider or in the mirror, one
    // account only.
    let mut sandbox = stack.sandbox().await?;
    let at_provider = sandbox
        .list_provider_events(pb::ListSandboxEventsRequest {
            username: "bad@example.com".into(),
            calendar_id: String::new(),
        })
        .await?
        .into_inner()
        .events;
    assert!(at_provider.is_empty(), "{at_provider:?}");
    let listed = c
        .list_events(pb::ListEventsRequest {
            account_id: account.clone(),
            calendar_id: calendar.clone(),
            window: Some(pb::TimeWindow {
                start: Some(calbridge::time::to_timestamp(
                    Utc::now() - chrono::Duration::days(20),
                )),
                end: Some(calbridge::time::to_timestamp(
                    Utc::now() + chrono::Duration::days(20),
                )),
            }),
            page_size: 0,
            page_token: String::new(),
        })
        .await?
        .into_inner()
        .events;
    assert!(listed.is_empty());
    assert_eq!(
        c.list_accounts(pb::ListAccountsRequest::default())
            .await?
            .into_inner()
            .accounts
            .len(),
        1
    );
    Ok(())
}

async fn upsert_ok_or_status(
    c: &mut SchedulerClient,
    account: &str,
    calendar: &str,
    e: pb::Event,
) -> tonic::Status {
    c.upsert_event(pb::UpsertEventRequest {
        account_id: account.into(),
        calendar_id: calendar.into(),
        client_event_id: "cross-tenant".into(),
        event: Some(e),
        expected_version: String::new(),
        hold_id: String::new(),
    })
    .await
    .expect_err("another tenant's account must not be writable")
}
