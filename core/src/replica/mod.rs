//! The replicated store: entries keyed by `(namespace, key)` with an opaque
//! value, merged last-writer-wins on a hybrid-logical-clock version, with
//! tombstones, absolute expiries, per-writer watermarks for anti-entropy and
//! full state transfer for peers that fell too far behind.
//!
//! Pure data structures: no time but the wall-clock milliseconds passed in.

mod entry;
mod held;
pub(crate) mod marks;
mod settling;
mod store;
mod writers;

pub use entry::{lww_cmp, merge, Entry, Hlc, Namespace, NodeId, Version};
pub use held::{EntryInterner, Shared};
pub use store::{
    Change, Delta, Digest, FullChunk, LocalWrite, NamespaceConfig, Refused, Store, StoreConfig, PROVIDERS_ENTRIES_MAX,
    PROVIDERS_LIFETIME_MAX_MS,
};
