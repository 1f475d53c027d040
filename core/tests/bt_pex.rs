use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use proptest::prelude::*;
use rumor_core::bt::pex::*;

#[test]
fn a_pex_message_round_trips_with_flags_and_both_families() {
    let m = PexMessage {
        added: vec![
            PexPeer { addr: "1.2.3.4:5".parse().unwrap(), flags: 2 },
            PexPeer { addr: "[::1]:6881".parse().unwrap(), flags: 0x10 },
        ],
        dropped: vec!["9.9.9.9:1".parse().unwrap()],
    };
    assert_eq!(PexMessage::parse(&m.encode()).unwrap(), m);
}

#[test]
fn missing_flags_read_as_zero_and_bad_lengths_are_refused() {
    let m = PexMessage::parse(b"d5:added6:\x01\x02\x03\x04\x00\x50e").unwrap();
    assert_eq!(m.added, vec![PexPeer { addr: "1.2.3.4:80".parse().unwrap(), flags: 0 }]);
    assert_eq!(PexMessage::parse(b"d5:added5:abcdee").unwrap_err(), PexError::BadLength("added"));
    assert!(PexMessage::parse(b"le").is_err());
}

fn addr() -> impl Strategy<Value = SocketAddr> {
    (any::<bool>(), any::<[u8; 16]>(), any::<u16>()).prop_map(|(v6, o, port)| {
        let ip = if v6 { IpAddr::V6(Ipv6Addr::from(o)) } else { IpAddr::V4(Ipv4Addr::new(o[0], o[1], o[2], o[3])) };
        SocketAddr::new(ip, port)
    })
}

proptest! {
    #[test]
    fn pex_messages_round_trip(
        added in proptest::collection::vec((addr(), any::<u8>()), 0..30),
        dropped in proptest::collection::vec(addr(), 0..30),
    ) {
        let mut added: Vec<PexPeer> = added.into_iter().map(|(addr, flags)| PexPeer { addr, flags }).collect();
        let mut dropped = dropped;
        // The decoder yields IPv4 before IPv6.
        added.sort_by_key(|p| p.addr.is_ipv6());
        dropped.sort_by_key(|a| a.is_ipv6());
        let m = PexMessage { added, dropped };
        prop_assert_eq!(PexMessage::parse(&m.encode()).unwrap(), m);
    }

    #[test]
    fn parsing_arbitrary_pex_payloads_never_panics(b in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = PexMessage::parse(&b);
    }
}

// ---- the sending side ----

use rumor_core::time::{Duration, Instant};
use std::collections::{BTreeMap, BTreeSet};

fn conn(peer: u64, listen: Option<&str>, flags: u8, ut_pex: Option<u8>) -> PexConn {
    PexConn { peer, listen: listen.map(|a| a.parse().unwrap()), flags, ut_pex }
}

fn at(secs: u64) -> Instant {
    Instant::ZERO + Duration::from_secs(secs)
}

#[test]
fn a_new_connection_hears_of_every_other_peer_but_itself_with_their_flags() {
    let mut s = PexSender::new(false);
    let conns = [
        conn(1, Some("10.0.0.1:6881"), flags::REACHABLE, Some(7)),
        conn(2, Some("[2001:db8::2]:6882"), flags::SEED, None),
        conn(3, None, 0, Some(1)),
    ];
    let out = s.poll(at(0), &conns);
    let to1 = out.iter().find(|m| m.peer == 1).expect("peer 1 supports ut_pex");
    assert_eq!(to1.ext_id, 7);
    assert_eq!(to1.message.added, vec![PexPeer { addr: "[2001:db8::2]:6882".parse().unwrap(), flags: flags::SEED }]);
    let to3 = out.iter().find(|m| m.peer == 3).expect("peer 3 supports ut_pex");
    let named: BTreeSet<SocketAddr> = to3.message.added.iter().map(|p| p.addr).collect();
    assert_eq!(named, ["10.0.0.1:6881".parse().unwrap(), "[2001:db8::2]:6882".parse().unwrap()].into());
    assert!(out.iter().all(|m| m.peer != 2), "peer 2 did not advertise ut_pex");
    // What goes on the wire is an extended message the parser reads back.
    let wire = to3.to_wire();
    assert_eq!(wire[4], 20, "an extended message");
    assert_eq!(wire[5], 1, "on the id the peer asked for");
    assert_eq!(PexMessage::parse(&wire[6..]).unwrap(), to3.message);
}

#[test]
fn later_messages_carry_only_changes_and_come_at_most_once_a_minute() {
    let mut s = PexSender::new(false);
    let a = conn(1, Some("10.0.0.1:1"), 0, Some(1));
    let b = conn(2, Some("10.0.0.2:2"), 0, None);
    let c = conn(3, Some("10.0.0.3:3"), 0, None);
    assert_eq!(s.poll(at(0), &[a, b]).len(), 1);
    // c comes and b goes: nothing before the minute is up.
    assert!(s.poll(at(30), &[a, c]).is_empty());
    assert!(s.poll(at(59), &[a, c]).is_empty());
    let out = s.poll(at(60), &[a, c]);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].message.added, vec![PexPeer { addr: c.listen.unwrap(), flags: 0 }]);
    assert_eq!(out[0].message.dropped, vec![b.listen.unwrap()]);
    // Nothing changed: nothing is sent, however long it has been.
    assert!(s.poll(at(600), &[a, c]).is_empty());
    // A change after a quiet spell goes at once.
    let out = s.poll(at(601), &[a]);
    assert_eq!(out[0].message.dropped, vec![c.listen.unwrap()]);
}

#[test]
fn a_message_names_at_most_fifty_added_and_fifty_dropped_and_the_rest_follow() {
    let mut s = PexSender::new(false);
    let me = conn(0, Some("10.1.0.1:1"), 0, Some(1));
    let many: Vec<PexConn> = (1..=120u64)
        .map(|i| PexConn {
            peer: i,
            listen: Some(SocketAddr::from(([10, 0, 0, i as u8], 6881))),
            flags: 0,
            ut_pex: None,
        })
        .collect();
    let all: Vec<PexConn> = std::iter::once(me).chain(many.iter().copied()).collect();
    let mut told = BTreeSet::new();
    for (i, expect) in [(0, 50), (60, 50), (120, 20)] {
        let out = s.poll(at(i), &all);
        assert_eq!(out[0].message.added.len(), expect);
        told.extend(out[0].message.added.iter().map(|p| p.addr));
    }
    assert_eq!(told.len(), 120);
    // All leave: they are reported dropped fifty at a time.
    let mut dropped = BTreeSet::new();
    for (i, expect) in [(180, 50), (240, 50), (300, 20)] {
        let out = s.poll(at(i), &[me]);
        assert!(out[0].message.added.is_empty());
        assert_eq!(out[0].message.dropped.len(), expect);
        dropped.extend(out[0].message.dropped.iter().copied());
    }
    assert_eq!(dropped, told);
    assert!(s.poll(at(360), &[me]).is_empty());
}

#[test]
fn a_private_torrent_sends_no_peer_exchange() {
    let mut s = PexSender::new(true);
    let out = s.poll(at(0), &[conn(1, Some("10.0.0.1:1"), 0, Some(1)), conn(2, Some("10.0.0.2:2"), 0, Some(1))]);
    assert!(out.is_empty());
    assert_eq!(s.tracked(), 0);
}

#[test]
fn a_connection_that_goes_away_is_forgotten_and_starts_afresh() {
    let mut s = PexSender::new(false);
    let a = conn(1, Some("10.0.0.1:1"), 0, Some(1));
    let b = conn(2, Some("10.0.0.2:2"), 0, Some(1));
    assert_eq!(s.poll(at(0), &[a, b]).len(), 2);
    assert_eq!(s.tracked(), 2);
    let out = s.poll(at(1), &[a]);
    assert!(out.is_empty(), "within the minute");
    assert_eq!(s.tracked(), 1);
    // b back on a new connection: told at once, as a new connection is.
    let b2 = PexConn { peer: 9, ..b };
    let out = s.poll(at(2), &[a, b2]);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].peer, 9);
    assert_eq!(out[0].message.added[0].addr, a.listen.unwrap());
}

proptest! {
    /// Whatever the connections do, every message parses back to itself,
    /// stays within the limits, never names the recipient, comes at most
    /// once a minute, and what a recipient has been told (replaying added
    /// and dropped) converges to the live peers other than itself.
    #[test]
    fn sent_messages_round_trip_and_keep_each_recipient_in_step(
        steps in proptest::collection::vec(
            proptest::collection::vec((0u64..8, proptest::option::of(addr()), any::<u8>(), any::<bool>()), 0..70),
            1..8,
        ),
    ) {
        let mut s = PexSender::new(false);
        let mut known: BTreeMap<u64, BTreeSet<SocketAddr>> = BTreeMap::new();
        let mut last: BTreeMap<u64, Instant> = BTreeMap::new();
        let mut now = Instant::ZERO;
        let mut conns: Vec<PexConn> = Vec::new();
        for step in steps {
            conns = step
                .into_iter()
                .enumerate()
                .map(|(i, (key, listen, flags, pex))| PexConn {
                    peer: key * 100 + i as u64,
                    listen,
                    flags,
                    ut_pex: pex.then_some(1 + (key as u8)),
                })
                .collect();
            let keys: BTreeSet<u64> = conns.iter().map(|c| c.peer).collect();
            known.retain(|k, _| keys.contains(k));
            last.retain(|k, _| keys.contains(k));
            for m in s.poll(now, &conns) {
                let c = conns.iter().find(|c| c.peer == m.peer).unwrap();
                prop_assert_eq!(Some(m.ext_id), c.ut_pex);
                prop_assert!(m.message.added.len() <= PEX_SEND_ADDED_MAX);
                prop_assert!(m.message.dropped.len() <= PEX_SEND_DROPPED_MAX);
                let wire = m.to_wire();
                prop_assert_eq!(&PexMessage::parse(&wire[6..]).unwrap(), &m.message);
                prop_assert!(m.message.added.iter().all(|p| Some(p.addr) != c.listen), "named to itself");
                if let Some(t) = last.insert(m.peer, now) {
                    prop_assert!(now.saturating_duration_since(t) >= PEX_INTERVAL);
                }
                let k = known.entry(m.peer).or_default();
                for p in &m.message.added {
                    prop_assert!(k.insert(p.addr), "told twice");
                }
                for a in &m.message.dropped {
                    prop_assert!(k.remove(a), "dropped but never told");
                }
            }
            now += Duration::from_secs(61);
        }
        // The last set stays: within a few minutes everyone is in step.
        for _ in 0..4 {
            for m in s.poll(now, &conns) {
                let k = known.entry(m.peer).or_default();
                k.extend(m.message.added.iter().map(|p| p.addr));
                for a in &m.message.dropped {
                    k.remove(a);
                }
            }
            now += Duration::from_secs(61);
        }
        for c in conns.iter().filter(|c| c.ut_pex.is_some()) {
            let want: BTreeSet<SocketAddr> = conns
                .iter()
                .filter_map(|o| o.listen)
                .filter(|a| a.port() != 0 && !a.ip().is_unspecified() && Some(*a) != c.listen)
                .collect();
            let got = known.get(&c.peer).cloned().unwrap_or_default();
            prop_assert_eq!(got, want);
        }
    }
}

// ---- what the torrent machine tells the sender ----

use rumor_core::bt::bitfield::Bitfield;
use rumor_core::bt::conn::PeerInput;
use rumor_core::bt::metainfo::{Limits, Metainfo, PieceHasher, TorrentBuilder};
use rumor_core::bt::torrent::{Input, Output, Torrent, TorrentConfig};
use rumor_core::bt::wire::{Decoder, DecoderConfig, ExtHandshake, Handshake, Message};

fn torrent(private: bool, listen_port: Option<u16>) -> (Torrent, Metainfo) {
    let mut h = PieceHasher::new(32 * 1024);
    h.update(&[7u8; 64 * 1024]);
    let mut b = TorrentBuilder::single("x.bin", 64 * 1024, 32 * 1024, h.finish());
    b.private = private;
    let meta = b.build(&Limits::default()).unwrap().1;
    let mut config = TorrentConfig::new([1; 20]);
    config.listen_port = listen_port;
    let have = Bitfield::full(meta.pieces.len() as u32);
    (Torrent::new(config, &meta, &have, Instant::ZERO, 1), meta)
}

/// Connects peer `key`, handshakes with the extension bit and sends `ext`;
/// returns what the machine sent it.
fn extended_peer(t: &mut Torrent, meta: &Metainfo, key: u64, ext: &ExtHandshake) -> Vec<Message> {
    t.handle(Instant::ZERO, Input::Peer(PeerInput::Connected { peer: key }));
    let mut b = Vec::new();
    Handshake::new(meta.info_hash, [key as u8; 20]).encode(&mut b);
    ext.to_message().encode(&mut b);
    t.handle(Instant::ZERO, Input::Peer(PeerInput::Bytes { peer: key, bytes: b.into() }));
    let mut dec = Decoder::new(DecoderConfig { piece_count: meta.pieces.len() as u32, ..Default::default() });
    loop {
        match t.poll_output() {
            Output::Transmit(tx) if tx.to == key => dec.feed(&tx.bytes),
            Output::Timeout(_) => break,
            _ => {}
        }
    }
    assert!(dec.take_handshake().unwrap().is_ok());
    std::iter::from_fn(|| dec.next().map(|m| m.unwrap())).collect()
}

fn ext_with_pex(id: u8, p: Option<u16>) -> ExtHandshake {
    let mut ext = ExtHandshake { p, ..ExtHandshake::default() };
    ext.m.insert("ut_pex".into(), id);
    ext
}

#[test]
fn the_torrent_reports_each_peers_ut_pex_id_and_listening_port_and_sends_its_own() {
    let (mut t, meta) = torrent(false, Some(51413));
    let sent = extended_peer(&mut t, &meta, 4, &ext_with_pex(9, Some(6889)));
    let ours = sent
        .iter()
        .find_map(|m| match m {
            Message::Extended { id: 0, payload } => Some(ExtHandshake::parse(payload).unwrap()),
            _ => None,
        })
        .expect("our extension handshake");
    assert_eq!(ours.p, Some(51413), "our listening port, so the peer can name us to others");
    assert!(ours.m.contains_key("ut_pex"));
    let info = t.peers().into_iter().find(|p| p.peer == 4).unwrap();
    assert_eq!((info.ut_pex, info.listen_port, info.seed), (Some(9), Some(6889), false));
}

#[test]
fn a_private_torrent_neither_offers_nor_reports_ut_pex() {
    let (mut t, meta) = torrent(true, None);
    let sent = extended_peer(&mut t, &meta, 4, &ext_with_pex(9, None));
    for m in &sent {
        if let Message::Extended { id: 0, payload } = m {
            let ours = ExtHandshake::parse(payload).unwrap();
            assert!(!ours.m.contains_key("ut_pex"));
            assert_eq!(ours.p, None);
        }
    }
    assert_eq!(t.peers()[0].ut_pex, None);
}
