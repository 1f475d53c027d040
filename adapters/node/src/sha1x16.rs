//! SHA-1 of many pieces at once: sixteen messages of equal length in the
//! sixteen 32-bit lanes of AVX-512 registers, one 64-byte block of each per
//! step.
//!
//! Why: verifying pieces is most of a download's CPU time. SHA-1 is a
//! chain (each block needs the state the one before left), so one message
//! cannot go faster than the CPU's SHA instructions take it, about 2 cycles
//! a byte here. Sixteen independent messages can: a round is seven vector
//! operations for sixteen lanes, about 0.5 cycles a byte for each. The
//! pieces of a torrent are independent and, but for the last, all of one
//! length, which is what this needs.
//!
//! [`digest_pieces`] takes pieces as lists of chunks (the 16 KiB blocks a
//! download holds them in) and hashes them in groups of up to sixteen of
//! one length when the CPU has AVX-512 (F and BW), and one by one with the
//! `sha1` crate otherwise, for a group too small to pay for the vectors,
//! and for chunks whose lengths do not split into whole 64-byte blocks.
//! Its answers are the `sha1` crate's, which the tests check on random
//! inputs.

use rumor_core::bt::metainfo::Sha1Hash;
use sha1::{Digest, Sha1};

/// Messages hashed side by side at most.
pub const LANES: usize = 16;

/// Fewer pieces of one length than this are hashed one by one: the SHA
/// instructions beat a vector step that is mostly empty lanes.
pub const MIN_LANES: usize = 4;

/// Whether this CPU can hash sixteen pieces at once.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bw")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The SHA-1 of each piece, in order. A piece is the concatenation of its
/// chunks.
pub fn digest_pieces<C: AsRef<[u8]>>(pieces: &[&[C]]) -> Vec<Sha1Hash> {
    digest_pieces_with(pieces, available())
}

/// [`digest_pieces`], with the vector path allowed or not (for tests and
/// benches that compare the two).
pub fn digest_pieces_with<C: AsRef<[u8]>>(pieces: &[&[C]], vectors: bool) -> Vec<Sha1Hash> {
    let mut out = vec![[0u8; 20]; pieces.len()];
    let mut scalar: Vec<usize> = Vec::new();
    if vectors {
        // Group by length, keeping each group's order; a group of one
        // length goes in runs of at most LANES.
        let mut by_len: Vec<(u64, Vec<usize>)> = Vec::new();
        for (i, p) in pieces.iter().enumerate() {
            if !blocks_align(p) {
                scalar.push(i);
                continue;
            }
            let len = p.iter().map(|c| c.as_ref().len() as u64).sum();
            match by_len.iter_mut().find(|(l, _)| *l == len) {
                Some((_, v)) => v.push(i),
                None => by_len.push((len, vec![i])),
            }
        }
        for (len, idx) in by_len {
            for run in idx.chunks(LANES) {
                if run.len() < MIN_LANES {
                    scalar.extend_from_slice(run);
                    continue;
                }
                let lanes: Vec<&[C]> = run.iter().map(|&i| pieces[i]).collect();
                let digests = vector_digest(&lanes, len);
                for (&i, d) in run.iter().zip(digests) {
                    out[i] = d;
                }
            }
        }
    } else {
        scalar.extend(0..pieces.len());
    }
    for i in scalar {
        let mut h = Sha1::new();
        for c in pieces[i] {
            h.update(c.as_ref());
        }
        out[i] = h.finalize().into();
    }
    out
}

/// Every chunk but the last is a whole number of 64-byte blocks, so each
/// block of the message lies inside one chunk.
fn blocks_align<C: AsRef<[u8]>>(chunks: &[C]) -> bool {
    chunks.split_last().is_none_or(|(_, init)| init.iter().all(|c| c.as_ref().len() % 64 == 0))
}

/// Hashes 1..=LANES messages of `len` bytes each whose chunks pass
/// [`blocks_align`]; the caller checked the CPU.
fn vector_digest<C: AsRef<[u8]>>(lanes: &[&[C]], len: u64) -> Vec<Sha1Hash> {
    #[cfg(target_arch = "x86_64")]
    {
        debug_assert!(!lanes.is_empty() && lanes.len() <= LANES);
        let mut state = x86::State::new();
        let mut cursors: Vec<Cursor<'_, C>> = lanes.iter().map(|c| Cursor { chunks: c, chunk: 0, at: 0 }).collect();
        let whole = len / 64;
        let mut ptrs = [std::ptr::null::<u8>(); LANES];
        for _ in 0..whole {
            for (lane, cur) in cursors.iter_mut().enumerate() {
                ptrs[lane] = cur.next_block();
            }
            // Empty lanes hash lane 0's block again; their answers are dropped.
            let first = ptrs[0];
            for p in ptrs.iter_mut().skip(lanes.len()) {
                *p = first;
            }
            // SAFETY: each pointer is to 64 readable bytes (next_block),
            // and the caller checked the CPU has AVX-512 F and BW.
            unsafe { x86::compress(&mut state, &ptrs) };
        }
        // The tail and padding: the same number of blocks in every lane,
        // since every message has the same length.
        let rem = (len % 64) as usize;
        let tail_blocks = if rem < 56 { 1 } else { 2 };
        let mut pads = vec![[0u8; 128]; lanes.len()];
        for (pad, cur) in pads.iter_mut().zip(&mut cursors) {
            let tail = cur.rest();
            debug_assert_eq!(tail.len(), rem);
            pad[..rem].copy_from_slice(tail);
            pad[rem] = 0x80;
            let end = tail_blocks * 64;
            pad[end - 8..end].copy_from_slice(&(len * 8).to_be_bytes());
        }
        for b in 0..tail_blocks {
            for (lane, p) in ptrs.iter_mut().enumerate() {
                *p = pads[lane.min(lanes.len() - 1)][b * 64..].as_ptr();
            }
            // SAFETY: as above; each pointer is into a 128-byte pad at 0 or 64.
            unsafe { x86::compress(&mut state, &ptrs) };
        }
        state.digests(lanes.len())
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (lanes, len);
        unreachable!("available() is false off x86_64")
    }
}

/// Where a lane stands in its message.
#[cfg(target_arch = "x86_64")]
struct Cursor<'a, C> {
    chunks: &'a [C],
    chunk: usize,
    at: usize,
}

#[cfg(target_arch = "x86_64")]
impl<C: AsRef<[u8]>> Cursor<'_, C> {
    /// The next whole 64-byte block (the message has one: the caller
    /// counts them).
    fn next_block(&mut self) -> *const u8 {
        loop {
            let c = self.chunks[self.chunk].as_ref();
            if self.at + 64 <= c.len() {
                let p = c[self.at..self.at + 64].as_ptr();
                self.at += 64;
                return p;
            }
            self.chunk += 1;
            self.at = 0;
        }
    }

    /// What is left after the whole blocks: under 64 bytes.
    fn rest(&mut self) -> &[u8] {
        while self.chunk < self.chunks.len() {
            let c = self.chunks[self.chunk].as_ref();
            if self.at < c.len() {
                return &c[self.at..];
            }
            self.chunk += 1;
            self.at = 0;
        }
        &[]
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::LANES;
    use rumor_core::bt::metainfo::Sha1Hash;
    use std::arch::x86_64::*;

    /// The five state words of sixteen lanes.
    pub struct State {
        h: [[u32; LANES]; 5],
    }

    impl State {
        pub fn new() -> State {
            const H: [u32; 5] = [0x6745_2301, 0xEFCD_AB89, 0x98BA_DCFE, 0x1032_5476, 0xC3D2_E1F0];
            State { h: H.map(|v| [v; LANES]) }
        }

        /// The digests of the first `n` lanes.
        pub fn digests(&self, n: usize) -> Vec<Sha1Hash> {
            (0..n)
                .map(|lane| {
                    let mut d = [0u8; 20];
                    for (w, out) in d.chunks_exact_mut(4).enumerate() {
                        out.copy_from_slice(&self.h[w][lane].to_be_bytes());
                    }
                    d
                })
                .collect()
        }
    }

    #[inline(always)]
    unsafe fn add(a: __m512i, b: __m512i) -> __m512i {
        _mm512_add_epi32(a, b)
    }

    /// One 64-byte block of each lane: `blocks[i]` points at lane i's.
    ///
    /// # Safety
    /// The CPU has AVX-512 F and BW, and every pointer is to 64 readable
    /// bytes.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub unsafe fn compress(state: &mut State, blocks: &[*const u8; LANES]) {
        // SAFETY: the caller's promises, passed on.
        unsafe {
            let rows: [__m512i; LANES] = std::array::from_fn(|i| _mm512_loadu_si512(blocks[i] as *const __m512i));
            let mut w = transpose(rows);
            // Big-endian words.
            let swap = _mm512_broadcast_i32x4(_mm_set_epi8(12, 13, 14, 15, 8, 9, 10, 11, 4, 5, 6, 7, 0, 1, 2, 3));
            for x in w.iter_mut() {
                *x = _mm512_shuffle_epi8(*x, swap);
            }
            let h: [__m512i; 5] = std::array::from_fn(|i| _mm512_loadu_si512(state.h[i].as_ptr() as *const __m512i));
            let (mut a, mut b, mut c, mut d, mut e) = (h[0], h[1], h[2], h[3], h[4]);
            macro_rules! round {
                ($t:expr, $f:expr, $k:expr) => {{
                    let t: usize = $t;
                    if t >= 16 {
                        let x = _mm512_ternarylogic_epi32::<0x96>(w[(t - 3) & 15], w[(t - 8) & 15], w[(t - 14) & 15]);
                        w[t & 15] = _mm512_rol_epi32::<1>(_mm512_xor_si512(x, w[t & 15]));
                    }
                    let f = _mm512_ternarylogic_epi32::<$f>(b, c, d);
                    let k = _mm512_set1_epi32($k as i32);
                    let tmp = add(add(_mm512_rol_epi32::<5>(a), f), add(e, add(k, w[t & 15])));
                    e = d;
                    d = c;
                    c = _mm512_rol_epi32::<30>(b);
                    b = a;
                    a = tmp;
                }};
            }
            // Every round written out, so each `w[t & 15]` is a register.
            macro_rules! rounds {
                ($f:expr, $k:expr; $($t:literal)*) => { $( round!($t, $f, $k); )* };
            }
            rounds!(0xCA, 0x5A82_7999u32; 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19);
            rounds!(0x96, 0x6ED9_EBA1u32; 20 21 22 23 24 25 26 27 28 29 30 31 32 33 34 35 36 37 38 39);
            rounds!(0xE8, 0x8F1B_BCDCu32; 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59);
            rounds!(0x96, 0xCA62_C1D6u32; 60 61 62 63 64 65 66 67 68 69 70 71 72 73 74 75 76 77 78 79);
            let out = [add(h[0], a), add(h[1], b), add(h[2], c), add(h[3], d), add(h[4], e)];
            for (dst, v) in state.h.iter_mut().zip(out) {
                _mm512_storeu_si512(dst.as_mut_ptr() as *mut __m512i, v);
            }
        }
    }

    /// Rows of sixteen words to columns: out[t] lane i = rows[i] word t.
    #[inline(always)]
    unsafe fn transpose(r: [__m512i; LANES]) -> [__m512i; LANES] {
        // SAFETY: only called from `compress`, which has the features.
        unsafe {
            // Words, then pairs of words, interleaved within 128-bit lanes:
            // u[4g + j] holds, in its 128-bit lane k, word 4k + j of rows
            // 4g..4g + 4.
            let t: [__m512i; LANES] = std::array::from_fn(|i| {
                let (x, y) = (r[i & !1], r[i | 1]);
                if i % 2 == 0 {
                    _mm512_unpacklo_epi32(x, y)
                } else {
                    _mm512_unpackhi_epi32(x, y)
                }
            });
            let mut u = [_mm512_setzero_si512(); LANES];
            for g in 0..4 {
                let (t0, t1, t2, t3) = (t[4 * g], t[4 * g + 1], t[4 * g + 2], t[4 * g + 3]);
                u[4 * g] = _mm512_unpacklo_epi64(t0, t2);
                u[4 * g + 1] = _mm512_unpackhi_epi64(t0, t2);
                u[4 * g + 2] = _mm512_unpacklo_epi64(t1, t3);
                u[4 * g + 3] = _mm512_unpackhi_epi64(t1, t3);
            }
            // Then the 128-bit lanes: out[4k + j] = lane k of u[j], u[4 + j],
            // u[8 + j], u[12 + j].
            let mut out = [_mm512_setzero_si512(); LANES];
            for j in 0..4 {
                let (a, b, c, d) = (u[j], u[4 + j], u[8 + j], u[12 + j]);
                let s0 = _mm512_shuffle_i32x4::<0x44>(a, b);
                let s1 = _mm512_shuffle_i32x4::<0xEE>(a, b);
                let s2 = _mm512_shuffle_i32x4::<0x44>(c, d);
                let s3 = _mm512_shuffle_i32x4::<0xEE>(c, d);
                out[j] = _mm512_shuffle_i32x4::<0x88>(s0, s2);
                out[4 + j] = _mm512_shuffle_i32x4::<0xDD>(s0, s2);
                out[8 + j] = _mm512_shuffle_i32x4::<0x88>(s1, s3);
                out[12 + j] = _mm512_shuffle_i32x4::<0xDD>(s1, s3);
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn scalar(pieces: &[Vec<Vec<u8>>]) -> Vec<Sha1Hash> {
        pieces.iter().map(|p| Sha1::digest(p.concat()).into()).collect()
    }

    fn refs(pieces: &[Vec<Vec<u8>>]) -> Vec<&[Vec<u8>]> {
        pieces.iter().map(|p| p.as_slice()).collect()
    }

    #[test]
    fn sixteen_pieces_of_16_kib_blocks_hash_as_the_sha1_crate_does() {
        let pieces: Vec<Vec<Vec<u8>>> = (0..16u8)
            .map(|i| (0..4u8).map(|b| (0..16384u32).map(|x| (x as u8) ^ i.wrapping_mul(31) ^ b).collect()).collect())
            .collect();
        assert_eq!(digest_pieces(&refs(&pieces)), scalar(&pieces));
        assert_eq!(digest_pieces_with(&refs(&pieces), false), scalar(&pieces));
    }

    #[test]
    fn every_tail_length_pads_as_sha1_does() {
        if !available() {
            return;
        }
        for len in 0..200usize {
            let pieces: Vec<Vec<Vec<u8>>> = (0..LANES as u8).map(|i| vec![vec![i; len]]).collect();
            assert_eq!(vector_digest(&refs(&pieces), len as u64), scalar(&pieces), "length {len}");
        }
    }

    proptest! {
        #[test]
        fn random_pieces_in_random_chunks_hash_as_the_sha1_crate_does(
            count in 1usize..40,
            blocks in 0usize..6,
            tail in 0usize..130,
            odd in proptest::collection::vec((0usize..40, 0usize..300), 0..4),
            seed in any::<u64>(),
        ) {
            // Most pieces one length (whole blocks and a tail), split into
            // 64-byte multiples; a few of other lengths or with unaligned
            // chunks, which must take the scalar path.
            let mut x = seed | 1;
            let mut byte = move || { x ^= x << 13; x ^= x >> 7; x ^= x << 17; x as u8 };
            let mut pieces: Vec<Vec<Vec<u8>>> = (0..count)
                .map(|_| {
                    let mut chunks: Vec<Vec<u8>> = (0..blocks).map(|_| (0..128).map(|_| byte()).collect()).collect();
                    chunks.push((0..tail).map(|_| byte()).collect());
                    chunks
                })
                .collect();
            for (at, len) in odd {
                let i = at % pieces.len();
                pieces[i] = vec![(0..len).map(|_| byte()).collect(), (0..len / 2).map(|_| byte()).collect()];
            }
            prop_assert_eq!(digest_pieces(&refs(&pieces)), scalar(&pieces));
        }
    }
}
