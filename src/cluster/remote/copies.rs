//! The fan-out's part on other nodes ([`Elsewhere`]): a group's entry goes once to every node
//! that owns recipients, which appends it to their mailboxes; receipts, releases and typing go
//! to their owners as casts.
//!
//! Order: a member's mailbox takes a group's copies in group order and knows a copy it has by
//! its position, so a later entry must never reach a node before an earlier one that failed.
//! Per group and node there is at most one call in flight; entries that come meanwhile wait and
//! go together in the next call (a busy group costs a call per round trip, not per entry). When
//! a call fails, its entries and every later one for that node fail too, until the group hands
//! the first failed entry over again (it does so, in order, once the fan-out reported the
//! failure): the stream starts again from there.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use hashbrown::HashMap;
use prost::Message;
use tokio::sync::watch;

use super::{CALL_DEADLINE, SERVICE_MAILBOX, cast_to};
use crate::cluster::leaders::Leaders;
use crate::cluster::map::ClusterMap;
use crate::cluster::route::{Placed, place};
use crate::group::fanout::Elsewhere;
use crate::group::record as group_record;
use crate::mailbox::checkpoint::Countdown;
use crate::mesh::{Lane, Mesh, NodeId, Transport};
use crate::message::{GroupEntry, GroupReceiptNotice, Id};
use crate::metrics as names;
use crate::proto::kinds;
use crate::proto::mesh as pb;

/// Entries of one group sent in one call at most (the rest go in the next).
const BATCH_ENTRIES: usize = 64;

/// The fan-out's sender to other nodes.
pub struct Copies<T: Transport> {
    inner: Arc<Inner<T>>,
}

struct Inner<T: Transport> {
    me: NodeId,
    mesh: Mesh<T>,
    map: watch::Receiver<Arc<ClusterMap>>,
    leaders: Arc<Leaders>,
    streams: Mutex<HashMap<(NodeId, Id), Stream>>,
}

/// One group's entries for one node.
#[derive(Default)]
struct Stream {
    /// A call is in flight.
    busy: bool,
    /// Entries waiting for it, in group order.
    waiting: VecDeque<Copy>,
    /// A call failed at this group seq: later entries fail until it is handed over again.
    broken_from: Option<u64>,
}

/// An entry for some of the recipients a node owns.
struct Copy {
    entry: Arc<GroupEntry>,
    recipients: Vec<Id>,
    done: Arc<Countdown>,
}

impl Copy {
    fn finish(&self, ok: bool) {
        for _ in &self.recipients {
            self.done.finish(ok);
        }
    }
}

impl<T: Transport> Copies<T> {
    /// Sends from node `me` over `mesh`, routing with `map` and `leaders`.
    pub fn new(
        me: NodeId,
        mesh: Mesh<T>,
        map: watch::Receiver<Arc<ClusterMap>>,
        leaders: Arc<Leaders>,
    ) -> Copies<T> {
        Copies {
            inner: Arc::new(Inner {
                me,
                mesh,
                map,
                leaders,
                streams: Mutex::new(HashMap::new()),
            }),
        }
    }
}

impl<T: Transport> Inner<T> {
    /// `users` by where their mailboxes are.
    fn place(&self, users: impl IntoIterator<Item = Id>) -> Placed<Id> {
        place(&self.map.borrow(), &self.leaders, self.me, users)
    }

    fn streams(&self) -> std::sync::MutexGuard<'_, HashMap<(NodeId, Id), Stream>> {
        self.streams
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn cast(&self, node: NodeId, cast: pb::mailbox_cast::Cast) {
        cast_to(&self.mesh, node, cast);
    }
}

impl<T: Transport> Elsewhere for Copies<T> {
    fn serves(&self, group: &Id) -> bool {
        let map = self.inner.map.borrow();
        crate::cluster::route::route(&map, &self.inner.leaders, self.inner.me, group.as_bytes())
            == crate::cluster::route::Route::Local
    }

    fn copy(&self, entry: &Arc<GroupEntry>, recipients: &[Id], done: &Arc<Countdown>) -> Vec<Id> {
        let placed = self.inner.place(recipients.iter().cloned());
        for _ in &placed.nowhere {
            // Nobody serves them now: the entry is handed over again later.
            done.finish(false);
        }
        for (node, users) in placed.remote {
            let copy = Copy {
                entry: entry.clone(),
                recipients: users,
                done: done.clone(),
            };
            enqueue(&self.inner, node, copy);
        }
        placed.here
    }

    fn receipt(&self, notice: &GroupReceiptNotice, authors: Vec<Id>) -> Vec<Id> {
        let placed = self.inner.place(authors);
        for (node, authors) in placed.remote {
            let cast = pb::GroupReceiptCopies {
                group: notice.group_id.to_string(),
                from_user: notice.from_user.to_string(),
                from_device: notice.from_device.to_string(),
                kind: kinds::receipt_kind_to_wire(notice.kind).into(),
                up_to_group_seq: notice.up_to_group_seq,
                authors: authors.iter().map(ToString::to_string).collect(),
            };
            self.inner
                .cast(node, pb::mailbox_cast::Cast::ReceiptCopies(cast));
        }
        placed.here
    }

    fn released(&self, group: &Id, member: &Id, upto: u64) -> bool {
        let placed = self.inner.place([group.clone()]);
        let Some((node, _)) = placed.remote.first() else {
            // Here, or nobody's now (it is told again after the next change of the mailbox).
            return !placed.nowhere.is_empty();
        };
        let cast = pb::GroupCopiesReleased {
            group: group.to_string(),
            member: member.to_string(),
            upto,
        };
        self.inner
            .cast(*node, pb::mailbox_cast::Cast::Released(cast));
        true
    }

    fn typing(&self, group: &Id, from_user: &Id, typing: bool, members: Vec<Id>) -> Vec<Id> {
        let placed = self.inner.place(members);
        for (node, users) in placed.remote {
            let cast = pb::GroupTypingRelay {
                group: group.to_string(),
                from_user: from_user.to_string(),
                typing,
                to_users: users.iter().map(ToString::to_string).collect(),
            };
            self.inner
                .cast(node, pb::mailbox_cast::Cast::GroupTyping(cast));
        }
        placed.here
    }
}

/// Queues `copy` on its group's stream to `node`, and sends unless a call is in flight.
fn enqueue<T: Transport>(inner: &Arc<Inner<T>>, node: NodeId, copy: Copy) {
    let key = (node, copy.entry.group_id.clone());
    let batch = {
        let mut streams = inner.streams();
        let stream = streams.entry(key.clone()).or_default();
        if let Some(from) = stream.broken_from {
            if copy.entry.group_seq > from {
                // It must not overtake the failed one: it fails too, and comes again after it.
                drop(streams);
                fail(&copy);
                return;
            }
            stream.broken_from = None;
        }
        stream.waiting.push_back(copy);
        if stream.busy {
            return;
        }
        stream.busy = true;
        take_batch(stream)
    };
    tokio::spawn(send(inner.clone(), key, batch));
}

fn take_batch(stream: &mut Stream) -> Vec<Copy> {
    let count = stream.waiting.len().min(BATCH_ENTRIES);
    stream.waiting.drain(..count).collect()
}

fn fail(copy: &Copy) {
    metrics::counter!(names::GROUP_REMOTE_COPY_FAILURES).increment(1);
    copy.finish(false);
}

/// Sends batches of one stream until it has nothing waiting.
async fn send<T: Transport>(inner: Arc<Inner<T>>, key: (NodeId, Id), mut batch: Vec<Copy>) {
    let (node, group) = (key.0, key.1.clone());
    loop {
        let complete = call(&inner, node, &group, &batch).await;
        let mut streams = inner.streams();
        let Some(stream) = streams.get_mut(&key) else {
            return;
        };
        let failed = if complete {
            batch.iter().for_each(|copy| copy.finish(true));
            Vec::new()
        } else {
            // This batch and everything after it fail; the group hands them over again from
            // the first, in order.
            stream.broken_from = batch.first().map(|copy| copy.entry.group_seq);
            batch.extend(stream.waiting.drain(..));
            std::mem::take(&mut batch)
        };
        if stream.waiting.is_empty() {
            stream.busy = false;
            if stream.broken_from.is_none() {
                streams.remove(&key);
            }
            drop(streams);
            failed.iter().for_each(fail);
            return;
        }
        batch = take_batch(stream);
        drop(streams);
    }
}

/// `entry` for `recipients`, always whole: the receiving side cannot read this group's log.
pub(crate) fn group_copy(entry: &GroupEntry, recipients: &[Id]) -> pb::GroupCopy {
    let mut stored = group_record::encode_entry(entry);
    stored.logged = false;
    pb::GroupCopy {
        entry: Bytes::from(stored.encode_to_vec()),
        recipients: recipients.iter().map(ToString::to_string).collect(),
    }
}

/// One call carrying `batch`; true when the node made every copy durable.
async fn call<T: Transport>(inner: &Inner<T>, node: NodeId, group: &Id, batch: &[Copy]) -> bool {
    let copies = batch
        .iter()
        .map(|copy| group_copy(&copy.entry, &copy.recipients))
        .collect();
    let map_version = inner.map.borrow().version;
    let payload = pb::MailboxCall {
        map_version,
        op: Some(pb::mailbox_call::Op::Copies(pb::GroupCopiesCall {
            group: group.to_string(),
            copies,
        })),
    }
    .encode_to_vec();
    metrics::counter!(names::GROUP_REMOTE_COPY_CALLS).increment(1);
    metrics::counter!(names::GROUP_REMOTE_COPIES).increment(batch.len() as u64);
    let answer = inner
        .mesh
        .call(
            node,
            Lane::Call,
            SERVICE_MAILBOX,
            Bytes::from(payload),
            CALL_DEADLINE,
        )
        .await;
    let complete = match answer.map(pb::MailboxReply::decode) {
        Ok(Ok(pb::MailboxReply {
            reply: Some(pb::mailbox_reply::Reply::Copies(reply)),
        })) => reply.complete,
        _ => false,
    };
    if !complete {
        tracing::debug!(node, group = %group, entries = batch.len(), "group copies not confirmed");
    }
    complete
}
