//! An MQTT connection split into a reading and a writing half, like tern's `Client`: the reader
//! buffers and decodes (cancel-safe, so it can be polled with `now_or_never`), the writer queues
//! packets and writes them in one call. Plain TCP or TLS, as the dialer opened the stream.

use std::time::Duration;

use bytes::BytesMut;
use tern::tls::MaybeTls;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_rustls::client::TlsStream;

use super::MqttError;
use super::codec::{self, Packet};
use crate::tls::Stream;

/// The receiving side of a connection, plain or TLS.
type ReadSide = MaybeTls<OwnedReadHalf, ReadHalf<TlsStream<TcpStream>>>;
/// The sending side of a connection, plain or TLS.
type WriteSide = MaybeTls<OwnedWriteHalf, WriteHalf<TlsStream<TcpStream>>>;

/// Largest packet accepted from the broker.
pub const MAX_PACKET: usize = 1 << 20;
/// Free space kept in the read buffer before reading.
const READ_SPACE: usize = 1024;
/// Growth of the read buffer.
const READ_CHUNK: usize = 16 * 1024;

/// The receiving half.
#[derive(Debug)]
pub struct MqttReader {
    half: ReadSide,
    buf: BytesMut,
}

/// The sending half.
#[derive(Debug)]
pub struct MqttWriter {
    half: WriteSide,
    buf: BytesMut,
}

impl MqttReader {
    /// The next packet; `None` when the broker closed the connection. Cancel-safe: a dropped
    /// call loses nothing that was read.
    pub async fn recv(&mut self) -> Result<Option<Packet>, MqttError> {
        loop {
            if let Some(packet) = codec::decode(&mut self.buf, MAX_PACKET)? {
                return Ok(Some(packet));
            }
            if self.buf.capacity() - self.buf.len() < READ_SPACE {
                self.buf.reserve(READ_CHUNK);
            }
            if self.half.read_buf(&mut self.buf).await? == 0 {
                return Ok(None);
            }
        }
    }
}

impl MqttWriter {
    /// Appends a packet to the outgoing buffer.
    pub fn queue(&mut self, packet: &Packet) {
        codec::encode(packet, &mut self.buf);
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> Result<(), MqttError> {
        if !self.buf.is_empty() {
            let bytes = self.buf.split();
            self.half.write_all(&bytes).await?;
        }
        Ok(())
    }

    /// Queues and writes one packet.
    pub async fn send(&mut self, packet: &Packet) -> Result<(), MqttError> {
        self.queue(packet);
        self.flush().await
    }
}

/// Sends CONNECT (clean session) over `stream` and waits for an accepting CONNACK.
pub async fn handshake(
    stream: Stream,
    client_id: &str,
    keep_alive: Duration,
) -> Result<(MqttReader, MqttWriter), MqttError> {
    let (mut reader, mut writer) = split(stream);
    writer
        .send(&Packet::Connect {
            client_id: client_id.to_owned(),
            keep_alive: u16::try_from(keep_alive.as_secs()).unwrap_or(u16::MAX),
            clean_session: true,
        })
        .await?;
    match reader.recv().await? {
        Some(Packet::ConnAck { code: 0, .. }) => Ok((reader, writer)),
        Some(Packet::ConnAck { code, .. }) => Err(MqttError::Refused(code)),
        Some(other) => Err(MqttError::Unexpected(format!("{other:?} before CONNACK"))),
        None => Err(MqttError::Closed),
    }
}

/// The halves of a connection (Nagle off: a packet goes out when written).
fn split(stream: Stream) -> (MqttReader, MqttWriter) {
    let (read, write) = match stream {
        MaybeTls::Plain(stream) => {
            let _ = stream.set_nodelay(true);
            let (read, write) = stream.into_split();
            (MaybeTls::Plain(read), MaybeTls::Plain(write))
        }
        MaybeTls::Tls(stream) => {
            let _ = stream.get_ref().0.set_nodelay(true);
            let (read, write) = tokio::io::split(stream);
            (MaybeTls::Tls(read), MaybeTls::Tls(write))
        }
    };
    let reader = MqttReader {
        half: read,
        buf: BytesMut::new(),
    };
    let writer = MqttWriter {
        half: write,
        buf: BytesMut::new(),
    };
    (reader, writer)
}

/// Subscribes to one topic filter with `qos` and waits for its SUBACK. Packets that arrive
/// before the SUBACK are an error (nothing is published to a fresh client before it subscribes).
pub async fn subscribe(
    reader: &mut MqttReader,
    writer: &mut MqttWriter,
    topic: &str,
    qos: u8,
) -> Result<(), MqttError> {
    const PACKET_ID: u16 = 1;
    writer
        .send(&Packet::Subscribe {
            packet_id: PACKET_ID,
            filters: vec![(topic.to_owned(), qos)],
        })
        .await?;
    match reader.recv().await? {
        Some(Packet::SubAck { packet_id, codes })
            if packet_id == PACKET_ID && codes.first().is_some_and(|c| *c <= 2) =>
        {
            Ok(())
        }
        Some(Packet::SubAck { .. }) => Err(MqttError::SubscribeRefused(topic.to_owned())),
        Some(other) => Err(MqttError::Unexpected(format!("{other:?} before SUBACK"))),
        None => Err(MqttError::Closed),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use tokio::io::{AsyncRead, AsyncWrite};
    use tokio::net::TcpListener;
    use tokio_rustls::TlsAcceptor;

    /// A broker stand-in that answers CONNECT and SUBSCRIBE, then echoes one PUBLISH back;
    /// under TLS when given an acceptor.
    async fn fake_broker(listener: TcpListener, connack_code: u8, tls: Option<TlsAcceptor>) {
        let (stream, _) = listener.accept().await.unwrap();
        match tls {
            Some(acceptor) => serve(acceptor.accept(stream).await.unwrap(), connack_code).await,
            None => serve(stream, connack_code).await,
        }
    }

    async fn serve(mut stream: impl AsyncRead + AsyncWrite + Unpin, connack_code: u8) {
        let mut buf = BytesMut::new();
        loop {
            let Some(packet) = codec::decode(&mut buf, MAX_PACKET).unwrap() else {
                if stream.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                    return;
                }
                continue;
            };
            let mut out = BytesMut::new();
            match packet {
                Packet::Connect { .. } => codec::encode(
                    &Packet::ConnAck {
                        session_present: false,
                        code: connack_code,
                    },
                    &mut out,
                ),
                Packet::Subscribe { packet_id, .. } => codec::encode(
                    &Packet::SubAck {
                        packet_id,
                        codes: vec![1],
                    },
                    &mut out,
                ),
                Packet::Publish {
                    packet_id: Some(id),
                    ..
                } => {
                    codec::encode(&Packet::PubAck { packet_id: id }, &mut out);
                    codec::encode(&packet, &mut out);
                }
                _ => {}
            }
            stream.write_all(&out).await.unwrap();
        }
    }

    async fn round_trip(stream: Stream) {
        let (mut reader, mut writer) = handshake(stream, "c1", Duration::from_secs(60))
            .await
            .unwrap();
        subscribe(&mut reader, &mut writer, "tl/c1", 1)
            .await
            .unwrap();
        let publish = Packet::Publish {
            topic: "tl/c1".to_owned(),
            qos: 1,
            packet_id: Some(9),
            dup: false,
            retain: false,
            payload: bytes::Bytes::from_static(b"hello"),
        };
        writer.send(&publish).await.unwrap();
        assert_eq!(
            reader.recv().await.unwrap(),
            Some(Packet::PubAck { packet_id: 9 })
        );
        assert_eq!(reader.recv().await.unwrap(), Some(publish));
    }

    #[tokio::test]
    async fn connect_subscribe_publish_and_receive() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(fake_broker(listener, 0, None));
        round_trip(MaybeTls::Plain(TcpStream::connect(addr).await.unwrap())).await;
    }

    #[tokio::test]
    async fn the_same_over_tls_with_a_certificate_from_tern_certs() {
        let dir = tempfile::tempdir().unwrap();
        let made = tern::certs::make(&tern::certs::CertsRequest {
            dir: dir.path().to_owned(),
            nodes: vec!["tern-1".into()],
            hosts: Vec::new(),
            valid_for: Duration::from_secs(3600),
            backdate: Duration::from_secs(60),
        })
        .unwrap();
        let (_, cert, key) = &made.nodes[0];
        let server = tern::tls::phone_config(cert, key, &[]).unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(server));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(fake_broker(listener, 0, Some(acceptor)));
        let client = tern::client::ClientTls::from_ca_file(&made.ca_cert, "127.0.0.1").unwrap();
        let stream = client
            .handshake(TcpStream::connect(addr).await.unwrap())
            .await
            .unwrap();
        round_trip(MaybeTls::Tls(stream)).await;
    }

    #[tokio::test]
    async fn a_refusing_connack_is_an_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(fake_broker(listener, 5, None));
        let stream = MaybeTls::Plain(TcpStream::connect(addr).await.unwrap());
        let refused = handshake(stream, "c1", Duration::from_secs(60)).await;
        assert!(matches!(refused, Err(MqttError::Refused(5))));
    }
}
