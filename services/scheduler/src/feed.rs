//! The change feed: opaque cursors, paged reads, the live `WatchChanges`
//! stream (replay from the store, then follow the log as it grows), and the
//! retention that prunes old entries.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use calbridge::pb;
use calbridge::{ErrorKind, Invalid};
use futures::Stream;

use crate::clock::now_ms;
use crate::crypto::DataKey;
use crate::ids::TenantId;
use crate::sealing::{change_aad, open_event};
use crate::state::Shared;
use crate::store::ChangeRecord;

const CURSOR_PREFIX: &str = "c1.";

/// The cursor that resumes just after `seq`.
pub fn cursor_of(seq: u64) -> String {
    format!("{CURSOR_PREFIX}{seq}")
}

/// Reads a cursor: `None` for empty (the start of the retained log).
pub fn parse_cursor(field: &str, s: &str) -> Result<u64, ErrorKind> {
    if s.is_empty() {
        return Ok(0);
    }
    s.strip_prefix(CURSOR_PREFIX)
        .and_then(|n| n.parse::<u64>().ok())
        .ok_or_else(|| {
            Invalid::field(
                field,
                "is not a cursor returned by calbridge (pass a Change.cursor, a next_cursor, or empty)",
            )
            .into()
        })
}

/// Checks a cursor against the tenant's retained log; an empty cursor means
/// "from the oldest retained change".
pub fn check_cursor(
    shared: &Shared,
    tenant: &TenantId,
    field: &str,
    cursor: &str,
) -> Result<u64, ErrorKind> {
    let after = parse_cursor(field, cursor)?;
    let bounds = shared.store.log_bounds(tenant)?;
    if cursor.is_empty() {
        return Ok(bounds.pruned_through);
    }
    if after < bounds.pruned_through {
        return Err(ErrorKind::OutOfRange(format!(
            "{field} is older than the retained change log (changes through {} were pruned): resync with ListEvents, then continue from GetChangeCursor",
            bounds.pruned_through
        )));
    }
    if after > bounds.head {
        return Err(Invalid::field(
            field,
            "is ahead of the change log: it was not issued by this scheduler",
        )
        .into());
    }
    Ok(after)
}

/// One page of changes after `after`.
pub fn page(
    shared: &Shared,
    tenant: &TenantId,
    after: u64,
    limit: usize,
) -> Result<Vec<pb::Change>, ErrorKind> {
    let records = shared.store.changes_after(tenant, after, limit)?;
    let mut keys = HashMap::new();
    Ok(records
        .iter()
        .map(|c| change_pb(shared, c, &mut keys))
        .collect())
}

/// One page of changes after the cursor `cursor` (checked against the
/// tenant's retained log), `n` at most, and the cursor that follows it.
pub fn list(
    shared: &Shared,
    tenant: &TenantId,
    cursor: &str,
    n: usize,
) -> Result<(Vec<pb::Change>, String), ErrorKind> {
    let after = check_cursor(shared, tenant, "cursor", cursor)?;
    let changes = page(shared, tenant, after, n)?;
    let next_cursor = changes
        .last()
        .map(|c| c.cursor.clone())
        .unwrap_or_else(|| cursor_of(after));
    Ok((changes, next_cursor))
}

/// The cursor of the tenant's newest change: watching from it sees only
/// what comes after now.
pub fn head_cursor(shared: &Shared, tenant: &TenantId) -> Result<String, ErrorKind> {
    Ok(cursor_of(shared.store.log_bounds(tenant)?.head))
}

/// Converts a change record to the contract message, opening its event
/// when the account still has its data key.
fn change_pb(
    shared: &Shared,
    c: &ChangeRecord,
    keys: &mut HashMap<String, Option<DataKey>>,
) -> pb::Change {
    let key = keys
        .entry(c.account_id.to_string())
        .or_insert_with(|| {
            shared
                .store
                .account(&c.account_id)
                .ok()
                .flatten()
                .and_then(|a| shared.data_key(&a).ok().flatten())
        })
        .clone();
    let event = if c.sealed_event.is_empty() {
        None
    } else {
        key.and_then(|k| {
            open_event(
                &k,
                &change_aad(&c.account_id, &c.calendar_id, &c.provider_event_id),
                &c.sealed_event,
            )
            .ok()
        })
    };
    pb::Change {
        sequence: c.seq,
        cursor: cursor_of(c.seq),
        recorded_at: chrono::DateTime::from_timestamp_millis(c.recorded_ms)
            .map(calbridge::time::to_timestamp),
        kind: c.kind as i32,
        account_id: c.account_id.to_string(),
        calendar_id: c.calendar_id.to_string(),
        event,
        account_status: c.account_status as i32,
        provider_event_id: c.provider_event_id.to_string(),
    }
}

/// A stream of changes.
pub type ChangeStream = Pin<Box<dyn Stream<Item = Result<pb::Change, tonic::Status>> + Send>>;

/// Replays the log after `after`, then follows it live until the client
/// goes away.
pub fn watch(shared: Arc<Shared>, tenant: String, mut after: u64) -> ChangeStream {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<pb::Change, tonic::Status>>(256);
    let mut tick = shared.log_tick.subscribe();
    let watcher = crate::metrics::Watcher::start();
    tokio::spawn(async move {
        let _watcher = watcher;
        loop {
            tick.mark_unchanged();
            let batch = match page(&shared, &TenantId::from(tenant.as_str()), after, 256) {
                Ok(b) => b,
                Err(e) => {
                    let _ = tx.send(Err(e.into())).await;
                    return;
                }
            };
            let full = batch.len() == 256;
            for c in batch {
                after = c.sequence;
                if tx.send(Ok(c)).await.is_err() {
                    return;
                }
            }
            if full {
                continue;
            }
            tokio::select! {
                changed = tick.changed() => if changed.is_err() { return },
                _ = tx.closed() => return,
            }
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// Prunes every tenant's changes older than the retention.
pub fn prune(shared: &Shared) -> Result<usize, ErrorKind> {
    let cutoff = now_ms() - shared.config.change_retention.as_millis() as i64;
    let mut n = 0;
    for t in shared.store.tenants()? {
        n += shared.store.prune_changes(&t.tenant_id, cutoff)?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change() -> crate::store::ChangeDraft {
        crate::store::ChangeDraft {
            kind: pb::ChangeKind::AccountStatus,
            account_id: "acc".into(),
            calendar_id: Default::default(),
            provider_event_id: Default::default(),
            account_status: pb::AccountStatus::Active,
            sealed_event: Vec::new(),
        }
    }

    #[test]
    fn a_cursor_older_than_retention_is_out_of_range_and_says_to_resync() {
        let dir = tempfile::tempdir().unwrap();
        let s = Shared::for_test(dir.path());
        s.store
            .append_changes(&TenantId::from("t"), &[change(), change()], 1_000)
            .unwrap();
        s.store
            .append_changes(&TenantId::from("t"), &[change()], now_ms())
            .unwrap();
        assert_eq!(
            check_cursor(&s, &TenantId::from("t"), "cursor", &cursor_of(0)).unwrap(),
            0
        );
        s.store
            .put_tenant(&crate::store::TenantRecord {
                tenant_id: "t".into(),
                name: "t".into(),
                created_ms: 0,
            })
            .unwrap();
        assert_eq!(prune(&s).unwrap(), 2);
        match check_cursor(&s, &TenantId::from("t"), "cursor", &cursor_of(1)) {
            Err(ErrorKind::OutOfRange(m)) => assert!(m.contains("resync"), "{m}"),
            other => panic!("unexpected {other:?}"),
        }
        // From the floor on, replay works; an empty cursor starts there.
        assert_eq!(
            check_cursor(&s, &TenantId::from("t"), "cursor", &cursor_of(2)).unwrap(),
            2
        );
        assert_eq!(
            check_cursor(&s, &TenantId::from("t"), "cursor", "").unwrap(),
            2
        );
        assert_eq!(
            page(&s, &TenantId::from("t"), 2, 10).unwrap()[0].sequence,
            3
        );
        // A cursor from the future was not issued here.
        assert!(matches!(
            check_cursor(&s, &TenantId::from("t"), "cursor", &cursor_of(9)),
            Err(ErrorKind::Invalid(_))
        ));
    }

    #[test]
    fn cursors_round_trip_and_garbage_names_the_field() {
        assert_eq!(parse_cursor("cursor", &cursor_of(42)).unwrap(), 42);
        assert_eq!(parse_cursor("cursor", "").unwrap(), 0);
        match parse_cursor("cursor", "42") {
            Err(ErrorKind::Invalid(i)) => assert_eq!(i.0[0].field, "cursor"),
            other => panic!("unexpected {other:?}"),
        }
    }
}
