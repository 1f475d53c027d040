//! The entries a store holds, ordered by `(namespace, key)`, each stored
//! once.
//!
//! A `BTreeMap<(Namespace, Bytes), Entry>` kept every key twice: in the
//! map's key and in the entry. Here the entry is its own key: a
//! `BTreeSet` of entries ordered by `(ns, key)`, looked up through a
//! borrowed `(Namespace, &[u8])` view (the trait-object `Borrow` idiom), so
//! a lookup needs no owned key either (the old `get` copied the key into a
//! fresh `Bytes` on every DNS query). An element is 96 bytes instead of
//! 136, and the B-tree's nodes shrink with it: at 100,000 simulated nodes
//! holding 46 entries each that is about 3 KB a node.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::ops::Bound;

use super::entry::{Entry, Namespace};

/// Anything that names an entry's place: an entry itself, or a borrowed
/// `(namespace, key)`.
trait Place {
    fn place(&self) -> (Namespace, &[u8]);
}

impl Place for (Namespace, &[u8]) {
    fn place(&self) -> (Namespace, &[u8]) {
        (self.0, self.1)
    }
}

impl PartialEq for dyn Place + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.place() == other.place()
    }
}
impl Eq for dyn Place + '_ {}
impl PartialOrd for dyn Place + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for dyn Place + '_ {
    fn cmp(&self, other: &Self) -> Ordering {
        self.place().cmp(&other.place())
    }
}

/// An entry ordered by its place alone.
#[derive(Clone, Debug)]
struct Held(Entry);

impl Place for Held {
    fn place(&self) -> (Namespace, &[u8]) {
        (self.0.ns, &self.0.key)
    }
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        self.place() == other.place()
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Held {
    fn cmp(&self, other: &Self) -> Ordering {
        self.place().cmp(&other.place())
    }
}

impl<'a> Borrow<dyn Place + 'a> for Held {
    fn borrow(&self) -> &(dyn Place + 'a) {
        self
    }
}

/// The entries of a store, one per `(namespace, key)`.
#[derive(Clone, Debug, Default)]
pub(super) struct Entries(BTreeSet<Held>);

impl Entries {
    /// The entry at `(ns, key)`, if held.
    pub(super) fn get(&self, ns: Namespace, key: &[u8]) -> Option<&Entry> {
        self.0.get(&(ns, key) as &dyn Place).map(|h| &h.0)
    }

    /// True if an entry is held at `(ns, key)`.
    pub(super) fn contains(&self, ns: Namespace, key: &[u8]) -> bool {
        self.0.contains(&(ns, key) as &dyn Place)
    }

    /// Takes out the entry at `(ns, key)`.
    pub(super) fn remove(&mut self, ns: Namespace, key: &[u8]) -> Option<Entry> {
        self.0.take(&(ns, key) as &dyn Place).map(|h| h.0)
    }

    /// Puts `e` at its place, returning the entry it replaced.
    pub(super) fn insert(&mut self, e: Entry) -> Option<Entry> {
        self.0.replace(Held(e)).map(|h| h.0)
    }

    /// The entries from `(ns, key)` on (inclusive), in order.
    pub(super) fn starting_at<'a>(&'a self, ns: Namespace, key: &[u8]) -> impl Iterator<Item = &'a Entry> + 'a {
        let start = (ns, key);
        self.0.range::<dyn Place, _>((Bound::Included(&start as &dyn Place), Bound::Unbounded)).map(|h| &h.0)
    }

    /// The entries after `(ns, key)` (exclusive), or all of them from the
    /// first with `None`, in order.
    pub(super) fn after<'a>(&'a self, after: Option<(Namespace, &[u8])>) -> impl Iterator<Item = &'a Entry> + 'a {
        let range = match after {
            Some(place) => self.0.range::<dyn Place, _>((Bound::Excluded(&place as &dyn Place), Bound::Unbounded)),
            None => self.0.range::<dyn Place, _>(..),
        };
        range.map(|h| &h.0)
    }

    /// Every entry, in order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Entry> + '_ {
        self.0.iter().map(|h| &h.0)
    }

    /// Entries held.
    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    /// True if nothing is held.
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::collections::BTreeMap;

    fn entry(ns: u16, key: &str, writer: u64) -> Entry {
        Entry {
            ns: Namespace(ns),
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::from_static(b"v"),
            writer,
            version: super::super::entry::Version(writer),
            expires_ms: 0,
            deleted: false,
        }
    }

    #[test]
    fn it_behaves_as_the_map_it_replaced() {
        let mut rng = crate::rand::Rng::new(3);
        let mut held = Entries::default();
        let mut map: BTreeMap<(Namespace, Bytes), Entry> = BTreeMap::new();
        let keys = ["", "a", "ab", "abc", "b", "ba", "c", "\u{ff}", "a\0"];
        for step in 0..20_000u64 {
            let ns = Namespace(rng.below(3) as u16);
            let key = keys[rng.index(keys.len())];
            let kb = Bytes::copy_from_slice(key.as_bytes());
            match rng.below(4) {
                0 | 1 => {
                    let e = entry(ns.0, key, step);
                    let old = held.insert(e.clone()).map(|o| o.writer);
                    assert_eq!(old, map.insert((ns, kb), e).map(|o| o.writer));
                }
                2 => assert_eq!(
                    held.remove(ns, key.as_bytes()).map(|o| o.writer),
                    map.remove(&(ns, kb)).map(|o| o.writer)
                ),
                _ => {
                    assert_eq!(
                        held.get(ns, key.as_bytes()).map(|e| e.writer),
                        map.get(&(ns, kb.clone())).map(|e| e.writer)
                    );
                    assert_eq!(held.contains(ns, key.as_bytes()), map.contains_key(&(ns, kb.clone())));
                    let from: Vec<u64> = held.starting_at(ns, key.as_bytes()).map(|e| e.writer).collect();
                    let want: Vec<u64> = map.range((ns, kb.clone())..).map(|(_, e)| e.writer).collect();
                    assert_eq!(from, want);
                    let after: Vec<u64> = held.after(Some((ns, key.as_bytes()))).map(|e| e.writer).collect();
                    let want: Vec<u64> =
                        map.range((Bound::Excluded((ns, kb)), Bound::Unbounded)).map(|(_, e)| e.writer).collect();
                    assert_eq!(after, want);
                }
            }
            assert_eq!(held.len(), map.len());
            assert!(held.iter().map(|e| e.writer).eq(map.values().map(|e| e.writer)));
        }
        assert_eq!(held.after(None).count(), map.len());
    }
}
