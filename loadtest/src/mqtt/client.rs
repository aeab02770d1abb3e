//! An MQTT connection split into a reading and a writing half, like tern's `Client`: the reader
//! buffers and decodes (cancel-safe, so it can be polled with `now_or_never`), the writer queues
//! packets and writes them in one call.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::MqttError;
use super::codec::{self, Packet};

/// Largest packet accepted from the broker.
pub const MAX_PACKET: usize = 1 << 20;
/// Free space kept in the read buffer before reading.
const READ_SPACE: usize = 1024;
/// Growth of the read buffer.
const READ_CHUNK: usize = 16 * 1024;

/// The receiving half.
#[derive(Debug)]
pub struct MqttReader {
    half: OwnedReadHalf,
    buf: BytesMut,
}

/// The sending half.
#[derive(Debug)]
pub struct MqttWriter {
    half: OwnedWriteHalf,
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
    stream: TcpStream,
    client_id: &str,
    keep_alive: Duration,
) -> Result<(MqttReader, MqttWriter), MqttError> {
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    let mut reader = MqttReader {
        half: read,
        buf: BytesMut::new(),
    };
    let mut writer = MqttWriter {
        half: write,
        buf: BytesMut::new(),
    };
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
    use super::*;
    use tokio::net::TcpListener;

    /// A broker stand-in that answers CONNECT and SUBSCRIBE, then echoes one PUBLISH back.
    async fn fake_broker(listener: TcpListener, connack_code: u8) {
        let (stream, _) = listener.accept().await.unwrap();
        let (read, mut write) = stream.into_split();
        let mut reader = MqttReader {
            half: read,
            buf: BytesMut::new(),
        };
        while let Ok(Some(packet)) = reader.recv().await {
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
            write.write_all(&out).await.unwrap();
        }
    }

    #[tokio::test]
    async fn connect_subscribe_publish_and_receive() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(fake_broker(listener, 0));
        let stream = TcpStream::connect(addr).await.unwrap();
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
    async fn a_refusing_connack_is_an_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(fake_broker(listener, 5));
        let stream = TcpStream::connect(addr).await.unwrap();
        let refused = handshake(stream, "c1", Duration::from_secs(60)).await;
        assert!(matches!(refused, Err(MqttError::Refused(5))));
    }
}
