//! The mirror of provider events (events, their time index, client ids),
//! synced pages and write results, and the outbox of pending writes.

use sled::transaction::TransactionalTree;
use sled::Transactional;

use super::*;
use crate::ids::{AccountId, CalendarId};

impl Store {
    /// One mirrored event.
    pub fn event(
        &self,
        account: &AccountId,
        calendar: &CalendarId,
        pid: &str,
    ) -> Result<Option<EventRecord>, StoreError> {
        self.events
            .get(item_key(&self.ids, account, calendar, pid))?
            .map(|v| dec_ids(&self.ids, "event", &v))
            .transpose()
    }

    /// The provider id written for a client id.
    pub fn provider_id_for_client(
        &self,
        account: &AccountId,
        calendar: &CalendarId,
        client_id: &str,
    ) -> Result<Option<String>, StoreError> {
        self.client_ids
            .get(item_key(&self.ids, account, calendar, client_id))?
            .map(|v| open_part(&self.ids, "client id", &v))
            .transpose()
    }

    /// Provider ids of every mirrored event of a calendar, in order.
    pub fn event_ids(
        &self,
        account: &AccountId,
        calendar: &CalendarId,
    ) -> Result<Vec<String>, StoreError> {
        let p = cal_prefix(&self.ids, account, calendar);
        let mut out = self
            .events
            .scan_prefix(&p)
            .keys()
            .map(|k| open_part(&self.ids, "event key", &k?[p.len()..]))
            .collect::<Result<Vec<String>, StoreError>>()?;
        out.sort();
        Ok(out)
    }

    /// Number of mirrored events of a calendar (see [`EventCounts`]: a
    /// scan when first asked, then kept current by every mirror write).
    pub fn event_count(&self, account: &AccountId, calendar: &CalendarId) -> u64 {
        match self.event_counts.get(account, calendar) {
            Ok(n) => n,
            Err(ticket) => {
                let n = self
                    .events
                    .scan_prefix(cal_prefix(&self.ids, account, calendar))
                    .keys()
                    .count() as u64;
                self.event_counts.keep(account, calendar, ticket, n);
                n
            }
        }
    }

    /// Index entries of a calendar overlapping [start, end), by start (events
    /// that start together in the order of their sealed ids: stable, not
    /// alphabetical), after the (start, pid) position `after` when given:
    /// (start, pid, entry).
    pub fn events_overlapping(
        &self,
        account: &AccountId,
        calendar: &CalendarId,
        start_ms: i64,
        end_ms: i64,
        after: Option<(i64, &str)>,
        limit: usize,
    ) -> Result<Vec<(i64, String, IndexEntry)>, StoreError> {
        let p = cal_prefix(&self.ids, account, calendar);
        let from = match after {
            Some((s, pid)) => {
                let mut k = index_key(&self.ids, account, calendar, s, pid);
                k.push(0);
                k
            }
            None => p.clone(),
        };
        let to = index_key(&self.ids, account, calendar, end_ms, "");
        let mut out = Vec::new();
        for item in self.event_index.range(from..to) {
            let (k, v) = item?;
            if k.len() < p.len() + 8 {
                continue;
            }
            let mut be = [0u8; 8];
            be.copy_from_slice(&k[p.len()..p.len() + 8]);
            let s = (u64::from_be_bytes(be) ^ (1 << 63)) as i64;
            let entry: IndexEntry = dec("index", &v)?;
            if entry.end_ms <= start_ms {
                continue;
            }
            out.push((
                s,
                open_part(&self.ids, "index key", &k[p.len() + 8..])?,
                entry,
            ));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Applies one synced page atomically: mirror puts and removals, the new
    /// sync state and the change-log entries (sequences assigned here).
    pub fn apply_sync_page(&self, page: &PageCommit<'_>) -> Result<(), StoreError> {
        let state_bytes = enc_ids(&self.ids, page.state);
        let _writer = self.sync_states.writer();
        let (account, calendar) = (page.account, page.calendar);
        self.event_counts.begin();
        let committed = (
            &self.accounts,
            &self.events,
            &self.event_index,
            &self.client_ids,
            &self.sync,
            &self.changes,
            &self.heads,
        )
            .transaction(|(accounts, events, index, client_ids, sync, log, heads)| {
                refuse_revoked(accounts, account)?;
                let mut delta = 0;
                let m = MirrorTrees {
                    ids: &self.ids,
                    events,
                    index,
                    client_ids,
                    account,
                    calendar,
                };
                for p in page.puts {
                    delta += m.put(p)?;
                }
                for r in page.removes {
                    delta += m.remove(r)?;
                }
                sync.insert(cal_key(&self.ids, account, calendar), state_bytes.clone())?;
                append_changes(
                    &self.ids,
                    log,
                    heads,
                    page.tenant,
                    page.changes,
                    page.now_ms,
                )?;
                Ok(delta)
            });
        self.event_counts
            .finish(account, calendar, *committed.as_ref().unwrap_or(&0));
        committed?;
        self.sync_states.set(account, calendar, page.state.clone());
        Ok(())
    }

    /// Records the result of a write: the mirror entry, the entries it
    /// removes and the removal of its outbox entry, atomically.
    pub fn commit_write(
        &self,
        account: &AccountId,
        calendar: &CalendarId,
        put: Option<&MirrorPut>,
        removes: &[MirrorRemove],
        outbox_id: u64,
    ) -> Result<(), StoreError> {
        self.event_counts.begin();
        let committed = (
            &self.accounts,
            &self.events,
            &self.event_index,
            &self.client_ids,
            &self.outbox,
        )
            .transaction(|(accounts, events, index, client_ids, outbox)| {
                refuse_revoked(accounts, account)?;
                let mut delta = 0;
                let m = MirrorTrees {
                    ids: &self.ids,
                    events,
                    index,
                    client_ids,
                    account,
                    calendar,
                };
                if let Some(p) = put {
                    delta += m.put(p)?;
                }
                for r in removes {
                    delta += m.remove(r)?;
                }
                outbox.remove(&outbox_id.to_be_bytes())?;
                Ok(delta)
            });
        self.event_counts
            .finish(account, calendar, *committed.as_ref().unwrap_or(&0));
        committed?;
        Ok(())
    }

    /// Adds a pending write (refused for a revoked account).
    pub fn outbox_put(&self, r: &OutboxRecord) -> Result<(), StoreError> {
        let bytes = enc_ids(&self.ids, r);
        (&self.accounts, &self.outbox).transaction(|(accounts, outbox)| {
            refuse_revoked(accounts, &r.account_id)?;
            outbox.insert(&r.op_id.to_be_bytes(), bytes.clone())?;
            Ok(())
        })?;
        Ok(())
    }

    /// Drops a pending write without result (it failed for good).
    pub fn outbox_remove(&self, op_id: u64) -> Result<(), StoreError> {
        self.outbox.remove(op_id.to_be_bytes())?;
        Ok(())
    }

    /// How many writes are pending.
    pub fn outbox_len(&self) -> Result<usize, StoreError> {
        Ok(self.outbox.len())
    }

    /// When the oldest pending write was accepted, ms (`None` when none is
    /// pending, or the oldest predates the timestamp).
    pub fn outbox_oldest_created_ms(&self) -> Result<Option<i64>, StoreError> {
        match self.outbox.first()? {
            Some((_, v)) => {
                let r: OutboxRecord = dec_ids(&self.ids, "outbox", &v)?;
                Ok(Some(r.created_ms).filter(|t| *t > 0))
            }
            None => Ok(None),
        }
    }

    /// Every pending write, oldest first.
    pub fn outbox_all(&self) -> Result<Vec<OutboxRecord>, StoreError> {
        self.outbox
            .iter()
            .values()
            .map(|v| dec_ids(&self.ids, "outbox", &v?))
            .collect()
    }
}

/// One calendar's mirror trees inside a transaction.
pub(super) struct MirrorTrees<'a> {
    ids: &'a IdCipher,
    events: &'a TransactionalTree,
    index: &'a TransactionalTree,
    client_ids: &'a TransactionalTree,
    account: &'a str,
    calendar: &'a str,
}

impl MirrorTrees<'_> {
    pub(super) fn index_key(&self, start_ms: i64, pid: &str) -> Vec<u8> {
        index_key(self.ids, self.account, self.calendar, start_ms, pid)
    }

    pub(super) fn item_key(&self, item: &str) -> Vec<u8> {
        item_key(self.ids, self.account, self.calendar, item)
    }

    /// Puts an event; 1 when it was not mirrored before.
    pub(super) fn put(&self, p: &MirrorPut) -> TxResult<i64> {
        let pid = &p.provider_event_id;
        if let Some(prev) = p.previous_start_ms {
            self.index.remove(self.index_key(prev, pid))?;
        }
        if let Some(prev) = &p.previous_client_id {
            if p.record.client_event_id.as_deref() != Some(prev) {
                self.client_ids.remove(self.item_key(prev))?;
            }
        }
        let added = self
            .events
            .insert(self.item_key(pid), enc_ids(self.ids, &p.record))?
            .is_none();
        if !p.record.series {
            self.index.insert(
                self.index_key(p.record.start_ms, pid),
                enc(&IndexEntry {
                    end_ms: p.record.end_ms,
                    busy: p.record.busy,
                    all_day: p.record.all_day,
                }),
            )?;
        }
        if let Some(c) = &p.record.client_event_id {
            self.client_ids
                .insert(self.item_key(c), self.ids.seal(pid).as_bytes())?;
        }
        Ok(i64::from(added))
    }

    /// Removes an event; -1 when it was mirrored.
    pub(super) fn remove(&self, r: &MirrorRemove) -> TxResult<i64> {
        let removed = self
            .events
            .remove(self.item_key(&r.provider_event_id))?
            .is_some();
        self.index
            .remove(self.index_key(r.start_ms, &r.provider_event_id))?;
        if let Some(c) = &r.client_event_id {
            self.client_ids.remove(self.item_key(c))?;
        }
        Ok(-i64::from(removed))
    }
}
