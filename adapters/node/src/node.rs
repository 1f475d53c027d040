//! The node task: it owns the node's two core machines, the member
//! ([`rumor_core::member::Member`]: gossip, replicated store, DNS view) and
//! the tracker ([`rumor_core::overlay::tracker::Tracker`]) — one task, one
//! owner, no lock. It takes API writes, TCP queries, announces and lists as
//! commands, gossip frames from the network, and timer ticks; feeds each to
//! a machine and drains both (the tracker's gossip commands go to the
//! member, the member's provider changes and lookup ends to the tracker);
//! then it carries out the outputs: sends, persistence, mirroring to the
//! UDP thread, answers.

use crate::clock::Clock;
use crate::dns_udp::{Control, ForwardRequest, ViewUpdate};
use crate::gossip_net::{Closer, GossipNet, Inbound};
use crate::persist::Persister;
use crate::rt;
use futures::channel::oneshot;
use rumor_core::dns::forward::{self, Forwarder, ForwarderConfig, To};
use rumor_core::dns::{Authority, Name, RRset, RType, Transport, Verdict};
use rumor_core::gossip::{DecodeError, Event as GossipEvent, MemberState, Now, PeerAddr};
use rumor_core::member::{self, Member, Persist, ViewChange};
pub use rumor_core::member::{Lag, WriteReport};
use rumor_core::overlay::tracker::{self, Tracker};
use rumor_core::Transmit;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

/// Capacity of the command queue; API callers wait when it is full.
pub const COMMANDS_MAX: usize = 1024;
/// Gossip frames waiting for the node task; readers wait when it is full.
pub const INBOUND_MAX: usize = 4096;

/// Why a write failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteError {
    /// The member refused it (a DNS rule, a store limit).
    Refused(member::WriteError),
    /// The disk did not take it (full, failing): nothing changed, nothing
    /// is served.
    Storage(String),
}

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
        /// Told once durable (with a data directory) and applied.
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
    /// Gossip messages dropped: sealed, but replayed (or too old to tell).
    pub gossip_dropped_replay: u64,
    /// Gossip messages not sent: a peer's queue was full.
    pub gossip_dropped_queue: u64,
    /// Remote entries applied.
    pub gossip_entries_applied: u64,
    /// Full state transfers completed.
    pub gossip_full_transfers: u64,
    /// Remote DNS entries whose value could not be read.
    pub gossip_rejected_values: u64,
    /// Propagation lag of remote writes (writer's clock to applied here).
    pub gossip_lag: Lag,
    /// BitTorrent announces handled.
    pub tracker_announces: u64,
    /// Announces answered at once.
    pub tracker_answered_at_once: u64,
    /// Parked announces answered when their lookup ended.
    pub tracker_answered_after_lookup: u64,
    /// Parked announces answered at the park timeout.
    pub tracker_answered_on_timeout: u64,
    /// Announces parked now.
    pub tracker_parked: u64,
    /// Late announces after a stop that did not list the peer again.
    pub tracker_late_after_stop: u64,
    /// Announces refused over their address's rate.
    pub tracker_rate_limited: u64,
    /// Announces answered but not recorded: a bound on providers was
    /// reached.
    pub tracker_not_recorded: u64,
    /// Providers indexed (all torrents, every node's announces).
    pub tracker_providers: u64,
    /// Replicated entries of the providers namespace (tombstones included).
    pub provider_entries: usize,
    /// DNS over TCP connections closed because the client did not read
    /// its answers in time.
    pub dns_tcp_write_timeouts: u64,
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
    /// The cluster member, restored from the data directory.
    pub member: Member,
    /// This node's gossip address, as peers reach it.
    pub advertise: String,
    /// Tells the gossip listener to close a connection whose frames no key
    /// opens.
    pub closer: Closer,
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
    /// Announces per second one address may make (bursts of 20 times
    /// that); past it the tracker answers `announce rate limit`.
    pub tracker_rate_per_s: u32,
}

/// Everything the node task owns.
pub struct Node {
    clock: Clock,
    member: Member,
    tracker: Tracker,
    advertise: String,
    closer: Closer,
    /// Peers (by IP) already warned about for gossip no key opens.
    auth_warned: HashSet<std::net::IpAddr>,
    /// Gossip messages the member dropped (any reason), to tell whether
    /// the last one received opened.
    gossip_drops: u64,
    member_deadline: rumor_core::time::Instant,
    tracker_deadline: rumor_core::time::Instant,
    /// Writes waiting for the member's answer, by token: those waiting for
    /// the disk, at most the member's `PENDING_WRITES_MAX` (it refuses the
    /// rest at once).
    writes: HashMap<u64, WriteReply>,
    /// The disk's answers for writes waiting on it (write token, outcome),
    /// sent by the persister's thread; as many as writes wait, at most.
    durable_tx: async_channel::Sender<(u64, Result<(), String>)>,
    durable_rx: async_channel::Receiver<(u64, Result<(), String>)>,
    /// Announces and scrapes waiting for the tracker's answer, by token:
    /// the parked ones (at most the tracker's `parked_max`, each answered
    /// by its park timeout); every other is answered within its drive.
    answers: HashMap<u64, oneshot::Sender<Vec<u8>>>,
    next_id: u64,
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
}

/// Peers remembered as warned about a wrong cluster key; past it the set
/// starts over (a warning may then repeat).
const AUTH_WARNED_MAX: usize = 1024;

impl Node {
    /// Builds the node and its command channel.
    pub fn new(parts: NodeParts) -> (Node, NodeHandle, async_channel::Receiver<Command>) {
        let (tx, rx) = async_channel::bounded(COMMANDS_MAX);
        let seed = os_random();
        let now = parts.clock.both();
        // Unbounded in type only: one ack per write waiting on the disk, and the
        // member holds at most `member::PENDING_WRITES_MAX` of those.
        let (durable_tx, durable_rx) = async_channel::unbounded();
        let mut config = tracker::Config::new(parts.tracker_interval_s);
        config.rate_per_s = parts.tracker_rate_per_s.max(1);
        config.rate_burst = config.rate_per_s.saturating_mul(20);
        let mut tracker = Tracker::new(config, now);
        tracker.restore(parts.member.store().live(rumor_core::replica::Namespace::PROVIDERS, now.wall_ms));
        let node = Node {
            clock: parts.clock,
            member: parts.member,
            tracker,
            advertise: parts.advertise,
            closer: parts.closer.clone(),
            auth_warned: HashSet::new(),
            gossip_drops: 0,
            member_deadline: now.at,
            tracker_deadline: now.at,
            writes: HashMap::new(),
            durable_tx,
            durable_rx,
            answers: HashMap::new(),
            next_id: 0,
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
            net: GossipNet::new(parts.frame_max, parts.closer),
            inbound: parts.inbound,
            joins: Some(parts.joins),
        };
        (node, NodeHandle { tx }, rx)
    }

    fn now(&self) -> Now {
        self.clock.both()
    }

    /// Runs until `shutdown` fires or every handle is dropped.
    pub async fn run(mut self, rx: async_channel::Receiver<Command>, shutdown: rt::Shutdown) {
        use futures::FutureExt;
        let mut up_buf = vec![0u8; 65_535];
        let mut forward_rx = self.forward_rx.take();
        let mut joins = self.joins.take();
        let inbound = self.inbound.clone();
        let durable = self.durable_rx.clone();
        // Whatever restoring the store produced (sends, persistence).
        self.drive(Vec::new(), Vec::new());
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
                stored = durable.recv().fuse() => {
                    if let Ok((id, result)) = stored {
                        self.feed_member(member::Input::Persisted { id, result });
                    }
                }
                cmd = rx.recv().fuse() => match cmd {
                    Ok(cmd) => self.command(cmd),
                    Err(_) => break,
                },
                msg = inbound.recv().fuse() => {
                    if let Ok((from, bytes)) = msg {
                        let drops = self.gossip_drops;
                        self.feed_member(member::Input::Receive { from: from.clone(), bytes });
                        if self.gossip_drops == drops {
                            // It opened under a cluster key: a member's.
                            self.closer.admit(&from);
                        }
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
        self.feed_member(member::Input::Command(member::Command::Leave));
        rt::sleep(std::time::Duration::from_millis(100)).await;
        if let Some(p) = self.persister.take() {
            rt::spawn_blocking(move || p.shutdown()).await.ok();
        }
        // Writes that became durable meanwhile are answered as such.
        while let Ok((id, result)) = durable.try_recv() {
            self.feed_member(member::Input::Persisted { id, result });
        }
    }

    /// Joins the addresses that are not already live members.
    fn join(&mut self, addrs: Vec<PeerAddr>) {
        let known: HashSet<&PeerAddr> = self
            .member
            .members()
            .filter(|(_, _, st)| matches!(st, MemberState::Alive | MemberState::Suspect))
            .map(|(_, a, _)| a)
            .collect();
        let fresh: Vec<PeerAddr> = addrs.into_iter().filter(|a| !known.contains(a)).collect();
        if !fresh.is_empty() {
            tracing::debug!(count = fresh.len(), "joining");
            self.feed_member(member::Input::Command(member::Command::Join(fresh)));
        }
    }

    fn next_deadline(&self) -> std::time::Instant {
        let mut at = self.clock.std_instant(self.member_deadline.min(self.tracker_deadline));
        if let Some(t) = self.forward_deadline {
            at = at.min(self.clock.std_instant(t));
        }
        at
    }

    fn on_timer(&mut self) {
        let now = self.now();
        self.member.handle(now, member::Input::Timeout);
        self.tracker.handle(now, tracker::Input::Timeout);
        self.drive(Vec::new(), Vec::new());
        if self.forward_deadline.is_some_and(|t| t <= now.at) {
            // Expired queries only answer their clients: nothing goes upstream.
            self.forwarder_input(forward::Input::Timeout);
        }
    }

    /// Feeds one input to the member, then drives both machines.
    fn feed_member(&mut self, input: member::Input) {
        let now = self.now();
        self.member.handle(now, input);
        self.drive(Vec::new(), Vec::new());
    }

    /// Feeds one input to the tracker, then drives both machines.
    fn feed_tracker(&mut self, input: tracker::Input) {
        self.drive(Vec::new(), vec![input]);
    }

    /// Drains both machines until neither has more to say, passing the
    /// tracker's gossip commands to the member and the member's provider
    /// changes and lookup ends to the tracker; carries out the rest. The
    /// persistence it collects goes to disk together, and the member hears
    /// for each write waiting on it ([`member::Event::Persisting`]) how
    /// that went.
    fn drive(&mut self, mut to_member: Vec<member::Command>, mut to_tracker: Vec<tracker::Input>) {
        let mut ops: Vec<Persist> = Vec::new();
        let mut waiting: Vec<u64> = Vec::new();
        loop {
            let now = self.now();
            for c in to_member.drain(..) {
                self.member.handle(now, member::Input::Command(c));
            }
            loop {
                match self.member.poll_output() {
                    member::Output::Transmit(t) => self.net.send(&t.to, t.bytes),
                    member::Output::Persist(p) => ops.push(p),
                    member::Output::Event(e) => self.member_event(e, &mut to_tracker, &mut waiting),
                    member::Output::Timeout(at) => {
                        self.member_deadline = at;
                        break;
                    }
                }
            }
            for input in to_tracker.drain(..) {
                self.tracker.handle(now, input);
            }
            loop {
                match self.tracker.poll_output() {
                    tracker::Output::Gossip(c) => to_member.push(member::Command::Gossip(c)),
                    tracker::Output::Event(tracker::Event::Answer { id, body }) => {
                        if let Some(tx) = self.answers.remove(&id) {
                            let _ = tx.send(body);
                        }
                    }
                    tracker::Output::Timeout(at) => {
                        self.tracker_deadline = at;
                        break;
                    }
                }
            }
            if to_member.is_empty() && to_tracker.is_empty() {
                break;
            }
        }
        match &self.persister {
            Some(p) => {
                if ops.is_empty() && waiting.is_empty() {
                    return;
                }
                let ack: Option<crate::persist::Ack> = (!waiting.is_empty()).then(|| {
                    let tx = self.durable_tx.clone();
                    Box::new(move |stored: Result<(), String>| {
                        for id in waiting {
                            // Unbounded, so the writer thread never waits;
                            // closed only once the node has stopped.
                            let _ = tx.try_send((id, stored.clone()));
                        }
                    }) as crate::persist::Ack
                });
                p.submit(ops, ack);
            }
            None => {
                // In memory only: durable as soon as said.
                for id in waiting {
                    self.feed_member(member::Input::Persisted { id, result: Ok(()) });
                }
            }
        }
    }

    fn member_event(&mut self, e: member::Event, to_tracker: &mut Vec<tracker::Input>, waiting: &mut Vec<u64>) {
        match e {
            member::Event::View(change) => {
                if let Some(v) = &self.view {
                    let update = match change {
                        ViewChange::Put(set) => ViewUpdate::Put(set),
                        ViewChange::Remove(name, rtype) => ViewUpdate::Remove(name, rtype),
                    };
                    let _ = v.send(Control::Update(update));
                }
            }
            member::Event::Persisting { id } => waiting.push(id),
            member::Event::Written { id, result } => {
                if let Some(reply) = self.writes.remove(&id) {
                    let _ = reply.send(match result {
                        Ok(report) => Ok(report),
                        Err(member::WriteError::Storage(m)) => Err(WriteError::Storage(m)),
                        // Whatever did apply is still persisted and spread.
                        Err(e) => Err(WriteError::Refused(e)),
                    });
                }
            }
            member::Event::Gossip(GossipEvent::MemberUp { id, addr }) => {
                tracing::info!("member {id:016x} at {} is up", addr.0)
            }
            member::Event::Gossip(GossipEvent::MemberDown { id, addr }) => {
                tracing::info!("member {id:016x} at {} is down", addr.0)
            }
            member::Event::Gossip(GossipEvent::LookupDone { id, found }) => {
                tracing::debug!(id, found, "providers lookup done");
                to_tracker.push(tracker::Input::LookupDone { id });
            }
            member::Event::Providers(change) => to_tracker.push(tracker::Input::Store(change)),
            member::Event::Gossip(GossipEvent::Dropped { from, reason: DecodeError::Auth }) => {
                self.gossip_drops += 1;
                // The sender learns nothing from a sealed reply, so the
                // connection is closed: its transport notices and says so.
                self.closer.close(&from);
                let ip = from.0.parse::<SocketAddr>().map(|a| a.ip()).ok();
                if let Some(ip) = ip {
                    if self.auth_warned.len() >= AUTH_WARNED_MAX {
                        self.auth_warned.clear();
                    }
                    if self.auth_warned.insert(ip) {
                        tracing::warn!(
                            "gossip from {ip} cannot be opened with our cluster key (a different --cluster-key?); \
                             its connections are closed and further refusals only counted (gossip_dropped_auth)"
                        );
                    }
                }
            }
            member::Event::Gossip(GossipEvent::Dropped {
                from,
                reason: reason @ (DecodeError::Replayed | DecodeError::Stale),
            }) => {
                self.gossip_drops += 1;
                // Sealed, but a copy of a message already taken or one too
                // old: a member never sends those (its numbers grow and its
                // clock agrees), so the connection is someone replaying
                // captured frames. Closed, like one without the key; it was
                // never admitted (a drop admits nothing).
                self.closer.close(&from);
                tracing::debug!(from = %from.0, "gossip message dropped as a replay: {reason:?}");
            }
            member::Event::Gossip(GossipEvent::Dropped { from, reason }) => {
                self.gossip_drops += 1;
                tracing::debug!(from = %from.0, "gossip message dropped: {reason:?}");
            }
            // The member handles these itself; they never come this way.
            member::Event::Gossip(GossipEvent::Store(_) | GossipEvent::WriteRefused { .. }) => {}
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

    fn fresh_id(&mut self) -> u64 {
        self.next_id = self.next_id.wrapping_add(1);
        self.next_id
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Write { puts, removes, reply } => {
                let id = self.fresh_id();
                self.writes.insert(id, reply);
                self.feed_member(member::Input::Command(member::Command::Write { id, puts, removes }));
            }
            Command::DeleteName { name, reply } => {
                let id = self.fresh_id();
                self.writes.insert(id, reply);
                self.feed_member(member::Input::Command(member::Command::DeleteName { id, name }));
            }
            Command::List { name, reply } => {
                let now_ms = self.clock.wall_ms();
                let view = self.member.view();
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
            Command::Announce { req, from, reply } => {
                let id = self.fresh_id();
                self.answers.insert(id, reply);
                self.feed_tracker(tracker::Input::Announce { id, request: req, from });
            }
            Command::Scrape { hashes, reply } => {
                let id = self.fresh_id();
                self.answers.insert(id, reply);
                self.feed_tracker(tracker::Input::Scrape { id, hashes });
            }
            Command::Providers { ih, reply } => {
                let now_ms = self.clock.wall_ms();
                let _ = reply.send((self.tracker.overlay().lookup(&ih, now_ms, usize::MAX, None), now_ms));
            }
            Command::Members { reply } => {
                let me = self.member.id();
                let mut members: Vec<MemberView> = self
                    .member
                    .members()
                    .map(|(id, addr, st)| MemberView {
                        id: format!("{id:016x}"),
                        addr: addr.0.to_string(),
                        state: state_name(st),
                        me: false,
                    })
                    .collect();
                members.push(MemberView {
                    id: format!("{me:016x}"),
                    addr: self.advertise.clone(),
                    state: "alive",
                    me: true,
                });
                members.sort_by(|a, b| a.id.cmp(&b.id));
                let _ = reply.send(members);
            }
        }
    }

    fn tcp_query(&mut self, bytes: Vec<u8>, reply: oneshot::Sender<Option<Vec<u8>>>) {
        let now_ms = self.clock.wall_ms();
        let mut out = Vec::new();
        match self.authority.answer(now_ms, &bytes, Transport::Tcp, self.member.view(), &mut out) {
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
        let g = self.member.gossip().stats();
        let t = self.tracker.stats();
        let view = self.member.view();
        NodeStats {
            node_id: format!("{:016x}", self.member.id()),
            names: view.name_count(),
            rrsets: view.rrset_count(),
            entries: self.member.store().len(),
            members_live: self.member.gossip().live_members(),
            members_by_state: {
                let mut m = std::collections::BTreeMap::new();
                for st in ["alive", "suspect", "dead", "left"] {
                    m.insert(st, 0);
                }
                for (_, _, st) in self.member.members() {
                    *m.entry(state_name(st)).or_default() += 1;
                }
                m
            },
            tombstones: {
                let now_ms = self.clock.wall_ms();
                self.member.store().entries().filter(|e| !e.is_live(now_ms)).count()
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
            gossip_dropped_replay: g.dropped_replay + g.dropped_stale,
            gossip_dropped_queue: self.net.dropped,
            gossip_entries_applied: g.entries_applied,
            gossip_full_transfers: g.full_transfers,
            gossip_rejected_values: self.member.rejected_remote(),
            gossip_lag: self.member.lag(),
            tracker_announces: t.announces,
            tracker_answered_at_once: t.answered_at_once,
            tracker_answered_after_lookup: t.answered_after_lookup,
            tracker_answered_on_timeout: t.answered_on_timeout,
            tracker_parked: self.tracker.parked() as u64,
            tracker_late_after_stop: t.late_after_stop,
            tracker_rate_limited: t.rate_limited,
            tracker_not_recorded: t.not_recorded,
            tracker_providers: self.tracker.overlay().providers() as u64,
            provider_entries: self.member.store().len_of(rumor_core::replica::Namespace::PROVIDERS),
            dns_tcp_write_timeouts: DNS_TCP_WRITE_TIMEOUTS.load(std::sync::atomic::Ordering::Relaxed),
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
                Ok(found) => addrs.extend(found.into_iter().map(|a| PeerAddr::from(a.to_string()))),
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

/// DNS over TCP connections closed because the client did not read its
/// answers within [`DNS_TCP_WRITE_TIMEOUT`] (process-wide: one node per
/// process).
static DNS_TCP_WRITE_TIMEOUTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How long writing one DNS answer over TCP may take. A client that does
/// not read its answers (RFC 7766 §6.2.2: a server may close it) would
/// otherwise hold its connection slot forever.
pub const DNS_TCP_WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Serves DNS over TCP (RFC 7766): 2-byte length-prefixed messages,
/// several per connection, each answered through the node task.
pub async fn serve_tcp(listener: Box<dyn rt::TcpListener>, node: NodeHandle, shutdown: rt::Shutdown) {
    use futures::AsyncWriteExt;
    /// Most TCP clients at once; more wait in the kernel's backlog.
    const CONNECTIONS_MAX: usize = 512;
    /// Most of them from one IP address: one host cannot take every slot.
    const PER_IP_MAX: usize = 64;
    /// An idle connection is closed after this (RFC 7766 suggests seconds).
    const IDLE: std::time::Duration = std::time::Duration::from_secs(10);
    crate::net::accept_bounded(listener, CONNECTIONS_MAX, PER_IP_MAX, "DNS TCP", shutdown, |mut stream, peer| {
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
                match rt::timeout(DNS_TCP_WRITE_TIMEOUT, stream.write_all(&out)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return,
                    Err(rt::Elapsed) => {
                        DNS_TCP_WRITE_TIMEOUTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tracing::debug!(%peer, "closing a DNS TCP connection that does not read its answers");
                        return;
                    }
                }
            }
        }
    })
    .await
}
