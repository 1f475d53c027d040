//! What a leecher asks a seed for: pieces nobody else has first, and a
//! partial piece another peer has only once the seed has nothing better.

use rumor_core::bt::bitfield::Bitfield;
use rumor_core::bt::picker::*;

const KIB16: u64 = 16384;

fn cfg() -> PickerConfig {
    PickerConfig { random_first_pieces: 0, ..PickerConfig::default() }
}

fn bits(n: u32, ones: &[u32]) -> Bitfield {
    let mut b = Bitfield::new(n);
    for &i in ones {
        b.set(i);
    }
    b
}

const LEECHER: PeerKey = 1;
const SEED: PeerKey = 2;

#[test]
fn a_seed_is_asked_for_new_pieces_before_a_partial_piece_another_peer_has() {
    for seed in 0..20 {
        // Eight pieces of four blocks; the other leecher has piece 5.
        let mut p = Picker::new(4 * KIB16, 32 * KIB16, cfg(), seed);
        p.peer_bitfield(LEECHER, &bits(8, &[5]));
        p.peer_have_all(SEED);
        let started = p.pick(LEECHER, 1);
        assert_eq!(started[0].index, 5);
        let from_seed = p.pick(SEED, 8);
        assert_eq!(from_seed.len(), 8);
        assert!(from_seed.iter().all(|r| r.index != 5), "seed {seed}: {from_seed:?}");
        p.check_invariants();
    }
}

#[test]
fn a_seed_finishes_a_partial_piece_another_peer_has_when_nothing_else_is_left() {
    // Two pieces of four blocks; the other leecher has both (it may be
    // choking us by now): one piece is all requested from it, the other
    // only one block.
    let mut p = Picker::new(4 * KIB16, 8 * KIB16, cfg(), 9);
    p.peer_bitfield(LEECHER, &bits(2, &[0, 1]));
    p.peer_have_all(SEED);
    let got = p.pick(LEECHER, 5);
    let other = got[4];
    assert_ne!(got[0].index, other.index);
    let from_seed = p.pick(SEED, 3);
    assert_eq!(from_seed.len(), 3, "{from_seed:?}");
    assert!(from_seed.iter().all(|r| r.index == other.index && *r != other), "{from_seed:?}");
    p.check_invariants();
}

#[test]
fn a_partial_piece_only_the_seed_has_is_finished_from_it_first() {
    let mut p = Picker::new(4 * KIB16, 32 * KIB16, cfg(), 4);
    p.peer_have_all(SEED);
    let first = p.pick(SEED, 1);
    let next = p.pick(SEED, 3);
    assert!(next.iter().all(|r| r.index == first[0].index), "{next:?}");
    p.check_invariants();
}
