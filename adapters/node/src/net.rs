//! Stream plumbing shared by the DNS-over-TCP and gossip listeners: a
//! bounded accept loop and length-prefixed frames with an idle timeout.

use crate::rt;
use futures::{AsyncReadExt, FutureExt};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Accepts connections until `shutdown` fires, serving each with `serve`
/// on its own task; at most `max` are served at once (the rest wait in the
/// kernel's backlog).
pub async fn accept_bounded<F, Fut>(
    listener: Box<dyn rt::TcpListener>,
    max: usize,
    what: &'static str,
    shutdown: rt::Shutdown,
    serve: F,
) where
    F: Fn(rt::TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(async_lock::Semaphore::new(max));
    loop {
        let permit = futures::select_biased! {
            _ = shutdown.wait().fuse() => return,
            p = permits.acquire_arc().fuse() => p,
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
        let conn = serve(stream, peer);
        rt::spawn(async move {
            let _permit = permit;
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
