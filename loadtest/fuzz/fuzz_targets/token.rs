//! `Login.token` as a phone may send it: any text, checked against a key set with a listed
//! old key, as a node in the middle of a rotation checks it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tern::token::TokenKey;

fuzz_target!(|data: &[u8]| {
    let keys = TokenKey::with_id("k2", b"the-new-key-0123456789")
        .accepting("k1", b"the-old-key-0123456789");
    let text = String::from_utf8_lossy(data);
    if let Ok(claims) = keys.verify(&text, 1) {
        // Whatever verified names a valid user and device.
        assert!(tern::token::valid_id(&claims.user) && tern::token::valid_id(&claims.device));
    }
});
