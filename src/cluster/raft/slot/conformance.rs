//! openraft's storage conformance suite run against the slot groups' shared log engine, with an
//! in-memory state machine that keeps the applied mailbox records (the suite tests the log and
//! the state machine together; the slot groups' real state machine is the mailbox workers).

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use futures_util::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, StorageError};
use prost::Message;

use super::{GroupLog, LogEngine, SlotTypes};
use crate::journal::JournalConfig;
use crate::proto::mesh as pb;

#[derive(Default)]
struct Applied {
    records: Vec<Bytes>,
    last_applied: Option<LogIdOf<SlotTypes>>,
    last_membership: StoredMembershipOf<SlotTypes>,
    snapshot: Option<SnapshotOf<SlotTypes, Bytes>>,
}

/// The applied records, in memory.
#[derive(Clone, Default)]
struct Records(Arc<Mutex<Applied>>);

impl Records {
    fn lock(&self) -> MutexGuard<'_, Applied> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl RaftSnapshotBuilder<SlotTypes> for Records {
    type SnapshotData = Bytes;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<SlotTypes, Bytes>, io::Error> {
        let mut applied = self.lock();
        let snapshot = SnapshotOf::<SlotTypes, Bytes> {
            meta: SnapshotMetaOf::<SlotTypes> {
                last_log_id: applied.last_applied,
                last_membership: applied.last_membership.clone(),
            },
            snapshot: Bytes::from(
                pb::SlotCommand {
                    records: applied.records.clone(),
                    origin: 0,
                    serial: 0,
                    media: Vec::new(),
                }
                .encode_to_vec(),
            ),
        };
        applied.snapshot = Some(snapshot.clone());
        Ok(snapshot)
    }
}

impl RaftStateMachine<SlotTypes> for Records {
    type SnapshotData = Bytes;
    type SnapshotBuilder = Records;

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
            {
                let mut applied = self.lock();
                applied.last_applied = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => {}
                    EntryPayload::Normal(command) => applied.records.extend(command.records),
                    EntryPayload::Membership(membership) => {
                        applied.last_membership =
                            StoredMembershipOf::<SlotTypes>::new(Some(entry.log_id), membership);
                    }
                }
            }
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
        let command = pb::SlotCommand::decode(snapshot.clone())
            .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))?;
        let mut applied = self.lock();
        applied.records = command.records;
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

struct EngineStores;

impl StoreBuilder<SlotTypes, GroupLog, Records, (tempfile::TempDir, Arc<LogEngine>)>
    for EngineStores
{
    async fn build(
        &self,
    ) -> Result<((tempfile::TempDir, Arc<LogEngine>), GroupLog, Records), StorageError<SlotTypes>>
    {
        let dir = tempfile::tempdir().expect("temp dir");
        let engine = LogEngine::open(JournalConfig::new(dir.path())).expect("engine opens");
        // Another group writes into the same journal meanwhile: it must not show in group 7.
        let _neighbour = engine.group(8);
        let log = engine.group(7);
        Ok(((dir, engine), log, Records::default()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_log_engine_passes_the_openraft_suite() {
    Suite::test_all(EngineStores)
        .await
        .expect("conformance suite passes");
}
