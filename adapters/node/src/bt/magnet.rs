//! `rumor get MAGNET` and `rumor get INFOHASH`, first phase: the torrent's
//! metadata, by BEP 9 (`ut_metadata`) from peers.
//!
//! The core [`MetadataFetch`] machine speaks the protocol and checks the
//! result against the infohash; this file only carries bytes and time to
//! it, through the shared peer layer ([`super::peer_conn::Peers`]) and the
//! shared [`PeerBook`], and finds peers where the download will look for
//! them afterwards: the book's given peers (`x.pe`, `--peer`), the
//! magnet's `tr` trackers and `--tracker`, and the overlay (`--overlay`,
//! through the session's one overlay member).
//! The book is handed back with the metadata, so the download starts with
//! every peer the fetch learned (those that served it are due at once).
//! [`super::session`] puts the two phases in sequence.

use super::mse_stream::Crypto;
use super::peer_conn::{when, ConnLimits, Inbound, Peers};
use super::trackers::{self, TrackerEvent};
use super::PeerArgs;
use crate::clock::Clock;
use crate::rt;
use futures::FutureExt;
use rumor_core::bt::announce::{self, AnnounceConfig, Announcer};
use rumor_core::bt::conn::PeerInput;
use rumor_core::bt::magnet::{self as fetch_machine, DisconnectReason, FetchConfig, MagnetLink, MetadataFetch};
use rumor_core::bt::metadata::METADATA_PIECE_LEN;
use rumor_core::bt::metainfo::{InfoHash, Metainfo};
use rumor_core::bt::peers::{Closed, PeerBook, Source};
use rumor_core::bt::picker::PeerKey;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Connections at once (dialing or connected) while fetching.
const PEERS_MAX: usize = 20;
/// Connection buffers: our messages are small, so a small queue; past
/// the soft limit a peer that asks (we reject) and never reads is no
/// longer read from, past the hard one it is dropped.
const LIMITS: ConnLimits =
    ConnLimits { read_chunk_bytes: 32 * 1024, send_bytes_soft: 64 * 1024, send_bytes_max: 256 * 1024 };
/// Longest wait between two looks at the peer book (retries come due).
const TICK: Duration = Duration::from_millis(500);
/// Tracker answers waiting for the loop. When full, an answer is dropped
/// (the announcer's request timeout asks again).
const TRACKER_EVENTS_MAX: usize = 64;
/// What we tell trackers is left to download while the size is unknown:
/// anything but 0, which would announce us as a seeder.
const LEFT_UNKNOWN: u64 = METADATA_PIECE_LEN as u64;

/// The download's listening socket, which the fetch accepts peers on too.
pub type Listener = Box<dyn rt::TcpListener>;

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
    /// Give up on SIGINT/SIGTERM (`rumor get`); false in the node's
    /// session, where the node takes the signals and stops the fetch.
    pub take_signals: bool,
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

/// The fetch in progress: the machine and the connections it runs on.
struct Fetcher {
    clock: Clock,
    info_hash: InfoHash,
    machine: MetadataFetch,
    machine_at: rumor_core::time::Instant,
    peers: Peers,
    /// Peers we dialed that were connected when the metadata came: they
    /// have the torrent.
    served: Vec<SocketAddr>,
    result: Option<Metainfo>,
    announcer: Announcer,
    announce_at: rumor_core::time::Instant,
    tracker_io: trackers::TrackerIo,
}

/// What woke the fetch loop.
enum Wake {
    Peer(Inbound),
    Tracker(TrackerEvent),
    Found(Vec<SocketAddr>),
    /// The overlay member has ended.
    FoundClosed,
    Accepted(std::io::Result<(rt::TcpStream, SocketAddr)>),
    Timer,
}

/// Fetches the metadata of `src`'s torrent and returns it checked, with
/// the link's and `--tracker`'s trackers as its announce list, and the peer
/// book (its given peers already in it) with all it learned. `listener` is
/// the download's: its port is announced to trackers and the overlay, and
/// peers that dial it meanwhile serve the metadata too. `overlay`: the
/// providers the session's overlay member finds (`--overlay`).
pub async fn fetch(
    src: MagnetSource,
    net: &PeerArgs,
    listener: &Listener,
    clock: Clock,
    book: PeerBook,
    overlay: Option<&async_channel::Receiver<Vec<SocketAddr>>>,
    lsd: Option<&super::lsd::LsdHandle>,
) -> Result<(Metainfo, PeerBook), String> {
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let ih = src.link.info_hash;
    let now = clock.now();
    let peer_id = super::entropy::peer_id();
    // A magnet's `tr` list has no tiers: one tier per tracker keeps the
    // link's order (the link's first, then --tracker), tried in turn
    // until one answers (BEP 12).
    let tiers: Vec<Vec<String>> = src.link.trackers.iter().chain(&src.trackers).map(|t| vec![t.clone()]).collect();
    let announcer =
        Announcer::new(AnnounceConfig::new(peer_id, port), ih, &tiers, LEFT_UNKNOWN, now, super::entropy::seed());
    let (tracker_tx, tracker_rx) = async_channel::bounded(TRACKER_EVENTS_MAX);
    let tracker_io = trackers::TrackerIo::new(tracker_tx, &tiers, net.dns);
    let mut config = FetchConfig::new(peer_id);
    config.peers_max = PEERS_MAX;
    config.request_timeout = rumor_core::time::Duration::from_secs(10);
    config.idle_timeout = rumor_core::time::Duration::from_secs(30);
    let given = book.known_len();
    let mut f = Fetcher {
        clock,
        info_hash: ih,
        machine: MetadataFetch::new(config, ih, now),
        machine_at: now,
        peers: Peers::new(clock, book, LIMITS).with_crypto(Crypto { policy: net.encryption, info_hash: ih }),
        served: Vec::new(),
        result: None,
        announcer,
        announce_at: now,
        tracker_io,
    };
    let mut sources = Vec::new();
    if !tiers.is_empty() {
        sources.push(format!("{} trackers", tiers.len()));
    }
    if overlay.is_some() && !net.overlay.is_empty() {
        sources.push("the overlay".into());
    }
    if overlay.is_some() && !net.no_dht {
        sources.push("the DHT".into());
    }
    if given > 0 {
        sources.push(format!("{given} given peers"));
    }
    if lsd.is_some() {
        sources.push("local service discovery".into());
    }
    if sources.is_empty() {
        return Err(format!(
            "{ih}: nowhere to look for peers: give a magnet link with tr= or x.pe=, --tracker, --peer, --overlay, or leave the DHT on"
        ));
    }
    let name = src.link.name.as_deref().map(|n| format!(" ({n})")).unwrap_or_default();
    eprintln!("{ih}{name}: fetching the metadata from peers ({})", sources.join(", "));
    let give_up = Instant::now() + src.timeout;
    let mut found_open = overlay.is_some();
    let found = || async {
        match overlay {
            Some(rx) => rx.recv().await.ok(),
            None => None,
        }
    };
    let signals = rt::termination_signals();
    f.pump_announcer();
    let res = loop {
        f.pump_machine();
        if let Some(meta) = f.result.take() {
            break Ok(meta);
        }
        f.peers.dial_due(PEERS_MAX.saturating_sub(f.peers.len()));
        let now = Instant::now();
        if now >= give_up {
            break Err(format!(
                "{ih}: no peer sent the metadata within {} s ({} peers tried, {} known; looked in {})",
                src.timeout.as_secs(),
                f.peers.book().tried(),
                f.peers.book().known_len(),
                sources.join(", ")
            ));
        }
        let wake = f.clock.std_instant(f.machine_at.min(f.announce_at)).min(give_up).min(now + TICK);
        let events = f.peers.events().clone();
        // Peers that learn of us (from a tracker or the overlay) dial us;
        // accepting is cancel-safe, so losing the race loses nothing.
        let woke = futures::select_biased! {
            sig = when(src.take_signals, signals.recv()).fuse() => {
                // The session still leaves the overlay on the way out.
                break Err(format!("interrupted ({}) before the metadata came", sig.unwrap_or("signal")));
            },
            p = events.recv().fuse() => match p {
                Ok(p) => Wake::Peer(p),
                Err(_) => break Err("the metadata fetch lost its peer channel".into()),
            },
            t = tracker_rx.recv().fuse() => t.map_or(Wake::Timer, Wake::Tracker),
            found = when(found_open, found()).fuse() => found.map_or(Wake::FoundClosed, Wake::Found),
            a = listener.accept().fuse() => Wake::Accepted(a),
            _ = rt::sleep_until(wake).fuse() => Wake::Timer,
        };
        match woke {
            Wake::Peer(p) => p.for_each(|p| f.on_peer(p)),
            Wake::Tracker(t) => f.on_tracker(t),
            Wake::Found(peers) => {
                tracing::info!("overlay: {} providers of {}", peers.len(), f.info_hash);
                peers.into_iter().for_each(|a| {
                    f.peers.learn(a, Source::Overlay);
                });
            }
            Wake::Accepted(Ok((stream, addr))) => {
                // Refused (banned, or no room): the stream is dropped, so
                // the connection closes at once.
                if f.peers.len() < PEERS_MAX {
                    let _ = f.peers.accept(stream, addr);
                }
            }
            Wake::Accepted(Err(e)) => tracing::warn!("accept: {e}"),
            Wake::FoundClosed => found_open = false,
            Wake::Timer => {}
        }
        // Timers are checked after every wake: a busy peer must not
        // starve them.
        f.on_time();
        for a in lsd.map(|l| l.take_found()).unwrap_or_default() {
            f.peers.learn(a, Source::Lsd);
        }
    };
    let mut meta = res?;
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
    Ok((meta, f.peers.into_book()))
}

impl Fetcher {
    fn on_peer(&mut self, p: PeerInput) {
        if self.peers.observe(&p) {
            self.machine.handle(self.clock.now(), p.into());
        }
    }

    fn pump_machine(&mut self) {
        let mut bad = Vec::new();
        loop {
            match self.machine.poll_output() {
                fetch_machine::Output::Timeout(at) => {
                    self.machine_at = at;
                    break;
                }
                fetch_machine::Output::Transmit(t) => {
                    if self.peers.send(t.to, t.bytes).is_err() {
                        if let Some(addr) = self.peers.drop_peer(t.to, Closed::Transient) {
                            tracing::info!("peer {addr}: dropped (it does not read what we send)");
                        }
                        let closed = PeerInput::Closed { peer: t.to, reason: rumor_core::bt::conn::CloseReason::Local };
                        self.machine.handle(self.clock.now(), closed.into());
                    }
                }
                fetch_machine::Output::Disconnect { peer, reason } => {
                    if let Some(addr) = self.on_disconnect(peer, reason) {
                        bad.push(addr);
                    }
                }
                fetch_machine::Output::Event(fetch_machine::Event::Done(meta)) => {
                    self.result = Some(*meta);
                    break;
                }
            }
        }
        // Metadata that does not hash right gets every contributor dropped
        // at once, and only one of them may have lied: a peer dropped alone
        // is banned, one of a group only after a few such drops (strikes).
        let alone = bad.len() == 1;
        for addr in bad {
            let banned = if alone {
                self.peers.ban_addr(addr);
                true
            } else {
                self.peers.strike(addr)
            };
            if banned {
                tracing::warn!("peer {addr}: banned for sending bad metadata");
            }
        }
    }

    /// Closes a connection the machine dropped and books when its address
    /// may be dialed again; the address if it sent bad metadata.
    fn on_disconnect(&mut self, peer: PeerKey, reason: DisconnectReason) -> Option<SocketAddr> {
        let incoming = self.peers.is_incoming(peer);
        let how = match reason {
            // It broke the protocol: never again.
            DisconnectReason::Protocol => {
                if let Some(addr) = self.peers.ban(peer) {
                    tracing::info!("peer {addr}: dropped: {reason:?}");
                }
                return None;
            }
            DisconnectReason::Done => Closed::Finished,
            // It may get the metadata itself later (a leecher that started
            // from a magnet too), or have room: again, later and later.
            DisconnectReason::BadMetadata
            | DisconnectReason::NoMetadata
            | DisconnectReason::TooManyPeers
            | DisconnectReason::Idle => Closed::Transient,
        };
        let addr = self.peers.drop_peer(peer, how)?;
        match reason {
            DisconnectReason::Done if !incoming => self.served.push(addr),
            DisconnectReason::Done => {}
            _ => tracing::info!("peer {addr}: dropped: {reason:?}"),
        }
        (reason == DisconnectReason::BadMetadata && !incoming).then_some(addr)
    }

    fn on_time(&mut self) {
        let now = self.clock.now();
        if now >= self.machine_at {
            self.machine.handle(now, fetch_machine::Input::Timeout);
        }
        if now >= self.announce_at {
            self.announcer.handle(now, announce::Input::Timeout);
            self.pump_announcer();
        }
    }

    fn pump_announcer(&mut self) {
        let (at, found) = self.tracker_io.drain(&mut self.announcer, &self.clock);
        self.announce_at = at;
        for p in found {
            self.peers.learn(p, Source::Tracker);
        }
    }

    fn on_tracker(&mut self, t: TrackerEvent) {
        let now = self.clock.now();
        self.tracker_io.on_event(&mut self.announcer, now, t);
        self.pump_announcer();
    }
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
