//! Drives one DHT node with inputs decoded from the fuzz data (time
//! passing, commands, raw datagrams, and well-formed queries and answers
//! from a few addresses): nothing may panic, every drain ends with a
//! timeout, and the bounds hold after every input.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rumor_core::bt::metainfo::InfoHash;
use rumor_core::dht::krpc::{Body, Message, NodeInfo, Query, Response};
use rumor_core::dht::{Command, Config, Dht, Input, NodeId, Output};
use rumor_core::time::{Duration, Instant};
use std::net::SocketAddr;

/// The node's most recent queries the inputs may answer.
const TIDS_KEPT: usize = 16;

fn addr(b: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, b % 8], 6881))
}

fn id(b: u8) -> NodeId {
    let mut i = [b; 20];
    i[0] = b.rotate_left(3);
    NodeId(i)
}

fuzz_target!(|data: &[u8]| {
    let config = Config::new(id(0x55));
    let (lookups_max, in_flight_max) = (config.lookups_max, config.in_flight_max);
    let mut now = Instant::ZERO;
    let mut d = Dht::new(config, now, 7);
    let mut last_tids: Vec<Vec<u8>> = Vec::new();
    for c in data.chunks(8) {
        let op = c[0] % 7;
        let a = c.get(1).copied().unwrap_or(0);
        let b = c.get(2).copied().unwrap_or(0);
        let input = match op {
            0 => {
                now += Duration::from_millis(u64::from(a) * 50);
                Input::Timeout
            }
            1 => Input::Command(Command::Bootstrap(vec![addr(a), addr(b)])),
            2 => Input::Command(Command::GetPeers {
                lookup: u64::from(a),
                info_hash: InfoHash([b; 20]),
                announce: (a % 2 == 0).then_some(u16::from(b)),
            }),
            3 => Input::Receive { from: addr(a), bytes: c.get(2..).unwrap_or_default().to_vec() },
            4 => {
                let q = match b % 4 {
                    0 => Query::Ping { id: id(a) },
                    1 => Query::FindNode { id: id(a), target: id(b) },
                    2 => Query::GetPeers { id: id(a), info_hash: InfoHash([b; 20]) },
                    _ => Query::AnnouncePeer {
                        id: id(a),
                        info_hash: InfoHash([b; 20]),
                        port: u16::from(b),
                        token: c.get(3..).unwrap_or_default().to_vec(),
                        implied_port: a % 2 == 0,
                    },
                };
                let m = Message { tid: vec![a], body: Body::Query(q), read_only: b % 5 == 0, ip: None, version: None };
                Input::Receive { from: addr(a), bytes: m.encode() }
            }
            _ => {
                // An answer to one of the node's recent queries, with nodes.
                let Some(tid) = last_tids.get(usize::from(a) % last_tids.len().max(1)).cloned() else { continue };
                let nodes = (0..b % 10).map(|k| NodeInfo { id: id(a.wrapping_add(k)), addr: addr(k) }).collect();
                let values = if b % 3 == 0 { vec![addr(b)] } else { Vec::new() };
                let r = Response { id: id(a), nodes, values, token: Some(vec![b]) };
                let m = Message { tid, body: Body::Response(r), read_only: false, ip: None, version: None };
                Input::Receive { from: addr(a), bytes: m.encode() }
            }
        };
        d.handle(now, input);
        let mut drained = false;
        let mut sent: Vec<Vec<u8>> = Vec::new();
        for _ in 0..100_000 {
            match d.poll_output() {
                Output::Transmit(t) => sent.push(t.bytes),
                Output::Event(_) => {}
                Output::Timeout(_) => {
                    drained = true;
                    break;
                }
            }
        }
        // Only the last 16 queries are kept, so only the datagrams that may
        // be among them are parsed, newest first: parsing every one was
        // half of the target's time, and a lookup sends many.
        let mut newest: Vec<Vec<u8>> = Vec::new();
        for bytes in sent.iter().rev() {
            if newest.len() == TIDS_KEPT {
                break;
            }
            if let Ok(m) = Message::parse(bytes) {
                if matches!(m.body, Body::Query(_)) {
                    newest.push(m.tid);
                }
            }
        }
        last_tids.extend(newest.into_iter().rev());
        let over = last_tids.len().saturating_sub(TIDS_KEPT);
        last_tids.drain(..over);
        assert!(drained, "every drain ends with a timeout");
        assert!(d.lookup_count() <= lookups_max);
        assert!(d.in_flight() <= in_flight_max);
        assert!(d.table().len() <= 8 * 160);
    }
});
