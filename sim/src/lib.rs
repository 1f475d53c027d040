//! The deterministic simulator: the very same core machines (gossip,
//! BitTorrent), no adapter, one virtual clock and a seeded network model.

#![forbid(unsafe_code)]

pub mod chaos;
pub mod spread;
pub mod swarm;
pub mod tracker;
pub mod world;
// TRACKER: the lead adds `pub mod tracker;` here (sim/src/tracker.rs, the
// tracker-machine simulation written in parallel) and wires `sim tracker` in
// main.rs at the marked place in `Cmd`.
