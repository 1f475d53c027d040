#![no_main]
//! Any bytes: decoding must not panic, and whatever decodes must encode and
//! decode again to the same message.
use libfuzzer_sys::fuzz_target;
use rumor_core::dns::{decode, encode};

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = decode(data) {
        let again = encode(&msg);
        assert_eq!(decode(&again).as_ref(), Ok(&msg));
    }
});
