//! iCloud through the real scheduler and the real CalDAV adapter, against
//! an "iCloud-shaped" proxy in front of Radicale (`calbridge_e2e::icloud`):
//! connecting with PROVIDER_ICLOUD and no server URL (the adapter's iCloud
//! preset points at the proxy) through principal discovery on the main host
//! and a calendar home on the partition host; a wrong app-specific password;
//! the initial sync; an outside edit reaching the change feed by polling;
//! writes through calbridge landing on the server although answers carry
//! Apple properties, a duplicated DTSTAMP and no PUT ETag; a FREE_BUSY
//! account whose free/busy is derived from events (free-busy-query answers
//! 400) without storing content; sync surviving 503s and cross-host
//! redirects; and a listing read by one calendar-query, or by PROPFIND and
//! multigets when the query is refused or fails.
//!
//! Needs the test venv (`CALBRIDGE_TEST_PYTHON`, see `scripts/test-env`)
//! and the binaries (`cargo build --workspace --bins`).

use std::time::Duration;

use anyhow::{anyhow, ensure, Result};
use calbridge::pb::{self, ChangeKind, WriteOutcome};
use calbridge::time::{instant, to_timestamp};
use calbridge_e2e::caldav::{
    list_events, timed_lines, vcalendar, CaldavStack, DavServer, ServerKind,
};
use calbridge_e2e::icloud::{Host, IcloudProxy, DSID};
use calbridge_e2e::{
    change_cursor, changes_after, eventually, free_port, sync_now_and_wait, wait_synced, Proc,
    SchedulerClient,
};
use chrono::{DateTime, TimeZone, Utc};

/// A window covering every event these tests make.
fn window() -> pb::TimeWindow {
    let now = Utc::now();
    pb::TimeWindow {
        start: Some(to_timestamp(now - chrono::Duration::days(1))),
        end: Some(to_timestamp(now + chrono::Duration::days(60))),
    }
}

fn nine_am_in(days: i64) -> DateTime<Utc> {
    Utc.from_utc_datetime(
        &(Utc::now() + chrono::Duration::days(days))
            .date_naive()
            .and_hms_opt(9, 0, 0)
            .expect("09:00"),
    )
}

/// Radicale, the iCloud proxy in front of it, and the adapter (its iCloud
/// preset pointed at the proxy) with the scheduler (`--adapter icloud=`).
struct Icloud {
    server: DavServer,
    proxy: IcloudProxy,
    stack: CaldavStack,
    /// The calendar's iCloud-style id (`/<dsid>/calendars/cal/`).
    calendar: String,
}

impl Icloud {
    async fn start() -> Result<Icloud> {
        let server = DavServer::start(ServerKind::Radicale).await?;
        let proxy = IcloudProxy::start(&server).await?;
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("scheduler.toml");
        // Short backoffs: the throttling test waits for retries.
        std::fs::write(
            &config,
            "[sync]\nbackoff_base_ms = 100\nbackoff_max_seconds = 2\n",
        )?;
        let adapter = Proc::start(
            "calbridge-adapter-caldav",
            &[
                "--listen".into(),
                "127.0.0.1:0".into(),
                "--poll-interval-seconds".into(),
                "1".into(),
                "--default-server-url".into(),
                proxy.base.clone(),
                "--allow-private-network".into(),
                calbridge_e2e::caldav::LOOPBACK_SERVERS.into(),
            ],
        )
        .await?;
        let scheduler_port = free_port();
        let scheduler = Proc::start(
            "calbridge-scheduler",
            &[
                "--listen".into(),
                format!("127.0.0.1:{scheduler_port}"),
                "--data-dir".into(),
                dir.path().display().to_string(),
                "--mode".into(),
                "local".into(),
                "--adapter".into(),
                format!("icloud={}", adapter.url()),
                "--config".into(),
                config.display().to_string(),
            ],
        )
        .await?;
        let calendar = proxy.calendar_id(&server.calendar);
        Ok(Icloud {
            server,
            proxy,
            stack: CaldavStack {
                dir,
                adapter,
                scheduler,
                scheduler_port,
                scheduler_config: Some(config),
            },
            calendar,
        })
    }

    /// A tenant client.
    async fn client(&self, name: &str) -> Result<SchedulerClient> {
        let (_, key) = self.stack.tenant(name).await?;
        self.stack.client(Some(&key)).await
    }

    /// ConnectPasswordAccount with PROVIDER_ICLOUD and no server URL.
    async fn connect(
        &self,
        c: &mut SchedulerClient,
        password: &str,
        access: pb::AccessLevel,
    ) -> Result<pb::Account, tonic::Status> {
        c.connect_password_account(pb::ConnectPasswordAccountRequest {
            provider: pb::Provider::Icloud as i32,
            server_url: String::new(),
            username: self.server.username.clone(),
            password: password.to_string(),
            access_level: access as i32,
        })
        .await
        .map(|r| r.into_inner())
    }

    /// A tenant client and an account connected with the right password,
    /// its initial sync done.
    async fn connected(
        &self,
        tenant: &str,
        access: pb::AccessLevel,
    ) -> Result<(SchedulerClient, String)> {
        let mut c = self.client(tenant).await?;
        let account = self
            .connect(&mut c, &self.server.password, access)
            .await?
            .account_id;
        wait_synced(&mut c, &account).await?;
        Ok((c, account))
    }

    /// Every request the proxy saw carried Basic credentials, except the
    /// ones that were refused for the lack of them (there are none).
    fn check_preemptive_basic(&self) -> Result<()> {
        let without: Vec<_> = self
            .proxy
            .requests()
            .into_iter()
            .filter(|r| !r.basic_auth)
            .collect();
        ensure!(
            without.is_empty(),
            "requests without Basic credentials: {without:#?}"
        );
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_icloud_account_connects_via_its_partition_host_refuses_a_wrong_app_password_and_syncs_outside_edits(
) -> Result<()> {
    let t = Icloud::start().await?;
    let start = nine_am_in(2);
    t.server
        .put(
            "seed.ics",
            &vcalendar(&[timed_lines("seed-1", "Planning", start, 60)]),
        )
        .await?;
    let mut c = t.client("icloud").await?;

    // Wrong app-specific password: UNAUTHENTICATED, nothing stored.
    let err = t
        .connect(&mut c, "abcd-efgh-ijkl-mnop", pb::AccessLevel::ReadWrite)
        .await
        .expect_err("a wrong password is refused");
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    assert!(!err.message().contains("abcd-efgh"), "{err:?}");
    let accounts = calbridge_e2e::accounts(&mut c).await?;
    assert!(accounts.is_empty(), "no account stored: {accounts:?}");

    let password = t.server.password.clone();
    let account = t
        .connect(&mut c, &password, pb::AccessLevel::ReadWrite)
        .await?;
    assert_eq!(account.provider(), pb::Provider::Icloud);
    assert!(
        account
            .provider_account_id
            .ends_with(&format!("/{DSID}/principal/")),
        "{account:?}"
    );
    let calendars = c
        .list_calendars(pb::ListCalendarsRequest {
            account_id: account.account_id.clone(),
        })
        .await?
        .into_inner()
        .calendars;
    assert_eq!(
        calendars
            .iter()
            .map(|c| c.calendar_id.as_str())
            .collect::<Vec<_>>(),
        vec![t.calendar.as_str()],
        "only the calendar, not the home: {calendars:?}"
    );
    wait_synced(&mut c, &account.account_id).await?;
    let events = list_events(&mut c, &account.account_id, &t.calendar, window()).await?;
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0].title, "Planning");
    assert_eq!(
        events[0].provider_event_id,
        format!("{}seed.ics", t.calendar)
    );

    // After discovery everything went to the partition host.
    let reqs = t.proxy.requests();
    let calendar_requests: Vec<_> = reqs
        .iter()
        .filter(|r| r.path.contains("/calendars/"))
        .collect();
    ensure!(!calendar_requests.is_empty());
    ensure!(
        calendar_requests.iter().all(|r| r.host == Host::Partition),
        "calendar requests on the main host: {calendar_requests:#?}"
    );
    t.check_preemptive_basic()?;

    // An outside edit reaches the change feed by polling alone.
    let c0 = change_cursor(&mut c).await?;
    t.server
        .put(
            "seed.ics",
            &vcalendar(&[timed_lines(
                "seed-1",
                "Planning (moved)",
                start + chrono::Duration::hours(2),
                60,
            )]),
        )
        .await?;
    let change = eventually(
        Duration::from_secs(30),
        "the outside edit on the feed",
        || {
            let mut c = c.clone();
            let c0 = c0.clone();
            async move {
                changes_after(&mut c, &c0)
                    .await
                    .ok()?
                    .into_iter()
                    .find(|ch| ch.kind() == ChangeKind::EventUpdated)
            }
        },
    )
    .await?;
    let ev = change
        .event
        .clone()
        .ok_or_else(|| anyhow!("no event in {change:?}"))?;
    assert_eq!(ev.title, "Planning (moved)");
    assert_eq!(ev.provider_event_id, format!("{}seed.ics", t.calendar));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn icloud_upserts_and_deletes_through_calbridge_land_on_the_server_despite_apple_rewrites(
) -> Result<()> {
    let t = Icloud::start().await?;
    let (mut c, account) = t
        .connected("icloud-writes", pb::AccessLevel::ReadWrite)
        .await?;
    let c0 = change_cursor(&mut c).await?;
    let start = nine_am_in(3);
    let event = |title: &str| pb::Event {
        title: title.into(),
        location: "Room 4".into(),
        start: Some(instant(start, "Europe/Berlin")),
        end: Some(instant(
            start + chrono::Duration::minutes(45),
            "Europe/Berlin",
        )),
        ..Default::default()
    };
    let upsert = |e: pb::Event| pb::UpsertEventRequest {
        account_id: account.clone(),
        calendar_id: t.calendar.clone(),
        client_event_id: "review-1".into(),
        event: Some(e),
        ..Default::default()
    };

    // Create: the PUT answer has no ETag; the event is re-read.
    let first = c
        .upsert_event(upsert(event("Design review")))
        .await?
        .into_inner();
    assert_eq!(first.outcome(), WriteOutcome::Created);
    let stored = first.event.expect("the stored event");
    assert!(!stored.version.is_empty(), "{stored:?}");
    assert_eq!(stored.title, "Design review");
    let href = stored.provider_event_id.clone();
    assert!(
        href.starts_with(&t.calendar) && href.ends_with(".ics"),
        "{href}"
    );
    let radicale_href = format!(
        "{}{}",
        t.server.calendar,
        href.strip_prefix(&t.calendar).unwrap_or(&href)
    );
    let (status, body) = t.server.get(&radicale_href).await?;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("SUMMARY:Design review"), "{body}");

    // Update: the current data comes back with Apple properties and two
    // DTSTAMPs; the rewrite still lands.
    let second = c
        .upsert_event(upsert(event("Design review (v2)")))
        .await?
        .into_inner();
    assert_eq!(second.outcome(), WriteOutcome::Updated);
    assert_eq!(
        second.event.as_ref().map(|e| e.title.as_str()),
        Some("Design review (v2)")
    );
    let (_, body) = t.server.get(&radicale_href).await?;
    assert!(body.contains("SUMMARY:Design review (v2)"), "{body}");
    assert_eq!(
        body.lines().filter(|l| l.starts_with("DTSTAMP")).count(),
        1,
        "one DTSTAMP written back: {body}"
    );

    // Delete.
    let gone = c
        .delete_event(pb::DeleteEventRequest {
            account_id: account.clone(),
            calendar_id: t.calendar.clone(),
            client_event_id: "review-1".into(),
            provider_event_id: String::new(),
            expected_version: String::new(),
        })
        .await?
        .into_inner();
    assert_eq!(gone.outcome(), WriteOutcome::Deleted);
    assert_eq!(t.server.get(&radicale_href).await?.0, 404);

    // Our own writes do not come back as outside changes.
    sync_now_and_wait(&mut c, &account, "").await?;
    let echoes = changes_after(&mut c, &c0).await?;
    assert!(echoes.is_empty(), "our own writes echoed: {echoes:#?}");
    t.check_preemptive_basic()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_free_busy_icloud_account_derives_busy_intervals_from_events_without_storing_content(
) -> Result<()> {
    let t = Icloud::start().await?;
    let start = nine_am_in(2);
    t.server
        .put(
            "fb.ics",
            &vcalendar(&[timed_lines("fb-1", "Secret Zanzibar plan", start, 60)]),
        )
        .await?;
    let (mut c, account) = t
        .connected("icloud-freebusy", pb::AccessLevel::FreeBusy)
        .await?;
    let day = pb::TimeWindow {
        start: Some(to_timestamp(start - chrono::Duration::hours(9))),
        end: Some(to_timestamp(start + chrono::Duration::hours(15))),
    };
    let r = c
        .query_free_busy(pb::QueryFreeBusyRequest {
            account_ids: vec![account.clone()],
            window: Some(day),
        })
        .await?
        .into_inner();
    let busy: Vec<_> = r.accounts[0]
        .busy
        .iter()
        .map(|b| (b.start.map(|t| t.seconds), b.end.map(|t| t.seconds)))
        .collect();
    assert_eq!(
        busy,
        vec![(
            Some(start.timestamp()),
            Some((start + chrono::Duration::hours(1)).timestamp())
        )]
    );
    // iCloud refused the free-busy-query; the intervals were derived.
    ensure!(
        t.proxy
            .requests()
            .iter()
            .any(|r| r.report == "free-busy-query" && r.status == 400),
        "free-busy-query was tried: {:#?}",
        t.proxy.requests()
    );

    let mut stack = t.stack;
    drop(c);
    assert!(
        stack.scheduler.terminate().await?,
        "the scheduler stops cleanly"
    );
    assert!(
        !calbridge_e2e::dir_contains(&stack.store_dir(), b"Zanzibar")?,
        "no event content in the store of a FREE_BUSY account"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn icloud_discovery_retries_a_missing_home_and_sync_survives_503s_and_cross_host_redirects(
) -> Result<()> {
    let t = Icloud::start().await?;
    // The home is announced on the main host: every calendar request is
    // redirected across hosts to the partition host.
    t.proxy.home_on_main(true);
    // And discovery's first answer leaves the home out: asked again.
    t.proxy.omit_home_set(1);
    let (mut c, account) = t
        .connected("icloud-throttled", pb::AccessLevel::ReadWrite)
        .await?;

    // Throttled: the next requests answer 503 without Retry-After.
    t.proxy.fail_next(4);
    let start = nine_am_in(4);
    t.server
        .put(
            "late.ics",
            &vcalendar(&[timed_lines("late-1", "Arrives late", start, 30)]),
        )
        .await?;
    let events = eventually(Duration::from_secs(60), "the event after the 503s", || {
        let mut c = c.clone();
        let (account, calendar) = (account.clone(), t.calendar.clone());
        async move {
            let e = list_events(&mut c, &account, &calendar, window())
                .await
                .ok()?;
            (!e.is_empty()).then_some(e)
        }
    })
    .await?;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].title, "Arrives late");
    assert_eq!(t.proxy.failures_left(), 0, "every 503 was served");
    let calendars = c
        .list_calendars(pb::ListCalendarsRequest {
            account_id: account.clone(),
        })
        .await?
        .into_inner()
        .calendars;
    assert_eq!(calendars.len(), 1, "{calendars:?}");

    let reqs = t.proxy.requests();
    ensure!(reqs.iter().filter(|r| r.status == 503).count() == 4);
    ensure!(
        reqs.iter()
            .any(|r| r.host == Host::Main && r.status == 301 && r.path.contains("/calendars/")),
        "cross-host redirects were followed: {reqs:#?}"
    );
    t.check_preemptive_basic()?;
    Ok(())
}

/// Sixty events listed: by one calendar-query when the server answers it
/// (`refused` 0), else (the query answered `refused`: unsupported, or a
/// server failing it over one unreadable object) by one PROPFIND and
/// calendar-multigets; every event arrives either way. (The proxy's
/// loopback host is not an iCloud host, so multigets are not cut to
/// iCloud's 50 hrefs here.)
async fn initial_listing(refused: u16) -> Result<()> {
    let t = Icloud::start().await?;
    let start = nine_am_in(3);
    for i in 0..60 {
        t.server
            .put(
                &format!("many-{i}.ics"),
                &vcalendar(&[timed_lines(
                    &format!("many-{i}"),
                    &format!("Many {i}"),
                    start + chrono::Duration::hours(i),
                    30,
                )]),
            )
            .await?;
    }
    t.proxy.refuse_calendar_query(refused);
    let (mut c, account) = t
        .connected("icloud-listing", pb::AccessLevel::ReadWrite)
        .await?;
    let events = list_events(&mut c, &account, &t.calendar, window()).await?;
    let mut titles: Vec<String> = events.iter().map(|e| e.title.clone()).collect();
    titles.sort();
    let mut expected: Vec<String> = (0..60).map(|i| format!("Many {i}")).collect();
    expected.sort();
    assert_eq!(titles, expected);

    let reqs: Vec<_> = t
        .proxy
        .requests()
        .into_iter()
        .filter(|r| r.host == Host::Partition && r.path == t.calendar)
        .collect();
    let queries: Vec<u16> = reqs
        .iter()
        .filter(|r| r.report == "calendar-query")
        .map(|r| r.status)
        .collect();
    let multigets: Vec<usize> = reqs
        .iter()
        .filter(|r| r.report == "calendar-multiget")
        .map(|r| r.hrefs)
        .collect();
    if refused == 0 {
        assert_eq!(queries, vec![207], "{reqs:#?}");
        assert!(multigets.is_empty(), "{reqs:#?}");
    } else {
        assert_eq!(queries, vec![refused], "{reqs:#?}");
        assert_eq!(multigets.iter().sum::<usize>(), 60, "{reqs:#?}");
        assert!(
            reqs.iter().any(|r| r.method == "PROPFIND"),
            "the members listed by PROPFIND: {reqs:#?}"
        );
    }
    t.check_preemptive_basic()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_icloud_calendar_is_listed_by_one_calendar_query() -> Result<()> {
    initial_listing(0).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_calendar_refusing_calendar_query_is_listed_by_propfind_and_multigets() -> Result<()> {
    initial_listing(403).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_calendar_failing_calendar_query_is_listed_by_propfind_and_multigets() -> Result<()> {
    initial_listing(500).await
}

/// A principal that answers on a home that refuses: the connect fails (the
/// calendar list is asked before anything is stored) and no account is
/// left behind.
#[tokio::test(flavor = "multi_thread")]
async fn a_home_that_refuses_fails_the_connect_and_stores_nothing() -> Result<()> {
    let t = Icloud::start().await?;
    t.proxy.refuse_home(true);
    let mut c = t.client("icloud-home").await?;
    let password = t.server.password.clone();
    let err = t
        .connect(&mut c, &password, pb::AccessLevel::ReadWrite)
        .await
        .expect_err("the home refuses");
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    let accounts = calbridge_e2e::accounts(&mut c).await?;
    assert!(accounts.is_empty(), "{accounts:#?}");
    Ok(())
}
