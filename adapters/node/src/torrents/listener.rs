//! The session's one peer listener (`--bt-port`): every incoming
//! connection is read up to the torrent it names (a plain handshake's
//! infohash, or the `SKEY` of an MSE handshake matched against every
//! torrent of the session, see [`crate::bt::mse_stream::accept_routed`]),
//! then handed to that torrent's task, which sees it as a connection on a
//! listener of its own ([`Incoming`]).
//!
//! Limits: at most [`ROUTING_MAX`] connections are being read at once
//! (past it a new one is closed at once); each has
//! [`crate::bt::mse_stream`]'s handshake deadline; a torrent's queue of
//! routed connections holds [`ROUTED_MAX`] (past it the connection waits
//! up to [`ROUTE_WAIT`], then is closed); and once the session's peer
//! budget ([`Budget`]) is all taken, a torrent takes a connection only in
//! place of one of its own peers that gives way.

use crate::bt::mse_stream::{self, Encryption};
use crate::rt::{self, BoxFuture, TcpListener, TcpStream};
use rumor_core::bt::metainfo::InfoHash;
use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

/// Incoming connections read at once before we know their torrent.
pub const ROUTING_MAX: usize = 64;
/// Routed connections waiting for a torrent's task.
pub const ROUTED_MAX: usize = 16;
/// How long a routed connection waits for room in its torrent's queue
/// (holding one of the [`ROUTING_MAX`] routing slots meanwhile).
pub const ROUTE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// A connection routed to a torrent.
pub type Routed = (TcpStream, SocketAddr);

/// Where each torrent of the session takes its connections.
#[derive(Clone, Default)]
pub struct Routes(Arc<RwLock<BTreeMap<InfoHash, async_channel::Sender<Routed>>>>);

impl Routes {
    /// Routes connections for `ih` to a new [`Incoming`] (replacing any
    /// earlier one for it).
    pub fn add(&self, ih: InfoHash, port: u16) -> Incoming {
        let (tx, rx) = async_channel::bounded(ROUTED_MAX);
        self.0.write().expect("no panic while held").insert(ih, tx);
        Incoming { rx, port }
    }

    /// Stops routing to `ih` (its task's listener then ends).
    pub fn remove(&self, ih: &InfoHash) {
        self.0.write().expect("no panic while held").remove(ih);
    }

    fn served(&self) -> Vec<InfoHash> {
        self.0.read().expect("no panic while held").keys().copied().collect()
    }

    /// Hands `conn` to `ih`'s task, or says why not (and gives it back
    /// if the queue was only full).
    fn route(&self, ih: &InfoHash, conn: Routed) -> Result<(), (&'static str, Option<Routed>)> {
        let tx = self.0.read().expect("no panic while held").get(ih).cloned();
        match tx {
            None => Err(("no longer in the session", None)),
            Some(tx) => tx.try_send(conn).map_err(|e| match e {
                async_channel::TrySendError::Full(c) => ("its queue is full", Some(c)),
                async_channel::TrySendError::Closed(_) => ("no longer in the session", None),
            }),
        }
    }

    /// [`Routes::route`], waiting up to [`ROUTE_WAIT`] while the torrent's
    /// queue is full: under a flood of connections a real client's is
    /// queued behind them, not closed at random (a client that is closed
    /// on does not dial back for a minute).
    async fn route_waiting(&self, ih: &InfoHash, conn: Routed) -> Result<(), &'static str> {
        let conn = match self.route(ih, conn) {
            Ok(()) => return Ok(()),
            Err((why, None)) => return Err(why),
            Err((_, Some(conn))) => conn,
        };
        let tx = self.0.read().expect("no panic while held").get(ih).cloned();
        let Some(tx) = tx else {
            return Err("no longer in the session");
        };
        match rt::timeout(ROUTE_WAIT, tx.send(conn)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err("no longer in the session"),
            Err(_) => Err("its queue stayed full"),
        }
    }
}

/// The connections routed to one torrent, as the listener its task
/// accepts on (the peer port is the session's).
pub struct Incoming {
    rx: async_channel::Receiver<Routed>,
    port: u16,
}

impl TcpListener for Incoming {
    fn accept(&self) -> BoxFuture<'_, io::Result<(TcpStream, SocketAddr)>> {
        Box::pin(async move {
            match self.rx.recv().await {
                Ok(c) => Ok(c),
                // Removed from the session: nothing will come again.
                Err(_) => futures::future::pending().await,
            }
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(SocketAddr::from(([0, 0, 0, 0], self.port)))
    }
}

/// The session's peer budget: connections of all torrents together.
#[derive(Clone, Debug)]
pub struct Budget {
    /// Most connections, all torrents together.
    pub max: usize,
    /// Connections per torrent, as each torrent's loop last counted them.
    pub used: Arc<RwLock<BTreeMap<InfoHash, Arc<AtomicUsize>>>>,
}

impl Budget {
    /// A budget of `max` connections.
    pub fn new(max: usize) -> Budget {
        Budget { max, used: Arc::default() }
    }

    /// The counter `ih`'s loop keeps up to date.
    pub fn slot(&self, ih: InfoHash) -> Arc<AtomicUsize> {
        let c = Arc::new(AtomicUsize::new(0));
        self.used.write().expect("no panic while held").insert(ih, c.clone());
        c
    }

    /// Forgets `ih`'s connections.
    pub fn remove(&self, ih: &InfoHash) {
        self.used.write().expect("no panic while held").remove(ih);
    }

    /// Connections in use, all torrents.
    pub fn in_use(&self) -> usize {
        self.used.read().expect("no panic while held").values().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// True while a new connection fits.
    pub fn has_room(&self) -> bool {
        self.in_use() < self.max
    }
}

/// Accepts on `listener` until the task is aborted, routing each
/// connection by the torrent it names.
pub async fn serve(listener: Box<dyn TcpListener>, routes: Routes, policy: Encryption) {
    let routing = Arc::new(AtomicUsize::new(0));
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("bt listener: accept: {e}");
                rt::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        if routing.load(Ordering::Relaxed) >= ROUTING_MAX {
            tracing::debug!("peer {addr}: refused: {ROUTING_MAX} connections are being read already");
            continue;
        }
        // With every slot of the budget taken the connection is still read
        // and routed: its torrent takes it only if one of its own peers of
        // no use gives way (as `rumor seed` does at its own limit), so
        // connections that hold slots and do nothing cannot keep a real
        // client out of the session either.
        routing.fetch_add(1, Ordering::Relaxed);
        let (routes, routing) = (routes.clone(), routing.clone());
        rt::spawn(async move {
            let served = routes.served();
            match mse_stream::accept_routed(stream, &served, policy).await {
                Ok((stream, ih)) => {
                    if let Err(why) = routes.route_waiting(&ih, (stream, addr)).await {
                        tracing::debug!("peer {addr}: refused for {ih}: {why}");
                    }
                }
                Err(why) => tracing::debug!("peer {addr}: refused: {why}"),
            }
            routing.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream() -> TcpStream {
        TcpStream { read: Box::new(futures::io::Cursor::new(Vec::new())), write: Box::new(futures::io::sink()) }
    }

    fn addr() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 1))
    }

    #[test]
    fn a_connection_goes_to_its_torrent_only_while_it_is_in_the_session() {
        let routes = Routes::default();
        let (a, b) = (InfoHash([1; 20]), InfoHash([2; 20]));
        let incoming = routes.add(a, 6881);
        assert_eq!(routes.served(), vec![a]);
        assert!(routes.route(&a, (stream(), addr())).is_ok());
        assert!(incoming.rx.try_recv().is_ok());
        assert_eq!(routes.route(&b, (stream(), addr())).unwrap_err().0, "no longer in the session");
        routes.remove(&a);
        assert!(routes.route(&a, (stream(), addr())).is_err());
        assert_eq!(incoming.local_addr().unwrap().port(), 6881);
    }

    #[test]
    fn a_torrent_whose_queue_is_full_refuses_more() {
        let routes = Routes::default();
        let ih = InfoHash([3; 20]);
        let _incoming = routes.add(ih, 1);
        for _ in 0..ROUTED_MAX {
            assert!(routes.route(&ih, (stream(), addr())).is_ok());
        }
        assert_eq!(routes.route(&ih, (stream(), addr())).unwrap_err().0, "its queue is full");
    }

    #[test]
    fn the_budget_counts_every_torrents_connections_and_forgets_a_removed_one() {
        let budget = Budget::new(10);
        let (a, b) = (InfoHash([1; 20]), InfoHash([2; 20]));
        budget.slot(a).store(6, Ordering::Relaxed);
        let sb = budget.slot(b);
        sb.store(3, Ordering::Relaxed);
        assert!(budget.has_room());
        sb.store(4, Ordering::Relaxed);
        assert_eq!(budget.in_use(), 10);
        assert!(!budget.has_room());
        budget.remove(&a);
        assert_eq!(budget.in_use(), 4);
    }
}
