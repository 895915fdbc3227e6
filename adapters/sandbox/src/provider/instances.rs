//! The events a stored unit shows in a window: a single event, or the
//! instances of a series with its exceptions, within the bounds on count
//! and size.

use super::*;

/// The UTC bounds of an event; dates resolve in the calendar's zone.
pub(super) fn bounds(e: &Event, zone: Option<Tz>) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let s = time::parse_event_time(e.start.as_ref()?).ok()?;
    let en = time::parse_event_time(e.end.as_ref()?).ok()?;
    Some((time::boundary_utc(s, zone), time::boundary_utc(en, zone)))
}

pub(super) fn overlaps(e: &Event, zone: Option<Tz>, w: Window) -> bool {
    bounds(e, zone).is_some_and(|(s, en)| s < w.end && en > w.start)
}

pub(super) fn original_start_time(master: &Event, original: Boundary) -> pb::EventTime {
    match original {
        Boundary::Instant(t) => time::instant(
            t,
            master.start.as_ref().map_or("", |s| s.time_zone.as_str()),
        ),
        Boundary::Date(d) => time::date(d),
    }
}

/// The instance of a series starting at `original`, from the master.
pub(super) fn instance(master: &Event, original: Boundary, span: Span) -> Option<Event> {
    let end_zone = master.end.as_ref().map_or("", |e| e.time_zone.as_str());
    let end = match (original, span) {
        (Boundary::Instant(t), Span::Timed(d)) => time::instant(t + d, end_zone),
        (Boundary::Date(d), Span::Days(n)) => time::date(d + Duration::days(n)),
        _ => return None,
    };
    let start = original_start_time(master, original);
    let mut e = master.clone();
    e.provider_event_id = recurrence::instance_id(&master.provider_event_id, original);
    e.recurrence.clear();
    e.recurrence_link = Some(RecurrenceLink {
        series_event_id: master.provider_event_id.clone(),
        original_start: Some(start.clone()),
    });
    e.start = Some(start);
    e.end = Some(end);
    Some(e)
}

pub(super) fn link_original(e: &Event) -> Option<Boundary> {
    let t = e.recurrence_link.as_ref()?.original_start.as_ref()?;
    time::parse_event_time(t).ok()
}

/// About how many bytes an event takes on the wire (its free text and
/// attendees, plus the fixed fields).
pub(super) fn approximate_size(e: &Event) -> usize {
    let attendees: usize = e
        .attendees
        .iter()
        .map(|a| a.email.len() + a.display_name.len() + 16)
        .sum();
    256 + e.title.len()
        + e.description.len()
        + e.location.len()
        + e.ical_uid.len()
        + e.provider_event_id.len() * 2
        + attendees
}

/// The events a unit shows in a window: the event itself, or for a series
/// its instances (exceptions replacing the instances they override): at
/// most [`recurrence::MAX_INSTANCES`], and fewer for large events so that
/// they stay under [`SERIES_BYTES`] together.
pub(super) fn expand(unit: &Unit, zone: Option<Tz>, w: Window) -> Vec<Event> {
    let master = &unit.event;
    if !unit.is_series() {
        return if overlaps(master, zone, w) {
            vec![master.clone()]
        } else {
            Vec::new()
        };
    }
    let Some(span) = recurrence::span_of(master) else {
        return Vec::new();
    };
    // Instances starting before the window may still overlap it; the extra
    // day covers all-day dates resolved in any zone.
    let reach = match span {
        Span::Timed(d) => d,
        Span::Days(n) => Duration::days(n),
    } + Duration::days(1);
    let originals =
        match recurrence::occurrences(master, w.start - reach, w.end + Duration::days(1)) {
            Ok(o) => o,
            Err(error) => {
                tracing::debug!(%error, "series not expanded");
                return Vec::new();
            }
        };
    // One series' instances stay under SERIES_BYTES together (a page never
    // splits a series), whatever the size of its event.
    let cap = (SERIES_BYTES / approximate_size(master)).clamp(1, recurrence::MAX_INSTANCES);
    let mut out = Vec::new();
    for original in originals.into_iter().take(cap) {
        let id = recurrence::instance_id(&master.provider_event_id, original);
        if unit.deleted_instances.contains(&id) || unit.exceptions.contains_key(&id) {
            continue;
        }
        if let Some(e) = instance(master, original, span) {
            if overlaps(&e, zone, w) {
                out.push(e);
            }
        }
    }
    for (id, ex) in &unit.exceptions {
        if unit.deleted_instances.contains(id) || !overlaps(ex, zone, w) {
            continue;
        }
        // An exception whose instance the rule no longer produces is orphaned.
        if link_original(ex).is_some_and(|o| recurrence::is_occurrence(master, o)) {
            out.push(ex.clone());
        }
    }
    out.sort_by(|a, b| {
        let (sa, sb) = (bounds(a, zone), bounds(b, zone));
        sa.cmp(&sb)
            .then_with(|| a.provider_event_id.cmp(&b.provider_event_id))
    });
    out
}
