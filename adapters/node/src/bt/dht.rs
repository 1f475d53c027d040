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
    let saved = load(&args.state);
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
    let mut dht = Dht::new(Config::new(id), clock.now(), super::entropy::seed());
    let mut boot: Vec<SocketAddr> = saved.map(|(_, n)| n.into_iter().map(|n| n.addr).collect()).unwrap_or_default();
    for target in &args.bootstrap {
        match rt::lookup_host(target.clone()).await {
            Ok(addrs) => boot.extend(addrs.into_iter().filter(SocketAddr::is_ipv4)),
            // Expected offline or on a private network: not worth a warning.
            Err(e) => tracing::debug!("dht: bootstrap {target}: {e}"),
        }
    }
    tracing::info!("dht: node {id}, joining through {} addresses", boot.len());
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
