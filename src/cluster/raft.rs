//! The metadata Raft group that replicates the cluster map, on openraft. This folder is the only
//! place that names openraft: the rest of the crate sees [`MetaGroup`], [`RaftTransport`] and the
//! map types.
//!
//! Supervision: [`MetaGroup::start`] owns the openraft core (its tasks), a controller task (acts
//! only while this node leads) and a registration task (until the map lists this node); all
//! stop on [`MetaGroup::shutdown`] or when the group is dropped.
//!
//! Determinism: the group's `select!`s are `biased`; openraft runs on `runtime::MetaRuntime`,
//! whose random draws are seeded by `MetaConfig::rng_seed` in simulations (by the OS otherwise)
//! and whose watch channel wakes its waiters in a fixed order, so a seeded simulation replays.

mod convert;
mod group;
mod image;
mod log_store;
mod network;
mod runtime;
pub mod slot;
mod state_machine;
mod tasks;
mod transport;

pub use group::{MetaConfig, MetaError, MetaGroup, MetaStatus, Role};
pub use log_store::LogStoreError;
pub use transport::RaftTransport;

use crate::cluster::map::{MapCommand, MapError};

/// What applying one entry gave: the map version after it, or why the command was refused.
pub type ApplyResult = Result<u64, MapError>;

openraft::declare_raft_types!(
    /// The type configuration of the metadata group: map commands as entries, node ids as
    /// `u64`, a member's mesh address as its node.
    pub(crate) MetaTypes:
        D = MapCommand,
        R = ApplyResult,
        NodeId = u64,
        Node = openraft::BasicNode,
        AsyncRuntime = runtime::MetaRuntime,
);

#[cfg(test)]
mod conformance;
