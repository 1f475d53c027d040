//! Local Service Discovery (BEP 14) for one torrent (`rumor get`), or for
//! every torrent of the node's session ([`start_shared`]): the core
//! [`rumor_core::bt::lsd::Lsd`] machine on the two multicast groups, in a
//! task of its own.
//!
//! Each group gets a UDP socket bound to the group's port on every
//! address, with `SO_REUSEADDR` and `SO_REUSEPORT` (so every client on
//! the host can listen: the kernel hands each of them every multicast
//! datagram), joined on the default interface (the kernel picks it from
//! the routing table), with multicast loopback on (so two clients on one
//! host hear each other). Our announces go out from the same sockets.
//!
//! The groups follow the peer listener, since an announce tells others to
//! dial the sender's address: the IPv4 group when it listens on IPv4 (the
//! default, `0.0.0.0`) or on `::` (dual stack), the IPv6 group when it
//! listens on IPv6. The IPv6 group is best effort: without it the IPv4
//! group is used alone.
//!
//! Peers found wait in a bounded queue ([`FOUND_MAX`]) for the session's
//! housekeeping to take ([`LsdHandle::take_found`]); when it is full, more
//! are dropped (they announce again within minutes). The task stops when
//! the handle is dropped.

use super::peer_conn::Task;
use crate::clock::Clock;
use crate::rt::{self, UdpSocket};
use async_channel::{Receiver, Sender};
use futures::FutureExt;
use rumor_core::bt::lsd::{Event, Input, Lsd, LsdConfig, Output, LSD_GROUP_V4, LSD_GROUP_V6, LSD_PORT};
use rumor_core::bt::metainfo::InfoHash;
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Peers found and not yet taken by the session.
pub const FOUND_MAX: usize = 64;
/// Bytes read per datagram: announces over 1400 bytes are refused, so a
/// longer one read short is refused too.
const DATAGRAM_BYTES_MAX: usize = 2048;

/// Peers found by the session's discovery and not yet taken (it serves
/// many torrents).
pub const SHARED_FOUND_MAX: usize = 1024;

/// The running discovery; dropping it stops it.
pub struct LsdHandle {
    found: Receiver<(InfoHash, SocketAddr)>,
    _task: Task,
}

impl LsdHandle {
    /// The peers found since the last call.
    pub fn take_found(&self) -> Vec<SocketAddr> {
        std::iter::from_fn(|| self.found.try_recv().ok()).take(FOUND_MAX).map(|(_, a)| a).collect()
    }
}

/// The discovery of the node's torrent session: one pair of multicast
/// sockets and one machine for every torrent; dropping it stops it.
pub struct SharedLsd {
    found: Receiver<(InfoHash, SocketAddr)>,
    set: Sender<Vec<InfoHash>>,
    _task: Task,
}

impl SharedLsd {
    /// Serves these torrents from now on (announced, their peers reported).
    pub fn set(&self, info_hashes: Vec<InfoHash>) {
        // Only the latest set matters: one that is not taken yet is replaced.
        let _ = self.set.force_send(info_hashes);
    }

    /// The peers found since the last call, with their torrent.
    pub fn take_found(&self) -> Vec<(InfoHash, SocketAddr)> {
        std::iter::from_fn(|| self.found.try_recv().ok()).take(SHARED_FOUND_MAX).collect()
    }
}

/// A socket for `group`, bound to its port on every address, sharing the
/// port with other processes, joined to the group on the default interface.
fn open(group: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let domain = if group.is_ipv4() { Domain::IPV4 } else { Domain::IPV6 };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    match group.ip() {
        IpAddr::V4(g) => {
            s.bind(&SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), LSD_PORT).into())?;
            s.join_multicast_v4(&g, &Ipv4Addr::UNSPECIFIED)?;
            s.set_multicast_loop_v4(true)?;
        }
        IpAddr::V6(g) => {
            s.set_only_v6(true)?;
            s.bind(&SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), LSD_PORT).into())?;
            s.join_multicast_v6(&g, 0)?;
            s.set_multicast_loop_v6(true)?;
        }
    }
    s.set_nonblocking(true)?;
    Ok(s.into())
}

/// Starts discovery for `info_hash`, announcing the port of our peer
/// listener `listen`; `None` (with a warning) if no group's socket could
/// be opened.
pub fn start(clock: Clock, info_hash: InfoHash, listen: SocketAddr) -> Option<LsdHandle> {
    let (lsd, sockets) = machine(clock, vec![info_hash], listen)?;
    let (tx, found) = async_channel::bounded(FOUND_MAX);
    let task = Task::spawn(run(lsd, sockets, clock, tx, None));
    Some(LsdHandle { found, _task: task })
}

/// Starts the session's discovery, serving no torrent until
/// [`SharedLsd::set`]; `None` (with a warning) if no group's socket could
/// be opened.
pub fn start_shared(clock: Clock, listen: SocketAddr) -> Option<SharedLsd> {
    let (lsd, sockets) = machine(clock, Vec::new(), listen)?;
    let (tx, found) = async_channel::bounded(SHARED_FOUND_MAX);
    let (set, set_rx) = async_channel::bounded(1);
    let task = Task::spawn(run(lsd, sockets, clock, tx, Some(set_rx)));
    Some(SharedLsd { found, set, _task: task })
}

type Sockets = Vec<(SocketAddr, Box<dyn UdpSocket>)>;

/// The machine and its sockets, for the groups `listen` calls for.
fn machine(clock: Clock, info_hashes: Vec<InfoHash>, listen: SocketAddr) -> Option<(Lsd, Sockets)> {
    let mut sockets: Vec<(SocketAddr, Box<dyn UdpSocket>)> = Vec::new();
    let v4 = listen.is_ipv4() || listen.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED);
    let groups = [(LSD_GROUP_V4, v4), (LSD_GROUP_V6, listen.is_ipv6())];
    for group in groups.into_iter().filter(|(_, on)| *on).map(|(g, _)| g) {
        match open(group).and_then(|s| rt::runtime().udp_socket(s)) {
            Ok(s) => sockets.push((group, s)),
            Err(e) if group.is_ipv4() => tracing::warn!("local service discovery: cannot join {group}: {e}"),
            Err(e) => tracing::debug!("local service discovery: cannot join {group}: {e}"),
        }
    }
    if sockets.is_empty() {
        return None;
    }
    let mut config = LsdConfig::new(listen.port(), info_hashes);
    config.groups = sockets.iter().map(|(g, _)| *g).collect();
    tracing::debug!("local service discovery on {:?}", config.groups);
    Some((Lsd::new(config, clock.now(), super::entropy::seed()), sockets))
}

/// The next set of torrents, or never without a session.
async fn next_set(set: Option<&Receiver<Vec<InfoHash>>>) -> Option<Vec<InfoHash>> {
    match set {
        Some(rx) => rx.recv().await.ok(),
        None => futures::future::pending().await,
    }
}

async fn recv(s: Option<&(SocketAddr, Box<dyn UdpSocket>)>, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
    match s {
        Some((_, s)) => s.recv_from(buf).await,
        None => futures::future::pending().await,
    }
}

async fn run(
    mut lsd: Lsd,
    sockets: Sockets,
    clock: Clock,
    found: Sender<(InfoHash, SocketAddr)>,
    set: Option<Receiver<Vec<InfoHash>>>,
) {
    let (mut b0, mut b1) = (vec![0u8; DATAGRAM_BYTES_MAX], vec![0u8; DATAGRAM_BYTES_MAX]);
    let mut input = Some(Input::Timeout);
    loop {
        if let Some(i) = input.take() {
            lsd.handle(clock.now(), i);
        }
        let deadline = loop {
            match lsd.poll_output() {
                Output::Transmit(t) => {
                    let Some((_, s)) = sockets.iter().find(|(g, _)| *g == t.to) else { continue };
                    if let Err(e) = s.send_to(&t.bytes, t.to).await {
                        tracing::debug!("local service discovery: announce to {} failed: {e}", t.to);
                    }
                }
                Output::Event(Event::Peer { addr, info_hash }) => {
                    tracing::debug!("local service discovery: peer {addr} of {info_hash}");
                    let _ = found.try_send((info_hash, addr));
                }
                Output::Timeout(at) => break at,
            }
        };
        let wake = clock.std_instant(deadline);
        let got = futures::select_biased! {
            r = recv(sockets.first(), &mut b0).fuse() => r.map(|(n, from)| (b0[..n].to_vec(), from)),
            r = recv(sockets.get(1), &mut b1).fuse() => r.map(|(n, from)| (b1[..n].to_vec(), from)),
            hashes = next_set(set.as_ref()).fuse() => {
                match hashes {
                    Some(h) => input = Some(Input::SetInfoHashes(h)),
                    // The session is gone.
                    None => return,
                }
                continue;
            }
            _ = rt::sleep_until(wake).fuse() => {
                input = Some(Input::Timeout);
                continue;
            }
        };
        match got {
            Ok((bytes, from)) => input = Some(Input::Receive { from, bytes }),
            Err(e) => {
                // A receive error on UDP is transient (an ICMP error
                // reported late, a buffer shortage): wait a little.
                tracing::debug!("local service discovery: {e}");
                rt::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}
