//! The metadata group's state machine: applies map commands to the [`ClusterMap`], publishes
//! every applied map on a watch, and keeps the current snapshot (the encoded map) in
//! `cluster/snapshot`, fsynced, so a restart after the log was purged still has its map.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use futures_util::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::type_config::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use prost::Message;
use tokio::sync::watch;

use super::MetaTypes;
use super::convert;
use crate::cluster::map::ClusterMap;
use crate::fsync;
use crate::proto::mesh as pb;

/// The snapshot file's name under the cluster directory.
pub const SNAPSHOT_FILE: &str = "snapshot";

struct Inner {
    dir: PathBuf,
    map: ClusterMap,
    last_applied: Option<LogIdOf<MetaTypes>>,
    last_membership: StoredMembershipOf<MetaTypes>,
    snapshot: Option<(SnapshotMetaOf<MetaTypes>, Bytes)>,
}

/// openraft's state machine (and snapshot builder) over the cluster map.
#[derive(Clone)]
pub struct StateMachine {
    inner: Arc<Mutex<Inner>>,
    published: Arc<watch::Sender<Arc<ClusterMap>>>,
}

impl StateMachine {
    /// Opens the state machine in `dir`, starting from the stored snapshot if there is one.
    pub fn open(dir: &Path) -> io::Result<StateMachine> {
        fsync::create_dir_durably(dir)?;
        let mut inner = Inner {
            dir: dir.to_owned(),
            map: ClusterMap::default(),
            last_applied: None,
            last_membership: StoredMembershipOf::<MetaTypes>::default(),
            snapshot: None,
        };
        match fs::read(dir.join(SNAPSHOT_FILE)) {
            Ok(bytes) => {
                let (meta, data) = decode_stored(&bytes)?;
                inner.map = ClusterMap::decode_snapshot(&data).map_err(invalid)?;
                inner.last_applied = meta.last_log_id;
                inner.last_membership = meta.last_membership.clone();
                inner.snapshot = Some((meta, data));
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
        let (published, _) = watch::channel(Arc::new(inner.map.clone()));
        Ok(StateMachine {
            inner: Arc::new(Mutex::new(inner)),
            published: Arc::new(published),
        })
    }

    /// A receiver of every applied map.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ClusterMap>> {
        self.published.subscribe()
    }

    /// The map as last applied.
    pub fn map(&self) -> Arc<ClusterMap> {
        self.published.borrow().clone()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Publishes `map` unless readers already have it (or a newer one: the map never goes back).
    fn publish(&self, map: &ClusterMap) {
        self.published.send_if_modified(|current| {
            if map.version > current.version {
                *current = Arc::new(map.clone());
                true
            } else {
                false
            }
        });
    }
}

impl Inner {
    /// Writes the snapshot file (temp file, fsync, rename, directory fsync).
    fn persist(&self, meta: &SnapshotMetaOf<MetaTypes>, data: &Bytes) -> io::Result<()> {
        let stored = pb::StoredSnapshot {
            meta: Some(convert::snapshot_meta_to_proto(meta)),
            data: data.clone(),
        };
        let body = stored.encode_to_vec();
        let mut bytes = Vec::with_capacity(body.len() + 4);
        bytes.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        bytes.extend_from_slice(&body);
        let temp = self.dir.join(format!("{SNAPSHOT_FILE}.tmp"));
        {
            let mut file = File::create(&temp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
        }
        fs::rename(&temp, self.dir.join(SNAPSHOT_FILE))?;
        fsync::sync_dir(&self.dir)
    }
}

fn decode_stored(bytes: &[u8]) -> io::Result<(SnapshotMetaOf<MetaTypes>, Bytes)> {
    let (crc, body) = bytes
        .split_at_checked(4)
        .ok_or_else(|| invalid("short snapshot file"))?;
    if crc32c::crc32c(body).to_le_bytes() != crc {
        return Err(invalid("snapshot file checksum mismatch"));
    }
    let stored = pb::StoredSnapshot::decode(body).map_err(invalid)?;
    let meta = stored
        .meta
        .ok_or_else(|| invalid("snapshot file without meta"))?;
    Ok((
        convert::snapshot_meta_from_proto(&meta).map_err(invalid)?,
        stored.data,
    ))
}

fn invalid(error: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error.to_string())
}

impl RaftSnapshotBuilder<MetaTypes> for StateMachine {
    type SnapshotData = Bytes;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<MetaTypes, Bytes>, io::Error> {
        let mut inner = self.lock();
        let meta = SnapshotMetaOf::<MetaTypes> {
            last_log_id: inner.last_applied,
            last_membership: inner.last_membership.clone(),
        };
        let data = inner.map.encode_snapshot();
        fsync::off_the_runtime(|| inner.persist(&meta, &data))?;
        inner.snapshot = Some((meta.clone(), data.clone()));
        Ok(SnapshotOf::<MetaTypes, Bytes> {
            meta,
            snapshot: data,
        })
    }
}

impl RaftStateMachine<MetaTypes> for StateMachine {
    type SnapshotData = Bytes;
    type SnapshotBuilder = StateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<MetaTypes>>, StoredMembershipOf<MetaTypes>), io::Error> {
        let inner = self.lock();
        Ok((inner.last_applied, inner.last_membership.clone()))
    }

    async fn apply<S>(&mut self, mut entries: S) -> Result<(), io::Error>
    where
        S: Stream<Item = Result<EntryResponder<MetaTypes>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            let (response, map) = {
                let mut inner = self.lock();
                inner.last_applied = Some(entry.log_id);
                let response = match entry.payload {
                    EntryPayload::Blank => Ok(inner.map.version),
                    EntryPayload::Normal(command) => {
                        let result = inner.map.apply(&command);
                        result.map(|_| inner.map.version)
                    }
                    EntryPayload::Membership(membership) => {
                        inner.last_membership =
                            StoredMembershipOf::<MetaTypes>::new(Some(entry.log_id), membership);
                        Ok(inner.map.version)
                    }
                };
                (response, inner.map.clone())
            };
            self.publish(&map);
            if let Some(responder) = responder {
                responder.send(response);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<MetaTypes>,
        snapshot: Bytes,
    ) -> Result<(), io::Error> {
        let map = ClusterMap::decode_snapshot(&snapshot).map_err(invalid)?;
        {
            let mut inner = self.lock();
            fsync::off_the_runtime(|| inner.persist(meta, &snapshot))?;
            inner.map = map.clone();
            inner.last_applied = meta.last_log_id;
            inner.last_membership = meta.last_membership.clone();
            inner.snapshot = Some((meta.clone(), snapshot));
        }
        self.publish(&map);
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<MetaTypes, Bytes>>, io::Error> {
        let inner = self.lock();
        Ok(inner
            .snapshot
            .as_ref()
            .map(|(meta, data)| SnapshotOf::<MetaTypes, Bytes> {
                meta: meta.clone(),
                snapshot: data.clone(),
            }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::map::{MapCommand, NodeRecord, NodeState};

    #[tokio::test]
    async fn a_built_snapshot_is_the_map_after_reopen() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut state_machine = StateMachine::open(dir.path()).expect("opens");
        {
            let mut inner = state_machine.lock();
            let record = NodeRecord {
                mesh_addr: "10.0.0.1:7100".into(),
                client_addr: "10.0.0.1:7000".into(),
                admin_addr: "10.0.0.1:7200".into(),
                media_addr: "10.0.0.1:7300".into(),
                state: NodeState::Active,
            };
            inner
                .map
                .apply(&MapCommand::AddNode { node: 1, record })
                .expect("applies");
            inner.last_applied = Some(convert::log_id_from_proto(&pb::LogId {
                term: 1,
                node: 1,
                index: 9,
            }));
        }
        let built = state_machine.build_snapshot().await.expect("builds");
        let expected = state_machine.lock().map.clone();

        let mut reopened = StateMachine::open(dir.path()).expect("reopens");
        assert_eq!(*reopened.map(), expected);
        let (applied, _) = reopened.applied_state().await.expect("applied state");
        assert_eq!(applied, built.meta.last_log_id);
        let current = reopened
            .get_current_snapshot()
            .await
            .expect("reads")
            .expect("has one");
        assert_eq!(current.meta, built.meta);
    }
}
