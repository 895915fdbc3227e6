//! `calbridge up`: the local stack. Starts the adapters (sandbox, CalDAV /
//! iCloud, Google against a local fake Google, Microsoft against a local
//! fake Graph) and then the scheduler as child processes on loopback,
//! learns their ports from the one JSON line each prints when ready,
//! forwards their logs, and stops them all on Ctrl-C / SIGTERM or when one
//! dies.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStderr, Command};
use tokio::task::JoinHandle;

use crate::cli::{UpArgs, DEFAULT_SANDBOX, DEFAULT_SERVER};

const SANDBOX_BIN: &str = "calbridge-adapter-sandbox";
const SCHEDULER_BIN: &str = "calbridge-scheduler";
const CALDAV_BIN: &str = "calbridge-adapter-caldav";
const GOOGLE_BIN: &str = "calbridge-adapter-google";
const FAKE_GOOGLE_BIN: &str = "calbridge-fake-google";
const MICROSOFT_BIN: &str = "calbridge-adapter-microsoft";
const FAKE_GRAPH_BIN: &str = "calbridge-fake-graph";
/// The OAuth client the local Google adapter and fake Google share.
const LOCAL_CLIENT_ID: &str = "calbridge-local.apps.example";
/// The user the local fake Google knows (and consents as).
const LOCAL_GOOGLE_USER: &str = "ada@gmail.example";
/// The application (client) id the local Microsoft adapter and fake Graph
/// share (GUID-shaped, like Microsoft's).
const LOCAL_MICROSOFT_CLIENT_ID: &str = "6c0ca1b0-0000-4000-8000-00000000ca1b";
/// The user the local fake Graph knows (and consents as).
const LOCAL_MICROSOFT_USER: &str = "ada@outlook.example";
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_GRACE: Duration = Duration::from_secs(10);
const TAIL_LINES: usize = 20;

/// The address in a `{"event":"listening",...,"addr":"..."}` line.
fn parse_listening(line: &str) -> Option<String> {
    parse_event(line, "listening")
}

/// The address in a `{"event":EVENT,...,"addr":"..."}` line.
fn parse_event(line: &str, event: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(line.trim()).ok()?;
    if v.get("event")?.as_str()? != event {
        return None;
    }
    Some(v.get("addr")?.as_str()?.to_string())
}

/// A sibling binary of the running `calbridge`.
fn sibling(dir: &Path, name: &str) -> Result<PathBuf> {
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if path.is_file() {
        Ok(path)
    } else {
        bail!(
            "{name} not found in {}: build every binary with `cargo build --workspace --bins`",
            dir.display()
        )
    }
}

/// The last lines a child wrote on stderr, for failure messages.
type Tail = Arc<Mutex<VecDeque<String>>>;

/// A running child service.
struct Service {
    name: &'static str,
    child: Child,
    addr: String,
    /// Where its Prometheus metrics are served, when it said.
    metrics: Option<String>,
    tail: Tail,
    stderr_task: JoinHandle<()>,
}

fn forward_stderr(name: &'static str, stderr: ChildStderr, tail: Tail) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("[{name}] {line}");
            let mut t = tail.lock().expect("tail lock");
            if t.len() == TAIL_LINES {
                t.pop_front();
            }
            t.push_back(line);
        }
    })
}

impl Service {
    /// Spawns `cmd` and waits for its listening line.
    async fn start(name: &'static str, mut cmd: Command) -> Result<Service> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting the {name}"))?;
        let tail: Tail = Arc::default();
        let stderr = child.stderr.take().expect("stderr is piped");
        let stderr_task = forward_stderr(name, stderr, tail.clone());
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();

        // The metrics endpoint is announced before the gRPC listener.
        let mut metrics = None;
        let ready = tokio::time::timeout(READY_TIMEOUT, async {
            loop {
                match lines.next_line().await {
                    Ok(Some(line)) => match parse_listening(&line) {
                        Some(addr) => return Some(addr),
                        None => match parse_event(&line, "metrics") {
                            Some(addr) => metrics = Some(addr),
                            None => println!("[{name}] {line}"),
                        },
                    },
                    Ok(None) | Err(_) => return None,
                }
            }
        })
        .await;
        let mut service = Service {
            name,
            child,
            addr: String::new(),
            metrics,
            tail,
            stderr_task,
        };
        match ready {
            Ok(Some(addr)) => {
                service.addr = addr;
                tokio::spawn(async move {
                    while let Ok(Some(line)) = lines.next_line().await {
                        println!("[{name}] {line}");
                    }
                });
                Ok(service)
            }
            Ok(None) => {
                let status = tokio::time::timeout(Duration::from_secs(5), service.child.wait())
                    .await
                    .ok()
                    .and_then(Result::ok);
                Err(service.failure(status).await)
            }
            Err(_) => {
                let _ = service.child.kill().await;
                Err(anyhow!(
                    "the {name} did not report that it is listening within {}s",
                    READY_TIMEOUT.as_secs()
                ))
            }
        }
    }

    /// Why the child exited before it was ready, with its last stderr lines.
    async fn failure(self, status: Option<ExitStatus>) -> anyhow::Error {
        // Let the forwarder drain what the child wrote before exiting.
        let _ = tokio::time::timeout(Duration::from_secs(2), self.stderr_task).await;
        let tail = self.tail.lock().expect("tail lock");
        let status = status
            .map(|s| s.to_string())
            .unwrap_or_else(|| "closed its output".into());
        let mut msg = format!("the {} exited before it was ready ({status})", self.name);
        if !tail.is_empty() {
            msg.push_str("; its last output:");
            for line in tail.iter() {
                msg.push_str("\n  ");
                msg.push_str(line);
            }
        }
        anyhow!(msg)
    }

    /// SIGTERM, then SIGKILL after the grace period.
    async fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await;
        }
        if tokio::time::timeout(STOP_GRACE, self.child.wait())
            .await
            .is_err()
        {
            eprintln!(
                "the {} did not stop within {}s; killing it",
                self.name,
                STOP_GRACE.as_secs()
            );
            let _ = self.child.kill().await;
        }
    }
}

/// Starts a service unless a stop is requested first (`None`).
async fn start_or_stop(name: &'static str, cmd: Command) -> Result<Option<Service>> {
    tokio::select! {
        s = Service::start(name, cmd) => s.map(Some),
        _ = calbridge_runtime::shutdown_signal() => Ok(None),
    }
}

fn summary(args: &UpArgs, started: &[Service]) -> String {
    let addr = |name: &str| {
        started.iter().find(|s| s.name == name).map(|s| {
            let scheme = if MTLS_ADAPTERS.contains(&s.name) {
                "https"
            } else {
                "http"
            };
            format!("{scheme}://{}", s.addr)
        })
    };
    let metrics = |name: &str| {
        started
            .iter()
            .find(|s| s.name == name)
            .and_then(|s| s.metrics.as_ref())
            .map(|m| format!("\n               metrics http://{m}/metrics"))
            .unwrap_or_default()
    };
    let server = addr("scheduler").unwrap_or_default();
    let sandbox_url = addr("sandbox").unwrap_or_default();
    let token_file = args.data_dir.join("admin.token");
    let mut s = String::new();
    s.push_str("calbridge is running (Ctrl-C to stop)\n\n");
    s.push_str(&format!(
        "  scheduler    {server}{}\n",
        metrics("scheduler")
    ));
    s.push_str(&format!(
        "  sandbox      {sandbox_url}{}\n",
        metrics("sandbox")
    ));
    if let Some(c) = addr("caldav") {
        s.push_str(&format!(
            "  caldav       {c} (also serves iCloud){}\n",
            metrics("caldav")
        ));
    }
    if let (Some(g), Some(f)) = (addr("google"), addr("fake-google")) {
        s.push_str(&format!(
            "  google       {g} (against the fake Google at {f}; push webhook https://{}){}\n",
            args.google_webhook_listen,
            metrics("google")
        ));
    }
    if let (Some(m), Some(f)) = (addr("microsoft"), addr("fake-graph")) {
        s.push_str(&format!(
            "  microsoft    {m} (against the fake Graph at {f}; push webhook https://{}){}\n",
            args.microsoft_webhook_listen,
            metrics("microsoft")
        ));
    }
    if addr("google").is_some() || addr("microsoft").is_some() {
        s.push_str(&format!(
            "  oauth        http://{}/oauth/callback\n",
            args.oauth_callback_listen
        ));
    }
    s.push_str(&format!(
        "  links        mutual TLS between the scheduler and caldav, google, microsoft (local CA in {})\n",
        args.data_dir.join("tls").display()
    ));
    s.push_str(&format!("  data dir     {}\n", args.data_dir.display()));
    s.push_str(&format!("  admin token  {}\n", token_file.display()));
    s.push_str("\nnext steps, in another terminal:\n");
    if server != DEFAULT_SERVER {
        s.push_str(&format!("  export CALBRIDGE_SERVER={server}\n"));
    }
    if sandbox_url != DEFAULT_SANDBOX {
        s.push_str(&format!("  export CALBRIDGE_SANDBOX={sandbox_url}\n"));
    }
    if token_file != Path::new(".calbridge/admin.token") {
        s.push_str(&format!(
            "  export CALBRIDGE_ADMIN_TOKEN_FILE={}\n",
            token_file.display()
        ));
    }
    s.push_str("  calbridge admin create-tenant --name demo\n");
    s.push_str("  calbridge admin create-key --tenant <TENANT_ID> --label demo\n");
    s.push_str("  export CALBRIDGE_API_KEY=<KEY>\n");
    s.push_str("  calbridge accounts connect --provider sandbox --username ada@example.com --password secret\n");
    if addr("google").is_some() {
        s.push_str(&format!(
            "  calbridge accounts authorize --provider google --wait   # open the URL: the fake Google consents as {LOCAL_GOOGLE_USER}\n"
        ));
    }
    if addr("microsoft").is_some() {
        s.push_str(&format!(
            "  calbridge accounts authorize --provider microsoft --wait   # open the URL: the fake Graph consents as {LOCAL_MICROSOFT_USER}\n"
        ));
    }
    s
}

/// Files a local adapter and fake provider pair needs, made once in
/// `DATA_DIR/<provider>`: the OAuth client's id and secret, and a
/// development CA with a certificate for 127.0.0.1 for the push webhook
/// (the fake trusts only that CA).
struct LocalOAuth {
    client_id_file: PathBuf,
    client_secret_file: PathBuf,
    ca_file: PathBuf,
    cert_file: PathBuf,
    key_file: PathBuf,
}

fn write_private(path: &Path, contents: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)
        .and_then(|mut f| f.write_all(contents))
        .with_context(|| format!("writing {}", path.display()))
}

/// The files of the local `provider` pair (`google`, `microsoft`) whose
/// OAuth client is `client_id`, made on first use.
fn local_oauth(data_dir: &Path, provider: &str, client_id: &str) -> Result<LocalOAuth> {
    let dir = data_dir.join(provider);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let g = LocalOAuth {
        client_id_file: dir.join("client_id"),
        client_secret_file: dir.join("client_secret"),
        ca_file: dir.join("dev-ca.pem"),
        cert_file: dir.join("webhook.crt"),
        key_file: dir.join("webhook.key"),
    };
    if !g.client_secret_file.is_file() {
        let mut secret = [0u8; 24];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut secret);
        let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        write_private(&g.client_id_file, client_id.as_bytes())?;
        write_private(&g.client_secret_file, hex.as_bytes())?;
    }
    if !(g.ca_file.is_file() && g.cert_file.is_file() && g.key_file.is_file()) {
        let ca_key = rcgen::KeyPair::generate()?;
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "calbridge local development CA");
        let ca = ca_params.self_signed(&ca_key)?;
        let leaf_key = rcgen::KeyPair::generate()?;
        let leaf =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".into()])?
                .signed_by(&leaf_key, &ca, &ca_key)?;
        write_private(&g.ca_file, ca.pem().as_bytes())?;
        write_private(&g.cert_file, leaf.pem().as_bytes())?;
        write_private(&g.key_file, leaf_key.serialize_pem().as_bytes())?;
    }
    Ok(g)
}

/// The adapters `up` links to the scheduler over mutual TLS. The sandbox
/// stays plaintext: people and tests drive its SandboxControl service
/// directly (`calbridge sandbox ...`, `CALBRIDGE_SANDBOX=http://...`).
const MTLS_ADAPTERS: [&str; 3] = ["caldav", "google", "microsoft"];

/// The local certificate authority of the links between the scheduler and
/// the adapters, made once in `DATA_DIR/tls` (files 0600): `ca.crt`, and a
/// certificate and key for the scheduler (its client certificate) and for
/// each adapter in [`MTLS_ADAPTERS`] (for 127.0.0.1 and localhost). The
/// CA's key is never written: missing files make a whole new set.
struct LocalLinks {
    dir: PathBuf,
}

impl LocalLinks {
    fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    fn cert(&self, who: &str) -> PathBuf {
        self.dir.join(format!("{who}.crt"))
    }

    fn key(&self, who: &str) -> PathBuf {
        self.dir.join(format!("{who}.key"))
    }

    /// `--tls-cert`, `--tls-key` and `--tls-client-ca` of an adapter.
    fn adapter_flags(&self, cmd: &mut Command, who: &str) {
        cmd.arg("--tls-cert")
            .arg(self.cert(who))
            .arg("--tls-key")
            .arg(self.key(who))
            .arg("--tls-client-ca")
            .arg(self.ca());
    }

    /// The scheduler's flags for its links to the adapters.
    fn scheduler_flags(&self, cmd: &mut Command) {
        cmd.arg("--adapter-ca")
            .arg(self.ca())
            .arg("--adapter-client-cert")
            .arg(self.cert("scheduler"))
            .arg("--adapter-client-key")
            .arg(self.key("scheduler"));
    }
}

fn local_links(data_dir: &Path) -> Result<LocalLinks> {
    let links = LocalLinks {
        dir: data_dir.join("tls"),
    };
    std::fs::create_dir_all(&links.dir)
        .with_context(|| format!("creating {}", links.dir.display()))?;
    let everyone = std::iter::once("scheduler").chain(MTLS_ADAPTERS);
    let complete = links.ca().is_file()
        && everyone
            .clone()
            .all(|w| links.cert(w).is_file() && links.key(w).is_file());
    if complete {
        return Ok(links);
    }
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "calbridge local links CA");
    let ca = ca_params.self_signed(&ca_key)?;
    for who in everyone {
        let key = rcgen::KeyPair::generate()?;
        let mut params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".into()])?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("calbridge {who}"));
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &ca, &ca_key)?;
        write_private(&links.cert(who), cert.pem().as_bytes())?;
        write_private(&links.key(who), key.serialize_pem().as_bytes())?;
    }
    write_private(&links.ca(), ca.pem().as_bytes())?;
    Ok(links)
}

/// Adds `--otlp-endpoint` when one is configured, and a metrics endpoint
/// on a free loopback port (announced, then printed in the summary).
fn with_otlp(mut cmd: Command, args: &UpArgs) -> Command {
    if let Some(otlp) = &args.otlp_endpoint {
        cmd.arg("--otlp-endpoint").arg(otlp);
    }
    cmd.arg("--metrics-listen").arg("127.0.0.1:0");
    cmd
}

/// Stops started services, last first.
async fn stop_all(started: &mut [Service]) {
    for s in started.iter_mut().rev() {
        s.stop().await;
    }
}

/// Runs the local stack until Ctrl-C / SIGTERM or a child's death.
pub(crate) async fn run(args: UpArgs) -> Result<()> {
    let exe = std::env::current_exe().context("finding the calbridge executable")?;
    let dir = exe
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent directory", exe.display()))?;
    let scheduler_bin = sibling(dir, SCHEDULER_BIN)?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("--data-dir: creating {}", args.data_dir.display()))?;
    let links = local_links(&args.data_dir)?;

    // What to start, in order; the scheduler last, with every adapter.
    let mut plan: Vec<(&'static str, Command)> = Vec::new();
    let mut cmd = Command::new(sibling(dir, SANDBOX_BIN)?);
    cmd.arg("--listen").arg(&args.sandbox_listen);
    plan.push(("sandbox", with_otlp(cmd, &args)));
    if !args.no_caldav {
        let mut cmd = Command::new(sibling(dir, CALDAV_BIN)?);
        // Locally, CalDAV servers on this machine (a Radicale to try
        // things with) are reachable; other private networks and metadata
        // addresses stay refused.
        cmd.arg("--listen")
            .arg(&args.caldav_listen)
            .arg("--allow-private-network")
            .arg("127.0.0.0/8,::1/128");
        links.adapter_flags(&mut cmd, "caldav");
        plan.push(("caldav", with_otlp(cmd, &args)));
    }
    if !args.no_google {
        let google_bin = sibling(dir, GOOGLE_BIN)?;
        let fake_bin = sibling(dir, FAKE_GOOGLE_BIN)?;
        let files = local_oauth(&args.data_dir, "google", LOCAL_CLIENT_ID)?;
        let callback = format!("http://{}/oauth/callback", args.oauth_callback_listen);
        let mut cmd = Command::new(fake_bin);
        cmd.arg("--listen")
            .arg(&args.fake_google_listen)
            .arg("--webhook-ca-file")
            .arg(&files.ca_file)
            .arg("--client")
            .arg(format!(
                "{LOCAL_CLIENT_ID}:{}:{callback}",
                files.client_secret_file.display()
            ))
            .arg("--user")
            .arg(LOCAL_GOOGLE_USER);
        plan.push(("fake-google", cmd));
        let fake = format!("http://{}", args.fake_google_listen);
        let mut cmd = Command::new(google_bin);
        cmd.arg("--listen")
            .arg(&args.google_listen)
            .arg("--client-id-file")
            .arg(&files.client_id_file)
            .arg("--client-secret-file")
            .arg(&files.client_secret_file)
            .arg("--auth-url")
            .arg(format!("{fake}/o/oauth2/v2/auth"))
            .arg("--token-url")
            .arg(format!("{fake}/token"))
            .arg("--revoke-url")
            .arg(format!("{fake}/revoke"))
            .arg("--api-base-url")
            .arg(format!("{fake}/calendar/v3/"))
            .arg("--webhook-listen")
            .arg(&args.google_webhook_listen)
            .arg("--webhook-public-url")
            .arg(format!("https://{}/", args.google_webhook_listen))
            .arg("--webhook-tls-cert")
            .arg(&files.cert_file)
            .arg("--webhook-tls-key")
            .arg(&files.key_file)
            // Notifications go to this stack's scheduler and nowhere else.
            .arg("--allowed-callback-endpoint")
            .arg(format!("http://{}", args.listen));
        links.adapter_flags(&mut cmd, "google");
        plan.push(("google", with_otlp(cmd, &args)));
    }
    if !args.no_microsoft {
        let microsoft_bin = sibling(dir, MICROSOFT_BIN)?;
        let fake_bin = sibling(dir, FAKE_GRAPH_BIN)?;
        let files = local_oauth(&args.data_dir, "microsoft", LOCAL_MICROSOFT_CLIENT_ID)?;
        let callback = format!("http://{}/oauth/callback", args.oauth_callback_listen);
        let mut cmd = Command::new(fake_bin);
        cmd.arg("--listen")
            .arg(&args.fake_graph_listen)
            .arg("--webhook-ca-file")
            .arg(&files.ca_file)
            .arg("--client-with-secret-file")
            .arg(format!(
                "{LOCAL_MICROSOFT_CLIENT_ID}:{}:{callback}",
                files.client_secret_file.display()
            ))
            .arg("--user")
            .arg(LOCAL_MICROSOFT_USER);
        plan.push(("fake-graph", cmd));
        let fake = format!("http://{}", args.fake_graph_listen);
        let mut cmd = Command::new(microsoft_bin);
        cmd.arg("--listen")
            .arg(&args.microsoft_listen)
            .arg("--client-id-file")
            .arg(&files.client_id_file)
            .arg("--client-secret-file")
            .arg(&files.client_secret_file)
            .arg("--authority-url")
            .arg(&fake)
            .arg("--graph-base-url")
            .arg(format!("{fake}/v1.0/"))
            .arg("--webhook-listen")
            .arg(&args.microsoft_webhook_listen)
            .arg("--webhook-public-url")
            .arg(format!("https://{}/", args.microsoft_webhook_listen))
            .arg("--webhook-tls-cert")
            .arg(&files.cert_file)
            .arg("--webhook-tls-key")
            .arg(&files.key_file)
            // Notifications go to this stack's scheduler and nowhere else.
            .arg("--allowed-callback-endpoint")
            .arg(format!("http://{}", args.listen));
        links.adapter_flags(&mut cmd, "microsoft");
        plan.push(("microsoft", with_otlp(cmd, &args)));
    }

    let mut started: Vec<Service> = Vec::new();
    for (name, cmd) in plan {
        match start_or_stop(name, cmd).await {
            Ok(Some(s)) => started.push(s),
            Ok(None) => {
                stop_all(&mut started).await;
                return Ok(());
            }
            Err(e) => {
                stop_all(&mut started).await;
                return Err(e);
            }
        }
    }

    let mut cmd = Command::new(&scheduler_bin);
    cmd.arg("--listen")
        .arg(&args.listen)
        .arg("--data-dir")
        .arg(&args.data_dir)
        .arg("--mode")
        .arg("local");
    links.scheduler_flags(&mut cmd);
    for s in &started {
        let scheme = if MTLS_ADAPTERS.contains(&s.name) {
            "https"
        } else {
            "http"
        };
        let url = format!("{scheme}://{}", s.addr);
        match s.name {
            "sandbox" => {
                cmd.arg("--adapter").arg(format!("sandbox={url}"));
            }
            "caldav" => {
                cmd.arg("--adapter")
                    .arg(format!("caldav={url}"))
                    .arg("--adapter")
                    .arg(format!("icloud={url}"));
            }
            "google" | "microsoft" => {
                cmd.arg("--adapter").arg(format!("{}={url}", s.name));
            }
            _ => {}
        }
    }
    if started
        .iter()
        .any(|s| matches!(s.name, "google" | "microsoft"))
    {
        cmd.arg("--oauth-callback-listen")
            .arg(&args.oauth_callback_listen);
    }
    match start_or_stop("scheduler", with_otlp(cmd, &args)).await {
        Ok(Some(s)) => started.push(s),
        Ok(None) => {
            stop_all(&mut started).await;
            return Ok(());
        }
        Err(e) => {
            stop_all(&mut started).await;
            return Err(e);
        }
    }

    println!("{}", summary(&args, &started));

    let died = {
        let waits = started.iter_mut().map(|s| {
            let name = s.name;
            Box::pin(async move { (name, s.child.wait().await) })
        });
        tokio::select! {
            _ = calbridge_runtime::shutdown_signal() => None,
            (first, _, _) = futures::future::select_all(waits) => Some(first),
        }
    };
    eprintln!("stopping calbridge");
    stop_all(&mut started).await;
    match died {
        None => Ok(()),
        Some((name, status)) => {
            let status = status
                .map(|s| s.to_string())
                .unwrap_or_else(|e| e.to_string());
            bail!("the {name} exited unexpectedly ({status}); see its log above")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listening_line_gives_the_address() {
        assert_eq!(
            parse_listening(
                r#"{"event":"listening","service":"calbridge-scheduler","addr":"127.0.0.1:50051"}"#
            ),
            Some("127.0.0.1:50051".into())
        );
        assert_eq!(parse_listening("starting up"), None);
        assert_eq!(parse_listening(r#"{"event":"stopping"}"#), None);
    }

    #[test]
    fn the_local_links_ca_is_made_once_with_private_files() {
        let dir = tempfile::tempdir().unwrap();
        let links = local_links(dir.path()).unwrap();
        let ca = std::fs::read(links.ca()).unwrap();
        for who in ["scheduler", "caldav", "google", "microsoft"] {
            assert!(
                links.cert(who).is_file() && links.key(who).is_file(),
                "{who}"
            );
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(links.key(who))
                    .unwrap()
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o777, 0o600, "{who}");
            }
        }
        // The adapters' certificates verify against the CA, for 127.0.0.1.
        let server = calbridge_runtime::tls::ServerTls::new(
            &links.cert("caldav"),
            &links.key("caldav"),
            Some(&links.ca()),
        );
        assert!(server.is_ok());
        assert!(calbridge_runtime::tls::ClientTls::new(
            &links.ca(),
            Some((&links.cert("scheduler"), &links.key("scheduler")))
        )
        .is_ok());
        let again = local_links(dir.path()).unwrap();
        assert_eq!(std::fs::read(again.ca()).unwrap(), ca, "made once");
    }

    #[test]
    fn a_missing_binary_suggests_building_the_workspace() {
        let e = sibling(Path::new("/nonexistent"), SCHEDULER_BIN).unwrap_err();
        assert!(
            e.to_string().contains("cargo build --workspace --bins"),
            "{e}"
        );
    }
}
