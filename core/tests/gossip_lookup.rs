//! The gossip lookup: a node asks members for the live entries under a key
//! prefix (the overlay's providers of one torrent) and merges the answers.

mod common;

use bytes::Bytes;
use common::gossip::{addr, at_ms, keys, WALL0_MS};
use common::{Link, Net};
use rumor_core::gossip::{open, seal, Body, Command, Config, Event, Gossip, Input, Packet};
use rumor_core::replica::{Change, Namespace};
use rumor_core::time::{Duration, Instant};

fn machine(id: u64) -> Gossip {
    Gossip::new(Config::new(addr(id), keys()), id, at_ms(0), id)
}

fn net() -> Net<Gossip> {
    Net::new(Link::fixed(Duration::from_micros(1)), 1)
}

fn packet(bytes: &[u8]) -> Packet {
    open(&keys(), bytes, 1 << 20).expect("our own messages open")
}

/// A message as node `id` (with the cluster key) would send it: stamped
/// with the wall clock of the tests' first seconds and a number of its own,
/// so the receiver's replay check lets it in.
fn packet_from(id: u64, body: Body) -> Vec<u8> {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let p = Packet {
        from: id,
        addr: addr(id),
        incarnation: 1,
        sent_ms: WALL0_MS,
        seq,
        complete: true,
        updates: Vec::new(),
        body,
    };
    seal(&keys(), [id as u8; 24], &p, 1 << 20)
}

fn provider(key: &'static [u8], expires_ms: u64) -> Input {
    Input::Command(Command::Write {
        ns: Namespace::PROVIDERS,
        key: Bytes::from_static(key),
        value: Bytes::from_static(b"v"),
        expires_ms,
    })
}

fn lookup(id: u32, prefix: &'static [u8]) -> Input {
    Input::Command(Command::Lookup { id, ns: Namespace::PROVIDERS, prefix: Bytes::from_static(prefix) })
}

/// The events of node `i` so far.
fn events_of(net: &Net<Gossip>, i: usize) -> Vec<Event> {
    net.events().iter().filter(|(_, j, _)| *j == i).map(|(_, _, e)| e.clone()).collect()
}

/// Asker `n1` (node 0) and holder `n2` (node 1), members of each other.
fn asker_and_holder() -> Net<Gossip> {
    let mut net = net();
    net.add(addr(1), machine(1));
    net.add(addr(2), machine(2));
    net.now = Instant::from_micros(1_000);
    net.input(0, Input::Command(Command::Join(vec![addr(2)])));
    net.drive();
    net
}

#[test]
fn a_lookup_is_answered_with_the_live_entries_under_the_prefix_only() {
    let mut net = net();
    let holder = net.add(addr(2), machine(2));
    net.now = Instant::from_micros(1_000);
    for key in [&b"torrentA-p1"[..], b"torrentA-p2", b"torrentB-p1"] {
        net.input(holder, provider(key, WALL0_MS + 60_000));
    }
    net.now = Instant::from_micros(2_000);
    let ask = Body::Lookup { id: 7, ns: Namespace::PROVIDERS, prefix: Bytes::from_static(b"torrentA") };
    net.input(holder, Input::Receive { from: addr(1), bytes: packet_from(1, ask) });
    let found: Vec<_> = net
        .in_flight()
        .into_iter()
        .filter_map(|f| match packet(&f.bytes).body {
            Body::Found { id: 7, entries } if f.to == addr(1) => Some(entries),
            _ => None,
        })
        .collect();
    assert_eq!(found.len(), 1, "one answer to the asker: {:?}", net.in_flight());
    let keys: Vec<&[u8]> = found[0].iter().map(|e| e.key.as_ref()).collect();
    assert_eq!(keys, vec![&b"torrentA-p1"[..], b"torrentA-p2"]);
}

#[test]
fn a_lookup_merges_the_answers_and_reports_when_done() {
    let mut net = asker_and_holder();
    let (asker, holder) = (0, 1);
    net.now = Instant::from_micros(2_000);
    net.input(holder, provider(b"torrentA-p1", WALL0_MS + 60_000));
    // The holder's push is lost: only the lookup can bring the entry.
    net.lose_in_flight();
    net.take_events();
    net.now = Instant::from_micros(3_000);
    net.input(asker, lookup(42, b"torrentA"));
    assert!(events_of(&net, asker).is_empty(), "waiting for the answer");
    let asks = net.in_flight().into_iter().filter(|f| matches!(packet(&f.bytes).body, Body::Lookup { id: 42, .. }));
    assert_eq!(asks.count(), 1, "the only live member is asked");
    // The holder answers; the asker merges and reports.
    net.drive();
    let events = events_of(&net, asker);
    assert!(events.iter().any(|e| matches!(e, Event::Store(Change::Applied(e)) if e.key.as_ref() == b"torrentA-p1")));
    assert!(events.contains(&Event::LookupDone { id: 42, found: 1 }), "{events:?}");
    let wall = WALL0_MS + net.now.as_micros() / 1000;
    assert!(net.machine(asker).store().get(Namespace::PROVIDERS, b"torrentA-p1", wall).is_some());
}

#[test]
fn answers_nobody_asked_for_are_not_taken_and_unanswered_lookups_time_out() {
    let mut net = asker_and_holder();
    let (asker, holder) = (0, 1);
    net.now = Instant::from_micros(2_000);
    net.input(holder, provider(b"planted", 0));
    net.lose_in_flight();
    // An unsolicited answer.
    let e = net.machine(holder).store().entries().next().cloned().expect("the holder has the entry");
    let bogus = packet_from(2, Body::Found { id: 99, entries: vec![e] });
    net.now = Instant::from_micros(3_000);
    net.input(asker, Input::Receive { from: addr(2), bytes: bogus });
    assert!(net.machine(asker).store().get(Namespace::PROVIDERS, b"planted", WALL0_MS + 3).is_none());
    // Nobody answers (the question is lost): the lookup ends at its timeout
    // with nothing found.
    net.take_events();
    net.now = Instant::from_micros(4_000);
    net.input(asker, lookup(5, b"x"));
    net.lose_in_flight();
    net.run_for(Duration::from_millis(2_000));
    let events = events_of(&net, asker);
    assert!(events.contains(&Event::LookupDone { id: 5, found: 0 }), "{events:?}");
    // With no live member the lookup ends at once.
    let mut alone = self::net();
    let i = alone.add(addr(3), machine(3));
    alone.input(i, lookup(1, b""));
    assert!(events_of(&alone, i).contains(&Event::LookupDone { id: 1, found: 0 }));
}
