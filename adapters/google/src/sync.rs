//! SyncEvents for a stateless adapter: what the opaque cursor carries and
//! how one page is computed from `events.list` (`showDeleted=true`,
//! `singleEvents=false`).
//!
//! The cursor holds Google's sync token, the `maxResults` every listing of
//! the calendar repeats, the window the last full listing covered (its
//! start, and its end: the horizon), short hashes of the ids of the calendar's series masters,
//! and — while a listing is in progress — the Google page token being read,
//! how many of its items were already answered, and for a full listing its
//! `timeMin`/`timeMax` and the hashes of the exceptions met so far.
//!
//! - A full listing (empty cursor, or the adapter's own choice) names every
//!   event of the window: singles, exceptions as the instances they replace,
//!   and series masters expanded locally into instances (skipping those an
//!   exception already named; a cancelled exception met after its master
//!   removes the instance through `deleted`). The scheduler diffs it
//!   against its mirror.
//! - An incremental listing (sync token) answers changes: cancelled items as
//!   `deleted` (a cancelled exception as its instance id), others as
//!   upserts, or as `deleted` when they left the window. A change to a series
//!   master (new, edited, cancelled, or made single) cannot be expressed
//!   instance by instance, so the adapter lists the calendar again from
//!   scratch (`full_listing`). So it does when the request's window's start
//!   or end is a day or more from the last full listing's (the scheduler
//!   slides the window with the clock): a sync token cannot be combined
//!   with `timeMin`/`timeMax`, and instances entering the window are no
//!   change at Google.
//! - Only the absence of `nextPageToken` ends a listing; pages may be empty.
//!   One call reads at most a few Google pages and answers `more` when it
//!   stops early. A page whose expansion exceeds `page_size` is answered in
//!   parts: the cursor then keeps the same page token and an item offset.
//!
//! A sync token Google no longer accepts (410) or a cursor that is not ours
//! is OUT_OF_RANGE: the scheduler restarts with an empty cursor.

use std::collections::BTreeSet;
use std::future::Future;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use calbridge::paging::{approx_size, fitting, MAX_PAGE_BYTES};
use calbridge::pb;

use crate::error::GoogleError;
use crate::mapping::{
    event_from_google, event_overlaps, instance_id, parse_instance_id, parse_when, Context,
    MapError,
};
use crate::model;
use crate::recurrence::{expand_bounded, Window};

/// The most events the adapter returns in one page (a single series'
/// expansion may exceed it when it alone fills the page).
pub const MAX_PAGE_SIZE: u32 = 500;
/// Google's cap on `maxResults`.
const GOOGLE_MAX_RESULTS: u32 = 2500;
/// The most Google requests one SyncEvents call makes.
const MAX_REQUESTS_PER_CALL: usize = 8;
/// How far the window's start or end may move from the last full
/// listing's before the calendar is listed again, in seconds.
const HORIZON_SLACK_SECONDS: u64 = 24 * 3600;
/// Marks (and versions) our cursors.
const CURSOR_PREFIX: &str = "g1.";

/// A short, stable hash of an event id (a collision costs at most a
/// needless full listing or, within one listing, a hidden instance with a
/// chance of 2^-48).
pub fn id_hash(id: &str) -> String {
    hex::encode(&Sha256::digest(id.as_bytes())[..6])
}

/// A listing in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    /// True for a full listing (no sync token), false for an incremental
    /// one (with the cursor's sync token).
    #[serde(rename = "f")]
    pub full: bool,
    /// The page being read; none for the first.
    #[serde(rename = "p", default, skip_serializing_if = "Option::is_none")]
    pub page_token: Option<String>,
    /// Items of that page already answered.
    #[serde(rename = "o", default)]
    pub offset: usize,
    /// Events of the item at `offset` already answered: an item (a series)
    /// expanding to more events than fit one page is split across pages.
    #[serde(rename = "i", default, skip_serializing_if = "is_zero")]
    pub item_events: usize,
    /// `timeMin` of a full listing, Unix seconds.
    #[serde(rename = "a", default)]
    pub time_min: i64,
    /// `timeMax` of a full listing, Unix seconds.
    #[serde(rename = "b", default)]
    pub time_max: i64,
    /// Hashes of the instance ids exceptions named so far (full listing).
    #[serde(rename = "x", default, skip_serializing_if = "BTreeSet::is_empty")]
    pub exceptions: BTreeSet<String>,
    /// Hashes of the series masters met so far (full listing).
    #[serde(rename = "s", default, skip_serializing_if = "BTreeSet::is_empty")]
    pub series: BTreeSet<String>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The decoded cursor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// Google's sync token, once a listing ended with one.
    #[serde(rename = "t", default, skip_serializing_if = "Option::is_none")]
    pub sync_token: Option<String>,
    /// `maxResults` of every listing of this calendar.
    #[serde(rename = "m")]
    pub max_results: u32,
    /// The window end the last full listing covered, Unix seconds.
    #[serde(rename = "h", default)]
    pub horizon: i64,
    /// The window start the last full listing covered, Unix seconds (0 in
    /// cursors from before it was kept: the next sync lists again).
    #[serde(rename = "w", default)]
    pub window_start: i64,
    /// Hashes of the calendar's series masters at the last full listing.
    #[serde(rename = "r", default, skip_serializing_if = "BTreeSet::is_empty")]
    pub series: BTreeSet<String>,
    /// The listing in progress.
    #[serde(rename = "l", default, skip_serializing_if = "Option::is_none")]
    pub listing: Option<Listing>,
}

impl Cursor {
    /// The cursor's string form.
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).expect("a cursor serializes");
        format!("{CURSOR_PREFIX}{}", URL_SAFE_NO_PAD.encode(json))
    }

    /// Reads a cursor; `None` when it is not one of ours.
    pub fn decode(s: &str) -> Option<Cursor> {
        let bytes = URL_SAFE_NO_PAD
            .decode(s.strip_prefix(CURSOR_PREFIX)?)
            .ok()?;
        let c: Cursor = serde_json::from_slice(&bytes).ok()?;
        (c.max_results >= 1 && c.max_results <= GOOGLE_MAX_RESULTS).then_some(c)
    }

    fn start_full(&mut self, window: Window) {
        self.listing = Some(Listing {
            full: true,
            page_token: None,
            offset: 0,
            item_events: 0,
            time_min: window.start.timestamp(),
            time_max: window.end.timestamp(),
            exceptions: BTreeSet::new(),
            series: BTreeSet::new(),
        });
    }
}

/// The parameters of one `events.list` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    /// Incremental: the sync token (then no time bounds are sent).
    pub sync_token: Option<String>,
    /// The page to read.
    pub page_token: Option<String>,
    /// Full listing: `timeMin`.
    pub time_min: Option<DateTime<Utc>>,
    /// Full listing: `timeMax`.
    pub time_max: Option<DateTime<Utc>>,
    /// `maxResults`.
    pub max_results: u32,
}

/// Where event pages come from (Google, or a test's list of pages).
pub trait EventSource {
    /// One page of `events.list`.
    fn page(
        &self,
        q: &ListQuery,
    ) -> impl Future<Output = Result<model::EventsPage, GoogleError>> + Send;
}

/// One SyncEvents request, decoded.
#[derive(Debug, Clone, Copy)]
pub struct SyncRequest<'a> {
    /// The cursor, empty for a listing from scratch.
    pub cursor: &'a str,
    /// The sync window.
    pub window: Window,
    /// The most events wanted (at least 1).
    pub page_size: usize,
    /// Strip content.
    pub busy_only: bool,
}

/// What one item contributes.
enum Step {
    Emit {
        upserted: Vec<pb::Event>,
        deleted: Vec<String>,
        skipped: Option<pb::SkippedItem>,
    },
    /// A series master changed in an incremental listing.
    Restart,
}

impl Step {
    fn empty() -> Step {
        Step::Emit {
            upserted: Vec::new(),
            deleted: Vec::new(),
            skipped: None,
        }
    }
    fn upsert(e: pb::Event) -> Step {
        Step::Emit {
            upserted: vec![e],
            deleted: Vec::new(),
            skipped: None,
        }
    }
    fn delete(id: String) -> Step {
        Step::Emit {
            upserted: Vec::new(),
            deleted: vec![id],
            skipped: None,
        }
    }
    fn skip(id: &str, reason: impl ToString) -> Step {
        tracing::warn!(reason = %reason.to_string(), "skipping an unreadable google item");
        Step::Emit {
            upserted: Vec::new(),
            deleted: Vec::new(),
            skipped: Some(pb::SkippedItem {
                item_id: id.to_string(),
                reason: reason.to_string(),
            }),
        }
    }
}

/// The instance id an exception (or a cancelled instance) stands for.
fn exception_instance_id(g: &model::Event, ctx: &Context) -> Option<String> {
    if let (Some(series), Some(original)) = (
        g.recurring_event_id.as_deref().filter(|s| !s.is_empty()),
        g.original_start_time.as_ref(),
    ) {
        if let Ok(o) = parse_when(original, "originalStartTime", ctx.calendar_zone) {
            return Some(instance_id(series, &o));
        }
    }
    parse_instance_id(g.id()).map(|_| g.id().to_string())
}

fn read_item(value: &Value) -> Result<model::Event, Step> {
    match serde_json::from_value::<model::Event>(value.clone()) {
        Ok(g) if !g.id().is_empty() => Ok(g),
        Ok(_) => Err(Step::skip("", MapError::MissingId)),
        Err(_) => Err(Step::skip(
            value.get("id").and_then(Value::as_str).unwrap_or(""),
            "the item is not a readable event",
        )),
    }
}

fn full_item(value: &Value, listing: &mut Listing, ctx: &Context, window: Window) -> Step {
    let g = match read_item(value) {
        Ok(g) => g,
        Err(step) => return step,
    };
    if g.is_cancelled() {
        // A cancelled exception hides its instance, whether the master
        // came before (remove what it emitted) or comes later (skip it).
        return match exception_instance_id(&g, ctx) {
            Some(iid) => {
                listing.exceptions.insert(id_hash(&iid));
                Step::delete(iid)
            }
            None => Step::empty(),
        };
    }
    if g.is_master() {
        listing.series.insert(id_hash(g.id()));
        let seen = &listing.exceptions;
        return match expand_bounded(&g, ctx, window, &|iid| seen.contains(&id_hash(iid))) {
            Ok((upserted, truncated)) => Step::Emit {
                upserted,
                deleted: Vec::new(),
                // Mirrored up to the bound; reported, not hidden.
                skipped: truncated.then(|| pb::SkippedItem {
                    item_id: g.id().to_string(),
                    reason: format!(
                        "the series has more than {} instances in the sync window; only the earliest are mirrored",
                        calbridge::expansion::MAX_INSTANCES
                    ),
                }),
            },
            Err(e) => Step::skip(g.id(), e),
        };
    }
    let e = match event_from_google(&g, ctx) {
        Ok(e) => e,
        Err(e) => return Step::skip(g.id(), e),
    };
    let inside = event_overlaps(&e, ctx.calendar_zone, window.start, window.end);
    if e.recurrence_link.is_some() {
        listing.exceptions.insert(id_hash(&e.provider_event_id));
        if !inside {
            // Moved out of the window: its master may have named it.
            return Step::delete(e.provider_event_id);
        }
    }
    if inside {
        Step::upsert(e)
    } else {
        Step::empty()
    }
}

fn incremental_item(
    value: &Value,
    series: &BTreeSet<String>,
    ctx: &Context,
    window: Window,
) -> Step {
    let g = match read_item(value) {
        Ok(g) => g,
        Err(step) => return step,
    };
    if g.is_master() || series.contains(&id_hash(g.id())) {
        return Step::Restart;
    }
    if g.is_cancelled() {
        return Step::delete(exception_instance_id(&g, ctx).unwrap_or_else(|| g.id().to_string()));
    }
    match event_from_google(&g, ctx) {
        Ok(e) if event_overlaps(&e, ctx.calendar_zone, window.start, window.end) => Step::upsert(e),
        Ok(e) => Step::delete(e.provider_event_id),
        Err(e) => Step::skip(g.id(), e),
    }
}

fn from_unix(s: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(s, 0).unwrap_or_default()
}

/// Computes one page.
pub async fn sync<S: EventSource>(
    source: &S,
    req: &SyncRequest<'_>,
) -> Result<pb::SyncEventsResponse, GoogleError> {
    let page_size = req.page_size.max(1);
    let mut cursor = if req.cursor.is_empty() {
        Cursor {
            sync_token: None,
            max_results: (page_size as u32).clamp(1, GOOGLE_MAX_RESULTS),
            horizon: 0,
            window_start: 0,
            series: BTreeSet::new(),
            listing: None,
        }
    } else {
        Cursor::decode(req.cursor).ok_or(GoogleError::SyncTokenExpired)?
    };
    if cursor.listing.is_none() {
        let unmoved = req.window.end.timestamp().abs_diff(cursor.horizon) < HORIZON_SLACK_SECONDS
            && req.window.start.timestamp().abs_diff(cursor.window_start) < HORIZON_SLACK_SECONDS;
        if cursor.sync_token.is_some() && unmoved {
            cursor.listing = Some(Listing {
                full: false,
                page_token: None,
                offset: 0,
                item_events: 0,
                time_min: 0,
                time_max: 0,
                exceptions: BTreeSet::new(),
                series: BTreeSet::new(),
            });
        } else {
            cursor.start_full(req.window);
        }
    }

    let mut upserted: Vec<pb::Event> = Vec::new();
    let mut deleted: Vec<String> = Vec::new();
    let mut skipped: Vec<pb::SkippedItem> = Vec::new();
    let mut bytes = 0usize;
    let mut requests = 0;
    'pages: while requests < MAX_REQUESTS_PER_CALL {
        requests += 1;
        let listing = cursor.listing.as_ref().expect("a listing is in progress");
        let query = ListQuery {
            sync_token: if listing.full {
                None
            } else {
                cursor.sync_token.clone()
            },
            page_token: listing.page_token.clone(),
            time_min: listing.full.then(|| from_unix(listing.time_min)),
            time_max: listing.full.then(|| from_unix(listing.time_max)),
            max_results: cursor.max_results,
        };
        let page = source.page(&query).await?;
        let ctx = Context {
            calendar_zone: page.time_zone.as_deref().and_then(|z| z.parse::<Tz>().ok()),
            busy_only: req.busy_only,
        };
        let items = page.items.unwrap_or_default();
        let mut i = listing.offset;
        while i < items.len() {
            let listing = cursor.listing.as_mut().expect("a listing is in progress");
            let step = if listing.full {
                full_item(&items[i], listing, &ctx, req.window)
            } else {
                incremental_item(&items[i], &cursor.series, &ctx, req.window)
            };
            match step {
                Step::Restart => {
                    tracing::debug!("a series changed; listing the calendar again");
                    upserted.clear();
                    deleted.clear();
                    skipped.clear();
                    cursor.start_full(req.window);
                    continue 'pages;
                }
                Step::Emit {
                    upserted: mut u,
                    deleted: d,
                    skipped: s,
                } => {
                    // What earlier pages carried of an item split across
                    // pages (its deletions and report went with its first).
                    let already = listing.item_events;
                    u.drain(..already.min(u.len()));
                    let fit = fitting(&u, page_size - upserted.len(), MAX_PAGE_BYTES - bytes);
                    if fit < u.len() {
                        listing.offset = i;
                        if !upserted.is_empty() {
                            // Whole on the next page, if it fits one.
                            return Ok(answer(&cursor, upserted, deleted, skipped, true));
                        }
                        // More than a page alone: this page takes what
                        // fits (at least one event), the next ones the rest.
                        let fit = fit.max(1);
                        listing.item_events += fit;
                        if already == 0 {
                            deleted.extend(d);
                            skipped.extend(s);
                        }
                        upserted.extend(u.drain(..fit));
                        return Ok(answer(&cursor, upserted, deleted, skipped, true));
                    }
                    listing.item_events = 0;
                    bytes += u.iter().map(approx_size).sum::<usize>();
                    upserted.extend(u);
                    if already == 0 {
                        deleted.extend(d);
                        skipped.extend(s);
                    }
                    i += 1;
                }
            }
        }
        let listing = cursor.listing.as_mut().expect("a listing is in progress");
        match page.next_page_token.filter(|t| !t.is_empty()) {
            Some(next) => {
                listing.page_token = Some(next);
                listing.offset = 0;
                if upserted.len() >= page_size {
                    return Ok(answer(&cursor, upserted, deleted, skipped, true));
                }
            }
            None => {
                let done = cursor.listing.take().expect("a listing is in progress");
                if done.full {
                    cursor.series = done.series;
                    cursor.horizon = done.time_max;
                    cursor.window_start = done.time_min;
                }
                cursor.sync_token = page.next_sync_token.filter(|t| !t.is_empty());
                let mut resp = answer(&cursor, upserted, deleted, skipped, false);
                resp.full_listing = done.full;
                return Ok(resp);
            }
        }
    }
    Ok(answer(&cursor, upserted, deleted, skipped, true))
}

fn answer(
    cursor: &Cursor,
    upserted: Vec<pb::Event>,
    deleted: Vec<String>,
    skipped: Vec<pb::SkippedItem>,
    more: bool,
) -> pb::SyncEventsResponse {
    pb::SyncEventsResponse {
        upserted,
        deleted,
        next_cursor: cursor.encode(),
        more,
        full_listing: cursor.listing.as_ref().is_some_and(|l| l.full),
        skipped,
    }
}

#[cfg(test)]
mod tests;
