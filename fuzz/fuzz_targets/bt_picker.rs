#![no_main]
//! Drives the picker with an arbitrary operation sequence (piece
//! priorities included) and checks its bookkeeping after every step.
use libfuzzer_sys::fuzz_target;
use rumor_core::bt::bitfield::Bitfield;
use rumor_core::bt::picker::{Picker, PickerConfig};

fuzz_target!(|data: &[u8]| {
    let n = 13u32;
    let mut p = Picker::new(32768, n as u64 * 32768 - 7, PickerConfig::default(), 5);
    for op in data.chunks(3) {
        let [a, b, c] = [op[0], *op.get(1).unwrap_or(&0), *op.get(2).unwrap_or(&0)];
        let peer = (a >> 4) as u64 % 4;
        match a % 9 {
            0 => {
                let mut bf = Bitfield::new(n);
                let bits = u16::from_le_bytes([b, c]);
                for i in 0..n {
                    if bits & (1 << i) != 0 {
                        bf.set(i);
                    }
                }
                p.peer_bitfield(peer, &bf);
            }
            1 => p.peer_have(peer, b as u32 % (n + 1)),
            2 => p.peer_have_all(peer),
            3 => p.peer_have_none(peer),
            4 => {
                p.peer_left(peer);
            }
            5 => {
                for r in p.pick(peer, b as usize % 8) {
                    assert!(p.priority(r.index) > 0, "a skipped piece was requested");
                }
            }
            6 => {
                let out = p.outstanding(peer);
                if !out.is_empty() {
                    let _ = p.block_received(peer, out[b as usize % out.len()]);
                }
            }
            7 => {
                let out = p.outstanding(peer);
                if !out.is_empty() {
                    p.request_failed(peer, out[b as usize % out.len()]);
                }
            }
            _ if c & 3 == 3 => {
                // Priorities: bits of b skip, bits of c raise (piece i % 8).
                let prio: Vec<u8> = (0..n)
                    .map(|i| {
                        if b & (1 << (i % 8)) != 0 {
                            0
                        } else if c & (1 << (i % 8)) != 0 {
                            2
                        } else {
                            1
                        }
                    })
                    .collect();
                for (k, r) in p.set_priorities(&prio) {
                    assert_eq!(prio[r.index as usize], 0, "withdrew a request for a wanted piece");
                    assert!(!p.outstanding(k).contains(&r), "a withdrawn request is still outstanding");
                }
            }
            _ => {
                if c & 1 == 0 {
                    p.piece_verified(b as u32 % n);
                } else {
                    let _ = p.piece_failed(b as u32 % n);
                }
            }
        }
        p.check_invariants();
    }
});
