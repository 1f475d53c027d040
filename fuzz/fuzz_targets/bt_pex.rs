//! BEP 11 peer exchange: the parser on the raw fuzz data (its own encoding
//! parses back), then the same data as a scenario for the sending side
//! (connections come and go, time passes): every message stays within the
//! limits, parses back to itself, never names its recipient, and comes at
//! most once a minute to each connection.
#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use rumor_core::bt::pex::*;
use rumor_core::time::{Duration, Instant};
use std::collections::BTreeMap;
use std::net::SocketAddr;

fn sender(u: &mut Unstructured) -> Result<()> {
    let mut s = PexSender::new(u.arbitrary()?);
    let mut conns: BTreeMap<u64, PexConn> = BTreeMap::new();
    let mut last: BTreeMap<u64, Instant> = BTreeMap::new();
    let mut now = Instant::ZERO;
    while !u.is_empty() {
        match u.int_in_range(0u8..=3)? {
            0 => {
                let peer = u.int_in_range(0u64..=15)?;
                let x: u8 = u.arbitrary()?;
                let listen = if u.arbitrary()? {
                    Some(SocketAddr::from(([10, 0, x % 16, 1], u16::from(x % 5))))
                } else if u.arbitrary()? {
                    Some(SocketAddr::from(([0xfe80, 0, 0, 0, 0, 0, 0, u16::from(x)], 6881)))
                } else {
                    None
                };
                conns.insert(peer, PexConn { peer, listen, flags: u.arbitrary()?, ut_pex: u.arbitrary()? });
            }
            1 => {
                let peer = u.int_in_range(0u64..=15)?;
                conns.remove(&peer);
                last.remove(&peer);
            }
            2 => now += Duration::from_secs(u64::from(u.int_in_range(0u8..=90)?)),
            _ => {
                let list: Vec<PexConn> = conns.values().copied().collect();
                for m in s.poll(now, &list) {
                    let c = conns[&m.peer];
                    assert_eq!(Some(m.ext_id), c.ut_pex);
                    assert!(m.message.added.len() <= PEX_SEND_ADDED_MAX);
                    assert!(m.message.dropped.len() <= PEX_SEND_DROPPED_MAX);
                    assert!(m.message.added.iter().all(|p| Some(p.addr) != c.listen), "named to itself");
                    let wire = m.to_wire();
                    assert_eq!(PexMessage::parse(&wire[6..]).expect("own message parses"), m.message);
                    if let Some(t) = last.insert(m.peer, now) {
                        assert!(now.saturating_duration_since(t) >= PEX_INTERVAL, "two messages within a minute");
                    }
                }
                assert!(s.tracked() <= conns.len());
            }
        }
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = PexMessage::parse(data) {
        let again = PexMessage::parse(&m.encode()).expect("own encoding parses");
        assert!(again.added.len() <= m.added.len());
    }
    let _ = sender(&mut Unstructured::new(data));
});
