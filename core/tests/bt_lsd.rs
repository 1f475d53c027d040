//! BEP 14 Local Service Discovery: the announce codec and the machine.

use core::net::SocketAddr;
use proptest::prelude::*;
use rumor_core::bt::lsd::*;
use rumor_core::bt::metainfo::InfoHash;
use rumor_core::time::{Duration, Instant};

fn ih(b: u8) -> InfoHash {
    InfoHash([b; 20])
}

fn drain(l: &mut Lsd) -> (Vec<Output>, Instant) {
    let mut v = Vec::new();
    loop {
        match l.poll_output() {
            Output::Timeout(at) => return (v, at),
            o => v.push(o),
        }
    }
}

fn at(secs: u64) -> Instant {
    Instant::ZERO + Duration::from_secs(secs)
}

#[test]
fn an_announce_is_written_as_bep_14_shows_it() {
    let a = Announce { port: 6881, info_hashes: vec![ih(0xab)], cookie: Some("c0ffee".into()) };
    let text = String::from_utf8(a.encode(LSD_GROUP_V4)).unwrap();
    assert_eq!(
        text,
        format!(
            "BT-SEARCH * HTTP/1.1\r\nHost: 239.192.152.143:6771\r\nPort: 6881\r\nInfohash: {}\r\ncookie: c0ffee\r\n\r\n\r\n",
            "ab".repeat(20)
        )
    );
    let v6 = String::from_utf8(a.encode(LSD_GROUP_V6)).unwrap();
    assert!(v6.contains("Host: [ff15::efc0:988f]:6771\r\n"), "{v6}");
    assert_eq!(Announce::parse(text.as_bytes()).unwrap(), a);
}

#[test]
fn announces_are_read_liberally() {
    // Lower-case names, LF line ends, upper-case hex, an unknown header, a
    // malformed infohash line, no cookie, no Host.
    let text =
        format!("BT-SEARCH * HTTP/1.1\nport: 51413\nX-Other: 1\ninfohash: nothex\nINFOHASH: {}\n\n", "CD".repeat(20));
    let a = Announce::parse(text.as_bytes()).unwrap();
    assert_eq!(a, Announce { port: 51413, info_hashes: vec![ih(0xcd)], cookie: None });
    // Several infohashes in one announce; duplicates read once.
    let text = format!(
        "BT-SEARCH * HTTP/1.1\r\nPort: 1\r\nInfohash: {0}\r\nInfohash: {1}\r\nInfohash: {0}\r\n\r\n",
        "01".repeat(20),
        "02".repeat(20)
    );
    assert_eq!(Announce::parse(text.as_bytes()).unwrap().info_hashes, vec![ih(1), ih(2)]);
}

#[test]
fn what_is_not_an_announce_is_refused_with_a_reason() {
    let good_ih = "01".repeat(20);
    let cases: Vec<(String, LsdError)> = vec![
        (format!("M-SEARCH * HTTP/1.1\r\nPort: 1\r\nInfohash: {good_ih}\r\n\r\n"), LsdError::NotAnAnnounce),
        (format!("BT-SEARCH * HTTP/1.1\r\nInfohash: {good_ih}\r\n\r\n"), LsdError::BadPort),
        (format!("BT-SEARCH * HTTP/1.1\r\nPort: 0\r\nInfohash: {good_ih}\r\n\r\n"), LsdError::BadPort),
        (format!("BT-SEARCH * HTTP/1.1\r\nPort: 70000\r\nInfohash: {good_ih}\r\n\r\n"), LsdError::BadPort),
        ("BT-SEARCH * HTTP/1.1\r\nPort: 1\r\nInfohash: 0102\r\n\r\n".into(), LsdError::NoInfohash),
        (
            format!("BT-SEARCH * HTTP/1.1\r\nPort: 1\r\nInfohash: {good_ih}\r\ncookie: {}\r\n\r\n", "x".repeat(65)),
            LsdError::BadCookie,
        ),
        (
            format!("BT-SEARCH * HTTP/1.1\r\nPort: 1\r\nInfohash: {good_ih}\r\n{}", " ".repeat(1400)),
            LsdError::TooLong(1483),
        ),
    ];
    for (text, err) in cases {
        assert_eq!(Announce::parse(text.as_bytes()), Err(err), "{text:?}");
    }
}

#[test]
fn the_first_announce_goes_at_once_to_every_group_and_the_next_about_five_minutes_later() {
    let mut c = LsdConfig::new(6881, vec![ih(1)]);
    c.groups = vec![LSD_GROUP_V4, LSD_GROUP_V6];
    let mut l = Lsd::new(c, at(0), 7);
    let (out, when) = drain(&mut l);
    assert!(out.is_empty());
    assert_eq!(when, at(0), "the first announce is due at once");
    l.handle(at(0), Input::Timeout);
    let (out, next) = drain(&mut l);
    let to: Vec<SocketAddr> = out
        .iter()
        .map(|o| match o {
            Output::Transmit(t) => {
                let a = Announce::parse(&t.bytes).unwrap();
                assert_eq!((a.port, a.info_hashes.clone(), a.cookie.as_deref()), (6881, vec![ih(1)], Some(l.cookie())));
                t.to
            }
            o => panic!("unexpected {o:?}"),
        })
        .collect();
    assert_eq!(to, vec![LSD_GROUP_V4, LSD_GROUP_V6]);
    assert!(next >= at(262) && next <= at(338), "{next:?}");
    // Early timeouts do nothing.
    l.handle(at(100), Input::Timeout);
    assert!(drain(&mut l).0.is_empty());
    l.handle(next, Input::Timeout);
    assert_eq!(drain(&mut l).0.len(), 2);
}

#[test]
fn many_torrents_are_announced_twenty_to_a_datagram_each_under_1400_bytes() {
    let hashes: Vec<InfoHash> = (0..45).map(ih).collect();
    let mut l = Lsd::new(LsdConfig::new(1, hashes.clone()), at(0), 1);
    l.handle(at(0), Input::Timeout);
    let mut seen = Vec::new();
    for o in drain(&mut l).0 {
        let Output::Transmit(t) = o else { panic!() };
        assert!(t.bytes.len() <= ANNOUNCE_BYTES_MAX);
        seen.extend(Announce::parse(&t.bytes).unwrap().info_hashes);
    }
    assert_eq!(seen, hashes);
}

#[test]
fn our_own_announces_looped_back_are_ignored_and_others_of_our_torrent_are_reported() {
    let mut l = Lsd::new(LsdConfig::new(6881, vec![ih(1)]), at(0), 7);
    l.handle(at(0), Input::Timeout);
    let (out, _) = drain(&mut l);
    let Output::Transmit(own) = &out[0] else { panic!() };
    let me: SocketAddr = "192.0.2.2:6771".parse().unwrap();
    l.handle(at(1), Input::Receive { from: me, bytes: own.bytes.clone() });
    assert!(drain(&mut l).0.is_empty());
    assert_eq!(l.stats().own, 1);
    // Another client on the same host (another cookie), and a foreign torrent.
    let other = Announce { port: 7000, info_hashes: vec![ih(9), ih(1)], cookie: Some("other".into()) };
    l.handle(at(2), Input::Receive { from: me, bytes: other.encode(LSD_GROUP_V4) });
    let (out, _) = drain(&mut l);
    assert_eq!(out, vec![Output::Event(Event::Peer { info_hash: ih(1), addr: "192.0.2.2:7000".parse().unwrap() })]);
    let foreign = Announce { port: 7001, info_hashes: vec![ih(9)], cookie: None };
    l.handle(at(3), Input::Receive { from: me, bytes: foreign.encode(LSD_GROUP_V4) });
    assert!(drain(&mut l).0.is_empty());
    assert_eq!(l.stats().foreign, 1);
    // The same peer again within the minute: not reported twice; later, again.
    l.handle(at(30), Input::Receive { from: me, bytes: other.encode(LSD_GROUP_V4) });
    assert!(drain(&mut l).0.is_empty());
    l.handle(at(63), Input::Receive { from: me, bytes: other.encode(LSD_GROUP_V4) });
    assert_eq!(drain(&mut l).0.len(), 1);
}

#[test]
fn a_client_heard_on_both_groups_is_reported_once_by_its_cookie() {
    let mut l = Lsd::new(LsdConfig::new(1, vec![ih(1)]), at(0), 7);
    let a = Announce { port: 6881, info_hashes: vec![ih(1)], cookie: Some("same".into()) };
    l.handle(at(0), Input::Receive { from: "192.0.2.2:6771".parse().unwrap(), bytes: a.encode(LSD_GROUP_V4) });
    l.handle(at(0), Input::Receive { from: "[fd00::2]:6771".parse().unwrap(), bytes: a.encode(LSD_GROUP_V6) });
    let (out, _) = drain(&mut l);
    assert_eq!(out, vec![Output::Event(Event::Peer { info_hash: ih(1), addr: "192.0.2.2:6881".parse().unwrap() })]);
    // Without a cookie, each address is its own peer.
    let b = Announce { cookie: None, ..a };
    l.handle(at(1), Input::Receive { from: "192.0.2.3:6771".parse().unwrap(), bytes: b.encode(LSD_GROUP_V4) });
    l.handle(at(1), Input::Receive { from: "[fd00::3]:6771".parse().unwrap(), bytes: b.encode(LSD_GROUP_V6) });
    assert_eq!(drain(&mut l).0.len(), 2);
}

#[test]
fn an_ipv6_peer_keeps_its_scope() {
    let mut l = Lsd::new(LsdConfig::new(1, vec![ih(1)]), at(0), 7);
    let from = SocketAddr::V6(core::net::SocketAddrV6::new("fe80::1".parse().unwrap(), 6771, 0, 3));
    let a = Announce { port: 6881, info_hashes: vec![ih(1)], cookie: None };
    l.handle(at(0), Input::Receive { from, bytes: a.encode(LSD_GROUP_V6) });
    let (out, _) = drain(&mut l);
    let want = SocketAddr::V6(core::net::SocketAddrV6::new("fe80::1".parse().unwrap(), 6881, 0, 3));
    assert_eq!(out, vec![Output::Event(Event::Peer { info_hash: ih(1), addr: want })]);
}

#[test]
fn a_flooding_source_is_held_to_its_rate_and_others_are_not() {
    let mut l = Lsd::new(LsdConfig::new(1, vec![ih(1)]), at(0), 7);
    let flood: SocketAddr = "10.0.0.66:6771".parse().unwrap();
    // Each datagram names a new port, so each would be a new peer.
    for p in 1..=100u16 {
        let a = Announce { port: p, info_hashes: vec![ih(1)], cookie: None };
        l.handle(at(0), Input::Receive { from: flood, bytes: a.encode(LSD_GROUP_V4) });
    }
    assert_eq!(drain(&mut l).0.len(), 32, "the burst");
    assert_eq!(l.stats().rate_limited, 68);
    // Another source is not held back by the first.
    let a = Announce { port: 9, info_hashes: vec![ih(1)], cookie: None };
    l.handle(at(0), Input::Receive { from: "10.0.0.7:6771".parse().unwrap(), bytes: a.encode(LSD_GROUP_V4) });
    assert_eq!(drain(&mut l).0.len(), 1);
    // A second later the flooder has one more datagram's worth.
    for p in 200..210u16 {
        let a = Announce { port: p, info_hashes: vec![ih(1)], cookie: None };
        l.handle(at(1), Input::Receive { from: flood, bytes: a.encode(LSD_GROUP_V4) });
    }
    assert_eq!(drain(&mut l).0.len(), 1);
}

#[test]
fn two_machines_on_one_network_find_each_other() {
    // A network that delivers every datagram sent to a group to everyone
    // (the sender too: multicast loops back).
    let me: [SocketAddr; 2] = ["192.0.2.2:6771".parse().unwrap(), "192.0.2.3:6771".parse().unwrap()];
    let mut m = [
        Lsd::new(LsdConfig::new(6881, vec![ih(1)]), at(0), 1),
        Lsd::new(LsdConfig::new(6882, vec![ih(1), ih(2)]), at(0), 2),
    ];
    let mut found: Vec<(usize, SocketAddr)> = Vec::new();
    let mut wire: Vec<(usize, Vec<u8>)> = Vec::new();
    for (i, l) in m.iter_mut().enumerate() {
        l.handle(at(0), Input::Timeout);
        for o in drain(l).0 {
            if let Output::Transmit(t) = o {
                wire.push((i, t.bytes));
            }
        }
    }
    for (from, bytes) in wire {
        for (i, l) in m.iter_mut().enumerate() {
            l.handle(at(1), Input::Receive { from: me[from], bytes: bytes.clone() });
            for o in drain(l).0 {
                if let Output::Event(Event::Peer { addr, .. }) = o {
                    found.push((i, addr));
                }
            }
        }
    }
    found.sort();
    assert_eq!(found, vec![(0, "192.0.2.3:6882".parse().unwrap()), (1, "192.0.2.2:6881".parse().unwrap())]);
}

fn cookie() -> impl Strategy<Value = Option<String>> {
    proptest::option::of("[!-~]{1,64}")
}

proptest! {
    #[test]
    fn announces_round_trip(
        port in 1u16..,
        hashes in proptest::collection::btree_set(any::<[u8; 20]>(), 1..=ANNOUNCE_INFOHASHES_MAX),
        cookie in cookie(),
        v6 in any::<bool>(),
    ) {
        let a = Announce { port, info_hashes: hashes.into_iter().map(InfoHash).collect(), cookie };
        let bytes = a.encode(if v6 { LSD_GROUP_V6 } else { LSD_GROUP_V4 });
        prop_assert!(bytes.len() <= ANNOUNCE_BYTES_MAX);
        prop_assert_eq!(Announce::parse(&bytes).unwrap(), a);
    }

    #[test]
    fn parsing_arbitrary_bytes_never_panics(b in proptest::collection::vec(any::<u8>(), 0..1600)) {
        let _ = Announce::parse(&b);
    }

    #[test]
    fn parsing_a_damaged_announce_never_panics_and_what_parses_re_encodes(
        cut in 0usize..200,
        flips in proptest::collection::vec((0usize..200, any::<u8>()), 0..8),
    ) {
        let a = Announce { port: 6881, info_hashes: vec![ih(7), ih(8)], cookie: Some("abc".into()) };
        let mut b = a.encode(LSD_GROUP_V4);
        for (i, v) in flips {
            let n = b.len();
            b[i % n] = v;
        }
        b.truncate(cut.max(1).min(b.len()));
        if let Ok(p) = Announce::parse(&b) {
            prop_assert_eq!(Announce::parse(&p.encode(LSD_GROUP_V4)).unwrap(), p);
        }
    }

    /// Whatever arrives, the machine reports only our torrents, never our
    /// own announces, never more than its sources' rates allow, and its
    /// timeout is always in the future of the last announce.
    #[test]
    fn the_machine_reports_only_our_torrents_within_the_rate(
        inputs in proptest::collection::vec((0u64..5, 0u8..4, 1u16..5, any::<bool>(), 0u8..3), 0..200),
    ) {
        let mut l = Lsd::new(LsdConfig::new(6881, vec![ih(1), ih(2)]), at(0), 3);
        l.handle(at(0), Input::Timeout);
        let (out, _) = drain(&mut l);
        let Output::Transmit(own) = &out[0] else { panic!() };
        let own = own.bytes.clone();
        let mut now = at(0);
        let mut peers = 0u64;
        for (dt, src, port, mine, h) in inputs {
            now += Duration::from_millis(dt * 100);
            let from = SocketAddr::from(([10, 0, 0, src], 6771));
            let bytes = if mine { own.clone() } else {
                Announce { port, info_hashes: vec![ih(h)], cookie: Some(format!("c{src}")) }.encode(LSD_GROUP_V4)
            };
            l.handle(now, Input::Receive { from, bytes });
            let (out, next) = drain(&mut l);
            prop_assert!(next > at(0));
            for o in out {
                if let Output::Event(Event::Peer { info_hash, addr }) = o {
                    prop_assert!(info_hash == ih(1) || info_hash == ih(2));
                    prop_assert_ne!(addr.port(), 6881);
                    peers += 1;
                }
            }
        }
        prop_assert_eq!(peers, l.stats().peers);
        // One infohash per announce: at most one peer per datagram let through.
        let st = l.stats();
        prop_assert!(st.peers <= st.received - st.rate_limited - st.own - st.foreign - st.malformed);
    }
}

#[test]
fn a_torrent_set_later_is_announced_at_once_and_one_dropped_is_no_longer_reported() {
    let mut l = Lsd::new(LsdConfig::new(6881, vec![ih(1)]), at(0), 7);
    l.handle(at(0), Input::Timeout);
    drain(&mut l);
    l.handle(at(10), Input::SetInfoHashes(vec![ih(2)]));
    let (o, _) = drain(&mut l);
    let text: Vec<String> = o
        .iter()
        .filter_map(|o| match o {
            Output::Transmit(t) => Some(String::from_utf8(t.bytes.clone()).unwrap()),
            _ => None,
        })
        .collect();
    assert_eq!(text.len(), 1, "{o:?}");
    assert!(text[0].contains(&ih(2).to_hex()) && !text[0].contains(&ih(1).to_hex()));
    let from: SocketAddr = "192.168.1.5:6771".parse().unwrap();
    let other = Announce { port: 7000, info_hashes: vec![ih(1), ih(2)], cookie: Some("other".into()) };
    l.handle(at(11), Input::Receive { from, bytes: other.encode(LSD_GROUP_V4) });
    let (o, _) = drain(&mut l);
    assert_eq!(o, vec![Output::Event(Event::Peer { info_hash: ih(2), addr: "192.168.1.5:7000".parse().unwrap() })]);
    // The same set again announces nothing new.
    l.handle(at(12), Input::SetInfoHashes(vec![ih(2)]));
    assert!(drain(&mut l).0.is_empty());
}
