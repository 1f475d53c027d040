//! Anti-entropy and push: gossip rounds, the push of fresh writes, summary
//! → digest → delta exchanges, and full state transfers for a peer behind
//! by more than the tombstone grace period.
//!
//! Every function here is part of [`Gossip`]; the coordinator
//! ([`machine`](super::machine)) calls them from its timer, its commands
//! and its dispatch of received messages.

use std::collections::BTreeSet;

use bytes::Bytes;

use super::machine::{Gossip, Sender};
use super::wire::{Body, PeerAddr, Pushed};
use crate::replica::{Delta, Digest, FullChunk, Namespace, NodeId};
use crate::time::{Duration, Instant};

/// A fresh entry still being pushed.
#[derive(Clone, Debug)]
pub(super) struct Hot {
    pub(super) pushed: Pushed,
    /// Rounds it will still be pushed in (1..=`push_rounds`).
    pub(super) rounds_left: u32,
}

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
}

/// Upper bound of an encoded digest of `n` writers.
fn digest_bytes(n: usize) -> usize {
    n * 20 + 24
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
        self.hot.push_back(Hot { pushed: p, rounds_left: self.cfg.push_rounds });
    }

    // ----- the round -----

    /// One gossip round: expire entries, settle a restart's history, push
    /// what is hot and, every `sync_every_rounds`, send the summary.
    pub(super) fn round(&mut self) {
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
            for h in self.hot.iter() {
                let len = h.pushed.entry.encoded_len_max() + 10;
                if v.len() >= self.cfg.entries_per_message_max || bytes + len > budget {
                    break;
                }
                bytes += len;
                v.push(h.pushed.clone());
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
    }

    /// A full transfer that made no progress until its deadline is dropped.
    pub(super) fn expire_full(&mut self) {
        if let Some(f) = &self.full {
            if self.now.at >= f.deadline {
                self.full = None;
            }
        }
    }

    // ----- received messages -----

    /// Pushed entries, and maybe the sender's summary: apply what is new
    /// (and push it on), and answer a differing summary with our digest.
    pub(super) fn on_syn(&mut self, from: Sender, summary: Option<(u64, u32)>, push: Vec<Pushed>) {
        let wall = self.now.wall_ms;
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
        let differs = summary
            .is_some_and(|(hash, writers)| hash != self.store.seen_hash() || writers as usize != self.store.writers());
        if differs {
            let d = self.my_digest();
            self.send(from.addr, Some(from.id), Body::Digest { digest: d });
        }
    }

    /// A peer's watermarks: send what it lacks with our own digest, or a
    /// full transfer if it is behind by more than the grace period.
    pub(super) fn on_digest(&mut self, from: Sender, digest: Digest) {
        if self.store.needs_full(&digest, self.now.wall_ms) {
            self.peer_behind(from);
        } else {
            let delta = self.delta_for(&digest);
            let mine = self.my_digest();
            self.send(from.addr, Some(from.id), Body::Delta { delta, digest: Some(mine) });
        }
    }

    /// Entries a peer thinks we lack; the first leg of an exchange carries
    /// its digest, and we answer with what it lacks.
    pub(super) fn on_delta(&mut self, from: Sender, delta: Delta, digest: Option<Digest>) {
        let wall = self.now.wall_ms;
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
                let back = self.delta_for(&d);
                if !back.entries.is_empty() || !back.seen.is_empty() {
                    self.send(from.addr, Some(from.id), Body::Delta { delta: back, digest: None });
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
        self.send(from.addr, Some(from.id), Body::Full { chunk });
    }

    /// A chunk of the full transfer we are taking (from anyone else: ignored).
    pub(super) fn on_full(&mut self, from: Sender, chunk: FullChunk) {
        let wall = self.now.wall_ms;
        let Some(mut t) = self.full.take() else {
            return;
        };
        if t.peer != from.addr {
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
            self.send(from.addr, Some(from.id), Body::NeedFull);
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
            });
            self.send(peer, peer_id, Body::FullRequest { after: None });
        }
    }

    /// Our digest, starting at a random writer so that large watermark maps
    /// travel in windows that cover everything over time.
    pub(super) fn my_digest(&mut self) -> Digest {
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
