//! Everything that can stop a scenario before it produces figures.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use tern::client::ClientError;
use tern::config::ConfigError;
use tern::tls::TlsError;
use tern::token::TokenError;

use crate::mqtt::MqttError;
use crate::procfs::ProcError;

/// Why a scenario could not run (as opposed to figures that show a failure, like `lost > 0`).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The cluster configuration (for the token key and limits) could not be loaded.
    #[error("cannot load the configuration: {0}")]
    Config(#[from] ConfigError),
    /// A user or device id is not usable in a token.
    #[error("cannot sign a token for {user}/{device}: {source}")]
    Token {
        /// The user.
        user: String,
        /// The device.
        device: String,
        /// Why signing failed.
        source: TokenError,
    },
    /// `--server` does not name a reachable address.
    #[error("cannot resolve server address {addr:?}: {reason}")]
    Resolve {
        /// What was given.
        addr: String,
        /// Why it failed.
        reason: String,
    },
    /// The TCP connection could not be opened.
    #[error("cannot connect to {addr}{}: {source}", source_note(*.from))]
    Connect {
        /// The server.
        addr: SocketAddr,
        /// The local address the socket was bound to, if any.
        from: Option<SocketAddr>,
        /// The socket error.
        source: io::Error,
    },
    /// `--ca-file` cannot serve as the trust of a TLS client.
    #[error("cannot use {path} for TLS: {source}")]
    Tls {
        /// The CA file.
        path: PathBuf,
        /// Why.
        source: TlsError,
    },
    /// The TCP connection opened but the TLS handshake failed (an untrusted certificate, a
    /// name it does not carry, a server that does not speak TLS).
    #[error("TLS handshake with {addr} failed: {source}")]
    Handshake {
        /// The server.
        addr: SocketAddr,
        /// What rustls or the socket said.
        source: io::Error,
    },
    /// Connecting or logging in took too long.
    #[error("connecting to {addr} and logging in as {user} timed out after {secs} s")]
    Timeout {
        /// The server.
        addr: SocketAddr,
        /// The user logging in.
        user: String,
        /// The limit.
        secs: u64,
    },
    /// The server answered Login with something else than Welcome.
    #[error("login as {user} refused: {reason}")]
    LoginRefused {
        /// The user logging in.
        user: String,
        /// The server's answer.
        reason: String,
    },
    /// The server sent the user to its home datacenter (GoAway ELSEWHERE) instead of logging
    /// it in.
    #[error("login as {user} sent elsewhere: homed in another datacenter, at {}", .alternates.join(","))]
    Elsewhere {
        /// The user logging in.
        user: String,
        /// The home datacenter's client addresses, as the server listed them.
        alternates: Vec<String>,
    },
    /// `--wan-config` could not be read or has no usable `[wan]` section.
    #[error("cannot use the WAN configuration {path}: {reason}")]
    WanConfig {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Socket or framing trouble on an established connection.
    #[error("connection error: {0}")]
    Client(#[from] ClientError),
    /// The command line is inconsistent.
    #[error("invalid arguments: {0}")]
    Args(String),
    /// Reading the terminal failed.
    #[error("cannot read stdin: {0}")]
    Stdin(io::Error),
    /// Some phones of a scenario never logged in.
    #[error("{failed} of {total} connections could not log in; first error: {first}")]
    Setup {
        /// Phones that failed.
        failed: usize,
        /// Phones in the scenario.
        total: usize,
        /// The first failure.
        first: String,
    },
    /// The MQTT broker refused or broke the protocol.
    #[error("mqtt: {0}")]
    Mqtt(#[from] MqttError),
    /// `--server-pid` names a process that cannot be read.
    #[error("cannot measure the server: {0}")]
    Probe(#[from] ProcError),
    /// A worker process could not be started.
    #[error("cannot start a worker process: {0}")]
    Spawn(io::Error),
    /// A worker process could not report to its parent.
    #[error("cannot write to the coordinator: {0}")]
    Pipe(io::Error),
    /// A part of the run (a worker process, or this process's part) could not run.
    #[error("part {index}: {error}")]
    Part {
        /// The part.
        index: usize,
        /// What it reported.
        error: String,
    },
    /// The parts did not report as expected.
    #[error("coordination: {0}")]
    Parts(String),
}

fn source_note(from: Option<SocketAddr>) -> String {
    from.map(|from| format!(" from {from}")).unwrap_or_default()
}
