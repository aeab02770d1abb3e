//! TLS for phones: the trust file (a CA certificate, as `tern certs` writes) and the name the
//! server's certificate must carry. A client configuration keeps session tickets, so a phone
//! that reconnects resumes without a full handshake.

use std::path::Path;
use std::sync::Arc;

use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::tls::{TlsError, provider};

/// How a phone connects under TLS.
#[derive(Clone)]
pub struct ClientTls {
    connector: TlsConnector,
    server_name: ServerName<'static>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl ClientTls {
    /// Trusts the certificates of `ca_file` and expects the server to be `server_name` (a
    /// host name or IP address its certificate names).
    pub fn from_ca_file(ca_file: &Path, server_name: &str) -> Result<Self, TlsError> {
        let roots = crate::tls::roots(ca_file)?;
        let config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|source| TlsError::Rustls {
                what: "TLS 1.3 with the ring provider",
                source,
            })?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let server_name =
            ServerName::try_from(server_name.to_owned()).map_err(|error| TlsError::Verifier {
                path: ca_file.to_owned(),
                detail: format!("server name {server_name:?}: {error}"),
            })?;
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }

    /// Runs the handshake on a connected socket.
    pub async fn handshake(&self, stream: TcpStream) -> std::io::Result<TlsStream<TcpStream>> {
        self.connector
            .connect(self.server_name.clone(), stream)
            .await
    }
}
