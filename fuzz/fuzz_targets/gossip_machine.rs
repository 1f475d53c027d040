//! Drives one gossip machine with a sequence of inputs decoded from the fuzz
//! data (timeouts, commands, raw and sealed messages): nothing may panic,
//! every invariant of the machine holds after every input, and every drain
//! must end with a timeout.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rumor_core::gossip::{
    seal, Body, Command, Config, Gossip, Input, Keyring, Now, Output, Packet, PeerAddr,
};
use rumor_core::replica::Namespace;
use rumor_core::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    let ring = Keyring::new(1, [5; 32]);
    let mut now = Now {
        at: Instant::ZERO,
        wall_ms: 1_700_000_000_000,
    };
    let mut g = Gossip::new(Config::new(PeerAddr::from("me"), ring.clone()), 1, now, 3);
    let mut chunks = data.chunks(24);
    while let Some(c) = chunks.next() {
        let op = c[0] % 6;
        let arg = c.get(1).copied().unwrap_or(0);
        let input = match op {
            0 => {
                now.at += Duration::from_millis(u64::from(arg) * 10);
                now.wall_ms += u64::from(arg) * 10;
                Input::Timeout
            }
            1 => Input::Command(Command::Write {
                ns: Namespace::DNS,
                key: c[1..c.len().min(4)].to_vec().into(),
                value: c.to_vec().into(),
                expires_ms: if arg % 2 == 0 { 0 } else { now.wall_ms + 1_000 },
            }),
            2 => Input::Command(Command::Delete {
                ns: Namespace::DNS,
                key: c[1..c.len().min(4)].to_vec().into(),
            }),
            3 => Input::Command(Command::Join(vec![PeerAddr::from(format!("p{arg}"))])),
            4 => Input::Receive {
                from: PeerAddr::from("x"),
                bytes: c[1..].to_vec(),
            },
            _ => {
                // A well-sealed packet whose body is built from the data.
                let body = match arg % 4 {
                    0 => Body::Join,
                    1 => Body::NeedFull,
                    2 => Body::FullRequest { after: None },
                    _ => Body::Ping {
                        seq: u32::from(arg),
                        hash: u64::from(arg),
                        writers: 1,
                    },
                };
                let p = Packet {
                    from: 2 + u64::from(arg % 3),
                    addr: PeerAddr::from(format!("p{}", arg % 3)),
                    incarnation: u64::from(arg),
                    // Within the replay window (or just outside it), with
                    // numbers that repeat: fresh, stale and replayed
                    // messages all get exercised.
                    sent_ms: now.wall_ms - u64::from(c.get(2).copied().unwrap_or(0)) * 200,
                    seq: u64::from(c.get(3).copied().unwrap_or(0)),
                    complete: arg % 2 == 0,
                    updates: vec![],
                    body,
                };
                Input::Receive {
                    from: PeerAddr::from("x"),
                    bytes: seal(&ring, [arg; 24], &p, 256),
                }
            }
        };
        g.handle(now, input);
        g.check_invariants();
        let mut n = 0;
        while !matches!(g.poll_output(), Output::Timeout(_)) {
            n += 1;
            assert!(n < 100_000, "a drain must end");
        }
    }
});
