//! The server a scenario talks to: its address and the configuration it runs with, whose token
//! key signs the phones' logins and whose limits the phones respect.

use std::net::SocketAddr;
use std::path::PathBuf;

use tern::clock::now_secs;
use tern::config::Config;
use tern::token::TokenKey;

use crate::common::{CommonArgs, TargetKind};
use crate::error::LoadError;

/// `--server` and `--config`, shared by every scenario.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// Client address of the server (host:port).
    #[arg(long, default_value = "127.0.0.1:7400")]
    pub server: String,
    /// The server's configuration file (for the token key and the limits).
    #[arg(long, default_value = "cluster.toml")]
    pub config: PathBuf,
}

/// A resolved server and the means to log in to it.
#[derive(Debug, Clone)]
pub struct Target {
    /// The resolved client address.
    pub addr: SocketAddr,
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

/// The server under test, of either kind.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// A tern node and the means to log in to it.
    Tern(Box<Target>),
    /// An MQTT broker's address.
    Mqtt(SocketAddr),
}

impl Endpoint {
    /// Opens the server named by the common flags.
    pub async fn open(common: &CommonArgs, ttl_secs: u64) -> Result<Self, LoadError> {
        Ok(match common.target {
            TargetKind::Tern => Self::Tern(Box::new(Target::open(&common.server, ttl_secs).await?)),
            TargetKind::Mqtt => Self::Mqtt(resolve(&common.server.server).await?),
        })
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        match self {
            Self::Tern(target) => target.addr,
            Self::Mqtt(addr) => *addr,
        }
    }
}

impl Target {
    /// Loads the configuration and resolves the address; tokens stay valid for `ttl_secs`.
    pub async fn open(args: &ServerArgs, ttl_secs: u64) -> Result<Self, LoadError> {
        let config = Config::load(&args.config)?;
        let addr = resolve(&args.server).await?;
        let key = TokenKey::new(config.auth.token_key.as_bytes());
        Ok(Self {
            addr,
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
