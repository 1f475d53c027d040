//! Holds the direct reader and writer of probes and gossip rounds to
//! postcard: for any bytes, a packet the reader returns must be the one
//! postcard returns, and the decoder as a whole must answer as postcard
//! does; any packet decoded is written back as postcard writes it. Nothing
//! may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rumor_core::gossip::{decode_packet, decode_packet_fast, encode_packet, Packet};

fuzz_target!(|data: &[u8]| {
    let general = match postcard::take_from_bytes::<Packet>(data) {
        Ok((p, rest)) if rest.is_empty() => Some(p),
        _ => None,
    };
    if let Some(fast) = decode_packet_fast(data) {
        assert_eq!(Some(fast), general, "the direct reader disagrees with postcard");
    }
    assert_eq!(decode_packet(data).ok(), general, "the decoder disagrees with postcard");
    if let Some(p) = general {
        let expected = postcard::to_allocvec(&p).expect("packets always serialize");
        assert_eq!(encode_packet(&p, Vec::new()), expected, "the writer disagrees with postcard");
    }
});
