//! Serves an axum [`Router`] over any runtime: the accept loop and HTTP/1.1
//! connections (hyper) run on [`crate::rt`], so the API's handlers and its
//! server are the same code under tokio and smol.
//!
//! Each request carries the connection's peer address as a [`PeerAddr`]
//! extension (what the tracker's `/announce` records as the peer's IP).
//!
//! What a hostile client can hold is bounded here, before any handler runs:
//! - a request's body is read whole, within [`Limits::body_timeout`], into
//!   one buffer of at most [`Limits::body_max_bytes`] (a larger declared
//!   `Content-Length` is refused at once with 413), copying each frame out
//!   as it comes: hyper hands the body over in slices of its 8 KiB read
//!   buffer, and keeping those slices (as axum's own collection does) pinned
//!   8 KiB per packet, 8 KiB per byte for a body sent one byte at a time;
//! - the bytes of request bodies being received or handled, across all
//!   connections, are at most [`Limits::bodies_in_flight_max_bytes`]: a
//!   body that would go past it is refused with 503 (read to its end and
//!   dropped, so the client reads the answer; then the connection is
//!   closed), so many slow uploads together cannot take the memory one
//!   body's limit allows each;
//! - the headers have [`Limits::header_timeout`];
//! - a response must be taken: a write that makes no progress for
//!   [`Limits::write_timeout`] (the client does not read) closes the
//!   connection, so a client cannot hold a slot, and the response's
//!   memory, by never reading;
//! - when all [`Limits::connections_max`] slots are taken, the connection
//!   that has waited longest on its client (idle, or sending a request
//!   slowly) is closed to make room, so slow clients cannot starve the
//!   others; a connection whose request a handler is working on is never
//!   closed that way.

use crate::rt;
use axum::response::IntoResponse;
use axum::Router;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// HTTP connections served at once by default.
pub const CONNECTIONS_MAX: usize = 1024;
/// Largest request body by default: a full `/add` batch (10,000 records,
/// about 650 KB) fits.
pub const BODY_MAX_BYTES: usize = 1 << 20;
/// Largest body of `POST /torrents` (a .torrent file): the metainfo
/// parser's own limit, since a torrent of many small pieces is over 1 MiB.
pub const TORRENT_BODY_MAX_BYTES: usize = 16 << 20;
/// Bytes of request bodies held at once across all connections by default
/// (64 full-size bodies).
pub const BODIES_IN_FLIGHT_MAX_BYTES: usize = 64 * BODY_MAX_BYTES;
/// A client gets this long to send a request's headers (and an idle
/// keep-alive connection this long to start its next request).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A client gets this long, after its headers, to send the whole body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// hyper's read buffer per connection, at most (headers must fit).
const READ_BUFFER_BYTES: usize = 64 * 1024;
/// A write to a client may wait this long for it to read.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a full accept loop looks again for a connection to close,
/// when every slot was busy with a handler.
const FULL_RETRY: Duration = Duration::from_millis(100);

/// What one server lets its clients hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once; when full, the one waiting longest on
    /// its client is closed for a new one.
    pub connections_max: usize,
    /// Largest request body; a larger one is refused with 413.
    pub body_max_bytes: usize,
    /// Largest body of `POST /torrents` (the only request that carries a
    /// file); still inside the shared budget.
    pub torrent_body_max_bytes: usize,
    /// Bytes of request bodies received and not yet handled (the
    /// capacity of the buffers holding them), across all connections; a
    /// body that would go past it is refused with 503.
    pub bodies_in_flight_max_bytes: usize,
    /// Time for a request's headers (or for an idle connection's next
    /// request to start).
    pub header_timeout: Duration,
    /// Time, after the headers, for the whole body (408 past it).
    pub body_timeout: Duration,
    /// Time one write to the client may wait for it to read; the
    /// connection is closed past it.
    pub write_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connections_max: CONNECTIONS_MAX,
            body_max_bytes: BODY_MAX_BYTES,
            torrent_body_max_bytes: TORRENT_BODY_MAX_BYTES,
            bodies_in_flight_max_bytes: BODIES_IN_FLIGHT_MAX_BYTES,
            header_timeout: HEADER_TIMEOUT,
            body_timeout: BODY_TIMEOUT,
            write_timeout: WRITE_TIMEOUT,
        }
    }
}

/// The remote address of the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// Serves `router` on `listener` with the default [`Limits`] until
/// `shutdown` fires.
pub async fn serve(listener: Box<dyn rt::TcpListener>, router: Router, shutdown: rt::Shutdown) {
    serve_with(listener, router, shutdown, Limits::default()).await
}

/// Serves `router` on `listener` until `shutdown` fires; connections in
/// progress then get a moment to finish (the caller bounds the wait).
pub async fn serve_with(listener: Box<dyn rt::TcpListener>, router: Router, shutdown: rt::Shutdown, limits: Limits) {
    let permits = Arc::new(async_lock::Semaphore::new(limits.connections_max.max(1)));
    let slots = Arc::new(Slots::default());
    let server = Arc::new(Server { limits, bodies: Budget::new(limits.bodies_in_flight_max_bytes) });
    loop {
        let (stream, peer) = futures::select_biased! {
            _ = futures::FutureExt::fuse(shutdown.wait()) => return,
            accepted = futures::FutureExt::fuse(listener.accept()) => match accepted {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("HTTP accept: {e}");
                    // Out of file descriptors: free one, or the listener
                    // stays stuck while slow clients hold them all.
                    if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) {
                        slots.close_longest_waiting();
                    }
                    rt::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let permit = loop {
            if let Some(p) = permits.try_acquire_arc() {
                break Some(p);
            }
            if slots.close_longest_waiting() {
                tracing::debug!(%peer, "HTTP connections full: closed the one waiting longest on its client");
            }
            futures::select_biased! {
                _ = futures::FutureExt::fuse(shutdown.wait()) => break None,
                p = futures::FutureExt::fuse(permits.acquire_arc()) => break Some(p),
                _ = futures::FutureExt::fuse(rt::sleep(FULL_RETRY)) => {}
            }
        };
        let Some(permit) = permit else { return };
        let router = router.clone();
        let shutdown = shutdown.clone();
        let server = server.clone();
        let (slot, closed) = slots.open();
        rt::spawn(async move {
            let _permit = permit;
            serve_connection(stream, peer, router, shutdown, server, slot, closed).await;
        });
    }
}

/// The connections of one server, for choosing which one gives way.
#[derive(Default)]
struct Slots {
    inner: Mutex<SlotsInner>,
}

#[derive(Default)]
struct SlotsInner {
    next_id: u64,
    /// Bounded by the server's `connections_max` (one per permit).
    open: BTreeMap<u64, SlotState>,
}

struct SlotState {
    /// Since when the connection waits on its client (for a request, or
    /// for the rest of one); `None` while a handler works on a request.
    waiting_since: Option<Instant>,
    /// Fired to close the connection.
    close: Option<futures::channel::oneshot::Sender<()>>,
}

impl Slots {
    fn lock(&self) -> std::sync::MutexGuard<'_, SlotsInner> {
        // Never held across an await; a panic while held leaves the map
        // whole (every change is one insert, remove or field store).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a new connection, waiting on its client from now.
    fn open(self: &Arc<Self>) -> (Slot, futures::channel::oneshot::Receiver<()>) {
        let (tx, rx) = futures::channel::oneshot::channel();
        let mut inner = self.lock();
        let id = inner.next_id;
        inner.next_id += 1;
        inner.open.insert(id, SlotState { waiting_since: Some(Instant::now()), close: Some(tx) });
        (Slot { slots: self.clone(), id }, rx)
    }

    /// Closes the connection that has waited longest on its client; false
    /// when every connection has a handler at work.
    fn close_longest_waiting(&self) -> bool {
        let mut inner = self.lock();
        let oldest = inner
            .open
            .iter()
            .filter(|(_, s)| s.close.is_some())
            .filter_map(|(id, s)| s.waiting_since.map(|t| (t, *id)))
            .min();
        let Some((_, id)) = oldest else { return false };
        if let Some(tx) = inner.open.get_mut(&id).and_then(|s| s.close.take()) {
            let _ = tx.send(());
        }
        true
    }
}

/// One connection's entry in [`Slots`], removed when dropped.
#[derive(Clone)]
struct Slot {
    slots: Arc<Slots>,
    id: u64,
}

impl Slot {
    /// A handler starts on a request: the connection is busy on our side.
    fn busy(&self) {
        if let Some(s) = self.slots.lock().open.get_mut(&self.id) {
            s.waiting_since = None;
        }
    }

    /// The response is out: the connection waits on its client again.
    fn waiting(&self) {
        if let Some(s) = self.slots.lock().open.get_mut(&self.id) {
            s.waiting_since = Some(Instant::now());
        }
    }

    fn close(&self) {
        self.slots.lock().open.remove(&self.id);
    }
}

/// Removes the connection's entry however its task ends.
struct SlotGuard(Slot);

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// What a server's connections share.
struct Server {
    limits: Limits,
    /// Bytes of request bodies held across the connections.
    bodies: Budget,
}

/// The bytes of request bodies held across a server's connections, and
/// their limit.
struct Budget {
    held: std::sync::atomic::AtomicUsize,
    max: usize,
}

impl Budget {
    fn new(max: usize) -> Self {
        Budget { held: std::sync::atomic::AtomicUsize::new(0), max }
    }

    /// Takes `n` more bytes for `r`; false (nothing taken) past the limit.
    fn take(&self, r: &mut Reserved<'_>, n: usize) -> bool {
        use std::sync::atomic::Ordering;
        let took = self
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |h| h.checked_add(n).filter(|t| *t <= self.max))
            .is_ok();
        if took {
            r.bytes += n;
        }
        took
    }
}

/// Bytes of a [`Budget`] one body holds, given back when dropped.
struct Reserved<'a> {
    budget: &'a Budget,
    bytes: usize,
}

impl Reserved<'_> {
    /// Gives back everything taken so far.
    fn give_back(&mut self) {
        self.budget.held.fetch_sub(std::mem::take(&mut self.bytes), std::sync::atomic::Ordering::AcqRel);
    }
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        self.give_back();
    }
}

/// Why a request's body was not read.
enum BodyRefused {
    TooLarge(usize),
    TooSlow(Duration),
    Busy(usize),
    Broken(hyper::Error),
}

impl BodyRefused {
    /// A JSON refusal, like every other the API gives; the connection
    /// closes after it (the rest of the body is not read).
    fn response(self) -> axum::response::Response {
        use axum::http::{header, StatusCode};
        let (status, msg) = match self {
            BodyRefused::TooLarge(max) => {
                (StatusCode::PAYLOAD_TOO_LARGE, format!("a request body is at most {max} bytes"))
            }
            BodyRefused::TooSlow(d) => {
                (StatusCode::REQUEST_TIMEOUT, format!("the body did not arrive within {} s", d.as_secs()))
            }
            BodyRefused::Busy(max) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the node is receiving {max} bytes of request bodies already; try again shortly"),
            ),
            BodyRefused::Broken(e) => (StatusCode::BAD_REQUEST, format!("cannot read the body: {e}")),
        };
        let mut resp =
            (status, [(header::CONNECTION, "close")], axum::Json(serde_json::json!({ "error": msg }))).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut().insert(header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
        }
        resp
    }
}

/// Reads a request's whole body into one buffer: refused at once if its
/// declared length is over `limits.body_max_bytes` (for a `torrent_upload`,
/// `limits.torrent_body_max_bytes`), or once more than that
/// arrives, or once the bodies held across connections would go past
/// `budget`, or when `limits.body_timeout` passes first. What it holds of
/// the budget is given back when the returned [`Reserved`] is dropped.
async fn read_body<'a>(
    headers: &axum::http::HeaderMap,
    torrent_upload: bool,
    mut body: hyper::body::Incoming,
    limits: Limits,
    budget: &'a Budget,
) -> Result<(bytes::Bytes, Reserved<'a>), BodyRefused> {
    let mut reserved = Reserved { budget, bytes: 0 };
    let max = if torrent_upload { limits.torrent_body_max_bytes } else { limits.body_max_bytes };
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(BodyRefused::TooLarge(max));
    }
    let collect = async {
        let mut buf: Vec<u8> = Vec::new();
        // Past the budget, the rest of the body is read and dropped, so
        // the client (which sends it before reading the answer) reads a
        // clean 503 rather than a reset; its length is still bounded.
        let mut busy = false;
        let mut len = 0usize;
        loop {
            let frame =
                futures::future::poll_fn(|cx| hyper::body::Body::poll_frame(std::pin::Pin::new(&mut body), cx)).await;
            let Some(frame) = frame else { break };
            let Ok(data) = frame.map_err(BodyRefused::Broken)?.into_data() else { continue };
            len += data.len();
            if len > max {
                return Err(BodyRefused::TooLarge(max));
            }
            if busy {
                continue;
            }
            // The budget counts the buffer's capacity, grown by doubling
            // (up to the body limit) as data comes.
            let need = buf.len() + data.len();
            if need > buf.capacity() {
                let cap = need.max(2 * buf.capacity()).min(max);
                if !budget.take(&mut reserved, cap - buf.capacity()) {
                    busy = true;
                    buf = Vec::new();
                    reserved.give_back();
                    continue;
                }
                buf.reserve_exact(cap - buf.len());
            }
            // Copied, and the frame dropped: it is a slice of hyper's read
            // buffer and would keep all of it alive.
            buf.extend_from_slice(&data);
        }
        if busy {
            return Err(BodyRefused::Busy(budget.max));
        }
        Ok(buf)
    };
    match rt::timeout(limits.body_timeout, collect).await {
        Ok(Ok(buf)) => Ok((bytes::Bytes::from(buf), reserved)),
        Ok(Err(refused)) => Err(refused),
        Err(rt::Elapsed) => Err(BodyRefused::TooSlow(limits.body_timeout)),
    }
}

async fn serve_connection(
    stream: rt::TcpStream,
    peer: SocketAddr,
    router: Router,
    shutdown: rt::Shutdown,
    server: Arc<Server>,
    slot: Slot,
    closed: futures::channel::oneshot::Receiver<()>,
) {
    use tower::ServiceExt;
    let limits = server.limits;
    let _guard = SlotGuard(slot.clone());
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let router = router.clone();
        let slot = slot.clone();
        let server = server.clone();
        async move {
            let (parts, body) = req.into_parts();
            // Held until the handler is done with the body.
            let torrent_upload = parts.method == hyper::Method::POST && parts.uri.path() == "/torrents";
            let (body, _reserved) = match read_body(&parts.headers, torrent_upload, body, limits, &server.bodies).await
            {
                Ok(b) => b,
                Err(refused) => {
                    slot.waiting();
                    return Ok(refused.response());
                }
            };
            slot.busy();
            let mut req = hyper::Request::from_parts(parts, axum::body::Body::from(body));
            req.extensions_mut().insert(PeerAddr(peer));
            let resp = router.oneshot(req).await;
            slot.waiting();
            resp
        }
    });
    let io = smol_hyper::rt::FuturesIo::new(WriteDeadline::new(stream, limits.write_timeout));
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(RtTimer)
        .header_read_timeout(limits.header_timeout)
        // hyper's read buffer per connection (its default grows to about
        // 400 KiB): bodies are copied out of it frame by frame, so a
        // small one costs no speed, and 1,024 connections cannot hold
        // 400 MiB of it. Headers must fit in it.
        .max_buf_size(READ_BUFFER_BYTES)
        .serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    futures::select_biased! {
        res = futures::FutureExt::fuse(conn.as_mut()) => {
            if let Err(e) = res {
                tracing::trace!(%peer, "HTTP connection: {e}");
            }
            return;
        }
        _ = futures::FutureExt::fuse(closed) => {
            tracing::trace!(%peer, "HTTP connection closed to make room");
            return;
        }
        _ = futures::FutureExt::fuse(shutdown.wait()) => {}
    }
    // Shutting down: finish the request in flight, take no other.
    conn.as_mut().graceful_shutdown();
    let _ = rt::timeout(Duration::from_secs(5), conn).await;
}

/// A stream whose writes fail with `TimedOut` once one has waited
/// `limit` for the peer to read (hyper then drops the connection).
struct WriteDeadline {
    inner: rt::TcpStream,
    limit: Duration,
    /// Armed while a write (or flush) is pending; cleared by progress.
    stalled: Option<rt::BoxFuture<'static, ()>>,
}

impl WriteDeadline {
    fn new(inner: rt::TcpStream, limit: Duration) -> Self {
        WriteDeadline { inner, limit, stalled: None }
    }

    /// After a pending write or flush: arms the deadline if needed and
    /// fails once it passed.
    fn pending<T>(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<T>> {
        let limit = self.limit;
        let timer = self.stalled.get_or_insert_with(|| rt::sleep(limit));
        match timer.as_mut().poll(cx) {
            std::task::Poll::Ready(()) => std::task::Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client did not read its response",
            ))),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}

impl futures::io::AsyncRead for WriteDeadline {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl futures::io::AsyncWrite for WriteDeadline {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match std::pin::Pin::new(&mut self.inner).poll_write(cx, buf) {
            std::task::Poll::Pending => self.pending(cx),
            ready => {
                self.stalled = None;
                ready
            }
        }
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match std::pin::Pin::new(&mut self.inner).poll_flush(cx) {
            std::task::Poll::Pending => self.pending(cx),
            ready => {
                self.stalled = None;
                ready
            }
        }
    }

    fn poll_close(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_close(cx)
    }
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

#[cfg(test)]
mod tests {
    use super::{Budget, Reserved, Slots};
    use std::sync::Arc;

    #[test]
    fn bodies_take_the_budget_up_to_its_limit_and_give_it_back_when_done() {
        let budget = Budget::new(100);
        let mut a = Reserved { budget: &budget, bytes: 0 };
        let mut b = Reserved { budget: &budget, bytes: 0 };
        assert!(budget.take(&mut a, 60));
        assert!(!budget.take(&mut b, 41), "past the limit");
        assert!(budget.take(&mut b, 40));
        assert!(!budget.take(&mut b, 1));
        drop(a);
        assert!(budget.take(&mut b, 60), "a finished body gave its bytes back");
        drop(b);
        assert_eq!(budget.held.load(std::sync::atomic::Ordering::Relaxed), 0);
    }

    #[test]
    fn the_connection_waiting_longest_on_its_client_gives_way_and_a_busy_one_never() {
        let slots = Arc::new(Slots::default());
        let tick = || std::thread::sleep(std::time::Duration::from_millis(2));
        let (oldest, mut oldest_closed) = slots.open();
        tick();
        let (busy, mut busy_closed) = slots.open();
        let (_young, mut young_closed) = slots.open();
        tick();
        oldest.busy();
        oldest.waiting(); // back to waiting: now younger than `busy` and `young`
        busy.busy();
        assert!(slots.close_longest_waiting());
        assert_eq!(young_closed.try_recv(), Ok(Some(())), "the longest waiting goes first");
        assert!(slots.close_longest_waiting());
        assert_eq!(oldest_closed.try_recv(), Ok(Some(())));
        assert!(!slots.close_longest_waiting(), "a connection with a handler at work stays");
        assert_eq!(busy_closed.try_recv(), Ok(None));
        busy.close();
        assert!(!slots.lock().open.contains_key(&busy.id), "a connection's entry goes with it");
    }
}
