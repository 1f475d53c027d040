//! BEP 14 Local Service Discovery: the announce parser on the raw fuzz data
//! (what parses re-encodes and parses back to itself), then the same data
//! as a scenario for the machine (datagrams from a few sources, raw or
//! built, our own looped back, time passing): nothing panics, only our
//! torrents' peers are reported, never from our own announces, every
//! announce we send parses and stays under 1400 bytes, and the timeout
//! always comes.
#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use rumor_core::bt::lsd::*;
use rumor_core::bt::metainfo::InfoHash;
use rumor_core::time::{Duration, Instant};
use std::net::SocketAddr;

fn drain(l: &mut Lsd, ours: &[InfoHash], own: &mut Vec<Vec<u8>>) -> Instant {
    loop {
        match l.poll_output() {
            Output::Transmit(t) => {
                assert!(t.bytes.len() <= ANNOUNCE_BYTES_MAX);
                let a = Announce::parse(&t.bytes).expect("our announce parses");
                assert_eq!(a.cookie.as_deref(), Some(l.cookie()));
                own.push(t.bytes);
            }
            Output::Event(Event::Peer { info_hash, addr }) => {
                assert!(ours.contains(&info_hash), "a peer of a torrent we do not serve");
                assert_ne!(addr.port(), 0);
            }
            Output::Timeout(at) => return at,
        }
    }
}

fn machine(u: &mut Unstructured) -> Result<()> {
    let mut ours: Vec<InfoHash> = (0..u.int_in_range(1u8..=3)?).map(|i| InfoHash([i; 20])).collect();
    let mut config = LsdConfig::new(u.int_in_range(1u16..=65535)?, ours.clone());
    config.source_burst = u.int_in_range(0u32..=40)?;
    config.source_per_minute = u.int_in_range(0u32..=120)?;
    if u.arbitrary()? {
        config.groups.push(LSD_GROUP_V6);
    }
    let mut l = Lsd::new(config, Instant::ZERO, u.arbitrary()?);
    let mut now = Instant::ZERO;
    let mut own = Vec::new();
    let mut deadline = drain(&mut l, &ours, &mut own);
    while !u.is_empty() {
        let from = SocketAddr::from(([10, 0, 0, u.int_in_range(0u8..=3)?], 6771));
        match u.int_in_range(0u8..=5)? {
            0 => {
                let bytes: Vec<u8> = u.arbitrary()?;
                l.handle(now, Input::Receive { from, bytes });
            }
            1 => {
                let n = u.int_in_range(1usize..=4)?;
                let info_hashes = (0..n).map(|_| Ok(InfoHash([u.int_in_range(0u8..=4)?; 20]))).collect::<Result<_>>()?;
                let cookie = if u.arbitrary()? { Some(format!("c{}", u.int_in_range(0u8..=3)?)) } else { None };
                let a = Announce { port: u.arbitrary()?, info_hashes, cookie };
                l.handle(now, Input::Receive { from, bytes: a.encode(LSD_GROUP_V4) });
            }
            2 if !own.is_empty() => {
                let bytes = own[u.choose_index(own.len())?].clone();
                let before = l.stats().peers;
                l.handle(now, Input::Receive { from, bytes });
                assert_eq!(l.stats().peers, before, "our own announce reported a peer");
            }
            3 => {
                now = now.max(deadline);
                l.handle(now, Input::Timeout);
            }
            // A session's torrents come and go: only the new set's peers
            // may be reported from now on.
            5 => {
                let n = u.int_in_range(0usize..=4)?;
                ours = (0..n).map(|_| Ok(InfoHash([u.int_in_range(0u8..=4)?; 20]))).collect::<Result<_>>()?;
                l.handle(now, Input::SetInfoHashes(ours.clone()));
            }
            _ => now += Duration::from_secs(u64::from(u.int_in_range(0u16..=400)?)),
        }
        deadline = drain(&mut l, &ours, &mut own);
        own.truncate(8);
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    if let Ok(a) = Announce::parse(data) {
        assert_eq!(Announce::parse(&a.encode(LSD_GROUP_V4)).expect("own encoding parses"), a);
    }
    let _ = machine(&mut Unstructured::new(data));
});
