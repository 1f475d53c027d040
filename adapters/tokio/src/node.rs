//! The node task: it owns the record store (one task, one owner, no lock),
//! takes API writes, TCP queries and lists as commands, mirrors every write
//! to the UDP thread's replica, and forwards what the authority hands on.

use crate::clock::Clock;
use crate::dns_udp::{Control, ForwardRequest, ViewUpdate};
use crate::persist::{Op, Persister};
use rumor_core::dns::forward::{ForwardAction, Forwarder, ForwarderConfig};
use rumor_core::dns::store::PutOutcome;
use rumor_core::dns::{Authority, Name, RRset, RType, RecordStore, Transport, Verdict};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
/// Capacity of the command queue; API callers wait when it is full.
pub const COMMANDS_MAX: usize = 1024;

/// Why a write was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteError {
    /// It would break a DNS rule (CNAME beside other data).
    Conflict(String),
    /// Applied in memory, but the disk write failed.
    Storage(String),
}

/// What a write did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct WriteReport {
    /// RRsets created.
    pub inserted: usize,
    /// RRsets replaced.
    pub replaced: usize,
    /// RRsets removed.
    pub removed: usize,
}

/// Reply channel of a write.
pub type WriteReply = oneshot::Sender<Result<WriteReport, WriteError>>;

/// What the rest of the process asks of the node.
pub enum Command {
    /// Put these RRsets and remove those (name, type) pairs, atomically.
    Write {
        /// RRsets to insert or replace.
        puts: Vec<RRset>,
        /// RRsets to remove.
        removes: Vec<(Name, RType)>,
        /// Told once applied (and durable, with a data directory).
        reply: WriteReply,
    },
    /// Remove every RRset of a name.
    DeleteName {
        /// The name.
        name: Name,
        /// Told once applied.
        reply: WriteReply,
    },
    /// Live RRsets, of one name or all, with the wall time they were read.
    List {
        /// Only this name.
        name: Option<Name>,
        /// The sets and the time.
        reply: oneshot::Sender<(Vec<RRset>, u64)>,
    },
    /// A query that came over TCP.
    Query {
        /// The query bytes.
        bytes: Vec<u8>,
        /// The response, or `None` to close the connection.
        reply: oneshot::Sender<Option<Vec<u8>>>,
    },
    /// Counters for /health and /metrics.
    Stats {
        /// The counters.
        reply: oneshot::Sender<NodeStats>,
    },
}

/// Counters the node reports.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct NodeStats {
    /// Owner names held.
    pub names: usize,
    /// RRsets held.
    pub rrsets: usize,
    /// DNS answers by response code.
    pub dns_by_rcode: std::collections::BTreeMap<&'static str, u64>,
    /// DNS queries by type.
    pub dns_by_qtype: std::collections::BTreeMap<String, u64>,
    /// Undecodable queries by kind.
    pub dns_decode_errors: std::collections::BTreeMap<&'static str, u64>,
    /// Answers with TC.
    pub dns_truncated: u64,
    /// Queries dropped.
    pub dns_dropped: u64,
    /// Queries forwarded upstream.
    pub dns_forwarded: u64,
    /// UDP receive calls that returned datagrams.
    pub dns_udp_batches: u64,
    /// UDP datagrams received.
    pub dns_udp_datagrams: u64,
}

impl NodeStats {
    /// Adds the UDP thread's counters to the node's own (TCP) ones.
    pub fn merge_udp(&mut self, stats: &crate::dns_udp::UdpStats) {
        self.dns_udp_batches = stats.batches;
        self.dns_udp_datagrams = stats.datagrams;
        let udp = &stats.authority;
        for (k, v) in &udp.by_rcode {
            *self.dns_by_rcode.entry(k.name()).or_default() += v;
        }
        for (k, v) in &udp.by_qtype {
            *self.dns_by_qtype.entry(k.to_string()).or_default() += v;
        }
        for (k, v) in &udp.decode_errors {
            *self.dns_decode_errors.entry(k).or_default() += v;
        }
        self.dns_truncated += udp.truncated;
        self.dns_dropped += udp.dropped;
    }
}

/// A cheap handle for talking to the node task.
#[derive(Clone)]
pub struct NodeHandle {
    tx: mpsc::Sender<Command>,
}

impl NodeHandle {
    /// Sends a command; false if the node has stopped.
    pub async fn send(&self, cmd: Command) -> bool {
        self.tx.send(cmd).await.is_ok()
    }
}

/// Where a forwarded query came from.
#[derive(Clone, Debug)]
enum Client {
    Udp(SocketAddr),
    Tcp(u64),
}

/// Everything the node task owns.
pub struct Node {
    clock: Clock,
    store: RecordStore,
    authority: Authority,
    /// For replies to forwarded UDP queries (the UDP thread owns reading).
    udp_reply: std::net::UdpSocket,
    view: Option<std::sync::mpsc::Sender<Control>>,
    forward_rx: Option<mpsc::Receiver<ForwardRequest>>,
    persister: Option<Persister>,
    forwarder: Option<(Forwarder<Client>, Arc<UdpSocket>, SocketAddr)>,
    tcp_waiting: HashMap<u64, oneshot::Sender<Option<Vec<u8>>>>,
    next_tcp_id: u64,
    forwarded: u64,
}

/// The node's parts, ready to run.
pub struct NodeParts {
    /// The clock.
    pub clock: Clock,
    /// Records loaded from disk.
    pub initial: Vec<RRset>,
    /// The authority (for TCP queries).
    pub authority: Authority,
    /// The DNS UDP socket, to answer forwarded queries.
    pub udp_reply: std::net::UdpSocket,
    /// The UDP thread's replica, kept in step with every write.
    pub view: Option<std::sync::mpsc::Sender<Control>>,
    /// Queries the UDP thread wants forwarded.
    pub forward_rx: Option<mpsc::Receiver<ForwardRequest>>,
    /// Disk writer, if any.
    pub persister: Option<Persister>,
    /// Upstream resolver and a socket bound for talking to it.
    pub upstream: Option<(UdpSocket, SocketAddr)>,
}

impl Node {
    /// Builds the node and its command channel.
    pub fn new(parts: NodeParts) -> (Node, NodeHandle, mpsc::Receiver<Command>) {
        let mut store = RecordStore::new();
        for set in parts.initial {
            store.put(set);
        }
        let (tx, rx) = mpsc::channel(COMMANDS_MAX);
        let seed = parts.clock.wall_ms() ^ std::process::id() as u64;
        let node = Node {
            clock: parts.clock,
            store,
            authority: parts.authority,
            udp_reply: parts.udp_reply,
            view: parts.view,
            forward_rx: parts.forward_rx,
            persister: parts.persister,
            forwarder: parts
                .upstream
                .map(|(sock, addr)| (Forwarder::new(ForwarderConfig::default(), seed), Arc::new(sock), addr)),
            tcp_waiting: HashMap::new(),
            next_tcp_id: 0,
            forwarded: 0,
        };
        (node, NodeHandle { tx }, rx)
    }

    /// Runs until `shutdown` turns true or every handle is dropped.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Command>, mut shutdown: watch::Receiver<bool>) {
        let mut up_buf = vec![0u8; 65_535];
        let mut forward_rx = self.forward_rx.take();
        loop {
            let deadline = self.next_deadline();
            let upstream = self.forwarder.as_ref().map(|f| f.1.clone());
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                cmd = rx.recv() => match cmd {
                    Some(cmd) => self.command(cmd),
                    None => break,
                },
                req = async { forward_rx.as_mut().expect("guarded").recv().await }, if forward_rx.is_some() => {
                    match req {
                        Some((from, query)) => self.forward(Client::Udp(from), query).await,
                        None => forward_rx = None,
                    }
                }
                got = async { upstream.as_ref().expect("guarded").recv_from(&mut up_buf).await }, if upstream.is_some() => {
                    if let Ok((n, _from)) = got {
                        self.upstream_reply(&up_buf[..n]).await;
                    }
                }
                _ = tokio::time::sleep_until(deadline.into()) => self.on_timer(),
            }
        }
        if let Some(p) = self.persister.take() {
            tokio::task::spawn_blocking(move || p.shutdown()).await.ok();
        }
    }

    fn next_deadline(&self) -> std::time::Instant {
        let far = std::time::Instant::now() + std::time::Duration::from_secs(3600);
        let mut at = far;
        if let Some(exp_ms) = self.store.next_expiry() {
            let wait = exp_ms.saturating_sub(self.clock.wall_ms());
            at = at.min(std::time::Instant::now() + std::time::Duration::from_millis(wait));
        }
        if let Some(t) = self.forwarder.as_ref().and_then(|f| f.0.poll_timeout()) {
            at = at.min(self.clock.std_instant(t));
        }
        at
    }

    fn on_timer(&mut self) {
        let gone = self.store.expire(self.clock.wall_ms());
        if !gone.is_empty() {
            tracing::debug!(count = gone.len(), "records expired");
            if let Some(p) = &self.persister {
                p.submit(gone.into_iter().map(|(n, t)| Op::Delete(n, t)).collect(), None);
            }
        }
        let now = self.clock.now();
        if let Some((fwd, _, _)) = self.forwarder.as_mut() {
            for (client, bytes) in fwd.on_timeout(now) {
                self.reply_to(client, bytes);
            }
        }
    }

    fn send_udp(&self, bytes: &[u8], to: SocketAddr) {
        if let Err(e) = self.udp_reply.send_to(bytes, to) {
            tracing::trace!("DNS send to {to}: {e}");
        }
    }

    fn mirror(&self, update: ViewUpdate) {
        if let Some(v) = &self.view {
            let _ = v.send(Control::Update(update));
        }
    }

    async fn forward(&mut self, client: Client, query: Vec<u8>) {
        let now = self.clock.now();
        let Some((fwd, sock, upstream)) = self.forwarder.as_mut() else {
            return;
        };
        match fwd.forward(now, client, &query) {
            ForwardAction::ToUpstream(bytes) => {
                self.forwarded += 1;
                let _ = sock.send_to(&bytes, *upstream).await;
            }
            ForwardAction::ToClient(client, bytes) => self.reply_to(client, bytes),
            ForwardAction::Nothing => {}
        }
    }

    async fn upstream_reply(&mut self, bytes: &[u8]) {
        let Some((fwd, _, _)) = self.forwarder.as_mut() else {
            return;
        };
        if let Some((client, reply)) = fwd.on_upstream_reply(bytes) {
            // The upstream sized its answer to the client's own query.
            self.reply_to(client, reply);
        }
    }

    fn reply_to(&mut self, client: Client, bytes: Vec<u8>) {
        match client {
            Client::Udp(addr) => self.send_udp(&bytes, addr),
            Client::Tcp(id) => {
                if let Some(tx) = self.tcp_waiting.remove(&id) {
                    let _ = tx.send(Some(bytes));
                }
            }
        }
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Write { puts, removes, reply } => {
                let result = self.write(puts, removes);
                self.finish_write(result, reply);
            }
            Command::DeleteName { name, reply } => {
                let now_ms = self.clock.wall_ms();
                let types: Vec<RType> = self.store.rrsets_at(&name, now_ms).map(|s| s.rtype).collect();
                let removed = self.store.remove_name(&name);
                self.mirror(ViewUpdate::RemoveName(name.clone()));
                let ops = types.into_iter().map(|t| Op::Delete(name.clone(), t)).collect();
                let report = WriteReport { removed, ..WriteReport::default() };
                self.finish_write(Ok((report, ops)), reply);
            }
            Command::List { name, reply } => {
                let now_ms = self.clock.wall_ms();
                let sets = match name {
                    Some(n) => self.store.rrsets_at(&n, now_ms).cloned().collect(),
                    None => self.store.live(now_ms).into_iter().cloned().collect(),
                };
                let _ = reply.send((sets, now_ms));
            }
            Command::Query { bytes, reply } => {
                let now_ms = self.clock.wall_ms();
                match self.authority.handle_query(&bytes, Transport::Tcp, &self.store, now_ms) {
                    Verdict::Reply(r) => {
                        let _ = reply.send(Some(r));
                    }
                    Verdict::Drop => {
                        let _ = reply.send(None);
                    }
                    Verdict::Forward => {
                        let id = self.next_tcp_id;
                        self.next_tcp_id += 1;
                        self.tcp_waiting.insert(id, reply);
                        let now = self.clock.now();
                        if let Some((fwd, sock, upstream)) = self.forwarder.as_mut() {
                            match fwd.forward(now, Client::Tcp(id), &bytes) {
                                ForwardAction::ToUpstream(b) => {
                                    self.forwarded += 1;
                                    let _ = sock.try_send_to(&b, *upstream);
                                }
                                ForwardAction::ToClient(c, b) => self.reply_to(c, b),
                                ForwardAction::Nothing => {
                                    self.tcp_waiting.remove(&id);
                                }
                            }
                        }
                    }
                }
            }
            Command::Stats { reply } => {
                let s = self.authority.stats();
                let _ = reply.send(NodeStats {
                    names: self.store.name_count(),
                    rrsets: self.store.rrset_count(),
                    dns_by_rcode: s.by_rcode.iter().map(|(k, v)| (k.name(), *v)).collect(),
                    dns_by_qtype: s.by_qtype.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
                    dns_decode_errors: s.decode_errors.clone(),
                    dns_truncated: s.truncated,
                    dns_dropped: s.dropped,
                    dns_forwarded: self.forwarded,
                    ..NodeStats::default()
                });
            }
        }
    }

    /// Applies a write after checking it against the store; returns the
    /// report and the disk operations it needs.
    fn write(&mut self, puts: Vec<RRset>, removes: Vec<(Name, RType)>) -> Result<(WriteReport, Vec<Op>), WriteError> {
        let now_ms = self.clock.wall_ms();
        // A CNAME must stand alone at its name (RFC 1034 section 3.6.2).
        for set in &puts {
            let others: Vec<RType> = self
                .store
                .rrsets_at(&set.owner, now_ms)
                .map(|s| s.rtype)
                .filter(|t| *t != set.rtype && !removes.iter().any(|(n, r)| r == t && n.eq_ignore_case(&set.owner)))
                .collect();
            let clash = if set.rtype == RType::CNAME {
                others.first().copied()
            } else {
                others.iter().copied().find(|t| *t == RType::CNAME)
            };
            if let Some(t) = clash {
                return Err(WriteError::Conflict(format!(
                    "{} already has {t} data, and a CNAME cannot stand beside other data",
                    crate::records::display_name(&set.owner)
                )));
            }
        }
        let mut report = WriteReport::default();
        let mut ops = Vec::with_capacity(puts.len() + removes.len());
        for (name, rtype) in removes {
            if self.store.remove_rrset(&name, rtype) {
                self.mirror(ViewUpdate::Remove(name.clone(), rtype));
                report.removed += 1;
                ops.push(Op::Delete(name, rtype));
            }
        }
        for set in puts {
            self.mirror(ViewUpdate::Put(set.clone()));
            match self.store.put(set.clone()) {
                PutOutcome::Inserted => report.inserted += 1,
                PutOutcome::Replaced => report.replaced += 1,
            }
            ops.push(Op::Put(set));
        }
        Ok((report, ops))
    }

    fn finish_write(&mut self, result: Result<(WriteReport, Vec<Op>), WriteError>, reply: WriteReply) {
        match (result, &self.persister) {
            (Err(e), _) => {
                let _ = reply.send(Err(e));
            }
            (Ok((report, ops)), Some(p)) if !ops.is_empty() => {
                p.submit(
                    ops,
                    Some(Box::new(move |stored: Result<(), String>| {
                        let _ = reply.send(stored.map(|()| report).map_err(WriteError::Storage));
                    })),
                );
            }
            (Ok((report, _)), _) => {
                let _ = reply.send(Ok(report));
            }
        }
    }
}

/// Serves DNS over TCP: 2-byte length-prefixed messages, several per
/// connection, each answered through the node task.
pub async fn serve_tcp(listener: tokio::net::TcpListener, node: NodeHandle, mut shutdown: watch::Receiver<bool>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    /// Most TCP clients at once; more wait in the kernel's backlog.
    const CONNECTIONS_MAX: usize = 512;
    /// An idle connection is closed after this (RFC 7766 suggests seconds).
    const IDLE: std::time::Duration = std::time::Duration::from_secs(10);
    let permits = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS_MAX));
    loop {
        let permit = tokio::select! {
            _ = shutdown.changed() => return,
            p = permits.clone().acquire_owned() => p.expect("semaphore never closes"),
        };
        let (mut stream, peer) = tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("DNS TCP accept: {e}");
                    continue;
                }
            },
        };
        let node = node.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut len_buf = [0u8; 2];
            loop {
                match tokio::time::timeout(IDLE, stream.read_exact(&mut len_buf)).await {
                    Ok(Ok(_)) => {}
                    _ => return,
                }
                let len = u16::from_be_bytes(len_buf) as usize;
                let mut msg = vec![0u8; len];
                match tokio::time::timeout(IDLE, stream.read_exact(&mut msg)).await {
                    Ok(Ok(_)) => {}
                    _ => return,
                }
                let (tx, rx) = oneshot::channel();
                if !node.send(Command::Query { bytes: msg, reply: tx }).await {
                    return;
                }
                let Ok(Some(reply)) = rx.await else {
                    tracing::debug!(%peer, "closing a DNS TCP connection after an unanswerable message");
                    return;
                };
                let mut out = Vec::with_capacity(2 + reply.len());
                out.extend_from_slice(&(reply.len() as u16).to_be_bytes());
                out.extend_from_slice(&reply);
                if stream.write_all(&out).await.is_err() {
                    return;
                }
            }
        });
    }
}
