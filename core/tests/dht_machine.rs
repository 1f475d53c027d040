//! The DHT machine: answers to raw KRPC queries, tokens, bounds under
//! floods, the routing table's rules, and lookups across a virtual network
//! of machines.

use core::net::SocketAddr;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rumor_core::bt::metainfo::InfoHash;
use rumor_core::dht::krpc::{code, Body, Message, NodeInfo, Query, Response};
use rumor_core::dht::routing::{Heard, RoutingTable};
use rumor_core::dht::store::{PeerStore, Refused, StoreLimits};
use rumor_core::dht::{Command, Config, Dht, Event, Input, LookupStats, NodeId, Output};
use rumor_core::rand::Rng;
use rumor_core::time::{Duration, Instant};

fn addr(i: usize) -> SocketAddr {
    SocketAddr::new(core::net::IpAddr::V4(core::net::Ipv4Addr::new(10, (i >> 16) as u8, (i >> 8) as u8, i as u8)), 6881)
}

fn index(a: SocketAddr) -> usize {
    match a.ip() {
        core::net::IpAddr::V4(ip) => {
            let o = ip.octets();
            (usize::from(o[1]) << 16) | (usize::from(o[2]) << 8) | usize::from(o[3])
        }
        _ => usize::MAX,
    }
}

fn id_of(rng: &mut Rng) -> NodeId {
    let mut id = [0u8; 20];
    rng.fill(&mut id);
    NodeId(id)
}

/// Drains a machine: the datagrams it sends, its events, its timeout.
/// Datagrams a drain produced: (destination, bytes).
type Sent = Vec<(SocketAddr, Vec<u8>)>;
/// A datagram in flight: (arrival, sequence, destination node, source, bytes).
type Flight = Reverse<(Instant, u64, usize, SocketAddr, Vec<u8>)>;

fn drain(d: &mut Dht) -> (Sent, Vec<Event>, Instant) {
    let (mut sent, mut events) = (Vec::new(), Vec::new());
    for _ in 0..100_000 {
        match d.poll_output() {
            Output::Transmit(t) => sent.push((t.to, t.bytes)),
            Output::Event(e) => events.push(e),
            Output::Timeout(at) => return (sent, events, at),
        }
    }
    panic!("the machine never yielded its timeout");
}

/// Asks `d` one raw query from `from` and returns the parsed answer.
fn ask(d: &mut Dht, now: Instant, from: SocketAddr, q: Query) -> Option<Message> {
    let m = Message { tid: b"qq".to_vec(), body: Body::Query(q), read_only: false, ip: None, version: None };
    d.handle(now, Input::Receive { from, bytes: m.encode() });
    let (sent, _, _) = drain(d);
    let mut answer = None;
    for (to, b) in sent {
        assert_eq!(to, from, "answers (and pings back) go to the asker");
        let m = Message::parse(&b).expect("what we send parses");
        match m.body {
            Body::Query(Query::Ping { .. }) => {} // a ping to see whether the asker may join the table
            _ => {
                assert!(answer.is_none(), "one query, one answer");
                answer = Some(m);
            }
        }
    }
    answer
}

fn response(m: Option<Message>) -> Response {
    match m.expect("an answer").body {
        Body::Response(r) => r,
        other => panic!("not a response: {other:?}"),
    }
}

#[test]
fn a_node_answers_ping_find_node_and_get_peers_and_stores_an_announce_with_its_token() {
    let me = NodeId([0x55; 20]);
    let mut d = Dht::new(Config::new(me), Instant::ZERO, 1);
    let now = Instant::from_micros(1_000_000);
    let (a, b) = (addr(1), addr(2));
    let them = NodeId([1; 20]);
    assert_eq!(response(ask(&mut d, now, a, Query::Ping { id: them })).id, me);
    let fnr = response(ask(&mut d, now, a, Query::FindNode { id: them, target: NodeId([9; 20]) }));
    assert_eq!(fnr.id, me);
    let ih = InfoHash([7; 20]);
    let gp = response(ask(&mut d, now, a, Query::GetPeers { id: them, info_hash: ih }));
    let token = gp.token.expect("get_peers answers carry a token");
    assert!(gp.values.is_empty());
    // A wrong token is refused with 203 and stores nothing.
    let bad = Query::AnnouncePeer { id: them, info_hash: ih, port: 7000, token: b"nope".to_vec(), implied_port: false };
    match ask(&mut d, now, a, bad).unwrap().body {
        Body::Error { code: c, .. } => assert_eq!(c, code::PROTOCOL),
        other => panic!("a bad token was accepted: {other:?}"),
    }
    // A token given to one address is no good from another.
    let stolen = Query::AnnouncePeer { id: them, info_hash: ih, port: 7000, token: token.clone(), implied_port: false };
    let other_ip: SocketAddr = "10.9.9.9:6881".parse().unwrap();
    assert!(matches!(ask(&mut d, now, other_ip, stolen).unwrap().body, Body::Error { code: 203, .. }));
    assert_eq!(d.store().len(), 0);
    let good = Query::AnnouncePeer { id: them, info_hash: ih, port: 7000, token, implied_port: false };
    response(ask(&mut d, now, a, good));
    assert_eq!(d.store().len(), 1);
    let other = response(ask(&mut d, now, b, Query::GetPeers { id: NodeId([2; 20]), info_hash: ih }));
    assert_eq!(other.values, vec![SocketAddr::new(a.ip(), 7000)]);
    // An unknown method: 204.
    let m = ask(&mut d, now, a, Query::Unknown { method: b"vote".to_vec() }).unwrap();
    assert!(matches!(m.body, Body::Error { code: 204, .. }));
}

#[test]
fn implied_port_stores_the_source_port_and_tokens_expire_after_two_rotations() {
    let mut d = Dht::new(Config::new(NodeId([3; 20])), Instant::ZERO, 2);
    let from: SocketAddr = "10.0.0.7:4444".parse().unwrap();
    let ih = InfoHash([1; 20]);
    let t0 = Instant::from_micros(1);
    let tok = response(ask(&mut d, t0, from, Query::GetPeers { id: NodeId([4; 20]), info_hash: ih })).token.unwrap();
    let q =
        |token: Vec<u8>| Query::AnnouncePeer { id: NodeId([4; 20]), info_hash: ih, port: 1, token, implied_port: true };
    // Still good after one rotation (5 minutes)...
    let mut now = t0;
    while now < t0 + Duration::from_secs(6 * 60) {
        now += Duration::from_secs(5);
        d.handle(now, Input::Timeout);
        drain(&mut d);
    }
    response(ask(&mut d, now, from, q(tok.clone())));
    let peers = response(ask(&mut d, now, addr(3), Query::GetPeers { id: NodeId([5; 20]), info_hash: ih })).values;
    assert_eq!(peers, vec![from]);
    // ...but not after the second (past 10 minutes).
    while now < t0 + Duration::from_secs(11 * 60) {
        now += Duration::from_secs(5);
        d.handle(now, Input::Timeout);
        drain(&mut d);
    }
    assert!(matches!(ask(&mut d, now, from, q(tok)).unwrap().body, Body::Error { code: 203, .. }));
}

#[test]
fn a_flood_from_one_address_is_cut_to_its_rate_and_others_are_still_answered() {
    let config = Config::new(NodeId([8; 20]));
    let (rate, burst) = (config.queries_per_s, config.queries_burst);
    let mut d = Dht::new(config, Instant::ZERO, 3);
    let flooder = addr(66);
    let mut answered = 0;
    // 10,000 queries in 10 s from one address.
    for i in 0..10_000u64 {
        let now = Instant::from_micros(1 + i * 1_000);
        let q = Query::GetPeers { id: NodeId([6; 20]), info_hash: InfoHash([i as u8; 20]) };
        if ask(&mut d, now, flooder, q).is_some() {
            answered += 1;
        }
        if i % 100 == 0 {
            assert!(ask(&mut d, now, addr(67), Query::Ping { id: NodeId([7; 20]) }).is_some(), "others are answered");
        }
    }
    let allowed = u64::from(burst) + 10 * u64::from(rate) + 1;
    assert!(answered <= allowed, "{answered} answered, at most {allowed} allowed");
    assert!(answered >= u64::from(burst), "the burst is answered");
    assert_eq!(d.stats().rate_limited, 10_000 - answered);
    let s = d.stats();
    assert!(s.answer_bytes <= 6 * s.answered_query_bytes, "answers are a few times the queries, not more");
}

#[test]
fn announces_for_random_infohashes_leave_the_store_within_its_bounds() {
    let mut config = Config::new(NodeId([8; 20]));
    config.store =
        StoreLimits { peers_per_infohash_max: 4, infohashes_max: 100, peers_total_max: 150, ..Default::default() };
    config.queries_per_s = 1_000_000;
    config.queries_burst = 1_000_000;
    let mut d = Dht::new(config, Instant::ZERO, 4);
    let now = Instant::from_micros(1);
    let mut rng = Rng::new(9);
    for i in 0..2_000usize {
        let from = addr(1000 + i);
        let ih = InfoHash(id_of(&mut rng).0);
        let ih = if i % 2 == 0 { ih } else { InfoHash([1; 20]) };
        let tok =
            response(ask(&mut d, now, from, Query::GetPeers { id: NodeId([6; 20]), info_hash: ih })).token.unwrap();
        let q = Query::AnnouncePeer { id: NodeId([6; 20]), info_hash: ih, port: 9, token: tok, implied_port: false };
        response(ask(&mut d, now, from, q));
        assert!(d.store().len() <= 150 && d.store().infohash_count() <= 100);
    }
    let hot =
        response(ask(&mut d, now, addr(5), Query::GetPeers { id: NodeId([6; 20]), info_hash: InfoHash([1; 20]) }));
    assert_eq!(hot.values.len(), 4, "the busy infohash keeps its latest four");
}

#[test]
fn the_store_refuses_new_infohashes_when_full_and_expires_after_its_ttl() {
    let limits =
        StoreLimits { peers_per_infohash_max: 2, infohashes_max: 2, peers_total_max: 3, ttl: Duration::from_secs(60) };
    let mut s = PeerStore::new(limits);
    let t = Instant::from_micros(1);
    s.announce(InfoHash([1; 20]), addr(1), t).unwrap();
    s.announce(InfoHash([2; 20]), addr(1), t).unwrap();
    assert_eq!(s.announce(InfoHash([3; 20]), addr(1), t), Err(Refused::TooManyInfohashes));
    s.announce(InfoHash([1; 20]), addr(2), t).unwrap();
    s.announce(InfoHash([1; 20]), addr(3), t).unwrap();
    assert_eq!(s.len(), 3);
    s.expire(t + Duration::from_secs(61));
    assert!(s.is_empty() && s.infohash_count() == 0);
}

#[test]
fn the_table_splits_only_its_own_bucket_and_holds_k_per_bucket() {
    let own = NodeId([0; 20]);
    let mut t = RoutingTable::new(own, 8, Instant::ZERO);
    let mut rng = Rng::new(5);
    let now = Instant::from_micros(1);
    for i in 0..5_000 {
        let _ = t.heard_from(id_of(&mut rng), addr(i + 1), now);
    }
    // Random ids: half share 0 bits with ours, a quarter 1, ... so about
    // log2(5000/8) buckets of 8, and the nearest bucket may be short.
    assert!(t.bucket_count() >= 8 && t.bucket_count() <= 14, "{} buckets", t.bucket_count());
    assert!(t.len() <= 8 * t.bucket_count());
    assert!(t.len() >= 8 * (t.bucket_count() - 2));
    let far: Vec<_> = t.nodes().filter(|n| own.common_prefix_bits(&n.id) == 0).collect();
    assert_eq!(far.len(), 8, "the far half of the id space gets one bucket");
    assert_eq!(t.heard_from(own, addr(99_999), now), Heard::Refused, "never ourselves");
}

#[test]
fn a_full_bucket_pings_a_stale_node_and_replaces_it_when_it_fails() {
    let own = NodeId([0; 20]);
    let mut t = RoutingTable::new(own, 2, Instant::ZERO);
    let far = |b: u8| {
        let mut id = [b; 20];
        id[0] |= 0x80;
        NodeId(id)
    };
    let t0 = Instant::from_micros(1);
    // Two near nodes first, so the table splits and the far bucket is fixed.
    let mut near = [0u8; 20];
    near[19] = 1;
    t.heard_from(NodeId(near), addr(50), t0);
    near[19] = 2;
    t.heard_from(NodeId(near), addr(51), t0);
    assert_eq!(t.heard_from(far(1), addr(1), t0), Heard::Added);
    assert_eq!(t.heard_from(far(2), addr(2), t0), Heard::Added);
    // While both are good, a newcomer waits and nobody is pinged.
    assert_eq!(t.heard_from(far(3), addr(3), t0), Heard::Cached { ping: None });
    // Twenty minutes later both are questionable: ping the stalest.
    let later = t0 + Duration::from_secs(20 * 60);
    let Heard::Cached { ping: Some(stale) } = t.heard_from(far(4), addr(4), later) else { panic!("no ping") };
    t.failed(stale.addr, later);
    assert!(!t.contains(&stale.id, stale.addr), "the failed node left");
    assert!(t.contains(&far(4), addr(4)), "the freshest replacement took its place");
    assert_eq!(t.closest(&far(0), 8, later).len(), 4);
}

/// A lossless virtual network of DHT machines with 20 ms latency.
struct Net {
    nodes: Vec<Dht>,
    timers: Vec<Instant>,
    queue: BinaryHeap<Flight>,
    seq: u64,
    now: Instant,
    done: Vec<(usize, u64, LookupStats)>,
    found: Vec<(usize, u64, SocketAddr)>,
}

impl Net {
    fn new(n: usize, seed: u64) -> Net {
        let mut rng = Rng::new(seed);
        let nodes: Vec<Dht> =
            (0..n).map(|i| Dht::new(Config::new(id_of(&mut rng)), Instant::ZERO, seed * 1000 + i as u64)).collect();
        Net {
            timers: vec![Instant::ZERO; n],
            nodes,
            queue: BinaryHeap::new(),
            seq: 0,
            now: Instant::ZERO,
            done: Vec::new(),
            found: Vec::new(),
        }
    }

    fn input(&mut self, i: usize, input: Input) {
        self.nodes[i].handle(self.now, input);
        let (sent, events, at) = drain(&mut self.nodes[i]);
        for (to, bytes) in sent {
            self.seq += 1;
            let j = index(to);
            if j < self.nodes.len() {
                self.queue.push(Reverse((self.now + Duration::from_millis(20), self.seq, j, addr(i), bytes)));
            }
        }
        for e in events {
            match e {
                Event::LookupDone { lookup, stats } => self.done.push((i, lookup, stats)),
                Event::Peers { lookup, peers, .. } => self.found.extend(peers.into_iter().map(|p| (i, lookup, p))),
            }
        }
        self.timers[i] = at;
    }

    fn run_until(&mut self, end: Instant) {
        for _ in 0..10_000_000 {
            let next_msg = self.queue.peek().map(|Reverse(m)| m.0).unwrap_or(Instant::NEVER);
            let (ti, next_timer) =
                self.timers.iter().enumerate().min_by_key(|(_, t)| **t).map(|(i, t)| (i, *t)).unwrap();
            let at = next_msg.min(next_timer);
            if at > end {
                self.now = end;
                return;
            }
            self.now = at;
            if next_msg <= next_timer {
                let Reverse((_, _, to, from, bytes)) = self.queue.pop().unwrap();
                self.input(to, Input::Receive { from, bytes });
            } else {
                self.input(ti, Input::Timeout);
            }
        }
        panic!("livelock: too many steps");
    }
}

#[test]
fn two_hundred_nodes_find_a_peer_announced_by_one_of_them() {
    let n = 200;
    let mut net = Net::new(n, 7);
    for i in 1..n {
        net.input(i, Input::Command(Command::Bootstrap(vec![addr((i * 7) % i)])));
        let end = net.now + Duration::from_millis(200);
        net.run_until(end);
    }
    net.run_until(net.now + Duration::from_secs(30));
    assert!(net.nodes.iter().all(|d| d.table().len() >= 8), "every node knows at least k others");
    let ih = InfoHash([0xab; 20]);
    net.input(17, Input::Command(Command::GetPeers { lookup: 1, info_hash: ih, announce: Some(7777) }));
    net.run_until(net.now + Duration::from_secs(40));
    let (_, _, a) = net.done.iter().find(|(i, l, _)| *i == 17 && *l == 1).expect("the announce lookup ended").clone();
    assert!(!a.timed_out && a.announced >= 6, "{a:?}");
    for (lookup, asker) in [(2u64, 150usize), (3, 3), (4, 199)] {
        net.input(asker, Input::Command(Command::GetPeers { lookup, info_hash: ih, announce: None }));
    }
    net.run_until(net.now + Duration::from_secs(40));
    for (lookup, asker) in [(2u64, 150usize), (3, 3), (4, 199)] {
        assert!(
            net.found.contains(&(asker, lookup, SocketAddr::new(addr(17).ip(), 7777))),
            "node {asker} found the announcer"
        );
        let (_, _, s) = net.done.iter().find(|(i, l, _)| *i == asker && *l == lookup).unwrap();
        assert!(s.hops >= 1 && s.hops <= 8 && s.queries < 60, "{s:?}");
    }
}

#[test]
fn a_lookup_with_nobody_answering_ends_by_its_deadline() {
    let mut d = Dht::new(Config::new(NodeId([1; 20])), Instant::ZERO, 1);
    d.handle(Instant::ZERO, Input::Command(Command::Bootstrap(vec![addr(1), addr(2)])));
    d.handle(
        Instant::ZERO,
        Input::Command(Command::GetPeers { lookup: 5, info_hash: InfoHash([2; 20]), announce: None }),
    );
    let (sent, _, mut at) = drain(&mut d);
    assert_eq!(sent.len(), 4, "bootstrap and lookup each ask both seeds");
    let mut events = Vec::new();
    while at < Instant::from_micros(60_000_000) {
        d.handle(at, Input::Timeout);
        let (_, e, next) = drain(&mut d);
        events.extend(e);
        assert!(next > at, "the timeout moves on");
        at = next;
    }
    let done = events.iter().find_map(|e| match e {
        Event::LookupDone { lookup: 5, stats } => Some(stats.clone()),
        _ => None,
    });
    let s = done.expect("the lookup ended");
    assert_eq!((s.responses, s.peers), (0, 0));
    assert_eq!(d.in_flight(), 0);
}

#[test]
fn answers_from_an_address_we_did_not_ask_are_ignored() {
    let mut d = Dht::new(Config::new(NodeId([1; 20])), Instant::ZERO, 1);
    d.handle(Instant::ZERO, Input::Command(Command::Ping(addr(1))));
    let (sent, _, _) = drain(&mut d);
    let tid = Message::parse(&sent[0].1).unwrap().tid;
    let r = Message {
        tid,
        body: Body::Response(Response { id: NodeId([2; 20]), ..Default::default() }),
        read_only: false,
        ip: None,
        version: None,
    };
    d.handle(Instant::ZERO, Input::Receive { from: addr(2), bytes: r.encode() });
    assert_eq!(d.table().len(), 0);
    assert_eq!(d.stats().unexpected, 1);
    d.handle(Instant::ZERO, Input::Receive { from: addr(1), bytes: r.encode() });
    assert!(d.table().contains(&NodeId([2; 20]), addr(1)));
    let _ = NodeInfo { id: NodeId([0; 20]), addr: addr(0) };
}

#[test]
fn a_host_that_answers_under_a_new_id_replaces_its_old_entry() {
    let mut t = RoutingTable::new(NodeId([0; 20]), 8, Instant::ZERO);
    let now = Instant::from_micros(1);
    assert_eq!(t.heard_from(NodeId([1; 20]), addr(1), now), Heard::Added);
    assert_eq!(t.heard_from(NodeId([2; 20]), addr(1), now), Heard::Added);
    assert!(t.contains(&NodeId([2; 20]), addr(1)) && !t.contains(&NodeId([1; 20]), addr(1)));
    assert_eq!(t.len(), 1);
    // The same id from another address is refused: one place per id.
    assert_eq!(t.heard_from(NodeId([2; 20]), addr(2), now), Heard::Refused);
}
