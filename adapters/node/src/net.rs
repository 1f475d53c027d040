//! Stream plumbing shared by the DNS-over-TCP and gossip listeners: a
//! bounded accept loop and length-prefixed frames with an idle timeout;
//! and, for the command-line clients, the words for a server that cannot
//! be reached (refused, or a name that does not resolve).

use crate::rt;
use futures::{AsyncReadExt, FutureExt};
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Connections being served per remote IP address; an address's count
/// goes when its last connection ends, so it holds at most one entry per
/// connection served.
#[derive(Clone, Default)]
struct PerIp(Arc<Mutex<HashMap<IpAddr, usize>>>);

/// One connection's place in a [`PerIp`]; gives it back when dropped.
struct IpSlot(PerIp, IpAddr);

impl PerIp {
    /// A place for a connection from `ip`, unless it has `max` already.
    fn take(&self, ip: IpAddr, max: usize) -> Option<IpSlot> {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(ip).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(IpSlot(self.clone(), ip))
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut m = self.0 .0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.1);
            }
        }
    }
}

/// Accepts connections until `shutdown` fires, serving each with `serve`
/// on its own task; at most `max` are served at once (the rest wait in the
/// kernel's backlog), and at most `per_ip_max` of them from one IP address
/// (more from it are closed at once, so one address cannot take every
/// slot).
pub async fn accept_bounded<F, Fut>(
    listener: Box<dyn rt::TcpListener>,
    max: usize,
    per_ip_max: usize,
    what: &'static str,
    shutdown: rt::Shutdown,
    serve: F,
) where
    F: Fn(rt::TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(async_lock::Semaphore::new(max));
    let per_ip = PerIp::default();
    let mut held = None;
    loop {
        let permit = match held.take() {
            Some(p) => p,
            None => futures::select_biased! {
                _ = shutdown.wait().fuse() => return,
                p = permits.acquire_arc().fuse() => p,
            },
        };
        let (stream, peer) = futures::select_biased! {
            _ = shutdown.wait().fuse() => return,
            accepted = listener.accept().fuse() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("{what} accept: {e}");
                    // Out of descriptors, usually: give the others a moment.
                    rt::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(slot) = per_ip.take(peer.ip(), per_ip_max) else {
            tracing::debug!(%peer, per_ip_max, "{what}: this address has every connection it may have; closing");
            drop(stream);
            held = Some(permit);
            continue;
        };
        let conn = serve(stream, peer);
        rt::spawn(async move {
            let _permit = permit;
            let _slot = slot;
            conn.await;
        });
    }
}

/// Reads one frame: a big-endian length of `PREFIX` bytes (2 or 4), then
/// that many bytes. `None` at end of stream, after `idle` without the next
/// byte, or for a length over `max` (the caller closes the connection).
pub async fn read_frame<const PREFIX: usize>(
    stream: &mut rt::TcpStream,
    max: usize,
    idle: Duration,
) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    rt::timeout(idle, stream.read_exact(&mut len[4 - PREFIX..])).await.ok()?.ok()?;
    let n = u32::from_be_bytes(len) as usize;
    if n > max {
        tracing::debug!(n, max, "frame over the limit; closing");
        return None;
    }
    let mut buf = vec![0u8; n];
    rt::timeout(idle, stream.read_exact(&mut buf)).await.ok()?.ok()?;
    Some(buf)
}

/// Why a client could not reach `addr` (the host and port as the person
/// gave them), in words that tell the two common mistakes apart: nothing
/// listens there ("connection refused"), or the name does not resolve.
/// `what` names the server ("the node", "the DNS server"); `hint` is
/// appended to a refusal, e.g. "is `rumor node` running?".
pub fn unreachable(what: &str, addr: &str, e: &std::io::Error, hint: &str) -> String {
    use std::io::ErrorKind as K;
    let why = match e.kind() {
        K::ConnectionRefused => "connection refused".to_string(),
        K::TimedOut | K::WouldBlock => "no answer in time".to_string(),
        K::ConnectionReset | K::ConnectionAborted => "the connection was closed".to_string(),
        K::NetworkUnreachable | K::HostUnreachable => "no route to it".to_string(),
        _ => e.to_string(),
    };
    let hint = if e.kind() == K::ConnectionRefused && !hint.is_empty() { format!(" ({hint})") } else { String::new() };
    format!("cannot reach {what} at {addr}: {why}{hint}")
}

/// The message for a host name that did not resolve: `addr` is HOST:PORT
/// (or a URL's host and port) as the person gave it.
pub fn unresolvable(addr: &str, detail: &dyn std::fmt::Display) -> String {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h).trim_start_matches('[').trim_end_matches(']');
    format!("cannot resolve host {host}: {detail}")
}

/// Resolves HOST:PORT to its addresses, or says in words why not.
pub fn resolve(addr: &str) -> Result<Vec<SocketAddr>, String> {
    match std::net::ToSocketAddrs::to_socket_addrs(addr) {
        Ok(found) => {
            let found: Vec<SocketAddr> = found.collect();
            if found.is_empty() {
                return Err(unresolvable(addr, &"it has no address"));
            }
            Ok(found)
        }
        // "invalid socket address" and the like: no port, a bad port.
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => Err(format!("{addr}: expected HOST:PORT ({e})")),
        Err(e) => Err(unresolvable(addr, &e)),
    }
}

/// An HTTP client's transport failure (`ureq`) in the words of
/// [`unreachable`] and [`unresolvable`].
pub fn http_unreachable(what: &str, addr: &str, t: &ureq::Transport, hint: &str) -> String {
    let io = std::error::Error::source(t).and_then(|s| s.downcast_ref::<std::io::Error>());
    match (t.kind(), io) {
        (ureq::ErrorKind::Dns, Some(e)) => unresolvable(addr, e),
        (ureq::ErrorKind::Dns, None) => unresolvable(addr, &"it has no address"),
        (_, Some(e)) => unreachable(what, addr, e, hint),
        (_, None) => format!("cannot reach {what} at {addr}: {}", t.message().unwrap_or("the request failed")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_gets_at_most_its_share_and_gets_it_back_when_connections_end() {
        let per_ip = PerIp::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = per_ip.take(a, 2).unwrap();
        let _second = per_ip.take(a, 2).unwrap();
        assert!(per_ip.take(a, 2).is_none(), "a third from the same address is refused");
        assert!(per_ip.take(b, 2).is_some(), "another address is not held back");
        drop(first);
        assert!(per_ip.take(a, 2).is_some());
        drop(per_ip.take(b, 2));
        assert!(!per_ip.0.lock().unwrap().contains_key(&b), "an address with no connection is forgotten");
    }

    #[test]
    fn a_refusal_and_an_unknown_host_read_differently() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(
            unreachable("the node", "127.0.0.1:6969", &refused, "is `rumor node` running?"),
            "cannot reach the node at 127.0.0.1:6969: connection refused (is `rumor node` running?)"
        );
        let e = resolve("nosuch.invalid:53").unwrap_err();
        assert!(e.starts_with("cannot resolve host nosuch.invalid: "), "{e}");
        assert!(resolve("127.0.0.1").unwrap_err().contains("expected HOST:PORT"));
        assert_eq!(resolve("127.0.0.1:53").unwrap(), vec!["127.0.0.1:53".parse::<SocketAddr>().unwrap()]);
    }
}
