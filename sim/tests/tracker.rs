//! Many clients announcing through several trackers on virtual time: every
//! announce is answered within the park timeout, every client still there
//! is listed by every node, no client that left stays listed (the
//! `completed`/`stopped` race included), the parked bound holds, and a seed
//! replays to the same trace.

use sim::tracker::{run, TrackerOpts};

fn small(seed: u64) -> TrackerOpts {
    TrackerOpts { nodes: 3, clients: 40, torrents: 5, interval_s: 30, duration_s: 90, seed, ..TrackerOpts::default() }
}

#[test]
fn every_client_is_answered_listed_while_there_and_forgotten_once_it_leaves() {
    for seed in 1..=2 {
        let r = run(&small(seed));
        eprintln!("seed {seed}:\n{}", r.text());
        assert_eq!(r.answered, r.announces, "seed {seed}: every announce is answered");
        assert!(r.latency_max_ms <= 2_000.0, "seed {seed}: answers wait at most the park timeout");
        assert!(r.parked > 0, "seed {seed}: lone peers waited for lookups");
        assert_eq!(r.providers_seen_min, r.providers_expected, "seed {seed}: every node lists every client");
        assert_eq!(r.stopped_listed, 0, "seed {seed}: a client that left is still listed");
    }
}

#[test]
fn the_parked_bound_holds_under_a_burst() {
    let r = run(&TrackerOpts { parked_max: 2, clients: 80, torrents: 40, ..small(5) });
    assert!(r.parked_peak <= 2, "{r:?}");
    assert_eq!(r.answered, r.announces);
}

#[test]
fn the_same_seed_gives_the_same_tracker_trace() {
    let a = run(&small(7));
    let b = run(&small(7));
    assert_eq!(a.trace_hash, b.trace_hash);
    assert_ne!(run(&small(8)).trace_hash, a.trace_hash, "another seed, another run");
}
