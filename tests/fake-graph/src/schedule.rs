//! `POST /me/calendar/getSchedule` (also spelled
//! `microsoft.graph.getSchedule`): the free/busy of up to 20 mailboxes
//! over a window shorter than 62 days, as Graph answers it — one
//! `scheduleInformation` per address asked, with the digit view
//! (`availabilityView`), the items of the mailbox's default calendar
//! (series occurrences included) with their `showAs` as status, the
//! working hours, or an `error` for an address no mailbox has. Bodies are
//! read in Microsoft's camelCase and in the CSDL's PascalCase alike. Every
//! answer is checked against Microsoft's `scheduleInformation` schema
//! here: the spec gives the collection inline, so the checking middleware
//! has no schema name for it.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Duration, NaiveDateTime, Timelike as _, Utc};
use serde_json::{json, Map, Value};

use crate::api::{caller, graph_error, view};
use crate::events::{calendar_items, err, zone, GraphErr, View};
use crate::state::{calbridge_local_to_utc, State as FakeState, User};
use crate::Shared;

/// Most addresses one call may ask about.
pub(crate) const MAX_SCHEDULES: usize = 20;
/// A window this long or longer is refused (`ErrorTimeIntervalTooBig`).
pub(crate) const MAX_WINDOW_DAYS: i64 = 62;
/// The digit view's interval when the body names none, in minutes.
const DEFAULT_INTERVAL: i64 = 30;
/// The shortest and longest digit-view interval, in minutes.
const INTERVALS: std::ops::RangeInclusive<i64> = 5..=1440;

/// A getSchedule request, read and checked.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Ask {
    pub(crate) schedules: Vec<String>,
    pub(crate) start: DateTime<Utc>,
    pub(crate) end: DateTime<Utc>,
    /// Minutes per digit of `availabilityView`.
    pub(crate) interval: i64,
}

fn invalid(message: impl Into<String>) -> GraphErr {
    err(400, "ErrorInvalidRequest", message)
}

/// The property `name` of an action body, in camelCase or PascalCase.
fn property<'a>(body: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    body.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
        .filter(|v| !v.is_null())
}

/// A `dateTimeTimeZone` of the body as an instant (no zone means UTC).
fn instant(v: &Value, field: &str) -> Result<DateTime<Utc>, GraphErr> {
    let Some(o) = v.as_object() else {
        return Err(invalid(format!("{field} must be a dateTimeTimeZone")));
    };
    let text = property(o, "dateTime")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("{field}.dateTime is required")))?;
    let name = property(o, "timeZone")
        .and_then(Value::as_str)
        .unwrap_or("UTC");
    let tz = zone(name).ok_or_else(|| {
        err(
            400,
            "TimeZoneNotSupportedException",
            format!(
                "A valid TimeZone value must be specified. The following TimeZone value is not supported: '{}'.",
                name.chars().take(60).collect::<String>()
            ),
        )
    })?;
    let trimmed = text.trim_end_matches('Z');
    let local = NaiveDateTime::parse_from_str(trimmed, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(trimmed, "%Y-%m-%dT%H:%M"))
        .map_err(|_| invalid(format!("{field}.dateTime is not a date-time")))?;
    Ok(calbridge_local_to_utc(local, tz))
}

/// Reads a getSchedule body with Graph's limits: 1 to 20 schedules, a
/// window shorter than 62 days, an interval of 5 to 1440 minutes.
pub(crate) fn parse(body: &[u8]) -> Result<Ask, GraphErr> {
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(body) else {
        return Err(err(
            400,
            "RequestBodyRead",
            "Unable to read JSON request payload.",
        ));
    };
    let listed = property(&body, "schedules")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("schedules is required"))?;
    let schedules: Vec<String> = listed
        .iter()
        .map(|s| s.as_str().map(str::to_string))
        .collect::<Option<_>>()
        .ok_or_else(|| invalid("schedules must hold SMTP addresses"))?;
    if schedules.is_empty() {
        return Err(invalid("schedules must name at least one address"));
    }
    if schedules.len() > MAX_SCHEDULES {
        return Err(invalid(format!(
            "The number of schedules ({}) exceeds the allowed limit = {MAX_SCHEDULES}.",
            schedules.len()
        )));
    }
    let start = instant(
        property(&body, "startTime").ok_or_else(|| invalid("startTime is required"))?,
        "startTime",
    )?;
    let end = instant(
        property(&body, "endTime").ok_or_else(|| invalid("endTime is required"))?,
        "endTime",
    )?;
    if end <= start {
        return Err(invalid("The end time must be after the start time."));
    }
    if end - start >= Duration::days(MAX_WINDOW_DAYS) {
        return Err(err(
            400,
            "ErrorTimeIntervalTooBig",
            format!("The requested time duration is too long. The allowed limit = {MAX_WINDOW_DAYS} days."),
        ));
    }
    let interval = match property(&body, "availabilityViewInterval") {
        None => DEFAULT_INTERVAL,
        Some(v) => v
            .as_i64()
            .filter(|n| INTERVALS.contains(n))
            .ok_or_else(|| {
                invalid(format!(
                    "availabilityViewInterval must be {} to {} minutes.",
                    INTERVALS.start(),
                    INTERVALS.end()
                ))
            })?,
    };
    Ok(Ask {
        schedules,
        start,
        end,
        interval,
    })
}

/// Graph's `freeBusyStatus`, ordered by how it wins a digit of the view
/// when items overlap (out of office over busy over tentative over
/// working elsewhere over free).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Status {
    Free,
    WorkingElsewhere,
    Tentative,
    Busy,
    Oof,
}

impl Status {
    /// The status of an event's `showAs` (busy when unset or unknown).
    pub(crate) fn of_show_as(show_as: Option<&str>) -> Status {
        match show_as {
            Some("free") => Status::Free,
            Some("workingElsewhere") => Status::WorkingElsewhere,
            Some("tentative") => Status::Tentative,
            Some("oof") => Status::Oof,
            _ => Status::Busy,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Status::Free => "free",
            Status::WorkingElsewhere => "workingElsewhere",
            Status::Tentative => "tentative",
            Status::Busy => "busy",
            Status::Oof => "oof",
        }
    }

    /// The digit of `availabilityView`.
    fn digit(self) -> char {
        match self {
            Status::Free => '0',
            Status::Tentative => '1',
            Status::Busy => '2',
            Status::Oof => '3',
            Status::WorkingElsewhere => '4',
        }
    }
}

/// One item of a schedule.
#[derive(Debug, Clone)]
struct Slot {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    status: Status,
    subject: String,
    location: String,
    private: bool,
}

/// The items of `user`'s default calendar that overlap `[start, end)`,
/// cancelled ones left out, sorted by start.
fn slots(user: &User, start: DateTime<Utc>, end: DateTime<Utc>) -> Vec<Slot> {
    let Some(cal) = user.calendars.iter().find(|c| c.is_default) else {
        return Vec::new();
    };
    let mut out: Vec<Slot> = calendar_items(user, &cal.id)
        .into_iter()
        .filter(|i| i.start < end && i.end > start)
        .filter(|i| i.event.fields.get("isCancelled") != Some(&Value::Bool(true)))
        .map(|i| {
            let f = |k: &str| i.event.fields.get(k);
            Slot {
                start: i.start,
                end: i.end,
                status: Status::of_show_as(f("showAs").and_then(Value::as_str)),
                subject: f("subject")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                location: f("location")
                    .and_then(|l| l["displayName"].as_str())
                    .unwrap_or("")
                    .to_string(),
                private: f("sensitivity").and_then(Value::as_str) == Some("private"),
            }
        })
        .collect();
    out.sort_by_key(|s| (s.start, s.end));
    out
}

/// The digit view of `items` over `[start, end)`: one digit per
/// `interval` minutes (the last interval may run past `end`), the
/// busiest status of the items overlapping it, `0` where none does.
pub(crate) fn availability_view(
    items: &[(DateTime<Utc>, DateTime<Utc>, Status)],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    interval: i64,
) -> String {
    let step = Duration::minutes(interval.max(1));
    let mut out = String::new();
    let mut s = start;
    while s < end {
        let e = s + step;
        let status = items
            .iter()
            .filter(|(a, b, _)| *a < e && *b > s)
            .map(|(_, _, st)| *st)
            .max()
            .unwrap_or(Status::Free);
        out.push(status.digit());
        s = e;
    }
    out
}

/// Graph's local `dateTime` of `t` in the view's zone.
fn when(t: DateTime<Utc>, v: &View) -> Value {
    let local = t.with_timezone(&v.zone).naive_local();
    json!({
        "dateTime": format!("{}.{:07}", local.format("%Y-%m-%dT%H:%M:%S"), local.nanosecond() / 100),
        "timeZone": v.zone_name,
    })
}

/// The `scheduleInformation` of `address` for a request by `caller`:
/// subjects and locations are shown on the caller's own schedule only
/// (others share their free/busy alone, the organisation's default).
fn information(st: &FakeState, ask: &Ask, address: &str, caller: &str, v: &View) -> Value {
    let Some(user) = st
        .users
        .values()
        .find(|u| u.email.eq_ignore_ascii_case(address))
    else {
        return json!({
            "scheduleId": address,
            "availabilityView": "",
            "scheduleItems": [],
            "error": {
                "message": format!(
                    "The specified mailbox ({}) could not be found.",
                    address.chars().take(80).collect::<String>()
                ),
                "responseCode": "ErrorMailRecipientNotFound",
            },
        });
    };
    let own = user.email.eq_ignore_ascii_case(caller);
    let found = slots(user, ask.start, ask.end);
    let spans: Vec<_> = found.iter().map(|s| (s.start, s.end, s.status)).collect();
    let items: Vec<Value> = found
        .iter()
        .map(|s| {
            let mut item = json!({
                "isPrivate": s.private,
                "status": s.status.name(),
                "start": when(s.start, v),
                "end": when(s.end, v),
            });
            if own {
                item["subject"] = json!(s.subject);
                item["location"] = json!(s.location);
            }
            item
        })
        .collect();
    json!({
        "scheduleId": address,
        "availabilityView": availability_view(&spans, ask.start, ask.end, ask.interval),
        "scheduleItems": items,
        "workingHours": {
            "daysOfWeek": ["monday", "tuesday", "wednesday", "thursday", "friday"],
            "startTime": "08:00:00.0000000",
            "endTime": "17:00:00.0000000",
            "timeZone": {"name": user.time_zone},
        },
    })
}

/// Whether the call's token may read schedules: `Calendars.Read`, the
/// least privilege Microsoft's getSchedule page names, or
/// `Calendars.ReadWrite`.
fn may_read_schedules(s: &Shared, h: &HeaderMap) -> bool {
    let bearer = h
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    s.lock().access.get(bearer).is_some_and(|a| {
        a.scopes
            .iter()
            .any(|x| x == "Calendars.Read" || x == "Calendars.ReadWrite")
    })
}

/// Records where an answer breaks Graph's response schema of getSchedule:
/// an object whose `value` is an array of `scheduleInformation`.
fn check_answer(s: &Shared, answer: &Value) {
    const WHAT: &str = "answer 200 to POST /me/calendar/getSchedule";
    match answer["value"].as_array() {
        Some(items) => {
            for item in items {
                s.check(WHAT, "microsoft.graph.scheduleInformation", item);
            }
        }
        None if s.config.validate => {
            let mut st = s.lock();
            if st.violations.len() < 1000 {
                st.violations
                    .push(format!("{WHAT}: $.value: expected an array"));
            }
        }
        None => {}
    }
}

/// `POST /me/calendar/getSchedule` and `.../microsoft.graph.getSchedule`.
pub(crate) async fn get_schedule(
    State(s): State<Arc<Shared>>,
    h: HeaderMap,
    m: Method,
    body: axum::body::Bytes,
) -> Response {
    let user = match caller(&s, &h, &m, "/me/calendar/getSchedule", false) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    if !may_read_schedules(&s, &h) {
        return graph_error(&err(
            403,
            "ErrorAccessDenied",
            "Access is denied. Check credentials and try again.",
        ));
    }
    let ask = match parse(&body) {
        Ok(a) => a,
        Err(e) => return graph_error(&e),
    };
    let v = view(&h, &HashMap::new());
    let value: Vec<Value> = {
        let st = s.lock();
        ask.schedules
            .iter()
            .map(|a| information(&st, &ask, a, &user, &v))
            .collect()
    };
    let answer = json!({
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Collection(microsoft.graph.scheduleInformation)",
        "value": value,
    });
    check_answer(&s, &answer);
    let mut r = (StatusCode::OK, Json(answer)).into_response();
    if v.zone_name != "UTC" {
        if let Ok(hv) = format!("outlook.timezone=\"{}\"", v.zone_name).parse() {
            r.headers_mut().insert("preference-applied", hv);
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone as _;

    fn at(day: u32, hour: u32, minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, day, hour, minute, 0).unwrap()
    }

    fn body(v: Value) -> Vec<u8> {
        serde_json::to_vec(&v).unwrap()
    }

    fn window(days: i64) -> Value {
        json!({
            "schedules": ["ada@contoso.example"],
            "startTime": {"dateTime": "2026-03-01T00:00:00", "timeZone": "UTC"},
            "endTime": {"dateTime": (at(1, 0, 0) + Duration::days(days)).format("%Y-%m-%dT%H:%M:%S").to_string(), "timeZone": "UTC"},
        })
    }

    #[test]
    fn camel_and_pascal_case_bodies_read_alike_with_a_default_interval_of_30() {
        let camel = parse(&body(window(1))).unwrap();
        assert_eq!(camel.interval, 30);
        assert_eq!((camel.start, camel.end), (at(1, 0, 0), at(2, 0, 0)));
        let pascal = parse(&body(json!({
            "Schedules": ["ada@contoso.example"],
            "StartTime": {"DateTime": "2026-03-01T01:00:00", "TimeZone": "W. Europe Standard Time"},
            "EndTime": {"dateTime": "2026-03-02T00:00:00", "timeZone": "UTC"},
            "AvailabilityViewInterval": 60,
        })))
        .unwrap();
        assert_eq!(pascal.start, at(1, 0, 0), "01:00 in Berlin is midnight UTC");
        assert_eq!(pascal.interval, 60);
    }

    #[test]
    fn more_than_twenty_schedules_are_refused() {
        let mut twenty = window(1);
        twenty["schedules"] = json!((0..20)
            .map(|i| format!("u{i}@x.example"))
            .collect::<Vec<_>>());
        assert!(parse(&body(twenty.clone())).is_ok());
        twenty["schedules"]
            .as_array_mut()
            .unwrap()
            .push(json!("u20@x.example"));
        let e = parse(&body(twenty)).unwrap_err();
        assert_eq!((e.status, e.code), (400, "ErrorInvalidRequest"));
        let mut none = window(1);
        none["schedules"] = json!([]);
        assert_eq!(parse(&body(none)).unwrap_err().status, 400);
    }

    #[test]
    fn a_window_of_62_days_or_more_is_too_big() {
        assert!(parse(&body(window(61))).is_ok());
        let mut just_under = window(62);
        just_under["endTime"]["dateTime"] = json!("2026-05-01T23:59:59");
        assert!(parse(&body(just_under)).is_ok(), "61 days and 23:59:59");
        for days in [62, 63, 400] {
            let e = parse(&body(window(days))).unwrap_err();
            assert_eq!(
                (e.status, e.code),
                (400, "ErrorTimeIntervalTooBig"),
                "{days}"
            );
        }
        let mut backwards = window(1);
        backwards["endTime"]["dateTime"] = json!("2026-02-28T00:00:00");
        assert_eq!(parse(&body(backwards)).unwrap_err().status, 400);
    }

    #[test]
    fn the_interval_must_be_5_to_1440_minutes() {
        for (n, fine) in [
            (json!(5), true),
            (json!(1440), true),
            (json!(4), false),
            (json!(1441), false),
            (json!(0), false),
            (json!(-30), false),
            (json!("30"), false),
            (json!(null), true),
        ] {
            let mut b = window(1);
            b["availabilityViewInterval"] = n.clone();
            assert_eq!(parse(&body(b)).is_ok(), fine, "{n}");
        }
    }

    #[test]
    fn unreadable_bodies_and_times_are_refused() {
        assert_eq!(parse(b"[1]").unwrap_err().code, "RequestBodyRead");
        let mut zoned = window(1);
        zoned["startTime"]["timeZone"] = json!("Mars/Olympus Mons");
        assert_eq!(
            parse(&body(zoned)).unwrap_err().code,
            "TimeZoneNotSupportedException"
        );
        let mut missing = window(1);
        missing.as_object_mut().unwrap().remove("endTime");
        assert_eq!(parse(&body(missing)).unwrap_err().status, 400);
    }

    #[test]
    fn each_digit_is_the_busiest_status_of_its_interval() {
        let items = [
            (at(1, 9, 0), at(1, 10, 0), Status::Busy),
            (at(1, 9, 30), at(1, 11, 0), Status::Tentative),
            (at(1, 11, 0), at(1, 11, 30), Status::Oof),
            (at(1, 12, 0), at(1, 12, 30), Status::WorkingElsewhere),
            (at(1, 12, 0), at(1, 13, 0), Status::Free),
            (at(1, 13, 10), at(1, 13, 20), Status::Tentative),
        ];
        let view = availability_view(&items, at(1, 8, 30), at(1, 14, 0), 30);
        // 08:30 free, 09:00 busy, 09:30 busy over tentative, 10:00 and
        // 10:30 tentative, 11:00 oof, 11:30 free, 12:00 working elsewhere
        // over free, 12:30 free item, 13:00 tentative for ten minutes,
        // 13:30 free.
        assert_eq!(view, "02211304010");
        assert_eq!(
            availability_view(&items, at(1, 8, 0), at(1, 14, 0), 1440),
            "3"
        );
        assert_eq!(
            availability_view(&[], at(1, 0, 0), at(1, 0, 50), 30),
            "00",
            "a last partial interval still has its digit"
        );
    }

    #[test]
    fn show_as_values_become_statuses_and_unknown_counts_as_busy() {
        for (show, status) in [
            (Some("free"), "free"),
            (Some("tentative"), "tentative"),
            (Some("busy"), "busy"),
            (Some("oof"), "oof"),
            (Some("workingElsewhere"), "workingElsewhere"),
            (Some("unknown"), "busy"),
            (None, "busy"),
        ] {
            assert_eq!(Status::of_show_as(show).name(), status, "{show:?}");
        }
    }
}
