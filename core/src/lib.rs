//! # rumor-core
//!
//! The sans-IO heart of rumor: every protocol rumor speaks is a pure state
//! machine or a pure function here. Nothing in this crate opens a socket,
//! reads a file, looks at a clock, spawns a thread or needs an async runtime.
//! Time comes in as [`time::Instant`] (monotonic) or as wall-clock
//! milliseconds where a replicated record needs an absolute expiry, and
//! randomness comes from a seeded [`rand::Rng`] owned by the machine.
//!
//! The adapters (`rumor-tokio`, `rumor-smol`) and the deterministic
//! simulator (`sim`) drive the very same types.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bt;
pub mod dns;
pub mod gossip;
pub mod member;
pub mod overlay;
pub mod rand;
pub mod replica;
pub mod time;
pub mod transmit;

pub use transmit::Transmit;
