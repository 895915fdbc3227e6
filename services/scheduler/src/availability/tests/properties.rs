//! Properties against the reference implementation.

use super::*;

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
