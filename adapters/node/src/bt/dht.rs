//! The client's Mainline DHT node (BEP 5): one task owning the core
//! [`Dht`] machine and one UDP socket (by default on the same port number
//! as the peer listener, the libtorrent convention).
//!
//! It joins through the nodes saved by the last run and the bootstrap
//! routers (names that do not resolve are skipped quietly: offline, or a
//! private network), looks up the torrent's peers and announces us at the
//! end of each lookup, and hands every peer found to the session through
//! the same `found` channel the overlay member uses, so they land in the
//! peer book like a tracker's. The routing table is saved beside the
//! download (see [`state_path`]) every few minutes and on exit, and reused
//! at the next start.

use crate::clock::Clock;
use crate::rt::{self, UdpSocket};
use rumor_core::bt::bencode::{self, Value};
use rumor_core::bt::metainfo::InfoHash;
use rumor_core::dht::krpc::{compact_nodes, parse_compact_nodes, NodeInfo};
use rumor_core::dht::{Command, Config, Dht, Event, Input, NodeId, Output};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The public routers used when no `--dht-bootstrap` is given.
pub const DEFAULT_BOOTSTRAP: [&str; 3] =
    ["router.bittorrent.com:6881", "dht.transmissionbt.com:6881", "router.utorrent.com:6881"];
/// A lookup that found peers is repeated (and our announce renewed) this
/// often; BEP 5 nodes keep announces for 30 minutes.
const LOOKUP_EVERY: Duration = Duration::from_secs(15 * 60);
/// A lookup that found nobody is repeated this often.
const RETRY_EVERY: Duration = Duration::from_secs(30);
/// The routing table is saved this often (and on exit).
const SAVE_EVERY: Duration = Duration::from_secs(5 * 60);
/// Nodes saved for the next start.
const SAVED_NODES_MAX: usize = 200;
/// Largest datagram read.
const DATAGRAM_MAX: usize = 4096;
/// Addresses from `port` messages waiting for the task; when full, more
/// are dropped (a peer's DHT is a nicety).
pub const PINGS_MAX: usize = 64;

/// The state file beside the download: `DIR/.rumor-dht`.
pub fn state_path(dir: &Path) -> PathBuf {
    dir.join(".rumor-dht")
}

/// What the DHT task needs.
pub struct DhtArgs {
    /// The bound UDP socket.
    pub socket: Box<dyn UdpSocket>,
    /// Its port, which our BEP 5 `port` messages give peers.
    pub udp_port: u16,
    /// `HOST:PORT` routers to join through.
    pub bootstrap: Vec<String>,
    /// Where the routing table is saved and read back.
    pub state: PathBuf,
    /// The torrent.
    pub info_hash: InfoHash,
    /// Our TCP peer port, announced.
    pub peer_port: u16,
    /// Set once complete: announce again then.
    pub complete: Arc<AtomicBool>,
}

/// A handle that asks the node to ping peers' DHT ports (BEP 5 `port`
/// messages), for the download loop.
#[derive(Clone)]
pub struct DhtPinger {
    pings: async_channel::Sender<SocketAddr>,
    /// The node's UDP port, which our `port` messages give.
    pub port: u16,
}

impl DhtPinger {
    /// Asks the node to ping `addr`: it joins the routing table if it
    /// answers. Dropped when the queue is full.
    pub fn ping(&self, addr: SocketAddr) {
        let _ = self.pings.try_send(addr);
    }
}

/// A running DHT node, as the session holds it.
pub struct DhtNode {
    stop: rt::ShutdownTrigger,
    /// Whether the task saves the table when it stops.
    save_on_stop: Arc<AtomicBool>,
    task: rt::JoinHandle<()>,
    pings: async_channel::Sender<SocketAddr>,
    port: u16,
}

impl DhtNode {
    /// A handle for the download loop to pass peers' DHT ports on.
    pub fn pinger(&self) -> DhtPinger {
        DhtPinger { pings: self.pings.clone(), port: self.port }
    }

    /// Stops the node and waits briefly for it; with `save`, it saves its
    /// table first (not after a session that failed: `seed` of a wrong
    /// directory must leave it as it was).
    pub async fn stop(self, save: bool) {
        self.save_on_stop.store(save, Ordering::Relaxed);
        self.stop.fire();
        let _ = rt::timeout(Duration::from_secs(2), self.task).await;
    }
}

/// Starts the node; peers it finds go to `found` (a bounded channel: when
/// it is full they are handed on after the next lookup).
pub fn spawn(args: DhtArgs, found: async_channel::Sender<Vec<SocketAddr>>) -> DhtNode {
    let port = args.udp_port;
    let (stop, shutdown) = rt::Shutdown::new();
    let (pings, pings_rx) = async_channel::bounded(PINGS_MAX);
    let save_on_stop = Arc::new(AtomicBool::new(true));
    let save = save_on_stop.clone();
    let task = rt::spawn(async move {
        if let Err(e) = run(args, found, pings_rx, shutdown, save).await {
            tracing::warn!("dht: {e}");
        }
    });
    DhtNode { stop, save_on_stop, task, pings, port }
}

/// Reads a saved state: our id and the nodes we knew.
fn load(path: &Path) -> Option<(NodeId, Vec<NodeInfo>)> {
    let bytes = std::fs::read(path).ok()?;
    let v = bencode::decode(&bytes).ok()?;
    let id = NodeId(v.get("id")?.as_bytes()?.try_into().ok()?);
    let nodes = v.get("nodes").and_then(Value::as_bytes).map(|b| parse_compact_nodes(b, false)).unwrap_or_default();
    Some((id, nodes))
}

fn save(path: &Path, dht: &Dht) {
    if dht.table().is_empty() {
        // Nothing worth keeping (and no file where none was).
        return;
    }
    let nodes: Vec<NodeInfo> = dht.table().nodes().take(SAVED_NODES_MAX).map(|n| n.info()).collect();
    let v = Value::dict()
        .insert("id", Value::bytes(dht.id().0.to_vec()))
        .insert("nodes", Value::bytes(compact_nodes(&nodes, false)));
    let tmp = path.with_extension("tmp");
    let r = std::fs::write(&tmp, v.to_bytes()).and_then(|_| std::fs::rename(&tmp, path));
    if let Err(e) = r {
        tracing::debug!("dht: cannot save the routing table to {}: {e}", path.display());
    }
}

async fn run(
    args: DhtArgs,
    found: async_channel::Sender<Vec<SocketAddr>>,
    pings: async_channel::Receiver<SocketAddr>,
    stop: rt::Shutdown,
    save_on_stop: Arc<AtomicBool>,
) -> Result<(), String> {
    let clock = Clock::new();
    let (mut dht, boot) = start_node(Some(&args.state), &args.bootstrap, &clock).await;
    let socket = args.socket;
    let mut handed: BTreeSet<SocketAddr> = BTreeSet::new();
    let mut lookup: u64 = 0;
    let mut running = false;
    let mut next_lookup = std::time::Instant::now();
    let mut next_save = std::time::Instant::now() + SAVE_EVERY;
    let mut was_complete = args.complete.load(Ordering::Relaxed);
    let mut timeout;
    let mut buf = vec![0u8; DATAGRAM_MAX];
    let mut pending: Vec<Input> = vec![Input::Command(Command::Bootstrap(boot))];
    loop {
        for input in pending.drain(..) {
            dht.handle(clock.now(), input);
        }
        // Carry out what the machine asks.
        loop {
            match dht.poll_output() {
                Output::Transmit(t) => {
                    if let Err(e) = socket.send_to(&t.bytes, t.to).await {
                        tracing::trace!("dht: send to {}: {e}", t.to);
                    }
                }
                Output::Event(Event::Peers { peers, .. }) => {
                    let fresh: Vec<SocketAddr> = peers.into_iter().filter(|p| handed.insert(*p)).collect();
                    if !fresh.is_empty() {
                        tracing::info!("dht: {} new peers", fresh.len());
                        match found.try_send(fresh) {
                            Ok(()) => {}
                            Err(async_channel::TrySendError::Full(f)) => {
                                // The session is busy: hand them on next time.
                                for p in f {
                                    handed.remove(&p);
                                }
                            }
                            Err(async_channel::TrySendError::Closed(_)) => {
                                save(&args.state, &dht);
                                return Ok(());
                            }
                        }
                    }
                }
                Output::Event(Event::LookupDone { stats, .. }) => {
                    running = false;
                    tracing::info!(
                        "dht: lookup done: {} peers, {} queries, announced to {} nodes, table {} nodes",
                        stats.peers,
                        stats.queries,
                        stats.announced,
                        dht.table().len()
                    );
                    let again = if stats.peers > 0 && stats.announced > 0 { LOOKUP_EVERY } else { RETRY_EVERY };
                    next_lookup = std::time::Instant::now() + again;
                }
                Output::Timeout(at) => {
                    timeout = at;
                    break;
                }
            }
        }
        let now = std::time::Instant::now();
        let complete = args.complete.load(Ordering::Relaxed);
        if complete && !was_complete {
            // Complete: announce again now (as trackers hear `completed`).
            was_complete = true;
            next_lookup = now;
        }
        if !running && now >= next_lookup {
            running = true;
            lookup += 1;
            let cmd = Command::GetPeers { lookup, info_hash: args.info_hash, announce: Some(args.peer_port) };
            pending.push(Input::Command(cmd));
            continue;
        }
        if now >= next_save {
            next_save = now + SAVE_EVERY;
            save(&args.state, &dht);
        }
        let mut wake = clock.std_instant(timeout).min(next_save).min(now + Duration::from_secs(1));
        if !running {
            wake = wake.min(next_lookup);
        }
        futures::select_biased! {
            _ = futures::FutureExt::fuse(stop.wait()) => break,
            r = futures::FutureExt::fuse(socket.recv_from(&mut buf)) => match r {
                Ok((n, from)) => pending.push(Input::Receive { from, bytes: buf[..n].to_vec() }),
                Err(e) => tracing::trace!("dht: receive: {e}"),
            },
            p = futures::FutureExt::fuse(pings.recv()) => match p {
                Ok(addr) => pending.push(Input::Command(Command::Ping(addr))),
                // The owner is gone.
                Err(_) => break,
            },
            _ = futures::FutureExt::fuse(rt::sleep_until(wake)) => pending.push(Input::Timeout),
        }
    }
    if save_on_stop.load(Ordering::Relaxed) {
        save(&args.state, &dht);
    }
    Ok(())
}

/// Lookups the session's node runs at once; the other torrents wait their
/// turn, so a session of many torrents spreads its lookups over time.
pub const SHARED_LOOKUPS_MAX: usize = 4;
/// Torrent changes waiting for the session's node; when full, the session
/// tries again on its next turn.
pub const WANTS_MAX: usize = 256;
/// Peers remembered per torrent as already handed on; past it the memory
/// starts over (a peer handed twice is only learned twice).
const HANDED_MAX: usize = 2048;

/// What the session asks of its DHT node.
pub enum Want {
    /// Look up `info_hash` now and then, announcing us, and hand the peers
    /// found to `found` (the torrent's task).
    Add {
        /// The torrent.
        info_hash: InfoHash,
        /// Its task's channel of found peers.
        found: async_channel::Sender<Vec<SocketAddr>>,
    },
    /// Stop looking it up (paused, private, removed).
    Remove(InfoHash),
}

/// What the session's node needs.
pub struct SharedArgs {
    /// The bound UDP socket.
    pub socket: Box<dyn UdpSocket>,
    /// Its port, which our `port` messages give peers.
    pub udp_port: u16,
    /// `HOST:PORT` routers to join through.
    pub bootstrap: Vec<String>,
    /// Where the routing table is saved and read back (`None`: nowhere).
    pub state: Option<PathBuf>,
    /// The session's TCP peer port, announced for every torrent.
    pub peer_port: u16,
}

/// The DHT node of the node's torrent session: one routing table and one
/// socket for every torrent.
pub struct SharedDht {
    node: DhtNode,
    wants: async_channel::Sender<Want>,
}

impl SharedDht {
    /// A handle for the torrents' download loops (BEP 5 `port` messages).
    pub fn pinger(&self) -> DhtPinger {
        self.node.pinger()
    }

    /// Asks the node to look up a torrent, or to stop; `false` if the
    /// queue is full (ask again later).
    pub fn want(&self, want: Want) -> bool {
        self.wants.try_send(want).is_ok()
    }

    /// Stops the node, saving its table.
    pub async fn stop(self) {
        self.node.stop(true).await
    }
}

/// Starts the session's node.
pub fn spawn_shared(args: SharedArgs) -> SharedDht {
    let port = args.udp_port;
    let (stop, shutdown) = rt::Shutdown::new();
    let (pings, pings_rx) = async_channel::bounded(PINGS_MAX);
    let (wants, wants_rx) = async_channel::bounded(WANTS_MAX);
    let save_on_stop = Arc::new(AtomicBool::new(true));
    let save = save_on_stop.clone();
    let task = rt::spawn(async move {
        run_shared(args, wants_rx, pings_rx, shutdown, save).await;
    });
    SharedDht { node: DhtNode { stop, save_on_stop, task, pings, port }, wants }
}

/// A new node: our id (the saved one, else random) and where to join.
async fn start_node(state: Option<&Path>, bootstrap: &[String], clock: &Clock) -> (Dht, Vec<SocketAddr>) {
    let saved = state.and_then(load);
    let id = match &saved {
        Some((id, _)) => *id,
        None => {
            let mut id = [0u8; 20];
            id[..8].copy_from_slice(&super::entropy::seed().to_le_bytes());
            id[8..16].copy_from_slice(&super::entropy::seed().to_le_bytes());
            id[16..].copy_from_slice(&super::entropy::seed().to_le_bytes()[..4]);
            NodeId(id)
        }
    };
    let dht = Dht::new(Config::new(id), clock.now(), super::entropy::seed());
    let mut boot: Vec<SocketAddr> = saved.map(|(_, n)| n.into_iter().map(|n| n.addr).collect()).unwrap_or_default();
    for target in bootstrap {
        match rt::lookup_host(target.clone()).await {
            Ok(addrs) => boot.extend(addrs.into_iter().filter(SocketAddr::is_ipv4)),
            // Expected offline or on a private network: not worth a warning.
            Err(e) => tracing::debug!("dht: bootstrap {target}: {e}"),
        }
    }
    tracing::info!("dht: node {id}, joining through {} addresses", boot.len());
    (dht, boot)
}

/// One torrent the session's node looks up.
struct Looked {
    found: async_channel::Sender<Vec<SocketAddr>>,
    handed: BTreeSet<SocketAddr>,
    next_lookup: std::time::Instant,
    running: Option<u64>,
}

async fn run_shared(
    args: SharedArgs,
    wants: async_channel::Receiver<Want>,
    pings: async_channel::Receiver<SocketAddr>,
    stop: rt::Shutdown,
    save_on_stop: Arc<AtomicBool>,
) {
    let clock = Clock::new();
    let (mut dht, boot) = start_node(args.state.as_deref(), &args.bootstrap, &clock).await;
    let socket = args.socket;
    // At most the session's torrents (`torrents::TORRENTS_MAX`): it adds
    // only those it holds, and removes them.
    let mut torrents: std::collections::BTreeMap<InfoHash, Looked> = std::collections::BTreeMap::new();
    // Lookup id -> torrent, for the lookups running (at most
    // SHARED_LOOKUPS_MAX).
    let mut lookups: std::collections::BTreeMap<u64, InfoHash> = std::collections::BTreeMap::new();
    let mut next_id: u64 = 0;
    let mut next_save = std::time::Instant::now() + SAVE_EVERY;
    let mut timeout;
    let mut buf = vec![0u8; DATAGRAM_MAX];
    let mut pending: Vec<Input> = vec![Input::Command(Command::Bootstrap(boot))];
    let save_to = |dht: &Dht| {
        if let Some(p) = &args.state {
            save(p, dht);
        }
    };
    loop {
        for input in pending.drain(..) {
            dht.handle(clock.now(), input);
        }
        loop {
            match dht.poll_output() {
                Output::Transmit(t) => {
                    if let Err(e) = socket.send_to(&t.bytes, t.to).await {
                        tracing::trace!("dht: send to {}: {e}", t.to);
                    }
                }
                Output::Event(Event::Peers { info_hash, peers, .. }) => {
                    let Some(t) = torrents.get_mut(&info_hash) else { continue };
                    if t.handed.len() + peers.len() > HANDED_MAX {
                        t.handed.clear();
                    }
                    let fresh: Vec<SocketAddr> = peers.into_iter().filter(|p| t.handed.insert(*p)).collect();
                    if fresh.is_empty() {
                        continue;
                    }
                    tracing::info!("dht: {} new peers of {info_hash}", fresh.len());
                    match t.found.try_send(fresh) {
                        Ok(()) => {}
                        // Its task is busy: hand them on next time.
                        Err(async_channel::TrySendError::Full(f)) => f.iter().for_each(|p| {
                            t.handed.remove(p);
                        }),
                        // Its task ended: forget it (the session adds it
                        // again if it starts again).
                        Err(async_channel::TrySendError::Closed(_)) => {
                            torrents.remove(&info_hash);
                        }
                    }
                }
                Output::Event(Event::LookupDone { lookup, stats }) => {
                    let Some(ih) = lookups.remove(&lookup) else { continue };
                    tracing::info!(
                        "dht: lookup of {ih} done: {} peers, {} queries, announced to {} nodes, table {} nodes",
                        stats.peers,
                        stats.queries,
                        stats.announced,
                        dht.table().len()
                    );
                    if let Some(t) = torrents.get_mut(&ih).filter(|t| t.running == Some(lookup)) {
                        t.running = None;
                        let again = if stats.peers > 0 && stats.announced > 0 { LOOKUP_EVERY } else { RETRY_EVERY };
                        t.next_lookup = std::time::Instant::now() + again;
                    }
                }
                Output::Timeout(at) => {
                    timeout = at;
                    break;
                }
            }
        }
        let now = std::time::Instant::now();
        // Start the lookups due, most overdue first, a few at a time.
        let mut due: Vec<(std::time::Instant, InfoHash)> = torrents
            .iter()
            .filter(|(_, t)| t.running.is_none() && t.next_lookup <= now)
            .map(|(ih, t)| (t.next_lookup, *ih))
            .collect();
        due.sort();
        let room = SHARED_LOOKUPS_MAX.saturating_sub(lookups.len());
        for (_, ih) in due.into_iter().take(room) {
            next_id += 1;
            lookups.insert(next_id, ih);
            if let Some(t) = torrents.get_mut(&ih) {
                t.running = Some(next_id);
            }
            let cmd = Command::GetPeers { lookup: next_id, info_hash: ih, announce: Some(args.peer_port) };
            pending.push(Input::Command(cmd));
        }
        if !pending.is_empty() {
            continue;
        }
        if now >= next_save {
            next_save = now + SAVE_EVERY;
            save_to(&dht);
        }
        let mut wake = clock.std_instant(timeout).min(next_save).min(now + Duration::from_secs(1));
        if lookups.len() < SHARED_LOOKUPS_MAX {
            if let Some(t) = torrents.values().filter(|t| t.running.is_none()).map(|t| t.next_lookup).min() {
                wake = wake.min(t);
            }
        }
        futures::select_biased! {
            _ = futures::FutureExt::fuse(stop.wait()) => break,
            w = futures::FutureExt::fuse(wants.recv()) => match w {
                Ok(Want::Add { info_hash, found }) => {
                    let next_lookup = std::time::Instant::now();
                    torrents.insert(info_hash, Looked { found, handed: BTreeSet::new(), next_lookup, running: None });
                }
                Ok(Want::Remove(ih)) => {
                    // Its lookup, if running, ends on its own; its peers
                    // then go nowhere.
                    torrents.remove(&ih);
                }
                Err(_) => break,
            },
            r = futures::FutureExt::fuse(socket.recv_from(&mut buf)) => match r {
                Ok((n, from)) => pending.push(Input::Receive { from, bytes: buf[..n].to_vec() }),
                Err(e) => tracing::trace!("dht: receive: {e}"),
            },
            p = futures::FutureExt::fuse(pings.recv()) => match p {
                Ok(addr) => pending.push(Input::Command(Command::Ping(addr))),
                Err(_) => break,
            },
            _ = futures::FutureExt::fuse(rt::sleep_until(wake)) => pending.push(Input::Timeout),
        }
    }
    if save_on_stop.load(Ordering::Relaxed) {
        save_to(&dht);
    }
}
