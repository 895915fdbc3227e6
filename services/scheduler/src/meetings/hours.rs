//! Working hours: converting them from the contract, and storing them.

use super::*;
use crate::ids::TenantId;

/// Parses "HH:MM" (00:00..=24:00) to minutes after midnight.
pub(super) fn parse_hhmm(s: &str) -> Option<u16> {
    if s == "24:00" {
        return Some(1440);
    }
    let t = NaiveTime::parse_from_str(s, "%H:%M").ok()?;
    Some((t.hour() * 60 + t.minute()) as u16)
}

pub(super) fn range(
    inv: &mut Invalid,
    path: &str,
    start: &str,
    end: &str,
) -> Option<engine::LocalRange> {
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

/// Stored working hours (encoded) converted for the engine, as the
/// participant cache keeps them; `None` when they cannot be.
pub(crate) fn stored_hours_converted(bytes: &[u8]) -> Option<(Tz, engine::WorkingHours)> {
    pb::WorkingHours::decode(bytes)
        .ok()
        .and_then(|p| convert_hours("hours", &p).ok())
}

/// Converts proto working hours at `path` to the engine's, with their zone:
/// every list within its bound (`limits::MAX_WEEKLY_RULES`,
/// `MAX_DATE_OVERRIDES`, `MAX_OVERRIDE_RANGES`), no date overridden twice.
/// Linear in the size of the hours.
pub fn convert_hours(
    path: &str,
    h: &pb::WorkingHours,
) -> Result<(Tz, engine::WorkingHours), Invalid> {
    let mut inv = Invalid::default();
    let tz = match calbridge::time::parse_zone(&h.time_zone) {
        Ok(tz) => Some(tz),
        Err(_) => {
            inv.push(
                format!("{path}.time_zone"),
                "must be an IANA time zone such as Europe/London",
            );
            None
        }
    };
    // Oversized lists are refused before any of their entries is looked at.
    let before = inv.0.len();
    for (field, len, max) in [
        ("weekly", h.weekly.len(), limits::MAX_WEEKLY_RULES),
        ("overrides", h.overrides.len(), limits::MAX_DATE_OVERRIDES),
    ] {
        if len > max {
            inv.push(
                format!("{path}.{field}"),
                format!("must have at most {max} entries"),
            );
        }
    }
    if let Some(i) = h
        .overrides
        .iter()
        .position(|o| o.ranges.len() > limits::MAX_OVERRIDE_RANGES)
    {
        inv.push(
            format!("{path}.overrides[{i}].ranges"),
            format!("must have at most {} entries", limits::MAX_OVERRIDE_RANGES),
        );
    }
    if inv.0.len() > before {
        return Err(inv);
    }
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
    let mut dates = std::collections::HashSet::with_capacity(h.overrides.len());
    for (i, o) in h.overrides.iter().enumerate() {
        let p = format!("{path}.overrides[{i}]");
        let date = calbridge::time::parse_date(&o.date);
        match date {
            None => inv.push(
                format!("{p}.date"),
                "must be YYYY-MM-DD in years 0001..=9999",
            ),
            Some(d) if !dates.insert(d) => inv.push(format!("{p}.date"), "duplicate date"),
            Some(_) => {}
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

/// Refuses, before any participant is built, availability requests whose
/// lists exceed their bounds: groups and members (at most the engine's
/// member limit in all), each member's `calendar_ids`
/// (`limits::MAX_MEMBER_CALENDARS`) and the periods (`limits::MAX_PERIODS`).
pub(super) fn check_sizes<'g>(
    inv: &mut Invalid,
    periods: usize,
    groups: impl Iterator<Item = (String, &'g pb::ParticipantGroup)>,
) {
    let max_members = engine::Limits::default().max_members;
    if periods > limits::MAX_PERIODS {
        inv.push(
            "periods",
            format!("must have at most {} entries", limits::MAX_PERIODS),
        );
    }
    let (mut n_groups, mut n_members) = (0usize, 0usize);
    for (path, g) in groups {
        n_groups += 1;
        n_members = n_members.saturating_add(g.members.len());
        if n_groups > max_members || n_members > max_members {
            inv.push(
                "groups",
                format!("must have at most {max_members} groups and members in all"),
            );
            return;
        }
        for (i, m) in g.members.iter().enumerate() {
            if m.calendar_ids.len() > limits::MAX_MEMBER_CALENDARS {
                inv.push(
                    format!("{path}.members[{i}].calendar_ids"),
                    format!("must have at most {} entries", limits::MAX_MEMBER_CALENDARS),
                );
            }
        }
    }
}

pub(super) fn periods(
    inv: &mut Invalid,
    field: &str,
    windows: &[pb::TimeWindow],
) -> Vec<engine::Period> {
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

/// Validates and stores working hours.
pub async fn put_working_hours(
    shared: &Shared,
    tenant: &TenantId,
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
        .put_working_hours(tenant, &req.working_hours_id, &hours.encode_to_vec())?;
    shared.availability_cache.hours_changed();
    shared.store.flush().await?;
    Ok(pb::StoredWorkingHours {
        working_hours_id: req.working_hours_id.clone(),
        hours: Some(hours),
    })
}

/// Stored working hours by id.
pub fn get_working_hours(
    shared: &Shared,
    tenant: &TenantId,
    id: &str,
) -> Result<pb::StoredWorkingHours, ErrorKind> {
    let bytes = shared
        .store
        .working_hours(tenant, id)?
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
    tenant: &TenantId,
) -> Result<Vec<pb::StoredWorkingHours>, ErrorKind> {
    shared
        .store
        .all_working_hours(tenant)?
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
    tenant: &TenantId,
    id: &str,
) -> Result<(), ErrorKind> {
    let deleted = shared.store.delete_working_hours(tenant, id)?;
    shared.availability_cache.hours_changed();
    if !deleted {
        return Err(ErrorKind::NotFound(format!(
            "working hours {id:?} not found"
        )));
    }
    shared.store.flush().await?;
    Ok(())
}
