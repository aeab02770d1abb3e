//! The cluster: nodes joined by the mesh, agreeing on a cluster map (nodes, states, islands,
//! slot table) replicated by the metadata Raft group (`raft/`, the only folder that knows the
//! consensus library); its configuration, the leader's controller and slot placement.
//!
//! A node without a `[cluster]` section never touches this module at run time.

pub mod announce;
pub mod config;
pub mod controller;
pub mod drain;
pub mod leaders;
pub mod map;
pub mod media;
pub mod member;
pub mod placement;
pub mod raft;
pub mod remote;
pub mod removal;
pub mod replica;
pub mod route;
pub mod telemetry;
pub mod view;
