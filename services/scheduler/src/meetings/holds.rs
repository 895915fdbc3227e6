//! Holds: tentative reservations that count as busy until they expire.

use super::*;
use crate::ids::{AccountId, TenantId};

pub(super) fn hold_pb(h: &HoldRecord) -> pb::Hold {
    pb::Hold {
        hold_id: h.hold_id.clone(),
        account_ids: h.account_ids.iter().map(AccountId::to_string).collect(),
        slot: window(h.start_ms, h.end_ms),
        expires_at: ts(h.expires_ms),
    }
}

/// Creates a hold.
pub async fn create_hold(
    shared: &Shared,
    tenant: &TenantId,
    req: &pb::CreateHoldRequest,
) -> Result<pb::Hold, ErrorKind> {
    let mut inv = Invalid::default();
    if req.account_ids.is_empty() || req.account_ids.len() > limits::MAX_FREE_BUSY_ACCOUNTS {
        inv.push("account_ids", "must name 1..=2000 accounts");
    }
    for (i, a) in req.account_ids.iter().enumerate() {
        check_id(
            &mut inv,
            &format!("account_ids[{i}]"),
            a,
            limits::MAX_ID_BYTES,
        );
    }
    let slot = calbridge::validate::check_window(&mut inv, "slot", req.slot.as_ref());
    if let Some((s, e)) = slot {
        if e - s > chrono::Duration::hours(24) {
            inv.push("slot", "must be at most 24 hours long");
        }
    }
    if req.ttl_minutes > 10_080 {
        inv.push("ttl_minutes", "must be at most 10080 (a week)");
    }
    inv.into_result().map_err(ErrorKind::from)?;
    for (i, a) in req.account_ids.iter().enumerate() {
        let account = crate::accounts::tenant_account(shared, tenant, &AccountId::from(a))?;
        crate::accounts::check_not_revoked(&account, &format!("account_ids[{i}]"))?;
    }
    let (s, e) = slot.expect("validated");
    let ttl = if req.ttl_minutes == 0 {
        15
    } else {
        req.ttl_minutes
    };
    let h = HoldRecord {
        hold_id: format!("hold_{}", random_hex(12)),
        account_ids: req.account_ids.iter().map(AccountId::from).collect(),
        start_ms: s.timestamp_millis(),
        end_ms: e.timestamp_millis(),
        expires_ms: now_ms() + i64::from(ttl) * 60_000,
    };
    shared.store.put_hold(tenant, &h)?;
    shared.availability_cache.holds_changed();
    shared.store.flush().await?;
    Ok(hold_pb(&h))
}

/// A live hold, or FAILED_PRECONDITION naming `field`.
pub fn live_hold(
    shared: &Shared,
    tenant: &TenantId,
    field: &str,
    id: &str,
) -> Result<HoldRecord, ErrorKind> {
    match shared.store.hold(tenant, id)? {
        Some(h) if h.expires_ms > now_ms() => Ok(h),
        _ => Err(ErrorKind::FailedPrecondition(format!(
            "{field} names no live hold (it expired or was released)"
        ))),
    }
}

/// Releases a hold (idempotent).
pub async fn release_hold(shared: &Shared, tenant: &TenantId, id: &str) -> Result<(), ErrorKind> {
    shared.store.remove_hold(tenant, id)?;
    shared.availability_cache.holds_changed();
    shared.store.flush().await?;
    Ok(())
}

/// The tenant's live holds, by start.
pub fn list_holds(shared: &Shared, tenant: &TenantId) -> Result<Vec<pb::Hold>, ErrorKind> {
    let now = now_ms();
    let mut holds: Vec<HoldRecord> = shared
        .store
        .holds(tenant)?
        .into_iter()
        .filter(|h| h.expires_ms > now)
        .collect();
    holds.sort_by_key(|h| h.start_ms);
    Ok(holds.iter().map(hold_pb).collect())
}
