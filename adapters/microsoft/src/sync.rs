//! Pages and cursors over `calendarView/delta`. A round starts with the
//! window (`startDateTime`/`endDateTime`, which Graph keeps in its tokens),
//! follows `@odata.nextLink`s (pages may be empty) and ends with an
//! `@odata.deltaLink`, which starts the next round. The cursor carries the
//! link to follow, the window the round was started for, and whether the
//! round is a listing from scratch. A window moved by a day or more at
//! either end starts a new round from scratch (Graph cannot widen a
//! token's window); an unreadable cursor, a link that leaves Graph, or
//! Graph's 410 `SyncStateNotFound` is OUT_OF_RANGE.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use calbridge::adapter::{free_busy_view, Window};
use calbridge::pb;

use crate::client::Session;
use crate::error::GraphError;
use crate::mapping::{self, rfc3339};

/// The most events asked for in one page.
pub const MAX_PAGE_SIZE: u32 = 250;
/// The most entries one Graph page may hold before it is refused.
const MAX_ENTRIES: usize = 1000;
/// Longest cursor accepted, in bytes.
const MAX_CURSOR_BYTES: usize = 16 << 10;
/// How far a window end may move before the round starts over, seconds.
const WINDOW_SLACK_SECONDS: i64 = 86_400;
const PREFIX: &str = "ms1.";

/// What a cursor holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// The next or delta link to follow.
    pub l: String,
    /// Start of the window the round was started for (Unix seconds).
    pub s: i64,
    /// Its end.
    pub e: i64,
    /// True while the round lists from scratch.
    pub f: bool,
}

impl Cursor {
    /// The cursor as the opaque string the scheduler keeps.
    pub fn encode(&self) -> String {
        format!(
            "{PREFIX}{}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
        )
    }

    /// Reads a cursor; `SyncStateExpired` when it is not one of ours.
    pub fn decode(s: &str) -> Result<Cursor, GraphError> {
        if s.len() > MAX_CURSOR_BYTES {
            return Err(GraphError::SyncStateExpired);
        }
        s.strip_prefix(PREFIX)
            .and_then(|b| URL_SAFE_NO_PAD.decode(b).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(GraphError::SyncStateExpired)
    }

    /// True when `w` is within a day of the window this round covers.
    pub fn covers(&self, w: &Window) -> bool {
        (w.start.timestamp() - self.s).abs() < WINDOW_SLACK_SECONDS
            && (w.end.timestamp() - self.e).abs() < WINDOW_SLACK_SECONDS
    }
}

/// One SyncEvents request, checked.
#[derive(Debug, Clone)]
pub struct SyncRequest<'a> {
    /// The calendar.
    pub calendar_id: &'a str,
    /// The cursor (empty: from scratch).
    pub cursor: &'a str,
    /// The window.
    pub window: Window,
    /// Events wanted per page.
    pub page_size: u32,
    /// Strip content (FREE_BUSY accounts).
    pub busy_only: bool,
}

/// One page of changes.
pub async fn sync(
    session: &Session<'_>,
    r: &SyncRequest<'_>,
) -> Result<pb::SyncEventsResponse, GraphError> {
    let fresh = |w: &Window| {
        let mut url =
            session
                .api()
                .url(&["me", "calendars", r.calendar_id, "calendarView", "delta"]);
        url.query_pairs_mut()
            .append_pair("startDateTime", &rfc3339(w.start))
            .append_pair("endDateTime", &rfc3339(w.end));
        (
            url,
            Cursor {
                l: String::new(),
                s: w.start.timestamp(),
                e: w.end.timestamp(),
                f: true,
            },
        )
    };
    let (url, state) = if r.cursor.is_empty() {
        fresh(&r.window)
    } else {
        let c = Cursor::decode(r.cursor)?;
        if c.covers(&r.window) {
            let url = session
                .api()
                .checked_link(&c.l)
                .ok_or(GraphError::SyncStateExpired)?;
            (url, c)
        } else {
            tracing::debug!("the window moved; listing the calendar again");
            fresh(&r.window)
        }
    };
    let page = session.delta_page(url, r.page_size).await?;
    if page.value.len() > MAX_ENTRIES {
        return Err(GraphError::Protocol(format!(
            "a delta page holds more than {MAX_ENTRIES} entries"
        )));
    }
    let mut out = pb::SyncEventsResponse {
        full_listing: state.f,
        ..Default::default()
    };
    for item in &page.value {
        let id = item.id.as_deref().unwrap_or("");
        if item.removed.is_some() {
            // A listing from scratch names no deletions: the scheduler
            // diffs it against its mirror.
            if !state.f && !id.is_empty() && id.len() <= 1024 {
                out.deleted.push(id.to_string());
            }
            continue;
        }
        match mapping::event(item, r.calendar_id) {
            Ok(e) => out
                .upserted
                .push(if r.busy_only { free_busy_view(e) } else { e }),
            Err(reason) => out.skipped.push(pb::SkippedItem {
                item_id: calbridge::error::bounded(id, 1024),
                reason,
            }),
        }
    }
    let (link, more) = match (&page.next_link, &page.delta_link) {
        (Some(next), _) => (next, true),
        (None, Some(delta)) => (delta, false),
        (None, None) => {
            return Err(GraphError::Protocol(
                "a delta page has neither a next nor a delta link".into(),
            ))
        }
    };
    if session.api().checked_link(link).is_none() || link.len() > MAX_CURSOR_BYTES / 2 {
        return Err(GraphError::Protocol(
            "a delta page links outside Graph".into(),
        ));
    }
    out.more = more;
    out.next_cursor = Cursor {
        l: link.clone(),
        f: state.f && more,
        ..state
    }
    .encode();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Duration, Utc};

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_out_of_range() {
        let c = Cursor {
            l: "https://graph.microsoft.com/v1.0/x?$deltatoken=a".into(),
            s: 1,
            e: 2,
            f: false,
        };
        assert_eq!(Cursor::decode(&c.encode()).unwrap(), c);
        assert_eq!(
            Cursor::decode("not-a-cursor"),
            Err(GraphError::SyncStateExpired)
        );
        assert_eq!(
            Cursor::decode(&format!("{PREFIX}{}", "A".repeat(MAX_CURSOR_BYTES))),
            Err(GraphError::SyncStateExpired)
        );
    }

    #[test]
    fn a_window_moved_by_a_day_at_either_end_is_not_covered() {
        let w = Window {
            start: at("2026-03-01T00:00:00Z"),
            end: at("2026-05-01T00:00:00Z"),
        };
        let c = Cursor {
            l: String::new(),
            s: w.start.timestamp(),
            e: w.end.timestamp(),
            f: false,
        };
        assert!(c.covers(&w));
        let hours = Window {
            start: w.start + Duration::hours(5),
            end: w.end + Duration::hours(5),
        };
        assert!(c.covers(&hours));
        let day = Window {
            start: w.start + Duration::days(1),
            end: w.end + Duration::days(1),
        };
        assert!(!c.covers(&day));
        let back = Window {
            start: w.start,
            end: w.end - Duration::days(2),
        };
        assert!(!c.covers(&back));
    }
}
