//! The invariants the crash soak and the fault-injection test check, and
//! the ledger they check them against: what the platform wrote and was
//! told, what was edited outside, which accounts were revoked.
//!
//! After the load stops, [`settle`] makes every live account sync until its
//! mirror equals the provider (bounded), and [`verify`] checks, on one
//! observation of the providers, the mirrors and the feeds:
//! - every mirror equals its provider calendar, each event at the start the
//!   ledger gave its title; an account's own writes under their client id,
//!   anything else under its own client id or none (never another's);
//! - every acknowledged write exactly once at the provider, in the state of
//!   the last acknowledged write of its client id (or of a later write
//!   whose answer was lost); outside edits exactly as made; nothing else;
//! - every tenant's feed numbered 1, 2, 3, ... without gap or duplicate;
//!   per account and event a valid life (no create of a present event, no
//!   update or delete of an absent one, no update that changes nothing);
//!   no change of an account's own write (no echo); the changes of a live
//!   account replay to its mirror (its own writes aside); nothing of a
//!   revoked account after its REVOKED entry, and no event content of it;
//! - a revoked account is reported REVOKED and its mirror is gone.
//!
//! Titles carry identity: `P <client id> <n>` for the platform's n-th write
//! of a client id, `O <outside id> <n>` for outside edits. The pure part
//! ([`verify`]) is separate from reading ([`observe`], [`settle`]) so that
//! its checks are unit-tested against planted faults.

mod observe;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use calbridge::pb::{self, AccountStatus, ChangeKind};
use calbridge_fake_google::Control;
use chrono::{DateTime, Utc};

pub use observe::{mirror_window, observe, provider_events, settle};

/// Where a calendar lives at its provider, for reading it directly.
#[derive(Clone)]
pub enum ProviderCalendar {
    /// A CalDAV calendar.
    Caldav {
        /// The server's base URL (`http://127.0.0.1:PORT/`).
        base: String,
        /// The user name.
        username: String,
        /// The password.
        password: String,
        /// The calendar's href (`/user/cal/`).
        href: String,
    },
    /// A calendar of the fake Google.
    Google {
        /// The fake's control API.
        control: Control,
        /// The calendar id (the user's e-mail for a primary calendar).
        calendar: String,
    },
}

/// What a write (or an outside edit) leaves at the provider.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Effect {
    /// The event exists with this title.
    Present(String),
    /// The event does not exist.
    Absent,
}

/// What the platform was told about a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged (the provider accepted it and the result is durable).
    Acked,
    /// Failed or unanswered (a kill, an error): it may or may not have
    /// happened.
    InDoubt,
}

/// A connected account.
#[derive(Debug, Clone)]
pub struct AccountEntry {
    /// Its tenant.
    pub tenant_id: String,
    /// The key of its provider calendar (see [`Ledger::add_calendar`]).
    pub calendar_key: String,
    /// The scheduler's id of that calendar.
    pub calendar_id: String,
    /// True once a RevokeAccount of it was acknowledged.
    pub revoked: bool,
}

/// The platform's writes of one client id (each of one account).
#[derive(Debug, Clone)]
pub struct WriteEntry {
    /// The account that writes it.
    pub account_id: String,
    /// The provider event id its writes land on (derived from the
    /// idempotency key, known before the first write).
    pub pid: String,
    /// The state known after the last check (Absent before any write).
    pub settled: Effect,
    /// Writes since, with what the platform was told (`None`: no answer
    /// yet).
    pub ops: Vec<(Effect, Option<Outcome>)>,
    /// Writes sent so far (titles number them).
    pub sent: u64,
}

impl WriteEntry {
    /// The states the provider may hold: the last acknowledged write's (or
    /// the settled state), or that of any later write whose answer was not
    /// an acknowledgement.
    pub fn candidates(&self) -> BTreeSet<Effect> {
        let last_acked = self
            .ops
            .iter()
            .rposition(|(_, o)| *o == Some(Outcome::Acked));
        let mut out = BTreeSet::new();
        match last_acked {
            Some(i) => {
                out.insert(self.ops[i].0.clone());
                out.extend(self.ops[i + 1..].iter().map(|(e, _)| e.clone()));
            }
            None => {
                out.insert(self.settled.clone());
                out.extend(self.ops.iter().map(|(e, _)| e.clone()));
            }
        }
        out
    }
}

/// An event edited outside calbridge (always completed, so exact).
#[derive(Debug, Clone)]
pub struct OutsideEntry {
    /// The key of its provider calendar.
    pub calendar_key: String,
    /// Its provider event id.
    pub pid: String,
    /// Its state at the provider.
    pub state: Effect,
}

/// What the platform did and was told, and what was done outside.
#[derive(Clone, Default)]
pub struct Ledger {
    /// Provider calendars by key.
    pub calendars: BTreeMap<String, ProviderCalendar>,
    /// Accounts by id.
    pub accounts: BTreeMap<String, AccountEntry>,
    /// Platform writes by client id.
    pub writes: BTreeMap<String, WriteEntry>,
    /// Outside events by outside id.
    pub outside: BTreeMap<String, OutsideEntry>,
    /// The start each title was written with.
    pub starts: BTreeMap<String, DateTime<Utc>>,
}

/// One broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Which invariant (a short fixed name).
    pub kind: &'static str,
    /// What was seen.
    pub detail: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.detail)
    }
}

/// The identity a title carries: (`'P'` or `'O'`, id, n).
pub fn parse_title(title: &str) -> Option<(char, &str, u64)> {
    let mut parts = title.split(' ');
    let tag = parts.next()?;
    let id = parts.next()?;
    let n = parts.next()?.parse().ok()?;
    if parts.next().is_some() {
        return None;
    }
    match tag {
        "P" => Some(('P', id, n)),
        "O" => Some(('O', id, n)),
        _ => None,
    }
}

impl Ledger {
    /// Registers a provider calendar under `key`.
    pub fn add_calendar(&mut self, key: &str, calendar: ProviderCalendar) {
        self.calendars.insert(key.to_string(), calendar);
    }

    /// Registers a connected account.
    pub fn add_account(&mut self, account_id: &str, tenant_id: &str, key: &str, calendar_id: &str) {
        self.accounts.insert(
            account_id.to_string(),
            AccountEntry {
                tenant_id: tenant_id.to_string(),
                calendar_key: key.to_string(),
                calendar_id: calendar_id.to_string(),
                revoked: false,
            },
        );
    }

    /// Records an acknowledged revocation.
    pub fn revoked(&mut self, account_id: &str) {
        if let Some(a) = self.accounts.get_mut(account_id) {
            a.revoked = true;
        }
    }

    /// Records a write about to be sent; returns its index.
    pub fn begin_write(&mut self, cid: &str, account_id: &str, pid: &str, effect: Effect) -> usize {
        let entry = self
            .writes
            .entry(cid.to_string())
            .or_insert_with(|| WriteEntry {
                account_id: account_id.to_string(),
                pid: pid.to_string(),
                settled: Effect::Absent,
                ops: Vec::new(),
                sent: 0,
            });
        entry.sent += 1;
        entry.ops.push((effect, None));
        entry.ops.len() - 1
    }

    /// How many writes of `cid` were sent so far.
    pub fn writes_of(&self, cid: &str) -> u64 {
        self.writes.get(cid).map(|w| w.sent).unwrap_or(0)
    }

    /// Records what the platform was told about write `i` of `cid`.
    pub fn end_write(&mut self, cid: &str, i: usize, outcome: Outcome) {
        if let Some(op) = self.writes.get_mut(cid).and_then(|w| w.ops.get_mut(i)) {
            op.1 = Some(outcome);
        }
    }

    /// Records an outside edit (already done at the provider).
    pub fn outside_edit(&mut self, oid: &str, key: &str, pid: &str, state: Effect) {
        self.outside.insert(
            oid.to_string(),
            OutsideEntry {
                calendar_key: key.to_string(),
                pid: pid.to_string(),
                state,
            },
        );
    }

    /// The account that writes each (calendar key, provider event id).
    fn writers(&self) -> BTreeMap<(&str, &str), &str> {
        self.writes
            .values()
            .filter_map(|w| {
                let key = self.accounts.get(&w.account_id)?.calendar_key.as_str();
                Some(((key, w.pid.as_str()), w.account_id.as_str()))
            })
            .collect()
    }

    /// After a check: every client id's state becomes what the provider
    /// holds, when that was one of its candidates (so later checks expect
    /// exactly it).
    pub fn settle_writes(&mut self, observed: &Observed) {
        for (cid, w) in self.writes.iter_mut() {
            let Some(acc) = self.accounts.get(&w.account_id) else {
                continue;
            };
            let Some(events) = observed.provider.get(&acc.calendar_key) else {
                continue;
            };
            let now = match events.get(&w.pid) {
                Some(title) if parse_title(title).is_some_and(|(_, id, _)| id == cid) => {
                    Effect::Present(title.clone())
                }
                _ => Effect::Absent,
            };
            if w.candidates().contains(&now) {
                w.settled = now;
                w.ops.clear();
            }
        }
    }
}

/// One event as the mirror shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorEvent {
    /// The title.
    pub title: String,
    /// The start instant (none for an all-day or unreadable start).
    pub start: Option<DateTime<Utc>>,
    /// The client event id the mirror gives it.
    pub client_event_id: String,
}

/// What a revoked account looks like through the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedProbe {
    /// GetAccount's status (or its error code).
    pub status: String,
    /// ListEvents' error code (`None` when it answered events).
    pub list_events_error: Option<String>,
    /// How many events ListEvents answered when it did.
    pub events: usize,
}

/// One observation of providers, mirrors and feeds.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Per provider calendar key: provider event id → title.
    pub provider: BTreeMap<String, BTreeMap<String, String>>,
    /// Per live account: provider event id → its mirror entry.
    pub mirrors: BTreeMap<String, BTreeMap<String, MirrorEvent>>,
    /// Per tenant: its whole feed.
    pub feeds: BTreeMap<String, Vec<pb::Change>>,
    /// Per revoked account: what the API says of it.
    pub revoked: BTreeMap<String, RevokedProbe>,
}

/// The live accounts whose mirror differs from their provider calendar,
/// each with a short description of the difference.
pub fn mirror_differences(ledger: &Ledger, o: &Observed) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (id, a) in ledger.accounts.iter().filter(|(_, a)| !a.revoked) {
        let provider = o.provider.get(&a.calendar_key).cloned().unwrap_or_default();
        let mirror = o.mirrors.get(id).cloned().unwrap_or_default();
        let mut diff = Vec::new();
        for (pid, title) in &provider {
            match mirror.get(pid) {
                None => diff.push(format!("{pid} ({title}) missing from the mirror")),
                Some(m) if m.title != *title => diff.push(format!(
                    "{pid}: mirror has {:?}, provider {title:?}",
                    m.title
                )),
                Some(_) => {}
            }
        }
        for (pid, m) in &mirror {
            if !provider.contains_key(pid) {
                diff.push(format!("{pid} ({}) in the mirror only", m.title));
            }
        }
        if !diff.is_empty() {
            diff.truncate(8);
            out.push((id.clone(), diff.join("; ")));
        }
    }
    out
}

fn push(out: &mut Vec<Violation>, kind: &'static str, detail: String) {
    out.push(Violation { kind, detail });
}

/// Checks every invariant on one observation (see the module docs).
pub fn verify(ledger: &Ledger, o: &Observed) -> Vec<Violation> {
    let mut out = Vec::new();
    for (id, diff) in mirror_differences(ledger, o) {
        push(
            &mut out,
            "mirror differs from provider",
            format!("{id}: {diff}"),
        );
    }
    verify_mirror_entries(ledger, o, &mut out);
    verify_provider(ledger, o, &mut out);
    let writers = ledger.writers();
    for (tenant, feed) in &o.feeds {
        verify_feed(ledger, &writers, o, tenant, feed, &mut out);
    }
    for (id, p) in &o.revoked {
        if p.status != format!("{:?}", AccountStatus::Revoked) {
            push(
                &mut out,
                "revoked account not reported revoked",
                format!("{id}: {}", p.status),
            );
        }
        if p.list_events_error.is_none() {
            push(
                &mut out,
                "revoked account still has a mirror",
                format!("{id}: ListEvents answered {} events", p.events),
            );
        }
    }
    out
}

/// Mirror entries: the start their title was written with, and the client
/// id of the account that wrote them (no other account's).
fn verify_mirror_entries(ledger: &Ledger, o: &Observed, out: &mut Vec<Violation>) {
    for (account, mirror) in &o.mirrors {
        for (pid, m) in mirror {
            if let (Some(want), Some(got)) = (ledger.starts.get(&m.title), m.start) {
                if *want != got {
                    push(
                        out,
                        "mirror event at the wrong time",
                        format!("{account} {pid} {:?}: {got}, written {want}", m.title),
                    );
                }
            }
            // The account's own writes carry their client id; another
            // account's write may carry its own (a provider that stores
            // it, as Google's private properties do) or none; nothing
            // carries a client id that is not its own.
            let (cid, own) = match parse_title(&m.title) {
                Some(('P', cid, _)) => (
                    cid,
                    ledger
                        .writes
                        .get(cid)
                        .is_some_and(|w| w.account_id == *account),
                ),
                _ => ("", false),
            };
            let fine = m.client_event_id == cid || (!own && m.client_event_id.is_empty());
            if !fine {
                push(
                    out,
                    "mirror event under the wrong client id",
                    format!(
                        "{account} {pid} {:?}: client id {:?}",
                        m.title, m.client_event_id
                    ),
                );
            }
        }
    }
}

/// The provider: each client id at most once, in one of its candidate
/// states; outside events exactly as edited; nothing else.
fn verify_provider(ledger: &Ledger, o: &Observed, out: &mut Vec<Violation>) {
    for (key, events) in &o.provider {
        let mut by_id: BTreeMap<&str, Vec<(&String, &String)>> = BTreeMap::new();
        for (pid, title) in events {
            match parse_title(title) {
                Some((_, id, _)) => by_id.entry(id).or_default().push((pid, title)),
                None => push(
                    out,
                    "unknown event at the provider",
                    format!("{key} {pid}: {title:?}"),
                ),
            }
        }
        for (id, found) in &by_id {
            if found.len() > 1 {
                push(
                    out,
                    "written more than once at the provider",
                    format!("{key} {id}: {found:?}"),
                );
            }
        }
        for (cid, w) in &ledger.writes {
            let Some(acc) = ledger.accounts.get(&w.account_id) else {
                continue;
            };
            if acc.calendar_key != *key {
                continue;
            }
            let found = by_id.get(cid.as_str());
            let now = match found.and_then(|f| f.first()) {
                Some((_, title)) => Effect::Present((*title).clone()),
                None => Effect::Absent,
            };
            if let Some((pid, _)) = found.and_then(|f| f.first()) {
                if **pid != w.pid {
                    push(
                        out,
                        "write landed on an unexpected provider id",
                        format!("{key} {cid}: at {pid}, expected {}", w.pid),
                    );
                }
            }
            let candidates = w.candidates();
            if !candidates.contains(&now) {
                push(
                    out,
                    "acknowledged write not at the provider as acknowledged",
                    format!("{key} {cid}: provider {now:?}, expected one of {candidates:?}"),
                );
            }
        }
        for (oid, e) in ledger
            .outside
            .iter()
            .filter(|(_, e)| e.calendar_key == *key)
        {
            let now = match events.get(&e.pid) {
                Some(t) => Effect::Present(t.clone()),
                None => Effect::Absent,
            };
            if now != e.state {
                push(
                    out,
                    "outside edit lost at the provider",
                    format!("{key} {oid}: {now:?}, edited to {:?}", e.state),
                );
            }
        }
    }
}

/// One tenant's feed.
fn verify_feed(
    ledger: &Ledger,
    writers: &BTreeMap<(&str, &str), &str>,
    o: &Observed,
    tenant: &str,
    feed: &[pb::Change],
    out: &mut Vec<Violation>,
) {
    for (i, ch) in feed.iter().enumerate() {
        if ch.sequence != i as u64 + 1 {
            push(
                out,
                "feed not numbered without gaps",
                format!("{tenant}: change {i} has sequence {}", ch.sequence),
            );
            break;
        }
    }
    let mut by_account: BTreeMap<&str, Vec<&pb::Change>> = BTreeMap::new();
    for ch in feed {
        by_account
            .entry(ch.account_id.as_str())
            .or_default()
            .push(ch);
    }
    for (account, changes) in by_account {
        let Some(acc) = ledger.accounts.get(account) else {
            push(
                out,
                "feed names an unknown account",
                format!("{tenant}: {account}"),
            );
            continue;
        };
        if acc.tenant_id != tenant {
            push(
                out,
                "feed carries another tenant's account",
                format!("{tenant}: {account} of {}", acc.tenant_id),
            );
        }
        let revoked_at = changes.iter().position(|ch| {
            ch.kind == ChangeKind::AccountStatus as i32
                && ch.account_status == AccountStatus::Revoked as i32
        });
        if acc.revoked {
            match revoked_at {
                None => push(
                    out,
                    "revoked account without REVOKED in the feed",
                    account.into(),
                ),
                Some(i) if i + 1 < changes.len() => push(
                    out,
                    "change after REVOKED",
                    format!("{account}: {:?}", changes[i + 1]),
                ),
                Some(_) => {}
            }
            if let Some(ch) = changes.iter().find(|ch| ch.event.is_some()) {
                push(
                    out,
                    "revoked account's change still carries event content",
                    format!("{account}: sequence {}", ch.sequence),
                );
            }
        } else if revoked_at.is_some() {
            push(out, "REVOKED for an account never revoked", account.into());
        }
        // Per event: a valid life, no echo of the account's own writes.
        let mut present: BTreeMap<&str, Option<String>> = BTreeMap::new();
        for ch in changes
            .iter()
            .filter(|ch| ch.kind != ChangeKind::AccountStatus as i32)
        {
            let pid = ch.provider_event_id.as_str();
            if writers.get(&(acc.calendar_key.as_str(), pid)) == Some(&account) {
                push(
                    out,
                    "echo of the account's own write",
                    format!(
                        "{account} sequence {}: {:?} of {pid}",
                        ch.sequence,
                        ch.kind()
                    ),
                );
            }
            let title = ch.event.as_ref().map(|e| e.title.clone());
            let was = present.get(pid).cloned();
            let bad = match ch.kind() {
                ChangeKind::EventCreated => was.is_some().then_some("created while present"),
                ChangeKind::EventUpdated => match &was {
                    None => Some("updated while absent"),
                    Some(t) if title.is_some() && *t == title => {
                        Some("updated without a visible change")
                    }
                    Some(_) => None,
                },
                ChangeKind::EventDeleted => was.is_none().then_some("deleted while absent"),
                _ => Some("unknown kind"),
            };
            if let Some(why) = bad {
                push(
                    out,
                    "duplicate or impossible change",
                    format!("{account} sequence {} {pid}: {why}", ch.sequence),
                );
            }
            if ch.kind() == ChangeKind::EventDeleted {
                present.remove(pid);
            } else {
                present.insert(pid, title);
            }
        }
        // A live account's feed replays to its mirror (its own writes,
        // which never reach its feed, aside).
        if let Some(mirror) = o.mirrors.get(account) {
            let foreign: BTreeMap<&str, &str> = mirror
                .iter()
                .filter(|(pid, _)| {
                    writers.get(&(acc.calendar_key.as_str(), pid.as_str())) != Some(&account)
                })
                .map(|(pid, m)| (pid.as_str(), m.title.as_str()))
                .collect();
            let replayed: BTreeMap<&str, &str> = present
                .iter()
                .map(|(pid, t)| (*pid, t.as_deref().unwrap_or("")))
                .collect();
            if foreign != replayed {
                let missing: Vec<_> = foreign
                    .iter()
                    .filter(|(p, t)| replayed.get(*p) != Some(*t))
                    .take(5)
                    .collect();
                let extra: Vec<_> = replayed
                    .iter()
                    .filter(|(p, t)| foreign.get(*p) != Some(*t))
                    .take(5)
                    .collect();
                push(
                    out,
                    "feed does not replay to the mirror",
                    format!("{account}: mirror only {missing:?}; feed only {extra:?}"),
                );
            }
        }
    }
}
