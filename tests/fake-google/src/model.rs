//! The fake's in-memory world: OAuth clients, users, calendars and their
//! events, grants and tokens, sync tokens, listings being paged, channels,
//! quota windows and counters. One `State` behind one mutex; no lock is
//! held across an await.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value};

use crate::config::{FakeConfig, PagingQuirks};
use crate::control::{ConsentSpec, Fault, PushBehaviour, RequestCounts, ViolationRecord};
use crate::discovery::Discovery;
use crate::push::Channel;

/// What every handler shares.
pub(crate) struct Shared {
    pub config: FakeConfig,
    pub discovery: &'static Discovery,
    pub state: Mutex<State>,
    /// Client for webhook deliveries (trusts only the configured CA).
    pub webhook: reqwest::Client,
    /// `http://ADDR`, this server's own base URL.
    pub base_url: String,
    /// Turns `true` when the server shuts down (ends push workers).
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

impl Shared {
    /// The state; a poisoned lock is taken over (a panicking handler must
    /// not take the whole fake down).
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A registered OAuth client.
#[derive(Debug, Clone)]
pub(crate) struct OAuthClient {
    pub secret: String,
    pub redirect_uris: Vec<String>,
}

/// A calendar user (an e-mail address) and their calendar list.
#[derive(Debug, Clone)]
pub(crate) struct User {
    pub list: Vec<ListEntry>,
    /// Change counter of the calendar list (for its sync tokens).
    pub list_seq: u64,
}

/// One entry of a user's calendar list.
#[derive(Debug, Clone)]
pub(crate) struct ListEntry {
    pub calendar_id: String,
    pub access_role: String,
    pub primary: bool,
    pub hidden: bool,
    pub deleted: bool,
    pub seq: u64,
    pub etag: String,
}

/// One calendar and its events.
#[derive(Debug, Clone)]
pub(crate) struct Calendar {
    pub id: String,
    pub summary: String,
    pub time_zone: Tz,
    pub events: HashMap<String, StoredEvent>,
    /// Change counter; each stored event remembers the value of its last change.
    pub seq: u64,
    /// Sync tokens issued under an older epoch answer 410.
    pub token_epoch: u64,
    /// Opaque id of the events collection, for channels.
    pub resource_id: String,
    pub updated: DateTime<Utc>,
}

/// An event as stored: the full resource (including private extended
/// properties and server fields), plus bookkeeping.
#[derive(Debug, Clone)]
pub(crate) struct StoredEvent {
    pub body: Map<String, Value>,
    /// Creation order (the default listing order).
    pub insert_no: u64,
    /// Calendar `seq` at the last change.
    pub seq: u64,
}

impl StoredEvent {
    pub(crate) fn str_field(&self, key: &str) -> Option<&str> {
        self.body.get(key).and_then(Value::as_str)
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.str_field("status") == Some("cancelled")
    }

    pub(crate) fn recurring_event_id(&self) -> Option<&str> {
        self.str_field("recurringEventId")
    }

    pub(crate) fn is_master(&self) -> bool {
        self.body
            .get("recurrence")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
    }
}

/// A consent the user gave: scopes for one client.
#[derive(Debug, Clone)]
pub(crate) struct Grant {
    pub user: String,
    pub client_id: String,
    pub scopes: BTreeSet<String>,
    pub refresh_token: Option<String>,
    /// Revoked: neither its access tokens nor its refresh token work.
    pub revoked: bool,
    /// The refresh token no longer works (its access tokens still do until they expire).
    pub refresh_invalid: bool,
    pub refresh_expires_at: Option<DateTime<Utc>>,
    pub created: DateTime<Utc>,
}

/// An issued access token.
#[derive(Debug, Clone)]
pub(crate) struct AccessToken {
    pub grant: u64,
    pub expires_at: DateTime<Utc>,
}

/// An authorization code waiting for its exchange.
#[derive(Debug, Clone)]
pub(crate) struct AuthCode {
    pub client_id: String,
    pub redirect_uri: String,
    pub user: String,
    pub scopes: BTreeSet<String>,
    pub code_challenge: Option<(String, String)>,
    pub issue_refresh_token: bool,
    pub expires_at: DateTime<Utc>,
    pub used: bool,
}

/// What a sync or page token lists.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Scope {
    /// Events of a calendar.
    Events(String),
    /// A user's calendar list.
    CalendarList(String),
}

/// An issued sync token.
#[derive(Debug, Clone)]
pub(crate) struct SyncToken {
    pub scope: Scope,
    pub seq: u64,
    pub epoch: u64,
    pub issued_at: DateTime<Utc>,
}

/// One served page of a listing.
#[derive(Debug, Clone)]
pub(crate) struct PageRecord {
    pub offset: usize,
    pub count: usize,
    /// `Some(token)` for a next page, `None` when this was the last.
    pub next_page: Option<String>,
    pub sync_token: Option<String>,
}

/// A listing being paged: the items computed when the first page was
/// asked for, and the pages served so far.
#[derive(Debug, Clone)]
pub(crate) struct Listing {
    pub scope: Scope,
    /// The request's parameters (without `pageToken`); a page token sent
    /// with different ones is refused.
    pub fingerprint: Vec<(String, String)>,
    pub items: Vec<Value>,
    pub max_results: usize,
    /// The scope's change counter when the items were taken.
    pub sync_seq: u64,
    pub epoch: u64,
    pub pages: Vec<PageRecord>,
}

/// The whole fake world.
pub(crate) struct State {
    pub clock_offset: Duration,
    pub rng: StdRng,
    pub clients: HashMap<String, OAuthClient>,
    pub users: HashMap<String, User>,
    pub user_order: Vec<String>,
    pub calendars: HashMap<String, Calendar>,
    pub next_consent: Option<ConsentSpec>,
    pub codes: HashMap<String, AuthCode>,
    pub grants: HashMap<u64, Grant>,
    pub next_grant: u64,
    pub access_tokens: HashMap<String, AccessToken>,
    pub refresh_tokens: HashMap<String, u64>,
    /// (user, client) pairs that already received a refresh token.
    pub refresh_issued: HashSet<(String, String)>,
    /// Scopes granted so far per (user, client), for `include_granted_scopes`.
    pub pair_scopes: HashMap<(String, String), BTreeSet<String>>,
    pub sync_tokens: HashMap<String, SyncToken>,
    pub listings: HashMap<u64, Listing>,
    pub listing_order: VecDeque<u64>,
    pub next_listing: u64,
    pub pages_served: u64,
    pub etag_counter: u64,
    pub insert_counter: u64,
    pub faults: Vec<Fault>,
    pub user_windows: HashMap<String, VecDeque<DateTime<Utc>>>,
    pub project_window: VecDeque<DateTime<Utc>>,
    pub quota_per_user: u32,
    pub quota_per_project: u32,
    pub counters: RequestCounts,
    pub violations: Vec<ViolationRecord>,
    pub channels: HashMap<String, Channel>,
    pub channel_order: Vec<String>,
    pub push: PushBehaviour,
    pub paging: PagingQuirks,
}

/// Listings kept for paging before the oldest are forgotten.
const MAX_LISTINGS: usize = 2000;

impl State {
    pub(crate) fn new(config: &FakeConfig) -> Self {
        let rng = match config.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_entropy(),
        };
        Self {
            clock_offset: Duration::zero(),
            rng,
            clients: HashMap::new(),
            users: HashMap::new(),
            user_order: Vec::new(),
            calendars: HashMap::new(),
            next_consent: None,
            codes: HashMap::new(),
            grants: HashMap::new(),
            next_grant: 1,
            access_tokens: HashMap::new(),
            refresh_tokens: HashMap::new(),
            refresh_issued: HashSet::new(),
            pair_scopes: HashMap::new(),
            sync_tokens: HashMap::new(),
            listings: HashMap::new(),
            listing_order: VecDeque::new(),
            next_listing: 1,
            pages_served: 0,
            etag_counter: Utc::now().timestamp_micros().max(0) as u64,
            insert_counter: 0,
            faults: Vec::new(),
            user_windows: HashMap::new(),
            project_window: VecDeque::new(),
            quota_per_user: config.quota_per_user_per_minute,
            quota_per_project: config.quota_per_project_per_minute,
            counters: RequestCounts::default(),
            violations: Vec::new(),
            channels: HashMap::new(),
            channel_order: Vec::new(),
            push: PushBehaviour::default(),
            paging: config.paging,
        }
    }

    /// The fake's clock: wall time plus what the control API advanced.
    pub(crate) fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.clock_offset
    }

    /// A fresh quoted etag, larger than every earlier one.
    pub(crate) fn next_etag(&mut self) -> String {
        self.etag_counter += 1 + self.rng.gen_range(0..1000);
        format!("\"{}\"", self.etag_counter)
    }

    /// Random characters from `alphabet`.
    pub(crate) fn random_chars(&mut self, alphabet: &[u8], len: usize) -> String {
        (0..len)
            .map(|_| alphabet[self.rng.gen_range(0..alphabet.len())] as char)
            .collect()
    }

    /// An event id as Google makes them: base32hex, 26 characters.
    pub(crate) fn random_event_id(&mut self) -> String {
        self.random_chars(b"abcdefghijklmnopqrstuv0123456789", 26)
    }

    /// An opaque token with a prefix.
    pub(crate) fn random_token(&mut self, prefix: &str, len: usize) -> String {
        let body = self.random_chars(
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
            len,
        );
        format!("{prefix}{body}")
    }

    /// The real calendar id behind `primary`.
    pub(crate) fn resolve_calendar_id(&self, user: &str, raw: &str) -> String {
        if raw == "primary" {
            user.to_string()
        } else {
            raw.to_string()
        }
    }

    /// The user's list entry for a calendar, when they have one.
    pub(crate) fn entry(&self, user: &str, calendar_id: &str) -> Option<&ListEntry> {
        self.users
            .get(user)?
            .list
            .iter()
            .find(|e| e.calendar_id == calendar_id && !e.deleted)
    }

    /// Remembers a listing for paging, forgetting the oldest beyond a bound.
    pub(crate) fn store_listing(&mut self, listing: Listing) -> u64 {
        let id = self.next_listing;
        self.next_listing += 1;
        self.listings.insert(id, listing);
        self.listing_order.push_back(id);
        while self.listing_order.len() > MAX_LISTINGS {
            if let Some(old) = self.listing_order.pop_front() {
                self.listings.remove(&old);
            }
        }
        id
    }

    /// Records a change to a calendar: bumps its counter and returns it.
    pub(crate) fn bump_calendar(&mut self, calendar_id: &str) -> u64 {
        let now = self.now();
        match self.calendars.get_mut(calendar_id) {
            Some(c) => {
                c.seq += 1;
                c.updated = now;
                c.seq
            }
            None => 0,
        }
    }
}
