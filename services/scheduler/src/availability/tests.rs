//! Tests of the availability engine: hand-worked examples of every answer
//! format, N-of-M groups, caps, notice, all-day events, sequences and DST
//! across zones, and properties comparing the engine with the brute-force
//! reference.

use chrono::{DateTime, NaiveDate, Weekday};
use chrono_tz::Tz;
use proptest::prelude::*;

use super::*;

const MIN: i64 = 60_000;

fn utc(s: &str) -> i64 {
    DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis()
}

fn timed(id: u64, s: &str, e: &str) -> BusyInterval {
    BusyInterval {
        id,
        span: BusySpan::Timed {
            start_ms: utc(s),
            end_ms: utc(e),
        },
        status: BusyStatus::Busy,
    }
}

fn weekdays(h0: u16, h1: u16) -> WorkingHours {
    let days = [
        Weekday::Mon,
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
    ];
    WorkingHours {
        weekly: days
            .iter()
            .map(|&weekday| WeeklyRule {
                weekday,
                range: LocalRange {
                    start_minute: h0 * 60,
                    end_minute: h1 * 60,
                },
            })
            .collect(),
        overrides: vec![],
    }
}

fn all(members: Vec<usize>) -> Group {
    Group {
        members,
        required: Required::All,
    }
}

fn request(groups: Vec<Group>, minutes: u32, from: &str, to: &str, format: Format) -> Request {
    Request {
        groups,
        duration_minutes: minutes,
        periods: vec![Period {
            start_ms: utc(from),
            end_ms: utc(to),
        }],
        format,
        ..Request::default()
    }
}

fn spans(a: &Answer) -> Vec<(i64, i64)> {
    a.slots.iter().map(|s| (s.start_ms, s.end_ms)).collect()
}

fn span(s: &str, e: &str) -> (i64, i64) {
    (utc(s), utc(e))
}

/// Two UTC people, 09:00–12:00 searched; Alice busy 09:30–10:00, Bob busy
/// 10:45–11:00.
fn two_people() -> Vec<ParticipantData> {
    vec![
        ParticipantData::new(
            chrono_tz::UTC,
            vec![timed(1, "2024-06-03T09:30:00Z", "2024-06-03T10:00:00Z")],
            None,
        ),
        ParticipantData::new(
            chrono_tz::UTC,
            vec![timed(2, "2024-06-03T10:45:00Z", "2024-06-03T11:00:00Z")],
            None,
        ),
    ]
}

#[test]
fn slots_are_greedy_non_overlapping_and_on_the_grid() {
    let req = request(
        vec![all(vec![0, 1])],
        30,
        "2024-06-03T09:00:00Z",
        "2024-06-03T12:00:00Z",
        Format::Slots,
    );
    let a = query(&req, &two_people(), 0).unwrap();
    assert_eq!(
        spans(&a),
        vec![
            span("2024-06-03T09:00:00Z", "2024-06-03T09:30:00Z"),
            span("2024-06-03T10:00:00Z", "2024-06-03T10:30:00Z"),
            span("2024-06-03T11:00:00Z", "2024-06-03T11:30:00Z"),
            span("2024-06-03T11:30:00Z", "2024-06-03T12:00:00Z"),
        ]
    );
    assert!(a.slots.iter().all(|s| s.available == vec![0, 1]));
}

#[test]
fn overlapping_slots_list_every_free_grid_start() {
    let req = request(
        vec![all(vec![0, 1])],
        30,
        "2024-06-03T09:00:00Z",
        "2024-06-03T12:00:00Z",
        Format::OverlappingSlots,
    );
    let a = query(&req, &two_people(), 0).unwrap();
    let starts: Vec<i64> = a.slots.iter().map(|s| s.start_ms).collect();
    assert_eq!(
        starts,
        ["09:00", "10:00", "10:15", "11:00", "11:15", "11:30"]
            .iter()
            .map(|t| utc(&format!("2024-06-03T{t}:00Z")))
            .collect::<Vec<_>>()
    );
}

#[test]
fn periods_are_merged_free_runs_at_least_the_duration_long() {
    let req = request(
        vec![all(vec![0, 1])],
        30,
        "2024-06-03T09:00:00Z",
        "2024-06-03T12:00:00Z",
        Format::Periods,
    );
    let a = query(&req, &two_people(), 0).unwrap();
    assert_eq!(
        spans(&a),
        vec![
            span("2024-06-03T09:00:00Z", "2024-06-03T09:30:00Z"),
            span("2024-06-03T10:00:00Z", "2024-06-03T10:45:00Z"),
            span("2024-06-03T11:00:00Z", "2024-06-03T12:00:00Z"),
        ]
    );
    let mut req = req;
    req.duration_minutes = 45;
    let a = query(&req, &two_people(), 0).unwrap();
    assert_eq!(spans(&a).len(), 2, "the 30-minute run is too short");
}

#[test]
fn buffers_widen_busy_time_on_both_sides() {
    let mut req = request(
        vec![all(vec![0])],
        30,
        "2024-06-03T09:00:00Z",
        "2024-06-03T11:00:00Z",
        Format::Periods,
    );
    req.buffer_before_minutes = 15;
    req.buffer_after_minutes = 20;
    let a = query(&req, &two_people(), 0).unwrap();
    assert_eq!(
        spans(&a),
        vec![span("2024-06-03T10:20:00Z", "2024-06-03T11:00:00Z")]
    );
}

#[test]
fn one_of_two_offers_slots_either_member_can_take_and_lists_who() {
    let mut req = request(
        vec![Group {
            members: vec![0, 1],
            required: Required::AtLeast(1),
        }],
        60,
        "2024-06-03T09:00:00Z",
        "2024-06-03T12:00:00Z",
        Format::OverlappingSlots,
    );
    req.start_interval_minutes = 30;
    let a = query(&req, &two_people(), 0).unwrap();
    let got: Vec<(i64, Vec<usize>)> = a
        .slots
        .iter()
        .map(|s| (s.start_ms, s.available.clone()))
        .collect();
    let at = |t: &str| utc(&format!("2024-06-03T{t}:00Z"));
    assert_eq!(
        got,
        vec![
            (at("09:00"), vec![1]),
            (at("09:30"), vec![1]),
            (at("10:00"), vec![0]),
            (at("10:30"), vec![0]),
            (at("11:00"), vec![0, 1]),
        ]
    );
}

#[test]
fn two_of_three_needs_the_same_two_for_the_whole_slot() {
    // A free 9–10, B free 9:30–10:30, C free 10–11: at every instant of
    // 9:30–10:30 two are free, but no pair is free for an hour.
    let busy = |id, a: &str, b: &str| {
        timed(
            id,
            &format!("2024-06-03T{a}:00Z"),
            &format!("2024-06-03T{b}:00Z"),
        )
    };
    let ps = vec![
        ParticipantData::new(chrono_tz::UTC, vec![busy(1, "10:00", "12:00")], None),
        ParticipantData::new(
            chrono_tz::UTC,
            vec![busy(2, "09:00", "09:30"), busy(3, "10:30", "12:00")],
            None,
        ),
        ParticipantData::new(
            chrono_tz::UTC,
            vec![busy(4, "09:00", "10:00"), busy(5, "11:00", "12:00")],
            None,
        ),
    ];
    let mut req = request(
        vec![Group {
            members: vec![0, 1, 2],
            required: Required::AtLeast(2),
        }],
        60,
        "2024-06-03T09:00:00Z",
        "2024-06-03T12:00:00Z",
        Format::OverlappingSlots,
    );
    assert!(query(&req, &ps, 0).unwrap().slots.is_empty());
    req.duration_minutes = 30;
    let a = query(&req, &ps, 0).unwrap();
    assert_eq!(
        a.slots
            .iter()
            .map(|s| (s.start_ms, s.available.clone()))
            .collect::<Vec<_>>(),
        vec![
            (utc("2024-06-03T09:30:00Z"), vec![0, 1]),
            (utc("2024-06-03T10:00:00Z"), vec![1, 2]),
        ]
    );
}

#[test]
fn several_groups_must_all_hold() {
    let ps = two_people();
    let req = request(
        vec![all(vec![0]), all(vec![1])],
        30,
        "2024-06-03T09:00:00Z",
        "2024-06-03T12:00:00Z",
        Format::Slots,
    );
    let joint = request(
        vec![all(vec![0, 1])],
        30,
        "2024-06-03T09:00:00Z",
        "2024-06-03T12:00:00Z",
        Format::Slots,
    );
    assert_eq!(query(&req, &ps, 0).unwrap(), query(&joint, &ps, 0).unwrap());
}

#[test]
fn minimum_notice_and_max_results_limit_the_answer() {
    let mut req = request(
        vec![all(vec![0, 1])],
        30,
        "2024-06-03T09:00:00Z",
        "2024-06-03T12:00:00Z",
        Format::OverlappingSlots,
    );
    req.minimum_notice_minutes = 60;
    req.max_results = 2;
    let a = query(&req, &two_people(), utc("2024-06-03T09:05:00Z")).unwrap();
    assert_eq!(
        a.slots.iter().map(|s| s.start_ms).collect::<Vec<_>>(),
        vec![utc("2024-06-03T10:15:00Z"), utc("2024-06-03T11:00:00Z")]
    );
}

#[test]
fn tentative_blocks_only_when_asked_and_free_never_blocks() {
    let mk = |status| {
        vec![ParticipantData::new(
            chrono_tz::UTC,
            vec![BusyInterval {
                id: 1,
                span: BusySpan::Timed {
                    start_ms: utc("2024-06-03T09:00:00Z"),
                    end_ms: utc("2024-06-03T10:00:00Z"),
                },
                status,
            }],
            None,
        )]
    };
    let mut req = request(
        vec![all(vec![0])],
        60,
        "2024-06-03T09:00:00Z",
        "2024-06-03T10:00:00Z",
        Format::Slots,
    );
    assert_eq!(
        query(&req, &mk(BusyStatus::Tentative), 0)
            .unwrap()
            .slots
            .len(),
        1
    );
    assert_eq!(
        query(&req, &mk(BusyStatus::Free), 0).unwrap().slots.len(),
        1
    );
    assert_eq!(
        query(&req, &mk(BusyStatus::OutOfOffice), 0)
            .unwrap()
            .slots
            .len(),
        0
    );
    req.tentative_is_busy = true;
    assert_eq!(
        query(&req, &mk(BusyStatus::Tentative), 0)
            .unwrap()
            .slots
            .len(),
        0
    );
    assert_eq!(
        query(&req, &mk(BusyStatus::Free), 0).unwrap().slots.len(),
        1
    );
}

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

#[test]
fn invalid_requests_return_field_errors() {
    let req = request(
        vec![],
        0,
        "2024-06-03T09:00:00Z",
        "2024-06-03T08:00:00Z",
        Format::Slots,
    );
    let errs = query(&req, &[], 0).unwrap_err();
    let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, vec!["duration_minutes", "groups", "periods[0].end"]);
}

fn seq_step(groups: Vec<Group>, minutes: u32, gap: (u32, u32)) -> SequenceStep {
    SequenceStep {
        groups,
        duration_minutes: minutes,
        min_gap_minutes: gap.0,
        max_gap_minutes: gap.1,
        ..SequenceStep::default()
    }
}

#[test]
fn sequences_chain_steps_within_the_gap_range() {
    // Alice busy 09:30–10:00, Bob busy 10:45–11:00; step 1 Alice 30 min,
    // step 2 Bob 30 min starting 0–15 min after step 1 ends.
    let req = SequenceRequest {
        steps: vec![
            seq_step(vec![all(vec![0])], 30, (0, 0)),
            seq_step(vec![all(vec![1])], 30, (0, 15)),
        ],
        periods: vec![Period {
            start_ms: utc("2024-06-03T09:00:00Z"),
            end_ms: utc("2024-06-03T12:00:00Z"),
        }],
        max_results: 3,
        ..SequenceRequest::default()
    };
    let a = sequences(&req, &two_people(), 0).unwrap();
    let got: Vec<Vec<(i64, i64)>> = a
        .sequences
        .iter()
        .map(|s| s.iter().map(|x| (x.start_ms, x.end_ms)).collect())
        .collect();
    let sl = |a: &str, b: &str| {
        span(
            &format!("2024-06-03T{a}:00Z"),
            &format!("2024-06-03T{b}:00Z"),
        )
    };
    assert_eq!(
        got,
        vec![
            vec![sl("09:00", "09:30"), sl("09:30", "10:00")],
            vec![sl("10:15", "10:45"), sl("11:00", "11:30")],
            vec![sl("10:30", "11:00"), sl("11:00", "11:30")],
        ]
    );
    assert_eq!(a.sequences[0][0].available, vec![0]);
    assert_eq!(a.sequences[0][1].available, vec![1]);
}

#[test]
fn a_sequence_with_no_continuation_is_not_offered() {
    let req = SequenceRequest {
        steps: vec![
            seq_step(vec![all(vec![0])], 30, (0, 0)),
            seq_step(vec![all(vec![1])], 150, (0, 60)),
        ],
        periods: vec![Period {
            start_ms: utc("2024-06-03T09:00:00Z"),
            end_ms: utc("2024-06-03T12:00:00Z"),
        }],
        ..SequenceRequest::default()
    };
    assert!(sequences(&req, &two_people(), 0)
        .unwrap()
        .sequences
        .is_empty());
    let mut bad = req.clone();
    bad.steps[1].min_gap_minutes = 90;
    let errs = sequences(&bad, &two_people(), 0).unwrap_err();
    assert_eq!(errs[0].field, "steps[1].min_gap_minutes");
}

#[test]
fn the_scenario_is_deterministic_and_answers() {
    let (req, ps, now) = scenario(50, 7);
    let (req2, ps2, _) = scenario(50, 7);
    assert_eq!(req, req2);
    assert_eq!(ps, ps2);
    let a = query(&req, &ps, now).unwrap();
    assert!(!a.slots.is_empty());
    let r = reference::query(&req, &ps, now).unwrap();
    assert_eq!(a, r);
}

// ---- properties -------------------------------------------------------

const ZONES: [&str; 5] = [
    "UTC",
    "Europe/London",
    "America/New_York",
    "Australia/Lord_Howe",
    "Asia/Kathmandu",
];

/// Midnights (UTC) near DST transitions of the zones above.
const BASES: [&str; 5] = [
    "2024-03-08T00:00:00Z",
    "2024-03-29T00:00:00Z",
    "2024-04-05T00:00:00Z",
    "2024-10-04T00:00:00Z",
    "2024-10-25T00:00:00Z",
];

#[allow(clippy::type_complexity)]
fn arb_hours() -> impl Strategy<Value = Option<(Vec<WeeklyRule>, Vec<(i64, Vec<LocalRange>)>)>> {
    let range = (0u16..40, 1u16..30).prop_map(|(a, l)| LocalRange {
        start_minute: a * 30,
        end_minute: (a * 30 + l * 30).min(1440),
    });
    let rule = (0u32..7, range.clone()).prop_map(|(d, range)| WeeklyRule {
        weekday: Weekday::try_from(d as u8).unwrap(),
        range,
    });
    let ov = (0i64..6, prop::collection::vec(range, 0..2)).prop_map(|(d, ranges)| (d, ranges));
    prop::option::weighted(
        0.7,
        (
            prop::collection::vec(rule, 0..8),
            prop::collection::vec(ov, 0..2),
        ),
    )
}

#[derive(Debug, Clone)]
struct Case {
    req: Request,
    people: Vec<ParticipantData>,
    now: i64,
}

fn arb_case(max_days: i64) -> impl Strategy<Value = Case> {
    let person = (
        0usize..ZONES.len(),
        prop::collection::vec(
            (0i64..(max_days * 288), 1i64..48, 0u8..4, 0u8..20, 1i64..3),
            0..8,
        ),
        arb_hours(),
        prop::sample::select(vec![0u32, 0, 1, 2, 3]),
        prop::sample::select(vec![0u32, 0, 0, 4, 8]),
    );
    (
        0usize..BASES.len(),
        prop::collection::vec(person, 1..5),
        prop::collection::vec((any::<prop::sample::Index>(), any::<bool>(), 1u32..4), 1..3),
        (
            1u32..25,
            prop::sample::select(vec![5u32, 15, 30, 45]),
            0u32..7,
            0u32..7,
        ),
        (0u32..10, 0i64..(2 * 1440), any::<bool>()),
        prop::collection::btree_set(0i64..(max_days * 1440 / 5), 2..7),
        prop::sample::select(vec![1u32, 3, 10, 1000]),
    )
        .prop_map(
            move |(
                base,
                persons,
                groups,
                (dur, step, bb, ba),
                (notice, now_min, tent),
                cuts,
                max,
            )| {
                let base = utc(BASES[base]);
                let base_date = DateTime::from_timestamp_millis(base).unwrap().date_naive();
                let mut id = 0;
                let people: Vec<ParticipantData> = persons
                    .into_iter()
                    .map(|(z, busy, hours, per_day, per_week)| {
                        let tz: Tz = ZONES[z].parse().unwrap();
                        let busy = busy
                            .into_iter()
                            .map(|(s5, l5, st, kind, days)| {
                                id += 1;
                                let status = [
                                    BusyStatus::Busy,
                                    BusyStatus::Tentative,
                                    BusyStatus::OutOfOffice,
                                    BusyStatus::Free,
                                ][st as usize];
                                let span = if kind == 0 {
                                    let start = base_date + chrono::Duration::days(s5 / 288);
                                    BusySpan::AllDay {
                                        start,
                                        end: start + chrono::Duration::days(days),
                                    }
                                } else {
                                    let s = base + s5 * 5 * MIN;
                                    BusySpan::Timed {
                                        start_ms: s,
                                        end_ms: s + l5 * 5 * MIN,
                                    }
                                };
                                BusyInterval { id, span, status }
                            })
                            .collect();
                        let hours = hours.map(|(weekly, ovs)| {
                            let mut overrides: Vec<DateOverride> = Vec::new();
                            for (d, ranges) in ovs {
                                let date = base_date + chrono::Duration::days(d);
                                if overrides.iter().all(|o| o.date != date) {
                                    overrides.push(DateOverride { date, ranges });
                                }
                            }
                            WorkingHours { weekly, overrides }
                        });
                        ParticipantData::new(tz, busy, hours).with_caps(per_day, per_week)
                    })
                    .collect();
                let n = people.len();
                let groups = groups
                    .into_iter()
                    .map(|(pick, everyone, need)| {
                        let members: Vec<usize> = if everyone {
                            (0..n).collect()
                        } else {
                            let first = pick.index(n);
                            (first..n).step_by(2).collect()
                        };
                        let required = if need as usize >= members.len() || need == 3 {
                            Required::All
                        } else {
                            Required::AtLeast(need)
                        };
                        Group { members, required }
                    })
                    .collect();
                let cuts: Vec<i64> = cuts.into_iter().collect();
                let periods = cuts
                    .chunks(2)
                    .filter(|c| c.len() == 2)
                    .map(|c| Period {
                        start_ms: base + c[0] * 5 * MIN,
                        end_ms: base + c[1] * 5 * MIN,
                    })
                    .collect();
                Case {
                    req: Request {
                        groups,
                        duration_minutes: dur * 5,
                        periods,
                        buffer_before_minutes: bb * 5,
                        buffer_after_minutes: ba * 5,
                        start_interval_minutes: step,
                        minimum_notice_minutes: notice * 30,
                        max_results: max,
                        tentative_is_busy: tent,
                        format: Format::OverlappingSlots,
                    },
                    people,
                    now: base + now_min * MIN,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(192))]

    #[test]
    fn overlapping_slots_equal_the_brute_force_reference(case in arb_case(6)) {
        let engine = query(&case.req, &case.people, case.now).unwrap();
        let reference = reference::query(&case.req, &case.people, case.now).unwrap();
        prop_assert_eq!(engine, reference);
    }

    #[test]
    fn slots_equal_the_greedy_reference_and_do_not_overlap(case in arb_case(6)) {
        let mut req = case.req.clone();
        req.format = Format::Slots;
        let engine = query(&req, &case.people, case.now).unwrap();
        for w in engine.slots.windows(2) {
            prop_assert!(w[0].end_ms <= w[1].start_ms);
        }
        let reference = reference::query(&req, &case.people, case.now).unwrap();
        prop_assert_eq!(engine, reference);
    }

    #[test]
    fn reused_participants_answer_like_fresh_ones(
        case in arb_case(6),
        per_day in prop::sample::select(vec![0u32, 1, 2, 3]),
        per_week in prop::sample::select(vec![0u32, 4, 8]),
        tentative in any::<bool>(),
    ) {
        // Clones share the busy data (and its lazily counted days) with
        // the participants already queried above, under other caps and
        // the other tentative rule; fresh ones are built anew.
        let mut req = case.req.clone();
        query(&req, &case.people, case.now).unwrap();
        req.tentative_is_busy = tentative;
        let reused: Vec<ParticipantData> = case
            .people
            .iter()
            .map(|p| p.clone().with_caps(per_day, per_week))
            .collect();
        let fresh: Vec<ParticipantData> = case
            .people
            .iter()
            .map(|p| {
                ParticipantData::new(p.time_zone(), p.busy().to_vec(), p.working_hours().cloned())
                    .with_caps(per_day, per_week)
            })
            .collect();
        prop_assert!(reused.iter().zip(&case.people).all(|(a, b)| a.shares_data_with(b)));
        let a = query(&req, &reused, case.now).unwrap();
        prop_assert_eq!(&a, &query(&req, &fresh, case.now).unwrap());
        prop_assert_eq!(a, reference::query(&req, &fresh, case.now).unwrap());
    }

    #[test]
    fn every_offered_slot_is_explained_as_available(case in arb_case(4)) {
        let mut req = case.req.clone();
        req.max_results = 20;
        let engine = query(&req, &case.people, case.now).unwrap();
        for s in &engine.slots {
            let x = explain(&req, &case.people, case.now, s.start_ms, s.end_ms).unwrap();
            prop_assert!(x.available, "{:?}", x);
            let mut free: Vec<usize> = x.participants.iter().filter(|p| p.reasons.is_empty()).map(|p| p.participant).collect();
            free.sort_unstable();
            prop_assert_eq!(&free, &s.available);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn periods_equal_the_union_of_one_minute_reference_slots(case in arb_case(2)) {
        let mut req = case.req.clone();
        req.format = Format::Periods;
        req.start_interval_minutes = 1;
        let engine = query(&req, &case.people, case.now).unwrap();
        let reference = reference::query(&req, &case.people, case.now).unwrap();
        let only_all = req.groups.iter().all(|g| match g.required {
            Required::All => true,
            Required::AtLeast(n) => n as usize == g.members.len(),
        });
        if only_all {
            prop_assert_eq!(engine, reference);
        } else {
            // Members of an N-of-M period may differ; the spans may not.
            prop_assert_eq!(spans(&engine), spans(&reference));
        }
    }
}
