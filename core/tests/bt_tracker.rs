use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use proptest::prelude::*;
use rumor_core::bt::metainfo::InfoHash;
use rumor_core::bt::tracker::udp;
use rumor_core::bt::tracker::*;
use std::collections::BTreeMap;

fn req() -> AnnounceRequest {
    let mut ih = [0u8; 20];
    for (i, b) in ih.iter_mut().enumerate() {
        *b = (i * 13) as u8;
    }
    AnnounceRequest {
        info_hash: InfoHash(ih),
        peer_id: *b"-RM0001-abc def+/%~.",
        port: 6881,
        uploaded: 1,
        downloaded: 2,
        left: 3,
        event: AnnounceEvent::Started,
        numwant: Some(50),
        key: Some(0xdead_beef),
        compact: true,
    }
}

#[test]
fn an_announce_url_percent_encodes_binary_fields() {
    let url = req().url("http://t.example:6969/announce");
    assert!(url.starts_with("http://t.example:6969/announce?info_hash=%00%0D%1A%274A"));
    assert!(url.contains("&peer_id=-RM0001-abc%20def%2B%2F%25~.&"));
    assert!(url.contains("&port=6881&uploaded=1&downloaded=2&left=3&compact=1&event=started&numwant=50&key=deadbeef"));
    let with_query = req().url("http://t/announce?passkey=x");
    assert!(with_query.starts_with("http://t/announce?passkey=x&info_hash="));
}

#[test]
fn an_announce_query_parses_back_on_the_server_side() {
    let r = req();
    assert_eq!(AnnounceRequest::from_query(&r.to_query()).unwrap(), r);
    let e = AnnounceRequest::from_query("info_hash=%00&peer_id=x&port=1").unwrap_err();
    assert_eq!(e.kind, TrackerErrorKind::Invalid("info_hash"));
}

#[test]
fn the_scrape_url_replaces_the_announce_segment() {
    assert_eq!(scrape_url("http://t/x/announce.php?k=1").as_deref(), Some("http://t/x/scrape.php?k=1"));
    assert_eq!(scrape_url("http://t/a"), None);
}

#[test]
fn a_compact_response_with_peers6_parses() {
    let mut body = b"d8:completei5e10:incompletei7e8:intervali1800e12:min intervali60e5:peers12:".to_vec();
    body.extend_from_slice(&[10, 0, 0, 1, 0x1A, 0xE1, 192, 168, 1, 2, 0, 80]);
    body.extend_from_slice(b"6:peers618:");
    body.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
    body.extend_from_slice(&[0x1A, 0xE1]);
    body.extend_from_slice(b"e");
    let r = parse_announce_response(&body).unwrap();
    assert_eq!(r.interval, 1800);
    assert_eq!(r.min_interval, Some(60));
    assert_eq!(r.complete, Some(5));
    assert_eq!(r.incomplete, Some(7));
    let addrs: Vec<SocketAddr> = r.peers.iter().map(|p| p.addr).collect();
    assert_eq!(
        addrs,
        vec!["10.0.0.1:6881".parse().unwrap(), "192.168.1.2:80".parse().unwrap(), "[::1]:6881".parse().unwrap()]
    );
}

#[test]
fn a_dictionary_peer_list_parses_and_skips_bad_entries() {
    let body =
        b"d8:intervali60e5:peersld2:ip7:1.2.3.47:peer id20:aaaaaaaaaaaaaaaaaaaa4:porti99eed2:ip4:nope4:porti1eeee";
    let r = parse_announce_response(body).unwrap();
    assert_eq!(r.peers.len(), 1);
    assert_eq!(r.peers[0].addr, "1.2.3.4:99".parse().unwrap());
    assert_eq!(r.peers[0].peer_id, Some([b'a'; 20]));
}

#[test]
fn a_failure_reason_is_an_error_carrying_the_text() {
    let e = parse_announce_response(&encode_failure("torrent not registered")).unwrap_err();
    assert_eq!(e.kind, TrackerErrorKind::Failure("torrent not registered".into()));
}

#[test]
fn a_compact_peer_string_of_odd_length_is_refused() {
    let e = parse_announce_response(b"d8:intervali60e5:peers5:abcdee").unwrap_err();
    assert_eq!(e.kind, TrackerErrorKind::Invalid("compact peers length"));
    assert_eq!(e.offset, 17, "offset of the peers key");
}

#[test]
fn a_warning_is_kept() {
    let r = parse_announce_response(b"d8:intervali5e5:peers0:15:warning message3:heye").unwrap();
    assert_eq!(r.warning.as_deref(), Some("hey"));
    // Unsorted keys (against BEP 3, but seen in the wild) are accepted.
    let r = parse_announce_response(b"d8:intervali5e15:warning message3:hey5:peers0:e").unwrap();
    assert_eq!(r.warning.as_deref(), Some("hey"));
}

#[test]
fn scrape_responses_round_trip() {
    let mut m = BTreeMap::new();
    m.insert(InfoHash([1; 20]), ScrapeStats { complete: 1, downloaded: 2, incomplete: 3 });
    m.insert(InfoHash([2; 20]), ScrapeStats::default());
    assert_eq!(parse_scrape_response(&encode_scrape_response(&m)).unwrap(), m);
}

#[test]
fn a_udp_connect_exchange_round_trips() {
    let c = udp::Request::Connect { transaction_id: 77 };
    let b = c.encode();
    assert_eq!(&b[..8], &[0, 0, 4, 0x17, 0x27, 0x10, 0x19, 0x80]);
    assert_eq!(udp::Request::parse(&b).unwrap(), c);
    let mut bad = b.clone();
    bad[0] = 1;
    assert_eq!(udp::Request::parse(&bad).unwrap_err().kind, TrackerErrorKind::BadMagic);
    let resp = udp::Response::Connect { transaction_id: 77, connection_id: 5 };
    assert_eq!(udp::Response::parse(&resp.encode(), false).unwrap(), resp);
}

#[test]
fn a_udp_announce_is_98_bytes_and_round_trips() {
    let a = udp::Request::Announce { connection_id: 9, transaction_id: 3, request: req(), ip: 0 };
    let b = a.encode();
    assert_eq!(b.len(), 98);
    assert_eq!(udp::Request::parse(&b).unwrap(), a);
    let e = udp::Request::parse(&b[..50]).unwrap_err();
    assert!(matches!(e.kind, TrackerErrorKind::Truncated { need: 56, got: 50 }));
}

#[test]
fn a_udp_error_packet_carries_the_message() {
    let r = udp::Response::parse(&[0, 0, 0, 3, 0, 0, 0, 9, b'n', b'o'], false).unwrap();
    assert_eq!(r, udp::Response::Error { transaction_id: 9, message: "no".into() });
    assert_eq!(r.transaction_id(), 9);
}

fn addr(v6: bool) -> impl Strategy<Value = SocketAddr> {
    (any::<[u8; 16]>(), any::<u16>()).prop_map(move |(o, port)| {
        let ip = if v6 { IpAddr::V6(Ipv6Addr::from(o)) } else { IpAddr::V4(Ipv4Addr::new(o[0], o[1], o[2], o[3])) };
        SocketAddr::new(ip, port)
    })
}

proptest! {
    #[test]
    fn http_announce_responses_round_trip(
        v4 in proptest::collection::vec(addr(false), 0..20),
        v6 in proptest::collection::vec(addr(true), 0..20),
        ids in any::<bool>(),
        compact in any::<bool>(),
        interval in any::<u32>(),
        complete in proptest::option::of(any::<u32>()),
    ) {
        let peers: Vec<TrackerPeer> = v4.into_iter().chain(v6).enumerate().map(|(i, a)| TrackerPeer {
            addr: a,
            peer_id: (ids && !compact).then_some([i as u8; 20]),
        }).collect();
        let r = AnnounceResponse { interval, complete, peers, ..AnnounceResponse::default() };
        let back = parse_announce_response(&encode_announce_response(&r, compact)).unwrap();
        prop_assert_eq!(back, r);
    }

    #[test]
    fn udp_announce_responses_round_trip(
        v6 in any::<bool>(),
        seed in proptest::collection::vec(any::<([u8; 16], u16)>(), 0..30),
        t in any::<u32>(), i in any::<u32>(),
    ) {
        let peers: Vec<SocketAddr> = seed.into_iter().map(|(o, p)| {
            if v6 { SocketAddr::new(IpAddr::V6(Ipv6Addr::from(o)), p) }
            else { SocketAddr::new(IpAddr::V4(Ipv4Addr::new(o[0], o[1], o[2], o[3])), p) }
        }).collect();
        let r = udp::Response::Announce { transaction_id: t, interval: i, leechers: 1, seeders: 2, peers };
        prop_assert_eq!(udp::Response::parse(&r.encode(), v6).unwrap(), r);
    }

    #[test]
    fn udp_scrapes_round_trip(hashes in proptest::collection::vec(any::<[u8; 20]>(), 0..74), c in any::<u32>()) {
        let q = udp::Request::Scrape { connection_id: 1, transaction_id: 2, info_hashes: hashes.iter().map(|h| InfoHash(*h)).collect() };
        prop_assert_eq!(udp::Request::parse(&q.encode()).unwrap(), q);
        let stats: Vec<ScrapeStats> = hashes.iter().map(|_| ScrapeStats { complete: c, downloaded: 1, incomplete: 2 }).collect();
        let r = udp::Response::Scrape { transaction_id: 2, stats };
        prop_assert_eq!(udp::Response::parse(&r.encode(), false).unwrap(), r);
    }

    #[test]
    fn tracker_parsers_never_panic_on_arbitrary_bytes(b in proptest::collection::vec(any::<u8>(), 0..400), v6 in any::<bool>()) {
        let _ = parse_announce_response(&b);
        let _ = parse_scrape_response(&b);
        let _ = udp::Request::parse(&b);
        let _ = udp::Response::parse(&b, v6);
        let _ = AnnounceRequest::from_query(&String::from_utf8_lossy(&b));
    }

    #[test]
    fn announce_queries_round_trip(ih in any::<[u8; 20]>(), pid in any::<[u8; 20]>(), port in any::<u16>(), left in any::<u64>(), ev in 0u32..4) {
        let r = AnnounceRequest {
            info_hash: InfoHash(ih), peer_id: pid, port, uploaded: 0, downloaded: 7, left,
            event: AnnounceEvent::from_udp_code(ev), numwant: None, key: None, compact: false,
        };
        prop_assert_eq!(AnnounceRequest::from_query(&r.to_query()).unwrap(), r);
    }
}

#[test]
fn a_scrape_url_carries_every_infohash_and_parses_back() {
    let hs = [InfoHash([0xAB; 20]), InfoHash([b'z'; 20])];
    let base = scrape_url("http://t/announce").unwrap();
    let u = scrape_request_url(&base, &hs);
    assert!(u.starts_with("http://t/scrape?info_hash=%AB%AB"));
    let q = u.split_once('?').unwrap().1;
    assert_eq!(parse_scrape_query(q).unwrap(), hs.to_vec());
    assert!(parse_scrape_query("info_hash=%zz").is_err());
}

#[test]
fn tracker_errors_read_as_sentences_without_debug_output() {
    use rumor_core::bt::tracker::parse_announce_response as decode_announce_response;
    let e = decode_announce_response(b"d14:failure reason11:not allowede").unwrap_err();
    assert_eq!(e.to_string(), "the tracker said: not allowed");
    let e = decode_announce_response(b"i3e").unwrap_err();
    let text = e.to_string();
    assert!(text.contains("missing or malformed"), "{text}");
    let e = decode_announce_response(b"garbage").unwrap_err();
    let text = e.to_string();
    assert!(text.starts_with("the tracker's answer is not bencode"), "{text}");
    assert!(!text.contains('{') && !text.contains("Kind"), "debug output in {text:?}");
}
