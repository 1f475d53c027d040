//! KRPC (BEP 5): the DHT's bencoded messages over UDP, and the compact
//! node and peer encodings (IPv4, and IPv6 per BEP 32).
//!
//! [`Message::parse`] takes one datagram from anyone and never panics; it
//! returns a [`KrpcError`] with the byte offset for anything it refuses.
//! [`Message::encode`] writes the canonical form (sorted keys), which is
//! what every other implementation expects.
//!
//! A response does not name the query it answers; the machine matches it
//! to its query by the transaction id, so [`Response`] carries every field
//! any of the four answers may hold.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::bt::bencode::{self, Limits, Value};
use crate::bt::metainfo::InfoHash;

use super::NodeId;

/// Longest transaction id accepted, in bytes (libtorrent sends 2, others 4).
pub const TID_BYTES_MAX: usize = 16;
/// Longest token accepted, in bytes (libtorrent's are 4, ours 8).
pub const TOKEN_BYTES_MAX: usize = 64;
/// Most peers decoded from one `values` list; the rest are ignored.
pub const VALUES_MAX: usize = 256;
/// Most nodes decoded from one `nodes` (or `nodes6`) string.
pub const NODES_MAX: usize = 64;
/// Longest error message kept, in bytes.
pub const ERROR_TEXT_MAX: usize = 256;
/// Longest datagram parsed; a KRPC message fits in one unfragmented
/// datagram, so anything longer is refused before decoding.
pub const DATAGRAM_BYTES_MAX: usize = 4096;

/// Decode limits for one datagram: shallow, few values.
const LIMITS: Limits = Limits { depth_max: 8, values_max: 1024, bytes_max: DATAGRAM_BYTES_MAX };

/// KRPC error codes (BEP 5).
pub mod code {
    /// 201 Generic Error.
    pub const GENERIC: i64 = 201;
    /// 202 Server Error.
    pub const SERVER: i64 = 202;
    /// 203 Protocol Error: malformed packet, invalid arguments or bad token.
    pub const PROTOCOL: i64 = 203;
    /// 204 Method Unknown.
    pub const METHOD_UNKNOWN: i64 = 204;
}

/// One node's contact: its id and UDP address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeInfo {
    /// The node's id.
    pub id: NodeId,
    /// Where it listens.
    pub addr: SocketAddr,
}

/// A query and its arguments. Every query carries the asker's id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Query {
    /// `ping`.
    Ping {
        /// The asker's id.
        id: NodeId,
    },
    /// `find_node`: the nodes closest to `target`.
    FindNode {
        /// The asker's id.
        id: NodeId,
        /// The id whose neighbours are wanted.
        target: NodeId,
    },
    /// `get_peers`: peers of `info_hash`, else the closest nodes; always a token.
    GetPeers {
        /// The asker's id.
        id: NodeId,
        /// The torrent.
        info_hash: InfoHash,
    },
    /// `announce_peer`: the asker downloads `info_hash` on `port` (or on
    /// the datagram's source port with `implied_port`).
    AnnouncePeer {
        /// The asker's id.
        id: NodeId,
        /// The torrent.
        info_hash: InfoHash,
        /// The peer's TCP port (ignored with `implied_port`).
        port: u16,
        /// The token a `get_peers` answer gave the asker.
        token: Vec<u8>,
        /// Use the datagram's source port instead of `port` (behind NAT).
        implied_port: bool,
    },
    /// A method this implementation does not know (answered with 204).
    Unknown {
        /// The method name as sent.
        method: Vec<u8>,
    },
}

/// The fields of a response (`y` = `r`); which are set depends on the query.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Response {
    /// The responder's id.
    pub id: NodeId,
    /// Close nodes (`nodes`, IPv4, and `nodes6`, IPv6).
    pub nodes: Vec<NodeInfo>,
    /// Peers of the torrent (`values`).
    pub values: Vec<SocketAddr>,
    /// The token for a later `announce_peer` (`get_peers` answers).
    pub token: Option<Vec<u8>>,
}

/// What a message is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// `y` = `q`.
    Query(Query),
    /// `y` = `r`.
    Response(Response),
    /// `y` = `e`: a code (see [`code`]) and a text.
    Error {
        /// The error code.
        code: i64,
        /// The human text (cut to [`ERROR_TEXT_MAX`] bytes).
        message: String,
    },
}

/// One KRPC message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Transaction id (`t`), echoed in the answer; at most [`TID_BYTES_MAX`] bytes.
    pub tid: Vec<u8>,
    /// The query, response or error.
    pub body: Body,
    /// `ro`: the sender is read-only (BEP 43) and should not be added to
    /// routing tables; it is still answered.
    pub read_only: bool,
    /// `ip` (BEP 42): the address the sender sees us at, in answers.
    pub ip: Option<SocketAddr>,
    /// `v`: the sender's client version, at most 4 bytes kept.
    pub version: Option<Vec<u8>>,
}

/// Why a datagram was refused, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KrpcError {
    /// Byte offset into the datagram (0 when no better place is known).
    pub offset: usize,
    /// What is wrong.
    pub kind: KrpcErrorKind,
}

/// What is wrong with a datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KrpcErrorKind {
    /// Not bencode, or over the limits.
    Bencode(bencode::BencodeErrorKind),
    /// Longer than [`DATAGRAM_BYTES_MAX`].
    TooLong,
    /// Not a dictionary at the top.
    NotADict,
    /// A required key is missing or has the wrong type or length.
    Field(&'static str),
}

impl fmt::Display for KrpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            KrpcErrorKind::Bencode(k) => write!(f, "bad bencode at byte {}: {k}", self.offset),
            KrpcErrorKind::TooLong => write!(f, "datagram longer than {DATAGRAM_BYTES_MAX} bytes"),
            KrpcErrorKind::NotADict => f.write_str("not a dictionary"),
            KrpcErrorKind::Field(k) => write!(f, "missing or malformed `{k}`"),
        }
    }
}

impl std::error::Error for KrpcError {}

fn field(name: &'static str) -> KrpcError {
    KrpcError { offset: 0, kind: KrpcErrorKind::Field(name) }
}

fn id20(v: Option<&Value<'_>>, name: &'static str) -> Result<[u8; 20], KrpcError> {
    v.and_then(Value::as_bytes).and_then(|b| <[u8; 20]>::try_from(b).ok()).ok_or_else(|| field(name))
}

/// The 6-byte (IPv4) or 18-byte (IPv6) compact form of `addr`.
pub fn compact_addr(addr: SocketAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(18);
    match addr.ip() {
        IpAddr::V4(ip) => out.extend_from_slice(&ip.octets()),
        IpAddr::V6(ip) => out.extend_from_slice(&ip.octets()),
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
    out
}

/// Reads a 6- or 18-byte compact address; any other length is `None`.
pub fn parse_compact_addr(b: &[u8]) -> Option<SocketAddr> {
    match b.len() {
        6 => {
            let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
            Some(SocketAddr::new(IpAddr::V4(ip), u16::from_be_bytes([b[4], b[5]])))
        }
        18 => {
            let o: [u8; 16] = b[..16].try_into().ok()?;
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(o)), u16::from_be_bytes([b[16], b[17]])))
        }
        _ => None,
    }
}

/// Compact node infos of one family: 26 bytes each (id + IPv4 + port) for
/// `nodes`, 38 (id + IPv6 + port) for `nodes6`. Nodes of the other family
/// are skipped.
pub fn compact_nodes(nodes: &[NodeInfo], v6: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for n in nodes.iter().filter(|n| n.addr.is_ipv6() == v6) {
        out.extend_from_slice(&n.id.0);
        out.extend_from_slice(&compact_addr(n.addr));
    }
    out
}

/// Parses a `nodes` (26-byte entries) or `nodes6` (38-byte entries)
/// string; a trailing partial entry is ignored, at most [`NODES_MAX`]
/// are kept, and nodes on port 0 are dropped (no one listens there).
pub fn parse_compact_nodes(b: &[u8], v6: bool) -> Vec<NodeInfo> {
    let size = if v6 { 38 } else { 26 };
    b.chunks_exact(size)
        .take(NODES_MAX)
        .filter_map(|c| {
            let id = NodeId(c[..20].try_into().ok()?);
            let addr = parse_compact_addr(&c[20..])?;
            (addr.port() != 0).then_some(NodeInfo { id, addr })
        })
        .collect()
}

impl Message {
    /// Parses one datagram. Never panics; unknown keys are ignored.
    pub fn parse(buf: &[u8]) -> Result<Message, KrpcError> {
        if buf.len() > DATAGRAM_BYTES_MAX {
            return Err(KrpcError { offset: DATAGRAM_BYTES_MAX, kind: KrpcErrorKind::TooLong });
        }
        let v = bencode::decode_with(buf, LIMITS)
            .map_err(|e| KrpcError { offset: e.offset, kind: KrpcErrorKind::Bencode(e.kind) })?;
        if v.as_dict().is_none() {
            return Err(KrpcError { offset: 0, kind: KrpcErrorKind::NotADict });
        }
        let tid = v.get("t").and_then(Value::as_bytes).ok_or_else(|| field("t"))?;
        if tid.len() > TID_BYTES_MAX {
            return Err(field("t"));
        }
        let read_only = matches!(v.get("ro").and_then(Value::as_int), Some(1));
        let ip = v.get("ip").and_then(Value::as_bytes).and_then(parse_compact_addr);
        let version = v.get("v").and_then(Value::as_bytes).map(|b| b[..b.len().min(4)].to_vec());
        let body = match v.get("y").and_then(Value::as_bytes) {
            Some(b"q") => Body::Query(parse_query(&v)?),
            Some(b"r") => Body::Response(parse_response(v.get("r").ok_or_else(|| field("r"))?)?),
            Some(b"e") => {
                let e = v.get("e").and_then(Value::as_list).ok_or_else(|| field("e"))?;
                let code = e.first().and_then(Value::as_int).ok_or_else(|| field("e"))?;
                let text = e.get(1).and_then(Value::as_bytes).unwrap_or_default();
                let text = &text[..text.len().min(ERROR_TEXT_MAX)];
                Body::Error { code, message: String::from_utf8_lossy(text).into_owned() }
            }
            _ => return Err(field("y")),
        };
        Ok(Message { tid: tid.to_vec(), body, read_only, ip, version })
    }

    /// The canonical bencoding of the message.
    pub fn encode(&self) -> Vec<u8> {
        let mut d = Value::dict().insert("t", Value::bytes(self.tid.clone()));
        if self.read_only {
            d = d.insert("ro", Value::Int(1));
        }
        if let Some(ip) = self.ip {
            d = d.insert("ip", Value::bytes(compact_addr(ip)));
        }
        if let Some(v) = &self.version {
            d = d.insert("v", Value::bytes(v.clone()));
        }
        match &self.body {
            Body::Query(q) => {
                let (name, args) = query_args(q);
                d = d.insert("y", Value::bytes(&b"q"[..])).insert("q", Value::bytes(name)).insert("a", args);
            }
            Body::Response(r) => {
                let mut a = Value::dict().insert("id", Value::bytes(r.id.0.to_vec()));
                let v4 = compact_nodes(&r.nodes, false);
                let v6 = compact_nodes(&r.nodes, true);
                if !v4.is_empty() {
                    a = a.insert("nodes", Value::bytes(v4));
                }
                if !v6.is_empty() {
                    a = a.insert("nodes6", Value::bytes(v6));
                }
                if let Some(t) = &r.token {
                    a = a.insert("token", Value::bytes(t.clone()));
                }
                if !r.values.is_empty() {
                    let vals = r.values.iter().map(|p| Value::bytes(compact_addr(*p))).collect();
                    a = a.insert("values", Value::List(vals));
                }
                d = d.insert("y", Value::bytes(&b"r"[..])).insert("r", a);
            }
            Body::Error { code, message } => {
                let e = Value::List(vec![Value::Int(*code), Value::bytes(message.as_bytes().to_vec())]);
                d = d.insert("y", Value::bytes(&b"e"[..])).insert("e", e);
            }
        }
        d.to_bytes()
    }
}

fn query_args(q: &Query) -> (Vec<u8>, Value<'static>) {
    let idv = |id: &NodeId| Value::bytes(id.0.to_vec());
    match q {
        Query::Ping { id } => (b"ping".to_vec(), Value::dict().insert("id", idv(id))),
        Query::FindNode { id, target } => {
            (b"find_node".to_vec(), Value::dict().insert("id", idv(id)).insert("target", idv(target)))
        }
        Query::GetPeers { id, info_hash } => (
            b"get_peers".to_vec(),
            Value::dict().insert("id", idv(id)).insert("info_hash", Value::bytes(info_hash.0.to_vec())),
        ),
        Query::AnnouncePeer { id, info_hash, port, token, implied_port } => {
            let mut a = Value::dict()
                .insert("id", idv(id))
                .insert("info_hash", Value::bytes(info_hash.0.to_vec()))
                .insert("port", Value::Int(i64::from(*port)))
                .insert("token", Value::bytes(token.clone()));
            if *implied_port {
                a = a.insert("implied_port", Value::Int(1));
            }
            (b"announce_peer".to_vec(), a)
        }
        Query::Unknown { method } => (method.clone(), Value::dict()),
    }
}

fn parse_query(v: &Value<'_>) -> Result<Query, KrpcError> {
    let method = v.get("q").and_then(Value::as_bytes).ok_or_else(|| field("q"))?;
    let a = v.get("a").filter(|a| a.as_dict().is_some());
    let known = matches!(method, b"ping" | b"find_node" | b"get_peers" | b"announce_peer");
    if !known {
        return Ok(Query::Unknown { method: method[..method.len().min(64)].to_vec() });
    }
    let a = a.ok_or_else(|| field("a"))?;
    let id = NodeId(id20(a.get("id"), "id")?);
    Ok(match method {
        b"ping" => Query::Ping { id },
        b"find_node" => Query::FindNode { id, target: NodeId(id20(a.get("target"), "target")?) },
        b"get_peers" => Query::GetPeers { id, info_hash: InfoHash(id20(a.get("info_hash"), "info_hash")?) },
        _ => {
            let info_hash = InfoHash(id20(a.get("info_hash"), "info_hash")?);
            let implied_port = matches!(a.get("implied_port").and_then(Value::as_int), Some(i) if i != 0);
            let port = match a.get("port").and_then(Value::as_int) {
                Some(p) => u16::try_from(p).map_err(|_| field("port"))?,
                None if implied_port => 0,
                None => return Err(field("port")),
            };
            let token = a.get("token").and_then(Value::as_bytes).ok_or_else(|| field("token"))?;
            if token.len() > TOKEN_BYTES_MAX {
                return Err(field("token"));
            }
            Query::AnnouncePeer { id, info_hash, port, token: token.to_vec(), implied_port }
        }
    })
}

fn parse_response(r: &Value<'_>) -> Result<Response, KrpcError> {
    if r.as_dict().is_none() {
        return Err(field("r"));
    }
    let id = NodeId(id20(r.get("id"), "id")?);
    let mut nodes = r.get("nodes").and_then(Value::as_bytes).map(|b| parse_compact_nodes(b, false)).unwrap_or_default();
    if let Some(b) = r.get("nodes6").and_then(Value::as_bytes) {
        let room = NODES_MAX.saturating_sub(nodes.len());
        nodes.extend(parse_compact_nodes(b, true).into_iter().take(room));
    }
    let values = r
        .get("values")
        .and_then(Value::as_list)
        .map(|l| {
            l.iter()
                .filter_map(|p| p.as_bytes().and_then(parse_compact_addr))
                .filter(|p| p.port() != 0)
                .take(VALUES_MAX)
                .collect()
        })
        .unwrap_or_default();
    let token = match r.get("token") {
        None => None,
        Some(t) => {
            let t = t.as_bytes().ok_or_else(|| field("token"))?;
            if t.len() > TOKEN_BYTES_MAX {
                return Err(field("token"));
            }
            Some(t.to_vec())
        }
    };
    Ok(Response { id, nodes, values, token })
}
