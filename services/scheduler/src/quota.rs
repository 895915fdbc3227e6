//! The per-tenant request rate quota of the Scheduler API: a token bucket
//! per tenant (`quotas.requests_per_second` sustained, up to
//! `quotas.request_burst` at once), checked when a request's API key is
//! authenticated. A refused request learns how long to wait.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Token buckets by tenant.
pub struct RequestQuota {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RequestQuota {
    /// `per_second` requests a second sustained, `burst` at once (both at
    /// least 1).
    pub fn new(per_second: u32, burst: u32) -> Self {
        RequestQuota {
            per_second: f64::from(per_second.max(1)),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::default(),
        }
    }

    /// Takes one request from `tenant`'s bucket, or says how long until one
    /// is available.
    pub fn check(&self, tenant: &str) -> Result<(), Duration> {
        self.check_at(tenant, Instant::now())
    }

    fn check_at(&self, tenant: &str, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().expect("quota lock poisoned");
        let b = match buckets.get_mut(tenant) {
            Some(b) => b,
            // Tenants are created by the operator: one bucket each.
            None => buckets.entry(tenant.to_string()).or_insert(Bucket {
                tokens: self.burst,
                at: now,
            }),
        };
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.per_second).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.per_second)
                .max(Duration::from_millis(1)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_gets_its_burst_then_its_rate_and_others_are_unaffected() {
        let q = RequestQuota::new(10, 5);
        let t0 = Instant::now();
        for _ in 0..5 {
            assert_eq!(q.check_at("a", t0), Ok(()));
        }
        let wait = q.check_at("a", t0).unwrap_err();
        assert!(
            wait > Duration::from_millis(90) && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        // Another tenant still has its whole burst.
        assert_eq!(q.check_at("b", t0), Ok(()));
        // A tenth of a second later, one more request of "a" fits.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(q.check_at("a", t1), Ok(()));
        assert!(q.check_at("a", t1).is_err());
        // Idle time refills up to the burst, no further.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..5 {
            assert_eq!(q.check_at("a", t2), Ok(()));
        }
        assert!(q.check_at("a", t2).is_err());
    }
}
