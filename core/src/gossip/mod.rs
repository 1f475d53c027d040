//! The gossip machine: replicates the [`Store`](crate::replica::Store)
//! between nodes and keeps SWIM-style membership, sans IO.
//!
//! * Anti-entropy: every `sync_every_rounds` rounds, and with every probe, a
//!   node sends a random peer a summary (hash of its per-writer
//!   watermarks); pushes carry none, since under a steady write load every
//!   summary differs while pushes are in flight. On a mismatch the peers swap digests and
//!   each sends the other only the entries newer than its watermarks, in
//!   chunks under the message size limit. A peer behind by more than the
//!   tombstone grace period is told to take a full state transfer instead.
//!   A watermark map larger than one digest travels in windows; the
//!   summary and the digest answering it list the writers of recent
//!   entries, and a node behind on one (or missing a push's `prev`)
//!   starts its next window there, so a missed push is repaired in the
//!   next exchange rather than when a random window happens to cover it.
//! * Push: a fresh write goes to `fanout` random peers at once; a node that
//!   learns a fresh entry pushes it on for `push_rounds` rounds.
//! * Timer: the deadline a node gives skips the rounds that would send
//!   nothing (nothing hot, no summary due, nothing expiring), and counts
//!   them down when time next reaches it, so an idle node wakes once per
//!   summary rather than once per round, with every round's effect where
//!   it was.
//! * Membership: SWIM probes, indirect probes, suspicion with a timeout,
//!   refutation by incarnation, piggybacked updates, periodic re-announce
//!   to members believed dead.
//! * Every message is sealed with the cluster [`Keyring`] (XChaCha20-Poly1305)
//!   and LZ4-compressed when it pays; anything that fails to open or parse is
//!   dropped and counted.
//!
//! # Where things are
//!
//! * `machine.rs`: the coordinator — [`Config`], [`Input`], [`Output`],
//!   [`Event`], [`Gossip::handle`] / [`Gossip::poll_output`], the timer, the
//!   sealing of every send, and the dispatch of each received message to
//!   one function per message kind; [`Gossip::check_invariants`].
//! * `membership.rs`: SWIM — probes, indirect probes, suspicion, refutation,
//!   piggybacked updates, joins, re-announces, the member table.
//! * `anti_entropy.rs`: rounds, the push of fresh writes, summary → digest
//!   → delta exchanges, full state transfers.
//! * `lookup.rs`: prefix lookups across live members.
//! * `wire.rs`: the messages and the sealed envelope.
//! * `direct.rs`: probes and gossip rounds read and written in postcard's
//!   format without serde (postcard stays the definition and the judge).
//! * `replay.rs`: which authentic messages are fresh (time window and
//!   per-sender sequence window); replays and stale ones are dropped.
//!
//! The three parts are `impl Gossip` blocks over the one state, so a
//! message kind's handling reads top to bottom in one place.
//!
//! # Driving it from an adapter
//!
//! ```text
//! let mut g = Gossip::new(Config::new(advertise, keyring), node_id, now(), os_random_u64());
//! g.restore(entries_from_disk, persisted_incarnation);      // optional, once
//! g.handle(now(), Input::Command(Command::Join(bootstrap)));
//! loop {
//!     // drain after every input, until Timeout
//!     loop { match g.poll_output() {
//!         Output::Transmit(Transmit { to, bytes }) => send one framed message to `to`,
//!         Output::Event(Event::Store(Change::Applied(e))) => upsert e on disk, update the DNS view,
//!         Output::Event(Event::Store(Change::Removed { ns, key })) => delete (ns, key) on disk,
//!         Output::Event(other) => log / metrics,
//!         Output::Timeout(at) => { arm the one timer at `at`; break }
//!     } }
//!     select { message from socket => g.handle(now(), Input::Receive { from, bytes }),
//!              timer fired         => g.handle(now(), Input::Timeout),
//!              API command         => g.handle(now(), Input::Command(..)) }
//! }
//! ```
//!
//! * `now()` is a [`Now`]: the monotonic instant *and* the wall clock, read
//!   together in one place. The machine never reads a clock.
//! * The seed must come from OS entropy: it also draws the AEAD nonces.
//! * Messages are whole datagram-like units of at most
//!   `Config::message_bytes_max` bytes; over TCP, frame each one (length
//!   prefix). An answer (ack, digest, delta, chunk of a full transfer, join
//!   reply, lookup answer, `NeedFull`) goes to the `from` of the message it
//!   answers: make `from` name the way back, e.g. the connection it came
//!   in on, and route a `Transmit` to such a `to` over that connection
//!   (never dial it). Requests, pushes, probes and rounds go to the
//!   address each member advertises. So a copy of a member's message sent
//!   by a third party is answered to that third party, never to the
//!   member: no amplification toward it (issue 12, item 11).
//! * Replays: every message carries the sender's wall clock and a sequence
//!   number under the AEAD; a message outside `Config::replay_window` (30 s,
//!   also the clock skew tolerated between nodes) or already seen from its
//!   sender is dropped as [`DecodeError::Stale`] / [`DecodeError::Replayed`].
//!   An adapter should treat a connection that delivers one as hostile
//!   (never admit it as a member's). Envelope version 4 nodes do not talk
//!   to older ones.
//! * Persistence: apply the change feed (`Applied` = upsert, including
//!   tombstones, `Removed` = delete) and persist [`Gossip::incarnation`];
//!   at start pass them to [`Gossip::restore`]. Serve reads from
//!   [`Gossip::store`] (`get` / `live` at the current wall-clock ms).
//!
//! # Limits
//!
//! Every queue and message is bounded by a [`Config`] field: message size,
//! entries per message, piggybacked updates per message, pending updates,
//! members, digest writers, hot entries, relayed probes, join sample size,
//! senders tracked for replays (each a [`SEQ_WINDOW`]-bit window),
//! bootstrap addresses ([`BOOTSTRAP_MAX`]) and keyring keys
//! ([`KEYRING_KEYS_MAX`]); the store bounds entries, key and value sizes,
//! writers and clock drift. Inputs over a limit are dropped and counted.
//!
//! # What it guarantees
//!
//! Last-writer-wins convergence of every live node; deletes and expiries
//! never come back as long as the tombstone grace period outlasts the
//! longest partition (both sides of a longer one collect deletes the other
//! never saw). A restarted node serves nothing it holds until it has taken
//! a full state transfer from a node that knows its collection history
//! (the reasoning is in `anti_entropy.rs`); collected tombstones are
//! remembered as (key, version, writer) in a bounded graveyard that refuses
//! stale copies and travels in full transfers. `sim chaos` checks all of this on thousands of seeds, with
//! [`Gossip::check_invariants`] after every input of every node (the fuzz
//! target `gossip_machine` and the core tests' virtual network call it
//! too).

mod anti_entropy;
mod direct;
mod lookup;
mod machine;
mod membership;
mod replay;
mod wire;

pub use machine::{Command, Config, Event, Gossip, Input, Now, Output, Stats, BOOTSTRAP_MAX};
pub use replay::SEQ_WINDOW;
pub use wire::{
    decode_packet, decode_packet_fast, encode_packet, open, seal, Body, DecodeError, Keyring, KeyringError,
    MemberState, MemberUpdate, Packet, PeerAddr, Pushed, ENVELOPE_OVERHEAD, ENVELOPE_VERSION, KEYRING_KEYS_MAX,
};
