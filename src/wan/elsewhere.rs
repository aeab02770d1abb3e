//! The WAN's seat in the group fan-out: members (and receipt authors) homed in another
//! datacenter get a group's entries through that datacenter's gateway queue, the rest through
//! the cluster's own [`Elsewhere`] (`crate::cluster::remote::copies::Copies`).
//!
//! Each entry crosses once per far datacenter, whatever the number of its members there: one
//! queued record per batch of entries, naming the members there. Order: per group and far
//! datacenter at most one enqueue is in flight; entries that come meanwhile wait and go
//! together in the next record. When an enqueue fails, its entries and every later one for that
//! datacenter fail too until the group hands the first failed entry over again (the fan-out
//! does so, in order), so a far mailbox never gets a copy that skips one.
//!
//! A copy crosses whole (never a reference to the group's log, which the far side does not
//! have), so once it is queued the member's mailbox no longer needs this group's log: the
//! group is told the member released the entry, and its log can be pruned.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use hashbrown::HashMap;

use super::Wan;
use crate::cluster::remote::copies::group_copy;
use crate::group::fanout::Elsewhere;
use crate::mailbox::MailboxOp;
use crate::mailbox::checkpoint::Countdown;
use crate::mesh::Transport;
use crate::message::{GroupEntry, GroupReceiptNotice, Id};
use crate::node::Node;
use crate::proto::kinds;
use crate::proto::mesh as mesh_pb;
use crate::proto::wan as pb;

/// Entries of one group queued in one record at most.
const BATCH_ENTRIES: usize = 64;

/// One entry for the members of one far datacenter.
struct Copy {
    entry: Arc<GroupEntry>,
    recipients: Vec<Id>,
    done: Arc<Countdown>,
}

/// One group's entries for one far datacenter.
#[derive(Default)]
struct Stream {
    busy: bool,
    waiting: VecDeque<Copy>,
    broken_from: Option<u64>,
}

/// Splits the fan-out between datacenters.
pub struct WanElsewhere<T: Transport> {
    inner: Arc<dyn Elsewhere>,
    shared: Arc<Shared<T>>,
}

struct Shared<T: Transport> {
    wan: Arc<Wan<T>>,
    node: std::sync::Weak<Node>,
    streams: Mutex<HashMap<(usize, Id), Stream>>,
}

impl<T: Transport> WanElsewhere<T> {
    /// `inner` for the keys homed here; `node` is told of releases.
    pub fn new(inner: Arc<dyn Elsewhere>, wan: Arc<Wan<T>>, node: &Arc<Node>) -> Self {
        WanElsewhere {
            inner,
            shared: Arc::new(Shared {
                wan,
                node: Arc::downgrade(node),
                streams: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// `keys` split into those homed here and those homed elsewhere, by datacenter.
    fn split(&self, keys: impl IntoIterator<Item = Id>) -> (Vec<Id>, Vec<(usize, Vec<Id>)>) {
        let directory = self.shared.wan.directory();
        let mut here = Vec::new();
        let mut far: Vec<(usize, Vec<Id>)> = Vec::new();
        for key in keys {
            let home = directory.home(&key);
            if home == directory.local() {
                here.push(key);
            } else {
                match far.iter_mut().find(|(dc, _)| *dc == home) {
                    Some((_, keys)) => keys.push(key),
                    None => far.push((home, vec![key])),
                }
            }
        }
        (here, far)
    }
}

impl<T: Transport> Elsewhere for WanElsewhere<T> {
    fn copy(&self, entry: &Arc<GroupEntry>, recipients: &[Id], done: &Arc<Countdown>) -> Vec<Id> {
        let (here, far) = self.split(recipients.iter().cloned());
        for (dc, recipients) in far {
            let copy = Copy {
                entry: entry.clone(),
                recipients,
                done: done.clone(),
            };
            enqueue(&self.shared, dc, copy);
        }
        self.inner.copy(entry, &here, done)
    }

    fn receipt(&self, notice: &GroupReceiptNotice, authors: Vec<Id>) -> Vec<Id> {
        let (here, far) = self.split(authors);
        for (dc, authors) in far {
            let record = pb::WanRecord {
                record: Some(pb::wan_record::Record::Receipt(
                    mesh_pb::GroupReceiptCopies {
                        group: notice.group_id.to_string(),
                        from_user: notice.from_user.to_string(),
                        from_device: notice.from_device.to_string(),
                        kind: kinds::receipt_kind_to_wire(notice.kind).into(),
                        up_to_group_seq: notice.up_to_group_seq,
                        authors: authors.iter().map(ToString::to_string).collect(),
                    },
                )),
                queued_at_ms: 0,
            };
            // A notice, as across nodes: lost if it cannot be queued.
            let queued = self.shared.wan.enqueue(dc, &notice.group_id, record);
            tokio::spawn(queued);
        }
        self.inner.receipt(notice, here)
    }

    fn released(&self, group: &Id, member: &Id, upto: u64) -> bool {
        // A group homed elsewhere counted this member released when it queued the copies.
        if !self.shared.wan.directory().is_local(group) {
            return true;
        }
        self.inner.released(group, member, upto)
    }

    fn typing(&self, group: &Id, from_user: &Id, typing: bool, members: Vec<Id>) -> Vec<Id> {
        let (here, far) = self.split(members);
        for (dc, members) in far {
            let members = members.iter().map(ToString::to_string).collect();
            self.shared
                .wan
                .group_typing(dc, group, from_user, typing, members);
        }
        self.inner.typing(group, from_user, typing, here)
    }

    fn serves(&self, group: &Id) -> bool {
        self.inner.serves(group)
    }
}

/// Queues `copy` behind the group's stream to `dc`, and starts the stream's sender if idle.
fn enqueue<T: Transport>(shared: &Arc<Shared<T>>, dc: usize, copy: Copy) {
    let group = copy.entry.group_id.clone();
    let mut streams = shared
        .streams
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let stream = streams.entry((dc, group.clone())).or_default();
    match stream.broken_from {
        Some(from) if copy.entry.group_seq == from => stream.broken_from = None,
        Some(_) => {
            drop(streams);
            return fail(&copy);
        }
        None => {}
    }
    stream.waiting.push_back(copy);
    if stream.busy {
        return;
    }
    stream.busy = true;
    drop(streams);
    tokio::spawn(pump(shared.clone(), dc, group));
}

fn fail(copy: &Copy) {
    for _ in &copy.recipients {
        copy.done.finish(false);
    }
}

/// Queues the stream's waiting entries, a batch per record, until none wait.
async fn pump<T: Transport>(shared: Arc<Shared<T>>, dc: usize, group: Id) {
    loop {
        let batch: Vec<Copy> = {
            let mut streams = shared
                .streams
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let Some(stream) = streams.get_mut(&(dc, group.clone())) else {
                return;
            };
            if stream.waiting.is_empty() {
                stream.busy = false;
                streams.remove(&(dc, group.clone()));
                return;
            }
            let take = stream.waiting.len().min(BATCH_ENTRIES);
            stream.waiting.drain(..take).collect()
        };
        let copies = batch
            .iter()
            .map(|copy| group_copy(&copy.entry, &copy.recipients))
            .collect();
        let record = pb::WanRecord {
            record: Some(pb::wan_record::Record::Copies(mesh_pb::GroupCopiesCall {
                group: group.to_string(),
                copies,
            })),
            queued_at_ms: 0,
        };
        let queued = shared.wan.enqueue(dc, &group, record).await.is_ok();
        if queued {
            for copy in &batch {
                for _ in &copy.recipients {
                    copy.done.finish(true);
                }
            }
            released(&shared, &batch);
            continue;
        }
        // Everything from the first of the batch on fails, until it is handed over again.
        let waiting: Vec<Copy> = {
            let mut streams = shared
                .streams
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let Some(stream) = streams.get_mut(&(dc, group.clone())) else {
                return;
            };
            stream.broken_from = batch.first().map(|copy| copy.entry.group_seq);
            stream.busy = false;
            stream.waiting.drain(..).collect()
        };
        batch.iter().chain(&waiting).for_each(fail);
        return;
    }
}

/// Tells the group that the far members of `batch` hold whole copies of its entries.
fn released<T: Transport>(shared: &Shared<T>, batch: &[Copy]) {
    let Some(node) = shared.node.upgrade() else {
        return;
    };
    let Some(last) = batch.last() else { return };
    let mut members: Vec<&Id> = batch.iter().flat_map(|copy| &copy.recipients).collect();
    members.sort();
    members.dedup();
    for member in members {
        let upto = batch
            .iter()
            .filter(|copy| copy.recipients.contains(member))
            .map(|copy| copy.entry.group_seq)
            .max()
            .unwrap_or(last.entry.group_seq);
        let _ = node.submit(MailboxOp::GroupReleased {
            group: last.entry.group_id.clone(),
            member: member.clone(),
            upto,
        });
    }
}
