//! A VTIMEZONE evaluated from its own observances: for a TZID that names
//! no known zone ("Customized Time Zone", a vendor's private name), the
//! STANDARD and DAYLIGHT sub-components say when the offset changes
//! (DTSTART, RRULE and RDATE onsets, read in the offset they change from)
//! and to what (TZOFFSETTO). The work is bounded, since the VTIMEZONE comes
//! from the server like everything else: at most [`limits::MAX_OBSERVANCES`]
//! sub-components, [`limits::MAX_STEPS`] onsets stepped through in all, and
//! only the transitions of years [`limits::FIRST_YEAR`] to
//! [`limits::LAST_YEAR`] are kept (earlier ones settle the offset the zone
//! starts with; after the last one the last offset holds). A VTIMEZONE
//! beyond a bound, or missing what it needs, is unreadable: the caller
//! refuses the times that use it rather than guess.

use calcard::common::PartialDateTime;
use calcard::icalendar::{
    ICalendar, ICalendarComponent, ICalendarComponentType, ICalendarPeriod, ICalendarProperty,
    ICalendarValue,
};
use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;

/// The bounds a custom VTIMEZONE is held to.
pub mod limits {
    /// The first year whose transitions are kept.
    pub const FIRST_YEAR: i32 = 1900;
    /// The last year whose transitions are kept (and stepped through).
    pub const LAST_YEAR: i32 = 2200;
    /// The most STANDARD/DAYLIGHT sub-components of one VTIMEZONE.
    pub const MAX_OBSERVANCES: usize = 500;
    /// The most onsets (DTSTART, RRULE candidates, RDATE values) stepped
    /// through for one VTIMEZONE: two yearly rules from 1601 take 1,200.
    pub const MAX_STEPS: usize = 10_000;
    /// The largest UTC offset accepted, in seconds (RFC 5545 offsets are
    /// below 24 hours; real ones within 14).
    pub const MAX_OFFSET_SECS: i32 = 18 * 3600;
}

/// A zone read from a VTIMEZONE's own rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomZone {
    /// The offset (seconds east of UTC) before the first kept transition.
    initial: i32,
    /// The kept transitions: from this instant on, this offset. Sorted,
    /// distinct instants.
    transitions: Vec<(DateTime<Utc>, i32)>,
    /// A known zone with the same standard and daylight offsets, named as
    /// the times' zone where its offset agrees (see [`CustomZone::label_at`]).
    lookalike: Option<Tz>,
    /// The onsets stepped through to read it (the work done).
    pub steps: usize,
}

/// One observance onset: when (UTC), and the offsets around it.
struct Onset {
    at: DateTime<Utc>,
    to: i32,
}

impl CustomZone {
    /// Reads the VTIMEZONE `vtz` of `ical`; the error says (without quoting
    /// content) why it cannot be read.
    pub fn from_vtimezone(
        ical: &ICalendar,
        vtz: &ICalendarComponent,
        lookalike: Option<Tz>,
    ) -> Result<CustomZone, String> {
        if vtz.component_ids.len() > limits::MAX_OBSERVANCES {
            return Err(format!(
                "more than {} STANDARD/DAYLIGHT components",
                limits::MAX_OBSERVANCES
            ));
        }
        let mut onsets: Vec<Onset> = Vec::new();
        let mut steps = 0usize;
        for id in &vtz.component_ids {
            let Some(sub) = ical.components.get(*id as usize) else {
                continue;
            };
            if !matches!(
                sub.component_type,
                ICalendarComponentType::Standard | ICalendarComponentType::Daylight
            ) {
                continue;
            }
            observance(sub, &mut onsets, &mut steps)?;
        }
        if onsets.is_empty() {
            return Err("no STANDARD or DAYLIGHT component".into());
        }
        // Stable: of onsets at one instant, the last written wins.
        onsets.sort_by_key(|o| o.at);
        let first_kept = year_start(limits::FIRST_YEAR);
        let mut initial = None;
        let mut transitions: Vec<(DateTime<Utc>, i32)> = Vec::new();
        for o in &onsets {
            if o.at < first_kept {
                initial = Some(o.to);
                continue;
            }
            match transitions.last_mut() {
                Some(last) if last.0 == o.at => last.1 = o.to,
                _ => transitions.push((o.at, o.to)),
            }
        }
        let initial = match initial {
            Some(offset) => offset,
            // Before its first onset a zone keeps the offset that onset
            // changes from.
            None => first_from(ical, vtz).unwrap_or(onsets[0].to),
        };
        Ok(CustomZone {
            initial,
            transitions,
            lookalike,
            steps,
        })
    }

    /// The offset (seconds east of UTC) in force at `t`.
    pub fn offset_at(&self, t: DateTime<Utc>) -> i32 {
        match self.transitions.partition_point(|(at, _)| *at <= t) {
            0 => self.initial,
            i => self.transitions[i - 1].1,
        }
    }

    /// The wall-clock time at `t`.
    pub fn to_local(&self, t: DateTime<Utc>) -> NaiveDateTime {
        t.naive_utc() + Duration::seconds(i64::from(self.offset_at(t)))
    }

    /// A wall-clock time as UTC, by RFC 5545's rules: a repeated time means
    /// its first occurrence; a skipped time (in a gap) is read with the
    /// offset from before the gap.
    pub fn to_utc(&self, local: NaiveDateTime) -> DateTime<Utc> {
        let read =
            |offset: i32| Utc.from_utc_datetime(&(local - Duration::seconds(i64::from(offset))));
        // The offsets that may apply: those around the transitions near
        // this time (offsets stay within a day, so look a day each way).
        let near = Utc.from_utc_datetime(&local);
        let lo = self
            .transitions
            .partition_point(|(at, _)| *at < near - Duration::days(1));
        let hi = self
            .transitions
            .partition_point(|(at, _)| *at <= near + Duration::days(1));
        let mut candidates: Vec<i32> = vec![match lo {
            0 => self.initial,
            i => self.transitions[i - 1].1,
        }];
        candidates.extend(self.transitions[lo..hi].iter().map(|(_, o)| *o));
        let valid = candidates
            .iter()
            .map(|o| read(*o))
            .filter(|t| self.to_local(*t) == local)
            .min();
        if let Some(t) = valid {
            return t;
        }
        // In a gap: the transition whose skipped span holds this time.
        for i in lo..hi {
            let (at, to) = self.transitions[i];
            let from = if i == 0 {
                self.initial
            } else {
                self.transitions[i - 1].1
            };
            let gap_start = at.naive_utc() + Duration::seconds(i64::from(from));
            let gap_end = at.naive_utc() + Duration::seconds(i64::from(to));
            if local >= gap_start && local < gap_end {
                return read(from);
            }
        }
        read(self.offset_at(near))
    }

    /// The IANA zone the contract names for a time at `t` read in this
    /// zone: the look-alike known zone when its offset at `t` agrees, else
    /// `Etc/GMT±N` for a whole-hour offset, else UTC. The wall-clock time
    /// in the named zone is always the one written (bar offsets of odd
    /// minutes without a look-alike, named as UTC).
    pub fn label_at(&self, t: DateTime<Utc>) -> Tz {
        let offset = self.offset_at(t);
        if let Some(z) = self.lookalike {
            if z.offset_from_utc_datetime(&t.naive_utc())
                .fix()
                .local_minus_utc()
                == offset
            {
                return z;
            }
        }
        if offset == 0 {
            return Tz::UTC;
        }
        if offset % 3600 == 0 && (-12..=14).contains(&(offset / 3600)) {
            // Etc/GMT signs are inverted (Etc/GMT-2 is UTC+2).
            if let Ok(z) = format!("Etc/GMT{:+}", -offset / 3600).parse() {
                return z;
            }
        }
        Tz::UTC
    }
}

fn year_start(year: i32) -> DateTime<Utc> {
    Utc.from_utc_datetime(
        &NaiveDate::from_ymd_opt(year, 1, 1)
            .expect("a valid year")
            .and_hms_opt(0, 0, 0)
            .expect("midnight"),
    )
}

/// The TZOFFSETFROM of the observance whose DTSTART comes first.
fn first_from(ical: &ICalendar, vtz: &ICalendarComponent) -> Option<i32> {
    vtz.component_ids
        .iter()
        .filter_map(|id| ical.components.get(*id as usize))
        .filter_map(|sub| {
            let start = local_value(first_value(sub, &ICalendarProperty::Dtstart)?)?;
            let from = offset_of(sub, &ICalendarProperty::Tzoffsetfrom)?;
            Some((start, from))
        })
        .min_by_key(|(start, _)| *start)
        .map(|(_, from)| from)
}

/// Adds the onsets of one STANDARD/DAYLIGHT component.
fn observance(
    sub: &ICalendarComponent,
    onsets: &mut Vec<Onset>,
    steps: &mut usize,
) -> Result<(), String> {
    let to = offset_of(sub, &ICalendarProperty::Tzoffsetto)
        .ok_or("an observance without a valid TZOFFSETTO")?;
    // RFC 5545 requires TZOFFSETFROM; without one, read onsets in the
    // offset they change to.
    let from = match sub
        .entries
        .iter()
        .find(|e| e.name == ICalendarProperty::Tzoffsetfrom)
    {
        Some(_) => offset_of(sub, &ICalendarProperty::Tzoffsetfrom)
            .ok_or("an observance with an invalid TZOFFSETFROM")?,
        None => to,
    };
    let start = first_value(sub, &ICalendarProperty::Dtstart)
        .and_then(local_value)
        .ok_or("an observance without a valid DTSTART")?;
    let last = year_start(limits::LAST_YEAR + 1).naive_utc();
    let mut add = |local: NaiveDateTime, steps: &mut usize| -> Result<(), String> {
        *steps += 1;
        if *steps > limits::MAX_STEPS {
            return Err(format!(
                "more than {} transitions to step through",
                limits::MAX_STEPS
            ));
        }
        if local < last {
            onsets.push(Onset {
                at: Utc.from_utc_datetime(&(local - Duration::seconds(i64::from(from)))),
                to,
            });
        }
        Ok(())
    };
    add(start, steps)?;
    for e in sub
        .entries
        .iter()
        .filter(|e| e.name == ICalendarProperty::Rdate)
    {
        for v in &e.values {
            let p = match v {
                ICalendarValue::PartialDateTime(p) => p.as_ref(),
                ICalendarValue::Period(
                    ICalendarPeriod::Range { start, .. } | ICalendarPeriod::Duration { start, .. },
                ) => start,
                _ => return Err("an observance with an invalid RDATE".into()),
            };
            let local = match utc_value(p) {
                Some(utc) => utc + Duration::seconds(i64::from(from)),
                None => local_value(p).ok_or("an observance with an invalid RDATE")?,
            };
            add(local, steps)?;
        }
    }
    for e in sub
        .entries
        .iter()
        .filter(|e| e.name == ICalendarProperty::Rrule)
    {
        for v in &e.values {
            let ICalendarValue::RecurrenceRule(r) = v else {
                return Err("an observance with an invalid RRULE".into());
            };
            let until = match &r.until {
                // UNTIL is UTC in a VTIMEZONE; some producers write it local.
                Some(p) => Some(match utc_value(p) {
                    Some(utc) => utc + Duration::seconds(i64::from(from)),
                    None => local_value(p).ok_or("an observance with an invalid UNTIL")?,
                }),
                None => None,
            };
            let text = r
                .to_string()
                .split(';')
                .filter(|p| !p.to_ascii_uppercase().starts_with("UNTIL="))
                .collect::<Vec<_>>()
                .join(";");
            if !text.is_ascii() {
                return Err("an observance with an invalid RRULE".into());
            }
            let mut rule: rrule::RRule<rrule::Unvalidated> = text
                .parse()
                .map_err(|_| "an observance with an invalid RRULE")?;
            let dt_start = rrule::Tz::UTC.from_utc_datetime(&start);
            match until {
                // A rule that ends before it starts adds nothing.
                Some(u) if u < start => continue,
                Some(u) => rule = rule.until(rrule::Tz::UTC.from_utc_datetime(&u)),
                None => {}
            }
            let rule = rule
                .validate(dt_start)
                .map_err(|_| "an observance with an invalid RRULE")?;
            let set = rrule::RRuleSet::new(dt_start).rrule(rule).limit();
            for d in &set {
                let local = d.naive_utc();
                if local.year() > limits::LAST_YEAR {
                    break;
                }
                if local != start {
                    add(local, steps)?;
                }
            }
        }
    }
    Ok(())
}

fn first_value<'a>(
    c: &'a ICalendarComponent,
    name: &ICalendarProperty,
) -> Option<&'a PartialDateTime> {
    c.entries
        .iter()
        .find(|e| &e.name == name)?
        .values
        .first()?
        .as_partial_date_time()
}

/// A date-time value's wall-clock time (a date's midnight), whatever its
/// offset says.
fn local_value(p: &PartialDateTime) -> Option<NaiveDateTime> {
    let date = NaiveDate::from_ymd_opt(i32::from(p.year?), u32::from(p.month?), u32::from(p.day?))?;
    date.and_hms_opt(
        u32::from(p.hour.unwrap_or(0)),
        u32::from(p.minute.unwrap_or(0)),
        u32::from(p.second.unwrap_or(0).min(59)),
    )
}

/// A date-time value with an offset (`Z`) as UTC, as a naive time.
fn utc_value(p: &PartialDateTime) -> Option<NaiveDateTime> {
    let local = local_value(p)?;
    let h = p.tz_hour?;
    let secs = i64::from(h) * 3600 + i64::from(p.tz_minute.unwrap_or(0)) * 60;
    Some(local - Duration::seconds(if p.tz_minus { -secs } else { secs }))
}

/// A UTC offset property (`+0100`, `-0530`, `+013045`) in seconds, within
/// [`limits::MAX_OFFSET_SECS`].
fn offset_of(c: &ICalendarComponent, name: &ICalendarProperty) -> Option<i32> {
    let v = c.entries.iter().find(|e| &e.name == name)?.values.first()?;
    let secs = match v {
        ICalendarValue::PartialDateTime(p) => {
            let secs = i32::from(p.tz_hour?) * 3600 + i32::from(p.tz_minute.unwrap_or(0)) * 60;
            if p.tz_minus {
                -secs
            } else {
                secs
            }
        }
        ICalendarValue::Integer(i) => {
            let i = i32::try_from(*i).ok()?;
            (i / 100) * 3600 + (i % 100) * 60
        }
        ICalendarValue::Text(t) => {
            let t = t.trim();
            let (sign, rest) = match t.as_bytes().first()? {
                b'-' => (-1, t.get(1..)?),
                b'+' => (1, t.get(1..)?),
                _ => (1, t),
            };
            let h: i32 = rest.get(0..2)?.parse().ok()?;
            let m: i32 = rest.get(2..4)?.parse().ok()?;
            let s: i32 = rest.get(4..6).map_or(Some(0), |s| s.parse().ok())?;
            sign * (h * 3600 + m * 60 + s)
        }
        _ => return None,
    };
    (secs.abs() <= limits::MAX_OFFSET_SECS).then_some(secs)
}

#[cfg(test)]
mod tests;
