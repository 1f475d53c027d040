//! Carries out the announcer's requests: HTTP GETs on the blocking pool,
//! UDP datagrams on one socket. Answers come back as [`Input`]s through
//! the owner's bounded channel; when it is full an answer is dropped (as a
//! lossy network would drop it) and the announcer's request timeout asks
//! again.

use crate::rt;
use async_channel::Sender;
use rumor_core::bt::announce::{Announcer, Event, Input, Output, RequestId};
use rumor_core::time::Instant;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Largest tracker response body read.
const HTTP_BODY_BYTES_MAX: u64 = 1 << 20;
/// Largest UDP datagram accepted.
const UDP_DATAGRAM_BYTES_MAX: usize = 64 * 1024;

/// What the tracker side tells the session.
#[derive(Debug)]
pub enum TrackerEvent {
    /// Feed this to the announcer.
    Input(Input),
    /// A UDP request went to `addr`: datagrams from there answer `id`.
    UdpSent {
        /// The tracker's address.
        addr: SocketAddr,
        /// The request.
        id: RequestId,
    },
    /// A datagram arrived.
    UdpReceived {
        /// Who sent it.
        from: SocketAddr,
        /// Its bytes.
        bytes: Vec<u8>,
    },
}

/// Does HTTP GET `url` on the blocking pool, resolving its host through
/// the cluster's DNS at `dns` first when given; reports the body or a
/// failure.
pub fn http_get(id: RequestId, url: String, dns: Option<SocketAddr>, tx: Sender<TrackerEvent>) {
    rt::spawn_blocking_detached(move || {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(15))
            .resolver(super::cluster_dns::ClusterResolver(dns))
            .build();
        let input = match agent.get(&url).call() {
            Ok(resp) => {
                let mut body = Vec::new();
                match resp.into_reader().take(HTTP_BODY_BYTES_MAX).read_to_end(&mut body) {
                    Ok(_) => Input::HttpBody { id, body },
                    Err(_) => Input::RequestFailed { id },
                }
            }
            Err(e) => {
                tracing::debug!("tracker {url}: {e}");
                Input::RequestFailed { id }
            }
        };
        let _ = tx.try_send(TrackerEvent::Input(input));
    });
}

/// The UDP side: one socket for every UDP tracker.
pub struct Udp {
    socket: Arc<dyn rt::UdpSocket>,
}

impl Udp {
    /// Binds a socket and starts reading datagrams into `tx`.
    pub fn start(tx: Sender<TrackerEvent>) -> std::io::Result<Udp> {
        let socket: Arc<dyn rt::UdpSocket> = Arc::from(rt::bind_udp("0.0.0.0:0".parse().expect("literal"))?);
        let s = socket.clone();
        rt::spawn(async move {
            let mut buf = vec![0u8; UDP_DATAGRAM_BYTES_MAX];
            while let Ok((n, from)) = s.recv_from(&mut buf).await {
                match tx.try_send(TrackerEvent::UdpReceived { from, bytes: buf[..n].to_vec() }) {
                    // A full queue drops the datagram, as the network may:
                    // the announcer's request timeout asks again.
                    Ok(()) | Err(async_channel::TrySendError::Full(_)) => {}
                    Err(async_channel::TrySendError::Closed(_)) => break,
                }
            }
        });
        Ok(Udp { socket })
    }

    /// Resolves `tracker` (a udp:// URL; through the cluster's DNS at `dns`
    /// first when given) and sends `payload` to it.
    pub fn send(
        &self,
        id: RequestId,
        tracker: String,
        payload: Vec<u8>,
        dns: Option<SocketAddr>,
        tx: Sender<TrackerEvent>,
    ) {
        let socket = self.socket.clone();
        rt::spawn(async move {
            let hostport = tracker.trim_start_matches("udp://").split('/').next().unwrap_or_default().to_string();
            let lookup = rt::spawn_blocking(move || super::cluster_dns::resolve_netloc(dns, &hostport));
            let addr = match rt::timeout(Duration::from_secs(10), lookup).await {
                Ok(Ok(Ok(addrs))) => addrs.into_iter().find(|a| a.is_ipv4()),
                _ => None,
            };
            let Some(addr) = addr else {
                let _ = tx.try_send(TrackerEvent::Input(Input::RequestFailed { id }));
                return;
            };
            let _ = tx.try_send(TrackerEvent::UdpSent { addr, id });
            if socket.send_to(&payload, addr).await.is_err() {
                let _ = tx.try_send(TrackerEvent::Input(Input::RequestFailed { id }));
            }
        });
    }
}

/// The announcer's side of the network, shared by the download and the
/// metadata fetch: it carries out requests and routes answers back.
pub struct TrackerIo {
    tx: Sender<TrackerEvent>,
    udp: Option<Udp>,
    /// Which request a datagram from a tracker address answers.
    udp_pending: std::collections::HashMap<SocketAddr, RequestId>,
    dns: Option<SocketAddr>,
}

/// Datagram addresses remembered at once; beyond it only the newest
/// request's are kept (a tracker answers within seconds).
const UDP_PENDING_MAX: usize = 64;

impl TrackerIo {
    /// Answers come back through `tx`; a UDP socket is opened only if some
    /// tracker needs one. `dns`: the cluster's DNS, asked first for names.
    pub fn new(tx: Sender<TrackerEvent>, tiers: &[Vec<String>], dns: Option<SocketAddr>) -> TrackerIo {
        let udp =
            if tiers.iter().flatten().any(|u| u.starts_with("udp://")) { Udp::start(tx.clone()).ok() } else { None };
        TrackerIo { tx, udp, udp_pending: std::collections::HashMap::new(), dns }
    }

    /// Carries out one announcer output that is network work (a GET, a
    /// datagram, an error to log) and hands back the others (peers,
    /// the next timeout) for the caller.
    pub fn carry(&self, announcer: &mut Announcer, now: rumor_core::time::Instant, out: Output) -> Option<Output> {
        match out {
            Output::HttpGet { id, url } => {
                tracing::debug!("announce: GET {url}");
                http_get(id, url, self.dns, self.tx.clone());
            }
            Output::UdpSend { id, tracker, payload } => match &self.udp {
                Some(u) => u.send(id, tracker, payload, self.dns, self.tx.clone()),
                None => announcer.handle(now, Input::RequestFailed { id }),
            },
            Output::Event(Event::TrackerError { tracker, error }) => match error {
                Some(e) => tracing::warn!("tracker {tracker}: {e}"),
                None => tracing::warn!("tracker {tracker}: no answer"),
            },
            other => return Some(other),
        }
        None
    }

    /// Drains `announcer`: carries out its requests and logs its errors;
    /// the instant to wake it at, and the peers trackers gave.
    pub fn drain(&self, announcer: &mut Announcer, clock: &crate::clock::Clock) -> (Instant, Vec<SocketAddr>) {
        let mut found = Vec::new();
        loop {
            let now = clock.now();
            let out = announcer.poll_output();
            match self.carry(announcer, now, out) {
                Some(Output::Timeout(at)) => return (at, found),
                Some(Output::Event(Event::Peers(peers))) => {
                    tracing::info!("tracker gave {} peers", peers.len());
                    found.extend(peers);
                }
                _ => {}
            }
        }
    }

    /// Feeds what the network brought to the announcer.
    pub fn on_event(&mut self, announcer: &mut Announcer, now: rumor_core::time::Instant, event: TrackerEvent) {
        match event {
            TrackerEvent::Input(i) => announcer.handle(now, i),
            TrackerEvent::UdpSent { addr, id } => {
                self.udp_pending.insert(addr, id);
                if self.udp_pending.len() > UDP_PENDING_MAX {
                    self.udp_pending.retain(|_, v| *v == id);
                }
            }
            TrackerEvent::UdpReceived { from, bytes } => {
                if let Some(id) = self.udp_pending.get(&from).copied() {
                    announcer.handle(now, Input::UdpDatagram { id, bytes, ipv6: from.is_ipv6() });
                }
            }
        }
    }
}
