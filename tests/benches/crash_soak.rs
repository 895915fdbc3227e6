//! Crash soak: kill -9 under load for many cycles, then every invariant
//! checked after each (see `calbridge_e2e::soak` and
//! `calbridge_e2e::invariants`). Prints figures and every violation found;
//! exits non-zero when it found any.
//!
//! Run with
//! `cargo build --release --workspace --bins &&
//!  CALBRIDGE_TEST_PYTHON=$PWD/target/test-env/bin/python cargo bench -p calbridge-e2e --bench crash_soak -- --cycles 1000 --seed 7`
//! (or `SOAK_CYCLES` and `SOAK_SEED`; defaults 100 cycles, seed 1;
//! `SOAK_QUIET=1` leaves out the line per cycle; `SOAK_LOG_DIR=DIR` keeps
//! every process's and proxy's log of a cycle that found violations;
//! `SOAK_GHOSTS=1` restarts a killed process at once, without waiting for
//! the requests it sent, so that they may land after the restart).
//!
//! Each cycle: two tenants write (UpsertEvent create/update, DeleteEvent),
//! a user edits outside at Radicale and at the fake Google (which pushes
//! through the Google adapter's webhook), an account may be revoked and
//! connected again; one calbridge process is killed at a seeded random
//! point (the scheduler every other cycle, each adapter in turn otherwise;
//! preferably just after the provider accepted a write, while a sync page
//! is read, or while a revocation stops a channel), restarted, the load
//! goes on briefly, stops, and the mirrors must converge to the providers
//! with every write once, every feed gapless and free of echoes.

use anyhow::{bail, Result};
use calbridge_e2e::soak::{self, SoakConfig};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn setting(flag: &str, env: &str, default: u64) -> u64 {
    arg(flag)
        .or_else(|| std::env::var(env).ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> Result<()> {
    let cycles = setting("--cycles", "SOAK_CYCLES", 100) as u32;
    let seed = setting("--seed", "SOAK_SEED", 1);
    let mut cfg = SoakConfig::new(cycles, seed);
    cfg.progress = std::env::var("SOAK_QUIET").is_err();
    cfg.log_dir = std::env::var_os("SOAK_LOG_DIR").map(Into::into);
    cfg.drain_before_restart = std::env::var("SOAK_GHOSTS").is_err();
    let report = soak::run_with(cfg).await?;
    println!("{report}");
    if !report.violations.is_empty() {
        bail!("{} violations found", report.violations.len());
    }
    Ok(())
}
