//! The peer book: the addresses known for one torrent, and which of them
//! to dial when. Pure bookkeeping, with time passed in and jitter from a
//! seeded [`Rng`]; the download and the metadata fetch use the same book
//! (and the same instance, one after the other: peers learned while
//! fetching the metadata are dialed for the download).
//!
//! * **Learn** addresses with their [`Source`] ([`PeerBook::learn`]).
//! * **Ask what to dial** ([`PeerBook::due`]): idle addresses whose wait is
//!   over, within the connection and dial budgets; they become dialing.
//! * **Report** what happened: [`PeerBook::connected`] (the dial worked),
//!   [`PeerBook::failed`] (it did not), [`PeerBook::ready`] (the handshake
//!   passed: a good peer, its failures are forgiven), [`PeerBook::closed`]
//!   (with a [`Closed`] that decides when to dial it again),
//!   [`PeerBook::ban`] and [`PeerBook::strike`] (misbehaviour).
//! * **Incoming** connections ask [`PeerBook::accept`] first and report
//!   [`PeerBook::incoming_closed`]; their address (an ephemeral port) is
//!   never dialed.
//!
//! One reconnect policy for every case: after `n` failures in a row an
//! address waits `backoff_first x 2^(n-1)`, at most `backoff_max`, plus up
//! to a quarter more at random (so a swarm that lost a peer does not redial
//! it in step). An address that was not given by the user is forgotten
//! after `failures_max` failures in a row; a given one is retried forever.
//! A ban is forever (for this book), per IP and port.
//!
//! Every set is bounded: `known_max` addresses (when full, a newcomer
//! replaces the idle, not given address with the most failures; if none has
//! failed, the newcomer is dropped: those known are as good, and older),
//! `connections_max` connections and dials together, `dials_max` dials,
//! `banned_max` bans (the oldest ban is forgotten first).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use core::net::SocketAddr;

use crate::rand::Rng;
use crate::time::{Duration, Instant};

/// Where an address came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    /// The user gave it (`--peer`, a magnet link's `x.pe`): dialed first,
    /// retried forever, never evicted.
    Given,
    /// A tracker's answer.
    Tracker,
    /// The cluster overlay's providers.
    Overlay,
    /// A peer told us (BEP 11 peer exchange).
    Pex,
    /// A peer announced itself on the local network (BEP 14).
    Lsd,
    /// A peer that dialed us told us its listen port (BEP 10 `p`), and
    /// that connection was lost: we dial it back.
    Incoming,
}

/// How a connection ended, which decides when its address is dialed again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closed {
    /// Its work is done (the metadata came): it may be dialed again at once.
    Finished,
    /// It hung up, went silent, broke off or had no room: a failure, dialed
    /// again after the backoff.
    Transient,
    /// It has nothing for us now (we are both seeds): dialed again only
    /// after [`PeerBookConfig::useless_retry`].
    Useless,
}

/// Why [`PeerBook::accept`] refused an incoming connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The address is banned.
    Banned,
    /// Connections and dials are at [`PeerBookConfig::connections_max`].
    Full,
    /// A connection from this very address and port is already open.
    Duplicate,
}

/// Limits and the reconnect policy of a [`PeerBook`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerBookConfig {
    /// Most addresses remembered.
    pub known_max: usize,
    /// Most connections, counting dials in progress and incoming ones.
    pub connections_max: usize,
    /// Most dials in progress at once.
    pub dials_max: usize,
    /// Most banned addresses remembered; the oldest ban goes first.
    pub banned_max: usize,
    /// Wait after the first failure; it doubles with each further one.
    pub backoff_first: Duration,
    /// Longest wait (before jitter).
    pub backoff_max: Duration,
    /// Failures in a row after which an address not given is forgotten.
    pub failures_max: u32,
    /// Strikes ([`PeerBook::strike`]) that make a ban.
    pub strikes_max: u32,
    /// Wait before dialing again a peer that had nothing for us.
    pub useless_retry: Duration,
}

impl Default for PeerBookConfig {
    /// 2000 addresses, 50 connections, 16 dials, 1000 bans, 1 s doubling
    /// to 30 s, forgotten after 8 failures, banned at 3 strikes, useless
    /// peers again after 30 minutes.
    fn default() -> PeerBookConfig {
        PeerBookConfig {
            known_max: 2000,
            connections_max: 50,
            dials_max: 16,
            banned_max: 1000,
            backoff_first: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            failures_max: 8,
            strikes_max: 3,
            useless_retry: Duration::from_secs(30 * 60),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Idle,
    Dialing,
    Connected,
}

#[derive(Clone, Debug)]
struct Entry {
    source: Source,
    state: State,
    /// Failures in a row (reset by [`PeerBook::ready`]).
    failures: u32,
    /// Strikes towards a ban (never reset).
    strikes: u32,
    /// Not dialed before this.
    retry_at: Instant,
    dialed_once: bool,
}

/// The known peers of one torrent. See the module docs.
#[derive(Clone, Debug)]
pub struct PeerBook {
    config: PeerBookConfig,
    rng: Rng,
    known: BTreeMap<SocketAddr, Entry>,
    /// Open incoming connections (their addresses are not dialable).
    incoming: BTreeSet<SocketAddr>,
    banned: BTreeSet<SocketAddr>,
    /// Bans, oldest first, to forget the oldest when full.
    banned_order: VecDeque<SocketAddr>,
    dialing: usize,
    connected: usize,
    tried: usize,
}

impl PeerBook {
    /// An empty book; `seed` drives the backoff jitter.
    pub fn new(config: PeerBookConfig, seed: u64) -> PeerBook {
        assert!(config.connections_max > 0 && config.dials_max > 0, "a peer book needs room for a connection");
        PeerBook {
            config,
            rng: Rng::new(seed),
            known: BTreeMap::new(),
            incoming: BTreeSet::new(),
            banned: BTreeSet::new(),
            banned_order: VecDeque::new(),
            dialing: 0,
            connected: 0,
            tried: 0,
        }
    }

    // ---- getters ----

    /// The limits and policy.
    pub fn config(&self) -> &PeerBookConfig {
        &self.config
    }

    /// Addresses known (dialable ones; incoming connections not counted).
    pub fn known_len(&self) -> usize {
        self.known.len()
    }

    /// Open connections: dialed ones that came up, and incoming ones.
    pub fn connected_len(&self) -> usize {
        self.connected + self.incoming.len()
    }

    /// Dials in progress.
    pub fn dialing_len(&self) -> usize {
        self.dialing
    }

    /// Distinct addresses dialed at least once.
    pub fn tried(&self) -> usize {
        self.tried
    }

    /// True if `addr` is banned.
    pub fn is_banned(&self, addr: SocketAddr) -> bool {
        self.banned.contains(&addr)
    }

    /// True if `addr` is known (banned ones are not).
    pub fn knows(&self, addr: SocketAddr) -> bool {
        self.known.contains_key(&addr)
    }

    /// When the earliest idle address comes due (`None`: none is waiting);
    /// a driver may sleep until then, or simply ask [`PeerBook::due`] on a
    /// regular tick.
    pub fn next_due(&self) -> Option<Instant> {
        self.known.values().filter(|e| e.state == State::Idle).map(|e| e.retry_at).min()
    }

    /// Checks the counters against the entries and every limit; for tests
    /// and fuzzing.
    pub fn check_invariants(&self) {
        let dialing = self.known.values().filter(|e| e.state == State::Dialing).count();
        let connected = self.known.values().filter(|e| e.state == State::Connected).count();
        assert_eq!(dialing, self.dialing, "dial count disagrees with the entries");
        assert_eq!(connected, self.connected, "connection count disagrees with the entries");
        assert!(self.known.len() <= self.config.known_max, "more addresses than known_max");
        assert!(self.banned.len() <= self.config.banned_max, "more bans than banned_max");
        assert_eq!(self.banned.len(), self.banned_order.len(), "ban order disagrees with the bans");
        assert!(self.dialing <= self.config.dials_max, "more dials than dials_max");
        assert!(
            self.dialing + self.connected + self.incoming.len() <= self.config.connections_max,
            "more connections than connections_max"
        );
        for a in &self.banned {
            assert!(!self.known.contains_key(a), "a banned address is still known");
        }
        for e in self.known.values() {
            assert!(e.source == Source::Given || e.failures < self.config.failures_max, "a failed address kept");
            assert!(e.strikes < self.config.strikes_max, "a struck-out address not banned");
        }
    }

    fn open(&self) -> usize {
        self.dialing + self.connected + self.incoming.len()
    }

    // ---- inputs ----

    /// Learns `addr` from `source`; false if it was refused (banned,
    /// unusable, or the book is full and nothing may be evicted). Learning
    /// an address again does not cut its wait short; learning it as
    /// [`Source::Given`] makes it given.
    pub fn learn(&mut self, addr: SocketAddr, source: Source) -> bool {
        if addr.ip().is_unspecified() || addr.port() == 0 || self.banned.contains(&addr) {
            return false;
        }
        if let Some(e) = self.known.get_mut(&addr) {
            e.source = e.source.min(source);
            return true;
        }
        if self.known.len() >= self.config.known_max && !self.evict_one() {
            return false;
        }
        let e =
            Entry { source, state: State::Idle, failures: 0, strikes: 0, retry_at: Instant::ZERO, dialed_once: false };
        self.known.insert(addr, e);
        true
    }

    /// Drops the idle, not given address with the most failures (ties: the
    /// one waiting longest, then the highest address); false if none has
    /// failed.
    fn evict_one(&mut self) -> bool {
        let victim = self
            .known
            .iter()
            .filter(|(_, e)| e.state == State::Idle && e.source != Source::Given && e.failures > 0)
            .max_by_key(|(a, e)| (e.failures, e.retry_at, **a))
            .map(|(a, _)| *a);
        match victim {
            Some(a) => {
                self.known.remove(&a);
                true
            }
            None => false,
        }
    }

    /// Up to `limit` addresses to dial now, within the budgets; each
    /// becomes dialing until [`PeerBook::connected`] or
    /// [`PeerBook::failed`]. Given addresses first, then the fewest
    /// failures, then address order.
    pub fn due(&mut self, now: Instant, limit: usize) -> Vec<SocketAddr> {
        let room = self.config.connections_max.saturating_sub(self.open());
        let dials = self.config.dials_max.saturating_sub(self.dialing);
        let budget = limit.min(room).min(dials);
        if budget == 0 {
            return Vec::new();
        }
        let mut ready: Vec<(Source, u32, SocketAddr)> = self
            .known
            .iter()
            .filter(|(a, e)| e.state == State::Idle && e.retry_at <= now && !self.incoming.contains(a))
            .map(|(a, e)| (e.source.min(Source::Tracker), e.failures, *a))
            .collect();
        ready.sort();
        ready.truncate(budget);
        let mut out = Vec::with_capacity(ready.len());
        for (_, _, a) in ready {
            let e = self.known.get_mut(&a).expect("listed above");
            e.state = State::Dialing;
            if !e.dialed_once {
                e.dialed_once = true;
                self.tried += 1;
            }
            self.dialing += 1;
            out.push(a);
        }
        out
    }

    /// The dial of `addr` succeeded.
    #[doc(alias = "dialed")]
    pub fn connected(&mut self, addr: SocketAddr) {
        if let Some(e) = self.known.get_mut(&addr) {
            if e.state == State::Dialing {
                e.state = State::Connected;
                self.dialing -= 1;
                self.connected += 1;
            }
        }
    }

    /// The peer at `addr` passed the handshake: its failures are forgiven.
    pub fn ready(&mut self, addr: SocketAddr) {
        if let Some(e) = self.known.get_mut(&addr) {
            e.failures = 0;
        }
    }

    /// The dial of `addr` failed (refused, unreachable, timed out).
    pub fn failed(&mut self, now: Instant, addr: SocketAddr) {
        let Some(e) = self.known.get_mut(&addr) else {
            return;
        };
        if e.state != State::Dialing {
            return;
        }
        e.state = State::Idle;
        self.dialing -= 1;
        self.count_failure(now, addr);
    }

    /// We lost a connection to `addr` that we did not dial (it dialed us,
    /// and told us this is where it listens): a transient failure, so it
    /// is dialed after the backoff. Nothing happens unless it is idle.
    pub fn lost(&mut self, now: Instant, addr: SocketAddr) {
        if self.known.get(&addr).is_some_and(|e| e.state == State::Idle) {
            self.count_failure(now, addr);
        }
    }

    /// The connection we dialed to `addr` closed (or the dial was given up).
    pub fn closed(&mut self, now: Instant, addr: SocketAddr, how: Closed) {
        let Some(e) = self.known.get_mut(&addr) else {
            return;
        };
        match e.state {
            State::Idle => return,
            State::Dialing => self.dialing -= 1,
            State::Connected => self.connected -= 1,
        }
        e.state = State::Idle;
        match how {
            Closed::Finished => e.retry_at = now,
            Closed::Useless => e.retry_at = now + self.config.useless_retry,
            Closed::Transient => self.count_failure(now, addr),
        }
    }

    fn count_failure(&mut self, now: Instant, addr: SocketAddr) {
        let wait = {
            let e = self.known.get_mut(&addr).expect("the caller found it");
            e.failures = e.failures.saturating_add(1);
            if e.source != Source::Given && e.failures >= self.config.failures_max {
                self.known.remove(&addr);
                return;
            }
            e.failures
        };
        let wait = self.backoff(wait);
        self.known.get_mut(&addr).expect("kept above").retry_at = now + wait;
    }

    /// The wait after `failures` failures in a row (1 or more), jitter
    /// included: `backoff_first x 2^(failures-1)`, capped at `backoff_max`,
    /// plus up to a quarter more.
    pub fn backoff(&mut self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(30);
        let base = self.config.backoff_first.saturating_mul(1 << doublings).as_micros();
        let base = base.min(self.config.backoff_max.as_micros());
        let jitter = if base >= 4 { self.rng.below(base / 4 + 1) } else { 0 };
        Duration::from_micros(base + jitter)
    }

    /// An incoming connection from `addr`: take it (it counts against
    /// `connections_max` until [`PeerBook::incoming_closed`]) or refuse it.
    pub fn accept(&mut self, addr: SocketAddr) -> Result<(), Refused> {
        if self.banned.contains(&addr) {
            return Err(Refused::Banned);
        }
        if self.incoming.contains(&addr) {
            return Err(Refused::Duplicate);
        }
        if self.open() >= self.config.connections_max {
            return Err(Refused::Full);
        }
        self.incoming.insert(addr);
        Ok(())
    }

    /// The incoming connection from `addr` closed.
    pub fn incoming_closed(&mut self, addr: SocketAddr) {
        self.incoming.remove(&addr);
    }

    /// Never dial or accept `addr` again (it sent bad data, broke the
    /// protocol, or is ourselves). Close its connection yourself; the book
    /// stops counting it now.
    pub fn ban(&mut self, addr: SocketAddr) {
        if let Some(e) = self.known.remove(&addr) {
            match e.state {
                State::Idle => {}
                State::Dialing => self.dialing -= 1,
                State::Connected => self.connected -= 1,
            }
        }
        self.incoming.remove(&addr);
        if self.banned.insert(addr) {
            self.banned_order.push_back(addr);
            while self.banned_order.len() > self.config.banned_max {
                let old = self.banned_order.pop_front().expect("over the limit, so not empty");
                self.banned.remove(&old);
            }
        }
    }

    /// `addr` was among several peers that together sent bad data: a strike.
    /// At `strikes_max` strikes it is banned; true if it is now.
    pub fn strike(&mut self, addr: SocketAddr) -> bool {
        let Some(e) = self.known.get_mut(&addr) else {
            return self.banned.contains(&addr);
        };
        e.strikes += 1;
        if e.strikes >= self.config.strikes_max {
            self.ban(addr);
            return true;
        }
        false
    }

    /// Every idle address may be dialed at once (after a pause).
    pub fn retry_now(&mut self, now: Instant) {
        for e in self.known.values_mut() {
            if e.state == State::Idle {
                e.retry_at = e.retry_at.min(now);
            }
        }
    }

    /// Forgets every dial and connection (they were all closed, as at a
    /// pause or between the metadata fetch and the download); addresses,
    /// failures and bans stay.
    pub fn all_closed(&mut self, now: Instant) {
        for e in self.known.values_mut() {
            if e.state != State::Idle {
                e.state = State::Idle;
                e.retry_at = e.retry_at.min(now);
            }
        }
        self.incoming.clear();
        self.dialing = 0;
        self.connected = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    fn secs(s: u64) -> Instant {
        Instant::ZERO + Duration::from_secs(s)
    }

    #[test]
    fn a_learned_address_is_due_at_once_and_dialed_once() {
        let mut b = PeerBook::new(PeerBookConfig::default(), 1);
        assert!(b.learn(a(1), Source::Tracker));
        assert_eq!(b.due(secs(0), 10), vec![a(1)]);
        assert!(b.due(secs(0), 10).is_empty(), "a dialing address is not due again");
        b.check_invariants();
    }

    #[test]
    fn failures_back_off_exponentially_with_bounded_jitter() {
        let mut b = PeerBook::new(PeerBookConfig::default(), 7);
        for n in 1..10u32 {
            let w = b.backoff(n).as_micros();
            let base = (1_000_000u64 << (n - 1)).min(30_000_000);
            assert!(w >= base && w <= base + base / 4, "failure {n}: waited {w} us");
        }
    }

    #[test]
    fn a_failed_dial_waits_its_backoff_before_it_is_due_again() {
        let mut b = PeerBook::new(PeerBookConfig::default(), 1);
        b.learn(a(1), Source::Tracker);
        b.due(secs(0), 1);
        b.failed(secs(0), a(1));
        assert!(b.due(Instant::ZERO + Duration::from_millis(900), 1).is_empty());
        assert_eq!(b.due(secs(2), 1), vec![a(1)]);
        b.check_invariants();
    }

    #[test]
    fn an_address_not_given_is_forgotten_after_failures_max_but_a_given_one_is_kept() {
        let mut b = PeerBook::new(PeerBookConfig::default(), 1);
        b.learn(a(1), Source::Tracker);
        b.learn(a(2), Source::Given);
        let mut now = secs(0);
        for _ in 0..20 {
            for addr in b.due(now, 10) {
                b.failed(now, addr);
            }
            now += Duration::from_secs(60);
        }
        assert!(!b.knows(a(1)));
        assert!(b.knows(a(2)));
        b.check_invariants();
    }

    #[test]
    fn a_lost_incoming_peer_is_dialed_back_at_its_listen_port_after_the_backoff() {
        let mut b = PeerBook::new(PeerBookConfig::default(), 1);
        assert!(b.accept(a(9)).is_ok());
        b.incoming_closed(a(9));
        // It told us it listens on a(1): dialed back, not at once.
        assert!(b.learn(a(1), Source::Incoming));
        b.lost(secs(10), a(1));
        assert!(b.due(secs(10), 1).is_empty());
        assert_eq!(b.due(secs(12), 1), vec![a(1)]);
        // Lost again while we are dialing it: not counted twice.
        b.lost(secs(12), a(1));
        b.connected(a(1));
        b.check_invariants();
    }

    #[test]
    fn the_handshake_forgives_failures() {
        let mut b = PeerBook::new(PeerBookConfig::default(), 1);
        b.learn(a(1), Source::Pex);
        for t in 0..5 {
            assert_eq!(b.due(secs(100 * t), 1), vec![a(1)]);
            b.failed(secs(100 * t), a(1));
        }
        b.retry_now(secs(1000));
        b.due(secs(1000), 1);
        b.connected(a(1));
        b.ready(a(1));
        b.closed(secs(1000), a(1), Closed::Transient);
        // One failure since the handshake: about a second, not 16.
        assert_eq!(b.due(secs(1002), 1), vec![a(1)]);
    }

    #[test]
    fn a_finished_peer_is_due_again_at_once_and_a_useless_one_much_later() {
        let mut b = PeerBook::new(PeerBookConfig::default(), 1);
        b.learn(a(1), Source::Overlay);
        b.learn(a(2), Source::Overlay);
        b.due(secs(0), 2);
        b.connected(a(1));
        b.connected(a(2));
        b.closed(secs(5), a(1), Closed::Finished);
        b.closed(secs(5), a(2), Closed::Useless);
        assert_eq!(b.due(secs(5), 2), vec![a(1)]);
        assert!(b.due(secs(600), 2).is_empty());
        assert_eq!(b.due(secs(5 + 1800), 2), vec![a(2)]);
        b.check_invariants();
    }

    #[test]
    fn given_addresses_are_dialed_first() {
        let mut b = PeerBook::new(PeerBookConfig::default(), 1);
        b.learn(a(1), Source::Tracker);
        b.learn(a(9), Source::Given);
        assert_eq!(b.due(secs(0), 1), vec![a(9)]);
    }

    #[test]
    fn dials_and_connections_stay_within_their_budgets() {
        let config = PeerBookConfig { connections_max: 5, dials_max: 3, ..PeerBookConfig::default() };
        let mut b = PeerBook::new(config, 1);
        for p in 1..20 {
            b.learn(a(p), Source::Tracker);
        }
        let first = b.due(secs(0), 100);
        assert_eq!(first.len(), 3);
        for x in &first {
            b.connected(*x);
        }
        assert_eq!(b.due(secs(0), 100).len(), 2, "five connections at most");
        assert_eq!(b.accept(a(1000)), Err(Refused::Full));
        b.check_invariants();
    }

    #[test]
    fn a_banned_address_is_never_learned_dialed_or_accepted_again() {
        let mut b = PeerBook::new(PeerBookConfig::default(), 1);
        b.learn(a(1), Source::Given);
        b.due(secs(0), 1);
        b.connected(a(1));
        b.ban(a(1));
        assert!(!b.learn(a(1), Source::Given));
        assert!(b.due(secs(100), 10).is_empty());
        assert_eq!(b.accept(a(1)), Err(Refused::Banned));
        assert_eq!(b.connected_len(), 0);
        b.check_invariants();
    }

    #[test]
    fn strikes_add_up_to_a_ban() {
        let mut b = PeerBook::new(PeerBookConfig::default(), 1);
        b.learn(a(1), Source::Tracker);
        assert!(!b.strike(a(1)));
        assert!(!b.strike(a(1)));
        assert!(b.strike(a(1)));
        assert!(b.is_banned(a(1)));
    }

    #[test]
    fn a_full_book_replaces_its_most_failed_address_and_otherwise_drops_the_newcomer() {
        let config = PeerBookConfig { known_max: 3, ..PeerBookConfig::default() };
        let mut b = PeerBook::new(config, 1);
        for p in 1..=3 {
            b.learn(a(p), Source::Tracker);
        }
        assert!(!b.learn(a(4), Source::Tracker), "nobody has failed: the newcomer is dropped");
        b.due(secs(0), 1);
        b.failed(secs(0), a(1));
        assert!(b.learn(a(4), Source::Tracker));
        assert!(!b.knows(a(1)));
        b.check_invariants();
    }

    #[test]
    fn the_oldest_ban_is_forgotten_when_the_ban_list_is_full() {
        let config = PeerBookConfig { banned_max: 2, ..PeerBookConfig::default() };
        let mut b = PeerBook::new(config, 1);
        for p in 1..=3 {
            b.ban(a(p));
        }
        assert!(!b.is_banned(a(1)));
        assert!(b.is_banned(a(2)) && b.is_banned(a(3)));
        b.check_invariants();
    }

    #[test]
    fn unusable_addresses_are_refused() {
        let mut b = PeerBook::new(PeerBookConfig::default(), 1);
        assert!(!b.learn("0.0.0.0:1".parse().unwrap(), Source::Pex));
        assert!(!b.learn(a(0), Source::Pex));
    }

    #[test]
    fn after_all_closed_the_peers_are_due_again_with_their_history() {
        let mut b = PeerBook::new(PeerBookConfig::default(), 1);
        b.learn(a(1), Source::Tracker);
        b.due(secs(0), 1);
        b.connected(a(1));
        b.accept(a(2)).unwrap();
        b.all_closed(secs(3));
        assert_eq!(b.connected_len(), 0);
        assert_eq!(b.due(secs(3), 5), vec![a(1)]);
        b.check_invariants();
    }
}
