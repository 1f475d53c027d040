//! rumor against the BitTorrent clients people run (issue 13): aria2 and
//! transmission, both ways, by .torrent, and aria2 by magnet link, each
//! download checked byte for byte within a bounded time. `bench/interop.sh`
//! runs the whole matrix (qBittorrent, libtorrent, trackers, encryption);
//! these are its quick cases. Peers are given directly (`--peer`, or rumor
//! dials the client: transmission 3.00 does not dial 127.0.0.1 peers).

mod common;

use common::bt::*;
use common::{free_port, Scratch};
use std::path::Path;
use std::time::Duration;

/// A tree big enough that a transfer takes many round trips (aria2 sends
/// its second bitfield part way through), with an empty file and a name
/// with spaces and UTF-8.
fn client_fixture(dir: &Path, seed: u64) -> Fixture {
    let src = dir.join("src");
    let data = src.join("payload");
    std::fs::create_dir_all(data.join("nested/folder")).unwrap();
    std::fs::write(data.join("nested/folder/big part.bin"), content(seed, 12 << 20)).unwrap();
    std::fs::write(data.join("spaces and ünïcødé.bin"), content(seed + 1, 1_000_003)).unwrap();
    std::fs::write(data.join("empty"), b"").unwrap();
    let torrent = dir.join("t.torrent");
    let ih = rumor_create(&data, &torrent, &["--piece-size", "65536"]);
    Fixture { src, data, torrent, ih }
}

/// The download is the source tree; an empty file may be missing
/// (transmission 3.00 creates none), every other byte must match.
fn assert_same_content(src: &Path, out: &Path) {
    let empty = src.join("empty");
    let got = out.join("empty");
    if !got.exists() {
        std::fs::write(&got, b"").unwrap();
    }
    assert_eq!(std::fs::metadata(&empty).unwrap().len(), 0);
    assert_same_tree(src, out);
}

#[test]
fn aria2_downloads_from_a_rumor_seeder() {
    let s = Scratch::new("bt-aria2-leech");
    let Fixture { src, data, torrent, .. } = client_fixture(&s.0, 11);
    let port = free_port();
    let out = s.0.join("out-aria2");
    let mut aria = aria2_leech(&s.0, &torrent, &out, (port, port));
    wait_listening(port);
    let seeder = rumor_seed(&s.0, "seed", &torrent, &src, free_port(), &["--peer", &format!("127.0.0.1:{port}")]);
    assert_success(&mut aria, Duration::from_secs(60), &[&seeder]);
    assert_same_tree(&data, &out.join("payload"));
    // aria2's second bitfield is taken as an update, never a reason to drop it.
    assert!(!seeder.log_text().contains("Misbehaved"), "{}", seeder.log_text());
}

#[test]
fn rumor_downloads_from_an_aria2_seeder() {
    let s = Scratch::new("bt-aria2-seed");
    let Fixture { src, data, torrent, .. } = client_fixture(&s.0, 12);
    let port = free_port();
    let seeder = aria2_seed(&s.0, &torrent, &src, port);
    wait_listening(port);
    let (mut get, out) = rumor_leech(&s.0, "get", &torrent, &["--peer", &format!("127.0.0.1:{port}")]);
    assert_downloads(&mut get, &out, &data, Duration::from_secs(60), &[&seeder]);
}

#[test]
fn aria2_fetches_a_magnet_link_from_a_rumor_seeder() {
    let s = Scratch::new("bt-aria2-magnet");
    let Fixture { src, data, torrent, ih } = client_fixture(&s.0, 13);
    let base = free_port();
    let out = s.0.join("out-aria2");
    // No tracker, no DHT: the seeder dials aria2.
    let mut aria = aria2_leech(&s.0, format!("magnet:?xt=urn:btih:{ih}"), &out, (base, base));
    wait_listening(base);
    let seeder = rumor_seed(&s.0, "seed", &torrent, &src, free_port(), &["--peer", &format!("127.0.0.1:{base}")]);
    assert_success(&mut aria, Duration::from_secs(60), &[&seeder]);
    assert_same_tree(&data, &out.join("payload"));
}

#[test]
fn transmission_downloads_from_a_rumor_seeder() {
    let s = Scratch::new("bt-tr-leech");
    let Fixture { src, data, torrent, .. } = client_fixture(&s.0, 14);
    let (rpc, peer) = (free_port(), free_port());
    let out = s.0.join("out-tr");
    let tr = Transmission::start(&s.0, &out, rpc, peer);
    tr.add(&torrent);
    wait_listening(peer);
    let seeder = rumor_seed(&s.0, "seed", &torrent, &src, free_port(), &["--peer", &format!("127.0.0.1:{peer}")]);
    let done = eventually(Duration::from_secs(60), || tr.complete());
    assert!(done, "transmission did not complete:\n{}\nrumor:\n{}", tr.proc.log_text(), seeder.log_text());
    // It reports 100% once verified; its last writes may still be landing.
    assert!(eventually(Duration::from_secs(10), || {
        std::fs::read(out.join("payload/nested/folder/big part.bin")).is_ok_and(|b| b == content(14, 12 << 20))
    }));
    assert_same_content(&data, &out.join("payload"));
}

#[test]
fn rumor_downloads_from_a_transmission_seeder() {
    let s = Scratch::new("bt-tr-seed");
    let Fixture { src, data, torrent, .. } = client_fixture(&s.0, 15);
    let (rpc, peer) = (free_port(), free_port());
    let tr = Transmission::start(&s.0, &src, rpc, peer);
    tr.add(&torrent);
    assert!(eventually(Duration::from_secs(30), || tr.complete()), "transmission did not verify its data");
    let (mut get, out) = rumor_leech(&s.0, "get", &torrent, &["--peer", &format!("127.0.0.1:{peer}")]);
    assert_success(&mut get, Duration::from_secs(60), &[&tr.proc]);
    assert_same_content(&data, &out.join("payload"));
}

/// A peer that asks for 30 MiB at once and then reads nothing for a
/// while: rumor paces it by its socket (stops reading its requests, holds
/// the replies) instead of dropping it when its send queue fills, and
/// every block arrives once the peer reads again.
#[test]
fn a_peer_that_asks_for_much_and_reads_slowly_is_paced_not_dropped() {
    use rumor_core::bt::wire::{BlockRef, Decoder, DecoderConfig, Handshake, Message, BLOCK_LEN};
    use std::io::{Read, Write};
    let s = Scratch::new("bt-slow-reader");
    let src = s.0.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let len = 30usize << 20;
    let data = content(16, len);
    std::fs::write(src.join("big.bin"), &data).unwrap();
    let torrent = s.0.join("t.torrent");
    rumor_create(&src.join("big.bin"), &torrent, &["--piece-size", "1048576"]);
    let meta = metainfo_of(&torrent);
    let port = free_port();
    let seeder = rumor_seed(&s.0, "seed", &torrent, &src, port, &[]);
    wait_listening(port);
    let mut sock = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut out = Vec::new();
    Handshake::new(meta.info_hash, *b"-XX0001-slowreader01").encode(&mut out);
    Message::Interested.encode(&mut out);
    sock.write_all(&out).unwrap();
    let pieces = meta.piece_count();
    let mut dec = Decoder::new(DecoderConfig { piece_count: pieces, ..DecoderConfig::default() });
    let mut buf = vec![0u8; 1 << 16];
    let mut next = |sock: &mut std::net::TcpStream, dec: &mut Decoder| loop {
        if let Some(m) = dec.next() {
            return m.unwrap();
        }
        let n = sock.read(&mut buf).unwrap();
        assert!(n > 0, "rumor closed the connection:\n{}", seeder.log_text());
        dec.feed(&buf[..n]);
        if let Some(h) = dec.take_handshake() {
            h.unwrap();
        }
    };
    while next(&mut sock, &mut dec) != Message::Unchoke {}
    // Every block, within rumor's advertised request queue (4000).
    let blocks: Vec<BlockRef> = (0..(len as u32 / BLOCK_LEN))
        .map(|i| BlockRef { index: i * BLOCK_LEN / (1 << 20), begin: i * BLOCK_LEN % (1 << 20), length: BLOCK_LEN })
        .collect();
    assert!(blocks.len() <= 4000);
    let mut reqs = Vec::new();
    for b in &blocks {
        Message::Request(*b).encode(&mut reqs);
    }
    sock.write_all(&reqs).unwrap();
    // Read nothing for a while: far more than rumor's 4 MiB soft limit and
    // the socket buffers is asked for.
    std::thread::sleep(Duration::from_secs(3));
    let mut got = vec![false; blocks.len()];
    let mut left = blocks.len();
    while left > 0 {
        if let Message::Piece { index, begin, data: d } = next(&mut sock, &mut dec) {
            let at = index as usize * (1 << 20) + begin as usize;
            assert_eq!(&d[..], &data[at..at + d.len()], "block {index}/{begin} has wrong bytes");
            let i = at / BLOCK_LEN as usize;
            assert!(!got[i], "block {index}/{begin} came twice");
            got[i] = true;
            left -= 1;
        }
    }
    assert!(!seeder.log_text().contains("dropped"), "{}", seeder.log_text());
}
