//! `sim gossip ...`, `sim chaos ...`, `sim swarm ...`, `sim tracker ...` and `sim dht ...`;
//! see `sim --help`.
//!
//! Every subcommand takes `--json`: then stdout carries exactly one JSON
//! document (so `sim chaos --json | jq` works) and the human report goes to
//! stderr. A bad flag or value is reported by clap with exit status 2;
//! `--help` exits 0.

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use sim::chaos;
use sim::spread::{self, SpreadOpts};
use sim::swarm::{self, SwarmOpts};
use sim::tracker::{self, TrackerOpts};

/// The cores this process may use (1 if unknown).
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A simulated node's state is many small maps filled at random moments
/// (every event hits a random node). With mimalloc the simulator ran 9 %
/// faster on one thread and a third faster on two than with glibc's malloc
/// (its arenas also sit on transparent huge pages: fewer TLB misses).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOC: PlainMiMalloc = PlainMiMalloc;

/// mimalloc, asked for plain blocks whenever the layout's alignment is one
/// every block already has (as std's `System` does with malloc).
///
/// The `mimalloc` crate passes every layout to `mi_malloc_aligned`, and
/// mimalloc 3 serves that from its fast path only while the size class's
/// current page has a free block; otherwise (a fifth of the calls in a
/// 1,000-node run, by callgrind) a block that is not a power of two is
/// over-allocated by `align - 1` bytes and its page marked as holding
/// interior pointers, which slows every later free on it.
#[cfg(feature = "mimalloc")]
struct PlainMiMalloc;

/// The alignment of every mimalloc block of at least this many bytes
/// (`MI_MAX_ALIGN_SIZE` on 64-bit targets); smaller blocks are aligned to
/// their size rounded up to a word.
#[cfg(feature = "mimalloc")]
const MI_MAX_ALIGN_SIZE: usize = 16;

#[cfg(feature = "mimalloc")]
impl PlainMiMalloc {
    /// Whether a plain mimalloc block of `size` bytes meets `align`.
    #[inline]
    fn plain_fits(size: usize, align: usize) -> bool {
        align <= MI_MAX_ALIGN_SIZE && align <= size
    }
}

// SAFETY: every pointer comes from mimalloc and goes back to it; a plain
// block is returned only when mimalloc guarantees the layout's alignment
// for it (see `plain_fits`), and `mi_free`/`mi_realloc` take blocks from
// either entry point.
#[cfg(feature = "mimalloc")]
unsafe impl std::alloc::GlobalAlloc for PlainMiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: a plain or aligned request of a non-zero size (the
        // GlobalAlloc contract).
        unsafe {
            if Self::plain_fits(layout.size(), layout.align()) {
                libmimalloc_sys::mi_malloc(layout.size()).cast()
            } else {
                libmimalloc_sys::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        unsafe {
            if Self::plain_fits(layout.size(), layout.align()) {
                libmimalloc_sys::mi_zalloc(layout.size()).cast()
            } else {
                libmimalloc_sys::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: std::alloc::Layout) {
        // SAFETY: `ptr` came from this allocator.
        unsafe { libmimalloc_sys::mi_free(ptr.cast()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator with `layout`; the new
        // block keeps the alignment by the same rule as `alloc`.
        unsafe {
            if Self::plain_fits(new_size, layout.align()) {
                libmimalloc_sys::mi_realloc(ptr.cast(), new_size).cast()
            } else {
                libmimalloc_sys::mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast()
            }
        }
    }
}

/// mimalloc's `mi_option_purge_delay` (its index in `mi_option_t`, which
/// the bindings name only for the older options).
#[cfg(feature = "mimalloc")]
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Tells mimalloc never to give freed pages back to the kernel. A run's
/// memory is as large at the end as in the middle, so what a purge gives
/// back is asked for again moments later: at 10,000 nodes the purges and
/// the faults that refill them were 3 s of system time and left the
/// second thread waiting on the address-space lock (18.9 s wall -> 12.5
/// to 15.9 s with purging off).
fn keep_freed_memory() {
    #[cfg(feature = "mimalloc")]
    // SAFETY: sets one integer option before any thread but this one
    // exists; mimalloc reads it when it next considers a purge.
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1);
    }
}

/// The deterministic simulator: the very same core machines on one virtual
/// clock and a seeded network. The same seed gives the same trace hash.
#[derive(Parser, Debug)]
#[command(name = "sim", version, arg_required_else_help = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// How fast writes spread through a gossip cluster, and at what cost.
    Gossip(GossipArgs),
    /// Random fault scenarios with invariants checked after every step,
    /// then heal and check convergence.
    Chaos(ChaosArgs),
    /// A BitTorrent swarm of the core's torrent machines on a time-stepped
    /// network.
    Swarm(SwarmArgs),
    /// Clients announcing to a cluster's node trackers (the core's tracker
    /// and member machines): answer latency, parked announces, providers
    /// seen everywhere, stopped clients never listed.
    Tracker(TrackerArgs),
    /// Mainline DHT nodes (the core's DHT machine) with loss and churn:
    /// lookup hops and messages, the share of lookups that find an
    /// announced peer, bytes per node per second.
    Dht(sim::dht::DhtArgs),
}

/// Where the report goes: with `--json`, the human text to stderr and one
/// JSON document to stdout; without, the text to stdout.
struct Report {
    json: bool,
}

impl Report {
    fn line(&self, s: impl AsRef<str>) {
        if self.json {
            eprintln!("{}", s.as_ref());
        } else {
            println!("{}", s.as_ref());
        }
    }

    fn json(&self, j: serde_json::Value) {
        if self.json {
            println!("{j}");
        }
    }
}

/// NaN is not JSON: a figure that could not be measured is null.
fn num(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

/// A probability: a number in 0..=1.
fn fraction(s: &str) -> Result<f64, String> {
    let x: f64 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    if (0.0..=1.0).contains(&x) {
        Ok(x)
    } else {
        Err(format!("{x} is not a fraction between 0 and 1 (0.1 means 10%)"))
    }
}

/// A positive whole number.
fn positive<T: std::str::FromStr + PartialOrd + Default>(s: &str) -> Result<T, String> {
    let x: T = s.parse().map_err(|_| format!("`{s}` is not a whole number"))?;
    if x > T::default() {
        Ok(x)
    } else {
        Err("must be at least 1".into())
    }
}

#[derive(Args, Debug)]
struct GossipArgs {
    /// Cluster size.
    #[arg(long, default_value_t = SpreadOpts::default().nodes, value_parser = positive::<usize>)]
    nodes: usize,
    /// The seed of everything.
    #[arg(long, default_value_t = SpreadOpts::default().seed)]
    seed: u64,
    /// Message loss probability, 0..=1.
    #[arg(long, default_value_t = SpreadOpts::default().loss, value_parser = fraction)]
    loss: f64,
    /// Message duplication probability, 0..=1.
    #[arg(long, default_value_t = SpreadOpts::default().dup, value_parser = fraction)]
    dup: f64,
    /// One-way latency, ms.
    #[arg(long, default_value_t = SpreadOpts::default().latency_ms)]
    latency_ms: u64,
    /// Extra random delay up to this, ms (reorders messages).
    #[arg(long, default_value_t = SpreadOpts::default().jitter_ms)]
    jitter_ms: u64,
    /// Virtual run length, s.
    #[arg(long, default_value_t = SpreadOpts::default().secs)]
    secs: u64,
    /// Virtual warm-up before the first tracked write, s.
    #[arg(long, default_value_t = SpreadOpts::default().warmup_secs)]
    warmup_secs: u64,
    /// Cluster-wide tracked writes per second after the warm-up.
    #[arg(long, default_value_t = SpreadOpts::default().writes_per_s)]
    writes_per_s: f64,
    /// Gossip round, ms.
    #[arg(long, default_value_t = SpreadOpts::default().gossip_ms, value_parser = positive::<u64>)]
    gossip_ms: u64,
    /// Push fanout.
    #[arg(long, default_value_t = SpreadOpts::default().fanout)]
    fanout: usize,
    /// Members known at most per node (a partial view when below --nodes).
    #[arg(long, default_value_t = SpreadOpts::default().members_max, value_parser = positive::<usize>)]
    members_max: usize,
    /// Rounds a fresh entry is pushed on.
    #[arg(long, default_value_t = SpreadOpts::default().push_rounds)]
    push_rounds: u32,
    /// Idle rounds between anti-entropy summaries.
    #[arg(long = "sync-every", default_value_t = SpreadOpts::default().sync_every_rounds)]
    sync_every_rounds: u32,
    /// SWIM probe interval, ms.
    #[arg(long, default_value_t = SpreadOpts::default().probe_ms, value_parser = positive::<u64>)]
    probe_ms: u64,
    /// Simulator threads (the result does not depend on it); by default
    /// one per core.
    #[arg(long, default_value_t = cores(), value_parser = positive::<usize>)]
    threads: usize,
    /// Providers workload: this many BitTorrent providers re-announced in the
    /// overlay (0: plain DNS writes).
    #[arg(long, default_value_t = SpreadOpts::default().providers)]
    providers: usize,
    /// Seconds between a provider's announces.
    #[arg(long, default_value_t = SpreadOpts::default().reannounce_s, value_parser = positive::<u64>)]
    reannounce_s: u64,
    /// Writers per digest window (the protocol's default is 1,024; a smaller
    /// window shows at 1,000 nodes what 10,000 nodes do).
    #[arg(long, default_value_t = SpreadOpts::default().digest_writers_max, value_parser = positive::<usize>)]
    digest_writers: usize,
    /// Recent writers listed beside a summary, and lagging writers a node
    /// remembers to start its digest at (0: off, the protocol before issue 16).
    #[arg(long, default_value_t = SpreadOpts::default().recent_writers_max)]
    recent_writers: usize,
    /// Milliseconds after its version's time a write enters the summary two
    /// nodes compare (0: at once, the protocol before the settled summary).
    #[arg(long, default_value_t = SpreadOpts::default().summary_settle_ms)]
    settle_ms: u64,
    /// Skip the cipher: messages keep the sealed envelope's layout and size
    /// but are not encrypted (faster; every result says which it did).
    #[arg(long)]
    no_seal: bool,
    /// Random 64-bit node ids, as real nodes draw them; by default node i
    /// is 1,000,000 + i, which makes every digest smaller than a real
    /// cluster's.
    #[arg(long)]
    random_ids: bool,
    /// Each node allocates its own copy of every entry instead of sharing
    /// equal ones across nodes (same results, more memory).
    #[arg(long)]
    private_entries: bool,
    /// One JSON document on stdout; the human report on stderr.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct ChaosArgs {
    /// How many seeds to run, from --seed0.
    #[arg(long, default_value_t = 20)]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 1)]
    seed0: u64,
    /// Replay this one scenario (instead of --seeds/--seed0).
    #[arg(long, conflicts_with_all = ["seeds", "seed0"])]
    seed: Option<u64>,
    /// One JSON document on stdout; the human report on stderr.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct SwarmArgs {
    /// Leechers.
    #[arg(long, default_value_t = SwarmOpts::default().peers, value_parser = positive::<usize>)]
    peers: usize,
    /// Pieces of the torrent.
    #[arg(long, default_value_t = SwarmOpts::default().pieces, value_parser = positive::<u32>)]
    pieces: u32,
    /// Piece size, KiB.
    #[arg(long, default_value_t = SwarmOpts::default().piece_kib, value_parser = positive::<u64>)]
    piece_kib: u64,
    /// Seed of every random choice.
    #[arg(long, default_value_t = SwarmOpts::default().seed)]
    seed: u64,
    /// Seeder upload capacity, KiB/s.
    #[arg(long, default_value_t = SwarmOpts::default().seed_up_kib, value_parser = positive::<u64>)]
    seed_up_kib: u64,
    /// Leecher upload capacity, KiB/s.
    #[arg(long, default_value_t = SwarmOpts::default().up_kib, value_parser = positive::<u64>)]
    up_kib: u64,
    /// Leecher download capacity, KiB/s.
    #[arg(long, default_value_t = SwarmOpts::default().down_kib, value_parser = positive::<u64>)]
    down_kib: u64,
    /// One-way latency, ms.
    #[arg(long, default_value_t = SwarmOpts::default().latency_ms)]
    latency_ms: u64,
    /// Peers each leecher dials besides the seeder.
    #[arg(long, default_value_t = SwarmOpts::default().degree)]
    degree: usize,
    /// Simulation step, ms.
    #[arg(long, default_value_t = SwarmOpts::default().step_ms, value_parser = positive::<u64>)]
    step_ms: u64,
    /// One JSON document on stdout; the human report on stderr.
    #[arg(long)]
    json: bool,
}

fn gossip(a: &GossipArgs) -> ExitCode {
    let out = Report { json: a.json };
    let o = SpreadOpts {
        nodes: a.nodes,
        seed: a.seed,
        loss: a.loss,
        dup: a.dup,
        latency_ms: a.latency_ms,
        jitter_ms: a.jitter_ms,
        secs: a.secs,
        warmup_secs: a.warmup_secs,
        writes_per_s: a.writes_per_s,
        gossip_ms: a.gossip_ms,
        fanout: a.fanout,
        members_max: a.members_max,
        push_rounds: a.push_rounds,
        sync_every_rounds: a.sync_every_rounds,
        probe_ms: a.probe_ms,
        threads: a.threads,
        parallel_min_events: SpreadOpts::default().parallel_min_events,
        providers: a.providers,
        reannounce_s: a.reannounce_s,
        seal: !a.no_seal,
        random_ids: a.random_ids,
        shared_entries: !a.private_entries,
        digest_writers_max: a.digest_writers,
        recent_writers_max: a.recent_writers,
        summary_settle_ms: a.settle_ms,
    };
    let r = spread::run(&o);
    out.line(format!(
        "gossip: {} nodes, seed {}, loss {:.0}%, dup {:.0}%, latency {}+{} ms, round {} ms, fanout {}",
        r.nodes,
        r.seed,
        o.loss * 100.0,
        o.dup * 100.0,
        o.latency_ms,
        o.jitter_ms,
        o.gossip_ms,
        o.fanout
    ));
    out.line(format!("writes tracked: {}  delivered: {:.4} of (write, node) pairs", r.writes, r.converged));
    out.line(format!(
        "rounds (median) to 50%: {:.2}  99%: {:.2}  100%: {:.2} (worst {:.2})",
        r.rounds_50, r.rounds_99, r.rounds_100, r.rounds_100_max
    ));
    out.line(format!(
        "virtual time (median) to 50%: {:.0} ms  99%: {:.0} ms  100%: {:.0} ms",
        r.ms_50, r.ms_99, r.ms_100
    ));
    out.line(format!(
        "(write, node) pairs: 99.9% delivered within {:.2} rounds; {:.4} within 3x the push-pull bound",
        r.pair_rounds_999, r.pairs_within_3x_bound
    ));
    out.line(format!(
        "bounds: push log2N+lnN = {:.2}  push-pull log3N+lnlnN = {:.2}  (100% at {:.2}x push-pull)",
        r.bound_push,
        r.bound_push_pull,
        r.rounds_100 / r.bound_push_pull
    ));
    out.line(format!(
        "bytes per node per second: {:.0} ({:.2} kbit/s; memberlist defaults ~330 kbit/s), {:.1} messages",
        r.bytes_per_node_per_s,
        r.bytes_per_node_per_s * 8.0 / 1000.0,
        r.messages_per_node_per_s
    ));
    out.line(format!(
        "  by message kind: {}",
        r.bytes_by_kind.iter().map(|(k, b)| format!("{k} {b:.0}")).collect::<Vec<_>>().join(", ")
    ));
    if !r.local_lookup_hits.is_nan() {
        out.line(format!(
            "provider lookups answered from the local store (no message, no wait): {:.1}%",
            r.local_lookup_hits * 100.0
        ));
    }
    out.line(format!(
        "messages: {}",
        if r.sealed {
            "sealed (XChaCha20-Poly1305, as nodes do)"
        } else {
            "NOT sealed (--no-seal: same envelopes and sizes, no cipher)"
        }
    ));
    out.line(format!(
        "digests: {} writers a window, {} recent writers listed{}",
        o.digest_writers_max,
        o.recent_writers_max,
        if o.recent_writers_max == 0 { " (off: random windows only)" } else { "" }
    ));
    out.line(format!("summaries compare writes {} ms after their versions (--settle-ms)", o.summary_settle_ms));
    out.line(format!(
        "node ids: {}",
        if o.random_ids {
            "random 64-bit (--random-ids, as real nodes)"
        } else {
            "1,000,000 + i (small varints: digests smaller than a real cluster's)"
        }
    ));
    out.line(format!("trace hash: {:016x}  wall: {} ms", r.trace_hash, r.wall_ms));
    out.json(serde_json::json!({
        "nodes": r.nodes,
        "digest_writers": o.digest_writers_max,
        "random_ids": o.random_ids,
        "recent_writers": o.recent_writers_max,
        "settle_ms": o.summary_settle_ms,
        "messages_per_node_per_s": num(r.messages_per_node_per_s),
        "sealed": r.sealed,
        "seed": r.seed,
        "writes": r.writes,
        "converged": num(r.converged),
        "rounds_50": num(r.rounds_50),
        "rounds_99": num(r.rounds_99),
        "rounds_100": num(r.rounds_100),
        "bound_push": num(r.bound_push),
        "bound_push_pull": num(r.bound_push_pull),
        "pair_rounds_999": num(r.pair_rounds_999),
        "pairs_within_3x_bound": num(r.pairs_within_3x_bound),
        "bytes_per_node_per_s": num(r.bytes_per_node_per_s),
        "bytes_by_kind": r.bytes_by_kind.iter().map(|(k, b)| (k.to_string(), serde_json::json!(num(*b)))).collect::<serde_json::Map<_, _>>(),
        "ms_100": num(r.ms_100),
        "local_lookup_hits": num(r.local_lookup_hits),
        "trace_hash": format!("{:016x}", r.trace_hash),
        "wall_ms": r.wall_ms as u64,
    }));
    ExitCode::SUCCESS
}

fn chaos_cmd(a: &ChaosArgs) -> ExitCode {
    let out = Report { json: a.json };
    let seeds: Vec<u64> = match a.seed {
        Some(s) => vec![s],
        None => (a.seed0..a.seed0.saturating_add(a.seeds)).collect(),
    };
    let started = std::time::Instant::now();
    let mut violations = 0usize;
    let mut converged = 0usize;
    let mut failed = Vec::new();
    for &s in &seeds {
        let o = chaos::run_seed(s);
        if o.converged {
            converged += 1;
        }
        if !o.violations.is_empty() {
            violations += o.violations.len();
            failed.push(s);
            out.line(format!("seed {s}: FAILED ({} nodes)", o.nodes));
            for v in o.violations.iter().take(5) {
                out.line(format!("  {v}"));
            }
            out.line(format!("  replay: cargo run -p sim -- chaos --seed {s}"));
        } else {
            out.line(format!(
                "seed {s}: ok ({} nodes, converged {} ms after heal, {} full transfers, trace {:016x})",
                o.nodes, o.heal_ms, o.full_transfers, o.trace_hash
            ));
        }
    }
    out.line(format!(
        "chaos: {} seeds, {} violations, {} converged after heal, wall {} ms",
        seeds.len(),
        violations,
        converged,
        started.elapsed().as_millis()
    ));
    out.json(serde_json::json!({
        "seeds": seeds.len(),
        "violations": violations,
        "converged_after_heal": converged,
        "failed_seeds": failed,
    }));
    if violations == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn swarm_cmd(a: &SwarmArgs) -> ExitCode {
    let out = Report { json: a.json };
    let o = SwarmOpts {
        peers: a.peers,
        pieces: a.pieces,
        piece_kib: a.piece_kib,
        seed: a.seed,
        seed_up_kib: a.seed_up_kib,
        up_kib: a.up_kib,
        down_kib: a.down_kib,
        latency_ms: a.latency_ms,
        degree: a.degree,
        step_ms: a.step_ms,
    };
    let r = swarm::run(&o);
    out.line(format!(
        "swarm: 1 seeder ({} KiB/s up) + {} leechers ({} KiB/s up, {} KiB/s down), {:.1} MiB in {} pieces, latency {} ms, seed {}",
        o.seed_up_kib,
        r.peers,
        o.up_kib,
        o.down_kib,
        r.file_bytes as f64 / (1 << 20) as f64,
        o.pieces,
        o.latency_ms,
        o.seed
    ));
    out.line(format!("completed: {} of {} leechers", r.completed, r.peers));
    out.line(format!(
        "time until every leecher is complete: {:.1} s (median leecher {:.1} s); lower bound {:.1} s (Kumar & Ross); {:.2}x the bound",
        r.secs_all,
        r.secs_median,
        r.bound_secs,
        r.secs_all / r.bound_secs
    ));
    out.line(format!(
        "seeder uploaded {:.2} file copies; each leecher wasted {:.2} % of the file; {} disconnects",
        r.seed_uploads_files,
        r.wasted_files * 100.0,
        r.disconnects
    ));
    out.line(format!("trace hash: {:016x}  wall: {} ms", r.trace_hash, r.wall_ms));
    out.json(serde_json::json!({
        "peers": r.peers,
        "file_bytes": r.file_bytes,
        "seed": o.seed,
        "completed": r.completed,
        "secs_all": num(r.secs_all),
        "secs_median": num(r.secs_median),
        "bound_secs": num(r.bound_secs),
        "ratio_to_bound": num(r.secs_all / r.bound_secs),
        "seed_uploads_files": num(r.seed_uploads_files),
        "wasted_files": num(r.wasted_files),
        "trace_hash": format!("{:016x}", r.trace_hash),
        "wall_ms": r.wall_ms,
    }));
    if r.completed == r.peers {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn main() -> ExitCode {
    keep_freed_memory();
    // Parse errors exit with status 2 and --help with 0 (clap's rule).
    let cli = Cli::parse();
    match &cli.cmd {
        Cmd::Gossip(a) => gossip(a),
        Cmd::Chaos(a) => chaos_cmd(a),
        Cmd::Swarm(a) => swarm_cmd(a),
        Cmd::Tracker(a) => tracker_cmd(a),
        Cmd::Dht(a) => sim::dht::cmd(a),
    }
}

#[derive(Args, Debug)]
struct TrackerArgs {
    /// Cluster nodes, each a tracker.
    #[arg(long, default_value_t = TrackerOpts::default().nodes, value_parser = positive::<usize>)]
    nodes: usize,
    /// BitTorrent clients.
    #[arg(long, default_value_t = TrackerOpts::default().clients, value_parser = positive::<usize>)]
    clients: usize,
    /// Torrents the clients share among them.
    #[arg(long, default_value_t = TrackerOpts::default().torrents, value_parser = positive::<usize>)]
    torrents: usize,
    /// Seconds between a client's announces.
    #[arg(long, default_value_t = TrackerOpts::default().interval_s, value_parser = positive::<u32>)]
    interval: u32,
    /// Virtual seconds the clients announce for (a settle of one interval follows).
    #[arg(long, default_value_t = TrackerOpts::default().duration_s, value_parser = positive::<u64>)]
    duration: u64,
    /// Share of clients that leave (announce stopped) before the end, 0..=1.
    #[arg(long, default_value_t = TrackerOpts::default().leave, value_parser = fraction)]
    leave: f64,
    /// One-way gossip latency, ms (plus up to as much jitter).
    #[arg(long, default_value_t = TrackerOpts::default().latency_ms)]
    latency_ms: u64,
    /// Gossip message loss probability, 0..=1.
    #[arg(long, default_value_t = TrackerOpts::default().loss, value_parser = fraction)]
    loss: f64,
    /// Announces parked at once per node (the tracker's bound).
    #[arg(long, default_value_t = TrackerOpts::default().parked_max, value_parser = positive::<usize>)]
    parked_max: usize,
    /// Seed of every random choice.
    #[arg(long, default_value_t = TrackerOpts::default().seed)]
    seed: u64,
    /// One JSON document on stdout; the human report on stderr.
    #[arg(long)]
    json: bool,
}

fn tracker_cmd(a: &TrackerArgs) -> ExitCode {
    let out = Report { json: a.json };
    let o = TrackerOpts {
        nodes: a.nodes,
        clients: a.clients,
        torrents: a.torrents,
        interval_s: a.interval,
        duration_s: a.duration,
        leave: a.leave,
        latency_ms: a.latency_ms,
        loss: a.loss,
        parked_max: a.parked_max,
        seed: a.seed,
    };
    out.line(format!(
        "tracker: {} nodes, {} clients on {} torrents, announce every {} s for {} s, {:.0}% leave, latency {} ms, loss {:.1}%, seed {}",
        o.nodes,
        o.clients,
        o.torrents,
        o.interval_s,
        o.duration_s,
        o.leave * 100.0,
        o.latency_ms,
        o.loss * 100.0,
        o.seed
    ));
    let r = tracker::run(&o);
    for line in r.text().lines() {
        out.line(line);
    }
    out.json(r.json());
    // A stopped client still listed, or an announce never answered, is a
    // broken rule: exit non-zero so scripts notice.
    if r.stopped_listed == 0 && r.answered == r.announces {
        ExitCode::SUCCESS
    } else {
        out.line("FAILED: a stopped client is still listed or an announce went unanswered");
        ExitCode::FAILURE
    }
}
