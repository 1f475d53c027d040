//! Serves an axum [`Router`] over any runtime: the accept loop and HTTP/1.1
//! connections (hyper) run on [`crate::rt`], so the API's handlers and its
//! server are the same code under tokio and smol.
//!
//! Each request carries the connection's peer address as a [`PeerAddr`]
//! extension (what the tracker's `/announce` records as the peer's IP).

use crate::rt;
use axum::Router;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// HTTP connections served at once; more wait in the kernel's backlog.
const CONNECTIONS_MAX: usize = 1024;
/// A client gets this long to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The remote address of the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// Serves `router` on `listener` until `shutdown` fires; connections in
/// progress then get a moment to finish (the caller bounds the wait).
pub async fn serve(listener: Box<dyn rt::TcpListener>, router: Router, shutdown: rt::Shutdown) {
    let permits = Arc::new(async_lock::Semaphore::new(CONNECTIONS_MAX));
    loop {
        let permit = futures::select_biased! {
            _ = futures::FutureExt::fuse(shutdown.wait()) => return,
            p = futures::FutureExt::fuse(permits.acquire_arc()) => p,
        };
        let (stream, peer) = futures::select_biased! {
            _ = futures::FutureExt::fuse(shutdown.wait()) => return,
            accepted = futures::FutureExt::fuse(listener.accept()) => match accepted {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("HTTP accept: {e}");
                    rt::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let router = router.clone();
        let shutdown = shutdown.clone();
        rt::spawn(async move {
            let _permit = permit;
            serve_connection(stream, peer, router, shutdown).await;
        });
    }
}

async fn serve_connection(stream: rt::TcpStream, peer: SocketAddr, router: Router, shutdown: rt::Shutdown) {
    use tower::ServiceExt;
    let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(PeerAddr(peer));
        router.clone().oneshot(req.map(axum::body::Body::new))
    });
    let io = smol_hyper::rt::FuturesIo::new(stream);
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(RtTimer)
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    futures::select_biased! {
        res = futures::FutureExt::fuse(conn.as_mut()) => {
            if let Err(e) = res {
                tracing::trace!(%peer, "HTTP connection: {e}");
            }
            return;
        }
        _ = futures::FutureExt::fuse(shutdown.wait()) => {}
    }
    // Shutting down: finish the request in flight, take no other.
    conn.as_mut().graceful_shutdown();
    let _ = rt::timeout(Duration::from_secs(5), conn).await;
}

/// hyper's timer (for the header read timeout) on top of [`rt::sleep`].
#[derive(Clone, Copy, Debug)]
struct RtTimer;

/// hyper wants its sleeps `Sync`; the mutex is never contended (only
/// `poll`, through `&mut`, touches it).
struct RtSleep(std::sync::Mutex<rt::BoxFuture<'static, ()>>);

impl std::future::Future for RtSleep {
    type Output = ();
    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        match self.0.get_mut() {
            Ok(fut) => fut.as_mut().poll(cx),
            Err(poisoned) => poisoned.into_inner().as_mut().poll(cx),
        }
    }
}

impl hyper::rt::Sleep for RtSleep {}

impl hyper::rt::Timer for RtTimer {
    fn sleep(&self, d: Duration) -> std::pin::Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(RtSleep(std::sync::Mutex::new(rt::sleep(d))))
    }

    fn sleep_until(&self, at: std::time::Instant) -> std::pin::Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(RtSleep(std::sync::Mutex::new(rt::sleep_until(at))))
    }

    fn reset(&self, sleep: &mut std::pin::Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: std::time::Instant) {
        *sleep = self.sleep_until(new_deadline);
    }
}
