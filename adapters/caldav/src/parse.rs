//! Reading iCalendar text into `calcard`'s model, refusing structurally
//! broken input, and the error an unreadable calendar object raises. The
//! lowest layer of the iCalendar code: `zones` and `mapping` build on it.

use calcard::icalendar::ICalendar;
use calcard::{Entry, Parser};

/// Why an iCalendar object cannot be read. Messages never quote content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IcalError {
    /// The data is not an iCalendar object at all.
    #[error("not an iCalendar object: {0}")]
    NotICalendar(String),
    /// The object is structurally broken (unterminated or mismatched
    /// components).
    #[error("broken iCalendar structure: {0}")]
    Broken(String),
    /// The object holds no VEVENT.
    #[error("the object holds no VEVENT")]
    NoEvent,
    /// A VEVENT lacks its DTSTART.
    #[error("a VEVENT has no DTSTART")]
    MissingStart,
    /// A date or time property does not parse.
    #[error("{0} is not a valid date or date-time")]
    BadTime(&'static str),
    /// The event ends before it starts (DTEND, a negative DURATION, or an
    /// RDATE period): there is no length to guess.
    #[error("the event ends before it starts")]
    EndsBeforeStart,
    /// A VTIMEZONE that names no known zone cannot be read from its own
    /// rules (the reason says why, never quoting content).
    #[error("a VTIMEZONE cannot be read: {0}")]
    BadZone(String),
    /// A recurrence rule does not parse or does not fit its DTSTART.
    #[error("invalid recurrence rule: {0}")]
    BadRule(String),
    /// The object exceeds one of the bounds of the mapping (size,
    /// components, rules or dates).
    #[error("the object is too large: {0}")]
    TooLarge(String),
    /// Expanding the series would take more work than one series may
    /// (a rule producing instances every second or minute from long ago).
    #[error("the series is too costly to expand: {0}")]
    TooCostly(String),
}

/// Parses iCalendar text into calcard's model, refusing structurally broken
/// input with a clear error.
pub fn parse_calendar(data: &str) -> Result<ICalendar, IcalError> {
    if !data
        .trim_start_matches('\u{feff}')
        .trim_start()
        .to_ascii_uppercase()
        .starts_with("BEGIN:VCALENDAR")
    {
        return Err(IcalError::NotICalendar(
            "it does not start with BEGIN:VCALENDAR".into(),
        ));
    }
    check_nesting(data)?;
    let mut parser = Parser::new(data);
    loop {
        match parser.entry() {
            Entry::ICalendar(ical) => return Ok(ical),
            Entry::InvalidLine(_) => continue,
            Entry::UnexpectedComponentEnd { expected, found } => {
                return Err(IcalError::Broken(format!(
                    "END:{} where END:{} was expected",
                    found.as_str(),
                    expected.as_str()
                )))
            }
            Entry::UnterminatedComponent(c) => {
                return Err(IcalError::Broken(format!("BEGIN:{c} is never ended")))
            }
            Entry::TooManyComponents => {
                return Err(IcalError::Broken("too many components".into()))
            }
            Entry::Eof => return Err(IcalError::NotICalendar("no VCALENDAR found".into())),
            _ => return Err(IcalError::NotICalendar("a vCard, not an iCalendar".into())),
        }
    }
}

/// Checks that BEGIN/END lines nest: calcard forgives truncated objects,
/// and a cut-off resource must not pass for a complete one.
fn check_nesting(data: &str) -> Result<(), IcalError> {
    let mut open: Vec<String> = Vec::new();
    for line in data.lines() {
        let line = line.trim_end_matches('\r');
        let upper = line.to_ascii_uppercase();
        if let Some(name) = upper.strip_prefix("BEGIN:") {
            open.push(name.trim().to_string());
        } else if let Some(name) = upper.strip_prefix("END:") {
            match open.pop() {
                Some(o) if o == name.trim() => {}
                Some(o) => {
                    return Err(IcalError::Broken(format!(
                        "END:{} where END:{o} was expected",
                        name.trim()
                    )))
                }
                None => {
                    return Err(IcalError::Broken(format!(
                        "END:{} without BEGIN",
                        name.trim()
                    )))
                }
            }
        }
    }
    match open.pop() {
        Some(o) => Err(IcalError::Broken(format!("BEGIN:{o} is never ended"))),
        None => Ok(()),
    }
}
