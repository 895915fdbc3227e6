//! Pure conversions between iCalendar objects (as stored in CalDAV
//! resources) and the common model: parsing with `calcard`, reading VEVENT
//! properties into [`VEvent`]s, and building [`pb::Event`]s. Recurrence
//! expansion lives in [`crate::recurrence`], writing in [`crate::ics`].
//!
//! Times: `Z` values are UTC; `TZID` values are read in the zone the TZID
//! names, or by the rules of its VTIMEZONE when it names no known zone
//! ([`crate::zones`]); floating values (neither) are read in the
//! calendar's zone, else the object's `X-WR-TIMEZONE`, else UTC. Local
//! times in a DST gap take the offset from before the gap; repeated local
//! times mean the first occurrence.
//!
//! Which VEVENT counts: of several without RECURRENCE-ID (masters) sharing
//! the first one's UID, and of several overrides of one instance, the one
//! with the highest SEQUENCE, then the latest DTSTAMP, then the latest
//! LAST-MODIFIED, then the last written (RFC 5546 orders revisions by
//! SEQUENCE and DTSTAMP). An event that ends before it starts (DTEND, or a
//! negative DURATION, or an RDATE period) is refused as unreadable.

use calcard::common::PartialDateTime;
use calcard::icalendar::{
    ICalendar, ICalendarComponent, ICalendarComponentType, ICalendarEntry, ICalendarParameterName,
    ICalendarParameterValue, ICalendarPeriod, ICalendarProperty, ICalendarValue,
};

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

use calbridge::pb::{self, EventStatus, ResponseStatus, Transparency};
use calbridge::time::{boundary_utc, Boundary};

pub use crate::parse::{parse_calendar, IcalError};
pub use crate::zones::local_to_utc;
use crate::zones::{resolve_tzid, zone_for_tzid, Zone};

/// The bounds a calendar object resource is held to. Objects beyond them
/// are reported as skipped items, never parsed further; a series with more
/// instances in the window than [`MAX_INSTANCES`] is mirrored up to that
/// many (see [`crate::recurrence`]).
pub mod bounds {
    /// The largest object, in bytes of iCalendar text (inline attachments
    /// make some objects large; a few MiB is far beyond real events).
    pub const MAX_OBJECT_BYTES: usize = 4 << 20;
    /// The most VEVENTs in one object (a master and its overrides).
    pub const MAX_VEVENTS: usize = 2_000;
    /// The most RRULE values on one VEVENT (RFC 5545 discourages more
    /// than one).
    pub const MAX_RULES: usize = 8;
    /// The most RDATE and the most EXDATE values on one VEVENT.
    pub const MAX_DATES: usize = 10_000;
    /// The most ATTENDEE properties read from one VEVENT (the contract's
    /// own bound on attendees).
    pub const MAX_ATTENDEES: usize = calbridge::limits::MAX_ATTENDEES;
    pub use calbridge::expansion::{MAX_INSTANCES, MAX_STEPS};
    /// The most VTIMEZONEs of one object read from their own rules (each
    /// bounded by [`crate::zones::custom::limits`]).
    pub const MAX_CUSTOM_ZONES: usize = 8;
    /// The work one sync page may spend on parsing and expansion, in
    /// steps (a byte of iCalendar text counts 1/256 of a step): the
    /// resources of a page beyond it wait for the next page, so a calendar
    /// full of costly series is read a few series per page, with other
    /// accounts' pages in between.
    pub const PAGE_STEPS: usize = 4 * MAX_STEPS;
}

/// A start, end or recurrence id: a calendar date, or an instant with the
/// zone it was written in (UTC for `Z` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// An all-day date.
    Date(NaiveDate),
    /// An instant, and the IANA zone of its wall-clock time.
    At(DateTime<Utc>, Tz),
}

impl When {
    /// The instant this stands for; dates start at midnight in `zone`.
    pub fn utc(&self, zone: Tz) -> DateTime<Utc> {
        match self {
            When::At(t, _) => *t,
            When::Date(d) => boundary_utc(Boundary::Date(*d), Some(zone)),
        }
    }

    /// The key identifying an instance: UTC basic format or a date.
    pub fn id_suffix(&self) -> String {
        match self {
            When::At(t, _) => t.format("%Y%m%dT%H%M%SZ").to_string(),
            When::Date(d) => d.format("%Y%m%d").to_string(),
        }
    }

    /// As the contract's [`pb::EventTime`].
    pub fn event_time(&self) -> pb::EventTime {
        match self {
            When::Date(d) => calbridge::time::date(*d),
            When::At(t, zone) => calbridge::time::instant(*t, zone_label(*zone)),
        }
    }

    /// This shifted by `d` (whole days for dates); `None` out of range.
    pub fn plus(&self, d: Duration) -> Option<When> {
        Some(match self {
            When::Date(date) => When::Date(date.checked_add_signed(Duration::days(d.num_days()))?),
            When::At(t, z) => When::At(t.checked_add_signed(d)?, *z),
        })
    }
}

/// The contract's zone label: empty for UTC.
fn zone_label(zone: Tz) -> &'static str {
    if zone == Tz::UTC {
        ""
    } else {
        zone.name()
    }
}

/// One RRULE: its text without UNTIL, and the UNTIL as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// `FREQ=...` without the UNTIL part.
    pub text: String,
    /// The UNTIL value, resolved against the series' zone at expansion.
    pub until: Option<UntilValue>,
}

/// An UNTIL value: a date, a UTC time, or a floating local time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UntilValue {
    /// A date (inclusive).
    Date(NaiveDate),
    /// A UTC instant.
    Utc(DateTime<Utc>),
    /// A local time in the series' zone.
    Local(NaiveDateTime),
}

/// The fields of one VEVENT that calbridge uses.
#[derive(Debug, Clone, PartialEq)]
pub struct VEvent {
    /// UID.
    pub uid: String,
    /// DTSTART.
    pub start: When,
    /// The zone DTSTART was written in (UTC for `Z` values and dates): the
    /// series' rules step through its wall-clock time.
    pub zone: Zone,
    /// DTEND, or DTSTART + DURATION, or the RFC 5545 default.
    pub end: When,
    /// RECURRENCE-ID of an override.
    pub recurrence_id: Option<When>,
    /// The date RECURRENCE-ID names on its own wall clock (for a `Z` value,
    /// in the floating zone): how a date-time RECURRENCE-ID finds its
    /// instance in an all-day series.
    pub recurrence_date: Option<NaiveDate>,
    /// RECURRENCE-ID has `RANGE=THISANDFUTURE`: the override also changes
    /// every later instance.
    pub this_and_future: bool,
    /// RRULEs.
    pub rules: Vec<Rule>,
    /// RDATEs (the starts of RDATE periods included).
    pub rdates: Vec<When>,
    /// The RDATE periods (`VALUE=PERIOD`): start and end of each, an
    /// instance that keeps its own length.
    pub periods: Vec<(When, When)>,
    /// EXDATEs.
    pub exdates: Vec<When>,
    /// SUMMARY.
    pub summary: String,
    /// DESCRIPTION.
    pub description: String,
    /// LOCATION.
    pub location: String,
    /// STATUS.
    pub status: EventStatus,
    /// TRANSP.
    pub transparency: Transparency,
    /// ATTENDEEs.
    pub attendees: Vec<pb::Attendee>,
    /// ORGANIZER.
    pub organizer: Option<pb::Organizer>,
    /// CREATED.
    pub created: Option<DateTime<Utc>>,
    /// LAST-MODIFIED.
    pub last_modified: Option<DateTime<Utc>>,
    /// DTSTAMP.
    pub dtstamp: Option<DateTime<Utc>>,
    /// SEQUENCE (0 when absent).
    pub sequence: u32,
}

impl VEvent {
    /// True when this VEVENT defines a recurrence set.
    pub fn is_recurring(&self) -> bool {
        !self.rules.is_empty() || !self.rdates.is_empty()
    }

    /// True when this revision replaces `earlier` (written before it):
    /// a higher SEQUENCE, then a later DTSTAMP, then a later LAST-MODIFIED;
    /// on a tie, the one written last.
    pub fn supersedes(&self, earlier: &VEvent) -> bool {
        (self.sequence, self.dtstamp, self.last_modified)
            >= (earlier.sequence, earlier.dtstamp, earlier.last_modified)
    }
}

/// One calendar object resource: its series master (or single event) and
/// its overrides, all sharing one UID.
#[derive(Debug, Clone, PartialEq)]
pub struct CalendarObject {
    /// The VEVENT without RECURRENCE-ID, if any.
    pub master: Option<VEvent>,
    /// The VEVENTs with a RECURRENCE-ID.
    pub overrides: Vec<VEvent>,
    /// The zone floating times were read in.
    pub floating_zone: Tz,
    /// The work reading it took, in steps (VTIMEZONE transitions stepped
    /// through).
    pub steps: usize,
}

impl CalendarObject {
    /// True when the resource stands for more than one event id (a series
    /// or overrides): its instance ids cannot be derived from its href.
    pub fn is_recurring(&self) -> bool {
        self.master.as_ref().is_some_and(VEvent::is_recurring) || !self.overrides.is_empty()
    }
}

/// Reads a calendar object resource. `calendar_zone` is the zone floating
/// times are read in (the calendar's `calendar-timezone`), when known.
pub fn parse_object(data: &str, calendar_zone: Option<Tz>) -> Result<CalendarObject, IcalError> {
    if data.len() > bounds::MAX_OBJECT_BYTES {
        return Err(IcalError::TooLarge(format!(
            "{} bytes, more than {}",
            data.len(),
            bounds::MAX_OBJECT_BYTES
        )));
    }
    let ical = parse_calendar(data)?;
    let x_wr = ical
        .components
        .iter()
        .filter(|c| c.component_type == ICalendarComponentType::VCalendar)
        .flat_map(|c| c.entries.iter())
        .find(|e| matches!(&e.name, ICalendarProperty::Other(n) if n.eq_ignore_ascii_case("X-WR-TIMEZONE")))
        .and_then(|e| e.values.first())
        .and_then(|v| v.as_text())
        .and_then(|t| resolve_tzid(&ical, t.trim()));
    let floating = calendar_zone.or(x_wr).unwrap_or(Tz::UTC);
    let reader = Reader {
        ical: &ical,
        floating: Zone::Named(floating),
        zones: RefCell::new(HashMap::new()),
        steps: Cell::new(0),
    };
    let mut masters: Vec<VEvent> = Vec::new();
    let mut overrides: Vec<VEvent> = Vec::new();
    let vevents = ical
        .components
        .iter()
        .filter(|c| c.component_type == ICalendarComponentType::VEvent);
    if vevents.clone().count() > bounds::MAX_VEVENTS {
        return Err(IcalError::TooLarge(format!(
            "more than {} VEVENTs",
            bounds::MAX_VEVENTS
        )));
    }
    for c in vevents {
        let v = reader.vevent(c)?;
        if v.recurrence_id.is_some() {
            overrides.push(v);
        } else {
            masters.push(v);
        }
    }
    // Several masters: the latest revision of the first one's UID (a
    // resource holds one UID; masters of another are not read).
    let uid = masters.first().map(|m| m.uid.clone());
    let master = masters
        .into_iter()
        .filter(|m| Some(&m.uid) == uid.as_ref())
        .reduce(|kept, next| if next.supersedes(&kept) { next } else { kept });
    if master.is_none() && overrides.is_empty() {
        return Err(IcalError::NoEvent);
    }
    if let Some(When::Date(_)) = master.as_ref().map(|m| m.start) {
        // Exchange writes the RECURRENCE-ID of an all-day series' instance
        // as a date-time with TZID (its local midnight): it names the
        // instance of that local date.
        for ov in &mut overrides {
            if let (Some(When::At(..)), Some(d)) = (ov.recurrence_id, ov.recurrence_date) {
                ov.recurrence_id = Some(When::Date(d));
            }
        }
    }
    // Several overrides of one instance: its latest revision.
    let mut by_instance: Vec<VEvent> = Vec::with_capacity(overrides.len());
    let mut at: HashMap<DateTime<Utc>, usize> = HashMap::new();
    for ov in overrides {
        let key = ov.recurrence_id.map(|r| r.utc(Tz::UTC));
        match key.and_then(|k| at.get(&k).copied()) {
            Some(i) => {
                if ov.supersedes(&by_instance[i]) {
                    by_instance[i] = ov;
                }
            }
            None => {
                if let Some(k) = key {
                    at.insert(k, by_instance.len());
                }
                by_instance.push(ov);
            }
        }
    }
    Ok(CalendarObject {
        master,
        overrides: by_instance,
        floating_zone: floating,
        steps: reader.steps.get(),
    })
}

struct Reader<'a> {
    ical: &'a ICalendar,
    floating: Zone,
    /// What each TZID met so far stands for (`None`: unknown, read as
    /// floating).
    zones: RefCell<HashMap<String, Option<Zone>>>,
    /// VTIMEZONE transitions stepped through.
    steps: Cell<usize>,
}

impl Reader<'_> {
    fn vevent(&self, c: &ICalendarComponent) -> Result<VEvent, IcalError> {
        let start_entry = prop(c, &ICalendarProperty::Dtstart).ok_or(IcalError::MissingStart)?;
        let start = self.when(start_entry, first_dt(start_entry), "DTSTART")?;
        // The zone the series steps through: DTSTART's.
        let zone = match start {
            When::At(..) if first_dt(start_entry).is_some_and(|p| p.tz_hour.is_none()) => {
                self.zone_of(start_entry, &self.floating)?
            }
            _ => Zone::Named(Tz::UTC),
        };
        let end = match prop(c, &ICalendarProperty::Dtend) {
            Some(e) => self.when(e, first_dt(e), "DTEND")?,
            None => match prop(c, &ICalendarProperty::Duration).and_then(|e| e.values.first()) {
                Some(ICalendarValue::Duration(d)) => start
                    .plus(d.to_time_delta().ok_or(IcalError::BadTime("DURATION"))?)
                    .ok_or(IcalError::BadTime("DURATION"))?,
                Some(_) => return Err(IcalError::BadTime("DURATION")),
                None => match start {
                    When::Date(d) => When::Date(d + Duration::days(1)),
                    at => at,
                },
            },
        };
        // An end before the start has no meaning to guess: the event is
        // refused (and reported as skipped). An end of the other kind
        // (DATE-TIME end on a DATE start), or an all-day end on its start
        // day, keeps the RFC default duration.
        let end = match (start, end) {
            (When::Date(s), When::Date(e)) if e > s => end,
            (When::At(s, _), When::At(e, _)) if e >= s => end,
            (When::Date(s), When::Date(e)) if e < s => return Err(IcalError::EndsBeforeStart),
            (When::At(..), When::At(..)) => return Err(IcalError::EndsBeforeStart),
            (When::Date(s), _) => When::Date(s + Duration::days(1)),
            (at, _) => at,
        };
        let (recurrence_id, recurrence_date, this_and_future) =
            match prop(c, &ICalendarProperty::RecurrenceId) {
                Some(e) => {
                    let p = first_dt(e);
                    let rid = self.when_in(e, p, &zone, "RECURRENCE-ID")?;
                    let date = match (rid, p) {
                        (When::Date(d), _) => Some(d),
                        (When::At(t, _), Some(p)) if p.tz_hour.is_some() => {
                            Some(t.with_timezone(&self.floating_tz()).date_naive())
                        }
                        (_, Some(p)) => NaiveDate::from_ymd_opt(
                            i32::from(p.year.unwrap_or(0)),
                            u32::from(p.month.unwrap_or(0)),
                            u32::from(p.day.unwrap_or(0)),
                        ),
                        _ => None,
                    };
                    let range = e
                        .parameter(&ICalendarParameterName::Range)
                        .is_some_and(|v| {
                            matches!(v, ICalendarParameterValue::Bool(true))
                                || v.as_text()
                                    .is_some_and(|t| t.eq_ignore_ascii_case("THISANDFUTURE"))
                        });
                    (Some(rid), date, range)
                }
                None => (None, None, false),
            };
        let count = |name: &ICalendarProperty| -> usize {
            props(c, name).map(|e| e.values.len().max(1)).sum()
        };
        if count(&ICalendarProperty::Rrule) > bounds::MAX_RULES {
            return Err(IcalError::TooLarge(format!(
                "more than {} RRULEs on one VEVENT",
                bounds::MAX_RULES
            )));
        }
        for (name, label) in [
            (ICalendarProperty::Rdate, "RDATE"),
            (ICalendarProperty::Exdate, "EXDATE"),
        ] {
            if count(&name) > bounds::MAX_DATES {
                return Err(IcalError::TooLarge(format!(
                    "more than {} {label} values on one VEVENT",
                    bounds::MAX_DATES
                )));
            }
        }
        let mut rules = Vec::new();
        for e in props(c, &ICalendarProperty::Rrule) {
            for v in &e.values {
                let ICalendarValue::RecurrenceRule(r) = v else {
                    return Err(IcalError::BadRule("RRULE does not parse".into()));
                };
                let text = r
                    .to_string()
                    .split(';')
                    .filter(|p| !p.to_ascii_uppercase().starts_with("UNTIL="))
                    .collect::<Vec<_>>()
                    .join(";");
                let until = r.until.as_ref().map(until_value).transpose()?;
                rules.push(Rule { text, until });
            }
        }
        let mut rdates = Vec::new();
        let mut periods = Vec::new();
        for e in props(c, &ICalendarProperty::Rdate) {
            for v in &e.values {
                match v {
                    ICalendarValue::PartialDateTime(p) => {
                        rdates.push(self.when_in(e, Some(p.as_ref()), &zone, "RDATE")?);
                    }
                    ICalendarValue::Period(period) => {
                        let (from, to) = self.period(e, period, &zone)?;
                        rdates.push(from);
                        periods.push((from, to));
                    }
                    _ => return Err(IcalError::BadTime("RDATE")),
                }
            }
        }
        let mut exdates = Vec::new();
        for e in props(c, &ICalendarProperty::Exdate) {
            for v in &e.values {
                let p = v
                    .as_partial_date_time()
                    .ok_or(IcalError::BadTime("EXDATE"))?;
                exdates.push(self.when_in(e, Some(p), &zone, "EXDATE")?);
            }
        }
        let status = match text(c, &ICalendarProperty::Status)
            .map(str::to_ascii_uppercase)
            .as_deref()
        {
            Some("TENTATIVE") => EventStatus::Tentative,
            Some("CANCELLED") => EventStatus::Cancelled,
            _ => EventStatus::Confirmed,
        };
        let transparency = match text(c, &ICalendarProperty::Transp)
            .map(str::to_ascii_uppercase)
            .as_deref()
        {
            Some("TRANSPARENT") => Transparency::Transparent,
            _ => Transparency::Opaque,
        };
        let attendees = props(c, &ICalendarProperty::Attendee)
            .take(bounds::MAX_ATTENDEES)
            .filter_map(attendee)
            .collect();
        let organizer = prop(c, &ICalendarProperty::Organizer).and_then(|e| {
            let email = address(e)?;
            Some(pb::Organizer {
                email,
                display_name: param_text(e, &ICalendarParameterName::Cn).unwrap_or_default(),
            })
        });
        Ok(VEvent {
            uid: text(c, &ICalendarProperty::Uid)
                .unwrap_or_default()
                .trim()
                .to_string(),
            start,
            zone,
            end,
            recurrence_id,
            recurrence_date,
            this_and_future,
            rules,
            rdates,
            periods,
            exdates,
            summary: text(c, &ICalendarProperty::Summary)
                .unwrap_or_default()
                .to_string(),
            description: text(c, &ICalendarProperty::Description)
                .unwrap_or_default()
                .to_string(),
            location: text(c, &ICalendarProperty::Location)
                .unwrap_or_default()
                .to_string(),
            status,
            transparency,
            attendees,
            organizer,
            created: self.utc_prop(c, &ICalendarProperty::Created),
            last_modified: self.utc_prop(c, &ICalendarProperty::LastModified),
            dtstamp: self.utc_prop(c, &ICalendarProperty::Dtstamp),
            sequence: prop(c, &ICalendarProperty::Sequence)
                .and_then(|e| e.values.first())
                .and_then(|v| v.as_integer())
                .and_then(|i| u32::try_from(i).ok())
                .unwrap_or(0),
        })
    }

    /// The IANA zone floating values are read in.
    fn floating_tz(&self) -> Tz {
        match &self.floating {
            Zone::Named(z) => *z,
            Zone::Custom(_) => Tz::UTC,
        }
    }

    /// An RDATE period's start and end (a date-time range, or a start and
    /// a duration), the end not before the start.
    fn period(
        &self,
        e: &ICalendarEntry,
        period: &ICalendarPeriod,
        zone: &Zone,
    ) -> Result<(When, When), IcalError> {
        let (from, to) = match period {
            ICalendarPeriod::Range { start, end } => (
                self.when_in(e, Some(start), zone, "RDATE")?,
                self.when_in(e, Some(end), zone, "RDATE")?,
            ),
            ICalendarPeriod::Duration { start, duration } => {
                let from = self.when_in(e, Some(start), zone, "RDATE")?;
                let to = duration
                    .to_time_delta()
                    .and_then(|d| from.plus(d))
                    .ok_or(IcalError::BadTime("RDATE"))?;
                (from, to)
            }
        };
        match (from, to) {
            (When::At(s, _), When::At(e, _)) if e >= s => Ok((from, to)),
            (When::At(..), When::At(..)) => Err(IcalError::EndsBeforeStart),
            _ => Err(IcalError::BadTime("RDATE")),
        }
    }

    /// A date or date-time value, zoned by its TZID, floating otherwise.
    fn when(
        &self,
        e: &ICalendarEntry,
        p: Option<&PartialDateTime>,
        what: &'static str,
    ) -> Result<When, IcalError> {
        self.when_in(e, p, &self.floating, what)
    }

    /// As [`Reader::when`], reading values without TZID or `Z` in
    /// `floating` (RDATE/EXDATE/RECURRENCE-ID follow their DTSTART).
    fn when_in(
        &self,
        e: &ICalendarEntry,
        p: Option<&PartialDateTime>,
        floating: &Zone,
        what: &'static str,
    ) -> Result<When, IcalError> {
        let bad = || IcalError::BadTime(what);
        let p = p.ok_or_else(bad)?;
        let date = NaiveDate::from_ymd_opt(
            i32::from(p.year.ok_or_else(bad)?),
            u32::from(p.month.ok_or_else(bad)?),
            u32::from(p.day.ok_or_else(bad)?),
        )
        .ok_or_else(bad)?;
        if !p.has_time() {
            return Ok(When::Date(date));
        }
        let naive = date
            .and_hms_opt(
                u32::from(p.hour.ok_or_else(bad)?),
                u32::from(p.minute.ok_or_else(bad)?),
                u32::from(p.second.unwrap_or(0).min(59)),
            )
            .ok_or_else(bad)?;
        if let Some(h) = p.tz_hour {
            let secs = i64::from(h) * 3600 + i64::from(p.tz_minute.unwrap_or(0)) * 60;
            let offset = if p.tz_minus { -secs } else { secs };
            return Ok(When::At(
                Utc.from_utc_datetime(&(naive - Duration::seconds(offset))),
                Tz::UTC,
            ));
        }
        let zone = self.zone_of(e, floating)?;
        let t = zone.to_utc(naive);
        Ok(When::At(t, zone.label_at(t)))
    }

    /// The zone a value's TZID stands for; `floating` when it has none, or
    /// names nothing and has no VTIMEZONE. A VTIMEZONE that cannot be read
    /// makes the value unreadable.
    fn zone_of(&self, e: &ICalendarEntry, floating: &Zone) -> Result<Zone, IcalError> {
        let Some(tzid) = e.tz_id() else {
            return Ok(floating.clone());
        };
        if let Some(known) = self.zones.borrow().get(tzid) {
            return Ok(known.clone().unwrap_or_else(|| floating.clone()));
        }
        let custom = self
            .zones
            .borrow()
            .values()
            .filter(|z| matches!(z, Some(Zone::Custom(_))))
            .count();
        let zone = zone_for_tzid(self.ical, tzid).map_err(IcalError::BadZone)?;
        match &zone {
            Some(Zone::Custom(c)) => {
                if custom >= bounds::MAX_CUSTOM_ZONES {
                    return Err(IcalError::TooLarge(format!(
                        "more than {} custom VTIMEZONEs",
                        bounds::MAX_CUSTOM_ZONES
                    )));
                }
                self.steps.set(self.steps.get() + c.steps);
            }
            Some(Zone::Named(_)) => {}
            None => tracing::warn!("unknown TZID in an event; reading its times as floating"),
        }
        self.zones
            .borrow_mut()
            .insert(tzid.to_string(), zone.clone());
        Ok(zone.unwrap_or_else(|| floating.clone()))
    }

    fn utc_prop(&self, c: &ICalendarComponent, name: &ICalendarProperty) -> Option<DateTime<Utc>> {
        let e = prop(c, name)?;
        match self.when(e, first_dt(e), "a time stamp").ok()? {
            When::At(t, _) => Some(t),
            When::Date(d) => Some(Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0)?)),
        }
    }
}

fn until_value(p: &PartialDateTime) -> Result<UntilValue, IcalError> {
    let bad = || IcalError::BadRule("UNTIL is not a valid date or date-time".into());
    let date = NaiveDate::from_ymd_opt(
        i32::from(p.year.ok_or_else(bad)?),
        u32::from(p.month.ok_or_else(bad)?),
        u32::from(p.day.ok_or_else(bad)?),
    )
    .ok_or_else(bad)?;
    if !p.has_time() {
        return Ok(UntilValue::Date(date));
    }
    let naive = date
        .and_hms_opt(
            u32::from(p.hour.unwrap_or(0)),
            u32::from(p.minute.unwrap_or(0)),
            u32::from(p.second.unwrap_or(0).min(59)),
        )
        .ok_or_else(bad)?;
    Ok(if p.tz_hour.is_some() {
        UntilValue::Utc(Utc.from_utc_datetime(&naive))
    } else {
        UntilValue::Local(naive)
    })
}

fn prop<'a>(c: &'a ICalendarComponent, name: &ICalendarProperty) -> Option<&'a ICalendarEntry> {
    c.entries.iter().find(|e| &e.name == name)
}

fn props<'a>(
    c: &'a ICalendarComponent,
    name: &'a ICalendarProperty,
) -> impl Iterator<Item = &'a ICalendarEntry> + 'a {
    c.entries.iter().filter(move |e| &e.name == name)
}

fn first_dt(e: &ICalendarEntry) -> Option<&PartialDateTime> {
    e.values.first().and_then(|v| v.as_partial_date_time())
}

fn text<'a>(c: &'a ICalendarComponent, name: &ICalendarProperty) -> Option<&'a str> {
    prop(c, name)?.values.first()?.as_text()
}

fn param_text(e: &ICalendarEntry, name: &ICalendarParameterName) -> Option<String> {
    e.parameter(name)
        .and_then(|v| v.as_text())
        .map(|s| s.trim_matches('"').to_string())
}

/// The e-mail address of a `mailto:` calendar user address.
fn address(e: &ICalendarEntry) -> Option<String> {
    let v = e.values.first()?.as_text()?.trim();
    let email = match v.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case("mailto:") => &v[7..],
        _ => v,
    };
    (!email.is_empty() && email.len() <= calbridge::limits::MAX_EMAIL_BYTES)
        .then(|| email.to_string())
}

fn attendee(e: &ICalendarEntry) -> Option<pb::Attendee> {
    let email = address(e)?;
    let response_status = match param_text(e, &ICalendarParameterName::Partstat)
        .map(|s| s.to_ascii_uppercase())
        .as_deref()
    {
        Some("ACCEPTED") => ResponseStatus::Accepted,
        Some("DECLINED") => ResponseStatus::Declined,
        Some("TENTATIVE") => ResponseStatus::Tentative,
        Some("NEEDS-ACTION") | None => ResponseStatus::NeedsAction,
        Some(_) => ResponseStatus::Unspecified,
    };
    let optional = param_text(e, &ICalendarParameterName::Role)
        .is_some_and(|r| r.eq_ignore_ascii_case("OPT-PARTICIPANT"));
    Some(pb::Attendee {
        email,
        display_name: param_text(e, &ICalendarParameterName::Cn).unwrap_or_default(),
        response_status: response_status as i32,
        optional,
    })
}

/// Builds the contract's event for one VEVENT occurrence.
pub struct EventParts<'a> {
    /// The VEVENT the fields come from.
    pub vevent: &'a VEvent,
    /// The provider event id.
    pub id: String,
    /// The resource's etag.
    pub etag: &'a str,
    /// The occurrence's start.
    pub start: When,
    /// The occurrence's end.
    pub end: When,
    /// The link to the series, for instances.
    pub link: Option<pb::RecurrenceLink>,
    /// Strip content (FREE_BUSY accounts).
    pub busy_only: bool,
}

impl EventParts<'_> {
    /// The event.
    pub fn build(self) -> pb::Event {
        let v = self.vevent;
        let e = pb::Event {
            provider_event_id: self.id,
            ical_uid: v.uid.clone(),
            version: self.etag.to_string(),
            start: Some(self.start.event_time()),
            end: Some(self.end.event_time()),
            status: v.status as i32,
            transparency: v.transparency as i32,
            recurrence_link: self.link,
            created_at: v.created.map(calbridge::time::to_timestamp),
            updated_at: v.last_modified.map(calbridge::time::to_timestamp),
            ..Default::default()
        };
        if self.busy_only {
            return calbridge::adapter::free_busy_view(e);
        }
        pb::Event {
            title: v.summary.clone(),
            description: v.description.clone(),
            location: v.location.clone(),
            attendees: v.attendees.clone(),
            organizer: v.organizer.clone(),
            ..e
        }
    }
}
