//! The Microsoft adapter's native free/busy (QueryFreeBusy through Graph's
//! getSchedule) against the fake Graph: a FREE_BUSY sign-in, busy,
//! tentative and out-of-office times and series occurrences, windows
//! longer than Graph's 62 days (in one `$batch`), refusals with a clear
//! status, throttling; and never a request for event content. Through
//! Prism, as the adapter's other tests (`common`).

use std::time::{Duration, Instant};

use calbridge::pb;
use calbridge::time::{from_timestamp, to_timestamp};
use calbridge_fake_graph::Fault;
use chrono::{DateTime, Duration as Span, TimeZone, Utc};
use serde_json::{json, Value};
use tonic::Code;

mod common;

use common::{World, USER};

async fn start() -> World {
    common::start_in("UTC").await
}

trait FreeBusy {
    async fn free_busy(
        &mut self,
        creds: &pb::ProviderCredentials,
        calendar_ids: &[&str],
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Vec<pb::BusyInterval>, tonic::Status>;
    async fn requests(&self) -> Vec<String>;
}

impl FreeBusy for World {
    async fn free_busy(
        &mut self,
        creds: &pb::ProviderCredentials,
        calendar_ids: &[&str],
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Vec<pb::BusyInterval>, tonic::Status> {
        self.client
            .query_free_busy(pb::ProviderFreeBusyRequest {
                credentials: Some(creds.clone()),
                calendar_ids: calendar_ids.iter().map(|c| c.to_string()).collect(),
                window: Some(pb::TimeWindow {
                    start: Some(to_timestamp(start)),
                    end: Some(to_timestamp(end)),
                }),
            })
            .await
            .map(|r| r.into_inner().busy)
    }

    /// Graph requests served so far (`METHOD route`).
    async fn requests(&self) -> Vec<String> {
        self.control.stats().await.unwrap().1
    }
}

/// March 2026, UTC.
fn at(day: u32, hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, day, hour, 0, 0).unwrap()
}

fn graph_time(t: DateTime<Utc>) -> Value {
    json!({"dateTime": t.format("%Y-%m-%dT%H:%M:%S").to_string(), "timeZone": "UTC"})
}

/// An Outlook event of `minutes` from `start`, shown as `show_as`.
fn outlook(subject: &str, start: DateTime<Utc>, minutes: i64, show_as: &str) -> Value {
    json!({
        "subject": subject,
        "location": {"displayName": "Room 4"},
        "body": {"contentType": "text", "content": "private notes"},
        "start": graph_time(start),
        "end": graph_time(start + Span::minutes(minutes)),
        "showAs": show_as,
    })
}

/// A daily series of `count` from `start`.
fn daily(subject: &str, start: DateTime<Utc>, minutes: i64, count: u32) -> Value {
    let mut e = outlook(subject, start, minutes, "busy");
    e["recurrence"] = json!({
        "pattern": {"type": "daily", "interval": 1},
        "range": {"type": "numbered", "startDate": start.format("%Y-%m-%d").to_string(), "numberOfOccurrences": count},
    });
    e
}

/// The intervals as (start, end, status).
fn spans(busy: &[pb::BusyInterval]) -> Vec<(DateTime<Utc>, DateTime<Utc>, pb::BusyStatus)> {
    busy.iter()
        .map(|b| {
            (
                from_timestamp(b.start.as_ref().unwrap()).unwrap(),
                from_timestamp(b.end.as_ref().unwrap()).unwrap(),
                b.status(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_free_busy_account_reads_busy_times_through_getschedule_and_never_event_content() {
    let mut w = start().await;
    let caps = w
        .client
        .describe(pb::DescribeRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(caps.native_free_busy, "{caps:?}");
    let creds = w.credentials(pb::AccessLevel::FreeBusy).await;
    let Some(pb::provider_credentials::Secret::Oauth(tokens)) = &creds.secret else {
        panic!("{creds:?}")
    };
    assert!(
        tokens.scopes.iter().any(|s| s.ends_with("Calendars.Read"))
            && !tokens.scopes.iter().any(|s| s.ends_with("ReadWrite")),
        "a FREE_BUSY grant reads calendars, no more: {:?}",
        tokens.scopes
    );
    let cal = w.primary(&creds).await;
    // Outlook publishes free/busy from the default calendar only: that is
    // the one calendar a FREE_BUSY account lists (the fake's users also
    // have a holiday calendar).
    let listed = w.calendars(&creds).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(listed[0].primary);
    for e in [
        outlook("Salary talk", at(2, 9), 60, "busy"),
        outlook("Maybe lunch", at(2, 12), 60, "tentative"),
        outlook("Holiday", at(3, 0), 24 * 60, "oof"),
        outlook("From home", at(4, 8), 8 * 60, "workingElsewhere"),
        outlook("Focus", at(4, 17), 60, "free"),
        daily("Standup", at(5, 9), 15, 3),
    ] {
        w.control.insert_event(USER, &e).await.unwrap();
    }
    let before = w.requests().await.len();

    let busy = w
        .free_busy(&creds, &[&cal], at(1, 0), at(10, 0))
        .await
        .unwrap();
    use pb::BusyStatus::*;
    assert_eq!(
        spans(&busy),
        vec![
            (at(2, 9), at(2, 10), Busy),
            (at(2, 12), at(2, 13), Tentative),
            (at(3, 0), at(4, 0), OutOfOffice),
            (at(5, 9), at(5, 9) + Span::minutes(15), Busy),
            (at(6, 9), at(6, 9) + Span::minutes(15), Busy),
            (at(7, 9), at(7, 9) + Span::minutes(15), Busy),
        ],
        "free and working-elsewhere time blocks nothing; each occurrence is busy"
    );
    assert!(busy.iter().all(|b| b.calendar_id == cal));

    let asked = w.requests().await.split_off(before);
    assert_eq!(
        asked,
        vec!["GET /me/calendar", "POST /me/calendar/getSchedule"],
        "the default calendar and its schedule, nothing else"
    );
    let all = w.requests().await;
    assert!(
        !all.iter()
            .any(|r| r.contains("events") || r.contains("calendarView")),
        "no event was ever read: {all:?}"
    );
    w.verify().await;
}

#[tokio::test]
async fn a_window_longer_than_62_days_is_asked_in_shorter_ranges_and_joined() {
    let mut w = start().await;
    let creds = w.credentials(pb::AccessLevel::FreeBusy).await;
    let cal = w.primary(&creds).await;
    let start = at(1, 0);
    let end = start + Span::days(200);
    // The first range ends 61 days in: a meeting across that boundary is
    // seen in two ranges and must come back whole.
    let boundary = start + Span::days(61);
    let across = boundary - Span::hours(1);
    let (early, middle, late) = (
        start + Span::days(10),
        start + Span::days(100),
        end - Span::days(2),
    );
    for (s, minutes) in [(early, 30), (across, 120), (middle, 45), (late, 60)] {
        w.control
            .insert_event(USER, &outlook("Meeting", s, minutes, "busy"))
            .await
            .unwrap();
    }
    let before = w.requests().await.len();
    let busy = w.free_busy(&creds, &[&cal], start, end).await.unwrap();
    use pb::BusyStatus::Busy;
    assert_eq!(
        spans(&busy),
        vec![
            (early, early + Span::minutes(30), Busy),
            (across, across + Span::hours(2), Busy),
            (middle, middle + Span::minutes(45), Busy),
            (late, late + Span::hours(1), Busy),
        ]
    );
    let sent = w.requests().await.split_off(before);
    let calls = sent
        .iter()
        .filter(|r| *r == "POST /me/calendar/getSchedule")
        .count();
    assert_eq!(calls, 4, "200 days in ranges of at most 61");
    let batches = sent.iter().filter(|r| *r == "POST /$batch").count();
    assert_eq!(batches, 1, "the four ranges go in one round trip: {sent:?}");

    // Throttled inside the batch: the throttled ranges go again in a
    // second batch, after the Retry-After and not before.
    w.control
        .inject(&Fault {
            status: 429,
            retry_after: Some(1),
            method: Some("POST".into()),
            count: 1,
        })
        .await
        .unwrap();
    let before = w.requests().await.len();
    let started = Instant::now();
    let again = w.free_busy(&creds, &[&cal], start, end).await.unwrap();
    assert_eq!(spans(&again), spans(&busy));
    assert!(started.elapsed() >= Duration::from_secs(1));
    let sent = w.requests().await.split_off(before);
    assert_eq!(
        sent.iter().filter(|r| *r == "POST /$batch").count(),
        2,
        "{sent:?}"
    );
    // The three ranges after the throttled one in the first batch met the
    // mailbox's throttle (they were sent before any Retry-After was
    // known); the second batch waited, so none of its four came early.
    assert_eq!(w.control.stats().await.unwrap().0, 3);
    w.verify().await;
}

#[tokio::test]
async fn an_edited_occurrence_keeps_its_own_status_and_a_deleted_one_frees_its_time() {
    let mut w = start().await;
    let reader = w.credentials(pb::AccessLevel::Read).await;
    let cal = w.primary(&reader).await;
    w.control
        .insert_event(USER, &daily("Standup", at(2, 9), 30, 4))
        .await
        .unwrap();
    let mut request = pb::SyncEventsRequest {
        credentials: Some(reader.clone()),
        calendar_id: cal.clone(),
        cursor: String::new(),
        window: Some(pb::TimeWindow {
            start: Some(to_timestamp(at(1, 0))),
            end: Some(to_timestamp(at(10, 0))),
        }),
        page_size: 100,
        busy_only: false,
    };
    let mut listed = Vec::new();
    for _ in 0..50 {
        let page = w
            .client
            .sync_events(request.clone())
            .await
            .unwrap()
            .into_inner();
        listed.extend(page.upserted);
        request.cursor = page.next_cursor;
        if !page.more {
            break;
        }
    }
    let occurrence = |day: u32| {
        listed
            .iter()
            .find(|e| {
                e.start.as_ref().and_then(|t| match &t.value {
                    Some(pb::event_time::Value::Instant(ts)) => from_timestamp(ts),
                    _ => None,
                }) == Some(at(day, 9))
            })
            .map(|e| e.provider_event_id.clone())
            .unwrap_or_else(|| panic!("no occurrence on March {day}: {listed:?}"))
    };
    let (second, third) = (occurrence(3), occurrence(4));
    w.control
        .patch_event(USER, &second, &json!({"showAs": "tentative"}))
        .await
        .unwrap();
    w.control.delete_event(USER, &third).await.unwrap();

    let creds = w.credentials(pb::AccessLevel::FreeBusy).await;
    let busy = w
        .free_busy(&creds, &[&cal], at(1, 0), at(10, 0))
        .await
        .unwrap();
    use pb::BusyStatus::*;
    assert_eq!(
        spans(&busy),
        vec![
            (at(2, 9), at(2, 9) + Span::minutes(30), Busy),
            (at(3, 9), at(3, 9) + Span::minutes(30), Tentative),
            (at(5, 9), at(5, 9) + Span::minutes(30), Busy),
        ]
    );
    w.verify().await;
}

#[tokio::test]
async fn refusals_surface_as_clear_statuses_and_throttling_is_waited_out() {
    let mut w = start().await;
    let creds = w.credentials(pb::AccessLevel::FreeBusy).await;
    let calendars = w.calendars(&creds).await;
    let cal = calendars
        .iter()
        .find(|c| c.primary)
        .unwrap()
        .calendar_id
        .clone();
    // Another calendar of the mailbox (a FREE_BUSY account does not list
    // it, but a caller may still name one).
    let holidays = "AAMkAGI2THVSAAA=".to_string();
    w.control
        .insert_event(USER, &outlook("Busy", at(2, 9), 60, "busy"))
        .await
        .unwrap();

    // Only the default calendar has free/busy at Microsoft.
    let other = w
        .free_busy(&creds, &[&cal, &holidays], at(1, 0), at(10, 0))
        .await
        .unwrap_err();
    assert_eq!(other.code(), Code::InvalidArgument, "{other:?}");
    assert!(
        other.message().contains("calendar_ids[1]") && other.message().contains("default calendar"),
        "{other:?}"
    );
    // No calendar asks Graph nothing.
    let before = w.requests().await.len();
    assert!(w
        .free_busy(&creds, &[], at(1, 0), at(10, 0))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(w.requests().await.len(), before);
    // A window must be set and ordered.
    let backwards = w
        .free_busy(&creds, &[&cal], at(10, 0), at(1, 0))
        .await
        .unwrap_err();
    assert_eq!(backwards.code(), Code::InvalidArgument);

    // Graph refusing the query (400) is INVALID_ARGUMENT naming what was
    // refused, never an outage to retry.
    w.control
        .inject(&Fault {
            status: 400,
            retry_after: None,
            method: Some("POST".into()),
            count: 1,
        })
        .await
        .unwrap();
    let refused = w
        .free_busy(&creds, &[&cal], at(1, 0), at(10, 0))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("free/busy query"), "{refused:?}");

    // Throttled getSchedule calls are retried exactly after Retry-After.
    w.control
        .inject(&Fault {
            status: 429,
            retry_after: Some(1),
            method: Some("POST".into()),
            count: 1,
        })
        .await
        .unwrap();
    let began = Instant::now();
    let busy = w
        .free_busy(&creds, &[&cal], at(1, 0), at(10, 0))
        .await
        .unwrap();
    assert!(began.elapsed() >= Duration::from_secs(1));
    assert_eq!(spans(&busy).len(), 1);
    let (early, _) = w.control.stats().await.unwrap();
    assert_eq!(early, 0, "no retry before Retry-After had passed");
    w.verify().await;
}
