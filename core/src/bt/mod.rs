//! BitTorrent: pure codecs and machines (metainfo, peer wire, piece picker,
//! choker, tracker codecs). Hashing file data, sockets and disks belong to
//! the adapters; everything here is bytes in, bytes or decisions out.

pub mod bencode;
pub mod bitfield;
pub mod choker;
pub mod metadata;
pub mod metainfo;
pub mod picker;
pub mod torrent;
pub mod tracker;
pub mod wire;
