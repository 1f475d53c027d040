//! A thin wrapper over the core's member machine for the overlay client
//! (`bt/overlay_member.rs`), which joins the gossip with no DNS and no disk.
//! The cluster rules themselves live in [`rumor_core::member`] and
//! [`rumor_core::overlay::tracker`]; this file only keeps the overlay
//! client's calls working until it drives those machines directly (it is
//! in another part of issue #11), and then goes.

use bytes::Bytes;
use rumor_core::bt::metainfo::InfoHash;
use rumor_core::gossip::{self, Config, Now, PeerAddr};
use rumor_core::member::{self, Member};
use rumor_core::overlay::{self, Overlay, Provider};
use rumor_core::replica::{Entry, Namespace};
use rumor_core::time::Instant;
use std::collections::VecDeque;

/// Work for the overlay client (which reads only some of it).
#[derive(Debug)]
#[allow(dead_code)]
pub enum Effect {
    /// Send one whole gossip message.
    Send(PeerAddr, Vec<u8>),
    /// Persist (the overlay client has no disk and ignores it).
    Persist(member::Persist),
    /// A DNS view change (the overlay client has no DNS and ignores it).
    Mirror(member::ViewChange),
    /// A member came up or went down (for the log).
    Member(String),
    /// A lookup ended, having received this many entries.
    LookupDone(u32, usize),
}

/// The overlay client's member: the core member plus the provider index
/// its change feed keeps.
pub struct Cluster {
    member: Member,
    overlay: Overlay,
    effects: VecDeque<Effect>,
    next_timeout: Instant,
}

impl Cluster {
    /// A member with `node_id`, loaded with what a data directory held.
    pub fn new(config: Config, node_id: u64, now: Now, seed: u64, entries: Vec<Entry>, incarnation: u64) -> Cluster {
        let mut member = Member::new(member::Config { gossip: config, node_id }, now, seed);
        member.restore(entries, incarnation);
        let overlay = Overlay::from_entries(member.store().live(Namespace::PROVIDERS, now.wall_ms));
        let mut c = Cluster { member, overlay, effects: VecDeque::new(), next_timeout: now.at };
        c.drain();
        c
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
        self.step(now, member::Input::Command(member::Command::Join(addrs)));
    }

    /// A gossip message arrived.
    pub fn receive(&mut self, now: Now, from: PeerAddr, bytes: Vec<u8>) {
        self.step(now, member::Input::Receive { from, bytes });
    }

    /// The deadline from [`Cluster::next_timeout`] passed.
    pub fn timeout(&mut self, now: Now) {
        // Lookups skip expired providers already; this only frees memory.
        self.overlay.expire(now.wall_ms);
        self.step(now, member::Input::Timeout);
    }

    /// The provider index.
    pub fn overlay(&self) -> &Overlay {
        &self.overlay
    }

    /// Records (or refreshes) `provider` of `ih`, or forgets it when it
    /// `stopped`; `completed` also records a snatch for `snatch_ttl_ms`.
    pub fn announce(
        &mut self,
        now: Now,
        ih: &InfoHash,
        provider: Provider,
        stopped: bool,
        completed: bool,
        snatch_ttl_ms: u64,
    ) {
        let key = Bytes::from(overlay::provider_key(ih, provider.addr));
        let cmd = if stopped {
            gossip::Command::Delete { ns: Namespace::PROVIDERS, key }
        } else {
            let value = Bytes::from(overlay::provider_value(&provider));
            gossip::Command::Write { ns: Namespace::PROVIDERS, key, value, expires_ms: provider.expires_ms }
        };
        self.step(now, member::Input::Command(member::Command::Gossip(cmd)));
        if completed {
            let key = Bytes::from(overlay::snatch_key(ih, provider.addr));
            let expires_ms = now.wall_ms + snatch_ttl_ms;
            let write = gossip::Command::Write { ns: Namespace::PROVIDERS, key, value: Bytes::new(), expires_ms };
            self.step(now, member::Input::Command(member::Command::Gossip(write)));
        }
    }

    /// Asks a few live members for the providers of `ih`; ends with
    /// [`Effect::LookupDone`] carrying `id`.
    pub fn lookup_providers(&mut self, now: Now, id: u32, ih: &InfoHash) {
        let lookup = gossip::Command::Lookup { id, ns: Namespace::PROVIDERS, prefix: Bytes::copy_from_slice(&ih.0) };
        self.step(now, member::Input::Command(member::Command::Gossip(lookup)));
    }

    fn step(&mut self, now: Now, input: member::Input) {
        self.member.handle(now, input);
        self.drain();
    }

    fn drain(&mut self) {
        loop {
            let effect = match self.member.poll_output() {
                member::Output::Transmit(t) => Effect::Send(t.to, t.bytes),
                member::Output::Persist(p) => Effect::Persist(p),
                member::Output::Event(member::Event::View(v)) => Effect::Mirror(v),
                member::Output::Event(member::Event::Providers(change)) => {
                    self.overlay.follow(&change);
                    continue;
                }
                member::Output::Event(member::Event::MemberUp { id, addr }) => {
                    Effect::Member(format!("member {id:016x} at {} is up", addr.0))
                }
                member::Output::Event(member::Event::MemberDown { id, addr }) => {
                    Effect::Member(format!("member {id:016x} at {} is down", addr.0))
                }
                member::Output::Event(member::Event::LookupDone { id, found }) => Effect::LookupDone(id, found),
                member::Output::Event(member::Event::Dropped { from, reason }) => {
                    tracing::debug!(from = %from.0, "gossip message dropped: {reason:?}");
                    continue;
                }
                // This member takes no client writes (Command::Write).
                member::Output::Event(member::Event::Written { .. } | member::Event::Persisting { .. }) => continue,
                member::Output::Timeout(at) => {
                    self.next_timeout = at;
                    break;
                }
            };
            self.effects.push_back(effect);
        }
    }
}
