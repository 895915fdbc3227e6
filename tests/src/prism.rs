//! Stoplight Prism as a validating proxy in front of the fake Graph: every
//! request the Microsoft adapter sends to Graph and every answer the fake
//! gives is checked against Microsoft's own OpenAPI description of Graph
//! v1.0 (the calendar-sync subset in `shared/ref/msgraph`), by software no
//! one on the project wrote.
//!
//! Prism runs with `--errors`, so a request that breaks the schema comes
//! back to the adapter as 422 and an answer that does as 500;
//! [`Prism::violations`] reads the same from Prism's log, so that a test
//! fails on one even where the adapter recovered from the error.
//!
//! The spec's paths start at `/me` below its server
//! (`https://graph.microsoft.com/v1.0/`), so the adapter's Graph base URL is
//! [`Prism::url`] and Prism forwards to the fake's `/v1.0`
//! ([`Prism::start`]). The fake's own next and delta links must name Prism
//! too (`Control::set_graph_url`). Two paths the adapter reads are not in
//! the subset, `/me` and `/me/mailboxSettings`, are added to the
//! spec Prism loads with their security but no answer schema, so they pass
//! unchecked rather than failing as unknown routes; so is `/$batch` (JSON
//! batching, which the fake checks request by request). And the description
//! makes `startDateTime` and `endDateTime` required on every
//! `calendarView/delta` request, where Graph's own next and delta links
//! carry only `$skiptoken` or `$deltatoken` (the window is in the token, as
//! Microsoft's delta documentation shows): on those paths the two are made
//! optional, still checked when sent.
//!
//! Prism is `target/tools/prism` (`scripts/tools prism-path`, which
//! `scripts/test-env` runs) or `$CALBRIDGE_PRISM`; the spec is
//! `../shared/ref/msgraph/` beside the workspace or
//! `$CALBRIDGE_GRAPH_OPENAPI`. Starting one takes about 2 s of CPU.
//!
//! This file is also compiled into the Microsoft adapter's own tests (by
//! `#[path]`), so it uses nothing but std, tokio, anyhow and tempfile.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

/// Microsoft's description, relative to the directory that holds the
/// workspace.
const SPEC: &str = "shared/ref/msgraph/graph-v1.0-calendar-sync.openapi.yml";

/// The path of the requests that flush Prism's log ([`Prism::flush`]).
const FLUSH: &str = "calbridge-prism-log-flush-";

/// What Prism prints once it serves.
const LISTENING: &str = "Prism is listening on ";

/// Paths the adapter reads that the calendar-sync subset leaves out: known
/// to Prism, secured as every Graph path, with no answer schema.
const UNCHECKED_PATHS: &str = "paths:
  /me:
    get:
      operationId: calbridge_me_unchecked
      description: Not in the calendar-sync subset; forwarded, its answer unchecked.
      responses:
        2XX:
          description: The signed-in user.
        default:
          $ref: '#/components/responses/error'
  /me/mailboxSettings:
    get:
      operationId: calbridge_mailboxSettings_unchecked
      description: Not in the calendar-sync subset; forwarded, its answer unchecked.
      responses:
        2XX:
          description: The user's mailbox settings.
        default:
          $ref: '#/components/responses/error'
  /$batch:
    post:
      operationId: calbridge_batch_unchecked
      description: JSON batching, not in the subset; forwarded, its answer unchecked (the fake checks the answer of each request inside against the schemas itself).
      requestBody:
        required: true
        content:
          application/json:
            schema:
              type: object
              required: [requests]
              properties:
                requests:
                  type: array
                  minItems: 1
                  maxItems: 20
      responses:
        2XX:
          description: The answers of the requests in the batch.
        default:
          $ref: '#/components/responses/error'
";

/// A running Prism proxy; killed when dropped.
pub struct Prism {
    _child: Child,
    url: String,
    log: Arc<Mutex<Vec<String>>>,
    flushes: AtomicU32,
    _spec: tempfile::TempDir,
}

/// The workspace's root: the nearest directory above this crate holding
/// `Cargo.lock`.
pub(crate) fn workspace_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .find(|d| d.join("Cargo.lock").is_file())
        .unwrap_or(&here)
        .to_path_buf()
}

fn prism_bin() -> Result<PathBuf> {
    let bin = match std::env::var_os("CALBRIDGE_PRISM") {
        Some(p) => PathBuf::from(p),
        None => workspace_root().join("target/tools/prism/node_modules/.bin/prism"),
    };
    if !bin.is_file() {
        bail!(
            "Prism is not at {}: install it with `scripts/tools prism-path` \
             (scripts/test does, through scripts/test-env) or set CALBRIDGE_PRISM",
            bin.display()
        );
    }
    Ok(bin)
}

/// `text` with `startDateTime` and `endDateTime` optional on the delta
/// paths, and how many it relaxed.
fn relax_delta_window(text: &str) -> (String, usize) {
    let (mut out, mut relaxed) = (String::with_capacity(text.len()), 0);
    let (mut delta_path, mut window_param) = (false, false);
    for line in text.lines() {
        let item = line.trim_start();
        if line.starts_with("  /") {
            delta_path = line.contains("/calendarView/") && line.contains("delta");
            window_param = false;
        } else if let Some(name) = item.strip_prefix("- name: ") {
            window_param = delta_path && (name == "startDateTime" || name == "endDateTime");
        } else if window_param && item == "required: true" {
            relaxed += 1;
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    (out, relaxed)
}

/// The spec Prism loads: Microsoft's subset plus [`UNCHECKED_PATHS`], the
/// delta window optional ([`relax_delta_window`]), written into `dir`.
fn spec_in(dir: &Path) -> Result<PathBuf> {
    let source = match std::env::var_os("CALBRIDGE_GRAPH_OPENAPI") {
        Some(p) => PathBuf::from(p),
        None => workspace_root()
            .parent()
            .map(|p| p.join(SPEC))
            .unwrap_or_else(|| PathBuf::from(SPEC)),
    };
    let text = std::fs::read_to_string(&source).with_context(|| {
        format!(
            "reading Microsoft's OpenAPI description at {} (set CALBRIDGE_GRAPH_OPENAPI)",
            source.display()
        )
    })?;
    if text.matches("\npaths:\n").count() != 1 {
        bail!("{} has no single `paths:` section", source.display());
    }
    let (text, relaxed) = relax_delta_window(&text);
    if relaxed == 0 {
        bail!(
            "{} has no delta path requiring startDateTime and endDateTime",
            source.display()
        );
    }
    let out = dir.join("graph-v1.0-calendar-sync.openapi.yml");
    std::fs::write(
        &out,
        text.replacen("\npaths:\n", &format!("\n{UNCHECKED_PATHS}"), 1),
    )?;
    Ok(out)
}

/// Copies each line of `from` into `log`, sending Prism's address on
/// `listening` when it says it serves.
fn collect(
    from: impl AsyncRead + Unpin + Send + 'static,
    log: Arc<Mutex<Vec<String>>>,
    listening: tokio::sync::mpsc::Sender<String>,
) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(from).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(at) = line.find(LISTENING) {
                let url = line[at + LISTENING.len()..].trim().to_string();
                let _ = listening.send(url).await;
            }
            log.lock().unwrap_or_else(|e| e.into_inner()).push(line);
        }
    });
}

impl Prism {
    /// Starts Prism on a free loopback port, forwarding to `upstream` (the
    /// fake's Graph, `http://ADDR/v1.0`), and waits (up to 120 s) until it
    /// serves.
    pub async fn start(upstream: &str) -> Result<Prism> {
        let bin = prism_bin()?;
        let dir = tempfile::tempdir()?;
        let spec = spec_in(dir.path())?;
        let mut child = Command::new(&bin)
            .arg("proxy")
            .arg(&spec)
            .arg(upstream)
            .args(["--host", "127.0.0.1", "--port", "0", "--errors"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, mut rx) = tokio::sync::mpsc::channel(2);
        if let Some(out) = child.stdout.take() {
            collect(out, log.clone(), tx.clone());
        }
        if let Some(err) = child.stderr.take() {
            collect(err, log.clone(), tx);
        }
        let url = tokio::time::timeout(Duration::from_secs(120), rx.recv())
            .await
            .ok()
            .flatten();
        let Some(url) = url else {
            let _ = child.kill().await;
            let log = log.lock().unwrap_or_else(|e| e.into_inner()).join("\n");
            return Err(anyhow!("Prism did not start serving; its log:\n{log}"));
        };
        Ok(Prism {
            _child: child,
            url: format!("{}/", url.trim_end_matches('/')),
            log,
            flushes: AtomicU32::new(0),
            _spec: dir,
        })
    }

    /// `http://127.0.0.1:PORT/`: the Graph base URL to give the adapter,
    /// and the base of the fake's links.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Every line of Prism's log that reports a request or an answer it
    /// refused or warned about: a schema violation (with `--errors` only
    /// its kind, `VIOLATIONS` for an answer and `UNPROCESSABLE_ENTITY` for
    /// a request, with the method and path), an unknown route, a missing
    /// credential. Prism logs a request after answering it, so this first
    /// waits for the log to hold every request answered so far
    /// ([`Prism::flush`]).
    pub async fn violations(&self) -> Result<Vec<String>> {
        self.flush().await?;
        Ok(self.logged_violations())
    }

    fn logged_violations(&self) -> Vec<String> {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|l| !l.contains(FLUSH))
            .filter(|l| {
                l.contains("[VALIDATOR]")
                    || l.contains('\u{2716}') // ✖ error
                    || l.contains('\u{26a0}') // ⚠ warning
                    || l.contains("fatal")
            })
            .cloned()
            .collect()
    }

    /// Sends Prism a request for a path of its own and waits (up to 30 s)
    /// until its log shows it: Prism serves and logs in order, so every
    /// request answered before is in the log then.
    async fn flush(&self) -> Result<()> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let marker = format!("{FLUSH}{}", self.flushes.fetch_add(1, Ordering::Relaxed));
        let addr = self
            .url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let mut conn = tokio::net::TcpStream::connect(&addr).await?;
        conn.write_all(
            format!("GET /{marker} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
        let mut answer = Vec::new();
        conn.read_to_end(&mut answer).await?;
        let logged = || {
            self.log
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .any(|l| l.contains(&format!("/{marker} ")))
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !logged() {
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "Prism did not log the request for /{marker}; its log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// Fails, listing them, when Prism found any violation.
    pub async fn verify(&self) -> Result<()> {
        let found = self.violations().await?;
        if !found.is_empty() {
            bail!(
                "Prism found requests or answers that break Microsoft's OpenAPI description \
                 of Graph:\n{}",
                found.join("\n")
            );
        }
        Ok(())
    }

    /// Prism's whole log so far.
    pub fn log(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n")
    }
}

impl Drop for Prism {
    /// Shows what Prism refused in the output of a test that failed before
    /// it called [`Prism::verify`] (an adapter error of 422 or 500 is
    /// Prism's).
    fn drop(&mut self) {
        let found = self.logged_violations();
        if !found.is_empty() {
            eprintln!("Prism's violations:\n{}", found.join("\n"));
        }
    }
}
