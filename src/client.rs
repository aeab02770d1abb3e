//! A minimal phone: connects over TCP and speaks the v1 protocol. Used by the black-box tests,
//! the load generator and the interactive client. [`Client`] talks to one address;
//! [`Roaming`] logs in at any of several and moves to the next one when a node fails.

pub mod refusal;
pub mod roaming;
pub mod servers;
pub mod tls;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio_rustls::client::TlsStream;

use crate::frame::{self, FrameError};
use crate::proto::PROTOCOL_VERSION;
use crate::proto::v1::{
    ClientFrame, DeviceAck, GroupReceipt, GroupRequest, GroupSend, Login, MessageKind, Ping,
    PresenceSubscribe, PushRequest, Receipt, ReceiptKind, Send, ServerFrame, Typing, Welcome,
    client_frame, group_request, push_request, server_frame,
};
pub use refusal::Refusal;
pub use roaming::Roaming;
pub use servers::ServerList;
pub use tls::ClientTls;

use crate::tls::MaybeTls;

/// The receiving side of a connection, plain or TLS.
type ReadSide = MaybeTls<OwnedReadHalf, ReadHalf<TlsStream<TcpStream>>>;
/// The sending side of a connection, plain or TLS.
type WriteSide = MaybeTls<OwnedWriteHalf, WriteHalf<TlsStream<TcpStream>>>;

/// Largest frame the client accepts from a server.
pub const CLIENT_MAX_FRAME: u32 = 16 * 1024 * 1024;

/// What can go wrong on the client side.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Socket trouble.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The server sent something undecodable.
    #[error("frame: {0}")]
    Frame(#[from] FrameError),
    /// The server closed the connection.
    #[error("connection closed by the server")]
    Closed,
    /// The server answered Login with something other than Welcome.
    #[error("login refused: {}", Refusal(.0))]
    LoginRefused(Box<ServerFrame>),
    /// No server address to connect to.
    #[error("no server address")]
    NoServer,
    /// Connecting and logging in took longer than allowed.
    #[error("no Welcome within {0:?}")]
    TimedOut(std::time::Duration),
    /// Every attempt failed; the last failure.
    #[error("gave up after {attempts} attempts: {last}")]
    GaveUp {
        /// Attempts made.
        attempts: u32,
        /// Why the last one failed.
        last: Box<ClientError>,
    },
}

/// A connected phone (both directions).
pub struct Client {
    /// Incoming half.
    pub reader: ClientReader,
    /// Outgoing half.
    pub writer: ClientWriter,
}

/// The receiving half of a phone connection.
pub struct ClientReader {
    half: ReadSide,
    buf: BytesMut,
}

/// The sending half of a phone connection.
pub struct ClientWriter {
    half: WriteSide,
    buf: BytesMut,
}

impl Client {
    /// Opens a TCP connection (no login yet).
    pub async fn connect(addr: impl ToSocketAddrs) -> Result<Self, ClientError> {
        Self::connect_with(addr, None).await
    }

    /// Opens a TCP connection, under TLS when `tls` is given (no login yet).
    pub async fn connect_with(
        addr: impl ToSocketAddrs,
        tls: Option<&ClientTls>,
    ) -> Result<Self, ClientError> {
        let stream = TcpStream::connect(addr).await?;
        match tls {
            Some(tls) => {
                let _ = stream.set_nodelay(true);
                Ok(Self::from_tls(tls.handshake(stream).await?))
            }
            None => Ok(Self::from_stream(stream)),
        }
    }

    /// Wraps an already connected stream.
    pub fn from_stream(stream: TcpStream) -> Self {
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        Self::from_halves(MaybeTls::Plain(read), MaybeTls::Plain(write))
    }

    /// Wraps a connection whose TLS handshake is done.
    pub fn from_tls(stream: TlsStream<TcpStream>) -> Self {
        let (read, write) = tokio::io::split(stream);
        Self::from_halves(MaybeTls::Tls(read), MaybeTls::Tls(write))
    }

    fn from_halves(read: ReadSide, write: WriteSide) -> Self {
        Self {
            reader: ClientReader {
                half: read,
                buf: BytesMut::new(),
            },
            writer: ClientWriter {
                half: write,
                buf: BytesMut::new(),
            },
        }
    }

    /// Connects and logs in; returns the client and the server's Welcome.
    pub async fn login(
        addr: impl ToSocketAddrs,
        token: &str,
        resume_after: u64,
    ) -> Result<(Self, Welcome), ClientError> {
        Self::login_with(addr, None, token, resume_after).await
    }

    /// [`Client::login`], under TLS when `tls` is given.
    pub async fn login_with(
        addr: impl ToSocketAddrs,
        tls: Option<&ClientTls>,
        token: &str,
        resume_after: u64,
    ) -> Result<(Self, Welcome), ClientError> {
        let mut client = Self::connect_with(addr, tls).await?;
        client.writer.login(token, resume_after).await?;
        match client.reader.recv().await? {
            Some(ServerFrame {
                frame: Some(server_frame::Frame::Welcome(welcome)),
            }) => Ok((client, welcome)),
            Some(other) => Err(ClientError::LoginRefused(Box::new(other))),
            None => Err(ClientError::Closed),
        }
    }

    /// Sends one frame.
    pub async fn send(&mut self, frame: client_frame::Frame) -> Result<(), ClientError> {
        self.writer.send(frame).await
    }

    /// Receives the next frame; `None` when the server closed the connection.
    pub async fn recv(&mut self) -> Result<Option<ServerFrame>, ClientError> {
        self.reader.recv().await
    }

    /// Splits into independently usable halves.
    pub fn split(self) -> (ClientReader, ClientWriter) {
        (self.reader, self.writer)
    }
}

impl ClientReader {
    /// Receives the next frame; `None` when the server closed the connection cleanly.
    pub async fn recv(&mut self) -> Result<Option<ServerFrame>, ClientError> {
        loop {
            if let Some(payload) = frame::split_frame(&mut self.buf, CLIENT_MAX_FRAME)? {
                return Ok(Some(frame::decode(payload)?));
            }
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(64 * 1024);
            }
            if self.half.read_buf(&mut self.buf).await? == 0 {
                return Ok(None);
            }
        }
    }

    /// Receives the next frame's payload, a `ServerFrame` with its oneof filled in.
    pub async fn recv_frame(&mut self) -> Result<server_frame::Frame, ClientError> {
        loop {
            match self.recv().await? {
                Some(ServerFrame { frame: Some(frame) }) => return Ok(frame),
                Some(ServerFrame { frame: None }) => continue,
                None => return Err(ClientError::Closed),
            }
        }
    }
}

impl ClientWriter {
    /// Sends one frame.
    pub async fn send(&mut self, frame: client_frame::Frame) -> Result<(), ClientError> {
        self.queue(frame);
        self.flush().await
    }

    /// Appends one frame to the outgoing buffer without writing it.
    pub fn queue(&mut self, frame: client_frame::Frame) {
        frame::encode(&ClientFrame { frame: Some(frame) }, &mut self.buf);
    }

    /// Writes every queued frame.
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        let bytes = self.buf.split();
        self.half.write_all(&bytes).await?;
        Ok(())
    }

    /// Writes raw bytes (for tests of malformed input).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.half.write_all(bytes).await?;
        Ok(())
    }

    /// Writes a length prefix and an arbitrary payload (for tests of malformed input).
    pub async fn send_raw_frame(&mut self, payload: &[u8]) -> Result<(), ClientError> {
        let mut buf = BytesMut::with_capacity(4 + payload.len());
        buf.put_u32(u32::try_from(payload.len()).unwrap_or(u32::MAX));
        buf.put_slice(payload);
        self.send_raw(&buf).await
    }

    /// Sends Login.
    pub async fn login(&mut self, token: &str, resume_after: u64) -> Result<(), ClientError> {
        self.send(client_frame::Frame::Login(Login {
            protocol_version: PROTOCOL_VERSION,
            token: token.to_owned(),
            resume_after,
            user_agent: concat!("tern-client/", env!("CARGO_PKG_VERSION")).to_owned(),
        }))
        .await
    }

    /// Sends a text message.
    pub async fn send_text(
        &mut self,
        client_msg_id: &str,
        to_user: &str,
        body: &str,
    ) -> Result<(), ClientError> {
        self.send(text_frame(client_msg_id, to_user, body.as_bytes()))
            .await
    }

    /// Acknowledges every entry up to `up_to_seq`.
    pub async fn ack(&mut self, up_to_seq: u64) -> Result<(), ClientError> {
        self.send(client_frame::Frame::Ack(DeviceAck { up_to_seq }))
            .await
    }

    /// Sends a delivered/read receipt.
    pub async fn receipt(
        &mut self,
        client_msg_id: &str,
        to_user: &str,
        kind: ReceiptKind,
        up_to_seq: u64,
    ) -> Result<(), ClientError> {
        self.send(client_frame::Frame::Receipt(Receipt {
            client_msg_id: client_msg_id.to_owned(),
            to_user: to_user.to_owned(),
            kind: kind.into(),
            up_to_seq,
        }))
        .await
    }

    /// Sends a group request (`op`) tagged `request_id`.
    pub async fn group_request(
        &mut self,
        request_id: u64,
        op: group_request::Op,
    ) -> Result<(), ClientError> {
        self.send(client_frame::Frame::GroupRequest(GroupRequest {
            request_id,
            op: Some(op),
        }))
        .await
    }

    /// Sends a push registration request (`op`) tagged `request_id`.
    pub async fn push_request(
        &mut self,
        request_id: u64,
        op: push_request::Op,
    ) -> Result<(), ClientError> {
        self.send(client_frame::Frame::PushRequest(PushRequest {
            request_id,
            op: Some(op),
        }))
        .await
    }

    /// Sends a text message to a group.
    pub async fn send_group_text(
        &mut self,
        client_msg_id: &str,
        group_id: &str,
        body: &str,
    ) -> Result<(), ClientError> {
        self.send(client_frame::Frame::GroupSend(GroupSend {
            client_msg_id: client_msg_id.to_owned(),
            group_id: group_id.to_owned(),
            kind: MessageKind::Text.into(),
            body: Bytes::copy_from_slice(body.as_bytes()),
        }))
        .await
    }

    /// Reports the group's entries up to `up_to_group_seq` as received or read.
    pub async fn group_receipt(
        &mut self,
        group_id: &str,
        kind: ReceiptKind,
        up_to_group_seq: u64,
    ) -> Result<(), ClientError> {
        self.send(client_frame::Frame::GroupReceipt(GroupReceipt {
            group_id: group_id.to_owned(),
            kind: kind.into(),
            up_to_group_seq,
        }))
        .await
    }

    /// Sends a typing indicator to a group's online members.
    pub async fn group_typing(&mut self, group_id: &str, typing: bool) -> Result<(), ClientError> {
        self.send(client_frame::Frame::Typing(Typing {
            group_id: group_id.to_owned(),
            to_user: String::new(),
            typing,
        }))
        .await
    }

    /// Sends a typing indicator.
    pub async fn typing(&mut self, to_user: &str, typing: bool) -> Result<(), ClientError> {
        self.send(client_frame::Frame::Typing(Typing {
            group_id: String::new(),
            to_user: to_user.to_owned(),
            typing,
        }))
        .await
    }

    /// Replaces the presence subscriptions.
    pub async fn subscribe_presence(&mut self, users: &[&str]) -> Result<(), ClientError> {
        self.send(client_frame::Frame::PresenceSubscribe(PresenceSubscribe {
            users: users.iter().map(|u| (*u).to_owned()).collect(),
        }))
        .await
    }

    /// Sends a Ping.
    pub async fn ping(&mut self, nonce: u64) -> Result<(), ClientError> {
        self.send(client_frame::Frame::Ping(Ping { nonce })).await
    }
}

/// A `Send` frame carrying a text body.
pub fn text_frame(client_msg_id: &str, to_user: &str, body: &[u8]) -> client_frame::Frame {
    client_frame::Frame::Send(Send {
        client_msg_id: client_msg_id.to_owned(),
        to_user: to_user.to_owned(),
        kind: MessageKind::Text.into(),
        body: bytes::Bytes::copy_from_slice(body),
    })
}
