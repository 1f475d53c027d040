//! `rumor get` from a magnet link or a bare infohash: the metadata comes
//! from peers (BEP 9) found through the overlay, a tracker or the link's
//! `x.pe` addresses, then the download runs as from the .torrent.

mod common;

use common::bt::*;
use common::{start_cluster, Scratch, TestNode};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const KEY: &str = "6f7665726c617920746573742063757374657220206b65792c20332062797465";

/// A tree and its torrent (no tracker unless `announce`): the tree, the
/// torrent and its infohash.
fn shared(s: &Scratch, seed: u64, announce: Option<&str>) -> (PathBuf, PathBuf, String) {
    let mut extra = vec!["--piece-size", "65536"];
    if let Some(a) = announce {
        extra.extend(["-a", a]);
    }
    let Fixture { data, torrent, ih, .. } = fixture(&s.0, seed, &extra);
    (data, torrent, ih)
}

/// `rumor seed` of the tree on a fixed free port, with extra flags.
fn seeder(s: &Scratch, torrent: &Path, port: u16, extra: &[&str]) -> Proc {
    rumor_seed(&s.0, "seeder", torrent, &s.0.join("src"), port, extra)
}

/// The download completes from the fetched metadata.
fn completes(p: &mut Proc, out: &Path, src: &Path, seeder: &Proc) {
    assert_downloads(p, out, src, Duration::from_secs(90), &[seeder]);
    assert!(p.log_text().contains("got the metadata"), "{}", p.log_text());
}

#[test]
fn a_bare_infohash_is_fetched_through_a_three_node_overlay() {
    let s = Scratch::new("bt-magnet-overlay");
    let nodes = start_cluster("bt-magnet-overlay-node", 3, KEY);
    let (src, torrent, ih) = shared(&s, 41, None);
    let seed =
        seeder(&s, &torrent, common::free_port(), &["--overlay", &nodes[0].gossip.to_string(), "--cluster-key", KEY]);
    // Only the infohash: no name, no tracker, no peer; the overlay of
    // another node than the seeder's has the rest.
    let overlay = nodes[2].gossip.to_string();
    let (mut get, out) =
        rumor_leech(&s.0, "leecher", &ih, &["--overlay", &overlay, "--cluster-key", KEY, "--metadata-timeout", "60"]);
    completes(&mut get, &out, &src, &seed);
}

#[test]
fn a_magnet_link_with_a_peer_address_needs_no_overlay() {
    let s = Scratch::new("bt-magnet-xpe");
    let (src, torrent, ih) = shared(&s, 43, None);
    let port = common::free_port();
    let seed = seeder(&s, &torrent, port, &[]);
    wait_listening(port);
    let link =
        format!("magnet:?xt=urn:btih:{ih}&dn=payload&x.pe=127.0.0.1:{port}&tr=http%3A%2F%2F127.0.0.1%3A1%2Fannounce");
    let saved = s.0.join("saved.torrent");
    let saved_arg = saved.to_str().unwrap();
    let (mut get, out) =
        rumor_leech(&s.0, "leecher", &link, &["--metadata-timeout", "60", "--save-torrent", saved_arg]);
    completes(&mut get, &out, &src, &seed);
    // The saved torrent is the original one: same info dictionary, so the
    // same infohash, with the link's tracker.
    let original = metainfo_of(&torrent);
    let back = metainfo_of(&saved);
    assert_eq!(back.info_hash.to_hex(), ih);
    assert_eq!(back.info_bytes, original.info_bytes);
    assert_eq!(back.announce.as_deref(), Some("http://127.0.0.1:1/announce"));
    // And `rumor seed` takes it: every piece of the download is found.
    let reseed = rumor_seed(&s.0, "reseeder", &saved, &out, 0, &[]);
    let pieces = original.piece_count();
    assert!(
        eventually(Duration::from_secs(20), || reseed
            .log_text()
            .contains(&format!("{pieces} of {pieces} pieces present"))),
        "{}",
        reseed.log_text()
    );
}

#[test]
fn a_magnet_link_finds_its_peers_through_a_node_tracker() {
    let s = Scratch::new("bt-magnet-tracker");
    let node = TestNode::solo("bt-magnet-tracker-node", &[]);
    let announce = format!("http://127.0.0.1:{}/announce", node.api.port());
    let (src, torrent, ih) = shared(&s, 47, Some(&announce));
    let seed = seeder(&s, &torrent, common::free_port(), &[]);
    // Base32 infohash, and the tracker given as --tracker.
    let b32 = base32(&hex::decode(&ih).unwrap());
    let link = format!("magnet:?xt=urn:btih:{b32}");
    let (mut get, out) = rumor_leech(&s.0, "leecher", &link, &["--tracker", &announce, "--metadata-timeout", "60"]);
    completes(&mut get, &out, &src, &seed);
}

#[test]
fn an_infohash_nobody_has_fails_within_the_metadata_timeout() {
    let s = Scratch::new("bt-magnet-none");
    let node = TestNode::solo("bt-magnet-none-node", &["--cluster-key", KEY]);
    let ih = "00112233445566778899aabbccddeeff00112233";
    let started = Instant::now();
    let overlay = node.gossip.to_string();
    let (mut get, _) =
        rumor_leech(&s.0, "leecher", ih, &["--overlay", &overlay, "--cluster-key", KEY, "--metadata-timeout", "3"]);
    let code = get.wait_for(Duration::from_secs(30));
    assert!(code.is_some_and(|c| !c.success()), "exits non-zero ({code:?}): {}", get.log_text());
    assert!(started.elapsed() < Duration::from_secs(20));
    let log = get.log_text();
    assert!(log.contains(&format!("{ih}: no peer sent the metadata within 3 s")), "{log}");

    // With nowhere to look at all (the DHT off too) it says so at once.
    let o = rumor_output(&["get", ih, "--port", "0", "--quiet", "--no-dht"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("nowhere to look for peers"), "{o:?}");
    // And a malformed link is refused.
    let o = rumor_output(&["get", "magnet:?xt=urn:btih:nothex", "--port", "0"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a usable magnet link"), "{o:?}");
}

/// A hostile peer: it has "the torrent", announces `metadata_size`, and
/// answers every metadata request with `junk` bytes of garbage (or of the
/// right length, if `junk` is None). Records how many requests it got.
fn liar(ih: &str, metadata_size: u64, junk: Option<usize>) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use rumor_core::bt::metadata::{MetadataMessage, METADATA_PIECE_LEN};
    use rumor_core::bt::wire::{Decoder, DecoderConfig, ExtHandshake, Handshake, Message};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let ih = rumor_core::bt::metainfo::InfoHash::from_hex(ih).unwrap();
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = asked.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut c) = conn else { return };
            let count = count.clone();
            std::thread::spawn(move || {
                let _ = c.set_read_timeout(Some(Duration::from_secs(30)));
                let mut hs = Vec::new();
                Handshake::new(ih, *b"-XX0001-liarliarliar").encode(&mut hs);
                let mut ext = ExtHandshake { metadata_size: Some(metadata_size), ..ExtHandshake::default() };
                ext.m.insert("ut_metadata".into(), 3);
                hs.extend(ext.to_message().to_vec());
                if c.write_all(&hs).is_err() {
                    return;
                }
                let mut d = Decoder::new(DecoderConfig::default());
                let mut their_id = None;
                let mut buf = [0u8; 4096];
                let _ = d.take_handshake();
                loop {
                    let n = match c.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    d.feed(&buf[..n]);
                    if their_id.is_none() {
                        let _ = d.take_handshake();
                    }
                    while let Some(Ok(m)) = d.next() {
                        match m {
                            Message::Extended { id: 0, payload } => {
                                their_id =
                                    ExtHandshake::parse(&payload).ok().and_then(|h| h.m.get("ut_metadata").copied());
                            }
                            Message::Extended { id: 3, payload } => {
                                let Ok(MetadataMessage::Request { piece }) = MetadataMessage::parse(&payload) else {
                                    continue;
                                };
                                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                let left = metadata_size as usize - piece as usize * METADATA_PIECE_LEN;
                                let len = junk.unwrap_or(left.min(METADATA_PIECE_LEN));
                                let data = vec![0x5a; len].into();
                                let reply = MetadataMessage::Data { piece, total_size: metadata_size, data };
                                let m = Message::Extended { id: their_id.unwrap_or(1), payload: reply.encode().into() };
                                if c.write_all(&m.to_vec()).is_err() {
                                    return;
                                }
                            }
                            _ => {}
                        }
                    }
                }
            });
        }
    });
    (port, asked)
}

#[test]
fn peers_sending_bad_metadata_are_dropped_and_an_honest_one_serves() {
    let s = Scratch::new("bt-magnet-liar");
    let (src, torrent, ih) = shared(&s, 53, None);
    let info_len = metainfo_of(&torrent).info_bytes.len() as u64;
    // Alone, a liar gets the fetch nowhere, and is banned (it is the only
    // contributor).
    let (liar_port, asked) = liar(&ih, info_len, None);
    let link = format!("magnet:?xt=urn:btih:{ih}&x.pe=127.0.0.1:{liar_port}");
    let (mut get, _) = rumor_leech(&s.0, "alone", &link, &["--metadata-timeout", "4"]);
    assert!(get.wait_for(Duration::from_secs(30)).is_some_and(|c| !c.success()), "{}", get.log_text());
    assert!(asked.load(std::sync::atomic::Ordering::SeqCst) >= 1, "{}", get.log_text());
    assert!(get.log_text().contains("banned for sending bad metadata"), "{}", get.log_text());
    assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 1, "asked again after the ban");

    // Liars (the wrong bytes, a piece too long, a size over the limit)
    // next to an honest seeder: the download completes.
    let (liar2, _) = liar(&ih, info_len, Some(20_000));
    let (liar3, _) = liar(&ih, 1 << 30, None);
    let port = common::free_port();
    let seed = seeder(&s, &torrent, port, &[]);
    wait_listening(port);
    let link = format!(
        "magnet:?xt=urn:btih:{ih}&x.pe=127.0.0.1:{liar_port}&x.pe=127.0.0.1:{liar2}&x.pe=127.0.0.1:{liar3}&x.pe=127.0.0.1:{port}"
    );
    let (mut get, out) = rumor_leech(&s.0, "mixed", &link, &["--metadata-timeout", "60"]);
    completes(&mut get, &out, &src, &seed);
}

/// RFC 4648 base32, no padding.
fn base32(b: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut out, mut acc, mut bits) = (String::new(), 0u64, 0);
    for &x in b {
        acc = (acc << 8) | x as u64;
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(A[((acc >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(A[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

#[test]
fn a_malformed_infohash_is_called_a_bad_infohash_not_a_missing_file() {
    for (bad, why) in [
        ("00112233445566778899aabbccddeeff0011223", "39 characters long"),
        ("00112233445566778899aabbccddeeff0011223z", "not all are hex digits"),
        ("AARCEM2EKVTHQ6FKXO6N57YAEIRTGRK1", "not all are base32"),
    ] {
        let o = rumor_output(&["get", bad, "--port", "0", "--quiet"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success());
        assert!(err.contains(&format!("{bad}: bad infohash (")) && err.contains(why), "{err}");
        assert!(!err.contains("No such file"), "{err}");
    }
    // A bare base32 infohash is an infohash like 40 hex digits: with
    // nowhere to look for peers (the DHT off), it says so.
    let o = rumor_output(&["get", "AARCEM2EKVTHQ6FKXO6N57YAEIRTGRK2", "--port", "0", "--quiet", "--no-dht"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("nowhere to look for peers"), "{o:?}");
}
