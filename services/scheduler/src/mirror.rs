//! Rules about mirrored events: how an event blocks time, where it sits on
//! the time line (all-day dates in the calendar's zone), what counts as the
//! same content, and how a mirror record is built.

use calbridge::pb::{self, BusyStatus, EventStatus, EventType, Transparency};
use calbridge::time::{boundary_utc, parse_event_time};
use chrono_tz::Tz;

use crate::crypto::DataKey;
use crate::ids::{AccountId, CalendarId};
use crate::sealing::{event_aad, seal_event};
use crate::store::{EventRecord, MirrorPut};

/// How an event shows in free/busy (0 = it does not block).
pub fn busy_of(e: &pb::Event) -> BusyStatus {
    if e.status == EventStatus::Cancelled as i32
        || e.transparency == Transparency::Transparent as i32
        || e.event_type == EventType::WorkingLocation as i32
    {
        return BusyStatus::Unspecified;
    }
    if e.event_type == EventType::OutOfOffice as i32 {
        BusyStatus::OutOfOffice
    } else if e.status == EventStatus::Tentative as i32 {
        BusyStatus::Tentative
    } else {
        BusyStatus::Busy
    }
}

/// The event's [start, end) in ms; all-day dates resolved in `zone`. Events
/// without valid times sit at the epoch with zero length.
pub fn span_ms(e: &pb::Event, zone: Option<Tz>) -> (i64, i64) {
    let t = |b: Option<&pb::EventTime>| {
        b.and_then(|b| parse_event_time(b).ok())
            .map(|b| boundary_utc(b, zone).timestamp_millis())
    };
    let start = t(e.start.as_ref()).unwrap_or(0);
    let end = t(e.end.as_ref()).unwrap_or(start).max(start);
    (start, end)
}

/// For an all-day event, its dates [start, end) as days from the common era.
pub fn all_day_days(e: &pb::Event) -> Option<(i32, i32)> {
    use chrono::Datelike;
    let date = |t: Option<&pb::EventTime>| match t.and_then(|t| parse_event_time(t).ok()) {
        Some(calbridge::time::Boundary::Date(d)) => Some(d.num_days_from_ce()),
        _ => None,
    };
    Some((date(e.start.as_ref())?, date(e.end.as_ref())?))
}

/// Fills defaults the way providers do, so content comparisons are stable.
pub fn normalize(e: &mut pb::Event) {
    if e.status == EventStatus::Unspecified as i32 {
        e.status = EventStatus::Confirmed as i32;
    }
    if e.transparency == Transparency::Unspecified as i32 {
        e.transparency = Transparency::Opaque as i32;
    }
}

/// True when two events have the same writable content.
pub fn same_content(a: &pb::Event, b: &pb::Event) -> bool {
    let mut a = a.clone();
    let mut b = b.clone();
    normalize(&mut a);
    normalize(&mut b);
    a.title == b.title
        && a.description == b.description
        && a.location == b.location
        && a.start == b.start
        && a.end == b.end
        && a.status == b.status
        && a.transparency == b.transparency
        && a.attendees == b.attendees
        && a.organizer == b.organizer
        && a.recurrence == b.recurrence
        && a.event_type == b.event_type
}

/// True when an instance holds its series' content as the master states it
/// (times aside, which the rule sets): an instance nobody changed.
pub fn same_series_content(master: &pb::Event, instance: &pb::Event) -> bool {
    let plain = |e: &pb::Event| pb::Event {
        start: None,
        end: None,
        recurrence: Vec::new(),
        ..e.clone()
    };
    same_content(&plain(master), &plain(instance))
}

/// A stable hash of an event's writable content, as the platform asked for
/// it (defaults filled).
pub fn content_hash(e: &pb::Event) -> String {
    use prost::Message;
    use sha2::{Digest, Sha256};
    let mut e = e.clone();
    normalize(&mut e);
    let writable = pb::Event {
        title: e.title,
        description: e.description,
        location: e.location,
        start: e.start,
        end: e.end,
        status: e.status,
        transparency: e.transparency,
        attendees: e.attendees,
        organizer: e.organizer,
        recurrence: e.recurrence,
        event_type: e.event_type,
        ..Default::default()
    };
    hex::encode(Sha256::digest(writable.encode_to_vec()))
}

/// Builds the mirror record of `event` (already stamped with account and
/// calendar ids), replacing `previous` when there is one.
pub fn put_for(
    key: &DataKey,
    account: &AccountId,
    calendar: &CalendarId,
    zone: Option<Tz>,
    event: &pb::Event,
    previous: Option<&EventRecord>,
) -> MirrorPut {
    let pid = &event.provider_event_id;
    let (start_ms, end_ms) = span_ms(event, zone);
    // The caller's id names a series, never one of its instances (which
    // may carry it as the provider reports it): only the series is found
    // by it.
    let instance = event
        .recurrence_link
        .as_ref()
        .is_some_and(|l| !l.series_event_id.is_empty() && l.series_event_id != *pid);
    let client = if event.client_event_id.is_empty() || instance {
        None
    } else {
        Some(event.client_event_id.clone())
    };
    MirrorPut {
        provider_event_id: pid.clone().into(),
        record: EventRecord {
            version: event.version.clone(),
            start_ms,
            end_ms,
            busy: busy_of(event),
            client_event_id: client,
            all_day: all_day_days(event),
            written_hash: None,
            series: false,
            sealed: seal_event(key, &event_aad(account, calendar, pid), event),
        },
        previous_start_ms: previous.map(|p| p.start_ms),
        previous_client_id: previous.and_then(|p| p.client_event_id.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancelled_transparent_and_working_location_events_do_not_block() {
        let mut e = pb::Event::default();
        assert_eq!(busy_of(&e), BusyStatus::Busy);
        e.status = EventStatus::Cancelled as i32;
        assert_eq!(busy_of(&e), BusyStatus::Unspecified);
        e.status = EventStatus::Confirmed as i32;
        e.transparency = Transparency::Transparent as i32;
        assert_eq!(busy_of(&e), BusyStatus::Unspecified);
        e.transparency = Transparency::Opaque as i32;
        e.event_type = EventType::OutOfOffice as i32;
        assert_eq!(busy_of(&e), BusyStatus::OutOfOffice);
        e.event_type = EventType::WorkingLocation as i32;
        assert_eq!(busy_of(&e), BusyStatus::Unspecified);
    }

    #[test]
    fn defaults_do_not_count_as_a_content_change() {
        let a = pb::Event {
            title: "x".into(),
            ..Default::default()
        };
        let mut b = a.clone();
        normalize(&mut b);
        b.version = "v2".into();
        assert!(same_content(&a, &b));
        b.title = "y".into();
        assert!(!same_content(&a, &b));
    }
}
