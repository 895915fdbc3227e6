//! One occurrence of a recurring series edited through the adapter
//! contract, served for real on 127.0.0.1: an instance override moves one
//! occurrence, an instance delete removes one, versions are real
//! preconditions (stale: ABORTED with the current one), ids that name no
//! instance are NOT_FOUND, the master's id replaces the series; and the
//! sync window rolling forward brings instances of an unchanged series.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, TimeZone, Utc};
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic::Code;

use calbridge::pb::calendar_adapter_client::CalendarAdapterClient;
use calbridge::pb::{self, AccessLevel};
use calbridge::time::{instant, to_timestamp};
use calbridge_adapter_sandbox::Config;

const USER: &str = "ines@example.com";
const PRIMARY: &str = "ines@example.com/primary";

struct Harness {
    client: CalendarAdapterClient<Channel>,
    credentials: pb::ProviderCredentials,
    _stop: oneshot::Sender<()>,
}

async fn start() -> Harness {
    let bound = calbridge_runtime::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = bound.addr;
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(calbridge_adapter_sandbox::serve(
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
    let mut client = CalendarAdapterClient::new(channel);
    let credentials = client
        .check_password(pb::CheckPasswordRequest {
            username: USER.into(),
            password: "pw".into(),
            access_level: AccessLevel::ReadWrite as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    Harness {
        client,
        credentials,
        _stop: stop,
    }
}

fn at(day: u32, hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, day, hour, 0, 0).unwrap()
}

fn window(start: DateTime<Utc>, end: DateTime<Utc>) -> pb::TimeWindow {
    pb::TimeWindow {
        start: Some(to_timestamp(start)),
        end: Some(to_timestamp(end)),
    }
}

fn january() -> pb::TimeWindow {
    window(at(1, 0), Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap())
}

fn meeting(title: &str, start: DateTime<Utc>) -> pb::Event {
    pb::Event {
        title: title.into(),
        start: Some(instant(start, "")),
        end: Some(instant(start + Duration::hours(1), "")),
        ..Default::default()
    }
}

/// A weekly 09:00 series on 5, 12, 19 and 26 January 2026.
async fn weekly(h: &mut Harness) -> pb::Event {
    let mut e = meeting("Weekly", at(5, 9));
    e.recurrence = vec!["RRULE:FREQ=WEEKLY;COUNT=4".into()];
    h.client
        .create_event(pb::ProviderCreateEventRequest {
            credentials: Some(h.credentials.clone()),
            calendar_id: PRIMARY.into(),
            event: Some(e),
            idempotency_key: "weekly".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .event
        .unwrap()
}

/// Every page from `cursor` in `w`.
async fn sync_all(
    h: &mut Harness,
    cursor: &str,
    w: pb::TimeWindow,
) -> (Vec<pb::SyncEventsResponse>, String) {
    let mut cursor = cursor.to_string();
    let mut pages = Vec::new();
    for _ in 0..100 {
        let page = h
            .client
            .sync_events(pb::SyncEventsRequest {
                credentials: Some(h.credentials.clone()),
                calendar_id: PRIMARY.into(),
                cursor: cursor.clone(),
                window: Some(w),
                page_size: 0,
                busy_only: false,
            })
            .await
            .unwrap()
            .into_inner();
        cursor = page.next_cursor.clone();
        let more = page.more;
        pages.push(page);
        if !more {
            return (pages, cursor);
        }
    }
    panic!("sync did not end within 100 pages");
}

fn upserted(pages: &[pb::SyncEventsResponse]) -> BTreeMap<String, pb::Event> {
    pages
        .iter()
        .flat_map(|p| &p.upserted)
        .map(|e| (e.provider_event_id.clone(), e.clone()))
        .collect()
}

fn deleted(pages: &[pb::SyncEventsResponse]) -> Vec<String> {
    pages.iter().flat_map(|p| p.deleted.clone()).collect()
}

fn current_version(s: &tonic::Status) -> Option<String> {
    s.metadata()
        .get(calbridge::metadata::CURRENT_VERSION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn update(
    h: &Harness,
    id: &str,
    event: pb::Event,
    expected_version: &str,
) -> pb::ProviderUpdateEventRequest {
    pb::ProviderUpdateEventRequest {
        credentials: Some(h.credentials.clone()),
        calendar_id: PRIMARY.into(),
        provider_event_id: id.into(),
        event: Some(event),
        expected_version: expected_version.into(),
    }
}

fn delete(h: &Harness, id: &str, expected_version: &str) -> pb::ProviderDeleteEventRequest {
    pb::ProviderDeleteEventRequest {
        credentials: Some(h.credentials.clone()),
        calendar_id: PRIMARY.into(),
        provider_event_id: id.into(),
        expected_version: expected_version.into(),
    }
}

#[tokio::test]
async fn an_instance_override_moves_one_occurrence_and_sync_shows_exactly_that() {
    let mut h = start().await;
    let series = weekly(&mut h).await;
    let sid = series.provider_event_id.clone();
    let (pages, cursor) = sync_all(&mut h, "", january()).await;
    let before = upserted(&pages);
    assert_eq!(before.len(), 4);
    let id = format!("{sid}_20260112T090000Z");
    let instance = before[&id].clone();
    assert_eq!(instance.version, series.version);

    let moved = h
        .client
        .update_event(update(
            &h,
            &id,
            meeting("Weekly (moved)", at(13, 14)),
            &instance.version,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(moved.provider_event_id, id);
    assert_ne!(moved.version, instance.version);
    let link = moved.recurrence_link.clone().unwrap();
    assert_eq!(link.series_event_id, sid);
    assert_eq!(link.original_start, Some(instant(at(12, 9), "")));

    let (pages, _) = sync_all(&mut h, &cursor, january()).await;
    assert!(pages.iter().all(|p| !p.full_listing));
    assert!(deleted(&pages).is_empty(), "{pages:#?}");
    let changed = upserted(&pages);
    // The unchanged instances may be named again, unchanged; the moved one
    // is the only difference.
    for (other, e) in &changed {
        if *other != id {
            assert_eq!(e, &before[other]);
        }
    }
    let got = &changed[&id];
    assert_eq!(got.title, "Weekly (moved)");
    assert_eq!(got.start, Some(instant(at(13, 14), "")));
    assert_eq!(got.recurrence_link, moved.recurrence_link);
    assert_eq!(got.version, moved.version);

    // A listing from scratch agrees: four instances, one of them moved.
    let (pages, _) = sync_all(&mut h, "", january()).await;
    let all = upserted(&pages);
    assert_eq!(all.len(), 4);
    assert_eq!(all[&id].title, "Weekly (moved)");
    assert_eq!(
        all.values().filter(|e| e.title == "Weekly").count(),
        3,
        "{all:#?}"
    );
}

#[tokio::test]
async fn an_instance_delete_removes_one_occurrence() {
    let mut h = start().await;
    let sid = weekly(&mut h).await.provider_event_id;
    let (pages, cursor) = sync_all(&mut h, "", january()).await;
    let id = format!("{sid}_20260119T090000Z");
    let version = upserted(&pages)[&id].version.clone();
    h.client
        .delete_event(delete(&h, &id, &version))
        .await
        .unwrap();

    let (pages, _) = sync_all(&mut h, &cursor, january()).await;
    assert_eq!(deleted(&pages), vec![id.clone()]);
    assert!(!upserted(&pages).contains_key(&id));
    let (pages, _) = sync_all(&mut h, "", january()).await;
    let left: Vec<String> = upserted(&pages).into_keys().collect();
    assert_eq!(
        left,
        vec![
            format!("{sid}_20260105T090000Z"),
            format!("{sid}_20260112T090000Z"),
            format!("{sid}_20260126T090000Z"),
        ]
    );
    let again = h
        .client
        .delete_event(delete(&h, &id, ""))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::NotFound);
    let edit = h
        .client
        .update_event(update(&h, &id, meeting("Back?", at(19, 9)), ""))
        .await
        .unwrap_err();
    assert_eq!(edit.code(), Code::NotFound);
}

#[tokio::test]
async fn a_stale_instance_version_is_aborted_with_the_current_one() {
    let mut h = start().await;
    let series = weekly(&mut h).await;
    let sid = series.provider_event_id.clone();
    let id = format!("{sid}_20260105T090000Z");

    // Overridden meanwhile: the series' version no longer holds for it.
    let first = h
        .client
        .update_event(update(
            &h,
            &id,
            meeting("First", at(5, 10)),
            &series.version,
        ))
        .await
        .unwrap()
        .into_inner();
    let stale = h
        .client
        .update_event(update(
            &h,
            &id,
            meeting("Second", at(5, 11)),
            &series.version,
        ))
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::Aborted);
    assert_eq!(current_version(&stale), Some(first.version.clone()));
    let stale = h
        .client
        .delete_event(delete(&h, &id, &series.version))
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::Aborted);
    assert_eq!(current_version(&stale), Some(first.version.clone()));
    let second = h
        .client
        .update_event(update(
            &h,
            &id,
            meeting("Second", at(5, 11)),
            &first.version,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.title, "Second");

    // The series changed meanwhile: an unmodified instance's old version
    // (the series') is stale too.
    let other = format!("{sid}_20260112T090000Z");
    let mut renamed = meeting("Weekly, renamed", at(5, 9));
    renamed.recurrence = vec!["RRULE:FREQ=WEEKLY;COUNT=4".into()];
    let master = h
        .client
        .update_event(update(&h, &sid, renamed, &series.version))
        .await
        .unwrap()
        .into_inner();
    let stale = h
        .client
        .delete_event(delete(&h, &other, &series.version))
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::Aborted);
    assert_eq!(current_version(&stale), Some(master.version.clone()));
    h.client
        .delete_event(delete(&h, &other, &master.version))
        .await
        .unwrap();
}

#[tokio::test]
async fn an_id_that_names_no_instance_of_the_series_is_not_found() {
    let mut h = start().await;
    let sid = weekly(&mut h).await.provider_event_id;
    for id in [
        format!("{sid}_20260113T090000Z"), // not on the rule
        format!("{sid}_20260112T100000Z"), // the right day, not the time
        format!("{sid}_20260202T090000Z"), // past COUNT
        format!("{sid}_garbage"),
        "nosuchseries_20260112T090000Z".to_string(),
    ] {
        let err = h
            .client
            .update_event(update(&h, &id, meeting("X", at(12, 9)), ""))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "update {id}");
        let err = h
            .client
            .delete_event(delete(&h, &id, ""))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "delete {id}");
    }
    let (pages, _) = sync_all(&mut h, "", january()).await;
    assert_eq!(upserted(&pages).len(), 4);
}

#[tokio::test]
async fn updating_the_master_replaces_the_series() {
    let mut h = start().await;
    let series = weekly(&mut h).await;
    let sid = series.provider_event_id.clone();
    let (_, cursor) = sync_all(&mut h, "", january()).await;

    let mut replacement = meeting("Fortnightly", at(6, 15));
    replacement.recurrence = vec!["RRULE:FREQ=WEEKLY;INTERVAL=2;COUNT=2".into()];
    let master = h
        .client
        .update_event(update(&h, &sid, replacement, &series.version))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(master.provider_event_id, sid);
    assert_eq!(
        master.recurrence,
        vec!["RRULE:FREQ=WEEKLY;INTERVAL=2;COUNT=2"]
    );
    assert_ne!(master.version, series.version);

    let (pages, _) = sync_all(&mut h, &cursor, january()).await;
    let now: Vec<(String, String)> = upserted(&pages)
        .into_values()
        .map(|e| (e.provider_event_id, e.title))
        .collect();
    assert_eq!(
        now,
        vec![
            (format!("{sid}_20260106T150000Z"), "Fortnightly".to_string()),
            (format!("{sid}_20260120T150000Z"), "Fortnightly".to_string()),
        ]
    );
    let mut gone = deleted(&pages);
    gone.sort();
    assert_eq!(
        gone,
        ["05", "12", "19", "26"]
            .iter()
            .map(|d| format!("{sid}_202601{d}T090000Z"))
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn instances_entering_the_window_as_it_rolls_forward_appear() {
    let mut h = start().await;
    let mut daily = meeting("Daily", at(1, 9));
    daily.recurrence = vec!["RRULE:FREQ=DAILY;COUNT=60".into()];
    let sid = h
        .client
        .create_event(pb::ProviderCreateEventRequest {
            credentials: Some(h.credentials.clone()),
            calendar_id: PRIMARY.into(),
            event: Some(daily),
            idempotency_key: "daily".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .event
        .unwrap()
        .provider_event_id;
    let instance = |day: u32| format!("{sid}_202601{day:02}T090000Z");

    // The first listing covers 1..15 January.
    let (pages, old_cursor) = sync_all(&mut h, "", window(at(1, 0), at(15, 0))).await;
    assert!(pages.iter().all(|p| p.full_listing));
    assert_eq!(upserted(&pages).len(), 14);

    // Less than a day later: changes only, and there are none.
    let (pages, cursor) = sync_all(&mut h, &old_cursor, window(at(1, 12), at(15, 12))).await;
    assert!(pages.iter().all(|p| !p.full_listing));
    assert!(upserted(&pages).is_empty() && deleted(&pages).is_empty());
    // The cursor still names the window the listing covered.
    assert_eq!(cursor, old_cursor);

    // A day later, with a cursor taken under the older window: the new
    // window is listed in full, the instance that entered it included.
    let later = window(at(2, 0), at(16, 0));
    let (pages, cursor) = sync_all(&mut h, &old_cursor, later).await;
    assert!(pages.iter().all(|p| p.full_listing), "{pages:#?}");
    let listed = upserted(&pages);
    assert_eq!(listed.len(), 14);
    assert!(listed.contains_key(&instance(15)));
    assert!(!listed.contains_key(&instance(1)));
    // Then incrementally again, under the new window.
    let (pages, _) = sync_all(&mut h, &cursor, later).await;
    assert!(pages.iter().all(|p| !p.full_listing));
    assert!(upserted(&pages).is_empty());

    // The start moving alone (a longer past) lists again too.
    let (pages, _) = sync_all(&mut h, &cursor, window(at(1, 0), at(16, 0))).await;
    assert!(pages.iter().all(|p| p.full_listing));
    assert_eq!(upserted(&pages).len(), 15);
}
