//! The calbridge Microsoft 365 / Outlook adapter: Microsoft Graph v1.0 and
//! the Microsoft identity platform (v2.0 endpoints) behind the
//! `CalendarAdapter` contract. Stateless: every call carries the account's
//! tokens, and sync state (Graph's delta link and the window it covers)
//! lives in the opaque cursor. Free/busy is asked natively, through
//! Graph's `getSchedule` ([`freebusy`]).
//!
//! Besides the gRPC server, the process serves the webhook Graph delivers
//! change notifications to (subscriptions, [`push`]) when a public
//! webhook URL is configured.

use std::future::Future;

use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tonic::service::Routes;

use calbridge::pb::calendar_adapter_server::CalendarAdapterServer;
use calbridge::services::CALENDAR_ADAPTER;

pub mod batch;
pub mod client;
pub mod config;
pub mod error;
pub mod freebusy;
pub mod limiter;
pub mod mapping;
pub mod model;
pub mod oauth;
pub mod push;
pub mod recurrence;
pub mod retry;
pub mod service;
pub mod sync;

pub use config::Config;
pub use error::GraphError;

/// The name the process announces itself under.
pub const SERVICE_NAME: &str = "adapter-microsoft";

/// Checks the configuration, binds `config.listen` (and the webhook's
/// address when push is configured), announces the gRPC address on stdout
/// and serves until `shutdown` resolves.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.validate().context("invalid configuration")?;
    let bound = calbridge_runtime::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    serve(bound, None, config, shutdown).await
}

/// Serves on an already bound gRPC listener (tests bind `127.0.0.1:0`
/// first): CalendarAdapter, gRPC health and reflection; plus the push
/// webhook on `webhook` (or on `config.webhook_listen` when none is given)
/// when `config.webhook_public_url` is set, until `shutdown` resolves.
pub async fn serve(
    bound: calbridge_runtime::Bound,
    webhook: Option<TcpListener>,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve_with_stats(bound, webhook, config, Arc::default(), shutdown).await
}

/// [`serve`], counting what the webhook sees into `stats`.
pub async fn serve_with_stats(
    bound: calbridge_runtime::Bound,
    webhook: Option<TcpListener>,
    config: Config,
    stats: Arc<push::PushStats>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let validated = config.validate().context("invalid configuration")?;
    let bound = config.tls.apply(bound).await.context("gRPC TLS")?;
    let public_url = validated.webhook_public_url.clone();
    let adapter = service::MicrosoftAdapter::new(&config, validated);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let webhook_task = match public_url {
        Some(public_url) => {
            let server = calbridge_runtime::webhook::WebhookServer {
                provider: "microsoft",
                listen: config.webhook_listen,
                public_url,
                tls: config
                    .webhook_tls_cert
                    .clone()
                    .zip(config.webhook_tls_key.clone()),
            };
            let hook = push::Webhook::new(
                calbridge_runtime::webhook::Notifier::new(
                    config.allowed_callback_endpoints.clone(),
                    push::FORWARD_TIMEOUT,
                )
                .with_tls(config.tls.callback_client().context("callback TLS")?),
                stats,
            );
            Some(
                server
                    .start(webhook, push::router(hook), stopped(stop_rx.clone()))
                    .await?,
            )
        }
        None => None,
    };
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let routes = Routes::new(CalendarAdapterServer::new(adapter));
    let result = calbridge_runtime::serve(
        SERVICE_NAME,
        bound,
        &[CALENDAR_ADAPTER],
        routes,
        stopped(stop_rx),
    )
    .await
    .context("gRPC server failed");
    if let Some(task) = webhook_task {
        let _ = task.await;
    }
    result
}
