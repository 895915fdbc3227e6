//! The crash soak in the normal suite: 20 cycles of kill -9 (the scheduler
//! every other cycle, each adapter in turn otherwise) under write, outside
//! edit, push and revocation load, each followed by the full check of
//! `calbridge_e2e::invariants`. The long run is the `crash_soak` bench.

use anyhow::Result;
use calbridge_e2e::soak::{self, SoakConfig};

#[tokio::test(flavor = "multi_thread")]
async fn twenty_kill_9_cycles_under_load_keep_writes_once_mirrors_exact_and_feeds_gapless(
) -> Result<()> {
    let seed = std::env::var("CALBRIDGE_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_260_611);
    let mut cfg = SoakConfig::new(20, seed);
    cfg.max_load = std::time::Duration::from_millis(900);
    cfg.revoke_chance = 0.25;
    cfg.progress = true;
    // Every log of a cycle that found violations, when asked for.
    cfg.log_dir = std::env::var_os("CALBRIDGE_SOAK_LOG_DIR").map(Into::into);
    let report = soak::run_with(cfg).await?;
    eprintln!("{report}");
    assert!(report.violations.is_empty(), "{report}");
    for p in ["scheduler", "caldav adapter", "google adapter"] {
        assert!(report.kills.get(p).copied().unwrap_or(0) >= 1, "{report}");
    }
    assert!(
        report.upserts_acked > 20 && report.deletes_acked > 0,
        "{report}"
    );
    assert!(report.outside_edits > 20, "{report}");
    assert!(
        report.revocations >= 1 && report.reconnections >= 1,
        "{report}"
    );
    Ok(())
}
