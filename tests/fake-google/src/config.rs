//! The fake's configuration: every provider limit is a value here with
//! Google's documented (or observed) default, so tests can move it.

use std::net::SocketAddr;
use std::time::Duration;

/// When pages of a listing come back short or empty while a
/// `nextPageToken` is still present (Google does both). Counted over every
/// page the fake serves, so a given sequence of calls is deterministic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PagingQuirks {
    /// Every Nth page served is empty (with a `nextPageToken`); 0 = never.
    pub empty_page_every: u32,
    /// Every Nth page served holds at most half of `maxResults` (and at least
    /// one item) while more remain; 0 = never.
    pub short_page_every: u32,
}

impl Default for PagingQuirks {
    fn default() -> Self {
        Self {
            empty_page_every: 7,
            short_page_every: 5,
        }
    }
}

impl PagingQuirks {
    /// Every page full and none empty.
    pub const NONE: PagingQuirks = PagingQuirks {
        empty_page_every: 0,
        short_page_every: 0,
    };
}

/// Configuration of one fake server.
#[derive(Debug, Clone)]
pub struct FakeConfig {
    /// Address to bind; port 0 picks a free one.
    pub listen: SocketAddr,
    /// PEM of the only CA trusted for webhook deliveries. `None`: the
    /// public web roots (as Google does), which no test receiver has.
    pub webhook_ca_pem: Option<Vec<u8>>,
    /// Check every Calendar API JSON response against the discovery
    /// document and record violations (`GET /fake/v1/violations`).
    pub validate_responses: bool,
    /// Seed of the fake's random choices (quota error kind, message-number
    /// gaps). `None`: from entropy.
    pub seed: Option<u64>,
    /// Lifetime of access tokens (`expires_in`); Google: about 3600 s.
    pub access_token_lifetime: Duration,
    /// Refresh tokens stop working this long after consent; `None` = never.
    /// Google's "Testing" publishing status uses 7 days.
    pub refresh_token_lifetime: Option<Duration>,
    /// Live refresh tokens per user and client; issuing one more silently
    /// invalidates the oldest. Google: 100.
    pub max_refresh_tokens_per_client: usize,
    /// Lifetime of an authorization code; Google: about 10 minutes.
    pub authorization_code_lifetime: Duration,
    /// Refuse consent requests without a PKCE `code_challenge`.
    pub require_pkce: bool,
    /// `events.list` page size default and cap (Google: 250 / 2500).
    pub events_max_results: (u32, u32),
    /// `calendarList.list` page size default and cap (Google: 100 / 250).
    pub calendar_list_max_results: (u32, u32),
    /// Short and empty pages.
    pub paging: PagingQuirks,
    /// Sync tokens older than this answer 410 `fullSyncRequired`; `None` = never.
    pub sync_token_max_age: Option<Duration>,
    /// `updatedMin` further back than this answers 410 `updatedMinTooLongAgo`
    /// (observed: roughly 20-30 days).
    pub updated_min_window: Duration,
    /// Expansion of a series without an end stops after this many instances.
    pub max_instances_per_series: usize,
    /// Requests per user per sliding minute (Google: 600).
    pub quota_per_user_per_minute: u32,
    /// Requests per project per sliding minute (Google: 10,000).
    pub quota_per_project_per_minute: u32,
    /// Longest `freebusy.query` range in days (observed: 90).
    pub freebusy_max_days: i64,
    /// Most calendars one `freebusy.query` answers (Google: 50).
    pub freebusy_max_calendars: usize,
    /// Channel lifetime when the watch request sets none (Google: 604800 s).
    pub channel_default_ttl: Duration,
    /// First retry delay of a webhook delivery answered with 500/502/503/504;
    /// doubles per attempt.
    pub push_retry_base: Duration,
    /// Delivery attempts per message before it is given up.
    pub push_max_attempts: u32,
    /// Timeout of one webhook delivery attempt.
    pub push_timeout: Duration,
    /// With `reorder` on, a message waits this long for a later one to
    /// overtake it before it is sent anyway.
    pub push_reorder_hold: Duration,
}

impl Default for FakeConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            webhook_ca_pem: None,
            validate_responses: false,
            seed: None,
            access_token_lifetime: Duration::from_secs(3600),
            refresh_token_lifetime: None,
            max_refresh_tokens_per_client: 100,
            authorization_code_lifetime: Duration::from_secs(600),
            require_pkce: true,
            events_max_results: (250, 2500),
            calendar_list_max_results: (100, 250),
            paging: PagingQuirks::default(),
            sync_token_max_age: None,
            updated_min_window: Duration::from_secs(28 * 86_400),
            max_instances_per_series: 1000,
            quota_per_user_per_minute: 600,
            quota_per_project_per_minute: 10_000,
            freebusy_max_days: 90,
            freebusy_max_calendars: 50,
            channel_default_ttl: Duration::from_secs(604_800),
            push_retry_base: Duration::from_millis(50),
            push_max_attempts: 5,
            push_timeout: Duration::from_secs(10),
            push_reorder_hold: Duration::from_millis(200),
        }
    }
}
