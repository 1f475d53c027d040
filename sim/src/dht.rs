//! `sim dht`: N Mainline DHT nodes (the core's [`Dht`] machine) on one
//! virtual clock and a seeded network with latency, jitter, loss and churn.
//!
//! The run: nodes join one after another, each bootstrapping from a random
//! node already in and from node 0, the well-known router (never churned); after a settle, random nodes announce `--torrents`
//! infohashes (a `get_peers` lookup that announces at its end); then random
//! nodes look those infohashes up (`--lookups`). From the settle on, churn
//! takes random nodes down and brings them back later as new nodes (new id,
//! empty table, bootstrapping again), as real DHT nodes come and go.
//!
//! Reported: hops and messages per lookup (median and 99th percentile)
//! beside log2 N, the share of lookups that found an announced peer, and
//! the bytes each node sent per second over the whole run. The same seed
//! gives the same trace hash.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use rumor_core::bt::metainfo::InfoHash;
use rumor_core::dht::{Command, Config, Dht, Event, Input, LookupStats, NodeId, Output};
use rumor_core::rand::Rng;
use rumor_core::time::{Duration, Instant};

/// What to simulate.
#[derive(Clone, Debug)]
pub struct DhtOpts {
    /// Nodes.
    pub nodes: usize,
    /// Torrents announced.
    pub torrents: usize,
    /// Lookups measured.
    pub lookups: usize,
    /// Datagram loss probability.
    pub loss: f64,
    /// One-way latency, ms (plus up to as much jitter).
    pub latency_ms: u64,
    /// Share of the nodes replaced per minute after the join (0.01: 1%).
    pub churn_per_min: f64,
    /// Seconds over which the nodes join.
    pub join_s: u64,
    /// Seed of every random choice.
    pub seed: u64,
}

impl Default for DhtOpts {
    fn default() -> Self {
        DhtOpts {
            nodes: 1000,
            torrents: 100,
            lookups: 1000,
            loss: 0.01,
            latency_ms: 40,
            churn_per_min: 0.01,
            join_s: 120,
            seed: 1,
        }
    }
}

/// What a run measured.
#[derive(Clone, Debug, Default)]
pub struct DhtReport {
    /// Nodes.
    pub nodes: usize,
    /// Lookups measured (not counting the announcing ones).
    pub lookups: usize,
    /// Of those, lookups that found at least one announced peer.
    pub found: usize,
    /// Hops per measured lookup: median, 99th percentile.
    pub hops_median: u32,
    /// See `hops_median`.
    pub hops_p99: u32,
    /// Queries sent per measured lookup: median, 99th percentile.
    pub messages_median: u32,
    /// See `messages_median`.
    pub messages_p99: u32,
    /// Nodes an announce reached: median.
    pub announced_median: u32,
    /// Announcing lookups that ended.
    pub announces: usize,
    /// Bytes sent per node per second, over the whole run.
    pub bytes_per_node_s: f64,
    /// Datagrams delivered, lost.
    pub delivered: u64,
    /// See `delivered`.
    pub lost: u64,
    /// Nodes taken down (and later replaced) by churn.
    pub churned: u64,
    /// Median routing-table size at the end.
    pub table_median: usize,
    /// Virtual seconds simulated.
    pub virtual_s: f64,
    /// Wall seconds the run took.
    pub wall_s: f64,
    /// Hash of the delivery order, to compare runs of one seed.
    pub trace: u64,
}

impl DhtReport {
    /// log2 of the node count: the hop budget a Kademlia lookup should beat.
    pub fn log2_n(&self) -> f64 {
        (self.nodes as f64).log2()
    }

    /// Share of measured lookups that found an announced peer.
    pub fn found_share(&self) -> f64 {
        self.found as f64 / self.lookups.max(1) as f64
    }

    /// The human report.
    pub fn text(&self) -> String {
        format!(
            "lookups: {} measured, {:.2}% found an announced peer\n\
             hops per lookup: median {}, p99 {} (log2 N = {:.1})\n\
             messages per lookup: median {}, p99 {}\n\
             announces: {} ended, median reached {} nodes\n\
             traffic: {:.1} bytes/node/s; {} datagrams delivered, {} lost; {} nodes churned\n\
             routing table: median {} nodes\n\
             {:.0} virtual s in {:.1} wall s, trace {:016x}",
            self.lookups,
            self.found_share() * 100.0,
            self.hops_median,
            self.hops_p99,
            self.log2_n(),
            self.messages_median,
            self.messages_p99,
            self.announces,
            self.announced_median,
            self.bytes_per_node_s,
            self.delivered,
            self.lost,
            self.churned,
            self.table_median,
            self.virtual_s,
            self.wall_s,
            self.trace
        )
    }

    /// The JSON report.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "nodes": self.nodes,
            "log2_n": self.log2_n(),
            "lookups": self.lookups,
            "found": self.found,
            "found_share": self.found_share(),
            "hops": { "median": self.hops_median, "p99": self.hops_p99 },
            "messages_per_lookup": { "median": self.messages_median, "p99": self.messages_p99 },
            "announces": self.announces,
            "announced_median": self.announced_median,
            "bytes_per_node_s": self.bytes_per_node_s,
            "delivered": self.delivered,
            "lost": self.lost,
            "churned": self.churned,
            "table_median": self.table_median,
            "virtual_s": self.virtual_s,
            "wall_s": self.wall_s,
            "trace": format!("{:016x}", self.trace),
        })
    }
}

/// Node `i`'s address: 10.x.y.z:6881, so the address gives the index back.
fn addr(i: usize) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, (i >> 16) as u8, (i >> 8) as u8, i as u8)), 6881)
}

fn index(a: SocketAddr) -> Option<usize> {
    match a.ip() {
        IpAddr::V4(ip) => {
            let o = ip.octets();
            Some((usize::from(o[1]) << 16) | (usize::from(o[2]) << 8) | usize::from(o[3]))
        }
        IpAddr::V6(_) => None,
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Deliver { to: usize, from: usize, bytes: Vec<u8> },
    Timer { node: usize },
    Join { node: usize },
    Announce { torrent: usize },
    Lookup { n: usize },
    Churn,
}

/// Lookup ids: announces are `ANNOUNCE + torrent`, measured lookups `MEASURE + n`.
const ANNOUNCE: u64 = 1 << 40;
const MEASURE: u64 = 2 << 40;

struct World {
    opts: DhtOpts,
    rng: Rng,
    now: Instant,
    seq: u64,
    queue: BinaryHeap<Reverse<(Instant, u64, Ev)>>,
    nodes: Vec<Option<Dht>>,
    timers: Vec<Instant>,
    /// Nodes that joined and are up: the pool bootstraps and actions draw from.
    up: Vec<usize>,
    bytes_out: u64,
    delivered: u64,
    lost: u64,
    churned: u64,
    trace: u64,
    torrents: Vec<InfoHash>,
    measured: Vec<LookupStats>,
    announced: Vec<LookupStats>,
    node_seeds: u64,
}

impl World {
    fn push(&mut self, at: Instant, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, ev)));
    }

    fn new_node(&mut self, i: usize) {
        let mut id = [0u8; 20];
        self.rng.fill(&mut id);
        self.node_seeds += 1;
        let d = Dht::new(Config::new(NodeId(id)), self.now, self.opts.seed.wrapping_mul(1_000_003) ^ self.node_seeds);
        self.nodes[i] = Some(d);
        // Like a real client: a well-known router (node 0, never churned)
        // and a node met elsewhere (a random node already in).
        let mut boot = Vec::new();
        if !self.up.is_empty() {
            boot.push(addr(self.up[self.rng.index(self.up.len())]));
            if i != 0 && !boot.contains(&addr(0)) {
                boot.push(addr(0));
            }
        }
        self.up.push(i);
        if !boot.is_empty() {
            self.input(i, Input::Command(Command::Bootstrap(boot)));
        } else {
            self.drain(i);
        }
    }

    fn input(&mut self, i: usize, input: Input) {
        if let Some(d) = self.nodes[i].as_mut() {
            d.handle(self.now, input);
            self.drain(i);
        }
    }

    fn drain(&mut self, i: usize) {
        let latency = Duration::from_millis(self.opts.latency_ms);
        loop {
            let Some(d) = self.nodes[i].as_mut() else { return };
            match d.poll_output() {
                Output::Transmit(t) => {
                    self.bytes_out += t.bytes.len() as u64;
                    let Some(to) = index(t.to).filter(|&j| j < self.nodes.len()) else { continue };
                    if self.rng.chance(self.opts.loss) {
                        self.lost += 1;
                        continue;
                    }
                    let jitter = Duration::from_micros(self.rng.below(latency.as_micros().max(1)));
                    let at = self.now + latency + jitter;
                    self.push(at, Ev::Deliver { to, from: i, bytes: t.bytes });
                }
                Output::Event(Event::LookupDone { lookup, stats }) => {
                    if lookup >= MEASURE {
                        self.measured.push(stats);
                    } else if lookup >= ANNOUNCE {
                        self.announced.push(stats);
                    }
                }
                Output::Event(Event::Peers { .. }) => {}
                Output::Timeout(at) => {
                    if at != self.timers[i] {
                        self.timers[i] = at;
                        self.push(at, Ev::Timer { node: i });
                    }
                    return;
                }
            }
        }
    }

    fn random_up(&mut self) -> Option<usize> {
        (!self.up.is_empty()).then(|| self.up[self.rng.index(self.up.len())])
    }

    fn step(&mut self, ev: Ev) {
        match ev {
            Ev::Deliver { to, from, bytes } => {
                if self.nodes[to].is_none() {
                    self.lost += 1;
                    return;
                }
                self.delivered += 1;
                self.trace = (self.trace ^ (to as u64) ^ ((bytes.len() as u64) << 32)).wrapping_mul(0x100_0000_01b3);
                self.input(to, Input::Receive { from: addr(from), bytes });
            }
            Ev::Timer { node } => {
                if self.timers[node] == self.now {
                    self.input(node, Input::Timeout);
                }
            }
            Ev::Join { node } => self.new_node(node),
            Ev::Announce { torrent } => {
                if let Some(i) = self.random_up() {
                    let cmd = Command::GetPeers {
                        lookup: ANNOUNCE + torrent as u64,
                        info_hash: self.torrents[torrent],
                        announce: Some(6881),
                    };
                    self.input(i, Input::Command(cmd));
                }
            }
            Ev::Lookup { n } => {
                if let Some(i) = self.random_up() {
                    let t = self.rng.index(self.torrents.len());
                    let cmd =
                        Command::GetPeers { lookup: MEASURE + n as u64, info_hash: self.torrents[t], announce: None };
                    self.input(i, Input::Command(cmd));
                }
            }
            Ev::Churn => {
                // One node leaves now; a new one takes its address a
                // minute later.
                if self.up.len() > 1 {
                    let k = self.rng.index(self.up.len());
                    if self.up[k] == 0 {
                        return; // the router stays up
                    }
                    let i = self.up.swap_remove(k);
                    self.nodes[i] = None;
                    self.timers[i] = Instant::NEVER;
                    self.churned += 1;
                    self.push(self.now + Duration::from_secs(60), Ev::Join { node: i });
                }
            }
        }
    }
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// Runs one simulation.
pub fn run(opts: &DhtOpts) -> DhtReport {
    let wall = std::time::Instant::now();
    let n = opts.nodes.clamp(2, 1 << 24);
    let mut w = World {
        opts: opts.clone(),
        rng: Rng::new(opts.seed),
        now: Instant::ZERO,
        seq: 0,
        queue: BinaryHeap::new(),
        nodes: (0..n).map(|_| None).collect(),
        timers: vec![Instant::NEVER; n],
        up: Vec::with_capacity(n),
        bytes_out: 0,
        delivered: 0,
        lost: 0,
        churned: 0,
        trace: 0xcbf2_9ce4_8422_2325,
        torrents: Vec::new(),
        measured: Vec::new(),
        announced: Vec::new(),
        node_seeds: 0,
    };
    let join = Duration::from_secs(opts.join_s.max(1));
    for i in 0..n {
        let at = Instant::from_micros(join.as_micros() * i as u64 / n as u64);
        w.push(at, Ev::Join { node: i });
    }
    let settle = Instant::ZERO + join + Duration::from_secs(60);
    for _ in 0..opts.torrents.max(1) {
        let mut ih = [0u8; 20];
        w.rng.fill(&mut ih);
        w.torrents.push(InfoHash(ih));
    }
    let announce_span = Duration::from_secs(30);
    for t in 0..w.torrents.len() {
        let at = settle + Duration::from_micros(announce_span.as_micros() * t as u64 / w.torrents.len() as u64);
        w.push(at, Ev::Announce { torrent: t });
    }
    // Lookups start once every announce has had its 30 s deadline.
    let lookups_at = settle + announce_span + Duration::from_secs(40);
    let lookup_span = Duration::from_secs(60);
    for k in 0..opts.lookups {
        let at = lookups_at + Duration::from_micros(lookup_span.as_micros() * k as u64 / opts.lookups.max(1) as u64);
        w.push(at, Ev::Lookup { n: k });
    }
    let end = lookups_at + lookup_span + Duration::from_secs(40);
    // Churn from the settle on, evenly spread.
    let churn_total =
        (opts.churn_per_min * n as f64 * end.saturating_duration_since(settle).as_secs_f64() / 60.0) as u64;
    for c in 0..churn_total {
        let at =
            settle + Duration::from_micros(end.saturating_duration_since(settle).as_micros() * c / churn_total.max(1));
        w.push(at, Ev::Churn);
    }
    while let Some(Reverse((at, _, ev))) = w.queue.pop() {
        if at > end {
            break;
        }
        w.now = at;
        w.step(ev);
    }
    if std::env::var("DHT_DEBUG").is_ok() {
        let mut rng = Rng::new(1);
        for (t, ih) in w.torrents.iter().enumerate().take(20) {
            let target = NodeId::from(*ih);
            let mut all: Vec<(NodeId, usize, bool)> = w
                .nodes
                .iter()
                .enumerate()
                .filter_map(|(i, d)| {
                    d.as_ref()
                        .map(|d| (d.id().distance(&target), i, !d.store().peers(ih, w.now, 1, &mut rng).is_empty()))
                })
                .collect();
            all.sort();
            let storing: Vec<usize> = all.iter().enumerate().filter(|(_, x)| x.2).map(|(r, _)| r).collect();
            let found = w.measured.iter().filter(|s| s.target == target).map(|s| s.peers > 0).collect::<Vec<_>>();
            let a = w.announced.iter().find(|s| s.target == target);
            eprintln!(
                "torrent {t}: stored at ranks {storing:?}; announce reached {:?}; lookups found {found:?}",
                a.map(|a| a.announced)
            );
            let rank = |id: &NodeId| all.iter().position(|x| x.0 == id.distance(&target));
            if let Some(a) = a {
                let ranks: Vec<Option<usize>> = a.closest.iter().map(|n| rank(&n.id)).collect();
                eprintln!(
                    "  announce: hops {} queries {} responses {} timed_out {} closest ranks {ranks:?}",
                    a.hops, a.queries, a.responses, a.timed_out
                );
            }
            for m in w.measured.iter().filter(|s| s.target == target && s.peers == 0) {
                let ranks: Vec<Option<usize>> = m.closest.iter().map(|n| rank(&n.id)).collect();
                eprintln!(
                    "  failed lookup: hops {} queries {} responses {} timed_out {} closest ranks {ranks:?}",
                    m.hops, m.queries, m.responses, m.timed_out
                );
                for n in m.closest.iter().take(3) {
                    let Some(i) = index(n.addr) else { continue };
                    let Some(d) = w.nodes[i].as_ref() else { continue };
                    let mine = d.id().distance(&target);
                    let closer = d.table().nodes().filter(|x| x.id.distance(&target) < mine).count();
                    let cpb = d.id().common_prefix_bits(&target);
                    let in_bucket: Vec<String> = d
                        .table()
                        .nodes()
                        .filter(|x| d.id().common_prefix_bits(&x.id) == cpb)
                        .map(|x| format!("{}r{:?}f{}", x.id.common_prefix_bits(&target), rank(&x.id), x.fails))
                        .collect();
                    eprintln!("    node {i} id-ok {} rank {:?}: table {} buckets {} cpb(target) {cpb} closer-known {closer} bucket[{cpb}] = {in_bucket:?}", d.id() == n.id, rank(&n.id), d.table().len(), d.table().bucket_count());
                }
            }
        }
    }
    let mut hops: Vec<u32> = w.measured.iter().map(|s| s.hops).collect();
    let mut msgs: Vec<u32> = w.measured.iter().map(|s| s.queries).collect();
    let mut reached: Vec<u32> = w.announced.iter().map(|s| s.announced).collect();
    hops.sort_unstable();
    msgs.sort_unstable();
    reached.sort_unstable();
    let mut tables: Vec<usize> = w.nodes.iter().flatten().map(|d| d.table().len()).collect();
    tables.sort_unstable();
    let virtual_s = end.as_micros() as f64 / 1e6;
    DhtReport {
        nodes: n,
        lookups: w.measured.len(),
        found: w.measured.iter().filter(|s| s.peers > 0).count(),
        hops_median: percentile(&hops, 0.5),
        hops_p99: percentile(&hops, 0.99),
        messages_median: percentile(&msgs, 0.5),
        messages_p99: percentile(&msgs, 0.99),
        announced_median: percentile(&reached, 0.5),
        announces: w.announced.len(),
        bytes_per_node_s: w.bytes_out as f64 / n as f64 / virtual_s,
        delivered: w.delivered,
        lost: w.lost,
        churned: w.churned,
        table_median: tables.get(tables.len() / 2).copied().unwrap_or(0),
        virtual_s,
        wall_s: wall.elapsed().as_secs_f64(),
        trace: w.trace,
    }
}

/// `sim dht` flags.
#[derive(clap::Args, Debug)]
pub struct DhtArgs {
    /// DHT nodes.
    #[arg(long, default_value_t = DhtOpts::default().nodes)]
    pub nodes: usize,
    /// Torrents announced (each by a random node).
    #[arg(long, default_value_t = DhtOpts::default().torrents)]
    pub torrents: usize,
    /// Lookups measured (each by a random node, for a random announced torrent).
    #[arg(long, default_value_t = DhtOpts::default().lookups)]
    pub lookups: usize,
    /// Datagram loss probability, 0..=1.
    #[arg(long, default_value_t = DhtOpts::default().loss)]
    pub loss: f64,
    /// One-way latency, ms (plus up to as much jitter).
    #[arg(long, default_value_t = DhtOpts::default().latency_ms)]
    pub latency_ms: u64,
    /// Share of nodes replaced by new ones per minute after the join, 0..=1.
    #[arg(long, default_value_t = DhtOpts::default().churn_per_min)]
    pub churn: f64,
    /// Seconds over which the nodes join.
    #[arg(long, default_value_t = DhtOpts::default().join_s)]
    pub join_secs: u64,
    /// Seed of every random choice.
    #[arg(long, default_value_t = DhtOpts::default().seed)]
    pub seed: u64,
    /// One JSON document on stdout; the human report on stderr.
    #[arg(long)]
    pub json: bool,
}

/// Runs `sim dht`; fails when fewer than 99% of lookups found a peer or
/// the median hops exceed log2 N.
pub fn cmd(a: &DhtArgs) -> std::process::ExitCode {
    let line = |s: &str| if a.json { eprintln!("{s}") } else { println!("{s}") };
    for (name, x) in [("--loss", a.loss), ("--churn", a.churn)] {
        if !(0.0..=1.0).contains(&x) {
            eprintln!("sim dht: {name} {x}: not a fraction between 0 and 1");
            return std::process::ExitCode::from(2);
        }
    }
    if a.nodes < 2 || a.torrents == 0 || a.lookups == 0 {
        eprintln!("sim dht: --nodes must be at least 2, --torrents and --lookups at least 1");
        return std::process::ExitCode::from(2);
    }
    let o = DhtOpts {
        nodes: a.nodes,
        torrents: a.torrents,
        lookups: a.lookups,
        loss: a.loss,
        latency_ms: a.latency_ms,
        churn_per_min: a.churn,
        join_s: a.join_secs,
        seed: a.seed,
    };
    line(&format!(
        "dht: {} nodes joining over {} s, {} torrents, {} lookups, loss {:.1}%, latency {} ms, churn {:.1}%/min, seed {}",
        o.nodes,
        o.join_s,
        o.torrents,
        o.lookups,
        o.loss * 100.0,
        o.latency_ms,
        o.churn_per_min * 100.0,
        o.seed
    ));
    let r = run(&o);
    for l in r.text().lines() {
        line(l);
    }
    if a.json {
        println!("{}", r.json());
    }
    if r.found_share() >= 0.99 && f64::from(r.hops_median) <= r.log2_n() {
        std::process::ExitCode::SUCCESS
    } else {
        line("FAILED: fewer than 99% of lookups found an announced peer, or the median hops exceed log2 N");
        std::process::ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> DhtOpts {
        DhtOpts { nodes: 200, torrents: 20, lookups: 100, join_s: 20, ..DhtOpts::default() }
    }

    #[test]
    fn the_same_seed_gives_the_same_trace_and_lookups_find_the_announced_peers() {
        let a = run(&small());
        let b = run(&small());
        assert_eq!(a.trace, b.trace, "a run is a function of its seed");
        assert_eq!((a.found, a.hops_median, a.bytes_per_node_s), (b.found, b.hops_median, b.bytes_per_node_s));
        assert!(a.found_share() >= 0.99, "{}", a.text());
        assert!(f64::from(a.hops_median) <= a.log2_n(), "{}", a.text());
        let c = run(&DhtOpts { seed: 2, ..small() });
        assert_ne!(a.trace, c.trace, "another seed, another run");
    }
}
