//! `calbridge accounts`: connecting accounts (password and OAuth), showing
//! the initial sync's progress, listing and revoking.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use calbridge::pb;
use serde_json::json;
use tokio::time::Instant;

use super::Ctx;
use crate::cli::{AccountsCommand, AuthorizeArgs, ConnectArgs};
use crate::client::Scheduler;
use crate::error::{Api, RpcResultExt};
use crate::output::{self, account_json};

pub(super) async fn run(ctx: &Ctx, cmd: AccountsCommand) -> Result<()> {
    match cmd {
        AccountsCommand::Connect(args) => connect(ctx, args).await,
        AccountsCommand::List => list(ctx).await,
        AccountsCommand::Get { account_id } => {
            let a = ctx
                .scheduler()
                .await?
                .get_account(pb::GetAccountRequest { account_id })
                .await
                .rpc(Api::Scheduler)?;
            show_account(ctx, &a);
            Ok(())
        }
        AccountsCommand::Revoke { account_id } => {
            let a = ctx
                .scheduler()
                .await?
                .revoke_account(pb::RevokeAccountRequest { account_id })
                .await
                .rpc(Api::Scheduler)?;
            if ctx.out.json {
                ctx.out.json(&account_json(&a));
            } else {
                println!(
                    "revoked account {}: its credentials and mirrored data are deleted",
                    a.account_id
                );
            }
            Ok(())
        }
        AccountsCommand::Authorize(args) => authorize(ctx, args).await,
        AccountsCommand::Complete {
            state,
            code,
            redirect_uri,
        } => {
            let a = ctx
                .scheduler()
                .await?
                .complete_authorization(pb::CompleteAuthorizationRequest {
                    state,
                    code,
                    redirect_uri,
                })
                .await
                .rpc(Api::Scheduler)?;
            show_account(ctx, &a);
            Ok(())
        }
    }
}

fn show_account(ctx: &Ctx, a: &pb::Account) {
    if ctx.out.json {
        ctx.out.json(&account_json(a));
    } else {
        println!("{}", output::accounts_table(std::slice::from_ref(a)));
    }
}

/// The password from exactly one of the three sources clap allows.
fn read_password(args: &ConnectArgs) -> Result<String> {
    let pw = if let Some(p) = &args.password {
        p.clone()
    } else if let Some(path) = &args.password_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--password-file: reading {}", path.display()))?;
        text.lines().next().unwrap_or("").to_string()
    } else {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("--password-stdin: reading standard input")?;
        line.trim_end_matches(['\r', '\n']).to_string()
    };
    if pw.is_empty() {
        bail!("the password is empty");
    }
    Ok(pw)
}

async fn connect(ctx: &Ctx, args: ConnectArgs) -> Result<()> {
    let password = read_password(&args)?;
    let mut client = ctx.scheduler().await?;
    let account = client
        .connect_password_account(pb::ConnectPasswordAccountRequest {
            provider: pb::Provider::from(args.provider) as i32,
            server_url: args.server_url.clone().unwrap_or_default(),
            username: args.username.clone(),
            password,
            access_level: pb::AccessLevel::from(args.access) as i32,
        })
        .await
        .rpc(Api::Scheduler)?;
    if !ctx.out.json {
        eprintln!(
            "connected {} as account {}",
            account.provider_account_id, account.account_id
        );
    }
    let statuses = if args.no_wait {
        None
    } else {
        Some(wait_for_initial_sync(&mut client, &account.account_id).await?)
    };
    if ctx.out.json {
        let mut v = account_json(&account);
        if let Some(s) = &statuses {
            v["sync"] = json!(s.iter().map(output::sync_status_json).collect::<Vec<_>>());
        }
        ctx.out.json(&v);
    } else {
        println!("{}", output::accounts_table(std::slice::from_ref(&account)));
        if let Some(s) = &statuses {
            println!("{}", super::sync::status_table(s));
        }
        println!(
            "next: calbridge calendars list --account {}",
            account.account_id
        );
    }
    Ok(())
}

/// Polls the sync status every 250 ms until no calendar is still in its
/// initial sync (or 60 s pass), with a progress line on stderr.
async fn wait_for_initial_sync(
    client: &mut Scheduler,
    account_id: &str,
) -> Result<Vec<pb::CalendarSyncStatus>> {
    const LIMIT: Duration = Duration::from_secs(60);
    // An account's calendars may not be listed yet right after connecting.
    const GRACE: Duration = Duration::from_secs(2);
    let started = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let mut last_line = String::new();
    loop {
        let calendars = client
            .get_sync_status(pb::GetSyncStatusRequest {
                account_id: account_id.to_string(),
            })
            .await
            .rpc(Api::Scheduler)?
            .calendars;
        let pending = calendars
            .iter()
            .filter(|c| c.state() == pb::SyncState::Initial)
            .count();
        let events: u64 = calendars.iter().map(|c| c.events).sum();
        let elapsed = started.elapsed();
        let done = pending == 0 && (!calendars.is_empty() || elapsed >= GRACE);
        let line = format!(
            "initial sync: {}/{} calendars done, {events} events mirrored",
            calendars.len() - pending,
            calendars.len()
        );
        if line != last_line {
            if tty {
                eprint!("\r\x1b[2K{line}");
                let _ = std::io::stderr().flush();
            } else {
                eprintln!("{line}");
            }
            last_line = line;
        }
        if done || elapsed >= LIMIT {
            if tty {
                eprintln!();
            }
            if !done {
                eprintln!(
                    "initial sync still running after {}s; follow it with `calbridge sync status --account {account_id}`",
                    LIMIT.as_secs()
                );
            }
            return Ok(calendars);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn list(ctx: &Ctx) -> Result<()> {
    let accounts = all_accounts(&mut ctx.scheduler().await?).await?;
    if ctx.out.json {
        ctx.out.json(&json!({
            "accounts": accounts.iter().map(account_json).collect::<Vec<_>>()
        }));
    } else if accounts.is_empty() {
        println!("no accounts yet: calbridge accounts connect --provider sandbox --username you@example.com --password-stdin");
    } else {
        println!("{}", output::accounts_table(&accounts));
    }
    Ok(())
}

async fn authorize(ctx: &Ctx, args: AuthorizeArgs) -> Result<()> {
    let mut client = ctx.scheduler().await?;
    let before: Vec<pb::Account> = if args.wait {
        all_accounts(&mut client).await?
    } else {
        Vec::new()
    };
    let r = client
        .begin_authorization(pb::BeginAuthorizationRequest {
            provider: pb::Provider::from(args.provider) as i32,
            access_level: pb::AccessLevel::from(args.access) as i32,
            redirect_uri: args.redirect_uri.clone().unwrap_or_default(),
            login_hint: args.login_hint.clone().unwrap_or_default(),
            account_id: args.account.clone().unwrap_or_default(),
        })
        .await
        .rpc(Api::Scheduler)?;
    if ctx.out.json {
        let v = json!({
            "authorization_url": r.authorization_url,
            "state": r.state,
            "expires_at": output::ts(r.expires_at.as_ref()),
        });
        if args.wait {
            // One document per line: the URL first (so a script can open
            // it at once), then the account.
            ctx.out.json_line(&v);
        } else {
            ctx.out.json(&v);
        }
    } else {
        println!("open this URL and grant access:");
        println!();
        println!("  {}", r.authorization_url);
        println!();
        match (&args.redirect_uri, args.wait) {
            (Some(uri), _) => {
                println!(
                    "the state expires at {}; after the redirect, run:",
                    output::ts_cell(r.expires_at.as_ref())
                );
                println!(
                    "  calbridge accounts complete --state {} --code CODE --redirect-uri {uri}",
                    r.state
                );
            }
            (None, false) => println!(
                "the scheduler completes the authorisation when the browser comes back (before {}); then see `calbridge accounts list`",
                output::ts_cell(r.expires_at.as_ref())
            ),
            (None, true) => eprintln!(
                "waiting for the browser to come back (until {}) ...",
                output::ts_cell(r.expires_at.as_ref())
            ),
        }
    }
    let _ = std::io::stdout().flush();
    if !args.wait {
        return Ok(());
    }
    let deadline = r
        .expires_at
        .as_ref()
        .and_then(calbridge::time::from_timestamp)
        .unwrap_or_else(chrono::Utc::now);
    let account = loop {
        let now = all_accounts(&mut client).await?;
        let connected = now.iter().find(|a| {
            let was = before.iter().find(|b| b.account_id == a.account_id);
            a.provider == pb::Provider::from(args.provider) as i32
                && a.status() == pb::AccountStatus::Active
                && match was {
                    None => true,
                    Some(b) => b.status() != pb::AccountStatus::Active,
                }
        });
        if let Some(a) = connected {
            break a.clone();
        }
        if chrono::Utc::now() >= deadline {
            bail!("the authorisation was not completed before the state expired; run `calbridge accounts authorize` again");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    if !ctx.out.json {
        eprintln!(
            "connected {} as account {}",
            account.provider_account_id, account.account_id
        );
    }
    let statuses = wait_for_initial_sync(&mut client, &account.account_id).await?;
    if ctx.out.json {
        let mut v = account_json(&account);
        v["sync"] = json!(statuses
            .iter()
            .map(output::sync_status_json)
            .collect::<Vec<_>>());
        ctx.out.json_line(&v);
    } else {
        println!("{}", output::accounts_table(std::slice::from_ref(&account)));
        println!("{}", super::sync::status_table(&statuses));
    }
    Ok(())
}

async fn all_accounts(client: &mut Scheduler) -> Result<Vec<pb::Account>> {
    let mut accounts = Vec::new();
    let mut page_token = String::new();
    loop {
        let r = client
            .list_accounts(pb::ListAccountsRequest {
                page_size: 1000,
                page_token,
            })
            .await
            .rpc(Api::Scheduler)?;
        accounts.extend(r.accounts);
        if r.next_page_token.is_empty() {
            return Ok(accounts);
        }
        page_token = r.next_page_token;
    }
}
