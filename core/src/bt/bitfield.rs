//! A fixed-length bitset of pieces, convertible to and from the wire's
//! MSB-first bitfield. Use it for "which pieces does X have".

/// A set of piece indexes `0..len`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Bitfield {
    words: Vec<u64>,
    len: u32,
    ones: u32,
}

impl Bitfield {
    /// An empty set over `len` pieces.
    pub fn new(len: u32) -> Bitfield {
        Bitfield { words: vec![0; (len as usize).div_ceil(64)], len, ones: 0 }
    }

    /// The full set over `len` pieces.
    pub fn full(len: u32) -> Bitfield {
        let mut b = Bitfield::new(len);
        for i in 0..len {
            b.set(i);
        }
        b
    }

    /// Reads a wire bitfield (bit 7 of byte 0 is piece 0). `None` if the
    /// length is not `ceil(len / 8)` or a spare bit is set.
    pub fn from_wire(bytes: &[u8], len: u32) -> Option<Bitfield> {
        if bytes.len() != (len as usize).div_ceil(8) {
            return None;
        }
        let mut b = Bitfield::new(len);
        for (i, &byte) in bytes.iter().enumerate() {
            for bit in 0..8 {
                if byte & (0x80 >> bit) != 0 {
                    let idx = (i * 8 + bit) as u32;
                    if idx >= len {
                        return None;
                    }
                    b.set(idx);
                }
            }
        }
        Some(b)
    }

    /// The wire form (MSB-first, spare bits zero).
    pub fn to_wire(&self) -> Vec<u8> {
        let mut out = vec![0u8; (self.len as usize).div_ceil(8)];
        for i in self.iter_ones() {
            out[(i / 8) as usize] |= 0x80 >> (i % 8);
        }
        out
    }

    /// Number of pieces the set ranges over.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// True if it ranges over no pieces.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of members.
    pub fn count(&self) -> u32 {
        self.ones
    }

    /// True if every piece is a member.
    pub fn is_full(&self) -> bool {
        self.ones == self.len
    }

    /// Whether piece `i` is a member (false when out of range).
    pub fn get(&self, i: u32) -> bool {
        i < self.len && self.words[(i / 64) as usize] & (1 << (i % 64)) != 0
    }

    /// Adds piece `i`; returns true if it was not a member. Out of range
    /// indexes are ignored (returns false).
    pub fn set(&mut self, i: u32) -> bool {
        if i >= self.len {
            return false;
        }
        let w = &mut self.words[(i / 64) as usize];
        let m = 1u64 << (i % 64);
        if *w & m != 0 {
            return false;
        }
        *w |= m;
        self.ones += 1;
        true
    }

    /// Removes piece `i`; returns true if it was a member.
    pub fn clear(&mut self, i: u32) -> bool {
        if i >= self.len {
            return false;
        }
        let w = &mut self.words[(i / 64) as usize];
        let m = 1u64 << (i % 64);
        if *w & m == 0 {
            return false;
        }
        *w &= !m;
        self.ones -= 1;
        true
    }

    /// Members in increasing order.
    pub fn iter_ones(&self) -> impl Iterator<Item = u32> + '_ {
        self.words.iter().enumerate().flat_map(|(wi, &w)| {
            let mut w = w;
            std::iter::from_fn(move || {
                if w == 0 {
                    return None;
                }
                let b = w.trailing_zeros();
                w &= w - 1;
                Some(wi as u32 * 64 + b)
            })
        })
    }

    /// The members as 64-bit words, bit `i % 64` of word `i / 64` for
    /// piece `i`; for word-at-a-time set algebra inside the crate.
    pub(crate) fn words(&self) -> &[u64] {
        &self.words
    }

    /// True if `self` has a member that `other` lacks (word-at-a-time).
    pub fn has_any_not_in(&self, other: &Bitfield) -> bool {
        self.words.iter().zip(other.words.iter().chain(std::iter::repeat(&0))).any(|(a, b)| a & !b != 0)
    }
}
