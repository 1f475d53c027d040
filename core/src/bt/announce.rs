//! The announcer: when and where to announce one torrent (BEP 3 HTTP,
//! BEP 15 UDP, BEP 12 tiers), sans-IO.
//!
//! * **Inputs** ([`Announcer::handle`]): [`Input`]: transfer
//!   totals, the `completed`/`stopped` events, an HTTP body or a UDP
//!   datagram answering a request, a failed request, and `Timeout`.
//! * **Outputs** ([`Announcer::poll_output`]), drained until
//!   [`Output::Timeout`]: HTTP GETs and UDP datagrams to send
//!   (each with a [`RequestId`] to answer with), and [`Event`]s: peers
//!   found, tracker errors.
//!
//! Tiers are tried in order and trackers within a tier in (shuffled) order;
//! a tracker that answers moves to the front of its tier (BEP 12). A UDP
//! tracker gets a connect first; its connection id is reused for a minute.
//! A request unanswered after 15 s x 2^n (n = consecutive failures, capped)
//! counts as failed (BEP 15 timing), and the next tracker is tried.

use std::collections::VecDeque;

use core::net::SocketAddr;

use super::metainfo::InfoHash;
use super::tracker::{parse_announce_response, udp, AnnounceEvent, AnnounceRequest, TrackerError};
use super::wire::PeerId;
use crate::rand::Rng;
use crate::time::{Duration, Instant};

/// Identifies one outstanding request; echo it in the answer.
pub type RequestId = u64;

/// Tuning of an [`Announcer`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnounceConfig {
    /// Our peer id.
    pub peer_id: PeerId,
    /// Our listen port.
    pub port: u16,
    /// Peers asked for per announce.
    pub numwant: u32,
    /// Interval used when a tracker gives none (or until one answers).
    pub default_interval: Duration,
    /// Shortest interval we honour, whatever a tracker says.
    pub interval_min: Duration,
    /// First request timeout; doubles per consecutive failure.
    pub request_timeout: Duration,
    /// Cap on the doublings.
    pub backoff_doublings_max: u32,
    /// How long a UDP connection id stays usable.
    pub udp_connection_ttl: Duration,
    /// Most trackers kept over all tiers.
    pub trackers_max: usize,
}

impl AnnounceConfig {
    /// Defaults: 50 peers, 30 min default interval, 60 s floor, 15 s first
    /// timeout doubling up to 4 times, 60 s UDP connection ids, 50 trackers.
    pub fn new(peer_id: PeerId, port: u16) -> AnnounceConfig {
        AnnounceConfig {
            peer_id,
            port,
            numwant: 50,
            default_interval: Duration::from_secs(30 * 60),
            interval_min: Duration::from_secs(60),
            request_timeout: Duration::from_secs(15),
            backoff_doublings_max: 4,
            udp_connection_ttl: Duration::from_secs(60),
            trackers_max: 50,
        }
    }
}

/// What the adapter feeds an [`Announcer`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// Current totals (sent with the next announce).
    Progress {
        /// Bytes uploaded this session.
        uploaded: u64,
        /// Bytes downloaded this session.
        downloaded: u64,
        /// Bytes still missing.
        left: u64,
    },
    /// The download completed: announce `completed` now.
    Completed,
    /// We leave the swarm: announce `stopped` now, then stay quiet.
    Stop,
    /// The body of an HTTP response to [`Output::HttpGet`].
    HttpBody {
        /// The request answered.
        id: RequestId,
        /// The body.
        body: Vec<u8>,
    },
    /// A datagram from the tracker a [`Output::UdpSend`] went to.
    UdpDatagram {
        /// The request answered (the adapter matches by tracker address).
        id: RequestId,
        /// The datagram.
        bytes: Vec<u8>,
        /// The socket is IPv6, so announce peers are 18-byte entries (BEP 15).
        ipv6: bool,
    },
    /// The request could not be made (DNS, connection, HTTP status...).
    RequestFailed {
        /// The request.
        id: RequestId,
    },
    /// Time passed; early timeouts do nothing.
    Timeout,
}

/// What the announcer reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Peers a tracker gave us.
    Peers(Vec<SocketAddr>),
    /// A tracker failed or refused; the next one is being tried.
    TrackerError {
        /// The tracker.
        tracker: String,
        /// What it said or what went wrong (`None`: timeout or transport).
        error: Option<TrackerError>,
    },
}

/// What the adapter must do. The requests are not
/// [`crate::Transmit`]s: an HTTP GET is a URL, not bytes, and a UDP
/// tracker is a name to resolve first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// GET this URL; answer with [`Input::HttpBody`] or
    /// [`Input::RequestFailed`].
    HttpGet {
        /// Echo this.
        id: RequestId,
        /// The full announce URL.
        url: String,
    },
    /// Send this datagram to the host and port of `tracker` (a `udp://`
    /// URL); answer with [`Input::UdpDatagram`].
    UdpSend {
        /// Echo this.
        id: RequestId,
        /// The tracker URL, to resolve.
        tracker: String,
        /// The datagram.
        payload: Vec<u8>,
    },
    /// Something happened.
    Event(Event),
    /// Call [`Announcer::handle`] with [`Input::Timeout`] then.
    Timeout(Instant),
}

/// How a tracker is doing, as [`Announcer::status`] shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrackerState {
    /// Never asked yet (another tracker of its tier answers, or its turn
    /// has not come).
    NotContacted,
    /// A request to it is in flight.
    Updating,
    /// Its last answer was a good one.
    Working,
    /// Its last request failed, timed out or was refused.
    Error,
}

impl TrackerState {
    /// The word the APIs show: `"not contacted"`, `"updating"`,
    /// `"working"`, `"error"`.
    pub fn as_str(self) -> &'static str {
        match self {
            TrackerState::NotContacted => "not contacted",
            TrackerState::Updating => "updating",
            TrackerState::Working => "working",
            TrackerState::Error => "error",
        }
    }
}

/// One tracker's state, for a user interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackerStatus {
    /// Its announce URL.
    pub url: String,
    /// Its tier (0 first).
    pub tier: usize,
    /// How it is doing.
    pub state: TrackerState,
    /// Peers in its last good answer (`None` before one).
    pub peers: Option<u32>,
    /// When its last request ended (answered or failed).
    pub last_announce: Option<Instant>,
    /// What went wrong with its last request, if it failed.
    pub error: Option<String>,
}

#[derive(Clone, Debug)]
struct Tracker {
    url: String,
    udp: bool,
    conn: Option<(u64, Instant)>,
    /// For [`Announcer::status`]: peers of the last good answer, when the
    /// last request ended, and its error if it failed.
    peers: Option<u32>,
    last: Option<Instant>,
    error: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for an HTTP body.
    Http,
    /// Waiting for a UDP connect response with this transaction id.
    UdpConnect(u32),
    /// Waiting for a UDP announce response with this transaction id.
    UdpAnnounce(u32),
}

#[derive(Clone, Copy, Debug)]
struct InFlight {
    id: RequestId,
    tier: usize,
    index: usize,
    phase: Phase,
    deadline: Instant,
}

/// Announces one torrent to its trackers.
#[derive(Debug)]
pub struct Announcer {
    config: AnnounceConfig,
    info_hash: InfoHash,
    tiers: Vec<Vec<Tracker>>,
    key: u32,
    rng: Rng,
    uploaded: u64,
    downloaded: u64,
    left: u64,
    event: AnnounceEvent,
    /// The tracker to try next: (tier, index).
    cursor: (usize, usize),
    next_announce: Instant,
    in_flight: Option<InFlight>,
    failures: u32,
    next_id: RequestId,
    stopped: bool,
    /// A `stop` came while `completed` was in flight: send `stopped` once
    /// that request ends (answered, failed or timed out), so the tracker
    /// counts the download before it forgets the peer.
    stop_after_in_flight: bool,
    out: VecDeque<Output>,
}

impl Announcer {
    /// An announcer for `info_hash` over BEP 12 `tiers` (unsupported URL
    /// schemes are dropped; trackers within a tier are shuffled). Announces
    /// `started` at once.
    pub fn new(
        config: AnnounceConfig,
        info_hash: InfoHash,
        tiers: &[Vec<String>],
        left: u64,
        now: Instant,
        seed: u64,
    ) -> Announcer {
        let mut rng = Rng::new(seed);
        let mut count = 0;
        let mut kept = Vec::new();
        for tier in tiers {
            let mut t: Vec<Tracker> = tier
                .iter()
                .filter(|u| u.starts_with("http://") || u.starts_with("https://") || u.starts_with("udp://"))
                .filter(|_| {
                    count += 1;
                    count <= config.trackers_max
                })
                .map(|u| Tracker {
                    url: u.clone(),
                    udp: u.starts_with("udp://"),
                    conn: None,
                    peers: None,
                    last: None,
                    error: None,
                })
                .collect();
            rng.shuffle(&mut t);
            if !t.is_empty() {
                kept.push(t);
            }
        }
        let mut a = Announcer {
            key: rng.next_u32(),
            config,
            info_hash,
            tiers: kept,
            rng,
            uploaded: 0,
            downloaded: 0,
            left,
            event: AnnounceEvent::Started,
            cursor: (0, 0),
            next_announce: now,
            in_flight: None,
            failures: 0,
            next_id: 1,
            stopped: false,
            stop_after_in_flight: false,
            out: VecDeque::new(),
        };
        a.send(now);
        a
    }

    /// The trackers in their current order, tier by tier.
    pub fn trackers(&self) -> Vec<Vec<String>> {
        self.tiers.iter().map(|t| t.iter().map(|x| x.url.clone()).collect()).collect()
    }

    /// Every tracker's state, tier by tier in their current order (at most
    /// [`AnnounceConfig::trackers_max`] entries).
    pub fn status(&self) -> Vec<TrackerStatus> {
        let mut all = Vec::new();
        for (tier, trackers) in self.tiers.iter().enumerate() {
            for (index, t) in trackers.iter().enumerate() {
                let busy = self.in_flight.is_some_and(|f| f.tier == tier && f.index == index);
                let state = match (busy, t.last, &t.error) {
                    (true, _, _) => TrackerState::Updating,
                    (false, None, _) => TrackerState::NotContacted,
                    (false, Some(_), Some(_)) => TrackerState::Error,
                    (false, Some(_), None) => TrackerState::Working,
                };
                all.push(TrackerStatus {
                    url: t.url.clone(),
                    tier,
                    state,
                    peers: t.peers,
                    last_announce: t.last,
                    error: t.error.clone(),
                });
            }
        }
        all
    }

    /// When the next regular announce is due.
    pub fn next_announce(&self) -> Instant {
        self.next_announce
    }

    /// The next thing to do; drain until [`Output::Timeout`].
    pub fn poll_output(&mut self) -> Output {
        if let Some(o) = self.out.pop_front() {
            return o;
        }
        let at = match (&self.in_flight, self.stopped) {
            (Some(f), _) => f.deadline,
            (None, true) => Instant::NEVER,
            (None, false) if self.tiers.is_empty() => Instant::NEVER,
            (None, false) => self.next_announce,
        };
        Output::Timeout(at)
    }

    /// Feeds one input; then drain [`Announcer::poll_output`].
    pub fn handle(&mut self, now: Instant, input: Input) {
        match input {
            Input::Progress { uploaded, downloaded, left } => {
                self.uploaded = uploaded;
                self.downloaded = downloaded;
                self.left = left;
            }
            Input::Completed => {
                if !self.stopped {
                    self.left = 0;
                    self.event = AnnounceEvent::Completed;
                    self.restart(now);
                }
            }
            Input::Stop => {
                if !self.stopped {
                    self.stopped = true;
                    if self.in_flight.is_some() && self.event == AnnounceEvent::Completed {
                        // Dropping the `completed` in flight would lose the
                        // snatch, and a tracker handling both at once may
                        // take them in either order: let it end first (its
                        // own deadline bounds the wait).
                        self.stop_after_in_flight = true;
                    } else {
                        self.send_stopped(now);
                    }
                }
            }
            Input::HttpBody { id, body } => self.on_http(now, id, &body),
            Input::UdpDatagram { id, bytes, ipv6 } => self.on_udp(now, id, &bytes, ipv6),
            Input::RequestFailed { id } => {
                if self.in_flight.is_some_and(|f| f.id == id) {
                    self.fail(now, None);
                }
            }
            Input::Timeout => {
                if let Some(f) = self.in_flight {
                    if now >= f.deadline {
                        self.fail(now, None);
                    }
                } else if !self.stopped && now >= self.next_announce {
                    self.send(now);
                }
            }
        }
    }

    /// Announces `stopped` now, from the first tier.
    fn send_stopped(&mut self, now: Instant) {
        self.stop_after_in_flight = false;
        self.event = AnnounceEvent::Stopped;
        self.restart(now);
    }

    /// Drops any request in flight and announces now from the first tier.
    fn restart(&mut self, now: Instant) {
        self.in_flight = None;
        self.cursor = (0, 0);
        self.next_announce = now;
        self.send(now);
    }

    fn request(&self) -> AnnounceRequest {
        AnnounceRequest {
            info_hash: self.info_hash,
            peer_id: self.config.peer_id,
            port: self.config.port,
            uploaded: self.uploaded,
            downloaded: self.downloaded,
            left: self.left,
            event: self.event,
            numwant: Some(self.config.numwant),
            key: Some(self.key),
            compact: true,
        }
    }

    fn timeout(&self) -> Duration {
        let n = self.failures.min(self.config.backoff_doublings_max);
        self.config.request_timeout.saturating_mul(1 << n)
    }

    /// Sends an announce (or a UDP connect) to the tracker at the cursor.
    fn send(&mut self, now: Instant) {
        let (tier, index) = self.cursor;
        let Some(t) = self.tiers.get(tier).and_then(|t| t.get(index)) else {
            return;
        };
        let id = self.next_id;
        self.next_id += 1;
        let deadline = now + self.timeout();
        let (phase, out) = if !t.udp {
            (Phase::Http, Output::HttpGet { id, url: self.request().url(&t.url) })
        } else {
            let tx = self.rng.next_u32();
            match t.conn {
                Some((cid, at)) if now.saturating_duration_since(at) < self.config.udp_connection_ttl => {
                    let payload = udp::Request::Announce {
                        connection_id: cid,
                        transaction_id: tx,
                        request: self.request(),
                        ip: 0,
                    }
                    .encode();
                    (Phase::UdpAnnounce(tx), Output::UdpSend { id, tracker: t.url.clone(), payload })
                }
                _ => (
                    Phase::UdpConnect(tx),
                    Output::UdpSend {
                        id,
                        tracker: t.url.clone(),
                        payload: udp::Request::Connect { transaction_id: tx }.encode(),
                    },
                ),
            }
        };
        self.in_flight = Some(InFlight { id, tier, index, phase, deadline });
        self.out.push_back(out);
    }

    /// The tracker in flight failed: report, move to the next one.
    fn fail(&mut self, now: Instant, error: Option<TrackerError>) {
        let Some(f) = self.in_flight.take() else {
            return;
        };
        let t = &mut self.tiers[f.tier][f.index];
        let url = t.url.clone();
        t.conn = None;
        t.last = Some(now);
        t.error = Some(match &error {
            Some(e) => e.to_string(),
            None => "no answer (timed out, or the request could not be made)".into(),
        });
        self.out.push_back(Output::Event(Event::TrackerError { tracker: url, error }));
        self.failures += 1;
        if self.stop_after_in_flight {
            // `completed` did not get through; `stopped` still must.
            return self.send_stopped(now);
        }
        // Next tracker in the tier, else the first of the next tier; after
        // the last tier, wait and start over.
        let (tier, index) = (f.tier, f.index + 1);
        if index < self.tiers[tier].len() {
            self.cursor = (tier, index);
            self.send(now);
        } else if tier + 1 < self.tiers.len() {
            self.cursor = (tier + 1, 0);
            self.send(now);
        } else {
            self.cursor = (0, 0);
            if self.stopped {
                return;
            }
            self.next_announce = now + self.timeout();
        }
    }

    /// The tracker in flight answered: promote it, schedule the next round.
    fn succeed(&mut self, now: Instant, f: InFlight, interval: Duration, peers: Vec<SocketAddr>) {
        self.in_flight = None;
        if self.stop_after_in_flight {
            return self.send_stopped(now);
        }
        self.failures = 0;
        let mut t = self.tiers[f.tier].remove(f.index);
        t.last = Some(now);
        t.error = None;
        t.peers = Some(peers.len().min(u32::MAX as usize) as u32);
        self.tiers[f.tier].insert(0, t);
        self.cursor = (0, 0);
        self.event = AnnounceEvent::None;
        self.next_announce = now + interval.max(self.config.interval_min);
        if !peers.is_empty() && !self.stopped {
            self.out.push_back(Output::Event(Event::Peers(peers)));
        }
    }

    fn on_http(&mut self, now: Instant, id: RequestId, body: &[u8]) {
        let Some(f) = self.in_flight.filter(|f| f.id == id && f.phase == Phase::Http) else {
            return;
        };
        match parse_announce_response(body) {
            Ok(r) => {
                let secs = r.min_interval.unwrap_or(0).max(r.interval);
                let interval = if secs == 0 { self.config.default_interval } else { Duration::from_secs(secs as u64) };
                let peers = r.peers.into_iter().map(|p| p.addr).collect();
                self.succeed(now, f, interval, peers);
            }
            Err(e) => self.fail(now, Some(e)),
        }
    }

    fn on_udp(&mut self, now: Instant, id: RequestId, bytes: &[u8], ipv6_peers: bool) {
        let Some(f) = self.in_flight.filter(|f| f.id == id) else {
            return;
        };
        let (want_tx, connect) = match f.phase {
            Phase::UdpConnect(tx) => (tx, true),
            Phase::UdpAnnounce(tx) => (tx, false),
            Phase::Http => return,
        };
        let r = match udp::Response::parse(bytes, ipv6_peers) {
            // Not ours (a stale or forged datagram): keep waiting.
            Ok(r) if r.transaction_id() != want_tx => return,
            Ok(r) => r,
            Err(_) => return,
        };
        match (connect, r) {
            (_, udp::Response::Error { message, .. }) => {
                let e = TrackerError { offset: 0, kind: super::tracker::TrackerErrorKind::Failure(message) };
                self.fail(now, Some(e));
            }
            (true, udp::Response::Connect { connection_id, .. }) => {
                self.tiers[f.tier][f.index].conn = Some((connection_id, now));
                self.in_flight = None;
                self.cursor = (f.tier, f.index);
                self.send(now);
            }
            (false, udp::Response::Announce { interval, peers, .. }) => {
                let interval =
                    if interval == 0 { self.config.default_interval } else { Duration::from_secs(interval as u64) };
                self.succeed(now, f, interval, peers);
            }
            // A well-formed answer of the wrong kind: keep waiting.
            _ => {}
        }
    }
}
