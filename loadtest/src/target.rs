//! The server a scenario talks to: its address, whether it speaks TLS, and the configuration
//! it runs with, whose token key signs the phones' logins and whose limits the phones respect.

use std::net::SocketAddr;
use std::path::PathBuf;

use tern::clock::now_secs;
use tern::config::Config;
use tern::token::TokenKey;

use crate::common::{CommonArgs, TargetKind};
use crate::dial::Dialer;
use crate::error::LoadError;
use crate::tls::TlsArgs;

/// `--server`, `--config` and the TLS flags, shared by every scenario.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// Client address of the server (host:port), or several separated by commas (the nodes of
    /// a cluster): phone number i then connects to address i mod n.
    #[arg(long, default_value = "127.0.0.1:7400")]
    pub server: String,
    /// The server's configuration file (for the token key and the limits).
    #[arg(long, default_value = "cluster.toml")]
    pub config: PathBuf,
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// A resolved server and the means to log in to it.
#[derive(Debug, Clone)]
pub struct Target {
    /// Opens connections to the resolved client addresses, in the order given.
    pub dialer: Dialer,
    /// The server's configuration.
    pub config: Config,
    key: TokenKey,
    expires_at: u64,
}

/// The first address `server` (host:port) resolves to.
pub async fn resolve(server: &str) -> Result<SocketAddr, LoadError> {
    tokio::net::lookup_host(server)
        .await
        .map_err(|error| LoadError::Resolve {
            addr: server.to_owned(),
            reason: error.to_string(),
        })?
        .next()
        .ok_or_else(|| LoadError::Resolve {
            addr: server.to_owned(),
            reason: "no address found".to_owned(),
        })
}

/// The first address each of the comma-separated host:port entries of `servers` resolves to,
/// in order.
pub async fn resolve_all(servers: &str) -> Result<Vec<SocketAddr>, LoadError> {
    let mut addrs = Vec::new();
    for server in split(servers) {
        addrs.push(resolve(server).await?);
    }
    if addrs.is_empty() {
        return Err(LoadError::Resolve {
            addr: servers.to_owned(),
            reason: "no address given".to_owned(),
        });
    }
    Ok(addrs)
}

/// The comma-separated entries of `servers`, trimmed, empty ones left out.
pub fn split(servers: &str) -> impl Iterator<Item = &str> {
    servers
        .split(',')
        .map(str::trim)
        .filter(|server| !server.is_empty())
}

/// The server under test, of either kind.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// A tern node and the means to log in to it.
    Tern(Box<Target>),
    /// Opens connections to the MQTT brokers' addresses.
    Mqtt(Dialer),
}

impl Endpoint {
    /// Opens the server named by the common flags.
    pub async fn open(common: &CommonArgs, ttl_secs: u64) -> Result<Self, LoadError> {
        Ok(match common.target {
            TargetKind::Tern => Self::Tern(Box::new(Target::open(&common.server, ttl_secs).await?)),
            TargetKind::Mqtt => {
                let dialer = Dialer::spread(&resolve_all(&common.server.server).await?)?;
                Self::Mqtt(dialer.with_tls(common.server.tls.client()?))
            }
        })
    }

    /// Opens the connections (phone i to address i mod n).
    pub fn dialer(&self) -> &Dialer {
        match self {
            Self::Tern(target) => &target.dialer,
            Self::Mqtt(dialer) => dialer,
        }
    }
}

impl Target {
    /// Loads the configuration and resolves the addresses; tokens stay valid for `ttl_secs`.
    /// Every node of a cluster is taken to share the configuration's token key.
    pub async fn open(args: &ServerArgs, ttl_secs: u64) -> Result<Self, LoadError> {
        let config = Config::load(&args.config)?;
        let dialer =
            Dialer::spread(&resolve_all(&args.server).await?)?.with_tls(args.tls.client()?);
        let key = TokenKey::from_config(&config.auth);
        Ok(Self {
            dialer,
            config,
            key,
            expires_at: now_secs().saturating_add(ttl_secs),
        })
    }

    /// A login token for `user` on `device`.
    pub fn token(&self, user: &str, device: &str) -> Result<String, LoadError> {
        self.key
            .sign(user, device, self.expires_at)
            .map_err(|source| LoadError::Token {
                user: user.to_owned(),
                device: device.to_owned(),
                source,
            })
    }
}
