//! Bounded expansion of recurrence rules, shared by every adapter that
//! expands series itself. One invitation anyone can send must not stop a
//! calendar's sync or take an adapter's CPU: a series contributes at most
//! [`MAX_INSTANCES`] instances to a window (the earliest; the rest are not
//! mirrored and the series is reported as truncated), and stepping through
//! its rule set, instances before the window included, may take at most
//! [`MAX_STEPS`] candidates and [`MAX_TIME`], beyond which the series is
//! refused as too costly.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

/// The most instances one series contributes to a sync window: an hourly
/// series over the default 395-day window fits.
pub const MAX_INSTANCES: usize = 10_000;

/// The most candidate instances one expansion may step through, those
/// before the window included: an hourly series from decades back and a
/// minutely one from months back fit, a secondly one from a week back does
/// not. About 0.1 s of CPU.
pub const MAX_STEPS: usize = 500_000;

/// The most time one expansion may take. The step bound counts the
/// candidates the rule set yields, but a rule with a narrow filter steps
/// through many more inside the `rrule` crate for each one it yields (an
/// hourly rule with `BYHOUR` from centuries back yields 500,000 candidates
/// after some 12 million steps, seconds of CPU); this bound stops those.
/// Legitimate series take a few milliseconds.
#[cfg(not(fuzzing))]
pub const MAX_TIME: Duration = Duration::from_millis(250);

/// The most time one expansion may take, in fuzzing builds (`cargo fuzz`
/// sets `--cfg fuzzing`): the same bound, smaller, so the fuzzer spends its
/// executions on new inputs rather than on expansions that run out their
/// budget as designed. Whatever is slow outside the bound still shows as a
/// timeout.
#[cfg(fuzzing)]
pub const MAX_TIME: Duration = Duration::from_millis(5);

/// The instances of a rule set in a range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stepped {
    /// Distinct instance starts in `[after, before]`, in order, at most
    /// [`MAX_INSTANCES`].
    pub starts: Vec<DateTime<Utc>>,
    /// True when there were more than [`MAX_INSTANCES`].
    pub truncated: bool,
    /// Candidates stepped through (the work done).
    pub steps: usize,
}

/// Why a rule set was not expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the series is too costly to expand: more than {MAX_STEPS} candidate instances to step through, or more than {} ms", MAX_TIME.as_millis()
)]
pub struct TooCostly;

/// The instance starts of `set` in `[after, before]` (inclusive, as the
/// `rrule` crate's own range), stepped by hand: the crate's `after` and
/// `before` still step through every candidate since the start without a
/// bound. The set's own guard against rules that never match is turned on.
pub fn step(
    set: rrule::RRuleSet,
    after: DateTime<Utc>,
    before: DateTime<Utc>,
) -> Result<Stepped, TooCostly> {
    let set = set.limit();
    let mut starts: Vec<DateTime<Utc>> = Vec::new();
    let mut truncated = false;
    let mut steps = 0;
    let started = Instant::now();
    for d in &set {
        steps += 1;
        if steps > MAX_STEPS || (steps % 256 == 0 && started.elapsed() > MAX_TIME) {
            return Err(TooCostly);
        }
        let utc = d.with_timezone(&Utc);
        if utc > before {
            break;
        }
        // Candidates come in order; equal ones (an RDATE on a rule's
        // instance) once.
        if utc < after || starts.last() == Some(&utc) {
            continue;
        }
        if starts.len() == MAX_INSTANCES {
            truncated = true;
            break;
        }
        starts.push(utc);
    }
    Ok(Stepped {
        starts,
        truncated,
        steps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn set(start: DateTime<Utc>, rule: &str) -> rrule::RRuleSet {
        let tz = rrule::Tz::UTC;
        let start = start.with_timezone(&tz);
        let r: rrule::RRule<rrule::Unvalidated> = rule.parse().unwrap();
        rrule::RRuleSet::new(start).rrule(r.validate(start).unwrap())
    }

    #[test]
    fn an_endless_minutely_rule_stops_at_the_instance_bound() {
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let s = step(
            set(t0, "FREQ=MINUTELY"),
            t0,
            t0 + chrono::Duration::days(365),
        )
        .unwrap();
        assert_eq!(s.starts.len(), MAX_INSTANCES);
        assert!(s.truncated);
        let d = step(set(t0, "FREQ=DAILY"), t0, t0 + chrono::Duration::days(10)).unwrap();
        assert_eq!((d.starts.len(), d.truncated), (11, false));
    }

    #[test]
    fn a_secondly_rule_from_long_ago_is_too_costly() {
        let t0 = Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).unwrap();
        let at = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(
            step(set(t0, "FREQ=SECONDLY"), at, at + chrono::Duration::days(1)),
            Err(TooCostly)
        );
    }

    #[test]
    fn a_narrow_rule_from_centuries_back_is_stopped_by_time() {
        // Found by fuzzing: each candidate yielded costs 24 steps inside
        // the crate, so the step bound alone let it run for seconds.
        let t0 = Utc.with_ymd_and_hms(1013, 3, 5, 9, 0, 0).unwrap();
        let at = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let started = Instant::now();
        assert_eq!(
            step(
                set(t0, "FREQ=HOURLY;BYHOUR=3"),
                at,
                at + chrono::Duration::days(30)
            ),
            Err(TooCostly)
        );
        assert!(started.elapsed() < MAX_TIME * 4, "{:?}", started.elapsed());
    }
}
