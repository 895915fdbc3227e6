//! The adapter's own request budget per Google user: a token bucket per
//! provider account that delays requests over the budget instead of failing
//! them, so one busy account does not run into Google's per-user quota
//! (600 requests per minute, sliding window).
//!
//! The bucket refills at `per_minute / 60` tokens per second and holds at
//! most a tenth of a minute's budget, so no sliding minute ever sees more
//! than 1.1 × `per_minute` requests (550 with the default 500, below
//! Google's 600). Waiting requests reserve their slot (the bucket goes
//! negative), so they are served in arrival order. Accounts are keyed by a
//! hash of their id; idle, full buckets are forgotten.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::time::Instant;

/// Buckets kept before idle ones are pruned.
const PRUNE_ABOVE: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Per-account token buckets.
#[derive(Debug)]
pub struct Limiter {
    rate_per_sec: f64,
    capacity: f64,
    buckets: Mutex<HashMap<[u8; 16], Bucket>>,
}

impl Limiter {
    /// A limiter allowing `per_minute` requests per account and minute.
    pub fn new(per_minute: u32) -> Self {
        let per_minute = f64::from(per_minute.max(1));
        Limiter {
            rate_per_sec: per_minute / 60.0,
            capacity: (per_minute / 10.0).max(1.0),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn key(account: &str) -> [u8; 16] {
        let digest = Sha256::digest(account.as_bytes());
        let mut k = [0u8; 16];
        k.copy_from_slice(&digest[..16]);
        k
    }

    /// Reserves one request for `account` at `now`; returns how long the
    /// caller must wait before sending it.
    pub fn reserve_at(&self, account: &str, now: Instant) -> Duration {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() > PRUNE_ABOVE {
            let (rate, cap) = (self.rate_per_sec, self.capacity);
            buckets.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < cap
            });
        }
        let b = buckets.entry(Self::key(account)).or_insert(Bucket {
            tokens: self.capacity,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate_per_sec).min(self.capacity);
        b.at = now;
        b.tokens -= 1.0;
        if b.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-b.tokens / self.rate_per_sec)
        }
    }

    /// Waits until `account` may send one more request; returns how long
    /// it waited. Requests without an account (before the user is known)
    /// are not limited.
    pub async fn acquire(&self, account: &str) -> Duration {
        if account.is_empty() {
            return Duration::ZERO;
        }
        let wait = self.reserve_at(account, Instant::now());
        if !wait.is_zero() {
            tracing::debug!(
                wait_ms = wait.as_millis() as u64,
                "request budget exhausted; delaying"
            );
            tokio::time::sleep(wait).await;
        }
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_requests_are_spaced_at_the_rate() {
        let l = Limiter::new(600); // 10 per second, bursts of 60
        let t0 = Instant::now();
        for _ in 0..60 {
            assert_eq!(l.reserve_at("alice@example.com", t0), Duration::ZERO);
        }
        let w1 = l.reserve_at("alice@example.com", t0);
        let w2 = l.reserve_at("alice@example.com", t0);
        assert!((w1.as_secs_f64() - 0.1).abs() < 1e-6, "{w1:?}");
        assert!((w2.as_secs_f64() - 0.2).abs() < 1e-6, "{w2:?}");
        // Another account has its own bucket.
        assert_eq!(l.reserve_at("bob@example.com", t0), Duration::ZERO);
        // After a second, ten more slots have refilled (two were reserved).
        let later = t0 + Duration::from_secs(1);
        for _ in 0..8 {
            assert_eq!(l.reserve_at("alice@example.com", later), Duration::ZERO);
        }
        assert!(l.reserve_at("alice@example.com", later) > Duration::ZERO);
    }

    #[test]
    fn no_sliding_minute_sees_more_than_the_budget_and_a_tenth() {
        let l = Limiter::new(500);
        let t0 = Instant::now();
        let mut sent = 0;
        let mut clock = t0;
        // Send as fast as allowed for a minute.
        while clock < t0 + Duration::from_secs(60) {
            let wait = l.reserve_at("a", clock);
            clock += wait;
            if clock < t0 + Duration::from_secs(60) {
                sent += 1;
            }
        }
        assert!(sent <= 550, "{sent}");
        assert!(sent >= 500, "{sent}");
    }

    #[tokio::test(start_paused = true)]
    async fn acquire_delays_rather_than_fails() {
        let l = Limiter::new(60); // one per second, bursts of 6
        let start = Instant::now();
        for _ in 0..8 {
            l.acquire("a").await;
        }
        let waited = Instant::now() - start;
        assert!(waited >= Duration::from_secs(2) && waited < Duration::from_secs(3));
        let before = Instant::now();
        assert_eq!(l.acquire("").await, Duration::ZERO);
        assert_eq!(Instant::now(), before);
    }
}
