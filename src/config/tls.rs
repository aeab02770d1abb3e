//! The `[tls]` section: the certificate phones and media clients see, the cluster's CA and
//! node certificate for the mesh and the gateways, and which listeners may speak plain text.
//!
//! The rule: a listener speaks TLS when its certificate is configured (`cert_file` for the
//! client and media ports, `ca_file` for the mesh and the gateways). A listener without TLS is
//! allowed on a loopback address (nothing leaves the machine) or when `plain` names it; any
//! other is a configuration error, so no byte leaves a node in clear text unless the file says
//! so.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// The listeners `tls.plain` may name.
pub const PLAIN_LISTENERS: [&str; 4] = ["client", "media", "mesh", "wan"];

/// TLS on the node's listeners.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Certificate chain (PEM, leaf first) served on the client and media ports. Setting it
    /// turns TLS on there. Default: none.
    pub cert_file: Option<PathBuf>,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1) of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// The cluster's CA certificate (PEM): mesh and gateway peers must present a certificate
    /// it signed, and this node presents `mesh_cert_file` (mutual TLS). Setting it turns TLS
    /// on for the mesh and the gateways. Default: none.
    pub ca_file: Option<PathBuf>,
    /// This node's certificate from that CA. Default: `cert_file`.
    pub mesh_cert_file: Option<PathBuf>,
    /// Its private key. Default: `key_file`.
    pub mesh_key_file: Option<PathBuf>,
    /// Listeners allowed to speak plain text off loopback: any of "client", "media", "mesh",
    /// "wan". A listener named here speaks plain text even when its certificate is set.
    pub plain: Vec<String>,
    /// Seconds between checks of the certificate files for a change (then reloaded, as on
    /// SIGHUP); 0 checks only on SIGHUP. Default: 10.
    pub reload_check_secs: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert_file: None,
            key_file: None,
            ca_file: None,
            mesh_cert_file: None,
            mesh_key_file: None,
            plain: Vec::new(),
            reload_check_secs: 10,
        }
    }
}

impl TlsConfig {
    /// True when the client and media listeners have a certificate.
    pub fn has_server_cert(&self) -> bool {
        self.cert_file.is_some()
    }

    /// True when `listener` (one of [`PLAIN_LISTENERS`]) is named in `plain`.
    pub fn plain_allowed(&self, listener: &str) -> bool {
        self.plain.iter().any(|name| name == listener)
    }

    /// True when `listener` speaks TLS: its certificate is set and `plain` does not name it.
    pub fn encrypts(&self, listener: &str) -> bool {
        let configured = match listener {
            "client" | "media" => self.cert_file.is_some(),
            _ => self.ca_file.is_some(),
        };
        configured && !self.plain_allowed(listener)
    }

    /// The mesh certificate and key: `mesh_cert_file`/`mesh_key_file`, else the server's.
    pub fn mesh_identity(&self) -> (Option<&PathBuf>, Option<&PathBuf>) {
        (
            self.mesh_cert_file.as_ref().or(self.cert_file.as_ref()),
            self.mesh_key_file.as_ref().or(self.key_file.as_ref()),
        )
    }

    /// Every problem with the section, given the listeners the node binds (name from
    /// [`PLAIN_LISTENERS`], field name for messages, address).
    pub fn validate(&self, listeners: &[(&str, &str, SocketAddr)]) -> Vec<String> {
        let mut problems = Vec::new();
        for name in &self.plain {
            if !PLAIN_LISTENERS.contains(&name.as_str()) {
                problems.push(format!(
                    "tls.plain names \"{name}\"; the listeners are {}",
                    PLAIN_LISTENERS.join(", ")
                ));
            }
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            problems.push("tls.cert_file and tls.key_file go together".to_owned());
        }
        if self.mesh_cert_file.is_some() != self.mesh_key_file.is_some() {
            problems.push("tls.mesh_cert_file and tls.mesh_key_file go together".to_owned());
        }
        if self.ca_file.is_some() && self.mesh_identity().0.is_none() {
            problems.push(
                "tls.ca_file needs this node's certificate: tls.mesh_cert_file and \
                 tls.mesh_key_file, or tls.cert_file and tls.key_file"
                    .to_owned(),
            );
        }
        for (listener, field, addr) in listeners {
            if self.encrypts(listener) || self.plain_allowed(listener) || addr.ip().is_loopback() {
                continue;
            }
            let needs = match *listener {
                "client" | "media" => "tls.cert_file and tls.key_file",
                _ => "tls.ca_file and this node's certificate from that CA",
            };
            problems.push(format!(
                "{field} ({addr}) is not a loopback address and would speak plain text: set \
                 {needs} (`tern certs` makes development ones), or name \"{listener}\" in \
                 tls.plain"
            ));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn plain_text_off_loopback_needs_to_be_named() {
        let config = TlsConfig::default();
        let problems = config.validate(&[
            ("client", "node.client_addr", addr("0.0.0.0:7400")),
            ("media", "media.listen_addr", addr("127.0.0.1:7402")),
            ("mesh", "cluster.listen", addr("10.0.0.1:7403")),
        ]);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("node.client_addr (0.0.0.0:7400)"));
        assert!(problems[1].contains("tls.ca_file"));
        let named = TlsConfig {
            plain: vec!["client".into(), "mesh".into()],
            ..TlsConfig::default()
        };
        assert!(
            named
                .validate(&[
                    ("client", "node.client_addr", addr("0.0.0.0:7400")),
                    ("mesh", "cluster.listen", addr("10.0.0.1:7403")),
                ])
                .is_empty()
        );
    }

    #[test]
    fn a_certificate_turns_tls_on_unless_plain_names_the_listener() {
        let config = TlsConfig {
            cert_file: Some("c".into()),
            key_file: Some("k".into()),
            plain: vec!["media".into()],
            ..TlsConfig::default()
        };
        assert!(config.encrypts("client"));
        assert!(!config.encrypts("media"));
        assert!(!config.encrypts("mesh"));
        assert!(config.validate(&[]).is_empty());
    }

    #[test]
    fn half_pairs_and_unknown_names_are_refused() {
        let config = TlsConfig {
            cert_file: Some("c".into()),
            ca_file: None,
            mesh_key_file: Some("k".into()),
            plain: vec!["admin".into()],
            ..TlsConfig::default()
        };
        let problems = config.validate(&[]);
        assert_eq!(problems.len(), 3, "{problems:?}");
    }
}
