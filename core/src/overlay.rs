//! The overlay: which peers provide which torrent, kept in the replicated
//! store's `PROVIDERS` namespace so every node can answer for every
//! torrent, and a node-local index over it for lookups.
//!
//! - **announce**: a provider's entry is written (or refreshed) with an
//!   absolute expiry; unless it is announced again it expires everywhere.
//! - **merge**: the gossip machine merges entries like any other; the
//!   [`Overlay`] index follows the store's change feed.
//! - **lookup**: the freshest providers of an infohash, bounded.
//!
//! - **tracker**: the [`tracker`] machine answers BitTorrent announces and
//!   scrapes from this index and turns them into provider writes.
//!
//! Key: infohash (20 bytes), then the provider's endpoint (16-byte IPv6 or
//! IPv4-mapped address, 2-byte port): one entry per provider per torrent.
//! Value: a versioned postcard [`Provider`].

use crate::bt::metainfo::InfoHash;
use crate::replica::{Change, Entry, Namespace};
use crate::time::UnixMillis;
use core::net::{IpAddr, Ipv6Addr, SocketAddr};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

pub mod tracker;

/// Most providers indexed per torrent; the stalest go first past it.
pub const PROVIDERS_PER_TORRENT_MAX: usize = 4096;
/// Most providers a lookup returns.
pub const LOOKUP_MAX: usize = 200;
const VALUE_VERSION: u8 = 1;

/// One peer that has (part of) a torrent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provider {
    /// Where to connect.
    pub addr: SocketAddr,
    /// Its peer id, if it told us.
    pub peer_id: Option<[u8; 20]>,
    /// True if it has the whole torrent.
    pub seeder: bool,
    /// When it last announced (Unix ms).
    pub announced_ms: UnixMillis,
    /// When it stops counting unless it announces again (Unix ms).
    pub expires_ms: UnixMillis,
}

#[derive(Serialize, Deserialize)]
struct StoredProvider {
    version: u8,
    provider: Provider,
}

/// The replicated key of a provider of `ih`.
pub fn provider_key(ih: &InfoHash, addr: SocketAddr) -> Vec<u8> {
    let mut k = Vec::with_capacity(38);
    k.extend_from_slice(&ih.0);
    let v6 = match addr.ip() {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    };
    k.extend_from_slice(&v6.octets());
    k.extend_from_slice(&addr.port().to_be_bytes());
    k
}

/// Marks a "completed" record: the provider finished downloading `ih`
/// once (scrape's `downloaded`). Key: infohash, this marker, endpoint.
const SNATCH_MARKER: &[u8; 4] = b"done";

/// The replicated key recording that the peer at `addr` completed `ih`.
pub fn snatch_key(ih: &InfoHash, addr: SocketAddr) -> Vec<u8> {
    let mut k = provider_key(ih, addr);
    k.splice(20..20, SNATCH_MARKER.iter().copied());
    k
}

fn parse_snatch_key(key: &[u8]) -> Option<(InfoHash, SocketAddr)> {
    if key.len() != 42 || &key[20..24] != SNATCH_MARKER {
        return None;
    }
    let mut k = key.to_vec();
    k.drain(20..24);
    parse_key(&k)
}

/// The torrent and endpoint a provider key names, if it is one.
pub(crate) fn parse_key(key: &[u8]) -> Option<(InfoHash, SocketAddr)> {
    if key.len() != 38 {
        return None;
    }
    let ih = InfoHash(key[..20].try_into().ok()?);
    let v6 = Ipv6Addr::from(<[u8; 16]>::try_from(&key[20..36]).ok()?);
    let ip = v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4);
    Some((ih, SocketAddr::new(ip, u16::from_be_bytes([key[36], key[37]]))))
}

/// The value bytes of a provider entry.
pub fn provider_value(p: &Provider) -> Vec<u8> {
    postcard::to_stdvec(&StoredProvider { version: VALUE_VERSION, provider: *p }).expect("a Vec cannot fail")
}

/// Reads a provider entry, checking that value and key agree; `None` for
/// anything malformed (a peer must not plant a provider under another key).
pub fn provider_of(e: &Entry) -> Option<(InfoHash, Provider)> {
    if e.ns != Namespace::PROVIDERS || e.deleted {
        return None;
    }
    let (ih, addr) = parse_key(&e.key)?;
    let stored: StoredProvider = postcard::from_bytes(&e.value).ok()?;
    if stored.version != VALUE_VERSION || stored.provider.addr != addr {
        return None;
    }
    let mut p = stored.provider;
    if e.expires_ms != 0 {
        p.expires_ms = e.expires_ms;
    }
    Some((ih, p))
}

/// Swarm counts of one torrent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Providers with the whole torrent.
    pub seeders: u32,
    /// Providers still downloading.
    pub leechers: u32,
}

/// The group an address's announces count in: an IPv4 address itself; an
/// IPv6 address by its /64, which one subscriber usually holds whole (so a
/// host cannot pass a per-address bound by changing its interface id).
pub fn address_group(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(a) & !((1u128 << 64) - 1))),
        },
    }
}

/// The node's index of providers by torrent, kept from the change feed.
#[derive(Debug, Default)]
pub struct Overlay {
    torrents: HashMap<InfoHash, BTreeMap<SocketAddr, Provider>>,
    snatches: HashMap<InfoHash, std::collections::BTreeSet<SocketAddr>>,
    /// Providers indexed per [`address_group`]; an entry per group with at
    /// least one, so at most as many as providers.
    by_group: HashMap<IpAddr, usize>,
    /// Providers indexed, all torrents together.
    providers: usize,
    /// Entries that could not be read.
    pub rejected: u64,
}

impl Overlay {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds the index from every live entry of a store (after a restore).
    pub fn from_entries<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> Self {
        let mut o = Overlay::new();
        for e in entries {
            o.follow_entry(e);
        }
        o
    }

    /// Follows one change of the replicated store; other namespaces are
    /// ignored.
    pub fn follow(&mut self, change: &Change) {
        match change {
            Change::Applied(e) => self.follow_entry(e),
            Change::Removed { ns, key } if *ns == Namespace::PROVIDERS => {
                if let Some((ih, addr)) = parse_key(key) {
                    self.remove(&ih, addr);
                } else if let Some((ih, addr)) = parse_snatch_key(key) {
                    self.unsnatch(&ih, addr);
                }
            }
            Change::Removed { .. } => {}
        }
    }

    fn follow_entry(&mut self, e: &Entry) {
        if e.ns != Namespace::PROVIDERS {
            return;
        }
        if let Some((ih, addr)) = parse_snatch_key(&e.key) {
            if e.deleted {
                self.unsnatch(&ih, addr);
            } else {
                self.snatch(ih, addr);
            }
            return;
        }
        if e.deleted {
            if let Some((ih, addr)) = parse_key(&e.key) {
                self.remove(&ih, addr);
            }
            return;
        }
        match provider_of(e) {
            Some((ih, p)) => self.insert(ih, p),
            None => self.rejected += 1,
        }
    }

    /// Indexes `p` as a provider of `ih` (the tracker does this for its own
    /// writes at once, before the store's change feed confirms them).
    pub(crate) fn insert(&mut self, ih: InfoHash, p: Provider) {
        let set = self.torrents.entry(ih).or_default();
        if set.insert(p.addr, p).is_none() {
            self.providers += 1;
            *self.by_group.entry(address_group(p.addr.ip())).or_default() += 1;
        }
        if set.len() > PROVIDERS_PER_TORRENT_MAX {
            let stalest = set.values().min_by_key(|p| p.announced_ms).map(|p| p.addr);
            if let Some(a) = stalest {
                set.remove(&a);
                self.uncount(a);
            }
        }
    }

    fn uncount(&mut self, addr: SocketAddr) {
        self.providers -= 1;
        let g = address_group(addr.ip());
        if let Some(n) = self.by_group.get_mut(&g) {
            *n -= 1;
            if *n == 0 {
                self.by_group.remove(&g);
            }
        }
    }

    /// True if `addr` is indexed as a provider of `ih` (expired or not).
    pub fn has(&self, ih: &InfoHash, addr: SocketAddr) -> bool {
        self.torrents.get(ih).is_some_and(|s| s.contains_key(&addr))
    }

    /// Providers indexed, all torrents together (expired ones until the
    /// next sweep).
    pub fn providers(&self) -> usize {
        self.providers
    }

    /// Providers indexed of `ih`.
    pub fn providers_of(&self, ih: &InfoHash) -> usize {
        self.torrents.get(ih).map_or(0, BTreeMap::len)
    }

    /// Providers indexed whose address is in `ip`'s [`address_group`], all
    /// torrents together.
    pub fn providers_from(&self, ip: IpAddr) -> usize {
        self.by_group.get(&address_group(ip)).copied().unwrap_or(0)
    }

    /// True if the peer at `addr` is recorded as having completed `ih`.
    pub fn snatched(&self, ih: &InfoHash, addr: SocketAddr) -> bool {
        self.snatches.get(ih).is_some_and(|s| s.contains(&addr))
    }

    /// Records that the peer at `addr` completed `ih`.
    pub(crate) fn snatch(&mut self, ih: InfoHash, addr: SocketAddr) {
        let set = self.snatches.entry(ih).or_default();
        if set.len() < PROVIDERS_PER_TORRENT_MAX * 4 {
            set.insert(addr);
        }
    }

    fn unsnatch(&mut self, ih: &InfoHash, addr: SocketAddr) {
        if let Some(set) = self.snatches.get_mut(ih) {
            set.remove(&addr);
            if set.is_empty() {
                self.snatches.remove(ih);
            }
        }
    }

    /// Forgets the provider at `addr` of `ih`.
    pub(crate) fn remove(&mut self, ih: &InfoHash, addr: SocketAddr) {
        if let Some(set) = self.torrents.get_mut(ih) {
            let removed = set.remove(&addr).is_some();
            if set.is_empty() {
                self.torrents.remove(ih);
            }
            if removed {
                self.uncount(addr);
            }
        }
    }

    /// Up to `max` (at most [`LOOKUP_MAX`]) unexpired providers of `ih`,
    /// freshest first, leaving out `except` (the asker).
    pub fn lookup(&self, ih: &InfoHash, now_ms: UnixMillis, max: usize, except: Option<SocketAddr>) -> Vec<Provider> {
        let Some(set) = self.torrents.get(ih) else {
            return Vec::new();
        };
        let mut live: Vec<Provider> =
            set.values().filter(|p| p.expires_ms > now_ms && Some(p.addr) != except).copied().collect();
        live.sort_by(|a, b| b.announced_ms.cmp(&a.announced_ms).then(a.addr.cmp(&b.addr)));
        live.truncate(max.min(LOOKUP_MAX));
        live
    }

    /// Peers that ever completed `ih` (while their record lives).
    pub fn downloaded(&self, ih: &InfoHash) -> u32 {
        self.snatches.get(ih).map_or(0, |s| s.len() as u32)
    }

    /// Seeders and leechers of `ih` now.
    pub fn counts(&self, ih: &InfoHash, now_ms: UnixMillis) -> Counts {
        let mut c = Counts::default();
        for p in self.torrents.get(ih).into_iter().flat_map(|s| s.values()).filter(|p| p.expires_ms > now_ms) {
            if p.seeder {
                c.seeders += 1;
            } else {
                c.leechers += 1;
            }
        }
        c
    }

    /// Torrents with at least one provider indexed.
    pub fn torrents(&self) -> usize {
        self.torrents.len()
    }

    /// Drops expired providers from the index (the store expires the
    /// entries themselves).
    pub fn expire(&mut self, now_ms: UnixMillis) {
        let mut gone = Vec::new();
        self.torrents.retain(|_, set| {
            set.retain(|_, p| {
                let keep = p.expires_ms > now_ms;
                if !keep {
                    gone.push(p.addr);
                }
                keep
            });
            !set.is_empty()
        });
        for a in gone {
            self.uncount(a);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn entry(ih: InfoHash, p: &Provider, writer: u64) -> Entry {
        Entry {
            ns: Namespace::PROVIDERS,
            key: Bytes::from(provider_key(&ih, p.addr)),
            value: Bytes::from(provider_value(p)),
            writer,
            version: crate::replica::Version::new(p.announced_ms, 0),
            expires_ms: p.expires_ms,
            deleted: false,
        }
    }

    fn provider(port: u16, announced_ms: u64, seeder: bool) -> Provider {
        Provider {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            peer_id: None,
            seeder,
            announced_ms,
            expires_ms: announced_ms + 60_000,
        }
    }

    #[test]
    fn lookups_give_the_freshest_unexpired_providers_but_not_the_asker() {
        let ih = InfoHash([7; 20]);
        let mut o = Overlay::new();
        for (port, at) in [(1, 1_000), (2, 5_000), (3, 3_000)] {
            o.follow(&Change::Applied(entry(ih, &provider(port, at, port == 2), 1)));
        }
        let got: Vec<u16> = o.lookup(&ih, 10_000, 10, None).iter().map(|p| p.addr.port()).collect();
        assert_eq!(got, vec![2, 3, 1]);
        let got: Vec<u16> = o
            .lookup(&ih, 10_000, 10, Some(SocketAddr::from(([127, 0, 0, 1], 2))))
            .iter()
            .map(|p| p.addr.port())
            .collect();
        assert_eq!(got, vec![3, 1]);
        assert_eq!(o.lookup(&ih, 10_000, 1, None).len(), 1);
        assert_eq!(o.counts(&ih, 10_000), Counts { seeders: 1, leechers: 2 });
        // Past the first one's expiry it is gone.
        assert_eq!(o.lookup(&ih, 61_000, 10, None).len(), 2);
    }

    #[test]
    fn tombstones_remove_providers_and_mismatched_values_are_rejected() {
        let ih = InfoHash([1; 20]);
        let mut o = Overlay::new();
        let p = provider(9, 1_000, false);
        let mut e = entry(ih, &p, 1);
        o.follow(&Change::Applied(e.clone()));
        assert_eq!(o.torrents(), 1);
        e.deleted = true;
        o.follow(&Change::Applied(e));
        assert_eq!(o.torrents(), 0);
        // A value that claims another endpoint than its key.
        let mut forged = entry(ih, &p, 1);
        forged.value = Bytes::from(provider_value(&provider(10, 1_000, false)));
        o.follow(&Change::Applied(forged));
        assert_eq!(o.torrents(), 0);
        assert_eq!(o.rejected, 1);
    }

    #[test]
    fn keys_round_trip_for_both_address_families() {
        let ih = InfoHash([3; 20]);
        for addr in ["10.1.2.3:6881", "[2001:db8::1]:51413"] {
            let a: SocketAddr = addr.parse().unwrap();
            assert_eq!(parse_key(&provider_key(&ih, a)), Some((ih, a)));
        }
    }
}
