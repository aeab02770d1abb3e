//! `tern-load`: load scenarios and an interactive client for a tern server.
//!
//! Exit status: 0 when the scenario passed, 1 when its figures show a failure (e.g. lost
//! messages), 2 when it could not run (bad arguments, server unreachable, login refused).

#![forbid(unsafe_code)]

mod body;
mod bucket;
mod common;
mod dial;
mod error;
mod latency;
mod mqtt;
mod parts;
mod poll;
mod procfs;
mod progress;
mod report;
mod scenario;
mod target;
mod tls;
mod tracker;
mod wan_proxy;

use std::future::Future;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use common::CommonArgs;
use error::LoadError;
use parts::{PartLink, Partial};
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
    /// Opens and logs in many connections and holds them: server memory per connection.
    Idle(scenario::idle::IdleArgs),
    /// Pairs of phones message each other; checks loss, duplicates and latency.
    Chat(scenario::chat::ChatArgs),
    /// Log in, resume, disconnect, again, over many loops: logins per second.
    Storm(scenario::storm::StormArgs),
    /// One member posts to a large group: time to reach every online member, fan-out rate.
    Group(scenario::group::GroupArgs),
    /// An interactive client: prints what arrives, sends what you type.
    ChatCli(scenario::chat_cli::ChatCliArgs),
    /// Senders message recipients that are offline; every ServerAck is appended to a record.
    OfflineSend(scenario::offline_send::OfflineSendArgs),
    /// Logs in the recorded recipients and checks every recorded message arrives at its seq.
    OfflineDrain(scenario::offline_drain::OfflineDrainArgs),
    /// Devices that are away get their pushes: pushes per message, send-to-push latency, duplicates
    /// (runs a stand-in push gateway the server's `[push] url` points at).
    Push(scenario::push::PushArgs),
    /// One hostile device floods the server with one frame kind, reconnecting when cut.
    Flood(scenario::flood::FloodArgs),
    /// A TCP proxy that adds a one-way delay (and jitter, and a rate cap) in each direction:
    /// a WAN between network namespaces.
    WanProxy(wan_proxy::WanProxyArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Idle(args) => match worker_of(&args.common) {
            Some((index, count)) => {
                serve(index, count, |link| scenario::idle::part(args, link)).await
            }
            None => scenario::idle::run(args).await,
        },
        Command::Chat(args) => match worker_of(&args.common) {
            Some((index, count)) => {
                serve(index, count, |link| scenario::chat::part(args, link)).await
            }
            None => scenario::chat::run(args).await,
        },
        Command::Storm(args) => match worker_of(&args.common) {
            Some((index, count)) => {
                serve(index, count, |link| scenario::storm::part(args, link)).await
            }
            None => scenario::storm::run(args).await,
        },
        Command::Group(args) => scenario::group::run(args).await,
        Command::ChatCli(args) => scenario::chat_cli::run(args).await,
        Command::OfflineSend(args) => scenario::offline_send::run(args).await,
        Command::OfflineDrain(args) => scenario::offline_drain::run(args).await,
        Command::Flood(args) => scenario::flood::run(args).await,
        Command::Push(args) => scenario::push::run(args).await,
        Command::WanProxy(args) => wan_proxy::run(args).await,
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

/// `(index, count)` when this process is a worker started by a coordinator.
fn worker_of(common: &CommonArgs) -> Option<(usize, usize)> {
    common
        .worker_index
        .map(|index| (index, common.workers.unwrap_or(1)))
}

/// Runs one part as a worker process; its figures go to the coordinator, not to the exit code.
async fn serve<F, Fut>(index: usize, count: usize, part: F) -> Result<Verdict, LoadError>
where
    F: FnOnce(PartLink) -> Fut,
    Fut: Future<Output = Result<Partial, LoadError>>,
{
    parts::worker::serve(index, count, part).await?;
    Ok(Verdict::Pass)
}
