//! The node's data directory, in redb: every replicated entry (live values
//! and tombstones, all namespaces) plus the node's identity. One thread
//! writes, with group commit: every write waiting when a transaction starts
//! goes into it, and each writer is told only once its write is durable,
//! so an acknowledged write survives a SIGKILL. What it writes is the
//! member machine's [`Persist`] output, in order.
//!
//! Damage is found, not served. Every stored entry carries a checksum (the
//! first 8 bytes of SHA-1 over its key and value), and so does the node's
//! identity; at start redb's integrity check runs and every entry is
//! verified. A damaged database (flipped bytes, a file emptied or cut
//! short, a file redb cannot open or panics on) stops the node with a
//! message naming the file, unless it is started with `--repair`: then a
//! new database is built from what verifies, the damaged file is kept
//! beside it, and the node, under a new node id, fetches the rest from its
//! peers by anti-entropy once it joins. A data directory with no database is a new
//! node; an existing but empty file never is.
//!
//! After a failed transaction (a full disk) redb answers every later one
//! with `PreviousIo`: the writer reopens the database before the next one.

use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use rumor_core::replica::{Entry, Namespace};
use sha1::{Digest, Sha1};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, PoisonError, RwLock};

const ENTRIES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("entries");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Most jobs folded into one transaction.
const BATCH_MAX: usize = 4096;
/// The database file in the data directory.
const FILE: &str = "rumor.redb";
/// Left in the data directory while its database is known damaged, with
/// what was found: later starts refuse too, even where redb's own check
/// already patched the file over.
const DAMAGE_NOTE: &str = "rumor.redb.damaged";
/// `META["format"]`: 2 = checksummed entries. Databases without it hold
/// plain entries (format 1): read once, then rewritten with checksums.
const FORMAT: u64 = 2;
/// Bytes of checksum before each stored entry.
const SUM_BYTES: usize = 8;

// One change to persist: the member machine's persistence output.
use rumor_core::member::Persist;

/// Something to run once the operations before it are durable (`Ok`) or
/// have failed to be written (`Err` with the reason).
pub type Ack = Box<dyn FnOnce(Result<(), String>) + Send>;

enum Job {
    Ops(Vec<Persist>, Option<Ack>),
    Stop,
}

/// What a data directory held at start.
pub struct Loaded {
    /// This node's id (made and stored on first start).
    pub node_id: u64,
    /// The incarnation of the last run.
    pub incarnation: u64,
    /// Every entry stored (all verified).
    pub entries: Vec<Entry>,
}

/// Handle to the writer thread.
pub struct Persister {
    tx: mpsc::Sender<Job>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Shared with the torrent session's resume store.
    db: SharedDb,
}

/// The node's open database, shared by the writer thread of entries and
/// the node's other stores (the torrent session's fast resume, in a table
/// of its own). One `Database` per file, since redb locks the file. After
/// a failed transaction (a full disk) redb refuses every later one
/// (`PreviousIo`), so whoever sees a failure closes it and the next use,
/// by anyone, opens it again.
#[derive(Clone)]
pub struct SharedDb {
    db: Arc<RwLock<Option<Database>>>,
    path: Arc<PathBuf>,
}

impl SharedDb {
    fn new(db: Database, path: PathBuf) -> SharedDb {
        SharedDb { db: Arc::new(RwLock::new(Some(db))), path: Arc::new(path) }
    }

    /// A database of its own at `path` (created if missing), for a store
    /// used without the node's (tests).
    /// The node's own file is already open through its [`Persister`]: use
    /// [`Persister::database`] for that one.
    #[cfg(test)]
    pub fn open(path: &Path) -> Result<SharedDb, String> {
        let db = catch_unwind(|| Database::create(path))
            .map_err(|p| format!("cannot open {}: {}", path.display(), panic_text(p.as_ref())))?
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        Ok(SharedDb::new(db, path.to_path_buf()))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the database, opening it again first if a failure
    /// closed it. A failure of `f` (or a redb panic, caught) closes it.
    pub fn with<T>(&self, f: impl FnOnce(&Database) -> Result<T, String>) -> Result<T, String> {
        self.ensure_open()?;
        let guard = self.db.read().unwrap_or_else(PoisonError::into_inner);
        let Some(db) = guard.as_ref() else {
            return Err(format!("{}: closed after a failure", self.path.display()));
        };
        let outcome = catch_unwind(AssertUnwindSafe(|| f(db)))
            .unwrap_or_else(|p| Err(format!("redb failed ({})", panic_text(p.as_ref()))));
        drop(guard);
        if outcome.is_err() {
            self.close();
        }
        outcome
    }

    fn ensure_open(&self) -> Result<(), String> {
        if self.db.read().unwrap_or_else(PoisonError::into_inner).is_some() {
            return Ok(());
        }
        let mut slot = self.db.write().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            let path = self.path.as_path();
            match catch_unwind(|| Database::open(path)) {
                Ok(Ok(db)) => {
                    tracing::info!(path = %path.display(), "database reopened after an I/O error");
                    *slot = Some(db);
                }
                Ok(Err(e)) => return Err(format!("cannot reopen {}: {e}", path.display())),
                Err(p) => return Err(format!("cannot reopen {}: {}", path.display(), panic_text(p.as_ref()))),
            }
        }
        Ok(())
    }

    /// Closes the database, so that the next use opens it again (redb
    /// refuses every transaction after a failed one until then).
    fn close(&self) {
        let taken = self.db.write().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(db) = taken {
            let _ = catch_unwind(AssertUnwindSafe(move || drop(db)));
        }
    }
}

fn key(ns: Namespace, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + key.len());
    k.extend_from_slice(&ns.0.to_be_bytes());
    k.extend_from_slice(key);
    k
}

/// The checksum of a stored entry: it covers the table key too, so an
/// entry cannot turn up under another key.
fn entry_sum(table_key: &[u8], body: &[u8]) -> [u8; SUM_BYTES] {
    let mut h = Sha1::new();
    h.update((table_key.len() as u64).to_be_bytes());
    h.update(table_key);
    h.update(body);
    let d = h.finalize();
    let mut out = [0u8; SUM_BYTES];
    out.copy_from_slice(&d[..SUM_BYTES]);
    out
}

/// The stored form of an entry: checksum, then the postcard bytes.
fn encode(e: &Entry) -> Result<(Vec<u8>, Vec<u8>), String> {
    let k = key(e.ns, &e.key);
    let body = postcard::to_stdvec(e).map_err(|e| e.to_string())?;
    let mut v = Vec::with_capacity(SUM_BYTES + body.len());
    v.extend_from_slice(&entry_sum(&k, &body));
    v.extend_from_slice(&body);
    Ok((k, v))
}

/// The entry a stored row holds, if it verifies.
fn decode(table_key: &[u8], value: &[u8], checksummed: bool) -> Option<Entry> {
    let body = if checksummed {
        let (sum, body) = value.split_at_checked(SUM_BYTES)?;
        if sum != entry_sum(table_key, body) {
            return None;
        }
        body
    } else {
        value
    };
    let e: Entry = postcard::from_bytes(body).ok()?;
    (key(e.ns, &e.key) == table_key).then_some(e)
}

/// The checksum of the node's identity and incarnation.
fn meta_sum(node_id: u64, incarnation: u64) -> u64 {
    let mut h = Sha1::new();
    h.update(b"rumor meta");
    h.update(node_id.to_be_bytes());
    h.update(incarnation.to_be_bytes());
    let d = h.finalize();
    u64::from_be_bytes(d[..8].try_into().expect("8 bytes"))
}

/// What a panic carried, as text.
fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}

/// What reading a database found.
#[derive(Default)]
struct Inspection {
    /// The database, if redb opened it.
    db: Option<Database>,
    node_id: Option<u64>,
    incarnation: u64,
    /// Entries that verified.
    entries: Vec<Entry>,
    /// Rows that did not.
    bad_rows: u64,
    /// Rows in the table, as far as they could be counted.
    rows: u64,
    /// A database of the first format (no checksums): rewrite it.
    old_format: bool,
    /// What is wrong; empty when nothing is.
    problems: Vec<String>,
    /// Why the file cannot be used that is no damage (another process has
    /// it open, no permission): an error, but no reason to repair.
    unusable: Option<String>,
}

/// Opens `path` and reads everything, verifying it; never panics (a redb
/// panic is one more problem found).
fn inspect(path: &Path) -> Inspection {
    match catch_unwind(AssertUnwindSafe(|| inspect_unguarded(path))) {
        Ok(found) => found,
        Err(p) => Inspection {
            problems: vec![format!("redb failed reading it ({})", panic_text(p.as_ref()))],
            ..Inspection::default()
        },
    }
}

fn inspect_unguarded(path: &Path) -> Inspection {
    let mut found = Inspection::default();
    let len = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) => {
            found.unusable = Some(e.to_string());
            return found;
        }
    };
    if len == 0 {
        found.problems.push(
            "it is empty (0 bytes), which no database of a node ever is: a new node's data directory has no file"
                .into(),
        );
        return found;
    }
    let mut db = match Database::builder().open(path) {
        Ok(db) => db,
        Err(e) => {
            use redb::{DatabaseError as D, StorageError as S};
            match &e {
                D::DatabaseAlreadyOpen => found.unusable = Some("another process has it open".into()),
                D::Storage(S::Io(io)) if io.kind() != std::io::ErrorKind::UnexpectedEof => {
                    found.unusable = Some(e.to_string())
                }
                _ => found.problems.push(format!("redb cannot open it ({e}); it is {len} bytes long")),
            }
            return found;
        }
    };
    match db.check_integrity() {
        Ok(true) => {}
        Ok(false) => found.problems.push("redb's integrity check failed (redb patched the file over)".into()),
        Err(e) => found.problems.push(format!("redb's integrity check failed ({e})")),
    }
    read_all(&db, &mut found);
    found.db = Some(db);
    if found.bad_rows > 0 {
        found.problems.push(format!("{} of {} stored entries fail their checksum", found.bad_rows, found.rows));
    }
    found
}

/// Reads the identity and every entry of `db` into `found`.
fn read_all(db: &Database, found: &mut Inspection) {
    let txn = match db.begin_read() {
        Ok(t) => t,
        Err(e) => return found.problems.push(format!("cannot read it ({e})")),
    };
    let meta = match txn.open_table(META) {
        Ok(t) => t,
        Err(e) => return found.problems.push(format!("its node id cannot be read ({e})")),
    };
    let get = |k: &str| meta.get(k).map(|v| v.map(|v| v.value()));
    let (id, inc, format, sum) = match (get("node_id"), get("incarnation"), get("format"), get("meta_sum")) {
        (Ok(id), Ok(inc), Ok(format), Ok(sum)) => (id, inc.unwrap_or(0), format, sum),
        _ => return found.problems.push("its node id cannot be read".into()),
    };
    found.old_format = format.is_none();
    match (id, format) {
        (None, _) => found.problems.push("it holds no node id".into()),
        (Some(_), Some(f)) if f != FORMAT => {
            found.problems.push(format!("unknown format {f} (this build reads {FORMAT})"))
        }
        (Some(id), Some(_)) if sum != Some(meta_sum(id, inc)) => {
            found.problems.push("its node id or incarnation fails its checksum".into())
        }
        (Some(id), _) => {
            found.node_id = Some(id);
            found.incarnation = inc;
        }
    }
    let table = match txn.open_table(ENTRIES) {
        Ok(t) => t,
        // A node that never stored an entry has no table yet.
        Err(redb::TableError::TableDoesNotExist(_)) => return,
        Err(e) => return found.problems.push(format!("its entries cannot be read ({e})")),
    };
    let expected = table.len().unwrap_or(0);
    let rows = match table.iter() {
        Ok(rows) => rows,
        Err(e) => return found.problems.push(format!("its entries cannot be read ({e})")),
    };
    for row in rows {
        let (k, v) = match row {
            Ok(kv) => kv,
            Err(e) => {
                found.problems.push(format!("reading its entries failed after {} ({e})", found.rows));
                break;
            }
        };
        found.rows += 1;
        match decode(k.value(), v.value(), !found.old_format) {
            Some(e) => found.entries.push(e),
            None => found.bad_rows += 1,
        }
    }
    if found.rows < expected {
        found.problems.push(format!("{} of its {expected} entries could not be reached", expected - found.rows));
        found.bad_rows += expected - found.rows;
        found.rows = expected;
    }
}

/// Opens (or creates) the database in `dir`; a new directory gets
/// `fresh_node_id` as its node id. A damaged database is an error naming
/// the file and what is wrong, unless `repair`: then what verifies is kept
/// in a new database (the damaged file stays beside it) and the node comes
/// up with that, under `fresh_node_id`.
pub fn open(dir: &Path, fresh_node_id: u64, repair: bool) -> Result<(Persister, Loaded), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path = dir.join(FILE);
    let note = dir.join(DAMAGE_NOTE);
    let (db, loaded) = if !path.exists() {
        let _ = std::fs::remove_file(&note);
        (create(&path, fresh_node_id, 0, &[])?, Loaded { node_id: fresh_node_id, incarnation: 0, entries: Vec::new() })
    } else {
        let mut found = inspect(&path);
        if let Some(why) = found.unusable.take() {
            return Err(format!("cannot open {}: {why}", path.display()));
        }
        if let Ok(earlier) = std::fs::read_to_string(&note) {
            if found.problems.is_empty() {
                found.problems.push(format!("an earlier start found it damaged: {}", earlier.trim()));
            }
        }
        if found.problems.is_empty() {
            let node_id = found.node_id.expect("a database without problems has a node id");
            let db = found.db.take().expect("a database without problems is open");
            if found.old_format {
                upgrade(&db, node_id, found.incarnation, &found.entries)
                    .map_err(|e| format!("{}: cannot add checksums to its entries: {e}", path.display()))?;
                tracing::info!(path = %path.display(), entries = found.entries.len(), "stored entries now carry checksums");
            }
            (db, Loaded { node_id, incarnation: found.incarnation, entries: found.entries })
        } else if !repair {
            let what = found.problems.join("; ");
            let _ = std::fs::write(&note, format!("{what}\n"));
            return Err(format!(
                "{} is damaged: {what}. Refusing to start on it. Start with --repair to keep every entry that \
                 verifies ({} found) and fetch the rest from the cluster's peers once joined; the damaged file \
                 is kept beside the new one",
                path.display(),
                found.entries.len()
            ));
        } else {
            let carried = found.db.as_ref().map(other_tables).unwrap_or_default();
            drop(found.db.take());
            let kept = dir.join(format!("{FILE}.bad-{}", unix_secs()));
            // A repaired node comes back as a new member: peers send a node
            // only its own writes past the newest it holds, so a database
            // with holes must not claim to be the writer of what it kept.
            // Under a new id every kept entry is another writer's, and the
            // peers send all that is missing.
            let node_id = fresh_node_id;
            let building = dir.join(format!("{FILE}.repairing"));
            let _ = std::fs::remove_file(&building);
            let repaired = create(&building, node_id, found.incarnation, &found.entries)?;
            put_tables(&repaired, &carried).map_err(|e| format!("{}: {e}", building.display()))?;
            drop(repaired);
            std::fs::rename(&path, &kept).map_err(|e| format!("cannot move {} aside: {e}", path.display()))?;
            std::fs::rename(&building, &path).map_err(|e| format!("cannot put {} in place: {e}", path.display()))?;
            let _ = std::fs::remove_file(&note);
            tracing::warn!(
                path = %path.display(),
                kept = found.entries.len(),
                dropped = found.bad_rows,
                damaged_copy = %kept.display(),
                node_id = format!("{node_id:016x}"),
                "repaired a damaged database ({}): kept every entry that verifies; the rest comes back from peers once joined",
                found.problems.join("; ")
            );
            let db = Database::open(&path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
            (db, Loaded { node_id, incarnation: found.incarnation, entries: found.entries })
        }
    };
    let (tx, rx) = mpsc::channel();
    let node_id = loaded.node_id;
    let db = SharedDb::new(db, path);
    let shared = db.clone();
    let thread = std::thread::Builder::new()
        .name("rumor-persist".into())
        .spawn(move || writer(Writer { db: shared, node_id }, rx))
        .map_err(|e| e.to_string())?;
    Ok((Persister { tx, thread: Some(thread), db }, loaded))
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A stored row, key and value.
type Row = (Vec<u8>, Vec<u8>);

/// The rows of the node's other stores (tables other than the entries and
/// the identity, such as the torrent session's `torrents`), read as far
/// as they can be from a database being repaired: each store checks its
/// own rows when it loads them, so they are carried over as they are.
/// Never panics; what cannot be read is logged and left behind.
fn other_tables(db: &Database) -> Vec<(String, Vec<Row>)> {
    use redb::TableHandle;
    let mut out = Vec::new();
    let read = catch_unwind(AssertUnwindSafe(|| -> Result<(), String> {
        let txn = db.begin_read().map_err(|e| e.to_string())?;
        let names: Vec<String> = txn.list_tables().map_err(|e| e.to_string())?.map(|t| t.name().to_string()).collect();
        for name in names.into_iter().filter(|n| n != ENTRIES.name() && n != META.name()) {
            let def: TableDefinition<&[u8], &[u8]> = TableDefinition::new(&name);
            let mut rows = Vec::new();
            let copied = txn.open_table(def).map_err(|e| e.to_string()).and_then(|t| {
                for row in t.iter().map_err(|e| e.to_string())? {
                    let (k, v) = row.map_err(|e| e.to_string())?;
                    rows.push((k.value().to_vec(), v.value().to_vec()));
                }
                Ok(())
            });
            if let Err(e) = copied {
                tracing::warn!(table = name, kept = rows.len(), "repair: the rest of this table is left behind: {e}");
            }
            out.push((name, rows));
        }
        Ok(())
    }))
    .unwrap_or_else(|p| Err(panic_text(p.as_ref())));
    if let Err(e) = read {
        tracing::warn!("repair: the tables of the node's other stores could not all be read: {e}");
    }
    out
}

/// Writes rows read by [`other_tables`] into `db`, in one transaction.
fn put_tables(db: &Database, tables: &[(String, Vec<Row>)]) -> Result<(), String> {
    let txn = db.begin_write().map_err(|e| e.to_string())?;
    for (name, rows) in tables {
        let mut t = txn.open_table(TableDefinition::<&[u8], &[u8]>::new(name)).map_err(|e| e.to_string())?;
        for (k, v) in rows {
            t.insert(k.as_slice(), v.as_slice()).map_err(|e| e.to_string())?;
        }
    }
    txn.commit().map_err(|e| e.to_string())
}

/// A new database at `path` holding this identity and these entries.
fn create(path: &Path, node_id: u64, incarnation: u64, entries: &[Entry]) -> Result<Database, String> {
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let db = Database::create(path).map_err(|e| err(&e))?;
    upgrade(&db, node_id, incarnation, entries).map_err(|e| err(&e))?;
    Ok(db)
}

/// Writes the identity, the format and every entry, checksummed, in one
/// transaction.
fn upgrade(db: &Database, node_id: u64, incarnation: u64, entries: &[Entry]) -> Result<(), String> {
    let txn = db.begin_write().map_err(|e| e.to_string())?;
    {
        let mut meta = txn.open_table(META).map_err(|e| e.to_string())?;
        for (k, v) in [
            ("node_id", node_id),
            ("incarnation", incarnation),
            ("format", FORMAT),
            ("meta_sum", meta_sum(node_id, incarnation)),
        ] {
            meta.insert(k, v).map_err(|e| e.to_string())?;
        }
        let mut table = txn.open_table(ENTRIES).map_err(|e| e.to_string())?;
        for e in entries {
            let (k, v) = encode(e)?;
            table.insert(k.as_slice(), v.as_slice()).map_err(|e| e.to_string())?;
        }
    }
    txn.commit().map_err(|e| e.to_string())
}

impl Persister {
    /// Queues `ops`; `ack` runs once they are durable.
    pub fn submit(&self, ops: Vec<Persist>, ack: Option<Ack>) {
        if let Err(mpsc::SendError(Job::Ops(_, Some(ack)))) = self.tx.send(Job::Ops(ops, ack)) {
            ack(Err("the persistence thread is gone".into()));
        }
    }

    /// The node's database, for the node's other stores (each in tables
    /// of its own). Drop every copy before opening the directory again.
    pub fn database(&self) -> SharedDb {
        self.db.clone()
    }

    /// Writes what is queued and stops the thread.
    pub fn shutdown(mut self) {
        let _ = self.tx.send(Job::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The writer thread's database: closed after a failed transaction and
/// opened again before the next one (see [`SharedDb::with`]).
struct Writer {
    db: SharedDb,
    node_id: u64,
}

impl Writer {
    fn commit(&mut self, ops: Vec<Persist>) -> Result<(), String> {
        let node_id = self.node_id;
        self.db.with(|db| commit(db, node_id, ops))
    }
}

fn writer(mut w: Writer, rx: mpsc::Receiver<Job>) {
    let mut stop = false;
    while !stop {
        let Ok(first) = rx.recv() else { break };
        let mut batch = vec![first];
        while batch.len() < BATCH_MAX {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let mut ops = Vec::new();
        let mut acks = Vec::new();
        for job in batch {
            match job {
                Job::Stop => stop = true,
                Job::Ops(o, ack) => {
                    ops.extend(o);
                    acks.extend(ack);
                }
            }
        }
        let outcome = if ops.is_empty() {
            Ok(())
        } else {
            w.commit(ops)
                .inspect_err(|e| tracing::error!(path = %w.db.path().display(), "persisting entries failed: {e}"))
        };
        for ack in acks {
            ack(outcome.clone());
        }
    }
}

/// Writes `ops` in one durable transaction.
fn commit(db: &Database, node_id: u64, ops: Vec<Persist>) -> Result<(), String> {
    let txn = db.begin_write().map_err(|e| e.to_string())?;
    {
        let mut table = txn.open_table(ENTRIES).map_err(|e| e.to_string())?;
        let mut meta = txn.open_table(META).map_err(|e| e.to_string())?;
        for op in ops {
            match op {
                Persist::Put(e) => {
                    let (k, v) = encode(&e)?;
                    table.insert(k.as_slice(), v.as_slice()).map(drop)
                }
                Persist::Remove(ns, k) => table.remove(key(ns, &k).as_slice()).map(drop),
                Persist::Incarnation(n) => {
                    meta.insert("incarnation", n).map(drop).map_err(|e| e.to_string())?;
                    meta.insert("meta_sum", meta_sum(node_id, n)).map(drop)
                }
            }
            .map_err(|e| e.to_string())?;
        }
    }
    txn.commit().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn entry(i: u32) -> Entry {
        Entry {
            ns: Namespace::DNS,
            key: Bytes::from(format!("key-{i}")),
            value: Bytes::from(format!("value-{i}")),
            writer: 7,
            version: rumor_core::replica::Version(u64::from(i) + 1),
            expires_ms: 0,
            deleted: false,
        }
    }

    #[test]
    fn a_stored_entry_verifies_and_a_flipped_bit_anywhere_does_not() {
        let e = entry(1);
        let (k, v) = encode(&e).unwrap();
        assert_eq!(decode(&k, &v, true), Some(e));
        for i in 0..v.len() {
            let mut bad = v.clone();
            bad[i] ^= 0x10;
            assert_eq!(decode(&k, &bad, true), None, "byte {i}");
        }
        let mut other = k.clone();
        other[3] ^= 1;
        assert_eq!(decode(&other, &v, true), None, "an entry under another key");
    }

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rumor-persist-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn a_shared_database_closed_by_a_failure_is_opened_again_by_its_next_user() {
        let dir = scratch("shared");
        let (p, _) = open(&dir, 5, false).unwrap();
        let db = p.database();
        assert_eq!(db.with(|_| Err::<(), _>("disk full".to_string())), Err("disk full".into()));
        assert!(db.db.read().unwrap().is_none(), "closed after the failure");
        // A panic inside is caught and closes it too.
        assert!(db.with(|_| -> Result<(), String> { panic!("redb panicked") }).is_err());
        // The writer thread reopens it for the next entries.
        let (tx, rx) = mpsc::channel();
        p.submit(vec![Persist::Put(entry(1))], Some(Box::new(move |r| tx.send(r).unwrap())));
        assert_eq!(rx.recv().unwrap(), Ok(()));
        assert!(db.db.read().unwrap().is_some());
        drop(db);
        p.shutdown();
        let (p, loaded) = open(&dir, 6, false).unwrap();
        assert_eq!(loaded.entries, vec![entry(1)]);
        p.shutdown();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_repair_keeps_the_tables_of_the_nodes_other_stores() {
        let dir = scratch("repair-tables");
        let (p, _) = open(&dir, 5, false).unwrap();
        let (tx, rx) = mpsc::channel();
        p.submit(vec![Persist::Put(entry(1)), Persist::Put(entry(2))], Some(Box::new(move |r| tx.send(r).unwrap())));
        assert_eq!(rx.recv().unwrap(), Ok(()));
        let torrents: TableDefinition<&[u8], &[u8]> = TableDefinition::new("torrents");
        p.database()
            .with(|db| {
                let txn = db.begin_write().map_err(|e| e.to_string())?;
                {
                    let mut t = txn.open_table(torrents).map_err(|e| e.to_string())?;
                    t.insert(b"infohash".as_slice(), b"record".as_slice()).map_err(|e| e.to_string())?;
                    // Damage one entry: the node refuses to start without --repair.
                    let mut e = txn.open_table(ENTRIES).map_err(|e| e.to_string())?;
                    let (k, _) = encode(&entry(2)).unwrap();
                    e.insert(k.as_slice(), b"not an entry".as_slice()).map_err(|e| e.to_string())?;
                }
                txn.commit().map_err(|e| e.to_string())
            })
            .unwrap();
        p.shutdown();
        assert!(open(&dir, 6, false).is_err());
        let (p, loaded) = open(&dir, 6, true).unwrap();
        assert_eq!(loaded.entries, vec![entry(1)]);
        let row = p
            .database()
            .with(|db| {
                let txn = db.begin_read().map_err(|e| e.to_string())?;
                let t = txn.open_table(torrents).map_err(|e| e.to_string())?;
                let v = t.get(b"infohash".as_slice()).map_err(|e| e.to_string())?;
                Ok(v.map(|v| v.value().to_vec()))
            })
            .unwrap();
        assert_eq!(row.as_deref(), Some(b"record".as_slice()));
        p.shutdown();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_empty_database_file_is_damage_not_a_new_node() {
        let dir = scratch("empty");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(FILE), b"").unwrap();
        let Err(e) = open(&dir, 1, false) else { panic!("an empty file opened") };
        assert!(e.contains("rumor.redb is damaged") && e.contains("--repair"), "{e}");
        // Refused again, and then repaired into an empty database.
        assert!(open(&dir, 1, false).is_err());
        let (p, loaded) = open(&dir, 1, true).unwrap();
        assert_eq!((loaded.node_id, loaded.entries.len()), (1, 0));
        p.shutdown();
        let (p, _) = open(&dir, 2, false).unwrap();
        p.shutdown();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_database_another_process_holds_is_in_use_not_damaged() {
        let dir = scratch("in-use");
        let (p, _) = open(&dir, 1, false).unwrap();
        let Err(e) = open(&dir, 2, false) else { panic!("opened twice") };
        assert!(e.contains("another process has it open") && !e.contains("damaged"), "{e}");
        assert!(!dir.join(DAMAGE_NOTE).exists(), "no note of damage is left");
        p.shutdown();
        let (p, loaded) = open(&dir, 2, false).unwrap();
        assert_eq!(loaded.node_id, 1);
        p.shutdown();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_database_of_plain_entries_is_read_once_and_rewritten_with_checksums() {
        let dir = scratch("upgrade");
        std::fs::create_dir_all(&dir).unwrap();
        {
            let db = Database::create(dir.join(FILE)).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut meta = txn.open_table(META).unwrap();
                meta.insert("node_id", 42).unwrap();
                meta.insert("incarnation", 3).unwrap();
                let mut t = txn.open_table(ENTRIES).unwrap();
                for i in 0..10 {
                    let e = entry(i);
                    t.insert(key(e.ns, &e.key).as_slice(), postcard::to_stdvec(&e).unwrap().as_slice()).unwrap();
                }
            }
            txn.commit().unwrap();
        }
        for _ in 0..2 {
            let (p, loaded) = open(&dir, 1, false).unwrap();
            assert_eq!((loaded.node_id, loaded.incarnation, loaded.entries.len()), (42, 3, 10));
            p.shutdown();
        }
        let found = inspect(&dir.join(FILE));
        assert!(!found.old_format && found.problems.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
