//! BEP 11 peer exchange (`ut_pex`) messages: peers learn about each other's
//! peers without a tracker. Build and parse the payload of the extended
//! message; the adapter knows addresses, so it decides what to announce.

use core::net::{IpAddr, SocketAddr};

use super::bencode::{self, Value};

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
