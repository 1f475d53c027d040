//! Property tests of the replicated store: the merge laws, the store against
//! a plain reference model, and delta sync convergence.

use std::collections::BTreeMap;

use bytes::Bytes;
use proptest::prelude::*;
use rumor_core::replica::{lww_cmp, merge, Change, Digest, Entry, Namespace, Refused, Store, StoreConfig, Version};

fn entry_strategy() -> impl Strategy<Value = Entry> {
    (0u64..4, 0u64..6, 0u16..3, prop::collection::vec(any::<u8>(), 0..3), any::<bool>(), prop::option::of(0u64..3))
        .prop_map(|(writer, wall, logical, value, deleted, exp)| Entry {
            ns: Namespace::DNS,
            key: Bytes::from_static(b"k"),
            value: if deleted { Bytes::new() } else { Bytes::from(value) },
            writer,
            version: Version::new(1_000 + wall, logical),
            expires_ms: exp.map_or(0, |e| 1_000 + e),
            deleted,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn merge_is_commutative(a in entry_strategy(), b in entry_strategy()) {
        prop_assert_eq!(merge(a.clone(), b.clone()), merge(b, a));
    }

    #[test]
    fn merge_is_associative(a in entry_strategy(), b in entry_strategy(), c in entry_strategy()) {
        prop_assert_eq!(
            merge(merge(a.clone(), b.clone()), c.clone()),
            merge(a, merge(b, c))
        );
    }

    #[test]
    fn merge_is_idempotent(a in entry_strategy()) {
        prop_assert_eq!(merge(a.clone(), a.clone()), a);
    }

    #[test]
    fn merge_keeps_the_higher_version_and_writer(a in entry_strategy(), b in entry_strategy()) {
        let m = merge(a.clone(), b.clone());
        prop_assert!((m.version, m.writer) >= (a.version, a.writer));
        prop_assert!((m.version, m.writer) >= (b.version, b.writer));
        prop_assert!(lww_cmp(&m, &a).is_ge() && lww_cmp(&m, &b).is_ge());
    }
}

const GRACE: u64 = 50;

#[derive(Clone, Debug)]
enum Op {
    Write { key: u8, value: u8, ttl: Option<u64> },
    Delete { key: u8 },
    Remote { key: u8, writer: u64, wall: u64, value: u8, deleted: bool },
    Advance { ms: u64 },
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..5, any::<u8>(), prop::option::of(1u64..40)).prop_map(|(key, value, ttl)| Op::Write { key, value, ttl }),
        (0u8..5).prop_map(|key| Op::Delete { key }),
        (0u8..5, 2u64..5, 0u64..200, any::<u8>(), any::<bool>())
            .prop_map(|(key, writer, wall, value, deleted)| Op::Remote { key, writer, wall, value, deleted }),
        (1u64..30).prop_map(|ms| Op::Advance { ms }),
    ]
}

/// The reference: a map from key to the naive merge of everything offered;
/// live = not deleted and not expired.
#[derive(Default)]
struct Model {
    map: BTreeMap<u8, Entry>,
}

impl Model {
    fn offer(&mut self, key: u8, e: Entry) {
        let m = match self.map.remove(&key) {
            Some(old) => merge(old, e),
            None => e,
        };
        self.map.insert(key, m);
    }
    fn live(&self, now: u64) -> BTreeMap<Vec<u8>, (Version, Bytes)> {
        self.map.values().filter(|e| e.is_live(now)).map(|e| (e.key.to_vec(), (e.version, e.value.clone()))).collect()
    }
}

fn store_live(s: &Store, now: u64) -> BTreeMap<Vec<u8>, (Version, Bytes)> {
    s.live(Namespace::DNS, now).map(|e| (e.key.to_vec(), (e.version, e.value.clone()))).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Within the grace period nothing is collected, so the store must serve
    /// exactly what the naive merge of everything it was offered serves.
    #[test]
    fn the_store_serves_what_a_plain_merge_model_serves(ops in prop::collection::vec(op_strategy(), 1..60)) {
        let cfg = StoreConfig { tombstone_grace_ms: 1_000_000, ..StoreConfig::default() };
        let mut s = Store::new(cfg, 1);
        let mut model = Model::default();
        let mut now = 100u64;
        let mut last_version: BTreeMap<Vec<u8>, Version> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Write { key, value, ttl } => {
                    let w = s.write(Namespace::DNS, Bytes::from(vec![key]), Bytes::from(vec![value]),
                        ttl.map_or(0, |t| now + t), now).unwrap();
                    model.offer(key, w.entry);
                }
                Op::Delete { key } => {
                    let w = s.delete(Namespace::DNS, Bytes::from(vec![key]), now).unwrap();
                    model.offer(key, w.entry);
                }
                Op::Remote { key, writer, wall, value, deleted } => {
                    let e = Entry {
                        ns: Namespace::DNS, key: Bytes::from(vec![key]),
                        value: if deleted { Bytes::new() } else { Bytes::from(vec![value]) },
                        writer, version: Version::new(wall, 0), expires_ms: 0, deleted,
                    };
                    let _ = s.apply(e.clone(), now);
                    model.offer(key, e);
                }
                Op::Advance { ms } => { now += ms; s.expire(now); }
            }
            prop_assert_eq!(store_live(&s, now), model.live(now));
            // The change feed only ever moves a key to a later version.
            while let Some(c) = s.drain_changes() {
                if let Change::Applied(e) = c {
                    let k = e.key.to_vec();
                    if let Some(v) = last_version.get(&k) {
                        prop_assert!(e.version >= *v, "version went back for {:?}", k);
                    }
                    last_version.insert(k, e.version);
                }
            }
        }
    }

    /// With collection on: a delete or expiry never comes back, whatever
    /// writes no older than the grace period arrive later.
    #[test]
    fn collected_deletes_do_not_come_back_from_older_writes(ops in prop::collection::vec(op_strategy(), 1..80)) {
        let cfg = StoreConfig { tombstone_grace_ms: GRACE, ..StoreConfig::default() };
        let mut s = Store::new(cfg, 1);
        let mut now = 100u64;
        // Per key: (version, writer) of the newest tombstone the store applied.
        let mut dead_floor: BTreeMap<Vec<u8>, (Version, u64)> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Write { key, value, ttl } => {
                    let _ = s.write(Namespace::DNS, Bytes::from(vec![key]), Bytes::from(vec![value]),
                        ttl.map_or(0, |t| now + t), now);
                }
                Op::Delete { key } => { let _ = s.delete(Namespace::DNS, Bytes::from(vec![key]), now); }
                Op::Remote { key, writer, wall, value, deleted } => {
                    // Remote writes are at most a grace period old, as a
                    // peer within the grace period would send them.
                    let wall = now.saturating_sub(GRACE) + wall % GRACE;
                    let e = Entry {
                        ns: Namespace::DNS, key: Bytes::from(vec![key]),
                        value: if deleted { Bytes::new() } else { Bytes::from(vec![value]) },
                        writer, version: Version::new(wall, 0), expires_ms: 0, deleted,
                    };
                    let _ = s.apply(e, now);
                }
                Op::Advance { ms } => { now += ms; s.expire(now); }
            }
            while let Some(c) = s.drain_changes() {
                if let Change::Applied(e) = c {
                    let k = e.key.to_vec();
                    if let Some(f) = dead_floor.get(&k) {
                        prop_assert!((e.version, e.writer) > *f || e.deleted, "resurrected {:?}", k);
                    }
                    if e.deleted {
                        dead_floor.insert(k, (e.version, e.writer));
                    }
                }
            }
            for e in s.live(Namespace::DNS, now) {
                prop_assert!(!e.is_expired(now));
            }
        }
    }

    /// Two stores that write independently and then run digest/delta rounds
    /// with a tiny budget end up serving the same entries.
    #[test]
    fn delta_sync_with_a_small_budget_converges(
        wa in prop::collection::vec((0u8..20, any::<u8>()), 0..30),
        wb in prop::collection::vec((0u8..20, any::<u8>(), any::<bool>()), 0..30),
    ) {
        let mut a = Store::new(StoreConfig::default(), 1);
        let mut b = Store::new(StoreConfig::default(), 2);
        let mut now = 1_000u64;
        for (k, v) in wa { now += 1; a.write(Namespace::DNS, Bytes::from(vec![k]), Bytes::from(vec![v]), 0, now).unwrap(); }
        for (k, v, del) in wb {
            now += 1;
            if del { b.delete(Namespace::DNS, Bytes::from(vec![k]), now).unwrap(); }
            else { b.write(Namespace::DNS, Bytes::from(vec![k]), Bytes::from(vec![v]), 0, now).unwrap(); }
        }
        for round in 0..40 {
            let da = a.digest(round, 1);
            let d = b.delta_for(&da, now, 3, 200);
            a.apply_delta(d, now);
            let db = b.digest(round, 1);
            let d = a.delta_for(&db, now, 3, 200);
            b.apply_delta(d, now);
        }
        prop_assert_eq!(store_live(&a, now), store_live(&b, now));
        prop_assert_eq!(a.seen_hash(), b.seen_hash());
        // Converged stores agree on their summaries too (no endless
        // exchanges), and each one's kept incrementally matches a recount.
        prop_assert_eq!(a.summary_hash(), b.summary_hash());
        a.check_summary();
        b.check_summary();
        prop_assert!(!a.needs_full(&b.digest(0, 100), now));
    }
}

#[test]
fn a_peer_behind_by_more_than_the_grace_period_needs_a_full_transfer() {
    let cfg = StoreConfig { tombstone_grace_ms: 100, ..StoreConfig::default() };
    let mut b = Store::new(cfg.clone(), 2);
    b.write(Namespace::DNS, Bytes::from_static(b"x"), Bytes::from_static(b"1"), 0, 1_000).unwrap();
    let stale = Digest::default();
    // Nothing collected yet: a delta is enough.
    assert!(!b.needs_full(&stale, 10_000));
    b.delete(Namespace::DNS, Bytes::from_static(b"x"), 1_001).unwrap();
    b.expire(10_000);
    assert!(b.needs_full(&stale, 10_000));
    let fresh = b.digest(0, 10);
    assert!(!b.needs_full(&fresh, 10_000));
    // After a restart the store cannot know what it collected while down.
    let mut c = Store::new(cfg, 3);
    c.restore(
        [Entry {
            ns: Namespace::DNS,
            key: Bytes::from_static(b"y"),
            value: Bytes::from_static(b"1"),
            writer: 2,
            version: Version::new(1_000, 0),
            expires_ms: 0,
            deleted: false,
        }],
        1_050,
    );
    assert!(c.needs_full(&stale, 10_000));
    let recent = Digest { seen: vec![(2, Version::new(990, 0))], ..Digest::default() };
    assert!(!c.needs_full(&recent, 1_050));
}

#[test]
fn a_full_transfer_drops_entries_the_sender_saw_deleted_and_collected() {
    let cfg = StoreConfig { tombstone_grace_ms: 100, ..StoreConfig::default() };
    let mut a = Store::new(cfg.clone(), 1);
    let mut b = Store::new(cfg, 2);
    let w = b.write(Namespace::DNS, Bytes::from_static(b"x"), Bytes::from_static(b"1"), 0, 1_000).unwrap();
    a.apply(w.entry, 1_000).unwrap();
    b.write(Namespace::DNS, Bytes::from_static(b"keep"), Bytes::from_static(b"2"), 0, 1_001).unwrap();
    b.delete(Namespace::DNS, Bytes::from_static(b"x"), 1_002).unwrap();
    b.expire(5_000); // the tombstone is collected
    assert!(b.get(Namespace::DNS, b"x", 5_000).is_none());
    assert!(b.needs_full(&a.digest(0, 10), 5_000));
    let mut received = std::collections::BTreeSet::new();
    let mut after = None;
    loop {
        let c = b.full_chunk(after.as_ref(), 5_000, 1, 1_000, 100);
        for e in c.entries {
            received.insert((e.ns, e.key.clone()));
            let _ = a.apply(e, 5_000);
        }
        match c.next {
            Some(n) => after = Some(n),
            None => {
                a.finish_full(&received, &c.seen, &c.floors, c.complete, 5_000);
                break;
            }
        }
    }
    assert!(a.get(Namespace::DNS, b"x", 5_000).is_none());
    assert!(a.get(Namespace::DNS, b"keep", 5_000).is_some());
}

#[test]
fn an_entry_that_arrives_expired_is_stored_as_a_tombstone_and_never_served() {
    let mut s = Store::new(StoreConfig::default(), 1);
    let e = Entry {
        ns: Namespace::DNS,
        key: Bytes::from_static(b"k"),
        value: Bytes::from_static(b"v"),
        writer: 9,
        version: Version::new(1_000, 0),
        expires_ms: 1_500,
        deleted: false,
    };
    s.apply(e.clone(), 2_000).unwrap();
    assert!(s.get(Namespace::DNS, b"k", 2_000).is_none());
    assert!(s.entries().next().unwrap().deleted);
    // Its live form (same version) loses against the tombstone form.
    assert!(s.apply(e, 2_000).is_err());
}

#[test]
fn restore_moves_the_clock_past_loaded_versions() {
    let mut a = Store::new(StoreConfig::default(), 1);
    let w = a.write(Namespace::DNS, Bytes::from_static(b"k"), Bytes::from_static(b"v"), 0, 9_000).unwrap();
    let mut b = Store::new(StoreConfig::default(), 1);
    b.restore(a.entries().cloned(), 1_000);
    assert!(b.drain_changes().is_none());
    let w2 = b.write(Namespace::DNS, Bytes::from_static(b"k"), Bytes::from_static(b"w"), 0, 1_000).unwrap();
    assert!(w2.entry.version > w.entry.version);
    // Our own last writes may have been collected while we were down: the
    // first write after a restart claims no predecessor, the next one does.
    assert_eq!(w2.prev, Version(u64::MAX));
    let w3 = b.write(Namespace::DNS, Bytes::from_static(b"k"), Bytes::from_static(b"x"), 0, 1_000).unwrap();
    assert_eq!(w3.prev, w2.entry.version);
}

#[test]
fn a_stale_peer_cannot_bring_back_an_entry_whose_delete_was_collected() {
    let cfg = StoreConfig { tombstone_grace_ms: 100, ..StoreConfig::default() };
    let mut writer = Store::new(cfg.clone(), 1);
    let mut b = Store::new(cfg, 2);
    let w = writer.write(Namespace::DNS, Bytes::from_static(b"x"), Bytes::from_static(b"1"), 0, 1_000).unwrap();
    b.apply_delta(writer.delta_for(&b.digest(0, 10), 1_000, 10, 10_000), 1_000);
    b.delete(Namespace::DNS, Bytes::from_static(b"x"), 1_001).unwrap();
    b.expire(5_000);
    assert!(b.entries().next().is_none(), "the tombstone is collected");
    // A stale node offers the old write again, by delta or full transfer.
    assert_eq!(b.apply(w.entry, 5_000), Err(Refused::Stale));
    assert!(b.get(Namespace::DNS, b"x", 5_000).is_none());
}

#[test]
fn a_full_transfer_carries_collected_deletes_to_a_node_that_missed_them() {
    let cfg = StoreConfig { tombstone_grace_ms: 100, ..StoreConfig::default() };
    // `stale` holds a write of writer 1 that `fresh` saw deleted (by writer
    // 2, whose stream `stale` never followed) and collected long ago.
    let mut writer = Store::new(cfg.clone(), 1);
    let w = writer.write(Namespace::DNS, Bytes::from_static(b"x"), Bytes::from_static(b"1"), 0, 1_000).unwrap();
    let mut stale = Store::new(cfg.clone(), 3);
    stale.apply(w.entry.clone(), 1_000).unwrap();
    let mut fresh = Store::new(cfg, 2);
    fresh.apply(w.entry, 1_000).unwrap();
    fresh.delete(Namespace::DNS, Bytes::from_static(b"x"), 1_001).unwrap();
    fresh.expire(5_000);
    assert_eq!(fresh.graveyard_len(), 1);
    let mut received = std::collections::BTreeSet::new();
    let c = fresh.full_chunk(None, 5_000, 100, 10_000, 100);
    assert!(c.next.is_none());
    assert!(c.entries.iter().any(|e| &e.key[..] == b"x" && e.deleted));
    for e in c.entries {
        received.insert((e.ns, e.key.clone()));
        let _ = stale.apply(e, 5_000);
    }
    stale.finish_full(&received, &c.seen, &c.floors, c.complete, 5_000);
    assert!(stale.get(Namespace::DNS, b"x", 5_000).is_none());
    // And the old write is refused from now on.
    let again = Entry {
        ns: Namespace::DNS,
        key: Bytes::from_static(b"x"),
        value: Bytes::from_static(b"1"),
        writer: 1,
        version: Version::new(1_000, 0),
        expires_ms: 0,
        deleted: false,
    };
    assert_eq!(stale.apply(again, 5_000), Err(Refused::Stale));
}

// Issue #12 item 3: the tracker's soft state cannot crowd out DNS records.

fn capped() -> StoreConfig {
    use rumor_core::replica::NamespaceConfig;
    StoreConfig {
        entries_max: 100,
        namespaces: std::collections::BTreeMap::from([
            (Namespace::DNS, NamespaceConfig { entries_reserved: 40, ..NamespaceConfig::default() }),
            (
                Namespace::PROVIDERS,
                NamespaceConfig { entries_max: 30, lifetime_max_ms: Some(1_000), ..NamespaceConfig::default() },
            ),
        ]),
        ..StoreConfig::default()
    }
}

fn key(i: u32) -> Bytes {
    Bytes::from(i.to_be_bytes().to_vec())
}

fn remote(ns: Namespace, i: u32, writer: u64, wall: u64) -> Entry {
    Entry {
        ns,
        key: key(i),
        value: Bytes::from_static(b"v"),
        writer,
        version: Version::new(wall, 0),
        expires_ms: 0,
        deleted: false,
    }
}

#[test]
fn providers_stop_at_their_cap_whether_written_here_or_arriving_by_gossip() {
    let mut s = Store::new(capped(), 1);
    let now = 10_000;
    for i in 0..20 {
        s.write(Namespace::PROVIDERS, key(i), Bytes::new(), now + 500, now).unwrap();
    }
    for i in 20..30 {
        s.apply(remote(Namespace::PROVIDERS, i, 7, now), now).unwrap();
    }
    assert_eq!(s.write(Namespace::PROVIDERS, key(99), Bytes::new(), now + 500, now), Err(Refused::Full));
    assert_eq!(s.apply(remote(Namespace::PROVIDERS, 98, 7, now), now), Err(Refused::Full));
    assert_eq!(s.len_of(Namespace::PROVIDERS), 30);
    // Refreshing a provider already held is not a new key.
    s.write(Namespace::PROVIDERS, key(3), Bytes::new(), now + 900, now).unwrap();
    // DNS has the rest of the store.
    for i in 0..70 {
        s.write(Namespace::DNS, key(i), Bytes::from_static(b"r"), 0, now).unwrap();
    }
    assert_eq!(s.write(Namespace::DNS, key(70), Bytes::from_static(b"r"), 0, now), Err(Refused::Full));
}

#[test]
fn no_other_namespace_can_take_the_room_kept_for_dns() {
    let mut s = Store::new(capped(), 1);
    let now = 10_000;
    let other = Namespace(7);
    let mut taken = 0;
    for i in 0..200 {
        if s.apply(remote(other, i, 7, now), now).is_ok() {
            taken += 1;
        }
    }
    assert_eq!(taken, 60, "all but DNS's 40");
    for i in 0..40 {
        s.write(Namespace::DNS, key(i), Bytes::from_static(b"r"), 0, now).unwrap();
    }
}

#[test]
fn a_provider_lives_at_most_the_namespaces_lifetime_however_it_was_written() {
    let mut s = Store::new(capped(), 1);
    let w = s.write(Namespace::PROVIDERS, key(1), Bytes::new(), 0, 10_000).unwrap();
    assert_eq!(w.entry.expires_ms, w.entry.version.wall_ms() + 1_000);
    let mut far = remote(Namespace::PROVIDERS, 2, 7, 10_000);
    far.expires_ms = u64::MAX;
    s.apply(far, 10_000).unwrap();
    assert_eq!(s.get(Namespace::PROVIDERS, &key(2), 10_000).unwrap().expires_ms, 11_000);
    assert!(s.get(Namespace::PROVIDERS, &key(2), 11_000).is_none());
    // DNS entries keep whatever expiry they were given.
    let w = s.write(Namespace::DNS, key(1), Bytes::from_static(b"r"), 0, 10_000).unwrap();
    assert_eq!(w.entry.expires_ms, 0);
}

#[test]
fn a_providers_tombstone_is_collected_after_its_lifetime_not_the_dns_grace() {
    let cfg = StoreConfig { tombstone_grace_ms: 24 * 3600 * 1000, ..capped() };
    let mut writer = Store::new(cfg.clone(), 1);
    let mut b = Store::new(cfg, 2);
    let w = writer.write(Namespace::PROVIDERS, key(1), Bytes::new(), 10_900, 10_000).unwrap();
    let stale_copy = w.entry.clone();
    b.apply(w.entry, 10_000).unwrap();
    b.delete(Namespace::PROVIDERS, key(1), 10_100).unwrap();
    b.expire(11_099);
    assert_eq!(b.len_of(Namespace::PROVIDERS), 1, "kept through the lifetime");
    b.expire(11_100);
    assert_eq!(b.len_of(Namespace::PROVIDERS), 0, "collected a lifetime after the delete");
    // Not remembered, and no reason for a full transfer: any copy a peer
    // still holds has expired, and is never served if offered again.
    assert_eq!(b.graveyard_len(), 0);
    assert!(!b.needs_full(&Digest::default(), 11_100));
    let _ = b.apply(stale_copy.clone(), 11_100);
    assert!(b.get(Namespace::PROVIDERS, &key(1), 11_100).is_none());
    b.expire(12_000);
    assert_eq!(b.len_of(Namespace::PROVIDERS), 0);
    assert_eq!(b.apply(stale_copy, 12_000), Err(Refused::Stale), "past a lifetime it is refused outright");
    // A DNS tombstone still waits out the full grace.
    b.write(Namespace::DNS, key(1), Bytes::from_static(b"r"), 0, 11_200).unwrap();
    b.delete(Namespace::DNS, key(1), 11_300).unwrap();
    b.expire(11_300 + 3_600_000);
    assert_eq!(b.len_of(Namespace::DNS), 1);
}
