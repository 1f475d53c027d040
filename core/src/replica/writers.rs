//! What a store knows of each writer, in one sorted vector.
//!
//! A `BTreeMap<NodeId, Marks>` spent about 38 bytes a writer (11-slot
//! leaves filled to about 70 % by random ids, plus the inner nodes) on a
//! 24-byte element. Every node that announces a torrent is a writer, so a
//! 10,000-node cluster gives each store thousands of them, and in the
//! simulator, which holds every node's store, that was 370 MB. A sorted
//! vector holds them at 24 bytes (it grows by an eighth at a time). A new
//! writer costs a shift of the ones after it, which happens once per writer
//! (at the 65,536-writer default limit, 1.5 MB moved).

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
pub(super) struct Writers(Vec<(NodeId, Marks)>);

impl Writers {
    /// The marks of `w`, if known.
    pub(super) fn get(&self, w: &NodeId) -> Option<&Marks> {
        self.0.binary_search_by_key(w, |(k, _)| *k).ok().map(|i| &self.0[i].1)
    }

    /// True if `w` is known.
    pub(super) fn contains_key(&self, w: &NodeId) -> bool {
        self.get(w).is_some()
    }

    /// Writers known.
    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    /// The marks of `w`, made (zero) if it was not known.
    pub(super) fn get_or_default(&mut self, w: NodeId) -> &mut Marks {
        let i = match self.0.binary_search_by_key(&w, |(k, _)| *k) {
            Ok(i) => i,
            Err(i) => {
                if self.0.len() == self.0.capacity() {
                    // An eighth at a time rather than doubling: the slack
                    // of a doubled vector would cost what the map did.
                    self.0.reserve_exact(self.0.len() / 8 + 4);
                }
                self.0.insert(i, (w, Marks::default()));
                i
            }
        };
        &mut self.0[i].1
    }

    /// Every writer, by id.
    pub(super) fn iter(&self) -> impl DoubleEndedIterator<Item = (&NodeId, &Marks)> + '_ {
        self.0.iter().map(|(w, m)| (w, m))
    }

    /// The writers whose ids are in `range`, by id.
    pub(super) fn range(
        &self,
        range: impl RangeBounds<NodeId>,
    ) -> impl DoubleEndedIterator<Item = (&NodeId, &Marks)> + '_ {
        let start = match range.start_bound() {
            Bound::Included(lo) => self.0.partition_point(|(k, _)| k < lo),
            Bound::Excluded(lo) => self.0.partition_point(|(k, _)| k <= lo),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(hi) => self.0.partition_point(|(k, _)| k <= hi),
            Bound::Excluded(hi) => self.0.partition_point(|(k, _)| k < hi),
            Bound::Unbounded => self.0.len(),
        };
        self.0[start..end.max(start)].iter().map(|(w, m)| (w, m))
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
                    writers.get_or_default(w).seen = Version(step);
                    map.entry(w).or_default().seen = Version(step);
                }
                1 => {
                    writers.get_or_default(w).max = Version(step);
                    map.entry(w).or_default().max = Version(step);
                }
                _ => {
                    assert_eq!(writers.get(&w), map.get(&w));
                    assert_eq!(writers.contains_key(&w), map.contains_key(&w));
                    let (a, b) = (rng.below(320), rng.below(320));
                    let (lo, hi) = (a.min(b), a.max(b));
                    let got: Vec<_> = writers.range((Bound::Excluded(lo), Bound::Included(hi))).collect();
                    let want: Vec<_> = map.range((Bound::Excluded(lo), Bound::Included(hi))).collect();
                    assert_eq!(got, want);
                    let got: Vec<_> = writers.range(..lo).rev().collect();
                    let want: Vec<_> = map.range(..lo).rev().collect();
                    assert_eq!(got, want);
                    let got: Vec<_> = writers.range(hi..).collect();
                    let want: Vec<_> = map.range(hi..).collect();
                    assert_eq!(got, want);
                }
            }
            assert_eq!(writers.len(), map.len());
        }
        assert!(writers.iter().eq(map.iter()));
        assert!(writers.0.capacity() <= writers.len() + writers.len() / 8 + 4);
    }
}
