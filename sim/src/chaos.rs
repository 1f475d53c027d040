//! `sim chaos`: random fault scenarios, invariants after every step, then
//! heal and check that every node converges within a bound. Each machine
//! also checks its own invariants after every input it handles.

use std::collections::BTreeMap;

use bytes::Bytes;
use rumor_core::gossip::{Command, Config, Input};
use rumor_core::rand::Rng;
use rumor_core::replica::{merge, Change, Entry, Namespace, Version};
use rumor_core::time::{Duration, Instant};

use crate::world::{addr, NetModel, World};

/// The outcome of one chaos seed.
#[derive(Clone, Debug, Default)]
pub struct ChaosOutcome {
    /// The seed.
    pub seed: u64,
    /// Invariant violations (empty = pass).
    pub violations: Vec<String>,
    /// True if all nodes converged after the heal.
    pub converged: bool,
    /// Virtual ms from heal to convergence.
    pub heal_ms: u64,
    /// Trace hash.
    pub trace_hash: u64,
    /// Number of nodes drawn.
    pub nodes: usize,
    /// Full state transfers done in the run.
    pub full_transfers: u64,
}

/// Bound on convergence after the heal, virtual.
pub const HEAL_BOUND: Duration = Duration::from_secs(90);
const FAULT_PHASE: Duration = Duration::from_secs(60);
const KEYS: u64 = 12;

/// The per-node checker state: per key the highest (version, writer,
/// deleted) the node ever applied.
type Floors = Vec<BTreeMap<Bytes, (Version, u64, bool)>>;

fn check_change(floors: &mut Floors, i: usize, c: &Change, now: Instant, violations: &mut Vec<String>) {
    if let Some(k) = std::env::var_os("SIM_TRACE_KEY") {
        let key = match c {
            Change::Applied(e) => &e.key,
            Change::Removed { key, .. } => key,
        };
        if key.as_ref() == k.as_encoded_bytes() {
            eprintln!("{:>10}us node {i}: {c:?}", now.as_micros());
        }
    }
    let Change::Applied(e) = c else { return };
    let f = floors[i].entry(e.key.clone()).or_insert((Version::ZERO, 0, false));
    let new = (e.version, e.writer);
    let old = (f.0, f.1);
    let expiry_turn = new == old && e.deleted && !f.2;
    if old != (Version::ZERO, 0) && new <= old && !expiry_turn {
        violations.push(format!(
            "at {}us node {i} key {:?}: applied {:?}/{} deleted={} after {:?}/{} deleted={} \
             (version went back or a delete was resurrected)",
            now.as_micros(),
            e.key,
            e.version,
            e.writer,
            e.deleted,
            f.0,
            f.1,
            f.2
        ));
    }
    if new > old || expiry_turn {
        *f = (e.version, e.writer, e.deleted);
    }
}

/// With `SIM_TRACE_KEY` set, crashes and restarts are printed among the
/// traced key's changes: most resurrections involve one.
fn trace_fault(w: &World, what: &str, i: usize) {
    if std::env::var_os("SIM_TRACE_KEY").is_some() {
        eprintln!("{:>10}us node {i}: {what}", w.now.as_micros());
    }
}

fn check_served(w: &World, i: usize, violations: &mut Vec<String>) {
    let Some(g) = w.node(i) else { return };
    let wall = w.wall_ms();
    for e in g.store().live(Namespace::DNS, wall) {
        if e.is_expired(wall) || e.deleted {
            violations.push(format!("node {i} serves dead entry {:?}", e.key));
        }
    }
}

fn live_view(w: &World, i: usize, wall: u64) -> Vec<(Bytes, Version, u64, Bytes)> {
    w.node(i)
        .map(|g| {
            g.store()
                .live(Namespace::DNS, wall)
                .map(|e| (e.key.clone(), e.version, e.writer, e.value.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// Runs one chaos scenario drawn from `seed`. Every node's
/// [`check_invariants`](rumor_core::gossip::Gossip::check_invariants) runs
/// after every input; a broken one ends the run as a violation (its reason
/// is also printed by the panic hook).
pub fn run_seed(seed: u64) -> ChaosOutcome {
    match std::panic::catch_unwind(|| run_seed_checked(seed)) {
        Ok(o) => o,
        Err(panic) => {
            let reason = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            ChaosOutcome {
                seed,
                violations: vec![format!("a machine invariant broke: {reason}")],
                ..Default::default()
            }
        }
    }
}

fn run_seed_checked(seed: u64) -> ChaosOutcome {
    let mut r = Rng::new(seed ^ 0x00C4_A05C_4A05);
    let n = 4 + r.index(9);
    let net = NetModel {
        latency_us: 500 + r.below(30_000),
        jitter_us: r.below(20_000) + 1,
        loss: r.below(20) as f64 / 100.0,
        dup: r.below(6) as f64 / 100.0,
    };
    let grace_ms = 5_000 + r.below(20_000);
    let mut w = World::new(
        n,
        seed,
        net.clone(),
        Box::new(move |i, keys| {
            let mut c = Config::new(addr(i), keys);
            c.store = World::store_config(grace_ms);
            c.full_transfer_cooldown = Duration::from_secs(5);
            c
        }),
    );
    w.set_check_invariants(true);
    for i in 0..n {
        w.bootstrap[i] = vec![addr(0), addr((i + 1) % n)];
    }
    for i in 0..n {
        w.start(i);
    }
    let mut floors: Floors = vec![BTreeMap::new(); n];
    let mut violations = Vec::new();
    // The oracle: every entry issued, merged per key.
    let mut truth: BTreeMap<Bytes, Entry> = BTreeMap::new();
    let mut full_transfers = 0u64;

    let fault_end = Instant::ZERO + FAULT_PHASE;
    let mut next_action = Instant::from_micros(2_000_000);
    let mut partition_until: Option<Instant> = None;
    while w.now < fault_end {
        let until = next_action.min(fault_end);
        while w.step(until) {
            for (at, i, c) in std::mem::take(&mut w.changes) {
                check_change(&mut floors, i, &c, at, &mut violations);
            }
            for i in std::mem::take(&mut w.touched) {
                check_served(&w, i, &mut violations);
            }
        }
        if w.now >= fault_end {
            break;
        }
        if partition_until.is_some_and(|t| w.now >= t) {
            for g in w.group.iter_mut() {
                *g = 0;
            }
            partition_until = None;
        }
        // One random action.
        let i = r.index(n);
        let key = Bytes::from(format!("k{}", r.below(KEYS)));
        match r.below(100) {
            0..=44 => {
                let ttl = if r.chance(0.3) { 1_000 + r.below(20_000) } else { 0 };
                let expires_ms = if ttl > 0 { w.wall_ms() + ttl } else { 0 };
                w.input(
                    i,
                    Input::Command(Command::Write {
                        ns: Namespace::DNS,
                        key,
                        value: Bytes::from(format!("v{}", r.next_u32())),
                        expires_ms,
                    }),
                );
            }
            45..=64 => {
                w.input(i, Input::Command(Command::Delete { ns: Namespace::DNS, key }));
            }
            65..=74 => {
                // Partition: a random split of the nodes into two groups,
                // healed within half a grace period. (Both sides of a
                // partition longer than the grace period collect deletes the
                // other never saw; no tombstone scheme survives that, so the
                // grace period must outlast partitions. Crashed nodes, the
                // "fallen behind" case, may stay down for any time.)
                if partition_until.is_none() {
                    for g in w.group.iter_mut() {
                        *g = r.below(2) as u32;
                    }
                    partition_until = Some(w.now + Duration::from_millis(1_000 + r.below(grace_ms / 2)));
                    if std::env::var_os("SIM_TRACE_KEY").is_some() {
                        eprintln!("{:>10}us partition {:?} until {:?}", w.now.as_micros(), w.group, partition_until);
                    }
                }
            }
            75..=84 => {
                for g in w.group.iter_mut() {
                    *g = 0;
                }
                partition_until = None;
            }
            85..=92 => {
                let down = (0..n).filter(|j| !w.is_up(*j)).count();
                if w.is_up(i) && down + 1 < n.div_ceil(2) {
                    if let Some(g) = w.node(i) {
                        full_transfers += g.stats().full_transfers;
                    }
                    trace_fault(&w, "crash", i);
                    w.crash(i);
                }
            }
            _ => {
                if !w.is_up(i) {
                    trace_fault(&w, "restart", i);
                    w.start(i);
                }
            }
        }
        // Local writes show up in the change feed of the writer: the truth.
        for (at, j, c) in std::mem::take(&mut w.changes) {
            if let Change::Applied(e) = &c {
                if w.touched.contains(&j) && e.writer == w.node_id(j) {
                    let m = match truth.remove(&e.key) {
                        Some(old) => merge(old, e.clone()),
                        None => e.clone(),
                    };
                    truth.insert(e.key.clone(), m);
                }
            }
            check_change(&mut floors, j, &c, at, &mut violations);
        }
        for j in std::mem::take(&mut w.touched) {
            check_served(&w, j, &mut violations);
        }
        next_action = w.now + Duration::from_micros(100_000 + r.below(1_500_000));
    }

    // Heal: reconnect, restart everyone, stop loss and duplication.
    for g in w.group.iter_mut() {
        *g = 0;
    }
    w.net.loss = 0.0;
    w.net.dup = 0.0;
    for i in 0..n {
        if !w.is_up(i) {
            trace_fault(&w, "restart at the heal", i);
            w.start(i);
        }
    }
    let healed_at = w.now;
    let deadline = healed_at + HEAL_BOUND;
    let mut converged = false;
    let mut heal_ms = 0;
    while w.now < deadline {
        let until = w.now + Duration::from_millis(500);
        while w.step(until) {
            for (at, i, c) in std::mem::take(&mut w.changes) {
                check_change(&mut floors, i, &c, at, &mut violations);
            }
            for i in std::mem::take(&mut w.touched) {
                check_served(&w, i, &mut violations);
            }
        }
        let wall = w.wall_ms();
        let expected: Vec<(Bytes, Version, u64, Bytes)> = truth
            .values()
            .filter(|e| e.is_live(wall))
            .map(|e| (e.key.clone(), e.version, e.writer, e.value.clone()))
            .collect();
        if (0..n).all(|i| live_view(&w, i, wall) == expected) {
            converged = true;
            heal_ms = (w.now.as_micros() - healed_at.as_micros()) / 1000;
            break;
        }
    }
    if !converged {
        let wall = w.wall_ms();
        let expected: Vec<_> =
            truth.values().filter(|e| e.is_live(wall)).map(|e| (e.key.clone(), e.version, e.writer)).collect();
        let mut msg = format!(
            "did not converge within {}s of the heal; expected {} live keys",
            HEAL_BOUND.as_secs(),
            expected.len()
        );
        for i in 0..n {
            let v: Vec<_> = live_view(&w, i, wall).into_iter().map(|(k, v, wr, _)| (k, v, wr)).collect();
            if v != expected {
                let extra: Vec<_> = v.iter().filter(|x| !expected.contains(x)).collect();
                let missing: Vec<_> = expected.iter().filter(|x| !v.contains(x)).collect();
                let seen: Vec<_> = extra
                    .iter()
                    .chain(missing.iter())
                    .filter_map(|x| w.node(i).map(|g| (x.2, g.store().seen_of(x.2))))
                    .collect();
                msg.push_str(&format!(
                    "\n  node {i} differs: {} live keys; extra {:?}; missing {:?}; \
                     watermarks of their writers {:?}; complete {:?}",
                    v.len(),
                    extra,
                    missing,
                    seen,
                    w.node(i).map(|g| g.store().history_complete())
                ));
            }
        }
        violations.push(msg);
    }
    for g in w.machines() {
        full_transfers += g.stats().full_transfers;
    }
    ChaosOutcome { seed, violations, converged, heal_ms, trace_hash: w.trace_hash(), nodes: n, full_transfers }
}
