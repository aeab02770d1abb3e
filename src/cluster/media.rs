//! Media in a replicated cluster, the cluster's side: where ids and digests are placed (slots,
//! islands and their groups' leaders, as users are), commits through this node's slot groups,
//! and mesh service 6 ([`SERVICE_MEDIA`]), which hands other members' calls to the node's
//! [`Media`] (`crate::media::replicated`).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use tokio::sync::watch;

use crate::cluster::leaders::{Leaders, preferred_leader, slot_group};
use crate::cluster::map::ClusterMap;
use crate::cluster::raft::slot::{SlotCommand, SlotError, SlotGroups};
use crate::cluster::route::slot_of;
use crate::media::Media;
use crate::media::replicated::{CommitError, IslandOf, MediaCluster};
use crate::mesh::{Handler, Lane, Mesh, NodeId, Transport};

pub use crate::media::replicated::service::SERVICE_MEDIA;

/// How long one media call may take (a piece of 1 MiB, or placing an object of up to
/// `media.max_upload_bytes` read from peers).
const CALL_DEADLINE: Duration = Duration::from_secs(120);

/// What media needs of this node's cluster membership.
pub struct ClusterMedia<T: Transport> {
    me: NodeId,
    mesh: crate::mesh::Mesh<T>,
    map: watch::Receiver<Arc<ClusterMap>>,
    leaders: Arc<Leaders>,
    groups: Arc<SlotGroups>,
}

impl<T: Transport> ClusterMedia<T> {
    /// Media placed by `map`, committed through `groups`, their leaders read from `leaders`,
    /// bytes over `mesh`.
    pub fn new(
        mesh: Mesh<T>,
        map: watch::Receiver<Arc<ClusterMap>>,
        leaders: Arc<Leaders>,
        groups: Arc<SlotGroups>,
    ) -> Self {
        ClusterMedia {
            me: mesh.node(),
            mesh,
            map,
            leaders,
            groups,
        }
    }
}

impl<T: Transport> MediaCluster for ClusterMedia<T> {
    fn me(&self) -> u64 {
        self.me
    }

    fn island(&self, key: &[u8]) -> Option<IslandOf> {
        let map = self.map.borrow();
        let slot = slot_of(key, map.placement.slots.len() as u32);
        let island = map.placement.island_of(slot)?;
        let group = slot_group(island.id, slot);
        let leader = self
            .groups
            .leader(group)
            .or_else(|| self.leaders.get(group))
            .or_else(|| preferred_leader(island, group));
        Some(IslandOf {
            group,
            members: island.members.clone(),
            leader,
        })
    }

    fn commit(&self, group: u64, change: Bytes) -> BoxFuture<'static, Result<(), CommitError>> {
        let groups = self.groups.clone();
        Box::pin(async move {
            let command = SlotCommand {
                records: Vec::new(),
                origin: 0,
                serial: 0,
                media: vec![change],
            };
            match groups.propose(group, command).await {
                Ok(_) => Ok(()),
                Err(SlotError::NotLeader { leader, .. }) => Err(CommitError::NotLeader(leader)),
                Err(error) => Err(CommitError::Failed(error.to_string())),
            }
        })
    }

    fn call(&self, peer: u64, request: Bytes) -> BoxFuture<'static, Result<Bytes, String>> {
        let call = self
            .mesh
            .call(peer, Lane::Call, SERVICE_MEDIA, request, CALL_DEADLINE);
        Box::pin(async move { call.await.map_err(|error| error.to_string()) })
    }
}

/// Mesh service 6: other members' media calls, answered by this node's media once attached.
#[derive(Default)]
pub struct MediaService(pub OnceLock<Arc<Media>>);

impl Handler for MediaService {
    fn call(&self, _from: NodeId, payload: Bytes) -> BoxFuture<'static, Result<Bytes, String>> {
        let media = self.0.get().cloned();
        Box::pin(async move {
            match media {
                Some(media) => crate::media::replicated::service::handle(media, payload).await,
                None => Err("media is not replicated on this node yet".to_owned()),
            }
        })
    }

    fn cast(&self, _from: NodeId, _payload: Bytes) {}
}
