//! Stream plumbing shared by the DNS-over-TCP and gossip listeners: a
//! bounded accept loop and length-prefixed frames with an idle timeout.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

/// Accepts connections until `shutdown` changes, serving each with
/// `serve` on its own task; at most `max` are served at once (the rest wait
/// in the kernel's backlog).
pub async fn accept_bounded<F, Fut>(
    listener: TcpListener,
    max: usize,
    what: &'static str,
    mut shutdown: watch::Receiver<bool>,
    serve: F,
) where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(max));
    loop {
        let permit = tokio::select! {
            _ = shutdown.changed() => return,
            p = permits.clone().acquire_owned() => p.expect("semaphore never closes"),
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("{what} accept: {e}");
                    continue;
                }
            },
        };
        let conn = serve(stream, peer);
        tokio::spawn(async move {
            let _permit = permit;
            conn.await;
        });
    }
}

/// Reads one frame: a big-endian length of `PREFIX` bytes (2 or 4), then
/// that many bytes. `None` at end of stream, after `idle` without the next
/// byte, or for a length over `max` (the caller closes the connection).
pub async fn read_frame<const PREFIX: usize>(stream: &mut TcpStream, max: usize, idle: Duration) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    tokio::time::timeout(idle, stream.read_exact(&mut len[4 - PREFIX..])).await.ok()?.ok()?;
    let n = u32::from_be_bytes(len) as usize;
    if n > max {
        tracing::debug!(n, max, "frame over the limit; closing");
        return None;
    }
    let mut buf = vec![0u8; n];
    tokio::time::timeout(idle, stream.read_exact(&mut buf)).await.ok()?.ok()?;
    Some(buf)
}
