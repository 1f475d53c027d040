//! The coordinator of the gossip machine: its inputs and outputs, the state
//! the three parts share, the timer and the dispatch of each received
//! message to the part that handles its kind.
//!
//! The parts live next to it, each an `impl Gossip` block over the same
//! state: [`membership`](super::membership) (SWIM probes, suspicion,
//! piggybacked updates, joins), [`anti_entropy`](super::anti_entropy)
//! (rounds, push, digests, deltas, full transfers) and
//! [`lookup`](super::lookup) (prefix lookups). This file owns `handle`,
//! `poll_output`, sending, and [`Gossip::check_invariants`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;

use super::anti_entropy::{Behind, Hot, Transfer};
use super::lookup::Lookup;
use super::membership::{log10_ceil, Member, PendingUpdate, Probe, Relay, Suspicion, NOT_LIVE};
use super::replay::{Replay, Verdict};
use super::wire::{
    open, seal, Body, DecodeError, Keyring, MemberState, MemberUpdate, Packet, PeerAddr, ENVELOPE_OVERHEAD,
};
use crate::rand::Rng;
use crate::replica::{Change, Namespace, NodeId, Refused, Store, StoreConfig};
use crate::time::{Duration, Instant, UnixMillis};
use crate::Transmit;

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
    /// Writers listed, with our newest version of each, beside the summary
    /// of an anti-entropy round and in the digest that answers one, when
    /// our watermark map is larger than one digest: the writers of entries that reached us lately (but not in
    /// the last `push_rounds` rounds, still being pushed). A peer behind on
    /// one starts its digest window there, so the exchange repairs what a
    /// push missed instead of a random window of writers (issue 16). The
    /// same bound holds for the writers a node remembers being behind on.
    pub recent_writers_max: usize,
    /// Entries that reached us longer ago than this are not listed.
    pub recent_writers_window: Duration,
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
    /// A request of a full state transfer not answered within this long is
    /// sent again (until `full_transfer_timeout`): one lost message must not
    /// stall a node that serves nothing until its transfer is done.
    pub full_transfer_retry: Duration,
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
    /// A message sent longer ago than this (by the sender's clock against
    /// ours), or further ahead, is dropped as stale: the replay window, and
    /// the clock skew tolerated between nodes (see the `replay` module).
    pub replay_window: Duration,
    /// Senders whose recent sequence numbers are remembered, to drop
    /// replays; 32 bytes each (in a table at most seven eighths full). The eviction rule is in the `replay` module.
    pub replay_senders_max: usize,
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
            recent_writers_max: 64,
            recent_writers_window: Duration::from_secs(5),
            hot_max: 1024,
            relays_max: 64,
            join_sample_max: 32,
            compress_min_bytes: 256,
            full_transfer_timeout: Duration::from_secs(5),
            full_transfer_retry: Duration::from_secs(1),
            full_transfer_cooldown: Duration::from_secs(30),
            restore_wait: Duration::from_secs(60),
            lookup_fanout: 2,
            lookup_timeout: Duration::from_millis(500),
            lookups_max: 256,
            replay_window: Duration::from_secs(30),
            replay_senders_max: 4096,
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
    /// A whole message arrived; `from` is where it came from on the
    /// transport, and where every answer to it goes (see `Transmit`): over
    /// TCP, the connection it arrived on. The address written inside the
    /// message is only where our own requests to its sender go.
    Receive {
        /// Transport source: the way back.
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
    /// Send these bytes (one whole sealed message) to `to`.
    Transmit(Transmit<PeerAddr>),
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
    /// Authentic messages dropped as replays (their sequence number was
    /// already accepted from that sender).
    pub dropped_replay: u64,
    /// Authentic messages dropped as stale (sent outside the replay window,
    /// or numbered below the sender's sequence window).
    pub dropped_stale: u64,
    /// Messages not sent because they would exceed the size limit.
    pub oversize_not_sent: u64,
    /// Full state transfers completed.
    pub full_transfers: u64,
    /// Requests of a full state transfer sent again for want of an answer.
    pub full_requests_resent: u64,
    /// Remote entries applied.
    pub entries_applied: u64,
    /// Membership updates that changed our view.
    pub member_updates_applied: u64,
    /// Members declared suspect by us or others.
    pub suspicions: u64,
    /// Bytes sent, by the kind of message body ([`Body::KINDS`]); the
    /// piggybacked membership updates count with the body they ride on.
    pub bytes_out_by_kind: [u64; Body::KINDS.len()],
}

/// Slots of `Gossip::sender_hint` (a power of two).
pub(super) const SENDER_HINTS: usize = 64;

/// A live member as the live list holds it: its id, and what a round or
/// an answer to it needs (see `Gossip::live_info`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct LiveInfo {
    pub(super) id: NodeId,
    pub(super) addr: PeerAddr,
    pub(super) suspect: bool,
    pub(super) incarnation: u64,
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
/// * Checks: [`check_invariants`](Self::check_invariants), for the fuzzer
///   and the simulator after every input.
///
/// The fields are shared by the three parts (`membership`, `anti_entropy`,
/// `lookup`), hence `pub(super)`; nothing outside `gossip` sees them.
#[derive(Debug)]
pub struct Gossip {
    pub(super) cfg: Config,
    pub(super) me: NodeId,
    pub(super) incarnation: u64,
    pub(super) rng: Rng,
    pub(super) store: Store,
    pub(super) out: VecDeque<Output>,
    pub(super) stats: Stats,
    pub(super) now: Now,
    /// After `Command::Leave`: every input is ignored.
    pub(super) left: bool,
    /// The sequence number of the next message we seal (see `Packet::seq`).
    pub(super) send_seq: u64,
    /// The senders' sequence windows, to drop replayed messages.
    pub(super) replay: Replay,
    /// Sequence numbers of our probes and relayed probes.
    pub(super) seq: u32,

    // ----- membership -----
    pub(super) members: BTreeMap<NodeId, Member>,
    /// The live list: alive or suspect members, for O(1) random choice;
    /// each one's `Member::live_pos` is its index in it. Each holds the
    /// member's id, address, suspicion and incarnation: a round's targets
    /// are drawn from the list and need only these (looking each one up in
    /// `members` was a B-tree walk of cold nodes per target, a quarter of
    /// `handle` in a 10,000-node simulation), and so does the check of a
    /// sender against its hinted place. One vector, not ids beside
    /// details: a random place is one cache line to fetch, not two.
    pub(super) live_info: Vec<LiveInfo>,
    /// Where in the live list a recent sender was, by a hash of its id: a
    /// hint, checked against `live_info` before use, that spares the
    /// member-map walk for a message from a live member with nothing new
    /// to tell (most messages).
    pub(super) sender_hint: [u32; SENDER_HINTS],
    /// Membership updates waiting to be piggybacked, with how often each
    /// was sent; `update_order` sorts them (times sent, member) so the
    /// least-sent goes first.
    pub(super) updates: BTreeMap<NodeId, PendingUpdate>,
    pub(super) update_order: BTreeSet<(u32, NodeId)>,
    pub(super) next_probe: Instant,
    pub(super) probe: Option<Probe>,
    pub(super) probe_list: Vec<NodeId>,
    pub(super) probe_idx: usize,
    /// Suspicions in force or stale (a stale one is skipped when it fires),
    /// soonest deadline first.
    pub(super) suspects: BTreeSet<Suspicion>,
    pub(super) next_reannounce: Instant,
    /// Indirect probes we relay for others, by our own sequence number.
    pub(super) relays: BTreeMap<u32, Relay>,
    pub(super) bootstrap: Vec<PeerAddr>,

    // ----- anti-entropy -----
    /// Fresh entries still pushed each round.
    pub(super) hot: VecDeque<Hot>,
    /// Writers of the fresh entries that reached us, with when, oldest
    /// first; at most `4 * recent_writers_max` (see `Config::recent_writers_max`).
    pub(super) recent: VecDeque<(NodeId, Instant)>,
    /// Writers we know we are behind on, with the version we know exists;
    /// at most `recent_writers_max`. Our next digest starts at the first.
    pub(super) behind: VecDeque<Behind>,
    pub(super) next_round: Instant,
    pub(super) rounds_to_sync: u32,
    /// Rounds from `next_round` on that the last deadline we gave skipped
    /// as idle (see [`Gossip::idle_rounds_ahead`]); counted down when time
    /// next reaches the machine. Kept rather than worked out again then:
    /// the count must be the one the deadline was given with, and the
    /// expiry check behind it depends on the clocks of that moment.
    pub(super) rounds_skipped: u32,
    pub(super) full: Option<Transfer>,
    pub(super) full_done_at: Option<Instant>,
    /// When we restarted, until our collection history is complete.
    pub(super) restored_at: Option<Instant>,
    /// The last time a peer that knows its collection history spoke to us.
    pub(super) complete_heard_at: Option<Instant>,
    /// The last time any peer spoke to us.
    pub(super) peer_heard_at: Option<Instant>,

    // ----- lookups -----
    /// Lookups in flight, by the caller's id.
    pub(super) lookups: BTreeMap<u32, Lookup>,
}

/// Bootstrap addresses kept at most.
pub const BOOTSTRAP_MAX: usize = 16;

/// Who sent the message being handled: its id, the address it advertises
/// (where our own requests to it go), the transport address it came from
/// (where every answer to it goes), and whether it knows its whole
/// collection history.
#[derive(Clone, Debug)]
pub(super) struct Sender {
    pub(super) id: NodeId,
    pub(super) addr: PeerAddr,
    /// The `from` of the `Input::Receive`: answers go back the way the
    /// question came, never to the address written inside it, so a copy
    /// of a member's message sent by someone else cannot aim our answer
    /// (a delta, a chunk of a full transfer: up to a whole message) at
    /// that member.
    pub(super) reply_to: PeerAddr,
    pub(super) complete: bool,
}

impl Gossip {
    /// A machine for node `me` at `now`; `seed` drives every random choice
    /// *and the AEAD nonces*: an adapter must draw it from OS entropy.
    pub fn new(mut cfg: Config, me: NodeId, now: Now, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        // The store keeps the namespace limits; the machine reads only the
        // store-wide bounds of its copy, so it does not hold a second map
        // (some 400 bytes a node, which a 100,000-node simulation feels).
        let store = Store::new(cfg.store.clone(), me);
        cfg.store.namespaces = BTreeMap::new();
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
            live_info: Vec::new(),
            sender_hint: [u32::MAX; SENDER_HINTS],
            updates: BTreeMap::new(),
            update_order: BTreeSet::new(),
            hot: VecDeque::new(),
            recent: VecDeque::new(),
            behind: VecDeque::new(),
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
            // Above anything this node sent before a restart: see the
            // `replay` module.
            send_seq: now.wall_ms.saturating_mul(1024),
            replay: Replay::default(),
            rounds_to_sync: 1,
            rounds_skipped: 0,
            stats: Stats::default(),
            now,
            restored_at: None,
            complete_heard_at: None,
            peer_heard_at: None,
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
        crate::queues::shrink_idle(&mut self.out);
        self.rounds_skipped = self.idle_rounds_ahead();
        Output::Timeout(self.next_deadline())
    }

    fn next_deadline(&self) -> Instant {
        if self.left {
            return Instant::NEVER;
        }
        let round = self.next_round + self.cfg.gossip_interval.saturating_mul(self.rounds_skipped.into());
        let mut t = round.min(self.next_probe).min(self.next_reannounce);
        if let Some(p) = &self.probe {
            if !p.indirect_sent && !p.acked {
                t = t.min(p.direct_deadline);
            }
        }
        if let Some(s) = self.suspects.first() {
            t = t.min(s.deadline);
        }
        if let Some(f) = &self.full {
            t = t.min(f.deadline).min(f.retry_at);
        }
        if let Some(at) = self.next_lookup_deadline() {
            t = t.min(at);
        }
        t
    }

    /// Feeds one input at `now`. Then drain [`poll_output`](Self::poll_output).
    pub fn handle(&mut self, now: Now, input: Input) {
        if now.at > self.now.at || now.wall_ms != self.now.wall_ms {
            self.now = Now { at: now.at.max(self.now.at), wall_ms: now.wall_ms };
        }
        self.store.advance(self.now.wall_ms);
        if self.left {
            return;
        }
        self.count_skipped_rounds();
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

    /// Panics, with the reason, if the machine's state is inconsistent or
    /// over a configured bound. Cheap enough for the fuzzer and the
    /// simulator to call after every input (linear in the members, the
    /// pending updates and the suspicions); an adapter need not call it.
    ///
    /// What it checks: the member map and the index of live members agree
    /// (both ways); we are not our own member; every suspect member has a
    /// suspicion in force at its incarnation, due within the longest
    /// suspicion timeout; the pending updates and their order agree; and
    /// every bounded collection is within its [`Config`] limit: members,
    /// pending updates, hot entries, recent and lagging writers, relayed probes, lookups (each still
    /// awaiting between 1 and `lookup_fanout` answers), bootstrap
    /// addresses, the senders' replay windows (`replay_senders_max`), the keys a full transfer remembers, and the store's
    /// entries, writers and graveyard; and the store's anti-entropy summary
    /// agrees with one computed from scratch (`Store::check_summary`, linear
    /// in the entries).
    pub fn check_invariants(&self) {
        let c = &self.cfg;
        assert!(!self.members.contains_key(&self.me), "node {:x} lists itself as a member", self.me);
        assert!(
            self.members.len() <= c.members_max,
            "{} members known, over members_max {}",
            self.members.len(),
            c.members_max
        );
        // The live index agrees with the member map, both ways.
        for (i, live) in self.live_info.iter().enumerate() {
            let id = &live.id;
            let m = self.members.get(id);
            assert_eq!(
                m.map(|m| m.live_pos as usize),
                Some(i),
                "live member {id:x} is at {i} but its member entry says otherwise"
            );
            let state = m.map(|m| m.state);
            assert!(
                matches!(state, Some(MemberState::Alive | MemberState::Suspect)),
                "member {id:x} is in the live list but its state is {state:?}"
            );
            let info = m.map(|m| LiveInfo {
                id: *id,
                addr: m.addr.clone(),
                suspect: m.state == MemberState::Suspect,
                incarnation: m.incarnation,
            });
            assert_eq!(info.as_ref(), Some(live), "live member {id:x}'s details are stale");
        }
        for (id, m) in &self.members {
            let live = matches!(m.state, MemberState::Alive | MemberState::Suspect);
            assert_eq!(
                live,
                m.live_pos != NOT_LIVE,
                "member {id:x} in state {:?} has live_pos {}",
                m.state,
                m.live_pos
            );
        }
        let live_in_map =
            self.members.values().filter(|m| matches!(m.state, MemberState::Alive | MemberState::Suspect)).count();
        assert_eq!(live_in_map, self.live_info.len(), "alive or suspect members missing from the live list");
        // Every suspect has a suspicion in force, due within the longest
        // suspicion timeout.
        let longest =
            c.probe_interval.saturating_mul(u64::from(c.suspicion_mult) * u64::from(log10_ceil(c.members_max).max(1)));
        for s in &self.suspects {
            assert!(
                s.deadline <= self.now.at + longest,
                "the suspicion of {:x} is due at {:?}, beyond now {:?} + the longest timeout",
                s.id,
                s.deadline,
                self.now.at
            );
        }
        let suspected: BTreeSet<(NodeId, u64)> = self.suspects.iter().map(|s| (s.id, s.incarnation)).collect();
        for (id, m) in &self.members {
            if m.state == MemberState::Suspect {
                assert!(
                    suspected.contains(&(*id, m.incarnation)),
                    "member {id:x} is suspect at incarnation {} with no suspicion deadline",
                    m.incarnation
                );
            }
        }
        // Pending updates and their order agree.
        assert!(
            self.updates.len() <= c.updates_pending_max.max(1),
            "{} updates pending, over updates_pending_max {}",
            self.updates.len(),
            c.updates_pending_max
        );
        assert_eq!(self.updates.len(), self.update_order.len(), "pending updates and their order differ in size");
        for (sent, id) in &self.update_order {
            let p = self.updates.get(id);
            assert_eq!(p.map(|p| p.sent), Some(*sent), "update order ({sent}, {id:x}) has no matching update");
        }
        assert!(self.hot.len() <= c.hot_max.max(1), "{} hot entries, over hot_max {}", self.hot.len(), c.hot_max);
        for h in &self.hot {
            assert!(
                h.rounds_left >= 1 && h.rounds_left <= c.push_rounds,
                "a hot entry has {} rounds left, outside 1..={}",
                h.rounds_left,
                c.push_rounds
            );
        }
        assert!(
            self.recent.len() <= 4 * c.recent_writers_max,
            "{} recent writers, over 4 x recent_writers_max {}",
            self.recent.len(),
            c.recent_writers_max
        );
        assert!(
            self.behind.len() <= c.recent_writers_max,
            "behind on {} writers, over recent_writers_max {}",
            self.behind.len(),
            c.recent_writers_max
        );
        assert!(self.relays.len() <= c.relays_max, "{} relays, over relays_max {}", self.relays.len(), c.relays_max);
        assert!(
            self.lookups.len() <= c.lookups_max,
            "{} lookups, over lookups_max {}",
            self.lookups.len(),
            c.lookups_max
        );
        for (id, l) in &self.lookups {
            assert!(
                l.awaiting >= 1 && l.awaiting <= c.lookup_fanout,
                "lookup {id} awaits {} answers, outside 1..={}",
                l.awaiting,
                c.lookup_fanout
            );
        }
        assert!(
            self.replay.len() <= c.replay_senders_max.max(1),
            "{} senders' replay windows, over replay_senders_max {}",
            self.replay.len(),
            c.replay_senders_max
        );
        assert!(self.bootstrap.len() <= BOOTSTRAP_MAX, "{} bootstrap addresses", self.bootstrap.len());
        assert!(self.probe_idx <= self.probe_list.len(), "the probe cursor is past the probe list");
        if let Some(t) = &self.full {
            assert!(
                t.received.len() <= c.store.entries_max,
                "a full transfer remembers {} keys, over entries_max {}",
                t.received.len(),
                c.store.entries_max
            );
        }
        let s = &self.store;
        s.check_summary();
        assert!(s.len() <= c.store.entries_max, "{} entries, over entries_max {}", s.len(), c.store.entries_max);
        assert!(
            s.writers() <= c.store.writers_max,
            "{} writers, over writers_max {}",
            s.writers(),
            c.store.writers_max
        );
        assert!(
            s.graveyard_len() <= c.store.graveyard_max,
            "{} graves, over graveyard_max {}",
            s.graveyard_len(),
            c.store.graveyard_max
        );
    }

    // ----- commands -----

    fn command(&mut self, c: Command) {
        let wall = self.now.wall_ms;
        match c {
            Command::Write { ns, key, value, expires_ms } => {
                match self.store.write(ns, key.clone(), value, expires_ms, wall) {
                    Ok(w) => self.push_fresh(super::wire::Pushed { entry: w.entry, prev: w.prev }),
                    Err(reason) => self.out.push_back(Output::Event(Event::WriteRefused { ns, key, reason })),
                }
            }
            Command::Delete { ns, key } => match self.store.delete(ns, key.clone(), wall) {
                Ok(w) => self.push_fresh(super::wire::Pushed { entry: w.entry, prev: w.prev }),
                Err(reason) => self.out.push_back(Output::Event(Event::WriteRefused { ns, key, reason })),
            },
            Command::Join(addrs) => self.join(addrs),
            Command::SetKeys(keys) => self.cfg.keys = keys,
            Command::Lookup { id, ns, prefix } => self.start_lookup(id, ns, prefix),
            Command::Leave => self.leave(),
        }
    }

    // ----- timers -----

    /// How many rounds from `next_round` on would do nothing but count down
    /// to the next summary if nothing reached us before them: nothing is
    /// hot, no restart history waits to settle, no entry expires and no
    /// tombstone is collected by the last of them, and the summary is not
    /// due. The deadline we give skips them, so an idle node wakes once a
    /// summary instead of once a round (a fifth as often by default); they
    /// are counted down when time next reaches us, as if each had run.
    fn idle_rounds_ahead(&self) -> u32 {
        let every = self.cfg.gossip_interval;
        if !self.hot.is_empty() || self.restored_at.is_some() || every == Duration::ZERO {
            return 0;
        }
        let idle = self.rounds_to_sync.saturating_sub(1);
        if idle == 0 {
            return 0;
        }
        if let Some(due_ms) = self.store.next_expiry_ms() {
            // The wall time of the last round skipped, give or take the
            // rounding of the two clocks: a round that could expire
            // something runs.
            let last = self.next_round + every.saturating_mul(u64::from(idle - 1));
            let last_ms = self.now.wall_ms.saturating_add(last.saturating_duration_since(self.now.at).as_millis());
            if due_ms <= last_ms.saturating_add(1) {
                return 0;
            }
        }
        idle
    }

    /// Counts down the idle rounds our last deadline skipped whose time has
    /// come (a round at `now` included: its timer would have fired before
    /// anything else at that instant). Only those: the round after them is
    /// not idle and runs from `timeout` as usual.
    fn count_skipped_rounds(&mut self) {
        let skipped = std::mem::take(&mut self.rounds_skipped);
        let now = self.now.at;
        if skipped == 0 || now < self.next_round {
            return;
        }
        let every = self.cfg.gossip_interval.as_micros();
        let due = (now - self.next_round).as_micros() / every + 1;
        let k = due.min(u64::from(skipped));
        self.rounds_to_sync -= k as u32;
        self.next_round += self.cfg.gossip_interval.saturating_mul(k);
    }

    /// Runs every timer that is due, in a fixed order: the gossip round,
    /// the direct-probe deadline, the next probe, suspicions, re-announces,
    /// the full-transfer deadline, lookups.
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
        self.expire_suspicions();
        if now >= self.next_reannounce {
            self.next_reannounce = now + self.cfg.reannounce_interval;
            self.reannounce();
        }
        self.expire_full();
        self.expire_lookups();
    }

    // ----- sending -----

    /// Room for entries in one message: the message limit less the header,
    /// the piggybacked updates and the envelope.
    pub(super) fn entry_budget(&self) -> usize {
        self.cfg
            .message_bytes_max
            .saturating_sub(ENVELOPE_OVERHEAD + 64 + self.cfg.updates_per_message_max * 96)
            .max(256)
    }

    /// Seals `body` with piggybacked membership updates and queues it for
    /// `to`; `to_id` is the recipient's id when known, so a peer we hold as
    /// suspect or dead hears it and can refute.
    pub(super) fn send(&mut self, to: PeerAddr, to_id: Option<NodeId>, body: Body) {
        self.send_lent(to, to_id, body);
    }

    /// [`send`](Self::send), handing the body back once it is sealed: a
    /// round sends one push to several targets, and cloning its entries
    /// for each was an atomic count on every entry's shared bytes (shared
    /// by every node in the simulator: a line the cores fought over).
    pub(super) fn send_lent(&mut self, to: PeerAddr, to_id: Option<NodeId>, body: Body) -> Body {
        let mut updates = Vec::new();
        // Tell a peer we hold as suspect or dead what we think, so it refutes.
        // Most messages answer a live sender the hint finds in the live
        // list, whose details say as much as its member entry (a walk of
        // the member map's cold nodes per answer, otherwise).
        if let Some(id) = to_id {
            match self.hinted_live_pos(id) {
                Some(pos) => {
                    let info = &self.live_info[pos];
                    if info.suspect {
                        let (addr, incarnation) = (info.addr.clone(), info.incarnation);
                        updates.push(MemberUpdate { id, addr, incarnation, state: MemberState::Suspect });
                    }
                }
                None => {
                    if let Some(m) = self.members.get(&id) {
                        if matches!(m.state, MemberState::Suspect | MemberState::Dead) {
                            let (addr, incarnation, state) = (m.addr.clone(), m.incarnation, m.state);
                            updates.push(MemberUpdate { id, addr, incarnation, state });
                        }
                    }
                }
            }
        }
        let k = self.cfg.updates_per_message_max.saturating_sub(updates.len());
        updates.extend(self.take_updates(k));
        let packet = Packet {
            from: self.me,
            // Lent to the packet and taken back after sealing: one String
            // allocation less per message.
            addr: std::mem::take(&mut self.cfg.advertise),
            incarnation: self.incarnation,
            sent_ms: self.now.wall_ms,
            seq: self.send_seq,
            complete: self.store.history_complete(),
            updates,
            body,
        };
        self.send_seq = self.send_seq.wrapping_add(1);
        let mut nonce = [0u8; 24];
        self.rng.fill(&mut nonce);
        let kind = packet.body.kind();
        let bytes = seal(&self.cfg.keys, nonce, &packet, self.cfg.compress_min_bytes);
        self.cfg.advertise = packet.addr;
        if bytes.len() > self.cfg.message_bytes_max {
            self.stats.oversize_not_sent += 1;
            return packet.body;
        }
        self.stats.messages_out += 1;
        self.stats.bytes_out += bytes.len() as u64;
        self.stats.bytes_out_by_kind[kind] += bytes.len() as u64;
        self.out.push_back(Output::Transmit(Transmit { to, bytes }));
        packet.body
    }

    // ----- receiving -----

    fn drop_msg(&mut self, from: PeerAddr, reason: DecodeError) {
        match reason {
            DecodeError::Auth => self.stats.dropped_auth += 1,
            DecodeError::Replayed => self.stats.dropped_replay += 1,
            DecodeError::Stale => self.stats.dropped_stale += 1,
            _ => self.stats.dropped_format += 1,
        }
        self.out.push_back(Output::Event(Event::Dropped { from, reason }));
    }

    fn check_limits(&self, p: &Packet) -> bool {
        let c = &self.cfg;
        if p.updates.len() > c.updates_per_message_max + 1 {
            return false;
        }
        let recent_max = c.digest_writers_max.max(c.recent_writers_max);
        match &p.body {
            Body::JoinReply { members } => members.len() <= c.join_sample_max,
            // A list of recent writers is accepted up to a digest's worth,
            // not only up to our own `recent_writers_max`: a node that lists
            // none (0) must still take the digests of nodes that do.
            Body::Syn { push, recent, .. } => push.len() <= c.entries_per_message_max && recent.len() <= recent_max,
            Body::Digest { digest, recent } => digest.seen.len() <= c.digest_writers_max && recent.len() <= recent_max,
            Body::Delta { delta, digest } => {
                delta.entries.len() <= c.entries_per_message_max
                    && delta.seen.len() <= c.store.writers_max
                    && digest.as_ref().is_none_or(|d| d.seen.len() <= c.digest_writers_max)
            }
            Body::Full { chunk, .. } => {
                chunk.entries.len() <= c.entries_per_message_max
                    && chunk.seen.len() <= c.store.writers_max
                    && chunk.floors.len() <= c.store.writers_max
            }
            _ => true,
        }
    }

    /// Opens one message, drops it if stale or replayed, learns from its membership part, then hands the
    /// body to the function for its kind.
    fn receive(&mut self, from: PeerAddr, bytes: &[u8]) {
        self.stats.bytes_in += bytes.len() as u64;
        let p = match open(&self.cfg.keys, bytes, self.cfg.message_bytes_max) {
            Ok(p) => p,
            Err(e) => return self.drop_msg(from, e),
        };
        if p.from == self.me || !self.check_limits(&p) {
            return self.drop_msg(from, DecodeError::BadFormat);
        }
        // Last, so only a message that would be applied takes its number.
        let verdict = self.replay.check(
            p.from,
            p.seq,
            p.sent_ms,
            self.now.wall_ms,
            self.cfg.replay_window.as_micros() / 1000,
            self.cfg.replay_senders_max,
        );
        match verdict {
            Verdict::Fresh => {}
            Verdict::Stale => return self.drop_msg(from, DecodeError::Stale),
            Verdict::Replayed => return self.drop_msg(from, DecodeError::Replayed),
        }
        self.stats.messages_in += 1;
        let leaving = matches!(p.body, Body::Leave);
        self.learn_sender(p.from, &p.addr, p.incarnation, leaving);
        for u in p.updates {
            self.apply_update(u, false);
        }
        let from = Sender { id: p.from, addr: p.addr, reply_to: from, complete: p.complete };
        self.peer_heard_at = Some(self.now.at);
        if from.complete {
            self.complete_heard_at = Some(self.now.at);
        }
        match p.body {
            // Membership.
            Body::Ping { seq, hash, writers } => self.on_ping(from, seq, hash, writers),
            Body::Ack { seq } => self.on_ack(from.id, seq),
            Body::PingReq { seq, target, target_addr } => self.on_ping_req(from, seq, target, target_addr),
            Body::IndirectAck { seq, target } => self.on_indirect_ack(seq, target),
            Body::Join => self.on_join(from),
            Body::JoinReply { members } => self.on_join_reply(members),
            Body::Leave => {}
            // Anti-entropy.
            Body::Syn { summary, push, recent } => self.on_syn(from, summary, push, recent),
            Body::Digest { digest, recent } => self.on_digest(from, digest, recent),
            Body::Delta { delta, digest } => self.on_delta(from, delta, digest),
            Body::NeedFull => self.on_need_full(from),
            Body::FullRequest { after } => self.on_full_request(from, after),
            Body::Full { after, chunk } => self.on_full(from, after, chunk),
            // Lookups.
            Body::Lookup { id, ns, prefix } => self.on_lookup(from, id, ns, prefix),
            Body::Found { id, entries } => self.on_found(id, entries),
        }
    }
}
