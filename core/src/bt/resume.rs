//! Fast resume, the pure part: what a session keeps of each torrent
//! between runs ([`TorrentRecord`]), its stored form ([`encode`],
//! [`decode`]), and which pieces a restart may trust without hashing them
//! again ([`plan`]).
//!
//! A record holds the verified pieces and, per file, its size and
//! modification time as they were when those pieces were recorded
//! ([`FileStamp`]). At a restart the adapter stamps the files again: a
//! file whose stamp is unchanged still holds what was verified, so its
//! pieces are trusted; every piece overlapping a file whose size or mtime
//! differs is hashed again, so a file edited, truncated or replaced while
//! the session was down is found and repaired. The stamps must be taken
//! after the recorded pieces reached the disk (record what verified, then
//! stamp); a write after the stamp changes the mtime, which only costs a
//! recheck.
//!
//! The stored form is one version byte ([`RECORD_VERSION`]), an 8-byte
//! checksum (SHA-1 over the infohash and the body, so a record cannot
//! turn up under another torrent and a flipped bit in `have` cannot make
//! a missing piece trusted), then the postcard body. [`decode`] never
//! panics on any bytes; a record it refuses is to be logged and skipped.

use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

use super::bitfield::Bitfield;
use super::metainfo::Metainfo;

/// The format of [`encode`]'s output, its first byte. A later format gets
/// a new number and [`decode`] keeps reading this one.
pub const RECORD_VERSION: u8 = 1;

/// Largest stored record [`decode`] reads: a .torrent at the parser's
/// default limit (see [`super::metainfo::Limits`]) plus its bitfield and
/// stamps fits with room to spare.
pub const RECORD_BYTES_MAX: usize = 64 << 20;

/// Bytes of checksum after the version byte.
const SUM_BYTES: usize = 8;

/// A file as it was on disk: size and modification time. A missing file
/// (and a BEP 47 padding file or symlink, which hold no data) is
/// `FileStamp::default()`, size 0 and mtime 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStamp {
    /// Length in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch (negative
    /// before it).
    pub mtime_ns: i128,
}

/// Everything a session keeps of one torrent between runs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TorrentRecord {
    /// The .torrent bytes (`None` while a magnet's metadata is not fetched).
    pub torrent: Option<Vec<u8>>,
    /// The magnet link or infohash it was added by.
    pub magnet: Option<String>,
    /// When it was added, milliseconds since the Unix epoch.
    pub added_at_ms: u64,
    /// Paused by the user.
    pub paused: bool,
    /// Download rate limit, bytes per second.
    pub download_limit: Option<u64>,
    /// Upload rate limit, bytes per second.
    pub upload_limit: Option<u64>,
    /// One per file: 0 skip, 1 normal, 2 high (empty = all normal).
    pub file_priorities: Vec<u8>,
    /// Its place in the download queue.
    pub queue_position: u32,
    /// Verified pieces, as a wire bitfield (MSB first).
    pub have: Vec<u8>,
    /// One per file of the torrent, as on disk when `have` was written.
    pub stamps: Vec<FileStamp>,
}

/// Why [`decode`] refused a stored record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordError {
    /// No bytes at all.
    Empty,
    /// Longer than [`RECORD_BYTES_MAX`].
    TooLarge(usize),
    /// A format this build does not know (written by a newer one).
    UnknownVersion(u8),
    /// Too short for its header.
    Truncated,
    /// The checksum does not match: damaged, or stored under another key.
    Checksum,
    /// The body does not decode.
    Malformed(String),
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordError::Empty => write!(f, "empty record"),
            RecordError::TooLarge(n) => write!(f, "record of {n} bytes, over the {RECORD_BYTES_MAX}-byte limit"),
            RecordError::UnknownVersion(v) => {
                write!(f, "record format {v} is unknown (this build reads {RECORD_VERSION}): written by a newer build?")
            }
            RecordError::Truncated => write!(f, "record shorter than its header"),
            RecordError::Checksum => write!(f, "record fails its checksum (damaged, or under another infohash)"),
            RecordError::Malformed(why) => write!(f, "record does not decode: {why}"),
        }
    }
}

impl std::error::Error for RecordError {}

fn checksum(key: &[u8], body: &[u8]) -> [u8; SUM_BYTES] {
    let mut h = Sha1::new();
    h.update(b"rumor torrent record");
    h.update((key.len() as u64).to_be_bytes());
    h.update(key);
    h.update(body);
    let d = h.finalize();
    let mut out = [0u8; SUM_BYTES];
    out.copy_from_slice(&d[..SUM_BYTES]);
    out
}

/// The stored form of `record`, kept under `info_hash`.
pub fn encode(info_hash: &[u8; 20], record: &TorrentRecord) -> Vec<u8> {
    let body = postcard::to_stdvec(record).expect("postcard encodes plain data");
    let mut out = Vec::with_capacity(1 + SUM_BYTES + body.len());
    out.push(RECORD_VERSION);
    out.extend_from_slice(&checksum(info_hash, &body));
    out.extend_from_slice(&body);
    out
}

/// The record stored under `key` (the infohash), if `bytes` is one this
/// build wrote and it is intact. Never panics.
pub fn decode(key: &[u8], bytes: &[u8]) -> Result<TorrentRecord, RecordError> {
    if bytes.len() > RECORD_BYTES_MAX {
        return Err(RecordError::TooLarge(bytes.len()));
    }
    let (&version, rest) = bytes.split_first().ok_or(RecordError::Empty)?;
    if version != RECORD_VERSION {
        return Err(RecordError::UnknownVersion(version));
    }
    let (sum, body) = rest.split_at_checked(SUM_BYTES).ok_or(RecordError::Truncated)?;
    if sum != checksum(key, body) {
        return Err(RecordError::Checksum);
    }
    decode_body(body)
}

/// The body of a version-[`RECORD_VERSION`] record (what follows the
/// version byte and checksum), with no checksum to pass: [`decode`]'s last
/// step, public so fuzzing and tests reach it with any bytes. Never panics.
pub fn decode_body(body: &[u8]) -> Result<TorrentRecord, RecordError> {
    let (record, tail) =
        postcard::take_from_bytes::<TorrentRecord>(body).map_err(|e| RecordError::Malformed(e.to_string()))?;
    if !tail.is_empty() {
        return Err(RecordError::Malformed(format!("{} bytes after the record", tail.len())));
    }
    Ok(record)
}

/// Which pieces a restart trusts and which it hashes again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResumePlan {
    /// Recorded as verified, in files unchanged since: have them without
    /// hashing.
    pub trusted: Bitfield,
    /// Every piece overlapping a changed file, in increasing order: hash
    /// them (those that match are had too; the rest are downloaded).
    pub recheck: Vec<u32>,
    /// The files whose stamp differs (all of them when the record does not
    /// fit the torrent), in increasing order.
    pub changed_files: Vec<usize>,
}

/// The plan for `meta` from its `record` and the files' stamps `now` (one
/// per file of `meta`, as [`TorrentRecord::stamps`]). A file whose stamp
/// differs from the recorded one, or has none, is changed, and every piece
/// it overlaps is rechecked and not trusted (also those it shares with
/// unchanged files). A record that does not fit the torrent (a bitfield of
/// another length, another number of stamps) changes every file: nothing
/// is trusted, every piece is rechecked. O(files + pieces).
pub fn plan(meta: &Metainfo, record: &TorrentRecord, now: &[FileStamp]) -> ResumePlan {
    let n = meta.piece_count();
    let files = &meta.files;
    let have = Bitfield::from_wire(&record.have, n).filter(|_| record.stamps.len() == files.len());
    let changed_files: Vec<usize> = match &have {
        Some(_) => (0..files.len()).filter(|&i| now.get(i) != Some(&record.stamps[i])).collect(),
        None => (0..files.len()).collect(),
    };
    let have = have.unwrap_or_else(|| Bitfield::new(n));
    let mut dirty = Bitfield::new(n);
    if changed_files.len() == files.len() && !files.is_empty() {
        // Everything changed, including a record that does not fit: every
        // piece, whatever the geometry says.
        for p in 0..n {
            dirty.set(p);
        }
    } else {
        for &i in &changed_files {
            let f = &files[i];
            if f.length == 0 || meta.piece_length == 0 {
                continue;
            }
            let first = f.offset / meta.piece_length;
            let last = (f.offset.saturating_add(f.length) - 1) / meta.piece_length;
            for p in first..=last.min(u64::from(n.saturating_sub(1))) {
                dirty.set(p as u32);
            }
        }
    }
    let mut trusted = Bitfield::new(n);
    for p in have.iter_ones() {
        if !dirty.get(p) {
            trusted.set(p);
        }
    }
    ResumePlan { trusted, recheck: dirty.iter_ones().collect(), changed_files }
}
