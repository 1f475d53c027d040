//! When the anti-entropy summary travels: pushes alone never start a digest
//! exchange (under a steady write load every summary differs while pushes
//! are in flight, so comparing them on every push made each push cost a
//! digest exchange); anti-entropy rounds and probes carry it and repair
//! what a lost push missed.

mod common;

use bytes::Bytes;
use common::gossip::{addr, at_ms, keys, WALL0_MS};
use common::{Link, Net};
use rumor_core::gossip::{open, Body, Command, Config, Gossip, Input, Packet};
use rumor_core::replica::Namespace;
use rumor_core::time::{Duration, Instant};

/// Node 0 is `n1`, node 1 is `n2`.
const A: usize = 0;
const B: usize = 1;

fn machine(id: u64, probe_interval: Duration) -> Gossip {
    let mut c = Config::new(addr(id), keys());
    c.probe_interval = probe_interval;
    Gossip::new(c, id, at_ms(0), id)
}

fn packet(bytes: &[u8]) -> Packet {
    open(&keys(), bytes, 1 << 20).expect("our own messages open")
}

fn write(net: &mut Net<Gossip>, i: usize, key: &'static [u8]) {
    let w = Command::Write {
        ns: Namespace::DNS,
        key: Bytes::from_static(key),
        value: Bytes::from_static(b"v"),
        expires_ms: 0,
    };
    net.input(i, Input::Command(w));
}

/// Two members that know each other and hold the same (empty) store, on a
/// near-instant lossless link, probing each other every `probe_interval`.
fn pair(probe_interval: Duration) -> Net<Gossip> {
    let mut net = Net::new(Link::fixed(Duration::from_micros(1)), 1);
    net.add(addr(1), machine(1, probe_interval));
    net.add(addr(2), machine(2, probe_interval));
    net.now = Instant::from_micros(1_000);
    net.input(A, Input::Command(Command::Join(vec![addr(2)])));
    net.drive();
    net
}

fn has(net: &Net<Gossip>, i: usize, key: &[u8]) -> bool {
    let wall = WALL0_MS + net.now.as_micros() / 1000;
    net.machine(i).store().get(Namespace::DNS, key, wall).is_some()
}

#[test]
fn a_push_carries_no_summary_and_starts_no_digest_exchange() {
    let mut net = pair(Duration::from_secs(1));
    // B is behind on something A wrote earlier (its push was lost)...
    net.now = Instant::from_micros(2_000);
    write(&mut net, A, b"lost");
    net.lose_in_flight();
    // ...and A's next write is pushed: B takes it without comparing
    // summaries, so no digest exchange starts.
    net.now = Instant::from_micros(3_000);
    write(&mut net, A, b"pushed");
    let pushes = net.in_flight();
    assert!(!pushes.is_empty());
    for f in pushes {
        match packet(&f.bytes).body {
            Body::Syn { summary, push, .. } => {
                assert!(summary.is_none(), "a push carries no summary");
                assert_eq!(push.len(), 1);
            }
            other => panic!("only pushes: {other:?}"),
        }
    }
    net.record_sends(true);
    net.drive();
    let replies: Vec<Body> =
        net.take_sent().into_iter().filter(|s| s.from == B).map(|s| packet(&s.bytes).body).collect();
    let digests = replies.iter().filter(|b| matches!(b, Body::Digest { .. } | Body::Delta { .. })).count();
    assert_eq!(digests, 0, "no digest exchange: {replies:?}");
    assert!(has(&net, B, b"pushed"));
    assert!(!has(&net, B, b"lost"));
}

#[test]
fn an_anti_entropy_round_repairs_a_lost_push() {
    // Probes carry the summary too; far apart here, so the repair must come
    // from a round's summary.
    let mut net = pair(Duration::from_secs(3600));
    net.now = Instant::from_micros(2_000);
    write(&mut net, A, b"lost");
    net.lose_in_flight();
    // The rounds go on (every message goes through); within a few
    // anti-entropy rounds the summaries are compared and B catches up.
    net.record_sends(true);
    while net.now < Instant::from_micros(5_000_000) && !has(&net, B, b"lost") {
        net.run_for(Duration::from_millis(50));
    }
    assert!(has(&net, B, b"lost"), "repaired by anti-entropy by {:?}", net.now);
    let summaries =
        net.take_sent().iter().filter(|s| matches!(packet(&s.bytes).body, Body::Syn { summary: Some(_), .. })).count();
    // Either side's round may be first to compare: the summary travels both
    // ways.
    assert!(summaries >= 1, "the repair came from a round's summary");
}
