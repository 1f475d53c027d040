//! BEP 14 Local Service Discovery: clients on one network find each other's
//! peers for a torrent with no tracker, by HTTP-like announces multicast to
//! `239.192.152.143:6771` (and `[ff15::efc0:988f]:6771`):
//!
//! ```text
//! BT-SEARCH * HTTP/1.1\r\n
//! Host: 239.192.152.143:6771\r\n
//! Port: 6881\r\n
//! Infohash: 0123456789abcdef0123456789abcdef01234567\r\n
//! cookie: 5f0c3a9e1b2d4c6f\r\n
//! \r\n
//! ```
//!
//! * [`Announce`] builds and parses one datagram.
//! * [`Lsd`] is the machine: it announces the torrents it serves at start
//!   and every [`LsdConfig::interval`] (jittered), and turns others'
//!   announces into [`Event::Peer`]s: only for infohashes it serves, never
//!   for its own announces (recognised by their cookie), at most
//!   [`LsdConfig::source_burst`] datagrams at once from one source IP,
//!   refilled at [`LsdConfig::source_per_minute`], and each (torrent,
//!   peer) reported at most once per [`LsdConfig::report_interval`]. A
//!   peer is its cookie when it sends one: a client heard on both groups
//!   (or through two interfaces) is reported once, at the first address
//!   heard, not dialed twice.
//!
//! The adapter owns the multicast sockets (joined on the default
//! interface, with `SO_REUSEADDR`/`SO_REUSEPORT` so several clients on one
//! host can listen), feeds every datagram as [`Input::Receive`], sends each
//! [`Output::Transmit`] to its group, and hands the peers to the peer book.
//! A private torrent (BEP 27) must never be given to this machine.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::collections::{BTreeMap, VecDeque};

use super::metainfo::InfoHash;
use crate::rand::Rng;
use crate::time::{Duration, Instant};
use crate::Transmit;

/// The UDP port of both groups.
pub const LSD_PORT: u16 = 6771;
/// The IPv4 (organisation-local) group.
pub const LSD_GROUP_V4: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(239, 192, 152, 143)), LSD_PORT);
/// The IPv6 (site-local) group.
pub const LSD_GROUP_V6: SocketAddr =
    SocketAddr::new(IpAddr::V6(Ipv6Addr::new(0xff15, 0, 0, 0, 0, 0, 0xefc0, 0x988f)), LSD_PORT);
/// Longest announce accepted or sent, in bytes (BEP 14 keeps announces
/// under 1400 bytes to avoid fragmentation).
pub const ANNOUNCE_BYTES_MAX: usize = 1400;
/// Most infohashes we put in one announce (each header is 51 bytes: 20
/// of them stay far under [`ANNOUNCE_BYTES_MAX`]); more torrents take
/// more datagrams.
pub const ANNOUNCE_INFOHASHES_MAX: usize = 20;
/// Longest cookie accepted; a longer one makes the announce malformed.
pub const COOKIE_BYTES_MAX: usize = 64;
/// Most torrents one machine announces.
pub const LSD_TORRENTS_MAX: usize = 256;
/// Most source IPs whose rate is tracked; when full, the one heard from
/// longest ago is forgotten.
pub const LSD_SOURCES_MAX: usize = 256;
/// Most (torrent, peer) pairs remembered as recently reported; when
/// full, the oldest is forgotten (and may be reported again).
pub const LSD_REPORTED_MAX: usize = 1024;

/// One announce datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announce {
    /// The sender's BitTorrent listening port.
    pub port: u16,
    /// The torrents it takes part in (at least one).
    pub info_hashes: Vec<InfoHash>,
    /// An opaque token that lets the sender recognise its own announces
    /// (printable ASCII, no spaces).
    pub cookie: Option<String>,
}

/// Why an announce was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LsdError {
    /// Over [`ANNOUNCE_BYTES_MAX`] bytes.
    TooLong(usize),
    /// The first line is not `BT-SEARCH * HTTP/1.1`.
    NotAnAnnounce,
    /// No `Port` header, or one that is not a port from 1 to 65535.
    BadPort,
    /// No `Infohash` header with 40 hex digits.
    NoInfohash,
    /// A cookie over [`COOKIE_BYTES_MAX`] bytes.
    BadCookie,
}

impl core::fmt::Display for LsdError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            LsdError::TooLong(n) => write!(f, "an announce of {n} bytes (at most {ANNOUNCE_BYTES_MAX})"),
            LsdError::NotAnAnnounce => f.write_str("not a BT-SEARCH announce"),
            LsdError::BadPort => f.write_str("no valid Port header"),
            LsdError::NoInfohash => f.write_str("no valid Infohash header"),
            LsdError::BadCookie => write!(f, "a cookie over {COOKIE_BYTES_MAX} bytes"),
        }
    }
}

impl std::error::Error for LsdError {}

impl Announce {
    /// The datagram for `group` (its `Host` header). At most
    /// [`ANNOUNCE_INFOHASHES_MAX`] infohashes are written; a cookie that is
    /// not printable ASCII without spaces, or too long, is left out.
    pub fn encode(&self, group: SocketAddr) -> Vec<u8> {
        let mut s = format!("BT-SEARCH * HTTP/1.1\r\nHost: {group}\r\nPort: {}\r\n", self.port);
        for ih in self.info_hashes.iter().take(ANNOUNCE_INFOHASHES_MAX) {
            s.push_str("Infohash: ");
            s.push_str(&ih.to_hex());
            s.push_str("\r\n");
        }
        if let Some(c) = self.cookie.as_deref().filter(|c| cookie_ok(c.as_bytes())) {
            s.push_str("cookie: ");
            s.push_str(c);
            s.push_str("\r\n");
        }
        // BEP 14's example ends with two empty lines; readers stop at the first.
        s.push_str("\r\n\r\n");
        s.into_bytes()
    }

    /// Parses a datagram, liberally as the mature clients do: header
    /// names in any case, lines ended by CRLF or LF, unknown headers and
    /// malformed `Infohash` lines skipped (at most
    /// [`ANNOUNCE_INFOHASHES_MAX`] are read), the `Host` not checked.
    pub fn parse(bytes: &[u8]) -> Result<Announce, LsdError> {
        if bytes.len() > ANNOUNCE_BYTES_MAX {
            return Err(LsdError::TooLong(bytes.len()));
        }
        let mut lines = bytes.split(|b| *b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
        let first = lines.next().unwrap_or_default();
        let mut words = first.split(|b| *b == b' ').filter(|w| !w.is_empty());
        if words.next() != Some(b"BT-SEARCH") || words.next() != Some(b"*") {
            return Err(LsdError::NotAnAnnounce);
        }
        if !words.next().is_some_and(|v| v.starts_with(b"HTTP/1.")) {
            return Err(LsdError::NotAnAnnounce);
        }
        let (mut port, mut info_hashes, mut cookie) = (None, Vec::new(), None);
        for line in lines {
            if line.is_empty() {
                break;
            }
            let Some(colon) = line.iter().position(|b| *b == b':') else {
                continue;
            };
            let name = line[..colon].trim_ascii();
            let value = line[colon + 1..].trim_ascii();
            if name.eq_ignore_ascii_case(b"port") {
                let p = core::str::from_utf8(value).ok().and_then(|v| v.parse::<u16>().ok()).filter(|p| *p != 0);
                port = Some(p.ok_or(LsdError::BadPort)?);
            } else if name.eq_ignore_ascii_case(b"infohash") {
                let ih = core::str::from_utf8(value).ok().filter(|v| v.len() == 40).and_then(InfoHash::from_hex);
                if let Some(ih) = ih {
                    if info_hashes.len() < ANNOUNCE_INFOHASHES_MAX && !info_hashes.contains(&ih) {
                        info_hashes.push(ih);
                    }
                }
            } else if name.eq_ignore_ascii_case(b"cookie") {
                if !cookie_ok(value) {
                    return Err(LsdError::BadCookie);
                }
                cookie = Some(String::from_utf8(value.to_vec()).map_err(|_| LsdError::BadCookie)?);
            }
        }
        let port = port.ok_or(LsdError::BadPort)?;
        if info_hashes.is_empty() {
            return Err(LsdError::NoInfohash);
        }
        Ok(Announce { port, info_hashes, cookie })
    }
}

/// Printable ASCII without spaces, not empty, at most [`COOKIE_BYTES_MAX`].
fn cookie_ok(c: &[u8]) -> bool {
    !c.is_empty() && c.len() <= COOKIE_BYTES_MAX && c.iter().all(|b| b.is_ascii_graphic())
}

/// Tuning and limits of an [`Lsd`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LsdConfig {
    /// Our BitTorrent listening port, announced.
    pub port: u16,
    /// The torrents we serve (at most [`LSD_TORRENTS_MAX`]; more are
    /// ignored): announced, and the only ones whose peers are reported.
    pub info_hashes: Vec<InfoHash>,
    /// The groups announced to (those the adapter could join).
    pub groups: Vec<SocketAddr>,
    /// Time between our announces (each drawn from 7/8 to 9/8 of it).
    pub interval: Duration,
    /// Datagrams one source IP may send at once before it is held to
    /// [`LsdConfig::source_per_minute`].
    pub source_burst: u32,
    /// Datagrams a minute one source IP is allowed once its burst is spent;
    /// more are dropped unread.
    pub source_per_minute: u32,
    /// The same peer of the same torrent is reported at most this often.
    pub report_interval: Duration,
}

impl LsdConfig {
    /// Defaults for `port` and `info_hashes`: the IPv4 group, announces
    /// every 5 minutes (libtorrent's interval), bursts of 32 datagrams per
    /// source then 60 a minute, a peer reported at most once a minute.
    pub fn new(port: u16, info_hashes: Vec<InfoHash>) -> LsdConfig {
        LsdConfig {
            port,
            info_hashes,
            groups: vec![LSD_GROUP_V4],
            interval: Duration::from_secs(300),
            source_burst: 32,
            source_per_minute: 60,
            report_interval: Duration::from_secs(60),
        }
    }
}

/// What the adapter feeds an [`Lsd`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// A datagram arrived on a group's socket from `from`.
    Receive {
        /// The sender's address (its IP is the peer's).
        from: SocketAddr,
        /// The datagram.
        bytes: Vec<u8>,
    },
    /// Time passed; early timeouts do nothing.
    Timeout,
    /// The torrents we serve now (a session's torrents come and go; at
    /// most [`LSD_TORRENTS_MAX`], more are ignored). A torrent not served
    /// before is announced at once; peers of one no longer served are not
    /// reported.
    SetInfoHashes(Vec<InfoHash>),
}

/// What the machine reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A peer on the local network takes part in a torrent we serve.
    Peer {
        /// The torrent.
        info_hash: InfoHash,
        /// Where it listens: the datagram's source IP and its `Port`.
        addr: SocketAddr,
    },
}

/// What the adapter must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send this datagram to the group `to`.
    Transmit(Transmit<SocketAddr>),
    /// Something happened.
    Event(Event),
    /// Call [`Lsd::handle`] with [`Input::Timeout`] at this instant.
    Timeout(Instant),
}

/// Counts of what was received, for logs and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LsdStats {
    /// Datagrams received.
    pub received: u64,
    /// Our own announces, looped back.
    pub own: u64,
    /// Datagrams that were not valid announces.
    pub malformed: u64,
    /// Datagrams dropped because their source sent too many.
    pub rate_limited: u64,
    /// Valid announces of none of our torrents.
    pub foreign: u64,
    /// Peers reported.
    pub peers: u64,
}

/// Who announced: its cookie, or without one its address.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Who {
    Cookie(String),
    Addr(SocketAddr),
}

/// A token bucket per source IP.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    /// Tokens, in millionths of a datagram (so refills are exact).
    tokens_micro: u64,
    at: Instant,
}

/// The BEP 14 machine. Drive it as every machine here: `handle(now,
/// Input)`, then drain [`Lsd::poll_output`] until [`Output::Timeout`].
/// The first announce is due at once.
#[derive(Debug)]
pub struct Lsd {
    config: LsdConfig,
    cookie: String,
    rng: Rng,
    next_announce: Instant,
    sources: BTreeMap<IpAddr, Bucket>,
    /// (torrent, peer) -> when last reported (at most [`LSD_REPORTED_MAX`]).
    reported: BTreeMap<(InfoHash, Who), Instant>,
    out: VecDeque<Output>,
    stats: LsdStats,
}

impl Lsd {
    /// A machine announcing `config.info_hashes` on `config.groups`; the
    /// cookie that marks our announces is drawn from `seed`.
    pub fn new(config: LsdConfig, now: Instant, seed: u64) -> Lsd {
        let mut config = config;
        config.info_hashes.truncate(LSD_TORRENTS_MAX);
        let mut rng = Rng::new(seed);
        let cookie = format!("{:016x}", rng.next_u64());
        Lsd {
            config,
            cookie,
            rng,
            next_announce: now,
            sources: BTreeMap::new(),
            reported: BTreeMap::new(),
            out: VecDeque::new(),
            stats: LsdStats::default(),
        }
    }

    // ---- getters ----

    /// The cookie our announces carry.
    pub fn cookie(&self) -> &str {
        &self.cookie
    }

    /// What was received so far.
    pub fn stats(&self) -> LsdStats {
        self.stats
    }

    // ---- inputs ----

    /// Feeds one input; then drain [`Lsd::poll_output`].
    pub fn handle(&mut self, now: Instant, input: Input) {
        match input {
            Input::Timeout => {
                if now >= self.next_announce {
                    self.announce(now);
                }
            }
            Input::Receive { from, bytes } => self.on_receive(now, from, &bytes),
            Input::SetInfoHashes(mut hashes) => {
                hashes.truncate(LSD_TORRENTS_MAX);
                let fresh = hashes.iter().any(|h| !self.config.info_hashes.contains(h));
                self.config.info_hashes = hashes;
                if fresh {
                    // Said once now (the machine's next regular announce
                    // follows its interval from here).
                    self.announce(now);
                }
            }
        }
    }

    fn announce(&mut self, now: Instant) {
        for chunk in self.config.info_hashes.chunks(ANNOUNCE_INFOHASHES_MAX) {
            let a = Announce { port: self.config.port, info_hashes: chunk.to_vec(), cookie: Some(self.cookie.clone()) };
            for g in &self.config.groups {
                self.out.push_back(Output::Transmit(Transmit { to: *g, bytes: a.encode(*g) }));
            }
        }
        // 7/8 to 9/8 of the interval, so clients started together spread out.
        let i = self.config.interval.as_micros();
        let spread = (i / 4).max(1);
        let wait = i - i / 8 + self.rng.below(spread);
        self.next_announce = now + Duration::from_micros(wait.max(1));
    }

    /// True if `ip` may send one more datagram now (and takes its token).
    fn admit(&mut self, now: Instant, ip: IpAddr) -> bool {
        const MICRO: u64 = 1_000_000;
        let burst = self.config.source_burst as u64 * MICRO;
        if !self.sources.contains_key(&ip) && self.sources.len() >= LSD_SOURCES_MAX {
            let oldest = self.sources.iter().min_by_key(|(ip, b)| (b.at, **ip)).map(|(ip, _)| *ip);
            if let Some(o) = oldest {
                self.sources.remove(&o);
            }
        }
        let b = self.sources.entry(ip).or_insert(Bucket { tokens_micro: burst, at: now });
        // Refill: source_per_minute tokens a minute, in millionths.
        let elapsed_us = now.saturating_duration_since(b.at).as_micros() as u128;
        let refill = elapsed_us * self.config.source_per_minute as u128 / 60;
        b.tokens_micro = (b.tokens_micro as u128 + refill).min(burst as u128) as u64;
        b.at = now;
        if b.tokens_micro >= MICRO {
            b.tokens_micro -= MICRO;
            true
        } else {
            false
        }
    }

    fn on_receive(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        self.stats.received += 1;
        if !self.admit(now, from.ip()) {
            self.stats.rate_limited += 1;
            return;
        }
        let a = match Announce::parse(bytes) {
            Ok(a) => a,
            Err(_) => {
                self.stats.malformed += 1;
                return;
            }
        };
        if a.cookie.as_deref() == Some(self.cookie.as_str()) {
            self.stats.own += 1;
            return;
        }
        let addr = match from {
            SocketAddr::V4(v4) => SocketAddr::new(IpAddr::V4(*v4.ip()), a.port),
            // Keep the scope: a link-local peer is reachable only through it.
            SocketAddr::V6(v6) => SocketAddr::V6(SocketAddrV6::new(*v6.ip(), a.port, 0, v6.scope_id())),
        };
        let who = a.cookie.map_or(Who::Addr(addr), Who::Cookie);
        let mut ours = false;
        for ih in a.info_hashes {
            if !self.config.info_hashes.contains(&ih) {
                continue;
            }
            ours = true;
            let key = (ih, who.clone());
            if self
                .reported
                .get(&key)
                .is_some_and(|at| now.saturating_duration_since(*at) < self.config.report_interval)
            {
                continue;
            }
            if !self.reported.contains_key(&key) && self.reported.len() >= LSD_REPORTED_MAX {
                let oldest = self.reported.iter().min_by_key(|(k, at)| (**at, *k)).map(|(k, _)| k.clone());
                if let Some(o) = oldest {
                    self.reported.remove(&o);
                }
            }
            self.reported.insert(key, now);
            self.stats.peers += 1;
            self.out.push_back(Output::Event(Event::Peer { info_hash: ih, addr }));
        }
        if !ours {
            self.stats.foreign += 1;
        }
    }

    // ---- outputs ----

    /// The next thing to do; drain until [`Output::Timeout`].
    pub fn poll_output(&mut self) -> Output {
        self.out.pop_front().unwrap_or(Output::Timeout(self.next_announce))
    }
}
