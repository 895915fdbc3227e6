//! An "iCloud-shaped" HTTP proxy in front of Radicale, for the iCloud
//! end-to-end tests (PROVIDERS.md §3.5 and §5.3). Real iCloud cannot be
//! reached from the tests, so two plain-HTTP loopback listeners stand for
//! `caldav.icloud.com` (the main host) and a partition host `pNN-caldav`,
//! and emulate what clients observed at Apple:
//!
//! - discovery on the main host: `/.well-known/caldav` redirects to `/`,
//!   `current-user-principal` is `/<dsid>/principal/`, and the principal's
//!   PROPFIND answers (every other time) under the href `/principal/`, with
//!   a `calendar-home-set` that is an absolute URL on the partition host;
//! - the `calendar-home-set` left out of some answers, on demand;
//! - a request without `Authorization` gets a 401 whose `WWW-Authenticate`
//!   scheme is not Basic (so Basic must be sent pre-emptively);
//! - calendar requests reaching the main host are redirected (301) across
//!   hosts to the partition host;
//! - REPORT answers include a `D:response` for the calendar collection
//!   itself; XML answers carry a wrong or no `Content-Type`;
//! - `C:free-busy-query` answers 400;
//! - returned objects (GET and REPORT) carry extra `X-APPLE-*` properties
//!   with trailing whitespace and a duplicated `DTSTAMP`; PUT answers carry
//!   no `ETag`;
//! - injectable 503s without `Retry-After` (throttling).
//!
//! Everything else is forwarded to Radicale, with `/<dsid>/calendars/...`
//! rewritten to `/<user>/...` and hrefs rewritten back in answers. The
//! HTTP/1.1 server is a small hand-written one (one request per
//! connection), enough for the adapter's reqwest client.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Result;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::caldav::DavServer;
use crate::http1::{read_request, Req};

/// The numeric account id ("dsid") the proxy presents.
pub const DSID: &str = "10012345678";

/// Which listener a request reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host {
    /// The main host, standing for `caldav.icloud.com`.
    Main,
    /// The partition host, standing for `pNN-caldav.icloud.com`.
    Partition,
}

/// One request as the proxy saw it, with its answer's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyRequest {
    /// The listener that received it.
    pub host: Host,
    /// The HTTP method.
    pub method: String,
    /// The request path (iCloud-style).
    pub path: String,
    /// True when an `Authorization: Basic` header was sent.
    pub basic_auth: bool,
    /// The REPORT's kind (`sync-collection`, `calendar-multiget`,
    /// `free-busy-query`, ...), empty for other methods.
    pub report: String,
    /// The number of `href` elements in the request body (multiget size).
    pub hrefs: usize,
    /// The status the proxy answered.
    pub status: u16,
}

struct Shared {
    upstream: String,
    user: String,
    main: String,
    partition: String,
    http: reqwest::Client,
    fail_next: AtomicU32,
    home_on_main: AtomicBool,
    omit_home_set: AtomicU32,
    refuse_query: AtomicU32,
    refuse_home: AtomicBool,
    principal_asks: AtomicU64,
    log: Mutex<Vec<ProxyRequest>>,
}

/// The running proxy; its listeners stop when it is dropped.
pub struct IcloudProxy {
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// `http://127.0.0.1:PORT/`, standing for `https://caldav.icloud.com`:
    /// the adapter's `--default-server-url` in the tests.
    pub base: String,
    /// `http://127.0.0.1:PORT/`, standing for the partition host.
    pub partition: String,
}

impl Drop for IcloudProxy {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl IcloudProxy {
    /// Starts both listeners in front of `server` (a Radicale).
    pub async fn start(server: &DavServer) -> Result<IcloudProxy> {
        let main = TcpListener::bind("127.0.0.1:0").await?;
        let part = TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}/", main.local_addr()?);
        let partition = format!("http://{}/", part.local_addr()?);
        let shared = Arc::new(Shared {
            upstream: server.base.trim_end_matches('/').to_string(),
            user: server.username.clone(),
            main: base.clone(),
            partition: partition.clone(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(std::time::Duration::from_secs(60))
                .build()?,
            fail_next: AtomicU32::new(0),
            home_on_main: AtomicBool::new(false),
            omit_home_set: AtomicU32::new(0),
            refuse_query: AtomicU32::new(0),
            refuse_home: AtomicBool::new(false),
            principal_asks: AtomicU64::new(0),
            log: Mutex::new(Vec::new()),
        });
        let tasks = vec![
            tokio::spawn(serve(main, Host::Main, shared.clone())),
            tokio::spawn(serve(part, Host::Partition, shared.clone())),
        ];
        Ok(IcloudProxy {
            shared,
            tasks,
            base,
            partition,
        })
    }

    /// The iCloud-style calendar id of Radicale's calendar `href`
    /// (`/user/cal/` becomes `/<dsid>/calendars/cal/`).
    pub fn calendar_id(&self, radicale_href: &str) -> String {
        let prefix = format!("/{}/", self.shared.user);
        format!(
            "/{DSID}/calendars/{}",
            radicale_href.strip_prefix(&prefix).unwrap_or(radicale_href)
        )
    }

    /// The next `n` requests to the partition host answer 503 without
    /// `Retry-After`.
    pub fn fail_next(&self, n: u32) {
        self.shared.fail_next.store(n, Ordering::SeqCst);
    }

    /// How many injected 503s are still to be served.
    pub fn failures_left(&self) -> u32 {
        self.shared.fail_next.load(Ordering::SeqCst)
    }

    /// When set, discovery answers a `calendar-home-set` on the main host,
    /// so every calendar request is redirected across hosts to the
    /// partition host.
    pub fn home_on_main(&self, on: bool) {
        self.shared.home_on_main.store(on, Ordering::SeqCst);
    }

    /// The next `n` principal PROPFINDs answer without the
    /// `calendar-home-set` (as iCloud now and then does).
    pub fn omit_home_set(&self, n: u32) {
        self.shared.omit_home_set.store(n, Ordering::SeqCst);
    }

    /// When not 0, `C:calendar-query` REPORTs answer this status (a server
    /// that does not support them, or fails them over an object it cannot
    /// read).
    pub fn refuse_calendar_query(&self, status: u16) {
        self.shared
            .refuse_query
            .store(u32::from(status), Ordering::SeqCst);
    }

    /// When set, the calendar home refuses PROPFIND (403) although the
    /// principal answered.
    pub fn refuse_home(&self, on: bool) {
        self.shared.refuse_home.store(on, Ordering::SeqCst);
    }

    /// Every request seen so far, in order.
    pub fn requests(&self) -> Vec<ProxyRequest> {
        self.shared.log.lock().expect("proxy log").clone()
    }
}

async fn serve(listener: TcpListener, host: Host, shared: Arc<Shared>) {
    while let Ok((stream, _)) = listener.accept().await {
        let shared = shared.clone();
        tokio::spawn(async move {
            let _ = handle_conn(stream, host, &shared).await;
        });
    }
}

/// An answer.
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn new(status: u16) -> Resp {
        Resp {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    fn header(mut self, k: &str, v: &str) -> Resp {
        self.headers.push((k.to_string(), v.to_string()));
        self
    }

    fn body(mut self, b: impl Into<Vec<u8>>) -> Resp {
        self.body = b.into();
        self
    }
}

async fn handle_conn(mut stream: TcpStream, host: Host, shared: &Shared) -> Result<()> {
    let req = read_request(&mut stream).await?;
    let body_text = String::from_utf8_lossy(&req.body).to_string();
    let report = if req.method == "REPORT" {
        [
            "sync-collection",
            "calendar-multiget",
            "free-busy-query",
            "calendar-query",
        ]
        .iter()
        .find(|k| body_text.contains(*k))
        .map(|k| k.to_string())
        .unwrap_or_else(|| "other".into())
    } else {
        String::new()
    };
    let hrefs = body_text.matches("href>").count() / 2;
    let resp = match answer(&req, host, shared, &report).await {
        Ok(r) => r,
        Err(e) => Resp::new(502).body(format!("proxy error: {e}")),
    };
    shared.log.lock().expect("proxy log").push(ProxyRequest {
        host,
        method: req.method.clone(),
        path: req.path.clone(),
        basic_auth: req
            .header("authorization")
            .is_some_and(|a| a.starts_with("Basic ")),
        report,
        hrefs,
        status: resp.status,
    });
    let mut out = format!("HTTP/1.1 {} X\r\n", resp.status);
    for (k, v) in &resp.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        resp.body.len()
    ));
    stream.write_all(out.as_bytes()).await?;
    stream.write_all(&resp.body).await?;
    stream.flush().await?;
    let _ = stream.shutdown().await;
    Ok(())
}

/// iCloud's `Content-Type` cannot be trusted: XML answers come back as
/// `text/plain` or without one.
fn untrusted_xml(resp: Resp, n: u64) -> Resp {
    if n.is_multiple_of(2) {
        resp.header("Content-Type", "text/plain")
    } else {
        resp
    }
}

fn multistatus(inner: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<multistatus xmlns=\"DAV:\" \
         xmlns:C=\"urn:ietf:params:xml:ns:caldav\">{inner}</multistatus>"
    )
}

async fn answer(req: &Req, host: Host, shared: &Shared, report: &str) -> Result<Resp> {
    let seq = shared.principal_asks.fetch_add(1, Ordering::SeqCst);
    if host == Host::Partition
        && shared
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    {
        return Ok(Resp::new(503).body("Service Unavailable"));
    }
    let Some(auth) = req.header("authorization").map(str::to_string) else {
        // Not Basic: a client waiting for a Basic challenge never logs in.
        return Ok(Resp::new(401).header(
            "WWW-Authenticate",
            "X-MobileMe-AuthToken realm=\"Newcastle\"",
        ));
    };
    let principal = format!("/{DSID}/principal/");
    let home_prefix = format!("/{DSID}/calendars/");
    let path = req.path.as_str();
    if path == "/.well-known/caldav" || path == "/.well-known/caldav/" {
        return Ok(Resp::new(301).header("Location", "/"));
    }
    if path == "/" || path == principal || path == "/principal/" {
        if req.method != "PROPFIND" {
            return Ok(Resp::new(405));
        }
        // Check the credentials at Radicale.
        let check = shared
            .http
            .request(
                reqwest::Method::from_bytes(b"PROPFIND")?,
                format!("{}/{}/", shared.upstream, shared.user),
            )
            .header("Authorization", &auth)
            .header("Depth", "0")
            .send()
            .await?;
        if check.status().as_u16() == 401 {
            return Ok(Resp::new(401).header("WWW-Authenticate", "Basic realm=\"iCloud\""));
        }
        let body = String::from_utf8_lossy(&req.body).to_string();
        let inner = if path == "/" {
            format!(
                "<response><href>/</href><propstat><prop><current-user-principal>\
                 <href>{principal}</href></current-user-principal></prop>\
                 <status>HTTP/1.1 200 OK</status></propstat></response>"
            )
        } else if body.contains("calendar-home-set")
            && shared
                .omit_home_set
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_err()
        {
            let home_host = if shared.home_on_main.load(Ordering::SeqCst) {
                &shared.main
            } else {
                &shared.partition
            };
            // Every other time the principal answers as `/principal/`.
            let href = if seq.is_multiple_of(2) {
                "/principal/"
            } else {
                principal.as_str()
            };
            format!(
                "<response><href>{href}</href><propstat><prop><C:calendar-home-set>\
                 <href>{}{DSID}/calendars/</href></C:calendar-home-set></prop>\
                 <status>HTTP/1.1 200 OK</status></propstat></response>",
                home_host
            )
        } else {
            format!(
                "<response><href>{principal}</href><propstat><prop><resourcetype>\
                 <principal/></resourcetype></prop><status>HTTP/1.1 200 OK</status>\
                 </propstat></response>"
            )
        };
        return Ok(untrusted_xml(Resp::new(207).body(multistatus(&inner)), seq));
    }
    let Some(rest) = path.strip_prefix(&home_prefix) else {
        return Ok(Resp::new(404));
    };
    if host == Host::Main {
        // The main host sends calendar requests to the partition host.
        return Ok(Resp::new(301).header(
            "Location",
            &format!("{}{}", shared.partition, path.trim_start_matches('/')),
        ));
    }
    if report == "free-busy-query" {
        return Ok(Resp::new(400).body("Bad Request"));
    }
    if path == home_prefix && shared.refuse_home.load(Ordering::SeqCst) {
        return Ok(Resp::new(403).body("Forbidden"));
    }
    let refused = shared.refuse_query.load(Ordering::SeqCst);
    if report == "calendar-query" && refused != 0 {
        return Ok(Resp::new(refused as u16).body("calendar-query refused"));
    }
    let upstream_path = format!("/{}/{rest}", shared.user);
    let mut fwd = shared
        .http
        .request(
            reqwest::Method::from_bytes(req.method.as_bytes())?,
            format!("{}{upstream_path}", shared.upstream),
        )
        .header("Authorization", &auth);
    for h in ["depth", "content-type", "if-match", "if-none-match"] {
        if let Some(v) = req.header(h) {
            fwd = fwd.header(h, v);
        }
    }
    if req.method == "REPORT" {
        // Hrefs in the request (multiget) into Radicale's namespace.
        let body = String::from_utf8_lossy(&req.body)
            .replace(
                &format!(">{}{DSID}/calendars/", shared.partition),
                &format!(">/{}/", shared.user),
            )
            .replace(&format!(">{home_prefix}"), &format!(">/{}/", shared.user));
        fwd = fwd.body(body);
    } else if !req.body.is_empty() {
        fwd = fwd.body(req.body.clone());
    }
    let up = fwd.send().await?;
    let status = up.status().as_u16();
    let etag = up
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let content_type = up
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = up.bytes().await?.to_vec();
    let mut resp = Resp::new(status);
    if status == 401 {
        return Ok(resp.header("WWW-Authenticate", "Basic realm=\"iCloud\""));
    }
    match req.method.as_str() {
        // iCloud rewrites stored data and answers PUT without an ETag.
        "PUT" => return Ok(resp.body(body)),
        "GET" => {
            if let Some(e) = etag {
                resp = resp.header("ETag", &e);
            }
            let text = String::from_utf8_lossy(&body).to_string();
            return Ok(resp
                .header("Content-Type", "text/calendar; charset=utf-8")
                .body(apple_data(&text)));
        }
        _ => {}
    }
    if let Some(e) = etag {
        resp = resp.header("ETag", &e);
    }
    if status != 207 || !content_type.contains("xml") {
        if !content_type.is_empty() {
            resp = resp.header("Content-Type", &content_type);
        }
        return Ok(resp.body(body));
    }
    let mut text = String::from_utf8_lossy(&body).to_string();
    // Hrefs back into iCloud's namespace.
    text = text.replace(&format!(">/{}/", shared.user), &format!(">{home_prefix}"));
    if req.method == "REPORT" {
        text = apple_data(&text);
        // A response for the collection itself, as iCloud adds (also to
        // an empty answer, which Radicale writes as `<multistatus .../>`).
        if let Some((name, i)) = text.find("multistatus").and_then(|m| {
            let name = text[text[..m].rfind('<')? + 1..m + "multistatus".len()].to_string();
            Some((name, m + text[m..].find('>')? + 1))
        }) {
            let collection = format!(
                "<D:response xmlns:D=\"DAV:\"><D:href>{path}</D:href><D:propstat><D:prop>\
                 <D:getetag>\"collection-etag\"</D:getetag></D:prop>\
                 <D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>"
            );
            if text[..i].ends_with("/>") {
                let open = text[..i - 2].trim_end().to_string();
                text = format!("{open}>{collection}</{name}>{}", &text[i..]);
            } else {
                text.insert_str(i, &collection);
            }
        }
    }
    Ok(untrusted_xml(resp.body(text), seq))
}

/// Adds what iCloud adds to each stored VEVENT: Apple properties, some
/// with trailing whitespace, and a second `DTSTAMP`.
pub fn apple_data(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 256);
    let mut rest = text;
    while let Some(i) = rest.find("BEGIN:VEVENT") {
        let after = i + "BEGIN:VEVENT".len();
        let Some(nl) = rest[after..].find('\n') else {
            break;
        };
        let eol = &rest[after..after + nl + 1];
        out.push_str(&rest[..after]);
        out.push_str(eol);
        for line in [
            "X-APPLE-TRAVEL-ADVISORY-BEHAVIOR:AUTOMATIC   ",
            "X-APPLE-STRUCTURED-LOCATION;VALUE=URI;X-APPLE-RADIUS=70;X-TITLE=Office:geo:37.33,-122.03 ",
            "X-APPLE-CREATOR-IDENTITY:com.apple.calendar\t",
            "DTSTAMP:20250601T120000Z",
        ] {
            out.push_str(line);
            out.push_str(eol);
        }
        rest = &rest[after + nl + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apple_data_adds_lines_with_the_same_line_ending() {
        let s = apple_data("BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:a\r\nEND:VEVENT\r\n");
        assert!(s.contains("BEGIN:VEVENT\r\nX-APPLE-TRAVEL-ADVISORY-BEHAVIOR:AUTOMATIC   \r\n"));
        assert!(s.contains("DTSTAMP:20250601T120000Z\r\nUID:a\r\n"), "{s}");
    }
}
