//! One DHT node: answers queries, keeps its routing table fresh, and runs
//! iterative `find_node` and `get_peers` lookups (announcing at the end of
//! a `get_peers` lookup when asked to).
//!
//! * **Inputs** ([`Dht::handle`]): [`Input::Receive`] for every datagram
//!   that came to the DHT socket, [`Input::Timeout`] when the last
//!   [`Output::Timeout`] is reached (early ones do nothing), and
//!   [`Input::Command`] to bootstrap, ping a node or start a lookup.
//! * **Outputs** ([`Dht::poll_output`]): drain after every input until
//!   [`Output::Timeout`], which always comes last: datagrams to send
//!   ([`Output::Transmit`]), and [`Output::Event`]s: peers a lookup found
//!   (as they come) and the end of each lookup with its figures.
//! * **Getters**: [`Dht::id`], [`Dht::table`], [`Dht::store`],
//!   [`Dht::stats`], [`Dht::lookup_count`].
//!
//! Lookups follow Kademlia: the `k` closest candidates known are asked,
//! at most `alpha` at a time, each answer adding closer ones, until the
//! `k` closest that did not fail have all answered, nothing is left to ask,
//! or the deadline passes. Answers to queries are bounded in size (a few
//! times the query, never more than [`ANSWER_BYTES_MAX`]) and each address
//! may ask only [`Config::queries_per_s`] times a second, so a spoofed
//! flood can neither be amplified nor crowd out other askers.

use core::net::SocketAddr;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use sha1::{Digest, Sha1};

use super::krpc::{self, Body, Message, NodeInfo, Query, Response};
use super::routing::{Heard, RoutingTable};
use super::store::{PeerStore, StoreLimits};
use super::NodeId;
use crate::bt::metainfo::InfoHash;
use crate::rand::Rng;
use crate::time::{Duration, Instant};
use crate::Transmit;

/// The largest answer we send, in bytes: `k` = 8 nodes and a token are
/// about 300; `values` are cut to fit (BEP 5 answers must fit one
/// unfragmented datagram anyway).
pub const ANSWER_BYTES_MAX: usize = 1000;
/// Candidates a lookup remembers (the closest are kept).
pub const LOOKUP_CANDIDATES_MAX: usize = 64;
/// Distinct peers a lookup reports; more are dropped.
pub const LOOKUP_PEERS_MAX: usize = 1024;
/// Bootstrap addresses remembered.
pub const BOOTSTRAP_MAX: usize = 32;
/// How often housekeeping runs (token rotation, bucket refresh, lookup
/// deadlines, expiry).
const TICK: Duration = Duration::from_secs(5);
/// How often the peer store and the rate table are swept.
const SWEEP: Duration = Duration::from_secs(60);
/// A table with fewer than `k` nodes bootstraps again: first after
/// `REBOOTSTRAP_FIRST`, then twice as long each time up to `REBOOTSTRAP_MAX`
/// (a lost first answer must not leave a node alone for long, and a small
/// private network must not be asked again and again).
const REBOOTSTRAP_FIRST: Duration = Duration::from_secs(5);
const REBOOTSTRAP_MAX: Duration = Duration::from_secs(60);
/// After joining, the lookup of our own id is repeated after this long,
/// then twice as long each time up to [`Config::refresh_interval`]: a node
/// that joined a young network learns the neighbours that came after it
/// (and they learn it) well before the 15-minute bucket refresh.
const SELF_REFRESH_FIRST: Duration = Duration::from_secs(30);

/// A lookup's handle, chosen by the caller and echoed in its events.
pub type LookupId = u64;

/// Settings of a node.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Our node id (random, or the one saved from the last run).
    pub id: NodeId,
    /// Bucket size and lookup width (BEP 5: 8).
    pub k: usize,
    /// Queries in flight per lookup (Kademlia: 3).
    pub alpha: usize,
    /// A query unanswered this long has failed.
    pub query_timeout: Duration,
    /// A lookup ends by this long after it started, whatever it found.
    pub lookup_deadline: Duration,
    /// Lookups running at once; a lookup started beyond it ends at once
    /// with [`LookupStats::refused`].
    pub lookups_max: usize,
    /// Queries of ours awaiting an answer, over all lookups and pings;
    /// lookups wait for room.
    pub in_flight_max: usize,
    /// A bucket not changed for this long is refreshed by a lookup (BEP 5: 15 minutes).
    pub refresh_interval: Duration,
    /// The token secret changes this often; a token is accepted under the
    /// current and the previous secret, so for up to twice this (BEP 5: 10 minutes).
    pub token_rotate: Duration,
    /// Bounds of the announced-peer store.
    pub store: StoreLimits,
    /// Queries answered per second from one address (IP and port); the
    /// rest are dropped unanswered.
    pub queries_per_s: u32,
    /// Queries one address may send in a burst.
    pub queries_burst: u32,
    /// Addresses whose query rate is tracked; when full, idle ones are
    /// forgotten and, if none is idle, queries from new addresses are dropped.
    pub rate_addrs_max: usize,
    /// Use IPv6 nodes (BEP 32) instead of IPv4 ones.
    pub ipv6: bool,
    /// Tell others not to add us (BEP 43 `ro`); queries are then not answered.
    pub read_only: bool,
    /// Our client version, sent as `v`.
    pub version: Option<[u8; 4]>,
}

impl Config {
    /// The BEP 5 defaults around `id`.
    pub fn new(id: NodeId) -> Config {
        Config {
            id,
            k: 8,
            alpha: 3,
            query_timeout: Duration::from_secs(3),
            lookup_deadline: Duration::from_secs(30),
            lookups_max: 32,
            in_flight_max: 256,
            refresh_interval: Duration::from_secs(15 * 60),
            token_rotate: Duration::from_secs(5 * 60),
            store: StoreLimits::default(),
            queries_per_s: 20,
            queries_burst: 60,
            rate_addrs_max: 4096,
            ipv6: false,
            read_only: false,
            version: Some(*b"RU01"),
        }
    }
}

/// What a caller asks of the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Join through these addresses (routers, or the nodes saved from the
    /// last run): a lookup of our own id starting from them. They are also
    /// used again whenever the table runs nearly empty.
    Bootstrap(Vec<SocketAddr>),
    /// Ping this address (a peer's `port` message, BEP 5): it joins the
    /// table if it answers.
    Ping(SocketAddr),
    /// Find peers of `info_hash`; with `announce`, announce us at the end
    /// to the closest nodes that gave a token.
    GetPeers {
        /// Echoed in the events.
        lookup: LookupId,
        /// The torrent.
        info_hash: InfoHash,
        /// Our TCP port to announce (`Some(0)`: the DHT socket's port,
        /// `implied_port`), or `None` to only look.
        announce: Option<u16>,
    },
    /// Find the nodes closest to `target`.
    FindNode {
        /// Echoed in the events.
        lookup: LookupId,
        /// The id to approach.
        target: NodeId,
    },
}

/// What the node gives the driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// A datagram came from `from`.
    Receive {
        /// Its source.
        from: SocketAddr,
        /// Its bytes.
        bytes: Vec<u8>,
    },
    /// Time passed.
    Timeout,
    /// Something to do.
    Command(Command),
}

/// The figures of one finished lookup.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LookupStats {
    /// The id looked up (the infohash for `get_peers`).
    pub target: NodeId,
    /// Queries sent.
    pub queries: u32,
    /// Answers received.
    pub responses: u32,
    /// Hops: the depth (1 = a node we already knew) of the first node that
    /// gave peers, or else of the closest node that answered.
    pub hops: u32,
    /// Distinct peers found.
    pub peers: u32,
    /// `announce_peer` queries sent at the end.
    pub announced: u32,
    /// Ended by the deadline.
    pub timed_out: bool,
    /// Not run: [`Config::lookups_max`] lookups were running.
    pub refused: bool,
    /// The closest nodes that answered, nearest first (at most `k`).
    pub closest: Vec<NodeInfo>,
}

/// What the node reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Peers of a `get_peers` lookup, as they come (never repeated).
    Peers {
        /// The lookup.
        lookup: LookupId,
        /// The torrent.
        info_hash: InfoHash,
        /// New peers.
        peers: Vec<SocketAddr>,
    },
    /// A lookup ended.
    LookupDone {
        /// The lookup.
        lookup: LookupId,
        /// Its figures.
        stats: LookupStats,
    },
}

/// What the driver must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send this datagram.
    Transmit(Transmit<SocketAddr>),
    /// Report this.
    Event(Event),
    /// Call [`Dht::handle`] with [`Input::Timeout`] then (or earlier with
    /// another input).
    Timeout(Instant),
}

/// Counters since start, for metrics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DhtStats {
    /// Datagrams received.
    pub datagrams_in: u64,
    /// Their bytes.
    pub bytes_in: u64,
    /// Datagrams sent.
    pub datagrams_out: u64,
    /// Their bytes.
    pub bytes_out: u64,
    /// Datagrams that did not parse.
    pub malformed: u64,
    /// Queries answered (with a response or an error).
    pub queries_answered: u64,
    /// Queries dropped by the per-address rate limit.
    pub rate_limited: u64,
    /// Bytes of the queries we answered.
    pub answered_query_bytes: u64,
    /// Bytes of our answers to them.
    pub answer_bytes: u64,
    /// `announce_peer` queries refused for a bad token.
    pub bad_tokens: u64,
    /// Announces stored.
    pub announces_stored: u64,
    /// Answers that matched no query of ours (late, or spoofed).
    pub unexpected: u64,
    /// Our queries that timed out.
    pub timeouts: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum CandState {
    Fresh,
    Asked,
    Answered { token: Option<Vec<u8>> },
    Failed,
}

#[derive(Clone, Debug)]
struct Cand {
    info: NodeInfo,
    state: CandState,
    hop: u32,
}

#[derive(Clone, Debug)]
enum Kind {
    FindNode,
    GetPeers { info_hash: InfoHash, announce: Option<u16> },
}

#[derive(Clone, Debug)]
struct Lookup {
    target: NodeId,
    kind: Kind,
    /// Started by the machine itself (bootstrap, refresh): no events.
    internal: bool,
    deadline: Instant,
    /// Distance to the target -> candidate.
    cands: BTreeMap<NodeId, Cand>,
    /// Addresses with no known id (bootstrap), asked first.
    seeds: Vec<SocketAddr>,
    in_flight: usize,
    peers: BTreeSet<SocketAddr>,
    stats: LookupStats,
}

#[derive(Clone, Copy, Debug)]
enum Purpose {
    Ping,
    /// A lookup's query; `key` is the candidate's distance (`None` for a seed).
    Lookup {
        lookup: LookupId,
        key: Option<NodeId>,
        hop: u32,
    },
    Announce,
}

#[derive(Clone, Copy, Debug)]
struct Pending {
    to: SocketAddr,
    expect: Option<NodeId>,
    purpose: Purpose,
    deadline: Instant,
}

/// Internal lookups take ids from the top of the range, out of a caller's way.
const INTERNAL_LOOKUP_BASE: LookupId = 1 << 63;

/// One DHT node (see the module docs for how to drive it).
#[derive(Debug)]
pub struct Dht {
    config: Config,
    rng: Rng,
    table: RoutingTable,
    store: PeerStore,
    lookups: BTreeMap<LookupId, Lookup>,
    next_internal: LookupId,
    pending: HashMap<u16, Pending>,
    deadlines: BTreeSet<(Instant, u16)>,
    next_tid: u16,
    secrets: [[u8; 8]; 2],
    next_rotate: Instant,
    next_tick: Instant,
    next_sweep: Instant,
    bootstrap: Vec<SocketAddr>,
    last_bootstrap: Option<Instant>,
    rebootstrap_after: Duration,
    next_self_refresh: Instant,
    self_refresh_every: Duration,
    /// address -> (tokens left, when last refilled)
    rates: HashMap<SocketAddr, (f64, Instant)>,
    /// Addresses that queried us and are being pinged to join the table.
    pinging: HashSet<SocketAddr>,
    out: VecDeque<Output>,
    stats: DhtStats,
}

impl Dht {
    /// A node with an empty table; give it [`Command::Bootstrap`] to join.
    pub fn new(config: Config, now: Instant, seed: u64) -> Dht {
        let mut rng = Rng::new(seed);
        let mut secrets = [[0u8; 8]; 2];
        rng.fill(&mut secrets[0]);
        rng.fill(&mut secrets[1]);
        let table = RoutingTable::new(config.id, config.k, now);
        Dht {
            store: PeerStore::new(config.store),
            next_rotate: now + config.token_rotate,
            config,
            rng,
            table,
            lookups: BTreeMap::new(),
            next_internal: INTERNAL_LOOKUP_BASE,
            pending: HashMap::new(),
            deadlines: BTreeSet::new(),
            next_tid: 0,
            secrets,
            next_tick: now + TICK,
            next_sweep: now + SWEEP,
            bootstrap: Vec::new(),
            last_bootstrap: None,
            rebootstrap_after: REBOOTSTRAP_FIRST,
            next_self_refresh: now + SELF_REFRESH_FIRST,
            self_refresh_every: SELF_REFRESH_FIRST,
            rates: HashMap::new(),
            pinging: HashSet::new(),
            out: VecDeque::new(),
            stats: DhtStats::default(),
        }
    }

    /// Our node id.
    pub fn id(&self) -> NodeId {
        self.config.id
    }

    /// The routing table (to save its nodes for the next run).
    pub fn table(&self) -> &RoutingTable {
        &self.table
    }

    /// The peers announced to us.
    pub fn store(&self) -> &PeerStore {
        &self.store
    }

    /// Counters since start.
    pub fn stats(&self) -> DhtStats {
        self.stats
    }

    /// Lookups running (the caller's and the node's own).
    pub fn lookup_count(&self) -> usize {
        self.lookups.len()
    }

    /// Our queries awaiting an answer.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Addresses whose query rate is being tracked.
    pub fn rate_table_len(&self) -> usize {
        self.rates.len()
    }

    /// The next output; [`Output::Timeout`] when there is nothing else.
    pub fn poll_output(&mut self) -> Output {
        if let Some(o) = self.out.pop_front() {
            return o;
        }
        let mut at = self.next_tick;
        if let Some((d, _)) = self.deadlines.first() {
            at = at.min(*d);
        }
        Output::Timeout(at)
    }

    /// Feeds one input.
    pub fn handle(&mut self, now: Instant, input: Input) {
        match input {
            Input::Receive { from, bytes } => self.receive(now, from, &bytes),
            Input::Timeout => self.timeout(now),
            Input::Command(c) => self.command(now, c),
        }
    }

    fn command(&mut self, now: Instant, c: Command) {
        match c {
            Command::Bootstrap(addrs) => {
                for a in addrs {
                    if self.bootstrap.len() < BOOTSTRAP_MAX && !self.bootstrap.contains(&a) && self.family_ok(a) {
                        self.bootstrap.push(a);
                    }
                }
                self.rebootstrap(now);
            }
            Command::Ping(addr) => {
                if self.family_ok(addr) {
                    let q = Query::Ping { id: self.config.id };
                    self.send_query(now, addr, None, q, Purpose::Ping);
                }
            }
            Command::GetPeers { lookup, info_hash, announce } => {
                self.start_lookup(now, lookup, info_hash.into(), Kind::GetPeers { info_hash, announce }, false)
            }
            Command::FindNode { lookup, target } => self.start_lookup(now, lookup, target, Kind::FindNode, false),
        }
    }

    fn family_ok(&self, a: SocketAddr) -> bool {
        a.is_ipv6() == self.config.ipv6 && a.port() != 0
    }

    fn rebootstrap(&mut self, now: Instant) {
        self.last_bootstrap = Some(now);
        let id = self.next_internal;
        self.next_internal += 1;
        self.start_lookup(now, id, self.config.id, Kind::FindNode, true);
    }

    fn start_lookup(&mut self, now: Instant, id: LookupId, target: NodeId, kind: Kind, internal: bool) {
        let mut stats = LookupStats { target, ..LookupStats::default() };
        if self.lookups.len() >= self.config.lookups_max || self.lookups.contains_key(&id) {
            if !internal {
                stats.refused = true;
                self.out.push_back(Output::Event(Event::LookupDone { lookup: id, stats }));
            }
            return;
        }
        let mut cands = BTreeMap::new();
        for n in self.table.closest(&target, self.config.k * 2, now) {
            cands.insert(n.distance_to(&target), Cand { info: n, state: CandState::Fresh, hop: 1 });
        }
        // The bootstrap addresses seed a lookup when the table is short,
        // and every lookup of our own id (joining, and the self-refresh):
        // a node whose first answers were lost, and the nodes that joined
        // through it meanwhile, would otherwise know only one another and
        // stay an island however large their tables grow.
        let seeds = if cands.len() < self.config.k || (internal && target == self.config.id) {
            self.bootstrap.clone()
        } else {
            Vec::new()
        };
        let l = Lookup {
            target,
            kind,
            internal,
            deadline: now + self.config.lookup_deadline,
            cands,
            seeds,
            in_flight: 0,
            peers: BTreeSet::new(),
            stats,
        };
        self.lookups.insert(id, l);
        self.step(now, id);
    }

    /// Sends what a lookup may send, or ends it.
    fn step(&mut self, now: Instant, id: LookupId) {
        let Some(mut l) = self.lookups.remove(&id) else { return };
        let k = self.config.k;
        // Seeds first: they are how an empty table gets its first nodes.
        while let Some(addr) = l.seeds.pop() {
            if self.pending.len() >= self.config.in_flight_max {
                l.seeds.push(addr);
                break;
            }
            let q = self.lookup_query(&l);
            self.send_query(now, addr, None, q, Purpose::Lookup { lookup: id, key: None, hop: 1 });
            l.in_flight += 1;
            l.stats.queries += 1;
        }
        let mut done = true;
        let mut to_ask = Vec::new();
        let mut budget = self.config.alpha.saturating_sub(l.in_flight);
        for (key, c) in l.cands.iter().filter(|(_, c)| c.state != CandState::Failed).take(k) {
            match c.state {
                CandState::Fresh => {
                    done = false;
                    if budget > 0 && self.pending.len() + to_ask.len() < self.config.in_flight_max {
                        budget -= 1;
                        to_ask.push(*key);
                    }
                }
                CandState::Asked => done = false,
                _ => {}
            }
        }
        for key in to_ask {
            let c = l.cands.get_mut(&key).expect("chosen above");
            c.state = CandState::Asked;
            let (info, hop) = (c.info, c.hop);
            let q = self.lookup_query(&l);
            self.send_query(now, info.addr, Some(info.id), q, Purpose::Lookup { lookup: id, key: Some(key), hop });
            l.in_flight += 1;
            l.stats.queries += 1;
        }
        if l.in_flight > 0 {
            done = false;
        }
        if done || now >= l.deadline {
            l.stats.timed_out = !done;
            self.finish(now, id, l);
        } else {
            self.lookups.insert(id, l);
        }
    }

    fn lookup_query(&self, l: &Lookup) -> Query {
        match l.kind {
            Kind::FindNode => Query::FindNode { id: self.config.id, target: l.target },
            Kind::GetPeers { info_hash, .. } => Query::GetPeers { id: self.config.id, info_hash },
        }
    }

    fn finish(&mut self, now: Instant, id: LookupId, mut l: Lookup) {
        let answered: Vec<&Cand> =
            l.cands.values().filter(|c| matches!(c.state, CandState::Answered { .. })).take(self.config.k).collect();
        l.stats.closest = answered.iter().map(|c| c.info).collect();
        if l.stats.hops == 0 {
            l.stats.hops = answered.first().map_or(0, |c| c.hop);
        }
        if let Kind::GetPeers { info_hash, announce: Some(port) } = l.kind {
            let targets: Vec<(NodeInfo, Vec<u8>)> = answered
                .iter()
                .filter_map(|c| match &c.state {
                    CandState::Answered { token: Some(t) } => Some((c.info, t.clone())),
                    _ => None,
                })
                .collect();
            for (info, token) in targets {
                let q = Query::AnnouncePeer { id: self.config.id, info_hash, port, token, implied_port: port == 0 };
                self.send_query(now, info.addr, Some(info.id), q, Purpose::Announce);
                l.stats.announced += 1;
            }
        }
        l.stats.peers = l.peers.len() as u32;
        if l.internal && l.target == self.config.id {
            // Joined: fill the far buckets too.
            for target in self.table.short_buckets(now, &mut self.rng) {
                if self.lookups.len() >= self.config.lookups_max / 2 {
                    break;
                }
                let id = self.next_internal;
                self.next_internal += 1;
                self.start_lookup(now, id, target, Kind::FindNode, true);
            }
        }
        if !l.internal {
            self.out.push_back(Output::Event(Event::LookupDone { lookup: id, stats: l.stats }));
        }
    }

    fn send_query(&mut self, now: Instant, to: SocketAddr, expect: Option<NodeId>, q: Query, purpose: Purpose) {
        if self.pending.len() >= self.config.in_flight_max {
            return;
        }
        let mut tid = self.next_tid;
        while self.pending.contains_key(&tid) {
            tid = tid.wrapping_add(1);
        }
        self.next_tid = tid.wrapping_add(1);
        let deadline = now + self.config.query_timeout;
        self.pending.insert(tid, Pending { to, expect, purpose, deadline });
        self.deadlines.insert((deadline, tid));
        let msg = Message {
            tid: tid.to_be_bytes().to_vec(),
            body: Body::Query(q),
            read_only: self.config.read_only,
            ip: None,
            version: self.config.version.map(|v| v.to_vec()),
        };
        self.transmit(to, msg.encode());
    }

    fn transmit(&mut self, to: SocketAddr, bytes: Vec<u8>) {
        self.stats.datagrams_out += 1;
        self.stats.bytes_out += bytes.len() as u64;
        self.out.push_back(Output::Transmit(Transmit { to, bytes }));
    }

    fn timeout(&mut self, now: Instant) {
        while let Some(&(d, tid)) = self.deadlines.first() {
            if d > now {
                break;
            }
            self.deadlines.pop_first();
            if let Some(p) = self.pending.remove(&tid) {
                self.stats.timeouts += 1;
                if matches!(p.purpose, Purpose::Ping) {
                    self.pinging.remove(&p.to);
                }
                self.table.failed(p.to, now);
                if let Purpose::Lookup { lookup, key, .. } = p.purpose {
                    if let Some(l) = self.lookups.get_mut(&lookup) {
                        l.in_flight = l.in_flight.saturating_sub(1);
                        if let Some(c) = key.and_then(|k| l.cands.get_mut(&k)) {
                            c.state = CandState::Failed;
                        }
                        self.step(now, lookup);
                    }
                }
            }
        }
        if now >= self.next_tick {
            self.next_tick = now + TICK;
            self.housekeeping(now);
        }
    }

    fn housekeeping(&mut self, now: Instant) {
        if now >= self.next_rotate {
            self.next_rotate = now + self.config.token_rotate;
            self.secrets[1] = self.secrets[0];
            self.rng.fill(&mut self.secrets[0]);
        }
        if now >= self.next_sweep {
            self.next_sweep = now + SWEEP;
            self.store.expire(now);
            self.sweep_rates(now);
        }
        let late: Vec<LookupId> = self.lookups.iter().filter(|(_, l)| now >= l.deadline).map(|(id, _)| *id).collect();
        for id in late {
            self.step(now, id);
        }
        let k = self.config.k;
        if !self.table.is_empty() && now >= self.next_self_refresh && self.lookups.len() < self.config.lookups_max / 2 {
            self.self_refresh_every =
                (self.self_refresh_every + self.self_refresh_every).min(self.config.refresh_interval);
            self.next_self_refresh = now + self.self_refresh_every;
            let id = self.next_internal;
            self.next_internal += 1;
            self.start_lookup(now, id, self.config.id, Kind::FindNode, true);
        }
        if self.table.len() >= k {
            self.rebootstrap_after = REBOOTSTRAP_FIRST;
        } else if !self.bootstrap.is_empty()
            && self.last_bootstrap.is_none_or(|t| now.saturating_duration_since(t) >= self.rebootstrap_after)
        {
            self.rebootstrap_after = (self.rebootstrap_after + self.rebootstrap_after).min(REBOOTSTRAP_MAX);
            self.rebootstrap(now);
        }
        if !self.table.is_empty() {
            for target in self.table.stale_buckets(now, self.config.refresh_interval, &mut self.rng) {
                if self.lookups.len() >= self.config.lookups_max / 2 {
                    break;
                }
                let id = self.next_internal;
                self.next_internal += 1;
                self.start_lookup(now, id, target, Kind::FindNode, true);
            }
        }
    }

    fn sweep_rates(&mut self, now: Instant) {
        let idle = Duration::from_micros(
            (f64::from(self.config.queries_burst) / f64::from(self.config.queries_per_s.max(1)) * 1e6) as u64,
        );
        self.rates.retain(|_, (_, t)| now.saturating_duration_since(*t) < idle);
    }

    /// Takes one query's worth from `from`'s allowance; false if it is spent.
    fn allow(&mut self, now: Instant, from: SocketAddr) -> bool {
        let (rate, burst) = (f64::from(self.config.queries_per_s), f64::from(self.config.queries_burst.max(1)));
        if !self.rates.contains_key(&from) && self.rates.len() >= self.config.rate_addrs_max {
            self.sweep_rates(now);
            if self.rates.len() >= self.config.rate_addrs_max {
                return false;
            }
        }
        let (tokens, last) = self.rates.entry(from).or_insert((burst, now));
        *tokens = (*tokens + now.saturating_duration_since(*last).as_secs_f64() * rate).min(burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn token(&self, secret: usize, from: SocketAddr) -> Vec<u8> {
        let mut h = Sha1::new();
        h.update(self.secrets[secret]);
        match from.ip() {
            core::net::IpAddr::V4(ip) => h.update(ip.octets()),
            core::net::IpAddr::V6(ip) => h.update(ip.octets()),
        }
        h.finalize()[..8].to_vec()
    }

    fn receive(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        self.stats.datagrams_in += 1;
        self.stats.bytes_in += bytes.len() as u64;
        let msg = match Message::parse(bytes) {
            Ok(m) => m,
            Err(_) => {
                self.stats.malformed += 1;
                return;
            }
        };
        match msg.body {
            Body::Query(q) => {
                if self.config.read_only {
                    return;
                }
                if !self.allow(now, from) {
                    self.stats.rate_limited += 1;
                    return;
                }
                let asker = query_id(&q);
                let answer = self.answer(now, from, q, &msg.tid);
                let reply = Message {
                    tid: msg.tid,
                    body: answer,
                    read_only: false,
                    ip: Some(from),
                    version: self.config.version.map(|v| v.to_vec()),
                }
                .encode();
                self.stats.queries_answered += 1;
                self.stats.answered_query_bytes += bytes.len() as u64;
                self.stats.answer_bytes += reply.len() as u64;
                self.transmit(from, reply);
                // A node that asks us may be one our table lacks (the first
                // node of a network is only ever asked): ping it, and it
                // joins when it answers. Read-only nodes (BEP 43) stay out.
                if let Some(id) = asker {
                    if !msg.read_only
                        && self.family_ok(from)
                        && !self.pinging.contains(&from)
                        && self.pinging.len() < self.config.in_flight_max / 4
                        && self.table.wants(&id, now)
                    {
                        self.pinging.insert(from);
                        self.send_query(now, from, Some(id), Query::Ping { id: self.config.id }, Purpose::Ping);
                    }
                }
            }
            Body::Response(r) => self.on_response(now, from, &msg.tid, Some(r), msg.read_only),
            Body::Error { .. } => self.on_response(now, from, &msg.tid, None, msg.read_only),
        }
    }

    fn answer(&mut self, now: Instant, from: SocketAddr, q: Query, tid: &[u8]) -> Body {
        let own = self.config.id;
        let k = self.config.k;
        let respond = |nodes: Vec<NodeInfo>, values: Vec<SocketAddr>, token: Option<Vec<u8>>| {
            Body::Response(Response { id: own, nodes, values, token })
        };
        match q {
            Query::Ping { id } => {
                self.table.heard_query(id, from, now);
                respond(Vec::new(), Vec::new(), None)
            }
            Query::FindNode { id, target } => {
                self.table.heard_query(id, from, now);
                respond(self.table.closest(&target, k, now), Vec::new(), None)
            }
            Query::GetPeers { id, info_hash } => {
                self.table.heard_query(id, from, now);
                let nodes = self.table.closest(&info_hash.into(), k, now);
                let token = self.token(0, from);
                // What the answer holds besides `values`: the nodes, the
                // token, our id and the envelope; `values` get the rest of
                // ANSWER_BYTES_MAX, 8 bytes each.
                let fixed = 120 + tid.len() + nodes.len() * 26 + token.len();
                let room = ANSWER_BYTES_MAX.saturating_sub(fixed) / 8;
                let values = self.store.peers(&info_hash, now, room, &mut self.rng);
                respond(nodes, values, Some(token))
            }
            Query::AnnouncePeer { id, info_hash, port, token, implied_port } => {
                self.table.heard_query(id, from, now);
                if token != self.token(0, from) && token != self.token(1, from) {
                    self.stats.bad_tokens += 1;
                    return Body::Error { code: krpc::code::PROTOCOL, message: "bad token".into() };
                }
                let port = if implied_port { from.port() } else { port };
                if port == 0 {
                    return Body::Error { code: krpc::code::PROTOCOL, message: "bad port".into() };
                }
                if self.store.announce(info_hash, SocketAddr::new(from.ip(), port), now).is_ok() {
                    self.stats.announces_stored += 1;
                }
                respond(Vec::new(), Vec::new(), None)
            }
            Query::Unknown { .. } => Body::Error { code: krpc::code::METHOD_UNKNOWN, message: "method unknown".into() },
        }
    }

    fn on_response(&mut self, now: Instant, from: SocketAddr, tid: &[u8], r: Option<Response>, read_only: bool) {
        let Some(tid) = <[u8; 2]>::try_from(tid).ok().map(u16::from_be_bytes) else {
            self.stats.unexpected += 1;
            return;
        };
        // Only the address we asked may answer (else anyone could inject).
        match self.pending.get(&tid) {
            Some(p) if p.to == from => {}
            _ => {
                self.stats.unexpected += 1;
                return;
            }
        }
        let p = self.pending.remove(&tid).expect("checked above");
        if matches!(p.purpose, Purpose::Ping) {
            self.pinging.remove(&p.to);
        }
        self.deadlines.remove(&(p.deadline, tid));
        // An answer under another id than the one we knew the address by
        // (the host restarted) is still a good answer, from the new id.
        let renamed = matches!((&r, p.expect), (Some(r), Some(want)) if r.id != want);
        let good = r.is_some();
        if let Some(r) = &r {
            if !read_only {
                if let Heard::Cached { ping: Some(n) } = self.table.heard_from(r.id, from, now) {
                    let q = Query::Ping { id: self.config.id };
                    self.send_query(now, n.addr, Some(n.id), q, Purpose::Ping);
                }
            } else if renamed {
                self.table.remove(from);
            }
        }
        let Purpose::Lookup { lookup, key, hop } = p.purpose else { return };
        let Some(mut l) = self.lookups.remove(&lookup) else { return };
        l.in_flight = l.in_flight.saturating_sub(1);
        match r {
            Some(r) if good => {
                l.stats.responses += 1;
                if renamed {
                    // The candidate we asked is gone; the answer is the new id's.
                    if let Some(c) = key.and_then(|k| l.cands.get_mut(&k)) {
                        c.state = CandState::Failed;
                    }
                }
                let key = if renamed { None } else { key };
                let key = key.unwrap_or_else(|| r.id.distance(&l.target));
                let info = NodeInfo { id: r.id, addr: from };
                let state = CandState::Answered { token: r.token.clone() };
                l.cands.insert(key, Cand { info, state, hop });
                for n in r.nodes {
                    if n.id == self.config.id || !self.family_ok(n.addr) {
                        continue;
                    }
                    let d = n.id.distance(&l.target);
                    if l.cands.contains_key(&d) {
                        continue;
                    }
                    if l.cands.len() >= LOOKUP_CANDIDATES_MAX {
                        let far = *l.cands.keys().next_back().expect("full");
                        if far <= d {
                            continue;
                        }
                        l.cands.remove(&far);
                    }
                    l.cands.insert(d, Cand { info: n, state: CandState::Fresh, hop: hop + 1 });
                }
                if let Kind::GetPeers { info_hash, .. } = l.kind {
                    let mut fresh = Vec::new();
                    for v in r.values {
                        if l.peers.len() < LOOKUP_PEERS_MAX && l.peers.insert(v) {
                            fresh.push(v);
                        }
                    }
                    if !fresh.is_empty() {
                        if l.stats.hops == 0 {
                            l.stats.hops = hop;
                        }
                        if !l.internal {
                            let ev = Event::Peers { lookup, info_hash, peers: fresh };
                            self.out.push_back(Output::Event(ev));
                        }
                    }
                }
            }
            _ => {
                if let Some(c) = key.and_then(|k| l.cands.get_mut(&k)) {
                    c.state = CandState::Failed;
                }
            }
        }
        self.lookups.insert(lookup, l);
        self.step(now, lookup);
    }
}

fn query_id(q: &Query) -> Option<NodeId> {
    match q {
        Query::Ping { id }
        | Query::FindNode { id, .. }
        | Query::GetPeers { id, .. }
        | Query::AnnouncePeer { id, .. } => Some(*id),
        Query::Unknown { .. } => None,
    }
}

impl NodeInfo {
    /// XOR distance from this node to `target`.
    pub fn distance_to(&self, target: &NodeId) -> NodeId {
        self.id.distance(target)
    }
}
