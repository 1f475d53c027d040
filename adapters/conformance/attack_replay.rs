//! Issue #12, item 11: gossip replay. Captured gossip frames were accepted
//! again when replayed: one frame that asks a node for what it holds,
//! replayed 200 times over new connections, made the node send its answer
//! 200 times to the original requester (about 108x amplification toward a
//! third party). Now every envelope carries a timestamp and a sequence
//! number under the AEAD, and a node accepts each (sender, number) once.
//! A captured message the node has not seen yet is still fresh there (one
//! withheld on the way, or sent to another node): its answer goes back on
//! the connection it came in on, to whoever sent it, never to the member
//! that sealed it (second test; the old code sent about 13 KB to the
//! member for one 115-byte request).
//!
//! The capture: node B advertises a small TCP proxy in this test as its
//! gossip address, so everything node A sends to B passes through it and
//! is recorded, frame by frame. The test holds the cluster key only to
//! pick the frame to replay (A's digest, sent while A held nothing: its
//! answer is every entry B has).

mod common;

use common::*;
use rumor_core::gossip::{open, Body, Keyring};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const KEY: &str = "61747461636b207265706c617920746573742020636c7573746572206b65792e";
const REPLAYS: usize = 200;
const RECORDS: usize = 300;

fn key_bytes() -> [u8; 32] {
    let mut k = [0u8; 32];
    for (i, b) in k.iter_mut().enumerate() {
        *b = u8::from_str_radix(&KEY[2 * i..2 * i + 2], 16).unwrap();
    }
    k
}

fn stat(node: &TestNode, name: &str) -> u64 {
    let (_, v) = node.get("/health");
    v["stats"][name].as_u64().unwrap_or_else(|| panic!("/health has no {name}: {v}"))
}

/// Reads one gossip frame (4-byte big-endian length, then the envelope).
fn read_frame(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).ok()?;
    Some(body)
}

fn framed(bytes: &[u8]) -> Vec<u8> {
    let mut f = (bytes.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(bytes);
    f
}

/// What a [`proxy`] does with each frame it reads from a client.
type Filter = Arc<dyn Fn(&[u8]) -> bool + Send + Sync>;

/// A proxy on `listener` that forwards every gossip connection to `to`
/// (set once the node behind it is up), both ways: each frame from the
/// client is recorded in `seen` and forwarded unless `withhold` says so
/// (withheld ones go to `held`), counting the bytes forwarded in
/// `forwarded`; whatever the node writes back (answers go back on the
/// connection they were asked on) is copied back as is.
fn proxy_with(
    listener: TcpListener,
    to: Arc<Mutex<Option<SocketAddr>>>,
    seen: Arc<Mutex<Vec<Vec<u8>>>>,
    withhold: Filter,
    held: Arc<Mutex<Vec<Vec<u8>>>>,
    forwarded: Arc<AtomicU64>,
) {
    std::thread::spawn(move || {
        for inbound in listener.incoming() {
            let Ok(mut inbound) = inbound else { continue };
            let Some(target) = *to.lock().unwrap() else { continue };
            let (seen, withhold, held, forwarded) = (seen.clone(), withhold.clone(), held.clone(), forwarded.clone());
            std::thread::spawn(move || {
                let Ok(mut out) = TcpStream::connect(target) else { return };
                if let (Ok(mut back_from), Ok(mut back_to)) = (out.try_clone(), inbound.try_clone()) {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut back_from, &mut back_to);
                        let _ = back_to.shutdown(std::net::Shutdown::Both);
                    });
                }
                while let Some(frame) = read_frame(&mut inbound) {
                    if withhold(&frame) {
                        held.lock().unwrap().push(frame);
                        continue;
                    }
                    if out.write_all(&framed(&frame)).is_err() {
                        return;
                    }
                    forwarded.fetch_add(4 + frame.len() as u64, Ordering::Relaxed);
                    seen.lock().unwrap().push(frame);
                }
                let _ = out.shutdown(std::net::Shutdown::Both);
            });
        }
    });
}

/// [`proxy_with`] that forwards everything.
fn proxy(listener: TcpListener, to: Arc<Mutex<Option<SocketAddr>>>, seen: Arc<Mutex<Vec<Vec<u8>>>>) {
    let none: Filter = Arc::new(|_| false);
    proxy_with(listener, to, seen, none, Arc::default(), Arc::default());
}

/// A cheap pseudo-random 64-bit number, so records do not compress away.
fn mix(i: u64) -> u64 {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^ (x >> 29)
}

/// Two nodes, B holding the records and A catching up through a proxy
/// that records A's frames; returns them with the frame to replay (A's
/// digest while it held nothing), or `None` when A caught up without ever
/// sending one (B's transfer on join can come before A's first
/// anti-entropy round; both are valid ways to catch up).
fn capture() -> Option<(TestNode, TestNode, Vec<u8>, String)> {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy_addr = listener.local_addr().unwrap();
    let target = Arc::new(Mutex::new(None));
    let seen = Arc::new(Mutex::new(Vec::new()));
    proxy(listener, target.clone(), seen.clone());

    // B holds the records and is reached (by A) only through the proxy.
    let advertise = proxy_addr.to_string();
    let b = TestNode::solo("replay-b", &["--cluster-key", KEY, "--advertise", &advertise]);
    *target.lock().unwrap() = Some(b.gossip);
    for i in 0..RECORDS as u64 {
        let x = mix(i);
        let ips: Vec<String> = (0..4)
            .map(|k| {
                let y = mix(i * 8 + k + 1_000_000);
                format!(r#""10.{}.{}.{}""#, y as u8, (y >> 8) as u8, (y >> 16) as u8)
            })
            .collect();
        b.add(&format!(r#"{{"name":"r{i}-{x:016x}.replay.local","ips":[{}],"ttl":3600}}"#, ips.join(",")));
    }
    // Summaries count a write only once it has settled (1.5 s after it
    // was made): give B's records that long, so that A's empty summary
    // differs from B's and A's first round sends the digest to capture.
    std::thread::sleep(Duration::from_millis(2_000));
    // A joins through the proxy and catches up.
    let a = TestNode::solo("replay-a", &["--cluster-key", KEY, "--join", &advertise]);
    let last = format!("r{}-{:016x}.replay.local", RECORDS - 1, mix(RECORDS as u64 - 1));
    let synced = eventually(Duration::from_secs(20), || status(&a.dig(&[&last, "A"])) == "NOERROR");
    assert!(synced, "A never caught up with B");

    // The frame to replay: A telling B what it holds while it held nothing.
    let ring = Keyring::new(0, key_bytes());
    let frames = seen.lock().unwrap().clone();
    let ask = frames
        .iter()
        .find(|f| match open(&ring, f, 1 << 20).map(|p| p.body) {
            Ok(Body::Digest { digest, .. }) | Ok(Body::Delta { digest: Some(digest), .. }) => digest.seen.len() <= 1,
            _ => false,
        })
        .cloned();
    let Some(ask) = ask else {
        eprintln!("none of the {} frames A sent B carries A's first digest (B's transfer came first)", frames.len());
        return None;
    };
    Some((b, a, ask, last))
}

#[test]
fn a_captured_gossip_frame_replayed_200_times_is_not_answered_200_times() {
    let (b, a, ask, last) = (0..4).find_map(|_| capture()).expect("A sent its first digest in one of four tries");
    // B's own traffic while nobody attacks, as a baseline.
    std::thread::sleep(Duration::from_secs(2));
    let quiet_from = (stat(&b, "gossip_bytes_out"), Instant::now());
    std::thread::sleep(Duration::from_secs(3));
    let quiet_rate = (stat(&b, "gossip_bytes_out") - quiet_from.0) as f64 / quiet_from.1.elapsed().as_secs_f64();

    // The replay: 200 copies, each over a new connection.
    let before = (stat(&b, "gossip_bytes_out"), Instant::now());
    let mut sent = 0usize;
    for _ in 0..REPLAYS {
        let Ok(mut s) = TcpStream::connect(b.gossip) else { continue };
        if s.write_all(&framed(&ask)).is_ok() {
            sent += 4 + ask.len();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_secs(2));
    let out = stat(&b, "gossip_bytes_out") - before.0;
    let background = quiet_rate * before.1.elapsed().as_secs_f64();
    let extra = (out as f64 - background).max(0.0);
    let factor = extra / sent as f64;
    eprintln!(
        "gossip replay: {REPLAYS} copies of a {}-byte frame ({sent} bytes) made B send {out} bytes \
         ({background:.0} of them its usual traffic): {factor:.1}x amplification",
        ask.len()
    );
    assert!(factor < 2.0, "a replayed frame was answered: {factor:.1}x amplification");
    let dropped = stat(&b, "gossip_dropped_replay");
    // A connection that replays is closed at once, not admitted as a
    // member's (the unauthenticated deadline alone would take 5 s).
    let mut s = TcpStream::connect(b.gossip).unwrap();
    s.write_all(&framed(&ask)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut byte = [0u8; 1];
    let closed = match s.read(&mut byte) {
        Ok(0) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        Ok(_) => false,
    };
    assert!(closed, "a connection that replayed a frame is still open");
    assert!(dropped as usize >= REPLAYS * 9 / 10, "only {dropped} of {REPLAYS} replays were dropped as such");
    // The cluster is unharmed.
    assert_eq!(status(&a.dig(&[&last, "A"])), "NOERROR");
}

/// A member's captured request, sent by someone else, that the node has
/// never seen: the node answers it (it is authentic and fresh), but on the
/// connection it came in on, never to the member that sealed it.
#[test]
fn a_captured_full_transfer_request_sent_by_a_third_party_brings_the_member_no_traffic() {
    let ring = Keyring::new(0, key_bytes());
    let is_full_request =
        move |f: &[u8]| matches!(open(&ring, f, 1 << 20).map(|p| p.body), Ok(Body::FullRequest { .. }));
    // B is reached through a proxy that can withhold A's first request of
    // a full transfer; A through one that counts the bytes sent to it.
    let (to_b, to_a) = (Arc::new(Mutex::new(None)), Arc::new(Mutex::new(None)));
    let armed = Arc::new(AtomicBool::new(false));
    let held = Arc::new(Mutex::new(Vec::new()));
    let into_a = Arc::new(AtomicU64::new(0));
    let (pb, pa) = (TcpListener::bind("127.0.0.1:0").unwrap(), TcpListener::bind("127.0.0.1:0").unwrap());
    let (pb_addr, pa_addr) = (pb.local_addr().unwrap().to_string(), pa.local_addr().unwrap().to_string());
    let withhold: Filter = {
        let (armed, held) = (armed.clone(), held.clone());
        Arc::new(move |f: &[u8]| armed.load(Ordering::Relaxed) && held.lock().unwrap().is_empty() && is_full_request(f))
    };
    let via_b = Arc::new(Mutex::new(Vec::new()));
    proxy_with(pb, to_b.clone(), via_b.clone(), withhold, held.clone(), Arc::default());
    let none: Filter = Arc::new(|_| false);
    proxy_with(pa, to_a.clone(), Arc::default(), none, Arc::default(), into_a.clone());

    let b = TestNode::solo("replay-full-b", &["--cluster-key", KEY, "--advertise", &pb_addr]);
    *to_b.lock().unwrap() = Some(b.gossip);
    for i in 0..RECORDS as u64 {
        let x = mix(i);
        let y = mix(i + 1_000_000);
        b.add(&format!(
            r#"{{"name":"f{i}-{x:016x}.replay.local","ips":["10.{}.{}.{}"],"ttl":3600}}"#,
            y as u8,
            (y >> 8) as u8,
            (y >> 16) as u8
        ));
    }
    let mut a = TestNode::solo("replay-full-a", &["--cluster-key", KEY, "--advertise", &pa_addr, "--join", &pb_addr]);
    *to_a.lock().unwrap() = Some(a.gossip);
    let last = format!("f{}-{:016x}.replay.local", RECORDS - 1, mix(RECORDS as u64 - 1));
    assert!(
        eventually(Duration::from_secs(20), || status(&a.dig(&[&last, "A"])) == "NOERROR"),
        "A never caught up with B"
    );
    // A goes down and B takes a write meanwhile; A restarts and, not
    // knowing what was collected while it was down, asks B for a full
    // transfer. Its first request is captured and never reaches B (A asks
    // again a second later). Without the write A's restored copy can equal
    // B's, and then neither side has anything to send the other.
    armed.store(true, Ordering::Relaxed);
    a.kill9();
    b.add(r#"{"name":"while-a-was-down.replay.local","ips":["10.9.9.9"],"ttl":3600}"#);
    // B pushes a new write for two rounds; A is not there for them.
    std::thread::sleep(Duration::from_secs(1));
    a.restart();
    *to_a.lock().unwrap() = Some(a.gossip);
    let asked = eventually(Duration::from_secs(20), || !held.lock().unwrap().is_empty());
    if !asked {
        let ring = Keyring::new(0, key_bytes());
        let kinds: Vec<String> = via_b
            .lock()
            .unwrap()
            .iter()
            .map(|f| open(&ring, f, 1 << 20).map(|p| format!("{:.60}", format!("{:?}", p.body))).unwrap_or_default())
            .collect();
        panic!("A never asked B for a full transfer; A sent B: {kinds:#?}");
    }
    let request = held.lock().unwrap()[0].clone();
    std::thread::sleep(Duration::from_secs(2));
    // The traffic A gets while nobody attacks.
    let quiet = (into_a.load(Ordering::Relaxed), Instant::now());
    std::thread::sleep(Duration::from_secs(2));
    let quiet_rate = (into_a.load(Ordering::Relaxed) - quiet.0) as f64 / quiet.1.elapsed().as_secs_f64();

    // The third party sends the captured request to B.
    let before = (into_a.load(Ordering::Relaxed), Instant::now());
    let mut s = TcpStream::connect(b.gossip).unwrap();
    s.write_all(&framed(&request)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut answered = 0usize;
    let until = Instant::now() + Duration::from_secs(2);
    let mut buf = [0u8; 16 * 1024];
    while Instant::now() < until {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answered += n,
            Err(_) => {}
        }
    }
    let to_a_bytes = into_a.load(Ordering::Relaxed) - before.0;
    let background = quiet_rate * before.1.elapsed().as_secs_f64();
    eprintln!(
        "a captured {}-byte full-transfer request sent by a third party: {answered} bytes answered to it, \
         {to_a_bytes} bytes to the member A meanwhile ({background:.0} its usual traffic)",
        request.len()
    );
    assert!(answered > 4 * 1024, "B did not answer the request on its connection ({answered} bytes)");
    assert!(
        (to_a_bytes as f64) < background + 2048.0,
        "the answer went to A: {to_a_bytes} bytes against {background:.0} usual"
    );
    // The cluster is unharmed.
    assert_eq!(status(&a.dig(&[&last, "A"])), "NOERROR");
}
