//! The simulated world: many gossip machines on one virtual clock, wired by
//! a seeded network model (latency, jitter and so reordering, loss,
//! duplication, partitions), with crash and restart from persisted state.
//!
//! Events are ordered by a canonical key that depends only on each node's own
//! history (time, then timers before deliveries, then the node or sender, then
//! that node's own counter), and every node draws its network randomness from
//! its own seeded generator. So the world can run the events of one *window*
//! (all events earlier than the earliest pending one plus the minimum
//! latency, which cannot influence each other across nodes) on several
//! threads and still produce exactly the same run, whatever the thread count.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rumor_core::gossip::{Command, Config, Event, Gossip, Input, Keyring, Now, Output, PeerAddr};
use rumor_core::rand::Rng;
use rumor_core::replica::{Change, Entry, EntryInterner, Namespace, StoreConfig};
use rumor_core::time::{Duration, Instant};

use crate::intern::Interner;
use crate::prefetch::prefetch;
use crate::queue::{Keyed, Queue};

/// The cluster key of every simulated node.
const KEY: [u8; 32] = [0x42; 32];

/// Wall-clock time at virtual time zero (ms since the epoch).
pub const WALL0_MS: u64 = 1_700_000_000_000;

/// By default, windows with fewer events than this run on the calling
/// thread (spawning costs more than they do).
const PARALLEL_MIN_EVENTS: usize = 64;

/// A window's nodes are cut into this many ranges per thread.
const CHUNKS_PER_THREAD: usize = 8;

/// How many events ahead a node's state is prefetched (six ran 1-3 % faster
/// than four in paired runs, eight no faster).
const PREFETCH_AHEAD: usize = 6;

/// The network's behaviour; each node draws from its own seeded PRNG.
#[derive(Clone, Debug)]
pub struct NetModel {
    /// Fixed one-way latency (at least 1 µs is used).
    pub latency_us: u64,
    /// Extra uniform random delay in `0..jitter_us` (reorders messages).
    pub jitter_us: u64,
    /// Probability a message is lost.
    pub loss: f64,
    /// Probability a message is delivered twice.
    pub dup: f64,
}

impl Default for NetModel {
    fn default() -> Self {
        NetModel { latency_us: 2_000, jitter_us: 3_000, loss: 0.0, dup: 0.0 }
    }
}

enum Kind {
    Timer,
    Deliver { from: u32, bytes: Vec<u8> },
}

/// An event: canonical key `(at, class, who, n)` plus the target node. The
/// key is packed into one `u128` (`at` 44 bits, `class` 1, `who` 27, `n`
/// 56), which orders exactly as the tuple while those fit (asserted).
struct Ev {
    key: u128,
    to: u32,
    kind: Kind,
}

/// Nodes a world holds at most (`who` has 27 bits in the packed key).
pub const NODES_MAX: usize = 1 << 27;

impl Ev {
    /// `class`: 0 = timer, 1 = delivery; `who`: the node for a timer, the
    /// sender for a delivery; `n`: the timer's or the sender's own counter.
    fn new(at: u64, class: u8, who: u32, n: u64, to: u32, kind: Kind) -> Ev {
        assert!(at < 1 << 44, "virtual time {at} µs is past the 203 days the event key holds");
        assert!(n < 1 << 56, "a node's event counter {n} overflows the event key");
        debug_assert!((who as usize) < NODES_MAX && class < 2);
        let key = (at as u128) << 84 | (class as u128) << 83 | (who as u128) << 56 | n as u128;
        Ev { key, to, kind }
    }

    fn at(&self) -> u64 {
        (self.key >> 84) as u64
    }
}
impl PartialEq for Ev {
    fn eq(&self, o: &Self) -> bool {
        self.key == o.key
    }
}
impl Eq for Ev {}
impl PartialOrd for Ev {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Ev {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.key.cmp(&o.key)
    }
}
impl Keyed for Ev {
    fn at(&self) -> u64 {
        Ev::at(self)
    }
}

/// The address of node `i`.
pub fn addr(i: usize) -> PeerAddr {
    PeerAddr::from(format!("n{i}"))
}

fn index_of(a: &PeerAddr) -> Option<usize> {
    a.0.strip_prefix('n')?.parse().ok()
}

fn mix(h: u64, x: u64) -> u64 {
    let mut z = (h ^ x).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn hash_bytes(b: &[u8]) -> u64 {
    let mut h = b.len() as u64;
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        h = h.rotate_left(5) ^ u64::from_le_bytes(c.try_into().expect("8 bytes"));
        h = h.wrapping_mul(0x51_7CC1_B727_220A);
    }
    for &x in chunks.remainder() {
        h = (h.rotate_left(5) ^ x as u64).wrapping_mul(0x51_7CC1_B727_220A);
    }
    h
}

/// Everything the world keeps per node; only its own events touch it.
struct Slot {
    g: Option<Gossip>,
    /// The deadline of the pending timer event (NEVER if none).
    scheduled: Instant,
    timer_n: u64,
    send_n: u64,
    rng: Rng,
    trace: u64,
    persisted: BTreeMap<(Namespace, Bytes), Entry>,
    incarnation: u64,
}

/// What one thread produced while running a window.
#[derive(Default)]
struct WindowOut {
    events: Vec<Ev>,
    changes: Vec<(Instant, usize, Change)>,
    touched: Vec<usize>,
    bytes: u64,
    messages: u64,
}

/// A range of nodes and their events in one window, for one thread.
type Job<'a> = (&'a mut [Slot], Vec<Ev>);

/// The read-only context of a window.
struct Ctx<'a> {
    net: &'a NetModel,
    group: &'a [u32],
    n: usize,
    /// Call [`Gossip::check_invariants`] after every input.
    check: bool,
    /// Keep each node's persisted entries (for restarts).
    persist: bool,
    /// Hand store changes to the driver (see [`World::set_record_changes`]).
    record: bool,
    /// Every node's address, made once: a delivery clones one rather than
    /// formatting it.
    addrs: &'a [PeerAddr],
}

impl Ctx<'_> {
    /// Feeds `input` to the node in `slot` at `now` and carries out its
    /// outputs; deliveries and late timers go to `out`, timers before
    /// `w_end` to `local`.
    #[allow(clippy::too_many_arguments)]
    fn feed(
        &self,
        i: usize,
        slot: &mut Slot,
        now: Instant,
        input: Input,
        w_end: u64,
        local: &mut BinaryHeap<Reverse<Ev>>,
        out: &mut WindowOut,
    ) {
        let Some(g) = slot.g.as_mut() else { return };
        out.touched.push(i);
        let clock = Now { at: now, wall_ms: WALL0_MS + now.as_micros() / 1000 };
        g.handle(clock, input);
        if self.check {
            g.check_invariants();
        }
        loop {
            match g.poll_output() {
                Output::Transmit(rumor_core::Transmit { to, bytes }) => {
                    out.bytes += bytes.len() as u64;
                    out.messages += 1;
                    let Some(j) = index_of(&to).filter(|j| *j < self.n) else {
                        continue;
                    };
                    if slot.rng.chance(self.net.loss) {
                        continue;
                    }
                    let copies = if slot.rng.chance(self.net.dup) { 2 } else { 1 };
                    let mut payload = Some(bytes);
                    for c in 0..copies {
                        let jitter = if self.net.jitter_us > 0 { slot.rng.below(self.net.jitter_us) } else { 0 };
                        let at = now.as_micros() + self.net.latency_us.max(1) + jitter;
                        slot.send_n += 1;
                        let bytes = if c + 1 == copies {
                            payload.take().expect("last copy")
                        } else {
                            payload.clone().expect("payload")
                        };
                        out.events.push(Ev::new(
                            at,
                            1,
                            i as u32,
                            slot.send_n,
                            j as u32,
                            Kind::Deliver { from: i as u32, bytes },
                        ));
                    }
                }
                Output::Event(Event::Store(c)) => {
                    match &c {
                        _ if !self.persist => {}
                        Change::Applied(e) => {
                            slot.persisted.insert((e.ns, e.key.clone()), e.clone());
                        }
                        Change::Removed { ns, key } => {
                            slot.persisted.remove(&(*ns, key.clone()));
                        }
                    }
                    if self.record {
                        out.changes.push((now, i, c));
                    }
                }
                Output::Event(_) => {}
                Output::Timeout(t) => {
                    slot.incarnation = g.incarnation();
                    if t != slot.scheduled {
                        slot.scheduled = t;
                        if t != Instant::NEVER {
                            slot.timer_n += 1;
                            let at = t.as_micros().max(now.as_micros());
                            let ev = Ev::new(at, 0, i as u32, slot.timer_n, i as u32, Kind::Timer);
                            if at < w_end {
                                local.push(Reverse(ev));
                            } else {
                                out.events.push(ev);
                            }
                        }
                    }
                    break;
                }
            }
        }
    }

    /// Runs the window's events (in key order) for the nodes
    /// `lo..lo + slots.len()`; timers a node sets within the window join
    /// them in order.
    fn run(&self, lo: usize, slots: &mut [Slot], mut events: Vec<Ev>, w_end: u64) -> WindowOut {
        let mut out = WindowOut::default();
        self.run_into(lo, slots, &mut events, w_end, &mut out);
        out
    }

    /// [`run`](Self::run) with the caller's buffers: `events` is left empty
    /// and `out` gets the outputs, both keeping their capacity. A window's
    /// buffers freed on another thread than the one that allocated them
    /// kept that thread's allocator asking for fresh pages (5 % of a run in
    /// page faults).
    fn run_into(&self, lo: usize, slots: &mut [Slot], events: &mut Vec<Ev>, w_end: u64, out: &mut WindowOut) {
        let mut local: BinaryHeap<Reverse<Ev>> = BinaryHeap::new();
        // The nodes of the next `PREFETCH_AHEAD` events are asked into the
        // cache while this one runs (see `prefetch.rs`).
        for ev in events.iter().take(PREFETCH_AHEAD) {
            prefetch(&slots[ev.to as usize - lo]);
        }
        let mut events = events.drain(..);
        loop {
            let from_local = match (events.as_slice().first(), local.peek()) {
                (Some(e), Some(Reverse(l))) => l.key < e.key,
                (None, Some(_)) => true,
                (Some(_), None) => false,
                (None, None) => break,
            };
            let ev = if from_local {
                local.pop().expect("peeked").0
            } else {
                if let Some(ahead) = events.as_slice().get(PREFETCH_AHEAD) {
                    prefetch(&slots[ahead.to as usize - lo]);
                    if let Kind::Deliver { from, .. } = ahead.kind {
                        prefetch(&self.addrs[from as usize]);
                    }
                }
                events.next().expect("peeked")
            };
            let i = ev.to as usize;
            let slot = &mut slots[i - lo];
            let at = ev.at();
            let now = Instant::from_micros(at);
            match ev.kind {
                Kind::Timer => {
                    if slot.scheduled.as_micros() == at && slot.g.is_some() {
                        slot.scheduled = Instant::NEVER;
                        slot.trace = mix(slot.trace, at);
                        self.feed(i, slot, now, Input::Timeout, w_end, &mut local, out);
                    }
                }
                Kind::Deliver { from, bytes } => {
                    let f = from as usize;
                    if slot.g.is_some() && self.group[f] == self.group[i] {
                        slot.trace = mix(slot.trace, at ^ hash_bytes(&bytes).rotate_left(17));
                        let input = Input::Receive { from: self.addrs[f].clone(), bytes };
                        self.feed(i, slot, now, input, w_end, &mut local, out);
                    }
                }
            }
        }
    }
}

/// Many nodes, one clock, one network.
pub struct World {
    slots: Vec<Slot>,
    queue: Queue<Ev>,
    /// Current virtual time.
    pub now: Instant,
    rng: Rng,
    /// The network model in force.
    pub net: NetModel,
    /// Partition group of each node: messages between groups are dropped.
    pub group: Vec<u32>,
    world_trace: u64,
    keys: Keyring,
    cfg: Box<dyn Fn(usize, Keyring) -> Config>,
    /// Store changes since the driver last took them: (when, node, change),
    /// in time order.
    pub changes: Vec<(Instant, usize, Change)>,
    /// Nodes that handled an input in the last step or driver input.
    pub touched: Vec<usize>,
    /// Bytes put on the wire.
    pub bytes_sent: u64,
    /// Messages put on the wire.
    pub messages_sent: u64,
    /// Bootstrap list of each node (used at every start).
    pub bootstrap: Vec<Vec<PeerAddr>>,
    threads: usize,
    /// Workers kept for the whole run when `threads` > 1: a window lasts
    /// a few hundred microseconds, and spawning threads for each one cost
    /// more than the second core gave back.
    pool: Option<rayon::ThreadPool>,
    parallel_min_events: usize,
    check_invariants: bool,
    persist: bool,
    record_changes: bool,
    addrs: Vec<PeerAddr>,
    /// One allocation per distinct entry across the nodes' stores (see
    /// `crate::intern`); `None` lets each store allocate its own.
    interner: Option<Arc<Interner>>,
    random_ids: bool,
}

impl World {
    /// `n` nodes (not started: call [`World::start`]), network `net`, every
    /// random choice drawn from `seed`. `cfg` builds each node's config.
    pub fn new(n: usize, seed: u64, net: NetModel, cfg: Box<dyn Fn(usize, Keyring) -> Config>) -> World {
        assert!(n <= NODES_MAX, "{n} nodes, over the {NODES_MAX} a world holds");
        let mut seeder = Rng::new(seed ^ 0x5EED_0F0D_E5E5);
        let slots = (0..n)
            .map(|i| Slot {
                g: None,
                scheduled: Instant::NEVER,
                timer_n: 0,
                send_n: 0,
                rng: Rng::new(seeder.next_u64() ^ i as u64),
                trace: i as u64,
                persisted: BTreeMap::new(),
                incarnation: 0,
            })
            .collect();
        World {
            slots,
            queue: Queue::default(),
            now: Instant::ZERO,
            rng: Rng::new(seed),
            net,
            group: vec![0; n],
            world_trace: seed,
            keys: Keyring::new(1, KEY),
            cfg,
            changes: Vec::new(),
            touched: Vec::new(),
            bytes_sent: 0,
            messages_sent: 0,
            bootstrap: vec![Vec::new(); n],
            threads: 1,
            pool: None,
            parallel_min_events: PARALLEL_MIN_EVENTS,
            check_invariants: false,
            persist: true,
            record_changes: true,
            addrs: (0..n).map(addr).collect(),
            interner: Some(Arc::new(Interner::new())),
            random_ids: false,
        }
    }

    /// With `false`, nodes started from now on skip the cipher (see
    /// [`Keyring::unsealed_for_simulation`]): same envelopes, same sizes,
    /// same protocol decisions, no AEAD. Sealed by default.
    pub fn set_sealed(&mut self, sealed: bool) {
        self.keys = if sealed { Keyring::new(1, KEY) } else { Keyring::unsealed_for_simulation(1, KEY) };
    }

    /// True if nodes seal their messages.
    pub fn sealed(&self) -> bool {
        !self.keys.is_unsealed()
    }

    /// With `false`, nodes keep no copy of their persisted entries: a run
    /// that never crashes a node (`sim gossip`) saves a second copy of
    /// every store. [`World::crash`] then refuses.
    pub fn set_persist(&mut self, on: bool) {
        self.persist = on;
    }

    /// With `false`, store changes are not put in [`World::changes`] (a
    /// warm-up whose changes the driver would throw away: at 10,000 nodes
    /// and 2,000 providers they were 2.3 GB before the warm-up ended).
    pub fn set_record_changes(&mut self, on: bool) {
        self.record_changes = on;
    }

    /// With `true`, nodes started from now on take random-looking 64-bit
    /// ids, as real nodes do (drawn from OS entropy), instead of
    /// `1,000,000 + i`. An id is written as a varint in every digest, so
    /// the small ids make digests smaller than a real cluster's.
    pub fn set_random_ids(&mut self, on: bool) {
        self.random_ids = on;
    }

    /// The node id node `i` runs with.
    pub fn node_id(&self, i: usize) -> u64 {
        if self.random_ids {
            // splitmix64 of the index: distinct, spread over all 64 bits.
            let mut z = (i as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        } else {
            1_000_000 + i as u64
        }
    }

    /// With `false`, nodes started from now on allocate their own copy of
    /// every entry they hold instead of sharing equal ones (same results,
    /// more memory: for checking that sharing changes nothing).
    pub fn set_shared_entries(&mut self, on: bool) {
        self.interner = on.then(|| Arc::new(Interner::new()));
    }

    /// Runs windows on up to `threads` threads (same results for any count).
    pub fn set_threads(&mut self, threads: usize) {
        self.threads = threads.max(1);
        self.pool = (self.threads > 1).then(|| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(self.threads - 1)
                .thread_name(|k| format!("sim-{}", k + 1))
                .build()
                .expect("the simulator's thread pool")
        });
    }

    /// Windows with fewer events run on the calling thread (tests set 1 to
    /// exercise the threads on small worlds).
    pub fn set_parallel_min_events(&mut self, n: usize) {
        self.parallel_min_events = n;
    }

    /// With `on`, every node's [`Gossip::check_invariants`] runs after
    /// each input it handles (a broken invariant panics with its reason).
    /// Off by default: it costs time linear in the node's members.
    pub fn set_check_invariants(&mut self, on: bool) {
        self.check_invariants = on;
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True if the world has no nodes.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Node `i`'s machine, if it is up.
    pub fn node(&self, i: usize) -> Option<&Gossip> {
        self.slots[i].g.as_ref()
    }

    /// Every running machine.
    pub fn machines(&self) -> impl Iterator<Item = &Gossip> + '_ {
        self.slots.iter().filter_map(|s| s.g.as_ref())
    }

    /// Wall-clock milliseconds now (all nodes share the wall clock).
    pub fn wall_ms(&self) -> u64 {
        WALL0_MS + self.now.as_micros() / 1000
    }

    /// Starts (or restarts from its persisted entries) node `i` and joins it
    /// to its bootstrap list.
    pub fn start(&mut self, i: usize) {
        assert!(self.slots[i].g.is_none(), "node {i} is already running");
        let mut cfg = (self.cfg)(i, self.keys.clone());
        if let Some(interner) = &self.interner {
            cfg.store.interner.get_or_insert_with(|| interner.clone() as Arc<dyn EntryInterner>);
        }
        let seed = self.rng.next_u64();
        let now = Now { at: self.now, wall_ms: self.wall_ms() };
        let mut g = Gossip::new(cfg, self.node_id(i), now, seed);
        let slot = &mut self.slots[i];
        if !slot.persisted.is_empty() || slot.incarnation > 0 || slot.timer_n > 0 {
            let saved: Vec<Entry> = slot.persisted.values().cloned().collect();
            g.restore(saved, slot.incarnation);
        }
        slot.g = Some(g);
        slot.scheduled = Instant::NEVER;
        let boot = self.bootstrap[i].clone();
        self.input(i, Input::Command(Command::Join(boot)));
    }

    /// Crashes node `i`: its memory is gone, its persisted entries stay.
    pub fn crash(&mut self, i: usize) {
        assert!(self.persist, "a crash in a world that keeps no persisted entries");
        self.slots[i].g = None;
        self.slots[i].scheduled = Instant::NEVER;
        self.world_trace = mix(self.world_trace, 0xC0DE ^ i as u64);
    }

    /// True if node `i` is running.
    pub fn is_up(&self, i: usize) -> bool {
        self.slots[i].g.is_some()
    }

    /// Feeds `input` to node `i` (if up) now and carries out its outputs.
    pub fn input(&mut self, i: usize, input: Input) {
        let ctx = Ctx {
            net: &self.net,
            group: &self.group,
            n: self.slots.len(),
            check: self.check_invariants,
            persist: self.persist,
            record: self.record_changes,
            addrs: &self.addrs,
        };
        let mut out = WindowOut::default();
        let mut local = BinaryHeap::new();
        // Nothing is due before now: every timer goes to the heap.
        ctx.feed(i, &mut self.slots[i], self.now, input, 0, &mut local, &mut out);
        debug_assert!(local.is_empty());
        self.touched.clear();
        self.absorb(out);
    }

    fn absorb(&mut self, out: WindowOut) {
        self.bytes_sent += out.bytes;
        self.messages_sent += out.messages;
        for ev in out.events {
            self.queue.push(ev);
        }
        self.changes.extend(out.changes);
        self.touched.extend(out.touched);
    }

    /// Runs one window of events due at or before `until`: every event
    /// earlier than the first pending one plus the minimum latency (they
    /// cannot affect each other across nodes). Returns false, moving the
    /// clock to `until`, if nothing is due.
    pub fn step(&mut self, until: Instant) -> bool {
        self.touched.clear();
        let Some((events, w_end, last_at)) = take_window(&mut self.queue, self.net.latency_us, until) else {
            self.now = self.now.max(until);
            return false;
        };
        let n = self.slots.len();
        let ctx = Ctx {
            net: &self.net,
            group: &self.group,
            n,
            check: self.check_invariants,
            persist: self.persist,
            record: self.record_changes,
            addrs: &self.addrs,
        };
        let threads = if events.len() >= self.parallel_min_events { self.threads.min(n).max(1) } else { 1 };
        let mut outs = Vec::with_capacity(threads);
        if threads == 1 {
            outs.push(ctx.run(0, &mut self.slots, events, w_end));
        } else {
            // More chunks than threads, taken in turn by whichever thread is
            // free: a worker woken for the window starts tens of
            // microseconds after the caller, which then takes its share.
            let chunks = threads * CHUNKS_PER_THREAD;
            let chunk = n.div_ceil(chunks);
            let mut buckets: Vec<Vec<Ev>> = (0..n.div_ceil(chunk)).map(|_| Vec::new()).collect();
            for ev in events {
                buckets[ev.to as usize / chunk].push(ev);
            }
            let jobs: Vec<Mutex<Option<Job>>> =
                self.slots.chunks_mut(chunk).zip(buckets).map(|job| Mutex::new(Some(job))).collect();
            let done: Vec<Mutex<Option<WindowOut>>> = jobs.iter().map(|_| Default::default()).collect();
            let next = AtomicUsize::new(0);
            let work = || loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let Some(job) = jobs.get(k) else { break };
                let (slots, bucket) = job.lock().expect("a job lock").take().expect("each job is taken once");
                let out = ctx.run(k * chunk, slots, bucket, w_end);
                *done[k].lock().expect("an output lock") = Some(out);
            };
            let pool = self.pool.as_ref().expect("a pool when threads > 1");
            pool.in_place_scope(|s| {
                for _ in 1..threads {
                    s.spawn(|_| work());
                }
                work();
            });
            outs.extend(done.into_iter().map(|o| o.into_inner().expect("an output lock").expect("every job ran")));
        }
        let fresh = self.changes.len();
        for out in outs {
            self.absorb(out);
        }
        // Changes of different threads interleave by time, then node (a
        // stable sort keeps each node's own order).
        self.changes[fresh..].sort_by_key(|(t, i, _)| (*t, *i));
        self.now = self.now.max(Instant::from_micros(last_at));
        true
    }

    /// Runs every event up to `until`. With more than one thread the
    /// workers live for the whole call and wait for each window spinning
    /// (see [`SpinCrew`]), so the driver should run whole stretches here
    /// rather than [`step`](Self::step) by step when it can.
    ///
    /// One thread takes the same path with no workers: its buffers are
    /// reused from window to window as they are with more threads, so a
    /// one-thread profile shows the work the threads share.
    pub fn run_until(&mut self, until: Instant) {
        let World {
            slots,
            queue,
            now,
            net,
            group,
            changes,
            touched,
            bytes_sent,
            messages_sent,
            threads,
            parallel_min_events,
            check_invariants,
            persist,
            record_changes,
            addrs,
            ..
        } = self;
        let n = slots.len();
        let ctx = Ctx { net, group, n, check: *check_invariants, persist: *persist, record: *record_changes, addrs };
        let chunks = *threads * CHUNKS_PER_THREAD;
        let chunk = n.div_ceil(chunks).max(1);
        let mut crew = SpinCrew::new(slots.chunks_mut(chunk).collect(), *threads - 1);
        crew.queues[0] = Mutex::new(std::mem::take(queue));
        let mut parts: Vec<Vec<Ev>> = (0..crew.chunks.len()).map(|_| Vec::new()).collect();
        std::thread::scope(|scope| {
            let workers: Vec<_> = (1..*threads)
                .map(|k| {
                    let (crew, ctx) = (&crew, &ctx);
                    std::thread::Builder::new()
                        .name(format!("sim-{k}"))
                        .spawn_scoped(scope, move || crew.work(ctx, chunk, k))
                        .expect("a simulator thread")
                        .thread()
                        .clone()
                })
                .collect();
            // Stop the workers however this ends, a panic included.
            let _stop = StopOnDrop { crew: &crew, workers: &workers };
            loop {
                touched.clear();
                // Each range sorts its own events, on its own thread.
                let Some((mut events, w_end, last_at)) = crew.take_window(net.latency_us, until) else {
                    *now = (*now).max(until);
                    break;
                };
                let parallel = events.len() >= *parallel_min_events;
                for ev in events.drain(..) {
                    parts[ev.to as usize / chunk].push(ev);
                }
                for (part, bucket) in parts.iter_mut().zip(&crew.buckets) {
                    std::mem::swap(part, &mut *bucket.lock().expect("a bucket lock"));
                }
                crew.run_window(&ctx, chunk, w_end, parallel, &workers);
                let fresh = changes.len();
                for out in &crew.done {
                    let mut out = out.lock().expect("an output lock");
                    *bytes_sent += std::mem::take(&mut out.bytes);
                    *messages_sent += std::mem::take(&mut out.messages);
                    changes.append(&mut out.changes);
                    touched.append(&mut out.touched);
                }
                changes[fresh..].sort_by_key(|(t, i, _)| (*t, *i));
                *now = (*now).max(Instant::from_micros(last_at));
            }
        });
        // Every pending event back into the world's queue.
        let mut queues = crew.queues.into_iter().map(|q| q.into_inner().expect("a queue lock"));
        *queue = queues.next().expect("the calling thread's queue");
        let mut rest = Vec::new();
        for mut q in queues {
            q.take_before_unsorted(u64::MAX, &mut rest);
        }
        for ev in rest {
            queue.push(ev);
        }
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    /// The trace hash so far: a function of everything delivered and when.
    pub fn trace_hash(&self) -> u64 {
        self.slots.iter().fold(self.world_trace, |h, s| mix(h, s.trace))
    }

    /// Draws from the world's PRNG (for the drivers' own choices).
    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    /// Default store settings for simulated nodes.
    pub fn store_config(grace_ms: u64) -> StoreConfig {
        StoreConfig { tombstone_grace_ms: grace_ms, ..StoreConfig::default() }
    }
}

/// Takes the next window of events due at or before `until`: every event
/// earlier than the first pending one plus the minimum latency (they cannot
/// affect each other across nodes). Returns the events in key order, the
/// window's end and the time of its last event, or `None` if nothing is due.
fn take_window(queue: &mut Queue<Ev>, latency_us: u64, until: Instant) -> Option<(Vec<Ev>, u64, u64)> {
    let first = queue.first_at().filter(|at| *at <= until.as_micros())?;
    let w_end = (first + latency_us.max(1)).min(until.as_micros() + 1);
    let mut events = Vec::new();
    queue.take_before(w_end, &mut events);
    let last_at = events.iter().map(Ev::at).max().unwrap_or(first);
    Some((events, w_end, last_at))
}

/// How many times a waiting worker checks for the next window before it
/// parks (a few hundred microseconds: longer than the calling thread's
/// work between two windows, shorter than anything a driver does).
const SPIN_CHECKS: u32 = 20_000;

/// Threads that stay for a whole [`World::run_until`] and take the node
/// ranges of each window in turn with the calling thread.
///
/// A window is a few hundred microseconds of work at 10,000 nodes and there
/// are 35,000 of them in a 70 s run. Woken through the kernel for each one
/// (a thread pool's sleep), the second thread cost 3 to 5 s of CPU in wake
/// ups and started late; here it spins on the window counter between
/// windows, and parks only when the calling thread is away longer.
///
/// Each range of nodes sits behind its own lock for the whole call, so the
/// ranges are lent once and taken per window by whoever claims them.
struct SpinCrew<'s> {
    chunks: Vec<Mutex<&'s mut [Slot]>>,
    buckets: Vec<Mutex<Vec<Ev>>>,
    /// Each range's outputs of the window, drained by the calling thread
    /// (the buffers stay for the next window).
    done: Vec<Mutex<WindowOut>>,
    /// The pending events, one queue per thread (the calling thread's
    /// first): a thread pushes the events its ranges sent into its own, so
    /// the calling thread no longer pushes every window's outputs alone
    /// while the workers wait. The window is taken from all of them.
    queues: Vec<Mutex<Queue<Ev>>>,
    /// The window's number (high 32 bits) and the next range to claim (low
    /// 32): one word, so a worker still in the last window cannot claim a
    /// range of the next one.
    claim: AtomicU64,
    /// Ranges of the current window finished.
    finished: AtomicUsize,
    /// The current window's end (µs), set before its number is published.
    w_end: AtomicU64,
    /// Set when the call ends: workers return.
    stop: AtomicBool,
    /// Per worker: parked (or about to park) and waiting for an unpark.
    sleeping: Vec<AtomicBool>,
    /// A panic in a worker's range, raised again on the calling thread.
    panic: Mutex<Option<Box<dyn std::any::Any + Send>>>,
}

impl<'s> SpinCrew<'s> {
    fn new(chunks: Vec<&'s mut [Slot]>, workers: usize) -> Self {
        let len = chunks.len();
        SpinCrew {
            chunks: chunks.into_iter().map(Mutex::new).collect(),
            buckets: (0..len).map(|_| Mutex::new(Vec::new())).collect(),
            done: (0..len).map(|_| Mutex::new(WindowOut::default())).collect(),
            queues: (0..=workers).map(|_| Mutex::new(Queue::default())).collect(),
            claim: AtomicU64::new(0),
            finished: AtomicUsize::new(0),
            w_end: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            sleeping: (0..workers).map(|_| AtomicBool::new(false)).collect(),
            panic: Mutex::new(None),
        }
    }

    /// The next window's events, from every thread's queue, in no set
    /// order (see [`take_window`]).
    fn take_window(&self, latency_us: u64, until: Instant) -> Option<(Vec<Ev>, u64, u64)> {
        let first = self
            .queues
            .iter()
            .filter_map(|q| q.lock().expect("a queue lock").first_at())
            .min()
            .filter(|at| *at <= until.as_micros())?;
        let w_end = (first + latency_us.max(1)).min(until.as_micros() + 1);
        let mut events = Vec::new();
        for q in &self.queues {
            q.lock().expect("a queue lock").take_before_unsorted(w_end, &mut events);
        }
        let last_at = events.iter().map(Ev::at).max().unwrap_or(first);
        Some((events, w_end, last_at))
    }

    /// Claims and runs ranges of window `window` until none is left; the
    /// events they send go into queue `queue`, this thread's.
    fn take_ranges(&self, ctx: &Ctx, chunk: usize, window: u64, queue: usize) {
        loop {
            let v = self.claim.load(Ordering::Acquire);
            let k = (v & 0xFFFF_FFFF) as usize;
            if v >> 32 != window || k >= self.chunks.len() {
                return;
            }
            if self.claim.compare_exchange(v, v + 1, Ordering::AcqRel, Ordering::Acquire).is_err() {
                continue;
            }
            let w_end = self.w_end.load(Ordering::Acquire);
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let mut slots = self.chunks[k].lock().expect("a range lock");
                let mut bucket = self.buckets[k].lock().expect("a bucket lock");
                let mut out = self.done[k].lock().expect("an output lock");
                bucket.sort_unstable();
                ctx.run_into(k * chunk, &mut slots, &mut bucket, w_end, &mut out);
                let mut q = self.queues[queue].lock().expect("a queue lock");
                for ev in out.events.drain(..) {
                    q.push(ev);
                }
            }));
            if let Err(p) = run {
                *self.panic.lock().expect("the panic lock") = Some(p);
            }
            self.finished.fetch_add(1, Ordering::Release);
        }
    }

    /// A worker's life (thread `me`, from 1): wait for a window, take
    /// ranges, again.
    fn work(&self, ctx: &Ctx, chunk: usize, me: usize) {
        let sleeping = &self.sleeping[me - 1];
        let mut window = 0;
        loop {
            let mut checks = 0u32;
            loop {
                if self.stop.load(Ordering::SeqCst) {
                    return;
                }
                if self.claim.load(Ordering::Acquire) >> 32 != window {
                    break;
                }
                checks += 1;
                if checks < SPIN_CHECKS {
                    std::hint::spin_loop();
                    continue;
                }
                // Announce the sleep, then look once more: the caller
                // publishes a window and then reads this flag, so either it
                // sees the flag and unparks, or this sees the window.
                sleeping.store(true, Ordering::SeqCst);
                if self.claim.load(Ordering::SeqCst) >> 32 == window && !self.stop.load(Ordering::SeqCst) {
                    std::thread::park();
                }
                sleeping.store(false, Ordering::SeqCst);
                checks = 0;
            }
            window = self.claim.load(Ordering::Acquire) >> 32;
            self.take_ranges(ctx, chunk, window, me);
        }
    }

    /// Runs one window whose events are in the buckets: on this thread
    /// alone if it is small, else with the workers. Each range's outputs
    /// are then in `done`, in range order.
    fn run_window(&self, ctx: &Ctx, chunk: usize, w_end: u64, parallel: bool, workers: &[std::thread::Thread]) {
        self.finished.store(0, Ordering::Relaxed);
        self.w_end.store(w_end, Ordering::Relaxed);
        let window = (self.claim.load(Ordering::Relaxed) >> 32) + 1;
        // Publishes the buckets and the window's end with it. A spinning
        // worker joins in whatever the window's size; a parked one is woken
        // only for a window worth it.
        self.claim.store(window << 32, Ordering::SeqCst);
        if parallel {
            for (k, t) in workers.iter().enumerate() {
                if self.sleeping[k].swap(false, Ordering::SeqCst) {
                    t.unpark();
                }
            }
        }
        self.take_ranges(ctx, chunk, window, 0);
        while self.finished.load(Ordering::Acquire) < self.chunks.len() {
            std::hint::spin_loop();
        }
        if let Some(p) = self.panic.lock().expect("the panic lock").take() {
            std::panic::resume_unwind(p);
        }
    }
}

/// Tells the crew's workers to return when the run ends, even by a panic.
struct StopOnDrop<'a, 's> {
    crew: &'a SpinCrew<'s>,
    workers: &'a [std::thread::Thread],
}

impl Drop for StopOnDrop<'_, '_> {
    fn drop(&mut self) {
        self.crew.stop.store(true, Ordering::SeqCst);
        for t in self.workers {
            t.unpark();
        }
    }
}
