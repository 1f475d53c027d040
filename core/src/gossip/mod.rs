//! The gossip machine.
