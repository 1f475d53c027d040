//! The world's pending events: a timing wheel of 1,024 µs buckets with a
//! heap behind it for events beyond the wheel's horizon.
//!
//! A binary heap of every pending event cost a tenth of a 10,000-node run
//! (a pop walks log2(pending) levels of 64-byte events, comparing 4-tuples).
//! Here a push is O(1) into the bucket of its time, and a window is taken
//! by draining the few buckets it spans and sorting them by the event key.
//! The order is exactly the canonical key order a heap would give (keys are
//! unique), so runs and trace hashes do not change.
//!
//! Bounds: the wheel holds [`SLOTS`] buckets (about 1 s of virtual time: the
//! rounds between two summaries, which an idle node's timer skips, so a
//! node's next timer almost always lands in the wheel; twice that held
//! 40 MB more at 10,000 nodes in buckets' spare room, no faster); later
//! events wait in the overflow heap and move into the wheel as the cursor
//! comes within the horizon. A bucket taken whole gives its buffer away
//! with its events, so the wheel holds about what is pending, not what its
//! busiest buckets once held.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Microseconds per bucket, as a shift.
const SHIFT: u32 = 10;
/// Buckets in the wheel.
pub const SLOTS: u64 = 1024;

/// Something with a time and a total order: the world's event.
pub trait Keyed: Ord {
    /// Virtual time in µs.
    fn at(&self) -> u64;
}

/// Pending events, earliest first by key.
pub struct Queue<E: Keyed> {
    wheel: Vec<Vec<E>>,
    /// Events in the wheel.
    in_wheel: usize,
    /// Every event in the queue is in bucket `cursor` (time >> SHIFT) or
    /// later; the wheel holds buckets `cursor..cursor + SLOTS`.
    cursor: u64,
    /// Events in buckets `cursor + SLOTS` and later.
    far: BinaryHeap<Reverse<E>>,
}

impl<E: Keyed> Default for Queue<E> {
    fn default() -> Self {
        Queue { wheel: (0..SLOTS).map(|_| Vec::new()).collect(), in_wheel: 0, cursor: 0, far: BinaryHeap::new() }
    }
}

impl<E: Keyed> Queue<E> {
    /// Pending events.
    pub fn len(&self) -> usize {
        self.in_wheel + self.far.len()
    }

    /// True if nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds an event; its time must not be before the last window taken.
    pub fn push(&mut self, e: E) {
        let b = e.at() >> SHIFT;
        assert!(b >= self.cursor, "an event at {} µs is before the queue's cursor", e.at());
        if b < self.cursor + SLOTS {
            self.wheel[(b % SLOTS) as usize].push(e);
            self.in_wheel += 1;
        } else {
            self.far.push(Reverse(e));
        }
    }

    /// The time of the earliest pending event.
    pub fn first_at(&self) -> Option<u64> {
        if self.in_wheel == 0 {
            return self.far.peek().map(|Reverse(e)| e.at());
        }
        let b = self.first_bucket();
        self.wheel[(b % SLOTS) as usize].iter().map(Keyed::at).min()
    }

    /// The first non-empty bucket of the wheel (the wheel is not empty).
    fn first_bucket(&self) -> u64 {
        (self.cursor..self.cursor + SLOTS)
            .find(|b| !self.wheel[(b % SLOTS) as usize].is_empty())
            .expect("the wheel holds an event")
    }

    /// Moves the cursor to bucket `b` (not past any pending event) and
    /// brings the overflow events now within the horizon into the wheel.
    fn advance(&mut self, b: u64) {
        debug_assert!(b >= self.cursor);
        self.cursor = b;
        while let Some(Reverse(e)) = self.far.peek() {
            let eb = e.at() >> SHIFT;
            if eb >= self.cursor + SLOTS {
                break;
            }
            let Reverse(e) = self.far.pop().expect("peeked");
            self.wheel[(eb % SLOTS) as usize].push(e);
            self.in_wheel += 1;
        }
    }

    /// Takes every event before `end` (µs), in key order, into `out`.
    pub fn take_before(&mut self, end: u64, out: &mut Vec<E>) {
        let start = out.len();
        self.take_before_unsorted(end, out);
        out[start..].sort_unstable();
    }

    /// Takes every event before `end` (µs) into `out`, in no set order (a
    /// caller that splits them among threads sorts each part there).
    pub fn take_before_unsorted(&mut self, end: u64, out: &mut Vec<E>) {
        loop {
            if self.in_wheel == 0 {
                match self.far.peek() {
                    Some(Reverse(e)) if e.at() < end => {
                        let b = e.at() >> SHIFT;
                        self.advance(b);
                    }
                    _ => break,
                }
                continue;
            }
            let b = self.first_bucket();
            if b << SHIFT >= end {
                break;
            }
            let whole = (b + 1) << SHIFT <= end;
            if !whole && !self.wheel[(b % SLOTS) as usize].iter().any(|e| e.at() < end) {
                break;
            }
            // The cursor only ever moves to a bucket something is taken
            // from, so it never passes the world's clock (which ends at the
            // last event taken) and the driver may still push events at now.
            self.advance(b);
            let slot = &mut self.wheel[(b % SLOTS) as usize];
            if whole {
                self.in_wheel -= slot.len();
                if out.is_empty() {
                    // The bucket's buffer goes with its events: a bucket
                    // that kept the room of its busiest millisecond held
                    // 25 MB over a second's wheel in a 10,000-node run.
                    std::mem::swap(out, slot);
                } else {
                    out.append(slot);
                }
            } else {
                // The window ends inside this bucket: take its early part.
                let mut i = 0;
                while i < slot.len() {
                    if slot[i].at() < end {
                        out.push(slot.swap_remove(i));
                        self.in_wheel -= 1;
                    } else {
                        i += 1;
                    }
                }
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
    struct T(u64, u32);
    impl Keyed for T {
        fn at(&self) -> u64 {
            self.0
        }
    }

    #[test]
    fn events_come_out_in_key_order_whatever_the_distance_and_the_window() {
        let mut rng = rumor_core::rand::Rng::new(5);
        let mut q = Queue::default();
        let mut model: Vec<T> = Vec::new();
        let mut now = 0u64;
        let mut tag = 0u32;
        for round in 0..2_000 {
            for _ in 0..rng.below(20) {
                let ahead = match rng.below(4) {
                    0 => rng.below(5_000),
                    1 => rng.below(300_000),
                    2 => rng.below(5_000_000),
                    _ => 0,
                };
                tag += 1;
                q.push(T(now + ahead, tag));
                model.push(T(now + ahead, tag));
            }
            let end = now + 1 + rng.below(if round % 7 == 0 { 2_000_000 } else { 3_000 });
            let mut got = Vec::new();
            q.take_before(end, &mut got);
            model.sort();
            let split = model.partition_point(|e| e.0 < end);
            let want: Vec<T> = model.drain(..split).collect();
            assert_eq!(got, want);
            assert_eq!(q.len(), model.len());
            if let Some(last) = got.last() {
                now = now.max(last.0);
            }
            assert_eq!(q.first_at(), model.first().map(|e| e.0));
        }
    }
}
