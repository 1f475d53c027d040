//! The node's BitTorrent session (`rumor node --downloads DIR`): any
//! number of torrents in one process, driven through the API.
//!
//! One task ([`Session::run`]) owns the list of torrents; nothing else
//! changes it. Each torrent runs as `rumor get` runs one (a metadata fetch
//! for a magnet link or infohash, [`crate::bt::magnet`], then the
//! download and seeding task of [`crate::bt::client`]), with what the
//! session shares between them:
//!
//! * one peer listener (`--bt-port`) that routes each connection to its
//!   torrent ([`listener`]);
//! * one peer budget ([`listener::Budget`], `--max-peers`, by default
//!   [`PEERS_MAX`] connections);
//! * download and upload rate limits, the session's and each torrent's
//!   ([`limits`]);
//! * a cap on active downloads (`--max-active-downloads`): torrents past
//!   it, in the order they were added, wait paused ("queued");
//! * the node itself as the torrents' overlay tracker: the session
//!   announces each torrent to the node's own tracker (as `/announce`
//!   would, from the node's address), which makes the node a provider in
//!   the cluster's overlay and hands back the other providers, dialed by
//!   the torrent. A torrent's own trackers are announced to by its task.
//!
//! * one DHT node (`--dht-port`, BEP 5) and one Local Service Discovery
//!   listener (BEP 14) for every torrent that is running, not paused nor
//!   queued, and not private: the peers they find go to the torrent's
//!   task the way the overlay's providers do (a magnet's fetch included),
//!   and peers' DHT `port` messages to the node.
//!
//! Every file a torrent writes is under the download directory: the
//! metainfo parser makes every name safe (`..`, separators, ... are
//! renamed), and deleting a torrent's data removes only its own files,
//! each checked to resolve inside the directory.

pub mod api;
pub mod limits;
pub mod listener;
pub mod watch;

use crate::bt::client::{self, Download, Embedded, Handover, Snapshot};
use crate::bt::control::Command as TorrentCommand;
use crate::bt::magnet::{self, MagnetSource};
use crate::bt::mse_stream::Encryption;
use crate::bt::resume::{self, FileStamp, ResumePlan, ResumeStore, TorrentRecord};
use crate::bt::PeerArgs;
use crate::clock::Clock;
use crate::node::{Command as NodeCommand, NodeHandle};
use crate::rt;
use futures::channel::oneshot;
use listener::{Budget, Routes};
use rumor_core::bt::bitfield::Bitfield;
use rumor_core::bt::magnet::MagnetLink;
use rumor_core::bt::metainfo::{InfoHash, Limits, Metainfo};
use rumor_core::bt::peers::{PeerBook, PeerBookConfig};
use rumor_core::bt::tracker::{AnnounceEvent, AnnounceRequest};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Torrents one session holds.
pub const TORRENTS_MAX: usize = 1000;
/// Connections of all torrents together (the session's peer budget).
pub const PEERS_MAX: usize = 400;
/// Commands waiting for the session task (the API waits past this).
const COMMANDS_MAX: usize = 64;
/// Events queued for one `/events` client; a slow client loses the oldest.
pub const EVENTS_QUEUE_MAX: usize = 256;
/// `/events` clients at once.
pub const EVENT_CLIENTS_MAX: usize = 64;
/// Disk threads shared by all the session's torrents: block writes (one
/// `pwritev` per run of blocks), reads for uploads, and the rare piece
/// hashed back from disk (hashing is otherwise done as blocks arrive).
/// A few keep several files and torrents moving; not one per torrent.
pub const DISK_THREADS: usize = 4;
/// How often the session looks at its torrents (events, records).
const TICK: Duration = Duration::from_secs(1);
/// How often it applies the active-download cap: a finished download's
/// slot goes to the next queued torrent within this.
const QUEUE_TICK: Duration = Duration::from_millis(100);
/// How often each torrent is announced to the node's own tracker.
const OVERLAY_ANNOUNCE: Duration = Duration::from_secs(30);
/// How often while it is downloading with no peer at all.
const OVERLAY_ANNOUNCE_NO_PEERS: Duration = Duration::from_secs(5);
/// How long a stopping torrent may take (its `stopped` announces).
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Provider lists waiting for a torrent's task; past it one is dropped
/// (the next announce brings them again).
const FOUND_MAX: usize = 4;
/// How often the records of torrents whose pieces changed are written.
const RECORDS_EVERY: Duration = Duration::from_secs(5);
/// Record batches waiting for the writer; when full a batch waits for the
/// next turn (its torrents stay marked to write).
const RECORD_BATCHES_MAX: usize = 8;

/// The session's settings (`rumor node` flags).
#[derive(Clone)]
pub struct Config {
    /// `--downloads`: every torrent's files live under it.
    pub dir: PathBuf,
    /// `--watch`.
    pub watch: Option<PathBuf>,
    /// `--bt-port` (0: any).
    pub bt_port: u16,
    /// `--max-download-rate`, bytes/s.
    pub download_limit: Option<u64>,
    /// `--max-upload-rate`, bytes/s.
    pub upload_limit: Option<u64>,
    /// `--max-active-downloads`.
    pub max_active: usize,
    /// `--max-peers`: the session's peer budget.
    pub max_peers: usize,
    /// The node's address as peers reach it (what it announces).
    pub advertise_ip: IpAddr,
    /// Fast resume records in the node's database (none with --ephemeral).
    pub store: Option<ResumeStore>,
    /// The session's DHT node (`--dht-port`; `None`: `--no-dht`).
    pub dht: Option<DhtSettings>,
    /// Local Service Discovery for every torrent (off: `--no-lsd`).
    pub lsd: bool,
}

/// The session's DHT node, as `rumor node` configures it.
#[derive(Clone, Debug)]
pub struct DhtSettings {
    /// UDP port (0: any).
    pub port: u16,
    /// `HOST:PORT` routers (empty: the public ones).
    pub bootstrap: Vec<String>,
    /// Where its routing table is kept between runs (`None`: nowhere).
    pub state: Option<PathBuf>,
}

/// How a torrent was given.
#[derive(Clone, Debug)]
pub enum Given {
    /// .torrent bytes.
    Torrent(Vec<u8>),
    /// A magnet link.
    Magnet(String),
    /// A bare infohash, 40 hex digits.
    InfoHash(String),
}

/// `POST /torrents`, parsed.
#[derive(Clone, Debug)]
pub struct AddRequest {
    /// The torrent.
    pub source: Given,
    /// Added paused.
    pub paused: bool,
    /// Bytes/s.
    pub download_limit: Option<u64>,
    /// Bytes/s.
    pub upload_limit: Option<u64>,
    /// Per file: 0 skip, 1 normal, 2 high.
    pub file_priorities: Option<Vec<u8>>,
}

/// Why a request was refused.
#[derive(Debug)]
pub enum Refusal {
    /// 400.
    Bad(String),
    /// 404.
    NotFound(String),
    /// 409: already there.
    Exists(InfoHash),
    /// 503: the session is stopping.
    Gone,
}

/// A change to a torrent's settings (`PATCH`); `Some(None)` clears a limit.
#[derive(Clone, Debug, Default)]
pub struct Patch {
    /// Bytes/s.
    pub download_limit: Option<Option<u64>>,
    /// Bytes/s.
    pub upload_limit: Option<Option<u64>>,
    /// Per file.
    pub file_priorities: Option<Vec<u8>>,
}

/// A change to the session's settings (`PATCH /session`).
#[derive(Clone, Debug, Default)]
pub struct SessionPatch {
    /// Bytes/s.
    pub download_limit: Option<Option<u64>>,
    /// Bytes/s.
    pub upload_limit: Option<Option<u64>>,
    /// The cap.
    pub max_active: Option<usize>,
}

/// One action on one torrent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Pause.
    Pause,
    /// Resume.
    Resume,
    /// Hash every piece again.
    Recheck,
}

type Reply<T> = oneshot::Sender<Result<T, Refusal>>;

enum Cmd {
    Add(Box<AddRequest>, Reply<Value>),
    List(Reply<Value>),
    Get(InfoHash, Reply<Value>),
    Act(InfoHash, Action, Reply<Value>),
    Patch(InfoHash, Patch, Reply<Value>),
    Remove(InfoHash, bool, Reply<Value>),
    Session(Reply<Value>),
    PatchSession(SessionPatch, Reply<Value>),
    Metrics(oneshot::Sender<String>),
    Subscribe(oneshot::Sender<Option<async_channel::Receiver<(String, Value)>>>),
    Shutdown(oneshot::Sender<()>),
}

/// What a torrent's task tells the session.
enum Report {
    Metadata(InfoHash, u64, Box<Metainfo>),
    Ended(InfoHash, u64, Result<(), String>),
}

/// The API's way into the session.
#[derive(Clone)]
pub struct SessionHandle {
    tx: async_channel::Sender<Cmd>,
}

impl SessionHandle {
    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Cmd) -> Result<T, Refusal> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.map_err(|_| Refusal::Gone)?;
        rx.await.map_err(|_| Refusal::Gone)?
    }

    /// Adds a torrent; its summary.
    pub async fn add(&self, req: AddRequest) -> Result<Value, Refusal> {
        self.call(|r| Cmd::Add(Box::new(req), r)).await
    }

    /// `{"torrents": [...]}`.
    pub async fn list(&self) -> Result<Value, Refusal> {
        self.call(Cmd::List).await
    }

    /// One torrent in detail.
    pub async fn get(&self, ih: InfoHash) -> Result<Value, Refusal> {
        self.call(|r| Cmd::Get(ih, r)).await
    }

    /// Pause, resume or recheck; the summary after.
    pub async fn act(&self, ih: InfoHash, a: Action) -> Result<Value, Refusal> {
        self.call(|r| Cmd::Act(ih, a, r)).await
    }

    /// Changes limits or file priorities; the summary after.
    pub async fn patch(&self, ih: InfoHash, p: Patch) -> Result<Value, Refusal> {
        self.call(|r| Cmd::Patch(ih, p, r)).await
    }

    /// Removes a torrent, and its files with `delete_data`.
    pub async fn remove(&self, ih: InfoHash, delete_data: bool) -> Result<Value, Refusal> {
        self.call(|r| Cmd::Remove(ih, delete_data, r)).await
    }

    /// The session's totals and settings.
    pub async fn session(&self) -> Result<Value, Refusal> {
        self.call(Cmd::Session).await
    }

    /// Changes the session's settings.
    pub async fn patch_session(&self, p: SessionPatch) -> Result<Value, Refusal> {
        self.call(|r| Cmd::PatchSession(p, r)).await
    }

    /// Prometheus lines for `/metrics`.
    pub async fn metrics(&self) -> String {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Cmd::Metrics(tx)).await.is_err() {
            return String::new();
        }
        rx.await.unwrap_or_default()
    }

    /// A stream of `(event name, data)` for `/events`; `None` when too
    /// many clients are listening.
    pub async fn subscribe(&self) -> Option<async_channel::Receiver<(String, Value)>> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Cmd::Subscribe(tx)).await.ok()?;
        rx.await.ok().flatten()
    }

    /// Stops every torrent (announcing `stopped`) and the session.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Cmd::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// A running torrent task.
struct Run {
    generation: u64,
    commands: async_channel::Sender<TorrentCommand>,
    /// Held paused (by the user or the queue); read when the download starts.
    hold: Arc<AtomicBool>,
    found: async_channel::Sender<Vec<SocketAddr>>,
    task: rt::JoinHandle<()>,
}

/// What the node's own tracker said last about a torrent.
#[derive(Clone, Debug, Default)]
struct OverlayStatus {
    next: Option<std::time::Instant>,
    last_announce_ms: Option<u64>,
    peers: usize,
    error: Option<String>,
    completed_sent: bool,
}

struct Entry {
    ih: InfoHash,
    name: String,
    meta: Option<Arc<Metainfo>>,
    source: Given,
    added_at_ms: u64,
    queue_position: u32,
    paused: bool,
    /// Held back by the active-download cap.
    queued: bool,
    error: Option<String>,
    down: limits::Shared,
    up: limits::Shared,
    file_priorities: Vec<u8>,
    run: Option<Run>,
    snapshot: Arc<Mutex<Option<Snapshot>>>,
    overlay: OverlayStatus,
    /// The summary last sent to `/events`.
    last_event: Option<Value>,
    /// Fast resume: the plan for the next start of its task.
    plan: Option<ResumePlan>,
    /// The pieces and stamps of its record, until its task has checked
    /// (kept when a record is written before that).
    saved: Option<(Vec<u8>, Vec<FileStamp>)>,
    /// Verified pieces when its record was last written, and whether
    /// something else changed since.
    saved_count: u32,
    dirty: bool,
}

impl Entry {
    fn snap(&self) -> Option<Snapshot> {
        self.snapshot.lock().expect("no panic while held").clone()
    }

    /// Read in place (the queue looks ten times a second: no copy).
    fn seeding(&self) -> bool {
        self.snapshot.lock().expect("no panic while held").as_ref().is_some_and(|s| s.status.state == "seeding")
    }

    /// Counts against the active-download cap (or would, if not queued).
    fn wants_download(&self) -> bool {
        self.run.is_some() && self.meta.is_some() && !self.paused && self.error.is_none() && !self.seeding()
    }

    fn state(&self) -> &'static str {
        let (has_snap, seeding) = {
            let snap = self.snapshot.lock().expect("no panic while held");
            (snap.is_some(), snap.as_ref().is_some_and(|s| s.status.state == "seeding"))
        };
        if self.error.is_some() {
            "error"
        } else if self.paused {
            // A paused magnet does not fetch its metadata either.
            "paused"
        } else if self.meta.is_none() {
            "metadata"
        } else if seeding {
            "seeding"
        } else if self.queued {
            "queued"
        } else if !has_snap {
            "checking"
        } else {
            "downloading"
        }
    }

    fn summary(&self) -> Value {
        let snap = self.snap();
        let total = snap.as_ref().map_or(self.meta.as_ref().map_or(0, |m| m.total_length), |s| s.wanted.0);
        let (done, down, up, downloaded, uploaded, peers, eta) = match &snap {
            Some(s) => (
                s.wanted.1,
                s.status.download_rate,
                s.status.upload_rate,
                s.status.downloaded,
                s.status.uploaded,
                s.status.peers_connected,
                s.status.eta_secs,
            ),
            None => (0, 0, 0, 0, 0, 0, None),
        };
        let rate = |b: &limits::Shared| b.lock().expect("no panic while held").rate();
        json!({
            "infohash": self.ih.to_hex(),
            "name": self.name,
            "state": self.state(),
            "progress": if total == 0 { 0.0 } else { done as f64 / total as f64 },
            "size": total,
            "done": done,
            "download_rate": down,
            "upload_rate": up,
            "downloaded": downloaded,
            "uploaded": uploaded,
            "peers": peers,
            "seeds": snap.as_ref().map_or(0, |s| s.seeds),
            "eta": if self.state() == "downloading" { eta } else { None },
            "download_limit": rate(&self.down),
            "upload_limit": rate(&self.up),
            "queue_position": self.queue_position,
            "added_at_ms": self.added_at_ms,
            "error": self.error,
        })
    }

    fn detail(&self) -> Value {
        let mut v = self.summary();
        let snap = self.snap();
        let files: Vec<Value> = match &self.meta {
            None => Vec::new(),
            Some(meta) => {
                let layout = meta.layout();
                meta.files
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| !f.padding)
                    .map(|(i, f)| {
                        let done = snap.as_ref().map_or(0, |s| file_done(meta, &layout, &s.have, f.offset, f.length));
                        json!({
                            "index": i,
                            "path": f.path.join("/"),
                            "size": f.length,
                            "done": done,
                            "priority": self.file_priorities.get(i).copied().unwrap_or(1),
                        })
                    })
                    .collect()
            }
        };
        // The torrent's own trackers as its task's announcer saw them last
        // (before its task runs: not contacted).
        let mut trackers: Vec<Value> = match snap.as_ref().filter(|s| !s.trackers.is_empty()) {
            Some(s) => s.trackers.iter().map(|t| json!(t)).collect(),
            None => (self.meta.as_ref().map(|m| m.announce_tiers.clone()).unwrap_or_default().into_iter().enumerate())
                .flat_map(|(tier, urls)| urls.into_iter().map(move |url| (tier, url)))
                .map(|(tier, url)| json!({ "url": url, "tier": tier, "status": "not contacted", "peers": null, "last_announce_ms": null, "error": null }))
                .collect(),
        };
        let o = &self.overlay;
        trackers.push(json!({
            "url": "overlay (this node's tracker)",
            "status": if o.error.is_some() { "error" } else if o.last_announce_ms.is_some() { "working" } else { "not contacted" },
            "peers": o.peers,
            "last_announce_ms": o.last_announce_ms,
            "error": o.error,
        }));
        v["files"] = json!(files);
        v["trackers"] = json!(trackers);
        v["peer_list"] = json!(snap.map(|s| s.peers).unwrap_or_default());
        v
    }
}

/// Verified bytes of the file at `offset`, `length` bytes long.
fn file_done(
    meta: &Metainfo,
    layout: &rumor_core::bt::metainfo::FileLayout,
    have: &Bitfield,
    offset: u64,
    length: u64,
) -> u64 {
    if length == 0 || meta.piece_length == 0 {
        return 0;
    }
    let first = (offset / meta.piece_length) as u32;
    let last = ((offset + length - 1) / meta.piece_length) as u32;
    (first..=last.min(have.len().saturating_sub(1)))
        .filter(|p| have.get(*p))
        .map(|p| {
            let start = p as u64 * meta.piece_length;
            let end = start + layout.piece_size(p);
            end.min(offset + length) - start.max(offset)
        })
        .sum()
}

/// The session task's state.
pub struct Session {
    config: Config,
    clock: Clock,
    node: NodeHandle,
    port: u16,
    routes: Routes,
    budget: Budget,
    /// The disk threads every torrent's writes, reads and checks run on.
    disk_pool: crate::bt::client::DiskPool,
    down: limits::Shared,
    up: limits::Shared,
    torrents: BTreeMap<InfoHash, Entry>,
    next_position: u32,
    generation: u64,
    reports_tx: async_channel::Sender<Report>,
    reports_rx: async_channel::Receiver<Report>,
    subscribers: Vec<async_channel::Sender<(String, Value)>>,
    /// Node-wide observations for `/events`.
    /// What `/events` last said of the cluster.
    node_watch: NodeWatch,
    peer_id: [u8; 20],
    /// Totals of torrents already removed, for the session's counters.
    removed_downloaded: u64,
    removed_uploaded: u64,
    /// Batches of records for the writer task.
    records: Option<async_channel::Sender<RecordJob>>,
    next_records: std::time::Instant,
    /// The DHT node every non-private torrent shares, and the torrents it
    /// looks up (with the generation of the task their peers go to).
    dht: Option<crate::bt::dht::SharedDht>,
    dht_looked: BTreeMap<InfoHash, u64>,
    /// Local Service Discovery for every non-private torrent, and the set
    /// it serves.
    lsd: Option<crate::bt::lsd::SharedLsd>,
    lsd_served: Vec<InfoHash>,
}

/// Work for the record writer, in order.
enum RecordJob {
    /// Stamp the files of those with verified pieces, then store all.
    Put(Vec<PendingRecord>),
    Remove(InfoHash),
    /// Everything before is written.
    Flush(oneshot::Sender<()>),
}

/// A record to store; `stamp`: take the files' stamps now (its pieces
/// are from a live snapshot), else they are in the record already.
struct PendingRecord {
    ih: InfoHash,
    record: TorrentRecord,
    stamp: Option<Arc<Metainfo>>,
}

/// The record writer: one task, so records are stored in the order made.
async fn write_records(store: ResumeStore, dir: PathBuf, jobs: async_channel::Receiver<RecordJob>) {
    while let Ok(job) = jobs.recv().await {
        let (store, dir) = (store.clone(), dir.clone());
        let done = rt::spawn_blocking(move || match job {
            RecordJob::Put(mut batch) => {
                for p in &mut batch {
                    if let Some(meta) = &p.stamp {
                        p.record.stamps = resume::stamp_files(&dir, meta);
                    }
                }
                let all: Vec<([u8; 20], &TorrentRecord)> = batch.iter().map(|p| (p.ih.0, &p.record)).collect();
                if let Err(e) = store.put_many(&all) {
                    tracing::warn!("writing {} torrent records: {e}", all.len());
                }
                None
            }
            RecordJob::Remove(ih) => {
                if let Err(e) = store.remove(ih.0) {
                    tracing::warn!("forgetting the record of {ih}: {e}");
                }
                None
            }
            RecordJob::Flush(tx) => Some(tx),
        })
        .await;
        if let Ok(Some(tx)) = done {
            let _ = tx.send(());
        }
    }
}

/// Starts the session: binds `--bt-port`, starts the listener, the watch
/// folder and the session task; its handle.
pub fn start(config: Config, node: NodeHandle, clock: Clock, shutdown: rt::Shutdown) -> Result<SessionHandle, String> {
    std::fs::create_dir_all(&config.dir).map_err(|e| format!("--downloads {}: {e}", config.dir.display()))?;
    let dir = config.dir.canonicalize().map_err(|e| format!("--downloads {}: {e}", config.dir.display()))?;
    let config = Config { dir, ..config };
    let listener = rt::bind_tcp(SocketAddr::from(([0, 0, 0, 0], config.bt_port)))
        .map_err(|e| format!("cannot listen for peers on --bt-port {}: {e}", config.bt_port))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let routes = Routes::default();
    let budget = Budget::new(config.max_peers);
    let listen_task = rt::spawn(listener::serve(listener, routes.clone(), Encryption::Prefer));
    let dht = config.dht.as_ref().and_then(|d| start_dht(d, port));
    let lsd =
        if config.lsd { crate::bt::lsd::start_shared(clock, SocketAddr::from(([0, 0, 0, 0], port))) } else { None };
    let (tx, rx) = async_channel::bounded(COMMANDS_MAX);
    let (reports_tx, reports_rx) = async_channel::bounded(1024);
    tracing::info!(dir = %config.dir.display(), port, "torrent session up");
    let handle = SessionHandle { tx };
    if let Some(w) = &config.watch {
        std::fs::create_dir_all(w).map_err(|e| format!("--watch {}: {e}", w.display()))?;
        rt::spawn(watch::run(w.clone(), handle.clone(), shutdown.clone()));
    }
    let records = config.store.clone().map(|store| {
        let (tx, rx) = async_channel::bounded(RECORD_BATCHES_MAX);
        rt::spawn(write_records(store, config.dir.clone(), rx));
        tx
    });
    let restored = config.store.as_ref().map(|s| s.load_all()).unwrap_or_default();
    let mut session = Session {
        records,
        next_records: std::time::Instant::now() + RECORDS_EVERY,
        down: limits::shared(config.download_limit),
        up: limits::shared(config.upload_limit),
        config,
        clock,
        node,
        port,
        routes,
        budget,
        disk_pool: crate::bt::client::DiskPool::new(DISK_THREADS),
        torrents: BTreeMap::new(),
        next_position: 0,
        generation: 0,
        reports_tx,
        reports_rx,
        subscribers: Vec::new(),
        node_watch: NodeWatch::default(),
        peer_id: crate::bt::entropy::peer_id(),
        removed_downloaded: 0,
        removed_uploaded: 0,
        dht,
        dht_looked: BTreeMap::new(),
        lsd,
        lsd_served: Vec::new(),
    };
    for (ih, record) in restored {
        session.restore(InfoHash(ih), record);
    }
    session.reschedule();
    rt::spawn(async move {
        session.run(rx).await;
        listen_task.abort();
    });
    Ok(handle)
}

/// Binds the session's DHT socket and starts its node; a port that cannot
/// be bound turns the DHT off with a warning, not the session.
fn start_dht(d: &DhtSettings, peer_port: u16) -> Option<crate::bt::dht::SharedDht> {
    use crate::bt::dht;
    // Bound here rather than with rt::bind_udp so that the port actually
    // bound (`--dht-port 0` picks one) is known for our `port` messages.
    let bound = std::net::UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], d.port))).and_then(|s| {
        s.set_nonblocking(true)?;
        let local = s.local_addr()?.port();
        Ok((rt::runtime().udp_socket(s)?, local))
    });
    let (socket, udp_port) = match bound {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!("DHT off: cannot bind UDP port {}: {e}", d.port);
            return None;
        }
    };
    let bootstrap = if d.bootstrap.is_empty() {
        dht::DEFAULT_BOOTSTRAP.iter().map(|s| s.to_string()).collect()
    } else {
        d.bootstrap.clone()
    };
    tracing::info!(udp_port, "torrent session: DHT node up");
    Some(dht::spawn_shared(dht::SharedArgs { socket, udp_port, bootstrap, state: d.state.clone(), peer_port }))
}

enum Wake {
    Cmd(Option<Cmd>),
    Report(Report),
    Tick,
}

impl Session {
    async fn run(mut self, rx: async_channel::Receiver<Cmd>) {
        use futures::FutureExt;
        let mut next_tick = std::time::Instant::now() + TICK;
        loop {
            let wake = futures::select_biased! {
                r = self.reports_rx.recv().fuse() => match r { Ok(r) => Wake::Report(r), Err(_) => Wake::Tick },
                c = rx.recv().fuse() => Wake::Cmd(c.ok()),
                _ = rt::sleep(QUEUE_TICK).fuse() => Wake::Tick,
            };
            match wake {
                Wake::Cmd(None) => return self.stop_all().await,
                Wake::Cmd(Some(Cmd::Shutdown(done))) => {
                    self.stop_all().await;
                    let _ = done.send(());
                    return;
                }
                Wake::Cmd(Some(c)) => self.command(c),
                Wake::Report(r) => self.report(r),
                Wake::Tick => self.reschedule(),
            }
            if std::time::Instant::now() >= next_tick {
                next_tick = std::time::Instant::now() + TICK;
                self.tick().await;
            }
        }
    }

    fn command(&mut self, c: Cmd) {
        match c {
            Cmd::Add(req, reply) => {
                let r = self.add(*req);
                let _ = reply.send(r);
            }
            Cmd::List(reply) => {
                let mut all: Vec<&Entry> = self.torrents.values().collect();
                all.sort_by_key(|e| e.queue_position);
                let _ = reply.send(Ok(json!({ "torrents": all.iter().map(|e| e.summary()).collect::<Vec<_>>() })));
            }
            Cmd::Get(ih, reply) => {
                let _ = reply.send(self.entry(&ih).map(|e| e.detail()));
            }
            Cmd::Act(ih, a, reply) => {
                let r = self.act(ih, a);
                let _ = reply.send(r);
            }
            Cmd::Patch(ih, p, reply) => {
                let r = self.patch(ih, p);
                let _ = reply.send(r);
            }
            Cmd::Remove(ih, delete_data, reply) => self.remove(ih, delete_data, reply),
            Cmd::Session(reply) => {
                let _ = reply.send(Ok(self.session_body()));
            }
            Cmd::PatchSession(p, reply) => {
                if let Some(l) = p.download_limit {
                    self.down.lock().expect("no panic while held").set_rate(l);
                }
                if let Some(l) = p.upload_limit {
                    self.up.lock().expect("no panic while held").set_rate(l);
                }
                if let Some(n) = p.max_active {
                    self.config.max_active = n;
                }
                self.reschedule();
                let _ = reply.send(Ok(self.session_body()));
            }
            Cmd::Metrics(reply) => {
                let _ = reply.send(self.metrics());
            }
            Cmd::Subscribe(reply) => {
                self.subscribers.retain(|s| !s.is_closed());
                if self.subscribers.len() >= EVENT_CLIENTS_MAX {
                    let _ = reply.send(None);
                    return;
                }
                let (tx, rx) = async_channel::bounded(EVENTS_QUEUE_MAX);
                // The current state first, so a new page starts complete.
                let _ = tx.force_send(("session".into(), self.session_body()));
                for e in self.torrents.values() {
                    let _ = tx.force_send(("torrent".into(), e.summary()));
                }
                self.subscribers.push(tx);
                let _ = reply.send(Some(rx));
            }
            Cmd::Shutdown(_) => unreachable!("handled by the loop"),
        }
    }

    fn entry(&self, ih: &InfoHash) -> Result<&Entry, Refusal> {
        self.torrents.get(ih).ok_or_else(|| Refusal::NotFound(format!("no torrent {ih} in this session")))
    }

    fn add(&mut self, req: AddRequest) -> Result<Value, Refusal> {
        if self.torrents.len() >= TORRENTS_MAX {
            return Err(Refusal::Bad(format!("this session holds {TORRENTS_MAX} torrents already")));
        }
        let (ih, name, meta) = match &req.source {
            Given::Torrent(bytes) => {
                let meta = Metainfo::parse_with(bytes, &Limits::default())
                    .map_err(|e| Refusal::Bad(format!("not a usable torrent: {e}")))?;
                if meta.hybrid || meta.pieces.is_empty() {
                    // Hybrids are read by their v1 part, as `rumor get` does.
                    tracing::debug!("{}: v1 part of a hybrid torrent", meta.name);
                }
                (meta.info_hash, meta.name.clone(), Some(Arc::new(meta)))
            }
            Given::Magnet(link) => {
                let l = MagnetLink::parse(link).ok_or_else(|| {
                    Refusal::Bad(
                        "not a usable magnet link (it needs xt=urn:btih: and 40 hex or 32 base32 characters)".into(),
                    )
                })?;
                let name = l.name.clone().unwrap_or_else(|| l.info_hash.to_hex());
                (l.info_hash, name, None)
            }
            Given::InfoHash(hex) => {
                let ih = InfoHash::from_hex(hex).ok_or_else(|| Refusal::Bad("an infohash is 40 hex digits".into()))?;
                (ih, ih.to_hex(), None)
            }
        };
        if self.torrents.contains_key(&ih) {
            return Err(Refusal::Exists(ih));
        }
        let file_priorities = req.file_priorities.clone().unwrap_or_default();
        if file_priorities.iter().any(|p| *p > 2) {
            return Err(Refusal::Bad("a file priority is 0 (skip), 1 (normal) or 2 (high)".into()));
        }
        let entry = Entry {
            ih,
            name,
            meta,
            source: req.source,
            added_at_ms: self.clock.wall_ms(),
            queue_position: self.next_position,
            paused: req.paused,
            queued: false,
            error: None,
            down: limits::shared(req.download_limit),
            up: limits::shared(req.upload_limit),
            file_priorities,
            run: None,
            snapshot: Arc::default(),
            overlay: OverlayStatus::default(),
            last_event: None,
            plan: None,
            saved: None,
            saved_count: 0,
            dirty: true,
        };
        self.next_position += 1;
        tracing::info!("torrent {ih} ({}) added", entry.name);
        let fetch_held = entry.paused && entry.meta.is_none();
        self.torrents.insert(ih, entry);
        if !fetch_held {
            self.start_task(ih);
        }
        self.reschedule();
        // The DHT and LSD look for it at once, not at the next tick.
        self.discovery();
        self.announce(ih, AnnounceEvent::Started);
        self.save_records(false);
        let e = self.torrents.get(&ih).expect("inserted above");
        Ok(json!({ "infohash": ih.to_hex(), "name": e.name }))
    }

    /// Brings back a torrent from its record, in the state it had: its
    /// pieces are trusted where its files are unchanged (see
    /// [`resume::plan_resume`]); the rest is hashed again when it starts.
    fn restore(&mut self, ih: InfoHash, r: TorrentRecord) {
        let meta = r.torrent.as_deref().and_then(|b| match Metainfo::parse_with(b, &Limits::default()) {
            Ok(m) if m.info_hash == ih => Some(Arc::new(m)),
            _ => None,
        });
        let source = match (&meta, &r.torrent, &r.magnet) {
            (Some(_), Some(bytes), None) => Given::Torrent(bytes.clone()),
            (_, _, Some(m)) if m.starts_with("magnet:") => Given::Magnet(m.clone()),
            _ => Given::InfoHash(ih.to_hex()),
        };
        let name = match (&meta, &source) {
            (Some(m), _) => m.name.clone(),
            (None, Given::Magnet(link)) => MagnetLink::parse(link).and_then(|l| l.name).unwrap_or_else(|| ih.to_hex()),
            _ => ih.to_hex(),
        };
        let plan = meta.as_ref().map(|m| resume::plan_resume(&self.config.dir, m, &r));
        if let Some(p) = &plan {
            tracing::info!(
                "torrent {ih} ({name}) restored: {} pieces trusted, {} to check again ({} files changed)",
                p.trusted.count(),
                p.recheck.len(),
                p.changed_files.len()
            );
        }
        let entry = Entry {
            ih,
            name,
            meta,
            source,
            added_at_ms: r.added_at_ms,
            queue_position: r.queue_position,
            paused: r.paused,
            queued: false,
            error: None,
            down: limits::shared(r.download_limit),
            up: limits::shared(r.upload_limit),
            file_priorities: r.file_priorities.clone(),
            run: None,
            snapshot: Arc::default(),
            overlay: OverlayStatus::default(),
            last_event: None,
            plan,
            saved: Some((r.have, r.stamps)),
            saved_count: 0,
            dirty: false,
        };
        self.next_position = self.next_position.max(r.queue_position + 1);
        // A paused magnet waits for its resume to fetch the metadata.
        let fetch_held = entry.paused && entry.meta.is_none();
        self.torrents.insert(ih, entry);
        if !fetch_held {
            self.start_task(ih);
        }
    }

    /// The record of `e` as it stands.
    fn record_of(&self, e: &Entry) -> PendingRecord {
        let rate = |b: &limits::Shared| b.lock().expect("no panic while held").rate();
        let snap = e.snap();
        let (have, stamps, stamp) = match (&snap, &e.saved, &e.meta) {
            (Some(s), _, Some(m)) => (s.have.to_wire(), Vec::new(), Some(m.clone())),
            (None, Some((have, stamps)), _) => (have.clone(), stamps.clone(), None),
            _ => (Vec::new(), Vec::new(), None),
        };
        let torrent = match (&e.source, &e.meta) {
            (Given::Torrent(b), _) => Some(b.clone()),
            (_, Some(m)) => Some(m.to_torrent_bytes()),
            _ => None,
        };
        let magnet = match &e.source {
            Given::Torrent(_) => None,
            Given::Magnet(m) | Given::InfoHash(m) => Some(m.clone()),
        };
        PendingRecord {
            ih: e.ih,
            record: TorrentRecord {
                torrent,
                magnet,
                added_at_ms: e.added_at_ms,
                paused: e.paused,
                download_limit: rate(&e.down),
                upload_limit: rate(&e.up),
                file_priorities: e.file_priorities.clone(),
                queue_position: e.queue_position,
                have,
                stamps,
            },
            stamp,
        }
    }

    /// Writes the records of torrents that changed (all with `all`).
    fn save_records(&mut self, all: bool) {
        let Some(tx) = self.records.clone() else { return };
        let mut batch = Vec::new();
        let mut marks = Vec::new();
        for e in self.torrents.values() {
            let count = e.snap().map_or(e.saved_count, |s| s.have.count());
            if all || e.dirty || count != e.saved_count {
                batch.push(self.record_of(e));
                marks.push((e.ih, count));
            }
        }
        if batch.is_empty() {
            return;
        }
        if tx.try_send(RecordJob::Put(batch)).is_ok() {
            for (ih, count) in marks {
                if let Some(e) = self.torrents.get_mut(&ih) {
                    e.dirty = false;
                    e.saved_count = count;
                }
            }
        }
    }

    /// The network options every torrent of the session runs with.
    fn net(&self) -> PeerArgs {
        PeerArgs {
            port: self.port,
            peers: Vec::new(),
            control: None,
            control_public: false,
            bind: IpAddr::from([0, 0, 0, 0]),
            quiet: true,
            dns: None,
            register: None,
            api: String::new(),
            api_token: None,
            // The node is the overlay member: its providers come through
            // the session (this only names the source in messages).
            overlay: vec!["this node".into()],
            cluster_key: Vec::new(),
            overlay_listen: SocketAddr::from(([0, 0, 0, 0], 0)),
            no_lsd: true,
            encryption: Encryption::Prefer,
            dht_port: None,
            // The session's node serves every torrent (this only names
            // the source in messages).
            no_dht: self.dht.is_none(),
            dht_bootstrap: Vec::new(),
            buffered_writes: false,
        }
    }

    /// Starts (or starts again) the task of torrent `ih`.
    fn start_task(&mut self, ih: InfoHash) {
        self.generation += 1;
        let generation = self.generation;
        let net = self.net();
        let incoming = self.routes.add(ih, self.port);
        let peers_used = self.budget.slot(ih);
        let (gate_down, gate_up) = (self.down.clone(), self.up.clone());
        let dir = self.config.dir.clone();
        let reports = self.reports_tx.clone();
        let dht = self.dht.as_ref().map(|d| d.pinger());
        let e = self.torrents.get_mut(&ih).expect("the caller checked");
        e.error = None;
        *e.snapshot.lock().expect("no panic while held") = None;
        let (commands, commands_rx) = async_channel::bounded(16);
        let (found, found_rx) = async_channel::bounded(FOUND_MAX);
        let hold = Arc::new(AtomicBool::new(e.paused || e.queued));
        let embedded = Embedded {
            commands: commands_rx,
            paused: hold.clone(),
            gate: limits::Gate { down: [gate_down, e.down.clone()], up: [gate_up, e.up.clone()] },
            budget: self.budget.clone(),
            peers_used,
            snapshot: e.snapshot.clone(),
            piece_priorities: match &e.meta {
                Some(m) if !e.file_priorities.is_empty() => Some(m.piece_priorities(&e.file_priorities)),
                _ => None,
            },
            resume: e.plan.take(),
            disk_pool: self.disk_pool.clone(),
        };
        let what = match (&e.meta, &e.source) {
            (Some(m), _) => What::Meta(m.clone()),
            (None, Given::Magnet(link)) => What::Link(MagnetLink::parse(link).expect("checked when added")),
            (None, _) => What::Link(MagnetLink { info_hash: ih, name: None, trackers: Vec::new(), peers: Vec::new() }),
        };
        let task = rt::spawn(async move {
            let r = run_torrent(what, dir, net, incoming, embedded, found_rx, dht, &reports, generation).await;
            let _ = reports.send(Report::Ended(ih, generation, r)).await;
        });
        e.run = Some(Run { generation, commands, hold, found, task });
    }

    fn report(&mut self, r: Report) {
        match r {
            Report::Metadata(ih, generation, meta) => {
                if let Some(e) =
                    self.torrents.get_mut(&ih).filter(|e| e.run.as_ref().is_some_and(|r| r.generation == generation))
                {
                    tracing::info!("torrent {ih}: metadata fetched ({})", meta.name);
                    e.name = meta.name.clone();
                    e.meta = Some(Arc::new(*meta));
                    e.dirty = true;
                    self.reschedule();
                }
            }
            Report::Ended(ih, generation, result) => {
                let Some(e) = self.torrents.get_mut(&ih) else { return };
                if e.run.as_ref().is_none_or(|r| r.generation != generation) {
                    return;
                }
                e.run = None;
                self.routes.remove(&ih);
                self.budget.remove(&ih);
                match result {
                    Err(why) => {
                        tracing::warn!("torrent {ih}: {why}");
                        e.error = Some(why);
                    }
                    Ok(()) => tracing::info!("torrent {ih}: stopped"),
                }
                self.reschedule();
            }
        }
    }

    /// Applies the active-download cap: in queue order, the first
    /// `max_active` torrents that want to download run, the others wait
    /// paused ("queued").
    fn reschedule(&mut self) {
        let mut order: Vec<(u32, InfoHash)> = self.torrents.values().map(|e| (e.queue_position, e.ih)).collect();
        order.sort();
        let mut active = 0;
        for (_, ih) in order {
            let e = self.torrents.get_mut(&ih).expect("listed above");
            let queued = if e.wants_download() {
                active += 1;
                active > self.config.max_active
            } else {
                // A torrent not yet known to download (fetching metadata)
                // starts held if the cap is reached by the time it can.
                false
            };
            e.queued = queued;
            if let Some(run) = &e.run {
                if e.meta.is_none() {
                    // Fetching: its download starts held if the cap is
                    // full by then (the next turn here corrects it).
                    run.hold.store(e.paused || active >= self.config.max_active, Ordering::Relaxed);
                } else {
                    let hold = e.paused || e.queued;
                    if run.hold.swap(hold, Ordering::Relaxed) != hold {
                        let c = if hold { TorrentCommand::Pause } else { TorrentCommand::Resume };
                        let _ = run.commands.try_send(c);
                    }
                }
            }
        }
    }

    fn act(&mut self, ih: InfoHash, a: Action) -> Result<Value, Refusal> {
        let e =
            self.torrents.get_mut(&ih).ok_or_else(|| Refusal::NotFound(format!("no torrent {ih} in this session")))?;
        e.dirty = true;
        match a {
            Action::Pause => {
                e.paused = true;
                if e.meta.is_none() {
                    // A magnet's fetch has no pause of its own: it ends, and
                    // starts again on resume.
                    if let Some(run) = e.run.take() {
                        run.task.abort_handle().abort();
                        tracing::info!("torrent {ih}: paused; its metadata fetch stopped");
                    }
                    self.routes.remove(&ih);
                    self.budget.remove(&ih);
                }
            }
            Action::Resume => {
                e.paused = false;
                if e.run.is_none() {
                    // Stopped by an error: resuming tries again.
                    self.start_task(ih);
                }
                // Peers again at once: its connections were closed.
                self.announce(ih, AnnounceEvent::None);
            }
            Action::Recheck => {
                // Every piece hashed: nothing of the record is trusted.
                e.plan = None;
                e.saved = None;
                if let Some(run) = e.run.take() {
                    stop_run(run);
                }
                self.routes.remove(&ih);
                self.start_task(ih);
            }
        }
        self.reschedule();
        self.discovery();
        Ok(self.torrents[&ih].summary())
    }

    fn patch(&mut self, ih: InfoHash, p: Patch) -> Result<Value, Refusal> {
        let e =
            self.torrents.get_mut(&ih).ok_or_else(|| Refusal::NotFound(format!("no torrent {ih} in this session")))?;
        if let Some(fp) = &p.file_priorities {
            if fp.iter().any(|p| *p > 2) {
                return Err(Refusal::Bad("a file priority is 0 (skip), 1 (normal) or 2 (high)".into()));
            }
            if let Some(m) = &e.meta {
                if fp.len() != m.files.len() {
                    return Err(Refusal::Bad(format!(
                        "file_priorities has {} entries; the torrent has {} files",
                        fp.len(),
                        m.files.len()
                    )));
                }
            }
            e.file_priorities = fp.clone();
            if let (Some(m), Some(run)) = (&e.meta, &e.run) {
                let _ = run.commands.try_send(TorrentCommand::SetPiecePriorities(m.piece_priorities(fp)));
            }
        }
        e.dirty = true;
        if let Some(l) = p.download_limit {
            e.down.lock().expect("no panic while held").set_rate(l);
        }
        if let Some(l) = p.upload_limit {
            e.up.lock().expect("no panic while held").set_rate(l);
        }
        Ok(e.summary())
    }

    fn remove(&mut self, ih: InfoHash, delete_data: bool, reply: Reply<Value>) {
        let Some(mut e) = self.torrents.remove(&ih) else {
            let _ = reply.send(Err(Refusal::NotFound(format!("no torrent {ih} in this session"))));
            return;
        };
        self.routes.remove(&ih);
        self.budget.remove(&ih);
        if let Some(s) = e.snap() {
            self.removed_downloaded += s.status.downloaded;
            self.removed_uploaded += s.status.uploaded;
        }
        self.broadcast("torrent_removed", json!({ "infohash": ih.to_hex() }));
        if let Some(tx) = &self.records {
            // In order after any batch that still holds it.
            let tx = tx.clone();
            rt::spawn(async move {
                let _ = tx.send(RecordJob::Remove(ih)).await;
            });
        }
        self.reschedule();
        let dir = self.config.dir.clone();
        let run = e.run.take();
        let meta = e.meta.clone();
        tracing::info!("torrent {ih} ({}) removed{}", e.name, if delete_data { " with its data" } else { "" });
        rt::spawn(async move {
            if let Some(run) = run {
                let _ = run.commands.try_send(TorrentCommand::Stop);
                let abort = run.task.abort_handle();
                if rt::timeout(STOP_GRACE, run.task).await.is_err() {
                    tracing::debug!("torrent {ih}: did not stop in time; aborted");
                    abort.abort();
                }
            }
            let r = match (delete_data, meta) {
                (true, Some(meta)) => rt::spawn_blocking(move || delete_files(&dir, &meta))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r),
                _ => Ok(()),
            };
            let _ = reply.send(match r {
                Ok(()) => Ok(json!({ "removed": ih.to_hex() })),
                Err(why) => Err(Refusal::Bad(format!("removed, but deleting its files failed: {why}"))),
            });
        });
    }

    fn session_body(&self) -> Value {
        let rate = |b: &limits::Shared| b.lock().expect("no panic while held").rate();
        let (mut down, mut up) = (0, 0);
        for e in self.torrents.values() {
            if let Some(s) = e.snap() {
                down += s.status.download_rate;
                up += s.status.upload_rate;
            }
        }
        let states: Vec<&str> = self.torrents.values().map(|e| e.state()).collect();
        json!({
            "download_rate": down,
            "upload_rate": up,
            "download_limit": rate(&self.down),
            "upload_limit": rate(&self.up),
            "max_active_downloads": self.config.max_active,
            "active": states.iter().filter(|s| **s == "downloading").count(),
            "queued": states.iter().filter(|s| **s == "queued").count(),
            "torrents": self.torrents.len(),
            "downloads_dir": self.config.dir.display().to_string(),
            "bt_port": self.port,
            "peers": self.budget.in_use(),
            "peers_max": self.budget.max,
        })
    }

    fn metrics(&self) -> String {
        let mut out = String::new();
        let mut head = |name: &str, kind: &str, help: &str| {
            out.push_str(&format!("# HELP rumor_torrent_{name} {help}\n# TYPE rumor_torrent_{name} {kind}\n"));
        };
        head("downloaded_bytes_total", "counter", "Payload bytes received and kept, this run of the torrent.");
        head("uploaded_bytes_total", "counter", "Payload bytes sent, this run of the torrent.");
        head("peers", "gauge", "Connections of the torrent.");
        head("pieces_done", "gauge", "Verified pieces.");
        head("pieces", "gauge", "Pieces of the torrent.");
        let mut lines = String::new();
        let (mut all_down, mut all_up) = (self.removed_downloaded, self.removed_uploaded);
        for e in self.torrents.values() {
            let label = format!("infohash=\"{}\"", e.ih.to_hex());
            let snap = e.snap();
            let (d, u, p, have) = snap.as_ref().map_or((0, 0, 0, 0), |s| {
                (s.status.downloaded, s.status.uploaded, s.status.peers_connected, s.have.count())
            });
            all_down += d;
            all_up += u;
            lines.push_str(&format!("rumor_torrent_downloaded_bytes_total{{{label}}} {d}\n"));
            lines.push_str(&format!("rumor_torrent_uploaded_bytes_total{{{label}}} {u}\n"));
            lines.push_str(&format!("rumor_torrent_peers{{{label}}} {p}\n"));
            lines.push_str(&format!("rumor_torrent_pieces_done{{{label}}} {have}\n"));
            let n = e.meta.as_ref().map_or(0, |m| m.piece_count());
            lines.push_str(&format!("rumor_torrent_pieces{{{label}}} {n}\n"));
        }
        out.push_str(&lines);
        let body = self.session_body();
        let taken = |b: &limits::Shared| b.lock().expect("no panic while held").taken();
        out.push_str(&format!(
            "# HELP rumor_session_torrents Torrents in the session.\n# TYPE rumor_session_torrents gauge\nrumor_session_torrents {}\n\
             # HELP rumor_session_active_downloads Torrents downloading now.\n# TYPE rumor_session_active_downloads gauge\nrumor_session_active_downloads {}\n\
             # HELP rumor_session_queued Torrents waiting for a download slot.\n# TYPE rumor_session_queued gauge\nrumor_session_queued {}\n\
             # HELP rumor_session_peers Connections of all torrents.\n# TYPE rumor_session_peers gauge\nrumor_session_peers {}\n\
             # HELP rumor_session_wire_bytes_total Bytes through the session's rate limits.\n# TYPE rumor_session_wire_bytes_total counter\n\
             rumor_session_wire_bytes_total{{direction=\"down\"}} {}\nrumor_session_wire_bytes_total{{direction=\"up\"}} {}\n",
            body["torrents"], body["active"], body["queued"], body["peers"], taken(&self.down), taken(&self.up)
        ));
        out.push_str(&format!(
            "# HELP rumor_session_payload_bytes_total Payload bytes of every torrent, removed ones included.\n\
             # TYPE rumor_session_payload_bytes_total counter\n\
             rumor_session_payload_bytes_total{{direction=\"down\"}} {all_down}\n\
             rumor_session_payload_bytes_total{{direction=\"up\"}} {all_up}\n"
        ));
        out
    }

    /// Sends an event to every `/events` client; a full queue loses its
    /// oldest event, a closed one is dropped.
    fn broadcast(&mut self, name: &str, data: Value) {
        self.subscribers.retain(|s| s.force_send((name.to_string(), data.clone())).is_ok());
    }

    /// Once a second: the queue, the DHT and LSD, `/events`.
    async fn tick(&mut self) {
        self.reschedule();
        self.discovery();
        if std::time::Instant::now() >= self.next_records {
            self.next_records = std::time::Instant::now() + RECORDS_EVERY;
            self.save_records(false);
        }
        let now = std::time::Instant::now();
        let due: Vec<InfoHash> =
            self.torrents.values().filter(|e| e.overlay.next.is_some_and(|t| now >= t)).map(|e| e.ih).collect();
        for ih in due {
            self.announce(ih, AnnounceEvent::None);
        }
        if self.subscribers.is_empty() {
            return;
        }
        let changed: Vec<Value> = self
            .torrents
            .values_mut()
            .filter_map(|e| {
                let s = e.summary();
                (e.last_event.as_ref() != Some(&s)).then(|| {
                    e.last_event = Some(s.clone());
                    s
                })
            })
            .collect();
        for s in changed {
            self.broadcast("torrent", s);
        }
        let body = self.session_body();
        self.broadcast("session", body);
        self.node_events().await;
    }

    /// Keeps the DHT node and LSD on the torrents that should use them
    /// (running, neither paused nor queued, not private: a magnet counts as
    /// public until its metadata says otherwise), and hands the peers LSD
    /// found to their torrents' tasks, like the overlay's providers.
    fn discovery(&mut self) {
        let wanted: BTreeMap<InfoHash, u64> = self
            .torrents
            .values()
            .filter(|e| !e.paused && !e.queued && e.error.is_none())
            .filter(|e| !e.meta.as_ref().is_some_and(|m| m.private))
            .filter_map(|e| Some((e.ih, e.run.as_ref()?.generation)))
            .collect();
        if let Some(dht) = &self.dht {
            use crate::bt::dht::Want;
            let gone: Vec<InfoHash> =
                self.dht_looked.iter().filter(|(ih, g)| wanted.get(ih) != Some(g)).map(|(ih, _)| *ih).collect();
            for ih in gone {
                if dht.want(Want::Remove(ih)) {
                    self.dht_looked.remove(&ih);
                }
            }
            for (ih, g) in &wanted {
                if self.dht_looked.contains_key(ih) {
                    continue;
                }
                let Some(run) = self.torrents.get(ih).and_then(|e| e.run.as_ref()) else { continue };
                // A full queue: tried again next turn.
                if dht.want(Want::Add { info_hash: *ih, found: run.found.clone() }) {
                    self.dht_looked.insert(*ih, *g);
                }
            }
        }
        if let Some(lsd) = &self.lsd {
            let set: Vec<InfoHash> = wanted.keys().copied().collect();
            if set != self.lsd_served {
                lsd.set(set.clone());
                self.lsd_served = set;
            }
            let mut by_torrent: BTreeMap<InfoHash, Vec<SocketAddr>> = BTreeMap::new();
            for (ih, addr) in lsd.take_found() {
                by_torrent.entry(ih).or_default().push(addr);
            }
            for (ih, peers) in by_torrent {
                if let Some(run) = self.torrents.get(&ih).and_then(|e| e.run.as_ref()) {
                    tracing::info!("local service discovery: {} peers of {ih}", peers.len());
                    let _ = run.found.try_send(peers);
                }
            }
        }
    }

    /// `members` and `records` events (see [`NodeWatch`]).
    async fn node_events(&mut self) {
        for (name, data) in self.node_watch.poll(&self.node).await {
            self.broadcast(name, data);
        }
    }

    /// Announces `ih` to the node's own tracker (which makes this node a
    /// provider in the overlay) and hands the providers it knows to the
    /// torrent's task. Runs in the background; the result is kept for
    /// the torrent's detail.
    fn announce(&mut self, ih: InfoHash, mut event: AnnounceEvent) {
        let Some(e) = self.torrents.get_mut(&ih) else { return };
        let Some(run) = &e.run else { return };
        let left = match (&e.meta, e.snap()) {
            (Some(m), Some(s)) => m.total_length.saturating_sub(s.status.bytes_done),
            (Some(m), None) => m.total_length,
            (None, _) => 16 * 1024,
        };
        if left == 0 && !e.overlay.completed_sent && event == AnnounceEvent::None {
            event = AnnounceEvent::Completed;
            e.overlay.completed_sent = true;
        }
        let req = AnnounceRequest {
            info_hash: ih,
            peer_id: self.peer_id,
            port: self.port,
            uploaded: 0,
            downloaded: 0,
            left,
            event,
            numwant: Some(50),
            key: None,
            compact: true,
        };
        e.overlay.last_announce_ms = Some(self.clock.wall_ms());
        // Soon again while it downloads with nobody to download from.
        let lonely = e.snap().is_some_and(|s| s.status.peers_connected == 0 && s.status.state != "seeding");
        let every = if lonely || e.meta.is_none() { OVERLAY_ANNOUNCE_NO_PEERS } else { OVERLAY_ANNOUNCE };
        e.overlay.next = Some(std::time::Instant::now() + every);
        let node = self.node.clone();
        let from = self.config.advertise_ip;
        let found = run.found.clone();
        let own = SocketAddr::new(from, self.port);
        rt::spawn(async move {
            let (tx, rx) = oneshot::channel();
            if !node.send(NodeCommand::Announce { req, from, reply: tx }).await {
                return;
            }
            let Ok(body) = rx.await else { return };
            match rumor_core::bt::tracker::parse_announce_response(&body) {
                Ok(resp) => {
                    let peers: Vec<SocketAddr> = resp.peers.iter().map(|p| p.addr).filter(|a| *a != own).collect();
                    tracing::debug!("overlay: {} providers of {ih}", peers.len());
                    if !peers.is_empty() {
                        let _ = found.try_send(peers);
                    }
                }
                Err(e) => tracing::debug!("overlay announce of {ih}: {e}"),
            }
        });
    }

    /// Stops every torrent: `stopped` announces, within the grace.
    async fn stop_all(&mut self) {
        let runs: Vec<Run> = self.torrents.values_mut().filter_map(|e| e.run.take()).collect();
        tracing::info!("stopping {} torrents", runs.len());
        let mut tasks = Vec::new();
        for r in runs {
            let _ = r.commands.try_send(TorrentCommand::Stop);
            tasks.push(r.task);
        }
        let _ = rt::timeout(STOP_GRACE, futures::future::join_all(tasks)).await;
        if let Some(dht) = self.dht.take() {
            dht.stop().await;
        }
        self.lsd = None;
        // The last snapshots, every torrent, then wait for the disk.
        self.save_records(true);
        if let Some(tx) = &self.records {
            let (done, wait) = oneshot::channel();
            if tx.send(RecordJob::Flush(done)).await.is_ok() {
                let _ = rt::timeout(STOP_GRACE, wait).await;
            }
        }
    }
}

/// Ends a task that is being replaced: asks it to stop, and aborts it if it
/// has not within the grace.
fn stop_run(run: Run) {
    let _ = run.commands.try_send(TorrentCommand::Stop);
    let task = run.task;
    rt::spawn(async move {
        let abort = task.abort_handle();
        if rt::timeout(STOP_GRACE, task).await.is_err() {
            abort.abort();
        }
    });
}

/// What a torrent's task starts from.
enum What {
    Meta(Arc<Metainfo>),
    Link(MagnetLink),
}

/// A torrent's task: the metadata (for a magnet link or an infohash), then
/// the download and seeding, until stopped.
#[allow(clippy::too_many_arguments)]
async fn run_torrent(
    what: What,
    dir: PathBuf,
    net: PeerArgs,
    incoming: listener::Incoming,
    embedded: Embedded,
    found: async_channel::Receiver<Vec<SocketAddr>>,
    dht: Option<crate::bt::dht::DhtPinger>,
    reports: &async_channel::Sender<Report>,
    generation: u64,
) -> Result<(), String> {
    let clock = Clock::new();
    let config = PeerBookConfig { connections_max: client::PEERS_MAX, ..PeerBookConfig::default() };
    let mut book = PeerBook::new(config, crate::bt::entropy::seed());
    let listener: Box<dyn rt::TcpListener> = Box::new(incoming);
    let meta = match what {
        What::Meta(m) => (*m).clone(),
        What::Link(link) => {
            let ih = link.info_hash;
            // Names (`x.pe=seed.local:6881`) as `rumor get` resolves them.
            crate::bt::learn_given(&mut book, &link.peers, &net).await;
            let src = MagnetSource {
                link,
                trackers: Vec::new(),
                timeout: Duration::from_secs(24 * 3600),
                save_torrent: None,
                take_signals: false,
            };
            let (meta, b) = magnet::fetch(src, &net, &listener, clock, book, Some(&found), None).await?;
            book = b;
            let _ = reports.send(Report::Metadata(ih, generation, Box::new(meta.clone()))).await;
            meta
        }
    };
    let download = Download {
        torrent: PathBuf::from(&meta.name),
        dir,
        net,
        exit_when_complete: false,
        seed_command: false,
        embedded: Some(embedded),
    };
    let handover = Handover {
        clock,
        book,
        control: None,
        found: Some(found),
        complete: Arc::new(AtomicBool::new(false)),
        lsd: None,
        // Peers' `port` messages go to the session's node (BEP 5), never
        // for a private torrent.
        dht: dht.filter(|_| !meta.private),
    };
    client::download(download, meta, listener, handover).await
}

/// The files of `meta` under `dir`, as the download lays them out.
fn torrent_paths(dir: &Path, meta: &Metainfo) -> (PathBuf, Vec<PathBuf>) {
    let root = if meta.multi_file { dir.join(&meta.name) } else { dir.to_path_buf() };
    let files = meta
        .files
        .iter()
        .filter(|f| !f.padding)
        .map(|f| {
            let mut p = root.clone();
            p.extend(&f.path);
            p
        })
        .collect();
    (root, files)
}

/// True if `p` has no `..`, root or prefix component past `dir` and, once
/// its existing parent is resolved (symlinks followed), still lies in `dir`.
fn inside(dir: &Path, p: &Path) -> bool {
    use std::path::Component;
    let Ok(rest) = p.strip_prefix(dir) else { return false };
    if rest.components().any(|c| !matches!(c, Component::Normal(_))) || rest.as_os_str().is_empty() {
        return false;
    }
    match p.parent().and_then(|d| d.canonicalize().ok()) {
        Some(parent) => parent.starts_with(dir),
        // Nothing there: nothing to delete either.
        None => true,
    }
}

/// Deletes the torrent's own files (and the directories of a multi-file
/// torrent that are then empty), never anything outside `dir`.
fn delete_files(dir: &Path, meta: &Metainfo) -> Result<(), String> {
    let (root, files) = torrent_paths(dir, meta);
    for f in &files {
        if !inside(dir, f) {
            tracing::warn!("not deleting {}: it is not inside {}", f.display(), dir.display());
            continue;
        }
        match std::fs::symlink_metadata(f) {
            Ok(m) if m.is_file() || m.file_type().is_symlink() => {
                std::fs::remove_file(f).map_err(|e| format!("{}: {e}", f.display()))?;
            }
            _ => {}
        }
    }
    if meta.multi_file && root != dir && inside(dir, &root) {
        // Deepest first; a directory someone else put files in stays.
        let mut dirs: Vec<PathBuf> = files
            .iter()
            .flat_map(|f| f.ancestors().skip(1).take_while(|a| a.starts_with(&root)).map(Path::to_path_buf))
            .collect();
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        dirs.dedup();
        for d in dirs {
            let _ = std::fs::remove_dir(&d);
        }
    }
    Ok(())
}

/// The cluster side of `/events`, shared by the session and by a node
/// without one: `members` when a member's state changes, `records` when
/// the live records do (by a hash of them, so only while a client
/// listens).
#[derive(Default)]
pub(crate) struct NodeWatch {
    last_members: Option<Value>,
    last_records: Option<u64>,
}

impl NodeWatch {
    /// Asks the node once and says what changed since the last call (the
    /// first call reports the members, and records only from the second).
    pub(crate) async fn poll(&mut self, node: &NodeHandle) -> Vec<(&'static str, Value)> {
        let mut out = Vec::new();
        let (tx, rx) = oneshot::channel();
        if node.send(NodeCommand::Members { reply: tx }).await {
            if let Ok(Ok(m)) = rt::timeout(Duration::from_millis(500), rx).await {
                let v = json!({ "members": m });
                if self.last_members.as_ref() != Some(&v) {
                    self.last_members = Some(v.clone());
                    out.push(("members", v));
                }
            }
        }
        let (tx, rx) = oneshot::channel();
        if node.send(NodeCommand::List { name: None, reply: tx }).await {
            if let Ok(Ok((sets, _))) = rt::timeout(Duration::from_millis(500), rx).await {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                for s in &sets {
                    format!("{s:?}").hash(&mut h);
                }
                let sum = h.finish();
                if self.last_records.is_some_and(|l| l != sum) {
                    out.push(("records", json!({ "changed": true })));
                }
                self.last_records = Some(sum);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_is_inside_only_without_dot_dot_and_below_the_directory() {
        let dir = std::env::temp_dir().canonicalize().unwrap().join(format!("rumor-inside-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(inside(&dir, &dir.join("a/b.txt")));
        assert!(!inside(&dir, &dir.join("../b.txt")));
        assert!(!inside(&dir, &dir.join("a/../../b.txt")));
        assert!(!inside(&dir, Path::new("/etc/passwd")));
        assert!(!inside(&dir, &dir));
        // A symlinked directory that leads out is outside.
        std::os::unix::fs::symlink("/tmp", dir.join("out")).unwrap();
        assert!(!inside(&dir, &dir.join("out/x")));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
