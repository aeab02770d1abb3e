//! The media server's header parsers: `Range` against an object size, and tus
//! `Upload-Metadata` (the media type taken from it).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tern::media::parsers::{RangeRequest, metadata_mime, range};

fuzz_target!(|data: &[u8]| {
    let (size, text) = match data.split_first_chunk::<8>() {
        Some((size, rest)) => (u64::from_le_bytes(*size), rest),
        None => (0, data),
    };
    let text = String::from_utf8_lossy(text);
    if let RangeRequest::Partial { start, end } = range(Some(&text), size) {
        // A satisfiable range lies within the object.
        assert!(start <= end && end < size, "{start}-{end} of {size}");
    }
    let _ = metadata_mime(&text);
});
