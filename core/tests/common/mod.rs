//! The core tests' one virtual network: machines of the crate's one shape
//! (`handle(now, input)`, `poll_output()` ending in a timeout, sends as
//! `Transmit { to, bytes }`) wired by a seeded network with latency, jitter,
//! loss and cut links, on virtual time.
//!
//! Shaped after quinn-proto's test `Pair` and str0m's `tests/common.rs`:
//!
//! * [`Net::input`] feeds one node an input and drains its outputs: sends go
//!   in flight (or are lost), events are logged, the timeout arms the node's
//!   one timer.
//! * [`Net::step`] runs the next thing due (a delivery before a timer at the
//!   same instant); [`Net::run_for`] runs everything due within a span of
//!   virtual time; [`Net::drive`] runs until nothing is in flight. Both fail
//!   the test after [`Net::steps_max`] steps, so a livelock cannot hang it.
//! * A test can look at what is in flight ([`Net::in_flight`]) and lose it
//!   ([`Net::lose_in_flight`]), read every event ([`Net::events`]), and
//!   crash and restart nodes ([`Net::crash`], [`Net::restart`]).
//!
//! A machine joins by implementing [`Machine`]: the gossip machine does so
//! here ([`gossip`]); the BitTorrent machines can do the same.
#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::fmt::Debug;

use rumor_core::rand::Rng;
use rumor_core::time::{Duration, Instant};
use rumor_core::Transmit;

/// One output of a machine, in the shared vocabulary.
#[derive(Debug)]
pub enum Out<A, E> {
    /// Send these bytes to `to`.
    Transmit(Transmit<A>),
    /// Something the test may want to know.
    Event(E),
    /// The last output of a drain: call back with a timeout at this instant.
    Timeout(Instant),
}

/// A machine the virtual network can drive.
pub trait Machine {
    /// How nodes address each other.
    type Addr: Clone + Ord + Debug;
    /// The machine's input enum.
    type Input;
    /// The machine's event type.
    type Event: Debug;
    /// Feeds one input at virtual time `now`.
    fn handle(&mut self, now: Instant, input: Self::Input);
    /// The next output; a drain ends with `Out::Timeout`.
    fn poll(&mut self) -> Out<Self::Addr, Self::Event>;
    /// The input for a message `bytes` arriving from `from`.
    fn receive(from: Self::Addr, bytes: Vec<u8>) -> Self::Input;
    /// The input for a timer that fired.
    fn timeout() -> Self::Input;
}

/// How messages travel. Every choice is drawn from the network's seed.
#[derive(Clone, Copy, Debug)]
pub struct Link {
    /// Fixed one-way delay (at least 1 µs is used, so a reply is never
    /// delivered in the same instant as its question).
    pub latency: Duration,
    /// Extra uniform delay in `0..jitter` (it reorders messages).
    pub jitter: Duration,
    /// Probability a message is lost.
    pub loss: f64,
}

impl Link {
    /// A lossless link with a fixed delay.
    pub fn fixed(latency: Duration) -> Link {
        Link { latency, jitter: Duration::ZERO, loss: 0.0 }
    }
}

/// A message in flight.
#[derive(Clone, Debug)]
pub struct Flight<A> {
    /// When it arrives.
    pub at: Instant,
    /// Order among messages arriving at the same instant.
    pub seq: u64,
    /// The sender's index.
    pub from: usize,
    /// Where it goes (a message to an address no node has is dropped on
    /// arrival).
    pub to: A,
    /// The message.
    pub bytes: Vec<u8>,
}

impl<A> PartialEq for Flight<A> {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl<A> Eq for Flight<A> {}
impl<A> PartialOrd for Flight<A> {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl<A> Ord for Flight<A> {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// A message as it was sent (see [`Net::record_sends`]).
#[derive(Clone, Debug)]
pub struct Sent<A> {
    /// When it was sent.
    pub at: Instant,
    /// The sender's index.
    pub from: usize,
    /// Its destination.
    pub to: A,
    /// The message.
    pub bytes: Vec<u8>,
    /// True if the network lost it (loss or a cut link).
    pub lost: bool,
}

struct Node<M: Machine> {
    addr: M::Addr,
    machine: Option<M>,
    /// The deadline from the node's last drain.
    timer: Instant,
}

/// Default bound on the steps of one [`Net::run_for`] or [`Net::drive`].
pub const STEPS_MAX: u64 = 5_000_000;

/// Machines on one virtual clock, wired by one seeded network.
pub struct Net<M: Machine> {
    /// Virtual time now.
    pub now: Instant,
    /// How messages travel (may be changed between steps).
    pub link: Link,
    /// A run or drive taking more steps than this fails the test (livelock).
    pub steps_max: u64,
    nodes: Vec<Node<M>>,
    flights: BinaryHeap<Reverse<Flight<M::Addr>>>,
    seq: u64,
    rng: Rng,
    /// Cut links, as (lower index, higher index): messages between them are
    /// lost.
    cut: BTreeSet<(usize, usize)>,
    events: Vec<(Instant, usize, M::Event)>,
    /// Messages lost (to the link's loss, a cut, or a node that is down or
    /// unknown).
    pub lost: u64,
    /// Every message sent, while recording.
    sent: Option<Vec<Sent<M::Addr>>>,
    /// Messages this returns true for (sender, destination, bytes) are lost
    /// (see [`Net::lose_if`]).
    lose_rule: Option<LoseRule<M::Addr>>,
}

/// A rule that picks messages to lose: (sender, destination, bytes).
pub type LoseRule<A> = Box<dyn Fn(usize, &A, &[u8]) -> bool>;

impl<M: Machine> Net<M> {
    /// An empty network at time zero.
    pub fn new(link: Link, seed: u64) -> Net<M> {
        Net {
            now: Instant::ZERO,
            link,
            steps_max: STEPS_MAX,
            nodes: Vec::new(),
            flights: BinaryHeap::new(),
            seq: 0,
            rng: Rng::new(seed),
            cut: BTreeSet::new(),
            events: Vec::new(),
            lost: 0,
            sent: None,
            lose_rule: None,
        }
    }

    /// Adds a node reached at `addr`; returns its index. Nothing runs until
    /// it gets an input.
    pub fn add(&mut self, addr: M::Addr, machine: M) -> usize {
        self.nodes.push(Node { addr, machine: Some(machine), timer: Instant::NEVER });
        self.nodes.len() - 1
    }

    /// Number of nodes, up or down.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// The index of the node at `addr`.
    pub fn index_of(&self, addr: &M::Addr) -> Option<usize> {
        self.nodes.iter().position(|n| &n.addr == addr)
    }

    /// Node `i`'s address.
    pub fn addr(&self, i: usize) -> M::Addr {
        self.nodes[i].addr.clone()
    }

    /// Node `i`'s machine; panics if it is down.
    pub fn machine(&self, i: usize) -> &M {
        self.nodes[i].machine.as_ref().expect("the node is up")
    }

    /// Node `i`'s machine, to call getters that need `&mut`; feed inputs
    /// through [`Net::input`] so outputs are carried out.
    pub fn machine_mut(&mut self, i: usize) -> &mut M {
        self.nodes[i].machine.as_mut().expect("the node is up")
    }

    /// True if node `i` is up.
    pub fn is_up(&self, i: usize) -> bool {
        self.nodes[i].machine.is_some()
    }

    /// Takes node `i` down: its machine is returned (dropped by most tests),
    /// its timer disarmed; messages to it are lost until it restarts.
    pub fn crash(&mut self, i: usize) -> Option<M> {
        self.nodes[i].timer = Instant::NEVER;
        self.nodes[i].machine.take()
    }

    /// Puts a fresh machine at node `i` (a restart).
    pub fn restart(&mut self, i: usize, machine: M) {
        self.nodes[i].machine = Some(machine);
        self.nodes[i].timer = Instant::NEVER;
    }

    /// Cuts the link between `a` and `b` both ways.
    pub fn cut(&mut self, a: usize, b: usize) {
        self.cut.insert((a.min(b), a.max(b)));
    }

    /// Loses every message sent from now on that `rule` picks (sender,
    /// destination, bytes), until [`Net::lose_none`]: to fail one kind of
    /// message on one path, which loss and cut links cannot do.
    pub fn lose_if(&mut self, rule: impl Fn(usize, &M::Addr, &[u8]) -> bool + 'static) {
        self.lose_rule = Some(Box::new(rule));
    }

    /// Ends [`Net::lose_if`].
    pub fn lose_none(&mut self) {
        self.lose_rule = None;
    }

    /// Heals every cut link.
    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Feeds node `i` one input now and carries out its outputs. A node that
    /// is down ignores it.
    pub fn input(&mut self, i: usize, input: M::Input) {
        let now = self.now;
        let Some(m) = self.nodes[i].machine.as_mut() else {
            return;
        };
        m.handle(now, input);
        let mut polls = 0u64;
        loop {
            polls += 1;
            assert!(polls <= self.steps_max, "node {i}: a drain did not end with a timeout");
            let Some(m) = self.nodes[i].machine.as_mut() else { unreachable!() };
            match m.poll() {
                Out::Transmit(Transmit { to, bytes }) => self.send(i, to, bytes),
                Out::Event(e) => self.events.push((now, i, e)),
                Out::Timeout(at) => {
                    self.nodes[i].timer = at;
                    break;
                }
            }
        }
    }

    fn send(&mut self, from: usize, to: M::Addr, bytes: Vec<u8>) {
        let cut = self.index_of(&to).is_some_and(|j| self.cut.contains(&(from.min(j), from.max(j))));
        let picked = self.lose_rule.as_ref().is_some_and(|r| r(from, &to, &bytes));
        let lost = cut || picked || (self.link.loss > 0.0 && self.rng.chance(self.link.loss));
        if let Some(log) = self.sent.as_mut() {
            log.push(Sent { at: self.now, from, to: to.clone(), bytes: bytes.clone(), lost });
        }
        if lost {
            self.lost += 1;
            return;
        }
        let jitter = match self.link.jitter.as_micros() {
            0 => 0,
            j => self.rng.below(j),
        };
        let at = Instant::from_micros(self.now.as_micros() + self.link.latency.as_micros().max(1) + jitter);
        self.seq += 1;
        self.flights.push(Reverse(Flight { at, seq: self.seq, from, to, bytes }));
    }

    /// With `on`, keeps every message sent from now on (lost or not) for
    /// [`Net::take_sent`]; off drops the log.
    pub fn record_sends(&mut self, on: bool) {
        self.sent = on.then(Vec::new);
    }

    /// The messages sent since recording started or the last take.
    pub fn take_sent(&mut self) -> Vec<Sent<M::Addr>> {
        self.sent.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// What is in flight, soonest first.
    pub fn in_flight(&self) -> Vec<&Flight<M::Addr>> {
        let mut v: Vec<_> = self.flights.iter().map(|Reverse(f)| f).collect();
        v.sort();
        v
    }

    /// Loses everything in flight; returns how much.
    pub fn lose_in_flight(&mut self) -> usize {
        let n = self.flights.len();
        self.lost += n as u64;
        self.flights.clear();
        n
    }

    /// Every event so far: (when, node, event), in the order they came.
    pub fn events(&self) -> &[(Instant, usize, M::Event)] {
        &self.events
    }

    /// Takes the events so far.
    pub fn take_events(&mut self) -> Vec<(Instant, usize, M::Event)> {
        std::mem::take(&mut self.events)
    }

    /// When the next thing is due: a delivery or a live node's timer.
    fn next_due(&self) -> Option<(Instant, Option<usize>)> {
        let msg = self.flights.peek().map(|Reverse(f)| f.at);
        let timer = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.machine.is_some() && n.timer != Instant::NEVER)
            .min_by_key(|(_, n)| n.timer)
            .map(|(i, n)| (n.timer, i));
        match (msg, timer) {
            (None, None) => None,
            // A delivery goes before a timer of the same instant.
            (Some(m), Some((t, _))) if m <= t => Some((m, None)),
            (Some(m), None) => Some((m, None)),
            (_, Some((t, i))) => Some((t, Some(i))),
        }
    }

    /// Runs the next thing due at or before `until`: one delivery or one
    /// timer. Returns false, moving the clock to `until` (unless it is
    /// NEVER), when nothing is due by then.
    pub fn step(&mut self, until: Instant) -> bool {
        let Some((at, timer)) = self.next_due().filter(|(at, _)| *at <= until) else {
            if until != Instant::NEVER {
                self.now = self.now.max(until);
            }
            return false;
        };
        // A deadline already past runs now: time never goes back.
        self.now = self.now.max(at);
        match timer {
            Some(i) => {
                self.nodes[i].timer = Instant::NEVER;
                self.input(i, M::timeout());
            }
            None => {
                let Reverse(f) = self.flights.pop().expect("a delivery is due");
                match self.index_of(&f.to).filter(|j| self.nodes[*j].machine.is_some()) {
                    Some(j) => {
                        let from = self.nodes[f.from].addr.clone();
                        self.input(j, M::receive(from, f.bytes));
                    }
                    None => self.lost += 1,
                }
            }
        }
        true
    }

    /// Runs everything due within `d` of virtual time; the clock ends at
    /// `now + d`. Fails after [`Net::steps_max`] steps.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        let mut steps = 0u64;
        while self.step(end) {
            steps += 1;
            assert!(steps <= self.steps_max, "livelock: more than {} steps in {d:?} of virtual time", self.steps_max);
        }
    }

    /// Runs (timers included) until nothing is in flight. Fails after
    /// [`Net::steps_max`] steps: messages that keep causing messages are a
    /// livelock.
    pub fn drive(&mut self) {
        let mut steps = 0u64;
        while !self.flights.is_empty() {
            self.step(Instant::NEVER);
            steps += 1;
            assert!(steps <= self.steps_max, "livelock: still messages in flight after {} steps", self.steps_max);
        }
    }
}

/// The gossip machine on the virtual network: addresses are `PeerAddr`s,
/// the wall clock is [`gossip::WALL0_MS`] plus virtual time.
pub mod gossip {
    use super::{Machine, Out};
    use rumor_core::gossip::{Event, Gossip, Input, Keyring, Now, Output, PeerAddr};
    use rumor_core::time::Instant;

    /// Wall-clock milliseconds at virtual time zero.
    pub const WALL0_MS: u64 = 1_700_000_000_000;

    /// Both clocks at virtual time `at`.
    pub fn now(at: Instant) -> Now {
        Now { at, wall_ms: WALL0_MS + at.as_micros() / 1000 }
    }

    /// Both clocks `ms` milliseconds after time zero.
    pub fn at_ms(ms: u64) -> Now {
        now(Instant::from_micros(ms * 1000))
    }

    /// The cluster key of the tests.
    pub fn keys() -> Keyring {
        Keyring::new(1, [7; 32])
    }

    /// The address of node `i`: `n{i}`.
    pub fn addr(i: impl std::fmt::Display) -> PeerAddr {
        PeerAddr::from(format!("n{i}"))
    }

    impl Machine for Gossip {
        type Addr = PeerAddr;
        type Input = Input;
        type Event = Event;

        /// Every input is followed by the machine's own invariant check.
        fn handle(&mut self, at: Instant, input: Input) {
            Gossip::handle(self, now(at), input);
            self.check_invariants();
        }

        fn poll(&mut self) -> Out<PeerAddr, Event> {
            match self.poll_output() {
                Output::Transmit(t) => Out::Transmit(t),
                Output::Event(e) => Out::Event(e),
                Output::Timeout(at) => Out::Timeout(at),
            }
        }

        fn receive(from: PeerAddr, bytes: Vec<u8>) -> Input {
            Input::Receive { from, bytes }
        }

        fn timeout() -> Input {
            Input::Timeout
        }
    }
}
