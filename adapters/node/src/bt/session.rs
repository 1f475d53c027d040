//! `rumor get` and `rumor seed` from start to end, as one sequence:
//!
//! 1. check the options, bind the peer listener and the control API (so a
//!    port in use fails before anything is fetched or created on disk);
//! 2. a peer book with the given peers (`--peer`, a magnet's `x.pe`);
//! 3. with `--overlay`, one cluster member for the whole session (it leaves
//!    the cluster when the session ends, so it is listed as `left`);
//! 4. the torrent: read the .torrent file, or for a magnet link or a bare
//!    infohash fetch the metadata from peers ([`super::magnet::fetch`]);
//! 5. download, then seed ([`super::client::download`]), with the same
//!    book, listener and member: peers learned while fetching are dialed
//!    at once.
//!
//! The phases know nothing of each other; this file is the only one that
//! knows their order.

use super::client::{self, Download, Handover};
use super::dht;
use super::magnet::{self, MagnetSource};
use super::overlay_member::{self, MemberArgs};
use super::PeerArgs;
use crate::clock::Clock;
use crate::rt;
use rumor_core::bt::peers::{PeerBook, PeerBookConfig, Source};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Provider lists from the overlay member waiting for the session; when
/// full, the member keeps them for its next scan.
const FOUND_MAX: usize = 16;

/// What `get` or `seed` asked for.
pub struct Options {
    /// The .torrent file (unused with `magnet`).
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
    /// peers first.
    pub magnet: Option<MagnetSource>,
}

/// The torrent as given: its metadata, or where to fetch it.
enum What {
    Magnet(MagnetSource),
    File(rumor_core::bt::metainfo::Metainfo),
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

async fn start(mut opts: Options) -> Result<(), String> {
    let control = match opts.net.control {
        Some(c) if !c.ip().is_loopback() && !opts.net.control_public => {
            return Err(format!("--control {c}: not a loopback address; add --control-public to allow it"));
        }
        Some(c) => Some(rt::bind_tcp(c).map_err(|e| format!("cannot serve the control API on {c}: {e}"))?),
        None => None,
    };
    // The listener first: a metadata fetch announces its port to trackers
    // and the overlay, and takes connections on it, before the download.
    let listener = rt::bind_tcp(SocketAddr::new(opts.net.bind, opts.net.port))
        .map_err(|e| format!("cannot listen on port {}: {e}", opts.net.port))?;
    // A .torrent is read now: its infohash is what the overlay member
    // announces, and a bad file should fail before we resolve or join anything.
    let what = match opts.magnet.take() {
        Some(m) => What::Magnet(m),
        None => What::File(client::load_torrent(&opts.torrent)?),
    };
    let clock = Clock::new();
    let config = PeerBookConfig { connections_max: client::PEERS_MAX, ..PeerBookConfig::default() };
    let mut book = PeerBook::new(config, super::entropy::seed());
    let link_peers = match &what {
        What::Magnet(m) => m.link.peers.clone(),
        What::File(_) => Vec::new(),
    };
    learn_given(&mut book, &link_peers, &opts.net).await;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let info_hash = match &what {
        What::Magnet(m) => m.link.info_hash,
        What::File(meta) => meta.info_hash,
    };
    let complete = Arc::new(AtomicBool::new(false));
    // Providers from the overlay member and peers from the DHT node reach
    // the session through one channel.
    let private = matches!(&what, What::File(meta) if meta.private);
    let want_dht = !opts.net.no_dht && !private;
    let (found_tx, found) = if opts.net.overlay.is_empty() && !want_dht {
        (None, None)
    } else {
        let (tx, rx) = async_channel::bounded(FOUND_MAX);
        (Some(tx), Some(rx))
    };
    let member = match (&found_tx, opts.net.overlay.is_empty()) {
        (Some(found_tx), false) => {
            let keys = crate::keyring(&opts.net.cluster_key, None)?;
            let args = MemberArgs { join: opts.net.overlay.clone(), keys, listen: opts.net.overlay_listen };
            Some(overlay_member::spawn(args, info_hash, port, complete.clone(), found_tx.clone()))
        }
        _ => None,
    };
    let mut dht = match (&found_tx, want_dht) {
        (Some(found_tx), true) => start_dht(&opts, port, info_hash, complete.clone(), found_tx.clone()),
        _ => None,
    };
    // The channel closes once every finder has stopped.
    drop(found_tx);
    // Local Service Discovery from the start for a magnet link (whether
    // its torrent is private is known only with the metadata: the download
    // drops it then); a .torrent's download starts its own once its data
    // is checked.
    let lsd = match &what {
        What::Magnet(_) if !opts.net.no_lsd => {
            super::lsd::start(clock, info_hash, SocketAddr::new(opts.net.bind, port))
        }
        _ => None,
    };
    let phases = async {
        let meta = match what {
            What::Magnet(m) => {
                let (meta, b) =
                    magnet::fetch(m, &opts.net, &listener, clock, book, found.as_ref(), lsd.as_ref()).await?;
                book = b;
                meta
            }
            What::File(meta) => meta,
        };
        if meta.private {
            // BEP 27: a private torrent's peers come from its trackers only.
            if let Some(d) = dht.take() {
                eprintln!("rumor: {}: private torrent, DHT off", meta.name);
                d.stop(false).await;
            }
        }
        let download = Download {
            torrent: opts.torrent,
            dir: opts.dir,
            net: opts.net,
            exit_when_complete: opts.exit_when_complete,
            seed_command: opts.seed_command,
            embedded: None,
        };
        let dht_pinger = dht.as_ref().map(|d| d.pinger());
        let handover = Handover { clock, book, control, found, complete, lsd, dht: dht_pinger };
        client::download(download, meta, listener, handover).await
    };
    let result = phases.await;
    if let Some(m) = member {
        m.leave().await;
    }
    if let Some(d) = dht {
        d.stop(result.is_ok()).await;
    }
    result
}

/// Binds the DHT's UDP socket (by default on the peer port's number) and
/// starts the node; a port that cannot be bound turns the DHT off with a
/// message, not the session.
fn start_dht(
    opts: &Options,
    port: u16,
    info_hash: rumor_core::bt::metainfo::InfoHash,
    complete: Arc<AtomicBool>,
    found: async_channel::Sender<Vec<SocketAddr>>,
) -> Option<dht::DhtNode> {
    let dht_port = opts.net.dht_port.unwrap_or(port);
    // Bound here rather than with rt::bind_udp so that the port actually
    // bound (`--dht-port 0` picks one) is known for our `port` messages.
    let bound = std::net::UdpSocket::bind(SocketAddr::new(opts.net.bind, dht_port)).and_then(|s| {
        s.set_nonblocking(true)?;
        let local = s.local_addr()?.port();
        Ok((rt::runtime().udp_socket(s)?, local))
    });
    let (socket, udp_port) = match bound {
        Ok(b) => b,
        Err(e) => {
            eprintln!("rumor: DHT off: cannot bind UDP port {dht_port}: {e}");
            return None;
        }
    };
    let bootstrap = if opts.net.dht_bootstrap.is_empty() {
        dht::DEFAULT_BOOTSTRAP.iter().map(|s| s.to_string()).collect()
    } else {
        opts.net.dht_bootstrap.clone()
    };
    let args = dht::DhtArgs {
        socket,
        udp_port,
        bootstrap,
        state: dht::state_path(&opts.dir),
        info_hash,
        peer_port: port,
        complete,
    };
    Some(dht::spawn(args, found))
}

/// Resolves the given peers (a magnet's `x.pe`, then `--peer`) into the
/// book; one that does not resolve is reported and skipped.
pub(crate) async fn learn_given(book: &mut PeerBook, link_peers: &[String], net: &PeerArgs) {
    for p in link_peers.iter().chain(&net.peers) {
        let (dns, netloc) = (net.dns, p.clone());
        let found = rt::spawn_blocking(move || super::cluster_dns::resolve_netloc(dns, &netloc))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        match found {
            Ok(addrs) => {
                for a in addrs {
                    book.learn(a, Source::Given);
                }
            }
            Err(e) => eprintln!("rumor: peer {p}: {e}"),
        }
    }
}
