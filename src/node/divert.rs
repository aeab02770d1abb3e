//! The seam where a node in a cluster sends an operation to the node that owns its key.
//! A node without `[cluster]` has no diverter: every operation runs on its own workers.

use crate::mailbox::MailboxOp;
use crate::message::Id;

/// Decides, per operation, whether it runs here.
pub trait Divert: Send + Sync {
    /// Takes `op` when it must run on another node (sending it there, or answering it as
    /// unavailable when no node can serve it now); gives it back when it runs here.
    fn divert(&self, op: MailboxOp) -> Option<MailboxOp>;
    /// The session of `user` on connection `conn_id` of this node ended: its owner forgets it.
    fn logged_out(&self, user: &Id, conn_id: u64);
    /// Registers the session of `user`'s `device` on connection `conn_id` again with its owner
    /// (after a link came back or the map changed, the owner may have lost it or be another).
    fn reregister(&self, user: &Id, device: &Id, conn_id: u64);
}
