//! When the anti-entropy summary travels: pushes alone never start a digest
//! exchange (under a steady write load every summary differs while pushes
//! are in flight, so comparing them on every push made each push cost a
//! digest exchange); anti-entropy rounds and probes carry it and repair
//! what a lost push missed.

use bytes::Bytes;
use rumor_core::gossip::{open, seal, Body, Command, Config, Gossip, Input, Keyring, Now, Output, Packet, PeerAddr};
use rumor_core::replica::Namespace;
use rumor_core::time::Instant;
use rumor_core::Transmit;

const WALL: u64 = 1_700_000_000_000;

fn keys() -> Keyring {
    Keyring::new(1, [9; 32])
}

fn now(ms: u64) -> Now {
    Now { at: Instant::from_micros(ms * 1000), wall_ms: WALL + ms }
}

fn machine(id: u64) -> Gossip {
    Gossip::new(Config::new(PeerAddr(format!("n{id}")), keys()), id, now(0), id)
}

fn drain(g: &mut Gossip) -> Vec<(PeerAddr, Packet)> {
    let mut sent = Vec::new();
    loop {
        match g.poll_output() {
            Output::Transmit(Transmit { to, bytes }) => sent.push((to, open(&keys(), &bytes, 1 << 20).unwrap())),
            Output::Event(_) => {}
            Output::Timeout(_) => return sent,
        }
    }
}

/// Delivers `sent` (from `from`) to `to`, returning what `to` sends back.
fn deliver(to: &mut Gossip, from: &str, sent: &[(PeerAddr, Packet)], at: u64) -> Vec<(PeerAddr, Packet)> {
    for (_, p) in sent {
        let bytes = seal(&keys(), [7; 24], p, 1 << 20);
        to.handle(now(at), Input::Receive { from: PeerAddr(from.into()), bytes });
    }
    drain(to)
}

fn write(g: &mut Gossip, key: &'static [u8], at: u64) {
    let w = Command::Write {
        ns: Namespace::DNS,
        key: Bytes::from_static(key),
        value: Bytes::from_static(b"v"),
        expires_ms: 0,
    };
    g.handle(now(at), Input::Command(w));
}

/// Two members that know each other and hold the same (empty) store.
fn pair() -> (Gossip, Gossip) {
    let (mut a, mut b) = (machine(1), machine(2));
    a.handle(now(1), Input::Command(Command::Join(vec![PeerAddr("n2".into())])));
    let to_b = drain(&mut a);
    let to_a = deliver(&mut b, "n1", &to_b, 1);
    deliver(&mut a, "n2", &to_a, 1);
    (a, b)
}

fn digests(sent: &[(PeerAddr, Packet)]) -> usize {
    sent.iter().filter(|(_, p)| matches!(p.body, Body::Digest { .. } | Body::Delta { .. })).count()
}

#[test]
fn a_push_carries_no_summary_and_starts_no_digest_exchange() {
    let (mut a, mut b) = pair();
    // B is behind on something A wrote earlier (its push was lost)...
    write(&mut a, b"lost", 2);
    drain(&mut a);
    // ...and A's next write is pushed: B takes it without comparing
    // summaries, so no digest exchange starts.
    write(&mut a, b"pushed", 3);
    let pushes = drain(&mut a);
    assert!(!pushes.is_empty());
    for (_, p) in &pushes {
        match &p.body {
            Body::Syn { summary, push } => {
                assert!(summary.is_none(), "a push carries no summary");
                assert_eq!(push.len(), 1);
            }
            other => panic!("only pushes: {other:?}"),
        }
    }
    let replies = deliver(&mut b, "n1", &pushes, 3);
    assert_eq!(digests(&replies), 0, "no digest exchange: {replies:?}");
    assert!(b.store().get(Namespace::DNS, b"pushed", WALL + 3).is_some());
    assert!(b.store().get(Namespace::DNS, b"lost", WALL + 3).is_none());
}

#[test]
fn an_anti_entropy_round_repairs_a_lost_push() {
    let (mut a, mut b) = pair();
    write(&mut a, b"lost", 2);
    drain(&mut a); // the push is lost
                   // A's rounds go on (every message to B goes through); within a few
                   // anti-entropy rounds the summaries are compared and B catches up.
    let mut at = 2;
    let mut summaries = 0;
    while at < 5_000 && b.store().get(Namespace::DNS, b"lost", WALL + at).is_none() {
        at += 50;
        a.handle(now(at), Input::Timeout);
        b.handle(now(at), Input::Timeout);
        let from_a = drain(&mut a);
        summaries += from_a.iter().filter(|(_, p)| matches!(&p.body, Body::Syn { summary: Some(_), .. })).count();
        let from_b = deliver(&mut b, "n1", &from_a, at);
        let back = deliver(&mut a, "n2", &from_b, at);
        deliver(&mut b, "n1", &back, at);
    }
    assert!(b.store().get(Namespace::DNS, b"lost", WALL + at).is_some(), "repaired by anti-entropy by {at} ms");
    assert!(summaries >= 1, "the repair came from a summary");
}
