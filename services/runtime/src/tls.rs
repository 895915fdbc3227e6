//! Transport security of the gRPC links: TLS server and client
//! configurations (rustls, ring provider) built from PEM files that are
//! re-read when they change, so that a rotated certificate (cert-manager
//! replaces the files in place) is used by the next handshake while
//! established connections carry on. Also what serves gRPC over TLS (a
//! stream of handshaken connections for tonic) and what dials it (a
//! connector that checks the server's name against the URL's host), and
//! the flags of a process's own TLS.
//!
//! A half-written rotation (a certificate that does not match its key, a
//! truncated PEM file) keeps the previous material and logs a warning; the
//! files are looked at again a second later.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::transport::{Channel, Endpoint};

use crate::Incoming;

/// How long a TLS handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often, at most, the files are looked at for a change.
const RECHECK: Duration = Duration::from_secs(1);
/// Handshaken connections waiting for the server to take them.
const ACCEPT_QUEUE: usize = 64;

/// Why TLS material cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A file holds no usable PEM material.
    #[error("{path}: {problem}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The material does not fit together (a certificate that does not
    /// match its key, an unusable CA).
    #[error("{0}")]
    Config(String),
}

fn ring() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            problem: format!("not valid PEM certificates: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            problem: "holds no certificate".into(),
        });
    }
    Ok(certs)
}

fn key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| TlsError::Pem {
        path: path.to_path_buf(),
        problem: format!("holds no PEM private key: {e}"),
    })
}

fn roots(path: &Path, pem: &[u8]) -> Result<Arc<RootCertStore>, TlsError> {
    let mut store = RootCertStore::empty();
    for c in certs(path, pem)? {
        store.add(c).map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            problem: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(Arc::new(store))
}

/// The contents of the watched files, in the order given.
type Contents = Vec<Vec<u8>>;

fn read_all(paths: &[PathBuf]) -> Result<Contents, TlsError> {
    paths
        .iter()
        .map(|p| {
            std::fs::read(p).map_err(|source| TlsError::Read {
                path: p.clone(),
                source,
            })
        })
        .collect()
}

type Build<C> = Box<dyn Fn(&[PathBuf], &Contents) -> Result<Arc<C>, TlsError> + Send + Sync>;

struct State<C> {
    current: Arc<C>,
    seen: Contents,
    checked: Instant,
}

/// A configuration built from files, rebuilt when their contents change
/// (looked at on use, at most once a second).
struct Reloading<C> {
    what: &'static str,
    paths: Vec<PathBuf>,
    build: Build<C>,
    state: Mutex<State<C>>,
}

impl<C> Reloading<C> {
    fn new(what: &'static str, paths: Vec<PathBuf>, build: Build<C>) -> Result<Self, TlsError> {
        let seen = read_all(&paths)?;
        let current = build(&paths, &seen)?;
        Ok(Reloading {
            what,
            paths,
            build,
            state: Mutex::new(State {
                current,
                seen,
                checked: Instant::now(),
            }),
        })
    }

    fn current(&self) -> Arc<C> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.checked.elapsed() >= RECHECK {
            state.checked = Instant::now();
            match read_all(&self.paths) {
                Ok(contents) if contents != state.seen => {
                    match (self.build)(&self.paths, &contents) {
                        Ok(next) => {
                            state.current = next;
                            tracing::info!(what = self.what, "TLS material reloaded");
                        }
                        Err(error) => tracing::warn!(
                            what = self.what,
                            %error,
                            "changed TLS files are not usable (yet); the previous certificate stays in use"
                        ),
                    }
                    // Not retried until the files change again.
                    state.seen = contents;
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(
                    what = self.what,
                    %error,
                    "TLS files not readable; the previous certificate stays in use"
                ),
            }
        }
        state.current.clone()
    }
}

/// A TLS server configuration from a certificate chain and key, and
/// optionally a CA that client certificates must chain to (then a client
/// without one is refused). Reloaded when the files change; cheap to clone.
#[derive(Clone)]
pub struct ServerTls {
    inner: Arc<Reloading<ServerConfig>>,
    verifies_clients: bool,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.inner.paths)
            .finish()
    }
}

impl ServerTls {
    /// Loads the files; fails when they are missing or do not fit
    /// together.
    pub fn new(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<Self, TlsError> {
        let mut paths = vec![cert.to_path_buf(), key.to_path_buf()];
        paths.extend(client_ca.map(Path::to_path_buf));
        let build: Build<ServerConfig> = Box::new(|paths, contents| {
            let chain = certs(&paths[0], &contents[0])?;
            let key = self::key(&paths[1], &contents[1])?;
            let builder = ServerConfig::builder_with_provider(ring())
                .with_safe_default_protocol_versions()
                .map_err(|e| TlsError::Config(format!("TLS protocol versions: {e}")))?;
            let builder = match (paths.get(2), contents.get(2)) {
                (Some(path), Some(pem)) => {
                    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                        roots(path, pem)?,
                        ring(),
                    )
                    .build()
                    .map_err(|e| TlsError::Config(format!("{}: client CA: {e}", path.display())))?;
                    builder.with_client_cert_verifier(verifier)
                }
                _ => builder.with_no_client_auth(),
            };
            let mut config = builder.with_single_cert(chain, key).map_err(|e| {
                TlsError::Config(format!(
                    "{} and {} do not make a usable certificate and key: {e}",
                    paths[0].display(),
                    paths[1].display()
                ))
            })?;
            config.alpn_protocols = vec![b"h2".to_vec()];
            Ok(Arc::new(config))
        });
        Ok(ServerTls {
            inner: Arc::new(Reloading::new("server", paths, build)?),
            verifies_clients: client_ca.is_some(),
        })
    }

    /// The configuration for the next handshake.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.inner.current()
    }

    /// True when clients must present a certificate.
    pub fn verifies_clients(&self) -> bool {
        self.verifies_clients
    }
}

/// A TLS client configuration: the CA that server certificates must chain
/// to and, optionally, the certificate and key this process presents
/// (mutual TLS). Reloaded when the files change; cheap to clone.
#[derive(Clone)]
pub struct ClientTls {
    inner: Arc<Reloading<ClientConfig>>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("files", &self.inner.paths)
            .finish()
    }
}

impl ClientTls {
    /// Loads the files; fails when they are missing or do not fit
    /// together.
    pub fn new(ca: &Path, identity: Option<(&Path, &Path)>) -> Result<Self, TlsError> {
        let mut paths = vec![ca.to_path_buf()];
        if let Some((cert, key)) = identity {
            paths.push(cert.to_path_buf());
            paths.push(key.to_path_buf());
        }
        let build: Build<ClientConfig> = Box::new(|paths, contents| {
            let builder = ClientConfig::builder_with_provider(ring())
                .with_safe_default_protocol_versions()
                .map_err(|e| TlsError::Config(format!("TLS protocol versions: {e}")))?
                .with_root_certificates(roots(&paths[0], &contents[0])?);
            let mut config = if paths.len() == 3 {
                let chain = certs(&paths[1], &contents[1])?;
                let key = self::key(&paths[2], &contents[2])?;
                builder.with_client_auth_cert(chain, key).map_err(|e| {
                    TlsError::Config(format!(
                        "{} and {} do not make a usable certificate and key: {e}",
                        paths[1].display(),
                        paths[2].display()
                    ))
                })?
            } else {
                builder.with_no_client_auth()
            };
            config.alpn_protocols = vec![b"h2".to_vec()];
            Ok(Arc::new(config))
        });
        Ok(ClientTls {
            inner: Arc::new(Reloading::new("client", paths, build)?),
        })
    }

    /// The configuration for the next handshake.
    pub fn config(&self) -> Arc<ClientConfig> {
        self.inner.current()
    }
}

/// A gRPC connection over TLS, as tonic's server takes it; its connect
/// info is the TCP one, so `Request::remote_addr` keeps working.
pub struct TlsConn(tokio_rustls::server::TlsStream<TcpStream>);

impl TlsConn {
    /// The client's certificate chain, when it presented one.
    pub fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        self.0.get_ref().1.peer_certificates()
    }
}

impl Connected for TlsConn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        let tcp = self.0.get_ref().0;
        TcpConnectInfo {
            local_addr: tcp.local_addr().ok(),
            remote_addr: tcp.peer_addr().ok(),
        }
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

/// Handshaken TLS connections, for `serve_with_incoming*`.
pub type TlsIncoming =
    Pin<Box<dyn tokio_stream::Stream<Item = io::Result<TlsConn>> + Send + 'static>>;

/// Runs the TLS handshake on every accepted connection, each on its own
/// task with [`HANDSHAKE_TIMEOUT`], and yields those that complete; failed
/// handshakes (no client certificate, a foreign CA, not TLS at all) are
/// logged and dropped. Accepting stops when the stream is dropped.
pub fn tls_incoming(mut incoming: Incoming, tls: ServerTls) -> TlsIncoming {
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<TlsConn>>(ACCEPT_QUEUE);
    tokio::spawn(async move {
        loop {
            let conn = tokio::select! {
                c = tokio_stream::StreamExt::next(&mut incoming) => c,
                _ = tx.closed() => return,
            };
            let tcp = match conn {
                Some(Ok(tcp)) => tcp,
                Some(Err(error)) => {
                    tracing::debug!(%error, "accept failed");
                    continue;
                }
                None => return,
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
            let tx = tx.clone();
            tokio::spawn(async move {
                let peer = tcp.peer_addr().ok();
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(TlsConn(stream))).await;
                    }
                    Ok(Err(error)) => {
                        tracing::info!(peer = ?peer, %error, "TLS handshake refused")
                    }
                    Err(_) => tracing::info!(peer = ?peer, "TLS handshake timed out"),
                }
            });
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// A TLS handshake with a server failed: its certificate was refused (for
/// another name, from another CA, expired) or it refused ours. Found in
/// the source chain of a failed call's status.
#[derive(Debug, thiserror::Error)]
#[error("TLS handshake with {host} failed: {detail}")]
pub struct HandshakeError {
    /// The host dialled.
    pub host: String,
    /// What rustls said.
    pub detail: String,
}

/// Finds a [`HandshakeError`] in an error's source chain.
pub fn handshake_error<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a HandshakeError> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(h) = e.downcast_ref::<HandshakeError>() {
            return Some(h);
        }
        next = e.source();
    }
    None
}

/// Dials `https://` URIs over TLS with a [`ClientTls`]: TCP (no Nagle),
/// then a handshake that checks the server's certificate against the CA
/// and against the URI's host (a DNS name or an IP address).
#[derive(Clone, Debug)]
pub struct TlsConnector {
    tls: ClientTls,
}

impl TlsConnector {
    /// A connector with the given client configuration.
    pub fn new(tls: ClientTls) -> Self {
        TlsConnector { tls }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower::Service<http::Uri> for TlsConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let config = self.tls.config();
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| format!("{uri} has no host"))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().unwrap_or(443);
            let name = ServerName::try_from(host.clone())
                .map_err(|e| format!("{host} is not a server name: {e}"))?;
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| HandshakeError {
                    host: host.clone(),
                    detail: e.to_string(),
                })?;
            Ok(TokioIo::new(stream))
        })
    }
}

/// Why a channel cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// Not a URI tonic can dial.
    #[error("{url} is not a valid endpoint: {detail}")]
    Url {
        /// The URL.
        url: String,
        /// Why.
        detail: String,
    },
    /// An `https://` URL with no CA to check the server against.
    #[error("{0} is an https:// URL but no CA is configured to verify its certificate")]
    NoCa(String),
}

/// A lazily connected channel to `url`: over TLS with `tls` for
/// `https://`, plain HTTP/2 for `http://`. `configure` sets timeouts and
/// the like on the endpoint.
pub fn channel(
    url: &str,
    tls: Option<&ClientTls>,
    configure: impl FnOnce(Endpoint) -> Endpoint,
) -> Result<Channel, ChannelError> {
    let endpoint = Endpoint::from_shared(url.to_string()).map_err(|e| ChannelError::Url {
        url: url.to_string(),
        detail: e.to_string(),
    })?;
    let endpoint = configure(endpoint.tcp_nodelay(true));
    if endpoint.uri().scheme_str() == Some("https") {
        let tls = tls.ok_or_else(|| ChannelError::NoCa(url.to_string()))?;
        Ok(endpoint.connect_with_connector_lazy(TlsConnector::new(tls.clone())))
    } else {
        Ok(endpoint.connect_lazy())
    }
}

/// The TLS flags of an adapter: its gRPC server's certificate, the CA its
/// clients' certificates must chain to, and the CA of the scheduler's
/// certificate for push callbacks. Flattened into each adapter's `Config`.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct TlsArgs {
    /// PEM certificate chain the gRPC server presents; with `--tls-key` the
    /// gRPC port speaks TLS only. Re-read when the file changes.
    #[arg(long, env = "CALBRIDGE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert`. Re-read when the file changes.
    #[arg(long, env = "CALBRIDGE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate(s): only clients presenting a certificate signed
    /// by one of them are answered (mutual TLS; give the CA that signs the
    /// scheduler's client certificate). Needs `--tls-cert`.
    #[arg(long, env = "CALBRIDGE_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// PEM CA certificate(s) of the scheduler's server certificate, for
    /// push callbacks to `https://` endpoints, where the adapter presents
    /// `--tls-cert` as its client certificate (default: `--tls-client-ca`).
    #[arg(long, env = "CALBRIDGE_SCHEDULER_CA")]
    pub scheduler_ca: Option<PathBuf>,
    /// Also serve gRPC health alone, plaintext, on this address (kubelet's
    /// gRPC probes cannot speak TLS; health reveals nothing).
    #[arg(long, env = "CALBRIDGE_HEALTH_LISTEN")]
    pub health_listen: Option<std::net::SocketAddr>,
}

impl TlsArgs {
    /// The gRPC server's TLS, when a certificate is configured.
    pub fn server(&self) -> Result<Option<ServerTls>, TlsError> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                ServerTls::new(cert, key, self.tls_client_ca.as_deref()).map(Some)
            }
            (None, None) if self.tls_client_ca.is_some() => Err(TlsError::Config(
                "--tls-client-ca needs --tls-cert and --tls-key".into(),
            )),
            (None, None) => Ok(None),
            _ => Err(TlsError::Config(
                "give both --tls-cert and --tls-key, or neither".into(),
            )),
        }
    }

    /// `bound` with the gRPC server's TLS and, with `--health-listen`, the
    /// plaintext health listener bound.
    pub async fn apply(&self, bound: crate::Bound) -> Result<crate::Bound, TlsError> {
        let health = match self.health_listen {
            Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                TlsError::Config(format!("--health-listen {addr}: cannot listen: {e}"))
            })?),
            None => None,
        };
        Ok(bound.with_tls(self.server()?).with_health_listener(health))
    }

    /// The client TLS of push callbacks to the scheduler, when a CA for
    /// its certificate is known.
    pub fn callback_client(&self) -> Result<Option<ClientTls>, TlsError> {
        let Some(ca) = self.scheduler_ca.as_ref().or(self.tls_client_ca.as_ref()) else {
            return Ok(None);
        };
        let identity = self.tls_cert.as_deref().zip(self.tls_key.as_deref());
        ClientTls::new(ca, identity).map(Some)
    }
}

#[cfg(test)]
mod tests;
