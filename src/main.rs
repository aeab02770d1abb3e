//! The `tern` binary: parses the command line and the configuration, sets up logging and the
//! runtime, and hands over to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tern::clock::now_secs;
use tern::config::Config;
use tern::server::{Listeners, Server, ServerError};
use tern::token::TokenKey;

/// mimalloc, unless built with `--features system-alloc` (the C library's allocator, which heap
/// profilers such as heaptrack can follow: `loadtest/scripts/heap_profile.sh`).
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code for configuration errors (EX_USAGE-adjacent EX_DATAERR per sysexits is 65; 64 is
/// EX_USAGE, which operators' tooling treats as "fix the invocation or config").
const EXIT_CONFIG: u8 = 64;

/// Exit code when a background task or thread (a journal or store thread, a mailbox worker, a
/// fan-out lane, the checkpointer, the sweeper...) died while the node ran: 70 is sysexits'
/// EX_SOFTWARE. The node has shut down; its supervisor should restart it, and recovery replays
/// the journals.
const EXIT_TASK_DIED: u8 = 70;

#[derive(Parser)]
#[command(name = "tern", version, about = "tern chat server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node.
    Serve {
        /// Configuration file.
        #[arg(long, default_value = "cluster.toml")]
        config: PathBuf,
        /// Overrides `node.data_dir`.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Print a login token (for development and tests).
    Token {
        /// Configuration file (for the signing key).
        #[arg(long, default_value = "cluster.toml")]
        config: PathBuf,
        /// User id.
        #[arg(long)]
        user: String,
        /// Device id.
        #[arg(long)]
        device: String,
        /// Lifetime in seconds (default: auth.default_token_ttl_secs).
        #[arg(long)]
        ttl: Option<u64>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config, data_dir } => serve(&config, data_dir),
        Command::Token {
            config,
            user,
            device,
            ttl,
        } => token(&config, &user, &device, ttl),
    }
}

fn load_config(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|error| {
        eprintln!("tern: {error}");
        ExitCode::from(EXIT_CONFIG)
    })
}

fn token(path: &std::path::Path, user: &str, device: &str, ttl: Option<u64>) -> ExitCode {
    let config = match load_config(path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let ttl = ttl.unwrap_or(config.auth.default_token_ttl_secs);
    let key = TokenKey::new(config.auth.token_key.as_bytes());
    match key.sign(user, device, now_secs() + ttl) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("tern: {error}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

fn serve(path: &std::path::Path, data_dir: Option<PathBuf>) -> ExitCode {
    let mut config = match load_config(path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    if let Some(dir) = data_dir {
        config.node.data_dir = dir;
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("tern: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        if let Err(error) = std::fs::create_dir_all(&config.node.data_dir) {
            eprintln!(
                "tern: cannot create data dir {}: {error}",
                config.node.data_dir.display()
            );
            return Err(ExitCode::FAILURE);
        }
        let listeners = Listeners::bind(&config).await.map_err(|error| {
            eprintln!("tern: {error}");
            ExitCode::FAILURE
        })?;
        let shutdown = shutdown_signal();
        let server = Server::start(config, listeners).await.map_err(|error| {
            eprintln!("tern: {error}");
            ExitCode::FAILURE
        })?;
        println!(
            "tern ready client={} admin={} media={}",
            server.client_addr(),
            server.admin_addr(),
            server.media_addr()
        );
        server.run_until(shutdown).await.map_err(|error| {
            eprintln!("tern: {error}");
            match error {
                ServerError::TaskDied { .. } => ExitCode::from(EXIT_TASK_DIED),
                _ => ExitCode::FAILURE,
            }
        })
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}

/// Registers SIGINT and SIGTERM handlers now (before the ready line, so a signal sent right
/// after it is never fatal) and returns a future that completes on either.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            match (interrupt, terminate) {
                (Ok(mut interrupt), Ok(mut terminate)) => {
                    tokio::select! {
                        _ = interrupt.recv() => {}
                        _ = terminate.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
