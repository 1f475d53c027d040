//! One torrent session, on whatever runtime the adapter installed.
//!
//! One task (the loop in [`Session::run`]) owns the core [`Torrent`] and
//! [`Announcer`]; nothing else touches them. Around it:
//!
//! * a listener task and dial tasks hand it TCP streams;
//! * each peer connection is a task that reads into a bounded channel
//!   (backpressure: at most [`PEER_EVENTS_MAX`] reads of
//!   [`READ_CHUNK_BYTES`] wait) and writes what the loop queues for it
//!   (at most [`PEER_SEND_BYTES_MAX`] queued, or the peer is dropped);
//! * a disk thread does positional reads and writes in order, and hands
//!   each piece to hash to a hashing thread once its blocks are written;
//! * tracker requests run on the blocking pool (HTTP) or one UDP socket.
//!
//! Results come back to the loop as machine inputs.

use super::control::{self, Command, Status};
use super::storage::Storage;
use super::trackers::{self, TrackerEvent};
use super::PeerArgs;
use crate::clock::Clock;
use crate::rt::{self, TcpListener, TcpStream};
use async_channel::{Receiver, Sender};
use bytes::Bytes;
use futures::{AsyncReadExt, AsyncWriteExt, FutureExt};
use rumor_core::bt::announce::{self, AnnounceConfig, Announcer};
use rumor_core::bt::bitfield::Bitfield;
use rumor_core::bt::conn::{CloseReason, PeerInput};
use rumor_core::bt::metainfo::{Limits, Metainfo, Sha1Hash};
use rumor_core::bt::picker::PeerKey;
use rumor_core::bt::torrent::{DisconnectReason, Event, Input, Output, Torrent, TorrentConfig};
use rumor_core::bt::wire::{BlockRef, PeerId};
use rumor_core::time::Instant;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Bytes read from a socket at once.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Reads from all peers waiting for the loop (the backpressure bound).
const PEER_EVENTS_MAX: usize = 64;
/// Bytes queued to one peer before it is dropped as too slow.
const PEER_SEND_BYTES_MAX: usize = 16 << 20;
/// Peer addresses remembered (from trackers, PEX, --peer).
const KNOWN_PEERS_MAX: usize = 2000;
/// Dials in progress at once.
const DIALS_MAX: usize = 16;
/// Connections (the machine's own limit is the same).
const PEERS_MAX: usize = 50;
/// How long a dial may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the `stopped` announce may take on exit.
const STOP_GRACE: Duration = Duration::from_secs(4);
/// Housekeeping (dials, rates, progress) runs this often.
const HOUSEKEEPING: Duration = Duration::from_millis(500);
/// Block bytes handed to the disk thread and not yet written: above this
/// the loop stops reading from peers until the disk catches up (the socket
/// buffers then push back on the senders).
const DISK_PENDING_BYTES_MAX: usize = 16 << 20;
/// Block reads (for uploads) at the disk thread or waiting for the loop at
/// once; more wait as (peer, block) pairs, themselves bounded by the
/// machine's `peer_requests_max` per peer.
const READS_IN_FLIGHT_MAX: usize = 256;
/// How often a loop held back by the disk looks again.
const DISK_POLL: Duration = Duration::from_millis(2);
/// Failed block writes (disk full, permissions...) before the session gives up.
const WRITE_FAILURES_MAX: u32 = 64;
/// Rates are measured over this many housekeeping samples.
const RATE_SAMPLES: usize = 10;

/// What `get` or `seed` asked for.
pub struct Options {
    /// The .torrent file.
    pub torrent: PathBuf,
    /// The directory the torrent's name lives in.
    pub dir: PathBuf,
    /// Network options.
    pub net: PeerArgs,
    /// Exit 0 once every piece is verified.
    pub exit_when_complete: bool,
    /// Started by `rumor seed`: the data should already be there.
    pub seed_command: bool,
    /// `rumor get` of a magnet link or infohash: fetch the metadata from
    /// peers first (`torrent` is then unused).
    pub magnet: Option<super::magnet::MagnetSource>,
}

/// Runs a session to the end; the process's exit code.
pub fn run(opts: Options) -> ExitCode {
    match rt::block_on(start(opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rumor: {e}");
            ExitCode::FAILURE
        }
    }
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

/// A fresh peer id: our client prefix and random characters.
pub(super) fn random_peer_id() -> PeerId {
    let mut id = *b"-RM0001-000000000000";
    let mut r = [0u8; 12];
    let _ = getrandom::fill(&mut r);
    for (d, b) in id[8..].iter_mut().zip(r) {
        *d = b"0123456789abcdefghijklmnopqrstuvwxyz"[b as usize % 36];
    }
    id
}

async fn start(mut opts: Options) -> Result<(), String> {
    if let Some(c) = opts.net.control {
        if !c.ip().is_loopback() && !opts.net.control_public {
            return Err(format!("--control {c}: not a loopback address; add --control-public to allow it"));
        }
    }
    // The listener first: a metadata fetch announces its port to trackers
    // and the overlay, and takes connections on it, before the download.
    let listener = rt::bind_tcp(SocketAddr::new(opts.net.bind, opts.net.port))
        .map_err(|e| format!("cannot listen on port {}: {e}", opts.net.port))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let meta = match opts.magnet.take() {
        None => load_torrent(&opts.torrent)?,
        Some(m) => super::magnet::fetch(m, &mut opts.net, &listener).await?,
    };
    let mut storage = Storage::new(&meta, &opts.dir);
    storage.open_existing();
    let storage = Arc::new(storage);
    // Check what is already there, off the event loop.
    let expected = meta.pieces.clone();
    let checker = storage.clone();
    let n = meta.piece_count();
    let have = rt::spawn_blocking(move || checker.check(&expected, 2, &|_| {}))
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
        storage
    } else {
        let mut s = Arc::try_unwrap(storage).map_err(|_| "storage still shared".to_string())?;
        s.create_all().map_err(|e| format!("cannot create the files: {e}"))?;
        Arc::new(s)
    };
    if let Some(name) = opts.net.register.clone() {
        register_and_refresh(name, opts.net.api.clone(), opts.net.api_token.clone()).await?;
    }
    let overlay = if opts.net.overlay.is_empty() {
        None
    } else {
        let keys = crate::keyring(&opts.net.cluster_key, None)?;
        Some((
            super::overlay_member::MemberArgs { join: opts.net.overlay.clone(), keys, listen: opts.net.overlay_listen },
            meta.info_hash,
        ))
    };
    let session = Session::new(opts, meta, have, storage, port).await?;
    if let Some((args, ih)) = overlay {
        let (found_tx, found_rx) = async_channel::unbounded();
        let complete = session.complete_flag.clone();
        rt::spawn(async move {
            if let Err(e) = super::overlay_member::run(args, ih, port, complete, found_tx).await {
                tracing::error!("overlay: {e}");
            }
        });
        let events = session.events_tx.clone();
        rt::spawn(async move {
            while let Ok(peers) = found_rx.recv().await {
                if events.try_send(Ev::Learned(peers)).is_err() {
                    return;
                }
            }
        });
    }
    session.run(listener).await
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
    Write { piece: u32, begin: u32, data: Bytes },
    Read { peer: PeerKey, block: BlockRef },
    Hash { piece: u32, expected: Sha1Hash },
}

/// What comes back to the loop.
enum Ev {
    Accepted(TcpStream, SocketAddr),
    Dialed(SocketAddr, std::io::Result<TcpStream>),
    PeerClosed(PeerKey),
    Input(Input),
    /// A block read failed (it is not answered).
    ReadFailed,
    /// Providers found in the overlay.
    Learned(Vec<SocketAddr>),
}

struct Conn {
    addr: SocketAddr,
    tx: Sender<Vec<u8>>,
    queued: Arc<AtomicUsize>,
    task: rt::AbortHandle,
    outgoing: bool,
}

#[derive(Default)]
struct Known {
    connected: bool,
    dialing: bool,
    failures: u32,
    retry_at: Option<std::time::Instant>,
    /// Given with --peer: retried forever.
    manual: bool,
}

/// Pieces hashed incrementally at once (in-order blocks of pieces in
/// progress); beyond this the oldest is dropped and read back from disk.
const HASH_STATES_MAX: usize = 1024;

/// Work for the hashing thread, in the order the disk thread did it.
enum HashJob {
    /// A block that is now on disk: hash it if it continues its piece.
    Block { piece: u32, begin: u32, data: Bytes },
    /// A block that failed to write: forget the piece's running hash.
    Forget(u32),
    /// All of the piece's blocks are on disk: check it.
    Check { piece: u32, expected: Sha1Hash },
}

/// The hashing thread: SHA-1 of each piece from its blocks as they are
/// written, when they come in order (the usual case), else by reading the
/// piece back. Releases the blocks' bytes from the `pending` count.
fn hash_thread(
    storage: Arc<Storage>,
    jobs: std::sync::mpsc::Receiver<HashJob>,
    results: Sender<Ev>,
    pending: Arc<AtomicUsize>,
) {
    use sha1::{Digest, Sha1};
    // piece -> (running hash, next offset expected); None: out of order.
    let mut states: BTreeMap<u32, Option<(Sha1, u32)>> = BTreeMap::new();
    let mut order: VecDeque<u32> = VecDeque::new();
    let mut buf = Vec::new();
    while let Ok(job) = jobs.recv() {
        match job {
            HashJob::Block { piece, begin, data } => {
                if !states.contains_key(&piece) {
                    if states.len() >= HASH_STATES_MAX {
                        while let Some(old) = order.pop_front() {
                            if states.remove(&old).is_some() {
                                break;
                            }
                        }
                    }
                    order.push_back(piece);
                    states.insert(piece, (begin == 0).then(|| (Sha1::new(), 0)));
                }
                let st = states.get_mut(&piece).expect("inserted above");
                match st {
                    Some((h, next)) if *next == begin => {
                        h.update(&data);
                        *next += data.len() as u32;
                    }
                    _ => *st = None,
                }
                pending.fetch_sub(data.len(), Ordering::Relaxed);
            }
            HashJob::Forget(piece) => {
                states.remove(&piece);
            }
            HashJob::Check { piece, expected } => {
                let size = storage.piece_size(piece);
                let ok = match states.remove(&piece) {
                    Some(Some((h, next))) if next as u64 == size => <[u8; 20]>::from(h.finalize()) == expected,
                    _ => {
                        tracing::debug!("piece {piece}: blocks came out of order, hashing it from disk");
                        storage.hash_piece(piece, &mut buf).is_ok_and(|h| h == expected)
                    }
                };
                if results.try_send(Ev::Input(Input::PieceChecked { piece, ok })).is_err() {
                    break;
                }
            }
        }
    }
}

fn spawn_disk_threads(storage: Arc<Storage>, jobs: Receiver<DiskJob>, results: Sender<Ev>, pending: Arc<AtomicUsize>) {
    let (hash_tx, hash_rx) = std::sync::mpsc::channel::<HashJob>();
    let (hs, hres, hpending) = (storage.clone(), results.clone(), pending.clone());
    std::thread::Builder::new()
        .name("bt-hash".into())
        .spawn(move || hash_thread(hs, hash_rx, hres, hpending))
        .expect("spawn the hashing thread");
    std::thread::Builder::new()
        .name("bt-disk".into())
        .spawn(move || {
            while let Ok(job) = jobs.recv_blocking() {
                let ev = match job {
                    DiskJob::Write { piece, begin, data } => match storage.write(piece, begin, &data) {
                        Ok(()) => {
                            // The hashing thread releases the bytes.
                            let _ = hash_tx.send(HashJob::Block { piece, begin, data });
                            continue;
                        }
                        Err(e) => {
                            pending.fetch_sub(data.len(), Ordering::Relaxed);
                            let _ = hash_tx.send(HashJob::Forget(piece));
                            tracing::warn!("write of piece {piece} failed: {e}");
                            Input::WriteFailed { piece }
                        }
                    },
                    DiskJob::Read { peer, block } => match storage.read(block.index, block.begin, block.length) {
                        Ok(data) => Input::BlockRead { peer, block, data: Bytes::from(data) },
                        Err(e) => {
                            tracing::warn!("read of piece {} failed: {e}", block.index);
                            if results.try_send(Ev::ReadFailed).is_err() {
                                break;
                            }
                            continue;
                        }
                    },
                    DiskJob::Hash { piece, expected } => {
                        // Every earlier write is done: check on the other thread.
                        let _ = hash_tx.send(HashJob::Check { piece, expected });
                        continue;
                    }
                };
                if results.try_send(Ev::Input(ev)).is_err() {
                    break;
                }
            }
        })
        .expect("spawn the disk thread");
}

/// What woke the session's loop.
enum Wake {
    Signal(&'static str),
    Event(Option<Ev>),
    Tracker(Option<TrackerEvent>),
    Control(Option<Command>),
    Peer(Option<(PeerKey, Bytes)>),
    Timer,
}

/// `fut` when `cond` holds; otherwise a future that never completes (a
/// select branch switched off).
async fn when<T>(cond: bool, fut: impl std::future::Future<Output = T>) -> T {
    if cond {
        fut.await
    } else {
        futures::future::pending().await
    }
}

/// Reads a peer into `events`, writes what `rx` brings.
async fn run_peer(
    peer: PeerKey,
    stream: TcpStream,
    peer_events: Sender<(PeerKey, Bytes)>,
    rx: Receiver<Vec<u8>>,
    queued: Arc<AtomicUsize>,
    done: Sender<Ev>,
) {
    let (mut r, mut w) = stream.into_split();
    let writer = async move {
        while let Ok(buf) = rx.recv().await {
            queued.fetch_sub(buf.len(), Ordering::Relaxed);
            if w.write_all(&buf).await.is_err() {
                break;
            }
        }
        let _ = w.close().await;
    };
    let reader = async move {
        // One buffer reused for every read; each read's bytes are copied
        // out (only the bytes read, not the whole chunk).
        let mut buf = vec![0u8; READ_CHUNK_BYTES];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if peer_events.send((peer, Bytes::copy_from_slice(&buf[..n]))).await.is_err() {
                        break;
                    }
                }
            }
        }
    };
    futures::select! {
        _ = writer.fuse() => {}
        _ = reader.fuse() => {}
    }
    let _ = done.try_send(Ev::PeerClosed(peer));
}

struct Session {
    clock: Clock,
    /// Set once every piece is verified (read by the overlay member).
    complete_flag: Arc<std::sync::atomic::AtomicBool>,
    /// Pieces that passed / failed their hash check since start.
    pieces_verified: u64,
    pieces_failed: u64,
    name: String,
    info_hash_hex: String,
    total: u64,
    torrent: Torrent,
    announcer: Announcer,
    conns: HashMap<PeerKey, Conn>,
    known: BTreeMap<SocketAddr, Known>,
    banned: HashSet<SocketAddr>,
    next_key: PeerKey,
    disk: Sender<DiskJob>,
    disk_pending: Arc<AtomicUsize>,
    reads_in_flight: usize,
    reads_waiting: VecDeque<(PeerKey, BlockRef)>,
    events_tx: Sender<Ev>,
    events_rx: Receiver<Ev>,
    peer_tx: Sender<(PeerKey, Bytes)>,
    peer_rx: Receiver<(PeerKey, Bytes)>,
    tracker_io: trackers::TrackerIo,
    tracker_rx: Receiver<TrackerEvent>,
    control_rx: Receiver<Command>,
    torrent_deadline: Instant,
    announce_deadline: Instant,
    exit_when_complete: bool,
    completed_now: bool,
    paused: bool,
    stopping: Option<std::time::Instant>,
    write_failures: u32,
    /// Why the session gave up, if it did (the exit is then non-zero).
    fatal: Option<String>,
    dials: usize,
    /// (when, verified bytes, uploaded bytes), newest last.
    samples: VecDeque<(std::time::Instant, u64, u64)>,
    started: std::time::Instant,
    start_verified: u64,
    bar: indicatif::ProgressBar,
    quiet: bool,
    last_line: std::time::Instant,
}

impl Session {
    async fn new(
        opts: Options,
        meta: Metainfo,
        have: Bitfield,
        storage: Arc<Storage>,
        port: u16,
    ) -> Result<Session, String> {
        let have_full = have.is_full();
        let clock = Clock::new();
        let now = clock.now();
        let peer_id = random_peer_id();
        let mut seed = [0u8; 8];
        let _ = getrandom::fill(&mut seed);
        let seed = u64::from_le_bytes(seed);
        let mut config = TorrentConfig::new(peer_id);
        config.peers_max = PEERS_MAX;
        config.choke_interval = rumor_core::time::Duration::from_secs(5);
        config.request_timeout = rumor_core::time::Duration::from_secs(20);
        let torrent = Torrent::new(config, &meta, &have, now, seed);
        let left = torrent.stats().left;
        let announcer =
            Announcer::new(AnnounceConfig::new(peer_id, port), meta.info_hash, &meta.announce_tiers, left, now, seed);
        let (disk, disk_rx) = async_channel::unbounded();
        let (events_tx, events_rx) = async_channel::unbounded();
        let disk_pending = Arc::new(AtomicUsize::new(0));
        spawn_disk_threads(storage, disk_rx, events_tx.clone(), disk_pending.clone());
        let (peer_tx, peer_rx) = async_channel::bounded(PEER_EVENTS_MAX);
        let (tracker_tx, tracker_rx) = async_channel::unbounded();
        let (control_tx, control_rx) = async_channel::bounded(16);
        if let Some(addr) = opts.net.control {
            control::serve(addr, control_tx).map_err(|e| format!("cannot serve the control API on {addr}: {e}"))?;
        }
        let tracker_io = trackers::TrackerIo::new(tracker_tx, &meta.announce_tiers, opts.net.dns);
        let mut known = BTreeMap::new();
        for p in &opts.net.peers {
            let (dns, netloc) = (opts.net.dns, p.clone());
            let found = rt::spawn_blocking(move || super::cluster_dns::resolve_netloc(dns, &netloc))
                .await
                .map_err(|e| e.to_string())?;
            match found {
                Ok(addrs) => {
                    for a in addrs {
                        known.insert(a, Known { manual: true, ..Known::default() });
                    }
                }
                Err(e) => eprintln!("rumor: --peer {p}: {e}"),
            }
        }
        let verified = total_verified(&meta, &have);
        let bar = if opts.net.quiet {
            indicatif::ProgressBar::hidden()
        } else {
            let b = indicatif::ProgressBar::new(meta.total_length);
            b.set_style(
                indicatif::ProgressStyle::with_template("{prefix} {bar:30} {percent:>3}% {bytes}/{total_bytes} {msg}")
                    .expect("a valid template"),
            );
            b.set_prefix(meta.name.clone());
            b.set_position(verified);
            b
        };
        eprintln!("{}: infohash {}, listening on port {port}", meta.name, meta.info_hash);
        Ok(Session {
            clock,
            name: meta.name.clone(),
            info_hash_hex: meta.info_hash.to_hex(),
            total: meta.total_length,
            torrent,
            announcer,
            conns: HashMap::new(),
            known,
            banned: HashSet::new(),
            next_key: 1,
            disk,
            disk_pending,
            reads_in_flight: 0,
            reads_waiting: VecDeque::new(),
            events_tx,
            events_rx,
            peer_tx,
            peer_rx,
            tracker_io,
            tracker_rx,
            control_rx,
            torrent_deadline: now,
            announce_deadline: now,
            exit_when_complete: opts.exit_when_complete,
            completed_now: false,
            paused: false,
            pieces_verified: 0,
            pieces_failed: 0,
            stopping: None,
            write_failures: 0,
            fatal: None,
            dials: 0,
            samples: VecDeque::new(),
            started: std::time::Instant::now(),
            start_verified: verified,
            bar,
            quiet: opts.net.quiet,
            complete_flag: Arc::new(std::sync::atomic::AtomicBool::new(have_full)),
            last_line: std::time::Instant::now(),
        })
    }

    /// Prints a line without tearing the progress bar.
    fn say(&self, line: String) {
        self.bar.suspend(|| eprintln!("{line}"));
    }

    fn verified(&self) -> u64 {
        self.total - self.torrent.stats().left
    }

    async fn run(mut self, listener: Box<dyn TcpListener>) -> Result<(), String> {
        let accept_tx = self.events_tx.clone();
        let accept = rt::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((s, a)) => {
                        if accept_tx.try_send(Ev::Accepted(s, a)).is_err() {
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
        let mut next_housekeeping = std::time::Instant::now() + HOUSEKEEPING;
        let signals = rt::termination_signals();
        let mut control_open = true;
        loop {
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
            // Which source woke the loop; handled below, once the futures
            // (which borrow the channels) are gone.
            let woke = futures::select_biased! {
                sig = when(!stopping, signals.recv()).fuse() => Wake::Signal(sig.unwrap_or("signal")),
                ev = self.events_rx.recv().fuse() => Wake::Event(ev.ok()),
                t = self.tracker_rx.recv().fuse() => Wake::Tracker(t.ok()),
                c = when(control_open, self.control_rx.recv()).fuse() => Wake::Control(c.ok()),
                p = when(disk_ok, self.peer_rx.recv()).fuse() => Wake::Peer(p.ok()),
                _ = rt::sleep_until(wake).fuse() => Wake::Timer,
            };
            match woke {
                Wake::Signal(sig) => {
                    self.say(format!("\n{}: stopping ({sig})", self.name));
                    self.begin_stop();
                }
                Wake::Event(Some(ev)) => self.on_event(ev),
                Wake::Tracker(Some(t)) => self.on_tracker(t),
                Wake::Control(Some(c)) => self.on_control(c),
                Wake::Peer(Some((peer, bytes))) => {
                    self.feed(Input::Peer(PeerInput::Bytes { peer, bytes }));
                    // Take what else is already there before draining timers.
                    for _ in 0..PEER_EVENTS_MAX {
                        if self.disk_pending.load(Ordering::Relaxed) >= DISK_PENDING_BYTES_MAX {
                            break;
                        }
                        match self.peer_rx.try_recv() {
                            Ok((peer, bytes)) => self.feed(Input::Peer(PeerInput::Bytes { peer, bytes })),
                            Err(_) => break,
                        }
                    }
                }
                // Without --control nobody holds the control sender: that
                // branch is switched off. The session holds a sender of each
                // other channel, so they never close while the loop runs.
                Wake::Control(None) => control_open = false,
                Wake::Event(None) | Wake::Tracker(None) | Wake::Peer(None) => {}
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
        }
        accept.abort();
        self.bar.finish_and_clear();
        self.print_summary();
        match self.fatal {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn announcer_idle(&mut self) -> bool {
        self.announce_deadline == Instant::NEVER
    }

    fn begin_stop(&mut self) {
        if self.stopping.is_some() {
            return;
        }
        self.stopping = Some(std::time::Instant::now() + STOP_GRACE);
        let keys: Vec<PeerKey> = self.conns.keys().copied().collect();
        for k in keys {
            self.drop_conn(k);
            self.feed(Input::Peer(PeerInput::Closed { peer: k, reason: CloseReason::Local }));
        }
        self.progress_to_announcer();
        self.announcer.handle(self.clock.now(), announce::Input::Stop);
        self.pump_announcer();
    }

    fn print_summary(&self) {
        let secs = self.started.elapsed().as_secs_f64();
        let got = self.verified().saturating_sub(self.start_verified);
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
                    let _ = self.disk.try_send(DiskJob::Write { piece, begin, data });
                }
                Output::ReadBlock { peer, block } => {
                    self.reads_waiting.push_back((peer, block));
                    self.submit_reads();
                }
                Output::HashPiece { piece, expected } => {
                    let _ = self.disk.try_send(DiskJob::Hash { piece, expected });
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

    /// Hands waiting block reads to the disk thread, up to the cap; reads
    /// for peers gone since are dropped.
    fn submit_reads(&mut self) {
        while self.reads_in_flight < READS_IN_FLIGHT_MAX {
            let Some((peer, block)) = self.reads_waiting.pop_front() else {
                break;
            };
            if self.conns.contains_key(&peer) {
                self.reads_in_flight += 1;
                let _ = self.disk.try_send(DiskJob::Read { peer, block });
            }
        }
    }

    fn send(&mut self, peer: PeerKey, payload: Vec<u8>) {
        let Some(c) = self.conns.get(&peer) else {
            return;
        };
        let len = payload.len();
        let queued = c.queued.fetch_add(len, Ordering::Relaxed) + len;
        if queued > PEER_SEND_BYTES_MAX || c.tx.try_send(payload).is_err() {
            tracing::info!("peer {}: dropped (send queue over {} bytes)", c.addr, PEER_SEND_BYTES_MAX);
            self.drop_conn(peer);
            self.torrent.handle(self.clock.now(), Input::Peer(PeerInput::Closed { peer, reason: CloseReason::Local }));
        }
    }

    /// Closes a connection on our side (the machine is told by the caller).
    fn drop_conn(&mut self, peer: PeerKey) -> Option<Conn> {
        let c = self.conns.remove(&peer)?;
        c.task.abort();
        if let Some(k) = self.known.get_mut(&c.addr) {
            k.connected = false;
        }
        Some(c)
    }

    fn on_disconnect(&mut self, peer: PeerKey, reason: DisconnectReason) {
        let Some(c) = self.drop_conn(peer) else {
            return;
        };
        tracing::info!("peer {}: disconnected: {reason:?}", c.addr);
        let never = matches!(
            reason,
            DisconnectReason::Banned | DisconnectReason::SelfConnection | DisconnectReason::WrongInfoHash
        );
        if never {
            self.banned.insert(c.addr);
            self.known.remove(&c.addr);
        } else if let Some(k) = self.known.get_mut(&c.addr) {
            k.failures += 1;
            let wait = if reason == DisconnectReason::BothSeeds { 3600 } else { 1u64 << k.failures.min(8) };
            k.retry_at = Some(std::time::Instant::now() + Duration::from_secs(wait));
        }
    }

    fn on_torrent_event(&mut self, e: Event) {
        match e {
            Event::PeerReady { peer, .. } => {
                if let Some(c) = self.conns.get(&peer) {
                    tracing::debug!("peer {}: handshake done", c.addr);
                    if let Some(k) = self.known.get_mut(&c.addr) {
                        k.failures = 0;
                    }
                }
            }
            Event::PieceVerified(_) => {
                self.pieces_verified += 1;
                self.bar.set_position(self.verified());
            }
            Event::Completed => {
                self.completed_now = true;
                self.complete_flag.store(true, Ordering::Relaxed);
                self.bar.set_position(self.total);
                self.say(format!("{}: complete, every piece verified", self.name));
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
                    blamed.iter().filter_map(|k| self.conns.get(k)).map(|c| c.addr.to_string()).collect();
                tracing::warn!("piece {piece} failed its hash check (sent by {})", addrs.join(", "));
            }
            Event::PeerBanned(peer) => {
                if let Some(c) = self.conns.get(&peer) {
                    tracing::warn!("peer {}: banned for sending bad data", c.addr);
                    self.banned.insert(c.addr);
                }
            }
            Event::PexPeers { added, .. } => {
                for p in added {
                    self.learn(p.addr);
                }
            }
        }
    }

    fn learn(&mut self, addr: SocketAddr) {
        if self.known.len() < KNOWN_PEERS_MAX && !self.banned.contains(&addr) && !addr.ip().is_unspecified() {
            self.known.entry(addr).or_default();
        }
    }

    fn on_event(&mut self, ev: Ev) {
        match ev {
            Ev::Learned(peers) => {
                for p in peers {
                    self.learn(p);
                }
            }
            Ev::Accepted(stream, addr) => {
                if self.paused || self.stopping.is_some() || self.banned.contains(&addr) {
                    return;
                }
                self.connected(stream, addr, false);
            }
            Ev::Dialed(addr, res) => {
                self.dials -= 1;
                let k = self.known.entry(addr).or_default();
                k.dialing = false;
                match res {
                    Ok(stream) if !self.paused && self.stopping.is_none() => {
                        k.connected = true;
                        self.connected(stream, addr, true);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!("dial {addr}: {e}");
                        k.failures += 1;
                        let wait = if k.manual { 2 } else { 5u64 << k.failures.min(6) };
                        k.retry_at = Some(std::time::Instant::now() + Duration::from_secs(wait));
                        if !k.manual && k.failures > 8 {
                            self.known.remove(&addr);
                        }
                    }
                }
            }
            Ev::PeerClosed(peer) => {
                if let Some(c) = self.drop_conn(peer) {
                    tracing::debug!("peer {}: connection closed", c.addr);
                    if let Some(k) = self.known.get_mut(&c.addr) {
                        k.failures += 1;
                        let cap = if k.manual { 3 } else { 8 };
                        k.retry_at = Some(std::time::Instant::now() + Duration::from_secs(1u64 << k.failures.min(cap)));
                    }
                    self.feed(Input::Peer(PeerInput::Closed { peer, reason: CloseReason::Local }));
                }
            }
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

    fn connected(&mut self, stream: TcpStream, addr: SocketAddr, outgoing: bool) {
        if self.conns.len() >= PEERS_MAX {
            return;
        }
        let peer = self.next_key;
        self.next_key += 1;
        let (tx, rx) = async_channel::unbounded();
        let queued = Arc::new(AtomicUsize::new(0));
        let task = rt::spawn(run_peer(peer, stream, self.peer_tx.clone(), rx, queued.clone(), self.events_tx.clone()));
        tracing::debug!("peer {addr}: connected ({})", if outgoing { "out" } else { "in" });
        self.conns.insert(peer, Conn { addr, tx, queued, task: task.abort_handle(), outgoing });
        self.feed(Input::Peer(PeerInput::Connected { peer }));
    }

    fn dial_some(&mut self) {
        if self.paused || self.stopping.is_some() {
            return;
        }
        let now = std::time::Instant::now();
        let complete = self.torrent.is_complete();
        let outgoing = self.conns.values().filter(|c| c.outgoing).count();
        let mut budget = PEERS_MAX.saturating_sub(self.conns.len()).min(DIALS_MAX.saturating_sub(self.dials));
        if outgoing >= PEERS_MAX / 2 && !complete {
            budget = budget.min(2);
        }
        let connected_addrs: HashSet<SocketAddr> = self.conns.values().map(|c| c.addr).collect();
        let candidates: Vec<SocketAddr> = self
            .known
            .iter()
            .filter(|(a, k)| {
                !k.connected && !k.dialing && k.retry_at.is_none_or(|t| now >= t) && !connected_addrs.contains(a)
            })
            .map(|(a, _)| *a)
            .take(budget)
            .collect();
        for addr in candidates {
            let k = self.known.get_mut(&addr).expect("listed above");
            k.dialing = true;
            self.dials += 1;
            let tx = self.events_tx.clone();
            rt::spawn(async move {
                let res = match rt::timeout(DIAL_TIMEOUT, rt::connect(addr)).await {
                    Ok(r) => r,
                    Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "dial timed out")),
                };
                let _ = tx.try_send(Ev::Dialed(addr, res));
            });
        }
    }

    fn progress_to_announcer(&mut self) {
        let s = self.torrent.stats();
        self.announcer.handle(
            self.clock.now(),
            announce::Input::Progress { uploaded: s.uploaded, downloaded: s.downloaded, left: s.left },
        );
    }

    fn pump_announcer(&mut self) {
        loop {
            let now = self.clock.now();
            let out = self.announcer.poll_output();
            match self.tracker_io.carry(&mut self.announcer, now, out) {
                Some(announce::Output::Timeout(at)) => {
                    self.announce_deadline = at;
                    break;
                }
                Some(announce::Output::Event(announce::Event::Peers(peers))) => {
                    tracing::info!("tracker gave {} peers", peers.len());
                    for p in peers {
                        self.learn(p);
                    }
                    self.dial_some();
                }
                _ => {}
            }
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
                let _ = reply.send(self.status());
            }
            Command::Pause => {
                if !self.paused {
                    self.paused = true;
                    let keys: Vec<PeerKey> = self.conns.keys().copied().collect();
                    for k in keys {
                        self.drop_conn(k);
                        self.feed(Input::Peer(PeerInput::Closed { peer: k, reason: CloseReason::Local }));
                    }
                    self.say(format!("{}: paused", self.name));
                }
            }
            Command::Resume => {
                if self.paused {
                    self.paused = false;
                    for k in self.known.values_mut() {
                        k.retry_at = None;
                    }
                    self.dial_some();
                    self.say(format!("{}: resumed", self.name));
                }
            }
        }
    }

    /// (verified bytes/s, uploaded bytes/s) over the recent samples.
    fn rates(&self) -> (u64, u64) {
        match (self.samples.front(), self.samples.back()) {
            (Some(a), Some(b)) if b.0 > a.0 => {
                let dt = (b.0 - a.0).as_secs_f64();
                (((b.1 - a.1) as f64 / dt) as u64, ((b.2 - a.2) as f64 / dt) as u64)
            }
            _ => (0, 0),
        }
    }

    fn status(&self) -> Status {
        let done = self.verified();
        let (down, up) = self.rates();
        let left = self.total - done;
        let state = if self.stopping.is_some() {
            "stopping"
        } else if self.paused {
            "paused"
        } else if self.torrent.is_complete() {
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
            peers_connected: self.conns.len(),
            peers_known: self.known.len(),
            eta_secs: if left == 0 { Some(0) } else { (down > 0).then(|| left.div_ceil(down)) },
            downloaded: s.downloaded,
            uploaded: s.uploaded,
            wasted: s.wasted,
            pieces_verified: self.pieces_verified,
            pieces_failed: self.pieces_failed,
        }
    }

    fn housekeeping(&mut self) {
        let now = std::time::Instant::now();
        self.samples.push_back((now, self.verified(), self.torrent.stats().uploaded));
        while self.samples.len() > RATE_SAMPLES {
            self.samples.pop_front();
        }
        self.progress_to_announcer();
        self.dial_some();
        let st = self.status();
        let eta = st.eta_secs.map_or("?".to_string(), |s| format!("{}m{:02}s", s / 60, s % 60));
        let msg = format!(
            "down {}/s up {}/s peers {} ETA {eta}",
            indicatif::HumanBytes(st.download_rate),
            indicatif::HumanBytes(st.upload_rate),
            st.peers_connected
        );
        if self.quiet || self.bar.is_hidden() {
            if now.duration_since(self.last_line) >= Duration::from_secs(5) {
                self.last_line = now;
                eprintln!("{}: {} {:.1}% {msg}", self.name, st.state, st.progress * 100.0);
            }
        } else {
            self.bar.set_message(msg);
        }
    }
}

fn total_verified(meta: &Metainfo, have: &Bitfield) -> u64 {
    let layout = meta.layout();
    have.iter_ones().map(|p| layout.piece_size(p)).sum()
}
