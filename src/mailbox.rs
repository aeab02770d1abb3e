//! The mailbox service: every user's mailbox, owned by the dispatcher worker of the user's shard.
//!
//! Operations on one user's mailbox arrive in order on one worker ([`crate::dispatch`]), so the
//! worker's map needs no lock. After an append the worker pushes the new entry to the owner's
//! online devices (except the device it came from); a device that is behind reads with `Fetch`.
//! This in-memory map is the write-back cache layer; the journal and sled stores sit under it.

pub mod log;
pub mod record;

use std::sync::Arc;

use bytes::Bytes;
use hashbrown::HashMap;
use metrics::{Counter, Gauge};
use ractor::ActorRef;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::dispatch::{DispatchError, Industry, Lane, Worker};
use crate::message::{ChatMessage, Entry, Id, MessageKind, Payload, ReceiptKind, ReceiptNotice};
use crate::metrics as names;
use crate::registry::Registry;
use crate::session::SessionMsg;
use crate::shard::key_hash;

pub use log::{AckInfo, Appended, Mailbox};

/// Where a device's delivery starts after login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginInfo {
    /// Delivery resumes after this seq.
    pub cursor: u64,
    /// The mailbox's highest seq.
    pub last_seq: u64,
    /// Devices of the user known to the mailbox (this one included).
    pub devices: usize,
}

/// What an append carries besides its envelope.
#[derive(Debug, Clone)]
pub enum Content {
    /// A chat message to `to_user`.
    Message {
        /// Addressee.
        to_user: Id,
        /// Body type.
        kind: MessageKind,
        /// Body.
        body: Bytes,
    },
    /// A receipt covering the mailbox owner's messages up to `up_to_seq` in the author's mailbox.
    Receipt {
        /// Delivered or read.
        kind: ReceiptKind,
        /// Seq in the receipt author's mailbox.
        up_to_seq: u64,
    },
}

/// One append: the entry to store in `owner`'s mailbox and who to tell.
#[derive(Debug)]
pub struct AppendJob {
    /// Mailbox owner.
    pub owner: Id,
    /// Author.
    pub from_user: Id,
    /// Author's device.
    pub from_device: Id,
    /// Author's id, for deduplication.
    pub client_msg_id: Arc<str>,
    /// Server id assigned before dispatch (the same for every copy of one message).
    pub server_id: u64,
    /// Acceptance time.
    pub timestamp_ms: u64,
    /// What is stored.
    pub content: Content,
    /// The session to answer with [`SessionMsg::Appended`], and its tag for the pending send.
    pub reply: Option<(ActorRef<SessionMsg>, u64)>,
}

/// Operations on mailboxes.
#[derive(Debug)]
pub enum MailboxOp {
    /// A device logs in: register it and apply its resume cursor.
    Login {
        /// Mailbox owner.
        owner: Id,
        /// The device.
        device: Id,
        /// The device's stored position.
        resume_after: u64,
        /// Answer.
        reply: oneshot::Sender<LoginInfo>,
    },
    /// Store an entry.
    Append(Box<AppendJob>),
    /// A device acked everything up to `up_to`.
    Ack {
        /// Mailbox owner.
        owner: Id,
        /// The device.
        device: Id,
        /// Cumulative ack.
        up_to: u64,
    },
    /// Read entries after `after`; answered with [`SessionMsg::Batch`].
    Fetch {
        /// Mailbox owner.
        owner: Id,
        /// Read after this seq.
        after: u64,
        /// At most this many entries.
        limit: usize,
        /// And (past the first) at most this many bytes.
        max_bytes: usize,
        /// The session to answer.
        reply: ActorRef<SessionMsg>,
    },
}

impl MailboxOp {
    fn owner(&self) -> &Id {
        match self {
            MailboxOp::Login { owner, .. }
            | MailboxOp::Ack { owner, .. }
            | MailboxOp::Fetch { owner, .. } => owner,
            MailboxOp::Append(job) => &job.owner,
        }
    }

    fn lane(&self) -> Lane {
        match self {
            MailboxOp::Fetch { .. } => Lane::Read,
            _ => Lane::Write,
        }
    }
}

/// The mailbox service: 32 shards of mailbox workers.
pub struct Mailboxes {
    industry: Industry<MailboxOp>,
}

impl Mailboxes {
    /// Starts the workers.
    pub fn start(config: &Config, registry: Arc<Registry>) -> (Self, Vec<JoinHandle<()>>) {
        let dedup_window = config.mailbox.dedup_window as usize;
        let push_queue = config.mailbox.push_queue;
        let (industry, handles) =
            Industry::start("mailbox", &config.dispatch, |_, _| MailboxWorker {
                mailboxes: HashMap::new(),
                registry: registry.clone(),
                dedup_window,
                push_queue,
                entries: metrics::gauge!(names::MAILBOX_ENTRIES),
                pushes_skipped: metrics::counter!(names::PUSHES_SKIPPED),
            });
        (Self { industry }, handles)
    }

    /// Queues `op` on the worker that owns its mailbox, without waiting.
    pub fn submit(&self, op: MailboxOp) -> Result<(), DispatchError<MailboxOp>> {
        let hash = key_hash(op.owner().as_bytes());
        let lane = op.lane();
        self.industry.submit(hash, lane, op)
    }

    /// Publishes queue depths as gauges.
    pub fn report_depths(&self) {
        self.industry.report_depths();
    }

    /// Jobs waiting in all queues.
    pub fn depth(&self) -> usize {
        self.industry.depth()
    }
}

struct MailboxWorker {
    mailboxes: HashMap<Id, Mailbox>,
    registry: Arc<Registry>,
    dedup_window: usize,
    push_queue: u32,
    entries: Gauge,
    pushes_skipped: Counter,
}

impl Worker for MailboxWorker {
    type Job = MailboxOp;

    fn handle(&mut self, job: MailboxOp) {
        match job {
            MailboxOp::Login {
                owner,
                device,
                resume_after,
                reply,
            } => {
                let mailbox = self.mailboxes.entry(owner.clone()).or_default();
                let (before, devices_before) = (mailbox.len(), mailbox.devices());
                let cursor = mailbox.login(&device, resume_after);
                let devices = mailbox.devices();
                self.entries.decrement((before - mailbox.len()) as f64);
                let _ = reply.send(LoginInfo {
                    cursor,
                    last_seq: mailbox.last_seq(),
                    devices,
                });
                if devices != devices_before {
                    // A new device: the user's online sessions start copying own messages.
                    self.registry.for_each(&owner, |session| {
                        let _ = session.actor.cast(SessionMsg::Devices(devices));
                    });
                }
            }
            MailboxOp::Append(job) => self.append(*job),
            MailboxOp::Ack {
                owner,
                device,
                up_to,
            } => {
                if let Some(mailbox) = self.mailboxes.get_mut(&owner) {
                    let dropped = mailbox.ack(&device, up_to);
                    self.entries.decrement(dropped as f64);
                }
            }
            MailboxOp::Fetch {
                owner,
                after,
                limit,
                max_bytes,
                reply,
            } => {
                let (entries, last_seq) = self.mailboxes.get(&owner).map_or((Vec::new(), 0), |m| {
                    (m.fetch(after, limit, max_bytes), m.last_seq())
                });
                let _ = reply.cast(SessionMsg::Batch { entries, last_seq });
            }
        }
    }
}

impl MailboxWorker {
    fn append(&mut self, job: AppendJob) {
        let AppendJob {
            owner,
            from_user,
            from_device,
            client_msg_id,
            server_id,
            timestamp_ms,
            content,
            reply,
        } = job;
        let mailbox = self.mailboxes.entry(owner.clone()).or_default();
        let outcome = mailbox.append(
            &from_user,
            &client_msg_id,
            server_id,
            timestamp_ms,
            self.dedup_window,
            || match content {
                Content::Message {
                    to_user,
                    kind,
                    body,
                } => Payload::Message(ChatMessage {
                    server_id,
                    from_user: from_user.clone(),
                    from_device: from_device.clone(),
                    to_user,
                    client_msg_id: client_msg_id.clone(),
                    kind,
                    body,
                }),
                Content::Receipt { kind, up_to_seq } => Payload::Receipt(ReceiptNotice {
                    from_user: from_user.clone(),
                    from_device: from_device.clone(),
                    kind,
                    up_to_seq,
                }),
            },
        );
        let (ack, duplicate) = match outcome {
            Appended::New(entry) => {
                self.entries.increment(1.0);
                let ack = AckInfo {
                    seq: entry.seq,
                    server_id,
                    timestamp_ms,
                };
                self.push(&owner, entry);
                (ack, false)
            }
            Appended::Duplicate(ack) => (ack, true),
        };
        if let Some((session, tag)) = reply {
            let _ = session.cast(SessionMsg::Appended {
                tag,
                ack,
                duplicate,
            });
        }
    }

    /// Sends a new entry to the owner's online devices, except the one it came from.
    fn push(&self, owner: &Id, entry: Arc<Entry>) {
        let (origin_user, origin_device) = entry.origin();
        let own_copy = origin_user == owner;
        self.registry.for_each(owner, |session| {
            if own_copy && &session.device == origin_device {
                return;
            }
            if session.pushes.try_reserve(self.push_queue) {
                if session.actor.cast(SessionMsg::Push(entry.clone())).is_err() {
                    session.pushes.release();
                }
            } else {
                self.pushes_skipped.increment(1);
            }
        });
    }
}
