//! The piece picker: which blocks to request from which peer.
//!
//! Policy, in order: finish partially downloaded pieces (from a seed only
//! those no other peer has, until it has nothing else for us); while fewer than
//! [`PickerConfig::random_first_pieces`] pieces are complete pick random
//! pieces (to have something to trade soon); then rarest first with random
//! tie-breaks; once every block of every missing piece is requested, endgame
//! (request blocks already requested from others, at most
//! [`PickerConfig::endgame_requesters_max`] requesters per block, from
//! peers with fewer than [`PickerConfig::endgame_requests_per_peer`]
//! requests out).
//!
//! Rarity is kept in a vector of wanted pieces sorted by availability with
//! one boundary per availability level (as libtorrent does): a `have` moves
//! one piece across one boundary in O(1); peers with every piece are counted
//! apart so a seed arriving costs O(1), not O(pieces).
//!
//! Priorities ([`Picker::set_priorities`], per piece: 0 = skip, 1 =
//! normal, 2 = high): a skipped piece leaves the wanted pieces as a piece
//! we have does, so no scan ever meets it and it is never requested;
//! high pieces are picked (rarest first among them) before any normal
//! piece is started. [`Picker::is_complete`] still means every piece,
//! [`Picker::wanted_complete`] every piece not skipped.
//!
//! Inputs: [`Picker::peer_bitfield`], [`Picker::peer_have`],
//! [`Picker::peer_have_all`], [`Picker::peer_left`],
//! [`Picker::block_received`], [`Picker::request_failed`],
//! [`Picker::piece_verified`], [`Picker::piece_failed`]. Output:
//! [`Picker::pick`]. The caller keys peers by any `u64` it likes.

use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use super::bitfield::Bitfield;
use super::wire::{BlockRef, BLOCK_LEN};
use crate::rand::Rng;
use crate::time::Duration;

/// The caller's handle for a peer.
pub type PeerKey = u64;

/// Tuning of a [`Picker`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PickerConfig {
    /// Pick random pieces until this many are complete.
    pub random_first_pieces: u32,
    /// In endgame, at most this many peers are asked for the same block.
    pub endgame_requesters_max: usize,
    /// Random probes for a random-first piece before falling back to rarest.
    pub random_probes_max: u32,
    /// In endgame, a peer is asked for blocks already requested from
    /// others only while it has fewer than this many requests
    /// outstanding, and only up to that many (libtorrent asks an idle
    /// peer for one). A peer with its own requests in flight is busy
    /// already; filling its whole pipeline with duplicates had each
    /// leecher in `sim swarm` receive 1.4-1.7 % of the file twice.
    pub endgame_requests_per_peer: usize,
}

impl Default for PickerConfig {
    /// Four random pieces first; in endgame two requesters per block, and
    /// duplicates only for a peer with fewer than two requests out.
    fn default() -> Self {
        PickerConfig {
            random_first_pieces: 4,
            endgame_requesters_max: 2,
            random_probes_max: 32,
            endgame_requests_per_peer: 2,
        }
    }
}

/// The per-peer request queue depth, as libtorrent computes it: enough
/// blocks in flight to cover `target_delay` at the peer's measured download
/// `rate_bytes_per_sec`, clamped to `2..=500`.
pub fn request_queue_depth(rate_bytes_per_sec: u64, target_delay: Duration, block_len: u32) -> u32 {
    let bytes = rate_bytes_per_sec as u128 * target_delay.as_micros() as u128 / 1_000_000;
    let depth = bytes / block_len.max(1) as u128;
    depth.clamp(2, 500) as u32
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Block {
    Free,
    /// Requested from these peers (more than one only in endgame).
    Requested(Vec<PeerKey>),
    /// Data arrived from this peer.
    Received(PeerKey),
}

#[derive(Clone, Debug)]
struct Partial {
    blocks: Vec<Block>,
    free: u32,
    received: u32,
    /// A piece on parole (it failed its hash check) is downloaded from a
    /// single peer, so a second failure names the culprit.
    owner: Option<PeerKey>,
}

#[derive(Clone, Debug)]
struct Peer {
    /// `None` for a peer with every piece (counted in `seeds`).
    has: Option<Bitfield>,
    /// Pieces in `has` that we lack (makes interest O(1)).
    useful: u32,
    outstanding: BTreeSet<(u32, u32)>,
}

/// What [`Picker::block_received`] made of a block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Received {
    /// New data: write it. `cancel` lists other peers that were asked for
    /// the same block (send them a cancel); `piece_complete` says every
    /// block of the piece is now in: hash it.
    New {
        /// Other requesters of this block.
        cancel: Vec<PeerKey>,
        /// The piece is complete and should be verified.
        piece_complete: bool,
    },
    /// We already had this block (an endgame race): drop the data.
    Duplicate,
    /// A block of a piece we are not downloading: drop the data (a peer
    /// answering after a choke does this; it is not misbehaviour).
    Unrequested,
    /// Not a block of a missing piece (bad index, offset or length, or a
    /// piece we already have): drop it; a repeat offender may be punished.
    Invalid,
}

/// Rarest-first piece picker for one torrent.
#[derive(Clone, Debug)]
pub struct Picker {
    config: PickerConfig,
    piece_length: u64,
    total_length: u64,
    piece_count: u32,
    have: Bitfield,
    /// Pieces we lack and do not skip: exactly those in `order[..wanted]`.
    wanted_bits: Bitfield,
    /// Each piece's priority: 0 skip, 1 normal, 2 high.
    priority: Vec<u8>,
    /// Pieces of priority 2.
    high: Bitfield,
    /// High pieces still wanted (`high` and `wanted_bits`); when 0 the
    /// high-priority pass costs nothing.
    high_wanted: u32,
    /// Bytes of the pieces not skipped, and of those verified.
    wanted_bytes: u64,
    wanted_done_bytes: u64,
    /// Non-seed peers having each piece.
    avail: Vec<u32>,
    /// Peers having every piece.
    seeds: u32,
    /// Wanted pieces sorted by availability in `order[..wanted]`; had
    /// and skipped pieces after. `pos[p]` is `p`'s index in `order`.
    order: Vec<u32>,
    pos: Vec<u32>,
    /// `bucket_end[a]` = end (exclusive) of the availability-`a` bucket.
    bucket_end: Vec<u32>,
    partial: BTreeMap<u32, Partial>,
    /// The keys of `partial` as a bitset, for O(1) and word-wise tests.
    partial_bits: Bitfield,
    /// Pieces that failed a hash check: their next download goes to one peer.
    parole: BTreeSet<u32>,
    /// Free blocks summed over partial pieces.
    partial_free: u64,
    peers: BTreeMap<PeerKey, Peer>,
    rng: Rng,
}

impl Picker {
    /// A picker for content of `total_length` bytes in pieces of
    /// `piece_length`, nothing downloaded yet.
    pub fn new(piece_length: u64, total_length: u64, config: PickerConfig, seed: u64) -> Picker {
        assert!(piece_length > 0, "piece length must be positive");
        let n = total_length.div_ceil(piece_length);
        assert!(n <= u32::MAX as u64, "too many pieces");
        let n = n as u32;
        Picker {
            config,
            piece_length,
            total_length,
            piece_count: n,
            have: Bitfield::new(n),
            wanted_bits: Bitfield::full(n),
            priority: vec![1; n as usize],
            high: Bitfield::new(n),
            high_wanted: 0,
            wanted_bytes: total_length,
            wanted_done_bytes: 0,
            avail: vec![0; n as usize],
            seeds: 0,
            order: (0..n).collect(),
            pos: (0..n).collect(),
            bucket_end: vec![n],
            partial: BTreeMap::new(),
            partial_bits: Bitfield::new(n),
            parole: BTreeSet::new(),
            partial_free: 0,
            peers: BTreeMap::new(),
            rng: Rng::new(seed),
        }
    }

    // ---- geometry ----

    /// Number of pieces.
    pub fn piece_count(&self) -> u32 {
        self.piece_count
    }

    /// Size of piece `p` in bytes.
    pub fn piece_size(&self, p: u32) -> u64 {
        let start = p as u64 * self.piece_length;
        self.total_length.saturating_sub(start).min(self.piece_length)
    }

    /// Number of 16 KiB blocks in piece `p`.
    pub fn blocks_in(&self, p: u32) -> u32 {
        self.piece_size(p).div_ceil(BLOCK_LEN as u64) as u32
    }

    /// The block `b` of piece `p`.
    pub fn block_ref(&self, p: u32, b: u32) -> BlockRef {
        let begin = b as u64 * BLOCK_LEN as u64;
        let length = (self.piece_size(p) - begin).min(BLOCK_LEN as u64) as u32;
        BlockRef { index: p, begin: begin as u32, length }
    }

    fn block_index(&self, r: &BlockRef) -> Option<u32> {
        if r.index >= self.piece_count || r.begin & (BLOCK_LEN - 1) != 0 {
            return None;
        }
        let b = r.begin / BLOCK_LEN;
        if b >= self.blocks_in(r.index) || self.block_ref(r.index, b).length != r.length {
            return None;
        }
        Some(b)
    }

    // ---- getters ----

    /// The pieces we have (verified).
    pub fn have(&self) -> &Bitfield {
        &self.have
    }

    /// True once every piece is verified.
    pub fn is_complete(&self) -> bool {
        self.have.is_full()
    }

    /// True once every piece not skipped (priority 0) is verified: what a
    /// download with skipped files calls finished. Equal to
    /// [`Picker::is_complete`] while nothing is skipped.
    pub fn wanted_complete(&self) -> bool {
        self.wanted() == 0
    }

    /// Piece `p`'s priority (0 skip, 1 normal, 2 high; 0 out of range).
    pub fn priority(&self, p: u32) -> u8 {
        self.priority.get(p as usize).copied().unwrap_or(0)
    }

    /// Bytes of the pieces not skipped.
    pub fn wanted_bytes(&self) -> u64 {
        self.wanted_bytes
    }

    /// Bytes of the pieces not skipped that are verified.
    pub fn wanted_done_bytes(&self) -> u64 {
        self.wanted_done_bytes
    }

    /// Peers known to have piece `p` (seeds included).
    pub fn availability(&self, p: u32) -> u32 {
        self.avail.get(p as usize).map_or(0, |a| a + self.seeds)
    }

    /// True when every block of every missing piece is requested.
    pub fn in_endgame(&self) -> bool {
        !self.wanted_complete() && self.wanted() as usize == self.partial.len() && self.partial_free == 0
    }

    /// True if `peer` has a piece we want (lack and do not skip): we
    /// should be interested.
    pub fn is_interesting(&self, peer: PeerKey) -> bool {
        match self.peers.get(&peer) {
            None => false,
            Some(Peer { has: None, .. }) => !self.wanted_complete(),
            Some(Peer { useful, .. }) => *useful > 0,
        }
    }

    /// Pieces `peer` has (0 for a peer we do not know).
    pub fn peer_pieces(&self, peer: PeerKey) -> u32 {
        match self.peers.get(&peer) {
            Some(Peer { has: None, .. }) => self.piece_count,
            Some(Peer { has: Some(b), .. }) => b.count(),
            None => 0,
        }
    }

    /// True if `peer` has every piece.
    pub fn is_seed(&self, peer: PeerKey) -> bool {
        match self.peers.get(&peer) {
            Some(Peer { has: None, .. }) => true,
            Some(Peer { has: Some(b), .. }) => b.is_full(),
            None => false,
        }
    }

    /// Blocks requested from `peer` and not yet answered.
    pub fn outstanding(&self, peer: PeerKey) -> Vec<BlockRef> {
        self.peers
            .get(&peer)
            .map_or_else(Vec::new, |p| p.outstanding.iter().map(|&(pc, b)| self.block_ref(pc, b)).collect())
    }

    /// Number of blocks requested from `peer` and not yet answered.
    pub fn outstanding_count(&self, peer: PeerKey) -> usize {
        self.peers.get(&peer).map_or(0, |p| p.outstanding.len())
    }

    fn wanted(&self) -> u32 {
        *self.bucket_end.last().expect("at least one bucket")
    }

    // ---- availability ----

    fn peer_entry(&mut self, peer: PeerKey) -> &mut Peer {
        let n = self.piece_count;
        self.peers.entry(peer).or_insert_with(|| Peer {
            has: Some(Bitfield::new(n)),
            useful: 0,
            outstanding: BTreeSet::new(),
        })
    }

    fn inc(&mut self, p: u32) {
        let a = self.avail[p as usize] as usize;
        self.avail[p as usize] += 1;
        if !self.wanted_bits.get(p) {
            return;
        }
        if a + 1 == self.bucket_end.len() {
            let w = self.wanted();
            self.bucket_end.push(w);
        }
        let last = self.bucket_end[a] - 1;
        self.swap(self.pos[p as usize], last);
        self.bucket_end[a] -= 1;
    }

    fn dec(&mut self, p: u32) {
        let a = self.avail[p as usize] as usize;
        assert!(a > 0, "availability underflow");
        self.avail[p as usize] -= 1;
        if !self.wanted_bits.get(p) {
            return;
        }
        let first = self.bucket_end[a - 1];
        self.swap(self.pos[p as usize], first);
        self.bucket_end[a - 1] += 1;
    }

    fn swap(&mut self, i: u32, j: u32) {
        let (pi, pj) = (self.order[i as usize], self.order[j as usize]);
        self.order.swap(i as usize, j as usize);
        self.pos[pi as usize] = j;
        self.pos[pj as usize] = i;
    }

    /// Moves wanted piece `p` out of the wanted region.
    fn unwant(&mut self, p: u32) {
        let a = self.avail[p as usize] as usize;
        for b in a..self.bucket_end.len() {
            let last = self.bucket_end[b] - 1;
            self.swap(self.pos[p as usize], last);
            self.bucket_end[b] -= 1;
        }
    }

    /// Moves piece `p` from past the wanted region into it, into its
    /// availability bucket: `unwant` backwards.
    fn rewant(&mut self, p: u32) {
        let w = self.wanted();
        self.swap(self.pos[p as usize], w);
        let a = self.avail[p as usize] as usize;
        // Availability of pieces outside the region is counted but has no
        // bucket yet if no wanted piece was that common.
        while self.bucket_end.len() <= a {
            self.bucket_end.push(w);
        }
        // `p` sits just past bucket `b`: grow `b` over it, then (above `a`)
        // trade places with `b`'s first piece, which puts `p` just past
        // bucket `b - 1`.
        for b in (a..self.bucket_end.len()).rev() {
            self.bucket_end[b] += 1;
            if b > a {
                let first = self.bucket_end[b - 1];
                self.swap(self.pos[p as usize], first);
            }
        }
    }

    /// Sets every piece's priority from `priorities` (one per piece: 0
    /// skip, 1 normal, 2 high; larger values count as 2, missing ones as
    /// 1, extra ones are ignored). A skipped piece in progress is dropped:
    /// its requests are returned as `(peer, block)` so the caller can
    /// cancel them, and blocks that still arrive are
    /// [`Received::Unrequested`]. Pieces we have stay had whatever their
    /// priority. O(pieces + peers x pieces / 64).
    pub fn set_priorities(&mut self, priorities: &[u8]) -> Vec<(PeerKey, BlockRef)> {
        let mut withdrawn = Vec::new();
        let mut moved = false;
        for p in 0..self.piece_count {
            let new = priorities.get(p as usize).copied().unwrap_or(1).min(2);
            let old = self.priority[p as usize];
            if new == old {
                continue;
            }
            self.priority[p as usize] = new;
            if new == 2 {
                self.high.set(p);
            } else {
                self.high.clear(p);
            }
            let size = self.piece_size(p);
            let had = self.have.get(p);
            if old == 0 {
                self.wanted_bytes += size;
                self.wanted_done_bytes += if had { size } else { 0 };
                if !had {
                    self.rewant(p);
                    self.wanted_bits.set(p);
                    moved = true;
                }
            } else if new == 0 {
                self.wanted_bytes -= size;
                self.wanted_done_bytes -= if had { size } else { 0 };
                if !had {
                    self.drop_partial(p, &mut withdrawn);
                    self.unwant(p);
                    self.wanted_bits.clear(p);
                    moved = true;
                }
            }
        }
        self.high_wanted =
            self.high.words().iter().zip(self.wanted_bits.words()).map(|(h, w)| (h & w).count_ones()).sum();
        if moved {
            let wanted = self.wanted_bits.words();
            for e in self.peers.values_mut() {
                if let Some(b) = &e.has {
                    e.useful = b.words().iter().zip(wanted).map(|(h, w)| (h & w).count_ones()).sum();
                }
            }
        }
        withdrawn
    }

    /// Forgets partial piece `p` (no longer wanted), listing the requests
    /// in flight for it.
    fn drop_partial(&mut self, p: u32, withdrawn: &mut Vec<(PeerKey, BlockRef)>) {
        self.partial_bits.clear(p);
        let Some(part) = self.partial.remove(&p) else {
            return;
        };
        self.partial_free -= part.free as u64;
        for (bi, st) in part.blocks.iter().enumerate() {
            if let Block::Requested(by) = st {
                for &peer in by {
                    if let Some(e) = self.peers.get_mut(&peer) {
                        e.outstanding.remove(&(p, bi as u32));
                    }
                    withdrawn.push((peer, self.block_ref(p, bi as u32)));
                }
            }
        }
    }

    /// Records `peer`'s bitfield (replacing what we knew of it).
    pub fn peer_bitfield(&mut self, peer: PeerKey, has: &Bitfield) {
        assert_eq!(has.len(), self.piece_count, "bitfield of the wrong length");
        self.forget_has(peer);
        if has.is_full() {
            self.peer_have_all(peer);
            return;
        }
        let mut useful = 0;
        for p in has.iter_ones() {
            self.inc(p);
            useful += self.wanted_bits.get(p) as u32;
        }
        let e = self.peer_entry(peer);
        e.has = Some(has.clone());
        e.useful = useful;
    }

    /// Records a `have` from `peer`. Out-of-range indexes are ignored.
    pub fn peer_have(&mut self, peer: PeerKey, p: u32) {
        if p >= self.piece_count {
            return;
        }
        let lacking = self.wanted_bits.get(p);
        let e = self.peer_entry(peer);
        let newly = match &mut e.has {
            None => false,
            Some(b) => b.set(p),
        };
        if newly {
            e.useful += lacking as u32;
            self.inc(p);
        }
    }

    /// Records that `peer` has every piece (BEP 6 have-all, or a full bitfield).
    pub fn peer_have_all(&mut self, peer: PeerKey) {
        self.forget_has(peer);
        self.peer_entry(peer).has = None;
        self.seeds += 1;
    }

    /// Records that `peer` has no piece (BEP 6 have-none).
    pub fn peer_have_none(&mut self, peer: PeerKey) {
        self.forget_has(peer);
        self.peer_entry(peer);
    }

    fn forget_has(&mut self, peer: PeerKey) {
        let n = self.piece_count;
        let Some(e) = self.peers.get_mut(&peer) else {
            return;
        };
        e.useful = 0;
        match e.has.replace(Bitfield::new(n)) {
            None => self.seeds -= 1,
            Some(old) => {
                for p in old.iter_ones() {
                    self.dec(p);
                }
            }
        }
    }

    /// Forgets `peer`: its pieces leave the availability counts and its
    /// outstanding requests are freed for others. Returns those requests.
    pub fn peer_left(&mut self, peer: PeerKey) -> Vec<BlockRef> {
        let freed = self.outstanding(peer);
        for r in &freed {
            self.request_failed(peer, *r);
        }
        self.forget_has(peer);
        self.peers.remove(&peer);
        for part in self.partial.values_mut() {
            if part.owner == Some(peer) {
                part.owner = None;
            }
        }
        freed
    }

    // ---- requests ----

    fn peer_has(&self, peer: &Peer, p: u32) -> bool {
        match &peer.has {
            None => true,
            Some(b) => b.get(p),
        }
    }

    fn start_partial(&mut self, p: u32, peer: PeerKey) {
        let n = self.blocks_in(p);
        let owner = self.parole.contains(&p).then_some(peer);
        self.partial_bits.set(p);
        self.partial.insert(p, Partial { blocks: vec![Block::Free; n as usize], free: n, received: 0, owner });
        self.partial_free += n as u64;
    }

    /// Takes free blocks of partial piece `p` for `peer`, up to `want`.
    fn take_free(&mut self, peer: PeerKey, p: u32, want: usize, out: &mut Vec<BlockRef>) {
        let Some(part) = self.partial.get_mut(&p) else {
            return;
        };
        let mut taken = Vec::new();
        for (b, st) in part.blocks.iter_mut().enumerate() {
            if taken.len() >= want || part.free == 0 {
                break;
            }
            if *st == Block::Free {
                *st = Block::Requested(vec![peer]);
                part.free -= 1;
                taken.push(b as u32);
            }
        }
        self.partial_free -= taken.len() as u64;
        let e = self.peers.get_mut(&peer).expect("peer is known");
        for &b in &taken {
            e.outstanding.insert((p, b));
        }
        for b in taken {
            out.push(self.block_ref(p, b));
        }
    }

    /// Chooses up to `max_blocks` blocks to request from `peer` and marks
    /// them requested. Returns fewer (maybe none) when the peer has nothing
    /// more we need. Call when the peer unchokes us and whenever its queue
    /// drops below [`request_queue_depth`].
    pub fn pick(&mut self, peer: PeerKey, max_blocks: usize) -> Vec<BlockRef> {
        let mut out = Vec::new();
        if max_blocks == 0 || self.wanted_complete() {
            return out;
        }
        let Some(pe) = self.peers.get(&peer) else {
            return out;
        };
        let is_seed = pe.has.is_none();

        // 1. Finish partial pieces. From a seed, only those no other peer
        // has; the rest wait for step 4. A seed's upload is all that
        // brings in pieces nobody else has: spent on blocks the others can
        // trade among themselves, it had a seeder send 1.35-1.45 copies of
        // the file in `sim swarm` (10 leechers, equal capacities) and on
        // Docker Swarm (deploy/distribute-test.sh), and the last new piece
        // came out that much later.
        let (partials, from_others): (Vec<u32>, Vec<u32>) = self
            .partial
            .iter()
            .filter(|(p, part)| part.free > 0 && self.peer_has(pe, **p) && part.owner.is_none_or(|o| o == peer))
            .map(|(p, _)| *p)
            .partition(|p| !is_seed || self.avail[*p as usize] == 0);
        for p in partials {
            let want = max_blocks - out.len();
            if want == 0 {
                return out;
            }
            self.take_free(peer, p, want, &mut out);
        }

        // 2. High-priority pieces before any normal one, rarest first.
        if self.high_wanted > 0 && out.len() < max_blocks {
            let has = self.peers.get_mut(&peer).expect("known").has.take();
            self.pick_high(peer, has.as_ref(), max_blocks, &mut out);
            self.peers.get_mut(&peer).expect("known").has = has;
        }

        // 3. Random pieces first.
        if self.have.count() < self.config.random_first_pieces {
            let mut probes = 0;
            while out.len() < max_blocks && probes < self.config.random_probes_max {
                probes += 1;
                let w = self.wanted();
                if w == 0 {
                    break;
                }
                let p = self.order[self.rng.below(w as u64) as usize];
                let pe = &self.peers[&peer];
                if self.partial.contains_key(&p) || !self.peer_has(pe, p) {
                    continue;
                }
                self.start_partial(p, peer);
                let want = max_blocks - out.len();
                self.take_free(peer, p, want, &mut out);
            }
        }

        // 4. Rarest first, random among equals. A peer lacking the rarest
        // pieces could make this scan every wanted piece, so for non-seeds
        // it has a budget of what a pass over the peer's own bitfield would
        // cost; past it, that pass picks instead (see `pick_by_bitfield`).
        let first_bucket = if is_seed { 0 } else { 1 };
        let mut budget = if is_seed {
            usize::MAX
        } else {
            self.piece_count as usize / 64 + self.peers[&peer].useful as usize / 8 + 64
        };
        // Borrow the peer's bitfield out of the map for the scan (put back
        // below) so each step is a bit test, not a map lookup.
        let has = self.peers.get_mut(&peer).expect("known").has.take();
        let mut b = first_bucket;
        while out.len() < max_blocks && b < self.bucket_end.len() && budget > 0 {
            let start = if b == 0 { 0 } else { self.bucket_end[b - 1] };
            let end = self.bucket_end[b];
            let len = end - start;
            if len > 0 {
                let r = self.rng.below(len as u64) as u32;
                let mut i = 0;
                while i < len && out.len() < max_blocks && budget > 0 {
                    let p = self.order[(start + (r + i) % len) as usize];
                    i += 1;
                    budget -= 1;
                    if self.partial_bits.get(p) || has.as_ref().is_some_and(|h| !h.get(p)) {
                        continue;
                    }
                    // Taking a piece doesn't move it in `order`, so the
                    // bucket scan stays valid.
                    self.start_partial(p, peer);
                    let want = max_blocks - out.len();
                    self.take_free(peer, p, want, &mut out);
                }
            }
            b += 1;
        }
        if let Some(h) = &has {
            if budget == 0 && out.len() < max_blocks {
                self.pick_by_bitfield(peer, h, max_blocks, &mut out);
            }
        }
        self.peers.get_mut(&peer).expect("known").has = has;

        // 4b. The partial pieces step 1 kept from a seed, when it has
        // nothing better: the peers that have them may be choking us.
        for p in from_others {
            let want = max_blocks - out.len();
            if want == 0 {
                return out;
            }
            self.take_free(peer, p, want, &mut out);
        }

        // 5. Endgame, for a peer with (almost) nothing else to do.
        let pe = &self.peers[&peer];
        let held = pe.outstanding.len() + out.len();
        let max_blocks = max_blocks.min(out.len() + self.config.endgame_requests_per_peer.saturating_sub(held));
        if out.len() < max_blocks && self.in_endgame() {
            let mut dup = Vec::new();
            'outer: for (&p, part) in &self.partial {
                if !self.peer_has(pe, p) || part.owner.is_some_and(|o| o != peer) {
                    continue;
                }
                for (bi, st) in part.blocks.iter().enumerate() {
                    if let Block::Requested(by) = st {
                        if by.len() < self.config.endgame_requesters_max && !by.contains(&peer) {
                            dup.push((p, bi as u32));
                            if out.len() + dup.len() >= max_blocks {
                                break 'outer;
                            }
                        }
                    }
                }
            }
            for (p, bi) in dup {
                if let Some(Block::Requested(by)) = self.partial.get_mut(&p).map(|part| &mut part.blocks[bi as usize]) {
                    by.push(peer);
                }
                self.peers.get_mut(&peer).expect("peer is known").outstanding.insert((p, bi));
                out.push(self.block_ref(p, bi));
            }
        }
        out
    }

    /// Rarest-first over the pieces `peer` has, by one pass over its
    /// bitfield: O(pieces / 64 + pieces it has), keeping the few rarest
    /// (random among equals) in a bounded heap.
    fn pick_by_bitfield(&mut self, peer: PeerKey, has: &Bitfield, max_blocks: usize, out: &mut Vec<BlockRef>) {
        self.pick_rarest(peer, Some(has), false, max_blocks, out);
    }

    /// Starts the rarest high-priority pieces `peer` has (all of them
    /// for a seed, `has` = `None`), random among equals: one pass over the
    /// bitsets, O(pieces / 64 + high pieces), only while some are wanted.
    fn pick_high(&mut self, peer: PeerKey, has: Option<&Bitfield>, max_blocks: usize, out: &mut Vec<BlockRef>) {
        self.pick_rarest(peer, has, true, max_blocks, out);
    }

    /// Starts the rarest wanted pieces not in progress that `peer` has
    /// (`None`: every piece), of high priority only if `high_only`,
    /// random among equals, keeping the few rarest in a bounded heap.
    fn pick_rarest(
        &mut self,
        peer: PeerKey,
        has: Option<&Bitfield>,
        high_only: bool,
        max_blocks: usize,
        out: &mut Vec<BlockRef>,
    ) {
        let k = max_blocks - out.len();
        let mut heap: BinaryHeap<(u32, u64, u32)> = BinaryHeap::with_capacity(k + 1);
        let words = self.wanted_bits.words().iter().zip(self.partial_bits.words());
        for (wi, (wb, pt)) in words.enumerate() {
            let hi = if high_only { self.high.words()[wi] } else { u64::MAX };
            let mut w = hi & wb & !pt & has.map_or(u64::MAX, |h| h.words()[wi]);
            while w != 0 {
                let p = wi as u32 * 64 + w.trailing_zeros();
                w &= w - 1;
                let a = self.avail[p as usize];
                if heap.len() == k && heap.peek().is_some_and(|top| a > top.0) {
                    continue;
                }
                heap.push((a, self.rng.next_u64(), p));
                if heap.len() > k {
                    heap.pop();
                }
            }
        }
        for (_, _, p) in heap.into_sorted_vec() {
            if out.len() >= max_blocks {
                break;
            }
            self.start_partial(p, peer);
            let want = max_blocks - out.len();
            self.take_free(peer, p, want, out);
        }
    }

    /// A request to `peer` will not be answered (rejected, timed out, or we
    /// were choked): the block becomes free for others.
    pub fn request_failed(&mut self, peer: PeerKey, r: BlockRef) {
        let Some(b) = self.block_index(&r) else {
            return;
        };
        if let Some(e) = self.peers.get_mut(&peer) {
            e.outstanding.remove(&(r.index, b));
        }
        let Some(part) = self.partial.get_mut(&r.index) else {
            return;
        };
        let st = &mut part.blocks[b as usize];
        if let Block::Requested(by) = st {
            by.retain(|x| *x != peer);
            if by.is_empty() {
                *st = Block::Free;
                part.free += 1;
                self.partial_free += 1;
            }
        }
        // A piece with nothing requested or received goes back to unstarted.
        if part.received == 0 && part.free as usize == part.blocks.len() {
            self.partial_free -= part.free as u64;
            self.partial.remove(&r.index);
            self.partial_bits.clear(r.index);
        }
    }

    /// A block's data arrived from `peer`. See [`Received`] for what to do.
    pub fn block_received(&mut self, peer: PeerKey, r: BlockRef) -> Received {
        let Some(b) = self.block_index(&r) else {
            return Received::Invalid;
        };
        if self.have.get(r.index) {
            return Received::Duplicate;
        }
        if let Some(e) = self.peers.get_mut(&peer) {
            e.outstanding.remove(&(r.index, b));
        }
        // A block of a piece we are not downloading was never requested (or
        // answers a request freed long ago): not worth keeping. Blocks of a
        // piece in progress are kept even if unrequested (late answers).
        let Some(part) = self.partial.get_mut(&r.index) else {
            return Received::Unrequested;
        };
        let st = std::mem::replace(&mut part.blocks[b as usize], Block::Received(peer));
        let cancel = match st {
            Block::Received(first) => {
                part.blocks[b as usize] = Block::Received(first);
                return Received::Duplicate;
            }
            Block::Free => {
                part.free -= 1;
                self.partial_free -= 1;
                Vec::new()
            }
            Block::Requested(by) => by.into_iter().filter(|x| *x != peer).collect(),
        };
        part.received += 1;
        let piece_complete = part.received as usize == part.blocks.len();
        for other in &cancel {
            if let Some(e) = self.peers.get_mut(other) {
                e.outstanding.remove(&(r.index, b));
            }
        }
        Received::New { cancel, piece_complete }
    }

    /// Piece `p` passed its hash check (or was found on disk at start):
    /// we have it.
    pub fn piece_verified(&mut self, p: u32) {
        if p >= self.piece_count || self.have.get(p) {
            return;
        }
        self.partial_bits.clear(p);
        if let Some(part) = self.partial.remove(&p) {
            self.partial_free -= part.free as u64;
            for (bi, st) in part.blocks.iter().enumerate() {
                if let Block::Requested(by) = st {
                    for peer in by {
                        if let Some(e) = self.peers.get_mut(peer) {
                            e.outstanding.remove(&(p, bi as u32));
                        }
                    }
                }
            }
        }
        self.have.set(p);
        self.parole.remove(&p);
        if self.priority[p as usize] > 0 {
            self.wanted_done_bytes += self.piece_size(p);
        }
        // A skipped piece may verify too (found on disk, or its hash was
        // in flight when it was skipped); it is already out of the region.
        if !self.wanted_bits.clear(p) {
            return;
        }
        self.unwant(p);
        self.high_wanted -= self.high.get(p) as u32;
        for e in self.peers.values_mut() {
            if e.has.as_ref().is_some_and(|b| b.get(p)) {
                e.useful -= 1;
            }
        }
    }

    /// The peers that sent blocks of partial piece `p` (call before
    /// [`Picker::piece_verified`] to credit them).
    pub fn contributors(&self, p: u32) -> BTreeSet<PeerKey> {
        self.partial.get(&p).map_or_else(BTreeSet::new, |part| {
            part.blocks
                .iter()
                .filter_map(|b| match b {
                    Block::Received(k) => Some(*k),
                    _ => None,
                })
                .collect()
        })
    }

    /// Piece `p` failed its hash check: it is downloaded again from
    /// scratch, and from a single peer (parole) so that a second failure
    /// names the culprit. Returns the peers that sent its blocks, for blame.
    pub fn piece_failed(&mut self, p: u32) -> BTreeSet<PeerKey> {
        let mut blame = BTreeSet::new();
        if p < self.piece_count && !self.have.get(p) {
            self.parole.insert(p);
        }
        self.partial_bits.clear(p);
        if let Some(part) = self.partial.remove(&p) {
            self.partial_free -= part.free as u64;
            for (bi, st) in part.blocks.iter().enumerate() {
                match st {
                    Block::Received(peer) => {
                        blame.insert(*peer);
                    }
                    Block::Requested(by) => {
                        for peer in by {
                            if let Some(e) = self.peers.get_mut(peer) {
                                e.outstanding.remove(&(p, bi as u32));
                            }
                        }
                    }
                    Block::Free => {}
                }
            }
        }
        blame
    }

    /// Checks the internal bookkeeping; for tests and fuzzing.
    pub fn check_invariants(&self) {
        let w = self.wanted() as usize;
        assert_eq!(w as u32, self.wanted_bits.count(), "wanted count");
        for p in 0..self.piece_count {
            let wanted = !self.have.get(p) && self.priority[p as usize] > 0;
            assert_eq!(self.wanted_bits.get(p), wanted, "wanted bit");
            assert_eq!(self.high.get(p), self.priority[p as usize] == 2, "high bit");
        }
        for (i, &p) in self.order.iter().enumerate() {
            assert_eq!(self.pos[p as usize] as usize, i, "pos/order mismatch");
            assert_eq!(i < w, self.wanted_bits.get(p), "had or skipped piece in wanted region");
        }
        let high_wanted = self.high.iter_ones().filter(|p| self.wanted_bits.get(*p)).count() as u32;
        assert_eq!(high_wanted, self.high_wanted, "high wanted count");
        let size = |f: &dyn Fn(u32) -> bool| (0..self.piece_count).filter(|p| f(*p)).map(|p| self.piece_size(p)).sum();
        let wanted_bytes: u64 = size(&|p| self.priority[p as usize] > 0);
        let done_bytes: u64 = size(&|p| self.priority[p as usize] > 0 && self.have.get(p));
        assert_eq!(wanted_bytes, self.wanted_bytes, "wanted bytes");
        assert_eq!(done_bytes, self.wanted_done_bytes, "wanted bytes done");
        for &p in self.partial.keys() {
            assert!(self.wanted_bits.get(p), "a piece in progress is not wanted");
        }
        let mut start = 0usize;
        for (a, &end) in self.bucket_end.iter().enumerate() {
            for &p in &self.order[start..end as usize] {
                assert_eq!(self.avail[p as usize] as usize, a, "piece in wrong bucket");
            }
            start = end as usize;
        }
        let free: u64 = self.partial.values().map(|p| p.free as u64).sum();
        assert_eq!(free, self.partial_free, "partial free count");
        assert_eq!(
            self.partial_bits.iter_ones().collect::<Vec<_>>(),
            self.partial.keys().copied().collect::<Vec<_>>(),
            "partial bitset"
        );
        for (k, peer) in &self.peers {
            for &(p, b) in &peer.outstanding {
                let part = self.partial.get(&p).expect("outstanding on a partial piece");
                assert!(
                    matches!(&part.blocks[b as usize], Block::Requested(by) if by.contains(k)),
                    "outstanding block not marked requested by its peer"
                );
            }
        }
        for peer in self.peers.values() {
            if let Some(b) = &peer.has {
                let useful = b.iter_ones().filter(|p| self.wanted_bits.get(*p)).count() as u32;
                assert_eq!(peer.useful, useful, "useful count");
            }
        }
        let seeds = self.peers.values().filter(|p| p.has.is_none()).count() as u32;
        assert_eq!(seeds, self.seeds, "seed count");
    }
}
