//! The calbridge Google Calendar adapter: Google Calendar API v3 and Google
//! OAuth 2.0 behind the `CalendarAdapter` contract. Stateless: every call
//! carries the account's tokens, sync state lives in the opaque cursor, and
//! push channels carry their routing in Google's channel token. Besides the
//! gRPC server, the process serves Google's push webhook (HTTPS) when a
//! public webhook URL is configured.

use std::future::Future;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tonic::service::Routes;

use calbridge::pb::calendar_adapter_server::CalendarAdapterServer;
use calbridge::services::CALENDAR_ADAPTER;

pub mod client;
pub mod config;
pub mod error;
pub mod instances;
pub mod limiter;
pub mod mapping;
pub mod model;
pub mod oauth;
pub mod push;
pub mod recurrence;
pub mod retry;
pub mod rules;
pub mod service;
pub mod sync;
pub mod times;

pub use config::Config;
pub use error::GoogleError;

/// The name the process announces itself under.
pub const SERVICE_NAME: &str = "adapter-google";

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

/// Serves on an already bound gRPC listener (tests bind `127.0.0.1:0` and
/// read the address first): CalendarAdapter, gRPC health and reflection;
/// plus the push webhook on `webhook` (or on `config.webhook_listen` when
/// none is given) when `config.webhook_public_url` is set. When `shutdown`
/// resolves, health turns NOT_SERVING and both servers drain and stop.
pub async fn serve(
    bound: calbridge_runtime::Bound,
    webhook: Option<TcpListener>,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let validated = config.validate().context("invalid configuration")?;
    let bound = config.tls.apply(bound).await.context("gRPC TLS")?;
    let adapter = service::GoogleAdapter::new(&config, &validated);

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let webhook_task = match &validated.webhook_public_url {
        Some(public) => {
            let server = calbridge_runtime::webhook::WebhookServer {
                provider: "google",
                listen: config.webhook_listen,
                public_url: public.clone(),
                tls: config
                    .webhook_tls_cert
                    .clone()
                    .zip(config.webhook_tls_key.clone()),
            };
            let router = push::router(
                calbridge_runtime::webhook::Notifier::new(
                    config.allowed_callback_endpoints.clone(),
                    push::FORWARD_TIMEOUT,
                )
                .with_tls(config.tls.callback_client().context("callback TLS")?),
            );
            Some(
                server
                    .start(webhook, router, stopped(stop_rx.clone()))
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
