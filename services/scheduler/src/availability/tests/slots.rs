//! Slots and periods: the grid, buffers, groups and quorums, notice and
//! limits, what blocks.

use super::*;

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
