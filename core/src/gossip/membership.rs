//! SWIM membership: probes and indirect probes, suspicion with a timeout,
//! refutation by incarnation, piggybacked updates, joins and re-announces.
//!
//! Every function here is part of [`Gossip`]; the coordinator
//! ([`machine`](super::machine)) calls them from its timer and its
//! dispatch of received messages.

use super::machine::{Event, Gossip, LiveInfo, Output, Sender, BOOTSTRAP_MAX, SENDER_HINTS};
use super::wire::{Body, MemberState, MemberUpdate, PeerAddr};
use crate::replica::NodeId;
use crate::time::Instant;

/// What we know of one member.
#[derive(Clone, Debug)]
pub(super) struct Member {
    pub(super) addr: PeerAddr,
    pub(super) incarnation: u64,
    pub(super) state: MemberState,
    /// When it entered `state` (dead members are forgotten after
    /// `dead_forget_after`; the oldest dead one is evicted first).
    pub(super) since: Instant,
    /// Its index in `Gossip::live_info` while alive or suspect, else
    /// `NOT_LIVE`. Kept here rather than in a second map keyed by id: one
    /// map walk less per change of state, and one map less per node
    /// (issue 16).
    pub(super) live_pos: u32,
}

/// `Member::live_pos` of a member that is not in the live list.
pub(super) const NOT_LIVE: u32 = u32::MAX;

/// Our probe in flight.
#[derive(Clone, Debug)]
pub(super) struct Probe {
    pub(super) target: NodeId,
    pub(super) seq: u32,
    /// Past it without an ack, others are asked to probe.
    pub(super) direct_deadline: Instant,
    pub(super) indirect_sent: bool,
    pub(super) acked: bool,
}

/// An indirect probe we send for another member.
#[derive(Clone, Debug)]
pub(super) struct Relay {
    /// Who asked, and under which of its sequence numbers.
    pub(super) requester: PeerAddr,
    pub(super) seq: u32,
    pub(super) target: NodeId,
    /// Forgotten at the first probe tick past it.
    pub(super) deadline: Instant,
}

/// A membership update waiting to be piggybacked.
#[derive(Clone, Debug)]
pub(super) struct PendingUpdate {
    pub(super) update: MemberUpdate,
    /// Messages it rode on so far; it retires at the retransmit limit.
    pub(super) sent: u32,
}

/// A suspicion: unless refuted, member `id` is declared dead at `deadline`.
/// Ordered by deadline first (the field order), so the set's first is the
/// next to fire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Suspicion {
    pub(super) deadline: Instant,
    pub(super) id: NodeId,
    /// The incarnation suspected: a refuted and re-suspected member gets a
    /// new suspicion, and this one is skipped when it fires.
    pub(super) incarnation: u64,
}

/// The smallest `k >= 1` with `10^k >= n`.
pub(super) fn log10_ceil(n: usize) -> u32 {
    let mut k = 1u32;
    let mut p = 10usize;
    while p < n {
        k += 1;
        p = p.saturating_mul(10);
    }
    k
}

impl Gossip {
    // ----- commands -----

    /// `Command::Join`: remember the bootstrap addresses (bounded) and ask
    /// each to let us in.
    pub(super) fn join(&mut self, addrs: Vec<PeerAddr>) {
        for a in addrs {
            if a != self.cfg.advertise && !self.bootstrap.contains(&a) && self.bootstrap.len() < BOOTSTRAP_MAX {
                self.bootstrap.push(a);
            }
        }
        for a in self.bootstrap.clone() {
            self.send(a, None, Body::Join);
        }
    }

    /// `Command::Leave`: announce it to a few live members, then go quiet.
    pub(super) fn leave(&mut self) {
        self.incarnation += 1;
        let me = self.self_update(MemberState::Left);
        self.queue_update(me);
        for id in self.pick_live(self.cfg.fanout.max(3), None) {
            let addr = self.members[&id].addr.clone();
            self.send(addr, Some(id), Body::Leave);
        }
        self.left = true;
    }

    pub(super) fn self_update(&self, state: MemberState) -> MemberUpdate {
        MemberUpdate { id: self.me, addr: self.cfg.advertise.clone(), incarnation: self.incarnation, state }
    }

    // ----- received messages -----

    /// The sender of any message is alive at its incarnation (or left, if
    /// the message says so): learn or refresh it, first-hand.
    pub(super) fn learn_sender(&mut self, id: NodeId, addr: &PeerAddr, incarnation: u64, leaving: bool) {
        let state = if leaving { MemberState::Left } else { MemberState::Alive };
        // A live member's incarnation is also in `live_info`: when the hint
        // finds the sender there, the member map need not be walked.
        let hint = sender_hint_slot(id);
        let pos = self.sender_hint[hint] as usize;
        if self.live_info.get(pos).is_some_and(|l| l.id == id && !leaving && incarnation <= l.incarnation) {
            return;
        }
        let news = match self.members.get(&id) {
            None => true,
            Some(m) => {
                if m.live_pos != NOT_LIVE {
                    self.sender_hint[hint] = m.live_pos;
                }
                incarnation > m.incarnation || leaving
            }
        };
        if news {
            self.apply_update(MemberUpdate { id, addr: addr.clone(), incarnation, state }, true);
        }
    }

    /// Where `id` is in the live list, if its hint slot says so (checked):
    /// found for most recent senders, since `learn_sender` sets the hint
    /// whenever it walks the member map for one. `None` says nothing
    /// about whether `id` is live.
    pub(super) fn hinted_live_pos(&self, id: NodeId) -> Option<usize> {
        let pos = self.sender_hint[sender_hint_slot(id)] as usize;
        self.live_info.get(pos).is_some_and(|l| l.id == id).then_some(pos)
    }

    /// A probe: ack it, and if its summary differs from ours, start an
    /// anti-entropy exchange with our digest.
    pub(super) fn on_ping(&mut self, from: Sender, seq: u32, hash: u64, writers: u32) {
        self.send(from.reply_to.clone(), Some(from.id), Body::Ack { seq });
        if (hash, writers) != self.store.settled_summary() {
            let d = self.my_digest();
            let recent = self.recent_hint();
            self.send(from.reply_to, Some(from.id), Body::Digest { digest: d, recent });
        }
    }

    /// An ack of our probe, or of a probe we relay for someone.
    pub(super) fn on_ack(&mut self, from: NodeId, seq: u32) {
        if let Some(pr) = self.probe.as_mut() {
            if pr.seq == seq && pr.target == from {
                pr.acked = true;
            }
        }
        if let Some(r) = self.relays.remove(&seq) {
            if r.target == from {
                self.send(r.requester, None, Body::IndirectAck { seq: r.seq, target: r.target });
            }
        }
    }

    /// Someone asks us to probe `target` for it (bounded by `relays_max`).
    pub(super) fn on_ping_req(&mut self, from: Sender, seq: u32, target: NodeId, target_addr: PeerAddr) {
        if self.relays.len() < self.cfg.relays_max && target != self.me {
            self.seq = self.seq.wrapping_add(1);
            let my_seq = self.seq;
            self.relays.insert(
                my_seq,
                Relay { requester: from.reply_to, seq, target, deadline: self.now.at + self.cfg.probe_interval },
            );
            let body = self.ping(my_seq);
            self.send(target_addr, Some(target), body);
        }
    }

    /// Someone else reached the target of our probe.
    pub(super) fn on_indirect_ack(&mut self, seq: u32, target: NodeId) {
        if let Some(pr) = self.probe.as_mut() {
            if pr.seq == seq && pr.target == target {
                pr.acked = true;
            }
        }
    }

    /// A newcomer: answer with a sample of live members and ourselves.
    pub(super) fn on_join(&mut self, from: Sender) {
        let sample = self.pick_live(self.cfg.join_sample_max, Some(from.id));
        let members = sample
            .into_iter()
            .filter(|id| *id != from.id)
            .take(self.cfg.join_sample_max.saturating_sub(1))
            .map(|id| {
                let m = &self.members[&id];
                MemberUpdate { id, addr: m.addr.clone(), incarnation: m.incarnation, state: m.state }
            })
            .chain(std::iter::once(self.self_update(MemberState::Alive)))
            .collect();
        self.send(from.reply_to, Some(from.id), Body::JoinReply { members });
    }

    /// The members a node we joined through sent us.
    pub(super) fn on_join_reply(&mut self, members: Vec<MemberUpdate>) {
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
                        live_pos: NOT_LIVE,
                    },
                );
                self.out.push_back(Output::Event(Event::MemberUp { id: u.id, addr: u.addr }));
            }
        }
    }

    // ----- timers -----

    /// Suspicions whose deadline passed: a member still suspect at the
    /// incarnation suspected is declared dead.
    pub(super) fn expire_suspicions(&mut self) {
        let now = self.now.at;
        while let Some(&s) = self.suspects.first() {
            if s.deadline > now {
                break;
            }
            self.suspects.pop_first();
            if let Some(m) = self.members.get(&s.id) {
                // Only the suspicion still in force: a refuted and later
                // re-suspected member gets its full timeout again.
                if m.state == MemberState::Suspect && m.incarnation == s.incarnation {
                    let u = MemberUpdate {
                        id: s.id,
                        addr: m.addr.clone(),
                        incarnation: m.incarnation,
                        state: MemberState::Dead,
                    };
                    self.apply_update(u, true);
                }
            }
        }
    }

    pub(super) fn probe_tick(&mut self) {
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

    pub(super) fn indirect_probe(&mut self, p: &Probe) {
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

    /// True if some member is dead or has left: every other member is in
    /// the live list. Spares `reannounce` (every 5 s on every node) its
    /// walks of the member map when there is none (they were most of it).
    fn has_dead_members(&self) -> bool {
        self.live_info.len() < self.members.len()
    }

    pub(super) fn reannounce(&mut self) {
        // Forget members dead for long.
        let forget = self.cfg.dead_forget_after;
        let now = self.now.at;
        let old: Vec<NodeId> = if self.has_dead_members() {
            self.members
                .iter()
                .filter(|(_, m)| {
                    matches!(m.state, MemberState::Dead | MemberState::Left)
                        && now.saturating_duration_since(m.since) >= forget
                })
                .map(|(id, _)| *id)
                .take(64)
                .collect()
        } else {
            Vec::new()
        };
        for id in old {
            self.remove_member(id);
        }
        // While we know nobody alive, keep knocking on the whole bootstrap
        // list; otherwise on one bootstrap address that is not a live member
        // (a group that formed while cut off from it must still find the
        // rest of the cluster once the partition heals).
        if self.live_info.is_empty() {
            for a in self.bootstrap.clone() {
                self.send(a, None, Body::Join);
            }
        } else if !self.bootstrap.is_empty() {
            // One pass over the live members' addresses (a vector, not the
            // member map): with a large view this runs on every node every
            // few seconds.
            let mut live = vec![false; self.bootstrap.len()];
            for info in &self.live_info {
                if let Some(k) = self.bootstrap.iter().position(|a| *a == info.addr) {
                    live[k] = true;
                }
            }
            let strangers: Vec<PeerAddr> =
                self.bootstrap.iter().zip(&live).filter(|(_, l)| !**l).map(|(a, _)| a.clone()).collect();
            if !strangers.is_empty() {
                let a = strangers[self.rng.index(strangers.len())].clone();
                self.send(a, None, Body::Join);
            }
        }
        // Re-announce ourselves to one member believed dead: if the
        // partition healed, it learns we (and it) are alive and refutes.
        let dead: Vec<NodeId> = if self.has_dead_members() {
            self.members.iter().filter(|(_, m)| m.state == MemberState::Dead).map(|(id, _)| *id).collect()
        } else {
            Vec::new()
        };
        if !dead.is_empty() {
            let id = dead[self.rng.index(dead.len())];
            let addr = self.members[&id].addr.clone();
            self.send(addr, Some(id), Body::Join);
        }
    }

    pub(super) fn ping(&self, seq: u32) -> Body {
        let (hash, writers) = self.store.settled_summary();
        Body::Ping { seq, hash, writers }
    }

    // ----- the member table -----

    /// Inserts or replaces a member, keeping the list of live ids (for O(1)
    /// random choice) in step.
    fn put_member(&mut self, id: NodeId, mut m: Member) {
        let live = matches!(m.state, MemberState::Alive | MemberState::Suspect);
        // A replaced member keeps its place in the live list until
        // `set_live` moves it.
        m.live_pos = self.members.get(&id).map_or(NOT_LIVE, |old| old.live_pos);
        self.members.insert(id, m);
        self.set_live(id, live);
    }

    fn remove_member(&mut self, id: NodeId) {
        self.set_live(id, false);
        self.members.remove(&id);
    }

    /// Adds `id` (which must be in `members`) to the live list or takes it
    /// out, keeping every member's `live_pos` in step.
    /// A live member's address and suspicion are copied into `live_info`
    /// here too (the member may have been replaced with a new address or
    /// state while staying live).
    fn set_live(&mut self, id: NodeId, live: bool) {
        let Some(m) = self.members.get_mut(&id) else { return };
        let info =
            LiveInfo { id, addr: m.addr.clone(), suspect: m.state == MemberState::Suspect, incarnation: m.incarnation };
        match (live, m.live_pos) {
            (true, NOT_LIVE) => {
                m.live_pos = self.live_info.len() as u32;
                self.live_info.push(info);
            }
            (true, pos) => self.live_info[pos as usize] = info,
            (false, pos) if pos != NOT_LIVE => {
                m.live_pos = NOT_LIVE;
                let pos = pos as usize;
                self.live_info.swap_remove(pos);
                if let Some(moved) = self.live_info.get(pos).map(|l| l.id) {
                    if let Some(mm) = self.members.get_mut(&moved) {
                        mm.live_pos = pos as u32;
                    }
                }
            }
            _ => {}
        }
    }

    /// Up to `n` distinct random live members, not `except`.
    pub(super) fn pick_live(&mut self, n: usize, except: Option<NodeId>) -> Vec<NodeId> {
        self.pick_live_at(n, except).into_iter().map(|i| self.live_info[i].id).collect()
    }

    /// The same choice as [`pick_live`](Self::pick_live), as places in the
    /// live list (valid until the membership next changes).
    pub(super) fn pick_live_at(&mut self, n: usize, except: Option<NodeId>) -> Vec<usize> {
        let len = self.live_info.len();
        let mut out = Vec::with_capacity(n);
        if len == 0 || n == 0 {
            return out;
        }
        if len <= n + 1 {
            for (i, live) in self.live_info.iter().enumerate() {
                if Some(live.id) != except && out.len() < n {
                    out.push(i);
                }
            }
            self.rng.shuffle(&mut out);
            return out;
        }
        let mut tries = 0;
        while out.len() < n && tries < 4 * n + 8 {
            tries += 1;
            let i = self.rng.index(len);
            if Some(self.live_info[i].id) != except && !out.contains(&i) {
                out.push(i);
            }
        }
        out
    }

    fn evict_one(&mut self) -> bool {
        if self.members.len() == self.live_info.len() {
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

    // ----- dissemination -----

    fn retransmit_limit(&self) -> u32 {
        self.cfg.retransmit_mult * log10_ceil(self.members.len() + 1)
    }

    fn queue_update(&mut self, u: MemberUpdate) {
        if let Some(old) = self.updates.remove(&u.id) {
            self.update_order.remove(&(old.sent, u.id));
        }
        if self.updates.len() >= self.cfg.updates_pending_max {
            // Drop the most-transmitted update to make room.
            if let Some((_, id)) = self.update_order.pop_last() {
                self.updates.remove(&id);
            }
        }
        self.update_order.insert((0, u.id));
        self.updates.insert(u.id, PendingUpdate { update: u, sent: 0 });
    }

    /// Up to `k` updates to piggyback, least-sent first; each retires once
    /// sent the retransmit limit.
    pub(super) fn take_updates(&mut self, k: usize) -> Vec<MemberUpdate> {
        let limit = self.retransmit_limit();
        let mut picked = Vec::with_capacity(k);
        while picked.len() < k {
            let Some((sent, id)) = self.update_order.pop_first() else {
                break;
            };
            let Some(p) = self.updates.get_mut(&id) else {
                continue;
            };
            debug_assert_eq!(p.sent, sent);
            p.sent += 1;
            picked.push((p.update.clone(), p.sent, id));
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
    pub(super) fn apply_update(&mut self, u: MemberUpdate, first_hand: bool) -> bool {
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
        let m =
            Member { addr: u.addr.clone(), incarnation: u.incarnation, state: u.state, since: now, live_pos: NOT_LIVE };
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
            self.suspects.insert(Suspicion { deadline: now + t, id: u.id, incarnation: u.incarnation });
        }
        if announce {
            self.queue_update(u);
        }
        true
    }
}

/// The slot of `Gossip::sender_hint` for `id` (Fibonacci hashing: ids in a
/// test or a simulation are consecutive, real ones random).
fn sender_hint_slot(id: NodeId) -> usize {
    (id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - SENDER_HINTS.trailing_zeros())) as usize
}
