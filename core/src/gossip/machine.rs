//! The gossip machine: anti-entropy, push of fresh writes, SWIM membership.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;

use super::wire::{
    open, seal, Body, DecodeError, Keyring, MemberState, MemberUpdate, Packet, PeerAddr, Pushed, ENVELOPE_OVERHEAD,
};
use crate::rand::Rng;
use crate::replica::{Change, Delta, Digest, Namespace, NodeId, Refused, Store, StoreConfig};
use crate::time::{Duration, Instant, UnixMillis};

/// Both clocks a [`Gossip`] input comes with: the monotonic instant timers
/// run on, and the wall clock versions and expiries are measured in. The
/// adapter reads both at the same moment, in one place.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time: timers and timeouts.
    pub at: Instant,
    /// Wall-clock milliseconds since the Unix epoch: HLC versions, expiries,
    /// tombstone grace.
    pub wall_ms: UnixMillis,
}

/// Settings of a [`Gossip`] machine. Every limit is in the name's unit.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where peers reach this node; sent in every message.
    pub advertise: PeerAddr,
    /// The cluster keys.
    pub keys: Keyring,
    /// The replicated store's limits.
    pub store: StoreConfig,
    /// Time between gossip rounds (anti-entropy summary + push).
    pub gossip_interval: Duration,
    /// Peers a fresh write is pushed to, each round it is hot.
    pub fanout: usize,
    /// Rounds a fresh entry keeps being pushed after we learn it.
    pub push_rounds: u32,
    /// With nothing to push, a round sends its anti-entropy summary only
    /// every this many rounds (probes carry the summary too).
    pub sync_every_rounds: u32,
    /// Time between SWIM probes.
    pub probe_interval: Duration,
    /// How long to wait for a direct ack before asking others to probe.
    pub probe_timeout: Duration,
    /// Members asked to probe indirectly.
    pub indirect_probes: usize,
    /// Suspicion lasts `suspicion_mult * max(1, log10(members)) *
    /// probe_interval` before the member is declared dead.
    pub suspicion_mult: u32,
    /// Each membership update is piggybacked on `retransmit_mult *
    /// max(1, log10(members + 1))` messages.
    pub retransmit_mult: u32,
    /// Time between re-announces to a member believed dead (and joins to the
    /// bootstrap list while we know no one), so a healed partition rejoins.
    pub reannounce_interval: Duration,
    /// Dead or departed members are forgotten after this long.
    pub dead_forget_after: Duration,
    /// Largest message sent or accepted, in bytes (envelope included).
    pub message_bytes_max: usize,
    /// Entries per message, sent or accepted.
    pub entries_per_message_max: usize,
    /// Membership updates piggybacked per message.
    pub updates_per_message_max: usize,
    /// Membership updates waiting to be disseminated.
    pub updates_pending_max: usize,
    /// Members known (alive, suspect, dead) at most.
    pub members_max: usize,
    /// Writers per digest message; larger watermark maps go in windows.
    pub digest_writers_max: usize,
    /// Fresh entries waiting to be pushed.
    pub hot_max: usize,
    /// Indirect probes we relay for others at once.
    pub relays_max: usize,
    /// Members sent in a join reply.
    pub join_sample_max: usize,
    /// Bodies at least this long are compressed when it pays.
    pub compress_min_bytes: usize,
    /// A full state transfer is abandoned after this long without progress.
    pub full_transfer_timeout: Duration,
    /// After finishing a full transfer, further requests to do one are
    /// ignored this long (bounds the cost of a peer that keeps asking).
    pub full_transfer_cooldown: Duration,
    /// After a restart, a node that hears from no peer knowing its collection
    /// history within this long (the whole cluster restarted) takes its own
    /// history as complete, so anti-entropy resumes.
    pub restore_wait: Duration,
    /// Live members a lookup asks at once.
    pub lookup_fanout: usize,
    /// A lookup ends this long after it was sent, answered or not.
    pub lookup_timeout: Duration,
    /// Lookups waiting for answers at once; more end at once, unanswered.
    pub lookups_max: usize,
}

impl Config {
    /// Defaults for a LAN cluster: 200 ms rounds, fanout 3, fresh entries
    /// pushed for 2 rounds, a summary every 5 idle rounds, 1 s probes,
    /// 64 KiB messages.
    pub fn new(advertise: PeerAddr, keys: Keyring) -> Self {
        Config {
            advertise,
            keys,
            store: StoreConfig::default(),
            gossip_interval: Duration::from_millis(200),
            fanout: 3,
            push_rounds: 2,
            sync_every_rounds: 5,
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_millis(500),
            indirect_probes: 3,
            suspicion_mult: 4,
            retransmit_mult: 4,
            reannounce_interval: Duration::from_secs(5),
            dead_forget_after: Duration::from_secs(24 * 3600),
            message_bytes_max: 64 * 1024,
            entries_per_message_max: 256,
            updates_per_message_max: 6,
            updates_pending_max: 512,
            members_max: 4096,
            digest_writers_max: 1024,
            hot_max: 1024,
            relays_max: 64,
            join_sample_max: 32,
            compress_min_bytes: 256,
            full_transfer_timeout: Duration::from_secs(5),
            full_transfer_cooldown: Duration::from_secs(30),
            restore_wait: Duration::from_secs(60),
            lookup_fanout: 2,
            lookup_timeout: Duration::from_millis(500),
            lookups_max: 256,
        }
    }
}

/// What a caller asks the machine to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Write `value` under `(ns, key)` as this node, expiring at `expires_ms`
    /// (wall clock, 0 = never), and spread it.
    Write {
        /// Namespace.
        ns: Namespace,
        /// Key.
        key: Bytes,
        /// Value.
        value: Bytes,
        /// Absolute expiry, 0 = never.
        expires_ms: UnixMillis,
    },
    /// Delete `(ns, key)` as this node (a tombstone) and spread it.
    Delete {
        /// Namespace.
        ns: Namespace,
        /// Key.
        key: Bytes,
    },
    /// Contact these addresses to join the cluster (the bootstrap list); they
    /// are retried while we know no live member.
    Join(Vec<PeerAddr>),
    /// Tell peers we leave, then go quiet.
    Leave,
    /// Replace the cluster keyring, to rotate keys without downtime: add the
    /// new key on every node, then make it primary on every node, then
    /// remove the old one.
    SetKeys(Keyring),
    /// Ask `lookup_fanout` live members for their live entries of `ns`
    /// whose keys start with `prefix`, and merge what they send. Ends with
    /// [`Event::LookupDone`] carrying `id`, after every asked member answered
    /// or `lookup_timeout`.
    Lookup {
        /// The caller's token, echoed in the event.
        id: u32,
        /// Namespace searched.
        ns: Namespace,
        /// Key prefix.
        prefix: Bytes,
    },
}

/// One input to [`Gossip::handle`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// A whole message arrived; `from` is the transport's source address,
    /// used only in reports (replies go to the address inside the message).
    Receive {
        /// Transport source.
        from: PeerAddr,
        /// The message bytes (one envelope).
        bytes: Vec<u8>,
    },
    /// The deadline from the last `Output::Timeout` passed (early calls do
    /// nothing harmful).
    Timeout,
    /// A caller's command.
    Command(Command),
}

/// Something the caller should know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The store changed: follow it in views and persistence.
    Store(Change),
    /// A write or delete command was refused (nothing changed).
    WriteRefused {
        /// Namespace.
        ns: Namespace,
        /// Key.
        key: Bytes,
        /// Why.
        reason: Refused,
    },
    /// A member is alive (new, or back).
    MemberUp {
        /// Its id.
        id: NodeId,
        /// Its address.
        addr: PeerAddr,
    },
    /// A member was declared dead or left.
    MemberDown {
        /// Its id.
        id: NodeId,
        /// Its address.
        addr: PeerAddr,
    },
    /// A [`Command::Lookup`] ended.
    LookupDone {
        /// The caller's token.
        id: u32,
        /// Entries received (merged or already known).
        found: usize,
    },
    /// A message was dropped unapplied (also counted in [`Stats`]).
    Dropped {
        /// Transport source.
        from: PeerAddr,
        /// Why.
        reason: DecodeError,
    },
}

/// What the machine wants done. Drain with [`Gossip::poll_output`] until it
/// returns `Timeout`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send these bytes (one whole message) to `to`.
    Transmit {
        /// Destination.
        to: PeerAddr,
        /// The message.
        bytes: Vec<u8>,
    },
    /// Report an event.
    Event(Event),
    /// Call `handle(.., Input::Timeout)` at this instant (or on any earlier
    /// input). Always the last output of a drain.
    Timeout(Instant),
}

/// Counters, for metrics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages sent.
    pub messages_out: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Messages received and applied.
    pub messages_in: u64,
    /// Bytes received (all, dropped or not).
    pub bytes_in: u64,
    /// Messages dropped because no key opened them.
    pub dropped_auth: u64,
    /// Messages dropped for a bad format, size or limit.
    pub dropped_format: u64,
    /// Messages not sent because they would exceed the size limit.
    pub oversize_not_sent: u64,
    /// Full state transfers completed.
    pub full_transfers: u64,
    /// Remote entries applied.
    pub entries_applied: u64,
    /// Membership updates that changed our view.
    pub member_updates_applied: u64,
    /// Members declared suspect by us or others.
    pub suspicions: u64,
}

#[derive(Clone, Debug)]
struct Member {
    addr: PeerAddr,
    incarnation: u64,
    state: MemberState,
    since: Instant,
}

#[derive(Clone, Debug)]
struct Probe {
    target: NodeId,
    seq: u32,
    direct_deadline: Instant,
    indirect_sent: bool,
    acked: bool,
}

#[derive(Clone, Debug)]
struct Relay {
    requester: PeerAddr,
    seq: u32,
    target: NodeId,
    deadline: Instant,
}

#[derive(Clone, Debug)]
struct Transfer {
    peer: PeerAddr,
    after: Option<(Namespace, Bytes)>,
    received: BTreeSet<(Namespace, Bytes)>,
    deadline: Instant,
}

/// The gossip machine of one node: the replicated [`Store`], anti-entropy
/// and push of entries between nodes, and SWIM membership.
///
/// * Create with [`Gossip::new`]; to start from persisted entries call
///   [`Gossip::restore`] before anything else; then
///   `handle(now, Input::Command(Command::Join(bootstrap)))`.
/// * Inputs: [`handle`](Self::handle) with a received message, a timeout or
///   a command.
/// * Outputs: after every input, call [`poll_output`](Self::poll_output)
///   until it returns `Output::Timeout`; carry out each `Transmit`; follow
///   `Event::Store` changes to persist entries (`Applied`: upsert,
///   `Removed`: delete) and to update views.
/// * Getters: [`store`](Self::store) (serve live entries from it),
///   [`members`](Self::members), [`stats`](Self::stats).
#[derive(Debug)]
pub struct Gossip {
    cfg: Config,
    me: NodeId,
    incarnation: u64,
    rng: Rng,
    store: Store,
    members: BTreeMap<NodeId, Member>,
    live_ids: Vec<NodeId>,
    live_pos: BTreeMap<NodeId, usize>,
    updates: BTreeMap<NodeId, (MemberUpdate, u32)>,
    update_order: BTreeSet<(u32, NodeId)>,
    hot: VecDeque<(Pushed, u32)>,
    out: VecDeque<Output>,
    next_round: Instant,
    next_probe: Instant,
    probe: Option<Probe>,
    probe_list: Vec<NodeId>,
    probe_idx: usize,
    /// (deadline, member, incarnation suspected)
    suspects: BTreeSet<(Instant, NodeId, u64)>,
    next_reannounce: Instant,
    relays: BTreeMap<u32, Relay>,
    full: Option<Transfer>,
    full_done_at: Option<Instant>,
    bootstrap: Vec<PeerAddr>,
    seq: u32,
    left: bool,
    rounds_to_sync: u32,
    stats: Stats,
    now: Now,
    restored_at: Option<Instant>,
    heard_complete: bool,
    /// Lookups in flight: id -> (deadline, answers still awaited, found).
    lookups: BTreeMap<u32, (Instant, usize, usize)>,
}

/// Bootstrap addresses kept at most.
pub const BOOTSTRAP_MAX: usize = 16;

fn log10_ceil(n: usize) -> u32 {
    let mut k = 1u32;
    let mut p = 10usize;
    while p < n {
        k += 1;
        p = p.saturating_mul(10);
    }
    k
}

impl Gossip {
    /// A machine for node `me` at `now`; `seed` drives every random choice
    /// *and the AEAD nonces*: an adapter must draw it from OS entropy.
    pub fn new(cfg: Config, me: NodeId, now: Now, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let store = Store::new(cfg.store.clone(), me);
        let round_phase = Duration::from_micros(rng.below(cfg.gossip_interval.as_micros().max(1)));
        let probe_phase = Duration::from_micros(rng.below(cfg.probe_interval.as_micros().max(1)));
        Gossip {
            next_round: now.at + round_phase,
            next_probe: now.at + probe_phase,
            next_reannounce: now.at + cfg.reannounce_interval,
            cfg,
            me,
            incarnation: 0,
            rng,
            store,
            members: BTreeMap::new(),
            live_ids: Vec::new(),
            live_pos: BTreeMap::new(),
            updates: BTreeMap::new(),
            update_order: BTreeSet::new(),
            hot: VecDeque::new(),
            out: VecDeque::new(),
            probe: None,
            probe_list: Vec::new(),
            probe_idx: 0,
            suspects: BTreeSet::new(),
            relays: BTreeMap::new(),
            full: None,
            full_done_at: None,
            bootstrap: Vec::new(),
            seq: 0,
            left: false,
            rounds_to_sync: 1,
            stats: Stats::default(),
            now,
            restored_at: None,
            heard_complete: false,
            lookups: BTreeMap::new(),
        }
    }

    /// Loads entries persisted by an earlier run. Call right after `new`.
    /// The incarnation is bumped past `incarnation` (persist
    /// [`incarnation`](Self::incarnation) too, or pass 0) so that stale
    /// rumours of our death are refuted.
    pub fn restore(&mut self, entries: impl IntoIterator<Item = crate::replica::Entry>, incarnation: u64) {
        self.store.restore(entries, self.now.wall_ms);
        self.incarnation = incarnation.saturating_add(1);
        self.restored_at = Some(self.now.at);
    }

    /// The replicated store: serve live entries from it.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Our node id.
    pub fn id(&self) -> NodeId {
        self.me
    }

    /// Our current incarnation (persist it to refute faster after restart).
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Known members with their address and state.
    pub fn members(&self) -> impl Iterator<Item = (NodeId, &PeerAddr, MemberState)> + '_ {
        self.members.iter().map(|(id, m)| (*id, &m.addr, m.state))
    }

    /// Members currently believed alive or suspect.
    pub fn live_members(&self) -> usize {
        self.members.values().filter(|m| matches!(m.state, MemberState::Alive | MemberState::Suspect)).count()
    }

    /// True while a full state transfer is in progress.
    pub fn in_full_transfer(&self) -> bool {
        self.full.is_some()
    }

    /// The next output. Drain until it returns `Output::Timeout`.
    pub fn poll_output(&mut self) -> Output {
        if let Some(o) = self.out.pop_front() {
            return o;
        }
        Output::Timeout(self.next_deadline())
    }

    fn next_deadline(&self) -> Instant {
        if self.left {
            return Instant::NEVER;
        }
        let mut t = self.next_round.min(self.next_probe).min(self.next_reannounce);
        if let Some(p) = &self.probe {
            if !p.indirect_sent && !p.acked {
                t = t.min(p.direct_deadline);
            }
        }
        if let Some((at, _, _)) = self.suspects.first() {
            t = t.min(*at);
        }
        if let Some(f) = &self.full {
            t = t.min(f.deadline);
        }
        if let Some(at) = self.lookups.values().map(|l| l.0).min() {
            t = t.min(at);
        }
        t
    }

    /// Feeds one input at `now`. Then drain [`poll_output`](Self::poll_output).
    pub fn handle(&mut self, now: Now, input: Input) {
        if now.at > self.now.at || now.wall_ms != self.now.wall_ms {
            self.now = Now { at: now.at.max(self.now.at), wall_ms: now.wall_ms };
        }
        if self.left {
            return;
        }
        match input {
            Input::Receive { from, bytes } => self.receive(from, &bytes),
            Input::Timeout => self.timeout(),
            Input::Command(c) => self.command(c),
        }
        self.drain_store();
    }

    fn drain_store(&mut self) {
        while let Some(c) = self.store.drain_changes() {
            self.out.push_back(Output::Event(Event::Store(c)));
        }
    }

    // ----- commands -----

    fn command(&mut self, c: Command) {
        let wall = self.now.wall_ms;
        match c {
            Command::Write { ns, key, value, expires_ms } => {
                match self.store.write(ns, key.clone(), value, expires_ms, wall) {
                    Ok(w) => self.push_fresh(Pushed { entry: w.entry, prev: w.prev }),
                    Err(reason) => self.out.push_back(Output::Event(Event::WriteRefused { ns, key, reason })),
                }
            }
            Command::Delete { ns, key } => match self.store.delete(ns, key.clone(), wall) {
                Ok(w) => self.push_fresh(Pushed { entry: w.entry, prev: w.prev }),
                Err(reason) => self.out.push_back(Output::Event(Event::WriteRefused { ns, key, reason })),
            },
            Command::Join(addrs) => {
                for a in addrs {
                    if a != self.cfg.advertise && !self.bootstrap.contains(&a) && self.bootstrap.len() < BOOTSTRAP_MAX {
                        self.bootstrap.push(a);
                    }
                }
                for a in self.bootstrap.clone() {
                    self.send(a, None, Body::Join);
                }
            }
            Command::SetKeys(keys) => self.cfg.keys = keys,
            Command::Lookup { id, ns, prefix } => {
                let asked = if self.lookups.len() >= self.cfg.lookups_max || self.lookups.contains_key(&id) {
                    Vec::new()
                } else {
                    self.pick_live(self.cfg.lookup_fanout, None)
                };
                if asked.is_empty() {
                    self.out.push_back(Output::Event(Event::LookupDone { id, found: 0 }));
                } else {
                    self.lookups.insert(id, (self.now.at + self.cfg.lookup_timeout, asked.len(), 0));
                    for peer_id in asked {
                        let addr = self.members[&peer_id].addr.clone();
                        self.send(addr, Some(peer_id), Body::Lookup { id, ns, prefix: prefix.clone() });
                    }
                }
            }
            Command::Leave => {
                self.incarnation += 1;
                let me = self.self_update(MemberState::Left);
                self.queue_update(me);
                for id in self.pick_live(self.cfg.fanout.max(3), None) {
                    let addr = self.members[&id].addr.clone();
                    self.send(addr, Some(id), Body::Leave);
                }
                self.left = true;
            }
        }
    }

    /// A local write: push it to `fanout` peers right away, and keep it hot
    /// for the next rounds.
    fn push_fresh(&mut self, p: Pushed) {
        let targets = self.pick_live(self.cfg.fanout, None);
        for id in targets {
            let addr = self.members[&id].addr.clone();
            // Push only: the summary travels on anti-entropy rounds and probes.
            let body = Body::Syn { summary: None, push: vec![p.clone()] };
            self.send(addr, Some(id), body);
        }
        self.make_hot(p);
    }

    fn make_hot(&mut self, p: Pushed) {
        if self.cfg.push_rounds == 0 {
            return;
        }
        if self.hot.len() >= self.cfg.hot_max {
            self.hot.pop_front();
        }
        self.hot.push_back((p, self.cfg.push_rounds));
    }

    fn self_update(&self, state: MemberState) -> MemberUpdate {
        MemberUpdate { id: self.me, addr: self.cfg.advertise.clone(), incarnation: self.incarnation, state }
    }

    // ----- timers -----

    fn timeout(&mut self) {
        let now = self.now.at;
        if now >= self.next_round {
            self.next_round = now + self.cfg.gossip_interval;
            self.round();
        }
        if let Some(p) = self.probe.clone() {
            if !p.acked && !p.indirect_sent && now >= p.direct_deadline {
                self.indirect_probe(&p);
            }
        }
        if now >= self.next_probe {
            self.next_probe = now + self.cfg.probe_interval;
            self.probe_tick();
        }
        while let Some(&(at, id, inc)) = self.suspects.first() {
            if at > now {
                break;
            }
            self.suspects.pop_first();
            if let Some(m) = self.members.get(&id) {
                // Only the suspicion still in force: a refuted and later
                // re-suspected member gets its full timeout again.
                if m.state == MemberState::Suspect && m.incarnation == inc {
                    let u =
                        MemberUpdate { id, addr: m.addr.clone(), incarnation: m.incarnation, state: MemberState::Dead };
                    self.apply_update(u, true);
                }
            }
        }
        if now >= self.next_reannounce {
            self.next_reannounce = now + self.cfg.reannounce_interval;
            self.reannounce();
        }
        if let Some(f) = &self.full {
            if now >= f.deadline {
                self.full = None;
            }
        }
        let expired: Vec<u32> = self.lookups.iter().filter(|(_, l)| l.0 <= now).map(|(id, _)| *id).collect();
        for id in expired {
            if let Some((_, _, found)) = self.lookups.remove(&id) {
                self.out.push_back(Output::Event(Event::LookupDone { id, found }));
            }
        }
    }

    fn round(&mut self) {
        self.store.expire(self.now.wall_ms);
        // A restarted node that found no peer knowing its history (the whole
        // cluster restarted) within `restore_wait`, or waited a whole grace
        // period: nothing can have been collected that it missed; take its
        // history as complete.
        if let Some(t) = self.restored_at {
            let grace = Duration::from_millis(self.cfg.store.tombstone_grace_ms);
            let waited = self.now.at.saturating_duration_since(t);
            if self.store.history_complete() {
                self.restored_at = None;
            } else if waited >= grace || (waited >= self.cfg.restore_wait && !self.heard_complete) {
                self.store.mark_history_complete();
                self.restored_at = None;
            }
        }
        let hot: Vec<Pushed> = {
            let mut bytes = 0usize;
            let budget = self.entry_budget();
            let mut v = Vec::new();
            for (p, _) in self.hot.iter() {
                let len = p.entry.encoded_len_max() + 10;
                if v.len() >= self.cfg.entries_per_message_max || bytes + len > budget {
                    break;
                }
                bytes += len;
                v.push(p.clone());
            }
            v
        };
        // With nothing to push, only every `sync_every_rounds`-th round
        // sends the anti-entropy summary.
        self.rounds_to_sync = self.rounds_to_sync.saturating_sub(1);
        let sync_now = self.rounds_to_sync == 0;
        if sync_now {
            self.rounds_to_sync = self.cfg.sync_every_rounds.max(1);
        }
        let n = if !hot.is_empty() {
            self.cfg.fanout.max(1)
        } else if sync_now {
            1
        } else {
            0
        };
        let targets = self.pick_live(n, None);
        // One target of an anti-entropy round gets the summary; the others
        // (and every target of a push-only round) get the push alone.
        let summary = (self.store.seen_hash(), self.store.writers() as u32);
        for (k, id) in targets.into_iter().enumerate() {
            let addr = self.members[&id].addr.clone();
            let body = Body::Syn { summary: (sync_now && k == 0).then_some(summary), push: hot.clone() };
            self.send(addr, Some(id), body);
        }
        let sent = hot.len();
        for (_, left) in self.hot.iter_mut().take(sent) {
            *left -= 1;
        }
        // Entries sent this round go to the back so others get their turn.
        for _ in 0..sent {
            if let Some((p, left)) = self.hot.pop_front() {
                if left > 0 {
                    self.hot.push_back((p, left));
                }
            }
        }
    }

    fn probe_tick(&mut self) {
        // The previous probe failed if nobody acked it.
        if let Some(p) = self.probe.take() {
            if !p.acked {
                if let Some(m) = self.members.get(&p.target) {
                    if m.state == MemberState::Alive {
                        let u = MemberUpdate {
                            id: p.target,
                            addr: m.addr.clone(),
                            incarnation: m.incarnation,
                            state: MemberState::Suspect,
                        };
                        self.apply_update(u, true);
                    }
                }
            }
        }
        let now = self.now.at;
        self.relays.retain(|_, r| r.deadline > now);
        // SWIM round-robin over a shuffled list of non-dead members.
        let mut target = None;
        for _ in 0..2 {
            while self.probe_idx < self.probe_list.len() {
                let id = self.probe_list[self.probe_idx];
                self.probe_idx += 1;
                if self.members.get(&id).is_some_and(|m| matches!(m.state, MemberState::Alive | MemberState::Suspect)) {
                    target = Some(id);
                    break;
                }
            }
            if target.is_some() {
                break;
            }
            self.probe_list = self
                .members
                .iter()
                .filter(|(_, m)| matches!(m.state, MemberState::Alive | MemberState::Suspect))
                .map(|(id, _)| *id)
                .collect();
            self.rng.shuffle(&mut self.probe_list);
            self.probe_idx = 0;
        }
        let Some(target) = target else { return };
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        self.probe = Some(Probe {
            target,
            seq,
            direct_deadline: now + self.cfg.probe_timeout,
            indirect_sent: false,
            acked: false,
        });
        let addr = self.members[&target].addr.clone();
        let body = self.ping(seq);
        self.send(addr, Some(target), body);
    }

    fn indirect_probe(&mut self, p: &Probe) {
        if let Some(pr) = self.probe.as_mut() {
            pr.indirect_sent = true;
        }
        let Some(target_addr) = self.members.get(&p.target).map(|m| m.addr.clone()) else {
            return;
        };
        for id in self.pick_live(self.cfg.indirect_probes, Some(p.target)) {
            let addr = self.members[&id].addr.clone();
            self.send(addr, Some(id), Body::PingReq { seq: p.seq, target: p.target, target_addr: target_addr.clone() });
        }
    }

    fn reannounce(&mut self) {
        // Forget members dead for long.
        let forget = self.cfg.dead_forget_after;
        let now = self.now.at;
        let old: Vec<NodeId> = self
            .members
            .iter()
            .filter(|(_, m)| {
                matches!(m.state, MemberState::Dead | MemberState::Left)
                    && now.saturating_duration_since(m.since) >= forget
            })
            .map(|(id, _)| *id)
            .take(64)
            .collect();
        for id in old {
            self.remove_member(id);
        }
        // While we know nobody alive, keep knocking on the whole bootstrap
        // list; otherwise on one bootstrap address that is not a live member
        // (a group that formed while cut off from it must still find the
        // rest of the cluster once the partition heals).
        if self.live_count() == 0 {
            for a in self.bootstrap.clone() {
                self.send(a, None, Body::Join);
            }
        } else if !self.bootstrap.is_empty() {
            let live: BTreeSet<&PeerAddr> =
                self.live_ids.iter().filter_map(|id| self.members.get(id).map(|m| &m.addr)).collect();
            let strangers: Vec<PeerAddr> = self.bootstrap.iter().filter(|a| !live.contains(a)).cloned().collect();
            if !strangers.is_empty() {
                let a = strangers[self.rng.index(strangers.len())].clone();
                self.send(a, None, Body::Join);
            }
        }
        // Re-announce ourselves to one member believed dead: if the
        // partition healed, it learns we (and it) are alive and refutes.
        let dead: Vec<NodeId> =
            self.members.iter().filter(|(_, m)| m.state == MemberState::Dead).map(|(id, _)| *id).collect();
        if !dead.is_empty() {
            let id = dead[self.rng.index(dead.len())];
            let addr = self.members[&id].addr.clone();
            self.send(addr, Some(id), Body::Join);
        }
    }

    // ----- membership -----

    fn live_count(&mut self) -> usize {
        self.live_ids.len()
    }

    /// Inserts or replaces a member, keeping the list of live ids (for O(1)
    /// random choice) in step.
    fn put_member(&mut self, id: NodeId, m: Member) {
        let live = matches!(m.state, MemberState::Alive | MemberState::Suspect);
        self.members.insert(id, m);
        self.set_live(id, live);
    }

    fn remove_member(&mut self, id: NodeId) {
        self.members.remove(&id);
        self.set_live(id, false);
    }

    fn set_live(&mut self, id: NodeId, live: bool) {
        match (live, self.live_pos.get(&id).copied()) {
            (true, None) => {
                self.live_pos.insert(id, self.live_ids.len());
                self.live_ids.push(id);
            }
            (false, Some(pos)) => {
                self.live_pos.remove(&id);
                self.live_ids.swap_remove(pos);
                if let Some(moved) = self.live_ids.get(pos) {
                    self.live_pos.insert(*moved, pos);
                }
            }
            _ => {}
        }
    }

    /// Up to `n` distinct random live members, not `except`.
    fn pick_live(&mut self, n: usize, except: Option<NodeId>) -> Vec<NodeId> {
        let len = self.live_ids.len();
        let mut out = Vec::with_capacity(n);
        if len == 0 || n == 0 {
            return out;
        }
        if len <= n + 1 {
            for id in &self.live_ids {
                if Some(*id) != except && out.len() < n {
                    out.push(*id);
                }
            }
            self.rng.shuffle(&mut out);
            return out;
        }
        let mut tries = 0;
        while out.len() < n && tries < 4 * n + 8 {
            tries += 1;
            let id = self.live_ids[self.rng.index(len)];
            if Some(id) != except && !out.contains(&id) {
                out.push(id);
            }
        }
        out
    }

    fn retransmit_limit(&self) -> u32 {
        self.cfg.retransmit_mult * log10_ceil(self.members.len() + 1)
    }

    fn queue_update(&mut self, u: MemberUpdate) {
        if let Some((_, sent)) = self.updates.remove(&u.id) {
            self.update_order.remove(&(sent, u.id));
        }
        if self.updates.len() >= self.cfg.updates_pending_max {
            // Drop the most-transmitted update to make room.
            if let Some((sent, id)) = self.update_order.pop_last() {
                let _ = sent;
                self.updates.remove(&id);
            }
        }
        self.update_order.insert((0, u.id));
        self.updates.insert(u.id, (u, 0));
    }

    fn take_updates(&mut self, k: usize) -> Vec<MemberUpdate> {
        let limit = self.retransmit_limit();
        let mut picked = Vec::with_capacity(k);
        while picked.len() < k {
            let Some((sent, id)) = self.update_order.pop_first() else {
                break;
            };
            let Some((u, s)) = self.updates.get_mut(&id) else {
                continue;
            };
            debug_assert_eq!(*s, sent);
            *s += 1;
            picked.push((u.clone(), *s, id));
        }
        let mut out = Vec::with_capacity(picked.len());
        for (u, s, id) in picked {
            if s >= limit {
                self.updates.remove(&id);
            } else {
                self.update_order.insert((s, id));
            }
            out.push(u);
        }
        out
    }

    /// Applies a SWIM update; returns true if it changed our view.
    /// `first_hand` says we witnessed it (a message from that member, our own
    /// probe) rather than heard it from a third party. News of a member we
    /// did not know is passed on only first-hand: every node that meets a
    /// newcomer announces it, but hearsay of joins is not re-flooded (with
    /// views capped at `members_max` that would cost O(N) per join per node).
    /// Every change about a known member (suspect, dead, refuted, left) is
    /// passed on.
    fn apply_update(&mut self, u: MemberUpdate, first_hand: bool) -> bool {
        let now = self.now.at;
        if u.id == self.me {
            // Refute rumours of our suspicion or death.
            if matches!(u.state, MemberState::Suspect | MemberState::Dead) && u.incarnation >= self.incarnation {
                self.incarnation = u.incarnation + 1;
                let me = self.self_update(MemberState::Alive);
                self.queue_update(me);
            }
            return false;
        }
        let accept = match self.members.get(&u.id) {
            None => {
                if !matches!(u.state, MemberState::Alive | MemberState::Suspect) {
                    return false;
                }
                if self.members.len() >= self.cfg.members_max && !self.evict_one() {
                    return false;
                }
                true
            }
            Some(m) => match u.state {
                MemberState::Alive => u.incarnation > m.incarnation,
                MemberState::Suspect => {
                    u.incarnation > m.incarnation || (u.incarnation == m.incarnation && m.state == MemberState::Alive)
                }
                MemberState::Dead => {
                    u.incarnation > m.incarnation
                        || (u.incarnation == m.incarnation
                            && matches!(m.state, MemberState::Alive | MemberState::Suspect))
                }
                MemberState::Left => {
                    u.incarnation > m.incarnation || (u.incarnation == m.incarnation && m.state != MemberState::Left)
                }
            },
        };
        if !accept {
            return false;
        }
        self.stats.member_updates_applied += 1;
        let announce = first_hand || self.members.contains_key(&u.id);
        if u.state == MemberState::Suspect {
            self.stats.suspicions += 1;
        }
        let before = self.members.get(&u.id).map(|m| m.state);
        let m = Member { addr: u.addr.clone(), incarnation: u.incarnation, state: u.state, since: now };
        self.put_member(u.id, m);
        let was_live = matches!(before, Some(MemberState::Alive | MemberState::Suspect));
        let is_live = matches!(u.state, MemberState::Alive | MemberState::Suspect);
        if is_live && !was_live {
            self.out.push_back(Output::Event(Event::MemberUp { id: u.id, addr: u.addr.clone() }));
        }
        if !is_live && was_live {
            self.out.push_back(Output::Event(Event::MemberDown { id: u.id, addr: u.addr.clone() }));
        }
        if u.state == MemberState::Suspect {
            let k = log10_ceil(self.members.len()) as u64;
            let t = self.cfg.probe_interval.saturating_mul(self.cfg.suspicion_mult as u64 * k.max(1));
            self.suspects.insert((now + t, u.id, u.incarnation));
        }
        if announce {
            self.queue_update(u);
        }
        true
    }

    fn evict_one(&mut self) -> bool {
        if self.members.len() == self.live_ids.len() {
            // Everyone known is live: nothing to evict, and no scan.
            return false;
        }
        let victim = self
            .members
            .iter()
            .filter(|(_, m)| matches!(m.state, MemberState::Dead | MemberState::Left))
            .min_by_key(|(_, m)| m.since)
            .map(|(id, _)| *id);
        match victim {
            Some(id) => {
                self.remove_member(id);
                true
            }
            None => false,
        }
    }

    // ----- sending -----

    fn entry_budget(&self) -> usize {
        // Leave room for the header, piggybacked updates and the envelope.
        self.cfg
            .message_bytes_max
            .saturating_sub(ENVELOPE_OVERHEAD + 64 + self.cfg.updates_per_message_max * 96)
            .max(256)
    }

    fn send(&mut self, to: PeerAddr, to_id: Option<NodeId>, body: Body) {
        let mut updates = Vec::new();
        // Tell a peer we hold as suspect or dead what we think, so it refutes.
        if let Some(m) = to_id.and_then(|id| self.members.get(&id).map(|m| (id, m))) {
            if matches!(m.1.state, MemberState::Suspect | MemberState::Dead) {
                updates.push(MemberUpdate {
                    id: m.0,
                    addr: m.1.addr.clone(),
                    incarnation: m.1.incarnation,
                    state: m.1.state,
                });
            }
        }
        let k = self.cfg.updates_per_message_max.saturating_sub(updates.len());
        updates.extend(self.take_updates(k));
        let packet = Packet {
            from: self.me,
            addr: self.cfg.advertise.clone(),
            incarnation: self.incarnation,
            complete: self.store.history_complete(),
            updates,
            body,
        };
        let mut nonce = [0u8; 24];
        self.rng.fill(&mut nonce);
        let bytes = seal(&self.cfg.keys, nonce, &packet, self.cfg.compress_min_bytes);
        if bytes.len() > self.cfg.message_bytes_max {
            self.stats.oversize_not_sent += 1;
            return;
        }
        self.stats.messages_out += 1;
        self.stats.bytes_out += bytes.len() as u64;
        self.out.push_back(Output::Transmit { to, bytes });
    }

    // ----- receiving -----

    fn drop_msg(&mut self, from: PeerAddr, reason: DecodeError) {
        match reason {
            DecodeError::Auth => self.stats.dropped_auth += 1,
            _ => self.stats.dropped_format += 1,
        }
        self.out.push_back(Output::Event(Event::Dropped { from, reason }));
    }

    fn check_limits(&self, p: &Packet) -> bool {
        let c = &self.cfg;
        if p.updates.len() > c.updates_per_message_max + 1 {
            return false;
        }
        match &p.body {
            Body::JoinReply { members } => members.len() <= c.join_sample_max,
            Body::Syn { push, .. } => push.len() <= c.entries_per_message_max,
            Body::Digest { digest } => digest.seen.len() <= c.digest_writers_max,
            Body::Delta { delta, digest } => {
                delta.entries.len() <= c.entries_per_message_max
                    && delta.seen.len() <= c.store.writers_max
                    && digest.as_ref().is_none_or(|d| d.seen.len() <= c.digest_writers_max)
            }
            Body::Full { chunk } => {
                chunk.entries.len() <= c.entries_per_message_max
                    && chunk.seen.len() <= c.store.writers_max
                    && chunk.floors.len() <= c.store.writers_max
            }
            _ => true,
        }
    }

    fn receive(&mut self, from: PeerAddr, bytes: &[u8]) {
        self.stats.bytes_in += bytes.len() as u64;
        let p = match open(&self.cfg.keys, bytes, self.cfg.message_bytes_max) {
            Ok(p) => p,
            Err(e) => return self.drop_msg(from, e),
        };
        if p.from == self.me || !self.check_limits(&p) {
            return self.drop_msg(from, DecodeError::BadFormat);
        }
        self.stats.messages_in += 1;
        // The sender is alive at its incarnation: learn or refresh it.
        let sender_state = if matches!(p.body, Body::Leave) { MemberState::Left } else { MemberState::Alive };
        let known = self.members.get(&p.from).map(|m| (m.incarnation, m.state));
        match known {
            None => {
                self.apply_update(
                    MemberUpdate { id: p.from, addr: p.addr.clone(), incarnation: p.incarnation, state: sender_state },
                    true,
                );
            }
            Some((inc, _)) if p.incarnation > inc || sender_state == MemberState::Left => {
                self.apply_update(
                    MemberUpdate { id: p.from, addr: p.addr.clone(), incarnation: p.incarnation, state: sender_state },
                    true,
                );
            }
            _ => {}
        }
        for u in p.updates {
            self.apply_update(u, false);
        }
        let peer = p.addr;
        let peer_id = Some(p.from);
        let peer_complete = p.complete;
        self.heard_complete |= peer_complete;
        let wall = self.now.wall_ms;
        match p.body {
            Body::Ping { seq, hash, writers } => {
                self.send(peer.clone(), peer_id, Body::Ack { seq });
                if hash != self.store.seen_hash() || writers as usize != self.store.writers() {
                    let d = self.my_digest();
                    self.send(peer, peer_id, Body::Digest { digest: d });
                }
            }
            Body::Ack { seq } => {
                if let Some(pr) = self.probe.as_mut() {
                    if pr.seq == seq && pr.target == p.from {
                        pr.acked = true;
                    }
                }
                if let Some(r) = self.relays.remove(&seq) {
                    if r.target == p.from {
                        self.send(r.requester, None, Body::IndirectAck { seq: r.seq, target: r.target });
                    }
                }
            }
            Body::PingReq { seq, target, target_addr } => {
                if self.relays.len() < self.cfg.relays_max && target != self.me {
                    self.seq = self.seq.wrapping_add(1);
                    let my_seq = self.seq;
                    self.relays.insert(
                        my_seq,
                        Relay { requester: peer, seq, target, deadline: self.now.at + self.cfg.probe_interval },
                    );
                    let body = self.ping(my_seq);
                    self.send(target_addr, Some(target), body);
                }
            }
            Body::IndirectAck { seq, target } => {
                if let Some(pr) = self.probe.as_mut() {
                    if pr.seq == seq && pr.target == target {
                        pr.acked = true;
                    }
                }
            }
            Body::Join => {
                let sample = self.pick_live(self.cfg.join_sample_max, Some(p.from));
                let members = sample
                    .into_iter()
                    .filter(|id| *id != p.from)
                    .take(self.cfg.join_sample_max.saturating_sub(1))
                    .map(|id| {
                        let m = &self.members[&id];
                        MemberUpdate { id, addr: m.addr.clone(), incarnation: m.incarnation, state: m.state }
                    })
                    .chain(std::iter::once(self.self_update(MemberState::Alive)))
                    .collect();
                self.send(peer, peer_id, Body::JoinReply { members });
            }
            Body::JoinReply { members } => {
                for u in members {
                    // Learn them without re-gossiping each one: they are not
                    // news to the cluster.
                    if u.id != self.me && !self.members.contains_key(&u.id) {
                        if self.members.len() >= self.cfg.members_max && !self.evict_one() {
                            continue;
                        }
                        self.put_member(
                            u.id,
                            Member {
                                addr: u.addr.clone(),
                                incarnation: u.incarnation,
                                state: MemberState::Alive,
                                since: self.now.at,
                            },
                        );
                        self.out.push_back(Output::Event(Event::MemberUp { id: u.id, addr: u.addr }));
                    }
                }
            }
            Body::Syn { summary, push } => {
                for pushed in push {
                    let w = pushed.entry.writer;
                    let v = pushed.entry.version;
                    let fresh = self.store.apply(pushed.entry.clone(), wall).is_ok();
                    if self.store.seen_of(w) >= pushed.prev {
                        self.store.set_seen(w, v);
                    }
                    if fresh {
                        self.stats.entries_applied += 1;
                        self.make_hot(pushed);
                    }
                }
                let differs = summary.is_some_and(|(hash, writers)| {
                    hash != self.store.seen_hash() || writers as usize != self.store.writers()
                });
                if differs {
                    let d = self.my_digest();
                    self.send(peer, peer_id, Body::Digest { digest: d });
                }
            }
            Body::Digest { digest } => {
                if self.store.needs_full(&digest, wall) {
                    self.peer_behind(peer, peer_id, peer_complete);
                } else {
                    let delta = self.delta_for(&digest);
                    let mine = self.my_digest();
                    self.send(peer, peer_id, Body::Delta { delta, digest: Some(mine) });
                }
            }
            Body::Delta { delta, digest } => {
                match digest {
                    Some(d) => {
                        // The first leg of an exchange: judge the sender by its
                        // digest before taking anything from it. A sender that
                        // may have missed collected deletes could hand us
                        // entries whose tombstones are gone here.
                        if self.store.needs_full(&d, wall) {
                            self.peer_behind(peer, peer_id, peer_complete);
                            return;
                        }
                        self.stats.entries_applied += self.store.apply_delta(delta, wall) as u64;
                        let back = self.delta_for(&d);
                        if !back.entries.is_empty() || !back.seen.is_empty() {
                            self.send(peer, peer_id, Body::Delta { delta: back, digest: None });
                        }
                    }
                    None => {
                        // The second leg: we judged this peer by its digest
                        // when it asked us for this delta.
                        self.stats.entries_applied += self.store.apply_delta(delta, wall) as u64;
                    }
                }
            }
            Body::NeedFull => {
                // Only a node that knows its whole collection history is a
                // safe source: a restarted one may hold entries whose
                // deletes were collected while it was down.
                if peer_complete {
                    self.start_full(peer, peer_id);
                }
            }
            Body::FullRequest { after } => {
                let chunk = self.store.full_chunk(
                    after.as_ref(),
                    wall,
                    self.cfg.entries_per_message_max,
                    self.entry_budget(),
                    self.cfg.store.writers_max.min(self.entry_budget() / 40),
                );
                self.send(peer, peer_id, Body::Full { chunk });
            }
            Body::Full { chunk } => {
                let Some(mut t) = self.full.take() else {
                    return;
                };
                if t.peer != peer {
                    self.full = Some(t);
                    return;
                }
                for e in chunk.entries {
                    if t.received.len() < self.cfg.store.entries_max {
                        t.received.insert((e.ns, e.key.clone()));
                    }
                    if self.store.apply(e, wall).is_ok() {
                        self.stats.entries_applied += 1;
                    }
                }
                match chunk.next {
                    Some(next) => {
                        t.after = Some(next.clone());
                        t.deadline = self.now.at + self.cfg.full_transfer_timeout;
                        self.full = Some(t);
                        self.send(peer, peer_id, Body::FullRequest { after: Some(next) });
                    }
                    None => {
                        self.store.finish_full(&t.received, &chunk.seen, &chunk.floors, chunk.complete, wall);
                        self.stats.full_transfers += 1;
                        self.full_done_at = Some(self.now.at);
                    }
                }
            }
            Body::Leave => {}
            Body::Lookup { id, ns, prefix } => {
                // Answer with at most one message's worth, in key order.
                let budget = self.entry_budget();
                let mut bytes = 0usize;
                let entries: Vec<_> = self
                    .store
                    .live_with_prefix(ns, &prefix, wall)
                    .take(self.cfg.entries_per_message_max)
                    .take_while(|e| {
                        bytes += e.encoded_len_max();
                        bytes <= budget
                    })
                    .cloned()
                    .collect();
                self.send(peer, peer_id, Body::Found { id, entries });
            }
            Body::Found { id, entries } => {
                // Only answers to our own lookups: unsolicited entries are
                // not taken this way.
                if let Some(l) = self.lookups.get_mut(&id) {
                    l.2 += entries.len();
                    l.1 = l.1.saturating_sub(1);
                    for e in entries {
                        if self.store.apply(e, wall).is_ok() {
                            self.stats.entries_applied += 1;
                        }
                    }
                    if l.1 == 0 {
                        let found = l.2;
                        self.lookups.remove(&id);
                        self.out.push_back(Output::Event(Event::LookupDone { id, found }));
                    }
                }
            }
        }
    }

    /// The peer looks behind us by more than the grace period. If we know
    /// our collection history, tell it to take a full transfer from us. If
    /// we do not (we restarted), we may be the stale one: pull a full
    /// transfer from it if it knows its history; otherwise exchange nothing.
    fn peer_behind(&mut self, peer: PeerAddr, peer_id: Option<NodeId>, peer_complete: bool) {
        if self.store.history_complete() {
            self.send(peer, peer_id, Body::NeedFull);
        } else if peer_complete {
            self.start_full(peer, peer_id);
        }
    }

    fn start_full(&mut self, peer: PeerAddr, peer_id: Option<NodeId>) {
        let cooling = self
            .full_done_at
            .is_some_and(|t| self.now.at.saturating_duration_since(t) < self.cfg.full_transfer_cooldown);
        if self.full.is_none() && !cooling {
            self.full = Some(Transfer {
                peer: peer.clone(),
                after: None,
                received: BTreeSet::new(),
                deadline: self.now.at + self.cfg.full_transfer_timeout,
            });
            self.send(peer, peer_id, Body::FullRequest { after: None });
        }
    }

    fn ping(&self, seq: u32) -> Body {
        Body::Ping { seq, hash: self.store.seen_hash(), writers: self.store.writers() as u32 }
    }

    fn my_digest(&mut self) -> Digest {
        let n = self.store.writers().max(1);
        let start = self.rng.index(n);
        self.store.digest(start, self.cfg.digest_writers_max)
    }

    fn delta_for(&self, digest: &Digest) -> Delta {
        self.store.delta_for(
            digest,
            self.now.wall_ms,
            self.cfg.entries_per_message_max,
            self.entry_budget().saturating_sub(digest_bytes(self.cfg.digest_writers_max)),
        )
    }
}

/// Upper bound of an encoded digest of `n` writers.
fn digest_bytes(n: usize) -> usize {
    n * 20 + 24
}
