//! Lookups: ask a few live members for their live entries under a key
//! prefix, merge what they send, and report when every one answered or the
//! timeout passed.
//!
//! Every function here is part of [`Gossip`]; the coordinator
//! ([`machine`](super::machine)) calls them.

use bytes::Bytes;

use super::machine::{Event, Gossip, Output, Sender};
use super::wire::Body;
use crate::replica::{Entry, Namespace};
use crate::time::Instant;

/// A lookup waiting for answers.
#[derive(Clone, Copy, Debug)]
pub(super) struct Lookup {
    /// It ends, answered or not, at this instant.
    pub(super) deadline: Instant,
    /// Members asked that have not answered yet (at least 1: a lookup ends
    /// when the last one answers).
    pub(super) awaiting: usize,
    /// Entries received so far (merged or already known).
    pub(super) found: usize,
}

impl Gossip {
    /// `Command::Lookup`: ask `lookup_fanout` live members; with none to
    /// ask, too many lookups in flight, or `id` already in use, it ends at
    /// once with nothing found.
    pub(super) fn start_lookup(&mut self, id: u32, ns: Namespace, prefix: Bytes) {
        let asked = if self.lookups.len() >= self.cfg.lookups_max || self.lookups.contains_key(&id) {
            Vec::new()
        } else {
            self.pick_live(self.cfg.lookup_fanout, None)
        };
        if asked.is_empty() {
            self.out.push_back(Output::Event(Event::LookupDone { id, found: 0 }));
        } else {
            let deadline = self.now.at + self.cfg.lookup_timeout;
            self.lookups.insert(id, Lookup { deadline, awaiting: asked.len(), found: 0 });
            for peer_id in asked {
                let addr = self.members[&peer_id].addr.clone();
                self.send(addr, Some(peer_id), Body::Lookup { id, ns, prefix: prefix.clone() });
            }
        }
    }

    /// A peer's lookup: answer with at most one message's worth, in key
    /// order.
    pub(super) fn on_lookup(&mut self, from: Sender, id: u32, ns: Namespace, prefix: Bytes) {
        let budget = self.entry_budget();
        let mut bytes = 0usize;
        let entries: Vec<_> = self
            .store
            .live_with_prefix(ns, &prefix, self.now.wall_ms)
            .take(self.cfg.entries_per_message_max)
            .take_while(|e| {
                bytes += e.encoded_len_max();
                bytes <= budget
            })
            .cloned()
            .collect();
        self.send(from.reply_to, Some(from.id), Body::Found { id, entries });
    }

    /// An answer to one of our lookups.
    pub(super) fn on_found(&mut self, id: u32, entries: Vec<Entry>) {
        let wall = self.now.wall_ms;
        // Only answers to our own lookups: unsolicited entries are not
        // taken this way.
        let Some(l) = self.lookups.get_mut(&id) else {
            return;
        };
        l.found += entries.len();
        l.awaiting = l.awaiting.saturating_sub(1);
        let done = (l.awaiting == 0).then_some(l.found);
        for e in entries {
            if self.store.apply(e, wall).is_ok() {
                self.stats.entries_applied += 1;
            }
        }
        if let Some(found) = done {
            self.lookups.remove(&id);
            self.out.push_back(Output::Event(Event::LookupDone { id, found }));
        }
    }

    /// The soonest lookup deadline.
    pub(super) fn next_lookup_deadline(&self) -> Option<Instant> {
        self.lookups.values().map(|l| l.deadline).min()
    }

    /// Lookups past their deadline end with what they found.
    pub(super) fn expire_lookups(&mut self) {
        let now = self.now.at;
        let expired: Vec<u32> = self.lookups.iter().filter(|(_, l)| l.deadline <= now).map(|(id, _)| *id).collect();
        for id in expired {
            if let Some(l) = self.lookups.remove(&id) {
                self.out.push_back(Output::Event(Event::LookupDone { id, found: l.found }));
            }
        }
    }
}
