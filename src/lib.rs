//! tern: a messaging backend for mobile chat apps.
//!
//! Phones hold one TCP connection each; every logged-in device is one ractor actor
//! ([`session`]); keyed work runs on 32-way sharded dispatchers ([`dispatch`]); messages wait in
//! per-user mailboxes ([`mailbox`]). [`server::run`] starts a node. See `docs/ARCHITECTURE.md`.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod background;
pub mod certs;
pub mod client;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod dispatch;
pub mod encode;
pub mod frame;
pub mod fsync;
pub mod group;
pub mod journal;
pub mod limits;
pub mod logging;
pub mod mailbox;
pub mod media;
pub mod mesh;
pub mod message;
pub mod metrics;
pub mod node;
pub mod notify;
pub mod presence;
pub mod proto;
pub mod push;
pub mod registry;
pub mod server;
pub mod session;
pub mod shard;
pub mod store;
mod thread_handle;
pub mod tls;
pub mod token;
pub mod wan;
