//! Event resources: lookup (stored events, and instances of a series that
//! exist only by expansion), the write rules of insert / patch / update /
//! delete, and the views served to clients.

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use serde_json::{json, Map, Value};

use crate::discovery::Discovery;
use crate::error::ApiError;
use crate::model::{Calendar, State, StoredEvent};
use crate::recurrence::Series;
use crate::when::{fmt_millis, EventTime, When};

/// Who writes and with which request options.
#[derive(Debug, Clone, Default)]
pub(crate) struct WriteOptions {
    /// The signed-in user (`None`: the control API, "another client").
    pub user: Option<String>,
    /// `supportsAttachments=true` on the request.
    pub supports_attachments: bool,
    /// `conferenceDataVersion=1` on the request.
    pub conference_data: bool,
}

impl WriteOptions {
    fn is_control(&self) -> bool {
        self.user.is_none()
    }
}

/// What an event id in a path names.
pub(crate) enum Target {
    /// A stored event (single, master, exception, or tombstone).
    Stored,
    /// An unmodified instance of a series.
    Instance { master_id: String, original: When },
    /// Nothing.
    Missing,
}

/// Shared guest properties and their defaults.
const SHARED_PROPERTIES: [(&str, bool); 3] = [
    ("guestsCanModify", false),
    ("guestsCanInviteOthers", true),
    ("guestsCanSeeOtherGuests", true),
];

/// Resolves an event id on a calendar.
pub(crate) fn resolve(cal: &Calendar, id: &str) -> Target {
    if cal.events.contains_key(id) {
        return Target::Stored;
    }
    let Some((master_id, stamp)) = id.rsplit_once('_') else {
        return Target::Missing;
    };
    let (Some(master), Some(original)) = (cal.events.get(master_id), When::from_stamp(stamp))
    else {
        return Target::Missing;
    };
    if master.is_cancelled() || !master.is_master() {
        return Target::Missing;
    }
    match series_of(cal, master) {
        Some((series, _, zone)) if series.contains(original, zone) => Target::Instance {
            master_id: master_id.to_string(),
            original,
        },
        _ => Target::Missing,
    }
}

/// A master's series, its start, and the zone it expands in.
pub(crate) fn series_of(cal: &Calendar, master: &StoredEvent) -> Option<(Series, EventTime, Tz)> {
    let start = EventTime::parse(master.body.get("start")?, "start").ok()?;
    let zone = start.zone.unwrap_or(cal.time_zone);
    let lines: Vec<String> = master
        .body
        .get("recurrence")?
        .as_array()?
        .iter()
        .filter_map(|l| l.as_str().map(str::to_string))
        .collect();
    let series = Series::new(&start, zone, &lines).ok()?;
    Some((series, start, zone))
}

/// The start and end of a stored resource.
pub(crate) fn times(body: &Map<String, Value>) -> Option<(EventTime, EventTime)> {
    let start = EventTime::parse(body.get("start")?, "start").ok()?;
    let end = EventTime::parse(body.get("end")?, "end").ok()?;
    Some((start, end))
}

/// `[start, end)` of a resource as instants (dates in `zone`).
pub(crate) fn span(body: &Map<String, Value>, zone: Tz) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let (s, e) = times(body)?;
    Some((s.instant(zone), e.instant(zone)))
}

/// The instance of `master` that starts (originally) at `original`.
pub(crate) fn synthesize_instance(master: &StoredEvent, original: When) -> Map<String, Value> {
    let mut body = master.body.clone();
    body.remove("recurrence");
    let (start, end) = times(&master.body).expect("stored masters have times");
    let duration = match (start.when, end.when) {
        (When::At(s), When::At(e)) => e - s,
        (When::Date(s), When::Date(e)) => Duration::days((e - s).num_days()),
        _ => Duration::zero(),
    };
    let id = master.str_field("id").unwrap_or_default().to_string();
    let new_start = EventTime {
        when: original,
        zone: start.zone,
    };
    let new_end = EventTime {
        when: original.shifted(duration),
        zone: end.zone,
    };
    let instance_id = format!("{id}_{}", original.stamp());
    body.insert("etag".into(), json!(instance_etag(master, &instance_id)));
    body.insert("id".into(), json!(instance_id));
    body.insert("recurringEventId".into(), json!(id));
    body.insert("originalStartTime".into(), new_start.to_json());
    body.insert("start".into(), new_start.to_json());
    body.insert("end".into(), new_end.to_json());
    body
}

/// The etag of an unmodified instance: its own (not its master's, as an
/// instance is a resource of its own at Google), and new whenever its
/// master changes.
fn instance_etag(master: &StoredEvent, instance_id: &str) -> String {
    use sha2::Digest as _;
    let master_etag = master.str_field("etag").unwrap_or_default();
    let digest = sha2::Sha256::digest(format!("{master_etag}/{instance_id}").as_bytes());
    let mut n = [0u8; 8];
    n.copy_from_slice(&digest[..8]);
    // Digits like Google's etags, never one the counter hands out soon.
    format!(
        "\"{}\"",
        u64::from_be_bytes(n) % 9_000_000_000_000_000 + 1_000_000_000_000_000
    )
}

/// The current resource behind an id (stored, or a synthesized instance).
pub(crate) fn current(cal: &Calendar, id: &str) -> Result<Map<String, Value>, ApiError> {
    match resolve(cal, id) {
        Target::Stored => Ok(cal.events[id].body.clone()),
        Target::Instance {
            master_id,
            original,
        } => Ok(synthesize_instance(&cal.events[&master_id], original)),
        Target::Missing => Err(ApiError::not_found()),
    }
}

fn check_if_match(current: &Map<String, Value>, if_match: Option<&str>) -> Result<(), ApiError> {
    if let Some(expected) = if_match {
        let etag = current
            .get("etag")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if expected.trim() != "*" && expected.trim() != etag {
            return Err(ApiError::condition_not_met());
        }
    }
    Ok(())
}

/// A client-supplied event id: base32hex (`a`-`v`, `0`-`9`), 5 to 1024 characters.
pub(crate) fn valid_client_id(id: &str) -> bool {
    (5..=1024).contains(&id.len()) && id.bytes().all(|b| matches!(b, b'a'..=b'v' | b'0'..=b'9'))
}

fn calendar<'a>(state: &'a mut State, cal_id: &str) -> Result<&'a mut Calendar, ApiError> {
    state
        .calendars
        .get_mut(cal_id)
        .ok_or_else(ApiError::not_found)
}

/// `events.insert`.
pub(crate) fn insert(
    state: &mut State,
    cal_id: &str,
    input: Value,
    opts: &WriteOptions,
) -> Result<Map<String, Value>, ApiError> {
    let Value::Object(mut input) = input else {
        return Err(ApiError::parse_error());
    };
    strip_nulls(&mut input);
    let id = match input.get("id") {
        Some(Value::String(id)) => {
            if !valid_client_id(id) {
                return Err(ApiError::invalid("Invalid resource id value."));
            }
            id.clone()
        }
        Some(_) => return Err(ApiError::invalid("Invalid resource id value.")),
        None => state.random_event_id(),
    };
    let cal = state
        .calendars
        .get(cal_id)
        .ok_or_else(ApiError::not_found)?;
    if cal.events.contains_key(&id) {
        return Err(ApiError::duplicate());
    }
    if !opts.is_control() && input.get("eventType").and_then(Value::as_str) == Some("fromGmail") {
        return Err(ApiError::bad_request(
            "eventTypeRestriction",
            "Event type fromGmail cannot be created.",
        ));
    }
    let now = state.now();
    let etag = state.next_etag();
    let cal = state
        .calendars
        .get(cal_id)
        .ok_or_else(ApiError::not_found)?;
    let body = build(cal, input, None, &id, opts, now, etag)?;
    store(state, cal_id, id, body.clone(), None);
    Ok(body)
}

/// `events.patch`: merge `input` into the current resource (arrays
/// replaced, `null` deletes).
pub(crate) fn patch(
    state: &mut State,
    cal_id: &str,
    id: &str,
    input: Value,
    if_match: Option<&str>,
    opts: &WriteOptions,
) -> Result<Map<String, Value>, ApiError> {
    let Value::Object(input) = input else {
        return Err(ApiError::parse_error());
    };
    let cal = state
        .calendars
        .get(cal_id)
        .ok_or_else(ApiError::not_found)?;
    let existing = current(cal, id)?;
    check_if_match(&existing, if_match)?;
    let mut merged = Value::Object(existing.clone());
    merge_patch(&mut merged, &Value::Object(input));
    let Value::Object(merged) = merged else {
        unreachable!("merging objects yields an object")
    };
    replace_with(state, cal_id, id, merged, existing, opts)
}

/// `events.update`: replace the whole resource.
pub(crate) fn update(
    state: &mut State,
    cal_id: &str,
    id: &str,
    input: Value,
    if_match: Option<&str>,
    opts: &WriteOptions,
) -> Result<Map<String, Value>, ApiError> {
    let Value::Object(mut input) = input else {
        return Err(ApiError::parse_error());
    };
    strip_nulls(&mut input);
    let cal = state
        .calendars
        .get(cal_id)
        .ok_or_else(ApiError::not_found)?;
    let existing = current(cal, id)?;
    check_if_match(&existing, if_match)?;
    replace_with(state, cal_id, id, input, existing, opts)
}

fn replace_with(
    state: &mut State,
    cal_id: &str,
    id: &str,
    input: Map<String, Value>,
    existing: Map<String, Value>,
    opts: &WriteOptions,
) -> Result<Map<String, Value>, ApiError> {
    let now = state.now();
    let etag = state.next_etag();
    let cal = state
        .calendars
        .get(cal_id)
        .ok_or_else(ApiError::not_found)?;
    let body = build(cal, input, Some(&existing), id, opts, now, etag)?;
    let insert_no = cal.events.get(id).map(|e| e.insert_no);
    store(state, cal_id, id.to_string(), body.clone(), insert_no);
    Ok(body)
}

/// `events.delete`.
pub(crate) fn delete(
    state: &mut State,
    cal_id: &str,
    id: &str,
    if_match: Option<&str>,
) -> Result<(), ApiError> {
    let cal = state
        .calendars
        .get(cal_id)
        .ok_or_else(ApiError::not_found)?;
    let existing = current(cal, id)?;
    if existing.get("status").and_then(Value::as_str) == Some("cancelled") {
        return Err(ApiError::deleted());
    }
    check_if_match(&existing, if_match)?;
    let was_master = cal.events.get(id).is_some_and(StoredEvent::is_master);
    let insert_no = cal.events.get(id).map(|e| e.insert_no);
    let exceptions: Vec<String> = if was_master {
        cal.events
            .values()
            .filter(|e| e.recurring_event_id() == Some(id) && !e.is_cancelled())
            .filter_map(|e| e.str_field("id").map(str::to_string))
            .collect()
    } else {
        Vec::new()
    };
    let now = state.now();
    for target in std::iter::once(id.to_string()).chain(exceptions) {
        let mut body = if target == id {
            existing.clone()
        } else {
            calendar(state, cal_id)?.events[&target].body.clone()
        };
        let etag = state.next_etag();
        body.insert("status".into(), json!("cancelled"));
        body.insert("etag".into(), json!(etag));
        body.insert("updated".into(), json!(fmt_millis(now)));
        let no = if target == id {
            insert_no
        } else {
            calendar(state, cal_id)?
                .events
                .get(&target)
                .map(|e| e.insert_no)
        };
        store(state, cal_id, target, body, no);
    }
    Ok(())
}

/// Saves a resource, bumping the calendar's change counter.
pub(crate) fn store(
    state: &mut State,
    cal_id: &str,
    id: String,
    body: Map<String, Value>,
    insert_no: Option<u64>,
) {
    let insert_no = insert_no.unwrap_or_else(|| {
        state.insert_counter += 1;
        state.insert_counter
    });
    let seq = state.bump_calendar(cal_id);
    if let Some(cal) = state.calendars.get_mut(cal_id) {
        cal.events.insert(
            id,
            StoredEvent {
                body,
                insert_no,
                seq,
            },
        );
    }
}

/// Removes `null` members at every depth (insert and update treat them as absent).
pub(crate) fn strip_nulls(map: &mut Map<String, Value>) {
    map.retain(|_, v| !v.is_null());
    for v in map.values_mut() {
        match v {
            Value::Object(m) => strip_nulls(m),
            Value::Array(items) => {
                for item in items {
                    if let Value::Object(m) = item {
                        strip_nulls(m);
                    }
                }
            }
            _ => {}
        }
    }
}

/// JSON merge patch: objects merge, `null` deletes, anything else replaces.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let map = target.as_object_mut().expect("made an object above");
    for (k, v) in patch {
        if v.is_null() {
            map.remove(k);
        } else {
            merge_patch(map.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

fn bad(message: &str) -> ApiError {
    ApiError::invalid(message)
}

fn check_enum(body: &Map<String, Value>, key: &str, allowed: &[&str]) -> Result<(), ApiError> {
    match body.get(key).and_then(Value::as_str) {
        Some(v) if !allowed.contains(&v) => Err(bad(&format!("Invalid value for: {key}"))),
        _ => Ok(()),
    }
}

/// Builds the stored resource from a request body and applies every write
/// rule. `existing` is the resource being replaced (patch/update), `id` the
/// final id.
fn build(
    cal: &Calendar,
    mut input: Map<String, Value>,
    existing: Option<&Map<String, Value>>,
    id: &str,
    opts: &WriteOptions,
    now: DateTime<Utc>,
    etag: String,
) -> Result<Map<String, Value>, ApiError> {
    // Types and names per the discovery document; start/end are read below
    // (a request may give a local dateTime plus timeZone, which is not RFC 3339).
    let mut shape = input.clone();
    for key in ["start", "end", "originalStartTime"] {
        if let Some(Value::Object(t)) = shape.get_mut(key) {
            t.remove("dateTime");
        }
    }
    if let Some(v) = Discovery::calendar_v3()
        .validate("Event", &Value::Object(shape))
        .into_iter()
        .next()
    {
        let name = v.path.trim_start_matches("$.");
        return Err(if v.message.starts_with("property not in") {
            bad(&format!(
                "Invalid JSON payload received. Unknown name \"{name}\": Cannot find field."
            ))
        } else {
            bad(&format!("Invalid value for: {name}"))
        });
    }
    let old = |k: &str| existing.and_then(|e| e.get(k)).cloned();
    for key in [
        "kind",
        "etag",
        "htmlLink",
        "created",
        "updated",
        "hangoutLink",
        "creator",
        "locked",
        "attendeesOmitted",
        "recurringEventId",
        "originalStartTime",
        "id",
    ] {
        input.remove(key);
    }
    if !opts.is_control() {
        input.remove("organizer");
    }
    if existing.is_some() {
        input.remove("iCalUID");
        input.remove("privateCopy");
    }

    // Times.
    let start_v = input
        .get("start")
        .ok_or_else(|| ApiError::required("start time"))?;
    let end_v = input
        .get("end")
        .ok_or_else(|| ApiError::required("end time"))?;
    let start = EventTime::parse(start_v, "start")?;
    let end = EventTime::parse(end_v, "end")?;
    match (start.when, end.when) {
        (When::Date(s), When::Date(e)) if e <= s => {
            return Err(ApiError::time_range_empty().at_param("end"))
        }
        (When::At(s), When::At(e)) if e < s => {
            return Err(ApiError::time_range_empty().at_param("end"))
        }
        (When::Date(_), When::At(_)) | (When::At(_), When::Date(_)) => {
            return Err(bad(
                "Start and end times must either both be date or both be dateTime.",
            ))
        }
        _ => {}
    }
    input.insert("start".into(), start.to_json());
    input.insert("end".into(), end.to_json());

    // Recurrence.
    let is_instance = old("recurringEventId").is_some();
    match input.get("recurrence") {
        Some(Value::Array(lines)) if !lines.is_empty() => {
            if is_instance {
                return Err(bad("Invalid recurrence rule: instances cannot recur."));
            }
            if matches!(start.when, When::At(_)) && start.zone.is_none() {
                return Err(bad("Missing time zone definition for start time."));
            }
            let lines: Vec<String> = lines
                .iter()
                .filter_map(|l| l.as_str().map(str::to_string))
                .collect();
            Series::new(&start, start.zone.unwrap_or(cal.time_zone), &lines)?;
        }
        Some(Value::Array(_)) => {
            input.remove("recurrence");
        }
        _ => {}
    }

    // Event type: immutable.
    let event_type = input
        .get("eventType")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| old("eventType").and_then(|v| v.as_str().map(str::to_string)))
        .unwrap_or_else(|| "default".into());
    const TYPES: [&str; 6] = [
        "default",
        "birthday",
        "focusTime",
        "fromGmail",
        "outOfOffice",
        "workingLocation",
    ];
    if !TYPES.contains(&event_type.as_str()) {
        return Err(bad("Invalid value for: eventType"));
    }
    if let Some(previous) = old("eventType").and_then(|v| v.as_str().map(str::to_string)) {
        if previous != event_type {
            return Err(ApiError::bad_request(
                "eventTypeRestriction",
                "The event type cannot be changed.",
            ));
        }
    }
    input.insert("eventType".into(), json!(event_type));

    check_enum(&input, "status", &["confirmed", "tentative", "cancelled"])?;
    check_enum(&input, "transparency", &["opaque", "transparent"])?;
    check_enum(
        &input,
        "visibility",
        &["default", "public", "private", "confidential"],
    )?;
    if !input.contains_key("status") {
        input.insert("status".into(), json!("confirmed"));
    }

    // Reminders.
    match input.get("reminders") {
        Some(r) => {
            let overrides = r
                .get("overrides")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if r.get("useDefault").and_then(Value::as_bool) == Some(true) && !overrides.is_empty() {
                return Err(bad(
                    "Cannot specify both default reminders and overrides at the same time.",
                ));
            }
            if overrides.len() > 5 {
                return Err(bad("Cannot specify more than 5 override reminders."));
            }
            for o in &overrides {
                let minutes = o.get("minutes").and_then(Value::as_i64).unwrap_or(-1);
                if !(0..=40320).contains(&minutes) {
                    return Err(bad("Invalid value for: reminders.overrides.minutes"));
                }
                if !matches!(
                    o.get("method").and_then(Value::as_str),
                    Some("email" | "popup")
                ) {
                    return Err(bad("Invalid value for: reminders.overrides.method"));
                }
            }
        }
        None => {
            input.insert("reminders".into(), json!({"useDefault": true}));
        }
    }

    // Attendees.
    if let Some(attendees) = input.get("attendees").and_then(Value::as_array) {
        for a in attendees {
            if a.get("email")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                return Err(ApiError::required("attendee email"));
            }
            if let Some(s) = a.get("responseStatus").and_then(Value::as_str) {
                if !["needsAction", "declined", "tentative", "accepted"].contains(&s) {
                    return Err(bad("Invalid value for: attendees.responseStatus"));
                }
            }
        }
    }

    // Attachments and conference data: only with the request options.
    if opts.supports_attachments || opts.is_control() {
        if input
            .get("attachments")
            .and_then(Value::as_array)
            .is_some_and(|a| a.len() > 25)
        {
            return Err(bad("Cannot have more than 25 attachments."));
        }
    } else {
        input.remove("attachments");
        if let Some(a) = old("attachments") {
            input.insert("attachments".into(), a);
        }
    }
    if !opts.conference_data && !opts.is_control() {
        input.remove("conferenceData");
        if let Some(c) = old("conferenceData") {
            input.insert("conferenceData".into(), c);
        }
    }

    limit_extended_properties(&mut input)?;

    // Shared properties: only the organizer's copy may change them.
    let organizer = old("organizer")
        .or_else(|| input.get("organizer").cloned())
        .unwrap_or_else(|| json!({"email": cal.id, "displayName": cal.summary, "self": true}));
    let organizer_email = organizer
        .get("email")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if let (Some(previous), false) = (existing, opts.is_control()) {
        if organizer_email != cal.id {
            for (key, default) in SHARED_PROPERTIES {
                let before = previous
                    .get(key)
                    .and_then(Value::as_bool)
                    .unwrap_or(default);
                let after = input.get(key).and_then(Value::as_bool).unwrap_or(default);
                if before != after {
                    return Err(ApiError::forbidden(
                        "forbiddenForNonOrganizer",
                        "Shared properties can only be changed by the organizer of the event.",
                    ));
                }
            }
        }
    }
    let mut organizer = organizer;
    if let Some(o) = organizer.as_object_mut() {
        o.insert("self".into(), json!(organizer_email == cal.id));
    }

    // Server fields.
    input.insert("kind".into(), json!("calendar#event"));
    input.insert("id".into(), json!(id));
    input.insert("etag".into(), json!(etag));
    input.insert("organizer".into(), organizer);
    let creator = old("creator").unwrap_or_else(|| match &opts.user {
        Some(u) => json!({"email": u, "self": true}),
        None => json!({"email": cal.id}),
    });
    input.insert("creator".into(), creator);
    let ical = old("iCalUID")
        .or_else(|| input.get("iCalUID").cloned())
        .unwrap_or_else(|| json!(format!("{id}@google.com")));
    input.insert("iCalUID".into(), ical);
    input.insert(
        "htmlLink".into(),
        json!(format!("https://www.google.com/calendar/event?eid={id}")),
    );
    if !input.contains_key("sequence") {
        input.insert("sequence".into(), old("sequence").unwrap_or(json!(0)));
    }
    for key in ["recurringEventId", "originalStartTime", "privateCopy"] {
        if let Some(v) = old(key) {
            input.insert(key.into(), v);
        }
    }
    input.insert(
        "created".into(),
        old("created").unwrap_or_else(|| json!(fmt_millis(now))),
    );
    let updated = match existing {
        Some(previous) if only_reminders_changed(previous, &input) => {
            previous.get("updated").cloned()
        }
        _ => None,
    };
    input.insert(
        "updated".into(),
        updated.unwrap_or_else(|| json!(fmt_millis(now))),
    );
    Ok(input)
}

/// Whether two resources differ at most in reminders (and server stamps).
fn only_reminders_changed(before: &Map<String, Value>, after: &Map<String, Value>) -> bool {
    let strip = |m: &Map<String, Value>| {
        let mut m = m.clone();
        for k in ["reminders", "etag", "updated"] {
            m.remove(k);
        }
        m
    };
    strip(before) == strip(after)
}

/// Google's limits on extended properties: keys over 44 characters are
/// dropped, values over 1024 truncated; more than 300 properties or 32 kB
/// in one map is refused.
fn limit_extended_properties(input: &mut Map<String, Value>) -> Result<(), ApiError> {
    let Some(Value::Object(ext)) = input.get_mut("extendedProperties") else {
        return Ok(());
    };
    for which in ["private", "shared"] {
        let Some(Value::Object(map)) = ext.get_mut(which) else {
            continue;
        };
        map.retain(|k, _| k.chars().count() <= 44);
        for v in map.values_mut() {
            if let Value::String(s) = v {
                if s.chars().count() > 1024 {
                    *s = s.chars().take(1024).collect();
                }
            }
        }
        let bytes: usize = map
            .iter()
            .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
            .sum();
        if map.len() > 300 || bytes > 32 * 1024 {
            return Err(bad(
                "The extended properties of an event exceed the size limit.",
            ));
        }
        if map.is_empty() {
            ext.remove(which);
        }
    }
    if ext.is_empty() {
        input.remove("extendedProperties");
    }
    Ok(())
}

/// How an event is shown to a client.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct View {
    /// `timeZone` request parameter; else the calendar's zone.
    pub zone: Option<Tz>,
    /// `maxAttendees`.
    pub max_attendees: Option<usize>,
    /// Only free/busy fields (`calendar.events.freebusy` scope or a
    /// `freeBusyReader` role).
    pub free_busy_only: bool,
}

/// The served form of a stored resource.
pub(crate) fn render(body: &Map<String, Value>, cal_zone: Tz, view: View) -> Value {
    let zone = view.zone.unwrap_or(cal_zone);
    let mut out = body.clone();
    for key in ["start", "end", "originalStartTime"] {
        if let Some(t) = out.get(key).and_then(|v| EventTime::parse(v, key).ok()) {
            out.insert(key.into(), t.render(Some(zone)));
        }
    }
    if let Some(max) = view.max_attendees {
        if let Some(Value::Array(a)) = out.get_mut("attendees") {
            if a.len() > max {
                a.truncate(max);
                out.insert("attendeesOmitted".into(), json!(true));
            }
        }
    }
    if view.free_busy_only {
        const KEEP: [&str; 10] = [
            "kind",
            "etag",
            "id",
            "status",
            "start",
            "end",
            "transparency",
            "recurringEventId",
            "originalStartTime",
            "eventType",
        ];
        out.retain(|k, _| KEEP.contains(&k.as_str()));
    }
    Value::Object(out)
}

/// The minimal form of a cancelled resource in listings: `id` and `status`
/// (and for instances `recurringEventId` and `originalStartTime`).
pub(crate) fn render_cancelled(body: &Map<String, Value>, cal_zone: Tz, view: View) -> Value {
    let mut out = Map::new();
    for key in ["kind", "etag", "id", "status", "recurringEventId"] {
        if let Some(v) = body.get(key) {
            out.insert(key.into(), v.clone());
        }
    }
    if let Some(t) = body
        .get("originalStartTime")
        .and_then(|v| EventTime::parse(v, "originalStartTime").ok())
    {
        out.insert(
            "originalStartTime".into(),
            t.render(Some(view.zone.unwrap_or(cal_zone))),
        );
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn state_with_calendar() -> State {
        let mut s = State::new(&crate::FakeConfig::default());
        s.calendars.insert(
            "a@example.com".into(),
            Calendar {
                id: "a@example.com".into(),
                summary: "a@example.com".into(),
                time_zone: Tz::UTC,
                events: HashMap::new(),
                seq: 0,
                token_epoch: 0,
                resource_id: "r".into(),
                updated: Utc::now(),
            },
        );
        s
    }

    fn opts() -> WriteOptions {
        WriteOptions {
            user: Some("a@example.com".into()),
            ..Default::default()
        }
    }

    fn event(extra: Value) -> Value {
        let mut e = json!({
            "summary": "x",
            "start": {"dateTime": "2024-01-15T10:00:00Z"},
            "end": {"dateTime": "2024-01-15T11:00:00Z"},
        });
        merge_patch(&mut e, &extra);
        e
    }

    #[test]
    fn client_ids_must_be_base32hex_of_5_to_1024() {
        assert!(valid_client_id("abcde"));
        assert!(valid_client_id("0123456789abcdefghijklmnopqrstuv"));
        assert!(!valid_client_id("abcd"));
        assert!(!valid_client_id("abcdw"));
        assert!(!valid_client_id("ABCDE"));
        assert!(!valid_client_id(&"a".repeat(1025)));
    }

    #[test]
    fn patch_merges_replaces_arrays_and_deletes_nulls() {
        let mut s = state_with_calendar();
        let e = insert(
            &mut s,
            "a@example.com",
            event(
                json!({"id": "abcde", "attendees": [{"email": "x@y"}, {"email": "z@y"}],
                "extendedProperties": {"private": {"keep": "1", "drop": "2"}}}),
            ),
            &opts(),
        )
        .unwrap();
        let p = patch(
            &mut s,
            "a@example.com",
            "abcde",
            json!({"attendees": [{"email": "q@y"}], "extendedProperties": {"private": {"drop": null, "new": "3"}}}),
            Some(e["etag"].as_str().unwrap()),
            &opts(),
        )
        .unwrap();
        assert_eq!(p["summary"], "x");
        assert_eq!(p["attendees"], json!([{"email": "q@y"}]));
        assert_eq!(
            p["extendedProperties"]["private"],
            json!({"keep": "1", "new": "3"})
        );
        assert_ne!(p["etag"], e["etag"]);
    }

    #[test]
    fn long_extended_property_keys_are_dropped_and_values_truncated() {
        let mut s = state_with_calendar();
        let long_key = "k".repeat(45);
        let e = insert(
            &mut s,
            "a@example.com",
            event(
                json!({"extendedProperties": {"private": {long_key: "v", "v": "x".repeat(2000)}}}),
            ),
            &opts(),
        )
        .unwrap();
        let private = e["extendedProperties"]["private"].as_object().unwrap();
        assert_eq!(private.len(), 1);
        assert_eq!(private["v"].as_str().unwrap().len(), 1024);
    }

    #[test]
    fn reminder_only_changes_keep_updated_but_not_the_etag() {
        let mut s = state_with_calendar();
        let e = insert(
            &mut s,
            "a@example.com",
            event(json!({"id": "abcde"})),
            &opts(),
        )
        .unwrap();
        s.clock_offset = Duration::seconds(60);
        let p = patch(
            &mut s,
            "a@example.com",
            "abcde",
            json!({"reminders": {"useDefault": false, "overrides": [{"method": "popup", "minutes": 5}]}}),
            None,
            &opts(),
        )
        .unwrap();
        assert_eq!(p["updated"], e["updated"]);
        assert_ne!(p["etag"], e["etag"]);
        let p2 = patch(
            &mut s,
            "a@example.com",
            "abcde",
            json!({"summary": "y"}),
            None,
            &opts(),
        )
        .unwrap();
        assert_ne!(p2["updated"], e["updated"]);
    }

    #[test]
    fn event_type_cannot_change_and_from_gmail_cannot_be_created() {
        let mut s = state_with_calendar();
        insert(
            &mut s,
            "a@example.com",
            event(json!({"id": "abcde", "eventType": "focusTime"})),
            &opts(),
        )
        .unwrap();
        let err = patch(
            &mut s,
            "a@example.com",
            "abcde",
            json!({"eventType": "default"}),
            None,
            &opts(),
        )
        .unwrap_err();
        assert_eq!(err.status.as_u16(), 400);
        let err = insert(
            &mut s,
            "a@example.com",
            event(json!({"eventType": "fromGmail"})),
            &opts(),
        )
        .unwrap_err();
        assert_eq!(err.status.as_u16(), 400);
    }

    #[test]
    fn shared_properties_are_frozen_on_a_non_organizer_copy() {
        let mut s = state_with_calendar();
        insert(
            &mut s,
            "a@example.com",
            event(json!({"id": "abcde", "organizer": {"email": "boss@example.com"}, "guestsCanModify": true})),
            &WriteOptions::default(),
        )
        .unwrap();
        // An update that omits guestsCanModify resets it: refused.
        let err = update(
            &mut s,
            "a@example.com",
            "abcde",
            event(json!({})),
            None,
            &opts(),
        )
        .unwrap_err();
        assert_eq!(err.reason, "forbiddenForNonOrganizer");
        // A patch that leaves it alone is fine.
        patch(
            &mut s,
            "a@example.com",
            "abcde",
            json!({"summary": "z"}),
            None,
            &opts(),
        )
        .unwrap();
    }
}
