//! The authority, driven with real query bytes and checked on the decoded
//! response.

use core::net::{Ipv4Addr, Ipv6Addr};
use rumor_core::dns::*;

const NOW: u64 = 1_700_000_000_000;

fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

fn set(owner: &str, ttl: u32, data: Vec<RData>) -> RRset {
    RRset { owner: name(owner), rtype: data[0].rtype(), ttl, expires_at_ms: NOW + ttl as u64 * 1000, data }
}

fn query_bytes(qname: &str, qtype: RType, edns: Option<u16>) -> Vec<u8> {
    encode(&Message {
        header: Header { id: 4242, rd: true, ..Header::default() },
        questions: vec![Question { name: name(qname), qtype, qclass: CLASS_IN }],
        edns: edns.map(|udp_size| Edns { udp_size, ..Edns::default() }),
        ..Message::default()
    })
}

/// One query through the authority's one entry point: the verdict and
/// what it left in the buffer.
fn answer(auth: &mut Authority, q: &[u8], transport: Transport, store: &RecordStore, now: u64) -> (Verdict, Vec<u8>) {
    let mut out = Vec::new();
    let verdict = auth.answer(now, q, transport, store, &mut out);
    (verdict, out)
}

/// The reply bytes; panics if the authority did not reply.
fn reply(auth: &mut Authority, q: &[u8], transport: Transport, store: &RecordStore) -> Vec<u8> {
    match answer(auth, q, transport, store, NOW) {
        (Verdict::Reply, bytes) => bytes,
        (other, _) => panic!("expected a reply, got {other:?}"),
    }
}

fn ask(auth: &mut Authority, store: &RecordStore, qname: &str, qtype: RType, now: u64) -> Message {
    match answer(auth, &query_bytes(qname, qtype, None), Transport::Udp, store, now) {
        (Verdict::Reply, bytes) => decode(&bytes).expect("our responses decode"),
        (other, _) => panic!("expected a reply, got {other:?}"),
    }
}

fn store_with_free_local() -> RecordStore {
    let mut s = RecordStore::new();
    s.put(set("free.local", 360, vec![RData::A(Ipv4Addr::new(10, 1, 0, 15))]));
    s
}

#[test]
fn an_a_query_gets_the_address_with_aa_and_the_remaining_ttl() {
    let store = store_with_free_local();
    let mut auth = Authority::new(AuthorityConfig::default());
    let r = ask(&mut auth, &store, "free.local", RType::A, NOW);
    assert_eq!(r.header.id, 4242);
    assert!(r.header.qr && r.header.aa && r.header.rd && !r.header.tc);
    assert_eq!(r.rcode(), Rcode::NOERROR);
    assert_eq!(r.answers.len(), 1);
    assert_eq!(r.answers[0].ttl, 360);
    assert_eq!(r.answers[0].data, RData::A(Ipv4Addr::new(10, 1, 0, 15)));
    let later = ask(&mut auth, &store, "free.local", RType::A, NOW + 100_000);
    assert_eq!(later.answers[0].ttl, 260);
}

#[test]
fn the_question_keeps_the_clients_letter_case() {
    let store = store_with_free_local();
    let mut auth = Authority::new(AuthorityConfig::default());
    let r = ask(&mut auth, &store, "FrEe.LoCaL", RType::A, NOW);
    assert_eq!(r.questions[0].name.to_string(), "FrEe.LoCaL.");
    assert_eq!(r.answers.len(), 1);
}

#[test]
fn a_missing_or_expired_name_is_nxdomain_with_an_soa() {
    let store = store_with_free_local();
    let mut auth = Authority::new(AuthorityConfig::default());
    let r = ask(&mut auth, &store, "nope.local", RType::A, NOW);
    assert_eq!(r.rcode(), Rcode::NXDOMAIN);
    assert!(r.answers.is_empty());
    assert_eq!(r.authorities.len(), 1);
    assert_eq!(r.authorities[0].data.rtype(), RType::SOA);
    assert_eq!(r.authorities[0].name, name("local"));
    let r = ask(&mut auth, &store, "free.local", RType::A, NOW + 360_000);
    assert_eq!(r.rcode(), Rcode::NXDOMAIN);
}

#[test]
fn a_name_without_the_asked_type_is_nodata() {
    let store = store_with_free_local();
    let mut auth = Authority::new(AuthorityConfig::default());
    let r = ask(&mut auth, &store, "free.local", RType::AAAA, NOW);
    assert_eq!(r.rcode(), Rcode::NOERROR);
    assert!(r.answers.is_empty());
    assert_eq!(r.authorities[0].data.rtype(), RType::SOA);
    // An empty non-terminal is NODATA too.
    let r = ask(&mut auth, &store, "local", RType::A, NOW);
    assert_eq!(r.rcode(), Rcode::NOERROR);
}

#[test]
fn multi_address_sets_rotate_between_queries() {
    let mut store = RecordStore::new();
    let ips: Vec<RData> = (1..=3).map(|i| RData::A(Ipv4Addr::new(10, 0, 0, i))).collect();
    store.put(set("rr.local", 60, ips));
    let mut auth = Authority::new(AuthorityConfig::default());
    let firsts: std::collections::BTreeSet<String> = (0..3)
        .map(|_| ask(&mut auth, &store, "rr.local", RType::A, NOW).answers[0].data.clone())
        .map(|d| format!("{d:?}"))
        .collect();
    assert_eq!(firsts.len(), 3, "each of the three addresses comes first once");
}

#[test]
fn cnames_held_are_followed_and_others_are_left_to_the_resolver() {
    let mut store = store_with_free_local();
    store.put(set("www.local", 60, vec![RData::Cname(name("free.local"))]));
    store.put(set("ext.local", 60, vec![RData::Cname(name("example.com"))]));
    let mut auth = Authority::new(AuthorityConfig::default());
    let r = ask(&mut auth, &store, "www.local", RType::A, NOW);
    assert_eq!(r.rcode(), Rcode::NOERROR);
    assert_eq!(r.answers.len(), 2);
    assert_eq!(r.answers[0].data, RData::Cname(name("free.local")));
    assert_eq!(r.answers[1].name, name("free.local"));
    let r = ask(&mut auth, &store, "ext.local", RType::A, NOW);
    assert_eq!(r.rcode(), Rcode::NOERROR);
    assert_eq!(r.answers.len(), 1);
}

#[test]
fn cname_loops_end_within_the_chain_limit() {
    let mut store = RecordStore::new();
    store.put(set("a.local", 60, vec![RData::Cname(name("b.local"))]));
    store.put(set("b.local", 60, vec![RData::Cname(name("a.local"))]));
    let mut auth = Authority::new(AuthorityConfig::default());
    let r = ask(&mut auth, &store, "a.local", RType::A, NOW);
    assert!(r.answers.len() <= CNAME_CHAIN_MAX_PLUS_ONE);
}
const CNAME_CHAIN_MAX_PLUS_ONE: usize = rumor_core::dns::authority::CNAME_CHAIN_MAX + 1;

#[test]
fn aaaa_mx_srv_and_txt_are_served_with_glue() {
    let mut store = RecordStore::new();
    store.put(set("v6.local", 60, vec![RData::Aaaa(Ipv6Addr::LOCALHOST)]));
    store.put(set("local", 60, vec![RData::Mx { preference: 10, exchange: name("mail.local") }]));
    store.put(set("mail.local", 60, vec![RData::A(Ipv4Addr::new(10, 9, 9, 9))]));
    store.put(set("t.local", 60, vec![RData::Txt(vec![b"hello".to_vec()])]));
    let mut auth = Authority::new(AuthorityConfig::default());
    assert_eq!(ask(&mut auth, &store, "v6.local", RType::AAAA, NOW).answers.len(), 1);
    let mx = ask(&mut auth, &store, "local", RType::MX, NOW);
    assert_eq!(mx.answers.len(), 1);
    assert_eq!(mx.additionals.len(), 1, "the exchange's address comes as glue");
    assert_eq!(ask(&mut auth, &store, "t.local", RType::TXT, NOW).answers.len(), 1);
}

#[test]
fn edns_is_echoed_and_the_client_size_respected_with_tc() {
    let mut store = RecordStore::new();
    let ips: Vec<RData> = (0..200).map(|i| RData::A(Ipv4Addr::new(10, 0, (i / 250) as u8, i as u8))).collect();
    store.put(set("big.local", 60, ips));
    let mut auth = Authority::new(AuthorityConfig::default());
    let q = query_bytes("big.local", RType::A, None);
    let plain = reply(&mut auth, &q, Transport::Udp, &store);
    assert!(plain.len() <= 512);
    let plain = decode(&plain).unwrap();
    assert!(plain.header.tc && plain.edns.is_none());
    let q = query_bytes("big.local", RType::A, Some(4096));
    let big = reply(&mut auth, &q, Transport::Udp, &store);
    assert!(big.len() <= 1232, "never more than our own UDP limit");
    let big = decode(&big).unwrap();
    assert!(big.header.tc);
    assert_eq!(big.edns.as_ref().unwrap().udp_size, 1232);
    let tcp = reply(&mut auth, &q, Transport::Tcp, &store);
    let tcp = decode(&tcp).unwrap();
    assert!(!tcp.header.tc);
    assert_eq!(tcp.answers.len(), 200);
}

#[test]
fn malformed_queries_get_formerr_and_non_queries_notimp() {
    let store = store_with_free_local();
    let mut auth = Authority::new(AuthorityConfig::default());
    let mut q = query_bytes("free.local", RType::A, None);
    q.truncate(q.len() - 3);
    let r = reply(&mut auth, &q, Transport::Udp, &store);
    let r = decode(&r).unwrap();
    assert_eq!(r.rcode(), Rcode::FORMERR);
    assert_eq!(r.header.id, 4242);

    let mut q = query_bytes("free.local", RType::A, None);
    q[2] |= 5 << 3; // UPDATE
    let r = reply(&mut auth, &q, Transport::Udp, &store);
    assert_eq!(decode(&r).unwrap().rcode(), Rcode::NOTIMP);

    assert_eq!(answer(&mut auth, &[1, 2, 3], Transport::Udp, &store, NOW), (Verdict::Drop, Vec::new()));
    let mut response = query_bytes("free.local", RType::A, None);
    response[2] |= 0x80;
    assert_eq!(answer(&mut auth, &response, Transport::Udp, &store, NOW), (Verdict::Drop, Vec::new()));
}

#[test]
fn unknown_edns_versions_get_badvers() {
    let store = store_with_free_local();
    let mut auth = Authority::new(AuthorityConfig::default());
    let mut m = decode(&query_bytes("free.local", RType::A, Some(1232))).unwrap();
    m.edns.as_mut().unwrap().version = 1;
    let r = reply(&mut auth, &encode(&m), Transport::Udp, &store);
    assert_eq!(decode(&r).unwrap().rcode(), Rcode::BADVERS);
}

#[test]
fn with_zones_outside_names_are_refused_or_forwarded() {
    let store = store_with_free_local();
    let zones = vec![Zone { apex: name("local") }];
    let mut auth = Authority::new(AuthorityConfig { zones: zones.clone(), ..AuthorityConfig::default() });
    assert_eq!(ask(&mut auth, &store, "example.com", RType::A, NOW).rcode(), Rcode::REFUSED);
    let r = ask(&mut auth, &store, "nope.local", RType::A, NOW);
    assert_eq!(r.rcode(), Rcode::NXDOMAIN);
    assert_eq!(r.authorities[0].name, name("local"));
    let soa = ask(&mut auth, &store, "local", RType::SOA, NOW);
    assert_eq!(soa.answers.len(), 1);
    let mut fwd = Authority::new(AuthorityConfig { zones, forward_outside_zones: true, ..AuthorityConfig::default() });
    let q = query_bytes("example.com", RType::A, None);
    assert_eq!(answer(&mut fwd, &q, Transport::Udp, &store, NOW), (Verdict::Forward, Vec::new()));
}

#[test]
fn common_queries_take_the_fast_path_and_match_the_general_one() {
    let mut store = store_with_free_local();
    let ips: Vec<RData> = (1..=3).map(|i| RData::A(Ipv4Addr::new(10, 0, 0, i))).collect();
    store.put(set("rr.local", 60, ips));
    for (qname, qtype, edns) in [
        ("free.local", RType::A, None),
        ("FREE.local", RType::A, Some(1232)),
        ("rr.local", RType::A, Some(4096)),
        ("nope.local", RType::A, None),
        ("free.local", RType::AAAA, Some(512)),
        ("local", RType::A, None),
    ] {
        let q = query_bytes(qname, qtype, edns);
        let mut fast = Authority::new(AuthorityConfig::default());
        let mut general = Authority::new(AuthorityConfig { fast_path: false, ..AuthorityConfig::default() });
        let got = reply(&mut fast, &q, Transport::Udp, &store);
        assert_eq!(fast.stats().fast_path, 1, "the fast path takes {qname} {qtype}");
        let want = reply(&mut general, &q, Transport::Udp, &store);
        assert_eq!(general.stats().fast_path, 0);
        assert_eq!(decode(&got).unwrap(), decode(&want).unwrap(), "{qname} {qtype}");
    }
}

/// A name whose parent is within 11 bytes of the 255-byte limit has no
/// legal `hostmaster.<parent>`: both paths answer with a reply that
/// decodes, and the same one (found by the `dns_authority` fuzz target).
#[test]
fn nxdomain_under_a_parent_too_long_for_hostmaster_still_decodes() {
    let store = store_with_free_local();
    for parent_len in 236..=253usize {
        // One label of 30-47 bytes, four of 50, the root.
        let mut labels = vec!["p".repeat(parent_len - 206)];
        labels.extend(std::iter::repeat_n("h".repeat(50), 4));
        let parent = labels.join(".");
        assert_eq!(Name::from_ascii(&parent).unwrap().wire_len(), parent_len);
        let qname = format!("q.{parent}");
        let q = query_bytes(&qname, RType::A, None);
        let mut fast = Authority::new(AuthorityConfig::default());
        let mut general = Authority::new(AuthorityConfig { fast_path: false, ..AuthorityConfig::default() });
        let got = reply(&mut fast, &q, Transport::Udp, &store);
        let want = reply(&mut general, &q, Transport::Udp, &store);
        let got = decode(&got).unwrap_or_else(|e| panic!("{parent_len}-byte parent: {e:?}"));
        assert_eq!(got, decode(&want).unwrap(), "{parent_len}-byte parent");
        assert_eq!(u16::from(got.header.rcode), Rcode::NXDOMAIN.0);
        assert_eq!(got.authorities.len(), 1);
    }
}
