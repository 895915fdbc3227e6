//! The Google adapter served for real on 127.0.0.1 against the in-repo fake
//! of Google (`calbridge-fake-google`), driven through the gRPC
//! `CalendarAdapter` client: the OAuth dance, calendars, initial and
//! incremental sync over empty pages, expired sync tokens, idempotent
//! creates, stale versions, deletes, free/busy, token refresh and
//! revocation, rate-limit storms, and push notifications delivered through
//! the adapter's HTTPS webhook to a test AdapterCallback server.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};
use tonic::transport::{Channel, Server};
use tonic::{Code, Request, Response, Status};
use tonic_types::StatusExt;

use calbridge::pb::adapter_callback_server::{AdapterCallback, AdapterCallbackServer};
use calbridge::pb::calendar_adapter_client::CalendarAdapterClient;
use calbridge::pb::{self, provider_credentials, AccessLevel};
use calbridge::time::{instant, to_timestamp};
use calbridge_adapter_google::Config;
use calbridge_fake_google::{
    ClientRegistration, ConsentSpec, Control, FakeConfig, FakeHandle, Fault, NewCalendar,
    PagingQuirks,
};
use calbridge_runtime::metrics::sample_value;

const USER: &str = "alice@example.com";
const CLIENT_ID: &str = "calbridge-test.apps.googleusercontent.com";
const CLIENT_SECRET: &str = "test-client-secret";
const REDIRECT_URI: &str = "http://127.0.0.1:9/oauth/callback";

/// A running fake and adapter.
struct Harness {
    fake: FakeHandle,
    control: Control,
    client: CalendarAdapterClient<Channel>,
    _stop: oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

/// What to change before the adapter starts.
#[derive(Default)]
struct Options {
    fake: Option<FakeConfig>,
    webhook: Option<(tokio::net::TcpListener, Webhook)>,
    /// The scheduler endpoints notifications may be forwarded to.
    allowed_callbacks: Vec<String>,
}

/// The adapter's TLS webhook.
struct Webhook {
    cert: PathBuf,
    key: PathBuf,
}

fn fake_config() -> FakeConfig {
    FakeConfig {
        seed: Some(7),
        validate_responses: true,
        ..FakeConfig::default()
    }
}

async fn start(options: Options) -> Harness {
    let fake = calbridge_fake_google::serve(options.fake.unwrap_or_else(fake_config))
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
    std::fs::write(&id_file, format!("{CLIENT_ID}\n")).unwrap();
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
    let mut webhook_listener = None;
    if let Some((listener, hook)) = options.webhook {
        let port = listener.local_addr().unwrap().port();
        config.webhook_public_url = Some(format!("https://127.0.0.1:{port}/google/notifications"));
        config.webhook_tls_cert = Some(hook.cert);
        config.webhook_tls_key = Some(hook.key);
        webhook_listener = Some(listener);
    }
    config.allowed_callback_endpoints = options.allowed_callbacks;
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(calbridge_adapter_google::serve(
        bound,
        webhook_listener,
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
    Harness {
        fake,
        control,
        client: CalendarAdapterClient::new(channel),
        _stop: stop,
        _dir: dir,
    }
}

fn pkce() -> (String, String) {
    let verifier = URL_SAFE_NO_PAD.encode(Sha256::digest(b"a test verifier of enough entropy"));
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// BuildAuthorizationUrl, the consent redirect (not followed), then
/// ExchangeCode.
async fn connect(h: &mut Harness, level: AccessLevel) -> Result<pb::ProviderCredentials, Status> {
    let (verifier, challenge) = pkce();
    let url = h
        .client
        .build_authorization_url(pb::BuildAuthorizationUrlRequest {
            access_level: level as i32,
            redirect_uri: REDIRECT_URI.into(),
            state: "state-42".into(),
            code_challenge: challenge,
            login_hint: USER.into(),
        })
        .await?
        .into_inner()
        .authorization_url;
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap();
    let consent = browser.get(&url).send().await.unwrap();
    assert_eq!(
        consent.status().as_u16(),
        302,
        "consent answered {}",
        consent.status()
    );
    let location = consent.headers()["location"].to_str().unwrap().to_string();
    let back = reqwest::Url::parse(&location).unwrap();
    assert!(location.starts_with(REDIRECT_URI), "{location}");
    let param = |k: &str| {
        back.query_pairs()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.into_owned())
    };
    assert_eq!(param("state").as_deref(), Some("state-42"));
    let code = param("code").expect("a code in the redirect");
    Ok(h.client
        .exchange_code(pb::ExchangeCodeRequest {
            code,
            code_verifier: verifier,
            redirect_uri: REDIRECT_URI.into(),
            access_level: level as i32,
        })
        .await?
        .into_inner())
}

fn tokens(c: &pb::ProviderCredentials) -> &pb::OAuthTokens {
    match c.secret.as_ref() {
        Some(provider_credentials::Secret::Oauth(t)) => t,
        other => panic!("not oauth: {other:?}"),
    }
}

/// `h` o'clock (UTC) `days` days from today.
fn hour(days: i64, h: u32) -> DateTime<Utc> {
    let today = Utc::now()
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .expect("midnight")
        .and_utc();
    today + chrono::Duration::days(days) + chrono::Duration::hours(i64::from(h))
}

fn window() -> pb::TimeWindow {
    pb::TimeWindow {
        start: Some(to_timestamp(hour(-7, 0))),
        end: Some(to_timestamp(hour(60, 0))),
    }
}

fn google_event(summary: &str, start: DateTime<Utc>, minutes: i64) -> Value {
    json!({
        "summary": summary,
        "start": {"dateTime": start.to_rfc3339(), "timeZone": "Europe/London"},
        "end": {"dateTime": (start + chrono::Duration::minutes(minutes)).to_rfc3339(), "timeZone": "Europe/London"},
    })
}

fn event(title: &str, start: DateTime<Utc>) -> pb::Event {
    pb::Event {
        title: title.into(),
        description: "calbridge test".into(),
        start: Some(instant(start, "Europe/London")),
        end: Some(instant(start + chrono::Duration::hours(1), "Europe/London")),
        attendees: vec![pb::Attendee {
            email: "bob@example.com".into(),
            display_name: "Bob".into(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Every page of a sync from `cursor`, until `more` is false.
async fn sync_all(
    h: &mut Harness,
    creds: &pb::ProviderCredentials,
    cursor: &str,
    page_size: u32,
) -> Result<(Vec<pb::SyncEventsResponse>, String), Status> {
    let mut pages = Vec::new();
    let mut cursor = cursor.to_string();
    for _ in 0..200 {
        let page = h
            .client
            .sync_events(pb::SyncEventsRequest {
                credentials: Some(creds.clone()),
                calendar_id: USER.into(),
                cursor: cursor.clone(),
                window: Some(window()),
                page_size,
                busy_only: false,
            })
            .await?
            .into_inner();
        cursor = page.next_cursor.clone();
        let more = page.more;
        pages.push(page);
        if !more {
            return Ok((pages, cursor));
        }
    }
    panic!("the sync never ended");
}

fn upserted_ids(pages: &[pb::SyncEventsResponse]) -> Vec<String> {
    let mut ids: Vec<String> = pages
        .iter()
        .flat_map(|p| p.upserted.iter().map(|e| e.provider_event_id.clone()))
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// What a scheduler's mirror holds after applying `pages` in order.
fn apply(pages: &[pb::SyncEventsResponse]) -> std::collections::BTreeMap<String, pb::Event> {
    let mut mirror = std::collections::BTreeMap::new();
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

async fn calendar_list_calls(control: &Control) -> u64 {
    control
        .requests()
        .await
        .unwrap()
        .by_method
        .get("calendar.calendarList.list")
        .copied()
        .unwrap_or(0)
}

#[tokio::test]
async fn the_oauth_dance_connects_an_account_named_by_its_primary_calendar() {
    let mut h = start(Options::default()).await;
    let creds = connect(&mut h, AccessLevel::ReadWrite).await.unwrap();
    assert_eq!(creds.provider_account_id, USER);
    assert_eq!(creds.access_level(), AccessLevel::ReadWrite);
    let t = tokens(&creds);
    assert!(!t.access_token.is_empty());
    assert!(
        !t.refresh_token.is_empty(),
        "offline access yields a refresh token"
    );
    assert!(t.expires_at.is_some());
    assert!(t
        .scopes
        .contains(&"https://www.googleapis.com/auth/calendar.events".to_string()));

    let d = h
        .client
        .describe(pb::DescribeRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.provider(), pb::Provider::Google);
    assert!(d.oauth && d.incremental_sync && d.native_free_busy && d.recurrence_writes);
    assert!(!d.push, "no webhook URL configured");
    assert!(h.control.violations().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_grant_short_of_the_access_level_is_refused_naming_the_missing_scope() {
    let mut h = start(Options::default()).await;
    h.control
        .set_consent(&ConsentSpec {
            deny: false,
            granted_scopes: Some(vec!["calendar.calendarlist.readonly".into()]),
        })
        .await
        .unwrap();
    let err = connect(&mut h, AccessLevel::ReadWrite).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message()
            .contains("https://www.googleapis.com/auth/calendar.events"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn calendars_are_listed_with_primary_and_read_only_marked() {
    let mut h = start(Options::default()).await;
    let creds = connect(&mut h, AccessLevel::Read).await.unwrap();
    for (id, role) in [
        ("team#shared@group.calendar.google.com", "reader"),
        ("busy@group.calendar.google.com", "freeBusyReader"),
        ("mine@group.calendar.google.com", "writer"),
    ] {
        h.control
            .add_calendar(&NewCalendar {
                user: USER.into(),
                id: id.into(),
                summary: Some(format!("Calendar {role}")),
                time_zone: Some("Europe/Paris".into()),
                access_role: Some(role.into()),
            })
            .await
            .unwrap();
    }
    let cals = h
        .client
        .list_calendars(pb::ListProviderCalendarsRequest {
            credentials: Some(creds),
        })
        .await
        .unwrap()
        .into_inner()
        .calendars;
    let get = |id: &str| cals.iter().find(|c| c.calendar_id == id).unwrap();
    assert_eq!(cals.len(), 4);
    assert!(get("primary").primary && !get("primary").read_only);
    assert!(get("team#shared@group.calendar.google.com").read_only);
    assert!(get("busy@group.calendar.google.com").read_only);
    let mine = get("mine@group.calendar.google.com");
    assert!(!mine.read_only && !mine.primary);
    assert_eq!(mine.time_zone, "Europe/Paris");
    assert_eq!(mine.name, "Calendar writer");
}

#[tokio::test]
async fn initial_and_incremental_syncs_follow_empty_pages_and_recurring_series() {
    let mut config = fake_config();
    config.paging = PagingQuirks {
        empty_page_every: 2,
        short_page_every: 3,
    };
    let mut h = start(Options {
        fake: Some(config),
        ..Default::default()
    })
    .await;
    let creds = connect(&mut h, AccessLevel::ReadWrite).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..7 {
        let e = h
            .control
            .insert_event(
                USER,
                &google_event(&format!("Meeting {i}"), hour(i + 1, 10), 30),
            )
            .await
            .unwrap();
        ids.push(e["id"].as_str().unwrap().to_string());
    }
    let mut series = google_event("Weekly", hour(2, 9), 60);
    series["recurrence"] = json!(["RRULE:FREQ=WEEKLY;COUNT=3"]);
    let series = h.control.insert_event(USER, &series).await.unwrap();
    let series_id = series["id"].as_str().unwrap().to_string();

    let (pages, cursor) = sync_all(&mut h, &creds, "", 3).await.unwrap();
    assert!(pages.iter().all(|p| p.full_listing));
    assert!(pages.len() > 2, "paged");
    let got = upserted_ids(&pages);
    for id in &ids {
        assert!(got.contains(id), "{id} missing from {got:?}");
    }
    let instances: Vec<&String> = got.iter().filter(|i| i.starts_with(&series_id)).collect();
    assert_eq!(instances.len(), 3, "{got:?}");
    let instance = pages
        .iter()
        .flat_map(|p| &p.upserted)
        .find(|e| e.provider_event_id == *instances[1])
        .unwrap();
    assert_eq!(
        instance.recurrence_link.as_ref().unwrap().series_event_id,
        series_id
    );
    assert_eq!(instance.title, "Weekly");

    // Outside edits: one event retitled, one deleted, one new, one
    // instance of the series cancelled.
    h.control
        .patch_event(USER, &ids[0], &json!({"summary": "Renamed"}))
        .await
        .unwrap();
    h.control.delete_event(USER, &ids[1]).await.unwrap();
    let added = h
        .control
        .insert_event(USER, &google_event("Added", hour(20, 15), 45))
        .await
        .unwrap();
    let added_id = added["id"].as_str().unwrap().to_string();
    h.control.delete_event(USER, instances[2]).await.unwrap();

    let (pages, cursor2) = sync_all(&mut h, &creds, &cursor, 3).await.unwrap();
    assert!(pages.iter().all(|p| !p.full_listing), "incremental");
    let upserted: Vec<&pb::Event> = pages.iter().flat_map(|p| &p.upserted).collect();
    let deleted: Vec<&String> = pages.iter().flat_map(|p| &p.deleted).collect();
    assert!(upserted
        .iter()
        .any(|e| e.provider_event_id == ids[0] && e.title == "Renamed"));
    assert!(upserted.iter().any(|e| e.provider_event_id == added_id));
    assert!(deleted.contains(&&ids[1]), "{deleted:?}");
    assert!(deleted.contains(&instances[2]), "{deleted:?}");

    // Nothing changed: one quiet incremental page.
    let (pages, _) = sync_all(&mut h, &creds, &cursor2, 3).await.unwrap();
    assert!(pages
        .iter()
        .all(|p| p.upserted.is_empty() && p.deleted.is_empty()));

    // A change to the series itself lists the calendar again.
    h.control
        .patch_event(USER, &series_id, &json!({"summary": "Weekly (renamed)"}))
        .await
        .unwrap();
    let (pages, _) = sync_all(&mut h, &creds, &cursor2, 50).await.unwrap();
    assert!(pages.iter().any(|p| p.full_listing));
    let mirror = apply(&pages);
    let renamed: Vec<&pb::Event> = mirror
        .values()
        .filter(|e| e.provider_event_id.starts_with(&series_id))
        .collect();
    assert_eq!(
        renamed.len(),
        2,
        "the cancelled instance stays out: {pages:#?}"
    );
    assert!(renamed.iter().all(|e| e.title == "Weekly (renamed)"));
    assert!(h.control.violations().await.unwrap().is_empty());
}

#[tokio::test]
async fn an_expired_sync_token_is_out_of_range() {
    let mut h = start(Options::default()).await;
    let creds = connect(&mut h, AccessLevel::Read).await.unwrap();
    h.control
        .insert_event(USER, &google_event("One", hour(1, 10), 30))
        .await
        .unwrap();
    let (_, cursor) = sync_all(&mut h, &creds, "", 50).await.unwrap();
    h.control.expire_sync_tokens(USER).await.unwrap();
    let err = sync_all(&mut h, &creds, &cursor, 50).await.unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange);
    // The scheduler then restarts with an empty cursor.
    let (pages, _) = sync_all(&mut h, &creds, "", 50).await.unwrap();
    assert_eq!(upserted_ids(&pages).len(), 1);
    assert!(pages[0].full_listing);
}

#[tokio::test]
async fn creating_twice_with_one_key_makes_one_event() {
    let mut h = start(Options::default()).await;
    let creds = connect(&mut h, AccessLevel::ReadWrite).await.unwrap();
    let mut e = event("Interview", hour(3, 14));
    e.client_event_id = "interview-17".into();
    let create = || pb::ProviderCreateEventRequest {
        credentials: Some(creds.clone()),
        calendar_id: USER.into(),
        event: Some(e.clone()),
        idempotency_key: "0123456789abcdef0123456789abcdef01234567".into(),
    };
    let first = h.client.create_event(create()).await.unwrap().into_inner();
    assert!(!first.already_existed);
    let created = first.event.unwrap();
    assert_eq!(
        created.provider_event_id,
        "0123456789abcdef0123456789abcdef01234567"
    );
    assert_eq!(created.client_event_id, "interview-17");
    assert!(created.managed);
    assert!(!created.version.is_empty());
    assert_eq!(created.attendees[0].email, "bob@example.com");

    let second = h.client.create_event(create()).await.unwrap().into_inner();
    assert!(second.already_existed);
    let again = second.event.unwrap();
    assert_eq!(again.provider_event_id, created.provider_event_id);
    assert_eq!(again.version, created.version);

    let stored = h.control.events(USER).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0]["extendedProperties"]["private"]["calbridgeClientEventId"],
        "interview-17"
    );

    // A read-only account may not write.
    let read = pb::ProviderCredentials {
        access_level: AccessLevel::Read as i32,
        ..creds.clone()
    };
    let err = h
        .client
        .create_event(pb::ProviderCreateEventRequest {
            credentials: Some(read),
            ..create()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn a_stale_version_is_aborted_with_the_current_one_then_delete_is_not_found_twice() {
    let mut h = start(Options::default()).await;
    let creds = connect(&mut h, AccessLevel::ReadWrite).await.unwrap();
    let created = h
        .client
        .create_event(pb::ProviderCreateEventRequest {
            credentials: Some(creds.clone()),
            calendar_id: USER.into(),
            event: Some(event("Review", hour(4, 11))),
            idempotency_key: "abcdef0123".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .event
        .unwrap();
    let outside = h
        .control
        .patch_event(
            USER,
            &created.provider_event_id,
            &json!({"location": "Room 7"}),
        )
        .await
        .unwrap();
    let current = outside["etag"].as_str().unwrap().to_string();
    assert_ne!(current, created.version);

    let update = |version: &str, title: &str| pb::ProviderUpdateEventRequest {
        credentials: Some(creds.clone()),
        calendar_id: USER.into(),
        provider_event_id: created.provider_event_id.clone(),
        event: Some(event(title, hour(4, 12))),
        expected_version: version.into(),
    };
    let err = h
        .client
        .update_event(update(&created.version, "Mine"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Aborted);
    assert_eq!(
        err.metadata()
            .get(calbridge::metadata::CURRENT_VERSION)
            .and_then(|v| v.to_str().ok()),
        Some(current.as_str())
    );
    let updated = h
        .client
        .update_event(update(&current, "Mine"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.title, "Mine");
    assert_eq!(updated.location, "", "every owned field is sent");
    assert_ne!(updated.version, current);

    let delete = |version: &str| pb::ProviderDeleteEventRequest {
        credentials: Some(creds.clone()),
        calendar_id: USER.into(),
        provider_event_id: created.provider_event_id.clone(),
        expected_version: version.into(),
    };
    let err = h.client.delete_event(delete(&current)).await.unwrap_err();
    assert_eq!(err.code(), Code::Aborted);
    h.client
        .delete_event(delete(&updated.version))
        .await
        .unwrap();
    let err = h.client.delete_event(delete("")).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn one_instance_of_a_series_is_moved_and_another_deleted() {
    let mut h = start(Options::default()).await;
    let creds = connect(&mut h, AccessLevel::ReadWrite).await.unwrap();
    let mut series = event("Daily", hour(1, 8));
    series.recurrence = vec!["RRULE:FREQ=DAILY;COUNT=5".into()];
    let created = h
        .client
        .create_event(pb::ProviderCreateEventRequest {
            credentials: Some(creds.clone()),
            calendar_id: USER.into(),
            event: Some(series),
            idempotency_key: "5e41e5".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .event
        .unwrap();
    assert_eq!(created.recurrence, vec!["RRULE:FREQ=DAILY;COUNT=5"]);
    let (pages, cursor) = sync_all(&mut h, &creds, "", 50).await.unwrap();
    let instances: Vec<pb::Event> = apply(&pages).into_values().collect();
    assert_eq!(instances.len(), 5);
    assert!(instances.iter().all(|e| e.version == created.version));

    let mut moved = instances[1].clone();
    moved.title = "Daily (moved)".into();
    moved.start = Some(instant(hour(2, 9), "Europe/London"));
    moved.end = Some(instant(hour(2, 10), "Europe/London"));
    let updated = h
        .client
        .update_event(pb::ProviderUpdateEventRequest {
            credentials: Some(creds.clone()),
            calendar_id: USER.into(),
            provider_event_id: instances[1].provider_event_id.clone(),
            event: Some(moved),
            expected_version: instances[1].version.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.provider_event_id, instances[1].provider_event_id);
    assert_eq!(updated.title, "Daily (moved)");
    assert_eq!(
        updated.recurrence_link.as_ref().unwrap().series_event_id,
        created.provider_event_id
    );
    h.client
        .delete_event(pb::ProviderDeleteEventRequest {
            credentials: Some(creds.clone()),
            calendar_id: USER.into(),
            provider_event_id: instances[2].provider_event_id.clone(),
            expected_version: instances[2].version.clone(),
        })
        .await
        .unwrap();

    let (pages, _) = sync_all(&mut h, &creds, &cursor, 50).await.unwrap();
    let upserted: Vec<&pb::Event> = pages.iter().flat_map(|p| &p.upserted).collect();
    let deleted: Vec<&String> = pages.iter().flat_map(|p| &p.deleted).collect();
    assert!(upserted.iter().any(
        |e| e.provider_event_id == instances[1].provider_event_id && e.title == "Daily (moved)"
    ));
    assert!(
        deleted.contains(&&instances[2].provider_event_id),
        "{pages:#?}"
    );

    // Deleting the series and creating it again with the same key brings
    // the event back rather than failing on the deleted id.
    h.client
        .delete_event(pb::ProviderDeleteEventRequest {
            credentials: Some(creds.clone()),
            calendar_id: USER.into(),
            provider_event_id: created.provider_event_id.clone(),
            expected_version: String::new(),
        })
        .await
        .unwrap();
    let again = h
        .client
        .create_event(pb::ProviderCreateEventRequest {
            credentials: Some(creds.clone()),
            calendar_id: USER.into(),
            event: Some(event("Single again", hour(6, 8))),
            idempotency_key: "5e41e5".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!again.already_existed);
    let revived = again.event.unwrap();
    assert_eq!(revived.status(), pb::EventStatus::Confirmed);
    assert_eq!(revived.title, "Single again");
    assert!(revived.recurrence.is_empty());
    assert!(h.control.violations().await.unwrap().is_empty());
}

#[tokio::test]
async fn free_busy_is_asked_of_google_over_windows_longer_than_ninety_days() {
    let mut h = start(Options::default()).await;
    let creds = connect(&mut h, AccessLevel::FreeBusy).await.unwrap();
    assert!(tokens(&creds)
        .scopes
        .iter()
        .all(|s| !s.contains("calendar.events")));
    let near = hour(2, 9);
    let far = hour(150, 9);
    h.control
        .insert_event(USER, &google_event("Near", near, 60))
        .await
        .unwrap();
    h.control
        .insert_event(USER, &google_event("Far", far, 30))
        .await
        .unwrap();
    let mut free = google_event("Free", hour(3, 9), 30);
    free["transparency"] = json!("transparent");
    h.control.insert_event(USER, &free).await.unwrap();
    let busy = h
        .client
        .query_free_busy(pb::ProviderFreeBusyRequest {
            credentials: Some(creds.clone()),
            calendar_ids: vec![USER.into()],
            window: Some(pb::TimeWindow {
                start: Some(to_timestamp(hour(0, 0))),
                end: Some(to_timestamp(hour(200, 0))),
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .busy;
    assert_eq!(busy.len(), 2, "{busy:?}");
    assert_eq!(busy[0].start, Some(to_timestamp(near)));
    assert_eq!(busy[1].start, Some(to_timestamp(far)));
    assert!(busy
        .iter()
        .all(|b| b.calendar_id == USER && b.status() == pb::BusyStatus::Busy));

    // FREE_BUSY grants reach no events.
    let err = sync_all(&mut h, &creds, "", 50).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn an_expired_access_token_is_refreshed_once_and_the_call_retried() {
    let mut h = start(Options::default()).await;
    let creds = connect(&mut h, AccessLevel::Read).await.unwrap();
    h.control.expire_access_tokens(USER).await.unwrap();
    let cals = h
        .client
        .list_calendars(pb::ListProviderCalendarsRequest {
            credentials: Some(creds.clone()),
        })
        .await
        .unwrap()
        .into_inner()
        .calendars;
    assert_eq!(cals.len(), 1);

    // RefreshCredentials keeps the refresh token Google did not rotate.
    let fresh = h
        .client
        .refresh_credentials(pb::RefreshCredentialsRequest {
            credentials: Some(creds.clone()),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(tokens(&fresh).refresh_token, tokens(&creds).refresh_token);
    assert_ne!(tokens(&fresh).access_token, tokens(&creds).access_token);
    assert_eq!(fresh.provider_account_id, USER);

    // Once the grant is gone, refreshing is UNAUTHENTICATED, and so is a
    // call whose token expired.
    h.control.invalidate_refresh_tokens(USER).await.unwrap();
    let err = h
        .client
        .refresh_credentials(pb::RefreshCredentialsRequest {
            credentials: Some(fresh.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    h.control.expire_access_tokens(USER).await.unwrap();
    let err = h
        .client
        .list_calendars(pb::ListProviderCalendarsRequest {
            credentials: Some(fresh),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(!err.message().contains(&tokens(&creds).refresh_token));
}

#[tokio::test]
async fn revoking_ends_the_grant_at_google() {
    let mut h = start(Options::default()).await;
    let creds = connect(&mut h, AccessLevel::Read).await.unwrap();
    let r = h
        .client
        .revoke_credentials(pb::RevokeCredentialsRequest {
            credentials: Some(creds.clone()),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.revoked_at_provider);
    let err = h
        .client
        .refresh_credentials(pb::RefreshCredentialsRequest {
            credentials: Some(creds),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn a_rate_limit_storm_is_waited_out_with_bounded_attempts() {
    let mut h = start(Options::default()).await;
    let creds = connect(&mut h, AccessLevel::Read).await.unwrap();
    let list = || pb::ListProviderCalendarsRequest {
        credentials: Some(creds.clone()),
    };

    // Two rate-limit answers with Retry-After: waited out inside the call.
    h.control
        .inject_fault(&Fault {
            status: 429,
            reason: "rateLimitExceeded".into(),
            retry_after_seconds: Some(1),
            count: 1,
            path_contains: Some("calendarList".into()),
        })
        .await
        .unwrap();
    h.control
        .inject_fault(&Fault {
            status: 403,
            reason: "userRateLimitExceeded".into(),
            retry_after_seconds: None,
            count: 1,
            path_contains: Some("calendarList".into()),
        })
        .await
        .unwrap();
    let before = calendar_list_calls(&h.control).await;
    let started = Instant::now();
    h.client.list_calendars(list()).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After honoured"
    );
    assert_eq!(calendar_list_calls(&h.control).await - before, 3);

    // A storm longer than the budget: a bounded number of attempts, then
    // RESOURCE_EXHAUSTED with a retry delay for the scheduler.
    h.control
        .inject_fault(&Fault {
            status: 403,
            reason: "rateLimitExceeded".into(),
            retry_after_seconds: None,
            count: 100,
            path_contains: Some("calendarList".into()),
        })
        .await
        .unwrap();
    let before = calendar_list_calls(&h.control).await;
    let started = Instant::now();
    let err = h.client.list_calendars(list()).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(err
        .get_details_retry_info()
        .and_then(|r| r.retry_delay)
        .is_some());
    assert_eq!(calendar_list_calls(&h.control).await - before, 4);
    assert!(started.elapsed() < Duration::from_secs(5));
    h.control.clear_faults().await.unwrap();

    // A Retry-After longer than the budget is handed on at once.
    h.control
        .inject_fault(&Fault {
            status: 503,
            reason: "backendError".into(),
            retry_after_seconds: Some(30),
            count: 5,
            path_contains: Some("calendarList".into()),
        })
        .await
        .unwrap();
    let before = calendar_list_calls(&h.control).await;
    let err = h.client.list_calendars(list()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(
        err.get_details_retry_info().and_then(|r| r.retry_delay),
        Some(Duration::from_secs(30))
    );
    assert_eq!(calendar_list_calls(&h.control).await - before, 1);
}

#[tokio::test]
async fn throttled_requests_are_measured_by_operation_and_status_naming_nobody() {
    // First of all: instruments bind to the global meter provider once.
    let metrics = calbridge_runtime::metrics::Metrics::install("test", None);
    let mut h = start(Options::default()).await;
    let creds = connect(&mut h, AccessLevel::Read).await.unwrap();
    h.control
        .inject_fault(&Fault {
            status: 429,
            reason: "rateLimitExceeded".into(),
            retry_after_seconds: Some(1),
            count: 1,
            path_contains: Some("calendarList".into()),
        })
        .await
        .unwrap();
    h.client
        .list_calendars(pb::ListProviderCalendarsRequest {
            credentials: Some(creds.clone()),
        })
        .await
        .unwrap();

    let text = metrics.render();
    let requests = "http_client_request_duration_seconds_count";
    let list = [
        "calbridge_provider=\"google\"",
        "calbridge_operation=\"calendar.calendarList.list\"",
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
    assert!(
        sample_value(
            &text,
            requests,
            &[&list[..], &["http_response_status_code=\"200\""]].concat()
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    // The code exchange went through the same instruments.
    assert_eq!(
        sample_value(
            &text,
            requests,
            &[
                "calbridge_operation=\"oauth.token.code\"",
                "http_request_method=\"POST\"",
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
            &["calbridge_provider=\"google\""]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample_value(
            &text,
            "calbridge_provider_retry_after_seconds_sum",
            &["calbridge_provider=\"google\""]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample_value(
            &text,
            "calbridge_provider_throttle_wait_seconds_count",
            &[
                "calbridge_provider=\"google\"",
                "calbridge_wait_reason=\"retry_after\""
            ]
        ),
        Some(1.0),
        "{text}"
    );

    // No label names the user, a path, a query, an address or a token.
    let t = tokens(&creds);
    for secret in [&t.access_token, &t.refresh_token] {
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
}

/// A test scheduler: records notifications; answers NOT_FOUND for
/// channels it does not know.
struct Callback {
    known: String,
    seen: mpsc::UnboundedSender<pb::ProviderNotification>,
}

#[tonic::async_trait]
impl AdapterCallback for Callback {
    async fn notify_provider_change(
        &self,
        request: Request<pb::ProviderNotification>,
    ) -> Result<Response<pb::ProviderNotificationAck>, Status> {
        let n = request.into_inner();
        if n.channel_id != self.known {
            return Err(Status::not_found("unknown channel"));
        }
        let _ = self.seen.send(n);
        Ok(Response::new(pb::ProviderNotificationAck {}))
    }
}

/// A CA and a leaf for 127.0.0.1, as PEM: (ca, leaf cert, leaf key).
fn certificates() -> (String, String, String) {
    let t = calbridge_fake_google::dev_tls().unwrap();
    (t.ca_pem, t.cert_pem, t.key_pem)
}

async fn next_notification(
    rx: &mut mpsc::UnboundedReceiver<pb::ProviderNotification>,
    state: &str,
) -> pb::ProviderNotification {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let n = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("a notification arrives in time")
            .expect("the callback server is up");
        if n.resource_state == state {
            return n;
        }
    }
}

#[tokio::test]
async fn an_outside_edit_reaches_the_scheduler_through_the_https_webhook() {
    let (ca, cert, key) = certificates();
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_file, &cert).unwrap();
    std::fs::write(&key_file, &key).unwrap();
    let mut fake = fake_config();
    fake.webhook_ca_pem = Some(ca.clone().into_bytes());
    let webhook = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let webhook_port = webhook.local_addr().unwrap().port();
    // The test's scheduler.
    let (seen, mut rx) = mpsc::unbounded_channel();
    let callback = calbridge_runtime::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let callback_addr = callback.addr;
    let endpoint = format!("http://{callback_addr}");
    // A port that answers but is not allow-listed: nothing may reach it.
    let probe = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let probe_endpoint = format!("http://{}", probe.local_addr().unwrap());
    let mut h = start(Options {
        fake: Some(fake),
        webhook: Some((
            webhook,
            Webhook {
                cert: cert_file,
                key: key_file,
            },
        )),
        allowed_callbacks: vec![endpoint.clone(), "http://127.0.0.1:1".into()],
    })
    .await;
    let d = h
        .client
        .describe(pb::DescribeRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(d.push);
    let creds = connect(&mut h, AccessLevel::Read).await.unwrap();
    tokio::spawn(
        Server::builder()
            .add_service(AdapterCallbackServer::new(Callback {
                known: "ch_test_1".into(),
                seen,
            }))
            .serve_with_incoming(callback.incoming),
    );

    // A channel whose callback is not allow-listed is refused.
    let refused = h
        .client
        .start_watch(pb::StartWatchRequest {
            credentials: Some(creds.clone()),
            calendar_id: USER.into(),
            channel_id: "ch_elsewhere".into(),
            channel_token: "t".into(),
            callback_endpoint: probe_endpoint.clone(),
            ttl_seconds: 3600,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);

    let channel = h
        .client
        .start_watch(pb::StartWatchRequest {
            credentials: Some(creds.clone()),
            calendar_id: USER.into(),
            channel_id: "ch_test_1".into(),
            channel_token: "scheduler-secret-token".into(),
            callback_endpoint: endpoint.clone(),
            ttl_seconds: 3600,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(channel.channel_id, "ch_test_1");
    assert!(!channel.resource_id.is_empty());
    let expires = calbridge::time::from_timestamp(channel.expires_at.as_ref().unwrap()).unwrap();
    assert!(expires > Utc::now() + chrono::Duration::minutes(50));
    let listed = h.control.channels().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0]
        .address
        .starts_with(&format!("https://127.0.0.1:{webhook_port}/")));
    assert!(listed[0].token.as_ref().unwrap().len() <= 256);

    let sync = next_notification(&mut rx, "sync").await;
    assert_eq!(sync.channel_token, "scheduler-secret-token");

    // Someone edits the calendar at Google.
    h.control
        .insert_event(USER, &google_event("Outside", hour(5, 10), 30))
        .await
        .unwrap();
    let exists = next_notification(&mut rx, "exists").await;
    assert_eq!(exists.channel_id, "ch_test_1");
    assert_eq!(exists.channel_token, "scheduler-secret-token");
    assert!(exists.message_number > sync.message_number);

    // The webhook itself: malformed → 400; an unknown channel → 200; an
    // unreachable scheduler → 503.
    let https = reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
        .build()
        .unwrap();
    let url = format!("https://127.0.0.1:{webhook_port}/google/notifications");
    let post = |channel: &str, token: &str| {
        https
            .post(&url)
            .header("X-Goog-Channel-ID", channel)
            .header("X-Goog-Channel-Token", token)
            .header("X-Goog-Resource-State", "exists")
            .header("X-Goog-Message-Number", "9")
            .send()
    };
    let ours =
        calbridge_adapter_google::push::encode_token(&calbridge_adapter_google::push::Route {
            callback_endpoint: endpoint.clone(),
            channel_token: "t".into(),
        })
        .unwrap();
    let down =
        calbridge_adapter_google::push::encode_token(&calbridge_adapter_google::push::Route {
            callback_endpoint: "http://127.0.0.1:1".into(),
            channel_token: "t".into(),
        })
        .unwrap();
    let elsewhere =
        calbridge_adapter_google::push::encode_token(&calbridge_adapter_google::push::Route {
            callback_endpoint: probe_endpoint.clone(),
            channel_token: "t".into(),
        })
        .unwrap();
    // A forged notification naming an endpoint that is not allow-listed is
    // answered like an unknown channel, and nothing connects to it.
    assert_eq!(
        post("ch_test_1", &elsewhere)
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(1), probe.accept())
            .await
            .is_err(),
        "the webhook connected to an endpoint that is not allow-listed"
    );
    assert_eq!(
        post("ch_unknown", &ours).await.unwrap().status().as_u16(),
        200
    );
    assert_eq!(
        post("ch_test_1", "not-ours")
            .await
            .unwrap()
            .status()
            .as_u16(),
        400
    );
    assert_eq!(
        post("ch_test_1", &down).await.unwrap().status().as_u16(),
        503
    );
    let bare = https.post(&url).send().await.unwrap();
    assert_eq!(bare.status().as_u16(), 400);

    // Stopping twice succeeds.
    for _ in 0..2 {
        h.client
            .stop_watch(pb::StopWatchRequest {
                credentials: Some(creds.clone()),
                channel_id: channel.channel_id.clone(),
                resource_id: channel.resource_id.clone(),
            })
            .await
            .unwrap();
    }
    assert!(h
        .control
        .channels()
        .await
        .unwrap()
        .iter()
        .all(|c| c.stopped));
    drop(h.fake);
}
