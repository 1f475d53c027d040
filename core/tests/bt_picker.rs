use proptest::prelude::*;
use rumor_core::bt::bitfield::Bitfield;
use rumor_core::bt::picker::*;
use rumor_core::bt::wire::BlockRef;
use rumor_core::time::Duration;
use std::collections::BTreeSet;

const KIB16: u64 = 16384;

fn cfg(random_first: u32) -> PickerConfig {
    PickerConfig { random_first_pieces: random_first, ..PickerConfig::default() }
}

fn bits(n: u32, ones: &[u32]) -> Bitfield {
    let mut b = Bitfield::new(n);
    for &i in ones {
        b.set(i);
    }
    b
}

#[test]
fn the_rarest_piece_is_picked_first() {
    let mut p = Picker::new(KIB16, 4 * KIB16, cfg(0), 1);
    p.peer_bitfield(1, &bits(4, &[0, 1, 2, 3]));
    p.peer_bitfield(2, &bits(4, &[0, 1, 3]));
    p.peer_bitfield(3, &bits(4, &[0, 3]));
    // Piece 2 is held by one peer, piece 1 by two.
    let got = p.pick(1, 1);
    assert_eq!(got[0].index, 2);
    let got = p.pick(1, 1);
    assert_eq!(got[0].index, 1);
    p.check_invariants();
}

#[test]
fn ties_between_equally_rare_pieces_are_broken_by_the_seed() {
    let first = |seed| {
        let mut p = Picker::new(KIB16, 64 * KIB16, cfg(0), seed);
        p.peer_have_all(1);
        p.pick(1, 1)[0].index
    };
    let picks: BTreeSet<u32> = (0..20).map(first).collect();
    assert!(picks.len() > 3, "{picks:?}");
    assert_eq!(first(7), first(7));
}

#[test]
fn a_partially_requested_piece_is_finished_before_a_new_one_starts() {
    let mut p = Picker::new(4 * KIB16, 8 * KIB16, cfg(0), 3);
    p.peer_have_all(1);
    p.peer_have_all(2);
    let a = p.pick(1, 1);
    let b = p.pick(2, 3);
    assert!(b.iter().all(|r| r.index == a[0].index));
    assert_eq!(b.len(), 3);
    let c = p.pick(2, 1);
    assert_ne!(c[0].index, a[0].index);
}

#[test]
fn blocks_are_sixteen_kib_and_the_last_one_is_short() {
    let mut p = Picker::new(2 * KIB16, 2 * KIB16 + 100, cfg(0), 3);
    p.peer_have_all(1);
    let got = p.pick(1, 10);
    let set: BTreeSet<BlockRef> = got.into_iter().collect();
    let want: BTreeSet<BlockRef> = [
        BlockRef { index: 0, begin: 0, length: 16384 },
        BlockRef { index: 0, begin: 16384, length: 16384 },
        BlockRef { index: 1, begin: 0, length: 100 },
    ]
    .into_iter()
    .collect();
    assert_eq!(set, want);
}

#[test]
fn endgame_duplicates_outstanding_blocks_and_cancels_the_loser() {
    let mut p = Picker::new(2 * KIB16, 2 * KIB16, cfg(0), 3);
    p.peer_have_all(1);
    p.peer_have_all(2);
    let a = p.pick(1, 10);
    assert_eq!(a.len(), 2);
    assert!(p.in_endgame());
    let b = p.pick(2, 10);
    assert_eq!(b.len(), 2, "both blocks requested again");
    // Nobody else may ask a third time with the default of two requesters.
    p.peer_have_all(3);
    assert!(p.pick(3, 10).is_empty());
    match p.block_received(2, b[0]) {
        Received::New { cancel, piece_complete } => {
            assert_eq!(cancel, vec![1]);
            assert!(!piece_complete);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(p.block_received(1, b[0]), Received::Duplicate);
    p.check_invariants();
}

#[test]
fn a_departed_peers_requests_go_to_others() {
    let mut p = Picker::new(KIB16, 2 * KIB16, cfg(0), 3);
    p.peer_have_all(1);
    p.peer_bitfield(2, &bits(2, &[0, 1]));
    let a = p.pick(1, 2);
    assert_eq!(a.len(), 2);
    assert!(p.pick(2, 2).iter().all(|r| a.contains(r)), "endgame only");
    let freed = p.peer_left(1);
    assert_eq!(freed.len(), 2);
    assert_eq!(p.availability(0), 1);
    p.check_invariants();
    assert_eq!(p.outstanding_count(2), 2);
}

#[test]
fn a_failed_piece_blames_its_senders_and_is_downloaded_again() {
    let mut p = Picker::new(2 * KIB16, 2 * KIB16, cfg(0), 3);
    p.peer_have_all(1);
    p.peer_have_all(2);
    let a = p.pick(1, 1);
    let b = p.pick(2, 1);
    assert!(matches!(p.block_received(1, a[0]), Received::New { piece_complete: false, .. }));
    assert!(matches!(p.block_received(2, b[0]), Received::New { piece_complete: true, .. }));
    assert_eq!(p.piece_failed(0), [1, 2].into_iter().collect());
    p.check_invariants();
    assert_eq!(p.pick(1, 5).len(), 2);
    assert!(!p.have().get(0));
}

#[test]
fn a_block_with_a_wrong_offset_or_length_is_invalid() {
    let mut p = Picker::new(2 * KIB16, 2 * KIB16, cfg(0), 3);
    p.peer_have_all(1);
    let bad = [
        BlockRef { index: 0, begin: 1, length: 16384 },
        BlockRef { index: 0, begin: 0, length: 100 },
        BlockRef { index: 5, begin: 0, length: 16384 },
    ];
    for r in bad {
        assert_eq!(p.block_received(1, r), Received::Invalid);
    }
}

#[test]
fn interest_follows_what_the_peer_has_that_we_lack() {
    let mut p = Picker::new(KIB16, 3 * KIB16, cfg(0), 3);
    p.peer_bitfield(1, &bits(3, &[1]));
    assert!(p.is_interesting(1));
    p.piece_verified(1);
    assert!(!p.is_interesting(1));
    p.peer_have(1, 2);
    assert!(p.is_interesting(1));
    p.check_invariants();
}

#[test]
fn queue_depth_scales_with_rate_and_is_clamped() {
    let d = Duration::from_secs(3);
    assert_eq!(request_queue_depth(0, d, 16384), 2);
    assert_eq!(request_queue_depth(1_000_000, d, 16384), 183);
    assert_eq!(request_queue_depth(100_000_000, d, 16384), 500);
}

#[test]
fn a_swarm_of_partial_peers_completes_the_download() {
    let n = 50u32;
    let mut p = Picker::new(3 * KIB16, n as u64 * 3 * KIB16 - 5, PickerConfig::default(), 9);
    for peer in 0..5u64 {
        let ones: Vec<u32> = (0..n).filter(|i| !(*i as u64 + peer).is_multiple_of(3)).collect();
        p.peer_bitfield(peer, &bits(n, &ones));
    }
    let mut rounds = 0;
    while !p.is_complete() {
        rounds += 1;
        assert!(rounds < 10_000, "livelock");
        for peer in 0..5u64 {
            for r in p.pick(peer, 4) {
                if let Received::New { piece_complete: true, .. } = p.block_received(peer, r) {
                    p.piece_verified(r.index);
                }
            }
        }
        p.check_invariants();
    }
}

#[derive(Clone, Debug)]
enum Op {
    Bitfield(u64, Vec<bool>),
    Have(u64, u32),
    HaveAll(u64),
    HaveNone(u64),
    Left(u64),
    Pick(u64, usize),
    ReceiveOutstanding(u64, usize),
    Fail(u64, usize),
    PieceDone(u32, bool),
    /// One priority per piece (3 counts as 2).
    Priorities(Vec<u8>),
}

fn op(n: u32) -> impl Strategy<Value = Op> {
    let peer = 0u64..4;
    prop_oneof![
        (peer.clone(), proptest::collection::vec(any::<bool>(), n as usize)).prop_map(|(p, b)| Op::Bitfield(p, b)),
        (peer.clone(), 0..n + 1).prop_map(|(p, i)| Op::Have(p, i)),
        peer.clone().prop_map(Op::HaveAll),
        peer.clone().prop_map(Op::HaveNone),
        peer.clone().prop_map(Op::Left),
        (peer.clone(), 0usize..8).prop_map(|(p, k)| Op::Pick(p, k)),
        (peer.clone(), 0usize..8).prop_map(|(p, k)| Op::ReceiveOutstanding(p, k)),
        (peer, 0usize..8).prop_map(|(p, k)| Op::Fail(p, k)),
        (0..n, any::<bool>()).prop_map(|(i, ok)| Op::PieceDone(i, ok)),
        proptest::collection::vec(0u8..4, 0..n as usize + 2).prop_map(Op::Priorities),
    ]
}

fn run_model(n: u32, ops: Vec<Op>, seed: u64) {
    let mut p = Picker::new(2 * KIB16, n as u64 * 2 * KIB16 - 1, cfg(2), seed);
    let mut has: std::collections::BTreeMap<u64, Bitfield> = Default::default();
    let mut prio = vec![1u8; n as usize];
    for o in ops {
        match o {
            Op::Bitfield(k, b) => {
                let ones: Vec<u32> = (0..n).filter(|i| b[*i as usize]).collect();
                let bf = bits(n, &ones);
                p.peer_bitfield(k, &bf);
                has.insert(k, bf);
            }
            Op::Have(k, i) => {
                p.peer_have(k, i);
                has.entry(k).or_insert_with(|| Bitfield::new(n)).set(i);
            }
            Op::HaveAll(k) => {
                p.peer_have_all(k);
                has.insert(k, Bitfield::full(n));
            }
            Op::HaveNone(k) => {
                p.peer_have_none(k);
                has.insert(k, Bitfield::new(n));
            }
            Op::Left(k) => {
                p.peer_left(k);
                has.remove(&k);
            }
            Op::Pick(k, m) => {
                let before: BTreeSet<BlockRef> = p.outstanding(k).into_iter().collect();
                let endgame = p.in_endgame();
                for r in p.pick(k, m) {
                    assert!(has.get(&k).is_some_and(|b| b.get(r.index)), "asked a peer for a piece it lacks");
                    assert!(!p.have().get(r.index));
                    assert!(prio[r.index as usize] > 0, "asked for a skipped piece");
                    assert!(!before.contains(&r), "same block twice to one peer");
                    let _ = endgame;
                }
            }
            Op::ReceiveOutstanding(k, i) => {
                let out = p.outstanding(k);
                if !out.is_empty() {
                    let r = out[i % out.len()];
                    let _ = p.block_received(k, r);
                }
            }
            Op::Fail(k, i) => {
                let out = p.outstanding(k);
                if !out.is_empty() {
                    p.request_failed(k, out[i % out.len()]);
                }
            }
            Op::PieceDone(i, ok) => {
                if ok {
                    p.piece_verified(i);
                } else {
                    let _ = p.piece_failed(i);
                }
            }
            Op::Priorities(v) => {
                for (i, slot) in prio.iter_mut().enumerate() {
                    *slot = v.get(i).copied().unwrap_or(1).min(2);
                }
                for (k, r) in p.set_priorities(&v) {
                    assert_eq!(prio[r.index as usize], 0, "withdrew a request for a wanted piece");
                    assert!(!p.outstanding(k).contains(&r), "a withdrawn request is still outstanding");
                }
            }
        }
        p.check_invariants();
        for i in 0..n {
            let expect = has.values().filter(|b| b.get(i)).count() as u32;
            assert_eq!(p.availability(i), expect);
            assert_eq!(p.priority(i), prio[i as usize]);
        }
    }
    // Liveness: whatever happened, a lone seed brings in every wanted
    // piece, and no skipped one, in a bounded number of rounds.
    // Pieces whose blocks all came in await a hash answer that the ops
    // may not have given: answer "failed" so they are fetched again.
    for i in 0..n {
        if !p.have().get(i) && !p.contributors(i).is_empty() {
            let _ = p.piece_failed(i);
        }
    }
    for k in 0..4 {
        p.peer_left(k);
    }
    p.peer_have_all(99);
    let blocks: u32 = (0..n).map(|i| p.blocks_in(i)).sum();
    let mut rounds = 0;
    while !p.wanted_complete() {
        rounds += 1;
        assert!(rounds <= blocks + 1, "a wanted piece is never picked");
        for r in p.pick(99, 3) {
            assert!(prio[r.index as usize] > 0, "asked for a skipped piece");
            if let Received::New { piece_complete: true, .. } = p.block_received(99, r) {
                p.piece_verified(r.index);
            }
        }
        p.check_invariants();
    }
    for i in 0..n {
        assert!(prio[i as usize] == 0 || p.have().get(i), "wanted piece {i} missing");
    }
    let wanted: u64 = (0..n).filter(|i| prio[*i as usize] > 0).map(|i| p.piece_size(i)).sum();
    assert_eq!(p.wanted_bytes(), wanted);
    assert_eq!(p.wanted_done_bytes(), wanted);
    assert_eq!(p.is_complete(), p.have().is_full());
}

proptest! {
    #[test]
    fn bookkeeping_stays_consistent_under_any_sequence(
        ops in proptest::collection::vec(op(9), 0..80),
        seed in any::<u64>(),
    ) {
        run_model(9, ops, seed);
    }

    #[test]
    fn wire_bitfields_round_trip(ones in proptest::collection::btree_set(0u32..77, 0..77)) {
        let b = bits(77, &ones.iter().copied().collect::<Vec<_>>());
        let w = b.to_wire();
        prop_assert_eq!(w.len(), 10);
        prop_assert_eq!(Bitfield::from_wire(&w, 77), Some(b.clone()));
        prop_assert_eq!(b.iter_ones().collect::<BTreeSet<_>>(), ones);
    }
}

#[test]
fn a_piece_that_failed_is_downloaded_again_from_one_peer_only() {
    let mut p = Picker::new(4 * KIB16, 4 * KIB16, cfg(0), 3);
    p.peer_have_all(1);
    p.peer_have_all(2);
    let a = p.pick(1, 2);
    let b = p.pick(2, 2);
    for r in a.iter() {
        p.block_received(1, *r);
    }
    for r in b.iter() {
        p.block_received(2, *r);
    }
    assert_eq!(p.piece_failed(0).len(), 2);
    let a = p.pick(1, 1);
    assert_eq!(a.len(), 1);
    // The piece belongs to peer 1 now; peer 2 gets nothing else of it.
    assert!(p.pick(2, 4).is_empty());
    assert_eq!(p.pick(1, 8).len(), 3);
    // If its owner leaves, anyone may finish it.
    p.peer_left(1);
    assert_eq!(p.pick(2, 8).len(), 4);
    p.check_invariants();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// 300 pieces: enough for the rarest-first scan to run out of budget
    /// and hand over to the bitfield pass.
    #[test]
    fn bookkeeping_stays_consistent_with_many_pieces(
        ops in proptest::collection::vec(op(300), 0..60),
        seed in any::<u64>(),
    ) {
        run_model(300, ops, seed);
    }
}

#[test]
fn a_peer_lacking_the_rarest_pieces_still_gets_its_own_rarest() {
    let n = 10_000u32;
    let mut p = Picker::new(KIB16, n as u64 * KIB16, cfg(0), 5);
    let low: Vec<u32> = (0..5000).collect();
    let low_but_42: Vec<u32> = (0..5000).filter(|i| *i != 42).collect();
    let all: Vec<u32> = (0..n).collect();
    p.peer_bitfield(1, &bits(n, &low));
    p.peer_bitfield(2, &bits(n, &all));
    p.peer_bitfield(3, &bits(n, &low_but_42));
    // Pieces 5000.. are rarest (one peer) but peer 1 has none of them; of
    // its pieces, 42 is the rarest.
    assert_eq!(p.pick(1, 1)[0].index, 42);
    let next = p.pick(1, 3);
    assert!(next.iter().all(|r| r.index < 5000));
    p.check_invariants();
}

#[test]
fn a_block_of_a_piece_not_in_progress_is_unrequested_and_dropped() {
    let mut p = Picker::new(2 * KIB16, 4 * KIB16, cfg(0), 3);
    p.peer_have_all(1);
    let r = BlockRef { index: 1, begin: 0, length: 16384 };
    assert_eq!(p.block_received(1, r), Received::Unrequested);
    p.check_invariants();
    // A late block of a piece in progress is kept.
    let got = p.pick(1, 1);
    p.request_failed(1, got[0]);
    let other = p.pick(1, 1);
    let late = BlockRef { index: got[0].index, begin: 16384 - got[0].begin, length: 16384 };
    if other[0].index == got[0].index {
        assert!(matches!(p.block_received(1, late), Received::New { .. }));
    }
    p.check_invariants();
}

#[test]
fn a_skipped_piece_is_never_requested() {
    let mut p = Picker::new(KIB16, 8 * KIB16, cfg(0), 5);
    p.peer_have_all(1);
    p.set_priorities(&[1, 0, 1, 0, 1, 0, 1, 0]);
    let got: BTreeSet<u32> = p.pick(1, 100).iter().map(|r| r.index).collect();
    assert_eq!(got, [0, 2, 4, 6].into_iter().collect());
    assert!(p.pick(1, 100).is_empty(), "only skipped pieces are left");
    p.check_invariants();
}

#[test]
fn high_priority_pieces_are_started_before_normal_ones_rarest_first() {
    let mut p = Picker::new(KIB16, 16 * KIB16, cfg(4), 6);
    p.peer_have_all(1);
    // Piece 12 is rarer than 9 (a second peer has 9), both are high.
    p.peer_bitfield(2, &bits(16, &[9, 3]));
    let mut prio = vec![1u8; 16];
    prio[9] = 2;
    prio[12] = 2;
    p.set_priorities(&prio);
    // Even while the first pieces would be picked at random.
    let got: Vec<u32> = p.pick(1, 3).iter().map(|r| r.index).collect();
    assert_eq!(got[..2], [12, 9]);
    assert_ne!(got[2], 9);
    assert_ne!(got[2], 12);
    p.check_invariants();
}

#[test]
fn a_peer_without_high_pieces_still_gets_normal_ones() {
    let mut p = Picker::new(KIB16, 8 * KIB16, cfg(0), 6);
    p.peer_bitfield(1, &bits(8, &[1, 2]));
    p.set_priorities(&[2, 1, 1, 1, 1, 1, 1, 1]);
    let got: BTreeSet<u32> = p.pick(1, 10).iter().map(|r| r.index).collect();
    assert_eq!(got, [1, 2].into_iter().collect());
}

#[test]
fn skipping_a_piece_in_progress_withdraws_its_requests() {
    let mut p = Picker::new(2 * KIB16, 2 * KIB16, cfg(0), 3);
    p.peer_have_all(1);
    let got = p.pick(1, 2);
    assert_eq!(got.len(), 2);
    p.block_received(1, got[0]);
    let withdrawn = p.set_priorities(&[0]);
    assert_eq!(withdrawn, vec![(1, got[1])]);
    assert_eq!(p.outstanding_count(1), 0);
    assert!(p.wanted_complete());
    assert!(!p.is_complete());
    assert_eq!(p.block_received(1, got[1]), Received::Unrequested);
    assert!(!p.is_interesting(1));
    p.check_invariants();
    // Wanted again: downloaded from scratch.
    assert!(p.set_priorities(&[1]).is_empty());
    assert!(p.is_interesting(1));
    assert_eq!(p.pick(1, 8).len(), 2);
    p.check_invariants();
}

#[test]
fn interest_ignores_what_we_skip() {
    let mut p = Picker::new(KIB16, 4 * KIB16, cfg(0), 1);
    p.peer_bitfield(1, &bits(4, &[2]));
    assert!(p.is_interesting(1));
    p.set_priorities(&[1, 1, 0, 1]);
    assert!(!p.is_interesting(1));
    p.peer_have(1, 3);
    assert!(p.is_interesting(1));
    p.check_invariants();
}

#[test]
fn wanted_bytes_count_pieces_not_skipped() {
    let mut p = Picker::new(KIB16, 3 * KIB16 + 10, cfg(0), 1);
    assert_eq!(p.wanted_bytes(), 3 * KIB16 + 10);
    p.piece_verified(0);
    p.set_priorities(&[0, 1, 0, 2]);
    assert_eq!(p.wanted_bytes(), KIB16 + 10);
    assert_eq!(p.wanted_done_bytes(), 0);
    p.piece_verified(3);
    assert_eq!(p.wanted_done_bytes(), 10);
    p.set_priorities(&[1, 1, 1, 1]);
    assert_eq!(p.wanted_bytes(), 3 * KIB16 + 10);
    assert_eq!(p.wanted_done_bytes(), KIB16 + 10);
    p.check_invariants();
}

#[test]
fn endgame_starts_when_every_wanted_block_is_requested() {
    let mut p = Picker::new(KIB16, 4 * KIB16, cfg(0), 2);
    p.peer_have_all(1);
    p.peer_have_all(2);
    p.set_priorities(&[0, 1, 0, 0]);
    assert_eq!(p.pick(1, 8).len(), 1);
    assert!(p.in_endgame());
    let dup = p.pick(2, 8);
    assert_eq!(dup.len(), 1);
    assert_eq!(dup[0].index, 1);
    p.check_invariants();
}

#[test]
fn a_common_piece_wanted_again_lands_in_its_availability_bucket() {
    // Skipped while peers announce it, so its availability outgrows every
    // bucket; wanting it again must still file it correctly.
    let mut p = Picker::new(KIB16, 4 * KIB16, cfg(0), 4);
    p.set_priorities(&[1, 0, 1, 1]);
    for k in 0..5 {
        p.peer_have(k, 1);
    }
    p.peer_have(9, 0);
    p.check_invariants();
    p.set_priorities(&[1, 1, 1, 1]);
    p.check_invariants();
    assert_eq!(p.availability(1), 5);
    // Rarest first now takes piece 2 or 3 (held by nobody but the seed).
    p.peer_have_all(20);
    let first = p.pick(20, 1)[0].index;
    assert!(first == 2 || first == 3, "{first}");
}

#[test]
fn in_endgame_only_a_peer_with_few_requests_out_is_asked_for_duplicates() {
    // One piece of four blocks, all asked of peer 1: endgame.
    let mut p = Picker::new(4 * KIB16, 4 * KIB16, cfg(0), 3);
    for peer in 1..=3 {
        p.peer_have_all(peer);
    }
    assert_eq!(p.pick(1, 10).len(), 4);
    assert!(p.in_endgame());
    // An idle peer takes at most `endgame_requests_per_peer` duplicates,
    // however deep its pipeline.
    let per_peer = PickerConfig::default().endgame_requests_per_peer;
    let b = p.pick(2, 10);
    assert_eq!(b.len(), per_peer);
    // While they are out it takes no more.
    assert!(p.pick(2, 10).is_empty());
    // Another idle peer takes blocks nobody asked twice yet.
    let c = p.pick(3, 10);
    assert_eq!(c.len(), per_peer);
    assert!(c.iter().all(|r| !b.contains(r)));
    // Once one of its duplicates arrives, peer 2 may take one more: none
    // is left with fewer than two requesters but the one it has.
    assert!(matches!(p.block_received(2, b[0]), Received::New { .. }));
    p.check_invariants();
}
