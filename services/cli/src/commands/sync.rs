//! `calbridge sync`: per-calendar sync state, and syncing now.

use anyhow::Result;
use calbridge::pb;
use serde_json::json;

use super::Ctx;
use crate::cli::SyncCommand;
use crate::error::{Api, RpcResultExt};
use crate::output::{self, short, sync_status_json};

/// The sync status table, shared with `accounts connect`.
pub(super) fn status_table(calendars: &[pb::CalendarSyncStatus]) -> comfy_table::Table {
    let mut t = output::table([
        "CALENDAR",
        "STATE",
        "EVENTS",
        "LAST SUCCESS",
        "NEXT DUE",
        "FAILURES",
        "LAST ERROR",
        "SKIPPED ITEMS",
    ]);
    for c in calendars {
        t.add_row(vec![
            c.calendar_id.clone(),
            short(c.state().as_str_name(), "SYNC_STATE_"),
            c.events.to_string(),
            output::ts_cell(c.last_success.as_ref()),
            output::ts_cell(c.next_due.as_ref()),
            c.failures.to_string(),
            c.last_error.clone(),
            c.skipped_items
                .iter()
                .map(|s| format!("{}: {}", s.item_id, s.reason))
                .collect::<Vec<_>>()
                .join("\n"),
        ]);
    }
    t
}

pub(super) async fn run(ctx: &Ctx, cmd: SyncCommand) -> Result<()> {
    let mut client = ctx.scheduler().await?;
    match cmd {
        SyncCommand::Status { account } => {
            let r = client
                .get_sync_status(pb::GetSyncStatusRequest {
                    account_id: account,
                })
                .await
                .rpc(Api::Scheduler)?;
            if ctx.out.json {
                ctx.out.json(&json!({
                    "calendars": r.calendars.iter().map(sync_status_json).collect::<Vec<_>>()
                }));
            } else if r.calendars.is_empty() {
                println!("no calendars are known for this account yet");
            } else {
                println!("{}", status_table(&r.calendars));
            }
        }
        SyncCommand::Now { account, calendar } => {
            let r = client
                .sync_now(pb::SyncNowRequest {
                    account_id: account,
                    calendar_id: calendar.unwrap_or_default(),
                })
                .await
                .rpc(Api::Scheduler)?;
            if ctx.out.json {
                ctx.out.json(&json!({ "calendar_ids": r.calendar_ids }));
            } else if r.calendar_ids.is_empty() {
                println!("no synced calendars to sync");
            } else {
                println!("syncing now: {}", r.calendar_ids.join(", "));
            }
        }
    }
    Ok(())
}
