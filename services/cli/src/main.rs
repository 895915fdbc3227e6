//! `calbridge`: the command-line client of the calbridge scheduler, and the
//! launcher of the local stack (`calbridge up`).

use std::process::ExitCode;

use clap::Parser;

mod cli;
mod client;
mod commands;
mod error;
mod output;
mod timearg;
mod up;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match commands::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprint!("{}", error::render(&e));
            ExitCode::FAILURE
        }
    }
}
