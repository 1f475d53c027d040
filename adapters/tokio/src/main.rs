//! `rumor`: a cluster node (DNS + HTTP API) and its command-line client.

mod api;
mod clock;
mod dns_cli;
mod dns_udp;
mod node;
mod persist;
mod records;

use clap::{Args, Parser, Subcommand};
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
    /// Where gossip listens (TCP). Reserved: replication arrives with the
    /// gossip machine.
    #[arg(long, env = "RUMOR_GOSSIP", default_value = "0.0.0.0:5300")]
    gossip: SocketAddr,
    /// Directory for the node's database.
    #[arg(long, env = "RUMOR_DATA", default_value = "rumor-data")]
    data: PathBuf,
    /// Keep records in memory only.
    #[arg(long, env = "RUMOR_EPHEMERAL")]
    ephemeral: bool,
    /// Zones this node is the authority for (repeatable or comma
    /// separated). Without any, every name the cluster holds is answered.
    #[arg(long = "zone", env = "RUMOR_ZONES", value_delimiter = ',')]
    zones: Vec<String>,
    /// Resolver that gets queries for names outside --zone.
    #[arg(long, env = "RUMOR_UPSTREAM")]
    upstream: Option<SocketAddr>,
    /// Bearer token required for API writes.
    #[arg(long, env = "RUMOR_API_TOKEN", hide_env_values = true)]
    api_token: Option<String>,
    /// Allow an API without a token on a non-loopback address.
    #[arg(long, env = "RUMOR_API_PUBLIC")]
    api_public: bool,
    /// TTL of negative answers, seconds.
    #[arg(long, env = "RUMOR_NEGATIVE_TTL", default_value_t = 30)]
    negative_ttl: u32,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Cmd::Node(args) => {
            let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("rumor: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(run_node(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Dns(cmd) => dns_cli::run(cmd),
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("RUMOR_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

async fn run_node(args: NodeArgs) -> Result<(), String> {
    let clock = clock::Clock::new();
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
    let (persister, initial) = if args.ephemeral {
        (None, Vec::new())
    } else {
        let dir = args.data.clone();
        let now = clock.wall_ms();
        let (p, sets) =
            tokio::task::spawn_blocking(move || persist::open(&dir, now)).await.map_err(|e| e.to_string())??;
        tracing::info!(rrsets = sets.len(), dir = %args.data.display(), "records loaded");
        (Some(p), sets)
    };
    let udp = std::net::UdpSocket::bind(args.dns).map_err(|e| format!("cannot bind DNS UDP {}: {e}", args.dns))?;
    let udp_reader = udp.try_clone().map_err(|e| e.to_string())?;
    let tcp =
        tokio::net::TcpListener::bind(args.dns).await.map_err(|e| format!("cannot bind DNS TCP {}: {e}", args.dns))?;
    let upstream = match args.upstream {
        Some(addr) => {
            let local: SocketAddr = if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().expect("literal");
            let sock = tokio::net::UdpSocket::bind(local)
                .await
                .map_err(|e| format!("cannot bind a socket for the upstream: {e}"))?;
            Some((sock, addr))
        }
        None => None,
    };
    let api_listener =
        tokio::net::TcpListener::bind(args.api).await.map_err(|e| format!("cannot bind API {}: {e}", args.api))?;
    let (forward_tx, forward_rx) = match upstream {
        Some(_) => {
            let (tx, rx) = tokio::sync::mpsc::channel(1024);
            (Some(tx), Some(rx))
        }
        None => (None, None),
    };
    let udp_server = dns_udp::UdpServer::start(
        udp_reader,
        initial.clone(),
        Authority::new(authority_config.clone()),
        forward_tx,
        clock,
    )
    .map_err(|e| format!("cannot start the DNS UDP thread: {e}"))?;
    let (node, handle, rx) = node::Node::new(node::NodeParts {
        clock,
        initial,
        authority: Authority::new(authority_config),
        udp_reply: udp,
        view: Some(udp_server.control.clone()),
        forward_rx,
        persister,
        upstream,
    });
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    tracing::info!(dns = %args.dns, api = %args.api, "rumor node up");
    let node_task = tokio::spawn(node.run(rx, shutdown_rx.clone()));
    let tcp_task = tokio::spawn(node::serve_tcp(tcp, handle.clone(), shutdown_rx.clone()));
    let state = api::ApiState {
        node: handle,
        token: args.api_token.map(|t| t.into()),
        clock,
        udp_control: udp_server.control.clone(),
    };
    let mut api_shutdown = shutdown_rx.clone();
    let api_task = tokio::spawn(async move {
        axum::serve(api_listener, api::router(state))
            .with_graceful_shutdown(async move {
                let _ = api_shutdown.changed().await;
            })
            .await
    });
    wait_for_signal().await;
    tracing::info!("shutting down");
    let _ = shutdown_tx.send(true);
    let _ = node_task.await;
    let _ = tcp_task.await;
    let _ = tokio::task::spawn_blocking(move || udp_server.shutdown()).await;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), api_task).await;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
