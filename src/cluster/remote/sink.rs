//! Reply addresses of the mailbox service across nodes: [`CallSink`] turns the one event a
//! local operation answers with into the answer of a mesh call, and [`RemoteSink`] carries the
//! pushes of a user's owner to that user's session on another node.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use prost::Message;
use tokio::sync::oneshot;

use super::SERVICE_MAILBOX;
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
/// typing and presence notices are cast there (the Cast lane: a full lane drops,
/// and the next push that gets through tells the session it missed one, so it reads its
/// mailbox).
pub struct RemoteSink<T: Transport> {
    mesh: Mesh<T>,
    node: NodeId,
    /// The incarnation of `node`'s process when the session registered.
    incarnation: u64,
    owner: Id,
    conn_id: u64,
    /// The push budget of the registry entry: a push handed to the mesh is no longer queued
    /// here (the session's own node budgets its queue).
    budget: Arc<PushBudget>,
    /// A push was dropped (a full lane): the next event that gets through says so.
    missed: Arc<AtomicBool>,
    /// A task is sending `MissedPushes` (so a dropped last push is not left waiting).
    retrying: Arc<AtomicBool>,
    /// Where that task runs (pushes may be sent from the journal's completion thread).
    runtime: tokio::runtime::Handle,
}

impl<T: Transport> RemoteSink<T> {
    /// The address of `owner`'s session on `conn_id` of `node` (whose process is the one
    /// the mesh last heard announce itself).
    pub fn new(
        mesh: Mesh<T>,
        node: NodeId,
        owner: Id,
        conn_id: u64,
        budget: Arc<PushBudget>,
    ) -> RemoteSink<T> {
        let incarnation = mesh.peer_incarnation(node).unwrap_or(0);
        RemoteSink {
            mesh,
            node,
            incarnation,
            owner,
            conn_id,
            budget,
            missed: Arc::default(),
            retrying: Arc::default(),
            runtime: tokio::runtime::Handle::current(),
        }
    }
}

impl<T: Transport> fmt::Debug for RemoteSink<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteSink")
            .field("node", &self.node)
            .field("conn_id", &self.conn_id)
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
        let missed = self.missed.swap(false, Ordering::AcqRel);
        let payload = pb::MailboxCast {
            cast: Some(pb::mailbox_cast::Cast::Event(pb::SessionEvent {
                owner: self.owner.to_string(),
                conn_id: self.conn_id,
                event: Some(body),
                missed,
            })),
        }
        .encode_to_vec();
        match self
            .mesh
            .cast(self.node, SERVICE_MAILBOX, Bytes::from(payload))
        {
            Ok(()) => {
                if is_push {
                    self.budget.release();
                }
                true
            }
            Err(_) => {
                self.missed.store(true, Ordering::Release);
                if is_push && !self.retrying.swap(true, Ordering::AcqRel) {
                    self.runtime.spawn(send_missed(MissedNotice {
                        mesh: self.mesh.clone(),
                        node: self.node,
                        owner: self.owner.clone(),
                        conn_id: self.conn_id,
                        missed: self.missed.clone(),
                        retrying: self.retrying.clone(),
                    }));
                }
                false
            }
        }
    }
}

/// Times a `MissedPushes` notice is tried (with a doubling delay up to a second) before the
/// session is left to the next push or resync.
const MISSED_ATTEMPTS: u32 = 30;

/// What [`send_missed`] needs of a [`RemoteSink`].
struct MissedNotice<T: Transport> {
    mesh: Mesh<T>,
    node: NodeId,
    owner: Id,
    conn_id: u64,
    missed: Arc<AtomicBool>,
    retrying: Arc<AtomicBool>,
}

/// Tells the session that pushes to it were dropped, once the link takes it (unless a later
/// push carried the news first): it then reads its mailbox.
async fn send_missed<T: Transport>(notice: MissedNotice<T>) {
    let mut delay = std::time::Duration::from_millis(50);
    for _ in 0..MISSED_ATTEMPTS {
        tokio::time::sleep(delay).await;
        if !notice.missed.load(Ordering::Acquire) {
            break;
        }
        let payload = pb::MailboxCast {
            cast: Some(pb::mailbox_cast::Cast::Event(pb::SessionEvent {
                owner: notice.owner.to_string(),
                conn_id: notice.conn_id,
                event: Some(pb::session_event::Event::MissedPushes(pb::Done {})),
                missed: true,
            })),
        }
        .encode_to_vec();
        if notice
            .mesh
            .cast(notice.node, SERVICE_MAILBOX, Bytes::from(payload))
            .is_ok()
        {
            notice.missed.store(false, Ordering::Release);
            break;
        }
        delay = (delay * 2).min(std::time::Duration::from_secs(1));
    }
    notice.retrying.store(false, Ordering::Release);
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
