//! CalDAV sync benchmark: prints figures, asserts nothing about speed.
//!
//! Run with
//! `cargo build --release -p calbridge-scheduler -p calbridge-adapter-caldav --bins &&
//!  CALBRIDGE_TEST_PYTHON=$PWD/target/test-env/bin/python cargo bench -p calbridge-e2e --bench caldav_sync`
//! (`BENCH_EVENTS`, default 2000, sets the number of seeded events;
//! `BENCH_KEEP_LOG=FILE` keeps Radicale's log; `BENCH_VDIRSYNCER_FIRST=1` runs
//! the peer first; `BENCH_PAGE_SIZE=N` sets the scheduler's `sync.page_size`,
//! default 250).
//!
//! One Radicale (from the test venv, htpasswd auth, info-level log) is
//! seeded with a mix of all-day, timed UTC, timed TZID (Europe/Berlin,
//! America/New_York) and recurring events (weekly, and daily with a moved
//! instance) by one whole-VCALENDAR PUT to the collection URL. Then, in the
//! same run and against the same collection:
//! - (a) calbridge initial sync: ConnectPasswordAccount through the real
//!   scheduler and CalDAV adapter (release builds) until the calendar left
//!   its initial sync (discovery, then a depth-0 PROPFIND for the zone and
//!   supported reports and one calendar-query whose objects feed the stream
//!   of pages);
//! - (b) calbridge re-syncs without changes: SyncNow until `last_success`
//!   advances. The first one after the initial sync takes the calendar's
//!   RFC 6578 sync token by one sync-collection from scratch (the adapter
//!   leaves that out of the initial sync:
//!   on a collection that never served a sync token Radicale spends seconds
//!   building its sync history), later ones are the idle poll;
//! - (c) vdirsyncer (the peer, from the venv): first full sync of the
//!   collection to a local folder, then a no-change re-sync.
//!
//! Requests are counted from Radicale's own log: at info level it writes one
//! `METHOD request for '...' received` line per request, so the counts are
//! what the server saw (no proxy in the path to distort the timings). The
//! adapter suggests a one-hour poll interval so no background poll runs
//! during the measurements.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use calbridge::pb;
use calbridge_e2e::caldav::{
    connect, ical_date, ical_utc, CaldavStack, DavServer, LoggedRequest, ServerKind,
};
use calbridge_e2e::{last_success_ms, sync_status, wait_initial_sync, wait_synced_after};
use chrono::{NaiveDate, TimeZone, Utc};

const VTIMEZONES: &str = "BEGIN:VTIMEZONE\r\nTZID:Europe/Berlin\r\n\
BEGIN:DAYLIGHT\r\nTZOFFSETFROM:+0100\r\nTZOFFSETTO:+0200\r\nTZNAME:CEST\r\n\
DTSTART:19700329T020000\r\nRRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU\r\nEND:DAYLIGHT\r\n\
BEGIN:STANDARD\r\nTZOFFSETFROM:+0200\r\nTZOFFSETTO:+0100\r\nTZNAME:CET\r\n\
DTSTART:19701025T030000\r\nRRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU\r\nEND:STANDARD\r\n\
END:VTIMEZONE\r\n\
BEGIN:VTIMEZONE\r\nTZID:America/New_York\r\n\
BEGIN:DAYLIGHT\r\nTZOFFSETFROM:-0500\r\nTZOFFSETTO:-0400\r\nTZNAME:EDT\r\n\
DTSTART:19700308T020000\r\nRRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=2SU\r\nEND:DAYLIGHT\r\n\
BEGIN:STANDARD\r\nTZOFFSETFROM:-0400\r\nTZOFFSETTO:-0500\r\nTZNAME:EST\r\n\
DTSTART:19701101T020000\r\nRRULE:FREQ=YEARLY;BYMONTH=11;BYDAY=1SU\r\nEND:STANDARD\r\n\
END:VTIMEZONE\r\n";

/// One VCALENDAR with `n` events (one UID each) of mixed shapes; returns
/// it and how many of each shape.
fn seed_calendar(n: usize) -> (String, BTreeMap<&'static str, usize>) {
    let today = Utc::now().date_naive();
    let mut kinds: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut out =
        String::from("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//calbridge bench//EN\r\n");
    out.push_str(VTIMEZONES);
    for i in 0..n {
        let day: NaiveDate = today + chrono::Duration::days(1 + (i % 300) as i64);
        let hour = 7 + (i % 10) as u32;
        let local = |d: NaiveDate, h: u32| format!("{}T{:02}0000", ical_date(d), h);
        let utc = |d: NaiveDate, h: u32| {
            ical_utc(Utc.from_utc_datetime(&d.and_hms_opt(h, 0, 0).expect("hour")))
        };
        let mut ev = |lines: Vec<String>| {
            out.push_str("BEGIN:VEVENT\r\n");
            out.push_str(&format!(
                "UID:bench-{i}@example.com\r\nDTSTAMP:20260101T000000Z\r\n"
            ));
            out.push_str(&format!(
                "SUMMARY:Bench event {i}\r\nDESCRIPTION:Seeded for the CalDAV sync benchmark\\, number {i}.\r\n"
            ));
            for l in lines {
                out.push_str(&l);
                out.push_str("\r\n");
            }
            out.push_str("END:VEVENT\r\n");
        };
        match i % 10 {
            0 | 1 => {
                *kinds.entry("all-day").or_default() += 1;
                ev(vec![
                    format!("DTSTART;VALUE=DATE:{}", ical_date(day)),
                    format!(
                        "DTEND;VALUE=DATE:{}",
                        ical_date(day + chrono::Duration::days(1))
                    ),
                ]);
            }
            2..=4 => {
                *kinds.entry("timed UTC").or_default() += 1;
                ev(vec![
                    format!("DTSTART:{}", utc(day, hour)),
                    format!("DTEND:{}", utc(day, hour + 1)),
                ]);
            }
            5 | 6 => {
                *kinds.entry("timed Europe/Berlin").or_default() += 1;
                ev(vec![
                    format!("DTSTART;TZID=Europe/Berlin:{}", local(day, hour)),
                    format!("DTEND;TZID=Europe/Berlin:{}", local(day, hour + 1)),
                ]);
            }
            7 => {
                *kinds.entry("timed America/New_York").or_default() += 1;
                ev(vec![
                    format!("DTSTART;TZID=America/New_York:{}", local(day, hour)),
                    format!("DTEND;TZID=America/New_York:{}", local(day, hour + 1)),
                    "LOCATION:New York".into(),
                ]);
            }
            8 => {
                *kinds.entry("weekly series (x6)").or_default() += 1;
                ev(vec![
                    format!("DTSTART:{}", utc(day, hour)),
                    format!("DTEND:{}", utc(day, hour + 1)),
                    "RRULE:FREQ=WEEKLY;COUNT=6".into(),
                ]);
            }
            _ => {
                *kinds.entry("daily series (x5, one moved)").or_default() += 1;
                ev(vec![
                    format!("DTSTART;TZID=Europe/Berlin:{}", local(day, hour)),
                    format!("DTEND;TZID=Europe/Berlin:{}", local(day, hour + 1)),
                    "RRULE:FREQ=DAILY;COUNT=5".into(),
                ]);
                let second = day + chrono::Duration::days(1);
                ev(vec![
                    format!("RECURRENCE-ID;TZID=Europe/Berlin:{}", local(second, hour)),
                    format!("DTSTART;TZID=Europe/Berlin:{}", local(second, hour + 2)),
                    format!("DTEND;TZID=Europe/Berlin:{}", local(second, hour + 3)),
                ]);
            }
        }
    }
    out.push_str("END:VCALENDAR\r\n");
    (out, kinds)
}

/// How many requests the server had logged at one moment.
struct Snap(usize);

fn snap(server: &DavServer) -> Snap {
    Snap(server.logged_requests().len())
}

/// One measured run: its time, and the requests the server saw meanwhile.
struct Row {
    what: String,
    time: Duration,
    requests: Vec<LoggedRequest>,
}

impl Row {
    fn new(what: impl Into<String>, time: Duration, server: &DavServer, from: &Snap) -> Row {
        let all = server.logged_requests();
        Row {
            what: what.into(),
            time,
            requests: all[from.0.min(all.len())..].to_vec(),
        }
    }

    fn total(&self) -> usize {
        self.requests.len()
    }

    /// Requests on the calendar collection itself (the sync), leaving out
    /// discovery's requests on the server root, the principal and the home.
    fn on_calendar(&self, calendar: &str) -> usize {
        self.requests.iter().filter(|r| r.path == calendar).count()
    }

    fn server_seconds(&self) -> f64 {
        // (An empty f64 sum is -0.0.)
        self.requests.iter().filter_map(|r| r.seconds).sum::<f64>() + 0.0
    }

    fn by_method(&self) -> String {
        let mut m: BTreeMap<&str, usize> = BTreeMap::new();
        for r in &self.requests {
            *m.entry(r.method.as_str()).or_default() += 1;
        }
        m.iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Requests grouped by method, path and depth, with the server's time
    /// for each group, most frequent first.
    fn pattern(&self) -> String {
        let mut m: BTreeMap<String, (usize, f64)> = BTreeMap::new();
        for r in &self.requests {
            let depth = r
                .depth
                .as_ref()
                .map(|d| format!(" depth {d}"))
                .unwrap_or_default();
            let e = m
                .entry(format!("{} {}{depth}", r.method, r.path))
                .or_default();
            e.0 += 1;
            e.1 += r.seconds.unwrap_or(0.0);
        }
        let mut v: Vec<_> = m.into_iter().collect();
        v.sort_by(|a, b| b.1 .0.cmp(&a.1 .0).then(a.0.cmp(&b.0)));
        v.iter()
            .map(|(k, (n, s))| format!("{n} x {k} ({s:.2} s)"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Runs vdirsyncer with `args`; fails with its output when it fails.
async fn vdirsyncer(bin: &std::path::Path, config: &std::path::Path, args: &[&str]) -> Result<()> {
    let out = tokio::process::Command::new(bin)
        .arg("-c")
        .arg(config)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {}", bin.display()))?;
    if !out.status.success() {
        bail!(
            "vdirsyncer {args:?} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// vdirsyncer's first sync and no-change re-sync of the collection, with
/// its start-up cost measured apart.
async fn run_vdirsyncer(server: &DavServer, rows: &mut Vec<Row>) -> Result<()> {
    let bin = calbridge_e2e::caldav::venv_bin()?.join("vdirsyncer");
    if !bin.is_file() {
        bail!(
            "{} is missing (tests/python/requirements.txt lists vdirsyncer; run scripts/test-env)",
            bin.display()
        );
    }
    let dir = tempfile::tempdir()?;
    let local = dir.path().join("local");
    std::fs::create_dir_all(&local)?;
    let config = dir.path().join("config");
    std::fs::write(
        &config,
        format!(
            "[general]\n\
             status_path = \"{status}/\"\n\n\
             [pair bench]\n\
             a = \"bench_remote\"\n\
             b = \"bench_local\"\n\
             collections = null\n\
             conflict_resolution = \"a wins\"\n\n\
             [storage bench_remote]\n\
             type = \"caldav\"\n\
             url = \"{url}\"\n\
             username = \"{user}\"\n\
             password = \"{password}\"\n\n\
             [storage bench_local]\n\
             type = \"filesystem\"\n\
             path = \"{local}/\"\n\
             fileext = \".ics\"\n",
            status = dir.path().join("status").display(),
            url = server.url(&server.calendar)?,
            user = server.username,
            password = server.password,
            local = local.display(),
        ),
    )?;

    let t = Instant::now();
    let out = tokio::process::Command::new(&bin)
        .arg("--version")
        .output()
        .await?;
    let startup = t.elapsed();
    if !out.status.success() {
        bail!("vdirsyncer --version failed");
    }

    let s0 = snap(server);
    let t = Instant::now();
    vdirsyncer(&bin, &config, &["discover"]).await?;
    rows.push(Row::new(
        "vdirsyncer discover (not in the ratios)",
        t.elapsed(),
        server,
        &s0,
    ));

    let s1 = snap(server);
    let t = Instant::now();
    vdirsyncer(&bin, &config, &["sync"]).await?;
    let first = t.elapsed();
    let files = std::fs::read_dir(&local)?.count();
    rows.push(Row::new(
        format!("vdirsyncer first full sync ({files} files)"),
        first,
        server,
        &s1,
    ));

    let s2 = snap(server);
    let t = Instant::now();
    vdirsyncer(&bin, &config, &["sync"]).await?;
    rows.push(Row::new(
        "vdirsyncer no-change re-sync",
        t.elapsed(),
        server,
        &s2,
    ));
    let s3 = snap(server);
    rows.push(Row::new(
        "(vdirsyncer --version alone: its Python start-up)",
        startup,
        server,
        &s3,
    ));
    Ok(())
}

/// SyncNow (one calendar, or the account when `calendar` is empty) and
/// waits, polling every 2 ms, until the sync finished.
async fn sync_now(
    c: &mut calbridge_e2e::SchedulerClient,
    account: &str,
    calendar: &str,
) -> Result<Duration> {
    let before = sync_status(c, account)
        .await?
        .iter()
        .map(last_success_ms)
        .max()
        .unwrap_or(0)
        .max(Utc::now().timestamp_millis());
    let t = Instant::now();
    c.sync_now(pb::SyncNowRequest {
        account_id: account.to_string(),
        calendar_id: calendar.to_string(),
    })
    .await?;
    wait_synced_after(
        c,
        account,
        before,
        Duration::from_secs(60),
        Duration::from_millis(2),
    )
    .await?;
    Ok(t.elapsed())
}

#[tokio::main]
async fn main() -> Result<()> {
    if std::env::var_os("CALBRIDGE_TEST_PYTHON").is_none() {
        println!(
            "caldav_sync: CALBRIDGE_TEST_PYTHON is not set; run scripts/test-env and set it to \
             target/test-env/bin/python to run this benchmark"
        );
        return Ok(());
    }
    let n: usize = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);

    let server = DavServer::start(ServerKind::Radicale).await?;
    let (ics, kinds) = seed_calendar(n);
    let t = Instant::now();
    server.put_collection(&ics).await?;
    let seeded_in = t.elapsed();
    let members = server.members().await?.len();
    println!(
        "Radicale 3.9 seeded with {n} events in {members} resources by one {} KiB VCALENDAR PUT \
         to the collection in {:.2} s: {}",
        ics.len() / 1024,
        seeded_in.as_secs_f64(),
        kinds
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if members != n {
        bail!("expected {n} resources on the server, found {members}");
    }

    // BENCH_VDIRSYNCER_FIRST=1 runs the peer before calbridge, to see which
    // one-off server costs (caches, sync-token state) land on whoever comes
    // first.
    let peer_first = std::env::var_os("BENCH_VDIRSYNCER_FIRST").is_some();
    let mut rows = Vec::new();
    let mut peer = None;
    if peer_first {
        peer = Some(run_vdirsyncer(&server, &mut rows).await);
    }

    // An hour between polls: only our SyncNow syncs during the run.
    let page_size: Option<u32> = std::env::var("BENCH_PAGE_SIZE")
        .ok()
        .and_then(|v| v.parse().ok());
    let stack = CaldavStack::start_with_scheduler_config(
        3600,
        page_size
            .map(|n| format!("[sync]\npage_size = {n}\n"))
            .as_deref(),
    )
    .await?;
    let (_, key) = stack.tenant("bench").await?;
    let mut c = stack.client(Some(&key)).await?;

    // (a) initial sync, discovery included.
    let s0 = snap(&server);
    let t = Instant::now();
    let account = connect(&mut c, &server, &server.password).await?.account_id;
    let connected = t.elapsed();
    wait_initial_sync(
        &mut c,
        &account,
        Duration::from_secs(600),
        Duration::from_millis(2),
    )
    .await?;
    let initial = t.elapsed();
    let status = sync_status(&mut c, &account).await?;
    let mirrored: u64 = status.iter().map(|s| s.events).sum();
    let calendars = status.len();
    if status.iter().any(|s| !s.last_error.is_empty()) {
        bail!("the initial sync failed: {status:?}");
    }
    rows.push(Row::new(
        format!(
            "calbridge connect + initial sync ({calendars} calendar(s), {mirrored} events mirrored, \
             connected after {:.3} s{})",
            connected.as_secs_f64(),
            page_size
                .map(|n| format!(", page size {n}"))
                .unwrap_or_default()
        ),
        initial,
        &server,
        &s0,
    ));

    // (b) no-change re-syncs: the first one takes the sync token; then one
    // calendar (what a poll does), then the whole account (SyncNow also
    // refreshes the calendar list).
    let s1 = snap(&server);
    let took = sync_now(&mut c, &account, &server.calendar).await?;
    rows.push(Row::new(
        "calbridge first re-sync, takes the sync token (SyncNow, the calendar)",
        took,
        &server,
        &s1,
    ));
    let s1 = snap(&server);
    let took = sync_now(&mut c, &account, &server.calendar).await?;
    rows.push(Row::new(
        "calbridge no-change re-sync (SyncNow, the calendar)",
        took,
        &server,
        &s1,
    ));
    let s2 = snap(&server);
    let took = sync_now(&mut c, &account, "").await?;
    rows.push(Row::new(
        "calbridge no-change re-sync (SyncNow, the whole account)",
        took,
        &server,
        &s2,
    ));

    // (c) the peer.
    let peer = match peer {
        Some(p) => p,
        None => run_vdirsyncer(&server, &mut rows).await,
    };

    println!();
    println!(
        "{:<90} {:>9} {:>9} {:>10}  by method",
        "run", "time", "requests", "in server"
    );
    for r in &rows {
        println!(
            "{:<90} {:>7.3} s {:>9} {:>8.3} s  {}",
            r.what,
            r.time.as_secs_f64(),
            r.total(),
            r.server_seconds(),
            r.by_method()
        );
    }
    println!();
    for r in &rows {
        if r.total() > 0 {
            println!("{}: {}", r.what, r.pattern());
        }
    }
    println!();
    match peer {
        Ok(()) => {
            let find = |prefix: &str| rows.iter().find(|r| r.what.starts_with(prefix));
            if let (Some(ci), Some(ct), Some(cr), Some(vi), Some(vr)) = (
                find("calbridge connect + initial"),
                find("calbridge first re-sync"),
                find("calbridge no-change re-sync (SyncNow, the calendar)"),
                find("vdirsyncer first"),
                find("vdirsyncer no-change"),
            ) {
                let vd = find("vdirsyncer discover").map_or(0, Row::total);
                println!(
                    "initial sync: vdirsyncer / calbridge time = {:.2}x faster (calbridge / \
                     vdirsyncer = {:.2}x); requests on the calendar {} vs {}, in all {} (account \
                     discovery included) vs {} ({} of its discover run included)",
                    vi.time.as_secs_f64() / ci.time.as_secs_f64(),
                    ci.time.as_secs_f64() / vi.time.as_secs_f64(),
                    ci.on_calendar(&server.calendar),
                    vi.on_calendar(&server.calendar),
                    ci.total(),
                    vi.total() + vd,
                    vd
                );
                println!(
                    "no-change re-sync: calbridge / vdirsyncer time = {:.3}x; requests {} vs {} \
                     (target for calbridge: one request per calendar = {calendars}); the first \
                     one, which takes the sync token: {:.3}x, {} request(s)",
                    cr.time.as_secs_f64() / vr.time.as_secs_f64(),
                    cr.total(),
                    vr.total(),
                    ct.time.as_secs_f64() / vr.time.as_secs_f64(),
                    ct.total()
                );
                println!(
                    "notes: vdirsyncer's times include its Python start-up (see its --version \
                     row); calbridge's initial sync includes account discovery, recurrence \
                     expansion and the encrypted mirror writes; \"in server\" sums Radicale's \
                     own response times from its log"
                );
            }
        }
        Err(e) => println!("vdirsyncer could not be run here, so no ratios: {e:#}"),
    }
    if let Some(path) = std::env::var_os("BENCH_KEEP_LOG") {
        std::fs::write(&path, server.log())?;
        println!("Radicale's log kept in {}", path.to_string_lossy());
    }
    Ok(())
}
