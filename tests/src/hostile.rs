//! A hostile CalDAV server the tests control: it discovers like a real one
//! (principal `/u/`, home `/u/`, calendar `/u/cal/`) and then attacks the
//! adapter through its calendar's answers — deep XML, entity bombs, huge,
//! endless and slow bodies, broken percent-escapes, redirects and hrefs to
//! other hosts, unbounded recurrences, huge lines, many calendars. Every
//! request is logged with whether it carried credentials, so a test can
//! prove that nothing reached another host.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use chrono::{DateTime, Duration as Days, Utc};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::caldav::{ical_utc, timed_lines, vcalendar};
use crate::http1::{read_request, Req};

/// What the server does to the adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attack {
    /// Calendar answers nest XML 8,000 levels deep (about 100 KB).
    DeepXml,
    /// Calendar answers define entities that expand exponentially.
    EntityBomb,
    /// Calendar answers are 200 MB long, streamed without a length.
    HugeBody,
    /// Calendar answers never end.
    EndlessBody,
    /// Calendar answers trickle a byte every 200 ms.
    SlowBody,
    /// Hrefs carry broken percent-escapes (`%`, `%é`, a cut `%C3`); the
    /// objects themselves are fine.
    BadPercentHrefs,
    /// Every calendar request is redirected to this URL (another origin).
    RedirectElsewhere(String),
    /// The calendar list also names this calendar URL on another host.
    ForeignCalendar(String),
    /// Besides one ordinary event, a `FREQ=MINUTELY` series without end.
    UnboundedSeries,
    /// Besides one ordinary event, an object with a 6 MB line and one whose
    /// title is 500 KB.
    HugeLines,
    /// The calendar home holds this many read-only calendars besides the
    /// hostile one.
    ManyCalendars(usize),
}

/// One request the server saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The method.
    pub method: String,
    /// The path.
    pub path: String,
    /// True when it carried an `Authorization` header.
    pub authorized: bool,
}

/// The running server; it stops when dropped.
pub struct HostileServer {
    /// `http://127.0.0.1:PORT/`.
    pub base: String,
    log: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HostileServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The user name the server expects (any password is accepted).
pub const USER: &str = "mallory";
/// The calendar's href.
pub const CALENDAR: &str = "/u/cal/";
/// The title of the ordinary event served next to the attacks that keep
/// the objects readable.
pub const ORDINARY: &str = "Ordinary meeting";

impl HostileServer {
    /// Starts a server on `127.0.0.1:0` (or on `ip`, any port).
    pub async fn start(attack: Attack) -> Result<HostileServer> {
        Self::start_on("127.0.0.1", attack).await
    }

    /// Starts a server on `ip:0`.
    pub async fn start_on(ip: &str, attack: Attack) -> Result<HostileServer> {
        let listener = TcpListener::bind((ip, 0)).await?;
        let base = format!("http://{}/", listener.local_addr()?);
        let log: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let (log2, attack) = (log.clone(), Arc::new(attack));
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (log, attack) = (log2.clone(), attack.clone());
                tokio::spawn(async move {
                    let _ = handle(stream, &attack, &log).await;
                });
            }
        });
        Ok(HostileServer { base, log, task })
    }

    /// Every request seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.log.lock().expect("log").clone()
    }
}

async fn handle(mut stream: TcpStream, attack: &Attack, log: &Mutex<Vec<Seen>>) -> Result<()> {
    let req = read_request(&mut stream).await?;
    log.lock().expect("log").push(Seen {
        method: req.method.clone(),
        path: req.path.clone(),
        authorized: req.header("authorization").is_some(),
    });
    let body = String::from_utf8_lossy(&req.body).to_string();
    let on_calendar = req.path.starts_with(CALENDAR);
    let depth = req.header("depth").unwrap_or("0").to_string();
    if on_calendar {
        if let Attack::RedirectElsewhere(to) = attack {
            return write(&mut stream, 301, &[("Location", to.as_str())], b"").await;
        }
        let big_answer = req.method == "REPORT" || depth == "1";
        if big_answer {
            match attack {
                Attack::DeepXml => {
                    let n = 8_000;
                    let xml = format!(
                        "<multistatus xmlns=\"DAV:\"><response><href>{CALENDAR}a.ics</href>{}{}</response></multistatus>",
                        "<x>".repeat(n),
                        "</x>".repeat(n)
                    );
                    return write(&mut stream, 207, &[], xml.as_bytes()).await;
                }
                Attack::EntityBomb => {
                    let mut dtd = String::from("<!ENTITY a0 \"lol\">");
                    for i in 1..10 {
                        let prev = format!("&a{};", i - 1);
                        dtd.push_str(&format!("<!ENTITY a{i} \"{}\">", prev.repeat(10)));
                    }
                    let xml = format!(
                        "<?xml version=\"1.0\"?><!DOCTYPE multistatus [{dtd}]><multistatus xmlns=\"DAV:\"><response><href>&a9;</href></response></multistatus>"
                    );
                    return write(&mut stream, 207, &[], xml.as_bytes()).await;
                }
                Attack::HugeBody => return stream_body(&mut stream, Some(200 << 20), None).await,
                Attack::EndlessBody => return stream_body(&mut stream, None, None).await,
                Attack::SlowBody => {
                    return stream_body(&mut stream, Some(1_000), Some(Duration::from_millis(200)))
                        .await
                }
                _ => {}
            }
        }
    }
    let answer = answer(&req, &body, &depth, attack);
    write(&mut stream, answer.0, &[], answer.1.as_bytes()).await
}

/// The answer of a server that behaves (apart from the objects it holds).
fn answer(req: &Req, body: &str, depth: &str, attack: &Attack) -> (u16, String) {
    if req.method != "PROPFIND" && req.method != "REPORT" {
        return (405, String::new());
    }
    if body.contains("current-user-principal") {
        return (
            207,
            response(
                &req.path,
                "<current-user-principal><href>/u/</href></current-user-principal>",
            ),
        );
    }
    if body.contains("calendar-home-set") {
        return (
            207,
            response(
                "/u/",
                "<C:calendar-home-set><href>/u/</href></C:calendar-home-set>",
            ),
        );
    }
    if req.path == "/u/" && depth == "1" {
        let calendar = |href: &str, name: &str, privilege: &str| {
            response_inner(
                href,
                &format!("<resourcetype><collection/><C:calendar/></resourcetype><displayname>{name}</displayname><current-user-privilege-set><privilege><{privilege}/></privilege></current-user-privilege-set>"),
            )
        };
        let mut inner = response_inner("/u/", "<resourcetype><collection/></resourcetype>");
        inner.push_str(&calendar(CALENDAR, "Hostile", "all"));
        match attack {
            Attack::ForeignCalendar(url) => inner.push_str(&calendar(url, "Elsewhere", "all")),
            // Read-only, so not synced by default: the test is about keeping
            // the list, not about syncing thousands of calendars.
            Attack::ManyCalendars(n) => {
                for i in 0..*n {
                    inner.push_str(&calendar(&format!("/u/c{i}/"), &format!("C{i}"), "read"));
                }
            }
            _ => {}
        }
        return (207, multistatus(&inner));
    }
    if req.path.starts_with(CALENDAR) && depth == "0" && req.method == "PROPFIND" {
        return (207, response(CALENDAR, "<CS:getctag>1</CS:getctag>"));
    }
    let objects = objects(attack);
    if req.method == "PROPFIND" {
        // Depth 1 on the calendar: the members and their etags.
        let mut inner = response_inner(
            CALENDAR,
            "<resourcetype><collection/><C:calendar/></resourcetype>",
        );
        for (href, etag, _) in &objects {
            inner.push_str(&response_inner(href, &format!("<getetag>{etag}</getetag>")));
        }
        return (207, multistatus(&inner));
    }
    // calendar-query (everything) or calendar-multiget (the hrefs asked).
    let mut inner = String::new();
    for (href, etag, data) in &objects {
        if body.contains("calendar-multiget") && !body.contains(&xml_text(href)) {
            continue;
        }
        inner.push_str(&response_inner(
            href,
            &format!(
                "<getetag>{etag}</getetag><C:calendar-data>{}</C:calendar-data>",
                xml_text(data)
            ),
        ));
    }
    (207, multistatus(&inner))
}

/// The calendar's objects: (href, etag, iCalendar text).
fn objects(attack: &Attack) -> Vec<(String, String, String)> {
    let tomorrow: DateTime<Utc> = (Utc::now() + Days::days(1))
        .date_naive()
        .and_hms_opt(9, 0, 0)
        .expect("valid time")
        .and_utc();
    let ordinary = vcalendar(&[timed_lines("ordinary-1", ORDINARY, tomorrow, 30)]);
    let mut out = vec![(
        format!("{CALENDAR}ordinary.ics"),
        "\"o1\"".to_string(),
        ordinary,
    )];
    match attack {
        Attack::BadPercentHrefs => {
            for (i, href) in ["%", "a%é", "b%C3", "c%%41", "d%2"].iter().enumerate() {
                let start = tomorrow + Days::hours(i as i64 + 1);
                out.push((
                    format!("{CALENDAR}{href}.ics"),
                    format!("\"p{i}\""),
                    vcalendar(&[timed_lines(
                        &format!("pct-{i}"),
                        &format!("Percent {i}"),
                        start,
                        30,
                    )]),
                ));
            }
        }
        Attack::UnboundedSeries => {
            let start = Utc::now() - Days::days(2);
            let lines = vec![
                "UID:flood@hostile".to_string(),
                format!("DTSTART:{}", ical_utc(start)),
                "DURATION:PT1M".into(),
                "RRULE:FREQ=MINUTELY".into(),
                "SUMMARY:Flood".into(),
            ];
            out.push((
                format!("{CALENDAR}flood.ics"),
                "\"f1\"".into(),
                vcalendar(&[lines]),
            ));
        }
        Attack::HugeLines => {
            let mut huge = timed_lines("huge-1", "Huge", tomorrow + Days::hours(2), 30);
            huge.push(format!("DESCRIPTION:{}", "x".repeat(6 << 20)));
            out.push((
                format!("{CALENDAR}huge.ics"),
                "\"h1\"".into(),
                vcalendar(&[huge]),
            ));
            out.push((
                format!("{CALENDAR}long-title.ics"),
                "\"t1\"".into(),
                vcalendar(&[timed_lines(
                    "long-title-1",
                    &"T".repeat(500 << 10),
                    tomorrow + Days::hours(3),
                    30,
                )]),
            ));
        }
        _ => {}
    }
    out
}

fn xml_text(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn response_inner(href: &str, props: &str) -> String {
    format!(
        "<response><href>{}</href><propstat><prop>{props}</prop><status>HTTP/1.1 200 OK</status></propstat></response>",
        xml_text(href)
    )
}

fn response(href: &str, props: &str) -> String {
    multistatus(&response_inner(href, props))
}

fn multistatus(inner: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><multistatus xmlns=\"DAV:\" xmlns:C=\"urn:ietf:params:xml:ns:caldav\" xmlns:CS=\"http://calendarserver.org/ns/\">{inner}</multistatus>"
    )
}

async fn write(
    stream: &mut TcpStream,
    status: u16,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<()> {
    let mut head = format!("HTTP/1.1 {status} X\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.flush().await?;
    let _ = stream.shutdown().await;
    Ok(())
}

/// A 207 whose body is `len` bytes (forever when `None`), without a
/// `Content-Length` unless it is slow: the client only learns the size by
/// reading. `pause` between single bytes makes it trickle.
async fn stream_body(
    stream: &mut TcpStream,
    len: Option<usize>,
    pause: Option<Duration>,
) -> Result<()> {
    let mut head = String::from("HTTP/1.1 207 Multi-Status\r\nContent-Type: application/xml\r\n");
    if let (Some(n), Some(_)) = (len, pause) {
        head.push_str(&format!("Content-Length: {n}\r\n"));
    }
    head.push_str("Connection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await?;
    let opening = "<multistatus xmlns=\"DAV:\">";
    let filler = format!("<response><href>{CALENDAR}x.ics</href></response>");
    let mut chunk = String::with_capacity(64 << 10);
    while chunk.len() < 64 << 10 {
        chunk.push_str(&filler);
    }
    let mut sent = 0usize;
    if let Some(pause) = pause {
        for b in opening
            .bytes()
            .chain(filler.bytes().cycle())
            .take(len.unwrap_or(usize::MAX))
        {
            stream.write_all(&[b]).await?;
            tokio::time::sleep(pause).await;
        }
        return Ok(());
    }
    stream.write_all(opening.as_bytes()).await?;
    while len.is_none_or(|n| sent < n) {
        stream.write_all(chunk.as_bytes()).await?;
        sent += chunk.len();
    }
    stream.write_all(b"</multistatus>").await?;
    let _ = stream.shutdown().await;
    Ok(())
}

/// A listener that answers nothing useful and records every connection:
/// the "other host" credentials must never reach.
pub struct Recorder {
    /// `http://IP:PORT`.
    pub base: String,
    server: HostileServer,
}

impl Recorder {
    /// Starts one on `ip` (e.g. `127.0.0.2`, which the tests' adapters do
    /// not allow-list).
    pub async fn start(ip: &str) -> Result<Recorder> {
        let server = HostileServer::start_on(ip, Attack::DeepXml).await?;
        Ok(Recorder {
            base: server.base.trim_end_matches('/').to_string(),
            server,
        })
    }

    /// The requests that reached it.
    pub fn seen(&self) -> Vec<Seen> {
        self.server.seen()
    }
}
