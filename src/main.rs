//! The `tern` binary: parses the command line and the configuration, sets up logging and the
//! runtime, and hands over to the library.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tern::clock::now_secs;
use tern::config::{Config, ConfigError, DataDirLock};
use tern::server::{Listeners, Server, ServerError};
use tern::token::TokenKey;

/// mimalloc, unless built with `--features system-alloc` (the C library's allocator, which heap
/// profilers such as heaptrack can follow: `loadtest/scripts/heap_profile.sh`).
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code for configuration errors, including what only start-up can see (a data directory
/// that cannot be created or is locked by another node): 64 is sysexits' EX_USAGE, which
/// operators' tooling treats as "fix the invocation or config", and which the systemd unit does
/// not restart on (`RestartPreventExitStatus=64`), since a restart cannot help.
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
    #[command(flatten)]
    log: tern::logging::LogOptions,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node.
    ///
    /// Signals:
    ///   SIGTERM, SIGINT  graceful stop: send every phone a GoAway, answer new logins with
    ///                    Error OVERLOADED, wait up to limits.shutdown_grace_secs for
    ///                    connections to close, then exit 0.
    ///   SIGHUP           does not stop the node (logged): it reloads the TLS certificate, key
    ///                    and CA files ([tls]); established connections keep theirs. Nothing
    ///                    else is reloaded.
    ///
    /// Exit codes:
    ///   0   stopped by SIGTERM or SIGINT after the drain.
    ///   64  the configuration is unusable: every problem is listed on stderr (invalid values,
    ///       two listeners on one port, a data directory that cannot be created or that another
    ///       node holds). Restarting cannot help.
    ///   70  a background task or thread died while the node ran; restart it (recovery replays
    ///       the journals).
    ///   1   any other start-up failure (a port taken by another process, a store or journal
    ///       that cannot be opened).
    #[command(verbatim_doc_comment)]
    Serve {
        /// Configuration file.
        #[arg(long, default_value = "cluster.toml")]
        config: PathBuf,
        /// Overrides `node.data_dir`.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Drain a running node (as SIGTERM does) and wait until it has exited.
    ///
    /// Asks the node at the configuration's admin address (POST /drain, with auth.admin_token):
    /// it hands its leaderships to its peers, tells its phones to reconnect elsewhere spread
    /// over limits.reconnect_window_ms, waits for them to leave, checkpoints and exits 0.
    ///
    /// Exit codes: 0 drained and gone; 1 refused (no or wrong admin token), unreachable, or
    /// still running after --timeout; 64 the configuration is unusable.
    #[command(verbatim_doc_comment)]
    Drain {
        /// Configuration file of the node (its admin address and admin token).
        #[arg(long, default_value = "cluster.toml")]
        config: PathBuf,
        /// The node's admin address, if not the configuration's node.admin_addr.
        #[arg(long)]
        admin: Option<std::net::SocketAddr>,
        /// Seconds to wait for the node to exit.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
    },
    /// Make a development CA and node certificates, to turn TLS on.
    ///
    /// Writes DIR/ca.crt and DIR/ca.key (once; a later run reuses them) and DIR/NODE.crt and
    /// DIR/NODE.key per --node, then prints the [tls] lines that use them. A node certificate
    /// names NODE, localhost, 127.0.0.1 and every --host, serves on the client and media
    /// ports and as the node's mesh certificate; ca.crt is the trust file for phones
    /// (chat-cli --ca, tern-load --ca-file, curl --cacert) and for tls.ca_file.
    #[command(verbatim_doc_comment)]
    Certs {
        /// Directory of the files (created if missing).
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// A node to make a certificate for (repeat for several).
        #[arg(long = "node", default_value = "tern-1")]
        nodes: Vec<String>,
        /// A further host name or IP address the node certificates name (repeatable).
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// Days the node certificates are valid (the CA: ten times as long).
        #[arg(long, default_value_t = 365)]
        days: u64,
    },
    /// Sign a device, or every device of a user, out before its tokens expire.
    ///
    /// Asks the node at the configuration's admin address (POST /users/USER/revoke or
    /// POST /users/USER/devices/DEVICE/revoke, with auth.admin_token): tokens of the device (or
    /// user) issued up to now are refused at login with ERROR_CODE_TOKEN_REVOKED, and its
    /// sessions are closed. Any node of a cluster takes it for the user's owner. Prints the
    /// not-before time (seconds since the epoch) once the revocation is durable.
    ///
    /// Exit codes: 0 revoked; 1 refused (no or wrong admin token), unreachable, or not made
    /// durable (retry); 64 the configuration or an id is unusable.
    #[command(verbatim_doc_comment)]
    Revoke {
        /// Configuration file of the node (its admin address and admin token).
        #[arg(long, default_value = "cluster.toml")]
        config: PathBuf,
        /// The node's admin address, if not the configuration's node.admin_addr.
        #[arg(long)]
        admin: Option<std::net::SocketAddr>,
        /// The user whose tokens are revoked.
        #[arg(long)]
        user: String,
        /// Only this device of the user (default: every device).
        #[arg(long)]
        device: Option<String>,
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
    if let Err(code) = tern::logging::init_or_exit(&cli.log) {
        return code;
    }
    match cli.command {
        Command::Serve { config, data_dir } => serve(&config, data_dir),
        Command::Token {
            config,
            user,
            device,
            ttl,
        } => token(&config, &user, &device, ttl),
        Command::Drain {
            config,
            admin,
            timeout,
        } => drain(&config, admin, timeout),
        Command::Certs {
            dir,
            nodes,
            hosts,
            days,
        } => certs(dir, nodes, hosts, days),
        Command::Revoke {
            config,
            admin,
            user,
            device,
        } => revoke(&config, admin, &user, device.as_deref()),
    }
}

/// `tern revoke`: asks the node to revoke the tokens of a user or one of its devices.
fn revoke(
    path: &std::path::Path,
    admin: Option<std::net::SocketAddr>,
    user: &str,
    device: Option<&str>,
) -> ExitCode {
    use tern::admin::request::request;
    if let Some(invalid) = std::iter::once(user)
        .chain(device)
        .find(|id| !tern::token::valid_id(id))
    {
        complain(&format_args!(
            "invalid id {invalid:?}: 1-64 characters of [A-Za-z0-9._@+-]"
        ));
        return ExitCode::from(EXIT_CONFIG);
    }
    let config = match load_config(path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let addr = admin.unwrap_or(config.node.admin_addr);
    let path = match device {
        Some(device) => format!("/users/{user}/devices/{device}/revoke"),
        None => format!("/users/{user}/revoke"),
    };
    let runtime = match runtime(tokio::runtime::Builder::new_current_thread()) {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    runtime.block_on(async move {
        match request(addr, "POST", &path, config.auth.admin_token()).await {
            Ok((200, body)) => {
                let not_before = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|answer| answer["not_before"].as_u64())
                    .unwrap_or_default();
                let _ = writeln!(
                    std::io::stdout(),
                    "revoked {user}/{}: tokens issued at or before {not_before} are refused",
                    device.unwrap_or("*")
                );
                ExitCode::SUCCESS
            }
            Ok((status, body)) => {
                complain(&format_args!("revoke refused ({status}): {}", body.trim()));
                ExitCode::FAILURE
            }
            Err(error) => {
                complain(&error);
                ExitCode::FAILURE
            }
        }
    })
}

/// `tern drain`: asks the node to drain, then waits until its admin port stops answering.
fn drain(path: &std::path::Path, admin: Option<std::net::SocketAddr>, timeout: u64) -> ExitCode {
    use tern::admin::request::{RequestError, request};
    let config = match load_config(path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let addr = admin.unwrap_or(config.node.admin_addr);
    let runtime = match runtime(tokio::runtime::Builder::new_current_thread()) {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    runtime.block_on(async move {
        let start = std::time::Instant::now();
        match request(addr, "POST", "/drain", config.auth.admin_token()).await {
            Ok((202, _)) => {}
            Ok((status, body)) => {
                complain(&format_args!("drain refused ({status}): {}", body.trim()));
                return ExitCode::FAILURE;
            }
            Err(error) => {
                complain(&error);
                return ExitCode::FAILURE;
            }
        }
        let _ = writeln!(std::io::stdout(), "draining {addr}");
        let deadline = start + std::time::Duration::from_secs(timeout);
        while std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            if let Err(RequestError::Connect { .. }) = request(addr, "GET", "/healthz", None).await
            {
                let _ = writeln!(
                    std::io::stdout(),
                    "drained: the node at {addr} exited after {:.1} s",
                    start.elapsed().as_secs_f64()
                );
                return ExitCode::SUCCESS;
            }
        }
        complain(&format_args!(
            "the node at {addr} still runs after {timeout} s"
        ));
        ExitCode::FAILURE
    })
}

/// `tern certs`: makes the files and prints how to use them.
fn certs(dir: PathBuf, nodes: Vec<String>, hosts: Vec<String>, days: u64) -> ExitCode {
    let request = tern::certs::CertsRequest {
        dir,
        nodes,
        hosts,
        valid_for: std::time::Duration::from_secs(days.max(1) * 86_400),
        // A little slack for clocks behind this machine's.
        backdate: std::time::Duration::from_secs(3_600),
    };
    let made = match tern::certs::make(&request) {
        Ok(made) => made,
        Err(error) => {
            complain(&error);
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout().lock();
    let ca = made.ca_cert.display();
    let how = if made.ca_created { "made" } else { "reused" };
    let _ = writeln!(
        out,
        "CA {how}: {ca} (the trust file for phones and tls.ca_file)"
    );
    for (node, cert, key) in &made.nodes {
        let _ = writeln!(out, "\n# {node}: in its cluster.toml");
        let _ = writeln!(out, "[tls]");
        let _ = writeln!(out, "cert_file = \"{}\"", cert.display());
        let _ = writeln!(out, "key_file = \"{}\"", key.display());
        let _ = writeln!(out, "# with [cluster]: mutual TLS on the mesh");
        let _ = writeln!(out, "ca_file = \"{ca}\"");
    }
    ExitCode::SUCCESS
}

fn load_config(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|error| {
        complain(&error);
        ExitCode::from(EXIT_CONFIG)
    })
}

fn token(path: &std::path::Path, user: &str, device: &str, ttl: Option<u64>) -> ExitCode {
    let config = match load_config(path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let ttl = ttl.unwrap_or(config.auth.default_token_ttl_secs);
    let key = TokenKey::from_config(&config.auth);
    match key.sign(user, device, now_secs() + ttl) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            complain(&error);
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// Everything `tern serve` can check before starting: the configuration, then the data
/// directory (created, and locked for this process), all problems reported at once.
fn check_serve(
    path: &std::path::Path,
    data_dir: Option<PathBuf>,
) -> Result<(Config, DataDirLock), ConfigError> {
    let mut config = Config::read(path)?;
    if let Some(dir) = data_dir {
        config.node.data_dir = dir;
    }
    let mut problems = config.validate();
    // Tried even when the values have problems, so one run lists them all.
    let lock = match DataDirLock::acquire(&config.node.data_dir) {
        Ok(lock) => Some(lock),
        Err(error) => {
            problems.push(error.to_string());
            None
        }
    };
    match lock {
        Some(lock) if problems.is_empty() => Ok((config, lock)),
        _ => Err(ConfigError::Invalid {
            path: path.to_owned(),
            problems,
        }),
    }
}

fn serve(path: &std::path::Path, data_dir: Option<PathBuf>) -> ExitCode {
    let (config, data_dir_lock) = match check_serve(path, data_dir) {
        Ok(checked) => checked,
        Err(error) => {
            complain(&error);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match runtime(tokio::runtime::Builder::new_multi_thread()) {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    tracing::info!(
        token_key = %config.auth.token_key_source,
        data_dir = %config.node.data_dir.display(),
        "configuration loaded"
    );
    let result = runtime.block_on(async move {
        let listeners = Listeners::bind(&config).await.map_err(|error| {
            complain(&error);
            ExitCode::FAILURE
        })?;
        let shutdown = shutdown_signal();
        let server = Server::start(config, listeners).await.map_err(|error| {
            complain(&error);
            ExitCode::FAILURE
        })?;
        // Not `println!`: a supervisor that closed stdout must not panic the node.
        let _ = writeln!(
            std::io::stdout(),
            "tern ready client={} admin={} media={}",
            server.client_addr(),
            server.admin_addr(),
            server.media_addr()
        );
        // systemd (Type=notify) hears READY=1 once the node serves phones: recovered and, in a
        // cluster, active and caught up with its slot groups.
        let ready = server.readiness_probe();
        let notifier = tokio::spawn(async move {
            loop {
                match ready() {
                    Ok(()) => {
                        tracing::info!("ready: serving phones (in sync with the cluster, if any)");
                        tern::notify::notify("READY=1\nSTATUS=serving");
                        return;
                    }
                    Err(reason) => tern::notify::notify(&format!("STATUS={reason}")),
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        });
        let outcome = server.run_until(shutdown).await;
        notifier.abort();
        outcome.map_err(|error| {
            complain(&error);
            match error {
                ServerError::TaskDied { .. } => ExitCode::from(EXIT_TASK_DIED),
                _ => ExitCode::FAILURE,
            }
        })
    });
    // The lock is held until the node has stopped and the runtime's last blocking work (which
    // may still touch files) is done: the data directory is not free before that.
    drop(runtime);
    drop(data_dir_lock);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}

/// Builds a runtime with every driver; says why not.
fn runtime(mut builder: tokio::runtime::Builder) -> Result<tokio::runtime::Runtime, ExitCode> {
    builder.enable_all().build().map_err(|error| {
        complain(&format_args!("cannot start the runtime: {error}"));
        ExitCode::FAILURE
    })
}

/// Prints `tern: <error>` on stderr; a stderr that is gone (closed terminal, dead pipe) is not
/// a reason to panic.
fn complain(error: &dyn std::fmt::Display) {
    let _ = writeln!(std::io::stderr(), "tern: {error}");
}

/// Registers the SIGINT, SIGTERM and SIGHUP handlers now (before the ready line, so a signal
/// sent right after it is never fatal) and returns a future that completes on SIGINT or
/// SIGTERM. SIGHUP, whose default action would end the node at once without a drain (a closed
/// terminal, an operator's habitual "reload"), does not stop it: the TLS reloader
/// (`tern::tls`) reloads the certificate files on it.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        let hangup = signal(SignalKind::hangup());
        if let Err(error) = &hangup {
            tracing::warn!(%error, "cannot handle SIGHUP; it will stop the node without a drain");
        }
        async move {
            let (Ok(mut interrupt), Ok(mut terminate)) = (interrupt, terminate) else {
                let _ = tokio::signal::ctrl_c().await;
                return;
            };
            let mut hangup = hangup.ok();
            loop {
                tokio::select! {
                    _ = interrupt.recv() => return,
                    _ = terminate.recv() => return,
                    Some(()) = async { hangup.as_mut()?.recv().await } => {
                        tracing::info!("SIGHUP: the node keeps serving (TLS files are reloaded; SIGTERM or SIGINT stops it)");
                    }
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
