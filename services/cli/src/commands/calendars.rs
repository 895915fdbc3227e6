//! `calbridge calendars`: an account's calendars and which are synced.

use anyhow::Result;
use calbridge::pb;
use serde_json::json;

use super::Ctx;
use crate::cli::CalendarsCommand;
use crate::error::{Api, RpcResultExt};
use crate::output::{self, calendar_json};

fn yes(b: bool) -> String {
    if b { "yes" } else { "" }.to_string()
}

fn calendars_table(calendars: &[pb::Calendar]) -> comfy_table::Table {
    let mut t = output::table(["CALENDAR", "NAME", "PRIMARY", "READ-ONLY", "SYNCED", "ZONE"]);
    for c in calendars {
        t.add_row(vec![
            c.calendar_id.clone(),
            c.name.clone(),
            yes(c.primary),
            yes(c.read_only),
            yes(c.synced),
            c.time_zone.clone(),
        ]);
    }
    t
}

pub(super) async fn run(ctx: &Ctx, cmd: CalendarsCommand) -> Result<()> {
    let mut client = ctx.scheduler().await?;
    match cmd {
        CalendarsCommand::List { account } => {
            let r = client
                .list_calendars(pb::ListCalendarsRequest {
                    account_id: account,
                })
                .await
                .rpc(Api::Scheduler)?;
            if ctx.out.json {
                ctx.out.json(&json!({
                    "calendars": r.calendars.iter().map(calendar_json).collect::<Vec<_>>()
                }));
            } else if r.calendars.is_empty() {
                println!("no calendars (yet): the account's first sync may still be running");
            } else {
                println!("{}", calendars_table(&r.calendars));
            }
        }
        CalendarsCommand::Sync {
            account,
            calendar,
            on,
            off: _,
        } => {
            let c = client
                .set_calendar_sync(pb::SetCalendarSyncRequest {
                    account_id: account,
                    calendar_id: calendar,
                    synced: on,
                })
                .await
                .rpc(Api::Scheduler)?;
            if ctx.out.json {
                ctx.out.json(&calendar_json(&c));
            } else if c.synced {
                println!(
                    "calendar {} is synced; its initial sync starts now",
                    c.calendar_id
                );
            } else {
                println!(
                    "calendar {} is no longer synced; its mirror is deleted",
                    c.calendar_id
                );
            }
        }
    }
    Ok(())
}
