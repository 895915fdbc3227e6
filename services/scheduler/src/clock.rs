//! Time as the scheduler counts it: milliseconds since the epoch, and their
//! contract `Timestamp`.

use chrono::Utc;

/// The current time in ms since the epoch.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// A `Timestamp` for ms since the epoch (`None` out of range).
pub fn ts_ms(ms: i64) -> Option<prost_types::Timestamp> {
    chrono::DateTime::from_timestamp_millis(ms).map(calbridge::time::to_timestamp)
}
