//! The cluster member, without I/O: the gossip machine and its replicated
//! store, the DNS view kept from the store's change feed, and the
//! translation of API writes into replicated entries. Every call leaves
//! [`Effect`]s for the adapter to carry out (send, persist, mirror to the
//! UDP thread). Shared by every runtime adapter.

use crate::dns_udp::ViewUpdate;
use crate::persist::Op;
use bytes::Bytes;
use rumor_core::bt::metainfo::InfoHash;
use rumor_core::dns::{Name, RRset, RType, RecordStore};
use rumor_core::gossip::{Command, Config, Event, Gossip, Input, MemberState, Now, Output, PeerAddr};
use rumor_core::overlay::{self, Overlay, Provider};
use rumor_core::replica::{Change, Entry, Namespace, Refused};
use rumor_core::time::Instant;
use std::collections::VecDeque;

/// Why a write was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteError {
    /// It would break a DNS rule (CNAME beside other data).
    Conflict(String),
    /// The replicated store refused it (a limit).
    Refused(String),
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

/// Work for the adapter.
#[derive(Debug)]
pub enum Effect {
    /// Send one whole gossip message.
    Send(PeerAddr, Vec<u8>),
    /// Persist.
    Persist(Op),
    /// Update the UDP thread's replica.
    Mirror(ViewUpdate),
    /// A member came up or went down (for the log).
    Member(String),
    /// A lookup started with [`Cluster::lookup_providers`] ended, having
    /// received this many entries.
    LookupDone(u32, usize),
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

fn parse_dns_key(key: &[u8]) -> Option<(Name, RType)> {
    let (name, t) = key.split_at(key.len().checked_sub(2)?);
    Some((Name::from_wire(name).ok()?, RType(u16::from_be_bytes([t[0], t[1]]))))
}

/// One cluster member.
pub struct Cluster {
    gossip: Gossip,
    view: RecordStore,
    overlay: Overlay,
    overlay_swept_ms: u64,
    effects: VecDeque<Effect>,
    next_timeout: Instant,
    last_incarnation: u64,
    refused: Vec<(Bytes, Refused)>,
    rejected_remote: u64,
    /// Wall time of the input being handled.
    now_ms: u64,
    lag: Lag,
}

/// How long remote writes took to arrive: from the wall time in the
/// writer's version to when this node applied them.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
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

impl Cluster {
    /// A member with `node_id`, loaded with what the data directory held.
    pub fn new(config: Config, node_id: u64, now: Now, seed: u64, entries: Vec<Entry>, incarnation: u64) -> Cluster {
        let mut gossip = Gossip::new(config, node_id, now, seed);
        // Only a data directory that held something is an earlier run. A new
        // store knows its (empty) collection history, and peers serve each
        // other by delta only through such nodes: restoring nothing would
        // leave a cluster of fresh nodes unable to catch up a restarted one
        // (each takes the other's watermarks as older than the grace period)
        // once the pushes of what it missed are over.
        if !entries.is_empty() || incarnation > 0 {
            gossip.restore(entries, incarnation);
        }
        let mut view = RecordStore::new();
        for e in gossip.store().live(Namespace::DNS, now.wall_ms) {
            if let Some(set) = rrset_of(e) {
                view.put(set);
            }
        }
        let overlay = Overlay::from_entries(gossip.store().live(Namespace::PROVIDERS, now.wall_ms));
        let mut c = Cluster {
            gossip,
            view,
            overlay,
            overlay_swept_ms: now.wall_ms,
            effects: VecDeque::new(),
            next_timeout: now.at,
            last_incarnation: incarnation,
            refused: Vec::new(),
            rejected_remote: 0,
            now_ms: now.wall_ms,
            lag: Lag::default(),
        };
        c.drain();
        c
    }

    /// The DNS view: every live RRset the cluster holds.
    pub fn view(&self) -> &RecordStore {
        &self.view
    }

    /// The gossip machine (members, stats, the replicated store).
    pub fn gossip(&self) -> &Gossip {
        &self.gossip
    }

    /// Propagation lag of remote writes, as far as it can be known.
    pub fn lag(&self) -> Lag {
        self.lag
    }

    /// Remote DNS entries whose value could not be read (dropped).
    pub fn rejected_remote(&self) -> u64 {
        self.rejected_remote
    }

    /// When [`Cluster::timeout`] must next be called.
    pub fn next_timeout(&self) -> Instant {
        self.next_timeout
    }

    /// The next thing to do, if any.
    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    /// Contacts these addresses to join (or rejoin) the cluster.
    pub fn join(&mut self, now: Now, addrs: Vec<PeerAddr>) {
        self.now_ms = now.wall_ms;
        self.gossip.handle(now, Input::Command(Command::Join(addrs)));
        self.drain();
    }

    /// Tells peers we are leaving.
    pub fn leave(&mut self, now: Now) {
        self.now_ms = now.wall_ms;
        self.gossip.handle(now, Input::Command(Command::Leave));
        self.drain();
    }

    /// A gossip message arrived.
    pub fn receive(&mut self, now: Now, from: PeerAddr, bytes: Vec<u8>) {
        self.now_ms = now.wall_ms;
        self.gossip.handle(now, Input::Receive { from, bytes });
        self.drain();
    }

    /// The deadline from [`Cluster::next_timeout`] passed; also expires the
    /// view.
    pub fn timeout(&mut self, now: Now) {
        self.now_ms = now.wall_ms;
        self.gossip.handle(now, Input::Timeout);
        // Lookups skip expired providers already; this only frees memory.
        if now.wall_ms >= self.overlay_swept_ms + 10_000 {
            self.overlay.expire(now.wall_ms);
            self.overlay_swept_ms = now.wall_ms;
        }
        for (name, rtype) in self.view.expire(now.wall_ms) {
            self.effects.push_back(Effect::Mirror(ViewUpdate::Remove(name, rtype)));
        }
        self.drain();
    }

    /// Puts these RRsets and removes those, as this node's writes. The
    /// persistence effects it leaves must all be durable before the caller
    /// acknowledges.
    pub fn write(
        &mut self,
        now: Now,
        puts: Vec<RRset>,
        removes: Vec<(Name, RType)>,
    ) -> Result<WriteReport, WriteError> {
        self.now_ms = now.wall_ms;
        // A CNAME must stand alone at its name (RFC 1034 section 3.6.2).
        for set in &puts {
            let clash = self
                .view
                .rrsets_at(&set.owner, now.wall_ms)
                .map(|s| s.rtype)
                .filter(|t| *t != set.rtype && !removes.iter().any(|(n, r)| r == t && n.eq_ignore_case(&set.owner)))
                .find(|t| set.rtype == RType::CNAME || *t == RType::CNAME);
            if let Some(t) = clash {
                return Err(WriteError::Conflict(format!(
                    "{} already has {t} data, and a CNAME cannot stand beside other data",
                    crate::records::display_name(&set.owner)
                )));
            }
        }
        let mut report = WriteReport::default();
        self.refused.clear();
        for (name, rtype) in removes {
            if self.view.get(&name, rtype, now.wall_ms).is_some() {
                report.removed += 1;
                let key = dns_key(&name, rtype);
                self.gossip.handle(now, Input::Command(Command::Delete { ns: Namespace::DNS, key }));
            }
        }
        for set in puts {
            if self.view.get(&set.owner, set.rtype, now.wall_ms).is_some() {
                report.replaced += 1;
            } else {
                report.inserted += 1;
            }
            let key = dns_key(&set.owner, set.rtype);
            let value = Bytes::from(set.to_bytes());
            let write = Command::Write { ns: Namespace::DNS, key, value, expires_ms: set.expires_at_ms };
            self.gossip.handle(now, Input::Command(write));
        }
        self.drain();
        if let Some((key, reason)) = self.refused.first() {
            let what = parse_dns_key(key).map_or_else(|| "a record".to_string(), |(n, t)| format!("{n} {t}"));
            return Err(WriteError::Refused(format!("the replicated store refused {what}: {reason:?}")));
        }
        Ok(report)
    }

    /// Removes every RRset of `name`; returns how many there were.
    pub fn delete_name(&mut self, now: Now, name: &Name) -> Result<WriteReport, WriteError> {
        let types: Vec<(Name, RType)> =
            self.view.rrsets_at(name, now.wall_ms).map(|s| (name.clone(), s.rtype)).collect();
        self.write(now, Vec::new(), types)
    }

    /// The overlay's provider index.
    pub fn overlay(&self) -> &Overlay {
        &self.overlay
    }

    /// Records (or refreshes) `provider` of `ih` until `provider.expires_ms`,
    /// or forgets it when it `stopped`; `completed` also records that it
    /// finished the torrent once (kept `snatch_ttl_ms`).
    pub fn announce(
        &mut self,
        now: Now,
        ih: &InfoHash,
        provider: Provider,
        stopped: bool,
        completed: bool,
        snatch_ttl_ms: u64,
    ) {
        self.now_ms = now.wall_ms;
        let key = Bytes::from(overlay::provider_key(ih, provider.addr));
        let cmd = if stopped {
            Command::Delete { ns: Namespace::PROVIDERS, key }
        } else {
            let value = Bytes::from(overlay::provider_value(&provider));
            Command::Write { ns: Namespace::PROVIDERS, key, value, expires_ms: provider.expires_ms }
        };
        self.gossip.handle(now, Input::Command(cmd));
        if completed {
            let key = Bytes::from(overlay::snatch_key(ih, provider.addr));
            let write = Command::Write {
                ns: Namespace::PROVIDERS,
                key,
                value: Bytes::new(),
                expires_ms: now.wall_ms + snatch_ttl_ms,
            };
            self.gossip.handle(now, Input::Command(write));
        }
        self.drain();
    }

    /// Asks a few live members for the providers of `ih` they hold (a node
    /// that just joined may not have them yet); ends with
    /// [`Effect::LookupDone`] carrying `id`.
    pub fn lookup_providers(&mut self, now: Now, id: u32, ih: &InfoHash) {
        self.now_ms = now.wall_ms;
        let lookup = Command::Lookup { id, ns: Namespace::PROVIDERS, prefix: Bytes::copy_from_slice(&ih.0) };
        self.gossip.handle(now, Input::Command(lookup));
        self.drain();
    }

    /// Known members: id, address, state.
    pub fn members(&self) -> Vec<(u64, String, MemberState)> {
        self.gossip.members().map(|(id, addr, st)| (id, addr.0.clone(), st)).collect()
    }

    fn drain(&mut self) {
        loop {
            match self.gossip.poll_output() {
                Output::Transmit(t) => self.effects.push_back(Effect::Send(t.to, t.bytes)),
                Output::Event(Event::Store(change)) => self.follow(change),
                Output::Event(Event::WriteRefused { key, reason, .. }) => self.refused.push((key, reason)),
                Output::Event(Event::MemberUp { id, addr }) => {
                    self.effects.push_back(Effect::Member(format!("member {id:016x} at {} is up", addr.0)))
                }
                Output::Event(Event::MemberDown { id, addr }) => {
                    self.effects.push_back(Effect::Member(format!("member {id:016x} at {} is down", addr.0)))
                }
                Output::Event(Event::LookupDone { id, found }) => {
                    self.effects.push_back(Effect::LookupDone(id, found));
                }
                Output::Event(Event::Dropped { from, reason }) => {
                    tracing::debug!(from = %from.0, "gossip message dropped: {reason:?}");
                }
                Output::Timeout(at) => {
                    self.next_timeout = at;
                    break;
                }
            }
        }
        let inc = self.gossip.incarnation();
        if inc != self.last_incarnation {
            self.last_incarnation = inc;
            self.effects.push_back(Effect::Persist(Op::Incarnation(inc)));
        }
    }

    /// Follows one store change into persistence and the DNS view.
    fn follow(&mut self, change: Change) {
        self.overlay.follow(&change);
        match change {
            Change::Applied(entry) => {
                if entry.writer != self.gossip.id() {
                    // HLC versions carry the writer's wall clock in ms.
                    let lag = self.now_ms.saturating_sub(entry.version.0 >> 16);
                    self.lag.count += 1;
                    self.lag.sum_ms = self.lag.sum_ms.saturating_add(lag);
                    self.lag.max_ms = self.lag.max_ms.max(lag);
                    self.lag.last_ms = lag;
                }
                if entry.ns == Namespace::DNS {
                    self.follow_dns(&entry);
                }
                self.effects.push_back(Effect::Persist(Op::Put(entry)));
            }
            Change::Removed { ns, key } => {
                if ns == Namespace::DNS {
                    if let Some((name, rtype)) = parse_dns_key(&key) {
                        self.remove_from_view(name, rtype);
                    }
                }
                self.effects.push_back(Effect::Persist(Op::Remove(ns, key)));
            }
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
                self.effects.push_back(Effect::Mirror(ViewUpdate::Put(set)));
            }
            None => {
                self.rejected_remote += 1;
                tracing::warn!("dropping an unreadable DNS entry for {name} {rtype} from writer {:016x}", entry.writer);
                self.remove_from_view(name, rtype);
            }
        }
    }

    fn remove_from_view(&mut self, name: Name, rtype: RType) {
        if self.view.remove_rrset(&name, rtype) {
            self.effects.push_back(Effect::Mirror(ViewUpdate::Remove(name, rtype)));
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
