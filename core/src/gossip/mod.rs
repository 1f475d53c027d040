//! The gossip machine: replicates the [`Store`](crate::replica::Store)
//! between nodes and keeps SWIM-style membership, sans IO.
//!
//! * Anti-entropy: every round a node sends a random peer a summary (hash of
//!   its per-writer watermarks). On a mismatch the peers swap digests and
//!   each sends the other only the entries newer than its watermarks, in
//!   chunks under the message size limit. A peer behind by more than the
//!   tombstone grace period is told to take a full state transfer instead.
//! * Push: a fresh write goes to `fanout` random peers at once; a node that
//!   learns a fresh entry pushes it on for `push_rounds` rounds.
//! * Membership: SWIM probes, indirect probes, suspicion with a timeout,
//!   refutation by incarnation, piggybacked updates, periodic re-announce
//!   to members believed dead.
//! * Every message is sealed with the cluster [`Keyring`] (XChaCha20-Poly1305)
//!   and LZ4-compressed when it pays; anything that fails to open or parse is
//!   dropped and counted.
//!
//! Driving it: see [`Gossip`].

mod machine;
mod wire;

pub use machine::{Command, Config, Event, Gossip, Input, Now, Output, Stats, BOOTSTRAP_MAX};
pub use wire::{
    open, seal, Body, DecodeError, Keyring, KeyringError, MemberState, MemberUpdate, Packet,
    PeerAddr, Pushed, ENVELOPE_OVERHEAD, ENVELOPE_VERSION, KEYRING_KEYS_MAX,
};
