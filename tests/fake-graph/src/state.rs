//! The fake's state: OAuth clients, grants and tokens; users with their
//! calendars and events; the change sequence delta rounds are cut from;
//! injected faults.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Instant;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use chrono::{DateTime, NaiveDateTime, TimeZone as _, Utc};
use chrono_tz::Tz;
use rand::RngCore as _;
use serde_json::{Map, Value};

/// A registered application.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    pub(crate) secret: String,
    pub(crate) redirect_uri: String,
}

/// An authorization code, single use.
#[derive(Debug, Clone)]
pub(crate) struct Code {
    pub(crate) client_id: String,
    pub(crate) user: String,
    pub(crate) redirect_uri: String,
    pub(crate) challenge: String,
    pub(crate) scopes: Vec<String>,
    pub(crate) expires: DateTime<Utc>,
    pub(crate) redeemed: bool,
}

/// A refresh token (each refresh issues a new one; old ones stay valid
/// until revoked, as Microsoft documents).
#[derive(Debug, Clone)]
pub(crate) struct Grant {
    pub(crate) client_id: String,
    pub(crate) user: String,
    pub(crate) scopes: Vec<String>,
    /// Set by `revokeSignInSessions` or the control API: the AADSTS code
    /// the next redemption fails with.
    pub(crate) dead: Option<u32>,
}

/// An access token.
#[derive(Debug, Clone)]
pub(crate) struct Access {
    pub(crate) user: String,
    pub(crate) scopes: Vec<String>,
    pub(crate) expires: DateTime<Utc>,
    /// The client declared it handles claims challenges (`xms_cc` `cp1`):
    /// Continuous Access Evaluation applies to the token.
    pub(crate) cae: bool,
    /// The `nbf` claim value the token was issued with (answering a
    /// challenge).
    pub(crate) nbf: Option<String>,
}

/// A calendar.
#[derive(Debug, Clone)]
pub(crate) struct Calendar {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) color: String,
    pub(crate) hex_color: String,
    pub(crate) can_edit: bool,
    pub(crate) is_default: bool,
}

/// A wall-clock time in a zone, as Graph's `dateTimeTimeZone`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct When {
    pub(crate) local: NaiveDateTime,
    pub(crate) zone: Tz,
    /// The zone's name as written (Windows or IANA).
    pub(crate) zone_name: String,
}

impl When {
    pub(crate) fn instant(&self) -> DateTime<Utc> {
        calbridge_local_to_utc(self.local, self.zone)
    }
}

/// A local time as UTC (the earlier of repeated times; after a gap, the
/// offset from before it).
pub(crate) fn calbridge_local_to_utc(local: NaiveDateTime, zone: Tz) -> DateTime<Utc> {
    zone.from_local_datetime(&local)
        .earliest()
        .or_else(|| {
            zone.from_local_datetime(&(local + chrono::Duration::hours(1)))
                .earliest()
        })
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| Utc.from_utc_datetime(&local))
}

/// What an event is.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    /// A single event.
    Single,
    /// A series master (its `recurrence` is in the fields).
    Master,
    /// A changed occurrence of a series.
    Exception {
        master: String,
        original_start: DateTime<Utc>,
    },
}

/// A stored event (never an unchanged occurrence: those are computed).
#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub(crate) id: String,
    pub(crate) calendar: String,
    pub(crate) change_key: String,
    pub(crate) seq: u64,
    pub(crate) created: DateTime<Utc>,
    pub(crate) modified: DateTime<Utc>,
    pub(crate) start: When,
    pub(crate) end: When,
    pub(crate) all_day: bool,
    pub(crate) kind: Kind,
    /// Other writable properties, as written (subject, body, location,
    /// showAs, attendees, recurrence, transactionId,
    /// singleValueExtendedProperties, ...).
    pub(crate) fields: Map<String, Value>,
    /// Original starts of deleted occurrences (masters only).
    pub(crate) cancelled: Vec<DateTime<Utc>>,
}

/// An item gone from a calendar at `seq` (a deleted event or occurrence).
#[derive(Debug, Clone)]
pub(crate) struct Tombstone {
    pub(crate) id: String,
    pub(crate) calendar: String,
    pub(crate) seq: u64,
}

/// One user's mailbox.
#[derive(Debug, Clone)]
pub(crate) struct User {
    pub(crate) id: String,
    pub(crate) email: String,
    pub(crate) time_zone: String,
    pub(crate) calendars: Vec<Calendar>,
    pub(crate) events: BTreeMap<String, Event>,
    pub(crate) tombstones: Vec<Tombstone>,
    /// Bumped to expire every delta token issued before.
    pub(crate) delta_generation: u64,
    /// No request before this instant (set by an injected 429 with
    /// Retry-After); an early one gets another 429.
    pub(crate) not_before: Option<Instant>,
    /// A critical event (Continuous Access Evaluation): tokens of capable
    /// clients issued without this `nbf` claim value get a claims
    /// challenge.
    pub(crate) claims_nbf: Option<String>,
}

/// An injected failure of the next Graph requests.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
pub struct Fault {
    /// HTTP status (429, 500, 503, 504, ...).
    pub status: u16,
    /// `Retry-After` seconds, when sent.
    #[serde(default)]
    pub retry_after: Option<u64>,
    /// Only requests of this method (any when unset).
    #[serde(default)]
    pub method: Option<String>,
    /// How many requests fail.
    #[serde(default = "one")]
    pub count: u32,
}

fn one() -> u32 {
    1
}

/// Everything the fake holds.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) clients: HashMap<String, Client>,
    pub(crate) users: BTreeMap<String, User>,
    pub(crate) codes: HashMap<String, Code>,
    pub(crate) grants: HashMap<String, Grant>,
    pub(crate) access: HashMap<String, Access>,
    pub(crate) faults: VecDeque<Fault>,
    /// The change sequence: every write takes the next number.
    pub(crate) seq: u64,
    /// Requests that arrived before a Retry-After had passed.
    pub(crate) early_retries: u64,
    /// Claims challenges sent (Continuous Access Evaluation).
    pub(crate) claims_challenges: u64,
    /// Per-mailbox concurrency and budget, and injected latency.
    pub(crate) limits: crate::limits::Limits,
    /// Graph requests served (method and path), for tests.
    pub(crate) requests: Vec<String>,
    /// Delta pages served, for the empty-page quirk.
    pub(crate) pages_served: u32,
    /// Where answers or request bodies broke Graph's schemas.
    pub(crate) violations: Vec<String>,
    /// The Graph base URL the fake's next and delta links start with when
    /// a proxy stands in front of it (`None`: its own `http://ADDR/v1.0`).
    pub(crate) graph_url: Option<String>,
    /// Change-notification subscriptions and their deliveries.
    pub(crate) subscriptions: crate::subscriptions::Book,
    /// Wakes the delivery task.
    pub(crate) wake: std::sync::Arc<tokio::sync::Notify>,
    /// How long notifications to a slow endpoint are held back.
    pub(crate) slow_endpoint_delay: std::time::Duration,
    /// How long a failed delivery is retried.
    pub(crate) delivery_retry_window: std::time::Duration,
}

/// A random opaque token.
pub(crate) fn token(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut b);
    URL_SAFE_NO_PAD.encode(b)
}

/// A random Outlook-like id: long, case-sensitive, with `+`, `/` and `=`.
pub(crate) fn outlook_id() -> String {
    let mut b = [0u8; 40];
    rand::thread_rng().fill_bytes(&mut b);
    // Make sure the URL-unsafe characters appear.
    b[0] = 0xfb;
    b[1] = 0xff;
    format!("AAMk{}", STANDARD.encode(&b[..38]))
}

/// A new change key.
pub(crate) fn change_key() -> String {
    token(12)
}

impl State {
    /// The next change sequence number.
    pub(crate) fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Adds a user with a default calendar "Calendar" and a read-only
    /// "United States holidays" calendar.
    pub(crate) fn add_user(&mut self, email: &str, time_zone: &str) {
        if self.users.contains_key(email) {
            return;
        }
        let calendars = vec![
            Calendar {
                id: outlook_id(),
                name: "Calendar".into(),
                color: "auto".into(),
                hex_color: String::new(),
                can_edit: true,
                is_default: true,
            },
            Calendar {
                id: outlook_id(),
                name: "United States holidays".into(),
                color: "lightGreen".into(),
                hex_color: "#87d28e".into(),
                can_edit: false,
                is_default: false,
            },
        ];
        self.users.insert(
            email.to_string(),
            User {
                id: uuid_like(),
                email: email.to_string(),
                time_zone: time_zone.to_string(),
                calendars,
                events: BTreeMap::new(),
                tombstones: Vec::new(),
                delta_generation: 1,
                not_before: None,
                claims_nbf: None,
            },
        );
    }
}

/// A GUID-shaped random id.
pub(crate) fn uuid_like() -> String {
    let mut b = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut b);
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}
