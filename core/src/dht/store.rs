//! The peers other nodes announced to us (`announce_peer`), per infohash,
//! each kept for [`StoreLimits::ttl`] after its last announce.
//!
//! Bounded three ways, so announces for random infohashes cannot grow it:
//! peers per infohash (a full one drops its oldest announce for a new
//! one), infohashes, and peers in all. When the last two are full, a new
//! infohash or peer is refused until something expires.

use core::net::SocketAddr;
use std::collections::BTreeMap;

use crate::bt::metainfo::InfoHash;
use crate::rand::Rng;
use crate::time::{Duration, Instant};

/// The store's limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreLimits {
    /// Peers kept per infohash (default 512).
    pub peers_per_infohash_max: usize,
    /// Infohashes kept (default 4,096).
    pub infohashes_max: usize,
    /// Peers kept over all infohashes (default 65,536: a few MiB).
    pub peers_total_max: usize,
    /// How long an announce is kept (BEP 5 convention: 30 minutes).
    pub ttl: Duration,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            peers_per_infohash_max: 512,
            infohashes_max: 4096,
            peers_total_max: 65_536,
            ttl: Duration::from_secs(30 * 60),
        }
    }
}

/// Why an announce was not stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// [`StoreLimits::infohashes_max`] infohashes are held already.
    TooManyInfohashes,
    /// [`StoreLimits::peers_total_max`] peers are held already.
    TooManyPeers,
}

/// Announced peers, per infohash.
#[derive(Clone, Debug)]
pub struct PeerStore {
    limits: StoreLimits,
    /// infohash -> peer -> when the announce expires.
    map: BTreeMap<InfoHash, BTreeMap<SocketAddr, Instant>>,
    total: usize,
}

impl PeerStore {
    /// An empty store.
    pub fn new(limits: StoreLimits) -> PeerStore {
        PeerStore { limits, map: BTreeMap::new(), total: 0 }
    }

    /// Peers held, over all infohashes.
    pub fn len(&self) -> usize {
        self.total
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Infohashes held.
    pub fn infohash_count(&self) -> usize {
        self.map.len()
    }

    /// Records that `peer` has `ih` until `now + ttl`.
    pub fn announce(&mut self, ih: InfoHash, peer: SocketAddr, now: Instant) -> Result<(), Refused> {
        let expires = now + self.limits.ttl;
        if !self.map.contains_key(&ih) && self.map.len() >= self.limits.infohashes_max {
            return Err(Refused::TooManyInfohashes);
        }
        let total_full = self.total >= self.limits.peers_total_max;
        let per_max = self.limits.peers_per_infohash_max.max(1);
        let peers = self.map.entry(ih).or_default();
        if let Some(e) = peers.get_mut(&peer) {
            *e = expires;
            return Ok(());
        }
        if peers.len() >= per_max || (total_full && !peers.is_empty()) {
            // Make room: the announce that would expire first goes.
            let oldest = peers.iter().min_by_key(|(_, e)| **e).map(|(a, _)| *a).expect("non-empty here");
            peers.remove(&oldest);
            self.total -= 1;
        } else if total_full {
            if peers.is_empty() {
                self.map.remove(&ih);
            }
            return Err(Refused::TooManyPeers);
        }
        peers.insert(peer, expires);
        self.total += 1;
        Ok(())
    }

    /// Up to `max` unexpired peers of `ih`, a random sample when there
    /// are more.
    pub fn peers(&self, ih: &InfoHash, now: Instant, max: usize, rng: &mut Rng) -> Vec<SocketAddr> {
        let Some(peers) = self.map.get(ih) else { return Vec::new() };
        let mut live: Vec<SocketAddr> = peers.iter().filter(|(_, e)| **e > now).map(|(a, _)| *a).collect();
        if live.len() > max {
            rng.shuffle(&mut live);
            live.truncate(max);
        }
        live
    }

    /// Drops every expired announce.
    pub fn expire(&mut self, now: Instant) {
        let mut total = 0;
        self.map.retain(|_, peers| {
            peers.retain(|_, e| *e > now);
            total += peers.len();
            !peers.is_empty()
        });
        self.total = total;
    }
}
