//! Generated wire types for `proto/tern/v1/client.proto`; the only module that holds prost types.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// Version 1 of the client protocol.
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/tern.v1.rs"));
}

/// The protocol version this server speaks.
pub const PROTOCOL_VERSION: u32 = 1;
