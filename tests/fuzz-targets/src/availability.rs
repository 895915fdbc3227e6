//! Availability requests: a `QueryAvailability`, `QuerySequencedAvailability`
//! or `ExplainAvailability` request decoded from arbitrary bytes, put
//! through the scheduler's request checks (periods, member ids, inline
//! working hours via `meetings::convert_hours`) and then the availability
//! engine (whose own validation runs first), with busy intervals that come
//! in the same input instead of from the mirror.
//!
//! The scheduler's `meetings::query` reads participants from its store, so
//! the way it builds the engine's request is repeated here (see `prepare`
//! and `Builder` in `services/scheduler/src/meetings.rs`); stored working
//! hours (`working_hours_id`) are never found.

use std::collections::HashMap;

use calbridge::time::from_timestamp;
use calbridge::validate::{check_id, check_window};
use calbridge::{limits, pb, Invalid};
use calbridge_scheduler::availability as engine;
use calbridge_scheduler::meetings::convert_hours;
use chrono_tz::Tz;
use prost::Message;

/// One fuzz input: the requests to answer and the busy intervals of the
/// accounts they name.
#[derive(Clone, PartialEq, Message)]
pub struct AvailabilityCase {
    /// A `QueryAvailability` request.
    #[prost(message, optional, tag = "1")]
    pub query: Option<pb::QueryAvailabilityRequest>,
    /// A `QuerySequencedAvailability` request.
    #[prost(message, optional, tag = "2")]
    pub sequenced: Option<pb::QuerySequencedAvailabilityRequest>,
    /// An `ExplainAvailability` request.
    #[prost(message, optional, tag = "3")]
    pub explain: Option<pb::ExplainAvailabilityRequest>,
    /// Busy intervals by account (an interval whose calendar id starts with
    /// `all-day` stands for the dates of its start and end).
    #[prost(message, repeated, tag = "4")]
    pub busy: Vec<pb::AccountFreeBusy>,
}

/// One input, an encoded [`AvailabilityCase`].
pub fn availability(data: &[u8]) {
    let Ok(case) = AvailabilityCase::decode(data) else {
        return;
    };
    let now_ms = crate::now().timestamp_millis();
    if let Some(q) = &case.query {
        if let Some((req, participants)) = query_request(&case, q) {
            let _ = engine::query(&req, &participants, now_ms);
        }
    }
    if let Some(s) = &case.sequenced {
        if let Some((req, participants)) = sequence_request(&case, s) {
            let _ = engine::sequences(&req, &participants, now_ms);
        }
    }
    if let Some(e) = &case.explain {
        let mut inv = Invalid::default();
        let slot = check_window(&mut inv, "slot", e.slot.as_ref());
        if let (Some(q), Some((s, en))) = (&e.query, slot) {
            if let Some((req, participants)) = query_request(&case, q) {
                let _ = engine::explain(
                    &req,
                    &participants,
                    now_ms,
                    s.timestamp_millis(),
                    en.timestamp_millis(),
                );
            }
        }
    }
}

fn periods(inv: &mut Invalid, windows: &[pb::TimeWindow]) -> Vec<engine::Period> {
    let mut out = Vec::new();
    for (i, w) in windows.iter().enumerate() {
        if let Some((s, e)) = check_window(inv, &format!("periods[{i}]"), Some(w)) {
            out.push(engine::Period {
                start_ms: s.timestamp_millis(),
                end_ms: e.timestamp_millis(),
            });
        }
    }
    out
}

fn format_of(f: i32) -> engine::Format {
    match pb::AvailabilityFormat::try_from(f) {
        Ok(pb::AvailabilityFormat::Periods) => engine::Format::Periods,
        Ok(pb::AvailabilityFormat::OverlappingSlots) => engine::Format::OverlappingSlots,
        _ => engine::Format::Slots,
    }
}

fn query_request(
    case: &AvailabilityCase,
    q: &pb::QueryAvailabilityRequest,
) -> Option<(engine::Request, Vec<engine::ParticipantData>)> {
    let mut inv = Invalid::default();
    let periods = periods(&mut inv, &q.periods);
    if !inv.0.is_empty() || q.groups.is_empty() {
        return None;
    }
    let mut b = Builder::new(case);
    let groups = q
        .groups
        .iter()
        .enumerate()
        .map(|(i, g)| b.group(&format!("groups[{i}]"), g))
        .collect();
    let participants = b.finish()?;
    Some((
        engine::Request {
            groups,
            duration_minutes: q.duration_minutes,
            periods,
            buffer_before_minutes: q.buffer_before_minutes,
            buffer_after_minutes: q.buffer_after_minutes,
            start_interval_minutes: q.start_interval_minutes,
            minimum_notice_minutes: q.minimum_notice_minutes,
            max_results: q.max_results,
            tentative_is_busy: q.tentative_is_busy,
            format: format_of(q.format),
        },
        participants,
    ))
}

fn sequence_request(
    case: &AvailabilityCase,
    s: &pb::QuerySequencedAvailabilityRequest,
) -> Option<(engine::SequenceRequest, Vec<engine::ParticipantData>)> {
    let mut inv = Invalid::default();
    let periods = periods(&mut inv, &s.periods);
    if !inv.0.is_empty() || s.steps.is_empty() {
        return None;
    }
    let mut b = Builder::new(case);
    let mut steps = Vec::new();
    for (i, step) in s.steps.iter().enumerate() {
        let groups = step
            .groups
            .iter()
            .enumerate()
            .map(|(j, g)| b.group(&format!("steps[{i}].groups[{j}]"), g))
            .collect();
        steps.push(engine::SequenceStep {
            groups,
            duration_minutes: step.duration_minutes,
            buffer_before_minutes: step.buffer_before_minutes,
            buffer_after_minutes: step.buffer_after_minutes,
            min_gap_minutes: step.min_gap_minutes,
            max_gap_minutes: step.max_gap_minutes,
        });
    }
    let participants = b.finish()?;
    Some((
        engine::SequenceRequest {
            steps,
            periods,
            start_interval_minutes: s.start_interval_minutes,
            minimum_notice_minutes: s.minimum_notice_minutes,
            max_results: s.max_results,
            tentative_is_busy: s.tentative_is_busy,
        },
        participants,
    ))
}

/// Builds the engine's participants from the members of the groups, one
/// per account id, collecting the members' field violations.
struct Builder<'a> {
    case: &'a AvailabilityCase,
    invalid: Invalid,
    index: HashMap<&'a str, usize>,
    participants: Vec<engine::ParticipantData>,
}

impl<'a> Builder<'a> {
    fn new(case: &'a AvailabilityCase) -> Self {
        Builder {
            case,
            invalid: Invalid::default(),
            index: HashMap::new(),
            participants: Vec::new(),
        }
    }

    fn group(&mut self, path: &str, g: &'a pb::ParticipantGroup) -> engine::Group {
        let members = g
            .members
            .iter()
            .enumerate()
            .filter_map(|(i, m)| self.member(&format!("{path}.members[{i}]"), m))
            .collect();
        engine::Group {
            members,
            required: match g.required {
                0 => engine::Required::All,
                n => engine::Required::AtLeast(n),
            },
        }
    }

    fn member(&mut self, path: &str, m: &'a pb::AvailabilityMember) -> Option<usize> {
        let before = self.invalid.0.len();
        check_id(
            &mut self.invalid,
            &format!("{path}.account_id"),
            &m.account_id,
            limits::MAX_ID_BYTES,
        );
        if self.invalid.0.len() > before {
            return None;
        }
        if let Some(&p) = self.index.get(m.account_id.as_str()) {
            return Some(p);
        }
        let (zone, hours) = if !m.working_hours_id.is_empty() {
            self.invalid.push(
                format!("{path}.working_hours_id"),
                "names no stored working hours (PutWorkingHours first)",
            );
            return None;
        } else if let Some(h) = &m.working_hours {
            match convert_hours(&format!("{path}.working_hours"), h) {
                Ok((tz, wh)) => (tz, Some(wh)),
                Err(inv) => {
                    self.invalid.0.extend(inv.0);
                    return None;
                }
            }
        } else {
            (Tz::UTC, None)
        };
        let busy = self.busy(&m.account_id);
        let p = self.participants.len();
        self.participants.push(
            engine::ParticipantData::new(zone, busy, hours)
                .with_caps(m.max_events_per_day, m.max_events_per_week),
        );
        self.index.insert(&m.account_id, p);
        Some(p)
    }

    /// The busy intervals the input gives for `account`.
    fn busy(&self, account: &str) -> Vec<engine::BusyInterval> {
        let Some(fb) = self.case.busy.iter().find(|b| b.account_id == account) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for b in &fb.busy {
            let status = match pb::BusyStatus::try_from(b.status) {
                Ok(pb::BusyStatus::Busy) => engine::BusyStatus::Busy,
                Ok(pb::BusyStatus::Tentative) => engine::BusyStatus::Tentative,
                Ok(pb::BusyStatus::OutOfOffice) => engine::BusyStatus::OutOfOffice,
                _ => continue,
            };
            let (Some(s), Some(e)) = (
                b.start.as_ref().and_then(from_timestamp),
                b.end.as_ref().and_then(from_timestamp),
            ) else {
                continue;
            };
            let span = if b.calendar_id.starts_with("all-day") {
                engine::BusySpan::AllDay {
                    start: s.date_naive(),
                    end: e.date_naive(),
                }
            } else {
                engine::BusySpan::Timed {
                    start_ms: s.timestamp_millis(),
                    end_ms: e.timestamp_millis(),
                }
            };
            out.push(engine::BusyInterval {
                id: out.len() as u64,
                span,
                status,
            });
        }
        out
    }

    /// The participants, or `None` when a member was refused.
    fn finish(self) -> Option<Vec<engine::ParticipantData>> {
        self.invalid.0.is_empty().then_some(self.participants)
    }
}
