//! Media in a replicated cluster: any node serves any object, uploads resume on any node, and
//! losing one node loses nothing (docs/media.md, "In a cluster").
//!
//! Placement: an upload (and the media it becomes) by its id, an object by its SHA-256, each to
//! the slot that bytes hash to and so to that slot's island, as users are. The state that must
//! agree (uploads and their committed parts, media records, which media use which object) is
//! changed only by [`MediaChange`]s committed in the slot groups' logs, the consensus the chat
//! side replicates mailboxes with (`state.rs`); bytes travel beside it, over the mesh, in pieces
//! of at most [`PIECE`]:
//!
//! ```text
//! PATCH ─▶ piece ─▶ PartWrite to each member of the upload's island (fdatasync) ─▶ a majority
//!        ─▶ commit Advanced{from, part} ─▶ next piece … last byte:
//!        ─▶ SHA-256 of the committed parts ─▶ Place on each member of the object's island
//!           (from its own parts, or read from the others; verified) ─▶ a majority
//!        ─▶ commit Referenced (object's group) ─▶ commit Finished (upload's group) ─▶ 204
//! GET ─▶ record (catalog, or asked of the id's island) ─▶ object file here, or streamed from a
//!        member of the object's island piece by piece
//! ```
//!
//! A member that missed a piece or an object, or that came back with an empty disk, refills
//! from its peers (`place.rs`: after every applied reference and snapshot, and every
//! [`REFILL_EVERY`]).

mod complete;
mod fetch;
mod parts;
mod peers;
mod place;
pub mod service;
mod state;
mod upload;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use prost::Message as _;

use super::Media;
use super::error::RequestError;
use super::id::MediaId;
use crate::proto::mesh::{MediaLookup, MediaPropose, MediaState, media_reply, media_request};
use crate::proto::storage::MediaChange;

pub use parts::ids as part_dirs;
pub use place::RefillAsks;
pub use state::AfterApply;

/// The largest piece of bytes in one mesh call.
pub const PIECE: usize = 1024 * 1024;
/// How often every object this node should hold is checked (and refilled when missing).
pub const REFILL_EVERY: Duration = Duration::from_secs(30);
/// Attempts at committing a change (leader changes, elections) before a 503.
const COMMIT_ATTEMPTS: u32 = 8;
/// The wait after a failed attempt, times the attempt's number.
const COMMIT_BACKOFF: Duration = Duration::from_millis(100);
/// Attempts at applying a committed entry's media changes before it is given up (and
/// counted in `tern_media_apply_failures_total`).
const APPLY_ATTEMPTS: u32 = 20;

/// The members of the island a key is placed on.
#[derive(Debug, Clone)]
pub struct IslandOf {
    /// The slot group of the key's slot.
    pub group: u64,
    /// The island's members.
    pub members: Vec<u64>,
    /// The group's leader this node knows of.
    pub leader: Option<u64>,
}

impl IslandOf {
    /// How many members make a majority.
    pub fn majority(&self) -> usize {
        self.members.len() / 2 + 1
    }
}

/// Why a commit on this node failed.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// Another member leads the group (the one named, when known).
    #[error("not the leader (leader: {0:?})")]
    NotLeader(Option<u64>),
    /// The group failed the proposal.
    #[error("{0}")]
    Failed(String),
}

/// What replicated media needs of the cluster.
pub trait MediaCluster: Send + Sync + 'static {
    /// This node.
    fn me(&self) -> u64;
    /// Where `key` (an id's or a digest's bytes) is placed, if its slot is.
    fn island(&self, key: &[u8]) -> Option<IslandOf>;
    /// Commits `change` (an encoded [`MediaChange`]) in `group`, which this node must lead;
    /// resolves once a majority has it and this node applied it.
    fn commit(&self, group: u64, change: Bytes) -> BoxFuture<'static, Result<(), CommitError>>;
    /// Calls the media service of `peer` (an encoded `MediaRequest`).
    fn call(&self, peer: u64, request: Bytes) -> BoxFuture<'static, Result<Bytes, String>>;
}

fn unavailable(what: impl std::fmt::Display) -> RequestError {
    RequestError::Unavailable(what.to_string())
}

impl Media {
    /// The cluster, when media is replicated.
    pub(crate) fn cluster(&self) -> Option<&Arc<dyn MediaCluster>> {
        self.cluster.get()
    }

    /// Replicates this node's media through `cluster` from now on (before the media server
    /// accepts), and starts the refill task; it ends with `stop`.
    pub fn attach_cluster(
        self: &Arc<Self>,
        cluster: Arc<dyn MediaCluster>,
        stop: tokio_util::sync::CancellationToken,
    ) {
        if self.cluster.set(cluster).is_ok() {
            place::start_refill(self.clone(), stop);
        }
    }

    /// The island of `key`, or a 503.
    fn island_of(&self, key: &[u8]) -> Result<IslandOf, RequestError> {
        self.cluster()
            .ok_or(RequestError::Internal)?
            .island(key)
            .ok_or_else(|| unavailable("the slot is not placed yet"))
    }

    /// Commits `change` in the group of `key`, through its leader, and returns the state of
    /// `change.id` after it (as the leader applied it).
    async fn commit(&self, key: &[u8], change: MediaChange) -> Result<MediaState, RequestError> {
        let cluster = self.cluster().ok_or(RequestError::Internal)?.clone();
        let encoded = Bytes::from(change.encode_to_vec());
        let id = MediaId::from_slice(&change.id).ok_or(RequestError::Internal)?;
        let mut hint = None;
        let mut last = String::from("no leader");
        for attempt in 1..=COMMIT_ATTEMPTS {
            let island = self.island_of(key)?;
            // The leader this node knows of first; after a failure, whoever a member names,
            // else the members in turn (one that does not lead names the one that does).
            let target = hint.take().or(if attempt == 1 {
                island.leader
            } else {
                island
                    .members
                    .get(attempt as usize % island.members.len().max(1))
                    .copied()
            });
            match target {
                Some(leader) if leader == cluster.me() => {
                    match cluster.commit(island.group, encoded.clone()).await {
                        Ok(()) => return self.local_state(&id),
                        Err(CommitError::NotLeader(leader)) => hint = leader,
                        Err(CommitError::Failed(error)) => last = error,
                    }
                }
                Some(leader) => {
                    let request = media_request::Request::Propose(MediaPropose {
                        key: Bytes::copy_from_slice(key),
                        change: encoded.clone(),
                    });
                    match peers::ask(&cluster, leader, request).await {
                        Ok(media_reply::Reply::State(state)) => return Ok(state),
                        Ok(media_reply::Reply::NotLeader(leader)) => {
                            hint = Some(leader).filter(|leader| *leader != 0);
                        }
                        Ok(other) => last = format!("unexpected answer {other:?}"),
                        Err(error) => last = error,
                    }
                }
                None => {}
            }
            if hint.is_none() {
                tokio::time::sleep(COMMIT_BACKOFF * attempt).await;
            }
        }
        Err(unavailable(format_args!("committing failed: {last}")))
    }

    /// What this node's replicated state says of `id`.
    fn local_state(&self, id: &MediaId) -> Result<MediaState, RequestError> {
        Ok(MediaState {
            upload: self.replicated_upload(id)?,
            media: self.replicated_media(id)?,
        })
    }

    /// What the cluster says of `id`: its group leader's state (which has applied every change
    /// acked so far; this node's own when it leads), else another member's.
    async fn state(&self, id: &MediaId) -> Result<MediaState, RequestError> {
        let island = self.island_of(id.as_bytes())?;
        let cluster = self.cluster().ok_or(RequestError::Internal)?.clone();
        let me = cluster.me();
        if island.leader == Some(me) {
            return self.local_state(id);
        }
        let mut last = String::from("no member");
        let others = island
            .members
            .iter()
            .copied()
            .filter(|member| *member != me);
        for member in island.leader.into_iter().chain(others) {
            let request = media_request::Request::Lookup(MediaLookup {
                id: Bytes::copy_from_slice(id.as_bytes()),
            });
            match peers::ask(&cluster, member, request).await {
                Ok(media_reply::Reply::State(state)) => return Ok(state),
                Ok(other) => last = format!("unexpected answer {other:?}"),
                Err(error) => last = error,
            }
        }
        if island.members.contains(&me) {
            // Cut off from the others: this node's view, which may lag.
            return self.local_state(id);
        }
        Err(unavailable(format_args!(
            "no member of the island answered: {last}"
        )))
    }

    /// Applies a committed entry's media changes (the slot groups' applier calls this in log
    /// order), then deletes what went and refills what is missing.
    pub fn apply_entry(
        self: &Arc<Self>,
        group: u64,
        index: u64,
        changes: Vec<Bytes>,
    ) -> BoxFuture<'static, ()> {
        let media = self.clone();
        let changes = Arc::new(changes);
        Box::pin(async move {
            // A disk that fails now may not later; the group waits (it acks nothing more
            // meanwhile) rather than go on without the change.
            for attempt in 1..=APPLY_ATTEMPTS {
                let (applier, changes) = (media.clone(), changes.clone());
                let applied = tokio::task::spawn_blocking(move || {
                    applier.apply_replicated(group, index, &changes)
                })
                .await;
                match applied {
                    Ok(Ok(after)) => return media.after_apply(after).await,
                    Ok(Err(error)) => {
                        tracing::error!(group, index, attempt, %error, "applying media changes failed");
                    }
                    Err(_) => tracing::error!(group, index, "applying media changes panicked"),
                }
                tokio::time::sleep(COMMIT_BACKOFF * attempt).await;
            }
            metrics::counter!(crate::metrics::MEDIA_APPLY_FAILURES).increment(1);
        })
    }
}

#[cfg(test)]
mod tests;
