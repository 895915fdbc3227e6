//! A fake of Microsoft Graph's calendar endpoints (v1.0) and of the
//! Microsoft identity platform's v2.0 authorize and token endpoints, in
//! the shapes Microsoft documents (checked against the OpenAPI files in
//! `shared/ref/msgraph`): PKCE S256 with single-use codes, rotating refresh
//! tokens and AADSTS errors; `/me/calendars` and mailbox settings;
//! `calendarView/delta` rounds with `Prefer: odata.maxpagesize`, empty
//! pages, `@removed` entries and 410 `SyncStateNotFound` for expired
//! tokens; occurrences and exceptions of series; event create (with
//! `transactionId`), `If-Match` updates and deletes; `getSchedule`
//! free/busy with Graph's limits; injectable 429/503 with `Retry-After`
//! (a retry sent early gets another 429).
//!
//! A test drives it through [`Control`] (HTTP under `/fake/v1`), so the
//! binary serves the same control API as the library.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::watch;

mod api;
mod batch;
pub mod control;
mod delta;
mod events;
mod limits;
mod oauth;
mod recurrence;
mod schedule;
mod schema;
mod state;
mod subscriptions;

pub use control::Control;
pub use state::Fault;
pub use subscriptions::{DeliveryOptions, DeliveryRecord, SubscriptionInfo};

/// How the fake behaves.
#[derive(Debug, Clone)]
pub struct FakeConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Page size of a delta round without `Prefer: odata.maxpagesize`.
    pub default_page_size: usize,
    /// Every Nth delta page served is empty but for its nextLink (0: never).
    pub empty_page_every: u32,
    /// A create replayed with a known `transactionId` answers 409
    /// `ErrorDuplicateTransactionId` instead of 201 with the existing event
    /// (Graph does not document which; both are tested).
    pub transaction_replay_conflict: bool,
    /// Access token lifetime in seconds.
    pub access_token_seconds: i64,
    /// Check every Graph JSON answer (and event request body) against
    /// Microsoft's OpenAPI schemas, recording violations
    /// ([`Control::violations`]).
    pub validate: bool,
    /// The longest subscription on events (Graph: 4,230 minutes).
    pub subscription_max: std::time::Duration,
    /// How long a webhook may take to answer a delivery (Graph: 3 s).
    pub delivery_timeout: std::time::Duration,
    /// How long a failed delivery is retried (Graph: 4 hours).
    pub delivery_retry_window: std::time::Duration,
    /// How long notifications to a slow endpoint are held back (Graph:
    /// 10 minutes).
    pub slow_endpoint_delay: std::time::Duration,
    /// PEM CA certificates webhooks are checked against (validation and
    /// deliveries go only over HTTPS); the public web roots without.
    pub webhook_ca_pem: Option<String>,
}

impl Default for FakeConfig {
    fn default() -> Self {
        FakeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            default_page_size: 10,
            empty_page_every: 3,
            transaction_replay_conflict: false,
            access_token_seconds: 3600,
            validate: true,
            subscription_max: std::time::Duration::from_secs(4_230 * 60),
            delivery_timeout: std::time::Duration::from_secs(3),
            delivery_retry_window: std::time::Duration::from_secs(4 * 3600),
            slow_endpoint_delay: std::time::Duration::from_secs(600),
            webhook_ca_pem: None,
        }
    }
}

/// What every handler shares.
pub(crate) struct Shared {
    pub(crate) config: FakeConfig,
    pub(crate) state: Mutex<state::State>,
    pub(crate) base_url: String,
    pub(crate) schemas: schema::Schemas,
    /// The client that validates webhooks and delivers notifications.
    pub(crate) webhook: reqwest::Client,
}

impl Shared {
    /// The state, even after a handler panicked while holding it.
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, state::State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records where `v` breaks Graph's schema `name` (`what` says which
    /// request or answer it was).
    pub(crate) fn check(&self, what: &str, name: &str, v: &serde_json::Value) {
        if !self.config.validate {
            return;
        }
        let found = self.schemas.check(name, v);
        if !found.is_empty() {
            let mut st = self.lock();
            for f in found.into_iter().take(20) {
                if st.violations.len() < 1000 {
                    st.violations.push(format!("{what} ({name}): {f}"));
                }
            }
        }
    }
}

/// A running fake; stops when shut down or dropped.
pub struct FakeHandle {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl FakeHandle {
    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`: the identity platform is under `/{tenant}/oauth2/v2.0/`,
    /// Graph under `/v1.0/`, the control API under `/fake/v1/`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A control client for this fake.
    pub fn control(&self) -> Control {
        Control::new(self.base_url())
    }

    /// Stops the server and waits for it to finish.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for FakeHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// The client for webhooks: HTTPS only, trusting only the configured CA
/// (or, without one, the public web roots, as Graph does), no redirects.
fn webhook_client(ca_pem: Option<&str>) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .no_proxy()
        .https_only(true)
        .redirect(reqwest::redirect::Policy::none())
        .tls_built_in_root_certs(ca_pem.is_none());
    if let Some(pem) = ca_pem {
        for cert in reqwest::Certificate::from_pem_bundle(pem.as_bytes())
            .context("reading the webhook CA")?
        {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().context("building the webhook client")
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/{tenant}/oauth2/v2.0/authorize", get(oauth::authorize))
        .route("/{tenant}/oauth2/v2.0/token", post(oauth::token_route))
        .nest("/v1.0", api::router(shared.clone()))
        .merge(control::router())
        .merge(subscriptions::control_router())
        .fallback(api::not_found)
        .with_state(shared)
}

/// Binds `config.listen` (port 0 picks one) and serves the fake in the
/// background until the handle is shut down or dropped.
pub async fn serve(config: FakeConfig) -> anyhow::Result<FakeHandle> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = watch::channel(false);
    let state = state::State {
        slow_endpoint_delay: config.slow_endpoint_delay,
        delivery_retry_window: config.delivery_retry_window,
        ..state::State::default()
    };
    let shared = Arc::new(Shared {
        state: Mutex::new(state),
        base_url: format!("http://{addr}"),
        schemas: schema::Schemas::load(),
        webhook: webhook_client(config.webhook_ca_pem.as_deref())?,
        config,
    });
    tokio::spawn(subscriptions::deliver(shared.clone(), stopped.clone()));
    let app = router(shared);
    let mut until = stopped;
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = until.wait_for(|s| *s).await;
            })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "fake graph server failed");
        }
    });
    Ok(FakeHandle {
        addr,
        stop,
        task: Some(task),
    })
}
