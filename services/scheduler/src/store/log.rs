//! Each tenant's change log: gapless sequences, bounds and pruning.

use sled::transaction::TransactionalTree;
use sled::Transactional;

use super::*;
use crate::ids::{AccountId, TenantId};

impl Store {
    /// Appends change-log entries outside a sync page (account status).
    pub fn append_changes(
        &self,
        tenant: &TenantId,
        changes: &[ChangeDraft],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        (&self.changes, &self.heads).transaction(|(log, heads)| {
            append_changes(&self.ids, log, heads, tenant, changes, now_ms)
        })?;
        Ok(())
    }

    /// Appends change-log entries about one account (its status), refused
    /// once the account is revoked: nothing of it follows REVOKED.
    pub fn append_account_changes(
        &self,
        account: &AccountId,
        tenant: &TenantId,
        changes: &[ChangeDraft],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        (&self.accounts, &self.changes, &self.heads).transaction(|(accounts, log, heads)| {
            refuse_revoked(accounts, account)?;
            append_changes(&self.ids, log, heads, tenant, changes, now_ms)
        })?;
        Ok(())
    }

    /// The sum over tenants of each log's head (the last sequence
    /// assigned): grows by one with every change-log entry.
    pub fn log_heads_total(&self) -> Result<u64, StoreError> {
        let mut total = 0u64;
        for v in self.heads.iter().values() {
            let b: LogBounds = dec("log bounds", &v?)?;
            total = total.saturating_add(b.head);
        }
        Ok(total)
    }

    /// The bounds of a tenant's log.
    pub fn log_bounds(&self, tenant: &TenantId) -> Result<LogBounds, StoreError> {
        Ok(self
            .heads
            .get(tenant.as_str())?
            .map(|v| dec("log bounds", &v))
            .transpose()?
            .unwrap_or_default())
    }

    /// Changes of a tenant after `after_seq`, at most `limit`.
    pub fn changes_after(
        &self,
        tenant: &TenantId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<ChangeRecord>, StoreError> {
        let p = prefix(&[tenant]);
        let mut out = Vec::new();
        for item in self
            .changes
            .range(seq_key(tenant, after_seq.saturating_add(1))..)
        {
            let (k, v) = item?;
            if !k.starts_with(&p) || out.len() >= limit {
                break;
            }
            out.push(dec_ids(&self.ids, "change", &v)?);
        }
        Ok(out)
    }

    /// Deletes a tenant's changes recorded before `cutoff_ms`; returns how
    /// many went.
    pub fn prune_changes(&self, tenant: &TenantId, cutoff_ms: i64) -> Result<usize, StoreError> {
        let p = prefix(&[tenant]);
        let mut last = None;
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for item in self.changes.scan_prefix(&p) {
            let (k, v) = item?;
            let c: ChangeRecord = dec("change", &v)?;
            if c.recorded_ms >= cutoff_ms {
                break;
            }
            batch.remove(k);
            last = Some(c.seq);
            n += 1;
        }
        if let Some(seq) = last {
            (&self.changes, &self.heads).transaction(|(log, heads)| {
                log.apply_batch(&batch)?;
                let mut b: LogBounds = tx_get(heads, tenant.as_bytes())?.unwrap_or_default();
                b.pruned_through = b.pruned_through.max(seq);
                heads.insert(tenant.as_bytes(), enc(&b))?;
                Ok(())
            })?;
        }
        Ok(n)
    }
}

pub(super) fn append_changes(
    ids: &IdCipher,
    log: &TransactionalTree,
    heads: &TransactionalTree,
    tenant: &str,
    changes: &[ChangeDraft],
    now_ms: i64,
) -> TxResult<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let mut bounds: LogBounds = tx_get(heads, tenant.as_bytes())?.unwrap_or_default();
    for c in changes {
        bounds.head += 1;
        let rec = ChangeRecord {
            seq: bounds.head,
            kind: c.kind,
            account_id: c.account_id.clone(),
            calendar_id: c.calendar_id.clone(),
            provider_event_id: c.provider_event_id.clone(),
            account_status: c.account_status,
            recorded_ms: now_ms,
            sealed_event: c.sealed_event.clone(),
        };
        log.insert(seq_key(tenant, bounds.head), enc_ids(ids, &rec))?;
    }
    heads.insert(tenant.as_bytes(), enc(&bounds))?;
    Ok(())
}
