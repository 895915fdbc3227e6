//! A fake of Microsoft Graph's calendar endpoints (v1.0) and of the
//! Microsoft identity platform's v2.0 authorize and token endpoints, in
//! the shapes Microsoft documents (checked against the OpenAPI files in
//! `shared/ref/msgraph`): PKCE S256 with single-use codes, rotating refresh
//! tokens and AADSTS errors; `/me/calendars` and mailbox settings;
//! `calendarView/delta` rounds with `Prefer: odata.maxpagesize`, empty
//! pages, `@removed` entries and 410 `SyncStateNotFound` for expired
//! tokens; occurrences and exceptions of series; event create (with
//! `transactionId`), `If-Match` updates and deletes; injectable 429/503
//! with `Retry-After` (a retry sent early gets another 429).
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
pub mod control;
mod delta;
mod events;
mod oauth;
mod recurrence;
mod schema;
mod state;

pub use control::Control;
pub use state::Fault;

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
        }
    }
}

/// What every handler shares.
pub(crate) struct Shared {
    pub(crate) config: FakeConfig,
    pub(crate) state: Mutex<state::State>,
    pub(crate) base_url: String,
    pub(crate) schemas: schema::Schemas,
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

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/{tenant}/oauth2/v2.0/authorize", get(oauth::authorize))
        .route("/{tenant}/oauth2/v2.0/token", post(oauth::token_route))
        .nest("/v1.0", api::router(shared.clone()))
        .merge(control::router())
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
    let shared = Arc::new(Shared {
        state: Mutex::new(state::State::default()),
        base_url: format!("http://{addr}"),
        schemas: schema::Schemas::load(),
        config,
    });
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
