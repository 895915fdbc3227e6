//! The three availability queries: slots or periods, sequences, and the
//! explanation of why a time is not offered.

use super::*;
use crate::ids::TenantId;

pub(super) fn engine_errors(errors: Vec<engine::FieldError>) -> ErrorKind {
    let mut inv = Invalid::default();
    for e in errors {
        inv.push(e.field, e.message);
    }
    ErrorKind::Invalid(inv)
}

pub(super) fn slot_pb(g: &Gathered, s: &engine::Slot) -> pb::AvailableSlot {
    pb::AvailableSlot {
        start: ts(s.start_ms),
        end: ts(s.end_ms),
        available_account_ids: s
            .available
            .iter()
            .map(|&p| g.built[p].account_id.to_string())
            .collect(),
    }
}

pub(super) fn format_of(f: i32) -> engine::Format {
    match pb::AvailabilityFormat::try_from(f) {
        Ok(pb::AvailabilityFormat::Periods) => engine::Format::Periods,
        Ok(pb::AvailabilityFormat::OverlappingSlots) => engine::Format::OverlappingSlots,
        _ => engine::Format::Slots,
    }
}

/// Builds the engine request and its inputs for a query (freshness not yet
/// read: see [`Gathered::run`]).
pub(super) fn prepare(
    shared: &Shared,
    tenant: &TenantId,
    req: &pb::QueryAvailabilityRequest,
) -> Result<(engine::Request, Gathered), ErrorKind> {
    let mut inv = Invalid::default();
    check_sizes(
        &mut inv,
        req.periods.len(),
        req.groups
            .iter()
            .enumerate()
            .map(|(i, g)| (format!("groups[{i}]"), g)),
    );
    inv.into_result().map_err(ErrorKind::from)?;
    let mut inv = Invalid::default();
    let periods = periods(&mut inv, "periods", &req.periods);
    inv.into_result().map_err(ErrorKind::from)?;
    if req.groups.is_empty() {
        return Err(Invalid::field("groups", "must have at least one group").into());
    }
    let mut b = Builder::new(shared, tenant, &periods)?;
    b.index
        .reserve(req.groups.iter().map(|g| g.members.len()).sum());
    let mut groups = Vec::new();
    for (i, g) in req.groups.iter().enumerate() {
        groups.push(b.group(&format!("groups[{i}]"), g)?);
    }
    let gathered = b.finish()?;
    Ok((
        engine::Request {
            groups,
            duration_minutes: req.duration_minutes,
            periods,
            buffer_before_minutes: req.buffer_before_minutes,
            buffer_after_minutes: req.buffer_after_minutes,
            start_interval_minutes: req.start_interval_minutes,
            minimum_notice_minutes: req.minimum_notice_minutes,
            max_results: req.max_results,
            tentative_is_busy: req.tentative_is_busy,
            format: format_of(req.format),
        },
        gathered,
    ))
}

/// Answers `QueryAvailability`.
pub fn query(
    shared: &Shared,
    tenant: &TenantId,
    req: &pb::QueryAvailabilityRequest,
) -> Result<pb::QueryAvailabilityResponse, ErrorKind> {
    let (request, mut g) = prepare(shared, tenant, req)?;
    let now = now_ms();
    let answer = g
        .run(req.max_staleness_seconds, |p| {
            engine::query(&request, p, now)
        })?
        .map_err(engine_errors)?;
    Ok(pb::QueryAvailabilityResponse {
        slots: answer.slots.iter().map(|s| slot_pb(&g, s)).collect(),
        freshness: g.freshness,
    })
}

/// Answers `QuerySequencedAvailability`.
pub fn sequences(
    shared: &Shared,
    tenant: &TenantId,
    req: &pb::QuerySequencedAvailabilityRequest,
) -> Result<pb::QuerySequencedAvailabilityResponse, ErrorKind> {
    let mut inv = Invalid::default();
    if req.steps.len() > engine::Limits::default().max_steps {
        inv.push(
            "steps",
            format!(
                "must have at most {} steps",
                engine::Limits::default().max_steps
            ),
        );
    }
    inv.into_result().map_err(ErrorKind::from)?;
    let mut inv = Invalid::default();
    check_sizes(
        &mut inv,
        req.periods.len(),
        req.steps.iter().enumerate().flat_map(|(i, s)| {
            s.groups
                .iter()
                .enumerate()
                .map(move |(j, g)| (format!("steps[{i}].groups[{j}]"), g))
        }),
    );
    inv.into_result().map_err(ErrorKind::from)?;
    let mut inv = Invalid::default();
    let periods = periods(&mut inv, "periods", &req.periods);
    if req.steps.is_empty() {
        inv.push("steps", "must have at least one step");
    }
    inv.into_result().map_err(ErrorKind::from)?;
    let mut b = Builder::new(shared, tenant, &periods)?;
    let mut steps = Vec::new();
    for (i, s) in req.steps.iter().enumerate() {
        let mut groups = Vec::new();
        for (j, g) in s.groups.iter().enumerate() {
            groups.push(b.group(&format!("steps[{i}].groups[{j}]"), g)?);
        }
        steps.push(engine::SequenceStep {
            groups,
            duration_minutes: s.duration_minutes,
            buffer_before_minutes: s.buffer_before_minutes,
            buffer_after_minutes: s.buffer_after_minutes,
            min_gap_minutes: s.min_gap_minutes,
            max_gap_minutes: s.max_gap_minutes,
        });
    }
    let mut g = b.finish()?;
    let request = engine::SequenceRequest {
        steps,
        periods,
        start_interval_minutes: req.start_interval_minutes,
        minimum_notice_minutes: req.minimum_notice_minutes,
        max_results: req.max_results,
        tentative_is_busy: req.tentative_is_busy,
    };
    let now = now_ms();
    let answer = g
        .run(req.max_staleness_seconds, |p| {
            engine::sequences(&request, p, now)
        })?
        .map_err(engine_errors)?;
    Ok(pb::QuerySequencedAvailabilityResponse {
        sequences: answer
            .sequences
            .iter()
            .map(|seq| pb::AvailableSequence {
                steps: seq.iter().map(|s| slot_pb(&g, s)).collect(),
            })
            .collect(),
        freshness: g.freshness,
    })
}

pub(super) fn blocker(reason: UnavailableReason) -> pb::Blocker {
    pb::Blocker {
        reason: reason as i32,
        ..Default::default()
    }
}

pub(super) fn window(start_ms: i64, end_ms: i64) -> Option<pb::TimeWindow> {
    Some(pb::TimeWindow {
        start: ts(start_ms),
        end: ts(end_ms),
    })
}

pub(super) fn source_blocker(
    g: &Gathered,
    participant: usize,
    reason: UnavailableReason,
    id: u64,
    interval: Option<pb::TimeWindow>,
) -> pb::Blocker {
    let mut b = blocker(reason);
    b.interval = interval;
    let built = &g.built[participant];
    match built.sources.get(id as usize) {
        Some(&Source::Event { calendar, index }) => {
            let Consulted {
                id: calendar_id,
                timeline,
                ..
            } = &built.calendars[calendar as usize];
            b.calendar_id = calendar_id.to_string();
            b.provider_event_id = timeline.entries[index as usize].provider_event_id.clone();
        }
        Some(&Source::Hold(h)) => b.hold_id = built.holds[h as usize].hold_id.clone(),
        None => {}
    }
    b
}

/// Answers `ExplainAvailability`.
pub fn explain(
    shared: &Shared,
    tenant: &TenantId,
    req: &pb::ExplainAvailabilityRequest,
) -> Result<pb::ExplainAvailabilityResponse, ErrorKind> {
    let Some(query) = &req.query else {
        return Err(Invalid::field("query", "must be set").into());
    };
    let mut inv = Invalid::default();
    let slot = calbridge::validate::check_window(&mut inv, "slot", req.slot.as_ref());
    inv.into_result().map_err(ErrorKind::from)?;
    let (start, end) = slot.expect("validated");
    let (request, mut g) = prepare(shared, tenant, query)?;
    let now = now_ms();
    let e = g
        .run(query.max_staleness_seconds, |p| {
            engine::explain(
                &request,
                p,
                now,
                start.timestamp_millis(),
                end.timestamp_millis(),
            )
        })?
        .map_err(engine_errors)?;
    let request_blockers = e
        .request
        .iter()
        .map(|r| match r {
            engine::RequestReason::NotAligned {
                start_interval_minutes,
            } => pb::Blocker {
                detail: format!(
                    "starts are on a {start_interval_minutes}-minute grid from 00:00 UTC"
                ),
                ..blocker(UnavailableReason::NotAligned)
            },
            engine::RequestReason::OutsideQueryPeriods => {
                blocker(UnavailableReason::OutsidePeriods)
            }
            engine::RequestReason::MinimumNotice { earliest_start_ms } => pb::Blocker {
                detail: format!(
                    "earliest allowed start is {}",
                    chrono::DateTime::from_timestamp_millis(*earliest_start_ms)
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_default()
                ),
                ..blocker(UnavailableReason::MinimumNotice)
            },
            engine::RequestReason::DurationMismatch { duration_minutes } => pb::Blocker {
                detail: format!("the slot must be {duration_minutes} minutes long"),
                ..blocker(UnavailableReason::DurationMismatch)
            },
        })
        .collect();
    let participants = e
        .participants
        .iter()
        .map(|p| pb::ParticipantExplanation {
            account_id: g.built[p.participant].account_id.to_string(),
            available: p.reasons.is_empty(),
            blockers: p
                .reasons
                .iter()
                .map(|r| match r {
                    engine::Reason::BusyEvent {
                        id,
                        start_ms,
                        end_ms,
                    } => source_blocker(
                        &g,
                        p.participant,
                        UnavailableReason::BusyEvent,
                        *id,
                        window(*start_ms, *end_ms),
                    ),
                    engine::Reason::Buffer { id } => {
                        source_blocker(&g, p.participant, UnavailableReason::Buffer, *id, None)
                    }
                    engine::Reason::OutsideWorkingHours => {
                        blocker(UnavailableReason::OutsideWorkingHours)
                    }
                    engine::Reason::DailyCap { date, count, max } => pb::Blocker {
                        detail: format!("{count} events on {date}, at most {max} allowed"),
                        ..blocker(UnavailableReason::DailyCap)
                    },
                    engine::Reason::WeeklyCap {
                        week_start,
                        count,
                        max,
                    } => pb::Blocker {
                        detail: format!(
                            "{count} events in the week of {week_start}, at most {max} allowed"
                        ),
                        ..blocker(UnavailableReason::WeeklyCap)
                    },
                })
                .collect(),
        })
        .collect();
    Ok(pb::ExplainAvailabilityResponse {
        offered: e.available,
        request_blockers,
        participants,
    })
}
