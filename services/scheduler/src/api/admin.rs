//! The operator's Admin service: tenants, API keys and the master key's
//! rotation. Every request carries the admin token, checked by
//! [`super::auth::AdminAuth`].

use std::sync::Arc;

use calbridge::limits;
use calbridge::pb;
use calbridge::validate::check_id;
use calbridge::{ErrorKind, Invalid};
use tonic::{Request, Response};

use super::checks::require_id;
use super::Reply;
use crate::state::Shared;
use crate::tenants;

/// The operator API.
pub struct AdminApi {
    shared: Arc<Shared>,
}

impl AdminApi {
    /// A service over the shared state.
    pub fn new(shared: Arc<Shared>) -> Self {
        AdminApi { shared }
    }
}

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminApi {
    #[tracing::instrument(skip_all)]
    async fn create_tenant(&self, req: Request<pb::CreateTenantRequest>) -> Reply<pb::Tenant> {
        let r = req.into_inner();
        let mut inv = Invalid::default();
        check_id(&mut inv, "name", &r.name, 128);
        inv.into_result().map_err(ErrorKind::from)?;
        Ok(Response::new(tenants::create(&self.shared, r.name).await?))
    }

    async fn list_tenants(
        &self,
        _req: Request<pb::ListTenantsRequest>,
    ) -> Reply<pb::ListTenantsResponse> {
        Ok(Response::new(pb::ListTenantsResponse {
            tenants: tenants::list(&self.shared)?,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn create_api_key(
        &self,
        req: Request<pb::CreateApiKeyRequest>,
    ) -> Reply<pb::CreateApiKeyResponse> {
        let r = req.into_inner();
        let mut inv = Invalid::default();
        check_id(&mut inv, "tenant_id", &r.tenant_id, limits::MAX_ID_BYTES);
        if r.label.len() > 128 {
            inv.push("label", "must be at most 128 bytes");
        }
        inv.into_result().map_err(ErrorKind::from)?;
        Ok(Response::new(
            tenants::create_api_key(&self.shared, r.tenant_id, r.label).await?,
        ))
    }

    async fn revoke_api_key(
        &self,
        req: Request<pb::RevokeApiKeyRequest>,
    ) -> Reply<pb::RevokeApiKeyResponse> {
        let r = req.into_inner();
        require_id("key_id", &r.key_id)?;
        tenants::revoke_api_key(&self.shared, &r.key_id).await?;
        Ok(Response::new(pb::RevokeApiKeyResponse {}))
    }

    #[tracing::instrument(skip_all)]
    async fn rotate_master_key(
        &self,
        _req: Request<pb::RotateMasterKeyRequest>,
    ) -> Reply<pb::RotateMasterKeyResponse> {
        let r = crate::secrets::rotate_master_key(&self.shared.config, &self.shared.vault).await?;
        Ok(Response::new(pb::RotateMasterKeyResponse {
            account_keys: u32::try_from(r.account_keys).unwrap_or(u32::MAX),
            rotated: r.rotated,
        }))
    }
}
