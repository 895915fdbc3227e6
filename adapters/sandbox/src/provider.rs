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
//! Sync cursors (opaque to callers) name positions in a calendar's journal
//! and the window `<ws>:<we>` (Unix seconds) the listing they descend from
//! covered: `s2:<seq>:<ws>:<we>` (up to date at `seq`),
//! `f2:<head>:<ws>:<we>:<key>` (inside a listing from scratch taken at
//! `head`, after unit `key`) and `c2:<from>:<to>:<ws>:<we>:<key>` (inside
//! the changes `(from, to]`, after unit `key`). Keys are hex-encoded. The
//! older `s1`/`f1`/`c1` forms name no window and are still read: the next
//! sync after them lists from scratch.

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

mod calendar;
mod instances;
mod sync;

use instances::{bounds, expand, original_start_time};

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

pub use calbridge::adapter::Window;

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
mod tests;
