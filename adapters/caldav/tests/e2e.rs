//! The CalDAV adapter served for real on 127.0.0.1, driven through gRPC
//! against real Radicale and Xandikos servers: discovery, calendars, full
//! and incremental sync of outside edits, writes, idempotent creates,
//! conflicts, expired sync tokens and free/busy.

mod servers;

use chrono::{TimeZone, Utc};
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic::Code;

use calbridge::pb::calendar_adapter_client::CalendarAdapterClient;
use calbridge::pb::{self, event_time, AccessLevel, EventStatus};
use calbridge::time::{instant, to_timestamp};
use calbridge_adapter_caldav::Config;
use servers::{start, Kind};

struct Adapter {
    client: CalendarAdapterClient<Channel>,
    _stop: oneshot::Sender<()>,
}

async fn adapter() -> Adapter {
    let bound = calbridge_runtime::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = bound.addr;
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(calbridge_adapter_caldav::serve(
        bound,
        Config::new(addr),
        async move {
            let _ = stopped.await;
        },
    ));
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    Adapter {
        client: CalendarAdapterClient::new(channel),
        _stop: stop,
    }
}

fn window() -> pb::TimeWindow {
    pb::TimeWindow {
        start: Some(to_timestamp(
            Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
        )),
        end: Some(to_timestamp(
            Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap(),
        )),
    }
}

fn ics(uid: &str, body: &str) -> String {
    let mut lines = vec![
        "BEGIN:VCALENDAR".to_string(),
        "VERSION:2.0".into(),
        "PRODID:-//calbridge tests//EN".into(),
        "BEGIN:VEVENT".into(),
        format!("UID:{uid}"),
        "DTSTAMP:20260101T000000Z".into(),
    ];
    lines.extend(
        body.lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty()),
    );
    lines.push("END:VEVENT".into());
    lines.push("END:VCALENDAR".into());
    lines.join("\r\n") + "\r\n"
}

const SERIES: &str = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//calbridge tests//EN\r\n\
BEGIN:VEVENT\r\nUID:series-1\r\nDTSTAMP:20260101T000000Z\r\nSUMMARY:Weekly\r\n\
DTSTART:20260105T090000Z\r\nDTEND:20260105T100000Z\r\nRRULE:FREQ=WEEKLY;COUNT=4\r\nEND:VEVENT\r\n\
BEGIN:VEVENT\r\nUID:series-1\r\nDTSTAMP:20260101T000000Z\r\nSUMMARY:Weekly (edited)\r\n\
RECURRENCE-ID:20260112T090000Z\r\nDTSTART:20260112T130000Z\r\nDTEND:20260112T140000Z\r\nEND:VEVENT\r\n\
BEGIN:VEVENT\r\nUID:series-1\r\nDTSTAMP:20260101T000000Z\r\nSUMMARY:Weekly\r\nSTATUS:CANCELLED\r\n\
RECURRENCE-ID:20260119T090000Z\r\nDTSTART:20260119T090000Z\r\nDTEND:20260119T100000Z\r\nEND:VEVENT\r\n\
END:VCALENDAR\r\n";

fn start_of(e: &pb::Event) -> chrono::DateTime<Utc> {
    match &e.start.as_ref().unwrap().value {
        Some(event_time::Value::Instant(t)) => calbridge::time::from_timestamp(t).unwrap(),
        other => panic!("expected an instant, got {other:?}"),
    }
}

async fn sync(
    a: &mut Adapter,
    creds: &pb::ProviderCredentials,
    calendar: &str,
    cursor: &str,
) -> Result<pb::SyncEventsResponse, tonic::Status> {
    a.client
        .sync_events(pb::SyncEventsRequest {
            credentials: Some(creds.clone()),
            calendar_id: calendar.into(),
            cursor: cursor.into(),
            window: Some(window()),
            page_size: 100,
            busy_only: false,
        })
        .await
        .map(|r| r.into_inner())
}

async fn scenario(kind: Kind) {
    let server = start(kind).await;
    assert_eq!(server.kind, kind);
    let mut a = adapter().await;

    let caps = a
        .client
        .describe(pb::DescribeRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(caps.provider(), pb::Provider::Caldav);
    assert!(caps.incremental_sync && !caps.push && !caps.oauth && caps.native_free_busy);

    // Connect and discover.
    if kind == Kind::Radicale {
        let wrong = a
            .client
            .check_password(pb::CheckPasswordRequest {
                server_url: server.base.clone(),
                username: "user".into(),
                password: "not-the-password".into(),
                access_level: AccessLevel::ReadWrite as i32,
            })
            .await
            .unwrap_err();
        assert_eq!(wrong.code(), Code::Unauthenticated);
        assert!(!wrong.message().contains("not-the-password"));
    }
    let creds = a
        .client
        .check_password(pb::CheckPasswordRequest {
            server_url: server.base.clone(),
            username: server.user.0.into(),
            password: server.user.1.into(),
            access_level: AccessLevel::ReadWrite as i32,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        creds.provider_account_id.ends_with("/user/"),
        "{}",
        creds.provider_account_id
    );

    let calendars = a
        .client
        .list_calendars(pb::ListProviderCalendarsRequest {
            credentials: Some(creds.clone()),
        })
        .await
        .unwrap()
        .into_inner()
        .calendars;
    let cal = calendars
        .iter()
        .find(|c| c.calendar_id == server.calendar)
        .unwrap_or_else(|| panic!("{} not in {calendars:?}", server.calendar));
    assert!(!cal.read_only);
    let calendar = server.calendar.clone();

    // Initial content made by another client, then a full listing.
    server
        .put(
            "a.ics",
            &ics(
                "a",
                "SUMMARY:Alpha\nDTSTART:20260110T090000Z\nDTEND:20260110T100000Z",
            ),
        )
        .await;
    server
        .put(
            "d.ics",
            &ics(
                "d",
                "SUMMARY:Delta\nDTSTART:20260111T090000Z\nDTEND:20260111T100000Z",
            ),
        )
        .await;
    server.put("s.ics", SERIES).await;
    let full = sync(&mut a, &creds, &calendar, "").await.unwrap();
    assert!(full.full_listing && !full.more);
    let mut ids: Vec<&str> = full
        .upserted
        .iter()
        .map(|e| e.provider_event_id.as_str())
        .collect();
    ids.sort();
    let s = |suffix: &str| format!("{calendar}s.ics#{suffix}");
    assert_eq!(
        ids,
        [
            format!("{calendar}a.ics"),
            format!("{calendar}d.ics"),
            s("20260105T090000Z"),
            s("20260112T090000Z"),
            s("20260119T090000Z"),
            s("20260126T090000Z"),
        ]
    );
    let edited = full
        .upserted
        .iter()
        .find(|e| e.provider_event_id == s("20260112T090000Z"))
        .unwrap();
    assert_eq!(edited.title, "Weekly (edited)");
    assert_eq!(
        start_of(edited),
        Utc.with_ymd_and_hms(2026, 1, 12, 13, 0, 0).unwrap()
    );
    let cancelled = full
        .upserted
        .iter()
        .find(|e| e.provider_event_id == s("20260119T090000Z"))
        .unwrap();
    assert_eq!(cancelled.status(), EventStatus::Cancelled);

    // Nothing changed: an empty incremental page.
    let idle = sync(&mut a, &creds, &calendar, &full.next_cursor)
        .await
        .unwrap();
    assert!(idle.upserted.is_empty() && idle.deleted.is_empty() && !idle.full_listing);

    // Outside edits: a move, a cancellation, a deletion.
    server
        .put(
            "a.ics",
            &ics(
                "a",
                "SUMMARY:Alpha\nDTSTART:20260113T090000Z\nDTEND:20260113T100000Z",
            ),
        )
        .await;
    server
        .put(
            "c.ics",
            &ics(
                "c",
                "SUMMARY:Gamma\nSTATUS:CANCELLED\nDTSTART:20260114T090000Z\nDTEND:20260114T100000Z",
            ),
        )
        .await;
    server.delete("d.ics").await;
    let inc = sync(&mut a, &creds, &calendar, &idle.next_cursor)
        .await
        .unwrap();
    assert!(!inc.full_listing, "{inc:?}");
    let moved = inc
        .upserted
        .iter()
        .find(|e| e.provider_event_id == format!("{calendar}a.ics"))
        .expect("the moved event");
    assert_eq!(
        start_of(moved),
        Utc.with_ymd_and_hms(2026, 1, 13, 9, 0, 0).unwrap()
    );
    let gamma = inc
        .upserted
        .iter()
        .find(|e| e.provider_event_id == format!("{calendar}c.ics"))
        .expect("the cancelled event");
    assert_eq!(gamma.status(), EventStatus::Cancelled);
    assert_eq!(inc.deleted, vec![format!("{calendar}d.ics")]);
    assert_eq!(inc.upserted.len(), 2);

    // A forged sync token is an expired cursor.
    let bogus = sync(
        &mut a,
        &creds,
        &calendar,
        "v1|st|-||http://example.com/ns/sync/0000",
    )
    .await
    .unwrap_err();
    assert_eq!(bogus.code(), Code::OutOfRange, "{bogus:?}");

    // Writes through the adapter, checked on the server.
    let new_event = pb::Event {
        title: "Lunch".into(),
        location: "Canteen".into(),
        start: Some(instant(
            Utc.with_ymd_and_hms(2026, 2, 2, 11, 0, 0).unwrap(),
            "Europe/Berlin",
        )),
        end: Some(instant(
            Utc.with_ymd_and_hms(2026, 2, 2, 12, 0, 0).unwrap(),
            "Europe/Berlin",
        )),
        attendees: vec![pb::Attendee {
            email: "bob@example.com".into(),
            display_name: "Bob".into(),
            optional: true,
            ..Default::default()
        }],
        ..Default::default()
    };
    let create = pb::ProviderCreateEventRequest {
        credentials: Some(creds.clone()),
        calendar_id: calendar.clone(),
        event: Some(new_event.clone()),
        idempotency_key: "evt-k1".into(),
    };
    let created = a
        .client
        .create_event(create.clone())
        .await
        .unwrap()
        .into_inner();
    assert!(!created.already_existed);
    let stored = created.event.unwrap();
    assert_eq!(stored.provider_event_id, format!("{calendar}evt-k1.ics"));
    assert_eq!(stored.title, "Lunch");
    assert_eq!(stored.start.as_ref().unwrap().time_zone, "Europe/Berlin");
    assert!(!stored.version.is_empty());
    let (status, body) = server.get(&stored.provider_event_id).await;
    assert_eq!(status, 200);
    // Unfold content lines before comparing.
    let body = body.replace("\r\n ", "").replace("\n ", "");
    assert!(body.contains("SUMMARY:Lunch"), "{body}");
    assert!(
        body.contains("DTSTART;TZID=Europe/Berlin:20260202T120000"),
        "{body}"
    );
    assert!(body.contains("mailto:bob@example.com"), "{body}");
    assert!(body.contains("UID:evt-k1@calbridge"), "{body}");

    let again = a.client.create_event(create).await.unwrap().into_inner();
    assert!(again.already_existed);
    assert_eq!(
        again.event.unwrap().provider_event_id,
        stored.provider_event_id
    );
    let listing = sync(&mut a, &creds, &calendar, "").await.unwrap();
    assert_eq!(
        listing
            .upserted
            .iter()
            .filter(|e| e.ical_uid == "evt-k1@calbridge")
            .count(),
        1
    );

    let mut changed = new_event.clone();
    changed.title = "Long lunch".into();
    let updated = a
        .client
        .update_event(pb::ProviderUpdateEventRequest {
            credentials: Some(creds.clone()),
            calendar_id: calendar.clone(),
            provider_event_id: stored.provider_event_id.clone(),
            event: Some(changed.clone()),
            expected_version: stored.version.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.title, "Long lunch");
    assert_ne!(updated.version, stored.version);
    assert!(server
        .get(&stored.provider_event_id)
        .await
        .1
        .contains("SUMMARY:Long lunch"));

    let stale = a
        .client
        .update_event(pb::ProviderUpdateEventRequest {
            credentials: Some(creds.clone()),
            calendar_id: calendar.clone(),
            provider_event_id: stored.provider_event_id.clone(),
            event: Some(changed),
            expected_version: stored.version.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::Aborted);
    assert_eq!(
        stale
            .metadata()
            .get(calbridge::metadata::CURRENT_VERSION)
            .and_then(|v| v.to_str().ok()),
        Some(updated.version.as_str())
    );

    // Free/busy sees the single event and the moved instance.
    let busy = a
        .client
        .query_free_busy(pb::ProviderFreeBusyRequest {
            credentials: Some(creds.clone()),
            calendar_ids: vec![calendar.clone()],
            window: Some(window()),
        })
        .await
        .unwrap()
        .into_inner()
        .busy;
    let starts: Vec<i64> = busy.iter().map(|b| b.start.unwrap().seconds).collect();
    assert!(
        starts.contains(
            &Utc.with_ymd_and_hms(2026, 1, 13, 9, 0, 0)
                .unwrap()
                .timestamp()
        ),
        "{busy:?}"
    );
    assert!(
        starts.contains(
            &Utc.with_ymd_and_hms(2026, 1, 12, 13, 0, 0)
                .unwrap()
                .timestamp()
        ),
        "{busy:?}"
    );

    let delete = pb::ProviderDeleteEventRequest {
        credentials: Some(creds.clone()),
        calendar_id: calendar.clone(),
        provider_event_id: stored.provider_event_id.clone(),
        expected_version: updated.version.clone(),
    };
    a.client.delete_event(delete.clone()).await.unwrap();
    assert_eq!(server.get(&stored.provider_event_id).await.0, 404);
    let gone = a.client.delete_event(delete).await.unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    drop(server);
}

#[tokio::test]
async fn radicale_discovers_syncs_outside_edits_and_takes_writes() {
    scenario(Kind::Radicale).await;
}

#[tokio::test]
async fn xandikos_discovers_syncs_outside_edits_and_takes_writes() {
    scenario(Kind::Xandikos).await;
}
