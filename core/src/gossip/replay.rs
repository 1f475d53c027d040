//! Anti-replay: which authentic messages are fresh.
//!
//! Every [`Packet`](super::Packet) carries its sender's wall-clock time
//! (`sent_ms`) and a sequence number (`seq`), sealed with the rest. A
//! message is accepted once, and only while it is young:
//!
//! * Time: `sent_ms` must be within `Config::replay_window` (30 s by
//!   default) of the receiver's wall clock, either way. The window is also
//!   the clock skew the cluster tolerates between two nodes: a node whose
//!   clock is off by more is not heard (its messages are counted as stale).
//!   The store already refuses versions more than a minute ahead, so the
//!   clocks must agree anyway.
//! * Sequence: per sender, a sliding window of the last [`SEQ_WINDOW`]
//!   numbers below the highest accepted one, as a bitmap (IPsec's and
//!   WireGuard's anti-replay window; 64 is IPsec's default). A number
//!   already marked, or below the window, is dropped. Reordering of up to
//!   [`SEQ_WINDOW`] messages is tolerated, far more than TCP per-peer
//!   queues produce. (It was 128: the second word of bitmap made a
//!   sender's slot 40 bytes instead of 32, a fifth of the table, which is
//!   an eighth of a node's memory in a 100,000-node simulation.)
//! * Restarts: a node's sequence starts at its wall clock in ms times 1024,
//!   so a restarted node numbers its messages above the ones it sent before
//!   (unless it sent over a million messages a second, or its clock went
//!   back), and peers that remember its window accept them.
//! * Memory: at most `Config::replay_senders_max` senders are tracked
//!   (a 32-byte slot each, in a table at most seven eighths full). A new sender past the bound
//!   takes the place of the tracked sender whose newest message is oldest,
//!   but only if that message is older than the time window: then every
//!   message of the forgotten sender that could be replayed is stale
//!   anyway, so forgetting it opens no hole. If every tracked sender was
//!   heard within the window, the new sender's message is dropped (counted
//!   as replayed): the member table is bounded by the same number, so a
//!   real cluster never gets there. Before the table grows, the senders
//!   forgettable by that same rule are dropped: in a large cluster a node
//!   hears a slowly changing set of peers, and the table would otherwise
//!   keep every sender it ever heard (at 10,000 simulated nodes, one in
//!   eight tables doubled for senders silent for longer than the window).
//! * What is left: a node that restarts forgets its windows, so a message
//!   captured less than a window before the restart can be accepted once
//!   more after it (once: its number then enters the new window).

use crate::replica::NodeId;

/// Sequence numbers below a sender's highest accepted one that are
/// remembered (one bit each).
pub const SEQ_WINDOW: u64 = 64;

/// What the receiver remembers of one sender, in one slot of the table.
/// 32 bytes, two to a cache line: this runs on every message received.
#[derive(Clone, Copy, Debug)]
struct Slot {
    /// The sender.
    id: NodeId,
    /// The highest sequence number accepted.
    top: u64,
    /// Bit `i` set: `top - i` was accepted (bit 0 is `top` itself).
    seen: u64,
    /// The newest `sent_ms` accepted, for the eviction rule; `EMPTY` marks
    /// a free slot.
    newest_ms: u64,
}

/// `newest_ms` of a free slot (a real one is clamped below it).
const EMPTY: u64 = u64::MAX;

const FREE: Slot = Slot { id: 0, top: 0, seen: 0, newest_ms: EMPTY };

/// The verdict on a message's stamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Fresh: it has been recorded.
    Fresh,
    /// Sent outside the time window, or numbered below the sender's window.
    Stale,
    /// Seen already (or no room to track a new sender).
    Replayed,
}

/// The windows of the senders heard, bounded: an open-addressing table
/// (linear probing, at most seven eighths full, so at most about 2.3
/// slots of 32 bytes per tracked sender: a node of a 1,000-node simulation
/// hears about 100 senders within a window, which fit in 128 slots) keyed
/// by sender id. It replaced an ordered
/// map whose walk from root to leaf was the costliest memory access of
/// the simulator at 10,000 nodes (issue 16); nothing here depends on an
/// order of senders, except the eviction, which breaks ties by id.
#[derive(Clone, Debug, Default)]
pub(super) struct Replay {
    slots: Vec<Slot>,
    len: usize,
}

fn home(id: NodeId, mask: usize) -> usize {
    // Fibonacci hashing: node ids may be sequential (the simulator's) or
    // random (real nodes); the top bits of the product spread both.
    (id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize & mask
}

impl Replay {
    /// Senders tracked.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The slot holding `id`, if tracked.
    fn find(&self, id: NodeId) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut i = home(id, mask);
        loop {
            let s = &self.slots[i];
            if s.newest_ms == EMPTY {
                return None;
            }
            if s.id == id {
                return Some(i);
            }
            i = (i + 1) & mask;
        }
    }

    fn put(slots: &mut [Slot], s: Slot) {
        let mask = slots.len() - 1;
        let mut i = home(s.id, mask);
        while slots[i].newest_ms != EMPTY {
            i = (i + 1) & mask;
        }
        slots[i] = s;
    }

    fn insert(&mut self, s: Slot, now_ms: u64, window_ms: u64) {
        if (self.len + 1) * 8 > self.slots.len() * 7 {
            self.forget_stale(now_ms, window_ms);
        }
        if (self.len + 1) * 8 > self.slots.len() * 7 {
            let cap = (self.slots.len() * 2).max(16);
            let old = std::mem::replace(&mut self.slots, vec![FREE; cap]);
            for o in old.into_iter().filter(|o| o.newest_ms != EMPTY) {
                Self::put(&mut self.slots, o);
            }
        }
        Self::put(&mut self.slots, s);
        self.len += 1;
    }

    /// Drops every sender whose newest message is older than the window:
    /// whatever of theirs could be replayed is stale by its time stamp.
    fn forget_stale(&mut self, now_ms: u64, window_ms: u64) {
        let mut i = 0;
        while i < self.slots.len() {
            let s = &self.slots[i];
            if s.newest_ms != EMPTY && s.newest_ms.saturating_add(window_ms) < now_ms {
                // The slot now holds the next one of its probe run (or is
                // free): look at it again.
                self.remove_at(i);
            } else {
                i += 1;
            }
        }
    }

    /// Frees slot `i`, shifting back the slots of its probe run so every
    /// remaining id is still found from its home slot.
    fn remove_at(&mut self, mut i: usize) {
        let mask = self.slots.len() - 1;
        self.slots[i] = FREE;
        self.len -= 1;
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            if self.slots[j].newest_ms == EMPTY {
                return;
            }
            let h = home(self.slots[j].id, mask);
            // Move j back to i unless its home lies cyclically in (i, j].
            let stays = if i <= j { i < h && h <= j } else { i < h || h <= j };
            if !stays {
                self.slots[i] = self.slots[j];
                self.slots[j] = FREE;
                i = j;
            }
        }
    }

    /// Checks and records the message `seq` of `from`, sent at `sent_ms`,
    /// received at `now_ms`; `window_ms` is the time window, `max` the
    /// senders tracked at most. Only a fresh message changes anything.
    pub(super) fn check(
        &mut self,
        from: NodeId,
        seq: u64,
        sent_ms: u64,
        now_ms: u64,
        window_ms: u64,
        max: usize,
    ) -> Verdict {
        if sent_ms.saturating_add(window_ms) < now_ms || sent_ms > now_ms.saturating_add(window_ms) {
            return Verdict::Stale;
        }
        // A real stamp never reaches the free-slot marker.
        let sent_ms = sent_ms.min(EMPTY - 1);
        let Some(k) = self.find(from) else {
            if self.len >= max.max(1) {
                // The sender whose newest message is oldest (the smallest
                // id among equals) goes, if all its messages are stale by
                // now (see the module doc).
                let oldest = self
                    .slots
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.newest_ms != EMPTY)
                    .min_by_key(|(_, s)| (s.newest_ms, s.id))
                    .map(|(i, s)| (i, s.newest_ms));
                match oldest {
                    Some((i, newest)) if newest.saturating_add(window_ms) < now_ms => self.remove_at(i),
                    _ => return Verdict::Replayed,
                }
            }
            self.insert(Slot { id: from, top: seq, seen: 1, newest_ms: sent_ms }, now_ms, window_ms);
            return Verdict::Fresh;
        };
        let w = &mut self.slots[k];
        if seq > w.top {
            let shift = seq - w.top;
            let seen = if shift >= SEQ_WINDOW { 0 } else { w.seen << shift };
            w.seen = seen | 1;
            w.top = seq;
        } else {
            let back = w.top - seq;
            if back >= SEQ_WINDOW {
                return Verdict::Stale;
            }
            if w.seen & (1u64 << back) != 0 {
                return Verdict::Replayed;
            }
            w.seen |= 1u64 << back;
        }
        w.newest_ms = w.newest_ms.max(sent_ms);
        Verdict::Fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000_000;
    const WIN: u64 = 30_000;

    #[test]
    fn a_number_is_accepted_once_and_reordering_within_the_window_is_fine() {
        let mut r = Replay::default();
        assert_eq!(r.check(1, 100, NOW, NOW, WIN, 8), Verdict::Fresh);
        assert_eq!(r.check(1, 100, NOW, NOW, WIN, 8), Verdict::Replayed);
        assert_eq!(r.check(1, 102, NOW, NOW, WIN, 8), Verdict::Fresh);
        assert_eq!(r.check(1, 101, NOW, NOW, WIN, 8), Verdict::Fresh, "late but new");
        assert_eq!(r.check(1, 101, NOW, NOW, WIN, 8), Verdict::Replayed);
        assert_eq!(r.check(1, 102 + SEQ_WINDOW, NOW, NOW, WIN, 8), Verdict::Fresh);
        assert_eq!(r.check(1, 102, NOW, NOW, WIN, 8), Verdict::Stale, "below the window");
        assert_eq!(r.check(2, 100, NOW, NOW, WIN, 8), Verdict::Fresh, "another sender's numbers are its own");
    }

    #[test]
    fn senders_silent_for_a_window_are_dropped_before_the_table_grows() {
        let mut r = Replay::default();
        for id in 1..=14 {
            assert_eq!(r.check(id, 1, NOW, NOW, WIN, 4096), Verdict::Fresh);
        }
        assert_eq!((r.len(), r.slots.len()), (14, 16), "seven eighths of 16 slots");
        // Later, two of them are still talking and new senders come.
        let later = NOW + WIN + 1_000;
        assert_eq!(r.check(3, 2, later, later, WIN, 4096), Verdict::Fresh);
        assert_eq!(r.check(9, 2, later, later, WIN, 4096), Verdict::Fresh);
        for id in 100..110 {
            assert_eq!(r.check(id, 1, later, later, WIN, 4096), Verdict::Fresh);
        }
        assert_eq!((r.len(), r.slots.len()), (12, 16), "the twelve silent ones went instead of a doubling");
        // The ones kept still refuse their replays; a forgotten sender's old
        // message is stale by its time stamp, a fresh one is accepted.
        assert_eq!(r.check(3, 2, later, later, WIN, 4096), Verdict::Replayed);
        assert_eq!(r.check(105, 1, later, later, WIN, 4096), Verdict::Replayed);
        assert_eq!(r.check(5, 1, NOW, later, WIN, 4096), Verdict::Stale);
        assert_eq!(r.check(5, 2, later, later, WIN, 4096), Verdict::Fresh);
    }

    #[test]
    fn a_message_outside_the_time_window_is_stale_either_way() {
        let mut r = Replay::default();
        assert_eq!(r.check(1, 1, NOW - WIN - 1, NOW, WIN, 8), Verdict::Stale);
        assert_eq!(r.check(1, 2, NOW + WIN + 1, NOW, WIN, 8), Verdict::Stale);
        assert_eq!(r.check(1, 3, NOW - WIN, NOW, WIN, 8), Verdict::Fresh);
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn a_new_sender_past_the_bound_replaces_only_a_sender_silent_for_a_whole_window() {
        let mut r = Replay::default();
        assert_eq!(r.check(1, 1, NOW, NOW, WIN, 2), Verdict::Fresh);
        assert_eq!(r.check(2, 1, NOW + 10, NOW + 10, WIN, 2), Verdict::Fresh);
        assert_eq!(r.check(3, 1, NOW + 20, NOW + 20, WIN, 2), Verdict::Replayed, "both heard within the window");
        assert_eq!(r.len(), 2);
        let later = NOW + WIN + 1;
        assert_eq!(r.check(3, 1, later, later, WIN, 2), Verdict::Fresh, "sender 1 went stale and gave way");
        assert_eq!(r.len(), 2);
        assert_eq!(r.check(1, 1, NOW, later, WIN, 2), Verdict::Stale, "its old messages stay refused");
    }

    /// The ordered map this table replaced, as the reference.
    #[derive(Default)]
    struct Reference(std::collections::BTreeMap<NodeId, (u64, u64, u64)>);

    impl Reference {
        fn check(&mut self, from: NodeId, seq: u64, sent_ms: u64, now_ms: u64, max: usize) -> Verdict {
            if sent_ms + WIN < now_ms || sent_ms > now_ms + WIN {
                return Verdict::Stale;
            }
            let Some((top, seen, newest)) = self.0.get_mut(&from) else {
                if self.0.len() >= max {
                    let oldest = self.0.iter().min_by_key(|(_, w)| w.2).map(|(id, w)| (*id, w.2));
                    match oldest {
                        Some((id, n)) if n + WIN < now_ms => {
                            self.0.remove(&id);
                        }
                        _ => return Verdict::Replayed,
                    }
                }
                self.0.insert(from, (seq, 1, sent_ms));
                return Verdict::Fresh;
            };
            if seq > *top {
                let shift = seq - *top;
                *seen = if shift >= SEQ_WINDOW { 0 } else { *seen << shift };
                *seen |= 1;
                *top = seq;
            } else {
                let back = *top - seq;
                if back >= SEQ_WINDOW {
                    return Verdict::Stale;
                }
                if *seen & (1u64 << back) != 0 {
                    return Verdict::Replayed;
                }
                *seen |= 1u64 << back;
            }
            *newest = (*newest).max(sent_ms);
            Verdict::Fresh
        }
    }

    #[test]
    fn the_table_gives_the_verdicts_of_an_ordered_map_through_growth_and_evictions() {
        let mut rng = crate::rand::Rng::new(7);
        let mut r = Replay::default();
        let mut reference = Reference::default();
        let max = 40;
        let mut now = NOW;
        for step in 0..200_000u64 {
            now += rng.below(300);
            // Senders drawn from a pool larger than the bound, some silent
            // for long stretches, so evictions happen and fail both ways.
            let id = if step % 3 == 0 { rng.below(200) } else { rng.below(30) * 7 + 1 };
            let seq = 1_000 + step / 4 + rng.below(200);
            let sent = now.saturating_sub(rng.below(WIN + 2_000));
            let v = r.check(id, seq, sent, now, WIN, max);
            assert_eq!(v, reference.check(id, seq, sent, now, max), "step {step}: sender {id} seq {seq}");
            // The table may have forgotten senders the reference keeps, only
            // ones silent for a whole window (dropped before growing); the
            // reference forgets them too, so both go on alike.
            reference.0.retain(|id, (_, _, newest)| {
                r.find(*id).is_some() || {
                    assert!(*newest + WIN < now, "step {step}: sender {id} heard within the window was dropped");
                    false
                }
            });
            assert_eq!(r.len(), reference.0.len());
        }
        for id in reference.0.keys() {
            assert!(r.find(*id).is_some(), "sender {id} is tracked but cannot be found");
        }
    }
}
