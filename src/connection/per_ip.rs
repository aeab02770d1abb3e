//! The per-address abuse limits where a connection meets them: connections per source address
//! at accept, logins per source address at Login (before the token is verified). Each refusal
//! is answered with its error frame and the connection closed. The tables are in
//! [`crate::limits`].

use std::net::SocketAddr;

use bytes::BytesMut;

use crate::connection::Conn;
use crate::frame;
use crate::limits::{Refused, SourceKey};
use crate::metrics as names;
use crate::node::Node;
use crate::session::wire;

/// Counts a connection just accepted from `peer`; when its address already has
/// `limits.max_connections_per_ip` open, answers it `TOO_MANY_CONNECTIONS`, closes it and
/// returns `None`. The source returned goes to [`release`] when the connection ends.
pub fn admit(node: &Node, conn: &Conn, peer: SocketAddr) -> Option<SourceKey> {
    let source = SourceKey::of(peer.ip());
    match node.abuse.admit_connection(source) {
        Ok(()) => Some(source),
        Err(refused) => {
            metrics::counter!(names::ERRORS, "kind" => "too_many_connections").increment(1);
            refuse_and_close(conn, &refused);
            None
        }
    }
}

/// Releases the count of a connection [`admit`] let in from `source`.
pub fn release(node: &Node, source: SourceKey) {
    node.abuse.release_connection(source);
}

/// Writes the refusal's error frame (best effort: the socket is fresh, so it fits) and closes,
/// unless the connection was closed already.
pub fn refuse_and_close(conn: &Conn, refused: &Refused) {
    let mut out = BytesMut::new();
    frame::encode(&wire::server_frame(wire::abuse_error(refused)), &mut out);
    if conn.close_with(&out) {
        let kind = wire::error_kind(wire::abuse_code(refused));
        metrics::counter!(names::DISCONNECTS, "reason" => kind).increment(1);
    }
}
