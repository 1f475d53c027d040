//! The Kademlia routing table of BEP 5: buckets of at most `k` nodes, each
//! covering the ids that share a given number of leading bits with ours.
//!
//! Only the bucket holding our own id is ever split, so the table knows
//! many nodes near us and a few far away: at most 160 buckets of `k`
//! nodes, plus a replacement cache of `k` per bucket. A node is *good* if
//! it answered us within [`GOOD_FOR`], or answered once and queried us
//! within it; *bad* once it failed to answer twice in a row (or once,
//! when it was not good); *questionable* otherwise. A full bucket takes a
//! new node only in place of a bad one; otherwise the newcomer waits in
//! the replacement cache and the caller pings the most stale questionable
//! node, whose failure then lets the newcomer in.
//!
//! Only nodes that answered one of our queries are added: an address that
//! only sends us queries could be spoofed, and the read-only ones (BEP 43)
//! must stay out anyway.

use core::net::SocketAddr;
use std::collections::HashMap;

use super::krpc::NodeInfo;
use super::NodeId;
use crate::time::{Duration, Instant};

/// A node that answered within this long is good (BEP 5: 15 minutes).
pub const GOOD_FOR: Duration = Duration::from_secs(15 * 60);
/// Most buckets: one per bit of the id space.
pub const BUCKETS_MAX: usize = 160;

/// One known node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Node {
    /// Its id.
    pub id: NodeId,
    /// Its address.
    pub addr: SocketAddr,
    /// When it last answered one of our queries.
    pub last_response: Option<Instant>,
    /// When it last sent us a query.
    pub last_query: Option<Instant>,
    /// Queries in a row it failed to answer.
    pub fails: u32,
    /// When we last pinged it to see whether it is still there.
    pub last_ping: Option<Instant>,
}

impl Node {
    fn new(id: NodeId, addr: SocketAddr, now: Instant) -> Node {
        Node { id, addr, last_response: Some(now), last_query: None, fails: 0, last_ping: None }
    }

    /// Answered within [`GOOD_FOR`], or answered once and queried us within it.
    pub fn is_good(&self, now: Instant) -> bool {
        let recent = |t: Option<Instant>| t.is_some_and(|t| now.saturating_duration_since(t) < GOOD_FOR);
        self.fails == 0 && (recent(self.last_response) || (self.last_response.is_some() && recent(self.last_query)))
    }

    /// Failed twice in a row, or failed once without being good.
    pub fn is_bad(&self, now: Instant) -> bool {
        self.fails >= 2 || (self.fails >= 1 && !self.is_good_ignoring_fails(now))
    }

    fn is_good_ignoring_fails(&self, now: Instant) -> bool {
        Node { fails: 0, ..*self }.is_good(now)
    }

    /// The contact to hand out.
    pub fn info(&self) -> NodeInfo {
        NodeInfo { id: self.id, addr: self.addr }
    }
}

#[derive(Clone, Debug)]
struct Bucket {
    nodes: Vec<Node>,
    /// Nodes waiting for a place, most recently seen last.
    replacements: Vec<Node>,
    last_changed: Instant,
}

/// What [`RoutingTable::heard_from`] did with a node that answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Heard {
    /// It is new in the table.
    Added,
    /// It was there; its times are updated.
    Updated,
    /// Its bucket is full of nodes that are not bad: it waits in the
    /// replacement cache. `ping` is the bucket's most stale questionable
    /// node, if one needs asking whether it is still there.
    Cached {
        /// Ping this one; if it fails, the newcomer takes its place.
        ping: Option<NodeInfo>,
    },
    /// Refused: our own id, or an id already in the table at another
    /// address.
    Refused,
}

/// The routing table.
#[derive(Clone, Debug)]
pub struct RoutingTable {
    own: NodeId,
    k: usize,
    buckets: Vec<Bucket>,
    /// Address -> id of every node in `buckets` (not the caches): one
    /// slot per address, so one host cannot fill the table.
    addrs: HashMap<SocketAddr, NodeId>,
}

impl RoutingTable {
    /// An empty table around `own` with buckets of `k` nodes.
    pub fn new(own: NodeId, k: usize, now: Instant) -> RoutingTable {
        let k = k.max(1);
        RoutingTable {
            own,
            k,
            buckets: vec![Bucket { nodes: Vec::new(), replacements: Vec::new(), last_changed: now }],
            addrs: HashMap::new(),
        }
    }

    /// Our own id.
    pub fn own_id(&self) -> NodeId {
        self.own
    }

    /// Nodes in the table (not counting replacement caches).
    pub fn len(&self) -> usize {
        self.addrs.len()
    }

    /// Whether the table holds no node.
    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty()
    }

    /// How many buckets the table has split into.
    pub fn bucket_count(&self) -> usize {
        self.buckets.len()
    }

    fn index(&self, id: &NodeId) -> usize {
        self.own.common_prefix_bits(id).min(self.buckets.len() - 1)
    }

    /// Every node in the table, nearest buckets last.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.buckets.iter().flat_map(|b| b.nodes.iter())
    }

    /// Whether `id` at `addr` is in the table.
    pub fn contains(&self, id: &NodeId, addr: SocketAddr) -> bool {
        self.addrs.get(&addr) == Some(id)
    }

    /// A node answered one of our queries: add it, or refresh it.
    pub fn heard_from(&mut self, id: NodeId, addr: SocketAddr, now: Instant) -> Heard {
        if id == self.own {
            return Heard::Refused;
        }
        match self.addrs.get(&addr).copied() {
            Some(known) if known != id => {
                // The host at this address answered our query under a new
                // id (it restarted): the old id is gone, the new one may
                // take a place. Only an answer from the address we asked
                // gets here, so this cannot be spoofed from elsewhere.
                self.remove(addr);
            }
            Some(_) => {
                let i = self.index(&id);
                let b = &mut self.buckets[i];
                if let Some(n) = b.nodes.iter_mut().find(|n| n.id == id) {
                    n.last_response = Some(now);
                    n.fails = 0;
                    b.last_changed = now;
                }
                return Heard::Updated;
            }
            None => {}
        }
        loop {
            let i = self.index(&id);
            let last = self.buckets.len() - 1;
            let can_split = i == last && self.buckets.len() < BUCKETS_MAX;
            let k = self.k;
            let b = &mut self.buckets[i];
            if b.nodes.iter().any(|n| n.id == id) {
                // The same id at another address: keep the one we know.
                return Heard::Refused;
            }
            if b.nodes.len() < k {
                b.nodes.push(Node::new(id, addr, now));
                b.replacements.retain(|n| n.id != id && n.addr != addr);
                b.last_changed = now;
                self.addrs.insert(addr, id);
                return Heard::Added;
            }
            if let Some(pos) = b.nodes.iter().position(|n| n.is_bad(now)) {
                let old = core::mem::replace(&mut b.nodes[pos], Node::new(id, addr, now));
                b.replacements.retain(|n| n.id != id && n.addr != addr);
                b.last_changed = now;
                self.addrs.remove(&old.addr);
                self.addrs.insert(addr, id);
                return Heard::Added;
            }
            if can_split {
                self.split(now);
                continue;
            }
            b.replacements.retain(|n| n.id != id && n.addr != addr);
            if b.replacements.len() >= k {
                b.replacements.remove(0);
            }
            b.replacements.push(Node::new(id, addr, now));
            let ping = b
                .nodes
                .iter_mut()
                .filter(|n| !n.is_good(now))
                .filter(|n| n.last_ping.is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(60)))
                .min_by_key(|n| n.last_response.max(n.last_query))
                .map(|n| {
                    n.last_ping = Some(now);
                    n.info()
                });
            return Heard::Cached { ping };
        }
    }

    /// Splits the last bucket (the one holding our id) in two.
    fn split(&mut self, now: Instant) {
        let depth = self.buckets.len() - 1;
        let own = self.own;
        let old = self.buckets.last_mut().expect("a table always has a bucket");
        let (near, far): (Vec<Node>, Vec<Node>) =
            old.nodes.drain(..).partition(|n| own.common_prefix_bits(&n.id) > depth);
        let (rnear, rfar): (Vec<Node>, Vec<Node>) =
            old.replacements.drain(..).partition(|n| own.common_prefix_bits(&n.id) > depth);
        old.nodes = far;
        old.replacements = rfar;
        self.buckets.push(Bucket { nodes: near, replacements: rnear, last_changed: now });
    }

    /// Whether `id` would get a place if it answered now: its bucket has
    /// room or a bad node, or may split. Used to ping nodes that query us.
    pub fn wants(&self, id: &NodeId, now: Instant) -> bool {
        if *id == self.own || self.buckets.iter().any(|b| b.nodes.iter().any(|n| n.id == *id)) {
            return false;
        }
        let i = self.index(id);
        let b = &self.buckets[i];
        b.nodes.len() < self.k
            || b.nodes.iter().any(|n| n.is_bad(now))
            || (i == self.buckets.len() - 1 && self.buckets.len() < BUCKETS_MAX)
    }

    /// A node sent us a query (it counts towards its being good).
    pub fn heard_query(&mut self, id: NodeId, addr: SocketAddr, now: Instant) {
        if self.addrs.get(&addr) != Some(&id) {
            return;
        }
        let i = self.index(&id);
        if let Some(n) = self.buckets[i].nodes.iter_mut().find(|n| n.id == id) {
            n.last_query = Some(now);
        }
    }

    /// A query to `addr` went unanswered. A node that is now bad gives
    /// its place to the freshest node of the replacement cache, if any.
    pub fn failed(&mut self, addr: SocketAddr, now: Instant) {
        let Some(id) = self.addrs.get(&addr).copied() else { return };
        let i = self.index(&id);
        let b = &mut self.buckets[i];
        let Some(pos) = b.nodes.iter().position(|n| n.id == id) else { return };
        b.nodes[pos].fails += 1;
        if b.nodes[pos].is_bad(now) {
            if let Some(r) = b.replacements.pop() {
                let old = core::mem::replace(&mut b.nodes[pos], r);
                b.last_changed = now;
                self.addrs.remove(&old.addr);
                self.addrs.insert(r.addr, r.id);
            }
        }
    }

    /// Forgets `addr` (it answered with another id, say).
    pub fn remove(&mut self, addr: SocketAddr) {
        let Some(id) = self.addrs.remove(&addr) else { return };
        let i = self.index(&id);
        self.buckets[i].nodes.retain(|n| n.addr != addr);
    }

    /// Up to `count` nodes that are not bad, closest to `target` first.
    pub fn closest(&self, target: &NodeId, count: usize, now: Instant) -> Vec<NodeInfo> {
        // The closest are in the target's bucket and the buckets nearer
        // our id; farther buckets only fill in when those run short, so
        // walk outwards and stop once enough are collected.
        let start = self.index(target);
        let mut found: Vec<NodeInfo> = Vec::new();
        let take = |b: &Bucket, found: &mut Vec<NodeInfo>| {
            found.extend(b.nodes.iter().filter(|n| !n.is_bad(now)).map(Node::info));
        };
        take(&self.buckets[start], &mut found);
        for b in &self.buckets[start + 1..] {
            take(b, &mut found);
        }
        let mut i = start;
        while found.len() < count && i > 0 {
            i -= 1;
            take(&self.buckets[i], &mut found);
        }
        found.sort_by_key(|n| n.id.distance(target));
        found.truncate(count);
        found
    }

    /// A random id in each bucket that holds fewer than `k` nodes, but
    /// the last (the lookup of our own id has just filled it): looked up
    /// after joining, so far buckets fill too (BEP 5's bucket refresh,
    /// done once at start).
    pub fn short_buckets(&mut self, now: Instant, rng: &mut crate::rand::Rng) -> Vec<NodeId> {
        let last = self.buckets.len() - 1;
        let mut out = Vec::new();
        for (i, b) in self.buckets.iter_mut().enumerate().take(last) {
            if b.nodes.len() < self.k {
                b.last_changed = now;
                out.push(self.own.random_in_bucket(i, rng));
            }
        }
        out
    }

    /// Buckets not changed for `interval`, as (index, random id in its
    /// range) to look up; each is marked changed now so it is not
    /// returned again before another `interval`.
    pub fn stale_buckets(&mut self, now: Instant, interval: Duration, rng: &mut crate::rand::Rng) -> Vec<NodeId> {
        let mut out = Vec::new();
        for (i, b) in self.buckets.iter_mut().enumerate() {
            if now.saturating_duration_since(b.last_changed) >= interval {
                b.last_changed = now;
                out.push(self.own.random_in_bucket(i, rng));
            }
        }
        out
    }
}
