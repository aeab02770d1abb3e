//! Generated types for `proto/` (client protocol, on-disk formats, mesh frames); the only module
//! that holds prost types.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// Version 1 of the client protocol.
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/tern.v1.rs"));
}

/// On-disk formats, version 1 (journal records, store values).
pub mod storage {
    include!(concat!(env!("OUT_DIR"), "/tern.storage.v1.rs"));
    /// The package's own path, for the packages that import it (`tern.mesh.v1`).
    pub mod v1 {
        pub use super::*;
    }
}

/// The node-to-node mesh, version 1 (link frames, cluster map, Raft groups, media).
pub mod mesh {
    /// Nested as its package is, so that its references to `tern.storage.v1` resolve.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/tern.mesh.v1.rs"));
    }
    pub use v1::*;
}

/// Links between datacenters, version 1 (gateway queue records, gateway calls, link frames).
pub mod wan {
    /// Nested as its package is, so that its references to `tern.mesh.v1` resolve.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/tern.wan.v1.rs"));
    }
    pub use v1::*;
}

pub mod kinds;

/// The protocol version this server speaks.
pub const PROTOCOL_VERSION: u32 = 1;
