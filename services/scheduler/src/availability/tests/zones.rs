//! Local days and weeks across zones and DST transitions.

use super::*;

#[test]
fn an_all_day_event_blocks_the_local_day_in_the_participants_zone() {
    let ny: Tz = "America/New_York".parse().unwrap();
    let day: NaiveDate = "2024-06-04".parse().unwrap();
    let ps = vec![ParticipantData::new(
        ny,
        vec![BusyInterval {
            id: 9,
            span: BusySpan::AllDay {
                start: day,
                end: day.succ_opt().unwrap(),
            },
            status: BusyStatus::OutOfOffice,
        }],
        None,
    )];
    let req = request(
        vec![all(vec![0])],
        30,
        "2024-06-03T00:00:00Z",
        "2024-06-06T00:00:00Z",
        Format::Periods,
    );
    assert_eq!(
        spans(&query(&req, &ps, 0).unwrap()),
        vec![
            span("2024-06-03T00:00:00Z", "2024-06-04T04:00:00Z"),
            span("2024-06-05T04:00:00Z", "2024-06-06T00:00:00Z"),
        ]
    );
}

#[test]
fn daily_and_weekly_caps_block_whole_local_days_and_weeks() {
    let tz: Tz = "Europe/London".parse().unwrap();
    // Two events on Tuesday 2024-06-04 and one on Thursday 06-06 (London).
    let busy = vec![
        timed(1, "2024-06-04T08:00:00Z", "2024-06-04T08:30:00Z"),
        timed(2, "2024-06-04T09:00:00Z", "2024-06-04T09:30:00Z"),
        timed(3, "2024-06-06T08:00:00Z", "2024-06-06T08:30:00Z"),
    ];
    let req = request(
        vec![all(vec![0])],
        60,
        "2024-06-03T00:00:00Z",
        "2024-06-11T00:00:00Z",
        Format::Periods,
    );
    let daily = vec![ParticipantData::new(tz, busy.clone(), Some(weekdays(9, 17))).with_caps(2, 0)];
    let got = spans(&query(&req, &daily, 0).unwrap());
    let days: Vec<NaiveDate> = got
        .iter()
        .map(|s| DateTime::from_timestamp_millis(s.0).unwrap().date_naive())
        .collect();
    let d = |s: &str| s.parse::<NaiveDate>().unwrap();
    assert_eq!(
        days,
        vec![
            d("2024-06-03"),
            d("2024-06-05"),
            d("2024-06-06"),
            d("2024-06-07"),
            d("2024-06-10")
        ]
    );
    let weekly = vec![ParticipantData::new(tz, busy, Some(weekdays(9, 17))).with_caps(0, 3)];
    let got = spans(&query(&req, &weekly, 0).unwrap());
    assert_eq!(
        got,
        vec![span("2024-06-10T08:00:00Z", "2024-06-10T16:00:00Z")]
    );
}

#[test]
fn a_london_and_new_york_pair_meets_in_the_shifting_overlap() {
    let london = ParticipantData::new(
        "Europe/London".parse().unwrap(),
        vec![],
        Some(weekdays(9, 17)),
    );
    let ny = ParticipantData::new(
        "America/New_York".parse().unwrap(),
        vec![],
        Some(weekdays(9, 17)),
    );
    let ps = [london, ny];
    let day = |date: &str| {
        let req = request(
            vec![all(vec![0, 1])],
            60,
            &format!("{date}T00:00:00Z"),
            &format!("{date}T23:59:00Z"),
            Format::Periods,
        );
        spans(&query(&req, &ps, 0).unwrap())
    };
    // Both on winter time: 14–17 UTC.
    assert_eq!(
        day("2024-03-08"),
        vec![span("2024-03-08T14:00:00Z", "2024-03-08T17:00:00Z")]
    );
    // New York moved on 03-10, London not yet: 13–17 UTC.
    assert_eq!(
        day("2024-03-11"),
        vec![span("2024-03-11T13:00:00Z", "2024-03-11T17:00:00Z")]
    );
    // Both on summer time: 13–16 UTC.
    assert_eq!(
        day("2024-04-01"),
        vec![span("2024-04-01T13:00:00Z", "2024-04-01T16:00:00Z")]
    );
}

#[test]
fn kathmandu_slots_follow_the_utc_grid() {
    let p = ParticipantData::new(
        "Asia/Kathmandu".parse().unwrap(),
        vec![],
        Some(weekdays(9, 17)),
    );
    let ps = [p];
    let mut req = request(
        vec![all(vec![0])],
        30,
        "2024-06-03T00:00:00Z",
        "2024-06-04T00:00:00Z",
        Format::Slots,
    );
    req.start_interval_minutes = 15;
    let a = query(&req, &ps, 0).unwrap();
    assert_eq!(
        a.slots[0].start_ms,
        utc("2024-06-03T03:15:00Z"),
        "09:00 local"
    );
    assert_eq!(a.slots.len(), 16);
    req.start_interval_minutes = 30;
    let a = query(&req, &ps, 0).unwrap();
    assert_eq!(
        a.slots[0].start_ms,
        utc("2024-06-03T03:30:00Z"),
        "09:15 local"
    );
    assert_eq!(a.slots.last().unwrap().end_ms, utc("2024-06-03T11:00:00Z"));
    assert_eq!(a.slots.len(), 15);
}

#[test]
fn lord_howe_working_day_moves_by_half_an_hour_on_the_transition() {
    let p = ParticipantData::new(
        "Australia/Lord_Howe".parse().unwrap(),
        vec![],
        Some(weekdays(9, 17)),
    );
    let ps = [p];
    // Friday 2024-04-05 (+11:00) and Monday 2024-04-08 (+10:30).
    let req = request(
        vec![all(vec![0])],
        30,
        "2024-04-04T12:00:00Z",
        "2024-04-08T12:00:00Z",
        Format::Periods,
    );
    assert_eq!(
        spans(&query(&req, &ps, 0).unwrap()),
        vec![
            span("2024-04-04T22:00:00Z", "2024-04-05T06:00:00Z"),
            span("2024-04-07T22:30:00Z", "2024-04-08T06:30:00Z"),
        ]
    );
}

#[test]
fn a_local_range_starting_in_the_spring_gap_starts_after_it() {
    let tz: Tz = "America/New_York".parse().unwrap();
    let day: NaiveDate = "2024-03-10".parse().unwrap();
    let hours = WorkingHours {
        weekly: vec![],
        overrides: vec![DateOverride {
            date: day,
            ranges: vec![LocalRange {
                start_minute: 2 * 60 + 30,
                end_minute: 5 * 60,
            }],
        }],
    };
    let ps = [ParticipantData::new(tz, vec![], Some(hours))];
    let req = request(
        vec![all(vec![0])],
        30,
        "2024-03-10T00:00:00Z",
        "2024-03-11T00:00:00Z",
        Format::Periods,
    );
    // 02:30 does not exist: the day starts at 03:00 EDT = 07:00Z; 05:00 EDT = 09:00Z.
    assert_eq!(
        spans(&query(&req, &ps, 0).unwrap()),
        vec![span("2024-03-10T07:00:00Z", "2024-03-10T09:00:00Z")]
    );
}

#[test]
fn results_late_in_a_long_range_are_found() {
    let mut busy = vec![timed(1, "2024-06-01T00:00:00Z", "2024-06-20T09:00:00Z")];
    busy.push(timed(2, "2024-06-20T10:00:00Z", "2024-07-01T00:00:00Z"));
    let ps = [ParticipantData::new(chrono_tz::UTC, busy, None)];
    let req = request(
        vec![all(vec![0])],
        30,
        "2024-06-01T00:00:00Z",
        "2024-07-01T00:00:00Z",
        Format::Slots,
    );
    assert_eq!(
        spans(&query(&req, &ps, 0).unwrap()),
        vec![
            span("2024-06-20T09:00:00Z", "2024-06-20T09:30:00Z"),
            span("2024-06-20T09:30:00Z", "2024-06-20T10:00:00Z"),
        ]
    );
}
