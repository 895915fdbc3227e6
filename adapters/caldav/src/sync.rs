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

/// The most events the adapter returns in one page (the scheduler asks for
/// at most its `sync.page_size`, 250 unless configured up to 2500).
pub const MAX_PAGE_SIZE: u32 = 2500;

/// The most hrefs a cursor carries; longer listings take a new PROPFIND
/// after each such chunk (a few hundred KiB of cursor at most).
pub const MAX_CARRIED_HREFS: usize = 5000;

/// The most calendar-multigets one page makes (pages whose resources fall
/// mostly outside the window would otherwise fetch on and on in one call).
const MAX_FETCHES_PER_PAGE: usize = 4;

/// How change detection works for a calendar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// RFC 6578 sync-collection.
    SyncToken,
    /// getctag, full listing on change.
    Ctag,
    /// A listing from scratch whose sync token is taken at the next poll;
    /// the value is the ctag read with the listed members.
    PendingToken,
    /// A listing read whole whose sync token is taken at the next poll;
    /// the value is the digest of its hrefs and etags ([`members_digest`]).
    PendingDigest,
}

/// What a paged answer in progress is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageKind {
    /// A full listing (`full_listing` pages).
    Listing,
    /// The changed members of one sync-collection.
    Changes,
}

/// The rest of a paged answer in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageState {
    /// Listing or changes.
    pub kind: PageKind,
    /// The calendar's zone (floating times), read when the answer began.
    pub zone: Option<Tz>,
    /// Events made by the resources fetched so far.
    pub events: u64,
    /// Resources fetched so far.
    pub resources: u64,
    /// How many events of the first href still to fetch earlier pages
    /// already carried: a resource expanding to more events than fit in
    /// one page is split across pages, at the same place whatever it
    /// expands to (expansion is deterministic).
    pub offset: u64,
    /// Hrefs still to fetch, sorted.
    pub hrefs: Vec<String>,
    /// For a listing longer than the request's `max_carried` hrefs: the last
    /// href
    /// carried; the members after it are listed again when `hrefs` runs out.
    pub after: Option<String>,
}

/// The decoded cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// Change-detection mode.
    pub mode: Mode,
    /// The sync token or ctag.
    pub value: String,
    /// Hashes of hrefs that held a series.
    pub recurring: BTreeSet<String>,
    /// A paged answer in progress.
    pub page: Option<PageState>,
}

impl Cursor {
    /// The cursor's string form.
    pub fn encode(&self) -> String {
        let page = match &self.page {
            None => "-".to_string(),
            Some(p) => format!(
                "{}{};{};{};{};{};{}",
                match p.kind {
                    PageKind::Listing => "L",
                    PageKind::Changes => "I",
                },
                match p.offset {
                    0 => String::new(),
                    n => format!("+{n}"),
                },
                p.zone.map(|z| z.name()).unwrap_or(""),
                p.events,
                p.resources,
                p.after.as_deref().map(escape).unwrap_or_default(),
                front_code(&p.hrefs)
            ),
        };
        format!(
            "v2|{}|{}|{page}|{}",
            match self.mode {
                Mode::SyncToken => "st",
                Mode::Ctag => "ct",
                Mode::PendingToken => "pt",
                Mode::PendingDigest => "pd",
            },
            self.recurring.iter().cloned().collect::<Vec<_>>().join(","),
            self.value
        )
    }

    /// Reads a cursor; `None` when it is not one of ours, or is a listing
    /// in progress of the older `v1` form (which carried no hrefs).
    pub fn decode(s: &str) -> Option<Cursor> {
        let mut parts = s.splitn(5, '|');
        let version = parts.next()?;
        let mode = match parts.next()? {
            "st" => Mode::SyncToken,
            "ct" => Mode::Ctag,
            "pt" if version == "v2" => Mode::PendingToken,
            "pd" if version == "v2" => Mode::PendingDigest,
            _ => return None,
        };
        let (recurring, page) = match version {
            // v1|mode|listing offset or -|recurring|value
            "v1" => {
                if parts.next()? != "-" {
                    return None;
                }
                (parts.next()?, None)
            }
            "v2" => {
                let recurring = parts.next()?;
                let page = match parts.next()? {
                    "-" => None,
                    p => Some(decode_page(p)?),
                };
                (recurring, page)
            }
            _ => return None,
        };
        let recurring = recurring
            .split(',')
            .filter(|h| !h.is_empty())
            .map(str::to_string)
            .collect();
        Some(Cursor {
            mode,
            value: parts.next()?.to_string(),
            recurring,
            page,
        })
    }
}

fn decode_page(p: &str) -> Option<PageState> {
    let mut f = p.splitn(6, ';');
    let first = f.next()?;
    let (kind, offset) = match first.split_once('+') {
        Some((k, n)) => (k, n.parse().ok()?),
        None => (first, 0),
    };
    let kind = match kind {
        "L" => PageKind::Listing,
        "I" => PageKind::Changes,
        _ => return None,
    };
    let zone = match f.next()? {
        "" => None,
        z => Some(z.parse::<Tz>().ok()?),
    };
    let events = f.next()?.parse().ok()?;
    let resources = f.next()?.parse().ok()?;
    let after = match f.next()? {
        "" => None,
        a => Some(unescape(a)?),
    };
    Some(PageState {
        kind,
        zone,
        events,
        resources,
        offset,
        after,
        hrefs: front_decode(f.next()?)?,
    })
}

/// Characters the cursor uses as separators (and the escape itself).
fn needs_escape(c: char) -> bool {
    matches!(c, '^' | '|' | ';' | ',') || c.is_control()
}

/// Escapes separators as `^XX` (hex of the byte); hrefs are otherwise kept
/// verbatim, so requests name them exactly as the server wrote them.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if needs_escape(c) && c.is_ascii() {
            out.push_str(&format!("^{:02X}", c as u8));
        } else if needs_escape(c) {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("^{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn unescape(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'^' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

const DIGITS: &[u8; 62] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// Sorted hrefs as `,`-separated entries, each the lengths of the prefix
/// and of the suffix it shares with the previous href (one base-62 digit
/// each, at most 61) and the rest, escaped.
fn front_code(hrefs: &[String]) -> String {
    let max = DIGITS.len() - 1;
    let mut out = String::new();
    let mut prev = "";
    for (i, h) in hrefs.iter().enumerate() {
        let mut p = prev
            .bytes()
            .zip(h.bytes())
            .take_while(|(a, b)| a == b)
            .count()
            .min(max);
        while !h.is_char_boundary(p) {
            p -= 1;
        }
        let mut s = prev[p..]
            .bytes()
            .rev()
            .zip(h[p..].bytes().rev())
            .take_while(|(a, b)| a == b)
            .count()
            .min(max);
        while !h.is_char_boundary(h.len() - s) {
            s -= 1;
        }
        if i > 0 {
            out.push(',');
        }
        out.push(DIGITS[p] as char);
        out.push(DIGITS[s] as char);
        out.push_str(&escape(&h[p..h.len() - s]));
        prev = h;
    }
    out
}

fn front_decode(s: &str) -> Option<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    if s.is_empty() {
        return Some(out);
    }
    let digit = |b: u8| DIGITS.iter().position(|d| *d == b);
    for entry in s.split(',') {
        let p = digit(*entry.as_bytes().first()?)?;
        let n = digit(*entry.as_bytes().get(1)?)?;
        let prev = out.last().map(String::as_str).unwrap_or("");
        if p + n > prev.len() {
            return None;
        }
        let mut h = prev.get(..p)?.to_string();
        h.push_str(&unescape(entry.get(2..)?)?);
        h.push_str(prev.get(prev.len() - n..)?);
        out.push(h);
    }
    Some(out)
}

/// A short, stable hash of an href (collisions only cost a full listing).
pub fn href_hash(href: &str) -> String {
    let digest = Sha256::digest(crate::client::percent_decode(href).as_bytes());
    hex::encode(&digest[..5])
}

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
mod tests {
    use super::*;

    fn listing_state(hrefs: &[&str]) -> PageState {
        PageState {
            kind: PageKind::Listing,
            zone: Some(Tz::Europe__Berlin),
            events: 12,
            resources: 7,
            offset: 3,
            hrefs: hrefs.iter().map(|h| h.to_string()).collect(),
            after: Some("/c/z;|^,.ics".into()),
        }
    }

    #[test]
    fn cursors_round_trip_with_tokens_and_hrefs_containing_separators() {
        let c = Cursor {
            mode: Mode::SyncToken,
            value: "http://radicale.org/ns/sync/abc|def;x,y".into(),
            recurring: [href_hash("/a.ics"), href_hash("/b.ics")]
                .into_iter()
                .collect(),
            page: Some(listing_state(&[
                "/user/cal/a%40b.ics",
                "/user/cal/a|b.ics",
                "/user/cal/a;b,c^d.ics",
                "/user/cal/é\u{1}ü.ics",
                "https://p1.example.com/user/cal/z.ics",
            ])),
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c.clone()));
        let bare = Cursor {
            mode: Mode::Ctag,
            value: "ae44".into(),
            recurring: BTreeSet::new(),
            page: None,
        };
        assert_eq!(bare.encode(), "v2|ct||-|ae44");
        assert_eq!(Cursor::decode(&bare.encode()), Some(bare));
        let pending = Cursor {
            mode: Mode::PendingToken,
            value: "\"47e4\"".into(),
            recurring: BTreeSet::new(),
            page: Some(PageState {
                kind: PageKind::Changes,
                zone: None,
                events: 0,
                resources: 0,
                offset: 0,
                hrefs: Vec::new(),
                after: None,
            }),
        };
        assert_eq!(Cursor::decode(&pending.encode()), Some(pending));
        let digest = Cursor {
            mode: Mode::PendingDigest,
            value: "0af3".into(),
            recurring: BTreeSet::new(),
            page: None,
        };
        assert_eq!(digest.encode(), "v2|pd||-|0af3");
        assert_eq!(Cursor::decode(&digest.encode()), Some(digest));
        assert_eq!(Cursor::decode("v1|pd|-||0af3"), None);
    }

    #[test]
    fn member_digests_ignore_order_and_href_spelling_but_not_etags() {
        let cal = Url::parse("https://dav.example/user/cal/").unwrap();
        let d = |m: &[(&'static str, &'static str)]| members_digest(&cal, m.iter().copied());
        let listed = d(&[
            ("/user/cal/a%40b.ics", "\"1\""),
            ("/user/cal/c.ics", "\"2\""),
        ]);
        assert_eq!(
            listed,
            d(&[
                ("https://dav.example/user/cal/c.ics", "\"2\""),
                ("/user/cal/a@b.ics", "\"1\"")
            ])
        );
        assert_ne!(
            listed,
            d(&[
                ("/user/cal/a%40b.ics", "\"1\""),
                ("/user/cal/c.ics", "\"3\"")
            ])
        );
        assert_ne!(listed, d(&[("/user/cal/a%40b.ics", "\"1\"")]));
    }

    #[test]
    fn carried_hrefs_share_their_prefixes() {
        let hrefs: Vec<String> = (0..1000)
            .map(|i| format!("/user/cal/bench-{i:04}%40example.com.ics"))
            .collect();
        let coded = front_code(&hrefs);
        assert_eq!(front_decode(&coded).unwrap(), hrefs);
        // The calendar path and the common suffix are written once, not a
        // thousand times.
        assert_eq!(coded.matches("/user/cal/").count(), 1);
        assert_eq!(coded.matches("example.com").count(), 1);
        assert!(coded.len() < hrefs.iter().map(String::len).sum::<usize>() / 4);
        let uuids: Vec<String> = ["0b6f", "0b7a", "c2d1"]
            .iter()
            .map(|u| format!("/1/calendars/home/{u}-9e2c.ics"))
            .collect();
        assert_eq!(front_decode(&front_code(&uuids)).unwrap(), uuids);
        // Shared prefixes longer than one digit can say are cut at 61.
        let long = vec!["x".repeat(100) + "a", "x".repeat(100) + "b"];
        assert_eq!(front_decode(&front_code(&long)).unwrap(), long);
    }

    #[test]
    fn settled_v1_cursors_still_read_and_v1_listings_restart() {
        let c = Cursor::decode("v1|st|-|abc,def|http://radicale.org/ns/sync/1|2").unwrap();
        assert_eq!(c.mode, Mode::SyncToken);
        assert_eq!(c.value, "http://radicale.org/ns/sync/1|2");
        assert_eq!(c.recurring.len(), 2);
        assert_eq!(c.page, None);
        assert_eq!(Cursor::decode("v1|ct|-||ae44").unwrap().mode, Mode::Ctag);
        // A v1 listing in progress carried an offset, not the hrefs.
        assert_eq!(Cursor::decode("v1|st|7||tok"), None);
        assert_eq!(Cursor::decode("v1|pt|-||tok"), None);
    }

    #[test]
    fn foreign_cursors_are_refused() {
        for s in [
            "",
            "garbage",
            "v3|st|-||x",
            "v2|xx||-|x",
            "v2|st||X;;0;0;;|x",
            "v2|st||L;Mars/Base;0;0;;|x",
            "v2|st||L;;n;0;;|x",
            "v2|st||L;;0;0;;!0a|x",
            "v2|st||L;;0;0;;00a,55b|x",
            "v2|st||L;;0;0;^G1;|x",
            "v2|st||-",
        ] {
            assert_eq!(Cursor::decode(s), None, "{s}");
        }
    }

    #[test]
    fn long_listings_are_carried_in_chunks() {
        let mut hrefs: Vec<String> = (0..MAX_CARRIED_HREFS + 3)
            .map(|i| format!("/c/{i:06}.ics"))
            .collect();
        let after = carry(&mut hrefs, MAX_CARRIED_HREFS);
        assert_eq!(hrefs.len(), MAX_CARRIED_HREFS);
        assert_eq!(after.as_deref(), hrefs.last().map(String::as_str));
        let mut short = vec!["/c/a.ics".to_string()];
        assert_eq!(carry(&mut short, MAX_CARRIED_HREFS), None);
        let mut two = vec!["/c/a.ics".to_string(), "/c/b.ics".to_string()];
        assert_eq!(carry(&mut two, 0).as_deref(), Some("/c/a.ics"));
    }

    #[test]
    fn href_hashes_ignore_percent_encoding() {
        assert_eq!(href_hash("/c/a%20b.ics"), href_hash("/c/a b.ics"));
        assert_ne!(href_hash("/c/a.ics"), href_hash("/c/b.ics"));
    }
}
