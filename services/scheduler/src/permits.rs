//! The sync loop's global concurrency limit, shared fairly between tenants:
//! a pool of permits whose free ones go round-robin to the tenants waiting
//! for one (first come first served within a tenant), instead of to
//! whoever queued first. A tenant with a thousand due calendars then delays
//! another tenant's sync by at most one finished sync, not by its whole
//! queue.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// A pool of permits handed out round-robin by tenant.
pub struct FairPermits {
    state: Mutex<State>,
}

struct State {
    free: usize,
    /// Waiters by tenant, each tenant's in arrival order.
    waiting: BTreeMap<String, VecDeque<oneshot::Sender<Permit>>>,
    /// The tenant served last: the next free permit goes to the first
    /// waiting tenant after it (wrapping around).
    last: Option<String>,
}

/// One permit; returned to the pool (or handed to the next waiter) when
/// dropped.
pub struct Permit {
    pool: Option<Arc<FairPermits>>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            pool.release();
        }
    }
}

impl FairPermits {
    /// A pool of `n` permits.
    pub fn new(n: usize) -> Arc<Self> {
        Arc::new(FairPermits {
            state: Mutex::new(State {
                free: n,
                waiting: BTreeMap::new(),
                last: None,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("permit pool lock poisoned")
    }

    /// Waits for a permit on behalf of `tenant`.
    pub async fn acquire(self: &Arc<Self>, tenant: &str) -> Permit {
        let rx = {
            let mut st = self.lock();
            if st.free > 0 && st.waiting.is_empty() {
                st.free -= 1;
                return Permit {
                    pool: Some(self.clone()),
                };
            }
            let (tx, rx) = oneshot::channel();
            st.waiting
                .entry(tenant.to_string())
                .or_default()
                .push_back(tx);
            rx
        };
        match rx.await {
            Ok(p) => p,
            // The pool never drops a waiter without a permit; should it,
            // waiting again is still correct.
            Err(_) => Box::pin(self.acquire(tenant)).await,
        }
    }

    /// Hands a returned permit to the next tenant in turn, or keeps it.
    fn release(self: Arc<Self>) {
        let mut st = self.lock();
        loop {
            let Some(tenant) = next_tenant(&st) else {
                st.free += 1;
                return;
            };
            let queue = st.waiting.get_mut(&tenant).expect("chosen among waiting");
            let tx = queue.pop_front().expect("queues are never left empty");
            if queue.is_empty() {
                st.waiting.remove(&tenant);
            }
            st.last = Some(tenant);
            let permit = Permit {
                pool: Some(self.clone()),
            };
            match tx.send(permit) {
                Ok(()) => return,
                // The waiter is gone: disarm the permit (no recursive
                // release under the lock) and try the next one.
                Err(mut p) => p.pool = None,
            }
        }
    }

    /// Free permits and waiters, for tests.
    #[cfg(test)]
    fn counts(&self) -> (usize, usize) {
        let st = self.lock();
        (st.free, st.waiting.values().map(VecDeque::len).sum())
    }
}

/// The first waiting tenant after the one served last, wrapping around.
fn next_tenant(st: &State) -> Option<String> {
    let after = st.last.as_deref().and_then(|last| {
        st.waiting
            .range::<str, _>((std::ops::Bound::Excluded(last), std::ops::Bound::Unbounded))
            .next()
    });
    after
        .or_else(|| st.waiting.iter().next())
        .map(|(t, _)| t.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn free_permits_go_round_robin_to_waiting_tenants() {
        let pool = FairPermits::new(1);
        let held = pool.acquire("a").await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        // Tenant a queues five waiters before tenant b queues one.
        for (i, t) in ["a", "a", "a", "a", "a", "b"].into_iter().enumerate() {
            let (p, order) = (pool.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _p = p.acquire(t).await;
                order.lock().unwrap().push(format!("{t}{i}"));
            }));
            while pool.counts().1 < i + 1 {
                tokio::task::yield_now().await;
            }
        }
        drop(held);
        for t in tasks {
            t.await.unwrap();
        }
        let order = order.lock().unwrap().clone();
        // b is served second, not sixth.
        assert_eq!(order, vec!["a0", "b5", "a1", "a2", "a3", "a4"]);
        assert_eq!(pool.counts(), (1, 0));
    }

    #[tokio::test]
    async fn a_waiter_that_went_away_does_not_lose_the_permit() {
        let pool = FairPermits::new(1);
        let held = pool.acquire("a").await;
        let gone = tokio::spawn({
            let pool = pool.clone();
            async move {
                let _p = pool.acquire("b").await;
            }
        });
        while pool.counts().1 < 1 {
            tokio::task::yield_now().await;
        }
        gone.abort();
        let _ = gone.await;
        drop(held);
        assert_eq!(pool.counts(), (1, 0));
        let _again = pool.acquire("c").await;
        assert_eq!(pool.counts(), (0, 0));
    }
}
