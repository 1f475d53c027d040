#![no_main]
//! Any bytes as a query: the authority answers with a message that decodes
//! and fits 512 bytes over UDP, or drops it; it never panics.
use libfuzzer_sys::fuzz_target;
use rumor_core::dns::*;
use std::net::Ipv4Addr;

fuzz_target!(|data: &[u8]| {
    let mut store = RecordStore::new();
    store.put(RRset {
        owner: Name::from_ascii("free.local").unwrap(),
        rtype: RType::A,
        ttl: 60,
        expires_at_ms: 60_000,
        data: vec![RData::A(Ipv4Addr::new(10, 1, 0, 15))],
    });
    store.put(RRset {
        owner: Name::from_ascii("www.local").unwrap(),
        rtype: RType::CNAME,
        ttl: 60,
        expires_at_ms: 60_000,
        data: vec![RData::Cname(Name::from_ascii("free.local").unwrap())],
    });
    let mut auth = Authority::new(AuthorityConfig::default());
    let mut r = Vec::new();
    match auth.answer(1_000, data, Transport::Udp, &store, &mut r) {
        Verdict::Reply => {
            assert!(r.len() <= 512);
            assert!(decode(&r).is_ok());
        }
        Verdict::Forward | Verdict::Drop => assert!(r.is_empty()),
    }
});
