//! How the benchmark binaries print their figures: percentiles of
//! latencies, in milliseconds, one line per measurement.

use std::time::Duration;

/// The `p` quantile (0 to 1) of `v` (sorted in place).
pub fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// `d` in milliseconds with two decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Prints `name` with the median and the 99th percentile of `v`.
pub fn summary(name: &str, v: &mut [Duration]) {
    let p50 = pct(v, 0.5);
    let p99 = pct(v, 0.99);
    println!(
        "{name:<58} p50 {:>10}  p99 {:>10}  (n={})",
        ms(p50),
        ms(p99),
        v.len()
    );
}
