//! Mutual TLS between nodes (and between gateways): each side presents a certificate the
//! cluster's CA signed and checks the other's against that CA; a dialer also checks that the
//! certificate names the address it dialled. The cluster-secret handshake then runs inside.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use super::{TlsError, load_certs, load_key, provider};

/// The acceptor's and the dialer's configurations of one node.
#[derive(Debug, Clone)]
pub struct MeshConfigs {
    /// For links this node accepts: a client certificate from the CA is required.
    pub server: Arc<ServerConfig>,
    /// For links this node dials: presents this node's certificate.
    pub client: Arc<ClientConfig>,
}

impl MeshConfigs {
    /// Both configurations from the CA file and this node's certificate and key.
    pub fn load(ca_file: &Path, cert_file: &Path, key_file: &Path) -> Result<Self, TlsError> {
        let roots = Arc::new(roots(ca_file)?);
        let certs = load_certs(cert_file)?;
        let key = load_key(key_file)?;
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(|error| TlsError::Verifier {
                path: ca_file.to_owned(),
                detail: error.to_string(),
            })?;
        let server = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(versions)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs.clone(), key.clone_key())
            .map_err(identity)?;
        let client = client_config(roots, certs, key)?;
        Ok(Self {
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }
}

fn client_config(
    roots: Arc<RootCertStore>,
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ClientConfig, TlsError> {
    ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(versions)?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .map_err(identity)
}

/// The certificates of a CA file as trust roots.
pub fn roots(ca_file: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(ca_file)? {
        roots.add(cert).map_err(|error| TlsError::Verifier {
            path: ca_file.to_owned(),
            detail: error.to_string(),
        })?;
    }
    Ok(roots)
}

fn versions(source: rustls::Error) -> TlsError {
    TlsError::Rustls {
        what: "TLS 1.3 with the ring provider",
        source,
    }
}

fn identity(source: rustls::Error) -> TlsError {
    TlsError::Rustls {
        what: "this node's mesh certificate and key",
        source,
    }
}
