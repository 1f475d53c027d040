//! Gossip over TCP: each message the machine emits travels as one frame,
//! a 4-byte big-endian length then the sealed envelope. One task per peer
//! keeps a connection and a bounded queue (gossip tolerates loss, so a full
//! queue drops); one task per inbound connection reads frames, refusing any
//! longer than the machine's message limit.

use crate::rt;
use futures::AsyncWriteExt;
use rumor_core::gossip::PeerAddr;
use std::collections::HashMap;
use std::time::Duration;

/// Messages waiting per peer; more are dropped.
const QUEUE_PER_PEER: usize = 256;
/// Outbound connections kept at once.
const PEERS_MAX: usize = 4096;
/// Inbound connections served at once.
const INBOUND_MAX: usize = 1024;
/// A connection idle this long is closed.
const IDLE: Duration = Duration::from_secs(60);
/// How long a connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A message that arrived: the peer's socket address and the bytes.
pub type Inbound = (PeerAddr, Vec<u8>);

/// Outbound side: a queue per peer address.
pub struct GossipNet {
    peers: HashMap<String, async_channel::Sender<Vec<u8>>>,
    frame_max: usize,
    /// Messages dropped because a peer's queue was full.
    pub dropped: u64,
}

impl GossipNet {
    /// Outbound connections carrying frames of at most `frame_max` bytes.
    pub fn new(frame_max: usize) -> Self {
        GossipNet { peers: HashMap::new(), frame_max, dropped: 0 }
    }

    /// Queues one message for `to`, connecting if needed.
    pub fn send(&mut self, to: &PeerAddr, bytes: Vec<u8>) {
        if bytes.len() > self.frame_max {
            self.dropped += 1;
            return;
        }
        if let Some(tx) = self.peers.get(&to.0) {
            match tx.try_send(bytes) {
                Ok(()) => return,
                Err(async_channel::TrySendError::Full(_)) => {
                    self.dropped += 1;
                    return;
                }
                Err(async_channel::TrySendError::Closed(b)) => {
                    self.peers.remove(&to.0);
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
        self.peers.insert(to.0.clone(), tx);
        rt::spawn(outbound(to.0.clone(), rx));
    }
}

async fn outbound(addr: String, rx: async_channel::Receiver<Vec<u8>>) {
    let mut stream: Option<rt::TcpStream> = None;
    loop {
        let msg = match rt::timeout(IDLE, rx.recv()).await {
            Ok(Ok(m)) => m,
            // Idle, or the node dropped us: close.
            _ => return,
        };
        if stream.is_none() {
            let connected = match rt::lookup_host(addr.clone()).await.ok().and_then(|a| a.into_iter().next()) {
                Some(to) => rt::timeout(CONNECT_TIMEOUT, rt::connect(to)).await,
                None => Ok(Err(std::io::Error::other("cannot resolve"))),
            };
            match connected {
                Ok(Ok(s)) => stream = Some(s),
                _ => {
                    tracing::trace!(%addr, "gossip connect failed; message dropped");
                    continue;
                }
            }
        }
        let s = stream.as_mut().expect("connected above");
        let mut frame = Vec::with_capacity(4 + msg.len());
        frame.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        frame.extend_from_slice(&msg);
        if s.write_all(&frame).await.is_err() {
            // Reconnect for the next message; this one is lost.
            stream = None;
        }
    }
}

/// Accepts gossip connections and hands every frame to `inbound`.
pub async fn listen(
    listener: Box<dyn rt::TcpListener>,
    inbound: async_channel::Sender<Inbound>,
    frame_max: usize,
    shutdown: rt::Shutdown,
) {
    crate::net::accept_bounded(listener, INBOUND_MAX, "gossip", shutdown, |mut stream, peer| {
        let inbound = inbound.clone();
        async move {
            let from = PeerAddr(peer.to_string());
            while let Some(frame) = crate::net::read_frame::<4>(&mut stream, frame_max, IDLE).await {
                if inbound.send((from.clone(), frame)).await.is_err() {
                    return;
                }
            }
        }
    })
    .await
}
