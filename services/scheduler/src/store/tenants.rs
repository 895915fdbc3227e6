//! Tenants, API keys, pending OAuth authorisations, holds and working hours.

use sled::Transactional;

use super::*;
use crate::ids::TenantId;

impl Store {
    /// Stores a tenant.
    pub fn put_tenant(&self, t: &TenantRecord) -> Result<(), StoreError> {
        self.tenants.insert(t.tenant_id.as_bytes(), enc(t))?;
        Ok(())
    }

    /// A tenant.
    pub fn tenant(&self, id: &str) -> Result<Option<TenantRecord>, StoreError> {
        self.tenants.get(id)?.map(|v| dec("tenant", &v)).transpose()
    }

    /// Every tenant.
    pub fn tenants(&self) -> Result<Vec<TenantRecord>, StoreError> {
        self.tenants
            .iter()
            .values()
            .map(|v| dec("tenant", &v?))
            .collect()
    }

    /// Stores an API key under its hash.
    pub fn put_api_key(&self, hash: &str, k: &ApiKeyRecord) -> Result<(), StoreError> {
        (&self.api_keys, &self.api_key_ids).transaction(|(keys, ids)| {
            keys.insert(hash.as_bytes(), enc(k))?;
            ids.insert(k.key_id.as_bytes(), hash.as_bytes())?;
            Ok(())
        })?;
        Ok(())
    }

    /// The key stored under `hash`.
    pub fn api_key(&self, hash: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        self.api_keys
            .get(hash)?
            .map(|v| dec("api key", &v))
            .transpose()
    }

    /// Removes a key by its public id; false when unknown.
    pub fn revoke_api_key(&self, key_id: &str) -> Result<bool, StoreError> {
        let found = (&self.api_keys, &self.api_key_ids).transaction(|(keys, ids)| {
            match ids.remove(key_id.as_bytes())? {
                Some(hash) => {
                    keys.remove(hash)?;
                    Ok(true)
                }
                None => Ok(false),
            }
        })?;
        Ok(found)
    }

    /// Stores a pending authorisation under the hash of its state.
    pub fn put_auth_state(&self, state_hash: &str, r: &AuthStateRecord) -> Result<(), StoreError> {
        self.auth_states.insert(state_hash.as_bytes(), enc(r))?;
        Ok(())
    }

    /// A pending authorisation, left in place.
    pub fn auth_state(&self, state_hash: &str) -> Result<Option<AuthStateRecord>, StoreError> {
        self.auth_states
            .get(state_hash.as_bytes())?
            .map(|v| dec("auth state", &v))
            .transpose()
    }

    /// Removes and returns a pending authorisation: of two callers with the
    /// same state, only one gets it.
    pub fn take_auth_state(&self, state_hash: &str) -> Result<Option<AuthStateRecord>, StoreError> {
        self.auth_states
            .remove(state_hash.as_bytes())?
            .map(|v| dec("auth state", &v))
            .transpose()
    }

    /// Removes pending authorisations that expired before `now_ms`.
    pub fn prune_auth_states(&self, now_ms: i64) -> Result<usize, StoreError> {
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for item in self.auth_states.iter() {
            let (k, v) = item?;
            let r: AuthStateRecord = dec("auth state", &v)?;
            if r.expires_ms <= now_ms {
                batch.remove(k);
                n += 1;
            }
        }
        self.auth_states.apply_batch(batch)?;
        Ok(n)
    }

    /// Stores a hold (refused when it names a revoked account).
    pub fn put_hold(&self, tenant: &TenantId, h: &HoldRecord) -> Result<(), StoreError> {
        let bytes = enc(h);
        (&self.accounts, &self.holds).transaction(|(accounts, holds)| {
            for a in &h.account_ids {
                refuse_revoked(accounts, a)?;
            }
            holds.insert(key(&[tenant, &h.hold_id]), bytes.clone())?;
            Ok(())
        })?;
        Ok(())
    }

    /// A hold of a tenant.
    pub fn hold(&self, tenant: &TenantId, id: &str) -> Result<Option<HoldRecord>, StoreError> {
        self.holds
            .get(key(&[tenant, id]))?
            .map(|v| dec("hold", &v))
            .transpose()
    }

    /// Removes a hold; false when it was not there.
    pub fn remove_hold(&self, tenant: &TenantId, id: &str) -> Result<bool, StoreError> {
        Ok(self.holds.remove(key(&[tenant, id]))?.is_some())
    }

    /// A tenant's holds (expired ones included; callers filter).
    pub fn holds(&self, tenant: &TenantId) -> Result<Vec<HoldRecord>, StoreError> {
        self.holds
            .scan_prefix(prefix(&[tenant]))
            .values()
            .map(|v| dec("hold", &v?))
            .collect()
    }

    /// Removes every tenant's holds that expired before `now_ms`.
    pub fn prune_holds(&self, now_ms: i64) -> Result<usize, StoreError> {
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for item in self.holds.iter() {
            let (k, v) = item?;
            let h: HoldRecord = dec("hold", &v)?;
            if h.expires_ms <= now_ms {
                batch.remove(k);
                n += 1;
            }
        }
        self.holds.apply_batch(batch)?;
        Ok(n)
    }

    /// Stores encoded working hours under a tenant's id.
    pub fn put_working_hours(
        &self,
        tenant: &TenantId,
        id: &str,
        encoded: &[u8],
    ) -> Result<(), StoreError> {
        self.working_hours.insert(key(&[tenant, id]), encoded)?;
        Ok(())
    }

    /// Encoded working hours of a tenant's id.
    pub fn working_hours(
        &self,
        tenant: &TenantId,
        id: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .working_hours
            .get(key(&[tenant, id]))?
            .map(|v| v.to_vec()))
    }

    /// Every working-hours entry of a tenant: (id, encoded).
    pub fn all_working_hours(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let p = prefix(&[tenant]);
        self.working_hours
            .scan_prefix(&p)
            .map(|item| {
                let (k, v) = item?;
                Ok((
                    String::from_utf8_lossy(&k[p.len()..]).into_owned(),
                    v.to_vec(),
                ))
            })
            .collect()
    }

    /// Deletes working hours; false when unknown.
    pub fn delete_working_hours(&self, tenant: &TenantId, id: &str) -> Result<bool, StoreError> {
        Ok(self.working_hours.remove(key(&[tenant, id]))?.is_some())
    }
}
