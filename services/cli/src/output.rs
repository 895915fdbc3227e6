//! How results look: readable tables for people, and JSON documents for
//! scripts. Prost types carry no serde, so every message printed as JSON has a
//! hand-written conversion here; timestamps become RFC3339 strings and enums
//! their proto names.

use calbridge::pb;
use chrono::{DateTime, SecondsFormat, Utc};
use comfy_table::{presets, ContentArrangement, Table};
use prost_types::Timestamp;
use serde_json::{json, Value};

/// Where results go and in which shape.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Out {
    /// Print JSON instead of tables.
    pub json: bool,
}

impl Out {
    /// Prints one JSON document on stdout.
    pub(crate) fn json(&self, v: &Value) {
        println!(
            "{}",
            serde_json::to_string_pretty(v).expect("a Value serializes")
        );
    }

    /// Prints one JSON document on a single line (for streams).
    pub(crate) fn json_line(&self, v: &Value) {
        println!("{v}");
    }
}

/// A table in the house style.
pub(crate) fn table<const N: usize>(header: [&str; N]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::UTF8_BORDERS_ONLY)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header);
    t
}

/// A two-column table of labelled values, for one object.
pub(crate) fn details(rows: Vec<(&str, String)>) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Dynamic);
    for (k, v) in rows {
        t.add_row(vec![format!("{k}:"), v]);
    }
    t
}

/// A UTC time as RFC3339 (`2026-12-01T09:00:00Z`).
pub(crate) fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// A timestamp as RFC3339, `None` when absent or out of range.
pub(crate) fn ts(t: Option<&Timestamp>) -> Option<String> {
    t.and_then(calbridge::time::from_timestamp).map(rfc3339)
}

/// A timestamp for a table cell: RFC3339, or "-" when absent.
pub(crate) fn ts_cell(t: Option<&Timestamp>) -> String {
    ts(t).unwrap_or_else(|| "-".into())
}

fn ts_json(t: Option<&Timestamp>) -> Value {
    ts(t).map(Value::String).unwrap_or(Value::Null)
}

fn opt_str(s: &str) -> Value {
    if s.is_empty() {
        Value::Null
    } else {
        Value::String(s.to_string())
    }
}

/// A proto enum name without its prefix, lowercase and dashed, for people:
/// `ACCESS_LEVEL_READ_WRITE` with prefix `ACCESS_LEVEL_` is `read-write`.
pub(crate) fn short(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix)
        .unwrap_or(name)
        .to_ascii_lowercase()
        .replace('_', "-")
}

/// An event boundary for people: RFC3339 in the event's zone when it has one,
/// or the date of an all-day boundary.
pub(crate) fn event_time_cell(t: Option<&pb::EventTime>) -> String {
    let Some(t) = t else { return "-".into() };
    match &t.value {
        Some(pb::event_time::Value::Date(d)) => d.clone(),
        Some(pb::event_time::Value::Instant(i)) => {
            let Some(utc) = calbridge::time::from_timestamp(i) else {
                return "?".into();
            };
            match calbridge::time::parse_zone(&t.time_zone) {
                Ok(tz) if !t.time_zone.is_empty() => utc
                    .with_timezone(&tz)
                    .to_rfc3339_opts(SecondsFormat::AutoSi, true),
                _ => rfc3339(utc),
            }
        }
        None => "-".into(),
    }
}

/// An event boundary as JSON: `{"instant": RFC3339, "time_zone": ...}` or
/// `{"date": "YYYY-MM-DD"}`.
pub(crate) fn event_time_json(t: Option<&pb::EventTime>) -> Value {
    let Some(t) = t else { return Value::Null };
    match &t.value {
        Some(pb::event_time::Value::Date(d)) => json!({ "date": d }),
        Some(pb::event_time::Value::Instant(i)) => {
            json!({ "instant": ts_json(Some(i)), "time_zone": opt_str(&t.time_zone) })
        }
        None => Value::Null,
    }
}

/// A tenant as JSON.
pub(crate) fn tenant_json(t: &pb::Tenant) -> Value {
    json!({
        "tenant_id": t.tenant_id,
        "name": t.name,
        "created_at": ts_json(t.created_at.as_ref()),
    })
}

/// An account as JSON.
pub(crate) fn account_json(a: &pb::Account) -> Value {
    json!({
        "account_id": a.account_id,
        "provider": a.provider().as_str_name(),
        "provider_account_id": a.provider_account_id,
        "access_level": a.access_level().as_str_name(),
        "status": a.status().as_str_name(),
        "status_reason": opt_str(&a.status_reason),
        "created_at": ts_json(a.created_at.as_ref()),
        "server_url": opt_str(&a.server_url),
    })
}

/// A calendar as JSON.
pub(crate) fn calendar_json(c: &pb::Calendar) -> Value {
    json!({
        "calendar_id": c.calendar_id,
        "account_id": c.account_id,
        "name": c.name,
        "primary": c.primary,
        "read_only": c.read_only,
        "time_zone": opt_str(&c.time_zone),
        "synced": c.synced,
        "color": opt_str(&c.color),
    })
}

/// An event as JSON.
pub(crate) fn event_json(e: &pb::Event) -> Value {
    json!({
        "account_id": e.account_id,
        "calendar_id": e.calendar_id,
        "provider_event_id": e.provider_event_id,
        "client_event_id": opt_str(&e.client_event_id),
        "ical_uid": opt_str(&e.ical_uid),
        "version": opt_str(&e.version),
        "title": e.title,
        "description": opt_str(&e.description),
        "location": opt_str(&e.location),
        "start": event_time_json(e.start.as_ref()),
        "end": event_time_json(e.end.as_ref()),
        "status": e.status().as_str_name(),
        "transparency": e.transparency().as_str_name(),
        "attendees": e.attendees.iter().map(|a| json!({
            "email": a.email,
            "display_name": opt_str(&a.display_name),
            "response_status": a.response_status().as_str_name(),
            "optional": a.optional,
        })).collect::<Vec<_>>(),
        "organizer": e.organizer.as_ref().map(|o| json!({
            "email": o.email,
            "display_name": opt_str(&o.display_name),
        })),
        "recurrence": e.recurrence,
        "recurrence_link": e.recurrence_link.as_ref().map(|l| json!({
            "series_event_id": l.series_event_id,
            "original_start": event_time_json(l.original_start.as_ref()),
        })),
        "created_at": ts_json(e.created_at.as_ref()),
        "updated_at": ts_json(e.updated_at.as_ref()),
        "managed": e.managed,
        "event_type": e.event_type().as_str_name(),
    })
}

/// A change as JSON.
pub(crate) fn change_json(c: &pb::Change) -> Value {
    json!({
        "sequence": c.sequence,
        "cursor": c.cursor,
        "recorded_at": ts_json(c.recorded_at.as_ref()),
        "kind": c.kind().as_str_name(),
        "account_id": c.account_id,
        "calendar_id": opt_str(&c.calendar_id),
        "provider_event_id": opt_str(&c.provider_event_id),
        "event": c.event.as_ref().map(event_json),
        "account_status": if c.kind() == pb::ChangeKind::AccountStatus {
            Value::String(c.account_status().as_str_name().into())
        } else {
            Value::Null
        },
    })
}

/// A busy interval as JSON.
pub(crate) fn busy_json(b: &pb::BusyInterval) -> Value {
    json!({
        "start": ts_json(b.start.as_ref()),
        "end": ts_json(b.end.as_ref()),
        "status": b.status().as_str_name(),
        "calendar_id": b.calendar_id,
    })
}

/// One calendar's sync status as JSON.
pub(crate) fn sync_status_json(s: &pb::CalendarSyncStatus) -> Value {
    json!({
        "calendar_id": s.calendar_id,
        "state": s.state().as_str_name(),
        "last_success": ts_json(s.last_success.as_ref()),
        "next_due": ts_json(s.next_due.as_ref()),
        "last_error": opt_str(&s.last_error),
        "failures": s.failures,
        "events": s.events,
        "last_full_listing": ts_json(s.last_full_listing.as_ref()),
        "drift_repaired": s.drift_repaired,
        "skipped_items": s.skipped_items.iter().map(|i| json!({
            "item_id": i.item_id,
            "reason": i.reason,
        })).collect::<Vec<_>>(),
    })
}

/// An availability slot as JSON.
pub(crate) fn slot_json(s: &pb::AvailableSlot) -> Value {
    json!({
        "start": ts_json(s.start.as_ref()),
        "end": ts_json(s.end.as_ref()),
        "available_account_ids": s.available_account_ids,
    })
}

/// A calendar's freshness as JSON.
pub(crate) fn freshness_json(f: &pb::CalendarFreshness) -> Value {
    json!({
        "account_id": f.account_id,
        "calendar_id": f.calendar_id,
        "as_of": ts_json(f.as_of.as_ref()),
    })
}

/// The accounts table.
pub(crate) fn accounts_table(accounts: &[pb::Account]) -> Table {
    let mut t = table([
        "ACCOUNT",
        "PROVIDER",
        "USER",
        "ACCESS",
        "STATUS",
        "CONNECTED",
    ]);
    for a in accounts {
        let mut status = short(a.status().as_str_name(), "ACCOUNT_STATUS_");
        if !a.status_reason.is_empty() {
            status = format!("{status} ({})", a.status_reason);
        }
        t.add_row(vec![
            a.account_id.clone(),
            short(a.provider().as_str_name(), "PROVIDER_"),
            a.provider_account_id.clone(),
            short(a.access_level().as_str_name(), "ACCESS_LEVEL_"),
            status,
            ts_cell(a.created_at.as_ref()),
        ]);
    }
    t
}

/// The events table.
pub(crate) fn events_table(events: &[pb::Event]) -> Table {
    let mut t = table([
        "START",
        "END",
        "TITLE",
        "STATUS",
        "PROVIDER ID",
        "CLIENT ID",
    ]);
    for e in events {
        let mut status = short(e.status().as_str_name(), "EVENT_STATUS_");
        if e.transparency() == pb::Transparency::Transparent {
            status.push_str(", free");
        }
        if e.status() == pb::EventStatus::Unspecified {
            status = "-".into();
        }
        let mut title = e.title.clone();
        if !e.recurrence.is_empty() {
            title = format!("{title} [{}]", e.recurrence.join(" "));
        } else if e.recurrence_link.is_some() {
            title = format!("{title} (recurring)");
        }
        t.add_row(vec![
            event_time_cell(e.start.as_ref()),
            event_time_cell(e.end.as_ref()),
            title,
            status,
            e.provider_event_id.clone(),
            if e.client_event_id.is_empty() {
                "-".into()
            } else {
                e.client_event_id.clone()
            },
        ]);
    }
    t
}

/// One event, field by field.
pub(crate) fn event_details(e: &pb::Event) -> Table {
    let mut rows = vec![
        ("title", e.title.clone()),
        ("start", event_time_cell(e.start.as_ref())),
        ("end", event_time_cell(e.end.as_ref())),
        ("status", short(e.status().as_str_name(), "EVENT_STATUS_")),
        (
            "transparency",
            short(e.transparency().as_str_name(), "TRANSPARENCY_"),
        ),
        ("provider id", e.provider_event_id.clone()),
        ("client id", e.client_event_id.clone()),
        ("version", e.version.clone()),
        ("calendar", e.calendar_id.clone()),
        ("account", e.account_id.clone()),
    ];
    if !e.location.is_empty() {
        rows.push(("location", e.location.clone()));
    }
    if !e.description.is_empty() {
        rows.push(("description", e.description.clone()));
    }
    if !e.attendees.is_empty() {
        let list = e
            .attendees
            .iter()
            .map(|a| {
                format!(
                    "{} ({})",
                    a.email,
                    short(a.response_status().as_str_name(), "RESPONSE_STATUS_")
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        rows.push(("attendees", list));
    }
    if let Some(o) = &e.organizer {
        rows.push(("organizer", o.email.clone()));
    }
    if !e.recurrence.is_empty() {
        rows.push(("recurrence", e.recurrence.join(" ")));
    }
    if let Some(l) = &e.recurrence_link {
        rows.push(("series", l.series_event_id.clone()));
    }
    if e.event_type() != pb::EventType::Default {
        rows.push(("type", short(e.event_type().as_str_name(), "EVENT_TYPE_")));
    }
    rows.push(("updated", ts_cell(e.updated_at.as_ref())));
    rows.retain(|(_, v)| !v.is_empty());
    details(rows)
}

/// One readable line for a change, as `changes watch` prints it.
pub(crate) fn change_line(c: &pb::Change) -> String {
    let kind = short(c.kind().as_str_name(), "CHANGE_KIND_");
    let mut line = format!("#{} {kind} account={}", c.sequence, c.account_id);
    if !c.calendar_id.is_empty() {
        line.push_str(&format!(" calendar={}", c.calendar_id));
    }
    if c.kind() == pb::ChangeKind::AccountStatus {
        line.push_str(&format!(
            " status={}",
            short(c.account_status().as_str_name(), "ACCOUNT_STATUS_")
        ));
    }
    match &c.event {
        Some(e) => {
            if !e.title.is_empty() {
                line.push_str(&format!(" {:?}", e.title));
            }
            if e.start.is_some() {
                line.push_str(&format!(
                    " {} .. {}",
                    event_time_cell(e.start.as_ref()),
                    event_time_cell(e.end.as_ref())
                ));
            }
            line.push_str(&format!(" ({})", e.provider_event_id));
        }
        None if !c.provider_event_id.is_empty() => {
            line.push_str(&format!(" ({})", c.provider_event_id));
        }
        None => {}
    }
    line
}

/// The changes table.
pub(crate) fn changes_table(changes: &[pb::Change]) -> Table {
    let mut t = table(["SEQ", "RECORDED", "KIND", "ACCOUNT", "CALENDAR", "EVENT"]);
    for c in changes {
        let event = match &c.event {
            Some(e) => format!(
                "{} {} ({})",
                e.title,
                event_time_cell(e.start.as_ref()),
                e.provider_event_id
            )
            .trim()
            .to_string(),
            None if c.kind() == pb::ChangeKind::AccountStatus => {
                short(c.account_status().as_str_name(), "ACCOUNT_STATUS_")
            }
            None => c.provider_event_id.clone(),
        };
        t.add_row(vec![
            c.sequence.to_string(),
            ts_cell(c.recorded_at.as_ref()),
            short(c.kind().as_str_name(), "CHANGE_KIND_"),
            c.account_id.clone(),
            c.calendar_id.clone(),
            event,
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32) -> Timestamp {
        calbridge::time::to_timestamp(Utc.with_ymd_and_hms(2026, 12, 1, h, 0, 0).unwrap())
    }

    fn event() -> pb::Event {
        pb::Event {
            account_id: "acc-1".into(),
            calendar_id: "primary".into(),
            provider_event_id: "ev-9".into(),
            client_event_id: "mine-1".into(),
            version: "v3".into(),
            title: "Planning".into(),
            start: Some(calbridge::time::instant(
                Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap(),
                "Europe/Berlin",
            )),
            end: Some(calbridge::time::date(
                chrono::NaiveDate::from_ymd_opt(2026, 12, 2).unwrap(),
            )),
            status: pb::EventStatus::Confirmed as i32,
            updated_at: Some(at(8)),
            ..Default::default()
        }
    }

    #[test]
    fn an_event_becomes_json_with_rfc3339_times_and_enum_names() {
        let v = event_json(&event());
        assert_eq!(v["provider_event_id"], "ev-9");
        assert_eq!(v["start"]["instant"], "2026-12-01T09:00:00Z");
        assert_eq!(v["start"]["time_zone"], "Europe/Berlin");
        assert_eq!(v["end"]["date"], "2026-12-02");
        assert_eq!(v["updated_at"], "2026-12-01T08:00:00Z");
        assert_eq!(v["created_at"], Value::Null);
        assert_eq!(v["status"], "EVENT_STATUS_CONFIRMED");
        assert_eq!(v["description"], Value::Null);
    }

    #[test]
    fn a_change_becomes_json_with_its_event_and_kind() {
        let c = pb::Change {
            sequence: 42,
            cursor: "c42".into(),
            recorded_at: Some(at(10)),
            kind: pb::ChangeKind::EventUpdated as i32,
            account_id: "acc-1".into(),
            calendar_id: "primary".into(),
            event: Some(event()),
            provider_event_id: "ev-9".into(),
            ..Default::default()
        };
        let v = change_json(&c);
        assert_eq!(v["sequence"], 42);
        assert_eq!(v["recorded_at"], "2026-12-01T10:00:00Z");
        assert_eq!(v["kind"], "CHANGE_KIND_EVENT_UPDATED");
        assert_eq!(v["event"]["title"], "Planning");
        assert_eq!(v["account_status"], Value::Null);
    }

    #[test]
    fn instants_are_shown_in_the_event_zone_and_dates_as_dates() {
        let e = event();
        assert_eq!(
            event_time_cell(e.start.as_ref()),
            "2026-12-01T10:00:00+01:00"
        );
        assert_eq!(event_time_cell(e.end.as_ref()), "2026-12-02");
    }

    #[test]
    fn a_change_line_says_what_happened_to_which_event() {
        let c = pb::Change {
            sequence: 7,
            kind: pb::ChangeKind::EventCreated as i32,
            account_id: "acc-1".into(),
            calendar_id: "primary".into(),
            event: Some(event()),
            ..Default::default()
        };
        let line = change_line(&c);
        assert!(line.starts_with("#7 event-created account=acc-1 calendar=primary"));
        assert!(line.contains("\"Planning\""));
    }

    #[test]
    fn enum_names_are_shortened_for_people() {
        assert_eq!(
            short("ACCESS_LEVEL_READ_WRITE", "ACCESS_LEVEL_"),
            "read-write"
        );
    }
}
