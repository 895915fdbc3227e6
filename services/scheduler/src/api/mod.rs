//! The gRPC services the scheduler serves, and the OAuth callback page:
//! the public `Scheduler` API (tenant-authenticated, see [`auth`]), the
//! operator `Admin` API (admin-token authenticated) and the
//! `AdapterCallback` that adapters notify. Handlers only check the request
//! (naming fields), call one domain function and answer; errors become
//! statuses in one place (`calbridge::ErrorKind` → `tonic::Status`).

mod admin;
pub mod auth;
mod callback;
mod checks;
pub mod oauth_callback;
mod scheduler;

use std::sync::Arc;

use calbridge::pb;
use tonic::service::interceptor::InterceptedService;

pub use admin::AdminApi;
pub use auth::{AdminAuth, Tenant, TenantAuth};
pub use callback::CallbackApi;
pub use scheduler::SchedulerApi;

use crate::state::Shared;

/// What a handler answers.
type Reply<T> = Result<tonic::Response<T>, tonic::Status>;

/// The Scheduler service, behind tenant authentication and the tenants'
/// request rate quota.
pub fn scheduler_service(
    shared: Arc<Shared>,
) -> InterceptedService<pb::scheduler_server::SchedulerServer<SchedulerApi>, TenantAuth> {
    pb::scheduler_server::SchedulerServer::with_interceptor(
        SchedulerApi::new(shared.clone()),
        TenantAuth::new(shared),
    )
}

/// The Admin service, behind the admin token whose hash is given.
pub fn admin_service(
    shared: Arc<Shared>,
    admin_token_hash: String,
) -> InterceptedService<pb::admin_server::AdminServer<AdminApi>, AdminAuth> {
    pb::admin_server::AdminServer::with_interceptor(
        AdminApi::new(shared),
        AdminAuth::new(admin_token_hash),
    )
}

/// The AdapterCallback service (each notification proves itself with its
/// channel's token).
pub fn callback_service(
    shared: Arc<Shared>,
) -> pb::adapter_callback_server::AdapterCallbackServer<CallbackApi> {
    pb::adapter_callback_server::AdapterCallbackServer::new(CallbackApi::new(shared))
}
