//! Torrent metainfo (BEP 3, BEP 12 announce tiers, BEP 47 file attributes,
//! the v1 part of BEP 52 hybrids): a checked parser, the infohash over the
//! exact `info` bytes, a deterministic builder, an incremental piece hasher
//! and the piece/file geometry.
//!
//! Torrents from other clients often carry names no file system should see
//! verbatim: `..`, separators, control bytes, invalid UTF-8, names longer
//! than 255 bytes, two files whose names differ only in case. As the mature
//! clients do, these are not refused but renamed into safe paths inside the
//! download directory (every fix is listed in [`Metainfo::renamed`] so the
//! adapter can say so). What cannot be made sense of (sizes, piece counts,
//! a v1 list and v2 tree that disagree) is still refused with a sentence.
//!
//! Parse with [`Metainfo::parse`] (a whole .torrent) or
//! [`Metainfo::from_info_bytes`] (an `info` dictionary fetched by BEP 9).
//! Build with [`TorrentBuilder`] after feeding the data through a
//! [`PieceHasher`]. Map pieces and blocks to files with [`FileLayout`].

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
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

/// Limits a torrent must respect to be accepted (names are not refused for
/// length: they are shortened to `path_component_bytes_max`).
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
    /// Longest single path component on disk, in bytes: longer names are
    /// shortened to it (255 is what Linux and most file systems allow).
    pub path_component_bytes_max: usize,
    /// Most renames of files whose names collide before the torrent is
    /// refused as hostile (libtorrent refuses past 1000 too).
    pub duplicates_max: usize,
    /// Deepest bencode nesting accepted.
    pub depth_max: usize,
    /// Most announce URLs over all tiers.
    pub trackers_max: usize,
}

impl Default for Limits {
    /// 16 MiB files, 128 MiB pieces, 16 TiB content, 100 000 files, paths
    /// of 64 components of 255 bytes, 1000 duplicate names, nesting 32, 200
    /// trackers.
    fn default() -> Self {
        Limits {
            torrent_bytes_max: 16 << 20,
            piece_length_max: 128 << 20,
            total_length_max: 16 << 40,
            files_max: 100_000,
            path_components_max: 64,
            path_component_bytes_max: 255,
            duplicates_max: 1000,
            depth_max: 32,
            trackers_max: 200,
        }
    }
}

/// Why a file path was refused. Most unsafe names are renamed instead
/// (see [`PathFix`]); these are the shapes nothing sensible can be made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathProblem {
    /// A file (not a padding file) has no path components at all.
    NoComponents,
    /// A single-file torrent's name is empty once unsafe characters are
    /// removed (libtorrent refuses these too).
    Empty,
    /// A single-file torrent's name is `.`.
    Dot,
    /// A single-file torrent's name is `..`.
    DotDot,
    /// More components than [`Limits::path_components_max`].
    TooManyComponents,
}

/// What was changed in a name to make it safe on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathFix {
    /// An empty, `.` or `..` component became `_` (it would have named the
    /// directory itself or climbed out of it).
    DotOrEmpty,
    /// A `/` or `\` inside a component (an absolute path, a Windows
    /// separator) became `_`.
    Separator,
    /// A control character (NUL, newline, ...) became `_`.
    Control,
    /// Bytes that are not UTF-8 became `_`.
    NotUtf8,
    /// Characters that reverse the writing direction (used to disguise
    /// `exe` as `txt`) were dropped.
    Bidi,
    /// The component was longer than the file system allows; it was
    /// shortened, keeping its extension.
    TooLong,
    /// Another file has the same path (ignoring case, so the download is
    /// the same on case-insensitive file systems), or the path is also a
    /// directory: `.N` was added before the extension.
    Duplicate,
}

impl fmt::Display for PathFix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathFix::DotOrEmpty => "an empty, '.' or '..' component",
            PathFix::Separator => "a '/' or '\\' inside a name",
            PathFix::Control => "a control character",
            PathFix::NotUtf8 => "bytes that are not UTF-8",
            PathFix::Bidi => "characters that reverse the text direction",
            PathFix::TooLong => "a name longer than 255 bytes",
            PathFix::Duplicate => "a name another file already has",
        })
    }
}

/// One file (or the torrent's name) that was stored under another path
/// than the torrent says, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Renamed {
    /// Index into [`Metainfo::files`]; `None` for the torrent's name.
    pub file: Option<usize>,
    /// The path as the torrent has it (components joined by `/`, bytes
    /// that are not UTF-8 shown as U+FFFD).
    pub original: String,
    /// The path used instead (components joined by `/`).
    pub path: String,
    /// What was fixed, each once, in a fixed order.
    pub fixes: Vec<PathFix>,
}

impl fmt::Display for Renamed {
    /// e.g. `"a\\b.exe" is stored as "a_b.exe" (a '/' or '\\' inside a name)` (Debug quoting).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why: Vec<String> = self.fixes.iter().map(|x| x.to_string()).collect();
        write!(f, "{:?} is stored as {:?} ({})", self.original, self.path, why.join(", "))
    }
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
    /// A BitTorrent v2 torrent with no v1 part (BEP 52 `meta version` 2
    /// and no `pieces`): not supported yet.
    V2Only,
    /// `meta version` is neither 1 nor 2.
    UnknownVersion(i64),
    /// A hybrid torrent whose v1 `files` and v2 `file tree` describe
    /// different files.
    HybridMismatch,
    /// More colliding names than [`Limits::duplicates_max`].
    TooManyDuplicates,
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
            PathProblem::Empty => "the file name is empty once unsafe characters are removed",
            PathProblem::Dot => "the file name is '.'",
            PathProblem::DotDot => "the file name is '..', which would climb out of the download directory",
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
            K::Missing("file tree") => {
                write!(f, "the info dictionary (at byte {at}) says 'meta version' 2 but has no v2 'file tree'")
            }
            K::Missing("meta version") => {
                write!(f, "the info dictionary (at byte {at}) has a v2 'file tree' but no 'meta version' 2")
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
                    "meta version" => "'meta version' is not an integer",
                    "symlink path" => "a symlink's 'symlink path' holds something other than names",
                    "file tree" => "the v2 'file tree' is malformed (an entry that is not a dictionary, an empty name, or a file without its length or 32-byte 'pieces root')",
                    other => other,
                };
                write!(f, "{wrong} (at byte {at})")
            }
            K::BadPath(p) => write!(f, "unsafe file name: {p} (at byte {at})"),
            K::BadPieceLength(n) => write!(
                f,
                "the piece length {n} is zero, negative, over the limit of 128 MiB, or (in a v2 or hybrid torrent) not a power of two of at least 16 KiB (at byte {at})"
            ),
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
            K::V2Only => write!(
                f,
                "v2-only torrents are not supported yet: this one (info dictionary at byte {at}) has a BitTorrent v2 'file tree' and no v1 'pieces'; a hybrid or v1 torrent of the same files works"
            ),
            K::UnknownVersion(v) => {
                write!(f, "the torrent's 'meta version' is {v}; only 1 and 2 (BEP 52) exist (at byte {at})")
            }
            K::HybridMismatch => write!(
                f,
                "the hybrid torrent's v1 file list and v2 file tree describe different files (info dictionary at byte {at})"
            ),
            K::TooManyDuplicates => {
                write!(f, "the torrent has more files with colliding names than the limit (at byte {at})")
            }
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
    /// torrent: just the name), made safe: no component is empty, `.` or
    /// `..`, holds `/`, `\` or a control character, or is longer than
    /// [`Limits::path_component_bytes_max`]; no two files that are written
    /// share a path (ignoring case) and none is also a directory.
    pub path: Vec<String>,
    /// Length in bytes (0 for a symlink, whatever the torrent says, as
    /// libtorrent counts it).
    pub length: u64,
    /// Offset of the file's first byte in the concatenated content.
    pub offset: u64,
    /// BEP 47 padding file (`attr` contains `p`): its bytes are zeros that
    /// only align the next file to a piece; don't create it on disk.
    pub padding: bool,
    /// BEP 47 executable flag (`attr` contains `x`).
    pub executable: bool,
    /// BEP 47 hidden flag (`attr` contains `h`); nothing to do on Unix,
    /// where a leading dot hides a file.
    pub hidden: bool,
    /// BEP 47 symlink (`attr` contains `l` and the entry has a `symlink
    /// path`): the entry has no data of its own.
    pub symlink: Option<Symlink>,
}

/// Where a BEP 47 symlink points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Symlink {
    /// The target, relative to the torrent's root directory, each component
    /// made safe as file paths are (so it cannot climb out).
    pub target: Vec<String>,
    /// Whether the target is a regular file or a directory of this torrent.
    /// Only then may the link be created: a link to anything else (outside
    /// the download, another link, nothing) is skipped.
    pub inside: bool,
}

/// A checked torrent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metainfo {
    /// SHA-1 of the exact `info` bytes (for a BEP 52 hybrid: its v1
    /// infohash, the one used on the wire).
    pub info_hash: InfoHash,
    /// The exact `info` dictionary bytes (served to peers by BEP 9).
    pub info_bytes: Vec<u8>,
    /// The suggested name (file name or top directory), made safe as file
    /// path components are.
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
    /// Every name stored other than the torrent says, and why: log these.
    /// At most one per file plus one for the name.
    pub renamed: Vec<Renamed>,
    /// True for a BEP 52 hybrid (v1 and v2 in one): only its v1 part is used.
    pub hybrid: bool,
}

fn key_off(buf: &[u8], d: &BTreeMap<Cow<'_, [u8]>, Value<'_>>, key: &str) -> usize {
    d.get_key_value(key.as_bytes())
        .map(|(k, _)| match k {
            Cow::Borrowed(b) => offset_in(buf, b),
            Cow::Owned(_) => 0,
        })
        .unwrap_or(0)
}

/// Unicode characters that change the writing direction; in a file name
/// they disguise its extension (`"\u{202e}txt.exe"` shows as `exe.txt`).
fn is_bidi(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// The longest prefix of `s` of at most `max` bytes that ends on a
/// character boundary.
fn cut(s: &str, max: usize) -> &str {
    let mut n = max.min(s.len());
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    &s[..n]
}

/// Splits `name` into stem and extension (with its dot) when it has a
/// short one: `"a.tar.gz"` -> `("a.tar", ".gz")`; a leading dot is not an
/// extension, nor a "dot part" longer than 16 bytes.
fn split_ext(name: &str) -> (&str, &str) {
    match name.rfind('.') {
        Some(i) if i > 0 && name.len() - i <= 16 => name.split_at(i),
        _ => (name, ""),
    }
}

/// `stem` + `ext` within `max` bytes: the stem is cut (on a character
/// boundary) to make room for the extension, unless it would vanish.
fn fit(stem: &str, ext: &str, max: usize) -> String {
    if stem.len() + ext.len() <= max {
        return format!("{stem}{ext}");
    }
    if ext.len() < max {
        let s = cut(stem, max - ext.len());
        if !s.is_empty() {
            return format!("{s}{ext}");
        }
    }
    cut(&format!("{stem}{ext}"), max).to_owned()
}

/// Makes one path component safe, as libtorrent's
/// `sanitize_append_path_element` does (read, not copied): separators and
/// control characters become `_`, each run of bytes that is not UTF-8
/// becomes `_`, direction-changing characters are dropped, an empty, `.`
/// or `..` result becomes `_`, and a result longer than `bytes_max` is
/// shortened keeping its extension. Returns the name and what was fixed
/// (empty when nothing was). Never fails and never panics.
pub fn sanitize_component(raw: &[u8], bytes_max: usize) -> (String, Vec<PathFix>) {
    let mut out = String::with_capacity(raw.len().min(bytes_max + 8));
    let mut fixes = Vec::new();
    for chunk in raw.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '/' | '\\' => {
                    out.push('_');
                    fixes.push(PathFix::Separator);
                }
                c if c.is_control() => {
                    out.push('_');
                    fixes.push(PathFix::Control);
                }
                c if is_bidi(c) => fixes.push(PathFix::Bidi),
                c => out.push(c),
            }
        }
        if !chunk.invalid().is_empty() {
            out.push('_');
            fixes.push(PathFix::NotUtf8);
        }
    }
    if out.is_empty() || out == "." || out == ".." {
        out = "_".to_owned();
        fixes.push(PathFix::DotOrEmpty);
    }
    if out.len() > bytes_max {
        let (stem, ext) = split_ext(&out);
        let short = fit(stem, ext, bytes_max.max(1));
        // A cut can leave "." (a name of dots and a tiny limit).
        out = if short.is_empty() || short == "." || short == ".." { "_".to_owned() } else { short };
        fixes.push(PathFix::TooLong);
    }
    fixes.sort();
    fixes.dedup();
    (out, fixes)
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
fn attr_has(d: &BTreeMap<Cow<'_, [u8]>, Value<'_>>, flag: u8) -> bool {
    d.get(&b"attr"[..]).and_then(Value::as_bytes).is_some_and(|a| a.len() <= 16 && a.contains(&flag))
}

/// `key.utf-8` when it is there with the right kind of value (old clients
/// wrote the local code page under `key` and UTF-8 under `key.utf-8`, and
/// libtorrent prefers the latter), else `key`.
fn utf8_or<'v, 'a>(
    d: &'v BTreeMap<Cow<'a, [u8]>, Value<'a>>,
    key: &str,
    is_kind: fn(&Value<'a>) -> bool,
) -> Option<&'v Value<'a>> {
    let alt = format!("{key}.utf-8");
    d.get(alt.as_bytes()).filter(|v| is_kind(v)).or_else(|| d.get(key.as_bytes()))
}

fn lossy_path(comps: &[&[u8]]) -> String {
    comps.iter().map(|c| String::from_utf8_lossy(c)).collect::<Vec<_>>().join("/")
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

    /// Each piece's priority from each file's (`file_priorities[i]` for
    /// `files[i]`: 0 = skip, 1 = normal, 2 = high; larger values count as
    /// 2, files past the end of the list as 1): a piece takes the highest
    /// priority of the files it overlaps, so a piece shared by a skipped
    /// and a wanted file is wanted. BEP 47 padding files and empty files
    /// count for nothing, so a piece holding only padding is 0. Feed the
    /// result to [`super::torrent::Input::SetPiecePriorities`].
    /// O(files + pieces).
    pub fn piece_priorities(&self, file_priorities: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; self.pieces.len()];
        for (i, f) in self.files.iter().enumerate() {
            if f.padding || f.length == 0 {
                continue;
            }
            let prio = file_priorities.get(i).copied().unwrap_or(1).min(2);
            let first = (f.offset / self.piece_length) as usize;
            let last = ((f.offset + f.length - 1) / self.piece_length) as usize;
            for p in out.iter_mut().take(last + 1).skip(first) {
                *p = (*p).max(prio);
            }
        }
        out
    }

    /// Bytes of each file (`files[i]`) that lie in verified pieces (`have`
    /// ranges over this torrent's pieces; a shorter one counts the missing
    /// pieces as not had): a file's progress for a user interface. Padding
    /// files count like the others. O(files + pieces).
    pub fn file_progress(&self, have: &super::bitfield::Bitfield) -> Vec<u64> {
        self.files
            .iter()
            .map(|f| {
                if f.length == 0 || self.piece_length == 0 {
                    return 0;
                }
                let end = f.offset + f.length;
                let first = f.offset / self.piece_length;
                let last = (end - 1) / self.piece_length;
                (first..=last)
                    .filter(|p| u32::try_from(*p).is_ok_and(|p| have.get(p)))
                    .map(|p| {
                        let (ps, pe) = (p * self.piece_length, (p + 1) * self.piece_length);
                        pe.min(end) - ps.max(f.offset)
                    })
                    .sum()
            })
            .collect()
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

/// A file as the info dictionary lists it, before its name is made safe.
struct RawFile<'a> {
    /// Path components (for a single-file torrent: the name).
    comps: Vec<Cow<'a, [u8]>>,
    length: u64,
    padding: bool,
    executable: bool,
    hidden: bool,
    /// The raw `symlink path` of a BEP 47 symlink.
    symlink: Option<Vec<&'a [u8]>>,
}

type Dict<'a> = BTreeMap<Cow<'a, [u8]>, Value<'a>>;

/// The byte-string components of a path list; `what` names the value in
/// errors.
fn byte_comps<'a>(
    list: &[Value<'a>],
    off: usize,
    limits: &Limits,
    what: &'static str,
) -> Result<Vec<&'a [u8]>, MetainfoError> {
    if list.len() > limits.path_components_max {
        return Err(err(off, MetainfoErrorKind::BadPath(PathProblem::TooManyComponents)));
    }
    list.iter()
        .map(|c| match c {
            // Decoded values borrow from the input, so this is every name.
            Value::Bytes(Cow::Borrowed(b)) => Ok(*b),
            _ => Err(err(off, MetainfoErrorKind::Invalid(what))),
        })
        .collect()
}

/// One entry of `files` (or, with `single`, the info dictionary itself).
fn raw_file<'a>(
    raw: &[u8],
    base: usize,
    fd: &Dict<'a>,
    off: usize,
    single: Option<&'a [u8]>,
    limits: &Limits,
) -> Result<RawFile<'a>, MetainfoError> {
    let poff = base + key_off(raw, fd, "path");
    // BEP 47: a symlink needs its target; without one libtorrent treats the
    // entry as a plain file, and so do we.
    let symlink = match fd.get(&b"symlink path"[..]).and_then(Value::as_list) {
        Some(l) if attr_has(fd, b'l') => {
            Some(byte_comps(l, base + key_off(raw, fd, "symlink path"), limits, "symlink path")?)
        }
        _ => None,
    };
    // A symlink carries no data: its length is 0 whatever the entry says
    // (libtorrent counts it so, and the piece hashes follow).
    let length = if symlink.is_some() { 0 } else { length_of(raw, fd, base)? };
    let padding = single.is_none() && attr_has(fd, b'p');
    let comps: Vec<Cow<'a, [u8]>> = match single {
        Some(name) => vec![Cow::Borrowed(name)],
        None => match utf8_or(fd, "path", |v| v.as_list().is_some()) {
            None => Vec::new(),
            Some(p) => {
                let list = p.as_list().ok_or(err(poff, MetainfoErrorKind::Invalid("path")))?;
                byte_comps(list, poff, limits, "path component")?.into_iter().map(Cow::Borrowed).collect()
            }
        },
    };
    let comps = if comps.is_empty() {
        // libtorrent names a padding file without a path `.pad/LENGTH`;
        // it is never written, so any name does.
        if !padding {
            return Err(err(off, MetainfoErrorKind::BadPath(PathProblem::NoComponents)));
        }
        vec![Cow::Borrowed(&b".pad"[..]), Cow::Owned(length.to_string().into_bytes())]
    } else {
        comps
    };
    Ok(RawFile { comps, length, padding, executable: attr_has(fd, b'x'), hidden: attr_has(fd, b'h'), symlink })
}

/// The files of a BEP 52 `file tree`, in tree order, as (path, length,
/// is a symlink); bounded by `limits.files_max` entries and
/// `limits.path_components_max` levels.
fn v2_files(
    tree: &Dict<'_>,
    prefix: &mut Vec<Vec<u8>>,
    out: &mut Vec<(Vec<Vec<u8>>, u64, bool)>,
    limits: &Limits,
) -> Option<()> {
    if prefix.len() >= limits.path_components_max {
        return None;
    }
    for (k, v) in tree {
        let node = v.as_dict()?;
        if k.is_empty() {
            return None;
        }
        prefix.push(k.to_vec());
        match node.get(&b""[..]) {
            Some(leaf) if node.len() == 1 => {
                let leaf = leaf.as_dict()?;
                if out.len() >= limits.files_max || attr_has(leaf, b'p') {
                    return None;
                }
                let symlink = attr_has(leaf, b'l') && leaf.get(&b"symlink path"[..]).is_some();
                let length = if symlink { 0 } else { u64::try_from(leaf.get(&b"length"[..])?.as_int()?).ok()? };
                if length > 0 {
                    let root = leaf.get(&b"pieces root"[..])?.as_bytes()?;
                    if root.len() != 32 || root.iter().all(|b| *b == 0) {
                        return None;
                    }
                }
                out.push((prefix.clone(), length, symlink));
            }
            _ => v2_files(node, prefix, out, limits)?,
        }
        prefix.pop();
    }
    Some(())
}

/// Whether a hybrid's v1 files and v2 tree describe the same content, as
/// libtorrent's `files_compatible` judges (read, not copied): the files
/// with data (and the symlinks) agree in order, path and length, and each
/// v1 file with data starts on a piece boundary as v2 requires.
fn hybrid_consistent(tree: &Dict<'_>, files: &[RawFile<'_>], piece_length: u64, limits: &Limits) -> bool {
    let mut v2 = Vec::new();
    if v2_files(tree, &mut Vec::new(), &mut v2, limits).is_none() {
        return false;
    }
    let v2: Vec<_> = v2.into_iter().filter(|(_, len, link)| *len > 0 || *link).collect();
    let mut offset = 0u64;
    let mut v1 = Vec::new();
    for f in files {
        if !f.padding && (f.length > 0 || f.symlink.is_some()) {
            if f.length > 0 && !offset.is_multiple_of(piece_length) {
                return false;
            }
            let path: Vec<Vec<u8>> = f.comps.iter().map(|c| c.to_vec()).collect();
            v1.push((path, f.length, f.symlink.is_some()));
        }
        offset = offset.saturating_add(f.length);
    }
    v1 == v2
}

/// Lower-cased path key: names that differ only in case collide, so a
/// download is laid out the same on case-insensitive file systems (what
/// libtorrent does too).
fn path_key(p: &[String]) -> String {
    p.iter().map(|c| c.to_lowercase()).collect::<Vec<_>>().join("/")
}

/// Renames files whose paths collide (ignoring case) with an earlier file
/// or with a directory of the torrent, as libtorrent does: `name.1.ext`,
/// `name.2.ext`, ... Padding files are never written and take no part.
/// Fails past `limits.duplicates_max` renames (a hostile torrent).
fn dedup(paths: &mut [Vec<String>], padding: &[bool], fixes: &mut [Vec<PathFix>], limits: &Limits) -> Result<(), ()> {
    let mut taken: BTreeSet<String> = BTreeSet::new();
    for (p, _) in paths.iter().zip(padding).filter(|(_, pad)| !**pad) {
        for n in 1..p.len() {
            taken.insert(path_key(&p[..n]));
        }
    }
    // Next suffix to try per colliding path, so n copies of one name cost
    // O(n), not O(n^2).
    let mut next: BTreeMap<String, u64> = BTreeMap::new();
    let mut renames = 0usize;
    for i in 0..paths.len() {
        if padding[i] {
            continue;
        }
        let key = path_key(&paths[i]);
        if taken.insert(key.clone()) {
            continue;
        }
        let last = paths[i].last().cloned().unwrap_or_default();
        let (stem, ext) = split_ext(&last);
        let mut n = next.get(&key).copied().unwrap_or(1);
        loop {
            renames += 1;
            if renames > limits.duplicates_max {
                return Err(());
            }
            let mut cand = paths[i].clone();
            *cand.last_mut().expect("paths have a component") =
                fit(stem, &format!(".{n}{ext}"), limits.path_component_bytes_max.max(1));
            n += 1;
            if taken.insert(path_key(&cand)) {
                paths[i] = cand;
                break;
            }
        }
        next.insert(key, n);
        fixes[i].push(PathFix::Duplicate);
    }
    Ok(())
}

fn parse_info_value(raw: &[u8], base: usize, limits: &Limits) -> Result<Metainfo, MetainfoError> {
    use MetainfoErrorKind as K;
    let blimits = bencode::Limits {
        depth_max: limits.depth_max,
        bytes_max: limits.torrent_bytes_max,
        ..bencode::Limits::default()
    };
    let v = bencode::decode_with(raw, blimits).map_err(|e| err(base + e.offset, K::Bencode(e)))?;
    let d = v.as_dict().ok_or(err(base, K::Invalid("info is not a dictionary")))?;
    let at = |k: &str| base + key_off(raw, d, k);

    // BEP 52: `meta version` 2 marks a v2 torrent; one that also has the v1
    // keys is a hybrid, which v1 clients (and we) read by its v1 part.
    let version = match d.get(&b"meta version"[..]) {
        None => 1,
        Some(Value::Int(n)) => *n,
        Some(_) => return Err(err(at("meta version"), K::Invalid("meta version"))),
    };
    if version > 2 {
        return Err(err(at("meta version"), K::UnknownVersion(version)));
    }
    let tree = d.get(&b"file tree"[..]).and_then(Value::as_dict);
    let has_v1_files = d.contains_key(&b"length"[..]) || d.contains_key(&b"files"[..]);
    if version == 2 && (!d.contains_key(&b"pieces"[..]) || !has_v1_files) {
        return Err(err(base, K::V2Only));
    }
    if version == 2 && tree.is_none() {
        return Err(err(base, K::Missing("file tree")));
    }
    if version < 2 && tree.is_some() {
        return Err(err(at("file tree"), K::Missing("meta version")));
    }

    let name_b = utf8_or(d, "name", |v| v.as_bytes().is_some())
        .ok_or(err(base, K::Missing("name")))?
        .as_bytes()
        .ok_or(err(at("name"), K::Invalid("name")))?;

    let pl = match d.get(&b"piece length"[..]) {
        None => return Err(err(base, K::Missing("piece length"))),
        Some(Value::Int(n)) => *n,
        Some(_) => return Err(err(at("piece length"), K::Invalid("piece length"))),
    };
    let v2_shape = version < 2 || (pl >= 16384 && (pl as u64).is_power_of_two());
    if pl <= 0 || pl as u64 > limits.piece_length_max || !v2_shape {
        return Err(err(at("piece length"), K::BadPieceLength(pl)));
    }
    let piece_length = pl as u64;

    let pieces_b = d
        .get(&b"pieces"[..])
        .ok_or(err(base, K::Missing("pieces")))?
        .as_bytes()
        .ok_or(err(at("pieces"), K::Invalid("pieces")))?;
    if pieces_b.len() % 20 != 0 {
        return Err(err(at("pieces"), K::PiecesNotMultipleOf20(pieces_b.len())));
    }

    let mut raws: Vec<RawFile<'_>> = Vec::new();
    let multi_file = match (d.get(&b"length"[..]), d.get(&b"files"[..])) {
        (Some(_), None) => {
            raws.push(raw_file(raw, base, d, base, Some(name_b), limits)?);
            false
        }
        (None, Some(fl)) => {
            let off = at("files");
            let fl = fl.as_list().ok_or(err(off, K::Invalid("files")))?;
            if fl.len() > limits.files_max {
                return Err(err(off, K::TooManyFiles));
            }
            for f in fl {
                let fd = f.as_dict().ok_or(err(off, K::Invalid("files entry")))?;
                raws.push(raw_file(raw, base, fd, off, None, limits)?);
            }
            true
        }
        _ => return Err(err(base, K::AmbiguousLayout)),
    };
    let mut total: u64 = 0;
    let mut offsets = Vec::with_capacity(raws.len());
    for f in &raws {
        offsets.push(total);
        total = total
            .checked_add(f.length)
            .filter(|t| *t <= limits.total_length_max)
            .ok_or(err(at(if multi_file { "files" } else { "length" }), K::TotalTooLarge))?;
    }
    if total == 0 {
        return Err(err(base, K::NoContent));
    }
    let expected = total.div_ceil(piece_length);
    let found = (pieces_b.len() / 20) as u64;
    if expected != found {
        return Err(err(at("pieces"), K::PieceCountMismatch { expected, found }));
    }
    if let Some(tree) = tree {
        if !hybrid_consistent(tree, &raws, piece_length, limits) {
            return Err(err(base, K::HybridMismatch));
        }
    }
    let info_hash = InfoHash::of_info_bytes(raw);

    // Names: made safe, then made unique.
    let bytes_max = limits.path_component_bytes_max;
    let mut renamed = Vec::new();
    let (mut name, name_fixes) = sanitize_component(name_b, bytes_max);
    if name_fixes.contains(&PathFix::DotOrEmpty) && !(multi_file && name_b.is_empty()) {
        if !multi_file {
            // libtorrent refuses such a single file; a directory name it
            // replaces by the infohash, which is what we do.
            let p = match name_b {
                b"." => PathProblem::Dot,
                b".." => PathProblem::DotDot,
                _ => PathProblem::Empty,
            };
            return Err(err(at("name"), K::BadPath(p)));
        }
        name = info_hash.to_hex();
    }
    if multi_file && !name_fixes.is_empty() {
        renamed.push(Renamed { file: None, original: lossy_path(&[name_b]), path: name.clone(), fixes: name_fixes });
    }
    let mut paths = Vec::with_capacity(raws.len());
    let mut fixes = Vec::with_capacity(raws.len());
    for f in &raws {
        if !multi_file {
            paths.push(vec![name.clone()]);
            fixes.push(sanitize_component(name_b, bytes_max).1);
            continue;
        }
        let mut p = Vec::with_capacity(f.comps.len());
        let mut fx = Vec::new();
        for c in &f.comps {
            let (s, x) = sanitize_component(c, bytes_max);
            p.push(s);
            fx.extend(x);
        }
        paths.push(p);
        fixes.push(fx);
    }
    let padding: Vec<bool> = raws.iter().map(|f| f.padding).collect();
    if multi_file {
        dedup(&mut paths, &padding, &mut fixes, limits).map_err(|()| err(at("files"), K::TooManyDuplicates))?;
    }

    // Symlinks may only point at a regular file or directory of this
    // torrent (libtorrent: "symlinks only inside the torrent").
    let mut regular = BTreeSet::new();
    let mut dirs = BTreeSet::new();
    for (p, f) in paths.iter().zip(&raws) {
        if !f.padding && f.symlink.is_none() {
            regular.insert(p.join("/"));
            for n in 1..p.len() {
                dirs.insert(p[..n].join("/"));
            }
        }
    }
    let mut files = Vec::with_capacity(raws.len());
    for (i, ((f, path), mut fx)) in raws.iter().zip(paths).zip(fixes).enumerate() {
        fx.sort();
        fx.dedup();
        if !fx.is_empty() && !f.padding {
            let original = if multi_file {
                let comps: Vec<&[u8]> = f.comps.iter().map(|c| c.as_ref()).collect();
                lossy_path(&comps)
            } else {
                lossy_path(&[name_b])
            };
            renamed.push(Renamed { file: Some(i), original, path: path.join("/"), fixes: fx });
        }
        let symlink = f.symlink.as_ref().map(|t| {
            let target: Vec<String> = t.iter().map(|c| sanitize_component(c, bytes_max).0).collect();
            let joined = target.join("/");
            let inside = multi_file && (regular.contains(&joined) || dirs.contains(&joined));
            Symlink { target, inside }
        });
        files.push(FileEntry {
            path,
            length: f.length,
            offset: offsets[i],
            padding: f.padding,
            executable: f.executable,
            hidden: f.hidden,
            symlink,
        });
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
        info_hash,
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
        renamed,
        hybrid: version == 2,
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
        let dotdot = b"d4:infod6:lengthi1e4:name2:..12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaaee";
        assert!(shown(dotdot).starts_with("unsafe file name: the file name is '..'"), "{}", shown(dotdot));
        let link = b"d4:infod5:filesld4:attr1:l6:lengthi0e4:pathl1:le12:symlink pathli5eeee4:name1:d12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaaee";
        assert!(
            shown(link).starts_with("a symlink's 'symlink path' holds something other than names (at byte"),
            "{}",
            shown(link)
        );
        let v2 = b"d4:infod9:file treed1:ad0:d6:lengthi1eeee12:meta versioni2e4:name1:d12:piece lengthi16384eee";
        assert!(shown(v2).starts_with("v2-only torrents are not supported yet"), "{}", shown(v2));
        let short = b"d4:infod6:lengthi40000e4:name1:f12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaaee";
        assert!(shown(short).starts_with("the torrent has 1 piece hashes but its length needs 3"), "{}", shown(short));
    }
}
