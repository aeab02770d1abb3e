//! What recovery and replication read from disk and from peers: mailbox records, dedup chunks,
//! logged group entries and replicated media changes, decoded from any bytes.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use prost::Message as _;

fuzz_target!(|data: &[u8]| {
    let bytes = Bytes::copy_from_slice(data);
    let _ = tern::mailbox::record::decode(bytes.clone());
    let _ = tern::mailbox::record::decode_dedup(bytes.clone());
    let _ = tern::group::record::decode_logged(bytes.clone());
    let _ = tern::proto::storage::MediaChange::decode(bytes.clone());
    let _ = tern::proto::mesh::MediaRequest::decode(bytes);
});
