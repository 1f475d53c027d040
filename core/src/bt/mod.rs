//! BitTorrent: pure codecs and machines. Hashing file data, sockets, disks
//! and clocks belong to the adapters; everything here is bytes in, bytes or
//! decisions out, with time and randomness passed in.
//!
//! | module | use it to |
//! |---|---|
//! | [`bencode`] | decode bencode from outside (limits, offsets) and encode canonically |
//! | [`metainfo`] | parse and check a .torrent (infohash over the exact `info` bytes), build one ([`metainfo::TorrentBuilder`], [`metainfo::PieceHasher`], [`metainfo::choose_piece_length`]), map pieces and blocks to files ([`metainfo::FileLayout`]) |
//! | [`metadata`] | BEP 9 messages and assembly of the `info` dictionary |
//! | [`magnet`] | fetch a torrent's metadata from peers by infohash alone (a machine) |
//! | [`conn`] | what a peer connection tells a machine ([`conn::PeerInput`]): the one input the torrent and the metadata fetch share |
//! | [`peers`] | the peer book: known addresses, which to dial when, one backoff and reconnect policy, bans (bounded) |
//! | [`wire`] | decode a peer's byte stream ([`wire::Decoder`]) and encode messages (BEP 3, 6, 10) |
//! | [`pex`] | BEP 11 peer exchange messages, and what to send each connection ([`pex::PexSender`]) |
//! | [`lsd`] | BEP 14 Local Service Discovery: announces to a multicast group and the machine that sends and hears them |
//! | [`mse`] | Message Stream Encryption: the obfuscated handshake (a machine) and the RC4 keystreams after it |
//! | [`bitfield`] | sets of pieces, to and from the wire form |
//! | [`picker`] | choose which blocks to request from whom (rarest first, endgame, parole) |
//! | [`choker`] | choose whom to upload to (tit-for-tat, optimistic unchoke, anti-snub) |
//! | [`tracker`] | HTTP and UDP tracker requests and responses, client and server side |
//! | [`announce`] | decide when and to which tracker to announce (BEP 12 tiers, BEP 15 UDP flow, backoff) |
//! | [`torrent`] | run one torrent's swarm: the machine that ties the rest together |
//! | [`resume`] | fast resume records (stored form, checksummed) and which pieces a restart may trust |
//!
//! Every machine here has the same shape: `handle(now, Input)`, then drain
//! `poll_output()` until `Output::Timeout(at)` (which always comes); bytes
//! for a peer are `Output::Transmit(`[`crate::Transmit`]`)`, reports `Output::Event`.
//!
//! An adapter downloading a torrent: parse the file with
//! [`metainfo::Metainfo::parse`] (or fetch it with a
//! [`magnet::MetadataFetch`]), check which pieces are already on disk
//! (hash them on a worker), make a [`torrent::Torrent`], let an
//! [`announce::Announcer`] find peers and a [`peers::PeerBook`] decide whom
//! to dial, then feed the torrent every [`conn::PeerInput`] of its
//! connections, every finished disk job and every timeout, and carry out
//! what [`torrent::Torrent::poll_output`] says until it yields
//! [`torrent::Output::Timeout`]. The same connection events feed the
//! metadata fetch, so one connection task in the adapter serves both.
//!
//! Known limits: only v1 (SHA-1) torrents. Bencode is decoded by bendy,
//! with a small lenient fallback for the unsorted dictionary keys bendy
//! refuses (see [`bencode::decode_prefix_with`]).

pub mod announce;
pub mod bencode;
pub mod bitfield;
pub mod choker;
pub mod conn;
pub mod lsd;
pub mod magnet;
pub mod metadata;
pub mod metainfo;
pub mod mse;
pub mod peers;
pub mod pex;
pub mod picker;
pub mod resume;
pub mod torrent;
pub mod tracker;
pub mod wire;
