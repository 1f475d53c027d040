//! The replicated store: entries by `(namespace, key)`, merged with
//! [`merge`](super::merge), plus the bookkeeping anti-entropy needs.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Bound;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use super::entry::{lww_cmp, Entry, Hlc, Namespace, NodeId, Version};
use super::held::{Entries, EntryInterner, ExpiryQueue, Shared, WriterIndex};
use super::settling::Settling;
use super::writers::{Marks, Writers};
use crate::time::UnixMillis;

/// Limits and timings of a [`Store`].
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// How long a tombstone (or an expired entry) is kept before it is
    /// collected. A peer that is further behind than this gets a full state
    /// transfer instead of a delta. Must exceed the longest partition you
    /// want to heal by delta.
    pub tombstone_grace_ms: u64,
    /// Entries (live and tombstones) the store holds at most; writes and
    /// remote entries for new keys are refused beyond it. The default
    /// [`namespaces`](Self::namespaces) keep 800,000 of it for DNS: lower
    /// that reserve with it.
    pub entries_max: usize,
    /// Longest key accepted, in bytes.
    pub key_bytes_max: usize,
    /// Longest value accepted, in bytes.
    pub value_bytes_max: usize,
    /// Distinct writers tracked at most; entries from further writers are
    /// refused. Every node that announces a torrent in the overlay is a
    /// writer, so this bounds the cluster whose every node can announce:
    /// the default (65,536) costs at most about 2.5 MB of watermarks. At
    /// 2,048, a 10,000-node simulated cluster refused the announces of
    /// its later writers on most nodes (85 % of pairs delivered).
    pub writers_max: usize,
    /// How far ahead of our wall clock a remote version may be; entries
    /// further in the future are refused so one bad clock cannot drag the
    /// cluster's HLC along.
    pub clock_drift_max_ms: u64,
    /// Collected tombstones remembered as (key, version, writer) only, oldest
    /// forgotten first: they refuse stale copies of deleted entries and are
    /// sent as tombstones in full transfers, so a node that was away longer
    /// than the grace period still learns about the delete.
    pub graveyard_max: usize,
    /// Limits of single namespaces on top of the store-wide ones; a
    /// namespace not listed has none of its own. The default caps the
    /// tracker's `PROVIDERS` (soft state, written by anyone who can reach
    /// `/announce`) and keeps room for `DNS` that no other namespace can
    /// take, whether its entries are written here or arrive by gossip.
    pub namespaces: BTreeMap<Namespace, NamespaceConfig>,
    /// Makes the shared form of each entry the store comes to hold: `None`
    /// allocates each anew. The simulator, which runs thousands of stores
    /// in one process, passes one interner to all of them, so an entry
    /// every node holds is in memory once.
    pub interner: Option<Arc<dyn EntryInterner>>,
    /// How long after its version's wall-clock time a change enters the
    /// [settled summary](Store::settled_summary) that gossip compares:
    /// longer than a push takes to reach (nearly) every node, so that a
    /// write still spreading starts no exchange, and short, because a
    /// write a node missed is noticed only this long after it was made.
    /// 0: at once.
    pub summary_settle_ms: u64,
}

/// Limits of one namespace of a [`Store`] (see [`StoreConfig::namespaces`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceConfig {
    /// Entries of this namespace held at most (live and tombstones); new
    /// keys of it are refused with [`Refused::Full`] beyond it.
    pub entries_max: usize,
    /// Room of [`StoreConfig::entries_max`] kept for this namespace: an
    /// entry of another namespace is refused if it would leave less free
    /// room than this namespace's unused reserve.
    pub entries_reserved: usize,
    /// Soft state: every entry of the namespace expires at most this long
    /// after its version (a later expiry, or none, is cut to it, the same
    /// way on every node), so a delete only has to outlive that: its
    /// tombstone is kept this long rather than
    /// [`StoreConfig::tombstone_grace_ms`], and once collected it is not
    /// remembered (any older copy a peer still offers has expired). Only
    /// applies when it is at most `tombstone_grace_ms`.
    pub lifetime_max_ms: Option<u64>,
}

impl Default for NamespaceConfig {
    /// No limit of its own.
    fn default() -> Self {
        NamespaceConfig { entries_max: usize::MAX, entries_reserved: 0, lifetime_max_ms: None }
    }
}

/// Provider entries held at most by default (about 100 MB of memory).
pub const PROVIDERS_ENTRIES_MAX: usize = 200_000;
/// How long a provider entry (and so its tombstone) lives at most, by
/// default: two hours, enough for announce intervals up to about an hour.
pub const PROVIDERS_LIFETIME_MAX_MS: u64 = 2 * 3600 * 1000;

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            tombstone_grace_ms: 24 * 3600 * 1000,
            entries_max: 1_000_000,
            key_bytes_max: 512,
            value_bytes_max: 16 * 1024,
            writers_max: 65_536,
            clock_drift_max_ms: 60_000,
            graveyard_max: 100_000,
            namespaces: BTreeMap::from([
                (
                    Namespace::DNS,
                    // Whatever the other namespaces hold, DNS keeps 80%.
                    NamespaceConfig { entries_reserved: 800_000, ..NamespaceConfig::default() },
                ),
                (
                    Namespace::PROVIDERS,
                    NamespaceConfig {
                        entries_max: PROVIDERS_ENTRIES_MAX,
                        lifetime_max_ms: Some(PROVIDERS_LIFETIME_MAX_MS),
                        ..NamespaceConfig::default()
                    },
                ),
            ]),
            interner: None,
            summary_settle_ms: 1_500,
        }
    }
}

/// What the store tells its followers (the DNS view, persistence).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// This entry now holds its key: a live value or a tombstone (check
    /// `deleted` and the expiry). Persist it; update views.
    Applied(Entry),
    /// The key's tombstone was collected: forget the key entirely (delete it
    /// from persistence too).
    Removed {
        /// Namespace of the collected key.
        ns: Namespace,
        /// The collected key.
        key: Bytes,
    },
}

/// Why an entry was not applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The store already holds this version or a later one (nothing changed).
    Stale,
    /// Key or value longer than the configured limits (nothing changed).
    TooLarge,
    /// The store is at `entries_max` or `writers_max`, or the namespace at
    /// its own cap or at another's reserve (nothing changed).
    Full,
    /// The version is further in the future than `clock_drift_max_ms`
    /// (nothing changed).
    FromTheFuture,
}

/// A local write as issued by [`Store::write`] / [`Store::delete`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalWrite {
    /// The new entry (already applied).
    pub entry: Entry,
    /// The writer's previous version: a peer that has seen everything up to
    /// `prev` from this writer may mark everything up to `entry.version` seen.
    pub prev: Version,
}

/// How far a node has seen each writer, or a window of that map: the digest
/// of anti-entropy. Writers inside `[lo, hi]` (None = unbounded) that are not
/// listed count as never seen.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    /// Lowest writer id covered, or unbounded.
    pub lo: Option<NodeId>,
    /// Highest writer id covered (inclusive), or unbounded.
    pub hi: Option<NodeId>,
    /// `(writer, version)`: everything from `writer` up to `version` is held.
    #[serde(with = "super::marks")]
    pub seen: Vec<(NodeId, Version)>,
}

impl Digest {
    fn covers(&self, w: NodeId) -> bool {
        self.lo.is_none_or(|lo| w >= lo) && self.hi.is_none_or(|hi| w <= hi)
    }
}

/// Entries to send to a peer plus the watermarks they complete.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    /// Entries the peer lacks, in ascending (writer, version) order.
    pub entries: Vec<Entry>,
    /// After applying `entries`, the peer holds everything from `writer` up to
    /// `version`.
    #[serde(with = "super::marks")]
    pub seen: Vec<(NodeId, Version)>,
}

/// One chunk of a full state transfer, in key order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FullChunk {
    /// Entries (live and tombstones) with keys after the request's cursor.
    pub entries: Vec<Entry>,
    /// The key to continue after, or `None` if this was the last chunk.
    pub next: Option<(Namespace, Bytes)>,
    /// With the last chunk: the sender's watermarks.
    #[serde(with = "super::marks")]
    pub seen: Vec<(NodeId, Version)>,
    /// With the last chunk: the sender's collected-tombstone floors
    /// ([`Store::gc_floors`]).
    #[serde(with = "super::marks")]
    pub floors: Vec<(NodeId, Version)>,
    /// With the last chunk: whether the sender knows its whole collection
    /// history (it has not restarted since, or took a full transfer from a
    /// node that does).
    pub complete: bool,
}

type Key = (Namespace, Bytes);

/// The replicated store of one node.
///
/// * Inputs: [`write`](Self::write)/[`delete`](Self::delete) for local
///   changes, [`apply`](Self::apply)/[`apply_delta`](Self::apply_delta) for
///   remote ones, [`expire`](Self::expire) as wall time passes,
///   [`restore`](Self::restore) once at start.
/// * Outputs: [`drain_changes`](Self::drain_changes) (the change feed; drain
///   it after every input), [`digest`](Self::digest),
///   [`delta_for`](Self::delta_for), [`full_chunk`](Self::full_chunk).
/// * Getters: [`get`](Self::get), [`live`](Self::live),
///   [`entries`](Self::entries).
#[derive(Debug)]
pub struct Store {
    cfg: StoreConfig,
    /// `(namespace, lifetime_max_ms)` of the configured namespaces that
    /// have a lifetime, held inline: every entry applied looks its
    /// namespace up here, and the config's map is one more cold heap
    /// node per message when many stores share a cache (the simulator).
    lifetimes: SmallVec<[(Namespace, u64); 4]>,
    me: NodeId,
    hlc: Hlc,
    entries: Entries,
    /// Entries held per namespace (the keys of `entries`, counted).
    per_ns: BTreeMap<Namespace, usize>,
    by_writer: WriterIndex,
    /// Per writer: our watermark and the highest version held or applied.
    /// One record per writer rather than two maps, in a sorted vector (see
    /// `writers.rs`): every announcing node is a writer.
    marks: Writers,
    /// Writers in `marks` with a watermark (`seen` above zero).
    watermarked: usize,
    seen_hash: u64,
    /// XOR of `above_mix` over the entries held above their writer's
    /// watermark (see [`Store::summary_hash`]).
    above_hash: u64,
    /// The summary's terms still settling (see `settling.rs`), and the
    /// wall clock they were last settled at.
    settling: Settling,
    settled_at_ms: UnixMillis,
    expiries: ExpiryQueue,
    collect: BTreeSet<(UnixMillis, Namespace, Bytes)>,
    gc_floor: BTreeMap<NodeId, Version>,
    graveyard: BTreeMap<Key, (Version, NodeId, u64)>,
    graveyard_order: VecDeque<(u64, Key)>,
    graveyard_seq: u64,
    history_complete: bool,
    restored_floor_ms: Option<UnixMillis>,
    own_chain_broken: bool,
    changes: VecDeque<Change>,
}

fn mix(w: NodeId, v: Version) -> u64 {
    let mut z = w ^ v.0.rotate_left(29) ^ 0x9E37_79B9_7F4A_7C15;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The term of one held entry in `Store::above_hash`: (writer, version)
/// names a write, salted apart from the watermark terms of `seen_hash`.
fn above_mix(w: NodeId, v: Version) -> u64 {
    mix(w ^ 0xA5A5_0F0F_C3C3_9696, v)
}

impl Store {
    /// An empty store for node `me`.
    pub fn new(cfg: StoreConfig, me: NodeId) -> Self {
        let lifetimes = cfg.namespaces.iter().filter_map(|(ns, c)| Some((*ns, c.lifetime_max_ms?))).collect();
        let settling = Settling::new(cfg.summary_settle_ms);
        Store {
            cfg,
            lifetimes,
            me,
            hlc: Hlc::new(),
            entries: Entries::default(),
            per_ns: BTreeMap::new(),
            by_writer: WriterIndex::default(),
            marks: Writers::default(),
            watermarked: 0,
            seen_hash: 0,
            above_hash: 0,
            settling,
            settled_at_ms: 0,
            expiries: ExpiryQueue::default(),
            collect: BTreeSet::new(),
            gc_floor: BTreeMap::new(),
            graveyard: BTreeMap::new(),
            graveyard_order: VecDeque::new(),
            graveyard_seq: 0,
            history_complete: true,
            restored_floor_ms: None,
            own_chain_broken: false,
            changes: VecDeque::new(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &StoreConfig {
        &self.cfg
    }

    /// Loads entries persisted by an earlier run (from the change feed). Call
    /// once, before any other input. Watermarks are not restored (only our
    /// own), so the node catches up from peers; the clock is moved past
    /// every loaded version. Emits no changes.
    pub fn restore(&mut self, entries: impl IntoIterator<Item = Entry>, now_ms: UnixMillis) {
        self.history_complete = false;
        // Whatever we collected before going down was dead for a grace period
        // before that: a peer whose knowledge of a writer is older than this
        // may have missed one of those deletes, whoever it learns from later.
        self.restored_floor_ms = Some(now_ms.saturating_sub(self.cfg.tombstone_grace_ms));
        // Our own last writes may have been collected: do not let the next one
        // claim to follow on from what we still hold.
        self.own_chain_broken = true;
        let mut own = Version::ZERO;
        for e in entries {
            self.hlc.observe(e.version);
            if e.writer == self.me {
                own = own.max(e.version);
            }
            let _ = self.apply(e, now_ms);
        }
        self.set_seen(self.me, own);
        self.changes.clear();
    }

    /// Writes `value` under `(ns, key)` as this node, expiring at `expires_ms`
    /// (0 = never). The version is later than any the store has seen, so the
    /// write wins locally. Returns the entry to push to peers.
    pub fn write(
        &mut self,
        ns: Namespace,
        key: Bytes,
        value: Bytes,
        expires_ms: UnixMillis,
        now_ms: UnixMillis,
    ) -> Result<LocalWrite, Refused> {
        self.local(ns, key, value, expires_ms, false, now_ms)
    }

    /// Deletes `(ns, key)` as this node: writes a tombstone, even if the key
    /// is unknown here, so that older writes arriving later lose.
    pub fn delete(&mut self, ns: Namespace, key: Bytes, now_ms: UnixMillis) -> Result<LocalWrite, Refused> {
        self.local(ns, key, Bytes::new(), 0, true, now_ms)
    }

    fn local(
        &mut self,
        ns: Namespace,
        key: Bytes,
        value: Bytes,
        expires_ms: UnixMillis,
        deleted: bool,
        now_ms: UnixMillis,
    ) -> Result<LocalWrite, Refused> {
        if key.len() > self.cfg.key_bytes_max || value.len() > self.cfg.value_bytes_max {
            return Err(Refused::TooLarge);
        }
        if let Some(old) = self.entries.get(ns, &key) {
            self.hlc.observe(old.version);
        } else if !self.has_room(ns) {
            return Err(Refused::Full);
        }
        if self.seen_of(self.me) == Version::ZERO && self.watermarked >= self.cfg.writers_max {
            return Err(Refused::Full);
        }
        let mine = self.seen_of(self.me);
        self.hlc.observe(mine);
        let prev = if self.own_chain_broken {
            self.own_chain_broken = false;
            Version(u64::MAX)
        } else {
            mine
        };
        let version = self.hlc.tick(now_ms);
        let mut entry = Entry { ns, key, value, writer: self.me, version, expires_ms, deleted };
        self.cap_lifetime(&mut entry);
        self.put(entry.clone());
        self.set_seen(self.me, version);
        self.expire(now_ms);
        Ok(LocalWrite { entry, prev })
    }

    /// Merges a remote entry. An entry that arrives already expired is
    /// stored as its tombstone; an entry for a key we no longer hold, from a
    /// writer we have seen past its version, is refused as stale (its delete
    /// was collected here). Returns whether it changed the store.
    pub fn apply(&mut self, mut e: Entry, now_ms: UnixMillis) -> Result<(), Refused> {
        if e.key.len() > self.cfg.key_bytes_max || e.value.len() > self.cfg.value_bytes_max {
            return Err(Refused::TooLarge);
        }
        if e.version.wall_ms() > now_ms.saturating_add(self.cfg.clock_drift_max_ms) {
            return Err(Refused::FromTheFuture);
        }
        if e.deleted && !e.value.is_empty() {
            e.value = Bytes::new();
        }
        self.cap_lifetime(&mut e);
        if !e.deleted && e.is_expired(now_ms) {
            e = e.into_tombstone();
        }
        if let Some(dead) = e.dead_since_ms() {
            if e.deleted && dead.saturating_add(self.grace_ms(e.ns)) <= now_ms {
                // Past its grace period: it would be collected at once. Still
                // let it beat an older live entry we hold, but never store it
                // for a key we do not have.
                if !self.entries.contains(e.ns, &e.key) {
                    self.bury(e.ns, e.key.clone(), e.version, e.writer);
                    return Err(Refused::Stale);
                }
            }
        }
        match self.entries.get(e.ns, &e.key) {
            Some(old) if lww_cmp(old, &e) != core::cmp::Ordering::Less => return Err(Refused::Stale),
            Some(_) => {}
            None if self
                .graveyard
                .get(&(e.ns, e.key.clone()))
                .is_some_and(|(v, w, _)| (e.version, e.writer) <= (*v, *w)) =>
            {
                // Its delete was collected here: never let it back in.
                return Err(Refused::Stale);
            }
            None if self.seen_of(e.writer) != Version::ZERO && e.version <= self.seen_of(e.writer) => {
                // We hold everything from this writer up to our watermark, or
                // what superseded it; the key is gone, so what superseded it
                // was a tombstone since collected. This entry is dead: never
                // let it back in (whoever sent it is stale).
                return Err(Refused::Stale);
            }
            None => {
                if !self.has_room(e.ns) {
                    return Err(Refused::Full);
                }
            }
        }
        if !self.marks.contains_key(&e.writer) && self.marks.len() >= self.cfg.writers_max {
            return Err(Refused::Full);
        }
        self.hlc.observe(e.version);
        self.put(e);
        // A tombstone applied past its grace period goes at once.
        self.expire(now_ms);
        Ok(())
    }

    fn put(&mut self, e: Entry) {
        if !self.graveyard.is_empty() {
            self.graveyard.remove(&(e.ns, e.key.clone()));
        }
        let e = match &self.cfg.interner {
            Some(interner) => interner.intern(e),
            None => Arc::new(e),
        };
        if let Some(old) = self.entries.remove(e.ns, &e.key) {
            self.unindex(&old);
        } else {
            *self.per_ns.entry(e.ns).or_default() += 1;
        }
        let known = self.marks.get(&e.writer);
        if known.is_none_or(|m| e.version > m.max) {
            let mut m = known.unwrap_or_default();
            m.max = m.max.max(e.version);
            self.marks.set(e.writer, m);
        }
        self.index_writer(&e);
        if e.deleted {
            let at = e.dead_since_ms().unwrap_or(0).saturating_add(self.grace_ms(e.ns));
            self.collect.insert((at, e.ns, e.key.clone()));
        } else if e.expires_ms != 0 {
            self.expiries.insert(e.clone());
        }
        self.changes.push_back(Change::Applied(Entry::clone(&e)));
        self.entries.insert(e);
    }

    fn index_writer(&mut self, e: &Shared) {
        if e.version > self.seen_of(e.writer) {
            self.flip_above(e.writer, e.version);
        }
        self.by_writer.insert(e.clone());
    }

    fn unindex_writer(&mut self, old: &Entry) {
        if self.by_writer.remove(old) && old.version > self.seen_of(old.writer) {
            self.flip_above(old.writer, old.version);
        }
    }

    /// Adds or takes out the summary term of an entry held above its
    /// writer's watermark.
    fn flip_above(&mut self, writer: NodeId, version: Version) {
        let term = above_mix(writer, version);
        self.above_hash ^= term;
        self.settling.delay(term.rotate_left(17), 0, version.wall_ms(), self.settled_at_ms);
    }

    fn unindex(&mut self, old: &Entry) {
        self.unindex_writer(old);
        if old.deleted {
            let at = old.dead_since_ms().unwrap_or(0).saturating_add(self.grace_ms(old.ns));
            self.collect.remove(&(at, old.ns, old.key.clone()));
        } else if old.expires_ms != 0 {
            self.expiries.remove(old);
        }
    }

    /// The earliest wall time at which [`expire`](Self::expire) has work:
    /// a live entry's expiry or a tombstone's collection, if any is held.
    pub fn next_expiry_ms(&self) -> Option<UnixMillis> {
        self.expiries.first_ms().into_iter().chain(self.collect.first().map(|c| c.0)).min()
    }

    /// Turns entries whose expiry has passed into tombstones and collects
    /// tombstones past their grace period. Call whenever wall time moves on
    /// (the gossip machine does it every round it runs, and wakes for the
    /// round after [`next_expiry_ms`](Self::next_expiry_ms) even when idle).
    pub fn expire(&mut self, now_ms: UnixMillis) {
        while let Some(due) = self.expiries.pop_due(now_ms) {
            assert!(!due.deleted, "expiry queue holds live entries only");
            // The queue holds exactly the held entries that expire.
            self.put(Entry::clone(&due).into_tombstone());
        }
        while let Some(first) = self.collect.first() {
            if first.0 > now_ms {
                break;
            }
            let (_, ns, key) = self.collect.pop_first().expect("non-empty");
            if let Some(old) = self.entries.remove(ns, &key) {
                self.uncount(ns);
                self.unindex_writer(&old);
                // A soft namespace's older copies have all expired by now,
                // wherever they are: no peer needs to learn of this delete.
                if self.soft_lifetime_ms(ns).is_none() {
                    let f = self.gc_floor.entry(old.writer).or_default();
                    if old.version > *f {
                        *f = old.version;
                    }
                    self.bury(ns, key.clone(), old.version, old.writer);
                }
                self.changes.push_back(Change::Removed { ns, key });
            }
        }
    }

    /// Room for one more key of `ns`: under its own cap, and under the
    /// store's cap less the unused reserves of the other namespaces.
    fn has_room(&self, ns: Namespace) -> bool {
        let held = |n: &Namespace| self.per_ns.get(n).copied().unwrap_or(0);
        let mut kept = 0usize;
        for (n, c) in &self.cfg.namespaces {
            if *n == ns {
                if held(n) >= c.entries_max {
                    return false;
                }
            } else {
                kept = kept.saturating_add(c.entries_reserved.saturating_sub(held(n)));
            }
        }
        self.entries.len().saturating_add(kept) < self.cfg.entries_max
    }

    fn uncount(&mut self, ns: Namespace) {
        if let Some(n) = self.per_ns.get_mut(&ns) {
            *n -= 1;
            if *n == 0 {
                self.per_ns.remove(&ns);
            }
        }
    }

    /// The lifetime of a soft namespace (see
    /// [`NamespaceConfig::lifetime_max_ms`]), if `ns` is one.
    fn soft_lifetime_ms(&self, ns: Namespace) -> Option<u64> {
        self.lifetime_max_ms(ns).filter(|l| *l <= self.cfg.tombstone_grace_ms)
    }

    /// The namespace's [`NamespaceConfig::lifetime_max_ms`], if it has one.
    fn lifetime_max_ms(&self, ns: Namespace) -> Option<u64> {
        self.lifetimes.iter().find(|(n, _)| *n == ns).map(|(_, l)| *l)
    }

    /// How long a tombstone of `ns` is kept.
    fn grace_ms(&self, ns: Namespace) -> u64 {
        self.soft_lifetime_ms(ns).unwrap_or(self.cfg.tombstone_grace_ms)
    }

    /// Cuts a live entry's expiry to its namespace's lifetime, if it has
    /// one: a function of the entry alone, so every node cuts alike.
    fn cap_lifetime(&self, e: &mut Entry) {
        if e.deleted {
            return;
        }
        let Some(l) = self.lifetime_max_ms(e.ns) else {
            return;
        };
        let latest = e.version.wall_ms().saturating_add(l).max(1);
        if e.expires_ms == 0 || e.expires_ms > latest {
            e.expires_ms = latest;
        }
    }

    /// Entries of namespace `ns` held, tombstones included.
    pub fn len_of(&self, ns: Namespace) -> usize {
        self.per_ns.get(&ns).copied().unwrap_or(0)
    }

    /// Remembers a collected tombstone, forgetting the oldest beyond
    /// `graveyard_max`.
    fn bury(&mut self, ns: Namespace, key: Bytes, version: Version, writer: NodeId) {
        if self.cfg.graveyard_max == 0 {
            return;
        }
        let k = (ns, key);
        if let Some((v, w, _)) = self.graveyard.get(&k) {
            if (*v, *w) >= (version, writer) {
                return;
            }
        }
        self.graveyard_seq += 1;
        self.graveyard.insert(k.clone(), (version, writer, self.graveyard_seq));
        self.graveyard_order.push_back((self.graveyard_seq, k));
        while self.graveyard.len() > self.cfg.graveyard_max {
            let Some((seq, k)) = self.graveyard_order.pop_front() else {
                break;
            };
            if self.graveyard.get(&k).is_some_and(|(_, _, s)| *s == seq) {
                self.graveyard.remove(&k);
            }
        }
        // Stale order records (keys re-buried or revived) are dropped lazily.
        if self.graveyard_order.len() > 2 * self.cfg.graveyard_max + 16 {
            let live = &self.graveyard;
            self.graveyard_order.retain(|(seq, k)| live.get(k).is_some_and(|(_, _, s)| s == seq));
        }
    }

    /// Collected tombstones remembered (see `StoreConfig::graveyard_max`).
    pub fn graveyard_len(&self) -> usize {
        self.graveyard.len()
    }

    /// Takes the next change of the feed. Drain it fully after every input:
    /// the feed holds at most the changes of the inputs since.
    pub fn drain_changes(&mut self) -> Option<Change> {
        let c = self.changes.pop_front();
        if c.is_none() {
            crate::queues::shrink_idle(&mut self.changes);
        }
        c
    }

    /// The entry held under `(ns, key)`, live or not, as the store shares
    /// it (a clone of it is a pointer, not a copy).
    pub fn held(&self, ns: Namespace, key: &[u8]) -> Option<&Shared> {
        self.entries.get(ns, key)
    }

    /// The live entry under `(ns, key)` at `now_ms`, if any.
    pub fn get(&self, ns: Namespace, key: &[u8], now_ms: UnixMillis) -> Option<&Entry> {
        self.entries.get(ns, key).map(|e| &**e).filter(|e| e.is_live(now_ms))
    }

    /// The live entries of `ns` whose keys start with `prefix`, in key
    /// order (a lookup of one torrent's providers).
    pub fn live_with_prefix<'a>(
        &'a self,
        ns: Namespace,
        prefix: &'a [u8],
        now_ms: UnixMillis,
    ) -> impl Iterator<Item = &'a Entry> + 'a {
        self.entries
            .starting_at(ns, prefix)
            .take_while(move |e| e.ns == ns && e.key.starts_with(prefix))
            .filter(move |e| e.is_live(now_ms))
    }

    /// The live entries of namespace `ns` at `now_ms`, in key order: what may
    /// be served.
    pub fn live(&self, ns: Namespace, now_ms: UnixMillis) -> impl Iterator<Item = &Entry> + '_ {
        self.entries.starting_at(ns, &[]).take_while(move |e| e.ns == ns).filter(move |e| e.is_live(now_ms))
    }

    /// Every entry held, tombstones included, in key order: a snapshot for
    /// persistence or checks.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> + '_ {
        self.entries.iter()
    }

    /// Entries held, tombstones included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if the store holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How far we have seen `writer` (everything up to the returned version).
    pub fn seen_of(&self, writer: NodeId) -> Version {
        self.marks.get(&writer).map_or(Version::ZERO, |m| m.seen)
    }

    /// The highest version held or ever applied from `writer`.
    pub fn max_of(&self, writer: NodeId) -> Version {
        self.marks.get(&writer).map_or(Version::ZERO, |m| m.max)
    }

    /// Marks everything from `writer` up to `v` as seen (no-op if already).
    pub fn set_seen(&mut self, writer: NodeId, v: Version) {
        let old = self.seen_of(writer);
        if v <= old {
            return;
        }
        if old == Version::ZERO && self.watermarked >= self.cfg.writers_max {
            return;
        }
        let mut term = mix(writer, v);
        if old != Version::ZERO {
            term ^= mix(writer, old);
        }
        // Entries held in (old, v] are now below the watermark.
        let mut above = 0u64;
        for e in self.by_writer.of_writer_from(writer, Version(old.0.saturating_add(1))) {
            if e.version > v {
                break;
            }
            above ^= above_mix(writer, e.version);
        }
        self.above_hash ^= above;
        self.seen_hash ^= term;
        let new_writer = old == Version::ZERO;
        if new_writer {
            self.watermarked += 1;
        }
        // The entries' terms settle with the watermark's: each one's version
        // is at most `v`, so it would settle no later.
        self.settling.delay(term ^ above.rotate_left(17), u32::from(new_writer), v.wall_ms(), self.settled_at_ms);
        let max = self.max_of(writer).max(v);
        self.marks.set(writer, Marks { seen: v, max });
    }

    /// False after [`restore`](Self::restore) until a full transfer from a
    /// node that knows its collection history: until then we cannot tell
    /// which tombstones were collected while we were down.
    pub fn history_complete(&self) -> bool {
        self.history_complete
    }

    /// Declares the collection history complete (the caller knows nothing was
    /// collected that we missed, e.g. the whole cluster was down).
    pub fn mark_history_complete(&mut self) {
        self.history_complete = true;
    }

    /// A hash of the whole watermark map: two stores with equal hashes (and
    /// writer counts) need no anti-entropy.
    pub fn seen_hash(&self) -> u64 {
        self.seen_hash
    }

    /// The anti-entropy summary: [`seen_hash`](Self::seen_hash) combined
    /// with a hash of the entries held above their writer's watermark. Two
    /// stores with equal watermarks can still differ in those: a writer
    /// that restarted breaks its chain of versions (see
    /// [`restore`](Self::restore)), so until it serves a delta again nobody's
    /// watermark of it moves, and its later writes travel only by push. A
    /// push lost there would never be repaired by peers that hold it if the
    /// summary covered the watermarks alone (the chaos seed 6525: a delete
    /// held by one node above its watermark was collected there without ever
    /// reaching the others, whose summaries matched). In steady state every
    /// pushed entry is below its watermark at once, so this adds no
    /// exchanges.
    pub fn summary_hash(&self) -> u64 {
        self.seen_hash ^ self.above_hash.rotate_left(17)
    }

    /// Moves the settled summary's clock to `now_ms` (see
    /// [`settled_summary`](Self::settled_summary)). Gossip calls it on
    /// every input, before it reads or changes the store.
    pub fn advance(&mut self, now_ms: UnixMillis) {
        self.settled_at_ms = now_ms;
        self.settling.advance(now_ms);
    }

    /// The summary gossip compares: ([`summary_hash`](Self::summary_hash),
    /// [`writers`](Self::writers)) without the changes whose versions are
    /// younger than [`StoreConfig::summary_settle_ms`] (see `settling.rs`).
    /// Two stores that hold the same writes older than that, and received
    /// the younger ones within it, have equal settled summaries.
    pub fn settled_summary(&self) -> (u64, u32) {
        (
            self.summary_hash() ^ self.settling.waiting_xor(),
            (self.watermarked as u32).saturating_sub(self.settling.waiting_writers()),
        )
    }

    /// Panics if the incrementally kept summary disagrees with one computed
    /// from scratch (linear in the entries: for tests, the fuzzer and the
    /// simulator, through `Gossip::check_invariants`).
    pub fn check_summary(&self) {
        let mut above = 0u64;
        for e in self.by_writer.iter() {
            if e.version > self.seen_of(e.writer) {
                above ^= above_mix(e.writer, e.version);
            }
        }
        assert_eq!(above, self.above_hash, "the hash of entries above their watermarks drifted");
        let mut seen = 0u64;
        for (w, v) in self.watermarks() {
            seen ^= mix(w, v);
        }
        assert_eq!(self.watermarks().count(), self.watermarked, "the count of watermarks drifted");
        assert_eq!(seen, self.seen_hash, "the hash of the watermarks drifted");
    }

    /// Number of writers with a watermark.
    pub fn writers(&self) -> usize {
        self.watermarked
    }

    /// `(writer, watermark)` of every writer with a watermark, by writer.
    fn watermarks(&self) -> impl DoubleEndedIterator<Item = (NodeId, Version)> + '_ {
        Self::watermarked(self.marks.iter())
    }

    fn watermarked<'a>(
        marks: impl DoubleEndedIterator<Item = (NodeId, Marks)> + 'a,
    ) -> impl DoubleEndedIterator<Item = (NodeId, Version)> + 'a {
        marks.filter(|(_, m)| m.seen != Version::ZERO).map(|(w, m)| (w, m.seen))
    }

    /// A digest of at most `writers_max` writers, starting at the
    /// `start`-th writer (modulo the writer count) so that a large
    /// writer set is covered over several rounds.
    pub fn digest(&self, start: usize, writers_max: usize) -> Digest {
        let n = self.watermarked;
        if n <= writers_max {
            return Digest { lo: None, hi: None, seen: self.watermarks().collect() };
        }
        let start = start % n;
        let seen: Vec<(NodeId, Version)> = self.watermarks().skip(start).take(writers_max).collect();
        let end = start + seen.len();
        Digest { lo: (start > 0).then(|| seen[0].0), hi: (end < n).then(|| seen[seen.len() - 1].0), seen }
    }

    /// A digest of at most `writers_max` writers whose window covers
    /// `first`: it starts there (or ends at the last writer, if fewer
    /// follow). Gossip starts its digest at a writer it knows it is behind
    /// on, so the exchange repairs that writer first (issue 16).
    pub fn digest_from(&self, first: NodeId, writers_max: usize) -> Digest {
        let n = self.watermarked;
        if n <= writers_max || writers_max == 0 {
            return self.digest(0, writers_max);
        }
        let mut seen: Vec<(NodeId, Version)> = Self::watermarked(self.marks.range(first..)).take(writers_max).collect();
        if seen.len() < writers_max {
            let mut before: Vec<(NodeId, Version)> =
                Self::watermarked(self.marks.range(..first)).rev().take(writers_max - seen.len()).collect();
            before.reverse();
            before.append(&mut seen);
            seen = before;
        }
        let lowest = self.watermarks().next().map(|(w, _)| w);
        let highest = self.watermarks().next_back().map(|(w, _)| w);
        let (lo_w, hi_w) = (seen[0].0, seen[seen.len() - 1].0);
        // A `first` we hold no watermark of lies inside the window as
        // "never seen", so the peer sends all it has of it.
        Digest {
            lo: (Some(lo_w) != lowest).then(|| lo_w.min(first)),
            hi: (Some(hi_w) != highest).then_some(hi_w),
            seen,
        }
    }

    /// True if the peer with `digest` may have missed a delete that we have
    /// already collected: it is behind us on some writer, and either we
    /// collected a tombstone of that writer newer than its watermark, or
    /// (after a restart, when we cannot know) its watermark is older than the
    /// grace period. Such a peer needs a full state transfer, not a delta.
    pub fn needs_full(&self, digest: &Digest, now_ms: UnixMillis) -> bool {
        let theirs: BTreeMap<NodeId, Version> = digest.seen.iter().copied().collect();
        let horizon = now_ms.saturating_sub(self.cfg.tombstone_grace_ms);
        self.marks.iter().map(|(w, m)| (w, m.max)).any(|(w, mine)| {
            if !digest.covers(w) {
                return false;
            }
            let t = theirs.get(&w).copied().unwrap_or_default();
            if t >= mine {
                return false;
            }
            if self.restored_floor_ms.is_some_and(|f| t.wall_ms() < f) {
                return true;
            }
            if self.history_complete {
                // We know exactly which tombstones were collected here or by
                // whoever gave us a full transfer.
                self.gc_floor.get(&w).is_some_and(|floor| *floor > t)
            } else {
                // After a restart we cannot know what was collected while we
                // were down: assume anything older than the grace period was.
                t.wall_ms() < horizon
            }
        })
    }

    /// Per writer, the highest version of a tombstone collected here (or at
    /// the sender of a full transfer we took): what a peer must have seen to
    /// be served by delta. Sent with the last chunk of a full transfer.
    pub fn gc_floors(&self) -> impl Iterator<Item = (NodeId, Version)> + '_ {
        self.gc_floor.iter().map(|(w, v)| (*w, *v))
    }

    /// What a peer with `digest` lacks from the writers the digest covers:
    /// entries newer than its watermarks (expired ones sent as tombstones),
    /// at most `entries_max` entries and about `bytes_max` bytes, plus the
    /// watermarks the peer may adopt after applying them.
    pub fn delta_for(&self, digest: &Digest, now_ms: UnixMillis, entries_max: usize, bytes_max: usize) -> Delta {
        let theirs: BTreeMap<NodeId, Version> = digest.seen.iter().copied().collect();
        let mut out = Delta::default();
        let mut bytes = 0usize;
        let lo = digest.lo.map_or(Bound::Unbounded, Bound::Included);
        let hi = digest.hi.map_or(Bound::Unbounded, Bound::Included);
        'writers: for (w, Marks { max, .. }) in self.marks.range((lo, hi)) {
            let t = theirs.get(&w).copied().unwrap_or_default();
            if max <= t {
                continue;
            }
            // Room for this writer's watermark claim.
            if bytes + 24 > bytes_max {
                break;
            }
            bytes += 24;
            let mine = self.seen_of(w);
            for e in self.by_writer.of_writer_from(w, Version(t.0.saturating_add(1))) {
                let len = e.encoded_len_max();
                if out.entries.len() >= entries_max || bytes + len > bytes_max {
                    // Truncated: the peer may claim up to the last version sent.
                    let last = out.entries.last().filter(|l| l.writer == w).map(|l| l.version).unwrap_or(t);
                    let claim = last.min(mine);
                    if claim > t {
                        out.seen.push((w, claim));
                    }
                    break 'writers;
                }
                bytes += len;
                let e = Entry::clone(e);
                let e = if !e.deleted && e.is_expired(now_ms) { e.into_tombstone() } else { e };
                out.entries.push(e);
            }
            if mine > t {
                out.seen.push((w, mine));
            }
        }
        out
    }

    /// Applies a delta from a peer: merges its entries, then adopts its
    /// watermarks. Returns how many entries changed the store.
    pub fn apply_delta(&mut self, delta: Delta, now_ms: UnixMillis) -> usize {
        let mut n = 0;
        for e in delta.entries {
            if self.apply(e, now_ms).is_ok() {
                n += 1;
            }
        }
        for (w, v) in delta.seen {
            if v.wall_ms() <= now_ms.saturating_add(self.cfg.clock_drift_max_ms) {
                self.set_seen(w, v);
            }
        }
        n
    }

    /// A chunk of a full state transfer: entries (tombstones included,
    /// expired ones as tombstones, remembered collected tombstones too) with
    /// keys after `after`, at most
    /// `entries_max` and about `bytes_max` bytes; the last chunk carries our
    /// watermarks (at most `writers_max`).
    pub fn full_chunk(
        &self,
        after: Option<&(Namespace, Bytes)>,
        now_ms: UnixMillis,
        entries_max: usize,
        bytes_max: usize,
        writers_max: usize,
    ) -> FullChunk {
        let mut out = FullChunk::default();
        let start = match after {
            Some(k) => Bound::Excluded(k.clone()),
            None => Bound::Unbounded,
        };
        let mut bytes = 0usize;
        // Held entries and remembered collected tombstones, merged in key
        // order (a key is never in both).
        let mut held = self.entries.after(after.map(|(ns, key)| (*ns, &key[..]))).peekable();
        let mut buried = self.graveyard.range((start, Bound::Unbounded)).peekable();
        loop {
            let take_held = match (held.peek(), buried.peek()) {
                (None, None) => break,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some(a), Some((b, _))) => (a.ns, &a.key[..]) < (b.0, &b.1[..]),
            };
            let e = if take_held {
                let e = held.next().expect("peeked");
                if !e.deleted && e.is_expired(now_ms) {
                    e.clone().into_tombstone()
                } else {
                    e.clone()
                }
            } else {
                let (k, (v, w, _)) = buried.next().expect("peeked");
                Entry {
                    ns: k.0,
                    key: k.1.clone(),
                    value: Bytes::new(),
                    writer: *w,
                    version: *v,
                    expires_ms: 0,
                    deleted: true,
                }
            };
            let len = e.encoded_len_max();
            if out.entries.len() >= entries_max || bytes + len > bytes_max {
                out.next =
                    Some(out.entries.last().map(|l| (l.ns, l.key.clone())).unwrap_or_else(|| (e.ns, e.key.clone())));
                return out;
            }
            bytes += len;
            out.entries.push(e);
        }
        out.seen = self.watermarks().take(writers_max).collect();
        out.floors = self.gc_floors().take(writers_max).collect();
        out.complete = self.history_complete;
        out
    }

    /// Ends a full state transfer: `received` are the keys the transfer
    /// carried, `theirs` the sender's watermarks, `floors` and `complete` its
    /// collection history (adopted). Every entry we hold that
    /// the sender has seen (version within its watermark) but no longer holds
    /// was deleted and collected there: drop it. Then adopt the watermarks.
    pub fn finish_full(
        &mut self,
        received: &BTreeSet<(Namespace, Bytes)>,
        theirs: &[(NodeId, Version)],
        floors: &[(NodeId, Version)],
        complete: bool,
        now_ms: UnixMillis,
    ) -> usize {
        if complete {
            self.history_complete = true;
        }
        for (w, v) in floors {
            if self.gc_floor.contains_key(w) || self.gc_floor.len() < self.cfg.writers_max {
                let f = self.gc_floor.entry(*w).or_default();
                if *v > *f {
                    *f = *v;
                }
            }
        }
        let theirs_map: BTreeMap<NodeId, Version> = theirs.iter().copied().collect();
        let doomed: Vec<Key> = self
            .entries
            .iter()
            .filter(|e| {
                !received.contains(&(e.ns, e.key.clone()))
                    && theirs_map.get(&e.writer).is_some_and(|seen| e.version <= *seen)
            })
            .map(|e| (e.ns, e.key.clone()))
            .collect();
        let n = doomed.len();
        for k in doomed {
            if let Some(old) = self.entries.remove(k.0, &k.1) {
                self.uncount(k.0);
                self.unindex(&old);
                // Dead as surely as a collected tombstone: remember it, so the
                // same write is refused if a stale peer offers it again (a
                // soft namespace's copies expire anyway).
                if self.soft_lifetime_ms(k.0).is_none() {
                    self.bury(k.0, k.1.clone(), old.version, old.writer);
                }
                self.changes.push_back(Change::Removed { ns: k.0, key: k.1 });
            }
        }
        for (w, v) in theirs {
            if v.wall_ms() <= now_ms.saturating_add(self.cfg.clock_drift_max_ms) {
                self.set_seen(*w, *v);
            }
        }
        n
    }
}
