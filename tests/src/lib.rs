//! Harness for calbridge's end-to-end tests: starts the real binaries as
//! separate processes on loopback ports, with a real store on disk, learns
//! their ports from the line each prints when ready, and gives typed gRPC
//! clients. Every wait is a bounded poll of a condition, never a blind sleep.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use calbridge::pb;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// The directory the workspace's binaries are built into (next to `deps/`
/// where test executables live).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().expect("deps dir");
    let dir = if dir.ends_with("deps") {
        dir.parent().expect("profile dir")
    } else {
        dir
    };
    dir.to_path_buf()
}

/// The path of one workspace binary; panics with a hint when missing.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.is_file(),
        "{} is missing: build the binaries first with `cargo build --workspace --bins`",
        p.display()
    );
    p
}

/// A port that was free a moment ago, for a child process that must listen
/// on a known port (a restarted scheduler keeps its address).
///
/// Chosen at random below the kernel's ephemeral range: a port the kernel
/// handed out (`bind(0)`) is handed out again to the next outgoing
/// connection of any test running in parallel, which then takes it before
/// the child can listen on it.
pub fn free_port() -> u16 {
    use rand::Rng;
    let (low, high) = (10_000u16, ephemeral_floor().clamp(12_000, 32_768));
    let mut rng = rand::thread_rng();
    for _ in 0..1000 {
        let port = rng.gen_range(low..high);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {low}..{high}")
}

/// The lowest port of the kernel's ephemeral range (32768 when unknown).
fn ephemeral_floor() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// Polls `f` every 20 ms until it returns `Some`, or fails after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A running child process of ours; killed when dropped.
pub struct Proc {
    /// The child.
    pub child: Child,
    /// The address it announced.
    pub addr: SocketAddr,
    /// Where it serves Prometheus metrics, when started with
    /// `--metrics-listen` (announced before the gRPC address).
    pub metrics: Option<SocketAddr>,
    /// Everything it wrote on stderr so far.
    pub log: Arc<Mutex<String>>,
}

impl Proc {
    /// Starts `bin` with `args` and waits (up to 60 s) for its
    /// `{"event":"listening"}` line.
    pub async fn start(bin_name: &str, args: &[String]) -> Result<Proc> {
        Self::start_with_env(bin_name, args, &[]).await
    }

    /// Like [`Proc::start`], with extra environment variables.
    pub async fn start_with_env(
        bin_name: &str,
        args: &[String],
        env: &[(&str, &str)],
    ) -> Result<Proc> {
        let mut child = Command::new(bin(bin_name))
            .args(args)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {bin_name}"))?;
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        let log2 = log.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                let mut g = log2.lock().expect("log lock");
                g.push_str(&l);
                g.push('\n');
            }
        });
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut metrics = None;
        let addr = tokio::time::timeout(Duration::from_secs(60), async {
            while let Ok(Some(l)) = lines.next_line().await {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&l) {
                    let addr = v["addr"]
                        .as_str()
                        .and_then(|a| a.parse::<SocketAddr>().ok());
                    if v["event"] == "metrics" {
                        metrics = addr;
                    } else if v["event"] == "listening" {
                        return addr;
                    }
                }
            }
            None
        })
        .await
        .ok()
        .flatten();
        match addr {
            Some(addr) => {
                tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
                Ok(Proc {
                    child,
                    addr,
                    metrics,
                    log,
                })
            }
            None => {
                let _ = child.kill().await;
                Err(anyhow!(
                    "{bin_name} did not announce its address; its log:\n{}",
                    log.lock().expect("log lock")
                ))
            }
        }
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Kills the process with SIGKILL (no clean shutdown) and waits for it.
    pub async fn kill9(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Sends SIGTERM and waits (up to 20 s) for a clean exit; returns whether
    /// it exited successfully.
    pub async fn terminate(&mut self) -> Result<bool> {
        let pid = self.child.id().ok_or_else(|| anyhow!("already exited"))?;
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()?;
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await??;
        Ok(status.success())
    }
}

/// An interceptor adding `authorization: Bearer <token>`.
#[derive(Clone)]
pub struct Bearer(pub Option<String>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(t) = &self.0 {
            let v: MetadataValue<_> = format!("Bearer {t}")
                .parse()
                .map_err(|_| tonic::Status::invalid_argument("bad token"))?;
            req.metadata_mut().insert("authorization", v);
        }
        Ok(req)
    }
}

/// A scheduler client authenticated with a tenant key.
pub type SchedulerClient =
    pb::scheduler_client::SchedulerClient<InterceptedService<Channel, Bearer>>;
/// An admin client.
pub type AdminClient = pb::admin_client::AdminClient<InterceptedService<Channel, Bearer>>;
/// A sandbox control client.
pub type SandboxClient = pb::sandbox_control_client::SandboxControlClient<Channel>;

/// Connects a channel to `url`.
pub async fn channel(url: &str) -> Result<Channel> {
    Ok(Channel::from_shared(url.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?)
}

/// The sandbox adapter and the scheduler, started as separate processes
/// over one data directory.
pub struct Stack {
    /// Data directory (store, dev master key, admin token).
    pub dir: tempfile::TempDir,
    /// The sandbox adapter.
    pub sandbox: Proc,
    /// The scheduler.
    pub scheduler: Proc,
    /// The scheduler's port (kept across restarts).
    pub scheduler_port: u16,
    /// Extra scheduler flags, kept across restarts.
    pub scheduler_extra: Vec<String>,
    /// Environment of restarted schedulers (say, `RUST_LOG` to count what
    /// the scheduler does after a restart).
    pub scheduler_env: Vec<(String, String)>,
}

impl Stack {
    /// Starts the sandbox adapter, then the scheduler in local mode.
    pub async fn start() -> Result<Stack> {
        Self::start_with(&[], &[]).await
    }

    /// Starts the stack with extra flags and environment for both processes.
    pub async fn start_with(extra: &[String], env: &[(&str, &str)]) -> Result<Stack> {
        let dir = tempfile::tempdir()?;
        let mut args = vec!["--listen".to_string(), "127.0.0.1:0".to_string()];
        args.extend_from_slice(extra);
        let sandbox = Proc::start_with_env("calbridge-adapter-sandbox", &args, env).await?;
        let scheduler_port = free_port();
        let scheduler =
            Self::start_scheduler(dir.path(), scheduler_port, &sandbox.url(), extra, env).await?;
        Ok(Stack {
            dir,
            sandbox,
            scheduler,
            scheduler_port,
            scheduler_extra: Vec::new(),
            scheduler_env: Vec::new(),
        })
    }

    /// Starts the sandbox adapter, then the scheduler with extra flags of
    /// its own (more `--adapter PROVIDER=URL`, OAuth settings, ...), which
    /// [`Stack::restart_scheduler`] keeps.
    pub async fn start_with_scheduler_flags(scheduler_extra: &[String]) -> Result<Stack> {
        Self::start_with_scheduler_flags_on(free_port(), scheduler_extra).await
    }

    /// Like [`Stack::start_with_scheduler_flags`], with the scheduler on
    /// `scheduler_port` of the loopback (known to adapters started before
    /// it, such as a Google adapter that forwards push only to it).
    pub async fn start_with_scheduler_flags_on(
        scheduler_port: u16,
        scheduler_extra: &[String],
    ) -> Result<Stack> {
        let dir = tempfile::tempdir()?;
        let args = vec!["--listen".to_string(), "127.0.0.1:0".to_string()];
        let sandbox = Proc::start("calbridge-adapter-sandbox", &args).await?;
        let scheduler = Self::start_scheduler(
            dir.path(),
            scheduler_port,
            &sandbox.url(),
            scheduler_extra,
            &[],
        )
        .await?;
        Ok(Stack {
            dir,
            sandbox,
            scheduler,
            scheduler_port,
            scheduler_extra: scheduler_extra.to_vec(),
            scheduler_env: Vec::new(),
        })
    }

    async fn start_scheduler(
        dir: &Path,
        port: u16,
        sandbox_url: &str,
        extra: &[String],
        env: &[(&str, &str)],
    ) -> Result<Proc> {
        let mut args = vec![
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--data-dir".into(),
            dir.display().to_string(),
            "--mode".into(),
            "local".into(),
            "--adapter".into(),
            format!("sandbox={sandbox_url}"),
        ];
        args.extend_from_slice(extra);
        Proc::start_with_env("calbridge-scheduler", &args, env).await
    }

    /// Starts the scheduler again on the same port and data directory (after
    /// it was killed or stopped).
    pub async fn restart_scheduler(&mut self) -> Result<()> {
        let mut last = None;
        let env: Vec<(&str, &str)> = self
            .scheduler_env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        for _ in 0..50 {
            match Self::start_scheduler(
                self.dir.path(),
                self.scheduler_port,
                &self.sandbox.url(),
                &self.scheduler_extra,
                &env,
            )
            .await
            {
                Ok(p) => {
                    self.scheduler = p;
                    return Ok(());
                }
                // The port may still be held for a moment after a kill.
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(last.unwrap_or_else(|| anyhow!("scheduler did not restart")))
    }

    /// The scheduler's store directory (open it only while the scheduler
    /// is stopped).
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// The admin token the scheduler generated in local mode.
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("admin.token"))
            .expect("admin.token written by the scheduler")
            .trim()
            .to_string()
    }

    /// An admin client.
    pub async fn admin(&self) -> Result<AdminClient> {
        Ok(pb::admin_client::AdminClient::with_interceptor(
            channel(&self.scheduler.url()).await?,
            Bearer(Some(self.admin_token())),
        ))
    }

    /// A scheduler client with `key` (or none).
    pub async fn client(&self, key: Option<&str>) -> Result<SchedulerClient> {
        Ok(pb::scheduler_client::SchedulerClient::with_interceptor(
            channel(&self.scheduler.url()).await?,
            Bearer(key.map(str::to_string)),
        ))
    }

    /// A sandbox control client.
    pub async fn sandbox(&self) -> Result<SandboxClient> {
        Ok(pb::sandbox_control_client::SandboxControlClient::new(
            channel(&self.sandbox.url()).await?,
        ))
    }

    /// A client of a new tenant `name`, with its API key.
    pub async fn tenant_client(&self, name: &str) -> Result<SchedulerClient> {
        let (_, key) = self.tenant(name).await?;
        self.client(Some(&key)).await
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
                label: "tests".into(),
            })
            .await?
            .into_inner();
        Ok((t.tenant_id, k.api_key))
    }

    /// Connects a sandbox account with read-write access and waits until
    /// its calendars finished their initial sync; returns (account id,
    /// primary calendar id).
    pub async fn sandbox_account(
        &self,
        client: &mut SchedulerClient,
        user: &str,
        password: &str,
    ) -> Result<(String, String)> {
        let a = client
            .connect_password_account(pb::ConnectPasswordAccountRequest {
                provider: pb::Provider::Sandbox as i32,
                server_url: String::new(),
                username: user.into(),
                password: password.into(),
                access_level: pb::AccessLevel::ReadWrite as i32,
            })
            .await?
            .into_inner();
        let cals = client
            .list_calendars(pb::ListCalendarsRequest {
                account_id: a.account_id.clone(),
            })
            .await?
            .into_inner()
            .calendars;
        let primary = cals
            .iter()
            .find(|c| c.primary)
            .ok_or_else(|| anyhow!("no primary calendar"))?
            .calendar_id
            .clone();
        wait_synced(client, &a.account_id).await?;
        Ok((a.account_id, primary))
    }
}

/// Waits until no synced calendar of the account is in its initial sync.
pub async fn wait_synced(client: &mut SchedulerClient, account_id: &str) -> Result<()> {
    wait_initial_sync(
        client,
        account_id,
        Duration::from_secs(30),
        Duration::from_millis(20),
    )
    .await
}

/// The sync status of each calendar of an account.
pub async fn sync_status(
    client: &mut SchedulerClient,
    account_id: &str,
) -> Result<Vec<pb::CalendarSyncStatus>> {
    Ok(client
        .get_sync_status(pb::GetSyncStatusRequest {
            account_id: account_id.to_string(),
        })
        .await?
        .into_inner()
        .calendars)
}

/// The window most end-to-end tests look through: from a day ago to 60
/// days ahead.
pub fn near_window() -> pb::TimeWindow {
    let now = chrono::Utc::now();
    pb::TimeWindow {
        start: Some(calbridge::time::to_timestamp(
            now - chrono::Duration::days(1),
        )),
        end: Some(calbridge::time::to_timestamp(
            now + chrono::Duration::days(60),
        )),
    }
}

/// Every mirrored event of a calendar overlapping `window`, by start.
pub async fn list_events(
    client: &mut SchedulerClient,
    account_id: &str,
    calendar_id: &str,
    window: pb::TimeWindow,
) -> Result<Vec<pb::Event>> {
    let mut out = Vec::new();
    let mut page_token = String::new();
    loop {
        let r = client
            .list_events(pb::ListEventsRequest {
                account_id: account_id.to_string(),
                calendar_id: calendar_id.to_string(),
                window: Some(window),
                page_size: 1000,
                page_token: page_token.clone(),
            })
            .await?
            .into_inner();
        out.extend(r.events);
        if r.next_page_token.is_empty() {
            return Ok(out);
        }
        page_token = r.next_page_token;
    }
}

/// The accounts the client's tenant holds (one page of up to 1000).
pub async fn accounts(client: &mut SchedulerClient) -> Result<Vec<pb::Account>> {
    Ok(client
        .list_accounts(pb::ListAccountsRequest {
            page_size: 1000,
            page_token: String::new(),
        })
        .await?
        .into_inner()
        .accounts)
}

/// A calendar's last successful sync in ms since the epoch (0 for never).
pub fn last_success_ms(s: &pb::CalendarSyncStatus) -> i64 {
    s.last_success
        .as_ref()
        .and_then(calbridge::time::from_timestamp)
        .map(|t| t.timestamp_millis())
        .unwrap_or(0)
}

/// Waits (polling every `every`) until every calendar of the account left
/// its initial sync; like [`wait_synced`] with a chosen timeout.
pub async fn wait_initial_sync(
    client: &mut SchedulerClient,
    account_id: &str,
    timeout: Duration,
    every: Duration,
) -> Result<()> {
    wait_status(
        client,
        account_id,
        timeout,
        every,
        |s| !s.is_empty() && s.iter().all(|c| c.state != pb::SyncState::Initial as i32),
        "initial sync not done",
    )
    .await
}

/// Polls the account's sync status every `every` until `done` accepts it;
/// fails with `what` and the last status after `timeout`.
async fn wait_status(
    client: &mut SchedulerClient,
    account_id: &str,
    timeout: Duration,
    every: Duration,
    done: impl Fn(&[pb::CalendarSyncStatus]) -> bool,
    what: &str,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let s = sync_status(client, account_id).await?;
        if done(&s) {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{what} within {timeout:?}: {s:?}");
        }
        tokio::time::sleep(every).await;
    }
}

/// Waits until every synced calendar of the account finished a successful
/// sync after `after_ms` (ms since the epoch), polling every `every`.
pub async fn wait_synced_after(
    client: &mut SchedulerClient,
    account_id: &str,
    after_ms: i64,
    timeout: Duration,
    every: Duration,
) -> Result<()> {
    wait_synced_where(client, account_id, |_| true, after_ms, timeout, every).await
}

/// [`wait_synced_after`] for the synced calendars `covered` accepts.
async fn wait_synced_where(
    client: &mut SchedulerClient,
    account_id: &str,
    covered: impl Fn(&pb::CalendarSyncStatus) -> bool,
    after_ms: i64,
    timeout: Duration,
    every: Duration,
) -> Result<()> {
    let done = |s: &[pb::CalendarSyncStatus]| {
        let mut synced = s
            .iter()
            .filter(|c| c.state != pb::SyncState::Disabled as i32 && covered(c))
            .peekable();
        synced.peek().is_some() && synced.all(|c| last_success_ms(c) > after_ms)
    };
    let what = format!("no sync finished after {after_ms}");
    wait_status(client, account_id, timeout, every, done, &what).await
}

/// SyncNow for `calendar_id` (empty: the whole account), then waits until
/// each synced calendar it covers finished a sync that started after this
/// call (so it saw every change made at the provider before it).
pub async fn sync_now_and_wait(
    client: &mut SchedulerClient,
    account_id: &str,
    calendar_id: &str,
) -> Result<()> {
    let covered =
        |s: &pb::CalendarSyncStatus| calendar_id.is_empty() || s.calendar_id == calendar_id;
    let before = sync_status(client, account_id)
        .await?
        .iter()
        .filter(|s| covered(s))
        .map(last_success_ms)
        .max()
        .unwrap_or(0)
        .max(chrono::Utc::now().timestamp_millis());
    client
        .sync_now(pb::SyncNowRequest {
            account_id: account_id.to_string(),
            calendar_id: calendar_id.to_string(),
        })
        .await?;
    wait_synced_where(
        client,
        account_id,
        covered,
        before,
        Duration::from_secs(30),
        Duration::from_millis(20),
    )
    .await
}

/// Waits for a change after `cursor` matching `pred` (read with
/// ListChanges); returns it.
pub async fn next_change(
    c: &mut SchedulerClient,
    cursor: &str,
    pred: impl Fn(&pb::Change) -> bool,
) -> Result<pb::Change> {
    eventually(Duration::from_secs(30), "a change on the feed", || {
        let mut c = c.clone();
        let cursor = cursor.to_string();
        let pred = &pred;
        async move {
            let r = c
                .list_changes(pb::ListChangesRequest {
                    cursor,
                    page_size: 1000,
                })
                .await
                .ok()?
                .into_inner();
            r.changes.into_iter().find(|ch| pred(ch))
        }
    })
    .await
}

/// Every change of the tenant after `cursor`.
pub async fn changes_after(client: &mut SchedulerClient, cursor: &str) -> Result<Vec<pb::Change>> {
    let mut out = Vec::new();
    let mut cursor = cursor.to_string();
    loop {
        let r = client
            .list_changes(pb::ListChangesRequest {
                cursor: cursor.clone(),
                page_size: 1000,
            })
            .await?
            .into_inner();
        let n = r.changes.len();
        if let Some(last) = r.changes.last() {
            cursor = last.cursor.clone();
        }
        out.extend(r.changes);
        if n < 1000 {
            return Ok(out);
        }
    }
}

/// The tenant's newest change cursor.
pub async fn change_cursor(client: &mut SchedulerClient) -> Result<String> {
    Ok(client
        .get_change_cursor(pb::GetChangeCursorRequest {})
        .await?
        .into_inner()
        .cursor)
}

/// A timed event from `start` lasting `minutes`.
pub fn timed_event(title: &str, start: chrono::DateTime<chrono::Utc>, minutes: i64) -> pb::Event {
    pb::Event {
        title: title.into(),
        start: Some(calbridge::time::instant(start, "Europe/London")),
        end: Some(calbridge::time::instant(
            start + chrono::Duration::minutes(minutes),
            "Europe/London",
        )),
        ..Default::default()
    }
}

/// True when `needle` occurs anywhere in the files under `dir`.
pub fn dir_contains(dir: &Path, needle: &[u8]) -> Result<bool> {
    for entry in std::fs::read_dir(dir)? {
        let p = entry?.path();
        if p.is_dir() {
            if dir_contains(&p, needle)? {
                return Ok(true);
            }
        } else {
            let bytes = std::fs::read(&p)?;
            if bytes.windows(needle.len()).any(|w| w == needle) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Opens the store of a stopped scheduler whose data directory is
/// `data_dir` (local mode: its master key in `master.key` there), with the
/// id key its keyring holds.
pub fn open_store(data_dir: &Path) -> Result<calbridge_scheduler::store::Store> {
    use calbridge_scheduler::crypto::{MasterKey, MasterKeys};
    use calbridge_scheduler::keyring::{FileKeyring, KeyVault};
    let raw = std::fs::read(data_dir.join("master.key")).context("reading master.key")?;
    let key = calbridge_scheduler::secrets::decode_key(&raw).context("master.key holds a key")?;
    let vault = FileKeyring::open(data_dir, MasterKeys::new(MasterKey::from_bytes(&key)?))?;
    Ok(calbridge_scheduler::store::Store::open(
        &data_dir.join("store"),
        vault.id_cipher()?,
    )?)
}

pub mod caldav;
pub mod conformance;
pub mod fault_proxy;
pub mod figures;
pub mod google;
pub mod hostile;
pub mod http1;
pub mod icloud;
pub mod invariants;
pub mod microsoft;
pub mod prism;
pub mod prometheus;
pub mod proxied;
pub mod scripted;
pub mod soak;
pub mod tls;
