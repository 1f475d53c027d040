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

/// Bytes read at once while hashing (bounds the hasher's buffer).
const HASH_CHUNK_BYTES: usize = 1 << 20;

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
                Slot { path, length: f.length, kind, file: None }
            })
            .collect();
        Storage { layout: meta.layout(), slots }
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
        }
        Ok(())
    }

    fn spans(&self, piece: u32, begin: u64, len: u64) -> io::Result<Vec<rumor_core::bt::metainfo::FileSpan>> {
        self.layout
            .spans(piece, begin, len)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "block outside the torrent"))
    }

    /// The size of `piece` in bytes.
    pub fn piece_size(&self, piece: u32) -> u64 {
        self.layout.piece_size(piece)
    }

    /// Writes `data` at `begin` in `piece`.
    pub fn write(&self, piece: u32, begin: u32, data: &[u8]) -> io::Result<()> {
        let mut pos = 0usize;
        for span in self.spans(piece, begin as u64, data.len() as u64)? {
            let s = &self.slots[span.file];
            let n = span.length as usize;
            if s.on_disk() {
                let f = s.file.as_ref().ok_or_else(|| io::Error::other("file not open"))?;
                f.write_all_at(&data[pos..pos + n], span.offset)?;
            }
            pos += n;
        }
        Ok(())
    }

    /// Writes `blocks`, which follow each other from `begin` in `piece`,
    /// with one `pwritev` per file they touch (rather than one `pwrite`
    /// per block: a run of 16 KiB blocks is a piece's worth of bytes in
    /// one system call).
    pub fn write_blocks(&self, piece: u32, begin: u32, blocks: &[&[u8]]) -> io::Result<()> {
        let total: usize = blocks.iter().map(|b| b.len()).sum();
        // Where the current span starts: block `bi`, byte `off` in it.
        let (mut bi, mut off) = (0usize, 0usize);
        let mut slices: Vec<io::IoSlice<'_>> = Vec::with_capacity(blocks.len() + 1);
        for span in self.spans(piece, begin as u64, total as u64)? {
            let s = &self.slots[span.file];
            // The span's bytes, as slices of the blocks.
            slices.clear();
            let mut left = span.length as usize;
            while left > 0 {
                let b = &blocks[bi][off..];
                let n = b.len().min(left);
                slices.push(io::IoSlice::new(&b[..n]));
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
            let mut at = span.offset;
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
        }
        Ok(())
    }

    /// Reads `len` bytes at `begin` in `piece` into `buf` (cleared first).
    pub fn read_into(&self, piece: u32, begin: u64, len: u64, buf: &mut Vec<u8>) -> io::Result<()> {
        buf.clear();
        buf.resize(len as usize, 0);
        let mut pos = 0usize;
        for span in self.spans(piece, begin, len)? {
            let s = &self.slots[span.file];
            let n = span.length as usize;
            // Padding reads as the zeros `buf` was filled with.
            if s.on_disk() {
                let f = s.file.as_ref().ok_or_else(|| io::Error::other("file not open"))?;
                f.read_exact_at(&mut buf[pos..pos + n], span.offset)?;
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
        let n = self.layout.piece_count();
        let next = std::sync::atomic::AtomicU32::new(0);
        let found = std::sync::Mutex::new(Bitfield::new(n));
        std::thread::scope(|sc| {
            for _ in 0..threads.max(1) {
                sc.spawn(|| {
                    let mut buf = Vec::new();
                    loop {
                        let p = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if p >= n {
                            break;
                        }
                        if self.piece_present(p)
                            && self.hash_piece(p, &mut buf).is_ok_and(|h| h == expected[p as usize])
                        {
                            found.lock().expect("no panics while held").set(p);
                        }
                        progress(p);
                    }
                });
            }
        });
        found.into_inner().expect("no panics while held")
    }
}

impl Storage {
    /// Hashes only `pieces` (those whose files are present), on `threads`
    /// threads as [`Storage::check`] does; returns those that match
    /// `expected`. Out-of-range pieces are skipped. `progress` is called
    /// with each piece checked. For a restart that trusts the rest (see
    /// `bt::resume`).
    pub fn check_pieces(
        &self,
        pieces: &[u32],
        expected: &[Sha1Hash],
        threads: usize,
        progress: &(dyn Fn(u32) + Sync),
    ) -> Bitfield {
        let n = self.layout.piece_count();
        let next = std::sync::atomic::AtomicUsize::new(0);
        let found = std::sync::Mutex::new(Bitfield::new(n));
        std::thread::scope(|sc| {
            for _ in 0..threads.max(1).min(pieces.len().max(1)) {
                sc.spawn(|| {
                    let mut buf = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(&p) = pieces.get(i) else {
                            break;
                        };
                        if p >= n || p as usize >= expected.len() {
                            continue;
                        }
                        if self.piece_present(p)
                            && self.hash_piece(p, &mut buf).is_ok_and(|h| h == expected[p as usize])
                        {
                            found.lock().expect("no panics while held").set(p);
                        }
                        progress(p);
                    }
                });
            }
        });
        found.into_inner().expect("no panics while held")
    }
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
