//! The smol adapter (grows to parity in its own issue).
