//! The far end of the links: stores the records other datacenters' gateways deliver, in their
//! queues' order, exactly once.
//!
//! Per queue of a sending datacenter (its name and the queue's random id: each gateway has its
//! own queue, and a queue made again from nothing starts again at 1), `applied` is the highest
//! sequence number up to which every record is stored here; it is kept in
//! `data_dir/wan/in/<datacenter>.<queue id>` (rewritten after each delivery) and told to the
//! sender when it resumes. A delivery is handled whole before the
//! next one from the same datacenter; its records are stored concurrently across mailboxes and
//! one at a time within a mailbox, so each conversation keeps its order. A record that cannot
//! be stored now (its slot group has no leader) is retried; if it still fails, `applied` stops
//! before it and the sender resends from there (records after it that were stored meanwhile
//! are answered as duplicates by their mailboxes' dedup).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::join_all;
use prost::Message;

use super::WanError;
use super::config::WanConfig;
use super::presence::FarWatchers;
use super::telemetry::LinkTelemetry;
use crate::cluster::remote::sink::CallSink;
use crate::cluster::remote::{append_job, append_reply, group_service, group_wire};
use crate::group::fanout::{copy_id, copy_job};
use crate::group::record as group_record;
use crate::mailbox::checkpoint::Countdown;
use crate::mailbox::group_ops::GroupFailure;
use crate::mailbox::{AppendFailure, MailboxEvent, MailboxOp};
use crate::mesh::{BoxFuture, Handler, NodeId};
use crate::message::Id;
use crate::node::Node;
use crate::proto::mesh as mesh_pb;
use crate::proto::storage as pb_storage;
use crate::proto::wan as pb;
use crate::proto::wan::wan_record::Record;

/// How long one record is retried before its delivery gives up on it (the sender resends).
const STORE_PATIENCE: Duration = Duration::from_secs(20);
/// How long a delivery waits for the deliveries before it.
const GAP_PATIENCE: Duration = Duration::from_secs(10);
/// The pause between retries of a record that could not be stored.
const STORE_RETRY: Duration = Duration::from_millis(100);

/// Progress from one queue of one sending datacenter, handled one delivery at a time.
type Progress = Arc<tokio::sync::Mutex<Inbound>>;

/// Progress from one queue of one sending datacenter.
struct Inbound {
    applied: u64,
    /// `applied`, for the deliveries waiting for the ones before them.
    progress: tokio::sync::watch::Sender<u64>,
    file: PathBuf,
    telemetry: LinkTelemetry,
}

/// The handler of link calls (service [`super::SERVICE_LINK`] on the gateways' mesh).
pub(super) struct Receiver {
    node: Arc<Node>,
    /// Every datacenter by name, in configuration order (the blocks of their mesh ids).
    names: Vec<String>,
    local: usize,
    dir: PathBuf,
    /// Where presence changes for watchers of this datacenter go.
    presence: super::PresenceHook,
    /// The watchers of other datacenters this gateway stands in for.
    far_watchers: std::sync::OnceLock<Arc<FarWatchers>>,
    /// Progress per (sending datacenter, queue id), loaded on first use.
    inbound: Mutex<HashMap<(String, u64), Progress>>,
}

impl Receiver {
    /// Keeps the progress of the far queues in `dir` (`<datacenter>.<queue id>`, one number).
    pub(super) fn open(
        node: Arc<Node>,
        config: &WanConfig,
        dir: PathBuf,
        presence: super::PresenceHook,
    ) -> Result<Self, WanError> {
        std::fs::create_dir_all(&dir)
            .map_err(|error| WanError::Task(format!("{}: {error}", dir.display())))?;
        Ok(Receiver {
            node,
            names: config
                .datacenters
                .iter()
                .map(|dc| dc.name.clone())
                .collect(),
            local: config.local_index().unwrap_or(0),
            dir,
            presence,
            far_watchers: std::sync::OnceLock::new(),
            inbound: Mutex::new(HashMap::new()),
        })
    }

    /// Serves the watches of other datacenters' watchers with `far_watchers`.
    pub(super) fn attach(&self, far_watchers: Arc<FarWatchers>) {
        let _ = self.far_watchers.set(far_watchers);
    }

    /// The progress of queue `queue` of `from`, if `peer` (a mesh id) is one of its gateways.
    fn inbound(&self, peer: NodeId, from: &str, queue: u64) -> Result<Progress, String> {
        let index = (peer >> 5).checked_sub(1).map(|i| i as usize);
        let named = self.names.iter().position(|name| name == from);
        if index.is_none() || index != named || named == Some(self.local) {
            return Err(format!("gateway {peer} may not deliver for {from:?}"));
        }
        let mut inbound = self.inbound.lock().unwrap_or_else(PoisonError::into_inner);
        let progress = inbound.entry((from.to_owned(), queue)).or_insert_with(|| {
            let file = self.dir.join(format!("{from}.{queue:016x}"));
            let applied = std::fs::read_to_string(&file)
                .ok()
                .and_then(|text| text.trim().parse().ok())
                .unwrap_or(0);
            Arc::new(tokio::sync::Mutex::new(Inbound {
                applied,
                progress: tokio::sync::watch::Sender::new(applied),
                file,
                telemetry: LinkTelemetry::new(from),
            }))
        });
        Ok(progress.clone())
    }
}

impl Handler for Receiver {
    fn call(&self, from: NodeId, payload: Bytes) -> BoxFuture<'static, Result<Bytes, String>> {
        let node = self.node.clone();
        let call = pb::LinkCall::decode(payload).map_err(|error| error.to_string());
        let inbound = call
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|call| match &call.op {
                Some(pb::link_call::Op::Resume(resume)) => {
                    self.inbound(from, &resume.from, resume.queue).map(Some)
                }
                Some(pb::link_call::Op::Deliver(deliver)) => {
                    self.inbound(from, &deliver.from, deliver.queue).map(Some)
                }
                Some(pb::link_call::Op::Group(_)) => {
                    let far = (from >> 5).checked_sub(1).map(|i| i as usize);
                    match far {
                        Some(index) if index != self.local && index < self.names.len() => Ok(None),
                        _ => Err(format!("gateway {from} may not relay here")),
                    }
                }
                None => Err("LinkCall without an operation".to_owned()),
            });
        Box::pin(async move {
            let (call, inbound) = (call?, inbound?);
            let Some(inbound) = inbound else {
                let Some(pb::link_call::Op::Group(call)) = call.op else {
                    return Err("LinkCall without an operation".to_owned());
                };
                let answered = serve_group(&node, call).await;
                return Ok(Bytes::from(
                    pb::LinkReply {
                        applied: 0,
                        answered: Some(answered),
                    }
                    .encode_to_vec(),
                ));
            };
            let inbound = match call.op {
                Some(pb::link_call::Op::Deliver(deliver)) => {
                    let mut ready = in_turn(&inbound, deliver.first_seq).await;
                    apply(&node, &mut ready, deliver).await;
                    ready
                }
                _ => inbound.lock_owned().await,
            };
            Ok(Bytes::from(
                pb::LinkReply {
                    applied: inbound.applied,
                    answered: None,
                }
                .encode_to_vec(),
            ))
        })
    }

    fn cast(&self, _from: NodeId, payload: Bytes) {
        use pb::link_cast::Cast;
        let Ok(pb::LinkCast { cast: Some(cast) }) = pb::LinkCast::decode(payload) else {
            return;
        };
        match cast {
            Cast::Typing(notice) => {
                let (from, to) = (Id::from(notice.from_user), Id::from(notice.to_user));
                let relayed = self
                    .node
                    .remote
                    .get()
                    .is_some_and(|remote| remote.relay_typing(&from, &to, notice.typing));
                if !relayed {
                    let limit = self.node.config.mailbox.push_queue;
                    self.node
                        .registry
                        .relay_typing(&from, &to, notice.typing, limit);
                }
            }
            Cast::Watch(watch) => {
                if let Some(far) = self.far_watchers.get() {
                    far.watch(watch);
                }
            }
            Cast::Unwatch(unwatch) => {
                if let Some(far) = self.far_watchers.get() {
                    far.unwatch(unwatch);
                }
            }
            Cast::Presence(relay) => (self.presence)(relay),
            Cast::GroupTyping(pb::GroupTyping {
                relay: Some(relay), ..
            }) => group_typing(&self.node, relay),
            Cast::GroupTyping(_) => {}
        }
    }
}

/// Typing in a group of another datacenter, for its members homed here: those other nodes
/// serve get it through them, this node's own sessions here.
fn group_typing(node: &Node, relay: mesh_pb::GroupTypingRelay) {
    let group = Id::from(relay.group);
    let from_user = Id::from(relay.from_user);
    let members: Vec<Id> = relay.to_users.into_iter().map(Id::from).collect();
    let here = match node.fanout.elsewhere().get() {
        Some(elsewhere) => elsewhere.typing(&group, &from_user, relay.typing, members),
        None => members,
    };
    let limit = node.config.mailbox.push_queue;
    for user in here {
        node.registry.for_each(&user, |session| {
            session.try_push(
                limit,
                MailboxEvent::Typing {
                    from_user: from_user.clone(),
                    typing: relay.typing,
                    group: Some(group.clone()),
                },
            );
        });
    }
}

/// The progress of a queue once the deliveries before the one starting at `first_seq` were
/// applied (the calls of one link are handed over in order, but each runs in its own task, so a
/// later one may get here first), or after [`GAP_PATIENCE`] (then the delivery is answered as
/// a gap, and the sender resumes).
async fn in_turn(progress: &Progress, first_seq: u64) -> tokio::sync::OwnedMutexGuard<Inbound> {
    let deadline = tokio::time::Instant::now() + GAP_PATIENCE;
    loop {
        let inbound = progress.clone().lock_owned().await;
        if first_seq <= inbound.applied + 1 {
            return inbound;
        }
        let mut changed = inbound.progress.subscribe();
        drop(inbound);
        if tokio::time::timeout_at(deadline, changed.changed())
            .await
            .is_err()
        {
            return progress.clone().lock_owned().await;
        }
    }
}

/// Stores the records of `deliver` not stored yet and moves `applied` past every one stored.
async fn apply(node: &Arc<Node>, inbound: &mut Inbound, deliver: pb::Deliver) {
    if deliver.first_seq > inbound.applied + 1 {
        // A gap (an earlier delivery was lost with its link): the sender resumes.
        return;
    }
    let last = deliver.first_seq + (deliver.records.len() as u64).saturating_sub(1);
    // Per key (a mailbox, or a group), its records in order.
    let mut by_key: HashMap<String, Vec<(u64, Record)>> = HashMap::new();
    let mut skipped = 0;
    for (offset, payload) in deliver.records.into_iter().enumerate() {
        let seq = deliver.first_seq + offset as u64;
        if seq <= inbound.applied {
            skipped += 1;
            continue;
        }
        match pb::WanRecord::decode(payload) {
            Ok(pb::WanRecord {
                record: Some(record),
                ..
            }) => by_key
                .entry(key_of(&record).to_owned())
                .or_default()
                .push((seq, record)),
            _ => tracing::warn!(seq, "undecodable WAN record skipped"),
        }
    }
    inbound.telemetry.duplicates.increment(skipped);
    let stored = join_all(
        by_key
            .into_values()
            .map(|records| store_in_order(node, records)),
    )
    .await;
    // Every record up to the first one not stored is applied.
    let first_failed = stored.into_iter().flatten().min();
    let applied = match first_failed {
        Some(seq) => seq - 1,
        None => last,
    }
    .max(inbound.applied);
    inbound
        .telemetry
        .received
        .increment(applied - inbound.applied);
    inbound.applied = applied;
    inbound.progress.send_replace(applied);
    if let Err(error) = std::fs::write(&inbound.file, format!("{applied}\n")) {
        tracing::warn!(file = %inbound.file.display(), %error, "WAN progress not saved");
    }
}

/// The key whose records are stored one at a time, in order: the mailbox, or the group.
fn key_of(record: &Record) -> &str {
    match record {
        Record::Append(append) => &append.owner,
        Record::Copies(copies) => &copies.group,
        Record::Group(call) => &call.group,
        Record::Receipt(receipt) => &receipt.group,
    }
}

/// Stores one key's records in order; the seq of the first that could not be stored.
async fn store_in_order(node: &Arc<Node>, records: Vec<(u64, Record)>) -> Option<u64> {
    for (seq, record) in records {
        let started = Instant::now();
        loop {
            match store(node, record.clone()).await {
                Stored::Yes => break,
                Stored::Never => {
                    tracing::warn!(
                        seq,
                        key = key_of(&record),
                        "WAN record refused for good; skipped"
                    );
                    break;
                }
                Stored::NotNow if started.elapsed() < STORE_PATIENCE => {
                    tokio::time::sleep(STORE_RETRY).await;
                }
                Stored::NotNow => return Some(seq),
            }
        }
    }
    None
}

enum Stored {
    Yes,
    NotNow,
    Never,
}

/// Stores one record, wherever in this cluster its key is served.
async fn store(node: &Arc<Node>, record: Record) -> Stored {
    match record {
        Record::Append(append) => store_append(node, append).await,
        Record::Copies(copies) => store_copies(node, copies).await,
        Record::Group(call) => store_group_call(node, call).await,
        Record::Receipt(receipt) => store_receipt(node, receipt),
    }
}

async fn store_append(node: &Arc<Node>, append: mesh_pb::AppendCall) -> Stored {
    let (sink, answer) = CallSink::new();
    let job = match append_job(append, Some((sink, 0))) {
        Ok(job) => job,
        Err(_) => return Stored::Never,
    };
    if node.submit(MailboxOp::Append(Box::new(job))).is_err() {
        return Stored::NotNow;
    }
    match append_reply(answer.await) {
        mesh_pb::mailbox_reply::Reply::Append(_) => Stored::Yes,
        _ => Stored::NotNow,
    }
}

/// A group's entries for members homed here: appended to their mailboxes, here or on the nodes
/// that serve them, as this cluster's own fan-out would.
async fn store_copies(node: &Arc<Node>, call: mesh_pb::GroupCopiesCall) -> Stored {
    let mut entries = Vec::with_capacity(call.copies.len());
    for copy in call.copies {
        let Ok(entry) = pb_storage::StoredGroupEntry::decode(copy.entry)
            .map_err(|_| ())
            .and_then(|stored| group_record::decode_entry(stored).map_err(|_| ()))
        else {
            return Stored::Never;
        };
        let recipients: Vec<Id> = copy.recipients.into_iter().map(Id::from).collect();
        entries.push((Arc::new(entry), recipients));
    }
    let parts = entries.iter().map(|(_, recipients)| recipients.len()).sum();
    let (countdown, outcome) = Countdown::new(parts);
    let elsewhere = node.fanout.elsewhere().get().cloned();
    for (entry, recipients) in entries {
        let here = match &elsewhere {
            Some(elsewhere) => elsewhere.copy(&entry, &recipients, &countdown),
            None => recipients,
        };
        let copy_id = copy_id(&entry);
        for recipient in here {
            let job = copy_job(recipient, &entry, &copy_id, &countdown);
            if node
                .mailboxes
                .submit_wait(MailboxOp::Append(Box::new(job)))
                .await
                .is_err()
            {
                countdown.finish(false);
            }
        }
    }
    if outcome.await.unwrap_or(false) {
        Stored::Yes
    } else {
        Stored::NotNow
    }
}

/// A post or a group receipt of a member homed elsewhere, for a group homed here.
async fn store_group_call(node: &Arc<Node>, call: mesh_pb::GroupCall) -> Stored {
    let (sink, answer) = CallSink::new();
    let Ok(job) = group_wire::job_of(call, sink) else {
        return Stored::Never;
    };
    if node.submit(MailboxOp::Group(Box::new(job))).is_err() {
        return Stored::NotNow;
    }
    match answer.await {
        Ok(MailboxEvent::Appended { result: Ok(_), .. })
        | Ok(MailboxEvent::GroupAnswer { answer: Ok(_), .. })
        // A receipt that was taken answers nothing.
        | Err(_) => Stored::Yes,
        Ok(MailboxEvent::Appended {
            result: Err(AppendFailure::Busy | AppendFailure::Storage),
            ..
        })
        | Ok(MailboxEvent::GroupAnswer {
            answer: Err(GroupFailure::Busy | GroupFailure::Storage),
            ..
        }) => Stored::NotNow,
        // Refused by the group's rules (not a member): never stored.
        Ok(_) => Stored::Never,
    }
}

/// A relayed request of a member homed elsewhere to a group homed here: the group's answer.
async fn serve_group(node: &Arc<Node>, call: mesh_pb::GroupCall) -> mesh_pb::GroupReply {
    let (sink, answer) = CallSink::new();
    let submitted = group_wire::job_of(call, sink)
        .ok()
        .is_some_and(|job| node.submit(MailboxOp::Group(Box::new(job))).is_ok());
    if !submitted {
        return group_wire::reply_of(Some(MailboxEvent::GroupAnswer {
            request_id: 0,
            answer: Err(GroupFailure::Busy),
        }));
    }
    group_wire::reply_of(answer.await.ok())
}

/// A member's group receipt for authors homed here (a notice, as across nodes).
fn store_receipt(node: &Arc<Node>, receipt: mesh_pb::GroupReceiptCopies) -> Stored {
    if group_service::receipt(node, receipt) {
        Stored::Yes
    } else {
        Stored::NotNow
    }
}
