//! When a Google request is worth another attempt, and how long to wait
//! first: truncated exponential backoff with jitter (Google's advice), a
//! `Retry-After` honoured when present, a small number of attempts and a
//! total waiting budget of a few seconds. Past that the call fails with a
//! retry delay, so the scheduler backs off instead of the adapter.

use std::time::Duration;

/// What an answer (or a failure to get one) means for retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retryable {
    /// A rate limit or quota (403 `usageLimits` reasons, 429).
    RateLimited,
    /// An outage (5xx, network failure, timeout).
    Outage,
}

/// Classifies an HTTP status and `errors[0].reason`; `None` for answers
/// that retrying cannot change.
pub fn classify(status: u16, reason: Option<&str>) -> Option<Retryable> {
    match status {
        429 => Some(Retryable::RateLimited),
        403 if matches!(
            reason,
            Some("rateLimitExceeded" | "userRateLimitExceeded" | "quotaExceeded")
        ) =>
        {
            Some(Retryable::RateLimited)
        }
        500..=599 => Some(Retryable::Outage),
        _ => None,
    }
}

/// The least delay suggested to the scheduler after `quotaExceeded`
/// (Google's anti-abuse limits last far longer than a per-minute quota).
pub const QUOTA_EXCEEDED_DELAY: Duration = Duration::from_secs(60);

/// Reads a `Retry-After` value: delta-seconds or an HTTP date (relative to
/// `now`).
pub fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    Some(
        (at.with_timezone(&chrono::Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

/// The retry policy of one Google request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// The most time spent waiting between attempts.
    pub budget: Duration,
    /// The first backoff step; each retry doubles it.
    pub base: Duration,
    /// The longest single backoff wait.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            budget: Duration::from_secs(5),
            base: Duration::from_millis(500),
            max_delay: Duration::from_secs(4),
        }
    }
}

/// What to do after a retryable failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Wait this long, then try again.
    Wait(Duration),
    /// Give up; suggest this delay to the caller.
    GiveUp(Duration),
}

impl RetryPolicy {
    /// The backoff before retry number `retry` (0 for the first retry):
    /// `base * 2^retry` plus `jitter` (0..1) of `base`, at most `max_delay`.
    pub fn backoff(&self, retry: u32, jitter: f64) -> Duration {
        let exp = self.base.saturating_mul(2u32.saturating_pow(retry.min(16)));
        let jitter = self.base.mul_f64(jitter.clamp(0.0, 1.0));
        exp.saturating_add(jitter).min(self.max_delay)
    }

    /// Decides after failed attempt number `attempt` (1 for the first),
    /// having already waited `waited`: the server's `retry_after` wins
    /// over backoff; a wait that would pass the attempt count or the
    /// budget gives up, suggesting that wait to the caller.
    pub fn decide(
        &self,
        attempt: u32,
        waited: Duration,
        retry_after: Option<Duration>,
        jitter: f64,
    ) -> Decision {
        let wait = retry_after.unwrap_or_else(|| self.backoff(attempt.saturating_sub(1), jitter));
        if attempt >= self.max_attempts || waited.saturating_add(wait) > self.budget {
            Decision::GiveUp(wait.max(Duration::from_secs(1)))
        } else {
            Decision::Wait(wait)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limits_and_outages_are_retryable_other_answers_not() {
        assert_eq!(classify(429, None), Some(Retryable::RateLimited));
        for r in [
            "rateLimitExceeded",
            "userRateLimitExceeded",
            "quotaExceeded",
        ] {
            assert_eq!(classify(403, Some(r)), Some(Retryable::RateLimited), "{r}");
        }
        assert_eq!(classify(403, Some("insufficientPermissions")), None);
        assert_eq!(classify(403, Some("forbiddenForNonOrganizer")), None);
        assert_eq!(classify(403, None), None);
        for s in [500, 502, 503, 504] {
            assert_eq!(classify(s, Some("backendError")), Some(Retryable::Outage));
        }
        for s in [400, 401, 404, 409, 410, 412] {
            assert_eq!(classify(s, None), None, "{s}");
        }
    }

    #[test]
    fn backoff_doubles_with_bounded_jitter_and_is_truncated() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff(0, 0.0), Duration::from_millis(500));
        assert_eq!(p.backoff(1, 0.0), Duration::from_millis(1000));
        assert_eq!(p.backoff(2, 0.5), Duration::from_millis(2250));
        assert_eq!(p.backoff(3, 1.0), Duration::from_secs(4));
        assert_eq!(p.backoff(30, 1.0), Duration::from_secs(4));
        for j in [0.0, 0.3, 0.99] {
            let d = p.backoff(1, j);
            assert!(d >= Duration::from_millis(1000) && d < Duration::from_millis(1500));
        }
    }

    #[test]
    fn retry_after_wins_and_the_attempts_and_budget_are_bounded() {
        let p = RetryPolicy::default();
        assert_eq!(
            p.decide(1, Duration::ZERO, Some(Duration::from_secs(2)), 0.0),
            Decision::Wait(Duration::from_secs(2))
        );
        assert_eq!(
            p.decide(1, Duration::ZERO, None, 0.0),
            Decision::Wait(Duration::from_millis(500))
        );
        // The fourth failure is the last.
        assert!(matches!(
            p.decide(4, Duration::ZERO, None, 0.0),
            Decision::GiveUp(_)
        ));
        // A Retry-After past the budget is handed to the caller at once.
        assert_eq!(
            p.decide(1, Duration::ZERO, Some(Duration::from_secs(30)), 0.0),
            Decision::GiveUp(Duration::from_secs(30))
        );
        assert!(matches!(
            p.decide(2, Duration::from_millis(4800), None, 0.0),
            Decision::GiveUp(_)
        ));
    }

    #[test]
    fn the_total_wait_of_a_storm_stays_within_the_budget() {
        let p = RetryPolicy::default();
        let mut waited = Duration::ZERO;
        let mut attempt = 1;
        loop {
            match p.decide(attempt, waited, None, 0.999) {
                Decision::Wait(d) => {
                    waited += d;
                    attempt += 1;
                }
                Decision::GiveUp(d) => {
                    assert!(d >= Duration::from_secs(1));
                    break;
                }
            }
        }
        assert!(waited <= p.budget);
        assert!(attempt <= p.max_attempts);
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 2026 00:00:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 31 Dec 2025 23:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
