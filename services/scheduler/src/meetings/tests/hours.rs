//! Working hours: conversion with fields named, bounds, times of day.

use super::*;

#[test]
fn working_hours_convert_with_fields_named() {
    let h = pb::WorkingHours {
        time_zone: "Europe/London".into(),
        weekly: vec![pb::WeeklyRule {
            weekday: 1,
            start: "09:00".into(),
            end: "17:30".into(),
        }],
        overrides: vec![pb::DateOverride {
            date: "2026-12-24".into(),
            ranges: vec![],
        }],
    };
    let (tz, wh) = convert_hours("hours", &h).unwrap();
    assert_eq!(tz, chrono_tz::Europe::London);
    assert_eq!(wh.weekly[0].range.end_minute, 17 * 60 + 30);
    assert_eq!(wh.overrides[0].date.day(), 24);

    let bad = pb::WorkingHours {
        time_zone: "Mars/Base".into(),
        weekly: vec![pb::WeeklyRule {
            weekday: 8,
            start: "17:00".into(),
            end: "09:00".into(),
        }],
        overrides: vec![],
    };
    let fields: Vec<String> = convert_hours("hours", &bad)
        .unwrap_err()
        .0
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(
        fields,
        vec![
            "hours.time_zone",
            "hours.weekly[0].weekday",
            "hours.weekly[0].end"
        ]
    );
}

#[test]
fn working_hours_lists_are_bounded_and_dates_unique() {
    let day = |d: &str| pb::DateOverride {
        date: d.into(),
        ranges: vec![],
    };
    let hours = |overrides| pb::WorkingHours {
        time_zone: "Europe/London".into(),
        weekly: vec![],
        overrides,
    };
    let fields = |h: &pb::WorkingHours| -> Vec<String> {
        convert_hours("hours", h)
            .err()
            .map(|i| i.0.into_iter().map(|v| v.field).collect())
            .unwrap_or_default()
    };
    let h = hours(vec![
        day("2026-12-24"),
        day("0000-01-01"),
        day("2026-12-24"),
    ]);
    assert_eq!(
        fields(&h),
        vec!["hours.overrides[1].date", "hours.overrides[2].date"]
    );
    let h = hours(vec![day("2026-12-24"); limits::MAX_DATE_OVERRIDES + 1]);
    assert_eq!(fields(&h), vec!["hours.overrides"]);
    let mut h = hours(vec![day("2026-12-24")]);
    h.overrides[0].ranges = vec![
        pb::LocalRange {
            start: "09:00".into(),
            end: "10:00".into(),
        };
        limits::MAX_OVERRIDE_RANGES + 1
    ];
    h.weekly = vec![
        pb::WeeklyRule {
            weekday: 1,
            start: "09:00".into(),
            end: "17:00".into(),
        };
        limits::MAX_WEEKLY_RULES + 1
    ];
    assert_eq!(
        fields(&h),
        vec!["hours.weekly", "hours.overrides[0].ranges"]
    );
}

#[test]
fn hh_mm_accepts_midnight_as_an_end_only() {
    assert_eq!(parse_hhmm("00:00"), Some(0));
    assert_eq!(parse_hhmm("24:00"), Some(1440));
    assert_eq!(parse_hhmm("25:00"), None);
}
