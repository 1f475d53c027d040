//! The one peer layer of the client: connection tasks that carry bytes for
//! either machine (the download's [`rumor_core::bt::torrent::Torrent`] or
//! the metadata fetch's [`rumor_core::bt::magnet::MetadataFetch`]), and
//! [`Peers`], which owns the core [`PeerBook`] and the live connections.
//!
//! A connection task dials (or takes an accepted stream), then reads into
//! the owner's bounded event channel as core [`PeerInput`]s (`Connected`,
//! `Bytes`, `Closed` with its reason) and writes what the owner queues. Its
//! limits:
//!
//! * reads of at most [`ConnLimits::read_chunk_bytes`], and the owner's
//!   event channel holds at most [`PEER_EVENTS_MAX`] of them (a flooding
//!   peer waits in its socket buffer). Each read is one vectored read
//!   that puts every block's payload in a page-aligned buffer of its own
//!   ([`super::scatter`]), which the decoder hands on and the disk writes
//!   as it is: a block is never copied between the socket and the disk;
//! * the handshake (the first [`HANDSHAKE_BYTES`]) must arrive within
//!   [`HANDSHAKE_TIMEOUT`], a dial within [`DIAL_TIMEOUT`];
//! * the send queue is one buffer per connection, bounded in bytes, never
//!   in messages: everything queued since the last write goes out in one
//!   write (a burst of `have`s or piece replies is one system call, not
//!   one each). Past [`ConnLimits::send_bytes_soft`] the task stops
//!   reading from the peer until the queue drains (backpressure: a peer
//!   that does not read what we send cannot ask for more), and the owner
//!   holds back piece replies for it ([`Peers::has_room`]); past
//!   [`ConnLimits::send_bytes_max`], which only a peer flooding us with
//!   requests that each cost us more than it sent (BEP 9 metadata pieces)
//!   can reach, the owner drops it. A good peer, however fast, is paced,
//!   never dropped for our own queue.
//!
//! The owner is one task (the download's or the fetch's loop); nothing here
//! is shared with another.

use super::mse_stream::Crypto;
use super::scatter::Scatter;
use super::storage::BlockPool;
use crate::clock::Clock;
use crate::rt::{self, TcpStream};
use async_channel::{Receiver, Sender};
use futures::{AsyncReadExt, AsyncWriteExt, FutureExt};
use rumor_core::bt::conn::{CloseReason, PeerInput, PeerKey};
use rumor_core::bt::peers::{Closed, PeerBook, Refused, Source};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Peer events waiting for the owner at once: past this, connection tasks
/// wait before reading more (the backpressure bound of all reads).
pub const PEER_EVENTS_MAX: usize = 64;
/// How long a dial may take.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connected peer may take to send its handshake. A real peer
/// sends it at once (one round trip after the connection is up); ten
/// seconds, libtorrent's `handshake_timeout`, leaves room for a lossy link
/// with a retransmission or two. It was 20 s, which let connections that
/// never handshake hold a seeder's slots; a full torrent now also pushes
/// such connections out for a newcomer at once (see
/// [`rumor_core::bt::torrent::Torrent::least_useful`]), so this deadline
/// frees slots when nobody else is waiting for them.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Length of the BitTorrent handshake.
pub const HANDSHAKE_BYTES: usize = 68;
/// Header-and-block pairs a read's chunks usually come to (the room
/// reserved for them).
const BLOCKS_PER_READ_HINT: usize = 8;

/// What a connection task hands its owner: one input, or everything one
/// read brought (chunks of the stream in order), as one event, so that a
/// read costs the owner one turn whatever its layout.
#[derive(Debug)]
pub enum Inbound {
    /// Connected or closed.
    One(PeerInput),
    /// The chunks of one read from `peer`.
    Read {
        /// Whose.
        peer: PeerKey,
        /// In stream order.
        chunks: Vec<bytes::Bytes>,
    },
}

impl Inbound {
    /// Each input it carries, in order.
    pub fn for_each(self, mut f: impl FnMut(PeerInput)) {
        match self {
            Inbound::One(p) => f(p),
            Inbound::Read { peer, chunks } => chunks.into_iter().for_each(|bytes| f(PeerInput::Bytes { peer, bytes })),
        }
    }
}

/// Per-connection buffer limits.
#[derive(Clone, Copy, Debug)]
pub struct ConnLimits {
    /// Bytes read from the socket at once.
    pub read_chunk_bytes: usize,
    /// Queued bytes past which the task stops reading from the peer.
    pub send_bytes_soft: usize,
    /// Queued bytes past which the owner drops the peer.
    pub send_bytes_max: usize,
}

/// A spawned task, aborted when dropped (a connection dropped by its owner
/// leaves nothing running behind).
pub struct Task(rt::AbortHandle);

impl Task {
    /// Runs `f` in the background until it ends or the task is dropped.
    pub fn spawn(f: impl std::future::Future<Output = ()> + Send + 'static) -> Task {
        Task(rt::spawn(f).abort_handle())
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How a connection task gets its stream.
enum Open {
    Dial(SocketAddr),
    Accepted(TcpStream),
}

/// What the owner queued for one connection and its writer has not taken
/// yet, shared between them.
struct Outbox {
    /// The bytes, in order; the writer takes them all at once.
    buf: std::sync::Mutex<Vec<u8>>,
    /// Bytes queued and not yet written (`buf` plus the writer's write in
    /// progress).
    queued: AtomicUsize,
}

struct Conn {
    addr: SocketAddr,
    incoming: bool,
    /// The machine was told `Connected`.
    up: bool,
    /// The listen port the peer told us (BEP 10 `p`), for a peer that
    /// dialed us: where to dial it again if the connection is lost.
    listen_port: Option<u16>,
    outbox: Arc<Outbox>,
    /// Wakes the writer (one pending wake is enough: it takes everything).
    wake: Sender<()>,
    _task: Task,
}

/// The send queue of a peer is over its hard limit: drop the peer.
#[derive(Debug)]
pub struct Overflow;

/// The live connections and the peer book of one torrent, for one owner.
pub struct Peers {
    clock: Clock,
    book: PeerBook,
    conns: BTreeMap<PeerKey, Conn>,
    next_key: PeerKey,
    limits: ConnLimits,
    events_tx: Sender<Inbound>,
    events_rx: Receiver<Inbound>,
    rooms_tx: Sender<PeerKey>,
    rooms_rx: Receiver<PeerKey>,
    crypto: Crypto,
    blocks: Arc<BlockPool>,
}

impl Peers {
    /// A peer layer around `book` (maybe carried over from an earlier
    /// phase), with `limits` for each connection. Keys start at 1: make
    /// one `Peers` per machine.
    pub fn new(clock: Clock, book: PeerBook, limits: ConnLimits) -> Peers {
        let (events_tx, events_rx) = async_channel::bounded(PEER_EVENTS_MAX);
        let (rooms_tx, rooms_rx) = async_channel::bounded(PEER_EVENTS_MAX);
        Peers {
            clock,
            book,
            conns: BTreeMap::new(),
            next_key: 1,
            limits,
            events_tx,
            events_rx,
            rooms_tx,
            rooms_rx,
            crypto: Crypto::off(),
            blocks: BlockPool::new(),
        }
    }

    /// Negotiates encryption on every connection from now on (see
    /// [`super::mse_stream`]).
    pub fn with_crypto(mut self, crypto: Crypto) -> Peers {
        self.crypto = crypto;
        self
    }

    /// Connections whose send queue just went back under the soft limit
    /// ([`Peers::has_room`] is true again): an owner that holds piece
    /// replies back submits them. Best effort (when the channel is full a
    /// notice is lost), so an owner also looks now and then by itself.
    pub fn rooms(&self) -> &Receiver<PeerKey> {
        &self.rooms_rx
    }

    /// The channel the owner reads its connections' events from; pass
    /// each [`PeerInput`] they carry ([`Inbound::for_each`]) to
    /// [`Peers::observe`] before the machine.
    pub fn events(&self) -> &Receiver<Inbound> {
        &self.events_rx
    }

    /// The book (for counts and learning).
    pub fn book(&self) -> &PeerBook {
        &self.book
    }

    /// Learns an address; false if refused (see [`PeerBook::learn`]).
    pub fn learn(&mut self, addr: SocketAddr, source: Source) -> bool {
        self.book.learn(addr, source)
    }

    /// Live connections (dialing ones included).
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// Connections we dialed (up or still dialing).
    pub fn outgoing(&self) -> usize {
        self.conns.values().filter(|c| !c.incoming).count()
    }

    /// The address of connection `peer`.
    pub fn addr(&self, peer: PeerKey) -> Option<SocketAddr> {
        self.conns.get(&peer).map(|c| c.addr)
    }

    /// True if `peer` dialed us.
    pub fn is_incoming(&self, peer: PeerKey) -> bool {
        self.conns.get(&peer).is_some_and(|c| c.incoming)
    }

    /// Dials up to `limit` addresses that are due.
    pub fn dial_due(&mut self, limit: usize) {
        let now = self.clock.now();
        for addr in self.book.due(now, limit) {
            self.start(addr, false, Open::Dial(addr));
        }
    }

    /// Takes an incoming connection, or hands it back with why it was
    /// refused (banned, a duplicate, or over the connection budget: the
    /// owner may make room and ask again). A stream dropped is closed.
    pub fn accept(&mut self, stream: TcpStream, addr: SocketAddr) -> Result<(), (Refused, TcpStream)> {
        if let Err(why) = self.book.accept(addr) {
            return Err((why, stream));
        }
        tracing::debug!("peer {addr}: connected to us");
        self.start(addr, true, Open::Accepted(stream));
        Ok(())
    }

    fn start(&mut self, addr: SocketAddr, incoming: bool, open: Open) {
        let key = self.next_key;
        self.next_key += 1;
        let (wake, woken) = async_channel::bounded(1);
        let outbox = Arc::new(Outbox { buf: std::sync::Mutex::new(Vec::new()), queued: AtomicUsize::new(0) });
        let chans =
            Chans { events: self.events_tx.clone(), woken, room: self.rooms_tx.clone(), blocks: self.blocks.clone() };
        let task = Task::spawn(run(key, open, chans, outbox.clone(), self.limits, self.crypto));
        self.conns.insert(key, Conn { addr, incoming, up: false, listen_port: None, outbox, wake, _task: task });
    }

    /// The peer on `peer` listens on `port` (its extension handshake said
    /// so): if it dialed us and the connection is lost for a transient
    /// reason, we dial it there.
    pub fn set_listen_port(&mut self, peer: PeerKey, port: u16) {
        if let Some(c) = self.conns.get_mut(&peer) {
            c.listen_port = Some(port).filter(|p| *p != 0);
        }
    }

    /// An incoming connection from `c` is gone: its listen port, if it told
    /// us one, becomes an address to dial (after the backoff, as any
    /// transient loss), so a good peer lost is found again without waiting
    /// for it or a tracker to bring it back.
    fn remember_incoming(&mut self, c: &Conn, now: rumor_core::time::Instant) {
        if let Some(p) = c.listen_port {
            let addr = SocketAddr::new(c.addr.ip(), p);
            if self.book.learn(addr, Source::Incoming) {
                self.book.lost(now, addr);
            }
        }
    }

    /// True while `peer`'s send queue is under the soft limit: piece
    /// replies for it may be read from disk and queued. Above it the owner
    /// holds them until the socket drains.
    pub fn has_room(&self, peer: PeerKey) -> bool {
        self.conns.get(&peer).is_some_and(|c| c.outbox.queued.load(Ordering::Relaxed) < self.limits.send_bytes_soft)
    }

    /// Books what a connection task reported; true if the machine should
    /// be fed `input` too (false for connections dropped since, whose late
    /// events are stale, and for dials that never came up).
    pub fn observe(&mut self, input: &PeerInput) -> bool {
        let now = self.clock.now();
        let peer = input.peer();
        let Some(c) = self.conns.get_mut(&peer) else {
            return false;
        };
        match input {
            PeerInput::Connected { .. } => {
                c.up = true;
                if !c.incoming {
                    tracing::debug!("peer {}: connected", c.addr);
                    self.book.connected(c.addr);
                }
                true
            }
            PeerInput::Bytes { .. } => c.up,
            PeerInput::Closed { reason, .. } => {
                let c = self.conns.remove(&peer).expect("found above");
                tracing::debug!("peer {}: closed ({reason:?})", c.addr);
                if c.incoming {
                    self.book.incoming_closed(c.addr);
                    self.remember_incoming(&c, now);
                } else if c.up {
                    self.book.closed(now, c.addr, Closed::Transient);
                } else {
                    self.book.failed(now, c.addr);
                }
                c.up
            }
        }
    }

    /// The machine accepted `peer`'s handshake: a good peer.
    pub fn ready(&mut self, peer: PeerKey) {
        if let Some(c) = self.conns.get(&peer) {
            if !c.incoming {
                self.book.ready(c.addr);
            }
        }
    }

    /// Queues `bytes` to `peer`. A queue over its hard limit is an
    /// [`Overflow`]: drop the peer (and tell the machine). A connection
    /// whose task has ended takes nothing; its `Closed` event follows.
    pub fn send(&mut self, peer: PeerKey, bytes: Vec<u8>) -> Result<(), Overflow> {
        let Some(c) = self.conns.get(&peer) else {
            return Ok(());
        };
        let len = bytes.len();
        let queued = c.outbox.queued.fetch_add(len, Ordering::Relaxed) + len;
        if queued > self.limits.send_bytes_max {
            return Err(Overflow);
        }
        {
            let mut buf = c.outbox.buf.lock().expect("the writer never panics holding it");
            if buf.is_empty() {
                *buf = bytes;
            } else {
                buf.extend_from_slice(&bytes);
            }
        }
        // Full: a wake is pending already. Closed: the task ended, its
        // `Closed` event follows.
        let _ = c.wake.try_send(());
        Ok(())
    }

    /// Closes `peer` on our side (the machine asked for it, or we dropped
    /// it), booking `how` for its address; its address, if it was up.
    /// A peer that dialed us and told us its listen port is dialed there
    /// again unless `how` is [`Closed::Useless`].
    pub fn drop_peer(&mut self, peer: PeerKey, how: Closed) -> Option<SocketAddr> {
        let c = self.conns.remove(&peer)?;
        let now = self.clock.now();
        if c.incoming {
            self.book.incoming_closed(c.addr);
            if how != Closed::Useless {
                self.remember_incoming(&c, now);
            }
        } else {
            self.book.closed(now, c.addr, how);
        }
        Some(c.addr)
    }

    /// Closes `peer` and never takes its address again.
    pub fn ban(&mut self, peer: PeerKey) -> Option<SocketAddr> {
        let c = self.conns.remove(&peer)?;
        self.book.ban(c.addr);
        Some(c.addr)
    }

    /// Never take `addr` again (its connection, if any, is already closed).
    pub fn ban_addr(&mut self, addr: SocketAddr) {
        self.book.ban(addr);
    }

    /// A strike against `addr`, one of several peers that together sent
    /// bad data; true if that made a ban.
    pub fn strike(&mut self, addr: SocketAddr) -> bool {
        self.book.strike(addr)
    }

    /// Closes every connection; the keys the machine knew as connected.
    pub fn close_all(&mut self) -> Vec<PeerKey> {
        let up = self.conns.iter().filter(|(_, c)| c.up).map(|(k, _)| *k).collect();
        self.conns.clear();
        self.book.all_closed(self.clock.now());
        up
    }

    /// Every idle address may be dialed at once (after a pause).
    pub fn retry_now(&mut self) {
        self.book.retry_now(self.clock.now());
    }

    /// Closes everything and hands the book on to the next phase.
    pub fn into_book(mut self) -> PeerBook {
        self.close_all();
        self.book
    }
}

/// Opens the connection, then reads into `events` and writes what `out`
/// brings, until either side ends; reports `Closed` with the reason.
/// A connection task's channels to and from its owner.
struct Chans {
    events: Sender<Inbound>,
    /// Something was queued in the outbox.
    woken: Receiver<()>,
    /// The send queue went back under the soft limit.
    room: Sender<PeerKey>,
    /// Where the buffers that blocks are read into come from.
    blocks: Arc<BlockPool>,
}

async fn run(peer: PeerKey, open: Open, chans: Chans, outbox: Arc<Outbox>, limits: ConnLimits, crypto: Crypto) {
    let Chans { events, woken, room, blocks } = chans;
    let dialed = match &open {
        Open::Dial(addr) => Some(*addr),
        Open::Accepted(_) => None,
    };
    let stream = match open {
        Open::Accepted(s) => s,
        Open::Dial(addr) => match rt::timeout(DIAL_TIMEOUT, rt::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!("dial {addr}: {e}");
                let _ = events.send(Inbound::One(PeerInput::Closed { peer, reason: CloseReason::DialFailed })).await;
                return;
            }
            Err(_) => {
                tracing::debug!("dial {addr}: timed out");
                let _ = events.send(Inbound::One(PeerInput::Closed { peer, reason: CloseReason::DialFailed })).await;
                return;
            }
        },
    };
    // Encryption first (bt/mse_stream.rs): the stream after it reads and
    // writes plaintext, so nothing below knows whether it is encrypted. An
    // incoming connection is reported before it (the machine counts it as
    // one that has not handshaken yet, which gives way to a newcomer when
    // the slots are full); a dial only once it is usable, so a failed
    // handshake is booked as a failed dial.
    if dialed.is_none() && events.send(Inbound::One(PeerInput::Connected { peer })).await.is_err() {
        return;
    }
    let stream = match super::mse_stream::negotiate(stream, dialed, crypto).await {
        Ok(s) => s,
        Err(reason) => {
            let _ = events.send(Inbound::One(PeerInput::Closed { peer, reason })).await;
            return;
        }
    };
    if dialed.is_some() && events.send(Inbound::One(PeerInput::Connected { peer })).await.is_err() {
        return;
    }
    let (mut r, mut w) = stream.into_split();
    // The writer tells a paused reader that the queue went under the soft
    // limit; one pending signal is enough (the reader looks again).
    let (room_tx, room_rx) = async_channel::bounded::<()>(1);
    let writer_box = outbox.clone();
    let writer = async move {
        // Two buffers swapped in turn: the owner fills one while this
        // writes the other, and neither is reallocated once grown.
        let mut spare = Vec::new();
        while woken.recv().await.is_ok() {
            loop {
                {
                    let mut buf = writer_box.buf.lock().expect("the owner never panics holding it");
                    std::mem::swap(&mut *buf, &mut spare);
                }
                if spare.is_empty() {
                    break;
                }
                if w.write_all(&spare).await.is_err() {
                    return CloseReason::Io;
                }
                let before = writer_box.queued.fetch_sub(spare.len(), Ordering::Relaxed);
                let left = before - spare.len();
                spare.clear();
                if left < limits.send_bytes_soft {
                    let _ = room_tx.try_send(());
                    if before >= limits.send_bytes_soft {
                        let _ = room.try_send(peer);
                    }
                }
            }
            // Every write so far has left the socket buffer's way: push
            // the tail out now (a lone small message must not wait).
            if w.flush().await.is_err() {
                return CloseReason::Io;
            }
        }
        let _ = w.close().await;
        CloseReason::Local
    };
    let queued = outbox;
    let reads = events.clone();
    let reader = async move {
        // Each read is one vectored read laid out so that every block's
        // payload lands in an aligned buffer of its own (bt/scatter.rs);
        // what it hands on goes to the owner in stream order.
        let mut scatter = Scatter::new(blocks, limits.read_chunk_bytes);
        let mut got = 0usize;
        let handshake_by = std::time::Instant::now() + HANDSHAKE_TIMEOUT;
        loop {
            while queued.queued.load(Ordering::Relaxed) >= limits.send_bytes_soft {
                if room_rx.recv().await.is_err() {
                    return CloseReason::Local;
                }
            }
            let n = {
                let mut places = scatter.places();
                let read = r.read_vectored(&mut places);
                if got < HANDSHAKE_BYTES {
                    let left = handshake_by.saturating_duration_since(std::time::Instant::now());
                    match rt::timeout(left, read).await {
                        Ok(n) => n,
                        Err(_) => return CloseReason::HandshakeTimeout,
                    }
                } else {
                    read.await
                }
            };
            match n {
                Ok(0) => return CloseReason::Hangup,
                Err(_) => return CloseReason::Io,
                Ok(n) => {
                    got = got.saturating_add(n);
                    let mut chunks = Vec::with_capacity(2 * BLOCKS_PER_READ_HINT);
                    scatter.filled(n, |bytes| chunks.push(bytes));
                    if !chunks.is_empty() && reads.send(Inbound::Read { peer, chunks }).await.is_err() {
                        return CloseReason::Local;
                    }
                }
            }
        }
    };
    let reason = futures::select! {
        why = writer.fuse() => why,
        why = reader.fuse() => why,
    };
    let _ = events.send(Inbound::One(PeerInput::Closed { peer, reason })).await;
}

/// `fut` when `cond` holds; otherwise a future that never completes (a
/// select branch switched off).
pub async fn when<T>(cond: bool, fut: impl std::future::Future<Output = T>) -> T {
    if cond {
        fut.await
    } else {
        futures::future::pending().await
    }
}
