//! The events an owner sends to sessions on one other node (pushes, device counts,
//! replacements, typing, presence), gathered and sent as one cast per wake-up: a post to a large
//! group puts thousands of pushes on a link at once, and each would otherwise be a frame of its
//! own in the link's bounded Cast lane.
//!
//! One outbox per node, first in first out, one flush at a time, so events for one session keep
//! their order. An event the outbox or the link cannot take is dropped and its session marked:
//! the next event that gets through says so, and a `MissedPushes` notice is retried until the
//! link takes it, so the session reads its mailbox.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hashbrown::HashMap;
use prost::Message;
use tokio::runtime::Handle;

use super::cast_to;
use crate::mesh::{Mesh, NodeId, Transport};
use crate::message::Id;
use crate::proto::mesh as pb;

/// Encoded bytes of events one outbox holds at most (beyond, they are dropped and their
/// sessions marked; they read their mailboxes instead).
const MAX_QUEUED_BYTES: usize = 8 * 1024 * 1024;
/// Encoded bytes of events per cast at most: small enough that the link's Cast lane, which
/// counts frames, holds a bounded number of bytes (1,024 frames of at most 64 KiB).
const MAX_CAST_BYTES: usize = 64 * 1024;
/// Times a `MissedPushes` notice is tried (with a doubling delay up to a second) before the
/// session is left to its next event or resync.
const MISSED_ATTEMPTS: u32 = 30;

/// The outboxes of this node, one per node it sends session events to.
pub struct Outboxes<T: Transport> {
    mesh: Mesh<T>,
    by_node: Mutex<HashMap<NodeId, Arc<Outbox<T>>>>,
}

impl<T: Transport> Outboxes<T> {
    /// Outboxes sending over `mesh`.
    pub fn new(mesh: Mesh<T>) -> Self {
        Outboxes {
            mesh,
            by_node: Mutex::new(HashMap::new()),
        }
    }

    /// The outbox of `node` (made at its first session; must run on the node's runtime).
    pub fn to(&self, node: NodeId) -> Arc<Outbox<T>> {
        let mut by_node = self
            .by_node
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        by_node
            .entry(node)
            .or_insert_with(|| {
                Arc::new(Outbox {
                    mesh: self.mesh.clone(),
                    node,
                    runtime: Handle::current(),
                    queue: Mutex::new(Queue::default()),
                })
            })
            .clone()
    }
}

/// The session events waiting for one node.
pub struct Outbox<T: Transport> {
    mesh: Mesh<T>,
    node: NodeId,
    /// Where flushes and notices run (events may come from the journal's completion thread).
    runtime: Handle,
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    events: Vec<(pb::SessionEvent, Arc<Recipient>)>,
    /// Their encoded bytes.
    bytes: usize,
    /// A flush task is scheduled or running.
    flushing: bool,
}

/// A session on the outbox's node, as its events need it.
#[derive(Debug)]
pub struct Recipient {
    owner: Id,
    conn_id: u64,
    /// An event was dropped: the next one that gets through says so.
    missed: AtomicBool,
    /// A task is sending `MissedPushes`.
    notifying: AtomicBool,
}

impl Recipient {
    /// The session of `owner` on connection `conn_id`.
    pub fn new(owner: Id, conn_id: u64) -> Self {
        Recipient {
            owner,
            conn_id,
            missed: AtomicBool::new(false),
            notifying: AtomicBool::new(false),
        }
    }
}

impl<T: Transport> Outbox<T> {
    /// Queues `event` for `to`; false when the outbox is full (the session is then told it
    /// missed events, once the link takes a notice).
    pub fn send(self: &Arc<Self>, to: &Arc<Recipient>, event: pb::session_event::Event) -> bool {
        let event = pb::SessionEvent {
            owner: to.owner.to_string(),
            conn_id: to.conn_id,
            event: Some(event),
            missed: to.missed.swap(false, Ordering::AcqRel),
        };
        let mut queue = self
            .queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let size = event.encoded_len();
        if queue.bytes + size > MAX_QUEUED_BYTES {
            drop(queue);
            self.missed(to);
            return false;
        }
        queue.bytes += size;
        queue.events.push((event, to.clone()));
        if !queue.flushing {
            queue.flushing = true;
            self.runtime.spawn(flush(self.clone()));
        }
        true
    }

    /// Marks `to` as having missed an event and makes sure it hears of it.
    fn missed(&self, to: &Arc<Recipient>) {
        to.missed.store(true, Ordering::Release);
        if !to.notifying.swap(true, Ordering::AcqRel) {
            self.runtime
                .spawn(notify_missed(self.mesh.clone(), self.node, to.clone()));
        }
    }

    fn take(&self) -> Vec<(pb::SessionEvent, Arc<Recipient>)> {
        let mut queue = self
            .queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let events = std::mem::take(&mut queue.events);
        queue.bytes = 0;
        if events.is_empty() {
            queue.flushing = false;
        }
        events
    }
}

/// Sends what the outbox gathered, one cast per chunk, until it is empty.
async fn flush<T: Transport>(outbox: Arc<Outbox<T>>) {
    loop {
        // Whoever scheduled the flush is likely still producing (a worker pushing a post to
        // every member): let it finish this round first.
        tokio::task::yield_now().await;
        let events = outbox.take();
        if events.is_empty() {
            return;
        }
        let mut chunk = Vec::new();
        let mut bytes = 0;
        let mut recipients = Vec::new();
        for (event, recipient) in events {
            let size = event.encoded_len();
            if bytes + size > MAX_CAST_BYTES && !chunk.is_empty() {
                cast(&outbox, std::mem::take(&mut chunk), &mut recipients);
                bytes = 0;
            }
            bytes += size;
            chunk.push(event);
            recipients.push(recipient);
        }
        cast(&outbox, chunk, &mut recipients);
    }
}

/// One cast of `events`; when the link does not take it, their sessions missed them.
fn cast<T: Transport>(
    outbox: &Outbox<T>,
    events: Vec<pb::SessionEvent>,
    recipients: &mut Vec<Arc<Recipient>>,
) {
    let cast = pb::mailbox_cast::Cast::Events(pb::SessionEvents { events });
    if !cast_to(&outbox.mesh, outbox.node, cast) {
        for recipient in recipients.iter() {
            outbox.missed(recipient);
        }
    }
    recipients.clear();
}

/// Tells `to` that events to it were dropped, once the link takes it (unless a later event
/// carried the news first): the session then reads its mailbox.
async fn notify_missed<T: Transport>(mesh: Mesh<T>, node: NodeId, to: Arc<Recipient>) {
    let mut delay = Duration::from_millis(50);
    let mut attempts = 0;
    loop {
        tokio::time::sleep(delay).await;
        if to.missed.swap(false, Ordering::AcqRel) {
            let notice = pb::mailbox_cast::Cast::Event(pb::SessionEvent {
                owner: to.owner.to_string(),
                conn_id: to.conn_id,
                event: Some(pb::session_event::Event::MissedPushes(pb::Done {})),
                missed: true,
            });
            if !cast_to(&mesh, node, notice) {
                to.missed.store(true, Ordering::Release);
                attempts += 1;
                if attempts < MISSED_ATTEMPTS {
                    delay = (delay * 2).min(Duration::from_secs(1));
                    continue;
                }
            }
        }
        to.notifying.store(false, Ordering::Release);
        // An event dropped after the swap above found this task still notifying: go on.
        if attempts < MISSED_ATTEMPTS
            && to.missed.load(Ordering::Acquire)
            && !to.notifying.swap(true, Ordering::AcqRel)
        {
            continue;
        }
        return;
    }
}
