//! Free/busy from the mirror: busy intervals of an account's synced
//! calendars over a window, read from the time index alone (no event content
//! is opened, and no provider is called).

use calbridge::pb;
use calbridge::ErrorKind;

use crate::ids::{AccountId, TenantId};
use crate::state::Shared;

/// One busy interval in ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy {
    /// Start, ms.
    pub start: i64,
    /// End, ms.
    pub end: i64,
    /// `pb::BusyStatus`.
    pub status: i32,
}

/// Merges overlapping or touching intervals of the same status; the result
/// is sorted by start.
pub fn merge(mut v: Vec<(Busy, String)>) -> Vec<(Busy, String)> {
    v.sort_by_key(|(b, _)| (b.status, b.start, b.end));
    let mut out: Vec<(Busy, String)> = Vec::with_capacity(v.len());
    for (b, cal) in v {
        match out.last_mut() {
            Some((last, _)) if last.status == b.status && b.start <= last.end => {
                last.end = last.end.max(b.end);
            }
            _ => out.push((b, cal)),
        }
    }
    out.sort_by_key(|(b, _)| (b.start, b.end));
    out
}

/// Free/busy of each named account of `tenant` over [start, end), in the
/// order named; a revoked account fails the request, naming its field.
pub fn query(
    shared: &Shared,
    tenant: &TenantId,
    account_ids: &[String],
    start: i64,
    end: i64,
) -> Result<Vec<pb::AccountFreeBusy>, ErrorKind> {
    let mut out = Vec::with_capacity(account_ids.len());
    for (i, id) in account_ids.iter().enumerate() {
        let a = crate::accounts::tenant_account(shared, tenant, &AccountId::from(id))?;
        crate::accounts::check_not_revoked(&a, &format!("account_ids[{i}]"))?;
        out.push(account_busy(shared, &a, start, end)?);
    }
    Ok(out)
}

/// The busy intervals of one account over [start, end).
pub fn account_busy(
    shared: &Shared,
    account: &crate::store::AccountRecord,
    start: i64,
    end: i64,
) -> Result<pb::AccountFreeBusy, ErrorKind> {
    let mut all = Vec::new();
    let mut as_of: Option<i64> = Some(i64::MAX);
    for c in shared.store.calendars(&account.account_id)? {
        if !c.synced {
            continue;
        }
        let st = shared
            .store
            .sync_state(&account.account_id, &c.calendar_id)?
            .unwrap_or_default();
        as_of = match (as_of, st.last_success_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            _ => None,
        };
        let timeline = shared.timeline(&account.account_id, &c.calendar_id)?;
        for i in timeline.overlapping(start, end) {
            let e = &timeline.entries[i];
            all.push((
                Busy {
                    start: e.start_ms.max(start),
                    end: e.end_ms.min(end),
                    status: e.busy,
                },
                c.calendar_id.to_string(),
            ));
        }
    }
    let ts =
        |ms: i64| chrono::DateTime::from_timestamp_millis(ms).map(calbridge::time::to_timestamp);
    Ok(pb::AccountFreeBusy {
        account_id: account.account_id.to_string(),
        busy: merge(all)
            .into_iter()
            .map(|(b, cal)| pb::BusyInterval {
                start: ts(b.start),
                end: ts(b.end),
                status: b.status,
                calendar_id: cal,
            })
            .collect(),
        as_of: as_of.filter(|a| *a != i64::MAX).and_then(ts),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use calbridge::pb::BusyStatus;

    const BUSY: i32 = BusyStatus::Busy as i32;

    fn b(start: i64, end: i64, status: i32) -> (Busy, String) {
        (Busy { start, end, status }, "c".into())
    }

    #[test]
    fn overlapping_intervals_of_one_status_merge() {
        let merged = merge(vec![
            b(10, 20, BUSY),
            b(0, 12, BUSY),
            b(20, 25, BUSY),
            b(40, 50, BUSY),
        ]);
        let spans: Vec<(i64, i64)> = merged.iter().map(|(x, _)| (x.start, x.end)).collect();
        assert_eq!(spans, vec![(0, 25), (40, 50)]);
    }

    #[test]
    fn different_statuses_stay_apart() {
        let t = BusyStatus::Tentative as i32;
        let merged = merge(vec![b(0, 10, BUSY), b(5, 15, t)]);
        assert_eq!(merged.len(), 2);
    }
}
