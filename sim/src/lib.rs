//! The deterministic simulator: the very same core machines (gossip,
//! BitTorrent), no adapter, one virtual clock and a seeded network model.

#![forbid(unsafe_code)]

pub mod chaos;
pub mod dht;
pub mod intern;
pub mod queue;
pub mod spread;
pub mod swarm;
pub mod tracker;
pub mod world;
