//! Pure conversions between Google Calendar payloads and the common model:
//! events (singles, series masters and exceptions) and calendar-list entries
//! into `calbridge.v1` messages, `calbridge.v1.Event`s into request bodies,
//! instance ids, and the event id an idempotency key becomes. No I/O.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use calbridge::pb;
use calbridge::time::{boundary_utc, from_timestamp, parse_event_time, to_timestamp, Boundary};
use calbridge::Invalid;

use crate::model;
pub use crate::times::{instance_id, parse_instance_id, parse_when, MapError, When};

/// The private extended property that holds the caller's client event id
/// (at most 44 characters, Google's key limit).
pub const CLIENT_ID_PROPERTY: &str = "calbridgeClientEventId";

/// The Google event id for a create's idempotency key: the key itself when
/// it is already a valid client-supplied id (base32hex `[a-v0-9]`, 5 to
/// 1024 characters; the scheduler's lowercase hex keys are), otherwise
/// `cb` followed by the base32hex SHA-256 of the key (54 characters).
pub fn event_id_for_key(key: &str) -> String {
    let valid = (5..=1024).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'v').contains(&b));
    if valid {
        return key.to_string();
    }
    format!("cb{}", base32hex_lower(&Sha256::digest(key.as_bytes())))
}

/// RFC 4648 base32hex, lowercase, without padding.
fn base32hex_lower(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789abcdefghijklmnopqrstuv";
    let mut out = String::with_capacity(bytes.len() * 8 / 5 + 1);
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// What a mapping needs besides the item.
#[derive(Debug, Clone, Copy, Default)]
pub struct Context {
    /// The calendar's zone (from the listing), for date-times without one
    /// and for all-day dates.
    pub calendar_zone: Option<Tz>,
    /// Strip titles, descriptions, locations, attendees and organizers.
    pub busy_only: bool,
}

fn rfc3339(s: Option<&str>) -> Option<prost_types::Timestamp> {
    DateTime::parse_from_rfc3339(s?)
        .ok()
        .map(|t| to_timestamp(t.with_timezone(&Utc)))
}

fn response_status(s: Option<&str>) -> pb::ResponseStatus {
    match s {
        Some("needsAction") => pb::ResponseStatus::NeedsAction,
        Some("accepted") => pb::ResponseStatus::Accepted,
        Some("declined") => pb::ResponseStatus::Declined,
        Some("tentative") => pb::ResponseStatus::Tentative,
        _ => pb::ResponseStatus::Unspecified,
    }
}

fn response_status_name(s: pb::ResponseStatus) -> Option<&'static str> {
    match s {
        pb::ResponseStatus::Unspecified => None,
        pb::ResponseStatus::NeedsAction => Some("needsAction"),
        pb::ResponseStatus::Accepted => Some("accepted"),
        pb::ResponseStatus::Declined => Some("declined"),
        pb::ResponseStatus::Tentative => Some("tentative"),
    }
}

/// Maps a single event, a series master (with its recurrence lines) or an
/// exception (named by its instance id and linked to its series). Times
/// are taken as they are; expansion is [`crate::recurrence`]'s job.
pub fn event_from_google(g: &model::Event, ctx: &Context) -> Result<pb::Event, MapError> {
    let id =
        g.id.as_deref()
            .filter(|i| !i.is_empty())
            .ok_or(MapError::MissingId)?;
    let start = parse_when(
        g.start.as_ref().ok_or(MapError::MissingTime("start"))?,
        "start",
        ctx.calendar_zone,
    )?;
    let end = match g.end.as_ref() {
        Some(e) => parse_when(e, "end", ctx.calendar_zone)?,
        // Google always sends an end; be lenient with one that does not.
        None => match start {
            When::Date(d) => When::Date(d + chrono::Duration::days(1)),
            at => at,
        },
    };
    let mut provider_event_id = id.to_string();
    let mut recurrence_link = None;
    if let (Some(series), Some(original)) = (
        g.recurring_event_id.as_deref().filter(|s| !s.is_empty()),
        g.original_start_time.as_ref(),
    ) {
        let original = parse_when(original, "originalStartTime", ctx.calendar_zone)?;
        provider_event_id = instance_id(series, &original);
        recurrence_link = Some(pb::RecurrenceLink {
            series_event_id: series.to_string(),
            original_start: Some(original.event_time()),
        });
    }
    let client_event_id = g
        .private_property(CLIENT_ID_PROPERTY)
        .unwrap_or_default()
        .to_string();
    let mut e = pb::Event {
        provider_event_id,
        managed: !client_event_id.is_empty(),
        client_event_id,
        ical_uid: g.ical_uid.clone().unwrap_or_default(),
        version: g.etag.clone().unwrap_or_default(),
        title: g.summary.clone().unwrap_or_default(),
        description: g.description.clone().unwrap_or_default(),
        location: g.location.clone().unwrap_or_default(),
        start: Some(start.event_time()),
        end: Some(end.event_time()),
        status: match g.status.as_deref() {
            Some("tentative") => pb::EventStatus::Tentative,
            Some("cancelled") => pb::EventStatus::Cancelled,
            _ => pb::EventStatus::Confirmed,
        } as i32,
        transparency: match g.transparency.as_deref() {
            Some("transparent") => pb::Transparency::Transparent,
            _ => pb::Transparency::Opaque,
        } as i32,
        attendees: g
            .attendees
            .iter()
            .flatten()
            .filter_map(|a| {
                Some(pb::Attendee {
                    email: a.email.clone().filter(|m| !m.is_empty())?,
                    display_name: a.display_name.clone().unwrap_or_default(),
                    response_status: response_status(a.response_status.as_deref()) as i32,
                    optional: a.optional.unwrap_or(false),
                })
            })
            .collect(),
        organizer: g
            .organizer
            .as_ref()
            .filter(|o| o.email.is_some())
            .map(|o| pb::Organizer {
                email: o.email.clone().unwrap_or_default(),
                display_name: o.display_name.clone().unwrap_or_default(),
            }),
        recurrence: if recurrence_link.is_none() {
            g.recurrence.clone().unwrap_or_default()
        } else {
            Vec::new()
        },
        recurrence_link,
        created_at: rfc3339(g.created.as_deref()),
        updated_at: rfc3339(g.updated.as_deref()),
        event_type: match g.event_type.as_deref() {
            Some("outOfOffice") => pb::EventType::OutOfOffice,
            Some("focusTime") => pb::EventType::FocusTime,
            Some("workingLocation") => pb::EventType::WorkingLocation,
            _ => pb::EventType::Default,
        } as i32,
        ..Default::default()
    };
    if ctx.busy_only {
        e = calbridge::adapter::free_busy_view(e);
    }
    Ok(e)
}

/// True when `[start, end)` overlaps `[w_start, w_end)`; a zero-length
/// event counts when it starts inside. Dates are read in `zone`.
pub fn overlaps(
    start: &When,
    end: &When,
    zone: Option<Tz>,
    w_start: DateTime<Utc>,
    w_end: DateTime<Utc>,
) -> bool {
    let (s, e) = (start.utc(zone), end.utc(zone));
    s < w_end && (e > w_start || (e == s && s >= w_start))
}

/// True when a mapped event overlaps the window.
pub fn event_overlaps(
    e: &pb::Event,
    zone: Option<Tz>,
    w_start: DateTime<Utc>,
    w_end: DateTime<Utc>,
) -> bool {
    let get = |t: Option<&pb::EventTime>| {
        t.and_then(|t| parse_event_time(t).ok())
            .map(|b| boundary_utc(b, zone))
    };
    match (get(e.start.as_ref()), get(e.end.as_ref())) {
        (Some(s), Some(en)) => s < w_end && (en > w_start || (en == s && s >= w_start)),
        _ => false,
    }
}

/// Google's literal id of the signed-in user's main calendar.
pub const PRIMARY: &str = "primary";

/// Maps a calendar-list entry; `None` for entries without an id or
/// removed ones. The user's primary calendar is named `primary` (Google
/// accepts the literal everywhere a calendar id goes): its real id is the
/// user's e-mail address, which calbridge then never keeps in clear.
pub fn calendar_from_entry(c: &model::CalendarListEntry) -> Option<pb::Calendar> {
    let real_id = c.id.clone().filter(|i| !i.is_empty())?;
    if c.deleted == Some(true) {
        return None;
    }
    let id = if c.primary == Some(true) {
        PRIMARY.to_string()
    } else {
        real_id.clone()
    };
    Some(pb::Calendar {
        name: c
            .summary_override
            .clone()
            .filter(|s| !s.is_empty())
            .or_else(|| c.summary.clone())
            .unwrap_or(real_id),
        calendar_id: id,
        primary: c.primary.unwrap_or(false),
        // Only writers and owners may change events.
        read_only: !matches!(c.access_role.as_deref(), Some("writer" | "owner")),
        time_zone: c.time_zone.clone().unwrap_or_default(),
        color: c
            .background_color
            .clone()
            .filter(|s| s.starts_with('#'))
            .unwrap_or_default(),
        ..Default::default()
    })
}

/// How a request body is built.
#[derive(Debug, Clone, Copy, Default)]
pub struct BodyOptions<'a> {
    /// The id to create the event under (inserts only).
    pub id: Option<&'a str>,
    /// True for a patch: a boundary switching between date and date-time
    /// must clear the other form explicitly.
    pub patch: bool,
    /// True when writing one instance of a series (no recurrence lines).
    pub instance: bool,
}

fn google_time(t: &pb::EventTime, field: &str, patch: bool) -> Result<Value, Invalid> {
    match parse_event_time(t).map_err(|e| Invalid::field(field, e.to_string()))? {
        Boundary::Instant(at) => {
            let zone = if t.time_zone.is_empty() {
                Tz::UTC
            } else {
                calbridge::time::parse_zone(&t.time_zone)
                    .map_err(|e| Invalid::field(format!("{field}.time_zone"), e.to_string()))?
            };
            let mut v = json!({
                "dateTime": at.with_timezone(&zone).to_rfc3339_opts(SecondsFormat::Secs, true),
                "timeZone": zone.name(),
            });
            if patch {
                v["date"] = Value::Null;
            }
            Ok(v)
        }
        Boundary::Date(d) => {
            let mut v = json!({ "date": d.format("%Y-%m-%d").to_string() });
            if patch {
                v["dateTime"] = Value::Null;
                v["timeZone"] = Value::Null;
            }
            Ok(v)
        }
    }
}

/// Checks an event for writing: the contract's rules plus Google's (a
/// series' lines parse, no DTSTART lines).
pub fn check_writable(e: &pb::Event, prefix: &str) -> Result<(), Invalid> {
    let mut inv = Invalid::default();
    calbridge::validate::check_event(&mut inv, prefix, e);
    for (i, line) in e.recurrence.iter().enumerate() {
        let name = line
            .split([':', ';'])
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        if !matches!(name.as_str(), "RRULE" | "EXRULE" | "RDATE" | "EXDATE") {
            inv.push(
                format!("{prefix}.recurrence[{i}]"),
                "must be an RRULE, EXRULE, RDATE or EXDATE line (the start and end come from the event)",
            );
        }
    }
    if inv.0.is_empty() && !e.recurrence.is_empty() {
        if let Err(m) = crate::rules::check(e) {
            inv.push(format!("{prefix}.recurrence"), m.to_string());
        }
    }
    inv.into_result()
}

/// The request body for an insert or a patch of `e`: every field the
/// contract owns (title, description, location, start and end with their
/// zone, status, transparency, attendees, recurrence), plus the caller's
/// client id in the private extended properties when there is one.
pub fn event_body(e: &pb::Event, opts: BodyOptions<'_>) -> Result<Value, Invalid> {
    check_writable(e, "event")?;
    let mut body = Map::new();
    if let Some(id) = opts.id {
        body.insert("id".into(), json!(id));
    }
    body.insert("summary".into(), json!(e.title));
    body.insert("description".into(), json!(e.description));
    body.insert("location".into(), json!(e.location));
    let start = e.start.as_ref().expect("checked: start is set");
    let end = e.end.as_ref().expect("checked: end is set");
    body.insert(
        "start".into(),
        google_time(start, "event.start", opts.patch)?,
    );
    body.insert("end".into(), google_time(end, "event.end", opts.patch)?);
    body.insert(
        "status".into(),
        json!(match e.status() {
            pb::EventStatus::Tentative => "tentative",
            pb::EventStatus::Cancelled => "cancelled",
            _ => "confirmed",
        }),
    );
    body.insert(
        "transparency".into(),
        json!(match e.transparency() {
            pb::Transparency::Transparent => "transparent",
            _ => "opaque",
        }),
    );
    let attendees: Vec<Value> = e
        .attendees
        .iter()
        .map(|a| {
            let mut m = Map::new();
            m.insert("email".into(), json!(a.email));
            if !a.display_name.is_empty() {
                m.insert("displayName".into(), json!(a.display_name));
            }
            if a.optional {
                m.insert("optional".into(), json!(true));
            }
            if let Some(s) = response_status_name(a.response_status()) {
                m.insert("responseStatus".into(), json!(s));
            }
            Value::Object(m)
        })
        .collect();
    body.insert("attendees".into(), Value::Array(attendees));
    if !opts.instance {
        body.insert("recurrence".into(), json!(e.recurrence));
    }
    if !e.client_event_id.is_empty() {
        let mut private = BTreeMap::new();
        private.insert(CLIENT_ID_PROPERTY, e.client_event_id.clone());
        body.insert("extendedProperties".into(), json!({ "private": private }));
    }
    Ok(Value::Object(body))
}

/// The UTC instant of a timestamp, for window arithmetic.
pub fn utc(t: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    from_timestamp(t)
}

#[cfg(test)]
mod tests;
