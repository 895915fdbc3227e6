//! The sandbox's in-memory calendar provider: users and their passwords,
//! calendars, events (series masters with their exceptions), per-calendar
//! versions and change journals, and push channels. It behaves like a real
//! provider would behind the adapter contract — optimistic concurrency on
//! versions, idempotent creates, incremental sync cursors that expire,
//! recurring series expanded into instances — and is pure: no I/O, no clock
//! (callers pass `now`), no locking (the service wraps it in a mutex).
//!
//! Events are kept as the contract's `Event` messages: the sandbox has no
//! provider vocabulary of its own to translate from.
//!
//! Sync cursors (opaque to callers) name positions in a calendar's journal:
//! `s1:<seq>` (up to date at `seq`), `f1:<head>:<key>` (inside a listing from
//! scratch taken at `head`, after unit `key`) and `c1:<from>:<to>:<key>`
//! (inside the changes `(from, to]`, after unit `key`). Keys are hex-encoded.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::ops::Bound;

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;

use calbridge::pb::{
    self, BusyStatus, Event, EventStatus, EventType, RecurrenceLink, SyncEventsResponse,
    Transparency,
};
use calbridge::time::{self, Boundary};
use calbridge::Invalid;

use crate::error::ProviderError;
use crate::recurrence::{self, Span};

/// Events per SyncEvents page when the caller does not say.
pub const DEFAULT_PAGE_SIZE: u32 = 250;
/// The most events (upserted plus deleted) in one SyncEvents page.
pub const MAX_PAGE_SIZE: u32 = 500;
/// About how many bytes one series' instances may take in one expansion.
pub const SERIES_BYTES: usize = 1 << 20;
/// Journal entries kept per calendar; older cursors expire.
pub const JOURNAL_RETENTION: usize = 10_000;
/// Push channel lifetime when the caller asks for none.
pub const DEFAULT_WATCH_TTL_SECONDS: u32 = 3600;
/// The longest push channel lifetime granted (7 days).
pub const MAX_WATCH_TTL_SECONDS: u32 = 7 * 24 * 3600;

type Result<T> = std::result::Result<T, ProviderError>;

/// A time window `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Start (inclusive).
    pub start: DateTime<Utc>,
    /// End (exclusive).
    pub end: DateTime<Utc>,
}

/// One SyncEvents call, as the provider sees it.
#[derive(Debug, Clone, Copy)]
pub struct SyncQuery<'a> {
    /// The cursor from the previous page; empty to list from scratch.
    pub cursor: &'a str,
    /// The sync window.
    pub window: Window,
    /// The most events wanted (0: the default).
    pub page_size: u32,
    /// Strip content, keep times, status and transparency.
    pub busy_only: bool,
}

/// The outcome of a create.
#[derive(Debug, Clone, PartialEq)]
pub struct Created {
    /// The event as stored (for a series, the master).
    pub event: Event,
    /// True when the idempotency key was already used; nothing changed.
    pub already_existed: bool,
}

/// A push notification to deliver to a scheduler.
#[derive(Clone, PartialEq, Eq)]
pub struct Notification {
    /// The scheduler's AdapterCallback endpoint.
    pub callback_endpoint: String,
    /// The channel.
    pub channel_id: String,
    /// The channel's token. Secret.
    pub channel_token: String,
    /// The channel's message counter.
    pub message_number: u64,
}

impl std::fmt::Debug for Notification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notification")
            .field("callback_endpoint", &self.callback_endpoint)
            .field("channel_id", &self.channel_id)
            .field("message_number", &self.message_number)
            .finish_non_exhaustive()
    }
}

/// The whole in-memory provider.
pub struct Provider {
    users: HashMap<String, User>,
    watches: HashMap<String, Watch>,
    journal_retention: usize,
}

impl Default for Provider {
    fn default() -> Self {
        Provider::new()
    }
}

struct User {
    /// SHA-256 of the password: the sandbox keeps no plaintext secret.
    password: [u8; 32],
    /// Set by RevokeUserAccess: the password is refused until the user
    /// re-authorises (CheckPassword with it, or CreateUser).
    revoked: bool,
    calendars: Vec<Calendar>,
}

/// A stored event: a single event or a series master, with the series'
/// exceptions (keyed by instance id) and deleted instances.
#[derive(Debug, Clone)]
struct Unit {
    event: Event,
    idempotency_key: Option<String>,
    exceptions: BTreeMap<String, Event>,
    deleted_instances: BTreeSet<String>,
}

impl Unit {
    fn new(event: Event, idempotency_key: Option<String>) -> Self {
        Unit {
            event,
            idempotency_key,
            exceptions: BTreeMap::new(),
            deleted_instances: BTreeSet::new(),
        }
    }

    fn is_series(&self) -> bool {
        !self.event.recurrence.is_empty()
    }
}

/// One change of a unit; `before` is the unit as it was just before (none
/// when it was created), so a sync can tell which instances disappeared.
struct Entry {
    seq: u64,
    key: String,
    before: Option<Unit>,
}

struct Calendar {
    id: String,
    name: String,
    primary: bool,
    read_only: bool,
    time_zone: String,
    color: &'static str,
    units: BTreeMap<String, Unit>,
    /// Idempotency key → unit id.
    keys: HashMap<String, String>,
    versions: u64,
    journal: VecDeque<Entry>,
    /// The sequence number of the latest change.
    head: u64,
    /// The oldest cursor position still served.
    retained_from: u64,
}

struct Watch {
    channel_id: String,
    channel_token: String,
    callback_endpoint: String,
    username: String,
    calendar_id: String,
    expires_at: DateTime<Utc>,
    message_number: u64,
}

fn digest(password: &str) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(password.as_bytes()).into()
}

fn ts(t: DateTime<Utc>) -> prost_types::Timestamp {
    time::to_timestamp(t)
}

fn check_version(expected: &str, current: &str) -> Result<()> {
    if expected.is_empty() || expected == current {
        Ok(())
    } else {
        Err(ProviderError::VersionConflict {
            current: current.to_string(),
        })
    }
}

/// Checks an event before it is stored (`prefix` is its path in the request).
fn validate(e: &Event, prefix: &str) -> Result<()> {
    let mut inv = Invalid::default();
    calbridge::validate::check_event(&mut inv, prefix, e);
    if inv.0.is_empty() && !e.recurrence.is_empty() {
        if let Err(m) = recurrence::check(e) {
            inv.push(format!("{prefix}.recurrence"), m);
        }
    }
    Ok(inv.into_result()?)
}

/// Fills the defaults a provider reports explicitly.
fn normalize(e: &mut Event) {
    if e.status() == EventStatus::Unspecified {
        e.set_status(EventStatus::Confirmed);
    }
    if e.transparency() == Transparency::Unspecified {
        e.set_transparency(Transparency::Opaque);
    }
    e.account_id.clear();
    e.managed = !e.client_event_id.is_empty();
}

/// The UTC bounds of an event; dates resolve in the calendar's zone.
fn bounds(e: &Event, zone: Option<Tz>) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let s = time::parse_event_time(e.start.as_ref()?).ok()?;
    let en = time::parse_event_time(e.end.as_ref()?).ok()?;
    Some((time::boundary_utc(s, zone), time::boundary_utc(en, zone)))
}

fn overlaps(e: &Event, zone: Option<Tz>, w: Window) -> bool {
    bounds(e, zone).is_some_and(|(s, en)| s < w.end && en > w.start)
}

fn original_start_time(master: &Event, original: Boundary) -> pb::EventTime {
    match original {
        Boundary::Instant(t) => time::instant(
            t,
            master.start.as_ref().map_or("", |s| s.time_zone.as_str()),
        ),
        Boundary::Date(d) => time::date(d),
    }
}

/// The instance of a series starting at `original`, from the master.
fn instance(master: &Event, original: Boundary, span: Span) -> Option<Event> {
    let end_zone = master.end.as_ref().map_or("", |e| e.time_zone.as_str());
    let end = match (original, span) {
        (Boundary::Instant(t), Span::Timed(d)) => time::instant(t + d, end_zone),
        (Boundary::Date(d), Span::Days(n)) => time::date(d + Duration::days(n)),
        _ => return None,
    };
    let start = original_start_time(master, original);
    let mut e = master.clone();
    e.provider_event_id = recurrence::instance_id(&master.provider_event_id, original);
    e.recurrence.clear();
    e.recurrence_link = Some(RecurrenceLink {
        series_event_id: master.provider_event_id.clone(),
        original_start: Some(start.clone()),
    });
    e.start = Some(start);
    e.end = Some(end);
    Some(e)
}

fn link_original(e: &Event) -> Option<Boundary> {
    let t = e.recurrence_link.as_ref()?.original_start.as_ref()?;
    time::parse_event_time(t).ok()
}

/// About how many bytes an event takes on the wire (its free text and
/// attendees, plus the fixed fields).
fn approximate_size(e: &Event) -> usize {
    let attendees: usize = e
        .attendees
        .iter()
        .map(|a| a.email.len() + a.display_name.len() + 16)
        .sum();
    256 + e.title.len()
        + e.description.len()
        + e.location.len()
        + e.ical_uid.len()
        + e.provider_event_id.len() * 2
        + attendees
}

/// The events a unit shows in a window: the event itself, or for a series
/// its instances (exceptions replacing the instances they override): at
/// most [`recurrence::MAX_INSTANCES`], and fewer for large events so that
/// they stay under [`SERIES_BYTES`] together.
fn expand(unit: &Unit, zone: Option<Tz>, w: Window) -> Vec<Event> {
    let master = &unit.event;
    if !unit.is_series() {
        return if overlaps(master, zone, w) {
            vec![master.clone()]
        } else {
            Vec::new()
        };
    }
    let Some(span) = recurrence::span_of(master) else {
        return Vec::new();
    };
    // Instances starting before the window may still overlap it; the extra
    // day covers all-day dates resolved in any zone.
    let reach = match span {
        Span::Timed(d) => d,
        Span::Days(n) => Duration::days(n),
    } + Duration::days(1);
    let originals =
        match recurrence::occurrences(master, w.start - reach, w.end + Duration::days(1)) {
            Ok(o) => o,
            Err(error) => {
                tracing::debug!(%error, "series not expanded");
                return Vec::new();
            }
        };
    // One series' instances stay under SERIES_BYTES together (a page never
    // splits a series), whatever the size of its event.
    let cap = (SERIES_BYTES / approximate_size(master)).clamp(1, recurrence::MAX_INSTANCES);
    let mut out = Vec::new();
    for original in originals.into_iter().take(cap) {
        let id = recurrence::instance_id(&master.provider_event_id, original);
        if unit.deleted_instances.contains(&id) || unit.exceptions.contains_key(&id) {
            continue;
        }
        if let Some(e) = instance(master, original, span) {
            if overlaps(&e, zone, w) {
                out.push(e);
            }
        }
    }
    for (id, ex) in &unit.exceptions {
        if unit.deleted_instances.contains(id) || !overlaps(ex, zone, w) {
            continue;
        }
        // An exception whose instance the rule no longer produces is orphaned.
        if link_original(ex).is_some_and(|o| recurrence::is_occurrence(master, o)) {
            out.push(ex.clone());
        }
    }
    out.sort_by(|a, b| {
        let (sa, sb) = (bounds(a, zone), bounds(b, zone));
        sa.cmp(&sb)
            .then_with(|| a.provider_event_id.cmp(&b.provider_event_id))
    });
    out
}

/// Where a sync is in a calendar's journal.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Cursor {
    /// List from scratch.
    Start,
    /// Inside a listing from scratch taken at `head`, after unit `after`.
    Listing { head: u64, after: Option<String> },
    /// Up to date at `seq`.
    Current(u64),
    /// Inside the changes `(from, to]`, after unit `after`.
    CatchUp {
        from: u64,
        to: u64,
        after: Option<String>,
    },
}

impl Cursor {
    fn parse(s: &str) -> Option<Cursor> {
        if s.is_empty() {
            return Some(Cursor::Start);
        }
        let parts: Vec<&str> = s.split(':').collect();
        let key = |k: &str| -> Option<Option<String>> {
            if k.is_empty() {
                Some(None)
            } else {
                String::from_utf8(hex::decode(k).ok()?).ok().map(Some)
            }
        };
        match parts.as_slice() {
            ["s1", seq] => Some(Cursor::Current(seq.parse().ok()?)),
            ["f1", head, after] => Some(Cursor::Listing {
                head: head.parse().ok()?,
                after: key(after)?,
            }),
            ["c1", from, to, after] => Some(Cursor::CatchUp {
                from: from.parse().ok()?,
                to: to.parse().ok()?,
                after: key(after)?,
            }),
            _ => None,
        }
    }

    fn encode(&self) -> String {
        let key = |k: &Option<String>| k.as_deref().map(hex::encode).unwrap_or_default();
        match self {
            Cursor::Start => String::new(),
            Cursor::Listing { head, after } => format!("f1:{head}:{}", key(after)),
            Cursor::Current(seq) => format!("s1:{seq}"),
            Cursor::CatchUp { from, to, after } => format!("c1:{from}:{to}:{}", key(after)),
        }
    }
}

impl Calendar {
    fn new(id: String, name: String, primary: bool, read_only: bool, color: &'static str) -> Self {
        Calendar {
            id,
            name,
            primary,
            read_only,
            time_zone: "UTC".into(),
            color,
            units: BTreeMap::new(),
            keys: HashMap::new(),
            versions: 0,
            journal: VecDeque::new(),
            head: 0,
            retained_from: 0,
        }
    }

    fn zone(&self) -> Option<Tz> {
        time::parse_zone(&self.time_zone).ok()
    }

    fn next_version(&mut self) -> String {
        self.versions += 1;
        format!("v{}", self.versions)
    }

    fn record(&mut self, key: &str, before: Option<Unit>, retention: usize) {
        self.head += 1;
        self.journal.push_back(Entry {
            seq: self.head,
            key: key.to_string(),
            before,
        });
        while self.journal.len() > retention {
            if let Some(e) = self.journal.pop_front() {
                self.retained_from = e.seq;
            }
        }
    }

    fn to_pb(&self) -> pb::Calendar {
        pb::Calendar {
            calendar_id: self.id.clone(),
            name: self.name.clone(),
            primary: self.primary,
            read_only: self.read_only,
            time_zone: self.time_zone.clone(),
            color: self.color.to_string(),
            ..Default::default()
        }
    }

    /// The series and original start an instance id names, when the series
    /// produces that instance and it was not deleted.
    fn find_instance(&self, id: &str) -> Option<(String, Boundary)> {
        let (series, original) = recurrence::parse_instance_id(id)?;
        let unit = self.units.get(series)?;
        if !unit.is_series() || unit.deleted_instances.contains(id) {
            return None;
        }
        recurrence::is_occurrence(&unit.event, original).then(|| (series.to_string(), original))
    }

    /// Stores a new unit under `id`.
    fn insert_unit(
        &mut self,
        id: String,
        mut event: Event,
        key: Option<String>,
        now: DateTime<Utc>,
        retention: usize,
    ) -> Event {
        normalize(&mut event);
        event.provider_event_id = id.clone();
        event.calendar_id = self.id.clone();
        event.version = self.next_version();
        event.created_at = Some(ts(now));
        event.updated_at = Some(ts(now));
        event.recurrence_link = None;
        if event.ical_uid.is_empty() {
            event.ical_uid = format!("{id}@sandbox.calbridge");
        }
        if let Some(k) = &key {
            self.keys.insert(k.clone(), id.clone());
        }
        self.units.insert(id.clone(), Unit::new(event.clone(), key));
        self.record(&id, None, retention);
        event
    }

    /// Replaces the fields of an existing unit.
    fn replace_unit(
        &mut self,
        id: &str,
        mut event: Event,
        expected_version: &str,
        now: DateTime<Utc>,
        retention: usize,
    ) -> Result<Event> {
        let unit = self.units.get(id).ok_or(ProviderError::EventNotFound)?;
        check_version(expected_version, &unit.event.version)?;
        validate(&event, "event")?;
        let before = unit.clone();
        let version = self.next_version();
        let calendar_id = self.id.clone();
        let unit = self.units.get_mut(id).expect("checked above");
        let old = &unit.event;
        if event.client_event_id.is_empty() {
            event.client_event_id = old.client_event_id.clone();
        }
        normalize(&mut event);
        event.provider_event_id = id.to_string();
        event.calendar_id = calendar_id;
        event.ical_uid = old.ical_uid.clone();
        event.created_at = old.created_at;
        event.updated_at = Some(ts(now));
        event.version = version;
        event.recurrence_link = None;
        unit.event = event;
        if !unit.is_series() {
            unit.exceptions.clear();
            unit.deleted_instances.clear();
        }
        let out = unit.event.clone();
        self.record(id, Some(before), retention);
        Ok(out)
    }

    /// Creates or replaces the exception of one instance of a series.
    fn put_exception(
        &mut self,
        series: &str,
        original: Boundary,
        mut event: Event,
        expected_version: &str,
        now: DateTime<Utc>,
        retention: usize,
    ) -> Result<Event> {
        let unit = self.units.get(series).ok_or(ProviderError::EventNotFound)?;
        if !unit.is_series() || !recurrence::is_occurrence(&unit.event, original) {
            return Err(Invalid::field(
                "event.recurrence_link.original_start",
                "is not an original start of an instance of the series",
            )
            .into());
        }
        let id = recurrence::instance_id(series, original);
        let previous = unit.exceptions.get(&id);
        let current = previous.map_or(&unit.event.version, |e| &e.version);
        check_version(expected_version, current)?;
        event.recurrence.clear();
        validate(&event, "event")?;
        let before = unit.clone();
        let version = self.next_version();
        let calendar_id = self.id.clone();
        let unit = self.units.get_mut(series).expect("checked above");
        let master = &unit.event;
        let previous = unit.exceptions.get(&id);
        if event.client_event_id.is_empty() {
            event.client_event_id = previous
                .map_or(&master.client_event_id, |p| &p.client_event_id)
                .clone();
        }
        normalize(&mut event);
        event.provider_event_id = id.clone();
        event.calendar_id = calendar_id;
        event.ical_uid = master.ical_uid.clone();
        event.version = version;
        event.created_at = previous.and_then(|p| p.created_at).or(Some(ts(now)));
        event.updated_at = Some(ts(now));
        event.recurrence_link = Some(RecurrenceLink {
            series_event_id: series.to_string(),
            original_start: Some(original_start_time(master, original)),
        });
        unit.deleted_instances.remove(&id);
        unit.exceptions.insert(id, event.clone());
        self.record(series, Some(before), retention);
        Ok(event)
    }

    /// Replaces an event or, for an instance id, its exception.
    fn update(
        &mut self,
        id: &str,
        event: Event,
        expected_version: &str,
        now: DateTime<Utc>,
        retention: usize,
    ) -> Result<Event> {
        if self.units.contains_key(id) {
            return self.replace_unit(id, event, expected_version, now, retention);
        }
        let (series, original) = self.find_instance(id).ok_or(ProviderError::EventNotFound)?;
        self.put_exception(&series, original, event, expected_version, now, retention)
    }

    /// Deletes an event or, for an instance id, that one instance.
    fn remove(&mut self, id: &str, expected_version: &str, retention: usize) -> Result<()> {
        if let Some(unit) = self.units.get(id) {
            check_version(expected_version, &unit.event.version)?;
            let before = self.units.remove(id).expect("checked above");
            if let Some(k) = &before.idempotency_key {
                self.keys.remove(k);
            }
            self.record(id, Some(before), retention);
            return Ok(());
        }
        let (series, _) = self.find_instance(id).ok_or(ProviderError::EventNotFound)?;
        let unit = self.units.get_mut(&series).expect("found above");
        let current = unit
            .exceptions
            .get(id)
            .map_or(&unit.event.version, |e| &e.version);
        check_version(expected_version, current)?;
        let before = unit.clone();
        unit.exceptions.remove(id);
        unit.deleted_instances.insert(id.to_string());
        self.record(&series, Some(before), retention);
        Ok(())
    }

    fn check_cursor(&self, seq: u64) -> Result<()> {
        if seq >= self.retained_from && seq <= self.head {
            Ok(())
        } else {
            Err(ProviderError::CursorExpired)
        }
    }

    fn sync(&self, q: &SyncQuery<'_>) -> Result<SyncEventsResponse> {
        let page = match q.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        } as usize;
        let mut resp = match Cursor::parse(q.cursor).ok_or(ProviderError::CursorExpired)? {
            Cursor::Start => self.listing_page(self.head, None, q.window, page),
            Cursor::Listing { head, after } => {
                self.check_cursor(head)?;
                self.listing_page(head, after.as_deref(), q.window, page)
            }
            Cursor::Current(seq) => {
                self.check_cursor(seq)?;
                self.changes_page(seq, self.head, None, q.window, page)
            }
            Cursor::CatchUp { from, to, after } => {
                self.check_cursor(from)?;
                self.check_cursor(to)?;
                if from > to {
                    return Err(ProviderError::CursorExpired);
                }
                self.changes_page(from, to, after.as_deref(), q.window, page)
            }
        };
        if q.busy_only {
            resp.upserted = std::mem::take(&mut resp.upserted)
                .into_iter()
                .map(calbridge::adapter::free_busy_view)
                .collect();
        }
        Ok(resp)
    }

    /// One page of the listing from scratch taken at `head`.
    fn listing_page(
        &self,
        head: u64,
        after: Option<&str>,
        w: Window,
        page: usize,
    ) -> SyncEventsResponse {
        let zone = self.zone();
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut resp = SyncEventsResponse {
            full_listing: true,
            ..Default::default()
        };
        let mut last: Option<&str> = None;
        for (key, unit) in self.units.range::<str, _>((lower, Bound::Unbounded)) {
            let events = expand(unit, zone, w);
            if events.is_empty() {
                continue;
            }
            // A unit's instances are never split across pages.
            if !resp.upserted.is_empty() && resp.upserted.len() + events.len() > page {
                resp.more = true;
                break;
            }
            resp.upserted.extend(events);
            last = Some(key);
        }
        resp.next_cursor = if resp.more {
            Cursor::Listing {
                head,
                after: last.map(str::to_string),
            }
        } else {
            Cursor::Current(head)
        }
        .encode();
        resp
    }

    /// One page of the changes in `(from, to]`.
    fn changes_page(
        &self,
        from: u64,
        to: u64,
        after: Option<&str>,
        w: Window,
        page: usize,
    ) -> SyncEventsResponse {
        let zone = self.zone();
        // Every state a changed unit had since `from`: whatever the caller's
        // mirror holds of it is among them.
        let mut states: BTreeMap<&str, Vec<&Unit>> = BTreeMap::new();
        let mut changed: BTreeSet<&str> = BTreeSet::new();
        for e in self.journal.iter().filter(|e| e.seq > from) {
            let s = states.entry(e.key.as_str()).or_default();
            if let Some(b) = &e.before {
                s.push(b);
            }
            if e.seq <= to {
                changed.insert(e.key.as_str());
            }
        }
        let mut resp = SyncEventsResponse::default();
        let mut count = 0usize;
        let mut last: Option<&str> = None;
        for key in changed.into_iter().filter(|k| after.is_none_or(|a| *k > a)) {
            let current = self
                .units
                .get(key)
                .map(|u| expand(u, zone, w))
                .unwrap_or_default();
            let current_ids: HashSet<&str> = current
                .iter()
                .map(|e| e.provider_event_id.as_str())
                .collect();
            let mut gone: BTreeSet<String> = BTreeSet::new();
            gone.insert(key.to_string());
            for state in states.get(key).into_iter().flatten() {
                gone.extend(
                    expand(state, zone, w)
                        .into_iter()
                        .map(|e| e.provider_event_id),
                );
            }
            gone.retain(|id| !current_ids.contains(id.as_str()));
            let cost = current.len() + gone.len();
            if count > 0 && count + cost > page {
                resp.more = true;
                break;
            }
            count += cost;
            resp.upserted.extend(current);
            resp.deleted.extend(gone);
            last = Some(key);
        }
        resp.next_cursor = if resp.more {
            Cursor::CatchUp {
                from,
                to,
                after: last.map(str::to_string),
            }
        } else {
            Cursor::Current(to)
        }
        .encode();
        resp
    }
}

impl User {
    fn new(username: &str, password: &str) -> Self {
        let mut holidays = Calendar::new(
            format!("{username}/holidays"),
            "Holidays".into(),
            false,
            true,
            "#8e24aa",
        );
        seed_holidays(&mut holidays);
        User {
            password: digest(password),
            revoked: false,
            calendars: vec![
                Calendar::new(
                    format!("{username}/primary"),
                    username.to_string(),
                    true,
                    false,
                    "#1e88e5",
                ),
                Calendar::new(
                    format!("{username}/team"),
                    "Team".into(),
                    false,
                    false,
                    "#43a047",
                ),
                holidays,
            ],
        }
    }
}

/// The holidays calendar holds one yearly all-day series, so that a
/// read-only calendar has something to show.
fn seed_holidays(cal: &mut Calendar) {
    let created = Utc.with_ymd_and_hms(2020, 1, 1, 0, 0, 0).unwrap();
    let day = |d| time::date(NaiveDate::from_ymd_opt(2020, 1, d).expect("valid date"));
    let event = Event {
        title: "New Year's Day".into(),
        start: Some(day(1)),
        end: Some(day(2)),
        transparency: Transparency::Transparent as i32,
        recurrence: vec!["RRULE:FREQ=YEARLY".into()],
        ..Default::default()
    };
    cal.insert_unit("new-year".into(), event, None, created, usize::MAX);
    // Seeding is not a change anyone syncs from.
    cal.journal.clear();
    cal.head = 0;
}

/// The provider id a create gets: derived from the idempotency key when it
/// is short lowercase alphanumerics (as Google accepts client-chosen ids).
fn derive_id(key: &str, taken: &BTreeMap<String, Unit>) -> String {
    let derivable = (1..=200).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let derived = format!("cb{key}");
    if derivable && !taken.contains_key(&derived) {
        derived
    } else {
        uuid::Uuid::new_v4().simple().to_string()
    }
}

impl Provider {
    /// An empty provider with the default journal retention.
    pub fn new() -> Self {
        Provider {
            users: HashMap::new(),
            watches: HashMap::new(),
            journal_retention: JOURNAL_RETENTION,
        }
    }

    /// An empty provider keeping `entries` journal entries per calendar.
    pub fn with_journal_retention(entries: usize) -> Self {
        Provider {
            journal_retention: entries.max(1),
            ..Provider::new()
        }
    }

    fn user(&self, username: &str) -> Result<&User> {
        self.users.get(username).ok_or(ProviderError::UnknownUser)
    }

    fn calendar(&self, username: &str, calendar_id: &str) -> Result<&Calendar> {
        self.user(username)?
            .calendars
            .iter()
            .find(|c| c.id == calendar_id)
            .ok_or(ProviderError::CalendarNotFound)
    }

    fn calendar_mut(&mut self, username: &str, calendar_id: &str) -> Result<&mut Calendar> {
        self.users
            .get_mut(username)
            .ok_or(ProviderError::UnknownUser)?
            .calendars
            .iter_mut()
            .find(|c| c.id == calendar_id)
            .ok_or(ProviderError::CalendarNotFound)
    }

    /// The control API's calendar: empty names the primary one.
    fn control_calendar_id(username: &str, calendar_id: &str) -> String {
        if calendar_id.is_empty() {
            format!("{username}/primary")
        } else {
            calendar_id.to_string()
        }
    }

    /// Creates a user, or replaces its password and lifts a revocation.
    /// Returns the user's calendar ids.
    pub fn create_user(&mut self, username: &str, password: &str) -> Result<Vec<String>> {
        let mut inv = Invalid::default();
        if username.is_empty() {
            inv.push("username", "must not be empty");
        }
        if password.is_empty() {
            inv.push("password", "must not be empty");
        }
        inv.into_result()?;
        let user = self
            .users
            .entry(username.to_string())
            .or_insert_with(|| User::new(username, password));
        user.password = digest(password);
        user.revoked = false;
        Ok(user.calendars.iter().map(|c| c.id.clone()).collect())
    }

    /// Checks a user name and password the way a sign-in does: an unknown
    /// user is created with this password; the right password also lifts a
    /// revocation (the user re-authorised).
    pub fn check_password(&mut self, username: &str, password: &str) -> Result<()> {
        let mut inv = Invalid::default();
        if username.is_empty() {
            inv.push("username", "must not be empty");
        }
        if password.is_empty() {
            inv.push("password", "must not be empty");
        }
        inv.into_result()?;
        match self.users.get_mut(username) {
            None => {
                self.users
                    .insert(username.to_string(), User::new(username, password));
                Ok(())
            }
            Some(u) if u.password == digest(password) => {
                u.revoked = false;
                Ok(())
            }
            Some(_) => Err(ProviderError::WrongCredentials),
        }
    }

    /// Checks credentials handed back by the scheduler.
    pub fn authenticate(&self, username: &str, password: &str) -> Result<()> {
        match self.users.get(username) {
            Some(u) if !u.revoked && u.password == digest(password) => Ok(()),
            _ => Err(ProviderError::WrongCredentials),
        }
    }

    /// Makes the provider reject the user's current credentials.
    pub fn revoke_user_access(&mut self, username: &str) -> Result<()> {
        let user = self
            .users
            .get_mut(username)
            .ok_or(ProviderError::UnknownUser)?;
        user.revoked = true;
        Ok(())
    }

    /// The user's calendars, primary first.
    pub fn calendars(&self, username: &str) -> Result<Vec<pb::Calendar>> {
        Ok(self
            .user(username)?
            .calendars
            .iter()
            .map(Calendar::to_pb)
            .collect())
    }

    /// Creates an event, idempotently on `idempotency_key`.
    pub fn create_event(
        &mut self,
        username: &str,
        calendar_id: &str,
        event: Event,
        idempotency_key: &str,
        now: DateTime<Utc>,
    ) -> Result<Created> {
        let retention = self.journal_retention;
        let cal = self.calendar_mut(username, calendar_id)?;
        if cal.read_only {
            return Err(ProviderError::ReadOnly);
        }
        if idempotency_key.is_empty() {
            return Err(Invalid::field("idempotency_key", "must not be empty").into());
        }
        if let Some(unit) = cal
            .keys
            .get(idempotency_key)
            .and_then(|id| cal.units.get(id))
        {
            return Ok(Created {
                event: unit.event.clone(),
                already_existed: true,
            });
        }
        validate(&event, "event")?;
        let id = derive_id(idempotency_key, &cal.units);
        let event = cal.insert_unit(id, event, Some(idempotency_key.to_string()), now, retention);
        Ok(Created {
            event,
            already_existed: false,
        })
    }

    /// Replaces an event's fields (or creates/changes the exception of an
    /// instance), conditional on `expected_version` when non-empty.
    pub fn update_event(
        &mut self,
        username: &str,
        calendar_id: &str,
        provider_event_id: &str,
        event: Event,
        expected_version: &str,
        now: DateTime<Utc>,
    ) -> Result<Event> {
        let retention = self.journal_retention;
        let cal = self.calendar_mut(username, calendar_id)?;
        if cal.read_only {
            return Err(ProviderError::ReadOnly);
        }
        cal.update(provider_event_id, event, expected_version, now, retention)
    }

    /// Deletes an event (or one instance of a series), conditional on
    /// `expected_version` when non-empty.
    pub fn delete_event(
        &mut self,
        username: &str,
        calendar_id: &str,
        provider_event_id: &str,
        expected_version: &str,
    ) -> Result<()> {
        let retention = self.journal_retention;
        let cal = self.calendar_mut(username, calendar_id)?;
        if cal.read_only {
            return Err(ProviderError::ReadOnly);
        }
        cal.remove(provider_event_id, expected_version, retention)
    }

    /// One page of a calendar's changes since a cursor.
    pub fn sync(
        &self,
        username: &str,
        calendar_id: &str,
        query: &SyncQuery<'_>,
    ) -> Result<SyncEventsResponse> {
        self.calendar(username, calendar_id)?.sync(query)
    }

    /// Busy intervals of the calendars inside the window, clipped to it and
    /// sorted by start.
    pub fn free_busy(
        &self,
        username: &str,
        calendar_ids: &[String],
        window: Window,
    ) -> Result<Vec<pb::BusyInterval>> {
        let mut seen = HashSet::new();
        let mut busy = Vec::new();
        for id in calendar_ids {
            if !seen.insert(id.as_str()) {
                continue;
            }
            let cal = self.calendar(username, id)?;
            let zone = cal.zone();
            for unit in cal.units.values() {
                for e in expand(unit, zone, window) {
                    if e.status() == EventStatus::Cancelled
                        || e.transparency() == Transparency::Transparent
                        || e.event_type() == EventType::WorkingLocation
                    {
                        continue;
                    }
                    let status = if e.event_type() == EventType::OutOfOffice {
                        BusyStatus::OutOfOffice
                    } else if e.status() == EventStatus::Tentative {
                        BusyStatus::Tentative
                    } else {
                        BusyStatus::Busy
                    };
                    let Some((s, en)) = bounds(&e, zone) else {
                        continue;
                    };
                    busy.push((
                        s.max(window.start),
                        en.min(window.end),
                        status,
                        cal.id.clone(),
                    ));
                }
            }
        }
        busy.sort();
        Ok(busy
            .into_iter()
            .map(|(s, en, status, calendar_id)| pb::BusyInterval {
                start: Some(ts(s)),
                end: Some(ts(en)),
                status: status as i32,
                calendar_id,
            })
            .collect())
    }

    /// The events of a calendar as the provider holds them: masters and
    /// single events, then each series' exceptions.
    pub fn list_provider_events(&self, username: &str, calendar_id: &str) -> Result<Vec<Event>> {
        let id = Self::control_calendar_id(username, calendar_id);
        self.user(username)?;
        let cal = self.calendar(username, &id)?;
        let mut out = Vec::new();
        for unit in cal.units.values() {
            out.push(unit.event.clone());
            out.extend(unit.exceptions.values().cloned());
        }
        Ok(out)
    }

    /// An outside edit: creates (empty `provider_event_id`), replaces, or —
    /// with `recurrence_link` set, or an instance id — puts an exception.
    /// Read-only calendars accept it: it is the provider's own data.
    pub fn put_event(
        &mut self,
        username: &str,
        calendar_id: &str,
        event: Event,
        now: DateTime<Utc>,
    ) -> Result<Event> {
        let retention = self.journal_retention;
        let id = Self::control_calendar_id(username, calendar_id);
        let cal = self.calendar_mut(username, &id)?;
        if let Some(link) = event
            .recurrence_link
            .as_ref()
            .filter(|l| !l.series_event_id.is_empty())
        {
            let series = link.series_event_id.clone();
            let original = link
                .original_start
                .as_ref()
                .and_then(|t| time::parse_event_time(t).ok())
                .ok_or_else(|| {
                    Invalid::field(
                        "event.recurrence_link.original_start",
                        "must be set to the instance's original start",
                    )
                })?;
            if !cal.units.contains_key(&series) {
                return Err(ProviderError::EventNotFound);
            }
            return cal.put_exception(&series, original, event, "", now, retention);
        }
        let event_id = event.provider_event_id.clone();
        if event_id.is_empty() {
            validate(&event, "event")?;
            let id = uuid::Uuid::new_v4().simple().to_string();
            return Ok(cal.insert_unit(id, event, None, now, retention));
        }
        if cal.units.contains_key(&event_id) || cal.find_instance(&event_id).is_some() {
            return cal.update(&event_id, event, "", now, retention);
        }
        validate(&event, "event")?;
        Ok(cal.insert_unit(event_id, event, None, now, retention))
    }

    /// An outside delete of an event or of one instance of a series.
    pub fn remove_event(
        &mut self,
        username: &str,
        calendar_id: &str,
        provider_event_id: &str,
    ) -> Result<()> {
        let retention = self.journal_retention;
        let id = Self::control_calendar_id(username, calendar_id);
        self.calendar_mut(username, &id)?
            .remove(provider_event_id, "", retention)
    }

    /// Drops a calendar's whole journal, so that every cursor handed out so
    /// far is expired (OUT_OF_RANGE) and the next sync must list from
    /// scratch.
    pub fn expire_journal(&mut self, username: &str, calendar_id: &str) -> Result<()> {
        let cal = self.calendar_mut(username, calendar_id)?;
        cal.journal.clear();
        cal.head += 1;
        cal.retained_from = cal.head;
        Ok(())
    }

    /// Starts (or renews) a push channel on one of the user's calendars.
    pub fn start_watch(
        &mut self,
        username: &str,
        request: &pb::StartWatchRequest,
        now: DateTime<Utc>,
    ) -> Result<pb::WatchChannel> {
        self.calendar(username, &request.calendar_id)?;
        let mut inv = Invalid::default();
        calbridge::validate::check_id(
            &mut inv,
            "channel_id",
            &request.channel_id,
            calbridge::limits::MAX_ID_BYTES,
        );
        if request.callback_endpoint.is_empty() {
            inv.push("callback_endpoint", "must not be empty");
        }
        inv.into_result()?;
        let ttl = match request.ttl_seconds {
            0 => DEFAULT_WATCH_TTL_SECONDS,
            t => t.min(MAX_WATCH_TTL_SECONDS),
        };
        let expires_at = now + Duration::seconds(i64::from(ttl));
        self.watches.insert(
            request.channel_id.clone(),
            Watch {
                channel_id: request.channel_id.clone(),
                channel_token: request.channel_token.clone(),
                callback_endpoint: request.callback_endpoint.clone(),
                username: username.to_string(),
                calendar_id: request.calendar_id.clone(),
                expires_at,
                message_number: 0,
            },
        );
        Ok(pb::WatchChannel {
            channel_id: request.channel_id.clone(),
            resource_id: request.calendar_id.clone(),
            expires_at: Some(ts(expires_at)),
        })
    }

    /// Stops a push channel of the user; nothing when it is already gone.
    pub fn stop_watch(&mut self, username: &str, channel_id: &str) {
        if self
            .watches
            .get(channel_id)
            .is_some_and(|w| w.username == username)
        {
            self.watches.remove(channel_id);
        }
    }

    /// Drops a channel the scheduler no longer knows.
    pub fn drop_channel(&mut self, channel_id: &str) {
        self.watches.remove(channel_id);
    }

    /// The notifications due after a change to `calendar_id`, one per
    /// unexpired channel on it; expired channels are dropped.
    pub fn notifications(&mut self, calendar_id: &str, now: DateTime<Utc>) -> Vec<Notification> {
        self.watches.retain(|_, w| w.expires_at > now);
        let mut out: Vec<Notification> = self
            .watches
            .values_mut()
            .filter(|w| w.calendar_id == calendar_id)
            .map(|w| {
                w.message_number += 1;
                Notification {
                    callback_endpoint: w.callback_endpoint.clone(),
                    channel_id: w.channel_id.clone(),
                    channel_token: w.channel_token.clone(),
                    message_number: w.message_number,
                }
            })
            .collect();
        out.sort_by(|a, b| a.channel_id.cmp(&b.channel_id));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use calbridge::pb::Attendee;
    use calbridge::time::instant;

    const USER: &str = "ada@example.com";
    const PRIMARY: &str = "ada@example.com/primary";

    fn at(d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, d, h, 0, 0).unwrap()
    }

    fn now() -> DateTime<Utc> {
        at(1, 0)
    }

    fn window() -> Window {
        Window {
            start: at(1, 0),
            end: Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap(),
        }
    }

    fn provider() -> Provider {
        let mut p = Provider::new();
        p.check_password(USER, "secret").unwrap();
        p
    }

    fn meeting(title: &str, d: u32, h: u32) -> Event {
        Event {
            title: title.into(),
            description: "agenda".into(),
            location: "room 1".into(),
            start: Some(instant(at(d, h), "")),
            end: Some(instant(at(d, h + 1), "")),
            attendees: vec![Attendee {
                email: "bob@example.com".into(),
                ..Default::default()
            }],
            organizer: Some(pb::Organizer {
                email: USER.into(),
                display_name: "Ada".into(),
            }),
            ..Default::default()
        }
    }

    fn create(p: &mut Provider, key: &str, e: Event) -> Event {
        p.create_event(USER, PRIMARY, e, key, now()).unwrap().event
    }

    fn sync(p: &Provider, cursor: &str, page_size: u32) -> Result<SyncEventsResponse> {
        p.sync(
            USER,
            PRIMARY,
            &SyncQuery {
                cursor,
                window: window(),
                page_size,
                busy_only: false,
            },
        )
    }

    /// Syncs every page from `cursor`; returns (upserted ids, deleted ids,
    /// final cursor).
    fn sync_all(p: &Provider, cursor: &str) -> (Vec<String>, Vec<String>, String) {
        let (mut up, mut del, mut cursor) = (Vec::new(), Vec::new(), cursor.to_string());
        loop {
            let r = sync(p, &cursor, 0).unwrap();
            up.extend(r.upserted.into_iter().map(|e| e.provider_event_id));
            del.extend(r.deleted);
            cursor = r.next_cursor;
            if !r.more {
                return (up, del, cursor);
            }
        }
    }

    #[test]
    fn oversize_recurrence_is_refused_and_large_series_are_expanded_within_bounds() {
        let mut p = provider();
        let mut e = meeting("Daily", 5, 9);
        e.recurrence = vec!["EXDATE:20260110T090000Z".to_string(); 20_000];
        e.recurrence.insert(0, "RRULE:FREQ=DAILY".into());
        let refused = p.create_event(USER, PRIMARY, e.clone(), "k1", now());
        match refused {
            Err(ProviderError::Invalid(i)) => {
                assert_eq!(i.0[0].field, "event.recurrence", "{i:?}")
            }
            other => panic!("accepted: {other:?}"),
        }
        // An hourly series of a large event shows fewer instances, so that
        // one series stays within SERIES_BYTES.
        e.recurrence = vec!["RRULE:FREQ=HOURLY".into()];
        e.description = "d".repeat(60_000);
        create(&mut p, "k2", e.clone());
        let shown = sync(&p, "", MAX_PAGE_SIZE).unwrap().upserted;
        assert!(!shown.is_empty());
        assert!(
            shown.len() * approximate_size(&e) <= SERIES_BYTES,
            "{} instances",
            shown.len()
        );
    }

    #[test]
    fn an_incremental_cursor_returns_only_changes_since() {
        let mut p = provider();
        let a = create(&mut p, "a", meeting("A", 5, 9));
        let b = create(&mut p, "b", meeting("B", 6, 9));
        let (up, del, cursor) = sync_all(&p, "");
        assert_eq!(
            up,
            vec![a.provider_event_id.clone(), b.provider_event_id.clone()]
        );
        assert!(del.is_empty());

        let (up, del, same) = sync_all(&p, &cursor);
        assert!(up.is_empty() && del.is_empty());
        assert_eq!(same, cursor);

        let c = create(&mut p, "c", meeting("C", 7, 9));
        p.update_event(
            USER,
            PRIMARY,
            &a.provider_event_id,
            meeting("A2", 5, 10),
            "",
            now(),
        )
        .unwrap();
        p.delete_event(USER, PRIMARY, &b.provider_event_id, "")
            .unwrap();
        let (mut up, del, _) = sync_all(&p, &cursor);
        up.sort();
        let mut want = vec![a.provider_event_id.clone(), c.provider_event_id];
        want.sort();
        assert_eq!(up, want);
        assert_eq!(del, vec![b.provider_event_id]);
    }

    #[test]
    fn a_full_listing_is_paged_with_more_until_the_last_page() {
        let mut p = provider();
        for i in 0..5 {
            create(&mut p, &format!("k{i}"), meeting("M", 5 + i, 9));
        }
        let mut cursor = String::new();
        let mut pages = Vec::new();
        loop {
            let r = sync(&p, &cursor, 2).unwrap();
            assert!(r.full_listing);
            assert!(r.deleted.is_empty());
            pages.push(r.upserted.len());
            cursor = r.next_cursor;
            if !r.more {
                break;
            }
        }
        assert_eq!(pages, vec![2, 2, 1]);
        // The last page's cursor is the position at the start of the listing.
        assert_eq!(cursor, "s1:5");
        let r = sync(&p, &cursor, 2).unwrap();
        assert!(!r.full_listing && !r.more && r.upserted.is_empty());
    }

    #[test]
    fn incremental_changes_are_paged_too() {
        let mut p = provider();
        let (_, _, cursor) = sync_all(&p, "");
        for i in 0..5 {
            create(&mut p, &format!("k{i}"), meeting("M", 5 + i, 9));
        }
        let r = sync(&p, &cursor, 2).unwrap();
        assert!(r.more && !r.full_listing);
        assert_eq!(r.upserted.len(), 2);
        let (up, _, _) = sync_all(&p, &r.next_cursor);
        assert_eq!(up.len(), 3);
    }

    #[test]
    fn an_expired_or_garbled_cursor_is_out_of_range() {
        let mut p = provider();
        create(&mut p, "a", meeting("A", 5, 9));
        let (_, _, cursor) = sync_all(&p, "");
        p.expire_journal(USER, PRIMARY).unwrap();
        assert_eq!(sync(&p, &cursor, 0), Err(ProviderError::CursorExpired));
        assert_eq!(sync(&p, "nonsense", 0), Err(ProviderError::CursorExpired));
        assert_eq!(sync(&p, "s1:999", 0), Err(ProviderError::CursorExpired));
        let status = tonic::Status::from(ProviderError::CursorExpired);
        assert_eq!(status.code(), tonic::Code::OutOfRange);
        assert_eq!(status.message(), "sync cursor expired; resync from scratch");
        // A listing from scratch still works, and hands out a valid cursor.
        let (up, _, cursor) = sync_all(&p, "");
        assert_eq!(up.len(), 1);
        assert!(sync(&p, &cursor, 0).is_ok());
    }

    #[test]
    fn cursors_older_than_the_retained_journal_expire() {
        let mut p = Provider::with_journal_retention(2);
        p.check_password(USER, "secret").unwrap();
        let (_, _, cursor) = sync_all(&p, "");
        for i in 0..3 {
            create(&mut p, &format!("k{i}"), meeting("M", 5 + i, 9));
        }
        assert_eq!(sync(&p, &cursor, 0), Err(ProviderError::CursorExpired));
        assert!(sync(&p, "s1:1", 0).is_ok());
    }

    #[test]
    fn a_replayed_create_returns_the_existing_event_as_already_existed() {
        let mut p = provider();
        let mut e = meeting("A", 5, 9);
        e.client_event_id = "client-1".into();
        let first = p
            .create_event(USER, PRIMARY, e.clone(), "abc123", now())
            .unwrap();
        assert!(!first.already_existed);
        assert_eq!(first.event.provider_event_id, "cbabc123");
        assert_eq!(first.event.client_event_id, "client-1");
        assert!(first.event.managed);
        e.title = "changed".into();
        let again = p.create_event(USER, PRIMARY, e, "abc123", now()).unwrap();
        assert!(again.already_existed);
        assert_eq!(again.event, first.event);
        assert_eq!(p.list_provider_events(USER, "").unwrap().len(), 1);
        // Keys that are not short lowercase alphanumerics get a uuid.
        let other = create(&mut p, "Key-With/Slash", meeting("B", 6, 9));
        assert_eq!(other.provider_event_id.len(), 32);
    }

    #[test]
    fn an_update_with_a_stale_version_conflicts_with_the_current_version() {
        let mut p = provider();
        let e = create(&mut p, "a", meeting("A", 5, 9));
        let v1 = e.version.clone();
        let updated = p
            .update_event(
                USER,
                PRIMARY,
                &e.provider_event_id,
                meeting("A2", 5, 9),
                &v1,
                now(),
            )
            .unwrap();
        assert_ne!(updated.version, v1);
        let stale = p.update_event(
            USER,
            PRIMARY,
            &e.provider_event_id,
            meeting("A3", 5, 9),
            &v1,
            now(),
        );
        assert_eq!(
            stale,
            Err(ProviderError::VersionConflict {
                current: updated.version.clone()
            })
        );
        assert_eq!(
            p.delete_event(USER, PRIMARY, &e.provider_event_id, &v1),
            Err(ProviderError::VersionConflict {
                current: updated.version.clone()
            })
        );
        p.delete_event(USER, PRIMARY, &e.provider_event_id, &updated.version)
            .unwrap();
        assert_eq!(
            p.delete_event(USER, PRIMARY, &e.provider_event_id, ""),
            Err(ProviderError::EventNotFound)
        );
    }

    fn weekly_series(p: &mut Provider) -> Event {
        let mut e = meeting("Weekly", 5, 9);
        e.recurrence = vec![
            "RRULE:FREQ=WEEKLY;COUNT=6".into(),
            "EXDATE:20260112T090000Z".into(),
        ];
        create(p, "weekly", e)
    }

    #[test]
    fn a_weekly_series_with_exdate_and_exceptions_expands_to_the_right_instances() {
        let mut p = provider();
        let series = weekly_series(&mut p);
        let sid = series.provider_event_id.clone();
        assert_eq!(sid, "cbweekly");
        // Move the 19 January instance to 14:00.
        let mut moved = meeting("Moved", 19, 14);
        moved.recurrence_link = Some(RecurrenceLink {
            series_event_id: sid.clone(),
            original_start: Some(instant(at(19, 9), "")),
        });
        p.put_event(USER, "", moved, now()).unwrap();
        // Cancel the 26 January instance.
        let mut cancelled = meeting("Weekly", 26, 9);
        cancelled.set_status(EventStatus::Cancelled);
        cancelled.recurrence_link = Some(RecurrenceLink {
            series_event_id: sid.clone(),
            original_start: Some(instant(at(26, 9), "")),
        });
        p.put_event(USER, "", cancelled, now()).unwrap();

        // Window: January only (the 2 February instance is outside).
        let r = sync(&p, "", 0).unwrap();
        let got: Vec<(String, String, i32)> = r
            .upserted
            .iter()
            .map(|e| {
                let start = bounds(e, None).unwrap().0;
                (e.provider_event_id.clone(), start.to_rfc3339(), e.status)
            })
            .collect();
        let confirmed = EventStatus::Confirmed as i32;
        let want = vec![
            (
                format!("{sid}_20260105T090000Z"),
                "2026-01-05T09:00:00+00:00".to_string(),
                confirmed,
            ),
            (
                format!("{sid}_20260119T090000Z"),
                "2026-01-19T14:00:00+00:00".to_string(),
                confirmed,
            ),
            (
                format!("{sid}_20260126T090000Z"),
                "2026-01-26T09:00:00+00:00".to_string(),
                EventStatus::Cancelled as i32,
            ),
        ];
        assert_eq!(got, want);
        for e in &r.upserted {
            assert!(e.recurrence.is_empty());
            assert_eq!(e.ical_uid, series.ical_uid);
            let link = e.recurrence_link.as_ref().unwrap();
            assert_eq!(link.series_event_id, sid);
        }
        assert_eq!(r.upserted[0].version, series.version);
        assert_eq!(r.upserted[1].title, "Moved");
        // The moved instance keeps its original start in the link.
        assert_eq!(
            r.upserted[1]
                .recurrence_link
                .as_ref()
                .unwrap()
                .original_start,
            Some(instant(at(19, 9), ""))
        );
        // Instances last as long as the series.
        let (s, e) = bounds(&r.upserted[0], None).unwrap();
        assert_eq!(e - s, Duration::hours(1));
    }

    #[test]
    fn deleting_an_instance_reports_it_deleted_and_a_second_delete_is_not_found() {
        let mut p = provider();
        let sid = weekly_series(&mut p).provider_event_id;
        let (_, _, cursor) = sync_all(&p, "");
        let instance = format!("{sid}_20260119T090000Z");
        p.delete_event(USER, PRIMARY, &instance, "").unwrap();
        let (up, del, _) = sync_all(&p, &cursor);
        assert!(del.contains(&instance));
        assert!(!up.contains(&instance));
        // 5 and 26 January remain (12 January is an EXDATE).
        assert_eq!(up.len(), 2);
        assert_eq!(
            p.delete_event(USER, PRIMARY, &instance, ""),
            Err(ProviderError::EventNotFound)
        );
    }

    #[test]
    fn updating_an_instance_creates_an_exception_with_its_own_version() {
        let mut p = provider();
        let series = weekly_series(&mut p);
        let instance = format!("{}_20260105T090000Z", series.provider_event_id);
        let e = p
            .update_event(
                USER,
                PRIMARY,
                &instance,
                meeting("Once", 5, 11),
                &series.version,
                now(),
            )
            .unwrap();
        assert_eq!(e.provider_event_id, instance);
        assert_ne!(e.version, series.version);
        let stale = p.update_event(
            USER,
            PRIMARY,
            &instance,
            meeting("Twice", 5, 11),
            &series.version,
            now(),
        );
        assert!(matches!(stale, Err(ProviderError::VersionConflict { .. })));
    }

    #[test]
    fn changing_a_series_reports_instances_it_no_longer_produces_as_deleted() {
        let mut p = provider();
        let series = weekly_series(&mut p);
        let sid = series.provider_event_id.clone();
        let (_, _, cursor) = sync_all(&p, "");
        let mut shorter = meeting("Weekly", 5, 9);
        shorter.recurrence = vec!["RRULE:FREQ=WEEKLY;COUNT=2".into()];
        p.update_event(USER, PRIMARY, &sid, shorter, "", now())
            .unwrap();
        let (mut up, del, _) = sync_all(&p, &cursor);
        up.sort();
        assert_eq!(
            up,
            vec![
                format!("{sid}_20260105T090000Z"),
                format!("{sid}_20260112T090000Z")
            ]
        );
        assert!(del.contains(&format!("{sid}_20260119T090000Z")));
        assert!(del.contains(&format!("{sid}_20260126T090000Z")));
        assert!(!del.contains(&format!("{sid}_20260105T090000Z")));
    }

    #[test]
    fn busy_only_strips_content_but_keeps_times_and_status() {
        let mut p = provider();
        let mut e = meeting("Secret plans", 5, 9);
        e.set_status(EventStatus::Tentative);
        create(&mut p, "a", e);
        let r = p
            .sync(
                USER,
                PRIMARY,
                &SyncQuery {
                    cursor: "",
                    window: window(),
                    page_size: 0,
                    busy_only: true,
                },
            )
            .unwrap();
        let e = &r.upserted[0];
        assert!(e.title.is_empty() && e.description.is_empty() && e.location.is_empty());
        assert!(e.attendees.is_empty() && e.organizer.is_none());
        assert_eq!(e.status(), EventStatus::Tentative);
        assert!(e.start.is_some() && e.end.is_some());
    }

    #[test]
    fn a_wrong_password_is_rejected() {
        let mut p = provider();
        assert_eq!(
            p.check_password(USER, "guess"),
            Err(ProviderError::WrongCredentials)
        );
        assert_eq!(
            p.authenticate(USER, "guess"),
            Err(ProviderError::WrongCredentials)
        );
        assert_eq!(
            p.authenticate("nobody@example.com", "secret"),
            Err(ProviderError::WrongCredentials)
        );
        assert!(p.authenticate(USER, "secret").is_ok());
        let status = tonic::Status::from(ProviderError::WrongCredentials);
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert!(!status.message().contains("guess"));
    }

    #[test]
    fn revoked_credentials_are_rejected_until_the_user_signs_in_again() {
        let mut p = provider();
        p.revoke_user_access(USER).unwrap();
        assert_eq!(
            p.authenticate(USER, "secret"),
            Err(ProviderError::WrongCredentials)
        );
        p.check_password(USER, "secret").unwrap();
        assert!(p.authenticate(USER, "secret").is_ok());
        p.revoke_user_access(USER).unwrap();
        p.create_user(USER, "new-secret").unwrap();
        assert!(p.authenticate(USER, "secret").is_err());
        assert!(p.authenticate(USER, "new-secret").is_ok());
    }

    #[test]
    fn a_new_user_has_primary_team_and_read_only_holidays_calendars() {
        let p = provider();
        let cals = p.calendars(USER).unwrap();
        let ids: Vec<&str> = cals.iter().map(|c| c.calendar_id.as_str()).collect();
        assert_eq!(
            ids,
            vec![PRIMARY, "ada@example.com/team", "ada@example.com/holidays"]
        );
        assert!(cals[0].primary && cals[0].name == USER && cals[0].time_zone == "UTC");
        assert!(!cals[1].read_only && cals[2].read_only);
    }

    #[test]
    fn writes_to_the_holidays_calendar_are_refused() {
        let mut p = provider();
        let r = p.create_event(
            USER,
            "ada@example.com/holidays",
            meeting("A", 5, 9),
            "a",
            now(),
        );
        assert_eq!(r, Err(ProviderError::ReadOnly));
        // The holidays calendar shows New Year's Day as an all-day instance.
        let r = p
            .sync(
                USER,
                "ada@example.com/holidays",
                &SyncQuery {
                    cursor: "",
                    window: window(),
                    page_size: 0,
                    busy_only: false,
                },
            )
            .unwrap();
        assert_eq!(r.upserted.len(), 1);
        assert_eq!(r.upserted[0].provider_event_id, "new-year_20260101");
    }

    #[test]
    fn invalid_events_name_their_fields() {
        let mut p = provider();
        let mut e = meeting("A", 5, 9);
        std::mem::swap(&mut e.start, &mut e.end);
        match p.create_event(USER, PRIMARY, e, "a", now()) {
            Err(ProviderError::Invalid(i)) => assert_eq!(i.0[0].field, "event.end"),
            other => panic!("unexpected {other:?}"),
        }
        let mut e = meeting("A", 5, 9);
        e.recurrence = vec!["RRULE:FREQ=NEVER".into()];
        match p.create_event(USER, PRIMARY, e, "b", now()) {
            Err(ProviderError::Invalid(i)) => assert_eq!(i.0[0].field, "event.recurrence"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn free_busy_reports_statuses_and_skips_free_events() {
        let mut p = provider();
        let mut tentative = meeting("T", 5, 9);
        tentative.set_status(EventStatus::Tentative);
        let mut ooo = meeting("O", 6, 9);
        ooo.set_event_type(EventType::OutOfOffice);
        let mut free = meeting("F", 7, 9);
        free.set_transparency(Transparency::Transparent);
        let mut wl = meeting("W", 8, 9);
        wl.set_event_type(EventType::WorkingLocation);
        create(&mut p, "o", ooo);
        create(&mut p, "t", tentative);
        create(&mut p, "f", free);
        create(&mut p, "w", wl);
        create(&mut p, "b", meeting("B", 9, 9));
        let busy = p.free_busy(USER, &[PRIMARY.to_string()], window()).unwrap();
        let statuses: Vec<i32> = busy.iter().map(|b| b.status).collect();
        assert_eq!(
            statuses,
            vec![
                BusyStatus::Tentative as i32,
                BusyStatus::OutOfOffice as i32,
                BusyStatus::Busy as i32
            ]
        );
        assert!(p.free_busy(USER, &["nope".to_string()], window()).is_err());
    }

    #[test]
    fn notifications_go_to_unexpired_channels_of_the_changed_calendar() {
        let mut p = provider();
        let watch = |id: &str, calendar: &str, ttl| pb::StartWatchRequest {
            calendar_id: calendar.into(),
            channel_id: id.into(),
            channel_token: "token".into(),
            callback_endpoint: "http://127.0.0.1:1".into(),
            ttl_seconds: ttl,
            ..Default::default()
        };
        let ch = p
            .start_watch(USER, &watch("c1", PRIMARY, 0), now())
            .unwrap();
        assert_eq!(ch.resource_id, PRIMARY);
        assert_eq!(ch.expires_at, Some(ts(now() + Duration::seconds(3600))));
        p.start_watch(USER, &watch("c2", PRIMARY, 60), now())
            .unwrap();
        p.start_watch(USER, &watch("c3", "ada@example.com/team", 0), now())
            .unwrap();
        let later = now() + Duration::seconds(120);
        let n = p.notifications(PRIMARY, later);
        assert_eq!(n.len(), 1);
        assert_eq!((n[0].channel_id.as_str(), n[0].message_number), ("c1", 1));
        assert!(!format!("{n:?}").contains("token"));
        assert_eq!(p.notifications(PRIMARY, later)[0].message_number, 2);
        p.stop_watch(USER, "c1");
        p.stop_watch(USER, "c1");
        assert!(p.notifications(PRIMARY, later).is_empty());
    }
}
