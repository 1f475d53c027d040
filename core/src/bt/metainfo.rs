//! Torrent metainfo (BEP 3, BEP 12 announce tiers): a checked parser that
//! refuses hostile files, the infohash over the exact `info` bytes, a
//! deterministic builder, an incremental piece hasher and the piece/file
//! geometry.
//!
//! Parse with [`Metainfo::parse`] (a whole .torrent) or
//! [`Metainfo::from_info_bytes`] (an `info` dictionary fetched by BEP 9).
//! Build with [`TorrentBuilder`] after feeding the data through a
//! [`PieceHasher`]. Map pieces and blocks to files with [`FileLayout`].

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use sha1::{Digest, Sha1};

use super::bencode::{self, offset_in, BencodeError, Value};

/// A 20-byte SHA-1 digest: an infohash or a piece hash.
pub type Sha1Hash = [u8; 20];

/// The identity of a torrent: SHA-1 of the bencoded `info` dictionary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct InfoHash(pub Sha1Hash);

impl InfoHash {
    /// The infohash of raw `info` dictionary bytes, exactly as they are.
    pub fn of_info_bytes(info: &[u8]) -> InfoHash {
        InfoHash(Sha1::digest(info).into())
    }

    /// Lower-case hex, as in magnet links and logs.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// Parses 40 hex digits (either case); `None` otherwise.
    pub fn from_hex(s: &str) -> Option<InfoHash> {
        let b = s.as_bytes();
        if b.len() != 40 {
            return None;
        }
        let mut out = [0u8; 20];
        for (i, pair) in b.chunks(2).enumerate() {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            out[i] = (hi * 16 + lo) as u8;
        }
        Some(InfoHash(out))
    }
}

impl fmt::Display for InfoHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

fn hex(b: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push(D[(x >> 4) as usize] as char);
        s.push(D[(x & 15) as usize] as char);
    }
    s
}

/// Limits a torrent must respect to be accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest .torrent accepted, in bytes.
    pub torrent_bytes_max: usize,
    /// Largest piece length accepted (must also be > 0).
    pub piece_length_max: u64,
    /// Largest total content length accepted.
    pub total_length_max: u64,
    /// Most files in a multi-file torrent.
    pub files_max: usize,
    /// Most components in one file path.
    pub path_components_max: usize,
    /// Longest single path component, in bytes.
    pub path_component_bytes_max: usize,
    /// Deepest bencode nesting accepted.
    pub depth_max: usize,
    /// Most announce URLs over all tiers.
    pub trackers_max: usize,
}

impl Default for Limits {
    /// 16 MiB files, 64 MiB pieces, 16 TiB content, 100 000 files, paths of
    /// 64 components of 255 bytes, nesting 32, 200 trackers.
    fn default() -> Self {
        Limits {
            torrent_bytes_max: 16 << 20,
            piece_length_max: 64 << 20,
            total_length_max: 16 << 40,
            files_max: 100_000,
            path_components_max: 64,
            path_component_bytes_max: 255,
            depth_max: 32,
            trackers_max: 200,
        }
    }
}

/// Why a path component was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathProblem {
    /// The path has no components at all.
    NoComponents,
    /// A component is the empty string.
    Empty,
    /// A component is `.`.
    Dot,
    /// A component is `..` (would escape the download directory).
    DotDot,
    /// A component contains `/` or `\` (an absolute path or a hidden separator).
    Separator,
    /// A component contains a NUL byte.
    Nul,
    /// A component is not UTF-8.
    NotUtf8,
    /// A component is longer than [`Limits::path_component_bytes_max`].
    TooLong,
    /// More components than [`Limits::path_components_max`].
    TooManyComponents,
}

/// What is wrong with a torrent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetainfoErrorKind {
    /// The bytes are not valid bencode (or break a bencode limit).
    Bencode(BencodeError),
    /// The file is larger than [`Limits::torrent_bytes_max`].
    TooLarge,
    /// A required key is absent.
    Missing(&'static str),
    /// A key holds the wrong kind of value or an out-of-range number.
    Invalid(&'static str),
    /// A file name or path is unsafe.
    BadPath(PathProblem),
    /// `piece length` is zero or above [`Limits::piece_length_max`].
    BadPieceLength(i64),
    /// `pieces` is not a multiple of 20 bytes long.
    PiecesNotMultipleOf20(usize),
    /// The number of piece hashes does not cover the total length.
    PieceCountMismatch {
        /// Pieces needed by the total length and piece length.
        expected: u64,
        /// Piece hashes present.
        found: u64,
    },
    /// Content is empty.
    NoContent,
    /// Content is longer than [`Limits::total_length_max`].
    TotalTooLarge,
    /// More files than [`Limits::files_max`].
    TooManyFiles,
    /// Both `length` and `files` present, or neither.
    AmbiguousLayout,
    /// More trackers than [`Limits::trackers_max`].
    TooManyTrackers,
    /// Builder input: files are not in strictly sorted path order.
    UnsortedFiles,
}

/// A refused torrent: what and the byte offset (in the parsed input) of the
/// value or key where it was seen (0 when no better position is known).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetainfoError {
    /// Byte offset into the input.
    pub offset: usize,
    /// What is wrong.
    pub kind: MetainfoErrorKind,
}

impl fmt::Display for PathProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathProblem::NoComponents => "a file path with no components",
            PathProblem::Empty => "an empty path component",
            PathProblem::Dot => "a path component '.'",
            PathProblem::DotDot => "a path component '..', which would climb out of the download directory",
            PathProblem::Separator => "a path component containing '/' or '\\' (an absolute or hidden path)",
            PathProblem::Nul => "a path component containing a NUL byte",
            PathProblem::NotUtf8 => "a path component that is not UTF-8",
            PathProblem::TooLong => "a path component longer than the limit",
            PathProblem::TooManyComponents => "a file path with more components than the limit",
        })
    }
}

impl fmt::Display for MetainfoError {
    /// A sentence for a person that says what is wrong and where, e.g. "the
    /// info dictionary has no 'pieces' key (at byte 11)".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use MetainfoErrorKind as K;
        let at = self.offset;
        match &self.kind {
            // The inner offset is relative to the value it decoded; ours is
            // into the whole input.
            K::Bencode(e) => write!(f, "not a torrent file: bad bencode at byte {at}: {}", e.kind),
            K::TooLarge => write!(f, "the torrent file is larger than the limit of {at} bytes"),
            K::Missing("info") => f.write_str("not a torrent file: it has no 'info' dictionary"),
            K::Missing(key @ ("name" | "piece length" | "pieces")) => {
                write!(f, "the info dictionary (at byte {at}) has no '{key}' key")
            }
            K::Missing(key) => write!(f, "a file entry (at byte {at}) has no '{key}' key"),
            K::Invalid("torrent is not a dictionary") => {
                write!(f, "not a torrent file: expected a dictionary at byte {at}")
            }
            K::Invalid(what) => {
                let wrong = match *what {
                    "info is not a dictionary" => "'info' is not a dictionary",
                    "length" => "a 'length' is not a non-negative integer",
                    "name" => "'name' is not a byte string",
                    "piece length" => "'piece length' is not an integer",
                    "pieces" => "'pieces' is not a byte string",
                    "announce-list" => "'announce-list' is not a list",
                    "announce-list tier" => "a tier of 'announce-list' is not a list",
                    "files" => "'files' is not a list",
                    "files entry" => "an entry of 'files' is not a dictionary",
                    "path" => "a file's 'path' is not a list",
                    "path component" => "a file's path component is not a byte string",
                    other => other,
                };
                write!(f, "{wrong} (at byte {at})")
            }
            K::BadPath(p) => write!(f, "unsafe file name: {p} (at byte {at})"),
            K::BadPieceLength(n) => write!(f, "the piece length {n} is zero, negative or over the limit (at byte {at})"),
            K::PiecesNotMultipleOf20(n) => {
                write!(f, "'pieces' is {n} bytes long, not a whole number of 20-byte hashes (at byte {at})")
            }
            K::PieceCountMismatch { expected, found } => write!(
                f,
                "the torrent has {found} piece hashes but its length needs {expected} (at byte {at})"
            ),
            K::NoContent => write!(f, "the torrent's content is empty (info dictionary at byte {at})"),
            K::TotalTooLarge => write!(f, "the content is larger than the limit (at byte {at})"),
            K::TooManyFiles => write!(f, "the torrent lists more files than the limit (at byte {at})"),
            K::AmbiguousLayout => write!(
                f,
                "the info dictionary (at byte {at}) needs either 'length' (one file) or 'files' (several), not both or neither"
            ),
            K::TooManyTrackers => write!(f, "the torrent lists more trackers than the limit (at byte {at})"),
            K::UnsortedFiles => f.write_str("the files are not in sorted path order"),
        }
    }
}

impl std::error::Error for MetainfoError {}

fn err(offset: usize, kind: MetainfoErrorKind) -> MetainfoError {
    MetainfoError { offset, kind }
}

/// One file of the torrent's content, in torrent order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileEntry {
    /// Path components under the torrent's directory (for a single-file
    /// torrent: just the name). Every component is checked safe.
    pub path: Vec<String>,
    /// Length in bytes.
    pub length: u64,
    /// Offset of the file's first byte in the concatenated content.
    pub offset: u64,
    /// BEP 47 padding file (`attr` contains `p`): its bytes are zeros that
    /// only align the next file to a piece; don't create it on disk.
    pub padding: bool,
    /// BEP 47 executable flag (`attr` contains `x`).
    pub executable: bool,
}

/// A checked torrent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metainfo {
    /// SHA-1 of the exact `info` bytes.
    pub info_hash: InfoHash,
    /// The exact `info` dictionary bytes (served to peers by BEP 9).
    pub info_bytes: Vec<u8>,
    /// The suggested name (file name or top directory), checked safe.
    pub name: String,
    /// Bytes per piece (the last piece may be shorter).
    pub piece_length: u64,
    /// One SHA-1 per piece.
    pub pieces: Vec<Sha1Hash>,
    /// The files; a single-file torrent has one entry whose path is `[name]`.
    pub files: Vec<FileEntry>,
    /// True for a multi-file torrent (content goes under directory `name`).
    pub multi_file: bool,
    /// Sum of file lengths.
    pub total_length: u64,
    /// The `announce` URL, if any.
    pub announce: Option<String>,
    /// BEP 12 tiers; when the torrent has no `announce-list`, one tier
    /// holding `announce` (if any).
    pub announce_tiers: Vec<Vec<String>>,
    /// BEP 27 private flag.
    pub private: bool,
    /// `comment`, if UTF-8.
    pub comment: Option<String>,
    /// `created by`, if UTF-8.
    pub created_by: Option<String>,
    /// `creation date` (seconds since the Unix epoch).
    pub creation_date: Option<i64>,
}

fn key_off(buf: &[u8], d: &BTreeMap<Cow<'_, [u8]>, Value<'_>>, key: &str) -> usize {
    d.get_key_value(key.as_bytes())
        .map(|(k, _)| match k {
            Cow::Borrowed(b) => offset_in(buf, b),
            Cow::Owned(_) => 0,
        })
        .unwrap_or(0)
}

/// Checks one path component; use on any name that will become a file name.
pub fn check_component(c: &[u8], limits: &Limits) -> Result<String, PathProblem> {
    if c.is_empty() {
        return Err(PathProblem::Empty);
    }
    if c == b"." {
        return Err(PathProblem::Dot);
    }
    if c == b".." {
        return Err(PathProblem::DotDot);
    }
    if c.len() > limits.path_component_bytes_max {
        return Err(PathProblem::TooLong);
    }
    if c.contains(&0) {
        return Err(PathProblem::Nul);
    }
    if c.iter().any(|&b| b == b'/' || b == b'\\') {
        return Err(PathProblem::Separator);
    }
    String::from_utf8(c.to_vec()).map_err(|_| PathProblem::NotUtf8)
}

fn length_of(buf: &[u8], d: &BTreeMap<Cow<'_, [u8]>, Value<'_>>, base: usize) -> Result<u64, MetainfoError> {
    let off = base + key_off(buf, d, "length");
    match d.get(&b"length"[..]) {
        None => Err(err(off, MetainfoErrorKind::Missing("length"))),
        Some(Value::Int(n)) if *n >= 0 => Ok(*n as u64),
        Some(_) => Err(err(off, MetainfoErrorKind::Invalid("length"))),
    }
}

/// Whether the BEP 47 `attr` string of a file dictionary holds `flag`.
/// Symlink (`l`) entries are not followed: their data is treated as a file.
fn attr_has(d: &BTreeMap<Cow<'_, [u8]>, Value<'_>>, flag: u8) -> bool {
    d.get(&b"attr"[..]).and_then(Value::as_bytes).is_some_and(|a| a.len() <= 16 && a.contains(&flag))
}

impl Metainfo {
    /// Parses and checks a whole .torrent file under default [`Limits`].
    pub fn parse(buf: &[u8]) -> Result<Metainfo, MetainfoError> {
        Self::parse_with(buf, &Limits::default())
    }

    /// Parses and checks a whole .torrent file under `limits`.
    pub fn parse_with(buf: &[u8], limits: &Limits) -> Result<Metainfo, MetainfoError> {
        if buf.len() > limits.torrent_bytes_max {
            return Err(err(limits.torrent_bytes_max, MetainfoErrorKind::TooLarge));
        }
        let blimits = bencode::Limits {
            depth_max: limits.depth_max,
            bytes_max: limits.torrent_bytes_max,
            ..bencode::Limits::default()
        };
        let top = bencode::decode_with(buf, blimits).map_err(|e| err(e.offset, MetainfoErrorKind::Bencode(e)))?;
        let d = top.as_dict().ok_or(err(0, MetainfoErrorKind::Invalid("torrent is not a dictionary")))?;
        let info_raw = info_span(buf)
            .or_else(|| bencode::top_level_value_span(buf, b"info", blimits))
            .filter(|raw| raw.first() == Some(&b'd'))
            .ok_or(err(0, MetainfoErrorKind::Missing("info")))?;
        let info_off = offset_in(buf, info_raw);
        let mut m = parse_info_value(info_raw, info_off, limits)?;

        let str_of = |k: &str| d.get(k.as_bytes()).and_then(Value::as_str).map(str::to_owned);
        m.announce = str_of("announce");
        m.comment = str_of("comment");
        m.created_by = str_of("created by");
        m.creation_date = d.get(&b"creation date"[..]).and_then(Value::as_int);
        let mut tiers: Vec<Vec<String>> = Vec::new();
        let mut count = 0usize;
        if let Some(list) = d.get(&b"announce-list"[..]) {
            let off = key_off(buf, d, "announce-list");
            let list = list.as_list().ok_or(err(off, MetainfoErrorKind::Invalid("announce-list")))?;
            for tier in list {
                let tier = tier.as_list().ok_or(err(off, MetainfoErrorKind::Invalid("announce-list tier")))?;
                let mut t = Vec::new();
                for url in tier {
                    count += 1;
                    if count > limits.trackers_max {
                        return Err(err(off, MetainfoErrorKind::TooManyTrackers));
                    }
                    // Skip non-UTF-8 URLs rather than refuse the torrent.
                    if let Some(u) = url.as_str() {
                        if !u.is_empty() && !t.iter().any(|x: &String| x == u) {
                            t.push(u.to_owned());
                        }
                    }
                }
                if !t.is_empty() {
                    tiers.push(t);
                }
            }
        }
        if tiers.is_empty() {
            if let Some(a) = &m.announce {
                tiers.push(vec![a.clone()]);
            }
        }
        m.announce_tiers = tiers;
        Ok(m)
    }

    /// Parses and checks a bare `info` dictionary (e.g. assembled from BEP 9
    /// metadata pieces); announce fields are left empty. Compare the result's
    /// `info_hash` with the one you asked for before trusting it.
    pub fn from_info_bytes(info: &[u8], limits: &Limits) -> Result<Metainfo, MetainfoError> {
        if info.len() > limits.torrent_bytes_max {
            return Err(err(limits.torrent_bytes_max, MetainfoErrorKind::TooLarge));
        }
        parse_info_value(info, 0, limits)
    }

    /// A .torrent file for this torrent: the `info` dictionary exactly as
    /// held (so the infohash does not change) with the trackers, comment,
    /// creator and date. What `rumor get MAGNET --save-torrent` writes.
    pub fn to_torrent_bytes(&self) -> Vec<u8> {
        fn bytes(out: &mut Vec<u8>, b: &[u8]) {
            out.extend_from_slice(b.len().to_string().as_bytes());
            out.push(b':');
            out.extend_from_slice(b);
        }
        let mut out = Vec::with_capacity(self.info_bytes.len() + 256);
        out.push(b'd');
        // Keys in the sorted order bencode requires.
        let first = self.announce.as_ref().or_else(|| self.announce_tiers.iter().flatten().next());
        if let Some(url) = first {
            bytes(&mut out, b"announce");
            bytes(&mut out, url.as_bytes());
        }
        if !self.announce_tiers.is_empty() {
            bytes(&mut out, b"announce-list");
            out.push(b'l');
            for tier in &self.announce_tiers {
                out.push(b'l');
                for url in tier {
                    bytes(&mut out, url.as_bytes());
                }
                out.push(b'e');
            }
            out.push(b'e');
        }
        if let Some(c) = &self.comment {
            bytes(&mut out, b"comment");
            bytes(&mut out, c.as_bytes());
        }
        if let Some(c) = &self.created_by {
            bytes(&mut out, b"created by");
            bytes(&mut out, c.as_bytes());
        }
        if let Some(d) = self.creation_date {
            bytes(&mut out, b"creation date");
            out.extend_from_slice(format!("i{d}e").as_bytes());
        }
        bytes(&mut out, b"info");
        out.extend_from_slice(&self.info_bytes);
        out.push(b'e');
        out
    }

    /// Number of pieces.
    pub fn piece_count(&self) -> u32 {
        self.pieces.len() as u32
    }

    /// The piece/file geometry of this torrent.
    pub fn layout(&self) -> FileLayout {
        FileLayout::new(self.piece_length, self.files.iter().map(|f| f.length).collect())
    }
}

/// Finds the exact bytes of the top-level `info` dictionary.
fn info_span(buf: &[u8]) -> Option<&[u8]> {
    use bendy::decoding::{Decoder, Object};
    let mut dec = Decoder::new(buf).with_max_depth(64);
    let obj = dec.next_object().ok()??;
    let Object::Dict(mut d) = obj else {
        return None;
    };
    while let Some((k, v)) = d.next_pair().ok()? {
        if k == b"info" {
            return match v {
                Object::Dict(info) => info.into_raw().ok(),
                _ => None,
            };
        }
    }
    None
}

fn parse_info_value(raw: &[u8], base: usize, limits: &Limits) -> Result<Metainfo, MetainfoError> {
    let blimits = bencode::Limits {
        depth_max: limits.depth_max,
        bytes_max: limits.torrent_bytes_max,
        ..bencode::Limits::default()
    };
    let v = bencode::decode_with(raw, blimits).map_err(|e| err(base + e.offset, MetainfoErrorKind::Bencode(e)))?;
    let d = v.as_dict().ok_or(err(base, MetainfoErrorKind::Invalid("info is not a dictionary")))?;
    let at = |k: &str| base + key_off(raw, d, k);

    let name_b = d
        .get(&b"name"[..])
        .ok_or(err(base, MetainfoErrorKind::Missing("name")))?
        .as_bytes()
        .ok_or(err(at("name"), MetainfoErrorKind::Invalid("name")))?;
    let name = check_component(name_b, limits).map_err(|p| err(at("name"), MetainfoErrorKind::BadPath(p)))?;

    let pl = match d.get(&b"piece length"[..]) {
        None => return Err(err(base, MetainfoErrorKind::Missing("piece length"))),
        Some(Value::Int(n)) => *n,
        Some(_) => return Err(err(at("piece length"), MetainfoErrorKind::Invalid("piece length"))),
    };
    if pl <= 0 || pl as u64 > limits.piece_length_max {
        return Err(err(at("piece length"), MetainfoErrorKind::BadPieceLength(pl)));
    }
    let piece_length = pl as u64;

    let pieces_b = d
        .get(&b"pieces"[..])
        .ok_or(err(base, MetainfoErrorKind::Missing("pieces")))?
        .as_bytes()
        .ok_or(err(at("pieces"), MetainfoErrorKind::Invalid("pieces")))?;
    if pieces_b.len() % 20 != 0 {
        return Err(err(at("pieces"), MetainfoErrorKind::PiecesNotMultipleOf20(pieces_b.len())));
    }

    let mut files = Vec::new();
    let multi_file;
    let mut total: u64 = 0;
    match (d.get(&b"length"[..]), d.get(&b"files"[..])) {
        (Some(_), None) => {
            multi_file = false;
            total = length_of(raw, d, base)?;
            files.push(FileEntry {
                path: vec![name.clone()],
                length: total,
                offset: 0,
                padding: false,
                executable: attr_has(d, b'x'),
            });
        }
        (None, Some(fl)) => {
            multi_file = true;
            let off = at("files");
            let fl = fl.as_list().ok_or(err(off, MetainfoErrorKind::Invalid("files")))?;
            if fl.len() > limits.files_max {
                return Err(err(off, MetainfoErrorKind::TooManyFiles));
            }
            for f in fl {
                let fd = f.as_dict().ok_or(err(off, MetainfoErrorKind::Invalid("files entry")))?;
                let length = length_of(raw, fd, base)?;
                let poff = base + key_off(raw, fd, "path");
                let comps = fd
                    .get(&b"path"[..])
                    .ok_or(err(off, MetainfoErrorKind::Missing("path")))?
                    .as_list()
                    .ok_or(err(poff, MetainfoErrorKind::Invalid("path")))?;
                if comps.is_empty() {
                    return Err(err(poff, MetainfoErrorKind::BadPath(PathProblem::NoComponents)));
                }
                if comps.len() > limits.path_components_max {
                    return Err(err(poff, MetainfoErrorKind::BadPath(PathProblem::TooManyComponents)));
                }
                let mut path = Vec::with_capacity(comps.len());
                for c in comps {
                    let cb = c.as_bytes().ok_or(err(poff, MetainfoErrorKind::Invalid("path component")))?;
                    let coff = base + offset_in(raw, cb);
                    path.push(check_component(cb, limits).map_err(|p| err(coff, MetainfoErrorKind::BadPath(p)))?);
                }
                files.push(FileEntry {
                    path,
                    length,
                    offset: total,
                    padding: attr_has(fd, b'p'),
                    executable: attr_has(fd, b'x'),
                });
                total = total
                    .checked_add(length)
                    .filter(|t| *t <= limits.total_length_max)
                    .ok_or(err(off, MetainfoErrorKind::TotalTooLarge))?;
            }
        }
        _ => return Err(err(base, MetainfoErrorKind::AmbiguousLayout)),
    }
    if total > limits.total_length_max {
        return Err(err(at("length"), MetainfoErrorKind::TotalTooLarge));
    }
    if total == 0 {
        return Err(err(base, MetainfoErrorKind::NoContent));
    }
    let expected = total.div_ceil(piece_length);
    let found = (pieces_b.len() / 20) as u64;
    if expected != found {
        return Err(err(at("pieces"), MetainfoErrorKind::PieceCountMismatch { expected, found }));
    }
    let pieces = pieces_b
        .chunks_exact(20)
        .map(|c| {
            let mut h = [0u8; 20];
            h.copy_from_slice(c);
            h
        })
        .collect();
    let private = matches!(d.get(&b"private"[..]), Some(Value::Int(1)));
    Ok(Metainfo {
        info_hash: InfoHash::of_info_bytes(raw),
        info_bytes: raw.to_vec(),
        name,
        piece_length,
        pieces,
        files,
        multi_file,
        total_length: total,
        announce: None,
        announce_tiers: Vec::new(),
        private,
        comment: None,
        created_by: None,
        creation_date: None,
    })
}

/// A contiguous run of bytes inside one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileSpan {
    /// Index into the torrent's file list.
    pub file: usize,
    /// Offset inside that file.
    pub offset: u64,
    /// Number of bytes.
    pub length: u64,
}

/// Piece and file geometry: where a piece or block lives on disk. Build it
/// from a [`Metainfo`] (or directly) once per torrent; lookups are
/// `O(log files)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileLayout {
    piece_length: u64,
    /// (offset, length) of each file in the concatenated content.
    files: Vec<(u64, u64)>,
    total: u64,
}

impl FileLayout {
    /// A layout for files of the given lengths (in torrent order).
    pub fn new(piece_length: u64, lengths: Vec<u64>) -> FileLayout {
        assert!(piece_length > 0, "piece length must be positive");
        let mut files = Vec::with_capacity(lengths.len());
        let mut off = 0u64;
        for l in lengths {
            files.push((off, l));
            off = off.saturating_add(l);
        }
        FileLayout { piece_length, files, total: off }
    }

    /// Total content length.
    pub fn total_length(&self) -> u64 {
        self.total
    }

    /// The nominal piece length.
    pub fn piece_length(&self) -> u64 {
        self.piece_length
    }

    /// Number of pieces.
    pub fn piece_count(&self) -> u32 {
        self.total.div_ceil(self.piece_length) as u32
    }

    /// Length of piece `index` (the last is usually shorter); 0 past the end.
    pub fn piece_size(&self, index: u32) -> u64 {
        let start = index as u64 * self.piece_length;
        if start >= self.total {
            return 0;
        }
        (self.total - start).min(self.piece_length)
    }

    /// The file spans covering `length` bytes at `offset` within piece
    /// `piece`, in content order; empty files inside the range are skipped.
    /// Returns `None` if the range runs past the piece or the content.
    pub fn spans(&self, piece: u32, offset: u64, length: u64) -> Option<Vec<FileSpan>> {
        let psize = self.piece_size(piece);
        if offset.checked_add(length)? > psize {
            return None;
        }
        let mut pos = piece as u64 * self.piece_length + offset;
        let end = pos + length;
        // First file whose end is beyond `pos`.
        let mut i = self.files.partition_point(|&(o, l)| o + l <= pos);
        let mut out = Vec::new();
        while pos < end && i < self.files.len() {
            let (fo, fl) = self.files[i];
            let take = (fo + fl).min(end) - pos;
            if take > 0 {
                out.push(FileSpan { file: i, offset: pos - fo, length: take });
            }
            pos += take;
            i += 1;
        }
        Some(out)
    }

    /// The spans of a whole piece.
    pub fn piece_spans(&self, piece: u32) -> Option<Vec<FileSpan>> {
        if piece >= self.piece_count() {
            return None;
        }
        self.spans(piece, 0, self.piece_size(piece))
    }
}

/// A piece length for `total_bytes` of content: the smallest power of two
/// from 16 KiB to 16 MiB that yields at most 2000 pieces (so between ~1000
/// and 2000 pieces unless a clamp bites). Use when creating a torrent.
pub fn choose_piece_length(total_bytes: u64) -> u64 {
    let mut p: u64 = 16 << 10;
    while p < (16 << 20) && total_bytes.div_ceil(p) > 2000 {
        p *= 2;
    }
    p
}

/// Incremental SHA-1 of pieces: feed the content (all files concatenated, in
/// torrent order) in chunks of any size; it yields one hash per piece. The
/// adapter reads files, this only hashes.
#[derive(Clone, Debug)]
pub struct PieceHasher {
    piece_length: u64,
    in_piece: u64,
    hasher: Sha1,
    done: Vec<Sha1Hash>,
}

impl PieceHasher {
    /// A hasher for pieces of `piece_length` bytes (> 0).
    pub fn new(piece_length: u64) -> PieceHasher {
        assert!(piece_length > 0, "piece length must be positive");
        PieceHasher { piece_length, in_piece: 0, hasher: Sha1::new(), done: Vec::new() }
    }

    /// Feeds the next bytes of content.
    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let room = (self.piece_length - self.in_piece) as usize;
            let take = room.min(data.len());
            self.hasher.update(&data[..take]);
            self.in_piece += take as u64;
            data = &data[take..];
            if self.in_piece == self.piece_length {
                let h = std::mem::replace(&mut self.hasher, Sha1::new());
                self.done.push(h.finalize().into());
                self.in_piece = 0;
            }
        }
    }

    /// Hashes of the pieces completed so far.
    pub fn completed(&self) -> &[Sha1Hash] {
        &self.done
    }

    /// Ends the content: hashes the short last piece if any, returns all.
    pub fn finish(mut self) -> Vec<Sha1Hash> {
        if self.in_piece > 0 {
            self.done.push(self.hasher.finalize().into());
        }
        self.done
    }
}

/// Builds .torrent bytes deterministically: the same content, piece length
/// and options give the same bytes and so the same infohash (no creation
/// date unless you set one).
#[derive(Clone, Debug)]
pub struct TorrentBuilder {
    name: String,
    piece_length: u64,
    /// `None` for a single file of the given length.
    files: Option<Vec<(Vec<String>, u64)>>,
    single_length: u64,
    pieces: Vec<Sha1Hash>,
    /// Announce tiers (the first URL also becomes `announce`).
    pub announce_tiers: Vec<Vec<String>>,
    /// BEP 27 private flag.
    pub private: bool,
    /// Optional `comment`.
    pub comment: Option<String>,
    /// Optional `created by`.
    pub created_by: Option<String>,
    /// Optional `creation date` (Unix seconds); breaks byte-identity across runs.
    pub creation_date: Option<i64>,
}

impl TorrentBuilder {
    /// A single-file torrent named `name` of `length` bytes.
    pub fn single(name: &str, length: u64, piece_length: u64, pieces: Vec<Sha1Hash>) -> Self {
        TorrentBuilder {
            name: name.to_owned(),
            piece_length,
            files: None,
            single_length: length,
            pieces,
            announce_tiers: Vec::new(),
            private: false,
            comment: None,
            created_by: None,
            creation_date: None,
        }
    }

    /// A multi-file torrent: directory `name` holding `files` as (relative
    /// path components, length), in strictly sorted path order.
    pub fn multi(name: &str, files: Vec<(Vec<String>, u64)>, piece_length: u64, pieces: Vec<Sha1Hash>) -> Self {
        TorrentBuilder { files: Some(files), ..Self::single(name, 0, piece_length, pieces) }
    }

    /// The .torrent bytes, checked by parsing them back with `limits`.
    pub fn build(&self, limits: &Limits) -> Result<(Vec<u8>, Metainfo), MetainfoError> {
        let mut info = Value::dict()
            .insert("name", Value::bytes(self.name.as_bytes()))
            .insert("piece length", Value::Int(self.piece_length.min(i64::MAX as u64) as i64));
        let mut pieces = Vec::with_capacity(self.pieces.len() * 20);
        for p in &self.pieces {
            pieces.extend_from_slice(p);
        }
        info = info.insert("pieces", Value::bytes(pieces));
        match &self.files {
            None => {
                info = info.insert("length", Value::Int(self.single_length.min(i64::MAX as u64) as i64));
            }
            Some(files) => {
                if files.windows(2).any(|w| w[0].0 >= w[1].0) {
                    return Err(err(0, MetainfoErrorKind::UnsortedFiles));
                }
                let list = files
                    .iter()
                    .map(|(path, len)| {
                        Value::dict()
                            .insert("length", Value::Int((*len).min(i64::MAX as u64) as i64))
                            .insert("path", Value::List(path.iter().map(|c| Value::bytes(c.as_bytes())).collect()))
                    })
                    .collect();
                info = info.insert("files", Value::List(list));
            }
        }
        if self.private {
            info = info.insert("private", Value::Int(1));
        }
        let mut top = Value::dict().insert("info", info);
        if let Some(first) = self.announce_tiers.iter().flatten().next() {
            top = top.insert("announce", Value::bytes(first.as_bytes()));
            if self.announce_tiers.len() > 1 || self.announce_tiers[0].len() > 1 {
                let tiers = self
                    .announce_tiers
                    .iter()
                    .map(|t| Value::List(t.iter().map(|u| Value::bytes(u.as_bytes())).collect()))
                    .collect();
                top = top.insert("announce-list", Value::List(tiers));
            }
        }
        if let Some(c) = &self.comment {
            top = top.insert("comment", Value::bytes(c.as_bytes()));
        }
        if let Some(c) = &self.created_by {
            top = top.insert("created by", Value::bytes(c.as_bytes()));
        }
        if let Some(t) = self.creation_date {
            top = top.insert("creation date", Value::Int(t));
        }
        let bytes = top.to_bytes();
        let m = Metainfo::parse_with(&bytes, limits)?;
        Ok((bytes, m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(bytes: &[u8]) -> String {
        Metainfo::parse(bytes).unwrap_err().to_string()
    }

    #[test]
    fn a_refused_torrent_says_what_is_wrong_and_where_in_words() {
        assert_eq!(
            shown(b"this is not bencode"),
            "not a torrent file: bad bencode at byte 0: unexpected 't' where a value should start (i, l, d or a digit)"
        );
        assert_eq!(shown(b"le"), "not a torrent file: expected a dictionary at byte 0");
        assert_eq!(shown(b"d8:announce3:urle"), "not a torrent file: it has no 'info' dictionary");
        let no_pieces = b"d4:infod6:lengthi10e4:name1:f12:piece lengthi16384eee";
        assert_eq!(shown(no_pieces), "the info dictionary (at byte 7) has no 'pieces' key");
        let dotdot = b"d4:infod5:filesld6:lengthi1e4:pathl2:..eee4:name1:f12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaaee";
        assert!(shown(dotdot).starts_with("unsafe file name: a path component '..'"), "{}", shown(dotdot));
        let short = b"d4:infod6:lengthi40000e4:name1:f12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaaee";
        assert!(shown(short).starts_with("the torrent has 1 piece hashes but its length needs 3"), "{}", shown(short));
    }
}
