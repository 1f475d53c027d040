//! A few gossip machines on virtual time, wired by a tiny lossless network
//! with a fixed latency, bounded so that a livelock fails.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use bytes::Bytes;
use rumor_core::gossip::{Command, Config, Event, Gossip, Input, Keyring, MemberState, Now, Output, PeerAddr};
use rumor_core::replica::{Change, Entry, Namespace, StoreConfig};
use rumor_core::time::{Duration, Instant};
use rumor_core::Transmit;

const WALL0: u64 = 1_700_000_000_000;
const LATENCY_US: u64 = 2_000;

/// (deliver at µs, sequence, destination, bytes)
type Delivery = Reverse<(u64, u64, usize, Vec<u8>)>;

struct Net {
    nodes: Vec<Option<Gossip>>,
    timers: Vec<Instant>,
    queue: BinaryHeap<Delivery>,
    seq: u64,
    now: Instant,
    cut: BTreeSet<(usize, usize)>,
    persisted: Vec<BTreeMap<(Namespace, Bytes), Entry>>,
    keys: Keyring,
    grace_ms: u64,
}

fn addr(i: usize) -> PeerAddr {
    PeerAddr(format!("n{i}"))
}

fn idx(a: &PeerAddr) -> usize {
    a.0[1..].parse().unwrap()
}

impl Net {
    fn new(n: usize, grace_ms: u64) -> Net {
        let keys = Keyring::new(1, [7; 32]);
        let mut net = Net {
            nodes: Vec::new(),
            timers: vec![Instant::ZERO; n],
            queue: BinaryHeap::new(),
            seq: 0,
            now: Instant::ZERO,
            cut: BTreeSet::new(),
            persisted: vec![BTreeMap::new(); n],
            keys,
            grace_ms,
        };
        for i in 0..n {
            let g = net.make(i, None);
            net.nodes.push(Some(g));
        }
        for i in 0..n {
            net.input(i, Input::Command(Command::Join(vec![addr(0)])));
        }
        net
    }

    fn config(&self, i: usize) -> Config {
        let mut c = Config::new(addr(i), self.keys.clone());
        c.store = StoreConfig { tombstone_grace_ms: self.grace_ms, ..StoreConfig::default() };
        c
    }

    fn make(&self, i: usize, restore: Option<Vec<Entry>>) -> Gossip {
        let mut g =
            Gossip::new(self.config(i), 1000 + i as u64, self.clock(), 42 + i as u64 * 7 + self.now.as_micros());
        if let Some(entries) = restore {
            g.restore(entries, 0);
        }
        g
    }

    fn clock(&self) -> Now {
        Now { at: self.now, wall_ms: WALL0 + self.now.as_micros() / 1000 }
    }

    fn input(&mut self, i: usize, input: Input) {
        let now = self.clock();
        let Some(g) = self.nodes[i].as_mut() else {
            return;
        };
        g.handle(now, input);
        loop {
            match g.poll_output() {
                Output::Transmit(Transmit { to, bytes }) => {
                    let j = idx(&to);
                    if !self.cut.contains(&(i.min(j), i.max(j))) {
                        self.seq += 1;
                        self.queue.push(Reverse((self.now.as_micros() + LATENCY_US, self.seq, j, bytes)));
                    }
                }
                Output::Event(Event::Store(Change::Applied(e))) => {
                    self.persisted[i].insert((e.ns, e.key.clone()), e);
                }
                Output::Event(Event::Store(Change::Removed { ns, key })) => {
                    self.persisted[i].remove(&(ns, key));
                }
                Output::Event(_) => {}
                Output::Timeout(t) => {
                    self.timers[i] = t;
                    break;
                }
            }
        }
    }

    /// Runs for `d` of virtual time.
    fn run(&mut self, d: Duration) {
        let end = self.now + d;
        let mut steps = 0u64;
        loop {
            steps += 1;
            assert!(steps < 50_000_000, "livelock");
            let next_msg = self.queue.peek().map(|Reverse((t, ..))| Instant::from_micros(*t));
            let (ti, tt) = self
                .timers
                .iter()
                .enumerate()
                .filter(|(i, _)| self.nodes[*i].is_some())
                .min_by_key(|(_, t)| **t)
                .map(|(i, t)| (i, *t))
                .unwrap();
            let next = next_msg.map_or(tt, |m| m.min(tt));
            if next > end {
                self.now = end;
                return;
            }
            self.now = next;
            if next_msg == Some(next) {
                let Reverse((_, _, j, bytes)) = self.queue.pop().unwrap();
                self.input(j, Input::Receive { from: addr(0), bytes });
            } else {
                self.input(ti, Input::Timeout);
            }
        }
    }

    fn node(&self, i: usize) -> &Gossip {
        self.nodes[i].as_ref().unwrap()
    }

    fn value(&self, i: usize, key: &[u8]) -> Option<Bytes> {
        let wall = self.clock().wall_ms;
        self.node(i).store().get(Namespace::DNS, key, wall).map(|e| e.value.clone())
    }

    fn write(&mut self, i: usize, key: &'static [u8], value: &'static [u8]) {
        self.input(
            i,
            Input::Command(Command::Write {
                ns: Namespace::DNS,
                key: Bytes::from_static(key),
                value: Bytes::from_static(value),
                expires_ms: 0,
            }),
        );
    }
}

#[test]
fn a_write_on_one_node_reaches_every_node_and_so_does_its_delete() {
    let mut net = Net::new(12, 3_600_000);
    net.run(Duration::from_secs(5));
    net.write(5, b"www", b"1.2.3.4");
    net.run(Duration::from_secs(3));
    for i in 0..12 {
        assert_eq!(net.value(i, b"www").as_deref(), Some(&b"1.2.3.4"[..]), "node {i}");
    }
    net.input(9, Input::Command(Command::Delete { ns: Namespace::DNS, key: Bytes::from_static(b"www") }));
    net.run(Duration::from_secs(3));
    for i in 0..12 {
        assert_eq!(net.value(i, b"www"), None, "node {i}");
    }
}

#[test]
fn nodes_learn_members_beyond_their_bootstrap_list() {
    let mut net = Net::new(10, 3_600_000);
    net.run(Duration::from_secs(20));
    for i in 0..10 {
        let alive = net.node(i).members().filter(|(_, _, s)| *s == MemberState::Alive).count();
        assert_eq!(alive, 9, "node {i} knows {alive} alive members");
    }
}

#[test]
fn a_partition_heals_by_itself_and_writes_on_both_sides_converge() {
    let mut net = Net::new(8, 3_600_000);
    net.run(Duration::from_secs(5));
    for a in 0..4 {
        for b in 4..8 {
            net.cut.insert((a, b));
        }
    }
    net.run(Duration::from_secs(30));
    // Each side now believes the other dead.
    assert!(net.node(0).members().any(|(id, _, s)| id == 1005 && s == MemberState::Dead));
    net.write(1, b"left", b"L");
    net.write(6, b"right", b"R");
    net.run(Duration::from_secs(5));
    assert_eq!(net.value(6, b"left"), None);
    net.cut.clear();
    net.run(Duration::from_secs(30));
    for i in 0..8 {
        assert_eq!(net.value(i, b"left").as_deref(), Some(&b"L"[..]), "node {i}");
        assert_eq!(net.value(i, b"right").as_deref(), Some(&b"R"[..]), "node {i}");
        assert_eq!(net.node(i).live_members(), 7, "node {i}");
    }
}

#[test]
fn a_node_down_longer_than_the_grace_period_catches_up_by_full_transfer_without_resurrection() {
    let mut net = Net::new(6, 10_000);
    net.run(Duration::from_secs(3));
    net.write(1, b"doomed", b"x");
    net.write(1, b"kept", b"y");
    net.run(Duration::from_secs(2));
    assert!(net.value(4, b"doomed").is_some());
    // Node 4 crashes, keeping what it persisted.
    let saved: Vec<Entry> = net.persisted[4].values().cloned().collect();
    net.nodes[4] = None;
    net.input(2, Input::Command(Command::Delete { ns: Namespace::DNS, key: Bytes::from_static(b"doomed") }));
    // Long enough for the tombstone to be collected everywhere.
    net.run(Duration::from_secs(30));
    assert!(net.node(2).store().entries().all(|e| &e.key[..] != b"doomed"));
    let g = net.make(4, Some(saved));
    net.nodes[4] = Some(g);
    net.input(4, Input::Command(Command::Join(vec![addr(0)])));
    net.run(Duration::from_secs(15));
    for i in 0..6 {
        assert_eq!(net.value(i, b"doomed"), None, "node {i} resurrected a delete");
        assert_eq!(net.value(i, b"kept").as_deref(), Some(&b"y"[..]), "node {i}");
    }
    assert!(net.node(4).stats().full_transfers >= 1);
}

#[test]
fn a_message_under_a_wrong_key_is_dropped_and_counted() {
    let mut net = Net::new(2, 3_600_000);
    let mut stranger = Gossip::new(Config::new(addr(1), Keyring::new(1, [8; 32])), 77, net.clock(), 1);
    stranger.handle(net.clock(), Input::Command(Command::Join(vec![addr(0)])));
    let Output::Transmit(Transmit { bytes, .. }) = stranger.poll_output() else {
        panic!("the stranger should send a join")
    };
    net.input(0, Input::Receive { from: addr(1), bytes });
    assert_eq!(net.node(0).stats().dropped_auth, 1);
    assert_eq!(net.node(0).live_members(), 0);
    net.input(0, Input::Receive { from: addr(1), bytes: vec![1, 2, 3] });
    assert_eq!(net.node(0).stats().dropped_format, 1);
}

#[test]
fn an_expired_entry_is_neither_served_nor_sent() {
    let mut net = Net::new(4, 3_600_000);
    net.run(Duration::from_secs(3));
    let wall = net.clock().wall_ms;
    net.input(
        0,
        Input::Command(Command::Write {
            ns: Namespace::DNS,
            key: Bytes::from_static(b"tmp"),
            value: Bytes::from_static(b"v"),
            expires_ms: wall + 2_000,
        }),
    );
    net.run(Duration::from_secs(1));
    assert!(net.value(3, b"tmp").is_some());
    net.run(Duration::from_secs(2));
    for i in 0..4 {
        assert_eq!(net.value(i, b"tmp"), None);
    }
}

#[test]
fn a_crashed_node_is_suspected_then_declared_dead_by_everyone() {
    let mut net = Net::new(6, 3_600_000);
    net.run(Duration::from_secs(5));
    net.nodes[3] = None;
    net.run(Duration::from_secs(20));
    for i in [0, 1, 2, 4, 5] {
        let state = net.node(i).members().find(|(id, _, _)| *id == 1003).map(|(_, _, s)| s);
        assert_eq!(state, Some(MemberState::Dead), "node {i}");
        assert_eq!(net.node(i).live_members(), 4, "node {i}");
    }
}

#[test]
fn a_falsely_suspected_node_refutes_with_a_higher_incarnation() {
    use rumor_core::gossip::{seal, Body, MemberUpdate, Packet};
    let mut net = Net::new(5, 3_600_000);
    net.run(Duration::from_secs(5));
    assert_eq!(net.node(2).incarnation(), 0);
    // A third party (with the cluster key) claims node 2 is suspect.
    let rumour = Packet {
        from: 4242,
        addr: PeerAddr::from("n4242"),
        incarnation: 0,
        complete: true,
        updates: vec![MemberUpdate { id: 1002, addr: addr(2), incarnation: 0, state: MemberState::Suspect }],
        body: Body::Leave,
    };
    let bytes = seal(&net.keys, [1; 24], &rumour, 256);
    net.input(0, Input::Receive { from: addr(9), bytes });
    assert!(net.node(0).members().any(|(id, _, s)| id == 1002 && s == MemberState::Suspect));
    net.run(Duration::from_secs(3));
    assert!(net.node(2).incarnation() >= 1, "node 2 refuted");
    net.run(Duration::from_secs(10));
    for i in [0, 1, 3, 4] {
        assert!(
            net.node(i).members().any(|(id, _, s)| id == 1002 && s == MemberState::Alive),
            "node {i} still doubts node 2"
        );
    }
}

#[test]
fn after_a_whole_cluster_restart_anti_entropy_resumes() {
    let mut net = Net::new(5, 3_600_000);
    net.run(Duration::from_secs(3));
    net.write(1, b"old", b"1");
    net.run(Duration::from_secs(3));
    // Everyone goes down and comes back from disk; one node lost its disk
    // entry for "old" (say it was written just before the crash).
    for i in 0..5 {
        let mut saved: Vec<Entry> = net.persisted[i].values().cloned().collect();
        if i == 3 {
            saved.clear();
        }
        net.nodes[i] = Some(net.make(i, Some(saved)));
    }
    for i in 0..5 {
        net.input(i, Input::Command(Command::Join(vec![addr(0)])));
    }
    net.run(Duration::from_secs(90));
    for i in 0..5 {
        assert_eq!(net.value(i, b"old").as_deref(), Some(&b"1"[..]), "node {i}");
    }
}

#[test]
fn a_key_rotated_in_three_steps_never_stops_the_cluster() {
    let mut net = Net::new(4, 3_600_000);
    net.run(Duration::from_secs(3));
    let old = net.keys.clone();
    let mut both = old.clone();
    both.add(2, [9; 32]).unwrap();
    let mut new_primary = both.clone();
    new_primary.set_primary(2).unwrap();
    let mut only_new = new_primary.clone();
    only_new.remove(1).unwrap();
    for (step, ring) in [both, new_primary, only_new].into_iter().enumerate() {
        // Nodes switch one by one, with traffic in between.
        for i in 0..4 {
            net.input(i, Input::Command(Command::SetKeys(ring.clone())));
            net.run(Duration::from_millis(700));
        }
        let key: &'static [u8] = [b"s0".as_slice(), b"s1", b"s2"][step];
        net.write(step, key, b"v");
        net.run(Duration::from_secs(3));
        for i in 0..4 {
            assert!(net.value(i, key).is_some(), "step {step} node {i}");
            assert_eq!(net.node(i).live_members(), 3, "step {step} node {i}");
        }
    }
    let dropped: u64 = (0..4).map(|i| net.node(i).stats().dropped_auth).sum();
    assert_eq!(dropped, 0, "no message was refused during the rotation");
}
