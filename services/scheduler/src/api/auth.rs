//! Authentication in front of the services, as tonic interceptors: a
//! Scheduler request's API key names its tenant (then the tenant's request
//! rate quota is taken from), and the handler receives the [`Tenant`];
//! an Admin request must carry the admin token.

use std::sync::Arc;

use calbridge::ErrorKind;
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::crypto::{constant_time_eq, hash_hex};
use crate::ids::TenantId;
use crate::quota::RequestQuota;
use crate::state::Shared;

/// The tenant a request's API key authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant(TenantId);

impl Tenant {
    /// The tenant's id.
    pub fn id(&self) -> &TenantId {
        &self.0
    }

    /// The tenant's id, owned.
    pub fn into_id(self) -> TenantId {
        self.0
    }

    /// The tenant [`TenantAuth`] put on a request (INTERNAL if the request
    /// did not pass through it: a wiring mistake, never the caller's).
    pub fn of<T>(req: &Request<T>) -> Result<Tenant, Status> {
        req.extensions()
            .get::<Tenant>()
            .cloned()
            .ok_or_else(|| ErrorKind::Internal("the request was not authenticated".into()).into())
    }
}

/// The bearer token of a request's `authorization` header.
fn bearer<T>(req: &Request<T>) -> Option<String> {
    req.metadata()
        .get(calbridge::metadata::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|s| s.trim().to_string())
}

/// Authenticates Scheduler requests by API key and applies the tenant's
/// request rate quota (RESOURCE_EXHAUSTED with the delay to wait).
#[derive(Clone)]
pub struct TenantAuth {
    shared: Arc<Shared>,
    quota: Arc<RequestQuota>,
}

impl TenantAuth {
    /// Authentication against the shared state's API keys, with the quota
    /// its configuration sets.
    pub fn new(shared: Arc<Shared>) -> Self {
        let q = &shared.config.quotas;
        let quota = Arc::new(RequestQuota::new(q.requests_per_second, q.request_burst));
        TenantAuth { shared, quota }
    }

    /// The tenant a request's API key authenticates.
    fn authenticate<T>(&self, req: &Request<T>) -> Result<Tenant, ErrorKind> {
        let key = bearer(req).ok_or_else(|| {
            ErrorKind::Unauthenticated("missing API key: send `authorization: Bearer <key>`".into())
        })?;
        match crate::tenants::by_api_key(&self.shared, &key)? {
            Some(tenant) => Ok(Tenant(tenant)),
            None => Err(ErrorKind::Unauthenticated(
                "unknown or revoked API key".into(),
            )),
        }
    }
}

impl Interceptor for TenantAuth {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let tenant = self.authenticate(&req)?;
        if let Err(wait) = self.quota.check(tenant.id()) {
            return Err(ErrorKind::RateLimited {
                message: "the tenant's request rate quota (quotas.requests_per_second) is used up: retry after the delay given".into(),
                retry_after: Some(wait),
            }
            .into());
        }
        req.extensions_mut().insert(tenant);
        Ok(req)
    }
}

/// Lets through Admin requests that carry the admin token.
#[derive(Clone)]
pub struct AdminAuth {
    admin_token_hash: Arc<str>,
}

impl AdminAuth {
    /// Accepts the admin token whose hash is given.
    pub fn new(admin_token_hash: String) -> Self {
        AdminAuth {
            admin_token_hash: admin_token_hash.into(),
        }
    }
}

impl Interceptor for AdminAuth {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        match bearer(&req) {
            Some(t)
                if constant_time_eq(
                    hash_hex(&[&t]).as_bytes(),
                    self.admin_token_hash.as_bytes(),
                ) =>
            {
                Ok(req)
            }
            Some(_) => Err(ErrorKind::Unauthenticated("wrong admin token".into()).into()),
            None => Err(ErrorKind::Unauthenticated(
                "missing admin token: send `authorization: Bearer <admin token>`".into(),
            )
            .into()),
        }
    }
}
