//! Writing recurring series: the recurrence lines an event carries
//! (checked, then written into the master VEVENT as they are), a stored
//! series' master replaced with its overrides pruned to the instances that
//! remain, and the override VEVENT of one instance.

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;

use calbridge::pb;
use calbridge::time::{boundary_utc, parse_zone, Boundary};
use calbridge::Invalid;

use super::{
    component, direct_props, event_to_ics, logical_lines, merge_master, once_per_vevent,
    tzids_defined, value_colon, vevent_span, vevent_spans, vtimezones, written_like, Line,
};
use crate::mapping::{parse_object, CalendarObject, VEvent, When};
use crate::recurrence::{find_instance, Window};

/// The recurrence lines an event may carry (EXRULE is deprecated by RFC
/// 5545 and refused).
const NAMES: &[&str] = &["RRULE", "RDATE", "EXDATE"];

/// Checks an event's recurrence lines beyond the contract's bounds (which
/// `check_event` checks): each is an RRULE, RDATE or EXDATE line with a
/// value, and every TZID it names is a known IANA zone (so the object can
/// carry a VTIMEZONE for it).
pub(super) fn check_lines(inv: &mut Invalid, lines: &[String]) {
    for (i, line) in lines.iter().enumerate() {
        let field = format!("event.recurrence[{i}]");
        let Some(colon) = value_colon(line) else {
            inv.push(field, "must be a NAME:VALUE line");
            continue;
        };
        let mut head = line[..colon].split(';');
        let name = head.next().unwrap_or("").trim().to_ascii_uppercase();
        if !NAMES.contains(&name.as_str()) {
            inv.push(
                field,
                "must be an RRULE, RDATE or EXDATE line (the start and end come from the event)",
            );
            continue;
        }
        if line[colon + 1..].trim().is_empty() {
            inv.push(field, "must have a value");
            continue;
        }
        for param in head {
            let Some((key, value)) = param.split_once('=') else {
                inv.push(field.clone(), "has a parameter without a value");
                break;
            };
            let value = value.trim().trim_matches('"');
            if key.trim().eq_ignore_ascii_case("TZID") && parse_zone(value).is_err() {
                inv.push(
                    field.clone(),
                    "names a time zone that is not a known IANA zone",
                );
                break;
            }
        }
    }
}

/// Checks that a written series reads back as one: it parses, its master
/// recurs, and its rules expand over the year from its start.
pub(super) fn check_reads_back(body: &str, start: Boundary) -> Result<(), Invalid> {
    let bad = |why: String| Invalid::field("event.recurrence", why);
    let obj = parse_object(body, None)
        .map_err(|e| bad(format!("does not make a readable series: {e}")))?;
    if !obj.master.as_ref().is_some_and(VEvent::is_recurring) {
        return Err(bad("makes no recurring series".into()));
    }
    let from = boundary_utc(start, None);
    let window = Window {
        start: from - Duration::days(1),
        end: from + Duration::days(366),
    };
    crate::recurrence::expand(&obj, "series", "", window, false)
        .map_err(|e| bad(format!("cannot be expanded: {e}")))?;
    Ok(())
}

/// The BEGIN and END indexes of the master VEVENT (the first without a
/// RECURRENCE-ID).
pub(super) fn master_span(lines: &[Line]) -> Option<(usize, usize)> {
    vevent_spans(lines)
        .into_iter()
        .find(|span| !is_override(lines, *span))
}

fn is_override(lines: &[Line], span: (usize, usize)) -> bool {
    direct_props(lines, span).any(|l| l.name == "RECURRENCE-ID")
}

/// The recurrence lines (RRULE, RDATE, EXDATE) of a stored series'
/// master, unfolded, for the contract's `Event.recurrence`; empty when
/// there are none or they exceed the contract's bounds.
pub fn series_lines(data: &str) -> Vec<String> {
    let lines = logical_lines(data);
    let Some(master) = master_span(&lines) else {
        return Vec::new();
    };
    let out: Vec<String> = direct_props(&lines, master)
        .filter(|l| NAMES.contains(&l.name.as_str()))
        .map(|l| l.text.clone())
        .collect();
    let mut inv = Invalid::default();
    calbridge::validate::check_recurrence(&mut inv, "recurrence", &out);
    if inv.0.is_empty() {
        out
    } else {
        Vec::new()
    }
}

/// The object's VTIMEZONEs as text, to read one VEVENT of it alone.
fn zones_text(lines: &[Line]) -> String {
    vtimezones(lines)
        .into_iter()
        .flat_map(|(_, body)| body)
        .map(|l| l.raw + "\r\n")
        .collect()
}

/// The VEVENT at `span` read alone (beside the object's VTIMEZONEs).
fn read_alone(lines: &[Line], span: (usize, usize), zones: &str, floating: Tz) -> Option<VEvent> {
    let block: String = lines[span.0..=span.1]
        .iter()
        .map(|l| l.raw.clone() + "\r\n")
        .collect();
    let alone = format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//calbridge//EN\r\n{zones}{block}END:VCALENDAR\r\n"
    );
    let obj = parse_object(&alone, Some(floating)).ok()?;
    obj.overrides.into_iter().next().or(obj.master)
}

/// True when the override `ov` names the instance `original` (by instant;
/// in an all-day series also by the date a date-time RECURRENCE-ID names).
fn names_instance(ov: &VEvent, original: &When, floating: Tz) -> bool {
    let by_date = matches!((original, ov.recurrence_date), (When::Date(d), Some(od)) if *d == od);
    by_date
        || ov
            .recurrence_id
            .is_some_and(|rid| rid.utc(floating) == original.utc(floating))
}

/// The key [`find_instance`] takes for an override's instance.
fn instance_suffix(master: &VEvent, ov: &VEvent) -> Option<String> {
    match (master.start, ov.recurrence_date) {
        (When::Date(_), Some(d)) => Some(When::Date(d).id_suffix()),
        _ => ov.recurrence_id.map(|r| r.id_suffix()),
    }
}

/// A stored series (or single event) rewritten as the series `event`: the
/// master's fields and rules are replaced (what other clients stored on
/// it, alarms and X- properties, stays), its overrides are kept when they
/// still name an instance of the new rules and dropped otherwise (all of
/// them when `event` has no rules), and other masters of the resource are
/// dropped. `floating` is the calendar's zone. `None` when `existing` is no
/// object this can rewrite (the caller writes a fresh one).
pub fn replace_series(
    existing: &str,
    event: &pb::Event,
    uid: &str,
    sequence: u32,
    now: DateTime<Utc>,
    floating: Option<Tz>,
) -> Result<Option<String>, Invalid> {
    let Some(merged) = merge_master(existing, event, uid, sequence, now, true)? else {
        return Ok(None);
    };
    Ok(prune_overrides(
        &merged,
        event.recurrence.is_empty(),
        floating,
    ))
}

/// `data` without the VEVENTs that are no instance of its master's rules
/// (every override when `drop_all`) and without masters beyond the first.
/// All the overrides together get one expansion budget
/// ([`calbridge::expansion::MAX_TIME`]): each may name an instance far from
/// the series' start, which costs a bounded but real expansion, and a
/// server's object may hold thousands. Past the budget the object is too
/// costly to keep: `None` (the caller writes a fresh one).
fn prune_overrides(data: &str, drop_all: bool, floating: Option<Tz>) -> Option<String> {
    let deadline = std::time::Instant::now() + calbridge::expansion::MAX_TIME;
    let too_costly = std::cell::Cell::new(false);
    let lines = logical_lines(data);
    let master = master_span(&lines)?;
    let obj = parse_object(data, floating).ok()?;
    let zone = obj.floating_zone;
    let rules = CalendarObject {
        master: Some(obj.master.clone()?),
        overrides: Vec::new(),
        ..obj
    };
    let series = rules.master.as_ref()?;
    let zones = zones_text(&lines);
    let dropped: Vec<(usize, usize)> = vevent_spans(&lines)
        .into_iter()
        .filter(|span| *span != master)
        .filter(|span| {
            if drop_all || !is_override(&lines, *span) {
                return true;
            }
            if too_costly.get() || std::time::Instant::now() > deadline {
                too_costly.set(true);
                return true;
            }
            let kept = read_alone(&lines, *span, &zones, zone)
                .and_then(|ov| instance_suffix(series, &ov))
                .is_some_and(|key| find_instance(&rules, &key).is_some());
            !kept
        })
        .collect();
    if too_costly.get() {
        tracing::warn!("a stored series' overrides are too costly to check against its rules: it is written afresh");
        return None;
    }
    let out = without(&lines, &dropped);
    parse_object(&out, floating).ok()?;
    Some(out)
}

/// The object's lines without the spans `dropped`, CRLF-terminated.
fn without(lines: &[Line], dropped: &[(usize, usize)]) -> String {
    lines
        .iter()
        .enumerate()
        .filter(|(i, _)| !dropped.iter().any(|(b, e)| (*b..=*e).contains(i)))
        .map(|(_, l)| l.raw.clone() + "\r\n")
        .collect()
}

/// A stored series with an override VEVENT for its instance at
/// `original` carrying `event`'s fields (times, title, status...; its
/// recurrence lines are ignored): RECURRENCE-ID written like the master's
/// DTSTART, the master's UID and SEQUENCE. An earlier override of that
/// instance is replaced; VTIMEZONEs for new TZIDs are added. `floating` is
/// the zone the object's floating times are read in. `None` when there is
/// no master VEVENT to name the instance by, or the result would not read
/// back with the override.
pub fn put_override(
    existing: &str,
    event: &pb::Event,
    original: &When,
    floating: Tz,
    now: DateTime<Utc>,
) -> Result<Option<String>, Invalid> {
    let single = pb::Event {
        recurrence: Vec::new(),
        recurrence_link: None,
        ..event.clone()
    };
    let lines = logical_lines(existing);
    let Some(master) = master_span(&lines) else {
        return Ok(None);
    };
    let Ok(obj) = parse_object(existing, Some(floating)) else {
        return Ok(None);
    };
    let Some(m) = obj.master.as_ref() else {
        return Ok(None);
    };
    let fresh = event_to_ics(&single, &m.uid, m.sequence, now)?;
    let fresh_lines = logical_lines(&fresh);
    let span = vevent_span(&fresh_lines).expect("our own object has a VEVENT");
    let Some(start) = direct_props(&lines, master).find(|l| l.name == "DTSTART") else {
        return Ok(None);
    };
    let Some(rid) = written_like(&start.text, "RECURRENCE-ID", original) else {
        return Ok(None);
    };
    // The master's UID line as written (the UID is the resource's).
    let uid = direct_props(&lines, master)
        .find(|l| l.name == "UID")
        .cloned();
    let mut block: Vec<Line> = Vec::with_capacity(span.1 - span.0 + 2);
    for l in &fresh_lines[span.0..=span.1] {
        if l.name == "UID" {
            block.push(uid.clone().unwrap_or_else(|| l.clone()));
            block.push(Line::new(rid.clone()));
        } else {
            block.push(l.clone());
        }
    }
    let zones = zones_text(&lines);
    let replaced: Vec<(usize, usize)> = vevent_spans(&lines)
        .into_iter()
        .filter(|span| *span != master && is_override(&lines, *span))
        .filter(|span| {
            read_alone(&lines, *span, &zones, floating)
                .is_some_and(|ov| names_instance(&ov, original, floating))
        })
        .collect();
    let defined = tzids_defined(&lines);
    let new_zones: Vec<Line> = vtimezones(&fresh_lines)
        .into_iter()
        .filter(|(tzid, _)| !defined.iter().any(|d| d == tzid))
        .flat_map(|(_, body)| body)
        .collect();
    let Some(end) = lines
        .iter()
        .rposition(|l| component(l, "END").as_deref() == Some("VCALENDAR"))
    else {
        return Ok(None);
    };
    let mut out = String::with_capacity(existing.len() + fresh.len());
    let keep = once_per_vevent(&lines);
    for (i, line) in lines.iter().enumerate() {
        if !keep[i] || replaced.iter().any(|(b, e)| (*b..=*e).contains(&i)) {
            continue;
        }
        if i == master.0 {
            out.extend(new_zones.iter().map(|l| l.raw.clone() + "\r\n"));
        }
        if i == end {
            out.extend(block.iter().map(|l| l.raw.clone() + "\r\n"));
        }
        out.push_str(&line.raw);
        out.push_str("\r\n");
    }
    let reads_back = parse_object(&out, Some(floating)).is_ok_and(|o| {
        o.overrides
            .iter()
            .any(|ov| names_instance(ov, original, floating) && ov.summary == event.title)
    });
    Ok(reads_back.then_some(out))
}
