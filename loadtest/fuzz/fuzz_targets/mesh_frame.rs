//! The bytes a peer sends on the mesh: split into frames and decoded, as a link's reader does.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

/// The mesh's largest frame.
const MAX_FRAME: usize = 16 * 1024 * 1024;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(_)) = tern::mesh::frame::decode(&mut buf, MAX_FRAME) {}
});
