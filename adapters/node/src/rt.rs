//! The runtime seam: everything the node and the client need from an async
//! runtime, as one small object-safe trait, and the helpers built on it.
//!
//! An adapter crate (`rumor-tokio`, `rumor-smol`) implements [`Runtime`]
//! and hands it to [`crate::main`]; every other line of the program is
//! written once, here, against these functions. What the trait covers is
//! what really differs between runtimes: spawning, the blocking pool,
//! timers, and sockets (TCP streams and listeners, UDP). Channels, locks,
//! `select`, timeouts and task handles come from runtime-neutral crates
//! (`async-channel`, `async-lock`, `futures`), so they are shared too.
//!
//! Futures cross the seam boxed: one allocation per sleep, accept or
//! connect, which is noise beside the system calls behind them. Streams
//! are the `futures-io` traits, split into halves so a reader and a
//! writer can live on different tasks without a lock.

use futures::io::{AsyncRead, AsyncWrite};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
/// The read half of a TCP connection.
pub type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
/// The write half of a TCP connection.
pub type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

/// What an adapter provides.
pub trait Runtime: Send + Sync + 'static {
    /// The runtime's name, for logs and `--version`.
    fn name(&self) -> &'static str;
    /// Runs `fut` to completion on this runtime, blocking the caller.
    fn block_on(&self, fut: BoxFuture<'static, ()>);
    /// Runs `fut` in the background.
    fn spawn(&self, fut: BoxFuture<'static, ()>);
    /// Runs `job` on a thread where blocking is allowed.
    fn spawn_blocking(&self, job: Box<dyn FnOnce() + Send + 'static>);
    /// Completes at `at`.
    fn sleep_until(&self, at: Instant) -> BoxFuture<'static, ()>;
    /// Opens a TCP connection (with `TCP_NODELAY`: every stream we open
    /// carries small latency-bound messages).
    fn connect(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<TcpStream>>;
    /// Adopts a bound, listening standard socket.
    fn tcp_listener(&self, listener: std::net::TcpListener) -> io::Result<Box<dyn TcpListener>>;
    /// Adopts a bound standard UDP socket.
    fn udp_socket(&self, socket: std::net::UdpSocket) -> io::Result<Box<dyn UdpSocket>>;
}

/// A listening TCP socket.
pub trait TcpListener: Send + Sync {
    /// The next connection (with `TCP_NODELAY` set) and its peer.
    fn accept(&self) -> BoxFuture<'_, io::Result<(TcpStream, SocketAddr)>>;
    /// The bound address.
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// A UDP socket.
pub trait UdpSocket: Send + Sync {
    /// Sends one datagram.
    fn send_to<'a>(&'a self, buf: &'a [u8], to: SocketAddr) -> BoxFuture<'a, io::Result<usize>>;
    /// Receives one datagram.
    fn recv_from<'a>(&'a self, buf: &'a mut [u8]) -> BoxFuture<'a, io::Result<(usize, SocketAddr)>>;
}

/// A TCP connection as two halves; also usable whole.
pub struct TcpStream {
    /// Reading side.
    pub read: ReadHalf,
    /// Writing side.
    pub write: WriteHalf,
}

impl TcpStream {
    /// The two halves.
    pub fn into_split(self) -> (ReadHalf, WriteHalf) {
        (self.read, self.write)
    }
}

impl AsyncRead for TcpStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.read).poll_read(cx, buf)
    }
}

impl AsyncWrite for TcpStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.write).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.write).poll_write_vectored(cx, bufs)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.write).poll_flush(cx)
    }
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.write).poll_close(cx)
    }
}

static RUNTIME: OnceLock<Box<dyn Runtime>> = OnceLock::new();

/// Makes `rt` the process's runtime; the first call wins.
pub fn install(rt: Box<dyn Runtime>) {
    let _ = RUNTIME.set(rt);
}

/// The installed runtime.
///
/// # Panics
/// If no adapter installed one: a bug in the adapter's `main`.
pub fn runtime() -> &'static dyn Runtime {
    RUNTIME.get().expect("an adapter installs its runtime before anything runs").as_ref()
}

/// Runs `fut` to completion on the installed runtime and returns its output.
pub fn block_on<T: Send + 'static>(fut: impl Future<Output = T> + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime().block_on(Box::pin(async move {
        let _ = tx.send(fut.await);
    }));
    rx.recv().expect("block_on returns once the future has completed")
}

/// A spawned task: await it for its output, or abort it.
pub struct JoinHandle<T> {
    rx: futures::channel::oneshot::Receiver<T>,
    abort: futures::future::AbortHandle,
}

/// The task ended without an output: aborted, or it panicked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinError;

impl std::fmt::Display for JoinError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the task ended without a result")
    }
}

impl<T> JoinHandle<T> {
    /// Stops the task at its next await.
    pub fn abort(&self) {
        self.abort.abort();
    }

    /// A handle that only aborts.
    pub fn abort_handle(&self) -> AbortHandle {
        AbortHandle(self.abort.clone())
    }
}

/// Aborts a task; dropping it does nothing.
#[derive(Clone, Debug)]
pub struct AbortHandle(futures::future::AbortHandle);

impl AbortHandle {
    /// Stops the task at its next await.
    pub fn abort(&self) {
        self.0.abort();
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx).poll(cx).map(|r| r.map_err(|_| JoinError))
    }
}

/// Runs `fut` in the background. Dropping the handle detaches the task.
pub fn spawn<T: Send + 'static>(fut: impl Future<Output = T> + Send + 'static) -> JoinHandle<T> {
    let (tx, rx) = futures::channel::oneshot::channel();
    let (abort, registration) = futures::future::AbortHandle::new_pair();
    let task = futures::future::Abortable::new(fut, registration);
    runtime().spawn(Box::pin(async move {
        if let Ok(out) = task.await {
            let _ = tx.send(out);
        }
    }));
    JoinHandle { rx, abort }
}

/// Runs `job` where blocking is allowed; its result, or an error if it
/// panicked.
pub async fn spawn_blocking<T: Send + 'static>(job: impl FnOnce() -> T + Send + 'static) -> Result<T, JoinError> {
    let (tx, rx) = futures::channel::oneshot::channel();
    runtime().spawn_blocking(Box::new(move || {
        let _ = tx.send(job());
    }));
    rx.await.map_err(|_| JoinError)
}

/// Runs `job` where blocking is allowed, without waiting for it.
pub fn spawn_blocking_detached(job: impl FnOnce() + Send + 'static) {
    runtime().spawn_blocking(Box::new(job));
}

/// Completes at `at`.
pub fn sleep_until(at: Instant) -> BoxFuture<'static, ()> {
    runtime().sleep_until(at)
}

/// Completes after `d`.
pub fn sleep(d: Duration) -> BoxFuture<'static, ()> {
    runtime().sleep_until(Instant::now() + d)
}

/// The deadline passed first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

impl std::fmt::Display for Elapsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("timed out")
    }
}

/// `fut`'s output, unless `d` passes first.
pub async fn timeout<T>(d: Duration, fut: impl Future<Output = T>) -> Result<T, Elapsed> {
    let fut = std::pin::pin!(fut);
    match futures::future::select(fut, sleep(d)).await {
        futures::future::Either::Left((out, _)) => Ok(out),
        futures::future::Either::Right(_) => Err(Elapsed),
    }
}

/// Opens a TCP connection.
pub async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    runtime().connect(addr).await
}

/// Binds a TCP listener (the standard library sets `SO_REUSEADDR` on Unix,
/// so a restarted node gets its port back while old connections linger).
pub fn bind_tcp(addr: SocketAddr) -> io::Result<Box<dyn TcpListener>> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    runtime().tcp_listener(listener)
}

/// Binds a UDP socket.
pub fn bind_udp(addr: SocketAddr) -> io::Result<Box<dyn UdpSocket>> {
    let socket = std::net::UdpSocket::bind(addr)?;
    socket.set_nonblocking(true)?;
    runtime().udp_socket(socket)
}

/// Resolves `host:port` on the blocking pool (the system resolver blocks).
pub async fn lookup_host(target: String) -> io::Result<Vec<SocketAddr>> {
    if let Ok(addr) = target.parse::<SocketAddr>() {
        return Ok(vec![addr]);
    }
    spawn_blocking(move || std::net::ToSocketAddrs::to_socket_addrs(target.as_str()).map(|a| a.collect()))
        .await
        .map_err(|e| io::Error::other(e.to_string()))?
}

/// A shutdown signal that many tasks can wait on; it fires once.
#[derive(Clone)]
pub struct Shutdown {
    rx: async_channel::Receiver<()>,
}

/// Fires the [`Shutdown`] it was made with (also when dropped).
pub struct ShutdownTrigger {
    tx: async_channel::Sender<()>,
}

impl Shutdown {
    /// A new signal and its trigger.
    pub fn new() -> (ShutdownTrigger, Shutdown) {
        let (tx, rx) = async_channel::bounded(1);
        (ShutdownTrigger { tx }, Shutdown { rx })
    }

    /// Completes once the trigger fired or was dropped.
    pub async fn wait(&self) {
        while self.rx.recv().await.is_ok() {}
    }

    /// True once fired.
    pub fn is_fired(&self) -> bool {
        self.rx.is_closed()
    }
}

impl ShutdownTrigger {
    /// Fires the signal.
    pub fn fire(&self) {
        self.tx.close();
    }
}

/// SIGINT and SIGTERM, as a channel that yields the signal's name. A
/// thread waits for them (signal-hook), so any runtime can listen.
pub fn termination_signals() -> async_channel::Receiver<&'static str> {
    static CHANNEL: OnceLock<async_channel::Receiver<&'static str>> = OnceLock::new();
    CHANNEL
        .get_or_init(|| {
            let (tx, rx) = async_channel::unbounded();
            match signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM]) {
                Ok(mut signals) => {
                    let spawned = std::thread::Builder::new().name("signals".into()).spawn(move || {
                        for sig in signals.forever() {
                            let name = if sig == signal_hook::consts::SIGINT { "SIGINT" } else { "SIGTERM" };
                            if tx.try_send(name).is_err() {
                                return;
                            }
                        }
                    });
                    if let Err(e) = spawned {
                        tracing::warn!("cannot start the signal thread: {e}");
                    }
                }
                Err(e) => tracing::warn!("cannot catch SIGINT/SIGTERM: {e}"),
            }
            rx
        })
        .clone()
}

/// Waits for SIGINT or SIGTERM.
pub async fn wait_for_signal() -> &'static str {
    termination_signals().recv().await.unwrap_or("signal")
}

/// Receives from an optional channel; pends forever when there is none or
/// it closed (`None` is returned once, when it closes).
pub async fn recv_opt<T>(rx: &mut Option<async_channel::Receiver<T>>) -> Option<T> {
    match rx {
        Some(r) => match r.recv().await {
            Ok(v) => Some(v),
            Err(_) => {
                *rx = None;
                None
            }
        },
        None => futures::future::pending().await,
    }
}
