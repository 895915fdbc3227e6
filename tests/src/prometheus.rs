//! A real Prometheus server scraping the processes under test, answering
//! PromQL, and `promtool check metrics` linting an exposition: the metrics
//! the processes serve on `/metrics` are checked by the software that will
//! read them in production, not by a parser of ours.
//!
//! [`Prometheus::start`] writes a configuration with one scrape job per
//! target (scraped every second), checks it with `promtool check config`,
//! starts `prometheus` on a loopback port of its own choosing (it is given
//! port 0 and the port is read from its log) with its storage in a
//! temporary directory, and waits until `/-/ready` answers. Tests then ask
//! with [`Prometheus::query`] or wait for a condition with
//! [`Prometheus::wait_for`], whose timeout error shows the last answer and
//! the health of every target (a scrape that failed names its error there).
//!
//! Prometheus is ready about 0.1 s after it starts, but scrapes a target
//! for the first time only some 5-6 s later: 2.42 hands the targets it
//! discovered (static ones too) to its scrapers on a fixed 5 s tick, with
//! no flag to shorten it. Wait for [`Prometheus::targets_up`] (or with
//! [`Prometheus::wait_for`]) allowing for that, 20 s say.
//!
//! The tools are Debian's `prometheus` package (2.42), unpacked into
//! `target/tools/prometheus` by `scripts/tools prometheus-path` (which
//! `scripts/test-env` runs), or the directory `$CALBRIDGE_PROMETHEUS_DIR`
//! names. Without them every use fails, saying how to install them.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::prism::workspace_root;

/// How long [`Prometheus::start`] waits for the server to be ready.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How often [`Prometheus::wait_for`] asks again.
const QUERY_EVERY: Duration = Duration::from_millis(250);

/// How often [`Prometheus::targets_up`] looks again.
const TARGETS_EVERY: Duration = Duration::from_millis(100);

/// The directory holding `prometheus` and `promtool`:
/// `$CALBRIDGE_PROMETHEUS_DIR`, or `target/tools/prometheus/usr/bin` in the
/// workspace (where `scripts/tools prometheus-path` unpacks them). Fails,
/// saying how to install them, when either is missing.
pub fn tools_dir() -> Result<PathBuf> {
    let dir = match std::env::var_os("CALBRIDGE_PROMETHEUS_DIR") {
        Some(d) => PathBuf::from(d),
        None => workspace_root().join("target/tools/prometheus/usr/bin"),
    };
    for tool in ["prometheus", "promtool"] {
        if !dir.join(tool).is_file() {
            bail!(
                "{tool} is not in {}: install Prometheus 2.42 and promtool with \
                 `scripts/tools prometheus-path` (scripts/test does, through \
                 scripts/test-env) or set CALBRIDGE_PROMETHEUS_DIR to the directory \
                 holding both",
                dir.display()
            );
        }
    }
    Ok(dir)
}

/// Lints a text exposition with `promtool check metrics` (fed on stdin):
/// Ok when promtool exits 0 and reports nothing; otherwise an error
/// holding what promtool printed, e.g. `demo_total no help text`.
///
/// promtool exits 3 when it found lint problems (a metric without HELP, a
/// counter without the `_total` suffix, a name not in snake case, ...) and
/// 1 when the text does not parse. An empty exposition passes. Blocks for
/// the few milliseconds promtool takes.
pub fn promtool_check_metrics(exposition: &str) -> Result<()> {
    let promtool = tools_dir()?.join("promtool");
    let mut child = std::process::Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", promtool.display()))?;
    let mut stdin = child.stdin.take().context("promtool's stdin")?;
    let text = exposition.to_owned();
    // Written from a thread of its own, so a promtool that answers before it
    // read everything cannot leave both sides waiting on full pipes.
    let writer = std::thread::spawn(move || stdin.write_all(text.as_bytes()));
    let out = child
        .wait_with_output()
        .context("waiting for promtool check metrics")?;
    // A write cut short because promtool quit shows in its own output.
    let _ = writer.join();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let said = format!("{}{}", stdout, stderr);
    if out.status.success() && said.trim().is_empty() {
        return Ok(());
    }
    bail!(
        "promtool check metrics refused the exposition ({}):\n{}",
        out.status,
        said.trim_end()
    )
}

/// One element of a query's answer: a series' labels (the metric name is
/// `__name__`, when the expression keeps it) and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The series' labels; empty for a scalar.
    pub labels: BTreeMap<String, String>,
    /// The value at the time of the query.
    pub value: f64,
}

impl fmt::Display for Sample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.labels.get("__name__").map_or("", String::as_str);
        let labels: Vec<String> = self
            .labels
            .iter()
            .filter(|(k, _)| *k != "__name__")
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect();
        write!(f, "{name}{{{}}} {}", labels.join(","), self.value)
    }
}

/// One scrape target as Prometheus reports it (`/api/v1/targets`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The scrape job (`job_name`) it belongs to.
    pub job: String,
    /// The URL Prometheus scrapes.
    pub scrape_url: String,
    /// `up`, `down` or `unknown` (not scraped yet).
    pub health: String,
    /// Why the last scrape failed; empty when it succeeded.
    pub last_error: String,
    /// When it was last scraped (RFC 3339; the zero time when never).
    pub last_scrape: String,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "job {} ({}): {}, last scrape {}",
            self.job, self.scrape_url, self.health, self.last_scrape
        )?;
        if !self.last_error.is_empty() {
            write!(f, ", last error: {}", self.last_error)?;
        }
        Ok(())
    }
}

/// A running Prometheus server; killed when dropped (its storage, in a
/// temporary directory, goes with it).
pub struct Prometheus {
    child: Child,
    url: String,
    jobs: Vec<String>,
    http: reqwest::Client,
    log: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

/// What Prometheus answered to a query.
#[derive(Debug)]
enum Answer {
    /// A vector (or a scalar, as one sample without labels).
    Samples(Vec<Sample>),
    /// `status: error`: its `errorType` and `error`.
    Refused { kind: String, error: String },
}

impl Prometheus {
    /// Starts Prometheus scraping `targets`, one scrape job per `(job name,
    /// address)` (`http://ADDRESS/metrics`, every second, a 1 s timeout),
    /// and waits (up to 30 s) until it is ready. The configuration is
    /// checked with `promtool check config` first; an error holds what
    /// promtool or Prometheus said. The first scrape follows some 5-6 s
    /// later (see the module's documentation).
    pub async fn start(targets: &[(&str, SocketAddr)]) -> Result<Prometheus> {
        let tools = tools_dir()?;
        let dir = tempfile::Builder::new()
            .prefix("calbridge-prometheus-")
            .tempdir()
            .context("creating Prometheus's directory")?;
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, config_yaml(targets)).context("writing prometheus.yml")?;
        check_config(&tools, &config)?;

        let log = Arc::new(Mutex::new(String::new()));
        let mut child = Command::new(tools.join("prometheus"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            // Port 0: the kernel picks a free port, which Prometheus logs.
            .arg("--web.listen-address=127.0.0.1:0")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", tools.join("prometheus").display()))?;
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
        let stderr = child.stderr.take().context("Prometheus's stderr")?;
        let log2 = log.clone();
        let reader = tokio::spawn(async move {
            let mut addr_tx = Some(addr_tx);
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(addr) = listening_address(&line) {
                    if let Some(tx) = addr_tx.take() {
                        let _ = tx.send(addr);
                    }
                }
                let mut l = log2.lock().unwrap_or_else(|e| e.into_inner());
                l.push_str(&line);
                l.push('\n');
            }
        });

        let deadline = Instant::now() + START_TIMEOUT;
        let addr = tokio::select! {
            a = addr_rx => a.ok(),
            status = child.wait() => {
                // What it said before it went, read to the end.
                let _ = tokio::time::timeout(Duration::from_secs(2), reader).await;
                bail!(
                    "prometheus exited ({}) before it listened:\n{}",
                    status.map_or_else(|e| e.to_string(), |s| s.to_string()),
                    log_text(&log)
                )
            }
            _ = tokio::time::sleep_until(deadline) => None,
        };
        let Some(addr) = addr else {
            bail!(
                "prometheus logged no listening address within {START_TIMEOUT:?}:\n{}",
                log_text(&log)
            );
        };
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .context("building the HTTP client")?;
        let prom = Prometheus {
            child,
            url: format!("http://{addr}"),
            jobs: targets.iter().map(|(job, _)| job.to_string()).collect(),
            http,
            log,
            _dir: dir,
        };
        prom.wait_ready(deadline).await
    }

    /// Polls `/-/ready` until it answers 200, failing early if the process
    /// exits.
    async fn wait_ready(mut self, deadline: Instant) -> Result<Prometheus> {
        let ready = format!("{}/-/ready", self.url);
        loop {
            let last = match self.http.get(&ready).send().await {
                Ok(r) if r.status() == reqwest::StatusCode::OK => return Ok(self),
                Ok(r) => format!("answered {}", r.status()),
                Err(e) => e.to_string(),
            };
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!(
                    "prometheus exited ({status}) before it was ready:\n{}",
                    self.log()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "prometheus at {} not ready within {START_TIMEOUT:?} (/-/ready: {last}):\n{}",
                    self.url,
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The server's base URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Everything Prometheus logged so far.
    pub fn log(&self) -> String {
        log_text(&self.log)
    }

    /// Evaluates `promql` now (an instant query): the samples of the
    /// resulting vector, ordered by labels, or one sample without labels
    /// for a scalar. Fails on any other result type and, with Prometheus's
    /// error, when it refuses the query.
    pub async fn query(&self, promql: &str) -> Result<Vec<Sample>> {
        match self.ask(promql).await? {
            Answer::Samples(s) => Ok(s),
            Answer::Refused { kind, error } => {
                bail!("Prometheus refused `{promql}`: {kind}: {error}")
            }
        }
    }

    async fn ask(&self, promql: &str) -> Result<Answer> {
        let r = self
            .http
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", promql)])
            .send()
            .await
            .with_context(|| format!("asking Prometheus `{promql}`"))?;
        let status = r.status();
        let body = r.text().await.context("reading Prometheus's answer")?;
        decode_answer(status, &body).with_context(|| format!("the answer to `{promql}`"))
    }

    /// Asks `promql` every 250 ms until `done` accepts the samples, and
    /// returns them. After `timeout` fails with the last answer and the
    /// health of every target (with its last scrape error). A query
    /// Prometheus cannot parse fails at once.
    pub async fn wait_for(
        &self,
        promql: &str,
        done: impl Fn(&[Sample]) -> bool,
        timeout: Duration,
    ) -> Result<Vec<Sample>> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.ask(promql).await {
                Ok(Answer::Samples(s)) if done(&s) => return Ok(s),
                Ok(Answer::Samples(s)) if s.is_empty() => " no samples".to_string(),
                Ok(Answer::Samples(s)) => {
                    let lines: Vec<String> = s.iter().map(|s| format!("  {s}")).collect();
                    format!("\n{}", lines.join("\n"))
                }
                Ok(Answer::Refused { kind, error }) if kind == "bad_data" => {
                    bail!("Prometheus refused `{promql}`: {kind}: {error}")
                }
                Ok(Answer::Refused { kind, error }) => format!(" refused: {kind}: {error}"),
                Err(e) => format!(" error: {e:#}"),
            };
            if Instant::now() > deadline {
                bail!(
                    "`{promql}` did not give the awaited answer within {timeout:?}\n\
                     last answer:{last}\n{}",
                    self.targets_report().await
                );
            }
            tokio::time::sleep(QUERY_EVERY).await;
        }
    }

    /// The active scrape targets and their health.
    pub async fn targets(&self) -> Result<Vec<Target>> {
        let r = self
            .http
            .get(format!("{}/api/v1/targets?state=active", self.url))
            .send()
            .await
            .context("asking Prometheus for its targets")?;
        let status = r.status();
        let body = r.text().await.context("reading Prometheus's targets")?;
        let v: Value = serde_json::from_str(&body)
            .with_context(|| format!("Prometheus's targets ({status}) are not JSON: {body}"))?;
        if v["status"] != "success" {
            bail!("Prometheus's targets ({status}): {body}");
        }
        let text = |t: &Value, key: &str| t[key].as_str().unwrap_or_default().to_string();
        Ok(v["data"]["activeTargets"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|t| Target {
                job: t["scrapePool"]
                    .as_str()
                    .or_else(|| t["labels"]["job"].as_str())
                    .unwrap_or_default()
                    .to_string(),
                scrape_url: text(t, "scrapeUrl"),
                health: text(t, "health"),
                last_error: text(t, "lastError"),
                last_scrape: text(t, "lastScrape"),
            })
            .collect())
    }

    /// Waits until the target of every job given to [`Prometheus::start`]
    /// has health `up` (a successful scrape); after `timeout` fails listing
    /// those that are not, with their last scrape error.
    pub async fn targets_up(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let problems = match self.targets().await {
                Ok(targets) => {
                    let problems: Vec<String> = self
                        .jobs
                        .iter()
                        .filter_map(|job| {
                            let mine: Vec<&Target> =
                                targets.iter().filter(|t| &t.job == job).collect();
                            if mine.is_empty() {
                                Some(format!(
                                    "  job {job}: not among the active targets yet \
                                     (Prometheus 2.42 takes them up some 5 s after it starts)"
                                ))
                            } else if mine.iter().all(|t| t.health == "up") {
                                None
                            } else {
                                let lines: Vec<String> =
                                    mine.iter().map(|t| format!("  {t}")).collect();
                                Some(lines.join("\n"))
                            }
                        })
                        .collect();
                    if problems.is_empty() {
                        return Ok(());
                    }
                    problems.join("\n")
                }
                Err(e) => format!("  {e:#}"),
            };
            if Instant::now() > deadline {
                bail!("targets not up within {timeout:?}:\n{problems}");
            }
            tokio::time::sleep(TARGETS_EVERY).await;
        }
    }

    /// Every target's health, for an error message.
    async fn targets_report(&self) -> String {
        match self.targets().await {
            Ok(t) if t.is_empty() => {
                "targets: none active yet (Prometheus 2.42 takes them up some 5 s after it starts)"
                    .to_string()
            }
            Ok(t) => {
                let lines: Vec<String> = t.iter().map(|t| format!("  {t}")).collect();
                format!("targets:\n{}", lines.join("\n"))
            }
            Err(e) => format!("targets: unknown ({e:#})"),
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        // Killed and reaped (briefly waited for) before the temporary
        // directory holding its storage is removed.
        if self.child.start_kill().is_ok() {
            for _ in 0..400 {
                match self.child.try_wait() {
                    Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                    Ok(Some(_)) | Err(_) => break,
                }
            }
        }
    }
}

/// The configuration: a global 1 s scrape interval and timeout, one job per
/// target.
fn config_yaml(targets: &[(&str, SocketAddr)]) -> String {
    let mut yaml = String::from(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n",
    );
    if targets.is_empty() {
        yaml.push_str("scrape_configs: []\n");
        return yaml;
    }
    yaml.push_str("scrape_configs:\n");
    for (job, addr) in targets {
        // JSON strings are YAML flow scalars: the names arrive quoted.
        let job = Value::from(*job);
        let target = Value::from(addr.to_string());
        yaml.push_str(&format!(
            "  - job_name: {job}\n    static_configs:\n      - targets: [{target}]\n"
        ));
    }
    yaml
}

/// Runs `promtool check config` on `config`.
fn check_config(tools: &Path, config: &Path) -> Result<()> {
    let promtool = tools.join("promtool");
    let out = std::process::Command::new(&promtool)
        .args(["check", "config"])
        .arg(config)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("starting {}", promtool.display()))?;
    if !out.status.success() {
        bail!(
            "promtool check config refused the configuration ({}):\n{}{}\nthe configuration:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(config).unwrap_or_default()
        );
    }
    Ok(())
}

/// The address in Prometheus's `msg="Listening on" address=HOST:PORT` line.
fn listening_address(line: &str) -> Option<SocketAddr> {
    if !line.contains("msg=\"Listening on\"") {
        return None;
    }
    let rest = &line[line.find(" address=")? + " address=".len()..];
    rest.split_whitespace().next()?.parse().ok()
}

fn log_text(log: &Mutex<String>) -> String {
    log.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Decodes an answer of `/api/v1/query`.
fn decode_answer(status: reqwest::StatusCode, body: &str) -> Result<Answer> {
    let v: Value = serde_json::from_str(body)
        .with_context(|| format!("Prometheus answered {status}, not in JSON: {body}"))?;
    if v["status"] != "success" {
        return Ok(Answer::Refused {
            kind: v["errorType"].as_str().unwrap_or("unknown").to_string(),
            error: v["error"].as_str().unwrap_or(body).to_string(),
        });
    }
    let data = &v["data"];
    match data["resultType"].as_str() {
        Some("vector") => {
            let mut samples = data["result"]
                .as_array()
                .ok_or_else(|| anyhow!("a vector without a result list: {body}"))?
                .iter()
                .map(|r| {
                    let labels = r["metric"]
                        .as_object()
                        .ok_or_else(|| anyhow!("a sample without labels: {r}"))?
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect();
                    Ok(Sample {
                        labels,
                        value: sample_value(&r["value"])?,
                    })
                })
                .collect::<Result<Vec<Sample>>>()?;
            samples.sort_by(|a, b| a.labels.cmp(&b.labels));
            Ok(Answer::Samples(samples))
        }
        Some("scalar") => Ok(Answer::Samples(vec![Sample {
            labels: BTreeMap::new(),
            value: sample_value(&data["result"])?,
        }])),
        other => bail!(
            "a {} result, where an instant vector or a scalar was expected \
             (a range selector needs a function such as rate()): {body}",
            other.unwrap_or("missing")
        ),
    }
}

/// The value of a `[time, "value"]` pair (`NaN`, `+Inf` and `-Inf` too).
fn sample_value(pair: &Value) -> Result<f64> {
    let text = pair[1]
        .as_str()
        .ok_or_else(|| anyhow!("not a [time, \"value\"] pair: {pair}"))?;
    text.parse()
        .with_context(|| format!("not a number: {text:?}"))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// The exposition the test exporter serves.
    fn exposition(value: u64) -> String {
        format!(
            "# HELP demo_total Things the test counted.\n\
             # TYPE demo_total counter\n\
             demo_total {value}\n"
        )
    }

    /// A tiny HTTP server answering every request with [`exposition`] of
    /// the current value.
    struct Exporter {
        addr: SocketAddr,
        value: Arc<AtomicU64>,
        scrapes: Arc<AtomicU64>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Exporter {
        async fn start(value: u64) -> Result<Exporter> {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            let value = Arc::new(AtomicU64::new(value));
            let scrapes = Arc::new(AtomicU64::new(0));
            let (v, n) = (value.clone(), scrapes.clone());
            let task = tokio::spawn(async move {
                while let Ok((mut conn, _)) = listener.accept().await {
                    let (v, n) = (v.clone(), n.clone());
                    tokio::spawn(async move {
                        let mut req = Vec::new();
                        let mut buf = [0u8; 1024];
                        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                            match conn.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(k) => req.extend_from_slice(&buf[..k]),
                            }
                        }
                        n.fetch_add(1, Ordering::SeqCst);
                        let body = exposition(v.load(Ordering::SeqCst));
                        let head = format!(
                            "HTTP/1.1 200 OK\r\n\
                             Content-Type: text/plain; version=0.0.4\r\n\
                             Content-Length: {}\r\n\
                             Connection: close\r\n\r\n",
                            body.len()
                        );
                        let _ = conn.write_all(head.as_bytes()).await;
                        let _ = conn.write_all(body.as_bytes()).await;
                        let _ = conn.shutdown().await;
                    });
                }
            });
            Ok(Exporter {
                addr,
                value,
                scrapes,
                task,
            })
        }
    }

    impl Drop for Exporter {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    #[test]
    fn promtool_accepts_a_documented_counter_and_names_one_without_help() -> Result<()> {
        promtool_check_metrics(&exposition(3))?;
        let err = promtool_check_metrics(
            "# HELP demo_total Documented.\n\
             # TYPE demo_total counter\n\
             demo_total 3\n\
             # TYPE undocumented_total counter\n\
             undocumented_total 1\n",
        )
        .expect_err("a metric without HELP passed promtool")
        .to_string();
        assert!(
            err.contains("undocumented_total no help text"),
            "promtool's complaint does not name the metric: {err}"
        );
        assert!(!err.contains("demo_total no help"), "{err}");
        let err = promtool_check_metrics("demo_total{ 3\n")
            .expect_err("an exposition that does not parse passed promtool")
            .to_string();
        assert!(err.contains("parsing error"), "{err}");
        Ok(())
    }

    #[tokio::test]
    async fn prometheus_scrapes_a_counter_as_it_grows() -> Result<()> {
        let exporter = Exporter::start(1).await?;
        let started = Instant::now();
        let prom = Prometheus::start(&[("demo", exporter.addr)]).await?;
        eprintln!("prometheus ready after {:?}", started.elapsed());
        prom.targets_up(Duration::from_secs(20)).await?;
        eprintln!("target up after {:?}", started.elapsed());

        let first = prom
            .wait_for(
                "demo_total",
                |s| s.iter().any(|s| s.value >= 1.0),
                Duration::from_secs(15),
            )
            .await?;
        assert_eq!(first.len(), 1, "{first:?}");
        assert_eq!(first[0].labels["job"], "demo");
        assert_eq!(first[0].labels["instance"], exporter.addr.to_string());
        assert_eq!(first[0].labels["__name__"], "demo_total");

        let scrapes = exporter.scrapes.load(Ordering::SeqCst);
        exporter.value.store(7, Ordering::SeqCst);
        let grown = prom
            .wait_for(
                "demo_total",
                |s| s.iter().any(|s| s.value >= 7.0),
                Duration::from_secs(15),
            )
            .await?;
        assert_eq!(grown.len(), 1, "{grown:?}");
        assert_eq!(grown[0].value, 7.0);
        assert!(exporter.scrapes.load(Ordering::SeqCst) > scrapes);
        eprintln!("grown value seen after {:?}", started.elapsed());

        let two = prom.query("1 + 1").await?;
        assert_eq!(
            two,
            vec![Sample {
                labels: BTreeMap::new(),
                value: 2.0
            }]
        );
        let err = prom.query("demo_total{").await.expect_err("bad PromQL");
        assert!(err.to_string().contains("bad_data"), "{err:#}");

        let err = prom
            .wait_for(
                "demo_total",
                |s| s.iter().any(|s| s.value >= 1e9),
                Duration::from_millis(600),
            )
            .await
            .expect_err("a condition that cannot hold held")
            .to_string();
        assert!(err.contains("demo_total{"), "no last answer: {err}");
        assert!(
            err.contains(&format!("job demo (http://{}/metrics): up", exporter.addr)),
            "no target health: {err}"
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_target_that_refuses_is_reported_with_its_error() -> Result<()> {
        // Nothing listens on port 1 of loopback.
        let gone: SocketAddr = "127.0.0.1:1".parse()?;
        let prom = Prometheus::start(&[("gone", gone)]).await?;
        // Scraped (and failed) once: its lastError is set with `up`.
        prom.wait_for(
            "up{job=\"gone\"}",
            |s| s.iter().any(|s| s.value == 0.0),
            Duration::from_secs(20),
        )
        .await?;
        let err = prom
            .targets_up(Duration::from_millis(500))
            .await
            .expect_err("a target no one serves was up")
            .to_string();
        assert!(
            err.contains("job gone (http://127.0.0.1:1/metrics): down"),
            "{err}"
        );
        assert!(err.contains("connection refused"), "{err}");
        Ok(())
    }

    #[tokio::test]
    async fn promtool_check_config_refusals_stop_the_start() -> Result<()> {
        let addr: SocketAddr = "127.0.0.1:1".parse()?;
        let err = match Prometheus::start(&[("twice", addr), ("twice", addr)]).await {
            Ok(_) => bail!("a configuration with one job twice started"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains("promtool check config refused")
                && err.contains("multiple scrape configs with job name \"twice\""),
            "{err}"
        );
        Ok(())
    }

    #[test]
    fn answers_decode() -> Result<()> {
        let ok = reqwest::StatusCode::OK;
        let vector = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"job":"b"},"value":[1.5,"+Inf"]},
            {"metric":{"job":"a"},"value":[1.5,"NaN"]}]}}"#;
        let Answer::Samples(s) = decode_answer(ok, vector)? else {
            bail!("a vector was refused");
        };
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].labels["job"], "a");
        assert!(s[0].value.is_nan());
        assert_eq!(s[1].value, f64::INFINITY);
        let refused = r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#;
        match decode_answer(reqwest::StatusCode::BAD_REQUEST, refused)? {
            Answer::Refused { kind, error } => {
                assert_eq!((kind.as_str(), error.as_str()), ("bad_data", "parse error"))
            }
            other => bail!("decoded as {other:?}"),
        }
        let matrix = r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        assert!(decode_answer(ok, matrix).is_err());
        assert_eq!(
            listening_address(
                "ts=2026-12-04T16:01:41.149Z caller=tls_config.go:232 level=info \
                 component=web msg=\"Listening on\" address=127.0.0.1:44643"
            ),
            Some("127.0.0.1:44643".parse()?)
        );
        Ok(())
    }
}
