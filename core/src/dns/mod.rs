//! DNS: names, the message model, the wire codec, the record store, the
//! authority that answers queries from it, and the forwarder that hands
//! other names to an upstream resolver.
//!
//! * [`Authority::answer`] is the one way a query is answered: query bytes,
//!   the [`RecordStore`] and the wall-clock time in; the reply written into
//!   the caller's reusable buffer and a [`Verdict`] out (`Reply`: send the
//!   buffer, `Forward`: hand the query to the forwarder, `Drop`: send
//!   nothing). Common queries take a fast path inside, with no allocation.
//! * [`forward::Forwarder`] is a machine of the crate's one shape:
//!   `handle(now, Input::Query { client, bytes } | Input::Receive { bytes } |
//!   Input::Timeout)`, then `poll_output()` gives
//!   `Output::Transmit(Transmit { to: To::Upstream | To::Client(c), bytes })`
//!   and ends with `Output::Timeout(at)`.
//!
//! ```text
//! let mut out = Vec::with_capacity(1232);        // one per server slot, reused
//! match authority.answer(now_ms, &query, Transport::Udp, &store, &mut out) {
//!     Verdict::Reply => send `out` to the client,
//!     Verdict::Forward => forwarder.handle(now, forward::Input::Query { client, bytes: query }),
//!     Verdict::Drop => {}
//! }
//! ```

pub mod message;
pub mod name;
pub mod text;
pub mod wire;

pub use message::*;
pub use name::{Name, NameError};
pub use wire::{
    decode, decode_header, decode_rdata, encode, encode_limited, encode_rdata, DecodeError, DecodeErrorKind,
};

pub mod authority;
pub mod forward;
pub mod store;
pub use authority::{Authority, AuthorityConfig, Transport, Verdict, Zone};
pub use store::{RRset, RecordStore};
