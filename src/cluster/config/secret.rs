//! Where the cluster secret comes from: `TERN_CLUSTER_SECRET`, else `cluster.secret_file`, else
//! `cluster.secret` (the rules shared with the token key are in `src/config/secret.rs`). Unlike
//! the token key there is no development value: no secret, no cluster.

use std::ffi::OsString;

use super::ClusterConfig;
pub use crate::config::SecretSource;
use crate::config::SecretSpec;

/// The environment variable that carries the cluster secret; it wins over both config fields,
/// so the secret can stay out of the configuration file.
pub const CLUSTER_SECRET_ENV: &str = "TERN_CLUSTER_SECRET";

/// The shortest usable cluster secret, in bytes: it authenticates every mesh link, so it gets
/// twice the token key's minimum.
pub const MIN_CLUSTER_SECRET_BYTES: usize = 32;

/// The cluster secret's sources and rules.
const CLUSTER_SECRET: SecretSpec = SecretSpec {
    what: "cluster secret",
    noun: "secret",
    env: CLUSTER_SECRET_ENV,
    file_field: "cluster.secret_file",
    inline_field: "cluster.secret",
    min_bytes: MIN_CLUSTER_SECRET_BYTES,
    missing_hint: " (at least 32 bytes, e.g. `openssl rand -hex 32`)",
};

impl ClusterConfig {
    /// Replaces `secret` with the secret of the winning source and records that source. The
    /// environment value is passed in so tests need not touch the process environment.
    pub fn resolve_secret(&mut self, environment: Option<OsString>) {
        let (secret, source) =
            CLUSTER_SECRET.resolve(environment, self.secret_file.as_deref(), &self.secret);
        self.secret = secret;
        self.secret_source = source;
    }

    /// The problem with the effective secret, if any (for `validate()`).
    pub(super) fn secret_problem(&self) -> Option<String> {
        CLUSTER_SECRET.problem(&self.secret, &self.secret_source)
    }
}
