//! The link handshake: both sides send Hello (version, cluster, id, a fresh 32-byte nonce), check
//! it, then send a Proof: HMAC-SHA256 keyed with the cluster secret over the whole transcript and
//! the sender's role, so a proof cannot be replayed on another connection nor reflected back to
//! its sender. Proofs are verified in constant time. A refused peer gets a Refused frame first.

use bytes::BytesMut;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::NodeId;
use super::config::{HANDSHAKE_TIMEOUT, PROTOCOL_VERSION};
use super::error::HandshakeError;
use super::frame;
use crate::proto::mesh::{Hello, MeshFrame, Proof, Refused, mesh_frame::Kind};

/// Largest handshake frame accepted: the peer is not authenticated yet, so it gets little.
const MAX_HANDSHAKE_FRAME: usize = 4096;
/// Bytes of each side's nonce.
pub const NONCE_BYTES: usize = 32;
/// Domain separation of the proof.
const PROOF_TAG: &[u8] = b"tern-mesh-v1";

/// Which end of the connection a side is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Opened the connection.
    Dialer,
    /// Accepted it.
    Acceptor,
}

impl Role {
    fn tag(self) -> &'static [u8] {
        match self {
            Role::Dialer => b"dialer",
            Role::Acceptor => b"acceptor",
        }
    }
}

/// Who this side is.
#[derive(Clone, Debug)]
pub struct Identity {
    /// Cluster name.
    pub cluster: String,
    /// This node's id.
    pub node: NodeId,
    /// The cluster secret.
    pub secret: Vec<u8>,
    /// The address this node's mesh listens on (told to the peer).
    pub listen: String,
    /// Drawn once per process start (told to the peer).
    pub incarnation: u64,
}

/// The transcript a proof covers.
#[derive(Clone, Copy, Debug)]
pub struct Transcript<'a> {
    /// Cluster name.
    pub cluster: &'a str,
    /// The dialer's node id.
    pub dialer: NodeId,
    /// The acceptor's node id.
    pub acceptor: NodeId,
    /// The dialer's nonce.
    pub dialer_nonce: &'a [u8],
    /// The acceptor's nonce.
    pub acceptor_nonce: &'a [u8],
}

impl Transcript<'_> {
    fn mac(&self, secret: &[u8], sender: Role) -> Hmac<Sha256> {
        // HMAC takes keys of any length; the error case cannot happen.
        let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(secret) {
            Ok(mac) => mac,
            Err(_) => <Hmac<Sha256> as Mac>::new(&Default::default()),
        };
        // Variable-length fields are length-prefixed so that no two transcripts collide.
        for part in [PROOF_TAG, sender.tag(), self.cluster.as_bytes()] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac.update(&self.dialer.to_be_bytes());
        mac.update(&self.acceptor.to_be_bytes());
        for part in [self.dialer_nonce, self.acceptor_nonce] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac
    }

    /// The proof the side in role `sender` sends.
    pub fn proof(&self, secret: &[u8], sender: Role) -> Vec<u8> {
        self.mac(secret, sender).finalize().into_bytes().to_vec()
    }

    /// Whether `proof` is the one the side in role `sender` must send (constant time).
    pub fn verify(&self, secret: &[u8], sender: Role, proof: &[u8]) -> bool {
        self.mac(secret, sender).verify_slice(proof).is_ok()
    }
}

/// A peer that completed the handshake.
#[derive(Debug)]
pub struct Authenticated {
    /// Its node id.
    pub node: NodeId,
    /// The address its mesh listens on, as it says.
    pub listen: String,
    /// Its process's incarnation, as it says.
    pub incarnation: u64,
    /// Bytes it sent after its proof (the first frames of the link).
    pub leftover: BytesMut,
}

/// Runs the handshake on a fresh connection, bounded by `HANDSHAKE_TIMEOUT`. A dialer passes
/// the id it dialed as `expected`. On a refusal the peer has been sent a Refused frame.
pub async fn handshake<S>(
    stream: &mut S,
    role: Role,
    me: &Identity,
    expected: Option<NodeId>,
) -> Result<Authenticated, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, exchange(stream, role, me, expected)).await {
        Ok(result) => result,
        Err(_) => Err(HandshakeError::Timeout),
    }
}

async fn exchange<S>(
    stream: &mut S,
    role: Role,
    me: &Identity,
    expected: Option<NodeId>,
) -> Result<Authenticated, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut nonce = [0u8; NONCE_BYTES];
    getrandom::fill(&mut nonce)
        .map_err(|e| HandshakeError::Io(std::io::Error::other(e.to_string())))?;
    let hello = Kind::Hello(Hello {
        version: PROTOCOL_VERSION,
        cluster: me.cluster.clone(),
        node: me.node,
        nonce: nonce.to_vec().into(),
        listen: me.listen.clone(),
        incarnation: me.incarnation,
    });
    send(stream, hello).await?;
    let mut buf = BytesMut::with_capacity(512);
    let theirs = match receive(stream, &mut buf).await? {
        Kind::Hello(hello) => hello,
        other => return Err(unexpected(other)),
    };
    let check = if theirs.version != PROTOCOL_VERSION {
        Err(HandshakeError::Version(theirs.version))
    } else if theirs.cluster != me.cluster {
        Err(HandshakeError::WrongCluster(theirs.cluster.clone()))
    } else if theirs.node == me.node {
        Err(HandshakeError::SameId)
    } else if theirs.nonce.len() != NONCE_BYTES {
        Err(HandshakeError::Protocol(
            "nonce of the wrong length".to_owned(),
        ))
    } else {
        match expected {
            Some(expected) if expected != theirs.node => Err(HandshakeError::UnexpectedPeer {
                expected,
                got: theirs.node,
            }),
            _ => Ok(()),
        }
    };
    if let Err(err) = check {
        return Err(refuse(stream, err).await);
    }
    let (dialer, acceptor, dialer_nonce, acceptor_nonce) = match role {
        Role::Dialer => (me.node, theirs.node, &nonce[..], &theirs.nonce[..]),
        Role::Acceptor => (theirs.node, me.node, &theirs.nonce[..], &nonce[..]),
    };
    let transcript = Transcript {
        cluster: &me.cluster,
        dialer,
        acceptor,
        dialer_nonce,
        acceptor_nonce,
    };
    let proof = transcript.proof(&me.secret, role);
    send(stream, Kind::Proof(Proof { mac: proof.into() })).await?;
    let their_proof = match receive(stream, &mut buf).await? {
        Kind::Proof(proof) => proof,
        other => return Err(unexpected(other)),
    };
    let their_role = match role {
        Role::Dialer => Role::Acceptor,
        Role::Acceptor => Role::Dialer,
    };
    if !transcript.verify(&me.secret, their_role, &their_proof.mac) {
        return Err(refuse(stream, HandshakeError::BadProof).await);
    }
    Ok(Authenticated {
        node: theirs.node,
        listen: theirs.listen,
        incarnation: theirs.incarnation,
        leftover: buf,
    })
}

fn unexpected(kind: Kind) -> HandshakeError {
    match kind {
        Kind::Refused(refused) => HandshakeError::Refused(refused.reason),
        _ => HandshakeError::Protocol("unexpected frame during the handshake".to_owned()),
    }
}

/// Tells the peer why it is refused (best effort) and returns the error.
async fn refuse<S: AsyncWrite + Unpin>(stream: &mut S, err: HandshakeError) -> HandshakeError {
    let reason = err.reason().to_owned();
    let _ = send(stream, Kind::Refused(Refused { reason })).await;
    let _ = stream.shutdown().await;
    err
}

async fn send<S: AsyncWrite + Unpin>(stream: &mut S, kind: Kind) -> Result<(), HandshakeError> {
    let bytes = frame::encode(&MeshFrame { kind: Some(kind) });
    stream.write_all(&bytes).await?;
    stream.flush().await?;
    Ok(())
}

async fn receive<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> Result<Kind, HandshakeError> {
    loop {
        match frame::decode(buf, MAX_HANDSHAKE_FRAME) {
            Ok(Some(MeshFrame { kind: Some(kind) })) => return Ok(kind),
            Ok(Some(MeshFrame { kind: None })) => {
                return Err(HandshakeError::Protocol("empty frame".to_owned()));
            }
            Ok(None) => {}
            Err(err) => return Err(HandshakeError::Protocol(err.to_string())),
        }
        if buf.capacity() == buf.len() {
            buf.reserve(512);
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(HandshakeError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transcript<'a>(dialer_nonce: &'a [u8], acceptor_nonce: &'a [u8]) -> Transcript<'a> {
        Transcript {
            cluster: "c1",
            dialer: 1,
            acceptor: 2,
            dialer_nonce,
            acceptor_nonce,
        }
    }

    #[test]
    fn a_proof_verifies_only_with_the_same_key_role_and_transcript() {
        let t = transcript(&[1; 32], &[2; 32]);
        let proof = t.proof(b"secret-secret-secret", Role::Dialer);
        assert!(t.verify(b"secret-secret-secret", Role::Dialer, &proof));
        assert!(!t.verify(b"another-secret-entirely", Role::Dialer, &proof));
        // A dialer's proof reflected back as the acceptor's does not verify.
        assert!(!t.verify(b"secret-secret-secret", Role::Acceptor, &proof));
        // Nor does it verify for another connection's nonces.
        let other = transcript(&[1; 32], &[3; 32]);
        assert!(!other.verify(b"secret-secret-secret", Role::Dialer, &proof));
        assert!(!t.verify(b"secret-secret-secret", Role::Dialer, &proof[..31]));
    }

    fn identity(cluster: &str, node: NodeId, secret: &[u8]) -> Identity {
        Identity {
            cluster: cluster.to_owned(),
            node,
            secret: secret.to_vec(),
            listen: String::new(),
            incarnation: node,
        }
    }

    async fn pair(
        dialer: Identity,
        acceptor: Identity,
    ) -> (
        Result<Authenticated, HandshakeError>,
        Result<Authenticated, HandshakeError>,
    ) {
        let (mut a, mut b) = tokio::io::duplex(64 * 1024);
        let expected = acceptor.node;
        tokio::join!(
            handshake(&mut a, Role::Dialer, &dialer, Some(expected)),
            handshake(&mut b, Role::Acceptor, &acceptor, None),
        )
    }

    #[tokio::test]
    async fn matching_sides_authenticate_each_other() {
        let (d, a) = pair(identity("c", 1, b"k"), identity("c", 2, b"k")).await;
        assert_eq!(d.expect("dialer side").node, 2);
        assert_eq!(a.expect("acceptor side").node, 1);
    }

    #[tokio::test]
    async fn a_wrong_secret_or_cluster_or_id_is_refused_by_both_sides() {
        let (d, a) = pair(identity("c", 1, b"k1"), identity("c", 2, b"k2")).await;
        assert!(matches!(
            d,
            Err(HandshakeError::BadProof | HandshakeError::Refused(_))
        ));
        assert!(matches!(
            a,
            Err(HandshakeError::BadProof | HandshakeError::Refused(_))
        ));
        let (d, a) = pair(identity("c", 1, b"k"), identity("other", 2, b"k")).await;
        assert!(matches!(d, Err(HandshakeError::WrongCluster(_))));
        assert!(matches!(a, Err(HandshakeError::WrongCluster(_))));
        let (d, a) = pair(identity("c", 2, b"k"), identity("c", 2, b"k")).await;
        assert!(matches!(d, Err(HandshakeError::SameId)));
        assert!(matches!(a, Err(HandshakeError::SameId)));
    }
}
