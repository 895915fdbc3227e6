//! The adapter's own request budget per mailbox: a token bucket per
//! account that delays requests over the budget instead of failing them,
//! so a busy mailbox stays below Graph's Outlook limit (10,000 requests per
//! 10 minutes per app and mailbox). The bucket refills at `per_minute / 60`
//! tokens a second and holds a tenth of a minute's budget, so no 10 minutes
//! see more than about 10.1 × `per_minute` requests (8,080 with the default
//! 800). Waiting requests reserve their slot (the bucket goes negative), so
//! they are served in arrival order; idle, full buckets are forgotten.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::time::Instant;

const PRUNE_ABOVE: usize = 4096;

/// Per-mailbox token buckets.
#[derive(Debug)]
pub struct Limiter {
    rate_per_sec: f64,
    capacity: f64,
    buckets: Mutex<HashMap<[u8; 16], (f64, Instant)>>,
}

impl Limiter {
    /// A limiter allowing `per_minute` requests per mailbox and minute.
    pub fn new(per_minute: u32) -> Self {
        let per_minute = f64::from(per_minute.max(1));
        Limiter {
            rate_per_sec: per_minute / 60.0,
            capacity: (per_minute / 10.0).max(1.0),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Reserves one request for `account` at `now`; returns how long to
    /// wait before sending it.
    pub fn reserve_at(&self, account: &str, now: Instant) -> Duration {
        let mut key = [0u8; 16];
        key.copy_from_slice(&Sha256::digest(account.as_bytes())[..16]);
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() > PRUNE_ABOVE {
            let (rate, cap) = (self.rate_per_sec, self.capacity);
            buckets.retain(|_, (t, at)| *t + now.duration_since(*at).as_secs_f64() * rate < cap);
        }
        let (tokens, at) = buckets.entry(key).or_insert((self.capacity, now));
        let refilled = (*tokens
            + now.saturating_duration_since(*at).as_secs_f64() * self.rate_per_sec)
            .min(self.capacity);
        *tokens = refilled - 1.0;
        *at = now;
        if *tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-*tokens / self.rate_per_sec)
        }
    }

    /// Waits until `account` may send one more request; returns how long
    /// it waited.
    pub async fn acquire(&self, account: &str) -> Duration {
        let wait = self.reserve_at(account, Instant::now());
        if !wait.is_zero() {
            tracing::debug!(wait_ms = wait.as_millis() as u64, "request budget: waiting");
            tokio::time::sleep(wait).await;
        }
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_beyond_the_budget_waits_and_mailboxes_are_apart() {
        let l = Limiter::new(600);
        let now = Instant::now();
        for _ in 0..60 {
            assert_eq!(l.reserve_at("a", now), Duration::ZERO);
        }
        assert_eq!(l.reserve_at("a", now), Duration::from_millis(100));
        assert_eq!(l.reserve_at("a", now), Duration::from_millis(200));
        assert_eq!(l.reserve_at("b", now), Duration::ZERO, "another mailbox");
        let later = now + Duration::from_secs(60);
        assert_eq!(l.reserve_at("a", later), Duration::ZERO, "refilled");
    }
}
