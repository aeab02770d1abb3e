//! Reply addresses of the mailbox service across nodes: [`CallSink`] turns the one event a
//! local operation answers with into the answer of a mesh call, and [`RemoteSink`] carries the
//! pushes of a user's owner to that user's session on another node.

use std::fmt;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::oneshot;

use super::outbox::{Outbox, Outboxes, Recipient};
use crate::mailbox::record::encode_appended;
use crate::mailbox::{EventSink, MailboxEvent};
use crate::mesh::{Mesh, NodeId, Transport};
use crate::message::{Entry, GroupEntry, Id, Payload};
use crate::proto::mesh as pb;
use crate::registry::PushBudget;

/// Takes the first event sent to it (an operation run for a peer answers with one).
pub struct CallSink(Mutex<Option<oneshot::Sender<MailboxEvent>>>);

impl CallSink {
    /// A sink and the receiver of its event.
    pub fn new() -> (Arc<CallSink>, oneshot::Receiver<MailboxEvent>) {
        let (sender, receiver) = oneshot::channel();
        (Arc::new(CallSink(Mutex::new(Some(sender)))), receiver)
    }
}

impl fmt::Debug for CallSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CallSink")
    }
}

impl EventSink for CallSink {
    fn send(&self, event: MailboxEvent) -> bool {
        let sender = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        sender.is_some_and(|sender| sender.send(event).is_ok())
    }
}

/// A session of `owner` on connection `conn_id` of node `node`, as its owner's registry (or a
/// watched user's owner's presence table) holds it: pushes, device counts, replacements,
/// typing and presence notices go to that node's [`Outbox`], which sends what it gathered as one
/// cast (an event it cannot send is made up for by a `MissedPushes` notice, so the session reads
/// its mailbox).
pub struct RemoteSink<T: Transport> {
    outbox: Arc<Outbox<T>>,
    node: NodeId,
    /// The incarnation of `node`'s process when the session registered.
    incarnation: u64,
    owner: Id,
    to: Arc<Recipient>,
    /// The push budget of the registry entry: a push handed to the outbox is no longer queued
    /// here (the session's own node budgets its queue).
    budget: Arc<PushBudget>,
}

impl<T: Transport> RemoteSink<T> {
    /// The address of `owner`'s session on `conn_id` of `node` (whose process is the one
    /// the mesh last heard announce itself), sending through `outboxes`.
    pub fn new(
        outboxes: &Outboxes<T>,
        mesh: &Mesh<T>,
        node: NodeId,
        owner: Id,
        conn_id: u64,
        budget: Arc<PushBudget>,
    ) -> RemoteSink<T> {
        RemoteSink {
            outbox: outboxes.to(node),
            node,
            incarnation: mesh.peer_incarnation(node).unwrap_or(0),
            to: Arc::new(Recipient::new(owner.clone(), conn_id)),
            owner,
            budget,
        }
    }
}

impl<T: Transport> fmt::Debug for RemoteSink<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteSink")
            .field("node", &self.node)
            .field("to", &self.to)
            .finish()
    }
}

impl<T: Transport> EventSink for RemoteSink<T> {
    fn origin(&self) -> Option<(u64, u64)> {
        Some((self.node, self.incarnation))
    }

    fn send(&self, event: MailboxEvent) -> bool {
        use pb::session_event::Event;
        let (body, is_push) = match event {
            MailboxEvent::Push(entry) => (Event::Push(encode_entry(&self.owner, &entry)), true),
            MailboxEvent::Devices(count) => (
                Event::Devices(u32::try_from(count).unwrap_or(u32::MAX)),
                false,
            ),
            MailboxEvent::Replaced => (Event::Replaced(pb::Done {}), false),
            MailboxEvent::Revoked(revoked) => (
                Event::Revoked(pb::SessionRevoked {
                    user_wide: revoked == crate::mailbox::revocation::Revoked::User,
                }),
                false,
            ),
            MailboxEvent::Typing {
                from_user,
                typing,
                group,
            } => (
                Event::Typing(pb::TypingNotice {
                    from_user: from_user.to_string(),
                    typing,
                    group: group.as_deref().unwrap_or_default().to_owned(),
                }),
                true,
            ),
            MailboxEvent::Presence {
                user,
                online,
                last_seen_ms,
            } => (
                Event::Presence(pb::PresenceNotice {
                    user: user.to_string(),
                    online,
                    last_seen_ms,
                }),
                false,
            ),
            // Answers to operations travel as call replies, never to a registered session.
            _ => return false,
        };
        let sent = self.outbox.send(&self.to, body);
        if sent && is_push {
            self.budget.release();
        }
        sent
    }
}

/// An entry as the journal stores it (a `MailboxRecord`), the form entries cross the mesh in.
/// A copy of a large group's entry is stored here as a reference to the group's log, which the
/// session's node cannot read: it crosses whole.
pub fn encode_entry(owner: &str, entry: &Entry) -> Bytes {
    match &entry.payload {
        Payload::Message(message) => {
            encode_appended(owner, entry, &message.client_msg_id, message.server_id)
        }
        Payload::Group(group) if group.logged => {
            let whole = Entry {
                payload: Payload::Group(Arc::new(GroupEntry {
                    logged: false,
                    ..GroupEntry::clone(group)
                })),
                ..entry.clone()
            };
            encode_appended(owner, &whole, "", 0)
        }
        _ => encode_appended(owner, entry, "", 0),
    }
}
