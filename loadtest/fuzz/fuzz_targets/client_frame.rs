//! The bytes a phone sends on the client port: split into length-prefixed frames and decoded as
//! client frames, as the connection reader does, whatever arrives.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tern::proto::v1::ClientFrame;

/// The shipped `limits.max_frame_bytes`.
const MAX_FRAME: u32 = 65_536;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(payload)) = tern::frame::split_frame(&mut buf, MAX_FRAME) {
        let _ = tern::frame::decode::<ClientFrame>(payload);
    }
});
