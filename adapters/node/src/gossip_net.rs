//! Gossip over TCP: each message the machine emits travels as one frame,
//! a 4-byte big-endian length then the sealed envelope. One task per peer
//! keeps a connection and a bounded queue (gossip tolerates loss, so a full
//! queue drops); one task per inbound connection reads frames, refusing any
//! longer than the machine's message limit.
//!
//! Connections are two-way. The machine answers every message to the
//! `from` it came with, and that `from` names the connection: an inbound
//! connection's peer socket address, or, for a frame read on one of our
//! outbound connections, the address we dialled. [`GossipNet::send`] to an
//! open inbound connection's address writes on that connection (and is
//! dropped if it has closed: such an address is never dialled); anything
//! else goes to the outbound connection for that address. So an answer
//! only ever reaches whoever asked, on the connection they asked on: a
//! member's captured request sent by someone else makes its (large)
//! answer go back to that someone, never to the member (issue 12, item
//! 11). A peer that does not read its answers is closed after
//! [`WRITE_DEADLINE`].
//!
//! An inbound connection is unauthenticated until the node opens one of
//! its frames with a cluster key (it tells the [`Closer`], which admits
//! it). Until then it has [`UNAUTH_DEADLINE`] to send one, and it is one of
//! at most [`UNAUTH_MAX`]: past that the oldest unauthenticated connection
//! is closed for the new one. So connections without the key (idle, or
//! sending garbage) can never take the slots members need: a member's
//! first frame opens at once.
//!
//! A wrong cluster key is told on both sides, once per peer. The receiving
//! node's member reports gossip no key opens; the node then asks the
//! [`Closer`] to close that connection (at once if it is unauthenticated,
//! else before its next frame). The sender learns nothing from
//! sealed gossip, but sees its connections closed right after its first
//! frames: after [`QUICK_CLOSES_WARN`] such connections in a row, it warns
//! once that the peer keeps refusing its gossip.

use crate::rt;
use futures::{AsyncReadExt, AsyncWriteExt, FutureExt};
use rumor_core::gossip::PeerAddr;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Messages waiting per peer; more are dropped.
const QUEUE_PER_PEER: usize = 256;
/// Answers waiting to be written on one inbound connection; more are
/// dropped. Each answers one of the peer's messages, and a peer has few
/// questions in flight (a full transfer asks for one chunk at a time), so
/// this bounds a connection that stops reading to 2 MiB of 64 KiB
/// messages.
const ANSWERS_PER_CONNECTION: usize = 32;
/// Outbound connections kept at once.
const PEERS_MAX: usize = 4096;
/// Inbound connections served at once.
const INBOUND_MAX: usize = 1024;
/// A connection idle this long is closed.
const IDLE: Duration = Duration::from_secs(60);
/// Unauthenticated inbound connections (no frame opened yet) at once; a
/// new one closes the oldest past it.
pub const UNAUTH_MAX: usize = 64;
/// How long an inbound connection may stay unauthenticated.
pub const UNAUTH_DEADLINE: Duration = Duration::from_secs(5);
/// How long a connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long writing one frame may take; a connection whose peer does not
/// read that fast is closed.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(5);

/// A connection the peer closed after at most this many of our frames was
/// closed "at once" (the receiver closes after the first frame it cannot
/// open; the next write or two still reach the kernel before the reset).
const QUICK_CLOSE_FRAMES: u64 = 4;
/// Connections closed at once in a row before the sender warns.
pub const QUICK_CLOSES_WARN: u32 = 3;
/// Connections marked for closing and not yet closed; past it the oldest
/// marks are forgotten (those connections then stay until idle).
const CLOSING_MAX: usize = 1024;

/// A message that arrived: the peer's socket address and the bytes.
pub type Inbound = (PeerAddr, Vec<u8>);

/// The node's word on inbound connections (by the `from` of their
/// [`Inbound`]s): [`Closer::admit`] once one of a connection's frames
/// opened, [`Closer::close`] for one whose gossip no key of ours opens.
/// It also holds the ways back: the write queues of open inbound
/// connections, and where frames read on outbound connections go. Cheap
/// to clone; shared between the node's [`GossipNet`] and the listener.
#[derive(Clone, Default)]
pub struct Closer(Arc<Mutex<Gate>>);

/// What a [`Closer`] holds.
#[derive(Default)]
struct Gate {
    /// Authenticated connections to close before their next frame; at most
    /// `CLOSING_MAX`.
    closing: HashSet<String>,
    /// Unauthenticated connections, by address; at most `UNAUTH_MAX` (as
    /// the listener enters them).
    pending: HashMap<String, Pending>,
    /// The same, oldest first.
    order: BTreeMap<u64, String>,
    seq: u64,
    /// Open inbound connections' write queues, by peer address (at most
    /// `INBOUND_MAX`, one per connection served), with the `seq` of the
    /// connection that entered it.
    ways_back: HashMap<String, (u64, async_channel::Sender<Vec<u8>>)>,
    /// Where frames read on our outbound connections go: the listener's
    /// channel, once it runs.
    inbound: Option<async_channel::Sender<Inbound>>,
}

/// An unauthenticated connection: dropping `kick` wakes it to look at
/// `admitted` (true: it stays, now a member's; false: it closes).
struct Pending {
    seq: u64,
    admitted: Arc<AtomicBool>,
    _kick: async_channel::Sender<()>,
}

/// An unauthenticated connection's side of the [`Closer`].
struct Entered {
    seq: u64,
    admitted: Arc<AtomicBool>,
    kicked: async_channel::Receiver<()>,
}

impl Gate {
    fn remove_pending(&mut self, from: &str) -> Option<Pending> {
        let p = self.pending.remove(from)?;
        self.order.remove(&p.seq);
        Some(p)
    }
}

impl Closer {
    /// A closer with nothing marked.
    pub fn new() -> Closer {
        Closer::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Gate> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Closes the connection `from`: at once if it is unauthenticated,
    /// else before its next frame is handed on.
    pub fn close(&self, from: &PeerAddr) {
        let mut g = self.lock();
        if g.remove_pending(from.as_str()).is_some() {
            return;
        }
        if g.closing.len() >= CLOSING_MAX {
            g.closing.clear();
        }
        g.closing.insert(from.0.to_string());
    }

    /// A frame of the connection `from` opened under a cluster key: it is
    /// a member's, and no longer bound by the unauthenticated deadline and
    /// budget.
    pub fn admit(&self, from: &PeerAddr) {
        let mut g = self.lock();
        if g.pending.is_empty() {
            return;
        }
        if let Some(p) = g.remove_pending(from.as_str()) {
            p.admitted.store(true, Ordering::Relaxed);
        }
    }

    /// True (once) if `from` was marked.
    fn take(&self, from: &PeerAddr) -> bool {
        let mut g = self.lock();
        !g.closing.is_empty() && g.closing.remove(from.as_str())
    }

    /// Enters a new connection as unauthenticated, closing the oldest
    /// past `max`.
    fn enter(&self, from: &PeerAddr, max: usize) -> Entered {
        let mut g = self.lock();
        while g.pending.len() >= max.max(1) {
            let Some((_, oldest)) = g.order.pop_first() else {
                break;
            };
            g.pending.remove(&oldest);
        }
        g.seq += 1;
        let seq = g.seq;
        let (kick, kicked) = async_channel::bounded(1);
        let admitted = Arc::new(AtomicBool::new(false));
        // A reused address whose old connection has not ended yet: the new
        // one takes its place.
        g.remove_pending(from.as_str());
        g.pending.insert(from.0.to_string(), Pending { seq, admitted: admitted.clone(), _kick: kick });
        g.order.insert(seq, from.0.to_string());
        Entered { seq, admitted, kicked }
    }

    /// The connection `from` entered as `seq` ended.
    fn leave(&self, from: &PeerAddr, seq: u64) {
        let mut g = self.lock();
        if g.pending.get(from.as_str()).is_some_and(|p| p.seq == seq) {
            g.remove_pending(from.as_str());
        }
        if g.ways_back.get(from.as_str()).is_some_and(|(s, _)| *s == seq) {
            g.ways_back.remove(from.as_str());
        }
    }

    /// Answers to `from` go on the inbound connection entered as `seq`.
    fn open_way_back(&self, from: &PeerAddr, seq: u64, tx: async_channel::Sender<Vec<u8>>) {
        self.lock().ways_back.insert(from.0.to_string(), (seq, tx));
    }

    /// The write queue of the open inbound connection `to`, if it is one.
    fn way_back(&self, to: &PeerAddr) -> Option<async_channel::Sender<Vec<u8>>> {
        let g = self.lock();
        if g.ways_back.is_empty() {
            return None;
        }
        g.ways_back.get(to.as_str()).map(|(_, tx)| tx.clone())
    }

    fn set_inbound(&self, inbound: async_channel::Sender<Inbound>) {
        self.lock().inbound = Some(inbound);
    }

    fn inbound(&self) -> Option<async_channel::Sender<Inbound>> {
        self.lock().inbound.clone()
    }
}

/// Takes a connection out of the [`Closer`] when it ends.
struct Leave<'a>(&'a Closer, &'a PeerAddr, u64);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.leave(self.1, self.2);
    }
}

/// Outbound side: a queue per peer address, and the ways back.
pub struct GossipNet {
    peers: HashMap<String, async_channel::Sender<Vec<u8>>>,
    frame_max: usize,
    closer: Closer,
    /// Messages dropped because a peer's queue was full, or because the
    /// inbound connection an answer was for had closed.
    pub dropped: u64,
}

impl GossipNet {
    /// Outbound connections carrying frames of at most `frame_max` bytes;
    /// `closer` is the one the listener ([`listen_closing`]) was given, for
    /// the ways back in both directions.
    pub fn new(frame_max: usize, closer: Closer) -> Self {
        GossipNet { peers: HashMap::new(), frame_max, closer, dropped: 0 }
    }

    /// Queues one message for `to`: on the inbound connection `to` if one
    /// is open, else on the outbound connection to `to`, connecting if
    /// needed.
    pub fn send(&mut self, to: &PeerAddr, bytes: Vec<u8>) {
        if bytes.len() > self.frame_max {
            self.dropped += 1;
            return;
        }
        if let Some(tx) = self.closer.way_back(to) {
            if tx.try_send(bytes).is_err() {
                self.dropped += 1;
            }
            return;
        }
        if let Some(tx) = self.peers.get(to.as_str()) {
            match tx.try_send(bytes) {
                Ok(()) => return,
                Err(async_channel::TrySendError::Full(_)) => {
                    self.dropped += 1;
                    return;
                }
                Err(async_channel::TrySendError::Closed(b)) => {
                    self.peers.remove(to.as_str());
                    return self.send(to, b);
                }
            }
        }
        if self.peers.len() >= PEERS_MAX {
            self.peers.retain(|_, tx| !tx.is_closed());
            if self.peers.len() >= PEERS_MAX {
                self.dropped += 1;
                return;
            }
        }
        let (tx, rx) = async_channel::bounded(QUEUE_PER_PEER);
        let _ = tx.try_send(bytes);
        self.peers.insert(to.0.to_string(), tx);
        rt::spawn(outbound(to.0.to_string(), rx, self.closer.clone(), self.frame_max + 4));
    }
}

/// Reads one frame (a 4-byte big-endian length, then that many bytes) from
/// a read half: `None` at end of stream, on an error, for a length over
/// `max`, or (with `idle`) after that long without the next byte.
async fn read_frame(r: &mut rt::ReadHalf, max: usize, idle: Option<Duration>) -> Option<Vec<u8>> {
    async fn within<T>(idle: Option<Duration>, f: impl std::future::Future<Output = T>) -> Option<T> {
        match idle {
            Some(d) => rt::timeout(d, f).await.ok(),
            None => Some(f.await),
        }
    }
    let mut len = [0u8; 4];
    within(idle, r.read_exact(&mut len)).await?.ok()?;
    let n = u32::from_be_bytes(len) as usize;
    if n > max {
        tracing::debug!(n, max, "gossip frame over the limit; closing");
        return None;
    }
    let mut buf = vec![0u8; n];
    within(idle, r.read_exact(&mut buf)).await?.ok()?;
    Some(buf)
}

/// Writes one frame within [`WRITE_DEADLINE`]; false if the connection
/// failed or its peer did not read in time.
async fn write_frame(w: &mut rt::WriteHalf, msg: &[u8]) -> bool {
    let mut frame = Vec::with_capacity(4 + msg.len());
    frame.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    frame.extend_from_slice(msg);
    matches!(rt::timeout(WRITE_DEADLINE, w.write_all(&frame)).await, Ok(Ok(())))
}

/// Hands every frame read on our outbound connection to `addr` to the
/// node, as from `addr` (so answers to them come back this way), until the
/// connection ends, the node asks to close it, or `stop` closes (the
/// outbound task let the connection go).
async fn read_answers(
    mut r: rt::ReadHalf,
    addr: String,
    closer: Closer,
    frame_max: usize,
    stop: async_channel::Receiver<()>,
) {
    let from = PeerAddr::from(addr);
    let read = async {
        while let Some(frame) = read_frame(&mut r, frame_max, None).await {
            if closer.take(&from) {
                tracing::debug!(peer = %from.0, "closing a gossip connection whose answers no key opens");
                return;
            }
            let Some(inbound) = closer.inbound() else { continue };
            if inbound.send((from.clone(), frame)).await.is_err() {
                return;
            }
        }
    };
    futures::future::select(std::pin::pin!(read), std::pin::pin!(stop.recv())).await;
}

/// What woke an outbound task.
enum Wake {
    /// A message to send, or the queue closed or idle.
    Message(Option<Vec<u8>>),
    /// The peer closed the connection (it never writes on it).
    Closed,
}

/// One open outbound connection: our write half, and the reader task's
/// signals (it ends when the connection does; dropping `_stop` ends it).
struct Conn {
    write: rt::WriteHalf,
    ended: async_channel::Receiver<()>,
    _stop: async_channel::Sender<()>,
}

async fn outbound(addr: String, rx: async_channel::Receiver<Vec<u8>>, closer: Closer, frame_max: usize) {
    let mut conn: Option<Conn> = None;
    // Frames written on the current connection, and connections in a row
    // the peer closed right after our first frames.
    let mut written: u64 = 0;
    let mut quick_closes: u32 = 0;
    let mut warned = false;
    let mut peer_closed = |written: u64| {
        if written > QUICK_CLOSE_FRAMES {
            quick_closes = 0;
            return;
        }
        quick_closes += 1;
        if quick_closes >= QUICK_CLOSES_WARN && !warned {
            warned = true;
            tracing::warn!(
                "gossip to {addr} keeps failing: it closes our connections right after our first messages \
                 (a different --cluster-key?)"
            );
        }
    };
    loop {
        let next = async { Wake::Message(rt::timeout(IDLE, rx.recv()).await.ok().and_then(Result::ok)) };
        let wake = match conn.as_mut() {
            // The reader task ends when the connection does (the peer
            // closed it: an unopenable frame, idle, restart).
            Some(c) => {
                futures::select_biased! {
                    w = next.fuse() => w,
                    _ = c.ended.recv().fuse() => Wake::Closed,
                }
            }
            None => next.await,
        };
        let msg = match wake {
            Wake::Message(Some(m)) => m,
            // Idle, or the node dropped us: close.
            Wake::Message(None) => return,
            Wake::Closed => {
                conn = None;
                peer_closed(written);
                continue;
            }
        };
        if conn.is_none() {
            let connected = match rt::lookup_host(addr.clone()).await.ok().and_then(|a| a.into_iter().next()) {
                Some(to) => rt::timeout(CONNECT_TIMEOUT, rt::connect(to)).await,
                None => Ok(Err(std::io::Error::other("cannot resolve"))),
            };
            match connected {
                Ok(Ok(s)) => {
                    let (read, write) = s.into_split();
                    let (ended_tx, ended) = async_channel::bounded::<()>(1);
                    let (stop, stop_rx) = async_channel::bounded::<()>(1);
                    let (a, c) = (addr.clone(), closer.clone());
                    rt::spawn(async move {
                        let _ended = ended_tx;
                        read_answers(read, a, c, frame_max, stop_rx).await;
                    });
                    conn = Some(Conn { write, ended, _stop: stop });
                    written = 0;
                }
                _ => {
                    tracing::trace!(%addr, "gossip connect failed; message dropped");
                    continue;
                }
            }
        }
        let c = conn.as_mut().expect("connected above");
        if write_frame(&mut c.write, &msg).await {
            written += 1;
        } else {
            // Reconnect for the next message; this one is lost.
            conn = None;
            peer_closed(written);
        }
    }
}

/// Accepts gossip connections and hands every frame to `inbound`, closing
/// the connections `closer` marks; answers to them go back on them (give
/// the same `closer` to the node's [`GossipNet`]).
pub async fn listen_closing(
    listener: Box<dyn rt::TcpListener>,
    inbound: async_channel::Sender<Inbound>,
    frame_max: usize,
    shutdown: rt::Shutdown,
    closer: Closer,
) {
    closer.set_inbound(inbound.clone());
    crate::net::accept_bounded(listener, INBOUND_MAX, usize::MAX, "gossip", shutdown, |stream, peer| {
        let inbound = inbound.clone();
        let closer = closer.clone();
        async move {
            let from = PeerAddr::from(peer.to_string());
            let (mut read_half, mut write_half) = stream.into_split();
            let entered = closer.enter(&from, UNAUTH_MAX);
            let (answers_tx, answers) = async_channel::bounded::<Vec<u8>>(ANSWERS_PER_CONNECTION);
            closer.open_way_back(&from, entered.seq, answers_tx);
            let _leave = Leave(&closer, &from, entered.seq);
            // Answers to this connection's messages, written back on it; a
            // peer that does not read them ends the connection.
            let write = async {
                while let Ok(msg) = answers.recv().await {
                    if !write_frame(&mut write_half, &msg).await {
                        tracing::debug!(%peer, "closing a gossip connection that does not read its answers");
                        return;
                    }
                }
            };
            let read = async {
                while let Some(frame) = read_frame(&mut read_half, frame_max, Some(IDLE)).await {
                    if closer.take(&from) {
                        tracing::debug!(%peer, "closing a gossip connection whose messages no key opens");
                        return;
                    }
                    if inbound.send((from.clone(), frame)).await.is_err() {
                        return;
                    }
                }
            };
            let watch = async {
                // Woken when admitted, closed or pushed out, or at the
                // deadline; only an admitted connection stays.
                let _ = rt::timeout(UNAUTH_DEADLINE, entered.kicked.recv()).await;
                if entered.admitted.load(Ordering::Relaxed) {
                    return futures::future::pending::<()>().await;
                }
                tracing::debug!(%peer, "closing a gossip connection that sent nothing a cluster key opens");
            };
            let (read, write, watch) = (std::pin::pin!(read), std::pin::pin!(write), std::pin::pin!(watch));
            futures::future::select(futures::future::select(read, write), watch).await;
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> PeerAddr {
        PeerAddr::from(format!("127.0.0.1:{port}"))
    }

    fn kicked(e: &Entered) -> bool {
        e.kicked.is_closed()
    }

    #[test]
    fn a_new_unauthenticated_connection_pushes_out_the_oldest_past_the_budget() {
        let c = Closer::new();
        let first = c.enter(&addr(1), 2);
        let second = c.enter(&addr(2), 2);
        assert!(!kicked(&first) && !kicked(&second));
        let third = c.enter(&addr(3), 2);
        assert!(kicked(&first) && !first.admitted.load(Ordering::Relaxed), "the oldest goes");
        assert!(!kicked(&second) && !kicked(&third));
    }

    #[test]
    fn an_admitted_connection_leaves_the_budget_and_is_never_pushed_out() {
        let c = Closer::new();
        let member = c.enter(&addr(1), 1);
        c.admit(&addr(1));
        assert!(kicked(&member) && member.admitted.load(Ordering::Relaxed), "woken, and stays");
        let other = c.enter(&addr(2), 1);
        let _third = c.enter(&addr(3), 1);
        assert!(kicked(&other) && !other.admitted.load(Ordering::Relaxed));
    }

    #[test]
    fn closing_an_unauthenticated_connection_wakes_it_at_once_and_an_admitted_one_at_its_next_frame() {
        let c = Closer::new();
        let stranger = c.enter(&addr(1), 8);
        c.close(&addr(1));
        assert!(kicked(&stranger) && !stranger.admitted.load(Ordering::Relaxed));
        assert!(!c.take(&addr(1)), "nothing left to do at its next frame");
        let member = c.enter(&addr(2), 8);
        c.admit(&addr(2));
        c.close(&addr(2));
        assert!(member.admitted.load(Ordering::Relaxed));
        assert!(c.take(&addr(2)) && !c.take(&addr(2)));
    }

    #[test]
    fn a_connection_that_ends_leaves_nothing_behind() {
        let c = Closer::new();
        let e = c.enter(&addr(1), 8);
        c.leave(&addr(1), e.seq);
        let g = c.lock();
        assert!(g.pending.is_empty() && g.order.is_empty());
    }
}
