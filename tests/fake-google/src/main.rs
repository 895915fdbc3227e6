//! The `calbridge-fake-google` binary: serves the fake on `--listen`, prints
//! one `{"event":"listening",...}` line, and runs until SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use calbridge_fake_google::{serve, FakeConfig, PagingQuirks};
use clap::Parser;

/// A fake of Google Calendar API v3 and Google's OAuth 2.0 endpoints.
#[derive(Debug, Parser)]
#[command(name = "calbridge-fake-google", version)]
struct Args {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// PEM file of the only CA trusted for webhook deliveries.
    #[arg(long)]
    webhook_ca_file: Option<PathBuf>,
    /// Check every Calendar API JSON response against the discovery document.
    #[arg(long)]
    validate_responses: bool,
    /// Seed for the fake's random choices.
    #[arg(long)]
    seed: Option<u64>,
    /// Requests per user per minute.
    #[arg(long, default_value_t = 600)]
    quota_per_user: u32,
    /// Requests per project per minute.
    #[arg(long, default_value_t = 10_000)]
    quota_per_project: u32,
    /// Every Nth page served is empty (0 = never).
    #[arg(long, default_value_t = PagingQuirks::default().empty_page_every)]
    empty_page_every: u32,
    /// Every Nth page served is short (0 = never).
    #[arg(long, default_value_t = PagingQuirks::default().short_page_every)]
    short_page_every: u32,
    /// Longest freebusy.query range in days.
    #[arg(long, default_value_t = 90)]
    freebusy_max_days: i64,
    /// First retry delay of a failed webhook delivery, in milliseconds.
    #[arg(long, default_value_t = 50)]
    push_retry_base_ms: u64,
    /// Accept consent requests without PKCE.
    #[arg(long)]
    no_require_pkce: bool,
    /// Register an OAuth client at start, `CLIENT_ID:SECRET_FILE:REDIRECT_URI`
    /// (repeatable; the secret is read from the file).
    #[arg(long = "client")]
    clients: Vec<String>,
    /// Add a user (with a primary calendar) at start (repeatable).
    #[arg(long = "user")]
    users: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let webhook_ca_pem = match &args.webhook_ca_file {
        Some(path) => Some(
            std::fs::read(path)
                .with_context(|| format!("reading --webhook-ca-file {}", path.display()))?,
        ),
        None => None,
    };
    let config = FakeConfig {
        listen: args.listen,
        webhook_ca_pem,
        validate_responses: args.validate_responses,
        seed: args.seed,
        quota_per_user_per_minute: args.quota_per_user,
        quota_per_project_per_minute: args.quota_per_project,
        paging: PagingQuirks {
            empty_page_every: args.empty_page_every,
            short_page_every: args.short_page_every,
        },
        freebusy_max_days: args.freebusy_max_days,
        push_retry_base: Duration::from_millis(args.push_retry_base_ms),
        require_pkce: !args.no_require_pkce,
        ..FakeConfig::default()
    };
    let mut clients = Vec::new();
    for spec in &args.clients {
        let mut parts = spec.splitn(3, ':');
        let (Some(id), Some(secret_file), Some(redirect)) =
            (parts.next(), parts.next(), parts.next())
        else {
            anyhow::bail!("--client {spec:?}: expected CLIENT_ID:SECRET_FILE:REDIRECT_URI");
        };
        let secret = std::fs::read_to_string(secret_file)
            .with_context(|| format!("--client: reading the secret file {secret_file}"))?;
        clients.push(calbridge_fake_google::control::ClientRegistration {
            client_id: id.to_string(),
            client_secret: secret.trim().to_string(),
            redirect_uris: vec![redirect.to_string()],
        });
    }
    let handle = serve(config).await?;
    let control = handle.control();
    for c in &clients {
        control.add_client(c).await?;
    }
    for u in &args.users {
        control.add_user(u).await?;
    }
    println!(
        "{}",
        serde_json::json!({"event": "listening", "service": "fake-google", "addr": handle.addr().to_string()})
    );
    shutdown_signal().await;
    handle.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
