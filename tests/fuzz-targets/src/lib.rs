//! What each fuzz target in `fuzz/` does with one input. The fuzz targets
//! call these functions and nothing else, and `tests/corpus.rs` feeds every
//! committed seed and corpus file to the same functions, so CI replays the
//! corpora without cargo-fuzz.
//!
//! Every function takes arbitrary bytes and must return: no panic, no
//! stack overflow, no hang, no unbounded memory, whatever the input. A
//! property worth more than "does not crash" is asserted where the code
//! promises it (say, a channel token read back encodes to the same route).

pub mod api;
pub mod availability;
pub mod caldav;
pub mod google;

use chrono::{DateTime, TimeZone, Utc};

/// The instant every target takes as now: 2026-01-01T00:00:00Z, so a run
/// does not depend on the day it happens.
pub fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .expect("a valid instant")
}

/// One fuzz target: its name (the file `fuzz/fuzz_targets/<name>.rs` and the
/// directories `fuzz/seeds/<name>/` and `fuzz/corpus/<name>/`) and what it
/// runs on one input.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// The target's name.
    pub name: &'static str,
    /// Runs one input.
    pub run: fn(&[u8]),
}

/// Every fuzz target.
pub const TARGETS: &[Target] = &[
    Target {
        name: "dav_multistatus",
        run: caldav::dav_multistatus,
    },
    Target {
        name: "dav_href",
        run: caldav::dav_href,
    },
    Target {
        name: "ical_object",
        run: caldav::ical_object,
    },
    Target {
        name: "ical_free_busy",
        run: caldav::ical_free_busy,
    },
    Target {
        name: "google_push",
        run: google::google_push,
    },
    Target {
        name: "api_requests",
        run: api::api_requests,
    },
    Target {
        name: "availability",
        run: availability::availability,
    },
];
