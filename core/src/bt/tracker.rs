//! Tracker codecs: HTTP announce/scrape (BEP 3, BEP 23 compact peers, BEP 7
//! `peers6`, BEP 48 scrape) and the UDP tracker protocol (BEP 15), both the
//! client side (build requests, parse responses) and the server side (parse
//! requests, build responses) since a rumor node also serves a tracker.
//!
//! No sockets here: the adapter sends the URL or the datagram and feeds the
//! reply back. Transaction ids and keys come from the caller (its seeded rng).

use std::collections::BTreeMap;
use std::fmt;

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::bencode::{self, Value};
use super::metainfo::InfoHash;
use super::wire::PeerId;

/// Most peers accepted from (or put into) one response.
pub const PEERS_MAX: usize = 5_000;
/// Most infohashes in one scrape.
pub const SCRAPE_HASHES_MAX: usize = 74;
/// Longest failure or warning text kept, in bytes.
pub const MESSAGE_BYTES_MAX: usize = 1024;

/// Why a tracker message was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrackerErrorKind {
    /// The tracker answered with `failure reason` (HTTP) or an error
    /// packet (UDP): the text is the tracker's.
    Failure(String),
    /// The body is not bencode.
    Bencode(bencode::BencodeError),
    /// A field is missing or malformed.
    Invalid(&'static str),
    /// A packet is shorter than its action requires.
    Truncated {
        /// Bytes needed.
        need: usize,
        /// Bytes present.
        got: usize,
    },
    /// An unknown UDP action number.
    UnknownAction(u32),
    /// A UDP connect request without the protocol magic.
    BadMagic,
    /// More peers or hashes than the limits allow.
    TooMany(&'static str),
}

/// A refused tracker message with the byte offset where it went wrong (0
/// when not known more precisely).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackerError {
    /// Byte offset in the input.
    pub offset: usize,
    /// What went wrong.
    pub kind: TrackerErrorKind,
}

impl fmt::Display for TrackerError {
    /// A sentence for a person: "the tracker said: unregistered torrent",
    /// "bad tracker answer at byte 12: the 'peers' key is malformed".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            TrackerErrorKind::Failure(text) => write!(f, "the tracker said: {text}"),
            TrackerErrorKind::Bencode(e) => write!(f, "the tracker's answer is not bencode: {e}"),
            kind => write!(f, "bad tracker message at byte {}: {kind}", self.offset),
        }
    }
}

impl fmt::Display for TrackerErrorKind {
    /// What is wrong, without the position (the error carries it).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrackerErrorKind::Failure(text) => write!(f, "failure: {text}"),
            TrackerErrorKind::Bencode(e) => write!(f, "{e}"),
            TrackerErrorKind::Invalid(what) => write!(f, "{what}: missing or malformed"),
            TrackerErrorKind::Truncated { need, got } => {
                write!(f, "the packet is {got} bytes long where {need} are needed")
            }
            TrackerErrorKind::UnknownAction(n) => write!(f, "unknown UDP tracker action {n}"),
            TrackerErrorKind::BadMagic => f.write_str("a UDP connect request without the protocol's magic number"),
            TrackerErrorKind::TooMany(what) => write!(f, "more {what} than the limit allows"),
        }
    }
}

impl std::error::Error for TrackerError {}

fn terr(offset: usize, kind: TrackerErrorKind) -> TrackerError {
    TrackerError { offset, kind }
}

/// The `event` of an announce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AnnounceEvent {
    /// A regular, periodic announce.
    #[default]
    None,
    /// The first announce of a download.
    Started,
    /// We are leaving the swarm.
    Stopped,
    /// The download just completed.
    Completed,
}

impl AnnounceEvent {
    fn http_name(self) -> Option<&'static str> {
        match self {
            AnnounceEvent::None => None,
            AnnounceEvent::Started => Some("started"),
            AnnounceEvent::Stopped => Some("stopped"),
            AnnounceEvent::Completed => Some("completed"),
        }
    }

    /// BEP 15 event number.
    pub fn udp_code(self) -> u32 {
        match self {
            AnnounceEvent::None => 0,
            AnnounceEvent::Completed => 1,
            AnnounceEvent::Started => 2,
            AnnounceEvent::Stopped => 3,
        }
    }

    /// The event of a BEP 15 event number (unknown numbers mean none).
    pub fn from_udp_code(c: u32) -> AnnounceEvent {
        match c {
            1 => AnnounceEvent::Completed,
            2 => AnnounceEvent::Started,
            3 => AnnounceEvent::Stopped,
            _ => AnnounceEvent::None,
        }
    }
}

/// One announce: what a client tells a tracker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnounceRequest {
    /// The torrent.
    pub info_hash: InfoHash,
    /// Our peer id.
    pub peer_id: PeerId,
    /// Our listen port.
    pub port: u16,
    /// Bytes uploaded this session.
    pub uploaded: u64,
    /// Bytes downloaded this session.
    pub downloaded: u64,
    /// Bytes still missing.
    pub left: u64,
    /// Why we announce.
    pub event: AnnounceEvent,
    /// Peers wanted (`None`: the tracker's default).
    pub numwant: Option<u32>,
    /// A per-session random key identifying us across IP changes.
    pub key: Option<u32>,
    /// Ask for a compact peer list (BEP 23).
    pub compact: bool,
}

fn percent_encode(bytes: &[u8], out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        }
    }
}

/// Decodes `%XX` escapes; `+` stays a literal `+` (binary values may hold
/// it). `None` on a malformed escape.
pub fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hi = (*b.get(i + 1)? as char).to_digit(16)?;
            let lo = (*b.get(i + 2)? as char).to_digit(16)?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

impl AnnounceRequest {
    /// The query string (without `?`).
    pub fn to_query(&self) -> String {
        let mut q = String::with_capacity(256);
        q.push_str("info_hash=");
        percent_encode(&self.info_hash.0, &mut q);
        q.push_str("&peer_id=");
        percent_encode(&self.peer_id, &mut q);
        q.push_str(&format!(
            "&port={}&uploaded={}&downloaded={}&left={}&compact={}",
            self.port, self.uploaded, self.downloaded, self.left, self.compact as u8
        ));
        if let Some(e) = self.event.http_name() {
            q.push_str("&event=");
            q.push_str(e);
        }
        if let Some(n) = self.numwant {
            q.push_str(&format!("&numwant={n}"));
        }
        if let Some(k) = self.key {
            q.push_str(&format!("&key={k:08x}"));
        }
        q
    }

    /// The full announce URL: `announce_url` plus our query (joined with
    /// `&` if the URL already has a query).
    pub fn url(&self, announce_url: &str) -> String {
        let sep = if announce_url.contains('?') { '&' } else { '?' };
        format!("{announce_url}{sep}{}", self.to_query())
    }

    /// Parses an announce query string (server side). Unknown parameters
    /// are ignored; `info_hash`, `peer_id` and `port` are required.
    pub fn from_query(query: &str) -> Result<AnnounceRequest, TrackerError> {
        let mut ih = None;
        let mut pid = None;
        let mut r = AnnounceRequest {
            info_hash: InfoHash::default(),
            peer_id: [0; 20],
            port: 0,
            uploaded: 0,
            downloaded: 0,
            left: 0,
            event: AnnounceEvent::None,
            numwant: None,
            key: None,
            compact: false,
        };
        let mut port = None;
        let mut offset = 0;
        for pair in query.split('&') {
            let at = offset;
            offset += pair.len() + 1;
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let bad = |f| terr(at, TrackerErrorKind::Invalid(f));
            let num = |f| v.parse::<u64>().map_err(|_| bad(f));
            match k {
                "info_hash" => {
                    let b = percent_decode(v).ok_or(bad("info_hash"))?;
                    ih = Some(InfoHash(b.try_into().map_err(|_| bad("info_hash"))?));
                }
                "peer_id" => {
                    let b = percent_decode(v).ok_or(bad("peer_id"))?;
                    pid = Some(b.try_into().map_err(|_| bad("peer_id"))?);
                }
                "port" => port = Some(u16::try_from(num("port")?).map_err(|_| bad("port"))?),
                "uploaded" => r.uploaded = num("uploaded")?,
                "downloaded" => r.downloaded = num("downloaded")?,
                "left" => r.left = num("left")?,
                "compact" => r.compact = v == "1",
                "numwant" => r.numwant = Some(num("numwant")?.min(u32::MAX as u64) as u32),
                "key" => r.key = u32::from_str_radix(v, 16).ok(),
                "event" => {
                    r.event = match v {
                        "started" => AnnounceEvent::Started,
                        "stopped" => AnnounceEvent::Stopped,
                        "completed" => AnnounceEvent::Completed,
                        _ => AnnounceEvent::None,
                    }
                }
                _ => {}
            }
        }
        r.info_hash = ih.ok_or(terr(0, TrackerErrorKind::Invalid("info_hash")))?;
        r.peer_id = pid.ok_or(terr(0, TrackerErrorKind::Invalid("peer_id")))?;
        r.port = port.ok_or(terr(0, TrackerErrorKind::Invalid("port")))?;
        Ok(r)
    }
}

/// The scrape URL for an announce URL (BEP 48 convention: the last path
/// segment `announce...` becomes `scrape...`); `None` if it has none.
pub fn scrape_url(announce_url: &str) -> Option<String> {
    let (base, query) = match announce_url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (announce_url, None),
    };
    let slash = base.rfind('/')?;
    let last = &base[slash + 1..];
    let rest = last.strip_prefix("announce")?;
    let mut s = format!("{}scrape{}", &base[..=slash], rest);
    if let Some(q) = query {
        s.push('?');
        s.push_str(q);
    }
    Some(s)
}

/// The full HTTP scrape URL for `info_hashes` (each as an `info_hash`
/// parameter); build the base with [`scrape_url`].
pub fn scrape_request_url(scrape_base: &str, info_hashes: &[InfoHash]) -> String {
    let mut u = scrape_base.to_owned();
    let mut sep = if u.contains('?') { '&' } else { '?' };
    for ih in info_hashes.iter().take(SCRAPE_HASHES_MAX) {
        u.push(sep);
        u.push_str("info_hash=");
        percent_encode(&ih.0, &mut u);
        sep = '&';
    }
    u
}

/// Parses the `info_hash` parameters of a scrape query (server side),
/// ignoring anything else; at most [`SCRAPE_HASHES_MAX`].
pub fn parse_scrape_query(query: &str) -> Result<Vec<InfoHash>, TrackerError> {
    let mut out = Vec::new();
    let mut offset = 0;
    for pair in query.split('&') {
        let at = offset;
        offset += pair.len() + 1;
        if let Some(v) = pair.strip_prefix("info_hash=") {
            if out.len() == SCRAPE_HASHES_MAX {
                return Err(terr(at, TrackerErrorKind::TooMany("scrape hashes")));
            }
            let b = percent_decode(v).ok_or(terr(at, TrackerErrorKind::Invalid("info_hash")))?;
            let h: [u8; 20] = b.try_into().map_err(|_| terr(at, TrackerErrorKind::Invalid("info_hash")))?;
            out.push(InfoHash(h));
        }
    }
    Ok(out)
}

/// A peer from a tracker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TrackerPeer {
    /// Where to connect.
    pub addr: SocketAddr,
    /// Its peer id, when the tracker sent the non-compact form.
    pub peer_id: Option<PeerId>,
}

/// A tracker's answer to an announce.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct AnnounceResponse {
    /// Seconds to wait before the next regular announce.
    pub interval: u32,
    /// Seconds under which we must not announce again.
    pub min_interval: Option<u32>,
    /// Seeders in the swarm.
    pub complete: Option<u32>,
    /// Leechers in the swarm.
    pub incomplete: Option<u32>,
    /// Peers (IPv4 and IPv6).
    pub peers: Vec<TrackerPeer>,
    /// A warning to show the user.
    pub warning: Option<String>,
    /// Opaque id to send back on the next announce.
    pub tracker_id: Option<Vec<u8>>,
}

fn text(v: &[u8]) -> String {
    let cut = &v[..v.len().min(MESSAGE_BYTES_MAX)];
    String::from_utf8_lossy(cut).into_owned()
}

fn small_u32(v: Option<&Value<'_>>) -> Option<u32> {
    v.and_then(Value::as_int).map(|i| i.clamp(0, u32::MAX as i64) as u32)
}

/// Decodes one compact endpoint (BEP 23 / BEP 11): 4 address bytes and a
/// port (6 bytes) or 16 and a port (18 bytes). Other lengths are the
/// caller's bug.
pub fn compact_addr(c: &[u8]) -> SocketAddr {
    debug_assert!(c.len() == 6 || c.len() == 18, "a compact endpoint is 6 or 18 bytes");
    let w = c.len();
    let ip = if w == 18 {
        let mut a = [0u8; 16];
        a.copy_from_slice(&c[..16]);
        IpAddr::V6(Ipv6Addr::from(a))
    } else {
        IpAddr::V4(Ipv4Addr::new(c[0], c[1], c[2], c[3]))
    };
    SocketAddr::new(ip, u16::from_be_bytes([c[w - 2], c[w - 1]]))
}

fn compact_peers(bytes: &[u8], v6: bool, out: &mut Vec<TrackerPeer>, at: usize) -> Result<(), TrackerError> {
    let width = if v6 { 18 } else { 6 };
    let stray = bytes.len() % width;
    if stray != 0 {
        return Err(terr(at, TrackerErrorKind::Invalid("compact peers length")));
    }
    if out.len() + bytes.len() / width > PEERS_MAX {
        return Err(terr(at, TrackerErrorKind::TooMany("peers")));
    }
    for c in bytes.chunks_exact(width) {
        out.push(TrackerPeer { addr: compact_addr(c), peer_id: None });
    }
    Ok(())
}

/// Parses an HTTP announce response body. A `failure reason` becomes
/// [`TrackerErrorKind::Failure`]. Accepts compact (`peers` as a string,
/// `peers6`) and dictionary peer lists; dictionary entries with an
/// unparsable address are skipped.
pub fn parse_announce_response(body: &[u8]) -> Result<AnnounceResponse, TrackerError> {
    let v = bencode::decode(body).map_err(|e| terr(e.offset, TrackerErrorKind::Bencode(e)))?;
    let d = v.as_dict().ok_or(terr(0, TrackerErrorKind::Invalid("the top-level dictionary")))?;
    let off = |k: &str| match d.get_key_value(k.as_bytes()) {
        Some((std::borrow::Cow::Borrowed(b), _)) => bencode::offset_in(body, b),
        _ => 0,
    };
    if let Some(f) = d.get(&b"failure reason"[..]) {
        let msg = f.as_bytes().map(text).unwrap_or_default();
        return Err(terr(off("failure reason"), TrackerErrorKind::Failure(msg)));
    }
    let mut r = AnnounceResponse {
        interval: small_u32(d.get(&b"interval"[..])).ok_or(terr(0, TrackerErrorKind::Invalid("interval")))?,
        min_interval: small_u32(d.get(&b"min interval"[..])),
        complete: small_u32(d.get(&b"complete"[..])),
        incomplete: small_u32(d.get(&b"incomplete"[..])),
        warning: d.get(&b"warning message"[..]).and_then(Value::as_bytes).map(text),
        tracker_id: d
            .get(&b"tracker id"[..])
            .and_then(Value::as_bytes)
            .map(|b| b[..b.len().min(MESSAGE_BYTES_MAX)].to_vec()),
        peers: Vec::new(),
    };
    match d.get(&b"peers"[..]) {
        None => {}
        Some(Value::Bytes(b)) => compact_peers(b, false, &mut r.peers, off("peers"))?,
        Some(Value::List(list)) => {
            if list.len() > PEERS_MAX {
                return Err(terr(off("peers"), TrackerErrorKind::TooMany("peers")));
            }
            for p in list {
                let ip = p.get("ip").and_then(Value::as_str).and_then(|s| s.parse::<IpAddr>().ok());
                let port = p.get("port").and_then(Value::as_int).and_then(|i| u16::try_from(i).ok());
                let peer_id = p.get("peer id").and_then(Value::as_bytes).and_then(|b| <[u8; 20]>::try_from(b).ok());
                if let (Some(ip), Some(port)) = (ip, port) {
                    r.peers.push(TrackerPeer { addr: SocketAddr::new(ip, port), peer_id });
                }
            }
        }
        Some(_) => return Err(terr(off("peers"), TrackerErrorKind::Invalid("peers"))),
    }
    if let Some(p6) = d.get(&b"peers6"[..]) {
        let b = p6.as_bytes().ok_or(terr(off("peers6"), TrackerErrorKind::Invalid("peers6")))?;
        compact_peers(b, true, &mut r.peers, off("peers6"))?;
    }
    Ok(r)
}

/// Encodes an announce response (server side). Compact: IPv4 peers in
/// `peers`, IPv6 in `peers6`; otherwise a list of dictionaries with `ip`,
/// `port` and `peer id` when known. At most [`PEERS_MAX`] peers are written.
pub fn encode_announce_response(r: &AnnounceResponse, compact: bool) -> Vec<u8> {
    let mut d = Value::dict().insert("interval", Value::Int(r.interval as i64));
    if let Some(m) = r.min_interval {
        d = d.insert("min interval", Value::Int(m as i64));
    }
    if let Some(c) = r.complete {
        d = d.insert("complete", Value::Int(c as i64));
    }
    if let Some(c) = r.incomplete {
        d = d.insert("incomplete", Value::Int(c as i64));
    }
    if let Some(w) = &r.warning {
        d = d.insert("warning message", Value::bytes(w.as_bytes()));
    }
    if let Some(t) = &r.tracker_id {
        d = d.insert("tracker id", Value::bytes(t.clone()));
    }
    let peers = &r.peers[..r.peers.len().min(PEERS_MAX)];
    if compact {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for p in peers {
            match p.addr.ip() {
                IpAddr::V4(ip) => v4.extend_from_slice(&ip.octets()),
                IpAddr::V6(ip) => v6.extend_from_slice(&ip.octets()),
            }
            let port = p.addr.port().to_be_bytes();
            if p.addr.is_ipv4() {
                v4.extend_from_slice(&port);
            } else {
                v6.extend_from_slice(&port);
            }
        }
        d = d.insert("peers", Value::bytes(v4));
        if !v6.is_empty() {
            d = d.insert("peers6", Value::bytes(v6));
        }
    } else {
        let list = peers
            .iter()
            .map(|p| {
                let mut e = Value::dict()
                    .insert("ip", Value::bytes(p.addr.ip().to_string()))
                    .insert("port", Value::Int(p.addr.port() as i64));
                if let Some(id) = p.peer_id {
                    e = e.insert("peer id", Value::bytes(id.to_vec()));
                }
                e
            })
            .collect();
        d = d.insert("peers", Value::List(list));
    }
    d.to_bytes()
}

/// A `failure reason` response body (server side).
pub fn encode_failure(reason: &str) -> Vec<u8> {
    Value::dict().insert("failure reason", Value::bytes(reason.as_bytes())).to_bytes()
}

/// Swarm counts for one torrent (scrape).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ScrapeStats {
    /// Seeders.
    pub complete: u32,
    /// Completed downloads ever.
    pub downloaded: u32,
    /// Leechers.
    pub incomplete: u32,
}

/// Encodes an HTTP scrape response (`files` dictionary keyed by raw infohash).
pub fn encode_scrape_response(files: &BTreeMap<InfoHash, ScrapeStats>) -> Vec<u8> {
    let mut f = Value::dict();
    if let Value::Dict(m) = &mut f {
        for (ih, s) in files {
            m.insert(
                ih.0.to_vec().into(),
                Value::dict()
                    .insert("complete", Value::Int(s.complete as i64))
                    .insert("downloaded", Value::Int(s.downloaded as i64))
                    .insert("incomplete", Value::Int(s.incomplete as i64)),
            );
        }
    }
    Value::dict().insert("files", f).to_bytes()
}

/// Parses an HTTP scrape response. Entries whose key is not 20 bytes are
/// skipped; missing counts read as 0.
pub fn parse_scrape_response(body: &[u8]) -> Result<BTreeMap<InfoHash, ScrapeStats>, TrackerError> {
    let v = bencode::decode(body).map_err(|e| terr(e.offset, TrackerErrorKind::Bencode(e)))?;
    if let Some(f) = v.get("failure reason") {
        let msg = f.as_bytes().map(text).unwrap_or_default();
        return Err(terr(0, TrackerErrorKind::Failure(msg)));
    }
    let files = v.get("files").and_then(Value::as_dict).ok_or(terr(0, TrackerErrorKind::Invalid("files")))?;
    if files.len() > PEERS_MAX {
        return Err(terr(0, TrackerErrorKind::TooMany("files")));
    }
    let mut out = BTreeMap::new();
    for (k, s) in files {
        let Ok(ih) = <[u8; 20]>::try_from(&k[..]) else {
            continue;
        };
        out.insert(
            InfoHash(ih),
            ScrapeStats {
                complete: small_u32(s.get("complete")).unwrap_or(0),
                downloaded: small_u32(s.get("downloaded")).unwrap_or(0),
                incomplete: small_u32(s.get("incomplete")).unwrap_or(0),
            },
        );
    }
    Ok(out)
}

/// BEP 15: the UDP tracker protocol.
pub mod udp {
    use super::*;

    /// The magic `protocol_id` of a connect request.
    pub const PROTOCOL_ID: u64 = 0x0417_2710_1980;

    const CONNECT: u32 = 0;
    const ANNOUNCE: u32 = 1;
    const SCRAPE: u32 = 2;
    const ERROR: u32 = 3;

    /// A client-to-tracker packet.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum Request {
        /// Asks for a connection id.
        Connect {
            /// Caller-chosen id echoed in the reply.
            transaction_id: u32,
        },
        /// An announce.
        Announce {
            /// From the connect response.
            connection_id: u64,
            /// Caller-chosen id echoed in the reply.
            transaction_id: u32,
            /// The announce itself (`port`, `key`, `numwant` are used;
            /// `compact` is ignored).
            request: AnnounceRequest,
            /// IPv4 address to announce, 0 for the packet's source.
            ip: u32,
        },
        /// A scrape of up to [`SCRAPE_HASHES_MAX`] torrents.
        Scrape {
            /// From the connect response.
            connection_id: u64,
            /// Caller-chosen id echoed in the reply.
            transaction_id: u32,
            /// The torrents.
            info_hashes: Vec<InfoHash>,
        },
    }

    /// A tracker-to-client packet.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum Response {
        /// Grants a connection id (valid about a minute).
        Connect {
            /// Echo of the request's.
            transaction_id: u32,
            /// To put in later requests.
            connection_id: u64,
        },
        /// Peers for an announce.
        Announce {
            /// Echo of the request's.
            transaction_id: u32,
            /// Seconds until the next announce.
            interval: u32,
            /// Leechers.
            leechers: u32,
            /// Seeders.
            seeders: u32,
            /// Peers: all IPv4 or all IPv6, by the socket's family.
            peers: Vec<SocketAddr>,
        },
        /// Counts for a scrape, in request order.
        Scrape {
            /// Echo of the request's.
            transaction_id: u32,
            /// One entry per requested hash.
            stats: Vec<ScrapeStats>,
        },
        /// The tracker refused the request.
        Error {
            /// Echo of the request's.
            transaction_id: u32,
            /// The tracker's text.
            message: String,
        },
    }

    struct Reader<'a> {
        b: &'a [u8],
        at: usize,
    }

    impl<'a> Reader<'a> {
        fn need(&self, n: usize) -> Result<(), TrackerError> {
            if self.b.len() < self.at + n {
                return Err(terr(self.at, TrackerErrorKind::Truncated { need: self.at + n, got: self.b.len() }));
            }
            Ok(())
        }
        fn take(&mut self, n: usize) -> Result<&'a [u8], TrackerError> {
            self.need(n)?;
            let s = &self.b[self.at..self.at + n];
            self.at += n;
            Ok(s)
        }
        fn u16(&mut self) -> Result<u16, TrackerError> {
            let s = self.take(2)?;
            Ok(u16::from_be_bytes([s[0], s[1]]))
        }
        fn u32(&mut self) -> Result<u32, TrackerError> {
            let s = self.take(4)?;
            Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
        }
        fn u64(&mut self) -> Result<u64, TrackerError> {
            let s = self.take(8)?;
            let mut a = [0u8; 8];
            a.copy_from_slice(s);
            Ok(u64::from_be_bytes(a))
        }
        fn hash(&mut self) -> Result<[u8; 20], TrackerError> {
            let s = self.take(20)?;
            let mut a = [0u8; 20];
            a.copy_from_slice(s);
            Ok(a)
        }
        fn rest(&self) -> &'a [u8] {
            &self.b[self.at..]
        }
    }

    impl Request {
        /// The datagram bytes.
        pub fn encode(&self) -> Vec<u8> {
            let mut o = Vec::with_capacity(98);
            match self {
                Request::Connect { transaction_id } => {
                    o.extend_from_slice(&PROTOCOL_ID.to_be_bytes());
                    o.extend_from_slice(&CONNECT.to_be_bytes());
                    o.extend_from_slice(&transaction_id.to_be_bytes());
                }
                Request::Announce { connection_id, transaction_id, request: r, ip } => {
                    o.extend_from_slice(&connection_id.to_be_bytes());
                    o.extend_from_slice(&ANNOUNCE.to_be_bytes());
                    o.extend_from_slice(&transaction_id.to_be_bytes());
                    o.extend_from_slice(&r.info_hash.0);
                    o.extend_from_slice(&r.peer_id);
                    o.extend_from_slice(&r.downloaded.to_be_bytes());
                    o.extend_from_slice(&r.left.to_be_bytes());
                    o.extend_from_slice(&r.uploaded.to_be_bytes());
                    o.extend_from_slice(&r.event.udp_code().to_be_bytes());
                    o.extend_from_slice(&ip.to_be_bytes());
                    o.extend_from_slice(&r.key.unwrap_or(0).to_be_bytes());
                    let nw: i32 = r.numwant.map_or(-1, |n| n.min(i32::MAX as u32) as i32);
                    o.extend_from_slice(&nw.to_be_bytes());
                    o.extend_from_slice(&r.port.to_be_bytes());
                }
                Request::Scrape { connection_id, transaction_id, info_hashes } => {
                    o.extend_from_slice(&connection_id.to_be_bytes());
                    o.extend_from_slice(&SCRAPE.to_be_bytes());
                    o.extend_from_slice(&transaction_id.to_be_bytes());
                    for h in info_hashes.iter().take(SCRAPE_HASHES_MAX) {
                        o.extend_from_slice(&h.0);
                    }
                }
            }
            o
        }

        /// Parses a datagram from a client (server side). Trailing bytes of
        /// an announce (BEP 41 options) are ignored.
        pub fn parse(b: &[u8]) -> Result<Request, TrackerError> {
            let mut r = Reader { b, at: 0 };
            let connection_id = r.u64()?;
            let action = r.u32()?;
            let transaction_id = r.u32()?;
            match action {
                CONNECT => {
                    if connection_id != PROTOCOL_ID {
                        return Err(terr(0, TrackerErrorKind::BadMagic));
                    }
                    Ok(Request::Connect { transaction_id })
                }
                ANNOUNCE => {
                    let info_hash = InfoHash(r.hash()?);
                    let peer_id = r.hash()?;
                    let downloaded = r.u64()?;
                    let left = r.u64()?;
                    let uploaded = r.u64()?;
                    let event = AnnounceEvent::from_udp_code(r.u32()?);
                    let ip = r.u32()?;
                    let key = r.u32()?;
                    let nw = r.u32()? as i32;
                    let port = r.u16()?;
                    Ok(Request::Announce {
                        connection_id,
                        transaction_id,
                        ip,
                        request: AnnounceRequest {
                            info_hash,
                            peer_id,
                            port,
                            uploaded,
                            downloaded,
                            left,
                            event,
                            numwant: u32::try_from(nw).ok(),
                            key: Some(key),
                            compact: true,
                        },
                    })
                }
                SCRAPE => {
                    let rest = r.rest();
                    let n = rest.len() / 20;
                    if n > SCRAPE_HASHES_MAX {
                        return Err(terr(16, TrackerErrorKind::TooMany("scrape hashes")));
                    }
                    let mut info_hashes = Vec::with_capacity(n);
                    for _ in 0..n {
                        info_hashes.push(InfoHash(r.hash()?));
                    }
                    Ok(Request::Scrape { connection_id, transaction_id, info_hashes })
                }
                other => Err(terr(8, TrackerErrorKind::UnknownAction(other))),
            }
        }
    }

    impl Response {
        /// The datagram bytes. Announce peers of the other family than the
        /// first one are left out (one family per packet); at most
        /// [`PEERS_MAX`] peers are written.
        pub fn encode(&self) -> Vec<u8> {
            let mut o = Vec::new();
            match self {
                Response::Connect { transaction_id, connection_id } => {
                    o.extend_from_slice(&CONNECT.to_be_bytes());
                    o.extend_from_slice(&transaction_id.to_be_bytes());
                    o.extend_from_slice(&connection_id.to_be_bytes());
                }
                Response::Announce { transaction_id, interval, leechers, seeders, peers } => {
                    o.extend_from_slice(&ANNOUNCE.to_be_bytes());
                    o.extend_from_slice(&transaction_id.to_be_bytes());
                    o.extend_from_slice(&interval.to_be_bytes());
                    o.extend_from_slice(&leechers.to_be_bytes());
                    o.extend_from_slice(&seeders.to_be_bytes());
                    let v6 = peers.first().is_some_and(|p| p.is_ipv6());
                    for p in peers.iter().filter(|p| p.is_ipv6() == v6).take(PEERS_MAX) {
                        match p.ip() {
                            IpAddr::V4(ip) => o.extend_from_slice(&ip.octets()),
                            IpAddr::V6(ip) => o.extend_from_slice(&ip.octets()),
                        }
                        o.extend_from_slice(&p.port().to_be_bytes());
                    }
                }
                Response::Scrape { transaction_id, stats } => {
                    o.extend_from_slice(&SCRAPE.to_be_bytes());
                    o.extend_from_slice(&transaction_id.to_be_bytes());
                    for s in stats.iter().take(SCRAPE_HASHES_MAX) {
                        o.extend_from_slice(&s.complete.to_be_bytes());
                        o.extend_from_slice(&s.downloaded.to_be_bytes());
                        o.extend_from_slice(&s.incomplete.to_be_bytes());
                    }
                }
                Response::Error { transaction_id, message } => {
                    o.extend_from_slice(&ERROR.to_be_bytes());
                    o.extend_from_slice(&transaction_id.to_be_bytes());
                    let m = message.as_bytes();
                    o.extend_from_slice(&m[..m.len().min(MESSAGE_BYTES_MAX)]);
                }
            }
            o
        }

        /// Parses a datagram from a tracker. `ipv6` says the socket is IPv6,
        /// which makes announce peers 18-byte entries (BEP 15).
        pub fn parse(b: &[u8], ipv6: bool) -> Result<Response, TrackerError> {
            let mut r = Reader { b, at: 0 };
            let action = r.u32()?;
            let transaction_id = r.u32()?;
            match action {
                CONNECT => Ok(Response::Connect { transaction_id, connection_id: r.u64()? }),
                ANNOUNCE => {
                    let interval = r.u32()?;
                    let leechers = r.u32()?;
                    let seeders = r.u32()?;
                    let mut tp = Vec::new();
                    let at = r.at;
                    compact_peers(r.rest(), ipv6, &mut tp, at)?;
                    Ok(Response::Announce {
                        transaction_id,
                        interval,
                        leechers,
                        seeders,
                        peers: tp.into_iter().map(|p| p.addr).collect(),
                    })
                }
                SCRAPE => {
                    let rest = r.rest();
                    let stray = rest.len() % 12;
                    if stray != 0 {
                        return Err(terr(r.at, TrackerErrorKind::Invalid("scrape length")));
                    }
                    let n = rest.len() / 12;
                    if n > SCRAPE_HASHES_MAX {
                        return Err(terr(r.at, TrackerErrorKind::TooMany("scrape entries")));
                    }
                    let mut stats = Vec::with_capacity(n);
                    for _ in 0..n {
                        stats.push(ScrapeStats { complete: r.u32()?, downloaded: r.u32()?, incomplete: r.u32()? });
                    }
                    Ok(Response::Scrape { transaction_id, stats })
                }
                ERROR => Ok(Response::Error { transaction_id, message: text(r.rest()) }),
                other => Err(terr(0, TrackerErrorKind::UnknownAction(other))),
            }
        }

        /// The echoed transaction id; match it against what you sent.
        pub fn transaction_id(&self) -> u32 {
            match self {
                Response::Connect { transaction_id, .. }
                | Response::Announce { transaction_id, .. }
                | Response::Scrape { transaction_id, .. }
                | Response::Error { transaction_id, .. } => *transaction_id,
            }
        }
    }
}
