//! Secrets a node reads from the first of three places: an environment variable, a file named in
//! the configuration, or the configuration itself (the token key, the cluster secret). Which one
//! won, and what is wrong with the value it gave.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

/// Where one secret may come from, and its rules.
#[derive(Debug, Clone, Copy)]
pub struct SecretSpec {
    /// What the secret is, in messages ("token key").
    pub what: &'static str,
    /// What the secret is called inside a file, in messages ("key").
    pub noun: &'static str,
    /// The environment variable that wins over both configuration fields.
    pub env: &'static str,
    /// The configuration field naming a file that holds the secret.
    pub file_field: &'static str,
    /// The configuration field holding the secret itself.
    pub inline_field: &'static str,
    /// The shortest usable secret, in bytes, whichever source it comes from.
    pub min_bytes: usize,
    /// Said after the list of sources when none is set (a hint on making one), or empty.
    pub missing_hint: &'static str,
}

/// Which source the effective secret came from, after loading.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SecretSource {
    /// No source set a secret.
    #[default]
    Missing,
    /// The environment variable (named).
    Environment(&'static str),
    /// The file named by the configuration field `field`.
    File {
        /// The configuration field that named it.
        field: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// The configuration field (named) holding the secret itself.
    Inline(&'static str),
    /// The source that wins could not be used (unreadable file, value not UTF-8); the problem,
    /// reported by `validate()`.
    Unusable(String),
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing => f.write_str("no source"),
            Self::Environment(name) | Self::Inline(name) => f.write_str(name),
            Self::File { field, path } => write!(f, "{field} ({})", path.display()),
            Self::Unusable(problem) => f.write_str(problem),
        }
    }
}

impl SecretSpec {
    /// The secret of the winning source and that source: the environment's value, else the
    /// file's, else `inline` when not empty. The environment value is passed in so tests need
    /// not touch the process environment.
    pub fn resolve(
        &self,
        environment: Option<OsString>,
        file: Option<&Path>,
        inline: &str,
    ) -> (String, SecretSource) {
        let unusable = |problem| (String::new(), SecretSource::Unusable(problem));
        match (environment, file) {
            (Some(value), _) => match value.into_string() {
                Ok(secret) => (secret, SecretSource::Environment(self.env)),
                Err(_) => unusable(format!("{} is not valid UTF-8", self.env)),
            },
            (None, Some(path)) => match self.read_file(path) {
                Ok(secret) => (
                    secret,
                    SecretSource::File {
                        field: self.file_field,
                        path: path.to_path_buf(),
                    },
                ),
                Err(problem) => unusable(problem),
            },
            (None, None) if !inline.is_empty() => {
                (inline.to_owned(), SecretSource::Inline(self.inline_field))
            }
            (None, None) => (String::new(), SecretSource::Missing),
        }
    }

    /// The problem with `secret` from `source`, if any (for `validate()`).
    pub fn problem(&self, secret: &str, source: &SecretSource) -> Option<String> {
        let min = self.min_bytes;
        match source {
            SecretSource::Missing => Some(format!(
                "no {}: set {}, {} or {}{}",
                self.what, self.env, self.file_field, self.inline_field, self.missing_hint
            )),
            SecretSource::Unusable(problem) => Some(problem.clone()),
            _ if secret.len() >= min => None,
            SecretSource::File { field, path } => Some(format!(
                "the {} in {field} {} must be at least {min} bytes",
                self.noun,
                path.display()
            )),
            source => Some(format!("{source} must be at least {min} bytes")),
        }
    }

    /// The secret in a file: its text up to trailing line breaks, so `openssl rand -hex 32 >
    /// FILE` makes a usable file.
    fn read_file(&self, path: &Path) -> Result<String, String> {
        let field = self.file_field;
        let text = std::fs::read(path)
            .map_err(|error| format!("cannot read {field} {}: {error}", path.display()))?;
        let text = String::from_utf8(text)
            .map_err(|_| format!("{field} {} is not valid UTF-8", path.display()))?;
        Ok(text.trim_end_matches(['\r', '\n']).to_owned())
    }
}
