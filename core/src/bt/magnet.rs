//! The metadata fetcher: from an infohash alone (a magnet link, or the
//! overlay's providers record) to a checked [`Metainfo`], by BEP 9 from
//! peers. Sans-IO like [`super::torrent::Torrent`]:
//!
//! * **Inputs** ([`MetadataFetch::handle`]): [`Input`]: the shared
//!   [`PeerInput`] (connected, bytes, closed) and the timeout.
//! * **Outputs** ([`MetadataFetch::poll_output`]), drained until
//!   [`Output::Timeout`]: bytes to send, peers to drop, and once
//!   [`Event::Done`] with the torrent. Then make a
//!   [`super::torrent::Torrent`] and connect to the peers again.
//!
//! Each piece is asked of one peer at a time; a piece not answered within
//! [`FetchConfig::request_timeout`] goes to another peer. If the assembled
//! bytes don't hash to the infohash every contributor is dropped and the
//! fetch starts over.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;

use super::conn::{PeerInput, PeerKey};
use super::metadata::{MetadataAssembler, MetadataMessage};
use super::metainfo::{InfoHash, Limits, Metainfo};
use super::torrent::UT_METADATA_ID;
use super::wire::{Decoder, DecoderConfig, ExtHandshake, Handshake, Message, PeerId};
use crate::time::{Duration, Instant};
use crate::Transmit;

/// A parsed magnet link (BEP 9): `magnet:?xt=urn:btih:<40 hex or 32 base32>`
/// with optional `dn` (name), `tr` (trackers) and `x.pe` (peer addresses).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MagnetLink {
    /// The torrent.
    pub info_hash: InfoHash,
    /// Display name, if given.
    pub name: Option<String>,
    /// Tracker URLs, in order, at most [`MagnetLink::TRACKERS_MAX`].
    pub trackers: Vec<String>,
    /// Peer addresses (`host:port` text) to try, at most [`MagnetLink::PEERS_MAX`].
    pub peers: Vec<String>,
}

impl MagnetLink {
    /// Most trackers kept from one link.
    pub const TRACKERS_MAX: usize = 50;
    /// Most peers kept from one link.
    pub const PEERS_MAX: usize = 50;

    /// Parses a magnet URI; `None` if it is not one or has no usable
    /// BitTorrent v1 infohash. Unknown parameters are ignored.
    pub fn parse(uri: &str) -> Option<MagnetLink> {
        let query = uri.strip_prefix("magnet:?")?;
        let mut link =
            MagnetLink { info_hash: InfoHash::default(), name: None, trackers: Vec::new(), peers: Vec::new() };
        let mut found = false;
        for pair in query.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let text = || {
                let v = v.replace('+', " ");
                super::tracker::percent_decode(&v).and_then(|b| String::from_utf8(b).ok())
            };
            match k {
                "xt" => {
                    if let Some(h) = v.strip_prefix("urn:btih:") {
                        let ih = if h.len() == 40 { InfoHash::from_hex(h) } else { base32_20(h).map(InfoHash) };
                        if let Some(ih) = ih {
                            link.info_hash = ih;
                            found = true;
                        }
                    }
                }
                "dn" => link.name = text(),
                "tr" if link.trackers.len() < Self::TRACKERS_MAX => {
                    link.trackers.extend(text());
                }
                "x.pe" if link.peers.len() < Self::PEERS_MAX => link.peers.extend(text()),
                _ => {}
            }
        }
        found.then_some(link)
    }

    /// The link as a URI (hex infohash, parameters percent-encoded).
    pub fn to_uri(&self) -> String {
        let mut u = format!("magnet:?xt=urn:btih:{}", self.info_hash.to_hex());
        let enc = |s: &str| {
            let mut o = String::new();
            for &b in s.as_bytes() {
                if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                    o.push(b as char);
                } else {
                    o.push_str(&format!("%{b:02X}"));
                }
            }
            o
        };
        if let Some(n) = &self.name {
            u.push_str("&dn=");
            u.push_str(&enc(n));
        }
        for t in &self.trackers {
            u.push_str("&tr=");
            u.push_str(&enc(t));
        }
        for p in &self.peers {
            u.push_str("&x.pe=");
            u.push_str(&enc(p));
        }
        u
    }
}

/// RFC 4648 base32 (either case, no padding) of exactly 20 bytes.
fn base32_20(s: &str) -> Option<[u8; 20]> {
    if s.len() != 32 {
        return None;
    }
    let mut out = [0u8; 20];
    let mut acc: u64 = 0;
    let mut bits = 0;
    let mut i = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a',
            b'2'..=b'7' => c - b'2' + 26,
            _ => return None,
        };
        acc = (acc << 5) | v as u64;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out[i] = (acc >> bits) as u8;
            i += 1;
        }
    }
    Some(out)
}

/// Tuning and limits of a [`MetadataFetch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchConfig {
    /// Our peer id.
    pub peer_id: PeerId,
    /// Most connected peers; more are disconnected at once.
    pub peers_max: usize,
    /// A metadata request unanswered this long goes to another peer.
    pub request_timeout: Duration,
    /// A peer silent this long is dropped.
    pub idle_timeout: Duration,
    /// Largest metadata accepted, in bytes.
    pub metadata_size_max: usize,
    /// Requests in flight per peer.
    pub requests_per_peer: usize,
    /// Limits the fetched torrent must respect.
    pub limits: Limits,
    /// How often timers are checked.
    pub tick: Duration,
}

impl FetchConfig {
    /// Defaults around `peer_id`: 20 peers, 15 s request timeout, 60 s idle
    /// timeout, 16 MiB of metadata, 4 requests per peer, 1 s ticks.
    pub fn new(peer_id: PeerId) -> FetchConfig {
        FetchConfig {
            peer_id,
            peers_max: 20,
            request_timeout: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(60),
            metadata_size_max: super::metadata::METADATA_SIZE_MAX,
            requests_per_peer: 4,
            limits: Limits::default(),
            tick: Duration::from_secs(1),
        }
    }
}

/// What the adapter feeds a [`MetadataFetch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// Something happened on a peer connection: the same input the
    /// torrent machine takes (see [`super::conn`]).
    Peer(PeerInput),
    /// Time passed; early timeouts do nothing.
    Timeout,
}

impl From<PeerInput> for Input {
    fn from(p: PeerInput) -> Input {
        Input::Peer(p)
    }
}

/// Why the fetcher drops a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DisconnectReason {
    /// Bad handshake, wrong torrent, self-connection or a protocol error.
    Protocol,
    /// No `ut_metadata` support or an unusable size.
    NoMetadata,
    /// It sent pieces of metadata that did not hash right.
    BadMetadata,
    /// Too many connections.
    TooManyPeers,
    /// Silent for too long.
    Idle,
    /// The metadata is complete.
    Done,
}

/// What the fetcher reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The checked torrent; the fetcher is finished (every connection was
    /// dropped with [`DisconnectReason::Done`] just before).
    Done(Box<Metainfo>),
}

/// What the adapter must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send these bytes on connection `to`.
    Transmit(Transmit<PeerKey>),
    /// Close the connection (no [`PeerInput::Closed`] needed after).
    Disconnect {
        /// Connection handle.
        peer: PeerKey,
        /// Why.
        reason: DisconnectReason,
    },
    /// Something happened.
    Event(Event),
    /// Call [`MetadataFetch::handle`] with [`Input::Timeout`] then.
    Timeout(Instant),
}

#[derive(Debug)]
struct FConn {
    decoder: Decoder,
    ready: bool,
    ut_metadata: Option<u8>,
    /// The metadata size the peer announced.
    size: Option<u64>,
    last_recv_at: Instant,
    /// Pieces asked of this peer and when.
    asked: BTreeMap<u32, Instant>,
}

/// Fetches one torrent's metadata from peers.
#[derive(Debug)]
pub struct MetadataFetch {
    config: FetchConfig,
    info_hash: InfoHash,
    conns: BTreeMap<PeerKey, FConn>,
    asm: Option<MetadataAssembler>,
    /// Which peer sent each stored piece, for blame.
    sent_by: BTreeMap<u32, PeerKey>,
    out: VecDeque<Output>,
    next_tick: Instant,
    done: bool,
}

impl MetadataFetch {
    /// A fetcher for `info_hash`.
    pub fn new(config: FetchConfig, info_hash: InfoHash, now: Instant) -> MetadataFetch {
        MetadataFetch {
            next_tick: now + config.tick,
            config,
            info_hash,
            conns: BTreeMap::new(),
            asm: None,
            sent_by: BTreeMap::new(),
            out: VecDeque::new(),
            done: false,
        }
    }

    /// True once [`Event::Done`] was produced.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Live connections.
    pub fn peer_count(&self) -> usize {
        self.conns.len()
    }

    /// The next thing to do; drain until [`Output::Timeout`].
    pub fn poll_output(&mut self) -> Output {
        self.out.pop_front().unwrap_or(Output::Timeout(if self.done { Instant::NEVER } else { self.next_tick }))
    }

    fn send(&mut self, peer: PeerKey, m: &Message) {
        self.out.push_back(Output::Transmit(Transmit { to: peer, bytes: m.to_vec() }));
    }

    fn drop_peer(&mut self, peer: PeerKey, reason: DisconnectReason) {
        if self.conns.remove(&peer).is_some() {
            self.out.push_back(Output::Disconnect { peer, reason });
        }
    }

    /// Feeds one input; then drain [`MetadataFetch::poll_output`].
    pub fn handle(&mut self, now: Instant, input: Input) {
        if self.done {
            return;
        }
        match input {
            Input::Peer(PeerInput::Connected { peer }) => {
                if self.conns.contains_key(&peer) {
                    return;
                }
                if self.conns.len() >= self.config.peers_max {
                    self.out.push_back(Output::Disconnect { peer, reason: DisconnectReason::TooManyPeers });
                    return;
                }
                let decoder = Decoder::new(DecoderConfig::default());
                self.conns.insert(
                    peer,
                    FConn {
                        decoder,
                        ready: false,
                        ut_metadata: None,
                        size: None,
                        last_recv_at: now,
                        asked: BTreeMap::new(),
                    },
                );
                let mut hs = Vec::new();
                Handshake::new(self.info_hash, self.config.peer_id).encode(&mut hs);
                self.out.push_back(Output::Transmit(Transmit { to: peer, bytes: hs }));
            }
            Input::Peer(PeerInput::Bytes { peer, bytes }) => self.on_bytes(now, peer, &bytes),
            Input::Peer(PeerInput::Closed { peer, .. }) => {
                self.conns.remove(&peer);
                self.request_all(now);
            }
            Input::Timeout => self.on_timeout(now),
        }
    }

    fn on_bytes(&mut self, now: Instant, peer: PeerKey, bytes: &[u8]) {
        let Some(c) = self.conns.get_mut(&peer) else {
            return;
        };
        c.last_recv_at = now;
        c.decoder.feed(bytes);
        if !c.ready {
            match c.decoder.take_handshake() {
                None => return,
                Some(Ok(h))
                    if h.info_hash == self.info_hash && h.peer_id != self.config.peer_id && h.supports_extended() =>
                {
                    c.ready = true;
                    let fast = h.supports_fast();
                    if fast {
                        self.send(peer, &Message::HaveNone);
                    }
                    let mut ext = ExtHandshake::default();
                    ext.m.insert("ut_metadata".into(), UT_METADATA_ID);
                    self.send(peer, &ext.to_message());
                }
                Some(Ok(h)) if !h.supports_extended() => return self.drop_peer(peer, DisconnectReason::NoMetadata),
                Some(_) => return self.drop_peer(peer, DisconnectReason::Protocol),
            }
        }
        loop {
            if self.done {
                return;
            }
            let Some(c) = self.conns.get_mut(&peer) else {
                return;
            };
            match c.decoder.next() {
                None => break,
                Some(Ok(Message::Extended { id: 0, payload })) => self.on_ext_handshake(peer, &payload),
                Some(Ok(Message::Extended { id: UT_METADATA_ID, payload })) => self.on_metadata(peer, &payload),
                Some(Ok(_)) => {}
                Some(Err(e)) if e.is_fatal() => return self.drop_peer(peer, DisconnectReason::Protocol),
                Some(Err(_)) => {}
            }
        }
        self.request_all(now);
    }

    fn on_ext_handshake(&mut self, peer: PeerKey, payload: &[u8]) {
        let Ok(h) = ExtHandshake::parse(payload) else {
            return self.drop_peer(peer, DisconnectReason::Protocol);
        };
        let id = h.m.get("ut_metadata").copied().filter(|i| *i != 0);
        let (Some(id), Some(size)) = (id, h.metadata_size) else {
            return self.drop_peer(peer, DisconnectReason::NoMetadata);
        };
        // An impossible size is the peer's fault; a plausible one that
        // differs from another peer's is not decided here: one of them
        // lies, and which one only the hash tells (see `request_all`).
        if MetadataAssembler::new(self.info_hash, size, self.config.metadata_size_max).is_err() {
            return self.drop_peer(peer, DisconnectReason::NoMetadata);
        }
        if let Some(c) = self.conns.get_mut(&peer) {
            c.ut_metadata = Some(id);
            c.size = Some(size);
        }
    }

    fn on_metadata(&mut self, peer: PeerKey, payload: &Bytes) {
        let Ok(msg) = MetadataMessage::parse(payload) else {
            return self.drop_peer(peer, DisconnectReason::Protocol);
        };
        let c = self.conns.get_mut(&peer).expect("connected");
        match msg {
            MetadataMessage::Request { piece } => {
                // We have nothing to serve yet.
                if let Some(id) = c.ut_metadata {
                    let m = Message::Extended { id, payload: MetadataMessage::Reject { piece }.encode().into() };
                    self.send(peer, &m);
                }
            }
            MetadataMessage::Reject { piece } => {
                c.asked.remove(&piece);
                // It won't serve us: stop asking it.
                c.ut_metadata = None;
            }
            MetadataMessage::Data { piece, data, .. } => {
                if c.asked.remove(&piece).is_none() {
                    return;
                }
                let Some(asm) = self.asm.as_mut() else {
                    return;
                };
                match asm.add(piece, data, &self.config.limits) {
                    Ok(None) => {
                        self.sent_by.insert(piece, peer);
                    }
                    Ok(Some(meta)) => {
                        self.done = true;
                        let peers: Vec<PeerKey> = self.conns.keys().copied().collect();
                        for p in peers {
                            self.drop_peer(p, DisconnectReason::Done);
                        }
                        self.out.push_back(Output::Event(Event::Done(Box::new(meta))));
                    }
                    Err(super::metadata::MetadataError::BadPiece(_)) => {
                        self.drop_peer(peer, DisconnectReason::BadMetadata)
                    }
                    Err(_) => {
                        // Hash mismatch or an invalid torrent: blame every
                        // contributor and start over.
                        self.sent_by.insert(piece, peer);
                        let blamed: BTreeSet<PeerKey> = std::mem::take(&mut self.sent_by).into_values().collect();
                        for p in blamed {
                            self.drop_peer(p, DisconnectReason::BadMetadata);
                        }
                        self.asm = None;
                    }
                }
            }
        }
    }

    /// The metadata size to assemble: the one most able peers announce
    /// (ties: the smaller). Peers announcing another size wait unasked, and
    /// are used if this size fails its hash or loses all its peers.
    fn choose_size(&self) -> Option<u64> {
        let mut votes: BTreeMap<u64, usize> = BTreeMap::new();
        for c in self.conns.values().filter(|c| c.ut_metadata.is_some()) {
            if let Some(size) = c.size {
                *votes.entry(size).or_default() += 1;
            }
        }
        votes.into_iter().max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0))).map(|(size, _)| size)
    }

    /// Asks every able peer for pieces nobody is being asked for.
    fn request_all(&mut self, now: Instant) {
        let current = self.asm.as_ref().map(|a| a.size() as u64);
        let served =
            current.is_some_and(|size| self.conns.values().any(|c| c.ut_metadata.is_some() && c.size == Some(size)));
        // Nothing assembled yet: nothing lost by following the majority.
        let untouched = self.asm.as_ref().is_some_and(|a| a.missing().count() as u32 == a.piece_count());
        if !served || untouched {
            // No assembly yet, a bad one was dropped, nobody able announces
            // its size any more, or more peers announce another size before
            // anything arrived: go with the size most able peers announce.
            // Pieces in flight belong to the old size.
            if let Some(size) = self.choose_size().filter(|s| Some(*s) != current) {
                self.asm = MetadataAssembler::new(self.info_hash, size, self.config.metadata_size_max).ok();
                self.sent_by.clear();
                for c in self.conns.values_mut() {
                    c.asked.clear();
                }
            }
        }
        let Some(asm) = &self.asm else {
            return;
        };
        let size = asm.size() as u64;
        let asked: BTreeSet<u32> = self.conns.values().flat_map(|c| c.asked.keys().copied()).collect();
        let mut todo: VecDeque<u32> = asm.missing().filter(|p| !asked.contains(p)).collect();
        let mut sends = Vec::new();
        for (k, c) in self.conns.iter_mut() {
            let Some(id) = c.ut_metadata else {
                continue;
            };
            if c.size != Some(size) {
                continue;
            }
            while c.asked.len() < self.config.requests_per_peer {
                let Some(piece) = todo.pop_front() else {
                    break;
                };
                c.asked.insert(piece, now);
                sends.push((*k, Message::Extended { id, payload: MetadataMessage::Request { piece }.encode().into() }));
            }
        }
        for (k, m) in sends {
            self.send(k, &m);
        }
    }

    fn on_timeout(&mut self, now: Instant) {
        if now < self.next_tick {
            return;
        }
        self.next_tick = now + self.config.tick;
        let mut idle = Vec::new();
        for (k, c) in self.conns.iter_mut() {
            if now.saturating_duration_since(c.last_recv_at) >= self.config.idle_timeout {
                idle.push(*k);
                continue;
            }
            let timeout = self.config.request_timeout;
            let before = c.asked.len();
            c.asked.retain(|_, at| now.saturating_duration_since(*at) < timeout);
            if c.asked.len() < before {
                // Unresponsive for metadata: leave it to the others.
                c.ut_metadata = None;
            }
        }
        for k in idle {
            self.drop_peer(k, DisconnectReason::Idle);
        }
        self.request_all(now);
    }
}
