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
//!   WireGuard's anti-replay window). A number already marked, or below the
//!   window, is dropped. Reordering of up to [`SEQ_WINDOW`] messages is
//!   tolerated, far more than TCP per-peer queues produce.
//! * Restarts: a node's sequence starts at its wall clock in ms times 1024,
//!   so a restarted node numbers its messages above the ones it sent before
//!   (unless it sent over a million messages a second, or its clock went
//!   back), and peers that remember its window accept them.
//! * Memory: at most `Config::replay_senders_max` senders are tracked
//!   (24 bytes of window each, plus the map's). A new sender past the bound
//!   takes the place of the tracked sender whose newest message is oldest,
//!   but only if that message is older than the time window: then every
//!   message of the forgotten sender that could be replayed is stale
//!   anyway, so forgetting it opens no hole. If every tracked sender was
//!   heard within the window, the new sender's message is dropped (counted
//!   as replayed): the member table is bounded by the same number, so a
//!   real cluster never gets there.
//! * What is left: a node that restarts forgets its windows, so a message
//!   captured less than a window before the restart can be accepted once
//!   more after it (once: its number then enters the new window).

use std::collections::BTreeMap;

use crate::replica::NodeId;

/// Sequence numbers below a sender's highest accepted one that are
/// remembered (one bit each).
pub const SEQ_WINDOW: u64 = 128;

/// What the receiver remembers of one sender.
#[derive(Clone, Copy, Debug)]
pub(super) struct Window {
    /// The highest sequence number accepted.
    top: u64,
    /// Bit `i` set: `top - i` was accepted (bit 0 is `top` itself).
    seen: u128,
    /// The newest `sent_ms` accepted, for the eviction rule.
    newest_ms: u64,
}

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

/// The windows of the senders heard, bounded.
#[derive(Clone, Debug, Default)]
pub(super) struct Replay {
    windows: BTreeMap<NodeId, Window>,
}

impl Replay {
    /// Senders tracked.
    pub(super) fn len(&self) -> usize {
        self.windows.len()
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
        let Some(w) = self.windows.get_mut(&from) else {
            if self.windows.len() >= max.max(1) {
                // The sender whose newest message is oldest goes, if all its
                // messages are stale by now (see the module doc).
                let oldest = self.windows.iter().min_by_key(|(_, w)| w.newest_ms).map(|(id, w)| (*id, w.newest_ms));
                match oldest {
                    Some((id, newest)) if newest.saturating_add(window_ms) < now_ms => {
                        self.windows.remove(&id);
                    }
                    _ => return Verdict::Replayed,
                }
            }
            self.windows.insert(from, Window { top: seq, seen: 1, newest_ms: sent_ms });
            return Verdict::Fresh;
        };
        if seq > w.top {
            let shift = seq - w.top;
            w.seen = if shift >= SEQ_WINDOW { 0 } else { w.seen << shift };
            w.seen |= 1;
            w.top = seq;
        } else {
            let back = w.top - seq;
            if back >= SEQ_WINDOW {
                return Verdict::Stale;
            }
            if w.seen & (1u128 << back) != 0 {
                return Verdict::Replayed;
            }
            w.seen |= 1u128 << back;
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
}
