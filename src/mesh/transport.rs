//! How the mesh reaches the network: the `Transport` trait (listen, accept, dial), so a
//! simulated network can stand in for TCP in tests, and `TcpTransport`, tokio's TCP, with
//! mutual TLS when the node has the cluster's CA (`tls.ca_file`).

use std::future::Future;
use std::io;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsStream;

use crate::tls::{HANDSHAKES, MaybeTls, TlsContext, record_failure};

/// Streams and listeners for mesh links.
pub trait Transport: Clone + Send + Sync + 'static {
    /// A connected byte stream.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// A bound listener.
    type Listener: Send + 'static;
    /// Binds a listener to `addr` (`host:port`).
    fn bind(&self, addr: &str) -> impl Future<Output = io::Result<Self::Listener>> + Send;
    /// Accepts one connection; returns it and the remote address, for logs.
    fn accept(
        &self,
        listener: &mut Self::Listener,
    ) -> impl Future<Output = io::Result<(Self::Stream, String)>> + Send;
    /// Secures an accepted connection (the TLS handshake, when there is one) in the task
    /// that serves it, so a slow peer never holds the accept loop. Default: as it is.
    fn secure(
        &self,
        stream: Self::Stream,
        _remote: &str,
    ) -> impl Future<Output = io::Result<Self::Stream>> + Send {
        std::future::ready(Ok(stream))
    }
    /// Dials `addr` (`host:port`).
    fn connect(&self, addr: &str) -> impl Future<Output = io::Result<Self::Stream>> + Send;
    /// The address the listener is bound to (with the port picked when 0 was asked).
    fn local_addr(&self, listener: &Self::Listener) -> io::Result<String>;
}

/// The production transport: tokio TCP with Nagle off (frames are coalesced by the writer),
/// under mutual TLS when configured.
#[derive(Clone, Default)]
pub struct TcpTransport {
    tls: Option<MeshTls>,
}

/// The acceptor's and dialer's configurations, and the listener they are counted under.
type Configs = (Arc<ServerConfig>, Arc<ClientConfig>, &'static str);

/// The TLS of a mesh: the node's configurations and the listener they are counted under.
#[derive(Clone)]
struct MeshTls {
    context: Arc<TlsContext>,
    listener: &'static str,
}

impl std::fmt::Debug for TcpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpTransport")
            .field("tls", &self.tls.as_ref().map(|tls| tls.listener))
            .finish()
    }
}

impl TcpTransport {
    /// Plain TCP.
    pub fn plain() -> Self {
        Self::default()
    }

    /// TCP under the TLS `context` gives `listener` ("mesh" or "wan"); plain TCP when it
    /// gives none.
    pub fn for_listener(context: &Arc<TlsContext>, listener: &'static str) -> Self {
        Self {
            tls: context.encrypts(listener).then(|| MeshTls {
                context: context.clone(),
                listener,
            }),
        }
    }

    fn configs(&self) -> io::Result<Option<Configs>> {
        let Some(tls) = &self.tls else {
            return Ok(None);
        };
        let (server, client) = tls
            .context
            .mesh(tls.listener)
            .ok_or_else(|| io::Error::other("mesh TLS configuration missing"))?;
        Ok(Some((server, client, tls.listener)))
    }
}

impl Transport for TcpTransport {
    type Stream = MeshStream;
    type Listener = TcpListener;

    async fn bind(&self, addr: &str) -> io::Result<TcpListener> {
        TcpListener::bind(addr).await
    }

    async fn accept(&self, listener: &mut TcpListener) -> io::Result<(MeshStream, String)> {
        let (stream, remote) = listener.accept().await?;
        stream.set_nodelay(true)?;
        Ok((MaybeTls::Plain(stream), remote.to_string()))
    }

    async fn secure(&self, stream: MeshStream, remote: &str) -> io::Result<MeshStream> {
        let Some((server, _, listener)) = self.configs()? else {
            return Ok(stream);
        };
        let MaybeTls::Plain(stream) = stream else {
            return Ok(stream);
        };
        match tokio_rustls::TlsAcceptor::from(server).accept(stream).await {
            Ok(stream) => {
                metrics::counter!(HANDSHAKES, "listener" => listener).increment(1);
                Ok(MaybeTls::Tls(Box::new(stream.into())))
            }
            Err(error) => {
                record_failure(listener, remote, &error);
                Err(error)
            }
        }
    }

    async fn connect(&self, addr: &str) -> io::Result<MeshStream> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let Some((_, client, listener)) = self.configs()? else {
            return Ok(MaybeTls::Plain(stream));
        };
        let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_owned())
            .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
        match tokio_rustls::TlsConnector::from(client)
            .connect(name, stream)
            .await
        {
            Ok(stream) => {
                metrics::counter!(HANDSHAKES, "listener" => listener).increment(1);
                Ok(MaybeTls::Tls(Box::new(stream.into())))
            }
            Err(error) => {
                record_failure(listener, addr, &error);
                Err(error)
            }
        }
    }

    fn local_addr(&self, listener: &TcpListener) -> io::Result<String> {
        listener.local_addr().map(|a| a.to_string())
    }
}

/// A mesh connection: plain TCP, or TLS over it (boxed: the TLS state is large).
pub type MeshStream = MaybeTls<TcpStream, Box<TlsStream<TcpStream>>>;
