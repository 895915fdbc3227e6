//! `calbridge changes`: the tenant's change feed, by page or live.

use std::time::Duration;

use anyhow::Result;
use calbridge::pb;
use serde_json::json;
use tonic::Code;

use super::Ctx;
use crate::cli::ChangesCommand;
use crate::error::{Api, RpcError, RpcResultExt};
use crate::output::{self, change_json};

pub(super) async fn run(ctx: &Ctx, cmd: ChangesCommand) -> Result<()> {
    match cmd {
        ChangesCommand::List { cursor, limit } => {
            let r = ctx
                .scheduler()
                .await?
                .list_changes(pb::ListChangesRequest {
                    cursor,
                    page_size: limit,
                })
                .await
                .rpc(Api::Scheduler)?;
            if ctx.out.json {
                ctx.out.json(&json!({
                    "changes": r.changes.iter().map(change_json).collect::<Vec<_>>(),
                    "next_cursor": r.next_cursor,
                }));
            } else {
                if r.changes.is_empty() {
                    println!("no changes after this cursor");
                } else {
                    println!("{}", output::changes_table(&r.changes));
                }
                println!("next cursor: {}", r.next_cursor);
            }
            Ok(())
        }
        ChangesCommand::Cursor => {
            let cursor = newest_cursor(ctx).await?;
            if ctx.out.json {
                ctx.out.json(&json!({ "cursor": cursor }));
            } else {
                println!("{cursor}");
            }
            Ok(())
        }
        ChangesCommand::Watch { cursor, from_now } => {
            let cursor = if from_now {
                newest_cursor(ctx).await?
            } else {
                cursor.unwrap_or_default()
            };
            tokio::select! {
                r = watch(ctx, cursor) => r,
                _ = calbridge_runtime::shutdown_signal() => Ok(()),
            }
        }
    }
}

async fn newest_cursor(ctx: &Ctx) -> Result<String> {
    Ok(ctx
        .scheduler()
        .await?
        .get_change_cursor(pb::GetChangeCursorRequest {})
        .await
        .rpc(Api::Scheduler)?
        .cursor)
}

/// Follows the feed, printing each change; when the stream breaks it resumes
/// after the last change printed, so nothing is skipped.
async fn watch(ctx: &Ctx, mut cursor: String) -> Result<()> {
    if !ctx.out.json {
        eprintln!("watching changes (Ctrl-C to stop)");
    }
    loop {
        let mut client = ctx.scheduler().await?;
        let mut stream = client
            .watch_changes(pb::WatchChangesRequest {
                cursor: cursor.clone(),
            })
            .await
            .rpc(Api::Scheduler)?;
        let broke = loop {
            match stream.message().await {
                Ok(Some(change)) => {
                    if ctx.out.json {
                        ctx.out.json_line(&change_json(&change));
                    } else {
                        println!("{}", output::change_line(&change));
                    }
                    cursor = change.cursor;
                }
                Ok(None) => break None,
                Err(status) => break Some(status),
            }
        };
        if let Some(status) = broke {
            if status.code() != Code::Unavailable {
                return Err(RpcError {
                    api: Api::Scheduler,
                    status,
                }
                .into());
            }
        }
        eprintln!("the change stream was interrupted; resuming");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
