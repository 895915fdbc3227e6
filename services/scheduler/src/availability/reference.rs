//! The brute-force reference: visits every grid start in the query periods
//! and asks, for each participant, whether the slot is free by checking
//! every busy interval, the working hours and the caps from the raw inputs
//! (through the explanation code, not the fast engine). Slow but obviously
//! correct; tests compare the engine with it and the benchmark shows the
//! ratio.

use super::engine::grid_ceil;
use super::explain::{inside_periods, participant_reasons};
use super::model::{Answer, Format, ParticipantData, Request, Required, Slot};
use super::validate::{self, FieldError, Limits, Spec, Window};

fn offered(
    req: &Request,
    win: &Window,
    spec: &Spec<'_>,
    participants: &[ParticipantData],
    s: i64,
    e: i64,
    reasons: &mut Vec<crate::availability::Reason>,
) -> Option<Vec<usize>> {
    if s < win.earliest || !inside_periods(&req.periods, s, e) {
        return None;
    }
    let mut available = Vec::new();
    for g in spec.groups {
        let mut n = 0;
        for &m in &g.members {
            reasons.clear();
            participant_reasons(&participants[m], spec, s, e, reasons);
            if reasons.is_empty() {
                n += 1;
                available.push(m);
            }
        }
        let need = match g.required {
            Required::All => g.members.len(),
            Required::AtLeast(k) => k as usize,
        };
        if n < need {
            return None;
        }
    }
    available.sort_unstable();
    available.dedup();
    Some(available)
}

/// Every grid start whose slot is offered (OVERLAPPING_SLOTS without a
/// result limit), with its free members.
pub fn all_slots(
    req: &Request,
    participants: &[ParticipantData],
    now_ms: i64,
) -> Result<Vec<Slot>, Vec<FieldError>> {
    let (win, spec) = validate::request(req, participants, now_ms, &Limits::default())?;
    Ok(scan(req, &win, &spec, participants, usize::MAX, false))
}

fn scan(
    req: &Request,
    win: &Window,
    spec: &Spec<'_>,
    participants: &[ParticipantData],
    max: usize,
    greedy: bool,
) -> Vec<Slot> {
    let mut out: Vec<Slot> = Vec::new();
    let (Some(first), Some(last)) = (req.periods.first(), req.periods.last()) else {
        return out;
    };
    let mut reasons = Vec::new();
    let mut s = grid_ceil(first.start_ms, win.step);
    while s + spec.duration <= last.end_ms && out.len() < max {
        let e = s + spec.duration;
        let taken = greedy && out.last().is_some_and(|l| s < l.end_ms);
        if !taken {
            if let Some(available) = offered(req, win, spec, participants, s, e, &mut reasons) {
                out.push(Slot {
                    start_ms: s,
                    end_ms: e,
                    available,
                });
            }
        }
        s += win.step;
    }
    out
}

/// Answers a request by brute force. SLOTS and OVERLAPPING_SLOTS match the
/// engine exactly; PERIODS are the merged union of the offered grid slots,
/// which equals the engine's periods when the grid step is one minute and
/// every input lies on whole minutes.
pub fn query(
    req: &Request,
    participants: &[ParticipantData],
    now_ms: i64,
) -> Result<Answer, Vec<FieldError>> {
    let (win, spec) = validate::request(req, participants, now_ms, &Limits::default())?;
    let slots = match req.format {
        Format::OverlappingSlots => scan(req, &win, &spec, participants, win.max_results, false),
        Format::Slots => scan(req, &win, &spec, participants, win.max_results, true),
        Format::Periods => {
            let all = scan(req, &win, &spec, participants, usize::MAX, false);
            let mut merged: Vec<(i64, i64)> = Vec::new();
            for s in &all {
                match merged.last_mut() {
                    Some(l) if s.start_ms <= l.1 => l.1 = l.1.max(s.end_ms),
                    _ => merged.push((s.start_ms, s.end_ms)),
                }
            }
            let mut reasons = Vec::new();
            merged
                .into_iter()
                .take(win.max_results)
                .map(|(s, e)| {
                    let mut available: Vec<usize> = spec
                        .groups
                        .iter()
                        .flat_map(|g| g.members.iter().copied())
                        .filter(|&m| {
                            reasons.clear();
                            participant_reasons(&participants[m], &spec, s, e, &mut reasons);
                            reasons.is_empty()
                        })
                        .collect();
                    available.sort_unstable();
                    available.dedup();
                    Slot {
                        start_ms: s,
                        end_ms: e,
                        available,
                    }
                })
                .collect()
        }
    };
    Ok(Answer { slots })
}
