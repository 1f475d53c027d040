//! `sim gossip ...`, `sim chaos ...` and `sim swarm ...`; see `sim --help`.

use std::process::ExitCode;

use sim::chaos;
use sim::spread::{self, SpreadOpts};

const HELP: &str = "\
usage:
  sim gossip [--nodes N] [--seed S] [--loss P] [--dup P] [--latency-ms L]
             [--jitter-ms J] [--secs T] [--warmup-secs W] [--writes-per-s R]
             [--gossip-ms G] [--fanout F] [--members-max M] [--push-rounds P]
             [--sync-every K] [--probe-ms T] [--threads T]
             [--providers P] [--reannounce-s S] [--json]
  sim chaos  [--seeds K] [--seed0 S] [--json]
  sim chaos  --seed S          replay one scenario
  sim swarm  [--peers N] [--pieces P] [--piece-kib K] [--seed S] [--seed-up-kib U]
             [--up-kib U] [--down-kib D] [--latency-ms L] [--degree D] [--step-ms T] [--json]";

fn value<T: std::str::FromStr>(args: &[String], name: &str) -> Result<Option<T>, String> {
    match args.iter().position(|a| a == name) {
        None => Ok(None),
        Some(i) => args
            .get(i + 1)
            .ok_or(format!("{name} needs a value"))?
            .parse()
            .map(Some)
            .map_err(|_| format!("bad value for {name}")),
    }
}

fn gossip(args: &[String]) -> Result<ExitCode, String> {
    let d = SpreadOpts::default();
    let o = SpreadOpts {
        nodes: value(args, "--nodes")?.unwrap_or(d.nodes),
        seed: value(args, "--seed")?.unwrap_or(d.seed),
        loss: value(args, "--loss")?.unwrap_or(d.loss),
        dup: value(args, "--dup")?.unwrap_or(d.dup),
        latency_ms: value(args, "--latency-ms")?.unwrap_or(d.latency_ms),
        jitter_ms: value(args, "--jitter-ms")?.unwrap_or(d.jitter_ms),
        secs: value(args, "--secs")?.unwrap_or(d.secs),
        warmup_secs: value(args, "--warmup-secs")?.unwrap_or(d.warmup_secs),
        writes_per_s: value(args, "--writes-per-s")?.unwrap_or(d.writes_per_s),
        gossip_ms: value(args, "--gossip-ms")?.unwrap_or(d.gossip_ms),
        fanout: value(args, "--fanout")?.unwrap_or(d.fanout),
        members_max: value(args, "--members-max")?.unwrap_or(d.members_max),
        push_rounds: value(args, "--push-rounds")?.unwrap_or(d.push_rounds),
        sync_every_rounds: value(args, "--sync-every")?.unwrap_or(d.sync_every_rounds),
        probe_ms: value(args, "--probe-ms")?.unwrap_or(d.probe_ms),
        threads: value(args, "--threads")?.unwrap_or(d.threads),
        parallel_min_events: d.parallel_min_events,
        providers: value(args, "--providers")?.unwrap_or(d.providers),
        reannounce_s: value(args, "--reannounce-s")?.unwrap_or(d.reannounce_s),
    };
    let r = spread::run(&o);
    println!(
        "gossip: {} nodes, seed {}, loss {:.0}%, dup {:.0}%, latency {}+{} ms, round {} ms, fanout {}",
        r.nodes,
        r.seed,
        o.loss * 100.0,
        o.dup * 100.0,
        o.latency_ms,
        o.jitter_ms,
        o.gossip_ms,
        o.fanout
    );
    println!("writes tracked: {}  delivered: {:.4} of (write, node) pairs", r.writes, r.converged);
    println!(
        "rounds (median) to 50%: {:.2}  99%: {:.2}  100%: {:.2} (worst {:.2})",
        r.rounds_50, r.rounds_99, r.rounds_100, r.rounds_100_max
    );
    println!("virtual time (median) to 50%: {:.0} ms  99%: {:.0} ms  100%: {:.0} ms", r.ms_50, r.ms_99, r.ms_100);
    println!(
        "bounds: push log2N+lnN = {:.2}  push-pull log3N+lnlnN = {:.2}  (100% at {:.2}x push-pull)",
        r.bound_push,
        r.bound_push_pull,
        r.rounds_100 / r.bound_push_pull
    );
    println!(
        "bytes per node per second: {:.0} ({:.2} kbit/s; memberlist defaults ~330 kbit/s), {:.1} messages",
        r.bytes_per_node_per_s,
        r.bytes_per_node_per_s * 8.0 / 1000.0,
        r.messages_per_node_per_s
    );
    if !r.local_lookup_hits.is_nan() {
        println!(
            "provider lookups answered from the local store (no message, no wait): {:.1}%",
            r.local_lookup_hits * 100.0
        );
    }
    println!("trace hash: {:016x}  wall: {} ms", r.trace_hash, r.wall_ms);
    if args.iter().any(|a| a == "--json") {
        let j = serde_json::json!({
            "nodes": r.nodes,
            "seed": r.seed,
            "converged": r.converged,
            "rounds_50": r.rounds_50,
            "rounds_99": r.rounds_99,
            "rounds_100": r.rounds_100,
            "bound_push": r.bound_push,
            "bound_push_pull": r.bound_push_pull,
            "bytes_per_node_per_s": r.bytes_per_node_per_s,
            "ms_100": r.ms_100,
            "local_lookup_hits": if r.local_lookup_hits.is_nan() { None } else { Some(r.local_lookup_hits) },
            "trace_hash": format!("{:016x}", r.trace_hash),
            "wall_ms": r.wall_ms as u64,
        });
        println!("{j}");
    }
    Ok(ExitCode::SUCCESS)
}

fn chaos_cmd(args: &[String]) -> Result<ExitCode, String> {
    let seeds: Vec<u64> = match value::<u64>(args, "--seed")? {
        Some(s) => vec![s],
        None => {
            let k: u64 = value(args, "--seeds")?.unwrap_or(20);
            let s0: u64 = value(args, "--seed0")?.unwrap_or(1);
            (s0..s0 + k).collect()
        }
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
            println!("seed {s}: FAILED ({} nodes)", o.nodes);
            for v in o.violations.iter().take(5) {
                println!("  {v}");
            }
            println!("  replay: cargo run -p sim -- chaos --seed {s}");
        } else {
            println!(
                "seed {s}: ok ({} nodes, converged {} ms after heal, {} full transfers, trace {:016x})",
                o.nodes, o.heal_ms, o.full_transfers, o.trace_hash
            );
        }
    }
    println!(
        "chaos: {} seeds, {} violations, {} converged after heal, wall {} ms",
        seeds.len(),
        violations,
        converged,
        started.elapsed().as_millis()
    );
    if args.iter().any(|a| a == "--json") {
        let j = serde_json::json!({
            "seeds": seeds.len(),
            "violations": violations,
            "converged_after_heal": converged,
            "failed_seeds": failed,
        });
        println!("{j}");
    }
    Ok(if violations == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn swarm(args: &[String]) -> Result<ExitCode, String> {
    use sim::swarm::{self, SwarmOpts};
    let d = SwarmOpts::default();
    let o = SwarmOpts {
        peers: value(args, "--peers")?.unwrap_or(d.peers),
        pieces: value(args, "--pieces")?.unwrap_or(d.pieces),
        piece_kib: value(args, "--piece-kib")?.unwrap_or(d.piece_kib),
        seed: value(args, "--seed")?.unwrap_or(d.seed),
        seed_up_kib: value(args, "--seed-up-kib")?.unwrap_or(d.seed_up_kib),
        up_kib: value(args, "--up-kib")?.unwrap_or(d.up_kib),
        down_kib: value(args, "--down-kib")?.unwrap_or(d.down_kib),
        latency_ms: value(args, "--latency-ms")?.unwrap_or(d.latency_ms),
        degree: value(args, "--degree")?.unwrap_or(d.degree),
        step_ms: value(args, "--step-ms")?.unwrap_or(d.step_ms).max(1),
    };
    if o.peers == 0 || o.pieces == 0 || o.piece_kib == 0 || o.up_kib == 0 || o.seed_up_kib == 0 || o.down_kib == 0 {
        return Err("peers, pieces, piece size and capacities must be positive".into());
    }
    let r = swarm::run(&o);
    println!(
        "swarm: 1 seeder ({} KiB/s up) + {} leechers ({} KiB/s up, {} KiB/s down), {:.1} MiB in {} pieces, latency {} ms, seed {}",
        o.seed_up_kib,
        r.peers,
        o.up_kib,
        o.down_kib,
        r.file_bytes as f64 / (1 << 20) as f64,
        o.pieces,
        o.latency_ms,
        o.seed
    );
    println!("completed: {} of {} leechers", r.completed, r.peers);
    println!(
        "time until every leecher is complete: {:.1} s (median leecher {:.1} s); lower bound {:.1} s (Kumar & Ross); {:.2}x the bound",
        r.secs_all,
        r.secs_median,
        r.bound_secs,
        r.secs_all / r.bound_secs
    );
    println!("seeder uploaded {:.2} file copies; {} disconnects", r.seed_uploads_files, r.disconnects);
    println!("trace hash: {:016x}  wall: {} ms", r.trace_hash, r.wall_ms);
    if args.iter().any(|a| a == "--json") {
        let j = serde_json::json!({
            "peers": r.peers,
            "file_bytes": r.file_bytes,
            "seed": o.seed,
            "completed": r.completed,
            "secs_all": r.secs_all,
            "secs_median": r.secs_median,
            "bound_secs": r.bound_secs,
            "ratio_to_bound": r.secs_all / r.bound_secs,
            "seed_uploads_files": r.seed_uploads_files,
            "trace_hash": format!("{:016x}", r.trace_hash),
            "wall_ms": r.wall_ms,
        });
        println!("{j}");
    }
    Ok(if r.completed == r.peers { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let res = match args.first().map(String::as_str) {
        Some("gossip") => gossip(&args[1..]),
        Some("chaos") => chaos_cmd(&args[1..]),
        Some("swarm") => swarm(&args[1..]),
        _ => {
            println!("{HELP}");
            return if args.is_empty() { ExitCode::FAILURE } else { ExitCode::SUCCESS };
        }
    };
    match res {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sim: {e}\n{HELP}");
            ExitCode::from(2)
        }
    }
}
