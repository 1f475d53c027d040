//! The peer wire protocol: BEP 3 messages, BEP 6 fast extension, BEP 10
//! extension protocol framing and its handshake dictionary.
//!
//! Receive with a [`Decoder`]: [`Decoder::feed`] the bytes a socket gave,
//! then call [`Decoder::take_handshake`] once (for a fresh connection) and
//! [`Decoder::next`] until it returns `None`. Send with [`Handshake::encode`]
//! and [`Message::encode`] (or [`encode_piece_header`] to send a block's
//! payload without copying it).
//!
//! Limits: a message longer than its kind allows is refused as soon as its
//! length prefix and id arrive, so a peer can never make the decoder buffer
//! more than [`DecoderConfig::message_len_max`] bytes.

use std::collections::BTreeMap;
use std::fmt;

use bytes::{Buf, Bytes, BytesMut};

use super::bencode::{self, Value};
use super::metainfo::InfoHash;

/// The standard block size: what we request and the largest block we serve.
pub const BLOCK_LEN: u32 = 16 * 1024;

/// The protocol string of the BEP 3 handshake.
pub const PROTOCOL: &[u8; 19] = b"BitTorrent protocol";

/// A 20-byte peer id.
pub type PeerId = [u8; 20];

/// The 68-byte handshake that opens every peer connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handshake {
    /// The 8 reserved bytes (feature bits).
    pub reserved: [u8; 8],
    /// The torrent this connection is for.
    pub info_hash: InfoHash,
    /// The sender's peer id.
    pub peer_id: PeerId,
}

impl Handshake {
    /// Encoded length.
    pub const LEN: usize = 68;

    /// Our handshake: BEP 10 extension protocol and BEP 6 fast extension bits set.
    pub fn new(info_hash: InfoHash, peer_id: PeerId) -> Handshake {
        let mut reserved = [0u8; 8];
        reserved[5] |= 0x10; // BEP 10
        reserved[7] |= 0x04; // BEP 6
        Handshake { reserved, info_hash, peer_id }
    }

    /// Whether the sender speaks the BEP 10 extension protocol.
    pub fn supports_extended(&self) -> bool {
        self.reserved[5] & 0x10 != 0
    }

    /// Whether the sender speaks the BEP 6 fast extension.
    pub fn supports_fast(&self) -> bool {
        self.reserved[7] & 0x04 != 0
    }

    /// Whether the sender runs a DHT node (BEP 5).
    pub fn supports_dht(&self) -> bool {
        self.reserved[7] & 0x01 != 0
    }

    /// Appends the 68 handshake bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(19);
        out.extend_from_slice(PROTOCOL);
        out.extend_from_slice(&self.reserved);
        out.extend_from_slice(&self.info_hash.0);
        out.extend_from_slice(&self.peer_id);
    }

    /// Parses exactly one handshake from the first 68 bytes of `b`.
    pub fn parse(b: &[u8]) -> Result<Handshake, WireError> {
        if b.len() < Self::LEN {
            return Err(WireError::new(b.len() as u64, WireErrorKind::Truncated));
        }
        if b[0] != 19 || &b[1..20] != PROTOCOL {
            return Err(WireError::new(0, WireErrorKind::NotBitTorrent));
        }
        let mut reserved = [0u8; 8];
        reserved.copy_from_slice(&b[20..28]);
        let mut ih = [0u8; 20];
        ih.copy_from_slice(&b[28..48]);
        let mut peer_id = [0u8; 20];
        peer_id.copy_from_slice(&b[48..68]);
        Ok(Handshake { reserved, info_hash: InfoHash(ih), peer_id })
    }
}

/// A request for (or the address of) one block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlockRef {
    /// Piece index.
    pub index: u32,
    /// Byte offset within the piece.
    pub begin: u32,
    /// Length in bytes.
    pub length: u32,
}

/// One peer wire message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Zero-length message keeping the connection open.
    KeepAlive,
    /// id 0: the sender will not serve our requests.
    Choke,
    /// id 1: the sender will serve our requests.
    Unchoke,
    /// id 2: the sender wants pieces we have.
    Interested,
    /// id 3: the sender wants nothing from us.
    NotInterested,
    /// id 4: the sender completed piece `n`.
    Have(u32),
    /// id 5: the sender's pieces, MSB-first; checked against the piece
    /// count (length and zero spare bits) when the decoder knows it.
    Bitfield(Bytes),
    /// id 6: asks for a block.
    Request(BlockRef),
    /// id 7: a block's data.
    Piece {
        /// Piece index.
        index: u32,
        /// Offset in the piece.
        begin: u32,
        /// The data (shares the receive buffer: no copy).
        data: Bytes,
    },
    /// id 8: withdraws a request.
    Cancel(BlockRef),
    /// id 9: the sender's DHT port.
    Port(u16),
    /// id 0x0D (BEP 6): the sender suggests piece `n`.
    Suggest(u32),
    /// id 0x0E (BEP 6): the sender has every piece.
    HaveAll,
    /// id 0x0F (BEP 6): the sender has no piece.
    HaveNone,
    /// id 0x10 (BEP 6): the sender will not serve this request.
    Reject(BlockRef),
    /// id 0x11 (BEP 6): we may request piece `n` even while choked.
    AllowedFast(u32),
    /// id 20 (BEP 10): extension message `id` (0 = extension handshake).
    Extended {
        /// Extended message id.
        id: u8,
        /// Raw payload (bencoded for most extensions).
        payload: Bytes,
    },
}

mod id {
    pub const CHOKE: u8 = 0;
    pub const UNCHOKE: u8 = 1;
    pub const INTERESTED: u8 = 2;
    pub const NOT_INTERESTED: u8 = 3;
    pub const HAVE: u8 = 4;
    pub const BITFIELD: u8 = 5;
    pub const REQUEST: u8 = 6;
    pub const PIECE: u8 = 7;
    pub const CANCEL: u8 = 8;
    pub const PORT: u8 = 9;
    pub const SUGGEST: u8 = 0x0D;
    pub const HAVE_ALL: u8 = 0x0E;
    pub const HAVE_NONE: u8 = 0x0F;
    pub const REJECT: u8 = 0x10;
    pub const ALLOWED_FAST: u8 = 0x11;
    pub const EXTENDED: u8 = 20;
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_block(out: &mut Vec<u8>, ident: u8, b: &BlockRef) {
    put_u32(out, 13);
    out.push(ident);
    put_u32(out, b.index);
    put_u32(out, b.begin);
    put_u32(out, b.length);
}

/// Appends the 13-byte header of a piece message carrying `len` bytes; send
/// the block's bytes right after it. Use to avoid copying block data.
pub fn encode_piece_header(index: u32, begin: u32, len: u32, out: &mut Vec<u8>) {
    put_u32(out, 9 + len);
    out.push(id::PIECE);
    put_u32(out, index);
    put_u32(out, begin);
}

impl Message {
    /// Appends the framed message (length prefix included) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let simple = |out: &mut Vec<u8>, i: u8| {
            put_u32(out, 1);
            out.push(i);
        };
        let with_u32 = |out: &mut Vec<u8>, i: u8, v: u32| {
            put_u32(out, 5);
            out.push(i);
            put_u32(out, v);
        };
        match self {
            Message::KeepAlive => put_u32(out, 0),
            Message::Choke => simple(out, id::CHOKE),
            Message::Unchoke => simple(out, id::UNCHOKE),
            Message::Interested => simple(out, id::INTERESTED),
            Message::NotInterested => simple(out, id::NOT_INTERESTED),
            Message::Have(n) => with_u32(out, id::HAVE, *n),
            Message::Bitfield(b) => {
                put_u32(out, 1 + b.len() as u32);
                out.push(id::BITFIELD);
                out.extend_from_slice(b);
            }
            Message::Request(b) => put_block(out, id::REQUEST, b),
            Message::Piece { index, begin, data } => {
                encode_piece_header(*index, *begin, data.len() as u32, out);
                out.extend_from_slice(data);
            }
            Message::Cancel(b) => put_block(out, id::CANCEL, b),
            Message::Port(p) => {
                put_u32(out, 3);
                out.push(id::PORT);
                out.extend_from_slice(&p.to_be_bytes());
            }
            Message::Suggest(n) => with_u32(out, id::SUGGEST, *n),
            Message::HaveAll => simple(out, id::HAVE_ALL),
            Message::HaveNone => simple(out, id::HAVE_NONE),
            Message::Reject(b) => put_block(out, id::REJECT, b),
            Message::AllowedFast(n) => with_u32(out, id::ALLOWED_FAST, *n),
            Message::Extended { id: eid, payload } => {
                put_u32(out, 2 + payload.len() as u32);
                out.push(id::EXTENDED);
                out.push(*eid);
                out.extend_from_slice(payload);
            }
        }
    }

    /// The framed message as a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }
}

/// Why bytes from a peer were refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WireErrorKind {
    /// The handshake does not start with `\x13BitTorrent protocol`.
    NotBitTorrent,
    /// Fewer bytes than a complete item (only from one-shot parsers).
    Truncated,
    /// A message's length prefix exceeds what its kind allows.
    TooLong {
        /// Message id (`None` when the length alone is over every limit).
        id: Option<u8>,
        /// Announced length.
        len: u32,
        /// Largest length allowed for it.
        max: u32,
    },
    /// A fixed-size message has the wrong length.
    BadLength {
        /// Message id.
        id: u8,
        /// Announced length.
        len: u32,
    },
    /// A bitfield does not match the piece count.
    BadBitfield {
        /// Bytes expected.
        expected: u32,
        /// Bytes received.
        found: u32,
    },
    /// Spare bits at the end of a bitfield are set.
    BitfieldSpareBits,
    /// A message id we do not know (the message was skipped).
    UnknownId(u8),
    /// An extension handshake dictionary is malformed.
    BadExtHandshake(String),
}

/// A protocol error from a peer: what and where (byte offset in the stream
/// from this decoder's start, at the beginning of the offending message).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireError {
    /// Stream offset of the offending message.
    pub offset: u64,
    /// What was wrong.
    pub kind: WireErrorKind,
}

impl WireError {
    fn new(offset: u64, kind: WireErrorKind) -> WireError {
        WireError { offset, kind }
    }

    /// True if the stream can't be decoded further (framing lost or the
    /// peer is not speaking BitTorrent): drop the connection. Non-fatal
    /// errors consumed the offending message; the caller may go on.
    pub fn is_fatal(&self) -> bool {
        !matches!(self.kind, WireErrorKind::UnknownId(_))
    }
}

impl fmt::Display for WireError {
    /// A sentence for a log: "peer wire error at byte 68: a bitfield of 3
    /// bytes where the torrent needs 2".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "peer wire error at byte {}: {}", self.offset, self.kind)
    }
}

impl fmt::Display for WireErrorKind {
    /// What is wrong, without the position (the error carries it).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireErrorKind::NotBitTorrent => f.write_str("the handshake is not BitTorrent's"),
            WireErrorKind::Truncated => f.write_str("the message is cut short"),
            WireErrorKind::TooLong { id: Some(id), len, max } => {
                write!(f, "message {id} is {len} bytes long, over its limit of {max}")
            }
            WireErrorKind::TooLong { id: None, len, max } => {
                write!(f, "a message of {len} bytes, over the limit of {max}")
            }
            WireErrorKind::BadLength { id, len } => write!(f, "message {id} cannot be {len} bytes long"),
            WireErrorKind::BadBitfield { expected, found } => {
                write!(f, "a bitfield of {found} bytes where the torrent needs {expected}")
            }
            WireErrorKind::BitfieldSpareBits => f.write_str("a bitfield with its spare bits set"),
            WireErrorKind::UnknownId(id) => write!(f, "unknown message id {id} (skipped)"),
            WireErrorKind::BadExtHandshake(why) => write!(f, "a malformed extension handshake: {why}"),
        }
    }
}

impl std::error::Error for WireError {}

/// Limits of a [`Decoder`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecoderConfig {
    /// The torrent's piece count, or 0 while unknown (magnet link before
    /// metadata): bounds and checks bitfields.
    pub piece_count: u32,
    /// Largest block accepted in a piece message.
    pub block_len_max: u32,
    /// Largest extended message payload accepted.
    pub extended_len_max: u32,
    /// Largest bitfield accepted while the piece count is unknown, in bytes.
    pub bitfield_unknown_bytes_max: u32,
    /// Whether the stream starts with a handshake (see
    /// [`Decoder::take_handshake`]).
    pub expect_handshake: bool,
}

impl Default for DecoderConfig {
    /// Unknown piece count, 16 KiB blocks, 1 MiB extended payloads, 128 KiB
    /// bitfields (a million pieces), handshake expected.
    fn default() -> Self {
        DecoderConfig {
            piece_count: 0,
            block_len_max: BLOCK_LEN,
            extended_len_max: 1 << 20,
            bitfield_unknown_bytes_max: 128 << 10,
            expect_handshake: true,
        }
    }
}

impl DecoderConfig {
    /// The longest message (after the length prefix) any kind may have:
    /// the most the decoder ever buffers beyond one read.
    pub fn message_len_max(&self) -> u32 {
        let bitfield = 1 + self.bitfield_bytes_max();
        (9 + self.block_len_max).max(2 + self.extended_len_max).max(bitfield)
    }

    fn bitfield_bytes_max(&self) -> u32 {
        if self.piece_count == 0 {
            self.bitfield_unknown_bytes_max
        } else {
            self.piece_count.div_ceil(8)
        }
    }
}

/// Bytes of a piece message before its payload: the length prefix, the
/// id, the index and the offset.
pub const PIECE_HEADER_LEN: usize = 13;

/// Streaming decoder for one connection's inbound bytes.
///
/// The stream is `buf` followed by `chunk`. Bytes fed as [`Bytes`]
/// ([`Decoder::feed_bytes`]) stay where they are: a message that lies
/// whole inside such a chunk is sliced out of it (a block's payload is
/// never copied); only a message cut by the end of a chunk is gathered
/// into `buf`. Bytes fed as a slice ([`Decoder::feed`]) are copied into
/// `buf`. Either way the decoder holds at most one fed chunk plus one
/// partial message ([`DecoderConfig::message_len_max`]).
#[derive(Debug)]
pub struct Decoder {
    config: DecoderConfig,
    /// The start of the stream: a partial message, or bytes fed as slices.
    buf: BytesMut,
    /// The rest: the last chunk fed as [`Bytes`], not yet decoded.
    chunk: Bytes,
    consumed: u64,
    handshake_pending: bool,
    dead: bool,
}

impl Decoder {
    /// A decoder under `config`.
    pub fn new(config: DecoderConfig) -> Decoder {
        Decoder {
            config,
            buf: BytesMut::new(),
            chunk: Bytes::new(),
            consumed: 0,
            handshake_pending: config.expect_handshake,
            dead: false,
        }
    }

    /// Sets the piece count once metadata arrives (BEP 9), so later
    /// bitfields are checked exactly.
    pub fn set_piece_count(&mut self, n: u32) {
        self.config.piece_count = n;
    }

    /// Appends bytes received from the peer (copied).
    pub fn feed(&mut self, bytes: &[u8]) {
        if !self.dead {
            self.gather();
            self.buf.extend_from_slice(bytes);
        }
    }

    /// Appends bytes received from the peer without copying them: the
    /// messages that lie whole inside `bytes` share its memory (so a
    /// block's payload keeps the chunk it came in alive). Drain
    /// [`Decoder::next`] before feeding again; a chunk fed before the
    /// last one was drained is copied.
    pub fn feed_bytes(&mut self, bytes: Bytes) {
        if self.dead || bytes.is_empty() {
            return;
        }
        if !self.chunk.is_empty() {
            self.gather();
        }
        self.chunk = bytes;
    }

    /// Moves what is left of `chunk` to the end of `buf`.
    fn gather(&mut self) {
        if !self.chunk.is_empty() {
            self.buf.extend_from_slice(&self.chunk);
            self.chunk = Bytes::new();
        }
    }

    /// Bytes buffered but not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len() + self.chunk.len()
    }

    /// True once a fatal error was returned; no more messages will come.
    pub fn is_dead(&self) -> bool {
        self.dead
    }

    /// Byte `i` of the stream (`i < self.buffered()`).
    fn at(&self, i: usize) -> u8 {
        match self.buf.get(i) {
            Some(b) => *b,
            None => self.chunk[i - self.buf.len()],
        }
    }

    /// The peer's handshake once 68 bytes arrived; `None` if not yet (or if
    /// already taken, or the config expects none).
    pub fn take_handshake(&mut self) -> Option<Result<Handshake, WireError>> {
        if !self.handshake_pending || self.dead || self.buffered() < Handshake::LEN {
            return None;
        }
        // Once per connection: the copy is not worth avoiding.
        self.gather();
        self.handshake_pending = false;
        let r = Handshake::parse(&self.buf[..Handshake::LEN]);
        if r.is_err() {
            self.kill();
        } else {
            self.buf.advance(Handshake::LEN);
            self.consumed += Handshake::LEN as u64;
        }
        Some(r.map_err(|mut e| {
            e.offset += self.consumed;
            e
        }))
    }

    /// A fatal error: nothing more is decoded, and nothing kept.
    fn kill(&mut self) {
        self.dead = true;
        self.buf.clear();
        self.chunk = Bytes::new();
    }

    fn fail(&mut self, kind: WireErrorKind) -> Option<Result<Message, WireError>> {
        self.kill();
        Some(Err(WireError::new(self.consumed, kind)))
    }

    /// Takes the first `total` bytes of the stream (all buffered): a slice
    /// of `chunk` when they lie inside it, else gathered into `buf`.
    fn take_frame(&mut self, total: usize) -> Bytes {
        if self.buf.is_empty() {
            return self.chunk.split_to(total);
        }
        let need = total.saturating_sub(self.buf.len());
        if need > 0 {
            self.buf.extend_from_slice(&self.chunk[..need]);
            self.chunk.advance(need);
        }
        self.buf.split_to(total).freeze()
    }

    /// The next complete message, an error, or `None` when more bytes are
    /// needed (or the handshake has not been taken yet, or after a fatal
    /// error).
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Option<Result<Message, WireError>> {
        if self.dead || self.handshake_pending || self.buffered() < 4 {
            return self.keep_partial();
        }
        let len = u32::from_be_bytes([self.at(0), self.at(1), self.at(2), self.at(3)]);
        if len == 0 {
            self.take_frame(4);
            self.consumed += 4;
            return Some(Ok(Message::KeepAlive));
        }
        let cfg = self.config;
        if len > cfg.message_len_max() {
            return self.fail(WireErrorKind::TooLong { id: None, len, max: cfg.message_len_max() });
        }
        if self.buffered() < 5 {
            return self.keep_partial();
        }
        let ident = self.at(4);
        let fixed = |l: u32| if len == l { None } else { Some(l) };
        let bad_fixed = match ident {
            id::CHOKE | id::UNCHOKE | id::INTERESTED | id::NOT_INTERESTED | id::HAVE_ALL | id::HAVE_NONE => fixed(1),
            id::HAVE | id::SUGGEST | id::ALLOWED_FAST => fixed(5),
            id::REQUEST | id::CANCEL | id::REJECT => fixed(13),
            id::PORT => fixed(3),
            _ => None,
        };
        if bad_fixed.is_some() {
            return self.fail(WireErrorKind::BadLength { id: ident, len });
        }
        let max = match ident {
            id::PIECE => Some(9 + cfg.block_len_max),
            id::BITFIELD => Some(1 + cfg.bitfield_bytes_max()),
            id::EXTENDED => Some(2 + cfg.extended_len_max),
            _ => None,
        };
        if let Some(max) = max {
            if len > max {
                return self.fail(WireErrorKind::TooLong { id: Some(ident), len, max });
            }
        }
        if ident == id::PIECE && len < 9 || ident == id::EXTENDED && len < 2 {
            return self.fail(WireErrorKind::BadLength { id: ident, len });
        }
        let total = 4 + len as usize;
        if self.buffered() < total {
            // The message is cut by the end of the chunk: its start moves
            // to `buf`, with room for the rest, which is copied after it.
            // Not for a piece's bare header: its payload may come as a
            // chunk of its own (see below), and then the room goes unused.
            if !(ident == id::PIECE && self.buffered() <= PIECE_HEADER_LEN) {
                self.buf.reserve(total - self.buf.len());
            }
            return self.keep_partial();
        }
        if ident == id::PIECE && self.buf.len() == PIECE_HEADER_LEN {
            // The header was fed apart from its payload, which starts the
            // chunk: a reader that puts each block's payload in a buffer
            // of its own (aligned for a direct write) feeds it so. The
            // payload is sliced out of that chunk, not copied behind the
            // header.
            let u32_at =
                |i: usize| u32::from_be_bytes([self.buf[i], self.buf[i + 1], self.buf[i + 2], self.buf[i + 3]]);
            let (index, begin) = (u32_at(5), u32_at(9));
            self.buf.clear();
            let data = self.chunk.split_to(total - PIECE_HEADER_LEN);
            self.consumed += total as u64;
            return Some(Ok(Message::Piece { index, begin, data }));
        }
        let start = self.consumed;
        let mut frame = self.take_frame(total);
        self.consumed += total as u64;
        frame.advance(5);
        let u32_at = |f: &Bytes, i: usize| u32::from_be_bytes([f[i], f[i + 1], f[i + 2], f[i + 3]]);
        let block = |f: &Bytes| BlockRef { index: u32_at(f, 0), begin: u32_at(f, 4), length: u32_at(f, 8) };
        let msg = match ident {
            id::CHOKE => Message::Choke,
            id::UNCHOKE => Message::Unchoke,
            id::INTERESTED => Message::Interested,
            id::NOT_INTERESTED => Message::NotInterested,
            id::HAVE => Message::Have(u32_at(&frame, 0)),
            id::BITFIELD => {
                if cfg.piece_count > 0 {
                    let expected = cfg.piece_count.div_ceil(8);
                    if frame.len() as u32 != expected {
                        self.kill();
                        return Some(Err(WireError::new(
                            start,
                            WireErrorKind::BadBitfield { expected, found: frame.len() as u32 },
                        )));
                    }
                    let spare = expected * 8 - cfg.piece_count;
                    if spare > 0 {
                        let last = frame[frame.len() - 1];
                        if last & ((1u8 << spare) - 1) != 0 {
                            self.kill();
                            return Some(Err(WireError::new(start, WireErrorKind::BitfieldSpareBits)));
                        }
                    }
                }
                Message::Bitfield(frame)
            }
            id::REQUEST => Message::Request(block(&frame)),
            id::PIECE => {
                let index = u32_at(&frame, 0);
                let begin = u32_at(&frame, 4);
                frame.advance(8);
                Message::Piece { index, begin, data: frame }
            }
            id::CANCEL => Message::Cancel(block(&frame)),
            id::PORT => Message::Port(u16::from_be_bytes([frame[0], frame[1]])),
            id::SUGGEST => Message::Suggest(u32_at(&frame, 0)),
            id::HAVE_ALL => Message::HaveAll,
            id::HAVE_NONE => Message::HaveNone,
            id::REJECT => Message::Reject(block(&frame)),
            id::ALLOWED_FAST => Message::AllowedFast(u32_at(&frame, 0)),
            id::EXTENDED => {
                let eid = frame[0];
                frame.advance(1);
                Message::Extended { id: eid, payload: frame }
            }
            other => {
                return Some(Err(WireError::new(start, WireErrorKind::UnknownId(other))));
            }
        };
        Some(Ok(msg))
    }

    /// No complete message is buffered: what is left of the chunk (the
    /// start of a message) moves to `buf`, so the caller's next chunk can
    /// follow it. Returns `None`.
    fn keep_partial(&mut self) -> Option<Result<Message, WireError>> {
        self.gather();
        None
    }
}

/// Most entries accepted in an extension handshake's `m` dictionary.
pub const EXT_NAMES_MAX: usize = 128;

/// The BEP 10 extension handshake (extended message id 0).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExtHandshake {
    /// Extension name -> the id the sender wants to receive it on (0 means
    /// the sender disables it).
    pub m: BTreeMap<String, u8>,
    /// Client name and version.
    pub v: Option<String>,
    /// Size of the info dictionary in bytes (BEP 9).
    pub metadata_size: Option<u64>,
    /// How many outstanding requests the sender accepts.
    pub reqq: Option<u32>,
    /// The sender's listen port.
    pub p: Option<u16>,
    /// Our address as the sender sees it (4 or 16 bytes).
    pub yourip: Option<Vec<u8>>,
}

impl ExtHandshake {
    /// The bencoded payload (without the extended-message framing).
    pub fn encode(&self) -> Vec<u8> {
        let mut m = Value::dict();
        for (k, v) in &self.m {
            m = m.insert(k, Value::Int(*v as i64));
        }
        let mut d = Value::dict().insert("m", m);
        if let Some(v) = &self.v {
            d = d.insert("v", Value::bytes(v.as_bytes()));
        }
        if let Some(n) = self.metadata_size {
            d = d.insert("metadata_size", Value::Int(n.min(i64::MAX as u64) as i64));
        }
        if let Some(n) = self.reqq {
            d = d.insert("reqq", Value::Int(n as i64));
        }
        if let Some(n) = self.p {
            d = d.insert("p", Value::Int(n as i64));
        }
        if let Some(ip) = &self.yourip {
            d = d.insert("yourip", Value::bytes(ip.clone()));
        }
        d.to_bytes()
    }

    /// The whole framed message: `Extended { id: 0, payload }`.
    pub fn to_message(&self) -> Message {
        Message::Extended { id: 0, payload: Bytes::from(self.encode()) }
    }

    /// Parses a handshake payload. Unknown keys are ignored and fields with
    /// wrong types or out-of-range values are treated as absent (peers vary);
    /// only non-bencode, a non-dictionary or an oversized `m` is an error.
    pub fn parse(payload: &[u8]) -> Result<ExtHandshake, WireError> {
        let limits = bencode::Limits { depth_max: 8, values_max: 4 * EXT_NAMES_MAX + 64, bytes_max: 1 << 20 };
        let bad = |s: String| WireError::new(0, WireErrorKind::BadExtHandshake(s));
        let v = bencode::decode_with(payload, limits).map_err(|e| bad(e.to_string()))?;
        if v.as_dict().is_none() {
            return Err(bad("not a dictionary".into()));
        }
        let mut h = ExtHandshake::default();
        if let Some(m) = v.get("m").and_then(Value::as_dict) {
            if m.len() > EXT_NAMES_MAX {
                return Err(bad(format!("{} extensions", m.len())));
            }
            for (k, val) in m {
                if let (Ok(name), Some(i)) = (std::str::from_utf8(k), val.as_int()) {
                    if let Ok(i) = u8::try_from(i) {
                        h.m.insert(name.to_owned(), i);
                    }
                }
            }
        }
        h.v = v.get("v").and_then(Value::as_str).map(str::to_owned);
        h.metadata_size = v.get("metadata_size").and_then(Value::as_int).and_then(|n| u64::try_from(n).ok());
        h.reqq = v.get("reqq").and_then(Value::as_int).and_then(|n| u32::try_from(n).ok());
        h.p = v.get("p").and_then(Value::as_int).and_then(|n| u16::try_from(n).ok());
        h.yourip =
            v.get("yourip").and_then(Value::as_bytes).filter(|b| b.len() == 4 || b.len() == 16).map(<[u8]>::to_vec);
        Ok(h)
    }
}
