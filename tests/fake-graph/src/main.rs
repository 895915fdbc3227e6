//! The `calbridge-fake-graph` binary: serves the fake on `--listen`, prints
//! one `{"event":"listening",...}` line, and runs until SIGTERM or Ctrl-C.

use std::net::SocketAddr;

use calbridge_fake_graph::{serve, FakeConfig};
use clap::Parser;

/// A fake of Microsoft Graph's calendar endpoints and the Microsoft
/// identity platform v2.0.
#[derive(Debug, Parser)]
#[command(name = "calbridge-fake-graph", version)]
struct Args {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Register an OAuth client at start, `CLIENT_ID:SECRET:REDIRECT_URI`
    /// (repeatable).
    #[arg(long = "client")]
    clients: Vec<String>,
    /// Register an OAuth client at start whose secret is read from a file,
    /// `CLIENT_ID:SECRET_FILE:REDIRECT_URI` (repeatable), so the secret is
    /// not on the command line.
    #[arg(long = "client-with-secret-file")]
    clients_with_secret_file: Vec<String>,
    /// Add a user (with a default calendar) at start (repeatable).
    #[arg(long = "user")]
    users: Vec<String>,
    /// A replayed create with a known `transactionId` answers 409 instead
    /// of the existing event.
    #[arg(long)]
    transaction_replay_conflict: bool,
    /// PEM CA certificate(s) webhooks are checked against (the public web
    /// roots without).
    #[arg(long)]
    webhook_ca_file: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let webhook_ca_pem =
        match &args.webhook_ca_file {
            Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
                anyhow::anyhow!("reading --webhook-ca-file {}: {e}", path.display())
            })?),
            None => None,
        };
    let handle = serve(FakeConfig {
        listen: args.listen,
        transaction_replay_conflict: args.transaction_replay_conflict,
        webhook_ca_pem,
        ..FakeConfig::default()
    })
    .await?;
    let control = handle.control();
    for spec in &args.clients {
        let mut parts = spec.splitn(3, ':');
        let (Some(id), Some(secret), Some(redirect)) = (parts.next(), parts.next(), parts.next())
        else {
            anyhow::bail!("--client: expected CLIENT_ID:SECRET:REDIRECT_URI");
        };
        control.add_client(id, secret, redirect).await?;
    }
    for spec in &args.clients_with_secret_file {
        let mut parts = spec.splitn(3, ':');
        let (Some(id), Some(file), Some(redirect)) = (parts.next(), parts.next(), parts.next())
        else {
            anyhow::bail!(
                "--client-with-secret-file {spec:?}: expected CLIENT_ID:SECRET_FILE:REDIRECT_URI"
            );
        };
        let secret = std::fs::read_to_string(file)
            .map_err(|e| anyhow::anyhow!("--client-with-secret-file: reading {file}: {e}"))?;
        control.add_client(id, secret.trim(), redirect).await?;
    }
    for u in &args.users {
        control.add_user(u, "W. Europe Standard Time").await?;
    }
    println!(
        "{}",
        serde_json::json!({"event": "listening", "service": "fake-graph", "addr": handle.addr().to_string()})
    );
    shutdown_signal().await;
    handle.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
