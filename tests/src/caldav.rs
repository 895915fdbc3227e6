//! CalDAV pieces of the end-to-end harness: real CalDAV servers (Radicale
//! with htpasswd plain auth, Xandikos without auth) started from the test
//! venv as child processes on a free loopback port with temporary storage,
//! a plain-HTTP "other client" that edits them behind calbridge's back, and
//! a calbridge stack made of the CalDAV adapter and the scheduler.
//!
//! The venv is found through `CALBRIDGE_TEST_PYTHON` (the venv's python;
//! `scripts/test-env` builds it in `target/test-env`). Every wait polls a
//! condition (an HTTP answer, a sync status), never a blind sleep.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use calbridge::pb;
use chrono::{DateTime, NaiveDate, Utc};

use crate::{channel, eventually, free_port, AdminClient, Bearer, Proc, SchedulerClient};

/// Kept here too for the CalDAV tests that name it so.
pub use crate::list_events;

/// Which CalDAV server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    /// Radicale 3 with htpasswd (plain) authentication.
    Radicale,
    /// Xandikos without authentication.
    Xandikos,
}

/// The `bin/` directory of the test venv, from `CALBRIDGE_TEST_PYTHON`.
pub fn venv_bin() -> Result<PathBuf> {
    let python = std::env::var("CALBRIDGE_TEST_PYTHON").map_err(|_| {
        anyhow!(
            "CALBRIDGE_TEST_PYTHON is not set: the CalDAV end-to-end tests need Radicale and \
             Xandikos from the test venv; run scripts/test-env and set \
             CALBRIDGE_TEST_PYTHON=target/test-env/bin/python"
        )
    })?;
    let python = PathBuf::from(python);
    let python = if python.is_relative() {
        // Relative to the workspace root, where scripts run from.
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(python)
    } else {
        python
    };
    Ok(python
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent directory", python.display()))?
        .to_path_buf())
}

/// One request as a server logged it.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedRequest {
    /// The HTTP method.
    pub method: String,
    /// The request path.
    pub path: String,
    /// The Depth header, when one was sent.
    pub depth: Option<String>,
    /// How long the server took to answer, once the answer is logged.
    pub seconds: Option<f64>,
}

/// A running CalDAV server; killed (and its storage deleted) when dropped.
pub struct DavServer {
    child: Child,
    dir: tempfile::TempDir,
    log_path: PathBuf,
    http: reqwest::Client,
    /// Which server.
    pub kind: ServerKind,
    /// `http://127.0.0.1:PORT/`: what a user types as the server URL.
    pub base: String,
    /// The href of the calendar the tests use (`/user/cal/` on Radicale,
    /// `/user/calendars/calendar/` on Xandikos).
    pub calendar: String,
    /// The user name.
    pub username: String,
    /// The password (Xandikos ignores it).
    pub password: String,
}

impl Drop for DavServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl DavServer {
    /// Starts a server of `kind` on a free port with empty temporary storage
    /// and one empty calendar, and waits until it answers HTTP. Its log
    /// (Radicale at info level: one line per request) goes to a file, see
    /// [`DavServer::log`] and [`DavServer::request_counts`].
    pub async fn start(kind: ServerKind) -> Result<DavServer> {
        let bin = venv_bin()?;
        let dir = tempfile::tempdir()?;
        let port = free_port();
        let log_path = dir.path().join("server.log");
        let log = std::fs::File::create(&log_path)?;
        let (username, password) = ("user".to_string(), "pw-Caldav-1".to_string());
        let mut cmd = match kind {
            ServerKind::Radicale => {
                let htpasswd = dir.path().join("htpasswd");
                std::fs::write(&htpasswd, format!("{username}:{password}\n"))?;
                let mut c = Command::new(bin.join("radicale"));
                c.arg("--config")
                    .arg("")
                    .arg("--server-hosts")
                    .arg(format!("127.0.0.1:{port}"))
                    .arg("--storage-filesystem-folder")
                    .arg(dir.path().join("collections"))
                    .arg("--auth-type")
                    .arg("htpasswd")
                    .arg("--auth-htpasswd-filename")
                    .arg(&htpasswd)
                    .arg("--auth-htpasswd-encryption")
                    .arg("plain")
                    .arg("--logging-level")
                    .arg("info");
                c
            }
            ServerKind::Xandikos => {
                let mut c = Command::new(bin.join("xandikos"));
                c.arg("serve")
                    .arg("-d")
                    .arg(dir.path().join("data"))
                    .arg("--defaults")
                    .arg("-l")
                    .arg("127.0.0.1")
                    .arg("-p")
                    .arg(port.to_string())
                    .arg("--current-user-principal")
                    .arg(format!("/{username}/"));
                c
            }
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {kind:?} from {}", bin.display()))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?;
        let mut server = DavServer {
            child,
            dir,
            log_path,
            http,
            kind,
            base: format!("http://127.0.0.1:{port}/"),
            calendar: match kind {
                ServerKind::Radicale => format!("/{username}/cal/"),
                ServerKind::Xandikos => format!("/{username}/calendars/calendar/"),
            },
            username,
            password,
        };
        server.wait_ready().await?;
        if kind == ServerKind::Radicale {
            // Radicale has no default calendar: make one as the user would.
            let body = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\
                <C:mkcalendar xmlns:D=\"DAV:\" xmlns:C=\"urn:ietf:params:xml:ns:caldav\">\
                <D:set><D:prop><D:displayname>Work</D:displayname></D:prop></D:set>\
                </C:mkcalendar>";
            let href = server.calendar.clone();
            let status = server
                .request(
                    "MKCALENDAR",
                    &href,
                    Some(("application/xml", body.into())),
                    &[],
                )
                .await?
                .status();
            if !status.is_success() {
                bail!("MKCALENDAR {href}: {status}");
            }
        }
        Ok(server)
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{:?} exited with {status} before answering; its log:\n{}",
                    self.kind,
                    self.log()
                );
            }
            let probe = self
                .http
                .get(&self.base)
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if probe.is_ok() {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "{:?} did not answer HTTP within 30 s; its log:\n{}",
                    self.kind,
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The server's temporary directory (storage, htpasswd, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Requests the server received so far, in order, read from its log,
    /// each with the time the server took to answer it when that is logged
    /// yet. Radicale only (at info level it logs `METHOD request for '...'
    /// [with depth 'N'] received` and `METHOD response status for '...' in
    /// S seconds`, both tagged with the handling thread); empty for
    /// Xandikos.
    pub fn logged_requests(&self) -> Vec<LoggedRequest> {
        let mut out: Vec<LoggedRequest> = Vec::new();
        let mut open: BTreeMap<String, usize> = BTreeMap::new();
        for line in self.log().lines() {
            // "[time] [pid/Thread-7 (process_request_thread)] [INFO] PROPFIND request for
            // '/user/cal/' with depth '1' received from ..."
            let thread = line.split("] [").nth(1).unwrap_or_default().to_string();
            if let Some((head, rest)) = line.split_once(" request for '") {
                let method = head.rsplit(' ').next().unwrap_or_default();
                if method.is_empty() || !method.chars().all(|c| c.is_ascii_uppercase()) {
                    continue;
                }
                let Some((path, rest)) = rest.split_once('\'') else {
                    continue;
                };
                let depth = rest
                    .strip_prefix(" with depth '")
                    .and_then(|d| d.split_once('\''))
                    .map(|(d, _)| d.to_string());
                open.insert(thread, out.len());
                out.push(LoggedRequest {
                    method: method.to_string(),
                    path: path.to_string(),
                    depth,
                    seconds: None,
                });
            } else if let Some((_, rest)) = line.split_once(" response status for '") {
                let secs = rest
                    .rsplit_once(" in ")
                    .and_then(|(_, r)| r.split_once(" seconds"))
                    .and_then(|(n, _)| n.trim().parse::<f64>().ok());
                if let Some(i) = open.remove(&thread) {
                    out[i].seconds = secs;
                }
            }
        }
        out
    }

    /// Requests the server received so far, by HTTP method (see
    /// [`DavServer::logged_requests`]).
    pub fn request_counts(&self) -> BTreeMap<String, u64> {
        let mut counts = BTreeMap::new();
        for r in self.logged_requests() {
            *counts.entry(r.method).or_default() += 1;
        }
        counts
    }

    /// The absolute URL of `href` (a path such as `/user/cal/a.ics`).
    pub fn url(&self, href: &str) -> Result<reqwest::Url> {
        Ok(reqwest::Url::parse(&self.base)?.join(href)?)
    }

    /// The href of resource `name` in the test calendar.
    pub fn href(&self, name: &str) -> String {
        format!("{}{name}", self.calendar)
    }

    /// One request "as another client" (basic auth with the user's
    /// password); `body` is (content type, body). Times out after 60 s.
    pub async fn request(
        &self,
        method: &str,
        href: &str,
        body: Option<(&str, String)>,
        headers: &[(&str, &str)],
    ) -> Result<reqwest::Response> {
        Ok(self.builder(method, href, body, headers)?.send().await?)
    }

    fn builder(
        &self,
        method: &str,
        href: &str,
        body: Option<(&str, String)>,
        headers: &[(&str, &str)],
    ) -> Result<reqwest::RequestBuilder> {
        let mut req = self
            .http
            .request(
                reqwest::Method::from_bytes(method.as_bytes())?,
                self.url(href)?,
            )
            .basic_auth(&self.username, Some(&self.password));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some((content_type, b)) = body {
            req = req
                .header("Content-Type", format!("{content_type}; charset=utf-8"))
                .body(b);
        }
        Ok(req)
    }

    /// PUTs `ics` as resource `name` of the test calendar (creating or
    /// overwriting it unconditionally, as a careless client would); returns
    /// the ETag the server answered, if any.
    pub async fn put(&self, name: &str, ics: &str) -> Result<Option<String>> {
        let href = self.href(name);
        let resp = self
            .request("PUT", &href, Some(("text/calendar", ics.to_string())), &[])
            .await?;
        let status = resp.status();
        let etag = resp
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if !status.is_success() {
            bail!(
                "PUT {href}: {status}: {}",
                resp.text().await.unwrap_or_default()
            );
        }
        Ok(etag)
    }

    /// PUTs a whole VCALENDAR (many events, one UID each) to the calendar
    /// collection URL, which Radicale splits into one resource per UID.
    pub async fn put_collection(&self, ics: &str) -> Result<()> {
        let href = self.calendar.clone();
        let resp = self
            .builder("PUT", &href, Some(("text/calendar", ics.to_string())), &[])?
            // Thousands of events take Radicale a while.
            .timeout(Duration::from_secs(900))
            .send()
            .await?;
        let status = resp.status();
        if !status.is_success() {
            bail!(
                "PUT {href}: {status}: {}",
                resp.text().await.unwrap_or_default()
            );
        }
        Ok(())
    }

    /// DELETEs resource `name` of the test calendar.
    pub async fn delete(&self, name: &str) -> Result<()> {
        let href = self.href(name);
        let status = self.request("DELETE", &href, None, &[]).await?.status();
        if !status.is_success() {
            bail!("DELETE {href}: {status}");
        }
        Ok(())
    }

    /// GETs `href`: the status and the body with content lines unfolded.
    pub async fn get(&self, href: &str) -> Result<(u16, String)> {
        let resp = self.request("GET", href, None, &[]).await?;
        let status = resp.status().as_u16();
        let body = resp.text().await?;
        Ok((status, unfold(&body)))
    }

    /// The resources of the test calendar as (href, etag), by a PROPFIND
    /// with depth 1 (the collection itself left out), sorted by href.
    pub async fn members(&self) -> Result<Vec<(String, String)>> {
        let body = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\
            <D:propfind xmlns:D=\"DAV:\"><D:prop><D:getetag/><D:resourcetype/></D:prop></D:propfind>";
        let href = self.calendar.clone();
        let resp = self
            .request(
                "PROPFIND",
                &href,
                Some(("application/xml", body.into())),
                &[("Depth", "1")],
            )
            .await?;
        let status = resp.status();
        let text = resp.text().await?;
        if status.as_u16() != 207 {
            bail!("PROPFIND {href}: {status}: {text}");
        }
        let doc = roxmltree::Document::parse(&text)?;
        let mut out = Vec::new();
        for r in doc
            .descendants()
            .filter(|n| n.has_tag_name(("DAV:", "response")))
        {
            let Some(h) = r
                .children()
                .find(|n| n.has_tag_name(("DAV:", "href")))
                .and_then(|n| n.text())
            else {
                continue;
            };
            let is_collection = r
                .descendants()
                .any(|n| n.has_tag_name(("DAV:", "collection")));
            if is_collection || h.trim_end_matches('/') == href.trim_end_matches('/') {
                continue;
            }
            let etag = r
                .descendants()
                .find(|n| n.has_tag_name(("DAV:", "getetag")))
                .and_then(|n| n.text())
                .unwrap_or_default();
            // Hrefs may come back as absolute URLs: keep the path.
            let path = reqwest::Url::parse(h)
                .map(|u| u.path().to_string())
                .unwrap_or_else(|_| h.to_string());
            out.push((path, etag.to_string()));
        }
        out.sort();
        Ok(out)
    }
}

/// Unfolds iCalendar content lines (RFC 5545 section 3.1).
pub fn unfold(ics: &str) -> String {
    ics.replace("\r\n ", "")
        .replace("\r\n\t", "")
        .replace("\n ", "")
        .replace("\n\t", "")
}

/// `YYYYMMDDTHHMMSSZ`, the iCalendar UTC form.
pub fn ical_utc(t: DateTime<Utc>) -> String {
    t.format("%Y%m%dT%H%M%SZ").to_string()
}

/// `YYYYMMDD`, the iCalendar DATE form.
pub fn ical_date(d: NaiveDate) -> String {
    d.format("%Y%m%d").to_string()
}

/// One VCALENDAR holding the given VEVENTs, each given as its content lines
/// (without BEGIN/END:VEVENT; a `DTSTAMP` is added when missing).
pub fn vcalendar(events: &[Vec<String>]) -> String {
    let mut lines = vec![
        "BEGIN:VCALENDAR".to_string(),
        "VERSION:2.0".into(),
        "PRODID:-//calbridge e2e//other client//EN".into(),
    ];
    for e in events {
        lines.push("BEGIN:VEVENT".into());
        if !e.iter().any(|l| l.starts_with("DTSTAMP")) {
            lines.push("DTSTAMP:20260101T000000Z".into());
        }
        lines.extend(e.iter().cloned());
        lines.push("END:VEVENT".into());
    }
    lines.push("END:VCALENDAR".into());
    lines.join("\r\n") + "\r\n"
}

/// The content lines of a timed UTC event.
pub fn timed_lines(uid: &str, summary: &str, start: DateTime<Utc>, minutes: i64) -> Vec<String> {
    vec![
        format!("UID:{uid}"),
        format!("SUMMARY:{summary}"),
        format!("DTSTART:{}", ical_utc(start)),
        format!(
            "DTEND:{}",
            ical_utc(start + chrono::Duration::minutes(minutes))
        ),
    ]
}

/// The CalDAV adapter and the scheduler, started as separate processes; the
/// scheduler's data directory is a temporary directory.
pub struct CaldavStack {
    /// Data directory (store, dev master key, admin token).
    pub dir: tempfile::TempDir,
    /// The CalDAV adapter.
    pub adapter: Proc,
    /// The scheduler.
    pub scheduler: Proc,
    /// The scheduler's port (kept across restarts).
    pub scheduler_port: u16,
    /// The scheduler's configuration file, if one was given.
    pub scheduler_config: Option<PathBuf>,
}

/// The network the test CalDAV servers listen on, allow-listed for the
/// adapter (127.0.0.1 only: the rest of the loopback stays refused, which
/// the hostile-server tests rely on).
pub const LOOPBACK_SERVERS: &str = "127.0.0.1/32";

impl CaldavStack {
    /// Starts `calbridge-adapter-caldav` (suggesting a poll every
    /// `poll_interval_seconds`), then the scheduler in local mode with
    /// `--adapter caldav=URL`.
    pub async fn start(poll_interval_seconds: u32) -> Result<CaldavStack> {
        Self::start_with_scheduler_config(poll_interval_seconds, None).await
    }

    /// Like [`CaldavStack::start`], with a TOML configuration file for the
    /// scheduler holding `scheduler_toml` (e.g. `[sync]\npage_size = 2500`).
    pub async fn start_with_scheduler_config(
        poll_interval_seconds: u32,
        scheduler_toml: Option<&str>,
    ) -> Result<CaldavStack> {
        Self::start_with(poll_interval_seconds, scheduler_toml, &[]).await
    }

    /// Like [`CaldavStack::start_with_scheduler_config`], with extra flags
    /// for the adapter.
    pub async fn start_with(
        poll_interval_seconds: u32,
        scheduler_toml: Option<&str>,
        adapter_extra: &[String],
    ) -> Result<CaldavStack> {
        let dir = tempfile::tempdir()?;
        let scheduler_config = match scheduler_toml {
            Some(toml) => {
                let path = dir.path().join("scheduler.toml");
                std::fs::write(&path, toml)?;
                Some(path)
            }
            None => None,
        };
        let mut args: Vec<String> = vec![
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--poll-interval-seconds".into(),
            poll_interval_seconds.to_string(),
            // The test servers listen on the loopback, which the adapter
            // refuses unless allow-listed.
            "--allow-private-network".into(),
            LOOPBACK_SERVERS.into(),
        ];
        args.extend_from_slice(adapter_extra);
        let adapter = Proc::start("calbridge-adapter-caldav", &args).await?;
        let scheduler_port = free_port();
        let scheduler = Self::start_scheduler(
            dir.path(),
            scheduler_port,
            &adapter.url(),
            scheduler_config.as_deref(),
        )
        .await?;
        Ok(CaldavStack {
            dir,
            adapter,
            scheduler,
            scheduler_port,
            scheduler_config,
        })
    }

    async fn start_scheduler(
        dir: &Path,
        port: u16,
        adapter_url: &str,
        config: Option<&Path>,
    ) -> Result<Proc> {
        let mut args = vec![
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--data-dir".into(),
            dir.display().to_string(),
            "--mode".into(),
            "local".into(),
            "--adapter".into(),
            format!("caldav={adapter_url}"),
        ];
        if let Some(config) = config {
            args.push("--config".into());
            args.push(config.display().to_string());
        }
        Proc::start("calbridge-scheduler", &args).await
    }

    /// The scheduler's store directory (open it only while it is stopped).
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// Starts the scheduler again on the same port and data directory (after
    /// it was stopped or killed).
    pub async fn restart_scheduler(&mut self) -> Result<()> {
        let mut last = None;
        for _ in 0..50 {
            match Self::start_scheduler(
                self.dir.path(),
                self.scheduler_port,
                &self.adapter.url(),
                self.scheduler_config.as_deref(),
            )
            .await
            {
                Ok(p) => {
                    self.scheduler = p;
                    return Ok(());
                }
                // The port may still be held for a moment after a stop.
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(last.unwrap_or_else(|| anyhow!("scheduler did not restart")))
    }

    /// The admin token the scheduler generated in local mode.
    pub fn admin_token(&self) -> Result<String> {
        Ok(std::fs::read_to_string(self.dir.path().join("admin.token"))
            .context("admin.token written by the scheduler")?
            .trim()
            .to_string())
    }

    /// An admin client.
    pub async fn admin(&self) -> Result<AdminClient> {
        Ok(pb::admin_client::AdminClient::with_interceptor(
            channel(&self.scheduler.url()).await?,
            Bearer(Some(self.admin_token()?)),
        ))
    }

    /// A scheduler client with `key` (or none).
    pub async fn client(&self, key: Option<&str>) -> Result<SchedulerClient> {
        Ok(pb::scheduler_client::SchedulerClient::with_interceptor(
            channel(&self.scheduler.url()).await?,
            Bearer(key.map(str::to_string)),
        ))
    }

    /// Creates a tenant and returns (tenant id, API key).
    pub async fn tenant(&self, name: &str) -> Result<(String, String)> {
        let mut admin = self.admin().await?;
        let t = admin
            .create_tenant(pb::CreateTenantRequest { name: name.into() })
            .await?
            .into_inner();
        let k = admin
            .create_api_key(pb::CreateApiKeyRequest {
                tenant_id: t.tenant_id.clone(),
                label: "caldav tests".into(),
            })
            .await?
            .into_inner();
        Ok((t.tenant_id, k.api_key))
    }
}

/// ConnectPasswordAccount for `server` (PROVIDER_CALDAV, the server's base
/// URL, READ_WRITE) with `password`.
pub async fn connect(
    client: &mut SchedulerClient,
    server: &DavServer,
    password: &str,
) -> Result<pb::Account, tonic::Status> {
    client
        .connect_password_account(pb::ConnectPasswordAccountRequest {
            provider: pb::Provider::Caldav as i32,
            server_url: server.base.clone(),
            username: server.username.clone(),
            password: password.to_string(),
            access_level: pb::AccessLevel::ReadWrite as i32,
        })
        .await
        .map(|r| r.into_inner())
}

/// Waits until the mirror of a calendar satisfies `pred` (re-listing the
/// window every 20 ms); returns the events.
pub async fn wait_events(
    client: &mut SchedulerClient,
    account_id: &str,
    calendar_id: &str,
    window: pb::TimeWindow,
    what: &str,
    pred: impl Fn(&[pb::Event]) -> bool,
) -> Result<Vec<pb::Event>> {
    let pred = &pred;
    eventually(Duration::from_secs(30), what, || {
        let mut c = client.clone();
        async move {
            let events = list_events(&mut c, account_id, calendar_id, window)
                .await
                .ok()?;
            pred(&events).then_some(events)
        }
    })
    .await
}
