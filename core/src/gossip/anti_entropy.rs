//! Anti-entropy and push: gossip rounds, the push of fresh writes, summary
//! → digest → delta exchanges, and full state transfers for a peer behind
//! by more than the tombstone grace period.
//!
//! # Which summaries differ
//!
//! Two nodes start an exchange when their summaries differ. The summary
//! compared is the store's [settled
//! summary](crate::replica::Store::settled_summary): a write enters it
//! `summary_settle_ms` (1.5 s) after its version's time, on every node at
//! the same instant. Under a steady write load nearly every pair of full
//! summaries differed, only because a push was still on its way, and each
//! comparison cost two digests: at 1,000 simulated nodes with 2,000
//! providers and random node ids, 912 of 1,000 nodes had distinct full
//! summaries at the end of the run but only 28 distinct settled ones, and
//! anti-entropy fell from 41 to 4 KB per node per second. The price is
//! that a write a node missed is noticed that much later.
//!
//! Every function here is part of [`Gossip`]; the coordinator
//! ([`machine`](super::machine)) calls them from its timer, its commands
//! and its dispatch of received messages.
//!
//! # A node back from an absence
//!
//! Deletes are tombstones collected after the grace period. A node that was
//! down (or cut off) when a delete was issued and came back after its
//! tombstone was collected everywhere still holds the old copy, and nothing
//! it can hear tells it the copy is dead: waiting does not help, however
//! long. Cassandra's answer is an operator's rule ("never bring back a node
//! down longer than gc_grace_seconds without a repair"); Serf/Consul reap
//! departed members and their tombstones only after a cluster-wide
//! interval. Ours is the repair, done by the node itself:
//!
//! * A restarted node does not know its collection history
//!   ([`Store::history_complete`](crate::replica::Store::history_complete)
//!   is false; everything it collected or remembered in memory is gone).
//!   Until a full state transfer from a peer that does know its own, it
//!   serves nothing it holds: no deltas, no full transfers, no answer to a
//!   digest but pulling that transfer. It still takes writes and pushes
//!   them (they are fresh by construction), and takes what complete peers
//!   send. It pulls the transfer from the first complete peer whose
//!   digest, or first-leg delta, reaches it (whichever side's round came
//!   first). Not covered: a restored copy whose summary equals every
//!   peer's starts no exchange, so the node waits for the next write
//!   anywhere to differ before it pulls.
//! * The transfer settles every held entry: one the sender has seen (within
//!   its watermark of the entry's writer) but no longer holds was deleted
//!   and collected there, and is dropped; one the sender has not seen is
//!   kept. That is the rule that keeps both properties: an acknowledged
//!   write that never left the node before it crashed is durable here and
//!   unseen everywhere else, so it is kept and spreads once the node serves
//!   again; a copy that did reach the others cannot come back, because they
//!   have seen it. A write never propagated but overwritten later by a
//!   delete elsewhere loses to that delete's tombstone, which the transfer
//!   carries while the sender remembers it (held, or in its bounded
//!   graveyard of collected ones). Dropping instead every own entry older
//!   than the grace period would lose exactly those unpropagated writes.
//! * Requests of the transfer are sent again every `full_transfer_retry`
//!   while unanswered, so loss does not keep a node out of service for long.
//! * A restarted node takes its own history as complete without a transfer
//!   only when no peer could vouch for it: for `restore_wait` it heard
//!   peers and none knew its history (the whole cluster restarted). Never
//!   for having waited a grace period: the chaos seeds 3157 and 8027 were a
//!   node whose transfers kept failing, that did so with a stale copy still
//!   held, and then served it to a peer that had itself restarted and so
//!   forgotten the delete.

use std::collections::BTreeSet;

use bytes::Bytes;

use super::machine::{Gossip, Sender};
use super::wire::{Body, PeerAddr, Pushed};
use crate::replica::{Delta, Digest, Entry, FullChunk, Namespace, NodeId, Shared, Version};
use crate::time::{Duration, Instant};

/// A fresh entry still being pushed. The entry is the store's own copy
/// when it is the one pushed (nearly always), so a hot entry costs a
/// pointer rather than a second copy: the simulator holds ten thousand
/// nodes' queues, which took 9 KB a node as copies.
#[derive(Clone, Debug)]
pub(super) struct Hot {
    pub(super) entry: Shared,
    /// The writer's version before this write.
    pub(super) prev: Version,
    /// Rounds it will still be pushed in (1..=`push_rounds`).
    pub(super) rounds_left: u32,
}

/// A writer we know we are behind on: some node holds `version` of it and
/// our watermark is below. Our next digest window starts at it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Behind {
    pub(super) writer: NodeId,
    pub(super) version: Version,
    /// Digests started at it so far: after `BEHIND_TRIES` it is dropped (a
    /// writer whose chain of versions broke when it restarted stays
    /// "behind" everywhere until it serves a delta; it must not keep the
    /// window forever).
    pub(super) tries: u8,
}

/// Digests started at one lagging writer before it is given up.
const BEHIND_TRIES: u8 = 3;

/// A full state transfer we are taking from `peer`.
#[derive(Clone, Debug)]
pub(super) struct Transfer {
    pub(super) peer: PeerAddr,
    /// The last key received: the next request continues after it.
    pub(super) after: Option<(Namespace, Bytes)>,
    /// Keys the transfer carried (at most `entries_max`): whatever else we
    /// hold that the sender has seen was deleted there.
    pub(super) received: BTreeSet<(Namespace, Bytes)>,
    /// Abandoned past it without progress.
    pub(super) deadline: Instant,
    /// The request for `after` is sent again at this instant if no chunk
    /// answered it.
    pub(super) retry_at: Instant,
}

/// Upper bound of an encoded digest of `n` writers: at most 20 bytes a
/// writer (two 10-byte varints, see `replica::marks`), the list's length
/// and base version, and the window's bounds.
fn digest_bytes(n: usize) -> usize {
    n * 20 + 40
}

impl Gossip {
    // ----- push -----

    /// A local write: push it to `fanout` peers right away, and keep it hot
    /// for the next rounds.
    pub(super) fn push_fresh(&mut self, p: Pushed) {
        let targets = self.pick_live(self.cfg.fanout, None);
        for id in targets {
            let addr = self.members[&id].addr.clone();
            // Push only: the summary travels on anti-entropy rounds and probes.
            let body = Body::Syn { summary: None, push: vec![p.clone()], recent: Vec::new() };
            self.send(addr, Some(id), body);
        }
        self.note_recent(p.entry.writer);
        self.make_hot(p);
    }

    fn make_hot(&mut self, p: Pushed) {
        if self.cfg.push_rounds == 0 {
            return;
        }
        if self.hot.len() >= self.cfg.hot_max {
            self.hot.pop_front();
        }
        let entry = match self.store.held(p.entry.ns, &p.entry.key) {
            Some(held) if **held == p.entry => held.clone(),
            _ => Shared::new(p.entry),
        };
        self.hot.push_back(Hot { entry, prev: p.prev, rounds_left: self.cfg.push_rounds });
    }

    // ----- the round -----

    /// One gossip round: expire entries, settle a restart's history, push
    /// what is hot and, every `sync_every_rounds`, send the summary.
    pub(super) fn round(&mut self) {
        self.store.expire(self.now.wall_ms);
        self.settle_restored_history();
        let hot: Vec<Pushed> = {
            let mut bytes = 0usize;
            let budget = self.entry_budget();
            let mut v = Vec::new();
            for h in self.hot.iter() {
                let len = h.entry.encoded_len_max() + 10;
                if v.len() >= self.cfg.entries_per_message_max || bytes + len > budget {
                    break;
                }
                bytes += len;
                v.push(Pushed { entry: Entry::clone(&h.entry), prev: h.prev });
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
        let targets = self.pick_live_at(n, None);
        // One target of an anti-entropy round gets the summary; the others
        // (and every target of a push-only round) get the push alone.
        let summary = self.store.settled_summary();
        // The targets' addresses first: sending changes no membership, but
        // it borrows the machine.
        let targets: Vec<(NodeId, PeerAddr, bool)> = targets
            .into_iter()
            .map(|i| {
                let info = &self.live_info[i];
                (info.id, info.addr.clone(), info.suspect)
            })
            .collect();
        let sent = hot.len();
        // Every target gets the same push, lent to each message in turn.
        let mut push = hot;
        for (k, (id, addr, suspect)) in targets.into_iter().enumerate() {
            let with_summary = sync_now && k == 0;
            let recent = if with_summary { self.recent_hint() } else { Vec::new() };
            let body = Body::Syn { summary: with_summary.then_some(summary), push, recent };
            // Only a suspect target needs its member entry (to be told so).
            let lent = self.send_lent(addr, suspect.then_some(id), body);
            push = if let Body::Syn { push, .. } = lent { push } else { Vec::new() };
        }
        for h in self.hot.iter_mut().take(sent) {
            h.rounds_left -= 1;
        }
        // Entries sent this round go to the back so others get their turn.
        for _ in 0..sent {
            if let Some(h) = self.hot.pop_front() {
                if h.rounds_left > 0 {
                    self.hot.push_back(h);
                }
            }
        }
        crate::queues::shrink_idle(&mut self.hot);
    }

    /// A restarted node takes its own history as complete only when no peer
    /// can vouch for it: for `restore_wait` it has heard peers, and none of
    /// them knew its collection history (the whole cluster restarted). It
    /// never does so merely for having waited: a stale copy it holds stays
    /// stale however long it waits (see the module docs).
    fn settle_restored_history(&mut self) {
        let Some(t) = self.restored_at else {
            return;
        };
        if self.store.history_complete() {
            self.restored_at = None;
            return;
        }
        let quiet_since = self.complete_heard_at.map_or(t, |h| h.max(t));
        let heard_others = self.peer_heard_at.is_some_and(|h| h > quiet_since);
        if heard_others && self.now.at.saturating_duration_since(quiet_since) >= self.cfg.restore_wait {
            self.store.mark_history_complete();
            self.restored_at = None;
        }
    }

    /// A full transfer that made no progress until its deadline is
    /// dropped; until then, an unanswered request is sent again every
    /// `full_transfer_retry`.
    pub(super) fn expire_full(&mut self) {
        let now = self.now.at;
        let Some(f) = self.full.as_mut() else {
            return;
        };
        if now >= f.deadline {
            self.full = None;
        } else if now >= f.retry_at {
            f.retry_at = now + self.cfg.full_transfer_retry;
            let (peer, after) = (f.peer.clone(), f.after.clone());
            self.stats.full_requests_resent += 1;
            self.send(peer, None, Body::FullRequest { after });
        }
    }

    // ----- received messages -----

    /// Pushed entries, and maybe the sender's summary: apply what is new
    /// (and push it on), and answer a differing summary with our digest,
    /// which starts at a writer we now know we are behind on (a push whose
    /// `prev` we lack, or a recent writer the sender holds newer).
    pub(super) fn on_syn(
        &mut self,
        from: Sender,
        summary: Option<(u64, u32)>,
        push: Vec<Pushed>,
        recent: Vec<(NodeId, Version)>,
    ) {
        let wall = self.now.wall_ms;
        for pushed in push {
            let w = pushed.entry.writer;
            let v = pushed.entry.version;
            let fresh = self.store.apply(pushed.entry.clone(), wall).is_ok();
            if self.store.seen_of(w) >= pushed.prev {
                self.store.set_seen(w, v);
            } else {
                // We missed the writer's previous write.
                self.mark_behind(w, pushed.prev);
            }
            if fresh {
                self.stats.entries_applied += 1;
                self.note_recent(w);
                self.make_hot(pushed);
            }
        }
        let differs = summary.is_some_and(|s| s != self.store.settled_summary());
        if differs {
            for (w, v) in recent {
                self.mark_behind(w, v);
            }
            let d = self.my_digest();
            let recent = self.recent_hint();
            self.send(from.reply_to, Some(from.id), Body::Digest { digest: d, recent });
        }
    }

    /// A peer's watermarks: send what it lacks with our own digest, or a
    /// full transfer if it is behind by more than the grace period. The
    /// writers it lists as recent that we are behind on start our digest.
    pub(super) fn on_digest(&mut self, from: Sender, digest: Digest, recent: Vec<(NodeId, Version)>) {
        for (w, v) in recent {
            self.mark_behind(w, v);
        }
        if !self.store.history_complete() {
            // We may hold copies whose deletes were collected while we were
            // away: we serve nothing until a full transfer has sorted them
            // out, and take it from this peer if it can vouch for it.
            if from.complete {
                self.start_full(from.addr, Some(from.id));
            }
            return;
        }
        if self.store.needs_full(&digest, self.now.wall_ms) {
            self.peer_behind(from);
        } else {
            // Writers the peer has seen further than we have: our digest
            // starts at them, so the delta that answers it carries what we
            // lack there. (A write missed by every push has no later push
            // to give it away, and by the time the settled summaries differ
            // it may be older than the recent writers listed.)
            for &(w, v) in &digest.seen {
                if v > self.store.seen_of(w) {
                    self.mark_behind(w, v);
                }
            }
            let delta = self.delta_for(&digest);
            let mine = self.my_digest();
            self.send(from.reply_to, Some(from.id), Body::Delta { delta, digest: Some(mine) });
        }
    }

    /// Entries a peer thinks we lack; the first leg of an exchange carries
    /// its digest, and we answer with what it lacks.
    pub(super) fn on_delta(&mut self, from: Sender, delta: Delta, digest: Option<Digest>) {
        let wall = self.now.wall_ms;
        if !from.complete {
            // A node that does not know its history sends no delta (see
            // `on_digest`); one that does is from an older build or lying.
            return;
        }
        match digest {
            Some(d) => {
                // The first leg of an exchange: judge the sender by its
                // digest before taking anything from it. A sender that
                // may have missed collected deletes could hand us
                // entries whose tombstones are gone here.
                if self.store.needs_full(&d, wall) {
                    self.peer_behind(from);
                    return;
                }
                self.stats.entries_applied += self.store.apply_delta(delta, wall) as u64;
                if !self.store.history_complete() {
                    // Take what a peer that knows its history sends, but
                    // serve nothing back before a full transfer, and ask
                    // this peer for one now, as a digest from it would
                    // have: when its anti-entropy round reached us before
                    // ours reached it, this delta is all we would hear
                    // from it, and once the delta made our summaries
                    // equal nothing else would ever start the transfer.
                    self.start_full(from.addr, Some(from.id));
                    return;
                }
                let back = self.delta_for(&d);
                if !back.entries.is_empty() || !back.seen.is_empty() {
                    self.send(from.reply_to, Some(from.id), Body::Delta { delta: back, digest: None });
                }
            }
            None => {
                // The second leg: we judged this peer by its digest
                // when it asked us for this delta.
                self.stats.entries_applied += self.store.apply_delta(delta, wall) as u64;
            }
        }
    }

    /// A peer says we are too far behind: take a full transfer from it.
    pub(super) fn on_need_full(&mut self, from: Sender) {
        // Only a node that knows its whole collection history is a
        // safe source: a restarted one may hold entries whose
        // deletes were collected while it was down.
        if from.complete {
            self.start_full(from.addr, Some(from.id));
        }
    }

    /// Serve the next chunk of a full transfer.
    pub(super) fn on_full_request(&mut self, from: Sender, after: Option<(Namespace, Bytes)>) {
        let chunk = self.store.full_chunk(
            after.as_ref(),
            self.now.wall_ms,
            self.cfg.entries_per_message_max,
            self.entry_budget(),
            self.cfg.store.writers_max.min(self.entry_budget() / 40),
        );
        self.send(from.reply_to, Some(from.id), Body::Full { after, chunk });
    }

    /// A chunk of the full transfer we are taking, for the cursor we are at
    /// (from anyone else, or for another cursor: ignored).
    pub(super) fn on_full(&mut self, from: Sender, after: Option<(Namespace, Bytes)>, chunk: FullChunk) {
        let wall = self.now.wall_ms;
        let Some(mut t) = self.full.take() else {
            return;
        };
        if t.peer != from.addr || t.after != after {
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
                t.retry_at = self.now.at + self.cfg.full_transfer_retry;
                self.full = Some(t);
                self.send(from.addr, Some(from.id), Body::FullRequest { after: Some(next) });
            }
            None => {
                self.store.finish_full(&t.received, &chunk.seen, &chunk.floors, chunk.complete, wall);
                self.stats.full_transfers += 1;
                self.full_done_at = Some(self.now.at);
            }
        }
    }

    // ----- helpers -----

    /// The peer looks behind us by more than the grace period. If we know
    /// our collection history, tell it to take a full transfer from us. If
    /// we do not (we restarted), we may be the stale one: pull a full
    /// transfer from it if it knows its history; otherwise exchange nothing.
    fn peer_behind(&mut self, from: Sender) {
        if self.store.history_complete() {
            self.send(from.reply_to, Some(from.id), Body::NeedFull);
        } else if from.complete {
            self.start_full(from.addr, Some(from.id));
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
                retry_at: self.now.at + self.cfg.full_transfer_retry,
            });
            self.send(peer, peer_id, Body::FullRequest { after: None });
        }
    }

    /// Our digest. A large watermark map travels in windows: the window
    /// starts at the first writer we know we are behind on, if any (that
    /// writer then goes to the back of the list, so the next digest tries
    /// the next one), otherwise at a random writer, so that windows cover
    /// everything over time.
    pub(super) fn my_digest(&mut self) -> Digest {
        let n = self.store.writers().max(1);
        // Drawn in every case, so a run whose digests cover every writer
        // makes the same random choices as before lagging writers existed.
        let start = self.rng.index(n);
        while let Some(b) = self.behind.front() {
            if self.store.seen_of(b.writer) >= b.version || b.tries >= BEHIND_TRIES {
                self.behind.pop_front();
                continue;
            }
            let mut b = self.behind.pop_front().expect("front exists");
            b.tries += 1;
            self.behind.push_back(b);
            return self.store.digest_from(b.writer, self.cfg.digest_writers_max);
        }
        self.store.digest(start, self.cfg.digest_writers_max)
    }

    /// Remembers that some node holds `version` of `writer`, if our
    /// watermark is below it (bounded: the oldest gives way).
    pub(super) fn mark_behind(&mut self, writer: NodeId, version: Version) {
        if self.store.seen_of(writer) >= version || self.cfg.recent_writers_max == 0 {
            return;
        }
        if let Some(b) = self.behind.iter_mut().find(|b| b.writer == writer) {
            b.version = b.version.max(version);
            return;
        }
        if self.behind.len() >= self.cfg.recent_writers_max {
            self.behind.pop_front();
        }
        self.behind.push_back(Behind { writer, version, tries: 0 });
    }

    /// A fresh entry of `writer` reached us (or we wrote it).
    fn note_recent(&mut self, writer: NodeId) {
        let cap = 4 * self.cfg.recent_writers_max;
        if cap == 0 {
            return;
        }
        if self.recent.len() >= cap {
            self.recent.pop_front();
        }
        self.recent.push_back((writer, self.now.at));
    }

    /// The writers to list beside our summary (see
    /// `Config::recent_writers_max`): none while our watermark map fits
    /// in one digest (a peer's digest then covers every writer anyway);
    /// otherwise the writers of entries that reached us within
    /// `recent_writers_window` but before the last `push_rounds` rounds and
    /// the settling time (younger ones cannot be what made the settled
    /// summaries differ), newest first, each once, with the newest version
    /// we hold.
    pub(super) fn recent_hint(&mut self) -> Vec<(NodeId, Version)> {
        let now = self.now.at;
        let window = self.cfg.recent_writers_window;
        // Forget what is past the window.
        while self.recent.front().is_some_and(|(_, t)| now.saturating_duration_since(*t) > window) {
            self.recent.pop_front();
        }
        if self.store.writers() <= self.cfg.digest_writers_max {
            return Vec::new();
        }
        // Entries still being pushed, or not yet in the settled summary,
        // are not what a differing summary is about.
        let pushing = self
            .cfg
            .gossip_interval
            .saturating_mul(u64::from(self.cfg.push_rounds))
            .max(Duration::from_millis(self.cfg.store.summary_settle_ms));
        let mut out: Vec<(NodeId, Version)> = Vec::new();
        for (w, t) in self.recent.iter().rev() {
            if out.len() >= self.cfg.recent_writers_max {
                break;
            }
            if now.saturating_duration_since(*t) < pushing || out.iter().any(|(o, _)| o == w) {
                continue;
            }
            out.push((*w, self.store.max_of(*w)));
        }
        out
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
