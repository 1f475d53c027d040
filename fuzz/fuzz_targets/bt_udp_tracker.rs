#![no_main]
use libfuzzer_sys::fuzz_target;
use rumor_core::bt::tracker::udp;

fuzz_target!(|data: &[u8]| {
    if let Ok(q) = udp::Request::parse(data) {
        assert_eq!(udp::Request::parse(&q.encode()).ok(), Some(q));
    }
    for v6 in [false, true] {
        if let Ok(r) = udp::Response::parse(data, v6) {
            let _ = r.encode();
        }
    }
});
