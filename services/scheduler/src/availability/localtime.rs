//! Local wall-clock time in a zone, as the engine counts it: ms and day
//! numbers since 1970-01-01, offsets, and the conversion of a local time to
//! an instant with the engine's DST rules. A local time inside a
//! spring-forward gap resolves to the first valid instant after the gap; an
//! ambiguous local time (fall-back overlap) resolves to the earlier instant
//! for starts and the later for ends. The model and the working-hours code
//! both build on it; it builds on neither.

use chrono::{DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, Offset, TimeZone};
use chrono_tz::Tz;

/// One minute in ms.
pub(crate) const MINUTE: i64 = 60_000;
/// One day in ms.
pub(crate) const DAY: i64 = 86_400_000;
/// 1970-01-01 counted from 0001-01-01 (chrono's day numbering).
const EPOCH_DAYS_FROM_CE: i64 = 719_163;

/// Which instant an ambiguous local time resolves to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    /// A range start: the earlier instant.
    Start,
    /// A range end: the later instant.
    End,
}

/// Days since 1970-01-01 of a date.
pub(crate) fn day_number(date: NaiveDate) -> i64 {
    i64::from(date.num_days_from_ce()) - EPOCH_DAYS_FROM_CE
}

/// The date of a day number.
pub(crate) fn date_of_day(day: i64) -> NaiveDate {
    i32::try_from(day + EPOCH_DAYS_FROM_CE)
        .ok()
        .and_then(NaiveDate::from_num_days_from_ce_opt)
        .unwrap_or(NaiveDate::MIN)
}

/// ISO weekday index of a day number, Monday = 0.
pub(crate) fn weekday_index(day: i64) -> i64 {
    (day + 3).rem_euclid(7)
}

fn naive_utc(ms: i64) -> NaiveDateTime {
    DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .naive_utc()
}

/// UTC offset of `tz` at an instant, ms.
pub(crate) fn offset_ms(tz: Tz, utc_ms: i64) -> i64 {
    i64::from(
        tz.offset_from_utc_datetime(&naive_utc(utc_ms))
            .fix()
            .local_minus_utc(),
    ) * 1000
}

/// Local wall-clock ms (ms since 1970-01-01T00:00 local) of an instant.
pub(crate) fn local_ms(tz: Tz, utc_ms: i64) -> i64 {
    utc_ms + offset_ms(tz, utc_ms)
}

/// Converts a local wall-clock time in `tz` to Unix ms with the engine's
/// DST rules (see the module docs), straight through chrono.
pub fn local_to_utc(tz: Tz, local: NaiveDateTime, edge: Edge) -> i64 {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => t.timestamp_millis(),
        LocalResult::Ambiguous(a, b) => {
            let (a, b) = (a.timestamp_millis(), b.timestamp_millis());
            match edge {
                Edge::Start => a.min(b),
                Edge::End => a.max(b),
            }
        }
        LocalResult::None => {
            // Inside a gap: find the first valid local second after it; its
            // instant is the transition.
            let valid = |l: NaiveDateTime| !matches!(tz.from_local_datetime(&l), LocalResult::None);
            let mut lo = 0i64;
            let mut hi = 1i64;
            while !valid(local + chrono::Duration::seconds(hi)) && hi < 3 * 86_400 {
                lo = hi;
                hi *= 2;
            }
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                if valid(local + chrono::Duration::seconds(mid)) {
                    hi = mid;
                } else {
                    lo = mid;
                }
            }
            let after = local + chrono::Duration::seconds(hi);
            let sub = after.and_utc().timestamp_subsec_millis();
            match tz.from_local_datetime(&(after - chrono::Duration::milliseconds(sub.into()))) {
                LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => t.timestamp_millis(),
                LocalResult::None => after.and_utc().timestamp_millis(),
            }
        }
    }
}

/// The naive date-time of local wall-clock ms.
pub(crate) fn local_ms_to_naive(local: i64) -> NaiveDateTime {
    naive_utc(local)
}
