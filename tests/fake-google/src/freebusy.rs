//! `freebusy.query`: busy intervals of up to 50 calendars over a bounded
//! range. Transparent, cancelled and declined events do not count; calendars
//! the caller cannot see get a per-calendar `notFound` error.

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use serde_json::{json, Map, Value};

use crate::config::FakeConfig;
use crate::error::ApiError;
use crate::events::{series_of, span, synthesize_instance};
use crate::model::{Calendar, State};
use crate::when::{fmt_in_zone, parse_param};

fn busy_counts(body: &Map<String, Value>, calendar_id: &str) -> bool {
    if body.get("status").and_then(Value::as_str) == Some("cancelled") {
        return false;
    }
    if body.get("transparency").and_then(Value::as_str) == Some("transparent") {
        return false;
    }
    let declined = body
        .get("attendees")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|a| {
            let me = a.get("self").and_then(Value::as_bool) == Some(true)
                || a.get("email").and_then(Value::as_str) == Some(calendar_id);
            me && a.get("responseStatus").and_then(Value::as_str) == Some("declined")
        });
    !declined
}

/// Busy intervals of one calendar within `[min, max)`, merged and clipped.
pub(crate) fn busy(
    cal: &Calendar,
    min: DateTime<Utc>,
    max: DateTime<Utc>,
    limit: usize,
) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let zone = cal.time_zone;
    let mut spans = Vec::new();
    let mut consider = |body: &Map<String, Value>| {
        if !busy_counts(body, &cal.id) {
            return;
        }
        if let Some((s, e)) = span(body, zone) {
            if e > min && s < max && e > s {
                spans.push((s.max(min), e.min(max)));
            }
        }
    };
    for e in cal.events.values() {
        if e.recurring_event_id().is_some() {
            consider(&e.body);
        } else if e.is_master() {
            if e.is_cancelled() {
                continue;
            }
            let Some((series, start, series_zone)) = series_of(cal, e) else {
                continue;
            };
            let (s, end) = span(&e.body, zone).unwrap_or((min, min));
            let _ = start;
            let id = e.str_field("id").unwrap_or_default();
            for original in series.occurrences(end - s, Some(min), Some(max), limit, series_zone) {
                if cal
                    .events
                    .contains_key(&format!("{id}_{}", original.stamp()))
                {
                    continue; // the exception speaks for itself
                }
                consider(&synthesize_instance(e, original));
            }
        } else {
            consider(&e.body);
        }
    }
    spans.sort();
    let mut merged: Vec<(DateTime<Utc>, DateTime<Utc>)> = Vec::new();
    for (s, e) in spans {
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    merged
}

/// Answers a `FreeBusyRequest` for `user`.
pub(crate) fn query(
    state: &State,
    config: &FakeConfig,
    user: &str,
    body: &Value,
) -> Result<Value, ApiError> {
    let Some(req) = body.as_object() else {
        return Err(ApiError::parse_error());
    };
    let time = |k: &str| -> Result<DateTime<Utc>, ApiError> {
        let raw = req
            .get(k)
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::required(k).at_param(k))?;
        parse_param(raw, k)
    };
    let (min, max) = (time("timeMin")?, time("timeMax")?);
    if min >= max {
        return Err(ApiError::time_range_empty());
    }
    if max - min > Duration::days(config.freebusy_max_days) {
        return Err(ApiError::bad_request(
            "timeRangeTooLong",
            "The requested time range is too long.",
        )
        .at_param("timeMax"));
    }
    let limit_of = |k: &str, cap: i64| -> Result<i64, ApiError> {
        match req.get(k).and_then(Value::as_i64) {
            Some(n) if !(1..=cap).contains(&n) => {
                Err(ApiError::invalid(&format!("Invalid value for: {k}")).at_param(k))
            }
            Some(n) => Ok(n),
            None => Ok(cap),
        }
    };
    let calendar_max = limit_of("calendarExpansionMax", 50)? as usize;
    limit_of("groupExpansionMax", 100)?;
    let zone: Tz = match req.get("timeZone").and_then(Value::as_str) {
        Some(z) => z
            .parse()
            .map_err(|_| ApiError::invalid("Invalid time zone definition.").at_param("timeZone"))?,
        None => Tz::UTC,
    };
    let items = req
        .get("items")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let max_calendars = calendar_max.min(config.freebusy_max_calendars);
    let mut calendars = Map::new();
    for (i, item) in items.iter().enumerate() {
        let Some(raw_id) = item.get("id").and_then(Value::as_str) else {
            continue;
        };
        let id = state.resolve_calendar_id(user, raw_id);
        let error =
            |reason: &str| json!({"busy": [], "errors": [{"domain": "global", "reason": reason}]});
        let answer = if i >= max_calendars {
            error("tooManyCalendarsRequested")
        } else {
            match (state.entry(user, &id), state.calendars.get(&id)) {
                (Some(_), Some(cal)) => {
                    let busy: Vec<Value> = busy(cal, min, max, config.max_instances_per_series)
                        .into_iter()
                        .map(|(s, e)| json!({"start": fmt_in_zone(s, zone), "end": fmt_in_zone(e, zone)}))
                        .collect();
                    json!({"busy": busy})
                }
                _ => error("notFound"),
            }
        };
        calendars.insert(raw_id.to_string(), answer);
    }
    Ok(json!({
        "kind": "calendar#freeBusy",
        "timeMin": fmt_in_zone(min, zone),
        "timeMax": fmt_in_zone(max, zone),
        "calendars": calendars,
    }))
}
