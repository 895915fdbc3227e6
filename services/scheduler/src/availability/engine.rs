//! The fast engine: per participant, the free intervals (working hours ∩
//! query periods, minus busy time widened by the buffers, minus capped days
//! and weeks) computed once as sorted `i64` ms intervals; then the set of
//! valid slot *starts* (a member can start a slot of duration `d` anywhere in
//! `[a, b - d]` of a free `[a, b)`), combined per group by intersection
//! (everyone required) or a counting sweep (N of M), and across groups by
//! intersection; the answer walks the grid only inside that set. Work is
//! limited to a growing horizon so that a query whose results come early
//! does not pay for the whole range.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::Arc;

use chrono_tz::Tz;

use super::hours::Timeline;
use super::localtime::{weekday_index, Edge, DAY};
use super::memo;
use super::model::{Fnv, Format, Group, ParticipantData, Required, Slot};
use super::validate::{Spec, Window};

/// (zone, hours hash) → (a participant with those hours, base index).
type BaseKeys = HashMap<(Tz, u64), Vec<(usize, u32)>, BuildHasherDefault<Fnv>>;

/// What every search over the same participants and periods shares: the
/// participants in use, zone timelines and working hours in UTC.
pub(crate) struct Context<'a> {
    pub participants: &'a [ParticipantData],
    pub search: Vec<(i64, i64)>,
    /// Participant indices in use, ascending.
    pub used: Vec<usize>,
    /// participant index → position in `used` (`u32::MAX` when unused).
    pub slot_of: Vec<u32>,
    timelines: Vec<Arc<Timeline>>,
    /// Per used participant: index into `timelines`.
    zone_of: Vec<u32>,
    /// Distinct base lists: working hours ∩ search; 0 is the search itself.
    bases: Vec<Vec<(i64, i64)>>,
    /// Per used participant: index into `bases`.
    base_of: Vec<u32>,
}

impl<'a> Context<'a> {
    pub(super) fn new<'g>(
        participants: &'a [ParticipantData],
        groups: impl Iterator<Item = &'g Group>,
        search: Vec<(i64, i64)>,
    ) -> Self {
        let mut slot_of = vec![u32::MAX; participants.len()];
        for g in groups {
            for &m in &g.members {
                slot_of[m] = 0;
            }
        }
        let mut used = Vec::new();
        for (i, s) in slot_of.iter_mut().enumerate() {
            if *s == 0 {
                *s = used.len() as u32;
                used.push(i);
            }
        }
        let (lo, hi) = match (search.first(), search.last()) {
            (Some(f), Some(l)) => (f.0, l.1),
            _ => (0, 0),
        };
        // Timelines and working hours come from the process-wide memo, over
        // the range rounded out to whole blocks (a superset gives the same
        // answers inside the range: see `memo`).
        let (from, to) = memo::block_range(lo, hi);
        let mut timelines: Vec<Arc<Timeline>> = Vec::new();
        let mut zone_of = Vec::with_capacity(used.len());
        let mut bases = vec![search.clone()];
        let mut base_keys: BaseKeys = HashMap::default();
        let mut base_of = Vec::with_capacity(used.len());
        for &p in &used {
            let part = &participants[p];
            let tz = part.time_zone();
            let z = match timelines.iter().position(|t| t.tz == tz) {
                Some(z) => z,
                None => {
                    timelines.push(memo::timeline(tz, from, to));
                    timelines.len() - 1
                }
            };
            zone_of.push(z as u32);
            let b = match part.working_hours() {
                None => 0,
                Some(h) => {
                    let same = base_keys.entry((tz, part.hours_hash())).or_default();
                    match same.iter().find(|&&(q, _)| {
                        let other = &participants[q];
                        other.shares_data_with(part) || other.working_hours() == Some(h)
                    }) {
                        Some(&(_, b)) => b,
                        None => {
                            let utc =
                                memo::working_hours(&timelines[z], h, part.hours_hash(), from, to);
                            let mut base = Vec::new();
                            intersect(&utc, &search, &mut base);
                            bases.push(base);
                            let b = (bases.len() - 1) as u32;
                            same.push((p, b));
                            b
                        }
                    }
                }
            };
            base_of.push(b);
        }
        Self {
            participants,
            search,
            used,
            slot_of,
            timelines,
            zone_of,
            bases,
            base_of,
        }
    }

    pub(super) fn lo(&self) -> i64 {
        self.search.first().map_or(0, |s| s.0)
    }

    pub(super) fn hi(&self) -> i64 {
        self.search.last().map_or(0, |s| s.1)
    }
}

/// Scratch buffers reused across participants and horizons.
#[derive(Default)]
pub(crate) struct Work {
    /// Per used participant `u`: `free[free_rng[u].0..free_rng[u].1]`.
    pub free: Vec<(i64, i64)>,
    free_rng: Vec<(usize, usize)>,
    starts: Vec<(i64, i64)>,
    starts_rng: Vec<(usize, usize)>,
    blocks: Vec<(i64, i64)>,
    caps: Vec<(i64, i64)>,
    merged: Vec<(i64, i64)>,
    base: Vec<(i64, i64)>,
    focus: Vec<(i64, i64)>,
    counts: Vec<u32>,
    events: Vec<(i64, i32)>,
    /// Per used participant: 1 = in an everyone-required group, 2 = only in
    /// N-of-M groups, 0 = not in this spec.
    role: Vec<u8>,
    a: Vec<(i64, i64)>,
    b: Vec<(i64, i64)>,
    /// The valid starts: sorted, disjoint, half-open.
    pub valid: Vec<(i64, i64)>,
}

thread_local! {
    /// Each thread's scratch buffers, kept between queries so that a query
    /// allocates little; [`Work::trim`] bounds what is kept.
    static WORK: RefCell<Work> = RefCell::default();
}

impl Work {
    /// Drops buffers grown past [`Work::KEEP`] elements, so that one huge
    /// query does not pin its memory to the thread.
    fn trim(&mut self) {
        fn cap<T>(v: &mut Vec<T>) {
            if v.capacity() > Work::KEEP {
                *v = Vec::new();
            }
        }
        cap(&mut self.free);
        cap(&mut self.free_rng);
        cap(&mut self.starts);
        cap(&mut self.starts_rng);
        cap(&mut self.blocks);
        cap(&mut self.caps);
        cap(&mut self.merged);
        cap(&mut self.base);
        cap(&mut self.focus);
        cap(&mut self.counts);
        cap(&mut self.events);
        cap(&mut self.role);
        cap(&mut self.a);
        cap(&mut self.b);
        cap(&mut self.valid);
    }

    /// Most elements a kept buffer may hold (about 4 MB of intervals).
    const KEEP: usize = 1 << 18;

    pub(super) fn free_of(&self, u: usize) -> &[(i64, i64)] {
        let (s, e) = self.free_rng[u];
        &self.free[s..e]
    }

    fn starts_of(&self, u: usize) -> &[(i64, i64)] {
        let (s, e) = self.starts_rng[u];
        &self.starts[s..e]
    }
}

/// The first index `>= i` whose interval ends after `x`, by galloping
/// (cheap both when it is near and when it is far).
#[inline]
fn skip_to(v: &[(i64, i64)], mut i: usize, x: i64) -> usize {
    let mut step = 1;
    while i + step < v.len() && v[i + step].1 <= x {
        i += step;
        step *= 2;
    }
    // v[i].1 <= x; the answer is in (i, i + step].
    let end = (i + step + 1).min(v.len());
    i + 1 + v[i + 1..end].partition_point(|a| a.1 <= x)
}

/// Intersection of two sorted disjoint lists, appended to `out`.
pub(crate) fn intersect(x: &[(i64, i64)], y: &[(i64, i64)], out: &mut Vec<(i64, i64)>) {
    let (mut i, mut j) = (0, 0);
    while i < x.len() && j < y.len() {
        if x[i].1 <= y[j].0 {
            i = skip_to(x, i, y[j].0);
            continue;
        }
        if y[j].1 <= x[i].0 {
            j = skip_to(y, j, x[i].0);
            continue;
        }
        let s = x[i].0.max(y[j].0);
        let e = x[i].1.min(y[j].1);
        if s < e {
            out.push((s, e));
        }
        if x[i].1 < y[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
}

/// `base` (clipped to `< hi`) minus sorted disjoint `blocks`, appended to `out`.
fn subtract(base: &[(i64, i64)], hi: i64, blocks: &[(i64, i64)], out: &mut Vec<(i64, i64)>) {
    let mut j = 0;
    for &(a0, b0) in base {
        if a0 >= hi {
            break;
        }
        let b0 = b0.min(hi);
        let mut a = a0;
        while j < blocks.len() && blocks[j].1 <= a {
            j += 1;
        }
        let mut k = j;
        loop {
            if k >= blocks.len() || blocks[k].0 >= b0 {
                if a < b0 {
                    out.push((a, b0));
                }
                break;
            }
            let (bs, be) = blocks[k];
            if bs > a {
                out.push((a, bs));
            }
            a = a.max(be);
            if a >= b0 {
                break;
            }
            k += 1;
        }
        j = k;
    }
}

/// Appends `[s, e)` to a sorted list, merging with the last interval.
#[inline]
fn push_merge(v: &mut Vec<(i64, i64)>, s: i64, e: i64) {
    match v.last_mut() {
        Some(last) if s <= last.1 => last.1 = last.1.max(e),
        _ => v.push((s, e)),
    }
}

/// Whole local days (and weeks) a participant's caps block, overlapping
/// `[lo, hi)`, as sorted disjoint UTC intervals in `w.caps`. Events are
/// counted by local start day from the participant's precomputed counts.
fn cap_blocks(p: &ParticipantData, tl: &Timeline, spec: &Spec<'_>, lo: i64, hi: i64, w: &mut Work) {
    w.caps.clear();
    let (per_day, per_week) = (p.max_events_per_day(), p.max_events_per_week());
    if per_day == 0 && per_week == 0 {
        return;
    }
    let first_day = tl.to_local(lo).div_euclid(DAY);
    let last_day = tl.to_local(hi - 1).div_euclid(DAY);
    let d0 = first_day - weekday_index(first_day);
    let d1 = last_day - weekday_index(last_day) + 7; // exclusive
    w.counts.clear();
    w.counts.resize((d1 - d0) as usize, 0);
    let counts = p.day_counts(spec.tentative_is_busy);
    let from = counts.partition_point(|c| c.0 < d0);
    for &(day, n) in &counts[from..] {
        if day >= d1 {
            break;
        }
        w.counts[(day - d0) as usize] = n;
    }
    let mut week_blocked = false;
    for day in first_day..=last_day {
        if weekday_index(day) == 0 || day == first_day {
            let ws = day - weekday_index(day);
            let sum: u32 = w.counts[(ws - d0) as usize..(ws - d0 + 7) as usize]
                .iter()
                .sum();
            week_blocked = per_week > 0 && sum >= per_week;
        }
        let day_blocked = per_day > 0 && w.counts[(day - d0) as usize] >= per_day;
        if week_blocked || day_blocked {
            let s = tl.to_utc(day * DAY, Edge::Start);
            let e = tl.to_utc((day + 1) * DAY, Edge::End);
            push_merge(&mut w.caps, s, e);
        }
    }
}

fn is_all(g: &Group) -> bool {
    match g.required {
        Required::All => true,
        Required::AtLeast(n) => n as usize == g.members.len(),
    }
}

/// Free intervals and start set of used participant `u`, looking only
/// inside `w.focus` (sorted, disjoint, within `< hi`).
fn participant(ctx: &Context<'_>, spec: &Spec<'_>, u: usize, h: i64, hi: i64, w: &mut Work) {
    let part = &ctx.participants[ctx.used[u]];
    let d = spec.duration;
    // Blocking time overlapping the focus, widened by the buffers. Merged
    // lists have ascending ends too, so each focus interval is one binary
    // search away.
    let busy = part.merged(spec.tentative_is_busy);
    w.blocks.clear();
    for &(fx, fy) in &w.focus {
        let mut i = busy.partition_point(|b| b.1 + spec.after <= fx);
        while i < busy.len() && busy[i].0 - spec.before < fy {
            push_merge(
                &mut w.blocks,
                busy[i].0 - spec.before,
                busy[i].1 + spec.after,
            );
            i += 1;
        }
    }
    let tl = &ctx.timelines[ctx.zone_of[u] as usize];
    w.caps.clear();
    if let (Some(&(flo, _)), Some(&(_, fhi))) = (w.focus.first(), w.focus.last()) {
        cap_blocks(part, tl, spec, flo, fhi, w);
    }
    w.base.clear();
    intersect(&ctx.bases[ctx.base_of[u] as usize], &w.focus, &mut w.base);
    let free_start = w.free.len();
    if w.caps.is_empty() {
        subtract(&w.base, hi, &w.blocks, &mut w.free);
    } else {
        w.merged.clear();
        let (mut i, mut j) = (0, 0);
        while i < w.blocks.len() || j < w.caps.len() {
            let take_block =
                j >= w.caps.len() || (i < w.blocks.len() && w.blocks[i].0 <= w.caps[j].0);
            let (s, e) = if take_block {
                i += 1;
                w.blocks[i - 1]
            } else {
                j += 1;
                w.caps[j - 1]
            };
            push_merge(&mut w.merged, s, e);
        }
        subtract(&w.base, hi, &w.merged, &mut w.free);
    }
    w.free_rng[u] = (free_start, w.free.len());
    let starts_start = w.starts.len();
    for k in free_start..w.free.len() {
        let (a, b) = w.free[k];
        if b - a >= d {
            let e = (b - d + 1).min(h);
            if a < e {
                w.starts.push((a, e));
            }
        }
    }
    w.starts_rng[u] = (starts_start, w.starts.len());
}

/// Computes the valid starts `< h` of `spec` into `w.valid`, and the free
/// intervals (up to `h + duration`) of the spec's members into `w.free`.
///
/// Members of everyone-required groups are computed over the whole range
/// first; their intersection bounds where a slot can be, so members of
/// N-of-M groups are then computed only around it.
pub(crate) fn compute(ctx: &Context<'_>, spec: &Spec<'_>, h: i64, w: &mut Work) {
    let d = spec.duration;
    let hi = h.saturating_add(d);
    let n = ctx.used.len();
    w.free.clear();
    w.starts.clear();
    w.free_rng.clear();
    w.free_rng.resize(n, (0, 0));
    w.starts_rng.clear();
    w.starts_rng.resize(n, (0, 0));
    w.role.clear();
    w.role.resize(n, 0);
    for g in spec.groups {
        let role = if is_all(g) { 1 } else { 2 };
        for &m in &g.members {
            let r = &mut w.role[ctx.slot_of[m] as usize];
            *r = if *r == 0 { role } else { (*r).min(role) };
        }
    }
    w.focus.clear();
    for &(s, e) in &ctx.search {
        if s < hi {
            w.focus.push((s, e.min(hi)));
        }
    }
    for u in 0..n {
        if w.role[u] == 1 {
            participant(ctx, spec, u, h, hi, w);
        }
    }
    let mut valid = std::mem::take(&mut w.valid);
    let mut a = std::mem::take(&mut w.a);
    let mut b = std::mem::take(&mut w.b);
    valid.clear();
    let mut first = true;
    for g in spec.groups.iter().filter(|g| is_all(g)) {
        for &m in &g.members {
            let u = ctx.slot_of[m] as usize;
            if first {
                valid.extend_from_slice(w.starts_of(u));
                first = false;
            } else {
                b.clear();
                intersect(&valid, w.starts_of(u), &mut b);
                std::mem::swap(&mut valid, &mut b);
            }
        }
    }
    if !first {
        // Slots starting in `valid` cover these spans; nothing else matters.
        w.focus.clear();
        for &(x, y) in &valid {
            push_merge(&mut w.focus, x, (y - 1 + d).min(hi));
        }
    }
    for u in 0..n {
        if w.role[u] == 2 {
            participant(ctx, spec, u, h, hi, w);
        }
    }
    for g in spec.groups.iter().filter(|g| !is_all(g)) {
        if !first && valid.is_empty() {
            break;
        }
        let need = match g.required {
            Required::All => g.members.len(),
            Required::AtLeast(n) => n as usize,
        } as i32;
        w.events.clear();
        for &m in &g.members {
            let (s0, e0) = w.starts_rng[ctx.slot_of[m] as usize];
            for &(s, e) in &w.starts[s0..e0] {
                w.events.push((s, 1));
                w.events.push((e, -1));
            }
        }
        w.events.sort_unstable_by_key(|e| e.0);
        a.clear();
        let mut count = 0i32;
        let mut open: Option<i64> = None;
        let mut i = 0;
        while i < w.events.len() {
            let x = w.events[i].0;
            while i < w.events.len() && w.events[i].0 == x {
                count += w.events[i].1;
                i += 1;
            }
            match (open, count >= need) {
                (None, true) => open = Some(x),
                (Some(s), false) => {
                    a.push((s, x));
                    open = None;
                }
                _ => {}
            }
        }
        if first {
            std::mem::swap(&mut valid, &mut a);
            first = false;
        } else {
            b.clear();
            intersect(&valid, &a, &mut b);
            std::mem::swap(&mut valid, &mut b);
        }
    }
    w.valid = valid;
    w.a = a;
    w.b = b;
}

/// The first grid point at or after `x`.
#[inline]
pub(crate) fn grid_ceil(x: i64, step: i64) -> i64 {
    x.div_euclid(step) * step + if x.rem_euclid(step) == 0 { 0 } else { step }
}

/// Which participants are free for each result; results come in ascending
/// order, so a cursor per participant suffices.
pub(crate) struct Members {
    all_required: bool,
    /// `(used position, participant index)` of the spec's members, by index.
    mine: Vec<(usize, usize)>,
    everyone: Vec<usize>,
    cursors: Vec<usize>,
}

impl Members {
    pub(super) fn new(ctx: &Context<'_>, spec: &Spec<'_>) -> Self {
        let all_required = spec.groups.iter().all(|g| match g.required {
            Required::All => true,
            Required::AtLeast(n) => n as usize == g.members.len(),
        });
        let mut everyone: Vec<usize> = spec
            .groups
            .iter()
            .flat_map(|g| g.members.iter().copied())
            .collect();
        everyone.sort_unstable();
        everyone.dedup();
        let mine: Vec<(usize, usize)> = everyone
            .iter()
            .map(|&p| (ctx.slot_of[p] as usize, p))
            .collect();
        Self {
            all_required,
            cursors: vec![0; mine.len()],
            mine,
            everyone,
        }
    }

    /// Starts the cursors of [`Members::of`] again (for a new horizon).
    pub(super) fn rewind(&mut self) {
        self.cursors.iter_mut().for_each(|c| *c = 0);
    }

    /// Members free for `[s, e)`; calls must come with non-decreasing `e`.
    pub(super) fn of(&mut self, w: &Work, s: i64, e: i64) -> Vec<usize> {
        if self.all_required {
            return self.everyone.clone();
        }
        let mut out = Vec::with_capacity(self.mine.len());
        for (k, &(u, p)) in self.mine.iter().enumerate() {
            let free = w.free_of(u);
            let c = &mut self.cursors[k];
            while *c < free.len() && free[*c].1 < e {
                *c += 1;
            }
            if *c < free.len() && free[*c].0 <= s && e <= free[*c].1 {
                out.push(p);
            }
        }
        out
    }

    /// Members free for `[s, e)`, in any order of calls.
    pub(super) fn of_any(&self, w: &Work, s: i64, e: i64) -> Vec<usize> {
        if self.all_required {
            return self.everyone.clone();
        }
        self.mine
            .iter()
            .filter(|&&(u, _)| {
                let free = w.free_of(u);
                let i = free.partition_point(|f| f.1 < e);
                i < free.len() && free[i].0 <= s
            })
            .map(|&(_, p)| p)
            .collect()
    }
}

/// Runs a request over growing horizons until it has enough results.
pub(crate) fn query(ctx: &Context<'_>, win: &Window, spec: &Spec<'_>, format: Format) -> Vec<Slot> {
    let (lo, end) = (ctx.lo(), ctx.hi());
    let mut out = Vec::new();
    if lo >= end {
        return out;
    }
    let mut w = WORK.with(|c| c.take());
    let mut members = Members::new(ctx, spec);
    let mut h = (lo + (2 * DAY).max(4 * spec.duration)).min(end);
    loop {
        compute(ctx, spec, h, &mut w);
        out.clear();
        members.rewind();
        let complete = collect(win, spec, format, &mut members, &w, h, h >= end, &mut out);
        if complete || h >= end {
            w.trim();
            WORK.with(|c| *c.borrow_mut() = w);
            return out;
        }
        let span = h - lo;
        let grow = if out.is_empty() {
            end - lo
        } else {
            let need = (win.max_results as i64 * 5 / 4).max(1);
            span.saturating_mul(need)
                .saturating_div(out.len() as i64)
                .max(span * 2)
        };
        h = lo.saturating_add(grow).min(end);
    }
}

/// Emits results from `w.valid`; returns true when `max_results` final
/// results were found (so a longer horizon would not change them).
#[allow(clippy::too_many_arguments)]
fn collect(
    win: &Window,
    spec: &Spec<'_>,
    format: Format,
    members: &mut Members,
    w: &Work,
    h: i64,
    last: bool,
    out: &mut Vec<Slot>,
) -> bool {
    let (step, d, max) = (win.step, spec.duration, win.max_results);
    match format {
        Format::OverlappingSlots | Format::Slots => {
            let greedy = format == Format::Slots;
            let mut next_ok = i64::MIN;
            for &(x, y) in &w.valid {
                let mut s = grid_ceil(x.max(next_ok), step);
                while s < y {
                    if out.len() == max {
                        return true;
                    }
                    let available = members.of(w, s, s + d);
                    out.push(Slot {
                        start_ms: s,
                        end_ms: s + d,
                        available,
                    });
                    if greedy {
                        next_ok = s + d;
                        s = grid_ceil(s + d, step);
                    } else {
                        s += step;
                    }
                }
            }
            out.len() == max
        }
        Format::Periods => {
            let mut periods: Vec<(i64, i64)> = Vec::new();
            for &(x, y) in &w.valid {
                push_merge(&mut periods, x, y - 1 + d);
            }
            for (s, e) in periods {
                if out.len() == max {
                    return true;
                }
                if !last && e >= h {
                    return false;
                }
                let available = members.of(w, s, e);
                out.push(Slot {
                    start_ms: s,
                    end_ms: e,
                    available,
                });
            }
            out.len() == max
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtraction_leaves_the_gaps_between_blocks() {
        let mut out = Vec::new();
        subtract(
            &[(0, 100), (200, 300)],
            1000,
            &[(10, 20), (90, 210), (250, 260)],
            &mut out,
        );
        assert_eq!(out, vec![(0, 10), (20, 90), (210, 250), (260, 300)]);
        out.clear();
        subtract(&[(0, 100)], 50, &[], &mut out);
        assert_eq!(out, vec![(0, 50)]);
    }

    #[test]
    fn grid_ceil_rounds_up_to_the_step() {
        assert_eq!(grid_ceil(0, 15), 0);
        assert_eq!(grid_ceil(1, 15), 15);
        assert_eq!(grid_ceil(-1, 15), 0);
        assert_eq!(grid_ceil(-16, 15), -15);
    }
}
