//! The benchmark scenario over the API (the engine's deterministic
//! scenario as `QueryAvailability` requests), for the benches and tests.

use super::*;

/// The scenario of [`engine::scenario`] as a `QueryAvailability` request:
/// participant `i` becomes `member(i)` and the periods move by `shift_ms`
/// (whole weeks keep weekdays and local times). Shared by the scheduler's
/// timing test and the gRPC bench.
#[doc(hidden)]
pub fn scenario_request(
    req: &engine::Request,
    member: impl Fn(usize) -> pb::AvailabilityMember,
    shift_ms: i64,
) -> pb::QueryAvailabilityRequest {
    let at = |ms: i64| chrono::DateTime::from_timestamp_millis(ms + shift_ms).map(to_timestamp);
    pb::QueryAvailabilityRequest {
        groups: req
            .groups
            .iter()
            .map(|g| pb::ParticipantGroup {
                members: g.members.iter().map(|&i| member(i)).collect(),
                required: match g.required {
                    engine::Required::All => 0,
                    engine::Required::AtLeast(k) => k,
                },
            })
            .collect(),
        duration_minutes: req.duration_minutes,
        periods: req
            .periods
            .iter()
            .map(|p| pb::TimeWindow {
                start: at(p.start_ms),
                end: at(p.end_ms),
            })
            .collect(),
        buffer_before_minutes: req.buffer_before_minutes,
        buffer_after_minutes: req.buffer_after_minutes,
        start_interval_minutes: req.start_interval_minutes,
        minimum_notice_minutes: req.minimum_notice_minutes,
        tentative_is_busy: req.tentative_is_busy,
        format: pb::AvailabilityFormat::Slots as i32,
        max_results: req.max_results,
        max_staleness_seconds: 0,
    }
}

/// A scenario participant's working hours for `PutWorkingHours`, its date
/// overrides moved by `weeks`; `None` without working hours.
#[doc(hidden)]
pub fn scenario_hours(p: &engine::ParticipantData, weeks: i64) -> Option<pb::WorkingHours> {
    let h = p.working_hours()?;
    let hhmm = |m: u16| format!("{:02}:{:02}", m / 60, m % 60);
    Some(pb::WorkingHours {
        time_zone: p.time_zone().name().to_string(),
        weekly: h
            .weekly
            .iter()
            .map(|r| pb::WeeklyRule {
                weekday: r.weekday.number_from_monday(),
                start: hhmm(r.range.start_minute),
                end: hhmm(r.range.end_minute),
            })
            .collect(),
        overrides: h
            .overrides
            .iter()
            .map(|o| pb::DateOverride {
                date: (o.date + chrono::Duration::weeks(weeks))
                    .format("%Y-%m-%d")
                    .to_string(),
                ranges: o
                    .ranges
                    .iter()
                    .map(|r| pb::LocalRange {
                        start: hhmm(r.start_minute),
                        end: hhmm(r.end_minute),
                    })
                    .collect(),
            })
            .collect(),
    })
}
