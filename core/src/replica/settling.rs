//! The settled summary: the anti-entropy summary as it will be once the
//! writes still spreading by push have reached everyone.
//!
//! Two nodes compare summaries once a second. Under a steady write load
//! almost every pair differed, and only because a push was still on its
//! way to one of them: each such comparison started a digest exchange
//! (two digests of up to a thousand writers) that found nothing the push
//! would not have brought a moment later. Here a change of the summary
//! enters it only `settle_ms` after the wall-clock time of the version
//! that caused it. Both nodes of a pair then count a pushed write at the
//! same instant, whenever each received it, as long as each received it
//! within `settle_ms` of its writing; a write still missing later than
//! that makes the summaries differ, and the exchange repairs it. A write
//! that arrives after its settling time (anti-entropy catching up on old
//! writes) counts at once.
//!
//! The terms wait in a timing wheel of `SLOT_MS` slots: XOR and counts
//! commute, so a slot needs no list, and the memory is a few hundred bytes
//! whatever the write rate.

use crate::time::UnixMillis;

/// Width of one slot of the wheel. Both nodes round a term's settling
/// instant up to the same slot boundary, so the rounding cannot split them.
const SLOT_MS: u64 = 100;

/// Terms of the summary hash and writer count still waiting to settle.
#[derive(Clone, Debug)]
pub(super) struct Settling {
    settle_ms: u64,
    /// Per slot: the XOR of the hash terms and the writers that settle in it.
    slots: Box<[(u64, u32)]>,
    /// The first slot (in `SLOT_MS` units since the epoch) not yet settled.
    next: u64,
    /// XOR of every term still waiting.
    xor: u64,
    /// Writers still waiting to be counted.
    writers: u32,
    /// The earliest slot that may hold a term (`u64::MAX` if none does).
    /// Most inputs settle nothing, and the slots are a separate heap block:
    /// checking this first spares every one of them a cache miss (2.6 % of
    /// a 10,000-node simulation).
    first_busy: u64,
}

impl Settling {
    /// A wheel delaying terms by `settle_ms` (0: every term counts at once).
    pub(super) fn new(settle_ms: u64) -> Self {
        let len = if settle_ms == 0 { 0 } else { settle_ms.div_ceil(SLOT_MS) as usize + 2 };
        Settling {
            settle_ms,
            slots: vec![(0, 0); len].into_boxed_slice(),
            next: 0,
            xor: 0,
            writers: 0,
            first_busy: u64::MAX,
        }
    }

    /// Settles every slot up to `now_ms`. A clock that went back settles
    /// nothing more until it passes where it was.
    pub(super) fn advance(&mut self, now_ms: UnixMillis) {
        let len = self.slots.len() as u64;
        if len == 0 {
            return;
        }
        let now_slot = now_ms / SLOT_MS;
        if self.next > now_slot {
            return;
        }
        if self.first_busy > now_slot {
            self.next = now_slot + 1;
            return;
        }
        // Past a full turn every slot is due: one pass suffices.
        let from = self.next.max(now_slot.saturating_sub(len - 1)).max(self.first_busy);
        for s in from..=now_slot {
            let slot = &mut self.slots[(s % len) as usize];
            self.xor ^= slot.0;
            self.writers -= slot.1;
            *slot = (0, 0);
        }
        self.next = now_slot + 1;
        // The wheel now holds slots `next..next + len` only.
        self.first_busy =
            (self.next..self.next + len).find(|s| self.slots[(s % len) as usize] != (0, 0)).unwrap_or(u64::MAX);
    }

    /// A change of the summary by `term` (and `new_writers` more writers)
    /// caused by a version written at `version_ms`, seen at `now_ms` (the
    /// last [`advance`](Self::advance)). It settles at `version_ms +
    /// settle_ms`, but never later than `settle_ms` from now, so a clock
    /// far ahead cannot hold it back longer.
    pub(super) fn delay(&mut self, term: u64, new_writers: u32, version_ms: UnixMillis, now_ms: UnixMillis) {
        let len = self.slots.len() as u64;
        if len == 0 {
            return;
        }
        let due = version_ms.saturating_add(self.settle_ms).min(now_ms.saturating_add(self.settle_ms));
        let slot = due.div_ceil(SLOT_MS);
        // `next` is past `now_ms`'s slot: a due slot before it is already
        // settled, and one at most `len - 1` after it fits in the wheel.
        if slot < self.next || slot >= self.next + len {
            return;
        }
        self.first_busy = self.first_busy.min(slot);
        let s = &mut self.slots[(slot % len) as usize];
        s.0 ^= term;
        s.1 += new_writers;
        self.xor ^= term;
        self.writers += new_writers;
    }

    /// XOR of the terms still waiting: the settled hash is the full hash
    /// with these taken out again.
    pub(super) fn waiting_xor(&self) -> u64 {
        self.xor
    }

    /// Writers not yet counted in the settled summary.
    pub(super) fn waiting_writers(&self) -> u32 {
        self.writers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_term_waits_until_its_version_is_settle_ms_old() {
        let mut s = Settling::new(2000);
        s.advance(10_000);
        s.delay(0xAB, 1, 9_500, 10_000);
        assert_eq!((s.waiting_xor(), s.waiting_writers()), (0xAB, 1));
        s.advance(11_400);
        assert_eq!(s.waiting_xor(), 0xAB);
        s.advance(11_500);
        assert_eq!((s.waiting_xor(), s.waiting_writers()), (0, 0));
    }

    #[test]
    fn old_versions_count_at_once_and_future_ones_wait_at_most_settle_ms() {
        let mut s = Settling::new(2000);
        s.advance(10_000);
        s.delay(1, 0, 1_000, 10_000);
        assert_eq!(s.waiting_xor(), 0);
        s.delay(2, 0, 90_000, 10_000);
        assert_eq!(s.waiting_xor(), 2);
        s.advance(12_000);
        assert_eq!(s.waiting_xor(), 0);
    }

    #[test]
    fn two_nodes_receiving_a_write_at_different_times_agree_once_settled() {
        let (mut a, mut b) = (Settling::new(2000), Settling::new(2000));
        a.advance(10_050);
        a.delay(7, 1, 10_000, 10_050);
        b.advance(11_900);
        b.delay(7, 1, 10_000, 11_900);
        // Until the write settles both leave it out; after, both count it.
        assert_eq!(a.waiting_xor(), b.waiting_xor());
        a.advance(12_000);
        b.advance(12_000);
        assert_eq!((a.waiting_xor(), a.waiting_writers()), (0, 0));
        assert_eq!((b.waiting_xor(), b.waiting_writers()), (0, 0));
    }

    #[test]
    fn a_jump_of_many_turns_settles_everything() {
        let mut s = Settling::new(500);
        s.advance(0);
        for t in 0..7 {
            s.delay(1 << t, 1, t * 100, 0);
        }
        s.advance(1_000_000);
        assert_eq!((s.waiting_xor(), s.waiting_writers()), (0, 0));
        // And the clock going back changes nothing.
        s.advance(10);
        s.delay(5, 1, 0, 10);
        assert_eq!(s.waiting_xor(), 0);
    }

    #[test]
    fn zero_settles_at_once() {
        let mut s = Settling::new(0);
        s.advance(5);
        s.delay(9, 1, 5, 5);
        assert_eq!((s.waiting_xor(), s.waiting_writers()), (0, 0));
    }

    proptest::proptest! {
        /// Whatever the order and timing of the changes, the terms still
        /// waiting are exactly those whose settling slot is still ahead.
        #[test]
        fn waiting_terms_are_those_not_yet_due(
            ops in proptest::collection::vec((proptest::prelude::any::<u64>(), 0u64..6_000, 0u64..700), 0..200),
        ) {
            let settle = 1_500;
            let mut s = Settling::new(settle);
            let mut now = 50_000u64;
            s.advance(now);
            let mut model: Vec<(u64, u64)> = Vec::new();
            for (term, version_back, step) in ops {
                now += step;
                s.advance(now);
                // Versions from 5 s back to 1 s ahead of our clock.
                let version_ms = (now + 1_000).saturating_sub(version_back);
                s.delay(term, 1, version_ms, now);
                let slot = (version_ms + settle).min(now + settle).div_ceil(SLOT_MS);
                model.push((term, slot));
                let ahead: Vec<&(u64, u64)> = model.iter().filter(|(_, slot)| *slot > now / SLOT_MS).collect();
                let xor = ahead.iter().fold(0, |x, (t, _)| x ^ t);
                proptest::prop_assert_eq!(s.waiting_xor(), xor);
                proptest::prop_assert_eq!(s.waiting_writers() as usize, ahead.len());
            }
        }
    }
}
