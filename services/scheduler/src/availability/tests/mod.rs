//! Tests of the availability engine: hand-worked examples of every answer
//! format, N-of-M groups, caps, notice, all-day events, sequences and DST
//! across zones, and properties comparing the engine with the brute-force
//! reference.

use chrono::{DateTime, NaiveDate, Weekday};
use chrono_tz::Tz;
use proptest::prelude::*;

use super::*;

const MIN: i64 = 60_000;

fn utc(s: &str) -> i64 {
    DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis()
}

fn timed(id: u64, s: &str, e: &str) -> BusyInterval {
    BusyInterval {
        id,
        span: BusySpan::Timed {
            start_ms: utc(s),
            end_ms: utc(e),
        },
        status: BusyStatus::Busy,
    }
}

fn weekdays(h0: u16, h1: u16) -> WorkingHours {
    let days = [
        Weekday::Mon,
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
    ];
    WorkingHours {
        weekly: days
            .iter()
            .map(|&weekday| WeeklyRule {
                weekday,
                range: LocalRange {
                    start_minute: h0 * 60,
                    end_minute: h1 * 60,
                },
            })
            .collect(),
        overrides: vec![],
    }
}

fn all(members: Vec<usize>) -> Group {
    Group {
        members,
        required: Required::All,
    }
}

fn request(groups: Vec<Group>, minutes: u32, from: &str, to: &str, format: Format) -> Request {
    Request {
        groups,
        duration_minutes: minutes,
        periods: vec![Period {
            start_ms: utc(from),
            end_ms: utc(to),
        }],
        format,
        ..Request::default()
    }
}

fn spans(a: &Answer) -> Vec<(i64, i64)> {
    a.slots.iter().map(|s| (s.start_ms, s.end_ms)).collect()
}

fn span(s: &str, e: &str) -> (i64, i64) {
    (utc(s), utc(e))
}

/// Two UTC people, 09:00–12:00 searched; Alice busy 09:30–10:00, Bob busy
/// 10:45–11:00.
fn two_people() -> Vec<ParticipantData> {
    vec![
        ParticipantData::new(
            chrono_tz::UTC,
            vec![timed(1, "2024-06-03T09:30:00Z", "2024-06-03T10:00:00Z")],
            None,
        ),
        ParticipantData::new(
            chrono_tz::UTC,
            vec![timed(2, "2024-06-03T10:45:00Z", "2024-06-03T11:00:00Z")],
            None,
        ),
    ]
}

mod properties;
mod requests;
mod slots;
mod zones;
