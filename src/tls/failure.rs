//! What a failed handshake is called: a short kind for the `failure` label of
//! `tern_tls_failures_total`, and a log line with rustls' reason.

use std::io;

use super::FAILURES;

/// The `listener` values of the TLS metrics.
pub const LISTENERS: &[&str] = &["client", "media", "mesh", "wan"];

/// The `failure` values of [`FAILURES`].
pub const FAILURE_KINDS: &[&str] = &[
    "not_tls",
    "certificate",
    "incompatible",
    "alert",
    "handshake",
    "io",
];

/// The kind of a TLS failure: "not_tls" (the peer sent something that is not a TLS record,
/// such as a plain-text client on a TLS port), "certificate" (a peer certificate missing,
/// expired or from an unknown CA), "incompatible" (no common version or suite), "alert" (the
/// peer refused us), "handshake" (anything else rustls refused), "io" (the connection failed
/// or timed out under the handshake).
pub fn failure_kind(error: &io::Error) -> &'static str {
    let Some(error) = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return "io";
    };
    match error {
        rustls::Error::InvalidMessage(_) => "not_tls",
        rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
            "certificate"
        }
        rustls::Error::PeerIncompatible(_) => "incompatible",
        rustls::Error::AlertReceived(_) => "alert",
        _ => "handshake",
    }
}

/// Counts a failed handshake on `listener` and logs it at info with its reason and peer
/// (handshakes are refused by the thousand in a scan, so only the metric is exact; the log
/// line is at debug for "not_tls" and "io", which any port scanner causes).
pub fn record_failure(listener: &'static str, peer: &str, error: &io::Error) {
    let kind = failure_kind(error);
    metrics::counter!(FAILURES, "listener" => listener, "failure" => kind).increment(1);
    if matches!(kind, "not_tls" | "io") {
        tracing::debug!(listener, peer, failure = kind, %error, "TLS handshake failed");
    } else {
        tracing::info!(listener, peer, failure = kind, %error, "TLS handshake failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rustls_errors_inside_io_errors_are_named() {
        let wrap = |error: rustls::Error| io::Error::new(io::ErrorKind::InvalidData, error);
        let not_tls = wrap(rustls::Error::InvalidMessage(
            rustls::InvalidMessage::InvalidContentType,
        ));
        assert_eq!(failure_kind(&not_tls), "not_tls");
        let expired = wrap(rustls::Error::InvalidCertificate(
            rustls::CertificateError::Expired,
        ));
        assert_eq!(failure_kind(&expired), "certificate");
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert_eq!(failure_kind(&reset), "io");
        for kind in ["not_tls", "certificate", "io"] {
            assert!(FAILURE_KINDS.contains(&kind));
        }
    }
}
