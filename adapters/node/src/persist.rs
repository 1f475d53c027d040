//! The node's data directory, in redb: every replicated entry (live values
//! and tombstones, all namespaces) plus the node's identity. One thread
//! writes, with group commit: every write waiting when a transaction starts
//! goes into it, and each writer is told only once its write is durable,
//! so an acknowledged write survives a SIGKILL. What it writes is the
//! member machine's [`Persist`] output, in order.

use redb::{Database, ReadableTable, TableDefinition};
use rumor_core::replica::{Entry, Namespace};
use std::path::Path;
use std::sync::mpsc;

const ENTRIES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("entries");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Most jobs folded into one transaction.
const BATCH_MAX: usize = 4096;

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
    /// Every entry stored, unreadable ones left out.
    pub entries: Vec<Entry>,
}

/// Handle to the writer thread.
pub struct Persister {
    tx: mpsc::Sender<Job>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn key(ns: Namespace, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + key.len());
    k.extend_from_slice(&ns.0.to_be_bytes());
    k.extend_from_slice(key);
    k
}

/// Opens (or creates) the database in `dir`; a new directory gets
/// `fresh_node_id` as its node id.
pub fn open(dir: &Path, fresh_node_id: u64) -> Result<(Persister, Loaded), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path = dir.join("rumor.redb");
    let db = Database::create(&path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let txn = db.begin_write().map_err(|e| err(&e))?;
    let mut entries = Vec::new();
    let node_id;
    let incarnation;
    {
        let mut meta = txn.open_table(META).map_err(|e| err(&e))?;
        let stored_id = meta.get("node_id").map_err(|e| err(&e))?.map(|v| v.value());
        node_id = match stored_id {
            Some(id) => id,
            None => {
                meta.insert("node_id", fresh_node_id).map_err(|e| err(&e))?;
                fresh_node_id
            }
        };
        incarnation = meta.get("incarnation").map_err(|e| err(&e))?.map_or(0, |v| v.value());
        let table = txn.open_table(ENTRIES).map_err(|e| err(&e))?;
        for row in table.iter().map_err(|e| err(&e))? {
            let (_, v) = row.map_err(|e| err(&e))?;
            match postcard::from_bytes::<Entry>(v.value()) {
                Ok(e) => entries.push(e),
                Err(e) => tracing::warn!("skipping an unreadable stored entry: {e}"),
            }
        }
    }
    txn.commit().map_err(|e| err(&e))?;
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("rumor-persist".into())
        .spawn(move || writer(db, rx))
        .map_err(|e| e.to_string())?;
    Ok((Persister { tx, thread: Some(thread) }, Loaded { node_id, incarnation, entries }))
}

impl Persister {
    /// Queues `ops`; `ack` runs once they are durable.
    pub fn submit(&self, ops: Vec<Persist>, ack: Option<Ack>) {
        if let Err(mpsc::SendError(Job::Ops(_, Some(ack)))) = self.tx.send(Job::Ops(ops, ack)) {
            ack(Err("the persistence thread is gone".into()));
        }
    }

    /// Writes what is queued and stops the thread.
    pub fn shutdown(mut self) {
        let _ = self.tx.send(Job::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn writer(db: Database, rx: mpsc::Receiver<Job>) {
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
            commit(&db, ops).map_err(|e| {
                tracing::error!("persisting entries failed: {e}");
                format!("the write is served but could not be stored on disk: {e}")
            })
        };
        for ack in acks {
            ack(outcome.clone());
        }
    }
}

/// Writes `ops` in one durable transaction.
fn commit(db: &Database, ops: Vec<Persist>) -> Result<(), String> {
    let txn = db.begin_write().map_err(|e| e.to_string())?;
    {
        let mut table = txn.open_table(ENTRIES).map_err(|e| e.to_string())?;
        let mut meta = txn.open_table(META).map_err(|e| e.to_string())?;
        for op in ops {
            match op {
                Persist::Put(e) => {
                    let bytes = postcard::to_stdvec(&e).map_err(|e| e.to_string())?;
                    table.insert(key(e.ns, &e.key).as_slice(), bytes.as_slice()).map(drop)
                }
                Persist::Remove(ns, k) => table.remove(key(ns, &k).as_slice()).map(drop),
                Persist::Incarnation(n) => meta.insert("incarnation", n).map(drop),
            }
            .map_err(|e| e.to_string())?;
        }
    }
    txn.commit().map_err(|e| e.to_string())
}
