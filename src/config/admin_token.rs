//! Where the admin token comes from: `TERN_ADMIN_TOKEN`, else `auth.admin_token_file`, else
//! `auth.admin_token` (the rules shared with the token key are in `secret.rs`). It authorizes
//! the admin port's actions (`POST /drain`, `POST /cluster/nodes/{id}/remove`, `tern drain`);
//! without one those are refused, and the port serves only what it shows.

use std::ffi::OsString;

use super::AuthConfig;
use super::secret::{SecretSource, SecretSpec};

/// The environment variable that carries the admin token; it wins over both config fields.
pub const ADMIN_TOKEN_ENV: &str = "TERN_ADMIN_TOKEN";

/// The shortest usable admin token, in bytes.
pub const MIN_ADMIN_TOKEN_BYTES: usize = 16;

/// The admin token's sources and rules.
const ADMIN_TOKEN: SecretSpec = SecretSpec {
    what: "admin token",
    noun: "token",
    env: ADMIN_TOKEN_ENV,
    file_field: "auth.admin_token_file",
    inline_field: "auth.admin_token",
    min_bytes: MIN_ADMIN_TOKEN_BYTES,
    missing_hint: "",
};

impl AuthConfig {
    /// Replaces `admin_token` with the token of the winning source and records that source.
    pub(super) fn resolve_admin_token(&mut self, environment: Option<OsString>) {
        let (token, source) = ADMIN_TOKEN.resolve(
            environment,
            self.admin_token_file.as_deref(),
            &self.admin_token,
        );
        self.admin_token = token;
        self.admin_token_source = source;
    }

    /// The problem with the effective admin token, if any (for `validate()`). No token at all
    /// is no problem: the admin actions are then refused.
    pub(super) fn admin_token_problem(&self) -> Option<String> {
        match self.admin_token_source {
            SecretSource::Missing => None,
            _ => ADMIN_TOKEN.problem(&self.admin_token, &self.admin_token_source),
        }
    }

    /// The admin token, when one is configured.
    pub fn admin_token(&self) -> Option<&str> {
        (!self.admin_token.is_empty()).then_some(self.admin_token.as_str())
    }
}
