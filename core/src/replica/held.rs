//! The entries a store holds, each stored once and shared by the store's
//! three orderings: by `(namespace, key)`, by `(writer, version)` for
//! deltas and by expiry.
//!
//! A `BTreeMap<(Namespace, Bytes), Entry>` kept every key twice: in the
//! map's key and in the entry; the writer and expiry indexes each held a
//! third and fourth handle on it (a 56- and a 48-byte element). Here every
//! ordering is a `BTreeSet` of one pointer to the shared entry, ordered by
//! the entry's own fields and looked up through a borrowed view (the
//! trait-object `Borrow` idiom), so a lookup needs no owned key either. An
//! entry costs three 8-byte elements besides itself, and equal entries
//! held by many stores of one process (the simulator's nodes) can be one
//! allocation (see [`EntryInterner`]).

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::fmt;
use std::ops::Bound;
use std::sync::Arc;

use super::entry::{Entry, Namespace, NodeId, Version};
use crate::time::UnixMillis;

/// An entry as a store holds it: immutable, shared by its orderings.
pub type Shared = Arc<Entry>;

/// Turns an entry a store is about to hold into its shared form. The
/// default makes a fresh allocation; a process that runs many stores (the
/// simulator) can hand out one allocation for equal entries, since a held
/// entry is never changed in place. Whatever it returns must equal the
/// entry it was given.
pub trait EntryInterner: Send + Sync + fmt::Debug {
    /// The shared form of `e`, equal to it.
    fn intern(&self, e: Entry) -> Shared;
}

/// Declares an ordering of shared entries by a borrowed view of their
/// fields: the view trait, its impls for the view tuple and the holder, and
/// the holder's `Ord` through the view.
macro_rules! ordering {
    ($(#[$doc:meta])* $holder:ident, $trait:ident, ($($t:ty),*), |$e:ident| $view:expr) => {
        trait $trait {
            fn view(&self) -> ($($t),*);
        }

        impl $trait for ($($t),*) {
            fn view(&self) -> ($($t),*) {
                *self
            }
        }

        impl PartialEq for dyn $trait + '_ {
            fn eq(&self, other: &Self) -> bool {
                self.view() == other.view()
            }
        }
        impl Eq for dyn $trait + '_ {}
        impl PartialOrd for dyn $trait + '_ {
            fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
                Some(self.cmp(other))
            }
        }
        impl Ord for dyn $trait + '_ {
            fn cmp(&self, other: &Self) -> Ordering {
                self.view().cmp(&other.view())
            }
        }

        $(#[$doc])*
        #[derive(Clone, Debug)]
        struct $holder(Shared);

        impl $trait for $holder {
            fn view(&self) -> ($($t),*) {
                let $e = &*self.0;
                $view
            }
        }
        impl PartialEq for $holder {
            fn eq(&self, other: &Self) -> bool {
                self.view() == other.view()
            }
        }
        impl Eq for $holder {}
        impl PartialOrd for $holder {
            fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
                Some(self.cmp(other))
            }
        }
        impl Ord for $holder {
            fn cmp(&self, other: &Self) -> Ordering {
                self.view().cmp(&other.view())
            }
        }
        impl<'a> Borrow<dyn $trait + 'a> for $holder {
            fn borrow(&self) -> &(dyn $trait + 'a) {
                self
            }
        }
    };
}

ordering!(
    /// An entry ordered by its place, `(namespace, key)`.
    Held, Place, (Namespace, &[u8]), |e| (e.ns, &e.key[..])
);
ordering!(
    /// An entry ordered by `(writer, version)`, then place (two entries of
    /// one version can only come from a broken or hostile writer, and both
    /// are still held).
    ByWriter, WriterPlace, (NodeId, Version, Namespace, &[u8]), |e| (e.writer, e.version, e.ns, &e.key[..])
);
ordering!(
    /// A live entry ordered by its expiry, then place.
    ByExpiry, ExpiryPlace, (UnixMillis, Namespace, &[u8]), |e| (e.expires_ms, e.ns, &e.key[..])
);

/// The entries of a store, one per `(namespace, key)`.
#[derive(Clone, Debug, Default)]
pub(super) struct Entries(BTreeSet<Held>);

impl Entries {
    /// The entry at `(ns, key)`, if held.
    pub(super) fn get(&self, ns: Namespace, key: &[u8]) -> Option<&Shared> {
        self.0.get(&(ns, key) as &dyn Place).map(|h| &h.0)
    }

    /// True if an entry is held at `(ns, key)`.
    pub(super) fn contains(&self, ns: Namespace, key: &[u8]) -> bool {
        self.0.contains(&(ns, key) as &dyn Place)
    }

    /// Takes out the entry at `(ns, key)`.
    pub(super) fn remove(&mut self, ns: Namespace, key: &[u8]) -> Option<Shared> {
        self.0.take(&(ns, key) as &dyn Place).map(|h| h.0)
    }

    /// Puts `e` at its place, returning the entry it replaced.
    pub(super) fn insert(&mut self, e: Shared) -> Option<Shared> {
        self.0.replace(Held(e)).map(|h| h.0)
    }

    /// The entries from `(ns, key)` on (inclusive), in order.
    pub(super) fn starting_at<'a>(&'a self, ns: Namespace, key: &[u8]) -> impl Iterator<Item = &'a Entry> + 'a {
        let start = (ns, key);
        self.0.range::<dyn Place, _>((Bound::Included(&start as &dyn Place), Bound::Unbounded)).map(|h| &*h.0)
    }

    /// The entries after `(ns, key)` (exclusive), or all of them from the
    /// first with `None`, in order.
    pub(super) fn after<'a>(&'a self, after: Option<(Namespace, &[u8])>) -> impl Iterator<Item = &'a Entry> + 'a {
        let range = match after {
            Some(place) => self.0.range::<dyn Place, _>((Bound::Excluded(&place as &dyn Place), Bound::Unbounded)),
            None => self.0.range::<dyn Place, _>(..),
        };
        range.map(|h| &*h.0)
    }

    /// Every entry, in order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Entry> + '_ {
        self.0.iter().map(|h| &*h.0)
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

/// The held entries by `(writer, version)`: what a delta sends.
#[derive(Clone, Debug, Default)]
pub(super) struct WriterIndex(BTreeSet<ByWriter>);

impl WriterIndex {
    /// Adds `e`.
    pub(super) fn insert(&mut self, e: Shared) {
        self.0.insert(ByWriter(e));
    }

    /// Removes `e`; false if it was not indexed.
    pub(super) fn remove(&mut self, e: &Entry) -> bool {
        self.0.remove(&(e.writer, e.version, e.ns, &e.key[..]) as &dyn WriterPlace)
    }

    /// The entries of `writer` with versions from `from` on, in version
    /// order.
    pub(super) fn of_writer_from(&self, writer: NodeId, from: Version) -> impl Iterator<Item = &Shared> + '_ {
        let start = (writer, from, Namespace(0), &[][..]);
        self.0
            .range::<dyn WriterPlace, _>((Bound::Included(&start as &dyn WriterPlace), Bound::Unbounded))
            .map(|h| &h.0)
            .take_while(move |e| e.writer == writer)
    }

    /// Every indexed entry, by writer and version.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Entry> + '_ {
        self.0.iter().map(|h| &*h.0)
    }
}

/// Live entries that expire, soonest first.
#[derive(Clone, Debug, Default)]
pub(super) struct ExpiryQueue(BTreeSet<ByExpiry>);

impl ExpiryQueue {
    /// Adds `e` (a live entry with an expiry).
    pub(super) fn insert(&mut self, e: Shared) {
        self.0.insert(ByExpiry(e));
    }

    /// Removes `e`.
    pub(super) fn remove(&mut self, e: &Entry) {
        self.0.remove(&(e.expires_ms, e.ns, &e.key[..]) as &dyn ExpiryPlace);
    }

    /// When the entry expiring soonest expires, if any does.
    pub(super) fn first_ms(&self) -> Option<UnixMillis> {
        self.0.first().map(|h| h.0.expires_ms)
    }

    /// Takes out the entry expiring soonest if it expires at `now_ms` or
    /// before.
    pub(super) fn pop_due(&mut self, now_ms: UnixMillis) -> Option<Shared> {
        if self.0.first()?.0.expires_ms > now_ms {
            return None;
        }
        self.0.pop_first().map(|h| h.0)
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
                    let old = held.insert(Arc::new(e.clone())).map(|o| o.writer);
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
