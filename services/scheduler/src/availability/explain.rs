//! Explanations: why a given `[start, end)` is or is not offered, at request
//! level (grid, periods, notice, duration) and per participant (busy events,
//! buffers, working hours, daily and weekly caps). Computed directly from
//! the raw inputs through chrono, independently of the fast engine, which
//! is why the brute-force reference builds on it.

use std::collections::BTreeSet;

use super::hours;
use super::localtime::{self, weekday_index, DAY};
use super::model::{
    Explanation, GroupVerdict, ParticipantData, ParticipantReasons, Period, Reason, Request,
    RequestReason, Required,
};
use super::validate::{Spec, Window};

/// The reasons one participant is not free for `[s, e)` under `spec`'s
/// buffers and tentative rule, appended to `out` (none when free).
pub(crate) fn participant_reasons(
    p: &ParticipantData,
    spec: &Spec<'_>,
    s: i64,
    e: i64,
    out: &mut Vec<Reason>,
) {
    let tz = p.time_zone();
    let blocking: Vec<_> = p
        .busy()
        .iter()
        .map(|b| (b, super::model::resolve(tz, b)))
        .filter(|(_, r)| r.end > r.start && r.status.blocks(spec.tentative_is_busy))
        .collect();
    for (b, r) in &blocking {
        if r.start < e && s < r.end {
            out.push(Reason::BusyEvent {
                id: b.id,
                start_ms: r.start,
                end_ms: r.end,
            });
        } else if r.start - spec.before < e && s < r.end + spec.after {
            out.push(Reason::Buffer { id: b.id });
        }
    }
    if let Some(h) = p.working_hours() {
        if hours::working_hours_utc(tz, h, s, e) != [(s, e)] {
            out.push(Reason::OutsideWorkingHours);
        }
    }
    let (per_day, per_week) = (p.max_events_per_day(), p.max_events_per_week());
    if per_day == 0 && per_week == 0 {
        return;
    }
    let days_of = |r_start: i64| localtime::local_ms(tz, r_start).div_euclid(DAY);
    let first = days_of(s);
    let last = days_of(e - 1);
    let starts: Vec<i64> = blocking.iter().map(|(_, r)| days_of(r.start)).collect();
    if per_day > 0 {
        for day in first..=last {
            let count = starts.iter().filter(|&&d| d == day).count() as u32;
            if count >= per_day {
                out.push(Reason::DailyCap {
                    date: localtime::date_of_day(day),
                    count,
                    max: per_day,
                });
            }
        }
    }
    if per_week > 0 {
        let weeks: BTreeSet<i64> = (first..=last).map(|d| d - weekday_index(d)).collect();
        for ws in weeks {
            let count = starts
                .iter()
                .filter(|&&d| d - weekday_index(d) == ws)
                .count() as u32;
            if count >= per_week {
                out.push(Reason::WeeklyCap {
                    week_start: localtime::date_of_day(ws),
                    count,
                    max: per_week,
                });
            }
        }
    }
}

/// Whether `[s, e)` lies inside the union of `periods` (touching periods
/// join).
pub(crate) fn inside_periods(periods: &[Period], s: i64, e: i64) -> bool {
    let mut run: Option<(i64, i64)> = None;
    for p in periods {
        run = match run {
            Some((a, b)) if p.start_ms <= b => Some((a, b.max(p.end_ms))),
            _ => Some((p.start_ms, p.end_ms)),
        };
        if let Some((a, b)) = run {
            if a <= s && e <= b {
                return true;
            }
        }
    }
    false
}

/// Explains `[s, e)` for a validated request.
pub(crate) fn explain(
    req: &Request,
    win: &Window,
    spec: &Spec<'_>,
    participants: &[ParticipantData],
    s: i64,
    e: i64,
) -> Explanation {
    let mut request = Vec::new();
    if s.rem_euclid(win.step) != 0 {
        request.push(RequestReason::NotAligned {
            start_interval_minutes: (win.step / localtime::MINUTE) as u32,
        });
    }
    if !inside_periods(&req.periods, s, e) {
        request.push(RequestReason::OutsideQueryPeriods);
    }
    if s < win.earliest {
        request.push(RequestReason::MinimumNotice {
            earliest_start_ms: win.earliest,
        });
    }
    if e - s != spec.duration {
        request.push(RequestReason::DurationMismatch {
            duration_minutes: (spec.duration / localtime::MINUTE) as u32,
        });
    }
    let members: BTreeSet<usize> = spec
        .groups
        .iter()
        .flat_map(|g| g.members.iter().copied())
        .collect();
    let parts: Vec<ParticipantReasons> = members
        .into_iter()
        .map(|m| {
            let mut reasons = Vec::new();
            participant_reasons(&participants[m], spec, s, e, &mut reasons);
            ParticipantReasons {
                participant: m,
                reasons,
            }
        })
        .collect();
    let free = |m: usize| {
        parts
            .binary_search_by_key(&m, |p| p.participant)
            .is_ok_and(|i| parts[i].reasons.is_empty())
    };
    let groups: Vec<GroupVerdict> = spec
        .groups
        .iter()
        .map(|g| {
            let mut available: Vec<usize> =
                g.members.iter().copied().filter(|&m| free(m)).collect();
            available.sort_unstable();
            let required = match g.required {
                Required::All => g.members.len(),
                Required::AtLeast(n) => n as usize,
            };
            GroupVerdict {
                satisfied: available.len() >= required,
                available,
                required,
            }
        })
        .collect();
    Explanation {
        available: request.is_empty() && groups.iter().all(|g| g.satisfied),
        request,
        groups,
        participants: parts,
    }
}

#[cfg(test)]
mod tests {
    use crate::availability::model::*;
    use crate::availability::{explain, query};
    use chrono::{DateTime, Weekday};

    fn utc(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis()
    }

    fn timed(id: u64, s: &str, e: &str) -> BusyInterval {
        BusyInterval {
            id,
            span: BusySpan::Timed {
                start_ms: utc(s),
                end_ms: utc(e),
            },
            status: BusyStatus::Busy,
        }
    }

    #[test]
    fn every_kind_of_reason_is_reported() {
        let tz: chrono_tz::Tz = "Europe/London".parse().unwrap();
        let hours = WorkingHours {
            weekly: vec![WeeklyRule {
                weekday: Weekday::Mon,
                range: LocalRange {
                    start_minute: 9 * 60,
                    end_minute: 17 * 60,
                },
            }],
            overrides: vec![],
        };
        // Monday 2024-06-03, London is UTC+1.
        let alice = ParticipantData::new(
            tz,
            vec![
                timed(7, "2024-06-03T08:00:00Z", "2024-06-03T08:30:00Z"),
                timed(8, "2024-06-03T09:40:00Z", "2024-06-03T10:00:00Z"),
                timed(9, "2024-06-03T12:00:00Z", "2024-06-03T13:00:00Z"),
            ],
            Some(hours),
        )
        .with_caps(3, 0);
        let bob = ParticipantData::new(chrono_tz::UTC, vec![], None);
        let req = Request {
            groups: vec![Group {
                members: vec![0, 1],
                required: Required::AtLeast(1),
            }],
            duration_minutes: 30,
            periods: vec![Period {
                start_ms: utc("2024-06-03T00:00:00Z"),
                end_ms: utc("2024-06-04T00:00:00Z"),
            }],
            buffer_before_minutes: 15,
            buffer_after_minutes: 15,
            minimum_notice_minutes: 60,
            ..Request::default()
        };
        let now = utc("2024-06-03T08:00:00Z");
        let x = explain(
            &req,
            &[alice, bob],
            now,
            utc("2024-06-03T07:50:00Z"),
            utc("2024-06-03T09:30:00Z"),
        )
        .unwrap();
        assert_eq!(
            x.request,
            vec![
                RequestReason::NotAligned {
                    start_interval_minutes: 15
                },
                RequestReason::MinimumNotice {
                    earliest_start_ms: utc("2024-06-03T09:00:00Z")
                },
                RequestReason::DurationMismatch {
                    duration_minutes: 30
                },
            ]
        );
        assert_eq!(
            x.participants[0].reasons,
            vec![
                Reason::BusyEvent {
                    id: 7,
                    start_ms: utc("2024-06-03T08:00:00Z"),
                    end_ms: utc("2024-06-03T08:30:00Z"),
                },
                Reason::Buffer { id: 8 },
                Reason::OutsideWorkingHours,
                Reason::DailyCap {
                    date: "2024-06-03".parse().unwrap(),
                    count: 3,
                    max: 3,
                },
            ]
        );
        assert!(x.participants[1].reasons.is_empty());
        assert_eq!(x.groups[0].available, vec![1]);
        assert!(x.groups[0].satisfied);
        assert!(!x.available);
    }

    #[test]
    fn an_offered_slot_has_no_reasons_and_a_blocked_one_names_the_event() {
        let p = ParticipantData::new(
            chrono_tz::UTC,
            vec![timed(42, "2024-06-03T10:00:00Z", "2024-06-03T11:00:00Z")],
            None,
        );
        let req = Request {
            groups: vec![Group {
                members: vec![0],
                required: Required::All,
            }],
            duration_minutes: 60,
            periods: vec![Period {
                start_ms: utc("2024-06-03T09:00:00Z"),
                end_ms: utc("2024-06-03T12:00:00Z"),
            }],
            format: Format::OverlappingSlots,
            ..Request::default()
        };
        let ps = [p];
        let now = 0;
        let answer = query(&req, &ps, now).unwrap();
        for s in &answer.slots {
            let x = explain(&req, &ps, now, s.start_ms, s.end_ms).unwrap();
            assert!(x.available, "{x:?}");
        }
        let x = explain(
            &req,
            &ps,
            now,
            utc("2024-06-03T09:30:00Z"),
            utc("2024-06-03T10:30:00Z"),
        )
        .unwrap();
        assert!(!x.available);
        assert_eq!(x.participants[0].reasons.len(), 1);
        assert!(matches!(
            x.participants[0].reasons[0],
            Reason::BusyEvent { id: 42, .. }
        ));
        let x = explain(
            &req,
            &ps,
            now,
            utc("2024-06-03T11:30:00Z"),
            utc("2024-06-03T12:30:00Z"),
        )
        .unwrap();
        assert_eq!(x.request, vec![RequestReason::OutsideQueryPeriods]);
    }
}
