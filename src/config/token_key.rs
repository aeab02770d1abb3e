//! Where the token-signing key comes from: `TERN_TOKEN_KEY`, else `auth.token_key_file`, else
//! `auth.token_key` (the rules shared with the cluster secret are in `secret.rs`); and the keys
//! accepted besides it (`auth.verify_keys`) during a rotation.

use std::ffi::OsString;
use std::path::PathBuf;

use serde::Deserialize;

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

/// A key accepted for verification only (`auth.verify_keys`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyKey {
    /// The id tokens signed with it carry.
    pub id: String,
    /// The key itself (after loading: the effective key, from `key_file` when set).
    #[serde(default)]
    pub key: String,
    /// A file holding the key; wins over `key`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Which source the key came from (set by loading).
    #[serde(skip)]
    pub source: SecretSource,
}

/// A verification key's sources and rules (no environment variable).
const VERIFY_KEY: SecretSpec = SecretSpec {
    what: "verification key",
    noun: "key",
    env: "",
    file_field: "auth.verify_keys key_file",
    inline_field: "auth.verify_keys key",
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
        for extra in &mut self.verify_keys {
            let (key, source) = VERIFY_KEY.resolve(None, extra.key_file.as_deref(), &extra.key);
            extra.key = key;
            extra.source = source;
        }
    }

    /// The problems with the key ids and the verification keys (for `validate()`).
    pub(super) fn verify_key_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut seen = vec![self.token_key_id.as_str()];
        if !crate::token::valid_key_id(&self.token_key_id) {
            problems.push(format!(
                "auth.token_key_id {:?}: 1-16 characters of [A-Za-z0-9_-]",
                self.token_key_id
            ));
        }
        for extra in &self.verify_keys {
            if !crate::token::valid_key_id(&extra.id) {
                problems.push(format!(
                    "auth.verify_keys id {:?}: 1-16 characters of [A-Za-z0-9_-]",
                    extra.id
                ));
            } else if seen.contains(&extra.id.as_str()) {
                problems.push(format!(
                    "auth.verify_keys id {:?} is used twice (token_key_id counts)",
                    extra.id
                ));
            }
            seen.push(&extra.id);
            let problem = match extra.source {
                SecretSource::Missing => Some("set key or key_file".to_owned()),
                _ => VERIFY_KEY.problem(&extra.key, &extra.source),
            };
            if let Some(problem) = problem {
                problems.push(format!("auth.verify_keys {:?}: {problem}", extra.id));
            }
        }
        problems
    }

    /// The problem with the effective key, if any (for `validate()`).
    pub(super) fn token_key_problem(&self) -> Option<String> {
        TOKEN_KEY.problem(&self.token_key, &self.token_key_source)
    }
}
