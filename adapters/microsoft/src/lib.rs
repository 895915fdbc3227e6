//! The calbridge Microsoft 365 / Outlook adapter: Microsoft Graph v1.0 and
//! the Microsoft identity platform (v2.0 endpoints) behind the
//! `CalendarAdapter` contract. Stateless: every call carries the account's
//! tokens, and sync state (Graph's delta link and the window it covers)
//! lives in the opaque cursor.
//!
//! This slice covers OAuth, calendars, calendarView delta sync and
//! conditional writes (series included). Push (Graph subscriptions),
//! native free/busy (`getSchedule`) and `$batch` are not offered yet, and
//! `Describe` says so.

use std::future::Future;

use anyhow::Context as _;
use tonic::service::Routes;

use calbridge::pb::calendar_adapter_server::CalendarAdapterServer;
use calbridge::services::CALENDAR_ADAPTER;

pub mod client;
pub mod config;
pub mod error;
pub mod limiter;
pub mod mapping;
pub mod model;
pub mod oauth;
pub mod recurrence;
pub mod retry;
pub mod service;
pub mod sync;

pub use config::Config;
pub use error::GraphError;

/// The name the process announces itself under.
pub const SERVICE_NAME: &str = "adapter-microsoft";

/// Checks the configuration, binds `config.listen`, announces the gRPC
/// address on stdout and serves until `shutdown` resolves.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.validate().context("invalid configuration")?;
    let bound = calbridge_runtime::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    serve(bound, config, shutdown).await
}

/// Serves on an already bound listener (tests bind `127.0.0.1:0` first):
/// CalendarAdapter, gRPC health and reflection, until `shutdown` resolves.
pub async fn serve(
    bound: calbridge_runtime::Bound,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let validated = config.validate().context("invalid configuration")?;
    let adapter = service::MicrosoftAdapter::new(&config, validated);
    let routes = Routes::new(CalendarAdapterServer::new(adapter));
    calbridge_runtime::serve(SERVICE_NAME, bound, &[CALENDAR_ADAPTER], routes, shutdown)
        .await
        .context("gRPC server failed")
}
