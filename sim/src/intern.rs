//! One allocation for equal entries across every simulated store.
//!
//! Every node of a `sim gossip` run holds a full replica, so N nodes hold N
//! copies of each entry. A real node is alone in its process and holds its
//! one copy; here those copies were most of the memory (at 10,000 nodes
//! and 2,000 providers, 20 million of them). A store never changes a held
//! entry in place (see `rumor_core::replica::EntryInterner`), so the
//! simulator hands every store the same allocation for equal entries. Each
//! store still keeps its own orderings and makes every decision itself;
//! the interner only changes where the bytes live, so the trace hash is the
//! same with or without it.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::{Arc, Mutex, Weak};

use rumor_core::replica::{Entry, EntryInterner, Shared};

/// Shards of the table: the simulator's threads intern concurrently.
const SHARDS: usize = 64;

/// Hands out one shared allocation per distinct entry still held by some
/// store (entries no store holds any more are swept out as the table
/// grows).
#[derive(Debug)]
pub struct Interner {
    shards: [Mutex<Shard>; SHARDS],
}

impl Default for Interner {
    fn default() -> Self {
        Interner { shards: std::array::from_fn(|_| Mutex::default()) }
    }
}

#[derive(Debug, Default)]
struct Shard {
    /// Entries by the hash of their value; a hash collision keeps both.
    by_hash: HashMap<u64, Vec<Weak<Entry>>, BuildHasherDefault<DefaultHasher>>,
    /// Entries added since the last sweep.
    added: usize,
}

impl Interner {
    /// An empty interner.
    pub fn new() -> Self {
        Interner::default()
    }

    /// Distinct entries still held by some store.
    pub fn live(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let s = s.lock().expect("interner shard");
                s.by_hash.values().flatten().filter(|w| w.strong_count() > 0).count()
            })
            .sum()
    }
}

impl EntryInterner for Interner {
    fn intern(&self, e: Entry) -> Shared {
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(&e);
        let mut shard = self.shards[(hash % SHARDS as u64) as usize].lock().expect("interner shard");
        let held = shard.by_hash.entry(hash).or_default();
        if let Some(same) = held.iter().filter_map(Weak::upgrade).find(|s| **s == e) {
            return same;
        }
        let shared = Arc::new(e);
        held.push(Arc::downgrade(&shared));
        shard.added += 1;
        if shard.added > shard.by_hash.len().max(1024) {
            // Amortized: the sweep is linear in a table that at least
            // doubled since the last one.
            shard.by_hash.retain(|_, held| {
                held.retain(|w| w.strong_count() > 0);
                !held.is_empty()
            });
            shard.added = 0;
        }
        shared
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use rumor_core::replica::{Namespace, Version};

    fn entry(key: &str, version: u64) -> Entry {
        Entry {
            ns: Namespace::PROVIDERS,
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::from_static(b"v"),
            writer: 7,
            version: Version(version),
            expires_ms: 0,
            deleted: false,
        }
    }

    #[test]
    fn equal_entries_share_one_allocation_and_unequal_ones_do_not() {
        let i = Interner::new();
        let a = i.intern(entry("k", 1));
        let b = i.intern(entry("k", 1));
        assert!(Arc::ptr_eq(&a, &b));
        let c = i.intern(entry("k", 2));
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(*c, entry("k", 2));
        assert_eq!(i.live(), 2);
    }

    #[test]
    fn entries_no_store_holds_are_swept() {
        let i = Interner::new();
        let kept = i.intern(entry("kept", 1));
        for v in 0..100_000 {
            drop(i.intern(entry("gone", v)));
        }
        let dead: usize = i
            .shards
            .iter()
            .map(|s| s.lock().unwrap().by_hash.values().flatten().filter(|w| w.strong_count() == 0).count())
            .sum();
        assert!(dead <= SHARDS * 2048, "{dead} dead entries kept");
        assert_eq!(i.live(), 1);
        assert!(Arc::ptr_eq(&kept, &i.intern(entry("kept", 1))));
    }
}
