//! One module per command group: each turns parsed arguments into calls and
//! prints the answers through `output`.

use anyhow::Result;

use crate::cli::{Cli, Command, Global};
use crate::client;
use crate::output::Out;

mod accounts;
mod admin;
mod calendars;
mod changes;
mod events;
mod queries;
mod sandbox;
mod sync;

/// What every command needs: the global options and where output goes.
pub(crate) struct Ctx {
    /// The global options.
    pub global: Global,
    /// Output shape.
    pub out: Out,
}

impl Ctx {
    /// The Scheduler client, with the tenant API key.
    pub(crate) async fn scheduler(&self) -> Result<client::Scheduler> {
        client::scheduler(&self.global.server, self.global.api_key.as_deref()).await
    }
}

/// Runs one parsed command line.
pub(crate) async fn run(cli: Cli) -> Result<()> {
    let ctx = Ctx {
        out: Out {
            json: cli.global.json,
        },
        global: cli.global,
    };
    match cli.command {
        Command::Up(args) => crate::up::run(args).await,
        Command::Admin(cmd) => admin::run(&ctx, cmd).await,
        Command::Accounts(cmd) => accounts::run(&ctx, cmd).await,
        Command::Calendars(cmd) => calendars::run(&ctx, cmd).await,
        Command::Events(cmd) => events::run(&ctx, cmd).await,
        Command::Freebusy(args) => queries::freebusy(&ctx, args).await,
        Command::Availability(args) => queries::availability(&ctx, args).await,
        Command::Changes(cmd) => changes::run(&ctx, cmd).await,
        Command::Sync(cmd) => sync::run(&ctx, cmd).await,
        Command::Sandbox(cmd) => sandbox::run(&ctx, cmd).await,
    }
}
