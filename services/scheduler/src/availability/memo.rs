//! Process-wide memos of what queries over the same weeks share: a zone's
//! offset [`Timeline`] and the UTC intervals of a set of working hours in a
//! zone. Both are pure functions of their key, so a memo never answers
//! differently from a fresh computation; keys are ranges rounded outwards to
//! [`BLOCK`] boundaries, so that queries whose periods move with "now" keep
//! hitting the same entries for days.
//!
//! Memory: at most [`MAX_TIMELINES`] timelines (a few hundred bytes each)
//! and [`MAX_HOURS`] working-hours entries (the hours plus about two
//! intervals per day of the block range, ~2 KB for a 9-to-5 week over the
//! longest query); a memo that reaches its bound is emptied and refills.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use chrono_tz::Tz;

use super::hours::{self, Timeline};
use super::localtime::DAY;
use super::model::WorkingHours;

/// Ranges are rounded outwards to multiples of this (from the epoch).
pub(crate) const BLOCK: i64 = 16 * DAY;
/// Margin of a timeline around its working-hours range: a week and a day
/// each side, for the weeks that caps count and for local days that start
/// before the range in zones ahead of UTC.
pub(crate) const TIMELINE_MARGIN: i64 = 9 * DAY;
/// Most memoised timelines.
pub(super) const MAX_TIMELINES: usize = 512;
/// Most memoised working-hours interval lists.
pub(super) const MAX_HOURS: usize = 4096;

/// Working hours in UTC over one block range, with the hours they came
/// from (the key is only their hash).
type HoursEntry = (WorkingHours, Arc<[(i64, i64)]>);

#[derive(Default)]
struct Memo {
    timelines: HashMap<(Tz, i64, i64), Arc<Timeline>>,
    /// `(zone, hours hash, from, to)` → the entries with that hash.
    hours: HashMap<(Tz, u64, i64, i64), Vec<HoursEntry>>,
    hours_len: usize,
}

fn memo() -> &'static Mutex<Memo> {
    static MEMO: OnceLock<Mutex<Memo>> = OnceLock::new();
    MEMO.get_or_init(Mutex::default)
}

/// `[lo, hi)` rounded outwards to [`BLOCK`] boundaries.
pub(crate) fn block_range(lo: i64, hi: i64) -> (i64, i64) {
    let from = lo.div_euclid(BLOCK) * BLOCK;
    let to = hi.div_euclid(BLOCK) * BLOCK + if hi.rem_euclid(BLOCK) == 0 { 0 } else { BLOCK };
    (from, to.max(from + BLOCK))
}

/// The offsets of `tz` over `[from - TIMELINE_MARGIN, to + TIMELINE_MARGIN]`
/// where `(from, to)` is a block range.
pub(crate) fn timeline(tz: Tz, from: i64, to: i64) -> Arc<Timeline> {
    let key = (tz, from, to);
    if let Some(t) = lock().timelines.get(&key) {
        return t.clone();
    }
    let t = Arc::new(Timeline::new(
        tz,
        from - TIMELINE_MARGIN,
        to + TIMELINE_MARGIN,
    ));
    let mut m = lock();
    if m.timelines.len() >= MAX_TIMELINES {
        m.timelines.clear();
    }
    m.timelines.insert(key, t.clone());
    t
}

/// The UTC intervals (sorted, merged) of `hours` in `tl`'s zone within the
/// block range `[from, to)`; `hash` is the hours' hash. `tl` must come from
/// [`timeline`] with the same range.
pub(crate) fn working_hours(
    tl: &Timeline,
    hours: &WorkingHours,
    hash: u64,
    from: i64,
    to: i64,
) -> Arc<[(i64, i64)]> {
    let key = (tl.tz, hash, from, to);
    if let Some(list) = lock().hours.get(&key) {
        if let Some((_, v)) = list.iter().find(|(h, _)| h == hours) {
            return v.clone();
        }
    }
    let mut out = Vec::new();
    hours::working_hours_fast(tl, hours, from, to, &mut out);
    let v: Arc<[(i64, i64)]> = out.into();
    let mut m = lock();
    if m.hours_len >= MAX_HOURS {
        m.hours.clear();
        m.hours_len = 0;
    }
    let list = m.hours.entry(key).or_default();
    // Another thread may have computed the same meanwhile: keep one.
    if let Some((_, w)) = list.iter().find(|(h, _)| h == hours) {
        return w.clone();
    }
    list.push((hours.clone(), v.clone()));
    m.hours_len += 1;
    v
}

fn lock() -> std::sync::MutexGuard<'static, Memo> {
    // The memo holds no invariant a panic could break: recover it.
    memo().lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_ranges_cover_the_range_on_block_boundaries() {
        assert_eq!(block_range(0, 1), (0, BLOCK));
        assert_eq!(block_range(1, BLOCK), (0, BLOCK));
        assert_eq!(block_range(-1, BLOCK + 1), (-BLOCK, 2 * BLOCK));
        assert_eq!(block_range(BLOCK, BLOCK), (BLOCK, 2 * BLOCK));
    }
}
