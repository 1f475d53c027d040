#![no_main]
use libfuzzer_sys::fuzz_target;
use rumor_core::bt::{bencode, metainfo};

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = bencode::decode(data) {
        // Canonical re-encoding must decode to the same value.
        let again = v.to_bytes();
        assert_eq!(bencode::decode(&again).ok(), Some(v));
    }
    if let Ok(m) = metainfo::Metainfo::parse(data) {
        assert_eq!(m.info_hash, metainfo::InfoHash::of_info_bytes(&m.info_bytes));
        let layout = m.layout();
        assert_eq!(layout.piece_count() as usize, m.pieces.len());
    }
});
