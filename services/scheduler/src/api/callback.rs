//! The AdapterCallback service: adapters relay the providers' change
//! notifications here, each proven by its channel's token.

use std::sync::Arc;

use calbridge::pb;
use tonic::{Request, Response};

use super::Reply;
use crate::state::Shared;

/// Receives adapters' provider notifications.
pub struct CallbackApi {
    shared: Arc<Shared>,
}

impl CallbackApi {
    /// A service over the shared state.
    pub fn new(shared: Arc<Shared>) -> Self {
        CallbackApi { shared }
    }
}

#[tonic::async_trait]
impl pb::adapter_callback_server::AdapterCallback for CallbackApi {
    #[tracing::instrument(skip_all, fields(channel_id = %req.get_ref().channel_id))]
    async fn notify_provider_change(
        &self,
        req: Request<pb::ProviderNotification>,
    ) -> Reply<pb::ProviderNotificationAck> {
        let n = req.into_inner();
        let replace = crate::watches::notified(
            &self.shared,
            &n.channel_id,
            &n.channel_token,
            &n.resource_state,
        )?;
        if let Some(ch) = replace {
            tracing::info!(state = %n.resource_state, "the provider asks for the push channel to be replaced");
            let shared = self.shared.clone();
            tokio::spawn(async move { crate::watches::renew_channel(&shared, &ch).await });
        }
        Ok(Response::new(pb::ProviderNotificationAck {}))
    }
}
