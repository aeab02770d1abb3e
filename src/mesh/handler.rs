//! What a node serves to its peers: one `Handler` per service number, registered before start.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use super::{BoxFuture, NodeId};

/// Serves one service's calls and casts from peers.
pub trait Handler: Send + Sync + 'static {
    /// Answers a call from `from`. The mesh drops the future once the caller's deadline passed;
    /// an `Err` reaches the caller as `CallError::Remote`.
    fn call(&self, from: NodeId, payload: Bytes) -> BoxFuture<'static, Result<Bytes, String>>;
    /// Takes a cast from `from`. Runs on the link's reader: it must not block.
    fn cast(&self, from: NodeId, payload: Bytes);
}

/// The handlers of a mesh, by service number.
#[derive(Clone, Default)]
pub struct Handlers {
    by_service: HashMap<u32, Arc<dyn Handler>>,
}

impl Handlers {
    /// Adds (or replaces) the handler of `service`.
    #[must_use]
    pub fn with(mut self, service: u32, handler: Arc<dyn Handler>) -> Self {
        self.by_service.insert(service, handler);
        self
    }

    /// The handler of `service`, if any.
    pub fn get(&self, service: u32) -> Option<&Arc<dyn Handler>> {
        self.by_service.get(&service)
    }
}

impl fmt::Debug for Handlers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut services: Vec<_> = self.by_service.keys().collect();
        services.sort();
        f.debug_struct("Handlers")
            .field("services", &services)
            .finish()
    }
}
