//! A hostile CalDAV server against the real adapter and scheduler: every
//! attack ends in an error (or a skipped, reported item) for that account's
//! calendar only, the adapter and scheduler stay up, and another tenant's
//! Radicale account keeps syncing; its sync time before and during the
//! attack is printed. Also the SSRF guards: hrefs and server URLs naming
//! other hosts never receive the account's credentials.
//!
//! Needs the test venv (`CALBRIDGE_TEST_PYTHON`) and the binaries.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use calbridge::pb;
use calbridge_e2e::caldav::{
    connect, list_events, timed_lines, vcalendar, CaldavStack, DavServer, ServerKind,
};
use calbridge_e2e::hostile::{Attack, HostileServer, Recorder, CALENDAR, ORDINARY, USER};
use calbridge_e2e::{eventually, sync_now_and_wait, sync_status, wait_synced, SchedulerClient};
use chrono::Utc;

/// A CalDAV stack with a hostile server (tenant "mallory") and a Radicale
/// (tenant "bystander").
struct Arena {
    stack: CaldavStack,
    hostile: HostileServer,
    _radicale: DavServer,
    mallory: SchedulerClient,
    bystander: SchedulerClient,
    bystander_account: String,
    bystander_calendar: String,
}

impl Arena {
    async fn start(attack: Attack) -> Result<Arena> {
        let hostile = HostileServer::start(attack).await?;
        let radicale = DavServer::start(ServerKind::Radicale).await?;
        let tomorrow = Utc::now() + chrono::Duration::days(1);
        radicale
            .put(
                "b.ics",
                &vcalendar(&[timed_lines("b-1", "Bystander", tomorrow, 30)]),
            )
            .await?;
        let stack = CaldavStack::start_with(
            1,
            Some("[sync]\nbackoff_base_ms = 100\nbackoff_max_seconds = 1\n"),
            // Slow bodies must cost a short timeout, not the default 30 s.
            &["--http-timeout-seconds".into(), "3".into()],
        )
        .await?;
        let (_, mallory_key) = stack.tenant("mallory").await?;
        let (_, bystander_key) = stack.tenant("bystander").await?;
        let mallory = stack.client(Some(&mallory_key)).await?;
        let mut bystander = stack.client(Some(&bystander_key)).await?;
        let account = connect(&mut bystander, &radicale, &radicale.password)
            .await
            .context("the bystander connects")?;
        wait_synced(&mut bystander, &account.account_id).await?;
        let calendar = sync_status(&mut bystander, &account.account_id).await?[0]
            .calendar_id
            .clone();
        Ok(Arena {
            stack,
            hostile,
            _radicale: radicale,
            mallory,
            bystander,
            bystander_account: account.account_id,
            bystander_calendar: calendar,
        })
    }

    /// Connects mallory's account at the hostile server.
    async fn connect_mallory(&mut self) -> Result<pb::Account, tonic::Status> {
        self.mallory
            .connect_password_account(pb::ConnectPasswordAccountRequest {
                provider: pb::Provider::Caldav as i32,
                server_url: self.hostile.base.clone(),
                username: USER.into(),
                password: "hunter2".into(),
                access_level: pb::AccessLevel::ReadWrite as i32,
            })
            .await
            .map(|r| r.into_inner())
    }

    /// How long a SyncNow of the bystander's calendar takes.
    async fn bystander_sync(&mut self) -> Result<Duration> {
        let started = Instant::now();
        sync_now_and_wait(
            &mut self.bystander,
            &self.bystander_account,
            &self.bystander_calendar,
        )
        .await?;
        Ok(started.elapsed())
    }

    /// Waits until mallory's calendar `CALENDAR` satisfies `done`; returns
    /// its status.
    async fn mallory_status(
        &mut self,
        account: &str,
        what: &str,
        done: impl Fn(&pb::CalendarSyncStatus) -> bool,
    ) -> Result<pb::CalendarSyncStatus> {
        let done = &done;
        eventually(Duration::from_secs(60), what, || {
            let mut c = self.mallory.clone();
            async move {
                sync_status(&mut c, account)
                    .await
                    .ok()?
                    .into_iter()
                    .find(|s| s.calendar_id == CALENDAR && done(s))
            }
        })
        .await
    }

    /// The attack ended in `expected` in the calendar's last error; the
    /// processes are up and the bystander still syncs (timed before and
    /// during the attack, printed).
    async fn survives(mut self, expected: &str) -> Result<Arena> {
        let before = self.bystander_sync().await?;
        let account = self.connect_mallory().await.context("mallory connects")?;
        let status = self
            .mallory_status(&account.account_id, "the attack's error", |s| {
                s.failures > 0 && s.last_error.contains(expected)
            })
            .await?;
        let during = self.bystander_sync().await?;
        println!(
            "bystander sync before {before:?}, during the attack {during:?}; mallory's error: {}",
            status.last_error
        );
        self.alive()?;
        Ok(self)
    }

    /// Both processes still run.
    fn alive(&mut self) -> Result<()> {
        ensure!(
            self.stack.adapter.child.try_wait()?.is_none(),
            "the adapter died: {}",
            self.stack.adapter.log.lock().expect("log")
        );
        ensure!(
            self.stack.scheduler.child.try_wait()?.is_none(),
            "the scheduler died"
        );
        Ok(())
    }

    /// The adapter's peak resident memory, in MiB.
    fn adapter_peak_mib(&self) -> Result<u64> {
        peak_mib(&self.stack.adapter)
    }
}

/// A process's peak resident memory, in MiB.
fn peak_mib(p: &calbridge_e2e::Proc) -> Result<u64> {
    let pid = p.child.id().context("pid")?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmHWM")?;
    Ok(kb / 1024)
}

fn window() -> pb::TimeWindow {
    let now = Utc::now();
    pb::TimeWindow {
        start: Some(calbridge::time::to_timestamp(
            now - chrono::Duration::days(30),
        )),
        end: Some(calbridge::time::to_timestamp(
            now + chrono::Duration::days(365),
        )),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn deeply_nested_xml_costs_one_calendar_an_error_not_the_adapter() -> Result<()> {
    Arena::start(Attack::DeepXml)
        .await?
        .survives("deeper")
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_entity_bomb_is_refused() -> Result<()> {
    Arena::start(Attack::EntityBomb)
        .await?
        .survives("not usable XML")
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_200_mb_answer_is_cut_off_at_the_cap_without_growing_the_adapter() -> Result<()> {
    let arena = Arena::start(Attack::HugeBody)
        .await?
        .survives("larger than")
        .await?;
    let peak = arena.adapter_peak_mib()?;
    println!("adapter peak resident memory after a 200 MB answer: {peak} MiB");
    ensure!(peak < 256, "the adapter grew to {peak} MiB");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endless_answer_is_cut_off_at_the_cap() -> Result<()> {
    Arena::start(Attack::EndlessBody)
        .await?
        .survives("larger than")
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trickling_answer_costs_one_request_timeout() -> Result<()> {
    Arena::start(Attack::SlowBody)
        .await?
        .survives("timed out")
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_percent_escapes_in_hrefs_do_not_panic_the_adapter() -> Result<()> {
    let mut arena = Arena::start(Attack::BadPercentHrefs).await?;
    let account = arena.connect_mallory().await?;
    wait_synced(&mut arena.mallory, &account.account_id).await?;
    let events = list_events(&mut arena.mallory, &account.account_id, CALENDAR, window()).await?;
    let mut titles: Vec<&str> = events.iter().map(|e| e.title.as_str()).collect();
    titles.sort();
    assert_eq!(
        titles,
        [
            ORDINARY,
            "Percent 0",
            "Percent 1",
            "Percent 2",
            "Percent 3",
            "Percent 4"
        ]
    );
    arena.alive()?;
    arena.bystander_sync().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redirect_to_another_host_never_receives_the_credentials() -> Result<()> {
    let elsewhere = Recorder::start("127.0.0.2").await?;
    let arena = Arena::start(Attack::RedirectElsewhere(format!(
        "{}/steal/",
        elsewhere.base
    )))
    .await?
    .survives("another site")
    .await?;
    assert_eq!(elsewhere.seen(), vec![], "nothing reached the other host");
    drop(arena);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_calendar_on_another_host_is_not_listed_or_contacted() -> Result<()> {
    let elsewhere = Recorder::start("127.0.0.2").await?;
    let mut arena = Arena::start(Attack::ForeignCalendar(format!(
        "{}/steal/",
        elsewhere.base
    )))
    .await?;
    let account = arena.connect_mallory().await?;
    wait_synced(&mut arena.mallory, &account.account_id).await?;
    let calendars = arena
        .mallory
        .list_calendars(pb::ListCalendarsRequest {
            account_id: account.account_id.clone(),
        })
        .await?
        .into_inner()
        .calendars;
    let ids: Vec<&str> = calendars.iter().map(|c| c.calendar_id.as_str()).collect();
    assert_eq!(ids, [CALENDAR]);
    assert_eq!(elsewhere.seen(), vec![]);
    arena.alive()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endless_minutely_series_is_mirrored_up_to_its_bound_and_reported() -> Result<()> {
    let mut arena = Arena::start(Attack::UnboundedSeries).await?;
    let before = arena.bystander_sync().await?;
    let account = arena.connect_mallory().await?;
    let status = arena
        .mallory_status(&account.account_id, "the series mirrored", |s| {
            s.state == pb::SyncState::Idle as i32 && s.events > 0
        })
        .await?;
    let during = arena.bystander_sync().await?;
    println!("bystander sync before {before:?}, after the series {during:?}");
    // 10,000 instances of the series and the ordinary event, on pages the
    // scheduler accepts (a single page would have been 10,000 events).
    assert_eq!(status.events, 10_001, "{status:?}");
    assert!(
        status
            .skipped_items
            .iter()
            .any(|s| s.item_id.ends_with("flood.ics")
                && s.reason.contains("more than 10000 instances")),
        "{:?}",
        status.skipped_items
    );
    let events = list_events(&mut arena.mallory, &account.account_id, CALENDAR, window()).await?;
    assert!(events.iter().any(|e| e.title == ORDINARY));
    arena.alive()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_huge_line_skips_its_object_and_a_huge_title_is_cut() -> Result<()> {
    let mut arena = Arena::start(Attack::HugeLines).await?;
    let account = arena.connect_mallory().await?;
    let status = arena
        .mallory_status(&account.account_id, "the calendar synced", |s| {
            s.state == pb::SyncState::Idle as i32 && s.events > 0
        })
        .await?;
    assert!(
        status
            .skipped_items
            .iter()
            .any(|s| s.item_id.ends_with("huge.ics") && s.reason.contains("too large")),
        "{:?}",
        status.skipped_items
    );
    let events = list_events(&mut arena.mallory, &account.account_id, CALENDAR, window()).await?;
    assert_eq!(events.len(), 2, "the ordinary event and the long title");
    let long = events
        .iter()
        .find(|e| e.title.starts_with("TTT"))
        .context("the long-titled event")?;
    assert_eq!(long.title.len(), calbridge::limits::MAX_TITLE_BYTES);
    arena.alive()?;
    arena.bystander_sync().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn hrefs_and_server_urls_naming_other_hosts_never_get_the_credentials() -> Result<()> {
    let elsewhere = Recorder::start("127.0.0.2").await?;
    // On an allow-listed address: only the origin rule keeps hrefs off it.
    let neighbour = Recorder::start("127.0.0.1").await?;
    let mut arena = Arena::start(Attack::BadPercentHrefs).await?;
    // A caller names an event on another host: refused before any request.
    for href in [
        format!("{}/steal.ics", elsewhere.base),
        format!(
            "//{}/steal.ics",
            elsewhere.base.trim_start_matches("http://")
        ),
        format!("{}/steal.ics", neighbour.base),
        format!(
            "//{}/steal.ics",
            neighbour.base.trim_start_matches("http://")
        ),
    ] {
        let err = arena
            .bystander
            .delete_event(pb::DeleteEventRequest {
                account_id: arena.bystander_account.clone(),
                calendar_id: arena.bystander_calendar.clone(),
                provider_event_id: href.clone(),
                ..Default::default()
            })
            .await
            .expect_err("refused");
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{href}: {err:?}");
        assert!(err.message().contains("provider_event_id"), "{err:?}");
    }
    // Server URLs on addresses that are not allow-listed: refused, naming
    // the field; nothing connects.
    for url in [
        format!("{}/", elsewhere.base),
        "http://169.254.169.254/latest/".into(),
        "http://[::1]:1/".into(),
    ] {
        let err = arena
            .mallory
            .connect_password_account(pb::ConnectPasswordAccountRequest {
                provider: pb::Provider::Caldav as i32,
                server_url: url.clone(),
                username: USER.into(),
                password: "hunter2".into(),
                access_level: pb::AccessLevel::Read as i32,
            })
            .await
            .expect_err("refused");
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{url}: {err:?}");
        assert!(err.message().contains("server_url"), "{url}: {err:?}");
    }
    assert_eq!(elsewhere.seen(), vec![], "nothing reached the other host");
    assert_eq!(neighbour.seen(), vec![], "nothing reached the neighbour");
    arena.alive()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_thousand_calendars_are_kept_to_the_quota_without_growing_the_scheduler(
) -> Result<()> {
    let mut arena = Arena::start(Attack::ManyCalendars(20_000)).await?;
    let before = peak_mib(&arena.stack.scheduler)?;
    let account = arena.connect_mallory().await?;
    assert_eq!(
        account.calendars_omitted, 19_001,
        "20,001 calendars listed, 1,000 kept"
    );
    let calendars = arena
        .mallory
        .list_calendars(pb::ListCalendarsRequest {
            account_id: account.account_id.clone(),
        })
        .await?
        .into_inner()
        .calendars;
    assert_eq!(calendars.len(), 1_000);
    assert!(
        calendars.iter().any(|c| c.calendar_id == CALENDAR),
        "the writable calendar is among those kept"
    );
    wait_synced(&mut arena.mallory, &account.account_id).await?;
    let after = peak_mib(&arena.stack.scheduler)?;
    println!(
        "scheduler peak resident memory {before} MiB before, {after} MiB after 20,001 calendars"
    );
    ensure!(
        after < before + 100,
        "the scheduler grew from {before} to {after} MiB"
    );
    arena.alive()?;
    arena.bystander_sync().await?;
    Ok(())
}
