//! A node that missed every push of an entry, in a cluster with more
//! writers than one digest covers, repairs it in the first exchange: the
//! summary of an anti-entropy round lists the writers of recent entries,
//! and a receiver behind on one starts its digest window there (issue 16).
//! Before, the window started at a random writer and covered a tenth of
//! the writers of a 10,000-node cluster, so the repair took about ten
//! exchanges.

mod common;

use bytes::Bytes;
use common::gossip::{addr, at_ms, keys, WALL0_MS};
use rumor_core::gossip::{open, seal, Body, Command, Config, Gossip, Input, Output, Packet, Pushed};
use rumor_core::replica::{Entry, Namespace, NodeId, StoreConfig, Version};
use rumor_core::Transmit;

const A: NodeId = 1;
const B: NodeId = 2;
/// Writers 100..120; B misses the entry of `MISSED`.
const WRITERS: std::ops::Range<NodeId> = 100..120;
const MISSED: NodeId = 110;

fn machine(id: NodeId) -> Gossip {
    let mut c = Config::new(addr(id), keys());
    // Four writers per digest: twenty writers need five windows.
    c.digest_writers_max = 4;
    Gossip::new(c, id, at_ms(0), id)
}

/// Feeds `input` at `ms` and returns what the machine sends.
fn feed(g: &mut Gossip, ms: u64, input: Input) -> Vec<Transmit<rumor_core::gossip::PeerAddr>> {
    g.handle(at_ms(ms), input);
    let mut sent = Vec::new();
    loop {
        match g.poll_output() {
            Output::Transmit(t) => sent.push(t),
            Output::Event(_) => {}
            Output::Timeout(_) => return sent,
        }
    }
}

fn packet(bytes: &[u8]) -> Packet {
    open(&keys(), bytes, 1 << 20).expect("our own messages open")
}

fn entry_of(w: NodeId) -> Entry {
    Entry {
        ns: Namespace::PROVIDERS,
        key: Bytes::from(format!("p{w}")),
        value: Bytes::from_static(b"provider"),
        writer: w,
        version: Version::new(WALL0_MS + 50, 0),
        expires_ms: 0,
        deleted: false,
    }
}

/// Writer `w`'s first write, pushed by `w` itself, as the wire carries it.
fn push_from(w: NodeId, seq: u64) -> Vec<u8> {
    let p = Packet {
        from: w,
        addr: addr(w),
        incarnation: 0,
        sent_ms: WALL0_MS + 100,
        seq,
        complete: true,
        updates: Vec::new(),
        body: Body::Syn {
            summary: None,
            push: vec![Pushed { entry: entry_of(w), prev: Version::ZERO }],
            recent: Vec::new(),
        },
    };
    seal(&keys(), [w as u8; 24], &p, 256)
}

fn holds(g: &Gossip, w: NodeId) -> bool {
    g.store().get(Namespace::PROVIDERS, format!("p{w}").as_bytes(), WALL0_MS + 10_000).is_some()
}

#[test]
fn a_node_that_missed_every_push_repairs_it_in_the_first_exchange() {
    let (mut a, mut b) = (machine(A), machine(B));
    // B joins through A, so each knows the other.
    let join = feed(&mut b, 10, Input::Command(Command::Join(vec![addr(A)])));
    for t in join {
        for r in feed(&mut a, 11, Input::Receive { from: addr(B), bytes: t.bytes }) {
            feed(&mut b, 12, Input::Receive { from: addr(A), bytes: r.bytes });
        }
    }
    // Every writer's entry reaches A; B misses one.
    for (k, w) in WRITERS.enumerate() {
        feed(&mut a, 100, Input::Receive { from: addr(w), bytes: push_from(w, 1 + k as u64) });
        if w != MISSED {
            feed(&mut b, 100, Input::Receive { from: addr(w), bytes: push_from(w, 1 + k as u64) });
        }
    }
    assert!(holds(&a, MISSED) && !holds(&b, MISSED));

    // A's rounds: push the hot entries on, then an anti-entropy round
    // whose summary lists the recent writers once their pushes are over
    // (to whichever member: the network here hands it to B). Summaries
    // compare a write only once it has settled: before that, B takes the
    // missing entry for one still on its way.
    let settled_ms = 50 + StoreConfig::default().summary_settle_ms + 100;
    let mut syn = None;
    let mut ms = 100;
    while syn.is_none() && ms < 5_000 {
        ms += 50;
        for t in feed(&mut a, ms, Input::Timeout) {
            if let Body::Syn { summary: Some(_), recent, .. } = packet(&t.bytes).body {
                if recent.is_empty() {
                    assert!(ms < settled_ms, "only entries still being pushed, or not settled, are left out");
                    continue;
                }
                if ms < settled_ms {
                    let early = feed(&mut b, ms + 1, Input::Receive { from: addr(A), bytes: t.bytes });
                    assert!(
                        !early.iter().any(|t| matches!(packet(&t.bytes).body, Body::Digest { .. })),
                        "a summary that differs only by a write younger than the settling time starts no exchange"
                    );
                    continue;
                }
                assert!(
                    recent.iter().any(|(w, v)| *w == MISSED && *v == entry_of(MISSED).version),
                    "the summary lists the recent writers with A's newest version: {recent:?}"
                );
                syn = Some(t.bytes);
            }
        }
    }
    let syn = syn.expect("an anti-entropy round within 5 s");

    // B's digest starts at the writer it now knows it is behind on.
    let digest = feed(&mut b, ms + 1, Input::Receive { from: addr(A), bytes: syn });
    let digest = digest.into_iter().find(|t| matches!(packet(&t.bytes).body, Body::Digest { .. }));
    let digest = digest.expect("a differing summary is answered with a digest").bytes;
    if let Body::Digest { digest: d, .. } = packet(&digest).body {
        assert!(d.seen.len() <= 4, "a window of at most digest_writers_max writers");
        assert!(d.lo.is_none_or(|lo| lo <= MISSED) && d.hi.is_none_or(|hi| hi >= MISSED), "{d:?} covers {MISSED}");
        assert!(!d.seen.iter().any(|(w, _)| *w == MISSED), "B has seen nothing of {MISSED}");
    }
    // One exchange: A's delta carries the missed entry.
    for t in feed(&mut a, ms + 2, Input::Receive { from: addr(B), bytes: digest }) {
        feed(&mut b, ms + 3, Input::Receive { from: addr(A), bytes: t.bytes });
    }
    assert!(holds(&b, MISSED), "B repaired the missed entry in one exchange");
}

#[test]
fn the_digest_answering_our_summary_lists_the_recent_writers_so_our_own_digest_starts_there() {
    let (mut a, mut b) = (machine(A), machine(B));
    for (k, w) in WRITERS.enumerate() {
        feed(&mut a, 100, Input::Receive { from: addr(w), bytes: push_from(w, 1 + k as u64) });
        if w != MISSED {
            feed(&mut b, 100, Input::Receive { from: addr(w), bytes: push_from(w, 1 + k as u64) });
        }
    }
    // B's summary reaches A once the pushes are over and the writes settled.
    let syn = Packet {
        from: B,
        addr: addr(B),
        incarnation: 0,
        sent_ms: WALL0_MS + 2_000,
        seq: 1,
        complete: true,
        updates: Vec::new(),
        body: Body::Syn {
            summary: Some((b.store().summary_hash(), b.store().writers() as u32)),
            push: Vec::new(),
            recent: Vec::new(),
        },
    };
    let answer = feed(&mut a, 2_000, Input::Receive { from: addr(B), bytes: seal(&keys(), [5; 24], &syn, 256) });
    let digest = answer.into_iter().find(|t| matches!(packet(&t.bytes).body, Body::Digest { .. })).expect("a digest");
    if let Body::Digest { recent, .. } = packet(&digest.bytes).body {
        assert!(recent.iter().any(|(w, _)| *w == MISSED), "A's digest lists its recent writers: {recent:?}");
    }
    // B sends what A lacks with its own digest, which starts at MISSED; A
    // answers with what B lacks in that window.
    let mut rounds = vec![(B, digest.bytes)];
    let mut ms = 2_001;
    while let Some((to, bytes)) = rounds.pop() {
        ms += 1;
        let (g, from, other) = if to == B { (&mut b, addr(A), A) } else { (&mut a, addr(B), B) };
        for t in feed(g, ms, Input::Receive { from, bytes }) {
            if matches!(packet(&t.bytes).body, Body::Delta { .. }) {
                rounds.push((other, t.bytes));
            }
        }
    }
    assert!(holds(&b, MISSED), "B repaired the missed entry in the exchange its own summary started");
}

#[test]
fn a_push_whose_previous_write_we_lack_starts_the_next_digest_at_its_writer() {
    let mut b = machine(B);
    for (k, w) in WRITERS.enumerate() {
        if w != MISSED {
            feed(&mut b, 100, Input::Receive { from: addr(w), bytes: push_from(w, 1 + k as u64) });
        }
    }
    // The writer's second write arrives; its first never did.
    let mut second = entry_of(MISSED);
    second.key = Bytes::from_static(b"second");
    second.version = Version::new(WALL0_MS + 150, 0);
    let p = Packet {
        from: MISSED,
        addr: addr(MISSED),
        incarnation: 0,
        sent_ms: WALL0_MS + 200,
        seq: 99,
        complete: true,
        updates: Vec::new(),
        body: Body::Syn {
            summary: None,
            push: vec![Pushed { entry: second, prev: entry_of(MISSED).version }],
            recent: Vec::new(),
        },
    };
    feed(&mut b, 200, Input::Receive { from: addr(MISSED), bytes: seal(&keys(), [3; 24], &p, 256) });
    // Any differing summary now gets a digest that covers that writer.
    let probe = Packet {
        from: A,
        addr: addr(A),
        incarnation: 0,
        sent_ms: WALL0_MS + 300,
        seq: 1,
        complete: true,
        updates: Vec::new(),
        body: Body::Syn { summary: Some((1, 30)), push: Vec::new(), recent: Vec::new() },
    };
    let out = feed(&mut b, 300, Input::Receive { from: addr(A), bytes: seal(&keys(), [4; 24], &probe, 256) });
    let d = out
        .iter()
        .find_map(|t| match packet(&t.bytes).body {
            Body::Digest { digest, .. } => Some(digest),
            _ => None,
        })
        .expect("a digest");
    assert!(d.lo.is_none_or(|lo| lo <= MISSED) && d.hi.is_none_or(|hi| hi >= MISSED), "{d:?} covers {MISSED}");
    let listed = d.seen.iter().find(|(w, _)| *w == MISSED).map(|(_, v)| *v).unwrap_or(Version::ZERO);
    assert!(listed < entry_of(MISSED).version, "the watermark shows the gap");
}
