//! The scheduler's configuration: defaults, then an optional TOML file, then
//! `CALBRIDGE_*` environment variables, then command-line flags. Parsed
//! straight into types and validated before any port is bound; every error
//! names the key at fault.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use calbridge::pb::Provider;
use calbridge_runtime::Secret;
use serde::Deserialize;

/// Whether unsafe conveniences are allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Laptop use: a development master key and admin token are generated in
    /// the data directory (with a loud warning) when none is configured.
    Local,
    /// Refuses to start without a configured master key and admin token.
    Production,
}

/// A configuration error, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A key has a bad value.
    #[error("configuration key `{key}`: {problem}")]
    Invalid {
        /// The key.
        key: String,
        /// What is wrong and what to do.
        problem: String,
    },
    /// The config file could not be read or parsed.
    #[error("configuration file {path}: {problem}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

fn invalid(key: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        problem: problem.into(),
    }
}

/// Sync loop settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncConfig {
    /// Days before now that the mirror covers.
    pub window_past_days: u32,
    /// Days after now that the mirror covers.
    pub window_future_days: u32,
    /// Overrides the adapters' suggested poll interval, seconds (0: use the
    /// adapter's).
    pub poll_interval_seconds: u64,
    /// Most calendar syncs running at once.
    pub max_concurrent_syncs: usize,
    /// Most syncs of one account running at once.
    pub per_account_concurrency: usize,
    /// First retry delay after a failure, milliseconds; doubles each time.
    pub backoff_base_ms: u64,
    /// Longest retry delay, seconds.
    pub backoff_max_seconds: u64,
    /// Events asked per sync page.
    pub page_size: u32,
    /// Lifetime asked for push channels, seconds (the provider may shorten
    /// it); channels are renewed when a quarter of it is left.
    pub push_channel_ttl_seconds: u32,
    /// Drift repair: every calendar of an incremental provider is listed
    /// again in full about this often, seconds (each calendar at its own
    /// jittered period, 90–110 % of it), and the listing is diffed against
    /// the mirror; 0 turns it off.
    pub full_relist_seconds: u64,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            window_past_days: 30,
            window_future_days: 365,
            poll_interval_seconds: 0,
            max_concurrent_syncs: 16,
            per_account_concurrency: 2,
            backoff_base_ms: 1000,
            backoff_max_seconds: 300,
            page_size: 250,
            push_channel_ttl_seconds: 24 * 3600,
            full_relist_seconds: 24 * 3600,
        }
    }
}

/// Per-tenant quotas. Requests over a quota are answered
/// RESOURCE_EXHAUSTED with a `google.rpc.RetryInfo` detail.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaConfig {
    /// Most accounts one tenant holds (revoked ones do not count);
    /// connecting one more is refused, re-authorising one is not.
    pub max_accounts_per_tenant: usize,
    /// Most calendars kept per account; the provider's others are left out
    /// and counted in `Account.calendars_omitted`.
    pub max_calendars_per_account: usize,
    /// Scheduler API requests per second one tenant may make, sustained.
    pub requests_per_second: u32,
    /// Requests one tenant may make at once above the sustained rate.
    pub request_burst: u32,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        QuotaConfig {
            max_accounts_per_tenant: 10_000,
            max_calendars_per_account: 1_000,
            requests_per_second: 2_000,
            request_burst: 4_000,
        }
    }
}

/// OAuth settings: the optional HTTP endpoint that completes consent
/// redirects, and token handling.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OAuthConfig {
    /// Where the HTTP callback endpoint listens (`None`: no endpoint; the
    /// platform completes authorisations through CompleteAuthorization).
    pub callback_listen: Option<SocketAddr>,
    /// The public URL of the callback endpoint as registered with providers
    /// (default `http://<callback_listen>/oauth/callback`). It is the
    /// redirect URI used when BeginAuthorization leaves it empty.
    pub callback_url: Option<String>,
    /// Where the browser is sent after the callback, with `account_id` or
    /// `error` added to the query (`None`: a short built-in page).
    pub return_url: Option<String>,
    /// How long a consent (its state and PKCE verifier) stays valid, seconds.
    pub state_ttl_seconds: u64,
    /// Access tokens are refreshed this many seconds before they expire.
    pub refresh_margin_seconds: u64,
}

impl Default for OAuthConfig {
    fn default() -> Self {
        OAuthConfig {
            callback_listen: None,
            callback_url: None,
            return_url: None,
            state_ttl_seconds: 600,
            refresh_margin_seconds: 300,
        }
    }
}

impl OAuthConfig {
    /// The redirect URI of the callback endpoint, when there is one.
    pub fn callback_redirect_uri(&self) -> Option<String> {
        self.callback_url.clone().or_else(|| {
            self.callback_listen
                .map(|a| format!("http://{a}/oauth/callback"))
        })
    }
}

/// Transport security: the public gRPC listener's certificate (and the CA
/// of client certificates, when callers must present one beside their API
/// key), and mutual TLS toward the adapters. Every file is re-read when it
/// changes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain of the gRPC listener (TLS only when set).
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    pub key: Option<PathBuf>,
    /// PEM CA certificate(s): callers of the gRPC listener must present a
    /// certificate signed by one of them (API keys are still required).
    pub client_ca: Option<PathBuf>,
    /// PEM CA certificate(s) that adapters' server certificates must chain
    /// to; needed by `https://` adapter URLs, whose host the certificate
    /// must name.
    pub adapter_ca: Option<PathBuf>,
    /// PEM client certificate presented to adapters (mutual TLS).
    pub adapter_client_cert: Option<PathBuf>,
    /// PEM private key of `adapter_client_cert`.
    pub adapter_client_key: Option<PathBuf>,
    /// Production mode refuses plaintext adapter links and a plaintext
    /// listener unless this says a service mesh provides mutual TLS.
    pub allow_plaintext_links: bool,
}

/// The file form of the configuration (every key optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    health_listen: Option<String>,
    metrics_listen: Option<String>,
    data_dir: Option<PathBuf>,
    mode: Option<Mode>,
    master_key_file: Option<PathBuf>,
    previous_master_key_file: Option<PathBuf>,
    admin_token_file: Option<PathBuf>,
    adapters: Option<BTreeMap<String, String>>,
    otlp_endpoint: Option<String>,
    advertise_url: Option<String>,
    change_retention_hours: Option<u64>,
    write_timeout_seconds: Option<u64>,
    sync: Option<SyncConfig>,
    oauth: Option<OAuthConfig>,
    quotas: Option<QuotaConfig>,
    tls: Option<TlsConfig>,
}

/// Command-line flags of `calbridge-scheduler`.
#[derive(Debug, Default, clap::Parser)]
#[command(
    name = "calbridge-scheduler",
    about = "The calbridge scheduler: the stateful core."
)]
pub struct Flags {
    /// A TOML configuration file.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Address to listen on (port 0 picks one).
    #[arg(long)]
    pub listen: Option<String>,
    /// Also serve gRPC health alone, plaintext, here (kubelet's gRPC
    /// probes cannot speak TLS).
    #[arg(long)]
    pub health_listen: Option<String>,
    /// Serve Prometheus metrics on http://ADDR/metrics (plain HTTP; port 0
    /// picks one).
    #[arg(long)]
    pub metrics_listen: Option<String>,
    /// Directory of the store (and, in local mode, generated dev secrets).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// local or production.
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    /// File holding the 32-byte master key (raw, hex or base64).
    #[arg(long)]
    pub master_key_file: Option<PathBuf>,
    /// File holding the master key being replaced, during a rotation.
    #[arg(long)]
    pub previous_master_key_file: Option<PathBuf>,
    /// File holding the admin token.
    #[arg(long)]
    pub admin_token_file: Option<PathBuf>,
    /// An adapter endpoint, PROVIDER=URL (repeatable), e.g. sandbox=http://127.0.0.1:50061.
    #[arg(long = "adapter")]
    pub adapters: Vec<String>,
    /// OTLP/gRPC endpoint to export spans to.
    #[arg(long)]
    pub otlp_endpoint: Option<String>,
    /// The URL adapters use to reach this scheduler (default: http://LISTEN).
    #[arg(long)]
    pub advertise_url: Option<String>,
    /// Address of the HTTP endpoint completing OAuth consent redirects.
    #[arg(long)]
    pub oauth_callback_listen: Option<String>,
    /// Public URL of that endpoint, as registered with the providers.
    #[arg(long)]
    pub oauth_callback_url: Option<String>,
    /// Where the browser goes after the callback (account_id or error added).
    #[arg(long)]
    pub oauth_return_url: Option<String>,
    /// PEM certificate chain of the gRPC listener (then TLS only).
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// PEM CA: callers must present a client certificate it signed.
    #[arg(long)]
    pub tls_client_ca: Option<PathBuf>,
    /// PEM CA of the adapters' server certificates (for https:// adapters).
    #[arg(long)]
    pub adapter_ca: Option<PathBuf>,
    /// PEM client certificate presented to adapters (mutual TLS).
    #[arg(long)]
    pub adapter_client_cert: Option<PathBuf>,
    /// PEM private key of `--adapter-client-cert`.
    #[arg(long)]
    pub adapter_client_key: Option<PathBuf>,
    /// In production mode, allow plaintext adapter links and listener (a
    /// service mesh provides mutual TLS).
    #[arg(long)]
    pub allow_plaintext_links: bool,
}

/// The scheduler's validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Where gRPC health alone is served plaintext, if anywhere.
    pub health_listen: Option<SocketAddr>,
    /// Where Prometheus metrics are served (plain HTTP), if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// Data directory; the sled store lives in `store/` inside it.
    pub data_dir: PathBuf,
    /// Local or production.
    pub mode: Mode,
    /// Master key file.
    pub master_key_file: Option<PathBuf>,
    /// Master key given directly (environment `CALBRIDGE_MASTER_KEY`).
    pub master_key: Option<Secret>,
    /// The master key being replaced, during a rotation: keyring entries
    /// sealed under it are re-sealed under the master key at start.
    pub previous_master_key_file: Option<PathBuf>,
    /// The previous master key given directly (environment
    /// `CALBRIDGE_PREVIOUS_MASTER_KEY`).
    pub previous_master_key: Option<Secret>,
    /// Admin token file.
    pub admin_token_file: Option<PathBuf>,
    /// Adapter endpoints by provider.
    pub adapters: BTreeMap<ProviderKey, String>,
    /// OTLP endpoint.
    pub otlp_endpoint: Option<String>,
    /// URL adapters call back on; `None` means `http://<bound address>`.
    pub advertise_url: Option<String>,
    /// How long changes are kept in the change feed.
    pub change_retention: Duration,
    /// How long a write waits for a provider that is unavailable.
    pub write_timeout: Duration,
    /// Sync loop settings.
    pub sync: SyncConfig,
    /// OAuth settings.
    pub oauth: OAuthConfig,
    /// Per-tenant quotas.
    pub quotas: QuotaConfig,
    /// Transport security.
    pub tls: TlsConfig,
}

/// A provider as a map key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProviderKey(pub i32);

impl ProviderKey {
    /// The provider.
    pub fn provider(self) -> Provider {
        Provider::try_from(self.0).unwrap_or(Provider::Unspecified)
    }
}

/// Parses a provider's short name (`google`, `microsoft`, `icloud`, `caldav`,
/// `sandbox`).
pub fn parse_provider(name: &str) -> Option<Provider> {
    crate::providers::by_key(name).map(|p| p.provider)
}

impl Config {
    /// Loads the configuration from flags, the given environment and the
    /// file named by `--config` or `CALBRIDGE_CONFIG`.
    pub fn load(flags: Flags, env: &HashMap<String, String>) -> Result<Config, ConfigError> {
        let file_path = flags
            .config
            .clone()
            .or_else(|| env.get("CALBRIDGE_CONFIG").map(PathBuf::from));
        let file = match &file_path {
            Some(p) => read_file(p)?,
            None => FileConfig::default(),
        };
        let e = |k: &str| env.get(k).filter(|v| !v.is_empty()).cloned();

        let listen_s = flags
            .listen
            .or_else(|| e("CALBRIDGE_LISTEN"))
            .or(file.listen)
            .unwrap_or_else(|| "127.0.0.1:50051".into());
        let listen: SocketAddr = listen_s.parse().map_err(|_| {
            invalid(
                "listen",
                format!("{listen_s:?} is not an address like 127.0.0.1:50051"),
            )
        })?;
        let health_listen = match flags
            .health_listen
            .or_else(|| e("CALBRIDGE_HEALTH_LISTEN"))
            .or(file.health_listen)
        {
            Some(s) => Some(s.parse().map_err(|_| {
                invalid(
                    "health_listen",
                    format!("{s:?} is not an address like 0.0.0.0:50053"),
                )
            })?),
            None => None,
        };
        let metrics_listen = match flags
            .metrics_listen
            .or_else(|| e("CALBRIDGE_METRICS_LISTEN"))
            .or(file.metrics_listen)
        {
            Some(s) => Some(s.parse().map_err(|_| {
                invalid(
                    "metrics_listen",
                    format!("{s:?} is not an address like 0.0.0.0:9464"),
                )
            })?),
            None => None,
        };
        let data_dir = flags
            .data_dir
            .or_else(|| e("CALBRIDGE_DATA_DIR").map(PathBuf::from))
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from(".calbridge"));
        let mode = match (flags.mode, e("CALBRIDGE_MODE"), file.mode) {
            (Some(m), _, _) => m,
            (None, Some(s), _) => match s.as_str() {
                "local" => Mode::Local,
                "production" => Mode::Production,
                other => {
                    return Err(invalid(
                        "mode",
                        format!("{other:?} is neither local nor production"),
                    ))
                }
            },
            (None, None, Some(m)) => m,
            (None, None, None) => Mode::Local,
        };
        let master_key_file = flags
            .master_key_file
            .or_else(|| e("CALBRIDGE_MASTER_KEY_FILE").map(PathBuf::from))
            .or(file.master_key_file);
        let master_key = e("CALBRIDGE_MASTER_KEY").map(Secret::new);
        let previous_master_key_file = flags
            .previous_master_key_file
            .or_else(|| e("CALBRIDGE_PREVIOUS_MASTER_KEY_FILE").map(PathBuf::from))
            .or(file.previous_master_key_file);
        let previous_master_key = e("CALBRIDGE_PREVIOUS_MASTER_KEY").map(Secret::new);
        if previous_master_key.is_some() && previous_master_key_file.is_some() {
            return Err(invalid(
                "previous_master_key_file",
                "set either previous_master_key_file or CALBRIDGE_PREVIOUS_MASTER_KEY, not both",
            ));
        }
        let admin_token_file = flags
            .admin_token_file
            .or_else(|| e("CALBRIDGE_ADMIN_TOKEN_FILE").map(PathBuf::from))
            .or(file.admin_token_file);

        let mut adapters = BTreeMap::new();
        for (name, url) in file.adapters.unwrap_or_default() {
            insert_adapter(&mut adapters, &name, &url)?;
        }
        if let Some(list) = e("CALBRIDGE_ADAPTERS") {
            for item in list.split(',').filter(|s| !s.trim().is_empty()) {
                let (name, url) = item
                    .split_once('=')
                    .ok_or_else(|| invalid("adapters", format!("{item:?} is not PROVIDER=URL")))?;
                insert_adapter(&mut adapters, name, url)?;
            }
        }
        for item in &flags.adapters {
            let (name, url) = item
                .split_once('=')
                .ok_or_else(|| invalid("adapter", format!("{item:?} is not PROVIDER=URL")))?;
            insert_adapter(&mut adapters, name, url)?;
        }

        let otlp_endpoint = flags
            .otlp_endpoint
            .or_else(|| e("CALBRIDGE_OTLP_ENDPOINT"))
            .or(file.otlp_endpoint);
        if let Some(u) = &otlp_endpoint {
            check_url("otlp_endpoint", u)?;
        }
        let advertise_url = flags
            .advertise_url
            .or_else(|| e("CALBRIDGE_ADVERTISE_URL"))
            .or(file.advertise_url);
        if let Some(u) = &advertise_url {
            check_url("advertise_url", u)?;
        }
        let retention_hours = file.change_retention_hours.unwrap_or(168);
        if retention_hours == 0 {
            return Err(invalid("change_retention_hours", "must be at least 1"));
        }
        let write_timeout = file.write_timeout_seconds.unwrap_or(20);
        if write_timeout == 0 {
            return Err(invalid("write_timeout_seconds", "must be at least 1"));
        }
        let sync = file.sync.unwrap_or_default();
        if sync.max_concurrent_syncs == 0 {
            return Err(invalid("sync.max_concurrent_syncs", "must be at least 1"));
        }
        if sync.per_account_concurrency == 0 {
            return Err(invalid(
                "sync.per_account_concurrency",
                "must be at least 1",
            ));
        }
        if sync.page_size == 0 || sync.page_size > 2500 {
            return Err(invalid("sync.page_size", "must be 1..=2500"));
        }
        if !(4..=30 * 86_400).contains(&sync.push_channel_ttl_seconds) {
            return Err(invalid(
                "sync.push_channel_ttl_seconds",
                "must be 4..=2592000 (30 days)",
            ));
        }
        if sync.window_future_days == 0 {
            return Err(invalid("sync.window_future_days", "must be at least 1"));
        }

        let quotas = file.quotas.unwrap_or_default();
        for (key, value) in [
            (
                "quotas.max_accounts_per_tenant",
                quotas.max_accounts_per_tenant as u64,
            ),
            (
                "quotas.max_calendars_per_account",
                quotas.max_calendars_per_account as u64,
            ),
            (
                "quotas.requests_per_second",
                u64::from(quotas.requests_per_second),
            ),
            ("quotas.request_burst", u64::from(quotas.request_burst)),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }

        let mut oauth = file.oauth.unwrap_or_default();
        if let Some(l) = flags
            .oauth_callback_listen
            .or_else(|| e("CALBRIDGE_OAUTH_CALLBACK_LISTEN"))
        {
            oauth.callback_listen = Some(l.parse().map_err(|_| {
                invalid(
                    "oauth.callback_listen",
                    format!("{l:?} is not an address like 127.0.0.1:50052"),
                )
            })?);
        }
        if let Some(u) = flags
            .oauth_callback_url
            .or_else(|| e("CALBRIDGE_OAUTH_CALLBACK_URL"))
        {
            oauth.callback_url = Some(u);
        }
        if let Some(u) = flags
            .oauth_return_url
            .or_else(|| e("CALBRIDGE_OAUTH_RETURN_URL"))
        {
            oauth.return_url = Some(u);
        }
        if let Some(u) = &oauth.callback_url {
            check_url("oauth.callback_url", u)?;
        }
        if let Some(u) = &oauth.return_url {
            check_url("oauth.return_url", u)?;
        }
        if oauth.state_ttl_seconds == 0 || oauth.state_ttl_seconds > 3600 {
            return Err(invalid("oauth.state_ttl_seconds", "must be 1..=3600"));
        }

        let tls = tls_config(
            file.tls.unwrap_or_default(),
            TlsConfig {
                cert: flags.tls_cert,
                key: flags.tls_key,
                client_ca: flags.tls_client_ca,
                adapter_ca: flags.adapter_ca,
                adapter_client_cert: flags.adapter_client_cert,
                adapter_client_key: flags.adapter_client_key,
                allow_plaintext_links: flags.allow_plaintext_links,
            },
            &e,
        )?;

        if mode == Mode::Production {
            if master_key.is_none() && master_key_file.is_none() {
                return Err(invalid(
                    "master_key_file",
                    "production mode needs a master key: set master_key_file or CALBRIDGE_MASTER_KEY",
                ));
            }
            if admin_token_file.is_none() {
                return Err(invalid(
                    "admin_token_file",
                    "production mode needs an admin token file: set admin_token_file or CALBRIDGE_ADMIN_TOKEN_FILE",
                ));
            }
        }

        check_links(mode, &tls, &adapters)?;

        Ok(Config {
            listen,
            health_listen,
            metrics_listen,
            data_dir,
            mode,
            master_key_file,
            master_key,
            previous_master_key_file,
            previous_master_key,
            admin_token_file,
            adapters,
            otlp_endpoint,
            advertise_url,
            change_retention: Duration::from_secs(retention_hours * 3600),
            write_timeout: Duration::from_secs(write_timeout),
            sync,
            oauth,
            quotas,
            tls,
        })
    }

    /// The sled store's directory.
    pub fn store_dir(&self) -> PathBuf {
        self.data_dir.join("store")
    }

    /// The keyring file holding the account data keys.
    pub fn keyring_path(&self) -> PathBuf {
        self.data_dir.join(crate::keyring::KEYRING_FILE)
    }
}

/// Layers the TLS settings (flags, then environment, then the file) and
/// checks that they fit together.
fn tls_config(
    file: TlsConfig,
    flags: TlsConfig,
    e: &dyn Fn(&str) -> Option<String>,
) -> Result<TlsConfig, ConfigError> {
    let path = |flag: Option<PathBuf>, env: &str, file: Option<PathBuf>| {
        flag.or_else(|| e(env).map(PathBuf::from)).or(file)
    };
    let allow = match e("CALBRIDGE_ALLOW_PLAINTEXT_LINKS").as_deref() {
        None => false,
        Some("true" | "1") => true,
        Some("false" | "0") => false,
        Some(other) => {
            return Err(invalid(
                "tls.allow_plaintext_links",
                format!("CALBRIDGE_ALLOW_PLAINTEXT_LINKS={other:?} is neither true nor false"),
            ))
        }
    };
    let tls = TlsConfig {
        cert: path(flags.cert, "CALBRIDGE_TLS_CERT", file.cert),
        key: path(flags.key, "CALBRIDGE_TLS_KEY", file.key),
        client_ca: path(flags.client_ca, "CALBRIDGE_TLS_CLIENT_CA", file.client_ca),
        adapter_ca: path(flags.adapter_ca, "CALBRIDGE_ADAPTER_CA", file.adapter_ca),
        adapter_client_cert: path(
            flags.adapter_client_cert,
            "CALBRIDGE_ADAPTER_CLIENT_CERT",
            file.adapter_client_cert,
        ),
        adapter_client_key: path(
            flags.adapter_client_key,
            "CALBRIDGE_ADAPTER_CLIENT_KEY",
            file.adapter_client_key,
        ),
        allow_plaintext_links: flags.allow_plaintext_links || allow || file.allow_plaintext_links,
    };
    if tls.cert.is_some() != tls.key.is_some() {
        return Err(invalid(
            "tls.cert",
            "set both tls.cert and tls.key (--tls-cert, --tls-key), or neither",
        ));
    }
    if tls.client_ca.is_some() && tls.cert.is_none() {
        return Err(invalid(
            "tls.client_ca",
            "client certificates need a TLS listener: set tls.cert and tls.key too",
        ));
    }
    if tls.adapter_client_cert.is_some() != tls.adapter_client_key.is_some() {
        return Err(invalid(
            "tls.adapter_client_cert",
            "set both tls.adapter_client_cert and tls.adapter_client_key, or neither",
        ));
    }
    if tls.adapter_client_cert.is_some() && tls.adapter_ca.is_none() {
        return Err(invalid(
            "tls.adapter_ca",
            "a client certificate for adapters needs the CA of their server certificates",
        ));
    }
    Ok(tls)
}

/// Refuses links that cannot be secured as configured, and in production
/// mode plaintext ones unless a mesh is said to secure them.
fn check_links(
    mode: Mode,
    tls: &TlsConfig,
    adapters: &BTreeMap<ProviderKey, String>,
) -> Result<(), ConfigError> {
    for url in adapters.values() {
        if url.starts_with("https://") && tls.adapter_ca.is_none() {
            return Err(invalid(
                "tls.adapter_ca",
                format!("the adapter {url} is https://: set tls.adapter_ca (--adapter-ca) to the CA of its certificate"),
            ));
        }
    }
    if mode != Mode::Production || tls.allow_plaintext_links {
        return Ok(());
    }
    const HOW: &str = "or set tls.allow_plaintext_links (--allow-plaintext-links, CALBRIDGE_ALLOW_PLAINTEXT_LINKS=true) when a service mesh provides mutual TLS";
    for (p, url) in adapters {
        if url.starts_with("http://") {
            let name = crate::providers::info(p.provider()).map_or("adapter", |i| i.key);
            return Err(invalid(
                "tls.allow_plaintext_links",
                format!("production mode refuses the plaintext adapter link {name}={url}: use an https:// URL with tls.adapter_ca and a client certificate, {HOW}"),
            ));
        }
    }
    if !adapters.is_empty() && tls.adapter_client_cert.is_none() {
        return Err(invalid(
            "tls.allow_plaintext_links",
            format!("production mode needs mutual TLS toward adapters: set tls.adapter_client_cert and tls.adapter_client_key, {HOW}"),
        ));
    }
    if tls.cert.is_none() {
        return Err(invalid(
            "tls.allow_plaintext_links",
            format!("production mode refuses a plaintext gRPC listener: set tls.cert and tls.key (--tls-cert, --tls-key), {HOW}"),
        ));
    }
    Ok(())
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
        path: path.to_path_buf(),
        problem: e.to_string(),
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::File {
        path: path.to_path_buf(),
        problem: e.to_string(),
    })
}

fn insert_adapter(
    adapters: &mut BTreeMap<ProviderKey, String>,
    name: &str,
    url: &str,
) -> Result<(), ConfigError> {
    let provider = parse_provider(name).ok_or_else(|| {
        invalid(
            "adapters",
            format!("unknown provider {name:?}: use google, microsoft, icloud, caldav or sandbox"),
        )
    })?;
    check_url(&format!("adapters.{}", name.trim()), url)?;
    adapters.insert(ProviderKey(provider as i32), url.trim().to_string());
    Ok(())
}

fn check_url(key: &str, url: &str) -> Result<(), ConfigError> {
    let u = url.trim();
    if !(u.starts_with("http://") || u.starts_with("https://")) || u.len() < 10 {
        return Err(invalid(
            key,
            format!("{u:?} is not an http:// or https:// URL"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_local_and_loopback() {
        let c = Config::load(Flags::default(), &env(&[])).unwrap();
        assert_eq!(c.mode, Mode::Local);
        assert_eq!(c.listen.to_string(), "127.0.0.1:50051");
    }

    #[test]
    fn production_without_master_key_refuses_naming_the_key() {
        let err =
            Config::load(Flags::default(), &env(&[("CALBRIDGE_MODE", "production")])).unwrap_err();
        assert!(err.to_string().contains("master_key_file"), "{err}");
    }

    #[test]
    fn flags_override_environment_and_adapters_parse() {
        let flags = Flags {
            listen: Some("127.0.0.1:0".into()),
            adapters: vec!["sandbox=http://127.0.0.1:1234".into()],
            ..Default::default()
        };
        let c = Config::load(flags, &env(&[("CALBRIDGE_LISTEN", "0.0.0.0:1")])).unwrap();
        assert_eq!(c.listen.port(), 0);
        assert_eq!(
            c.adapters
                .get(&ProviderKey(Provider::Sandbox as i32))
                .map(String::as_str),
            Some("http://127.0.0.1:1234")
        );
    }

    #[test]
    fn unknown_provider_and_bad_listen_are_named() {
        let flags = Flags {
            adapters: vec!["yahoo=http://x.example".into()],
            ..Default::default()
        };
        assert!(Config::load(flags, &env(&[]))
            .unwrap_err()
            .to_string()
            .contains("adapters"));
        let flags = Flags {
            listen: Some("nowhere".into()),
            ..Default::default()
        };
        assert!(Config::load(flags, &env(&[]))
            .unwrap_err()
            .to_string()
            .contains("`listen`"));
    }

    #[test]
    fn the_previous_master_key_comes_from_file_environment_or_flag_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "previous_master_key_file = \"/keys/old\"\n").unwrap();
        let flags = Flags {
            config: Some(p),
            ..Default::default()
        };
        let c = Config::load(flags, &env(&[])).unwrap();
        assert_eq!(c.previous_master_key_file, Some(PathBuf::from("/keys/old")));
        let c = Config::load(
            Flags::default(),
            &env(&[("CALBRIDGE_PREVIOUS_MASTER_KEY_FILE", "/keys/env")]),
        )
        .unwrap();
        assert_eq!(c.previous_master_key_file, Some(PathBuf::from("/keys/env")));
        let err = Config::load(
            Flags::default(),
            &env(&[
                ("CALBRIDGE_PREVIOUS_MASTER_KEY_FILE", "/keys/env"),
                ("CALBRIDGE_PREVIOUS_MASTER_KEY", "00"),
            ]),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("previous_master_key_file"),
            "{err}"
        );
    }

    #[test]
    fn quotas_come_from_the_file_and_zero_is_refused_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "[quotas]\nmax_calendars_per_account = 2\nrequests_per_second = 50\n",
        )
        .unwrap();
        let flags = || Flags {
            config: Some(p.clone()),
            ..Default::default()
        };
        let c = Config::load(flags(), &env(&[])).unwrap();
        assert_eq!(c.quotas.max_calendars_per_account, 2);
        assert_eq!(c.quotas.requests_per_second, 50);
        assert_eq!(c.quotas.max_accounts_per_tenant, 10_000);
        std::fs::write(&p, "[quotas]\nrequest_burst = 0\n").unwrap();
        assert!(Config::load(flags(), &env(&[]))
            .unwrap_err()
            .to_string()
            .contains("quotas.request_burst"));
    }

    #[test]
    fn production_refuses_plaintext_links_unless_a_mesh_is_declared() {
        let base = [
            ("CALBRIDGE_MODE", "production"),
            ("CALBRIDGE_MASTER_KEY", "00"),
            ("CALBRIDGE_ADMIN_TOKEN_FILE", "/t"),
            ("CALBRIDGE_ADAPTERS", "sandbox=http://adapter:50061"),
        ];
        let err = Config::load(Flags::default(), &env(&base)).unwrap_err();
        assert!(
            err.to_string().contains("tls.allow_plaintext_links"),
            "{err}"
        );
        assert!(
            err.to_string().contains("sandbox=http://adapter:50061"),
            "{err}"
        );
        let mut meshed = base.to_vec();
        meshed.push(("CALBRIDGE_ALLOW_PLAINTEXT_LINKS", "true"));
        assert!(
            Config::load(Flags::default(), &env(&meshed))
                .unwrap()
                .tls
                .allow_plaintext_links
        );

        // https links with mutual TLS, but a plaintext listener.
        let mut secured = base.to_vec();
        secured[3] = ("CALBRIDGE_ADAPTERS", "sandbox=https://adapter:50061");
        let flags = || Flags {
            adapter_ca: Some("/tls/ca.crt".into()),
            adapter_client_cert: Some("/tls/tls.crt".into()),
            adapter_client_key: Some("/tls/tls.key".into()),
            ..Default::default()
        };
        let err = Config::load(flags(), &env(&secured)).unwrap_err();
        assert!(err.to_string().contains("plaintext gRPC listener"), "{err}");
        let c = Config::load(
            Flags {
                tls_cert: Some("/tls/tls.crt".into()),
                tls_key: Some("/tls/tls.key".into()),
                ..flags()
            },
            &env(&secured),
        )
        .unwrap();
        assert_eq!(c.tls.adapter_ca, Some(PathBuf::from("/tls/ca.crt")));
    }

    #[test]
    fn the_plaintext_health_listener_is_an_address() {
        let c = Config::load(
            Flags::default(),
            &env(&[("CALBRIDGE_HEALTH_LISTEN", "0.0.0.0:50053")]),
        )
        .unwrap();
        assert_eq!(c.health_listen, Some("0.0.0.0:50053".parse().unwrap()));
        let err = Config::load(
            Flags {
                health_listen: Some("probe".into()),
                ..Default::default()
            },
            &env(&[]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("`health_listen`"), "{err}");
    }

    #[test]
    fn tls_settings_must_fit_together() {
        let err = Config::load(
            Flags {
                adapters: vec!["sandbox=https://127.0.0.1:1".into()],
                ..Default::default()
            },
            &env(&[]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("tls.adapter_ca"), "{err}");
        let err = Config::load(
            Flags {
                tls_cert: Some("/c".into()),
                ..Default::default()
            },
            &env(&[]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("tls.cert"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[tls]\nadapter_client_cert = \"/c\"\n").unwrap();
        let err = Config::load(
            Flags {
                config: Some(p),
                ..Default::default()
            },
            &env(&[]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("tls.adapter_client_cert"), "{err}");
    }

    #[test]
    fn unknown_file_keys_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "listen = \"127.0.0.1:1\"\nlisten_port = 3\n").unwrap();
        let flags = Flags {
            config: Some(p),
            ..Default::default()
        };
        assert!(Config::load(flags, &env(&[]))
            .unwrap_err()
            .to_string()
            .contains("listen_port"));
    }
}
