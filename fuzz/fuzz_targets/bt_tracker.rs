#![no_main]
use libfuzzer_sys::fuzz_target;
use rumor_core::bt::tracker::{self, AnnounceRequest};

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = tracker::parse_announce_response(data) {
        // Whatever we accept we can serve back, and it reads the same.
        let compact = tracker::encode_announce_response(&r, false);
        let again = tracker::parse_announce_response(&compact).expect("own encoding parses");
        assert_eq!(again.peers.len(), r.peers.len());
    }
    let _ = tracker::parse_scrape_response(data);
    let _ = AnnounceRequest::from_query(&String::from_utf8_lossy(data));
});
