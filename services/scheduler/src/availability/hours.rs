//! Working hours in a participant's zone: turning weekly rules plus date
//! overrides and local days into UTC intervals, with the engine's DST rules
//! (see the `localtime` module). Two implementations share one day loop: a
//! direct one over chrono (used by the reference and explanations) and a
//! [`Timeline`] of the zone's offsets precomputed over the query range (used
//! by the engine, so that its hot path does plain integer arithmetic).

use chrono_tz::Tz;

use super::localtime::{
    day_number, local_ms_to_naive, local_to_utc, offset_ms, weekday_index, Edge, DAY, MINUTE,
};
use super::model::{LocalRange, WorkingHours};

/// The offsets of one zone over a UTC range, as segments `(from_ms,
/// offset_ms)`; the first segment starts at `i64::MIN`. Offsets are sampled
/// every 2 days and transitions located to the second, so the timeline
/// assumes no zone changes its offset and back again within 2 days (true
/// of the tz database in modern times; the property test below checks the
/// zones the engine is tested with against chrono).
#[derive(Debug, Clone)]
pub(crate) struct Timeline {
    pub tz: Tz,
    segs: Vec<(i64, i64)>,
}

impl Timeline {
    const STEP: i64 = 48 * 3_600_000;

    /// The offsets of `tz` over `[lo, hi]`.
    pub(super) fn new(tz: Tz, lo: i64, hi: i64) -> Self {
        let mut segs = vec![(i64::MIN, offset_ms(tz, lo))];
        let mut t = lo;
        while t < hi {
            let next = (t + Self::STEP).min(hi);
            let off = offset_ms(tz, next);
            let prev = segs[segs.len() - 1].1;
            if off != prev {
                // Smallest second in (t, next] with the new offset.
                let mut a = t.div_euclid(1000);
                let mut b = next.div_euclid(1000);
                while b - a > 1 {
                    let m = a + (b - a) / 2;
                    if offset_ms(tz, m * 1000) == prev {
                        a = m;
                    } else {
                        b = m;
                    }
                }
                segs.push((b * 1000, offset_ms(tz, b * 1000)));
            }
            t = next;
        }
        Self { tz, segs }
    }

    /// The offset at an instant, ms.
    #[inline]
    pub(super) fn offset_at(&self, utc: i64) -> i64 {
        let mut off = self.segs[0].1;
        for &(from, o) in &self.segs[1..] {
            if utc >= from {
                off = o;
            } else {
                break;
            }
        }
        off
    }

    /// Local wall-clock ms of an instant.
    #[inline]
    pub(super) fn to_local(&self, utc: i64) -> i64 {
        utc + self.offset_at(utc)
    }

    /// Local wall-clock ms to Unix ms, with the DST rules.
    pub(super) fn to_utc(&self, local: i64, edge: Edge) -> i64 {
        let mut min = i64::MAX;
        let mut max = i64::MIN;
        for (i, &(from, off)) in self.segs.iter().enumerate() {
            let to = self.segs.get(i + 1).map_or(i64::MAX, |s| s.0);
            let u = local - off;
            if u >= from && u < to {
                min = min.min(u);
                max = max.max(u);
            }
        }
        if min <= max {
            return match edge {
                Edge::Start => min,
                Edge::End => max,
            };
        }
        for w in self.segs.windows(2) {
            let ((_, before), (t, after)) = (w[0], w[1]);
            if local - before >= t && local - after < t {
                return t;
            }
        }
        local - self.segs[self.segs.len() - 1].1
    }
}

/// The local ranges of one local day under `hours`.
fn ranges_of_day<'a>(
    hours: &'a WorkingHours,
    overrides: &[(i64, &'a [LocalRange])],
    day: i64,
    mut f: impl FnMut(LocalRange),
) {
    if let Ok(i) = overrides.binary_search_by_key(&day, |(d, _)| *d) {
        overrides[i].1.iter().copied().for_each(&mut f);
        return;
    }
    let wd = weekday_index(day);
    for r in &hours.weekly {
        if i64::from(r.weekday.num_days_from_monday()) == wd {
            f(r.range);
        }
    }
}

/// Shared day loop: working intervals overlapping `[from, to)`, clipped,
/// sorted and merged (touching intervals merge), appended to `out`.
fn working_intervals(
    hours: &WorkingHours,
    from: i64,
    to: i64,
    conv: impl Fn(i64, Edge) -> i64,
    out: &mut Vec<(i64, i64)>,
) {
    let first = out.len();
    let mut overrides: Vec<(i64, &[LocalRange])> = hours
        .overrides
        .iter()
        .map(|o| (day_number(o.date), o.ranges.as_slice()))
        .collect();
    overrides.sort_by_key(|(d, _)| *d);
    // Offsets are within ±14 hours, so one day of margin each side covers
    // every local day overlapping the range.
    let (d0, d1) = (from.div_euclid(DAY) - 1, to.div_euclid(DAY) + 1);
    for day in d0..=d1 {
        let base = day * DAY;
        ranges_of_day(hours, &overrides, day, |r| {
            let s = conv(base + i64::from(r.start_minute) * MINUTE, Edge::Start).max(from);
            let e = conv(base + i64::from(r.end_minute) * MINUTE, Edge::End).min(to);
            if s < e {
                out.push((s, e));
            }
        });
    }
    let tail = &mut out[first..];
    if !tail.is_sorted() {
        tail.sort_unstable();
    }
    let mut w = first;
    for i in first..out.len() {
        let cur = out[i];
        if w > first && cur.0 <= out[w - 1].1 {
            out[w - 1].1 = out[w - 1].1.max(cur.1);
        } else {
            out[w] = cur;
            w += 1;
        }
    }
    out.truncate(w);
}

/// UTC intervals (Unix ms, sorted, merged) during which `hours`, read in
/// `tz`, are available within `[from_ms, to_ms)`; computed through chrono.
pub fn working_hours_utc(
    tz: Tz,
    hours: &WorkingHours,
    from_ms: i64,
    to_ms: i64,
) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    working_intervals(
        hours,
        from_ms,
        to_ms,
        |l, e| local_to_utc(tz, local_ms_to_naive(l), e),
        &mut out,
    );
    out
}

/// As [`working_hours_utc`] through a precomputed timeline covering the
/// range with a day of margin.
pub(crate) fn working_hours_fast(
    tl: &Timeline,
    hours: &WorkingHours,
    from: i64,
    to: i64,
    out: &mut Vec<(i64, i64)>,
) {
    working_intervals(hours, from, to, |l, e| tl.to_utc(l, e), out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::availability::model::{DateOverride, WeeklyRule};
    use chrono::{DateTime, NaiveDate, Weekday};
    use proptest::prelude::*;

    fn utc(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis()
    }

    fn nine_to_five_every_day() -> WorkingHours {
        let days = [
            Weekday::Mon,
            Weekday::Tue,
            Weekday::Wed,
            Weekday::Thu,
            Weekday::Fri,
            Weekday::Sat,
            Weekday::Sun,
        ];
        WorkingHours {
            weekly: days
                .iter()
                .map(|&weekday| WeeklyRule {
                    weekday,
                    range: LocalRange {
                        start_minute: 9 * 60,
                        end_minute: 17 * 60,
                    },
                })
                .collect(),
            overrides: vec![],
        }
    }

    fn one_day(tz: Tz, date: &str) -> Vec<(i64, i64)> {
        let d: NaiveDate = date.parse().unwrap();
        let lo = local_to_utc(tz, d.and_hms_opt(0, 0, 0).unwrap(), Edge::Start);
        let hi = local_to_utc(
            tz,
            d.succ_opt().unwrap().and_hms_opt(0, 0, 0).unwrap(),
            Edge::End,
        );
        let slow = working_hours_utc(tz, &nine_to_five_every_day(), lo, hi);
        let mut fast = Vec::new();
        let tl = Timeline::new(tz, lo - 3 * DAY, hi + 3 * DAY);
        working_hours_fast(&tl, &nine_to_five_every_day(), lo, hi, &mut fast);
        assert_eq!(slow, fast, "fast and direct paths agree in {tz} on {date}");
        slow
    }

    #[test]
    fn london_nine_to_five_follows_the_march_and_october_transitions() {
        let tz: Tz = "Europe/London".parse().unwrap();
        assert_eq!(
            one_day(tz, "2024-03-30"),
            vec![(utc("2024-03-30T09:00:00Z"), utc("2024-03-30T17:00:00Z"))]
        );
        assert_eq!(
            one_day(tz, "2024-03-31"),
            vec![(utc("2024-03-31T08:00:00Z"), utc("2024-03-31T16:00:00Z"))]
        );
        assert_eq!(
            one_day(tz, "2024-10-27"),
            vec![(utc("2024-10-27T09:00:00Z"), utc("2024-10-27T17:00:00Z"))]
        );
        assert_eq!(
            one_day(tz, "2024-10-26"),
            vec![(utc("2024-10-26T08:00:00Z"), utc("2024-10-26T16:00:00Z"))]
        );
    }

    #[test]
    fn new_york_nine_to_five_follows_the_transitions() {
        let tz: Tz = "America/New_York".parse().unwrap();
        assert_eq!(
            one_day(tz, "2024-03-10"),
            vec![(utc("2024-03-10T13:00:00Z"), utc("2024-03-10T21:00:00Z"))]
        );
        assert_eq!(
            one_day(tz, "2024-03-09"),
            vec![(utc("2024-03-09T14:00:00Z"), utc("2024-03-09T22:00:00Z"))]
        );
        assert_eq!(
            one_day(tz, "2024-11-03"),
            vec![(utc("2024-11-03T14:00:00Z"), utc("2024-11-03T22:00:00Z"))]
        );
    }

    #[test]
    fn lord_howe_shifts_by_thirty_minutes() {
        let tz: Tz = "Australia/Lord_Howe".parse().unwrap();
        // +11:00 in summer, +10:30 from 2024-04-07 02:00 local.
        assert_eq!(
            one_day(tz, "2024-04-06"),
            vec![(utc("2024-04-05T22:00:00Z"), utc("2024-04-06T06:00:00Z"))]
        );
        assert_eq!(
            one_day(tz, "2024-04-07"),
            vec![(utc("2024-04-06T22:30:00Z"), utc("2024-04-07T06:30:00Z"))]
        );
        // Back to +11:00 on 2024-10-06 at 02:00 local.
        assert_eq!(
            one_day(tz, "2024-10-06"),
            vec![(utc("2024-10-05T22:00:00Z"), utc("2024-10-06T06:00:00Z"))]
        );
    }

    #[test]
    fn kathmandu_nine_o_clock_is_quarter_past_three_utc() {
        let tz: Tz = "Asia/Kathmandu".parse().unwrap();
        assert_eq!(
            one_day(tz, "2024-06-03"),
            vec![(utc("2024-06-03T03:15:00Z"), utc("2024-06-03T11:15:00Z"))]
        );
    }

    #[test]
    fn a_start_in_the_spring_gap_moves_to_the_end_of_the_gap() {
        let tz: Tz = "Europe/London".parse().unwrap();
        let l = NaiveDate::from_ymd_opt(2024, 3, 31)
            .unwrap()
            .and_hms_opt(1, 30, 0)
            .unwrap();
        assert_eq!(
            local_to_utc(tz, l, Edge::Start),
            utc("2024-03-31T01:00:00Z")
        );
        assert_eq!(local_to_utc(tz, l, Edge::End), utc("2024-03-31T01:00:00Z"));
        let tl = Timeline::new(tz, utc("2024-03-29T00:00:00Z"), utc("2024-04-02T00:00:00Z"));
        let local = l.and_utc().timestamp_millis();
        assert_eq!(tl.to_utc(local, Edge::Start), utc("2024-03-31T01:00:00Z"));
    }

    #[test]
    fn an_ambiguous_time_starts_early_and_ends_late() {
        let tz: Tz = "Europe/London".parse().unwrap();
        let l = NaiveDate::from_ymd_opt(2024, 10, 27)
            .unwrap()
            .and_hms_opt(1, 30, 0)
            .unwrap();
        assert_eq!(
            local_to_utc(tz, l, Edge::Start),
            utc("2024-10-27T00:30:00Z")
        );
        assert_eq!(local_to_utc(tz, l, Edge::End), utc("2024-10-27T01:30:00Z"));
        let tl = Timeline::new(tz, utc("2024-10-25T00:00:00Z"), utc("2024-10-29T00:00:00Z"));
        let local = l.and_utc().timestamp_millis();
        assert_eq!(tl.to_utc(local, Edge::Start), utc("2024-10-27T00:30:00Z"));
        assert_eq!(tl.to_utc(local, Edge::End), utc("2024-10-27T01:30:00Z"));
    }

    #[test]
    fn working_hours_inside_the_overlap_hour_span_both_occurrences() {
        let tz: Tz = "Europe/London".parse().unwrap();
        let d: NaiveDate = "2024-10-27".parse().unwrap();
        let hours = WorkingHours {
            weekly: vec![],
            overrides: vec![DateOverride {
                date: d,
                ranges: vec![LocalRange {
                    start_minute: 60,
                    end_minute: 90,
                }],
            }],
        };
        let got = working_hours_utc(
            tz,
            &hours,
            utc("2024-10-26T00:00:00Z"),
            utc("2024-10-28T00:00:00Z"),
        );
        assert_eq!(
            got,
            vec![(utc("2024-10-27T00:00:00Z"), utc("2024-10-27T01:30:00Z"))]
        );
    }

    #[test]
    fn an_empty_override_removes_the_day_and_a_full_override_replaces_it() {
        let tz: Tz = "Europe/London".parse().unwrap();
        let mut hours = nine_to_five_every_day();
        hours.overrides = vec![
            DateOverride {
                date: "2024-06-03".parse().unwrap(),
                ranges: vec![],
            },
            DateOverride {
                date: "2024-06-04".parse().unwrap(),
                ranges: vec![LocalRange {
                    start_minute: 0,
                    end_minute: 1440,
                }],
            },
        ];
        let got = working_hours_utc(
            tz,
            &hours,
            utc("2024-06-03T00:00:00Z"),
            utc("2024-06-06T00:00:00Z"),
        );
        assert_eq!(
            got,
            vec![
                (utc("2024-06-03T23:00:00Z"), utc("2024-06-04T23:00:00Z")),
                (utc("2024-06-05T08:00:00Z"), utc("2024-06-05T16:00:00Z")),
            ]
        );
    }

    proptest! {
        #[test]
        fn the_timeline_agrees_with_chrono_everywhere(
            zone in prop::sample::select(vec![
                "Europe/London", "America/New_York", "Australia/Lord_Howe",
                "Asia/Kathmandu", "America/Santiago", "Pacific/Chatham", "UTC",
            ]),
            start_day in 19_000i64..20_500,
            minute in 0i64..(40 * 1440),
            ambiguous_end in any::<bool>(),
        ) {
            let tz: Tz = zone.parse().unwrap();
            let lo = start_day * DAY;
            let tl = Timeline::new(tz, lo - 3 * DAY, lo + 45 * DAY);
            let u = lo + minute * MINUTE;
            prop_assert_eq!(tl.offset_at(u), offset_ms(tz, u));
            let local = lo + minute * MINUTE;
            let edge = if ambiguous_end { Edge::End } else { Edge::Start };
            prop_assert_eq!(tl.to_utc(local, edge), local_to_utc(tz, local_ms_to_naive(local), edge));
        }
    }
}
