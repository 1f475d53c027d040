//! Fast resume over the node's database: the torrent session's records
//! (one per torrent, in the `torrents` table of the node's redb file,
//! beside the replicated entries), the files' stamps, and the restart plan.
//!
//! The records, their checksummed stored form and the plan itself are pure
//! and live in the core ([`rumor_core::bt::resume`]); here is what touches
//! the disk: the table ([`ResumeStore`]), the files' sizes and mtimes
//! ([`stamp_files`]), and hashing what the plan says to
//! ([`verify_plan`], through `Storage::check_pieces`).
//!
//! A restart: [`ResumeStore::load_all`], then per torrent [`plan_resume`]
//! (pieces of unchanged files are trusted, every piece overlapping a file
//! whose size or mtime changed is rechecked), then [`verify_plan`] on a
//! worker thread. Writing: record the verified pieces, then take
//! [`stamp_files`] (after those pieces are on disk), then
//! [`ResumeStore::put`] or [`ResumeStore::put_many`]; callers batch (on
//! add and change, every few seconds while pieces verify, on shutdown).
//!
//! mtimes are compared to the nanosecond; on a filesystem that keeps them
//! coarser (FAT: 2 s) an edit that keeps the size within the same tick of
//! the stamp would go unseen, so stamp after writing, not before.

// The torrent session (adapters/node/src/torrents/) is the user of this
// module; until it is merged nothing in the binary calls it.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use redb::{ReadableTable, TableDefinition};
use rumor_core::bt::bitfield::Bitfield;
use rumor_core::bt::metainfo::{Metainfo, Sha1Hash};
use rumor_core::bt::resume::{decode, encode, plan};
pub use rumor_core::bt::resume::{FileStamp, ResumePlan, TorrentRecord};

use super::storage::Storage;
use crate::persist::SharedDb;

/// Infohash -> stored record ([`rumor_core::bt::resume::encode`]).
const TORRENTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("torrents");

/// The session's torrents in the node's database.
#[derive(Clone)]
pub struct ResumeStore {
    db: SharedDb,
}

impl ResumeStore {
    /// The store in `db` (the node's, from `Persister::database`, or one of
    /// its own from `SharedDb::open`); creates its table if missing.
    pub fn new(db: SharedDb) -> Result<Self, String> {
        db.with(|db| {
            let txn = db.begin_write().map_err(|e| e.to_string())?;
            txn.open_table(TORRENTS).map_err(|e| e.to_string())?;
            txn.commit().map_err(|e| e.to_string())
        })
        .map_err(|e| format!("{}: cannot make the torrents table: {e}", db.path().display()))?;
        Ok(ResumeStore { db })
    }

    /// Every record that decodes, in infohash order. A record that does
    /// not (damaged, another format, a key that is no infohash) is logged
    /// and skipped, never a panic; if the table cannot be read at all
    /// (a redb error or panic, caught) what was read before is returned.
    pub fn load_all(&self) -> Vec<([u8; 20], TorrentRecord)> {
        let mut out = Vec::new();
        let read = self.db.with(|db| {
            let txn = db.begin_read().map_err(|e| e.to_string())?;
            let table = match txn.open_table(TORRENTS) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
                Err(e) => return Err(e.to_string()),
            };
            for row in table.iter().map_err(|e| e.to_string())? {
                let (k, v) = row.map_err(|e| format!("after {} records: {e}", out.len()))?;
                let Ok(info_hash) = <[u8; 20]>::try_from(k.value()) else {
                    tracing::warn!(key = hex(k.value()), "torrent record under a key that is no infohash: skipped");
                    continue;
                };
                match decode(&info_hash, v.value()) {
                    Ok(r) => out.push((info_hash, r)),
                    Err(e) => tracing::warn!(infohash = hex(&info_hash), "torrent record skipped: {e}"),
                }
            }
            Ok(())
        });
        if let Err(e) = read {
            tracing::error!(path = %self.db.path().display(), "reading the torrent records failed: {e}");
        }
        out
    }

    /// Stores `record` under `info_hash` (replacing any), durably.
    #[cfg(test)]
    pub fn put(&self, info_hash: [u8; 20], record: &TorrentRecord) -> Result<(), String> {
        self.put_many(&[(info_hash, record)])
    }

    /// Stores several records in one durable transaction (one sync for a
    /// whole session's progress).
    pub fn put_many(&self, records: &[([u8; 20], &TorrentRecord)]) -> Result<(), String> {
        let encoded: Vec<([u8; 20], Vec<u8>)> = records.iter().map(|(ih, r)| (*ih, encode(ih, r))).collect();
        self.db.with(|db| {
            let txn = db.begin_write().map_err(|e| e.to_string())?;
            {
                let mut table = txn.open_table(TORRENTS).map_err(|e| e.to_string())?;
                for (ih, bytes) in &encoded {
                    table.insert(ih.as_slice(), bytes.as_slice()).map_err(|e| e.to_string())?;
                }
            }
            txn.commit().map_err(|e| e.to_string())
        })
    }

    /// Forgets the record of `info_hash` (nothing if there is none).
    pub fn remove(&self, info_hash: [u8; 20]) -> Result<(), String> {
        self.db.with(|db| {
            let txn = db.begin_write().map_err(|e| e.to_string())?;
            {
                let mut table = txn.open_table(TORRENTS).map_err(|e| e.to_string())?;
                table.remove(info_hash.as_slice()).map_err(|e| e.to_string())?;
            }
            txn.commit().map_err(|e| e.to_string())
        })
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Each file of `meta` under `dir` as it is now, where `Storage` puts it
/// (`dir/NAME/...` for a multi-file torrent, `dir/NAME` for one file). A
/// missing file, a padding file and a symlink entry are size 0, mtime 0.
pub fn stamp_files(dir: &Path, meta: &Metainfo) -> Vec<FileStamp> {
    // The same paths as `Storage::new` (names already made safe by the parser).
    let root = if meta.multi_file { dir.join(&meta.name) } else { dir.to_path_buf() };
    meta.files
        .iter()
        .map(|f| {
            if f.padding || f.symlink.is_some() {
                return FileStamp::default();
            }
            let mut path = root.clone();
            path.extend(&f.path);
            match std::fs::metadata(&path) {
                Ok(m) if m.is_file() => FileStamp {
                    size: m.len(),
                    mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
                },
                _ => FileStamp::default(),
            }
        })
        .collect()
}

/// Which pieces of `meta` (downloading into `dir`) to trust and which to
/// hash again, from its `record` and the files now: see
/// [`rumor_core::bt::resume::plan`].
pub fn plan_resume(dir: &Path, meta: &Metainfo, record: &TorrentRecord) -> ResumePlan {
    plan(meta, record, &stamp_files(dir, meta))
}

/// The pieces had after a restart: the plan's trusted pieces and those of
/// its rechecks that hash right, hashed on `threads` threads (`storage`
/// opened first, e.g. `Storage::open_existing`). Blocks: run it on a
/// worker thread. `progress` is called with each piece hashed.
pub fn verify_plan(
    plan: &ResumePlan,
    storage: &Storage,
    expected: &[Sha1Hash],
    threads: usize,
    progress: &(dyn Fn(u32) + Sync),
) -> Bitfield {
    let mut have = plan.trusted.clone();
    for p in storage.check_pieces(&plan.recheck, expected, threads, progress).iter_ones() {
        have.set(p);
    }
    have
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumor_core::bt::metainfo::{Limits, PieceHasher, TorrentBuilder};
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rumor-resume-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn record(n: u8) -> TorrentRecord {
        TorrentRecord {
            torrent: Some(vec![n; 40]),
            magnet: None,
            added_at_ms: 1000 + u64::from(n),
            paused: n.is_multiple_of(2),
            download_limit: Some(u64::from(n) << 10),
            upload_limit: None,
            file_priorities: vec![1, 0, 2],
            queue_position: u32::from(n),
            have: vec![0xF0],
            stamps: vec![FileStamp { size: 5, mtime_ns: -3 }],
        }
    }

    #[test]
    fn records_round_trip_and_replace_and_go() {
        let dir = scratch("roundtrip");
        let store = ResumeStore::new(SharedDb::open(&dir.join("r.redb")).unwrap()).unwrap();
        assert!(store.load_all().is_empty());
        store.put([2; 20], &record(2)).unwrap();
        store.put_many(&[([1; 20], &record(1)), ([3; 20], &record(3))]).unwrap();
        store.put([2; 20], &record(9)).unwrap();
        assert_eq!(store.load_all(), vec![([1; 20], record(1)), ([2; 20], record(9)), ([3; 20], record(3))]);
        store.remove([1; 20]).unwrap();
        store.remove([1; 20]).unwrap();
        assert_eq!(store.load_all().len(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_damaged_record_is_skipped_and_the_rest_load() {
        let dir = scratch("damaged");
        let db = SharedDb::open(&dir.join("r.redb")).unwrap();
        let store = ResumeStore::new(db.clone()).unwrap();
        store.put_many(&[([1; 20], &record(1)), ([2; 20], &record(2)), ([3; 20], &record(3))]).unwrap();
        let mut bent = encode(&[2; 20], &record(2));
        let last = bent.len() - 1;
        bent[last] ^= 0x40;
        db.with(|db| {
            let txn = db.begin_write().map_err(|e| e.to_string())?;
            {
                let mut t = txn.open_table(TORRENTS).map_err(|e| e.to_string())?;
                t.insert([2u8; 20].as_slice(), bent.as_slice()).map_err(|e| e.to_string())?;
                t.insert(b"short key".as_slice(), encode(&[4; 20], &record(4)).as_slice())
                    .map_err(|e| e.to_string())?;
                t.insert([5u8; 20].as_slice(), b"\x01garbage".as_slice()).map_err(|e| e.to_string())?;
                t.insert([6u8; 20].as_slice(), encode(&[7; 20], &record(6)).as_slice()).map_err(|e| e.to_string())?;
            }
            txn.commit().map_err(|e| e.to_string())
        })
        .unwrap();
        let loaded: Vec<[u8; 20]> = store.load_all().into_iter().map(|(k, _)| k).collect();
        assert_eq!(loaded, vec![[1; 20], [3; 20]]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn records_live_in_the_nodes_database_beside_its_entries_across_a_restart() {
        let dir = scratch("node");
        let (p, _) = crate::persist::open(&dir, 11, false).unwrap();
        let store = ResumeStore::new(p.database()).unwrap();
        store.put([9; 20], &record(9)).unwrap();
        drop(store);
        p.shutdown();
        // The node's start checks its database and finds nothing amiss.
        let (p, loaded) = crate::persist::open(&dir, 12, false).unwrap();
        assert_eq!(loaded.node_id, 11);
        let store = ResumeStore::new(p.database()).unwrap();
        assert_eq!(store.load_all(), vec![([9; 20], record(9))]);
        drop(store);
        p.shutdown();
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A two-file torrent of 3 x 16 KiB pieces: a.bin 20000 bytes, b.bin
    /// the rest (piece 1 spans both), its data, and the data written to
    /// `dir` through `Storage`.
    fn downloaded(dir: &Path) -> (Metainfo, Vec<u8>) {
        let data: Vec<u8> = (0..40000u32).map(|i| (i * 7 + i / 300) as u8).collect();
        let mut h = PieceHasher::new(16384);
        h.update(&data);
        let files = vec![(vec!["a.bin".to_string()], 20000), (vec!["b.bin".to_string()], 20000)];
        let meta = TorrentBuilder::multi("t", files, 16384, h.finish()).build(&Limits::default()).unwrap().1;
        let mut st = Storage::new(&meta, dir);
        st.create_all().unwrap();
        for p in 0..3u32 {
            let at = p as usize * 16384;
            st.write(p, 0, &data[at..(at + 16384).min(data.len())]).unwrap();
        }
        (meta, data)
    }

    fn everything(meta: &Metainfo, dir: &Path) -> TorrentRecord {
        TorrentRecord {
            have: Bitfield::full(meta.piece_count()).to_wire(),
            stamps: stamp_files(dir, meta),
            ..TorrentRecord::default()
        }
    }

    fn restart(meta: &Metainfo, dir: &Path, r: &TorrentRecord) -> (ResumePlan, Bitfield, u32) {
        let plan = plan_resume(dir, meta, r);
        let mut st = Storage::new(meta, dir);
        st.open_existing();
        let hashed = AtomicU32::new(0);
        let have = verify_plan(&plan, &st, &meta.pieces, 2, &|_| {
            hashed.fetch_add(1, Ordering::Relaxed);
        });
        (plan, have, hashed.into_inner())
    }

    #[test]
    fn unchanged_files_are_not_hashed_again() {
        let dir = scratch("unchanged");
        let (meta, _) = downloaded(&dir);
        let r = everything(&meta, &dir);
        assert!(r.stamps.iter().all(|s| s.size == 20000 && s.mtime_ns > 0));
        let (plan, have, hashed) = restart(&meta, &dir, &r);
        assert!(plan.recheck.is_empty());
        assert!(have.is_full());
        assert_eq!(hashed, 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_touched_file_has_its_pieces_rechecked_and_a_damaged_one_is_found() {
        let dir = scratch("touched");
        let (meta, _) = downloaded(&dir);
        let r = everything(&meta, &dir);
        // Same size, new bytes, later mtime: b.bin's pieces are 1 and 2.
        let b = dir.join("t").join("b.bin");
        let f = std::fs::OpenOptions::new().write(true).open(&b).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, b"XXXX", 15000).unwrap();
        f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5)).unwrap();
        drop(f);
        let (plan, have, hashed) = restart(&meta, &dir, &r);
        assert_eq!(plan.changed_files, vec![1]);
        assert_eq!(plan.recheck, vec![1, 2]);
        assert_eq!(hashed, 2);
        assert_eq!(have.iter_ones().collect::<Vec<_>>(), vec![0, 1], "piece 2 holds the new bytes");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_truncated_file_leaves_its_pieces_untrusted() {
        let dir = scratch("truncated");
        let (meta, _) = downloaded(&dir);
        let r = everything(&meta, &dir);
        let a = std::fs::OpenOptions::new().write(true).open(dir.join("t").join("a.bin")).unwrap();
        a.set_len(100).unwrap();
        drop(a);
        let (plan, have, _) = restart(&meta, &dir, &r);
        assert_eq!(plan.changed_files, vec![0]);
        assert_eq!(plan.recheck, vec![0, 1]);
        assert_eq!(plan.trusted.iter_ones().collect::<Vec<_>>(), vec![2]);
        assert_eq!(have.iter_ones().collect::<Vec<_>>(), vec![2]);
        // Deleted altogether: the same.
        std::fs::remove_file(dir.join("t").join("a.bin")).unwrap();
        let (_, have, _) = restart(&meta, &dir, &r);
        assert_eq!(have.iter_ones().collect::<Vec<_>>(), vec![2]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn check_pieces_hashes_only_the_pieces_asked() {
        let dir = scratch("check-pieces");
        let (meta, _) = downloaded(&dir);
        let mut st = Storage::new(&meta, &dir);
        st.open_existing();
        let seen = std::sync::Mutex::new(Vec::new());
        let found = st.check_pieces(&[2, 0, 99], &meta.pieces, 4, &|p| seen.lock().unwrap().push(p));
        assert_eq!(found.iter_ones().collect::<Vec<_>>(), vec![0, 2]);
        let mut seen = seen.into_inner().unwrap();
        seen.sort();
        assert_eq!(seen, vec![0, 2]);
        assert!(st.check_pieces(&[], &meta.pieces, 2, &|_| {}).iter_ones().next().is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
