//! One occurrence of a recurring series edited through the adapter
//! contract, against the in-repo fake of Google: UpdateEvent / DeleteEvent
//! of an instance id (`<seriesId>_<originalStart>`, as sync reports it)
//! make an exception or a cancelled instance at Google and sync shows
//! exactly that; versions are real preconditions (an exception made
//! outside, or a changed series, since the caller's sync: ABORTED with the
//! version sync now reports); ids naming no instance are NOT_FOUND; the
//! master's id replaces the series; and the sync window rolling forward a
//! day lists the calendar again, bringing instances that entered it.

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, Duration, Utc};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic::{Code, Status};

use calbridge::pb::calendar_adapter_client::CalendarAdapterClient;
use calbridge::pb::{self, AccessLevel};
use calbridge::time::{instant, to_timestamp};
use calbridge_adapter_google::Config;
use calbridge_fake_google::{ClientRegistration, Control, FakeConfig, FakeHandle};

const USER: &str = "ines@example.com";
const CLIENT_ID: &str = "calbridge-test.apps.googleusercontent.com";
const CLIENT_SECRET: &str = "test-client-secret";
const REDIRECT_URI: &str = "http://127.0.0.1:9/oauth/callback";

struct Harness {
    _fake: FakeHandle,
    control: Control,
    client: CalendarAdapterClient<Channel>,
    creds: pb::ProviderCredentials,
    _stop: oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

/// The fake, the adapter, and an account connected READ_WRITE.
async fn start() -> Harness {
    let fake = calbridge_fake_google::serve(FakeConfig {
        seed: Some(11),
        validate_responses: true,
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let control = fake.control();
    control
        .add_client(&ClientRegistration {
            client_id: CLIENT_ID.into(),
            client_secret: CLIENT_SECRET.into(),
            redirect_uris: vec![REDIRECT_URI.into()],
        })
        .await
        .unwrap();
    control.add_user(USER).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let id_file = dir.path().join("client_id");
    let secret_file = dir.path().join("client_secret");
    std::fs::write(&id_file, CLIENT_ID).unwrap();
    std::fs::write(&secret_file, CLIENT_SECRET).unwrap();
    let bound = calbridge_runtime::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = bound.addr;
    let base = fake.base_url();
    let mut config = Config::new(addr, id_file, secret_file);
    config.auth_url = format!("{base}/o/oauth2/v2/auth");
    config.token_url = format!("{base}/token");
    config.revoke_url = format!("{base}/revoke");
    config.api_base_url = format!("{base}/calendar/v3/");
    config.retry_base_delay_ms = 50;
    config.retry_budget_ms = 3000;
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(calbridge_adapter_google::serve(
        bound,
        None,
        config,
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
    let creds = connect(&mut client).await;
    Harness {
        _fake: fake,
        control,
        client,
        creds,
        _stop: stop,
        _dir: dir,
    }
}

/// The consent URL, the fake's consent redirect (not followed), the code
/// exchange.
async fn connect(client: &mut CalendarAdapterClient<Channel>) -> pb::ProviderCredentials {
    let verifier = URL_SAFE_NO_PAD.encode(Sha256::digest(b"another verifier of enough entropy"));
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let url = client
        .build_authorization_url(pb::BuildAuthorizationUrlRequest {
            access_level: AccessLevel::ReadWrite as i32,
            redirect_uri: REDIRECT_URI.into(),
            state: "s".into(),
            code_challenge: challenge,
            login_hint: USER.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .authorization_url;
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap();
    let consent = browser.get(&url).send().await.unwrap();
    let location = consent.headers()["location"].to_str().unwrap().to_string();
    let back = reqwest::Url::parse(&location).unwrap();
    let code = back
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .expect("a code in the redirect");
    client
        .exchange_code(pb::ExchangeCodeRequest {
            code,
            code_verifier: verifier,
            redirect_uri: REDIRECT_URI.into(),
            access_level: AccessLevel::ReadWrite as i32,
        })
        .await
        .unwrap()
        .into_inner()
}

/// `h` o'clock (UTC) `days` days from today.
fn hour(days: i64, h: u32) -> DateTime<Utc> {
    let today = Utc::now()
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    today + Duration::days(days) + Duration::hours(i64::from(h))
}

fn window(from_day: i64, to_day: i64) -> pb::TimeWindow {
    pb::TimeWindow {
        start: Some(to_timestamp(hour(from_day, 0))),
        end: Some(to_timestamp(hour(to_day, 0))),
    }
}

fn event(title: &str, start: DateTime<Utc>) -> pb::Event {
    pb::Event {
        title: title.into(),
        start: Some(instant(start, "UTC")),
        end: Some(instant(start + Duration::hours(1), "UTC")),
        ..Default::default()
    }
}

/// A daily 08:00 UTC series of `count` from tomorrow.
async fn daily(h: &mut Harness, count: u32) -> pb::Event {
    let mut series = event("Daily", hour(1, 8));
    series.recurrence = vec![format!("RRULE:FREQ=DAILY;COUNT={count}")];
    h.client
        .create_event(pb::ProviderCreateEventRequest {
            credentials: Some(h.creds.clone()),
            calendar_id: USER.into(),
            event: Some(series),
            idempotency_key: "da11y0".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .event
        .unwrap()
}

/// The instance id of the series' occurrence `day` days from today.
fn instance_id(series: &pb::Event, day: i64) -> String {
    format!(
        "{}_{}",
        series.provider_event_id,
        hour(day, 8).format("%Y%m%dT%H%M%SZ")
    )
}

/// Every page of a sync from `cursor` in `w`.
async fn sync_all(
    h: &mut Harness,
    cursor: &str,
    w: pb::TimeWindow,
) -> (Vec<pb::SyncEventsResponse>, String) {
    let mut cursor = cursor.to_string();
    let mut pages = Vec::new();
    for _ in 0..200 {
        let page = h
            .client
            .sync_events(pb::SyncEventsRequest {
                credentials: Some(h.creds.clone()),
                calendar_id: USER.into(),
                cursor: cursor.clone(),
                window: Some(w),
                page_size: 100,
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
    panic!("the sync never ended");
}

fn upserted(pages: &[pb::SyncEventsResponse]) -> BTreeMap<String, pb::Event> {
    pages
        .iter()
        .flat_map(|p| &p.upserted)
        .map(|e| (e.provider_event_id.clone(), e.clone()))
        .collect()
}

/// What a mirror holds after a listing from scratch: each page's upserts,
/// then its deletions (a cancelled exception met after its master takes
/// back the instance the master's expansion named).
fn listed(pages: &[pb::SyncEventsResponse]) -> BTreeMap<String, pb::Event> {
    let mut mirror = BTreeMap::new();
    for p in pages {
        for e in &p.upserted {
            mirror.insert(e.provider_event_id.clone(), e.clone());
        }
        for d in &p.deleted {
            mirror.remove(d);
        }
    }
    mirror
}

fn deleted(pages: &[pb::SyncEventsResponse]) -> Vec<String> {
    pages.iter().flat_map(|p| p.deleted.clone()).collect()
}

fn current_version(s: &Status) -> Option<String> {
    s.metadata()
        .get(calbridge::metadata::CURRENT_VERSION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn update(h: &Harness, id: &str, e: pb::Event, version: &str) -> pb::ProviderUpdateEventRequest {
    pb::ProviderUpdateEventRequest {
        credentials: Some(h.creds.clone()),
        calendar_id: USER.into(),
        provider_event_id: id.into(),
        event: Some(e),
        expected_version: version.into(),
    }
}

fn delete(h: &Harness, id: &str, version: &str) -> pb::ProviderDeleteEventRequest {
    pb::ProviderDeleteEventRequest {
        credentials: Some(h.creds.clone()),
        calendar_id: USER.into(),
        provider_event_id: id.into(),
        expected_version: version.into(),
    }
}

#[tokio::test]
async fn an_instance_override_moves_one_occurrence_and_sync_shows_exactly_that() {
    let mut h = start().await;
    let series = daily(&mut h, 5).await;
    let (pages, cursor) = sync_all(&mut h, "", window(-7, 30)).await;
    let before = upserted(&pages);
    assert_eq!(before.len(), 5);
    let id = instance_id(&series, 2);
    let seen = before[&id].clone();

    let moved = h
        .client
        .update_event(update(
            &h,
            &id,
            event("Daily (moved)", hour(2, 15)),
            &seen.version,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(moved.provider_event_id, id);
    assert_ne!(moved.version, seen.version);
    let link = moved.recurrence_link.clone().unwrap();
    assert_eq!(link.series_event_id, series.provider_event_id);
    assert_eq!(link.original_start, Some(instant(hour(2, 8), "UTC")));

    let (pages, _) = sync_all(&mut h, &cursor, window(-7, 30)).await;
    assert!(pages.iter().all(|p| !p.full_listing), "{pages:#?}");
    assert!(deleted(&pages).is_empty(), "{pages:#?}");
    let changed = upserted(&pages);
    assert_eq!(changed.keys().collect::<Vec<_>>(), vec![&id]);
    let got = &changed[&id];
    assert_eq!(got.title, "Daily (moved)");
    assert_eq!(got.start, Some(instant(hour(2, 15), "UTC")));
    assert_eq!(got.recurrence_link, moved.recurrence_link);
    assert_eq!(got.version, moved.version);

    // A listing from scratch agrees: five instances, that one moved.
    let (pages, _) = sync_all(&mut h, "", window(-7, 30)).await;
    let all = listed(&pages);
    assert_eq!(all.len(), 5);
    assert_eq!(all[&id].title, "Daily (moved)");
    assert_eq!(all.values().filter(|e| e.title == "Daily").count(), 4);
    assert!(h.control.violations().await.unwrap().is_empty());
}

#[tokio::test]
async fn an_instance_delete_removes_one_occurrence() {
    let mut h = start().await;
    let series = daily(&mut h, 5).await;
    let (pages, cursor) = sync_all(&mut h, "", window(-7, 30)).await;
    let id = instance_id(&series, 3);
    let version = upserted(&pages)[&id].version.clone();
    h.client
        .delete_event(delete(&h, &id, &version))
        .await
        .unwrap();
    // At Google the instance is a cancelled exception of the series.
    let stored = h.control.events(USER).await.unwrap();
    let tombstone = stored.iter().find(|e| e["id"] == json!(id)).unwrap();
    assert_eq!(tombstone["status"], "cancelled");
    assert_eq!(
        tombstone["recurringEventId"],
        json!(series.provider_event_id)
    );

    let (pages, _) = sync_all(&mut h, &cursor, window(-7, 30)).await;
    assert_eq!(deleted(&pages), vec![id.clone()]);
    assert!(upserted(&pages).is_empty(), "{pages:#?}");
    let (pages, _) = sync_all(&mut h, "", window(-7, 30)).await;
    let left: Vec<String> = listed(&pages).into_keys().collect();
    let want: Vec<String> = [1, 2, 4, 5]
        .iter()
        .map(|d| instance_id(&series, *d))
        .collect();
    assert_eq!(left, want);

    // Gone: deleting or editing it again is NOT_FOUND.
    let again = h
        .client
        .delete_event(delete(&h, &id, ""))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::NotFound);
    let edit = h
        .client
        .update_event(update(&h, &id, event("Back?", hour(3, 8)), ""))
        .await
        .unwrap_err();
    assert_eq!(edit.code(), Code::NotFound);
}

#[tokio::test]
async fn a_stale_instance_version_is_aborted_with_the_version_sync_now_reports() {
    let mut h = start().await;
    let series = daily(&mut h, 5).await;
    let (pages, cursor) = sync_all(&mut h, "", window(-7, 30)).await;
    let seen = upserted(&pages);
    let first = instance_id(&series, 1);
    let second = instance_id(&series, 2);

    // Overridden outside since the caller's sync: the series' etag the
    // caller holds no longer holds for that instance.
    h.control
        .patch_event(USER, &first, &json!({"location": "Room 9"}))
        .await
        .unwrap();
    let (pages, _) = sync_all(&mut h, &cursor, window(-7, 30)).await;
    let now = upserted(&pages)[&first].version.clone();
    assert_ne!(now, seen[&first].version);
    let stale = h
        .client
        .update_event(update(
            &h,
            &first,
            event("Mine", hour(1, 9)),
            &seen[&first].version,
        ))
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::Aborted);
    assert_eq!(current_version(&stale), Some(now.clone()));
    let stale = h
        .client
        .delete_event(delete(&h, &first, &seen[&first].version))
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::Aborted);
    assert_eq!(current_version(&stale), Some(now.clone()));
    let mine = h
        .client
        .update_event(update(&h, &first, event("Mine", hour(1, 9)), &now))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(mine.title, "Mine");

    // The series changed outside: an unmodified instance's old version
    // (the series' old etag) is stale; the series' new one holds.
    let master = h
        .control
        .patch_event(
            USER,
            &series.provider_event_id,
            &json!({"summary": "Daily, renamed"}),
        )
        .await
        .unwrap();
    let renamed = master["etag"].as_str().unwrap().to_string();
    let stale = h
        .client
        .delete_event(delete(&h, &second, &seen[&second].version))
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::Aborted);
    assert_eq!(current_version(&stale), Some(renamed.clone()));
    h.client
        .delete_event(delete(&h, &second, &renamed))
        .await
        .unwrap();
    assert!(h.control.violations().await.unwrap().is_empty());
}

#[tokio::test]
async fn an_id_that_names_no_instance_of_the_series_is_not_found() {
    let mut h = start().await;
    let series = daily(&mut h, 5).await;
    let sid = &series.provider_event_id;
    let off_rule = format!("{sid}_{}", hour(2, 9).format("%Y%m%dT%H%M%SZ"));
    let past_count = instance_id(&series, 9);
    let no_series = format!("a0b1c2d3e4_{}", hour(2, 8).format("%Y%m%dT%H%M%SZ"));
    for id in [off_rule, past_count, no_series] {
        for version in ["", "\"123\""] {
            let err = h
                .client
                .update_event(update(&h, &id, event("X", hour(2, 8)), version))
                .await
                .unwrap_err();
            assert_eq!(err.code(), Code::NotFound, "update {id} at {version:?}");
            let err = h
                .client
                .delete_event(delete(&h, &id, version))
                .await
                .unwrap_err();
            assert_eq!(err.code(), Code::NotFound, "delete {id} at {version:?}");
        }
    }
    let (pages, _) = sync_all(&mut h, "", window(-7, 30)).await;
    assert_eq!(listed(&pages).len(), 5);
}

#[tokio::test]
async fn updating_the_master_replaces_the_series() {
    let mut h = start().await;
    let series = daily(&mut h, 5).await;
    let (pages, cursor) = sync_all(&mut h, "", window(-7, 30)).await;
    let mut mirror = upserted(&pages);

    let mut replacement = event("Every other day", hour(1, 14));
    replacement.recurrence = vec!["RRULE:FREQ=DAILY;INTERVAL=2;COUNT=2".into()];
    let master = h
        .client
        .update_event(update(
            &h,
            &series.provider_event_id,
            replacement,
            &series.version,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(master.provider_event_id, series.provider_event_id);
    assert_eq!(
        master.recurrence,
        vec!["RRULE:FREQ=DAILY;INTERVAL=2;COUNT=2"]
    );
    assert_ne!(master.version, series.version);

    // A changed master lists the calendar again; the mirror, diffed
    // against that listing, holds the new series only.
    let (pages, _) = sync_all(&mut h, &cursor, window(-7, 30)).await;
    assert!(pages.iter().all(|p| p.full_listing));
    let relisted = listed(&pages);
    mirror.retain(|id, _| relisted.contains_key(id));
    mirror.extend(relisted);
    let got: Vec<(String, String)> = mirror
        .into_values()
        .map(|e| (e.provider_event_id, e.title))
        .collect();
    let sid = &series.provider_event_id;
    let stamp = |d: i64| hour(d, 14).format("%Y%m%dT%H%M%SZ").to_string();
    assert_eq!(
        got,
        vec![
            (format!("{sid}_{}", stamp(1)), "Every other day".to_string()),
            (format!("{sid}_{}", stamp(3)), "Every other day".to_string()),
        ]
    );
}

#[tokio::test]
async fn instances_entering_the_window_as_it_rolls_forward_appear() {
    let mut h = start().await;
    let series = daily(&mut h, 40).await;
    // The first listing covers the next ten days.
    let (pages, old_cursor) = sync_all(&mut h, "", window(0, 10)).await;
    assert_eq!(upserted(&pages).len(), 9);
    assert!(!upserted(&pages).contains_key(&instance_id(&series, 10)));

    // Half a day on: incremental, and nothing changed at Google.
    let half = pb::TimeWindow {
        start: Some(to_timestamp(hour(0, 12))),
        end: Some(to_timestamp(hour(10, 12))),
    };
    let (pages, _) = sync_all(&mut h, &old_cursor, half).await;
    assert!(pages.iter().all(|p| !p.full_listing));
    assert!(upserted(&pages).is_empty() && deleted(&pages).is_empty());

    // A day on, with the cursor taken under the older window: the new
    // window is listed in full, the instance that entered it included.
    let (pages, cursor) = sync_all(&mut h, &old_cursor, window(1, 11)).await;
    assert!(pages.iter().all(|p| p.full_listing), "{pages:#?}");
    let relisted = listed(&pages);
    assert!(relisted.contains_key(&instance_id(&series, 10)));
    assert_eq!(relisted.len(), 10);
    // Then incrementally again.
    let (pages, _) = sync_all(&mut h, &cursor, window(1, 11)).await;
    assert!(pages.iter().all(|p| !p.full_listing));
    assert!(upserted(&pages).is_empty());
}
