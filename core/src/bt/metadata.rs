//! BEP 9 metadata exchange (`ut_metadata`): fetch the `info` dictionary
//! from peers when all we have is an infohash (a magnet link or the
//! overlay's providers record).
//!
//! Messages travel as [`super::wire::Message::Extended`] with the id the
//! peer announced for `ut_metadata` in its [`super::wire::ExtHandshake`].
//! Use [`MetadataMessage`] to build and parse their payloads and a
//! [`MetadataAssembler`] to collect pieces and verify the result against the
//! infohash.

use std::fmt;

use bytes::Bytes;

use super::bencode::{self, Value};
use super::metainfo::{InfoHash, Limits, Metainfo, MetainfoError};

/// Size of every metadata piece but the last.
pub const METADATA_PIECE_LEN: usize = 16 * 1024;

/// Largest metadata accepted by default (BEP 9 suggests clients cap it).
pub const METADATA_SIZE_MAX: usize = 16 << 20;

/// One `ut_metadata` message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetadataMessage {
    /// msg_type 0: asks for a piece.
    Request {
        /// Piece index.
        piece: u32,
    },
    /// msg_type 1: a piece of the info dictionary.
    Data {
        /// Piece index.
        piece: u32,
        /// Size of the whole info dictionary.
        total_size: u64,
        /// The piece's bytes.
        data: Bytes,
    },
    /// msg_type 2: the peer won't send this piece.
    Reject {
        /// Piece index.
        piece: u32,
    },
}

/// Why a `ut_metadata` message or assembly was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetadataError {
    /// The payload is malformed; the text says how.
    Malformed(String),
    /// The announced size is 0 or above the limit.
    BadSize(u64),
    /// A piece index out of range or a piece of the wrong length.
    BadPiece(u32),
    /// All pieces arrived but their SHA-1 is not the infohash; the
    /// assembler was reset.
    HashMismatch,
    /// The pieces hash right but the dictionary is not a valid torrent.
    Invalid(MetainfoError),
}

impl fmt::Display for MetadataError {
    /// A sentence for a log or the user.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetadataError::Malformed(why) => write!(f, "a malformed ut_metadata message: {why}"),
            MetadataError::BadSize(n) => write!(f, "a metadata size of {n} bytes, which is zero or over the limit"),
            MetadataError::BadPiece(i) => write!(f, "metadata piece {i} is out of range or of the wrong length"),
            MetadataError::HashMismatch => {
                f.write_str("the metadata received does not hash to the infohash (started over)")
            }
            MetadataError::Invalid(e) => write!(f, "the metadata hashes right but is not a valid torrent: {e}"),
        }
    }
}

impl std::error::Error for MetadataError {}

impl MetadataMessage {
    /// The extended-message payload.
    pub fn encode(&self) -> Vec<u8> {
        let (t, piece) = match self {
            MetadataMessage::Request { piece } => (0, piece),
            MetadataMessage::Data { piece, .. } => (1, piece),
            MetadataMessage::Reject { piece } => (2, piece),
        };
        let mut d = Value::dict().insert("msg_type", Value::Int(t)).insert("piece", Value::Int(*piece as i64));
        if let MetadataMessage::Data { total_size, data, .. } = self {
            d = d.insert("total_size", Value::Int((*total_size).min(i64::MAX as u64) as i64));
            let mut out = d.to_bytes();
            out.extend_from_slice(data);
            return out;
        }
        d.to_bytes()
    }

    /// Parses an extended-message payload. For data, the piece bytes share
    /// `payload` (no copy) and may be at most [`METADATA_PIECE_LEN`].
    pub fn parse(payload: &Bytes) -> Result<MetadataMessage, MetadataError> {
        let limits = bencode::Limits { depth_max: 4, values_max: 64, bytes_max: payload.len() };
        let (v, used) =
            bencode::decode_prefix_with(payload, limits).map_err(|e| MetadataError::Malformed(e.to_string()))?;
        let int = |k: &str| v.get(k).and_then(Value::as_int);
        let piece =
            int("piece").and_then(|p| u32::try_from(p).ok()).ok_or_else(|| MetadataError::Malformed("piece".into()))?;
        match int("msg_type") {
            Some(0) => Ok(MetadataMessage::Request { piece }),
            Some(2) => Ok(MetadataMessage::Reject { piece }),
            Some(1) => {
                let total_size = int("total_size")
                    .and_then(|s| u64::try_from(s).ok())
                    .ok_or_else(|| MetadataError::Malformed("total_size".into()))?;
                let data = payload.slice(used..);
                if data.len() > METADATA_PIECE_LEN {
                    return Err(MetadataError::BadPiece(piece));
                }
                Ok(MetadataMessage::Data { piece, total_size, data })
            }
            _ => Err(MetadataError::Malformed("msg_type".into())),
        }
    }
}

/// Collects metadata pieces for one infohash and checks the result.
#[derive(Clone, Debug)]
pub struct MetadataAssembler {
    info_hash: InfoHash,
    size: usize,
    pieces: Vec<Option<Bytes>>,
    received: usize,
}

impl MetadataAssembler {
    /// An assembler for `size` bytes (from a peer's `metadata_size`),
    /// refused if 0 or above `size_max`.
    pub fn new(info_hash: InfoHash, size: u64, size_max: usize) -> Result<Self, MetadataError> {
        if size == 0 || size > size_max as u64 {
            return Err(MetadataError::BadSize(size));
        }
        let n = (size as usize).div_ceil(METADATA_PIECE_LEN);
        Ok(MetadataAssembler { info_hash, size: size as usize, pieces: vec![None; n], received: 0 })
    }

    /// Total size in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Number of pieces.
    pub fn piece_count(&self) -> u32 {
        self.pieces.len() as u32
    }

    /// Pieces still missing, in order: request these.
    pub fn missing(&self) -> impl Iterator<Item = u32> + '_ {
        self.pieces.iter().enumerate().filter(|(_, p)| p.is_none()).map(|(i, _)| i as u32)
    }

    fn piece_len(&self, piece: u32) -> usize {
        let start = piece as usize * METADATA_PIECE_LEN;
        (self.size - start).min(METADATA_PIECE_LEN)
    }

    /// Stores a piece. Returns the checked torrent once every piece is in;
    /// on a hash mismatch everything is dropped (ask other peers).
    pub fn add(&mut self, piece: u32, data: Bytes, limits: &Limits) -> Result<Option<Metainfo>, MetadataError> {
        if piece as usize >= self.pieces.len() || data.len() != self.piece_len(piece) {
            return Err(MetadataError::BadPiece(piece));
        }
        let slot = &mut self.pieces[piece as usize];
        if slot.is_none() {
            self.received += 1;
        }
        *slot = Some(data);
        if self.received < self.pieces.len() {
            return Ok(None);
        }
        let mut all = Vec::with_capacity(self.size);
        for p in &self.pieces {
            all.extend_from_slice(p.as_ref().expect("all received"));
        }
        if InfoHash::of_info_bytes(&all) != self.info_hash {
            self.pieces.iter_mut().for_each(|p| *p = None);
            self.received = 0;
            return Err(MetadataError::HashMismatch);
        }
        Metainfo::from_info_bytes(&all, limits).map(Some).map_err(MetadataError::Invalid)
    }
}
