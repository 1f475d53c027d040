//! `sim swarm`: one seeder and N leechers of the very same torrent machines
//! on virtual time, over links with per-peer upload and download capacity,
//! compared with the lower bound on distributing a file of that size
//! (Kumar & Ross 2006): `max(F/u_seed, F/d_min, N*F/(u_seed + sum u_i))`.
//!
//! The network is time-stepped: every `step` each node's upload capacity is
//! shared evenly among its connections that have bytes queued, each
//! receiver's download capacity among its busy incoming links, and a link
//! moves the smaller share; a message is delivered `latency` after its last
//! byte left. Disks are simulated: every block read is zeros and every
//! piece check passes (the machines' own verification is tested in core).

use bytes::Bytes;
use rumor_core::bt::bitfield::Bitfield;
use rumor_core::bt::conn::{CloseReason, PeerInput};
use rumor_core::bt::metainfo::{Limits, Metainfo, TorrentBuilder};
use rumor_core::bt::torrent::{Event, Input, Output, Torrent, TorrentConfig};
use rumor_core::rand::Rng;
use rumor_core::time::{Duration, Instant};
use rumor_core::Transmit;
use std::collections::{BTreeMap, VecDeque};

/// Largest block the machines request; reads are served from this.
static ZEROS: [u8; 16 * 1024] = [0; 16 * 1024];

/// What to simulate.
#[derive(Clone, Debug)]
pub struct SwarmOpts {
    /// Leechers.
    pub peers: usize,
    /// Pieces of the torrent.
    pub pieces: u32,
    /// Piece size, KiB.
    pub piece_kib: u64,
    /// Seed of every random choice.
    pub seed: u64,
    /// Seeder upload capacity, KiB/s.
    pub seed_up_kib: u64,
    /// Leecher upload capacity, KiB/s.
    pub up_kib: u64,
    /// Leecher download capacity, KiB/s.
    pub down_kib: u64,
    /// One-way latency, ms.
    pub latency_ms: u64,
    /// Peers each leecher dials (besides the seeder, which it always dials).
    pub degree: usize,
    /// Simulation step, ms.
    pub step_ms: u64,
}

impl Default for SwarmOpts {
    fn default() -> Self {
        SwarmOpts {
            peers: 20,
            // 64 MiB cut as `rumor create` cuts it
            // (`metainfo::choose_piece_length`: 64 KiB, 1,024 pieces). With
            // 256 KiB pieces a piece takes 2.5 s to cross a leecher's
            // upload slot, and the first hops of a 1,000-leecher swarm
            // left most uploads idle for 12 s.
            pieces: 1024,
            piece_kib: 64,
            seed: 1,
            seed_up_kib: 2048,
            up_kib: 512,
            down_kib: 4096,
            latency_ms: 20,
            degree: 8,
            step_ms: 5,
        }
    }
}

/// What happened.
#[derive(Clone, Debug)]
pub struct SwarmReport {
    /// Leechers.
    pub peers: usize,
    /// File size, bytes.
    pub file_bytes: u64,
    /// Leechers that completed.
    pub completed: usize,
    /// Virtual seconds until the last leecher completed (or the cap).
    pub secs_all: f64,
    /// Median leecher completion, virtual seconds.
    pub secs_median: f64,
    /// The Kumar & Ross lower bound, seconds.
    pub bound_secs: f64,
    /// Bytes the seeder uploaded, over the file size.
    pub seed_uploads_files: f64,
    /// Block bytes the leechers received and could not use (endgame
    /// duplicates, blocks after a cancel), per leecher, over the file size.
    pub wasted_files: f64,
    /// Connections dropped by the machines.
    pub disconnects: u64,
    /// Hash of every event, for determinism checks.
    pub trace_hash: u64,
    /// Wall-clock milliseconds the run took.
    pub wall_ms: u128,
}

struct Link {
    from: usize,
    to: usize,
    /// Messages waiting; the first may be partly sent.
    queue: VecDeque<Vec<u8>>,
    sent_of_head: usize,
    queued_bytes: usize,
    /// False once either end dropped the connection.
    open: bool,
    /// In the busy list.
    busy: bool,
    /// This step: what the receiver's download share allows, bytes.
    cap: f64,
}

struct Node {
    t: Torrent,
    deadline: Instant,
    up_bps: f64,
    down_bps: f64,
    done_at: Option<Instant>,
    local: VecDeque<Input>,
}

fn fnv(h: &mut u64, bytes: &[u8]) {
    for b in bytes {
        *h ^= *b as u64;
        *h = h.wrapping_mul(0x100_0000_01b3);
    }
}

/// Shares `capacity` max-min fairly among `demands`: a demand below an
/// equal share of what is left is met in full and the rest is shared among
/// the others. `shares[i]` is what demand `i` gets.
fn fill(capacity: f64, demands: &mut [f64], shares: &mut Vec<f64>) {
    shares.clear();
    shares.resize(demands.len(), 0.0);
    let mut order: Vec<usize> = (0..demands.len()).collect();
    order.sort_unstable_by(|&x, &y| demands[x].total_cmp(&demands[y]));
    let mut left = capacity.max(0.0);
    for (k, &i) in order.iter().enumerate() {
        let fair = left / (order.len() - k) as f64;
        let got = demands[i].min(fair);
        shares[i] = got;
        left -= got;
    }
}

/// Runs one swarm to completion (or to 20x the bound).
pub fn run(o: &SwarmOpts) -> SwarmReport {
    let started = std::time::Instant::now();
    let piece_len = o.piece_kib * 1024;
    let file_bytes = piece_len * o.pieces as u64;
    let hashes: Vec<[u8; 20]> = (0..o.pieces).map(|i| [(i % 251) as u8; 20]).collect();
    let (_, meta): (_, Metainfo) = TorrentBuilder::single("swarm.bin", file_bytes, piece_len, hashes)
        .build(&Limits::default())
        .expect("a well-formed torrent");
    let mut rng = Rng::new(o.seed);
    let n = o.peers + 1;
    let mut nodes: Vec<Node> = (0..n)
        .map(|i| {
            let have = if i == 0 { Bitfield::full(o.pieces) } else { Bitfield::new(o.pieces) };
            let mut id = [b'-'; 20];
            id[..8].copy_from_slice(&(i as u64).to_be_bytes());
            let mut cfg = TorrentConfig::new(id);
            cfg.peers_max = n.max(50);
            let (up, down) = if i == 0 { (o.seed_up_kib, u64::MAX / 4096) } else { (o.up_kib, o.down_kib) };
            Node {
                t: Torrent::new(cfg, &meta, &have, Instant::ZERO, o.seed.wrapping_mul(1_000_003) + i as u64),
                deadline: Instant::ZERO,
                up_bps: up as f64 * 1024.0,
                down_bps: down as f64 * 1024.0,
                done_at: None,
                local: VecDeque::new(),
            }
        })
        .collect();
    // Topology: every leecher dials the seeder and `degree` random others.
    // Directed links, and each open one's index by (from, to).
    let mut links: Vec<Link> = Vec::new();
    let mut index: BTreeMap<(usize, usize), usize> = BTreeMap::new();
    let mut connect = |a: usize, b: usize, nodes: &mut Vec<Node>| {
        if a == b || index.contains_key(&(a, b)) {
            return;
        }
        for (x, y) in [(a, b), (b, a)] {
            index.insert((x, y), links.len());
            links.push(Link {
                from: x,
                to: y,
                queue: VecDeque::new(),
                sent_of_head: 0,
                queued_bytes: 0,
                open: true,
                busy: false,
                cap: 0.0,
            });
            nodes[x].local.push_back(Input::Peer(PeerInput::Connected { peer: y as u64 }));
        }
    };
    for i in 1..n {
        connect(i, 0, &mut nodes);
        for _ in 0..o.degree.min(o.peers.saturating_sub(1)) {
            let j = 1 + rng.index(o.peers);
            connect(i, j, &mut nodes);
        }
    }
    let step = Duration::from_millis(o.step_ms);
    let latency = Duration::from_millis(o.latency_ms);
    let dt = o.step_ms as f64 / 1000.0;
    let bound = {
        let f = file_bytes as f64;
        let us = o.seed_up_kib as f64 * 1024.0;
        let sum_u: f64 = o.up_kib as f64 * 1024.0 * o.peers as f64;
        let dmin = o.down_kib as f64 * 1024.0;
        (f / us).max(f / dmin).max(o.peers as f64 * f / (us + sum_u))
    };
    let cap = Instant::ZERO + Duration::from_micros((bound * 20.0 * 1e6) as u64 + 60_000_000);
    // In flight: (deliver at, to, from, bytes), in order (latency is fixed).
    let mut wire: VecDeque<(Instant, usize, usize, Bytes)> = VecDeque::new();
    let mut now = Instant::ZERO;
    let mut trace = 0xcbf2_9ce4_8422_2325u64;
    let mut disconnects = 0u64;
    let mut seed_uploaded = 0u64;
    let mut leech_uploaded = 0u64;
    // Links with bytes queued, and the step's scratch space.
    let mut busy: Vec<usize> = Vec::new();
    let mut in_demand = vec![0.0f64; n];
    let mut per_node: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut saturated: Vec<usize> = Vec::new();
    let mut demands: Vec<f64> = Vec::new();
    let mut shares: Vec<f64> = Vec::new();
    let debug = std::env::var_os("SIM_DEBUG").is_some();
    let mut early_mark = 0u64;
    // The seeder's block reads, and those of a block it had read before:
    // where the seeder's upload is the bound, each of those costs time.
    let (mut seed_reads, mut seed_read, mut seed_reread_at) = (0u64, std::collections::BTreeSet::new(), Vec::new());
    let mut seed_all_at: Option<Instant> = None;
    loop {
        // Deliver what has arrived.
        while wire.front().is_some_and(|w| w.0 <= now) {
            let (_, to, from, bytes) = wire.pop_front().expect("checked");
            if index.contains_key(&(to, from)) {
                nodes[to].t.handle(now, Input::Peer(PeerInput::Bytes { peer: from as u64, bytes }));
            }
        }
        // Local inputs, timers, then drain every machine.
        for i in 0..n {
            loop {
                while let Some(input) = nodes[i].local.pop_front() {
                    nodes[i].t.handle(now, input);
                }
                if nodes[i].deadline <= now {
                    nodes[i].t.handle(now, Input::Timeout);
                }
                let mut produced_local = false;
                loop {
                    match nodes[i].t.poll_output() {
                        Output::Transmit(Transmit { to: peer, bytes: payload }) => {
                            if let Some(&id) = index.get(&(i, peer as usize)) {
                                let l = &mut links[id];
                                l.queued_bytes += payload.len();
                                l.queue.push_back(payload);
                                if !l.busy {
                                    l.busy = true;
                                    busy.push(id);
                                }
                            }
                        }
                        Output::WriteBlock { .. } => {}
                        Output::ReadBlock { peer, block } => {
                            if debug && i == 0 {
                                seed_reads += 1;
                                if !seed_read.insert((block.index, block.begin)) {
                                    seed_reread_at.push((now.as_micros() / 1_000_000) as u32);
                                } else if seed_read.len() as u64 == file_bytes.div_ceil(ZEROS.len() as u64) {
                                    seed_all_at = Some(now);
                                }
                            }
                            let len = (block.length as usize).min(ZEROS.len());
                            let data = Bytes::from_static(&ZEROS[..len]);
                            nodes[i].local.push_back(Input::BlockRead { peer, block, data });
                            produced_local = true;
                        }
                        Output::HashPiece { piece, .. } => {
                            nodes[i].local.push_back(Input::PieceChecked { piece, ok: true });
                            produced_local = true;
                        }
                        Output::Disconnect { peer, reason } => {
                            let p = peer as usize;
                            disconnects += 1;
                            if debug {
                                eprintln!("t={:.3}s {i} drops {p}: {reason:?}", now.as_micros() as f64 / 1e6);
                            }
                            fnv(&mut trace, format!("x{i}-{p}").as_bytes());
                            if let Some(id) = index.remove(&(i, p)) {
                                links[id].open = false;
                            }
                            if let Some(id) = index.remove(&(p, i)) {
                                links[id].open = false;
                                nodes[p].local.push_back(Input::Peer(PeerInput::Closed {
                                    peer: i as u64,
                                    reason: CloseReason::Hangup,
                                }));
                            }
                        }
                        Output::Event(Event::Completed) => {
                            if nodes[i].done_at.is_none() {
                                nodes[i].done_at = Some(now);
                                fnv(&mut trace, format!("c{i}@{}", now.as_micros()).as_bytes());
                            }
                        }
                        Output::Event(_) => {}
                        Output::Timeout(at) => {
                            nodes[i].deadline = at;
                            break;
                        }
                    }
                }
                if !produced_local {
                    break;
                }
            }
        }
        let all_done = nodes[1..].iter().all(|nd| nd.done_at.is_some());
        if all_done || now >= cap {
            break;
        }
        // Share capacities for this step, max-min fair (what TCP flows
        // sharing a bottleneck approach): a link with less queued than an
        // equal share takes only what it has, and the rest goes to the
        // other links. An equal split that wasted the remainder lost a
        // leecher's upload to every link carrying a HAVE or a request.
        now += step;
        busy.retain(|&id| {
            let l = &mut links[id];
            l.busy = l.open && l.queued_bytes > 0;
            l.busy
        });
        // Each receiver's download capacity over its busy incoming links
        // (shared only where the demand exceeds it).
        for &id in &busy {
            let l = &mut links[id];
            l.cap = f64::INFINITY;
            in_demand[l.to] += l.queued_bytes as f64;
        }
        for &id in &busy {
            let b = links[id].to;
            if in_demand[b] > nodes[b].down_bps * dt {
                if per_node[b].is_empty() {
                    saturated.push(b);
                }
                per_node[b].push(id);
            }
        }
        for &id in &busy {
            in_demand[links[id].to] = 0.0;
        }
        for &b in &saturated {
            demands.clear();
            demands.extend(per_node[b].iter().map(|&id| links[id].queued_bytes as f64));
            fill(nodes[b].down_bps * dt, &mut demands, &mut shares);
            for (&id, &c) in per_node[b].iter().zip(&shares) {
                links[id].cap = c;
            }
            per_node[b].clear();
        }
        saturated.clear();
        // Each sender's upload capacity over its busy outgoing links, each
        // wanting what it has queued up to what its receiver allows.
        for &id in &busy {
            per_node[links[id].from].push(id);
        }
        for a in 0..n {
            if per_node[a].is_empty() {
                continue;
            }
            demands.clear();
            demands.extend(per_node[a].iter().map(|&id| (links[id].queued_bytes as f64).min(links[id].cap)));
            let up = nodes[a].up_bps * dt;
            if demands.iter().sum::<f64>() <= up {
                shares.clear();
                shares.extend_from_slice(&demands);
            } else {
                fill(up, &mut demands, &mut shares);
            }
            for (&id, &share) in per_node[a].iter().zip(&shares) {
                let l = &mut links[id];
                let b = l.to;
                let mut budget = share as usize;
                if a == 0 {
                    seed_uploaded += budget.min(l.queued_bytes) as u64;
                } else {
                    leech_uploaded += budget.min(l.queued_bytes) as u64;
                }
                while budget > 0 {
                    let Some(head) = l.queue.front() else { break };
                    let left = head.len() - l.sent_of_head;
                    if left <= budget {
                        budget -= left;
                        l.queued_bytes -= left;
                        l.sent_of_head = 0;
                        let msg = l.queue.pop_front().expect("checked");
                        wire.push_back((now + latency, b, a, Bytes::from(msg)));
                    } else {
                        l.sent_of_head += budget;
                        l.queued_bytes -= budget;
                        budget = 0;
                    }
                }
            }
            per_node[a].clear();
        }
        if debug && now.as_micros() <= 20_000_000 && now.as_micros().is_multiple_of(1_000_000) {
            // The start, second by second: how fast the pieces spread.
            let secs = now.as_micros() as f64 / 1e6;
            let holding = nodes[1..].iter().filter(|nd| nd.t.have().count() > 0).count();
            eprintln!(
                "t={secs:.0}s last second: leechers' upload {:.1}% of capacity, {holding} leechers hold a piece, {} busy links",
                100.0 * (leech_uploaded - early_mark) as f64 / (o.up_kib as f64 * 1024.0 * o.peers as f64),
                busy.len()
            );
            early_mark = leech_uploaded;
            let (mut unchoked, mut unchoked_int, mut want, mut can, mut reqs, mut snub) = (0, 0, 0, 0, 0, 0);
            for nd in &nodes[1..] {
                for p in nd.t.peers() {
                    unchoked += usize::from(!p.am_choking);
                    unchoked_int += usize::from(!p.am_choking && p.peer_interested);
                    want += usize::from(p.am_interested);
                    can += usize::from(p.am_interested && !p.peer_choking);
                    reqs += p.requests_in_flight;
                    snub += usize::from(p.snubbed);
                }
            }
            eprintln!(
                "  we unchoke {unchoked} ({unchoked_int} interested); we want {want}, may ask {can}; {reqs} requests out; {snub} snubbed"
            );
        }
        if debug && now.as_micros().is_multiple_of(10_000_000) {
            let secs = now.as_micros() as f64 / 1e6;
            let done = nodes[1..].iter().filter(|nd| nd.done_at.is_some()).count();
            eprintln!(
                "t={secs:.0}s leechers' upload {:.1}% of capacity so far, seeder {:.1}%, {done} done, {} busy links",
                100.0 * leech_uploaded as f64 / (o.up_kib as f64 * 1024.0 * o.peers as f64 * secs),
                100.0 * seed_uploaded as f64 / (o.seed_up_kib as f64 * 1024.0 * secs),
                busy.len()
            );
            // Where the leechers stand, and what the one furthest behind
            // gets: the end of a swarm is as late as its laggard.
            let mut have: Vec<(u32, usize)> =
                nodes[1..].iter().enumerate().map(|(k, nd)| (nd.t.have().count(), k + 1)).collect();
            have.sort_unstable();
            let pct = |q: usize| have[(have.len() - 1) * q / 100].0;
            let (least, who) = have[0];
            let peers = nodes[who].t.peers();
            let unchoking = peers.iter().filter(|p| !p.peer_choking).count();
            let seeds = peers.iter().filter(|p| p.seed).count();
            let rate: u64 = peers.iter().map(|p| p.download_rate).sum();
            eprintln!(
                "  pieces held: min {least} p10 {} p50 {} p90 {}; laggard {who}: {} peers ({seeds} seeds), \
                 {unchoking} unchoking it, {} KiB/s down",
                pct(10),
                pct(50),
                pct(90),
                peers.len(),
                rate / 1024
            );
        }
    }
    if debug {
        let mut per10 = BTreeMap::new();
        for s in &seed_reread_at {
            *per10.entry(s / 10 * 10).or_insert(0u32) += 1;
        }
        eprintln!(
            "seeder: {seed_reads} blocks read, {} of them again; again by 10 s: {per10:?}; every block out once by {:?} s",
            seed_reread_at.len(),
            seed_all_at.map(|t| t.as_micros() as f64 / 1e6)
        );
    }
    let mut times: Vec<f64> =
        nodes[1..].iter().filter_map(|nd| nd.done_at).map(|t| t.as_micros() as f64 / 1e6).collect();
    times.sort_by(|a, b| a.total_cmp(b));
    let completed = times.len();
    SwarmReport {
        peers: o.peers,
        file_bytes,
        completed,
        secs_all: if completed == o.peers {
            times.last().copied().unwrap_or(0.0)
        } else {
            now.as_micros() as f64 / 1e6
        },
        secs_median: times.get(completed / 2).copied().unwrap_or(f64::NAN),
        bound_secs: bound,
        seed_uploads_files: seed_uploaded as f64 / file_bytes as f64,
        wasted_files: nodes[1..].iter().map(|nd| nd.t.stats().wasted).sum::<u64>() as f64
            / o.peers.max(1) as f64
            / file_bytes as f64,
        disconnects,
        trace_hash: trace,
        wall_ms: started.elapsed().as_millis(),
    }
}
