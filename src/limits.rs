//! Abuse limits beyond one connection's frame rate: connections and logins per source address,
//! and group creations and member adds per user. Each refusal is a documented error for the
//! phone ([`Refused`], whose text is the error's message) and one count of
//! `tern_abuse_refusals_total{limit}`.
//!
//! The node owns one [`AbuseLimits`] (`Node::abuse`); its tables are sharded, bounded maps
//! with one lock taken per check:
//! - connections per source ([`per_ip::PerIpConnections`]): counted by the accept loop,
//!   released when the connection's reader ends; an entry per source with open connections;
//! - logins per source and group operations per user ([`RateTable`]): token buckets kept as
//!   one number each ([`Rate`]), dropped by the sweeper once full again.
//!
//! The counts are this node's: in a cluster a source or a user gets the allowance on each node
//! it reaches.

pub mod per_ip;
pub mod rate;
pub mod rate_table;
pub mod source;

use metrics::{Counter, Gauge};

pub use per_ip::PerIpConnections;
pub use rate::Rate;
pub use rate_table::RateTable;
pub use source::SourceKey;

use crate::clock::monotonic_us;
use crate::config::LimitsConfig;
use crate::metrics as names;
use crate::shard::key_hash;

/// Keys each rate table holds at most (sources for logins, users for group operations): about
/// 2 MB of buckets each when full.
pub const RATE_TABLE_CAPACITY: usize = 65_536;

/// One abuse limit: the `limit` label of its refusals and of its table's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `limits.max_connections_per_ip`.
    ConnectionsPerIp = 0,
    /// `limits.logins_per_ip_per_sec` and `limits.login_burst_per_ip`.
    LoginsPerIp = 1,
    /// `limits.group_creates_per_min`.
    GroupCreates = 2,
    /// `limits.group_adds_per_min`.
    GroupAdds = 3,
}

impl Limit {
    /// Every limit, each at the index of its discriminant.
    pub const ALL: [Limit; 4] = [
        Limit::ConnectionsPerIp,
        Limit::LoginsPerIp,
        Limit::GroupCreates,
        Limit::GroupAdds,
    ];

    /// The `limit` label value.
    pub fn label(self) -> &'static str {
        match self {
            Limit::ConnectionsPerIp => "connections_per_ip",
            Limit::LoginsPerIp => "logins_per_ip",
            Limit::GroupCreates => "group_creates",
            Limit::GroupAdds => "group_adds",
        }
    }
}

/// A refusal by an abuse limit. Its text is the message of the error frame the phone gets
/// (`TOO_MANY_CONNECTIONS` for connections, `RATE_LIMITED` for the rest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The source address has `limits.max_connections_per_ip` connections open.
    #[error("too many connections from this address")]
    ConnectionsPerIp,
    /// The source address logged in faster than `limits.logins_per_ip_per_sec` allows.
    #[error("too many logins from this address; retry later")]
    LoginsPerIp {
        /// Milliseconds until a login from the address would pass.
        retry_after_ms: u32,
    },
    /// The user created groups faster than `limits.group_creates_per_min` allows.
    #[error("too many group creations: at most {per_min} a minute; retry later")]
    GroupCreates {
        /// The limit.
        per_min: u32,
        /// Milliseconds until a creation would pass.
        retry_after_ms: u32,
    },
    /// The user added members faster than `limits.group_adds_per_min` allows.
    #[error("too many member adds: at most {per_min} requests a minute; retry later")]
    GroupAdds {
        /// The limit.
        per_min: u32,
        /// Milliseconds until an add would pass.
        retry_after_ms: u32,
    },
}

impl Refused {
    /// The limit that refused.
    pub fn limit(&self) -> Limit {
        match self {
            Refused::ConnectionsPerIp => Limit::ConnectionsPerIp,
            Refused::LoginsPerIp { .. } => Limit::LoginsPerIp,
            Refused::GroupCreates { .. } => Limit::GroupCreates,
            Refused::GroupAdds { .. } => Limit::GroupAdds,
        }
    }

    /// Milliseconds until the refused action would pass (0 for a connection: it waits for one
    /// of the address's connections to end, which no clock tells).
    pub fn retry_after_ms(&self) -> u32 {
        match *self {
            Refused::ConnectionsPerIp => 0,
            Refused::LoginsPerIp { retry_after_ms }
            | Refused::GroupCreates { retry_after_ms, .. }
            | Refused::GroupAdds { retry_after_ms, .. } => retry_after_ms,
        }
    }
}

/// The node's abuse-limit tables and their metric handles.
#[derive(Debug)]
pub struct AbuseLimits {
    connections: PerIpConnections,
    logins: RateTable,
    group_creates: RateTable,
    group_adds: RateTable,
    group_creates_per_min: u32,
    group_adds_per_min: u32,
    /// `tern_abuse_refusals_total`, by [`Limit`] in [`Limit::ALL`] order.
    refusals: [Counter; 4],
    /// `tern_abuse_tracked_keys`, likewise.
    tracked: [Gauge; 4],
}

impl AbuseLimits {
    /// The tables for `limits` (a limit set to 0 holds none).
    pub fn new(limits: &LimitsConfig) -> Self {
        let table = |rate| RateTable::new(rate, RATE_TABLE_CAPACITY);
        Self {
            connections: PerIpConnections::new(limits.max_connections_per_ip),
            logins: table(Rate::per_second(
                limits.logins_per_ip_per_sec,
                limits.login_burst_per_ip,
            )),
            group_creates: table(Rate::per_minute(limits.group_creates_per_min)),
            group_adds: table(Rate::per_minute(limits.group_adds_per_min)),
            group_creates_per_min: limits.group_creates_per_min,
            group_adds_per_min: limits.group_adds_per_min,
            refusals: Limit::ALL
                .map(|limit| metrics::counter!(names::ABUSE_REFUSALS, "limit" => limit.label())),
            tracked: Limit::ALL
                .map(|limit| metrics::gauge!(names::ABUSE_TRACKED, "limit" => limit.label())),
        }
    }

    /// Counts a new connection from `source`, or refuses it (counted) when the source has the
    /// maximum open. A connection admitted here must be released with
    /// [`AbuseLimits::release_connection`] when it ends.
    pub fn admit_connection(&self, source: SourceKey) -> Result<(), Refused> {
        if self.connections.acquire(source) {
            Ok(())
        } else {
            self.refuse(Refused::ConnectionsPerIp)
        }
    }

    /// Releases a connection admitted by [`AbuseLimits::admit_connection`].
    pub fn release_connection(&self, source: SourceKey) {
        self.connections.release(source);
    }

    /// One login attempt from `source`, before its token is verified.
    pub fn admit_login(&self, source: SourceKey) -> Result<(), Refused> {
        self.logins
            .admit(source.get(), monotonic_us())
            .or_else(|wait| {
                self.refuse(Refused::LoginsPerIp {
                    retry_after_ms: millis(wait),
                })
            })
    }

    /// One group creation by `user`.
    pub fn admit_group_create(&self, user: &str) -> Result<(), Refused> {
        self.group_creates
            .admit(key_hash(user.as_bytes()), monotonic_us())
            .or_else(|wait| {
                self.refuse(Refused::GroupCreates {
                    per_min: self.group_creates_per_min,
                    retry_after_ms: millis(wait),
                })
            })
    }

    /// One member-add request by `user`.
    pub fn admit_group_add(&self, user: &str) -> Result<(), Refused> {
        self.group_adds
            .admit(key_hash(user.as_bytes()), monotonic_us())
            .or_else(|wait| {
                self.refuse(Refused::GroupAdds {
                    per_min: self.group_adds_per_min,
                    retry_after_ms: millis(wait),
                })
            })
    }

    /// Drops the buckets that are full again and publishes each table's size (the sweeper's
    /// pass).
    pub fn sweep(&self) {
        let now = monotonic_us();
        let sizes = [
            self.connections.sources(),
            self.logins.sweep(now),
            self.group_creates.sweep(now),
            self.group_adds.sweep(now),
        ];
        for (gauge, size) in self.tracked.iter().zip(sizes) {
            gauge.set(size as f64);
        }
    }

    fn refuse(&self, refused: Refused) -> Result<(), Refused> {
        self.refusals[refused.limit() as usize].increment(1);
        Err(refused)
    }
}

/// Microseconds to wait, as whole milliseconds rounded up (a phone that waits the announced
/// delay is admitted).
fn millis(wait_us: u64) -> u32 {
    u32::try_from(wait_us.div_ceil(1000)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::{AbuseLimits, Limit, Refused, SourceKey};
    use crate::config::LimitsConfig;

    #[test]
    fn each_refusal_names_its_limit_and_the_delay() {
        let limits = LimitsConfig {
            max_connections_per_ip: 1,
            logins_per_ip_per_sec: 1,
            login_burst_per_ip: 1,
            group_creates_per_min: 1,
            group_adds_per_min: 2,
            ..LimitsConfig::default()
        };
        let abuse = AbuseLimits::new(&limits);
        let source = SourceKey::of([10, 0, 0, 1].into());
        assert_eq!(abuse.admit_connection(source), Ok(()));
        assert_eq!(
            abuse.admit_connection(source),
            Err(Refused::ConnectionsPerIp)
        );
        abuse.release_connection(source);
        assert_eq!(abuse.admit_connection(source), Ok(()));

        assert_eq!(abuse.admit_login(source), Ok(()));
        let refused = abuse.admit_login(source).unwrap_err();
        assert_eq!(refused.limit(), Limit::LoginsPerIp);
        assert!(
            (1..=1000).contains(&refused.retry_after_ms()),
            "{refused:?}"
        );

        assert_eq!(abuse.admit_group_create("ann"), Ok(()));
        let refused = abuse.admit_group_create("ann").unwrap_err();
        assert_eq!(
            refused.to_string(),
            "too many group creations: at most 1 a minute; retry later"
        );
        assert!(refused.retry_after_ms() > 59_000, "{refused:?}");
        assert_eq!(abuse.admit_group_create("bob"), Ok(()), "per user");

        assert!(abuse.admit_group_add("ann").is_ok() && abuse.admit_group_add("ann").is_ok());
        assert!(matches!(
            abuse.admit_group_add("ann"),
            Err(Refused::GroupAdds { per_min: 2, .. })
        ));
    }

    #[test]
    fn limits_set_to_zero_refuse_nothing() {
        let limits = LimitsConfig {
            max_connections_per_ip: 0,
            logins_per_ip_per_sec: 0,
            group_creates_per_min: 0,
            group_adds_per_min: 0,
            ..LimitsConfig::default()
        };
        let abuse = AbuseLimits::new(&limits);
        let source = SourceKey::of([10, 0, 0, 1].into());
        for _ in 0..5_000 {
            assert!(abuse.admit_connection(source).is_ok());
            assert!(abuse.admit_login(source).is_ok());
            assert!(abuse.admit_group_create("ann").is_ok());
            assert!(abuse.admit_group_add("ann").is_ok());
        }
    }

    #[test]
    fn every_limit_has_its_own_label_and_index() {
        let mut labels: Vec<_> = Limit::ALL.iter().map(|limit| limit.label()).collect();
        labels.dedup();
        assert_eq!(labels.len(), Limit::ALL.len());
        for (index, limit) in Limit::ALL.into_iter().enumerate() {
            assert_eq!(limit as usize, index);
        }
    }
}
