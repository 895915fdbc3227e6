//! Gathering the engine's inputs: each member's busy time from the time
//! index, the tenant's live holds and their working hours.

use super::*;
use crate::ids::{AccountId, CalendarId, TenantId};

/// The engine's inputs gathered for one request.
pub(super) struct Gathered {
    pub(super) participants: Vec<engine::ParticipantData>,
    /// Per participant: what it was built from (account, sources).
    pub(super) built: Vec<Arc<Built>>,
    /// Every consulted calendar's freshness, filled by [`Gathered::run`].
    pub(super) freshness: Vec<pb::CalendarFreshness>,
    /// When the request was gathered, ms.
    pub(super) now: i64,
}

impl Gathered {
    /// Reads the freshness of every consulted calendar (from the store's
    /// cells: it changes with every poll, so a cached participant holds the
    /// cell, not the value) and applies `max_staleness_seconds`; then runs
    /// `work` on the participants unless a calendar was too stale.
    pub(super) fn run<T>(
        &mut self,
        max_staleness_seconds: u32,
        work: impl FnOnce(&[engine::ParticipantData]) -> T,
    ) -> Result<T, ErrorKind> {
        let freshness: Vec<pb::CalendarFreshness> = self
            .built
            .iter()
            .flat_map(|b| {
                b.calendars.iter().map(|c| pb::CalendarFreshness {
                    account_id: b.account_id.to_string(),
                    calendar_id: c.id.to_string(),
                    as_of: c
                        .freshness
                        .get()
                        .and_then(chrono::DateTime::from_timestamp_millis)
                        .map(to_timestamp),
                })
            })
            .collect();
        self.check_staleness(&freshness, max_staleness_seconds)?;
        self.freshness = freshness;
        Ok(work(&self.participants))
    }

    /// FAILED_PRECONDITION when a consulted calendar is staler than allowed.
    pub(super) fn check_staleness(
        &self,
        freshness: &[pb::CalendarFreshness],
        max_staleness_seconds: u32,
    ) -> Result<(), ErrorKind> {
        if max_staleness_seconds == 0 {
            return Ok(());
        }
        let limit = self.now - i64::from(max_staleness_seconds) * 1000;
        let stale: Vec<String> = freshness
            .iter()
            .filter(|f| {
                f.as_of
                    .as_ref()
                    .and_then(from_timestamp)
                    .is_none_or(|t| t.timestamp_millis() < limit)
            })
            .map(|f| format!("{}/{}", f.account_id, f.calendar_id))
            .collect();
        if stale.is_empty() {
            return Ok(());
        }
        Err(ErrorKind::FailedPrecondition(format!(
            "calendars last synced longer ago than max_staleness_seconds allows: {}; call SyncNow or relax the limit",
            stale.join(", ")
        )))
    }
}

/// Maps `(group, member)` to participants, one participant per account (an
/// account that appears more than once uses its first occurrence's
/// calendars, working hours and caps).
pub(super) struct Builder<'a, 'r> {
    pub(super) shared: &'a Shared,
    pub(super) tenant: &'a TenantId,
    pub(super) range: (i64, i64),
    pub(super) now: i64,
    pub(super) index: HashMap<&'r str, usize>,
    pub(super) out: Gathered,
    pub(super) holds: Arc<TenantHolds>,
    pub(super) invalid: Invalid,
}

impl<'a, 'r> Builder<'a, 'r> {
    pub(super) fn new(
        shared: &'a Shared,
        tenant: &'a TenantId,
        periods: &[engine::Period],
    ) -> Result<Self, ErrorKind> {
        let start = periods.iter().map(|p| p.start_ms).min().unwrap_or(0);
        let end = periods.iter().map(|p| p.end_ms).max().unwrap_or(0);
        let now = now_ms();
        let holds = shared
            .availability_cache
            .tenant_holds(&shared.store, tenant)?;
        let from = start.saturating_sub(READ_MARGIN_MS);
        let to = end.saturating_add(READ_MARGIN_MS);
        Ok(Builder {
            shared,
            tenant,
            range: (
                from.div_euclid(DAY_MS).saturating_mul(DAY_MS),
                to.div_euclid(DAY_MS)
                    .saturating_add(i64::from(to.rem_euclid(DAY_MS) != 0))
                    .saturating_mul(DAY_MS),
            ),
            now,
            index: HashMap::new(),
            out: Gathered {
                participants: Vec::new(),
                built: Vec::new(),
                freshness: Vec::new(),
                now,
            },
            holds,
            invalid: Invalid::default(),
        })
    }

    pub(super) fn cache(&self) -> &'a AvailabilityCache {
        &self.shared.availability_cache
    }

    /// The engine group of a proto group at `path` (e.g. `groups[0]`).
    pub(super) fn group(
        &mut self,
        path: &str,
        g: &'r pb::ParticipantGroup,
    ) -> Result<engine::Group, ErrorKind> {
        let mut members = Vec::with_capacity(g.members.len());
        for (i, m) in g.members.iter().enumerate() {
            if let Some(p) = self.member(path, i, m)? {
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

    /// The participant of member `i` of the group at `group_path`.
    pub(super) fn member(
        &mut self,
        group_path: &str,
        i: usize,
        m: &'r pb::AvailabilityMember,
    ) -> Result<Option<usize>, ErrorKind> {
        let mut inv = Invalid::default();
        check_id(&mut inv, "", &m.account_id, limits::MAX_ID_BYTES);
        if !inv.0.is_empty() {
            // Only now is the field path worth formatting.
            check_id(
                &mut self.invalid,
                &format!("{group_path}.members[{i}].account_id"),
                &m.account_id,
                limits::MAX_ID_BYTES,
            );
            return Ok(None);
        }
        if let Some(&p) = self.index.get(m.account_id.as_str()) {
            return Ok(Some(p));
        }
        let built = match self.cached(m)? {
            Some(b) => b,
            None => match self.build(&format!("{group_path}.members[{i}]"), m)? {
                Some(b) => b,
                None => return Ok(None),
            },
        };
        let p = self.out.participants.len();
        self.out.participants.push(
            built
                .data
                .clone()
                .with_caps(m.max_events_per_day, m.max_events_per_week),
        );
        self.out.built.push(built);
        self.index.insert(&m.account_id, p);
        Ok(Some(p))
    }

    /// The live holds naming `account` that overlap the read range.
    pub(super) fn live_holds(&self, account: &AccountId) -> Vec<&HoldRecord> {
        self.holds
            .by_account
            .get(account.as_str())
            .map(|v| {
                v.iter()
                    .filter(|h| hold_counts(h, self.range, self.now))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The member's cached participant, when one is still valid.
    pub(super) fn cached(
        &self,
        m: &pb::AvailabilityMember,
    ) -> Result<Option<Arc<Built>>, ErrorKind> {
        let hours = if !m.working_hours_id.is_empty() {
            match self.cache().stored_hours(
                &self.shared.store,
                self.tenant,
                &m.working_hours_id,
                stored_hours_converted,
            )? {
                Some(h) => HoursWanted::Stored(h),
                None => return Ok(None),
            }
        } else {
            match &m.working_hours {
                Some(h) => HoursWanted::Inline(h),
                None => HoursWanted::Absent,
            }
        };
        Ok(self.cache().find(
            self.tenant,
            &AccountId::from(&m.account_id),
            &m.calendar_ids,
            &hours,
            self.range,
            &self.live_holds(&AccountId::from(m.account_id.as_str())),
        ))
    }

    /// Builds the member's participant from the store (and keeps it when it
    /// may be cached); `None` after recording why it is invalid.
    pub(super) fn build(
        &mut self,
        path: &str,
        m: &pb::AvailabilityMember,
    ) -> Result<Option<Arc<Built>>, ErrorKind> {
        // Read before any input, so that a change landing during the build
        // makes the result stale rather than wrong.
        let epoch = self.cache().epoch(&AccountId::from(m.account_id.as_str()));
        let account = crate::accounts::tenant_account(
            self.shared,
            self.tenant,
            &AccountId::from(&m.account_id),
        )?;
        // Revocation changes the account's epoch, so a participant cached
        // before it is never served after it.
        crate::accounts::check_not_revoked(&account, &format!("{path}.account_id"))?;
        let calendars = self.shared.store.calendars(&account.account_id)?;
        let Some((zone, hours, used)) = self.hours(path, m, &calendars)? else {
            return Ok(None);
        };
        let Some(chosen) = self.chosen(path, m, &calendars) else {
            return Ok(None);
        };
        let mut busy = Vec::new();
        let mut sources = Vec::new();
        let mut consulted = Vec::with_capacity(chosen.len());
        for cal in chosen {
            let timeline = self
                .shared
                .timeline(&account.account_id, &CalendarId::from(cal.as_str()))?;
            let k = consulted.len() as u32;
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
                    id: sources.len() as u64,
                    span,
                    status,
                });
                sources.push(Source::Event {
                    calendar: k,
                    index: i as u32,
                });
            }
            consulted.push(Consulted {
                freshness: self
                    .shared
                    .store
                    .freshness(&account.account_id, &CalendarId::from(cal.as_str())),
                id: Arc::<str>::from(cal),
                timeline,
            });
        }
        let holds: Vec<HoldRecord> = self
            .live_holds(&account.account_id)
            .into_iter()
            .cloned()
            .collect();
        for (k, h) in holds.iter().enumerate() {
            busy.push(engine::BusyInterval {
                id: sources.len() as u64,
                span: engine::BusySpan::Timed {
                    start_ms: h.start_ms,
                    end_ms: h.end_ms,
                },
                status: engine::BusyStatus::Busy,
            });
            sources.push(Source::Hold(k as u32));
        }
        let built = Arc::new(Built {
            tenant: self.tenant.to_string(),
            account_id: account.account_id.as_str().into(),
            calendar_ids: m.calendar_ids.clone(),
            hours: used,
            range: self.range,
            epoch,
            holds,
            data: engine::ParticipantData::new(zone, busy, hours),
            calendars: consulted,
            sources,
            last_used: AtomicU64::new(0),
        });
        // Without a consulted calendar, no signal covers the calendar list
        // (a zone taken from an unsynced primary calendar, say): rebuild.
        if !built.calendars.is_empty() {
            self.cache().keep(&built);
        }
        Ok(Some(built))
    }

    /// The member's zone and working hours: stored by id, inline, or none (then
    /// the primary calendar's zone, else UTC, counts days and weeks).
    #[allow(clippy::type_complexity)]
    pub(super) fn hours(
        &mut self,
        path: &str,
        m: &pb::AvailabilityMember,
        calendars: &[CalendarRecord],
    ) -> Result<Option<(Tz, Option<engine::WorkingHours>, HoursUsed)>, ErrorKind> {
        if !m.working_hours_id.is_empty() {
            let field = format!("{path}.working_hours_id");
            let Some(stored) = self.cache().stored_hours(
                &self.shared.store,
                self.tenant,
                &m.working_hours_id,
                stored_hours_converted,
            )?
            else {
                self.invalid.push(
                    field,
                    "names no stored working hours (PutWorkingHours first)",
                );
                return Ok(None);
            };
            if let Some((tz, wh)) = &stored.converted {
                return Ok(Some((*tz, Some(wh.clone()), HoursUsed::Stored(stored))));
            }
            let h = pb::WorkingHours::decode(stored.bytes.as_slice()).map_err(|_| {
                ErrorKind::Internal("stored working hours cannot be decoded".into())
            })?;
            if let Err(inv) = convert_hours(&field, &h) {
                self.invalid.0.extend(inv.0);
            }
            return Ok(None);
        }
        match &m.working_hours {
            Some(h) => match convert_hours(&format!("{path}.working_hours"), h) {
                Ok((tz, wh)) => Ok(Some((tz, Some(wh), HoursUsed::Inline(h.clone())))),
                Err(inv) => {
                    self.invalid.0.extend(inv.0);
                    Ok(None)
                }
            },
            None => {
                let zone = calendars
                    .iter()
                    .find(|c| c.primary)
                    .and_then(|c| c.time_zone.parse::<Tz>().ok())
                    .unwrap_or(Tz::UTC);
                Ok(Some((zone, None, HoursUsed::Absent)))
            }
        }
    }

    /// The calendars to read: the member's (each must be a synced calendar
    /// of the account), else every synced one; `None` after recording the
    /// bad ids.
    pub(super) fn chosen(
        &mut self,
        path: &str,
        m: &pb::AvailabilityMember,
        calendars: &[CalendarRecord],
    ) -> Option<Vec<String>> {
        if m.calendar_ids.is_empty() {
            return Some(
                calendars
                    .iter()
                    .filter(|c| c.synced)
                    .map(|c| c.calendar_id.to_string())
                    .collect(),
            );
        }
        let synced: std::collections::HashSet<&str> = calendars
            .iter()
            .filter(|c| c.synced)
            .map(|c| c.calendar_id.as_str())
            .collect();
        let mut ok = true;
        for (i, id) in m.calendar_ids.iter().enumerate() {
            if !synced.contains(id.as_str()) {
                self.invalid.push(
                    format!("{path}.calendar_ids[{i}]"),
                    "is not a synced calendar of the account",
                );
                ok = false;
            }
        }
        ok.then(|| m.calendar_ids.clone())
    }

    /// Fails with the collected field violations; the freshness (and the
    /// staleness limit) comes with [`Gathered::run`].
    pub(super) fn finish(self) -> Result<Gathered, ErrorKind> {
        self.invalid.into_result().map_err(ErrorKind::from)?;
        Ok(self.out)
    }
}
