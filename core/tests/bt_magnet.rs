//! The metadata fetcher against real torrent machines serving BEP 9.
use bytes::Bytes;
use proptest::prelude::*;
use rumor_core::bt::bitfield::Bitfield;
use rumor_core::bt::conn::PeerInput;
use rumor_core::bt::magnet::{self, FetchConfig, MagnetLink, MetadataFetch};
use rumor_core::bt::metainfo::{InfoHash, Limits, Metainfo, PieceHasher, TorrentBuilder};
use rumor_core::bt::torrent::{Input, Output, Torrent, TorrentConfig};
use rumor_core::bt::wire::{ExtHandshake, Handshake, Message};
use rumor_core::time::{Duration, Instant};
use rumor_core::Transmit;
use std::collections::VecDeque;

fn big_meta() -> Metainfo {
    // ~40 KB of piece hashes: three metadata pieces.
    let data: Vec<u8> = (0..2000 * 16384u32).map(|i| (i / 16384) as u8).collect();
    let mut h = PieceHasher::new(16384);
    h.update(&data);
    TorrentBuilder::single("m.bin", data.len() as u64, 16384, h.finish()).build(&Limits::default()).unwrap().1
}

enum Msg {
    ToFetch(u64, Bytes),
    ToSeed(usize, Bytes),
}

/// One fetcher (peer key = seed index) against `seeds` torrent seeds (peer
/// key 100 for the fetcher). Returns the fetched torrent, if any.
fn fetch_from(seeds: &mut [Torrent], meta: &Metainfo, steps_max: usize) -> Option<Metainfo> {
    let mut f = MetadataFetch::new(FetchConfig::new([9; 20]), meta.info_hash, Instant::ZERO);
    let mut q: VecDeque<Msg> = VecDeque::new();
    let now = Instant::ZERO;
    for (i, s) in seeds.iter_mut().enumerate() {
        f.handle(now, magnet::Input::Peer(PeerInput::Connected { peer: i as u64 }));
        s.handle(now, Input::Peer(PeerInput::Connected { peer: 100 }));
    }
    for _ in 0..steps_max {
        loop {
            match f.poll_output() {
                magnet::Output::Transmit(Transmit { to: peer, bytes: payload }) => {
                    q.push_back(Msg::ToSeed(peer as usize, payload.into()))
                }
                magnet::Output::Event(magnet::Event::Done(m)) => return Some(*m),
                magnet::Output::Disconnect { .. } => {}
                magnet::Output::Timeout(_) => break,
            }
        }
        for (i, s) in seeds.iter_mut().enumerate() {
            loop {
                match s.poll_output() {
                    Output::Transmit(Transmit { bytes: payload, .. }) => {
                        q.push_back(Msg::ToFetch(i as u64, payload.into()))
                    }
                    Output::Timeout(_) => break,
                    _ => {}
                }
            }
        }
        match q.pop_front()? {
            Msg::ToFetch(peer, bytes) => f.handle(now, magnet::Input::Peer(PeerInput::Bytes { peer, bytes })),
            Msg::ToSeed(i, bytes) => seeds[i].handle(now, Input::Peer(PeerInput::Bytes { peer: 100, bytes })),
        }
    }
    None
}

fn seed(meta: &Metainfo, i: u8) -> Torrent {
    let n = meta.pieces.len() as u32;
    Torrent::new(TorrentConfig::new([i; 20]), meta, &Bitfield::full(n), Instant::ZERO, i as u64)
}

#[test]
fn metadata_is_fetched_from_seeds_by_infohash_alone() {
    let meta = big_meta();
    let mut seeds = vec![seed(&meta, 1), seed(&meta, 2)];
    let got = fetch_from(&mut seeds, &meta, 10_000).expect("fetched");
    assert_eq!(got.info_hash, meta.info_hash);
    assert_eq!(got.pieces, meta.pieces);
}

#[test]
fn a_peer_without_extension_support_is_dropped() {
    let mut f = MetadataFetch::new(FetchConfig::new([9; 20]), InfoHash([1; 20]), Instant::ZERO);
    f.handle(Instant::ZERO, magnet::Input::Peer(PeerInput::Connected { peer: 1 }));
    let mut h = Handshake::new(InfoHash([1; 20]), [2; 20]);
    h.reserved = [0; 8];
    let mut b = Vec::new();
    h.encode(&mut b);
    f.handle(Instant::ZERO, magnet::Input::Peer(PeerInput::Bytes { peer: 1, bytes: b.into() }));
    let mut outs = Vec::new();
    loop {
        match f.poll_output() {
            magnet::Output::Timeout(_) => break,
            o => outs.push(o),
        }
    }
    assert!(outs.contains(&magnet::Output::Disconnect { peer: 1, reason: magnet::DisconnectReason::NoMetadata }));
}

#[test]
fn metadata_that_hashes_wrong_drops_its_senders() {
    let meta = big_meta();
    let mut f = MetadataFetch::new(FetchConfig::new([9; 20]), meta.info_hash, Instant::ZERO);
    f.handle(Instant::ZERO, magnet::Input::Peer(PeerInput::Connected { peer: 1 }));
    let mut b = Vec::new();
    Handshake::new(meta.info_hash, [2; 20]).encode(&mut b);
    let mut ext = ExtHandshake { metadata_size: Some(100), ..ExtHandshake::default() };
    ext.m.insert("ut_metadata".into(), 5);
    ext.to_message().encode(&mut b);
    f.handle(Instant::ZERO, magnet::Input::Peer(PeerInput::Bytes { peer: 1, bytes: b.into() }));
    let mut asked = false;
    loop {
        match f.poll_output() {
            magnet::Output::Timeout(_) => break,
            magnet::Output::Transmit(Transmit { bytes: payload, .. }) => {
                asked |= payload.windows(8).any(|w| w == b"msg_type")
            }
            _ => {}
        }
    }
    assert!(asked, "piece 0 requested");
    let data =
        rumor_core::bt::metadata::MetadataMessage::Data { piece: 0, total_size: 100, data: vec![0u8; 100].into() };
    let m = Message::Extended { id: rumor_core::bt::torrent::UT_METADATA_ID, payload: data.encode().into() };
    f.handle(Instant::ZERO, magnet::Input::Peer(PeerInput::Bytes { peer: 1, bytes: m.to_vec().into() }));
    let mut outs = Vec::new();
    loop {
        match f.poll_output() {
            magnet::Output::Timeout(_) => break,
            o => outs.push(o),
        }
    }
    assert!(outs.contains(&magnet::Output::Disconnect { peer: 1, reason: magnet::DisconnectReason::BadMetadata }));
    assert!(!f.is_done());
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_the_fetcher(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..120), 0..8),
        handshake in any::<bool>(),
    ) {
        let ih = InfoHash([4; 20]);
        let mut f = MetadataFetch::new(FetchConfig::new([9; 20]), ih, Instant::ZERO);
        f.handle(Instant::ZERO, magnet::Input::Peer(PeerInput::Connected { peer: 1 }));
        if handshake {
            let mut b = Vec::new();
            Handshake::new(ih, [2; 20]).encode(&mut b);
            f.handle(Instant::ZERO, magnet::Input::Peer(PeerInput::Bytes { peer: 1, bytes: b.into() }));
        }
        let mut now = Instant::ZERO;
        for c in chunks {
            now += Duration::from_secs(3);
            f.handle(now, magnet::Input::Peer(PeerInput::Bytes { peer: 1, bytes: c.into() }));
            f.handle(now, magnet::Input::Timeout);
            while !matches!(f.poll_output(), magnet::Output::Timeout(_)) {}
        }
    }
}

#[test]
fn a_magnet_link_with_a_hex_infohash_parses() {
    let l = MagnetLink::parse(
        "magnet:?xt=urn:btih:c12fe1c06bba254a9dc9f519b335aa7c1367a88a&dn=Some+File%21&tr=udp%3A%2F%2Ft%3A80&tr=http%3A%2F%2Fu%2Fa&x.pe=10.0.0.1%3A6881",
    )
    .unwrap();
    assert_eq!(l.info_hash.to_hex(), "c12fe1c06bba254a9dc9f519b335aa7c1367a88a");
    assert_eq!(l.name.as_deref(), Some("Some File!"));
    assert_eq!(l.trackers, vec!["udp://t:80".to_string(), "http://u/a".to_string()]);
    assert_eq!(l.peers, vec!["10.0.0.1:6881".to_string()]);
    assert_eq!(MagnetLink::parse(&l.to_uri()).unwrap(), l);
}

#[test]
fn a_magnet_link_with_a_base32_infohash_parses() {
    // base32 of 20 bytes 0x00..0x13
    let ih: [u8; 20] = std::array::from_fn(|i| i as u8);
    let l = MagnetLink::parse("magnet:?xt=urn:btih:AAAQEAYEAUDAOCAJBIFQYDIOB4IBCEQT").unwrap();
    assert_eq!(l.info_hash, InfoHash(ih));
    assert!(MagnetLink::parse("magnet:?dn=x").is_none());
    assert!(MagnetLink::parse("http://x").is_none());
    assert!(MagnetLink::parse("magnet:?xt=urn:btih:zz").is_none());
}

proptest! {
    #[test]
    fn magnet_links_round_trip(ih in any::<[u8; 20]>(), name in proptest::option::of("[ -~]{0,20}"), trs in proptest::collection::vec("[ -~]{1,20}", 0..4)) {
        let l = MagnetLink { info_hash: InfoHash(ih), name, trackers: trs, peers: vec![] };
        prop_assert_eq!(MagnetLink::parse(&l.to_uri()), Some(l));
    }

    #[test]
    fn parsing_arbitrary_magnet_text_never_panics(s in "magnet:\\?[ -~]{0,120}") {
        let _ = MagnetLink::parse(&s);
    }
}

/// A peer that completes the handshakes announcing `size` and then
/// never answers a metadata request.
fn silent_liar(f: &mut MetadataFetch, ih: InfoHash, peer: u64, size: u64) {
    f.handle(Instant::ZERO, magnet::Input::Peer(PeerInput::Connected { peer }));
    let mut b = Vec::new();
    Handshake::new(ih, [3; 20]).encode(&mut b);
    let mut ext = ExtHandshake { metadata_size: Some(size), ..ExtHandshake::default() };
    ext.m.insert("ut_metadata".into(), 5);
    ext.to_message().encode(&mut b);
    f.handle(Instant::ZERO, magnet::Input::Peer(PeerInput::Bytes { peer, bytes: b.into() }));
}

#[test]
fn a_peer_announcing_a_wrong_size_first_does_not_cost_the_honest_ones() {
    let meta = big_meta();
    let real = meta.info_bytes.len() as u64;
    for honest in [1usize, 2] {
        let mut f = MetadataFetch::new(FetchConfig::new([9; 20]), meta.info_hash, Instant::ZERO);
        // The liar speaks first: a plausible size, one piece longer.
        silent_liar(&mut f, meta.info_hash, 50, real + 16384);
        let mut seeds: Vec<Torrent> = (0..honest).map(|i| seed(&meta, i as u8 + 1)).collect();
        let mut now = Instant::ZERO;
        for (i, s) in seeds.iter_mut().enumerate() {
            f.handle(now, magnet::Input::Peer(PeerInput::Connected { peer: i as u64 }));
            s.handle(now, Input::Peer(PeerInput::Connected { peer: 100 }));
        }
        let mut q: VecDeque<Msg> = VecDeque::new();
        let mut dropped = Vec::new();
        let mut got = None;
        for _ in 0..20_000 {
            loop {
                match f.poll_output() {
                    magnet::Output::Transmit(Transmit { to: peer, bytes: payload }) if (peer as usize) < honest => {
                        q.push_back(Msg::ToSeed(peer as usize, payload.into()))
                    }
                    magnet::Output::Transmit(Transmit { .. }) => {}
                    magnet::Output::Event(magnet::Event::Done(m)) => got = Some(*m),
                    magnet::Output::Disconnect { peer, reason } => dropped.push((peer, reason)),
                    magnet::Output::Timeout(_) => break,
                }
            }
            if got.is_some() {
                break;
            }
            for (i, s) in seeds.iter_mut().enumerate() {
                loop {
                    match s.poll_output() {
                        Output::Transmit(Transmit { bytes: payload, .. }) => {
                            q.push_back(Msg::ToFetch(i as u64, payload.into()))
                        }
                        Output::Timeout(_) => break,
                        _ => {}
                    }
                }
            }
            match q.pop_front() {
                Some(Msg::ToFetch(peer, bytes)) => f.handle(now, magnet::Input::Peer(PeerInput::Bytes { peer, bytes })),
                Some(Msg::ToSeed(i, bytes)) => seeds[i].handle(now, Input::Peer(PeerInput::Bytes { peer: 100, bytes })),
                // Nothing in flight: the liar's requests time out.
                None => {
                    now += Duration::from_secs(1);
                    f.handle(now, magnet::Input::Timeout);
                }
            }
        }
        let got = got.unwrap_or_else(|| panic!("fetched with {honest} honest peer(s); dropped {dropped:?}"));
        assert_eq!(got.info_hash, meta.info_hash);
        let honest_dropped: Vec<_> =
            dropped.iter().filter(|(p, r)| (*p as usize) < honest && *r != magnet::DisconnectReason::Done).collect();
        assert!(honest_dropped.is_empty(), "honest peers dropped: {honest_dropped:?}");
        // With two honest peers the majority size wins at once: no wait
        // on the liar's timeout.
        if honest == 2 {
            assert_eq!(now, Instant::ZERO, "no timeout was needed");
        }
    }
}
