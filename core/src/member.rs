//! The node's member machine: one cluster member, sans IO. It holds the
//! gossip machine (and through it the replicated store) and the DNS view
//! kept from the store's change feed, and turns API writes into replicated
//! entries under the DNS rules.
//!
//! Same shape as every machine of the core: [`Member::new`], then
//! [`Member::handle`] one [`Input`] at a time, each followed by a drain of
//! [`Member::poll_output`] until it yields [`Output::Timeout`], which always
//! comes last. Outputs are gossip sends ([`Output::Transmit`]), changes to
//! make durable ([`Output::Persist`]: every applied entry, every collected
//! key and the incarnation) and [`Event`]s (DNS view changes, write
//! results, members up and down, lookups done, provider changes for the
//! [tracker](crate::overlay::tracker)).
//!
//! A client's write ([`Command::Write`], [`Command::DeleteName`]) is applied
//! only once it is durable: the member checks it, emits the entries it will
//! write as [`Output::Persist`]s followed by [`Event::Persisting`], and
//! waits. The driver makes them durable and says how that went with
//! [`Input::Persisted`]; only then does the write reach the store, the DNS
//! view and the peers, and [`Event::Written`] answer it. A write the disk
//! refused changes nothing (a full disk once served writes it had answered
//! with an error, until a restart lost them). Entries from gossip are
//! applied at once and persisted after: peers hold them too.
//!
//! ```text
//! let mut m = Member::new(Config { gossip, node_id }, now(), os_random());
//! m.restore(entries_from_disk, persisted_incarnation);     // optional, once
//! m.handle(now(), Input::Command(Command::Join(bootstrap)));
//! loop {
//!     loop { match m.poll_output() {
//!         Output::Transmit(t) => send t.bytes to t.to, framed,
//!         Output::Persist(p) => queue p, in order,
//!         Output::Event(Event::Persisting { id }) => once the queued
//!             persists are durable: m.handle(now(), Input::Persisted { id, result }),
//!         Output::Event(e) => mirror the view, answer writes, log,
//!         Output::Timeout(at) => { arm the one timer at `at`; break }
//!     } }
//!     wait for a gossip message, the timer or a command; handle it
//! }
//! ```
//!
//! The output queue only ever holds what one input produced; the driver
//! drains it after every input.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use serde::Serialize;

use crate::dns::{Name, RRset, RType, RecordStore};
use crate::gossip::{self, Gossip, MemberState, Now, PeerAddr};
use crate::replica::{Change, Entry, Namespace, NodeId, Refused, Store, Version};
use crate::time::{Duration, Instant};
use crate::Transmit;

/// Settings of a [`Member`].
#[derive(Clone, Debug)]
pub struct Config {
    /// The gossip machine's settings (address, keys, limits).
    pub gossip: gossip::Config,
    /// This node's id (kept across restarts by the adapter).
    pub node_id: NodeId,
}

/// What the caller asks of the member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Contact these addresses to join (or rejoin) the cluster.
    Join(Vec<PeerAddr>),
    /// Tell peers we leave, then go quiet.
    Leave,
    /// Put these RRsets and remove those, as this node's writes. A write
    /// that passes the checks emits its [`Output::Persist`]s and
    /// [`Event::Persisting`] with `id`, and is applied once the driver
    /// reports them durable ([`Input::Persisted`]); every write ends with
    /// [`Event::Written`] carrying `id`.
    Write {
        /// The caller's token, echoed in the event.
        id: u64,
        /// RRsets to insert or replace.
        puts: Vec<RRset>,
        /// RRsets to remove, by owner and type.
        removes: Vec<(Name, RType)>,
    },
    /// Remove every RRset of a name; ends like [`Command::Write`].
    DeleteName {
        /// The caller's token, echoed in the event.
        id: u64,
        /// The owner name.
        name: Name,
    },
    /// A command for the gossip machine, passed on as is: the tracker's
    /// provider writes, deletes and lookups
    /// ([`crate::overlay::tracker::Output::Gossip`]).
    Gossip(gossip::Command),
}

/// One input to [`Member::handle`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// A whole gossip message arrived from the transport address `from`.
    Receive {
        /// Transport source.
        from: PeerAddr,
        /// The message bytes (one envelope).
        bytes: Vec<u8>,
    },
    /// The deadline of the last [`Output::Timeout`] passed (an early call
    /// does no harm).
    Timeout,
    /// A caller's command.
    Command(Command),
    /// The persists of write `id` (every [`Output::Persist`] up to its
    /// [`Event::Persisting`]) are durable (`Ok`), or could not be stored
    /// (`Err` with the reason: the write is then dropped, nothing changed).
    /// Report every `Persisting` exactly once, in any order.
    Persisted {
        /// The write's token.
        id: u64,
        /// How the disk took it.
        result: Result<(), String>,
    },
}

/// A change to make durable, in the order given; at start, pass what was
/// stored to [`Member::restore`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Persist {
    /// Store (or replace) an entry, tombstones included.
    Put(Entry),
    /// Forget a key the store collected.
    Remove(Namespace, Bytes),
    /// Remember the node's incarnation (so a restart refutes rumours of its
    /// death at once).
    Incarnation(u64),
}

/// A change of the DNS view, for a replica of it kept elsewhere (the UDP
/// thread's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ViewChange {
    /// Insert or replace an RRset.
    Put(RRset),
    /// Remove one RRset.
    Remove(Name, RType),
}

/// Why a write was refused. Either way nothing of the write that failed
/// the check was applied; a refusal by the store may come after earlier
/// parts of the same write were applied (those are persisted and spread).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteError {
    /// It would break a DNS rule (a CNAME beside other data); nothing
    /// changed.
    Conflict(String),
    /// The replicated store refused part of it (a limit).
    Refused(String),
    /// The disk did not take it (full, failing); nothing changed.
    Storage(String),
}

impl core::fmt::Display for WriteError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            WriteError::Conflict(m) | WriteError::Refused(m) | WriteError::Storage(m) => f.write_str(m),
        }
    }
}

/// What a write did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WriteReport {
    /// RRsets created.
    pub inserted: usize,
    /// RRsets replaced.
    pub replaced: usize,
    /// RRsets removed.
    pub removed: usize,
}

/// Something the caller should know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The DNS view changed.
    View(ViewChange),
    /// The [`Output::Persist`]s of write `id` are all out (they are the
    /// last ones before this event): once every persist emitted so far is
    /// durable, or failed, say so with [`Input::Persisted`]. Until then the
    /// write is neither applied nor answered.
    Persisting {
        /// The write's token.
        id: u64,
    },
    /// A [`Command::Write`] or [`Command::DeleteName`] ended.
    Written {
        /// The caller's token.
        id: u64,
        /// What it did, or why it was refused.
        result: Result<WriteReport, WriteError>,
    },
    /// An entry of the `PROVIDERS` namespace changed: the tracker follows
    /// these ([`crate::overlay::tracker::Input::Store`]).
    Providers(Change),
    /// News from the gossip machine, passed on as it came: a member up or
    /// down, a lookup (a [`Command::Gossip`] of a [`gossip::Command::Lookup`])
    /// done, a message dropped unapplied ([`gossip::DecodeError::Auth`]: no key of
    /// ours opened it). Store changes and refused writes never come this
    /// way: the member turns them into views, persistence and `Written`.
    Gossip(gossip::Event),
}

/// What the member wants done. Drain with [`Member::poll_output`] until it
/// returns `Timeout`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send one whole gossip message.
    Transmit(Transmit<PeerAddr>),
    /// Make a change durable.
    Persist(Persist),
    /// Report an event.
    Event(Event),
    /// Call `handle(.., Input::Timeout)` at this instant (or on any earlier
    /// input). Always the last output of a drain.
    Timeout(Instant),
}

/// Client writes waiting for the disk at most (each holds one API caller);
/// more are refused until the disk answers for some.
pub const PENDING_WRITES_MAX: usize = 4096;

/// A client write that passed the checks and waits for the disk.
#[derive(Debug)]
struct Pending {
    id: u64,
    puts: Vec<RRset>,
    /// Only the sets that were in the view when it was checked.
    removes: Vec<(Name, RType)>,
    /// The DNS keys it writes.
    keys: Vec<Bytes>,
    report: WriteReport,
}

/// How long remote writes took to arrive: from the wall time in the
/// writer's version to when this node applied them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Lag {
    /// Remote entries measured.
    pub count: u64,
    /// Sum of their lags, ms.
    pub sum_ms: u64,
    /// The largest lag seen, ms.
    pub max_ms: u64,
    /// The last lag seen, ms.
    pub last_ms: u64,
}

/// One cluster member: gossip, the replicated store, the DNS view.
///
/// Inputs: [`Member::handle`] (and [`Member::restore`] once, right after
/// [`Member::new`]). Outputs: [`Member::poll_output`], drained after every
/// input until `Timeout`. Getters: [`Member::view`], [`Member::gossip`],
/// [`Member::store`], [`Member::members`], [`Member::lag`],
/// [`Member::rejected_remote`].
pub struct Member {
    gossip: Gossip,
    view: RecordStore,
    out: VecDeque<Output>,
    now: Now,
    gossip_deadline: Instant,
    last_incarnation: u64,
    /// Refusals of the write being handled.
    refused: Vec<(Bytes, Refused)>,
    /// Client writes persisted but not yet reported durable, oldest first;
    /// at most [`PENDING_WRITES_MAX`].
    pending: VecDeque<Pending>,
    /// Keys of the pending writes, with how many hold each: the disk row of
    /// such a key follows the last pending write's outcome, not the store
    /// (see [`Member::persist`]).
    held: BTreeMap<(Namespace, Bytes), u32>,
    /// The DNS keys of the durable write being applied: their rows are on
    /// disk already.
    applying: Vec<Bytes>,
    rejected_remote: u64,
    lag: Lag,
}

/// The replicated store's key of an RRset: lower-case owner in wire form,
/// then the type.
pub fn dns_key(name: &Name, rtype: RType) -> Bytes {
    let lower = name.to_lowercase();
    let mut k = Vec::with_capacity(lower.wire_len() + 2);
    k.extend_from_slice(lower.as_wire());
    k.extend_from_slice(&rtype.0.to_be_bytes());
    Bytes::from(k)
}

/// The owner and type a DNS key names, if it is one.
pub fn parse_dns_key(key: &[u8]) -> Option<(Name, RType)> {
    let (name, t) = key.split_at(key.len().checked_sub(2)?);
    Some((Name::from_wire(name).ok()?, RType(u16::from_be_bytes([t[0], t[1]]))))
}

/// A name as people write it: no trailing dot (the root stays `.`).
pub fn display_name(name: &Name) -> String {
    let s = name.to_string();
    s.strip_suffix('.').map(str::to_owned).filter(|s| !s.is_empty()).unwrap_or(s)
}

impl Member {
    /// A member at `now`; `seed` drives gossip's random choices *and its
    /// AEAD nonces*: an adapter must draw it from OS entropy.
    pub fn new(config: Config, now: Now, seed: u64) -> Member {
        let gossip = Gossip::new(config.gossip, config.node_id, now, seed);
        let mut m = Member {
            gossip,
            view: RecordStore::new(),
            out: VecDeque::new(),
            now,
            gossip_deadline: now.at,
            last_incarnation: 0,
            refused: Vec::new(),
            pending: VecDeque::new(),
            held: BTreeMap::new(),
            applying: Vec::new(),
            rejected_remote: 0,
            lag: Lag::default(),
        };
        m.drain();
        m
    }

    /// Loads what an earlier run persisted; call once, right after
    /// [`Member::new`], then drain (the bumped incarnation is to persist).
    /// A data directory that held nothing is no earlier run: pass nothing.
    pub fn restore(&mut self, entries: Vec<Entry>, incarnation: u64) {
        // Only a data directory that held something is an earlier run. A new
        // store knows its (empty) collection history, and peers serve each
        // other by delta only through such nodes: restoring nothing would
        // leave a cluster of fresh nodes unable to catch up a restarted one
        // (each takes the other's watermarks as older than the grace period)
        // once the pushes of what it missed are over.
        if entries.is_empty() && incarnation == 0 {
            return;
        }
        self.last_incarnation = incarnation;
        self.gossip.restore(entries, incarnation);
        for e in self.gossip.store().live(Namespace::DNS, self.now.wall_ms) {
            if let Some(set) = rrset_of(e) {
                self.view.put(set);
            }
        }
        self.drain();
    }

    /// The DNS view: every live RRset the cluster holds.
    pub fn view(&self) -> &RecordStore {
        &self.view
    }

    /// The gossip machine (stats, incarnation).
    pub fn gossip(&self) -> &Gossip {
        &self.gossip
    }

    /// The replicated store.
    pub fn store(&self) -> &Store {
        self.gossip.store()
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.gossip.id()
    }

    /// Known members (this node excluded): id, address, state.
    pub fn members(&self) -> impl Iterator<Item = (NodeId, &PeerAddr, MemberState)> + '_ {
        self.gossip.members()
    }

    /// Propagation lag of remote writes, as far as it can be known.
    pub fn lag(&self) -> Lag {
        self.lag
    }

    /// Remote DNS entries whose value could not be read (dropped).
    pub fn rejected_remote(&self) -> u64 {
        self.rejected_remote
    }

    /// The next output. Drain until it returns `Output::Timeout`.
    pub fn poll_output(&mut self) -> Output {
        if let Some(o) = self.out.pop_front() {
            return o;
        }
        Output::Timeout(self.deadline())
    }

    /// The earlier of gossip's deadline and the next expiry in the view.
    fn deadline(&self) -> Instant {
        let mut at = self.gossip_deadline;
        if let Some(exp_ms) = self.view.next_expiry() {
            let wait = Duration::from_millis(exp_ms.saturating_sub(self.now.wall_ms));
            at = at.min(self.now.at + wait);
        }
        at
    }

    /// Feeds one input at `now`. Then drain [`Member::poll_output`].
    pub fn handle(&mut self, now: Now, input: Input) {
        self.now = Now { at: now.at.max(self.now.at), wall_ms: now.wall_ms };
        self.refused.clear();
        match input {
            Input::Receive { from, bytes } => self.gossip.handle(now, gossip::Input::Receive { from, bytes }),
            Input::Timeout => {
                self.gossip.handle(now, gossip::Input::Timeout);
                for (name, rtype) in self.view.expire(now.wall_ms) {
                    self.out.push_back(Output::Event(Event::View(ViewChange::Remove(name, rtype))));
                }
            }
            Input::Command(Command::Join(addrs)) => {
                self.gossip.handle(now, gossip::Input::Command(gossip::Command::Join(addrs)))
            }
            Input::Command(Command::Leave) => self.gossip.handle(now, gossip::Input::Command(gossip::Command::Leave)),
            Input::Command(Command::Gossip(c)) => self.gossip.handle(now, gossip::Input::Command(c)),
            Input::Command(Command::Write { id, puts, removes }) => self.submit(now, id, puts, removes),
            Input::Command(Command::DeleteName { id, name }) => {
                let types: Vec<(Name, RType)> =
                    self.view.rrsets_at(&name, now.wall_ms).map(|s| (name.clone(), s.rtype)).collect();
                self.submit(now, id, Vec::new(), types);
            }
            Input::Persisted { id, result } => self.persisted(now, id, result),
        }
        self.drain();
    }

    /// Checks a client write against the DNS rules and the view as it is.
    fn check(&self, now: Now, puts: &[RRset], removes: &[(Name, RType)]) -> Result<(), WriteError> {
        // A CNAME must stand alone at its name (RFC 1034 section 3.6.2).
        for set in puts {
            let clash = self
                .view
                .rrsets_at(&set.owner, now.wall_ms)
                .map(|s| s.rtype)
                .filter(|t| *t != set.rtype && !removes.iter().any(|(n, r)| r == t && n.eq_ignore_case(&set.owner)))
                .find(|t| set.rtype == RType::CNAME || *t == RType::CNAME);
            if let Some(t) = clash {
                return Err(WriteError::Conflict(format!(
                    "{} already has {t} data, and a CNAME cannot stand beside other data",
                    display_name(&set.owner)
                )));
            }
        }
        Ok(())
    }

    /// Takes a client write: checks it, persists the entries it will write
    /// and waits for [`Input::Persisted`]; or answers it at once when it is
    /// refused or changes nothing.
    fn submit(&mut self, now: Now, id: u64, puts: Vec<RRset>, removes: Vec<(Name, RType)>) {
        let result = self.prepare(now, id, puts, removes);
        match result {
            Ok(None) => {}
            Ok(Some(report)) => self.out.push_back(Output::Event(Event::Written { id, result: Ok(report) })),
            Err(e) => self.out.push_back(Output::Event(Event::Written { id, result: Err(e) })),
        }
    }

    /// [`Member::submit`]'s work: `Ok(None)` when the write now waits for
    /// the disk, `Ok(Some(report))` when it had nothing to write.
    fn prepare(
        &mut self,
        now: Now,
        id: u64,
        puts: Vec<RRset>,
        removes: Vec<(Name, RType)>,
    ) -> Result<Option<WriteReport>, WriteError> {
        if self.pending.len() >= PENDING_WRITES_MAX {
            return Err(WriteError::Refused(format!(
                "{PENDING_WRITES_MAX} writes are already waiting for the disk; try again shortly"
            )));
        }
        self.check(now, &puts, &removes)?;
        let wall = now.wall_ms;
        // Removing what is not there removes nothing and writes nothing.
        let removes: Vec<(Name, RType)> =
            removes.into_iter().filter(|(n, t)| self.view.get(n, *t, wall).is_some()).collect();
        let mut report = WriteReport { removed: removes.len(), ..WriteReport::default() };
        for set in &puts {
            let removed_first = removes.iter().any(|(n, t)| *t == set.rtype && n.eq_ignore_case(&set.owner));
            if self.view.get(&set.owner, set.rtype, wall).is_some() && !removed_first {
                report.replaced += 1;
            } else {
                report.inserted += 1;
            }
        }
        if puts.is_empty() && removes.is_empty() {
            return Ok(Some(report));
        }
        // The entries this write will make, checked against the store's
        // limits now, so that a write the store would refuse never reaches
        // the disk.
        let store = self.gossip.store();
        let cfg = store.config();
        let me = self.gossip.id();
        let refused = |what: String, reason: Refused| {
            WriteError::Refused(format!("the replicated store refused {what}: {reason:?}"))
        };
        // Every entry of this write gets a version later than any this node
        // wrote, than the entry it replaces and than the wall clock. When it
        // is applied the store issues its own version (never earlier, unless
        // the wall clock stepped back), which is not persisted again: the row
        // on disk holds the same value, and a restarted node takes the later
        // version back from its peers. Writing every client write once keeps
        // group commit's throughput.
        let mut version = Version::new(wall, 0).max(Version(store.max_of(me).0.saturating_add(1)));
        let mut entries = Vec::with_capacity(puts.len() + removes.len());
        let mut fresh = 0usize;
        for (name, rtype) in &removes {
            let key = dns_key(name, *rtype);
            if let Some(old) = store.get(Namespace::DNS, &key, wall) {
                version = version.max(Version(old.version.0.saturating_add(1)));
            }
            entries.push(Entry {
                ns: Namespace::DNS,
                key,
                value: Bytes::new(),
                writer: me,
                version: Version::ZERO,
                expires_ms: 0,
                deleted: true,
            });
        }
        for set in &puts {
            let key = dns_key(&set.owner, set.rtype);
            let value = Bytes::from(set.to_bytes());
            let what = || format!("{} {}", display_name(&set.owner), set.rtype);
            if key.len() > cfg.key_bytes_max || value.len() > cfg.value_bytes_max {
                return Err(refused(what(), Refused::TooLarge));
            }
            match store.get(Namespace::DNS, &key, wall) {
                Some(old) => version = version.max(Version(old.version.0.saturating_add(1))),
                None => fresh += 1,
            }
            if store.len().saturating_add(fresh) > cfg.entries_max
                || (store.seen_of(me) == Version::ZERO && store.writers() >= cfg.writers_max)
            {
                return Err(refused(what(), Refused::Full));
            }
            entries.push(Entry {
                ns: Namespace::DNS,
                key,
                value,
                writer: me,
                version: Version::ZERO,
                expires_ms: set.expires_at_ms,
                deleted: false,
            });
        }
        let mut keys = Vec::with_capacity(entries.len());
        for mut e in entries {
            e.version = version;
            version = Version(version.0.saturating_add(1));
            keys.push(e.key.clone());
            *self.held.entry((Namespace::DNS, e.key.clone())).or_default() += 1;
            self.out.push_back(Output::Persist(Persist::Put(e)));
        }
        self.out.push_back(Output::Event(Event::Persisting { id }));
        self.pending.push_back(Pending { id, puts, removes, keys, report });
        Ok(None)
    }

    /// The disk answered for write `id`: apply it, or drop it.
    fn persisted(&mut self, now: Now, id: u64, result: Result<(), String>) {
        let Some(at) = self.pending.iter().position(|p| p.id == id) else {
            return;
        };
        let Some(p) = self.pending.remove(at) else { return };
        for k in &p.keys {
            let key = (Namespace::DNS, k.clone());
            if let Some(n) = self.held.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    self.held.remove(&key);
                }
            }
        }
        let result = match result {
            Err(reason) => {
                // Nothing of it is on disk, nor anywhere else.
                self.sync(&p.keys);
                Err(WriteError::Storage(format!("the write could not be stored on disk: {reason}")))
            }
            // The view may have changed while the disk worked.
            Ok(()) => match self.check(now, &p.puts, &p.removes) {
                Err(e) => {
                    self.sync(&p.keys);
                    Err(e)
                }
                Ok(()) => self.apply_write(now, p),
            },
        };
        self.out.push_back(Output::Event(Event::Written { id, result }));
    }

    /// Applies a durable write to the store (and so the view and peers).
    fn apply_write(&mut self, now: Now, p: Pending) -> Result<WriteReport, WriteError> {
        self.refused.clear();
        self.applying = p.keys.clone();
        for (name, rtype) in p.removes {
            let key = dns_key(&name, rtype);
            let delete = gossip::Command::Delete { ns: Namespace::DNS, key };
            self.gossip.handle(now, gossip::Input::Command(delete));
        }
        for set in p.puts {
            let key = dns_key(&set.owner, set.rtype);
            let value = Bytes::from(set.to_bytes());
            let write = gossip::Command::Write { ns: Namespace::DNS, key, value, expires_ms: set.expires_at_ms };
            self.gossip.handle(now, gossip::Input::Command(write));
        }
        self.drain_gossip();
        self.applying.clear();
        // A part the store refused after all (it filled up meanwhile) is on
        // disk but not applied: the disk goes back to what the store holds.
        let refused: Vec<Bytes> = self.refused.iter().map(|(k, _)| k.clone()).collect();
        self.sync(&refused);
        match self.refused.first() {
            Some((key, reason)) => {
                let what = parse_dns_key(key)
                    .map_or_else(|| "a record".to_string(), |(n, t)| format!("{} {t}", display_name(&n)));
                Err(WriteError::Refused(format!("the replicated store refused {what}: {reason:?}")))
            }
            None => Ok(p.report),
        }
    }

    /// Persists what the store holds under these DNS keys (an entry, a
    /// tombstone, or nothing), for the keys no pending write holds.
    fn sync(&mut self, keys: &[Bytes]) {
        for k in keys {
            if self.held.contains_key(&(Namespace::DNS, k.clone())) {
                continue;
            }
            let store = self.gossip.store();
            // Tombstones are not live: look for one only when needed (rare).
            let held = store
                .get(Namespace::DNS, k, self.now.wall_ms)
                .or_else(|| store.entries().find(|e| e.ns == Namespace::DNS && e.key == *k))
                .cloned();
            let op = match held {
                Some(e) => Persist::Put(e),
                None => Persist::Remove(Namespace::DNS, k.clone()),
            };
            self.out.push_back(Output::Persist(op));
        }
    }

    /// Emits a persist from the store's change feed, unless a pending write
    /// holds the key: its row on disk is then that write's, and whatever
    /// becomes of the write persists the key again ([`Member::sync`] or its
    /// own change). So an acknowledged write is never overwritten on disk
    /// by an earlier one applied after it was persisted. The entries of the
    /// write being applied are on disk already.
    fn persist(&mut self, op: Persist) {
        if let Persist::Put(e) = &op {
            if e.writer == self.gossip.id() && e.ns == Namespace::DNS && self.applying.contains(&e.key) {
                return;
            }
        }
        let key = match &op {
            Persist::Put(e) => (e.ns, e.key.clone()),
            Persist::Remove(ns, k) => (*ns, k.clone()),
            Persist::Incarnation(_) => {
                self.out.push_back(Output::Persist(op));
                return;
            }
        };
        if !self.held.contains_key(&key) {
            self.out.push_back(Output::Persist(op));
        }
    }

    /// Drains gossip into outputs, then persists a changed incarnation.
    fn drain(&mut self) {
        self.drain_gossip();
        let inc = self.gossip.incarnation();
        if inc != self.last_incarnation {
            self.last_incarnation = inc;
            self.out.push_back(Output::Persist(Persist::Incarnation(inc)));
        }
    }

    /// The one place gossip's outputs are read.
    fn drain_gossip(&mut self) {
        use gossip::{Event as G, Output as O};
        loop {
            match self.gossip.poll_output() {
                O::Transmit(t) => self.out.push_back(Output::Transmit(t)),
                O::Event(G::Store(change)) => self.follow(change),
                O::Event(G::WriteRefused { key, reason, .. }) => self.refused.push((key, reason)),
                O::Event(
                    e @ (G::MemberUp { .. } | G::MemberDown { .. } | G::LookupDone { .. } | G::Dropped { .. }),
                ) => self.out.push_back(Output::Event(Event::Gossip(e))),
                O::Timeout(at) => {
                    self.gossip_deadline = at;
                    break;
                }
            }
        }
    }

    /// Follows one store change into persistence, the DNS view and the
    /// provider feed.
    fn follow(&mut self, change: Change) {
        match &change {
            Change::Applied(entry) => {
                if entry.writer != self.gossip.id() {
                    let lag = self.now.wall_ms.saturating_sub(entry.version.wall_ms());
                    self.lag.count += 1;
                    self.lag.sum_ms = self.lag.sum_ms.saturating_add(lag);
                    self.lag.max_ms = self.lag.max_ms.max(lag);
                    self.lag.last_ms = lag;
                }
                if entry.ns == Namespace::DNS {
                    self.follow_dns(entry);
                }
                self.persist(Persist::Put(entry.clone()));
            }
            Change::Removed { ns, key } => {
                if *ns == Namespace::DNS {
                    if let Some((name, rtype)) = parse_dns_key(key) {
                        self.remove_from_view(name, rtype);
                    }
                }
                self.persist(Persist::Remove(*ns, key.clone()));
            }
        }
        let ns = match &change {
            Change::Applied(e) => e.ns,
            Change::Removed { ns, .. } => *ns,
        };
        if ns == Namespace::PROVIDERS {
            self.out.push_back(Output::Event(Event::Providers(change)));
        }
    }

    fn follow_dns(&mut self, entry: &Entry) {
        let Some((name, rtype)) = parse_dns_key(&entry.key) else {
            self.rejected_remote += 1;
            return;
        };
        if entry.deleted {
            self.remove_from_view(name, rtype);
            return;
        }
        match rrset_of(entry) {
            Some(set) => {
                self.view.put(set.clone());
                self.out.push_back(Output::Event(Event::View(ViewChange::Put(set))));
            }
            None => {
                // Counted; the getter tells the operator.
                self.rejected_remote += 1;
                self.remove_from_view(name, rtype);
            }
        }
    }

    fn remove_from_view(&mut self, name: Name, rtype: RType) {
        if self.view.remove_rrset(&name, rtype) {
            self.out.push_back(Output::Event(Event::View(ViewChange::Remove(name, rtype))));
        }
    }
}

/// The RRset an entry of the DNS namespace holds, if its value is readable
/// and agrees with its key (a peer must not plant a set under another name).
fn rrset_of(e: &Entry) -> Option<RRset> {
    let (name, rtype) = parse_dns_key(&e.key)?;
    let mut set = RRset::from_bytes(&e.value).ok()?;
    // The replicated expiry is the one that counts.
    if e.expires_ms != 0 {
        set.expires_at_ms = e.expires_ms;
    }
    (set.rtype == rtype && set.owner.to_lowercase() == name && set.data.iter().all(|d| d.rtype() == rtype))
        .then_some(set)
}
