//! A fake of Google Calendar API v3 and Google's OAuth 2.0 endpoints that
//! follows Google's documented behaviour (see `shared/docs/PROVIDERS.md` §1
//! and the checklist in §5.1): OAuth consent, code exchange with PKCE,
//! refresh and revoke; `calendarList.list`; `events.list` with paging (short
//! and empty pages), sync tokens and 410s, recurrence expansion;
//! `events.get/insert/patch/update/delete` with etags and conditional
//! requests; `freebusy.query`; push channels delivered over HTTPS; quotas and
//! injected faults; batch requests. Everything is steered through a control API under
//! `/fake/v1` ([`Control`]), and every JSON response can be checked against
//! Google's discovery document ([`discovery`]).
//!
//! Start one in-process with [`serve`]; the `calbridge-fake-google` binary
//! does the same from the command line.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use axum::routing::{any, get, post};
use axum::serve::ListenerExt as _;
use axum::Router;
use tokio::sync::watch;
use tokio::task::JoinHandle;

mod api;
mod batch;
mod client;
mod config;
pub mod control;
pub mod devtls;
pub mod discovery;
mod error;
mod events;
mod freebusy;
mod listing;
mod model;
mod oauth;
mod push;
mod recurrence;
mod when;

pub use client::{Control, ControlError, Tokens};
pub use config::{FakeConfig, PagingQuirks};
pub use control::{
    ChannelInfo, ClientRegistration, ClockAdvance, ConsentSpec, Fault, NewCalendar, NewUser,
    PushBehaviour, QuotaLimits, RequestCounts, ViolationRecord,
};
pub use devtls::{dev_tls, DevTls};
pub use oauth::{full_scope, SCOPE_PREFIX};

use model::{Shared, State};

/// A running fake. Dropping it stops the server.
#[derive(Debug)]
pub struct FakeHandle {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl FakeHandle {
    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`: the base of every endpoint (`/token`,
    /// `/calendar/v3/...`, `/fake/v1/...`).
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

/// The webhook client: trusts only the configured CA (or, without one, the
/// public web roots, as Google does).
fn webhook_client(config: &FakeConfig) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .tls_built_in_root_certs(config.webhook_ca_pem.is_none());
    if let Some(pem) = &config.webhook_ca_pem {
        for cert in reqwest::Certificate::from_pem_bundle(pem).context("reading the webhook CA")? {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().context("building the webhook client")
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/o/oauth2/v2/auth", get(oauth::authorize))
        .route("/token", post(oauth::token))
        .route("/revoke", post(oauth::revoke))
        .route(
            "/.well-known/openid-configuration",
            get(oauth::openid_configuration),
        )
        .route("/calendar/v3/{*rest}", any(api::calendar_api))
        .route("/batch/calendar/v3", post(batch::batch))
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
        webhook: webhook_client(&config)?,
        discovery: discovery::Discovery::calendar_v3(),
        state: Mutex::new(State::new(&config)),
        base_url: format!("http://{addr}"),
        shutdown: stopped.clone(),
        config,
    });
    let app = router(shared);
    let listener = listener.tap_io(|tcp| {
        // Nagle would add tens of milliseconds to small answers on loopback.
        let _ = tcp.set_nodelay(true);
    });
    let mut until = stopped;
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = until.wait_for(|s| *s).await;
            })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "fake google server failed");
        }
    });
    Ok(FakeHandle {
        addr,
        stop,
        task: Some(task),
    })
}
