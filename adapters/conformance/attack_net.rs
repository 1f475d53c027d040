//! Issue #12, items 3 to 5: what a hostile client on the network did to a
//! node, replayed as a test each (scaled down where the bound still
//! shows): a flood of tracker announces filling the replicated store, DNS
//! over TCP clients that never read their answers, and gossip connections
//! without the cluster key holding every slot; and API clients that never
//! read their responses. Each prints its figures.
//!
//! The attackers are small Python scripts (`python3`), as the original
//! attacks were: they set socket options (a 4 KiB receive buffer, a
//! source address of 127.0.0.2) that the standard library does not.

mod common;

use common::*;
use rumor_core::bt::metainfo::InfoHash;
use rumor_core::bt::tracker::{parse_announce_response, AnnounceEvent, AnnounceRequest};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const KEY: &str = "61747461636b206e6574207465737420636c7573746572206b65792c20333262";

fn stat(node: &TestNode, name: &str) -> u64 {
    let (_, v) = node.get("/health");
    v["stats"][name].as_u64().unwrap_or_else(|| panic!("/health has no {name}: {v}"))
}

fn announce_body(url: &str) -> Vec<u8> {
    let resp = ureq::get(url).timeout(Duration::from_secs(10)).call().expect("announce");
    let mut body = Vec::new();
    resp.into_reader().read_to_end(&mut body).unwrap();
    body
}

fn random_request(seed: u64, port: u16) -> AnnounceRequest {
    let mut ih = [0u8; 20];
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for b in ih.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    AnnounceRequest {
        info_hash: InfoHash(ih),
        peer_id: [7; 20],
        port,
        uploaded: 0,
        downloaded: 0,
        left: 0,
        event: AnnounceEvent::Started,
        numwant: Some(0),
        key: None,
        compact: true,
    }
}

/// Announces `n` random torrents (one port each) to `node` over four
/// keep-alive connections; how many were answered and how many refused
/// over the rate.
fn flood(node: &TestNode, n: u64) -> (u64, u64) {
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let base = node.url("/announce");
            std::thread::spawn(move || {
                let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(10)).build();
                let (mut ok, mut limited) = (0u64, 0u64);
                for i in (t..n).step_by(4) {
                    let url = random_request(i, 10_000 + (i % 50_000) as u16).url(&base);
                    let resp = agent.get(&url).call().expect("announce");
                    let mut body = Vec::new();
                    resp.into_reader().read_to_end(&mut body).unwrap();
                    match parse_announce_response(&body) {
                        Ok(_) => ok += 1,
                        Err(e) if e.to_string().contains("announce rate limit") => limited += 1,
                        Err(e) => panic!("unexpected answer: {e}"),
                    }
                }
                (ok, limited)
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
}

#[test]
fn an_announce_flood_from_one_address_is_bounded_and_records_can_still_be_added() {
    let node = TestNode::solo("flood", &[]);
    let pid = node.child.id();
    let rss_before = common::rss_kib(pid);
    // 20,000 announces of random torrents (one port each) from one address,
    // over four keep-alive connections.
    const ANNOUNCES: u64 = 20_000;
    let started = Instant::now();
    let (ok, limited) = flood(&node, ANNOUNCES);
    let took = started.elapsed();
    // Every replicated entry (the older binary has no per-namespace count).
    let entries = stat(&node, "entries");
    let rss_after = common::rss_kib(pid);
    eprintln!(
        "flood: {ANNOUNCES} announces in {took:?}: {ok} answered, {limited} rate-limited; \
         {entries} replicated entries; RSS {} -> {} MiB",
        rss_before / 1024,
        rss_after / 1024
    );
    assert!(entries <= 2 * 1024, "what one address writes is bounded: {entries} entries");
    assert!(limited > 0, "one address is rate-limited");
    assert!(stat(&node, "tracker_providers") <= 1024, "providers from one address are bounded");
    assert!(
        rss_after.saturating_sub(rss_before) < 16 * 1024,
        "memory grew by {} MiB",
        rss_after.saturating_sub(rss_before) / 1024
    );
    // The operator's records still have room.
    node.add(r#"{"name":"after-flood.local","ips":["10.7.0.1"],"ttl":60}"#);
    assert_eq!(node.dig(&["after-flood.local", "+short"]).trim(), "10.7.0.1");
}

#[test]
fn without_a_rate_limit_one_address_still_records_at_most_its_provider_bound() {
    let node = TestNode::solo("flood-norate", &["--tracker-rate", "1000000"]);
    let (ok, limited) = flood(&node, 5_000);
    let providers = stat(&node, "tracker_providers");
    let entries = stat(&node, "provider_entries");
    eprintln!("flood without a rate: {ok} answered, {limited} limited; {providers} providers, {entries} entries");
    assert_eq!((ok, limited), (5_000, 0));
    assert_eq!(providers, 1024, "the per-address bound");
    assert!(entries <= 1024, "{entries}");
    node.add(r#"{"name":"still.local","ips":["10.7.0.2"],"ttl":60}"#);
}

#[test]
fn with_a_tracker_token_only_announces_that_carry_it_are_taken() {
    let node = TestNode::solo("trtoken", &["--tracker-token", "s3cret-tracker"]);
    let req = random_request(1, 6881);
    let refused = parse_announce_response(&announce_body(&req.url(&node.url("/announce")))).unwrap_err();
    assert!(refused.to_string().contains("token"), "{refused}");
    let wrong = announce_body(&req.url(&node.url("/announce?token=nope")));
    assert!(parse_announce_response(&wrong).is_err());
    let good = announce_body(&req.url(&node.url("/announce?token=s3cret-tracker")));
    assert!(parse_announce_response(&good).is_ok(), "{}", String::from_utf8_lossy(&good));
    assert!(eventually(Duration::from_secs(5), || stat(&node, "tracker_providers") == 1));
    // An empty or short token is refused at start.
    let out = rumor_output(&["node", "--ephemeral", "--tracker-token", "", "--api", "127.0.0.1:1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tracker-token"));
}

/// Opens `n` DNS TCP connections to `port` from `src`, each with a 4 KiB
/// receive buffer, pipelining queries for `qname` A and never reading;
/// connections the server closes are opened again. Prints "open" once all
/// are opened, then runs until killed.
const NEVER_READ: &str = r#"
import socket, struct, sys, time
port, n, src, qname = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
q = b'\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00'
for label in qname.split('.'):
    q += bytes([len(label)]) + label.encode()
q += b'\x00\x00\x01\x00\x01'
batch = (struct.pack('>H', len(q)) + q) * 500
def conn():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.bind((src, 0))
    s.setblocking(False)
    try:
        s.connect(('127.0.0.1', port))
    except BlockingIOError:
        pass
    return s
socks = [conn() for _ in range(n)]
print('open', flush=True)
while True:
    for i, s in enumerate(socks):
        try:
            s.send(batch)
        except BlockingIOError:
            pass
        except OSError:
            s.close()
            socks[i] = conn()
    time.sleep(0.2)
"#;

/// One A query for `qname` over a fresh TCP connection; the answer's
/// length and how long it took, or the error.
fn tcp_query(dns: SocketAddr, qname: &str, limit: Duration) -> Result<(usize, Duration), String> {
    let started = Instant::now();
    let mut s = TcpStream::connect_timeout(&dns, limit).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(limit)).unwrap();
    s.set_write_timeout(Some(limit)).unwrap();
    let mut q = vec![0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in qname.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    let mut msg = (q.len() as u16).to_be_bytes().to_vec();
    msg.extend_from_slice(&q);
    s.write_all(&msg).map_err(|e| format!("write: {e}"))?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len).map_err(|e| format!("read after {:?}: {e}", started.elapsed()))?;
    let mut body = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut body).map_err(|e| format!("read: {e}"))?;
    assert_eq!(&body[..2], &[0xab, 0xcd]);
    Ok((body.len(), started.elapsed()))
}

#[test]
fn dns_over_tcp_answers_while_clients_that_never_read_hold_connections() {
    let node = TestNode::solo("neverread", &[]);
    // About 1,600 bytes an answer: a few fill the attacker's buffers.
    let ips: Vec<String> = (0..100).map(|i| format!("\"10.9.0.{}\"", i + 1)).collect();
    node.add(&format!(r#"{{"name":"big.local","ips":[{}],"ttl":60}}"#, ips.join(",")));
    // More connections than the node serves at once (512), from another
    // address than the honest client's.
    let args = [node.dns.port().to_string(), "600".into(), "127.0.0.2".into(), "big.local".into()];
    let _attack = python_attacker(NEVER_READ, &args);
    std::thread::sleep(Duration::from_secs(2));
    let mut worst = Duration::ZERO;
    for _ in 0..3 {
        match tcp_query(node.dns, "big.local", Duration::from_secs(10)) {
            Ok((len, took)) => {
                assert!(len > 1_000);
                worst = worst.max(took);
            }
            Err(e) => panic!("DNS over TCP blocked by clients that never read: {e}"),
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!("never-read: a TCP query under the attack took at most {worst:?}");
    assert!(worst < Duration::from_secs(3), "answered within a few seconds: {worst:?}");
    // And the connections that do not read are closed (3 s write deadline).
    assert!(
        eventually(Duration::from_secs(15), || stat(&node, "dns_tcp_write_timeouts") > 0),
        "clients that never read are closed"
    );
    // dig too.
    assert_eq!(answers(&node.dig(&["+tcp", "big.local"])).len(), 100);
}

/// Holds `n` connections to a gossip port: each sends a 54-byte frame no
/// key opens on connect and every 20 s; every fourth sends nothing at
/// all. Closed connections are opened again. Prints "open", then runs
/// until killed.
const GARBAGE_GOSSIP: &str = r#"
import os, socket, struct, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
def conn(i):
    s = socket.socket()
    s.settimeout(1)
    try:
        s.connect(('127.0.0.1', port))
    except OSError:
        s.close()
        return None
    s.setblocking(False)
    return [s, 0.0 if i % 4 else float('inf')]
socks = [conn(i) for i in range(n)]
print('open', flush=True)
while True:
    now = time.time()
    for i, c in enumerate(socks):
        if c is None:
            socks[i] = conn(i)
            continue
        try:
            # A closed one shows as readable (EOF or reset).
            if c[0].recv(1, socket.MSG_PEEK) == b'':
                raise OSError
        except BlockingIOError:
            pass
        except OSError:
            c[0].close()
            socks[i] = conn(i)
            continue
        if now - c[1] >= 20:
            try:
                c[0].send(struct.pack('>I', 50) + os.urandom(50))
                c[1] = now
            except BlockingIOError:
                pass
            except OSError:
                c[0].close()
                socks[i] = conn(i)
    time.sleep(0.05)
"#;

#[test]
fn a_node_joins_while_connections_without_the_key_crowd_the_gossip_port() {
    let a = TestNode::solo("gossip-attack-a", &["--cluster-key", KEY]);
    a.add(r#"{"name":"before.local","ips":["10.8.0.1"],"ttl":300}"#);
    // More connections than the listener serves at once (1,024).
    let _attack = python_attacker(GARBAGE_GOSSIP, &[a.gossip.port().to_string(), "1100".into()]);
    std::thread::sleep(Duration::from_secs(2));
    let started = Instant::now();
    let join = a.gossip.to_string();
    let b = TestNode::solo("gossip-attack-b", &["--cluster-key", KEY, "--join", &join]);
    let joined = eventually(Duration::from_secs(15), || {
        b.alive_members() == 2 && b.dig(&["before.local", "+short"]).trim() == "10.8.0.1"
    });
    let took = started.elapsed();
    eprintln!("gossip attack: a new node saw the cluster and its records after {took:?} (joined: {joined})");
    assert!(joined, "the new node joined under the attack");
    assert!(took < Duration::from_secs(10), "joined within a few seconds: {took:?}");
    // And a write on the first node still reaches it.
    a.add(r#"{"name":"during.local","ips":["10.8.0.2"],"ttl":300}"#);
    assert!(eventually(Duration::from_secs(10), || b.dig(&["during.local", "+short"]).trim() == "10.8.0.2"));
}

/// `n` connections to the API port at `port`, each with a 4 KiB receive
/// buffer, asking `GET /list` once and not reading for `wait` seconds
/// after the response started on every one; then each is read until the
/// server closes it or 2 s pass. Prints `open` once the requests are sent,
/// then `closed C of N, max B bytes`.
const API_NEVER_READ: &str = r#"
import select, socket, sys, time
port, n, wait = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
socks = []
started = time.time()
for _ in range(n):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(('127.0.0.1', port))
    s.sendall(b'GET /list HTTP/1.1\r\nHost: node\r\n\r\n')
    socks.append(s)
print('open', flush=True)
started = set()
deadline = time.time() + 120
while len(started) < n and time.time() < deadline:
    readable, _, _ = select.select([s for s in socks if s not in started], [], [], 1.0)
    started.update(readable)
time.sleep(wait)
closed, most, each = 0, 0, []
for s in socks:
    s.settimeout(2.0)
    got = 0
    try:
        while True:
            b = s.recv(65536)
            if not b:
                closed += 1
                break
            got += len(b)
    except OSError:
        pass
    most = max(most, got)
    each.append(got)
print('closed %d of %d, max %d bytes %s' % (closed, n, most, each), flush=True)
"#;

#[test]
fn api_clients_that_never_read_their_responses_are_closed_within_seconds() {
    let node = TestNode::solo("api-neverread", &[]);
    // A /list larger than the kernel may buffer for the client (its largest
    // send buffer, plus the 4 KiB receive buffer), so that writing it
    // stalls when the client does not read.
    let wmem_max: usize = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|s| s.split_whitespace().nth(2).and_then(|v| v.parse().ok()))
        .unwrap_or(4 << 20);
    let mut full = String::new();
    let mut batch = 0;
    while full.len() < wmem_max + wmem_max / 4 {
        let records: Vec<String> = (0..10_000)
            .map(|i| {
                format!(
                    r#"{{"name":"n{batch}-{i}.neverread.local","ips":["10.8.{}.{}"],"ttl":3600}}"#,
                    i / 250,
                    i % 250
                )
            })
            .collect();
        let (code, resp) = node.post("/add", &format!("[{}]", records.join(",")));
        assert_eq!(code, 200, "{resp}");
        batch += 1;
        full = ureq::get(&node.url("/list")).timeout(Duration::from_secs(60)).call().unwrap().into_string().unwrap();
    }
    // Twice the deadline: a response whose writing went on a while before
    // it stalled (the kernel's buffers growing) still stalls long enough.
    let wait = 2 * rumor_node::http::WRITE_TIMEOUT.as_secs() + 3;
    let started = Instant::now();
    let mut attack = python_attacker(API_NEVER_READ, &[node.api.port().to_string(), "4".into(), wait.to_string()]);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(attack.0.stdout.as_mut().unwrap()), &mut line).unwrap();
    eprintln!("api never-read: {} ({} bytes in a whole /list, {:?})", line.trim(), full.len(), started.elapsed());
    let parsed: Vec<u64> = line.split(|c: char| !c.is_ascii_digit()).filter_map(|w| w.parse().ok()).collect();
    let (closed, n, most) = (parsed[0], parsed[1], parsed[2]);
    assert_eq!(closed, n, "connections whose client never read were left open: {line}");
    assert!((most as usize) < full.len(), "a client that never read got the whole response: {line}");
}

/// `n` connections to the API port at `port`, each sending a `POST /add`
/// that declares `size` bytes and sending all of them but the last. Prints
/// `open` and the seconds since the first headers went out once the bodies
/// are out, then holds the connections until killed.
const HELD_BODIES: &str = r#"
import socket, sys, time
port, n, size = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
hdr = b'POST /add HTTP/1.1\r\nHost: node\r\nContent-Length: %d\r\n\r\n' % size
body = b'a' * (size - 1)
socks = []
started = time.time()
for _ in range(n):
    s = socket.socket()
    s.connect(('127.0.0.1', port))
    s.sendall(hdr)
    s.setblocking(False)
    socks.append(s)
pending = {s: memoryview(body) for s in socks}
deadline = time.time() + 30
while pending and time.time() < deadline:
    for s in list(pending):
        try:
            k = s.send(pending[s][:65536])
            pending[s] = pending[s][k:]
            if len(pending[s]) == 0:
                del pending[s]
        except BlockingIOError:
            pass
        except OSError:
            del pending[s]
    time.sleep(0.001)
time.sleep(1)
sending = time.time() - started
# Bodies racing for the budget grow their buffers by doubling, and one
# that cannot grow gives back all it held: the race can end with a whole
# body's room free and no one left to take it (a CI run saw an honest
# batch accepted meanwhile). Bodies sent one at a time take what is free,
# whole or not at all, so the budget is left full.
for _ in range(8):
    s = socket.socket()
    s.connect(('127.0.0.1', port))
    s.sendall(hdr + body)
    socks.append(s)
    time.sleep(0.1)
print('open %.1f' % sending, flush=True)
time.sleep(120)
"#;

#[test]
fn request_bodies_held_across_api_connections_are_bounded_in_total() {
    // The held bodies must still be held when the honest batch comes, so
    // their deadline is well past the time a loaded machine takes to send
    // them (with the default 10 s, a CI run once saw the first ones time
    // out, freeing the budget, before the batch arrived).
    let body_timeout = Duration::from_secs(30);
    let node = TestNode::solo("api-bodies", &["--api-body-timeout", &body_timeout.as_secs().to_string()]);
    let (budget, body_max) = (rumor_node::http::BODIES_IN_FLIGHT_MAX_BYTES, rumor_node::http::BODY_MAX_BYTES);
    // Twice what the budget holds: without it, the node would hold them all.
    let n = 2 * budget / body_max;
    let rss_before = common::rss_kib(node.child.id());
    // More bodies than the budget holds, each a byte short of complete.
    let attack = python_attacker(HELD_BODIES, &[node.api.port().to_string(), n.to_string(), body_max.to_string()]);
    let sending: f64 = attack.1.parse().unwrap_or(f64::NAN);
    let rss_during = common::rss_kib(node.child.id());
    // An honest batch meanwhile finds the budget taken.
    let records: Vec<String> = (0..2_000)
        .map(|i| format!(r#"{{"name":"h{i}.bodies.local","ips":["10.7.{}.{}"]}}"#, i / 250, i % 250))
        .collect();
    let batch = format!("[{}]", records.join(","));
    let (during, _) = node.post("/add", &batch);
    let took = Instant::now();
    let after = loop {
        let (code, _) = node.post("/add", &batch);
        if code == 200 || took.elapsed() > body_timeout + Duration::from_secs(30) {
            break code;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    eprintln!(
        "held bodies: {n} connections of {body_max} bytes less one, sent in {sending} s: node RSS {rss_before} -> \
         {rss_during} KiB (budget {} KiB); an honest batch got {during} meanwhile, {after} after {:?}",
        budget / 1024,
        took.elapsed()
    );
    let grown_kib = rss_during.saturating_sub(rss_before) as usize;
    // The budget, half again for the buffers each body outgrew on the way
    // (grown by doubling; the allocator keeps them), a 64 KiB read buffer
    // per connection, and the runtime's own slack.
    let bound = budget * 3 / 2 + n * (64 << 10) + (32 << 20);
    assert!(grown_kib * 1024 < bound, "the node grew by {grown_kib} KiB for bodies held (bound {} KiB)", bound >> 10);
    assert!(
        sending < body_timeout.as_secs_f64() - 5.0,
        "the attacker took {sending} s to send its bodies, too close to their {body_timeout:?} deadline to test the budget"
    );
    assert_eq!(during, 503, "an honest body past the budget is refused with 503");
    assert_eq!(after, 200, "the budget came back once the held bodies timed out");
}
