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
        provider_event_id: String::new(),
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
        provider_event_id: String::new(),
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

/// A status's size on the wire: its message and every metadata entry
/// (error details included).
fn status_bytes(s: &tonic::Status) -> usize {
    s.message().len()
        + s.details().len()
        + s.metadata()
            .iter()
            .map(|kv| match kv {
                tonic::metadata::KeyAndValueRef::Ascii(k, v) => k.as_str().len() + v.len(),
                tonic::metadata::KeyAndValueRef::Binary(k, v) => {
                    k.as_str().len() + v.as_encoded_bytes().len()
                }
            })
            .sum::<usize>()
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_and_deceptive_input_is_refused_near_linearly_without_being_echoed() -> Result<()>
{
    let stack = Stack::start().await?;
    let (_, key) = stack.tenant("acme").await?;
    let mut c = stack.client(Some(&key)).await?;
    let (account, calendar) = stack
        .sandbox_account(&mut c, "huge@example.com", "pw-huge-1")
        .await?;
    let start = Utc::now() + chrono::Duration::days(3);
    let good = timed_event("Valid", start, 30);

    // 20,000 recurrence lines (this once wedged the sandbox for every
    // tenant), a megabyte UID, a megabyte organizer name.
    let mut e = good.clone();
    e.recurrence = vec!["EXDATE:20261201T090000Z".to_string(); 20_000];
    e.recurrence.insert(0, "RRULE:FREQ=DAILY".into());
    let s = upsert(&mut c, &account, &calendar, "r1", e.clone()).await;
    assert_eq!(s.code(), Code::InvalidArgument);
    assert_eq!(fields(&s), vec!["event.recurrence"]);
    // The adapter does not trust the scheduler to have checked.
    let mut adapter = pb::calendar_adapter_client::CalendarAdapterClient::new(
        calbridge_e2e::channel(&stack.sandbox.url()).await?,
    );
    let creds = adapter
        .check_password(pb::CheckPasswordRequest {
            server_url: String::new(),
            username: "direct@example.com".into(),
            password: "pw".into(),
            access_level: pb::AccessLevel::ReadWrite as i32,
        })
        .await?
        .into_inner();
    let s = adapter
        .create_event(pb::ProviderCreateEventRequest {
            credentials: Some(creds),
            calendar_id: "direct@example.com/primary".into(),
            event: Some(e),
            idempotency_key: "k".into(),
        })
        .await
        .expect_err("oversize recurrence at the adapter");
    assert_eq!(s.code(), Code::InvalidArgument);
    assert_eq!(fields(&s), vec!["event.recurrence"]);
    let mut e = good.clone();
    e.ical_uid = "u".repeat(1 << 20);
    e.organizer = Some(pb::Organizer {
        email: "boss@example.com".into(),
        display_name: "n".repeat(1 << 20),
    });
    let s = upsert(&mut c, &account, &calendar, "r2", e).await;
    assert_eq!(
        fields(&s),
        vec!["event.ical_uid", "event.organizer.display_name"]
    );
    assert!(status_bytes(&s) < 4096, "{} bytes", status_bytes(&s));

    // Times outside years 1..=9999.
    let mut e = good.clone();
    e.start = Some(pb::EventTime {
        value: Some(pb::event_time::Value::Instant(prost_types::Timestamp {
            seconds: -62_135_596_801,
            nanos: 0,
        })),
        time_zone: String::new(),
    });
    let s = upsert(&mut c, &account, &calendar, "r3", e).await;
    assert_eq!(fields(&s), vec!["event.start"]);
    let day = |d: &str| pb::EventTime {
        value: Some(pb::event_time::Value::Date(d.into())),
        time_zone: String::new(),
    };
    let mut e = good.clone();
    e.start = Some(day("9999-12-31"));
    e.end = Some(day("10000-01-01"));
    let s = upsert(&mut c, &account, &calendar, "r4", e).await;
    assert_eq!(fields(&s), vec!["event.end"]);

    // Ids that display as something else, or split a log line.
    for id in [
        "acc\u{202E}fdp.exe",
        "a\u{2066}b\u{2069}",
        "\u{200F}acc",
        "a\u{2028}b",
    ] {
        let s = c
            .get_account(pb::GetAccountRequest {
                account_id: id.into(),
            })
            .await
            .expect_err("deceptive id");
        assert_eq!(fields(&s), vec!["account_id"], "{id:?}");
        let s = upsert(&mut c, &account, &calendar, id, good.clone()).await;
        assert_eq!(fields(&s), vec!["client_event_id"], "{id:?}");
    }

    // A megabyte id is never echoed, whichever call it goes to.
    let huge = "i".repeat(1 << 20);
    let s = c
        .begin_authorization(pb::BeginAuthorizationRequest {
            provider: pb::Provider::Google as i32,
            access_level: pb::AccessLevel::Read as i32,
            redirect_uri: "https://platform.example/done".into(),
            login_hint: String::new(),
            account_id: huge.clone(),
        })
        .await
        .expect_err("huge account id");
    assert_eq!(fields(&s), vec!["account_id"]);
    assert!(status_bytes(&s) < 4096, "{} bytes", status_bytes(&s));
    let s = stack
        .admin()
        .await?
        .revoke_api_key(pb::RevokeApiKeyRequest {
            key_id: huge.clone(),
        })
        .await
        .expect_err("huge key id");
    assert_eq!(fields(&s), vec!["key_id"]);
    assert!(status_bytes(&s) < 4096, "{} bytes", status_bytes(&s));
    let s = c
        .list_changes(pb::ListChangesRequest {
            cursor: huge.clone(),
            page_size: 0,
        })
        .await
        .expect_err("huge cursor");
    assert_eq!(fields(&s), vec!["cursor"]);
    assert!(status_bytes(&s) < 4096, "{} bytes", status_bytes(&s));

    // 200,000 inline date overrides (three such requests once blocked the
    // API for a minute) and repeated dates are refused naming the field.
    let override_on = |d: chrono::NaiveDate| pb::DateOverride {
        date: d.format("%Y-%m-%d").to_string(),
        ranges: vec![],
    };
    let day0 = chrono::NaiveDate::from_ymd_opt(1500, 1, 1).unwrap();
    let hours = pb::WorkingHours {
        time_zone: "Europe/London".into(),
        weekly: vec![],
        overrides: (0..200_000)
            .map(|i| override_on(day0 + chrono::Duration::days(i)))
            .collect(),
    };
    let period = pb::TimeWindow {
        start: Some(calbridge::time::to_timestamp(start)),
        end: Some(calbridge::time::to_timestamp(
            start + chrono::Duration::days(1),
        )),
    };
    let query = pb::QueryAvailabilityRequest {
        groups: vec![pb::ParticipantGroup {
            members: vec![pb::AvailabilityMember {
                account_id: account.clone(),
                working_hours: Some(hours.clone()),
                ..Default::default()
            }],
            required: 0,
        }],
        duration_minutes: 30,
        periods: vec![period],
        ..Default::default()
    };
    let s = c
        .query_availability(query)
        .await
        .expect_err("200,000 overrides");
    assert_eq!(
        fields(&s),
        vec!["groups[0].members[0].working_hours.overrides"]
    );
    let mut twice = hours.clone();
    twice.overrides.truncate(3);
    twice.overrides.push(twice.overrides[1].clone());
    let s = c
        .put_working_hours(pb::PutWorkingHoursRequest {
            working_hours_id: "twice".into(),
            hours: Some(twice),
        })
        .await
        .expect_err("a repeated date");
    assert_eq!(fields(&s), vec!["hours.overrides[3].date"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn tenant_quotas_answer_resource_exhausted_with_retry_info() -> Result<()> {
    let config = tempfile::NamedTempFile::new()?;
    std::fs::write(
        config.path(),
        "[quotas]\nmax_accounts_per_tenant = 1\nmax_calendars_per_account = 2\nrequests_per_second = 5\nrequest_burst = 20\n",
    )?;
    let path = config.path().display().to_string();
    let stack = Stack::start_with_scheduler_flags(&["--config".into(), path]).await?;

    // Calendars: the sandbox user has three; two are kept, one counted.
    let (_, key) = stack.tenant("quota").await?;
    let mut c = stack.client(Some(&key)).await?;
    let connect = |user: &str| pb::ConnectPasswordAccountRequest {
        provider: pb::Provider::Sandbox as i32,
        server_url: String::new(),
        username: user.into(),
        password: "pw-quota-1".into(),
        access_level: pb::AccessLevel::ReadWrite as i32,
    };
    let a = c
        .connect_password_account(connect("q1@example.com"))
        .await?
        .into_inner();
    assert_eq!(a.calendars_omitted, 1);
    let kept: Vec<String> = c
        .list_calendars(pb::ListCalendarsRequest {
            account_id: a.account_id.clone(),
        })
        .await?
        .into_inner()
        .calendars
        .into_iter()
        .map(|c| c.calendar_id)
        .collect();
    assert_eq!(kept, vec!["q1@example.com/primary", "q1@example.com/team"]);

    // Accounts: a second one is refused; reconnecting the first is not.
    let s = c
        .connect_password_account(connect("q2@example.com"))
        .await
        .expect_err("over the account quota");
    assert_eq!(s.code(), Code::ResourceExhausted);
    assert!(s.get_error_details().retry_info().is_some());
    assert!(
        s.message().contains("max_accounts_per_tenant"),
        "{}",
        s.message()
    );
    let again = c
        .connect_password_account(connect("q1@example.com"))
        .await?
        .into_inner();
    assert_eq!(again.account_id, a.account_id);

    // Requests per second: past its burst, a tenant is told how long to
    // wait; another tenant is served meanwhile; the first is served again
    // once its bucket refills.
    let (_, other_key) = stack.tenant("other").await?;
    let mut other = stack.client(Some(&other_key)).await?;
    let mut refused = None;
    for _ in 0..100 {
        if let Err(s) = c.get_change_cursor(pb::GetChangeCursorRequest {}).await {
            refused = Some(s);
            break;
        }
    }
    let s = refused.expect("the burst of 20 is used up within 100 requests");
    assert_eq!(s.code(), Code::ResourceExhausted);
    let delay = s
        .get_error_details()
        .retry_info()
        .and_then(|r| r.retry_delay)
        .expect("a retry delay");
    assert!(
        delay > std::time::Duration::ZERO && delay <= std::time::Duration::from_millis(200),
        "{delay:?}"
    );
    other
        .get_change_cursor(pb::GetChangeCursorRequest {})
        .await?;
    calbridge_e2e::eventually(
        std::time::Duration::from_secs(5),
        "the tenant served again",
        || {
            let mut c = c.clone();
            async move {
                c.get_change_cursor(pb::GetChangeCursorRequest {})
                    .await
                    .ok()
            }
        },
    )
    .await?;
    Ok(())
}
