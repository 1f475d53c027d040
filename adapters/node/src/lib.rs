//! The rumor program — a cluster node (DNS, HTTP API, gossip, tracker)
//! and a BitTorrent client — written once against [`rt::Runtime`].
//!
//! The protocol logic lives in `rumor-core` as pure state machines; this
//! crate drives them: it owns sockets, disks and timers through the
//! runtime seam, and holds everything the adapters share (the node task,
//! which drives the core's member and tracker machines; record and piece
//! storage, configuration, the HTTP handlers, the command line). An adapter crate only implements [`rt::Runtime`] for
//! its runtime and calls [`main`].

mod api;
mod bt;
mod cli;
mod clock;
mod dashboard;
/// A wrapper over the core's member machine, for the overlay client only.
mod dns_cli;
mod dns_udp;
mod gossip_net;
pub mod http;
mod metrics;
mod net;
mod node;
mod persist;
mod records;
pub mod rt;
pub mod sha1x16;
mod torrent_cli;
mod torrents;

pub(crate) use cli::keyring;
pub use cli::main;
