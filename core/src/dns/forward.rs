//! Forwarding of queries outside the node's zones to an upstream resolver,
//! the way Docker's 127.0.0.11 hands unknown names on.
//!
//! A sans-IO machine: the adapter gives it a client's query
//! ([`Forwarder::forward`]), sends the bytes it returns to the upstream,
//! gives it whatever the upstream answers ([`Forwarder::on_upstream_reply`])
//! and calls [`Forwarder::on_timeout`] at [`Forwarder::poll_timeout`]. Each
//! forwarded query gets a fresh random id so an off-path attacker cannot
//! guess it; a reply is only accepted if its id *and* question match.

use super::message::{Header, Message, Question, Rcode};
use super::wire;
use crate::rand::Rng;
use crate::time::{Duration, Instant};
use std::collections::{BTreeSet, HashMap};

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

struct Pending<C> {
    client: C,
    client_id: u16,
    question: Question,
    deadline: Instant,
}

/// What [`Forwarder::forward`] decided.
#[derive(Debug, PartialEq, Eq)]
pub enum ForwardAction<C> {
    /// Send these bytes to the upstream.
    ToUpstream(Vec<u8>),
    /// Answer the client with these bytes right away (SERVFAIL: too busy).
    ToClient(C, Vec<u8>),
    /// Nothing to do (the query could not be read).
    Nothing,
}

/// Tracks queries sent upstream. `C` is whatever identifies a client to the
/// adapter (a socket address, a TCP connection id).
pub struct Forwarder<C> {
    config: ForwarderConfig,
    rng: Rng,
    pending: HashMap<u16, Pending<C>>,
    deadlines: BTreeSet<(Instant, u16)>,
}

impl<C: Clone> Forwarder<C> {
    /// A forwarder whose ids come from `seed`.
    pub fn new(config: ForwarderConfig, seed: u64) -> Self {
        Forwarder { config, rng: Rng::new(seed), pending: HashMap::new(), deadlines: BTreeSet::new() }
    }

    /// Queries waiting on the upstream.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Takes a client's query for the upstream.
    pub fn forward(&mut self, now: Instant, client: C, query: &[u8]) -> ForwardAction<C> {
        let Ok(msg) = wire::decode(query) else {
            return ForwardAction::Nothing;
        };
        let Some(question) = msg.questions.first().cloned() else {
            return ForwardAction::Nothing;
        };
        if self.pending.len() >= self.config.in_flight_max {
            return ForwardAction::ToClient(client, servfail(&msg.header, &question));
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
        let mut bytes = query.to_vec();
        bytes[..2].copy_from_slice(&id.to_be_bytes());
        ForwardAction::ToUpstream(bytes)
    }

    /// Takes bytes from the upstream; returns the client and the reply to
    /// send it, with the client's own id restored.
    pub fn on_upstream_reply(&mut self, reply: &[u8]) -> Option<(C, Vec<u8>)> {
        let msg = wire::decode(reply).ok()?;
        let pending = self.pending.get(&msg.header.id)?;
        let q = msg.questions.first()?;
        if !q.name.eq_ignore_case(&pending.question.name)
            || q.qtype != pending.question.qtype
            || q.qclass != pending.question.qclass
        {
            return None;
        }
        let pending = self.pending.remove(&msg.header.id)?;
        self.deadlines.remove(&(pending.deadline, msg.header.id));
        let mut bytes = reply.to_vec();
        bytes[..2].copy_from_slice(&pending.client_id.to_be_bytes());
        Some((pending.client, bytes))
    }

    /// When [`Forwarder::on_timeout`] next has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.first().map(|(at, _)| *at)
    }

    /// Gives up on every query whose deadline has passed: each client gets
    /// a SERVFAIL.
    pub fn on_timeout(&mut self, now: Instant) -> Vec<(C, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some(&(at, id)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            if let Some(p) = self.pending.remove(&id) {
                let header = Header { id: p.client_id, rd: true, ..Header::default() };
                out.push((p.client, servfail(&header, &p.question)));
            }
        }
        out
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

    #[test]
    fn a_reply_goes_back_to_its_client_with_the_clients_id() {
        let mut f = Forwarder::new(ForwarderConfig::default(), 1);
        let ForwardAction::ToUpstream(up) = f.forward(Instant::ZERO, "c1", &query(7, "example.com")) else {
            panic!("expected a query for the upstream");
        };
        let mut reply = wire::decode(&up).unwrap();
        reply.header.qr = true;
        let (client, bytes) = f.on_upstream_reply(&wire::encode(&reply)).unwrap();
        assert_eq!(client, "c1");
        assert_eq!(wire::decode(&bytes).unwrap().header.id, 7);
        assert_eq!(f.in_flight(), 0);
    }

    #[test]
    fn a_reply_for_another_question_is_ignored() {
        let mut f = Forwarder::new(ForwarderConfig::default(), 1);
        let ForwardAction::ToUpstream(up) = f.forward(Instant::ZERO, "c1", &query(7, "example.com")) else {
            panic!();
        };
        let id = u16::from_be_bytes([up[0], up[1]]);
        assert!(f.on_upstream_reply(&query(id, "evil.com")).is_none());
        assert_eq!(f.in_flight(), 1);
    }

    #[test]
    fn timeouts_answer_servfail_and_the_limit_holds() {
        let cfg = ForwarderConfig { timeout: Duration::from_secs(1), in_flight_max: 2 };
        let mut f = Forwarder::new(cfg, 1);
        f.forward(Instant::ZERO, 1, &query(1, "a.com"));
        f.forward(Instant::ZERO, 2, &query(2, "b.com"));
        let ForwardAction::ToClient(3, busy) = f.forward(Instant::ZERO, 3, &query(3, "c.com")) else {
            panic!("the third query is over the limit");
        };
        assert_eq!(wire::decode(&busy).unwrap().rcode(), Rcode::SERVFAIL);
        assert_eq!(f.poll_timeout(), Some(Instant::from_micros(1_000_000)));
        assert!(f.on_timeout(Instant::from_micros(999_999)).is_empty());
        let failed = f.on_timeout(Instant::from_micros(1_000_000));
        assert_eq!(failed.len(), 2);
        assert_eq!(f.in_flight(), 0);
    }
}
