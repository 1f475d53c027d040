//! The torrent's files on disk: positional reads and writes of blocks,
//! piece hashing. Everything here blocks; call it from a worker thread.

use rumor_core::bt::bitfield::Bitfield;
use rumor_core::bt::metainfo::{FileLayout, Metainfo, Sha1Hash};
use sha1::{Digest, Sha1};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Bytes read at once while hashing (bounds the hasher's buffer).
const HASH_CHUNK_BYTES: usize = 1 << 20;

struct Slot {
    path: PathBuf,
    length: u64,
    padding: bool,
    file: Option<File>,
}

/// A torrent's content laid out as files under a directory.
pub struct Storage {
    layout: FileLayout,
    slots: Vec<Slot>,
}

impl Storage {
    /// Maps `meta` onto `dir`: a multi-file torrent goes in `dir/NAME/...`,
    /// a single file is `dir/NAME`. Opens nothing yet.
    pub fn new(meta: &Metainfo, dir: &Path) -> Storage {
        let root = if meta.multi_file { dir.join(&meta.name) } else { dir.to_path_buf() };
        let slots = meta
            .files
            .iter()
            .map(|f| {
                let mut path = root.clone();
                for c in &f.path {
                    path.push(c);
                }
                Slot { path, length: f.length, padding: f.padding, file: None }
            })
            .collect();
        Storage { layout: meta.layout(), slots }
    }

    /// Opens the files that exist, read-only (for checking and seeding).
    pub fn open_existing(&mut self) {
        for s in self.slots.iter_mut().filter(|s| !s.padding) {
            s.file = File::open(&s.path).ok();
        }
    }

    /// Creates directories and files (sparse, at their full length) and
    /// opens them for reading and writing.
    pub fn create_all(&mut self) -> io::Result<()> {
        for s in self.slots.iter_mut().filter(|s| !s.padding) {
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
            if !s.padding {
                let f = s.file.as_ref().ok_or_else(|| io::Error::other("file not open"))?;
                f.write_all_at(&data[pos..pos + n], span.offset)?;
            }
            pos += n;
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
            if !s.padding {
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

    /// Whether every file a piece touches is open and long enough.
    fn piece_present(&self, piece: u32) -> bool {
        let Some(spans) = self.layout.piece_spans(piece) else {
            return false;
        };
        spans.iter().all(|sp| {
            let s = &self.slots[sp.file];
            s.padding
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
