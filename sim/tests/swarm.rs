//! The BitTorrent swarm on virtual time: every leecher completes, near the
//! Kumar & Ross bound, and a seed replays to the same trace.

use sim::swarm::{run, SwarmOpts};

fn small(seed: u64) -> SwarmOpts {
    SwarmOpts { peers: 8, pieces: 64, piece_kib: 64, seed, ..SwarmOpts::default() }
}

#[test]
fn every_leecher_completes_within_twice_the_lower_bound() {
    for seed in 1..=3 {
        let r = run(&small(seed));
        assert_eq!(r.completed, r.peers, "seed {seed}");
        assert!(r.secs_all >= r.bound_secs * 0.99, "no run beats the bound: {r:?}");
        assert!(r.secs_all <= r.bound_secs * 2.0, "seed {seed}: {:.1} s vs bound {:.1} s", r.secs_all, r.bound_secs);
    }
}

#[test]
fn the_same_seed_gives_the_same_swarm_trace() {
    let a = run(&small(7));
    let b = run(&small(7));
    assert_eq!(a.trace_hash, b.trace_hash);
    assert_eq!(a.secs_all, b.secs_all);
    assert_ne!(run(&small(8)).trace_hash, a.trace_hash, "another seed, another run");
}

#[test]
fn the_default_torrent_is_cut_as_rumor_create_cuts_it() {
    let o = SwarmOpts::default();
    let bytes = o.pieces as u64 * o.piece_kib * 1024;
    assert_eq!(o.piece_kib * 1024, rumor_core::bt::metainfo::choose_piece_length(bytes));
}
