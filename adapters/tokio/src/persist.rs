//! Records on disk, in redb, written by one thread with group commit: every
//! write waiting when a transaction starts goes into it, and each writer is
//! told only once its write is durable, so an acknowledged write survives a
//! SIGKILL.

use redb::{Database, ReadableTable, TableDefinition};
use rumor_core::dns::{RRset, RType};
use std::path::Path;
use std::sync::mpsc;

const RRSETS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("rrsets");
/// Most operations folded into one transaction.
const BATCH_MAX: usize = 4096;

/// One change to persist.
pub enum Op {
    /// Store (or replace) an RRset.
    Put(RRset),
    /// Forget an RRset.
    Delete(rumor_core::dns::Name, RType),
}

/// Something to run once the operations before it are durable (`Ok`) or
/// have failed to be written (`Err` with the reason).
pub type Ack = Box<dyn FnOnce(Result<(), String>) + Send>;

enum Job {
    Ops(Vec<Op>, Option<Ack>),
    Stop,
}

/// Handle to the writer thread.
pub struct Persister {
    tx: mpsc::Sender<Job>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn key(name: &rumor_core::dns::Name, rtype: RType) -> Vec<u8> {
    let mut k = name.to_lowercase().canonical_key();
    k.extend_from_slice(&rtype.0.to_be_bytes());
    k
}

/// Opens (or creates) the database in `dir` and reads back every RRset
/// still alive at `now_ms`; expired and unreadable ones are deleted.
pub fn open(dir: &Path, now_ms: u64) -> Result<(Persister, Vec<RRset>), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path = dir.join("rumor.redb");
    let db = Database::create(&path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let mut live = Vec::new();
    let mut dead: Vec<Vec<u8>> = Vec::new();
    {
        let txn = db.begin_write().map_err(|e| e.to_string())?;
        {
            let table = txn.open_table(RRSETS).map_err(|e| e.to_string())?;
            for row in table.iter().map_err(|e| e.to_string())? {
                let (k, v) = row.map_err(|e| e.to_string())?;
                match RRset::from_bytes(v.value()) {
                    Ok(set) if !set.is_expired(now_ms) => live.push(set),
                    Ok(_) => dead.push(k.value().to_vec()),
                    Err(e) => {
                        tracing::warn!("dropping an unreadable stored record: {e}");
                        dead.push(k.value().to_vec());
                    }
                }
            }
        }
        {
            let mut table = txn.open_table(RRSETS).map_err(|e| e.to_string())?;
            for k in &dead {
                table.remove(k.as_slice()).map_err(|e| e.to_string())?;
            }
        }
        txn.commit().map_err(|e| e.to_string())?;
    }
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("rumor-persist".into())
        .spawn(move || writer(db, rx))
        .map_err(|e| e.to_string())?;
    Ok((Persister { tx, thread: Some(thread) }, live))
}

impl Persister {
    /// Queues `ops`; `ack` runs once they are durable.
    pub fn submit(&self, ops: Vec<Op>, ack: Option<Ack>) {
        if self.tx.send(Job::Ops(ops, ack)).is_err() {
            tracing::error!("the persistence thread is gone; a write was not stored");
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
        let outcome = commit(&db, ops).map_err(|e| {
            tracing::error!("persisting records failed: {e}");
            format!("the write is served but could not be stored on disk: {e}")
        });
        for ack in acks {
            ack(outcome.clone());
        }
    }
}

/// Writes `ops` in one durable transaction.
fn commit(db: &Database, ops: Vec<Op>) -> Result<(), String> {
    let txn = db.begin_write().map_err(|e| e.to_string())?;
    {
        let mut table = txn.open_table(RRSETS).map_err(|e| e.to_string())?;
        for op in ops {
            match op {
                Op::Put(set) => {
                    table.insert(key(&set.owner, set.rtype).as_slice(), set.to_bytes().as_slice()).map(drop)
                }
                Op::Delete(name, rtype) => table.remove(key(&name, rtype).as_slice()).map(drop),
            }
            .map_err(|e| e.to_string())?;
        }
    }
    txn.commit().map_err(|e| e.to_string())
}
