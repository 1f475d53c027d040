//! The cluster's names for the client: trackers resolved through a rumor
//! node's DNS (`--dns`) with the core's codec, and the client's own name
//! registered through a node's API (`--register`), as the original
//! system's client does.

use rumor_core::dns::{decode, encode, Edns, Header, Message, Name, Question, RData, RType, CLASS_IN};
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::time::Duration;

/// How long one DNS question may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// TTL of the client's registered name; it is refreshed at half of it.
pub const REGISTER_TTL_S: u64 = 600;

/// The IPv4 addresses `host` has in the cluster's DNS at `server` (CNAMEs
/// in the answer followed). An IP literal is returned as it is.
pub fn resolve(server: SocketAddr, host: &str) -> io::Result<Vec<IpAddr>> {
    if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    let name = Name::from_ascii(host).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let id = (std::process::id() as u16) ^ (host.len() as u16).rotate_left(8);
    let query = encode(&Message {
        header: Header { id, rd: true, ..Header::default() },
        questions: vec![Question { name, qtype: RType::A, qclass: CLASS_IN }],
        edns: Some(Edns::default()),
        ..Message::default()
    });
    let local = if server.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let sock = UdpSocket::bind(local)?;
    sock.set_read_timeout(Some(QUERY_TIMEOUT))?;
    sock.connect(server)?;
    sock.send(&query)?;
    let mut buf = vec![0u8; 4096];
    loop {
        let n = sock.recv(&mut buf)?;
        let Ok(m) = decode(&buf[..n]) else { continue };
        if m.header.id != id || !m.header.qr {
            continue;
        }
        let ips: Vec<IpAddr> = m
            .answers
            .iter()
            .filter_map(|r| match r.data {
                RData::A(a) => Some(IpAddr::V4(a)),
                RData::Aaaa(a) => Some(IpAddr::V6(a)),
                _ => None,
            })
            .collect();
        return if ips.is_empty() {
            Err(io::Error::new(io::ErrorKind::NotFound, format!("{host}: {} at {server}", m.rcode().name())))
        } else {
            Ok(ips)
        };
    }
}

/// Resolves `host:port` through the cluster's DNS, falling back on the
/// system resolver for names the cluster does not hold.
pub fn resolve_netloc(server: Option<SocketAddr>, netloc: &str) -> io::Result<Vec<SocketAddr>> {
    if let Some(server) = server {
        if let Some((host, port)) = netloc.rsplit_once(':') {
            if let Ok(port) = port.parse::<u16>() {
                match resolve(server, host) {
                    Ok(ips) => return Ok(ips.into_iter().map(|ip| SocketAddr::new(ip, port)).collect()),
                    Err(e) => tracing::debug!("cluster DNS has no {host} ({e}); asking the system"),
                }
            }
        }
    }
    netloc.to_socket_addrs().map(Iterator::collect)
}

/// A ureq resolver that asks the cluster first.
pub struct ClusterResolver(pub Option<SocketAddr>);

impl ureq::Resolver for ClusterResolver {
    fn resolve(&self, netloc: &str) -> io::Result<Vec<SocketAddr>> {
        resolve_netloc(self.0, netloc)
    }
}

/// Registers `name` -> this host's address (as seen on the way to the
/// node's API) with a node's API; returns the address registered.
pub fn register(api: &str, token: Option<&str>, name: &str) -> Result<IpAddr, String> {
    let api_addr = api
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve --api {api}: {e}"))?
        .next()
        .ok_or_else(|| format!("--api {api} has no address"))?;
    // The local end of a connection to the API is the address the cluster
    // reaches us at.
    let probe = std::net::TcpStream::connect_timeout(&api_addr, QUERY_TIMEOUT)
        .map_err(|e| format!("cannot reach the API at {api}: {e}"))?;
    let ip = probe.local_addr().map_err(|e| e.to_string())?.ip();
    drop(probe);
    let body = serde_json::json!({ "name": name, "ips": [ip.to_string()], "ttl": REGISTER_TTL_S });
    let mut req = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build()
        .post(&format!("http://{api_addr}/add"))
        .set("Content-Type", "application/json");
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    req.send_string(&body.to_string()).map_err(|e| format!("registering {name}: {e}"))?;
    Ok(ip)
}
