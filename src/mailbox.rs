//! The mailbox service: every user's mailbox, owned by the dispatcher worker of the user's shard.
//!
//! Operations on one user's mailbox arrive in order on one worker ([`crate::dispatch`]), so the
//! worker's map needs no lock. After an append the worker pushes the new entry to the owner's
//! online devices (except the device it came from); a device that is behind reads with `Fetch`.
//! Every change is written to the shard's journal first; an entry is read, pushed and acked only
//! once the journal's fsync covers it ([`worker`]). At start the mailboxes are rebuilt from the
//! journals ([`recovery`]).

pub mod account;
pub mod checkpoint;
pub mod dedup;
pub mod device_map;
pub mod durability;
pub mod event;
pub mod group_ops;
pub mod log;
pub mod pushers;
pub mod record;
pub mod recovery;
pub mod revocation;
pub mod snapshot;
mod worker;

use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::dispatch::{DispatchError, Industry, Lane};
use crate::group::fanout::FanOut;
use crate::journal::Journal;
use crate::mailbox::durability::{Durability, Replicate};
use crate::message::{Id, MessageKind, ReceiptKind};
use crate::registry::Registry;
use crate::shard::key_hash;
use crate::store::{self, Stores};

pub use event::{AppendFailure, EventSink, MailboxEvent, SessionHandle};
pub use log::{AckInfo, Appended, Mailbox};
pub use recovery::{Slot, Storage, StorageError};
use worker::{Budget, MailboxWorker};

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

/// A user's account as the admin API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AccountInfo {
    /// The mailbox's highest seq.
    pub last_seq: u64,
    /// Entries held in memory.
    pub held: usize,
    /// First seen, ms since the epoch.
    pub created_ms: u64,
    /// The devices, ordered by id.
    pub devices: Vec<DeviceInfo>,
}

/// One device of an account.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeviceInfo {
    /// Device id.
    pub device: String,
    /// Delivery cursor (everything up to it was acked), if the mailbox knows the device.
    pub cursor: Option<u64>,
    /// First login, ms since the epoch (0 if not recorded).
    pub first_login_ms: u64,
    /// Latest login, ms since the epoch (0 if not recorded).
    pub last_login_ms: u64,
    /// The push service the device registered a token with (`apns`, `fcm`, `webpush`); the
    /// token itself is not shown.
    pub push: Option<&'static str>,
    /// Conversations the device muted (until a time still to come).
    pub muted: usize,
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
    /// A payload built elsewhere (a group entry or receipt from the fan-out), stored as is.
    Copy(crate::message::Payload),
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
    /// The session to answer with [`MailboxEvent::Appended`], and its tag for the pending send.
    pub reply: Option<(SessionHandle, u64)>,
    /// Counted down once the entry is durable (or not), for the group fan-out.
    pub done: Option<Arc<checkpoint::Countdown>>,
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
        /// The connection of the session logging in (cluster-unique; the owner of a user on
        /// another node pushes to it there).
        conn_id: u64,
        /// When the session's token was issued (seconds; 0 for a token of the first format):
        /// refused when at or before a revocation of the device or user.
        token_issued_at: u64,
        /// Answer: where delivery starts, or the revocation that refuses the token.
        reply: oneshot::Sender<Result<LoginInfo, revocation::Revoked>>,
    },
    /// An operator revokes `owner`'s tokens issued at or before `not_before` (seconds): the
    /// revocation is stored in the account and journaled, the sessions it concerns are told,
    /// and the answer waits until it is durable.
    Revoke {
        /// The user.
        owner: Id,
        /// The device signed out; `None`: every device of the user.
        device: Option<Id>,
        /// Tokens issued at or before this are refused.
        not_before: u64,
        /// Answer: the time now in force for the device (or user), once durable.
        reply: oneshot::Sender<Result<u64, revocation::RevokeError>>,
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
    /// Write back what is older than `older_than_ms` and still unacked, plus changed metadata,
    /// to the store; then count down `done`.
    WriteBack {
        /// Entries accepted before this time are written back: milliseconds on the process's
        /// monotonic clock ([`crate::clock::monotonic_ms`], compared with
        /// [`crate::message::Entry::accepted_ms`]), never the wall clock.
        older_than_ms: u64,
        /// Completed once this worker's store batch is applied (or failed).
        done: Arc<checkpoint::Countdown>,
    },
    /// Drop the mailboxes and groups of `owners` from memory (a snapshot replaces them in the
    /// stores next; nothing of theirs is written back meanwhile); then count down `done`.
    Forget {
        /// Whose.
        owners: snapshot::Owners,
        /// Counted down once this worker dropped them.
        done: Arc<checkpoint::Countdown>,
    },
    /// Take the mailboxes and groups reloaded from the stores after a snapshot.
    Restore(Box<Restored>),
    /// Hand every group's durable entries that wait to the fan-out (sent to every worker when
    /// this node starts to lead a slot group: a follower kept them without fanning out).
    PumpGroups,
    /// A group operation, on the group's worker.
    Group(Box<group_ops::GroupJob>),
    /// The groups `user` is a member of (from the user's account), answered as a
    /// [`MailboxEvent::GroupAnswer`].
    ListGroups {
        /// The user.
        user: Id,
        /// Page cursor: the groups whose id sorts after it
        /// ([`group_ops::on_page`]).
        after: Option<Id>,
        /// The client's request id.
        request_id: u64,
        /// The session to answer.
        reply: SessionHandle,
    },
    /// The fan-out finished copying a group entry (`complete`: to every recipient).
    GroupFannedOut {
        /// The group.
        group: Id,
        /// The entry.
        group_seq: u64,
        /// Every copy is durable.
        complete: bool,
    },
    /// `member`'s mailbox holds no copy of `group`'s entries up to `upto` any more (they were
    /// acked), on the group's worker: the group's log may be pruned below every member's.
    GroupReleased {
        /// The group.
        group: Id,
        /// The member (or former member).
        member: Id,
        /// Up to this group seq.
        upto: u64,
    },
    /// Records another node's leader committed in the slot group of `key`: applied as recovery
    /// applies journal records (a follower keeping warm).
    Replay {
        /// The mailbox or group the records are about.
        key: Id,
        /// The records, in log order.
        records: Vec<record::Record>,
        /// Counted down once they are applied (what the node still has to apply).
        pending: Arc<std::sync::atomic::AtomicI64>,
    },
    /// A change of one device's push registration or mutes, answered (when `reply` is set)
    /// with [`MailboxEvent::PushAnswer`] once durable.
    Push {
        /// The user.
        owner: Id,
        /// The device.
        device: Id,
        /// What changes.
        change: pushers::PushChange,
        /// Where the answer goes once the change is durable; `None` for changes the node makes
        /// itself (a token the gateway rejected).
        reply: Option<pushers::PushReply>,
    },
    /// Look up a user's account, devices and cursors.
    Account {
        /// The user.
        owner: Id,
        /// Answer: `None` for a user this node has never seen.
        reply: oneshot::Sender<Option<AccountInfo>>,
    },
    /// Read entries after `after`; answered with [`MailboxEvent::Batch`].
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
        reply: SessionHandle,
    },
}

/// One worker's mailboxes and groups reloaded from the stores after a snapshot.
pub struct Restored {
    /// The mailboxes.
    pub slots: hashbrown::HashMap<Id, Slot>,
    /// The groups.
    pub groups: hashbrown::HashMap<Id, crate::group::GroupSlot>,
    /// Counted down once this worker took them.
    pub done: Arc<checkpoint::Countdown>,
}

impl std::fmt::Debug for Restored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Restored")
            .field("slots", &self.slots.len())
            .field("groups", &self.groups.len())
            .finish()
    }
}

impl MailboxOp {
    /// The mailbox the op is about; `None` for ops sent to every worker.
    pub fn owner(&self) -> Option<&Id> {
        match self {
            MailboxOp::Login { owner, .. }
            | MailboxOp::Revoke { owner, .. }
            | MailboxOp::Ack { owner, .. }
            | MailboxOp::Fetch { owner, .. }
            | MailboxOp::Account { owner, .. }
            | MailboxOp::Push { owner, .. }
            | MailboxOp::ListGroups { user: owner, .. }
            | MailboxOp::GroupFannedOut { group: owner, .. }
            | MailboxOp::GroupReleased { group: owner, .. }
            | MailboxOp::Replay { key: owner, .. } => Some(owner),
            MailboxOp::Append(job) => Some(&job.owner),
            MailboxOp::Group(job) => Some(&job.group),
            MailboxOp::WriteBack { .. }
            | MailboxOp::PumpGroups
            | MailboxOp::Forget { .. }
            | MailboxOp::Restore(_) => None,
        }
    }

    fn lane(&self) -> Lane {
        match self {
            MailboxOp::Fetch { .. } | MailboxOp::Account { .. } | MailboxOp::ListGroups { .. } => {
                Lane::Read
            }
            _ => Lane::Write,
        }
    }
}

/// Each mailbox worker's share of `mailbox.cache_bytes`.
pub fn cache_budget_per_worker(config: &Config) -> usize {
    let workers = crate::shard::SHARDS * config.dispatch.workers_per_shard as usize;
    usize::try_from(config.mailbox.cache_bytes).unwrap_or(usize::MAX) / workers
}

/// The mailbox service: 32 shards of mailbox workers.
pub struct Mailboxes {
    industry: Industry<MailboxOp>,
    journals: Vec<Arc<Journal>>,
    stores: Arc<Stores>,
    /// What a reload after a snapshot loads into memory.
    limits: recovery::LoadLimits,
    /// Taken while a slot group's durable point is written (checkpoints, snapshots), so an
    /// older one never overwrites a newer one.
    points: tokio::sync::Mutex<()>,
    /// With replicated slots: the slot groups the workers write through (set on joining).
    replicate: Arc<OnceLock<Arc<dyn Replicate>>>,
}

impl Mailboxes {
    /// Starts the workers on the recovered mailboxes, each writing to its shard's journal.
    pub fn start(
        config: &Config,
        registry: Arc<Registry>,
        storage: Storage,
        fanout: &FanOut,
        push: Option<Arc<crate::push::hub::PushHub>>,
    ) -> (Self, Vec<JoinHandle<()>>) {
        let Storage {
            journals,
            stores,
            mut recovered,
            mut groups,
        } = storage;
        let max_members = config.groups.max_members as usize;
        let dedup_window = config.mailbox.dedup_window as usize;
        let push_queue = config.mailbox.push_queue;
        let workers_per_shard = config.dispatch.workers_per_shard as usize;
        let worker_budget = cache_budget_per_worker(config);
        let huge_entries = config.mailbox.huge_mailbox_entries as usize;
        let replicate: Arc<OnceLock<Arc<dyn Replicate>>> = Arc::new(OnceLock::new());
        let replicated = config
            .cluster
            .as_ref()
            .is_some_and(|cluster| cluster.replication_factor > 1);
        let (industry, handles) = Industry::start("mailbox", &config.dispatch, |shard, worker| {
            let index = shard * workers_per_shard + worker;
            let slots = std::mem::take(&mut recovered[index]);
            let setup = worker::GroupSetup {
                groups: std::mem::take(&mut groups[index]),
                fanout: fanout.clone(),
                max_members,
                reference_threshold: config.groups.reference_threshold as usize,
                clustered: config.cluster.is_some(),
                push: push.clone(),
            };
            MailboxWorker::new(
                shard,
                slots,
                if replicated {
                    Durability::Replicated(replicate.clone())
                } else {
                    Durability::Journal(journals[shard % journals.len()].clone())
                },
                stores.clone(),
                registry.clone(),
                dedup_window,
                push_queue,
                Budget {
                    bytes: worker_budget,
                    huge_entries,
                },
                setup,
            )
        });
        let mailboxes = Self {
            industry,
            journals,
            stores,
            limits: recovery::LoadLimits::of(config),
            points: tokio::sync::Mutex::new(()),
            replicate,
        };
        (mailboxes, handles)
    }

    /// The journals, in shard order (`shard % count`).
    pub fn journals(&self) -> &[Arc<Journal>] {
        &self.journals
    }

    /// Makes the workers write through `replicate` (with replicated slots; once, on joining
    /// the cluster, before phones are accepted). Without replicated slots it changes nothing.
    pub fn replicate_through(&self, replicate: Arc<dyn Replicate>) {
        let _ = self.replicate.set(replicate);
    }

    /// What the workers replicate through, once set.
    pub fn replicated(&self) -> Option<Arc<dyn Replicate>> {
        self.replicate.get().cloned()
    }

    /// The stores.
    pub fn stores(&self) -> &Arc<Stores> {
        &self.stores
    }

    /// Queues one job made by `make` on every worker's write lane, waiting for room in full
    /// queues; returns how many workers have stopped.
    pub async fn broadcast_wait(&self, make: impl FnMut() -> MailboxOp) -> usize {
        self.industry.submit_all_wait(Lane::Internal, make).await
    }

    /// Every stored row of `owners` (a slot group's snapshot, see [`snapshot`]).
    pub async fn export(&self, owners: snapshot::Owners) -> Result<Bytes, snapshot::SnapshotError> {
        snapshot::export(&self.stores, owners).await
    }

    /// Held while a slot group's durable point is written.
    pub async fn points(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.points.lock().await
    }

    /// Makes `snapshot` the state of `owners`: the workers drop them, their rows in the stores
    /// are replaced and checkpointed, then `mark` (the snapshot's point, now the group's
    /// durable point) is written and checkpointed, and the workers reload them from the stores.
    pub async fn install(
        &self,
        owners: snapshot::Owners,
        snapshot: &Bytes,
        mark: &durability::Mark,
    ) -> Result<(), snapshot::SnapshotError> {
        use snapshot::SnapshotError::Reload;
        let (countdown, dropped) = checkpoint::Countdown::new(self.workers());
        let refused = self
            .broadcast_wait(|| MailboxOp::Forget {
                owners: owners.clone(),
                done: countdown.clone(),
            })
            .await;
        if refused > 0 || !dropped.await.unwrap_or(false) {
            return Err(Reload("the workers stopped".into()));
        }
        snapshot::replace(&self.stores, owners.clone(), snapshot).await?;
        self.stores.checkpoint_all().await?;
        {
            let _points = self.points().await;
            let mut saved = store::WriteBatch::new();
            saved.put_record(
                &recovery::slot_checkpoint_key(mark.group),
                recovery::encode_slot_mark(mark.index, &mark.point),
            );
            self.stores.write_batch(0, saved)?.await?;
            self.stores.checkpoint_all().await?;
        }
        let stores = self.stores.clone();
        let limits = self.limits.clone();
        let reloading = owners.clone();
        let (mut slots, mut groups) =
            tokio::task::spawn_blocking(move || recovery::reload(&stores, &limits, &reloading))
                .await
                .map_err(|error| Reload(error.to_string()))?
                .map_err(|error| Reload(error.to_string()))?;
        let (countdown, taken) = checkpoint::Countdown::new(self.workers());
        // One map per worker, in the workers' order (shard, then worker in its shard).
        let mut worker = 0;
        let refused = self
            .broadcast_wait(|| {
                let restored = Restored {
                    slots: std::mem::take(&mut slots[worker]),
                    groups: std::mem::take(&mut groups[worker]),
                    done: countdown.clone(),
                };
                worker += 1;
                MailboxOp::Restore(Box::new(restored))
            })
            .await;
        if refused > 0 || !taken.await.unwrap_or(false) {
            return Err(Reload("the workers stopped".into()));
        }
        Ok(())
    }

    /// Number of workers.
    pub fn workers(&self) -> usize {
        self.industry.workers()
    }

    /// Ends every worker after its current batch (shutdown, once no session is left).
    pub fn stop(&self) {
        self.industry.stop();
    }

    /// Queues `op` on the worker that owns its mailbox, without waiting.
    pub fn submit(&self, op: MailboxOp) -> Result<(), DispatchError<MailboxOp>> {
        let hash = op.owner().map_or(0, |owner| key_hash(owner.as_bytes()));
        let lane = op.lane();
        self.industry.submit(hash, lane, op)
    }

    /// Looks up `owner`'s account through its worker's read lane; `Ok(None)` for a user this
    /// node has never seen.
    pub async fn account(&self, owner: Id) -> Result<Option<AccountInfo>, DispatchError<()>> {
        let (reply, answer) = oneshot::channel();
        self.submit(MailboxOp::Account { owner, reply })
            .map_err(|error| match error {
                DispatchError::Overloaded(_) => DispatchError::Overloaded(()),
                DispatchError::Stopped(_) => DispatchError::Stopped(()),
            })?;
        answer.await.map_err(|_| DispatchError::Stopped(()))
    }

    /// Queues `op` on the internal lane of the worker that owns its mailbox, waiting while the
    /// lane is full (the node's own work: the phones' lanes keep their room).
    pub async fn submit_wait(&self, op: MailboxOp) -> Result<(), DispatchError<MailboxOp>> {
        let hash = op.owner().map_or(0, |owner| key_hash(owner.as_bytes()));
        self.industry.submit_wait(hash, Lane::Internal, op).await
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
