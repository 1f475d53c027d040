//! `rumor get MAGNET` and `rumor get INFOHASH`: the torrent's metadata
//! first, by BEP 9 (`ut_metadata`) from peers, then the usual download.
//!
//! The core [`MetadataFetch`] machine speaks the protocol and checks the
//! result against the infohash; this file only carries bytes and time to
//! it and dials the peers it learns from the magnet's `x.pe` addresses and
//! `--peer`, the magnet's `tr` trackers and `--tracker`, and the overlay
//! (`--overlay`): the sources the download itself uses afterwards.
//!
//! Runtime calls go through [`crate::rt`], from the helpers of the first
//! section ([`spawn`], [`sleep_until`], [`connect`], [`resolve`]); peer
//! streams are `futures::io` streams and the channels are `futures`
//! channels.

use super::overlay_member::{self, MemberArgs};
use super::trackers::{self, TrackerEvent};
use super::PeerArgs;
use crate::clock::Clock;
use crate::rt;
use bytes::Bytes;
use futures::channel::mpsc;
use futures::future::Either;
use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use futures::{SinkExt, StreamExt};
use rumor_core::bt::announce::{self, AnnounceConfig, Announcer};
use rumor_core::bt::conn::{CloseReason, PeerInput};
use rumor_core::bt::magnet::{
    DisconnectReason as FetchDisconnect, Event, FetchConfig, Input as FetchInput, MagnetLink, MetadataFetch,
    Output as FetchOutput,
};
use rumor_core::bt::metadata::METADATA_PIECE_LEN;
use rumor_core::bt::metainfo::{InfoHash, Metainfo};
use rumor_core::bt::picker::PeerKey;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Runtime calls, through the seam (crate::rt).

/// A spawned task, cancelled when its handle is dropped (so a peer dropped
/// by the machine, or the whole fetch, leaves nothing running behind).
struct Task(rt::AbortHandle);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn spawn(f: impl Future<Output = ()> + Send + 'static) -> Task {
    Task(rt::spawn(f).abort_handle())
}

async fn sleep_until(at: Instant) {
    rt::sleep_until(at).await
}

/// The download's listening socket, which the fetch accepts peers on too.
pub type Listener = Box<dyn rt::TcpListener>;

/// A peer connection as a `futures::io` stream.
type PeerStream = rt::TcpStream;

/// A TCP connection to `addr`.
async fn connect(addr: SocketAddr) -> std::io::Result<PeerStream> {
    rt::connect(addr).await
}

/// The next incoming connection (cancel-safe: nothing is lost if the
/// future is dropped unfinished).
async fn accept(listener: &Listener) -> std::io::Result<(PeerStream, SocketAddr)> {
    listener.accept().await
}

/// `host:port` to addresses, through the cluster's DNS at `dns` first when
/// given (the resolver blocks, so it runs off the event loop).
async fn resolve(dns: Option<SocketAddr>, netloc: String) -> Result<Vec<SocketAddr>, String> {
    rt::spawn_blocking(move || super::cluster_dns::resolve_netloc(dns, &netloc))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------

/// Runs `f` for at most `limit`; `None` if it did not finish.
async fn within<F: Future>(limit: Duration, f: F) -> Option<F::Output> {
    match futures::future::select(pin!(f), pin!(sleep_until(Instant::now() + limit))).await {
        Either::Left((v, _)) => Some(v),
        Either::Right(_) => None,
    }
}

/// Connections at once (dialing or connected).
const PEERS_MAX: usize = 20;
/// Dials in progress at once.
const DIALS_MAX: usize = 8;
/// How long a dial may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Peer addresses remembered.
const KNOWN_PEERS_MAX: usize = 500;
/// Events waiting for the loop: peers' reads wait beyond this
/// (backpressure against a peer that floods us).
const EVENTS_MAX: usize = 64;
/// Bytes read from a socket at once.
const READ_CHUNK_BYTES: usize = 32 * 1024;
/// Bytes queued to a peer before it is dropped as not reading.
const SEND_BYTES_MAX: usize = 256 * 1024;
/// Drops for bad metadata, together with other peers, before a ban.
const STRIKES_MAX: u32 = 3;
/// Longest wait between two looks at the peer list (retries come due).
const TICK: Duration = Duration::from_millis(500);
/// What we tell trackers is left to download while the size is unknown:
/// anything but 0, which would announce us as a seeder.
const LEFT_UNKNOWN: u64 = METADATA_PIECE_LEN as u64;

/// What `rumor get` was given instead of a .torrent file.
#[derive(Clone, Debug)]
pub struct MagnetSource {
    /// The link (a bare infohash becomes a link with no parameters).
    pub link: MagnetLink,
    /// Trackers besides the link's (`--tracker`).
    pub trackers: Vec<String>,
    /// Give up if no peer has sent the metadata by then.
    pub timeout: Duration,
    /// Write the fetched torrent here (`--save-torrent`), so that `rumor
    /// seed` can serve the data later.
    pub save_torrent: Option<std::path::PathBuf>,
}

impl MagnetSource {
    /// `arg` as a magnet link or a bare infohash (40 hex digits, when no
    /// file has that name); `Ok(None)` for anything else, a .torrent path.
    pub fn parse_link(arg: &str) -> Result<Option<MagnetLink>, String> {
        if arg.starts_with("magnet:") {
            return MagnetLink::parse(arg).map(Some).ok_or_else(|| {
                format!("{arg}: not a usable magnet link (it needs xt=urn:btih: and 40 hex or 32 base32 characters)")
            });
        }
        if arg.len() == 40 && !std::path::Path::new(arg).exists() {
            if let Some(info_hash) = InfoHash::from_hex(arg) {
                return Ok(Some(MagnetLink { info_hash, name: None, trackers: Vec::new(), peers: Vec::new() }));
            }
        }
        Ok(None)
    }
}

/// What the loop hears about.
enum Ev {
    /// The dial of this connection succeeded.
    Connected(PeerKey),
    /// Bytes from a peer.
    Bytes(PeerKey, Bytes),
    /// The dial failed or the connection closed.
    Closed(PeerKey, Option<String>),
    /// Peers from the overlay.
    Learned(Vec<SocketAddr>),
    /// A tracker answer.
    Tracker(TrackerEvent),
}

struct Conn {
    addr: SocketAddr,
    tx: mpsc::UnboundedSender<Vec<u8>>,
    /// Bytes in `tx` not yet written.
    queued: Arc<AtomicUsize>,
    /// Dialed and handed to the machine.
    connected: bool,
    /// It dialed us: `addr`'s port is not one to dial back.
    incoming: bool,
    _task: Task,
}

#[derive(Default)]
struct Known {
    /// A connection (or a dial) to it is open.
    busy: bool,
    /// Dialed at least once.
    dialed: bool,
    failures: u32,
    retry_at: Option<Instant>,
    /// Times it was among the senders of metadata that did not hash right.
    strikes: u32,
    /// It broke the protocol or sent bad metadata: never again.
    banned: bool,
}

/// Opens the connection (`open`: a dial, or an accepted stream), then
/// reads into `events` and writes what `out` brings, until either side
/// ends.
async fn run_peer<S, F>(
    key: PeerKey,
    open: F,
    mut out: mpsc::UnboundedReceiver<Vec<u8>>,
    queued: Arc<AtomicUsize>,
    mut events: mpsc::Sender<Ev>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Future<Output = std::io::Result<S>> + Send + 'static,
{
    let stream = match within(DIAL_TIMEOUT, open).await {
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            let _ = events.send(Ev::Closed(key, Some(e.to_string()))).await;
            return;
        }
        None => {
            let _ = events.send(Ev::Closed(key, Some("dial timed out".into()))).await;
            return;
        }
    };
    if events.send(Ev::Connected(key)).await.is_err() {
        return;
    }
    let (mut r, mut w) = stream.split();
    let mut reads = events.clone();
    let writer = async move {
        while let Some(buf) = out.next().await {
            queued.fetch_sub(buf.len(), Ordering::Relaxed);
            if w.write_all(&buf).await.is_err() {
                break;
            }
        }
        let _ = w.close().await;
    };
    let reader = async move {
        let mut buf = vec![0u8; READ_CHUNK_BYTES];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if reads.send(Ev::Bytes(key, Bytes::copy_from_slice(&buf[..n]))).await.is_err() {
                        break;
                    }
                }
            }
        }
    };
    futures::future::select(pin!(writer), pin!(reader)).await;
    let _ = events.send(Ev::Closed(key, None)).await;
}

/// The fetch in progress: the machine and the connections it runs on.
struct Fetcher {
    clock: Clock,
    info_hash: InfoHash,
    machine: MetadataFetch,
    machine_at: rumor_core::time::Instant,
    conns: HashMap<PeerKey, Conn>,
    known: BTreeMap<SocketAddr, Known>,
    next_key: PeerKey,
    events_tx: mpsc::Sender<Ev>,
    /// Peers connected when the metadata came: they have the torrent.
    served: Vec<SocketAddr>,
    result: Option<Metainfo>,
    /// Distinct peers dialed.
    tried: usize,
    announcer: Announcer,
    announce_at: rumor_core::time::Instant,
    tracker_io: trackers::TrackerIo,
}

/// Fetches the metadata of `src`'s torrent and returns it checked, with
/// the link's and `--tracker`'s trackers as its announce list. The
/// link's peers and those that served the metadata are added to
/// `net.peers`, so the download dials them at once. `listener` is the
/// download's: its port is announced to trackers and the overlay, and
/// peers that dial it meanwhile serve the metadata too.
pub async fn fetch(src: MagnetSource, net: &mut PeerArgs, listener: &Listener) -> Result<Metainfo, String> {
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let ih = src.link.info_hash;
    let clock = Clock::new();
    let now = clock.now();
    let peer_id = super::client::random_peer_id();
    // A magnet's `tr` list has no tiers: one tier per tracker keeps the
    // link's order (the link's first, then --tracker), tried in turn
    // until one answers (BEP 12).
    let tiers: Vec<Vec<String>> = src.link.trackers.iter().chain(&src.trackers).map(|t| vec![t.clone()]).collect();
    let mut seed = [0u8; 8];
    let _ = getrandom::fill(&mut seed);
    let announcer =
        Announcer::new(AnnounceConfig::new(peer_id, port), ih, &tiers, LEFT_UNKNOWN, now, u64::from_le_bytes(seed));
    let (tracker_tx, tracker_rx) = async_channel::unbounded();
    let tracker_io = trackers::TrackerIo::new(tracker_tx, &tiers, net.dns);
    let (events_tx, mut events) = mpsc::channel(EVENTS_MAX);
    let mut config = FetchConfig::new(peer_id);
    config.peers_max = PEERS_MAX;
    config.request_timeout = rumor_core::time::Duration::from_secs(10);
    config.idle_timeout = rumor_core::time::Duration::from_secs(30);
    let mut f = Fetcher {
        clock,
        info_hash: ih,
        machine: MetadataFetch::new(config, ih, now),
        machine_at: now,
        conns: HashMap::new(),
        known: BTreeMap::new(),
        next_key: 1,
        events_tx: events_tx.clone(),
        served: Vec::new(),
        result: None,
        tried: 0,
        announcer,
        announce_at: now,
        tracker_io,
    };
    let mut sources = Vec::new();
    // Tracker answers reach the loop as events (the tracker side speaks
    // its own channel; the loop listens to one stream).
    let mut tx = events_tx.clone();
    let _trackers = spawn(async move {
        while let Ok(t) = tracker_rx.recv().await {
            if tx.send(Ev::Tracker(t)).await.is_err() {
                break;
            }
        }
    });
    if !tiers.is_empty() {
        sources.push(format!("{} trackers", tiers.len()));
    }
    let _overlay = if net.overlay.is_empty() {
        None
    } else {
        sources.push("the overlay".into());
        let keys = crate::keyring(&net.cluster_key, None)?;
        // Any gossip port: the download's own member binds --overlay-listen
        // after this one is gone.
        let listen = SocketAddr::new(net.overlay_listen.ip(), 0);
        let args = MemberArgs { join: net.overlay.clone(), keys, listen };
        let (found_tx, found_rx) = async_channel::unbounded();
        let member = spawn(async move {
            let incomplete = Arc::new(AtomicBool::new(false));
            if let Err(e) = overlay_member::run(args, ih, port, incomplete, found_tx).await {
                tracing::error!("overlay: {e}");
            }
        });
        let mut tx = events_tx.clone();
        let forward = spawn(async move {
            while let Ok(peers) = found_rx.recv().await {
                if tx.send(Ev::Learned(peers)).await.is_err() {
                    break;
                }
            }
        });
        Some((member, forward))
    };
    let given: Vec<String> = src.link.peers.iter().chain(&net.peers).cloned().collect();
    if !given.is_empty() {
        sources.push(format!("{} given peers", given.len()));
    }
    for p in &given {
        match resolve(net.dns, p.clone()).await {
            Ok(addrs) => addrs.into_iter().for_each(|a| f.learn(a)),
            Err(e) => eprintln!("rumor: peer {p}: {e}"),
        }
    }
    if sources.is_empty() {
        return Err(format!(
            "{ih}: nowhere to look for peers: give a magnet link with tr= or x.pe=, --tracker, --peer or --overlay"
        ));
    }
    let name = src.link.name.as_deref().map(|n| format!(" ({n})")).unwrap_or_default();
    eprintln!("{ih}{name}: fetching the metadata from peers ({})", sources.join(", "));
    let give_up = Instant::now() + src.timeout;
    f.pump_announcer();
    let meta = loop {
        f.pump_machine();
        if let Some(meta) = f.result.take() {
            break meta;
        }
        f.dial_some();
        let now = Instant::now();
        if now >= give_up {
            return Err(format!(
                "{ih}: no peer sent the metadata within {} s ({} peers tried, {} known; looked in {})",
                src.timeout.as_secs(),
                f.tried,
                f.known.len(),
                sources.join(", ")
            ));
        }
        let wake = f.clock.std_instant(f.machine_at.min(f.announce_at)).min(give_up).min(now + TICK);
        // Peers that learn of us (from a tracker or the overlay) dial us.
        let incoming = pin!(accept(listener));
        match futures::future::select(events.next(), futures::future::select(incoming, pin!(sleep_until(wake)))).await {
            Either::Left((Some(ev), _)) => f.on_event(ev),
            Either::Left((None, _)) => return Err("the metadata fetch lost its event channel".into()),
            Either::Right((Either::Left((Ok((stream, addr)), _)), _)) => f.accepted(stream, addr),
            Either::Right((Either::Left((Err(e), _)), _)) => tracing::warn!("accept: {e}"),
            Either::Right((Either::Right(_), _)) => f.on_time(),
        }
    };
    let mut meta = meta;
    meta.announce_tiers = tiers;
    meta.announce = meta.announce_tiers.iter().flatten().next().cloned();
    if let Some(path) = &src.save_torrent {
        std::fs::write(path, meta.to_torrent_bytes())
            .map_err(|e| format!("cannot save the torrent to {}: {e}", path.display()))?;
        eprintln!("{}: saved the torrent to {}", meta.name, path.display());
    }
    eprintln!(
        "{}: got the metadata of {ih} ({} files, {} bytes) from {}",
        meta.name,
        meta.files.len(),
        meta.total_length,
        f.served.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ")
    );
    // Hand the download every peer known to have the torrent.
    net.peers.extend(src.link.peers.iter().cloned());
    net.peers.extend(f.served.iter().map(|a| a.to_string()));
    net.peers.sort();
    net.peers.dedup();
    Ok(meta)
}

impl Fetcher {
    fn accepted(&mut self, stream: PeerStream, addr: SocketAddr) {
        if self.conns.len() >= PEERS_MAX {
            return;
        }
        tracing::debug!("peer {addr}: connected to us");
        self.open(addr, true, async move { Ok(stream) });
    }

    /// Starts a connection's task; the machine hears of it once `open`
    /// has given a stream.
    fn open<S, F>(&mut self, addr: SocketAddr, incoming: bool, open: F)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        F: Future<Output = std::io::Result<S>> + Send + 'static,
    {
        let key = self.next_key;
        self.next_key += 1;
        let (tx, rx) = mpsc::unbounded();
        let queued = Arc::new(AtomicUsize::new(0));
        let task = spawn(run_peer(key, open, rx, queued.clone(), self.events_tx.clone()));
        self.conns.insert(key, Conn { addr, tx, queued, connected: false, incoming, _task: task });
    }

    fn learn(&mut self, addr: SocketAddr) {
        if self.known.len() < KNOWN_PEERS_MAX && !addr.ip().is_unspecified() && addr.port() != 0 {
            self.known.entry(addr).or_default();
        }
    }

    fn pump_machine(&mut self) {
        let mut bad = Vec::new();
        loop {
            match self.machine.poll_output() {
                FetchOutput::Timeout(at) => {
                    self.machine_at = at;
                    break;
                }
                FetchOutput::Transmit(t) => {
                    let (peer, payload) = (t.to, t.bytes);
                    let Some(c) = self.conns.get(&peer) else {
                        continue;
                    };
                    // Our messages are small, but a peer that asks us for
                    // metadata (we reject) and never reads would grow the
                    // queue forever: past the bound it is dropped.
                    let queued = c.queued.fetch_add(payload.len(), Ordering::Relaxed) + payload.len();
                    if queued <= SEND_BYTES_MAX {
                        // A closed queue means the connection's task has
                        // ended (the peer hung up, maybe before we even
                        // spoke): its `Closed` event follows and is handled
                        // like any hang-up, with a retry later; no ban.
                        let _ = c.tx.unbounded_send(payload);
                    } else {
                        tracing::info!("peer {}: dropped (it does not read)", c.addr);
                        let addr = c.addr;
                        self.conns.remove(&peer);
                        if let Some(k) = self.known.get_mut(&addr) {
                            k.busy = false;
                            k.banned = true;
                        }
                        self.machine.handle(
                            self.clock.now(),
                            FetchInput::Peer(PeerInput::Closed { peer, reason: CloseReason::Local }),
                        );
                    }
                }
                FetchOutput::Disconnect { peer, reason: FetchDisconnect::BadMetadata } => {
                    if let Some(c) = self.conns.get(&peer) {
                        bad.push(c.addr);
                    }
                    self.on_disconnect(peer, FetchDisconnect::BadMetadata);
                }
                FetchOutput::Disconnect { peer, reason } => self.on_disconnect(peer, reason),
                FetchOutput::Event(Event::Done(meta)) => {
                    self.result = Some(*meta);
                    break;
                }
            }
        }
        // Metadata that does not hash right gets every contributor dropped
        // at once, and only one of them may have lied: a peer dropped alone
        // is banned, one of a group only after a few such drops.
        let alone = bad.len() == 1;
        for addr in bad {
            if let Some(k) = self.known.get_mut(&addr) {
                k.strikes += 1;
                if alone || k.strikes >= STRIKES_MAX {
                    tracing::warn!("peer {addr}: banned for sending bad metadata");
                    k.banned = true;
                }
            }
        }
    }

    /// Closes a connection the machine dropped and decides if and when
    /// its address is tried again.
    fn on_disconnect(&mut self, peer: PeerKey, reason: FetchDisconnect) {
        let Some(c) = self.conns.remove(&peer) else {
            return;
        };
        if reason == FetchDisconnect::Done {
            if !c.incoming {
                self.served.push(c.addr);
            }
        } else {
            tracing::info!("peer {}: dropped: {reason:?}", c.addr);
        }
        let Some(k) = self.known.get_mut(&c.addr) else {
            return;
        };
        k.busy = false;
        match reason {
            FetchDisconnect::Protocol => k.banned = true,
            FetchDisconnect::Done => {}
            // Banned or not by the caller, which sees the whole group.
            FetchDisconnect::BadMetadata => {
                k.failures += 1;
                k.retry_at = Some(Instant::now() + backoff(k.failures));
            }
            // It may get the metadata itself later (a leecher that started
            // from a magnet too), or have room: again, later and later.
            FetchDisconnect::NoMetadata | FetchDisconnect::TooManyPeers | FetchDisconnect::Idle => {
                k.failures += 1;
                k.retry_at = Some(Instant::now() + backoff(k.failures));
            }
        }
    }

    fn on_event(&mut self, ev: Ev) {
        let now = self.clock.now();
        match ev {
            Ev::Connected(peer) => {
                if let Some(c) = self.conns.get_mut(&peer) {
                    c.connected = true;
                    tracing::debug!("peer {}: connected", c.addr);
                    self.machine.handle(now, FetchInput::Peer(PeerInput::Connected { peer }));
                }
            }
            Ev::Bytes(peer, bytes) => {
                if self.conns.get(&peer).is_some_and(|c| c.connected) {
                    self.machine.handle(now, FetchInput::Peer(PeerInput::Bytes { peer, bytes }));
                }
            }
            Ev::Closed(peer, why) => {
                let Some(c) = self.conns.remove(&peer) else {
                    return;
                };
                match why {
                    Some(e) => tracing::debug!("peer {}: {e}", c.addr),
                    None => tracing::debug!("peer {}: closed", c.addr),
                }
                if let Some(k) = self.known.get_mut(&c.addr) {
                    k.busy = false;
                    k.failures += 1;
                    k.retry_at = Some(Instant::now() + backoff(k.failures));
                }
                if c.connected {
                    self.machine.handle(now, FetchInput::Peer(PeerInput::Closed { peer, reason: CloseReason::Local }));
                }
            }
            Ev::Learned(peers) => {
                tracing::info!("overlay: {} providers of {}", peers.len(), self.info_hash);
                peers.into_iter().for_each(|a| self.learn(a));
            }
            Ev::Tracker(t) => self.on_tracker(t),
        }
    }

    fn on_time(&mut self) {
        let now = self.clock.now();
        if now >= self.machine_at {
            self.machine.handle(now, FetchInput::Timeout);
        }
        if now >= self.announce_at {
            self.announcer.handle(now, announce::Input::Timeout);
            self.pump_announcer();
        }
    }

    fn dial_some(&mut self) {
        let now = Instant::now();
        let dialing = self.conns.values().filter(|c| !c.connected).count();
        let budget = PEERS_MAX.saturating_sub(self.conns.len()).min(DIALS_MAX.saturating_sub(dialing));
        let due: Vec<SocketAddr> = self
            .known
            .iter()
            .filter(|(_, k)| !k.busy && !k.banned && k.retry_at.is_none_or(|t| now >= t))
            .map(|(a, _)| *a)
            .take(budget)
            .collect();
        for addr in due {
            let k = self.known.get_mut(&addr).expect("listed above");
            if !k.dialed {
                k.dialed = true;
                self.tried += 1;
            }
            k.busy = true;
            self.open(addr, false, connect(addr));
        }
    }

    fn pump_announcer(&mut self) {
        loop {
            let now = self.clock.now();
            let out = self.announcer.poll_output();
            match self.tracker_io.carry(&mut self.announcer, now, out) {
                Some(announce::Output::Timeout(at)) => {
                    self.announce_at = at;
                    break;
                }
                Some(announce::Output::Event(announce::Event::Peers(peers))) => {
                    tracing::info!("tracker gave {} peers", peers.len());
                    peers.into_iter().for_each(|a| self.learn(a));
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
}

/// Wait before trying an address again after `failures` failures: 1 s
/// doubling to 32 s (short: the fetch itself is bounded by its timeout).
fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.min(5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_links_infohashes_or_paths() {
        let ih = "0123456789abcdef0123456789abcdef01234567";
        let link = MagnetSource::parse_link(ih).unwrap().unwrap();
        assert_eq!(link.info_hash.to_hex(), ih);
        let uri = format!("magnet:?xt=urn:btih:{ih}&x.pe=127.0.0.1:1234");
        assert_eq!(MagnetSource::parse_link(&uri).unwrap().unwrap().peers, vec!["127.0.0.1:1234".to_string()]);
        assert!(MagnetSource::parse_link("magnet:?dn=nothing").is_err());
        assert!(MagnetSource::parse_link("some.torrent").unwrap().is_none());
        assert!(MagnetSource::parse_link(&ih.replace('0', "g")).unwrap().is_none());
    }
}
