//! SyncEvents for a stateless adapter: what the opaque cursor carries and
//! how a page is computed.
//!
//! Cursor (`v1|<mode>|<listing offset or ->|<recurring>|<value>`): mode `st`
//! holds an RFC 6578 sync token, mode `ct` a getctag (servers without
//! sync-collection). `<recurring>` lists short hashes of the hrefs that held
//! a series at the last sync, so a change or removal of one (whose instance
//! ids cannot be derived from its href alone) is answered with a full
//! listing the scheduler diffs against its mirror. A listing offset marks a
//! full listing in progress (pages in href order).
//!
//! Idle polls cost one request: a sync-collection with an unchanged token,
//! or one PROPFIND (depth 0) for the ctag.

use std::collections::BTreeSet;

use reqwest::Url;
use sha2::{Digest, Sha256};

use calbridge::pb;

use crate::account::{Account, Fetched};
use crate::error::DavError;
use crate::mapping::parse_object;
use crate::recurrence::{expand, Window};

/// The most events the adapter returns in one page.
pub const MAX_PAGE_SIZE: u32 = 500;

/// How change detection works for a calendar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// RFC 6578 sync-collection.
    SyncToken,
    /// getctag, full listing on change.
    Ctag,
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
    /// The next href offset of a full listing in progress.
    pub listing_offset: Option<usize>,
}

impl Cursor {
    /// The cursor's string form.
    pub fn encode(&self) -> String {
        format!(
            "v1|{}|{}|{}|{}",
            match self.mode {
                Mode::SyncToken => "st",
                Mode::Ctag => "ct",
            },
            self.listing_offset
                .map(|o| o.to_string())
                .unwrap_or_else(|| "-".into()),
            self.recurring.iter().cloned().collect::<Vec<_>>().join(","),
            self.value
        )
    }

    /// Reads a cursor; `None` when it is not one of ours.
    pub fn decode(s: &str) -> Option<Cursor> {
        let mut parts = s.splitn(5, '|');
        if parts.next()? != "v1" {
            return None;
        }
        let mode = match parts.next()? {
            "st" => Mode::SyncToken,
            "ct" => Mode::Ctag,
            _ => return None,
        };
        let listing_offset = match parts.next()? {
            "-" => None,
            n => Some(n.parse().ok()?),
        };
        let recurring = parts
            .next()?
            .split(',')
            .filter(|h| !h.is_empty())
            .map(str::to_string)
            .collect();
        Some(Cursor {
            mode,
            value: parts.next()?.to_string(),
            recurring,
            listing_offset,
        })
    }
}

/// A short, stable hash of an href (collisions only cost a full listing).
pub fn href_hash(href: &str) -> String {
    let digest = Sha256::digest(crate::client::percent_decode(href).as_bytes());
    hex::encode(&digest[..5])
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
}

/// Computes one page.
pub async fn sync(
    account: &Account,
    req: &SyncRequest<'_>,
) -> Result<pb::SyncEventsResponse, DavError> {
    let calendar = account.url(req.calendar_id)?;
    if req.cursor.is_empty() {
        return listing(account, &calendar, req, None).await;
    }
    let cursor = Cursor::decode(req.cursor).ok_or(DavError::SyncTokenExpired)?;
    if cursor.listing_offset.is_some() {
        return listing(account, &calendar, req, Some(cursor)).await;
    }
    match cursor.mode {
        Mode::Ctag => {
            let ctag = account.ctag(&calendar).await?;
            if ctag.as_deref() == Some(cursor.value.as_str()) {
                return Ok(unchanged(&cursor));
            }
            listing(account, &calendar, req, None).await
        }
        Mode::SyncToken => {
            let delta = account.sync_collection(&calendar, &cursor.value).await?;
            let mut next = cursor.clone();
            next.value = delta.token.clone();
            if delta.changed.is_empty() && delta.removed.is_empty() {
                return Ok(unchanged(&next));
            }
            let touches_series = delta
                .removed
                .iter()
                .chain(delta.changed.iter().map(|m| &m.href))
                .any(|h| cursor.recurring.contains(&href_hash(h)));
            if touches_series || delta.changed.len() > req.page_size {
                return listing(account, &calendar, req, None).await;
            }
            let zone = if delta.changed.is_empty() {
                None
            } else {
                account.calendar_state(&calendar).await?.zone
            };
            let hrefs: Vec<String> = delta.changed.iter().map(|m| m.href.clone()).collect();
            let fetched = account.multiget(&calendar, &hrefs).await?;
            let mut upserted = Vec::new();
            let mut deleted = delta.removed.clone();
            let mut skipped = Vec::new();
            for f in &fetched {
                let obj = match parse_object(&f.data, zone) {
                    Ok(o) => o,
                    Err(e) => {
                        tracing::warn!(error = %e, "skipping an unreadable calendar object");
                        skipped.push(skipped_item(&f.href, &e));
                        continue;
                    }
                };
                if obj.is_recurring() {
                    // A single event became a series: its old id must go
                    // and the instances appear; a listing says both.
                    return listing(account, &calendar, req, None).await;
                }
                match expand(&obj, &f.href, &f.etag, req.window, req.busy_only) {
                    Ok(events) if events.is_empty() => deleted.push(f.href.clone()),
                    Ok(events) => upserted.extend(events),
                    Err(e) => {
                        tracing::warn!(error = %e, "skipping an unreadable calendar object");
                        skipped.push(skipped_item(&f.href, &e));
                    }
                }
            }
            Ok(pb::SyncEventsResponse {
                upserted,
                deleted,
                next_cursor: next.encode(),
                more: false,
                full_listing: false,
                skipped,
            })
        }
    }
}

fn unchanged(cursor: &Cursor) -> pb::SyncEventsResponse {
    pb::SyncEventsResponse {
        next_cursor: cursor.encode(),
        ..Default::default()
    }
}

/// One page of a full listing: every event of the window, from href offset
/// `resume.listing_offset` on. The first page fixes the cursor the listing
/// ends with (later changes are then reported incrementally).
async fn listing(
    account: &Account,
    calendar: &Url,
    req: &SyncRequest<'_>,
    resume: Option<Cursor>,
) -> Result<pb::SyncEventsResponse, DavError> {
    let state = account.calendar_state(calendar).await?;
    let (mut members, mut cursor) = if state.supports_sync {
        let delta = account.sync_collection(calendar, "").await?;
        (
            delta.changed,
            Cursor {
                mode: Mode::SyncToken,
                value: delta.token,
                recurring: BTreeSet::new(),
                listing_offset: None,
            },
        )
    } else {
        (
            account.members(calendar).await?,
            Cursor {
                mode: Mode::Ctag,
                value: state.ctag.clone().unwrap_or_default(),
                recurring: BTreeSet::new(),
                listing_offset: None,
            },
        )
    };
    let offset = match resume {
        Some(c) => {
            let o = c.listing_offset.unwrap_or(0);
            cursor = Cursor {
                listing_offset: None,
                ..c
            };
            o
        }
        None => 0,
    };
    members.sort_by(|a, b| a.href.cmp(&b.href));
    members.dedup_by(|a, b| a.href == b.href);

    let mut upserted = Vec::new();
    let mut skipped = Vec::new();
    let mut next = offset;
    'pages: while next < members.len() {
        let batch_end =
            (next + crate::account::MULTIGET_BATCH.min(req.page_size)).min(members.len());
        let hrefs: Vec<String> = members[next..batch_end]
            .iter()
            .map(|m| m.href.clone())
            .collect();
        let fetched = account.multiget(calendar, &hrefs).await?;
        for href in &hrefs {
            let events = match fetched.iter().find(|f| &f.href == href) {
                Some(f) => match resource_events(f, state.zone, req, &mut cursor) {
                    Ok(events) => events,
                    Err(e) => {
                        skipped.push(skipped_item(href, &e));
                        Vec::new()
                    }
                },
                None => Vec::new(),
            };
            if !upserted.is_empty() && upserted.len() + events.len() > req.page_size {
                break 'pages;
            }
            upserted.extend(events);
            next += 1;
        }
    }
    let more = next < members.len();
    if more {
        cursor.listing_offset = Some(next);
    }
    Ok(pb::SyncEventsResponse {
        upserted,
        deleted: Vec::new(),
        next_cursor: cursor.encode(),
        more,
        full_listing: true,
        skipped,
    })
}

/// A skipped item for the sync status: its href and the reason (which never
/// quotes content).
fn skipped_item(href: &str, e: &crate::mapping::IcalError) -> pb::SkippedItem {
    pb::SkippedItem {
        item_id: href.to_string(),
        reason: e.to_string(),
    }
}

/// The events of one fetched resource; a broken one is logged without
/// content and reported, so the caller can skip it.
fn resource_events(
    f: &Fetched,
    zone: Option<chrono_tz::Tz>,
    req: &SyncRequest<'_>,
    cursor: &mut Cursor,
) -> Result<Vec<pb::Event>, crate::mapping::IcalError> {
    let result = parse_object(&f.data, zone).and_then(|obj| {
        if obj.is_recurring() {
            cursor.recurring.insert(href_hash(&f.href));
        }
        expand(&obj, &f.href, &f.etag, req.window, req.busy_only)
    });
    if let Err(e) = &result {
        tracing::warn!(error = %e, "skipping an unreadable calendar object");
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_with_tokens_containing_separators() {
        let c = Cursor {
            mode: Mode::SyncToken,
            value: "http://radicale.org/ns/sync/abc|def".into(),
            recurring: [href_hash("/a.ics"), href_hash("/b.ics")]
                .into_iter()
                .collect(),
            listing_offset: Some(7),
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        let bare = Cursor {
            mode: Mode::Ctag,
            value: "ae44".into(),
            recurring: BTreeSet::new(),
            listing_offset: None,
        };
        assert_eq!(bare.encode(), "v1|ct|-||ae44");
        assert_eq!(Cursor::decode(&bare.encode()), Some(bare));
    }

    #[test]
    fn foreign_cursors_are_refused() {
        for s in [
            "",
            "garbage",
            "v2|st|-||x",
            "v1|xx|-||x",
            "v1|st|nan||x",
            "v1|st|-",
        ] {
            assert_eq!(Cursor::decode(s), None, "{s}");
        }
    }

    #[test]
    fn href_hashes_ignore_percent_encoding() {
        assert_eq!(href_hash("/c/a%20b.ics"), href_hash("/c/a b.ics"));
        assert_ne!(href_hash("/c/a.ics"), href_hash("/c/b.ics"));
    }
}
