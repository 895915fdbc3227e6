//! Accounts, their calendars and sync states, push channels, and the purge
//! of revoked accounts.

use std::sync::Arc;

use sled::Transactional;

use super::*;
use crate::ids::{AccountId, CalendarId, TenantId};

impl Store {
    /// An account.
    pub fn account(&self, id: &str) -> Result<Option<AccountRecord>, StoreError> {
        self.accounts
            .get(id)?
            .map(|v| dec_ids(&self.ids, "account", &v))
            .transpose()
    }

    /// The account of `identity_hash`, if connected before.
    pub fn account_by_identity(&self, identity_hash: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .identities
            .get(identity_hash)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// A tenant's accounts after `after` (exclusive), oldest id order.
    pub fn tenant_accounts(
        &self,
        tenant: &TenantId,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AccountRecord>, StoreError> {
        let p = prefix(&[tenant]);
        let start = match after {
            Some(a) => {
                let mut k = key(&[tenant, a]);
                k.push(0);
                k
            }
            None => p.clone(),
        };
        let mut out = Vec::new();
        for item in self.tenant_accounts.range(start..) {
            let (k, _) = item?;
            if !k.starts_with(&p) || out.len() >= limit {
                break;
            }
            let id = String::from_utf8_lossy(&k[p.len()..]).into_owned();
            if let Some(a) = self.account(&id)? {
                out.push(a);
            }
        }
        Ok(out)
    }

    /// Stores a new or updated account with its calendars and their sync
    /// states (existing sync states are kept), in one transaction.
    pub fn put_account_with_calendars(
        &self,
        account: &AccountRecord,
        calendars: &[CalendarRecord],
        initial_due_ms: i64,
    ) -> Result<(), StoreError> {
        let acc = enc_ids(&self.ids, account);
        let _writer = self.sync_states.writer();
        let written = std::cell::RefCell::new(Vec::new());
        (
            &self.accounts,
            &self.tenant_accounts,
            &self.identities,
            &self.calendars,
            &self.sync,
        )
            .transaction(|(accounts, tenant_accounts, identities, cals, sync)| {
                written.borrow_mut().clear();
                refuse_revoked(accounts, &account.account_id)?;
                accounts.insert(account.account_id.as_bytes(), acc.clone())?;
                tenant_accounts.insert(key(&[&account.tenant_id, &account.account_id]), &[])?;
                if !account.identity_hash.is_empty() {
                    identities.insert(
                        account.identity_hash.as_bytes(),
                        account.account_id.as_bytes(),
                    )?;
                }
                for c in calendars {
                    let k = cal_key(&self.ids, &account.account_id, &c.calendar_id);
                    cals.insert(k.clone(), enc_ids(&self.ids, c))?;
                    let mut st: SyncRecord = tx_get_ids(&self.ids, sync, &k)?.unwrap_or_default();
                    if st.last_success_ms.is_none() {
                        st.next_due_ms = initial_due_ms;
                    }
                    st.paused = false;
                    st.disabled = !c.synced;
                    sync.insert(k, enc_ids(&self.ids, &st))?;
                    written.borrow_mut().push((c.calendar_id.clone(), st));
                }
                Ok(())
            })?;
        for (calendar, st) in written.into_inner() {
            self.sync_states.set(&account.account_id, &calendar, st);
        }
        Ok(())
    }

    /// Stores an account record alone. A revoked account stays revoked: a
    /// record that is not revoked never replaces a revoked one (a token
    /// refresh or a status change that read the record before revocation
    /// would otherwise bring its credentials back); that write fails with
    /// [`StoreError::AccountRevoked`].
    pub fn put_account(&self, account: &AccountRecord) -> Result<(), StoreError> {
        let bytes = enc_ids(&self.ids, account);
        let revoking = account.status == calbridge::pb::AccountStatus::Revoked;
        self.accounts.transaction(|accounts| {
            if !revoking {
                refuse_revoked(accounts, &account.account_id)?;
            }
            accounts.insert(account.account_id.as_bytes(), bytes.clone())?;
            Ok(())
        })?;
        Ok(())
    }

    /// Stores an account record and appends change-log entries for its
    /// tenant, atomically (revocation records REVOKED with the mark itself,
    /// so no sync page can land between the two). Same rule as
    /// [`Store::put_account`].
    pub fn put_account_with_changes(
        &self,
        account: &AccountRecord,
        changes: &[ChangeDraft],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let bytes = enc_ids(&self.ids, account);
        let revoking = account.status == calbridge::pb::AccountStatus::Revoked;
        (&self.accounts, &self.changes, &self.heads).transaction(|(accounts, log, heads)| {
            if !revoking {
                refuse_revoked(accounts, &account.account_id)?;
            }
            accounts.insert(account.account_id.as_bytes(), bytes.clone())?;
            append_changes(&self.ids, log, heads, &account.tenant_id, changes, now_ms)?;
            Ok(())
        })?;
        Ok(())
    }

    /// Replaces an account's identity hash (and its mapping), atomically;
    /// the old mapping goes only when it names this account.
    pub fn set_identity_hash(
        &self,
        account_id: &AccountId,
        identity_hash: &str,
    ) -> Result<(), StoreError> {
        (&self.accounts, &self.identities).transaction(|(accounts, identities)| {
            let Some(mut a) =
                tx_get_ids::<AccountRecord>(&self.ids, accounts, account_id.as_bytes())?
            else {
                return Ok(());
            };
            if a.identity_hash == identity_hash {
                return Ok(());
            }
            if identities
                .get(a.identity_hash.as_bytes())?
                .is_some_and(|v| v.as_ref() == account_id.as_bytes())
            {
                identities.remove(a.identity_hash.as_bytes())?;
            }
            a.identity_hash = identity_hash.to_string();
            accounts.insert(account_id.as_bytes(), enc_ids(&self.ids, &a))?;
            identities.insert(identity_hash.as_bytes(), account_id.as_bytes())?;
            Ok(())
        })?;
        Ok(())
    }

    /// An account's calendars, by calendar id.
    pub fn calendars(&self, account: &AccountId) -> Result<Vec<CalendarRecord>, StoreError> {
        let mut out = self
            .calendars
            .scan_prefix(prefix(&[account]))
            .values()
            .map(|v| dec_ids(&self.ids, "calendar", &v?))
            .collect::<Result<Vec<CalendarRecord>, StoreError>>()?;
        out.sort_by(|a, b| a.calendar_id.cmp(&b.calendar_id));
        Ok(out)
    }

    /// One calendar.
    pub fn calendar(
        &self,
        account: &AccountId,
        calendar: &CalendarId,
    ) -> Result<Option<CalendarRecord>, StoreError> {
        self.calendars
            .get(cal_key(&self.ids, account, calendar))?
            .map(|v| dec_ids(&self.ids, "calendar", &v))
            .transpose()
    }

    /// Updates one calendar record (refused for a revoked account).
    pub fn put_calendar(&self, account: &AccountId, c: &CalendarRecord) -> Result<(), StoreError> {
        let bytes = enc_ids(&self.ids, c);
        (&self.accounts, &self.calendars).transaction(|(accounts, calendars)| {
            refuse_revoked(accounts, account)?;
            calendars.insert(cal_key(&self.ids, account, &c.calendar_id), bytes.clone())?;
            Ok(())
        })?;
        Ok(())
    }

    /// Removes a calendar's mirror (events, index, client ids) and resets its
    /// cursor, without change-log entries (used when sync is turned off).
    pub fn clear_calendar_mirror(
        &self,
        account: &AccountId,
        calendar: &CalendarId,
    ) -> Result<(), StoreError> {
        let p = cal_prefix(&self.ids, account, calendar);
        self.event_counts.begin();
        let cleared = (|| -> Result<(), StoreError> {
            for tree in [&self.events, &self.event_index, &self.client_ids] {
                let mut batch = sled::Batch::default();
                for k in tree.scan_prefix(&p).keys() {
                    batch.remove(k?);
                }
                tree.apply_batch(batch)?;
            }
            Ok(())
        })();
        self.event_counts.forget(account, Some(calendar));
        cleared?;
        let _writer = self.sync_states.writer();
        if let Some(mut st) = self.sync_state(account, calendar)? {
            st.cursor.clear();
            st.last_success_ms = None;
            st.busy_digest = None;
            self.sync.insert(
                cal_key(&self.ids, account, calendar),
                enc_ids(&self.ids, &st),
            )?;
            self.sync_states.set(account, calendar, st);
        }
        Ok(())
    }

    /// One calendar's sync state.
    pub fn sync_state(
        &self,
        account: &AccountId,
        calendar: &CalendarId,
    ) -> Result<Option<SyncRecord>, StoreError> {
        Ok(self
            .sync_states
            .read()
            .get(account.as_str())
            .and_then(|m| m.get(calendar.as_str()))
            .and_then(|slot| slot.state.clone()))
    }

    /// The freshness cell of a calendar: when it last synced successfully,
    /// kept current by every later write of its sync state.
    pub fn freshness(&self, account: &AccountId, calendar: &CalendarId) -> Arc<FreshnessCell> {
        if let Some(slot) = self
            .sync_states
            .read()
            .get(account.as_str())
            .and_then(|m| m.get(calendar.as_str()))
        {
            return slot.fresh.clone();
        }
        self.sync_states
            .map()
            .entry(account.to_string())
            .or_default()
            .entry(calendar.to_string())
            .or_insert_with(SyncSlot::empty)
            .fresh
            .clone()
    }

    /// Stores one calendar's sync state (refused for a revoked account).
    pub fn put_sync_state(
        &self,
        account: &AccountId,
        calendar: &CalendarId,
        s: &SyncRecord,
    ) -> Result<(), StoreError> {
        let bytes = enc_ids(&self.ids, s);
        let _writer = self.sync_states.writer();
        (&self.accounts, &self.sync).transaction(|(accounts, sync)| {
            refuse_revoked(accounts, account)?;
            sync.insert(cal_key(&self.ids, account, calendar), bytes.clone())?;
            Ok(())
        })?;
        self.sync_states.set(account, calendar, s.clone());
        Ok(())
    }

    /// Removes one calendar's sync state (its calendar is gone): the sync
    /// loop no longer considers it.
    pub fn remove_sync_state(
        &self,
        account: &AccountId,
        calendar: &CalendarId,
    ) -> Result<(), StoreError> {
        let _writer = self.sync_states.writer();
        self.sync.remove(cal_key(&self.ids, account, calendar))?;
        if let Some(slot) = self
            .sync_states
            .map()
            .get_mut(account.as_str())
            .and_then(|m| m.get_mut(calendar.as_str()))
        {
            slot.state = None;
            slot.fresh.set(None);
        }
        Ok(())
    }

    /// Every calendar's sync state: (account, calendar, state), in no
    /// particular order.
    pub fn all_sync_states(&self) -> Result<Vec<(AccountId, CalendarId, SyncRecord)>, StoreError> {
        Ok(self
            .sync_states
            .read()
            .iter()
            .flat_map(|(a, m)| {
                m.iter().filter_map(move |(c, slot)| {
                    Some((a.as_str().into(), c.as_str().into(), slot.state.clone()?))
                })
            })
            .collect())
    }

    /// Pauses or resumes every calendar of an account.
    pub fn set_account_paused(
        &self,
        account: &AccountId,
        paused: bool,
        due_ms: i64,
    ) -> Result<(), StoreError> {
        let _writer = self.sync_states.writer();
        let calendars: Vec<(String, SyncRecord)> = self
            .sync_states
            .read()
            .get(account.as_str())
            .map(|m| {
                m.iter()
                    .filter_map(|(c, slot)| Some((c.clone(), slot.state.clone()?)))
                    .collect()
            })
            .unwrap_or_default();
        for (calendar, mut s) in calendars {
            s.paused = paused;
            if !paused {
                s.next_due_ms = due_ms;
            }
            self.sync.insert(
                cal_key(&self.ids, account, &calendar),
                enc_ids(&self.ids, &s),
            )?;
            self.sync_states.set(account, &calendar, s);
        }
        Ok(())
    }

    /// Stores a push channel (refused for a revoked account).
    pub fn put_channel(&self, c: &ChannelRecord) -> Result<(), StoreError> {
        let bytes = enc_ids(&self.ids, c);
        (&self.accounts, &self.channels).transaction(|(accounts, channels)| {
            refuse_revoked(accounts, &c.account_id)?;
            channels.insert(c.channel_id.as_bytes(), bytes.clone())?;
            Ok(())
        })?;
        Ok(())
    }

    /// A push channel.
    pub fn channel(&self, id: &str) -> Result<Option<ChannelRecord>, StoreError> {
        self.channels
            .get(id)?
            .map(|v| dec_ids(&self.ids, "channel", &v))
            .transpose()
    }

    /// Removes a push channel.
    pub fn remove_channel(&self, id: &str) -> Result<(), StoreError> {
        self.channels.remove(id)?;
        Ok(())
    }

    /// How many push channels are held.
    pub fn channel_count(&self) -> Result<usize, StoreError> {
        Ok(self.channels.len())
    }

    /// Every push channel.
    pub fn channels(&self) -> Result<Vec<ChannelRecord>, StoreError> {
        self.channels
            .iter()
            .values()
            .map(|v| dec_ids(&self.ids, "channel", &v?))
            .collect()
    }

    /// Deletes every row of an account but its (already scrubbed) account
    /// record and its change-log entries; see [`Store::purge_accounts_rows`].
    pub fn purge_account_rows(&self, account: &AccountId) -> Result<usize, StoreError> {
        self.purge_accounts_rows(&std::iter::once(account.clone()).collect())
    }

    /// Deletes every row that names one of `accounts` but their (already
    /// scrubbed) account records and the change log (whose sequence must
    /// stay gapless): calendars, sync states, mirror, client ids, channels,
    /// pending writes, pending re-authorisations, identity mappings, and
    /// their place in holds (a hold that names no other account goes).
    /// Returns how many rows went.
    pub fn purge_accounts_rows(
        &self,
        accounts: &std::collections::HashSet<AccountId>,
    ) -> Result<usize, StoreError> {
        if accounts.is_empty() {
            return Ok(0);
        }
        let mut n = 0;
        {
            let _writer = self.sync_states.writer();
            for account in accounts {
                let p = prefix(&[account]);
                self.event_counts.begin();
                let purged = (|| -> Result<usize, StoreError> {
                    let mut n = 0;
                    for tree in [
                        &self.calendars,
                        &self.sync,
                        &self.events,
                        &self.event_index,
                        &self.client_ids,
                    ] {
                        let mut batch = sled::Batch::default();
                        for k in tree.scan_prefix(&p).keys() {
                            batch.remove(k?);
                            n += 1;
                        }
                        tree.apply_batch(batch)?;
                        if std::ptr::eq(tree, &self.sync) {
                            self.sync_states.remove_account(account);
                        }
                    }
                    Ok(n)
                })();
                self.event_counts.forget(account, None);
                n += purged?;
            }
        }
        let named = |id: &str| accounts.contains(id);
        for c in self.channels()? {
            if named(&c.account_id) {
                self.channels.remove(c.channel_id.as_bytes())?;
                n += 1;
            }
        }
        for o in self.outbox_all()? {
            if named(&o.account_id) {
                self.outbox_remove(o.op_id)?;
                n += 1;
            }
        }
        for item in self.auth_states.iter() {
            let (k, v) = item?;
            if dec::<AuthStateRecord>("auth state", &v).is_ok_and(|r| named(&r.account_id)) {
                self.auth_states.remove(k)?;
                n += 1;
            }
        }
        for item in self.identities.iter() {
            let (k, v) = item?;
            if named(&String::from_utf8_lossy(&v)) {
                self.identities.remove(k)?;
                n += 1;
            }
        }
        for item in self.holds.iter() {
            let (k, v) = item?;
            let Ok(mut h) = dec::<HoldRecord>("hold", &v) else {
                continue;
            };
            if !h.account_ids.iter().any(|a| named(a)) {
                continue;
            }
            h.account_ids.retain(|a| !named(a));
            if h.account_ids.is_empty() {
                self.holds.remove(k)?;
            } else {
                self.holds.insert(k, enc(&h))?;
            }
            n += 1;
        }
        Ok(n)
    }

    /// Removes an identity mapping (after revocation).
    pub fn remove_identity(&self, identity_hash: &str) -> Result<(), StoreError> {
        self.identities.remove(identity_hash)?;
        Ok(())
    }
}
