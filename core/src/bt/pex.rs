//! BEP 11 peer exchange (`ut_pex`): peers learn about each other's peers
//! without a tracker.
//!
//! * [`PexMessage`] builds and parses the payload of the extended message.
//! * [`PexSender`] decides what to send each connection: the peers we are
//!   connected to that it has not heard of from us, and those we lost,
//!   at most once per [`PEX_INTERVAL`] and at most [`PEX_SEND_ADDED_MAX`]
//!   and [`PEX_SEND_DROPPED_MAX`] of each per message (libtorrent's
//!   limits). The adapter knows the addresses, so it lists the live
//!   connections ([`PexConn`]); the sender remembers, per connection,
//!   what it was told.

use core::net::{IpAddr, SocketAddr};
use std::collections::BTreeMap;

use super::bencode::{self, Value};
use super::picker::PeerKey;
use super::wire::Message;
use crate::time::{Duration, Instant};

/// Most peers accepted in each list of one message (BEP 11 says senders
/// should stay under 50 per message).
pub const PEX_PEERS_MAX: usize = 200;

/// A peer in an `added` list, with its BEP 11 flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PexPeer {
    /// Where to reach it.
    pub addr: SocketAddr,
    /// Flags: 0x01 prefers encryption, 0x02 is a seed, 0x04 supports uTP,
    /// 0x08 supports holepunch, 0x10 is reachable.
    pub flags: u8,
}

/// One `ut_pex` message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PexMessage {
    /// Peers the sender connected to since its last message.
    pub added: Vec<PexPeer>,
    /// Peers the sender disconnected from.
    pub dropped: Vec<SocketAddr>,
}

/// Why a `ut_pex` payload was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PexError {
    /// Not bencode, or not a dictionary.
    Malformed(String),
    /// A compact list has a length that is not a multiple of its entry size.
    BadLength(&'static str),
    /// More than [`PEX_PEERS_MAX`] entries in one list.
    TooMany(&'static str),
}

fn compact(peers: impl Iterator<Item = SocketAddr>, v6: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for a in peers.filter(|a| a.is_ipv6() == v6) {
        match a.ip() {
            IpAddr::V4(ip) => out.extend_from_slice(&ip.octets()),
            IpAddr::V6(ip) => out.extend_from_slice(&ip.octets()),
        }
        out.extend_from_slice(&a.port().to_be_bytes());
    }
    out
}

fn parse_compact(b: Option<&[u8]>, v6: bool, what: &'static str) -> Result<Vec<SocketAddr>, PexError> {
    let Some(b) = b else {
        return Ok(Vec::new());
    };
    let w = if v6 { 18 } else { 6 };
    let stray = b.len() % w;
    if stray != 0 {
        return Err(PexError::BadLength(what));
    }
    if b.len() / w > PEX_PEERS_MAX {
        return Err(PexError::TooMany(what));
    }
    Ok(b.chunks_exact(w).map(super::tracker::compact_addr).collect())
}

impl PexMessage {
    /// The extended-message payload. Lists are cut at [`PEX_PEERS_MAX`].
    pub fn encode(&self) -> Vec<u8> {
        let added = &self.added[..self.added.len().min(PEX_PEERS_MAX)];
        let dropped = &self.dropped[..self.dropped.len().min(PEX_PEERS_MAX)];
        let flags = |v6: bool| added.iter().filter(|p| p.addr.is_ipv6() == v6).map(|p| p.flags).collect::<Vec<u8>>();
        Value::dict()
            .insert("added", Value::bytes(compact(added.iter().map(|p| p.addr), false)))
            .insert("added.f", Value::bytes(flags(false)))
            .insert("added6", Value::bytes(compact(added.iter().map(|p| p.addr), true)))
            .insert("added6.f", Value::bytes(flags(true)))
            .insert("dropped", Value::bytes(compact(dropped.iter().copied(), false)))
            .insert("dropped6", Value::bytes(compact(dropped.iter().copied(), true)))
            .to_bytes()
    }

    /// Parses a payload. Missing lists are empty; missing or short flag
    /// strings read as 0. IPv4 peers come before IPv6 ones.
    pub fn parse(payload: &[u8]) -> Result<PexMessage, PexError> {
        let limits = bencode::Limits { depth_max: 4, values_max: 64, bytes_max: 64 << 10 };
        let v = bencode::decode_with(payload, limits).map_err(|e| PexError::Malformed(e.to_string()))?;
        if v.as_dict().is_none() {
            return Err(PexError::Malformed("not a dictionary".into()));
        }
        let get = |k: &str| v.get(k).and_then(Value::as_bytes);
        let mut msg = PexMessage::default();
        for (list, flags, v6) in [("added", "added.f", false), ("added6", "added6.f", true)] {
            let f = get(flags).unwrap_or(&[]);
            for (i, addr) in parse_compact(get(list), v6, list)?.into_iter().enumerate() {
                msg.added.push(PexPeer { addr, flags: f.get(i).copied().unwrap_or(0) });
            }
        }
        msg.dropped = parse_compact(get("dropped"), false, "dropped")?;
        msg.dropped.extend(parse_compact(get("dropped6"), true, "dropped6")?);
        Ok(msg)
    }
}

/// BEP 11 flags of a peer in an `added` list.
pub mod flags {
    /// It prefers encrypted connections.
    pub const PREFERS_ENCRYPTION: u8 = 0x01;
    /// It is a seed (has every piece).
    pub const SEED: u8 = 0x02;
    /// It supports uTP.
    pub const UTP: u8 = 0x04;
    /// It supports the holepunch extension.
    pub const HOLEPUNCH: u8 = 0x08;
    /// It is reachable: we connected to it (an outgoing connection).
    pub const REACHABLE: u8 = 0x10;
}

/// Shortest time between two messages to one connection (BEP 11: at most
/// one a minute).
pub const PEX_INTERVAL: Duration = Duration::from_secs(60);
/// Most peers in the `added` lists (IPv4 and IPv6 together) of one message
/// we send, as libtorrent; more wait for the next message.
pub const PEX_SEND_ADDED_MAX: usize = 50;
/// Most peers in the `dropped` lists of one message we send; more wait for
/// the next message.
pub const PEX_SEND_DROPPED_MAX: usize = 50;
/// Most peers one connection is remembered to have been told of; past it
/// no more are added to it until some are dropped (far above any
/// connection budget: a limit only against a caller's bug).
pub const PEX_TOLD_MAX: usize = 1000;
/// Most connections [`PexSender::poll`] looks at per call; the rest are
/// neither told nor told of (far above any connection budget).
pub const PEX_CONNS_MAX: usize = 1000;

/// One live connection, as [`PexSender::poll`] wants it listed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PexConn {
    /// Connection handle.
    pub peer: PeerKey,
    /// Where the peer takes connections, if we know: the address we
    /// dialed, or for a peer that dialed us its IP with the port of its
    /// extension handshake's `p`. `None`: it is never named to others
    /// (its source port would be useless to them).
    pub listen: Option<SocketAddr>,
    /// The flags it is named with ([`flags`]).
    pub flags: u8,
    /// The extended message id it wants `ut_pex` on (its extension
    /// handshake's `m`); `None` or 0: it is sent nothing.
    pub ut_pex: Option<u8>,
}

impl PexConn {
    /// The connection as the torrent machine describes it
    /// ([`super::torrent::Torrent::peers`]), with its remote address and
    /// direction from the adapter: a peer we dialed listens where we
    /// dialed and is reachable ([`flags::REACHABLE`]); one that dialed us
    /// listens on its IP at the port of its extension handshake, if it
    /// gave one. Seeds carry [`flags::SEED`].
    pub fn of(info: &super::torrent::PeerInfo, remote: SocketAddr, incoming: bool) -> PexConn {
        let listen = if incoming { info.listen_port.map(|p| SocketAddr::new(remote.ip(), p)) } else { Some(remote) };
        let mut f = if incoming { 0 } else { flags::REACHABLE };
        if info.seed {
            f |= flags::SEED;
        }
        PexConn { peer: info.peer, listen, flags: f, ut_pex: info.ut_pex }
    }
}

/// A message [`PexSender::poll`] decided to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PexSend {
    /// The connection it goes to.
    pub peer: PeerKey,
    /// The id the peer wants `ut_pex` on.
    pub ext_id: u8,
    /// The message.
    pub message: PexMessage,
}

impl PexSend {
    /// The whole framed wire message (length prefix, extended id, payload),
    /// to send on the connection as it is.
    pub fn to_wire(&self) -> Vec<u8> {
        let mut out = Vec::new();
        Message::Extended { id: self.ext_id, payload: self.message.encode().into() }.encode(&mut out);
        out
    }
}

/// What one connection was last told.
#[derive(Clone, Debug, Default)]
struct Told {
    /// When the last message went, if one did.
    sent_at: Option<Instant>,
    /// The peers it was told of and not told dropped since (at most
    /// [`PEX_TOLD_MAX`]).
    peers: BTreeMap<SocketAddr, u8>,
}

/// Decides the `ut_pex` messages we send (the sending side of BEP 11).
/// Pure bookkeeping with time passed in: call [`PexSender::poll`] every
/// few seconds with the live connections and send what it returns.
///
/// Rules, as libtorrent: a connection that advertised `ut_pex` gets a
/// message once something changed and at most once per [`PEX_INTERVAL`];
/// the first message names every peer we are connected to (up to
/// [`PEX_SEND_ADDED_MAX`]), each later one the peers connected and lost
/// since the one before. A peer is never named to itself, and only peers
/// whose listening address we know are named. Nothing is ever sent for a
/// private torrent (BEP 27). State is per connection and leaves with it:
/// at most [`PEX_CONNS_MAX`] connections of at most [`PEX_TOLD_MAX`] peers.
#[derive(Clone, Debug, Default)]
pub struct PexSender {
    private: bool,
    told: BTreeMap<PeerKey, Told>,
}

impl PexSender {
    /// A sender; `private` (BEP 27) switches it off for good.
    pub fn new(private: bool) -> PexSender {
        PexSender { private, told: BTreeMap::new() }
    }

    /// The messages due at `now`, given every live connection whose
    /// handshake is done (in any order; extra ones past [`PEX_CONNS_MAX`]
    /// are ignored). Connections missing from `conns` are forgotten: a
    /// handle seen again later starts afresh.
    pub fn poll(&mut self, now: Instant, conns: &[PexConn]) -> Vec<PexSend> {
        let conns = &conns[..conns.len().min(PEX_CONNS_MAX)];
        self.told.retain(|k, _| conns.iter().any(|c| c.peer == *k));
        if self.private {
            self.told.clear();
            return Vec::new();
        }
        // Who is connected, by listening address (two connections to one
        // address name it once).
        let mut live: BTreeMap<SocketAddr, u8> = BTreeMap::new();
        for c in conns {
            if let Some(a) = c.listen.filter(|a| a.port() != 0 && !a.ip().is_unspecified()) {
                live.entry(a).or_insert(c.flags);
            }
        }
        let mut out = Vec::new();
        for c in conns {
            let Some(ext_id) = c.ut_pex.filter(|id| *id != 0) else {
                continue;
            };
            let told = self.told.entry(c.peer).or_default();
            if told.sent_at.is_some_and(|at| now.saturating_duration_since(at) < PEX_INTERVAL) {
                continue;
            }
            let mut message = PexMessage::default();
            let room = PEX_TOLD_MAX.saturating_sub(told.peers.len());
            for (addr, f) in &live {
                if message.added.len() >= PEX_SEND_ADDED_MAX.min(room) {
                    break;
                }
                if Some(*addr) != c.listen && !told.peers.contains_key(addr) {
                    message.added.push(PexPeer { addr: *addr, flags: *f });
                }
            }
            for addr in told.peers.keys() {
                if message.dropped.len() >= PEX_SEND_DROPPED_MAX {
                    break;
                }
                if !live.contains_key(addr) || Some(*addr) == c.listen {
                    message.dropped.push(*addr);
                }
            }
            if message.added.is_empty() && message.dropped.is_empty() {
                continue;
            }
            for p in &message.added {
                told.peers.insert(p.addr, p.flags);
            }
            for a in &message.dropped {
                told.peers.remove(a);
            }
            told.sent_at = Some(now);
            // The parser yields IPv4 peers before IPv6 ones: send them in
            // that order too, so what is sent is what is read.
            message.added.sort_by_key(|p| p.addr.is_ipv6());
            message.dropped.sort_by_key(|a| a.is_ipv6());
            out.push(PexSend { peer: c.peer, ext_id, message });
        }
        out
    }

    /// Connections with state (those that advertised `ut_pex` at the last
    /// [`PexSender::poll`]).
    pub fn tracked(&self) -> usize {
        self.told.len()
    }
}
