//! Graph's Outlook service limits per application and mailbox, and
//! injected latency: at most 4 requests of a mailbox in flight at once and
//! 10,000 requests per 10 minutes (both answered 429 with `Retry-After`,
//! as `MailboxConcurrency` and `ApplicationThrottled`), and a delay added
//! to every Graph request ([`crate::Control::set_latency`]).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;

/// Requests of one mailbox in flight at once.
pub(crate) const MAX_CONCURRENT: usize = 4;
/// Requests of one mailbox per [`WINDOW`].
pub(crate) const MAX_PER_WINDOW: usize = 10_000;
/// The budget's window.
pub(crate) const WINDOW: Duration = Duration::from_secs(600);

/// Per mailbox: requests in flight and the times of recent ones.
#[derive(Debug, Default)]
pub(crate) struct Limits {
    in_flight: HashMap<String, usize>,
    recent: HashMap<String, VecDeque<Instant>>,
    /// Added before every Graph request.
    pub(crate) latency: Duration,
    /// The budget per window (tests lower it).
    pub(crate) per_window: Option<usize>,
    /// Requests refused for either limit.
    pub(crate) refused: u64,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Too many in flight.
    Concurrency,
    /// The budget is spent; retry after this long.
    Budget(Duration),
}

impl Limits {
    /// Admits a request of `user`, or says why not.
    pub(crate) fn admit(&mut self, user: &str, now: Instant) -> Result<(), Refusal> {
        let flying = self.in_flight.entry(user.to_string()).or_default();
        if *flying >= MAX_CONCURRENT {
            self.refused += 1;
            return Err(Refusal::Concurrency);
        }
        let per_window = self.per_window.unwrap_or(MAX_PER_WINDOW);
        let recent = self.recent.entry(user.to_string()).or_default();
        while recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= WINDOW)
        {
            recent.pop_front();
        }
        if recent.len() >= per_window {
            let oldest = *recent.front().expect("a full window has a first request");
            self.refused += 1;
            return Err(Refusal::Budget(WINDOW - now.duration_since(oldest)));
        }
        recent.push_back(now);
        *flying += 1;
        Ok(())
    }

    /// A request of `user` admitted before has finished.
    pub(crate) fn done(&mut self, user: &str) {
        if let Some(n) = self.in_flight.get_mut(user) {
            *n = n.saturating_sub(1);
        }
    }
}

/// The bearer token of a request.
pub(crate) fn bearer(headers: &HeaderMap) -> &str {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mailbox_gets_four_at_once_and_its_budget_per_window() {
        let mut l = Limits {
            per_window: Some(5),
            ..Limits::default()
        };
        let t = Instant::now();
        for _ in 0..4 {
            assert_eq!(l.admit("a", t), Ok(()));
        }
        assert_eq!(l.admit("a", t), Err(Refusal::Concurrency));
        assert_eq!(l.admit("b", t), Ok(()), "another mailbox is not held");
        l.done("a");
        assert_eq!(l.admit("a", t), Ok(()));
        for _ in 0..5 {
            l.done("a");
        }
        assert_eq!(l.admit("a", t), Err(Refusal::Budget(WINDOW)));
        let later = t + WINDOW;
        assert_eq!(l.admit("a", later), Ok(()), "the window moved on");
    }
}
