//! Pure conversions between Graph's payloads and the contract: an Outlook
//! event (single, occurrence or exception) as a `pb::Event` (Windows zone
//! names read through the shared CLDR table in `calbridge::zones`), a
//! `pb::Event` as a Graph event body, calendars, and the ids the adapter
//! derives (the `transactionId` from an idempotency key, the extended
//! properties that hold the caller's id and key).

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use chrono_tz::Tz;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use calbridge::error::bounded;
use calbridge::limits::{
    MAX_ATTENDEES, MAX_DESCRIPTION_BYTES, MAX_EMAIL_BYTES, MAX_ICAL_UID_BYTES, MAX_TITLE_BYTES,
    MAX_VERSION_BYTES,
};
use calbridge::pb;
use calbridge::time::{self, to_timestamp, Boundary};
use calbridge::Invalid;

use crate::model;

/// The extended property holding the caller's event id.
pub const CLIENT_ID_PROPERTY: &str =
    "String {5d2e6a8e-3c4b-4e8f-9a51-7c0b8f1d2a61} Name calbridgeClientEventId";
/// The extended property holding the create's idempotency key.
pub const KEY_PROPERTY: &str =
    "String {5d2e6a8e-3c4b-4e8f-9a51-7c0b8f1d2a61} Name calbridgeIdempotencyKey";

/// The `transactionId` of a create keyed by `key`: a GUID-shaped digest, so
/// a replayed create (same key) carries the same one.
pub fn transaction_id(key: &str) -> String {
    let h = hex::encode(Sha256::digest(
        format!("calbridge-transaction:{key}").as_bytes(),
    ));
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The IANA zone a Graph zone name stands for.
pub fn zone(name: &str) -> Option<Tz> {
    calbridge::zones::iana_zone(name)
}

/// A `calendar` as the contract lists it; `None` without an id.
pub fn calendar(c: &model::Calendar, mailbox_zone: Option<Tz>) -> Option<pb::Calendar> {
    let id =
        c.id.clone()
            .filter(|i| !i.is_empty() && i.len() <= calbridge::limits::MAX_CALENDAR_ID_BYTES)?;
    Some(pb::Calendar {
        name: bounded(c.name.as_deref().unwrap_or(&id), MAX_TITLE_BYTES),
        calendar_id: id,
        primary: c.is_default_calendar.unwrap_or(false),
        read_only: !c.can_edit.unwrap_or(false),
        time_zone: mailbox_zone
            .map(|z| z.name().to_string())
            .unwrap_or_default(),
        color: c
            .hex_color
            .clone()
            .filter(|h| h.len() == 7 && h.starts_with('#'))
            .unwrap_or_default(),
        ..Default::default()
    })
}

/// Reads Graph's local `dateTime` ("2026-04-15T12:00:00.0000000").
fn local(s: &str) -> Option<NaiveDateTime> {
    if s.len() > 40 {
        return None;
    }
    NaiveDateTime::parse_from_str(s.trim_end_matches('Z'), "%Y-%m-%dT%H:%M:%S%.f").ok()
}

fn instant_of(t: &model::DateTimeTimeZone) -> Result<(NaiveDateTime, DateTime<Utc>), String> {
    let l = t
        .date_time
        .as_deref()
        .and_then(local)
        .ok_or("a time is unreadable")?;
    let z = zone(t.time_zone.as_deref().unwrap_or("UTC")).ok_or("a time zone is unknown")?;
    Ok((l, calbridge_local_to_utc(l, z)))
}

/// A wall-clock time in `z` as UTC: the first of repeated times, and the
/// offset from before a gap for skipped ones.
fn calbridge_local_to_utc(l: NaiveDateTime, z: Tz) -> DateTime<Utc> {
    use chrono::TimeZone as _;
    z.from_local_datetime(&l)
        .earliest()
        .or_else(|| {
            z.from_local_datetime(&(l + chrono::Duration::hours(1)))
                .earliest()
        })
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| l.and_utc())
}

fn parse_utc(s: Option<&str>) -> Option<DateTime<Utc>> {
    let s = s?;
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| local(s).map(|l| l.and_utc()))
}

fn response(r: Option<&str>) -> pb::ResponseStatus {
    match r {
        Some("accepted" | "organizer") => pb::ResponseStatus::Accepted,
        Some("declined") => pb::ResponseStatus::Declined,
        Some("tentativelyAccepted") => pb::ResponseStatus::Tentative,
        _ => pb::ResponseStatus::NeedsAction,
    }
}

/// An Outlook event as the contract's event; `Err` says why it cannot be
/// read (the sync skips it).
pub fn event(e: &model::Event, calendar_id: &str) -> Result<pb::Event, String> {
    let id =
        e.id.clone()
            .filter(|i| !i.is_empty() && i.len() <= 1024)
            .ok_or("an event has no usable id")?;
    let (start, end) = match (&e.start, &e.end) {
        (Some(s), Some(en)) => (instant_of(s)?, instant_of(en)?),
        _ => return Err("an event has no start or end".into()),
    };
    let original_zone = e
        .original_start_time_zone
        .as_deref()
        .and_then(zone)
        .map(|z| z.name().to_string())
        .unwrap_or_else(|| "UTC".into());
    let (start_t, end_t) = if e.is_all_day == Some(true) {
        if end.0.date() <= start.0.date() {
            return Err("an all-day event ends before it starts".into());
        }
        (time::date(start.0.date()), time::date(end.0.date()))
    } else {
        if end.1 < start.1 {
            return Err("an event ends before it starts".into());
        }
        (
            time::instant(start.1, &original_zone),
            time::instant(end.1, &original_zone),
        )
    };
    let version = e
        .etag
        .clone()
        .or_else(|| e.change_key.as_ref().map(|k| format!("W/\"{k}\"")))
        .filter(|v| v.len() <= MAX_VERSION_BYTES)
        .unwrap_or_default();
    let recurrence_link = match (e.kind.as_deref(), &e.series_master_id) {
        (Some("occurrence" | "exception"), Some(master)) if !master.is_empty() => {
            let original = parse_utc(e.original_start.as_deref()).unwrap_or(start.1);
            Some(pb::RecurrenceLink {
                series_event_id: master.clone(),
                original_start: Some(if e.is_all_day == Some(true) {
                    time::date(original.date_naive())
                } else {
                    time::instant(original, &original_zone)
                }),
            })
        }
        _ => None,
    };
    let attendees = e
        .attendees
        .iter()
        .flatten()
        .take(MAX_ATTENDEES)
        .filter_map(|a| {
            let addr = a.email_address.as_ref()?;
            let email = addr
                .address
                .clone()
                .filter(|x| !x.is_empty() && x.len() <= MAX_EMAIL_BYTES)?;
            Some(pb::Attendee {
                email,
                display_name: bounded(addr.name.as_deref().unwrap_or(""), MAX_TITLE_BYTES),
                response_status: response(a.status.as_ref().and_then(|s| s.response.as_deref()))
                    as i32,
                optional: a.kind.as_deref() == Some("optional"),
            })
        })
        .collect();
    let organizer = e
        .organizer
        .as_ref()
        .and_then(|o| o.email_address.as_ref())
        .and_then(|a| {
            Some(pb::Organizer {
                email: a
                    .address
                    .clone()
                    .filter(|x| !x.is_empty() && x.len() <= MAX_EMAIL_BYTES)?,
                display_name: bounded(a.name.as_deref().unwrap_or(""), MAX_TITLE_BYTES),
            })
        });
    let client_event_id = e
        .single_value_extended_properties
        .iter()
        .flatten()
        .find(|p| {
            p.id.as_deref()
                .is_some_and(|i| i.eq_ignore_ascii_case(CLIENT_ID_PROPERTY))
        })
        .and_then(|p| p.value.clone())
        .filter(|v| v.len() <= calbridge::limits::MAX_ID_BYTES)
        .unwrap_or_default();
    Ok(pb::Event {
        calendar_id: calendar_id.to_string(),
        provider_event_id: id,
        managed: !client_event_id.is_empty(),
        client_event_id,
        ical_uid: e
            .ical_uid
            .clone()
            .filter(|u| u.len() <= MAX_ICAL_UID_BYTES)
            .unwrap_or_default(),
        version,
        title: bounded(e.subject.as_deref().unwrap_or(""), MAX_TITLE_BYTES),
        description: bounded(
            e.body
                .as_ref()
                .and_then(|b| b.content.as_deref())
                .unwrap_or(""),
            MAX_DESCRIPTION_BYTES,
        ),
        location: bounded(
            e.location
                .as_ref()
                .and_then(|l| l.display_name.as_deref())
                .unwrap_or(""),
            MAX_TITLE_BYTES,
        ),
        start: Some(start_t),
        end: Some(end_t),
        status: if e.is_cancelled == Some(true) {
            pb::EventStatus::Cancelled
        } else {
            pb::EventStatus::Confirmed
        } as i32,
        transparency: match e.show_as.as_deref() {
            Some("free" | "workingElsewhere") => pb::Transparency::Transparent,
            _ => pb::Transparency::Opaque,
        } as i32,
        attendees,
        organizer,
        recurrence: match e.kind.as_deref() {
            Some("seriesMaster") => e
                .recurrence
                .as_ref()
                .and_then(crate::recurrence::from_graph)
                .into_iter()
                .collect(),
            _ => Vec::new(),
        },
        recurrence_link,
        created_at: parse_utc(e.created_date_time.as_deref()).map(to_timestamp),
        updated_at: parse_utc(e.last_modified_date_time.as_deref()).map(to_timestamp),
        event_type: match e.show_as.as_deref() {
            Some("oof") => pb::EventType::OutOfOffice,
            _ => pb::EventType::Default,
        } as i32,
        ..Default::default()
    })
}

fn graph_time(t: &pb::EventTime, field: &str, inv: &mut Invalid) -> Option<(Value, bool)> {
    match time::parse_event_time(t) {
        Ok(Boundary::Instant(at)) => {
            let (local, name) = match t.time_zone.parse::<Tz>() {
                Ok(z) if !t.time_zone.is_empty() => {
                    (at.with_timezone(&z).naive_local(), t.time_zone.clone())
                }
                _ => (at.naive_utc(), "UTC".to_string()),
            };
            Some((
                json!({"dateTime": local.format("%Y-%m-%dT%H:%M:%S").to_string(), "timeZone": name}),
                false,
            ))
        }
        Ok(Boundary::Date(d)) => {
            let name = if t.time_zone.is_empty() {
                "UTC".to_string()
            } else {
                t.time_zone.clone()
            };
            Some((
                json!({"dateTime": format!("{}T00:00:00", d.format("%Y-%m-%d")), "timeZone": name}),
                true,
            ))
        }
        Err(e) => {
            inv.push(field, e.to_string());
            None
        }
    }
}

/// A contract event as a Graph event body (for POST and PATCH): title,
/// description (as text), location, times, show-as, attendees and, for a
/// series, its `patternedRecurrence`.
pub fn event_body(e: &pb::Event) -> Result<Map<String, Value>, Invalid> {
    let mut inv = Invalid::default();
    let start = e
        .start
        .as_ref()
        .and_then(|t| graph_time(t, "event.start", &mut inv));
    let end = e
        .end
        .as_ref()
        .and_then(|t| graph_time(t, "event.end", &mut inv));
    if e.start.is_none() {
        inv.push("event.start", "must be set");
    }
    if e.end.is_none() {
        inv.push("event.end", "must be set");
    }
    let mut body = Map::new();
    if let (Some((s, s_day)), Some((en, e_day))) = (start, end) {
        if s_day != e_day {
            inv.push("event.end", "must be of the same kind as start");
        }
        body.insert("start".into(), s);
        body.insert("end".into(), en);
        body.insert("isAllDay".into(), json!(s_day));
    }
    inv.into_result()?;
    if !e.recurrence.is_empty() {
        let (date, zone) =
            series_start(e).ok_or_else(|| Invalid::field("event.start", "must be set"))?;
        body.insert(
            "recurrence".into(),
            crate::recurrence::to_graph(&e.recurrence, date, zone)?,
        );
    }
    body.insert("subject".into(), json!(e.title));
    body.insert(
        "body".into(),
        json!({"contentType": "text", "content": e.description}),
    );
    body.insert("location".into(), json!({"displayName": e.location}));
    let show_as = if e.event_type() == pb::EventType::OutOfOffice {
        "oof"
    } else if e.transparency() == pb::Transparency::Transparent {
        "free"
    } else if e.status() == pb::EventStatus::Tentative {
        "tentative"
    } else {
        "busy"
    };
    body.insert("showAs".into(), json!(show_as));
    let attendees: Vec<Value> = e
        .attendees
        .iter()
        .map(|a| {
            json!({
                "type": if a.optional { "optional" } else { "required" },
                "emailAddress": {"address": a.email, "name": a.display_name},
            })
        })
        .collect();
    body.insert("attendees".into(), Value::Array(attendees));
    Ok(body)
}

/// The local start date and zone of a series (the zone its rule repeats
/// in: the start's own, else UTC).
fn series_start(e: &pb::Event) -> Option<(chrono::NaiveDate, Tz)> {
    let t = e.start.as_ref()?;
    let zone = t.time_zone.parse::<Tz>().unwrap_or(Tz::UTC);
    match time::parse_event_time(t).ok()? {
        Boundary::Instant(at) => Some((at.with_timezone(&zone).date_naive(), zone)),
        Boundary::Date(d) => Some((d, zone)),
    }
}

/// The creation body: [`event_body`] plus the `transactionId` and the
/// extended properties holding the caller's id and the key.
pub fn create_body(e: &pb::Event, key: &str) -> Result<Map<String, Value>, Invalid> {
    let mut body = event_body(e)?;
    body.insert("transactionId".into(), json!(transaction_id(key)));
    let mut props = vec![json!({"id": KEY_PROPERTY, "value": key})];
    if !e.client_event_id.is_empty() {
        props.push(json!({"id": CLIENT_ID_PROPERTY, "value": e.client_event_id}));
    }
    body.insert("singleValueExtendedProperties".into(), Value::Array(props));
    Ok(body)
}

/// An RFC 3339 UTC time as Graph's query parameters take it.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(v: Value) -> model::Event {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn an_occurrence_in_a_windows_zone_maps_to_instants_and_links_to_its_series() {
        let e = graph(json!({
            "@odata.etag": "W/\"ck1\"", "id": "AAMk+/=", "type": "occurrence", "seriesMasterId": "MASTER",
            "originalStart": "2026-03-02T08:00:00Z", "subject": "Standup",
            "start": {"dateTime": "2026-03-02T09:00:00.0000000", "timeZone": "W. Europe Standard Time"},
            "end": {"dateTime": "2026-03-02T09:15:00.0000000", "timeZone": "W. Europe Standard Time"},
            "originalStartTimeZone": "W. Europe Standard Time", "showAs": "free",
            "attendees": [{"type": "optional", "status": {"response": "accepted"}, "emailAddress": {"address": "ada@example.com", "name": "Ada"}}],
        }));
        let p = event(&e, "cal").unwrap();
        assert_eq!(p.version, "W/\"ck1\"");
        let start = p.start.clone().unwrap();
        assert_eq!(start.time_zone, "Europe/Berlin");
        assert_eq!(
            start.value,
            Some(pb::event_time::Value::Instant(to_timestamp(
                DateTime::parse_from_rfc3339("2026-03-02T08:00:00Z")
                    .unwrap()
                    .with_timezone(&Utc)
            )))
        );
        assert_eq!(
            p.recurrence_link.as_ref().unwrap().series_event_id,
            "MASTER"
        );
        assert_eq!(p.transparency(), pb::Transparency::Transparent);
        assert!(p.attendees[0].optional);
    }

    #[test]
    fn all_day_events_read_as_dates_and_unknown_zones_are_refused() {
        let e = graph(json!({"id": "x", "isAllDay": true,
            "start": {"dateTime": "2026-03-02T00:00:00.0000000", "timeZone": "UTC"},
            "end": {"dateTime": "2026-03-03T00:00:00.0000000", "timeZone": "UTC"}}));
        let p = event(&e, "cal").unwrap();
        assert_eq!(
            p.start.unwrap().value,
            Some(pb::event_time::Value::Date("2026-03-02".into()))
        );
        let bad = graph(
            json!({"id": "x", "start": {"dateTime": "2026-03-02T00:00:00", "timeZone": "Mars Standard Time"},
            "end": {"dateTime": "2026-03-02T01:00:00", "timeZone": "UTC"}}),
        );
        assert!(event(&bad, "cal").is_err());
    }

    #[test]
    fn a_create_body_carries_the_transaction_id_and_the_callers_id() {
        let mut e = pb::Event {
            client_event_id: "interview-17".into(),
            title: "Interview".into(),
            ..Default::default()
        };
        e.start = Some(time::instant(Utc::now(), "Europe/London"));
        e.end = Some(time::instant(
            Utc::now() + chrono::Duration::hours(1),
            "Europe/London",
        ));
        let b = create_body(&e, "key-1").unwrap();
        assert_eq!(b["transactionId"], json!(transaction_id("key-1")));
        assert_ne!(transaction_id("key-1"), transaction_id("key-2"));
        assert_eq!(b["start"]["timeZone"], "Europe/London");
        assert_eq!(
            b["singleValueExtendedProperties"][1]["value"],
            "interview-17"
        );
        assert!(event_body(&pb::Event::default()).is_err());
    }
}
