//! The CalDAV adapter's readers of what a server sends: the WebDAV
//! multistatus reader, href comparison, the iCalendar object reader with
//! recurrence expansion and the rewrites of stored objects, and the
//! VFREEBUSY reader. Bodies are read as the adapter reads them: UTF-8 with
//! invalid sequences replaced.

use std::borrow::Cow;

use calbridge::pb;
use calbridge_adapter_caldav::client::{self, NS_CALDAV, NS_DAV};
use calbridge_adapter_caldav::recurrence::{self, Window};
use calbridge_adapter_caldav::{account, ics, mapping};
use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;

/// The href a fuzzed object is stored at.
const HREF: &str = "/user/cal/fuzz.ics";

fn text(data: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(data)
}

fn at(y: i32, m: u32, d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, 0, 0, 0)
        .single()
        .expect("a valid date")
}

/// The window series are expanded over: the scheduler's default sync
/// window (30 days back, 365 ahead) around [`crate::now`].
pub fn window() -> Window {
    Window {
        start: at(2025, 12, 2),
        end: at(2027, 1, 1),
    }
}

/// A multistatus answer: parsed, then read the way the adapter reads its
/// responses (resource types searched, calendar data and etags taken).
pub fn dav_multistatus(data: &[u8]) {
    let Ok(ms) = client::parse_multistatus(&text(data)) else {
        return;
    };
    for r in &ms.responses {
        if let Some(types) = r.prop(NS_DAV, "resourcetype") {
            let _ = types.contains(NS_CALDAV, "calendar");
        }
        let _ = r.prop_text(NS_DAV, "getetag");
        let _ = r.prop_text(NS_CALDAV, "calendar-data");
    }
}

/// An href compared with another (the first line against the rest, or
/// against a fixed href), as the adapter compares the hrefs a server
/// answers with.
pub fn dav_href(data: &[u8]) {
    let s = text(data);
    let _ = client::percent_decode(&s);
    let base =
        reqwest::Url::parse("https://caldav.example.com/user/cal/").expect("a valid base URL");
    let (a, b) = s.split_once('\n').unwrap_or((&s, HREF));
    let _ = client::same_resource(&base, a, b);
}

/// The calendar zone an input is read in: picked by its length, so corpus
/// files stay plain `.ics` text.
fn zone_for(len: usize) -> Option<Tz> {
    [
        None,
        Some(Tz::Europe__Berlin),
        Some(Tz::America__New_York),
        Some(Tz::Australia__Lord_Howe),
    ][len % 4]
}

/// An event as the API writes it over a stored object.
fn written_event() -> pb::Event {
    let instant = |h: u32| pb::EventTime {
        value: Some(pb::event_time::Value::Instant(
            calbridge::time::to_timestamp(
                Utc.with_ymd_and_hms(2026, 1, 5, h, 0, 0)
                    .single()
                    .expect("a valid time"),
            ),
        )),
        time_zone: "Europe/Berlin".into(),
    };
    pb::Event {
        title: "Planning".into(),
        location: "Room 4".into(),
        start: Some(instant(9)),
        end: Some(instant(10)),
        attendees: vec![pb::Attendee {
            email: "ana@example.com".into(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A calendar object resource: read (in a calendar zone picked by the
/// input's length), expanded over [`window`], and rewritten the way writes
/// rewrite stored objects (an API event merged over a single event; an
/// instance dropped from a series, found again by its id).
pub fn ical_object(data: &[u8]) {
    let text = text(data);
    let zone = zone_for(data.len());
    let busy_only = data.len() / 4 % 2 == 1;
    let Ok(obj) = mapping::parse_object(&text, zone) else {
        return;
    };
    let Ok(events) = recurrence::expand(&obj, HREF, "\"1\"", window(), busy_only) else {
        return;
    };
    if !obj.is_recurring() {
        let _ = ics::merge_event(&text, &written_event(), "uid@calbridge", 2, crate::now());
        return;
    }
    let suffix = events
        .first()
        .and_then(|e| e.provider_event_id.rsplit_once('#'))
        .map(|(_, s)| s);
    if let Some(original) = suffix.and_then(|s| recurrence::find_instance(&obj, s)) {
        let _ = ics::drop_instance(&text, &original, obj.floating_zone);
    }
}

/// A free-busy-query answer (VFREEBUSY).
pub fn ical_free_busy(data: &[u8]) {
    let _ = account::parse_free_busy(&text(data));
}
