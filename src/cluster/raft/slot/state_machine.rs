//! A slot group's state machine: hands every committed entry to the node's [`SlotApplier`] (the
//! mailbox workers) in log order. Whether an entry is this process's own (already in its
//! state) is the applier's to tell, by its origin.
//!
//! Durable point: the workers write back to the stores, and a checkpoint records, with the
//! stores, the id up to which everything applied is in them ([`SlotStateMachine::mark`], then
//! [`SlotStateMachine::durable_at`]). A restarted process starts from that point and openraft
//! re-applies only the entries after it (applying a record twice leaves a mailbox as applying it
//! once). The snapshot is that point: its state is the stores themselves, so it carries no data;
//! the log before it may be purged once every voter holds it (`groups.rs`), and a member that
//! would need a purged entry cannot be caught up by it (installing is refused).

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::type_config::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};

use super::{SlotCommand, SlotTypes};

/// What slot groups' committed entries are applied to.
pub trait SlotApplier: Send + Sync + 'static {
    /// Applies one committed entry of `group` (its log `index`), in log order: the future
    /// completes once the entry is handed on in that order (the next waits for it).
    fn apply(&self, group: u64, index: u64, command: SlotCommand) -> BoxFuture<'static, ()>;
    /// The state of `group` as of everything applied so far: what a replica that is new or
    /// too far behind installs.
    fn snapshot(&self, group: u64) -> Bytes;
    /// Replaces the state of `group` with `snapshot`.
    fn install(&self, group: u64, snapshot: &Bytes) -> Result<(), String>;
    /// The durable point of `group` the last checkpoint saved (an encoded `SnapshotMeta`).
    fn saved(&self, group: u64) -> BoxFuture<'static, Option<Bytes>>;
}

type Meta = SnapshotMetaOf<SlotTypes>;

struct Applied {
    last_applied: Option<LogIdOf<SlotTypes>>,
    last_membership: StoredMembershipOf<SlotTypes>,
    /// What the stores hold (saved by a checkpoint); the snapshot.
    durable: Option<Meta>,
    /// A snapshot installed from a leader (never today: installing is refused).
    installed: Option<SnapshotOf<SlotTypes, Bytes>>,
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
                installed: None,
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

    /// The current snapshot: one installed from a leader, else the durable point (no data).
    fn current(applied: &Applied) -> Option<SnapshotOf<SlotTypes, Bytes>> {
        let durable = applied
            .durable
            .as_ref()
            .map(|meta| SnapshotOf::<SlotTypes, Bytes> {
                meta: meta.clone(),
                snapshot: Bytes::new(),
            });
        match (&applied.installed, durable) {
            (Some(installed), Some(durable))
                if durable.meta.last_log_id > installed.meta.last_log_id =>
            {
                Some(durable)
            }
            (Some(installed), _) => Some(installed.clone()),
            (None, durable) => durable,
        }
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
                snapshot: self.applier.snapshot(self.group),
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
        self.applier
            .install(self.group, &snapshot)
            .map_err(io::Error::other)?;
        let mut applied = self.lock();
        applied.last_applied = meta.last_log_id;
        applied.last_membership = meta.last_membership.clone();
        applied.installed = Some(SnapshotOf::<SlotTypes, Bytes> {
            meta: meta.clone(),
            snapshot,
        });
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<SlotTypes, Bytes>>, io::Error> {
        Ok(Self::current(&self.lock()))
    }
}
