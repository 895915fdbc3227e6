//! Clients of the configured adapters, one per provider, with each adapter's
//! capabilities asked once and cached. Every call carries the current trace
//! context and a deadline.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use calbridge::pb;
use calbridge::pb::calendar_adapter_client::CalendarAdapterClient;
use calbridge::ErrorKind;
use calbridge_runtime::metrics::{Rpc, RpcLayer};
use calbridge_runtime::tls::ClientTls;
use calbridge_runtime::TracePropagation;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::config::ProviderKey;

/// A client of one adapter: each call carries the trace context and is
/// timed (`rpc.client.duration`).
pub type AdapterClient = CalendarAdapterClient<InterceptedService<Rpc<Channel>, TracePropagation>>;

/// The configured adapters.
pub struct Adapters {
    clients: HashMap<ProviderKey, AdapterClient>,
    capabilities: Mutex<HashMap<ProviderKey, pb::AdapterCapabilities>>,
}

/// How long one adapter call may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

impl Adapters {
    /// Lazily connected plaintext clients for the configured endpoints.
    pub fn new(
        endpoints: &std::collections::BTreeMap<ProviderKey, String>,
    ) -> Result<Adapters, String> {
        Self::connect(endpoints, None)
    }

    /// Lazily connected clients for the configured endpoints: `https://`
    /// ones over TLS with `tls` (the adapters' CA, checked against the
    /// URL's host, and the scheduler's client certificate).
    pub fn connect(
        endpoints: &std::collections::BTreeMap<ProviderKey, String>,
        tls: Option<&ClientTls>,
    ) -> Result<Adapters, String> {
        let mut clients = HashMap::new();
        for (p, url) in endpoints {
            let channel = calbridge_runtime::tls::channel(url, tls, |e| {
                e.connect_timeout(Duration::from_secs(5))
                    .timeout(CALL_TIMEOUT)
            })
            .map_err(|e| format!("adapter endpoint: {e}"))?;
            let channel = tower::Layer::layer(&RpcLayer::client(), channel);
            clients.insert(
                *p,
                CalendarAdapterClient::with_interceptor(channel, TracePropagation),
            );
        }
        Ok(Adapters {
            clients,
            capabilities: Mutex::new(HashMap::new()),
        })
    }

    /// The client of a provider's adapter.
    pub fn client(&self, provider: pb::Provider) -> Result<AdapterClient, ErrorKind> {
        self.clients.get(&ProviderKey(provider as i32)).cloned().ok_or_else(|| {
            let name = crate::providers::info(provider).map_or("unknown", |p| p.key);
            ErrorKind::FailedPrecondition(format!(
                "no adapter is configured for provider {name}: start one and pass --adapter {name}=URL"
            ))
        })
    }

    /// True when the provider has a configured adapter.
    pub fn has(&self, provider: pb::Provider) -> bool {
        self.clients.contains_key(&ProviderKey(provider as i32))
    }

    /// The capabilities of a provider's adapter (asked once).
    pub async fn capabilities(
        &self,
        provider: pb::Provider,
    ) -> Result<pb::AdapterCapabilities, ErrorKind> {
        if let Some(c) = self
            .capabilities
            .lock()
            .expect("lock poisoned")
            .get(&ProviderKey(provider as i32))
        {
            return Ok(*c);
        }
        let mut client = self.client(provider)?;
        let caps = client
            .describe(pb::DescribeRequest {})
            .await
            .map_err(|s| adapter_error(&s))?
            .into_inner();
        self.capabilities
            .lock()
            .expect("lock poisoned")
            .insert(ProviderKey(provider as i32), caps);
        Ok(caps)
    }
}

/// Reads an adapter's status as an error kind; transport failures become
/// UNAVAILABLE with a message that names the adapter, not the socket (a
/// refused TLS handshake says so, and is logged in full). A transport
/// failure is told by its source (the connection's own error), which a
/// status that came over the wire never has: never by its text.
pub fn adapter_error(s: &tonic::Status) -> ErrorKind {
    match ErrorKind::from_status(s) {
        ErrorKind::Unavailable { retry_after, .. }
            if s.code() == tonic::Code::Unavailable && std::error::Error::source(s).is_some() =>
        {
            let handshake =
                std::error::Error::source(s).and_then(calbridge_runtime::tls::handshake_error);
            let message = match handshake {
                Some(h) => {
                    tracing::warn!(error = %h, "TLS link to an adapter refused");
                    "the provider's adapter is not reachable: the TLS handshake failed (its certificate or ours was refused)".into()
                }
                None => "the provider's adapter is not reachable".into(),
            };
            ErrorKind::Unavailable {
                message,
                retry_after,
            }
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_transport_failure_names_the_adapter_and_an_answer_keeps_its_message() {
        // Nothing listens on a port just released.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect_lazy();
        let status = CalendarAdapterClient::with_interceptor(channel, TracePropagation)
            .describe(pb::DescribeRequest {})
            .await
            .unwrap_err();
        match adapter_error(&status) {
            ErrorKind::Unavailable { message, .. } => {
                assert_eq!(message, "the provider's adapter is not reachable")
            }
            other => panic!("{other:?}"),
        }
        // An adapter's own UNAVAILABLE answer, whatever its words, is kept.
        let answered = tonic::Status::unavailable("transport of the provider: try later");
        match adapter_error(&answered) {
            ErrorKind::Unavailable { message, .. } => {
                assert_eq!(message, "transport of the provider: try later")
            }
            other => panic!("{other:?}"),
        }
    }
}
