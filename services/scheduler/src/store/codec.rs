//! How records and ids become sled keys and values: key layout, JSON
//! encoding, the sealing of ids ([`IdCipher`]) and the revocation check
//! every account-scoped transaction runs.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionalTree};

use super::*;

/// Joins key parts with NUL (ids never contain control characters).
pub fn key(parts: &[&str]) -> Vec<u8> {
    parts.join("\0").into_bytes()
}

pub(super) fn prefix(parts: &[&str]) -> Vec<u8> {
    let mut k = key(parts);
    k.push(0);
    k
}

/// The key of one calendar's row (calendars, sync): the account id, then
/// the calendar id sealed ([`IdCipher`]).
pub(super) fn cal_key(ids: &IdCipher, account: &str, calendar: &str) -> Vec<u8> {
    key(&[account, &ids.seal(calendar)])
}

/// The prefix of every row of one calendar (events, index, client ids).
pub(super) fn cal_prefix(ids: &IdCipher, account: &str, calendar: &str) -> Vec<u8> {
    prefix(&[account, &ids.seal(calendar)])
}

/// The key of an item of a calendar (an event by provider id, a client id):
/// both ids sealed.
pub(super) fn item_key(ids: &IdCipher, account: &str, calendar: &str, item: &str) -> Vec<u8> {
    key(&[account, &ids.seal(calendar), &ids.seal(item)])
}

pub(super) fn index_key(
    ids: &IdCipher,
    account: &str,
    calendar: &str,
    start_ms: i64,
    pid: &str,
) -> Vec<u8> {
    let mut k = cal_prefix(ids, account, calendar);
    k.extend_from_slice(&((start_ms as u64) ^ (1 << 63)).to_be_bytes());
    k.extend_from_slice(ids.seal(pid).as_bytes());
    k
}

/// The id sealed in a key part.
pub(super) fn open_part(ids: &IdCipher, what: &str, part: &[u8]) -> Result<String, StoreError> {
    std::str::from_utf8(part)
        .ok()
        .and_then(|p| ids.open(p).ok())
        .ok_or_else(|| StoreError::Decode(what.to_string()))
}

/// A key and its value.
pub type Row = (Vec<u8>, Vec<u8>);

/// One row of a schema 1 or 2 store (ids in clear) as this schema keeps it,
/// for the upgrade's rewrite ([`crate::upgrade`]): key and value with their
/// ids sealed. `None` for a mirror row that cannot be read (its calendar
/// lists again); a sync state that cannot be read becomes the default one,
/// as when the store opens.
pub(crate) fn seal_legacy_row(
    tree: &str,
    k: &[u8],
    v: &[u8],
    ids: &IdCipher,
) -> Result<Option<Row>, StoreError> {
    fn parts(k: &[u8], n: usize) -> Option<Vec<&str>> {
        let p: Vec<&str> = std::str::from_utf8(k).ok()?.splitn(n, '\0').collect();
        (p.len() == n).then_some(p)
    }
    fn reseal<T: Serialize + DeserializeOwned + SealedIds>(
        ids: &IdCipher,
        v: &[u8],
    ) -> Option<Vec<u8>> {
        dec::<T>("record", v).ok().map(|r| enc_ids(ids, &r))
    }
    Ok(match tree {
        "accounts" => Some((
            k.to_vec(),
            enc_ids(ids, &dec::<AccountRecord>("account", v)?),
        )),
        "outbox" => Some((k.to_vec(), enc_ids(ids, &dec::<OutboxRecord>("outbox", v)?))),
        "changes" => Some((k.to_vec(), enc_ids(ids, &dec::<ChangeRecord>("change", v)?))),
        "channels" => Some((
            k.to_vec(),
            enc_ids(ids, &dec::<ChannelRecord>("channel", v)?),
        )),
        "calendars" => parts(k, 2)
            .and_then(|p| Some((cal_key(ids, p[0], p[1]), reseal::<CalendarRecord>(ids, v)?))),
        "sync" => parts(k, 2).map(|p| {
            let st = dec::<SyncRecord>("sync", v).unwrap_or_default();
            (cal_key(ids, p[0], p[1]), enc_ids(ids, &st))
        }),
        "events" => parts(k, 3).and_then(|p| {
            Some((
                item_key(ids, p[0], p[1], p[2]),
                reseal::<EventRecord>(ids, v)?,
            ))
        }),
        "client_ids" => parts(k, 3).and_then(|p| {
            let pid = std::str::from_utf8(v).ok()?;
            Some((item_key(ids, p[0], p[1], p[2]), ids.seal(pid).into_bytes()))
        }),
        "event_index" => {
            // account NUL calendar NUL start (8 bytes, may hold NULs) pid
            let mut it = k.splitn(3, |b| *b == 0);
            match (it.next(), it.next(), it.next()) {
                (Some(a), Some(c), Some(rest)) if rest.len() >= 8 => {
                    match (
                        std::str::from_utf8(a),
                        std::str::from_utf8(c),
                        std::str::from_utf8(&rest[8..]),
                    ) {
                        (Ok(a), Ok(c), Ok(pid)) => {
                            let mut nk = cal_prefix(ids, a, c);
                            nk.extend_from_slice(&rest[..8]);
                            nk.extend_from_slice(ids.seal(pid).as_bytes());
                            Some((nk, v.to_vec()))
                        }
                        _ => None,
                    }
                }
                _ => None,
            }
        }
        _ => Some((k.to_vec(), v.to_vec())),
    })
}

/// Records whose id fields the store keeps sealed ([`IdCipher`]): in memory
/// they hold the ids, on disk what [`IdCipher::seal`] made of them.
pub(super) trait SealedIds: Clone {
    /// Calls `f` on every id field.
    fn each_id(&mut self, f: &mut dyn FnMut(&mut String));
}

pub(super) fn each_opt(v: &mut Option<String>, f: &mut dyn FnMut(&mut String)) {
    if let Some(s) = v {
        f(s);
    }
}

impl SealedIds for AccountRecord {
    fn each_id(&mut self, f: &mut dyn FnMut(&mut String)) {
        f(&mut self.server_url);
    }
}

impl SealedIds for CalendarRecord {
    fn each_id(&mut self, f: &mut dyn FnMut(&mut String)) {
        f(self.calendar_id.text_mut());
    }
}

impl SealedIds for SyncRecord {
    fn each_id(&mut self, f: &mut dyn FnMut(&mut String)) {
        f(&mut self.cursor);
        f(&mut self.last_error);
        for (id, reason) in &mut self.skipped {
            f(id);
            f(reason);
        }
    }
}

impl SealedIds for EventRecord {
    fn each_id(&mut self, f: &mut dyn FnMut(&mut String)) {
        each_opt(&mut self.client_event_id, f);
    }
}

impl SealedIds for OutboxRecord {
    fn each_id(&mut self, f: &mut dyn FnMut(&mut String)) {
        f(self.calendar_id.text_mut());
        f(&mut self.client_event_id);
        f(self.provider_event_id.text_mut());
    }
}

impl SealedIds for ChangeRecord {
    fn each_id(&mut self, f: &mut dyn FnMut(&mut String)) {
        f(self.calendar_id.text_mut());
        f(self.provider_event_id.text_mut());
    }
}

impl SealedIds for ChannelRecord {
    fn each_id(&mut self, f: &mut dyn FnMut(&mut String)) {
        f(self.calendar_id.text_mut());
        f(&mut self.resource_id);
    }
}

/// A record serialized with its ids sealed.
pub(super) fn enc_ids<T: Serialize + SealedIds>(ids: &IdCipher, v: &T) -> Vec<u8> {
    let mut sealed = v.clone();
    sealed.each_id(&mut |s| *s = ids.seal(s));
    enc(&sealed)
}

/// A record stored by [`enc_ids`], its ids opened.
pub(super) fn dec_ids<T: DeserializeOwned + SealedIds>(
    ids: &IdCipher,
    what: &str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    let mut v: T = dec(what, bytes)?;
    let mut opened = true;
    v.each_id(&mut |s| match ids.open(s) {
        Ok(clear) => *s = clear,
        Err(_) => opened = false,
    });
    if opened {
        Ok(v)
    } else {
        Err(StoreError::Decode(what.to_string()))
    }
}

pub(super) fn tx_get_ids<T: DeserializeOwned + SealedIds>(
    ids: &IdCipher,
    t: &TransactionalTree,
    k: &[u8],
) -> TxResult<Option<T>> {
    Ok(t.get(k)?.and_then(|v| dec_ids(ids, "record", &v).ok()))
}

pub(super) fn seq_key(tenant: &str, seq: u64) -> Vec<u8> {
    let mut k = prefix(&[tenant]);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

pub(super) fn enc<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("records serialize")
}

pub(super) fn dec<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|_| StoreError::Decode(what.to_string()))
}

pub(super) type TxResult<T> = Result<T, ConflictableTransactionError<Revoked>>;

pub(super) fn tx_get<T: DeserializeOwned>(t: &TransactionalTree, k: &[u8]) -> TxResult<Option<T>> {
    Ok(t.get(k)?.and_then(|v| serde_json::from_slice(&v).ok()))
}

/// The status of an account record, decoded alone.
#[derive(Deserialize)]
struct StatusOnly {
    status: i32,
}

/// True when `bytes` is the record of a revoked account.
pub(super) fn is_revoked_record(bytes: &[u8]) -> bool {
    serde_json::from_slice::<StatusOnly>(bytes)
        .is_ok_and(|a| a.status == calbridge::pb::AccountStatus::Revoked as i32)
}

/// Aborts the transaction when `account` is revoked. Every write that adds
/// rows naming an account runs it inside the transaction that writes them:
/// sled runs transactions one at a time, so a write either commits before
/// the account is marked revoked (and revocation's purge removes its rows)
/// or sees the mark and writes nothing. A sync page read before a
/// revocation can therefore never be applied after it.
pub(super) fn refuse_revoked(accounts: &TransactionalTree, account: &str) -> TxResult<()> {
    match accounts.get(account.as_bytes())? {
        Some(v) if is_revoked_record(&v) => Err(ConflictableTransactionError::Abort(Revoked)),
        _ => Ok(()),
    }
}
