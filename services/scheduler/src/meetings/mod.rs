//! Availability over the mirror: turns `QueryAvailability`,
//! `QuerySequencedAvailability` and `ExplainAvailability` requests into the
//! pure engine's inputs (busy intervals from the time index, the tenant's live
//! holds, stored or inline working hours), runs the engine, and maps its
//! answers back. Also owns holds and stored working hours. No event content
//! is opened: the time index alone answers.
//!
//! Participants are built once and kept in an [`AvailabilityCache`]
//! (`crate::busy`) until
//! one of their inputs changes, so that an unchanged participant costs a
//! lookup and the in-memory read of its calendars' freshness (which changes
//! with every poll and is therefore never cached).

#[cfg(any(test, feature = "bench-fixtures"))]
mod fixtures;
mod holds;
mod hours;
mod participants;
mod query;
#[cfg(test)]
mod tests;

pub use crate::busy::participants::*;
#[cfg(any(test, feature = "bench-fixtures"))]
pub use fixtures::*;
pub use holds::*;
pub use hours::*;
use participants::*;
pub use query::*;

use foldhash::{HashMap, HashMapExt};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use calbridge::pb::{self, UnavailableReason};
use calbridge::time::{from_timestamp, to_timestamp};
use calbridge::validate::check_id;
use calbridge::{limits, ErrorKind, Invalid};
use chrono::{NaiveDate, NaiveTime, Timelike, Weekday};
use chrono_tz::Tz;
use prost::Message;

use crate::availability as engine;
use crate::clock::{now_ms, ts_ms as ts};
use crate::crypto::random_hex;
use crate::state::Shared;
use crate::store::{CalendarRecord, HoldRecord};

/// One day, ms.
const DAY_MS: i64 = 86_400_000;

/// How far around the query periods busy time is read, at least: a local
/// week for weekly caps plus a day for buffers and all-day events. The read
/// range is then rounded out to whole UTC days, so that requests whose
/// periods move with "now" share cached participants for a day.
const READ_MARGIN_MS: i64 = 8 * DAY_MS;
