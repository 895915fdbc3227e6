//! The participant cache's memory bound.

use super::cache::seeded;
use super::*;

#[test]
fn eviction_keeps_the_most_recently_used_participants() {
    let dir = tempfile::tempdir().unwrap();
    let s = seeded(dir.path(), 2);
    let req = request(2, pb::AvailabilityFormat::Slots);
    query(&s, &TenantId::from("t"), &req).unwrap();
    let mut inner = s.availability_cache.lock();
    assert_eq!(inner.participants, 2);
    let ticks: Vec<u64> = inner
        .accounts
        .values()
        .flatten()
        .map(|b| b.last_used.load(Ordering::Relaxed))
        .collect();
    // Pretend the bound was exceeded: everything older than 3/4 goes.
    inner.participants = MAX_CACHED_PARTICIPANTS + 1;
    evict(&mut inner);
    assert!(inner.participants <= 2);
    let kept: Vec<u64> = inner
        .accounts
        .values()
        .flatten()
        .map(|b| b.last_used.load(Ordering::Relaxed))
        .collect();
    assert!(kept.iter().all(|t| t >= ticks.iter().min().unwrap()));
    assert_eq!(
        inner.intervals,
        inner
            .accounts
            .values()
            .flatten()
            .map(|b| b.weight())
            .sum::<usize>()
    );
}
