//! The client as an overlay member (`--overlay`): it joins the cluster's
//! gossip like a node (with no DNS and no disk), announces itself as a
//! provider of its torrent in the replicated `providers` namespace, asks
//! members for the other providers, and hands every provider it learns to
//! the session. So peers find each other with no tracker at all.
//!
//! When its owner stops it (fires or drops the [`rt::ShutdownTrigger`]), it
//! says goodbye to the cluster (a gossip leave, so the members list it as
//! `left`, not `dead` after the failure detector's timeouts) and gives the
//! frames a moment to go before it returns: await its task.

use crate::clock::Clock;
use crate::gossip_net::{self, GossipNet};
use crate::rt;
use bytes::Bytes;
use rumor_core::bt::metainfo::InfoHash;
use rumor_core::gossip::{self, Config, DecodeError, Keyring, Now, PeerAddr};
use rumor_core::member::{self, Member as CoreMember};
use rumor_core::overlay::{self, Overlay, Provider};
use rumor_core::replica::Namespace;
use rumor_core::time::Instant;
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often the client announces itself and asks for providers.
const ANNOUNCE_EVERY: Duration = Duration::from_secs(30);
/// How long its provider entry lives unless announced again.
const PROVIDER_TTL: Duration = Duration::from_secs(120);
/// How often the overlay index is checked for providers not yet handed on.
const SCAN_EVERY: Duration = Duration::from_secs(1);
/// How long the leave's frames get to go out before the member returns.
const LEAVE_GRACE: Duration = Duration::from_millis(200);

/// What the member needs.
pub struct MemberArgs {
    /// Gossip addresses to join (host:port; names resolve to many).
    pub join: Vec<String>,
    /// The cluster keyring.
    pub keys: Keyring,
    /// Where to listen for gossip.
    pub listen: SocketAddr,
}

/// Joins the overlay and runs until `stop` fires (then leaves the cluster)
/// or `found` closes; providers of `ih` other than this client go to
/// `found` (a bounded channel: when it is full they wait for the next scan).
pub async fn run(
    args: MemberArgs,
    ih: InfoHash,
    peer_port: u16,
    complete: Arc<AtomicBool>,
    found: async_channel::Sender<Vec<SocketAddr>>,
    stop: rt::Shutdown,
) -> Result<(), String> {
    let clock = Clock::new();
    let listener =
        rt::bind_tcp(args.listen).map_err(|e| format!("cannot listen for gossip on {}: {e}", args.listen))?;
    let gossip_port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let targets = args.join.clone();
    let (ip, join) = rt::spawn_blocking(move || resolve_targets(&targets)).await.map_err(|e| e.to_string())??;
    let advertise = PeerAddr::from(SocketAddr::new(ip, gossip_port).to_string());
    let me = SocketAddr::new(ip, peer_port);
    let config = Config::new(advertise.clone(), args.keys);
    let frame_max = config.message_bytes_max;
    let member_config = member::Config { gossip: config, node_id: super::entropy::seed() };
    let mut member = Overlaid::new(CoreMember::new(member_config, clock.both(), super::entropy::seed()), clock.both());
    let (inbound_tx, inbound) = async_channel::bounded(1024);
    // The listener stops with this member.
    let (_stop, stop_rx) = rt::Shutdown::new();
    let closer = gossip_net::Closer::new();
    rt::spawn(gossip_net::listen_closing(listener, inbound_tx, frame_max + 4, stop_rx, closer.clone()));
    let mut net = GossipNet::new(frame_max, closer.clone());
    tracing::info!(advertise = %advertise.0, peer = %me, "joining the overlay");
    member.step(clock.both(), member::Input::Command(member::Command::Join(join)), &mut net);
    let mut handed: BTreeSet<SocketAddr> = BTreeSet::new();
    let mut next_announce = std::time::Instant::now() + Duration::from_millis(500);
    let mut next_scan = std::time::Instant::now();
    let mut lookup_id = 0u32;
    loop {
        if std::mem::take(&mut member.lookup_done) {
            next_scan = std::time::Instant::now();
        }
        let now = std::time::Instant::now();
        if now >= next_announce {
            next_announce = now + ANNOUNCE_EVERY;
            let both = clock.both();
            let provider = Provider {
                addr: me,
                peer_id: None,
                seeder: complete.load(Ordering::Relaxed),
                announced_ms: both.wall_ms,
                expires_ms: both.wall_ms + PROVIDER_TTL.as_millis() as u64,
            };
            let key = Bytes::from(overlay::provider_key(&ih, provider.addr));
            let value = Bytes::from(overlay::provider_value(&provider));
            let write =
                gossip::Command::Write { ns: Namespace::PROVIDERS, key, value, expires_ms: provider.expires_ms };
            member.step(both, member::Input::Command(member::Command::Gossip(write)), &mut net);
            lookup_id = lookup_id.wrapping_add(1);
            let prefix = Bytes::copy_from_slice(&ih.0);
            let lookup = gossip::Command::Lookup { id: lookup_id, ns: Namespace::PROVIDERS, prefix };
            member.step(both, member::Input::Command(member::Command::Gossip(lookup)), &mut net);
            continue;
        }
        if now >= next_scan {
            next_scan = now + SCAN_EVERY;
            let fresh: Vec<SocketAddr> = member
                .overlay
                .lookup(&ih, clock.wall_ms(), usize::MAX, Some(me))
                .into_iter()
                .map(|p| p.addr)
                .filter(|a| handed.insert(*a))
                .collect();
            if !fresh.is_empty() {
                tracing::info!("overlay: {} new providers", fresh.len());
                match found.try_send(fresh) {
                    Ok(()) => {}
                    // The session is busy: hand them on at the next scan.
                    Err(async_channel::TrySendError::Full(fresh)) => {
                        for a in fresh {
                            handed.remove(&a);
                        }
                    }
                    Err(async_channel::TrySendError::Closed(_)) => return Ok(()),
                }
            }
        }
        let wake = clock.std_instant(member.next_timeout).min(next_announce).min(next_scan);
        futures::select_biased! {
            msg = futures::FutureExt::fuse(inbound.recv()) => match msg {
                Ok((from, bytes)) => {
                    let drops = member.drops;
                    member.step(clock.both(), member::Input::Receive { from: from.clone(), bytes }, &mut net);
                    // It opened under the cluster key: a member's connection,
                    // no longer held to the unauthenticated deadline (as the
                    // node does). Without this every member's connection to
                    // us was closed after 5 s and it warned, again and again,
                    // that we close its connections.
                    if member.drops == drops {
                        closer.admit(&from);
                    }
                    for from in member.to_close.drain(..) {
                        closer.close(&from);
                    }
                }
                Err(_) => return Ok(()),
            },
            _ = futures::FutureExt::fuse(rt::sleep_until(wake)) => {
                let now = clock.both();
                // Lookups skip expired providers already; this only frees memory.
                member.overlay.expire(now.wall_ms);
                member.step(now, member::Input::Timeout, &mut net);
            }
            _ = futures::FutureExt::fuse(stop.wait()) => break,
        }
    }
    // Say goodbye so the members list us as left, and give the frames a
    // moment to go before the connections are dropped with us.
    member.step(clock.both(), member::Input::Command(member::Command::Leave), &mut net);
    rt::sleep(LEAVE_GRACE).await;
    tracing::debug!("overlay: left");
    Ok(())
}

/// The core member machine of an overlay client, with the provider index
/// its change feed keeps. It has no DNS and no disk, so the DNS view and
/// persistence outputs are dropped.
struct Overlaid {
    machine: CoreMember,
    overlay: Overlay,
    next_timeout: Instant,
    /// A providers lookup ended since the owner last looked.
    lookup_done: bool,
    /// Messages dropped so far (one that was not opened no connection
    /// admits).
    drops: u64,
    /// Connections to close: their frames open under no key, or replay
    /// what a member sent already.
    to_close: Vec<PeerAddr>,
}

impl Overlaid {
    fn new(machine: CoreMember, now: Now) -> Overlaid {
        let overlay = Overlay::from_entries(machine.store().live(Namespace::PROVIDERS, now.wall_ms));
        Overlaid { machine, overlay, next_timeout: now.at, lookup_done: false, drops: 0, to_close: Vec::new() }
    }

    /// Feeds one input, then carries out everything the machine asks.
    fn step(&mut self, now: Now, input: member::Input, net: &mut GossipNet) {
        self.machine.handle(now, input);
        loop {
            match self.machine.poll_output() {
                member::Output::Transmit(t) => net.send(&t.to, t.bytes),
                member::Output::Event(member::Event::Providers(change)) => self.overlay.follow(&change),
                member::Output::Event(member::Event::Gossip(gossip::Event::LookupDone { .. })) => {
                    self.lookup_done = true
                }
                member::Output::Event(member::Event::Gossip(gossip::Event::MemberUp { id, addr })) => {
                    tracing::debug!("overlay: member {id:016x} at {} is up", addr.0)
                }
                member::Output::Event(member::Event::Gossip(gossip::Event::MemberDown { id, addr })) => {
                    tracing::debug!("overlay: member {id:016x} at {} is down", addr.0)
                }
                member::Output::Event(member::Event::Gossip(gossip::Event::Dropped { from, reason })) => {
                    tracing::debug!(from = %from.0, "overlay: gossip message dropped: {reason:?}");
                    self.drops += 1;
                    if matches!(reason, DecodeError::Auth | DecodeError::Replayed | DecodeError::Stale) {
                        self.to_close.push(from);
                    }
                }
                // No DNS, no disk: nothing to mirror or persist.
                member::Output::Persist(_)
                | member::Output::Event(member::Event::View(_))
                | member::Output::Event(member::Event::Written { .. })
                | member::Output::Event(member::Event::Persisting { .. })
                | member::Output::Event(member::Event::Gossip(_)) => {}
                member::Output::Timeout(at) => {
                    self.next_timeout = at;
                    return;
                }
            }
        }
    }
}

/// Resolves the join targets; the local address of a connection to the
/// first that answers is the address the cluster reaches us at.
fn resolve_targets(targets: &[String]) -> Result<(IpAddr, Vec<PeerAddr>), String> {
    let mut addrs = Vec::new();
    for t in targets {
        match t.to_socket_addrs() {
            Ok(found) => addrs.extend(found),
            Err(e) => tracing::warn!("--overlay {t}: {e}"),
        }
    }
    let local = addrs
        .iter()
        .find_map(|a| std::net::TcpStream::connect_timeout(a, Duration::from_secs(2)).ok()?.local_addr().ok())
        .ok_or_else(|| format!("no --overlay address answers ({})", targets.join(", ")))?;
    Ok((local.ip(), addrs.into_iter().map(|a| PeerAddr::from(a.to_string())).collect()))
}

/// A running member, as its owner holds it.
pub struct Member {
    stop: rt::ShutdownTrigger,
    task: rt::JoinHandle<()>,
}

/// Starts a member (see [`run`]); errors are logged.
pub fn spawn(
    args: MemberArgs,
    ih: InfoHash,
    peer_port: u16,
    complete: Arc<AtomicBool>,
    found: async_channel::Sender<Vec<SocketAddr>>,
) -> Member {
    let (stop, shutdown) = rt::Shutdown::new();
    let task = rt::spawn(async move {
        if let Err(e) = run(args, ih, peer_port, complete, found, shutdown).await {
            tracing::error!("overlay: {e}");
        }
    });
    Member { stop, task }
}

impl Member {
    /// Leaves the cluster and waits (briefly) until the goodbye is out.
    pub async fn leave(self) {
        self.stop.fire();
        let _ = rt::timeout(LEAVE_GRACE * 5, self.task).await;
    }
}
