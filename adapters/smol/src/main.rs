//! `rumor-smol`: the rumor node and client on smol. Everything but the
//! runtime seam is in `rumor-node`; this file is what differs.

use rumor_node::rt::{BoxFuture, ReadHalf, Runtime, TcpListener, TcpStream, UdpSocket, WriteHalf};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

/// A multi-threaded smol executor: one thread per core runs its tasks
/// (smol's own global executor has one thread unless `SMOL_THREADS` says
/// otherwise), and the thread in `block_on` helps.
struct Smol(Arc<smol::Executor<'static>>);

impl Smol {
    fn start() -> io::Result<Smol> {
        let ex = Arc::new(smol::Executor::new());
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        for i in 0..threads {
            let ex = ex.clone();
            std::thread::Builder::new()
                .name(format!("smol-{i}"))
                .spawn(move || smol::block_on(ex.run(smol::future::pending::<()>())))?;
        }
        Ok(Smol(ex))
    }
}

/// The socket's read side with vectored reads: the peer layer reads each
/// block's payload straight into a buffer of its own, and the header
/// before it beside, in one system call. smol's `TcpStream` reads into
/// one buffer at a time; the `Async` socket under it reads vectored.
struct Reader(Arc<smol::Async<std::net::TcpStream>>);

impl smol::io::AsyncRead for Reader {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let mut socket: &smol::Async<std::net::TcpStream> = &self.0;
        Pin::new(&mut socket).poll_read(cx, buf)
    }

    fn poll_read_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &mut [io::IoSliceMut<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut socket: &smol::Async<std::net::TcpStream> = &self.0;
        Pin::new(&mut socket).poll_read_vectored(cx, bufs)
    }
}

fn split(stream: smol::net::TcpStream) -> TcpStream {
    let _ = stream.set_nodelay(true);
    // smol's stream is a shared handle: one clone reads (through the
    // socket under it), the other writes.
    let read: ReadHalf = Box::new(Reader(stream.clone().into()));
    let write: WriteHalf = Box::new(stream);
    TcpStream { read, write }
}

impl Runtime for Smol {
    fn name(&self) -> &'static str {
        "smol"
    }

    fn block_on(&self, fut: BoxFuture<'static, ()>) {
        smol::block_on(self.0.run(fut))
    }

    fn spawn(&self, fut: BoxFuture<'static, ()>) {
        self.0.spawn(fut).detach();
    }

    fn spawn_blocking(&self, job: Box<dyn FnOnce() + Send + 'static>) {
        smol::unblock(job).detach();
    }

    fn sleep_until(&self, at: Instant) -> BoxFuture<'static, ()> {
        let timer = smol::Timer::at(at);
        Box::pin(async move {
            timer.await;
        })
    }

    fn connect(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<TcpStream>> {
        Box::pin(async move { smol::net::TcpStream::connect(addr).await.map(split) })
    }

    fn tcp_listener(&self, listener: std::net::TcpListener) -> io::Result<Box<dyn TcpListener>> {
        Ok(Box::new(Listener(smol::net::TcpListener::try_from(listener)?)))
    }

    fn udp_socket(&self, socket: std::net::UdpSocket) -> io::Result<Box<dyn UdpSocket>> {
        Ok(Box::new(Udp(smol::net::UdpSocket::try_from(socket)?)))
    }
}

struct Listener(smol::net::TcpListener);

impl TcpListener for Listener {
    fn accept(&self) -> BoxFuture<'_, io::Result<(TcpStream, SocketAddr)>> {
        Box::pin(async move { self.0.accept().await.map(|(s, a)| (split(s), a)) })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

struct Udp(smol::net::UdpSocket);

impl UdpSocket for Udp {
    fn send_to<'a>(&'a self, buf: &'a [u8], to: SocketAddr) -> BoxFuture<'a, io::Result<usize>> {
        Box::pin(self.0.send_to(buf, to))
    }

    fn recv_from<'a>(&'a self, buf: &'a mut [u8]) -> BoxFuture<'a, io::Result<(usize, SocketAddr)>> {
        Box::pin(self.0.recv_from(buf))
    }
}

fn main() -> ExitCode {
    match Smol::start() {
        Ok(rt) => rumor_node::main("rumor-smol", Box::new(rt)),
        Err(e) => {
            eprintln!("rumor-smol: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}
