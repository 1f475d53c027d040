//! The deterministic simulator: the very same core machines (gossip,
//! BitTorrent), no adapter, one virtual clock and a seeded network model.

// One function, `prefetch::prefetch`, issues a cache hint (see there).
#![deny(unsafe_code)]

pub mod chaos;
pub mod dht;
pub mod intern;
mod prefetch;
pub mod queue;
pub mod spread;
pub mod swarm;
pub mod tracker;
pub mod world;
