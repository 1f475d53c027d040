//! Fuzzes the gossip envelope and message decoder, then the machine with the
//! same bytes: nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rumor_core::gossip::{open, Config, Gossip, Input, Keyring, Now, Output, PeerAddr};

fuzz_target!(|data: &[u8]| {
    let ring = Keyring::new(1, [5; 32]);
    let _ = open(&ring, data, 65_536);
    let now = Now {
        at: rumor_core::time::Instant::ZERO,
        wall_ms: 1_700_000_000_000,
    };
    let mut g = Gossip::new(Config::new(PeerAddr::from("me"), ring), 1, now, 3);
    g.handle(
        now,
        Input::Receive {
            from: PeerAddr::from("x"),
            bytes: data.to_vec(),
        },
    );
    while !matches!(g.poll_output(), Output::Timeout(_)) {}
});
