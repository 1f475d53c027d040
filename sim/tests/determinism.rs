//! The same seed twice gives the same trace hash; another seed does not.

use sim::chaos;
use sim::spread::{self, SpreadOpts};

#[test]
fn the_same_seed_twice_gives_the_same_trace_hash() {
    let o = SpreadOpts { nodes: 30, seed: 7, loss: 0.1, dup: 0.02, secs: 15, warmup_secs: 5, ..SpreadOpts::default() };
    let a = spread::run(&o);
    let b = spread::run(&o);
    assert_eq!(a.trace_hash, b.trace_hash);
    let c = spread::run(&SpreadOpts { seed: 8, ..o });
    assert_ne!(a.trace_hash, c.trace_hash);
    assert_eq!(a.converged, 1.0);
}

#[test]
fn a_chaos_seed_replays_to_the_same_trace_and_passes() {
    let a = chaos::run_seed(3);
    let b = chaos::run_seed(3);
    assert_eq!(a.trace_hash, b.trace_hash);
    assert!(a.violations.is_empty(), "{:?}", a.violations);
    assert!(a.converged);
}

#[test]
fn a_handful_of_chaos_seeds_keep_every_invariant_and_converge() {
    for seed in 100..108 {
        let o = chaos::run_seed(seed);
        assert!(
            o.violations.is_empty(),
            "seed {seed}: {:?}\nreplay: cargo run -p sim -- chaos --seed {seed}",
            o.violations
        );
        assert!(o.converged, "seed {seed} did not converge");
    }
}

#[test]
fn the_thread_count_does_not_change_the_run() {
    let o = SpreadOpts {
        nodes: 40,
        seed: 11,
        loss: 0.05,
        dup: 0.05,
        secs: 12,
        warmup_secs: 4,
        threads: 1,
        parallel_min_events: 1,
        ..SpreadOpts::default()
    };
    let one = spread::run(&o);
    let two = spread::run(&SpreadOpts { threads: 2, ..o.clone() });
    let three = spread::run(&SpreadOpts { threads: 3, ..o });
    assert_eq!(one.trace_hash, two.trace_hash);
    assert_eq!(one.trace_hash, three.trace_hash);
    assert_eq!(one.rounds_100, two.rounds_100);
}

#[test]
fn sharing_entries_across_nodes_does_not_change_the_run() {
    let o = SpreadOpts {
        nodes: 40,
        seed: 5,
        loss: 0.05,
        secs: 12,
        warmup_secs: 4,
        providers: 60,
        reannounce_s: 3,
        threads: 2,
        parallel_min_events: 1,
        ..SpreadOpts::default()
    };
    let shared = spread::run(&o);
    let apart = spread::run(&SpreadOpts { shared_entries: false, ..o.clone() });
    assert_eq!(shared.trace_hash, apart.trace_hash);
    assert_eq!(shared.converged, 1.0);
    let random = spread::run(&SpreadOpts { random_ids: true, ..o });
    assert_eq!(random.converged, 1.0);
    assert_ne!(random.trace_hash, shared.trace_hash, "ids are on the wire");
}
