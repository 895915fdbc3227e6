//! Availability over the mirror: turns `QueryAvailability`,
//! `QuerySequencedAvailability` and `ExplainAvailability` requests into the
//! pure engine's inputs (busy intervals from the time index, the tenant's live
//! holds, stored or inline working hours), runs the engine, and maps its
//! answers back. Also owns holds and stored working hours. No event content
//! is opened: the time index alone answers.

use std::collections::HashMap;
use std::sync::Arc;

use calbridge::pb::{self, UnavailableReason};
use calbridge::time::{from_timestamp, to_timestamp};
use calbridge::validate::check_id;
use calbridge::{limits, ErrorKind, Invalid};
use chrono::{NaiveDate, NaiveTime, Timelike, Weekday};
use chrono_tz::Tz;
use prost::Message;

use crate::availability as engine;
use crate::state::{now_ms, random_hex, store_err, ts_ms as ts, Shared, Timeline};
use crate::store::{AccountRecord, HoldRecord};

/// How far around the query periods busy time is read: a local week for
/// weekly caps plus a day for buffers and all-day events.
const READ_MARGIN_MS: i64 = 8 * 24 * 3600 * 1000;

/// What a busy interval handed to the engine stands for.
#[derive(Debug, Clone)]
enum Source {
    /// Entry `index` of a calendar's time line.
    Event {
        calendar_id: Arc<str>,
        timeline: Arc<Timeline>,
        index: usize,
    },
    Hold(String),
}

/// The engine's inputs gathered for one request.
struct Gathered {
    participants: Vec<engine::ParticipantData>,
    accounts: Vec<String>,
    sources: Vec<Source>,
    freshness: Vec<pb::CalendarFreshness>,
}

/// Maps `(group, member)` to participants, one participant per account (an
/// account that appears more than once uses its first occurrence's
/// calendars, working hours and caps).
struct Builder<'a> {
    shared: &'a Shared,
    tenant: &'a str,
    range: (i64, i64),
    now: i64,
    index: HashMap<String, usize>,
    out: Gathered,
    holds: Vec<HoldRecord>,
    invalid: Invalid,
}

impl<'a> Builder<'a> {
    fn new(
        shared: &'a Shared,
        tenant: &'a str,
        periods: &[engine::Period],
    ) -> Result<Self, ErrorKind> {
        let start = periods.iter().map(|p| p.start_ms).min().unwrap_or(0);
        let end = periods.iter().map(|p| p.end_ms).max().unwrap_or(0);
        let now = now_ms();
        let holds = shared
            .store
            .holds(tenant)
            .map_err(store_err)?
            .into_iter()
            .filter(|h| h.expires_ms > now)
            .collect();
        Ok(Builder {
            shared,
            tenant,
            range: (
                start.saturating_sub(READ_MARGIN_MS),
                end.saturating_add(READ_MARGIN_MS),
            ),
            now,
            index: HashMap::new(),
            out: Gathered {
                participants: Vec::new(),
                accounts: Vec::new(),
                sources: Vec::new(),
                freshness: Vec::new(),
            },
            holds,
            invalid: Invalid::default(),
        })
    }

    /// The engine group of a proto group at `path` (e.g. `groups[0]`).
    fn group(&mut self, path: &str, g: &pb::ParticipantGroup) -> Result<engine::Group, ErrorKind> {
        let mut members = Vec::with_capacity(g.members.len());
        for (i, m) in g.members.iter().enumerate() {
            if let Some(p) = self.member(&format!("{path}.members[{i}]"), m)? {
                members.push(p);
            }
        }
        Ok(engine::Group {
            members,
            required: match g.required {
                0 => engine::Required::All,
                n => engine::Required::AtLeast(n),
            },
        })
    }

    fn member(
        &mut self,
        path: &str,
        m: &pb::AvailabilityMember,
    ) -> Result<Option<usize>, ErrorKind> {
        let mut inv = Invalid::default();
        check_id(
            &mut inv,
            &format!("{path}.account_id"),
            &m.account_id,
            limits::MAX_ID_BYTES,
        );
        if !inv.0.is_empty() {
            self.invalid.0.extend(inv.0);
            return Ok(None);
        }
        if let Some(&p) = self.index.get(&m.account_id) {
            return Ok(Some(p));
        }
        let account = self.shared.tenant_account(self.tenant, &m.account_id)?;
        let Some((zone, hours)) = self.hours(path, m, &account)? else {
            return Ok(None);
        };
        let Some(busy) = self.busy(path, m, &account)? else {
            return Ok(None);
        };
        let p = self.out.participants.len();
        self.out.participants.push(
            engine::ParticipantData::new(zone, busy, hours)
                .with_caps(m.max_events_per_day, m.max_events_per_week),
        );
        self.out.accounts.push(m.account_id.clone());
        self.index.insert(m.account_id.clone(), p);
        Ok(Some(p))
    }

    /// The member's zone and working hours: stored by id, inline, or none (then
    /// the primary calendar's zone, else UTC, counts days and weeks).
    fn hours(
        &mut self,
        path: &str,
        m: &pb::AvailabilityMember,
        account: &AccountRecord,
    ) -> Result<Option<(Tz, Option<engine::WorkingHours>)>, ErrorKind> {
        let stored;
        let (hours, field) = if !m.working_hours_id.is_empty() {
            stored = match self
                .shared
                .store
                .working_hours(self.tenant, &m.working_hours_id)
                .map_err(store_err)?
            {
                Some(b) => pb::WorkingHours::decode(b.as_slice()).map_err(|_| {
                    ErrorKind::Internal("stored working hours cannot be decoded".into())
                })?,
                None => {
                    self.invalid.push(
                        format!("{path}.working_hours_id"),
                        "names no stored working hours (PutWorkingHours first)",
                    );
                    return Ok(None);
                }
            };
            (Some(&stored), format!("{path}.working_hours_id"))
        } else {
            (m.working_hours.as_ref(), format!("{path}.working_hours"))
        };
        match hours {
            Some(h) => match convert_hours(&field, h) {
                Ok((tz, wh)) => Ok(Some((tz, Some(wh)))),
                Err(inv) => {
                    self.invalid.0.extend(inv.0);
                    Ok(None)
                }
            },
            None => {
                let zone = self
                    .shared
                    .store
                    .calendars(&account.account_id)
                    .map_err(store_err)?
                    .into_iter()
                    .find(|c| c.primary)
                    .and_then(|c| c.time_zone.parse::<Tz>().ok())
                    .unwrap_or(Tz::UTC);
                Ok(Some((zone, None)))
            }
        }
    }

    /// The member's busy intervals in the read range, and its live holds.
    fn busy(
        &mut self,
        path: &str,
        m: &pb::AvailabilityMember,
        account: &AccountRecord,
    ) -> Result<Option<Vec<engine::BusyInterval>>, ErrorKind> {
        let calendars = self
            .shared
            .store
            .calendars(&account.account_id)
            .map_err(store_err)?;
        let chosen: Vec<String> = if m.calendar_ids.is_empty() {
            calendars
                .iter()
                .filter(|c| c.synced)
                .map(|c| c.calendar_id.clone())
                .collect()
        } else {
            let mut ok = true;
            for (i, id) in m.calendar_ids.iter().enumerate() {
                if !calendars.iter().any(|c| c.synced && &c.calendar_id == id) {
                    self.invalid.push(
                        format!("{path}.calendar_ids[{i}]"),
                        "is not a synced calendar of the account",
                    );
                    ok = false;
                }
            }
            if !ok {
                return Ok(None);
            }
            m.calendar_ids.clone()
        };
        let mut busy = Vec::new();
        for cal in &chosen {
            let st = self
                .shared
                .store
                .sync_state(&account.account_id, cal)
                .map_err(store_err)?
                .unwrap_or_default();
            self.out.freshness.push(pb::CalendarFreshness {
                account_id: account.account_id.clone(),
                calendar_id: cal.clone(),
                as_of: st
                    .last_success_ms
                    .and_then(chrono::DateTime::from_timestamp_millis)
                    .map(to_timestamp),
            });
            let timeline = self.shared.timeline(&account.account_id, cal)?;
            let calendar: Arc<str> = cal.as_str().into();
            for i in timeline.overlapping(self.range.0, self.range.1) {
                let entry = &timeline.entries[i];
                let status = match pb::BusyStatus::try_from(entry.busy) {
                    Ok(pb::BusyStatus::Busy) => engine::BusyStatus::Busy,
                    Ok(pb::BusyStatus::Tentative) => engine::BusyStatus::Tentative,
                    Ok(pb::BusyStatus::OutOfOffice) => engine::BusyStatus::OutOfOffice,
                    _ => continue,
                };
                let span = match entry.all_day.and_then(|(a, b)| {
                    Some((
                        NaiveDate::from_num_days_from_ce_opt(a)?,
                        NaiveDate::from_num_days_from_ce_opt(b)?,
                    ))
                }) {
                    Some((s, e)) => engine::BusySpan::AllDay { start: s, end: e },
                    None => engine::BusySpan::Timed {
                        start_ms: entry.start_ms,
                        end_ms: entry.end_ms,
                    },
                };
                busy.push(engine::BusyInterval {
                    id: self.out.sources.len() as u64,
                    span,
                    status,
                });
                self.out.sources.push(Source::Event {
                    calendar_id: calendar.clone(),
                    timeline: timeline.clone(),
                    index: i,
                });
            }
        }
        for h in self
            .holds
            .iter()
            .filter(|h| h.account_ids.contains(&account.account_id))
        {
            busy.push(engine::BusyInterval {
                id: self.out.sources.len() as u64,
                span: engine::BusySpan::Timed {
                    start_ms: h.start_ms,
                    end_ms: h.end_ms,
                },
                status: engine::BusyStatus::Busy,
            });
            self.out.sources.push(Source::Hold(h.hold_id.clone()));
        }
        Ok(Some(busy))
    }

    /// Fails with the collected field violations, or with FAILED_PRECONDITION
    /// when a consulted calendar is staler than allowed.
    fn finish(self, max_staleness_seconds: u32) -> Result<Gathered, ErrorKind> {
        self.invalid.into_result().map_err(ErrorKind::from)?;
        if max_staleness_seconds > 0 {
            let limit = self.now - i64::from(max_staleness_seconds) * 1000;
            let stale: Vec<String> = self
                .out
                .freshness
                .iter()
                .filter(|f| {
                    f.as_of
                        .as_ref()
                        .and_then(from_timestamp)
                        .is_none_or(|t| t.timestamp_millis() < limit)
                })
                .map(|f| format!("{}/{}", f.account_id, f.calendar_id))
                .collect();
            if !stale.is_empty() {
                return Err(ErrorKind::FailedPrecondition(format!(
                    "calendars last synced longer ago than max_staleness_seconds allows: {}; call SyncNow or relax the limit",
                    stale.join(", ")
                )));
            }
        }
        Ok(self.out)
    }
}

/// Parses "HH:MM" (00:00..=24:00) to minutes after midnight.
fn parse_hhmm(s: &str) -> Option<u16> {
    if s == "24:00" {
        return Some(1440);
    }
    let t = NaiveTime::parse_from_str(s, "%H:%M").ok()?;
    Some((t.hour() * 60 + t.minute()) as u16)
}

fn range(inv: &mut Invalid, path: &str, start: &str, end: &str) -> Option<engine::LocalRange> {
    match (parse_hhmm(start), parse_hhmm(end)) {
        (Some(s), Some(e)) if s < e && s < 1440 => Some(engine::LocalRange {
            start_minute: s,
            end_minute: e,
        }),
        (Some(_), Some(_)) => {
            inv.push(format!("{path}.end"), "must be after start");
            None
        }
        (None, _) => {
            inv.push(format!("{path}.start"), "must be HH:MM");
            None
        }
        (_, None) => {
            inv.push(format!("{path}.end"), "must be HH:MM (24:00 allowed)");
            None
        }
    }
}

/// Converts proto working hours at `path` to the engine's, with their zone.
pub fn convert_hours(
    path: &str,
    h: &pb::WorkingHours,
) -> Result<(Tz, engine::WorkingHours), Invalid> {
    let mut inv = Invalid::default();
    let tz = match h.time_zone.parse::<Tz>() {
        Ok(tz) => Some(tz),
        Err(_) => {
            inv.push(
                format!("{path}.time_zone"),
                "must be an IANA time zone such as Europe/London",
            );
            None
        }
    };
    let weekdays = [
        Weekday::Mon,
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
        Weekday::Sat,
        Weekday::Sun,
    ];
    let mut weekly = Vec::new();
    for (i, r) in h.weekly.iter().enumerate() {
        let p = format!("{path}.weekly[{i}]");
        let day = match r.weekday {
            1..=7 => Some(weekdays[r.weekday as usize - 1]),
            _ => {
                inv.push(format!("{p}.weekday"), "must be 1 (Monday) ..= 7 (Sunday)");
                None
            }
        };
        if let (Some(weekday), Some(range)) = (day, range(&mut inv, &p, &r.start, &r.end)) {
            weekly.push(engine::WeeklyRule { weekday, range });
        }
    }
    let mut overrides = Vec::new();
    for (i, o) in h.overrides.iter().enumerate() {
        let p = format!("{path}.overrides[{i}]");
        let date = NaiveDate::parse_from_str(&o.date, "%Y-%m-%d").ok();
        if date.is_none() {
            inv.push(format!("{p}.date"), "must be YYYY-MM-DD");
        }
        let mut ranges = Vec::new();
        for (j, r) in o.ranges.iter().enumerate() {
            if let Some(x) = range(&mut inv, &format!("{p}.ranges[{j}]"), &r.start, &r.end) {
                ranges.push(x);
            }
        }
        if let Some(date) = date {
            overrides.push(engine::DateOverride { date, ranges });
        }
    }
    inv.into_result()?;
    Ok((
        tz.expect("checked"),
        engine::WorkingHours { weekly, overrides },
    ))
}

fn periods(inv: &mut Invalid, field: &str, windows: &[pb::TimeWindow]) -> Vec<engine::Period> {
    let mut out = Vec::new();
    for (i, w) in windows.iter().enumerate() {
        if let Some((s, e)) =
            calbridge::validate::check_window(inv, &format!("{field}[{i}]"), Some(w))
        {
            out.push(engine::Period {
                start_ms: s.timestamp_millis(),
                end_ms: e.timestamp_millis(),
            });
        }
    }
    out
}

fn engine_errors(errors: Vec<engine::FieldError>) -> ErrorKind {
    let mut inv = Invalid::default();
    for e in errors {
        inv.push(e.field, e.message);
    }
    ErrorKind::Invalid(inv)
}

fn slot_pb(g: &Gathered, s: &engine::Slot) -> pb::AvailableSlot {
    pb::AvailableSlot {
        start: ts(s.start_ms),
        end: ts(s.end_ms),
        available_account_ids: s.available.iter().map(|&p| g.accounts[p].clone()).collect(),
    }
}

fn format_of(f: i32) -> engine::Format {
    match pb::AvailabilityFormat::try_from(f) {
        Ok(pb::AvailabilityFormat::Periods) => engine::Format::Periods,
        Ok(pb::AvailabilityFormat::OverlappingSlots) => engine::Format::OverlappingSlots,
        _ => engine::Format::Slots,
    }
}

/// Builds the engine request and its inputs for a query.
fn prepare(
    shared: &Shared,
    tenant: &str,
    req: &pb::QueryAvailabilityRequest,
) -> Result<(engine::Request, Gathered), ErrorKind> {
    let mut inv = Invalid::default();
    let periods = periods(&mut inv, "periods", &req.periods);
    inv.into_result().map_err(ErrorKind::from)?;
    if req.groups.is_empty() {
        return Err(Invalid::field("groups", "must have at least one group").into());
    }
    let mut b = Builder::new(shared, tenant, &periods)?;
    let mut groups = Vec::new();
    for (i, g) in req.groups.iter().enumerate() {
        groups.push(b.group(&format!("groups[{i}]"), g)?);
    }
    let gathered = b.finish(req.max_staleness_seconds)?;
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
    tenant: &str,
    req: &pb::QueryAvailabilityRequest,
) -> Result<pb::QueryAvailabilityResponse, ErrorKind> {
    let (request, g) = prepare(shared, tenant, req)?;
    let answer = engine::query(&request, &g.participants, now_ms()).map_err(engine_errors)?;
    Ok(pb::QueryAvailabilityResponse {
        slots: answer.slots.iter().map(|s| slot_pb(&g, s)).collect(),
        freshness: g.freshness,
    })
}

/// Answers `QuerySequencedAvailability`.
pub fn sequences(
    shared: &Shared,
    tenant: &str,
    req: &pb::QuerySequencedAvailabilityRequest,
) -> Result<pb::QuerySequencedAvailabilityResponse, ErrorKind> {
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
    let g = b.finish(req.max_staleness_seconds)?;
    let request = engine::SequenceRequest {
        steps,
        periods,
        start_interval_minutes: req.start_interval_minutes,
        minimum_notice_minutes: req.minimum_notice_minutes,
        max_results: req.max_results,
        tentative_is_busy: req.tentative_is_busy,
    };
    let answer = engine::sequences(&request, &g.participants, now_ms()).map_err(engine_errors)?;
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

fn blocker(reason: UnavailableReason) -> pb::Blocker {
    pb::Blocker {
        reason: reason as i32,
        ..Default::default()
    }
}

fn window(start_ms: i64, end_ms: i64) -> Option<pb::TimeWindow> {
    Some(pb::TimeWindow {
        start: ts(start_ms),
        end: ts(end_ms),
    })
}

fn source_blocker(
    g: &Gathered,
    reason: UnavailableReason,
    id: u64,
    interval: Option<pb::TimeWindow>,
) -> pb::Blocker {
    let mut b = blocker(reason);
    b.interval = interval;
    match g.sources.get(id as usize) {
        Some(Source::Event {
            calendar_id,
            timeline,
            index,
        }) => {
            b.calendar_id = calendar_id.to_string();
            b.provider_event_id = timeline.entries[*index].provider_event_id.clone();
        }
        Some(Source::Hold(h)) => b.hold_id = h.clone(),
        None => {}
    }
    b
}

/// Answers `ExplainAvailability`.
pub fn explain(
    shared: &Shared,
    tenant: &str,
    req: &pb::ExplainAvailabilityRequest,
) -> Result<pb::ExplainAvailabilityResponse, ErrorKind> {
    let Some(query) = &req.query else {
        return Err(Invalid::field("query", "must be set").into());
    };
    let mut inv = Invalid::default();
    let slot = calbridge::validate::check_window(&mut inv, "slot", req.slot.as_ref());
    inv.into_result().map_err(ErrorKind::from)?;
    let (start, end) = slot.expect("validated");
    let (request, g) = prepare(shared, tenant, query)?;
    let e = engine::explain(
        &request,
        &g.participants,
        now_ms(),
        start.timestamp_millis(),
        end.timestamp_millis(),
    )
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
            account_id: g.accounts[p.participant].clone(),
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
                        UnavailableReason::BusyEvent,
                        *id,
                        window(*start_ms, *end_ms),
                    ),
                    engine::Reason::Buffer { id } => {
                        source_blocker(&g, UnavailableReason::Buffer, *id, None)
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

fn hold_pb(h: &HoldRecord) -> pb::Hold {
    pb::Hold {
        hold_id: h.hold_id.clone(),
        account_ids: h.account_ids.clone(),
        slot: window(h.start_ms, h.end_ms),
        expires_at: ts(h.expires_ms),
    }
}

/// Creates a hold.
pub async fn create_hold(
    shared: &Shared,
    tenant: &str,
    req: &pb::CreateHoldRequest,
) -> Result<pb::Hold, ErrorKind> {
    let mut inv = Invalid::default();
    if req.account_ids.is_empty() || req.account_ids.len() > limits::MAX_FREE_BUSY_ACCOUNTS {
        inv.push("account_ids", "must name 1..=2000 accounts");
    }
    for (i, a) in req.account_ids.iter().enumerate() {
        check_id(
            &mut inv,
            &format!("account_ids[{i}]"),
            a,
            limits::MAX_ID_BYTES,
        );
    }
    let slot = calbridge::validate::check_window(&mut inv, "slot", req.slot.as_ref());
    if let Some((s, e)) = slot {
        if e - s > chrono::Duration::hours(24) {
            inv.push("slot", "must be at most 24 hours long");
        }
    }
    if req.ttl_minutes > 10_080 {
        inv.push("ttl_minutes", "must be at most 10080 (a week)");
    }
    inv.into_result().map_err(ErrorKind::from)?;
    for a in &req.account_ids {
        shared.tenant_account(tenant, a)?;
    }
    let (s, e) = slot.expect("validated");
    let ttl = if req.ttl_minutes == 0 {
        15
    } else {
        req.ttl_minutes
    };
    let h = HoldRecord {
        hold_id: format!("hold_{}", random_hex(12)),
        account_ids: req.account_ids.clone(),
        start_ms: s.timestamp_millis(),
        end_ms: e.timestamp_millis(),
        expires_ms: now_ms() + i64::from(ttl) * 60_000,
    };
    shared.store.put_hold(tenant, &h).map_err(store_err)?;
    shared.store.flush().await.map_err(store_err)?;
    Ok(hold_pb(&h))
}

/// A live hold, or FAILED_PRECONDITION naming `field`.
pub fn live_hold(
    shared: &Shared,
    tenant: &str,
    field: &str,
    id: &str,
) -> Result<HoldRecord, ErrorKind> {
    match shared.store.hold(tenant, id).map_err(store_err)? {
        Some(h) if h.expires_ms > now_ms() => Ok(h),
        _ => Err(ErrorKind::FailedPrecondition(format!(
            "{field} names no live hold (it expired or was released)"
        ))),
    }
}

/// Releases a hold (idempotent).
pub async fn release_hold(shared: &Shared, tenant: &str, id: &str) -> Result<(), ErrorKind> {
    shared.store.remove_hold(tenant, id).map_err(store_err)?;
    shared.store.flush().await.map_err(store_err)?;
    Ok(())
}

/// The tenant's live holds, by start.
pub fn list_holds(shared: &Shared, tenant: &str) -> Result<Vec<pb::Hold>, ErrorKind> {
    let now = now_ms();
    let mut holds: Vec<HoldRecord> = shared
        .store
        .holds(tenant)
        .map_err(store_err)?
        .into_iter()
        .filter(|h| h.expires_ms > now)
        .collect();
    holds.sort_by_key(|h| h.start_ms);
    Ok(holds.iter().map(hold_pb).collect())
}

/// Validates and stores working hours.
pub async fn put_working_hours(
    shared: &Shared,
    tenant: &str,
    req: &pb::PutWorkingHoursRequest,
) -> Result<pb::StoredWorkingHours, ErrorKind> {
    let mut inv = Invalid::default();
    check_id(
        &mut inv,
        "working_hours_id",
        &req.working_hours_id,
        limits::MAX_ID_BYTES,
    );
    match &req.hours {
        None => inv.push("hours", "must be set"),
        Some(h) => {
            if let Err(e) = convert_hours("hours", h) {
                inv.0.extend(e.0);
            }
        }
    }
    inv.into_result().map_err(ErrorKind::from)?;
    let hours = req.hours.clone().expect("validated");
    shared
        .store
        .put_working_hours(tenant, &req.working_hours_id, &hours.encode_to_vec())
        .map_err(store_err)?;
    shared.store.flush().await.map_err(store_err)?;
    Ok(pb::StoredWorkingHours {
        working_hours_id: req.working_hours_id.clone(),
        hours: Some(hours),
    })
}

/// Stored working hours by id.
pub fn get_working_hours(
    shared: &Shared,
    tenant: &str,
    id: &str,
) -> Result<pb::StoredWorkingHours, ErrorKind> {
    let bytes = shared
        .store
        .working_hours(tenant, id)
        .map_err(store_err)?
        .ok_or_else(|| ErrorKind::NotFound(format!("working hours {id:?} not found")))?;
    Ok(pb::StoredWorkingHours {
        working_hours_id: id.to_string(),
        hours: Some(
            pb::WorkingHours::decode(bytes.as_slice()).map_err(|_| {
                ErrorKind::Internal("stored working hours cannot be decoded".into())
            })?,
        ),
    })
}

/// Every stored working-hours entry of a tenant.
pub fn list_working_hours(
    shared: &Shared,
    tenant: &str,
) -> Result<Vec<pb::StoredWorkingHours>, ErrorKind> {
    shared
        .store
        .all_working_hours(tenant)
        .map_err(store_err)?
        .into_iter()
        .map(|(id, bytes)| {
            Ok(pb::StoredWorkingHours {
                working_hours_id: id,
                hours: Some(pb::WorkingHours::decode(bytes.as_slice()).map_err(|_| {
                    ErrorKind::Internal("stored working hours cannot be decoded".into())
                })?),
            })
        })
        .collect()
}

/// Deletes stored working hours.
pub async fn delete_working_hours(
    shared: &Shared,
    tenant: &str,
    id: &str,
) -> Result<(), ErrorKind> {
    if !shared
        .store
        .delete_working_hours(tenant, id)
        .map_err(store_err)?
    {
        return Err(ErrorKind::NotFound(format!(
            "working hours {id:?} not found"
        )));
    }
    shared.store.flush().await.map_err(store_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Datelike;

    #[test]
    fn working_hours_convert_with_fields_named() {
        let h = pb::WorkingHours {
            time_zone: "Europe/London".into(),
            weekly: vec![pb::WeeklyRule {
                weekday: 1,
                start: "09:00".into(),
                end: "17:30".into(),
            }],
            overrides: vec![pb::DateOverride {
                date: "2026-12-24".into(),
                ranges: vec![],
            }],
        };
        let (tz, wh) = convert_hours("hours", &h).unwrap();
        assert_eq!(tz, chrono_tz::Europe::London);
        assert_eq!(wh.weekly[0].range.end_minute, 17 * 60 + 30);
        assert_eq!(wh.overrides[0].date.day(), 24);

        let bad = pb::WorkingHours {
            time_zone: "Mars/Base".into(),
            weekly: vec![pb::WeeklyRule {
                weekday: 8,
                start: "17:00".into(),
                end: "09:00".into(),
            }],
            overrides: vec![],
        };
        let fields: Vec<String> = convert_hours("hours", &bad)
            .unwrap_err()
            .0
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(
            fields,
            vec![
                "hours.time_zone",
                "hours.weekly[0].weekday",
                "hours.weekly[0].end"
            ]
        );
    }

    #[test]
    fn hh_mm_accepts_midnight_as_an_end_only() {
        assert_eq!(parse_hhmm("00:00"), Some(0));
        assert_eq!(parse_hhmm("24:00"), Some(1440));
        assert_eq!(parse_hhmm("25:00"), None);
    }
}
