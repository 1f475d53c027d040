//! An idle node wakes once a summary, not once a round (issue 16): the
//! deadline it gives skips the rounds that would send nothing, and those
//! are counted down when time next reaches it, so its summaries, pushes
//! and expiries happen on exactly the rounds they did when it woke for
//! every one.

mod common;

use bytes::Bytes;
use common::gossip::{addr, at_ms, keys, WALL0_MS};
use rumor_core::gossip::{open, seal, Body, Command, Config, Event, Gossip, Input, Output, Packet, Pushed};
use rumor_core::replica::{Change, Entry, Namespace, NodeId, Version};
use rumor_core::time::{Duration, Instant};

const A: NodeId = 1;
const B: NodeId = 2;
const ROUND_MS: u64 = 200;
const SYNC_EVERY: u32 = 5;

/// Tombstones are collected this long after their delete or expiry.
const GRACE_MS: u64 = 2_000;

/// A node whose only timer is the round: probes and re-announces are an
/// hour apart.
fn machine() -> Gossip {
    let mut c = Config::new(addr(A), keys());
    c.gossip_interval = Duration::from_millis(ROUND_MS);
    c.sync_every_rounds = SYNC_EVERY;
    c.probe_interval = Duration::from_secs(3600);
    c.reannounce_interval = Duration::from_secs(3600);
    c.store.tombstone_grace_ms = GRACE_MS;
    Gossip::new(c, A, at_ms(0), 99)
}

/// What one input made the machine do.
#[derive(Default)]
struct Step {
    /// Syn messages sent, and whether each carried the summary.
    syns: Vec<bool>,
    /// Entries turned into tombstones (expired or deleted).
    buried: usize,
    /// Tombstones collected.
    removed: usize,
    deadline_ms: u64,
}

/// Feeds `input` at `ms` and drains the machine.
fn feed(g: &mut Gossip, ms: u64, input: Input) -> Step {
    g.handle(at_ms(ms), input);
    g.check_invariants();
    let mut step = Step::default();
    loop {
        match g.poll_output() {
            Output::Transmit(t) => {
                let p: Packet = open(&keys(), &t.bytes, 1 << 20).expect("our own messages open");
                if let Body::Syn { summary, .. } = p.body {
                    step.syns.push(summary.is_some());
                }
            }
            Output::Event(Event::Store(Change::Applied(e))) if e.deleted => step.buried += 1,
            Output::Event(Event::Store(Change::Removed { .. })) => step.removed += 1,
            Output::Event(_) => {}
            Output::Timeout(t) => {
                // Rounded up: an early timeout does nothing.
                step.deadline_ms = if t == Instant::NEVER { u64::MAX } else { t.as_micros().div_ceil(1000) };
                return step;
            }
        }
    }
}

/// A message from B at `ms`, carrying `push`.
fn from_b(ms: u64, seq: u64, push: Vec<Pushed>) -> Vec<u8> {
    let p = Packet {
        from: B,
        addr: addr(B),
        incarnation: 0,
        sent_ms: WALL0_MS + ms,
        seq,
        complete: true,
        updates: Vec::new(),
        body: Body::Syn { summary: None, push, recent: Vec::new() },
    };
    seal(&keys(), [seq as u8; 24], &p, 256)
}

fn receive(bytes: Vec<u8>) -> Input {
    Input::Receive { from: addr(B), bytes }
}

/// Runs the machine's timer until `end_ms`, with `extra` inputs fed at
/// their times in between; returns (time, syns) of each wake-up that sent
/// something, and the number of wake-ups.
fn run(
    g: &mut Gossip,
    mut deadline_ms: u64,
    end_ms: u64,
    mut extra: Vec<(u64, Input)>,
) -> (Vec<(u64, Vec<bool>)>, usize) {
    let mut sent = Vec::new();
    let mut wakeups = 0;
    extra.reverse();
    while deadline_ms <= end_ms {
        if extra.last().is_some_and(|(ms, _)| *ms < deadline_ms) {
            let (ms, input) = extra.pop().expect("looked");
            deadline_ms = feed(g, ms, input).deadline_ms;
            continue;
        }
        wakeups += 1;
        let step = feed(g, deadline_ms, Input::Timeout);
        if !step.syns.is_empty() {
            sent.push((deadline_ms, step.syns));
        }
        deadline_ms = step.deadline_ms;
    }
    (sent, wakeups)
}

/// A machine that knows B, and its deadline.
fn knowing_b() -> (Gossip, u64) {
    let mut g = machine();
    let deadline = feed(&mut g, 1, receive(from_b(1, 1, Vec::new()))).deadline_ms;
    assert_eq!(g.live_members(), 1, "B is a member");
    (g, deadline)
}

#[test]
fn an_idle_node_wakes_once_a_summary_and_sends_it_every_fifth_round() {
    let (mut g, deadline) = knowing_b();
    let (sent, wakeups) = run(&mut g, deadline, 10_000, Vec::new());
    // Every wake-up sends the summary to B, and nothing else.
    assert!(sent.iter().all(|(_, syns)| syns == &[true]), "{sent:?}");
    assert_eq!(wakeups, sent.len(), "no wake-up without a message");
    let gaps: Vec<u64> = sent.windows(2).map(|w| w[1].0 - w[0].0).collect();
    assert!(gaps.iter().all(|g| *g == ROUND_MS * SYNC_EVERY as u64), "summaries {gaps:?} ms apart");
    assert!(wakeups >= 9, "{wakeups} wake-ups in 10 s");
}

#[test]
fn messages_between_the_skipped_rounds_do_not_move_the_summaries() {
    let (mut quiet, deadline) = knowing_b();
    let (want, _) = run(&mut quiet, deadline, 10_000, Vec::new());
    let (mut g, deadline) = knowing_b();
    // Empty messages from B at odd moments, one of them exactly on a
    // skipped round and one on a summary round.
    let extra = [1_234, 2_000, 3_999, 4_401, 5_600, 7_777]
        .iter()
        .zip(10..)
        .map(|(ms, seq)| (*ms, receive(from_b(*ms, seq, Vec::new()))))
        .collect();
    let (got, _) = run(&mut g, deadline, 10_000, extra);
    assert_eq!(got, want);
}

#[test]
fn a_push_between_summaries_goes_out_on_the_next_round() {
    let (mut g, deadline) = knowing_b();
    let entry = Entry {
        ns: Namespace::DNS,
        key: Bytes::from_static(b"k"),
        value: Bytes::from_static(b"v"),
        writer: B,
        version: Version::new(WALL0_MS + 2_500, 0),
        expires_ms: 0,
        deleted: false,
    };
    let push = vec![Pushed { entry, prev: Version::ZERO }];
    let (sent, _) = run(&mut g, deadline, 5_000, vec![(2_510, receive(from_b(2_510, 20, push)))]);
    // The push goes out on the round after it arrived, not at the next
    // summary; B is the only member, so it goes back to B.
    let after: Vec<&(u64, Vec<bool>)> = sent.iter().filter(|(ms, _)| *ms > 2_510).collect();
    let first = after.first().expect("a round after the push");
    assert!(first.0 <= 2_510 + ROUND_MS, "first round after the push at {} ms: {sent:?}", first.0);
    assert!(after.len() >= 2, "the push takes rounds of its own: {sent:?}");
}

#[test]
fn an_entry_expires_and_its_tombstone_goes_on_the_first_round_after_their_time_even_while_idle() {
    let (mut g, mut deadline) = knowing_b();
    let expires_ms = 3_330;
    let write = Command::Write {
        ns: Namespace::DNS,
        key: Bytes::from_static(b"short"),
        value: Bytes::from_static(b"v"),
        expires_ms: WALL0_MS + expires_ms,
    };
    deadline = deadline.min(feed(&mut g, 10, Input::Command(write)).deadline_ms);
    let (mut buried_at, mut removed_at) = (None, None);
    while deadline <= 10_000 {
        let step = feed(&mut g, deadline, Input::Timeout);
        if step.buried > 0 {
            buried_at.get_or_insert(deadline);
        }
        if step.removed > 0 {
            removed_at.get_or_insert(deadline);
        }
        deadline = step.deadline_ms;
    }
    let buried = buried_at.expect("the entry expired");
    assert!((expires_ms..expires_ms + ROUND_MS + 1).contains(&buried), "expired at {buried} ms");
    let removed = removed_at.expect("its tombstone was collected");
    let due = expires_ms + GRACE_MS;
    assert!((due..due + ROUND_MS + 1).contains(&removed), "collected at {removed} ms");
}
