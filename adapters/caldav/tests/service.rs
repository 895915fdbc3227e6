//! The CalDAV adapter served for real on 127.0.0.1, driven through gRPC
//! against real Radicale and Xandikos servers: discovery, calendars, full
//! and incremental sync of outside edits, writes, idempotent creates,
//! conflicts, expired sync tokens and free/busy; listings and changes paged
//! across several calls; updates that keep what other clients stored.

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
    let mut config = Config::new(addr);
    // The test servers listen on the loopback.
    config.allow_private_networks = vec!["127.0.0.1/32".parse().unwrap()];
    tokio::spawn(calbridge_adapter_caldav::serve(bound, config, async move {
        let _ = stopped.await;
    }));
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
    sync_page(a, creds, calendar, cursor, 100).await
}

/// A SyncEvents request over the test window.
fn sync_request(
    creds: &pb::ProviderCredentials,
    calendar: &str,
    cursor: &str,
    page_size: u32,
) -> pb::SyncEventsRequest {
    pb::SyncEventsRequest {
        credentials: Some(creds.clone()),
        calendar_id: calendar.into(),
        cursor: cursor.into(),
        window: Some(window()),
        page_size,
        busy_only: false,
    }
}

async fn sync_page(
    a: &mut Adapter,
    creds: &pb::ProviderCredentials,
    calendar: &str,
    cursor: &str,
    page_size: u32,
) -> Result<pb::SyncEventsResponse, tonic::Status> {
    a.client
        .sync_events(sync_request(creds, calendar, cursor, page_size))
        .await
        .map(|r| r.into_inner())
}

/// Every page from `cursor` on until `more` is false, as the scheduler
/// calls them.
async fn all_pages(
    a: &mut Adapter,
    creds: &pb::ProviderCredentials,
    calendar: &str,
    cursor: &str,
    page_size: u32,
) -> Vec<pb::SyncEventsResponse> {
    let mut pages = Vec::new();
    let mut cursor = cursor.to_string();
    loop {
        let page = sync_page(a, creds, calendar, &cursor, page_size)
            .await
            .unwrap();
        cursor = page.next_cursor.clone();
        let more = page.more;
        pages.push(page);
        if !more {
            return pages;
        }
        assert!(pages.len() < 100, "the pages never end");
    }
}

/// The pages of one StreamSyncEvents call from `cursor`.
async fn streamed(
    a: &mut Adapter,
    creds: &pb::ProviderCredentials,
    calendar: &str,
    cursor: &str,
    page_size: u32,
) -> Vec<pb::SyncEventsResponse> {
    let mut stream = a
        .client
        .stream_sync_events(sync_request(creds, calendar, cursor, page_size))
        .await
        .unwrap()
        .into_inner();
    let mut pages = Vec::new();
    while let Some(page) = stream.message().await.unwrap() {
        pages.push(page);
    }
    assert!(!pages.last().unwrap().more, "the stream ended early");
    pages
}

fn sorted_ids<'a>(pages: impl IntoIterator<Item = &'a pb::SyncEventsResponse>) -> Vec<String> {
    let mut ids: Vec<String> = pages
        .into_iter()
        .flat_map(|p| p.upserted.iter().map(|e| e.provider_event_id.clone()))
        .collect();
    ids.sort();
    ids
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

/// Listings and changes larger than a page: every page stays within the
/// page size (a series' instances travel together), the union of the pages
/// is the whole calendar once, the sync token is taken at the first poll
/// after a listing from scratch, and a change made before that poll is
/// listed again against the token.
async fn paging(kind: Kind) {
    let server = start(kind).await;
    let mut a = adapter().await;
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
    let calendar = server.calendar.clone();
    let single = |i: u32, title: &str| {
        ics(
            &format!("p{i}"),
            &format!(
                "SUMMARY:{title}\nDTSTART:202601{:02}T090000Z\nDTEND:202601{:02}T100000Z",
                i + 2,
                i + 2
            ),
        )
    };
    for i in 0..7 {
        server.put(&format!("p{i}.ics"), &single(i, "Single")).await;
    }
    server.put("s.ics", SERIES).await;
    // Outside the window: listed, fetched, no event.
    server
        .put(
            "old.ics",
            &ics(
                "old",
                "SUMMARY:Old\nDTSTART:20200110T090000Z\nDTEND:20200110T100000Z",
            ),
        )
        .await;
    let whole = sync(&mut a, &creds, &calendar, "").await.unwrap();
    assert!(!whole.more && whole.full_listing);
    assert_eq!(whole.upserted.len(), 11);

    let pages = all_pages(&mut a, &creds, &calendar, "", 3).await;
    assert!(pages.len() >= 4, "{} pages", pages.len());
    for p in &pages {
        assert!(p.full_listing && p.deleted.is_empty() && p.skipped.is_empty());
        let series = p
            .upserted
            .iter()
            .filter(|e| e.provider_event_id.contains('#'))
            .count();
        assert!(
            p.upserted.len() <= 3 || series == p.upserted.len(),
            "{} events in a page of 3",
            p.upserted.len()
        );
    }
    assert_eq!(sorted_ids(&pages), sorted_ids([&whole]));
    let last = pages.last().unwrap().next_cursor.clone();
    assert!(last.starts_with("v2|pt|"), "{last}");

    // The first poll takes the token; nothing changed.
    let idle = sync(&mut a, &creds, &calendar, &last).await.unwrap();
    assert!(idle.upserted.is_empty() && idle.deleted.is_empty() && !idle.full_listing);
    assert!(!idle.more);
    assert!(
        idle.next_cursor.starts_with("v2|st|"),
        "{}",
        idle.next_cursor
    );

    // Five edits and a deletion, in pages of two: the deletion comes first,
    // the edits follow, nothing is listed in full.
    for i in 0..5 {
        server.put(&format!("p{i}.ics"), &single(i, "Edited")).await;
    }
    server.delete("p6.ics").await;
    let pages = all_pages(&mut a, &creds, &calendar, &idle.next_cursor, 2).await;
    assert!(pages.len() >= 3, "{} pages", pages.len());
    assert_eq!(pages[0].deleted, vec![format!("{calendar}p6.ics")]);
    for p in &pages {
        assert!(!p.full_listing && p.upserted.len() <= 2);
        assert!(p.upserted.iter().all(|e| e.title == "Edited"));
    }
    assert!(pages[1..].iter().all(|p| p.deleted.is_empty()));
    assert_eq!(
        sorted_ids(&pages),
        (0..5)
            .map(|i| format!("{calendar}p{i}.ics"))
            .collect::<Vec<_>>()
    );
    let settled = pages.last().unwrap().next_cursor.clone();
    assert!(settled.starts_with("v2|st|") && settled.contains("|-|"));

    // Touching the series lists everything again, against the new token.
    server
        .put(
            "s.ics",
            &SERIES.replace("SUMMARY:Weekly\r\n", "SUMMARY:Weekly!\r\n"),
        )
        .await;
    let pages = all_pages(&mut a, &creds, &calendar, &settled, 3).await;
    assert!(pages.iter().all(|p| p.full_listing));
    assert_eq!(pages.iter().map(|p| p.upserted.len()).sum::<usize>(), 10);
    let settled = pages.last().unwrap().next_cursor.clone();
    assert!(settled.starts_with("v2|st|"), "{settled}");
    let idle = sync(&mut a, &creds, &calendar, &settled).await.unwrap();
    assert!(idle.upserted.is_empty() && !idle.full_listing);

    // A change between a listing from scratch and the next poll: that poll
    // lists again, and the one after it is idle.
    let fresh = sync(&mut a, &creds, &calendar, "").await.unwrap();
    assert!(fresh.next_cursor.starts_with("v2|pt|"));
    server.put("p0.ics", &single(0, "Edited again")).await;
    let relisted = sync(&mut a, &creds, &calendar, &fresh.next_cursor)
        .await
        .unwrap();
    assert!(relisted.full_listing && !relisted.more);
    assert_eq!(relisted.upserted.len(), 10);
    assert!(relisted.upserted.iter().any(|e| e.title == "Edited again"));
    assert!(relisted.next_cursor.starts_with("v2|st|"));
    let idle = sync(&mut a, &creds, &calendar, &relisted.next_cursor)
        .await
        .unwrap();
    assert!(idle.upserted.is_empty() && idle.deleted.is_empty() && !idle.full_listing);

    // Streamed, as the scheduler asks: a listing from scratch is read whole
    // (the same events as a single call lists) and keeps the digest of what
    // it read; the first poll takes the token and fetches nothing; a change
    // before that poll lists again.
    let now = sync(&mut a, &creds, &calendar, "").await.unwrap();
    let pages = streamed(&mut a, &creds, &calendar, "", 3).await;
    assert!(pages.len() >= 3 && pages.iter().all(|p| p.full_listing));
    assert_eq!(sorted_ids(&pages), sorted_ids([&now]));
    let last = pages.last().unwrap().next_cursor.clone();
    assert!(last.starts_with("v2|pd|"), "{last}");
    let idle = streamed(&mut a, &creds, &calendar, &last, 3).await;
    assert_eq!(idle.len(), 1);
    assert!(idle[0].upserted.is_empty() && idle[0].deleted.is_empty());
    assert!(!idle[0].full_listing && idle[0].next_cursor.starts_with("v2|st|"));
    let fresh = streamed(&mut a, &creds, &calendar, "", 100).await;
    server.put("p1.ics", &single(1, "Edited in between")).await;
    let relisted = streamed(
        &mut a,
        &creds,
        &calendar,
        &fresh.last().unwrap().next_cursor,
        100,
    )
    .await;
    assert!(relisted.iter().all(|p| p.full_listing));
    assert!(relisted
        .iter()
        .flat_map(|p| &p.upserted)
        .any(|e| e.title == "Edited in between"));
    let settled = relisted.last().unwrap().next_cursor.clone();
    assert!(settled.starts_with("v2|st|"), "{settled}");
    drop(server);
}

/// An update through the adapter rewrites what calbridge owns and keeps
/// what another client stored: its alarm, X- properties and categories.
async fn updates_keep_foreign_properties(kind: Kind) {
    let server = start(kind).await;
    let mut a = adapter().await;
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
    let calendar = server.calendar.clone();
    server
        .put(
            "other.ics",
            &ics(
                "other-1",
                "SUMMARY:Dentist\nDTSTART:20260120T090000Z\nDTEND:20260120T100000Z\n\
                 SEQUENCE:2\nCATEGORIES:Health\nX-MOZ-GENERATION:3\n\
                 X-APPLE-TRAVEL-ADVISORY-BEHAVIOR:AUTOMATIC\n\
                 BEGIN:VALARM\nACTION:DISPLAY\nDESCRIPTION:Reminder\nTRIGGER:-PT30M\nEND:VALARM",
            ),
        )
        .await;
    let listed = sync(&mut a, &creds, &calendar, "").await.unwrap();
    let stored = listed
        .upserted
        .iter()
        .find(|e| e.provider_event_id == format!("{calendar}other.ics"))
        .expect("the event")
        .clone();
    let mut changed = stored.clone();
    changed.title = "Dentist (moved)".into();
    changed.start = Some(instant(
        Utc.with_ymd_and_hms(2026, 1, 21, 9, 0, 0).unwrap(),
        "Europe/Berlin",
    ));
    changed.end = Some(instant(
        Utc.with_ymd_and_hms(2026, 1, 21, 10, 0, 0).unwrap(),
        "Europe/Berlin",
    ));
    let updated = a
        .client
        .update_event(pb::ProviderUpdateEventRequest {
            credentials: Some(creds.clone()),
            calendar_id: calendar.clone(),
            provider_event_id: stored.provider_event_id.clone(),
            event: Some(changed),
            expected_version: stored.version.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.title, "Dentist (moved)");
    assert_eq!(
        start_of(&updated),
        Utc.with_ymd_and_hms(2026, 1, 21, 9, 0, 0).unwrap()
    );
    let (status, body) = server.get(&stored.provider_event_id).await;
    assert_eq!(status, 200);
    let body = body.replace("\r\n ", "").replace("\n ", "");
    for kept in [
        "CATEGORIES:Health",
        "X-MOZ-GENERATION:3",
        "X-APPLE-TRAVEL-ADVISORY-BEHAVIOR:AUTOMATIC",
        "BEGIN:VALARM",
        "TRIGGER:-PT30M",
        "DESCRIPTION:Reminder",
        "UID:other-1",
    ] {
        assert!(body.contains(kept), "{kept} lost:\n{body}");
    }
    for written in [
        "SUMMARY:Dentist (moved)",
        "DTSTART;TZID=Europe/Berlin:20260121T100000",
        "SEQUENCE:3",
        "BEGIN:VTIMEZONE",
    ] {
        assert!(body.contains(written), "{written} not written:\n{body}");
    }
    drop(server);
}

/// A listing longer than a cursor may carry: the cursor carries a chunk of
/// hrefs at a time and the listing goes on after the last one (from a new
/// PROPFIND for single calls; from the objects read ahead in a stream);
/// every event arrives once.
async fn chunked_listing(kind: Kind, stream: bool) {
    use calbridge_adapter_caldav::account::{discover, Account};
    use calbridge_adapter_caldav::client::{http_client, DavClient};
    use calbridge_adapter_caldav::recurrence::Window;
    use calbridge_adapter_caldav::sync::{sync as sync_once, ReadAhead, SyncRequest};

    let server = start(kind).await;
    for i in 0..8 {
        server
            .put(
                &format!("c{i}.ics"),
                &ics(
                    &format!("c{i}"),
                    &format!(
                        "SUMMARY:C{i}\nDTSTART:202601{:02}T090000Z\nDTEND:202601{:02}T100000Z",
                        i + 2,
                        i + 2
                    ),
                ),
            )
            .await;
    }
    let limits = calbridge_adapter_caldav::client::Limits {
        egress: calbridge_adapter_caldav::egress::Egress::new(vec!["127.0.0.1/32"
            .parse()
            .unwrap()]),
        ..Default::default()
    };
    let http = http_client(std::time::Duration::from_secs(30), &limits.egress);
    let base = reqwest::Url::parse(&server.base).unwrap();
    let client = DavClient::new(
        http.clone(),
        limits.clone(),
        base.clone(),
        server.user.0,
        server.user.1,
    );
    let home = discover(&client, &base).await.unwrap().home;
    let account = Account::new(
        DavClient::new(http, limits, home.clone(), server.user.0, server.user.1),
        home,
    );
    let mut cursor = String::new();
    let mut ids = Vec::new();
    let mut ahead = ReadAhead::for_stream();
    for call in 0.. {
        assert!(call < 20, "the listing never ends");
        if !stream {
            ahead = ReadAhead::none();
        }
        let page = sync_once(
            &account,
            &SyncRequest {
                calendar_id: &server.calendar,
                cursor: &cursor,
                window: Window {
                    start: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
                    end: Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap(),
                },
                page_size: 2,
                busy_only: false,
                max_carried: 3,
            },
            &mut ahead,
        )
        .await
        .unwrap();
        assert!(page.full_listing && page.upserted.len() <= 2);
        // A stream holds what is left of the listing; single calls hold
        // nothing.
        match (stream, page.more) {
            (true, true) => assert_eq!(ahead.held(), 8 - ids.len() - page.upserted.len()),
            _ => assert_eq!(ahead.held(), 0),
        }
        ids.extend(page.upserted.iter().map(|e| e.provider_event_id.clone()));
        cursor = page.next_cursor;
        // The hrefs still to fetch, front-coded: at most three.
        let carried = cursor.split('|').nth(3).unwrap();
        if carried != "-" {
            let hrefs = carried.rsplit(';').next().unwrap();
            assert!(hrefs.split(',').count() <= 3, "{cursor}");
        }
        if !page.more {
            break;
        }
    }
    ids.sort();
    let expected: Vec<String> = (0..8)
        .map(|i| format!("{}c{i}.ics", server.calendar))
        .collect();
    assert_eq!(ids, expected);
    // Read whole, a listing from scratch keeps a digest; listed by PROPFIND,
    // the ctag.
    let mode = if stream { "v2|pd|" } else { "v2|pt|" };
    assert!(cursor.starts_with(mode), "{cursor}");
}

#[tokio::test]
async fn radicale_lists_long_calendars_in_chunks() {
    chunked_listing(Kind::Radicale, false).await;
}

#[tokio::test]
async fn xandikos_lists_long_calendars_in_chunks() {
    chunked_listing(Kind::Xandikos, false).await;
}

#[tokio::test]
async fn radicale_streams_long_calendars_from_one_query() {
    chunked_listing(Kind::Radicale, true).await;
}

#[tokio::test]
async fn xandikos_streams_long_calendars_from_one_query() {
    chunked_listing(Kind::Xandikos, true).await;
}

#[tokio::test]
async fn radicale_updates_keep_alarms_and_x_properties() {
    updates_keep_foreign_properties(Kind::Radicale).await;
}

#[tokio::test]
async fn xandikos_updates_keep_alarms_and_x_properties() {
    updates_keep_foreign_properties(Kind::Xandikos).await;
}

#[tokio::test]
async fn radicale_pages_listings_and_changes() {
    paging(Kind::Radicale).await;
}

#[tokio::test]
async fn xandikos_pages_listings_and_changes() {
    paging(Kind::Xandikos).await;
}

#[tokio::test]
async fn radicale_discovers_syncs_outside_edits_and_takes_writes() {
    scenario(Kind::Radicale).await;
}

#[tokio::test]
async fn xandikos_discovers_syncs_outside_edits_and_takes_writes() {
    scenario(Kind::Xandikos).await;
}
