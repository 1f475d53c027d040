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
//! - What one address can write is bounded (issue #12: one client filled
//!   the replicated store with a million announces of random torrents):
//!   each [`address_group`] gets a token bucket of [`Config::rate_burst`]
//!   announces refilled at [`Config::rate_per_s`], and an announce past it
//!   is answered with the failure reason `announce rate limit` and changes
//!   nothing; a new provider is recorded only while its torrent has fewer
//!   than [`Config::providers_per_torrent_max`], its address group fewer
//!   than [`Config::providers_per_address_max`] and the index fewer than
//!   [`Config::providers_max`] (a refresh of a known one always is; an
//!   announce not recorded is still answered with peers), and a snatch only
//!   for a recorded provider, while the torrent has fewer than
//!   [`Config::snatches_per_torrent_max`]. The replicated store caps the
//!   `PROVIDERS` namespace again, for whatever arrives from other nodes,
//!   and keeps DNS's room.
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
//! [`Event::Gossip`](crate::member::Event::Gossip)`(LookupDone)` as
//! [`Input::LookupDone`]. The machine draws nothing at random, so it takes
//! no seed.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use core::net::{IpAddr, SocketAddr};

use super::{address_group, parse_key, provider_key, provider_value, snatch_key, Overlay, Provider, LOOKUP_MAX};
use crate::bt::metainfo::InfoHash;
use crate::bt::tracker::{
    encode_announce_response, encode_failure, encode_scrape_response, AnnounceEvent, AnnounceRequest, AnnounceResponse,
    ScrapeStats, TrackerPeer,
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
    /// Announces one address group may make at once, after a quiet spell.
    pub rate_burst: u32,
    /// Announces per second an address group regains, up to `rate_burst`.
    pub rate_per_s: u32,
    /// Address groups with a rate bucket at once; past it an arbitrary one
    /// is forgotten (it starts again with a full bucket), and full buckets
    /// go at every sweep.
    pub rate_addresses_max: usize,
    /// New providers of one torrent are not recorded past this many.
    pub providers_per_torrent_max: usize,
    /// New providers from one address group (all torrents) are not
    /// recorded past this many.
    pub providers_per_address_max: usize,
    /// New providers are not recorded while the index holds this many.
    pub providers_max: usize,
    /// Snatches of one torrent are not recorded past this many.
    pub snatches_per_torrent_max: usize,
}

/// The longest announce interval a [`Config`] takes: two intervals and the
/// margin must fit in the replicated store's lifetime of a provider
/// ([`PROVIDERS_LIFETIME_MAX_MS`](crate::replica::PROVIDERS_LIFETIME_MAX_MS)),
/// or the store would cut providers short.
pub const INTERVAL_MAX_S: u32 = 3_585;
/// The failure reason of an announce over its address's rate.
pub const RATE_LIMITED: &str = "announce rate limit";

impl Config {
    /// Defaults for clients told to announce every `interval_s` seconds.
    pub fn new(interval_s: u32) -> Config {
        Config {
            interval_s: interval_s.clamp(1, INTERVAL_MAX_S),
            expiry_margin: Duration::from_secs(30),
            // Soft state like the providers (scrape's `downloaded` counts
            // the last hour), within the store's provider lifetime.
            snatch_ttl: Duration::from_secs(3600),
            parked_max: 1024,
            lookup_again: Duration::from_secs(30),
            park_timeout: Duration::from_secs(2),
            stopped_hold: Duration::from_secs(30),
            stopped_max: 4096,
            numwant_default: 50,
            sweep_every: Duration::from_secs(10),
            // A seedbox behind one address announcing a few hundred
            // torrents every interval stays well under it.
            rate_burst: 200,
            rate_per_s: 10,
            rate_addresses_max: 16_384,
            providers_per_torrent_max: 2048,
            providers_per_address_max: 1024,
            // Half the store's cap of the namespace: room for tombstones.
            providers_max: crate::replica::PROVIDERS_ENTRIES_MAX / 2,
            snatches_per_torrent_max: 1024,
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
    /// Announces refused over their address's rate.
    pub rate_limited: u64,
    /// Announces answered but not recorded: a bound on providers was
    /// reached.
    pub not_recorded: u64,
}

/// One address group's rate: tokens in millionths, and when last filled.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    micros: u64,
    at: Instant,
}

/// A token in millionths.
const TOKEN: u64 = 1_000_000;

impl Bucket {
    /// The tokens (in millionths) at `now`, refilled at `per_s` tokens a
    /// second (which is `per_s` millionths a microsecond), at most `burst`.
    fn level(&self, now: Instant, per_s: u64, burst: u64) -> u64 {
        self.micros.saturating_add(now.saturating_duration_since(self.at).as_micros().saturating_mul(per_s)).min(burst)
    }
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
    /// Announce rate per address group; at most `rate_addresses_max`.
    rates: BTreeMap<IpAddr, Bucket>,
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
            rates: BTreeMap::new(),
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
        assert!(self.rates.len() <= self.config.rate_addresses_max, "more rate buckets than rate_addresses_max");
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

    /// Takes one announce from `from`'s bucket; false if it is empty.
    fn within_rate(&mut self, from: IpAddr) -> bool {
        let (burst, per_s) = (u64::from(self.config.rate_burst) * TOKEN, u64::from(self.config.rate_per_s));
        let now = self.now.at;
        let group = address_group(from);
        if !self.rates.contains_key(&group) && self.rates.len() >= self.config.rate_addresses_max {
            // Forget any one (in constant time, however many addresses
            // an attacker rotates through); the sweep drops full ones.
            self.rates.pop_first();
        }
        let b = self.rates.entry(group).or_insert(Bucket { micros: burst, at: now });
        b.micros = b.level(now, per_s, burst);
        b.at = now;
        if b.micros < TOKEN {
            return false;
        }
        b.micros -= TOKEN;
        true
    }

    /// True if a new provider `addr` of `ih` may be recorded.
    fn room_for(&self, ih: &InfoHash, addr: SocketAddr) -> bool {
        let o = &self.overlay;
        o.has(ih, addr)
            || (o.providers_of(ih) < self.config.providers_per_torrent_max
                && o.providers_from(addr.ip()) < self.config.providers_per_address_max
                && o.providers() < self.config.providers_max)
    }

    fn announce(&mut self, id: u64, req: AnnounceRequest, from: IpAddr) {
        self.stats.announces += 1;
        if !self.within_rate(from) {
            self.stats.rate_limited += 1;
            return self.answer(id, encode_failure(RATE_LIMITED));
        }
        let now = self.now;
        let ih = req.info_hash;
        let addr = SocketAddr::new(from, req.port);
        let mut recorded = false;
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
                } else if !self.room_for(&ih, addr) {
                    self.stats.not_recorded += 1;
                } else {
                    recorded = true;
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
        let snatch_room = self.overlay.snatched(&ih, addr)
            || (self.overlay.downloaded(&ih) as usize) < self.config.snatches_per_torrent_max;
        // It did complete, even if this arrives after its stop; but only a
        // provider this node would record leaves a record of it.
        let counted = recorded || self.stopped_recently(ih, addr);
        if req.event == AnnounceEvent::Completed && counted && snatch_room {
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
            // A full bucket is as good as none.
            let (burst, per_s) = (u64::from(self.config.rate_burst) * TOKEN, u64::from(self.config.rate_per_s));
            self.rates.retain(|_, b| b.level(now.at, per_s, burst) < burst);
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
