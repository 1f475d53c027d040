//! Any datagram: the KRPC parser never panics, and what it accepts
//! re-encodes to bytes that parse to the same message.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rumor_core::dht::krpc::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::parse(data) {
        let again = Message::parse(&m.encode()).expect("own encoding parses");
        assert_eq!(again, m, "a parsed message round trips");
    }
});
