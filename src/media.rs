//! The media server: photos, voice notes and videos uploaded out of band over HTTP with the tus
//! 1.0 resumable-upload protocol, stored once per distinct content (SHA-256), downloaded with
//! ranges and ETags, and referenced from chat messages by id (docs/media.md).
//!
//! Ownership:
//! ```text
//! Server ─▶ media HTTP server (task, http.rs) ──spawns──▶ one task per connection (≤ max_connections)
//!        └─▶ expiry sweeper (task, expiry.rs)
//! Media (one per node, shared through Node):
//!   Catalog       memory: finished media, unfinished uploads, usage per user (non-blocking reads)
//!   Index         sled under data_dir/media/index: the records the catalog is loaded from
//!   ContentStore  files under data_dir/media/objects, one per distinct SHA-256, reference counted
//!   HotCache      popular small objects in memory
//! ```
//! Each unfinished upload has a writer lock ([`upload::Upload`]): PATCH, completion,
//! termination and expiry of an upload run one at a time. sled and file-system calls run in
//! `spawn_blocking`, never on the async workers.
//!
//! Invariants: an upload's offset is the fsynced size of its staging file, and is reported only
//! after the fsync; a finished upload is downloadable as soon as its last PATCH is answered; an
//! object file is deleted only with its last reference; media bytes never enter sled.

mod auth;
mod catalog;
mod content;
mod create;
mod download;
mod error;
pub mod expiry;
mod file_body;
mod head;
mod hot_cache;
pub mod http;
mod id;
mod index;
mod layout;
mod lifecycle;
mod patch;
mod range;
mod recovery;
pub mod replicated;
mod routes;
mod share;
mod staging;
mod telemetry;
mod terminate;
mod tus;
mod upload;

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::config::MediaSection;
use catalog::Catalog;
use content::ContentStore;
use error::RequestError;
use hot_cache::HotCache;
pub use id::MediaId;
use index::Index;
use layout::Layout;
pub(crate) use lifecycle::Written;
pub use recovery::OpenError;
pub use share::ShareRefusal;

/// The parsers that face HTTP requests, for the fuzz targets (`fuzz/`).
#[doc(hidden)]
pub mod parsers {
    pub use super::range::{RangeRequest, parse as range};
    pub use super::tus::metadata_mime;
}
use telemetry::Telemetry;

/// How long a PATCH or DELETE waits for another request on the same upload to let go.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// How long a HEAD waits for a running PATCH to make its bytes durable before answering.
const SETTLE_WAIT: Duration = Duration::from_secs(2);

/// The media service of one node.
#[derive(Debug)]
pub struct Media {
    config: MediaSection,
    layout: Layout,
    index: Index,
    catalog: Catalog,
    content: ContentStore,
    hot: HotCache,
    telemetry: Telemetry,
    /// The index's tree of replicated state (empty on a single node).
    replicated: sled::Tree,
    /// Set when media is replicated through a cluster's slot groups.
    cluster: OnceLock<Arc<dyn replicated::MediaCluster>>,
    /// Asks the refill task (replicated) for objects this node lacks; asks queue from the
    /// start (a slot group re-applies its log before the task starts).
    refill: replicated::RefillAsks,
}

impl std::fmt::Debug for dyn replicated::MediaCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MediaCluster(node {})", self.me())
    }
}

impl Media {
    /// The configuration the media server runs with.
    pub fn config(&self) -> &MediaSection {
        &self.config
    }
}

/// Runs a change to the media state in a task of its own, so that a client hanging up (which
/// drops the request's future) cannot stop it half-way: a writer lock released before its
/// commit finished, or a quota reserved for an upload nobody will hear of.
async fn detached<T: Send + 'static>(
    work: impl Future<Output = Result<T, RequestError>> + Send + 'static,
) -> Result<T, RequestError> {
    tokio::spawn(work)
        .await
        .map_err(|_| RequestError::Internal)?
}

#[cfg(test)]
mod tests;
