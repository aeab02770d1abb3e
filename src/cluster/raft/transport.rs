//! The seam between the metadata group and the node-to-node mesh: one request out, one reply
//! back, within a deadline. The node implements it on the mesh; tests on in-process channels.

use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;

/// Carries the metadata group's encoded requests to peers.
pub trait RaftTransport: Send + Sync + 'static {
    /// Sends one encoded request to `peer` and returns its encoded reply, within `deadline`.
    fn call(
        &self,
        peer: u64,
        payload: Bytes,
        deadline: Duration,
    ) -> BoxFuture<'static, Result<Bytes, String>>;

    /// How long since anything came from `peer` on the transport, where it knows (a node is
    /// marked down sooner when its links fell silent before this node led).
    fn silent_for(&self, _peer: u64) -> Option<Duration> {
        None
    }
}
