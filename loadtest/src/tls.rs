//! TLS for the load generator's connections: the flags (`--tls`, `--ca-file`, `--server-name`),
//! the client configuration they make (tern's own [`ClientTls`], TLS 1.3 with the ring
//! provider, trusting one CA), and the stream a dialer hands out, plain or under TLS. The same
//! configuration serves tern and an MQTT broker given the same certificate.

use std::path::PathBuf;

use tern::client::ClientTls;
use tern::tls::MaybeTls;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::error::LoadError;

/// A connected socket, plain or with its TLS handshake done.
pub type Stream = MaybeTls<TcpStream, TlsStream<TcpStream>>;

/// The TLS flags every scenario that talks to a server shares.
#[derive(Debug, Clone, clap::Args)]
pub struct TlsArgs {
    /// Speak TLS 1.3: each connection runs the handshake right after its TCP connect (timed
    /// with the login, and under the same concurrency and rate limits as the connects).
    #[arg(long, requires = "ca_file")]
    pub tls: bool,
    /// The CA certificate (PEM) the server's certificate must chain to: the `ca.crt` that
    /// `tern certs` writes.
    #[arg(long, requires = "tls")]
    pub ca_file: Option<PathBuf>,
    /// The name the server's certificate must carry (a host name or an IP address).
    #[arg(long, default_value = "localhost")]
    pub server_name: String,
}

impl TlsArgs {
    /// The client configuration, `None` without `--tls`.
    pub fn client(&self) -> Result<Option<ClientTls>, LoadError> {
        if !self.tls {
            return Ok(None);
        }
        let ca_file = self
            .ca_file
            .as_ref()
            .ok_or_else(|| LoadError::Args("--tls needs --ca-file".to_owned()))?;
        ClientTls::from_ca_file(ca_file, &self.server_name)
            .map(Some)
            .map_err(|source| LoadError::Tls {
                path: ca_file.clone(),
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        tls: TlsArgs,
    }

    fn parse(args: &[&str]) -> Result<TlsArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("x").chain(args.iter().copied())).map(|cli| cli.tls)
    }

    #[test]
    fn plain_by_default() {
        let args = parse(&[]).unwrap();
        assert!(!args.tls);
        assert_eq!(args.server_name, "localhost");
        assert!(args.client().unwrap().is_none());
    }

    #[test]
    fn tls_and_the_ca_file_go_together() {
        assert!(parse(&["--tls"]).is_err());
        assert!(parse(&["--ca-file", "ca.crt"]).is_err());
        let args = parse(&["--tls", "--ca-file", "ca.crt", "--server-name", "127.0.0.1"]).unwrap();
        assert_eq!(args.server_name, "127.0.0.1");
    }

    #[test]
    fn a_missing_ca_file_is_named() {
        let args = parse(&["--tls", "--ca-file", "/nonexistent/ca.crt"]).unwrap();
        let error = args.client().unwrap_err().to_string();
        assert!(error.contains("/nonexistent/ca.crt"), "{error}");
    }

    #[test]
    fn a_ca_from_tern_certs_makes_a_client() {
        let dir = tempfile::tempdir().unwrap();
        let made = tern::certs::make(&tern::certs::CertsRequest {
            dir: dir.path().to_owned(),
            nodes: vec!["tern-1".into()],
            hosts: Vec::new(),
            valid_for: std::time::Duration::from_secs(3600),
            backdate: std::time::Duration::from_secs(60),
        })
        .unwrap();
        let path = made.ca_cert.to_string_lossy().into_owned();
        let args = parse(&["--tls", "--ca-file", &path]).unwrap();
        assert!(args.client().unwrap().is_some());
    }
}
