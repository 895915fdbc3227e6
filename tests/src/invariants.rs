//! The invariants the crash soak and the fault-injection test check, and
//! the ledger they check them against: what the platform wrote and was
//! told, what was edited outside, which accounts were revoked.
//!
//! After the load stops, [`settle`] makes every live account sync until its
//! mirror equals the provider (bounded), and [`verify`] checks, on one
//! observation of the providers, the mirrors and the feeds:
//! - every mirror equals its provider calendar, each event at the start the
//!   ledger gave its title, under the client id of the account that wrote
//!   it (and no other account's);
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
//! ([`verify`]) is separate from reading ([`observe`]) so that its checks
//! are unit-tested against planted faults.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use calbridge::pb::{self, AccountStatus, ChangeKind};
use calbridge_fake_google::Control;
use chrono::{DateTime, Utc};

use crate::{changes_after, sync_now_and_wait, SchedulerClient};

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

/// The window the mirrors are listed in.
pub fn mirror_window() -> pb::TimeWindow {
    let now = Utc::now();
    pb::TimeWindow {
        start: Some(calbridge::time::to_timestamp(
            now - chrono::Duration::days(2),
        )),
        end: Some(calbridge::time::to_timestamp(
            now + chrono::Duration::days(360),
        )),
    }
}

/// Reads every event of a provider calendar: provider event id → title.
pub async fn provider_events(
    http: &reqwest::Client,
    cal: &ProviderCalendar,
) -> Result<BTreeMap<String, String>> {
    match cal {
        ProviderCalendar::Caldav {
            base,
            username,
            password,
            href,
        } => caldav_events(http, base, username, password, href).await,
        ProviderCalendar::Google { control, calendar } => {
            let mut out = BTreeMap::new();
            for e in control.events(calendar).await? {
                if e["status"] == "cancelled" {
                    continue;
                }
                let id = e["id"].as_str().unwrap_or_default().to_string();
                let title = e["summary"].as_str().unwrap_or_default().to_string();
                out.insert(id, title);
            }
            Ok(out)
        }
    }
}

async fn caldav_events(
    http: &reqwest::Client,
    base: &str,
    username: &str,
    password: &str,
    href: &str,
) -> Result<BTreeMap<String, String>> {
    let body = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\
        <C:calendar-query xmlns:D=\"DAV:\" xmlns:C=\"urn:ietf:params:xml:ns:caldav\">\
        <D:prop><D:getetag/><C:calendar-data/></D:prop>\
        <C:filter><C:comp-filter name=\"VCALENDAR\"><C:comp-filter name=\"VEVENT\"/>\
        </C:comp-filter></C:filter></C:calendar-query>";
    let url = reqwest::Url::parse(base)?.join(href)?;
    let resp = http
        .request(reqwest::Method::from_bytes(b"REPORT")?, url)
        .basic_auth(username, Some(password))
        .header("Depth", "1")
        .header("Content-Type", "application/xml; charset=utf-8")
        .body(body)
        .send()
        .await?;
    let status = resp.status();
    let text = resp.text().await?;
    if status.as_u16() != 207 {
        bail!("REPORT {href}: {status}");
    }
    let doc = roxmltree::Document::parse(&text)?;
    let mut out = BTreeMap::new();
    for r in doc
        .descendants()
        .filter(|n| n.has_tag_name(("DAV:", "response")))
    {
        let Some(h) = r
            .children()
            .find(|n| n.has_tag_name(("DAV:", "href")))
            .and_then(|n| n.text())
        else {
            continue;
        };
        let Some(data) = r
            .descendants()
            .find(|n| n.has_tag_name(("urn:ietf:params:xml:ns:caldav", "calendar-data")))
            .and_then(|n| n.text())
        else {
            continue;
        };
        let path = reqwest::Url::parse(h)
            .map(|u| u.path().to_string())
            .unwrap_or_else(|_| h.to_string());
        let data = crate::caldav::unfold(data);
        let title = data
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                (name == "SUMMARY" || name.starts_with("SUMMARY;"))
                    .then(|| value.trim_end_matches('\r').to_string())
            })
            .unwrap_or_default();
        out.insert(path, title);
    }
    Ok(out)
}

/// Every event of one account's calendar in the mirror.
async fn mirror_of(
    c: &mut SchedulerClient,
    account_id: &str,
    calendar_id: &str,
) -> Result<BTreeMap<String, MirrorEvent>> {
    let events = crate::caldav::list_events(c, account_id, calendar_id, mirror_window()).await?;
    Ok(events
        .into_iter()
        .map(|e| {
            let start = e.start.as_ref().and_then(|t| match &t.value {
                Some(pb::event_time::Value::Instant(ts)) => calbridge::time::from_timestamp(ts),
                _ => None,
            });
            (
                e.provider_event_id.clone(),
                MirrorEvent {
                    title: e.title,
                    start,
                    client_event_id: e.client_event_id,
                },
            )
        })
        .collect())
}

async fn probe_revoked(
    c: &mut SchedulerClient,
    account_id: &str,
    calendar_id: &str,
) -> RevokedProbe {
    let status = match c
        .get_account(pb::GetAccountRequest {
            account_id: account_id.to_string(),
        })
        .await
    {
        Ok(a) => format!("{:?}", a.into_inner().status()),
        Err(s) => format!("error {:?}", s.code()),
    };
    let (list_events_error, events) = match c
        .list_events(pb::ListEventsRequest {
            account_id: account_id.to_string(),
            calendar_id: calendar_id.to_string(),
            window: Some(mirror_window()),
            page_size: 1000,
            page_token: String::new(),
        })
        .await
    {
        Ok(r) => (None, r.into_inner().events.len()),
        Err(s) => (Some(format!("{:?}", s.code())), 0),
    };
    RevokedProbe {
        status,
        list_events_error,
        events,
    }
}

/// Reads providers, mirrors, feeds and revoked accounts once. `clients`
/// holds one scheduler client per tenant.
pub async fn observe(
    ledger: &Ledger,
    clients: &BTreeMap<String, SchedulerClient>,
    http: &reqwest::Client,
) -> Result<Observed> {
    let mut o = Observed::default();
    for (key, cal) in &ledger.calendars {
        let events = provider_events(http, cal)
            .await
            .with_context(|| format!("reading provider calendar {key}"))?;
        o.provider.insert(key.clone(), events);
    }
    for (id, a) in &ledger.accounts {
        let mut c = clients
            .get(&a.tenant_id)
            .cloned()
            .ok_or_else(|| anyhow!("no client for tenant {}", a.tenant_id))?;
        if a.revoked {
            o.revoked
                .insert(id.clone(), probe_revoked(&mut c, id, &a.calendar_id).await);
        } else {
            let m = mirror_of(&mut c, id, &a.calendar_id)
                .await
                .with_context(|| format!("listing the mirror of {id}"))?;
            o.mirrors.insert(id.clone(), m);
        }
    }
    for (tenant, c) in clients {
        let mut c = c.clone();
        o.feeds
            .insert(tenant.clone(), changes_after(&mut c, "").await?);
    }
    Ok(o)
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

/// Syncs every live account until its mirror equals its provider calendar,
/// or `timeout` passes; returns the last observation.
pub async fn settle(
    ledger: &Ledger,
    clients: &BTreeMap<String, SchedulerClient>,
    http: &reqwest::Client,
    timeout: Duration,
) -> Result<Observed> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let live: Vec<(&String, &AccountEntry)> =
            ledger.accounts.iter().filter(|(_, a)| !a.revoked).collect();
        let syncs = live.iter().map(|(id, a)| async move {
            let mut c = clients.get(&a.tenant_id).cloned()?;
            sync_now_and_wait(&mut c, id, "").await.ok()
        });
        futures::future::join_all(syncs).await;
        let o = observe(ledger, clients, http).await;
        if let Ok(o) = &o {
            if mirror_differences(ledger, o).is_empty() {
                return Ok(o.clone());
            }
        }
        if tokio::time::Instant::now() > deadline {
            return o;
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn change(seq: u64, account: &str, kind: ChangeKind, pid: &str, title: &str) -> pb::Change {
        pb::Change {
            sequence: seq,
            kind: kind as i32,
            account_id: account.into(),
            provider_event_id: pid.into(),
            event: Some(pb::Event {
                title: title.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn mirror(entries: &[(&str, &str, &str)]) -> BTreeMap<String, MirrorEvent> {
        entries
            .iter()
            .map(|(pid, title, cid)| {
                (
                    pid.to_string(),
                    MirrorEvent {
                        title: title.to_string(),
                        start: None,
                        client_event_id: cid.to_string(),
                    },
                )
            })
            .collect()
    }

    /// Two tenants' accounts A and B on one calendar; A wrote c1 (acked),
    /// someone edited o1 outside; everything consistent.
    fn world() -> (Ledger, Observed) {
        let mut l = Ledger::default();
        l.add_calendar(
            "dav",
            ProviderCalendar::Caldav {
                base: "http://127.0.0.1:1/".into(),
                username: "u".into(),
                password: "p".into(),
                href: "/u/cal/".into(),
            },
        );
        l.add_account("A", "t1", "dav", "/u/cal/");
        l.add_account("B", "t2", "dav", "/u/cal/");
        let i = l.begin_write("c1", "A", "/u/cal/k1.ics", Effect::Present("P c1 1".into()));
        l.end_write("c1", i, Outcome::Acked);
        l.outside_edit(
            "o1",
            "dav",
            "/u/cal/o1.ics",
            Effect::Present("O o1 2".into()),
        );
        let mut o = Observed::default();
        o.provider.insert(
            "dav".into(),
            BTreeMap::from([
                ("/u/cal/k1.ics".to_string(), "P c1 1".to_string()),
                ("/u/cal/o1.ics".to_string(), "O o1 2".to_string()),
            ]),
        );
        o.mirrors.insert(
            "A".into(),
            mirror(&[
                ("/u/cal/k1.ics", "P c1 1", "c1"),
                ("/u/cal/o1.ics", "O o1 2", ""),
            ]),
        );
        o.mirrors.insert(
            "B".into(),
            mirror(&[
                ("/u/cal/k1.ics", "P c1 1", ""),
                ("/u/cal/o1.ics", "O o1 2", ""),
            ]),
        );
        o.feeds.insert(
            "t1".into(),
            vec![
                change(1, "A", ChangeKind::EventCreated, "/u/cal/o1.ics", "O o1 1"),
                change(2, "A", ChangeKind::EventUpdated, "/u/cal/o1.ics", "O o1 2"),
            ],
        );
        o.feeds.insert(
            "t2".into(),
            vec![
                change(1, "B", ChangeKind::EventCreated, "/u/cal/o1.ics", "O o1 2"),
                change(2, "B", ChangeKind::EventCreated, "/u/cal/k1.ics", "P c1 1"),
            ],
        );
        (l, o)
    }

    fn kinds(l: &Ledger, o: &Observed) -> Vec<&'static str> {
        verify(l, o).into_iter().map(|v| v.kind).collect()
    }

    #[test]
    fn a_consistent_world_has_no_violations() {
        let (l, o) = world();
        assert_eq!(verify(&l, &o), vec![]);
    }

    #[test]
    fn a_write_applied_twice_is_found() {
        let (l, mut o) = world();
        o.provider
            .get_mut("dav")
            .unwrap()
            .insert("/u/cal/k1-again.ics".into(), "P c1 1".into());
        assert!(kinds(&l, &o).contains(&"written more than once at the provider"));
    }

    #[test]
    fn a_lost_acknowledged_write_is_found() {
        let (l, mut o) = world();
        o.provider.get_mut("dav").unwrap().remove("/u/cal/k1.ics");
        let found = kinds(&l, &o);
        assert!(found.contains(&"acknowledged write not at the provider as acknowledged"));
        assert!(found.contains(&"mirror differs from provider"));
    }

    #[test]
    fn a_write_in_doubt_may_or_may_not_have_happened() {
        let (mut l, mut o) = world();
        l.starts.insert("P c1 2".into(), Utc::now());
        l.begin_write("c1", "A", "/u/cal/k1.ics", Effect::Absent);
        assert_eq!(verify(&l, &o), vec![], "the delete's answer is not in yet");
        o.provider.get_mut("dav").unwrap().remove("/u/cal/k1.ics");
        o.mirrors.get_mut("A").unwrap().remove("/u/cal/k1.ics");
        o.mirrors.get_mut("B").unwrap().remove("/u/cal/k1.ics");
        o.feeds.get_mut("t2").unwrap().push(change(
            3,
            "B",
            ChangeKind::EventDeleted,
            "/u/cal/k1.ics",
            "P c1 1",
        ));
        assert_eq!(verify(&l, &o), vec![]);
    }

    #[test]
    fn an_echo_of_the_accounts_own_write_is_found() {
        let (l, mut o) = world();
        o.feeds.get_mut("t1").unwrap().push(change(
            3,
            "A",
            ChangeKind::EventCreated,
            "/u/cal/k1.ics",
            "P c1 1",
        ));
        assert!(kinds(&l, &o).contains(&"echo of the account's own write"));
    }

    #[test]
    fn gaps_duplicates_and_lost_changes_in_a_feed_are_found() {
        let (l, mut o) = world();
        o.feeds.get_mut("t1").unwrap()[1].sequence = 3;
        assert!(kinds(&l, &o).contains(&"feed not numbered without gaps"));

        let (l, mut o) = world();
        let again = o.feeds["t2"][0].clone();
        o.feeds.get_mut("t2").unwrap().push(pb::Change {
            sequence: 3,
            ..again
        });
        assert!(kinds(&l, &o).contains(&"duplicate or impossible change"));

        let (l, mut o) = world();
        o.feeds.get_mut("t1").unwrap().pop();
        assert!(kinds(&l, &o).contains(&"feed does not replay to the mirror"));
    }

    #[test]
    fn a_change_after_revoked_and_a_surviving_mirror_are_found() {
        let (mut l, mut o) = world();
        l.revoked("B");
        let mut mirror_b = o.mirrors.remove("B").unwrap();
        let feed = o.feeds.get_mut("t2").unwrap();
        for ch in feed.iter_mut() {
            ch.event = None;
        }
        feed.push(pb::Change {
            sequence: 3,
            kind: ChangeKind::AccountStatus as i32,
            account_id: "B".into(),
            account_status: AccountStatus::Revoked as i32,
            ..Default::default()
        });
        o.revoked.insert(
            "B".into(),
            RevokedProbe {
                status: format!("{:?}", AccountStatus::Revoked),
                list_events_error: Some("FailedPrecondition".into()),
                events: 0,
            },
        );
        assert_eq!(verify(&l, &o), vec![]);

        let mut late = o.clone();
        late.feeds.get_mut("t2").unwrap().push(pb::Change {
            sequence: 4,
            event: None,
            ..change(4, "B", ChangeKind::EventDeleted, "/u/cal/o1.ics", "")
        });
        assert!(kinds(&l, &late).contains(&"change after REVOKED"));

        mirror_b.clear();
        o.revoked.get_mut("B").unwrap().list_events_error = None;
        assert!(kinds(&l, &o).contains(&"revoked account still has a mirror"));
    }

    #[test]
    fn settling_pins_what_the_provider_holds() {
        let (mut l, o) = world();
        l.starts.insert("P c1 2".into(), Utc::now());
        let i = l.begin_write("c1", "A", "/u/cal/k1.ics", Effect::Present("P c1 2".into()));
        l.end_write("c1", i, Outcome::InDoubt);
        l.settle_writes(&o);
        let w = &l.writes["c1"];
        assert_eq!(w.settled, Effect::Present("P c1 1".into()));
        assert!(w.ops.is_empty());
        assert_eq!(l.writes_of("c1"), 2);
    }
}
