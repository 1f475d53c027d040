//! The UDP fast path: one thread that owns a replica of the record view and
//! its own [`Authority`], takes queries in batches with `recvmmsg` and sends
//! the answers in one `sendmmsg`. No async runtime sits between the socket
//! and the answer, which is where a small server spends most of its time.
//!
//! The replica is fed by the node task over a channel; the channel is
//! drained after every batch is received and before it is answered, so a
//! write the API has acknowledged is visible to any query sent after the
//! acknowledgement. Nothing here is specific to a runtime: any adapter can use
//! it.

use crate::clock::Clock;
use rumor_core::dns::authority::AuthorityStats;
use rumor_core::dns::{Authority, Name, RRset, RType, RecordStore, Transport, Verdict};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// Datagrams taken per system call.
const BATCH: usize = 128;
/// Largest query read; a longer datagram is dropped (queries are small).
const QUERY_MAX_BYTES: usize = 4096;
/// How often an idle thread wakes to apply updates, expire, and check for
/// shutdown.
const IDLE_WAKE: Duration = Duration::from_millis(100);
/// Kernel receive buffer asked for, so bursts queue instead of dropping.
const RCVBUF_BYTES: libc::c_int = 4 << 20;

/// A change to the replica.
#[derive(Debug)]
pub enum ViewUpdate {
    /// Insert or replace an RRset.
    Put(RRset),
    /// Remove one RRset.
    Remove(Name, RType),
}

/// What the node task tells the UDP thread.
pub enum Control {
    /// Apply a change.
    Update(ViewUpdate),
    /// Report counters.
    Stats(futures::channel::oneshot::Sender<UdpStats>),
}

/// Counters of the UDP thread.
#[derive(Clone, Debug, Default)]
pub struct UdpStats {
    /// The authority's counters.
    pub authority: AuthorityStats,
    /// `recvmmsg` calls that returned datagrams.
    pub batches: u64,
    /// Datagrams received.
    pub datagrams: u64,
}

/// A query the authority said to forward, with who asked.
pub type ForwardRequest = (SocketAddr, Vec<u8>);

/// Handle to the running thread.
pub struct UdpServer {
    /// Sends updates and requests.
    pub control: mpsc::Sender<Control>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl UdpServer {
    /// Starts the thread on `sock` (blocking mode is set here).
    pub fn start(
        sock: UdpSocket,
        initial: Vec<RRset>,
        authority: Authority,
        forward: Option<async_channel::Sender<ForwardRequest>>,
        clock: Clock,
    ) -> std::io::Result<UdpServer> {
        sock.set_nonblocking(false)?;
        sock.set_read_timeout(Some(IDLE_WAKE))?;
        set_rcvbuf(&sock);
        set_dont_fragment(&sock);
        let mut store = RecordStore::new();
        for set in initial {
            store.put(set);
        }
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let worker =
            Worker { sock, store, authority, rx, forward, clock, stop: stop.clone(), batches: 0, datagrams: 0 };
        let thread = std::thread::Builder::new().name("rumor-dns-udp".into()).spawn(move || worker.run())?;
        Ok(UdpServer { control: tx, stop, thread: Some(thread) })
    }

    /// Stops the thread (within [`IDLE_WAKE`]) and waits for it.
    pub fn shutdown(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Worker {
    sock: UdpSocket,
    store: RecordStore,
    authority: Authority,
    rx: mpsc::Receiver<Control>,
    forward: Option<async_channel::Sender<ForwardRequest>>,
    clock: Clock,
    stop: Arc<AtomicBool>,
    batches: u64,
    datagrams: u64,
}

impl Worker {
    fn run(mut self) {
        let mut batch = Batch::new();
        // Reply buffers live as long as the thread: no allocation per query.
        let mut replies: Vec<(usize, Vec<u8>)> = (0..BATCH).map(|_| (0, Vec::with_capacity(1232))).collect();
        let mut last_expire = self.clock.wall_ms();
        while !self.stop.load(Ordering::Relaxed) {
            let n = batch.recv(&self.sock);
            // Updates first: whatever was acknowledged before these queries
            // were sent is answered.
            self.drain_control();
            let now_ms = self.clock.wall_ms();
            if now_ms.saturating_sub(last_expire) >= 1_000 {
                self.store.expire(now_ms);
                last_expire = now_ms;
            }
            if n == 0 {
                continue;
            }
            self.batches += 1;
            self.datagrams += n as u64;
            let mut ready = 0;
            for i in 0..n {
                let Some(query) = batch.datagram(i) else {
                    continue;
                };
                let slot = &mut replies[ready];
                match self.authority.answer(now_ms, query, Transport::Udp, &self.store, &mut slot.1) {
                    Verdict::Reply => {
                        slot.0 = i;
                        ready += 1;
                    }
                    Verdict::Forward => {
                        if let (Some(tx), Some(from)) = (&self.forward, batch.source(i)) {
                            // A full queue means the upstream is swamped:
                            // dropping lets the client retry elsewhere.
                            let _ = tx.try_send((from, query.to_vec()));
                        }
                    }
                    Verdict::Drop => {}
                }
            }
            batch.send(&self.sock, &replies[..ready]);
        }
    }

    fn drain_control(&mut self) {
        while let Ok(msg) = self.rx.try_recv() {
            match msg {
                Control::Update(ViewUpdate::Put(set)) => {
                    self.store.put(set);
                }
                Control::Update(ViewUpdate::Remove(name, rtype)) => {
                    self.store.remove_rrset(&name, rtype);
                }
                Control::Stats(reply) => {
                    let _ = reply.send(UdpStats {
                        authority: self.authority.stats().clone(),
                        batches: self.batches,
                        datagrams: self.datagrams,
                    });
                }
            }
        }
    }
}

fn set_rcvbuf(sock: &UdpSocket) {
    // SO_RCVBUFFORCE passes net.core.rmem_max when the process may (root
    // in a container); otherwise SO_RCVBUF gets what the limit allows.
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: setsockopt with a valid fd, a pointer to a live c_int and
        // its size; failure only leaves the buffer as it was.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                &RCVBUF_BYTES as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            return;
        }
    }
}

/// Sets DF on our datagrams without following path MTU discovery
/// (IP_PMTUDISC_PROBE). Answers are at most 1232 bytes, the size chosen by
/// DNS Flag Day 2020 so they never need fragmenting, and a DF datagram
/// also skips the kernel's per-packet IP ID generation.
fn set_dont_fragment(sock: &UdpSocket) {
    let (level, opt, value) = match sock.local_addr() {
        Ok(SocketAddr::V6(_)) => (libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER, libc::IPV6_PMTUDISC_PROBE),
        _ => (libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, libc::IP_PMTUDISC_PROBE),
    };
    // SAFETY: setsockopt with a valid fd and a pointer to a live c_int.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            opt,
            &value as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Buffers for one `recvmmsg`/`sendmmsg` round, allocated once.
struct Batch {
    bufs: Box<[[u8; QUERY_MAX_BYTES]]>,
    addrs: Box<[libc::sockaddr_storage]>,
    iovs: Box<[libc::iovec]>,
    hdrs: Box<[libc::mmsghdr]>,
    lens: [usize; BATCH],
    truncated: [bool; BATCH],
    addr_lens: [libc::socklen_t; BATCH],
}

impl Batch {
    fn new() -> Batch {
        // SAFETY: these are plain C structs for which all-zero bytes are a
        // valid value (null pointers, zero lengths).
        let zeroed_addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let zeroed_hdr: libc::mmsghdr = unsafe { std::mem::zeroed() };
        Batch {
            bufs: vec![[0u8; QUERY_MAX_BYTES]; BATCH].into_boxed_slice(),
            addrs: vec![zeroed_addr; BATCH].into_boxed_slice(),
            iovs: vec![libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; BATCH].into_boxed_slice(),
            hdrs: vec![zeroed_hdr; BATCH].into_boxed_slice(),
            lens: [0; BATCH],
            truncated: [false; BATCH],
            addr_lens: [0; BATCH],
        }
    }

    /// Waits up to the socket's read timeout for at least one datagram and
    /// takes up to [`BATCH`]; returns how many.
    fn recv(&mut self, sock: &UdpSocket) -> usize {
        for i in 0..BATCH {
            self.iovs[i] =
                libc::iovec { iov_base: self.bufs[i].as_mut_ptr() as *mut libc::c_void, iov_len: QUERY_MAX_BYTES };
            let hdr = &mut self.hdrs[i].msg_hdr;
            hdr.msg_name = &mut self.addrs[i] as *mut libc::sockaddr_storage as *mut libc::c_void;
            hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdr.msg_iov = &mut self.iovs[i];
            hdr.msg_iovlen = 1;
            hdr.msg_control = std::ptr::null_mut();
            hdr.msg_controllen = 0;
            hdr.msg_flags = 0;
            self.hdrs[i].msg_len = 0;
        }
        // SAFETY: every header points at buffers owned by `self` that live
        // across the call, with their true lengths.
        let n = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n <= 0 {
            return 0;
        }
        let n = n as usize;
        for i in 0..n {
            self.lens[i] = self.hdrs[i].msg_len as usize;
            self.truncated[i] = self.hdrs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            self.addr_lens[i] = self.hdrs[i].msg_hdr.msg_namelen;
        }
        n
    }

    fn datagram(&self, i: usize) -> Option<&[u8]> {
        (!self.truncated[i]).then(|| &self.bufs[i][..self.lens[i].min(QUERY_MAX_BYTES)])
    }

    fn source(&self, i: usize) -> Option<SocketAddr> {
        let a = &self.addrs[i];
        match a.ss_family as libc::c_int {
            libc::AF_INET => {
                // SAFETY: the family says this storage holds a sockaddr_in.
                let v4: &libc::sockaddr_in = unsafe { &*(a as *const _ as *const libc::sockaddr_in) };
                Some(SocketAddr::V4(SocketAddrV4::new(
                    u32::from_be(v4.sin_addr.s_addr).into(),
                    u16::from_be(v4.sin_port),
                )))
            }
            libc::AF_INET6 => {
                // SAFETY: the family says this storage holds a sockaddr_in6.
                let v6: &libc::sockaddr_in6 = unsafe { &*(a as *const _ as *const libc::sockaddr_in6) };
                Some(SocketAddr::V6(SocketAddrV6::new(
                    v6.sin6_addr.s6_addr.into(),
                    u16::from_be(v6.sin6_port),
                    v6.sin6_flowinfo,
                    v6.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }

    /// Sends each reply to the source of datagram `i`.
    fn send(&mut self, sock: &UdpSocket, replies: &[(usize, Vec<u8>)]) {
        let mut k = 0;
        for (i, bytes) in replies {
            self.iovs[k] = libc::iovec { iov_base: bytes.as_ptr() as *mut libc::c_void, iov_len: bytes.len() };
            let hdr = &mut self.hdrs[k].msg_hdr;
            hdr.msg_name = &mut self.addrs[*i] as *mut libc::sockaddr_storage as *mut libc::c_void;
            hdr.msg_namelen = self.addr_lens[*i];
            hdr.msg_iov = &mut self.iovs[k];
            hdr.msg_iovlen = 1;
            hdr.msg_control = std::ptr::null_mut();
            hdr.msg_controllen = 0;
            hdr.msg_flags = 0;
            k += 1;
        }
        let mut sent = 0;
        while sent < k {
            // SAFETY: headers 0..k point at reply bytes and addresses that
            // outlive the call (iovecs only read from).
            let n = unsafe {
                libc::sendmmsg(sock.as_raw_fd(), self.hdrs[sent..].as_mut_ptr(), (k - sent) as libc::c_uint, 0)
            };
            if n <= 0 {
                let err = std::io::Error::last_os_error();
                if err.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                // An unreachable client must not stall the others: skip it.
                tracing::trace!("DNS sendmmsg: {err}");
                sent += 1;
                continue;
            }
            sent += n as usize;
        }
    }
}
