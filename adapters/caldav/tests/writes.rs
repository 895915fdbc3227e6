//! Recurring writes through the CalDAV adapter, served for real on
//! 127.0.0.1 against real Radicale and Xandikos servers and read back
//! through SyncEvents: a series created and replaced with RRULE, EXDATE
//! and RDATE in a zone of its own, one instance overridden (twice) and one
//! deleted, stale versions ABORTED with the current one, instance ids that
//! name no instance NOT_FOUND; and the sync window rolling forward under a
//! cursor taken for an older window.

// Shared with tests/service.rs, which uses more of it.
#[allow(dead_code, unreachable_pub)]
mod servers;

use chrono::{DateTime, TimeZone, Utc};
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic::Code;

use calbridge::pb::calendar_adapter_client::CalendarAdapterClient;
use calbridge::pb::{self, event_time, AccessLevel};
use calbridge::time::{instant, to_timestamp};
use calbridge_adapter_caldav::Config;
use servers::{start, DavServer, Kind};

struct Adapter {
    client: CalendarAdapterClient<Channel>,
    creds: pb::ProviderCredentials,
    calendar: String,
    _stop: oneshot::Sender<()>,
}

/// The adapter on 127.0.0.1, signed in to `server` for READ_WRITE.
async fn adapter(server: &DavServer) -> Adapter {
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
    let mut client = CalendarAdapterClient::new(channel);
    let creds = client
        .check_password(pb::CheckPasswordRequest {
            server_url: server.base.clone(),
            username: server.user.0.into(),
            password: server.user.1.into(),
            access_level: AccessLevel::ReadWrite as i32,
        })
        .await
        .unwrap()
        .into_inner();
    Adapter {
        client,
        creds,
        calendar: server.calendar.clone(),
        _stop: stop,
    }
}

fn utc(m: u32, d: u32, h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, m, d, h, 0, 0).unwrap()
}

fn window(start: DateTime<Utc>, end: DateTime<Utc>) -> pb::TimeWindow {
    pb::TimeWindow {
        start: Some(to_timestamp(start)),
        end: Some(to_timestamp(end)),
    }
}

fn start_of(e: &pb::Event) -> DateTime<Utc> {
    match &e.start.as_ref().unwrap().value {
        Some(event_time::Value::Instant(t)) => calbridge::time::from_timestamp(t).unwrap(),
        other => panic!("expected an instant, got {other:?}"),
    }
}

impl Adapter {
    /// One SyncEvents page from `cursor` over `w`.
    async fn page(&mut self, cursor: &str, w: pb::TimeWindow) -> pb::SyncEventsResponse {
        self.client
            .sync_events(pb::SyncEventsRequest {
                credentials: Some(self.creds.clone()),
                calendar_id: self.calendar.clone(),
                cursor: cursor.into(),
                window: Some(w),
                page_size: 500,
                busy_only: false,
            })
            .await
            .unwrap()
            .into_inner()
    }

    /// A listing from scratch over January and February: every event by
    /// provider id.
    async fn listing(&mut self) -> Vec<pb::Event> {
        let page = self.page("", window(utc(1, 1, 0), utc(3, 1, 0))).await;
        assert!(page.full_listing && !page.more, "{page:?}");
        let mut events = page.upserted;
        events.sort_by(|a, b| a.provider_event_id.cmp(&b.provider_event_id));
        events
    }

    async fn update(
        &mut self,
        id: &str,
        event: pb::Event,
        expected: &str,
    ) -> Result<pb::Event, tonic::Status> {
        self.client
            .update_event(pb::ProviderUpdateEventRequest {
                credentials: Some(self.creds.clone()),
                calendar_id: self.calendar.clone(),
                provider_event_id: id.into(),
                event: Some(event),
                expected_version: expected.into(),
            })
            .await
            .map(|r| r.into_inner())
    }

    async fn delete(&mut self, id: &str, expected: &str) -> Result<(), tonic::Status> {
        self.client
            .delete_event(pb::ProviderDeleteEventRequest {
                credentials: Some(self.creds.clone()),
                calendar_id: self.calendar.clone(),
                provider_event_id: id.into(),
                expected_version: expected.into(),
            })
            .await
            .map(|_| ())
    }
}

/// A one-hour event at `start` (UTC), written in Berlin time.
fn berlin(title: &str, start: DateTime<Utc>) -> pb::Event {
    pb::Event {
        title: title.into(),
        start: Some(instant(start, "Europe/Berlin")),
        end: Some(instant(start + chrono::Duration::hours(1), "Europe/Berlin")),
        ..Default::default()
    }
}

fn find<'a>(events: &'a [pb::Event], id: &str) -> &'a pb::Event {
    events
        .iter()
        .find(|e| e.provider_event_id == id)
        .unwrap_or_else(|| panic!("{id} not in {events:#?}"))
}

fn sorted(lines: &[String]) -> Vec<String> {
    let mut lines = lines.to_vec();
    lines.sort();
    lines
}

fn ids(events: &[pb::Event]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e.provider_event_id.as_str())
        .collect()
}

/// The stored object, unfolded.
async fn stored(server: &DavServer, href: &str) -> String {
    let (status, body) = server.get(href).await;
    assert_eq!(status, 200, "{body}");
    body.replace("\r\n ", "").replace("\n ", "")
}

fn current_version(status: &tonic::Status) -> Option<&str> {
    status
        .metadata()
        .get(calbridge::metadata::CURRENT_VERSION)
        .and_then(|v| v.to_str().ok())
}

/// Weekly on Mondays at 09:00 Berlin (08:00Z) from 5 January, six times,
/// without 12 January, with Thursday 15 January.
fn weekly() -> pb::Event {
    pb::Event {
        recurrence: vec![
            "RRULE:FREQ=WEEKLY;COUNT=6".into(),
            "EXDATE;TZID=Europe/Berlin:20260112T090000".into(),
            "RDATE;TZID=Europe/Berlin:20260115T090000".into(),
        ],
        ..berlin("Weekly", utc(1, 5, 8))
    }
}

async fn series_writes(kind: Kind) {
    let server = start(kind).await;
    let mut a = adapter(&server).await;
    let caps = a
        .client
        .describe(pb::DescribeRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(caps.recurrence_writes, "{caps:?}");

    // Create: one master with the rules, in its zone.
    let created = a
        .client
        .create_event(pb::ProviderCreateEventRequest {
            credentials: Some(a.creds.clone()),
            calendar_id: a.calendar.clone(),
            event: Some(weekly()),
            idempotency_key: "weekly-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let master = created.event.unwrap();
    let href = master.provider_event_id.clone();
    assert_eq!(href, format!("{}weekly-1.ics", a.calendar));
    assert_eq!(sorted(&master.recurrence), sorted(&weekly().recurrence));
    assert_eq!(master.start.as_ref().unwrap().time_zone, "Europe/Berlin");
    let body = stored(&server, &href).await;
    for line in [
        "BEGIN:VTIMEZONE",
        "TZID:Europe/Berlin",
        "DTSTART;TZID=Europe/Berlin:20260105T090000",
        "RRULE:FREQ=WEEKLY;COUNT=6",
        "EXDATE;TZID=Europe/Berlin:20260112T090000",
        "RDATE;TZID=Europe/Berlin:20260115T090000",
    ] {
        assert!(body.contains(line), "{line} not in {body}");
    }
    let i = |suffix: &str| format!("{href}#{suffix}");
    let listed = a.listing().await;
    assert_eq!(
        ids(&listed),
        [
            i("20260105T080000Z"),
            i("20260115T080000Z"),
            i("20260119T080000Z"),
            i("20260126T080000Z"),
            i("20260202T080000Z"),
            i("20260209T080000Z"),
        ]
    );
    assert!(listed.iter().all(
        |e| e.title == "Weekly" && e.recurrence_link.as_ref().unwrap().series_event_id == href
    ));
    let first_version = listed[0].version.clone();

    // One instance moved and retitled: an override in the same resource.
    let moved = a
        .update(
            &i("20260119T080000Z"),
            berlin("Moved", utc(1, 19, 13)),
            &find(&listed, &i("20260119T080000Z")).version,
        )
        .await
        .unwrap();
    assert_eq!(moved.provider_event_id, i("20260119T080000Z"));
    assert_eq!(
        (moved.title.as_str(), start_of(&moved)),
        ("Moved", utc(1, 19, 13))
    );
    assert_ne!(moved.version, first_version);
    let listed = a.listing().await;
    assert_eq!(listed.len(), 6);
    let m = find(&listed, &i("20260119T080000Z"));
    assert_eq!((m.title.as_str(), start_of(m)), ("Moved", utc(1, 19, 13)));
    let link = m.recurrence_link.as_ref().unwrap();
    assert_eq!(link.series_event_id, href);
    assert_eq!(find(&listed, &i("20260126T080000Z")).title, "Weekly");

    // The same instance again: the override is replaced, not added.
    let again = a
        .update(
            &i("20260119T080000Z"),
            berlin("Moved again", utc(1, 19, 14)),
            &moved.version,
        )
        .await
        .unwrap();
    assert_eq!(again.title, "Moved again");
    let body = stored(&server, &href).await;
    assert_eq!(body.matches("RECURRENCE-ID").count(), 1, "{body}");
    let listed = a.listing().await;
    let m = find(&listed, &i("20260119T080000Z"));
    assert_eq!(
        (m.title.as_str(), start_of(m)),
        ("Moved again", utc(1, 19, 14))
    );

    // A stale version is ABORTED carrying the current one, for an
    // instance's update and delete and the series' replacement alike.
    let current = again.version.clone();
    let stale = a
        .update(
            &i("20260126T080000Z"),
            berlin("Late", utc(1, 26, 8)),
            &first_version,
        )
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::Aborted, "{stale:?}");
    assert_eq!(current_version(&stale), Some(current.as_str()));
    let stale = a
        .delete(&i("20260126T080000Z"), &first_version)
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::Aborted, "{stale:?}");
    assert_eq!(current_version(&stale), Some(current.as_str()));
    let stale = a.update(&href, weekly(), &first_version).await.unwrap_err();
    assert_eq!(stale.code(), Code::Aborted, "{stale:?}");
    assert_eq!(current_version(&stale), Some(current.as_str()));

    // Ids naming no instance: an excluded one, an off-rule one.
    for suffix in ["20260112T080000Z", "20260120T080000Z"] {
        let missing = a
            .update(&i(suffix), berlin("Nowhere", utc(1, 20, 8)), "")
            .await
            .unwrap_err();
        assert_eq!(missing.code(), Code::NotFound, "{suffix}: {missing:?}");
        let missing = a.delete(&i(suffix), "").await.unwrap_err();
        assert_eq!(missing.code(), Code::NotFound, "{suffix}: {missing:?}");
    }

    // Another override, then one instance deleted: an EXDATE.
    let last = a
        .update(
            &i("20260209T080000Z"),
            berlin("Last one", utc(2, 9, 9)),
            &current,
        )
        .await
        .unwrap();
    a.delete(&i("20260126T080000Z"), &last.version)
        .await
        .unwrap();
    let listed = a.listing().await;
    assert_eq!(
        ids(&listed),
        [
            i("20260105T080000Z"),
            i("20260115T080000Z"),
            i("20260119T080000Z"),
            i("20260202T080000Z"),
            i("20260209T080000Z"),
        ]
    );
    assert_eq!(find(&listed, &i("20260209T080000Z")).title, "Last one");
    let body = stored(&server, &href).await;
    assert!(body.contains("20260126T090000"), "{body}");

    // The series replaced: new rules and title; the override of 19
    // January still names an instance and stays, that of 9 February no
    // longer does and goes.
    let replacement = pb::Event {
        recurrence: vec![
            "RRULE:FREQ=WEEKLY;COUNT=5".into(),
            "EXDATE;TZID=Europe/Berlin:20260112T090000".into(),
            "RDATE;TZID=Europe/Berlin:20260116T090000".into(),
        ],
        ..berlin("Weekly v2", utc(1, 5, 8))
    };
    let replaced = a
        .update(&href, replacement.clone(), &listed[0].version)
        .await
        .unwrap();
    assert_eq!(replaced.provider_event_id, href);
    assert_eq!(replaced.title, "Weekly v2");
    assert_eq!(
        sorted(&replaced.recurrence),
        sorted(&replacement.recurrence)
    );
    let listed = a.listing().await;
    assert_eq!(
        ids(&listed),
        [
            i("20260105T080000Z"),
            i("20260116T080000Z"),
            i("20260119T080000Z"),
            i("20260126T080000Z"),
            i("20260202T080000Z"),
        ]
    );
    assert_eq!(find(&listed, &i("20260119T080000Z")).title, "Moved again");
    for suffix in ["20260105T080000Z", "20260116T080000Z", "20260202T080000Z"] {
        assert_eq!(find(&listed, &i(suffix)).title, "Weekly v2");
    }
    let body = stored(&server, &href).await;
    assert_eq!(body.matches("RECURRENCE-ID").count(), 1, "{body}");
    assert!(!body.contains("Last one"), "{body}");
}

/// A series at the server, an incremental cursor for January and February,
/// then the window sliding: less than a day stays incremental, a week
/// lists the new window in full (bringing the series' March instances),
/// and the sync after that is incremental again.
async fn window_rolls_forward(kind: Kind) {
    let server = start(kind).await;
    let mut a = adapter(&server).await;
    server
        .put(
            "mondays.ics",
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//calbridge tests//EN\r\n\
             BEGIN:VEVENT\r\nUID:mondays\r\nDTSTAMP:20260101T000000Z\r\nSUMMARY:Mondays\r\n\
             DTSTART:20260105T090000Z\r\nDTEND:20260105T100000Z\r\nRRULE:FREQ=WEEKLY\r\n\
             END:VEVENT\r\nEND:VCALENDAR\r\n",
        )
        .await;
    let old = window(utc(1, 1, 0), utc(3, 1, 0));
    let listing = a.page("", old).await;
    assert!(listing.full_listing && !listing.more);
    assert_eq!(listing.upserted.len(), 8, "{listing:?}");
    let settled = a.page(&listing.next_cursor, old).await;
    assert!(
        !settled.full_listing && settled.upserted.is_empty(),
        "{settled:?}"
    );

    let nudged = window(utc(1, 1, 12), utc(3, 1, 12));
    let idle = a.page(&settled.next_cursor, nudged).await;
    assert!(!idle.full_listing && idle.upserted.is_empty(), "{idle:?}");

    // The cursor of the older window, under a window a week later.
    let later = window(utc(1, 8, 0), utc(3, 8, 0));
    let rolled = a.page(&idle.next_cursor, later).await;
    assert!(rolled.full_listing && !rolled.more, "{rolled:?}");
    let mut starts: Vec<DateTime<Utc>> = rolled.upserted.iter().map(start_of).collect();
    starts.sort();
    assert_eq!(starts.first(), Some(&utc(1, 12, 9)));
    assert_eq!(starts.last(), Some(&utc(3, 2, 9)));
    assert_eq!(starts.len(), 8);
    let after = a.page(&rolled.next_cursor, later).await;
    assert!(
        !after.full_listing && after.upserted.is_empty(),
        "{after:?}"
    );
    let after = a.page(&after.next_cursor, later).await;
    assert!(
        !after.full_listing && after.upserted.is_empty(),
        "{after:?}"
    );
}

#[tokio::test]
async fn radicale_writes_series_overrides_and_instance_deletes() {
    series_writes(Kind::Radicale).await;
}

#[tokio::test]
async fn xandikos_writes_series_overrides_and_instance_deletes() {
    series_writes(Kind::Xandikos).await;
}

#[tokio::test]
async fn radicale_lists_again_when_the_window_rolls_forward() {
    window_rolls_forward(Kind::Radicale).await;
}

#[tokio::test]
async fn xandikos_lists_again_when_the_window_rolls_forward() {
    window_rolls_forward(Kind::Xandikos).await;
}
