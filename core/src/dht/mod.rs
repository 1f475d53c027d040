//! The Mainline DHT (BEP 5): find peers of a torrent by its infohash with no
//! tracker, among millions of nodes that each know only a few others.
//!
//! | module | use it to |
//! |---|---|
//! | [`krpc`] | parse and build the four KRPC queries, their answers and errors; compact node and peer forms (IPv4, BEP 32 IPv6) |
//! | [`routing`] | the Kademlia routing table: k-buckets, good, questionable and bad nodes, replacement caches |
//! | [`store`] | the peers others announced to us, per infohash, with expiry and bounds |
//! | [`machine`] | run a node: answer queries, keep the table fresh, look peers up and announce ([`machine::Dht`]) |
//!
//! The machine has the shape of every machine in this crate: datagrams and
//! time in ([`machine::Input`]), datagrams, lookup results and a timeout out
//! ([`machine::Output`]); the adapter owns one UDP socket, the simulator a
//! seeded network.

pub mod krpc;
pub mod machine;
pub mod routing;
pub mod store;

pub use machine::{Command, Config, Dht, Event, Input, LookupId, LookupStats, Output};

use core::fmt;

/// A 160-bit node id (and the key space infohashes live in): distance is XOR.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub [u8; 20]);

impl NodeId {
    /// The XOR distance from `self` to `other`, compared as a big-endian number.
    pub fn distance(&self, other: &NodeId) -> NodeId {
        let mut d = [0u8; 20];
        for (i, b) in d.iter_mut().enumerate() {
            *b = self.0[i] ^ other.0[i];
        }
        NodeId(d)
    }

    /// How many leading bits `self` and `other` share (160 if equal).
    pub fn common_prefix_bits(&self, other: &NodeId) -> usize {
        for i in 0..20 {
            let x = self.0[i] ^ other.0[i];
            if x != 0 {
                return i * 8 + x.leading_zeros() as usize;
            }
        }
        160
    }

    /// A random id that shares exactly `bits` leading bits with `self`
    /// (`bits` < 160), drawn from `rng`: a target inside one bucket's range.
    pub fn random_in_bucket(&self, bits: usize, rng: &mut crate::rand::Rng) -> NodeId {
        let mut id = [0u8; 20];
        rng.fill(&mut id);
        let bits = bits.min(159);
        for i in 0..bits {
            let (byte, bit) = (i / 8, 7 - (i % 8));
            id[byte] = (id[byte] & !(1 << bit)) | (self.0[byte] & (1 << bit));
        }
        // The first differing bit is bit `bits`.
        let (byte, bit) = (bits / 8, 7 - (bits % 8));
        id[byte] = (id[byte] & !(1 << bit)) | (!self.0[byte] & (1 << bit));
        NodeId(id)
    }
}

impl From<crate::bt::metainfo::InfoHash> for NodeId {
    fn from(ih: crate::bt::metainfo::InfoHash) -> NodeId {
        NodeId(ih.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0[..4] {
            write!(f, "{b:02x}")?;
        }
        f.write_str("..")
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}
