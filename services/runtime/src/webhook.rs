//! What every adapter's push webhook shares: the checks of its flags, its
//! HTTPS server (rustls, HTTP/1.1 and HTTP/2, drained on shutdown) and the
//! forwarding of notifications to the scheduler replica that owns a
//! channel, through `AdapterCallback.NotifyProviderChange`, only ever to
//! allow-listed endpoints. What a provider's notification looks like stays
//! in its adapter.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use url::Url;

use calbridge::pb::adapter_callback_client::AdapterCallbackClient;
use calbridge::pb::ProviderNotification;

use crate::TracePropagation;

/// Callback clients kept at once.
const MAX_CLIENTS: usize = 64;
/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest callback endpoint accepted.
pub const MAX_ENDPOINT: usize = 200;

/// The webhook flags of an adapter, as given.
#[derive(Debug, Clone, Copy)]
pub struct WebhookFlags<'a> {
    /// `--webhook-public-url`: where the provider delivers; no push without.
    pub public_url: Option<&'a str>,
    /// `--webhook-tls-cert`.
    pub tls_cert: Option<&'a Path>,
    /// `--webhook-tls-key`.
    pub tls_key: Option<&'a Path>,
    /// `--allowed-callback-endpoint`, repeated.
    pub allowed_callback_endpoints: &'a [String],
}

/// A webhook flag that cannot be used: the flag (without dashes) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagError {
    /// The flag concerned.
    pub flag: &'static str,
    /// What is wrong.
    pub problem: String,
}

impl<'a> WebhookFlags<'a> {
    /// Checks the flags together; the public URL when push is offered.
    pub fn check(&self) -> Result<Option<Url>, FlagError> {
        let fail = |flag, problem: &str| FlagError {
            flag,
            problem: problem.to_string(),
        };
        let public = match self.public_url {
            None => None,
            Some(v) => {
                let u = Url::parse(v)
                    .map_err(|e| fail("webhook-public-url", &format!("not a URL: {e}")))?;
                if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
                    return Err(fail(
                        "webhook-public-url",
                        "must be an http(s) URL with a host",
                    ));
                }
                Some(u)
            }
        };
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(fail(
                "webhook-tls-cert",
                "give both --webhook-tls-cert and --webhook-tls-key, or neither",
            ));
        }
        if public.is_some() && self.allowed_callback_endpoints.is_empty() {
            return Err(fail(
                "allowed-callback-endpoint",
                "is required with --webhook-public-url: name the scheduler endpoints (as they advertise themselves) that notifications may be forwarded to",
            ));
        }
        for e in self.allowed_callback_endpoints {
            if e.is_empty() || e.len() > MAX_ENDPOINT || e.chars().any(char::is_control) {
                return Err(fail(
                    "allowed-callback-endpoint",
                    "each endpoint must be 1 to 200 characters without control characters",
                ));
            }
        }
        Ok(public)
    }
}

type CallbackClient = AdapterCallbackClient<InterceptedService<Channel, TracePropagation>>;

/// What became of a forwarded notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forwarded {
    /// The scheduler took it.
    Delivered,
    /// The scheduler does not know the channel (or the token is wrong).
    UnknownChannel,
    /// The scheduler could not be reached or failed; the provider should
    /// retry.
    Unreachable,
    /// Refused for good: the endpoint is not allowed, or the scheduler
    /// refused it.
    Refused,
}

/// Forwards notifications to schedulers, one lazily connected client per
/// allowed callback endpoint; cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    clients: Arc<Mutex<HashMap<String, CallbackClient>>>,
    allowed: Arc<Vec<String>>,
    timeout: Duration,
    tls: Option<crate::tls::ClientTls>,
}

/// The URI of a callback endpoint (`host:port` means plain HTTP/2).
fn endpoint_uri(endpoint: &str) -> String {
    if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    }
}

impl Notifier {
    /// A notifier that forwards only to `allowed` endpoints (none when
    /// empty), waiting at most `timeout` for the scheduler's answer.
    pub fn new(allowed: Vec<String>, timeout: Duration) -> Self {
        Notifier {
            clients: Arc::default(),
            allowed: Arc::new(allowed),
            timeout,
            tls: None,
        }
    }

    /// Dials `https://` endpoints with `tls` (the CA of the scheduler's
    /// certificate and this adapter's client certificate); without it only
    /// plain `http://` endpoints can be reached.
    pub fn with_tls(mut self, tls: Option<crate::tls::ClientTls>) -> Self {
        self.tls = tls;
        self
    }

    /// True when notifications may be forwarded to `endpoint`.
    pub fn allows(&self, endpoint: &str) -> bool {
        self.allowed.iter().any(|a| a == endpoint)
    }

    fn client(&self, endpoint: &str) -> Option<CallbackClient> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = clients.get(endpoint) {
            return Some(c.clone());
        }
        let timeout = self.timeout;
        let channel = match crate::tls::channel(&endpoint_uri(endpoint), self.tls.as_ref(), |e| {
            e.connect_timeout(Duration::from_secs(2)).timeout(timeout)
        }) {
            Ok(c) => c,
            Err(error) => {
                tracing::warn!(%error, "callback endpoint cannot be dialled");
                return None;
            }
        };
        if clients.len() >= MAX_CLIENTS {
            // Only allowed endpoints get here, and they are few; the bound
            // is a second line of defence.
            if let Some(k) = clients.keys().next().cloned() {
                clients.remove(&k);
            }
        }
        let client = AdapterCallbackClient::with_interceptor(channel, TracePropagation);
        clients.insert(endpoint.to_string(), client.clone());
        Some(client)
    }

    /// Forwards one notification to `endpoint` and waits for the
    /// scheduler's answer.
    pub async fn forward(&self, endpoint: &str, notification: ProviderNotification) -> Forwarded {
        if !self.allows(endpoint) {
            return Forwarded::Refused;
        }
        let Some(mut client) = self.client(endpoint) else {
            return Forwarded::Refused;
        };
        match tokio::time::timeout(self.timeout, client.notify_provider_change(notification)).await
        {
            Ok(Ok(_)) => Forwarded::Delivered,
            Ok(Err(s)) => match s.code() {
                tonic::Code::NotFound => Forwarded::UnknownChannel,
                tonic::Code::Unavailable
                | tonic::Code::DeadlineExceeded
                | tonic::Code::Cancelled
                | tonic::Code::Unknown
                | tonic::Code::ResourceExhausted
                | tonic::Code::Internal => {
                    tracing::debug!(code = ?s.code(), "scheduler did not take the notification");
                    Forwarded::Unreachable
                }
                code => {
                    tracing::warn!(?code, "scheduler refused a notification");
                    Forwarded::Refused
                }
            },
            Err(_) => Forwarded::Unreachable,
        }
    }
}

/// The TLS configuration of a webhook from PEM files (ring provider,
/// HTTP/1.1 and HTTP/2).
pub fn tls_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} holds no valid PEM certificate", cert.display()))?;
    anyhow::ensure!(!certs.is_empty(), "{} holds no certificate", cert.display());
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("cannot read a PEM private key from {}", key.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS protocol versions")?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .context("the webhook certificate and key do not match")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Where and how a webhook is served.
#[derive(Debug, Clone)]
pub struct WebhookServer {
    /// The adapter's name for logs (`google`, `microsoft`).
    pub provider: &'static str,
    /// The address to bind when no listener is handed over.
    pub listen: SocketAddr,
    /// The public URL (for the log line).
    pub public_url: Url,
    /// PEM certificate chain and key; plain HTTP without.
    pub tls: Option<(PathBuf, PathBuf)>,
}

impl WebhookServer {
    /// Binds (or takes `listener`), loads the TLS material and serves
    /// `router` in the background until `shutdown` resolves.
    pub async fn start(
        self,
        listener: Option<TcpListener>,
        router: Router,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<JoinHandle<()>> {
        let listener = match listener {
            Some(l) => l,
            None => TcpListener::bind(self.listen)
                .await
                .with_context(|| format!("cannot listen on {}", self.listen))?,
        };
        let tls = match &self.tls {
            Some((cert, key)) => Some(tls_config(cert, key)?),
            None => {
                tracing::warn!(
                    provider = self.provider,
                    "the webhook serves plain HTTP: terminate TLS in front of it (providers deliver only over HTTPS)"
                );
                None
            }
        };
        let addr = listener.local_addr()?;
        tracing::info!(provider = self.provider, %addr, public_url = %self.public_url, tls = tls.is_some(), "webhook listening");
        Ok(tokio::spawn(serve_webhook(listener, tls, router, shutdown)))
    }
}

/// Serves a webhook on `listener` (TLS when `tls` is given) until
/// `shutdown` resolves; in-flight requests get a few seconds to finish.
pub async fn serve_webhook(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: Router,
    shutdown: impl Future<Output = ()> + Send,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _peer) = match accepted {
                    Ok(c) => c,
                    Err(error) => {
                        tracing::debug!(%error, "webhook accept failed");
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let acceptor = acceptor.clone();
                let router = router.clone();
                let stop = stop_rx.clone();
                connections.spawn(async move {
                    match acceptor {
                        Some(a) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, a.accept(stream)).await {
                            Ok(Ok(tls)) => serve_connection(tls, router, stop).await,
                            Ok(Err(error)) => tracing::debug!(%error, "webhook TLS handshake failed"),
                            Err(_) => tracing::debug!("webhook TLS handshake timed out"),
                        },
                        None => serve_connection(stream, router, stop).await,
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = &mut shutdown => break,
        }
    }
    let _ = stop_tx.send(true);
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(5), drain)
        .await
        .is_err()
    {
        connections.abort_all();
    }
}

async fn serve_connection<S>(io: S, router: Router, mut stop: watch::Receiver<bool>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper_util::service::TowerToHyperService::new(router);
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%error, "webhook connection ended with an error");
            }
        }
        _ = async { drop(stop.wait_for(|s| *s).await) } => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags<'a>(public: Option<&'a str>, allowed: &'a [String]) -> WebhookFlags<'a> {
        WebhookFlags {
            public_url: public,
            tls_cert: None,
            tls_key: None,
            allowed_callback_endpoints: allowed,
        }
    }

    #[test]
    fn push_needs_allowed_endpoints_and_a_usable_url() {
        assert_eq!(flags(None, &[]).check(), Ok(None));
        assert_eq!(
            flags(Some("https://hooks.example/graph"), &[])
                .check()
                .unwrap_err()
                .flag,
            "allowed-callback-endpoint"
        );
        let allowed = vec!["http://scheduler:50051".to_string()];
        assert_eq!(
            flags(Some("https://hooks.example/graph"), &allowed)
                .check()
                .unwrap()
                .unwrap()
                .as_str(),
            "https://hooks.example/graph"
        );
        assert_eq!(
            flags(Some("ftp://x"), &allowed).check().unwrap_err().flag,
            "webhook-public-url"
        );
        let bad = vec!["a\nb".to_string()];
        assert_eq!(
            flags(None, &bad).check().unwrap_err().flag,
            "allowed-callback-endpoint"
        );
        let half = WebhookFlags {
            tls_cert: Some(Path::new("cert.pem")),
            ..flags(None, &[])
        };
        assert_eq!(half.check().unwrap_err().flag, "webhook-tls-cert");
    }

    #[test]
    fn only_allow_listed_endpoints_are_forwarded_to() {
        let none = Notifier::new(vec![], Duration::from_secs(1));
        assert!(!none.allows("http://anything:1"));
        let n = Notifier::new(
            vec!["http://scheduler:50051".into()],
            Duration::from_secs(1),
        );
        assert!(n.allows("http://scheduler:50051"));
        assert!(!n.allows("http://elsewhere:50051"));
    }

    #[tokio::test]
    async fn an_unreachable_scheduler_is_reported_for_a_retry() {
        // Nothing listens on port 1 of the loopback.
        let n = Notifier::new(vec!["127.0.0.1:1".into()], Duration::from_secs(2));
        let note = ProviderNotification {
            channel_id: "ch".into(),
            channel_token: "t".into(),
            resource_state: "exists".into(),
            message_number: 2,
        };
        assert_eq!(
            n.forward("127.0.0.1:1", note.clone()).await,
            Forwarded::Unreachable
        );
        assert_eq!(n.forward("127.0.0.1:2", note).await, Forwarded::Refused);
    }
}
