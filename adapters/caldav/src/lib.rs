//! The calbridge CalDAV adapter: generic CalDAV servers and Apple iCloud
//! (an app-specific password at caldav.icloud.com) behind the
//! `CalendarAdapter` contract. Stateless: every call carries the account's
//! credentials, discovery results travel back to the scheduler inside them,
//! and sync state lives in the opaque cursor.

use std::future::Future;

use anyhow::Context as _;
use tonic::service::Routes;

use calbridge::pb::calendar_adapter_server::CalendarAdapterServer;
use calbridge::services::CALENDAR_ADAPTER;

pub mod account;
pub mod client;
pub mod config;
pub mod egress;
pub mod error;
pub mod ics;
pub mod mapping;
pub mod parse;
pub mod recurrence;
pub mod service;
pub mod sync;
pub mod zones;

pub use config::Config;
pub use error::DavError;

/// The name the process announces itself under.
pub const SERVICE_NAME: &str = "adapter-caldav";

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
/// the address first): CalendarAdapter, gRPC health and reflection. When
/// `shutdown` resolves, health turns NOT_SERVING and the server drains and
/// stops.
pub async fn serve(
    bound: calbridge_runtime::Bound,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let adapter = service::CaldavAdapter::new(&config);
    let routes = Routes::new(CalendarAdapterServer::new(adapter));
    let bound = config.tls.apply(bound).await.context("gRPC TLS")?;
    calbridge_runtime::serve(SERVICE_NAME, bound, &[CALENDAR_ADAPTER], routes, shutdown)
        .await
        .context("gRPC server failed")
}
