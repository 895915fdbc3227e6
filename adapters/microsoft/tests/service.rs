//! The Microsoft adapter's gRPC service against the fake Graph, both in
//! this process: sign-in, calendars, delta sync, writes, throttling. Every
//! Graph request and answer between them passes through Stoplight Prism
//! with Microsoft's OpenAPI description (`tests/src/prism.rs`, shared with
//! the end-to-end tests).

use std::time::{Duration, Instant};

use calbridge::pb;
use calbridge::time::to_timestamp;
use calbridge_fake_graph::Fault;
use chrono::{DateTime, Duration as Days, TimeZone, Utc};
use serde_json::{json, Value};
use tonic::Code;

mod common;

use calbridge_runtime::metrics::sample_value;
use common::{World, USER};

async fn start() -> World {
    common::start_in("W. Europe Standard Time").await
}

trait Sync {
    async fn sync_all(
        &mut self,
        req: pb::SyncEventsRequest,
    ) -> Result<Vec<pb::SyncEventsResponse>, tonic::Status>;
}

impl Sync for World {
    async fn sync_all(
        &mut self,
        req: pb::SyncEventsRequest,
    ) -> Result<Vec<pb::SyncEventsResponse>, tonic::Status> {
        let mut pages = Vec::new();
        let mut req = req;
        for _ in 0..100 {
            let page = self.client.sync_events(req.clone()).await?.into_inner();
            req.cursor = page.next_cursor.clone();
            let more = page.more;
            pages.push(page);
            if !more {
                return Ok(pages);
            }
        }
        panic!("a sync did not end");
    }
}

fn today() -> DateTime<Utc> {
    Utc.from_utc_datetime(&Utc::now().date_naive().and_hms_opt(0, 0, 0).unwrap())
}

fn window() -> pb::TimeWindow {
    pb::TimeWindow {
        start: Some(to_timestamp(today() - Days::days(1))),
        end: Some(to_timestamp(today() + Days::days(60))),
    }
}

fn sync_request(
    creds: &pb::ProviderCredentials,
    cal: &str,
    cursor: &str,
    page_size: u32,
) -> pb::SyncEventsRequest {
    pb::SyncEventsRequest {
        credentials: Some(creds.clone()),
        calendar_id: cal.into(),
        cursor: cursor.into(),
        window: Some(window()),
        page_size,
        busy_only: false,
    }
}

/// A Graph event body at `days` from today, `hour` o'clock in Berlin.
fn outside(title: &str, days: i64, hour: u32) -> Value {
    let day = (today() + Days::days(days)).date_naive();
    let t = |h: u32| json!({"dateTime": format!("{}T{h:02}:00:00", day.format("%Y-%m-%d")), "timeZone": "W. Europe Standard Time"});
    json!({"subject": title, "start": t(hour), "end": t(hour + 1)})
}

fn timed(title: &str, start: DateTime<Utc>, minutes: i64) -> pb::Event {
    pb::Event {
        title: title.into(),
        start: Some(calbridge::time::instant(start, "Europe/London")),
        end: Some(calbridge::time::instant(
            start + Days::minutes(minutes),
            "Europe/London",
        )),
        ..Default::default()
    }
}

fn upserted(pages: &[pb::SyncEventsResponse]) -> Vec<&pb::Event> {
    pages.iter().flat_map(|p| &p.upserted).collect()
}

#[tokio::test]
async fn sign_in_uses_pkce_single_use_codes_and_refresh_tokens_rotate() {
    let mut w = start().await;
    let code = w.consent_code(pb::AccessLevel::ReadWrite).await;
    let creds = w.exchange(&code, pb::AccessLevel::ReadWrite).await.unwrap();
    assert_eq!(creds.provider_account_id, USER);
    let Some(pb::provider_credentials::Secret::Oauth(tokens)) = &creds.secret else {
        panic!("{creds:?}")
    };
    assert!(!tokens.refresh_token.is_empty());
    let again = w
        .exchange(&code, pb::AccessLevel::ReadWrite)
        .await
        .unwrap_err();
    assert_eq!(
        again.code(),
        Code::Unauthenticated,
        "a redeemed code: {again:?}"
    );

    let refreshed = w
        .client
        .refresh_credentials(pb::RefreshCredentialsRequest {
            credentials: Some(creds.clone()),
        })
        .await
        .unwrap()
        .into_inner();
    let Some(pb::provider_credentials::Secret::Oauth(new)) = &refreshed.secret else {
        panic!()
    };
    assert_ne!(new.refresh_token, tokens.refresh_token, "rotated");
    assert_ne!(new.access_token, tokens.access_token);

    w.control.kill_grants(USER, 700082).await.unwrap();
    let dead = w
        .client
        .refresh_credentials(pb::RefreshCredentialsRequest {
            credentials: Some(refreshed),
        })
        .await
        .unwrap_err();
    assert_eq!(dead.code(), Code::Unauthenticated, "{dead:?}");
    assert!(dead.message().contains("AADSTS700082"), "{dead:?}");
    w.verify().await;
}

#[tokio::test]
async fn calendars_name_the_default_as_primary_and_read_only_ones_as_such() {
    let mut w = start().await;
    let creds = w.credentials(pb::AccessLevel::Read).await;
    let cals = w.calendars(&creds).await;
    assert_eq!(cals.len(), 2, "{cals:?}");
    let primary = cals.iter().find(|c| c.primary).unwrap();
    assert!(!primary.read_only);
    assert_eq!(
        primary.time_zone, "Europe/Berlin",
        "the mailbox's Windows zone, as IANA"
    );
    let holidays = cals.iter().find(|c| !c.primary).unwrap();
    assert!(holidays.read_only);
    assert_eq!(holidays.color, "#87d28e");
    w.verify().await;
}

#[tokio::test]
async fn delta_rounds_list_then_report_changes_removals_and_series_occurrences() {
    let mut w = start().await;
    let creds = w.credentials(pb::AccessLevel::Read).await;
    let cal = w.primary(&creds).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let e = w
            .control
            .insert_event(USER, &outside(&format!("Meeting {i}"), i + 1, 10))
            .await
            .unwrap();
        ids.push(e["id"].as_str().unwrap().to_string());
    }
    let mut series = outside("Standup", 2, 9);
    series["recurrence"] = json!({"pattern": {"type": "daily", "interval": 1},
        "range": {"type": "numbered", "startDate": (today() + Days::days(2)).format("%Y-%m-%d").to_string(), "numberOfOccurrences": 3}});
    let master = w.control.insert_event(USER, &series).await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    let pages = w.sync_all(sync_request(&creds, &cal, "", 2)).await.unwrap();
    assert!(
        pages.iter().all(|p| p.full_listing && p.deleted.is_empty()),
        "{pages:?}"
    );
    assert!(pages.iter().all(|p| p.upserted.len() <= 2));
    let listed = upserted(&pages);
    assert_eq!(listed.len(), 6, "3 singles and 3 occurrences: {listed:?}");
    let occurrences: Vec<_> = listed
        .iter()
        .filter(|e| {
            e.recurrence_link
                .as_ref()
                .is_some_and(|l| l.series_event_id == master)
        })
        .collect();
    assert_eq!(occurrences.len(), 3);
    let first = listed
        .iter()
        .find(|e| e.provider_event_id == ids[0])
        .unwrap();
    assert_eq!(first.start.as_ref().unwrap().time_zone, "Europe/Berlin");
    assert!(first.version.starts_with("W/\""), "{first:?}");
    let cursor = pages.last().unwrap().next_cursor.clone();

    w.control
        .patch_event(USER, &ids[1], &json!({"subject": "Moved"}))
        .await
        .unwrap();
    w.control.delete_event(USER, &ids[2]).await.unwrap();
    let changes = w
        .sync_all(sync_request(&creds, &cal, &cursor, 0))
        .await
        .unwrap();
    assert!(changes.iter().all(|p| !p.full_listing));
    let changed = upserted(&changes);
    assert_eq!(changed.len(), 1, "{changes:?}");
    assert_eq!(changed[0].title, "Moved");
    assert!(
        changes.iter().any(|p| p.deleted.contains(&ids[2])),
        "{changes:?}"
    );

    let idle = w
        .sync_all(sync_request(
            &creds,
            &cal,
            &changes.last().unwrap().next_cursor,
            0,
        ))
        .await
        .unwrap();
    assert!(
        idle.iter()
            .all(|p| p.upserted.is_empty() && p.deleted.is_empty()),
        "{idle:?}"
    );
    w.verify().await;
}

#[tokio::test]
async fn an_expired_delta_token_is_out_of_range_and_a_moved_window_lists_again() {
    let mut w = start().await;
    let creds = w.credentials(pb::AccessLevel::Read).await;
    let cal = w.primary(&creds).await;
    w.control
        .insert_event(USER, &outside("Kept", 3, 11))
        .await
        .unwrap();
    let pages = w.sync_all(sync_request(&creds, &cal, "", 0)).await.unwrap();
    let cursor = pages.last().unwrap().next_cursor.clone();

    let mut moved = sync_request(&creds, &cal, &cursor, 0);
    moved.window = Some(pb::TimeWindow {
        start: Some(to_timestamp(today())),
        end: Some(to_timestamp(today() + Days::days(61))),
    });
    let relisted = w.sync_all(moved).await.unwrap();
    assert!(relisted.iter().all(|p| p.full_listing), "{relisted:?}");
    assert_eq!(upserted(&relisted).len(), 1);

    w.control.expire_delta_tokens(USER).await.unwrap();
    let expired = w
        .client
        .sync_events(sync_request(&creds, &cal, &cursor, 0))
        .await
        .unwrap_err();
    assert_eq!(expired.code(), Code::OutOfRange, "{expired:?}");
    let garbage = w
        .client
        .sync_events(sync_request(&creds, &cal, "ms1.garbage", 0))
        .await
        .unwrap_err();
    assert_eq!(garbage.code(), Code::OutOfRange);
    w.verify().await;
}

#[tokio::test]
async fn a_replayed_create_reports_the_existing_event_a_stale_version_aborts_and_series_are_written(
) {
    let mut w = start().await;
    let creds = w.credentials(pb::AccessLevel::ReadWrite).await;
    let cal = w.primary(&creds).await;
    let mut event = timed("Interview", today() + Days::days(3) + Days::hours(14), 45);
    event.client_event_id = "interview-17".into();
    let create = pb::ProviderCreateEventRequest {
        credentials: Some(creds.clone()),
        calendar_id: cal.clone(),
        event: Some(event),
        idempotency_key: "key-interview-17".into(),
    };
    let first = w
        .client
        .create_event(create.clone())
        .await
        .unwrap()
        .into_inner();
    assert!(!first.already_existed);
    let made = first.event.unwrap();
    assert_eq!(made.client_event_id, "interview-17");
    let second = w.client.create_event(create).await.unwrap().into_inner();
    assert!(second.already_existed);
    let again = second.event.unwrap();
    assert_eq!(
        (again.provider_event_id.as_str(), again.version.as_str()),
        (made.provider_event_id.as_str(), made.version.as_str())
    );
    assert_eq!(w.control.events(USER).await.unwrap().len(), 1);
    let stored = &w.control.events(USER).await.unwrap()[0];
    assert_eq!(stored["originalStartTimeZone"], "Europe/London");

    let update = |title: &str, version: &str| pb::ProviderUpdateEventRequest {
        credentials: Some(creds.clone()),
        calendar_id: cal.clone(),
        provider_event_id: made.provider_event_id.clone(),
        event: Some(timed(title, today() + Days::days(3) + Days::hours(15), 30)),
        expected_version: version.into(),
    };
    let moved = w
        .client
        .update_event(update("Moved", &made.version))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(moved.version, made.version);
    let stale = w
        .client
        .update_event(update("Stale", &made.version))
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::Aborted);
    let current = stale
        .metadata()
        .get(calbridge::metadata::CURRENT_VERSION)
        .unwrap()
        .to_str()
        .unwrap();
    assert_eq!(current, moved.version);

    let delete = |id: &str, version: &str| pb::ProviderDeleteEventRequest {
        credentials: Some(creds.clone()),
        calendar_id: cal.clone(),
        provider_event_id: id.into(),
        expected_version: version.into(),
    };
    let stale = w
        .client
        .delete_event(delete(&made.provider_event_id, &made.version))
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::Aborted);
    w.client
        .delete_event(delete(&made.provider_event_id, &moved.version))
        .await
        .unwrap();
    let gone = w
        .client
        .delete_event(delete(&made.provider_event_id, ""))
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);

    let mut series = timed("Series", today() + Days::days(2) + Days::hours(8), 15);
    series.recurrence = vec!["RRULE:FREQ=DAILY;COUNT=3".into()];
    let master = w
        .client
        .create_event(pb::ProviderCreateEventRequest {
            credentials: Some(creds.clone()),
            calendar_id: cal.clone(),
            event: Some(series),
            idempotency_key: "series".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .event
        .unwrap();
    assert_eq!(
        master.recurrence,
        vec!["RRULE:FREQ=DAILY;INTERVAL=1;COUNT=3".to_string()]
    );
    let listed = w.sync_all(sync_request(&creds, &cal, "", 0)).await.unwrap();
    let instances: Vec<_> = upserted(&listed)
        .into_iter()
        .filter(|e| {
            e.recurrence_link
                .as_ref()
                .is_some_and(|l| l.series_event_id == master.provider_event_id)
        })
        .collect();
    assert_eq!(instances.len(), 3, "{listed:?}");
    let mut hourly = timed("Hourly", today() + Days::days(2), 15);
    hourly.recurrence = vec!["RRULE:FREQ=HOURLY;COUNT=3".into()];
    let refused = w
        .client
        .create_event(pb::ProviderCreateEventRequest {
            credentials: Some(creds.clone()),
            calendar_id: cal.clone(),
            event: Some(hourly),
            idempotency_key: "hourly".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Code::InvalidArgument,
        "Graph cannot express it"
    );
    w.verify().await;
}

#[tokio::test]
async fn throttled_requests_are_measured_by_operation_and_status_naming_nobody() {
    // First of all: instruments bind to the global meter provider once.
    let metrics = calbridge_runtime::metrics::Metrics::install("test", None);
    let mut w = start().await;
    let creds = w.credentials(pb::AccessLevel::Read).await;
    w.control
        .inject(&Fault {
            status: 429,
            retry_after: Some(1),
            method: None,
            count: 1,
        })
        .await
        .unwrap();
    assert_eq!(w.calendars(&creds).await.len(), 2);

    let text = metrics.render();
    let requests = "http_client_request_duration_seconds_count";
    let list = [
        "calbridge_provider=\"microsoft\"",
        "calbridge_operation=\"calendars.list\"",
        "http_request_method=\"GET\"",
    ];
    assert_eq!(
        sample_value(
            &text,
            requests,
            &[&list[..], &["http_response_status_code=\"429\""]].concat()
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample_value(
            &text,
            requests,
            &[&list[..], &["http_response_status_code=\"200\""]].concat()
        ),
        Some(1.0),
        "{text}"
    );
    // The code exchange went through the same instruments.
    assert_eq!(
        sample_value(
            &text,
            requests,
            &[
                "calbridge_provider=\"microsoft\"",
                "calbridge_operation=\"oauth.token.code\"",
                "http_response_status_code=\"200\"",
            ]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample_value(
            &text,
            "calbridge_provider_retry_after_seconds_count",
            &["calbridge_provider=\"microsoft\""]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample_value(
            &text,
            "calbridge_provider_throttle_wait_seconds_sum",
            &[
                "calbridge_provider=\"microsoft\"",
                "calbridge_wait_reason=\"retry_after\""
            ]
        ),
        Some(1.0),
        "{text}"
    );

    // No label names the user, a path, a query, an address or a token.
    let Some(pb::provider_credentials::Secret::Oauth(tokens)) = &creds.secret else {
        panic!("no tokens")
    };
    for secret in [&tokens.access_token, &tokens.refresh_token] {
        assert!(!text.contains(secret.as_str()), "a token in:\n{text}");
    }
    assert!(!text.contains(USER), "{text}");
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let labels = line.split_once('{').and_then(|(_, l)| l.rsplit_once('}'));
        if let Some((labels, _)) = labels {
            assert!(
                !labels.contains('/') && !labels.contains('?') && !labels.contains("127.0.0.1"),
                "{line}"
            );
        }
    }
    w.verify().await;
}

#[tokio::test]
async fn throttling_is_waited_out_exactly_as_retry_after_says_and_never_retried_early() {
    let mut w = start().await;
    let creds = w.credentials(pb::AccessLevel::Read).await;
    w.control
        .inject(&Fault {
            status: 429,
            retry_after: Some(1),
            method: None,
            count: 1,
        })
        .await
        .unwrap();
    let began = Instant::now();
    assert_eq!(w.calendars(&creds).await.len(), 2);
    assert!(
        began.elapsed() >= Duration::from_secs(1),
        "{:?}",
        began.elapsed()
    );
    w.control
        .inject(&Fault {
            status: 503,
            retry_after: None,
            method: None,
            count: 2,
        })
        .await
        .unwrap();
    assert_eq!(
        w.calendars(&creds).await.len(),
        2,
        "outages are retried with backoff"
    );
    let (early, _) = w.control.stats().await.unwrap();
    assert_eq!(early, 0, "no request came before Retry-After had passed");

    w.control
        .inject(&Fault {
            status: 429,
            retry_after: Some(120),
            method: None,
            count: 1,
        })
        .await
        .unwrap();
    let over = w
        .client
        .list_calendars(pb::ListProviderCalendarsRequest {
            credentials: Some(creds),
        })
        .await
        .unwrap_err();
    assert_eq!(
        over.code(),
        Code::ResourceExhausted,
        "a wait beyond the budget goes to the caller: {over:?}"
    );
    w.verify().await;
}

#[tokio::test]
async fn busy_only_pages_and_describe_say_what_this_adapter_does() {
    let mut w = start().await;
    let caps = w
        .client
        .describe(pb::DescribeRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(caps.provider(), pb::Provider::Microsoft);
    assert!(caps.oauth && caps.incremental_sync);
    assert!(!caps.push && caps.native_free_busy && caps.recurrence_writes);
    let creds = w.credentials(pb::AccessLevel::FreeBusy).await;
    let cal = w.primary(&creds).await;
    let mut secret = outside("Salary talk", 4, 15);
    secret["body"] = json!({"contentType": "text", "content": "private"});
    secret["location"] = json!({"displayName": "Room 4"});
    w.control.insert_event(USER, &secret).await.unwrap();
    let mut req = sync_request(&creds, &cal, "", 0);
    req.busy_only = true;
    let pages = w.sync_all(req).await.unwrap();
    let e = upserted(&pages)[0];
    assert!(
        e.title.is_empty() && e.description.is_empty() && e.location.is_empty(),
        "{e:?}"
    );
    let watch = w
        .client
        .start_watch(pb::StartWatchRequest::default())
        .await
        .unwrap_err();
    assert_eq!(watch.code(), Code::Unimplemented);
    w.verify().await;
}

#[tokio::test]
async fn one_occurrence_is_edited_or_deleted_by_its_own_id() {
    let mut w = start().await;
    let creds = w.credentials(pb::AccessLevel::ReadWrite).await;
    let cal = w.primary(&creds).await;
    let mut series = outside("Standup", 2, 9);
    series["recurrence"] = json!({"pattern": {"type": "daily", "interval": 1},
        "range": {"type": "numbered", "startDate": (today() + Days::days(2)).format("%Y-%m-%d").to_string(), "numberOfOccurrences": 3}});
    let master = w.control.insert_event(USER, &series).await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let pages = w.sync_all(sync_request(&creds, &cal, "", 0)).await.unwrap();
    let mut occurrences: Vec<pb::Event> = upserted(&pages).into_iter().cloned().collect();
    occurrences.sort_by_key(|e| format!("{:?}", e.start));
    assert_eq!(occurrences.len(), 3);
    let cursor = pages.last().unwrap().next_cursor.clone();

    let second = &occurrences[1];
    let moved = w
        .client
        .update_event(pb::ProviderUpdateEventRequest {
            credentials: Some(creds.clone()),
            calendar_id: cal.clone(),
            provider_event_id: second.provider_event_id.clone(),
            event: Some(timed(
                "Standup (late)",
                today() + Days::days(3) + Days::hours(10),
                15,
            )),
            expected_version: second.version.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(moved.provider_event_id, second.provider_event_id);
    assert_eq!(
        moved.recurrence_link.as_ref().unwrap().series_event_id,
        master
    );
    let third = &occurrences[2];
    w.client
        .delete_event(pb::ProviderDeleteEventRequest {
            credentials: Some(creds.clone()),
            calendar_id: cal.clone(),
            provider_event_id: third.provider_event_id.clone(),
            expected_version: String::new(),
        })
        .await
        .unwrap();

    let changes = w
        .sync_all(sync_request(&creds, &cal, &cursor, 0))
        .await
        .unwrap();
    let changed = upserted(&changes);
    assert!(changed.iter().any(|e| e.provider_event_id == second.provider_event_id && e.title == "Standup (late)"), "{changes:?}");
    assert!(
        changes
            .iter()
            .any(|p| p.deleted.contains(&third.provider_event_id)),
        "{changes:?}"
    );
    let gone = w
        .client
        .delete_event(pb::ProviderDeleteEventRequest {
            credentials: Some(creds.clone()),
            calendar_id: cal.clone(),
            provider_event_id: third.provider_event_id.clone(),
            expected_version: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    w.verify().await;
}

#[tokio::test]
async fn a_monthly_series_on_the_last_friday_is_written_as_a_relative_pattern() {
    use chrono::Datelike as _;
    let mut w = start().await;
    let creds = w.credentials(pb::AccessLevel::ReadWrite).await;
    let cal = w.primary(&creds).await;
    let mut series = timed("Review", today() + Days::days(1) + Days::hours(15), 60);
    series.recurrence = vec!["RRULE:FREQ=MONTHLY;BYDAY=-1FR;COUNT=1".into()];
    let master = w
        .client
        .create_event(pb::ProviderCreateEventRequest {
            credentials: Some(creds.clone()),
            calendar_id: cal.clone(),
            event: Some(series),
            idempotency_key: "review".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .event
        .unwrap();
    assert_eq!(
        master.recurrence,
        vec!["RRULE:FREQ=MONTHLY;INTERVAL=1;BYDAY=-1FR;COUNT=1".to_string()]
    );
    let stored = w.control.events(USER).await.unwrap();
    assert_eq!(
        stored[0]["recurrence"]["pattern"]["type"],
        "relativeMonthly"
    );
    let pages = w.sync_all(sync_request(&creds, &cal, "", 0)).await.unwrap();
    let listed = upserted(&pages);
    assert_eq!(listed.len(), 1, "{pages:?}");
    let Some(pb::event_time::Value::Instant(t)) =
        listed[0].start.as_ref().and_then(|s| s.value.clone())
    else {
        panic!("{listed:?}")
    };
    let day = calbridge::time::from_timestamp(&t)
        .unwrap()
        .with_timezone(&chrono_tz::Europe::London)
        .date_naive();
    assert_eq!(day.weekday(), chrono::Weekday::Fri);
    assert!(
        (day + Days::days(7)).month() != day.month(),
        "the last Friday: {day}"
    );
    w.verify().await;
}
