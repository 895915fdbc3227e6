//! The Google adapter's configuration: command-line flags, each with an
//! environment-variable fallback, parsed straight into types. The OAuth
//! client id and secret are read from files (mounted secrets), never taken
//! on the command line; [`Config::load_client`] reads them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use calbridge_runtime::Secret;
use reqwest::Url;

/// Google's authorization (consent) endpoint.
pub const GOOGLE_AUTH_URL: &str = "https://accounts.google.com/o/oauth2/v2/auth";
/// Google's token endpoint (code exchange and refresh).
pub const GOOGLE_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";
/// Google's token revocation endpoint.
pub const GOOGLE_REVOKE_URL: &str = "https://oauth2.googleapis.com/revoke";
/// The Calendar API v3 base URL.
pub const GOOGLE_API_BASE_URL: &str = "https://www.googleapis.com/calendar/v3/";

/// Who gets invitation e-mails when the adapter writes an event
/// (Google's `sendUpdates`, always sent explicitly).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SendUpdates {
    /// Every attendee is notified.
    #[value(name = "all")]
    All,
    /// Only attendees outside the organizer's Google domain are notified.
    #[value(name = "externalOnly")]
    ExternalOnly,
    /// Nobody is notified.
    #[value(name = "none")]
    None,
}

impl SendUpdates {
    /// The query-parameter value.
    pub fn as_str(self) -> &'static str {
        match self {
            SendUpdates::All => "all",
            SendUpdates::ExternalOnly => "externalOnly",
            SendUpdates::None => "none",
        }
    }
}

/// How the Google adapter process runs.
#[derive(Debug, Clone, PartialEq, Eq, clap::Parser)]
#[command(
    name = "calbridge-adapter-google",
    version,
    about = "The calbridge Google Calendar adapter: Google Calendar API v3 behind the adapter contract."
)]
pub struct Config {
    /// The address to serve gRPC on (port 0 picks a free port).
    #[arg(long, env = "CALBRIDGE_LISTEN", default_value = "127.0.0.1:50063")]
    pub listen: SocketAddr,
    /// The OTLP/gRPC endpoint to export spans to; none when unset.
    #[arg(long, env = "CALBRIDGE_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Serve Prometheus metrics on http://ADDR/metrics (plain HTTP; port 0
    /// picks one).
    #[arg(long, env = "CALBRIDGE_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// A file holding the OAuth client id (surrounding whitespace ignored).
    #[arg(long, env = "CALBRIDGE_GOOGLE_CLIENT_ID_FILE")]
    pub client_id_file: Option<PathBuf>,
    /// A file holding the OAuth client secret (surrounding whitespace
    /// ignored).
    #[arg(long, env = "CALBRIDGE_GOOGLE_CLIENT_SECRET_FILE")]
    pub client_secret_file: Option<PathBuf>,
    /// Google's authorization (consent) endpoint.
    #[arg(long, env = "CALBRIDGE_GOOGLE_AUTH_URL", default_value = GOOGLE_AUTH_URL)]
    pub auth_url: String,
    /// Google's token endpoint.
    #[arg(long, env = "CALBRIDGE_GOOGLE_TOKEN_URL", default_value = GOOGLE_TOKEN_URL)]
    pub token_url: String,
    /// Google's token revocation endpoint.
    #[arg(long, env = "CALBRIDGE_GOOGLE_REVOKE_URL", default_value = GOOGLE_REVOKE_URL)]
    pub revoke_url: String,
    /// The Calendar API v3 base URL.
    #[arg(long, env = "CALBRIDGE_GOOGLE_API_BASE_URL", default_value = GOOGLE_API_BASE_URL)]
    pub api_base_url: String,
    /// Who Google e-mails about writes (`sendUpdates`).
    #[arg(
        long,
        env = "CALBRIDGE_GOOGLE_SEND_UPDATES",
        value_enum,
        default_value = "all"
    )]
    pub send_updates: SendUpdates,
    /// The adapter's own request budget per Google user, per minute (kept
    /// below Google's 600); calls over it are delayed, not failed.
    #[arg(long, env = "CALBRIDGE_GOOGLE_REQUESTS_PER_MINUTE_PER_USER", default_value_t = 500,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub requests_per_minute_per_user: u32,
    /// Attempts of one Google request on rate limits and outages
    /// (including the first).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=10))]
    pub retry_max_attempts: u32,
    /// Total time one Google request may spend waiting between attempts,
    /// in milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub retry_budget_ms: u64,
    /// The first backoff step, in milliseconds (doubled per attempt, plus
    /// up to as much random jitter).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..))]
    pub retry_base_delay_ms: u64,
    /// Timeout of one HTTP request to Google, in seconds.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub http_timeout_seconds: u64,
    /// The poll interval suggested to the scheduler in Describe, in
    /// seconds; default 600 with push (a safety net), 60 without.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub poll_interval_seconds: Option<u32>,
    /// Where the push webhook listens (served only when
    /// `--webhook-public-url` is set).
    #[arg(
        long,
        env = "CALBRIDGE_GOOGLE_WEBHOOK_LISTEN",
        default_value = "127.0.0.1:50064"
    )]
    pub webhook_listen: SocketAddr,
    /// The public HTTPS URL Google delivers push notifications to (it must
    /// reach `--webhook-listen`). Without it the adapter offers no push.
    #[arg(long, env = "CALBRIDGE_GOOGLE_WEBHOOK_PUBLIC_URL")]
    pub webhook_public_url: Option<String>,
    /// PEM certificate chain of the webhook's TLS server. Without a
    /// certificate and key the webhook speaks plain HTTP and TLS must be
    /// terminated in front of it (Google only delivers over HTTPS).
    #[arg(
        long,
        env = "CALBRIDGE_GOOGLE_WEBHOOK_TLS_CERT",
        requires = "webhook_tls_key"
    )]
    pub webhook_tls_cert: Option<PathBuf>,
    /// PEM private key of the webhook's TLS server.
    #[arg(
        long,
        env = "CALBRIDGE_GOOGLE_WEBHOOK_TLS_KEY",
        requires = "webhook_tls_cert"
    )]
    pub webhook_tls_key: Option<PathBuf>,
    /// Scheduler callback endpoints notifications may be forwarded to
    /// (repeatable; each exactly as the scheduler advertises it, e.g.
    /// `http://scheduler-0.scheduler:50051`). Required with
    /// `--webhook-public-url`: a notification naming any other endpoint is
    /// answered like one for an unknown channel and goes nowhere, so the
    /// public webhook can never be used to reach or probe other hosts.
    #[arg(
        long = "allowed-callback-endpoint",
        env = "CALBRIDGE_GOOGLE_ALLOWED_CALLBACK_ENDPOINTS",
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

/// The OAuth client, read from its files.
#[derive(Debug, Clone)]
pub struct ClientCredentials {
    /// The client id.
    pub client_id: String,
    /// The client secret.
    pub client_secret: Secret,
}

/// Everything checked about a configuration before a port is bound.
#[derive(Debug, Clone)]
pub struct Validated {
    /// The OAuth client.
    pub client: ClientCredentials,
    /// The authorization endpoint.
    pub auth_url: Url,
    /// The token endpoint.
    pub token_url: Url,
    /// The revocation endpoint.
    pub revoke_url: Url,
    /// The API base, ending with `/`.
    pub api_base_url: Url,
    /// The webhook's public URL, when push is offered.
    pub webhook_public_url: Option<Url>,
}

impl Config {
    /// A configuration listening on `listen` with the given client files,
    /// the defaults otherwise (Google's endpoints, no push). For tests and
    /// embedding.
    pub fn new(listen: SocketAddr, client_id_file: PathBuf, client_secret_file: PathBuf) -> Self {
        Config {
            listen,
            tls: Default::default(),
            otlp_endpoint: None,
            metrics_listen: None,
            client_id_file: Some(client_id_file),
            client_secret_file: Some(client_secret_file),
            auth_url: GOOGLE_AUTH_URL.into(),
            token_url: GOOGLE_TOKEN_URL.into(),
            revoke_url: GOOGLE_REVOKE_URL.into(),
            api_base_url: GOOGLE_API_BASE_URL.into(),
            send_updates: SendUpdates::All,
            requests_per_minute_per_user: 500,
            retry_max_attempts: 4,
            retry_budget_ms: 5000,
            retry_base_delay_ms: 500,
            http_timeout_seconds: 30,
            poll_interval_seconds: None,
            webhook_listen: "127.0.0.1:50064".parse().expect("valid address"),
            webhook_public_url: None,
            webhook_tls_cert: None,
            webhook_tls_key: None,
            allowed_callback_endpoints: Vec::new(),
        }
    }

    /// The per-request HTTP timeout.
    pub fn http_timeout(&self) -> Duration {
        Duration::from_secs(self.http_timeout_seconds)
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
        let mut api_base_url = url("api-base-url", &self.api_base_url)?;
        if !api_base_url.path().ends_with('/') {
            let path = format!("{}/", api_base_url.path());
            api_base_url.set_path(&path);
        }
        let webhook_public_url = calbridge_runtime::webhook::WebhookFlags {
            public_url: self.webhook_public_url.as_deref(),
            tls_cert: self.webhook_tls_cert.as_deref(),
            tls_key: self.webhook_tls_key.as_deref(),
            allowed_callback_endpoints: &self.allowed_callback_endpoints,
        }
        .check()
        .map_err(|e| config_error(e.flag, e.problem))?;
        Ok(Validated {
            client: self.load_client()?,
            auth_url: url("auth-url", &self.auth_url)?,
            token_url: url("token-url", &self.token_url)?,
            revoke_url: url("revoke-url", &self.revoke_url)?,
            api_base_url,
            webhook_public_url,
        })
    }

    /// Reads the OAuth client id and secret from their files.
    pub fn load_client(&self) -> Result<ClientCredentials, ConfigError> {
        let read = |flag: &'static str, path: Option<&PathBuf>| -> Result<String, ConfigError> {
            let path = path.ok_or_else(|| config_error(flag, "is required"))?;
            let text = std::fs::read_to_string(path)
                .map_err(|e| config_error(flag, format!("cannot read {}: {e}", path.display())))?;
            let value = text.trim().to_string();
            if value.is_empty() {
                return Err(config_error(flag, format!("{} is empty", path.display())));
            }
            Ok(value)
        };
        Ok(ClientCredentials {
            client_id: read("client-id-file", self.client_id_file.as_ref())?,
            client_secret: Secret::new(read(
                "client-secret-file",
                self.client_secret_file.as_ref(),
            )?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn the_defaults_match_the_documented_ones() {
        let c = Config::try_parse_from(["calbridge-adapter-google"]).unwrap();
        assert_eq!(c.listen, "127.0.0.1:50063".parse().unwrap());
        assert_eq!(c.webhook_listen, "127.0.0.1:50064".parse().unwrap());
        assert_eq!(c.send_updates, SendUpdates::All);
        assert_eq!(c.requests_per_minute_per_user, 500);
        assert_eq!(c.api_base_url, GOOGLE_API_BASE_URL);
        assert_eq!(c.poll_interval(), 60);
        let mut n = Config::new(
            "127.0.0.1:50063".parse().unwrap(),
            PathBuf::from("a"),
            PathBuf::from("b"),
        );
        n.client_id_file = None;
        n.client_secret_file = None;
        assert_eq!(c, n);
    }

    #[test]
    fn flags_override_the_defaults() {
        let c = Config::try_parse_from([
            "calbridge-adapter-google",
            "--listen",
            "127.0.0.1:0",
            "--send-updates",
            "externalOnly",
            "--requests-per-minute-per-user",
            "60",
            "--api-base-url",
            "http://127.0.0.1:9/calendar/v3",
            "--webhook-public-url",
            "https://hooks.example.com/google",
        ])
        .unwrap();
        assert_eq!(c.send_updates, SendUpdates::ExternalOnly);
        assert_eq!(c.send_updates.as_str(), "externalOnly");
        assert_eq!(c.requests_per_minute_per_user, 60);
        assert_eq!(c.poll_interval(), 600);
    }

    #[test]
    fn bad_values_are_refused() {
        for args in [
            vec!["--send-updates", "sometimes"],
            vec!["--requests-per-minute-per-user", "0"],
            vec!["--webhook-tls-cert", "cert.pem"],
            vec!["--listen", "nowhere"],
        ] {
            let mut argv = vec!["calbridge-adapter-google"];
            argv.extend(args.iter().copied());
            assert!(Config::try_parse_from(&argv).is_err(), "{args:?}");
        }
    }

    #[test]
    fn validation_reads_the_client_files_and_names_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let id = dir.path().join("id");
        let secret = dir.path().join("secret");
        std::fs::write(&id, "client-1.apps.googleusercontent.com\n").unwrap();
        std::fs::write(&secret, "  s3cret \n").unwrap();
        let mut c = Config::new("127.0.0.1:0".parse().unwrap(), id, secret.clone());
        c.api_base_url = "http://127.0.0.1:9/calendar/v3".into();
        let v = c.validate().unwrap();
        assert_eq!(v.client.client_id, "client-1.apps.googleusercontent.com");
        assert_eq!(v.client.client_secret.expose(), "s3cret");
        assert!(!format!("{v:?}").contains("s3cret"));
        assert_eq!(v.api_base_url.as_str(), "http://127.0.0.1:9/calendar/v3/");

        c.client_secret_file = Some(dir.path().join("missing"));
        let e = c.validate().unwrap_err();
        assert_eq!(e.flag, "client-secret-file");
        c.client_secret_file = Some(secret);
        c.token_url = "not a url".into();
        assert_eq!(c.validate().unwrap_err().flag, "token-url");
        c.token_url = "http://127.0.0.1:9/token".into();
        // Push needs the endpoints notifications may go to.
        c.webhook_public_url = Some("https://hooks.example.com/google".into());
        assert_eq!(c.validate().unwrap_err().flag, "allowed-callback-endpoint");
        c.allowed_callback_endpoints = vec!["http://scheduler-0.scheduler:50051".into()];
        assert!(c.validate().is_ok());
    }
}
