//! The command line shared by every adapter's binary: `node`, `dns`,
//! `create`, `get`, `seed`.

use crate::{api, bt, clock, dns_cli, dns_udp, gossip_net, node, persist, rt, torrent_cli};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use rumor_core::dns::{Authority, AuthorityConfig, Name, Zone};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "rumor", version, about = "A gossip-replicated DNS and BitTorrent node")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a cluster node: DNS on UDP and TCP, the HTTP API.
    Node(NodeArgs),
    /// Add, remove, list and query records through a node.
    #[command(subcommand)]
    Dns(dns_cli::DnsCmd),
    /// Make a .torrent from a file or folder.
    Create(bt::CreateArgs),
    /// Download a torrent, verify it, then seed it.
    Get(bt::GetArgs),
    /// Seed data that is already on disk.
    Seed(bt::SeedArgs),
    /// Add, list, pause, resume and remove the torrents of a node's session.
    #[command(subcommand)]
    Torrent(torrent_cli::TorrentCmd),
}

#[derive(Args, Debug)]
struct NodeArgs {
    /// Where DNS listens (UDP and TCP).
    #[arg(long, env = "RUMOR_DNS", default_value = "0.0.0.0:8053")]
    dns: SocketAddr,
    /// Where the HTTP API listens. Without --api-token it must be a
    /// loopback address unless --api-public is given.
    #[arg(long, env = "RUMOR_API", default_value = "127.0.0.1:6969")]
    api: SocketAddr,
    /// Where gossip listens (TCP).
    #[arg(long, env = "RUMOR_GOSSIP", default_value = "0.0.0.0:5300")]
    gossip: SocketAddr,
    /// The gossip address other nodes reach this one at (default: --gossip,
    /// or this host's address when --gossip is a wildcard).
    #[arg(long, env = "RUMOR_ADVERTISE")]
    advertise: Option<String>,
    /// Nodes to join, host:port (repeatable or comma separated); a host may
    /// be a DNS name with many addresses, as Docker's tasks.<service>.
    #[arg(long, env = "RUMOR_JOIN", value_delimiter = ',')]
    join: Vec<String>,
    /// Cluster key(s), 64 hex digits each, comma separated: the first seals
    /// what this node sends, all open what it receives (rotation without
    /// downtime). Nodes with different keys never exchange state.
    #[arg(long, env = "RUMOR_CLUSTER_KEY", value_delimiter = ',', hide_env_values = true)]
    cluster_key: Vec<String>,
    /// Read the cluster key(s) from this file (a Docker secret).
    #[arg(long, env = "RUMOR_CLUSTER_KEY_FILE")]
    cluster_key_file: Option<PathBuf>,
    /// Seal gossip with the public development key when no key is given
    /// (anyone who can reach the gossip port can then write records):
    /// only for a throwaway cluster. Without it, a node given no key
    /// makes one in its data directory (cluster.key).
    #[arg(long, env = "RUMOR_INSECURE_DEV_CLUSTER")]
    insecure_dev_cluster: bool,
    /// Directory for the node's database.
    #[arg(long, env = "RUMOR_DATA", default_value = "rumor-data")]
    data: PathBuf,
    /// Keep records in memory only.
    #[arg(long, env = "RUMOR_EPHEMERAL")]
    ephemeral: bool,
    /// Start on a damaged database: keep every entry that verifies (the
    /// damaged file stays beside the new one) and fetch the rest from peers.
    #[arg(long)]
    repair: bool,
    /// Zones this node is the authority for (repeatable or comma
    /// separated). Without any, every name the cluster holds is answered.
    #[arg(long = "zone", env = "RUMOR_ZONES", value_delimiter = ',')]
    zones: Vec<String>,
    /// Resolver that gets queries for names outside --zone.
    #[arg(long, env = "RUMOR_UPSTREAM")]
    upstream: Option<SocketAddr>,
    /// Bearer token required for API writes, at least 16 characters (e.g.
    /// `openssl rand -hex 16`). A node with a token needs a cluster key.
    #[arg(long, env = "RUMOR_API_TOKEN", hide_env_values = true)]
    api_token: Option<String>,
    /// Allow an API without a token on a non-loopback address.
    #[arg(long, env = "RUMOR_API_PUBLIC")]
    api_public: bool,
    /// TTL of negative answers, seconds.
    #[arg(long, env = "RUMOR_NEGATIVE_TTL", default_value_t = 30)]
    negative_ttl: u32,
    /// Seconds between a peer's announces, as the tracker (`/announce`)
    /// tells them; a provider not heard from in twice this is dropped.
    #[arg(long, env = "RUMOR_TRACKER_INTERVAL", default_value_t = 120)]
    tracker_interval: u32,
    /// HTTP connections served at once (when full, the one waiting longest
    /// on its client is closed); hidden, for tests.
    #[arg(long, hide = true, default_value_t = crate::http::CONNECTIONS_MAX)]
    api_connections_max: usize,
    /// Seconds a request's body may take to arrive after its headers (408
    /// past it); what a slow or stalled upload may hold of the node.
    #[arg(long, env = "RUMOR_API_BODY_TIMEOUT", default_value_t = crate::http::BODY_TIMEOUT.as_secs())]
    api_body_timeout: u64,
    /// Token the tracker requires: announces must go to
    /// `/announce?token=TOKEN` (without it, anyone who reaches the API may
    /// announce, within the tracker's rate and provider bounds).
    #[arg(long, env = "RUMOR_TRACKER_TOKEN", hide_env_values = true)]
    tracker_token: Option<String>,
    /// Announces per second the tracker takes from one address (IPv4
    /// address or IPv6 /64), in bursts of up to 20 times that; past it
    /// clients are told `announce rate limit`.
    #[arg(long, env = "RUMOR_TRACKER_RATE", default_value_t = 10)]
    tracker_rate: u32,
    /// Hold a BitTorrent session of many torrents, driven through the API
    /// (`/torrents`), downloading into this directory (nothing is ever
    /// written outside it).
    #[arg(long, env = "RUMOR_DOWNLOADS")]
    downloads: Option<PathBuf>,
    /// With --downloads: a .torrent file dropped in this directory is
    /// added, then renamed NAME.torrent.added (or .invalid).
    #[arg(long, env = "RUMOR_WATCH")]
    watch: Option<PathBuf>,
    /// With --downloads: the session's download limit, bytes per second
    /// (suffixes k, M, G: powers of 1024).
    #[arg(long, value_parser = parse_rate)]
    max_download_rate: Option<u64>,
    /// With --downloads: the session's upload limit, bytes per second
    /// (suffixes k, M, G).
    #[arg(long, value_parser = parse_rate)]
    max_upload_rate: Option<u64>,
    /// With --downloads: torrents downloading at once; the others wait in
    /// the order they were added.
    #[arg(long, default_value_t = 3)]
    max_active_downloads: usize,
    /// With --downloads: peer connections of all torrents together (each
    /// torrent also holds at most 50). When they are all taken, a newcomer
    /// still gets in if its torrent has a peer of no use to push out.
    #[arg(long, default_value_t = crate::torrents::PEERS_MAX, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=100_000))]
    max_peers: usize,
    /// With --downloads: the TCP port every torrent takes peers on (0: any).
    #[arg(long, env = "RUMOR_BT_PORT", default_value_t = 6881)]
    bt_port: u16,
    /// With --downloads: the UDP port of the session's Mainline DHT node
    /// (BEP 5), shared by every torrent (0: any).
    #[arg(long, default_value_t = 6881)]
    dht_port: u16,
    /// With --downloads: no DHT (peers from trackers, the overlay and LSD
    /// only). A private torrent never uses it.
    #[arg(long, env = "RUMOR_NO_DHT", value_parser = clap::builder::BoolishValueParser::new())]
    no_dht: bool,
    /// With --downloads: a DHT node to join through, HOST:PORT
    /// (repeatable); by default the public routers.
    #[arg(long = "dht-bootstrap")]
    dht_bootstrap: Vec<String>,
    /// With --downloads: no Local Service Discovery (BEP 14) on the local
    /// network's multicast group. A private torrent never uses it.
    #[arg(long, env = "RUMOR_NO_LSD", value_parser = clap::builder::BoolishValueParser::new())]
    no_lsd: bool,
}

/// A rate in bytes per second: `4194304`, `4M`, `512k`, `1G`.
fn parse_rate(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 1u64 << 10),
        Some((i, 'm' | 'M')) => (&t[..i], 1 << 20),
        Some((i, 'g' | 'G')) => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    let n: f64 = num.trim().parse().map_err(|_| format!("{text:?}: a rate is bytes per second, e.g. 4194304 or 4M"))?;
    if !(n.is_finite() && n >= 0.0) {
        return Err(format!("{text:?}: a rate is a positive number"));
    }
    Ok((n * mult as f64) as u64)
}

/// Parses the command line and runs the command on `runtime`; `program`
/// is the binary's name, as help and errors show it.
pub fn main(program: &'static str, runtime: Box<dyn rt::Runtime>) -> ExitCode {
    let matches = Cli::command().name(program).bin_name(program).get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    if let Err(e) = check_api_tokens(&matches) {
        eprintln!("{program}: {e}");
        return ExitCode::from(2);
    }
    init_logging();
    let runtime_name = runtime.name();
    rt::install(runtime);
    match cli.command {
        Cmd::Node(args) => {
            if let Err(e) = check_node_key(&args) {
                eprintln!("{program} node: {e}");
                return ExitCode::from(2);
            }
            tracing::debug!(runtime = runtime_name, "starting");
            match rt::block_on(run_node(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Dns(cmd) => dns_cli::run(cmd),
        Cmd::Create(args) => bt::create(args),
        Cmd::Get(mut args) => match get_target(&args.torrent) {
            Ok(link) => {
                if let Some(link) = link {
                    args.torrent = link.into();
                }
                bt::get(args)
            }
            Err(e) => {
                eprintln!("rumor get: {e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Seed(args) => bt::seed(args),
        Cmd::Torrent(cmd) => torrent_cli::run(cmd),
    }
}

/// Reads `rumor get`'s argument where it is no file: something shaped like
/// an infohash (letters and digits, 24 to 64 of them) that is not a valid
/// one is a bad infohash, said so, rather than a file that does not exist;
/// a bare base32 infohash (32 characters) becomes a magnet link, which the
/// download understands. `Ok(None)`: leave the argument as it is (a file,
/// a magnet link, 40 hex digits).
fn get_target(arg: &std::path::Path) -> Result<Option<String>, String> {
    let Some(text) = arg.to_str() else { return Ok(None) };
    let n = text.len();
    if arg.exists() || !(24..=64).contains(&n) || !text.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Ok(None);
    }
    let hex = text.bytes().all(|b| b.is_ascii_hexdigit());
    let base32 = text.bytes().all(|b| matches!(b.to_ascii_uppercase(), b'A'..=b'Z' | b'2'..=b'7'));
    let why = match n {
        40 if hex => return Ok(None),
        32 if base32 => return Ok(Some(format!("magnet:?xt=urn:btih:{text}"))),
        40 => "40 characters, but not all are hex digits".to_string(),
        32 => "32 characters, but not all are base32 (A-Z, 2-7)".to_string(),
        _ => format!("{n} characters long"),
    };
    Err(format!(
        "{text}: bad infohash ({why}); an infohash is 40 hex digits or 32 base32 characters, \
         and no file of this name exists"
    ))
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("RUMOR_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Around the progress bar of `get`/`seed`, never into it.
        .with_writer(crate::bt::LogWriter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Fewest characters an API token may have: a shorter one is guessed, and
/// an empty one would turn authentication off.
const API_TOKEN_MIN_CHARS: usize = 16;

/// Refuses an empty or short `--api-token` (or `RUMOR_API_TOKEN`) in any
/// command that takes one (`node`, `dns ...`, `get`/`seed --register`).
fn check_api_tokens(matches: &clap::ArgMatches) -> Result<(), String> {
    if let Ok(Some(token)) = matches.try_get_one::<String>("api_token") {
        check_api_token(token)?;
    }
    match matches.subcommand() {
        Some((_, sub)) => check_api_tokens(sub),
        None => Ok(()),
    }
}

fn check_api_token(token: &str) -> Result<(), String> {
    let n = token.chars().count();
    if token.trim().is_empty() {
        return Err(format!(
            "--api-token (or RUMOR_API_TOKEN) is empty, and an empty token is no token: give one of at least \
             {API_TOKEN_MIN_CHARS} characters (e.g. $(openssl rand -hex 16)), or leave both unset"
        ));
    }
    if n < API_TOKEN_MIN_CHARS {
        return Err(format!(
            "--api-token (or RUMOR_API_TOKEN) is {n} characters long; a token needs at least \
             {API_TOKEN_MIN_CHARS} (e.g. $(openssl rand -hex 16))"
        ));
    }
    Ok(())
}

/// Refuses a node that protects its API with a token but leaves its gossip
/// open (without a cluster key of its own, whoever joins its gossip writes
/// the records the token guards), and a node that joins others with no
/// key (it would make one of its own, which no one else has).
fn check_node_key(args: &NodeArgs) -> Result<(), String> {
    let keyless = args.cluster_key.iter().all(|k| k.trim().is_empty()) && args.cluster_key_file.is_none();
    if args.api_token.is_some() && keyless && !args.insecure_dev_cluster {
        return Err(format!(
            "--api-token needs a cluster key too: without one, a process that joins this node's gossip ({}) \
             could write the records the token protects. Give --cluster-key HEX (e.g. $(openssl rand -hex 32)) \
             or --cluster-key-file PATH, the same on every node; or --insecure-dev-cluster for a throwaway cluster",
            args.gossip
        ));
    }
    let own_key = !args.ephemeral && args.data.join(KEY_FILE).exists();
    if !args.join.is_empty() && keyless && !own_key && !args.insecure_dev_cluster {
        return Err(format!(
            "--join needs the cluster's key: give --cluster-key HEX or --cluster-key-file PATH (a node started \
             without one keeps the key it made in its data directory's {KEY_FILE}); a key of this node's own \
             would never open what the others send"
        ));
    }
    Ok(())
}

/// The public key `--insecure-dev-cluster` seals gossip with: anyone can
/// read this source, so it keeps nothing out.
const DEV_CLUSTER_KEY: [u8; 32] = *b"rumor-insecure-development-key!!";

/// The file in a node's data directory that holds the cluster key the node
/// made when it was given none.
const KEY_FILE: &str = "cluster.key";

/// The cluster keyring from `--cluster-key` values and a key file, for a
/// client joining a cluster (`--overlay`): a key is required.
pub(crate) fn keyring(
    cluster_key: &[String],
    cluster_key_file: Option<&std::path::Path>,
) -> Result<rumor_core::gossip::Keyring, String> {
    let keys = parse_keys(cluster_key, cluster_key_file)?;
    if keys.is_empty() {
        return Err(format!(
            "no cluster key: give --cluster-key HEX, the key of the cluster's nodes (a node given none \
             made one at start, in its data directory's {KEY_FILE})"
        ));
    }
    ring_of(&keys)
}

/// The keys given as `--cluster-key` values and in a key file.
fn parse_keys(cluster_key: &[String], cluster_key_file: Option<&std::path::Path>) -> Result<Vec<[u8; 32]>, String> {
    let mut hexes: Vec<String> = cluster_key.iter().map(|k| k.trim().to_string()).filter(|k| !k.is_empty()).collect();
    if let Some(path) = cluster_key_file {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        hexes.extend(text.split([',', '\n', ' ']).map(str::trim).filter(|k| !k.is_empty()).map(str::to_string));
    }
    let mut keys = Vec::new();
    for h in &hexes {
        let bytes = hex::decode(h).map_err(|_| "a cluster key must be 64 hex digits".to_string())?;
        let key: [u8; 32] =
            bytes.try_into().map_err(|_| "a cluster key must be 64 hex digits (32 bytes)".to_string())?;
        keys.push(key);
    }
    Ok(keys)
}

/// A keyring: the first key seals, all open.
fn ring_of(keys: &[[u8; 32]]) -> Result<rumor_core::gossip::Keyring, String> {
    // Every node derives the same one-byte id from a key, so a rotated-in
    // key is recognised cluster-wide.
    let id_of = |k: &[u8; 32]| k.iter().fold(0u8, |a, b| a.rotate_left(1) ^ b);
    let mut ring = rumor_core::gossip::Keyring::new(id_of(&keys[0]), keys[0]);
    for k in &keys[1..] {
        ring.add(id_of(k), *k).map_err(|e| format!("cluster keys: {e:?} (two keys share an id; pick another)"))?;
    }
    Ok(ring)
}

/// A node's keyring: the keys it is given; else the development key if
/// told `--insecure-dev-cluster`; else a key of its own, made at its first
/// start into `DATA/cluster.key` and reused after, so no two clusters
/// share a key by default.
fn node_keyring(args: &NodeArgs) -> Result<rumor_core::gossip::Keyring, String> {
    let keys = parse_keys(&args.cluster_key, args.cluster_key_file.as_deref())?;
    if !keys.is_empty() {
        return ring_of(&keys);
    }
    if args.insecure_dev_cluster {
        tracing::warn!(
            "--insecure-dev-cluster: gossip is sealed with the public development key, so anyone who reaches \
             the gossip port can write records; give --cluster-key for a real cluster"
        );
        return ring_of(&[DEV_CLUSTER_KEY]);
    }
    if args.ephemeral {
        tracing::warn!(
            "no --cluster-key with --ephemeral: gossip is sealed with a random key no other node knows, so this \
             node stays alone; give every node the same --cluster-key to form a cluster"
        );
        return ring_of(&[random_key()?]);
    }
    let path = args.data.join(KEY_FILE);
    let key = own_key(&path)?;
    tracing::info!(
        "no --cluster-key: gossip is sealed with this node's own key, in {path}; nodes that join this one need it: \
         --cluster-key-file (a copy of the file) or --cluster-key $(cat {path})",
        path = path.display()
    );
    ring_of(&[key])
}

fn random_key() -> Result<[u8; 32], String> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| format!("cannot draw a cluster key: {e}"))?;
    Ok(key)
}

/// The key in `path`, made (random, readable by this user only) if the
/// file does not exist yet.
fn own_key(path: &std::path::Path) -> Result<[u8; 32], String> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let key = hex::decode(text.trim())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| format!("{} does not hold a cluster key (64 hex digits)", path.display()))?;
            if let Ok(meta) = std::fs::metadata(path) {
                if meta.permissions().mode() & 0o077 != 0 {
                    tracing::warn!("{} is readable by other users: chmod 600 it", path.display());
                }
            }
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            }
            let key = random_key()?;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
            file.write_all(format!("{}\n", hex::encode(key)).as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            Ok(key)
        }
        Err(e) => Err(format!("cannot read the cluster key {}: {e}", path.display())),
    }
}

/// Raises this process's open-file limit to its hard limit (at most
/// 65,536): at the usual soft 1,024, slow clients of the API and DNS over
/// TCP would run the node out of descriptors before their own limits bite.
fn raise_open_files_limit() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        let want = lim.rlim_max.min(65_536);
        if lim.rlim_cur < want {
            lim.rlim_cur = want;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                tracing::debug!("cannot raise the open-files limit");
            }
        }
    }
}

fn advertise_addr(args: &NodeArgs) -> Result<String, String> {
    if let Some(a) = &args.advertise {
        return Ok(a.clone());
    }
    if !args.gossip.ip().is_unspecified() {
        return Ok(args.gossip.to_string());
    }
    // A wildcard bind: advertise this host's own address (what a container
    // on an overlay network has), found through its hostname. A host whose
    // name only maps to loopback is a single machine: loopback it is.
    let port = args.gossip.port();
    let found = hostname().and_then(|host| {
        std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))
            .ok()?
            .find(|a| a.is_ipv4() && !a.ip().is_loopback())
    });
    Ok(match found {
        Some(a) => a.to_string(),
        None => {
            tracing::warn!(
                "this host's name resolves to no address but loopback: advertising 127.0.0.1:{port}; \
                 give --advertise for a cluster across machines"
            );
            format!("127.0.0.1:{port}")
        }
    })
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

async fn run_node(args: NodeArgs) -> Result<(), String> {
    let clock = clock::Clock::new();
    raise_open_files_limit();
    if args.tracker_token.as_deref().is_some_and(|t| t.trim().len() < 8) {
        return Err("--tracker-token must be at least 8 characters (an empty token would let anyone announce)".into());
    }
    if args.api_token.is_none() && !args.api.ip().is_loopback() && !args.api_public {
        return Err(format!(
            "refusing to serve the API on {} without --api-token; give a token, a loopback address, or --api-public",
            args.api
        ));
    }
    if args.api_token.is_none() {
        tracing::warn!("the API takes writes without a token (set --api-token to require one)");
    }
    let mut zones = Vec::new();
    for z in args.zones.iter().filter(|z| !z.trim().is_empty()) {
        let apex = Name::from_ascii(z.trim()).map_err(|e| format!("bad --zone {z:?}: {e}"))?;
        zones.push(Zone { apex });
    }
    if args.upstream.is_some() && zones.is_empty() {
        tracing::warn!("--upstream has no effect without --zone: every name is answered from the cluster");
    }
    let authority_config = AuthorityConfig {
        forward_outside_zones: args.upstream.is_some(),
        zones,
        negative_ttl: args.negative_ttl,
        ..AuthorityConfig::default()
    };
    let advertise = advertise_addr(&args)?;
    let gossip_config =
        rumor_core::gossip::Config::new(rumor_core::gossip::PeerAddr::from(advertise.as_str()), node_keyring(&args)?);
    let frame_max = gossip_config.message_bytes_max;
    let (persister, loaded) = if args.ephemeral {
        (None, persist::Loaded { node_id: node::os_random(), incarnation: 0, entries: Vec::new() })
    } else {
        let dir = args.data.clone();
        let fresh_id = node::os_random();
        let repair = args.repair;
        let (p, loaded) =
            rt::spawn_blocking(move || persist::open(&dir, fresh_id, repair)).await.map_err(|e| e.to_string())??;
        tracing::info!(entries = loaded.entries.len(), dir = %args.data.display(), "data loaded");
        (Some(p), loaded)
    };
    let mut member = rumor_core::member::Member::new(
        rumor_core::member::Config { gossip: gossip_config, node_id: loaded.node_id },
        clock.both(),
        node::os_random(),
    );
    member.restore(loaded.entries, loaded.incarnation);
    let initial: Vec<_> = member.view().live(clock.wall_ms()).into_iter().cloned().collect();
    let udp = std::net::UdpSocket::bind(args.dns).map_err(|e| format!("cannot bind DNS UDP {}: {e}", args.dns))?;
    let udp_reader = udp.try_clone().map_err(|e| e.to_string())?;
    let tcp = rt::bind_tcp(args.dns).map_err(|e| format!("cannot bind DNS TCP {}: {e}", args.dns))?;
    let gossip_listener = rt::bind_tcp(args.gossip).map_err(|e| format!("cannot bind gossip {}: {e}", args.gossip))?;
    let upstream = match args.upstream {
        Some(addr) => {
            let local: SocketAddr = if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().expect("literal");
            let sock = rt::bind_udp(local).map_err(|e| format!("cannot bind a socket for the upstream: {e}"))?;
            Some((sock, addr))
        }
        None => None,
    };
    let api_listener = rt::bind_tcp(args.api).map_err(|e| format!("cannot bind API {}: {e}", args.api))?;
    let (forward_tx, forward_rx) = match upstream {
        Some(_) => {
            let (tx, rx) = async_channel::bounded(1024);
            (Some(tx), Some(rx))
        }
        None => (None, None),
    };
    let udp_server =
        dns_udp::UdpServer::start(udp_reader, initial, Authority::new(authority_config.clone()), forward_tx, clock)
            .map_err(|e| format!("cannot start the DNS UDP thread: {e}"))?;
    let (inbound_tx, inbound_rx) = async_channel::bounded(node::INBOUND_MAX);
    let (joins_tx, joins_rx) = async_channel::bounded(4);
    let node_id = member.id();
    let closer = gossip_net::Closer::new();
    let resume_store = match (&persister, &args.downloads) {
        (Some(p), Some(_)) => Some(crate::bt::resume::ResumeStore::new(p.database())?),
        _ => None,
    };
    let (node, handle, rx) = node::Node::new(node::NodeParts {
        clock,
        member,
        advertise: advertise.clone(),
        closer: closer.clone(),
        authority: Authority::new(authority_config),
        udp_reply: udp,
        view: Some(udp_server.control.clone()),
        forward_rx,
        persister,
        upstream,
        inbound: inbound_rx,
        frame_max,
        joins: joins_rx,
        tracker_interval_s: args.tracker_interval.max(1),
        tracker_rate_per_s: args.tracker_rate,
    });
    let (shutdown_tx, shutdown_rx) = rt::Shutdown::new();
    let torrents = match &args.downloads {
        None if args.watch.is_some() => return Err("--watch needs --downloads DIR".into()),
        None => None,
        Some(dir) => {
            let config = crate::torrents::Config {
                dir: dir.clone(),
                watch: args.watch.clone(),
                bt_port: args.bt_port,
                download_limit: args.max_download_rate,
                upload_limit: args.max_upload_rate,
                max_active: args.max_active_downloads,
                max_peers: args.max_peers,
                advertise_ip: advertise
                    .parse::<SocketAddr>()
                    .map(|a| a.ip())
                    .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1])),
                store: resume_store.clone(),
                dht: (!args.no_dht).then(|| crate::torrents::DhtSettings {
                    port: args.dht_port,
                    bootstrap: args.dht_bootstrap.clone(),
                    // The routing table is kept with the node's data.
                    state: (!args.ephemeral).then(|| args.data.join("dht-state")),
                }),
                lsd: !args.no_lsd,
            };
            Some(crate::torrents::start(config, handle.clone(), clock, shutdown_rx.clone())?)
        }
    };
    tracing::info!(dns = %args.dns, api = %args.api, gossip = %args.gossip, %advertise, node = format!("{node_id:016x}"), runtime = rt::runtime().name(), "rumor node up");
    let node_task = rt::spawn(node.run(rx, shutdown_rx.clone()));
    let tcp_task = rt::spawn(node::serve_tcp(tcp, handle.clone(), shutdown_rx.clone()));
    let gossip_task =
        rt::spawn(gossip_net::listen_closing(gossip_listener, inbound_tx, frame_max + 4, shutdown_rx.clone(), closer));
    let join_task = rt::spawn(node::resolve_joins(args.join.clone(), joins_tx, shutdown_rx.clone()));
    let state = api::ApiState {
        node: handle,
        token: args.api_token.map(|t| t.into()),
        tracker_token: args.tracker_token.map(|t| t.into()),
        clock,
        udp_control: udp_server.control.clone(),
        torrents: torrents.clone(),
    };
    let limits = crate::http::Limits {
        connections_max: args.api_connections_max,
        body_timeout: std::time::Duration::from_secs(args.api_body_timeout.max(1)),
        ..Default::default()
    };
    let api_task = rt::spawn(crate::http::serve_with(api_listener, api::router(state), shutdown_rx.clone(), limits));
    let signal = rt::wait_for_signal().await;
    tracing::info!("shutting down ({signal})");
    if let Some(t) = &torrents {
        // Stopped announces (and the resume records) before the node goes.
        let _ = rt::timeout(std::time::Duration::from_secs(8), t.shutdown()).await;
    }
    shutdown_tx.fire();
    let _ = node_task.await;
    let _ = tcp_task.await;
    let _ = gossip_task.await;
    let _ = join_task.await;
    let _ = rt::spawn_blocking(move || udp_server.shutdown()).await;
    let _ = rt::timeout(std::time::Duration::from_secs(5), api_task).await;
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{check_api_token, get_target, own_key};
    use std::path::Path;

    #[test]
    fn an_empty_a_blank_or_a_short_token_is_refused_and_sixteen_characters_pass() {
        assert!(check_api_token("").unwrap_err().contains("empty"));
        assert!(check_api_token("                ").unwrap_err().contains("empty"));
        assert!(check_api_token("s3cret").unwrap_err().contains("6 characters long"));
        assert!(check_api_token("0123456789abcde").is_err());
        assert_eq!(check_api_token("0123456789abcdef"), Ok(()));
    }

    #[test]
    fn a_made_cluster_key_is_private_and_read_back_the_same_next_time() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("rumor-own-key-{}", std::process::id()));
        let path = dir.join("data").join("cluster.key");
        let made = own_key(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(own_key(&path).unwrap(), made);
        std::fs::write(&path, "not a key").unwrap();
        assert!(own_key(&path).unwrap_err().contains("does not hold a cluster key"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_39_digit_infohash_is_a_bad_infohash_and_a_good_one_passes() {
        let e = get_target(Path::new("00112233445566778899aabbccddeeff0011223")).unwrap_err();
        assert!(e.contains("bad infohash (39 characters long)"), "{e}");
        let e = get_target(Path::new("00112233445566778899aabbccddeeff0011223g")).unwrap_err();
        assert!(e.contains("not all are hex digits"), "{e}");
        assert_eq!(get_target(Path::new("00112233445566778899aabbccddeeff00112233")), Ok(None));
        assert_eq!(get_target(Path::new("magnet:?xt=urn:btih:nothex")), Ok(None));
        assert_eq!(get_target(Path::new("some/file.torrent")), Ok(None));
        assert_eq!(get_target(Path::new("short")), Ok(None));
    }

    #[test]
    fn a_bare_base32_infohash_becomes_a_magnet_link() {
        let b32 = "AARCEM2EKVTHQ6FKXO6N57YAEIRTGRK2";
        assert_eq!(get_target(Path::new(b32)), Ok(Some(format!("magnet:?xt=urn:btih:{b32}"))));
        let e = get_target(Path::new("AARCEM2EKVTHQ6FKXO6N57YAEIRTGRK1")).unwrap_err();
        assert!(e.contains("not all are base32"), "{e}");
    }
}
