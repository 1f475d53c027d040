//! Hostile input: malicious torrents are refused with a clear error, and a
//! peer serving corrupt blocks does not corrupt the download.

mod common;

use common::bt::*;
use common::{free_port, Scratch};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Bencode helpers for hand-made torrents.
fn bs(s: &[u8]) -> Vec<u8> {
    let mut v = format!("{}:", s.len()).into_bytes();
    v.extend_from_slice(s);
    v
}

fn int(i: i64) -> Vec<u8> {
    format!("i{i}e").into_bytes()
}

fn dict(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut v = b"d".to_vec();
    for (k, val) in entries {
        v.extend(bs(k.as_bytes()));
        v.extend_from_slice(val);
    }
    v.push(b'e');
    v
}

fn list(items: &[Vec<u8>]) -> Vec<u8> {
    let mut v = b"l".to_vec();
    for i in items {
        v.extend_from_slice(i);
    }
    v.push(b'e');
    v
}

fn multi_file_torrent(path: &[&[u8]]) -> Vec<u8> {
    let file = dict(&[("length", int(10)), ("path", list(&path.iter().map(|c| bs(c)).collect::<Vec<_>>()))]);
    let info = dict(&[
        ("files", list(&[file])),
        ("name", bs(b"evil")),
        ("piece length", int(16384)),
        ("pieces", bs(&[7u8; 20])),
    ]);
    dict(&[("announce", bs(b"http://127.0.0.1:1/announce")), ("info", info)])
}

fn single_file_torrent(name: &[u8], length: i64, piece_length: i64, pieces: &[u8]) -> Vec<u8> {
    let info = dict(&[
        ("length", int(length)),
        ("name", bs(name)),
        ("piece length", int(piece_length)),
        ("pieces", bs(pieces)),
    ]);
    dict(&[("info", info)])
}

/// Runs `rumor get` on `bytes` and returns its stderr; asserts it failed
/// and wrote nothing outside its output directory.
fn refused(tag: &str, bytes: &[u8]) -> String {
    let s = Scratch::new(&format!("bt-hostile-{tag}"));
    let t = s.0.join("evil.torrent");
    std::fs::write(&t, bytes).unwrap();
    let out = s.0.join("inside/out");
    std::fs::create_dir_all(&out).unwrap();
    let o = get_command(&t, &out, free_port()).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(!o.status.success(), "{tag}: a malicious torrent was accepted: {err}");
    assert!(err.contains("refused"), "{tag}: the error does not say the torrent was refused: {err}");
    // A sentence for a person, not Rust's debug output.
    for debug in ["Error {", "kind:", "Bencode(", "offset:"] {
        assert!(!err.contains(debug), "{tag}: the error reads as debug output: {err}");
    }
    let outside: Vec<_> = std::fs::read_dir(&s.0).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(outside.len(), 2, "{tag}: something was written next to the output: {outside:?}");
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0, "{tag}: files were created");
    err
}

#[test]
fn a_torrent_whose_names_cannot_be_made_a_path_is_refused() {
    // Unsafe names ('..', '/', '\', NUL, empty) are renamed into safe
    // paths, not refused (bt_wild downloads such torrents and checks where
    // every file lands); what is left is a file with no path at all and a
    // single file named '..'.
    let e = refused("nopath", &multi_file_torrent(&[]));
    assert!(e.contains("a file path with no components"), "{e}");
    let e = refused("dotname", &single_file_torrent(b"..", 10, 16384, &[1u8; 20]));
    assert!(e.contains("the file name is '..'"), "{e}");
}

#[test]
fn a_torrent_whose_hashes_do_not_cover_its_length_is_refused() {
    let e = refused("count", &single_file_torrent(b"f", 100_000, 16384, &[1u8; 20]));
    assert!(e.contains("the torrent has 1 piece hashes but its length needs 7"), "{e}");
    refused("ragged", &single_file_torrent(b"f", 10, 16384, &[1u8; 19]));
}

#[test]
fn a_torrent_with_absurd_sizes_is_refused() {
    refused("negative", &single_file_torrent(b"f", -5, 16384, &[1u8; 20]));
    refused("zero-piece", &single_file_torrent(b"f", 10, 0, &[1u8; 20]));
    refused("huge-piece", &single_file_torrent(b"f", 10, 1 << 40, &[1u8; 20]));
    refused("huge-total", &single_file_torrent(b"f", i64::MAX, 1 << 20, &[1u8; 20]));
}

#[test]
fn garbage_truncated_and_oversized_torrent_files_are_refused() {
    let e = refused("garbage", b"this is not bencode at all");
    assert!(e.contains("not a torrent file: bad bencode at byte 0: unexpected 't'"), "{e}");
    let mut t = single_file_torrent(b"f", 10, 16384, &[1u8; 20]);
    t.truncate(t.len() - 3);
    let e = refused("truncated", &t);
    assert!(e.contains("not a torrent file: bad bencode at byte") && e.contains("truncated"), "{e}");
    let e = refused("no-info", &dict(&[("announce", bs(b"http://x/"))]));
    assert!(e.contains("not a torrent file: it has no 'info' dictionary"), "{e}");
    let e = refused("list", b"le");
    assert!(e.contains("not a torrent file: expected a dictionary at byte 0"), "{e}");
    let e = refused("no-pieces", &dict(&[("info", dict(&[("length", int(10)), ("name", bs(b"f"))]))]));
    assert!(e.contains("has no 'piece length' key"), "{e}");
    refused("deep", &[b'l'; 100_000]);
    let mut big = b"d4:info".to_vec();
    big.resize(17 << 20, b'x');
    refused("oversized", &big);
}

/// Reads one length-prefixed peer-wire message (None on EOF).
fn read_msg(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let len = u32::from_be_bytes(len) as usize;
    assert!(len <= (1 << 20), "a huge message");
    let mut m = vec![0u8; len];
    s.read_exact(&mut m).ok()?;
    Some(m)
}

/// A peer that claims every piece and answers requests with bad bytes for
/// even pieces (the right bytes for odd ones). Counts corrupt blocks sent.
fn spawn_liar(content: Arc<Vec<u8>>, piece_len: usize, pieces: usize, sent_bad: Arc<AtomicU32>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut s) = conn else { return };
            let content = content.clone();
            let sent_bad = sent_bad.clone();
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                let mut hs = [0u8; 68];
                if s.read_exact(&mut hs).is_err() {
                    return;
                }
                let mut reply = hs;
                reply[20..28].fill(0);
                reply[48..68].copy_from_slice(b"-XX0001-liarliarliar");
                let mut out = reply.to_vec();
                let bf_len = pieces.div_ceil(8);
                let mut bf = vec![0xffu8; bf_len];
                if !pieces.is_multiple_of(8) {
                    bf[bf_len - 1] = 0xffu8 << (8 - pieces % 8);
                }
                out.extend(((bf_len + 1) as u32).to_be_bytes());
                out.push(5);
                out.extend(bf);
                out.extend(1u32.to_be_bytes());
                out.push(1); // unchoke
                if s.write_all(&out).is_err() {
                    return;
                }
                while let Some(m) = read_msg(&mut s) {
                    if m.first() != Some(&6) || m.len() != 13 {
                        continue;
                    }
                    let idx = u32::from_be_bytes(m[1..5].try_into().unwrap()) as usize;
                    let begin = u32::from_be_bytes(m[5..9].try_into().unwrap()) as usize;
                    let len = u32::from_be_bytes(m[9..13].try_into().unwrap()) as usize;
                    let at = idx * piece_len + begin;
                    let mut data = content[at..at + len].to_vec();
                    if idx.is_multiple_of(2) {
                        data.iter_mut().for_each(|b| *b ^= 0x5a);
                        sent_bad.fetch_add(1, Ordering::Relaxed);
                    }
                    let mut msg = ((9 + len) as u32).to_be_bytes().to_vec();
                    msg.push(7);
                    msg.extend(&m[1..9]);
                    msg.extend(data);
                    if s.write_all(&msg).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

#[test]
fn a_peer_sending_corrupt_blocks_is_banned_and_the_download_is_still_byte_identical() {
    let s = Scratch::new("bt-liar");
    let src = s.0.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let piece_len = 32 * 1024;
    let bytes = content(42, 2_500_000);
    std::fs::write(src.join("file.bin"), &bytes).unwrap();
    let torrent = s.0.join("t.torrent");
    rumor_create(&src.join("file.bin"), &torrent, &["--piece-size", &piece_len.to_string()]);
    let pieces = bytes.len().div_ceil(piece_len);
    let sent_bad = Arc::new(AtomicU32::new(0));
    let liar = spawn_liar(Arc::new(bytes.clone()), piece_len, pieces, sent_bad.clone());
    let honest_port = free_port();
    // The liar is there first; the honest seeder comes a moment later.
    let peers = [format!("127.0.0.1:{liar}"), format!("127.0.0.1:{honest_port}")];
    let (mut get, out) = rumor_leech(&s.0, "get", &torrent, &["--peer", &peers[0], "--peer", &peers[1]]);
    assert!(eventually(Duration::from_secs(20), || sent_bad.load(Ordering::Relaxed) > 0), "the liar was never asked");
    let honest = rumor_seed(&s.0, "seed", &torrent, &src, honest_port, &[]);
    assert_success(&mut get, Duration::from_secs(60), &[&honest]);
    let log = get.log_text();
    assert!(std::fs::read(out.join("file.bin")).unwrap() == bytes, "the download differs");
    assert!(log.contains("failed its hash check"), "no hash failure was reported: {log}");
    assert!(log.contains("banned"), "the liar was not banned: {log}");
}

/// Connects to `port`, sends `bytes`, and says whether the peer hung up
/// within a few seconds.
fn hangs_up_after(port: u16, bytes: &[u8]) -> bool {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(bytes);
    let mut buf = [0u8; 4096];
    let end = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < end {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
    false
}

#[test]
fn peers_speaking_garbage_are_dropped_and_the_seeder_keeps_serving() {
    let s = Scratch::new("bt-garbage-peer");
    let Fixture { src, data, torrent, ih: hash, .. } = fixture(&s.0, 21, &[]);
    let port = free_port();
    let seeder = rumor_seed(&s.0, "seed", &torrent, &src, port, &[]);
    wait_listening(port);
    let mut hs = vec![19u8];
    hs.extend_from_slice(b"BitTorrent protocol");
    hs.extend_from_slice(&[0u8; 8]);
    let good_hash = hex::decode(&hash).unwrap();
    // Not BitTorrent at all, and long enough that it cannot be the start
    // of an encrypted handshake either (whose sync value must come within
    // 96 + 512 + 20 bytes): shorter, it would wait for the rest until the
    // handshake deadline.
    assert!(hangs_up_after(port, &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n and then some more bytes".repeat(20)));
    // Another torrent's infohash.
    let mut other = hs.clone();
    other.extend_from_slice(&[9u8; 20]);
    other.extend_from_slice(b"-XX0001-wronghash000");
    assert!(hangs_up_after(port, &other));
    // The right torrent, then a message claiming to be 2 GiB long.
    let mut huge = hs.clone();
    huge.extend_from_slice(&good_hash);
    huge.extend_from_slice(b"-XX0001-hugemessage0");
    huge.extend_from_slice(&0x8000_0000u32.to_be_bytes());
    huge.push(7);
    assert!(hangs_up_after(port, &huge));
    // A request for a piece that does not exist.
    let mut bad_req = hs.clone();
    bad_req.extend_from_slice(&good_hash);
    bad_req.extend_from_slice(b"-XX0001-badrequest00");
    bad_req.extend_from_slice(&5u32.to_be_bytes());
    bad_req.push(4); // have
    bad_req.extend_from_slice(&1_000_000u32.to_be_bytes());
    assert!(hangs_up_after(port, &bad_req));
    // An honest libtorrent still gets the data.
    let (mut lt, out) = lt_leech(&s.0, &torrent, port);
    assert_downloads(&mut lt, &out, &data, Duration::from_secs(60), &[&seeder]);
}
