//! The simulated world: many gossip machines on one virtual clock, wired by
//! a seeded network model (latency, jitter and so reordering, loss,
//! duplication, partitions), with crash and restart from persisted state.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use bytes::Bytes;
use rumor_core::gossip::{Command, Config, Event, Gossip, Input, Keyring, Now, Output, PeerAddr};
use rumor_core::rand::Rng;
use rumor_core::replica::{Change, Entry, Namespace, StoreConfig};
use rumor_core::time::{Duration, Instant};

/// Wall-clock time at virtual time zero (ms since the epoch).
pub const WALL0_MS: u64 = 1_700_000_000_000;

/// The network's behaviour; itself driven by the world's seeded PRNG.
#[derive(Clone, Debug)]
pub struct NetModel {
    /// Fixed one-way latency.
    pub latency_us: u64,
    /// Extra uniform random delay in `0..jitter_us` (reorders messages).
    pub jitter_us: u64,
    /// Probability a message is lost.
    pub loss: f64,
    /// Probability a message is delivered twice.
    pub dup: f64,
}

impl Default for NetModel {
    fn default() -> Self {
        NetModel { latency_us: 2_000, jitter_us: 3_000, loss: 0.0, dup: 0.0 }
    }
}

enum Kind {
    Deliver { from: u32, to: u32, bytes: Vec<u8> },
    Timer { node: u32 },
}

struct Ev {
    at: u64,
    seq: u64,
    kind: Kind,
}

impl PartialEq for Ev {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Ev {}
impl PartialOrd for Ev {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Ev {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// The address of node `i`.
pub fn addr(i: usize) -> PeerAddr {
    PeerAddr(format!("n{i}"))
}

fn index_of(a: &PeerAddr) -> Option<usize> {
    a.0.strip_prefix('n')?.parse().ok()
}

/// Many nodes, one clock, one network.
pub struct World {
    /// The machines; `None` while crashed.
    pub nodes: Vec<Option<Gossip>>,
    /// What each node persisted through its change feed (its "disk").
    pub persisted: Vec<BTreeMap<(Namespace, Bytes), Entry>>,
    incarnation: Vec<u64>,
    scheduled: Vec<Instant>,
    heap: BinaryHeap<Reverse<Ev>>,
    /// Current virtual time.
    pub now: Instant,
    rng: Rng,
    /// The network model in force.
    pub net: NetModel,
    /// Partition group of each node: messages between groups are dropped.
    pub group: Vec<u32>,
    trace: u64,
    seq: u64,
    keys: Keyring,
    cfg: Box<dyn Fn(usize, Keyring) -> Config>,
    /// Store changes since the driver last took them: (node, change).
    pub changes: Vec<(usize, Change)>,
    /// Bytes put on the wire.
    pub bytes_sent: u64,
    /// Messages put on the wire.
    pub messages_sent: u64,
    /// Bootstrap list of each node (used at restart).
    pub bootstrap: Vec<Vec<PeerAddr>>,
    restarts: u64,
    /// Node whose input the last step fed, if any.
    pub last_node: Option<usize>,
}

fn mix(h: u64, x: u64) -> u64 {
    let mut z = (h ^ x).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn hash_bytes(b: &[u8]) -> u64 {
    let mut h = b.len() as u64;
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        h = h.rotate_left(5) ^ u64::from_le_bytes(c.try_into().expect("8 bytes"));
        h = h.wrapping_mul(0x51_7CC1_B727_220A);
    }
    for &x in chunks.remainder() {
        h = (h.rotate_left(5) ^ x as u64).wrapping_mul(0x51_7CC1_B727_220A);
    }
    h
}

impl World {
    /// `n` nodes (not started: call [`World::start`]), network `net`, every
    /// random choice drawn from `seed`. `cfg` builds each node's config.
    pub fn new(n: usize, seed: u64, net: NetModel, cfg: Box<dyn Fn(usize, Keyring) -> Config>) -> World {
        World {
            nodes: (0..n).map(|_| None).collect(),
            persisted: vec![BTreeMap::new(); n],
            incarnation: vec![0; n],
            scheduled: vec![Instant::NEVER; n],
            heap: BinaryHeap::new(),
            now: Instant::ZERO,
            rng: Rng::new(seed),
            net,
            group: vec![0; n],
            trace: seed,
            seq: 0,
            keys: Keyring::new(1, [0x42; 32]),
            cfg,
            changes: Vec::new(),
            bytes_sent: 0,
            messages_sent: 0,
            bootstrap: vec![Vec::new(); n],
            restarts: 0,
            last_node: None,
        }
    }

    /// Both clocks at the current virtual time (all nodes share the wall
    /// clock).
    pub fn clock(&self) -> Now {
        Now { at: self.now, wall_ms: self.wall_ms() }
    }

    /// Wall-clock milliseconds now.
    pub fn wall_ms(&self) -> u64 {
        WALL0_MS + self.now.as_micros() / 1000
    }

    /// Starts (or restarts from its persisted entries) node `i` and joins
    /// it to its bootstrap list.
    pub fn start(&mut self, i: usize) {
        assert!(self.nodes[i].is_none(), "node {i} is already running");
        let cfg = (self.cfg)(i, self.keys.clone());
        let seed = self.rng.next_u64();
        let mut g = Gossip::new(cfg, 1_000_000 + i as u64, self.clock(), seed);
        if self.restarts > 0 || !self.persisted[i].is_empty() || self.incarnation[i] > 0 {
            let saved: Vec<Entry> = self.persisted[i].values().cloned().collect();
            g.restore(saved, self.incarnation[i]);
        }
        self.nodes[i] = Some(g);
        let boot = self.bootstrap[i].clone();
        self.input(i, Input::Command(Command::Join(boot)));
    }

    /// Crashes node `i`: its memory is gone, its persisted entries stay.
    pub fn crash(&mut self, i: usize) {
        self.nodes[i] = None;
        self.scheduled[i] = Instant::NEVER;
        self.restarts += 1;
        self.trace = mix(self.trace, 0xC0DE ^ i as u64);
    }

    /// True if node `i` is running.
    pub fn is_up(&self, i: usize) -> bool {
        self.nodes[i].is_some()
    }

    /// Feeds `input` to node `i` (if up) and carries out its outputs.
    pub fn input(&mut self, i: usize, input: Input) {
        let now = self.clock();
        let Some(g) = self.nodes[i].as_mut() else {
            return;
        };
        self.last_node = Some(i);
        g.handle(now, input);
        loop {
            match g.poll_output() {
                Output::Transmit { to, bytes } => {
                    self.bytes_sent += bytes.len() as u64;
                    self.messages_sent += 1;
                    let Some(j) = index_of(&to).filter(|j| *j < self.scheduled.len()) else {
                        continue;
                    };
                    if self.rng.chance(self.net.loss) {
                        continue;
                    }
                    let copies = if self.rng.chance(self.net.dup) { 2 } else { 1 };
                    let mut payload = Some(bytes);
                    for c in 0..copies {
                        let jitter = if self.net.jitter_us > 0 { self.rng.below(self.net.jitter_us) } else { 0 };
                        let at = self.now.as_micros() + self.net.latency_us + jitter;
                        self.seq += 1;
                        let bytes = if c + 1 == copies {
                            payload.take().expect("last copy")
                        } else {
                            payload.clone().expect("payload")
                        };
                        self.heap.push(Reverse(Ev {
                            at,
                            seq: self.seq,
                            kind: Kind::Deliver { from: i as u32, to: j as u32, bytes },
                        }));
                    }
                }
                Output::Event(Event::Store(c)) => {
                    match &c {
                        Change::Applied(e) => {
                            self.persisted[i].insert((e.ns, e.key.clone()), e.clone());
                        }
                        Change::Removed { ns, key } => {
                            self.persisted[i].remove(&(*ns, key.clone()));
                        }
                    }
                    self.changes.push((i, c));
                }
                Output::Event(_) => {}
                Output::Timeout(t) => {
                    self.incarnation[i] = g.incarnation();
                    if t != self.scheduled[i] {
                        self.scheduled[i] = t;
                        if t != Instant::NEVER {
                            self.seq += 1;
                            self.heap.push(Reverse(Ev {
                                at: t.as_micros().max(self.now.as_micros()),
                                seq: self.seq,
                                kind: Kind::Timer { node: i as u32 },
                            }));
                        }
                    }
                    break;
                }
            }
        }
    }

    /// Processes the next event if it is due at or before `until`; returns
    /// false (and moves the clock to `until`) otherwise.
    pub fn step(&mut self, until: Instant) -> bool {
        let Some(Reverse(ev)) = self.heap.peek() else {
            self.now = self.now.max(until);
            return false;
        };
        if ev.at > until.as_micros() {
            self.now = self.now.max(until);
            return false;
        }
        let Reverse(ev) = self.heap.pop().expect("peeked");
        self.now = Instant::from_micros(ev.at.max(self.now.as_micros()));
        self.last_node = None;
        match ev.kind {
            Kind::Timer { node } => {
                let i = node as usize;
                if self.scheduled[i].as_micros() == ev.at && self.nodes[i].is_some() {
                    self.scheduled[i] = Instant::NEVER;
                    self.trace = mix(self.trace, ev.at ^ ((i as u64) << 40));
                    self.input(i, Input::Timeout);
                }
            }
            Kind::Deliver { from, to, bytes } => {
                let (f, t) = (from as usize, to as usize);
                if self.nodes[t].is_some() && self.group[f] == self.group[t] {
                    self.trace = mix(self.trace, ev.at ^ ((t as u64) << 40) ^ hash_bytes(&bytes).rotate_left(17));
                    self.input(t, Input::Receive { from: addr(f), bytes });
                }
            }
        }
        true
    }

    /// Runs every event up to `until`.
    pub fn run_until(&mut self, until: Instant) {
        while self.step(until) {}
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    /// The trace hash so far: a function of everything delivered and when.
    pub fn trace_hash(&self) -> u64 {
        self.trace
    }

    /// Draws from the world's PRNG (for the drivers' own choices).
    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    /// Default store settings for simulated nodes.
    pub fn store_config(grace_ms: u64) -> StoreConfig {
        StoreConfig { tombstone_grace_ms: grace_ms, ..StoreConfig::default() }
    }
}
