//! A slot group's state machine: hands every committed entry to the node's [`SlotApplier`] (the
//! mailbox workers) in log order. Whether an entry is this process's own (already in its
//! state) is the applier's to tell, by its origin.
//!
//! Durable point: the workers write back to the stores, and a checkpoint records, with the
//! stores, the id up to which everything applied is in them ([`SlotStateMachine::mark`], then
//! [`SlotStateMachine::durable_at`]). A restarted process starts from that point and openraft
//! re-applies only the entries after it (applying a record twice leaves a mailbox as applying it
//! once). The snapshot is that point: its state is the stores themselves, so it carries no data
//! until it is sent (`network.rs` has the applier export the group's rows then); a member too
//! far behind installs those rows and takes the point as its own durable point.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::type_config::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};

use prost::Message;

use super::{SlotCommand, SlotTypes, telemetry};
use crate::cluster::raft::convert;

/// What slot groups' committed entries are applied to.
pub trait SlotApplier: Send + Sync + 'static {
    /// Applies one committed entry of `group` (its log `index`), in log order: the future
    /// completes once the entry is handed on in that order (the next waits for it).
    fn apply(&self, group: u64, index: u64, command: SlotCommand) -> BoxFuture<'static, ()>;
    /// The state of `group`, as far as the stores hold it (at least up to its durable point):
    /// what a member too far behind installs.
    fn export(&self, group: u64) -> BoxFuture<'static, Result<Bytes, String>>;
    /// Replaces the state of `group` with `snapshot` and saves `mark` (an encoded
    /// `SnapshotMeta`, at log index `index`) as its durable point, durably, before it
    /// completes.
    fn install(
        &self,
        group: u64,
        index: u64,
        mark: Bytes,
        snapshot: Bytes,
    ) -> BoxFuture<'static, Result<(), String>>;
    /// The durable point of `group` the last checkpoint saved (an encoded `SnapshotMeta`).
    fn saved(&self, group: u64) -> BoxFuture<'static, Option<Bytes>>;
}

type Meta = SnapshotMetaOf<SlotTypes>;

struct Applied {
    last_applied: Option<LogIdOf<SlotTypes>>,
    last_membership: StoredMembershipOf<SlotTypes>,
    /// What the stores hold (saved by a checkpoint or with an installed snapshot); the
    /// snapshot.
    durable: Option<Meta>,
}

/// The state machine of one slot group on this node.
#[derive(Clone)]
pub struct SlotStateMachine {
    group: u64,
    applier: Arc<dyn SlotApplier>,
    applied: Arc<Mutex<Applied>>,
}

impl SlotStateMachine {
    /// The state machine of `group`, applying to `applier`, starting at the durable point
    /// `saved` (everything up to it is in the stores), or at nothing.
    pub fn new(group: u64, applier: Arc<dyn SlotApplier>, saved: Option<Meta>) -> SlotStateMachine {
        SlotStateMachine {
            group,
            applier,
            applied: Arc::new(Mutex::new(Applied {
                last_applied: saved.as_ref().and_then(|meta| meta.last_log_id),
                last_membership: saved
                    .as_ref()
                    .map(|meta| meta.last_membership.clone())
                    .unwrap_or_default(),
                durable: saved,
            })),
        }
    }

    /// What is applied now (the id and the membership as of it): a durable point once a
    /// write-back that starts after this call is checkpointed.
    pub fn mark(&self) -> Meta {
        let applied = self.lock();
        Meta {
            last_log_id: applied.last_applied,
            last_membership: applied.last_membership.clone(),
        }
    }

    /// Everything applied up to `meta` is in the stores (a checkpoint saved it).
    pub fn durable_at(&self, meta: Meta) {
        let mut applied = self.lock();
        let newer = applied
            .durable
            .as_ref()
            .is_none_or(|durable| durable.last_log_id < meta.last_log_id);
        if newer {
            applied.durable = Some(meta);
        }
    }

    /// The durable point, if a checkpoint saved one.
    pub fn durable(&self) -> Option<LogIdOf<SlotTypes>> {
        self.lock()
            .durable
            .as_ref()
            .and_then(|durable| durable.last_log_id)
    }

    /// The current snapshot: the durable point (its data is exported when it is sent).
    fn current(applied: &Applied) -> Option<SnapshotOf<SlotTypes, Bytes>> {
        applied
            .durable
            .as_ref()
            .map(|meta| SnapshotOf::<SlotTypes, Bytes> {
                meta: meta.clone(),
                snapshot: Bytes::new(),
            })
    }

    fn lock(&self) -> MutexGuard<'_, Applied> {
        self.applied
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl RaftSnapshotBuilder<SlotTypes> for SlotStateMachine {
    type SnapshotData = Bytes;

    /// The durable point (what the stores hold), never more than that: the log after it is
    /// what a restart re-applies.
    async fn build_snapshot(&mut self) -> Result<SnapshotOf<SlotTypes, Bytes>, io::Error> {
        let applied = self.lock();
        Ok(
            Self::current(&applied).unwrap_or_else(|| SnapshotOf::<SlotTypes, Bytes> {
                meta: Meta::default(),
                snapshot: Bytes::new(),
            }),
        )
    }
}

impl RaftStateMachine<SlotTypes> for SlotStateMachine {
    type SnapshotData = Bytes;
    type SnapshotBuilder = SlotStateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<SlotTypes>>, StoredMembershipOf<SlotTypes>), io::Error> {
        let applied = self.lock();
        Ok((applied.last_applied, applied.last_membership.clone()))
    }

    async fn apply<S>(&mut self, mut entries: S) -> Result<(), io::Error>
    where
        S: Stream<Item = Result<EntryResponder<SlotTypes>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            let command = match entry.payload {
                EntryPayload::Blank => None,
                EntryPayload::Normal(command) => Some(command),
                EntryPayload::Membership(membership) => {
                    self.lock().last_membership =
                        StoredMembershipOf::<SlotTypes>::new(Some(entry.log_id), membership);
                    None
                }
            };
            if let Some(command) = command {
                // In log order: the next entry waits until this one is handed on.
                self.applier
                    .apply(self.group, entry.log_id.index, command)
                    .await;
            }
            self.lock().last_applied = Some(entry.log_id);
            if let Some(responder) = responder {
                responder.send(());
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<SlotTypes>,
        snapshot: Bytes,
    ) -> Result<(), io::Error> {
        let mark = Bytes::from(convert::snapshot_meta_to_proto(meta).encode_to_vec());
        let index = meta.last_log_id.map_or(0, |log_id| log_id.index);
        if let Err(error) = self
            .applier
            .install(self.group, index, mark, snapshot)
            .await
        {
            metrics::counter!(telemetry::SNAPSHOT_FAILURES).increment(1);
            return Err(io::Error::other(error));
        }
        metrics::counter!(telemetry::SNAPSHOTS_INSTALLED).increment(1);
        tracing::info!(group = self.group, last = ?meta.last_log_id, "slot group snapshot installed");
        let mut applied = self.lock();
        applied.last_applied = meta.last_log_id;
        applied.last_membership = meta.last_membership.clone();
        applied.durable = Some(meta.clone());
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<SlotTypes, Bytes>>, io::Error> {
        Ok(Self::current(&self.lock()))
    }
}
