//! The calbridge sandbox adapter: an in-memory calendar provider that
//! behaves like a real one (versions, idempotent creates, expiring
//! incremental cursors, recurring series, push notifications), served behind
//! the `CalendarAdapter` contract, with the `SandboxControl` service beside
//! it for edits made "outside calbridge". Everything lives in memory and is
//! gone when the process stops.

use std::future::Future;

use anyhow::Context as _;
use tonic::service::Routes;

use calbridge::pb::calendar_adapter_server::CalendarAdapterServer;
use calbridge::pb::sandbox_control_server::SandboxControlServer;
use calbridge::services::{CALENDAR_ADAPTER, SANDBOX_CONTROL};

pub mod config;
pub mod error;
pub mod provider;
pub mod push;
pub mod recurrence;
pub mod service;

pub use config::Config;
pub use error::ProviderError;
pub use provider::Provider;

/// The name the process announces itself under.
pub const SERVICE_NAME: &str = "adapter-sandbox";

/// Binds `config.listen`, announces the address on stdout and serves until
/// `shutdown` resolves.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let bound = calbridge_runtime::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    serve(bound, config, shutdown).await
}

/// Serves on an already bound listener (tests bind `127.0.0.1:0` and read
/// the address first): CalendarAdapter, SandboxControl, gRPC health and
/// reflection. When `shutdown` resolves, health turns NOT_SERVING and the
/// server drains and stops.
pub async fn serve(
    bound: calbridge_runtime::Bound,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let shared = service::Shared::empty()
        .with_callback_tls(config.tls.callback_client().context("callback TLS")?);
    let adapter = service::SandboxAdapter::new(shared.clone(), config.poll_interval_seconds);
    let control = service::SandboxControlService::new(shared);
    let routes = Routes::new(CalendarAdapterServer::new(adapter))
        .add_service(SandboxControlServer::new(control));
    let bound = config.tls.apply(bound).await.context("gRPC TLS")?;
    calbridge_runtime::serve(
        SERVICE_NAME,
        bound,
        &[CALENDAR_ADAPTER, SANDBOX_CONTROL],
        routes,
        shutdown,
    )
    .await
    .context("gRPC server failed")
}
