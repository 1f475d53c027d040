//! KRPC codec: known bytes from BEP 5, build-then-parse round trips, and
//! no panic on any bytes.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use proptest::prelude::*;
use rumor_core::bt::metainfo::InfoHash;
use rumor_core::dht::krpc::*;
use rumor_core::dht::NodeId;

#[test]
fn the_bep5_ping_example_parses_and_encodes_to_the_same_bytes() {
    let q = b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe";
    let m = Message::parse(q).unwrap();
    assert_eq!(m.tid, b"aa");
    assert_eq!(m.body, Body::Query(Query::Ping { id: NodeId(*b"abcdefghij0123456789") }));
    assert_eq!(m.encode(), q.to_vec());
    let r = b"d1:rd2:id20:mnopqrstuvwxyz123456e1:t2:aa1:y1:re";
    let m = Message::parse(r).unwrap();
    assert_eq!(m.encode(), r.to_vec());
}

#[test]
fn the_bep5_announce_and_error_examples_parse() {
    let a = b"d1:ad2:id20:abcdefghij012345678912:implied_porti1e9:info_hash20:mnopqrstuvwxyz1234564:porti6881e5:token8:aoeusnthe1:q13:announce_peer1:t2:aa1:y1:qe";
    match Message::parse(a).unwrap().body {
        Body::Query(Query::AnnouncePeer { port, token, implied_port, info_hash, .. }) => {
            assert_eq!((port, implied_port), (6881, true));
            assert_eq!(token, b"aoeusnth");
            assert_eq!(info_hash, InfoHash(*b"mnopqrstuvwxyz123456"));
        }
        other => panic!("not an announce: {other:?}"),
    }
    let e = b"d1:eli201e23:A Generic Error Ocurrede1:t2:aa1:y1:ee";
    let m = Message::parse(e).unwrap();
    assert_eq!(m.body, Body::Error { code: 201, message: "A Generic Error Ocurred".into() });
    assert_eq!(m.encode(), e.to_vec());
}

#[test]
fn an_unknown_method_parses_so_it_can_be_answered_with_204() {
    let m = Message::parse(b"d1:ad2:id20:abcdefghij0123456789e1:q6:sample1:t1:x1:y1:qe").unwrap();
    assert_eq!(m.body, Body::Query(Query::Unknown { method: b"sample".to_vec() }));
}

#[test]
fn missing_or_malformed_fields_are_refused_with_the_field_named() {
    let short_id = b"d1:ad2:id3:abce1:q4:ping1:t2:aa1:y1:qe";
    assert_eq!(Message::parse(short_id).unwrap_err().kind, KrpcErrorKind::Field("id"));
    let no_y = b"d1:t2:aae";
    assert_eq!(Message::parse(no_y).unwrap_err().kind, KrpcErrorKind::Field("y"));
    let long_tid = format!("d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t40:{}1:y1:qe", "x".repeat(40));
    assert_eq!(Message::parse(long_tid.as_bytes()).unwrap_err().kind, KrpcErrorKind::Field("t"));
    assert_eq!(Message::parse(b"le").unwrap_err().kind, KrpcErrorKind::NotADict);
    assert!(Message::parse(&vec![b'x'; DATAGRAM_BYTES_MAX + 1]).is_err());
    let port_too_big = b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz1234564:porti70000e5:token1:xe1:q13:announce_peer1:t2:aa1:y1:qe";
    assert_eq!(Message::parse(port_too_big).unwrap_err().kind, KrpcErrorKind::Field("port"));
}

#[test]
fn compact_nodes_of_both_families_round_trip_and_partial_entries_are_ignored() {
    let n4 = NodeInfo { id: NodeId([1; 20]), addr: "10.0.0.1:6881".parse().unwrap() };
    let n6 = NodeInfo { id: NodeId([2; 20]), addr: "[2001:db8::1]:6882".parse().unwrap() };
    let mut v4 = compact_nodes(&[n4, n6], false);
    assert_eq!(v4.len(), 26);
    v4.extend_from_slice(&[9; 7]);
    assert_eq!(parse_compact_nodes(&v4, false), vec![n4]);
    assert_eq!(parse_compact_nodes(&compact_nodes(&[n4, n6], true), true), vec![n6]);
}

fn addr(v6: bool) -> impl Strategy<Value = SocketAddr> {
    (any::<[u8; 16]>(), 1..=u16::MAX).prop_map(move |(o, port)| {
        let ip = if v6 { IpAddr::V6(Ipv6Addr::from(o)) } else { IpAddr::V4(Ipv4Addr::new(o[0], o[1], o[2], o[3])) };
        SocketAddr::new(ip, port)
    })
}

fn node(v6: bool) -> impl Strategy<Value = NodeInfo> {
    (any::<[u8; 20]>(), addr(v6)).prop_map(|(id, addr)| NodeInfo { id: NodeId(id), addr })
}

fn query() -> impl Strategy<Value = Query> {
    let id = any::<[u8; 20]>().prop_map(NodeId);
    prop_oneof![
        id.clone().prop_map(|id| Query::Ping { id }),
        (id.clone(), any::<[u8; 20]>()).prop_map(|(id, t)| Query::FindNode { id, target: NodeId(t) }),
        (id.clone(), any::<[u8; 20]>()).prop_map(|(id, h)| Query::GetPeers { id, info_hash: InfoHash(h) }),
        (
            id,
            any::<[u8; 20]>(),
            any::<u16>(),
            proptest::collection::vec(any::<u8>(), 0..TOKEN_BYTES_MAX),
            any::<bool>()
        )
            .prop_map(|(id, h, port, token, implied_port)| Query::AnnouncePeer {
                id,
                info_hash: InfoHash(h),
                port,
                token,
                implied_port
            }),
        "[a-z_]{1,20}"
            .prop_filter("not a known method", |m| !["ping", "find_node", "get_peers", "announce_peer"]
                .contains(&m.as_str()))
            .prop_map(|m| Query::Unknown { method: m.into_bytes() }),
    ]
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        query().prop_map(Body::Query),
        (
            any::<[u8; 20]>(),
            proptest::collection::vec(node(false), 0..10),
            proptest::collection::vec(node(true), 0..4),
            proptest::collection::vec(prop_oneof![addr(false), addr(true)], 0..40),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..TOKEN_BYTES_MAX)),
        )
            .prop_map(|(id, mut nodes, n6, values, token)| {
                // The decoder yields `nodes` before `nodes6`.
                nodes.extend(n6);
                Body::Response(Response { id: NodeId(id), nodes, values, token })
            }),
        (any::<i64>(), "[ -~]{0,60}").prop_map(|(code, message)| Body::Error { code, message }),
    ]
}

proptest! {
    #[test]
    fn every_message_round_trips(
        tid in proptest::collection::vec(any::<u8>(), 0..=TID_BYTES_MAX),
        body in body(),
        read_only in any::<bool>(),
        ip in proptest::option::of(prop_oneof![addr(false), addr(true)]),
        version in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..=4)),
    ) {
        let m = Message { tid, body, read_only, ip, version };
        prop_assert_eq!(Message::parse(&m.encode()).unwrap(), m);
    }

    #[test]
    fn parsing_any_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = Message::parse(&bytes);
    }

    #[test]
    fn parsing_mutated_messages_never_panics_and_what_parses_re_encodes(
        body in body(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let mut b = Message { tid: b"ab".to_vec(), body, read_only: false, ip: None, version: None }.encode();
        for (i, x) in flips {
            let i = i.index(b.len());
            b[i] = x;
        }
        if let Ok(m) = Message::parse(&b) {
            let again = Message::parse(&m.encode()).unwrap();
            prop_assert_eq!(again.tid, m.tid);
        }
    }
}
