//! Busy time kept in memory: each calendar's time line of blocking events
//! (what free/busy and availability read, without content), and the
//! availability participants built from them. Both are caches of the
//! mirror, dropped when what they were built from changes.

pub mod participants;
mod timeline;

pub use timeline::{BusyEntry, Timeline, TimelineCache};
