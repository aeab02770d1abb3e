//! `tern-load`: load scenarios and an interactive client for a tern server.
//!
//! Exit status: 0 when the scenario passed, 1 when its figures show a failure (e.g. lost
//! messages), 2 when it could not run (bad arguments, server unreachable, login refused).

#![forbid(unsafe_code)]

mod body;
mod bucket;
mod dial;
mod error;
mod latency;
mod poll;
mod progress;
mod scenario;
mod target;
mod tracker;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use scenario::Verdict;

/// Load generator and interactive test client for tern.
#[derive(Debug, Parser)]
#[command(name = "tern-load", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// One subcommand per scenario.
#[derive(Debug, Subcommand)]
enum Command {
    /// Pairs of phones message each other; checks loss, duplicates and latency.
    Chat(scenario::chat::ChatArgs),
    /// An interactive client: prints what arrives, sends what you type.
    ChatCli(scenario::chat_cli::ChatCliArgs),
    /// Senders message recipients that are offline; every ServerAck is appended to a record.
    OfflineSend(scenario::offline_send::OfflineSendArgs),
    /// Logs in the recorded recipients and checks every recorded message arrives at its seq.
    OfflineDrain(scenario::offline_drain::OfflineDrainArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Chat(args) => scenario::chat::run(args).await,
        Command::ChatCli(args) => scenario::chat_cli::run(args).await,
        Command::OfflineSend(args) => scenario::offline_send::run(args).await,
        Command::OfflineDrain(args) => scenario::offline_drain::run(args).await,
    };
    match result {
        Ok(Verdict::Pass) => ExitCode::SUCCESS,
        Ok(Verdict::Fail) => ExitCode::from(1),
        Err(error) => {
            eprintln!("tern-load: {error}");
            ExitCode::from(2)
        }
    }
}
