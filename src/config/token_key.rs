//! Where the token-signing key comes from: `TERN_TOKEN_KEY`, else `auth.token_key_file`, else
//! `auth.token_key` (the rules shared with the cluster secret are in `secret.rs`).

use std::ffi::OsString;

use super::AuthConfig;
use super::secret::{SecretSource, SecretSpec};

/// The environment variable that carries the token key; it wins over both config fields, so a
/// deployment can keep the secret out of the config file (systemd `EnvironmentFile=`, a
/// container secret).
pub const TOKEN_KEY_ENV: &str = "TERN_TOKEN_KEY";

/// The shortest usable token key, in bytes, whichever source it comes from.
pub const MIN_TOKEN_KEY_BYTES: usize = 16;

/// Which source the effective `auth.token_key` came from, after loading.
pub type TokenKeySource = SecretSource;

/// The token key's sources and rules.
const TOKEN_KEY: SecretSpec = SecretSpec {
    what: "token key",
    noun: "key",
    env: TOKEN_KEY_ENV,
    file_field: "auth.token_key_file",
    inline_field: "auth.token_key",
    min_bytes: MIN_TOKEN_KEY_BYTES,
    missing_hint: "",
};

impl AuthConfig {
    /// Replaces `token_key` with the key of the winning source and records that source. The
    /// environment value is passed in (rather than read here) so tests need not touch the
    /// process environment.
    pub(super) fn resolve_token_key(&mut self, environment: Option<OsString>) {
        let (key, source) =
            TOKEN_KEY.resolve(environment, self.token_key_file.as_deref(), &self.token_key);
        self.token_key = key;
        self.token_key_source = source;
    }

    /// The problem with the effective key, if any (for `validate()`).
    pub(super) fn token_key_problem(&self) -> Option<String> {
        TOKEN_KEY.problem(&self.token_key, &self.token_key_source)
    }
}
