//! The availability engine: given participant groups, their busy intervals
//! (already read from the mirror), working hours in their own zones, caps,
//! buffers, a grid and query periods, it proposes meeting slots, merged free
//! periods or sequences of slots, and explains why a slot is not offered.
//! Pure: no I/O, no clock (the caller passes `now`), no proto types.
//!
//! Semantics in one place:
//! - Slot starts lie on multiples of the start interval counted from
//!   1970-01-01T00:00:00Z (UTC), whatever the participants' zones.
//! - A participant is free for `[s, e)` when it lies inside their working
//!   hours (everywhere when they have none), overlaps no blocking busy
//!   interval widened by the buffers (`[start - before, end + after)`), and
//!   touches no local day (or ISO week) on which they already have at least
//!   the capped number of blocking events (counted by local start day).
//!   Busy and out-of-office always block, tentative when the request says
//!   so, free never. All-day intervals block local midnight to midnight in
//!   the participant's zone. Tentative holds are passed as ordinary busy
//!   intervals.
//! - A slot is offered when it lies in the union of the query periods,
//!   starts at or after `now + minimum notice`, and every group has at least
//!   its required count of members free for the whole slot.
//! - DST: see [`WorkingHours`] (gap → first instant after it; overlap →
//!   earlier instant for starts, later for ends).

mod engine;
mod explain;
mod hours;
mod localtime;
mod memo;
mod model;
pub mod reference;
mod sequence;
mod validate;

pub use hours::working_hours_utc;
pub use localtime::{local_to_utc, Edge};
pub use model::{
    Answer, BusyInterval, BusySpan, BusyStatus, DateOverride, Explanation, Format, Group,
    GroupVerdict, LocalRange, ParticipantData, ParticipantReasons, Period, Reason, Request,
    RequestReason, Required, SequenceAnswer, SequenceRequest, SequenceStep, Slot, WeeklyRule,
    WorkingHours,
};
pub use validate::{FieldError, Limits};

/// Answers `req` for `participants` (indexed by the groups' members) at
/// instant `now_ms`, under the default [`Limits`].
pub fn query(
    req: &Request,
    participants: &[ParticipantData],
    now_ms: i64,
) -> Result<Answer, Vec<FieldError>> {
    query_with_limits(req, participants, now_ms, &Limits::default())
}

/// [`query`] under explicit limits.
pub fn query_with_limits(
    req: &Request,
    participants: &[ParticipantData],
    now_ms: i64,
    limits: &Limits,
) -> Result<Answer, Vec<FieldError>> {
    let (win, spec) = validate::request(req, participants, now_ms, limits)?;
    let ctx = engine::Context::new(participants, req.groups.iter(), win.search.clone());
    Ok(Answer {
        slots: engine::query(&ctx, &win, &spec, req.format),
    })
}

/// Explains whether and why `[start_ms, end_ms)` is (not) offered for `req`.
pub fn explain(
    req: &Request,
    participants: &[ParticipantData],
    now_ms: i64,
    start_ms: i64,
    end_ms: i64,
) -> Result<Explanation, Vec<FieldError>> {
    let (win, spec) = validate::request(req, participants, now_ms, &Limits::default())?;
    if end_ms <= start_ms {
        return Err(vec![FieldError {
            field: "slot.end".into(),
            message: "must be after start".into(),
        }]);
    }
    Ok(explain::explain(
        req,
        &win,
        &spec,
        participants,
        start_ms,
        end_ms,
    ))
}

/// Proposes sequences of slots for the steps of `req`, under the default
/// [`Limits`].
pub fn sequences(
    req: &SequenceRequest,
    participants: &[ParticipantData],
    now_ms: i64,
) -> Result<SequenceAnswer, Vec<FieldError>> {
    let limits = Limits::default();
    let (win, specs) = validate::sequence(req, participants, now_ms, &limits)?;
    let groups = req.steps.iter().flat_map(|s| s.groups.iter());
    let ctx = engine::Context::new(participants, groups, win.search.clone());
    Ok(SequenceAnswer {
        sequences: sequence::run(&ctx, &win, &specs),
    })
}

/// A deterministic benchmark scenario: `participants` people in eight zones
/// (London, New York, Berlin, Kathmandu, Lord Howe, Los Angeles, Tokyo,
/// Kolkata), Monday–Friday working hours (09–17, 08–16 or 10–18 local, some
/// with a day off), about 8 events per working day between 07:00 and 20:00
/// local (10% tentative, the odd all-day out-of-office), a daily cap of 9
/// on every fifth person; groups: the first three all required, everyone
/// else two-of-N; 30-minute slots on a 15-minute grid over the four weeks
/// from Monday 2025-03-03 (US and EU DST changes included), 10-minute
/// buffers, one hour notice. Returns the request, the participants and
/// `now`.
#[doc(hidden)]
pub fn scenario(participants: usize, seed: u64) -> (Request, Vec<ParticipantData>, i64) {
    use chrono::{Duration, NaiveDate, Weekday};
    let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
    let mut next = move |n: u64| {
        // splitmix64
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n
    };
    let zones: [chrono_tz::Tz; 8] = [
        chrono_tz::Europe::London,
        chrono_tz::America::New_York,
        chrono_tz::Europe::Berlin,
        chrono_tz::Asia::Kathmandu,
        chrono_tz::Australia::Lord_Howe,
        chrono_tz::America::Los_Angeles,
        chrono_tz::Asia::Tokyo,
        chrono_tz::Asia::Kolkata,
    ];
    let first = NaiveDate::from_ymd_opt(2025, 3, 3).unwrap_or_default();
    let days = 28i64;
    let now = first
        .and_time(chrono::NaiveTime::MIN)
        .and_utc()
        .timestamp_millis();
    let weekdays = [
        Weekday::Mon,
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
    ];
    let mut id = 0u64;
    let people = (0..participants)
        .map(|i| {
            let tz = zones[i % zones.len()];
            let (h0, h1) = [(9, 17), (8, 16), (10, 18)][(i / zones.len()) % 3];
            let hours = WorkingHours {
                weekly: weekdays
                    .iter()
                    .map(|&weekday| WeeklyRule {
                        weekday,
                        range: LocalRange {
                            start_minute: h0 * 60,
                            end_minute: h1 * 60,
                        },
                    })
                    .collect(),
                overrides: if i % 7 == 3 {
                    vec![DateOverride {
                        date: first + Duration::days(10),
                        ranges: vec![],
                    }]
                } else {
                    vec![]
                },
            };
            let mut busy = Vec::new();
            for day in -7..=days {
                let date = first + Duration::days(day);
                let weekend = matches!(
                    chrono::Datelike::weekday(&date),
                    Weekday::Sat | Weekday::Sun
                );
                if !weekend && next(50) == 0 {
                    id += 1;
                    busy.push(BusyInterval {
                        id,
                        span: BusySpan::AllDay {
                            start: date,
                            end: date + Duration::days(1),
                        },
                        status: BusyStatus::OutOfOffice,
                    });
                    continue;
                }
                let n = if weekend { next(2) } else { 6 + next(5) };
                for _ in 0..n {
                    let start = date.and_time(chrono::NaiveTime::MIN)
                        + Duration::minutes(7 * 60 + 15 * next(13 * 4) as i64);
                    let minutes = [15, 30, 45, 60, 90][next(5) as usize];
                    let s = local_to_utc(tz, start, Edge::Start);
                    id += 1;
                    busy.push(BusyInterval {
                        id,
                        span: BusySpan::Timed {
                            start_ms: s,
                            end_ms: s + minutes * 60_000,
                        },
                        status: if next(10) == 0 {
                            BusyStatus::Tentative
                        } else {
                            BusyStatus::Busy
                        },
                    });
                }
            }
            let p = ParticipantData::new(tz, busy, Some(hours));
            if i % 5 == 4 {
                p.with_caps(9, 0)
            } else {
                p
            }
        })
        .collect();
    let mut groups = vec![Group {
        members: (0..participants.min(3)).collect(),
        required: Required::All,
    }];
    if participants > 4 {
        groups.push(Group {
            members: (3..participants).collect(),
            required: Required::AtLeast(2),
        });
    }
    let req = Request {
        groups,
        duration_minutes: 30,
        periods: vec![Period {
            start_ms: now,
            end_ms: now + days * 86_400_000,
        }],
        buffer_before_minutes: 10,
        buffer_after_minutes: 10,
        start_interval_minutes: 15,
        minimum_notice_minutes: 60,
        max_results: 0,
        tentative_is_busy: true,
        format: Format::Slots,
    };
    (req, people, now)
}

#[cfg(test)]
mod tests;
