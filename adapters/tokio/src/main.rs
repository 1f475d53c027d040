//! `rumor`: the rumor node and client on tokio. Everything but the runtime
//! seam is in `rumor-node`; this file is what differs.

use rumor_node::rt::{BoxFuture, ReadHalf, Runtime, TcpListener, TcpStream, UdpSocket, WriteHalf};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::ExitCode;
use std::task::{Context, Poll};
use std::time::Instant;
use tokio_util::compat::TokioAsyncWriteCompatExt;

/// tokio's multi-threaded runtime, one worker per core.
struct Tokio(tokio::runtime::Runtime);

/// tokio's read half with vectored reads: the peer layer reads each
/// block's payload straight into a buffer of its own, and the header
/// before it beside, in one system call. tokio-util's compat would read
/// into the first buffer only.
struct Reader(tokio::net::tcp::OwnedReadHalf);

impl futures_io::AsyncRead for Reader {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let mut rb = tokio::io::ReadBuf::new(buf);
        match tokio::io::AsyncRead::poll_read(Pin::new(&mut self.0), cx, &mut rb) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(rb.filled().len())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_read_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &mut [io::IoSliceMut<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            // A would-block clears the readiness, so the wait below
            // registers this task and returns once there is more.
            match self.0.try_read_vectored(bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                done => return Poll::Ready(done),
            }
            match self.0.as_ref().poll_read_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

fn split(stream: tokio::net::TcpStream) -> TcpStream {
    let _ = stream.set_nodelay(true);
    let (r, w) = stream.into_split();
    let read: ReadHalf = Box::new(Reader(r));
    let write: WriteHalf = Box::new(w.compat_write());
    TcpStream { read, write }
}

impl Runtime for Tokio {
    fn name(&self) -> &'static str {
        "tokio"
    }

    fn block_on(&self, fut: BoxFuture<'static, ()>) {
        self.0.block_on(fut)
    }

    fn spawn(&self, fut: BoxFuture<'static, ()>) {
        self.0.spawn(fut);
    }

    fn spawn_blocking(&self, job: Box<dyn FnOnce() + Send + 'static>) {
        self.0.spawn_blocking(job);
    }

    fn sleep_until(&self, at: Instant) -> BoxFuture<'static, ()> {
        // Timers register with the runtime they are made in.
        let _in_runtime = self.0.enter();
        Box::pin(tokio::time::sleep_until(at.into()))
    }

    fn connect(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<TcpStream>> {
        Box::pin(async move { tokio::net::TcpStream::connect(addr).await.map(split) })
    }

    fn tcp_listener(&self, listener: std::net::TcpListener) -> io::Result<Box<dyn TcpListener>> {
        let _in_runtime = self.0.enter();
        Ok(Box::new(Listener(tokio::net::TcpListener::from_std(listener)?)))
    }

    fn udp_socket(&self, socket: std::net::UdpSocket) -> io::Result<Box<dyn UdpSocket>> {
        let _in_runtime = self.0.enter();
        Ok(Box::new(Udp(tokio::net::UdpSocket::from_std(socket)?)))
    }
}

struct Listener(tokio::net::TcpListener);

impl TcpListener for Listener {
    fn accept(&self) -> BoxFuture<'_, io::Result<(TcpStream, SocketAddr)>> {
        Box::pin(async move { self.0.accept().await.map(|(s, a)| (split(s), a)) })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

struct Udp(tokio::net::UdpSocket);

impl UdpSocket for Udp {
    fn send_to<'a>(&'a self, buf: &'a [u8], to: SocketAddr) -> BoxFuture<'a, io::Result<usize>> {
        Box::pin(self.0.send_to(buf, to))
    }

    fn recv_from<'a>(&'a self, buf: &'a mut [u8]) -> BoxFuture<'a, io::Result<(usize, SocketAddr)>> {
        Box::pin(self.0.recv_from(buf))
    }
}

/// `rumor get` and `rumor seed` run one torrent, whose loop (decoding,
/// hashing, picking) is one task, beside its own disk thread. A second
/// worker only moves what each connection reads to the other core before
/// the loop hashes it there, from memory instead of cache, and wakes
/// threads across cores for every read. Over loopback
/// (`bench/bt_loopback.sh`, 1 GiB, six runs each way) one worker took
/// 1.68 CPU s/GiB from a libtorrent seeder and 1.59 from a rumor seeder
/// on average, two workers 1.83 and 1.76, and the slowest of the one-worker
/// runs was 1.60x libtorrent's leecher against 1.24x with two. So these
/// commands get one worker unless `TOKIO_WORKER_THREADS` says otherwise;
/// the node (DNS, gossip, many torrents) gets one per core.
fn one_torrent_command() -> bool {
    let command = std::env::args().nth(1);
    matches!(command.as_deref(), Some("get" | "seed"))
        && std::env::var_os("TOKIO_WORKER_THREADS").is_none_or(|v| v.is_empty())
}

fn main() -> ExitCode {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if one_torrent_command() {
        builder.worker_threads(1);
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rumor: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rumor_node::main("rumor", Box::new(Tokio(runtime)))
}
