//! The Microsoft adapter's configuration: command-line flags, each with an
//! environment-variable fallback, parsed straight into types. The OAuth
//! client id and secret are read from files (mounted secrets), never taken
//! on the command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use calbridge_runtime::Secret;
use reqwest::Url;

/// The Microsoft identity platform's host.
pub const AUTHORITY_URL: &str = "https://login.microsoftonline.com";
/// Microsoft Graph v1.0.
pub const GRAPH_BASE_URL: &str = "https://graph.microsoft.com/v1.0/";

/// How the Microsoft adapter process runs.
#[derive(Debug, Clone, PartialEq, Eq, clap::Parser)]
#[command(
    name = "calbridge-adapter-microsoft",
    version,
    about = "The calbridge Microsoft 365 / Outlook adapter: Microsoft Graph behind the adapter contract."
)]
pub struct Config {
    /// The address to serve gRPC on (port 0 picks a free port).
    #[arg(long, env = "CALBRIDGE_LISTEN", default_value = "127.0.0.1:50065")]
    pub listen: SocketAddr,
    /// The OTLP/gRPC endpoint to export spans to; none when unset.
    #[arg(long, env = "CALBRIDGE_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Serve Prometheus metrics on http://ADDR/metrics (plain HTTP; port 0
    /// picks one).
    #[arg(long, env = "CALBRIDGE_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// A file holding the application (client) id.
    #[arg(long, env = "CALBRIDGE_MICROSOFT_CLIENT_ID_FILE")]
    pub client_id_file: Option<PathBuf>,
    /// A file holding the client secret.
    #[arg(long, env = "CALBRIDGE_MICROSOFT_CLIENT_SECRET_FILE")]
    pub client_secret_file: Option<PathBuf>,
    /// Who may sign in: `common` (work, school and personal accounts),
    /// `organizations`, `consumers`, or one tenant's id or domain.
    #[arg(long, env = "CALBRIDGE_MICROSOFT_TENANT", default_value = "common")]
    pub tenant: String,
    /// The identity platform's base URL (`{authority}/{tenant}/oauth2/v2.0/...`).
    #[arg(long, env = "CALBRIDGE_MICROSOFT_AUTHORITY_URL", default_value = AUTHORITY_URL)]
    pub authority_url: String,
    /// The Graph base URL; delta and next links must stay below it.
    #[arg(long, env = "CALBRIDGE_MICROSOFT_GRAPH_BASE_URL", default_value = GRAPH_BASE_URL)]
    pub graph_base_url: String,
    /// Requests in flight per mailbox (Graph allows 4).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=4))]
    pub max_concurrent_per_mailbox: u32,
    /// The adapter's own request budget per mailbox, per minute (kept below
    /// Graph's 10,000 per 10 minutes); requests over it wait, not fail.
    #[arg(long, env = "CALBRIDGE_MICROSOFT_REQUESTS_PER_MINUTE_PER_MAILBOX", default_value_t = 800,
          value_parser = clap::value_parser!(u32).range(1..=990))]
    pub requests_per_minute_per_mailbox: u32,
    /// Attempts of one Graph request on throttling and outages (including
    /// the first).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=10))]
    pub retry_max_attempts: u32,
    /// Total time one Graph request may spend waiting between attempts, in
    /// milliseconds; a `Retry-After` beyond it is handed to the caller.
    #[arg(long, default_value_t = 30_000)]
    pub retry_budget_ms: u64,
    /// The first backoff step without `Retry-After`, in milliseconds
    /// (doubled per attempt, plus up to as much random jitter).
    #[arg(long, default_value_t = 500)]
    pub retry_base_delay_ms: u64,
    /// Send every request on its own, never several in one `$batch` (for
    /// a validating proxy that knows no `$batch`, or a gateway that
    /// refuses it).
    #[arg(long, env = "CALBRIDGE_MICROSOFT_NO_BATCH")]
    pub no_batch: bool,
    /// Timeout of one HTTP request, in seconds.
    #[arg(long, default_value_t = 30)]
    pub http_timeout_seconds: u64,
    /// The poll interval Describe suggests, in seconds; default 600 with
    /// push (a safety net), 60 without.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub poll_interval_seconds: Option<u32>,
    /// Where the push webhook listens (served only when
    /// `--webhook-public-url` is set).
    #[arg(
        long,
        env = "CALBRIDGE_MICROSOFT_WEBHOOK_LISTEN",
        default_value = "127.0.0.1:50066"
    )]
    pub webhook_listen: SocketAddr,
    /// The public HTTPS URL Graph delivers change notifications to (it
    /// must reach `--webhook-listen`). Without it the adapter offers no
    /// push and the scheduler polls.
    #[arg(long, env = "CALBRIDGE_MICROSOFT_WEBHOOK_PUBLIC_URL")]
    pub webhook_public_url: Option<String>,
    /// PEM certificate chain of the webhook's TLS server. Without a
    /// certificate and key the webhook speaks plain HTTP and TLS must be
    /// terminated in front of it (Graph only delivers over HTTPS).
    #[arg(
        long,
        env = "CALBRIDGE_MICROSOFT_WEBHOOK_TLS_CERT",
        requires = "webhook_tls_key"
    )]
    pub webhook_tls_cert: Option<PathBuf>,
    /// PEM private key of the webhook's TLS server.
    #[arg(
        long,
        env = "CALBRIDGE_MICROSOFT_WEBHOOK_TLS_KEY",
        requires = "webhook_tls_cert"
    )]
    pub webhook_tls_key: Option<PathBuf>,
    /// Scheduler callback endpoints notifications may be forwarded to
    /// (repeatable; each exactly as the scheduler advertises it). Required
    /// with `--webhook-public-url`: a notification naming any other
    /// endpoint is dropped without any connection.
    #[arg(
        long = "allowed-callback-endpoint",
        env = "CALBRIDGE_MICROSOFT_ALLOWED_CALLBACK_ENDPOINTS",
        value_delimiter = ','
    )]
    pub allowed_callback_endpoints: Vec<String>,
    /// TLS of the gRPC server (mutual with `--tls-client-ca`) and of push
    /// callbacks to an `https://` scheduler.
    #[command(flatten)]
    pub tls: calbridge_runtime::tls::TlsArgs,
}

/// Why the configuration cannot be used; names the flag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--{flag}: {problem}")]
pub struct ConfigError {
    /// The flag concerned, without dashes.
    pub flag: &'static str,
    /// What is wrong.
    pub problem: String,
}

fn config_error(flag: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        flag,
        problem: problem.into(),
    }
}

/// Everything checked about a configuration before a port is bound.
#[derive(Debug, Clone)]
pub struct Validated {
    /// The application (client) id.
    pub client_id: String,
    /// The client secret.
    pub client_secret: Secret,
    /// `{authority}/{tenant}/oauth2/v2.0/authorize`.
    pub authorize_url: Url,
    /// `{authority}/{tenant}/oauth2/v2.0/token`.
    pub token_url: Url,
    /// The Graph base, ending with `/`.
    pub graph_base_url: Url,
    /// The webhook's public URL, when push is offered.
    pub webhook_public_url: Option<Url>,
}

impl Config {
    /// A configuration listening on `listen` with the given client files,
    /// the defaults otherwise. For tests and embedding.
    pub fn new(listen: SocketAddr, client_id_file: PathBuf, client_secret_file: PathBuf) -> Self {
        Config {
            listen,
            tls: Default::default(),
            otlp_endpoint: None,
            metrics_listen: None,
            client_id_file: Some(client_id_file),
            client_secret_file: Some(client_secret_file),
            tenant: "common".into(),
            authority_url: AUTHORITY_URL.into(),
            graph_base_url: GRAPH_BASE_URL.into(),
            max_concurrent_per_mailbox: 4,
            requests_per_minute_per_mailbox: 800,
            retry_max_attempts: 5,
            retry_budget_ms: 30_000,
            retry_base_delay_ms: 500,
            http_timeout_seconds: 30,
            no_batch: false,
            poll_interval_seconds: None,
            webhook_listen: "127.0.0.1:50066".parse().expect("valid address"),
            webhook_public_url: None,
            webhook_tls_cert: None,
            webhook_tls_key: None,
            allowed_callback_endpoints: Vec::new(),
        }
    }

    /// The per-request HTTP timeout.
    pub fn http_timeout(&self) -> Duration {
        Duration::from_secs(self.http_timeout_seconds.max(1))
    }

    /// The poll interval Describe suggests.
    pub fn poll_interval(&self) -> u32 {
        self.poll_interval_seconds
            .unwrap_or(if self.webhook_public_url.is_some() {
                600
            } else {
                60
            })
    }

    /// Checks every value and reads the client files.
    pub fn validate(&self) -> Result<Validated, ConfigError> {
        let url = |flag: &'static str, v: &str| -> Result<Url, ConfigError> {
            let u = Url::parse(v).map_err(|e| config_error(flag, format!("not a URL: {e}")))?;
            if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
                return Err(config_error(flag, "must be an http(s) URL with a host"));
            }
            Ok(u)
        };
        let tenant = self.tenant.trim();
        if tenant.is_empty()
            || tenant.len() > 100
            || !tenant
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            return Err(config_error(
                "tenant",
                "must be common, organizations, consumers, a tenant id or a domain",
            ));
        }
        let authority = url("authority-url", &self.authority_url)?;
        let base = authority.as_str().trim_end_matches('/');
        let authorize_url = url(
            "authority-url",
            &format!("{base}/{tenant}/oauth2/v2.0/authorize"),
        )?;
        let token_url = url(
            "authority-url",
            &format!("{base}/{tenant}/oauth2/v2.0/token"),
        )?;
        let mut graph_base_url = url("graph-base-url", &self.graph_base_url)?;
        if !graph_base_url.path().ends_with('/') {
            let path = format!("{}/", graph_base_url.path());
            graph_base_url.set_path(&path);
        }
        let webhook_public_url = calbridge_runtime::webhook::WebhookFlags {
            public_url: self.webhook_public_url.as_deref(),
            tls_cert: self.webhook_tls_cert.as_deref(),
            tls_key: self.webhook_tls_key.as_deref(),
            allowed_callback_endpoints: &self.allowed_callback_endpoints,
        }
        .check()
        .map_err(|e| config_error(e.flag, e.problem))?;
        if self.poll_interval_seconds == Some(0) {
            return Err(config_error("poll-interval-seconds", "must be positive"));
        }
        let read = |flag: &'static str, path: &Option<PathBuf>| -> Result<String, ConfigError> {
            let path = path
                .as_ref()
                .ok_or_else(|| config_error(flag, "is required"))?;
            let v = std::fs::read_to_string(path)
                .map_err(|e| config_error(flag, format!("cannot read {}: {e}", path.display())))?;
            let v = v.trim().to_string();
            if v.is_empty() {
                return Err(config_error(flag, "the file is empty"));
            }
            Ok(v)
        };
        Ok(Validated {
            client_id: read("client-id-file", &self.client_id_file)?,
            client_secret: Secret::new(read("client-secret-file", &self.client_secret_file)?),
            authorize_url,
            token_url,
            graph_base_url,
            webhook_public_url,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let (id, secret) = (dir.path().join("id"), dir.path().join("secret"));
        std::fs::write(&id, "app-id\n").unwrap();
        std::fs::write(&secret, "s3cret").unwrap();
        (dir, id, secret)
    }

    #[test]
    fn the_tenant_segment_goes_into_both_identity_endpoints() {
        let (_dir, id, secret) = files();
        let mut c = Config::new("127.0.0.1:0".parse().unwrap(), id, secret);
        c.tenant = "organizations".into();
        let v = c.validate().unwrap();
        assert_eq!(v.client_id, "app-id");
        assert_eq!(
            v.authorize_url.as_str(),
            "https://login.microsoftonline.com/organizations/oauth2/v2.0/authorize"
        );
        assert!(v
            .token_url
            .as_str()
            .ends_with("/organizations/oauth2/v2.0/token"));
        c.tenant = "evil/../x".into();
        assert_eq!(c.validate().unwrap_err().flag, "tenant");
    }
}
