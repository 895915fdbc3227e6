//! The calbridge scheduler: the only stateful process. It owns the sled
//! store, runs the sync loop and the durable write outbox, serves the public
//! `Scheduler` API, the operator `Admin` API and the `AdapterCallback` that
//! adapters notify, and calls the provider adapters over gRPC.

pub mod accounts;
pub mod adapters;
pub mod api;
pub mod availability;
pub mod busy;
pub mod calendars;
pub mod clock;
pub mod config;
pub mod connections;
pub mod crypto;
pub mod disk;
pub mod feed;
pub mod freebusy;
pub mod ids;
pub mod keyring;
pub mod meetings;
pub mod metrics;
pub mod mirror;
pub mod permits;
pub mod providers;
pub mod quota;
pub mod sealing;
pub mod secrets;
pub mod state;
pub mod store;
pub mod sync;
pub mod tenants;
pub mod upgrade;
pub mod watches;
pub mod writes;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub use config::{Config, Flags};

/// Why the scheduler could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A secret could not be loaded.
    #[error(transparent)]
    Secrets(#[from] secrets::SecretsError),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// The store could not be opened or upgraded.
    #[error(transparent)]
    Upgrade(#[from] upgrade::UpgradeError),
    /// The keyring could not be opened.
    #[error(transparent)]
    Keyring(#[from] keyring::VaultError),
    /// Another scheduler uses the data directory.
    #[error("another scheduler uses the data directory {0} (it holds scheduler.lock)")]
    Locked(String),
    /// The port could not be bound or served.
    #[error("serving on {addr}: {detail}")]
    Serve {
        /// The address.
        addr: String,
        /// What failed.
        detail: String,
    },
    /// An adapter endpoint is unusable.
    #[error("{0}")]
    Adapter(String),
    /// TLS material cannot be used.
    #[error("TLS: {0}")]
    Tls(#[from] calbridge_runtime::tls::TlsError),
}

/// Runs the scheduler until `shutdown` resolves: locks the data directory,
/// opens the keyring and the store (upgrading an older store), completes
/// interrupted revocations and writes, starts the sync loop, serves gRPC,
/// then drains and flushes.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let data_dir_err = |e: std::io::Error| RunError::Serve {
        addr: config.data_dir.display().to_string(),
        detail: format!("cannot create or lock the data directory: {e}"),
    };
    disk::private_umask();
    disk::create_private_dir(&config.data_dir).map_err(data_dir_err)?;
    // Held until `run` returns: the keyring and the store have one user.
    let _data_dir_lock = disk::lock_dir(&config.data_dir)
        .map_err(data_dir_err)?
        .ok_or_else(|| RunError::Locked(config.data_dir.display().to_string()))?;
    let masters = secrets::master_keys(&config)?;
    let admin_hash = secrets::admin_token_hash(&config)?;
    let vault = keyring::FileKeyring::open(&config.data_dir, masters.clone())?;
    let store =
        upgrade::open_store(&config.store_dir(), &masters, &vault).map_err(|e| match e {
            upgrade::UpgradeError::Store(store::StoreError::Corrupt { detail, .. }) => {
                store::StoreError::Corrupt {
                    path: config.store_dir().display().to_string(),
                    detail,
                }
                .into()
            }
            other => RunError::from(other),
        })?;
    drop(masters);
    match keyring::reconcile(&store, &vault) {
        Ok(r) if r.destroyed > 0 => {
            tracing::info!(
                destroyed = r.destroyed,
                "keys of revoked or never-stored accounts destroyed"
            )
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "keyring not reconciled with the store"),
    }
    let server_tls = match (&config.tls.cert, &config.tls.key) {
        (Some(cert), Some(key)) => Some(calbridge_runtime::tls::ServerTls::new(
            cert,
            key,
            config.tls.client_ca.as_deref(),
        )?),
        _ => None,
    };
    let adapter_tls = match &config.tls.adapter_ca {
        Some(ca) => Some(calbridge_runtime::tls::ClientTls::new(
            ca,
            config
                .tls
                .adapter_client_cert
                .as_deref()
                .zip(config.tls.adapter_client_key.as_deref()),
        )?),
        None => None,
    };
    let bound = calbridge_runtime::bind(config.listen)
        .await
        .map_err(|e| RunError::Serve {
            addr: config.listen.to_string(),
            detail: e.to_string(),
        })?;
    let callback_url = config.advertise_url.clone().unwrap_or_else(|| {
        let scheme = if server_tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", bound.addr)
    });
    let adapters = adapters::Adapters::connect(&config.adapters, adapter_tls.as_ref())
        .map_err(RunError::Adapter)?;
    let shared = Arc::new(state::Shared::new(
        store,
        Arc::new(vault),
        adapters,
        config,
        callback_url,
    ));
    // Read at collection time while the scheduler runs.
    let _gauges = metrics::install(&shared);

    match connections::migrate_identity_hashes(&shared) {
        Ok(0) => {}
        Ok(n) => tracing::info!(accounts = n, "account identities now match exactly"),
        Err(e) => tracing::warn!(error = %e, "identity hashes not migrated"),
    }
    match accounts::sweep_revoked(&shared) {
        Ok(0) => {}
        Ok(n) => tracing::info!(rows = n, "rows of revoked accounts purged"),
        Err(e) => tracing::warn!(error = %e, "revocation sweep failed"),
    }
    shared.store.flush().await?;
    // Before the sync loop starts: calendars with interrupted writes wait
    // for their replay.
    if let Err(e) = writes::hold_syncs_for_interrupted_writes(&shared) {
        tracing::warn!(error = %e, "interrupted writes not read");
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    {
        let shared = shared.clone();
        tokio::spawn(async move {
            match writes::replay_outbox(&shared).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(pending = n, "interrupted writes processed"),
                Err(e) => tracing::error!(error = %e, "interrupted writes not processed"),
            }
            // Whatever happened, no calendar waits any longer.
            shared.in_doubt.lock().expect("lock poisoned").clear();
            shared.sync_wake.notify_one();
        });
    }
    // Background syncs run on a runtime of their own, so that a burst of
    // due polls never queues in front of API requests (availability
    // answers in particular) on the serving runtime's workers.
    let background = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("calbridge-sync")
        .enable_all()
        .build()
        .map_err(|e| RunError::Serve {
            addr: String::new(),
            detail: format!("starting the sync runtime: {e}"),
        })?;
    let sync_task = background.spawn(sync::run_loop(shared.clone(), stop_rx.clone()));
    let upkeep_task = tokio::spawn(upkeep(shared.clone(), stop_rx.clone()));

    let (health, health_service) = tonic_health::server::health_reporter();
    let served = [
        calbridge::services::SCHEDULER,
        calbridge::services::ADMIN,
        calbridge::services::ADAPTER_CALLBACK,
    ];
    calbridge_runtime::set_serving(&health, &served).await;
    let (reflection_v1, reflection_v1alpha) = calbridge_runtime::reflection_services();
    let callback_listener = match shared.config.oauth.callback_listen {
        Some(a) => Some(
            tokio::net::TcpListener::bind(a)
                .await
                .map_err(|e| RunError::Serve {
                    addr: a.to_string(),
                    detail: format!("OAuth callback endpoint: {e}"),
                })?,
        ),
        None => None,
    };
    let health_task = match shared.config.health_listen {
        Some(a) => {
            let listener = tokio::net::TcpListener::bind(a)
                .await
                .map_err(|e| RunError::Serve {
                    addr: a.to_string(),
                    detail: format!("health listener: {e}"),
                })?;
            let routes = tonic::service::Routes::new(health_service.clone());
            let mut stop = stop_rx.clone();
            Some(tokio::spawn(async move {
                let stopped = async move {
                    let _ = stop.changed().await;
                };
                if let Err(e) =
                    calbridge_runtime::serve_health("scheduler", listener, routes, stopped).await
                {
                    tracing::error!(error = %e, "health listener failed");
                }
            }))
        }
        None => None,
    };
    let addr = bound.addr;
    calbridge_runtime::announce("scheduler", addr);
    tracing::info!(
        %addr,
        tls = server_tls.is_some(),
        client_certificates = server_tls.as_ref().is_some_and(|t| t.verifies_clients()),
        "scheduler listening"
    );
    let callback_task = callback_listener.map(|listener| {
        let addr = listener.local_addr().ok();
        if let Some(a) = addr {
            calbridge_runtime::announce("scheduler-oauth-callback", a);
            tracing::info!(addr = %a, "OAuth callback endpoint listening");
        }
        let mut stop = stop_rx.clone();
        let app = api::oauth_callback::router(shared.clone());
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.changed().await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "OAuth callback endpoint failed");
            }
        })
    });

    let (drained_tx, drained_rx) = tokio::sync::oneshot::channel::<()>();
    let health_for_drain = health.clone();
    tokio::spawn(async move {
        shutdown.await;
        calbridge_runtime::set_not_serving(&health_for_drain, &served).await;
        let _ = drained_tx.send(());
    });
    let mut server = tonic::transport::Server::builder()
        .trace_fn(calbridge_runtime::server_span)
        .layer(calbridge_runtime::metrics::RpcLayer::server());
    let router = server
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(api::scheduler_service(shared.clone()))
        .add_service(api::admin_service(shared.clone(), admin_hash))
        .add_service(api::callback_service(shared.clone()));
    let drained = async {
        let _ = drained_rx.await;
    };
    let result = match server_tls {
        Some(tls) => {
            router
                .serve_with_incoming_shutdown(
                    calbridge_runtime::tls::tls_incoming(bound.incoming, tls),
                    drained,
                )
                .await
        }
        None => {
            router
                .serve_with_incoming_shutdown(bound.incoming, drained)
                .await
        }
    };
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        let _ = sync_task.await;
        let _ = upkeep_task.await;
        if let Some(t) = callback_task {
            let _ = t.await;
        }
        if let Some(t) = health_task {
            let _ = t.await;
        }
    })
    .await;
    background.shutdown_background();
    shared.store.flush().await?;
    tracing::info!("scheduler stopped; store flushed");
    result.map_err(|e| RunError::Serve {
        addr: addr.to_string(),
        detail: e.to_string(),
    })
}

/// Periodic upkeep: renew push channels, prune the change log. Runs every
/// minute, or more often when channels live so briefly that renewing at a
/// quarter of their lifetime needs it.
async fn upkeep(shared: Arc<state::Shared>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let ttl_ms = u64::from(shared.config.sync.push_channel_ttl_seconds) * 1000;
    let period = Duration::from_millis((ttl_ms / 8).clamp(250, 60_000));
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = tick.tick() => {},
            _ = stop.changed() => return,
        }
        watches::renew_channels(&shared).await;
        if let Err(e) = shared.store.prune_holds(clock::now_ms()) {
            tracing::warn!(error = %e, "expired holds not pruned");
        }
        if let Err(e) = shared.store.prune_auth_states(clock::now_ms()) {
            tracing::warn!(error = %e, "expired authorisations not pruned");
        }
        if let Err(e) = shared.store.restrict_permissions() {
            tracing::warn!(error = %e, "store files not made owner-only");
        }
        match feed::prune(&shared) {
            Ok(0) => {}
            Ok(n) => tracing::info!(pruned = n, "old changes pruned"),
            Err(e) => tracing::warn!(error = %e, "change log not pruned"),
        }
    }
}
