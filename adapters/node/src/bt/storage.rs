//! The torrent's files on disk: positional reads and writes of blocks,
//! piece hashing, and what BEP 47 asks once the data is complete (the
//! executable bit, symlinks inside the torrent). Everything here blocks;
//! call it from a worker thread.
//!
//! Paths come from the parsed torrent, already made safe (no `..`, no
//! separators, unique); padding files are never created: their bytes are
//! zeros, skipped on write and read back as zeros.

use rumor_core::bt::bitfield::Bitfield;
use rumor_core::bt::metainfo::{FileLayout, Metainfo, Sha1Hash};
use sha1::{Digest, Sha1};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Bytes read at once while hashing (bounds the hasher's buffer).
const HASH_CHUNK_BYTES: usize = 1 << 20;

/// The alignment of file offsets, lengths and memory that direct writes
/// use: a page, which every block device's logical block size divides.
const DIRECT_ALIGN: usize = 4096;

/// Bytes a direct write takes at most: the size of the aligned buffer
/// that each disk thread copies them into (a batch's worth of blocks).
const DIRECT_CHUNK_BYTES: usize = 1 << 20;

/// Blocks a [`BlockPool`] keeps for reuse at most (32 MiB): the disk
/// queue's limit (which covers the pieces waiting for the grouped hash)
/// and the hasher's hold, in 16 KiB blocks. A download from a fast peer
/// has about this many live at its peak; keeping fewer freed and
/// allocated a thousand blocks a second again.
const POOL_BLOCKS_MAX: usize = 2048;

/// The largest block a [`BlockPool`] holds: the 16 KiB every client asks
/// for (rumor's own requests are never larger).
pub const POOL_BLOCK_BYTES: usize = 4 * DIRECT_ALIGN;

/// True if `data` can go to a direct write as it is: page-aligned in
/// memory and whole pages long (a block the socket read put straight into
/// a [`BlockBuf`]).
pub fn direct_ready(data: &[u8]) -> bool {
    (data.as_ptr() as usize).is_multiple_of(DIRECT_ALIGN) && data.len().is_multiple_of(DIRECT_ALIGN)
}

/// A block's buffer, page-aligned so a direct write can take it as is.
#[repr(C, align(4096))]
struct AlignedBlock([[u8; DIRECT_ALIGN]; 4]);

/// Page-aligned block buffers for a download's received blocks, reused.
/// A connection reads each block's payload straight into one
/// ([`BlockPool::lend`], see `bt/scatter.rs`); a block that came some
/// other way (out of place in a read, or not a whole 16 KiB) is copied
/// into one as the loop hashes it ([`BlockPool::copy`]). The disk thread
/// hands whole runs of them to the device with one direct `pwritev`,
/// instead of copying them into an aligned buffer itself from memory gone
/// cold. A buffer comes back here when the last `Bytes` of it is dropped.
pub struct BlockPool {
    free: std::sync::Mutex<Vec<Box<AlignedBlock>>>,
}

/// One pooled buffer lent out as the owner of a `Bytes`.
struct PooledBlock {
    block: Option<Box<AlignedBlock>>,
    len: usize,
    pool: std::sync::Arc<BlockPool>,
}

impl AsRef<[u8]> for PooledBlock {
    fn as_ref(&self) -> &[u8] {
        let block = self.block.as_ref().expect("taken only on drop");
        &block.0.as_flattened()[..self.len]
    }
}

impl Drop for PooledBlock {
    fn drop(&mut self) {
        if let Some(b) = self.block.take() {
            self.pool.give(b);
        }
    }
}

impl BlockPool {
    /// An empty pool.
    pub fn new() -> std::sync::Arc<BlockPool> {
        std::sync::Arc::new(BlockPool { free: std::sync::Mutex::new(Vec::new()) })
    }

    /// `data` copied into a pooled page-aligned buffer; `None` if it is
    /// longer than [`POOL_BLOCK_BYTES`].
    pub fn copy(self: &std::sync::Arc<Self>, data: &[u8]) -> Option<bytes::Bytes> {
        if data.len() > POOL_BLOCK_BYTES {
            return None;
        }
        let mut block = self.lend();
        block.as_mut_slice()[..data.len()].copy_from_slice(data);
        Some(block.into_bytes(data.len()))
    }

    /// A pooled page-aligned buffer of [`POOL_BLOCK_BYTES`] to fill (a
    /// socket read puts a block's payload straight into one).
    pub fn lend(self: &std::sync::Arc<Self>) -> BlockBuf {
        let taken = self.free.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let block = taken.unwrap_or_else(|| Box::new(AlignedBlock([[0; DIRECT_ALIGN]; 4])));
        BlockBuf { block: Some(block), pool: self.clone() }
    }

    fn give(&self, block: Box<AlignedBlock>) {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        if free.len() < POOL_BLOCKS_MAX {
            free.push(block);
        }
    }
}

/// A pooled buffer being filled; back to its pool when dropped unfilled.
pub struct BlockBuf {
    block: Option<Box<AlignedBlock>>,
    pool: std::sync::Arc<BlockPool>,
}

impl BlockBuf {
    /// The whole buffer, [`POOL_BLOCK_BYTES`] long and page-aligned.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        self.block.as_mut().expect("taken only by into_bytes or drop").0.as_flattened_mut()
    }

    /// Its first `len` bytes as a `Bytes` that owns the buffer (and gives
    /// it back to the pool when the last of it is dropped).
    pub fn into_bytes(mut self, len: usize) -> bytes::Bytes {
        let block = self.block.take();
        let len = len.min(POOL_BLOCK_BYTES);
        bytes::Bytes::from_owner(PooledBlock { block, len, pool: self.pool.clone() })
    }
}

impl Drop for BlockBuf {
    fn drop(&mut self) {
        if let Some(b) = self.block.take() {
            self.pool.give(b);
        }
    }
}

thread_local! {
    /// The disk thread's aligned buffer for direct writes, allocated on
    /// its first direct write and reused: warm pages, no allocation per
    /// write.
    static DIRECT_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// What a file of the torrent is on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    /// Data: created, written, read.
    Regular { executable: bool },
    /// BEP 47 padding: zeros, never on disk.
    Padding,
    /// BEP 47 symlink to `target` (relative to the link's directory),
    /// created by [`Storage::finish`]; `None` when it would point outside
    /// the torrent (it is then not created at all).
    Symlink { target: Option<PathBuf> },
}

struct Slot {
    path: PathBuf,
    length: u64,
    kind: Kind,
    file: Option<File>,
    /// The same file opened with `O_DIRECT`, for writes (see
    /// [`Storage::set_direct_writes`]).
    direct: Option<File>,
    /// Cleared once the file system refused a direct write: the rest go
    /// through the page cache.
    direct_ok: AtomicBool,
}

impl Slot {
    /// Whether the slot holds bytes on disk (padding and links hold none).
    fn on_disk(&self) -> bool {
        matches!(self.kind, Kind::Regular { .. })
    }
}

/// A torrent's content laid out as files under a directory.
pub struct Storage {
    layout: FileLayout,
    slots: Vec<Slot>,
    /// Open a direct handle beside each file in [`Storage::create_all`].
    direct_writes: bool,
}

impl Storage {
    /// Maps `meta` onto `dir`: a multi-file torrent goes in `dir/NAME/...`,
    /// a single file is `dir/NAME`. Opens nothing yet; logs every name the
    /// parser had to change and every symlink that will not be created.
    pub fn new(meta: &Metainfo, dir: &Path) -> Storage {
        let root = if meta.multi_file { dir.join(&meta.name) } else { dir.to_path_buf() };
        for r in &meta.renamed {
            tracing::warn!("{}: {r}", meta.name);
        }
        let slots = meta
            .files
            .iter()
            .map(|f| {
                let mut path = root.clone();
                for c in &f.path {
                    path.push(c);
                }
                let kind = match &f.symlink {
                    _ if f.padding => Kind::Padding,
                    None => Kind::Regular { executable: f.executable },
                    Some(link) if link.inside => {
                        // Relative, so the download can be moved: up to the
                        // torrent's root, then down to the target.
                        let mut target = PathBuf::new();
                        for _ in 1..f.path.len() {
                            target.push("..");
                        }
                        target.extend(&link.target);
                        Kind::Symlink { target: Some(target) }
                    }
                    Some(link) => {
                        tracing::warn!(
                            "{}: not creating the symlink {:?}: its target {:?} is not a file or directory of the torrent",
                            meta.name,
                            f.path.join("/"),
                            link.target.join("/")
                        );
                        Kind::Symlink { target: None }
                    }
                };
                Slot { path, length: f.length, kind, file: None, direct: None, direct_ok: AtomicBool::new(true) }
            })
            .collect();
        Storage { layout: meta.layout(), slots, direct_writes: false }
    }

    /// Write whole aligned pages of downloaded data with `O_DIRECT`,
    /// straight from memory to the device, where the file system allows
    /// it (call before [`Storage::create_all`]); the unaligned ends of a
    /// write, and every write on a file system that refuses direct I/O,
    /// go through the page cache as before.
    ///
    /// Why: a downloaded byte is hashed in memory as it comes and the
    /// download never reads it back, so copying it into the page cache is
    /// work for nothing. That copy was most of the leecher's system time
    /// (on a virtual machine, whose fresh page-cache pages fault in from
    /// the host, 1-2 CPU seconds per GiB against 0.2 for the direct
    /// write), and it fills memory with dirty pages that push out data
    /// that is read. Reads (seeding, checks) still use the page cache;
    /// the kernel keeps the two coherent.
    pub fn set_direct_writes(&mut self, on: bool) {
        self.direct_writes = on;
    }

    /// Whether some file has a direct handle (blocks worth aligning).
    pub fn direct_writes(&self) -> bool {
        self.slots.iter().any(|s| s.direct.is_some())
    }

    /// Opens the files that exist, read-only (for checking and seeding).
    pub fn open_existing(&mut self) {
        for s in self.slots.iter_mut().filter(|s| s.on_disk()) {
            s.file = File::open(&s.path).ok();
        }
    }

    /// Creates directories and files (sparse, at their full length) and
    /// opens them for reading and writing.
    pub fn create_all(&mut self) -> io::Result<()> {
        for s in self.slots.iter_mut().filter(|s| s.on_disk()) {
            if let Some(parent) = s.path.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", parent.display())))?;
            }
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&s.path)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", s.path.display())))?;
            if f.metadata()?.len() != s.length {
                f.set_len(s.length)?;
            }
            s.file = Some(f);
            s.direct = None;
            if self.direct_writes {
                use std::os::unix::fs::OpenOptionsExt;
                // Refused (a file system without direct I/O, such as an
                // older tmpfs): every write goes through the page cache.
                s.direct = OpenOptions::new()
                    .write(true)
                    .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
                    .open(&s.path)
                    .inspect_err(|e| tracing::debug!("{}: no direct writes: {e}", s.path.display()))
                    .ok();
            }
        }
        Ok(())
    }

    fn spans(&self, piece: u32, begin: u64, len: u64) -> io::Result<Vec<rumor_core::bt::metainfo::FileSpan>> {
        self.layout
            .spans(piece, begin, len)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "block outside the torrent"))
    }

    /// The file spans of `len` bytes from `begin` in `piece`, running on
    /// into the pieces after it if `len` goes past its end; spans that
    /// follow on in one file are one.
    fn run_spans(&self, piece: u32, begin: u64, len: u64) -> io::Result<Vec<rumor_core::bt::metainfo::FileSpan>> {
        let (mut p, mut off, mut left) = (piece, begin, len);
        let mut out: Vec<rumor_core::bt::metainfo::FileSpan> = Vec::new();
        loop {
            let take = self.layout.piece_size(p).saturating_sub(off).min(left);
            for s in self.spans(p, off, take)? {
                match out.last_mut() {
                    Some(l) if l.file == s.file && l.offset + l.length == s.offset => l.length += s.length,
                    _ => out.push(s),
                }
            }
            left -= take;
            if left == 0 {
                return Ok(out);
            }
            if take == 0 {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, "blocks past the end of the torrent"));
            }
            p = p.checked_add(1).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "piece index overflow"))?;
            off = 0;
        }
    }

    /// The size of `piece` in bytes.
    pub fn piece_size(&self, piece: u32) -> u64 {
        self.layout.piece_size(piece)
    }

    /// Writes `data` at `begin` in `piece`.
    pub fn write(&self, piece: u32, begin: u32, data: &[u8]) -> io::Result<()> {
        self.write_blocks(piece, begin, &[data])
    }

    /// Writes `blocks`, which follow each other from `begin` in `piece`
    /// (and may run on into the pieces after it), with one `pwritev` per
    /// file they touch (rather than one `pwrite` per block: a run of 16
    /// KiB blocks is pieces' worth of bytes in one system call), or, with
    /// direct writes on, one direct write of the span's whole pages and a
    /// `pwritev` for each unaligned end.
    pub fn write_blocks(&self, piece: u32, begin: u32, blocks: &[&[u8]]) -> io::Result<()> {
        let total: usize = blocks.iter().map(|b| b.len()).sum();
        // Where the current span starts: block `bi`, byte `off` in it.
        let (mut bi, mut off) = (0usize, 0usize);
        let mut parts: Vec<&[u8]> = Vec::with_capacity(blocks.len() + 1);
        for span in self.run_spans(piece, begin as u64, total as u64)? {
            let s = &self.slots[span.file];
            // The span's bytes, as slices of the blocks.
            parts.clear();
            let mut left = span.length as usize;
            while left > 0 {
                let b = &blocks[bi][off..];
                let n = b.len().min(left);
                parts.push(&b[..n]);
                left -= n;
                off += n;
                if off == blocks[bi].len() {
                    bi += 1;
                    off = 0;
                }
            }
            if !s.on_disk() {
                continue;
            }
            let f = s.file.as_ref().ok_or_else(|| io::Error::other("file not open"))?;
            let len = span.length as usize;
            // The span's whole pages: [head, body_end) of its bytes.
            let head = ((DIRECT_ALIGN as u64 - span.offset % DIRECT_ALIGN as u64) % DIRECT_ALIGN as u64) as usize;
            let body_end = head + (len.saturating_sub(head)) / DIRECT_ALIGN * DIRECT_ALIGN;
            match &s.direct {
                Some(direct) if body_end > head && s.direct_ok.load(Ordering::Relaxed) => {
                    pwritev_all(f, &sub_slices(&parts, 0, head), span.offset)?;
                    let body = sub_slices(&parts, head, body_end);
                    let at = span.offset + head as u64;
                    // Blocks from a [`BlockPool`] go as they are; others
                    // are copied into an aligned buffer first.
                    let aligned = body.iter().all(|p| direct_ready(p));
                    let written =
                        if aligned { pwritev_all(direct, &body, at) } else { write_direct(direct, &body, at) };
                    if let Err(e) = written {
                        if e.raw_os_error() != Some(rustix::io::Errno::INVAL.raw_os_error()) {
                            return Err(e);
                        }
                        tracing::debug!("{}: direct write refused ({e}), using the page cache", s.path.display());
                        s.direct_ok.store(false, Ordering::Relaxed);
                        pwritev_all(f, &body, at)?;
                    }
                    pwritev_all(f, &sub_slices(&parts, body_end, len), span.offset + body_end as u64)?;
                }
                _ => pwritev_all(f, &parts, span.offset)?,
            }
        }
        Ok(())
    }

    /// Reads `len` bytes at `begin` in `piece` into `buf` (cleared first).
    pub fn read_into(&self, piece: u32, begin: u64, len: u64, buf: &mut Vec<u8>) -> io::Result<()> {
        buf.clear();
        buf.resize(len as usize, 0);
        self.read_exact(piece, begin, buf)
    }

    /// Fills `buf` with the bytes from `begin` in `piece` (padding files
    /// read as zeros).
    pub fn read_exact(&self, piece: u32, begin: u64, buf: &mut [u8]) -> io::Result<()> {
        let mut pos = 0usize;
        for span in self.spans(piece, begin, buf.len() as u64)? {
            let s = &self.slots[span.file];
            let n = span.length as usize;
            match &s.file {
                Some(f) if s.on_disk() => f.read_exact_at(&mut buf[pos..pos + n], span.offset)?,
                None if s.on_disk() => return Err(io::Error::other("file not open")),
                _ => buf[pos..pos + n].fill(0),
            }
            pos += n;
        }
        Ok(())
    }

    /// Reads a block.
    pub fn read(&self, piece: u32, begin: u32, len: u32) -> io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.read_into(piece, begin as u64, len as u64, &mut buf)?;
        Ok(buf)
    }

    /// The SHA-1 of a piece as it is on disk; `buf` is scratch space.
    pub fn hash_piece(&self, piece: u32, buf: &mut Vec<u8>) -> io::Result<Sha1Hash> {
        let size = self.layout.piece_size(piece);
        let mut h = Sha1::new();
        let mut at = 0u64;
        while at < size {
            let n = (size - at).min(HASH_CHUNK_BYTES as u64);
            self.read_into(piece, at, n, buf)?;
            h.update(&buf[..]);
            at += n;
        }
        Ok(h.finalize().into())
    }

    /// What BEP 47 asks of complete data: sets the executable bit (where
    /// the read bit is) on files marked `x`, and creates the symlinks that
    /// point inside the torrent. Call once every piece is verified (a file
    /// is never executable before its bytes are checked); calling it again
    /// changes nothing. A link whose path is taken by something else is
    /// left alone and logged.
    pub fn finish(&self) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        for s in &self.slots {
            match &s.kind {
                Kind::Regular { executable: true } => {
                    let mut perm = std::fs::metadata(&s.path)?.permissions();
                    let mode = perm.mode();
                    let want = mode | ((mode & 0o444) >> 2);
                    if want == mode {
                        // Already so (seeding someone's files, maybe read-only).
                        continue;
                    }
                    perm.set_mode(want);
                    std::fs::set_permissions(&s.path, perm)
                        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", s.path.display())))?;
                }
                Kind::Symlink { target: Some(target) } => match std::fs::symlink_metadata(&s.path) {
                    Ok(m)
                        if m.file_type().is_symlink() && std::fs::read_link(&s.path).ok().as_ref() == Some(target) => {}
                    Ok(_) => tracing::warn!("{}: exists, not replacing it with a symlink", s.path.display()),
                    Err(_) => {
                        if let Some(parent) = s.path.parent() {
                            std::fs::create_dir_all(parent)?;
                        }
                        std::os::unix::fs::symlink(target, &s.path)
                            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", s.path.display())))?;
                    }
                },
                _ => {}
            }
        }
        Ok(())
    }

    /// Whether every file a piece touches is open and long enough.
    fn piece_present(&self, piece: u32) -> bool {
        let Some(spans) = self.layout.piece_spans(piece) else {
            return false;
        };
        spans.iter().all(|sp| {
            let s = &self.slots[sp.file];
            !s.on_disk()
                || s.file.as_ref().and_then(|f| f.metadata().ok()).is_some_and(|m| m.len() >= sp.offset + sp.length)
        })
    }

    /// Hashes every piece whose files are present, on `threads` threads;
    /// returns the pieces that match `expected`. `progress` is called with
    /// each piece checked.
    pub fn check(&self, expected: &[Sha1Hash], threads: usize, progress: &(dyn Fn(u32) + Sync)) -> Bitfield {
        let all: Vec<u32> = (0..self.layout.piece_count()).collect();
        self.check_pieces(&all, expected, threads, progress)
    }
}

/// Piece bytes each checking thread reads and hashes together at most
/// (with pieces of 1 MiB or less, up to [`crate::sha1x16::LANES`] at once).
const CHECK_GROUP_BYTES: u64 = 8 << 20;

impl Storage {
    /// Hashes only `pieces` (those whose files are present), on `threads`
    /// threads as [`Storage::check`] does; returns those that match
    /// `expected`. Out-of-range pieces are skipped. `progress` is called
    /// with each piece checked. For a restart that trusts the rest (see
    /// `bt::resume`).
    ///
    /// Each thread takes a few pieces at a time, reads them whole and
    /// hashes them together ([`crate::sha1x16`]).
    pub fn check_pieces(
        &self,
        pieces: &[u32],
        expected: &[Sha1Hash],
        threads: usize,
        progress: &(dyn Fn(u32) + Sync),
    ) -> Bitfield {
        let n = self.layout.piece_count();
        let at_once =
            (CHECK_GROUP_BYTES / self.layout.piece_length().max(1)).clamp(1, crate::sha1x16::LANES as u64) as usize;
        let next = std::sync::atomic::AtomicUsize::new(0);
        let found = std::sync::Mutex::new(Bitfield::new(n));
        std::thread::scope(|sc| {
            for _ in 0..threads.max(1).min(pieces.len().max(1)) {
                sc.spawn(|| {
                    let mut bufs: Vec<Vec<u8>> = vec![Vec::new(); at_once];
                    loop {
                        let i = next.fetch_add(at_once, std::sync::atomic::Ordering::Relaxed);
                        let Some(taken) = pieces.get(i..(i + at_once).min(pieces.len())) else {
                            break;
                        };
                        if taken.is_empty() {
                            break;
                        }
                        // The pieces that are there, read whole.
                        let mut read: Vec<u32> = Vec::with_capacity(taken.len());
                        for &p in taken {
                            if p >= n || p as usize >= expected.len() {
                                continue;
                            }
                            let size = self.layout.piece_size(p);
                            if self.piece_present(p) && self.read_into(p, 0, size, &mut bufs[read.len()]).is_ok() {
                                read.push(p);
                            } else {
                                progress(p);
                            }
                        }
                        let whole: Vec<&[Vec<u8>]> = bufs[..read.len()].iter().map(std::slice::from_ref).collect();
                        let digests = crate::sha1x16::digest_pieces(&whole);
                        for (&p, d) in read.iter().zip(digests) {
                            if d == expected[p as usize] {
                                found.lock().expect("no panics while held").set(p);
                            }
                            progress(p);
                        }
                    }
                });
            }
        });
        found.into_inner().expect("no panics while held")
    }
}

/// Bytes `from..to` of the concatenation of `parts`, as slices of them.
fn sub_slices<'a>(parts: &[&'a [u8]], from: usize, to: usize) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    for p in parts {
        let (start, end) = (pos, pos + p.len());
        pos = end;
        if end <= from || start >= to {
            continue;
        }
        out.push(&p[from.max(start) - start..to.min(end) - start]);
    }
    out
}

/// Writes all of `parts` at `at` with `pwritev`, as many times as it takes.
fn pwritev_all(f: &File, parts: &[&[u8]], mut at: u64) -> io::Result<()> {
    let mut slices: Vec<io::IoSlice<'_>> = parts.iter().map(|p| io::IoSlice::new(p)).collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        let n = match rustix::io::pwritev(f, rest, at) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        };
        at += n as u64;
        io::IoSlice::advance_slices(&mut rest, n);
    }
    Ok(())
}

/// Writes `parts` (whole pages, at a page-aligned `at`) through the
/// `O_DIRECT` handle `f`, copied a chunk at a time into this thread's
/// page-aligned buffer (direct I/O needs aligned memory; the blocks sit
/// wherever the socket reads put them). An `EINVAL` means the file system
/// wants other alignment: the caller falls back to the page cache.
fn write_direct(f: &File, parts: &[&[u8]], at: u64) -> io::Result<()> {
    DIRECT_BUF.with_borrow_mut(|buf| {
        if buf.is_empty() {
            buf.resize(DIRECT_CHUNK_BYTES + DIRECT_ALIGN, 0);
        }
        let start = buf.as_ptr().align_offset(DIRECT_ALIGN);
        let chunk = &mut buf[start..start + DIRECT_CHUNK_BYTES];
        let mut filled = 0usize;
        let mut at = at;
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let mut done = 0usize;
        for p in parts {
            let mut p = *p;
            while !p.is_empty() {
                let n = p.len().min(DIRECT_CHUNK_BYTES - filled);
                chunk[filled..filled + n].copy_from_slice(&p[..n]);
                filled += n;
                p = &p[n..];
                done += n;
                if filled == DIRECT_CHUNK_BYTES || done == total {
                    f.write_all_at(&chunk[..filled], at)?;
                    at += filled as u64;
                    filled = 0;
                }
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumor_core::bt::bencode::Value;
    use std::os::unix::fs::PermissionsExt;

    fn file(len: i64, path: &[&str], attr: &str) -> Value<'static> {
        Value::dict()
            .insert("attr", Value::bytes(attr))
            .insert("length", Value::Int(len))
            .insert("path", Value::List(path.iter().map(|c| Value::bytes(c.as_bytes())).collect()))
    }

    fn link(path: &str, target: &[&str]) -> Value<'static> {
        file(0, &[path], "l")
            .insert("symlink path", Value::List(target.iter().map(|c| Value::bytes(c.as_bytes())).collect()))
    }

    #[test]
    fn the_check_finds_every_good_piece_and_no_bad_one_whatever_the_grouping() {
        use sha1::Digest;
        // 40 pieces of 16 KiB and a short last one, over two files; the
        // check hashes up to sixteen at a time on each of its threads.
        let plen = 16 * 1024;
        let total = 40 * plen + 1000;
        let data: Vec<u8> = (0..total).map(|i| (i % 253) as u8 ^ (i / plen) as u8).collect();
        let hashes: Vec<u8> = data.chunks(plen).flat_map(|c| Sha1::digest(c).to_vec()).collect();
        let files = vec![file(300_000, &["a"], ""), file(total as i64 - 300_000, &["b"], "")];
        let info = Value::dict()
            .insert("files", Value::List(files))
            .insert("name", Value::bytes("t"))
            .insert("piece length", Value::Int(plen as i64))
            .insert("pieces", Value::bytes(hashes));
        let meta = Metainfo::parse(&Value::dict().insert("info", info).to_bytes()).unwrap();
        let dir = std::env::temp_dir().join(format!("rumor-storage-check-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut bad = data.clone();
        for p in [0usize, 17, 40] {
            bad[p * plen + 5] ^= 1;
        }
        std::fs::create_dir_all(dir.join("t")).unwrap();
        std::fs::write(dir.join("t/a"), &bad[..300_000]).unwrap();
        std::fs::write(dir.join("t/b"), &bad[300_000..]).unwrap();
        let mut st = Storage::new(&meta, &dir);
        st.open_existing();
        for threads in [1, 2, 3] {
            let seen = std::sync::Mutex::new(Vec::new());
            let found = st.check(&meta.pieces, threads, &|p| seen.lock().unwrap().push(p));
            let want: Vec<u32> = (0..41).filter(|p| ![0, 17, 40].contains(p)).collect();
            assert_eq!(found.iter_ones().collect::<Vec<_>>(), want, "{threads} threads");
            let mut seen = seen.into_inner().unwrap();
            seen.sort();
            assert_eq!(seen, (0..41).collect::<Vec<u32>>(), "progress for every piece");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_run_of_blocks_written_at_once_lands_across_files_and_skips_padding() {
        // Three files of 10, 6 (padding) and 20 bytes in pieces of 16.
        let files = vec![file(10, &["a"], ""), file(6, &[".pad", "6"], "p"), file(20, &["b"], "")];
        let info = Value::dict()
            .insert("files", Value::List(files))
            .insert("name", Value::bytes("t"))
            .insert("piece length", Value::Int(16))
            .insert("pieces", Value::bytes(vec![0u8; 60]));
        let meta = Metainfo::parse(&Value::dict().insert("info", info).to_bytes()).unwrap();
        let dir = std::env::temp_dir().join(format!("rumor-storage-run-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut st = Storage::new(&meta, &dir);
        st.create_all().unwrap();
        // Piece 0 as blocks of 3, 9 and 4 bytes: the last one crosses
        // from file a into the padding.
        st.write_blocks(0, 0, &[b"abc", b"defghijzz", b"zzzz"]).unwrap();
        // Piece 1 from byte 2 on, in blocks that end mid-file.
        st.write_blocks(1, 2, &[b"0123456789", b"ABCD"]).unwrap();
        assert_eq!(std::fs::read(dir.join("t/a")).unwrap(), b"abcdefghij");
        assert!(!dir.join("t/.pad").exists(), "a padding file was created");
        let b = std::fs::read(dir.join("t/b")).unwrap();
        assert_eq!(&b[..16], b"\x00\x000123456789ABCD");
        let mut buf = Vec::new();
        st.read_into(0, 0, 16, &mut buf).unwrap();
        assert_eq!(&buf[..], b"abcdefghij\0\0\0\0\0\0", "the padding reads as zeros");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn direct_writes_put_every_byte_where_buffered_writes_do_whatever_the_alignment() {
        // Files whose boundaries fall mid-page and mid-block, in pieces of
        // 32 KiB: spans with unaligned heads and tails, whole pages between.
        let lens = [10_000i64, 70_001, 4096, 50_000, 1];
        let total: i64 = lens.iter().sum();
        let files = lens.iter().enumerate().map(|(i, l)| file(*l, &[&format!("f{i}")], "")).collect();
        let pieces = (total as usize).div_ceil(32768);
        let info = Value::dict()
            .insert("files", Value::List(files))
            .insert("name", Value::bytes("t"))
            .insert("piece length", Value::Int(32768))
            .insert("pieces", Value::bytes(vec![0u8; 20 * pieces]));
        let meta = Metainfo::parse(&Value::dict().insert("info", info).to_bytes()).unwrap();
        let data: Vec<u8> = (0..total as u64).map(|i| (i * 7 + i / 4096) as u8).collect();
        let dir = std::env::temp_dir().join(format!("rumor-storage-direct-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut st = Storage::new(&meta, &dir);
        st.set_direct_writes(true);
        st.create_all().unwrap();
        let pool = BlockPool::new();
        for piece in 0..pieces as u32 {
            let start = piece as usize * 32768;
            let bytes = &data[start..(start + 32768).min(data.len())];
            let blocks: Vec<&[u8]> = bytes.chunks(16384).collect();
            if piece % 2 == 0 {
                // Pooled, page-aligned blocks: written as they are.
                let pooled: Vec<bytes::Bytes> = blocks.iter().map(|b| pool.copy(b).unwrap()).collect();
                let slices: Vec<&[u8]> = pooled.iter().map(|b| &b[..]).collect();
                st.write_blocks(piece, 0, &slices).unwrap();
            } else {
                // Blocks at odd addresses: copied into the aligned buffer.
                let odd: Vec<Vec<u8>> = blocks.iter().map(|b| [&[0u8][..], b].concat()).collect();
                let slices: Vec<&[u8]> = odd.iter().map(|b| &b[1..]).collect();
                st.write_blocks(piece, 0, &slices).unwrap();
            }
        }
        let mut at = 0usize;
        for (i, l) in lens.iter().enumerate() {
            let on_disk = std::fs::read(dir.join(format!("t/f{i}"))).unwrap();
            assert_eq!(on_disk.len(), *l as usize, "f{i} keeps its length");
            assert!(on_disk == data[at..at + *l as usize], "f{i} holds its bytes");
            at += *l as usize;
        }
        if st.direct_writes() {
            let refused = st.slots.iter().filter(|s| s.direct.is_some() && !s.direct_ok.load(Ordering::Relaxed));
            assert_eq!(refused.count(), 0, "a direct write was refused and went through the page cache");
        } else {
            eprintln!("no direct I/O under {}: checked the page-cache path only", dir.display());
        }
        // And reads through the page cache see what went around it.
        let mut buf = Vec::new();
        st.read_into(1, 0, 32768, &mut buf).unwrap();
        assert!(buf == data[32768..65536]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_pooled_block_goes_back_to_its_pool_when_its_last_bytes_are_dropped() {
        let pool = BlockPool::new();
        let a = pool.copy(b"hello").unwrap();
        assert_eq!(&a[..], b"hello");
        assert_eq!(a.as_ptr() as usize % DIRECT_ALIGN, 0, "page-aligned");
        let a2 = a.clone();
        drop(a);
        assert!(pool.free.lock().unwrap().is_empty(), "still lent");
        drop(a2);
        assert_eq!(pool.free.lock().unwrap().len(), 1);
        let b = pool.copy(&[1u8; POOL_BLOCK_BYTES]).unwrap();
        assert_eq!(b.len(), POOL_BLOCK_BYTES);
        assert!(pool.free.lock().unwrap().is_empty(), "the buffer was reused");
        assert!(pool.copy(&[0u8; POOL_BLOCK_BYTES + 1]).is_none());
    }

    #[test]
    fn complete_data_gets_its_x_bits_and_inside_links_and_padding_never_reaches_the_disk() {
        let files = vec![
            file(5, &["bin", "run.sh"], "x"),
            file(16379, &[".pad", "16379"], "p"),
            file(5, &["data.txt"], ""),
            link("to-run", &["bin", "run.sh"]),
            link("to-bin", &["bin"]),
            link("escape", &["..", "..", "etc", "passwd"]),
        ];
        let info = Value::dict()
            .insert("files", Value::List(files))
            .insert("name", Value::bytes("t"))
            .insert("piece length", Value::Int(16384))
            .insert("pieces", Value::bytes(vec![0u8; 40]));
        let meta = Metainfo::parse(&Value::dict().insert("info", info).to_bytes()).unwrap();
        let dir = std::env::temp_dir().join(format!("rumor-storage-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut st = Storage::new(&meta, &dir);
        st.create_all().unwrap();
        st.write(0, 0, b"#!/bin").unwrap();
        st.write(1, 0, b"hello").unwrap();
        // The padding's zeros come back from a read without a file.
        let mut buf = Vec::new();
        st.read_into(0, 0, 16384, &mut buf).unwrap();
        assert_eq!(&buf[..5], b"#!/bi");
        assert!(buf[5..].iter().all(|b| *b == 0));
        let root = dir.join("t");
        assert!(!root.join(".pad").exists(), "a padding file was created");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode();
        assert_eq!(mode(&root.join("bin/run.sh")) & 0o111, 0, "executable before it is complete");
        st.finish().unwrap();
        st.finish().unwrap();
        assert_ne!(mode(&root.join("bin/run.sh")) & 0o100, 0);
        assert_eq!(mode(&root.join("data.txt")) & 0o111, 0);
        assert_eq!(std::fs::read_link(root.join("to-run")).unwrap(), PathBuf::from("bin/run.sh"));
        assert_eq!(std::fs::read(root.join("to-run")).unwrap(), b"#!/bi");
        assert!(root.join("to-bin").join("run.sh").exists());
        assert!(std::fs::symlink_metadata(root.join("escape")).is_err(), "a link out of the torrent was created");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
