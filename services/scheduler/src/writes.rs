//! Writes from the platform to a provider, through a durable outbox: the
//! write is recorded and flushed before the provider is called, the
//! provider's answer and the removal of the outbox entry are one transaction,
//! and the caller hears "success" only after that is flushed. Creates carry an
//! idempotency key derived from the caller's event id, so a write replayed
//! after a crash never makes a second event.

use std::time::Instant;

use calbridge::pb::{self, WriteOutcome};
use calbridge::ErrorKind;

use crate::accounts::{check_writable, mark_reauth_required};
use crate::adapters::adapter_error;
use crate::crypto::hash_hex;
use crate::crypto::DataKey;
use crate::ids::{AccountId, CalendarId, CalendarKey, TenantId};
use crate::mirror::{content_hash, normalize, put_for, same_content};
use crate::sealing::{event_aad, open_event, outbox_aad, seal_event};
use crate::state::Shared;
use crate::store::{AccountRecord, MirrorRemove, OutboxRecord};

/// The idempotency key of a create: stable for (tenant, account, calendar,
/// client id), made only of `[0-9a-f]` so every provider accepts it as an id.
pub fn idempotency_key(
    tenant: &TenantId,
    account: &AccountId,
    calendar: &CalendarId,
    client_id: &str,
) -> String {
    hash_hex(&[tenant, account, calendar, client_id])[..40].to_string()
}

/// How often an update without an expected version is tried again when
/// the event changed between the adapter's read and its write.
const MAX_UPDATE_RACES: u32 = 3;

/// Creates or updates an event keyed by the caller's id, in place of the
/// hold the request names (if any): the hold must be live before the write,
/// and is released after it succeeded.
pub async fn upsert_event(
    shared: &Shared,
    tenant: &TenantId,
    req: pb::UpsertEventRequest,
) -> Result<pb::UpsertEventResponse, ErrorKind> {
    let hold_id = req.hold_id.clone();
    if !hold_id.is_empty() {
        crate::meetings::live_hold(shared, tenant, "hold_id", &hold_id)?;
    }
    let written = upsert(shared, tenant, req).await?;
    if !hold_id.is_empty() {
        crate::meetings::release_hold(shared, tenant, &hold_id).await?;
    }
    Ok(written)
}

/// The tenant's account and calendar a write names, once writes a crash
/// interrupted there are completed: refused unless both may be written.
async fn writable_calendar(
    shared: &Shared,
    tenant: &TenantId,
    account_id: &str,
    calendar_id: &str,
) -> Result<(AccountRecord, CalendarId), ErrorKind> {
    let (account_id, calendar_id) = (AccountId::from(account_id), CalendarId::from(calendar_id));
    after_interrupted_writes(shared, tenant, &account_id, &calendar_id).await?;
    let account = crate::accounts::tenant_account(shared, tenant, &account_id)?;
    check_writable(&account)?;
    check_calendar_writable(shared, &account, &calendar_id)?;
    Ok((account, calendar_id))
}

/// Creates or updates an event keyed by the caller's id, or updates the
/// event the provider's id names (never creating one).
pub async fn upsert(
    shared: &Shared,
    tenant: &TenantId,
    req: pb::UpsertEventRequest,
) -> Result<pb::UpsertEventResponse, ErrorKind> {
    let (account, calendar_id) =
        writable_calendar(shared, tenant, &req.account_id, &req.calendar_id).await?;
    let key = shared.live_key(&account)?;
    let mut event = req.event.unwrap_or_default();
    normalize(&mut event);
    event.client_event_id = req.client_event_id.clone();
    event.provider_event_id.clear();
    event.version.clear();
    event.account_id.clear();
    event.calendar_id.clear();
    event.created_at = None;
    event.updated_at = None;
    event.managed = !req.client_event_id.is_empty();

    let lock_key = if req.provider_event_id.is_empty() {
        req.client_event_id.clone()
    } else {
        format!("pid:{}", req.provider_event_id)
    };
    let lock = shared.client_lock(&account.account_id, &calendar_id, &lock_key);
    let _one_at_a_time = lock.lock().await;
    if !req.provider_event_id.is_empty() && !req.client_event_id.is_empty() {
        let named = shared.store.provider_id_for_client(
            &account.account_id,
            &calendar_id,
            &req.client_event_id,
        )?;
        if named.is_some_and(|pid| pid != req.provider_event_id) {
            return Err(ErrorKind::FailedPrecondition(
                "client_event_id already names another event of this calendar".into(),
            ));
        }
    }
    let op = OutboxRecord {
        op_id: shared.store.next_id()?,
        tenant_id: tenant.into(),
        account_id: account.account_id.clone(),
        calendar_id: req.calendar_id.clone().into(),
        client_event_id: req.client_event_id.clone(),
        provider_event_id: req.provider_event_id.as_str().into(),
        delete: false,
        sealed_event: Vec::new(),
        expected_version: req.expected_version.clone(),
        created_ms: crate::clock::now_ms(),
    };
    let op = OutboxRecord {
        sealed_event: seal_event(&key, &outbox_aad(op.op_id), &event),
        ..op
    };
    shared.store.outbox_put(&op)?;
    shared.store.flush().await?;
    let (event, outcome) = with_retries(shared, &account, &op.calendar_id, op.op_id, || {
        execute_upsert(shared, &account, &key, &op, &event)
    })
    .await?;
    Ok(pb::UpsertEventResponse {
        event: Some(event),
        outcome: outcome as i32,
    })
}

/// Deletes an event by client id or provider id.
pub async fn delete(
    shared: &Shared,
    tenant: &TenantId,
    req: pb::DeleteEventRequest,
) -> Result<pb::DeleteEventResult, ErrorKind> {
    let (account, calendar_id) =
        writable_calendar(shared, tenant, &req.account_id, &req.calendar_id).await?;
    let lock_key = if req.client_event_id.is_empty() {
        format!("pid:{}", req.provider_event_id)
    } else {
        req.client_event_id.clone()
    };
    let lock = shared.client_lock(&account.account_id, &calendar_id, &lock_key);
    let _one_at_a_time = lock.lock().await;
    let pid = if req.client_event_id.is_empty() {
        Some(req.provider_event_id.clone())
    } else {
        shared.store.provider_id_for_client(
            &account.account_id,
            &calendar_id,
            &req.client_event_id,
        )?
    };
    let Some(pid) = pid else {
        return Ok(pb::DeleteEventResult {
            outcome: WriteOutcome::AlreadyGone as i32,
        });
    };
    let op = OutboxRecord {
        op_id: shared.store.next_id()?,
        tenant_id: tenant.into(),
        account_id: account.account_id.clone(),
        calendar_id: req.calendar_id.clone().into(),
        client_event_id: req.client_event_id.clone(),
        provider_event_id: pid.into(),
        delete: true,
        sealed_event: Vec::new(),
        expected_version: req.expected_version.clone(),
        created_ms: crate::clock::now_ms(),
    };
    shared.store.outbox_put(&op)?;
    shared.store.flush().await?;
    let outcome = with_retries(shared, &account, &op.calendar_id, op.op_id, || {
        execute_delete(shared, &account, &op)
    })
    .await?;
    Ok(pb::DeleteEventResult {
        outcome: outcome as i32,
    })
}

/// Waits (up to the write timeout) until the writes a restart interrupted
/// on the calendar are completed. A new write of an event that overtook the
/// replay of an older write of it would be overwritten by that replay: an
/// acknowledged write lost. The caller reads the account after the wait,
/// as it is then (revoked meanwhile, say).
async fn after_interrupted_writes(
    shared: &Shared,
    tenant: &TenantId,
    account_id: &AccountId,
    calendar_id: &CalendarId,
) -> Result<(), ErrorKind> {
    if !shared.writes_in_doubt(account_id, calendar_id) {
        return Ok(());
    }
    // Another tenant's account is not found, whatever it waits for.
    crate::accounts::tenant_account(shared, tenant, account_id)?;
    tracing::info!("write waits for the writes a restart interrupted on its calendar");
    let deadline = Instant::now() + shared.config.write_timeout;
    while shared.writes_in_doubt(account_id, calendar_id) {
        if Instant::now() > deadline {
            return Err(ErrorKind::Unavailable {
                message:
                    "writes interrupted by a restart are still being completed on this calendar"
                        .into(),
                retry_after: Some(std::time::Duration::from_secs(1)),
            });
        }
        // The replay clears the mark when it is done; writes wait for it
        // only in the moments after a restart.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Marks the calendars that have writes a crash interrupted, so that their
/// syncs wait for [`replay_outbox`]. Run at start, before the sync loop;
/// returns how many calendars wait.
pub fn hold_syncs_for_interrupted_writes(shared: &Shared) -> Result<usize, ErrorKind> {
    let pending = shared.store.outbox_all()?;
    let mut in_doubt = shared.in_doubt.lock().expect("lock poisoned");
    in_doubt.extend(
        pending
            .into_iter()
            .map(|op| (op.account_id, op.calendar_id)),
    );
    Ok(in_doubt.len())
}

/// Completes the writes a crash interrupted, each calendar's in order, the
/// calendars side by side. A write the provider may have applied before the
/// crash (its result not stored) is done again through the same idempotent
/// path, so it ends as the platform's own write in the mirror. Until a
/// calendar's writes are completed (or given up after the write timeout,
/// like any write) its sync waits, so the provider's copy of such a write
/// is never read back as an outside change; then the calendar is synced.
pub async fn replay_outbox(shared: &Shared) -> Result<usize, ErrorKind> {
    let pending = shared.store.outbox_all()?;
    let n = pending.len();
    let mut by_calendar: std::collections::BTreeMap<CalendarKey, Vec<OutboxRecord>> =
        Default::default();
    for op in pending {
        by_calendar
            .entry((op.account_id.clone(), op.calendar_id.clone()))
            .or_default()
            .push(op);
    }
    let results = futures::future::join_all(by_calendar.into_iter().map(
        |((account, calendar), ops)| async move {
            let mut result = Ok(());
            for op in ops {
                result = replay_one(shared, op).await;
                if result.is_err() {
                    break;
                }
            }
            shared
                .in_doubt
                .lock()
                .expect("lock poisoned")
                .remove(&(account.clone(), calendar.clone()));
            shared.sync_soon(&account, &calendar);
            result
        },
    ))
    .await;
    results.into_iter().collect::<Result<Vec<()>, _>>()?;
    shared.store.flush().await?;
    Ok(n)
}

/// Completes one interrupted write, retrying while the provider is
/// unavailable (up to the write timeout), or drops it.
async fn replay_one(shared: &Shared, op: OutboxRecord) -> Result<(), ErrorKind> {
    let account = match shared.store.account(&op.account_id)? {
        Some(a) if check_writable(&a).is_ok() => a,
        _ => {
            shared.store.outbox_remove(op.op_id)?;
            return Ok(());
        }
    };
    // The key the write was made under: deletes by provider id and upserts
    // by provider id lock the provider's id, the others the caller's.
    let by_pid = if op.delete {
        op.client_event_id.is_empty()
    } else {
        !op.provider_event_id.is_empty()
    };
    let lock_key = if by_pid {
        format!("pid:{}", op.provider_event_id)
    } else {
        op.client_event_id.clone()
    };
    let lock = shared.client_lock(&op.account_id, &op.calendar_id, &lock_key);
    let _one_at_a_time = lock.lock().await;
    let result = if op.delete {
        with_retries(shared, &account, &op.calendar_id, op.op_id, || {
            execute_delete(shared, &account, &op)
        })
        .await
        .map(|_| ())
    } else {
        match shared
            .live_key(&account)
            .and_then(|k| open_event(&k, &outbox_aad(op.op_id), &op.sealed_event).map(|e| (k, e)))
        {
            Ok((key, event)) => with_retries(shared, &account, &op.calendar_id, op.op_id, || {
                execute_upsert(shared, &account, &key, &op, &event)
            })
            .await
            .map(|_| ()),
            Err(e) => Err(e),
        }
    };
    match result {
        Ok(()) => tracing::info!(
            op_id = op.op_id,
            "completed a write interrupted by a restart"
        ),
        Err(e) => {
            tracing::warn!(op_id = op.op_id, error = %e, "interrupted write could not be completed; dropped");
            shared.store.outbox_remove(op.op_id)?;
        }
    }
    Ok(())
}

fn check_calendar_writable(
    shared: &Shared,
    account: &AccountRecord,
    calendar_id: &CalendarId,
) -> Result<(), ErrorKind> {
    match shared.store.calendar(&account.account_id, calendar_id)? {
        None => Err(ErrorKind::NotFound(format!(
            "calendar {calendar_id:?} not found"
        ))),
        Some(c) if c.read_only => Err(ErrorKind::PermissionDenied(format!(
            "calendar {calendar_id:?} is read-only at the provider"
        ))),
        Some(_) => Ok(()),
    }
}

/// Runs `attempt` until it succeeds, fails for good, or the write timeout
/// would pass; drops the outbox entry when it fails. No sync of the
/// calendar runs meanwhile, the pauses between attempts included: after a
/// failed attempt the provider may hold the write (applied, its answer
/// lost), and a sync would read it back as an outside change before the
/// retry claims it as the platform's own.
async fn with_retries<T, F, Fut>(
    shared: &Shared,
    account: &AccountRecord,
    calendar_id: &CalendarId,
    op_id: u64,
    mut attempt: F,
) -> Result<T, ErrorKind>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ErrorKind>>,
{
    let lock = shared.calendar_lock(&account.account_id, calendar_id);
    let _no_sync_meanwhile = lock.read().await;
    let deadline = Instant::now() + shared.config.write_timeout;
    let mut failures = 0;
    loop {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) => {
                failures += 1;
                let retry_after = match &e {
                    ErrorKind::Unavailable { retry_after, .. }
                    | ErrorKind::RateLimited { retry_after, .. } => *retry_after,
                    _ => None,
                };
                let delay = crate::sync::backoff(200, 5, failures, retry_after);
                if e.is_retryable() && Instant::now() + delay < deadline {
                    tracing::info!(error = %e, delay_ms = delay.as_millis() as u64, "write will be retried");
                    tokio::time::sleep(delay).await;
                    continue;
                }
                shared.store.outbox_remove(op_id)?;
                shared.store.flush().await?;
                if let ErrorKind::Unauthenticated(_) = e {
                    mark_reauth_required(
                        shared,
                        &account.account_id,
                        "the provider rejected the stored credentials",
                    )
                    .await?;
                    return Err(ErrorKind::FailedPrecondition(
                        "the provider rejected the account's credentials: the account needs re-authorisation".into(),
                    ));
                }
                return Err(e);
            }
        }
    }
}

async fn execute_upsert(
    shared: &Shared,
    account: &AccountRecord,
    key: &DataKey,
    op: &OutboxRecord,
    event: &pb::Event,
) -> Result<(pb::Event, WriteOutcome), ErrorKind> {
    let (acc, cal) = (&account.account_id, &op.calendar_id);
    let credentials = crate::accounts::usable_credentials(shared, account).await?;
    let mut client = shared.adapters.client(account.provider)?;
    let zone = shared
        .store
        .calendar(acc, cal)?
        .and_then(|c| c.time_zone.parse::<chrono_tz::Tz>().ok());

    // By the provider's id: that event is updated, never a new one made.
    let by_provider_id = !op.provider_event_id.is_empty();
    let known = if by_provider_id {
        Some(op.provider_event_id.to_string())
    } else {
        shared
            .store
            .provider_id_for_client(acc, cal, &op.client_event_id)?
    };
    let mut result: Option<(pb::Event, WriteOutcome)> = None;
    if let Some(pid) = known {
        if let Some(prev) = shared.store.event(acc, cal, &pid)? {
            let prev_event = open_event(key, &event_aad(acc, cal, &pid), &prev.sealed)?;
            let version_ok = op.expected_version.is_empty() || op.expected_version == prev.version;
            let rewritten = prev.written_hash.as_deref() == Some(content_hash(event).as_str());
            if (rewritten || same_content(&prev_event, event)) && version_ok {
                shared.store.outbox_remove(op.op_id)?;
                shared.store.flush().await?;
                return Ok((prev_event, WriteOutcome::Unchanged));
            }
        }
        let mut races = 0;
        loop {
            let updated = client
                .update_event(pb::ProviderUpdateEventRequest {
                    credentials: Some(credentials.clone()),
                    calendar_id: cal.to_string(),
                    provider_event_id: pid.clone(),
                    event: Some(event.clone()),
                    expected_version: op.expected_version.clone(),
                })
                .await;
            match updated {
                Ok(r) => result = Some((r.into_inner(), WriteOutcome::Updated)),
                Err(s) if s.code() == tonic::Code::NotFound && by_provider_id => {
                    return Err(ErrorKind::NotFound(
                        "the provider has no event with this provider_event_id".into(),
                    ))
                }
                // Deleted outside since: create it again below.
                Err(s) if s.code() == tonic::Code::NotFound => {}
                // Without an expected version the platform asked for no
                // version check: a conflict is the adapter's own
                // read-then-write meeting another write of the event (say,
                // one a killed scheduler sent, landing late while its write
                // is replayed). Read it again and write over it.
                Err(s)
                    if s.code() == tonic::Code::Aborted
                        && op.expected_version.is_empty()
                        && races < MAX_UPDATE_RACES =>
                {
                    races += 1;
                    continue;
                }
                Err(s) => return Err(adapter_error(&s)),
            }
            break;
        }
    }
    let (mut stored, outcome) = match result {
        Some(r) => r,
        None => {
            if !op.expected_version.is_empty() {
                return Err(ErrorKind::Conflict {
                    message: "expected_version was given but the event does not exist".into(),
                    current_version: None,
                });
            }
            let created = client
                .create_event(pb::ProviderCreateEventRequest {
                    credentials: Some(credentials.clone()),
                    calendar_id: cal.to_string(),
                    event: Some(event.clone()),
                    idempotency_key: idempotency_key(&op.tenant_id, acc, cal, &op.client_event_id),
                })
                .await
                .map_err(|s| adapter_error(&s))?
                .into_inner();
            let existing = created.event.unwrap_or_default();
            if created.already_existed && !same_content(&existing, event) {
                let fixed = client
                    .update_event(pb::ProviderUpdateEventRequest {
                        credentials: Some(credentials.clone()),
                        calendar_id: cal.to_string(),
                        provider_event_id: existing.provider_event_id.clone(),
                        event: Some(event.clone()),
                        expected_version: existing.version.clone(),
                    })
                    .await
                    .map_err(|s| adapter_error(&s))?
                    .into_inner();
                (fixed, WriteOutcome::Created)
            } else {
                (existing, WriteOutcome::Created)
            }
        }
    };
    stored.account_id = acc.to_string();
    stored.calendar_id = cal.to_string();
    let previous = shared.store.event(acc, cal, &stored.provider_event_id)?;
    // An edit by provider id without the caller's id keeps the id the
    // event already had (if the platform wrote it under one).
    stored.client_event_id = if op.client_event_id.is_empty() {
        previous
            .as_ref()
            .and_then(|p| p.client_event_id.clone())
            .unwrap_or_default()
    } else {
        op.client_event_id.clone()
    };
    stored.managed = !stored.client_event_id.is_empty();
    let mut put = put_for(key, acc, cal, zone, &stored, previous.as_ref());
    put.record.written_hash = Some(content_hash(event));
    put.record.series = !event.recurrence.is_empty();
    // A series written (or turned into a single event): its instances as
    // mirrored so far leave with the old content; the next sync lists them
    // again as the platform's own expansion, without a change-feed entry.
    let instances = if put.record.series || previous.as_ref().is_some_and(|p| p.series) {
        instance_rows(shared, key, acc, cal, &stored.provider_event_id)?
    } else {
        Vec::new()
    };
    shared
        .store
        .commit_write(acc, cal, Some(&put), &instances, op.op_id)?;
    shared.mirror_changed(acc, cal);
    shared.store.flush().await?;
    Ok((stored, outcome))
}

async fn execute_delete(
    shared: &Shared,
    account: &AccountRecord,
    op: &OutboxRecord,
) -> Result<WriteOutcome, ErrorKind> {
    let (acc, cal) = (&account.account_id, &op.calendar_id);
    let credentials = crate::accounts::usable_credentials(shared, account).await?;
    let outcome = match shared
        .adapters
        .client(account.provider)?
        .delete_event(pb::ProviderDeleteEventRequest {
            credentials: Some(credentials),
            calendar_id: cal.to_string(),
            provider_event_id: op.provider_event_id.to_string(),
            expected_version: op.expected_version.clone(),
        })
        .await
    {
        Ok(_) => WriteOutcome::Deleted,
        Err(s) if s.code() == tonic::Code::NotFound => WriteOutcome::AlreadyGone,
        Err(s) => return Err(adapter_error(&s)),
    };
    let mut removes = Vec::new();
    if let Some(prev) = shared.store.event(acc, cal, &op.provider_event_id)? {
        if prev.series {
            // The platform's series goes with its instances: they are not
            // reported deleted by a later sync as if someone else had.
            let key = shared.live_key(account)?;
            removes = instance_rows(shared, &key, acc, cal, &op.provider_event_id)?;
        }
        removes.push(MirrorRemove {
            provider_event_id: op.provider_event_id.clone(),
            start_ms: prev.start_ms,
            client_event_id: prev.client_event_id,
        });
    }
    shared
        .store
        .commit_write(acc, cal, None, &removes, op.op_id)?;
    shared.mirror_changed(acc, cal);
    shared.store.flush().await?;
    Ok(outcome)
}

/// The mirrored instances of series `series`: those whose id is the series
/// id then `#` or `_` (CalDAV, Google, the sandbox), and those whose link
/// names the series (providers with opaque occurrence ids, such as Graph;
/// read from the sealed event, so this walks the calendar's mirror: a
/// series write or delete is rare).
fn instance_rows(
    shared: &Shared,
    key: &DataKey,
    acc: &AccountId,
    cal: &CalendarId,
    series: &str,
) -> Result<Vec<MirrorRemove>, ErrorKind> {
    let mut out = Vec::new();
    for pid in shared.store.event_ids(acc, cal)? {
        if pid == series {
            continue;
        }
        let Some(r) = shared.store.event(acc, cal, &pid)? else {
            continue;
        };
        let linked = crate::sync::diff::belongs_to(&pid, series)
            || open_event(key, &event_aad(acc, cal, &pid), &r.sealed).is_ok_and(|e| {
                e.recurrence_link
                    .is_some_and(|l| l.series_event_id == series)
            });
        if linked {
            out.push(MirrorRemove {
                provider_event_id: pid.into(),
                start_ms: r.start_ms,
                client_event_id: r.client_event_id,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_keys_are_stable_hex_and_distinct_per_calendar() {
        let a = idempotency_key(
            &TenantId::from("t"),
            &AccountId::from("acc"),
            &CalendarId::from("cal"),
            "order-1",
        );
        assert_eq!(
            a,
            idempotency_key(
                &TenantId::from("t"),
                &AccountId::from("acc"),
                &CalendarId::from("cal"),
                "order-1"
            )
        );
        assert_ne!(
            a,
            idempotency_key(
                &TenantId::from("t"),
                &AccountId::from("acc"),
                &CalendarId::from("cal2"),
                "order-1"
            )
        );
        assert_eq!(a.len(), 40);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    }
}
