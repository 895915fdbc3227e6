//! When to retry a Graph request: throttling (429) and outages (500, 502,
//! 503, 504, no answer) are retried; a `Retry-After` is honoured exactly,
//! never shortened (Graph answers an early retry with another 429 and
//! counts it against the app); without one, exponential backoff with
//! jitter. A wait that would overrun the budget is handed to the caller as
//! the retry delay instead.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// What kind of retryable failure happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retryable {
    /// 429.
    Throttled,
    /// 5xx or no answer.
    Outage,
}

/// Whether a status is retryable.
pub fn classify(status: u16) -> Option<Retryable> {
    match status {
        429 => Some(Retryable::Throttled),
        500 | 502 | 503 | 504 => Some(Retryable::Outage),
        _ => None,
    }
}

/// Reads `Retry-After`: delta seconds or an HTTP date; at most a day.
pub fn parse_retry_after(v: &str, now: DateTime<Utc>) -> Option<Duration> {
    let v = v.trim();
    let d = if let Ok(secs) = v.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at = DateTime::parse_from_rfc2822(v).ok()?.with_timezone(&Utc);
        (at - now).to_std().unwrap_or(Duration::ZERO)
    };
    Some(d.min(Duration::from_secs(86_400)))
}

/// The retry policy.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts including the first.
    pub max_attempts: u32,
    /// Total waiting allowed.
    pub budget: Duration,
    /// First backoff step.
    pub base: Duration,
    /// Longest backoff step.
    pub max_delay: Duration,
}

/// What to do after a retryable failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Wait this long, then retry.
    Wait(Duration),
    /// Give up; the caller should wait this long.
    GiveUp(Duration),
}

impl RetryPolicy {
    fn backoff(&self, n: u32, jitter: f64) -> Duration {
        let step = self
            .base
            .saturating_mul(1u32 << n.min(16))
            .min(self.max_delay);
        step + step.mul_f64(jitter.clamp(0.0, 1.0))
    }

    /// After failed attempt number `attempt` (1-based), having waited
    /// `waited` so far: `retry_after` is the server's word, used exactly.
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

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            budget: Duration::from_secs(10),
            base: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
        }
    }

    #[test]
    fn retry_after_is_waited_exactly_and_handed_on_when_over_budget() {
        let p = policy();
        assert_eq!(
            p.decide(1, Duration::ZERO, Some(Duration::from_secs(3)), 0.9),
            Decision::Wait(Duration::from_secs(3))
        );
        assert_eq!(
            p.decide(1, Duration::from_secs(8), Some(Duration::from_secs(3)), 0.0),
            Decision::GiveUp(Duration::from_secs(3))
        );
        assert_eq!(
            p.decide(4, Duration::ZERO, None, 0.0),
            Decision::GiveUp(Duration::from_secs(1))
        );
        assert_eq!(
            p.decide(2, Duration::ZERO, None, 0.0),
            Decision::Wait(Duration::from_millis(200))
        );
    }

    #[test]
    fn retry_after_reads_seconds_and_dates_and_statuses_classify() {
        let now = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 2026 00:00:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(classify(429), Some(Retryable::Throttled));
        assert_eq!(classify(503), Some(Retryable::Outage));
        assert_eq!(classify(412), None);
    }
}
