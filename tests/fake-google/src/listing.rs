//! `events.list`, `events.instances` and `calendarList.list`: parameter
//! rules, range and deletion semantics, recurrence expansion, incremental
//! sync with sync tokens, and paging with short and empty pages. A listing's
//! items are taken when its first page is asked for; later pages replay from
//! that snapshot, and the sync token on the last page covers every change
//! made since the snapshot.

use std::collections::HashMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use serde_json::{json, Map, Value};

use crate::config::FakeConfig;
use crate::error::ApiError;
use crate::events::{render, render_cancelled, series_of, span, synthesize_instance, times, View};
use crate::model::{Calendar, Listing, PageRecord, Scope, State, StoredEvent, SyncToken};
use crate::when::{fmt_millis, parse_param, When};

/// Parameters that are not part of a listing's identity.
const NOT_FINGERPRINTED: [&str; 8] = [
    "pageToken",
    "fields",
    "prettyPrint",
    "alt",
    "key",
    "quotaUser",
    "oauth_token",
    "userIp",
];

/// Parameters that may not accompany `syncToken` on `events.list`.
const NOT_WITH_SYNC_TOKEN: [&str; 8] = [
    "iCalUID",
    "orderBy",
    "privateExtendedProperty",
    "q",
    "sharedExtendedProperty",
    "timeMin",
    "timeMax",
    "updatedMin",
];

/// Raw query parameters, repeated ones kept.
pub(crate) struct Query<'a>(pub &'a [(String, String)]);

impl<'a> Query<'a> {
    /// The last value of a parameter.
    pub(crate) fn get(&self, name: &str) -> Option<&'a str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a repeated parameter.
    pub(crate) fn all(&self, name: &str) -> Vec<&'a str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// A boolean parameter (already checked to be `true`/`false`).
    pub(crate) fn flag(&self, name: &str) -> Option<bool> {
        self.get(name).map(|v| v == "true")
    }

    fn fingerprint(&self) -> Vec<(String, String)> {
        let mut f: Vec<(String, String)> = self
            .0
            .iter()
            .filter(|(k, _)| !NOT_FINGERPRINTED.contains(&k.as_str()))
            .cloned()
            .collect();
        f.sort();
        f
    }

    fn time(&self, name: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
        self.get(name).map(|v| parse_param(v, name)).transpose()
    }

    fn zone(&self) -> Result<Option<Tz>, ApiError> {
        self.get("timeZone")
            .map(|z| {
                z.parse::<Tz>().map_err(|_| {
                    ApiError::invalid("Invalid time zone definition.").at_param("timeZone")
                })
            })
            .transpose()
    }

    fn page_size(&self, (default, cap): (u32, u32)) -> usize {
        self.get("maxResults")
            .and_then(|m| m.parse::<u32>().ok())
            .unwrap_or(default)
            .clamp(1, cap) as usize
    }
}

/// The parsed filters of an events listing.
struct EventFilters<'a> {
    time_min: Option<DateTime<Utc>>,
    time_max: Option<DateTime<Utc>>,
    updated_min: Option<DateTime<Utc>>,
    single_events: bool,
    show_deleted: bool,
    order_by: Option<&'a str>,
    ical_uid: Option<&'a str>,
    private: Vec<(&'a str, &'a str)>,
    shared: Vec<(&'a str, &'a str)>,
    q: Option<String>,
    event_types: Vec<&'a str>,
}

fn property_filters<'a>(q: &Query<'a>, name: &str) -> Result<Vec<(&'a str, &'a str)>, ApiError> {
    q.0.iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| {
            v.split_once('=').ok_or_else(|| {
                ApiError::invalid("Invalid extended property filter.").at_param(name)
            })
        })
        .collect()
}

impl<'a> EventFilters<'a> {
    fn parse(q: &Query<'a>) -> Result<Self, ApiError> {
        let f = EventFilters {
            time_min: q.time("timeMin")?,
            time_max: q.time("timeMax")?,
            updated_min: q.time("updatedMin")?,
            single_events: q.flag("singleEvents").unwrap_or(false),
            show_deleted: q.flag("showDeleted").unwrap_or(false),
            order_by: q.get("orderBy"),
            ical_uid: q.get("iCalUID"),
            private: property_filters(q, "privateExtendedProperty")?,
            shared: property_filters(q, "sharedExtendedProperty")?,
            q: q.get("q").map(str::to_lowercase),
            event_types: q.all("eventTypes"),
        };
        if f.order_by == Some("startTime") && !f.single_events {
            return Err(ApiError::bad_request(
                "badRequest",
                "The requested ordering is not available for the particular query.",
            )
            .at_param("orderBy"));
        }
        if let (Some(min), Some(max)) = (f.time_min, f.time_max) {
            if min >= max {
                return Err(ApiError::time_range_empty());
            }
        }
        Ok(f)
    }

    /// Filters that look at the resource itself (not its time).
    fn matches(&self, body: &Map<String, Value>) -> bool {
        let s = |k: &str| body.get(k).and_then(Value::as_str);
        if self.ical_uid.is_some_and(|u| s("iCalUID") != Some(u)) {
            return false;
        }
        let props = |which: &str, wanted: &[(&str, &str)]| {
            wanted.iter().all(|(k, v)| {
                body.get("extendedProperties")
                    .and_then(|e| e.get(which))
                    .and_then(|m| m.get(*k))
                    .and_then(Value::as_str)
                    == Some(*v)
            })
        };
        if !props("private", &self.private) || !props("shared", &self.shared) {
            return false;
        }
        if !self.event_types.is_empty()
            && !self
                .event_types
                .contains(&s("eventType").unwrap_or("default"))
        {
            return false;
        }
        if let Some(q) = &self.q {
            let mut hay: Vec<String> = ["summary", "description", "location"]
                .iter()
                .filter_map(|k| s(k).map(str::to_lowercase))
                .collect();
            for person in body
                .get("attendees")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .chain(body.get("organizer"))
            {
                for k in ["email", "displayName"] {
                    if let Some(v) = person.get(k).and_then(Value::as_str) {
                        hay.push(v.to_lowercase());
                    }
                }
            }
            if !hay.iter().any(|h| h.contains(q.as_str())) {
                return false;
            }
        }
        if let Some(min) = self.updated_min {
            let updated = s("updated").and_then(|u| DateTime::parse_from_rfc3339(u).ok());
            if updated.is_none_or(|u| u.with_timezone(&Utc) < min) {
                return false;
            }
        }
        true
    }

    fn in_range(&self, body: &Map<String, Value>, zone: Tz) -> bool {
        let Some((start, end)) = span(body, zone) else {
            return true;
        };
        self.time_min.is_none_or(|min| end > min) && self.time_max.is_none_or(|max| start < max)
    }

    /// Cancelled items are listed with `showDeleted`, or when `updatedMin` is set.
    fn wants_cancelled(&self) -> bool {
        self.show_deleted || self.updated_min.is_some()
    }
}

/// Rows of a listing with what they sort by.
struct Row {
    start: DateTime<Utc>,
    updated: String,
    item: Value,
}

fn row(body: &Map<String, Value>, zone: Tz, item: Value) -> Row {
    Row {
        start: span(body, zone)
            .map(|(s, _)| s)
            .unwrap_or(DateTime::<Utc>::MIN_UTC),
        updated: body
            .get("updated")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        item,
    }
}

fn by_insertion(cal: &Calendar) -> Vec<&StoredEvent> {
    let mut all: Vec<&StoredEvent> = cal.events.values().collect();
    all.sort_by_key(|e| e.insert_no);
    all
}

fn duration_of(body: &Map<String, Value>) -> Duration {
    match times(body) {
        Some((s, e)) => match (s.when, e.when) {
            (When::At(a), When::At(b)) => b - a,
            (When::Date(a), When::Date(b)) => Duration::days((b - a).num_days()),
            _ => Duration::zero(),
        },
        None => Duration::zero(),
    }
}

/// The instances of one master within the filters' range: synthesized ones,
/// live exceptions, and (with showDeleted) cancelled instances.
fn instances_of(
    cal: &Calendar,
    master: &StoredEvent,
    f: &EventFilters<'_>,
    view: View,
    limit: usize,
) -> Vec<Row> {
    let zone = cal.time_zone;
    let mut rows = Vec::new();
    let Some((series, _, series_zone)) = series_of(cal, master) else {
        return rows;
    };
    let master_id = master.str_field("id").unwrap_or_default();
    let duration = duration_of(&master.body);
    let mut handled = std::collections::HashSet::new();
    for original in series.occurrences(duration, f.time_min, f.time_max, limit, series_zone) {
        let id = format!("{master_id}_{}", original.stamp());
        match cal.events.get(&id) {
            Some(exception) => {
                handled.insert(id);
                push_exception(&mut rows, exception, f, zone, view);
            }
            None => {
                let body = synthesize_instance(master, original);
                if f.matches(&body) {
                    rows.push(row(&body, zone, render(&body, zone, view)));
                }
            }
        }
    }
    // Exceptions moved into the range from an original time outside it.
    for e in by_insertion(cal) {
        let id = e.str_field("id").unwrap_or_default();
        if e.recurring_event_id() == Some(master_id) && !handled.contains(id) && !e.is_cancelled() {
            push_exception(&mut rows, e, f, zone, view);
        }
    }
    rows
}

fn push_exception(
    rows: &mut Vec<Row>,
    e: &StoredEvent,
    f: &EventFilters<'_>,
    zone: Tz,
    view: View,
) {
    if !f.matches(&e.body) {
        return;
    }
    if e.is_cancelled() {
        if f.wants_cancelled() {
            rows.push(row(&e.body, zone, render_cancelled(&e.body, zone, view)));
        }
    } else if f.in_range(&e.body, zone) {
        rows.push(row(&e.body, zone, render(&e.body, zone, view)));
    }
}

/// A full (non-incremental) listing of a calendar's events.
fn full_items(cal: &Calendar, f: &EventFilters<'_>, view: View, limit: usize) -> Vec<Value> {
    let zone = cal.time_zone;
    let live_master = |id: &str| cal.events.get(id).is_some_and(|m| !m.is_cancelled());
    let mut rows = Vec::new();
    for e in by_insertion(cal) {
        if f.single_events {
            if e.recurring_event_id().is_some() {
                continue;
            }
            if e.is_master() {
                if !e.is_cancelled() {
                    rows.extend(instances_of(cal, e, f, view, limit));
                }
                continue;
            }
            push_exception(&mut rows, e, f, zone, view);
            continue;
        }
        if !f.matches(&e.body) {
            continue;
        }
        if e.is_cancelled() {
            let live_exception = e.recurring_event_id().is_some_and(live_master);
            if (f.wants_cancelled() || live_exception) && f.in_range(&e.body, zone) {
                rows.push(row(&e.body, zone, render_cancelled(&e.body, zone, view)));
            }
        } else if e.is_master() {
            let any = series_of(cal, e).is_some_and(|(s, _, sz)| {
                !s.occurrences(duration_of(&e.body), f.time_min, f.time_max, 1, sz)
                    .is_empty()
            });
            if any {
                rows.push(row(&e.body, zone, render(&e.body, zone, view)));
            }
        } else if f.in_range(&e.body, zone) {
            rows.push(row(&e.body, zone, render(&e.body, zone, view)));
        }
    }
    match f.order_by {
        Some("startTime") => rows.sort_by_key(|r| r.start),
        Some("updated") => rows.sort_by(|a, b| a.updated.cmp(&b.updated)),
        _ => {}
    }
    rows.into_iter().map(|r| r.item).collect()
}

/// Changes since `seq`, deletions always included (minimal).
fn incremental_items(
    cal: &Calendar,
    seq: u64,
    f: &EventFilters<'_>,
    view: View,
    limit: usize,
) -> Vec<Value> {
    let zone = cal.time_zone;
    let mut changed: Vec<&StoredEvent> = cal.events.values().filter(|e| e.seq > seq).collect();
    changed.sort_by_key(|e| e.seq);
    let mut out: Vec<Value> = Vec::new();
    let mut position: HashMap<String, usize> = HashMap::new();
    let mut push = |item: Value| {
        let id = item
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        match position.get(&id) {
            Some(&i) => out[i] = item,
            None => {
                position.insert(id, out.len());
                out.push(item);
            }
        }
    };
    let everything = EventFilters {
        time_min: None,
        time_max: None,
        updated_min: None,
        show_deleted: true,
        q: None,
        private: Vec::new(),
        shared: Vec::new(),
        ical_uid: None,
        order_by: None,
        single_events: f.single_events,
        event_types: f.event_types.clone(),
    };
    for e in changed {
        if !everything.matches(&e.body) {
            continue;
        }
        if e.is_cancelled() {
            push(render_cancelled(&e.body, zone, view));
        } else if f.single_events && e.is_master() {
            for r in instances_of(cal, e, &everything, view, limit) {
                push(r.item);
            }
        } else {
            push(render(&e.body, zone, view));
        }
    }
    out
}

fn encode_page_token(listing: u64, page: usize) -> String {
    URL_SAFE_NO_PAD.encode(format!("{listing}.{page}"))
}

fn decode_page_token(token: &str) -> Option<(u64, usize)> {
    let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(token).ok()?).ok()?;
    let (l, p) = raw.split_once('.')?;
    Some((l.parse().ok()?, p.parse().ok()?))
}

fn bad_page_token() -> ApiError {
    ApiError::invalid("Invalid page token value.").at_param("pageToken")
}

/// Checks a sync token; an unknown, expired or invalidated one answers 410.
fn check_sync_token(
    state: &State,
    config: &FakeConfig,
    token: &str,
    scope: &Scope,
) -> Result<u64, ApiError> {
    let Some(t) = state.sync_tokens.get(token) else {
        return Err(ApiError::full_sync_required());
    };
    if &t.scope != scope {
        return Err(ApiError::full_sync_required());
    }
    if t.epoch != current_epoch(state, scope) {
        return Err(ApiError::full_sync_required());
    }
    if let Some(max) = config.sync_token_max_age {
        if state.now() - t.issued_at > Duration::from_std(max).unwrap_or(Duration::MAX) {
            return Err(ApiError::full_sync_required());
        }
    }
    Ok(t.seq)
}

fn current_epoch(state: &State, scope: &Scope) -> u64 {
    match scope {
        Scope::Events(cal) => state.calendars.get(cal).map_or(0, |c| c.token_epoch),
        Scope::CalendarList(_) => 0,
    }
}

/// Serves page `page` of a stored listing (recording it on first serve).
fn serve_page(
    state: &mut State,
    listing_id: u64,
    page: usize,
    issue_sync: bool,
) -> Result<(Vec<Value>, PageRecord), ApiError> {
    let quirks = state.paging;
    let listing = state.listings.get(&listing_id).ok_or_else(bad_page_token)?;
    if let Some(record) = listing.pages.get(page) {
        let items = listing.items[record.offset..record.offset + record.count].to_vec();
        return Ok((items, record.clone()));
    }
    let offset = match listing.pages.last() {
        None if page == 0 => 0,
        Some(prev) if page == listing.pages.len() && prev.next_page.is_some() => {
            prev.offset + prev.count
        }
        _ => return Err(bad_page_token()),
    };
    let (len, max) = (listing.items.len(), listing.max_results);
    let (sync_seq, scope, epoch) = (listing.sync_seq, listing.scope.clone(), listing.epoch);
    state.pages_served += 1;
    let n = state.pages_served;
    let remaining = len - offset;
    let every = |k: u32| k > 0 && n.is_multiple_of(u64::from(k));
    let (count, more) = if every(quirks.empty_page_every) {
        (0, true)
    } else if every(quirks.short_page_every) && remaining > 1 {
        let count = (max / 2).max(1).min(remaining - 1);
        (count, true)
    } else {
        let count = remaining.min(max);
        (count, offset + count < len)
    };
    let next_page = more.then(|| encode_page_token(listing_id, page + 1));
    let sync_token = if !more && issue_sync {
        let token = state.random_token("CP", 24);
        let issued_at = state.now();
        state.sync_tokens.insert(
            token.clone(),
            SyncToken {
                scope,
                seq: sync_seq,
                epoch,
                issued_at,
            },
        );
        Some(token)
    } else {
        None
    };
    let record = PageRecord {
        offset,
        count,
        next_page,
        sync_token,
    };
    let listing = state
        .listings
        .get_mut(&listing_id)
        .ok_or_else(bad_page_token)?;
    listing.pages.push(record.clone());
    let items = listing.items[offset..offset + count].to_vec();
    Ok((items, record))
}

/// Starts a listing or continues one from its page token.
fn page(
    state: &mut State,
    q: &Query<'_>,
    scope: Scope,
    max_results: usize,
    issue_sync: bool,
    make: impl FnOnce(&mut State) -> Result<(Vec<Value>, u64), ApiError>,
) -> Result<(Vec<Value>, PageRecord), ApiError> {
    let fingerprint = q.fingerprint();
    if let Some(token) = q.get("pageToken") {
        let (listing_id, page) = decode_page_token(token).ok_or_else(bad_page_token)?;
        let listing = state.listings.get(&listing_id).ok_or_else(bad_page_token)?;
        if listing.scope != scope || listing.fingerprint != fingerprint {
            return Err(
                ApiError::invalid("The page token does not match the request parameters.")
                    .at_param("pageToken"),
            );
        }
        return serve_page(state, listing_id, page, issue_sync);
    }
    let (items, sync_seq) = make(state)?;
    let epoch = current_epoch(state, &scope);
    let id = state.store_listing(Listing {
        scope,
        fingerprint,
        items,
        max_results,
        sync_seq,
        epoch,
        pages: Vec::new(),
    });
    serve_page(state, id, 0, issue_sync)
}

fn collection_etag(seq: u64) -> String {
    format!(
        "\"p{:014x}\"",
        seq.wrapping_mul(0x9e37_79b9) & 0xff_ffff_ffff_ffff
    )
}

fn events_envelope(cal: &Calendar, role: &str, items: Vec<Value>, record: &PageRecord) -> Value {
    let mut out = json!({
        "kind": "calendar#events",
        "etag": collection_etag(cal.seq),
        "summary": cal.summary,
        "updated": fmt_millis(cal.updated),
        "timeZone": cal.time_zone.name(),
        "accessRole": role,
        "defaultReminders": [],
        "items": items,
    });
    if let Some(p) = &record.next_page {
        out["nextPageToken"] = json!(p);
    }
    if let Some(s) = &record.sync_token {
        out["nextSyncToken"] = json!(s);
    }
    out
}

/// `events.list` on a calendar the caller can read with `role`.
pub(crate) fn events_list(
    state: &mut State,
    config: &FakeConfig,
    cal_id: &str,
    role: &str,
    query: &[(String, String)],
    free_busy_only: bool,
) -> Result<Value, ApiError> {
    let q = Query(query);
    let sync_token = q.get("syncToken");
    if sync_token.is_some() {
        if let Some(bad) = NOT_WITH_SYNC_TOKEN.iter().find(|p| q.get(p).is_some()) {
            return Err(ApiError::invalid(&format!(
                "The parameter {bad} cannot be used together with syncToken."
            ))
            .at_param(bad));
        }
    }
    let f = EventFilters::parse(&q)?;
    if let Some(min) = f.updated_min {
        if state.now() - min
            > Duration::from_std(config.updated_min_window).unwrap_or(Duration::MAX)
        {
            return Err(ApiError::new(
                axum::http::StatusCode::GONE,
                "calendar",
                "updatedMinTooLongAgo",
                "The requested minimum modification time lies too far in the past.",
            )
            .at_param("updatedMin"));
        }
    }
    let view = View {
        zone: q.zone()?,
        max_attendees: q.get("maxAttendees").and_then(|m| m.parse().ok()),
        free_busy_only,
    };
    let limit = config.max_instances_per_series;
    let scope = Scope::Events(cal_id.to_string());
    let max = q.page_size(config.events_max_results);
    let (items, record) = page(state, &q, scope.clone(), max, true, |state| {
        let since = match sync_token {
            Some(t) => Some(check_sync_token(state, config, t, &scope)?),
            None => None,
        };
        let cal = state
            .calendars
            .get(cal_id)
            .ok_or_else(ApiError::not_found)?;
        let items = match since {
            Some(seq) => incremental_items(cal, seq, &f, view, limit),
            None => full_items(cal, &f, view, limit),
        };
        Ok((items, cal.seq))
    })?;
    let cal = state
        .calendars
        .get(cal_id)
        .ok_or_else(ApiError::not_found)?;
    Ok(events_envelope(cal, role, items, &record))
}

/// `events.instances`: the instances of one series.
pub(crate) fn events_instances(
    state: &mut State,
    config: &FakeConfig,
    cal_id: &str,
    event_id: &str,
    role: &str,
    query: &[(String, String)],
    free_busy_only: bool,
) -> Result<Value, ApiError> {
    let q = Query(query);
    let mut f = EventFilters::parse(&q)?;
    f.single_events = true;
    let original_start = q
        .get("originalStart")
        .map(|o| parse_param(o, "originalStart"))
        .transpose()?;
    let view = View {
        zone: q.zone()?,
        max_attendees: q.get("maxAttendees").and_then(|m| m.parse().ok()),
        free_busy_only,
    };
    let limit = config.max_instances_per_series;
    let max = q.page_size(config.events_max_results);
    let scope = Scope::Events(cal_id.to_string());
    let (items, record) = page(state, &q, scope, max, false, |state| {
        let cal = state
            .calendars
            .get(cal_id)
            .ok_or_else(ApiError::not_found)?;
        let master = cal.events.get(event_id).ok_or_else(ApiError::not_found)?;
        if master.is_cancelled() {
            return Err(ApiError::deleted());
        }
        if !master.is_master() {
            return Err(ApiError::not_found());
        }
        let mut rows = instances_of(cal, master, &f, view, limit);
        rows.sort_by_key(|r| r.start);
        let items = rows
            .into_iter()
            .map(|r| r.item)
            .filter(|item| {
                original_start.is_none_or(|o| {
                    item.get("originalStartTime")
                        .and_then(|t| crate::when::EventTime::parse(t, "originalStartTime").ok())
                        .is_some_and(|t| t.instant(cal.time_zone) == o)
                })
            })
            .collect();
        Ok((items, cal.seq))
    })?;
    let cal = state
        .calendars
        .get(cal_id)
        .ok_or_else(ApiError::not_found)?;
    Ok(events_envelope(cal, role, items, &record))
}

fn role_rank(role: &str) -> u8 {
    match role {
        "freeBusyReader" => 1,
        "reader" => 2,
        "writer" => 3,
        "owner" => 4,
        _ => 0,
    }
}

/// `calendarList.list`.
pub(crate) fn calendar_list(
    state: &mut State,
    config: &FakeConfig,
    user: &str,
    query: &[(String, String)],
) -> Result<Value, ApiError> {
    let q = Query(query);
    let sync_token = q.get("syncToken");
    if sync_token.is_some() {
        if q.get("minAccessRole").is_some() {
            return Err(
                ApiError::invalid("minAccessRole cannot be used together with syncToken.")
                    .at_param("minAccessRole"),
            );
        }
        for p in ["showDeleted", "showHidden"] {
            if q.flag(p) == Some(false) {
                return Err(ApiError::invalid(&format!(
                    "{p}=false cannot be used together with syncToken."
                ))
                .at_param(p));
            }
        }
    }
    let show_deleted = q.flag("showDeleted").unwrap_or(false);
    let show_hidden = q.flag("showHidden").unwrap_or(false);
    let min_rank = q.get("minAccessRole").map_or(0, role_rank);
    let scope = Scope::CalendarList(user.to_string());
    let max = q.page_size(config.calendar_list_max_results);
    let (items, record) = page(state, &q, scope.clone(), max, true, |state| {
        let since = match sync_token {
            Some(t) => Some(check_sync_token(state, config, t, &scope)?),
            None => None,
        };
        let u = state.users.get(user).ok_or_else(ApiError::not_found)?;
        let mut entries: Vec<_> = u.list.iter().collect();
        entries.sort_by_key(|e| !e.primary);
        let items = entries
            .into_iter()
            .filter(|e| match since {
                Some(seq) => e.seq > seq,
                None => {
                    (show_deleted || !e.deleted)
                        && (show_hidden || !e.hidden)
                        && role_rank(&e.access_role) >= min_rank
                }
            })
            .map(|e| {
                let cal = state.calendars.get(&e.calendar_id);
                let mut item = json!({
                    "kind": "calendar#calendarListEntry",
                    "etag": e.etag,
                    "id": e.calendar_id,
                    "accessRole": e.access_role,
                    "colorId": "14",
                    "backgroundColor": "#9fe1e7",
                    "foregroundColor": "#000000",
                    "selected": true,
                    "defaultReminders": [],
                    "conferenceProperties": {"allowedConferenceSolutionTypes": ["hangoutsMeet"]},
                });
                if let Some(cal) = cal {
                    item["summary"] = json!(cal.summary);
                    item["timeZone"] = json!(cal.time_zone.name());
                }
                if e.primary {
                    item["primary"] = json!(true);
                }
                if e.hidden {
                    item["hidden"] = json!(true);
                }
                if e.deleted {
                    item["deleted"] = json!(true);
                }
                item
            })
            .collect();
        Ok((items, u.list_seq))
    })?;
    let mut out = json!({
        "kind": "calendar#calendarList",
        "etag": collection_etag(state.users.get(user).map_or(0, |u| u.list_seq)),
        "items": items,
    });
    if let Some(p) = record.next_page {
        out["nextPageToken"] = json!(p);
    }
    if let Some(s) = record.sync_token {
        out["nextSyncToken"] = json!(s);
    }
    Ok(out)
}
