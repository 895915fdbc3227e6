//! The scheduler's own metrics (beside the gRPC ones every process records,
//! see `calbridge_runtime::metrics`): sync lag and failures, the outbox,
//! the change feed, push channels, availability latency and the store's
//! size. Gauges are read from the store when metrics are collected (a
//! scrape, or the OTLP export's interval), not kept up to date on every
//! change. No attribute names a tenant, account, calendar or event.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Instant;

use calbridge::pb;
use calbridge::ErrorKind;
use calbridge_runtime::metrics::{meter, seconds_histogram, AGE_BUCKETS, DURATION_BUCKETS};
use opentelemetry::metrics::{Counter, Histogram, ObservableGauge};
use opentelemetry::KeyValue;

use crate::clock::now_ms;
use crate::state::Shared;

/// Live `WatchChanges` streams.
static WATCHERS: AtomicI64 = AtomicI64::new(0);

/// The provider's name as a label value (`google`, `caldav`, ...).
pub fn provider_label(provider: pb::Provider) -> &'static str {
    crate::providers::info(provider).map_or("unknown", |p| p.key)
}

/// The gauges read at collection time; dropping this unregisters nothing
/// but ends the store reads (their callbacks hold the state weakly).
pub struct Gauges {
    _gauges: Vec<ObservableGauge<f64>>,
    _counts: Vec<ObservableGauge<u64>>,
}

/// Registers the gauges over `shared`'s store.
pub fn install(shared: &Arc<Shared>) -> Gauges {
    let m = meter();
    let weak = Arc::downgrade(shared);
    let with = move |f: fn(&Shared) -> Option<f64>| {
        let weak: Weak<Shared> = weak.clone();
        move || weak.upgrade().and_then(|s| f(&s))
    };
    let outbox_depth = with(|s| s.store.outbox_len().ok().map(|n| n as f64));
    let outbox_age = with(|s| {
        let oldest = s.store.outbox_oldest_created_ms().ok()?;
        Some(oldest.map_or(0.0, |t| ((now_ms() - t).max(0) as f64) / 1000.0))
    });
    let head = with(|s| s.store.log_heads_total().ok().map(|n| n as f64));
    let channels = with(|s| s.store.channel_count().ok().map(|n| n as f64));
    let size = with(|s| s.store.size_on_disk().ok().map(|n| n as f64));
    let lag = with(|s| {
        let now = now_ms();
        let states = s.store.all_sync_states().ok()?;
        let oldest = states
            .iter()
            .filter(|(_, _, st)| !st.paused && !st.disabled)
            .filter_map(|(_, _, st)| st.last_success_ms)
            .min();
        Some(oldest.map_or(0.0, |t| ((now - t).max(0) as f64) / 1000.0))
    });
    let gauge = |name: &'static str,
                 unit: &'static str,
                 description: &'static str,
                 read: Box<dyn Fn() -> Option<f64> + Send + Sync>| {
        m.f64_observable_gauge(name)
            .with_unit(unit)
            .with_description(description)
            .with_callback(move |o| {
                if let Some(v) = read() {
                    o.observe(v, &[]);
                }
            })
            .build()
    };
    let gauges = vec![
        gauge(
            "calbridge.outbox.depth",
            "",
            "Writes accepted but not yet confirmed by the provider (returns to 0 when the providers answer).",
            Box::new(outbox_depth),
        ),
        gauge(
            "calbridge.outbox.oldest_entry_age",
            "s",
            "Age of the oldest write not yet confirmed by the provider (0 when none).",
            Box::new(outbox_age),
        ),
        gauge(
            "calbridge.change_feed.head_sequence",
            "",
            "The change feed's head: the sum over tenants of the last sequence assigned.",
            Box::new(head),
        ),
        gauge(
            "calbridge.push.channels_active",
            "",
            "Push channels (Google channels, Graph subscriptions) the scheduler holds open.",
            Box::new(channels),
        ),
        gauge(
            "calbridge.store.size",
            "By",
            "Size of the scheduler's store on disk.",
            Box::new(size),
        ),
        gauge(
            "calbridge.sync.lag.max",
            "s",
            "Age of the oldest last successful sync among the calendars being synced (0 when none has synced yet).",
            Box::new(lag),
        ),
    ];
    let watchers = m
        .u64_observable_gauge("calbridge.change_feed.watchers")
        .with_description("Live WatchChanges streams.")
        .with_callback(|o| o.observe(WATCHERS.load(Ordering::Relaxed).max(0) as u64, &[]))
        .build();
    Gauges {
        _gauges: gauges,
        _counts: vec![watchers],
    }
}

/// Counts a live `WatchChanges` stream while it is held.
pub struct Watcher(());

impl Watcher {
    /// A stream starts.
    pub fn start() -> Watcher {
        WATCHERS.fetch_add(1, Ordering::Relaxed);
        Watcher(())
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        WATCHERS.fetch_sub(1, Ordering::Relaxed);
    }
}

fn sync_lag() -> &'static Histogram<f64> {
    static H: OnceLock<Histogram<f64>> = OnceLock::new();
    H.get_or_init(|| {
        seconds_histogram(
            "calbridge.sync.lag",
            "How stale each calendar's mirror had become when a sync brought it up to date: the time since that calendar's previous successful sync.",
            AGE_BUCKETS,
        )
    })
}

/// A calendar synced successfully; `previous_ms` is its last success
/// before this one (none for a first sync, which records nothing).
pub fn sync_succeeded(provider: pb::Provider, previous_ms: Option<i64>) {
    if let Some(previous) = previous_ms {
        let lag = ((now_ms() - previous).max(0) as f64) / 1000.0;
        sync_lag().record(
            lag,
            &[KeyValue::new(
                "calbridge.provider",
                provider_label(provider),
            )],
        );
    }
}

/// A calendar's sync failed with `error`.
pub fn sync_failed(provider: pb::Provider, error: &ErrorKind) {
    static C: OnceLock<Counter<u64>> = OnceLock::new();
    C.get_or_init(|| {
        meter()
            .u64_counter("calbridge.sync.failures")
            .with_description(
                "Calendar syncs that failed, by provider and error type (the gRPC status code's name).",
            )
            .build()
    })
    .add(
        1,
        &[
            KeyValue::new("calbridge.provider", provider_label(provider)),
            KeyValue::new("error.type", code_name(error.code())),
        ],
    );
}

/// A push channel renewal ended: `outcome` is `renewed` or `failed`.
pub fn channel_renewed(provider: pb::Provider, outcome: &'static str) {
    static C: OnceLock<Counter<u64>> = OnceLock::new();
    C.get_or_init(|| {
        meter()
            .u64_counter("calbridge.push.channel_renewals")
            .with_description(
                "Push channel renewals and replacements, by provider and outcome (renewed, failed).",
            )
            .build()
    })
    .add(
        1,
        &[
            KeyValue::new("calbridge.provider", provider_label(provider)),
            KeyValue::new("outcome", outcome),
        ],
    );
}

/// Times one availability request (free/busy, availability, sequenced
/// availability, explain) until dropped.
pub struct AvailabilityTimer {
    method: &'static str,
    start: Instant,
}

impl AvailabilityTimer {
    /// Starts timing `method` (the RPC's name).
    pub fn start(method: &'static str) -> AvailabilityTimer {
        AvailabilityTimer {
            method,
            start: Instant::now(),
        }
    }
}

impl Drop for AvailabilityTimer {
    fn drop(&mut self) {
        static H: OnceLock<Histogram<f64>> = OnceLock::new();
        H.get_or_init(|| {
            seconds_histogram(
                "calbridge.availability.query.duration",
                "Time the scheduler took to answer availability requests, by method.",
                DURATION_BUCKETS,
            )
        })
        .record(
            self.start.elapsed().as_secs_f64(),
            &[KeyValue::new("rpc.method", self.method)],
        );
    }
}

/// The status code's name as a label (`UNAVAILABLE`, ...).
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}
