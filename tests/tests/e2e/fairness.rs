//! Sync scheduling is fair: an account whose provider answers slowly, with
//! more due calendars than the scheduler runs at once, costs only its own
//! calendars; another tenant's account still syncs meanwhile.

use std::time::Duration;

use anyhow::Result;
use calbridge::pb;
use calbridge_e2e::scripted::{stack, Provider};
use calbridge_e2e::{eventually, sync_status, wait_synced};

#[tokio::test(flavor = "multi_thread")]
async fn an_account_with_slow_calendars_does_not_hold_up_another_tenants_sync() -> Result<()> {
    // 40 calendars: more than the 16 syncs the scheduler runs at once.
    let (stack, scripted) = stack(
        Provider {
            lifetime_s: 3600,
            extra_calendars: 39,
            ..Default::default()
        },
        &[],
    )
    .await?;
    // The provider answers the slow account's listings only when told to.
    scripted.hold_syncs();
    let (_, slow_key) = stack.tenant("slow").await?;
    let (_, other_key) = stack.tenant("other").await?;
    let mut slow = stack.client(Some(&slow_key)).await?;
    let a = scripted.connect(&mut slow, "").await?;
    eventually(
        Duration::from_secs(30),
        "the slow account's syncs waiting at its provider",
        || async { (scripted.p().held >= 2).then_some(()) },
    )
    .await?;

    // Another tenant connects an account; its initial sync completes while
    // every sync of the slow account is still in progress or queued.
    let mut other = stack.client(Some(&other_key)).await?;
    stack
        .sandbox_account(&mut other, "other@example.com", "pw-other-1")
        .await?;
    assert_eq!(
        scripted.p().held,
        2,
        "the slow account runs per_account_concurrency syncs at once"
    );
    let waiting = sync_status(&mut slow, &a.account_id).await?;
    assert_eq!(waiting.len(), 40);
    assert!(
        waiting
            .iter()
            .all(|c| c.state == pb::SyncState::Initial as i32),
        "{waiting:?}"
    );

    // Once its provider answers, the slow account catches up too.
    scripted.release_held();
    wait_synced(&mut slow, &a.account_id).await?;
    Ok(())
}
