//! `calendarView/delta`: rounds of pages over one calendar and window.
//! The first request names the window; its state travels in the tokens of
//! `@odata.nextLink` (`$skiptoken`) and `@odata.deltaLink` (`$deltatoken`),
//! which a client follows verbatim. A round lists the items changed after
//! the previous round's snapshot and up to its own, in change order (keyed,
//! so writes during a round shift nothing); items deleted, or changed
//! outside the window, come as `@removed`. Tokens of an older generation
//! (expired on demand) answer 410 `SyncStateNotFound`.

use std::collections::HashMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::events::{calendar_items, err, render, GraphErr, View};
use crate::state::State;

/// Longest window, in days.
const MAX_WINDOW_DAYS: i64 = 1825;
/// Largest page a client may ask for.
const MAX_PAGE: usize = 1000;

/// The state a token carries.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Token {
    u: String,
    c: String,
    s: DateTime<Utc>,
    e: DateTime<Utc>,
    g: u64,
    since: u64,
    snap: u64,
    after: Option<(u64, String)>,
}

fn encode(t: &Token) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(t).unwrap_or_default())
}

fn decode(s: &str) -> Option<Token> {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(s).ok()?).ok()
}

/// An ISO 8601 time; one without offset is UTC.
fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
                .ok()
                .map(|n| n.and_utc())
        })
}

/// One delta page for `email`'s calendar `calendar`.
pub(crate) fn page(
    st: &mut State,
    shared: &crate::Shared,
    email: &str,
    calendar: &str,
    q: &HashMap<String, String>,
    max_page: Option<usize>,
    view: &View,
) -> Result<Value, GraphErr> {
    for k in ["$select", "$filter", "$orderby", "$expand", "$search"] {
        if q.contains_key(k) {
            return Err(err(400, "ErrorInvalidUrlQuery", format!("The following parameters are not supported with change tracking over the 'CalendarView' resource: '{k}'.")));
        }
    }
    let config = &shared.config;
    let base = st
        .graph_url
        .clone()
        .unwrap_or_else(|| format!("{}/v1.0", shared.base_url));
    let seq = st.seq;
    let user = st
        .users
        .get(email)
        .ok_or_else(|| err(404, "ErrorInvalidUser", "The requested user is invalid."))?;
    if !user.calendars.iter().any(|c| c.id == calendar) {
        return Err(err(
            404,
            "ErrorItemNotFound",
            "The specified object was not found in the store.",
        ));
    }
    let gone = || {
        err(
            410,
            "SyncStateNotFound",
            format!(
                "The sync state generation is not found; generation={}",
                user.delta_generation
            ),
        )
    };
    let mut t = if let Some(raw) = q.get("$skiptoken").or_else(|| q.get("$deltatoken")) {
        let t = decode(raw)
            .ok_or_else(|| err(400, "ErrorInvalidUrlQuery", "The sync state is invalid."))?;
        if t.u != email || t.c != calendar {
            return Err(err(
                400,
                "ErrorInvalidUrlQuery",
                "The sync state does not belong to this resource.",
            ));
        }
        if t.g != user.delta_generation {
            return Err(gone());
        }
        if q.contains_key("$deltatoken") {
            Token {
                since: t.snap,
                snap: seq,
                after: None,
                ..t
            }
        } else {
            t
        }
    } else {
        let missing = || {
            err(400, "ErrorInvalidParameter", "This request requires a time window specified by the query string parameters StartDateTime and EndDateTime.")
        };
        let s = q
            .get("startDateTime")
            .or_else(|| q.get("StartDateTime"))
            .ok_or_else(missing)?;
        let e = q
            .get("endDateTime")
            .or_else(|| q.get("EndDateTime"))
            .ok_or_else(missing)?;
        let (Some(s), Some(e)) = (parse_time(s), parse_time(e)) else {
            return Err(err(
                400,
                "ErrorInvalidParameter",
                "The value of StartDateTime or EndDateTime is not a valid date-time.",
            ));
        };
        if e <= s {
            return Err(err(
                400,
                "ErrorInvalidParameter",
                "EndDateTime must be after StartDateTime.",
            ));
        }
        if (e - s).num_days() > MAX_WINDOW_DAYS {
            return Err(err(
                400,
                "ErrorInvalidRequest",
                "The time range is too long. Maximum number of days: 1825",
            ));
        }
        Token {
            u: email.to_string(),
            c: calendar.to_string(),
            s,
            e,
            g: user.delta_generation,
            since: 0,
            snap: seq,
            after: None,
        }
    };
    let size = max_page
        .unwrap_or(config.default_page_size)
        .clamp(1, MAX_PAGE);
    // (seq, id, item or None for removed)
    let mut entries: Vec<(u64, String, Option<Value>)> = Vec::new();
    for i in calendar_items(user, calendar) {
        if i.seq <= t.since || i.seq > t.snap {
            continue;
        }
        let inside = i.start < t.e && (i.end > t.s || (i.start == i.end && i.start >= t.s));
        if inside {
            entries.push((i.seq, i.id.clone(), Some(render(&i, view))));
        } else if t.since > 0 {
            entries.push((i.seq, i.id.clone(), None));
        }
    }
    if t.since > 0 {
        for ts in user
            .tombstones
            .iter()
            .filter(|x| x.calendar == calendar && x.seq > t.since && x.seq <= t.snap)
        {
            entries.push((ts.seq, ts.id.clone(), None));
        }
    }
    entries.sort_by(|a, b| (a.0, &a.1, a.2.is_some()).cmp(&(b.0, &b.1, b.2.is_some())));
    if let Some(after) = &t.after {
        entries.retain(|(s, id, _)| (*s, id) > (after.0, after_id(after)));
    }
    st.pages_served += 1;
    let empty = config.empty_page_every > 0
        && st.pages_served.is_multiple_of(config.empty_page_every)
        && !entries.is_empty();
    let take = if empty { 0 } else { entries.len().min(size) };
    let more = take < entries.len();
    let value: Vec<Value> = entries[..take]
        .iter()
        .map(|(_, id, item)| item.clone().unwrap_or_else(|| json!({"@odata.type": "#microsoft.graph.event", "id": id, "@removed": {"reason": "deleted"}})))
        .collect();
    if let Some((s, id, _)) = entries[..take].last() {
        t.after = Some((*s, id.clone()));
    }
    let enc = percent_encoding::utf8_percent_encode(calendar, percent_encoding::NON_ALPHANUMERIC);
    let link = format!("{base}/me/calendars/{enc}/calendarView/delta");
    let mut out = json!({
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Collection(event)",
        "value": value,
    });
    if more {
        out["@odata.nextLink"] = json!(format!("{link}?$skiptoken={}", encode(&t)));
    } else {
        let next = Token {
            since: t.snap,
            snap: t.snap,
            after: None,
            ..t
        };
        out["@odata.deltaLink"] = json!(format!("{link}?$deltatoken={}", encode(&next)));
    }
    Ok(out)
}

fn after_id(a: &(u64, String)) -> &String {
    &a.1
}
