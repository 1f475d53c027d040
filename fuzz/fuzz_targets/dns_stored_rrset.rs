#![no_main]
//! Bytes read back from disk or from a peer as a stored RRset: an error or
//! an RRset that stores back to the same bytes, never a panic.
use libfuzzer_sys::fuzz_target;
use rumor_core::dns::RRset;

fuzz_target!(|data: &[u8]| {
    if let Ok(set) = RRset::from_bytes(data) {
        let again = RRset::from_bytes(&set.to_bytes()).expect("what we store reads back");
        assert_eq!(again, set);
    }
});
