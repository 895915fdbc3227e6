//! Tenants and their API keys (the operator's), and finding the tenant an
//! API key belongs to (every Scheduler API request's).

use calbridge::pb;
use calbridge::ErrorKind;

use crate::clock::{now_ms, ts_ms as ts};
use crate::crypto::{hash_hex, random_hex};
use crate::ids::TenantId;
use crate::state::Shared;
use crate::store::{ApiKeyRecord, TenantRecord};

/// The tenant an API key belongs to; `None` for an unknown or revoked key.
pub fn by_api_key(shared: &Shared, api_key: &str) -> Result<Option<TenantId>, ErrorKind> {
    Ok(shared
        .store
        .api_key(&hash_hex(&[api_key]))?
        .map(|k| k.tenant_id))
}

fn tenant_pb(t: TenantRecord) -> pb::Tenant {
    pb::Tenant {
        tenant_id: t.tenant_id.into_string(),
        name: t.name,
        created_at: ts(t.created_ms),
    }
}

/// Creates a tenant.
pub async fn create(shared: &Shared, name: String) -> Result<pb::Tenant, ErrorKind> {
    let t = TenantRecord {
        tenant_id: format!("ten_{}", random_hex(8)).into(),
        name,
        created_ms: now_ms(),
    };
    shared.store.put_tenant(&t)?;
    shared.store.flush().await?;
    Ok(tenant_pb(t))
}

/// Every tenant.
pub fn list(shared: &Shared) -> Result<Vec<pb::Tenant>, ErrorKind> {
    Ok(shared.store.tenants()?.into_iter().map(tenant_pb).collect())
}

/// Makes an API key for a tenant: only its hash is stored, and the key is
/// shown this once.
pub async fn create_api_key(
    shared: &Shared,
    tenant_id: String,
    label: String,
) -> Result<pb::CreateApiKeyResponse, ErrorKind> {
    if shared.store.tenant(&tenant_id)?.is_none() {
        return Err(ErrorKind::NotFound(format!(
            "tenant {tenant_id:?} not found"
        )));
    }
    let key_id = format!("key_{}", random_hex(8));
    let api_key = format!("cbk_{}", random_hex(24));
    shared.store.put_api_key(
        &hash_hex(&[&api_key]),
        &ApiKeyRecord {
            key_id: key_id.clone(),
            tenant_id: tenant_id.into(),
            label,
            created_ms: now_ms(),
        },
    )?;
    shared.store.flush().await?;
    Ok(pb::CreateApiKeyResponse { key_id, api_key })
}

/// Revokes an API key.
pub async fn revoke_api_key(shared: &Shared, key_id: &str) -> Result<(), ErrorKind> {
    if !shared.store.revoke_api_key(key_id)? {
        return Err(ErrorKind::NotFound(format!("API key {key_id:?} not found")));
    }
    shared.store.flush().await?;
    Ok(())
}
