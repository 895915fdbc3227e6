//! CalDAV through the real scheduler and the real CalDAV adapter, against
//! real Radicale (htpasswd plain auth) and Xandikos servers: connecting and
//! the initial sync of pre-seeded events (plain, all-day, a series with an
//! edited and a cancelled instance); outside edits, moves, cancellations and
//! deletions on the change stream with the right kinds; writes through
//! calbridge landing on the server once, without echo; an invalid server
//! sync token recovered by a resync that reports nothing spurious;
//! FREE_BUSY accounts; and what a sync costs at the server in requests
//! (Radicale's log).
//!
//! Needs the test venv (`CALBRIDGE_TEST_PYTHON`, see `scripts/test-env`)
//! and the binaries (`cargo build --workspace --bins`).

use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Result};
use calbridge::pb::{self, event_time, ChangeKind, EventStatus, WriteOutcome};
use calbridge::time::{from_timestamp, instant, to_timestamp};
use calbridge_e2e::caldav::{
    connect, ical_date, ical_utc, list_events, timed_lines, vcalendar, wait_events, CaldavStack,
    DavServer, ServerKind,
};
use calbridge_e2e::{
    change_cursor, changes_after, sync_now_and_wait, sync_status, wait_synced, SchedulerClient,
};
use chrono::{DateTime, NaiveDate, TimeZone, Utc};

/// The poll interval the adapter suggests in these tests, seconds.
const POLL_SECONDS: u32 = 1;

fn at(day: NaiveDate, hour: u32) -> DateTime<Utc> {
    Utc.from_utc_datetime(&day.and_hms_opt(hour, 0, 0).expect("a valid hour"))
}

/// A window covering every event these tests make.
fn window() -> pb::TimeWindow {
    let now = Utc::now();
    pb::TimeWindow {
        start: Some(to_timestamp(now - chrono::Duration::days(1))),
        end: Some(to_timestamp(now + chrono::Duration::days(60))),
    }
}

fn start_of(e: &pb::Event) -> Option<DateTime<Utc>> {
    match e.start.as_ref()?.value.as_ref()? {
        event_time::Value::Instant(t) => from_timestamp(t),
        event_time::Value::Date(_) => None,
    }
}

fn end_of(e: &pb::Event) -> Option<DateTime<Utc>> {
    match e.end.as_ref()?.value.as_ref()? {
        event_time::Value::Instant(t) => from_timestamp(t),
        event_time::Value::Date(_) => None,
    }
}

fn date_of(t: Option<&pb::EventTime>) -> Option<String> {
    match t?.value.as_ref()? {
        event_time::Value::Date(d) => Some(d.clone()),
        event_time::Value::Instant(_) => None,
    }
}

/// What another client put on the server before the account was connected:
/// a plain timed event, an all-day event and a weekly series of four whose
/// second instance was moved and retitled and whose third was cancelled
/// (RECURRENCE-ID overrides in the same resource).
struct Seed {
    plain: DateTime<Utc>,
    all_day: NaiveDate,
    series: DateTime<Utc>,
}

impl Seed {
    fn new() -> Seed {
        let day0 = (Utc::now() + chrono::Duration::days(2)).date_naive();
        Seed {
            plain: at(day0, 9),
            all_day: day0 + chrono::Duration::days(1),
            series: at(day0 + chrono::Duration::days(3), 8),
        }
    }

    fn plain_ics(&self, summary: &str, start: DateTime<Utc>, extra: &[&str]) -> String {
        let mut lines = timed_lines("plain-1", summary, start, 60);
        lines.extend(extra.iter().map(|s| s.to_string()));
        vcalendar(&[lines])
    }

    fn all_day_ics(&self) -> String {
        vcalendar(&[vec![
            "UID:allday-1".into(),
            "SUMMARY:Company holiday".into(),
            format!("DTSTART;VALUE=DATE:{}", ical_date(self.all_day)),
            format!(
                "DTEND;VALUE=DATE:{}",
                ical_date(self.all_day + chrono::Duration::days(1))
            ),
            "TRANSP:TRANSPARENT".into(),
        ]])
    }

    fn week(&self, n: i64) -> DateTime<Utc> {
        self.series + chrono::Duration::weeks(n)
    }

    /// The series; `cancel_last` also cancels the fourth instance.
    fn series_ics(&self, cancel_last: bool) -> String {
        let mut master = timed_lines("series-1", "Weekly sync", self.series, 30);
        master.push("RRULE:FREQ=WEEKLY;COUNT=4".into());
        let mut moved = timed_lines(
            "series-1",
            "Weekly sync (moved)",
            self.week(1) + chrono::Duration::hours(4),
            30,
        );
        moved.push(format!("RECURRENCE-ID:{}", ical_utc(self.week(1))));
        let mut cancelled = timed_lines("series-1", "Weekly sync", self.week(2), 30);
        cancelled.push(format!("RECURRENCE-ID:{}", ical_utc(self.week(2))));
        cancelled.push("STATUS:CANCELLED".into());
        let mut events = vec![master, moved, cancelled];
        if cancel_last {
            let mut last = timed_lines("series-1", "Weekly sync", self.week(3), 30);
            last.push(format!("RECURRENCE-ID:{}", ical_utc(self.week(3))));
            last.push("STATUS:CANCELLED".into());
            events.push(last);
        }
        vcalendar(&events)
    }

    async fn put(&self, server: &DavServer) -> Result<()> {
        server
            .put(
                "plain.ics",
                &self.plain_ics("Plain meeting", self.plain, &["LOCATION:Room 1"]),
            )
            .await?;
        server.put("allday.ics", &self.all_day_ics()).await?;
        server.put("series.ics", &self.series_ics(false)).await?;
        Ok(())
    }

    fn instance_id(&self, server: &DavServer, week: i64) -> String {
        format!(
            "{}#{}",
            server.href("series.ics"),
            ical_utc(self.week(week))
        )
    }

    /// Checks the mirror shows exactly the seeded events as the right
    /// instances.
    fn check(&self, server: &DavServer, events: &[pb::Event]) -> Result<()> {
        let ids: Vec<&str> = events
            .iter()
            .map(|e| e.provider_event_id.as_str())
            .collect();
        ensure!(events.len() == 6, "six events expected, got {ids:?}");

        let plain = find(events, &server.href("plain.ics"))?;
        assert_eq!(plain.title, "Plain meeting");
        assert_eq!(plain.location, "Room 1");
        assert_eq!(plain.ical_uid, "plain-1");
        assert_eq!(start_of(plain), Some(self.plain));
        assert_eq!(
            end_of(plain),
            Some(self.plain + chrono::Duration::minutes(60))
        );
        assert!(plain.client_event_id.is_empty() && !plain.managed);
        assert!(plain.recurrence_link.is_none());
        assert!(!plain.version.is_empty());

        let all_day = find(events, &server.href("allday.ics"))?;
        assert_eq!(all_day.title, "Company holiday");
        assert_eq!(
            date_of(all_day.start.as_ref()),
            Some(self.all_day.format("%Y-%m-%d").to_string())
        );
        assert_eq!(
            date_of(all_day.end.as_ref()),
            Some(
                (self.all_day + chrono::Duration::days(1))
                    .format("%Y-%m-%d")
                    .to_string()
            ),
            "all-day ends are exclusive"
        );
        assert_eq!(all_day.transparency(), pb::Transparency::Transparent);

        for week in 0..4 {
            let id = self.instance_id(server, week);
            let e = find(events, &id)?;
            let link = e
                .recurrence_link
                .as_ref()
                .ok_or_else(|| anyhow!("{id} has no recurrence link"))?;
            assert_eq!(link.series_event_id, server.href("series.ics"));
            assert_eq!(
                link.original_start
                    .as_ref()
                    .and_then(|t| match t.value.as_ref()? {
                        event_time::Value::Instant(t) => from_timestamp(t),
                        _ => None,
                    }),
                Some(self.week(week)),
                "{id}: original start"
            );
            assert_eq!(e.ical_uid, "series-1");
            match week {
                1 => {
                    assert_eq!(e.title, "Weekly sync (moved)");
                    assert_eq!(start_of(e), Some(self.week(1) + chrono::Duration::hours(4)));
                    assert_ne!(e.status(), EventStatus::Cancelled);
                }
                2 => {
                    assert_eq!(e.status(), EventStatus::Cancelled, "{e:?}");
                    assert_eq!(start_of(e), Some(self.week(2)));
                }
                _ => {
                    assert_eq!(e.title, "Weekly sync");
                    assert_eq!(start_of(e), Some(self.week(week)));
                    assert_eq!(
                        end_of(e),
                        Some(self.week(week) + chrono::Duration::minutes(30))
                    );
                    assert_ne!(e.status(), EventStatus::Cancelled);
                }
            }
        }
        Ok(())
    }
}

fn find<'a>(events: &'a [pb::Event], provider_event_id: &str) -> Result<&'a pb::Event> {
    events
        .iter()
        .find(|e| e.provider_event_id == provider_event_id)
        .ok_or_else(|| {
            anyhow!(
                "{provider_event_id} not among {:?}",
                events
                    .iter()
                    .map(|e| &e.provider_event_id)
                    .collect::<Vec<_>>()
            )
        })
}

/// A server, the stack, a tenant client, and the account connected (with
/// its initial sync done); returns the calendar id the tests use.
struct Setup {
    server: DavServer,
    stack: CaldavStack,
    key: String,
    client: SchedulerClient,
    account: String,
    calendar: String,
}

async fn setup(kind: ServerKind, seed: Option<&Seed>) -> Result<Setup> {
    let server = DavServer::start(kind).await?;
    if let Some(seed) = seed {
        seed.put(&server).await?;
    }
    let stack = CaldavStack::start(POLL_SECONDS).await?;
    let (_, key) = stack.tenant("caldav").await?;
    let mut client = stack.client(Some(&key)).await?;
    let account = connect(&mut client, &server, &server.password).await?;
    wait_synced(&mut client, &account.account_id).await?;
    let calendar = server.calendar.clone();
    Ok(Setup {
        server,
        stack,
        key,
        client,
        account: account.account_id,
        calendar,
    })
}

// ---- 1. connect, discover, list calendars, initial sync ----

async fn connect_and_initial_sync(kind: ServerKind) -> Result<()> {
    let server = DavServer::start(kind).await?;
    let seed = Seed::new();
    seed.put(&server).await?;
    let stack = CaldavStack::start(POLL_SECONDS).await?;
    let (_, key) = stack.tenant("caldav-connect").await?;
    let mut c = stack.client(Some(&key)).await?;

    if kind == ServerKind::Radicale {
        // Wrong password: refused at the provider, nothing stored.
        let err = connect(&mut c, &server, "not-the-password")
            .await
            .expect_err("a wrong password is refused");
        assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
        assert!(!err.message().contains("not-the-password"), "{err:?}");
        let accounts = calbridge_e2e::accounts(&mut c).await?;
        assert!(accounts.is_empty(), "no account stored: {accounts:?}");
    }

    let account = connect(&mut c, &server, &server.password).await?;
    assert_eq!(account.provider(), pb::Provider::Caldav);
    assert_eq!(account.status(), pb::AccountStatus::Active);
    assert_eq!(account.access_level(), pb::AccessLevel::ReadWrite);
    assert!(
        account.provider_account_id.ends_with("/user/"),
        "the principal was discovered: {:?}",
        account.provider_account_id
    );
    assert!(!account.server_url.is_empty());

    let calendars = c
        .list_calendars(pb::ListCalendarsRequest {
            account_id: account.account_id.clone(),
        })
        .await?
        .into_inner()
        .calendars;
    let cal = calendars
        .iter()
        .find(|x| x.calendar_id == server.calendar)
        .ok_or_else(|| anyhow!("{} not in {calendars:?}", server.calendar))?;
    assert!(cal.synced && !cal.read_only, "{cal:?}");
    assert_eq!(cal.account_id, account.account_id);
    assert!(
        calendars
            .iter()
            .all(|x| x.calendar_id.starts_with("/user/")),
        "only the user's calendars: {calendars:?}"
    );
    assert_eq!(
        calendars.iter().filter(|x| x.primary).count(),
        1,
        "{calendars:?}"
    );

    wait_synced(&mut c, &account.account_id).await?;
    let status = sync_status(&mut c, &account.account_id).await?;
    let st = status
        .iter()
        .find(|s| s.calendar_id == server.calendar)
        .ok_or_else(|| anyhow!("no sync status for {}", server.calendar))?;
    assert_eq!(st.state(), pb::SyncState::Idle, "{st:?}");
    assert!(st.last_success.is_some() && st.last_error.is_empty());
    assert_eq!(st.events, 6, "plain, all-day and four instances: {st:?}");

    let events = list_events(&mut c, &account.account_id, &server.calendar, window()).await?;
    seed.check(&server, &events)?;

    // Reconnecting the same principal returns the same account.
    let again = connect(&mut c, &server, &server.password).await?;
    assert_eq!(again.account_id, account.account_id);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_caldav_account_on_radicale_connects_refuses_a_wrong_password_and_syncs_plain_all_day_and_recurring_events(
) -> Result<()> {
    connect_and_initial_sync(ServerKind::Radicale).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_caldav_account_on_xandikos_connects_and_syncs_plain_all_day_and_recurring_events(
) -> Result<()> {
    connect_and_initial_sync(ServerKind::Xandikos).await
}

// ---- 2. outside changes on the change stream ----

/// Reads the stream until a change matching `pred` arrives (everything read
/// is kept in `got`).
async fn next_change(
    stream: &mut tonic::Streaming<pb::Change>,
    got: &mut Vec<pb::Change>,
    what: &str,
    pred: impl Fn(&pb::Change) -> bool,
) -> Result<pb::Change> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let next = tokio::time::timeout_at(deadline, stream.message())
            .await
            .map_err(|_| anyhow!("timed out waiting for {what}; received so far: {got:#?}"))??
            .ok_or_else(|| anyhow!("the change stream ended while waiting for {what}"))?;
        got.push(next.clone());
        if pred(&next) {
            return Ok(next);
        }
    }
}

async fn outside_changes(kind: ServerKind) -> Result<()> {
    let seed = Seed::new();
    let Setup {
        server,
        stack: _stack,
        mut client,
        account,
        calendar,
        ..
    } = {
        let server = DavServer::start(kind).await?;
        seed.put(&server).await?;
        let day = seed.plain.date_naive();
        for (name, summary, hour) in [
            ("move.ics", "To be moved", 11),
            ("cancel.ics", "To be cancelled", 12),
            ("gone.ics", "To be deleted", 13),
        ] {
            let uid = name.trim_end_matches(".ics");
            server
                .put(
                    name,
                    &vcalendar(&[timed_lines(uid, summary, at(day, hour), 30)]),
                )
                .await?;
        }
        let stack = CaldavStack::start(POLL_SECONDS).await?;
        let (_, key) = stack.tenant("caldav-outside").await?;
        let mut client = stack.client(Some(&key)).await?;
        let account = connect(&mut client, &server, &server.password)
            .await?
            .account_id;
        wait_synced(&mut client, &account).await?;
        let calendar = server.calendar.clone();
        Setup {
            server,
            stack,
            key,
            client,
            account,
            calendar,
        }
    };
    let day = seed.plain.date_naive();
    let c0 = change_cursor(&mut client).await?;
    let mut stream = client
        .watch_changes(pb::WatchChangesRequest { cursor: c0.clone() })
        .await?
        .into_inner();
    let mut got = Vec::new();
    let sync_now = |mut c: SchedulerClient, account: String| async move {
        c.sync_now(pb::SyncNowRequest {
            account_id: account,
            calendar_id: String::new(),
        })
        .await
    };

    // A new event, noticed purely by polling (no SyncNow).
    let fresh_start = at(day, 15);
    let put_at = Instant::now();
    server
        .put(
            "fresh.ics",
            &vcalendar(&[timed_lines("fresh", "Fresh", fresh_start, 30)]),
        )
        .await?;
    let created = next_change(&mut stream, &mut got, "the new event", |ch| {
        ch.provider_event_id == server.href("fresh.ics")
    })
    .await?;
    let took = put_at.elapsed();
    assert_eq!(created.kind(), ChangeKind::EventCreated, "{created:?}");
    assert_eq!(created.calendar_id, calendar);
    assert_eq!(created.account_id, account);
    let ev = created.event.as_ref().expect("the created event");
    assert_eq!(ev.title, "Fresh");
    assert_eq!(start_of(ev), Some(fresh_start));
    assert!(
        took < Duration::from_secs(u64::from(POLL_SECONDS) + 5),
        "an outside create arrives within the poll cadence ({POLL_SECONDS} s): took {took:?}"
    );
    eprintln!("outside create arrived by polling after {took:?}");

    // A retitle.
    server
        .put(
            "plain.ics",
            &seed.plain_ics("Plain meeting (renamed)", seed.plain, &["LOCATION:Room 1"]),
        )
        .await?;
    sync_now(client.clone(), account.clone()).await?;
    let renamed = next_change(&mut stream, &mut got, "the retitle", |ch| {
        ch.provider_event_id == server.href("plain.ics")
    })
    .await?;
    assert_eq!(renamed.kind(), ChangeKind::EventUpdated, "{renamed:?}");
    assert_eq!(
        renamed.event.as_ref().map(|e| e.title.as_str()),
        Some("Plain meeting (renamed)")
    );

    // A move.
    let moved_to = at(day + chrono::Duration::days(1), 16);
    server
        .put(
            "move.ics",
            &vcalendar(&[timed_lines("move", "To be moved", moved_to, 30)]),
        )
        .await?;
    sync_now(client.clone(), account.clone()).await?;
    let moved = next_change(&mut stream, &mut got, "the move", |ch| {
        ch.provider_event_id == server.href("move.ics")
    })
    .await?;
    assert_eq!(moved.kind(), ChangeKind::EventUpdated, "{moved:?}");
    let ev = moved.event.as_ref().expect("the moved event");
    assert_eq!(start_of(ev), Some(moved_to));
    assert_eq!(end_of(ev), Some(moved_to + chrono::Duration::minutes(30)));

    // A cancellation (STATUS:CANCELLED).
    let mut lines = timed_lines("cancel", "To be cancelled", at(day, 12), 30);
    lines.push("STATUS:CANCELLED".into());
    server.put("cancel.ics", &vcalendar(&[lines])).await?;
    sync_now(client.clone(), account.clone()).await?;
    let cancelled = next_change(&mut stream, &mut got, "the cancellation", |ch| {
        ch.provider_event_id == server.href("cancel.ics")
    })
    .await?;
    assert_eq!(cancelled.kind(), ChangeKind::EventUpdated, "{cancelled:?}");
    assert_eq!(
        cancelled.event.as_ref().map(|e| e.status()),
        Some(EventStatus::Cancelled)
    );

    // A deletion: the change carries the event as last known.
    server.delete("gone.ics").await?;
    sync_now(client.clone(), account.clone()).await?;
    let deleted = next_change(&mut stream, &mut got, "the deletion", |ch| {
        ch.provider_event_id == server.href("gone.ics")
    })
    .await?;
    assert_eq!(deleted.kind(), ChangeKind::EventDeleted, "{deleted:?}");
    assert_eq!(
        deleted.event.as_ref().map(|e| e.title.as_str()),
        Some("To be deleted")
    );

    // One instance of the series cancelled at the server.
    server.put("series.ics", &seed.series_ics(true)).await?;
    sync_now(client.clone(), account.clone()).await?;
    let last = seed.instance_id(&server, 3);
    let instance = next_change(&mut stream, &mut got, "the cancelled instance", |ch| {
        ch.provider_event_id == last
    })
    .await?;
    assert_eq!(instance.kind(), ChangeKind::EventUpdated, "{instance:?}");
    assert_eq!(
        instance.event.as_ref().map(|e| e.status()),
        Some(EventStatus::Cancelled)
    );

    // After one more full sync: the feed holds these changes in order, and
    // nothing for untouched events or instances.
    sync_now_and_wait(&mut client, &account, "").await?;
    let all = changes_after(&mut client, &c0).await?;
    let summary: Vec<(String, ChangeKind)> = all
        .iter()
        .map(|ch| (ch.provider_event_id.clone(), ch.kind()))
        .collect();
    let expected = vec![
        (server.href("fresh.ics"), ChangeKind::EventCreated),
        (server.href("plain.ics"), ChangeKind::EventUpdated),
        (server.href("move.ics"), ChangeKind::EventUpdated),
        (server.href("cancel.ics"), ChangeKind::EventUpdated),
        (server.href("gone.ics"), ChangeKind::EventDeleted),
        (last.clone(), ChangeKind::EventUpdated),
    ];
    let mut wanted = expected.iter().peekable();
    let mut spurious = Vec::new();
    for s in &summary {
        if wanted.peek() == Some(&s) {
            wanted.next();
        } else {
            spurious.push(s.clone());
        }
    }
    assert!(
        wanted.peek().is_none(),
        "the outside changes in order: expected {expected:?}, got {summary:?}"
    );
    let seqs: Vec<u64> = all.iter().map(|c| c.sequence).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "gap in the change log: {seqs:?}"
    );
    while got.len() < all.len() {
        next_change(&mut stream, &mut got, "the rest of the log", |_| true).await?;
    }
    let streamed: Vec<u64> = got.iter().map(|c| c.sequence).collect();
    assert_eq!(streamed, seqs, "the stream delivered the log in order");

    // The mirror agrees.
    let events = list_events(&mut client, &account, &calendar, window()).await?;
    assert!(find(&events, &server.href("gone.ics")).is_err());
    assert_eq!(
        find(&events, &server.href("cancel.ics"))?.status(),
        EventStatus::Cancelled
    );
    assert_eq!(
        start_of(find(&events, &server.href("move.ics"))?),
        Some(moved_to)
    );

    // Checked last so that everything above runs: untouched events and
    // instances must not be reported.
    assert!(
        spurious.is_empty(),
        "changes for events or instances nobody touched: {spurious:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn outside_caldav_edits_moves_cancellations_and_deletions_on_radicale_arrive_on_the_change_stream(
) -> Result<()> {
    outside_changes(ServerKind::Radicale).await
}

#[tokio::test(flavor = "multi_thread")]
async fn outside_caldav_edits_moves_cancellations_and_deletions_on_xandikos_arrive_on_the_change_stream(
) -> Result<()> {
    outside_changes(ServerKind::Xandikos).await
}

// ---- 3. writes through calbridge ----

async fn writes_through_calbridge(kind: ServerKind) -> Result<()> {
    let Setup {
        server,
        stack: _stack,
        mut client,
        account,
        calendar,
        ..
    } = setup(kind, None).await?;
    let c0 = change_cursor(&mut client).await?;
    let start = at((Utc::now() + chrono::Duration::days(3)).date_naive(), 13);
    let berlin = start.with_timezone(&chrono_tz::Europe::Berlin);
    let event = pb::Event {
        title: "Design review".into(),
        location: "Room 4".into(),
        description: "Agenda: the CalDAV adapter".into(),
        start: Some(instant(start, "Europe/Berlin")),
        end: Some(instant(
            start + chrono::Duration::minutes(45),
            "Europe/Berlin",
        )),
        attendees: vec![
            pb::Attendee {
                email: "bob@example.com".into(),
                display_name: "Bob".into(),
                optional: true,
                ..Default::default()
            },
            pb::Attendee {
                email: "carol@example.com".into(),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let upsert = |e: pb::Event| pb::UpsertEventRequest {
        account_id: account.clone(),
        calendar_id: calendar.clone(),
        client_event_id: "review-1".into(),
        event: Some(e),
        ..Default::default()
    };

    // Create.
    let first = client
        .upsert_event(upsert(event.clone()))
        .await?
        .into_inner();
    assert_eq!(first.outcome(), WriteOutcome::Created);
    let stored = first.event.expect("the stored event");
    let href = stored.provider_event_id.clone();
    assert!(
        href.starts_with(&calendar) && href.ends_with(".ics"),
        "{href}"
    );
    assert!(!stored.version.is_empty());
    assert_eq!(stored.client_event_id, "review-1");
    assert_eq!(stored.title, "Design review");
    let (status, body) = server.get(&href).await?;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("SUMMARY:Design review"), "{body}");
    assert!(body.contains("LOCATION:Room 4"), "{body}");
    assert!(
        body.contains(&format!(
            "DTSTART;TZID=Europe/Berlin:{}",
            berlin.format("%Y%m%dT%H%M%S")
        )),
        "{body}"
    );
    let attendees: Vec<&str> = body.lines().filter(|l| l.starts_with("ATTENDEE")).collect();
    assert_eq!(attendees.len(), 2, "{body}");
    assert!(
        attendees.iter().any(
            |l| l.to_ascii_lowercase().ends_with(":mailto:bob@example.com")
                && l.contains("ROLE=OPT-PARTICIPANT")
        ),
        "{attendees:?}"
    );
    assert!(
        attendees.iter().any(|l| l
            .to_ascii_lowercase()
            .ends_with(":mailto:carol@example.com")),
        "{attendees:?}"
    );
    assert_eq!(server.members().await?.len(), 1);

    // The same upsert again: nothing sent, still one resource. A wrong
    // outcome is reported at the end, so the rest of the scenario runs.
    let mut deviations: Vec<String> = Vec::new();
    let second = client
        .upsert_event(upsert(event.clone()))
        .await?
        .into_inner();
    if second.outcome() != WriteOutcome::Unchanged {
        deviations.push(format!(
            "the same upsert (with attendees) twice answered {:?} the second time, not UNCHANGED",
            second.outcome()
        ));
    }
    let again = second.event.expect("the event");
    assert_eq!(again.provider_event_id, href);
    if again.version != stored.version {
        deviations.push(format!(
            "the second identical upsert rewrote the resource: version {} -> {}",
            stored.version, again.version
        ));
    }
    let members = server.members().await?;
    assert_eq!(members.len(), 1, "one resource on the server: {members:?}");
    assert_eq!(members[0].0, href);

    // An event without attendees: the same upsert twice is UNCHANGED.
    let focus = pb::UpsertEventRequest {
        account_id: account.clone(),
        calendar_id: calendar.clone(),
        client_event_id: "focus-1".into(),
        event: Some(calbridge_e2e::timed_event(
            "Focus time",
            start + chrono::Duration::hours(3),
            60,
        )),
        ..Default::default()
    };
    let f1 = client.upsert_event(focus.clone()).await?.into_inner();
    assert_eq!(f1.outcome(), WriteOutcome::Created);
    let f2 = client.upsert_event(focus.clone()).await?.into_inner();
    assert_eq!(f2.outcome(), WriteOutcome::Unchanged, "{f2:?}");
    let focus_href = f1.event.expect("the event").provider_event_id;
    assert_eq!(
        f2.event.map(|e| e.provider_event_id),
        Some(focus_href.clone())
    );
    let members = server.members().await?;
    assert_eq!(members.len(), 2, "{members:?}");

    // An update.
    let mut changed = event.clone();
    changed.title = "Design review (moved)".into();
    changed.start = Some(instant(start + chrono::Duration::hours(1), "Europe/Berlin"));
    changed.end = Some(instant(
        start + chrono::Duration::minutes(105),
        "Europe/Berlin",
    ));
    let third = client.upsert_event(upsert(changed)).await?.into_inner();
    assert_eq!(third.outcome(), WriteOutcome::Updated);
    let updated = third.event.expect("the event");
    assert_eq!(updated.provider_event_id, href);
    assert_ne!(updated.version, stored.version);
    let (_, body) = server.get(&href).await?;
    assert!(body.contains("SUMMARY:Design review (moved)"), "{body}");
    assert!(body.contains("mailto:bob@example.com"), "{body}");
    assert!(
        body.contains(&format!(
            "DTSTART;TZID=Europe/Berlin:{}",
            (berlin + chrono::Duration::hours(1)).format("%Y%m%dT%H%M%S")
        )),
        "{body}"
    );
    assert_eq!(server.members().await?.len(), 2);

    // The mirror has our write under our id; the feed has no echo of it.
    sync_now_and_wait(&mut client, &account, "").await?;
    let mirrored = client
        .get_event(pb::GetEventRequest {
            account_id: account.clone(),
            calendar_id: calendar.clone(),
            client_event_id: "review-1".into(),
            provider_event_id: String::new(),
        })
        .await?
        .into_inner();
    assert_eq!(mirrored.provider_event_id, href);
    assert_eq!(mirrored.version, updated.version);
    assert!(mirrored.managed);
    let echoes = changes_after(&mut client, &c0).await?;
    assert!(echoes.is_empty(), "our own writes echoed: {echoes:#?}");

    // Delete, then delete again.
    let del = |c: &str| pb::DeleteEventRequest {
        account_id: account.clone(),
        calendar_id: calendar.clone(),
        client_event_id: c.into(),
        provider_event_id: String::new(),
        expected_version: String::new(),
    };
    let gone = client.delete_event(del("review-1")).await?.into_inner();
    assert_eq!(gone.outcome(), WriteOutcome::Deleted);
    assert_eq!(server.get(&href).await?.0, 404);
    let members = server.members().await?;
    assert_eq!(members.len(), 1, "{members:?}");
    assert_eq!(members[0].0, focus_href);
    let twice = client.delete_event(del("review-1")).await?.into_inner();
    assert_eq!(twice.outcome(), WriteOutcome::AlreadyGone);
    let gone = client.delete_event(del("focus-1")).await?.into_inner();
    assert_eq!(gone.outcome(), WriteOutcome::Deleted);
    assert!(server.members().await?.is_empty());

    sync_now_and_wait(&mut client, &account, "").await?;
    let echoes = changes_after(&mut client, &c0).await?;
    assert!(echoes.is_empty(), "our own writes echoed: {echoes:#?}");
    let missing = client
        .get_event(pb::GetEventRequest {
            account_id: account.clone(),
            calendar_id: calendar.clone(),
            client_event_id: "review-1".into(),
            provider_event_id: String::new(),
        })
        .await
        .expect_err("deleted");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    assert!(deviations.is_empty(), "{deviations:#?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn caldav_upserts_and_deletes_through_calbridge_land_on_radicale_once_without_echo(
) -> Result<()> {
    writes_through_calbridge(ServerKind::Radicale).await
}

#[tokio::test(flavor = "multi_thread")]
async fn caldav_upserts_and_deletes_through_calbridge_land_on_xandikos_once_without_echo(
) -> Result<()> {
    writes_through_calbridge(ServerKind::Xandikos).await
}

/// Deleting one instance of a series someone else made (DeleteEvent by
/// the instance's provider id): a stale version is ABORTED and changes
/// nothing; with the current one the server's series gains an EXDATE for a
/// plain instance, and loses the override of a moved one; the other
/// instances, the override that stays and everything else in the object
/// are untouched; the next sync brings no echo, and another client still
/// reads the series without the deleted instances.
async fn deleting_instances(kind: ServerKind) -> Result<()> {
    let seed = Seed::new();
    let Setup {
        server,
        stack: _stack,
        mut client,
        account,
        calendar,
        ..
    } = setup(kind, Some(&seed)).await?;
    let c0 = change_cursor(&mut client).await?;
    let first = seed.instance_id(&server, 0);
    let moved = seed.instance_id(&server, 1);
    let events = list_events(&mut client, &account, &calendar, window()).await?;
    let version = find(&events, &first)?.version.clone();
    let del = |id: &str, version: &str| pb::DeleteEventRequest {
        account_id: account.clone(),
        calendar_id: calendar.clone(),
        client_event_id: String::new(),
        provider_event_id: id.to_string(),
        expected_version: version.to_string(),
    };
    let (_, before) = server.get(&server.href("series.ics")).await?;

    let stale = client
        .delete_event(del(&first, "\"stale-etag\""))
        .await
        .expect_err("a stale version is refused");
    assert_eq!(stale.code(), tonic::Code::Aborted, "{stale:?}");
    assert_eq!(server.get(&server.href("series.ics")).await?.1, before);

    let gone = client
        .delete_event(del(&first, &version))
        .await?
        .into_inner();
    assert_eq!(gone.outcome(), WriteOutcome::Deleted);
    let gone = client.delete_event(del(&moved, "")).await?.into_inner();
    assert_eq!(gone.outcome(), WriteOutcome::Deleted);

    let (status, stored) = server.get(&server.href("series.ics")).await?;
    assert_eq!(status, 200);
    assert!(
        stored.contains(&format!("EXDATE:{}", ical_utc(seed.week(0))))
            && stored.contains(&format!("EXDATE:{}", ical_utc(seed.week(1)))),
        "{stored}"
    );
    assert!(!stored.contains("Weekly sync (moved)"), "{stored}");
    assert_eq!(
        stored.matches("RECURRENCE-ID").count(),
        1,
        "the cancelled week's override stays: {stored}"
    );

    sync_now_and_wait(&mut client, &account, "").await?;
    let events = list_events(&mut client, &account, &calendar, window()).await?;
    let ids: Vec<&str> = events
        .iter()
        .map(|e| e.provider_event_id.as_str())
        .collect();
    for left in [&first, &moved] {
        assert!(
            !ids.contains(&left.as_str()),
            "{left} is still mirrored: {ids:?}"
        );
    }
    for kept in [2, 3] {
        find(&events, &seed.instance_id(&server, kept))?;
    }
    assert_eq!(events.len(), 4, "plain, all-day and two instances: {ids:?}");
    let echoes = changes_after(&mut client, &c0).await?;
    assert!(echoes.is_empty(), "our own deletes echoed: {echoes:#?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_one_instance_of_a_caldav_series_on_radicale_writes_an_exdate() -> Result<()> {
    deleting_instances(ServerKind::Radicale).await
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_one_instance_of_a_caldav_series_on_xandikos_writes_an_exdate() -> Result<()> {
    deleting_instances(ServerKind::Xandikos).await
}

// ---- 4. an invalid server sync token ----

/// The caldav adapter's settled cursor (`v2|st|<recurring>|-|<sync
/// token>`) with the same shape and a sync token the server never issued.
fn with_bogus_token(cursor: &str) -> Result<String> {
    let parts: Vec<&str> = cursor.splitn(5, '|').collect();
    ensure!(
        parts.len() == 5 && parts[0] == "v2" && parts[1] == "st" && parts[3] == "-",
        "not a settled sync-token cursor: {cursor:?}"
    );
    let token = parts[4];
    let (prefix, tail) = match token.rfind('/') {
        Some(i) => token.split_at(i + 1),
        None => ("", token),
    };
    let bogus: String = tail
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { '0' } else { c })
        .collect();
    let bogus = if bogus == tail || bogus.is_empty() {
        "0000000000000000".to_string()
    } else {
        bogus
    };
    Ok(format!("v2|st|{}|-|{prefix}{bogus}", parts[2]))
}

async fn invalid_sync_token(kind: ServerKind) -> Result<()> {
    let seed = Seed::new();
    let Setup {
        server,
        mut stack,
        key,
        mut client,
        account,
        calendar,
    } = setup(kind, Some(&seed)).await?;
    // One event of our own too, so the mirror holds a managed event.
    let ours = client
        .upsert_event(pb::UpsertEventRequest {
            account_id: account.clone(),
            calendar_id: calendar.clone(),
            client_event_id: "ours-1".into(),
            event: Some(calbridge_e2e::timed_event(
                "Ours",
                seed.plain + chrono::Duration::hours(3),
                30,
            )),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(ours.outcome(), WriteOutcome::Created);
    sync_now_and_wait(&mut client, &account, "").await?;
    let before = wait_events(
        &mut client,
        &account,
        &calendar,
        window(),
        "seven events",
        |e| e.len() == 7,
    )
    .await?;
    let c0 = change_cursor(&mut client).await?;
    let last_success = sync_status(&mut client, &account)
        .await?
        .iter()
        .map(calbridge_e2e::last_success_ms)
        .max()
        .unwrap_or(0);

    // Offline: replace each calendar's cursor with one whose sync token the
    // server never issued.
    drop(client);
    assert!(
        stack.scheduler.terminate().await?,
        "the scheduler stops cleanly"
    );
    {
        let store =
            calbridge_e2e::open_store(stack.store_dir().parent().expect("a data directory"))?;
        let mut replaced = 0;
        for (acc, cal, mut st) in store.all_sync_states()? {
            if acc != account {
                continue;
            }
            let bogus = with_bogus_token(&st.cursor)?;
            assert_ne!(bogus, st.cursor);
            eprintln!("{cal}: cursor {:?} -> {bogus:?}", st.cursor);
            st.cursor = bogus;
            store.put_sync_state(&acc, &cal, &st)?;
            replaced += 1;
        }
        assert!(replaced >= 1, "the account's calendars have sync states");
        store.flush().await?;
    }

    stack.restart_scheduler().await?;
    let mut client = stack.client(Some(&key)).await?;
    sync_now_and_wait(&mut client, &account, "").await?;
    let status = sync_status(&mut client, &account).await?;
    for s in &status {
        assert!(calbridge_e2e::last_success_ms(s) > last_success, "{s:?}");
        assert_eq!(s.state(), pb::SyncState::Idle, "{s:?}");
        assert!(s.last_error.is_empty() && s.failures == 0, "{s:?}");
    }
    let log = stack
        .scheduler
        .log
        .lock()
        .map_err(|_| anyhow!("log lock"))?
        .clone();
    assert!(
        log.contains("resyncing from scratch"),
        "the adapter answered OUT_OF_RANGE and the scheduler listed from scratch; its log:\n{log}"
    );

    // No spurious change, and the mirror is as it was.
    let spurious = changes_after(&mut client, &c0).await?;
    assert!(
        spurious.is_empty(),
        "a resync reported changes: {spurious:#?}"
    );
    let after = list_events(&mut client, &account, &calendar, window()).await?;
    let key_of = |e: &pb::Event| e.provider_event_id.clone();
    let mut b = before.clone();
    let mut a = after.clone();
    b.sort_by_key(key_of);
    a.sort_by_key(key_of);
    assert_eq!(a, b, "the mirror is unchanged by the resync");
    assert_eq!(
        find(&after, &ours.event.expect("ours").provider_event_id)?.client_event_id,
        "ours-1"
    );

    // The new cursor works: an outside change flows again, incrementally.
    server
        .put(
            "plain.ics",
            &seed.plain_ics("Plain meeting (after resync)", seed.plain, &[]),
        )
        .await?;
    sync_now_and_wait(&mut client, &account, "").await?;
    let changes = changes_after(&mut client, &c0).await?;
    let kinds: Vec<(String, ChangeKind)> = changes
        .iter()
        .map(|c| (c.provider_event_id.clone(), c.kind()))
        .collect();
    assert_eq!(
        kinds,
        vec![(server.href("plain.ics"), ChangeKind::EventUpdated)]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_caldav_sync_token_on_radicale_resyncs_without_spurious_changes() -> Result<()> {
    invalid_sync_token(ServerKind::Radicale).await
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_caldav_sync_token_on_xandikos_resyncs_without_spurious_changes() -> Result<()> {
    invalid_sync_token(ServerKind::Xandikos).await
}

// ---- 5. FREE_BUSY accounts read free/busy only ----

/// A FREE_BUSY CalDAV account is synced from the server's free-busy-query
/// alone: the intervals answer QueryFreeBusy, an outside edit moves them, and
/// no title reaches the store.
async fn free_busy_only(kind: ServerKind) -> Result<()> {
    let server = DavServer::start(kind).await?;
    let start = Utc.from_utc_datetime(
        &(Utc::now() + chrono::Duration::days(2))
            .date_naive()
            .and_hms_opt(9, 0, 0)
            .expect("09:00"),
    );
    server
        .put(
            "fb.ics",
            &vcalendar(&[timed_lines("fb-1@test", "Secret Zanzibar plan", start, 60)]),
        )
        .await?;
    let stack = CaldavStack::start(POLL_SECONDS).await?;
    let (_, key) = stack.tenant("caldav-freebusy").await?;
    let mut c = stack.client(Some(&key)).await?;
    let account = c
        .connect_password_account(pb::ConnectPasswordAccountRequest {
            provider: pb::Provider::Caldav as i32,
            server_url: server.base.clone(),
            username: server.username.clone(),
            password: server.password.clone(),
            access_level: pb::AccessLevel::FreeBusy as i32,
        })
        .await?
        .into_inner();
    wait_synced(&mut c, &account.account_id).await?;
    let day = pb::TimeWindow {
        start: Some(to_timestamp(start - chrono::Duration::hours(9))),
        end: Some(to_timestamp(start + chrono::Duration::hours(15))),
    };
    let busy = |c: &mut SchedulerClient| {
        let mut c = c.clone();
        let account_id = account.account_id.clone();
        async move {
            let r = c
                .query_free_busy(pb::QueryFreeBusyRequest {
                    account_ids: vec![account_id],
                    window: Some(day),
                })
                .await?
                .into_inner();
            Ok::<_, anyhow::Error>(
                r.accounts[0]
                    .busy
                    .iter()
                    .map(|b| (b.start.map(|t| t.seconds), b.end.map(|t| t.seconds)))
                    .collect::<Vec<_>>(),
            )
        }
    };
    let secs = |t: DateTime<Utc>| Some(t.timestamp());
    assert_eq!(
        busy(&mut c).await?,
        vec![(secs(start), secs(start + chrono::Duration::hours(1)))]
    );

    // Moved outside: the interval moves.
    let moved = start + chrono::Duration::hours(3);
    server
        .put(
            "fb.ics",
            &vcalendar(&[timed_lines("fb-1@test", "Secret Zanzibar plan", moved, 60)]),
        )
        .await?;
    sync_now_and_wait(&mut c, &account.account_id, "").await?;
    assert_eq!(
        busy(&mut c).await?,
        vec![(secs(moved), secs(moved + chrono::Duration::hours(1)))]
    );

    drop(c);
    let mut stack = stack;
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
async fn a_free_busy_caldav_account_on_radicale_keeps_only_intervals() -> Result<()> {
    free_busy_only(ServerKind::Radicale).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_free_busy_caldav_account_on_xandikos_keeps_only_intervals() -> Result<()> {
    free_busy_only(ServerKind::Xandikos).await
}

// ---- 6. what a sync costs at the server ----

/// The requests Radicale logged on the calendar since `from` (a count of
/// logged requests), as (method, depth) pairs.
fn calendar_requests(server: &DavServer, from: usize) -> Vec<(String, Option<String>)> {
    server.logged_requests()[from..]
        .iter()
        .filter(|r| r.path == server.calendar)
        .map(|r| (r.method.clone(), r.depth.clone()))
        .collect()
}

fn count(requests: &[(String, Option<String>)], method: &str, depth: Option<&str>) -> usize {
    requests
        .iter()
        .filter(|(m, d)| m == method && d.as_deref() == depth)
        .count()
}

/// Through the scheduler with pages of three events (`sync.page_size = 3`)
/// on Radicale, whose log names every request: the initial sync costs two
/// requests whatever the number of pages (one PROPFIND with depth 0 for the
/// zone, one calendar-query that reads every object; the stream's later
/// pages come from it); the first poll takes the sync token with one
/// sync-collection; an idle poll is one REPORT; changes larger than a page arrive
/// incrementally, without a listing, fetched by multigets.
#[tokio::test(flavor = "multi_thread")]
async fn caldav_sync_on_radicale_lists_with_two_requests_and_polls_with_one() -> Result<()> {
    let server = DavServer::start(ServerKind::Radicale).await?;
    let seed = Seed::new();
    seed.put(&server).await?;
    let single = |i: i64, summary: &str| {
        vcalendar(&[timed_lines(
            &format!("single-{i}"),
            summary,
            seed.plain + chrono::Duration::days(i + 1),
            45,
        )])
    };
    for i in 0..8 {
        server
            .put(&format!("single-{i}.ics"), &single(i, "Single"))
            .await?;
    }
    // An hour between polls: only SyncNow syncs, so the log shows exactly
    // what each sync cost.
    let stack =
        CaldavStack::start_with_scheduler_config(3600, Some("[sync]\npage_size = 3\n")).await?;
    let (_, key) = stack.tenant("caldav-requests").await?;
    let mut client = stack.client(Some(&key)).await?;

    let s0 = server.logged_requests().len();
    let account = connect(&mut client, &server, &server.password)
        .await?
        .account_id;
    wait_synced(&mut client, &account).await?;
    let events = list_events(&mut client, &account, &server.calendar, window()).await?;
    assert_eq!(events.len(), 6 + 8, "every page arrived: {events:#?}");
    let initial = calendar_requests(&server, s0);
    assert_eq!(
        initial,
        vec![
            ("PROPFIND".to_string(), Some("0".to_string())),
            ("REPORT".to_string(), Some("1".to_string())),
        ],
        "five pages of three events from one calendar-query"
    );

    let calendar_sync = |client: &mut SchedulerClient| {
        let mut c = client.clone();
        let (account, calendar) = (account.clone(), server.calendar.clone());
        async move {
            let before = sync_status(&mut c, &account)
                .await?
                .iter()
                .map(calbridge_e2e::last_success_ms)
                .max()
                .unwrap_or(0)
                .max(Utc::now().timestamp_millis());
            c.sync_now(pb::SyncNowRequest {
                account_id: account.clone(),
                calendar_id: calendar,
            })
            .await?;
            calbridge_e2e::wait_synced_after(
                &mut c,
                &account,
                before,
                Duration::from_secs(30),
                Duration::from_millis(20),
            )
            .await
        }
    };

    // The first poll takes the sync token: one sync-collection from
    // scratch, whose members and etags match the listing's.
    let s1 = server.logged_requests().len();
    calendar_sync(&mut client).await?;
    let first = calendar_requests(&server, s1);
    assert_eq!(first, vec![("REPORT".to_string(), None)]);

    // An idle poll: one sync-collection.
    let s2 = server.logged_requests().len();
    calendar_sync(&mut client).await?;
    assert_eq!(
        calendar_requests(&server, s2),
        vec![("REPORT".to_string(), None)]
    );

    // Five edits, more than a page: incremental pages, no listing.
    let c0 = change_cursor(&mut client).await?;
    for i in 0..5 {
        server
            .put(&format!("single-{i}.ics"), &single(i, "Edited"))
            .await?;
    }
    let s3 = server.logged_requests().len();
    calendar_sync(&mut client).await?;
    let changed = calendar_requests(&server, s3);
    assert_eq!(
        count(&changed, "PROPFIND", Some("1")),
        0,
        "no listing: {changed:?}"
    );
    assert_eq!(
        count(&changed, "PROPFIND", Some("0")),
        1,
        "the zone: {changed:?}"
    );
    assert!(
        count(&changed, "REPORT", None) >= 3,
        "a sync-collection and a multiget per page: {changed:?}"
    );
    let changes = changes_after(&mut client, &c0).await?;
    let mut updated: Vec<String> = changes
        .iter()
        .map(|c| {
            assert_eq!(c.kind(), ChangeKind::EventUpdated, "{c:?}");
            c.provider_event_id.clone()
        })
        .collect();
    updated.sort();
    assert_eq!(
        updated,
        (0..5)
            .map(|i| server.href(&format!("single-{i}.ics")))
            .collect::<Vec<_>>()
    );
    let events = list_events(&mut client, &account, &server.calendar, window()).await?;
    assert_eq!(
        events.iter().filter(|e| e.title == "Edited").count(),
        5,
        "{events:#?}"
    );
    Ok(())
}
