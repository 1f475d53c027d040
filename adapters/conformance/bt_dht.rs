//! The Mainline DHT (BEP 5) of `rumor get` and `rumor seed`: a raw KRPC
//! client against rumor's DHT port (the four queries, tokens, error 203),
//! floods that must leave memory bounded and other askers answered, and
//! interop with a private DHT of libtorrent sessions on loopback, both
//! ways, with no tracker, no `x.pe` and no `--peer`; and the peer wire's
//! side of it (the DHT bit and the `port` message).

mod common;

use common::bt::*;
use common::Scratch;
use rumor_core::bt::metainfo::InfoHash;
use rumor_core::dht::krpc::{Body, Message, Query, Response};
use rumor_core::dht::NodeId;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// A KRPC client on its own loopback port.
struct Client {
    sock: UdpSocket,
    id: NodeId,
    to: SocketAddr,
    tid: u16,
}

impl Client {
    fn new(to: SocketAddr, id: u8) -> Client {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        Client { sock, id: NodeId([id; 20]), to, tid: 0 }
    }

    fn send(&mut self, q: Query) -> Vec<u8> {
        self.tid = self.tid.wrapping_add(1);
        let tid = self.tid.to_be_bytes().to_vec();
        let m = Message { tid: tid.clone(), body: Body::Query(q), read_only: false, ip: None, version: None };
        self.sock.send_to(&m.encode(), self.to).unwrap();
        tid
    }

    /// Sends `q` and waits (up to `limit`, asking again every 500 ms) for
    /// the answer with its transaction id; pings the node sends back are
    /// skipped.
    fn ask_within(&mut self, q: Query, limit: Duration) -> Option<Message> {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            let tid = self.send(q.clone());
            let mut buf = [0u8; 4096];
            while let Ok((n, _)) = self.sock.recv_from(&mut buf) {
                let Ok(m) = Message::parse(&buf[..n]) else { continue };
                if m.tid == tid && !matches!(m.body, Body::Query(_)) {
                    return Some(m);
                }
            }
        }
        None
    }

    fn ask(&mut self, q: Query) -> Message {
        self.ask_within(q, Duration::from_secs(20)).expect("rumor's DHT answers")
    }
}

fn response(m: Message) -> Response {
    match m.body {
        Body::Response(r) => r,
        other => panic!("not a response: {other:?}"),
    }
}

/// `rumor seed` of a fresh tree with its DHT on `port` and no router
/// (bootstrap to a port nobody listens on): the node under test.
fn lone_seeder(s: &Scratch, port: u16) -> Proc {
    let f = fixture(&s.0, 61, &["--piece-size", "65536"]);
    rumor_seed(&s.0, "seeder", &f.torrent, &f.src, port, &["--dht-bootstrap", "127.0.0.1:9"])
}

#[test]
fn a_raw_krpc_client_gets_answers_tokens_stored_announces_and_203_for_a_wrong_token() {
    let s = Scratch::new("bt-dht-krpc");
    let port = common::free_port();
    let seeder = lone_seeder(&s, port);
    wait_listening(port);
    let dht: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut a = Client::new(dht, 1);
    let ping = response(a.ask(Query::Ping { id: a.id }));
    assert_ne!(ping.id, a.id);
    let fnr = a.ask(Query::FindNode { id: a.id, target: NodeId([9; 20]) });
    assert!(fnr.ip.is_some(), "answers say where they see us (BEP 42)");
    response(fnr);
    let ih = InfoHash([0x42; 20]);
    let gp = response(a.ask(Query::GetPeers { id: a.id, info_hash: ih }));
    let token = gp.token.expect("a get_peers answer carries a token");
    assert!(gp.values.is_empty(), "nobody announced yet");
    let wrong =
        Query::AnnouncePeer { id: a.id, info_hash: ih, port: 7001, token: b"forged".to_vec(), implied_port: false };
    match a.ask(wrong).body {
        Body::Error { code, .. } => assert_eq!(code, 203),
        other => panic!("a wrong token was not refused: {other:?}"),
    }
    let good = Query::AnnouncePeer { id: a.id, info_hash: ih, port: 7001, token, implied_port: false };
    response(a.ask(good));
    // Another asker is given the announced peer.
    let mut b = Client::new(dht, 2);
    let got = response(b.ask(Query::GetPeers { id: b.id, info_hash: ih }));
    assert_eq!(got.values, vec!["127.0.0.1:7001".parse::<SocketAddr>().unwrap()], "{}", seeder.log_text());
}

#[test]
fn floods_of_queries_and_of_announces_leave_memory_bounded_and_others_answered() {
    let s = Scratch::new("bt-dht-flood");
    let port = common::free_port();
    let seeder = lone_seeder(&s, port);
    wait_listening(port);
    let dht: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut probe = Client::new(dht, 3);
    response(probe.ask(Query::Ping { id: probe.id }));
    std::thread::sleep(Duration::from_millis(500));
    let rss_before = common::rss_kib(seeder.child.id());
    // 1. 30,000 get_peers from one address, as fast as it can send.
    let mut flooder = Client::new(dht, 4);
    let sent_at = Instant::now();
    for i in 0..30_000u32 {
        let mut h = [0u8; 20];
        h[..4].copy_from_slice(&i.to_be_bytes());
        flooder.send(Query::GetPeers { id: flooder.id, info_hash: InfoHash(h) });
    }
    let flood_s = sent_at.elapsed().as_secs_f64();
    let mut answered = 0;
    let mut buf = [0u8; 4096];
    flooder.sock.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    while flooder.sock.recv_from(&mut buf).is_ok() {
        answered += 1;
    }
    // The others are answered at once.
    let t = Instant::now();
    response(
        probe.ask_within(Query::Ping { id: probe.id }, Duration::from_secs(2)).expect("others are still answered"),
    );
    let probe_ms = t.elapsed().as_millis();
    // 2. Announces for 6,000 random infohashes, from 300 addresses (each
    // within its own rate), each with a valid token.
    let mut rng = rumor_core::rand::Rng::new(5);
    let mut accepted = 0;
    for c in 0..300u32 {
        let mut cl = Client::new(dht, 10);
        cl.sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        for _ in 0..20 {
            let mut h = [0u8; 20];
            rng.fill(&mut h);
            let ih = InfoHash(h);
            let Some(m) = cl.ask_within(Query::GetPeers { id: cl.id, info_hash: ih }, Duration::from_secs(1)) else {
                continue;
            };
            let Body::Response(r) = m.body else { continue };
            let token = r.token.unwrap();
            let port = 1000 + (c % 60000) as u16;
            if let Some(m) = cl.ask_within(
                Query::AnnouncePeer { id: cl.id, info_hash: ih, port, token, implied_port: false },
                Duration::from_secs(1),
            ) {
                if matches!(m.body, Body::Response(_)) {
                    accepted += 1;
                }
            }
        }
    }
    let t = Instant::now();
    response(
        probe.ask_within(Query::Ping { id: probe.id }, Duration::from_secs(2)).expect("others are still answered"),
    );
    let probe2_ms = t.elapsed().as_millis();
    let rss_after = common::rss_kib(seeder.child.id());
    eprintln!(
        "flood: 30000 get_peers from one address in {flood_s:.2} s, {answered} answered; probe answered in {probe_ms} ms; \
         {accepted} announces for random infohashes answered; probe then {probe2_ms} ms; RSS {rss_before} -> {rss_after} KiB"
    );
    assert!(
        answered <= 60 + 20 * (flood_s.ceil() as usize + 2),
        "the flood was cut to the per-address rate: {answered}"
    );
    assert!(accepted >= 5_000, "announces within each address rate are answered: {accepted}");
    // Bounded: the peer store holds at most 65,536 peers (a few MiB).
    assert!(rss_after < rss_before + 32 * 1024, "memory grew from {rss_before} to {rss_after} KiB");
}

/// Five libtorrent DHT sessions on loopback bootstrapped to one another;
/// with `seed`, the first seeds it and announces it; with `leech`, a sixth
/// downloads the magnet link once the file `when` exists.
fn lt_dht(s: &Scratch, ports: &[u16], seed: Option<(&Path, &Path)>, leech: Option<(&str, &Path, u16, &Path)>) -> Proc {
    require_libtorrent();
    let mut c = Command::new(PYTHON);
    let list: Vec<String> = ports.iter().map(|p| p.to_string()).collect();
    c.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../conformance/common/lt_dht.py")).arg(list.join(","));
    if let Some((t, save)) = seed {
        c.arg("--seed").arg(t).arg(save);
    }
    if let Some((magnet, save, port, when)) = leech {
        c.args(["--leech", magnet]).arg(save).arg(port.to_string()).arg("--leech-when").arg(when);
        c.args(["--timeout", "120"]);
    }
    Proc::spawn("libtorrent dht", c, &s.0.join("lt-dht.log"))
}

fn wait_ready(p: &Proc) {
    let ok = common::eventually(Duration::from_secs(30), || p.log_text().contains("READY"));
    assert!(ok, "the libtorrent DHT did not settle: {}", p.log_text());
}

#[test]
fn rumor_gets_a_magnet_link_from_a_libtorrent_seeder_through_the_dht_alone() {
    let s = Scratch::new("bt-dht-lt-seed");
    let f = fixture(&s.0, 62, &["--piece-size", "65536"]);
    let ports: Vec<u16> = (0..5).map(|_| common::free_port()).collect();
    let lt = lt_dht(&s, &ports, Some((&f.torrent, &f.src)), None);
    wait_ready(&lt);
    // Give the seeder's first announce a moment to land.
    // The seeder announces every 5 s from READY on; a lookup that comes
    // too early finds nobody and is repeated 30 s later.
    let link = format!("magnet:?xt=urn:btih:{}", f.ih);
    let boot = format!("127.0.0.1:{}", ports[1]);
    let (mut get, out) = rumor_leech(&s.0, "leecher", &link, &["--dht-bootstrap", &boot, "--metadata-timeout", "90"]);
    assert_downloads(&mut get, &out, &f.data, Duration::from_secs(120), &[&lt]);
    let log = get.log_text();
    assert!(log.lines().any(|l| l.contains("dht:") && l.contains("new peers")), "peers came from the DHT: {log}");
    // The routing table is saved beside the download for the next start.
    let saved = std::fs::read(out.join(".rumor-dht")).expect("the DHT state is saved beside the download");
    let v = rumor_core::bt::bencode::decode(&saved).unwrap();
    assert_eq!(v.get("id").and_then(|i| i.as_bytes()).map(<[u8]>::len), Some(20));
    let nodes = v.get("nodes").and_then(|n| n.as_bytes()).unwrap();
    assert!(!nodes.is_empty() && nodes.len().is_multiple_of(26), "the libtorrent nodes are saved");
    // The next start joins through the saved table alone (the bootstrap
    // given has nobody): it finds the seeder again for the metadata, then
    // finds the data complete, under the same node id.
    let id_hex: String = v.get("id").and_then(|i| i.as_bytes()).unwrap().iter().map(|b| format!("{b:02x}")).collect();
    let mut again = Proc::spawn(
        "leecher again",
        {
            let mut c = get_command(&link, &out, 0);
            c.args(["--dht-bootstrap", "127.0.0.1:9", "--metadata-timeout", "60"]);
            c
        },
        &s.0.join("again.log"),
    );
    assert_success(&mut again, Duration::from_secs(90), &[&lt]);
    let log = again.log_text();
    assert!(log.contains(&format!("dht: node {id_hex}")), "the saved id is reused: {log}");
}

#[test]
fn libtorrent_gets_a_magnet_link_from_rumor_seed_through_the_dht_alone() {
    let s = Scratch::new("bt-dht-lt-leech");
    let f = fixture(&s.0, 63, &["--piece-size", "65536"]);
    let ports: Vec<u16> = (0..5).map(|_| common::free_port()).collect();
    let out = s.0.join("out-lt");
    std::fs::create_dir_all(&out).unwrap();
    let link = format!("magnet:?xt=urn:btih:{}", f.ih);
    let go = s.0.join("go");
    let mut lt = lt_dht(&s, &ports, None, Some((&link, &out, common::free_port(), &go)));
    wait_ready(&lt);
    let port = common::free_port();
    let boot = format!("127.0.0.1:{}", ports[0]);
    let seed = rumor_seed(&s.0, "seeder", &f.torrent, &f.src, port, &["--dht-bootstrap", &boot]);
    // The seeder announces at the end of its first lookup that reached nodes.
    let announced = |log: &str| log.lines().any(|l| l.contains("announced to ") && !l.contains("announced to 0 "));
    let ok = common::eventually(Duration::from_secs(70), || announced(&seed.log_text()));
    assert!(ok, "rumor did not announce: {}", seed.log_text());
    std::fs::write(&go, b"").unwrap();
    assert_success(&mut lt, Duration::from_secs(150), &[&seed]);
    assert_same_tree(&f.data, &out.join(f.data.file_name().unwrap()));
}

#[test]
fn a_dht_peer_is_sent_our_dht_port_and_its_own_port_message_gets_it_pinged() {
    use rumor_core::bt::wire::{Decoder, DecoderConfig, Handshake, Message as Wire};
    use std::io::{Read, Write};
    let s = Scratch::new("bt-dht-port");
    let port = common::free_port();
    let f = fixture(&s.0, 63, &["--piece-size", "65536"]);
    let seeder = rumor_seed(&s.0, "seeder", &f.torrent, &f.src, port, &["--dht-bootstrap", "127.0.0.1:9"]);
    wait_listening(port);
    // Our own DHT "node": a UDP socket rumor should ping once told of it.
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let udp_port = udp.local_addr().unwrap().port();
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut h = Handshake::new(info_hash_of(&f.torrent), [0x2d; 20]);
    h.reserved[7] |= 0x01;
    let mut out = Vec::new();
    h.encode(&mut out);
    Wire::Interested.encode(&mut out);
    Wire::Port(udp_port).encode(&mut out);
    tcp.write_all(&out).unwrap();
    let mut dec = Decoder::new(DecoderConfig { piece_count: 1024, ..Default::default() });
    let (mut told, mut pinged, mut handshake_bit) = (None, false, None);
    let end = Instant::now() + Duration::from_secs(20);
    let mut buf = vec![0u8; 65536];
    while Instant::now() < end && !(told.is_some() && pinged) {
        if let Ok(n) = tcp.read(&mut buf) {
            if n == 0 {
                break;
            }
            dec.feed(&buf[..n]);
            if handshake_bit.is_none() {
                if let Some(hs) = dec.take_handshake() {
                    handshake_bit = Some(hs.unwrap().reserved[7] & 0x01);
                }
            }
            while let Some(Ok(m)) = dec.next() {
                if let Wire::Port(p) = m {
                    told = Some(p);
                }
            }
        }
        let mut d = [0u8; 1500];
        if let Ok((n, _)) = udp.recv_from(&mut d) {
            if let Ok(m) = Message::parse(&d[..n]) {
                pinged |= matches!(m.body, Body::Query(Query::Ping { .. }));
            }
        }
    }
    assert_eq!(handshake_bit, Some(1), "rumor's handshake sets the DHT bit: {}", seeder.log_text());
    assert_eq!(told, Some(port), "rumor sends its DHT port (the --port number by default)");
    assert!(pinged, "rumor pings the DHT port our port message gave: {}", seeder.log_text());
}
