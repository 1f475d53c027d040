//! The choker: whom we upload to. While leeching, tit-for-tat over the
//! peers interested in us (best download rate from them), with
//! anti-snubbing; while seeding, round robin (each interested peer holds a
//! regular slot for [`ChokerConfig::seed_slot_time`] or until it received
//! [`ChokerConfig::seed_slot_bytes`], then the one that waited longest
//! takes it), as libtorrent's default `round_robin` seeding choker does
//! with its piece quota: ranking by upload rate would keep the slots for
//! the fastest downloaders and leave slow ones the optimistic slot only,
//! which stretches the end of a swarm. Plus one optimistic slot rotated every
//! [`ChokerConfig::optimistic_interval`] to the interested peer with the
//! fewest pieces. Ties between peers that rank the same go to the one
//! with fewer pieces too: the end of a swarm waits for its slowest peer.
//!
//! While seeding, regular slots no interested peer takes are lent to
//! peers not interested yet, so a new peer can request as soon as it is
//! interested.
//!
//! Pure: call [`Choker::decide`] every 10 s of core time (and when a peer
//! comes or goes, or [`Choker::seed_turn_over`] says a seeding turn is
//! over) with fresh [`PeerStats`]; it returns the set to unchoke. Choke
//! everyone else.

use std::collections::{BTreeMap, BTreeSet};

use super::picker::PeerKey;
use crate::rand::Rng;
use crate::time::{Duration, Instant};

/// Tuning of a [`Choker`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChokerConfig {
    /// Regular (tit-for-tat) unchoke slots.
    pub unchoke_slots: usize,
    /// How long an optimistic unchoke lasts before it rotates.
    pub optimistic_interval: Duration,
    /// A peer we want data from that sent none for this long is snubbed.
    pub snub_timeout: Duration,
    /// Peers connected for less than this are three times as likely to win
    /// the optimistic slot (they have nothing to trade yet).
    pub new_peer_age: Duration,
    /// While seeding, how long a peer holds a regular slot before it goes
    /// to the interested peer that waited longest.
    pub seed_slot_time: Duration,
    /// While seeding, a peer also gives its regular slot up once it has
    /// received this many bytes in its turn (libtorrent's
    /// `seeding_piece_quota`, in bytes). A seeder that feeds its pieces
    /// to many peers, a little each, gives every part of a swarm
    /// something new to trade; one that feeds four peers for 30 s leaves
    /// the rest of the swarm with nothing the others lack.
    pub seed_slot_bytes: u64,
}

impl Default for ChokerConfig {
    /// Four slots, 30 s optimistic rotation, 60 s snub timeout, 60 s "new",
    /// seeding slots of 30 s or 256 KiB.
    fn default() -> Self {
        ChokerConfig {
            unchoke_slots: 4,
            optimistic_interval: Duration::from_secs(30),
            snub_timeout: Duration::from_secs(60),
            new_peer_age: Duration::from_secs(60),
            seed_slot_time: Duration::from_secs(30),
            seed_slot_bytes: 256 * 1024,
        }
    }
}

/// What the choker needs to know about one peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerStats {
    /// The caller's handle.
    pub key: PeerKey,
    /// The peer is interested in our pieces (only these get unchoked).
    pub peer_interested: bool,
    /// Since when we are interested in the peer (`None`: we are not).
    pub am_interested_since: Option<Instant>,
    /// When the peer last sent us block data.
    pub last_data_at: Option<Instant>,
    /// When the connection was established.
    pub connected_at: Instant,
    /// Our recent download rate from the peer, bytes per second.
    pub download_rate: u64,
    /// Our recent upload rate to the peer, bytes per second.
    pub upload_rate: u64,
    /// Pieces the peer has.
    pub peer_pieces: u32,
    /// Block bytes we sent the peer since it connected.
    pub uploaded: u64,
}

impl PeerStats {
    /// True if we want data from the peer and it sent none for `timeout`.
    pub fn is_snubbed(&self, now: Instant, timeout: Duration) -> bool {
        match self.am_interested_since {
            None => false,
            Some(since) => {
                let last = self.last_data_at.map_or(since, |t| t.max(since));
                now.saturating_duration_since(last) >= timeout
            }
        }
    }
}

/// Tit-for-tat (leeching) or round-robin (seeding) choker with one
/// optimistic slot.
#[derive(Clone, Debug)]
pub struct Choker {
    config: ChokerConfig,
    optimistic: Option<PeerKey>,
    optimistic_until: Instant,
    /// Seeding: the peers holding a regular slot, since when, and what
    /// we had sent each when its turn began.
    seed_slots: BTreeMap<PeerKey, (Instant, u64)>,
    /// Seeding: when each peer last lost its regular slot (absent: never
    /// held one, so it goes first). Both maps only keep keys of the peers
    /// passed to the last [`Choker::decide`], so they are bounded by the
    /// connections.
    seed_served: BTreeMap<PeerKey, Instant>,
    rng: Rng,
}

impl Choker {
    /// A choker with no optimistic peer yet.
    pub fn new(config: ChokerConfig, now: Instant, seed: u64) -> Choker {
        Choker {
            config,
            optimistic: None,
            optimistic_until: now,
            seed_slots: BTreeMap::new(),
            seed_served: BTreeMap::new(),
            rng: Rng::new(seed),
        }
    }

    /// The current optimistic unchoke, if any.
    pub fn optimistic(&self) -> Option<PeerKey> {
        self.optimistic
    }

    /// The peers to unchoke now. While leeching the regular slots go to
    /// the best download rates from peers that do not snub us (ties to the
    /// fewer pieces, then the lower key); while seeding they go round
    /// robin (see the module doc).
    pub fn decide(&mut self, now: Instant, seeding: bool, peers: &[PeerStats]) -> BTreeSet<PeerKey> {
        let mut out = if seeding {
            let mut out = self.round_robin(now, peers);
            // Regular slots no interested peer holds are lent to peers not
            // interested yet (the longest connected first), as libtorrent
            // and BEP 3 do: a peer already unchoked requests the moment it
            // is interested. transmission 3.00 decides interest on a 10 s
            // timer, batches its `interested` for up to 2 s when the peer
            // chokes it, and asks for blocks a second after an unchoke;
            // unchoked, it sends `interested` and its requests together.
            // A lent slot is no regular slot: once the peer is interested,
            // the round robin decides.
            let free = self.config.unchoke_slots.saturating_sub(out.len());
            let mut idle: Vec<&PeerStats> = peers.iter().filter(|p| !p.peer_interested).collect();
            idle.sort_by_key(|p| (p.connected_at, p.key));
            out.extend(idle.iter().take(free).map(|p| p.key));
            out
        } else {
            self.seed_slots.clear();
            self.seed_served.clear();
            let mut ranked: Vec<&PeerStats> =
                peers.iter().filter(|p| p.peer_interested && !p.is_snubbed(now, self.config.snub_timeout)).collect();
            ranked.sort_by(|a, b| {
                b.download_rate.cmp(&a.download_rate).then(a.peer_pieces.cmp(&b.peer_pieces)).then(a.key.cmp(&b.key))
            });
            ranked.iter().take(self.config.unchoke_slots).map(|p| p.key).collect()
        };

        let current_ok = self.optimistic.is_some_and(|k| {
            now < self.optimistic_until && !out.contains(&k) && peers.iter().any(|p| p.key == k && p.peer_interested)
        });
        if !current_ok {
            // The slot goes to the peer furthest behind (fewest pieces),
            // a newcomer three times as likely among equals: tit-for-tat
            // alone starves the peers with little to trade, and a swarm
            // ends when its last peer does (`sim swarm`, 1,000 leechers:
            // 1.14x the Kumar-Ross bound with a uniform draw, 1.11x with
            // this). The holder whose turn just ended is not drawn again
            // while anyone else waits, so a peer that claims to have
            // nothing cannot keep the slot.
            let previous = self.optimistic.take();
            let mut candidates: Vec<&PeerStats> =
                peers.iter().filter(|p| p.peer_interested && !out.contains(&p.key)).collect();
            if candidates.len() > 1 {
                candidates.retain(|p| Some(p.key) != previous);
            }
            if let Some(least) = candidates.iter().map(|p| p.peer_pieces).min() {
                candidates.retain(|p| p.peer_pieces == least);
            }
            let weight = |p: &PeerStats| {
                if now.saturating_duration_since(p.connected_at) < self.config.new_peer_age {
                    3
                } else {
                    1
                }
            };
            let total: u64 = candidates.iter().map(|p| weight(p)).sum();
            if total > 0 {
                let mut r = self.rng.below(total);
                for p in candidates {
                    let w = weight(p);
                    if r < w {
                        self.optimistic = Some(p.key);
                        break;
                    }
                    r -= w;
                }
                self.optimistic_until = now + self.config.optimistic_interval;
            }
        }
        if let Some(k) = self.optimistic {
            out.insert(k);
        }
        out
    }

    /// Seeding's regular slots: holders keep theirs until it has lasted
    /// [`ChokerConfig::seed_slot_time`] or they received
    /// [`ChokerConfig::seed_slot_bytes`] in it; free slots go to the
    /// interested peers that never held one, then to those whose last turn
    /// ended longest ago (ties to the fewer pieces, the faster upload, then
    /// the lower key). A holder whose turn is up competes as one just
    /// served, so with no one waiting it keeps its slot.
    fn round_robin(&mut self, now: Instant, peers: &[PeerStats]) -> BTreeSet<PeerKey> {
        let present: BTreeSet<PeerKey> = peers.iter().map(|p| p.key).collect();
        self.seed_served.retain(|k, _| present.contains(k));
        let interested: BTreeMap<PeerKey, &PeerStats> =
            peers.iter().filter(|p| p.peer_interested).map(|p| (p.key, p)).collect();
        let holders: Vec<(PeerKey, (Instant, u64))> = self.seed_slots.iter().map(|(k, t)| (*k, *t)).collect();
        let mut kept: BTreeMap<PeerKey, (Instant, u64)> = BTreeMap::new();
        for (k, (since, sent_before)) in holders {
            let Some(p) = interested.get(&k) else {
                self.seed_served.insert(k, now);
                continue;
            };
            if self.turn_is_over(now, p, since, sent_before) {
                self.seed_served.insert(k, now);
            } else {
                kept.insert(k, (since, sent_before));
            }
        }
        let mut waiting: Vec<&PeerStats> =
            interested.values().copied().filter(|p| !kept.contains_key(&p.key)).collect();
        waiting.sort_by(|a, b| {
            let served = |p: &PeerStats| self.seed_served.get(&p.key).copied();
            served(a)
                .cmp(&served(b))
                .then(a.peer_pieces.cmp(&b.peer_pieces))
                .then(b.upload_rate.cmp(&a.upload_rate))
                .then(a.key.cmp(&b.key))
        });
        for p in waiting {
            if kept.len() >= self.config.unchoke_slots {
                break;
            }
            // A holder whose turn was up and who wins again starts a new
            // turn from now, so it yields at its end if someone waits.
            kept.insert(p.key, (now, p.uploaded));
        }
        self.seed_slots = kept;
        self.seed_slots.keys().copied().collect()
    }

    /// A seeding turn that began at `since`, when we had sent the holder
    /// `sent_before`, has lasted its time or carried its bytes.
    fn turn_is_over(&self, now: Instant, holder: &PeerStats, since: Instant, sent_before: u64) -> bool {
        now.saturating_duration_since(since) >= self.config.seed_slot_time
            || holder.uploaded.saturating_sub(sent_before) >= self.config.seed_slot_bytes
    }

    /// True while seeding if a regular slot's turn is over (by time or by
    /// bytes) and an interested peer without a slot waits for it: the
    /// caller should run [`Choker::decide`] now rather than at its next
    /// round.
    pub fn seed_turn_over(&self, now: Instant, peers: &[PeerStats]) -> bool {
        let over = peers.iter().any(|p| {
            self.seed_slots
                .get(&p.key)
                .is_some_and(|&(since, sent_before)| self.turn_is_over(now, p, since, sent_before))
        });
        over && peers.iter().any(|p| p.peer_interested && !self.seed_slots.contains_key(&p.key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(key: u64, down: u64, up: u64) -> PeerStats {
        PeerStats {
            key,
            peer_interested: true,
            am_interested_since: None,
            last_data_at: None,
            connected_at: Instant::ZERO,
            download_rate: down,
            upload_rate: up,
            peer_pieces: 0,
            uploaded: 0,
        }
    }

    fn t(s: u64) -> Instant {
        Instant::ZERO + Duration::from_secs(s)
    }

    #[test]
    fn the_fastest_uploaders_to_us_get_the_regular_slots_while_leeching() {
        let mut c = Choker::new(ChokerConfig::default(), t(0), 1);
        let peers: Vec<_> = (0..10).map(|k| peer(k, k * 100, 1000 - k)).collect();
        let set = c.decide(t(100), false, &peers);
        assert_eq!(set.len(), 5);
        for k in 6..10 {
            assert!(set.contains(&k));
        }
        let opt = c.optimistic().unwrap();
        assert!(opt < 6);
    }

    #[test]
    fn while_seeding_the_fastest_downloaders_go_first() {
        let mut c = Choker::new(ChokerConfig::default(), t(0), 1);
        let peers: Vec<_> = (0..10).map(|k| peer(k, k * 100, 1000 - k)).collect();
        let set = c.decide(t(100), true, &peers);
        for k in 0..4 {
            assert!(set.contains(&k));
        }
    }

    #[test]
    fn while_seeding_every_interested_peer_gets_a_regular_slot_in_turn() {
        let mut c = Choker::new(ChokerConfig::default(), t(0), 1);
        // Twelve peers, the first four much faster: rate ranking would keep
        // them in the regular slots for ever.
        let peers: Vec<_> = (0..12).map(|k| peer(k, 0, if k < 4 { 1_000_000 } else { 10 })).collect();
        let mut regular_turns: BTreeMap<PeerKey, u32> = BTreeMap::new();
        for round in 0..9 {
            c.decide(t(10 * round), true, &peers);
            for k in c.seed_slots.keys() {
                *regular_turns.entry(*k).or_default() += 1;
            }
            assert_eq!(c.seed_slots.len(), 4);
        }
        // 90 s at 30 s a turn: three turns of four slots cover all twelve.
        assert_eq!(regular_turns.len(), 12, "{regular_turns:?}");
        assert!(regular_turns.values().all(|n| *n == 3), "{regular_turns:?}");
    }

    #[test]
    fn while_seeding_a_holder_keeps_its_slot_when_no_one_waits() {
        let mut c = Choker::new(ChokerConfig::default(), t(0), 1);
        let peers: Vec<_> = (0..3).map(|k| peer(k, 0, 5)).collect();
        for round in 0..10 {
            let set = c.decide(t(10 * round), true, &peers);
            assert_eq!(set, (0..3).collect());
        }
    }

    #[test]
    fn while_seeding_a_holder_yields_once_it_received_its_bytes_if_someone_waits() {
        let config = ChokerConfig::default();
        let mut c = Choker::new(config, t(0), 1);
        let mut peers: Vec<_> = (0..6).map(|k| peer(k, 0, 5)).collect();
        c.decide(t(0), true, &peers);
        let holders: BTreeSet<PeerKey> = c.seed_slots.keys().copied().collect();
        assert_eq!(holders.len(), 4);
        assert!(!c.seed_turn_over(t(1), &peers), "no turn is over yet");
        // One holder got one byte short of its quota, another all of it.
        let mut it = holders.iter();
        let (short, full) = (*it.next().unwrap(), *it.next().unwrap());
        for p in &mut peers {
            if p.key == short {
                p.uploaded = config.seed_slot_bytes - 1;
            } else if p.key == full {
                p.uploaded = config.seed_slot_bytes;
            }
        }
        assert!(c.seed_turn_over(t(1), &peers));
        let set = c.decide(t(1), true, &peers);
        assert!(set.contains(&short) && !c.seed_slots.contains_key(&full), "{set:?}");
        // The slot went to one of the two that never held one.
        assert!(c.seed_slots.keys().any(|k| !holders.contains(k)));
        // With no one else interested, a holder past its quota keeps its
        // slot and no round is asked for.
        let alone: Vec<_> = peers.iter().filter(|p| holders.contains(&p.key)).copied().collect();
        let mut c = Choker::new(config, t(0), 1);
        c.decide(t(0), true, &alone);
        let alone: Vec<_> = alone.iter().map(|p| PeerStats { uploaded: p.uploaded + (1 << 30), ..*p }).collect();
        assert!(!c.seed_turn_over(t(1), &alone));
        assert_eq!(c.decide(t(1), true, &alone), holders);
    }

    #[test]
    fn while_seeding_a_peer_that_leaves_frees_its_slot_at_once() {
        let mut c = Choker::new(ChokerConfig::default(), t(0), 1);
        let mut peers: Vec<_> = (0..6).map(|k| peer(k, 0, 5)).collect();
        c.decide(t(0), true, &peers);
        let holder = *c.seed_slots.keys().next().unwrap();
        peers.retain(|p| p.key != holder);
        c.decide(t(1), true, &peers);
        assert_eq!(c.seed_slots.len(), 4);
        assert!(!c.seed_slots.contains_key(&holder));
        assert!(c.seed_served.len() <= peers.len());
    }

    #[test]
    fn uninterested_peers_are_never_unchoked_while_leeching() {
        let mut c = Choker::new(ChokerConfig::default(), t(0), 1);
        let mut p = peer(1, 500, 500);
        p.peer_interested = false;
        assert!(c.decide(t(1), false, &[p]).is_empty());
    }

    #[test]
    fn while_seeding_free_slots_are_lent_to_uninterested_peers_oldest_first() {
        let mut c = Choker::new(ChokerConfig::default(), t(0), 1);
        let mut peers: Vec<_> = (0..7).map(|k| peer(k, 0, 5)).collect();
        // Two interested peers take regular slots; of the five others the
        // two connected longest borrow the free ones.
        for p in &mut peers[2..] {
            p.peer_interested = false;
            p.connected_at = t(20 - p.key);
        }
        let set = c.decide(t(30), true, &peers);
        assert_eq!(set, [0, 1, 5, 6].into_iter().collect());
        assert_eq!(c.seed_slots.len(), 2, "a lent slot is no regular slot");
        // Once every slot is taken by interested peers, nothing is lent.
        for p in &mut peers[2..4] {
            p.peer_interested = true;
        }
        let set = c.decide(t(31), true, &peers);
        assert_eq!(set, [0, 1, 2, 3].into_iter().collect());
    }

    #[test]
    fn the_optimistic_slot_holds_for_thirty_seconds_then_rotates() {
        let mut c = Choker::new(ChokerConfig::default(), t(0), 7);
        let peers: Vec<_> = (0..40).map(|k| peer(k, 0, 0)).collect();
        c.decide(t(100), false, &peers);
        let first = c.optimistic().unwrap();
        c.decide(t(110), false, &peers);
        c.decide(t(129), false, &peers);
        assert_eq!(c.optimistic(), Some(first));
        let mut seen = BTreeSet::new();
        for i in 0..10 {
            c.decide(t(130 + 30 * i), false, &peers);
            seen.insert(c.optimistic().unwrap());
        }
        assert!(seen.len() > 3, "rotation picks different peers: {seen:?}");
    }

    #[test]
    fn the_optimistic_slot_goes_to_the_peer_furthest_behind_but_not_twice_running() {
        let mut c = Choker::new(ChokerConfig::default(), t(0), 3);
        // Keys 0..4 win the regular slots (fastest to us); of the rest,
        // 7 has the fewest pieces, then 9.
        let mut peers: Vec<_> = (0..10).map(|k| PeerStats { peer_pieces: 500, ..peer(k, 1000 - k * 100, 0) }).collect();
        peers[7].peer_pieces = 20;
        peers[9].peer_pieces = 40;
        let set = c.decide(t(100), false, &peers);
        assert_eq!(c.optimistic(), Some(7));
        assert!(set.contains(&7) && set.len() == 5);
        // Its turn over, the next furthest behind takes it, even though 7
        // still has fewer pieces (a peer claiming nothing cannot keep it).
        c.decide(t(131), false, &peers);
        assert_eq!(c.optimistic(), Some(9));
        c.decide(t(162), false, &peers);
        assert_eq!(c.optimistic(), Some(7));
        // Alone, it keeps getting it.
        let alone = [peers[0], peers[1], peers[2], peers[3], peers[7]];
        c.decide(t(193), false, &alone);
        assert_eq!(c.optimistic(), Some(7));
    }

    #[test]
    fn equal_rates_give_the_regular_slots_to_the_peers_furthest_behind() {
        let mut c = Choker::new(ChokerConfig::default(), t(0), 1);
        // Nobody has sent us anything yet: the four with fewest pieces.
        let peers: Vec<_> = (0..8).map(|k| PeerStats { peer_pieces: (8 - k) as u32 * 10, ..peer(k, 0, 0) }).collect();
        let set = c.decide(t(10), false, &peers);
        for k in 4..8 {
            assert!(set.contains(&k), "{k} is among the furthest behind: {set:?}");
        }
    }

    #[test]
    fn a_snubbing_peer_loses_its_regular_slot() {
        let mut c = Choker::new(ChokerConfig::default(), t(0), 1);
        let mut fast = peer(1, 10_000, 0);
        fast.am_interested_since = Some(t(0));
        fast.last_data_at = Some(t(10));
        let others: Vec<_> = (2..7).map(|k| peer(k, k, 0)).collect();
        let mut peers = vec![fast];
        peers.extend(others);
        assert!(fast.is_snubbed(t(70), Duration::from_secs(60)));
        assert!(!fast.is_snubbed(t(69), Duration::from_secs(60)));
        let set = c.decide(t(69), false, &peers);
        assert!(set.contains(&1));
        let mut c = Choker::new(ChokerConfig::default(), t(0), 1);
        let set = c.decide(t(70), false, &peers);
        // Only the optimistic slot could still take it.
        assert!(!set.contains(&1) || c.optimistic() == Some(1));
        for k in 3..7 {
            assert!(set.contains(&k));
        }
    }

    #[test]
    fn a_regular_peer_does_not_also_hold_the_optimistic_slot() {
        let mut c = Choker::new(ChokerConfig::default(), t(0), 1);
        let peers: Vec<_> = (0..3).map(|k| peer(k, 10, 0)).collect();
        let set = c.decide(t(1), false, &peers);
        assert_eq!(set.len(), 3);
        assert_eq!(c.optimistic(), None);
    }
}
