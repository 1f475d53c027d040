//! The node's view of the records it serves: RRsets keyed by lower-case
//! owner name and type, each with an absolute expiry in wall-clock
//! milliseconds. Lookups never return an expired RRset, whether or not
//! [`RecordStore::expire`] has run yet.
//!
//! This is a materialised index: today the HTTP API writes it directly; the
//! replicated store feeds it through its change events, so the authority
//! reads one shape whatever the source.

use super::message::{RData, RType};
use super::name::Name;
use crate::time::UnixMillis;
use std::collections::{BTreeSet, HashMap};

/// Most records in one RRset; a larger set is refused at the API.
pub const RRSET_RECORDS_MAX: usize = 256;

/// All records of one type at one name, sharing a TTL and an expiry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RRset {
    /// Owner name as the writer spelled it.
    pub owner: Name,
    /// The type of every record in `data`.
    pub rtype: RType,
    /// The TTL the writer gave, seconds.
    pub ttl: u32,
    /// When the set stops existing (Unix ms).
    pub expires_at_ms: UnixMillis,
    /// The records (never empty).
    pub data: Vec<RData>,
}

impl RRset {
    /// True once `now_ms` has reached the expiry.
    pub fn is_expired(&self, now_ms: UnixMillis) -> bool {
        now_ms >= self.expires_at_ms
    }

    /// The TTL to hand out at `now_ms`: the time left, rounded up, never
    /// more than the TTL the writer gave.
    pub fn remaining_ttl(&self, now_ms: UnixMillis) -> u32 {
        let left_ms = self.expires_at_ms.saturating_sub(now_ms);
        let left_s = left_ms.div_ceil(1000);
        left_s.min(self.ttl as u64) as u32
    }
}

/// Why stored RRset bytes could not be read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RRsetDecodeError(pub String);

impl core::fmt::Display for RRsetDecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "bad stored RRset: {}", self.0)
    }
}

impl std::error::Error for RRsetDecodeError {}

/// The stored form: versioned, names and rdata in uncompressed wire form.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredRRset<'a> {
    version: u8,
    #[serde(borrow)]
    owner: &'a [u8],
    rtype: u16,
    ttl: u32,
    expires_at_ms: u64,
    #[serde(borrow)]
    data: Vec<&'a [u8]>,
}

const STORED_RRSET_VERSION: u8 = 1;

impl RRset {
    /// The bytes to persist or replicate this RRset as.
    pub fn to_bytes(&self) -> Vec<u8> {
        let data: Vec<Vec<u8>> = self.data.iter().map(super::wire::encode_rdata).collect();
        let stored = StoredRRset {
            version: STORED_RRSET_VERSION,
            owner: self.owner.as_wire(),
            rtype: self.rtype.0,
            ttl: self.ttl,
            expires_at_ms: self.expires_at_ms,
            data: data.iter().map(Vec::as_slice).collect(),
        };
        postcard::to_stdvec(&stored).expect("serialising to a Vec cannot fail")
    }

    /// Reads bytes made by [`RRset::to_bytes`]; hostile bytes give an
    /// error, never a panic or an invalid RRset.
    pub fn from_bytes(bytes: &[u8]) -> Result<RRset, RRsetDecodeError> {
        let err = |m: String| RRsetDecodeError(m);
        let stored: StoredRRset = postcard::from_bytes(bytes).map_err(|e| err(e.to_string()))?;
        if stored.version != STORED_RRSET_VERSION {
            return Err(err(format!("unknown version {}", stored.version)));
        }
        if stored.data.is_empty() || stored.data.len() > RRSET_RECORDS_MAX {
            return Err(err(format!("{} records", stored.data.len())));
        }
        let owner = Name::from_wire(stored.owner).map_err(|e| err(e.to_string()))?;
        let rtype = RType(stored.rtype);
        let data = stored
            .data
            .iter()
            .map(|d| super::wire::decode_rdata(rtype, d).map_err(|e| err(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RRset { owner, rtype, ttl: stored.ttl, expires_at_ms: stored.expires_at_ms, data })
    }
}

/// What a write to the store did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    /// The RRset is new.
    Inserted,
    /// An RRset of that name and type was replaced.
    Replaced,
}

/// The RRsets of one name; the first is kept inline in the map's bucket.
type RRsets = smallvec::SmallVec<[RRset; 1]>;

/// RRsets by name and type, with an expiry index.
#[derive(Default, Debug)]
pub struct RecordStore {
    /// foldhash: several times cheaper than SipHash on short keys, and
    /// seeded per process, so stored names cannot be chosen to collide.
    names: HashMap<Name, RRsets, foldhash::fast::RandomState>,
    /// Canonical keys of every owner name, to tell an empty non-terminal
    /// (a name with nothing but descendants) from a missing name.
    tree: BTreeSet<Vec<u8>>,
    /// How many owner names lie strictly below each name: a name absent
    /// here has no descendants, so a miss is NXDOMAIN without a tree scan.
    below: HashMap<Name, u32, foldhash::fast::RandomState>,
    expiry: BTreeSet<(UnixMillis, Name, RType)>,
    rrsets: usize,
    generation: u32,
}

impl RecordStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of RRsets held, expired or not.
    pub fn rrset_count(&self) -> usize {
        self.rrsets
    }

    /// Number of owner names held.
    pub fn name_count(&self) -> usize {
        self.names.len()
    }

    /// A counter bumped by every change; serves as the SOA serial.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// Inserts or replaces the RRset of `rrset.owner` and `rrset.rtype`.
    pub fn put(&mut self, rrset: RRset) -> PutOutcome {
        assert!(!rrset.data.is_empty(), "an RRset holds at least one record");
        assert!(rrset.data.iter().all(|d| d.rtype() == rrset.rtype), "every record of an RRset has its type");
        self.generation = self.generation.wrapping_add(1);
        let key = rrset.owner.to_lowercase();
        self.expiry.insert((rrset.expires_at_ms, key.clone(), rrset.rtype));
        let sets = self.names.entry(key.clone()).or_default();
        if sets.is_empty() {
            self.tree.insert(key.canonical_key());
            count_ancestors(&mut self.below, &key, true);
        }
        if let Some(old) = sets.iter_mut().find(|s| s.rtype == rrset.rtype) {
            let old_expiry = old.expires_at_ms;
            let rtype = old.rtype;
            *old = rrset;
            if old_expiry != old.expires_at_ms {
                self.expiry.remove(&(old_expiry, key, rtype));
            }
            PutOutcome::Replaced
        } else {
            sets.push(rrset);
            self.rrsets += 1;
            PutOutcome::Inserted
        }
    }

    /// Removes one RRset; true if it was there.
    pub fn remove_rrset(&mut self, name: &Name, rtype: RType) -> bool {
        let key = name.to_lowercase();
        let Some(sets) = self.names.get_mut(&key) else {
            return false;
        };
        let Some(i) = sets.iter().position(|s| s.rtype == rtype) else {
            return false;
        };
        let old = sets.swap_remove(i);
        self.expiry.remove(&(old.expires_at_ms, key.clone(), rtype));
        self.rrsets -= 1;
        self.generation = self.generation.wrapping_add(1);
        if sets.is_empty() {
            self.names.remove(&key);
            self.tree.remove(&key.canonical_key());
            count_ancestors(&mut self.below, &key, false);
        }
        true
    }

    /// Removes every RRset of a name; returns how many there were.
    pub fn remove_name(&mut self, name: &Name) -> usize {
        let key = name.to_lowercase();
        let Some(sets) = self.names.remove(&key) else {
            return 0;
        };
        self.tree.remove(&key.canonical_key());
        count_ancestors(&mut self.below, &key, false);
        for s in &sets {
            self.expiry.remove(&(s.expires_at_ms, key.clone(), s.rtype));
        }
        self.rrsets -= sets.len();
        self.generation = self.generation.wrapping_add(1);
        sets.len()
    }

    /// The live RRset of `name` (any case) and `rtype`.
    pub fn get(&self, name: &Name, rtype: RType, now_ms: UnixMillis) -> Option<&RRset> {
        self.get_lower(lower(name).as_ref().unwrap_or(name), rtype, now_ms)
    }

    fn get_lower(&self, key: &Name, rtype: RType, now_ms: UnixMillis) -> Option<&RRset> {
        self.get_by_key(key.as_wire(), rtype, now_ms)
    }

    /// The live RRset of `rtype` at the name whose *lower-case* wire form
    /// is `key`; the allocation-free lookup of the query path.
    pub fn get_by_key(&self, key: &[u8], rtype: RType, now_ms: UnixMillis) -> Option<&RRset> {
        self.names.get(key)?.iter().find(|s| s.rtype == rtype && !s.is_expired(now_ms))
    }

    /// True if the name whose lower-case wire form is `key` owns a live
    /// RRset or is an empty non-terminal above one.
    pub fn exists_by_key(&self, key: &[u8], now_ms: UnixMillis) -> bool {
        if self.names.get(key).is_some_and(|sets| sets.iter().any(|s| !s.is_expired(now_ms))) {
            return true;
        }
        if !self.below.contains_key(key) {
            return false;
        }
        self.has_live_descendant(&super::name::canonical_key_of_wire(key), now_ms)
    }

    /// Every live RRset at `name`.
    pub fn rrsets_at(&self, name: &Name, now_ms: UnixMillis) -> impl Iterator<Item = &RRset> {
        let key = lower(name);
        self.names.get(key.as_ref().unwrap_or(name)).into_iter().flatten().filter(move |s| !s.is_expired(now_ms))
    }

    /// True if `name` owns a live RRset, or is an ancestor of a name that
    /// does (an empty non-terminal, RFC 8020: NODATA, not NXDOMAIN).
    pub fn name_exists(&self, name: &Name, now_ms: UnixMillis) -> bool {
        if self.rrsets_at(name, now_ms).next().is_some() {
            return true;
        }
        if !self.below.contains_key(lower(name).as_ref().unwrap_or(name)) {
            return false;
        }
        self.has_live_descendant(&name.canonical_key(), now_ms)
    }

    fn has_live_descendant(&self, prefix: &[u8], now_ms: UnixMillis) -> bool {
        for key in self.tree.range(prefix.to_vec()..) {
            if !key.starts_with(prefix) {
                break;
            }
            if key.len() == prefix.len() {
                continue;
            }
            let owner = name_from_canonical_key(key);
            if self.rrsets_at(&owner, now_ms).next().is_some() {
                return true;
            }
        }
        false
    }

    /// Every live RRset, in name order then type order.
    pub fn live(&self, now_ms: UnixMillis) -> Vec<&RRset> {
        let mut out: Vec<&RRset> = self.names.values().flatten().filter(|s| !s.is_expired(now_ms)).collect();
        out.sort_by(|a, b| a.owner.canonical_key().cmp(&b.owner.canonical_key()).then(a.rtype.cmp(&b.rtype)));
        out
    }

    /// Drops every RRset expired at `now_ms`; returns (name, type) of each.
    pub fn expire(&mut self, now_ms: UnixMillis) -> Vec<(Name, RType)> {
        let mut gone = Vec::new();
        while let Some(first) = self.expiry.first() {
            if first.0 > now_ms {
                break;
            }
            let (at, name, rtype) = self.expiry.pop_first().expect("first exists");
            let still_due = self
                .names
                .get(&name)
                .and_then(|sets| sets.iter().find(|s| s.rtype == rtype))
                .is_some_and(|s| s.expires_at_ms == at);
            if still_due {
                self.expiry.insert((at, name.clone(), rtype));
                self.remove_rrset(&name, rtype);
                gone.push((name, rtype));
            }
        }
        gone
    }

    /// The earliest expiry still pending, to schedule the next sweep.
    pub fn next_expiry(&self) -> Option<UnixMillis> {
        self.expiry.first().map(|e| e.0)
    }
}

/// Adds or removes one from the descendant count of every ancestor of `key`.
fn count_ancestors(below: &mut HashMap<Name, u32, foldhash::fast::RandomState>, key: &Name, add: bool) {
    let mut cur = key.parent();
    while let Some(anc) = cur {
        cur = anc.parent();
        if add {
            *below.entry(anc).or_default() += 1;
        } else if let Some(n) = below.get_mut(&anc) {
            *n -= 1;
            if *n == 0 {
                below.remove(&anc);
            }
        }
    }
}

/// `Some(lowercased)` when the name has upper-case letters, so the common
/// all-lower-case lookup does not allocate.
fn lower(name: &Name) -> Option<Name> {
    (!name.is_lowercase()).then(|| name.to_lowercase())
}

fn name_from_canonical_key(key: &[u8]) -> Name {
    let mut labels: Vec<&[u8]> = key.split(|b| *b == 0).filter(|l| !l.is_empty()).collect();
    labels.reverse();
    let mut wire = super::name::NameBytes::with_capacity(key.len() + 1);
    for l in labels {
        wire.push(l.len() as u8);
        wire.extend_from_slice(l);
    }
    wire.push(0);
    Name::from_wire_unchecked(wire)
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::Ipv4Addr;

    fn a(name: &str, ip: u8, expires_at_ms: u64) -> RRset {
        RRset {
            owner: Name::from_ascii(name).unwrap(),
            rtype: RType::A,
            ttl: 60,
            expires_at_ms,
            data: vec![RData::A(Ipv4Addr::new(10, 0, 0, ip))],
        }
    }

    #[test]
    fn lookups_ignore_case_and_hide_expired_sets() {
        let mut s = RecordStore::new();
        s.put(a("Free.Local", 1, 10_000));
        let q = Name::from_ascii("FREE.local").unwrap();
        assert!(s.get(&q, RType::A, 9_999).is_some());
        assert!(s.get(&q, RType::A, 10_000).is_none());
        assert!(!s.name_exists(&q, 10_000));
    }

    #[test]
    fn remaining_ttl_rounds_up_and_never_exceeds_the_given_ttl() {
        let set = a("x", 1, 60_000);
        assert_eq!(set.remaining_ttl(0), 60);
        assert_eq!(set.remaining_ttl(500), 60);
        assert_eq!(set.remaining_ttl(1_000), 59);
        assert_eq!(set.remaining_ttl(59_999), 1);
        let long = RRset { expires_at_ms: 1_000_000, ..set };
        assert_eq!(long.remaining_ttl(0), 60);
    }

    #[test]
    fn empty_non_terminals_exist_while_a_descendant_lives() {
        let mut s = RecordStore::new();
        s.put(a("a.b.local", 1, 5_000));
        let ent = Name::from_ascii("b.local").unwrap();
        assert!(s.name_exists(&ent, 0));
        assert!(!s.name_exists(&Name::from_ascii("c.local").unwrap(), 0));
        assert!(!s.name_exists(&ent, 5_000));
    }

    #[test]
    fn expire_removes_due_sets_and_ignores_replaced_expiries() {
        let mut s = RecordStore::new();
        s.put(a("x", 1, 1_000));
        s.put(a("x", 2, 9_000)); // replaced with a later expiry
        s.put(a("y", 1, 2_000));
        assert_eq!(s.expire(5_000).len(), 1);
        assert_eq!(s.rrset_count(), 1);
        assert_eq!(s.next_expiry(), Some(9_000));
        assert_eq!(s.expire(9_000).len(), 1);
        assert_eq!(s.rrset_count(), 0);
        assert_eq!(s.next_expiry(), None);
    }

    #[test]
    fn stored_bytes_read_back_the_same_and_garbage_is_refused() {
        let set = RRset {
            data: vec![
                RData::Mx { preference: 5, exchange: Name::from_ascii("mail.x").unwrap() },
                RData::Mx { preference: 10, exchange: Name::from_ascii("mx2.x").unwrap() },
            ],
            rtype: RType::MX,
            ..a("x", 1, 77)
        };
        assert_eq!(RRset::from_bytes(&set.to_bytes()).unwrap(), set);
        assert!(RRset::from_bytes(b"\x01garbage").is_err());
        assert!(RRset::from_bytes(&[]).is_err());
    }

    #[test]
    fn remove_name_drops_all_its_types() {
        let mut s = RecordStore::new();
        s.put(a("x", 1, 1_000));
        s.put(RRset { rtype: RType::TXT, data: vec![RData::Txt(vec![b"hi".to_vec()])], ..a("x", 1, 1_000) });
        assert_eq!(s.remove_name(&Name::from_ascii("X").unwrap()), 2);
        assert_eq!(s.rrset_count(), 0);
        assert_eq!(s.next_expiry(), None);
    }
}
