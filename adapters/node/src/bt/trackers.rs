//! Carries out the announcer's requests: HTTP GETs on the blocking pool,
//! UDP datagrams on one socket. Answers come back as [`AnnounceInput`]s.

use crate::rt;
use async_channel::Sender;
use rumor_core::bt::announce::{AnnounceInput, RequestId};
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
    Input(AnnounceInput),
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
                    Ok(_) => AnnounceInput::HttpBody { id, body },
                    Err(_) => AnnounceInput::RequestFailed { id },
                }
            }
            Err(e) => {
                tracing::debug!("tracker {url}: {e}");
                AnnounceInput::RequestFailed { id }
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
                if tx.try_send(TrackerEvent::UdpReceived { from, bytes: buf[..n].to_vec() }).is_err() {
                    break;
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
                let _ = tx.try_send(TrackerEvent::Input(AnnounceInput::RequestFailed { id }));
                return;
            };
            let _ = tx.try_send(TrackerEvent::UdpSent { addr, id });
            if socket.send_to(&payload, addr).await.is_err() {
                let _ = tx.try_send(TrackerEvent::Input(AnnounceInput::RequestFailed { id }));
            }
        });
    }
}
