//! `sim gossip`: how fast writes spread through N nodes and what it costs.

use bytes::Bytes;
use rumor_core::gossip::{Body, Command, Config, Input};
use rumor_core::replica::{Change, Namespace};
use rumor_core::time::{Duration, Instant};

use crate::world::{addr, NetModel, World};

/// Options of one spread run.
#[derive(Clone, Debug)]
pub struct SpreadOpts {
    /// Cluster size.
    pub nodes: usize,
    /// The seed of everything.
    pub seed: u64,
    /// Message loss probability.
    pub loss: f64,
    /// Duplication probability.
    pub dup: f64,
    /// One-way latency, ms.
    pub latency_ms: u64,
    /// Extra random delay up to this, ms.
    pub jitter_ms: u64,
    /// Virtual run length, s.
    pub secs: u64,
    /// Virtual warm-up before the first write, s.
    pub warmup_secs: u64,
    /// Cluster-wide writes per second after warm-up.
    pub writes_per_s: f64,
    /// Gossip round, ms.
    pub gossip_ms: u64,
    /// Push fanout.
    pub fanout: usize,
    /// Members known at most per node (a partial view when smaller than N).
    pub members_max: usize,
    /// Rounds a fresh entry is pushed on.
    pub push_rounds: u32,
    /// Idle rounds between anti-entropy summaries.
    pub sync_every_rounds: u32,
    /// SWIM probe interval, ms.
    pub probe_ms: u64,
    /// Simulator threads (results do not depend on it).
    pub threads: usize,
    /// Windows with fewer events run on one thread.
    pub parallel_min_events: usize,
    /// Providers workload: this many BitTorrent providers live in the
    /// overlay, each re-announced every `reannounce_s` from a random node
    /// with a TTL of two intervals; the tracked writes are then new
    /// providers (the `PROVIDERS` namespace, with the same TTL). 0: plain
    /// DNS writes.
    pub providers: usize,
    /// Seconds between a provider's announces.
    pub reannounce_s: u64,
    /// Seal every message (XChaCha20-Poly1305, as nodes do); `false` skips
    /// the cipher and keeps the envelope sizes (`--no-seal`).
    pub seal: bool,
    /// Random 64-bit node ids, as in a real cluster (see
    /// [`World::set_random_ids`]).
    pub random_ids: bool,
    /// Equal entries share one allocation across the nodes' stores (see
    /// [`World::set_shared_entries`]); the run is the same either way.
    pub shared_entries: bool,
    /// `Config::digest_writers_max` of every node.
    pub digest_writers_max: usize,
    /// `Config::recent_writers_max` of every node (0: lagging writers are
    /// neither listed nor remembered, the protocol before issue 16).
    pub recent_writers_max: usize,
    /// `StoreConfig::summary_settle_ms` of every node (0: summaries compare
    /// every write at once, the protocol before it).
    pub summary_settle_ms: u64,
}

impl Default for SpreadOpts {
    fn default() -> Self {
        SpreadOpts {
            nodes: 100,
            seed: 1,
            loss: 0.0,
            dup: 0.0,
            latency_ms: 2,
            jitter_ms: 3,
            secs: 60,
            warmup_secs: 10,
            writes_per_s: 1.0,
            gossip_ms: 200,
            fanout: 3,
            members_max: 64,
            push_rounds: 2,
            sync_every_rounds: 5,
            probe_ms: 1000,
            threads: 1,
            parallel_min_events: 64,
            providers: 0,
            reannounce_s: 30,
            seal: true,
            random_ids: false,
            shared_entries: true,
            digest_writers_max: 1024,
            recent_writers_max: 64,
            summary_settle_ms: rumor_core::replica::StoreConfig::default().summary_settle_ms,
        }
    }
}

/// The figures of one spread run.
#[derive(Clone, Debug, Default)]
pub struct SpreadReport {
    /// Cluster size.
    pub nodes: usize,
    /// Seed.
    pub seed: u64,
    /// Fraction of (write, live node) pairs delivered by the end.
    pub converged: f64,
    /// Median rounds until 50% of nodes hold a write.
    pub rounds_50: f64,
    /// Median rounds until 99%.
    pub rounds_99: f64,
    /// Median rounds until 100%.
    pub rounds_100: f64,
    /// Worst write's rounds until 100%.
    pub rounds_100_max: f64,
    /// Median virtual ms until 50%.
    pub ms_50: f64,
    /// Median virtual ms until 99%.
    pub ms_99: f64,
    /// Median virtual ms until 100%.
    pub ms_100: f64,
    /// log2 N + ln N.
    pub bound_push: f64,
    /// log3 N + ln ln N.
    pub bound_push_pull: f64,
    /// Bytes sent per node per virtual second after warm-up.
    pub bytes_per_node_per_s: f64,
    /// Messages sent per node per virtual second after warm-up.
    pub messages_per_node_per_s: f64,
    /// `bytes_per_node_per_s` by message kind (`Body::KINDS`), the kinds
    /// that sent anything, largest first.
    pub bytes_by_kind: Vec<(&'static str, f64)>,
    /// Writes tracked.
    pub writes: usize,
    /// Trace hash.
    pub trace_hash: u64,
    /// Wall time of the run, ms.
    pub wall_ms: u128,
    /// Rounds by which 99.9 % of the (tracked write, node) pairs were
    /// delivered (infinite if more than 0.1 % never were).
    pub pair_rounds_999: f64,
    /// Fraction of (tracked write, node) pairs delivered within 3x the
    /// push-pull bound.
    pub pairs_within_3x_bound: f64,
    /// Messages were sealed (false: `--no-seal`).
    pub sealed: bool,
    /// Providers workload: of lookups sampled at the end (a random node, a
    /// random live provider), the fraction the node answers from its own
    /// store, with no message and no wait. `NaN` without providers.
    pub local_lookup_hits: f64,
}

struct Tracked {
    at: Instant,
    have: usize,
    t50: Option<Instant>,
    t99: Option<Instant>,
    t100: Option<Instant>,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Runs one spread experiment.
pub fn run(o: &SpreadOpts) -> SpreadReport {
    let started = std::time::Instant::now();
    let n = o.nodes.max(2);
    let net = NetModel { latency_us: o.latency_ms * 1000, jitter_us: o.jitter_ms * 1000, loss: o.loss, dup: o.dup };
    let gossip_ms = o.gossip_ms;
    let fanout = o.fanout;
    let members_max = o.members_max;
    let push_rounds = o.push_rounds;
    let sync_every = o.sync_every_rounds;
    let probe_ms = o.probe_ms;
    let (digest_writers_max, recent_writers_max) = (o.digest_writers_max, o.recent_writers_max);
    let summary_settle_ms = o.summary_settle_ms;
    let mut w = World::new(
        n,
        o.seed,
        net,
        Box::new(move |i, keys| {
            let mut c = Config::new(addr(i), keys);
            c.gossip_interval = Duration::from_millis(gossip_ms);
            c.fanout = fanout;
            c.members_max = members_max;
            c.push_rounds = push_rounds;
            c.sync_every_rounds = sync_every;
            c.probe_interval = Duration::from_millis(probe_ms);
            c.probe_timeout = Duration::from_millis(probe_ms / 2);
            c.digest_writers_max = digest_writers_max;
            c.recent_writers_max = recent_writers_max;
            c.store.summary_settle_ms = summary_settle_ms;
            c
        }),
    );
    w.set_sealed(o.seal);
    w.set_random_ids(o.random_ids);
    w.set_shared_entries(o.shared_entries);
    // No node crashes here: no copy of what each would persist.
    w.set_persist(false);
    w.set_threads(o.threads);
    w.set_parallel_min_events(o.parallel_min_events);
    // Each node bootstraps from up to three random earlier nodes.
    for i in 1..n {
        let mut b = Vec::new();
        for _ in 0..3 {
            let j = w.rng().index(i);
            if !b.contains(&addr(j)) {
                b.push(addr(j));
            }
        }
        w.bootstrap[i] = b;
    }
    for i in 0..n {
        w.start(i);
    }
    // The providers workload: every provider announced once during warm-up,
    // then re-announced at a steady rate.
    let provider_ttl_ms = o.reannounce_s.max(1) * 2 * 1000;
    let announce = |w: &mut World, key: Bytes| {
        let i = w.rng().index(n);
        let expires_ms = w.wall_ms() + provider_ttl_ms;
        let value = Bytes::from_static(b"provider 10.0.0.1:6881 leecher");
        w.input(i, Input::Command(Command::Write { ns: Namespace::PROVIDERS, key, value, expires_ms }));
    };
    // Nothing of the warm-up is measured: keep none of its changes.
    w.set_record_changes(false);
    let warm_step = Duration::from_micros((o.warmup_secs * 1_000_000 / (o.providers as u64 + 1)).max(1));
    for p in 0..o.providers {
        announce(&mut w, Bytes::from(format!("p{p}")));
        if p % 64 == 63 {
            w.run_for(warm_step.saturating_mul(64));
        }
    }
    w.run_for(Duration::from_secs(o.warmup_secs));
    w.set_record_changes(true);
    w.changes.clear();
    let reannounce_every_us =
        if o.providers > 0 { (o.reannounce_s.max(1) * 1_000_000) / o.providers as u64 } else { u64::MAX };
    let mut next_reannounce = if o.providers > 0 { w.now.as_micros() } else { u64::MAX };
    let mut reannounced = 0usize;
    let bytes_at_warmup = w.bytes_sent;
    let by_kind = |w: &World| {
        w.machines().fold([0u64; Body::KINDS.len()], |mut a, g| {
            for (x, y) in a.iter_mut().zip(g.stats().bytes_out_by_kind) {
                *x += y;
            }
            a
        })
    };
    let kinds_at_warmup = by_kind(&w);
    let msgs_at_warmup = w.messages_sent;
    let (upd0, sus0) =
        w.machines().fold((0, 0), |a, g| (a.0 + g.stats().member_updates_applied, a.1 + g.stats().suspicions));
    let t_warm = w.now;
    let end = Instant::from_micros(o.secs * 1_000_000);
    // Writes stop early enough to have time to spread.
    let last_write = end.as_micros().saturating_sub(5_000_000);
    let every_us = (1e6 / o.writes_per_s.max(1e-3)) as u64;
    let mut next_write = t_warm.as_micros();
    let mut tracked: Vec<Tracked> = Vec::new();
    // How long each (tracked write, node) pair took, the writer's own
    // included (0): one u64 per pair delivered.
    let mut pair_us: Vec<u64> = Vec::new();
    let mut key_index = std::collections::BTreeMap::<Bytes, usize>::new();
    let live = n;
    let need50 = live.div_ceil(2);
    let need99 = ((live as f64) * 0.99).ceil() as usize;
    while w.now < end {
        let until = if next_write <= last_write { Instant::from_micros(next_write.min(end.as_micros())) } else { end };
        let until = until.min(Instant::from_micros(next_reannounce.max(w.now.as_micros())));
        w.run_until(until);
        for (at, _, c) in w.changes.drain(..) {
            if let Change::Applied(e) = c {
                if let Some(&k) = key_index.get(&e.key) {
                    let t = &mut tracked[k];
                    t.have += 1;
                    pair_us.push(at.as_micros() - t.at.as_micros());
                    if t.have >= need50 && t.t50.is_none() {
                        t.t50 = Some(at);
                    }
                    if t.have >= need99 && t.t99.is_none() {
                        t.t99 = Some(at);
                    }
                    if t.have >= live && t.t100.is_none() {
                        t.t100 = Some(at);
                    }
                }
            }
        }
        while o.providers > 0 && w.now.as_micros() >= next_reannounce {
            announce(&mut w, Bytes::from(format!("p{}", reannounced % o.providers)));
            reannounced += 1;
            next_reannounce += reannounce_every_us.max(1);
            // Re-announces are load, not tracked writes.
            w.changes.retain(|(_, _, c)| !matches!(c, Change::Applied(e) if e.key.starts_with(b"p")));
        }
        if w.now.as_micros() >= next_write && next_write <= last_write {
            let i = w.rng().index(n);
            let key = Bytes::from(format!("w{}", tracked.len()));
            key_index.insert(key.clone(), tracked.len());
            tracked.push(Tracked { at: w.now, have: 0, t50: None, t99: None, t100: None });
            let (ns, expires_ms) = if o.providers > 0 {
                (Namespace::PROVIDERS, w.wall_ms() + provider_ttl_ms)
            } else {
                (Namespace::DNS, 0)
            };
            w.input(
                i,
                Input::Command(Command::Write {
                    ns,
                    key,
                    value: Bytes::from_static(b"\x01\x02\x03\x04 an A record"),
                    expires_ms,
                }),
            );
            // The writer's own Applied counts as holding it.
            for (_, _, c) in w.changes.drain(..) {
                if let Change::Applied(e) = c {
                    if let Some(&k) = key_index.get(&e.key) {
                        tracked[k].have += 1;
                        pair_us.push(0);
                    }
                }
            }
            next_write += every_us;
        }
    }
    let (upd1, sus1) =
        w.machines().fold((0, 0), |a, g| (a.0 + g.stats().member_updates_applied, a.1 + g.stats().suspicions));
    if std::env::var_os("SIM_DEBUG").is_some() {
        let mut settled = std::collections::BTreeMap::<(u64, u32), usize>::new();
        let mut full = std::collections::BTreeMap::<(u64, usize), usize>::new();
        let mut seen = std::collections::BTreeMap::<u64, usize>::new();
        for g in w.machines() {
            *settled.entry(g.store().settled_summary()).or_default() += 1;
            *full.entry((g.store().summary_hash(), g.store().writers())).or_default() += 1;
            *seen.entry(g.store().seen_hash()).or_default() += 1;
        }
        fn top<K>(m: &std::collections::BTreeMap<K, usize>) -> usize {
            m.values().copied().max().unwrap_or(0)
        }
        eprintln!(
            "distinct summaries at the end: settled {} (largest class {}), full {} ({}), watermarks {} ({})",
            settled.len(),
            top(&settled),
            full.len(),
            top(&full),
            seen.len(),
            top(&seen)
        );
        eprintln!(
            "membership after warm-up: {} updates applied, {} suspicions; at warm-up end {} / {}",
            upd1 - upd0,
            sus1 - sus0,
            upd0,
            sus0
        );
    }
    // Lookups at the end: would a tracker at a random node find a random
    // live provider in its own store (answered at once), or have to ask
    // the network (a gossip lookup round trip)?
    let local_lookup_hits = if o.providers > 0 {
        const SAMPLES: usize = 1000;
        let wall = w.wall_ms();
        let picks: Vec<(usize, usize)> = (0..SAMPLES).map(|_| (w.rng().index(n), w.rng().index(o.providers))).collect();
        let hits = picks
            .iter()
            .filter(|(node, p)| {
                w.machines()
                    .nth(*node)
                    .is_some_and(|g| g.store().get(Namespace::PROVIDERS, format!("p{p}").as_bytes(), wall).is_some())
            })
            .count();
        hits as f64 / SAMPLES as f64
    } else {
        f64::NAN
    };
    let round_us = (gossip_ms * 1000) as f64;
    let rounds = |t: Option<Instant>, at: Instant| t.map(|t| (t.as_micros() - at.as_micros()) as f64 / round_us);
    let r50: Vec<f64> = tracked.iter().filter_map(|t| rounds(t.t50, t.at)).collect();
    let r99: Vec<f64> = tracked.iter().filter_map(|t| rounds(t.t99, t.at)).collect();
    let r100: Vec<f64> = tracked.iter().filter_map(|t| rounds(t.t100, t.at)).collect();
    let delivered: usize = tracked.iter().map(|t| t.have.min(live)).sum();
    let nf = n as f64;
    let bound_push_pull = nf.ln() / 3f64.ln() + nf.ln().ln();
    // Pairs never delivered count as later than any delivered one.
    let pairs = tracked.len() * live;
    pair_us.sort_unstable();
    let pair_rounds_999 = if pairs == 0 {
        f64::NAN
    } else {
        let k = ((pairs as f64) * 0.999).ceil() as usize;
        pair_us.get(k.saturating_sub(1)).map_or(f64::INFINITY, |&us| us as f64 / round_us)
    };
    let within = (3.0 * bound_push_pull * round_us) as u64;
    let pairs_within_3x_bound =
        if pairs == 0 { f64::NAN } else { pair_us.partition_point(|&us| us <= within) as f64 / pairs as f64 };
    let trace_hash = w.trace_hash();
    let bytes_sent = w.bytes_sent;
    let messages_sent = w.messages_sent;
    let now = w.now;
    // Tearing down 10,000 machines takes a good part of a second: the run is
    // over, let the process reclaim the memory.
    let kinds_at_end = by_kind(&w);
    std::mem::forget(w);
    let window_s = (now.as_micros() - t_warm.as_micros()) as f64 / 1e6;
    SpreadReport {
        nodes: n,
        seed: o.seed,
        converged: if tracked.is_empty() { 1.0 } else { delivered as f64 / (tracked.len() * live) as f64 },
        rounds_50: median(r50.clone()),
        rounds_99: median(r99.clone()),
        rounds_100_max: r100.iter().copied().fold(f64::NAN, f64::max),
        ms_50: median(r50.iter().map(|r| r * round_us / 1000.0).collect()),
        ms_99: median(r99.iter().map(|r| r * round_us / 1000.0).collect()),
        ms_100: median(r100.iter().map(|r| r * round_us / 1000.0).collect()),
        rounds_100: median(r100),
        bound_push: nf.log2() + nf.ln(),
        bound_push_pull,
        pair_rounds_999,
        pairs_within_3x_bound,
        bytes_per_node_per_s: (bytes_sent - bytes_at_warmup) as f64 / nf / window_s.max(1e-9),
        messages_per_node_per_s: (messages_sent - msgs_at_warmup) as f64 / nf / window_s.max(1e-9),
        bytes_by_kind: {
            let mut v: Vec<(&'static str, f64)> = Body::KINDS
                .iter()
                .zip(kinds_at_end.iter().zip(kinds_at_warmup))
                .map(|(k, (end, warm))| (*k, end.saturating_sub(warm) as f64 / nf / window_s.max(1e-9)))
                .filter(|(_, b)| *b > 0.0)
                .collect();
            v.sort_by(|a, b| b.1.total_cmp(&a.1));
            v
        },
        writes: tracked.len(),
        trace_hash,
        wall_ms: started.elapsed().as_millis(),
        sealed: o.seal,
        local_lookup_hits,
    }
}
