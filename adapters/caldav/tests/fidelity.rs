//! iCalendar fidelity: what the adapter makes of custom VTIMEZONEs,
//! THISANDFUTURE overrides, Exchange's date-time RECURRENCE-IDs of all-day
//! series, several revisions of one master, RDATE periods and events that
//! end before they start (see the README's "iCalendar fidelity"). Each case
//! is read by the mapping and expansion directly, and the same objects go
//! through real Radicale and Xandikos servers and the adapter's gRPC
//! SyncEvents.

// Shared with tests/service.rs, which uses more of it.
#[allow(dead_code, unreachable_pub)]
mod servers;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use tokio::sync::oneshot;
use tonic::transport::Channel;

use calbridge::pb::calendar_adapter_client::CalendarAdapterClient;
use calbridge::pb::{self, event_time};
use calbridge::time::to_timestamp;
use calbridge_adapter_caldav::mapping::parse_object;
use calbridge_adapter_caldav::recurrence::{expand, Window};
use calbridge_adapter_caldav::Config;
use servers::{start, Kind};

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
}

/// The test window: 2026-01-01 to 2026-12-01.
fn window() -> Window {
    Window {
        start: utc(2026, 1, 1, 0, 0),
        end: utc(2026, 12, 1, 0, 0),
    }
}

fn calendar(body: &str) -> String {
    let body: Vec<&str> = body
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//calbridge tests//EN\r\n{}\r\nEND:VCALENDAR\r\n",
        body.join("\r\n")
    )
}

/// A start or end as text: `YYYY-MM-DD` or `YYYY-MM-DDTHH:MMZ`.
fn show(t: &Option<pb::EventTime>) -> String {
    match &t.as_ref().expect("time set").value {
        Some(event_time::Value::Date(d)) => d.clone(),
        Some(event_time::Value::Instant(ts)) => calbridge::time::from_timestamp(ts)
            .unwrap()
            .format("%Y-%m-%dT%H:%MZ")
            .to_string(),
        None => "-".into(),
    }
}

/// Each event as (id suffix, start, end, title).
fn rows(events: &[pb::Event]) -> Vec<(String, String, String, String)> {
    events
        .iter()
        .map(|e| {
            let suffix = e
                .provider_event_id
                .rsplit_once('#')
                .map_or(String::new(), |(_, s)| s.to_string());
            (suffix, show(&e.start), show(&e.end), e.title.clone())
        })
        .collect()
}

fn row(suffix: &str, start: &str, end: &str, title: &str) -> (String, String, String, String) {
    (suffix.into(), start.into(), end.into(), title.into())
}

fn expanded(ics: &str) -> Vec<pb::Event> {
    let obj = parse_object(ics, None).expect("the object reads");
    expand(&obj, "/c/x.ics", "\"1\"", window(), false).expect("the object expands")
}

/// A VTIMEZONE no IANA zone matches: +03:00, and +04:00 from the second
/// Sunday of April to the second Sunday of September (at 02:00 local).
const ODD_ZONE: &str = "BEGIN:VTIMEZONE
TZID:Customized Time Zone
BEGIN:STANDARD
DTSTART:16010101T020000
TZOFFSETFROM:+0400
TZOFFSETTO:+0300
RRULE:FREQ=YEARLY;BYDAY=2SU;BYMONTH=9
END:STANDARD
BEGIN:DAYLIGHT
DTSTART:16010101T020000
TZOFFSETFROM:+0300
TZOFFSETTO:+0400
RRULE:FREQ=YEARLY;BYDAY=2SU;BYMONTH=4
END:DAYLIGHT
END:VTIMEZONE";

fn custom_zone_series() -> String {
    calendar(&format!(
        "{ODD_ZONE}
BEGIN:VEVENT
UID:custom-zone
DTSTAMP:20260101T000000Z
SUMMARY:Custom zone
DTSTART;TZID=Customized Time Zone:20260402T090000
DTEND;TZID=Customized Time Zone:20260402T100000
RRULE:FREQ=WEEKLY;COUNT=3
END:VEVENT"
    ))
}

#[test]
fn a_custom_vtimezone_is_read_by_its_own_rules_not_a_guessed_zone() {
    // 2026-04-12 is the second Sunday of April: 09:00 is 06:00Z before it
    // (+03:00) and 05:00Z after it (+04:00).
    assert_eq!(
        rows(&expanded(&custom_zone_series())),
        [
            row(
                "20260402T060000Z",
                "2026-04-02T06:00Z",
                "2026-04-02T07:00Z",
                "Custom zone"
            ),
            row(
                "20260409T060000Z",
                "2026-04-09T06:00Z",
                "2026-04-09T07:00Z",
                "Custom zone"
            ),
            row(
                "20260416T050000Z",
                "2026-04-16T05:00Z",
                "2026-04-16T06:00Z",
                "Custom zone"
            ),
        ]
    );
}

/// An object whose VTIMEZONE is `zone` and whose one event uses it.
fn in_zone(zone: &str) -> String {
    calendar(&format!(
        "{zone}
BEGIN:VEVENT
UID:bad-zone
DTSTAMP:20260101T000000Z
DTSTART;TZID=Odd:20260402T090000
DURATION:PT1H
END:VEVENT"
    ))
}

fn unreadable_zones() -> Vec<String> {
    vec![
        // No TZOFFSETTO.
        in_zone(
            "BEGIN:VTIMEZONE\nTZID:Odd\nBEGIN:STANDARD\nDTSTART:19700101T000000\nTZOFFSETFROM:+0100\nEND:STANDARD\nEND:VTIMEZONE",
        ),
        // No observance at all.
        in_zone("BEGIN:VTIMEZONE\nTZID:Odd\nEND:VTIMEZONE"),
        // A transition every minute since 1601: far beyond the bound.
        in_zone(
            "BEGIN:VTIMEZONE\nTZID:Odd\nBEGIN:STANDARD\nDTSTART:16010101T000000\nTZOFFSETFROM:+0100\nTZOFFSETTO:+0200\nRRULE:FREQ=MINUTELY\nEND:STANDARD\nEND:VTIMEZONE",
        ),
    ]
}

#[test]
fn an_unreadable_or_hostile_vtimezone_makes_its_event_unreadable_quickly() {
    for ics in unreadable_zones() {
        let started = std::time::Instant::now();
        let read = parse_object(&ics, None);
        assert!(read.is_err(), "{ics}\nread as {read:?}");
        let reason = read.unwrap_err().to_string();
        assert!(reason.contains("VTIMEZONE"), "{reason}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "took {:?}",
            started.elapsed()
        );
    }
}

fn this_and_future_series() -> String {
    calendar(
        "BEGIN:VEVENT
UID:range
DTSTAMP:20260101T000000Z
SUMMARY:Weekly
DTSTART;TZID=Europe/Berlin:20260309T090000
DTEND;TZID=Europe/Berlin:20260309T100000
RRULE:FREQ=WEEKLY;COUNT=6
END:VEVENT
BEGIN:VEVENT
UID:range
DTSTAMP:20260101T000000Z
SUMMARY:Weekly later
RECURRENCE-ID;RANGE=THISANDFUTURE;TZID=Europe/Berlin:20260316T090000
DTSTART;TZID=Europe/Berlin:20260316T110000
DTEND;TZID=Europe/Berlin:20260316T113000
END:VEVENT
BEGIN:VEVENT
UID:range
DTSTAMP:20260101T000000Z
SUMMARY:One moved
RECURRENCE-ID;TZID=Europe/Berlin:20260406T090000
DTSTART;TZID=Europe/Berlin:20260407T080000
DTEND;TZID=Europe/Berlin:20260407T090000
END:VEVENT",
    )
}

#[test]
fn a_thisandfuture_override_moves_and_changes_every_later_instance() {
    // 11:00 Berlin is 10:00Z in March (CET) and 09:00Z from 2026-03-29
    // (CEST): the move is on the wall clock. The 2026-04-06 instance has
    // its own override.
    assert_eq!(
        rows(&expanded(&this_and_future_series())),
        [
            row(
                "20260309T080000Z",
                "2026-03-09T08:00Z",
                "2026-03-09T09:00Z",
                "Weekly"
            ),
            row(
                "20260316T080000Z",
                "2026-03-16T10:00Z",
                "2026-03-16T10:30Z",
                "Weekly later"
            ),
            row(
                "20260323T080000Z",
                "2026-03-23T10:00Z",
                "2026-03-23T10:30Z",
                "Weekly later"
            ),
            row(
                "20260330T070000Z",
                "2026-03-30T09:00Z",
                "2026-03-30T09:30Z",
                "Weekly later"
            ),
            row(
                "20260406T070000Z",
                "2026-04-07T06:00Z",
                "2026-04-07T07:00Z",
                "One moved"
            ),
            row(
                "20260413T070000Z",
                "2026-04-13T09:00Z",
                "2026-04-13T09:30Z",
                "Weekly later"
            ),
        ]
    );
}

#[test]
fn deleting_a_thisandfuture_instance_keeps_its_change_to_the_later_ones() {
    let ics = this_and_future_series();
    let obj = parse_object(&ics, None).unwrap();
    let original = calbridge_adapter_caldav::recurrence::find_instance(&obj, "20260316T080000Z")
        .expect("the range override's instance");
    let dropped = calbridge_adapter_caldav::ics::drop_instance(&ics, &original, chrono_tz::Tz::UTC)
        .expect("the instance can be deleted");
    let rows = rows(&expanded(&dropped));
    assert!(!rows.iter().any(|r| r.0 == "20260316T080000Z"), "{rows:?}");
    assert!(
        rows.contains(&row(
            "20260323T080000Z",
            "2026-03-23T10:00Z",
            "2026-03-23T10:30Z",
            "Weekly later"
        )),
        "{rows:?}"
    );
}

fn exchange_all_day_series() -> String {
    calendar(
        "BEGIN:VTIMEZONE
TZID:W. Europe Standard Time
BEGIN:STANDARD
DTSTART:16010101T030000
TZOFFSETFROM:+0200
TZOFFSETTO:+0100
RRULE:FREQ=YEARLY;BYDAY=-1SU;BYMONTH=10
END:STANDARD
BEGIN:DAYLIGHT
DTSTART:16010101T020000
TZOFFSETFROM:+0100
TZOFFSETTO:+0200
RRULE:FREQ=YEARLY;BYDAY=-1SU;BYMONTH=3
END:DAYLIGHT
END:VTIMEZONE
BEGIN:VEVENT
UID:exchange-all-day
DTSTAMP:20260101T000000Z
SUMMARY:Office day
DTSTART;VALUE=DATE:20260105
DTEND;VALUE=DATE:20260106
RRULE:FREQ=WEEKLY;COUNT=3
END:VEVENT
BEGIN:VEVENT
UID:exchange-all-day
DTSTAMP:20260101T000000Z
SUMMARY:Office day (moved)
RECURRENCE-ID;TZID=W. Europe Standard Time:20260112T000000
DTSTART;VALUE=DATE:20260114
DTEND;VALUE=DATE:20260115
END:VEVENT",
    )
}

#[test]
fn an_exchange_date_time_recurrence_id_replaces_its_all_day_instance() {
    assert_eq!(
        rows(&expanded(&exchange_all_day_series())),
        [
            row("20260105", "2026-01-05", "2026-01-06", "Office day"),
            row("20260112", "2026-01-14", "2026-01-15", "Office day (moved)"),
            row("20260119", "2026-01-19", "2026-01-20", "Office day"),
        ]
    );
}

/// Two masters of one UID: `first` and `second` are their SEQUENCE,
/// DTSTAMP and LAST-MODIFIED lines.
fn two_masters(first: &str, second: &str) -> String {
    calendar(&format!(
        "BEGIN:VEVENT
UID:twice
{first}
SUMMARY:First
DTSTART:20260105T090000Z
DURATION:PT1H
END:VEVENT
BEGIN:VEVENT
UID:twice
{second}
SUMMARY:Second
DTSTART:20260106T090000Z
DURATION:PT1H
END:VEVENT"
    ))
}

#[test]
fn of_two_masters_of_one_uid_the_latest_revision_wins() {
    let title = |ics: String| expanded(&ics)[0].title.clone();
    // A higher SEQUENCE wins wherever it is written.
    assert_eq!(
        title(two_masters(
            "SEQUENCE:1\nDTSTAMP:20260102T000000Z",
            "SEQUENCE:2\nDTSTAMP:20260101T000000Z"
        )),
        "Second"
    );
    assert_eq!(
        title(two_masters(
            "SEQUENCE:3\nDTSTAMP:20260101T000000Z",
            "SEQUENCE:2\nDTSTAMP:20260102T000000Z"
        )),
        "First"
    );
    // The same SEQUENCE: the later DTSTAMP, then the later LAST-MODIFIED,
    // then the one written last.
    assert_eq!(
        title(two_masters(
            "SEQUENCE:2\nDTSTAMP:20260103T000000Z",
            "SEQUENCE:2\nDTSTAMP:20260102T000000Z"
        )),
        "First"
    );
    assert_eq!(
        title(two_masters(
            "DTSTAMP:20260102T000000Z\nLAST-MODIFIED:20260102T000000Z",
            "DTSTAMP:20260102T000000Z\nLAST-MODIFIED:20260101T000000Z"
        )),
        "First"
    );
    assert_eq!(
        title(two_masters(
            "DTSTAMP:20260102T000000Z",
            "DTSTAMP:20260102T000000Z"
        )),
        "Second"
    );
}

fn period_series() -> String {
    calendar(
        "BEGIN:VEVENT
UID:periods
DTSTAMP:20260101T000000Z
SUMMARY:Clinic
DTSTART:20260105T090000Z
DTEND:20260105T100000Z
RDATE;VALUE=PERIOD:20260107T120000Z/20260107T150000Z
RDATE;VALUE=PERIOD:20260108T120000Z/PT30M
END:VEVENT",
    )
}

#[test]
fn rdate_periods_keep_their_own_length() {
    assert_eq!(
        rows(&expanded(&period_series())),
        [
            row(
                "20260105T090000Z",
                "2026-01-05T09:00Z",
                "2026-01-05T10:00Z",
                "Clinic"
            ),
            row(
                "20260107T120000Z",
                "2026-01-07T12:00Z",
                "2026-01-07T15:00Z",
                "Clinic"
            ),
            row(
                "20260108T120000Z",
                "2026-01-08T12:00Z",
                "2026-01-08T12:30Z",
                "Clinic"
            ),
        ]
    );
}

fn ends_before_start() -> Vec<String> {
    let one = |times: &str| {
        calendar(&format!(
            "BEGIN:VEVENT\nUID:backwards\nDTSTAMP:20260101T000000Z\nSUMMARY:Backwards\n{times}\nEND:VEVENT"
        ))
    };
    vec![
        one("DTSTART:20260105T100000Z\nDTEND:20260105T090000Z"),
        one("DTSTART:20260105T100000Z\nDURATION:-PT1H"),
        one("DTSTART;VALUE=DATE:20260105\nDTEND;VALUE=DATE:20260103"),
    ]
}

#[test]
fn an_event_that_ends_before_it_starts_is_refused_not_shortened() {
    for ics in ends_before_start() {
        let read = parse_object(&ics, None);
        assert!(read.is_err(), "{ics}\nread as {read:?}");
        assert_eq!(
            read.unwrap_err().to_string(),
            "the event ends before it starts"
        );
    }
    // An end equal to the start stays a zero-length event.
    let zero = calendar(
        "BEGIN:VEVENT\nUID:zero\nDTSTAMP:20260101T000000Z\nDTSTART:20260105T100000Z\nDTEND:20260105T100000Z\nEND:VEVENT",
    );
    assert_eq!(
        rows(&expanded(&zero)),
        [row("", "2026-01-05T10:00Z", "2026-01-05T10:00Z", "")]
    );
}

/// The first date a row starts on (for the server tests' lookups).
fn starts_on(events: &[pb::Event], date: NaiveDate) -> Vec<String> {
    let d = date.format("%Y-%m-%d").to_string();
    rows(events)
        .into_iter()
        .filter(|(_, start, _, _)| start.starts_with(&d))
        .map(|(_, start, _, title)| format!("{start} {title}"))
        .collect()
}

// The real servers: every case stored by another client, then listed by
// the adapter's SyncEvents.

struct Adapter {
    client: CalendarAdapterClient<Channel>,
    _stop: oneshot::Sender<()>,
}

async fn adapter() -> Adapter {
    let bound = calbridge_runtime::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = bound.addr;
    let (stop, stopped) = oneshot::channel::<()>();
    let mut config = Config::new(addr);
    config.allow_private_networks = vec!["127.0.0.1/32".parse().unwrap()];
    tokio::spawn(calbridge_adapter_caldav::serve(bound, config, async move {
        let _ = stopped.await;
    }));
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    Adapter {
        client: CalendarAdapterClient::new(channel),
        _stop: stop,
    }
}

async fn through_a_server(kind: Kind) {
    let server = start(kind).await;
    // Servers may refuse what they cannot read (Radicale refuses RDATE
    // periods and two masters of one UID) or what RFC 5545 forbids; what they store, the adapter
    // must read, or report as skipped.
    let mut refused = Vec::new();
    let mut stored = Vec::new();
    let mut broken = Vec::new();
    let cases = [
        ("custom-zone.ics".to_string(), custom_zone_series()),
        ("range.ics".into(), this_and_future_series()),
        ("exchange-all-day.ics".into(), exchange_all_day_series()),
        ("periods.ics".into(), period_series()),
        (
            "twice.ics".into(),
            two_masters(
                "SEQUENCE:1\nDTSTAMP:20260102T000000Z",
                "SEQUENCE:2\nDTSTAMP:20260101T000000Z",
            ),
        ),
    ];
    let broken_cases = ends_before_start()
        .into_iter()
        .chain(unreadable_zones())
        .enumerate()
        .map(|(i, ics)| (format!("broken-{i}.ics"), ics));
    for (name, ics) in cases.into_iter().chain(broken_cases) {
        let href = format!("{}{name}", server.calendar);
        let status = server.request("PUT", &href, Some(&ics), &[]).await.status();
        if !status.is_success() {
            refused.push(name);
        } else if name.starts_with("broken-") {
            broken.push(name);
        } else {
            stored.push(name);
        }
    }
    let good_refused: Vec<&String> = refused
        .iter()
        .filter(|n| !n.starts_with("broken-"))
        .collect();
    match kind {
        Kind::Radicale => assert_eq!(good_refused, ["periods.ics", "twice.ics"]),
        Kind::Xandikos => assert!(good_refused.is_empty(), "{good_refused:?}"),
    }
    let mut a = adapter().await;
    let creds = a
        .client
        .check_password(pb::CheckPasswordRequest {
            server_url: server.base.clone(),
            username: server.user.0.into(),
            password: server.user.1.into(),
            access_level: pb::AccessLevel::ReadWrite as i32,
        })
        .await
        .unwrap()
        .into_inner();
    let w = window();
    let mut events = Vec::new();
    let mut skipped = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = a
            .client
            .sync_events(pb::SyncEventsRequest {
                credentials: Some(creds.clone()),
                calendar_id: server.calendar.clone(),
                cursor: cursor.clone(),
                window: Some(pb::TimeWindow {
                    start: Some(to_timestamp(w.start)),
                    end: Some(to_timestamp(w.end)),
                }),
                page_size: 500,
                busy_only: false,
            })
            .await
            .unwrap()
            .into_inner();
        events.extend(page.upserted);
        skipped.extend(page.skipped);
        cursor = page.next_cursor;
        if !page.more {
            break;
        }
    }
    events.sort_by_key(|e| (show(&e.start), e.provider_event_id.clone()));
    let day = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap();
    let of = |name: &str| -> Vec<pb::Event> {
        events
            .iter()
            .filter(|e| e.provider_event_id.contains(name))
            .cloned()
            .collect()
    };
    assert_eq!(
        starts_on(&of("custom-zone"), day(2026, 4, 16)),
        ["2026-04-16T05:00Z Custom zone"],
        "{kind:?}"
    );
    assert_eq!(
        starts_on(&of("range"), day(2026, 4, 13)),
        ["2026-04-13T09:00Z Weekly later"],
        "{kind:?}"
    );
    assert!(
        starts_on(&of("exchange-all-day"), day(2026, 1, 12)).is_empty(),
        "{kind:?}: the moved all-day instance still shows"
    );
    if stored.iter().any(|n| n == "periods.ics") {
        assert_eq!(rows(&of("periods"))[1].2, "2026-01-07T15:00Z", "{kind:?}");
    }
    if stored.iter().any(|n| n == "twice.ics") {
        assert_eq!(of("twice")[0].title, "Second", "{kind:?}");
    }
    for name in &broken {
        assert!(
            of(name).is_empty(),
            "{kind:?}: {name} was listed as an event"
        );
        assert!(
            skipped.iter().any(|s| s.item_id.ends_with(name)
                && (s.reason.contains("ends before it starts") || s.reason.contains("VTIMEZONE"))),
            "{kind:?}: {name} is not reported as skipped: {skipped:?}"
        );
    }
    eprintln!("{kind:?} refused on PUT: {refused:?}");
}

#[tokio::test]
async fn radicale_objects_read_with_icalendar_fidelity() {
    through_a_server(Kind::Radicale).await;
}

#[tokio::test]
async fn xandikos_objects_read_with_icalendar_fidelity() {
    through_a_server(Kind::Xandikos).await;
}
