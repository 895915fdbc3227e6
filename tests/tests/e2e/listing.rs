//! A full listing interrupted by a provider outage midway starts over on
//! the next run: the events of the pages read before the outage are not
//! taken for deleted (no spurious EVENT_DELETED, nothing lost).

use std::time::Duration;

use anyhow::Result;
use calbridge::pb::{self, ChangeKind};
use calbridge_e2e::scripted::{stack, Provider, CALENDAR};
use calbridge_e2e::{changes_after, eventually, wait_synced};

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_full_listing_starts_over_without_spurious_deletions() -> Result<()> {
    let config = tempfile::NamedTempFile::new()?;
    std::fs::write(
        config.path(),
        "[sync]\npage_size = 5\nbackoff_base_ms = 20\n",
    )?;
    let path = config.path().display().to_string();
    let (stack, scripted) = stack(
        Provider {
            lifetime_s: 3600,
            listing: 12,
            fail_page_once: Some(2),
            ..Default::default()
        },
        &["--config", &path],
    )
    .await?;
    let (_, key) = stack.tenant("listing").await?;
    let mut c = stack.client(Some(&key)).await?;
    let cursor = calbridge_e2e::change_cursor(&mut c).await?;
    let a = scripted.connect(&mut c, "").await?;
    wait_synced(&mut c, &a.account_id).await?;
    // The outage happened (page 2 failed once) and the listing ran again.
    eventually(Duration::from_secs(30), "the listing to finish", || async {
        let p = scripted.p();
        (p.fail_page_once.is_none() && p.listings_started >= 2).then_some(())
    })
    .await?;
    let status = eventually(Duration::from_secs(30), "a successful sync", || {
        let mut c = c.clone();
        let id = a.account_id.clone();
        async move {
            let s = c
                .get_sync_status(pb::GetSyncStatusRequest { account_id: id })
                .await
                .ok()?
                .into_inner();
            s.calendars
                .into_iter()
                .find(|x| x.calendar_id == CALENDAR && x.last_success.is_some() && x.failures == 0)
        }
    })
    .await?;
    assert_eq!(status.events, 12, "{status:?}");
    let changes = changes_after(&mut c, &cursor).await?;
    let deleted: Vec<_> = changes
        .iter()
        .filter(|ch| ch.kind == ChangeKind::EventDeleted as i32)
        .collect();
    assert!(deleted.is_empty(), "spurious deletions: {deleted:#?}");
    let created = changes
        .iter()
        .filter(|ch| ch.kind == ChangeKind::EventCreated as i32)
        .count();
    assert_eq!(created, 12);
    Ok(())
}
