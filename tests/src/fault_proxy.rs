//! A fault-injecting HTTP/1.1 proxy between an adapter and its provider
//! (Radicale, or the fake Google's API), for the fault-injection test and
//! the crash soak. Every request is forwarded to the upstream server and
//! logged with its arrival time, the fault it got and the status and
//! `Retry-After` it was answered with; from that log
//! [`retry_after_violations`] tells whether a request answered with
//! `Retry-After` came back earlier than it said.
//!
//! Faults (chosen per request by a seeded generator, at a set rate): 5xx,
//! 429 with `Retry-After`, timeouts (the connection held past the client's
//! timeout, then closed), connection resets, truncated bodies (a
//! `Content-Length` larger than what is sent, then close) and slow bodies.
//! Some faults are injected after the request reached the provider (the
//! provider did the work, its answer is lost or mangled), the worst case
//! for idempotency.
//!
//! A *tripwire* lets the crash soak kill a process inside a window: the
//! proxy stops just after the provider answered a request of the armed
//! kind (a write, a sync read, a channel stop during revocation), hands
//! the soak a release, and only passes the answer on once released (after
//! the kill). One request per connection, like the other proxies of the
//! tests ([`crate::http1`]).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use rand::{Rng, SeedableRng};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use crate::http1::{read_request, Req};

/// A kind of injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    /// A 5xx answer (500 or 503 before the provider saw the request, 502
    /// or 504 after).
    ServerError,
    /// 429 with `Retry-After` (never forwarded).
    TooManyRequests,
    /// The connection is held open without an answer past the client's
    /// timeout, then closed.
    Timeout,
    /// The connection is reset (RST) without an answer.
    Reset,
    /// The provider's answer with a `Content-Length` larger than the body
    /// sent, then the connection closed.
    Truncated,
    /// The provider's answer, its body sent in slow pieces (within the
    /// client's timeout).
    SlowBody,
}

impl FaultKind {
    /// Every kind.
    pub const ALL: [FaultKind; 6] = [
        FaultKind::ServerError,
        FaultKind::TooManyRequests,
        FaultKind::Timeout,
        FaultKind::Reset,
        FaultKind::Truncated,
        FaultKind::SlowBody,
    ];
}

/// What the proxy injects while faults are on.
#[derive(Debug, Clone)]
pub struct FaultPlan {
    /// The share of requests that get a fault, 0.0..=1.0.
    pub rate: f64,
    /// The kinds to choose from (evenly).
    pub kinds: Vec<FaultKind>,
    /// `Retry-After` of injected 429s, seconds.
    pub retry_after_seconds: u64,
    /// How long a timeout holds the connection (longer than the client's
    /// HTTP timeout).
    pub hold: Duration,
    /// The pause between the pieces of a slow body (five pieces).
    pub slow_piece_delay: Duration,
}

/// Which requests a tripwire stops at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Window {
    /// A write of an event (CalDAV PUT/DELETE; Google insert, update,
    /// patch, delete of an event).
    Write,
    /// A read of a sync (CalDAV REPORT; Google events.list).
    SyncRead,
    /// A push channel stopped (Google channels.stop), as revocation does.
    Revoke,
}

impl Window {
    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Window::Write => "write",
            Window::SyncRead => "sync read",
            Window::Revoke => "revocation",
        }
    }
}

/// The window a request belongs to, if any.
pub fn window_of(method: &str, path: &str) -> Option<Window> {
    let path = path.split('?').next().unwrap_or_default();
    if path.ends_with("/channels/stop") {
        return Some(Window::Revoke);
    }
    if path.contains("/calendar/v3/") {
        let events = path.contains("/events");
        return match method {
            "GET" if path.ends_with("/events") => Some(Window::SyncRead),
            "POST" if events && !path.ends_with("/watch") => Some(Window::Write),
            "PUT" | "PATCH" | "DELETE" if events => Some(Window::Write),
            _ => None,
        };
    }
    match method {
        "PUT" | "DELETE" => Some(Window::Write),
        "REPORT" => Some(Window::SyncRead),
        _ => None,
    }
}

/// One request as the proxy saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    /// When it arrived, since the proxy started.
    pub at: Duration,
    /// The method.
    pub method: String,
    /// The target (path and query).
    pub target: String,
    /// A digest of the body (requests with the same method, target and
    /// digest are "the same request" retried).
    pub body_digest: String,
    /// The fault injected, if any.
    pub fault: Option<FaultKind>,
    /// Whether the provider received the request.
    pub forwarded: bool,
    /// The status answered (none for a timeout or reset).
    pub status: Option<u16>,
    /// The `Retry-After` answered, seconds.
    pub retry_after: Option<u64>,
    /// When the answer's head was written, since the proxy started.
    pub answered_at: Option<Duration>,
}

struct Armed {
    window: Window,
    skip: u32,
    /// Stop before the request reaches the provider (else after it
    /// answered).
    before: bool,
    hit: oneshot::Sender<oneshot::Sender<()>>,
}

struct Shared {
    upstream: String,
    http: reqwest::Client,
    started: Instant,
    plan: Mutex<Option<FaultPlan>>,
    rng: Mutex<rand::rngs::StdRng>,
    armed: Mutex<Option<Armed>>,
    log: Mutex<Vec<Logged>>,
    /// Requests read and not answered yet.
    in_flight: std::sync::atomic::AtomicUsize,
}

/// The running proxy; its listener stops when it is dropped.
pub struct FaultProxy {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub base: String,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (`http://HOST:PORT`, a trailing slash
    /// ignored) with faults off; `seed` seeds its fault choices.
    pub async fn start(upstream: &str, seed: u64) -> Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(120))
                .no_proxy()
                .build()?,
            started: Instant::now(),
            plan: Mutex::new(None),
            rng: Mutex::new(rand::rngs::StdRng::seed_from_u64(seed)),
            armed: Mutex::new(None),
            log: Mutex::new(Vec::new()),
            in_flight: std::sync::atomic::AtomicUsize::new(0),
        });
        let task = tokio::spawn(serve(listener, shared.clone()));
        Ok(FaultProxy { shared, task, base })
    }

    /// Turns faults on with `plan`, or off with `None`.
    pub fn set_faults(&self, plan: Option<FaultPlan>) {
        *self.shared.plan.lock().expect("plan lock") = plan;
    }

    /// Arms the tripwire: the `skip + 1`-th request of `window` from now
    /// is stopped just after the provider answered it, and the receiver
    /// gets a release; the answer is passed on once the release is sent
    /// or dropped. Replaces an armed tripwire.
    pub fn arm(&self, window: Window, skip: u32) -> oneshot::Receiver<oneshot::Sender<()>> {
        self.arm_at(window, skip, false)
    }

    /// Like [`FaultProxy::arm`], but the request is stopped before it
    /// reaches the provider, and forwarded once released (a request that
    /// arrives late, after its sender died: a ghost).
    pub fn arm_before(&self, window: Window, skip: u32) -> oneshot::Receiver<oneshot::Sender<()>> {
        self.arm_at(window, skip, true)
    }

    fn arm_at(
        &self,
        window: Window,
        skip: u32,
        before: bool,
    ) -> oneshot::Receiver<oneshot::Sender<()>> {
        let (hit, rx) = oneshot::channel();
        *self.shared.armed.lock().expect("armed lock") = Some(Armed {
            window,
            skip,
            before,
            hit,
        });
        rx
    }

    /// Disarms the tripwire.
    pub fn disarm(&self) {
        *self.shared.armed.lock().expect("armed lock") = None;
    }

    /// Every request seen so far, in arrival order.
    pub fn log(&self) -> Vec<Logged> {
        self.shared.log.lock().expect("proxy log").clone()
    }

    /// Waits (up to `timeout`) until no request is on its way through the
    /// proxy: the requests of a killed client have reached the provider
    /// (or given up) before the client is started again.
    pub async fn drained(&self, timeout: Duration) -> Result<()> {
        crate::eventually(timeout, "the proxy's requests answered", || async {
            (self
                .shared
                .in_flight
                .load(std::sync::atomic::Ordering::SeqCst)
                == 0)
                .then_some(())
        })
        .await
    }

    /// Forgets the log (a long soak keeps it small).
    pub fn clear_log(&self) {
        self.shared.log.lock().expect("proxy log").clear();
    }
}

/// Whether `later` repeats request `first`: the same method and target,
/// and for methods other than PUT, PATCH and DELETE the same body (their
/// bodies carry fresh timestamps, or nothing; their target names them).
pub fn same_request(first: &Logged, later: &Logged) -> bool {
    first.method == later.method
        && first.target == later.target
        && (matches!(first.method.as_str(), "PUT" | "PATCH" | "DELETE")
            || first.body_digest == later.body_digest)
}

/// The answers carrying `Retry-After` whose request (see [`same_request`])
/// was sent again after the answer, each with the first such repetition
/// (by arrival; the log is in the order answers completed). Methods in
/// `shared` are left out: requests of those methods are sent identically
/// by many independent operations (a CalDAV zone lookup, a read-back), so
/// a repetition need not be a retry.
fn repeated_after_retry_after<'a>(
    log: &'a [Logged],
    shared: &[&str],
) -> Vec<(&'a Logged, u64, &'a Logged)> {
    let mut by_arrival: Vec<&Logged> = log.iter().collect();
    by_arrival.sort_by_key(|l| l.at);
    let mut out = Vec::new();
    for first in &by_arrival {
        let (Some(secs), Some(answered)) = (first.retry_after, first.answered_at) else {
            continue;
        };
        if shared.contains(&first.method.as_str()) {
            continue;
        }
        // Sent before the answer was out: not a retry of it.
        if let Some(later) = by_arrival
            .iter()
            .find(|l| l.at >= answered && same_request(first, l))
        {
            out.push((*first, secs, *later));
        }
    }
    out
}

/// Requests that came back before the `Retry-After` their earlier answer
/// gave (see [`repeated_after_retry_after`] for `shared`), described.
pub fn retry_after_violations(log: &[Logged], shared: &[&str]) -> Vec<String> {
    repeated_after_retry_after(log, shared)
        .into_iter()
        .filter_map(|(first, secs, later)| {
            let answered = first.answered_at?;
            // `later` arrived after `answered`; the allowance covers the
            // two clock readings.
            let not_before = answered + Duration::from_secs(secs);
            (later.at + Duration::from_millis(10) < not_before).then(|| {
                format!(
                    "{} {} answered {:?} with Retry-After: {secs} at {answered:?} came back at {:?}",
                    first.method, first.target, first.status, later.at
                )
            })
        })
        .collect()
}

/// How many requests answered with `Retry-After` were sent again (proof
/// that [`retry_after_violations`] had something to check).
pub fn retried_after_retry_after(log: &[Logged], shared: &[&str]) -> usize {
    repeated_after_retry_after(log, shared).len()
}

/// How many requests of any kind reached the server while an earlier
/// answer's `Retry-After` ran (a figure: RFC 6585 asks a client to wait
/// before "making a new request").
pub fn requests_inside_retry_after(log: &[Logged]) -> usize {
    log.iter()
        .filter(|l| {
            log.iter().any(|f| match (f.retry_after, f.answered_at) {
                (Some(secs), Some(at)) => l.at > at && l.at < at + Duration::from_secs(secs),
                _ => false,
            })
        })
        .count()
}

async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    while let Ok((stream, _)) = listener.accept().await {
        let shared = shared.clone();
        tokio::spawn(async move {
            let _ = handle(stream, &shared).await;
        });
    }
}

/// The provider's answer.
struct Upstream {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// Headers never copied across the proxy (hop-by-hop, or recomputed).
const SKIPPED: [&str; 6] = [
    "host",
    "connection",
    "content-length",
    "transfer-encoding",
    "keep-alive",
    "accept-encoding",
];

async fn forward(shared: &Shared, req: &Req) -> Result<Upstream> {
    let mut fwd = shared.http.request(
        reqwest::Method::from_bytes(req.method.as_bytes())?,
        format!("{}{}", shared.upstream, req.path),
    );
    for (k, v) in &req.headers {
        if !SKIPPED.iter().any(|s| k.eq_ignore_ascii_case(s)) {
            fwd = fwd.header(k.as_str(), v.as_str());
        }
    }
    if !req.body.is_empty() {
        fwd = fwd.body(req.body.clone());
    }
    let up = fwd.send().await?;
    let status = up.status().as_u16();
    let headers = up
        .headers()
        .iter()
        .filter(|(k, _)| !SKIPPED.iter().any(|s| k.as_str().eq_ignore_ascii_case(s)))
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let body = up.bytes().await?.to_vec();
    Ok(Upstream {
        status,
        headers,
        body,
    })
}

/// What to do with one request: the fault, and whether the provider gets
/// the request first.
fn decide(shared: &Shared) -> (Option<FaultKind>, bool, Option<FaultPlan>) {
    let plan = shared.plan.lock().expect("plan lock").clone();
    let Some(p) = plan.as_ref().filter(|p| !p.kinds.is_empty()) else {
        return (None, true, plan);
    };
    let mut rng = shared.rng.lock().expect("rng lock");
    if !rng.gen_bool(p.rate.clamp(0.0, 1.0)) {
        return (None, true, plan);
    }
    let kind = p.kinds[rng.gen_range(0..p.kinds.len())];
    let forward_first = match kind {
        FaultKind::TooManyRequests => false,
        FaultKind::Truncated | FaultKind::SlowBody => true,
        FaultKind::ServerError | FaultKind::Timeout | FaultKind::Reset => rng.gen_bool(0.5),
    };
    (Some(kind), forward_first, plan)
}

/// Stops at an armed tripwire matching `req`: hands the soak a release
/// and waits for it (or for the soak to give up on it).
async fn tripwire(shared: &Shared, req: &Req, before: bool) {
    let Some(window) = window_of(&req.method, &req.path) else {
        return;
    };
    let hit = {
        let mut armed = shared.armed.lock().expect("armed lock");
        match armed.as_mut() {
            Some(a) if a.window == window && a.before == before && a.skip > 0 => {
                a.skip -= 1;
                None
            }
            Some(a) if a.window == window && a.before == before => armed.take().map(|a| a.hit),
            _ => None,
        }
    };
    if let Some(hit) = hit {
        let (release, released) = oneshot::channel();
        if hit.send(release).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(30), released).await;
        }
    }
}

fn digest(body: &[u8]) -> String {
    use sha2::Digest;
    hex_prefix(&sha2::Sha256::digest(body))
}

fn hex_prefix(bytes: &[u8]) -> String {
    bytes[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Counts a request in flight while it lives.
struct InFlight<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> InFlight<'a> {
    fn new(n: &'a std::sync::atomic::AtomicUsize) -> Self {
        n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        InFlight(n)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

async fn handle(mut stream: TcpStream, shared: &Shared) -> Result<()> {
    let req = read_request(&mut stream).await?;
    let _in_flight = InFlight::new(&shared.in_flight);
    let at = shared.started.elapsed();
    let (fault, forward_first, plan) = decide(shared);
    let mut entry = Logged {
        at,
        method: req.method.clone(),
        target: req.path.clone(),
        body_digest: digest(&req.body),
        fault,
        forwarded: forward_first,
        status: None,
        retry_after: None,
        answered_at: None,
    };
    let upstream = if forward_first {
        tripwire(shared, &req, true).await;
        match forward(shared, &req).await {
            Ok(u) => Some(u),
            Err(e) => {
                let body = format!("proxy: upstream failed: {e}").into_bytes();
                Some(Upstream {
                    status: 502,
                    headers: Vec::new(),
                    body,
                })
            }
        }
    } else {
        None
    };
    if upstream.is_some() {
        tripwire(shared, &req, false).await;
    }
    let result = answer(&mut stream, shared, &mut entry, upstream, plan.as_ref()).await;
    shared.log.lock().expect("proxy log").push(entry);
    result
}

fn head(status: u16, headers: &[(String, String)], content_length: usize) -> String {
    let mut out = format!("HTTP/1.1 {status} X\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!(
        "Content-Length: {content_length}\r\nConnection: close\r\n\r\n"
    ));
    out
}

async fn answer(
    stream: &mut TcpStream,
    shared: &Shared,
    entry: &mut Logged,
    upstream: Option<Upstream>,
    plan: Option<&FaultPlan>,
) -> Result<()> {
    let now = || Some(shared.started.elapsed());
    let slow = plan.map(|p| p.slow_piece_delay).unwrap_or_default();
    match (entry.fault, upstream) {
        (Some(FaultKind::Timeout), _) => {
            let hold = plan.map(|p| p.hold).unwrap_or(Duration::from_secs(5));
            tokio::time::sleep(hold).await;
            return Ok(());
        }
        (Some(FaultKind::Reset), _) => {
            stream.set_zero_linger()?;
            return Ok(());
        }
        (Some(FaultKind::TooManyRequests), _) => {
            let secs = plan.map(|p| p.retry_after_seconds).unwrap_or(1);
            let headers = vec![("Retry-After".to_string(), secs.to_string())];
            let body = b"Too Many Requests";
            entry.status = Some(429);
            entry.retry_after = Some(secs);
            entry.answered_at = now();
            stream
                .write_all(head(429, &headers, body.len()).as_bytes())
                .await?;
            stream.write_all(body).await?;
        }
        (Some(FaultKind::ServerError), up) => {
            let status = match (up.is_some(), entry.at.as_millis() % 2) {
                (true, 0) => 502,
                (true, _) => 504,
                (false, 0) => 500,
                (false, _) => 503,
            };
            let body = b"injected server error";
            entry.status = Some(status);
            entry.answered_at = now();
            stream
                .write_all(head(status, &[], body.len()).as_bytes())
                .await?;
            stream.write_all(body).await?;
        }
        (Some(FaultKind::Truncated), Some(up)) => {
            entry.status = Some(up.status);
            entry.answered_at = now();
            let sent = up.body.len() / 2;
            stream
                .write_all(head(up.status, &up.headers, up.body.len() + 64).as_bytes())
                .await?;
            stream.write_all(&up.body[..sent]).await?;
        }
        (Some(FaultKind::SlowBody), Some(up)) => {
            entry.status = Some(up.status);
            entry.answered_at = now();
            stream
                .write_all(head(up.status, &up.headers, up.body.len()).as_bytes())
                .await?;
            let piece = up.body.len().div_ceil(5).max(1);
            for chunk in up.body.chunks(piece) {
                stream.flush().await?;
                tokio::time::sleep(slow).await;
                stream.write_all(chunk).await?;
            }
        }
        (_, Some(up)) => {
            entry.status = Some(up.status);
            entry.retry_after = retry_after_of(&up.headers);
            entry.answered_at = now();
            stream
                .write_all(head(up.status, &up.headers, up.body.len()).as_bytes())
                .await?;
            stream.write_all(&up.body).await?;
        }
        (_, None) => {
            // Not reached: a request without a fault, or with a fault that
            // needs the provider's answer, is always forwarded first.
            entry.status = Some(502);
            entry.answered_at = now();
            stream.write_all(head(502, &[], 0).as_bytes()).await?;
        }
    }
    stream.flush().await?;
    let _ = stream.shutdown().await;
    Ok(())
}

fn retry_after_of(headers: &[(String, String)]) -> Option<u64> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("retry-after"))
        .and_then(|(_, v)| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logged(at_ms: u64, method: &str, target: &str, retry_after: Option<u64>) -> Logged {
        Logged {
            at: Duration::from_millis(at_ms),
            method: method.into(),
            target: target.into(),
            body_digest: "b".into(),
            fault: retry_after.map(|_| FaultKind::TooManyRequests),
            forwarded: retry_after.is_none(),
            status: Some(if retry_after.is_some() { 429 } else { 200 }),
            retry_after,
            answered_at: Some(Duration::from_millis(at_ms + 5)),
        }
    }

    #[test]
    fn a_retry_before_the_retry_after_is_found_and_one_after_it_is_not() {
        let early = [
            logged(0, "REPORT", "/u/cal/", Some(1)),
            logged(400, "PUT", "/u/cal/x.ics", None),
            logged(600, "REPORT", "/u/cal/", None),
        ];
        assert_eq!(retry_after_violations(&early, &[]).len(), 1);
        let late = [
            logged(0, "REPORT", "/u/cal/", Some(1)),
            logged(1010, "REPORT", "/u/cal/", None),
        ];
        assert!(retry_after_violations(&late, &[]).is_empty());
        assert_eq!(retried_after_retry_after(&late, &[]), 1);
        assert_eq!(requests_inside_retry_after(&early), 2);
        // Shared reads are left out of the retry check.
        let shared = [
            logged(0, "PROPFIND", "/u/cal/", Some(1)),
            logged(50, "PROPFIND", "/u/cal/", None),
        ];
        assert!(retry_after_violations(&shared, &["PROPFIND"]).is_empty());
        assert_eq!(retry_after_violations(&shared, &[]).len(), 1);
        // The log is in the order answers completed: a request sent before
        // the 429 (held by a timeout, answered after it) is no retry of it.
        let held = [
            logged(500, "DELETE", "/u/cal/x.ics", Some(1)),
            logged(100, "DELETE", "/u/cal/x.ics", None),
        ];
        assert!(retry_after_violations(&held, &[]).is_empty());
    }

    #[test]
    fn requests_fall_in_the_windows_a_soak_kills_in() {
        assert_eq!(window_of("PUT", "/u/cal/a.ics"), Some(Window::Write));
        assert_eq!(window_of("DELETE", "/u/cal/a.ics"), Some(Window::Write));
        assert_eq!(window_of("REPORT", "/u/cal/"), Some(Window::SyncRead));
        assert_eq!(window_of("PROPFIND", "/u/cal/"), None);
        let g = "/calendar/v3/calendars/a%40b/events";
        assert_eq!(
            window_of("GET", &format!("{g}?syncToken=x")),
            Some(Window::SyncRead)
        );
        assert_eq!(window_of("POST", g), Some(Window::Write));
        assert_eq!(window_of("PATCH", &format!("{g}/e1")), Some(Window::Write));
        assert_eq!(window_of("GET", &format!("{g}/e1")), None);
        assert_eq!(window_of("POST", &format!("{g}/watch")), None);
        assert_eq!(
            window_of("POST", "/calendar/v3/channels/stop"),
            Some(Window::Revoke)
        );
    }
}
