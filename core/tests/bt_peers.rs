//! The peer book under any sequence of operations: every bound holds and
//! the counters agree with the entries after every step.
use core::net::SocketAddr;
use proptest::prelude::*;
use rumor_core::bt::peers::{Closed, PeerBook, PeerBookConfig, Source};
use rumor_core::time::{Duration, Instant};

#[derive(Clone, Debug)]
enum Op {
    Learn(u8, u8),
    Due(u8),
    Connected(u8),
    Ready(u8),
    Failed(u8),
    Closed(u8, u8),
    Accept(u8),
    IncomingClosed(u8),
    Lost(u8),
    Ban(u8),
    Strike(u8),
    RetryNow,
    AllClosed,
    Wait(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<u8>(), 0u8..5).prop_map(|(a, s)| Op::Learn(a, s)),
        3 => (0u8..20).prop_map(Op::Due),
        3 => any::<u8>().prop_map(Op::Connected),
        1 => any::<u8>().prop_map(Op::Ready),
        3 => any::<u8>().prop_map(Op::Failed),
        3 => (any::<u8>(), 0u8..3).prop_map(|(a, h)| Op::Closed(a, h)),
        2 => any::<u8>().prop_map(Op::Accept),
        1 => any::<u8>().prop_map(Op::IncomingClosed),
        1 => any::<u8>().prop_map(Op::Lost),
        1 => any::<u8>().prop_map(Op::Ban),
        1 => any::<u8>().prop_map(Op::Strike),
        1 => Just(Op::RetryNow),
        1 => Just(Op::AllClosed),
        3 => any::<u16>().prop_map(Op::Wait),
    ]
}

/// Addresses from a small space, so that operations meet the same ones.
fn addr(x: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, x % 8], 6881 + (x as u16 % 7)))
}

proptest! {
    #[test]
    fn every_bound_holds_whatever_the_sequence_of_operations(
        ops in prop::collection::vec(op(), 1..300),
        seed in any::<u64>(),
    ) {
        let config = PeerBookConfig {
            known_max: 12,
            connections_max: 6,
            dials_max: 3,
            banned_max: 5,
            failures_max: 4,
            ..PeerBookConfig::default()
        };
        let mut b = PeerBook::new(config, seed);
        let mut now = Instant::ZERO;
        let sources = [Source::Given, Source::Tracker, Source::Overlay, Source::Pex, Source::Incoming];
        let hows = [Closed::Finished, Closed::Transient, Closed::Useless];
        for op in ops {
            match op {
                Op::Learn(a, s) => {
                    b.learn(addr(a), sources[s as usize]);
                }
                Op::Due(n) => {
                    let due = b.due(now, n as usize);
                    prop_assert!(due.len() <= n as usize);
                    for d in due {
                        prop_assert!(!b.is_banned(d));
                    }
                }
                Op::Connected(a) => b.connected(addr(a)),
                Op::Ready(a) => b.ready(addr(a)),
                Op::Failed(a) => b.failed(now, addr(a)),
                Op::Closed(a, h) => b.closed(now, addr(a), hows[h as usize]),
                Op::Accept(a) => {
                    let _ = b.accept(addr(a));
                }
                Op::IncomingClosed(a) => b.incoming_closed(addr(a)),
                Op::Lost(a) => b.lost(now, addr(a)),
                Op::Ban(a) => b.ban(addr(a)),
                Op::Strike(a) => {
                    b.strike(addr(a));
                }
                Op::RetryNow => b.retry_now(now),
                Op::AllClosed => b.all_closed(now),
                Op::Wait(ms) => now += Duration::from_millis(ms as u64 * 10),
            }
            b.check_invariants();
        }
    }
}
