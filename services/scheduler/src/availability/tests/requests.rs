//! Request errors, sequences and the benchmark scenario.

use super::*;

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
