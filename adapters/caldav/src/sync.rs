//! SyncEvents for a stateless adapter: what the opaque cursor carries and
//! how a page is computed.
//!
//! Cursor: `v2|<mode>|<recurring>|<page>|<value>`.
//! - `<mode>` `st` holds an RFC 6578 sync token; `ct` a getctag (servers
//!   without sync-collection); `pt` ("pending token") the getctag read with
//!   the members of a listing from scratch, on a server whose sync token is
//!   not taken yet (see below); `pd` ("pending, digest") instead a digest
//!   of the hrefs and etags a listing read whole.
//! - `<recurring>` lists short hashes of the hrefs that held a series at the
//!   last listing, so a change or removal of one (whose instance ids cannot
//!   be derived from its href alone) is answered with a full listing the
//!   scheduler diffs against its mirror.
//!   The same list carries, as an entry `@<start>~<end>` (UTC seconds),
//!   the sync window the last full listing covered. The scheduler slides
//!   the window with the clock, and a delta only names changed resources,
//!   so instances of an unchanged series entering the window would never
//!   be reported: when either edge of the requested window is a day or
//!   more ([`WINDOW_SLACK_SECONDS`]) from the covered one, the next sync is
//!   a full listing of the requested window (`full_listing` pages) instead
//!   of the delta, and changes continue incrementally after it. Cursors
//!   written before the window was kept carry none and are listed again
//!   once; an adapter that predates it reads the entry as one more hash.
//! - `<page>` is `-`, or the rest of a paged answer in progress: its kind
//!   (`L` a full listing, `I` the changes of one sync-collection), the
//!   calendar's zone, how many events the resources fetched so far made (to
//!   size the next calendar-multiget), the hrefs still to fetch (sorted,
//!   front-coded) and, for listings too long to carry at once, the last href
//!   carried (the listing resumes after it from a new PROPFIND).
//! - `<value>`, last because it may hold any character, is the sync token or
//!   ctag, verbatim (tokens stay opaque).
//!
//! Requests. Within a stream of pages (StreamSyncEvents, what the scheduler
//! uses) a full listing costs two requests: one PROPFIND (depth 0) for the
//! ctag and the zone, then one calendar-query REPORT that returns every
//! object with its data ([`ReadAhead`]); the stream's later pages are served
//! from those objects, while each page's cursor still carries the hrefs left
//! so it stays valid on its own. A single SyncEvents call, which cannot keep
//! objects for the next call, lists with one PROPFIND (depth 1: etags, the
//! ctag and the zone) and then calendar-multigets of at most
//! [`crate::account::MULTIGET_BATCH`] hrefs (50 on iCloud, see
//! [`crate::account::multiget_batch_for`]), as many as the page needs:
//! every later page of the listing is only multigets, since the cursor
//! carries the hrefs (this is also how a stream lists when the server
//! refuses or fails the calendar-query). Changes cost one sync-collection, one PROPFIND (depth
//! 0) for the zone and multigets of the changed hrefs, paged the same way.
//! Idle polls cost one request: a sync-collection with an unchanged token,
//! or one PROPFIND (depth 0) for the ctag.
//!
//! The sync token of a listing from scratch is taken at the first poll after
//! it (`pt`): one PROPFIND (depth 0) reads the ctag and the current token
//! together; an unchanged ctag proves the token describes the state listed,
//! so it is kept and nothing is fetched; a changed one starts a listing
//! whose baseline is that token. Taking the first token can be costly
//! (Radicale builds a history entry for every member of a collection that
//! never served one, seconds for a few thousand), so it stays out of the
//! initial sync. Servers that report no ctag take the token before their
//! listing instead, from the sync-collection that lists the members.
//!
//! A listing read whole (one calendar-query, in a stream) on a server with
//! sync-collection needs no ctag at all: it knows every href and etag it
//! listed, and keeps their digest (`pd`). The first poll after it is one
//! sync-collection from scratch, which takes the token and lists every
//! member with its etag; the same digest proves the token describes the
//! state listed (nothing is fetched), another one starts a listing whose
//! baseline is that token. This spares the listing the ctag, which servers
//! such as Radicale compute over every member. (Members holding no event,
//! which the query leaves out, make the digests differ: such a calendar is
//! listed once more.)

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ops::Bound;

use chrono_tz::Tz;
use reqwest::Url;
use sha2::{Digest, Sha256};

use calbridge::pb;

use crate::account::{Account, Ask, Fetched};
use crate::error::DavError;
use calbridge::paging::{approx_size, fitting, MAX_PAGE_BYTES};

use crate::mapping::bounds::{MAX_STEPS, PAGE_STEPS};
use crate::mapping::{parse_object, IcalError};
use crate::recurrence::{expand_bounded, expansion_permit, Expansion, Window};

mod cursor;
pub use cursor::{href_hash, Covered, Cursor, Mode, PageKind, PageState, WINDOW_SLACK_SECONDS};

/// The most events the adapter returns in one page (the scheduler asks for
/// at most its `sync.page_size`, 250 unless configured up to 2500).
pub const MAX_PAGE_SIZE: u32 = 2500;

/// The most hrefs a cursor carries; longer listings take a new PROPFIND
/// after each such chunk (a few hundred KiB of cursor at most).
pub const MAX_CARRIED_HREFS: usize = 5000;

/// The most calendar-multigets one page makes (pages whose resources fall
/// mostly outside the window would otherwise fetch on and on in one call).
const MAX_FETCHES_PER_PAGE: usize = 4;

/// What the pages of one stream share: a listing's objects, read by one
/// calendar-query and served to the pages that follow.
#[derive(Debug, Default)]
pub struct ReadAhead {
    /// Listings read every object at once (streams); otherwise they list
    /// hrefs and fetch per page (single calls, which keep nothing).
    enabled: bool,
    /// The objects of the listing in progress not served yet, by href.
    objects: Option<BTreeMap<String, Fetched>>,
}

impl ReadAhead {
    /// For the pages of one stream: listings read every object at once.
    pub fn for_stream() -> Self {
        ReadAhead {
            enabled: true,
            objects: None,
        }
    }

    /// For one page alone: listings fetch per page.
    pub fn none() -> Self {
        ReadAhead::default()
    }

    /// How many objects are held for later pages.
    pub fn held(&self) -> usize {
        self.objects.as_ref().map_or(0, BTreeMap::len)
    }
}

/// One SyncEvents request, decoded.
pub struct SyncRequest<'a> {
    /// The calendar href.
    pub calendar_id: &'a str,
    /// The cursor, empty for a listing from scratch.
    pub cursor: &'a str,
    /// The sync window.
    pub window: Window,
    /// The most events wanted (already clamped to 1..=MAX_PAGE_SIZE).
    pub page_size: usize,
    /// Strip content.
    pub busy_only: bool,
    /// The most hrefs a cursor carries ([`MAX_CARRIED_HREFS`]; tests use
    /// fewer).
    pub max_carried: usize,
}

/// What the cursor of a full listing ends with.
enum Baseline {
    /// A listing from scratch: the snapshot's ctag, the token taken at the
    /// next poll (or now, from sync-collection, when there is no ctag).
    Fresh,
    /// A sync token read before the listing began.
    Token(String),
    /// The snapshot's ctag (no sync-collection).
    Ctag,
}

/// Computes one page; `ahead` carries what earlier pages of the same
/// stream read.
pub async fn sync(
    account: &Account,
    req: &SyncRequest<'_>,
    ahead: &mut ReadAhead,
) -> Result<pb::SyncEventsResponse, DavError> {
    let calendar = account.url("calendar_id", req.calendar_id)?;
    if req.cursor.is_empty() {
        return listing(account, &calendar, req, Baseline::Fresh, ahead).await;
    }
    let cursor = Cursor::decode(req.cursor).ok_or(DavError::SyncTokenExpired)?;
    if cursor.page.is_some() {
        return pages(account, &calendar, req, cursor, Vec::new(), ahead).await;
    }
    if Covered::moved(cursor.window, req.window) {
        return relist(account, &calendar, req, &cursor, ahead).await;
    }
    match cursor.mode {
        Mode::Ctag => {
            let ctag = account.calendar_props(&calendar, Ask::CTAG).await?.ctag;
            if ctag.as_deref() == Some(cursor.value.as_str()) {
                return Ok(unchanged(&cursor));
            }
            listing(account, &calendar, req, Baseline::Ctag, ahead).await
        }
        Mode::PendingToken => {
            let ask = Ask::CTAG | Ask::TOKEN | Ask::REPORTS;
            let probe = account.calendar_props(&calendar, ask).await?;
            let same = probe.ctag.as_deref() == Some(cursor.value.as_str());
            match probe.token.filter(|_| probe.supports_sync) {
                Some(token) if same => Ok(unchanged(&Cursor {
                    mode: Mode::SyncToken,
                    value: token,
                    ..cursor
                })),
                Some(token) => {
                    listing(account, &calendar, req, Baseline::Token(token), ahead).await
                }
                // No usable sync-collection after all: ctag mode.
                None if same => Ok(unchanged(&Cursor {
                    mode: Mode::Ctag,
                    ..cursor
                })),
                None => listing(account, &calendar, req, Baseline::Ctag, ahead).await,
            }
        }
        Mode::PendingDigest => {
            let delta = match account.sync_collection(&calendar, "").await {
                Ok(delta) => delta,
                // The server lists no sync-collection after all: ctag mode.
                Err(DavError::Forbidden(_) | DavError::Protocol(_)) => {
                    return listing(account, &calendar, req, Baseline::Ctag, ahead).await
                }
                Err(e) => return Err(e),
            };
            let digest = members_digest(
                &calendar,
                delta
                    .changed
                    .iter()
                    .map(|m| (m.href.as_str(), m.etag.as_str())),
            );
            if digest == cursor.value {
                return Ok(unchanged(&Cursor {
                    mode: Mode::SyncToken,
                    value: delta.token,
                    ..cursor
                }));
            }
            listing(account, &calendar, req, Baseline::Token(delta.token), ahead).await
        }
        Mode::SyncToken => changes(account, &calendar, req, cursor, ahead).await,
    }
}

/// A full listing of the requested window in place of the delta, when the
/// window moved away from the one the cursor's listing covered: instances
/// of unchanged series that entered the window are only found by listing.
/// Its baseline is what the cursor's mode can vouch for: a sync token taken
/// now (from the cursor's, so an expired one is OUT_OF_RANGE as always),
/// the ctag, or for a cursor still pending its token a listing from
/// scratch.
async fn relist(
    account: &Account,
    calendar: &Url,
    req: &SyncRequest<'_>,
    cursor: &Cursor,
    ahead: &mut ReadAhead,
) -> Result<pb::SyncEventsResponse, DavError> {
    tracing::debug!("sync window moved; listing it again");
    let baseline = match cursor.mode {
        Mode::SyncToken => Baseline::Token(
            account
                .sync_collection(calendar, &cursor.value)
                .await?
                .token,
        ),
        Mode::Ctag => Baseline::Ctag,
        Mode::PendingToken | Mode::PendingDigest => Baseline::Fresh,
    };
    listing(account, calendar, req, baseline, ahead).await
}

/// A digest of a calendar's members as (href, etag) pairs, whatever their
/// order and however the server spelled the hrefs (resolved against the
/// calendar, percent-decoded).
pub fn members_digest<'a>(
    calendar: &Url,
    members: impl Iterator<Item = (&'a str, &'a str)>,
) -> String {
    let mut entries: Vec<(String, &str)> = members
        .map(|(href, etag)| {
            let path = calendar
                .join(href)
                .map(|u| crate::client::percent_decode(u.path()))
                .unwrap_or_else(|_| crate::client::percent_decode(href));
            (path, etag)
        })
        .collect();
    entries.sort();
    let mut hash = Sha256::new();
    for (path, etag) in &entries {
        hash.update(path.as_bytes());
        hash.update(b"\n");
        hash.update(etag.as_bytes());
        hash.update(b"\n");
    }
    hex::encode(&hash.finalize()[..16])
}

fn unchanged(cursor: &Cursor) -> pb::SyncEventsResponse {
    pb::SyncEventsResponse {
        next_cursor: cursor.encode(),
        ..Default::default()
    }
}

/// One sync-collection from the cursor's token: nothing (one request), the
/// changes paged like a listing, or a full listing when a series is
/// touched or too much changed to carry.
async fn changes(
    account: &Account,
    calendar: &Url,
    req: &SyncRequest<'_>,
    cursor: Cursor,
    ahead: &mut ReadAhead,
) -> Result<pb::SyncEventsResponse, DavError> {
    let delta = account.sync_collection(calendar, &cursor.value).await?;
    if delta.changed.is_empty() && delta.removed.is_empty() {
        return Ok(unchanged(&Cursor {
            value: delta.token,
            ..cursor
        }));
    }
    let touches_series = delta
        .removed
        .iter()
        .chain(delta.changed.iter().map(|m| &m.href))
        .any(|h| cursor.recurring.contains(&href_hash(h)));
    if touches_series || delta.changed.len() > req.max_carried {
        return listing(account, calendar, req, Baseline::Token(delta.token), ahead).await;
    }
    let zone = if delta.changed.is_empty() {
        None
    } else {
        account.zone(calendar).await?
    };
    let mut hrefs: Vec<String> = delta.changed.into_iter().map(|m| m.href).collect();
    hrefs.sort();
    hrefs.dedup();
    let next = Cursor {
        value: delta.token,
        page: Some(PageState {
            kind: PageKind::Changes,
            zone,
            events: 0,
            resources: 0,
            offset: 0,
            hrefs,
            after: None,
        }),
        ..cursor
    };
    pages(account, calendar, req, next, delta.removed, ahead).await
}

/// The first page of a full listing: the members (read whole by one
/// calendar-query in a stream, else one PROPFIND snapshot), then their
/// objects in href order.
async fn listing(
    account: &Account,
    calendar: &Url,
    req: &SyncRequest<'_>,
    baseline: Baseline,
    ahead: &mut ReadAhead,
) -> Result<pb::SyncEventsResponse, DavError> {
    ahead.objects = None;
    let read = if ahead.enabled {
        read_whole(account, calendar, &baseline).await?
    } else {
        None
    };
    let (mode, value, zone, mut hrefs) = match read {
        Some(whole) => {
            let hrefs: Vec<String> = whole.objects.keys().cloned().collect();
            ahead.objects = Some(whole.objects);
            (whole.mode, whole.value, whole.zone, hrefs)
        }
        None => {
            let snap = account.snapshot(calendar).await?;
            let (mode, value, members) = match baseline {
                Baseline::Token(token) => (Mode::SyncToken, token, snap.members),
                Baseline::Ctag => (Mode::Ctag, snap.ctag.unwrap_or_default(), snap.members),
                Baseline::Fresh => match snap.ctag {
                    Some(ctag) => (Mode::PendingToken, ctag, snap.members),
                    None if account
                        .calendar_props(calendar, Ask::REPORTS)
                        .await?
                        .supports_sync =>
                    {
                        // Without a ctag the token cannot be checked later:
                        // take it now, with the members it describes.
                        let delta = account.sync_collection(calendar, "").await?;
                        (Mode::SyncToken, delta.token, delta.changed)
                    }
                    None => (Mode::Ctag, String::new(), snap.members),
                },
            };
            let mut hrefs: Vec<String> = members.into_iter().map(|m| m.href).collect();
            hrefs.sort();
            hrefs.dedup();
            (mode, value, snap.zone, hrefs)
        }
    };
    let after = carry(&mut hrefs, req.max_carried);
    let cursor = Cursor {
        mode,
        value,
        recurring: BTreeSet::new(),
        window: Some(Covered::of(req.window)),
        page: Some(PageState {
            kind: PageKind::Listing,
            zone,
            events: 0,
            resources: 0,
            offset: 0,
            hrefs,
            after,
        }),
    };
    match page(account, calendar, req, cursor, Vec::new(), ahead).await? {
        Page::Done(resp) => Ok(resp),
        // Only pages of changes turn into listings.
        Page::SeriesChanged(_) => Err(DavError::Protocol("a listing changed its kind".into())),
    }
}

/// A listing read whole: its baseline, the calendar's zone and every
/// object by href.
struct Whole {
    mode: Mode,
    value: String,
    zone: Option<Tz>,
    objects: BTreeMap<String, Fetched>,
}

/// Reads a listing whole: one PROPFIND (depth 0) for the zone (with, for
/// a listing from scratch, whether the server has sync-collection), and for
/// a ctag baseline the ctag (which must not be newer than the objects, so
/// it comes first), then one calendar-query. A listing from scratch on a
/// server with sync-collection keeps the digest of what it read (`pd`);
/// without, the ctag (read by one more PROPFIND before the query). `None`
/// when the listing must go the PROPFIND way: the server refused or failed
/// the query.
async fn read_whole(
    account: &Account,
    calendar: &Url,
    baseline: &Baseline,
) -> Result<Option<Whole>, DavError> {
    let (mode, value, zone) = match baseline {
        Baseline::Token(token) => (
            Mode::SyncToken,
            token.clone(),
            account.zone(calendar).await?,
        ),
        Baseline::Ctag => {
            let p = account
                .calendar_props(calendar, Ask::CTAG | Ask::ZONE)
                .await?;
            (Mode::Ctag, p.ctag.unwrap_or_default(), p.zone)
        }
        Baseline::Fresh => {
            let p = account
                .calendar_props(calendar, Ask::ZONE | Ask::REPORTS)
                .await?;
            if p.supports_sync {
                // The digest is known once the objects are.
                (Mode::PendingDigest, String::new(), p.zone)
            } else {
                let ctag = account.calendar_props(calendar, Ask::CTAG).await?.ctag;
                (Mode::Ctag, ctag.unwrap_or_default(), p.zone)
            }
        }
    };
    let objects = match account.query_all(calendar).await {
        Ok(Some(objects)) => objects,
        Ok(None) => return Ok(None),
        Err(DavError::Unavailable(e)) => {
            tracing::info!(error = %e, "calendar-query failed; listing by PROPFIND");
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let objects: BTreeMap<String, Fetched> =
        objects.into_iter().map(|f| (f.href.clone(), f)).collect();
    let value = match mode {
        Mode::PendingDigest => members_digest(
            calendar,
            objects.values().map(|f| (f.href.as_str(), f.etag.as_str())),
        ),
        _ => value,
    };
    Ok(Some(Whole {
        mode,
        value,
        zone,
        objects,
    }))
}

/// Keeps at most `max` of sorted hrefs (at least one); the last kept when
/// some were dropped.
fn carry(hrefs: &mut Vec<String>, max: usize) -> Option<String> {
    let max = max.max(1);
    if hrefs.len() <= max {
        return None;
    }
    hrefs.truncate(max);
    hrefs.last().cloned()
}

/// One page of the answer in progress in `cursor` (a listing or changes),
/// with `deleted` reported in it. A changed resource that turns out to be a
/// series turns the answer into a full listing.
async fn pages(
    account: &Account,
    calendar: &Url,
    req: &SyncRequest<'_>,
    cursor: Cursor,
    deleted: Vec<String>,
    ahead: &mut ReadAhead,
) -> Result<pb::SyncEventsResponse, DavError> {
    match page(account, calendar, req, cursor, deleted, ahead).await? {
        Page::Done(resp) => Ok(resp),
        Page::SeriesChanged(token) => {
            listing(account, calendar, req, Baseline::Token(token), ahead).await
        }
    }
}

enum Page {
    Done(pb::SyncEventsResponse),
    /// A changed resource holds a series: list everything (the token is
    /// the one the changes came with).
    SeriesChanged(String),
}

async fn page(
    account: &Account,
    calendar: &Url,
    req: &SyncRequest<'_>,
    mut cursor: Cursor,
    mut deleted: Vec<String>,
    ahead: &mut ReadAhead,
) -> Result<Page, DavError> {
    let mut st = cursor.page.take().ok_or(DavError::SyncTokenExpired)?;
    let full = st.kind == PageKind::Listing;
    let mut queue: VecDeque<String> = std::mem::take(&mut st.hrefs).into();
    let mut upserted: Vec<pb::Event> = Vec::new();
    let mut skipped = Vec::new();
    let mut bytes = 0usize;
    let mut fetches = 0;
    // Parsing and expansion work done for this page, in steps, and the
    // resources it finished.
    let mut spent = 0usize;
    let mut consumed = 0usize;
    'page: while fetches < MAX_FETCHES_PER_PAGE && (spent < PAGE_STEPS || consumed == 0) {
        if queue.is_empty() {
            let Some(after) = st.after.take() else {
                break;
            };
            // The next chunk of a long listing.
            let mut hrefs: Vec<String> = match &ahead.objects {
                Some(objects) => objects
                    .range::<str, _>((Bound::Excluded(after.as_str()), Bound::Unbounded))
                    .map(|(h, _)| h.clone())
                    .collect(),
                None => {
                    fetches += 1;
                    account
                        .snapshot(calendar)
                        .await?
                        .members
                        .into_iter()
                        .map(|m| m.href)
                        .filter(|h| *h > after)
                        .collect()
                }
            };
            hrefs.sort();
            hrefs.dedup();
            st.after = carry(&mut hrefs, req.max_carried);
            queue = hrefs.into();
            continue;
        }
        let room = req.page_size.saturating_sub(upserted.len());
        // Not worth a request for a sliver of a page.
        if room == 0 || (!upserted.is_empty() && room * 4 < req.page_size) {
            break;
        }
        let per_resource = if st.resources == 0 {
            1.0
        } else {
            (st.events as f64 / st.resources as f64).max(0.05)
        };
        let most = match ahead.objects {
            Some(_) => usize::MAX,
            None => account.multiget_batch(),
        };
        let n = ((room as f64 / per_resource).ceil() as usize)
            .clamp(1, most)
            .min(queue.len());
        let batch: Vec<String> = queue.iter().take(n).cloned().collect();
        let fetched = match &ahead.objects {
            // Read ahead: an href missing here left the listing, as if gone.
            Some(objects) => batch
                .iter()
                .filter_map(|h| objects.get(h).cloned())
                .collect(),
            None => {
                fetches += 1;
                account.multiget(calendar, &batch).await?
            }
        };
        // Parsing and expansion are CPU work (bounded per resource, see
        // `crate::recurrence`): off the async workers.
        let (zone, window, busy_only) = (st.zone, req.window, req.busy_only);
        let _cpu = expansion_permit().await;
        // The first resource of a page is always read, so every page
        // makes progress.
        let first = consumed == 0;
        let budget_spent = spent;
        let (mut read, now_spent) = tokio::task::spawn_blocking(move || {
            let mut spent = budget_spent;
            let read = fetched
                .into_iter()
                .enumerate()
                .map(|(i, f)| {
                    if spent >= PAGE_STEPS && !(first && i == 0) {
                        return (f.href, Read::Deferred);
                    }
                    let r = resource(&f, zone, window, busy_only);
                    spent += f.data.len() / 256
                        + match &r {
                            Ok((x, _)) => x.steps,
                            Err(IcalError::TooCostly(_)) => MAX_STEPS,
                            Err(_) => 1,
                        };
                    (f.href, Read::Done(r))
                })
                .collect::<HashMap<String, _>>();
            (read, spent)
        })
        .await
        .map_err(|_| DavError::Protocol("reading the calendar objects failed".into()))?;
        spent = now_spent;
        drop(_cpu);
        for href in &batch {
            let (mut events, broken) = match read.remove(href.as_str()) {
                // Gone since it was listed.
                None => (Vec::new(), None),
                // The page's work budget is spent: the next page goes on.
                Some(Read::Deferred) => break 'page,
                Some(Read::Done(Ok((expansion, recurring)))) => {
                    if recurring {
                        if !full {
                            return Ok(Page::SeriesChanged(cursor.value));
                        }
                        cursor.recurring.insert(href_hash(href));
                    }
                    let note = expansion
                        .truncated_after
                        .filter(|_| st.offset == 0)
                        .map(|w| truncated_item(href, &w));
                    (expansion.events, note)
                }
                Some(Read::Done(Err(e))) => {
                    tracing::warn!(error = %e, "skipping an unreadable calendar object");
                    (Vec::new(), Some(skipped_item(href, &e)))
                }
            };
            // What earlier pages carried of a resource split across pages.
            let already = usize::try_from(st.offset).unwrap_or(usize::MAX);
            events.drain(..already.min(events.len()));
            let fit = fitting(
                &events,
                req.page_size - upserted.len(),
                MAX_PAGE_BYTES - bytes,
            );
            if fit < events.len() {
                if !upserted.is_empty() {
                    // Whole on the next page, if it fits one.
                    break 'page;
                }
                // More than a page alone: this page takes what fits (at
                // least one event), the next ones the rest.
                let fit = fit.max(1);
                st.offset += fit as u64;
                st.events += fit as u64;
                skipped.extend(broken);
                upserted.extend(events.drain(..fit));
                break 'page;
            }
            st.offset = 0;
            queue.pop_front();
            consumed += 1;
            if let Some(objects) = ahead.objects.as_mut() {
                objects.remove(href);
            }
            st.resources += 1;
            st.events += events.len() as u64;
            bytes += events.iter().map(approx_size).sum::<usize>();
            match broken {
                Some(item) => skipped.push(item),
                // A changed resource with nothing in the window (or gone)
                // leaves the mirror.
                None if !full && events.is_empty() && already == 0 => deleted.push(href.clone()),
                None => {}
            }
            upserted.extend(events);
        }
    }
    let more = !queue.is_empty() || st.after.is_some();
    if more {
        st.hrefs = queue.into();
        cursor.page = Some(st);
    } else {
        ahead.objects = None;
    }
    Ok(Page::Done(pb::SyncEventsResponse {
        upserted,
        deleted,
        next_cursor: cursor.encode(),
        more,
        full_listing: full,
        skipped,
    }))
}

/// A skipped item for the sync status: its href and the reason (which never
/// quotes content).
fn skipped_item(href: &str, e: &IcalError) -> pb::SkippedItem {
    pb::SkippedItem {
        item_id: href.to_string(),
        reason: e.to_string(),
    }
}

/// The events of one fetched resource in the window, and whether it holds
/// a series.
fn resource(
    f: &Fetched,
    zone: Option<Tz>,
    window: Window,
    busy_only: bool,
) -> Result<(Expansion, bool), IcalError> {
    if f.oversize {
        return Err(IcalError::TooLarge(
            "larger than the adapter reads in one answer".into(),
        ));
    }
    let obj = parse_object(&f.data, zone)?;
    let expansion = expand_bounded(&obj, &f.href, &f.etag, window, busy_only)?;
    Ok((expansion, obj.is_recurring()))
}

/// A resource of a page's batch: read, or left for the next page once the
/// page's work budget ([`PAGE_STEPS`]) was spent.
enum Read {
    Done(Result<(Expansion, bool), IcalError>),
    Deferred,
}

/// The skipped-item report of a series cut at
/// [`crate::mapping::bounds::MAX_INSTANCES`]: its instances up to `last`
/// are mirrored, the later ones are not.
fn truncated_item(href: &str, last: &crate::mapping::When) -> pb::SkippedItem {
    pb::SkippedItem {
        item_id: href.to_string(),
        reason: format!(
            "the series has more than {} instances in the sync window; instances after {} are not mirrored",
            crate::mapping::bounds::MAX_INSTANCES,
            last.id_suffix()
        ),
    }
}

#[cfg(test)]
mod tests;
