//! Events as Graph stores and shows them: parsing a written body (with
//! Graph's checks), create (de-duplicated by `transactionId`), update and
//! delete with `If-Match`, occurrences of series computed from their
//! masters, and the JSON of an event.

use std::collections::BTreeSet;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};
use chrono_tz::Tz;
use serde_json::{json, Map, Value};

use crate::recurrence;
use crate::state::{change_key, outlook_id, Event, Kind, State, Tombstone, User, When};

/// A Graph error: status, code, message.
#[derive(Debug, Clone)]
pub(crate) struct GraphErr {
    pub(crate) status: u16,
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

pub(crate) fn err(status: u16, code: &'static str, message: impl Into<String>) -> GraphErr {
    GraphErr {
        status,
        code,
        message: message.into(),
    }
}

fn invalid(message: impl Into<String>) -> GraphErr {
    err(400, "ErrorInvalidRequest", message)
}

fn not_found() -> GraphErr {
    err(
        404,
        "ErrorItemNotFound",
        "The specified object was not found in the store.",
    )
}

/// Properties a client may write on an event.
const WRITABLE: &[&str] = &[
    "subject",
    "body",
    "start",
    "end",
    "isAllDay",
    "location",
    "locations",
    "showAs",
    "attendees",
    "sensitivity",
    "importance",
    "categories",
    "isReminderOn",
    "reminderMinutesBeforeStart",
    "responseRequested",
    "recurrence",
    "transactionId",
    "singleValueExtendedProperties",
    "allowNewTimeProposals",
    "hideAttendees",
    "isOnlineMeeting",
    "onlineMeetingProvider",
    "isCancelled",
];

/// A zone name Graph accepts (Windows or IANA).
pub(crate) fn zone(name: &str) -> Option<Tz> {
    calbridge::zones::iana_zone(name)
}

fn parse_when(v: &Value, field: &str) -> Result<When, GraphErr> {
    let dt = v["dateTime"]
        .as_str()
        .ok_or_else(|| invalid(format!("{field}.dateTime is required")))?;
    let name = v["timeZone"].as_str().unwrap_or("UTC");
    let tz = zone(name).ok_or_else(|| err(400, "TimeZoneNotSupportedException", format!("A valid TimeZone value must be specified. The following TimeZone value is not supported: '{}'.", name.chars().take(60).collect::<String>())))?;
    let trimmed = dt.trim_end_matches('Z');
    let local = NaiveDateTime::parse_from_str(trimmed, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(trimmed, "%Y-%m-%dT%H:%M"))
        .map_err(|_| invalid(format!("{field}.dateTime is not a date-time")))?;
    Ok(When {
        local,
        zone: tz,
        zone_name: name.to_string(),
    })
}

/// Applies a written body to `ev` (a new event's defaults or the stored
/// one), with Graph's checks.
fn apply(ev: &mut Event, body: &Map<String, Value>, creating: bool) -> Result<(), GraphErr> {
    for k in body.keys() {
        if !WRITABLE.contains(&k.as_str()) && !k.starts_with("@odata") {
            return Err(err(
                400,
                "RequestBodyRead",
                format!(
                    "The property '{}' does not exist on type 'microsoft.graph.event'.",
                    k.chars().take(60).collect::<String>()
                ),
            ));
        }
    }
    if creating && (body.get("start").is_none() || body.get("end").is_none()) {
        return Err(invalid("start and end are required"));
    }
    if let Some(v) = body.get("start") {
        ev.start = parse_when(v, "start")?;
    }
    if let Some(v) = body.get("end") {
        ev.end = parse_when(v, "end")?;
    }
    if let Some(v) = body.get("isAllDay") {
        ev.all_day = v
            .as_bool()
            .ok_or_else(|| invalid("isAllDay must be a boolean"))?;
    }
    if ev.all_day {
        let midnight = |w: &When| w.local.time() == chrono::NaiveTime::MIN;
        if !midnight(&ev.start) || !midnight(&ev.end) || ev.start.zone_name != ev.end.zone_name {
            return Err(err(
                400,
                "ErrorPropertyValidationFailure",
                "All-day events must start and end at midnight in one time zone.",
            ));
        }
    }
    if ev.end.instant() < ev.start.instant() {
        return Err(invalid("The end of an event cannot be before its start."));
    }
    if let Some(r) = body.get("recurrence") {
        if r.is_null() {
            if ev.kind == Kind::Master {
                ev.kind = Kind::Single;
            }
        } else {
            if matches!(ev.kind, Kind::Exception { .. }) {
                return Err(invalid("An occurrence cannot have a recurrence."));
            }
            recurrence::check(r).map_err(invalid)?;
            ev.kind = Kind::Master;
        }
    }
    if let Some(props) = body.get("singleValueExtendedProperties") {
        let list = props
            .as_array()
            .ok_or_else(|| invalid("singleValueExtendedProperties must be an array"))?;
        let mut merged: Vec<Value> = ev
            .fields
            .get("singleValueExtendedProperties")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for p in list {
            let (Some(id), Some(_)) = (p["id"].as_str(), p["value"].as_str()) else {
                return Err(invalid("an extended property needs an id and a value"));
            };
            if !(id.starts_with("String {") && id.contains("} Name ")) {
                return Err(invalid(
                    "an extended property id must read 'String {GUID} Name NAME'",
                ));
            }
            merged.retain(|q| q["id"].as_str() != Some(id));
            merged.push(json!({"id": id, "value": p["value"]}));
        }
        ev.fields
            .insert("singleValueExtendedProperties".into(), Value::Array(merged));
    }
    if let Some(n) = body.get("attendees").and_then(Value::as_array) {
        if n.len() > 500 {
            return Err(invalid("An event can have at most 500 attendees."));
        }
    }
    for (k, v) in body {
        if !matches!(
            k.as_str(),
            "start" | "end" | "isAllDay" | "singleValueExtendedProperties"
        ) {
            if k == "transactionId" && !creating {
                continue;
            }
            ev.fields.insert(k.clone(), v.clone());
        }
    }
    Ok(())
}

/// The occurrence id of `master`'s occurrence on `date`.
pub(crate) fn occurrence_id(master: &str, date: NaiveDate) -> String {
    STANDARD.encode(format!("{master}|{}", date.format("%Y%m%d")))
}

/// The master id and date an occurrence id names.
pub(crate) fn parse_occurrence_id(id: &str) -> Option<(String, NaiveDate)> {
    let raw = String::from_utf8(STANDARD.decode(id).ok()?).ok()?;
    let (master, date) = raw.rsplit_once('|')?;
    Some((
        master.to_string(),
        NaiveDate::parse_from_str(date, "%Y%m%d").ok()?,
    ))
}

/// One item of a calendar view: a single event, an exception, or an
/// occurrence (computed from its master).
#[derive(Debug, Clone)]
pub(crate) struct Item {
    pub(crate) id: String,
    pub(crate) seq: u64,
    pub(crate) start: DateTime<Utc>,
    pub(crate) end: DateTime<Utc>,
    pub(crate) event: Event,
    /// For occurrences: the master's id and the original start.
    pub(crate) occurrence_of: Option<(String, DateTime<Utc>)>,
}

/// The calendar-view items of `ev` within the series' whole expansion.
pub(crate) fn items_of(user: &User, ev: &Event) -> Vec<Item> {
    match &ev.kind {
        Kind::Single | Kind::Exception { .. } => vec![Item {
            id: ev.id.clone(),
            seq: ev.seq,
            start: ev.start.instant(),
            end: ev.end.instant(),
            event: ev.clone(),
            occurrence_of: None,
        }],
        Kind::Master => {
            let dates = ev
                .fields
                .get("recurrence")
                .map(|r| recurrence::dates(r, None).unwrap_or_default())
                .unwrap_or_default();
            let length = ev.end.local - ev.start.local;
            let overridden: BTreeSet<DateTime<Utc>> = user
                .events
                .values()
                .filter_map(|e| match &e.kind {
                    Kind::Exception {
                        master,
                        original_start,
                    } if master == &ev.id => Some(*original_start),
                    _ => None,
                })
                .collect();
            dates
                .into_iter()
                .filter_map(|d| {
                    let local = d.and_time(ev.start.local.time());
                    let start = When {
                        local,
                        ..ev.start.clone()
                    };
                    let end = When {
                        local: local + length,
                        ..ev.end.clone()
                    };
                    let original = start.instant();
                    if ev.cancelled.contains(&original) || overridden.contains(&original) {
                        return None;
                    }
                    let mut occ = ev.clone();
                    occ.id = occurrence_id(&ev.id, d);
                    occ.start = start;
                    occ.end = end;
                    Some(Item {
                        id: occ.id.clone(),
                        seq: ev.seq,
                        start: original,
                        end: occ.end.instant(),
                        event: occ,
                        occurrence_of: Some((ev.id.clone(), original)),
                    })
                })
                .collect()
        }
    }
}

/// Every calendar-view item of one calendar.
pub(crate) fn calendar_items(user: &User, calendar: &str) -> Vec<Item> {
    user.events
        .values()
        .filter(|e| e.calendar == calendar)
        .flat_map(|e| items_of(user, e))
        .collect()
}

fn fmt_local(t: NaiveDateTime) -> String {
    use chrono::Timelike as _;
    format!(
        "{}.{:07}",
        t.format("%Y-%m-%dT%H:%M:%S"),
        t.nanosecond() / 100
    )
}

/// How times are shown: UTC, or the zone of `Prefer: outlook.timezone`.
#[derive(Debug, Clone)]
pub(crate) struct View {
    pub(crate) zone: Tz,
    pub(crate) zone_name: String,
    /// Extended property ids asked for with `$expand`.
    pub(crate) expand: Vec<String>,
}

impl Default for View {
    fn default() -> Self {
        View {
            zone: Tz::UTC,
            zone_name: "UTC".into(),
            expand: Vec::new(),
        }
    }
}

/// The JSON of an item (or a stored event seen as itself).
pub(crate) fn render(item: &Item, view: &View) -> Value {
    let ev = &item.event;
    let time = |w: &When| {
        let local = if ev.all_day {
            w.local
        } else {
            w.instant().with_timezone(&view.zone).naive_local()
        };
        json!({"dateTime": fmt_local(local), "timeZone": view.zone_name})
    };
    let f = |k: &str| ev.fields.get(k).cloned();
    let (kind, master, original) = match (&ev.kind, &item.occurrence_of) {
        (_, Some((m, o))) => ("occurrence", Some(m.clone()), Some(*o)),
        (
            Kind::Exception {
                master,
                original_start,
            },
            None,
        ) => ("exception", Some(master.clone()), Some(*original_start)),
        (Kind::Master, None) => ("seriesMaster", None, None),
        (Kind::Single, None) => ("singleInstance", None, None),
    };
    let stamp = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Micros, true);
    let body = f("body").unwrap_or_else(|| json!({"contentType": "html", "content": ""}));
    let mut out = json!({
        "@odata.etag": format!("W/\"{}\"", ev.change_key),
        "id": item.id,
        "createdDateTime": stamp(ev.created),
        "lastModifiedDateTime": stamp(ev.modified),
        "changeKey": ev.change_key,
        "categories": f("categories").unwrap_or_else(|| json!([])),
        "originalStartTimeZone": ev.start.zone_name,
        "originalEndTimeZone": ev.end.zone_name,
        "iCalUId": format!("040000008200E00074C5B7101A82E008{}", hex_of(&item.id)),
        "reminderMinutesBeforeStart": f("reminderMinutesBeforeStart").unwrap_or(json!(15)),
        "isReminderOn": f("isReminderOn").unwrap_or(json!(true)),
        "hasAttachments": false,
        "subject": f("subject").unwrap_or(json!("")),
        "bodyPreview": body["content"].as_str().unwrap_or("").chars().take(255).collect::<String>(),
        "importance": f("importance").unwrap_or(json!("normal")),
        "sensitivity": f("sensitivity").unwrap_or(json!("normal")),
        "isAllDay": ev.all_day,
        "isCancelled": f("isCancelled").unwrap_or(json!(false)),
        "isOrganizer": true,
        "responseRequested": f("responseRequested").unwrap_or(json!(true)),
        "seriesMasterId": master,
        "showAs": f("showAs").unwrap_or(json!("busy")),
        "type": kind,
        "webLink": format!("https://outlook.office365.com/owa/?itemid={}", percent_encoding::utf8_percent_encode(&item.id, percent_encoding::NON_ALPHANUMERIC)),
        "isOnlineMeeting": f("isOnlineMeeting").unwrap_or(json!(false)),
        "onlineMeetingProvider": "unknown",
        "allowNewTimeProposals": true,
        "isDraft": false,
        "hideAttendees": false,
        "responseStatus": {"response": "organizer", "time": "0001-01-01T00:00:00Z"},
        "body": body,
        "start": time(&ev.start),
        "end": time(&ev.end),
        "location": f("location").unwrap_or_else(|| json!({"displayName": "", "locationType": "default", "uniqueIdType": "unknown", "address": {}, "coordinates": {}})),
        "locations": f("locations").unwrap_or_else(|| json!([])),
        "attendees": f("attendees").unwrap_or_else(|| json!([])),
    });
    // Graph's schema gives `recurrence` and `organizer` no null: absent
    // when there is none.
    if kind == "seriesMaster" {
        if let Some(r) = f("recurrence") {
            out["recurrence"] = r;
        }
    }
    if let Some(o) = f("organizer").filter(|o| !o.is_null()) {
        out["organizer"] = o;
    }
    if let Some(o) = original {
        out["originalStart"] = json!(stamp(o));
    }
    if let Some(t) = f("transactionId") {
        out["transactionId"] = t;
    }
    if !view.expand.is_empty() {
        let props: Vec<Value> = ev
            .fields
            .get("singleValueExtendedProperties")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter(|p| {
                        p["id"].as_str().is_some_and(|id| {
                            view.expand.iter().any(|e| e.eq_ignore_ascii_case(id))
                        })
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        out["singleValueExtendedProperties"] = Value::Array(props);
    }
    out
}

fn hex_of(s: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(s.as_bytes())
        .iter()
        .take(16)
        .map(|b| format!("{b:02X}"))
        .collect()
}

/// A stored event seen as an item of itself (masters included).
pub(crate) fn as_item(ev: &Event) -> Item {
    Item {
        id: ev.id.clone(),
        seq: ev.seq,
        start: ev.start.instant(),
        end: ev.end.instant(),
        event: ev.clone(),
        occurrence_of: None,
    }
}

/// Records tombstones for the items of `before` that `after` lacks.
fn bury(user: &mut User, before: Vec<Item>, after: &[Item], calendar: &str, seq: u64) {
    let keep: BTreeSet<&str> = after.iter().map(|i| i.id.as_str()).collect();
    for i in before {
        if !keep.contains(i.id.as_str()) {
            user.tombstones.push(Tombstone {
                id: i.id,
                calendar: calendar.to_string(),
                seq,
            });
        }
    }
}

fn user_mut<'a>(st: &'a mut State, email: &str) -> Result<&'a mut User, GraphErr> {
    st.users
        .get_mut(email)
        .ok_or_else(|| err(404, "ErrorInvalidUser", "The requested user is invalid."))
}

/// Creates an event in `calendar`; returns its id and whether an event
/// with the same `transactionId` already existed (then nothing changed).
pub(crate) fn create(
    st: &mut State,
    email: &str,
    calendar: &str,
    body: &Map<String, Value>,
) -> Result<(String, bool), GraphErr> {
    let (id, replayed) = create_event(st, email, calendar, body)?;
    if !replayed {
        notify(st, email, &id, "created");
    }
    Ok((id, replayed))
}

/// Queues change notifications for event `id` (as it is now).
fn notify(st: &mut State, email: &str, id: &str, change: &str) {
    let Some((calendar, key)) = st
        .users
        .get(email)
        .and_then(|u| get(u, id))
        .map(|i| (i.event.calendar.clone(), i.event.change_key.clone()))
    else {
        return;
    };
    crate::subscriptions::changed(st, email, &calendar, id, Some(&key), change);
}

fn create_event(
    st: &mut State,
    email: &str,
    calendar: &str,
    body: &Map<String, Value>,
) -> Result<(String, bool), GraphErr> {
    let seq = st.next_seq();
    let user = user_mut(st, email)?;
    let cal = user
        .calendars
        .iter()
        .find(|c| c.id == calendar)
        .ok_or_else(not_found)?;
    if !cal.can_edit {
        return Err(err(
            403,
            "ErrorAccessDenied",
            "Access is denied. Check credentials and try again.",
        ));
    }
    if let Some(tx) = body.get("transactionId").and_then(Value::as_str) {
        if let Some(existing) = user
            .events
            .values()
            .find(|e| e.fields.get("transactionId").and_then(Value::as_str) == Some(tx))
        {
            return Ok((existing.id.clone(), true));
        }
    }
    let now = Utc::now();
    let blank = When {
        local: now.naive_utc(),
        zone: Tz::UTC,
        zone_name: "UTC".into(),
    };
    let mut ev = Event {
        id: outlook_id(),
        calendar: calendar.to_string(),
        change_key: change_key(),
        seq,
        created: now,
        modified: now,
        start: blank.clone(),
        end: blank,
        all_day: false,
        kind: Kind::Single,
        fields: Map::new(),
        cancelled: Vec::new(),
    };
    apply(&mut ev, body, true)?;
    let id = ev.id.clone();
    user.events.insert(id.clone(), ev);
    Ok((id, false))
}

/// Checks `If-Match` against the current change key.
fn precondition(if_match: Option<&str>, change_key: &str) -> Result<(), GraphErr> {
    match if_match {
        None | Some("*") => Ok(()),
        Some(v) => {
            let tag = v.trim().trim_start_matches("W/").trim_matches('"');
            if tag == change_key {
                Ok(())
            } else {
                Err(err(412, "ErrorIrresolvableConflict", "The send or update operation could not be performed because the change key passed in the request does not match the current change key for the item."))
            }
        }
    }
}

/// Updates an event, an exception, or an occurrence (which becomes an
/// exception); returns the id of what was written.
pub(crate) fn update(
    st: &mut State,
    email: &str,
    id: &str,
    body: &Map<String, Value>,
    if_match: Option<&str>,
) -> Result<String, GraphErr> {
    let written = update_event(st, email, id, body, if_match)?;
    notify(st, email, &written, "updated");
    Ok(written)
}

fn update_event(
    st: &mut State,
    email: &str,
    id: &str,
    body: &Map<String, Value>,
    if_match: Option<&str>,
) -> Result<String, GraphErr> {
    let seq = st.next_seq();
    let user = user_mut(st, email)?;
    if let Some(ev) = user.events.get(id).cloned() {
        precondition(if_match, &ev.change_key)?;
        let before = items_of(user, &ev);
        let mut next = ev.clone();
        apply(&mut next, body, false)?;
        next.seq = seq;
        next.change_key = change_key();
        next.modified = Utc::now();
        let after = items_of(user, &next);
        bury(user, before, &after, &next.calendar, seq);
        user.events.insert(id.to_string(), next);
        return Ok(id.to_string());
    }
    let (master_id, date) = parse_occurrence_id(id).ok_or_else(not_found)?;
    let master = user.events.get(&master_id).cloned().ok_or_else(not_found)?;
    let item = items_of(user, &master)
        .into_iter()
        .find(|i| i.id == id)
        .ok_or_else(not_found)?;
    precondition(if_match, &master.change_key)?;
    let mut ex = item.event.clone();
    ex.kind = Kind::Exception {
        master: master_id,
        original_start: item.start,
    };
    ex.fields.remove("recurrence");
    ex.fields.remove("transactionId");
    apply(&mut ex, body, false)?;
    ex.seq = seq;
    ex.change_key = change_key();
    ex.modified = Utc::now();
    let _ = date;
    user.events.insert(id.to_string(), ex);
    Ok(id.to_string())
}

/// Deletes an event (a master with its exceptions), an exception or an
/// occurrence (cancelled on its master).
pub(crate) fn delete(
    st: &mut State,
    email: &str,
    id: &str,
    if_match: Option<&str>,
) -> Result<(), GraphErr> {
    let calendar = st
        .users
        .get(email)
        .and_then(|u| get(u, id))
        .map(|i| i.event.calendar.clone());
    delete_event(st, email, id, if_match)?;
    if let Some(calendar) = calendar {
        crate::subscriptions::changed(st, email, &calendar, id, None, "deleted");
    }
    Ok(())
}

fn delete_event(
    st: &mut State,
    email: &str,
    id: &str,
    if_match: Option<&str>,
) -> Result<(), GraphErr> {
    let seq = st.next_seq();
    let user = user_mut(st, email)?;
    if let Some(ev) = user.events.get(id).cloned() {
        precondition(if_match, &ev.change_key)?;
        let cal = user.calendars.iter().find(|c| c.id == ev.calendar);
        if cal.is_some_and(|c| !c.can_edit) {
            return Err(err(
                403,
                "ErrorAccessDenied",
                "Access is denied. Check credentials and try again.",
            ));
        }
        let before = items_of(user, &ev);
        bury(user, before, &[], &ev.calendar, seq);
        user.events.remove(id);
        match &ev.kind {
            Kind::Master => {
                let exceptions: Vec<String> = user
                    .events
                    .values()
                    .filter(|e| matches!(&e.kind, Kind::Exception { master, .. } if master == id))
                    .map(|e| e.id.clone())
                    .collect();
                for x in exceptions {
                    user.events.remove(&x);
                    user.tombstones.push(Tombstone {
                        id: x,
                        calendar: ev.calendar.clone(),
                        seq,
                    });
                }
            }
            Kind::Exception {
                master,
                original_start,
            } => {
                if let Some(m) = user.events.get_mut(master) {
                    m.cancelled.push(*original_start);
                }
            }
            Kind::Single => {}
        }
        return Ok(());
    }
    let (master_id, _) = parse_occurrence_id(id).ok_or_else(not_found)?;
    let master = user.events.get(&master_id).cloned().ok_or_else(not_found)?;
    let item = items_of(user, &master)
        .into_iter()
        .find(|i| i.id == id)
        .ok_or_else(not_found)?;
    precondition(if_match, &master.change_key)?;
    user.tombstones.push(Tombstone {
        id: id.to_string(),
        calendar: master.calendar.clone(),
        seq,
    });
    if let Some(m) = user.events.get_mut(&master_id) {
        m.cancelled.push(item.start);
    }
    Ok(())
}

/// An event, exception or occurrence by id.
pub(crate) fn get(user: &User, id: &str) -> Option<Item> {
    if let Some(ev) = user.events.get(id) {
        return Some(as_item(ev));
    }
    let (master_id, _) = parse_occurrence_id(id)?;
    let master = user.events.get(&master_id)?;
    items_of(user, master).into_iter().find(|i| i.id == id)
}
