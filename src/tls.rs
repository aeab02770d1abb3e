//! TLS 1.3 on the node's listeners (rustls with the ring provider): the certificates loaded
//! from `[tls]`, reloaded on SIGHUP and when the files change, and the metrics of handshakes
//! that fail.
//!
//! - `files.rs`: PEM certificate chains and keys, and the stamps that tell a file changed;
//! - `server.rs`: the configuration phones and media clients handshake with;
//! - `mesh.rs`: mutual TLS between nodes and between gateways (both sides present a
//!   certificate from the cluster's CA);
//! - `context.rs`: all of them behind swappable pointers, and the reload;
//! - `reload.rs`: the task that reloads on SIGHUP or when a file changes;
//! - `either.rs`: a stream that is plain text or TLS, chosen per connection;
//! - `failure.rs`: what a failed handshake is called in logs and metrics.
//!
//! A connection takes the configuration current at its accept (or dial); a reload changes
//! what the next connections get and leaves established ones alone.

mod context;
mod either;
mod failure;
mod files;
mod mesh;
mod reload;
mod server;

use std::path::PathBuf;

pub use context::TlsContext;
pub use either::MaybeTls;
pub use failure::{FAILURE_KINDS, LISTENERS, failure_kind, record_failure};
pub use files::{load_certs, load_key};
pub use mesh::{MeshConfigs, roots};
pub use reload::spawn_reloader;
pub use server::{MAX_SEND_BUFFER, phone_config};

/// Counter of failed handshakes, by `listener` and `failure` kind.
pub const FAILURES: &str = "tern_tls_failures_total";
/// Counter of certificate reloads, by `outcome` ("ok" or "failed").
pub const RELOADS: &str = "tern_tls_reloads_total";
/// Counter of TLS handshakes completed, by `listener`.
pub const HANDSHAKES: &str = "tern_tls_handshakes_total";

/// Describes the TLS metrics (HELP lines of `/metrics`).
pub fn describe() {
    use metrics::{Unit, describe_counter};
    describe_counter!(
        HANDSHAKES,
        Unit::Count,
        "TLS handshakes completed, by listener."
    );
    describe_counter!(
        FAILURES,
        Unit::Count,
        "TLS handshakes that failed, by listener and kind of failure."
    );
    describe_counter!(
        RELOADS,
        Unit::Count,
        "Reloads of the TLS certificate files, by outcome."
    );
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A certificate file holds no certificate (or a malformed one).
    #[error("{path} holds no PEM certificate{detail}")]
    NoCertificate {
        /// The file.
        path: PathBuf,
        /// What the parser said, if anything (with a leading ": ").
        detail: String,
    },
    /// A key file holds no private key (or a malformed one).
    #[error("{path} holds no PEM private key (PKCS#8, PKCS#1 or SEC1){detail}")]
    NoKey {
        /// The file.
        path: PathBuf,
        /// What the parser said, if anything (with a leading ": ").
        detail: String,
    },
    /// rustls refused the certificate, key or CA.
    #[error("{what}: {source}")]
    Rustls {
        /// What was being set up.
        what: &'static str,
        /// rustls' reason.
        source: rustls::Error,
    },
    /// The CA file could not serve to verify peers.
    #[error("cannot verify peers with {path}: {detail}")]
    Verifier {
        /// The CA file.
        path: PathBuf,
        /// The reason.
        detail: String,
    },
    /// The configuration lacks a file TLS needs (validation normally catches this).
    #[error("{0} is not set")]
    Missing(&'static str),
}

/// The crypto provider every configuration uses: ring (TLS 1.3 only is chosen per
/// configuration), with X25519 as the first key exchange group (ring's default list starts
/// with P-384, which costs the server about four times the CPU per handshake; phones' TLS
/// stacks offer X25519 first). rustls marks the ring provider deprecated because ring has no
/// post-quantum key exchange; the other provider needs a C library built with cmake, which
/// this build does without.
#[allow(deprecated)]
pub fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::ring::kx_group::{SECP256R1, SECP384R1, X25519};
    let mut provider = rustls::crypto::ring::default_provider();
    provider.kx_groups = vec![X25519, SECP256R1, SECP384R1];
    std::sync::Arc::new(provider)
}

/// The mesh configurations of a node certificate under a CA (as a node would load them).
pub fn mesh_configs(
    ca_file: &std::path::Path,
    cert_file: &std::path::Path,
    key_file: &std::path::Path,
) -> Result<MeshConfigs, TlsError> {
    MeshConfigs::load(ca_file, cert_file, key_file)
}
