//! Delivery of push notifications to the scheduler's AdapterCallback: one
//! lazily connected client per callback endpoint, one spawned task per
//! notification, and channels the scheduler answers NOT_FOUND for dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tracing::Instrument;

use calbridge::pb::adapter_callback_client::AdapterCallbackClient;
use calbridge::pb::ProviderNotification;
use calbridge_runtime::TracePropagation;

use crate::provider::{Notification, Provider};

type CallbackClient = AdapterCallbackClient<InterceptedService<Channel, TracePropagation>>;

/// Sends provider notifications; cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    provider: Arc<Mutex<Provider>>,
    clients: Arc<Mutex<HashMap<String, CallbackClient>>>,
    tls: Option<calbridge_runtime::tls::ClientTls>,
}

impl Notifier {
    /// A notifier that drops channels from `provider` when the scheduler
    /// no longer knows them.
    pub fn new(provider: Arc<Mutex<Provider>>) -> Self {
        Notifier {
            provider,
            clients: Arc::default(),
            tls: None,
        }
    }

    /// Dials `https://` callback endpoints with `tls`.
    pub fn with_tls(mut self, tls: Option<calbridge_runtime::tls::ClientTls>) -> Self {
        self.tls = tls;
        self
    }

    fn client(&self, endpoint: &str) -> Result<CallbackClient, String> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = clients.get(endpoint) {
            return Ok(c.clone());
        }
        let uri = if endpoint.contains("://") {
            endpoint.to_string()
        } else {
            format!("http://{endpoint}")
        };
        let channel = calbridge_runtime::tls::channel(&uri, self.tls.as_ref(), |e| e)
            .map_err(|e| e.to_string())?;
        let client = AdapterCallbackClient::with_interceptor(channel, TracePropagation);
        clients.insert(endpoint.to_string(), client.clone());
        Ok(client)
    }

    /// Delivers each notification in its own task; never blocks the caller.
    pub fn send(&self, notifications: Vec<Notification>) {
        for n in notifications {
            let mut client = match self.client(&n.callback_endpoint) {
                Ok(c) => c,
                Err(error) => {
                    tracing::debug!(channel_id = %n.channel_id, %error, "bad callback endpoint");
                    continue;
                }
            };
            let provider = self.provider.clone();
            let span = tracing::debug_span!("notify_provider_change", channel_id = %n.channel_id);
            tokio::spawn(
                async move {
                    let request = ProviderNotification {
                        channel_id: n.channel_id.clone(),
                        channel_token: n.channel_token,
                        resource_state: "exists".into(),
                        message_number: n.message_number,
                    };
                    match client.notify_provider_change(request).await {
                        Ok(_) => tracing::debug!("notification delivered"),
                        Err(status) if status.code() == tonic::Code::NotFound => {
                            tracing::debug!("scheduler does not know the channel; dropping it");
                            provider
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .drop_channel(&n.channel_id);
                        }
                        Err(status) => {
                            tracing::debug!(code = ?status.code(), "notification not delivered")
                        }
                    }
                }
                .instrument(span),
            );
        }
    }
}
