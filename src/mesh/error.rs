//! The mesh's errors: starting, calling, casting, and the causes a link ends with.

use std::io;

use super::NodeId;

/// The mesh could not start.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    /// The configuration is unusable (every problem, one per line).
    #[error("invalid mesh configuration: {0}")]
    Config(String),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: String,
        /// The cause.
        source: io::Error,
    },
}

/// A call that did not get its answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The peer is not known to this mesh.
    #[error("unknown peer {0}")]
    UnknownPeer(NodeId),
    /// No link to the peer is up, or it went down while the call was pending.
    #[error("link to the peer is down")]
    LinkDown,
    /// The lane to the peer is full (the peer is slow or stalled).
    #[error("lane to the peer is full")]
    LaneFull,
    /// No reply within the call's deadline.
    #[error("deadline exceeded")]
    DeadlineExceeded,
    /// The peer's handler returned an error, or the peer was too busy to run it.
    #[error("remote error: {0}")]
    Remote(String),
    /// The peer has no handler for the service.
    #[error("no handler for the service on the peer")]
    NoHandler,
    /// This mesh is shutting down.
    #[error("mesh is shutting down")]
    ShuttingDown,
    /// The payload does not fit in a frame.
    #[error("payload exceeds the maximum frame size")]
    TooLarge,
}

/// A cast that was not queued (and so is dropped).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CastError {
    /// The cast lane to the peer is full; the cast was dropped and counted.
    #[error("cast lane to the peer is full")]
    LaneFull,
    /// No link to the peer is up.
    #[error("link to the peer is down")]
    LinkDown,
    /// The peer is not known to this mesh.
    #[error("unknown peer {0}")]
    UnknownPeer(NodeId),
    /// The payload does not fit in a frame.
    #[error("payload exceeds the maximum frame size")]
    TooLarge,
}

/// Why a handshake failed; `reason()` is the label of the refusal metric and of the Refused frame.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The peer belongs to another cluster.
    #[error("peer is in cluster {0:?}")]
    WrongCluster(String),
    /// The peer's proof does not verify: it does not hold the cluster secret.
    #[error("peer's proof does not verify (wrong secret)")]
    BadProof,
    /// The peer speaks another protocol version.
    #[error("peer speaks mesh protocol version {0}")]
    Version(u32),
    /// The peer claims this node's own id.
    #[error("peer claims this node's id")]
    SameId,
    /// A dialed peer answered with another id than the one dialed.
    #[error("dialed node {expected} but node {got} answered")]
    UnexpectedPeer {
        /// The id that was dialed.
        expected: NodeId,
        /// The id that answered.
        got: NodeId,
    },
    /// The peer refused us, with its reason.
    #[error("refused by the peer: {0}")]
    Refused(String),
    /// The peer sent something other than the handshake frame expected, or a bad frame.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The handshake took too long.
    #[error("handshake timed out")]
    Timeout,
    /// The socket failed or closed.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
}

impl HandshakeError {
    /// A short label for metrics and Refused frames.
    pub fn reason(&self) -> &'static str {
        match self {
            HandshakeError::WrongCluster(_) => "cluster",
            HandshakeError::BadProof => "secret",
            HandshakeError::Version(_) => "version",
            HandshakeError::SameId => "same_id",
            HandshakeError::UnexpectedPeer { .. } => "unexpected_peer",
            HandshakeError::Refused(_) => "refused_by_peer",
            HandshakeError::Protocol(_) => "protocol",
            HandshakeError::Timeout => "timeout",
            HandshakeError::Io(_) => "io",
        }
    }

    /// Whether this side refuses the peer (and tells it so) rather than merely losing the socket.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            HandshakeError::WrongCluster(_)
                | HandshakeError::BadProof
                | HandshakeError::Version(_)
                | HandshakeError::SameId
                | HandshakeError::UnexpectedPeer { .. }
        )
    }
}

/// A frame that cannot be decoded; the link that sent it is closed.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix announces more than `MAX_FRAME_BYTES`.
    #[error("frame of {0} bytes exceeds the maximum")]
    TooLarge(usize),
    /// The frame's bytes are not a MeshFrame.
    #[error("undecodable frame: {0}")]
    Decode(#[from] prost::DecodeError),
}
