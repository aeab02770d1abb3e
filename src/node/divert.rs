//! The seam where a node in a cluster sends an operation to the node that owns its key.
//! A node without `[cluster]` has no diverter: every operation runs on its own workers.

use crate::mailbox::MailboxOp;
use crate::mailbox::revocation::Revoked;
use crate::message::Id;

/// How registering a session again with its owner ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reregistration {
    /// The owner took it, or there was nothing to register.
    Settled,
    /// The owner did not answer: try again.
    Failed,
    /// The owner refused it: the session's token was revoked meanwhile.
    Revoked(Revoked),
}

/// Decides, per operation, whether it runs here.
pub trait Divert: Send + Sync {
    /// Takes `op` when it must run on another node (sending it there, or answering it as
    /// unavailable when no node can serve it now); gives it back when it runs here.
    fn divert(&self, op: MailboxOp) -> Option<MailboxOp>;
    /// The session of `user` on connection `conn_id` of this node ended: its owner forgets it.
    fn logged_out(&self, user: &Id, conn_id: u64);
    /// Registers the session of `user`'s `device` on connection `conn_id` again with its owner
    /// (after a link came back or the map changed, the owner may have lost it or be another),
    /// then runs `done` with how that ended: settled once the owner took it, or at once when
    /// there is nothing to register (this node owns `user`, or nobody can serve it now and a
    /// map change will bring another resync); failed when the owner did not answer; revoked
    /// when the owner refused the session's token (issued at `token_issued_at`).
    fn reregister(
        &self,
        user: &Id,
        device: &Id,
        conn_id: u64,
        token_issued_at: u64,
        done: Box<dyn FnOnce(Reregistration) + Send>,
    );
    /// Whether this node owns `user` (its presence changes are announced by its owner only).
    fn owns(&self, user: &Id) -> bool;
    /// Sends a typing notice to `to_user`'s owner, which relays it to all of `to_user`'s
    /// sessions; false when this node owns `to_user` (relay it here).
    fn relay_typing(&self, from_user: &Id, to_user: &Id, typing: bool) -> bool;
    /// Watches, for the session of `watcher` on `conn_id`, the presence of those of `users`
    /// that other nodes own (their owners answer with it); returns the ones owned here.
    fn watch_presence(&self, watcher: &Id, conn_id: u64, users: &[Id]) -> Vec<Id>;
    /// Stops the watches of `watcher`'s connection `conn_id` on those of `users` that other
    /// nodes own.
    fn unwatch_presence(&self, watcher: &Id, conn_id: u64, users: &[Id]);
    /// When `user` is homed in another datacenter: the client addresses of its nodes (the
    /// login is sent there). `None` for users homed here, and always without `[wan]`.
    fn home_elsewhere(&self, _user: &str) -> Option<Vec<String>> {
        None
    }
}
