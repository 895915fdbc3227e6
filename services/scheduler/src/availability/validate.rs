//! Request validation: the limits a request must respect and the
//! field-level errors (named like the proto fields, e.g. `periods[1].start`)
//! returned when it does not, plus the normalised form (ms, defaults
//! applied, periods merged and clipped to the minimum notice) the engine
//! runs on.

use super::localtime::MINUTE;
use super::model::{Group, ParticipantData, Period, Request, Required, SequenceRequest};

/// Limits on requests; [`Limits::default`] documents each default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Longest duration, minutes (default 1440).
    pub max_duration_minutes: u32,
    /// Largest start interval, minutes (default 1440).
    pub max_start_interval_minutes: u32,
    /// Start interval used when the request says 0 (default 15).
    pub default_start_interval_minutes: u32,
    /// Largest buffer, minutes (default 1440).
    pub max_buffer_minutes: u32,
    /// Largest total span of the query periods, days (default 35).
    pub max_total_span_days: u32,
    /// Most members over all groups of a request or of a sequence step
    /// (default 2,000).
    pub max_members: usize,
    /// Result count used when the request says 0 (default 100).
    pub default_results: u32,
    /// Most results (default 1,000).
    pub max_results: u32,
    /// Most steps in a sequence (default 10).
    pub max_steps: usize,
    /// Largest gap between sequence steps, minutes (default 10,080, a week).
    pub max_gap_minutes: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_duration_minutes: 1440,
            max_start_interval_minutes: 1440,
            default_start_interval_minutes: 15,
            max_buffer_minutes: 1440,
            max_total_span_days: 35,
            max_members: 2000,
            default_results: 100,
            max_results: 1000,
            max_steps: 10,
            max_gap_minutes: 10_080,
        }
    }
}

/// One invalid field: its proto-like path and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The path, e.g. `groups[0].members[2]`.
    pub field: String,
    /// What is wrong, in lowercase prose.
    pub message: String,
}

struct Errors(Vec<FieldError>);

impl Errors {
    fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }
}

/// What every format and step shares once validated.
#[derive(Debug, Clone)]
pub(crate) struct Window {
    /// Grid step, ms.
    pub step: i64,
    /// Result limit.
    pub max_results: usize,
    /// The union of the periods, merged, clipped to `>= earliest`.
    pub search: Vec<(i64, i64)>,
    /// now + minimum notice, ms.
    pub earliest: i64,
}

/// One validated search (a request, or one sequence step).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spec<'a> {
    pub groups: &'a [Group],
    pub duration: i64,
    pub before: i64,
    pub after: i64,
    pub tentative_is_busy: bool,
}

fn minutes(m: u32) -> i64 {
    i64::from(m) * MINUTE
}

fn window(
    periods: &[Period],
    start_interval_minutes: u32,
    minimum_notice_minutes: u32,
    max_results: u32,
    now_ms: i64,
    limits: &Limits,
    errs: &mut Errors,
) -> Window {
    let step_minutes = match start_interval_minutes {
        0 => limits.default_start_interval_minutes,
        m if m > limits.max_start_interval_minutes => {
            errs.push(
                "start_interval_minutes",
                format!(
                    "must be between 1 and {}",
                    limits.max_start_interval_minutes
                ),
            );
            1
        }
        m => m,
    };
    let max_results = match max_results {
        0 => limits.default_results,
        m if m > limits.max_results => {
            errs.push(
                "max_results",
                format!("must be at most {}", limits.max_results),
            );
            limits.max_results
        }
        m => m,
    };
    if periods.is_empty() {
        errs.push("periods", "at least one period is required");
    }
    let mut total: i64 = 0;
    for (i, p) in periods.iter().enumerate() {
        if p.end_ms <= p.start_ms {
            errs.push(format!("periods[{i}].end"), "must be after start");
        } else {
            total = total.saturating_add(p.end_ms - p.start_ms);
        }
        if i > 0 && p.start_ms < periods[i - 1].end_ms {
            errs.push(
                format!("periods[{i}].start"),
                format!(
                    "must not be before the end of periods[{}] (ordered, non-overlapping)",
                    i - 1
                ),
            );
        }
    }
    if total > i64::from(limits.max_total_span_days) * 1440 * MINUTE {
        errs.push(
            "periods",
            format!(
                "total span must be at most {} days",
                limits.max_total_span_days
            ),
        );
    }
    let earliest = now_ms.saturating_add(minutes(minimum_notice_minutes));
    let mut search: Vec<(i64, i64)> = Vec::with_capacity(periods.len());
    for p in periods {
        let (s, e) = (p.start_ms.max(earliest), p.end_ms);
        if s >= e {
            continue;
        }
        match search.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => search.push((s, e)),
        }
    }
    Window {
        step: minutes(step_minutes),
        max_results: max_results as usize,
        search,
        earliest,
    }
}

#[allow(clippy::too_many_arguments)]
fn spec<'a>(
    prefix: &str,
    groups: &'a [Group],
    duration_minutes: u32,
    buffer_before_minutes: u32,
    buffer_after_minutes: u32,
    tentative_is_busy: bool,
    participants: &[ParticipantData],
    limits: &Limits,
    errs: &mut Errors,
) -> Spec<'a> {
    if duration_minutes == 0 || duration_minutes > limits.max_duration_minutes {
        errs.push(
            format!("{prefix}duration_minutes"),
            format!("must be between 1 and {}", limits.max_duration_minutes),
        );
    }
    for (name, v) in [
        ("buffer_before_minutes", buffer_before_minutes),
        ("buffer_after_minutes", buffer_after_minutes),
    ] {
        if v > limits.max_buffer_minutes {
            errs.push(
                format!("{prefix}{name}"),
                format!("must be at most {}", limits.max_buffer_minutes),
            );
        }
    }
    if groups.is_empty() {
        errs.push(format!("{prefix}groups"), "at least one group is required");
    }
    let total: usize = groups.iter().map(|g| g.members.len()).sum();
    if total > limits.max_members {
        errs.push(
            format!("{prefix}groups"),
            format!("at most {} members in all, got {total}", limits.max_members),
        );
    }
    // seen[m] == i + 1: participant m already listed in group i.
    let mut seen = vec![0usize; participants.len()];
    for (i, g) in groups.iter().enumerate() {
        if g.members.is_empty() {
            errs.push(
                format!("{prefix}groups[{i}].members"),
                "at least one member is required",
            );
        }
        for (j, &m) in g.members.iter().enumerate() {
            if m >= participants.len() {
                errs.push(
                    format!("{prefix}groups[{i}].members[{j}]"),
                    format!("no participant {m} (there are {})", participants.len()),
                );
            } else if seen[m] == i + 1 {
                errs.push(
                    format!("{prefix}groups[{i}].members[{j}]"),
                    "duplicate member",
                );
            } else {
                seen[m] = i + 1;
            }
        }
        if let Required::AtLeast(n) = g.required {
            if n == 0 || n as usize > g.members.len() {
                errs.push(
                    format!("{prefix}groups[{i}].required"),
                    format!(
                        "must be between 1 and the member count ({})",
                        g.members.len()
                    ),
                );
            }
        }
    }
    Spec {
        groups,
        duration: minutes(duration_minutes),
        before: minutes(buffer_before_minutes),
        after: minutes(buffer_after_minutes),
        tentative_is_busy,
    }
}

fn check_range(field: impl FnOnce() -> String, start: u16, end: u16, errs: &mut Errors) {
    if start >= end || end > 1440 {
        errs.push(field(), "must satisfy start < end <= 1440 minutes");
    }
}

fn participants_ok<'a>(
    used: impl Iterator<Item = &'a Group>,
    participants: &[ParticipantData],
    errs: &mut Errors,
) {
    let mut done = vec![false; participants.len()];
    for g in used {
        for &m in &g.members {
            if m >= participants.len() || std::mem::replace(&mut done[m], true) {
                continue;
            }
            if participants[m].hours_valid() {
                continue;
            }
            let Some(h) = participants[m].working_hours() else {
                continue;
            };
            let path = || format!("participants[{m}].working_hours");
            for (j, r) in h.weekly.iter().enumerate() {
                check_range(
                    || format!("{}.weekly[{j}]", path()),
                    r.range.start_minute,
                    r.range.end_minute,
                    errs,
                );
            }
            // A repeated date is found in one pass (not by comparing each
            // override with every earlier one).
            let mut dates = std::collections::HashSet::with_capacity(h.overrides.len());
            for (j, o) in h.overrides.iter().enumerate() {
                if !dates.insert(o.date) {
                    errs.push(format!("{}.overrides[{j}].date", path()), "duplicate date");
                }
                for (k, r) in o.ranges.iter().enumerate() {
                    check_range(
                        || format!("{}.overrides[{j}].ranges[{k}]", path()),
                        r.start_minute,
                        r.end_minute,
                        errs,
                    );
                }
            }
        }
    }
}

/// Validates a request; on success returns the window and the spec.
pub(crate) fn request<'a>(
    req: &'a Request,
    participants: &[ParticipantData],
    now_ms: i64,
    limits: &Limits,
) -> Result<(Window, Spec<'a>), Vec<FieldError>> {
    let mut errs = Errors(Vec::new());
    let spec = spec(
        "",
        &req.groups,
        req.duration_minutes,
        req.buffer_before_minutes,
        req.buffer_after_minutes,
        req.tentative_is_busy,
        participants,
        limits,
        &mut errs,
    );
    let w = window(
        &req.periods,
        req.start_interval_minutes,
        req.minimum_notice_minutes,
        req.max_results,
        now_ms,
        limits,
        &mut errs,
    );
    participants_ok(req.groups.iter(), participants, &mut errs);
    if errs.0.is_empty() {
        Ok((w, spec))
    } else {
        Err(errs.0)
    }
}

/// Validates a sequence request; on success returns the window and one
/// spec per step plus each step's gap range in ms.
#[allow(clippy::type_complexity)]
pub(crate) fn sequence<'a>(
    req: &'a SequenceRequest,
    participants: &[ParticipantData],
    now_ms: i64,
    limits: &Limits,
) -> Result<(Window, Vec<(Spec<'a>, i64, i64)>), Vec<FieldError>> {
    let mut errs = Errors(Vec::new());
    if req.steps.is_empty() || req.steps.len() > limits.max_steps {
        errs.push(
            "steps",
            format!("between 1 and {} steps are required", limits.max_steps),
        );
    }
    let mut specs = Vec::with_capacity(req.steps.len());
    for (i, st) in req.steps.iter().enumerate() {
        let prefix = format!("steps[{i}].");
        let s = spec(
            &prefix,
            &st.groups,
            st.duration_minutes,
            st.buffer_before_minutes,
            st.buffer_after_minutes,
            req.tentative_is_busy,
            participants,
            limits,
            &mut errs,
        );
        if i > 0 {
            if st.max_gap_minutes > limits.max_gap_minutes {
                errs.push(
                    format!("{prefix}max_gap_minutes"),
                    format!("must be at most {}", limits.max_gap_minutes),
                );
            }
            if st.min_gap_minutes > st.max_gap_minutes {
                errs.push(
                    format!("{prefix}min_gap_minutes"),
                    "must not exceed max_gap_minutes",
                );
            }
        }
        specs.push((s, minutes(st.min_gap_minutes), minutes(st.max_gap_minutes)));
    }
    let w = window(
        &req.periods,
        req.start_interval_minutes,
        req.minimum_notice_minutes,
        req.max_results,
        now_ms,
        limits,
        &mut errs,
    );
    participants_ok(
        req.steps.iter().flat_map(|s| s.groups.iter()),
        participants,
        &mut errs,
    );
    if errs.0.is_empty() {
        Ok((w, specs))
    } else {
        Err(errs.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::availability::model::{LocalRange, WeeklyRule, WorkingHours};

    fn fields(r: Result<(Window, Spec<'_>), Vec<FieldError>>) -> Vec<String> {
        match r {
            Ok(_) => vec![],
            Err(e) => e.into_iter().map(|e| e.field).collect(),
        }
    }

    fn people(n: usize) -> Vec<ParticipantData> {
        (0..n)
            .map(|_| ParticipantData::new(chrono_tz::UTC, vec![], None))
            .collect()
    }

    fn ok_request() -> Request {
        Request {
            groups: vec![Group {
                members: vec![0, 1],
                required: Required::All,
            }],
            duration_minutes: 30,
            periods: vec![Period {
                start_ms: 0,
                end_ms: 86_400_000,
            }],
            ..Request::default()
        }
    }

    #[test]
    fn a_valid_request_applies_the_defaults() {
        let req = ok_request();
        let (w, s) = request(&req, &people(2), 0, &Limits::default()).unwrap();
        assert_eq!(w.step, 15 * MINUTE);
        assert_eq!(w.max_results, 100);
        assert_eq!(s.duration, 30 * MINUTE);
    }

    #[test]
    fn every_bad_field_is_named() {
        let mut req = ok_request();
        req.duration_minutes = 0;
        req.start_interval_minutes = 2000;
        req.max_results = 5000;
        req.buffer_before_minutes = 1441;
        req.periods = vec![
            Period {
                start_ms: 10,
                end_ms: 5,
            },
            Period {
                start_ms: 100,
                end_ms: 200,
            },
            Period {
                start_ms: 150,
                end_ms: 300,
            },
        ];
        req.groups.push(Group {
            members: vec![],
            required: Required::All,
        });
        req.groups.push(Group {
            members: vec![0, 0, 7],
            required: Required::AtLeast(4),
        });
        assert_eq!(
            fields(request(&req, &people(2), 0, &Limits::default())),
            vec![
                "duration_minutes",
                "buffer_before_minutes",
                "groups[1].members",
                "groups[2].members[1]",
                "groups[2].members[2]",
                "groups[2].required",
                "start_interval_minutes",
                "max_results",
                "periods[0].end",
                "periods[2].start",
            ]
        );
    }

    #[test]
    fn empty_groups_and_periods_are_rejected() {
        let req = Request {
            duration_minutes: 1441,
            ..Request::default()
        };
        assert_eq!(
            fields(request(&req, &people(0), 0, &Limits::default())),
            vec!["duration_minutes", "groups", "periods"]
        );
    }

    #[test]
    fn the_span_and_member_limits_apply() {
        let mut req = ok_request();
        req.periods = vec![Period {
            start_ms: 0,
            end_ms: 36 * 86_400_000,
        }];
        req.groups[0].members = (0..2001).collect();
        assert_eq!(
            fields(request(&req, &people(2001), 0, &Limits::default())),
            vec!["groups", "periods"]
        );
    }

    #[test]
    fn bad_working_hours_are_named_by_participant() {
        let req = ok_request();
        let mut ps = people(2);
        ps[1] = ParticipantData::new(
            chrono_tz::UTC,
            vec![],
            Some(WorkingHours {
                weekly: vec![WeeklyRule {
                    weekday: chrono::Weekday::Mon,
                    range: LocalRange {
                        start_minute: 600,
                        end_minute: 500,
                    },
                }],
                overrides: vec![],
            }),
        );
        assert_eq!(
            fields(request(&req, &ps, 0, &Limits::default())),
            vec!["participants[1].working_hours.weekly[0]"]
        );
    }

    /// Many distinct override dates (and one repeated at the end): the
    /// checks take milliseconds, where comparing each override with every
    /// earlier one took minutes (about 2·10^10 comparisons here).
    #[test]
    fn duplicate_override_dates_are_found_in_near_linear_time() {
        use crate::availability::model::DateOverride;
        let n = 200_000;
        let day0 = chrono::NaiveDate::from_ymd_opt(1000, 1, 1).unwrap();
        let mut overrides: Vec<DateOverride> = (0..n)
            .map(|i| DateOverride {
                date: day0 + chrono::Duration::days(i),
                ranges: vec![],
            })
            .collect();
        overrides.push(overrides[7].clone());
        let hours = WorkingHours {
            weekly: vec![],
            overrides,
        };
        let started = std::time::Instant::now();
        let req = ok_request();
        let mut ps = people(2);
        ps[1] = ParticipantData::new(chrono_tz::UTC, vec![], Some(hours));
        assert_eq!(
            fields(request(&req, &ps, 0, &Limits::default())),
            vec![format!("participants[1].working_hours.overrides[{n}].date")]
        );
        // Generous: the near-linear checks take well under a second even
        // unoptimised; the quadratic ones took minutes.
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn periods_are_merged_and_clipped_to_the_notice() {
        let mut req = ok_request();
        req.periods = vec![
            Period {
                start_ms: 0,
                end_ms: 100 * MINUTE,
            },
            Period {
                start_ms: 100 * MINUTE,
                end_ms: 200 * MINUTE,
            },
            Period {
                start_ms: 300 * MINUTE,
                end_ms: 400 * MINUTE,
            },
        ];
        req.minimum_notice_minutes = 50;
        let (w, _) = request(&req, &people(2), 0, &Limits::default()).unwrap();
        assert_eq!(
            w.search,
            vec![(50 * MINUTE, 200 * MINUTE), (300 * MINUTE, 400 * MINUTE)]
        );
    }
}
