//! Native free/busy through Graph's `getSchedule`: the busy intervals of
//! the account's own mailbox, read from its schedule items. Outlook
//! publishes a mailbox's free/busy from its default calendar, so that is
//! the one calendar this answers for; any other is refused by name.
//! Windows are cut into ranges shorter than Graph's 62 days, each one
//! `getSchedule` call (through the session's budget, retries and spans)
//! for one address, never more than Graph's 20. Nothing but status and
//! times is read: subjects and locations Graph may add to the items are
//! not even deserialised.
//!
//! Statuses map as the synced events of [`crate::mapping`] block time:
//! `busy` (and `unknown` or any status Graph adds later) is busy,
//! `tentative` tentative, `oof` out of office; `free` and
//! `workingElsewhere` block nothing and are left out.

use chrono::{DateTime, NaiveDateTime, TimeZone as _, Utc};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Value};

use calbridge::adapter::Window;
use calbridge::pb;
use calbridge::time::to_timestamp;
use calbridge::Invalid;

use crate::client::{Call, Failure, Session};
use crate::error::{meaning, short, GraphError};
use crate::model;

/// Most addresses Graph takes in one getSchedule call.
pub const MAX_SCHEDULES: usize = 20;
/// The longest range asked in one call, in days (Graph refuses 62 or
/// more with `ErrorTimeIntervalTooBig`).
pub const MAX_RANGE_DAYS: i64 = 61;
/// Minutes per digit of the view Graph adds to every answer: the view is
/// not read (the items are exact), so it is asked as coarse as Graph
/// allows, to keep answers small.
const VIEW_INTERVAL_MINUTES: u32 = 1440;

/// getSchedule's answer, as far as it is read.
#[derive(Debug, Clone, Deserialize)]
pub struct Answer {
    /// One entry per address asked.
    #[serde(default)]
    pub value: Vec<Information>,
}

/// A `scheduleInformation`: its address, items, or why there are none.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Information {
    /// The address asked about.
    pub schedule_id: Option<String>,
    /// The items in the range.
    pub schedule_items: Option<Vec<Item>>,
    /// Set when the address could not be answered.
    pub error: Option<FreeBusyError>,
}

/// A `scheduleItem`: status and times only (subject, location and
/// privacy are left unread on purpose).
#[derive(Debug, Clone, Deserialize)]
pub struct Item {
    /// `free`, `tentative`, `busy`, `oof`, `workingElsewhere`, `unknown`.
    pub status: Option<String>,
    /// Start.
    pub start: Option<model::DateTimeTimeZone>,
    /// End.
    pub end: Option<model::DateTimeTimeZone>,
}

/// A `freeBusyError`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FreeBusyError {
    /// Graph's code (`ErrorMailRecipientNotFound`, ...).
    pub response_code: Option<String>,
}

/// Splits `[start, end)` into consecutive ranges of at most
/// [`MAX_RANGE_DAYS`] days.
pub fn split_window(
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let mut out = Vec::new();
    let mut s = start;
    while s < end {
        let e = (s + chrono::Duration::days(MAX_RANGE_DAYS)).min(end);
        out.push((s, e));
        s = e;
    }
    out
}

/// How an item of `status` blocks time; `None` when it does not.
pub fn busy_status(status: Option<&str>) -> Option<pb::BusyStatus> {
    match status {
        Some("free" | "workingElsewhere") => None,
        Some("tentative") => Some(pb::BusyStatus::Tentative),
        Some("oof") => Some(pb::BusyStatus::OutOfOffice),
        _ => Some(pb::BusyStatus::Busy),
    }
}

/// Graph's local `dateTime` without offset.
fn utc_text(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S").to_string()
}

/// The body of a getSchedule call for `addresses` (at most
/// [`MAX_SCHEDULES`]) over `[start, end)`, in UTC.
pub fn request_body(addresses: &[&str], start: DateTime<Utc>, end: DateTime<Utc>) -> Value {
    json!({
        "schedules": addresses,
        "startTime": {"dateTime": utc_text(start), "timeZone": "UTC"},
        "endTime": {"dateTime": utc_text(end), "timeZone": "UTC"},
        "availabilityViewInterval": VIEW_INTERVAL_MINUTES,
    })
}

/// A `dateTimeTimeZone` as an instant (the first of repeated local times,
/// the offset from before a gap for skipped ones).
fn instant(t: &model::DateTimeTimeZone) -> Option<DateTime<Utc>> {
    let text = t.date_time.as_deref().filter(|s| s.len() <= 40)?;
    let local =
        NaiveDateTime::parse_from_str(text.trim_end_matches('Z'), "%Y-%m-%dT%H:%M:%S%.f").ok()?;
    let zone = crate::mapping::zone(t.time_zone.as_deref().unwrap_or("UTC"))?;
    zone.from_local_datetime(&local)
        .earliest()
        .or_else(|| {
            zone.from_local_datetime(&(local + chrono::Duration::hours(1)))
                .earliest()
        })
        .map(|x| x.with_timezone(&Utc))
}

/// The meaning of an `error` Graph put on a schedule instead of items.
fn schedule_error(e: &FreeBusyError) -> GraphError {
    let code = e.response_code.as_deref().unwrap_or("");
    match code {
        "ErrorMailRecipientNotFound" | "ErrorInvalidSmtpAddress" | "ErrorNonExistentMailbox" => {
            GraphError::NotFound("the account's mailbox".into())
        }
        "ErrorNoFreeBusyAccess" | "ErrorAccessDenied" => GraphError::Forbidden(format!(
            "Microsoft refused the mailbox's free/busy ({})",
            short(code)
        )),
        _ => GraphError::Unavailable(
            format!("free/busy of the mailbox failed ({})", short(code)),
            None,
        ),
    }
}

/// The busy intervals of `info` as intervals of `calendar_id`, clipped to
/// `window`; an `error` in place of items is a failure.
pub fn intervals(
    info: &Information,
    calendar_id: &str,
    window: Window,
) -> Result<Vec<pb::BusyInterval>, GraphError> {
    if let Some(e) = &info.error {
        return Err(schedule_error(e));
    }
    let mut out = Vec::new();
    for item in info.schedule_items.iter().flatten() {
        let Some(status) = busy_status(item.status.as_deref()) else {
            continue;
        };
        let (Some(start), Some(end)) = (
            item.start.as_ref().and_then(instant),
            item.end.as_ref().and_then(instant),
        ) else {
            return Err(GraphError::Protocol(
                "a schedule item has no valid times".into(),
            ));
        };
        let (start, end) = (start.max(window.start), end.min(window.end));
        if start < end {
            out.push(pb::BusyInterval {
                start: Some(to_timestamp(start)),
                end: Some(to_timestamp(end)),
                status: status as i32,
                calendar_id: calendar_id.to_string(),
            });
        }
    }
    Ok(out)
}

/// Sorts busy intervals by start and joins, per calendar and status,
/// intervals that touch or overlap (an item cut at a range boundary comes
/// back whole; the same item seen in two ranges comes back once).
pub fn merge(mut busy: Vec<pb::BusyInterval>) -> Vec<pb::BusyInterval> {
    let ts = |t: Option<prost_types::Timestamp>| t.map(|t| (t.seconds, t.nanos));
    busy.sort_by_key(|b| (b.calendar_id.clone(), b.status, ts(b.start), ts(b.end)));
    let mut merged: Vec<pb::BusyInterval> = Vec::new();
    for b in busy {
        if let Some(last) = merged.last_mut() {
            if last.calendar_id == b.calendar_id
                && last.status == b.status
                && ts(b.start) <= ts(last.end)
            {
                if ts(b.end) > ts(last.end) {
                    last.end = b.end;
                }
                continue;
            }
        }
        merged.push(b);
    }
    merged.sort_by_key(|b| (ts(b.start), ts(b.end), b.calendar_id.clone(), b.status));
    merged
}

/// The meaning of a getSchedule call Graph refused.
fn refused(status: u16, code: &str) -> GraphError {
    match (status, code) {
        (400, "ErrorTimeIntervalTooBig") => GraphError::Invalid(Invalid::field(
            "window",
            "Microsoft refused a free/busy range of 62 days or more (ErrorTimeIntervalTooBig)",
        )),
        (400, _) => GraphError::Invalid(Invalid::field(
            "request",
            format!("Microsoft refused the free/busy query ({})", short(code)),
        )),
        (403, _) => GraphError::Forbidden(format!(
            "Microsoft refused the free/busy query ({}): the grant lacks Calendars.Read",
            short(code)
        )),
        _ => meaning(status, code, "the account's mailbox"),
    }
}

/// The mailbox's default calendar id and its SMTP address (the calendar's
/// owner; `/me` when the calendar names none).
async fn mailbox(session: &Session<'_>) -> Result<(String, String), GraphError> {
    let mut url = session.api().url(&["me", "calendar"]);
    url.query_pairs_mut().append_pair("$select", "id,owner");
    let cal: model::Calendar = session
        .request(
            &Call::new("calendar.get", Method::GET, url),
            "the default calendar",
        )
        .await?
        .json()?;
    let id = cal
        .id
        .filter(|i| !i.is_empty())
        .ok_or_else(|| GraphError::Protocol("the default calendar has no id".into()))?;
    let usable = |a: &String| a.contains('@') && a.len() <= calbridge::limits::MAX_EMAIL_BYTES;
    if let Some(address) = cal.owner.and_then(|o| o.address).filter(usable) {
        return Ok((id, address));
    }
    let mut url = session.api().url(&["me"]);
    url.query_pairs_mut()
        .append_pair("$select", "mail,userPrincipalName");
    let me: model::User = session
        .request(&Call::new("me.get", Method::GET, url), "the user")
        .await?
        .json()?;
    let address = me
        .mail
        .filter(usable)
        .or(me.user_principal_name.filter(usable))
        .ok_or_else(|| GraphError::Protocol("the mailbox has no SMTP address".into()))?;
    Ok((id, address))
}

/// The busy intervals of `calendar_ids` over `window`, merged and sorted
/// by start. Every id must be the mailbox's default calendar (the one
/// Outlook publishes free/busy from); no id asks nothing.
pub async fn query(
    session: &Session<'_>,
    calendar_ids: &[String],
    window: Window,
) -> Result<Vec<pb::BusyInterval>, GraphError> {
    if calendar_ids.is_empty() {
        return Ok(Vec::new());
    }
    let (default_id, address) = mailbox(session).await?;
    let mut inv = Invalid::default();
    for (i, id) in calendar_ids.iter().enumerate() {
        if *id != default_id {
            inv.push(
                format!("calendar_ids[{i}]"),
                "Microsoft publishes free/busy (getSchedule) for the mailbox's default calendar only",
            );
        }
    }
    inv.into_result()?;
    let url = session.api().url(&["me", "calendar", "getSchedule"]);
    let ranges = split_window(window.start, window.end);
    let calls: Vec<Call> = ranges
        .iter()
        .map(|&(start, end)| Call {
            body: Some(request_body(&[address.as_str()], start, end)),
            ..Call::new("getSchedule", Method::POST, url.clone())
        })
        .collect();
    // Several ranges go in one round trip when batching is on.
    let answers: Vec<Result<crate::client::Answer, Failure>> =
        if calls.len() > 1 && session.api().batching() {
            let items: Vec<crate::batch::Item> =
                calls.into_iter().map(crate::batch::Item::new).collect();
            crate::batch::send_all(session, &items).await?
        } else {
            let mut out = Vec::with_capacity(calls.len());
            for call in &calls {
                out.push(match session.send(call).await {
                    Ok(a) => Ok(a),
                    Err(Ok(f)) => Err(f),
                    Err(Err(e)) => return Err(e),
                });
            }
            out
        };
    let mut busy = Vec::new();
    for answer in answers {
        let answer: Answer = match answer {
            Ok(a) => a.json()?,
            Err(f) => return Err(refused(f.status, &f.code)),
        };
        let info = answer
            .value
            .iter()
            .find(|i| {
                i.schedule_id
                    .as_deref()
                    .is_some_and(|s| s.eq_ignore_ascii_case(&address))
            })
            .or(answer.value.first().filter(|_| answer.value.len() == 1))
            .ok_or_else(|| {
                GraphError::Protocol("getSchedule answered no schedule for the mailbox".into())
            })?;
        busy.extend(intervals(info, &default_id, window)?);
    }
    let busy = merge(busy);
    tracing::debug!(
        ranges = ranges.len(),
        intervals = busy.len(),
        "free/busy read"
    );
    Ok(busy)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(day: u32, hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, day, hour, 0, 0).unwrap()
    }

    fn window() -> Window {
        Window {
            start: at(1, 0),
            end: at(10, 0),
        }
    }

    fn info(v: Value) -> Information {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_long_window_is_cut_into_ranges_shorter_than_62_days() {
        let start = at(1, 0);
        let end = start + chrono::Duration::days(400);
        let ranges = split_window(start, end);
        assert_eq!(ranges.len(), 7);
        assert_eq!(ranges[0].0, start);
        assert_eq!(ranges.last().unwrap().1, end);
        for w in ranges.windows(2) {
            assert_eq!(w[0].1, w[1].0, "consecutive, no gap or overlap");
        }
        assert!(ranges
            .iter()
            .all(|(s, e)| *e - *s < chrono::Duration::days(62)));
        assert_eq!(
            split_window(start, start + chrono::Duration::hours(1)).len(),
            1
        );
        assert!(split_window(start, start).is_empty());
    }

    #[test]
    fn the_body_asks_for_the_address_in_utc() {
        let b = request_body(&["ada@contoso.example"], at(1, 0), at(2, 12));
        assert_eq!(b["schedules"], json!(["ada@contoso.example"]));
        assert_eq!(
            b["startTime"],
            json!({"dateTime": "2026-03-01T00:00:00", "timeZone": "UTC"})
        );
        assert_eq!(b["endTime"]["dateTime"], "2026-03-02T12:00:00");
        let n = b["availabilityViewInterval"].as_u64().unwrap();
        assert!((5..=1440).contains(&n));
    }

    #[test]
    fn statuses_map_as_synced_events_block_time() {
        use pb::BusyStatus::*;
        assert_eq!(busy_status(Some("busy")), Some(Busy));
        assert_eq!(busy_status(Some("tentative")), Some(Tentative));
        assert_eq!(busy_status(Some("oof")), Some(OutOfOffice));
        assert_eq!(busy_status(Some("unknown")), Some(Busy));
        assert_eq!(busy_status(Some("somethingNew")), Some(Busy));
        assert_eq!(busy_status(None), Some(Busy));
        assert_eq!(busy_status(Some("free")), None);
        assert_eq!(busy_status(Some("workingElsewhere")), None);
    }

    #[test]
    fn items_become_clipped_intervals_and_free_ones_are_left_out() {
        let i = info(json!({
            "scheduleId": "ada@contoso.example",
            "availabilityView": "0120",
            "scheduleItems": [
                {"status": "busy", "subject": "Salary talk", "location": "Room 4", "isPrivate": false,
                 "start": {"dateTime": "2026-03-02T09:00:00.0000000", "timeZone": "UTC"},
                 "end": {"dateTime": "2026-03-02T10:00:00.0000000", "timeZone": "UTC"}},
                {"status": "tentative",
                 "start": {"dateTime": "2026-03-02T11:00:00.0000000", "timeZone": "W. Europe Standard Time"},
                 "end": {"dateTime": "2026-03-02T12:00:00.0000000", "timeZone": "W. Europe Standard Time"}},
                {"status": "free",
                 "start": {"dateTime": "2026-03-03T09:00:00.0000000", "timeZone": "UTC"},
                 "end": {"dateTime": "2026-03-03T10:00:00.0000000", "timeZone": "UTC"}},
                {"status": "oof",
                 "start": {"dateTime": "2026-02-28T00:00:00.0000000", "timeZone": "UTC"},
                 "end": {"dateTime": "2026-03-01T06:00:00.0000000", "timeZone": "UTC"}},
                {"status": "busy",
                 "start": {"dateTime": "2026-02-20T00:00:00.0000000", "timeZone": "UTC"},
                 "end": {"dateTime": "2026-02-21T00:00:00.0000000", "timeZone": "UTC"}}
            ],
        }));
        let got = intervals(&i, "cal", window()).unwrap();
        let seen: Vec<_> = got
            .iter()
            .map(|b| (b.start.unwrap().seconds, b.end.unwrap().seconds, b.status))
            .collect();
        let s = |t: DateTime<Utc>| t.timestamp();
        assert_eq!(
            seen,
            vec![
                (s(at(2, 9)), s(at(2, 10)), pb::BusyStatus::Busy as i32),
                (s(at(2, 10)), s(at(2, 11)), pb::BusyStatus::Tentative as i32),
                (s(at(1, 0)), s(at(1, 6)), pb::BusyStatus::OutOfOffice as i32),
            ],
            "Berlin times read in their zone; the oof clipped to the window; nothing outside it"
        );
        assert!(got.iter().all(|b| b.calendar_id == "cal"));
    }

    #[test]
    fn an_error_in_place_of_items_is_a_failure_with_a_meaning() {
        let missing = info(
            json!({"scheduleId": "x@y.example", "error": {"message": "no", "responseCode": "ErrorMailRecipientNotFound"}}),
        );
        assert!(matches!(
            intervals(&missing, "cal", window()),
            Err(GraphError::NotFound(_))
        ));
        let denied = info(
            json!({"scheduleId": "x@y.example", "error": {"responseCode": "ErrorNoFreeBusyAccess"}}),
        );
        assert!(matches!(
            intervals(&denied, "cal", window()),
            Err(GraphError::Forbidden(_))
        ));
        let odd = info(json!({"scheduleId": "x", "error": {"responseCode": "ErrorServerBusy"}}));
        assert!(matches!(
            intervals(&odd, "cal", window()),
            Err(GraphError::Unavailable(..))
        ));
        let garbled =
            info(json!({"scheduleItems": [{"status": "busy", "start": {"dateTime": "soon"}}]}));
        assert!(matches!(
            intervals(&garbled, "cal", window()),
            Err(GraphError::Protocol(_))
        ));
    }

    #[test]
    fn refusals_of_getschedule_say_what_was_refused() {
        let too_big = tonic::Status::from(refused(400, "ErrorTimeIntervalTooBig"));
        assert_eq!(too_big.code(), tonic::Code::InvalidArgument);
        assert!(too_big.message().contains("62 days"), "{too_big:?}");
        let other = tonic::Status::from(refused(400, "ErrorInvalidRequest"));
        assert!(other.message().contains("ErrorInvalidRequest"), "{other:?}");
        let denied = tonic::Status::from(refused(403, "ErrorAccessDenied"));
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        assert!(denied.message().contains("Calendars.Read"), "{denied:?}");
        assert_eq!(
            tonic::Status::from(refused(404, "ErrorItemNotFound")).code(),
            tonic::Code::NotFound
        );
    }

    #[test]
    fn intervals_cut_at_range_edges_or_seen_twice_come_back_once() {
        let b = |s: DateTime<Utc>, e: DateTime<Utc>, st: pb::BusyStatus| pb::BusyInterval {
            start: Some(to_timestamp(s)),
            end: Some(to_timestamp(e)),
            status: st as i32,
            calendar_id: "cal".into(),
        };
        use pb::BusyStatus::*;
        let merged = merge(vec![
            b(at(3, 9), at(3, 12), Busy),
            b(at(1, 9), at(1, 10), Busy),
            b(at(2, 0), at(3, 0), OutOfOffice),
            b(at(1, 9), at(1, 10), Busy),
            b(at(3, 12), at(3, 13), Busy),
            b(at(3, 10), at(3, 11), Tentative),
        ]);
        let seen: Vec<_> = merged
            .iter()
            .map(|x| (x.start.unwrap().seconds, x.end.unwrap().seconds, x.status))
            .collect();
        let s = |t: DateTime<Utc>| t.timestamp();
        assert_eq!(
            seen,
            vec![
                (s(at(1, 9)), s(at(1, 10)), Busy as i32),
                (s(at(2, 0)), s(at(3, 0)), OutOfOffice as i32),
                (s(at(3, 9)), s(at(3, 13)), Busy as i32),
                (s(at(3, 10)), s(at(3, 11)), Tentative as i32),
            ]
        );
    }
}
