//! A slot group's state machine: hands every committed entry to the node's [`SlotApplier`] (the
//! mailbox workers) in log order, and builds and installs snapshots through it. The applied id
//! and membership live here; a restarted process starts from none, so openraft re-applies the
//! log it kept (applying a record twice leaves a mailbox as applying it once). Whether an entry
//! is this process's own (already in its state) is the applier's to tell, by its origin.

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
}

struct Applied {
    last_applied: Option<LogIdOf<SlotTypes>>,
    last_membership: StoredMembershipOf<SlotTypes>,
    snapshot: Option<SnapshotOf<SlotTypes, Bytes>>,
}

/// The state machine of one slot group on this node.
#[derive(Clone)]
pub struct SlotStateMachine {
    group: u64,
    applier: Arc<dyn SlotApplier>,
    applied: Arc<Mutex<Applied>>,
}

impl SlotStateMachine {
    /// The state machine of `group`, applying to `applier`.
    pub fn new(group: u64, applier: Arc<dyn SlotApplier>) -> SlotStateMachine {
        SlotStateMachine {
            group,
            applier,
            applied: Arc::new(Mutex::new(Applied {
                last_applied: None,
                last_membership: StoredMembershipOf::<SlotTypes>::default(),
                snapshot: None,
            })),
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

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<SlotTypes, Bytes>, io::Error> {
        let mut applied = self.lock();
        let snapshot = SnapshotOf::<SlotTypes, Bytes> {
            meta: SnapshotMetaOf::<SlotTypes> {
                last_log_id: applied.last_applied,
                last_membership: applied.last_membership.clone(),
            },
            snapshot: self.applier.snapshot(self.group),
        };
        applied.snapshot = Some(snapshot.clone());
        Ok(snapshot)
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
        applied.snapshot = Some(SnapshotOf::<SlotTypes, Bytes> {
            meta: meta.clone(),
            snapshot,
        });
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<SlotTypes, Bytes>>, io::Error> {
        Ok(self.lock().snapshot.clone())
    }
}
