//! DNS: names, the message model, the wire codec, the record store and
//! the authority that answers queries from it.

pub mod message;
pub mod name;
pub mod wire;

pub use message::*;
pub use name::{Name, NameError};
pub use wire::{decode, decode_header, encode, encode_limited, DecodeError, DecodeErrorKind};

pub mod authority;
pub mod store;
pub use authority::{Authority, AuthorityConfig, Transport, Verdict, Zone};
pub use store::{RRset, RecordStore};
