//! The typed node configuration (`cluster.toml`): every field, its default, and validation.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::cluster::config::{CLUSTER_SECRET_ENV, ClusterConfig};

mod admin_token;
mod data_dir;
mod secret;
mod tls;
mod token_key;

pub use admin_token::{ADMIN_TOKEN_ENV, MIN_ADMIN_TOKEN_BYTES};
pub use data_dir::{DataDirError, DataDirLock, LOCK_FILE};
pub use secret::{SecretSource, SecretSpec};
pub use tls::{PLAIN_LISTENERS, TlsConfig};
pub use token_key::{MIN_TOKEN_KEY_BYTES, TOKEN_KEY_ENV, TokenKeySource, VerifyKey};

/// The smallest `mailbox.dedup_window`: what one device may have in flight, every id of which
/// it may resend after a reconnect.
pub const MIN_DEDUP_WINDOW: u32 = crate::session::MAX_PENDING_SENDS as u32;
/// The largest `mailbox.dedup_window` (a saved chunk of a window, 1/64 of it, stays well
/// within the store's value limit).
pub const MAX_DEDUP_WINDOW: u32 = 16_384;

/// Errors loading a configuration file. All validation problems are reported together.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path that was read.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has fields of the wrong type or unknown fields.
    #[error("cannot parse {path}: {message}")]
    Parse {
        /// The path that was parsed.
        path: PathBuf,
        /// The parser's message (with line and column).
        message: String,
    },
    /// The file parsed but some values are out of range; every problem is listed.
    #[error("invalid configuration in {path}:\n  - {}", problems.join("\n  - "))]
    Invalid {
        /// The path that was validated.
        path: PathBuf,
        /// One line per problem.
        problems: Vec<String>,
    },
}

/// The whole configuration of one node. Every section and field is optional: an empty file gives
/// the defaults (and then only lacks a token key, which has no default).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This node: name, addresses, data directory.
    #[serde(default)]
    pub node: NodeConfig,
    /// Login tokens.
    #[serde(default)]
    pub auth: AuthConfig,
    /// Per-connection limits and timeouts.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// The sharded dispatchers.
    #[serde(default)]
    pub dispatch: DispatchConfig,
    /// Mailboxes (the write-back cache of queued messages).
    #[serde(default)]
    pub mailbox: MailboxConfig,
    /// The write-ahead journals that make acked messages durable.
    #[serde(default)]
    pub journal: JournalSection,
    /// The sled stores that hold what stays unread past the write-back delay.
    #[serde(default)]
    pub store: StoreSection,
    /// Group chats.
    #[serde(default)]
    pub groups: GroupsConfig,
    /// The media server: resumable uploads and downloads over HTTP.
    #[serde(default)]
    pub media: MediaSection,
    /// TLS on the client, media, mesh and gateway listeners; without it they speak plain text,
    /// which only loopback addresses and the listeners `tls.plain` names may do.
    #[serde(default)]
    pub tls: TlsConfig,
    /// Membership of a cluster; absent (the default), the node is a single node and nothing
    /// cluster-related starts.
    #[serde(default)]
    pub cluster: Option<ClusterConfig>,
    /// Links to clusters in other datacenters; absent (the default), this cluster is alone.
    #[serde(default)]
    pub wan: Option<crate::wan::WanConfig>,
    /// Push notifications through a push gateway; absent (the default), nothing is pushed.
    #[serde(default)]
    pub push: Option<crate::push::PushConfig>,
}

/// Group chats.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GroupsConfig {
    /// Members per group at most. Default: 1024.
    pub max_members: u32,
    /// Fan-out lanes (tasks copying group entries into members' mailboxes); a group always
    /// uses the same lane, so its entries arrive in order. Default: 4.
    pub fanout_lanes: u32,
    /// Entries queued per fan-out lane; past it, entries wait in their group, and a group with
    /// this many entries waiting refuses posts with OVERLOADED. Default: 1024.
    pub fanout_queue: u32,
    /// Groups with more members than this keep each entry once in the group's log in the
    /// store; members' stored copies are references to it, so storage grows with messages, not
    /// messages × members. Default: 64.
    pub reference_threshold: u32,
}

impl Default for GroupsConfig {
    fn default() -> Self {
        Self {
            max_members: 1024,
            fanout_lanes: 4,
            fanout_queue: 1024,
            reference_threshold: 64,
        }
    }
}

/// The media server: tus 1.0 uploads and downloads over HTTP/1.1 on its own port, objects under
/// `node.data_dir/media` (see docs/media.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaSection {
    /// Address of the media HTTP server. Port 0 picks a free port. Default: `127.0.0.1:7402`.
    pub listen_addr: SocketAddr,
    /// Largest upload, in bytes; advertised in `Tus-Max-Size`, larger ones are refused with 413.
    /// Default: 104857600 (100 MiB).
    pub max_upload_bytes: u64,
    /// Bytes one user may hold: the declared length of every upload, finished or not, counts
    /// until it is terminated or expires (deduplicated copies count for each owner). Past it,
    /// new uploads are refused with 403. Default: 1073741824 (1 GiB).
    pub user_quota_bytes: u64,
    /// Unfinished uploads one user may have at a time; more are refused with 403. Default: 16.
    pub max_unfinished_uploads_per_user: u32,
    /// Seconds an unfinished upload lives after its last received byte (`Upload-Expires`);
    /// then its staging file is deleted. Default: 86400.
    pub upload_expiry_secs: u64,
    /// Milliseconds between sweeps for expired uploads. Default: 60000.
    pub expiry_sweep_ms: u64,
    /// Memory for the hot-object cache, in bytes; 0 turns it off. Default: 67108864 (64 MiB).
    pub hot_cache_bytes: u64,
    /// Largest object the hot cache holds, in bytes; larger ones are always streamed from disk.
    /// Default: 1048576 (1 MiB).
    pub hot_cache_max_object_bytes: u64,
    /// Bytes of an upload body gathered in memory before each write to the staging file (the
    /// only buffering of a body). Default: 262144.
    pub write_buffer_bytes: u32,
    /// Bytes read from disk per chunk of a streamed download. Default: 65536.
    pub read_chunk_bytes: u32,
    /// Seconds an upload body may stall before the request is ended; what arrived is kept.
    /// Default: 30.
    pub body_idle_timeout_secs: u32,
    /// Seconds a client has to send a request's headers. Default: 30.
    pub header_timeout_secs: u32,
    /// Most simultaneous HTTP connections; further ones wait in the listen backlog.
    /// Default: 10000.
    pub max_connections: u32,
    /// sled page cache of the media index (`media/index`), in bytes. Default: 8388608.
    pub index_cache_bytes: u64,
}

impl Default for MediaSection {
    fn default() -> Self {
        Self {
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 7402)),
            max_upload_bytes: 100 * 1024 * 1024,
            user_quota_bytes: 1024 * 1024 * 1024,
            max_unfinished_uploads_per_user: 16,
            upload_expiry_secs: 86_400,
            expiry_sweep_ms: 60_000,
            hot_cache_bytes: 64 * 1024 * 1024,
            hot_cache_max_object_bytes: 1024 * 1024,
            write_buffer_bytes: 256 * 1024,
            read_chunk_bytes: 64 * 1024,
            body_idle_timeout_secs: 30,
            header_timeout_secs: 30,
            max_connections: 10_000,
            index_cache_bytes: 8 * 1024 * 1024,
        }
    }
}

/// The stores: `count` sled databases, under `node.data_dir/store-N` unless `paths` names
/// them; shard `s` lives in store `s % count`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// Number of sled databases (1-32). Fixed for a data directory once created. Default: 4.
    pub count: u32,
    /// sled page cache per database, in bytes (sled's own default is 1 GiB). Default: 67108864.
    pub cache_bytes: u64,
    /// One directory per store, in store order, so stores can sit on different disks; empty
    /// means `node.data_dir/store-N`. When set, its length must equal `count`. Default: empty.
    pub paths: Vec<PathBuf>,
}

impl Default for StoreSection {
    fn default() -> Self {
        Self {
            count: 4,
            cache_bytes: 64 * 1024 * 1024,
            paths: Vec::new(),
        }
    }
}

impl Config {
    /// The directory of every store, in store order.
    pub fn store_paths(&self) -> Vec<PathBuf> {
        if self.store.paths.is_empty() {
            (0..self.store.count)
                .map(|index| self.node.data_dir.join(format!("store-{index}")))
                .collect()
        } else {
            self.store.paths.clone()
        }
    }
}

/// The journals: `count` independent write-ahead logs under `node.data_dir/journal-N`; shard
/// `s` writes to journal `s % count`. Each has its own fsync thread (group commit).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JournalSection {
    /// Number of journals (1-32): one per disk. On one disk more journals only split the group
    /// commit (measured in docs/benchmarks.md). Fixed for a data directory once created.
    /// Default: 1.
    pub count: u32,
    /// Size at which a journal segment file is rotated, in bytes. Default: 67108864 (64 MiB).
    pub segment_bytes: u64,
    /// Disk each journal may use, in bytes; past it appends fail (no ack, STORAGE_FAILURE) and
    /// an alarm metric rises. Default: 8589934592 (8 GiB).
    pub max_disk_bytes: u64,
    /// Least time between the starts of two fsyncs of a journal, in microseconds: under a
    /// steady stream of messages each fsync then covers what arrived during one interval,
    /// instead of one fsync per handful of messages (each fsync costs tens of microseconds of
    /// CPU and a disk flush). A message arriving after a quiet spell is synced at once; under
    /// load an ack waits at most this much longer. 0: fsync as soon as the previous one is done.
    /// Default: 1000.
    pub commit_interval_us: u64,
    /// Allocate each segment file whole when it is created, so that appends do not grow the
    /// file and an fsync has no new file size to commit (measured in docs/benchmarks.md).
    /// Default: true.
    pub preallocate: bool,
}

impl Default for JournalSection {
    fn default() -> Self {
        Self {
            count: 1,
            segment_bytes: 64 * 1024 * 1024,
            max_disk_bytes: 8 * 1024 * 1024 * 1024,
            commit_interval_us: 1000,
            preallocate: true,
        }
    }
}

/// Identity and addresses of this node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Node name, shown in Welcome frames, logs and `/status`. Default: `"tern-1"`.
    pub id: String,
    /// Address phones connect to. Port 0 picks a free port. Default: `127.0.0.1:7400`.
    pub client_addr: SocketAddr,
    /// Address of the admin HTTP server (`/metrics`, `/status`). Default: `127.0.0.1:7401`.
    pub admin_addr: SocketAddr,
    /// Directory for the node's data; `tern serve` creates it and holds an exclusive lock on
    /// `LOCK` inside it, so two nodes never share one. Relative paths are relative to the
    /// working directory. Default: `./data`.
    pub data_dir: PathBuf,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            id: "tern-1".to_owned(),
            client_addr: SocketAddr::from(([127, 0, 0, 1], 7400)),
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 7401)),
            data_dir: PathBuf::from("./data"),
        }
    }
}

/// Login-token settings.
///
/// The HMAC-SHA256 key that signs login tokens comes from the first of: the `TERN_TOKEN_KEY`
/// environment variable, the file named by `token_key_file`, `token_key`. Whichever it is, it
/// must be at least 16 bytes; there is no default key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// The key written in the configuration file (used when neither `TERN_TOKEN_KEY` nor
    /// `token_key_file` is set). After loading, this field holds the effective key, from
    /// whichever source won. The shipped `cluster.toml` carries a development key that must be
    /// replaced in production. Default: none.
    pub token_key: String,
    /// A file holding the key (its text up to trailing line breaks), so the secret can stay out
    /// of the configuration file; wins over `token_key`. Relative paths are relative to the
    /// working directory. Default: none.
    pub token_key_file: Option<PathBuf>,
    /// The id tokens signed with `token_key` carry (1-16 characters of `[A-Za-z0-9_-]`), so
    /// that after a rotation each token names the key to check it with. Default: `k1`.
    pub token_key_id: String,
    /// Keys accepted besides `token_key` but never used to sign: the old key while its tokens
    /// run out after a rotation, or the next key before the signers switch to it. Each is
    /// `{ id = "...", key = "..." }` or `{ id = "...", key_file = "..." }`. Default: none.
    pub verify_keys: Vec<VerifyKey>,
    /// Lifetime of tokens printed by `tern token` when `--ttl` is not given. Default: 86400 s.
    pub default_token_ttl_secs: u64,
    /// Which source the effective key came from (set by loading, not read from the file).
    #[serde(skip)]
    pub token_key_source: TokenKeySource,
    /// The token that authorizes the admin port's actions (`POST /drain`, `POST
    /// /cluster/nodes/{id}/remove`, `tern drain`), sent as `Authorization: Bearer TOKEN`; from
    /// `TERN_ADMIN_TOKEN`, else `admin_token_file`, else this field; at least 16 bytes. Without
    /// one those actions are refused. Default: none.
    pub admin_token: String,
    /// A file holding the admin token; wins over `admin_token`. Default: none.
    pub admin_token_file: Option<PathBuf>,
    /// Which source the effective admin token came from (set by loading).
    #[serde(skip)]
    pub admin_token_source: SecretSource,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            token_key: String::new(),
            token_key_file: None,
            token_key_id: crate::token::DEFAULT_KEY_ID.to_owned(),
            verify_keys: Vec::new(),
            default_token_ttl_secs: 86_400,
            token_key_source: TokenKeySource::Missing,
            admin_token: String::new(),
            admin_token_file: None,
            admin_token_source: SecretSource::Missing,
        }
    }
}

/// Limits that protect the node from any one connection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest frame accepted or sent, in bytes (length prefix excluded). Checked before any
    /// allocation. Default: 65536.
    pub max_frame_bytes: u32,
    /// Largest message body, in bytes. Default: 16384.
    pub max_body_bytes: u32,
    /// Most simultaneous connections; more are refused with an error frame. Default: 100000.
    pub max_connections: u32,
    /// Most simultaneous connections from one source address (an IPv4 address, or an IPv6
    /// /64); more are refused with `TOO_MANY_CONNECTIONS`. Generous, as carrier NAT puts many
    /// phones behind one address. 0: no limit. Default: 1000.
    pub max_connections_per_ip: u32,
    /// Logins per second one source address may attempt, sustained. Every Login frame counts,
    /// refused ones included, and is counted before its token is verified, so a flood of
    /// logins also costs no HMAC work past it; more are refused with `RATE_LIMITED` and the
    /// connection closed. 0: no limit. Default: 100.
    pub logins_per_ip_per_sec: u32,
    /// Logins one source address may attempt at once, above the sustained rate: room for the
    /// phones behind one NAT reconnecting together after a restart. Default: 1000.
    pub login_burst_per_ip: u32,
    /// Groups one user may create per minute on this node (a minute's worth at once); more are
    /// refused with `RATE_LIMITED`, the connection stays open. 0: no limit. Default: 30.
    pub group_creates_per_min: u32,
    /// Member-add requests (`GroupRequest.add`, whatever the number of users in each) one user
    /// may make per minute on this node (a minute's worth at once); more are refused with
    /// `RATE_LIMITED`, the connection stays open. 0: no limit. Default: 120.
    pub group_adds_per_min: u32,
    /// Seconds a new connection has to send a valid Login. Default: 10.
    pub login_timeout_secs: u32,
    /// Seconds without any frame from the phone before the connection is closed. Default: 300.
    pub idle_timeout_secs: u32,
    /// Seconds a frame may take to arrive whole once its first byte is in; an incomplete frame
    /// held longer is answered `TIMEOUT` and the connection closed, so a trickle of bytes
    /// cannot keep a read buffer alive. Default: 30.
    pub frame_timeout_secs: u32,
    /// Frames per second a connection may send, sustained. Default: 200.
    pub frames_per_sec: u32,
    /// Frames a connection may send in one burst above the sustained rate. Default: 400.
    pub frame_burst: u32,
    /// Bytes of outbound frames buffered for one connection before it is a slow consumer.
    /// Default: 1048576.
    pub outbound_max_bytes: u32,
    /// Mailbox entries delivered to a device but not yet acked, at most. Delivery pauses when the
    /// window is full. Default: 512.
    pub delivery_window: u32,
    /// Seconds delivery may stay blocked (socket full or window full) before the connection is
    /// closed as a slow consumer; its messages stay queued. Default: 30.
    pub slow_consumer_secs: u32,
    /// Presence subscriptions per connection. Default: 1024.
    pub max_presence_subscriptions: u32,
    /// Milliseconds between sweeps for login, idle and slow-consumer timeouts. Default: 1000.
    pub sweep_interval_ms: u32,
    /// Seconds a graceful shutdown waits for connections to close. Default: 10.
    pub shutdown_grace_secs: u32,
    /// At a drain (SIGTERM, `tern drain`), each phone is told to reconnect after a delay drawn
    /// from 0 up to this many milliseconds, so the reconnects of a node's phones spread over
    /// the window instead of arriving at once. At most `shutdown_grace_secs`. Default: 5000.
    pub reconnect_window_ms: u32,
}

/// The 32-way sharded dispatchers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DispatchConfig {
    /// Workers per shard (1-8). Each key is owned by exactly one worker. Default: 2.
    pub workers_per_shard: u32,
    /// Capacity of each worker's write queue and of its read queue. A full write queue refuses
    /// the operation (the client sees `OVERLOADED` and retries). Default: 4096.
    pub queue_capacity: u32,
}

/// Mailboxes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MailboxConfig {
    /// Entries returned by one mailbox read. Default: 128.
    pub fetch_batch: u32,
    /// Remembered `client_msg_id`s per (mailbox, sending device) for retry deduplication: each
    /// device of a sender keeps its last `dedup_window` ids in each recipient's mailbox (the
    /// key is the sending user's). It must cover whatever a device may have unacked, so it is
    /// at least the in-flight cap of a connection (1024 sends and receipts), and at most 16384.
    /// The tables are saved by write-back passes and survive restarts. Default: 1024.
    pub dedup_window: u32,
    /// Live pushes queued to one session before further ones are skipped (the session then reads
    /// them from the mailbox). Default: 256.
    pub push_queue: u32,
    /// Seconds an entry may stay unacked in the cache before it is written back to the store;
    /// entries acked sooner never reach the store. Default: 20.
    pub writeback_delay_secs: u32,
    /// Seconds between write-back passes (each ends with a store checkpoint and the release of
    /// the journal segments it covers). Default: 5.
    pub checkpoint_interval_secs: u32,
    /// Memory budget of the mailbox cache (entries held, approximately), in bytes, shared evenly
    /// by the mailbox workers. Past it, mailboxes are written to the store and dropped from
    /// memory; reads of them page in from the store. Default: 1073741824 (1 GiB).
    pub cache_bytes: u64,
    /// Mailboxes holding more entries than this are evicted before any other, so one user in
    /// many busy groups cannot push everyone else out of the cache. Default: 1000.
    pub huge_mailbox_entries: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_frame_bytes: 65_536,
            max_body_bytes: 16_384,
            max_connections: 100_000,
            max_connections_per_ip: 1_000,
            logins_per_ip_per_sec: 100,
            login_burst_per_ip: 1_000,
            group_creates_per_min: 30,
            group_adds_per_min: 120,
            login_timeout_secs: 10,
            idle_timeout_secs: 300,
            frame_timeout_secs: 30,
            frames_per_sec: 200,
            frame_burst: 400,
            outbound_max_bytes: 1_048_576,
            delivery_window: 512,
            slow_consumer_secs: 30,
            max_presence_subscriptions: 1024,
            sweep_interval_ms: 1000,
            shutdown_grace_secs: 10,
            reconnect_window_ms: 5_000,
        }
    }
}

impl Default for DispatchConfig {
    fn default() -> Self {
        Self {
            workers_per_shard: 2,
            queue_capacity: 4096,
        }
    }
}

impl Default for MailboxConfig {
    fn default() -> Self {
        Self {
            fetch_batch: 128,
            dedup_window: 1024,
            push_queue: 256,
            writeback_delay_secs: 20,
            checkpoint_interval_secs: 5,
            cache_bytes: 1024 * 1024 * 1024,
            huge_mailbox_entries: 1000,
        }
    }
}

impl Config {
    /// Reads, parses and validates a configuration file, taking the token key from
    /// `TERN_TOKEN_KEY` and the cluster secret from `TERN_CLUSTER_SECRET` when they are set.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::read(path)?.validated(path)
    }

    /// Reads and parses a configuration file and resolves its token key, without validating
    /// (for callers that change fields first and then report `validate()` together with their
    /// own checks, as `tern serve` does with `--data-dir` and the data directory's lock).
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse_unvalidated(
            path,
            &text,
            std::env::var_os(TOKEN_KEY_ENV),
            std::env::var_os(CLUSTER_SECRET_ENV),
        )
    }

    /// Parses and validates configuration text, taking the token key from `TERN_TOKEN_KEY`
    /// and the cluster secret from `TERN_CLUSTER_SECRET` when they are set; `path` is only
    /// used in error messages.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        Self::parse_unvalidated(
            path,
            text,
            std::env::var_os(TOKEN_KEY_ENV),
            std::env::var_os(CLUSTER_SECRET_ENV),
        )?
        .validated(path)
    }

    /// [`Config::parse`] with the value of `TERN_TOKEN_KEY` given rather than read from the
    /// process environment, and `TERN_CLUSTER_SECRET` taken as unset.
    pub fn parse_with_environment(
        path: &Path,
        text: &str,
        token_key_env: Option<std::ffi::OsString>,
    ) -> Result<Self, ConfigError> {
        Self::parse_with_secrets(path, text, token_key_env, None)
    }

    /// [`Config::parse`] with the values of `TERN_TOKEN_KEY` and `TERN_CLUSTER_SECRET` given
    /// rather than read from the process environment.
    pub fn parse_with_secrets(
        path: &Path,
        text: &str,
        token_key_env: Option<std::ffi::OsString>,
        cluster_secret_env: Option<std::ffi::OsString>,
    ) -> Result<Self, ConfigError> {
        Self::parse_unvalidated(path, text, token_key_env, cluster_secret_env)?.validated(path)
    }

    fn parse_unvalidated(
        path: &Path,
        text: &str,
        token_key_env: Option<std::ffi::OsString>,
        cluster_secret_env: Option<std::ffi::OsString>,
    ) -> Result<Self, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|error| ConfigError::Parse {
            path: path.to_owned(),
            message: error.to_string(),
        })?;
        config.auth.resolve_token_key(token_key_env);
        config
            .auth
            .resolve_admin_token(std::env::var_os(ADMIN_TOKEN_ENV));
        if let Some(cluster) = &mut config.cluster {
            cluster.resolve_secret(cluster_secret_env);
        }
        if let Some(wan) = &mut config.wan {
            wan.resolve_secret(std::env::var_os(crate::wan::config::WAN_SECRET_ENV));
        }
        Ok(config)
    }

    /// This node's ordinal in its cluster (`cluster.node`), carried by every id it mints; 0
    /// for a node without `[cluster]`.
    pub fn node_ordinal(&self) -> u64 {
        self.cluster.as_ref().map_or(0, |cluster| cluster.node)
    }

    fn validated(self, path: &Path) -> Result<Self, ConfigError> {
        let problems = self.validate();
        if problems.is_empty() {
            Ok(self)
        } else {
            Err(ConfigError::Invalid {
                path: path.to_owned(),
                problems,
            })
        }
    }

    /// Every problem with the values, one line each; empty when the configuration is usable.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut check = |ok: bool, problem: &str| {
            if !ok {
                problems.push(problem.to_owned());
            }
        };
        check(!self.node.id.is_empty(), "node.id must not be empty");
        check(
            self.auth.default_token_ttl_secs > 0,
            "auth.default_token_ttl_secs must be positive",
        );
        let limits = &self.limits;
        check(
            limits.max_frame_bytes >= 1024,
            "limits.max_frame_bytes must be at least 1024",
        );
        check(
            limits.max_body_bytes + 1024 <= limits.max_frame_bytes,
            "limits.max_body_bytes must leave 1024 bytes of headroom below limits.max_frame_bytes",
        );
        check(
            limits.max_connections > 0,
            "limits.max_connections must be positive",
        );
        check(
            limits.logins_per_ip_per_sec == 0 || limits.login_burst_per_ip >= 1,
            "limits.login_burst_per_ip must be at least 1 (limits.logins_per_ip_per_sec = 0 \
             turns the limit off)",
        );
        check(
            limits.login_timeout_secs > 0,
            "limits.login_timeout_secs must be positive",
        );
        check(
            limits.idle_timeout_secs > 0,
            "limits.idle_timeout_secs must be positive",
        );
        check(
            limits.frame_timeout_secs > 0,
            "limits.frame_timeout_secs must be positive",
        );
        check(
            limits.frames_per_sec > 0,
            "limits.frames_per_sec must be positive",
        );
        check(
            limits.frame_burst >= 1,
            "limits.frame_burst must be at least 1",
        );
        check(
            limits.outbound_max_bytes >= limits.max_frame_bytes,
            "limits.outbound_max_bytes must be at least limits.max_frame_bytes",
        );
        check(
            limits.delivery_window >= 1,
            "limits.delivery_window must be at least 1",
        );
        check(
            limits.slow_consumer_secs > 0,
            "limits.slow_consumer_secs must be positive",
        );
        check(
            (10..=60_000).contains(&limits.sweep_interval_ms),
            "limits.sweep_interval_ms must be between 10 and 60000",
        );
        check(
            u64::from(limits.reconnect_window_ms) <= u64::from(limits.shutdown_grace_secs) * 1000,
            "limits.reconnect_window_ms must be at most limits.shutdown_grace_secs (in ms)",
        );
        check(
            (1..=8).contains(&self.dispatch.workers_per_shard),
            "dispatch.workers_per_shard must be between 1 and 8",
        );
        check(
            self.dispatch.queue_capacity >= 16,
            "dispatch.queue_capacity must be at least 16",
        );
        check(
            self.mailbox.fetch_batch >= 1,
            "mailbox.fetch_batch must be at least 1",
        );
        check(
            (MIN_DEDUP_WINDOW..=MAX_DEDUP_WINDOW).contains(&self.mailbox.dedup_window),
            &format!(
                "mailbox.dedup_window must be between {MIN_DEDUP_WINDOW} (what a device may have in \
                 flight) and {MAX_DEDUP_WINDOW}"
            ),
        );
        check(
            (1..=32).contains(&self.journal.count),
            "journal.count must be between 1 and 32",
        );
        check(
            self.journal.commit_interval_us <= 100_000,
            "journal.commit_interval_us must be at most 100000 (every ack waits up to this long)",
        );
        check(
            self.journal.segment_bytes >= 4096,
            "journal.segment_bytes must be at least 4096",
        );
        check(
            self.journal.max_disk_bytes >= 2 * self.journal.segment_bytes,
            "journal.max_disk_bytes must be at least twice journal.segment_bytes",
        );
        check(
            (1..=32).contains(&self.store.count),
            "store.count must be between 1 and 32",
        );
        check(
            self.store.cache_bytes >= 1024 * 1024,
            "store.cache_bytes must be at least 1048576",
        );
        check(
            self.store.paths.is_empty() || self.store.paths.len() == self.store.count as usize,
            "store.paths must be empty or name exactly store.count directories",
        );
        check(
            self.mailbox.cache_bytes >= 65_536,
            "mailbox.cache_bytes must be at least 65536",
        );
        check(
            (2..=100_000).contains(&self.groups.max_members),
            "groups.max_members must be between 2 and 100000",
        );
        check(
            (1..=64).contains(&self.groups.fanout_lanes),
            "groups.fanout_lanes must be between 1 and 64",
        );
        check(
            self.groups.fanout_queue >= 16,
            "groups.fanout_queue must be at least 16",
        );
        check(
            self.mailbox.huge_mailbox_entries >= 1,
            "mailbox.huge_mailbox_entries must be at least 1",
        );
        check(
            self.mailbox.checkpoint_interval_secs >= 1,
            "mailbox.checkpoint_interval_secs must be at least 1",
        );
        check(
            self.mailbox.push_queue >= 1,
            "mailbox.push_queue must be at least 1",
        );
        problems.extend(self.auth.token_key_problem());
        problems.extend(self.auth.verify_key_problems());
        problems.extend(self.auth.admin_token_problem());
        problems.extend(self.listener_conflicts());
        problems.extend(self.tls.validate(&self.encryptable_listeners()));
        problems.extend(self.media.validate());
        if let Some(cluster) = &self.cluster {
            problems.extend(cluster.validate());
        }
        if let Some(wan) = &self.wan {
            problems.extend(wan.validate(self.cluster.as_ref().map(|cluster| cluster.node)));
        }
        if let Some(push) = &self.push {
            problems.extend(push.validate());
        }
        problems
    }

    /// The listeners TLS covers: name in `tls.plain`, field, address.
    fn encryptable_listeners(&self) -> Vec<(&'static str, &'static str, SocketAddr)> {
        let mut listeners = vec![
            ("client", "node.client_addr", self.node.client_addr),
            ("media", "media.listen_addr", self.media.listen_addr),
        ];
        if let Some(cluster) = &self.cluster {
            listeners.push(("mesh", "cluster.listen", cluster.listen));
            if let Some(wan) = &self.wan
                && wan.gateway_position(cluster.node).is_some()
            {
                listeners.push(("wan", "wan.listen", wan.listen));
            }
        }
        listeners
    }

    /// Listeners that would collide when binding: the same non-zero port on the same address,
    /// or on any address when one of them is the wildcard (0.0.0.0 or ::, which on Linux also
    /// takes the port on every other address).
    fn listener_conflicts(&self) -> Vec<String> {
        let mut listeners = vec![
            ("node.client_addr", self.node.client_addr),
            ("node.admin_addr", self.node.admin_addr),
            ("media.listen_addr", self.media.listen_addr),
        ];
        if let Some(cluster) = &self.cluster {
            listeners.push(("cluster.listen", cluster.listen));
            if let Some(wan) = &self.wan
                && wan.gateway_position(cluster.node).is_some()
            {
                listeners.push(("wan.listen", wan.listen));
            }
        }
        let mut problems = Vec::new();
        for (index, (name, addr)) in listeners.iter().enumerate() {
            for (other_name, other) in &listeners[index + 1..] {
                let overlap = addr.ip() == other.ip()
                    || addr.ip().is_unspecified()
                    || other.ip().is_unspecified();
                if addr.port() != 0 && addr.port() == other.port() && overlap {
                    problems.push(format!(
                        "{name} ({addr}) and {other_name} ({other}) use the same port"
                    ));
                }
            }
        }
        problems
    }
}

impl MediaSection {
    /// Every problem with the `[media]` values, one line each.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut check = |ok: bool, problem: &str| {
            if !ok {
                problems.push(problem.to_owned());
            }
        };
        check(
            self.max_upload_bytes >= 1,
            "media.max_upload_bytes must be positive",
        );
        check(
            self.user_quota_bytes >= self.max_upload_bytes,
            "media.user_quota_bytes must be at least media.max_upload_bytes",
        );
        check(
            self.max_unfinished_uploads_per_user >= 1,
            "media.max_unfinished_uploads_per_user must be at least 1",
        );
        check(
            self.upload_expiry_secs >= 1,
            "media.upload_expiry_secs must be positive",
        );
        check(
            (10..=3_600_000).contains(&self.expiry_sweep_ms),
            "media.expiry_sweep_ms must be between 10 and 3600000",
        );
        check(
            self.hot_cache_max_object_bytes <= self.hot_cache_bytes || self.hot_cache_bytes == 0,
            "media.hot_cache_max_object_bytes must not exceed media.hot_cache_bytes",
        );
        check(
            (4096..=16 * 1024 * 1024).contains(&self.write_buffer_bytes),
            "media.write_buffer_bytes must be between 4096 and 16777216",
        );
        check(
            (4096..=16 * 1024 * 1024).contains(&self.read_chunk_bytes),
            "media.read_chunk_bytes must be between 4096 and 16777216",
        );
        check(
            self.body_idle_timeout_secs >= 1,
            "media.body_idle_timeout_secs must be positive",
        );
        check(
            self.header_timeout_secs >= 1,
            "media.header_timeout_secs must be positive",
        );
        check(
            self.max_connections >= 1,
            "media.max_connections must be at least 1",
        );
        check(
            self.index_cache_bytes >= 1024 * 1024,
            "media.index_cache_bytes must be at least 1048576",
        );
        problems
    }
}

impl LimitsConfig {
    /// The login timeout as a duration.
    pub fn login_timeout(&self) -> Duration {
        Duration::from_secs(self.login_timeout_secs.into())
    }
    /// The sweep interval as a duration.
    pub fn sweep_interval(&self) -> Duration {
        Duration::from_millis(self.sweep_interval_ms.into())
    }
    /// The shutdown grace period as a duration.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses as `Config::parse` does, with `TERN_TOKEN_KEY` unset whatever the test's
    /// environment holds.
    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse_with_environment(Path::new("x"), text, None)
    }

    #[test]
    fn shipped_cluster_toml_parses_and_validates() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("cluster.toml");
        let config = Config::load(&path).expect("cluster.toml must be valid");
        assert_eq!(config.node.client_addr.port(), 7400);
        assert_eq!(
            config.limits.max_frame_bytes,
            LimitsConfig::default().max_frame_bytes
        );
    }

    #[test]
    fn shipped_media_section_matches_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("cluster.toml");
        let text = std::fs::read_to_string(&path).expect("cluster.toml");
        assert!(
            text.contains("\n[media]\n"),
            "cluster.toml must document [media]"
        );
        let shipped = Config::parse(&path, &text).expect("valid").media;
        let defaults = MediaSection::default();
        assert_eq!(format!("{shipped:?}"), format!("{defaults:?}"));
        assert_every_field_written_out(&text, "media", &format!("{defaults:?}"));
    }

    /// Every field of `defaults` (a section's `Debug`) is written out, and so documented, in
    /// the section `name` of the shipped file `text`.
    fn assert_every_field_written_out(text: &str, name: &str, defaults: &str) {
        let section = text
            .split(&format!("\n[{name}]\n"))
            .nth(1)
            .unwrap_or_default()
            .split("\n[")
            .next()
            .unwrap_or_default();
        let fields = defaults.split_once(" {").map_or("", |(_, fields)| fields);
        for field in fields.split(", ").filter_map(|pair| pair.split(':').next()) {
            let field = field.trim();
            assert!(
                section.contains(&format!("\n{field} = "))
                    || section.starts_with(&format!("{field} = ")),
                "cluster.toml [{name}] lacks {field}"
            );
        }
    }

    #[test]
    fn shipped_limits_section_matches_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("cluster.toml");
        let text = std::fs::read_to_string(&path).expect("cluster.toml");
        let shipped = Config::parse(&path, &text).expect("valid").limits;
        let defaults = LimitsConfig::default();
        assert_eq!(format!("{shipped:?}"), format!("{defaults:?}"));
        assert_every_field_written_out(&text, "limits", &format!("{defaults:?}"));
    }

    #[test]
    fn a_login_burst_of_zero_is_refused_unless_the_login_limit_is_off() {
        let base = "[auth]\ntoken_key = \"0123456789abcdef\"\n[limits]\nlogin_burst_per_ip = 0\n";
        let Err(ConfigError::Invalid { problems, .. }) = parse(base) else {
            panic!("a burst of 0 with the limit on must be refused");
        };
        assert!(problems[0].contains("login_burst_per_ip"), "{problems:?}");
        assert!(parse(&format!("{base}logins_per_ip_per_sec = 0\n")).is_ok());
    }

    /// The commented example between `from` and `to` in `text`, uncommented: its `# key = value`
    /// lines without the `# `, the explanations (`# # ...`) left out.
    fn uncommented_example(text: &str, from: &str, to: &str) -> String {
        text.split(from)
            .nth(1)
            .unwrap_or_default()
            .split(to)
            .next()
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.strip_prefix("# "))
            .filter(|line| !line.starts_with('#'))
            .map(|line| format!("{line}\n"))
            .collect()
    }

    #[test]
    fn shipped_cluster_section_is_commented_out_and_documents_every_field() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("cluster.toml");
        let text = std::fs::read_to_string(&path).expect("cluster.toml");
        assert!(
            Config::parse_with_environment(&path, &text, None)
                .expect("valid")
                .cluster
                .is_none()
        );
        // Uncommented, the example is a valid section with the documented defaults.
        let example = uncommented_example(&text, "\n# [cluster]\n", "\n\n# [wan]");
        assert!(!example.is_empty(), "cluster.toml must document [cluster]");
        let uncommented = format!("{text}\n[cluster]\n{example}");
        let secret_file = tempfile::NamedTempFile::new().expect("secret file");
        std::fs::write(secret_file.path(), "0123456789abcdef0123456789abcdef\n").expect("write");
        let uncommented = uncommented.replace(
            "/etc/tern/cluster.secret",
            &secret_file.path().display().to_string(),
        );
        let cluster = Config::parse_with_secrets(&path, &uncommented, None, None)
            .expect("the uncommented example is valid")
            .cluster
            .expect("[cluster]");
        let defaults = ClusterConfig::default();
        assert_eq!(cluster.node, 1);
        assert_eq!(cluster.seeds.len(), 3);
        assert_eq!(cluster.name, defaults.name);
        assert_eq!(cluster.listen, defaults.listen);
        assert_eq!(cluster.replication_factor, defaults.replication_factor);
        assert_eq!(cluster.slots, defaults.slots);
        assert_eq!(cluster.heartbeat_ms, defaults.heartbeat_ms);
        assert_eq!(cluster.down_after_ms, defaults.down_after_ms);
        assert_eq!(cluster.election_timeout_ms, defaults.election_timeout_ms);
        for field in [
            "name",
            "node",
            "listen",
            "advertise",
            "seeds",
            "replication_factor",
            "slots",
            "secret",
            "secret_file",
            "heartbeat_ms",
            "down_after_ms",
            "election_timeout_ms",
        ] {
            assert!(
                text.contains(&format!("\n# {field} = "))
                    || text.contains(&format!("\n# # {field} = ")),
                "cluster.toml [cluster] lacks {field}"
            );
        }
    }

    #[test]
    fn shipped_wan_section_is_commented_out_and_valid_uncommented() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("cluster.toml");
        let text = std::fs::read_to_string(&path).expect("cluster.toml");
        let cluster = uncommented_example(&text, "\n# [cluster]\n", "\n\n# [wan]");
        let wan = uncommented_example(&text, "\n# [wan]\n", "\n\n");
        assert!(wan.contains("[[wan.datacenters]]"), "{wan}");
        let secret_file = tempfile::NamedTempFile::new().expect("secret file");
        std::fs::write(secret_file.path(), "0123456789abcdef0123456789abcdef\n").expect("write");
        let secret = secret_file.path().display().to_string();
        let uncommented = format!("{text}\n[cluster]\n{cluster}\n[wan]\n{wan}")
            .replace("/etc/tern/cluster.secret", &secret)
            .replace("/etc/tern/wan.secret", &secret);
        let config = Config::parse_with_secrets(&path, &uncommented, None, None)
            .expect("the uncommented example is valid");
        let wan = config.wan.expect("[wan]");
        let defaults = crate::wan::WanConfig::default();
        assert_eq!(wan.datacenters.len(), 2);
        assert_eq!(wan.local_index(), Some(0));
        assert_eq!(wan.gateway_position(1), Some(0));
        assert_eq!(wan.name, defaults.name);
        assert_eq!(wan.listen, defaults.listen);
        assert_eq!(wan.queue_max_bytes, defaults.queue_max_bytes);
        assert_eq!(wan.batch_records, defaults.batch_records);
        assert_eq!(wan.window, defaults.window);
        assert_eq!(wan.heartbeat_ms, defaults.heartbeat_ms);
        assert_eq!(wan.down_after_ms, defaults.down_after_ms);
    }

    #[test]
    fn a_cluster_listener_on_another_listeners_port_is_refused() {
        let text = "[auth]\ntoken_key = \"0123456789abcdef\"\n[cluster]\nnode = 1\n\
                    listen = \"127.0.0.1:7401\"\nsecret = \"0123456789abcdef0123456789abcdef\"\n";
        let Err(ConfigError::Invalid { problems, .. }) = parse(text) else {
            panic!("a mesh port on the admin port must be refused");
        };
        assert_eq!(
            problems,
            vec![
                "node.admin_addr (127.0.0.1:7401) and cluster.listen (127.0.0.1:7401) use the same port"
            ]
        );
    }

    #[test]
    fn verification_keys_load_from_files_and_bad_ones_are_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let old = dir.path().join("old.key");
        std::fs::write(&old, "the-old-key-0123456789\n").expect("write");
        let text = format!(
            "[auth]\ntoken_key = \"0123456789abcdef\"\ntoken_key_id = \"k2\"\n\
             verify_keys = [{{ id = \"k1\", key_file = \"{}\" }}]\n",
            old.display()
        );
        let config = parse(&text).expect("valid");
        assert_eq!(config.auth.verify_keys[0].key, "the-old-key-0123456789");
        let keys = crate::token::TokenKey::from_config(&config.auth);
        assert_eq!(keys.signing_id(), "k2");
        let old_token = crate::token::TokenKey::with_id("k1", b"the-old-key-0123456789")
            .sign("alice", "phone", u64::MAX)
            .expect("sign");
        assert_eq!(keys.verify(&old_token, 1).expect("accepted").user, "alice");

        let text = "[auth]\ntoken_key = \"0123456789abcdef\"\ntoken_key_id = \"k 2\"\n\
                    verify_keys = [{ id = \"k1\", key = \"short\" }, { id = \"k1\", key = \"0123456789abcdef\" }, { id = \"k3\" }]\n";
        let Err(ConfigError::Invalid { problems, .. }) = parse(text) else {
            panic!("expected validation errors");
        };
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[0].contains("auth.token_key_id"), "{problems:?}");
        assert!(problems[1].contains("at least 16 bytes"), "{problems:?}");
        assert!(problems[2].contains("used twice"), "{problems:?}");
        assert!(problems[3].contains("set key or key_file"), "{problems:?}");
    }

    #[test]
    fn media_problems_are_reported() {
        let text = "[auth]\ntoken_key = \"0123456789abcdef\"\n[node]\n[media]\nmax_upload_bytes = 0\nwrite_buffer_bytes = 1\n";
        let Err(ConfigError::Invalid { problems, .. }) = parse(text) else {
            panic!("expected validation errors");
        };
        assert_eq!(problems.len(), 2, "{problems:?}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = r#"
            [node]
            id = ""
            [auth]
            token_key = "short"
            [dispatch]
            workers_per_shard = 9
        "#;
        let Err(ConfigError::Invalid { problems, .. }) = parse(text) else {
            panic!("expected validation errors");
        };
        assert_eq!(problems.len(), 3, "{problems:?}");
    }

    #[test]
    fn a_dedup_window_below_the_in_flight_cap_is_refused() {
        let text =
            "[auth]\ntoken_key = \"0123456789abcdef\"\n[node]\n[mailbox]\ndedup_window = 256\n";
        let Err(ConfigError::Invalid { problems, .. }) = parse(text) else {
            panic!("a window smaller than what a device may have in flight must be refused");
        };
        assert!(problems[0].contains("dedup_window"), "{problems:?}");
        let text =
            "[auth]\ntoken_key = \"0123456789abcdef\"\n[node]\n[mailbox]\ndedup_window = 1024\n";
        assert!(parse(text).is_ok());
    }

    #[test]
    fn unknown_fields_are_refused() {
        let text = "[node]\nbogus = 1\n[auth]\ntoken_key = \"0123456789abcdef\"\n";
        assert!(matches!(parse(text), Err(ConfigError::Parse { .. })));
    }
}
