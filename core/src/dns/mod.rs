//! DNS: names, the message model, the wire codec, the record store and
//! the authority that answers queries from it.

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
