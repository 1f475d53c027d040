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
//!
//! ## One shape for every machine
//!
//! Every stateful machine (the gossip machine, the node's
//! [`member::Member`], the overlay [`overlay::tracker::Tracker`], the DNS
//! [`dns::forward::Forwarder`], the BitTorrent [`bt::torrent::Torrent`],
//! metadata fetch and announcer) is driven the same way:
//!
//! * `handle(now, Input)`: one plain-data input (bytes received, a timeout,
//!   a command); `now` is the only clock the machine sees.
//! * `poll_output() -> Output`: drained after every input until it returns
//!   `Output::Timeout(at)`, which always comes last: call `handle(at,
//!   Input::Timeout)` then, or earlier with the next input. Sends are
//!   `Output::Transmit(`[`Transmit`]` { to, bytes })`; what the owner should
//!   know is `Output::Event(Event)`.
//! * Getters for state; randomness from a seed given to `new`.
//!
//! A whole run loop, here two gossip nodes on a lossless virtual network
//! (an adapter does the same with sockets and a real clock, the simulator
//! with a seeded network model):
//!
//! ```
//! use bytes::Bytes;
//! use rumor_core::gossip::{Command, Config, Gossip, Input, Keyring, Now, Output, PeerAddr};
//! use rumor_core::replica::Namespace;
//! use rumor_core::time::{Duration, Instant};
//! use std::collections::VecDeque;
//!
//! let keys = Keyring::new(1, [7; 32]);
//! let addr = |i: usize| PeerAddr::from(format!("10.0.0.{i}:5300"));
//! let mut now = Now { at: Instant::ZERO, wall_ms: 1_700_000_000_000 };
//! let mut nodes: Vec<Gossip> =
//!     (0..2).map(|i| Gossip::new(Config::new(addr(i), keys.clone()), i as u64 + 1, now, i as u64)).collect();
//! let mut wire: VecDeque<(usize, Input)> = VecDeque::new();
//! wire.push_back((1, Input::Command(Command::Join(vec![addr(0)]))));
//! let key = Bytes::from_static(b"free.local");
//! let write = Command::Write { ns: Namespace::DNS, key: key.clone(), value: Bytes::from_static(b"10.1.0.15"), expires_ms: 0 };
//! wire.push_back((0, Input::Command(write)));
//! let mut deadlines = [Instant::ZERO; 2];
//! for _ in 0..50 {
//!     // Deliver everything in flight, then fire the timers that are due.
//!     while let Some((to, input)) = wire.pop_front() {
//!         nodes[to].handle(now, input);
//!         // Drain: every output up to the timeout that always ends it.
//!         loop {
//!             match nodes[to].poll_output() {
//!                 Output::Transmit(t) => {
//!                     let dest = (0..2).find(|&i| addr(i) == t.to).expect("a known address");
//!                     wire.push_back((dest, Input::Receive { from: addr(to), bytes: t.bytes }));
//!                 }
//!                 Output::Event(_) => {}
//!                 Output::Timeout(at) => {
//!                     deadlines[to] = at;
//!                     break;
//!                 }
//!             }
//!         }
//!     }
//!     now.at += Duration::from_millis(100);
//!     now.wall_ms += 100;
//!     for i in 0..2 {
//!         if deadlines[i] <= now.at {
//!             wire.push_back((i, Input::Timeout));
//!         }
//!     }
//! }
//! assert!(nodes[1].store().get(Namespace::DNS, &key, now.wall_ms).is_some(), "the write reached node 1");
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bt;
pub mod dht;
pub mod dns;
pub mod gossip;
pub mod member;
pub mod overlay;
mod queues;
pub mod rand;
pub mod replica;
pub mod time;
pub mod transmit;

pub use transmit::Transmit;
