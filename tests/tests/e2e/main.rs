//! End-to-end tests: the real binaries as separate processes on loopback,
//! with a real store on disk. Build the binaries first
//! (`cargo build --workspace --bins`); `scripts/test` does.

mod availability;
mod bad_input;
mod caldav;
mod crash;
mod drift;
mod fairness;
mod faults;
mod google;
mod graph_sdk;
mod hostile;
mod icloud;
mod identity;
mod keys;
mod listing;
mod metrics;
mod microsoft;
mod mtls;
mod oauth;
mod python_client;
mod retried_writes;
mod revocation;
mod soak;
mod sync;
mod tracing;
mod walkthrough;
