//! `calbridge freebusy` and `calbridge availability`: questions answered from
//! the mirror across accounts.

use anyhow::Result;
use calbridge::pb;
use chrono::{Duration, Utc};
use serde_json::json;

use super::Ctx;
use crate::cli::{AvailabilityArgs, FreeBusyArgs};
use crate::error::{Api, RpcResultExt};
use crate::output::{self, busy_json, freshness_json, short, slot_json};
use crate::timearg;

pub(super) async fn freebusy(ctx: &Ctx, args: FreeBusyArgs) -> Result<()> {
    let window = timearg::window(
        &args.window,
        Utc::now(),
        Duration::zero(),
        Duration::days(7),
    )?;
    let r = ctx
        .scheduler()
        .await?
        .query_free_busy(pb::QueryFreeBusyRequest {
            account_ids: args.accounts,
            window: Some(window),
        })
        .await
        .rpc(Api::Scheduler)?;
    if ctx.out.json {
        ctx.out.json(&json!({
            "window": {
                "start": output::ts(window.start.as_ref()),
                "end": output::ts(window.end.as_ref()),
            },
            "accounts": r.accounts.iter().map(|a| json!({
                "account_id": a.account_id,
                "as_of": output::ts(a.as_of.as_ref()),
                "busy": a.busy.iter().map(busy_json).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    let mut t = output::table(["ACCOUNT", "START", "END", "STATUS", "CALENDAR"]);
    for a in &r.accounts {
        for b in &a.busy {
            t.add_row(vec![
                a.account_id.clone(),
                output::ts_cell(b.start.as_ref()),
                output::ts_cell(b.end.as_ref()),
                short(b.status().as_str_name(), "BUSY_STATUS_"),
                b.calendar_id.clone(),
            ]);
        }
    }
    if r.accounts.iter().all(|a| a.busy.is_empty()) {
        println!(
            "free between {} and {}",
            output::ts_cell(window.start.as_ref()),
            output::ts_cell(window.end.as_ref())
        );
    } else {
        println!("{t}");
    }
    for a in &r.accounts {
        match output::ts(a.as_of.as_ref()) {
            Some(at) => println!("{}: as of {at}", a.account_id),
            None => println!(
                "{}: a calendar has not finished its first sync",
                a.account_id
            ),
        }
    }
    Ok(())
}

/// The request for "every given account must be free".
fn availability_request(
    args: &AvailabilityArgs,
    window: pb::TimeWindow,
) -> pb::QueryAvailabilityRequest {
    pb::QueryAvailabilityRequest {
        groups: vec![pb::ParticipantGroup {
            members: args
                .accounts
                .iter()
                .map(|a| pb::AvailabilityMember {
                    account_id: a.clone(),
                    ..Default::default()
                })
                .collect(),
            required: 0,
        }],
        duration_minutes: args.duration,
        periods: vec![window],
        max_results: args.max_results,
        ..Default::default()
    }
}

pub(super) async fn availability(ctx: &Ctx, args: AvailabilityArgs) -> Result<()> {
    let window = timearg::window(
        &args.window,
        Utc::now(),
        Duration::zero(),
        Duration::days(7),
    )?;
    let r = ctx
        .scheduler()
        .await?
        .query_availability(availability_request(&args, window))
        .await
        .rpc(Api::Scheduler)?;
    if ctx.out.json {
        ctx.out.json(&json!({
            "slots": r.slots.iter().map(slot_json).collect::<Vec<_>>(),
            "freshness": r.freshness.iter().map(freshness_json).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    if r.slots.is_empty() {
        println!(
            "no common free time of {} minutes in that window",
            args.duration
        );
    } else {
        let mut t = output::table(["START", "END", "FREE"]);
        for s in &r.slots {
            t.add_row(vec![
                output::ts_cell(s.start.as_ref()),
                output::ts_cell(s.end.as_ref()),
                s.available_account_ids.join(", "),
            ]);
        }
        println!("{t}");
    }
    Ok(())
}
