//! The node task: it owns the cluster member (gossip machine, replicated
//! store, DNS view) — one task, one owner, no lock. It takes API writes,
//! TCP queries and lists as commands, gossip frames from the network, and
//! timer ticks; it carries out what the member asks (send, persist, mirror
//! to the UDP thread) and forwards what the authority hands on.

use crate::clock::Clock;
use crate::cluster::{Cluster, Effect};
pub use crate::cluster::{WriteError, WriteReport};
use crate::dns_udp::{Control, ForwardRequest};
use crate::gossip_net::{GossipNet, Inbound};
use crate::persist::{Op, Persister};
use crate::rt;
use futures::channel::oneshot;
use rumor_core::dns::forward::{self, Forwarder, ForwarderConfig, To};
use rumor_core::dns::{Authority, Name, RRset, RType, Transport, Verdict};
use rumor_core::gossip::{MemberState, Now, PeerAddr};
use rumor_core::Transmit;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// Capacity of the command queue; API callers wait when it is full.
pub const COMMANDS_MAX: usize = 1024;
/// Gossip frames waiting for the node task; readers wait when it is full.
pub const INBOUND_MAX: usize = 4096;

/// Reply channel of a write.
pub type WriteReply = oneshot::Sender<Result<WriteReport, WriteError>>;

/// What the rest of the process asks of the node.
pub enum Command {
    /// Put these RRsets and remove those (name, type) pairs.
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
    /// A BitTorrent announce from `from` (the connection's address).
    Announce {
        /// The parsed request.
        req: rumor_core::bt::tracker::AnnounceRequest,
        /// The announcing peer's IP.
        from: std::net::IpAddr,
        /// The bencoded response body.
        reply: oneshot::Sender<Vec<u8>>,
    },
    /// A scrape of these torrents.
    Scrape {
        /// The torrents (none: every torrent indexed, bounded).
        hashes: Vec<rumor_core::bt::metainfo::InfoHash>,
        /// The bencoded response body.
        reply: oneshot::Sender<Vec<u8>>,
    },
    /// The providers of a torrent, as the overlay knows them.
    Providers {
        /// The torrent.
        ih: rumor_core::bt::metainfo::InfoHash,
        /// The providers and the wall time of the lookup.
        reply: oneshot::Sender<(Vec<rumor_core::overlay::Provider>, u64)>,
    },
    /// The cluster's members as this node sees them.
    Members {
        /// The members.
        reply: oneshot::Sender<Vec<MemberView>>,
    },
}

/// One member as `GET /members` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MemberView {
    /// Node id, hex.
    pub id: String,
    /// Gossip address.
    pub addr: String,
    /// alive, suspect, dead or left.
    pub state: &'static str,
    /// True for this node.
    pub me: bool,
}

/// Counters the node reports.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct NodeStats {
    /// This node's id, hex.
    pub node_id: String,
    /// Owner names held.
    pub names: usize,
    /// RRsets held.
    pub rrsets: usize,
    /// Replicated entries held (all namespaces, tombstones included).
    pub entries: usize,
    /// Members believed alive or suspect (this node excluded).
    pub members_live: usize,
    /// Known members by state (this node excluded).
    pub members_by_state: std::collections::BTreeMap<&'static str, usize>,
    /// Tombstones and expired entries still held (until collected).
    pub tombstones: usize,
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
    /// Gossip messages sent.
    pub gossip_messages_out: u64,
    /// Gossip bytes sent.
    pub gossip_bytes_out: u64,
    /// Gossip messages received and applied.
    pub gossip_messages_in: u64,
    /// Gossip bytes received.
    pub gossip_bytes_in: u64,
    /// Gossip messages dropped: no key opened them.
    pub gossip_dropped_auth: u64,
    /// Gossip messages dropped: bad format or over a limit.
    pub gossip_dropped_format: u64,
    /// Gossip messages not sent: a peer's queue was full.
    pub gossip_dropped_queue: u64,
    /// Remote entries applied.
    pub gossip_entries_applied: u64,
    /// Full state transfers completed.
    pub gossip_full_transfers: u64,
    /// Remote DNS entries whose value could not be read.
    pub gossip_rejected_values: u64,
    /// Propagation lag of remote writes (writer's clock to applied here).
    pub gossip_lag: crate::cluster::Lag,
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
    tx: async_channel::Sender<Command>,
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

/// The node's parts, ready to run.
pub struct NodeParts {
    /// The clock.
    pub clock: Clock,
    /// The cluster member.
    pub cluster: Cluster,
    /// The authority (for TCP queries).
    pub authority: Authority,
    /// The DNS UDP socket, to answer forwarded queries.
    pub udp_reply: std::net::UdpSocket,
    /// The UDP thread's replica, kept in step with every change.
    pub view: Option<std::sync::mpsc::Sender<Control>>,
    /// Queries the UDP thread wants forwarded.
    pub forward_rx: Option<async_channel::Receiver<ForwardRequest>>,
    /// Disk writer, if any.
    pub persister: Option<Persister>,
    /// Upstream resolver and a socket bound for talking to it.
    pub upstream: Option<(Box<dyn rt::UdpSocket>, SocketAddr)>,
    /// Gossip frames from the listener.
    pub inbound: async_channel::Receiver<Inbound>,
    /// Largest gossip frame.
    pub frame_max: usize,
    /// Join targets, resolved again from time to time.
    pub joins: async_channel::Receiver<Vec<PeerAddr>>,
    /// Seconds between a peer's announces, as the tracker tells them.
    pub tracker_interval_s: u32,
}

/// Everything the node task owns.
pub struct Node {
    clock: Clock,
    cluster: Cluster,
    authority: Authority,
    udp_reply: std::net::UdpSocket,
    view: Option<std::sync::mpsc::Sender<Control>>,
    forward_rx: Option<async_channel::Receiver<ForwardRequest>>,
    persister: Option<Persister>,
    forwarder: Option<(Forwarder<Client>, Arc<dyn rt::UdpSocket>, SocketAddr)>,
    /// The forwarder's next timeout, from its last drain.
    forward_deadline: Option<rumor_core::time::Instant>,
    tcp_waiting: HashMap<u64, oneshot::Sender<Option<Vec<u8>>>>,
    next_tcp_id: u64,
    forwarded: u64,
    net: GossipNet,
    inbound: async_channel::Receiver<Inbound>,
    joins: Option<async_channel::Receiver<Vec<PeerAddr>>>,
    tracker_interval_s: u32,
    /// Announces waiting on a providers lookup, by lookup id.
    parked: HashMap<u32, Parked>,
    /// When each torrent was last looked up.
    lookups_asked: HashMap<rumor_core::bt::metainfo::InfoHash, rumor_core::time::Instant>,
    next_lookup_id: u32,
}

/// An announce waiting for a lookup: the request, the peer, the reply.
type Parked = (rumor_core::bt::tracker::AnnounceRequest, SocketAddr, oneshot::Sender<Vec<u8>>);

/// Announces parked at once; past it they are answered at once.
const PARKED_MAX: usize = 1024;
/// A torrent with no known provider is asked about at most this often.
const LOOKUP_AGAIN: rumor_core::time::Duration = rumor_core::time::Duration::from_secs(30);

impl Node {
    /// Builds the node and its command channel.
    pub fn new(parts: NodeParts) -> (Node, NodeHandle, async_channel::Receiver<Command>) {
        let (tx, rx) = async_channel::bounded(COMMANDS_MAX);
        let seed = os_random();
        let node = Node {
            clock: parts.clock,
            cluster: parts.cluster,
            authority: parts.authority,
            udp_reply: parts.udp_reply,
            view: parts.view,
            forward_rx: parts.forward_rx,
            persister: parts.persister,
            forwarder: parts
                .upstream
                .map(|(sock, addr)| (Forwarder::new(ForwarderConfig::default(), seed), Arc::from(sock), addr)),
            forward_deadline: None,
            tcp_waiting: HashMap::new(),
            next_tcp_id: 0,
            forwarded: 0,
            net: GossipNet::new(parts.frame_max),
            inbound: parts.inbound,
            joins: Some(parts.joins),
            tracker_interval_s: parts.tracker_interval_s,
            parked: HashMap::new(),
            lookups_asked: HashMap::new(),
            next_lookup_id: 0,
        };
        (node, NodeHandle { tx }, rx)
    }

    fn now(&self) -> Now {
        Now { at: self.clock.now(), wall_ms: self.clock.wall_ms() }
    }

    /// Runs until `shutdown` fires or every handle is dropped.
    pub async fn run(mut self, rx: async_channel::Receiver<Command>, shutdown: rt::Shutdown) {
        use futures::FutureExt;
        let mut up_buf = vec![0u8; 65_535];
        let mut forward_rx = self.forward_rx.take();
        let mut joins = self.joins.take();
        let inbound = self.inbound.clone();
        // Whatever restoring the store produced (sends, persistence).
        self.apply_effects(None);
        loop {
            let deadline = self.next_deadline();
            let upstream = self.forwarder.as_ref().map(|f| f.1.clone());
            let upstream_reply = async {
                match &upstream {
                    Some(sock) => sock.recv_from(&mut up_buf).await.ok().map(|(n, _)| up_buf[..n].to_vec()),
                    None => futures::future::pending().await,
                }
            };
            // Biased: shutdown, then API commands, then gossip, so a gossip
            // flood cannot starve the operator.
            futures::select_biased! {
                _ = shutdown.wait().fuse() => break,
                cmd = rx.recv().fuse() => match cmd {
                    Ok(cmd) => self.command(cmd),
                    Err(_) => break,
                },
                msg = inbound.recv().fuse() => {
                    if let Ok((from, bytes)) = msg {
                        let now = self.now();
                        self.cluster.receive(now, from, bytes);
                        self.apply_effects(None);
                    }
                }
                addrs = rt::recv_opt(&mut joins).fuse() => {
                    if let Some(addrs) = addrs {
                        self.join(addrs);
                    }
                }
                req = rt::recv_opt(&mut forward_rx).fuse() => {
                    if let Some((from, query)) = req {
                        self.forward(Client::Udp(from), query).await;
                    }
                }
                reply = upstream_reply.fuse() => {
                    if let Some(reply) = reply {
                        self.upstream_reply(reply);
                    }
                }
                _ = rt::sleep_until(deadline).fuse() => self.on_timer(),
            }
        }
        // Say goodbye, give the frames a moment to leave, then flush disk.
        let now = self.now();
        self.cluster.leave(now);
        self.apply_effects(None);
        rt::sleep(std::time::Duration::from_millis(100)).await;
        if let Some(p) = self.persister.take() {
            rt::spawn_blocking(move || p.shutdown()).await.ok();
        }
    }

    /// Joins the addresses that are not already live members.
    fn join(&mut self, addrs: Vec<PeerAddr>) {
        let known: std::collections::HashSet<String> = self
            .cluster
            .members()
            .into_iter()
            .filter(|(_, _, st)| matches!(st, MemberState::Alive | MemberState::Suspect))
            .map(|(_, a, _)| a)
            .collect();
        let fresh: Vec<PeerAddr> = addrs.into_iter().filter(|a| !known.contains(&a.0)).collect();
        if !fresh.is_empty() {
            tracing::debug!(count = fresh.len(), "joining");
            let now = self.now();
            self.cluster.join(now, fresh);
            self.apply_effects(None);
        }
    }

    fn next_deadline(&self) -> std::time::Instant {
        let mut at = self.clock.std_instant(self.cluster.next_timeout());
        if let Some(exp_ms) = self.cluster.view().next_expiry() {
            let wait = exp_ms.saturating_sub(self.clock.wall_ms());
            at = at.min(std::time::Instant::now() + std::time::Duration::from_millis(wait));
        }
        if let Some(t) = self.forward_deadline {
            at = at.min(self.clock.std_instant(t));
        }
        at
    }

    fn on_timer(&mut self) {
        let now = self.now();
        self.cluster.timeout(now);
        self.apply_effects(None);
        if self.forward_deadline.is_some_and(|t| t <= now.at) {
            // Expired queries only answer their clients: nothing goes upstream.
            self.forwarder_input(forward::Input::Timeout);
        }
    }

    /// Carries out what the cluster member asked; persistence ops go to
    /// disk together, and `ack` runs once they are durable.
    fn apply_effects(&mut self, ack: Option<crate::persist::Ack>) {
        let mut ops: Vec<Op> = Vec::new();
        while let Some(effect) = self.cluster.poll_effect() {
            match effect {
                Effect::Send(to, bytes) => self.net.send(&to, bytes),
                Effect::Persist(op) => ops.push(op),
                Effect::Mirror(update) => {
                    if let Some(v) = &self.view {
                        let _ = v.send(Control::Update(update));
                    }
                }
                Effect::Member(what) => tracing::info!("{what}"),
                Effect::LookupDone(id, found) => self.lookup_done(id, found),
            }
        }
        match &self.persister {
            Some(p) if !ops.is_empty() || ack.is_some() => p.submit(ops, ack),
            _ => {
                if let Some(ack) = ack {
                    ack(Ok(()));
                }
            }
        }
    }

    fn send_udp(&self, bytes: &[u8], to: SocketAddr) {
        if let Err(e) = self.udp_reply.send_to(bytes, to) {
            tracing::trace!("DNS send to {to}: {e}");
        }
    }

    /// Feeds the forwarder one input and carries out its outputs: replies
    /// go to their clients here; queries for the upstream are returned for
    /// the caller to send (it may await, or not).
    fn forwarder_input(&mut self, input: forward::Input<Client>) -> Vec<Vec<u8>> {
        let now = self.clock.now();
        let mut upstream = Vec::new();
        let mut replies = Vec::new();
        let Some((fwd, _, _)) = self.forwarder.as_mut() else {
            return upstream;
        };
        fwd.handle(now, input);
        loop {
            match fwd.poll_output() {
                forward::Output::Transmit(Transmit { to: To::Upstream, bytes }) => upstream.push(bytes),
                forward::Output::Transmit(Transmit { to: To::Client(c), bytes }) => replies.push((c, bytes)),
                forward::Output::Timeout(at) => {
                    self.forward_deadline = (at != rumor_core::time::Instant::NEVER).then_some(at);
                    break;
                }
            }
        }
        self.forwarded += upstream.len() as u64;
        for (client, bytes) in replies {
            self.reply_to(client, bytes);
        }
        upstream
    }

    async fn forward(&mut self, client: Client, query: Vec<u8>) {
        let sends = self.forwarder_input(forward::Input::Query { client, bytes: query });
        if let Some((_, sock, upstream)) = self.forwarder.as_ref() {
            for bytes in sends {
                let _ = sock.send_to(&bytes, *upstream).await;
            }
        }
    }

    fn upstream_reply(&mut self, bytes: Vec<u8>) {
        self.forwarder_input(forward::Input::Receive { bytes });
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

    fn finish_write(&mut self, result: Result<WriteReport, WriteError>, reply: WriteReply) {
        match result {
            Err(e) => {
                // Whatever did apply is still persisted and spread.
                self.apply_effects(None);
                let _ = reply.send(Err(e));
            }
            Ok(report) => self.apply_effects(Some(Box::new(move |stored: Result<(), String>| {
                let _ = reply.send(stored.map(|()| report).map_err(WriteError::Storage));
            }))),
        }
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Write { puts, removes, reply } => {
                let now = self.now();
                let result = self.cluster.write(now, puts, removes);
                self.finish_write(result, reply);
            }
            Command::DeleteName { name, reply } => {
                let now = self.now();
                let result = self.cluster.delete_name(now, &name);
                self.finish_write(result, reply);
            }
            Command::List { name, reply } => {
                let now_ms = self.clock.wall_ms();
                let view = self.cluster.view();
                let sets = match name {
                    Some(n) => view.rrsets_at(&n, now_ms).cloned().collect(),
                    None => view.live(now_ms).into_iter().cloned().collect(),
                };
                let _ = reply.send((sets, now_ms));
            }
            Command::Query { bytes, reply } => self.tcp_query(bytes, reply),
            Command::Stats { reply } => {
                let _ = reply.send(self.stats());
            }
            Command::Announce { req, from, reply } => self.announce(req, from, reply),
            Command::Scrape { hashes, reply } => {
                let _ = reply.send(self.scrape(hashes));
            }
            Command::Providers { ih, reply } => {
                let now_ms = self.clock.wall_ms();
                let _ = reply.send((self.cluster.overlay().lookup(&ih, now_ms, usize::MAX, None), now_ms));
            }
            Command::Members { reply } => {
                let me = self.cluster.gossip().id();
                let mut members: Vec<MemberView> = self
                    .cluster
                    .members()
                    .into_iter()
                    .map(|(id, addr, st)| MemberView {
                        id: format!("{id:016x}"),
                        addr,
                        state: state_name(st),
                        me: false,
                    })
                    .collect();
                members.push(MemberView { id: format!("{me:016x}"), addr: String::new(), state: "alive", me: true });
                members.sort_by(|a, b| a.id.cmp(&b.id));
                let _ = reply.send(members);
            }
        }
    }

    /// Records the announcing peer in the overlay and answers with other
    /// providers of the torrent, cluster-wide. When the overlay knows no
    /// other provider, a few members are asked first (a node that just
    /// joined may not hold them yet) and the answer waits for their reply,
    /// at most the gossip lookup timeout; a torrent is asked about at most
    /// once per [`LOOKUP_AGAIN`].
    fn announce(
        &mut self,
        req: rumor_core::bt::tracker::AnnounceRequest,
        from: std::net::IpAddr,
        reply: oneshot::Sender<Vec<u8>>,
    ) {
        use rumor_core::bt::tracker::AnnounceEvent;
        /// How long a completed download is remembered for scrape.
        const SNATCH_TTL_MS: u64 = 30 * 24 * 3600 * 1000;
        let now = self.now();
        let interval = self.tracker_interval_s;
        let addr = SocketAddr::new(from, req.port);
        let provider = rumor_core::overlay::Provider {
            addr,
            peer_id: Some(req.peer_id),
            seeder: req.left == 0,
            announced_ms: now.wall_ms,
            // Two missed announces and a margin, then the peer is gone.
            expires_ms: now.wall_ms + (2 * interval as u64 + 30) * 1000,
        };
        let stopped = req.event == AnnounceEvent::Stopped;
        let completed = req.event == AnnounceEvent::Completed;
        self.cluster.announce(now, &req.info_hash, provider, stopped, completed, SNATCH_TTL_MS);
        self.apply_effects(None);
        let alone = self.cluster.overlay().lookup(&req.info_hash, now.wall_ms, 1, Some(addr)).is_empty();
        let asked_recently = self.lookups_asked.get(&req.info_hash).is_some_and(|at| now.at < *at + LOOKUP_AGAIN);
        if stopped || !alone || asked_recently || self.parked.len() >= PARKED_MAX {
            let _ = reply.send(self.announce_response(&req, addr));
            return;
        }
        if self.lookups_asked.len() >= PARKED_MAX {
            self.lookups_asked.retain(|_, at| now.at < *at + LOOKUP_AGAIN);
        }
        self.lookups_asked.insert(req.info_hash, now.at);
        self.next_lookup_id = self.next_lookup_id.wrapping_add(1);
        let id = self.next_lookup_id;
        self.parked.insert(id, (req.clone(), addr, reply));
        self.cluster.lookup_providers(now, id, &req.info_hash);
        self.apply_effects(None);
    }

    /// A providers lookup ended: answer the announce that waited on it.
    fn lookup_done(&mut self, id: u32, found: usize) {
        if let Some((req, addr, reply)) = self.parked.remove(&id) {
            tracing::debug!(infohash = %req.info_hash.to_hex(), found, "providers lookup done");
            let _ = reply.send(self.announce_response(&req, addr));
        }
    }

    fn announce_response(&self, req: &rumor_core::bt::tracker::AnnounceRequest, addr: SocketAddr) -> Vec<u8> {
        use rumor_core::bt::tracker::{encode_announce_response, AnnounceEvent, AnnounceResponse, TrackerPeer};
        /// Peers sent when the client does not say how many it wants.
        const NUMWANT_DEFAULT: u32 = 50;
        let now_ms = self.clock.wall_ms();
        let interval = self.tracker_interval_s;
        let overlay = self.cluster.overlay();
        let want = req.numwant.unwrap_or(NUMWANT_DEFAULT) as usize;
        let peers = if req.event == AnnounceEvent::Stopped {
            Vec::new()
        } else {
            overlay.lookup(&req.info_hash, now_ms, want, Some(addr))
        };
        let counts = overlay.counts(&req.info_hash, now_ms);
        let response = AnnounceResponse {
            interval,
            min_interval: Some((interval / 4).max(1)),
            complete: Some(counts.seeders),
            incomplete: Some(counts.leechers),
            peers: peers.iter().map(|p| TrackerPeer { addr: p.addr, peer_id: p.peer_id }).collect(),
            ..AnnounceResponse::default()
        };
        encode_announce_response(&response, req.compact)
    }

    fn scrape(&self, hashes: Vec<rumor_core::bt::metainfo::InfoHash>) -> Vec<u8> {
        use rumor_core::bt::tracker::{encode_scrape_response, ScrapeStats};
        let now_ms = self.clock.wall_ms();
        let overlay = self.cluster.overlay();
        let files = hashes
            .into_iter()
            .take(rumor_core::overlay::LOOKUP_MAX)
            .map(|ih| {
                let c = overlay.counts(&ih, now_ms);
                (ih, ScrapeStats { complete: c.seeders, incomplete: c.leechers, downloaded: overlay.downloaded(&ih) })
            })
            .collect();
        encode_scrape_response(&files)
    }

    fn tcp_query(&mut self, bytes: Vec<u8>, reply: oneshot::Sender<Option<Vec<u8>>>) {
        let now_ms = self.clock.wall_ms();
        let mut out = Vec::new();
        match self.authority.answer(now_ms, &bytes, Transport::Tcp, self.cluster.view(), &mut out) {
            Verdict::Reply => {
                let _ = reply.send(Some(out));
            }
            Verdict::Drop => {
                let _ = reply.send(None);
            }
            Verdict::Forward => {
                let id = self.next_tcp_id;
                self.next_tcp_id += 1;
                self.tcp_waiting.insert(id, reply);
                if self.forwarder.is_some() {
                    let sends = self.forwarder_input(forward::Input::Query { client: Client::Tcp(id), bytes });
                    if sends.is_empty() {
                        // Answered at once (SERVFAIL: too busy) or unreadable.
                        self.tcp_waiting.remove(&id);
                    }
                    if let Some((_, sock, upstream)) = self.forwarder.as_ref() {
                        for b in sends {
                            let (sock, upstream) = (sock.clone(), *upstream);
                            rt::spawn(async move {
                                let _ = sock.send_to(&b, upstream).await;
                            });
                        }
                    }
                }
            }
        }
    }

    fn stats(&self) -> NodeStats {
        let s = self.authority.stats();
        let g = self.cluster.gossip().stats();
        let view = self.cluster.view();
        NodeStats {
            node_id: format!("{:016x}", self.cluster.gossip().id()),
            names: view.name_count(),
            rrsets: view.rrset_count(),
            entries: self.cluster.gossip().store().len(),
            members_live: self.cluster.gossip().live_members(),
            members_by_state: {
                let mut m = std::collections::BTreeMap::new();
                for st in ["alive", "suspect", "dead", "left"] {
                    m.insert(st, 0);
                }
                for (_, _, st) in self.cluster.members() {
                    *m.entry(state_name(st)).or_default() += 1;
                }
                m
            },
            tombstones: {
                let now_ms = self.clock.wall_ms();
                self.cluster.gossip().store().entries().filter(|e| !e.is_live(now_ms)).count()
            },
            dns_by_rcode: s.by_rcode.iter().map(|(k, v)| (k.name(), *v)).collect(),
            dns_by_qtype: s.by_qtype.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            dns_decode_errors: s.decode_errors.clone(),
            dns_truncated: s.truncated,
            dns_dropped: s.dropped,
            dns_forwarded: self.forwarded,
            gossip_messages_out: g.messages_out,
            gossip_bytes_out: g.bytes_out,
            gossip_messages_in: g.messages_in,
            gossip_bytes_in: g.bytes_in,
            gossip_dropped_auth: g.dropped_auth,
            gossip_dropped_format: g.dropped_format,
            gossip_dropped_queue: self.net.dropped,
            gossip_entries_applied: g.entries_applied,
            gossip_full_transfers: g.full_transfers,
            gossip_rejected_values: self.cluster.rejected_remote(),
            gossip_lag: self.cluster.lag(),
            ..NodeStats::default()
        }
    }
}

fn state_name(st: MemberState) -> &'static str {
    match st {
        MemberState::Alive => "alive",
        MemberState::Suspect => "suspect",
        MemberState::Dead => "dead",
        MemberState::Left => "left",
    }
}

/// 64 bits from the operating system's entropy source.
pub fn os_random() -> u64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        // No entropy source: fall back on the clock and the pid, which is
        // unique enough for ids; nonces then rely on XChaCha's 192 bits.
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        return (t as u64) ^ ((std::process::id() as u64) << 32);
    }
    u64::from_le_bytes(b)
}

/// Resolves the join targets (host:port, where the host may be a DNS name
/// with many addresses, as Docker's `tasks.<service>`) every `every`, and
/// sends the addresses to the node, which joins those it does not know.
pub async fn resolve_joins(targets: Vec<String>, tx: async_channel::Sender<Vec<PeerAddr>>, shutdown: rt::Shutdown) {
    use futures::FutureExt;
    if targets.is_empty() {
        return;
    }
    let mut every = std::time::Duration::from_secs(2);
    loop {
        let mut addrs = Vec::new();
        for t in &targets {
            match rt::lookup_host(t.clone()).await {
                Ok(found) => addrs.extend(found.into_iter().map(|a| PeerAddr(a.to_string()))),
                Err(e) => tracing::debug!(target = %t, "cannot resolve join target: {e}"),
            }
        }
        addrs.sort();
        addrs.dedup();
        if !addrs.is_empty() && tx.send(addrs).await.is_err() {
            return;
        }
        futures::select_biased! {
            _ = shutdown.wait().fuse() => return,
            _ = rt::sleep(every).fuse() => {}
        }
        // Often at first (replicas start at different times), then calmly.
        every = (every * 2).min(std::time::Duration::from_secs(30));
    }
}

/// Serves DNS over TCP (RFC 7766): 2-byte length-prefixed messages,
/// several per connection, each answered through the node task.
pub async fn serve_tcp(listener: Box<dyn rt::TcpListener>, node: NodeHandle, shutdown: rt::Shutdown) {
    use futures::AsyncWriteExt;
    /// Most TCP clients at once; more wait in the kernel's backlog.
    const CONNECTIONS_MAX: usize = 512;
    /// An idle connection is closed after this (RFC 7766 suggests seconds).
    const IDLE: std::time::Duration = std::time::Duration::from_secs(10);
    crate::net::accept_bounded(listener, CONNECTIONS_MAX, "DNS TCP", shutdown, |mut stream, peer| {
        let node = node.clone();
        async move {
            while let Some(msg) = crate::net::read_frame::<2>(&mut stream, u16::MAX as usize, IDLE).await {
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
        }
    })
    .await
}
