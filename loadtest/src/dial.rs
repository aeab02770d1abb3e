//! Opening phone connections: connection number i goes to server address i mod n (one address,
//! or the nodes of a cluster), and comes from source addresses 127.0.0.1-16 when its server is
//! on loopback so that one process can hold more connections than one source address has ports.
//! With TLS the handshake follows the TCP connect, inside the same login timeout.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tern::client::{Client, ClientError, ClientTls, Refusal};
use tern::proto::v1::{GoAwayReason, ServerFrame, Welcome, server_frame::Frame};
use tern::tls::MaybeTls;
use tokio::net::{TcpSocket, TcpStream};

use crate::error::LoadError;
use crate::mqtt::{self, MqttReader, MqttWriter};
use crate::tls::Stream;

/// Loopback source addresses used in turn.
pub const SOURCE_ADDRESSES: u8 = 16;

/// How long connecting plus logging in may take.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(15);

/// Opens connections to one server, or spreads them over several.
#[derive(Debug, Clone)]
pub struct Dialer {
    /// Never empty: [`Dialer::new`] takes one, [`Dialer::spread`] refuses none.
    servers: Arc<[SocketAddr]>,
    /// Set when connections speak TLS (every server is expected to carry the same name).
    tls: Option<ClientTls>,
}

impl Dialer {
    /// A dialer for `server`.
    pub fn new(server: SocketAddr) -> Self {
        Self {
            servers: Arc::from([server]),
            tls: None,
        }
    }

    /// A dialer that sends connection number i to `servers[i % servers.len()]`.
    pub fn spread(servers: &[SocketAddr]) -> Result<Self, LoadError> {
        if servers.is_empty() {
            return Err(LoadError::Args("no server address".to_owned()));
        }
        Ok(Self {
            servers: Arc::from(servers),
            tls: None,
        })
    }

    /// The same dialer, its connections under TLS with `tls` (plain with `None`).
    pub fn with_tls(mut self, tls: Option<ClientTls>) -> Self {
        self.tls = tls;
        self
    }

    /// The TLS configuration, if connections speak TLS.
    pub fn tls(&self) -> Option<&ClientTls> {
        self.tls.as_ref()
    }

    /// A dialer for `servers` that speaks TLS when this one does (e.g. the addresses a GoAway
    /// named).
    pub fn elsewhere(&self, servers: &[SocketAddr]) -> Result<Self, LoadError> {
        Ok(Self::spread(servers)?.with_tls(self.tls.clone()))
    }

    /// A dialer whose connections all go to the server of connection number `index`, as this
    /// one's do (plain or TLS).
    pub fn only(&self, index: usize) -> Self {
        Self::new(self.server_for(index)).with_tls(self.tls.clone())
    }

    /// The servers, in order.
    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    /// The servers for a report: comma-separated.
    pub fn describe(&self) -> String {
        self.servers
            .iter()
            .map(SocketAddr::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The server connection number `index` goes to.
    pub fn server_for(&self, index: usize) -> SocketAddr {
        self.servers[index % self.servers.len()]
    }

    /// The source address of connection number `index`: 127.0.0.{1 + index % 16}:0 when its
    /// server is on IPv4 loopback, none (the kernel picks) otherwise.
    pub fn source_for(&self, index: usize) -> Option<SocketAddr> {
        match self.server_for(index) {
            SocketAddr::V4(v4) if v4.ip().is_loopback() => {
                let host = 1 + (index % usize::from(SOURCE_ADDRESSES)) as u8;
                Some(SocketAddr::from((Ipv4Addr::new(127, 0, 0, host), 0)))
            }
            _ => None,
        }
    }

    /// Opens connection number `index`.
    pub async fn connect(&self, index: usize) -> Result<TcpStream, LoadError> {
        let server = self.server_for(index);
        let from = self.source_for(index);
        let error = |source| LoadError::Connect {
            addr: server,
            from,
            source,
        };
        let socket = match server {
            SocketAddr::V4(_) => TcpSocket::new_v4(),
            SocketAddr::V6(_) => TcpSocket::new_v6(),
        }
        .map_err(error)?;
        if let Some(from) = from {
            socket.bind(from).map_err(error)?;
        }
        socket.connect(server).await.map_err(error)
    }

    /// Opens connection number `index` and, with TLS, runs the handshake on it.
    pub async fn open(&self, index: usize) -> Result<Stream, LoadError> {
        let stream = self.connect(index).await?;
        let Some(tls) = &self.tls else {
            return Ok(MaybeTls::Plain(stream));
        };
        // Nagle off before the handshake, as for plain connections after it.
        let _ = stream.set_nodelay(true);
        tls.handshake(stream)
            .await
            .map(MaybeTls::Tls)
            .map_err(|source| LoadError::Handshake {
                addr: self.server_for(index),
                source,
            })
    }

    /// Opens connection number `index` and logs in; returns the client and the Welcome. A user
    /// homed in another datacenter gets [`LoadError::Elsewhere`] with that datacenter's
    /// addresses.
    pub async fn login(
        &self,
        index: usize,
        user: &str,
        token: &str,
        resume_after: u64,
    ) -> Result<(Client, Welcome), LoadError> {
        let attempt = async {
            let mut client = match self.open(index).await? {
                MaybeTls::Plain(stream) => Client::from_stream(stream),
                MaybeTls::Tls(stream) => Client::from_tls(stream),
            };
            client.writer.login(token, resume_after).await?;
            match client.reader.recv().await? {
                Some(ServerFrame {
                    frame: Some(Frame::Welcome(welcome)),
                }) => Ok((client, welcome)),
                Some(ServerFrame {
                    frame: Some(Frame::GoAway(go_away)),
                }) if go_away.reason == i32::from(GoAwayReason::Elsewhere)
                    && !go_away.alternate_addrs.is_empty() =>
                {
                    Err(LoadError::Elsewhere {
                        user: user.to_owned(),
                        alternates: go_away.alternate_addrs,
                    })
                }
                Some(other) => Err(LoadError::LoginRefused {
                    user: user.to_owned(),
                    reason: Refusal(&other).to_string(),
                }),
                None => Err(LoadError::Client(ClientError::Closed)),
            }
        };
        tokio::time::timeout(LOGIN_TIMEOUT, attempt)
            .await
            .unwrap_or_else(|_| {
                Err(LoadError::Timeout {
                    addr: self.server_for(index),
                    user: user.to_owned(),
                    secs: LOGIN_TIMEOUT.as_secs(),
                })
            })
    }
}

impl Dialer {
    /// Opens connection number `index` to an MQTT broker and completes CONNECT/CONNACK.
    pub async fn mqtt_connect(
        &self,
        index: usize,
        client_id: &str,
        keep_alive: Duration,
    ) -> Result<(MqttReader, MqttWriter), LoadError> {
        let attempt = async {
            let stream = self.open(index).await?;
            Ok(mqtt::client::handshake(stream, client_id, keep_alive).await?)
        };
        tokio::time::timeout(LOGIN_TIMEOUT, attempt)
            .await
            .unwrap_or_else(|_| {
                Err(LoadError::Timeout {
                    addr: self.server_for(index),
                    user: client_id.to_owned(),
                    secs: LOGIN_TIMEOUT.as_secs(),
                })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_connections_cycle_through_sixteen_sources() {
        let dialer = Dialer::new("127.0.0.1:7400".parse().unwrap());
        let first = dialer.source_for(0).unwrap();
        assert_eq!(first, "127.0.0.1:0".parse().unwrap());
        assert_eq!(
            dialer.source_for(15).unwrap(),
            "127.0.0.16:0".parse().unwrap()
        );
        assert_eq!(dialer.source_for(16).unwrap(), first);
        // Any 127/8 server counts as loopback.
        let other = Dialer::new("127.0.0.9:7400".parse().unwrap());
        assert_eq!(other.source_for(3).unwrap(), "127.0.0.4:0".parse().unwrap());
    }

    #[test]
    fn remote_and_ipv6_servers_let_the_kernel_choose() {
        assert!(
            Dialer::new("10.0.0.1:7400".parse().unwrap())
                .source_for(0)
                .is_none()
        );
        assert!(
            Dialer::new("[::1]:7400".parse().unwrap())
                .source_for(0)
                .is_none()
        );
    }

    #[test]
    fn phone_i_goes_to_server_i_mod_n() {
        let servers: Vec<SocketAddr> = ["127.0.0.1:7400", "127.0.0.2:7400", "10.0.0.3:7400"]
            .iter()
            .map(|addr| addr.parse().unwrap())
            .collect();
        let dialer = Dialer::spread(&servers).unwrap();
        let picked: Vec<SocketAddr> = (0..7).map(|index| dialer.server_for(index)).collect();
        assert_eq!(
            picked,
            [0, 1, 2, 0, 1, 2, 0].map(|i| servers[i]),
            "round robin over the servers"
        );
        // The source follows the connection's own server.
        assert!(dialer.source_for(1).is_some());
        assert!(dialer.source_for(2).is_none());
        assert!(Dialer::spread(&[]).is_err());
    }

    #[tokio::test]
    async fn a_login_sent_home_names_the_home_datacenter() {
        use bytes::BytesMut;
        use tern::proto::v1::GoAway;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dialer = Dialer::new(listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut login = [0u8; 512];
            let _ = socket.read(&mut login).await.unwrap();
            let go_away = ServerFrame {
                frame: Some(Frame::GoAway(GoAway {
                    reason: GoAwayReason::Elsewhere.into(),
                    reconnect_after_ms: 0,
                    message: "homed in another datacenter".to_owned(),
                    alternate_addrs: vec!["10.78.2.4:7400".to_owned(), "10.78.2.5:7400".to_owned()],
                })),
            };
            let mut out = BytesMut::new();
            tern::frame::encode(&go_away, &mut out);
            socket.write_all(&out).await.unwrap();
        });
        let login = dialer.login(0, "west-user", "token", 0).await;
        server.await.unwrap();
        match login {
            Err(LoadError::Elsewhere { user, alternates }) => {
                assert_eq!(user, "west-user");
                assert_eq!(alternates, ["10.78.2.4:7400", "10.78.2.5:7400"]);
            }
            Err(other) => panic!("not sent elsewhere: {other}"),
            Ok(_) => panic!("logged in"),
        }
    }

    #[tokio::test]
    async fn connections_really_come_from_the_chosen_source() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dialer = Dialer::new(listener.local_addr().unwrap());
        let _stream = dialer.connect(5).await.unwrap();
        let (_, peer) = listener.accept().await.unwrap();
        assert_eq!(peer.ip(), Ipv4Addr::new(127, 0, 0, 6));
    }
}
