//! `sim tracker`: many BitTorrent clients announcing through several nodes
//! on virtual time. Every node is the very same pair of core machines the
//! real node drives, a [`Member`] and a [`Tracker`], wired as `node.rs`
//! wires them; gossip travels over a seeded network with latency, jitter
//! and loss.
//!
//! Each client has a torrent, a home node and an endpoint; it announces
//! `started` at a random moment of the first interval, then every interval,
//! `completed` when its download ends, and some clients leave (`stopped`).
//! A leaving client that just completed sends `completed` and `stopped` at
//! the same instant and the stop is delivered first, the race that once
//! left such clients listed as seeders.
//!
//! Measured: announce answer latency (parked announces wait for a gossip
//! lookup), the providers each node lists at the end against the clients
//! still there, stopped clients still listed anywhere (must be none), and
//! the parked peak against its bound. [`Tracker::check_invariants`] runs
//! after every step. The same seed gives the same trace hash.

use rumor_core::bt::metainfo::InfoHash;
use rumor_core::bt::tracker::{AnnounceEvent, AnnounceRequest};
use rumor_core::gossip::{self, Keyring, Now, PeerAddr};
use rumor_core::member::{self, Member};
use rumor_core::overlay::tracker::{self, Tracker};
use rumor_core::rand::Rng;
use rumor_core::time::{Duration, Instant};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

const WALL0: u64 = 1_700_000_000_000;

/// What to simulate.
#[derive(Clone, Debug)]
pub struct TrackerOpts {
    /// Cluster nodes, each a tracker.
    pub nodes: usize,
    /// BitTorrent clients.
    pub clients: usize,
    /// Torrents the clients share among them.
    pub torrents: usize,
    /// Seconds between a client's announces (the trackers say so).
    pub interval_s: u32,
    /// Virtual seconds clients announce for; a settle of one interval
    /// follows before the measure.
    pub duration_s: u64,
    /// Share of clients that leave before the end.
    pub leave: f64,
    /// One-way gossip latency, ms (plus up to as much jitter).
    pub latency_ms: u64,
    /// Share of gossip messages lost.
    pub loss: f64,
    /// Announces parked at once per node (the tracker's bound).
    pub parked_max: usize,
    /// Seed of every random choice.
    pub seed: u64,
}

impl Default for TrackerOpts {
    fn default() -> Self {
        TrackerOpts {
            nodes: 5,
            clients: 200,
            torrents: 10,
            interval_s: 60,
            duration_s: 300,
            leave: 0.3,
            latency_ms: 5,
            loss: 0.01,
            parked_max: 1024,
            seed: 1,
        }
    }
}

/// What happened.
#[derive(Clone, Debug, Default)]
pub struct TrackerReport {
    /// Announces sent.
    pub announces: u64,
    /// Announces answered.
    pub answered: u64,
    /// Answer latency, ms: median.
    pub latency_median_ms: f64,
    /// Answer latency, ms: 99th percentile.
    pub latency_p99_ms: f64,
    /// Answer latency, ms: largest.
    pub latency_max_ms: f64,
    /// Announces parked for a lookup, all nodes.
    pub parked: u64,
    /// The most announces parked at once on one node.
    pub parked_peak: usize,
    /// Clients still there at the end (expected providers, summed over
    /// torrents).
    pub providers_expected: usize,
    /// The fewest of them any node lists.
    pub providers_seen_min: usize,
    /// Clients that left and are still listed by some node (must be 0).
    pub stopped_listed: usize,
    /// Late announces after a stop held back, all nodes.
    pub late_after_stop: u64,
    /// A hash of every answer and delivery and when: equal for equal seeds.
    pub trace_hash: u64,
}

impl TrackerReport {
    /// A human summary, one line per figure.
    pub fn text(&self) -> String {
        format!(
            "announces {} answered {}\nanswer latency ms: median {:.1} p99 {:.1} max {:.1}\n\
             parked {} (peak on one node {})\nproviders expected {} seen by every node at least {}\n\
             stopped clients still listed {} (late announces held back {})\ntrace {:016x}",
            self.announces,
            self.answered,
            self.latency_median_ms,
            self.latency_p99_ms,
            self.latency_max_ms,
            self.parked,
            self.parked_peak,
            self.providers_expected,
            self.providers_seen_min,
            self.stopped_listed,
            self.late_after_stop,
            self.trace_hash,
        )
    }

    /// The report as one JSON document.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "announces": self.announces,
            "answered": self.answered,
            "latency_median_ms": self.latency_median_ms,
            "latency_p99_ms": self.latency_p99_ms,
            "latency_max_ms": self.latency_max_ms,
            "parked": self.parked,
            "parked_peak": self.parked_peak,
            "providers_expected": self.providers_expected,
            "providers_seen_min": self.providers_seen_min,
            "stopped_listed": self.stopped_listed,
            "late_after_stop": self.late_after_stop,
            "trace_hash": format!("{:016x}", self.trace_hash),
        })
    }
}

/// Something due at a virtual instant.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    /// A gossip message reaches node `to`.
    Deliver { to: usize, from: usize, bytes: Vec<u8> },
    /// Client `client` announces `event` to its home node.
    Announce { client: usize, event: u8 },
    /// Node `node`'s timer.
    Wake { node: usize },
}

const EV_NONE: u8 = 0;
const EV_STARTED: u8 = 1;
const EV_COMPLETED: u8 = 2;
const EV_STOPPED: u8 = 3;

struct Client {
    ih: InfoHash,
    home: usize,
    addr: SocketAddr,
    /// When its download completes, µs (never for a seeder from the start).
    completes_us: Option<u64>,
    /// When it leaves, µs.
    leaves_us: Option<u64>,
    left: bool,
}

struct Node {
    member: Member,
    tracker: Tracker,
}

struct Sim {
    nodes: Vec<Node>,
    clients: Vec<Client>,
    heap: BinaryHeap<Reverse<(u64, u64, Due)>>,
    seq: u64,
    rng: Rng,
    opts: TrackerOpts,
    /// Request id → (client, sent at µs).
    waiting: BTreeMap<u64, u64>,
    next_id: u64,
    latencies_us: Vec<u64>,
    announces: u64,
    trace: u64,
}

fn mix(h: u64, x: u64) -> u64 {
    (h ^ x).wrapping_mul(0x100_0000_01b3).rotate_left(29)
}

fn now_at(us: u64) -> Now {
    Now { at: Instant::ZERO + Duration::from_micros(us), wall_ms: WALL0 + us / 1000 }
}

impl Sim {
    fn push(&mut self, at_us: u64, due: Due) {
        self.seq += 1;
        self.heap.push(Reverse((at_us, self.seq, due)));
    }

    /// Drains node `i`'s two machines as the node task does, passing
    /// commands and changes between them, until both are quiet.
    fn drive(&mut self, i: usize, at_us: u64, mut to_tracker: Vec<tracker::Input>) {
        let now = now_at(at_us);
        let mut to_member: Vec<member::Command> = Vec::new();
        let mut deadline;
        for _ in 0..10_000 {
            for c in to_member.drain(..) {
                self.nodes[i].member.handle(now, member::Input::Command(c));
            }
            loop {
                match self.nodes[i].member.poll_output() {
                    member::Output::Transmit(t) => {
                        let to: usize = t.to.0[1..].parse().expect("sim addresses are n<index>");
                        if self.rng.chance(self.opts.loss) {
                            continue;
                        }
                        let lat = self.opts.latency_ms * 1000;
                        let at = at_us + lat + self.rng.below(lat + 1);
                        self.push(at, Due::Deliver { to, from: i, bytes: t.bytes });
                    }
                    member::Output::Event(member::Event::Providers(c)) => to_tracker.push(tracker::Input::Store(c)),
                    member::Output::Event(member::Event::Gossip(gossip::Event::LookupDone { id, .. })) => {
                        to_tracker.push(tracker::Input::LookupDone { id })
                    }
                    member::Output::Event(_) | member::Output::Persist(_) => {}
                    member::Output::Timeout(at) => {
                        deadline = at;
                        break;
                    }
                }
            }
            for input in to_tracker.drain(..) {
                self.nodes[i].tracker.handle(now, input);
            }
            loop {
                match self.nodes[i].tracker.poll_output() {
                    tracker::Output::Gossip(c) => to_member.push(member::Command::Gossip(c)),
                    tracker::Output::Event(tracker::Event::Answer { id, body }) => {
                        if let Some(sent) = self.waiting.remove(&id) {
                            self.latencies_us.push(at_us - sent);
                        }
                        self.trace = mix(self.trace, at_us ^ id.rotate_left(20) ^ (body.len() as u64) << 48);
                    }
                    tracker::Output::Timeout(at) => {
                        deadline = deadline.min(at);
                        break;
                    }
                }
            }
            self.nodes[i].tracker.check_invariants();
            if to_member.is_empty() && to_tracker.is_empty() {
                let wake = deadline.as_micros().max(at_us + 1);
                if deadline != Instant::NEVER {
                    self.push(wake, Due::Wake { node: i });
                }
                return;
            }
        }
        panic!("node {i}: member and tracker never settled (seed {})", self.opts.seed);
    }

    fn announce(&mut self, at_us: u64, client: usize, event: u8) {
        let end_us = self.opts.duration_s * 1_000_000;
        let interval_us = u64::from(self.opts.interval_s) * 1_000_000;
        let c = &self.clients[client];
        if c.left {
            return;
        }
        let complete = c.completes_us.is_none_or(|t| t <= at_us);
        let leaving = c.leaves_us.is_some_and(|t| t <= at_us);
        let (home, ih, addr) = (c.home, c.ih, c.addr);
        let mut events = Vec::new();
        if leaving {
            // Stop first, then the completed it raced (if it had just
            // completed): the stop is handled first.
            events.push(EV_STOPPED);
            if event == EV_COMPLETED {
                events.push(EV_COMPLETED);
            }
            self.clients[client].left = true;
        } else {
            events.push(event);
        }
        for ev in events {
            self.next_id += 1;
            let id = self.next_id;
            self.announces += 1;
            self.waiting.insert(id, at_us);
            let request = AnnounceRequest {
                info_hash: ih,
                peer_id: [client as u8; 20],
                port: addr.port(),
                uploaded: 0,
                downloaded: 0,
                left: if complete { 0 } else { 1 << 20 },
                event: match ev {
                    EV_STARTED => AnnounceEvent::Started,
                    EV_COMPLETED => AnnounceEvent::Completed,
                    EV_STOPPED => AnnounceEvent::Stopped,
                    _ => AnnounceEvent::None,
                },
                numwant: Some(50),
                key: None,
                compact: true,
            };
            let input = tracker::Input::Announce { id, request, from: addr.ip() };
            self.drive(home, at_us, vec![input]);
        }
        if self.clients[client].left {
            return;
        }
        // The next announce: completion, leaving, or the regular one.
        let c = &self.clients[client];
        let mut next = (at_us + interval_us, EV_NONE);
        if let Some(t) = c.completes_us.filter(|t| *t > at_us && *t < next.0) {
            next = (t, EV_COMPLETED);
        }
        if let Some(t) = c.leaves_us.filter(|t| *t > at_us && *t <= next.0) {
            // A client that completes and leaves at once races the two.
            next = (t, if next.1 == EV_COMPLETED && c.completes_us == Some(t) { EV_COMPLETED } else { EV_NONE });
        }
        if next.0 < end_us {
            self.push(next.0, Due::Announce { client, event: next.1 });
        }
    }
}

/// Runs one simulation.
pub fn run(opts: &TrackerOpts) -> TrackerReport {
    let mut rng = Rng::new(opts.seed);
    let keys = Keyring::new(1, [0x5a; 32]);
    let n = opts.nodes.max(1);
    let mut nodes = Vec::new();
    for i in 0..n {
        let config = member::Config {
            gossip: gossip::Config::new(PeerAddr::from(format!("n{i}")), keys.clone()),
            node_id: 1_000 + i as u64,
        };
        let member = Member::new(config, now_at(0), rng.next_u64());
        let mut tc = tracker::Config::new(opts.interval_s);
        tc.parked_max = opts.parked_max.max(1);
        nodes.push(Node { member, tracker: Tracker::new(tc, now_at(0)) });
    }
    let interval_us = u64::from(opts.interval_s.max(1)) * 1_000_000;
    let end_us = opts.duration_s * 1_000_000;
    let mut clients = Vec::new();
    for c in 0..opts.clients {
        let ih = InfoHash([(c % opts.torrents.max(1)) as u8 + 1; 20]);
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, (c >> 8) as u8, c as u8, 1)), 6881);
        let completes_us = (!rng.chance(0.2)).then(|| rng.below(end_us.max(1)));
        let leaves_us = rng.chance(opts.leave).then(|| {
            // Half of those leave the moment they complete (`--no-seed`).
            match completes_us {
                Some(t) if rng.chance(0.5) => t,
                _ => rng.below(end_us.max(1)),
            }
        });
        clients.push(Client { ih, home: rng.index(n), addr, completes_us, leaves_us, left: false });
    }
    let mut sim = Sim {
        nodes,
        clients,
        heap: BinaryHeap::new(),
        seq: 0,
        rng,
        opts: opts.clone(),
        waiting: BTreeMap::new(),
        next_id: 0,
        latencies_us: Vec::new(),
        announces: 0,
        trace: 0xcbf2_9ce4_8422_2325,
    };
    for i in 0..n {
        let join = gossip::Command::Join(vec![PeerAddr("n0".into())]);
        sim.nodes[i].member.handle(now_at(0), member::Input::Command(member::Command::Gossip(join)));
        sim.drive(i, 0, Vec::new());
    }
    // Let the cluster form before the first announce.
    let start_us = 5_000_000;
    for c in 0..opts.clients {
        let at = start_us + sim.rng.below(interval_us);
        sim.push(at, Due::Announce { client: c, event: EV_STARTED });
    }
    let stop_us = start_us + end_us + interval_us;
    while let Some(Reverse((at, _, due))) = sim.heap.pop() {
        if at > stop_us {
            break;
        }
        match due {
            Due::Deliver { to, from, bytes } => {
                sim.trace = mix(sim.trace, at ^ (to as u64) << 56 ^ bytes.len() as u64);
                let from = PeerAddr::from(format!("n{from}"));
                sim.nodes[to].member.handle(now_at(at), member::Input::Receive { from, bytes });
                sim.drive(to, at, Vec::new());
            }
            Due::Announce { client, event } => sim.announce(at, client, event),
            Due::Wake { node } => {
                sim.nodes[node].member.handle(now_at(at), member::Input::Timeout);
                sim.drive(node, at, vec![tracker::Input::Timeout]);
            }
        }
    }
    // The measure.
    let wall = now_at(stop_us).wall_ms;
    let mut expected: BTreeMap<InfoHash, BTreeSet<SocketAddr>> = BTreeMap::new();
    let mut gone: BTreeSet<(InfoHash, SocketAddr)> = BTreeSet::new();
    for c in &sim.clients {
        if c.left {
            gone.insert((c.ih, c.addr));
        } else {
            expected.entry(c.ih).or_default().insert(c.addr);
        }
    }
    let providers_expected = expected.values().map(BTreeSet::len).sum();
    let mut seen_min = usize::MAX;
    let mut stopped_listed = BTreeSet::new();
    let mut report = TrackerReport::default();
    for node in &sim.nodes {
        let mut seen = 0;
        for (ih, addrs) in &expected {
            let listed: BTreeSet<SocketAddr> =
                node.tracker.overlay().lookup(ih, wall, usize::MAX, None).iter().map(|p| p.addr).collect();
            seen += addrs.intersection(&listed).count();
        }
        for (ih, addr) in &gone {
            if node.tracker.overlay().lookup(ih, wall, usize::MAX, None).iter().any(|p| p.addr == *addr) {
                stopped_listed.insert((*ih, *addr));
            }
        }
        seen_min = seen_min.min(seen);
        let s = node.tracker.stats();
        report.parked += s.answered_after_lookup + s.answered_on_timeout;
        report.parked_peak = report.parked_peak.max(s.parked_peak);
        report.late_after_stop += s.late_after_stop;
    }
    let mut lat = sim.latencies_us.clone();
    lat.sort_unstable();
    let pick = |q: f64| lat.get(((lat.len() as f64 - 1.0) * q).round() as usize).map_or(0.0, |us| *us as f64 / 1000.0);
    report.announces = sim.announces;
    report.answered = lat.len() as u64;
    report.latency_median_ms = pick(0.5);
    report.latency_p99_ms = pick(0.99);
    report.latency_max_ms = pick(1.0);
    report.providers_expected = providers_expected;
    report.providers_seen_min = if seen_min == usize::MAX { 0 } else { seen_min };
    report.stopped_listed = stopped_listed.len();
    report.trace_hash = sim.trace;
    report
}
