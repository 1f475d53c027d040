//! Forwarding of queries outside the node's zones to an upstream resolver,
//! the way Docker's 127.0.0.11 hands unknown names on.
//!
//! A sans-IO machine in the crate's one shape: the adapter feeds it
//! [`Input::Query`] (a client's query the [`Authority`](super::Authority)
//! said to forward), [`Input::Receive`] (whatever the upstream sent) and
//! [`Input::Timeout`], each with the time, then drains
//! [`Forwarder::poll_output`]: every [`Output::Transmit`] goes to the
//! upstream or back to a client, and the drain ends with
//! [`Output::Timeout`], the instant of the next `Input::Timeout`.
//!
//! ```text
//! fwd.handle(now, Input::Query { client, bytes });
//! loop { match fwd.poll_output() {
//!     Output::Transmit(Transmit { to: To::Upstream, bytes }) => send bytes to the upstream,
//!     Output::Transmit(Transmit { to: To::Client(c), bytes }) => answer client c with bytes,
//!     Output::Timeout(at) => { arm the timer at `at` (NEVER: none); break }
//! } }
//! ```
//!
//! Each forwarded query gets a fresh random id so an off-path attacker
//! cannot guess it; a reply is only accepted if its id *and* question
//! match, and goes back with the client's own id. A query the upstream does
//! not answer within [`ForwarderConfig::timeout`] is answered SERVFAIL.
//!
//! Limits: at most [`ForwarderConfig::in_flight_max`] queries wait on the
//! upstream (more are answered SERVFAIL at once); the output queue holds at
//! most one message per input, or one per expired query after a timeout, if
//! drained after every input.

use super::message::{Header, Message, Question, Rcode};
use super::wire;
use crate::rand::Rng;
use crate::time::{Duration, Instant};
use crate::Transmit;
use std::collections::{BTreeSet, HashMap, VecDeque};

/// Limits of the forwarder.
#[derive(Clone, Copy, Debug)]
pub struct ForwarderConfig {
    /// How long to wait for the upstream before answering SERVFAIL.
    pub timeout: Duration,
    /// Most queries waiting on the upstream at once; past it new ones are
    /// answered SERVFAIL at once.
    pub in_flight_max: usize,
}

impl Default for ForwarderConfig {
    fn default() -> Self {
        ForwarderConfig { timeout: Duration::from_secs(2), in_flight_max: 1024 }
    }
}

/// Where a [`Transmit`] of the forwarder goes. `C` identifies a client to
/// the adapter (a socket address, a TCP connection id).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum To<C> {
    /// The upstream resolver.
    Upstream,
    /// The client that asked.
    Client(C),
}

/// One input to [`Forwarder::handle`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input<C> {
    /// A client's query to forward (the whole DNS message).
    Query {
        /// Who asked; replies and SERVFAILs go back to it.
        client: C,
        /// The query as the client sent it.
        bytes: Vec<u8>,
    },
    /// A message from the upstream (a reply, or anything else: it is only
    /// taken if it answers a query in flight).
    Receive {
        /// The message bytes.
        bytes: Vec<u8>,
    },
    /// The instant of the last `Output::Timeout` passed (an early call does
    /// nothing).
    Timeout,
}

/// What the forwarder wants done. Drain with [`Forwarder::poll_output`]
/// until it returns `Timeout`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output<C> {
    /// Send one whole DNS message to the upstream or to a client.
    Transmit(Transmit<To<C>>),
    /// Call `handle(.., Input::Timeout)` at this instant ([`Instant::NEVER`]
    /// when nothing waits). Always the last output of a drain.
    Timeout(Instant),
}

struct Pending<C> {
    client: C,
    client_id: u16,
    question: Question,
    deadline: Instant,
}

/// Tracks queries sent upstream. `C` is whatever identifies a client to the
/// adapter (a socket address, a TCP connection id).
///
/// * Inputs: [`handle`](Self::handle).
/// * Outputs: [`poll_output`](Self::poll_output), drained after every input
///   until it returns `Output::Timeout`.
/// * Getters: [`in_flight`](Self::in_flight).
pub struct Forwarder<C> {
    config: ForwarderConfig,
    rng: Rng,
    pending: HashMap<u16, Pending<C>>,
    deadlines: BTreeSet<(Instant, u16)>,
    out: VecDeque<Output<C>>,
}

impl<C: Clone> Forwarder<C> {
    /// A forwarder whose ids come from `seed` (draw it from OS entropy: the
    /// ids are what keeps off-path attackers from forging replies).
    pub fn new(config: ForwarderConfig, seed: u64) -> Self {
        Forwarder {
            config,
            rng: Rng::new(seed),
            pending: HashMap::new(),
            deadlines: BTreeSet::new(),
            out: VecDeque::new(),
        }
    }

    /// Queries waiting on the upstream.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Feeds one input at `now`. Then drain [`poll_output`](Self::poll_output).
    pub fn handle(&mut self, now: Instant, input: Input<C>) {
        match input {
            Input::Query { client, bytes } => self.query(now, client, bytes),
            Input::Receive { bytes } => self.receive(bytes),
            Input::Timeout => self.timeout(now),
        }
    }

    /// The next output. Drain until it returns `Output::Timeout`.
    pub fn poll_output(&mut self) -> Output<C> {
        if let Some(o) = self.out.pop_front() {
            return o;
        }
        Output::Timeout(self.deadlines.first().map_or(Instant::NEVER, |(at, _)| *at))
    }

    /// A client's query: on to the upstream under a fresh id, or SERVFAIL
    /// at once when too many wait. Unreadable queries are dropped.
    fn query(&mut self, now: Instant, client: C, mut bytes: Vec<u8>) {
        let Ok(msg) = wire::decode(&bytes) else {
            return;
        };
        let Some(question) = msg.questions.first().cloned() else {
            return;
        };
        if self.pending.len() >= self.config.in_flight_max {
            let bytes = servfail(&msg.header, &question);
            self.out.push_back(Output::Transmit(Transmit { to: To::Client(client), bytes }));
            return;
        }
        let id = loop {
            let id = self.rng.next_u32() as u16;
            if !self.pending.contains_key(&id) {
                break id;
            }
        };
        let deadline = now + self.config.timeout;
        self.pending.insert(id, Pending { client, client_id: msg.header.id, question, deadline });
        self.deadlines.insert((deadline, id));
        bytes[..2].copy_from_slice(&id.to_be_bytes());
        self.out.push_back(Output::Transmit(Transmit { to: To::Upstream, bytes }));
    }

    /// Bytes from the upstream: if they answer a query in flight (id and
    /// question), they go to its client with the client's own id restored.
    fn receive(&mut self, mut bytes: Vec<u8>) {
        let Ok(msg) = wire::decode(&bytes) else {
            return;
        };
        let Some(pending) = self.pending.get(&msg.header.id) else {
            return;
        };
        let Some(q) = msg.questions.first() else {
            return;
        };
        if !q.name.eq_ignore_case(&pending.question.name)
            || q.qtype != pending.question.qtype
            || q.qclass != pending.question.qclass
        {
            return;
        }
        let Some(pending) = self.pending.remove(&msg.header.id) else {
            return;
        };
        self.deadlines.remove(&(pending.deadline, msg.header.id));
        // The upstream sized its answer to the client's own query.
        bytes[..2].copy_from_slice(&pending.client_id.to_be_bytes());
        self.out.push_back(Output::Transmit(Transmit { to: To::Client(pending.client), bytes }));
    }

    /// Gives up on every query whose deadline has passed: each client gets
    /// a SERVFAIL.
    fn timeout(&mut self, now: Instant) {
        while let Some(&(at, id)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            if let Some(p) = self.pending.remove(&id) {
                let header = Header { id: p.client_id, rd: true, ..Header::default() };
                let bytes = servfail(&header, &p.question);
                self.out.push_back(Output::Transmit(Transmit { to: To::Client(p.client), bytes }));
            }
        }
    }
}

fn servfail(query: &Header, question: &Question) -> Vec<u8> {
    let mut m = Message {
        header: Header { id: query.id, qr: true, rd: query.rd, ra: true, ..Header::default() },
        questions: vec![question.clone()],
        ..Message::default()
    };
    m.set_rcode(Rcode::SERVFAIL);
    wire::encode(&m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::{Name, RType, CLASS_IN};

    fn query(id: u16, name: &str) -> Vec<u8> {
        wire::encode(&Message {
            header: Header { id, rd: true, ..Header::default() },
            questions: vec![Question { name: Name::from_ascii(name).unwrap(), qtype: RType::A, qclass: CLASS_IN }],
            ..Message::default()
        })
    }

    /// Everything one drain gives, and the timeout it ends with.
    fn drain<C: Clone>(f: &mut Forwarder<C>) -> (Vec<Transmit<To<C>>>, Instant) {
        let mut sent = Vec::new();
        loop {
            match f.poll_output() {
                Output::Transmit(t) => sent.push(t),
                Output::Timeout(at) => return (sent, at),
            }
        }
    }

    fn ask<C: Clone>(f: &mut Forwarder<C>, now: Instant, client: C, bytes: Vec<u8>) -> Vec<Transmit<To<C>>> {
        f.handle(now, Input::Query { client, bytes });
        drain(f).0
    }

    #[test]
    fn a_reply_goes_back_to_its_client_with_the_clients_id() {
        let mut f = Forwarder::new(ForwarderConfig::default(), 1);
        let sent = ask(&mut f, Instant::ZERO, "c1", query(7, "example.com"));
        let [Transmit { to: To::Upstream, bytes: up }] = &sent[..] else {
            panic!("expected one query for the upstream, got {sent:?}");
        };
        let mut reply = wire::decode(up).unwrap();
        reply.header.qr = true;
        f.handle(Instant::ZERO, Input::Receive { bytes: wire::encode(&reply) });
        let (sent, at) = drain(&mut f);
        let [Transmit { to: To::Client(client), bytes }] = &sent[..] else {
            panic!("expected one reply for the client, got {sent:?}");
        };
        assert_eq!(*client, "c1");
        assert_eq!(wire::decode(bytes).unwrap().header.id, 7);
        assert_eq!(f.in_flight(), 0);
        assert_eq!(at, Instant::NEVER, "nothing waits, so no timer");
    }

    #[test]
    fn a_reply_for_another_question_is_ignored() {
        let mut f = Forwarder::new(ForwarderConfig::default(), 1);
        let sent = ask(&mut f, Instant::ZERO, "c1", query(7, "example.com"));
        let up = &sent[0].bytes;
        let id = u16::from_be_bytes([up[0], up[1]]);
        f.handle(Instant::ZERO, Input::Receive { bytes: query(id, "evil.com") });
        assert!(drain(&mut f).0.is_empty());
        assert_eq!(f.in_flight(), 1);
    }

    #[test]
    fn unreadable_queries_and_replies_are_dropped_without_output() {
        let mut f: Forwarder<u8> = Forwarder::new(ForwarderConfig::default(), 1);
        assert!(ask(&mut f, Instant::ZERO, 1, vec![1, 2, 3]).is_empty());
        f.handle(Instant::ZERO, Input::Receive { bytes: vec![0xff; 5] });
        assert_eq!(drain(&mut f), (Vec::new(), Instant::NEVER));
    }

    #[test]
    fn timeouts_answer_servfail_and_the_limit_holds() {
        let cfg = ForwarderConfig { timeout: Duration::from_secs(1), in_flight_max: 2 };
        let mut f = Forwarder::new(cfg, 1);
        ask(&mut f, Instant::ZERO, 1, query(1, "a.com"));
        ask(&mut f, Instant::ZERO, 2, query(2, "b.com"));
        f.handle(Instant::ZERO, Input::Query { client: 3, bytes: query(3, "c.com") });
        let (sent, at) = drain(&mut f);
        let [Transmit { to: To::Client(3), bytes: busy }] = &sent[..] else {
            panic!("the third query is over the limit: {sent:?}");
        };
        assert_eq!(wire::decode(busy).unwrap().rcode(), Rcode::SERVFAIL);
        assert_eq!(at, Instant::from_micros(1_000_000));
        f.handle(Instant::from_micros(999_999), Input::Timeout);
        assert!(drain(&mut f).0.is_empty(), "an early timeout does nothing");
        f.handle(Instant::from_micros(1_000_000), Input::Timeout);
        let (failed, at) = drain(&mut f);
        assert_eq!(failed.len(), 2);
        assert!(failed.iter().all(|t| wire::decode(&t.bytes).unwrap().rcode() == Rcode::SERVFAIL));
        assert_eq!(f.in_flight(), 0);
        assert_eq!(at, Instant::NEVER);
    }
}
