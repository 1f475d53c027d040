//! The tests' virtual network itself (`common`): a livelock fails instead
//! of hanging, a seed fixes every delivery and loss, cut links lose
//! everything, and a delivery runs before a timer due at the same instant.

mod common;

use common::{Link, Machine, Net, Out};
use rumor_core::time::{Duration, Instant};
use rumor_core::Transmit;

/// A toy machine: each message it receives it sends back `bounces` times
/// less one (so 1 = echo forever); on `Kick` it sends `n` messages to
/// `peer`; a timer, when set, fires once and is logged.
struct Toy {
    peer: u8,
    bounces: u32,
    out: Vec<Out<u8, String>>,
    timer: Instant,
}

enum ToyInput {
    Kick(u32),
    Receive(u8, Vec<u8>),
    Timeout,
    SetTimer(Instant),
}

impl Toy {
    fn new(peer: u8, bounces: u32) -> Toy {
        Toy { peer, bounces, out: Vec::new(), timer: Instant::NEVER }
    }
}

impl Machine for Toy {
    type Addr = u8;
    type Input = ToyInput;
    type Event = String;

    fn handle(&mut self, now: Instant, input: ToyInput) {
        match input {
            ToyInput::Kick(n) => {
                for k in 0..n {
                    self.out.push(Out::Transmit(Transmit { to: self.peer, bytes: vec![k as u8] }));
                }
            }
            ToyInput::Receive(from, bytes) => {
                self.out.push(Out::Event(format!("got {bytes:?} from {from}")));
                if self.bounces > 0 {
                    self.out.push(Out::Transmit(Transmit { to: from, bytes }));
                }
            }
            ToyInput::Timeout if now >= self.timer => {
                self.timer = Instant::NEVER;
                self.out.push(Out::Event("timer".into()));
            }
            ToyInput::Timeout => {}
            ToyInput::SetTimer(at) => self.timer = at,
        }
    }

    fn poll(&mut self) -> Out<u8, String> {
        if self.out.is_empty() {
            Out::Timeout(self.timer)
        } else {
            self.out.remove(0)
        }
    }

    fn receive(from: u8, bytes: Vec<u8>) -> ToyInput {
        ToyInput::Receive(from, bytes)
    }

    fn timeout() -> ToyInput {
        ToyInput::Timeout
    }
}

fn two(link: Link, seed: u64, bounces: u32) -> Net<Toy> {
    let mut net = Net::new(link, seed);
    net.add(1, Toy::new(2, bounces));
    net.add(2, Toy::new(1, bounces));
    net
}

#[test]
#[should_panic(expected = "livelock")]
fn a_livelock_fails_the_test_instead_of_hanging() {
    let mut net = two(Link::fixed(Duration::from_millis(1)), 1, 1);
    net.steps_max = 1_000;
    net.input(0, ToyInput::Kick(1));
    net.drive();
}

#[test]
fn the_seed_fixes_every_loss_and_arrival_and_cut_links_lose_everything() {
    let lossy = Link { latency: Duration::from_millis(5), jitter: Duration::from_millis(10), loss: 0.3 };
    let run = |seed: u64| {
        let mut net = two(lossy, seed, 0);
        net.input(0, ToyInput::Kick(200));
        net.drive();
        (net.lost, net.events().iter().map(|(at, _, e)| (*at, e.clone())).collect::<Vec<_>>())
    };
    let (lost, arrivals) = run(9);
    assert_eq!(run(9), (lost, arrivals.clone()), "the same seed, the same run");
    assert!((30..=90).contains(&lost), "about 30% of 200 lost: {lost}");
    assert_eq!(arrivals.len() as u64 + lost, 200);
    assert_ne!(run(10).1, arrivals, "another seed, another run");
    let mut net = two(Link::fixed(Duration::from_millis(1)), 1, 0);
    net.cut(0, 1);
    net.input(0, ToyInput::Kick(5));
    net.drive();
    assert_eq!((net.lost, net.events().len()), (5, 0));
}

#[test]
fn a_delivery_runs_before_a_timer_due_at_the_same_instant() {
    let mut net = two(Link::fixed(Duration::from_millis(1)), 1, 0);
    net.input(1, ToyInput::SetTimer(Instant::from_micros(1_000)));
    net.input(0, ToyInput::Kick(1));
    net.run_for(Duration::from_millis(5));
    let at_b: Vec<_> =
        net.events().iter().filter(|(_, i, _)| *i == 1).map(|(at, _, e)| (at.as_micros(), e.as_str())).collect();
    assert_eq!(at_b, vec![(1_000, "got [0] from 1"), (1_000, "timer")]);
    assert_eq!(net.now, Instant::from_micros(5_000), "run_for ends at its end");
}
