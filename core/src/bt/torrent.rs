//! The torrent machine: one torrent's swarm, sans-IO.
//!
//! It ties the peer wire codec, the piece picker and the choker together.
//! The adapter owns the sockets, the files and the clock:
//!
//! * **Inputs** ([`Torrent::handle`]): a peer connected or disconnected,
//!   bytes from a peer, the result of a block read, a failed block write,
//!   the result of a piece hash check, piece priorities
//!   ([`Input::SetPiecePriorities`]) and [`Input::Timeout`].
//! * **Outputs** ([`Torrent::poll_output`]), drained after every input
//!   until it yields [`Output::Timeout`] (which always comes): bytes to
//!   send, blocks to write, blocks to read, pieces to hash, peers to drop
//!   and [`Event`]s (peer ready, piece verified, completed, hash failed,
//!   peer banned, peers learned by PEX). Carry them out in order: a
//!   piece's [`Output::HashPiece`] follows its [`Output::WriteBlock`]s.
//! * **Getters**: [`Torrent::have`], [`Torrent::is_complete`],
//!   [`Torrent::wanted_complete`],
//!   [`Torrent::stats`], [`Torrent::peers`], [`Torrent::peer_count`].
//!
//! Besides the transfer itself it serves our `info` dictionary by BEP 9,
//! drops seed-to-seed connections, snubs peers whose requests time out,
//! and answers a choked peer's requests with BEP 6 rejects.
//!
//! When every slot is taken and another peer wants in, the adapter asks
//! [`Input::MakeRoom`] and the least useful peer gives way (see
//! [`Torrent::least_useful`]): one that has not sent its handshake yet,
//! oldest first; else one that has been of no use either way (for at
//! least [`TorrentConfig::useless_after`]), idle longest first; and in
//! each kind, those younger than [`TorrentConfig::newcomer_grace`] only
//! after every older one of both kinds. Peers that trade,
//! or might soon, are never pushed out: so connections that never
//! handshake, or handshake and then only send keep-alives, cannot hold the
//! slots against a peer that wants the data.
//!
//! Bad data is attributed as libtorrent does without block hashes: every
//! peer has trust points, +1 for each verified piece it contributed to (up
//! to [`TorrentConfig::trust_max`]), -2 for each failed one; at
//! [`TorrentConfig::trust_ban_at`] it is banned. A piece that failed is
//! downloaded again from a single peer (the picker's parole), and a piece
//! that fails with a single contributor bans that peer at once. A banned
//! peer is disconnected and reported so the adapter can refuse its address.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;

use super::bitfield::Bitfield;
use super::choker::{Choker, ChokerConfig, PeerStats};
use super::conn::PeerInput;
use super::metadata::{MetadataMessage, METADATA_PIECE_LEN};
use super::metainfo::{InfoHash, Metainfo, Sha1Hash};

/// Requests in flight to a new peer before slow start grows the queue.
pub const SLOW_START_DEPTH_INITIAL: u32 = 2;

/// The extended message id we receive `ut_metadata` on.
pub const UT_METADATA_ID: u8 = 3;
/// The extended message id we receive `ut_pex` on.
pub const UT_PEX_ID: u8 = 1;
use super::picker::{request_queue_depth, PeerKey, Picker, PickerConfig, Received};
use super::wire::{
    encode_piece_header, BlockRef, Decoder, DecoderConfig, ExtHandshake, Handshake, Message, PeerId, WireError,
    BLOCK_LEN,
};
use crate::time::{Duration, Instant};
use crate::Transmit;

/// Tuning and limits of a [`Torrent`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TorrentConfig {
    /// Our peer id.
    pub peer_id: PeerId,
    /// Most connected peers; more are disconnected at once.
    pub peers_max: usize,
    /// A request unanswered this long is given to someone else.
    pub request_timeout: Duration,
    /// A peer silent this long is dropped.
    pub idle_timeout: Duration,
    /// A handshaken peer that neither wants our pieces nor has pieces we
    /// want, and has exchanged nothing of use, for this long may give way
    /// to a newcomer when the slots are full ([`Input::MakeRoom`]). Zero
    /// by default: any grace is a window that peers reconnecting faster
    /// than a real one fill (with 10 s, 70 keep-alive-only peers that
    /// reconnect twice a second kept a libtorrent leecher out for 30 s).
    /// A peer that has just handshaken is still safe in practice: those
    /// of no use the longest give way first, and a real peer says
    /// `interested` (and is then never pushed out) one round trip after
    /// the handshake.
    pub useless_after: Duration,
    /// A connection without a handshake younger than this, or a peer that
    /// handshook more recently, gives way only after every older one that
    /// may: its handshake, or its `interested`, may be a moment away.
    /// Without it, when 70 peers holding the slots reconnected with a
    /// handshake at once, a real client's connection was at times the only
    /// one whose handshake had not been read yet, and went first.
    pub newcomer_grace: Duration,
    /// We send a keep-alive after this long without sending anything.
    pub keepalive_interval: Duration,
    /// How often the choker runs.
    pub choke_interval: Duration,
    /// How often timers are checked (request timeouts, rates, keep-alives).
    pub tick: Duration,
    /// Data in flight per peer should cover this long at its rate.
    pub target_request_delay: Duration,
    /// Most requests from one peer we queue; more are rejected. We
    /// advertise it as `reqq` (BEP 10), and clients never keep more than
    /// that in flight: transmission 3.00 took 3.4 MiB/s from us with 250
    /// and 12 MiB/s with 2000 (libtorrent's value). It asks once a second
    /// for five times the blocks its last two seconds brought, up to
    /// `reqq` (4, 20, 120, 700, then the cap: captured), so `reqq` blocks a
    /// second is its ceiling; 4000 lets it take a 64 MiB torrent's last
    /// 51 MiB in one round, a second before 2000 does. A queued request
    /// costs us a [`BlockRef`]; the adapter reads its reply only when the
    /// peer's socket has room, so the depth costs no block memory.
    pub peer_requests_max: usize,
    /// Most of our requests in flight to one peer, whatever its rate.
    pub our_requests_max: u32,
    /// Trust points are capped here (credit for verified pieces).
    pub trust_max: i32,
    /// A peer whose trust falls to this is banned.
    pub trust_ban_at: i32,
    /// Blocks that don't belong to any missing piece a peer may send
    /// before it is dropped.
    pub invalid_blocks_max: u32,
    /// Client name in the extension handshake.
    pub client_name: String,
    /// A private torrent (BEP 27): no peer exchange.
    pub private: bool,
    /// Our listening port, sent as `p` in the extension handshake so a
    /// peer we dialed can name us to others (BEP 10, 11); `None` by default.
    pub listen_port: Option<u16>,
    /// The UDP port of our DHT node (BEP 5), `None` (the default) when we
    /// run none: with one, our handshake sets the DHT bit and a peer that
    /// sets it too is sent a `port` message.
    pub dht_port: Option<u16>,
    /// Picker tuning.
    pub picker: PickerConfig,
    /// Choker tuning.
    pub choker: ChokerConfig,
}

impl TorrentConfig {
    /// Defaults around `peer_id`: 50 peers, 60 s request timeout, 120 s
    /// idle timeout, useless peers give way at once, 90 s keep-alive, 10 s choke rounds, 1 s ticks, 3 s
    /// target delay, 2000 queued requests per peer (libtorrent's
    /// `max_allowed_in_request_queue`), trust capped at 8 and
    /// banned at -7.
    pub fn new(peer_id: PeerId) -> TorrentConfig {
        TorrentConfig {
            peer_id,
            peers_max: 50,
            request_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(120),
            useless_after: Duration::ZERO,
            newcomer_grace: Duration::from_secs(1),
            keepalive_interval: Duration::from_secs(90),
            choke_interval: Duration::from_secs(10),
            tick: Duration::from_secs(1),
            target_request_delay: Duration::from_secs(3),
            peer_requests_max: 4000,
            our_requests_max: 500,
            trust_max: 8,
            trust_ban_at: -7,
            invalid_blocks_max: 20,
            client_name: "rumor".into(),
            private: false,
            listen_port: None,
            dht_port: None,
            picker: PickerConfig::default(),
            choker: ChokerConfig::default(),
        }
    }
}

/// What the adapter feeds a [`Torrent`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// Something happened on a peer connection: the same input the
    /// metadata fetch takes (see [`super::conn`]).
    Peer(PeerInput),
    /// Answer to [`Output::ReadBlock`].
    BlockRead {
        /// Who asked.
        peer: PeerKey,
        /// The block.
        block: BlockRef,
        /// Its bytes (`block.length` of them).
        data: Bytes,
    },
    /// A [`Output::WriteBlock`] of `piece` failed: the piece is fetched
    /// again (nobody is blamed).
    WriteFailed {
        /// The piece.
        piece: u32,
    },
    /// Answer to [`Output::HashPiece`].
    PieceChecked {
        /// The piece.
        piece: u32,
        /// Whether the SHA-1 matched.
        ok: bool,
    },
    /// Time passed; early timeouts do nothing.
    Timeout,
    /// Another peer wants a slot and every one is taken: the least useful
    /// peer ([`Torrent::least_useful`]) is dropped with
    /// [`DisconnectReason::GaveWay`], if one may be; otherwise nothing
    /// happens and the newcomer should be refused.
    MakeRoom,
    /// Each piece's priority, one byte per piece: 0 = skip (never
    /// requested), 1 = normal, 2 = high (started before any normal
    /// piece); larger values count as 2, a short list is padded with 1.
    /// Build it from file priorities with [`Metainfo::piece_priorities`].
    /// Requests in flight for a newly skipped piece are cancelled; when
    /// every wanted piece is then verified, [`Event::WantedComplete`]
    /// follows. [`Torrent::is_complete`] keeps meaning every piece.
    SetPiecePriorities(Vec<u8>),
}

/// What the machine reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A peer's handshake was accepted.
    PeerReady {
        /// Connection handle.
        peer: PeerKey,
        /// Its peer id.
        peer_id: PeerId,
    },
    /// A piece passed its hash check and is on disk.
    PieceVerified(u32),
    /// Every piece is verified.
    Completed,
    /// Every piece not skipped (see [`Input::SetPiecePriorities`]) is
    /// verified: the download is finished. Without skipped pieces it
    /// comes just before [`Event::Completed`]; it comes again if more
    /// pieces are wanted later and they complete.
    WantedComplete,
    /// A piece failed its hash check; these peers sent its blocks.
    HashFailed {
        /// The piece.
        piece: u32,
        /// Peers that contributed blocks.
        blamed: Vec<PeerKey>,
    },
    /// A peer sent bad data too often; refuse its address from now on.
    PeerBanned(PeerKey),
    /// A peer's extension handshake (BEP 10 `p`) says where it listens:
    /// the adapter may dial it there if a connection it made to us is
    /// lost for a transient reason.
    PeerListens {
        /// Connection handle.
        peer: PeerKey,
        /// Its listen port (never 0).
        port: u16,
    },
    /// A peer runs a DHT node on this UDP port of its address (BEP 5
    /// `port` message): the adapter may ping it and add it to its table.
    PeerDhtPort {
        /// Connection handle.
        peer: PeerKey,
        /// Its DHT port (never 0).
        port: u16,
    },
    /// A peer told us of other peers (BEP 11): the adapter may connect.
    PexPeers {
        /// Who told us.
        peer: PeerKey,
        /// The peers it connected to (at most 2 x [`super::pex::PEX_PEERS_MAX`]).
        added: Vec<super::pex::PexPeer>,
    },
}

/// Why we drop a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The peer broke the protocol.
    Protocol(WireError),
    /// The handshake is for another torrent.
    WrongInfoHash,
    /// We connected to ourselves.
    SelfConnection,
    /// A message that is invalid in context (have out of range, late bitfield...).
    Misbehaved(&'static str),
    /// Too many connections.
    TooManyPeers,
    /// Silent for too long.
    Idle,
    /// Banned for bad data.
    Banned,
    /// We and the peer both have everything: nothing to trade.
    BothSeeds,
    /// Every slot was taken and this peer was the least useful: it gave
    /// way to a newcomer ([`Input::MakeRoom`]).
    GaveWay,
}

/// What the adapter must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send these bytes on connection `to`.
    Transmit(Transmit<PeerKey>),
    /// Write a verified-to-be-requested block to disk (map it with
    /// [`super::metainfo::FileLayout::spans`]).
    WriteBlock {
        /// Piece index.
        piece: u32,
        /// Offset in the piece.
        begin: u32,
        /// Data.
        data: Bytes,
    },
    /// Read a block from disk and answer with [`Input::BlockRead`].
    ReadBlock {
        /// Who asked.
        peer: PeerKey,
        /// The block.
        block: BlockRef,
    },
    /// Read the piece from disk, hash it, compare to `expected`, answer
    /// with [`Input::PieceChecked`]. Issued after the piece's blocks were
    /// handed out as [`Output::WriteBlock`]s.
    HashPiece {
        /// The piece.
        piece: u32,
        /// Its SHA-1 from the metainfo.
        expected: Sha1Hash,
    },
    /// Close the connection (no [`PeerInput::Closed`] needed after).
    Disconnect {
        /// Connection handle.
        peer: PeerKey,
        /// Why.
        reason: DisconnectReason,
    },
    /// Something happened.
    Event(Event),
    /// Call [`Torrent::handle`] with [`Input::Timeout`] at this instant.
    Timeout(Instant),
}

/// One connection as a user interface shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// Connection handle.
    pub peer: PeerKey,
    /// Its peer id (zeros until the handshake).
    pub peer_id: PeerId,
    /// Handshake done.
    pub ready: bool,
    /// We refuse to upload to it.
    pub am_choking: bool,
    /// We want its pieces.
    pub am_interested: bool,
    /// It refuses to upload to us.
    pub peer_choking: bool,
    /// It wants our pieces.
    pub peer_interested: bool,
    /// It failed to answer a request in time and sent nothing since.
    pub snubbed: bool,
    /// Recent download rate from it, bytes per second.
    pub download_rate: u64,
    /// Recent upload rate to it, bytes per second.
    pub upload_rate: u64,
    /// Our requests in flight to it.
    pub requests_in_flight: usize,
    /// It has every piece.
    pub seed: bool,
    /// The id it wants `ut_pex` on (its extension handshake), if any;
    /// always `None` for a private torrent.
    pub ut_pex: Option<u8>,
    /// The listening port of its extension handshake (`p`), if it gave one.
    pub listen_port: Option<u16>,
}

/// Transfer totals.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TorrentStats {
    /// Payload bytes received that we kept.
    pub downloaded: u64,
    /// Payload bytes sent.
    pub uploaded: u64,
    /// Payload bytes received and thrown away (duplicates, bad pieces).
    pub wasted: u64,
    /// Bytes of pieces we still lack.
    pub left: u64,
    /// Bytes of the pieces not skipped (every piece's, by default).
    pub wanted: u64,
    /// Bytes of the pieces not skipped that are verified.
    pub wanted_done: u64,
}

#[derive(Debug)]
struct Conn {
    decoder: Decoder,
    ready: bool,
    peer_id: PeerId,
    fast: bool,
    extended: bool,
    am_choking: bool,
    am_interested: bool,
    am_interested_since: Option<Instant>,
    peer_choking: bool,
    peer_interested: bool,
    connected_at: Instant,
    last_recv_at: Instant,
    last_sent_at: Instant,
    last_data_at: Option<Instant>,
    /// Last time this peer was of use: its handshake, either side's
    /// interest starting or ending (it was of use until then), a new block
    /// either way. Orders who gives way first.
    useful_at: Instant,
    /// Our requests in flight and when they were sent.
    sent_requests: BTreeMap<BlockRef, Instant>,
    /// The peer's requests handed to the adapter as reads.
    reads: BTreeSet<BlockRef>,
    peer_reqq: Option<u32>,
    /// The id the peer wants `ut_metadata` messages on (BEP 9), if any.
    peer_ut_metadata: Option<u8>,
    /// The id the peer wants `ut_pex` messages on (BEP 11), if any.
    peer_ut_pex: Option<u8>,
    /// The listening port of the peer's extension handshake, if any.
    peer_listen_port: Option<u16>,
    down_window: u64,
    up_window: u64,
    /// Block bytes sent to the peer since it connected.
    uploaded: u64,
    down_rate: u64,
    up_rate: u64,
    invalid_blocks: u32,
    /// A request to this peer timed out and no block came since: it gets
    /// one request at a time and is served last.
    snubbed: bool,
    /// Slow start (as libtorrent and TCP): until the measured rate stops
    /// growing, the request queue grows by one per block received, so a
    /// fast peer is not held to two requests until the first rate tick.
    slow_start: bool,
    /// The queue depth slow start has reached.
    slow_start_depth: u32,
    /// The rate at the previous tick, to see it stop growing.
    prev_down_rate: u64,
}

/// One torrent's swarm logic. See the module docs for the driving order.
#[derive(Debug)]
pub struct Torrent {
    config: TorrentConfig,
    info_hash: InfoHash,
    piece_hashes: Vec<Sha1Hash>,
    /// The exact `info` bytes, served to peers by BEP 9.
    info_bytes: Bytes,
    picker: Picker,
    choker: Choker,
    conns: BTreeMap<PeerKey, Conn>,
    /// Trust points per peer (see the module docs); bounded by the peers
    /// that ever contributed a block, entries leave with the peer.
    trust: BTreeMap<PeerKey, i32>,
    /// Pieces sent to the adapter for hashing.
    hashing: BTreeSet<u32>,
    out: VecDeque<Output>,
    tx: BTreeMap<PeerKey, Vec<u8>>,
    next_tick: Instant,
    next_choke: Instant,
    stats: TorrentStats,
    total_length: u64,
    completed_reported: bool,
    /// [`Event::WantedComplete`] was sent and no piece became wanted since.
    wanted_reported: bool,
}

impl From<PeerInput> for Input {
    fn from(p: PeerInput) -> Input {
        Input::Peer(p)
    }
}

impl Torrent {
    /// A torrent for `meta`, of which the pieces in `have` are already on
    /// disk and verified (pass an empty bitfield for a fresh download).
    pub fn new(config: TorrentConfig, meta: &Metainfo, have: &Bitfield, now: Instant, seed: u64) -> Torrent {
        let (info_hash, piece_length, total_length) = (meta.info_hash, meta.piece_length, meta.total_length);
        let piece_hashes = meta.pieces.clone();
        let mut config = config;
        config.private |= meta.private;
        let mut picker = Picker::new(piece_length, total_length, config.picker, seed);
        assert_eq!(picker.piece_count() as usize, piece_hashes.len(), "piece hashes must cover the content");
        assert_eq!(have.len(), picker.piece_count(), "have bitfield of the wrong length");
        for p in have.iter_ones() {
            picker.piece_verified(p);
        }
        let choker = Choker::new(config.choker, now, seed ^ 0x9e37_79b9_7f4a_7c15);
        let left = (0..picker.piece_count()).filter(|p| !have.get(*p)).map(|p| picker.piece_size(p)).sum();
        Torrent {
            next_tick: now + config.tick,
            next_choke: now + config.choke_interval,
            config,
            info_hash,
            piece_hashes,
            info_bytes: Bytes::from(meta.info_bytes.clone()),
            picker,
            choker,
            conns: BTreeMap::new(),
            trust: BTreeMap::new(),
            hashing: BTreeSet::new(),
            out: VecDeque::new(),
            tx: BTreeMap::new(),
            stats: TorrentStats { left, ..TorrentStats::default() },
            total_length,
            completed_reported: have.is_full(),
            wanted_reported: have.is_full(),
        }
    }

    // ---- getters ----

    /// Verified pieces.
    pub fn have(&self) -> &Bitfield {
        self.picker.have()
    }

    /// True once every piece is verified.
    pub fn is_complete(&self) -> bool {
        self.picker.is_complete()
    }

    /// True once every piece not skipped is verified (see
    /// [`Input::SetPiecePriorities`]); the same as
    /// [`Torrent::is_complete`] while nothing is skipped.
    pub fn wanted_complete(&self) -> bool {
        self.picker.wanted_complete()
    }

    /// Piece `p`'s priority (0 skip, 1 normal, 2 high).
    pub fn piece_priority(&self, p: u32) -> u8 {
        self.picker.priority(p)
    }

    /// Transfer totals.
    pub fn stats(&self) -> TorrentStats {
        TorrentStats { wanted: self.picker.wanted_bytes(), wanted_done: self.picker.wanted_done_bytes(), ..self.stats }
    }

    /// Every live connection, in key order (for progress displays).
    pub fn peers(&self) -> Vec<PeerInfo> {
        self.conns
            .iter()
            .map(|(k, c)| PeerInfo {
                peer: *k,
                peer_id: c.peer_id,
                ready: c.ready,
                am_choking: c.am_choking,
                am_interested: c.am_interested,
                peer_choking: c.peer_choking,
                peer_interested: c.peer_interested,
                snubbed: c.snubbed,
                download_rate: c.down_rate,
                upload_rate: c.up_rate,
                requests_in_flight: c.sent_requests.len(),
                seed: self.picker.is_seed(*k),
                ut_pex: c.peer_ut_pex.filter(|_| !self.config.private),
                listen_port: c.peer_listen_port,
            })
            .collect()
    }

    /// Live connections (handshaken or not).
    pub fn peer_count(&self) -> usize {
        self.conns.len()
    }

    /// The peer that gives way to a newcomer when every slot is taken
    /// ([`Input::MakeRoom`]), or `None` if every peer is worth keeping.
    /// First those that have not sent their handshake, the oldest
    /// connection first; then those that have been of no use for
    /// [`TorrentConfig::useless_after`] (neither side interested, no
    /// block either way), idle longest first. Both kinds are taken first
    /// among those older than [`TorrentConfig::newcomer_grace`], then
    /// among the younger. Ties go to the lowest key, so the choice is
    /// deterministic.
    pub fn least_useful(&self, now: Instant) -> Option<PeerKey> {
        let grace = self.config.newcomer_grace;
        let old = |at: Instant| now.saturating_duration_since(at) >= grace;
        let waiting = |settled: bool| {
            self.conns
                .iter()
                .filter(|(_, c)| !c.ready && old(c.connected_at) == settled)
                .min_by_key(|(k, c)| (c.connected_at, **k))
                .map(|(k, _)| *k)
        };
        let useless = |settled: bool| {
            self.conns
                .iter()
                .filter(|(_, c)| {
                    c.ready
                        && !c.peer_interested
                        && !c.am_interested
                        && now.saturating_duration_since(c.useful_at) >= self.config.useless_after
                        && old(c.useful_at) == settled
                })
                .min_by_key(|(k, c)| (c.useful_at, **k))
                .map(|(k, _)| *k)
        };
        waiting(true).or_else(|| useless(true)).or_else(|| waiting(false)).or_else(|| useless(false))
    }

    /// Checks the machine's bookkeeping against the picker's; for tests
    /// and fuzzing.
    pub fn check_invariants(&self) {
        self.picker.check_invariants();
        for (k, c) in &self.conns {
            let picker_side: BTreeSet<BlockRef> = self.picker.outstanding(*k).into_iter().collect();
            for r in c.sent_requests.keys() {
                assert!(picker_side.contains(r), "request in flight unknown to the picker");
                assert!(self.picker.priority(r.index) > 0, "request in flight for a skipped piece");
            }
            assert!(c.reads.len() <= self.config.peer_requests_max, "read queue over its limit");
            assert!(c.sent_requests.len() as u32 <= self.config.our_requests_max, "too many requests in flight");
        }
        assert!(self.conns.len() <= self.config.peers_max, "too many peers");
    }

    /// The torrent's infohash.
    pub fn info_hash(&self) -> InfoHash {
        self.info_hash
    }

    /// Total content length.
    pub fn total_length(&self) -> u64 {
        self.total_length
    }

    // ---- outputs ----

    /// The next thing to do; drain until [`Output::Timeout`].
    pub fn poll_output(&mut self) -> Output {
        self.flush_tx();
        self.out.pop_front().unwrap_or(Output::Timeout(self.next_tick))
    }

    fn flush_tx(&mut self) {
        for (to, bytes) in std::mem::take(&mut self.tx) {
            if !bytes.is_empty() {
                self.out.push_back(Output::Transmit(Transmit { to, bytes }));
            }
        }
    }

    fn send(&mut self, now: Instant, peer: PeerKey, m: &Message) {
        if let Some(c) = self.conns.get_mut(&peer) {
            c.last_sent_at = now;
            m.encode(self.tx.entry(peer).or_default());
        }
    }

    fn disconnect(&mut self, peer: PeerKey, reason: DisconnectReason) {
        self.trust.remove(&peer);
        if self.conns.remove(&peer).is_some() {
            self.picker.peer_left(peer);
            self.tx.remove(&peer);
            self.out.push_back(Output::Disconnect { peer, reason });
        }
    }

    // ---- inputs ----

    /// Feeds one input; then drain [`Torrent::poll_output`].
    pub fn handle(&mut self, now: Instant, input: Input) {
        match input {
            Input::Peer(PeerInput::Connected { peer }) => self.on_connected(now, peer),
            Input::Peer(PeerInput::Bytes { peer, bytes }) => self.on_bytes(now, peer, bytes),
            Input::Peer(PeerInput::Closed { peer, .. }) => {
                self.trust.remove(&peer);
                if self.conns.remove(&peer).is_some() {
                    self.picker.peer_left(peer);
                    self.tx.remove(&peer);
                    self.fill_all(now);
                }
            }
            Input::BlockRead { peer, block, data } => self.on_block_read(now, peer, block, data),
            Input::PieceChecked { piece, ok } => self.on_checked(now, piece, ok),
            Input::WriteFailed { piece } => {
                if piece < self.picker.piece_count() && !self.picker.have().get(piece) {
                    self.hashing.remove(&piece);
                    let _ = self.picker.piece_failed(piece);
                    self.fill_all(now);
                }
            }
            Input::Timeout => self.on_timeout(now),
            Input::MakeRoom => {
                if let Some(peer) = self.least_useful(now) {
                    self.disconnect(peer, DisconnectReason::GaveWay);
                }
            }
            Input::SetPiecePriorities(priorities) => self.on_priorities(now, &priorities),
        }
    }

    fn on_priorities(&mut self, now: Instant, priorities: &[u8]) {
        for (peer, r) in self.picker.set_priorities(priorities) {
            if let Some(c) = self.conns.get_mut(&peer) {
                if c.sent_requests.remove(&r).is_some() {
                    self.send(now, peer, &Message::Cancel(r));
                }
            }
        }
        // Interest follows what we want: a peer with only skipped pieces
        // is of no interest any more, one with newly wanted ones is.
        let peers: Vec<PeerKey> = self.conns.iter().filter(|(_, c)| c.ready).map(|(k, _)| *k).collect();
        for p in peers {
            self.update_interest(now, p);
        }
        self.report_wanted_complete();
        self.fill_all(now);
    }

    /// Sends [`Event::WantedComplete`] when every wanted piece is in, once
    /// per time it becomes true.
    fn report_wanted_complete(&mut self) {
        let done = self.picker.wanted_complete();
        if done && !self.wanted_reported {
            self.out.push_back(Output::Event(Event::WantedComplete));
        }
        self.wanted_reported = done;
    }

    fn on_connected(&mut self, now: Instant, peer: PeerKey) {
        if self.conns.contains_key(&peer) {
            return;
        }
        if self.conns.len() >= self.config.peers_max {
            self.out.push_back(Output::Disconnect { peer, reason: DisconnectReason::TooManyPeers });
            return;
        }
        let decoder =
            Decoder::new(DecoderConfig { piece_count: self.picker.piece_count(), ..DecoderConfig::default() });
        self.conns.insert(
            peer,
            Conn {
                decoder,
                ready: false,
                peer_id: [0; 20],
                fast: false,
                extended: false,
                am_choking: true,
                am_interested: false,
                am_interested_since: None,
                peer_choking: true,
                peer_interested: false,
                connected_at: now,
                last_recv_at: now,
                last_sent_at: now,
                last_data_at: None,
                useful_at: now,
                sent_requests: BTreeMap::new(),
                reads: BTreeSet::new(),
                peer_reqq: None,
                peer_ut_metadata: None,
                peer_ut_pex: None,
                peer_listen_port: None,
                down_window: 0,
                up_window: 0,
                uploaded: 0,
                down_rate: 0,
                up_rate: 0,
                invalid_blocks: 0,
                snubbed: false,
                slow_start: true,
                slow_start_depth: SLOW_START_DEPTH_INITIAL,
                prev_down_rate: 0,
            },
        );
        let mut hs = Vec::with_capacity(Handshake::LEN);
        let mut handshake = Handshake::new(self.info_hash, self.config.peer_id);
        if self.config.dht_port.is_some() {
            handshake.reserved[7] |= 0x01; // BEP 5: we run a DHT node
        }
        handshake.encode(&mut hs);
        self.tx.entry(peer).or_default().extend_from_slice(&hs);
    }

    fn on_bytes(&mut self, now: Instant, peer: PeerKey, bytes: Bytes) {
        let Some(c) = self.conns.get_mut(&peer) else {
            return;
        };
        c.last_recv_at = now;
        // Blocks are sliced out of the chunk, not copied.
        c.decoder.feed_bytes(bytes);
        if !c.ready {
            match c.decoder.take_handshake() {
                None => return,
                Some(Err(e)) => return self.disconnect(peer, DisconnectReason::Protocol(e)),
                Some(Ok(h)) => {
                    if h.info_hash != self.info_hash {
                        return self.disconnect(peer, DisconnectReason::WrongInfoHash);
                    }
                    if h.peer_id == self.config.peer_id {
                        return self.disconnect(peer, DisconnectReason::SelfConnection);
                    }
                    self.on_handshake(now, peer, h);
                }
            }
        }
        loop {
            let Some(c) = self.conns.get_mut(&peer) else {
                return;
            };
            match c.decoder.next() {
                None => break,
                Some(Ok(m)) => self.on_message(now, peer, m),
                Some(Err(e)) if e.is_fatal() => return self.disconnect(peer, DisconnectReason::Protocol(e)),
                Some(Err(_)) => {}
            }
        }
        self.fill(now, peer);
    }

    fn on_handshake(&mut self, now: Instant, peer: PeerKey, h: Handshake) {
        let c = self.conns.get_mut(&peer).expect("connected");
        c.ready = true;
        c.useful_at = now;
        c.peer_id = h.peer_id;
        c.fast = h.supports_fast();
        c.extended = h.supports_extended();
        let (fast, extended) = (c.fast, c.extended);
        let peer_dht = h.supports_dht();
        self.picker.peer_have_none(peer);
        self.out.push_back(Output::Event(Event::PeerReady { peer, peer_id: h.peer_id }));
        let have = self.picker.have();
        let msg = if fast && have.is_full() {
            Message::HaveAll
        } else if fast && have.count() == 0 {
            Message::HaveNone
        } else if have.count() > 0 {
            Message::Bitfield(Bytes::from(have.to_wire()))
        } else {
            Message::KeepAlive
        };
        if msg != Message::KeepAlive {
            self.send(now, peer, &msg);
        }
        // BEP 6 wants the bitfield (or have-all/none) first; the extension
        // handshake follows it.
        if extended {
            let mut ext = ExtHandshake {
                v: Some(self.config.client_name.clone()),
                reqq: Some(self.config.peer_requests_max as u32),
                metadata_size: Some(self.info_bytes.len() as u64),
                p: self.config.listen_port,
                ..ExtHandshake::default()
            };
            ext.m.insert("ut_metadata".into(), UT_METADATA_ID);
            if !self.config.private {
                ext.m.insert("ut_pex".into(), UT_PEX_ID);
            }
            self.send(now, peer, &ext.to_message());
        }
        if let (Some(port), true) = (self.config.dht_port, peer_dht) {
            self.send(now, peer, &Message::Port(port));
        }
        // Seeding, the choker lends a free slot to the new peer now rather
        // than at its next round: unchoked before it is interested, it can
        // request the moment it is. Only when a slot is free: with every
        // slot taken the round would change nothing, and a flood of
        // handshakes (peers holding slots, reconnecting as they are
        // dropped) would run a round for each.
        if self.picker.is_complete() {
            let unchoked = self.conns.values().filter(|c| c.ready && !c.am_choking).count();
            if unchoked < self.config.choker.unchoke_slots {
                self.rechoke(now);
            }
        }
    }

    fn update_interest(&mut self, now: Instant, peer: PeerKey) {
        if self.picker.is_complete() && self.picker.is_seed(peer) {
            return self.disconnect(peer, DisconnectReason::BothSeeds);
        }
        let want = self.picker.is_interesting(peer);
        let Some(c) = self.conns.get_mut(&peer) else {
            return;
        };
        if c.am_interested == want {
            return;
        }
        c.am_interested = want;
        c.am_interested_since = want.then_some(now);
        c.useful_at = now;
        let m = if want { Message::Interested } else { Message::NotInterested };
        self.send(now, peer, &m);
    }

    fn on_message(&mut self, now: Instant, peer: PeerKey, m: Message) {
        let n = self.picker.piece_count();
        let c = self.conns.get_mut(&peer).expect("connected");
        let fast = c.fast;
        match m {
            Message::KeepAlive => {}
            Message::Choke => {
                c.peer_choking = true;
                // Without the fast extension a choke drops every request.
                // With it (BEP 6) it drops none: the peer rejects the ones
                // it will not serve, one by one, and the blocks it already
                // sent still arrive. Freeing them here had them asked of
                // another peer while the first copy was on its way: on a
                // capped link a few seconds of blocks (`sim swarm`, equal
                // 4 MiB/s caps: 0.9 % of the file received twice by every
                // leecher). A peer that neither rejects nor sends is
                // caught by the request timeout.
                if !c.fast {
                    for (r, _) in std::mem::take(&mut c.sent_requests) {
                        self.picker.request_failed(peer, r);
                    }
                }
            }
            Message::Unchoke => c.peer_choking = false,
            Message::Interested => {
                c.peer_interested = true;
                c.useful_at = now;
                self.rechoke(now);
            }
            Message::NotInterested => {
                // Wanting our pieces until now made it of use until now.
                if c.peer_interested {
                    c.useful_at = now;
                }
                c.peer_interested = false;
                self.rechoke(now);
            }
            Message::Have(i) => {
                if i >= n {
                    return self.disconnect(peer, DisconnectReason::Misbehaved("have out of range"));
                }
                self.picker.peer_have(peer, i);
                self.update_interest(now, peer);
            }
            // BEP 3 wants the bitfield first, but aria2 sends another part
            // way through a connection (after some haves): as libtorrent
            // does, a later one replaces what we knew the peer has. Only a
            // bitfield that does not fit the torrent is refused (the
            // decoder checked its length and spare bits already).
            Message::Bitfield(b) => {
                match Bitfield::from_wire(&b, n) {
                    Some(bf) => self.picker.peer_bitfield(peer, &bf),
                    None => return self.disconnect(peer, DisconnectReason::Misbehaved("bad bitfield")),
                }
                self.update_interest(now, peer);
            }
            // Have-all and have-none are BEP 6's: without the fast
            // extension negotiated they are a broken peer. With it, a late
            // one is an update like a late bitfield.
            Message::HaveAll | Message::HaveNone if !fast => {
                self.disconnect(peer, DisconnectReason::Misbehaved("have-all/none without the fast extension"));
            }
            Message::HaveAll => {
                self.picker.peer_have_all(peer);
                self.update_interest(now, peer);
            }
            Message::HaveNone => {
                self.picker.peer_have_none(peer);
                self.update_interest(now, peer);
            }
            Message::Request(r) => self.on_request(now, peer, r),
            Message::Cancel(r) => {
                c.reads.remove(&r);
            }
            Message::Piece { index, begin, data } => self.on_piece(now, peer, index, begin, data),
            Message::Reject(r) => {
                if c.sent_requests.remove(&r).is_some() {
                    self.picker.request_failed(peer, r);
                }
            }
            Message::Extended { id: 0, payload } => {
                if let Ok(h) = ExtHandshake::parse(&payload) {
                    c.peer_reqq = h.reqq;
                    c.peer_ut_metadata = h.m.get("ut_metadata").copied().filter(|i| *i != 0);
                    c.peer_ut_pex = h.m.get("ut_pex").copied().filter(|i| *i != 0);
                    c.peer_listen_port = h.p.filter(|p| *p != 0);
                    if let Some(port) = h.p.filter(|p| *p != 0) {
                        self.out.push_back(Output::Event(Event::PeerListens { peer, port }));
                    }
                }
            }
            Message::Extended { id: UT_METADATA_ID, payload } => self.on_metadata(now, peer, &payload),
            Message::Extended { id: UT_PEX_ID, payload } if !self.config.private => {
                if let Ok(m) = super::pex::PexMessage::parse(&payload) {
                    if !m.added.is_empty() {
                        self.out.push_back(Output::Event(Event::PexPeers { peer, added: m.added }));
                    }
                }
            }
            Message::Port(port) if port != 0 => {
                self.out.push_back(Output::Event(Event::PeerDhtPort { peer, port }));
            }
            Message::Port(_) | Message::Suggest(_) | Message::AllowedFast(_) | Message::Extended { .. } => {}
        }
    }

    /// Serves BEP 9 requests for our `info` dictionary.
    fn on_metadata(&mut self, now: Instant, peer: PeerKey, payload: &Bytes) {
        let Some(c) = self.conns.get(&peer) else {
            return;
        };
        let Some(their_id) = c.peer_ut_metadata else {
            return;
        };
        let Ok(MetadataMessage::Request { piece }) = MetadataMessage::parse(payload) else {
            return;
        };
        let start = piece as usize * METADATA_PIECE_LEN;
        let reply = if start < self.info_bytes.len() {
            let end = (start + METADATA_PIECE_LEN).min(self.info_bytes.len());
            MetadataMessage::Data {
                piece,
                total_size: self.info_bytes.len() as u64,
                data: self.info_bytes.slice(start..end),
            }
        } else {
            MetadataMessage::Reject { piece }
        };
        if matches!(reply, MetadataMessage::Data { .. }) {
            // A magnet leecher fetching our `info` is not interested yet.
            if let Some(c) = self.conns.get_mut(&peer) {
                c.useful_at = now;
            }
        }
        let m = Message::Extended { id: their_id, payload: Bytes::from(reply.encode()) };
        self.send(now, peer, &m);
    }

    fn on_request(&mut self, now: Instant, peer: PeerKey, r: BlockRef) {
        let valid = r.length > 0
            && r.length <= BLOCK_LEN
            && self.picker.have().get(r.index)
            && (r.begin as u64 + r.length as u64) <= self.picker.piece_size(r.index);
        let c = self.conns.get_mut(&peer).expect("connected");
        let refuse = c.am_choking || !valid || c.reads.len() >= self.config.peer_requests_max;
        if refuse {
            if c.fast {
                self.send(now, peer, &Message::Reject(r));
            }
            return;
        }
        if c.reads.insert(r) {
            self.out.push_back(Output::ReadBlock { peer, block: r });
        }
    }

    fn on_piece(&mut self, now: Instant, peer: PeerKey, index: u32, begin: u32, data: Bytes) {
        let r = BlockRef { index, begin, length: data.len() as u32 };
        let len = data.len() as u64;
        let c = self.conns.get_mut(&peer).expect("connected");
        c.sent_requests.remove(&r);
        c.last_data_at = Some(now);
        c.snubbed = false;
        c.down_window += len;
        if c.slow_start {
            c.slow_start_depth = (c.slow_start_depth + 1).min(self.config.our_requests_max);
        }
        match self.picker.block_received(peer, r) {
            Received::New { cancel, piece_complete } => {
                c.useful_at = now;
                self.stats.downloaded += len;
                for other in cancel {
                    if let Some(oc) = self.conns.get_mut(&other) {
                        oc.sent_requests.remove(&r);
                        self.send(now, other, &Message::Cancel(r));
                    }
                }
                self.out.push_back(Output::WriteBlock { piece: index, begin, data });
                if piece_complete && self.hashing.insert(index) {
                    self.out.push_back(Output::HashPiece { piece: index, expected: self.piece_hashes[index as usize] });
                }
            }
            Received::Duplicate | Received::Unrequested => self.stats.wasted += len,
            Received::Invalid => {
                self.stats.wasted += len;
                c.invalid_blocks += 1;
                if c.invalid_blocks > self.config.invalid_blocks_max {
                    self.disconnect(peer, DisconnectReason::Misbehaved("unrequested blocks"));
                }
            }
        }
    }

    fn on_block_read(&mut self, now: Instant, peer: PeerKey, block: BlockRef, data: Bytes) {
        let Some(c) = self.conns.get_mut(&peer) else {
            return;
        };
        // Cancelled or choked since: drop it.
        if !c.reads.remove(&block) || c.am_choking || data.len() != block.length as usize {
            return;
        }
        c.up_window += data.len() as u64;
        c.uploaded += data.len() as u64;
        c.last_sent_at = now;
        c.useful_at = now;
        self.stats.uploaded += data.len() as u64;
        let buf = self.tx.entry(peer).or_default();
        encode_piece_header(block.index, block.begin, block.length, buf);
        buf.extend_from_slice(&data);
    }

    fn on_checked(&mut self, now: Instant, piece: u32, ok: bool) {
        if !self.hashing.remove(&piece) {
            return;
        }
        if ok {
            for p in self.picker.contributors(piece) {
                if !self.conns.contains_key(&p) {
                    continue;
                }
                let t = self.trust.entry(p).or_insert(0);
                *t = (*t + 1).min(self.config.trust_max);
            }
            self.picker.piece_verified(piece);
            self.stats.left = self.stats.left.saturating_sub(self.picker.piece_size(piece));
            self.out.push_back(Output::Event(Event::PieceVerified(piece)));
            let peers: Vec<PeerKey> = self.conns.iter().filter(|(_, c)| c.ready).map(|(k, _)| *k).collect();
            for p in peers {
                self.send(now, p, &Message::Have(piece));
                if self.conns.get(&p).is_some_and(|c| c.am_interested) {
                    self.update_interest(now, p);
                }
            }
            self.report_wanted_complete();
            if self.picker.is_complete() && !self.completed_reported {
                self.completed_reported = true;
                self.out.push_back(Output::Event(Event::Completed));
                let seeds: Vec<PeerKey> = self.conns.keys().copied().filter(|p| self.picker.is_seed(*p)).collect();
                for p in seeds {
                    self.disconnect(p, DisconnectReason::BothSeeds);
                }
            }
        } else {
            let blamed = self.picker.piece_failed(piece);
            self.stats.wasted += self.picker.piece_size(piece);
            let sole = blamed.len() == 1;
            for &p in &blamed {
                let t = if self.conns.contains_key(&p) {
                    let t = self.trust.entry(p).or_insert(0);
                    *t -= 2;
                    *t
                } else {
                    0
                };
                if sole || t <= self.config.trust_ban_at {
                    self.out.push_back(Output::Event(Event::PeerBanned(p)));
                    self.disconnect(p, DisconnectReason::Banned);
                }
            }
            self.out.push_back(Output::Event(Event::HashFailed { piece, blamed: blamed.into_iter().collect() }));
        }
        self.fill_all(now);
    }

    /// Tops up `peer`'s request pipeline.
    fn fill(&mut self, now: Instant, peer: PeerKey) {
        let Some(c) = self.conns.get(&peer) else {
            return;
        };
        if !c.ready || c.peer_choking || !c.am_interested {
            return;
        }
        let mut depth = if c.snubbed {
            1
        } else {
            let by_rate = request_queue_depth(c.down_rate, self.config.target_request_delay, BLOCK_LEN);
            let slow = if c.slow_start { c.slow_start_depth } else { 0 };
            by_rate.max(slow).min(self.config.our_requests_max)
        };
        if let Some(q) = c.peer_reqq {
            depth = depth.min(q.max(1));
        }
        let inflight = c.sent_requests.len() as u32;
        if inflight >= depth {
            return;
        }
        let picks = self.picker.pick(peer, (depth - inflight) as usize);
        let c = self.conns.get_mut(&peer).expect("checked above");
        for r in &picks {
            c.sent_requests.insert(*r, now);
        }
        for r in picks {
            self.send(now, peer, &Message::Request(r));
        }
    }

    fn fill_all(&mut self, now: Instant) {
        // Responsive peers first: freed blocks should go to them.
        let mut order: Vec<(bool, PeerKey)> = self.conns.iter().map(|(k, c)| (c.snubbed, *k)).collect();
        order.sort();
        let peers = order.into_iter().map(|(_, k)| k);
        for p in peers {
            self.fill(now, p);
        }
    }

    /// What the choker needs to know about every handshaken peer.
    fn peer_stats(&self) -> Vec<PeerStats> {
        self.conns
            .iter()
            .filter(|(_, c)| c.ready)
            .map(|(k, c)| PeerStats {
                key: *k,
                peer_interested: c.peer_interested,
                am_interested_since: c.am_interested_since,
                last_data_at: c.last_data_at,
                connected_at: c.connected_at,
                download_rate: c.down_rate,
                upload_rate: c.up_rate,
                peer_pieces: self.picker.peer_pieces(*k),
                uploaded: c.uploaded,
            })
            .collect()
    }

    fn rechoke(&mut self, now: Instant) {
        let stats = self.peer_stats();
        // Finished (nothing more wanted) chokes as a seed does.
        let seeding = self.picker.wanted_complete();
        let unchoke = self.choker.decide(now, seeding, &stats);
        for s in stats {
            let c = self.conns.get_mut(&s.key).expect("listed above");
            let choke = !unchoke.contains(&s.key);
            if c.am_choking == choke {
                continue;
            }
            c.am_choking = choke;
            if choke {
                let dropped = std::mem::take(&mut c.reads);
                let fast = c.fast;
                self.send(now, s.key, &Message::Choke);
                if fast {
                    for r in dropped {
                        self.send(now, s.key, &Message::Reject(r));
                    }
                }
            } else {
                self.send(now, s.key, &Message::Unchoke);
            }
        }
    }

    fn on_timeout(&mut self, now: Instant) {
        if now < self.next_tick {
            return;
        }
        let secs = self.config.tick.as_micros().max(1);
        let peers: Vec<PeerKey> = self.conns.keys().copied().collect();
        for p in peers {
            let c = self.conns.get_mut(&p).expect("listed above");
            // Rates: exponential average over ticks, in bytes per second.
            let down = c.down_window as u128 * 1_000_000 / secs as u128;
            let up = c.up_window as u128 * 1_000_000 / secs as u128;
            c.down_rate = ((c.down_rate as u128 * 4 + down) / 5) as u64;
            c.up_rate = ((c.up_rate as u128 * 4 + up) / 5) as u64;
            c.down_window = 0;
            c.up_window = 0;
            // Slow start ends once the rate grows by less than an eighth a tick.
            if c.slow_start && c.down_rate > 0 && c.down_rate <= c.prev_down_rate + c.prev_down_rate / 8 {
                c.slow_start = false;
            }
            c.prev_down_rate = c.down_rate;
            if now.saturating_duration_since(c.last_recv_at) >= self.config.idle_timeout {
                self.disconnect(p, DisconnectReason::Idle);
                continue;
            }
            let timeout = self.config.request_timeout;
            let expired: Vec<BlockRef> = c
                .sent_requests
                .iter()
                .filter(|(_, at)| now.saturating_duration_since(**at) >= timeout)
                .map(|(r, _)| *r)
                .collect();
            if !expired.is_empty() {
                c.snubbed = true;
                c.slow_start = false;
            }
            for r in expired {
                c.sent_requests.remove(&r);
                self.picker.request_failed(p, r);
            }
            let c = self.conns.get_mut(&p).expect("still connected");
            if c.ready && now.saturating_duration_since(c.last_sent_at) >= self.config.keepalive_interval {
                self.send(now, p, &Message::KeepAlive);
            }
        }
        // Seeding, a slot whose turn is over goes round at the next tick,
        // not at the next round: turns are short (see
        // `ChokerConfig::seed_slot_bytes`).
        let turn_over = || self.picker.wanted_complete() && self.choker.seed_turn_over(now, &self.peer_stats());
        if now >= self.next_choke || turn_over() {
            self.rechoke(now);
            self.next_choke = now + self.config.choke_interval;
        }
        self.fill_all(now);
        self.next_tick = now + self.config.tick;
    }
}
