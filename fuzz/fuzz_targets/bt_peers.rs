//! Drives one peer book with a sequence of operations built from the fuzz
//! data (learn from every source, due, dial outcomes, closes of every kind,
//! incoming connections, bans, strikes, retries, time steps): nothing may
//! panic, `due` never hands out more than asked nor a banned address, and
//! every bound holds after each step (`check_invariants`).
#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use rumor_core::bt::peers::{Closed, PeerBook, PeerBookConfig, Source};
use rumor_core::time::{Duration, Instant};
use std::net::SocketAddr;

/// Addresses from a small space, so that operations meet the same ones.
fn addr(x: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, x % 8], 6881 + (x as u16 % 7)))
}

fn run(u: &mut Unstructured) -> Result<()> {
    let config = PeerBookConfig {
        known_max: u.int_in_range(1usize..=16)?,
        connections_max: u.int_in_range(1usize..=8)?,
        dials_max: u.int_in_range(1usize..=4)?,
        banned_max: u.int_in_range(0usize..=6)?,
        failures_max: u.int_in_range(1u32..=5)?,
        strikes_max: u.int_in_range(1u32..=4)?,
        ..PeerBookConfig::default()
    };
    let mut book = PeerBook::new(config, u.arbitrary()?);
    let mut now = Instant::ZERO;
    let sources = [Source::Given, Source::Tracker, Source::Overlay, Source::Pex];
    let hows = [Closed::Finished, Closed::Transient, Closed::Useless];
    while !u.is_empty() {
        let a = addr(u.arbitrary()?);
        match u.int_in_range(0u8..=12)? {
            0 => {
                book.learn(a, sources[u.int_in_range(0usize..=3)?]);
            }
            1 => {
                let limit = u.int_in_range(0usize..=20)?;
                let due = book.due(now, limit);
                assert!(due.len() <= limit, "due gave {} for a limit of {limit}", due.len());
                assert!(due.iter().all(|d| !book.is_banned(*d)), "due gave a banned address");
            }
            2 => book.connected(a),
            3 => book.ready(a),
            4 => book.failed(now, a),
            5 => book.closed(now, a, hows[u.int_in_range(0usize..=2)?]),
            6 => {
                let _ = book.accept(a);
            }
            7 => book.incoming_closed(a),
            8 => book.ban(a),
            9 => {
                book.strike(a);
            }
            10 => book.retry_now(now),
            11 => book.all_closed(now),
            _ => now += Duration::from_millis(u64::from(u.int_in_range(0u16..=60_000)?)),
        }
        book.check_invariants();
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
