#![no_main]
//! Drives the DNS forwarder machine with a sequence of inputs decoded from
//! the fuzz data (client queries, upstream replies built to match or not,
//! raw bytes, timeouts): nothing may panic, every drain ends with a
//! timeout, the in-flight bound holds, every query is answered at most once
//! and a reply goes back only to a client that asked.
use libfuzzer_sys::fuzz_target;
use rumor_core::dns::forward::{Forwarder, ForwarderConfig, Input, Output, To};
use rumor_core::dns::*;
use rumor_core::time::{Duration, Instant};
use rumor_core::Transmit;
use std::collections::BTreeMap;

const IN_FLIGHT_MAX: usize = 4;

fn query(id: u16, name: u8) -> Vec<u8> {
    encode(&Message {
        header: Header { id, rd: true, ..Header::default() },
        questions: vec![Question {
            name: Name::from_ascii(&format!("n{name}.example")).unwrap(),
            qtype: RType::A,
            qclass: CLASS_IN,
        }],
        ..Message::default()
    })
}

fuzz_target!(|data: &[u8]| {
    let cfg = ForwarderConfig { timeout: Duration::from_millis(100), in_flight_max: IN_FLIGHT_MAX };
    let mut f: Forwarder<u8> = Forwarder::new(cfg, 7);
    let mut now = Instant::ZERO;
    // Upstream queries seen: the id the forwarder chose, and whose query.
    let mut upstream: BTreeMap<u16, u8> = BTreeMap::new();
    // Answers each client still expects (queries sent, minus answers).
    let mut waiting: BTreeMap<u8, usize> = BTreeMap::new();
    for c in data.chunks(4) {
        let arg = c.get(1).copied().unwrap_or(0);
        let input = match c[0] % 5 {
            0 => {
                let client = arg % 8;
                *waiting.entry(client).or_default() += 1;
                Input::Query { client, bytes: query(u16::from(arg), c.get(2).copied().unwrap_or(0) % 4) }
            }
            1 => {
                // A well-formed reply to an id seen upstream (or a guess).
                let id = upstream.keys().nth(usize::from(arg) % upstream.len().max(1)).copied().unwrap_or(0);
                let mut reply = decode(&query(id, c.get(2).copied().unwrap_or(0) % 4)).unwrap();
                reply.header.qr = true;
                Input::Receive { bytes: encode(&reply) }
            }
            2 => Input::Receive { bytes: c[1..].to_vec() },
            3 => {
                now += Duration::from_millis(u64::from(arg));
                Input::Timeout
            }
            _ => {
                now += Duration::from_millis(u64::from(arg) / 4);
                Input::Timeout
            }
        };
        let queried = matches!(input, Input::Query { .. });
        let client_of_query = match &input {
            Input::Query { client, .. } => Some(*client),
            _ => None,
        };
        f.handle(now, input);
        let mut n = 0;
        let mut sent_up = false;
        loop {
            n += 1;
            assert!(n < 10_000, "a drain must end");
            match f.poll_output() {
                Output::Transmit(Transmit { to: To::Upstream, bytes }) => {
                    assert!(queried, "only a client query goes upstream");
                    let id = u16::from_be_bytes([bytes[0], bytes[1]]);
                    upstream.insert(id, client_of_query.unwrap());
                    sent_up = true;
                }
                Output::Transmit(Transmit { to: To::Client(c), bytes }) => {
                    assert!(decode(&bytes).is_ok(), "replies to clients decode");
                    let w = waiting.get_mut(&c).expect("a reply goes only to a client that asked");
                    assert!(*w > 0, "client {c} got more answers than it asked");
                    *w -= 1;
                }
                Output::Timeout(at) => {
                    assert!(at == Instant::NEVER || f.in_flight() > 0, "a timer only while queries wait");
                    break;
                }
            }
        }
        if queried && !sent_up {
            // Too busy: the query was answered (SERVFAIL) at once, above.
            assert_eq!(f.in_flight(), IN_FLIGHT_MAX, "a readable query goes upstream unless the forwarder is full");
        }
        assert!(f.in_flight() <= IN_FLIGHT_MAX, "in flight over the bound");
    }
});
