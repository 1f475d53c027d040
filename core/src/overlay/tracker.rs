//! The tracker machine: a node's BitTorrent tracker, sans IO. It answers
//! announces and scrapes from the overlay's provider index and turns each
//! announce into writes of the replicated `PROVIDERS` namespace, which the
//! [member](crate::member) spreads.
//!
//! Its rules:
//!
//! - An announce records (or refreshes) the peer as a provider for two
//!   announce intervals and a margin, then it expires everywhere; `stopped`
//!   deletes it; `completed` also records a snatch (scrape's `downloaded`)
//!   for [`Config::snatch_ttl`].
//! - A peer's `stopped` is remembered for [`Config::stopped_hold`]: an
//!   announce from the same endpoint that is neither `started` nor
//!   `stopped` arriving within it is a request sent before the stop and
//!   delivered late (a client drops its in-flight `completed` and sends
//!   `stopped` at once, on another connection): it does not list the peer
//!   again. The stop is learnt from the replicated tombstone too, so a late
//!   announce reaching another node is caught as well.
//! - When the index knows no other provider of the torrent, the announce is
//!   parked and a gossip lookup asks a few members (a node that just joined
//!   may not hold the providers yet); it is answered when the lookup ends,
//!   or after [`Config::park_timeout`] at the latest. A torrent is looked
//!   up at most once per [`Config::lookup_again`]; at most
//!   [`Config::parked_max`] announces wait at once, past it they are
//!   answered at once.
//!
//! Same shape as every machine of the core: [`Tracker::new`], then
//! [`Tracker::handle`] one [`Input`] at a time, each followed by a drain of
//! [`Tracker::poll_output`] until [`Output::Timeout`]. Wire it to a
//! [`Member`](crate::member::Member): every [`Output::Gossip`] goes in as
//! [`member::Command::Gossip`](crate::member::Command::Gossip); every
//! member [`Event::Providers`](crate::member::Event::Providers) comes here
//! as [`Input::Store`] and every member
//! [`Event::LookupDone`](crate::member::Event::LookupDone) as
//! [`Input::LookupDone`]. The machine draws nothing at random, so it takes
//! no seed.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use core::net::{IpAddr, SocketAddr};

use super::{parse_key, provider_key, provider_value, snatch_key, Overlay, Provider, LOOKUP_MAX};
use crate::bt::metainfo::InfoHash;
use crate::bt::tracker::{
    encode_announce_response, encode_scrape_response, AnnounceEvent, AnnounceRequest, AnnounceResponse, ScrapeStats,
    TrackerPeer,
};
use crate::gossip::{self, Now};
use crate::replica::{Change, Entry, Namespace};
use crate::time::{Duration, Instant, UnixMillis};

/// Settings of a [`Tracker`]; every limit is in the name's unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Seconds between a peer's announces, as clients are told.
    pub interval_s: u32,
    /// Added to two intervals before a silent provider expires.
    pub expiry_margin: Duration,
    /// How long a completed download is remembered for scrape.
    pub snatch_ttl: Duration,
    /// Announces parked at once, waiting on a lookup; past it they are
    /// answered at once. Torrents remembered as recently looked up are
    /// bounded by the same number.
    pub parked_max: usize,
    /// A torrent with no known provider is looked up at most this often.
    pub lookup_again: Duration,
    /// A parked announce is answered after this long at the latest, lookup
    /// ended or not.
    pub park_timeout: Duration,
    /// A `stopped` endpoint's later non-`started` announces within this
    /// long (wall clock, from the stop's version) do not list it again.
    pub stopped_hold: Duration,
    /// Stops remembered at once; the oldest go first past it.
    pub stopped_max: usize,
    /// Peers sent when the client does not say how many it wants.
    pub numwant_default: u32,
    /// How often expired providers are dropped from the index (lookups
    /// skip them anyway; this frees memory).
    pub sweep_every: Duration,
}

impl Config {
    /// Defaults for clients told to announce every `interval_s` seconds.
    pub fn new(interval_s: u32) -> Config {
        Config {
            interval_s: interval_s.max(1),
            expiry_margin: Duration::from_secs(30),
            snatch_ttl: Duration::from_secs(30 * 24 * 3600),
            parked_max: 1024,
            lookup_again: Duration::from_secs(30),
            park_timeout: Duration::from_secs(2),
            stopped_hold: Duration::from_secs(30),
            stopped_max: 4096,
            numwant_default: 50,
            sweep_every: Duration::from_secs(10),
        }
    }
}

/// One input to [`Tracker::handle`]. Plain data: a `Vec<Input>` is a test
/// case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// An announce from a client at `from` (the connection's IP; the
    /// request carries the port). Answered by [`Event::Answer`] with `id`.
    Announce {
        /// The caller's token, echoed in the answer.
        id: u64,
        /// The parsed request.
        request: AnnounceRequest,
        /// The client's IP address.
        from: IpAddr,
    },
    /// A scrape of these torrents (the first [`LOOKUP_MAX`] are answered);
    /// answered at once by [`Event::Answer`] with `id`.
    Scrape {
        /// The caller's token, echoed in the answer.
        id: u64,
        /// The torrents.
        hashes: Vec<InfoHash>,
    },
    /// A change of the replicated store's `PROVIDERS` namespace (the
    /// member's [`Event::Providers`](crate::member::Event::Providers)).
    Store(Change),
    /// The gossip lookup with this token ended.
    LookupDone {
        /// The token of the [`gossip::Command::Lookup`] this machine sent.
        id: u32,
    },
    /// The deadline of the last [`Output::Timeout`] passed (an early call
    /// does no harm).
    Timeout,
}

/// Something the caller should know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The bencoded answer to the announce or scrape with this token.
    Answer {
        /// The caller's token.
        id: u64,
        /// The HTTP response body.
        body: Vec<u8>,
    },
}

/// What the tracker wants done. Drain with [`Tracker::poll_output`] until
/// it returns `Timeout`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Hand this command to the member's gossip machine
    /// ([`member::Command::Gossip`](crate::member::Command::Gossip)).
    Gossip(gossip::Command),
    /// Report an event.
    Event(Event),
    /// Call `handle(.., Input::Timeout)` at this instant (or on any earlier
    /// input). Always the last output of a drain.
    Timeout(Instant),
}

/// Counters, for metrics, the simulator and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Announces handled.
    pub announces: u64,
    /// Announces answered at once.
    pub answered_at_once: u64,
    /// Parked announces answered when their lookup ended.
    pub answered_after_lookup: u64,
    /// Parked announces answered at the park timeout.
    pub answered_on_timeout: u64,
    /// Announces answered at once because [`Config::parked_max`] were
    /// waiting.
    pub park_full: u64,
    /// Late announces after a stop that did not list the peer again.
    pub late_after_stop: u64,
    /// The most announces parked at once.
    pub parked_peak: usize,
}

/// An announce waiting on a lookup.
#[derive(Clone, Debug)]
struct Parked {
    id: u64,
    request: AnnounceRequest,
    addr: SocketAddr,
    deadline: Instant,
}

/// A node's tracker.
///
/// Inputs: [`Tracker::handle`] (and [`Tracker::restore`] once, right after
/// [`Tracker::new`]). Outputs: [`Tracker::poll_output`], drained after
/// every input until `Timeout`; the queue only holds what one input
/// produced. Getters: [`Tracker::overlay`], [`Tracker::parked`],
/// [`Tracker::stats`], [`Tracker::config`], [`Tracker::check_invariants`].
pub struct Tracker {
    config: Config,
    overlay: Overlay,
    /// By lookup token; at most `parked_max`.
    parked: BTreeMap<u32, Parked>,
    /// When each torrent was last looked up; at most `parked_max`.
    asked: BTreeMap<InfoHash, Instant>,
    /// When each endpoint last stopped (wall ms); at most `stopped_max`.
    stopped: BTreeMap<(InfoHash, SocketAddr), UnixMillis>,
    next_lookup: u32,
    next_sweep: Instant,
    now: Now,
    out: VecDeque<Output>,
    stats: Stats,
}

impl Tracker {
    /// A tracker with an empty index at `now`.
    pub fn new(config: Config, now: Now) -> Tracker {
        Tracker {
            next_sweep: now.at + config.sweep_every,
            config,
            overlay: Overlay::new(),
            parked: BTreeMap::new(),
            asked: BTreeMap::new(),
            stopped: BTreeMap::new(),
            next_lookup: 0,
            now,
            out: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    /// Indexes the live entries of a restored store (the member's
    /// `store().live(Namespace::PROVIDERS, now)`); call once, right after
    /// [`Tracker::new`].
    pub fn restore<'a>(&mut self, entries: impl IntoIterator<Item = &'a Entry>) {
        self.overlay = Overlay::from_entries(entries);
    }

    /// The provider index (for `/providers` and the overlay client).
    pub fn overlay(&self) -> &Overlay {
        &self.overlay
    }

    /// Announces waiting on a lookup now.
    pub fn parked(&self) -> usize {
        self.parked.len()
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Panics with a reason if a bound of the [`Config`] does not hold:
    /// parked announces, torrents remembered as looked up, stops
    /// remembered. For tests, the fuzzer and the simulator, after any step.
    pub fn check_invariants(&self) {
        assert!(self.parked.len() <= self.config.parked_max, "more announces parked than parked_max");
        assert!(self.asked.len() <= self.config.parked_max, "more torrents remembered as asked than parked_max");
        assert!(self.stopped.len() <= self.config.stopped_max, "more stops remembered than stopped_max");
        assert!(self.stats.parked_peak <= self.config.parked_max, "the parked peak passed parked_max");
    }

    /// The next output. Drain until it returns `Output::Timeout`.
    pub fn poll_output(&mut self) -> Output {
        if let Some(o) = self.out.pop_front() {
            return o;
        }
        let parked = self.parked.values().map(|p| p.deadline).min().unwrap_or(Instant::NEVER);
        Output::Timeout(parked.min(self.next_sweep))
    }

    /// Feeds one input at `now`. Then drain [`Tracker::poll_output`].
    pub fn handle(&mut self, now: Now, input: Input) {
        self.now = Now { at: now.at.max(self.now.at), wall_ms: now.wall_ms };
        match input {
            Input::Announce { id, request, from } => self.announce(id, request, from),
            Input::Scrape { id, hashes } => {
                let body = self.scrape(&hashes);
                self.answer(id, body);
            }
            Input::Store(change) => self.follow(&change),
            Input::LookupDone { id } => {
                if let Some(p) = self.parked.remove(&id) {
                    self.stats.answered_after_lookup += 1;
                    let body = self.response(&p.request, p.addr);
                    self.answer(p.id, body);
                }
            }
            Input::Timeout => self.timeout(),
        }
    }

    fn answer(&mut self, id: u64, body: Vec<u8>) {
        self.out.push_back(Output::Event(Event::Answer { id, body }));
    }

    fn gossip(&mut self, c: gossip::Command) {
        self.out.push_back(Output::Gossip(c));
    }

    fn announce(&mut self, id: u64, req: AnnounceRequest, from: IpAddr) {
        self.stats.announces += 1;
        let now = self.now;
        let ih = req.info_hash;
        let addr = SocketAddr::new(from, req.port);
        let key = Bytes::from(provider_key(&ih, addr));
        match req.event {
            AnnounceEvent::Stopped => {
                self.remember_stop(ih, addr, now.wall_ms);
                self.overlay.remove(&ih, addr);
                self.gossip(gossip::Command::Delete { ns: Namespace::PROVIDERS, key });
            }
            AnnounceEvent::Started | AnnounceEvent::Completed | AnnounceEvent::None => {
                if req.event == AnnounceEvent::Started {
                    // A new session: whatever stop came before is over.
                    self.stopped.remove(&(ih, addr));
                }
                if self.stopped_recently(ih, addr) {
                    self.stats.late_after_stop += 1;
                } else {
                    let provider = Provider {
                        addr,
                        peer_id: Some(req.peer_id),
                        seeder: req.left == 0,
                        announced_ms: now.wall_ms,
                        // Two missed announces and a margin, then the peer is gone.
                        expires_ms: now.wall_ms
                            + 2 * u64::from(self.config.interval_s) * 1000
                            + self.config.expiry_margin.as_millis(),
                    };
                    self.overlay.insert(ih, provider);
                    let value = Bytes::from(provider_value(&provider));
                    self.gossip(gossip::Command::Write {
                        ns: Namespace::PROVIDERS,
                        key,
                        value,
                        expires_ms: provider.expires_ms,
                    });
                }
            }
        }
        if req.event == AnnounceEvent::Completed {
            // It did complete, even if this arrives after its stop.
            self.overlay.snatch(ih, addr);
            self.gossip(gossip::Command::Write {
                ns: Namespace::PROVIDERS,
                key: Bytes::from(snatch_key(&ih, addr)),
                value: Bytes::new(),
                expires_ms: now.wall_ms + self.config.snatch_ttl.as_millis(),
            });
        }
        let alone = self.overlay.lookup(&ih, now.wall_ms, 1, Some(addr)).is_empty();
        let asked_recently = self.asked.get(&ih).is_some_and(|at| now.at < *at + self.config.lookup_again);
        if req.event == AnnounceEvent::Stopped || !alone || asked_recently {
            self.stats.answered_at_once += 1;
            let body = self.response(&req, addr);
            return self.answer(id, body);
        }
        if self.asked.len() >= self.config.parked_max {
            let again = self.config.lookup_again;
            self.asked.retain(|_, at| now.at < *at + again);
        }
        if self.parked.len() >= self.config.parked_max || self.asked.len() >= self.config.parked_max {
            self.stats.park_full += 1;
            self.stats.answered_at_once += 1;
            let body = self.response(&req, addr);
            return self.answer(id, body);
        }
        self.asked.insert(ih, now.at);
        // Tokens wrap; skip one still in use (there are far fewer parked
        // than tokens).
        loop {
            self.next_lookup = self.next_lookup.wrapping_add(1);
            if !self.parked.contains_key(&self.next_lookup) {
                break;
            }
        }
        let lookup = self.next_lookup;
        let deadline = now.at + self.config.park_timeout;
        self.parked.insert(lookup, Parked { id, request: req, addr, deadline });
        self.stats.parked_peak = self.stats.parked_peak.max(self.parked.len());
        self.gossip(gossip::Command::Lookup {
            id: lookup,
            ns: Namespace::PROVIDERS,
            prefix: Bytes::copy_from_slice(&ih.0),
        });
    }

    fn stopped_recently(&self, ih: InfoHash, addr: SocketAddr) -> bool {
        self.stopped
            .get(&(ih, addr))
            .is_some_and(|at| self.now.wall_ms < at.saturating_add(self.config.stopped_hold.as_millis()))
    }

    fn remember_stop(&mut self, ih: InfoHash, addr: SocketAddr, at_ms: UnixMillis) {
        let slot = self.stopped.entry((ih, addr)).or_insert(at_ms);
        *slot = (*slot).max(at_ms);
        if self.stopped.len() > self.config.stopped_max {
            let oldest = self.stopped.iter().min_by_key(|(_, at)| **at).map(|(k, _)| *k);
            if let Some(k) = oldest {
                self.stopped.remove(&k);
            }
        }
    }

    /// Follows the replicated store: the index, and stops written anywhere
    /// in the cluster (a provider's tombstone).
    fn follow(&mut self, change: &Change) {
        if let Change::Applied(e) = change {
            if e.ns == Namespace::PROVIDERS && e.deleted {
                let hold_ms = self.config.stopped_hold.as_millis();
                if let Some((ih, addr)) = parse_key(&e.key) {
                    // Only a recent delete is a stop worth holding; an
                    // expired entry turned tombstone carries its old version.
                    if self.now.wall_ms < e.version.wall_ms().saturating_add(hold_ms) {
                        self.remember_stop(ih, addr, e.version.wall_ms());
                    }
                }
            }
        }
        self.overlay.follow(change);
    }

    fn timeout(&mut self) {
        let now = self.now;
        let due: Vec<u32> = self.parked.iter().filter(|(_, p)| p.deadline <= now.at).map(|(k, _)| *k).collect();
        for k in due {
            if let Some(p) = self.parked.remove(&k) {
                self.stats.answered_on_timeout += 1;
                let body = self.response(&p.request, p.addr);
                self.answer(p.id, body);
            }
        }
        if now.at >= self.next_sweep {
            self.next_sweep = now.at + self.config.sweep_every;
            self.overlay.expire(now.wall_ms);
            let hold_ms = self.config.stopped_hold.as_millis();
            self.stopped.retain(|_, at| now.wall_ms < at.saturating_add(hold_ms));
            let again = self.config.lookup_again;
            self.asked.retain(|_, at| now.at < *at + again);
        }
    }

    /// The bencoded answer to `req` from `addr`: other providers (none for
    /// `stopped`) and the swarm's counts.
    fn response(&self, req: &AnnounceRequest, addr: SocketAddr) -> Vec<u8> {
        let now_ms = self.now.wall_ms;
        let interval = self.config.interval_s;
        let want = req.numwant.unwrap_or(self.config.numwant_default) as usize;
        let peers = if req.event == AnnounceEvent::Stopped {
            Vec::new()
        } else {
            self.overlay.lookup(&req.info_hash, now_ms, want, Some(addr))
        };
        let counts = self.overlay.counts(&req.info_hash, now_ms);
        let response = AnnounceResponse {
            interval,
            min_interval: Some((interval / 4).max(1)),
            complete: Some(counts.seeders),
            incomplete: Some(counts.leechers),
            peers: peers.iter().map(|p| TrackerPeer { addr: p.addr, peer_id: p.peer_id }).collect(),
            ..AnnounceResponse::default()
        };
        encode_announce_response(&response, req.compact)
    }

    fn scrape(&self, hashes: &[InfoHash]) -> Vec<u8> {
        let now_ms = self.now.wall_ms;
        let files = hashes
            .iter()
            .take(LOOKUP_MAX)
            .map(|ih| {
                let c = self.overlay.counts(ih, now_ms);
                let stats = ScrapeStats {
                    complete: c.seeders,
                    incomplete: c.leechers,
                    downloaded: self.overlay.downloaded(ih),
                };
                (*ih, stats)
            })
            .collect();
        encode_scrape_response(&files)
    }
}
