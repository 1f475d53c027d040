//! Drives one overlay tracker machine with a `Vec<Input>` built from the
//! fuzz data (announces of every event from a few endpoints and torrents,
//! scrapes, provider changes, live or deleted, well-formed or not, lookup
//! ends, timeouts, time steps): nothing may panic, every drain ends with a
//! timeout, every bound holds after each step, every announce is answered
//! exactly once, and only provider-namespace commands come out.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use rumor_core::bt::metainfo::InfoHash;
use rumor_core::bt::tracker::{AnnounceEvent, AnnounceRequest};
use rumor_core::gossip::{Command, Now};
use rumor_core::overlay::tracker::{Config, Event, Input, Output, Tracker};
use rumor_core::overlay::{provider_key, provider_value, snatch_key, Provider};
use rumor_core::replica::{Change, Entry, Namespace, Version};
use rumor_core::time::{Duration, Instant};
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

const WALL0: u64 = 1_700_000_000_000;

fn ip(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, n % 4))
}

fn ih(n: u8) -> InfoHash {
    InfoHash([n % 5; 20])
}

/// One step: the time to advance (ms) and the input.
fn step(u: &mut Unstructured, id: &mut u64) -> Result<(u64, Input)> {
    let advance = u64::from(u.int_in_range(0u16..=3_000)?);
    let input = match u.int_in_range(0u8..=5)? {
        0 => {
            *id += 1;
            let event = match u.int_in_range(0u8..=3)? {
                0 => AnnounceEvent::None,
                1 => AnnounceEvent::Started,
                2 => AnnounceEvent::Completed,
                _ => AnnounceEvent::Stopped,
            };
            let request = AnnounceRequest {
                info_hash: ih(u.arbitrary()?),
                peer_id: u.arbitrary()?,
                port: u.int_in_range(1u16..=4)?,
                uploaded: u.arbitrary()?,
                downloaded: u.arbitrary()?,
                left: if u.arbitrary()? { 0 } else { u.arbitrary()? },
                event,
                numwant: u.arbitrary()?,
                key: None,
                compact: u.arbitrary()?,
            };
            Input::Announce { id: *id, request, from: ip(u.arbitrary()?) }
        }
        1 => {
            *id += 1;
            let n = u.int_in_range(0usize..=300)?;
            let hashes = (0..n).map(|i| ih(i as u8)).collect();
            Input::Scrape { id: *id, hashes }
        }
        2 => {
            let addr = SocketAddr::new(ip(u.arbitrary()?), u.int_in_range(1u16..=4)?);
            let h = ih(u.arbitrary()?);
            let snatch: bool = u.arbitrary()?;
            let key = if snatch { snatch_key(&h, addr) } else { provider_key(&h, addr) };
            let deleted: bool = u.arbitrary()?;
            let written_ms = WALL0 + u64::from(u.arbitrary::<u32>()?) % 10_000_000;
            let p = Provider {
                addr,
                peer_id: None,
                seeder: u.arbitrary()?,
                announced_ms: written_ms,
                expires_ms: written_ms + u64::from(u.arbitrary::<u16>()?) * 100,
            };
            let value = if deleted {
                Bytes::new()
            } else if u.arbitrary()? {
                Bytes::from(provider_value(&p))
            } else {
                let len = u.int_in_range(0usize..=40)?;
                Bytes::from(u.bytes(len)?.to_vec())
            };
            Input::Store(Change::Applied(Entry {
                ns: Namespace::PROVIDERS,
                key: Bytes::from(key),
                value,
                writer: u.arbitrary()?,
                version: Version::new(written_ms, u.arbitrary()?),
                expires_ms: if deleted { 0 } else { p.expires_ms },
                deleted,
            }))
        }
        3 => {
            let len = u.int_in_range(0usize..=50)?;
            Input::Store(Change::Removed { ns: Namespace::PROVIDERS, key: Bytes::from(u.bytes(len)?.to_vec()) })
        }
        4 => Input::LookupDone { id: u.int_in_range(0u32..=20)? },
        _ => Input::Timeout,
    };
    Ok((advance, input))
}

fn drain(t: &mut Tracker, answered: &mut BTreeSet<u64>, lookups: &mut Vec<u32>) -> Instant {
    for _ in 0..10_000 {
        match t.poll_output() {
            Output::Timeout(at) => return at,
            Output::Event(Event::Answer { id, body }) => {
                assert!(!body.is_empty());
                assert!(answered.insert(id), "request {id} answered twice");
            }
            Output::Gossip(Command::Write { ns, .. }) | Output::Gossip(Command::Delete { ns, .. }) => {
                assert_eq!(ns, Namespace::PROVIDERS)
            }
            Output::Gossip(Command::Lookup { id, ns, .. }) => {
                assert_eq!(ns, Namespace::PROVIDERS);
                lookups.push(id);
            }
            Output::Gossip(other) => panic!("the tracker sent a non-provider command: {other:?}"),
        }
    }
    panic!("the drain never reached its timeout");
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let mut id = 0u64;
    let mut inputs = Vec::new();
    while !u.is_empty() && inputs.len() < 2_000 {
        match step(&mut u, &mut id) {
            Ok(s) => inputs.push(s),
            Err(_) => break,
        }
    }
    let mut config = Config::new(60);
    config.parked_max = 4;
    config.stopped_max = 8;
    let mut now = Now { at: Instant::ZERO, wall_ms: WALL0 };
    let mut t = Tracker::new(config, now);
    let mut answered = BTreeSet::new();
    let mut lookups = Vec::new();
    let mut announces = BTreeSet::new();
    for (advance, input) in inputs {
        now.at += Duration::from_millis(advance);
        now.wall_ms += advance;
        match &input {
            Input::Announce { id, .. } | Input::Scrape { id, .. } => {
                announces.insert(*id);
            }
            _ => {}
        }
        let timeout = input == Input::Timeout;
        t.handle(now, input);
        let deadline = drain(&mut t, &mut answered, &mut lookups);
        assert!(!timeout || deadline > now.at, "a timeout left its deadline in the past");
        t.check_invariants();
    }
    // Past the park timeout, every request has its answer.
    now.at += t.config().park_timeout;
    t.handle(now, Input::Timeout);
    drain(&mut t, &mut answered, &mut lookups);
    t.check_invariants();
    assert_eq!(t.parked(), 0);
    assert_eq!(answered, announces, "every announce and scrape is answered exactly once");
});
