//! Sequenced availability: ordered steps (each with its own groups,
//! duration and buffers) separated by a gap range, answered by computing
//! each step's valid starts with the engine and then a depth-first search
//! from every candidate first slot, earliest first, that takes the earliest
//! continuation and remembers dead ends so that no (step, start) is explored
//! twice.

use std::collections::HashSet;

use super::engine::{compute, grid_ceil, Context, Members, Work};
use super::model::Slot;
use super::validate::{Spec, Window};

struct Step<'a> {
    spec: Spec<'a>,
    min_gap: i64,
    max_gap: i64,
    work: Work,
}

/// Grid points of `valid` within `[lo, hi]`, ascending.
fn grid_points(
    valid: &[(i64, i64)],
    step: i64,
    lo: i64,
    hi: i64,
) -> impl Iterator<Item = i64> + '_ {
    let first = valid.partition_point(|c| c.1 <= lo);
    valid[first..]
        .iter()
        .take_while(move |c| c.0 <= hi)
        .flat_map(move |&(x, y)| {
            let start = grid_ceil(x.max(lo), step);
            let end = y.min(hi.saturating_add(1));
            (0..)
                .map(move |k| start + k * step)
                .take_while(move |&t| t < end)
        })
}

fn dfs(
    steps: &[Step<'_>],
    step: i64,
    k: usize,
    s: i64,
    chain: &mut Vec<i64>,
    dead: &mut HashSet<(usize, i64)>,
) -> bool {
    chain.push(s);
    if k + 1 == steps.len() {
        return true;
    }
    let end = s + steps[k].spec.duration;
    let next = &steps[k + 1];
    let (lo, hi) = (end + next.min_gap, end + next.max_gap);
    for t in grid_points(&next.work.valid, step, lo, hi) {
        if dead.contains(&(k + 1, t)) {
            continue;
        }
        if dfs(steps, step, k + 1, t, chain, dead) {
            return true;
        }
        dead.insert((k + 1, t));
    }
    chain.pop();
    false
}

/// Candidate sequences, earliest first slot first, one per first slot.
pub(crate) fn run(
    ctx: &Context<'_>,
    win: &Window,
    specs: &[(Spec<'_>, i64, i64)],
) -> Vec<Vec<Slot>> {
    let mut out = Vec::new();
    if ctx.lo() >= ctx.hi() {
        return out;
    }
    let steps: Vec<Step<'_>> = specs
        .iter()
        .map(|&(spec, min_gap, max_gap)| {
            let mut work = Work::default();
            compute(ctx, &spec, ctx.hi(), &mut work);
            Step {
                spec,
                min_gap,
                max_gap,
                work,
            }
        })
        .collect();
    let members: Vec<Members> = steps.iter().map(|s| Members::new(ctx, &s.spec)).collect();
    let mut dead = HashSet::new();
    let mut chain = Vec::with_capacity(steps.len());
    for s0 in grid_points(&steps[0].work.valid, win.step, i64::MIN, i64::MAX) {
        if out.len() >= win.max_results {
            break;
        }
        chain.clear();
        if dfs(&steps, win.step, 0, s0, &mut chain, &mut dead) {
            out.push(
                chain
                    .iter()
                    .enumerate()
                    .map(|(k, &s)| {
                        let e = s + steps[k].spec.duration;
                        Slot {
                            start_ms: s,
                            end_ms: e,
                            available: members[k].of_any(&steps[k].work, s, e),
                        }
                    })
                    .collect(),
            );
        }
    }
    out
}
