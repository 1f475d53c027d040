//! The download (and seeding) phase of a session, on whatever runtime the
//! adapter installed.
//!
//! One task (the loop in [`Session::run`]) owns the core [`Torrent`] and
//! [`Announcer`]; nothing else touches them. Around it:
//!
//! * the shared peer layer ([`Peers`]: the peer book and one connection
//!   task per peer, see [`super::peer_conn`]); a listener task hands it
//!   incoming streams through a bounded queue;
//! * a disk thread does positional reads and writes in order and answers
//!   hash checks; the loop hashes each piece's blocks as they come (see
//!   [`DiskQueue`] and [`spawn_disk_thread`]);
//! * tracker requests run on the blocking pool (HTTP) or one UDP socket.
//!
//! Results come back to the loop as machine inputs. The metadata fetch
//! that may come before, and the order of the phases, are in
//! [`super::session`].

use super::control::{self, Command, Status};
use super::mse_stream::Crypto;
use super::peer_conn::{when, ConnLimits, Inbound, Peers};
use super::progress::Progress;
use super::storage::{BlockPool, Storage};
use super::trackers::{self, TrackerEvent};
use super::PeerArgs;
use crate::clock::Clock;
use crate::rt::{self, TcpListener, TcpStream};
use async_channel::{Receiver, Sender};
use bytes::Bytes;
use futures::FutureExt;
use rumor_core::bt::announce::{self, AnnounceConfig, Announcer};
use rumor_core::bt::bitfield::Bitfield;
use rumor_core::bt::conn::{CloseReason, PeerInput};
use rumor_core::bt::metainfo::{Limits, Metainfo, Sha1Hash};
use rumor_core::bt::peers::{Closed, PeerBook, Refused, Source};
use rumor_core::bt::pex::{PexConn, PexSender};
use rumor_core::bt::picker::PeerKey;
use rumor_core::bt::torrent::{DisconnectReason, Event, Input, Output, Torrent, TorrentConfig};
use rumor_core::bt::wire::BlockRef;
use rumor_core::time::Instant;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Connection buffers: reads of 128 KiB (a bulk transfer over loopback
/// fills them: half the reads, wakes and events of 64 KiB reads, and half
/// the blocks cut by a read's end, which the decoder must copy); at 4 MiB
/// queued to a peer we stop reading from it (so it cannot ask for more)
/// and hold its piece replies until the queue drains. What is queued past
/// that is bounded by the replies already read for it (at most
/// `READS_IN_FLIGHT_MAX`, 4 MiB) and one read's worth of other messages,
/// so only a peer whose requests cost us far more than they cost it
/// (BEP 9 metadata pieces, 16 KiB for 30 bytes) reaches 32 MiB, and is
/// dropped.
const LIMITS: ConnLimits =
    ConnLimits { read_chunk_bytes: 128 * 1024, send_bytes_soft: 4 << 20, send_bytes_max: 32 << 20 };
/// Connections (the machine's and the peer book's limit are the same).
pub const PEERS_MAX: usize = 50;
/// Incoming connections waiting for the loop; when full, the accept task
/// waits and the rest wait in the kernel's listen backlog.
const ACCEPTED_MAX: usize = 16;
/// Tracker answers waiting for the loop; when full, an answer is dropped
/// and the announcer's request timeout asks again. The loop takes them
/// on every turn, so this is room for bursts only.
const TRACKER_EVENTS_MAX: usize = 64;
/// Disk results (blocks read, pieces checked, failed writes) waiting for
/// the loop; when full, the disk thread waits (the loop always takes
/// them, whatever else it is waiting for).
const DISK_RESULTS_MAX: usize = 1024;
/// How long the `stopped` announce may take on exit.
const STOP_GRACE: Duration = Duration::from_secs(4);
/// Housekeeping (dials, rates, progress) runs this often.
const HOUSEKEEPING: Duration = Duration::from_millis(500);
/// Block bytes handed to the disk thread and not yet written, or written
/// and waiting there to be hashed with others ([`HASH_GROUP_BYTES`]):
/// above this the loop stops reading from peers until the disk catches up
/// (the socket buffers then push back on the senders). Most of what the
/// process holds is these bytes.
const DISK_PENDING_BYTES_MAX: usize = 24 << 20;
/// Block reads (for uploads) at the disk thread or waiting for the loop at
/// once; more wait as (peer, block) pairs, themselves bounded by the
/// machine's `peer_requests_max` per peer.
const READS_IN_FLIGHT_MAX: usize = 256;
/// How often a loop held back by the disk looks again.
const DISK_POLL: Duration = Duration::from_millis(2);
/// Failed block writes (disk full, permissions...) before the session gives up.
const WRITE_FAILURES_MAX: u32 = 64;

/// What the download phase needs besides the torrent.
pub struct Download {
    /// The .torrent file (for messages; a magnet's metadata has none).
    pub torrent: PathBuf,
    /// The directory the torrent's name lives in.
    pub dir: PathBuf,
    /// Network options.
    pub net: PeerArgs,
    /// Exit 0 once every piece is verified.
    pub exit_when_complete: bool,
    /// Started by `rumor seed`: the data should already be there.
    pub seed_command: bool,
    /// Run by the node's session rather than `get`/`seed`.
    pub embedded: Option<Embedded>,
}

/// What a torrent run by the node's session ([`crate::torrents`]) gets
/// from it: its commands instead of signals and a control port, the rate
/// limits and peer budget it shares with the other torrents, and where it
/// publishes what it is doing.
pub struct Embedded {
    /// Pause, resume, stop, status.
    pub commands: Receiver<Command>,
    /// Start paused (queued behind the active-download cap, or paused):
    /// the session keeps it current until the download starts.
    pub paused: Arc<AtomicBool>,
    /// The buckets its traffic is charged to.
    pub gate: crate::torrents::limits::Gate,
    /// The session's peer budget, checked before dialing.
    pub budget: crate::torrents::listener::Budget,
    /// Where this torrent's connection count goes for the budget.
    pub peers_used: Arc<AtomicUsize>,
    /// Where the loop publishes a snapshot, every housekeeping turn.
    pub snapshot: Arc<std::sync::Mutex<Option<Snapshot>>>,
    /// Per piece: 0 skip, 1 normal, 2 high (from the files' priorities).
    pub piece_priorities: Option<Vec<u8>>,
    /// Fast resume: the pieces to trust and those to hash again, instead
    /// of hashing every piece.
    pub resume: Option<super::resume::ResumePlan>,
    /// The session's disk threads, shared by its torrents (instead of a
    /// thread of the torrent's own).
    pub disk_pool: DiskPool,
}

/// A torrent's state as the session shows it.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// What `--control`'s `/status` shows.
    pub status: Status,
    /// The verified pieces.
    pub have: Bitfield,
    /// Connected peers that have every piece.
    pub seeds: usize,
    /// Bytes of the pieces not skipped, and of those verified.
    pub wanted: (u64, u64),
    /// Each connection: address, client (peer id prefix), rates, progress.
    pub peers: Vec<PeerView>,
    /// The torrent's own trackers, as its announcer last saw them.
    pub trackers: Vec<TrackerView>,
}

/// One tracker of a [`Snapshot`] (`GET /torrents/{infohash}`).
#[derive(Clone, Debug, serde::Serialize)]
pub struct TrackerView {
    /// Its announce URL.
    pub url: String,
    /// Its tier (0 first).
    pub tier: usize,
    /// `"working"`, `"updating"`, `"error"` or `"not contacted"`.
    pub status: &'static str,
    /// Peers in its last good answer.
    pub peers: Option<u32>,
    /// Wall clock (ms since the epoch) when its last request ended.
    pub last_announce_ms: Option<u64>,
    /// What went wrong with its last request.
    pub error: Option<String>,
}

/// One connection of a [`Snapshot`].
#[derive(Clone, Debug, serde::Serialize)]
pub struct PeerView {
    /// The peer's address.
    pub addr: String,
    /// Its peer id's printable prefix (the client's signature).
    pub client: String,
    /// Payload bytes/s from it.
    pub download_rate: u64,
    /// Payload bytes/s to it.
    pub upload_rate: u64,
    /// 1.0 for a seed, else unknown (0.0).
    pub progress: f64,
}

/// What the earlier steps of the session hand the download.
pub struct Handover {
    /// The session's clock (the peer book's times are on it).
    pub clock: Clock,
    /// The peer book, with the given peers and whatever a fetch learned.
    pub book: PeerBook,
    /// The control API's listener, bound before anything was created on
    /// disk (so a port in use fails first).
    pub control: Option<Box<dyn TcpListener>>,
    /// Providers from the session's overlay member (`--overlay`).
    pub found: Option<Receiver<Vec<SocketAddr>>>,
    /// Set once every piece is verified (the overlay member announces us
    /// as a seeder from then on).
    pub complete: Arc<AtomicBool>,
    /// Local Service Discovery started for a magnet link's fetch, if any.
    pub lsd: Option<super::lsd::LsdHandle>,
    /// The session's DHT node (not for a private torrent): our handshake
    /// says we run one, and peers' `port` messages go to it.
    pub dht: Option<super::dht::DhtPinger>,
}

/// Reads and checks the torrent file; errors say what is wrong.
pub fn load_torrent(path: &std::path::Path) -> Result<Metainfo, String> {
    let limits = Limits::default();
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.len() > limits.torrent_bytes_max as u64 {
        return Err(format!("{}: refused: the torrent file is too large ({} bytes)", path.display(), meta.len()));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Metainfo::parse_with(&bytes, &limits).map_err(|e| format!("{}: refused: {e}", path.display()))
}

/// Runs the download (then seeding, unless told to exit when complete) of
/// `meta` to the end, taking peers on `listener` (bound before anything
/// else, so a fetch could announce its port).
pub async fn download(
    mut opts: Download,
    meta: Metainfo,
    listener: Box<dyn TcpListener>,
    handover: Handover,
) -> Result<(), String> {
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let mut storage = Storage::new(&meta, &opts.dir);
    storage.open_existing();
    let storage = Arc::new(storage);
    // Check what is already there, off the event loop.
    let expected = meta.pieces.clone();
    let checker = storage.clone();
    let n = meta.piece_count();
    let plan = opts.embedded.as_mut().and_then(|e| e.resume.take());
    let have = rt::spawn_blocking(move || match plan {
        Some(plan) => super::resume::verify_plan(&plan, &checker, &expected, 2, &|_| {}),
        None => checker.check(&expected, 2, &|_| {}),
    })
    .await
    .map_err(|e| format!("checking failed: {e}"))?;
    eprintln!("{}: {} of {} pieces present", meta.name, have.count(), n);
    if opts.seed_command && have.count() == 0 {
        return Err(format!(
            "rumor seed: none of {}'s data is under {} (give the directory that holds {:?})",
            opts.torrent.display(),
            opts.dir.display(),
            meta.name
        ));
    }
    if opts.seed_command && !have.is_full() {
        eprintln!("rumor seed: data incomplete; the missing pieces will be downloaded");
    }
    let storage = if have.is_full() {
        // Seeding complete data: the x bits and links it should have.
        finish_files(&storage);
        storage
    } else {
        let mut s = Arc::try_unwrap(storage).map_err(|_| "storage still shared".to_string())?;
        s.set_direct_writes(!opts.net.buffered_writes);
        s.create_all().map_err(|e| format!("cannot create the files: {e}"))?;
        Arc::new(s)
    };
    if let Some(name) = opts.net.register.clone() {
        register_and_refresh(name, opts.net.api.clone(), opts.net.api_token.clone()).await?;
    }
    let session = Session::new(opts, meta, have, storage, port, handover)?;
    // On the runtime's workers, not on the thread that awaits it: a
    // connection task that wakes the loop (and the loop that wakes a
    // connection's writer) then hands over on the same worker, without
    // waking another thread.
    rt::spawn(session.run(listener)).await.map_err(|e| format!("the download's loop: {e}"))?
}

/// BEP 47 on complete data (executable bits, symlinks inside the torrent):
/// a few system calls per file, done once; a failure is logged, the data
/// is still good.
fn finish_files(storage: &Storage) {
    if let Err(e) = storage.finish() {
        tracing::warn!("setting file attributes: {e}");
    }
}

/// Registers `name` in the cluster's DNS now (an error if that fails), then
/// again at half its TTL for as long as the process runs.
async fn register_and_refresh(name: String, api: String, token: Option<String>) -> Result<(), String> {
    let once = {
        let (name, api, token) = (name.clone(), api.clone(), token.clone());
        move || super::cluster_dns::register(&api, token.as_deref(), &name)
    };
    let ip = rt::spawn_blocking(once.clone()).await.map_err(|e| e.to_string())??;
    eprintln!("registered {name} -> {ip} through {api}");
    rt::spawn(async move {
        loop {
            rt::sleep(std::time::Duration::from_secs(super::cluster_dns::REGISTER_TTL_S / 2)).await;
            match rt::spawn_blocking(once.clone()).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!("{e}"),
                Err(e) => tracing::warn!("registering {name}: {e}"),
            }
        }
    });
    Ok(())
}

/// A job for the disk thread.
enum DiskJob {
    Write {
        piece: u32,
        begin: u32,
        data: Bytes,
    },
    Read {
        peer: PeerKey,
        block: BlockRef,
    },
    /// Answer whether `piece` matches `expected`, once its writes are
    /// done: from `digest` (see [`PieceDigest`]), or, without one, by
    /// reading it back.
    Hash {
        piece: u32,
        expected: Sha1Hash,
        digest: Option<PieceDigest>,
    },
}

/// What the loop hands the disk thread to check a piece with.
enum PieceDigest {
    /// Its SHA-1, from its blocks hashed in order as they came.
    Done(Sha1Hash),
    /// Its blocks, in order: the disk thread hashes them together with
    /// other pieces' (see [`crate::sha1x16`]).
    Blocks(Vec<Bytes>),
}

/// The loop's side of the disk thread's queue.
///
/// With a disk thread of its own and a CPU that hashes sixteen pieces at
/// once ([`crate::sha1x16`]), a piece's blocks are kept as they come and
/// handed to the disk thread with its check, which hashes pieces in
/// groups: on this machine 4.3 GiB/s against 1.3 for one at a time, which
/// more than pays for reading the bytes again from another thread. Else
/// blocks are hashed here, as they come out of the machine: in the loop's
/// turn, on the thread that has just read them from the socket, while the
/// bytes are still in its cache (a second pass over them from another
/// thread later cost half as much again as the hash itself). The verdict
/// comes from the disk thread, after the piece's writes.
///
/// Jobs are gathered and handed over as one batch once there is something
/// to answer (a piece to check, a block to read for a peer) or
/// [`DISK_BATCH_BYTES`] of blocks to write: the disk thread wakes about
/// once per piece instead of once per socket read, and sees a piece's
/// blocks together, which it writes with one system call. Blocks held here
/// are in `pending` already, and the batch limit is well under
/// `DISK_PENDING_BYTES_MAX`, so the loop never waits on the disk for bytes
/// it has not handed over. The queue is not bounded by count but by what
/// feeds it: block writes by `DISK_PENDING_BYTES_MAX` (the loop stops
/// reading peers above it), reads by `READS_IN_FLIGHT_MAX`, hash checks by
/// the pieces being downloaded.
struct DiskQueue {
    tx: DiskSink,
    batch: Vec<DiskJob>,
    /// Block bytes in `batch`.
    batch_bytes: usize,
    /// `batch` holds a job that is answered (a check or a read).
    urgent: bool,
    hasher: PieceHasher,
    /// For piece sizes.
    storage: Arc<Storage>,
    /// Aligned buffers for blocks, when the files take direct writes.
    pool: Option<Arc<BlockPool>>,
}

/// Block bytes the loop gathers before it wakes the disk thread when
/// nothing in the batch waits for an answer.
const DISK_BATCH_BYTES: usize = 1 << 20;
const _: () = assert!(DISK_BATCH_BYTES * 4 <= DISK_PENDING_BYTES_MAX, "a held batch must not stop the loop");

/// Where a [`DiskQueue`] hands its batches: the torrent's own disk thread
/// (`rumor get`, `rumor seed`) or the session's pool.
enum DiskSink {
    /// The queue, and the thread to wake (it may be waiting for more
    /// pieces to hash together).
    Thread(Sender<Vec<DiskJob>>, std::thread::Thread),
    Pool(PoolQueue),
}

impl DiskQueue {
    fn new(tx: DiskSink, storage: Arc<Storage>) -> DiskQueue {
        // The pool's threads serve many torrents and do not wait for more
        // pieces of one: hashing there would be one piece at a time, from
        // another core's cache.
        let defer = matches!(tx, DiskSink::Thread(..)) && crate::sha1x16::available();
        let hasher = PieceHasher::new(defer);
        let pool = storage.direct_writes().then(BlockPool::new);
        DiskQueue { tx, batch: Vec::new(), batch_bytes: 0, urgent: false, hasher, storage, pool }
    }

    /// Queues a block write.
    fn write(&mut self, piece: u32, begin: u32, data: Bytes) {
        // A payload the connection read straight into an aligned buffer
        // goes to the direct write as it is. Any other is copied into one
        // first; when blocks are hashed here, from there: the copy brings
        // the bytes into this core's cache for the hash, which would read
        // them anyway.
        let data = match &self.pool {
            Some(pool) if !super::storage::direct_ready(&data) => pool.copy(&data).unwrap_or(data),
            _ => data,
        };
        self.hasher.block(piece, begin, &data);
        self.batch_bytes += data.len();
        self.batch.push(DiskJob::Write { piece, begin, data });
    }

    /// Queues a block read for `peer`.
    fn read(&mut self, peer: PeerKey, block: BlockRef) {
        self.urgent = true;
        self.batch.push(DiskJob::Read { peer, block });
    }

    /// Queues the check of `piece`, every block of which is queued.
    fn check(&mut self, piece: u32, expected: Sha1Hash) {
        let digest = self.hasher.finish(piece, self.storage.piece_size(piece));
        self.urgent = true;
        self.batch.push(DiskJob::Hash { piece, expected, digest });
    }

    /// Hands the batch over if it is due (see [`DiskQueue`]), or
    /// whatever it holds if `all`.
    fn flush(&mut self, all: bool) {
        if self.batch.is_empty() || !(all || self.urgent || self.batch_bytes >= DISK_BATCH_BYTES) {
            return;
        }
        self.batch_bytes = 0;
        self.urgent = false;
        let batch = std::mem::take(&mut self.batch);
        match &self.tx {
            // Closed: the thread is gone (the process is ending).
            DiskSink::Thread(tx, thread) => {
                let _ = tx.try_send(batch);
                thread.unpark();
            }
            DiskSink::Pool(q) => q.send(batch),
        }
    }
}

/// What the disk thread sends back to the loop.
enum Ev {
    Input(Input),
    /// A block read failed (it is not answered).
    ReadFailed,
}

/// Pieces hashed incrementally at once (pieces in progress); beyond this
/// the oldest is dropped and read back from disk.
const HASH_STATES_MAX: usize = 1024;

/// Block bytes the loop keeps, over all pieces in progress, to hand them
/// to the disk thread's grouped hash; a piece that would go over hashes
/// what it kept and the rest as it comes.
const HASH_KEPT_BYTES_MAX: usize = 8 << 20;

/// The disk thread hashes the pieces it keeps once it has this many bytes
/// of them (sixteen 1 MiB pieces: a full group)...
const HASH_GROUP_BYTES: usize = 16 << 20;
const _: () = assert!(
    HASH_GROUP_BYTES + 4 * DISK_BATCH_BYTES <= DISK_PENDING_BYTES_MAX,
    "a full group must leave the loop room to go on while it is hashed"
);

/// ...or sixteen pieces, or when no piece has joined them for this long
/// (so pieces coming at 50 MiB/s or more wait for a full group, and one
/// coming alone waits this long).
const HASH_GROUP_WAIT: Duration = Duration::from_millis(20);

/// Block bytes held at most, over all pieces, because they came ahead of
/// a block still missing in their piece (a seeder whose disk reads finish
/// out of order sends a piece's blocks so). They are the same buffers the
/// disk thread writes from: holding them costs only while the gap lasts.
const HASH_HELD_BYTES_MAX: usize = 4 << 20;

/// Blocks written with one `pwritev` at most (4 MiB, well under
/// `IOV_MAX`).
const WRITE_RUN_MAX: usize = 256;

/// Block bytes the disk thread gathers at most, while pieces wait to be
/// hashed together, before it writes them.
const WRITE_GATHER_BYTES: usize = 4 << 20;

/// SHA-1 of each piece from its blocks as they come: the hash costs one
/// pass over bytes still in the cache, and the check at the end costs
/// nothing more. A block that comes ahead of a missing one is held (up to
/// [`HASH_HELD_BYTES_MAX`] in all) and hashed once the gap is filled; a
/// piece that cannot be hashed so (a block that came twice, a hold that
/// would go over the limit) is read back from disk to be checked, which
/// with direct writes is a read from the device.
struct PieceHasher {
    /// piece -> its running hash; None: given up, read back at the end.
    states: BTreeMap<u32, Option<PieceHash>>,
    /// Pieces in `states`, oldest first (maybe stale entries).
    order: VecDeque<u32>,
    /// Bytes of blocks held in all `states`.
    held_bytes: usize,
    /// Keep the blocks of a new piece for the grouped hash.
    defer: bool,
    /// Bytes of blocks kept in all `states`.
    kept_bytes: usize,
}

/// A piece's hash so far, and the blocks that came ahead of a gap.
struct PieceHash {
    sha: sha1::Sha1,
    /// Its blocks from the start to `next`, not hashed yet (for the
    /// grouped hash); None: they are in `sha`.
    kept: Option<Vec<Bytes>>,
    /// Offset of the next byte to hash.
    next: u32,
    /// begin -> block, every begin > `next`.
    held: BTreeMap<u32, Bytes>,
}

impl PieceHash {
    /// Takes the block at `next`: keeps it while `kept_bytes` allows,
    /// else hashes what was kept and it.
    fn take(&mut self, data: &Bytes, kept_bytes: &mut usize) {
        use sha1::Digest;
        self.next += data.len() as u32;
        if let Some(kept) = &mut self.kept {
            if *kept_bytes + data.len() <= HASH_KEPT_BYTES_MAX {
                *kept_bytes += data.len();
                kept.push(data.clone());
                return;
            }
            for b in kept.drain(..) {
                *kept_bytes -= b.len();
                self.sha.update(&b);
            }
            self.kept = None;
        }
        self.sha.update(data);
    }
}

impl PieceHasher {
    fn new(defer: bool) -> PieceHasher {
        PieceHasher { states: BTreeMap::new(), order: VecDeque::new(), held_bytes: 0, defer, kept_bytes: 0 }
    }

    /// A block of `piece` at `begin`.
    fn block(&mut self, piece: u32, begin: u32, data: &Bytes) {
        use sha1::Digest;
        if !self.states.contains_key(&piece) {
            if self.states.len() >= HASH_STATES_MAX {
                while let Some(old) = self.order.pop_front() {
                    if let Some(st) = self.states.remove(&old) {
                        self.release(st);
                        break;
                    }
                }
            }
            self.order.push_back(piece);
            let kept = self.defer.then(Vec::new);
            let st = PieceHash { sha: sha1::Sha1::new(), kept, next: 0, held: BTreeMap::new() };
            self.states.insert(piece, Some(st));
        }
        let slot = self.states.get_mut(&piece).expect("inserted above");
        let Some(st) = slot else { return };
        if begin == st.next {
            st.take(data, &mut self.kept_bytes);
            // The held blocks the gap was waiting for.
            while let Some(b) = st.held.remove(&st.next) {
                st.take(&b, &mut self.kept_bytes);
                self.held_bytes -= b.len();
            }
            return;
        }
        let fits = self.held_bytes + data.len() <= HASH_HELD_BYTES_MAX;
        if begin > st.next && fits && !st.held.contains_key(&begin) {
            self.held_bytes += data.len();
            st.held.insert(begin, data.clone());
            return;
        }
        // A block again, or no room to wait: read it back at the end.
        let st = slot.take().expect("matched above");
        self.release(Some(st));
    }

    /// Forgets the blocks `st` held and kept.
    fn release(&mut self, st: Option<PieceHash>) {
        if let Some(st) = st {
            self.held_bytes -= st.held.values().map(|b| b.len()).sum::<usize>();
            self.kept_bytes -= st.kept.iter().flatten().map(|b| b.len()).sum::<usize>();
        }
    }

    /// Every block of `piece` (of `size` bytes) came: its SHA-1 or its
    /// kept blocks, if each came in order (held ones count); the piece's
    /// state is forgotten either way.
    fn finish(&mut self, piece: u32, size: u64) -> Option<PieceDigest> {
        use sha1::Digest;
        match self.states.remove(&piece) {
            Some(Some(mut st)) if st.next as u64 == size && st.held.is_empty() => Some(match st.kept.take() {
                Some(kept) => {
                    self.kept_bytes -= kept.iter().map(|b| b.len()).sum::<usize>();
                    PieceDigest::Blocks(kept)
                }
                None => PieceDigest::Done(st.sha.finalize().into()),
            }),
            Some(st) => {
                self.release(st);
                None
            }
            None => None,
        }
    }
}

/// Starts the disk thread: it takes the loop's batches in order, writes
/// each run of adjacent blocks of a piece with one system call, serves
/// block reads, and answers hash checks after the piece's writes (one
/// thread, in order). A check comes with the digest of the blocks as they
/// were queued; a piece hashed out of order, or one a write of which
/// failed since its last check (the disk may not hold what was hashed),
/// is read back and hashed from disk. Releases written blocks from the
/// `pending` count. Results go to a bounded channel; the thread waits
/// when it is full.
///
/// Pieces that come with their blocks ([`PieceDigest::Blocks`]) are hashed
/// in groups: the thread waits for more (it is woken by each batch) until
/// the group is full or no piece has joined it for [`HASH_GROUP_WAIT`].
fn spawn_disk_thread(
    storage: Arc<Storage>,
    jobs: Receiver<Vec<DiskJob>>,
    results: Sender<Ev>,
    pending: Arc<AtomicUsize>,
) -> std::thread::Thread {
    std::thread::Builder::new()
        .name("bt-disk".into())
        .spawn(move || {
            let mut disk = TorrentDisk::new(storage, results, pending);
            loop {
                let batch = match disk.group_since {
                    None => match jobs.recv_blocking() {
                        Ok(b) => b,
                        Err(_) => return,
                    },
                    Some(since) => match jobs.try_recv() {
                        Ok(b) => b,
                        Err(async_channel::TryRecvError::Closed) => return,
                        Err(async_channel::TryRecvError::Empty) => {
                            let due = since + HASH_GROUP_WAIT;
                            let now = std::time::Instant::now();
                            if now >= due {
                                if !disk.hash_group() {
                                    return;
                                }
                            } else {
                                // Woken early by the next batch.
                                std::thread::park_timeout(due - now);
                            }
                            continue;
                        }
                    },
                };
                if !disk.batch(batch) {
                    return;
                }
            }
        })
        .expect("spawn the disk thread")
        .thread()
        .clone()
}

/// One torrent's side of the disk work: its files, where results go, and
/// what must survive from one batch to the next.
struct TorrentDisk {
    storage: Arc<Storage>,
    results: Sender<Ev>,
    pending: Arc<AtomicUsize>,
    /// Pieces a write of which failed since their last check.
    failed: BTreeSet<u32>,
    /// Blocks to write: (piece, begin, data).
    writes: Vec<(u32, u32, Bytes)>,
    /// Buffers for the blocks read for peers.
    read_pool: Arc<BlockPool>,
    writes_bytes: usize,
    buf: Vec<u8>,
    /// Pieces waiting to be hashed together: (piece, expected, blocks).
    group: Vec<(u32, Sha1Hash, Vec<Bytes>)>,
    group_bytes: usize,
    /// When the last piece joined `group` (None: it is empty).
    group_since: Option<std::time::Instant>,
}

impl TorrentDisk {
    fn new(storage: Arc<Storage>, results: Sender<Ev>, pending: Arc<AtomicUsize>) -> TorrentDisk {
        TorrentDisk {
            storage,
            results,
            pending,
            failed: BTreeSet::new(),
            writes: Vec::new(),
            writes_bytes: 0,
            read_pool: BlockPool::new(),
            buf: Vec::new(),
            group: Vec::new(),
            group_bytes: 0,
            group_since: None,
        }
    }

    /// Hashes the pieces in `group` together, once their blocks are
    /// written, and sends their verdicts; false once the torrent's loop is
    /// gone.
    fn hash_group(&mut self) -> bool {
        self.group_since = None;
        self.group_bytes = 0;
        if !self.write_out() {
            return false;
        }
        if self.group.is_empty() {
            return true;
        }
        let group = std::mem::take(&mut self.group);
        let pieces: Vec<&[Bytes]> = group.iter().map(|(_, _, b)| b.as_slice()).collect();
        let digests = crate::sha1x16::digest_pieces(&pieces);
        let bytes: usize = pieces.iter().flat_map(|p| p.iter()).map(|b| b.len()).sum();
        drop(pieces);
        let verdicts: Vec<(u32, Sha1Hash, Sha1Hash)> =
            group.into_iter().zip(digests).map(|((p, want, _), d)| (p, want, d)).collect();
        // The blocks are free again.
        self.pending.fetch_sub(bytes, Ordering::Relaxed);
        for (piece, expected, digest) in verdicts {
            // A piece a write of which failed: the disk may not hold what
            // was hashed.
            let ok = if self.failed.remove(&piece) { self.hash_from_disk(piece, expected) } else { digest == expected };
            if self.results.send_blocking(Ev::Input(Input::PieceChecked { piece, ok })).is_err() {
                return false;
            }
        }
        true
    }

    /// A block for a peer, read into a pooled buffer when it fits one (no
    /// allocation, no zeroing: the buffer comes back once it is sent).
    fn read_block(&self, block: BlockRef) -> std::io::Result<Bytes> {
        let len = block.length as usize;
        if len > super::storage::POOL_BLOCK_BYTES {
            return self.storage.read(block.index, block.begin, block.length).map(Bytes::from);
        }
        let mut buf = self.read_pool.lend();
        self.storage.read_exact(block.index, block.begin as u64, &mut buf.as_mut_slice()[..len])?;
        Ok(buf.into_bytes(len))
    }

    fn hash_from_disk(&mut self, piece: u32, expected: Sha1Hash) -> bool {
        tracing::debug!("piece {piece}: hashing it from disk");
        self.storage.hash_piece(piece, &mut self.buf).is_ok_and(|h| h == expected)
    }

    /// Writes the gathered blocks, sorted by piece and offset, each run of
    /// blocks that follow on in the content (across pieces too) with one
    /// system call: a piece's blocks are one run even when a seeder
    /// interleaves pieces or sends a piece's blocks out of order, and
    /// gathered pieces go several at a time (each direct write costs this
    /// virtual machine an exit to the host). The sort is stable: a block
    /// written twice keeps its last bytes. False once the loop is gone.
    fn write_out(&mut self) -> bool {
        if self.writes.is_empty() {
            return true;
        }
        let mut writes = std::mem::take(&mut self.writes);
        self.writes_bytes = 0;
        writes.sort_by_key(|(piece, begin, _)| (*piece, *begin));
        let mut i = 0;
        while i < writes.len() {
            let (first, begin, ref data) = writes[i];
            let (mut piece, mut end) = (first, begin as u64 + data.len() as u64);
            let mut j = i + 1;
            while j < writes.len() && j - i < WRITE_RUN_MAX {
                let (p, b, ref d) = writes[j];
                let follows = (p == piece && b as u64 == end)
                    || (p == piece.wrapping_add(1) && b == 0 && end == self.storage.piece_size(piece));
                if !follows {
                    break;
                }
                (piece, end) = (p, b as u64 + d.len() as u64);
                j += 1;
            }
            let run = &writes[i..j];
            let bytes: usize = run.iter().map(|(_, _, d)| d.len()).sum();
            let written = if let [(_, _, one)] = run {
                self.storage.write(first, begin, one)
            } else {
                let slices: Vec<&[u8]> = run.iter().map(|(_, _, d)| &d[..]).collect();
                self.storage.write_blocks(first, begin, &slices)
            };
            self.pending.fetch_sub(bytes, Ordering::Relaxed);
            if let Err(e) = written {
                for p in first..=piece {
                    self.failed.insert(p);
                    tracing::warn!("write of piece {p} failed: {e}");
                    if self.results.send_blocking(Ev::Input(Input::WriteFailed { piece: p })).is_err() {
                        return false;
                    }
                }
            }
            i = j;
        }
        writes.clear();
        self.writes = writes;
        true
    }

    /// Does one batch in order (see [`spawn_disk_thread`]); false once the
    /// torrent's loop is gone.
    ///
    /// Writes are gathered first, and go out before anything that needs
    /// them done: a check must follow its piece's writes, and a read is
    /// only ever of a verified piece. While pieces wait to be hashed
    /// together, writes wait with them (up to [`WRITE_GATHER_BYTES`]).
    fn batch(&mut self, batch: Vec<DiskJob>) -> bool {
        let mut others = Vec::new();
        for job in batch {
            match job {
                DiskJob::Write { piece, begin, data } => {
                    self.writes_bytes += data.len();
                    self.writes.push((piece, begin, data));
                }
                job => others.push(job),
            }
        }
        for job in others {
            let ev = match job {
                DiskJob::Write { .. } => unreachable!("taken above"),
                DiskJob::Read { peer, block } => {
                    if !self.write_out() {
                        return false;
                    }
                    match self.read_block(block) {
                        Ok(data) => Ev::Input(Input::BlockRead { peer, block, data }),
                        Err(e) => {
                            tracing::warn!("read of piece {} failed: {e}", block.index);
                            Ev::ReadFailed
                        }
                    }
                }
                DiskJob::Hash { piece, expected, digest: Some(PieceDigest::Blocks(blocks)) } => {
                    let bytes = blocks.iter().map(|b| b.len()).sum::<usize>();
                    // Held until hashed: they count against the loop's
                    // budget again (their writes take them off).
                    self.pending.fetch_add(bytes, Ordering::Relaxed);
                    self.group_bytes += bytes;
                    self.group.push((piece, expected, blocks));
                    self.group_since = Some(std::time::Instant::now());
                    if (self.group.len() >= crate::sha1x16::LANES || self.group_bytes >= HASH_GROUP_BYTES)
                        && !self.hash_group()
                    {
                        return false;
                    }
                    continue;
                }
                DiskJob::Hash { piece, expected, digest } => {
                    if !self.write_out() {
                        return false;
                    }
                    let ok = match digest {
                        Some(PieceDigest::Done(d)) if !self.failed.remove(&piece) => d == expected,
                        _ => {
                            self.failed.remove(&piece);
                            self.hash_from_disk(piece, expected)
                        }
                    };
                    Ev::Input(Input::PieceChecked { piece, ok })
                }
            };
            if self.results.send_blocking(ev).is_err() {
                return false;
            }
        }
        // Writes wait for more to join them only while a group does.
        if self.group.is_empty() || self.writes_bytes >= WRITE_GATHER_BYTES {
            return self.write_out();
        }
        true
    }
}

/// Disk threads shared by every torrent of a session (`rumor node
/// --downloads`), instead of one thread per torrent. A torrent's batches
/// stay in order: a torrent with work is queued once, and the thread that
/// takes it does all its queued batches before letting it go, so two
/// threads never work for one torrent at once.
#[derive(Clone)]
pub struct DiskPool {
    ready: Sender<Arc<PooledDisk>>,
}

/// A torrent as the pool sees it.
struct PooledDisk {
    jobs: Receiver<Vec<DiskJob>>,
    /// In the pool's queue or being worked on.
    scheduled: AtomicBool,
    disk: std::sync::Mutex<TorrentDisk>,
}

impl DiskPool {
    /// Starts `threads` disk threads; they end once every handle to the
    /// pool and every torrent attached to it are gone.
    pub fn new(threads: usize) -> DiskPool {
        // Not bounded by count: each torrent is in it at most once.
        let (ready, queue) = async_channel::unbounded::<Arc<PooledDisk>>();
        for i in 0..threads.max(1) {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("bt-disk-{i}"))
                .spawn(move || {
                    while let Ok(t) = queue.recv_blocking() {
                        loop {
                            let mut alive = true;
                            {
                                let mut disk = t.disk.lock().unwrap_or_else(|e| e.into_inner());
                                while let Ok(batch) = t.jobs.try_recv() {
                                    if !disk.batch(batch) {
                                        alive = false;
                                        break;
                                    }
                                }
                                // Its loop keeps no blocks for this, but
                                // nothing may wait past the queue's end.
                                alive = alive && disk.hash_group();
                            }
                            t.scheduled.store(false, Ordering::SeqCst);
                            // A batch queued between the last try_recv and
                            // the store above saw `scheduled` still set.
                            if !alive || t.jobs.is_empty() || t.scheduled.swap(true, Ordering::SeqCst) {
                                break;
                            }
                        }
                    }
                })
                .expect("spawn a disk thread");
        }
        DiskPool { ready }
    }

    /// A torrent's queue into the pool.
    fn attach(&self, storage: Arc<Storage>, results: Sender<Ev>, pending: Arc<AtomicUsize>) -> PoolQueue {
        let (tx, jobs) = async_channel::unbounded();
        let t = Arc::new(PooledDisk {
            jobs,
            scheduled: AtomicBool::new(false),
            disk: std::sync::Mutex::new(TorrentDisk::new(storage, results, pending)),
        });
        PoolQueue { tx, torrent: t, ready: self.ready.clone() }
    }
}

/// Where a torrent of a session hands its batches (see [`DiskPool`]).
struct PoolQueue {
    tx: Sender<Vec<DiskJob>>,
    torrent: Arc<PooledDisk>,
    ready: Sender<Arc<PooledDisk>>,
}

impl PoolQueue {
    fn send(&self, batch: Vec<DiskJob>) {
        let _ = self.tx.try_send(batch);
        if !self.torrent.scheduled.swap(true, Ordering::SeqCst) {
            let _ = self.ready.try_send(self.torrent.clone());
        }
    }
}

/// What woke the session's loop.
enum Wake {
    Signal(&'static str),
    Event(Option<Ev>),
    Tracker(Option<TrackerEvent>),
    Control(Option<Command>),
    Peer(Option<Inbound>),
    /// A peer's send queue has room again: its held piece replies may go.
    Room,
    Accepted(Option<(TcpStream, SocketAddr)>),
    Found(Option<Vec<SocketAddr>>),
    Timer,
}

struct Session {
    clock: Clock,
    /// Set once every piece is verified (read by the overlay member).
    complete_flag: Arc<AtomicBool>,
    /// Pieces that passed / failed their hash check since start.
    pieces_verified: u64,
    pieces_failed: u64,
    name: String,
    info_hash_hex: String,
    total: u64,
    torrent: Torrent,
    announcer: Announcer,
    peers: Peers,
    /// The files, for [`Storage::finish`] once complete.
    storage: Arc<Storage>,
    disk: DiskQueue,
    disk_pending: Arc<AtomicUsize>,
    reads_in_flight: usize,
    /// Block reads waiting, per peer (each bounded by the machine's
    /// `peer_requests_max`); served in turn, only for peers whose send
    /// queue has room.
    reads_waiting: BTreeMap<PeerKey, VecDeque<BlockRef>>,
    events_rx: Receiver<Ev>,
    tracker_io: trackers::TrackerIo,
    tracker_rx: Receiver<TrackerEvent>,
    control_rx: Receiver<Command>,
    found_rx: Option<Receiver<Vec<SocketAddr>>>,
    /// Where peers' DHT ports go (BEP 5 `port`), if the DHT is on.
    dht: Option<super::dht::DhtPinger>,
    torrent_deadline: Instant,
    announce_deadline: Instant,
    exit_when_complete: bool,
    paused: bool,
    stopping: Option<std::time::Instant>,
    write_failures: u32,
    /// Why the session gave up, if it did (the exit is then non-zero).
    fatal: Option<String>,
    progress: Progress,
    /// What each connection was told by peer exchange (BEP 11).
    pex: PexSender,
    /// Our peer id, which settles which of two connections to one peer
    /// stays (see [`Session::on_peer_ready`]).
    peer_id: [u8; 20],
    /// The live connection of each peer id that has handshaken (stale
    /// entries are pruned once it outgrows the peer slots).
    by_peer_id: BTreeMap<[u8; 20], PeerKey>,
    /// Local Service Discovery (BEP 14), unless off or private.
    lsd: Option<super::lsd::LsdHandle>,
    /// Run by the node's session: its limits, budget and snapshot.
    embedded: Option<Embedded>,
}

impl Session {
    fn new(
        mut opts: Download,
        meta: Metainfo,
        have: Bitfield,
        storage: Arc<Storage>,
        port: u16,
        handover: Handover,
    ) -> Result<Session, String> {
        let Handover { clock, book, control, found, complete, lsd, dht } = handover;
        complete.store(have.is_full(), Ordering::Relaxed);
        let now = clock.now();
        let peer_id = super::entropy::peer_id();
        let seed = super::entropy::seed();
        let mut config = TorrentConfig::new(peer_id);
        config.peers_max = PEERS_MAX;
        config.choke_interval = rumor_core::time::Duration::from_secs(5);
        config.request_timeout = rumor_core::time::Duration::from_secs(20);
        config.listen_port = Some(port);
        config.dht_port = dht.as_ref().map(|d| d.port);
        let mut torrent = Torrent::new(config, &meta, &have, now, seed);
        if let Some(p) = opts.embedded.as_mut().and_then(|e| e.piece_priorities.take()) {
            torrent.handle(now, Input::SetPiecePriorities(p));
        }
        let left = torrent.stats().left;
        let announcer = Announcer::new(
            AnnounceConfig::new(peer_id, port),
            meta.info_hash,
            &meta.announce_tiers,
            left,
            now,
            super::entropy::seed(),
        );
        // Not bounded by count: see `DiskQueue`.
        let (events_tx, events_rx) = async_channel::bounded(DISK_RESULTS_MAX);
        let disk_pending = Arc::new(AtomicUsize::new(0));
        let sink = match opts.embedded.as_ref().map(|e| &e.disk_pool) {
            Some(pool) => DiskSink::Pool(pool.attach(storage.clone(), events_tx, disk_pending.clone())),
            None => {
                let (disk_tx, disk_rx) = async_channel::unbounded();
                let thread = spawn_disk_thread(storage.clone(), disk_rx, events_tx, disk_pending.clone());
                DiskSink::Thread(disk_tx, thread)
            }
        };
        let disk = DiskQueue::new(sink, storage.clone());
        let (tracker_tx, tracker_rx) = async_channel::bounded(TRACKER_EVENTS_MAX);
        let (control_tx, mut control_rx) = async_channel::bounded(16);
        let embedded = opts.embedded.take().map(|mut e| {
            control_rx = std::mem::replace(&mut e.commands, async_channel::bounded(1).1);
            e
        });
        if let Some(listener) = control {
            control::serve(listener, control_tx);
        }
        let tracker_io = trackers::TrackerIo::new(tracker_tx, &meta.announce_tiers, opts.net.dns);
        let lsd = match lsd {
            _ if opts.net.no_lsd || meta.private => None,
            Some(lsd) => Some(lsd),
            None => super::lsd::start(clock, meta.info_hash, SocketAddr::new(opts.net.bind, port)),
        };
        let verified = total_verified(&meta, &have);
        let progress = Progress::new(&meta.name, meta.total_length, verified, opts.net.quiet);
        eprintln!("{}: infohash {}, listening on port {port}", meta.name, meta.info_hash);
        Ok(Session {
            clock,
            name: meta.name.clone(),
            info_hash_hex: meta.info_hash.to_hex(),
            total: meta.total_length,
            torrent,
            announcer,
            peers: Peers::new(clock, book, LIMITS)
                .with_crypto(Crypto { policy: opts.net.encryption, info_hash: meta.info_hash }),
            storage,
            disk,
            disk_pending,
            reads_in_flight: 0,
            reads_waiting: BTreeMap::new(),
            events_rx,
            tracker_io,
            tracker_rx,
            control_rx,
            found_rx: found,
            dht,
            torrent_deadline: now,
            announce_deadline: now,
            exit_when_complete: opts.exit_when_complete,
            paused: embedded.as_ref().is_some_and(|e| e.paused.load(Ordering::Relaxed)),
            pieces_verified: 0,
            pieces_failed: 0,
            stopping: None,
            write_failures: 0,
            fatal: None,
            progress,
            complete_flag: complete,
            pex: PexSender::new(meta.private),
            peer_id,
            by_peer_id: BTreeMap::new(),
            lsd,
            embedded,
        })
    }

    /// Prints a line without tearing the progress bar.
    fn say(&self, line: String) {
        self.progress.say(&line);
    }

    fn verified(&self) -> u64 {
        self.total - self.torrent.stats().left
    }

    async fn run(mut self, listener: Box<dyn TcpListener>) -> Result<(), String> {
        let (accept_tx, accept_rx) = async_channel::bounded(ACCEPTED_MAX);
        let accept = rt::spawn(async move {
            loop {
                match listener.accept().await {
                    // The loop behind (a flood of connections): wait for it
                    // rather than close this one, and the others queue in
                    // the kernel's backlog. Closing at random whichever
                    // came while the queue was full closed a real client's
                    // connection among 70 reconnecting ones holding the
                    // slots, and a client does not dial back for a minute.
                    Ok(conn) => {
                        if accept_tx.send(conn).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!("accept: {e}");
                        rt::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        self.pump_torrent();
        self.pump_announcer();
        if self.torrent.is_complete() && self.exit_when_complete {
            self.say(format!("{}: already complete", self.name));
            self.begin_stop();
        }
        // The given peers, and those a metadata fetch found, at once.
        self.dial_some();
        self.publish();
        let mut next_housekeeping = std::time::Instant::now() + HOUSEKEEPING;
        let signals = rt::termination_signals();
        // In the node's session the node takes the signals and stops us.
        let embedded = self.embedded.is_some();
        let mut control_open = true;
        let found_rx = self.found_rx.take();
        let mut found_open = found_rx.is_some();
        let peer_rx = self.peers.events().clone();
        let rooms = self.peers.rooms().clone();
        loop {
            // What the last turn (or the start) gave the disk thread to do.
            self.disk.flush(false);
            if let Some(deadline) = self.stopping {
                if self.announcer_idle() || std::time::Instant::now() >= deadline {
                    break;
                }
            }
            let wake = self.torrent_deadline.min(self.announce_deadline);
            let wake = self.clock.std_instant(wake.min(self.clock.now() + rumor_core::time::Duration::from_secs(1)));
            let disk_ok = self.disk_pending.load(Ordering::Relaxed) < DISK_PENDING_BYTES_MAX;
            let wake = if disk_ok { wake } else { wake.min(std::time::Instant::now() + DISK_POLL) };
            let wake = wake.min(next_housekeeping);
            let stopping = self.stopping.is_some();
            // The session's rate limit: no more bytes from peers until the
            // buckets are out of debt (their connections wait meanwhile).
            let down_wait = self.embedded.as_ref().and_then(|e| e.gate.download_wait());
            let wake = down_wait.map_or(wake, |t| wake.min(t));
            let up_wait = self.embedded.as_ref().filter(|_| !self.reads_waiting.is_empty());
            let wake = up_wait.and_then(|e| e.gate.upload_wait()).map_or(wake, |t| wake.min(t));
            let disk_ok = disk_ok && down_wait.is_none();
            let found = async {
                match &found_rx {
                    Some(rx) => rx.recv().await.ok(),
                    None => None,
                }
            };
            // Which source woke the loop; handled below, once the futures
            // (which borrow the channels) are gone.
            let woke = futures::select_biased! {
                sig = when(!stopping && !embedded, signals.recv()).fuse() => Wake::Signal(sig.unwrap_or("signal")),
                ev = self.events_rx.recv().fuse() => Wake::Event(ev.ok()),
                t = self.tracker_rx.recv().fuse() => Wake::Tracker(t.ok()),
                c = when(control_open, self.control_rx.recv()).fuse() => Wake::Control(c.ok()),
                p = when(disk_ok, peer_rx.recv()).fuse() => Wake::Peer(p.ok()),
                _ = rooms.recv().fuse() => Wake::Room,
                a = accept_rx.recv().fuse() => Wake::Accepted(a.ok()),
                f = when(found_open, found).fuse() => Wake::Found(f),
                _ = rt::sleep_until(wake).fuse() => Wake::Timer,
            };
            match woke {
                Wake::Signal(sig) => {
                    self.say(format!("\n{}: stopping ({sig})", self.name));
                    if !self.torrent.is_complete() {
                        // Interrupted before the end: the exit says so.
                        self.fatal.get_or_insert_with(|| {
                            format!("interrupted ({sig}) before the download completed; run it again to resume")
                        });
                    }
                    self.begin_stop();
                }
                Wake::Event(Some(ev)) => {
                    self.on_event(ev);
                    // Take the other results already there in this turn: the
                    // blocks read for one peer then leave in one write.
                    for _ in 0..super::peer_conn::PEER_EVENTS_MAX {
                        match self.events_rx.try_recv() {
                            Ok(ev) => self.on_event(ev),
                            Err(_) => break,
                        }
                    }
                }
                Wake::Tracker(Some(t)) => self.on_tracker(t),
                Wake::Control(Some(c)) => self.on_control(c),
                Wake::Peer(Some(p)) => {
                    p.for_each(|p| self.on_peer(p));
                    // Take what else is already there before draining timers.
                    for _ in 0..super::peer_conn::PEER_EVENTS_MAX {
                        if self.disk_pending.load(Ordering::Relaxed) >= DISK_PENDING_BYTES_MAX {
                            break;
                        }
                        if self.embedded.as_ref().is_some_and(|e| e.gate.download_wait().is_some()) {
                            break;
                        }
                        match peer_rx.try_recv() {
                            Ok(p) => p.for_each(|p| self.on_peer(p)),
                            Err(_) => break,
                        }
                    }
                }
                Wake::Accepted(Some((stream, addr))) => {
                    // Refused (paused, stopping): the stream is dropped
                    // here, which closes it at once.
                    if !self.paused && self.stopping.is_none() {
                        self.take(stream, addr);
                    }
                }
                Wake::Found(Some(found)) => {
                    for p in found {
                        self.peers.learn(p, Source::Overlay);
                    }
                    self.dial_some();
                }
                Wake::Found(None) => found_open = false,
                // Without --control nobody holds the control sender: that
                // branch is switched off. The session holds a sender of each
                // other channel, so they never close while the loop runs.
                Wake::Control(None) => control_open = false,
                Wake::Event(None) | Wake::Tracker(None) | Wake::Peer(None) | Wake::Accepted(None) => {}
                Wake::Room => {
                    while rooms.try_recv().is_ok() {}
                    self.submit_reads();
                }
                Wake::Timer => {}
            }
            // Timers are checked after every wake, not only when the timer
            // branch wins: a busy peer stream must not starve them.
            let now = self.clock.now();
            if now >= self.torrent_deadline {
                self.feed(Input::Timeout);
            }
            if now >= self.announce_deadline {
                self.announcer.handle(now, announce::Input::Timeout);
                self.pump_announcer();
            }
            if std::time::Instant::now() >= next_housekeeping {
                next_housekeeping = std::time::Instant::now() + HOUSEKEEPING;
                self.housekeeping();
            }
            if self.embedded.is_some() && !self.reads_waiting.is_empty() {
                // Uploads held back by the rate limit go when it allows.
                self.submit_reads();
            }
        }
        self.disk.flush(true);
        self.publish();
        accept.abort();
        self.progress.finish();
        self.print_summary();
        match self.fatal {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn announcer_idle(&mut self) -> bool {
        self.announce_deadline == Instant::NEVER
    }

    /// Closes every connection and tells the machine.
    fn close_all(&mut self) {
        for k in self.peers.close_all() {
            self.feed(Input::Peer(PeerInput::Closed { peer: k, reason: CloseReason::Local }));
        }
    }

    fn begin_stop(&mut self) {
        if self.stopping.is_some() {
            return;
        }
        self.stopping = Some(std::time::Instant::now() + STOP_GRACE);
        self.close_all();
        self.progress_to_announcer();
        self.announcer.handle(self.clock.now(), announce::Input::Stop);
        self.pump_announcer();
    }

    fn print_summary(&self) {
        let secs = self.progress.elapsed().as_secs_f64();
        let got = self.verified().saturating_sub(self.progress.start_verified());
        let s = self.torrent.stats();
        eprintln!(
            "{}: {} of {} bytes verified; this run: {} bytes in {:.2} s ({:.1} MiB/s), uploaded {}, wasted {}",
            self.name,
            self.verified(),
            self.total,
            got,
            secs,
            got as f64 / secs.max(1e-9) / (1 << 20) as f64,
            s.uploaded,
            s.wasted
        );
    }

    fn feed(&mut self, input: Input) {
        let now = self.clock.now();
        self.torrent.handle(now, input);
        self.pump_torrent();
    }

    /// Takes an incoming connection. When every slot is taken, the machine
    /// drops its least useful peer, if one may give way (one that never
    /// sent its handshake, or has been of no use for a while), so a flood
    /// of idle connections cannot keep a real peer out. Refused streams are
    /// dropped, which closes them.
    fn take(&mut self, stream: TcpStream, addr: SocketAddr) {
        // The session's budget all taken (by every torrent together): in
        // only in place of one of ours that gives way.
        if self.embedded.as_ref().is_some_and(|e| !e.budget.has_room()) {
            let before = self.peers.len();
            self.feed(Input::MakeRoom);
            if self.peers.len() >= before {
                return tracing::debug!("peer {addr}: refused: the session's peers are all in use, none may give way");
            }
            if let Some(e) = &self.embedded {
                e.peers_used.store(self.peers.len(), Ordering::Relaxed);
            }
        }
        let stream = match self.peers.accept(stream, addr) {
            Ok(()) => return,
            Err((Refused::Full, stream)) => stream,
            Err((why, _)) => return tracing::debug!("peer {addr}: refused ({why:?})"),
        };
        self.feed(Input::MakeRoom);
        if let Err((why, _)) = self.peers.accept(stream, addr) {
            tracing::debug!("peer {addr}: refused ({why:?}): no peer may give way");
        }
    }

    fn on_peer(&mut self, p: PeerInput) {
        if let (Some(e), PeerInput::Bytes { bytes, .. }) = (&self.embedded, &p) {
            e.gate.downloaded(bytes.len());
        }
        if self.peers.observe(&p) {
            self.feed(p.into());
        }
    }

    fn pump_torrent(&mut self) {
        loop {
            match self.torrent.poll_output() {
                Output::Timeout(at) => {
                    self.torrent_deadline = at;
                    break;
                }
                Output::Transmit(t) => self.send(t.to, t.bytes),
                Output::WriteBlock { piece, begin, data } => {
                    self.disk_pending.fetch_add(data.len(), Ordering::Relaxed);
                    self.disk.write(piece, begin, data);
                }
                Output::ReadBlock { peer, block } => {
                    self.reads_waiting.entry(peer).or_default().push_back(block);
                    self.submit_reads();
                }
                Output::HashPiece { piece, expected } => {
                    self.disk.check(piece, expected);
                }
                Output::Disconnect { peer, reason } => self.on_disconnect(peer, reason),
                Output::Event(e) => self.on_torrent_event(e),
            }
        }
    }

    fn read_done(&mut self) {
        self.reads_in_flight = self.reads_in_flight.saturating_sub(1);
        self.submit_reads();
    }

    /// Hands waiting block reads to the disk thread, up to the cap, one
    /// peer's at a time in turn; a peer whose send queue is over its soft
    /// limit waits (its replies would only sit in memory) until the
    /// socket drains ([`Peers::rooms`]). Reads for peers gone since are
    /// dropped.
    fn submit_reads(&mut self) {
        while self.reads_in_flight < READS_IN_FLIGHT_MAX {
            if self.embedded.as_ref().is_some_and(|e| e.gate.upload_wait().is_some()) {
                break;
            }
            let mut progressed = false;
            let waiting: Vec<PeerKey> = self.reads_waiting.keys().copied().collect();
            for peer in waiting {
                if self.reads_in_flight >= READS_IN_FLIGHT_MAX {
                    break;
                }
                if self.peers.addr(peer).is_none() {
                    self.reads_waiting.remove(&peer);
                    continue;
                }
                if !self.peers.has_room(peer) {
                    continue;
                }
                let q = self.reads_waiting.get_mut(&peer).expect("listed above");
                if let Some(block) = q.pop_front() {
                    if let Some(e) = &self.embedded {
                        e.gate.uploaded(block.length as usize);
                    }
                    self.reads_in_flight += 1;
                    progressed = true;
                    self.disk.read(peer, block);
                }
                if q.is_empty() {
                    self.reads_waiting.remove(&peer);
                }
            }
            if !progressed {
                break;
            }
        }
    }

    fn send(&mut self, peer: PeerKey, bytes: Vec<u8>) {
        if self.peers.send(peer, bytes).is_err() {
            if let Some(addr) = self.peers.drop_peer(peer, Closed::Transient) {
                tracing::info!(
                    "peer {addr}: dropped: over {} bytes queued to it (it asks for more than it reads)",
                    LIMITS.send_bytes_max
                );
            }
            let now = self.clock.now();
            self.torrent.handle(now, Input::Peer(PeerInput::Closed { peer, reason: CloseReason::Local }));
        }
    }

    fn on_disconnect(&mut self, peer: PeerKey, reason: DisconnectReason) {
        let addr = match reason {
            // Never again: bad data, ourselves, another torrent, or what a
            // working client never sends (pieces out of range, a bitfield
            // that does not fit, a flood of blocks nobody asked for; what
            // real clients do send is taken).
            DisconnectReason::Banned
            | DisconnectReason::SelfConnection
            | DisconnectReason::WrongInfoHash
            | DisconnectReason::Misbehaved(_) => self.peers.ban(peer),
            // Nothing to trade until one of us loses data: much later.
            DisconnectReason::BothSeeds => self.peers.drop_peer(peer, Closed::Useless),
            // It had been of no use either way: one that dialed us is not
            // dialed back (a flood of idle connections must not make us
            // dial them all).
            DisconnectReason::GaveWay if self.peers.is_incoming(peer) => self.peers.drop_peer(peer, Closed::Useless),
            // Lost for a reason that may pass (silence, a framing error,
            // no room): dialed again after the backoff.
            DisconnectReason::GaveWay
            | DisconnectReason::Protocol(_)
            | DisconnectReason::TooManyPeers
            | DisconnectReason::Idle => self.peers.drop_peer(peer, Closed::Transient),
        };
        if let Some(addr) = addr {
            // Giving way happens once per newcomer under a flood of idle
            // connections: not worth an info line each.
            if reason == DisconnectReason::GaveWay {
                tracing::debug!("peer {addr}: disconnected: {reason:?}");
            } else {
                tracing::info!("peer {addr}: disconnected: {reason:?}");
            }
        }
    }

    /// A connection's handshake came. Two peers that dial each other at
    /// once (both learned of the other from a tracker, the overlay, LSD or
    /// PEX) end up with two connections: one is closed, or both would hold
    /// a slot and requests would go out twice. Both sides keep the same
    /// one without a word: the connection dialed by the lower peer id.
    fn on_peer_ready(&mut self, peer: PeerKey, peer_id: [u8; 20]) {
        if let Some(addr) = self.peers.addr(peer) {
            tracing::debug!("peer {addr}: handshake done");
        }
        self.peers.ready(peer);
        let other = self.by_peer_id.get(&peer_id).copied().filter(|o| *o != peer && self.peers.addr(*o).is_some());
        let Some(other) = other else {
            if self.by_peer_id.len() >= 2 * PEERS_MAX {
                let peers = &self.peers;
                self.by_peer_id.retain(|_, k| peers.addr(*k).is_some());
            }
            self.by_peer_id.insert(peer_id, peer);
            return;
        };
        let (new_in, old_in) = (self.peers.is_incoming(peer), self.peers.is_incoming(other));
        // Same direction (a peer dialing again before we saw its old
        // connection close): the new one stays, the old is likely dead.
        // Otherwise the one dialed by the lower id stays: ours (outgoing
        // here) if ours is lower.
        let keep_incoming = self.peer_id > peer_id;
        let drop = if new_in == old_in || new_in == keep_incoming { other } else { peer };
        if drop == other {
            self.by_peer_id.insert(peer_id, peer);
        }
        if let Some(addr) = self.peers.drop_peer(drop, Closed::Useless) {
            tracing::debug!("peer {addr}: closed: a second connection to the same peer");
        }
        let now = self.clock.now();
        self.torrent.handle(now, Input::Peer(PeerInput::Closed { peer: drop, reason: CloseReason::Local }));
    }

    fn on_torrent_event(&mut self, e: Event) {
        match e {
            Event::PeerReady { peer, peer_id } => self.on_peer_ready(peer, peer_id),
            Event::PieceVerified(_) => {
                self.pieces_verified += 1;
                self.progress.set_position(self.verified());
            }
            Event::Completed => {
                self.complete_flag.store(true, Ordering::Relaxed);
                self.progress.set_position(self.total);
                self.say(format!("{}: complete, every piece verified", self.name));
                finish_files(&self.storage);
                self.progress_to_announcer();
                self.announcer.handle(self.clock.now(), announce::Input::Completed);
                self.pump_announcer();
                if self.exit_when_complete {
                    self.begin_stop();
                }
            }
            Event::HashFailed { piece, blamed } => {
                self.pieces_failed += 1;
                let addrs: Vec<String> =
                    blamed.iter().filter_map(|k| self.peers.addr(*k)).map(|a| a.to_string()).collect();
                tracing::warn!("piece {piece} failed its hash check (sent by {})", addrs.join(", "));
            }
            Event::PeerBanned(peer) => {
                if let Some(addr) = self.peers.ban(peer) {
                    tracing::warn!("peer {addr}: banned for sending bad data");
                }
            }
            Event::PeerListens { peer, port } => self.peers.set_listen_port(peer, port),
            Event::PeerDhtPort { peer, port } => {
                if let (Some(dht), Some(addr)) = (&self.dht, self.peers.addr(peer)) {
                    dht.ping(SocketAddr::new(addr.ip(), port));
                }
            }
            Event::PexPeers { added, .. } => {
                for p in added {
                    self.peers.learn(p.addr, Source::Pex);
                }
            }
            // `get` and `seed` never skip pieces: `Completed` says it all.
            // The node's session takes the next queued torrent at once.
            Event::WantedComplete => self.publish(),
        }
    }

    fn on_event(&mut self, ev: Ev) {
        match ev {
            Ev::Input(i) => {
                if matches!(i, Input::BlockRead { .. }) {
                    self.read_done();
                }
                if let Input::WriteFailed { piece } = i {
                    self.write_failures += 1;
                    if self.write_failures >= WRITE_FAILURES_MAX && self.fatal.is_none() {
                        self.fatal = Some(format!(
                            "giving up: {} block writes failed (last in piece {piece}; is the disk full?)",
                            self.write_failures
                        ));
                        self.begin_stop();
                    }
                }
                self.feed(i);
            }
            Ev::ReadFailed => self.read_done(),
        }
    }

    fn dial_some(&mut self) {
        if self.paused || self.stopping.is_some() {
            return;
        }
        if self.embedded.as_ref().is_some_and(|e| !e.budget.has_room()) {
            return;
        }
        // While downloading, keep half the connections for peers that
        // dial us: at most two more dials at a time past that.
        let limit = if self.peers.outgoing() >= PEERS_MAX / 2 && !self.torrent.is_complete() { 2 } else { usize::MAX };
        self.peers.dial_due(limit);
    }

    fn progress_to_announcer(&mut self) {
        let s = self.torrent.stats();
        self.announcer.handle(
            self.clock.now(),
            announce::Input::Progress { uploaded: s.uploaded, downloaded: s.downloaded, left: s.left },
        );
    }

    fn pump_announcer(&mut self) {
        let (at, found) = self.tracker_io.drain(&mut self.announcer, &self.clock);
        self.announce_deadline = at;
        if !found.is_empty() {
            for p in found {
                self.peers.learn(p, Source::Tracker);
            }
            self.dial_some();
        }
    }

    fn on_tracker(&mut self, t: TrackerEvent) {
        let now = self.clock.now();
        self.tracker_io.on_event(&mut self.announcer, now, t);
        self.pump_announcer();
    }

    fn on_control(&mut self, c: Command) {
        match c {
            Command::Status(reply) => {
                let _ = reply.try_send(self.status());
            }
            Command::Pause => {
                if !self.paused {
                    self.paused = true;
                    self.close_all();
                    self.say(format!("{}: paused", self.name));
                }
            }
            Command::Resume => {
                if self.paused {
                    self.paused = false;
                    self.peers.retry_now();
                    self.dial_some();
                    self.say(format!("{}: resumed", self.name));
                }
            }
            Command::Stop => self.begin_stop(),
            Command::SetPiecePriorities(p) => self.feed(Input::SetPiecePriorities(p)),
        }
        self.publish();
    }

    /// Publishes a snapshot for the node's session (nothing for `get`).
    fn publish(&self) {
        let Some(e) = &self.embedded else { return };
        e.peers_used.store(self.peers.len(), Ordering::Relaxed);
        let infos = self.torrent.peers();
        let peers = infos
            .iter()
            .filter(|p| p.ready)
            .filter_map(|p| {
                Some(PeerView {
                    addr: self.peers.addr(p.peer)?.to_string(),
                    client: String::from_utf8_lossy(&p.peer_id[..8]).chars().filter(|c| !c.is_control()).collect(),
                    download_rate: p.download_rate,
                    upload_rate: p.upload_rate,
                    progress: if p.seed { 1.0 } else { 0.0 },
                })
            })
            .collect();
        let snap = Snapshot {
            status: self.status(),
            have: self.torrent.have().clone(),
            seeds: infos.iter().filter(|p| p.ready && p.seed).count(),
            wanted: (self.torrent.stats().wanted, self.torrent.stats().wanted_done),
            peers,
            trackers: self.tracker_views(),
        };
        *e.snapshot.lock().expect("no panic while held") = Some(snap);
    }

    /// The announcer's view of each tracker, its times on the wall clock.
    fn tracker_views(&self) -> Vec<TrackerView> {
        let (now, wall) = (self.clock.now(), self.clock.wall_ms());
        (self.announcer.status().into_iter())
            .map(|t| TrackerView {
                status: t.state.as_str(),
                last_announce_ms: t
                    .last_announce
                    .map(|at| wall.saturating_sub(now.saturating_duration_since(at).as_millis())),
                url: t.url,
                tier: t.tier,
                peers: t.peers,
                error: t.error,
            })
            .collect()
    }

    fn status(&self) -> Status {
        let done = self.verified();
        let (down, up) = self.progress.rates(done, self.torrent.stats().uploaded);
        let left = self.total - done;
        let state = if self.stopping.is_some() {
            "stopping"
        } else if self.paused {
            "paused"
        } else if self.torrent.wanted_complete() {
            // Every piece, or every piece of the files not skipped.
            "seeding"
        } else {
            "downloading"
        };
        let s = self.torrent.stats();
        Status {
            name: self.name.clone(),
            info_hash: self.info_hash_hex.clone(),
            state,
            progress: done as f64 / self.total.max(1) as f64,
            bytes_done: done,
            bytes_total: self.total,
            download_rate: down,
            upload_rate: up,
            peers_connected: self.peers.book().connected_len(),
            peers_known: self.peers.book().known_len(),
            eta_secs: if left == 0 { Some(0) } else { (down > 0).then(|| left.div_ceil(down)) },
            downloaded: s.downloaded,
            uploaded: s.uploaded,
            wasted: s.wasted,
            pieces_verified: self.pieces_verified,
            pieces_failed: self.pieces_failed,
        }
    }

    fn housekeeping(&mut self) {
        // A room notice lost to a full channel costs at most this long.
        self.submit_reads();
        self.progress.sample(self.verified(), self.torrent.stats().uploaded);
        self.progress_to_announcer();
        if let Some(lsd) = &self.lsd {
            for p in lsd.take_found() {
                self.peers.learn(p, Source::Lsd);
            }
        }
        // The session's wish (paused or queued) wins over a command lost
        // to a full channel.
        if let Some(hold) = self.embedded.as_ref().map(|e| e.paused.load(Ordering::Relaxed)) {
            if hold != self.paused && self.stopping.is_none() {
                self.on_control(if hold { Command::Pause } else { Command::Resume });
            }
        }
        self.dial_some();
        self.send_pex();
        if self.embedded.is_some() {
            // No progress bar in the node: the session shows this.
            return self.publish();
        }
        let st = self.status();
        let eta = st.eta_secs.map_or("?".to_string(), |s| format!("{}m{:02}s", s / 60, s % 60));
        let msg = format!(
            "down {}/s up {}/s peers {} ETA {eta}",
            indicatif::HumanBytes(st.download_rate),
            indicatif::HumanBytes(st.upload_rate),
            st.peers_connected
        );
        self.progress.show(st.state, st.progress, msg);
    }
}

impl Session {
    /// Sends the peer exchange messages that are due (the sender keeps
    /// each connection to one a minute).
    fn send_pex(&mut self) {
        let conns: Vec<PexConn> = (self.torrent.peers().iter())
            .filter(|p| p.ready)
            .filter_map(|p| Some(PexConn::of(p, self.peers.addr(p.peer)?, self.peers.is_incoming(p.peer))))
            .collect();
        for m in self.pex.poll(self.clock.now(), &conns) {
            if let Some(addr) = self.peers.addr(m.peer) {
                let (added, dropped) = (m.message.added.len(), m.message.dropped.len());
                tracing::debug!("peer {addr}: told of {added} peers and {dropped} gone (pex)");
            }
            self.send(m.peer, m.to_wire());
        }
    }
}

fn total_verified(meta: &Metainfo, have: &Bitfield) -> u64 {
    let layout = meta.layout();
    have.iter_ones().map(|p| layout.piece_size(p)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha1::Digest;

    /// The SHA-1 a finished piece's check would compare.
    fn digest(d: Option<PieceDigest>) -> Option<Sha1Hash> {
        match d? {
            PieceDigest::Done(h) => Some(h),
            PieceDigest::Blocks(b) => Some(crate::sha1x16::digest_pieces(&[b.as_slice()])[0]),
        }
    }

    fn blocks(piece: &[u8]) -> Vec<(u32, Bytes)> {
        piece.chunks(16384).enumerate().map(|(i, b)| ((i * 16384) as u32, Bytes::copy_from_slice(b))).collect()
    }

    #[test]
    fn a_piece_whose_blocks_come_out_of_order_is_hashed_without_reading_it_back() {
        let piece: Vec<u8> = (0..5 * 16384 + 100u32).map(|i| (i % 251) as u8).collect();
        let want: Sha1Hash = sha1::Sha1::digest(&piece).into();
        let mut h = PieceHasher::new(false);
        let bs = blocks(&piece);
        for i in [2usize, 4, 0, 5, 3, 1] {
            h.block(7, bs[i].0, &bs[i].1);
        }
        assert_eq!(h.held_bytes, 0, "every held block was hashed once the gap closed");
        assert_eq!(digest(h.finish(7, piece.len() as u64)), Some(want));
    }

    #[test]
    fn kept_blocks_go_to_the_grouped_hash_until_the_limit_then_pieces_hash_as_they_come() {
        let piece: Vec<u8> = (0..4 * 16384u32).map(|i| (i % 253) as u8).collect();
        let want: Sha1Hash = sha1::Sha1::digest(&piece).into();
        let bs = blocks(&piece);
        let mut h = PieceHasher::new(true);
        // Out of order, as before: the held block joins the kept ones.
        for i in [1usize, 0, 2, 3] {
            h.block(3, bs[i].0, &bs[i].1);
        }
        assert_eq!(h.kept_bytes, piece.len());
        let d = h.finish(3, piece.len() as u64);
        assert!(matches!(d, Some(PieceDigest::Blocks(ref b)) if b.len() == 4));
        assert_eq!(digest(d), Some(want));
        assert_eq!((h.kept_bytes, h.held_bytes), (0, 0));

        // Pieces in progress fill the keep: the next piece's first block
        // sends it, and what it had kept, to the running hash.
        let mut p = 100;
        while h.kept_bytes + 16384 <= HASH_KEPT_BYTES_MAX {
            h.block(p, 0, &bs[0].1);
            p += 1;
        }
        let before = h.kept_bytes;
        for (b, d) in &bs {
            h.block(5, *b, d);
        }
        assert_eq!(h.kept_bytes, before, "piece 5 kept nothing past the limit");
        let d = h.finish(5, piece.len() as u64);
        assert!(matches!(d, Some(PieceDigest::Done(_))));
        assert_eq!(digest(d), Some(want));
        // A piece given up on releases what it kept.
        h.block(100, 0, &bs[0].1);
        assert!(h.finish(100, piece.len() as u64).is_none());
        assert_eq!(h.kept_bytes, before - 16384);
    }

    #[test]
    fn the_disk_thread_writes_gathered_runs_across_pieces_and_files_then_hashes_the_group() {
        use rumor_core::bt::bencode::Value;
        // Five pieces of 32 KiB over three files whose ends fall mid-piece.
        let lens = [40_000usize, 50_000, 70_000];
        let total: usize = lens.iter().sum();
        let data: Vec<u8> = (0..total).map(|i| (i * 7 % 251) as u8).collect();
        let plen = 32 * 1024;
        let hashes: Vec<u8> = data.chunks(plen).flat_map(|c| sha1::Sha1::digest(c).to_vec()).collect();
        let pieces = hashes.len() / 20;
        let files: Vec<Value<'static>> = lens
            .iter()
            .enumerate()
            .map(|(i, l)| {
                Value::dict()
                    .insert("length", Value::Int(*l as i64))
                    .insert("path", Value::List(vec![Value::bytes(format!("f{i}").into_bytes())]))
            })
            .collect();
        let info = Value::dict()
            .insert("files", Value::List(files))
            .insert("name", Value::bytes("t"))
            .insert("piece length", Value::Int(plen as i64))
            .insert("pieces", Value::bytes(hashes.clone()));
        let meta = Metainfo::parse(&Value::dict().insert("info", info).to_bytes()).unwrap();
        let dir = std::env::temp_dir().join(format!("rumor-disk-group-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut st = Storage::new(&meta, &dir);
        st.create_all().unwrap();
        let storage = Arc::new(st);
        let (tx, rx) = async_channel::bounded(64);
        let pending = Arc::new(AtomicUsize::new(0));
        let mut disk = TorrentDisk::new(storage.clone(), tx, pending.clone());
        let layout = meta.layout();
        let expected = |p: usize| -> Sha1Hash { hashes[20 * p..20 * p + 20].try_into().unwrap() };
        // Every piece but the last in 16 KiB blocks, in a shuffled order
        // over two batches; the last piece is checked against a wrong hash.
        let mut jobs: Vec<(usize, Vec<DiskJob>)> = Vec::new();
        for p in 0..pieces {
            let start = p * plen;
            let size = layout.piece_size(p as u32) as usize;
            let blocks: Vec<Bytes> = data[start..start + size].chunks(16384).map(Bytes::copy_from_slice).collect();
            let mut js: Vec<DiskJob> = blocks
                .iter()
                .enumerate()
                .rev()
                .map(|(i, b)| DiskJob::Write { piece: p as u32, begin: (i * 16384) as u32, data: b.clone() })
                .collect();
            let want = if p == pieces - 1 { [0xAB; 20] } else { expected(p) };
            js.push(DiskJob::Hash { piece: p as u32, expected: want, digest: Some(PieceDigest::Blocks(blocks)) });
            pending.fetch_add(size, Ordering::Relaxed);
            jobs.push((p, js));
        }
        let (first, second): (Vec<_>, Vec<_>) = jobs.into_iter().partition(|(p, _)| p % 2 == 0);
        for half in [first, second] {
            assert!(disk.batch(half.into_iter().flat_map(|(_, j)| j).collect()));
        }
        // Fewer pieces than a group: they wait, and so do their writes.
        assert!(rx.is_empty(), "no verdict before the group is hashed");
        assert_eq!(disk.group.len(), pieces);
        assert!(disk.hash_group());
        let mut verdicts: Vec<(u32, bool)> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|ev| match ev {
                Ev::Input(Input::PieceChecked { piece, ok }) => (piece, ok),
                _ => panic!("only verdicts expected"),
            })
            .collect();
        verdicts.sort();
        let want: Vec<(u32, bool)> = (0..pieces as u32).map(|p| (p, p as usize != pieces - 1)).collect();
        assert_eq!(verdicts, want);
        assert_eq!(pending.load(Ordering::Relaxed), 0, "every block written and released");
        let mut on_disk = Vec::new();
        for i in 0..lens.len() {
            on_disk.extend(std::fs::read(dir.join(format!("t/f{i}"))).unwrap());
        }
        assert!(on_disk == data, "the files hold the content");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_block_that_comes_twice_or_would_overfill_the_hold_sends_the_piece_to_the_disk_check() {
        let piece = vec![9u8; 4 * 16384];
        let bs = blocks(&piece);
        let mut h = PieceHasher::new(false);
        h.block(1, bs[0].0, &bs[0].1);
        h.block(1, bs[0].0, &bs[0].1);
        for (b, d) in &bs[1..] {
            h.block(1, *b, d);
        }
        assert!(h.finish(1, piece.len() as u64).is_none());

        // Blocks held for other pieces fill the hold: the next gap gives up.
        let mut h = PieceHasher::new(false);
        let ahead = Bytes::from(vec![1u8; 16384]);
        let mut p = 100;
        while h.held_bytes + ahead.len() <= HASH_HELD_BYTES_MAX {
            h.block(p, 16384, &ahead);
            p += 1;
        }
        h.block(1, bs[1].0, &bs[1].1);
        for (b, d) in &bs {
            h.block(1, *b, d);
        }
        assert!(h.finish(1, piece.len() as u64).is_none());
        assert!(h.finish(100, 32768).is_none(), "piece 100 never got its first block");
        assert_eq!(h.held_bytes, HASH_HELD_BYTES_MAX - 16384, "its hold was released");
    }
}
