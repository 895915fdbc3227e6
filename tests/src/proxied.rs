//! A calbridge stack whose adapters reach their providers through
//! [`FaultProxy`]s, with every calbridge process on a fixed port so that it
//! can be killed and restarted in place: a real Radicale behind the CalDAV
//! adapter process, the fake Google (in this process, so it survives every
//! kill; its push goes through the Google adapter's HTTPS webhook) behind
//! the Google adapter process, and the scheduler over a data directory that
//! outlives it. Used by the crash soak and the fault-injection test.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use calbridge::pb;
use calbridge_fake_google::control::{ClientRegistration, NewUser};
use calbridge_fake_google::{Control, FakeConfig, FakeHandle};

use crate::caldav::{DavServer, ServerKind, LOOPBACK_SERVERS};
use crate::fault_proxy::FaultProxy;
use crate::google::{dev_tls, CLIENT_ID, CLIENT_SECRET};
use crate::invariants::ProviderCalendar;
use crate::{accounts, channel, free_port, wait_synced, Bearer, Proc, SchedulerClient};
use rand::Rng;

/// A free loopback port below the kernel's ephemeral port range, for a
/// process that is killed and restarted on it. A port from
/// [`free_port`] lies inside that range, so while its process is down any
/// outgoing connection on the machine may take it as its local port, and
/// the restart finds it in use; ports below the range are never handed
/// out that way.
pub fn stable_port() -> u16 {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    if low > 10_001 {
        let mut rng = rand::thread_rng();
        for _ in 0..1000 {
            let port = rng.gen_range(10_000..low);
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    free_port()
}

/// A calbridge process of the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Process {
    /// The scheduler.
    Scheduler,
    /// The CalDAV adapter.
    Caldav,
    /// The Google adapter.
    Google,
}

impl Process {
    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Process::Scheduler => "scheduler",
            Process::Caldav => "caldav adapter",
            Process::Google => "google adapter",
        }
    }
}

/// Knobs of [`ProxiedStack::start`].
#[derive(Clone)]
pub struct ProxiedOptions {
    /// Seeds the proxies' fault choices.
    pub seed: u64,
    /// Extra CalDAV adapter flags (say, `--http-timeout-seconds 2`).
    pub caldav_flags: Vec<String>,
    /// Extra Google adapter flags.
    pub google_flags: Vec<String>,
    /// The scheduler's TOML configuration.
    pub scheduler_toml: String,
    /// Google users to create (each with a primary calendar).
    pub google_users: Vec<String>,
    /// The fake Google's configuration (CA and validation are set here).
    pub fake: FakeConfig,
    /// `RUST_LOG` of the calbridge processes.
    pub log_filter: String,
}

impl Default for ProxiedOptions {
    fn default() -> Self {
        ProxiedOptions {
            seed: 0,
            caldav_flags: Vec::new(),
            google_flags: Vec::new(),
            scheduler_toml: String::new(),
            google_users: Vec::new(),
            fake: FakeConfig::default(),
            log_filter: "info".into(),
        }
    }
}

/// The running stack.
pub struct ProxiedStack {
    /// Scheduler data directory, its configuration, OAuth client and TLS
    /// files.
    pub dir: tempfile::TempDir,
    /// Radicale.
    pub dav: Arc<DavServer>,
    /// The proxy between the CalDAV adapter and Radicale.
    pub dav_proxy: FaultProxy,
    /// The fake Google (dropping it stops it).
    pub fake: FakeHandle,
    /// Its control API.
    pub control: Control,
    /// The proxy between the Google adapter and the fake's Calendar API.
    pub google_proxy: FaultProxy,
    /// The calbridge processes.
    pub procs: BTreeMap<Process, Proc>,
    /// What each process logged in its run before the current one.
    pub previous_logs: BTreeMap<Process, String>,
    args: BTreeMap<Process, (&'static str, Vec<String>)>,
    log_filter: String,
}

impl ProxiedStack {
    /// Starts Radicale, the fake Google, both proxies, both adapters and
    /// the scheduler.
    pub async fn start(opts: ProxiedOptions) -> Result<ProxiedStack> {
        let dir = tempfile::tempdir()?;
        let dav = Arc::new(DavServer::start(ServerKind::Radicale).await?);
        let dav_proxy = FaultProxy::start(&dav.base, opts.seed).await?;

        let ca = dev_tls(dir.path())?;
        let mut fake_config = opts.fake.clone();
        fake_config.webhook_ca_pem = Some(ca);
        fake_config.validate_responses = true;
        let fake = calbridge_fake_google::serve(fake_config).await?;
        let control = fake.control();
        let fake_base = fake.base_url();
        let google_proxy = FaultProxy::start(&fake_base, opts.seed ^ 0x5eed).await?;
        for user in &opts.google_users {
            control
                .add_user_with(&NewUser {
                    email: user.clone(),
                    time_zone: Some("Europe/London".into()),
                })
                .await?;
        }

        let path = |name: &str| dir.path().join(name).display().to_string();
        std::fs::write(dir.path().join("client_id"), CLIENT_ID)?;
        std::fs::write(dir.path().join("client_secret"), CLIENT_SECRET)?;
        std::fs::write(dir.path().join("scheduler.toml"), &opts.scheduler_toml)?;
        let scheduler_port = stable_port();
        let callback_listen = format!("127.0.0.1:{}", stable_port());
        let callback_url = format!("http://{callback_listen}/oauth/callback");
        control
            .add_client(&ClientRegistration {
                client_id: CLIENT_ID.into(),
                client_secret: CLIENT_SECRET.into(),
                redirect_uris: vec![callback_url],
            })
            .await?;

        let caldav_port = stable_port();
        let mut caldav_args: Vec<String> = vec![
            "--listen".into(),
            format!("127.0.0.1:{caldav_port}"),
            "--allow-private-network".into(),
            LOOPBACK_SERVERS.into(),
        ];
        caldav_args.extend(opts.caldav_flags.iter().cloned());

        let google_port = stable_port();
        let webhook_port = stable_port();
        let mut google_args: Vec<String> = vec![
            "--listen".into(),
            format!("127.0.0.1:{google_port}"),
            "--client-id-file".into(),
            path("client_id"),
            "--client-secret-file".into(),
            path("client_secret"),
            "--auth-url".into(),
            format!("{fake_base}/o/oauth2/v2/auth"),
            "--token-url".into(),
            format!("{fake_base}/token"),
            "--revoke-url".into(),
            format!("{fake_base}/revoke"),
            "--api-base-url".into(),
            format!("{}/calendar/v3/", google_proxy.base),
            "--allowed-callback-endpoint".into(),
            format!("http://127.0.0.1:{scheduler_port}"),
            "--webhook-listen".into(),
            format!("127.0.0.1:{webhook_port}"),
            "--webhook-public-url".into(),
            format!("https://127.0.0.1:{webhook_port}/google/push"),
            "--webhook-tls-cert".into(),
            path("webhook.crt"),
            "--webhook-tls-key".into(),
            path("webhook.key"),
        ];
        google_args.extend(opts.google_flags.iter().cloned());

        let scheduler_args: Vec<String> = vec![
            "--listen".into(),
            format!("127.0.0.1:{scheduler_port}"),
            "--data-dir".into(),
            dir.path().join("data").display().to_string(),
            "--mode".into(),
            "local".into(),
            "--config".into(),
            path("scheduler.toml"),
            "--adapter".into(),
            format!("caldav=http://127.0.0.1:{caldav_port}"),
            "--adapter".into(),
            format!("google=http://127.0.0.1:{google_port}"),
            "--oauth-callback-listen".into(),
            callback_listen,
        ];
        let args = BTreeMap::from([
            (Process::Caldav, ("calbridge-adapter-caldav", caldav_args)),
            (Process::Google, ("calbridge-adapter-google", google_args)),
            (Process::Scheduler, ("calbridge-scheduler", scheduler_args)),
        ]);
        let mut stack = ProxiedStack {
            dir,
            dav,
            dav_proxy,
            fake,
            control,
            google_proxy,
            procs: BTreeMap::new(),
            previous_logs: BTreeMap::new(),
            args,
            log_filter: opts.log_filter,
        };
        for p in [Process::Caldav, Process::Google, Process::Scheduler] {
            stack.restart(p).await?;
        }
        Ok(stack)
    }

    /// Kills `p` with SIGKILL.
    pub async fn kill(&mut self, p: Process) {
        if let Some(proc) = self.procs.get_mut(&p) {
            proc.kill9().await;
        }
    }

    /// Starts `p` (again) on its port; retries while the port is still
    /// held after a kill.
    pub async fn restart(&mut self, p: Process) -> Result<()> {
        let (bin, args) = self.args.get(&p).cloned().expect("every process has args");
        let env = [("RUST_LOG", self.log_filter.as_str())];
        let mut last = None;
        for _ in 0..50 {
            match Proc::start_with_env(bin, &args, &env).await {
                Ok(proc) => {
                    if let Some(old) = self.procs.insert(p, proc) {
                        let log = old.log.lock().map(|l| l.clone()).unwrap_or_default();
                        self.previous_logs.insert(p, log);
                    }
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(last.unwrap_or_else(|| anyhow!("{} did not restart", p.name())))
    }

    /// Stops the scheduler cleanly (SIGTERM); its store can be opened then.
    pub async fn stop_scheduler(&mut self) -> Result<()> {
        let proc = self
            .procs
            .get_mut(&Process::Scheduler)
            .ok_or_else(|| anyhow!("no scheduler"))?;
        if !proc.terminate().await? {
            bail!("the scheduler did not exit cleanly");
        }
        Ok(())
    }

    /// The scheduler's store directory.
    pub fn store_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("data").join("store")
    }

    /// The scheduler's URL.
    pub fn scheduler_url(&self) -> String {
        self.procs[&Process::Scheduler].url()
    }

    /// What `p` logged so far in its current run.
    pub fn log_of(&self, p: Process) -> String {
        self.procs
            .get(&p)
            .and_then(|proc| proc.log.lock().ok().map(|l| l.clone()))
            .unwrap_or_default()
    }

    /// Writes every process's logs (this run's and the one before), the
    /// proxies' request logs and Radicale's log into `dir`, each file name
    /// starting with `prefix`.
    pub fn dump_logs(&self, dir: &std::path::Path, prefix: &str) -> Result<()> {
        std::fs::create_dir_all(dir)?;
        for p in [Process::Scheduler, Process::Caldav, Process::Google] {
            let name = p.name().replace(' ', "-");
            std::fs::write(dir.join(format!("{prefix}{name}.log")), self.log_of(p))?;
            if let Some(old) = self.previous_logs.get(&p) {
                std::fs::write(dir.join(format!("{prefix}{name}-before.log")), old)?;
            }
        }
        let requests = |log: Vec<crate::fault_proxy::Logged>| {
            log.iter().map(|l| format!("{l:?}\n")).collect::<String>()
        };
        std::fs::write(
            dir.join(format!("{prefix}caldav-requests.log")),
            requests(self.dav_proxy.log()),
        )?;
        std::fs::write(
            dir.join(format!("{prefix}google-requests.log")),
            requests(self.google_proxy.log()),
        )?;
        std::fs::write(dir.join(format!("{prefix}radicale.log")), self.dav.log())?;
        Ok(())
    }

    /// Creates a tenant; returns (tenant id, API key).
    pub async fn tenant(&self, name: &str) -> Result<(String, String)> {
        let token = std::fs::read_to_string(self.dir.path().join("data").join("admin.token"))
            .context("admin.token written by the scheduler")?;
        let mut admin = pb::admin_client::AdminClient::with_interceptor(
            channel(&self.scheduler_url()).await?,
            Bearer(Some(token.trim().to_string())),
        );
        let t = admin
            .create_tenant(pb::CreateTenantRequest { name: name.into() })
            .await?
            .into_inner();
        let k = admin
            .create_api_key(pb::CreateApiKeyRequest {
                tenant_id: t.tenant_id.clone(),
                label: "soak".into(),
            })
            .await?
            .into_inner();
        Ok((t.tenant_id, k.api_key))
    }

    /// A scheduler client with a tenant's API key.
    pub async fn client(&self, key: &str) -> Result<SchedulerClient> {
        Ok(pb::scheduler_client::SchedulerClient::with_interceptor(
            channel(&self.scheduler_url()).await?,
            Bearer(Some(key.to_string())),
        ))
    }

    /// Radicale's test calendar, read directly.
    pub fn dav_calendar(&self) -> ProviderCalendar {
        ProviderCalendar::Caldav {
            base: self.dav.base.clone(),
            username: self.dav.username.clone(),
            password: self.dav.password.clone(),
            href: self.dav.calendar.clone(),
        }
    }

    /// A Google user's primary calendar, read through the control API.
    pub fn google_calendar(&self, user: &str) -> ProviderCalendar {
        ProviderCalendar::Google {
            control: self.control.clone(),
            calendar: user.to_string(),
        }
    }

    /// What connecting accounts needs (cheap to clone into tasks).
    pub fn connector(&self) -> Connector {
        Connector {
            scheduler_url: self.scheduler_url(),
            server_url: format!("{}/", self.dav_proxy.base),
            username: self.dav.username.clone(),
            password: self.dav.password.clone(),
            calendar: self.dav.calendar.clone(),
        }
    }
}

/// Connects accounts to the stack's providers (the scheduler keeps its
/// port across restarts, so this stays valid).
#[derive(Clone)]
pub struct Connector {
    /// The scheduler's URL.
    pub scheduler_url: String,
    /// The CalDAV server URL accounts use (the proxy's).
    pub server_url: String,
    /// Radicale's user.
    pub username: String,
    /// Its password.
    pub password: String,
    /// Its calendar's href.
    pub calendar: String,
}

impl Connector {
    /// Connects Radicale's user (through the proxy) and waits for the
    /// initial sync; returns (account id, calendar id).
    pub async fn caldav(&self, c: &mut SchedulerClient) -> Result<(String, String)> {
        let a = c
            .connect_password_account(pb::ConnectPasswordAccountRequest {
                provider: pb::Provider::Caldav as i32,
                server_url: self.server_url.clone(),
                username: self.username.clone(),
                password: self.password.clone(),
                access_level: pb::AccessLevel::ReadWrite as i32,
            })
            .await?
            .into_inner();
        wait_synced(c, &a.account_id).await?;
        Ok((a.account_id, self.calendar.clone()))
    }

    /// Connects a Google user through BeginAuthorization, the fake's
    /// consent and the scheduler's HTTP callback, and waits for the initial
    /// sync; returns (account id, calendar id).
    pub async fn google(&self, c: &mut SchedulerClient, user: &str) -> Result<(String, String)> {
        let begun = c
            .begin_authorization(pb::BeginAuthorizationRequest {
                provider: pb::Provider::Google as i32,
                access_level: pb::AccessLevel::ReadWrite as i32,
                redirect_uri: String::new(),
                login_hint: user.into(),
                account_id: String::new(),
            })
            .await?
            .into_inner();
        let page = browse_consent(&begun.authorization_url).await?;
        let account = accounts(c)
            .await?
            .into_iter()
            .find(|a| {
                a.provider_account_id == user
                    && a.provider == pb::Provider::Google as i32
                    && a.status == pb::AccountStatus::Active as i32
            })
            .ok_or_else(|| anyhow!("no account after the callback; it said: {page}"))?;
        wait_synced(c, &account.account_id).await?;
        Ok((account.account_id, "primary".to_string()))
    }
}

/// The browser's part of a consent: opens `url` at the fake (which
/// approves), follows its redirect to the scheduler's callback, and returns
/// where the callback sent the browser (or its page).
async fn browse_consent(url: &str) -> Result<String> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()?;
    let location = |r: &reqwest::Response| {
        r.headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let r = http.get(url).send().await?;
    let to = location(&r).context("the consent endpoint did not redirect")?;
    let r = http.get(&to).send().await?;
    match location(&r) {
        Some(l) => Ok(l),
        None => Ok(r.text().await?),
    }
}
