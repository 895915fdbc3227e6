//! Pure conversions between Google Calendar payloads and the common model:
//! events (singles, series masters and exceptions) and calendar-list entries
//! into `calbridge.v1` messages, `calbridge.v1.Event`s into request bodies,
//! instance ids, and the event id an idempotency key becomes. No I/O.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, TimeZone, Utc};
use chrono_tz::Tz;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use calbridge::pb::{self, event_time};
use calbridge::time::{boundary_utc, from_timestamp, parse_event_time, to_timestamp, Boundary};
use calbridge::Invalid;

use crate::model;

/// The private extended property that holds the caller's client event id
/// (at most 44 characters, Google's key limit).
pub const CLIENT_ID_PROPERTY: &str = "calbridgeClientEventId";

/// Why a Google item cannot be mapped. Messages never quote event content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// The item has no id.
    #[error("the item has no id")]
    MissingId,
    /// A required time is absent.
    #[error("the item has no {0}")]
    MissingTime(&'static str),
    /// A time does not parse.
    #[error("the item's {0} is not a valid date or RFC 3339 date-time")]
    BadTime(&'static str),
    /// The recurrence rule cannot be expanded.
    #[error("the series' recurrence cannot be expanded: {0}")]
    BadRule(String),
}

/// A parsed event boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// A timed boundary and the IANA zone it is expressed in, when known.
    At(DateTime<Utc>, Option<Tz>),
    /// An all-day date.
    Date(NaiveDate),
}

impl When {
    /// The UTC instant; dates start at midnight in `zone` (UTC when
    /// unknown).
    pub fn utc(&self, zone: Option<Tz>) -> DateTime<Utc> {
        match self {
            When::At(t, _) => *t,
            When::Date(d) => boundary_utc(Boundary::Date(*d), zone),
        }
    }

    /// The contract's form.
    pub fn event_time(&self) -> pb::EventTime {
        match self {
            When::At(t, zone) => pb::EventTime {
                value: Some(event_time::Value::Instant(to_timestamp(*t))),
                time_zone: zone.map(|z| z.name().to_string()).unwrap_or_default(),
            },
            When::Date(d) => calbridge::time::date(*d),
        }
    }

    /// The suffix Google gives instance ids: `yyyymmddThhmmssZ` (UTC) for
    /// timed series, `yyyymmdd` for all-day ones.
    pub fn id_suffix(&self) -> String {
        match self {
            When::At(t, _) => t.format("%Y%m%dT%H%M%SZ").to_string(),
            When::Date(d) => d.format("%Y%m%d").to_string(),
        }
    }
}

/// Reads an `EventDateTime`; `default_zone` (the calendar's) names the zone
/// of a date-time that carries none.
pub fn parse_when(
    t: &model::EventDateTime,
    field: &'static str,
    default_zone: Option<Tz>,
) -> Result<When, MapError> {
    if let Some(d) = t.date.as_deref().filter(|d| !d.is_empty()) {
        return NaiveDate::parse_from_str(d, "%Y-%m-%d")
            .map(When::Date)
            .map_err(|_| MapError::BadTime(field));
    }
    let Some(dt) = t.date_time.as_deref().filter(|d| !d.is_empty()) else {
        return Err(MapError::MissingTime(field));
    };
    let zone = t
        .time_zone
        .as_deref()
        .and_then(|z| z.parse::<Tz>().ok())
        .or(default_zone);
    if let Ok(parsed) = DateTime::parse_from_rfc3339(dt) {
        return Ok(When::At(parsed.with_timezone(&Utc), zone));
    }
    // Google requires an offset unless a zone is given; read such a local
    // time in that zone.
    let local = NaiveDateTime::parse_from_str(dt, "%Y-%m-%dT%H:%M:%S")
        .map_err(|_| MapError::BadTime(field))?;
    let z = zone.ok_or(MapError::BadTime(field))?;
    z.from_local_datetime(&local)
        .earliest()
        .map(|t| When::At(t.with_timezone(&Utc), Some(z)))
        .ok_or(MapError::BadTime(field))
}

/// The id Google gives an instance of a series.
pub fn instance_id(series_id: &str, original: &When) -> String {
    format!("{series_id}_{}", original.id_suffix())
}

/// Splits an instance id into its series id and original start (UTC for
/// timed series); `None` for ids of single events and series.
pub fn parse_instance_id(id: &str) -> Option<(&str, When)> {
    let (series, suffix) = id.rsplit_once('_')?;
    if series.is_empty() {
        return None;
    }
    let original = match suffix.len() {
        16 => When::At(
            Utc.from_utc_datetime(&NaiveDateTime::parse_from_str(suffix, "%Y%m%dT%H%M%SZ").ok()?),
            None,
        ),
        8 => When::Date(NaiveDate::parse_from_str(suffix, "%Y%m%d").ok()?),
        _ => return None,
    };
    Some((series, original))
}

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

/// Removes what a FREE_BUSY account must never see.
pub fn strip_content(e: &mut pb::Event) {
    e.title.clear();
    e.description.clear();
    e.location.clear();
    e.attendees.clear();
    e.organizer = None;
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
        strip_content(&mut e);
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
        if let Err(m) = crate::recurrence::check(e) {
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
mod tests {
    use super::*;

    /// A timed single event as Google answers events.get.
    const SINGLE: &str = r#"{
      "kind": "calendar#event",
      "etag": "\"3181161784712000\"",
      "id": "7cbh8rpc10lrc0ckih9tafss99",
      "status": "confirmed",
      "htmlLink": "https://www.google.com/calendar/event?eid=N2NiaDhycGMxMGxyYzBja2loOXRhZnNzOTkgYWxpY2VAZXhhbXBsZS5jb20",
      "created": "2026-01-02T10:00:00.000Z",
      "updated": "2026-01-03T11:30:00.123Z",
      "summary": "Design review",
      "description": "Agenda: <b>cursor</b> format",
      "location": "Room 4",
      "creator": {"email": "alice@example.com", "self": true},
      "organizer": {"email": "alice@example.com", "displayName": "Alice", "self": true},
      "start": {"dateTime": "2026-01-15T15:00:00+01:00", "timeZone": "Europe/Berlin"},
      "end": {"dateTime": "2026-01-15T16:00:00+01:00", "timeZone": "Europe/Berlin"},
      "iCalUID": "7cbh8rpc10lrc0ckih9tafss99@google.com",
      "sequence": 0,
      "attendees": [
        {"email": "alice@example.com", "organizer": true, "self": true, "responseStatus": "accepted"},
        {"email": "bob@example.com", "displayName": "Bob", "optional": true, "responseStatus": "tentative"},
        {"email": "room4@resource.calendar.google.com", "resource": true, "responseStatus": "needsAction"}
      ],
      "extendedProperties": {"private": {"calbridgeClientEventId": "order-17"}},
      "reminders": {"useDefault": true},
      "eventType": "default"
    }"#;

    fn parse(s: &str) -> model::Event {
        serde_json::from_str(s).unwrap()
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_timed_single_event_maps_every_field() {
        let e = event_from_google(&parse(SINGLE), &Context::default()).unwrap();
        assert_eq!(e.provider_event_id, "7cbh8rpc10lrc0ckih9tafss99");
        assert_eq!(e.version, "\"3181161784712000\"");
        assert_eq!(e.ical_uid, "7cbh8rpc10lrc0ckih9tafss99@google.com");
        assert_eq!(e.title, "Design review");
        assert_eq!(e.location, "Room 4");
        assert_eq!(e.client_event_id, "order-17");
        assert!(e.managed);
        let start = e.start.clone().unwrap();
        assert_eq!(start.time_zone, "Europe/Berlin");
        assert_eq!(
            start.value,
            Some(event_time::Value::Instant(to_timestamp(at(
                "2026-01-15T14:00:00Z"
            ))))
        );
        assert_eq!(e.status(), pb::EventStatus::Confirmed);
        assert_eq!(e.transparency(), pb::Transparency::Opaque);
        assert_eq!(e.attendees.len(), 3);
        assert_eq!(e.attendees[1].display_name, "Bob");
        assert!(e.attendees[1].optional);
        assert_eq!(
            e.attendees[1].response_status(),
            pb::ResponseStatus::Tentative
        );
        assert_eq!(e.organizer.as_ref().unwrap().display_name, "Alice");
        assert_eq!(
            e.updated_at.unwrap().seconds,
            at("2026-01-03T11:30:00Z").timestamp()
        );
        assert!(e.recurrence_link.is_none());
        assert_eq!(e.event_type(), pb::EventType::Default);
    }

    #[test]
    fn busy_only_mapping_drops_content() {
        let e = event_from_google(
            &parse(SINGLE),
            &Context {
                busy_only: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(e.title.is_empty() && e.description.is_empty() && e.location.is_empty());
        assert!(e.attendees.is_empty() && e.organizer.is_none());
        assert!(e.start.is_some() && e.end.is_some());
    }

    #[test]
    fn an_all_day_event_keeps_its_exclusive_end_date() {
        let e = event_from_google(
            &parse(
                r#"{"id":"allday1","etag":"\"2\"","status":"tentative","transparency":"transparent",
                   "start":{"date":"2026-11-26"},"end":{"date":"2026-11-27"},"eventType":"outOfOffice"}"#,
            ),
            &Context::default(),
        )
        .unwrap();
        assert_eq!(
            e.start.clone().unwrap().value,
            Some(event_time::Value::Date("2026-11-26".into()))
        );
        assert_eq!(
            e.end.clone().unwrap().value,
            Some(event_time::Value::Date("2026-11-27".into()))
        );
        assert_eq!(e.status(), pb::EventStatus::Tentative);
        assert_eq!(e.transparency(), pb::Transparency::Transparent);
        assert_eq!(e.event_type(), pb::EventType::OutOfOffice);
        assert!(!e.managed);
    }

    #[test]
    fn an_exception_is_named_and_linked_as_its_instance() {
        let e = event_from_google(
            &parse(
                r#"{"id":"series1_20260112T090000Z","etag":"\"9\"","status":"confirmed",
                   "summary":"Weekly (moved)","recurringEventId":"series1",
                   "originalStartTime":{"dateTime":"2026-01-12T09:00:00Z","timeZone":"Europe/London"},
                   "start":{"dateTime":"2026-01-12T11:00:00Z","timeZone":"Europe/London"},
                   "end":{"dateTime":"2026-01-12T12:00:00Z","timeZone":"Europe/London"}}"#,
            ),
            &Context::default(),
        )
        .unwrap();
        assert_eq!(e.provider_event_id, "series1_20260112T090000Z");
        let link = e.recurrence_link.unwrap();
        assert_eq!(link.series_event_id, "series1");
        assert_eq!(
            link.original_start.unwrap().value,
            Some(event_time::Value::Instant(to_timestamp(at(
                "2026-01-12T09:00:00Z"
            ))))
        );
        assert!(e.recurrence.is_empty());
    }

    #[test]
    fn a_date_time_without_zone_takes_the_calendars() {
        let e = event_from_google(
            &parse(
                r#"{"id":"x1234","start":{"dateTime":"2026-03-01T10:00:00-05:00"},
                    "end":{"dateTime":"2026-03-01T11:00:00-05:00"}}"#,
            ),
            &Context {
                calendar_zone: Some(chrono_tz::America::New_York),
                busy_only: false,
            },
        )
        .unwrap();
        assert_eq!(e.start.unwrap().time_zone, "America/New_York");
    }

    #[test]
    fn items_without_times_or_ids_are_refused_without_quoting_content() {
        let err = event_from_google(
            &parse(r#"{"id":"x","summary":"Secret"}"#),
            &Context::default(),
        )
        .unwrap_err();
        assert_eq!(err, MapError::MissingTime("start"));
        assert!(!err.to_string().contains("Secret"));
        assert_eq!(
            event_from_google(
                &parse(r#"{"start":{"date":"2026-01-01"}}"#),
                &Context::default()
            ),
            Err(MapError::MissingId)
        );
        assert_eq!(
            event_from_google(
                &parse(r#"{"id":"x","start":{"dateTime":"tomorrow"}}"#),
                &Context::default()
            ),
            Err(MapError::BadTime("start"))
        );
    }

    #[test]
    fn instance_ids_follow_googles_form_and_round_trip() {
        let t = When::At(at("2024-01-15T15:00:00Z"), None);
        assert_eq!(instance_id("abc123", &t), "abc123_20240115T150000Z");
        let d = When::Date(NaiveDate::from_ymd_opt(2024, 1, 15).unwrap());
        assert_eq!(instance_id("abc123", &d), "abc123_20240115");
        assert_eq!(
            parse_instance_id("abc123_20240115T150000Z"),
            Some(("abc123", t))
        );
        assert_eq!(parse_instance_id("abc123_20240115"), Some(("abc123", d)));
        assert_eq!(parse_instance_id("abc123"), None);
        assert_eq!(parse_instance_id("_20240115"), None);
        assert_eq!(parse_instance_id("abc_notadate"), None);
    }

    #[test]
    fn idempotency_keys_become_valid_google_ids() {
        let hex = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(event_id_for_key(hex), hex);
        for key in ["ABC", "x", "order/17 ü", "wxyz0123", "abcd"] {
            let id = event_id_for_key(key);
            assert!(
                (5..=1024).contains(&id.len())
                    && id
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'v').contains(&b)),
                "{key:?} -> {id}"
            );
            assert_eq!(id, event_id_for_key(key), "deterministic");
            assert_eq!(id.len(), 54);
        }
        assert_ne!(event_id_for_key("ABC"), event_id_for_key("abc"));
        assert_eq!(base32hex_lower(b"f"), "co");
        assert_eq!(base32hex_lower(b"foobar"), "cpnmuoj1e8");
    }

    #[test]
    fn calendar_entries_map_with_read_only_from_the_access_role() {
        let page: model::CalendarListPage = serde_json::from_str(
            r##"{"kind":"calendar#calendarList","etag":"\"p1\"","items":[
              {"kind":"calendar#calendarListEntry","id":"alice@example.com","summary":"alice@example.com",
               "timeZone":"Europe/London","backgroundColor":"#9fe1e7","accessRole":"owner","primary":true},
              {"id":"team@group.calendar.google.com","summary":"Team","summaryOverride":"My team",
               "timeZone":"Europe/Paris","accessRole":"reader"},
              {"id":"fb@group.calendar.google.com","summary":"Busy","accessRole":"freeBusyReader"},
              {"id":"w@group.calendar.google.com","summary":"W","accessRole":"writer"},
              {"id":"gone@group.calendar.google.com","deleted":true,"accessRole":"owner"}
            ]}"##,
        )
        .unwrap();
        let cals: Vec<pb::Calendar> = page
            .items
            .unwrap()
            .iter()
            .filter_map(calendar_from_entry)
            .collect();
        assert_eq!(cals.len(), 4);
        assert!(cals[0].primary && !cals[0].read_only);
        assert_eq!(cals[0].calendar_id, "primary");
        assert_eq!(cals[1].calendar_id, "team@group.calendar.google.com");
        assert_eq!(cals[0].color, "#9fe1e7");
        assert_eq!(cals[0].time_zone, "Europe/London");
        assert_eq!(cals[1].name, "My team");
        assert!(cals[1].read_only && cals[2].read_only && !cals[3].read_only);
    }

    fn event(start: pb::EventTime, end: pb::EventTime) -> pb::Event {
        pb::Event {
            title: "Lunch".into(),
            start: Some(start),
            end: Some(end),
            ..Default::default()
        }
    }

    #[test]
    fn a_body_carries_every_owned_field() {
        let mut e = event(
            calbridge::time::instant(at("2026-07-01T11:00:00Z"), "Europe/London"),
            calbridge::time::instant(at("2026-07-01T12:00:00Z"), "Europe/London"),
        );
        e.client_event_id = "order-17".into();
        e.status = pb::EventStatus::Tentative as i32;
        e.transparency = pb::Transparency::Transparent as i32;
        e.attendees = vec![pb::Attendee {
            email: "bob@example.com".into(),
            display_name: "Bob".into(),
            response_status: pb::ResponseStatus::Accepted as i32,
            optional: true,
        }];
        let b = event_body(
            &e,
            BodyOptions {
                id: Some("abcde"),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(b["id"], "abcde");
        assert_eq!(b["summary"], "Lunch");
        assert_eq!(b["description"], "");
        assert_eq!(b["start"]["dateTime"], "2026-07-01T12:00:00+01:00");
        assert_eq!(b["start"]["timeZone"], "Europe/London");
        assert!(b["start"].get("date").is_none());
        assert_eq!(b["status"], "tentative");
        assert_eq!(b["transparency"], "transparent");
        assert_eq!(b["attendees"][0]["responseStatus"], "accepted");
        assert_eq!(b["attendees"][0]["optional"], true);
        assert_eq!(b["recurrence"], json!([]));
        assert_eq!(
            b["extendedProperties"]["private"][CLIENT_ID_PROPERTY],
            "order-17"
        );
    }

    #[test]
    fn an_all_day_patch_clears_the_date_time_form() {
        let d = |s: &str| calbridge::time::date(NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap());
        let b = event_body(
            &event(d("2026-11-26"), d("2026-11-27")),
            BodyOptions {
                patch: true,
                instance: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(b["start"]["date"], "2026-11-26");
        assert_eq!(b["end"]["date"], "2026-11-27");
        assert!(b["start"]["dateTime"].is_null() && b["start"].get("dateTime").is_some());
        assert!(b.get("recurrence").is_none());
        assert!(b.get("extendedProperties").is_none());
    }

    #[test]
    fn bad_events_are_refused_naming_the_field() {
        let bad_zone = pb::EventTime {
            value: Some(event_time::Value::Instant(to_timestamp(at(
                "2026-07-01T11:00:00Z",
            )))),
            time_zone: "Mars/Olympus".into(),
        };
        let inv =
            event_body(&event(bad_zone.clone(), bad_zone), BodyOptions::default()).unwrap_err();
        assert!(
            inv.0.iter().any(|v| v.field == "event.start.time_zone"),
            "{inv}"
        );
        let mut e = event(
            calbridge::time::instant(at("2026-07-01T11:00:00Z"), ""),
            calbridge::time::instant(at("2026-07-01T12:00:00Z"), ""),
        );
        e.recurrence = vec!["DTSTART:20260701T110000Z".into()];
        let inv = event_body(&e, BodyOptions::default()).unwrap_err();
        assert_eq!(inv.0[0].field, "event.recurrence[0]");
        e.recurrence = vec!["RRULE:FREQ=SOMETIMES".into()];
        let inv = event_body(&e, BodyOptions::default()).unwrap_err();
        assert_eq!(inv.0[0].field, "event.recurrence");
    }

    #[test]
    fn overlap_counts_zero_length_events_starting_inside() {
        let (ws, we) = (at("2026-01-01T00:00:00Z"), at("2026-02-01T00:00:00Z"));
        let t = |s| When::At(at(s), None);
        assert!(overlaps(
            &t("2026-01-05T10:00:00Z"),
            &t("2026-01-05T10:00:00Z"),
            None,
            ws,
            we
        ));
        assert!(!overlaps(
            &t("2025-12-31T10:00:00Z"),
            &t("2026-01-01T00:00:00Z"),
            None,
            ws,
            we
        ));
        assert!(overlaps(
            &t("2025-12-31T10:00:00Z"),
            &t("2026-01-01T00:00:01Z"),
            None,
            ws,
            we
        ));
        assert!(!overlaps(
            &t("2026-02-01T00:00:00Z"),
            &t("2026-02-01T01:00:00Z"),
            None,
            ws,
            we
        ));
    }
}
