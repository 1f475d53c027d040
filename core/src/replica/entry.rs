//! Versions, the hybrid logical clock, entries and the pure merge function.

use core::cmp::Ordering;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::time::UnixMillis;

/// The id of a node, as a writer of entries and as a cluster member.
///
/// Pick it at random (from OS entropy) the first time a node starts and keep
/// it across restarts: two nodes with the same id would overwrite each
/// other's versions.
pub type NodeId = u64;

/// A hybrid-logical-clock timestamp: wall-clock milliseconds in the high 48
/// bits, a logical counter in the low 16 bits. Versions order writes: a later
/// version wins the merge.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Version(pub u64);

impl Version {
    /// The version before every write; "nothing seen yet" in digests.
    pub const ZERO: Version = Version(0);

    /// Builds a version from wall-clock milliseconds and a logical counter.
    pub const fn new(wall_ms: UnixMillis, logical: u16) -> Self {
        Version((wall_ms << 16) | logical as u64)
    }
    /// The wall-clock part, in milliseconds since the Unix epoch.
    pub const fn wall_ms(self) -> UnixMillis {
        self.0 >> 16
    }
    /// The logical counter part.
    pub const fn logical(self) -> u16 {
        (self.0 & 0xffff) as u16
    }
}

/// A hybrid logical clock (Kulkarni et al.): versions that follow the wall
/// clock when it moves forward and still strictly grow when it stalls or
/// steps back. One per node, owned by the [`Store`](super::Store).
#[derive(Clone, Debug, Default)]
pub struct Hlc {
    last: Version,
}

impl Hlc {
    /// A clock that has issued nothing yet.
    pub fn new() -> Self {
        Hlc::default()
    }

    /// Issues a fresh version for a local write at wall-clock time `now_ms`:
    /// strictly greater than every version issued or observed before.
    pub fn tick(&mut self, now_ms: UnixMillis) -> Version {
        let wall = now_ms.max(self.last.wall_ms());
        let next = if wall == self.last.wall_ms() {
            // Same millisecond: bump the counter (carrying into the wall part
            // if 65535 writes happened within one millisecond).
            Version(self.last.0 + 1)
        } else {
            Version::new(wall, 0)
        };
        self.last = next;
        next
    }

    /// Makes sure later ticks come after `seen` (a version read from a peer
    /// or from disk), so a local write always wins over what it replaces.
    pub fn observe(&mut self, seen: Version) {
        if seen > self.last {
            self.last = seen;
        }
    }

    /// The last version issued or observed.
    pub fn last(&self) -> Version {
        self.last
    }
}

/// A namespace of the replicated store: a separate key space.
///
/// `DNS` holds one entry per RRset; `PROVIDERS` maps an infohash to the
/// peers that provide it. Other values are free for later uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Namespace(pub u16);

impl Namespace {
    /// DNS record sets: key = lowercased owner name + record type.
    pub const DNS: Namespace = Namespace(1);
    /// BitTorrent overlay: key = infohash (+ provider), value = provider.
    pub const PROVIDERS: Namespace = Namespace(2);
}

/// One replicated entry: the unit of storage, merge and transfer.
///
/// A tombstone (`deleted == true`) keeps the version of the delete so that an
/// older write arriving later loses; it is collected after the store's grace
/// period. An entry past its absolute expiry is treated as a tombstone.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Entry {
    /// Which key space the entry lives in.
    pub ns: Namespace,
    /// The key within the namespace.
    pub key: Bytes,
    /// The opaque value; empty for tombstones.
    pub value: Bytes,
    /// The node that wrote this version.
    pub writer: NodeId,
    /// The HLC version of the write; the merge keeps the highest.
    pub version: Version,
    /// Absolute expiry in wall-clock milliseconds; 0 means never.
    pub expires_ms: UnixMillis,
    /// True for a delete (tombstone).
    pub deleted: bool,
}

impl Entry {
    /// True if the entry has an expiry that is at or before `now_ms`.
    pub fn is_expired(&self, now_ms: UnixMillis) -> bool {
        self.expires_ms != 0 && self.expires_ms <= now_ms
    }

    /// True if the entry may be served at `now_ms`: not deleted, not expired.
    pub fn is_live(&self, now_ms: UnixMillis) -> bool {
        !self.deleted && !self.is_expired(now_ms)
    }

    /// The wall-clock time since which the entry is (or will be) dead: the
    /// later of its version's time and its expiry; `None` for a live entry
    /// that never expires. Tombstones are collected a grace period after it.
    pub fn dead_since_ms(&self) -> Option<UnixMillis> {
        if self.deleted || self.expires_ms != 0 {
            Some(self.expires_ms.max(self.version.wall_ms()))
        } else {
            None
        }
    }

    /// The same write turned into a tombstone: what an expired entry becomes
    /// (value dropped, version kept, so it still beats older writes).
    pub fn into_tombstone(mut self) -> Entry {
        self.deleted = true;
        self.value = Bytes::new();
        self
    }

    /// An upper bound of the entry's encoded size in bytes, for budgets.
    pub fn encoded_len_max(&self) -> usize {
        // ns (3) + two length-prefixed byte strings (5 + 5) + writer (10) +
        // version (10) + expiry (10) + flag (1).
        self.key.len() + self.value.len() + 44
    }
}

/// The total order of the last-writer-wins merge: version first, then the
/// writer's id; the remaining fields only break ties between two different
/// payloads that claim the same (version, writer), which a correct writer
/// never produces, so that the merge stays a function of its inputs.
pub fn lww_cmp(a: &Entry, b: &Entry) -> Ordering {
    (a.version, a.writer)
        .cmp(&(b.version, b.writer))
        .then(a.deleted.cmp(&b.deleted))
        .then(a.expires_ms.cmp(&b.expires_ms))
        .then_with(|| a.value.cmp(&b.value))
        .then_with(|| a.ns.cmp(&b.ns))
        .then_with(|| a.key.cmp(&b.key))
}

/// Merges two versions of the same key: last writer wins on
/// `(version, writer)`. Commutative, associative and idempotent; use it
/// wherever two replicas of one key meet.
pub fn merge(a: Entry, b: Entry) -> Entry {
    if lww_cmp(&a, &b) == Ordering::Less {
        b
    } else {
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hlc_ticks_grow_when_the_wall_clock_steps_back() {
        let mut h = Hlc::new();
        let a = h.tick(1_000);
        let b = h.tick(1_000);
        let c = h.tick(500);
        let d = h.tick(2_000);
        assert!(a < b && b < c && c < d);
        assert_eq!(a.wall_ms(), 1_000);
        assert_eq!(b.logical(), 1);
        assert_eq!(d, Version::new(2_000, 0));
    }

    #[test]
    fn hlc_observing_a_remote_version_puts_later_ticks_after_it() {
        let mut h = Hlc::new();
        h.observe(Version::new(9_000, 7));
        assert!(h.tick(1_000) > Version::new(9_000, 7));
    }
}
