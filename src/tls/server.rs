//! The configuration phones and media clients handshake with: TLS 1.3 only, the node's
//! certificate, stateless session tickets (a phone that reconnects resumes without a full
//! handshake, and the node keeps no per-session cache), no early data.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;

use super::{TlsError, load_certs, load_key, provider};

/// Encrypted bytes a phone's connection buffers before writes wait for the socket: the
/// session's own write buffer bounds what is queued for a slow phone, this only bounds what
/// one write encrypts ahead of the socket.
pub const MAX_SEND_BUFFER: usize = 64 * 1024;

/// Session tickets sent after each full handshake: one is enough for a phone's next
/// reconnect (each costs a record on the wire and nothing on the node).
const TICKETS: usize = 1;

/// A server configuration for `cert_file` and `key_file`, offering `alpn` (empty: none).
pub fn phone_config(
    cert_file: &Path,
    key_file: &Path,
    alpn: &[&[u8]],
) -> Result<ServerConfig, TlsError> {
    let certs = load_certs(cert_file)?;
    let key = load_key(key_file)?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|source| TlsError::Rustls {
            what: "TLS 1.3 with the ring provider",
            source,
        })?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|source| TlsError::Rustls {
            what: "the certificate and key (tls.cert_file, tls.key_file)",
            source,
        })?;
    config.ticketer = rustls::crypto::ring::Ticketer::new().map_err(|source| TlsError::Rustls {
        what: "the session ticket key",
        source,
    })?;
    config.send_tls13_tickets = TICKETS;
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.max_early_data_size = 0;
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    Ok(config)
}
