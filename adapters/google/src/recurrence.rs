//! Local expansion of Google series masters into the instances of a sync
//! window, over the original starts [`crate::rules`] reads from the
//! series' rule (listings use `singleEvents=false`, so Google never expands
//! for us).
//!
//! A timed series recurs in its `start.timeZone` (the calendar's zone, then
//! UTC, when absent), so a weekly 09:00 Europe/London meeting stays at 09:00
//! local across daylight-saving changes; an all-day series recurs on dates.
//! RDATE/EXDATE values without a zone are read in the series' zone, an UNTIL
//! without `Z` is converted to UTC, and the start itself is always the first
//! instance (RFC 5545), unless an EXDATE removes it. Each instance is named
//! as Google names it (`<masterId>_<original start>`).

use chrono::Duration;

use calbridge::pb;

use crate::mapping::{event_from_google, overlaps, Context};
use crate::model;
use crate::rules::occurrences;
use crate::times::{instance_id, parse_when, MapError, When};

pub use calbridge::adapter::Window;

/// How long each instance of a series lasts.
#[derive(Debug, Clone, Copy)]
enum Span {
    /// An all-day series: days.
    Days(i64),
    /// A timed series: the exact duration.
    Timed(Duration),
}

impl Span {
    /// The end of the instance starting at `original`.
    fn end_of(self, original: &When) -> When {
        match (self, original) {
            (Span::Days(n), When::Date(d)) => When::Date(*d + Duration::days(n)),
            (Span::Timed(d), When::At(t, z)) => When::At(*t + d, *z),
            (_, other) => *other,
        }
    }
}

/// The instances of a series master that overlap `window`, named
/// `<masterId>_<original start>` and linked to the master, each carrying
/// the master's etag as its version; instances for which `skip(id)` holds
/// (exceptions listed on their own) are left out.
pub fn expand(
    master: &model::Event,
    ctx: &Context,
    window: Window,
    skip: &dyn Fn(&str) -> bool,
) -> Result<Vec<pb::Event>, MapError> {
    Ok(expand_bounded(master, ctx, window, skip)?.0)
}

/// [`expand`], and whether the series had more than
/// [`calbridge::expansion::MAX_INSTANCES`] instances in the window (only
/// the earliest are returned).
pub fn expand_bounded(
    master: &model::Event,
    ctx: &Context,
    window: Window,
    skip: &dyn Fn(&str) -> bool,
) -> Result<(Vec<pb::Event>, bool), MapError> {
    let base = event_from_google(master, ctx)?;
    let start = parse_when(
        master
            .start
            .as_ref()
            .ok_or(MapError::MissingTime("start"))?,
        "start",
        ctx.calendar_zone,
    )?;
    let end = match master.end.as_ref() {
        Some(e) => parse_when(e, "end", ctx.calendar_zone)?,
        None => start,
    };
    let span = match (start, end) {
        (When::Date(s), When::Date(e)) => Span::Days((e - s).num_days().max(0)),
        (When::At(s, _), When::At(e, _)) => Span::Timed((e - s).max(Duration::zero())),
        _ => return Err(MapError::BadTime("end")),
    };
    let reach = match span {
        Span::Days(n) => Duration::days(n),
        Span::Timed(d) => d,
    };
    // Instances starting before the window may still overlap it; a day of
    // slack covers all-day dates read in any zone.
    let from = window.start - reach - Duration::days(1);
    let to = window.end + Duration::days(1);
    let lines = master.recurrence.clone().unwrap_or_default();
    let master_id = base.provider_event_id.clone();
    let mut out = Vec::new();
    let (originals, truncated) = occurrences(&start, ctx.calendar_zone, &lines, from, to)?;
    for original in originals {
        let instance_end = span.end_of(&original);
        if !overlaps(
            &original,
            &instance_end,
            ctx.calendar_zone,
            window.start,
            window.end,
        ) {
            continue;
        }
        let id = instance_id(&master_id, &original);
        if skip(&id) {
            continue;
        }
        let mut e = base.clone();
        e.provider_event_id = id;
        e.recurrence.clear();
        e.start = Some(original.event_time());
        e.end = Some(instance_end.event_time());
        e.recurrence_link = Some(pb::RecurrenceLink {
            series_event_id: master_id.clone(),
            original_start: Some(original.event_time()),
        });
        out.push(e);
    }
    Ok((out, truncated))
}

#[cfg(test)]
mod tests {
    use super::*;
    use calbridge::pb::event_time;
    use calbridge::time::to_timestamp;
    use chrono::{DateTime, Utc};

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn window(a: &str, b: &str) -> Window {
        Window {
            start: at(a),
            end: at(b),
        }
    }

    fn master(json: &str) -> model::Event {
        serde_json::from_str(json).unwrap()
    }

    /// A weekly Monday 09:00 Europe/London series as Google lists it.
    const WEEKLY: &str = r#"{
      "kind": "calendar#event", "etag": "\"3300000000000000\"", "id": "weekly1",
      "status": "confirmed", "summary": "Standup",
      "start": {"dateTime": "2026-03-02T09:00:00Z", "timeZone": "Europe/London"},
      "end": {"dateTime": "2026-03-02T09:30:00Z", "timeZone": "Europe/London"},
      "recurrence": ["RRULE:FREQ=WEEKLY;BYDAY=MO;COUNT=6", "EXDATE;TZID=Europe/London:20260316T090000"],
      "iCalUID": "weekly1@google.com"
    }"#;

    fn starts(events: &[pb::Event]) -> Vec<String> {
        events
            .iter()
            .map(
                |e| match e.start.as_ref().unwrap().value.as_ref().unwrap() {
                    event_time::Value::Instant(t) => calbridge::time::from_timestamp(t)
                        .unwrap()
                        .format("%Y-%m-%dT%H:%M")
                        .to_string(),
                    event_time::Value::Date(d) => d.clone(),
                },
            )
            .collect()
    }

    #[test]
    fn a_weekly_series_keeps_local_time_across_daylight_saving_and_honours_exdate() {
        let all = expand(
            &master(WEEKLY),
            &Context::default(),
            window("2026-01-01T00:00:00Z", "2026-12-31T00:00:00Z"),
            &|_| false,
        )
        .unwrap();
        // 16 March is excluded; from 30 March 09:00 BST is 08:00 UTC.
        assert_eq!(
            starts(&all),
            vec![
                "2026-03-02T09:00",
                "2026-03-09T09:00",
                "2026-03-23T09:00",
                "2026-03-30T08:00",
                "2026-04-06T08:00"
            ]
        );
        let first = &all[0];
        assert_eq!(first.provider_event_id, "weekly1_20260302T090000Z");
        assert_eq!(first.version, "\"3300000000000000\"");
        assert_eq!(first.title, "Standup");
        assert!(first.recurrence.is_empty());
        let link = first.recurrence_link.as_ref().unwrap();
        assert_eq!(link.series_event_id, "weekly1");
        assert_eq!(
            link.original_start.as_ref().unwrap().time_zone,
            "Europe/London"
        );
        assert_eq!(all[3].provider_event_id, "weekly1_20260330T080000Z");
        assert_eq!(
            all[3].end.as_ref().unwrap().value,
            Some(event_time::Value::Instant(to_timestamp(at(
                "2026-03-30T08:30:00Z"
            ))))
        );
    }

    #[test]
    fn only_instances_overlapping_the_window_are_returned_and_skips_apply() {
        let all = expand(
            &master(WEEKLY),
            &Context::default(),
            window("2026-03-09T09:15:00Z", "2026-03-24T00:00:00Z"),
            &|id| id == "weekly1_20260323T090000Z",
        )
        .unwrap();
        assert_eq!(starts(&all), vec!["2026-03-09T09:00"]);
    }

    #[test]
    fn an_all_day_series_recurs_on_dates_with_a_date_until() {
        let m = master(
            r#"{"id":"bday","etag":"\"1\"","start":{"date":"2026-03-02"},"end":{"date":"2026-03-03"},
                "recurrence":["RRULE:FREQ=DAILY;UNTIL=20260305","EXDATE;VALUE=DATE:20260303"]}"#,
        );
        let all = expand(
            &m,
            &Context::default(),
            window("2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z"),
            &|_| false,
        )
        .unwrap();
        assert_eq!(starts(&all), vec!["2026-03-02", "2026-03-04", "2026-03-05"]);
        assert_eq!(all[0].provider_event_id, "bday_20260302");
        assert_eq!(
            all[0].end.as_ref().unwrap().value,
            Some(event_time::Value::Date("2026-03-03".into()))
        );
    }

    #[test]
    fn a_start_off_its_own_rule_is_still_the_first_instance() {
        // Starts on a Wednesday, repeats on Mondays.
        let m = master(
            r#"{"id":"odd","start":{"dateTime":"2026-03-04T10:00:00Z","timeZone":"UTC"},
                "end":{"dateTime":"2026-03-04T11:00:00Z","timeZone":"UTC"},
                "recurrence":["RRULE:FREQ=WEEKLY;BYDAY=MO;COUNT=2"]}"#,
        );
        let all = expand(
            &m,
            &Context::default(),
            window("2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z"),
            &|_| false,
        )
        .unwrap();
        assert_eq!(
            starts(&all),
            vec!["2026-03-04T10:00", "2026-03-09T10:00", "2026-03-16T10:00"]
        );
    }

    #[test]
    fn a_floating_until_is_read_in_the_series_zone_and_rdates_add_instances() {
        let m = master(
            r#"{"id":"ny","start":{"dateTime":"2026-01-05T09:00:00-05:00","timeZone":"America/New_York"},
                "end":{"dateTime":"2026-01-05T10:00:00-05:00","timeZone":"America/New_York"},
                "recurrence":["RRULE:FREQ=DAILY;UNTIL=20260107T090000","RDATE:20260110T120000"]}"#,
        );
        let all = expand(
            &m,
            &Context::default(),
            window("2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z"),
            &|_| false,
        )
        .unwrap();
        assert_eq!(
            starts(&all),
            vec![
                "2026-01-05T14:00",
                "2026-01-06T14:00",
                "2026-01-07T14:00",
                "2026-01-10T17:00"
            ]
        );
    }

    #[test]
    fn an_until_before_the_start_leaves_only_the_start() {
        let m = master(
            r#"{"id":"short","start":{"dateTime":"2026-03-04T10:00:00Z","timeZone":"UTC"},
                "end":{"dateTime":"2026-03-04T11:00:00Z","timeZone":"UTC"},
                "recurrence":["RRULE:FREQ=DAILY;UNTIL=20260301T000000Z"]}"#,
        );
        let all = expand(
            &m,
            &Context::default(),
            window("2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z"),
            &|_| false,
        )
        .unwrap();
        assert_eq!(starts(&all), vec!["2026-03-04T10:00"]);
    }

    #[test]
    fn broken_rules_are_refused() {
        for lines in [
            r#"["RRULE:FREQ=SOMETIMES"]"#,
            r#"["RRULE"]"#,
            r#"["EXDATE:notadate"]"#,
            r#"["X-UNKNOWN:1"]"#,
        ] {
            let m = master(&format!(
                r#"{{"id":"b","start":{{"date":"2026-03-02"}},"end":{{"date":"2026-03-03"}},"recurrence":{lines}}}"#
            ));
            assert!(
                matches!(
                    expand(
                        &m,
                        &Context::default(),
                        window("2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z"),
                        &|_| false
                    ),
                    Err(MapError::BadRule(_))
                ),
                "{lines}"
            );
        }
    }
}
