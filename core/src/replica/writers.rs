//! What a store knows of each writer, in one sorted vector.
//!
//! A `BTreeMap<NodeId, Marks>` spent about 38 bytes a writer (11-slot
//! leaves filled to about 70 % by random ids, plus the inner nodes) on a
//! 24-byte element. Every node that announces a torrent is a writer, so a
//! 10,000-node cluster gives each store thousands of them, and in the
//! simulator, which holds every node's store, that was 370 MB. A sorted
//! vector holds each writer's id and watermark in 16 bytes (it grows by an
//! eighth at a time). The highest version held is almost always the
//! watermark itself (pushes arrive in order), so it is kept apart, in a
//! small map, only for the writers where it is ahead. A new writer costs a
//! shift of the ones after it, which happens once per writer (at the
//! 65,536-writer default limit, 1 MB moved).

use std::collections::BTreeMap;
use std::ops::{Bound, RangeBounds};

use super::entry::{NodeId, Version};

/// What a store knows of one writer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Marks {
    /// Everything from the writer up to this version is held (zero: no
    /// watermark).
    pub(super) seen: Version,
    /// The highest version held or ever applied from the writer.
    pub(super) max: Version,
}

/// Writers and their [`Marks`], by writer id.
#[derive(Clone, Debug, Default)]
pub(super) struct Writers {
    /// Every writer known, by id, with its watermark.
    seen: Vec<(NodeId, Version)>,
    /// `max` of the writers where it is above `seen`.
    ahead: BTreeMap<NodeId, Version>,
}

impl Writers {
    fn marks(&self, w: NodeId, seen: Version) -> Marks {
        let max = if self.ahead.is_empty() { seen } else { self.ahead.get(&w).copied().unwrap_or(seen) };
        Marks { seen, max }
    }

    /// The marks of `w`, if known.
    pub(super) fn get(&self, w: &NodeId) -> Option<Marks> {
        let i = self.seen.binary_search_by_key(w, |(k, _)| *k).ok()?;
        Some(self.marks(*w, self.seen[i].1))
    }

    /// True if `w` is known.
    pub(super) fn contains_key(&self, w: &NodeId) -> bool {
        self.seen.binary_search_by_key(w, |(k, _)| *k).is_ok()
    }

    /// Writers known.
    pub(super) fn len(&self) -> usize {
        self.seen.len()
    }

    /// The index of `w`, made (zero marks) if it was not known.
    fn index_or_insert(&mut self, w: NodeId) -> usize {
        match self.seen.binary_search_by_key(&w, |(k, _)| *k) {
            Ok(i) => i,
            Err(i) => {
                if self.seen.len() == self.seen.capacity() {
                    // An eighth at a time rather than doubling: the slack
                    // of a doubled vector would cost what the map did.
                    self.seen.reserve_exact(self.seen.len() / 8 + 4);
                }
                self.seen.insert(i, (w, Version::ZERO));
                i
            }
        }
    }

    /// Sets the marks of `w` (known from now on, even if both are zero).
    pub(super) fn set(&mut self, w: NodeId, m: Marks) {
        let i = self.index_or_insert(w);
        self.seen[i].1 = m.seen;
        if m.max > m.seen {
            self.ahead.insert(w, m.max);
        } else if !self.ahead.is_empty() {
            self.ahead.remove(&w);
        }
    }

    /// Every writer, by id.
    pub(super) fn iter(&self) -> impl DoubleEndedIterator<Item = (NodeId, Marks)> + '_ {
        self.seen.iter().map(|&(w, seen)| (w, self.marks(w, seen)))
    }

    /// The writers whose ids are in `range`, by id.
    pub(super) fn range(
        &self,
        range: impl RangeBounds<NodeId>,
    ) -> impl DoubleEndedIterator<Item = (NodeId, Marks)> + '_ {
        let v = &self.seen;
        let start = match range.start_bound() {
            Bound::Included(lo) => v.partition_point(|(k, _)| k < lo),
            Bound::Excluded(lo) => v.partition_point(|(k, _)| k <= lo),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(hi) => v.partition_point(|(k, _)| k <= hi),
            Bound::Excluded(hi) => v.partition_point(|(k, _)| k < hi),
            Bound::Unbounded => v.len(),
        };
        v[start..end.max(start)].iter().map(|&(w, seen)| (w, self.marks(w, seen)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn it_behaves_as_the_map_it_replaced() {
        let mut rng = crate::rand::Rng::new(11);
        let mut writers = Writers::default();
        let mut map: BTreeMap<NodeId, Marks> = BTreeMap::new();
        for step in 0..20_000u64 {
            let w = rng.below(300);
            match rng.below(3) {
                0 => {
                    // The store keeps max at or above seen.
                    let m = map.entry(w).or_default();
                    m.seen = Version(step);
                    m.max = m.max.max(m.seen);
                    writers.set(w, *m);
                }
                1 => {
                    let m = map.entry(w).or_default();
                    m.max = Version(step);
                    writers.set(w, *m);
                }
                _ => {
                    assert_eq!(writers.get(&w), map.get(&w).copied());
                    assert_eq!(writers.contains_key(&w), map.contains_key(&w));
                    let (a, b) = (rng.below(320), rng.below(320));
                    let (lo, hi) = (a.min(b), a.max(b));
                    let got: Vec<_> = writers.range((Bound::Excluded(lo), Bound::Included(hi))).collect();
                    let want: Vec<_> =
                        map.range((Bound::Excluded(lo), Bound::Included(hi))).map(|(w, m)| (*w, *m)).collect();
                    assert_eq!(got, want);
                    let got: Vec<_> = writers.range(..lo).rev().collect();
                    let want: Vec<_> = map.range(..lo).rev().map(|(w, m)| (*w, *m)).collect();
                    assert_eq!(got, want);
                    let got: Vec<_> = writers.range(hi..).collect();
                    let want: Vec<_> = map.range(hi..).map(|(w, m)| (*w, *m)).collect();
                    assert_eq!(got, want);
                }
            }
            assert_eq!(writers.len(), map.len());
        }
        assert!(writers.iter().eq(map.iter().map(|(w, m)| (*w, *m))));
        // Only the writers whose highest version is above the watermark take room beside it.
        assert_eq!(writers.ahead.len(), map.values().filter(|m| m.max > m.seen).count());
        assert!(writers.seen.capacity() <= writers.len() + writers.len() / 8 + 4);
    }
}
