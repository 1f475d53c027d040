//! The BitTorrent client: `rumor create`, `rumor get`, `rumor seed`.
//!
//! `create` hashes files into a .torrent. `get` and `seed` run one
//! [`session`]: bind the listeners, build the peer book, then (for a magnet
//! link or a bare infohash) fetch the metadata ([`magnet`]), then download
//! and seed ([`client`]). Each phase is one task owning its core machine
//! (`MetadataFetch`, then `Torrent`) and an announcer; the phases share:
//!
//! | module | what |
//! |---|---|
//! | [`peer_conn`] | the one peer layer: a connection task per peer carrying bytes for either machine, and `Peers` around the core peer book (`rumor_core::bt::peers`), handed from phase to phase |
//! | [`mse_stream`] | `--encryption`: the MSE handshake on a new connection, then RC4 halves under the peer layer |
//! | [`trackers`] | the announcer's HTTP and UDP requests |
//! | [`lsd`] | Local Service Discovery (BEP 14): the core machine on the multicast group(s), peers found handed to the peer book |
//! | [`overlay_member`] | the client as a cluster member (`--overlay`): providers in, our provider record out, a leave on exit |
//! | [`entropy`] | the one source of randomness (peer ids, seeds), from the OS once |
//! | [`progress`] | the progress bar, its rates, and a log writer that prints around it |
//! | [`control`] | the control API (`--control`) |
//! | [`storage`] | files on disk: positional reads and writes, piece hashing |
//! | [`cluster_dns`] | names through the cluster's DNS (`--dns`, `--register`) |
//!
//! Every queue between tasks is bounded; each constant says what happens
//! when it is full.

pub(crate) mod client;
mod cluster_dns;
pub(crate) mod control;
pub(crate) mod dht;
pub(crate) mod entropy;
pub(crate) mod lsd;
pub(crate) mod magnet;
pub(crate) mod mse_stream;
mod overlay_member;
mod peer_conn;
mod progress;
pub mod resume;
mod scatter;
mod session;
pub(crate) mod storage;
mod trackers;

#[allow(unused_imports)]
pub use progress::LogWriter;
pub(crate) use session::learn_given;

use clap::Args;
use rumor_core::bt::metainfo::{choose_piece_length, Limits, PieceHasher, TorrentBuilder};
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `rumor create PATH --announce URL -o FILE.torrent`.
#[derive(Args, Debug)]
pub struct CreateArgs {
    /// The file or folder to share.
    pub path: PathBuf,
    /// Tracker URL; repeat for more tiers, separate trackers of one tier
    /// with commas (as mktorrent's -a).
    #[arg(long, short = 'a')]
    pub announce: Vec<String>,
    /// Where to write the torrent.
    #[arg(long, short = 'o')]
    pub output: PathBuf,
    /// Piece size in bytes (a power of two, at least 16 KiB); by default
    /// chosen for about 1000-2000 pieces.
    #[arg(long)]
    pub piece_size: Option<u64>,
    /// Mark the torrent private (BEP 27).
    #[arg(long)]
    pub private: bool,
    /// A comment stored in the torrent.
    #[arg(long)]
    pub comment: Option<String>,
}

/// Options common to `get` and `seed`.
#[derive(Args, Debug, Clone)]
pub struct PeerArgs {
    /// TCP port to listen on for peers (0: any).
    #[arg(long, default_value_t = 6881)]
    pub port: u16,
    /// A peer to dial besides the trackers' (repeatable).
    #[arg(long = "peer")]
    pub peers: Vec<String>,
    /// Serve the control API (GET /status, /health; POST /pause, /resume)
    /// here. It has no authentication, so it must be a loopback address
    /// unless --control-public is given.
    #[arg(long)]
    pub control: Option<SocketAddr>,
    /// Allow --control on a non-loopback address.
    #[arg(long)]
    pub control_public: bool,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    pub bind: std::net::IpAddr,
    /// No progress bar (one status line every few seconds instead).
    #[arg(long)]
    pub quiet: bool,
    /// Resolve tracker host names through a rumor node's DNS first
    /// (HOST:PORT of its DNS, e.g. 127.0.0.1:8053).
    #[arg(long = "dns")]
    pub dns: Option<SocketAddr>,
    /// Register this name -> this host's address in the cluster's DNS,
    /// through the node at --api, and keep it fresh while running.
    #[arg(long)]
    pub register: Option<String>,
    /// The node's API, for --register.
    #[arg(long, env = "RUMOR_API", default_value = "127.0.0.1:6969")]
    pub api: String,
    /// Bearer token of the node's API, for --register.
    #[arg(long, env = "RUMOR_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// Join the cluster's gossip at these HOST:PORT (comma separated or
    /// repeated): announce this client as a provider of the torrent in the
    /// overlay and find the other providers there, with no tracker.
    #[arg(long, value_delimiter = ',')]
    pub overlay: Vec<String>,
    /// Cluster key(s) for --overlay, 64 hex digits each.
    #[arg(long, env = "RUMOR_CLUSTER_KEY", value_delimiter = ',', hide_env_values = true)]
    pub cluster_key: Vec<String>,
    /// Where to listen for gossip with --overlay.
    #[arg(long, default_value = "0.0.0.0:0")]
    pub overlay_listen: SocketAddr,
    /// No Local Service Discovery (BEP 14): do not announce on, nor listen
    /// to, the local network's multicast group for peers of this torrent
    /// (never used for a private torrent).
    #[arg(long, env = "RUMOR_NO_LSD", value_parser = clap::builder::BoolishValueParser::new())]
    pub no_lsd: bool,
    /// Message Stream Encryption: prefer (accept plain and encrypted, dial
    /// encrypted and fall back to plain), require (RC4 only, both ways),
    /// off (plain only).
    #[arg(long, value_enum, default_value_t = mse_stream::Encryption::Prefer)]
    pub encryption: mse_stream::Encryption,
    /// UDP port of the Mainline DHT node (BEP 5); by default the same
    /// number as --port.
    #[arg(long)]
    pub dht_port: Option<u16>,
    /// No DHT: find peers through trackers, --peer and --overlay only.
    /// (A private torrent never uses the DHT.)
    #[arg(long)]
    pub no_dht: bool,
    /// A DHT node to join through, HOST:PORT (repeatable); by default the
    /// public routers router.bittorrent.com, dht.transmissionbt.com and
    /// router.utorrent.com, port 6881.
    #[arg(long = "dht-bootstrap")]
    pub dht_bootstrap: Vec<String>,
    /// Write downloaded data through the page cache. By default whole
    /// pages are written with O_DIRECT where the file system allows it:
    /// the download hashes each piece in memory and never reads it back,
    /// so copying it into the page cache only costs CPU time (most of a
    /// download's system time) and memory that other data could use.
    #[arg(long, env = "RUMOR_BUFFERED_WRITES", value_parser = clap::builder::BoolishValueParser::new())]
    pub buffered_writes: bool,
}

/// `rumor get FILE.torrent|MAGNET|INFOHASH -o DIR`.
#[derive(Args, Debug)]
pub struct GetArgs {
    /// The torrent: a .torrent file, a magnet link (`magnet:?xt=urn:btih:...`)
    /// or a bare infohash (40 hex digits). For the last two the metadata is
    /// fetched from peers first (the link's x.pe and --peer, its tr= and
    /// --tracker trackers, the --overlay).
    pub torrent: PathBuf,
    /// A tracker to ask for peers of a magnet link or infohash, besides the
    /// link's (repeatable), e.g. a node's http://127.0.0.1:6969/announce.
    #[arg(long = "tracker")]
    pub trackers: Vec<String>,
    /// With a magnet link or infohash: give up if no peer has sent the
    /// metadata within this many seconds.
    #[arg(long, default_value_t = 300)]
    pub metadata_timeout: u64,
    /// With a magnet link or infohash: write the fetched torrent to this
    /// file (for `rumor seed` later, or any other client).
    #[arg(long)]
    pub save_torrent: Option<PathBuf>,
    /// Directory to download into (the torrent's name is created in it).
    #[arg(long, short = 'o', default_value = ".")]
    pub output: PathBuf,
    /// Exit once complete instead of seeding.
    #[arg(long)]
    pub no_seed: bool,
    /// Peer options.
    #[command(flatten)]
    pub net: PeerArgs,
}

/// `rumor seed FILE.torrent DIR`.
#[derive(Args, Debug)]
pub struct SeedArgs {
    /// The torrent.
    pub torrent: PathBuf,
    /// Directory holding the torrent's name (as `get -o` would have made it).
    pub dir: PathBuf,
    /// Peer options.
    #[command(flatten)]
    pub net: PeerArgs,
}

/// Runs `rumor create`.
pub fn create(args: CreateArgs) -> ExitCode {
    match create_torrent(&args) {
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rumor create: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Lists regular files under `dir` as (relative components, path), sorted
/// by components so the same tree always gives the same torrent.
fn walk(dir: &Path, prefix: &mut Vec<String>, out: &mut Vec<(Vec<String>, PathBuf)>) -> Result<(), String> {
    let rd = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in rd {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        let name = entry.file_name().into_string().map_err(|n| format!("{n:?}: file name is not UTF-8"))?;
        let ft = entry.file_type().map_err(|e| format!("{}: {e}", entry.path().display()))?;
        prefix.push(name);
        if ft.is_dir() {
            walk(&entry.path(), prefix, out)?;
        } else if ft.is_file() {
            out.push((prefix.clone(), entry.path()));
        }
        prefix.pop();
    }
    Ok(())
}

fn create_torrent(args: &CreateArgs) -> Result<String, String> {
    let path = &args.path;
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let name = path
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .ok_or_else(|| format!("{}: has no name", path.display()))?;
    let mut files = Vec::new();
    if meta.is_dir() {
        walk(path, &mut Vec::new(), &mut files)?;
        files.sort();
        if files.is_empty() {
            return Err(format!("{}: no files", path.display()));
        }
    } else {
        files.push((vec![name.clone()], path.clone()));
    }
    let mut lengths = Vec::new();
    for (_, p) in &files {
        lengths.push(std::fs::metadata(p).map_err(|e| format!("{}: {e}", p.display()))?.len());
    }
    let total: u64 = lengths.iter().sum();
    if total == 0 {
        return Err("nothing to share: all files are empty".into());
    }
    let piece_length = match args.piece_size {
        Some(p) if p < 16 * 1024 || !p.is_power_of_two() => {
            return Err(format!("--piece-size {p}: must be a power of two of at least 16384"))
        }
        Some(p) => p,
        None => choose_piece_length(total),
    };
    let mut hasher = PieceHasher::new(piece_length);
    let mut buf = vec![0u8; 1 << 20];
    for ((_, p), len) in files.iter().zip(&lengths) {
        let mut f = std::fs::File::open(p).map_err(|e| format!("{}: {e}", p.display()))?;
        let mut left = *len;
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            let n = f.read(&mut buf[..want]).map_err(|e| format!("{e}"))?;
            if n == 0 {
                return Err(format!("{}: changed while reading", p.display()));
            }
            hasher.update(&buf[..n]);
            left -= n as u64;
        }
    }
    let pieces = hasher.finish();
    let mut b = if meta.is_dir() {
        let list = files.into_iter().map(|(c, _)| c).zip(lengths).collect();
        TorrentBuilder::multi(&name, list, piece_length, pieces)
    } else {
        TorrentBuilder::single(&name, total, piece_length, pieces)
    };
    b.announce_tiers = args
        .announce
        .iter()
        .map(|t| t.split(',').map(str::trim).filter(|u| !u.is_empty()).map(String::from).collect::<Vec<_>>())
        .filter(|t| !t.is_empty())
        .collect();
    b.private = args.private;
    b.comment = args.comment.clone();
    b.created_by = Some(format!("rumor {}", env!("CARGO_PKG_VERSION")));
    let limits = Limits { total_length_max: u64::MAX / 2, files_max: 1 << 20, ..Limits::default() };
    let (bytes, m) = b.build(&limits).map_err(|e| format!("cannot build the torrent: {e}"))?;
    std::fs::write(&args.output, bytes).map_err(|e| format!("{}: {e}", args.output.display()))?;
    eprintln!(
        "{}: {} files, {} bytes, {} pieces of {} bytes",
        args.output.display(),
        m.files.len(),
        m.total_length,
        m.pieces.len(),
        m.piece_length
    );
    Ok(m.info_hash.to_hex())
}

/// Runs `rumor get`.
pub fn get(args: GetArgs) -> ExitCode {
    let link = match args.torrent.to_str().map(magnet::MagnetSource::parse_link) {
        Some(Ok(link)) => link,
        Some(Err(e)) => {
            eprintln!("rumor get: {e}");
            return ExitCode::FAILURE;
        }
        None => None,
    };
    let magnet = link.map(|link| magnet::MagnetSource {
        link,
        trackers: args.trackers.clone(),
        timeout: std::time::Duration::from_secs(args.metadata_timeout.max(1)),
        save_torrent: args.save_torrent.clone(),
        take_signals: true,
    });
    if magnet.is_none() && args.save_torrent.is_some() {
        eprintln!("rumor get: --save-torrent is for a magnet link or an infohash; this is already a .torrent");
        return ExitCode::FAILURE;
    }
    let opts = session::Options {
        torrent: args.torrent,
        dir: args.output,
        net: args.net,
        exit_when_complete: args.no_seed,
        seed_command: false,
        magnet,
    };
    session::run(opts)
}

/// Runs `rumor seed`.
pub fn seed(args: SeedArgs) -> ExitCode {
    let opts = session::Options {
        torrent: args.torrent,
        dir: args.dir,
        net: args.net,
        exit_when_complete: false,
        seed_command: true,
        magnet: None,
    };
    session::run(opts)
}
