//! The gossip lookup: a node asks members for the live entries under a key
//! prefix (the overlay's providers of one torrent) and merges the answers.

use bytes::Bytes;
use rumor_core::gossip::{
    open, seal, Body, Command, Config, Event, Gossip, Input, Keyring, Now, Output, Packet, PeerAddr,
};
use rumor_core::replica::{Change, Namespace};
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

fn drain(g: &mut Gossip) -> (Vec<(PeerAddr, Packet)>, Vec<Event>) {
    let (mut sent, mut events) = (Vec::new(), Vec::new());
    loop {
        match g.poll_output() {
            Output::Transmit(Transmit { to, bytes }) => sent.push((to, open(&keys(), &bytes, 1 << 20).unwrap())),
            Output::Event(e) => events.push(e),
            Output::Timeout(_) => return (sent, events),
        }
    }
}

fn packet_from(id: u64, body: Body) -> Vec<u8> {
    let p = Packet {
        from: id,
        addr: PeerAddr(format!("n{id}")),
        incarnation: 1,
        complete: true,
        updates: Vec::new(),
        body,
    };
    seal(&keys(), [id as u8; 24], &p, 1 << 20)
}

/// Makes `a` know `b` as a live member by a join exchange.
fn introduce(a: &mut Gossip, b: &mut Gossip, at: u64) {
    a.handle(now(at), Input::Command(Command::Join(vec![PeerAddr("n2".into())])));
    let (sent, _) = drain(a);
    for (_, p) in sent {
        let bytes = seal(&keys(), [3; 24], &p, 1 << 20);
        b.handle(now(at), Input::Receive { from: PeerAddr("n1".into()), bytes });
    }
    let (sent, _) = drain(b);
    for (_, p) in sent {
        let bytes = seal(&keys(), [4; 24], &p, 1 << 20);
        a.handle(now(at), Input::Receive { from: PeerAddr("n2".into()), bytes });
    }
    drain(a);
}

#[test]
fn a_lookup_is_answered_with_the_live_entries_under_the_prefix_only() {
    let mut holder = machine(2);
    for key in [&b"torrentA-p1"[..], b"torrentA-p2", b"torrentB-p1"] {
        let write = Command::Write {
            ns: Namespace::PROVIDERS,
            key: Bytes::copy_from_slice(key),
            value: Bytes::from_static(b"v"),
            expires_ms: WALL + 60_000,
        };
        holder.handle(now(1), Input::Command(write));
    }
    drain(&mut holder);
    let ask = Body::Lookup { id: 7, ns: Namespace::PROVIDERS, prefix: Bytes::from_static(b"torrentA") };
    holder.handle(now(2), Input::Receive { from: PeerAddr("n1".into()), bytes: packet_from(1, ask) });
    let (sent, _) = drain(&mut holder);
    let found: Vec<_> = sent
        .iter()
        .filter_map(|(to, p)| match &p.body {
            Body::Found { id: 7, entries } if to.0 == "n1" => Some(entries.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(found.len(), 1, "one answer to the asker: {sent:?}");
    let keys: Vec<&[u8]> = found[0].iter().map(|e| e.key.as_ref()).collect();
    assert_eq!(keys, vec![&b"torrentA-p1"[..], b"torrentA-p2"]);
}

#[test]
fn a_lookup_merges_the_answers_and_reports_when_done() {
    let mut asker = machine(1);
    let mut holder = machine(2);
    introduce(&mut asker, &mut holder, 1);
    let write = Command::Write {
        ns: Namespace::PROVIDERS,
        key: Bytes::from_static(b"torrentA-p1"),
        value: Bytes::from_static(b"v"),
        expires_ms: WALL + 60_000,
    };
    holder.handle(now(2), Input::Command(write));
    drain(&mut holder);
    asker.handle(
        now(3),
        Input::Command(Command::Lookup { id: 42, ns: Namespace::PROVIDERS, prefix: Bytes::from_static(b"torrentA") }),
    );
    let (sent, events) = drain(&mut asker);
    assert!(events.is_empty(), "waiting for the answer: {events:?}");
    let asks: Vec<_> = sent.iter().filter(|(_, p)| matches!(p.body, Body::Lookup { id: 42, .. })).collect();
    assert_eq!(asks.len(), 1, "the only live member is asked");
    // The holder answers; the asker merges and reports.
    let bytes = seal(&keys(), [5; 24], &asks[0].1, 1 << 20);
    holder.handle(now(4), Input::Receive { from: PeerAddr("n1".into()), bytes });
    let (answers, _) = drain(&mut holder);
    for (_, p) in answers.into_iter().filter(|(_, p)| matches!(p.body, Body::Found { .. })) {
        let bytes = seal(&keys(), [6; 24], &p, 1 << 20);
        asker.handle(now(5), Input::Receive { from: PeerAddr("n2".into()), bytes });
    }
    let (_, events) = drain(&mut asker);
    assert!(events.iter().any(|e| matches!(e, Event::Store(Change::Applied(e)) if e.key.as_ref() == b"torrentA-p1")));
    assert!(events.contains(&Event::LookupDone { id: 42, found: 1 }), "{events:?}");
    assert!(asker.store().get(Namespace::PROVIDERS, b"torrentA-p1", WALL + 5).is_some());
}

#[test]
fn answers_nobody_asked_for_are_not_taken_and_unanswered_lookups_time_out() {
    let mut asker = machine(1);
    let mut holder = machine(2);
    introduce(&mut asker, &mut holder, 1);
    // An unsolicited answer.
    let mut e = holder.store().entries().next().cloned();
    if e.is_none() {
        holder.handle(
            now(2),
            Input::Command(Command::Write {
                ns: Namespace::PROVIDERS,
                key: Bytes::from_static(b"planted"),
                value: Bytes::from_static(b"v"),
                expires_ms: 0,
            }),
        );
        drain(&mut holder);
        e = holder.store().entries().next().cloned();
    }
    let bogus = packet_from(2, Body::Found { id: 99, entries: vec![e.unwrap()] });
    asker.handle(now(3), Input::Receive { from: PeerAddr("n2".into()), bytes: bogus });
    drain(&mut asker);
    assert!(asker.store().get(Namespace::PROVIDERS, b"planted", WALL + 3).is_none());
    // Nobody answers: the lookup ends at its timeout with nothing found.
    asker.handle(
        now(4),
        Input::Command(Command::Lookup { id: 5, ns: Namespace::PROVIDERS, prefix: Bytes::from_static(b"x") }),
    );
    drain(&mut asker);
    asker.handle(now(2_000), Input::Timeout);
    let (_, events) = drain(&mut asker);
    assert!(events.contains(&Event::LookupDone { id: 5, found: 0 }), "{events:?}");
    // With no live member the lookup ends at once.
    let mut alone = machine(3);
    alone.handle(now(1), Input::Command(Command::Lookup { id: 1, ns: Namespace::PROVIDERS, prefix: Bytes::new() }));
    let (_, events) = drain(&mut alone);
    assert!(events.contains(&Event::LookupDone { id: 1, found: 0 }));
}
