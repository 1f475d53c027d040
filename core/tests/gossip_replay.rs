//! Replay protection of the gossip envelope: every message carries its
//! sender's wall clock and a sequence number under the AEAD, and a receiver
//! accepts each (sender, number) once, only while it is young.

mod common;

use common::gossip::{addr, at_ms, keys, WALL0_MS};
use rumor_core::gossip::{
    seal, Body, Command, Config, DecodeError, Event, Gossip, Input, Now, Output, Packet, PeerAddr,
};
use rumor_core::Transmit;

fn machine(id: u64, now: Now, seed: u64) -> Gossip {
    Gossip::new(Config::new(addr(id), keys()), id, now, seed)
}

/// Drains `g`: its transmits and its events.
fn drain(g: &mut Gossip) -> (Vec<Transmit<PeerAddr>>, Vec<Event>) {
    let (mut sent, mut events) = (Vec::new(), Vec::new());
    loop {
        match g.poll_output() {
            Output::Transmit(t) => sent.push(t),
            Output::Event(e) => events.push(e),
            Output::Timeout(_) => return (sent, events),
        }
    }
}

/// The message `from` sends to join `to`'s cluster, captured.
fn captured_join(from: &mut Gossip, to: u64, now: Now) -> Vec<u8> {
    from.handle(now, Input::Command(Command::Join(vec![addr(to)])));
    let (sent, _) = drain(from);
    sent.into_iter().find(|t| t.to == addr(to)).expect("a join is sent").bytes
}

/// Where `deliver` says each message came from: the way back, where
/// answers go.
const WIRE: &str = "tcp:4711";

/// Delivers `bytes` to `g` at `now`: what it sent back, and why it dropped
/// the message if it did.
fn deliver(g: &mut Gossip, now: Now, bytes: Vec<u8>) -> (Vec<Transmit<PeerAddr>>, Option<DecodeError>) {
    g.handle(now, Input::Receive { from: PeerAddr::from(WIRE), bytes });
    g.check_invariants();
    let (sent, events) = drain(g);
    let dropped = events.into_iter().find_map(|e| match e {
        Event::Dropped { reason, .. } => Some(reason),
        _ => None,
    });
    (sent, dropped)
}

#[test]
fn a_replayed_envelope_is_dropped_and_counted() {
    let (mut a, mut b) = (machine(1, at_ms(0), 1), machine(2, at_ms(0), 2));
    let join = captured_join(&mut a, 2, at_ms(10));
    let (answer, dropped) = deliver(&mut b, at_ms(20), join.clone());
    assert_eq!(dropped, None);
    assert!(answer.iter().any(|t| t.to == PeerAddr::from(WIRE)), "the first copy is answered, the way it came");
    for i in 0..200 {
        let (answer, dropped) = deliver(&mut b, at_ms(30 + i), join.clone());
        assert_eq!(dropped, Some(DecodeError::Replayed), "copy {i}");
        assert!(answer.is_empty(), "a replay is never answered");
    }
    assert_eq!(b.stats().dropped_replay, 200);
    assert_eq!(b.stats().messages_in, 1);
}

#[test]
fn an_envelope_older_than_the_replay_window_is_dropped_as_stale() {
    let (mut a, mut b) = (machine(1, at_ms(0), 1), machine(2, at_ms(0), 2));
    let window_ms = Config::new(addr(2), keys()).replay_window.as_micros() / 1000;
    let join = captured_join(&mut a, 2, at_ms(10));
    // Never delivered in time: held back by an attacker past the window.
    let (answer, dropped) = deliver(&mut b, at_ms(10 + window_ms + 1), join);
    assert_eq!(dropped, Some(DecodeError::Stale));
    assert!(answer.is_empty());
    assert_eq!(b.stats().dropped_stale, 1);
    // So is one from a clock too far ahead.
    let p = Packet {
        from: 3,
        addr: addr(3),
        incarnation: 0,
        sent_ms: WALL0_MS + 10 + 3 * window_ms,
        seq: 1,
        complete: true,
        updates: Vec::new(),
        body: Body::Join,
    };
    let (_, dropped) = deliver(&mut b, at_ms(10 + window_ms + 2), seal(&keys(), [9; 24], &p, 256));
    assert_eq!(dropped, Some(DecodeError::Stale));
}

#[test]
fn a_restarted_nodes_fresh_messages_are_accepted() {
    let (mut a, mut b) = (machine(1, at_ms(0), 1), machine(2, at_ms(0), 2));
    // Node 1 talks a lot, then restarts a second later with another seed.
    for i in 0..2_000 {
        let join = captured_join(&mut a, 2, at_ms(i / 4));
        assert_eq!(deliver(&mut b, at_ms(i / 4), join).1, None, "message {i}");
    }
    let mut restarted = machine(1, at_ms(1_000), 99);
    restarted.restore(Vec::new(), a.incarnation());
    for i in 0..10 {
        let join = captured_join(&mut restarted, 2, at_ms(1_000 + i));
        let (answer, dropped) = deliver(&mut b, at_ms(1_000 + i), join);
        assert_eq!(dropped, None, "message {i} after the restart");
        assert!(answer.iter().any(|t| t.to == PeerAddr::from(WIRE)));
    }
    assert_eq!(b.stats().dropped_replay + b.stats().dropped_stale, 0);
}

#[test]
fn the_replay_windows_memory_is_bounded() {
    let mut cfg = Config::new(addr(0), keys());
    cfg.replay_senders_max = 8;
    cfg.members_max = 1_000;
    let window_ms = cfg.replay_window.as_micros() / 1000;
    let mut g = Gossip::new(cfg, 0, at_ms(0), 5);
    let from = |id: u64, sent_ms: u64| {
        let p = Packet {
            from: id,
            addr: addr(id),
            incarnation: 0,
            sent_ms,
            seq: 7,
            complete: true,
            updates: Vec::new(),
            body: Body::Leave,
        };
        seal(&keys(), [id as u8; 24], &p, 256)
    };
    // A crowd of senders within one window: the first 8 are tracked, the
    // rest refused, since forgetting a sender heard within the window would
    // let its messages be replayed.
    for id in 1..=100 {
        let (_, dropped) = deliver(&mut g, at_ms(id), from(id, WALL0_MS + id));
        assert_eq!(dropped, if id <= 8 { None } else { Some(DecodeError::Replayed) }, "sender {id}");
    }
    // A window later, the silent senders give way to new ones, one each;
    // then the new ones fill the table in their turn.
    let later = window_ms + 200;
    for id in 101..=200 {
        let (_, dropped) = deliver(&mut g, at_ms(later + id), from(id, WALL0_MS + later + id));
        assert_eq!(dropped, if id <= 108 { None } else { Some(DecodeError::Replayed) }, "sender {id}");
    }
    // And the forgotten ones' messages stay refused: they are stale.
    let (_, dropped) = deliver(&mut g, at_ms(later + 300), from(1, WALL0_MS + 1));
    assert_eq!(dropped, Some(DecodeError::Stale));
}

#[test]
fn a_members_request_sent_by_someone_else_is_answered_to_them_never_to_the_member() {
    // Issue 12, item 11: a captured request of node 1's (here a full
    // transfer's first request) that node 2 never saw is fresh there. Sent
    // by a third party, its answer (a whole message of entries) goes back
    // to that third party, not to node 1.
    let mut b = machine(2, at_ms(0), 2);
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for i in 0..200u32 {
        // Values that do not compress away.
        let value: Vec<u8> = (0..200)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let w = Command::Write {
            ns: rumor_core::replica::Namespace::DNS,
            key: bytes::Bytes::from(format!("name-{i}.example")),
            value: bytes::Bytes::from(value),
            expires_ms: 0,
        };
        b.handle(at_ms(1), Input::Command(w));
    }
    drain(&mut b);
    let p = Packet {
        from: 1,
        addr: addr(1),
        incarnation: 0,
        sent_ms: WALL0_MS + 5,
        seq: 1,
        complete: true,
        updates: Vec::new(),
        body: Body::FullRequest { after: None },
    };
    let (answer, dropped) = deliver(&mut b, at_ms(10), seal(&keys(), [3; 24], &p, 256));
    assert_eq!(dropped, None);
    let to_wire: usize = answer.iter().filter(|t| t.to == PeerAddr::from(WIRE)).map(|t| t.bytes.len()).sum();
    let to_member: usize = answer.iter().filter(|t| t.to == addr(1)).map(|t| t.bytes.len()).sum();
    assert!(to_wire > 20_000, "the chunk went back the way the request came ({to_wire} bytes)");
    assert_eq!(to_member, 0, "nothing went to the member whose request it was");
}
