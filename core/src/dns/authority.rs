//! The authority: one query, the record store and the wall-clock time in;
//! the response bytes (or "forward this", or "drop it") out.
//!
//! One entry point, [`Authority::answer`], writes the reply into a buffer
//! the caller owns and reuses, and says with a [`Verdict`] whether there is
//! a reply to send, a query to forward, or nothing. Inside, common queries
//! take a fast path that copies the question's bytes instead of building a
//! [`Message`]; it produces the same bytes as the general path (the
//! property tests compare the two with [`AuthorityConfig::fast_path`] off).
//!
//! What it does, and why:
//! - Answers with each RRset's *remaining* TTL, rotating multi-record sets
//!   (round robin) and following CNAMEs it holds.
//! - NXDOMAIN for a missing or expired name; NODATA (NOERROR, empty answer)
//!   for a name that exists without the asked type. Both carry an SOA in the
//!   authority section so resolvers can cache them (RFC 2308).
//! - AA set, the question echoed with the client's letter case, EDNS0
//!   echoed (RFC 6891), the client's UDP size respected (512 without EDNS),
//!   TC when the answer does not fit.
//! - FORMERR for a query whose header parses but body does not, NOTIMP for
//!   opcodes other than QUERY, nothing at all for fewer than 12 bytes or
//!   for a message that is itself a response (so two servers can never
//!   bounce errors at each other).
//! - With zones configured, names outside them are forwarded when an
//!   upstream is set, REFUSED otherwise.

use super::message::*;
use super::name::Name;
use super::store::{RRset, RecordStore};
use super::wire::{self, Encoder, Section, MESSAGE_MAX_BYTES};
use crate::time::UnixMillis;

/// UDP payload size without EDNS (RFC 1035).
pub const CLASSIC_UDP_BYTES: usize = 512;
/// Longest CNAME chain followed inside one answer.
pub const CNAME_CHAIN_MAX: usize = 8;

/// A zone the node is the authority for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Zone {
    /// The zone apex, e.g. `rumor.test.`.
    pub apex: Name,
}

/// How the authority answers.
#[derive(Clone, Debug)]
pub struct AuthorityConfig {
    /// Zones served. Empty: every name the store holds is answered and any
    /// other name gets NXDOMAIN, as the original rumor does.
    pub zones: Vec<Zone>,
    /// Forward names outside `zones` instead of refusing them.
    pub forward_outside_zones: bool,
    /// Largest UDP response we send, whatever the client offers.
    pub udp_max_bytes: u16,
    /// TTL of negative answers and of the SOA that carries it (RFC 2308).
    pub negative_ttl: u32,
    /// SOA refresh/retry/expire handed out with negative answers.
    pub soa_timers: [u32; 3],
    /// Answer common queries on the fast path (same bytes, no [`Message`]
    /// built). On by default; off only to compare the two paths in tests.
    pub fast_path: bool,
}

impl Default for AuthorityConfig {
    fn default() -> Self {
        AuthorityConfig {
            zones: Vec::new(),
            forward_outside_zones: false,
            udp_max_bytes: 1232,
            negative_ttl: 30,
            soa_timers: [3600, 600, 86400],
            fast_path: true,
        }
    }
}

/// Which transport a query came over; it sets the response size limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Datagrams: limit from EDNS, else 512 bytes.
    Udp,
    /// Stream: 65535 bytes.
    Tcp,
}

/// What to do with a query given to [`Authority::answer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The reply is in the caller's buffer: send it back to the client.
    Reply,
    /// The name is outside our zones and forwarding is on: hand the query
    /// (unchanged) to the forwarder. The buffer is left empty.
    Forward,
    /// Send nothing (not a query, or not even a header). The buffer is left
    /// empty.
    Drop,
}

/// Counters the authority keeps; the adapter exports them as metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthorityStats {
    /// Queries answered, by response code.
    pub by_rcode: std::collections::BTreeMap<Rcode, u64>,
    /// Queries answered, by question type.
    pub by_qtype: std::collections::BTreeMap<RType, u64>,
    /// Undecodable queries, by decode error kind.
    pub decode_errors: std::collections::BTreeMap<&'static str, u64>,
    /// Answers sent with TC set.
    pub truncated: u64,
    /// Queries dropped without an answer.
    pub dropped: u64,
    /// Queries answered on the fast path (also counted by type and code).
    pub fast_path: u64,
}

/// The answering machine. It keeps a rotation counter for round robin and
/// statistics; everything else comes in with each query.
#[derive(Debug)]
pub struct Authority {
    config: AuthorityConfig,
    /// Lower-case wire form of each zone apex, for the fast path.
    zone_keys: Vec<Vec<u8>>,
    rotation: usize,
    stats: AuthorityStats,
}

impl Authority {
    /// A new authority.
    pub fn new(config: AuthorityConfig) -> Self {
        let zone_keys = config.zones.iter().map(|z| z.apex.to_lowercase().as_wire().to_vec()).collect();
        Authority { config, zone_keys, rotation: 0, stats: AuthorityStats::default() }
    }

    /// Counters so far.
    pub fn stats(&self) -> &AuthorityStats {
        &self.stats
    }

    /// The configuration.
    pub fn config(&self) -> &AuthorityConfig {
        &self.config
    }

    /// Answers one query received over `transport` at wall time `now_ms`
    /// from `store`. The reply, if any, is written into `out` (cleared
    /// first; a server keeps one buffer per slot, so the common case
    /// allocates nothing); the verdict says whether `out` holds a reply to
    /// send, the query is to be forwarded, or nothing is to be sent.
    pub fn answer(
        &mut self,
        now_ms: UnixMillis,
        query: &[u8],
        transport: Transport,
        store: &RecordStore,
        out: &mut Vec<u8>,
    ) -> Verdict {
        out.clear();
        if self.config.fast_path && self.try_fast(query, transport, store, now_ms, out) {
            self.stats.fast_path += 1;
            return Verdict::Reply;
        }
        self.answer_general(query, transport, store, now_ms, out)
    }

    /// The general path: decode the whole message, build the response,
    /// encode it under the size limit.
    fn answer_general(
        &mut self,
        query: &[u8],
        transport: Transport,
        store: &RecordStore,
        now_ms: UnixMillis,
        out: &mut Vec<u8>,
    ) -> Verdict {
        let raw = match wire::decode_header(query) {
            Ok(raw) => raw,
            Err(e) => {
                self.count_decode_error(e.kind.as_str());
                self.stats.dropped += 1;
                return Verdict::Drop;
            }
        };
        if raw.header.qr {
            self.stats.dropped += 1;
            return Verdict::Drop;
        }
        let msg = match wire::decode(query) {
            Ok(m) => m,
            Err(e) => {
                self.count_decode_error(e.kind.as_str());
                self.bare_error(&raw.header, Rcode::FORMERR, out);
                return Verdict::Reply;
            }
        };
        let response = self.respond(&msg, store, now_ms);
        let Some(response) = response else {
            return Verdict::Forward;
        };
        let limit = match transport {
            Transport::Tcp => MESSAGE_MAX_BYTES,
            Transport::Udp => match &msg.edns {
                Some(e) => (e.udp_size as usize).max(CLASSIC_UDP_BYTES).min(self.config.udp_max_bytes as usize),
                None => CLASSIC_UDP_BYTES,
            },
        };
        let (bytes, truncated) = encode_response(&response, limit);
        if truncated {
            self.stats.truncated += 1;
        }
        *self.stats.by_rcode.entry(response.rcode()).or_default() += 1;
        out.extend_from_slice(&bytes);
        Verdict::Reply
    }

    fn count_decode_error(&mut self, kind: &'static str) {
        *self.stats.decode_errors.entry(kind).or_default() += 1;
    }

    fn bare_error(&mut self, query: &Header, rcode: Rcode, out: &mut Vec<u8>) {
        *self.stats.by_rcode.entry(rcode).or_default() += 1;
        let header = Header {
            id: query.id,
            qr: true,
            opcode: query.opcode,
            rd: query.rd,
            rcode: rcode.0 as u8,
            ..Header::default()
        };
        out.extend_from_slice(&wire::encode(&Message { header, ..Message::default() }));
    }

    /// Builds the response message; `None` means "forward it".
    fn respond(&mut self, q: &Message, store: &RecordStore, now_ms: UnixMillis) -> Option<Message> {
        let mut r = Message {
            header: Header {
                id: q.header.id,
                qr: true,
                opcode: q.header.opcode,
                rd: q.header.rd,
                cd: q.header.cd,
                ..Header::default()
            },
            questions: q.questions.clone(),
            edns: q.edns.as_ref().map(|e| Edns {
                udp_size: self.config.udp_max_bytes,
                dnssec_ok: e.dnssec_ok,
                ..Edns::default()
            }),
            ..Message::default()
        };
        if Opcode::from_u8(q.header.opcode) != Opcode::Query {
            r.set_rcode(Rcode::NOTIMP);
            return Some(r);
        }
        if q.edns.as_ref().is_some_and(|e| e.version > 0) {
            r.set_rcode(Rcode::BADVERS);
            r.questions.clear();
            return Some(r);
        }
        if q.questions.len() != 1 || !q.answers.is_empty() || !q.authorities.is_empty() {
            r.set_rcode(Rcode::FORMERR);
            return Some(r);
        }
        let question = &q.questions[0];
        *self.stats.by_qtype.entry(question.qtype).or_default() += 1;
        if question.qclass != CLASS_IN && question.qclass != CLASS_ANY {
            r.set_rcode(Rcode::REFUSED);
            return Some(r);
        }
        if matches!(question.qtype, RType::AXFR | RType(251) | RType::OPT) {
            r.set_rcode(if question.qtype == RType::OPT { Rcode::FORMERR } else { Rcode::REFUSED });
            return Some(r);
        }
        let zone = self.zone_of(&question.name).cloned();
        if zone.is_none() && !self.config.zones.is_empty() {
            if self.config.forward_outside_zones {
                return None;
            }
            r.set_rcode(Rcode::REFUSED);
            return Some(r);
        }
        r.header.aa = true;
        self.answer_question(&mut r, question, zone.as_ref(), store, now_ms);
        Some(r)
    }

    fn zone_of(&self, name: &Name) -> Option<&Zone> {
        self.config.zones.iter().filter(|z| name.is_within(&z.apex)).max_by_key(|z| z.apex.wire_len())
    }

    fn answer_question(
        &mut self,
        r: &mut Message,
        question: &Question,
        zone: Option<&Zone>,
        store: &RecordStore,
        now_ms: UnixMillis,
    ) {
        let apex = match zone {
            Some(z) => z.apex.clone(),
            None => question.name.parent().unwrap_or_else(Name::root),
        };
        // The apex of a configured zone always has an SOA and an NS.
        let at_apex = zone.is_some() && question.name.eq_ignore_case(&apex);
        let mut current = question.name.clone();
        let mut rcode = Rcode::NOERROR;
        let mut answered = false;
        for step in 0..=CNAME_CHAIN_MAX {
            let mut found = false;
            if question.qtype == RType::ANY {
                for set in store.rrsets_at(&current, now_ms) {
                    self.push_rrset(&mut r.answers, &current, set, now_ms);
                    found = true;
                }
            } else if let Some(set) = store.get(&current, question.qtype, now_ms) {
                self.push_rrset(&mut r.answers, &current, set, now_ms);
                found = true;
            }
            if step == 0 && at_apex && !found {
                found = self.push_apex_records(r, question.qtype, &apex, store);
            }
            if found {
                answered = true;
                break;
            }
            if question.qtype != RType::CNAME {
                if let Some(set) = store.get(&current, RType::CNAME, now_ms) {
                    self.push_rrset(&mut r.answers, &current, set, now_ms);
                    let RData::Cname(target) = &set.data[0] else {
                        unreachable!("a CNAME RRset holds CNAME data");
                    };
                    let target = target.clone();
                    let inside = match zone {
                        Some(_) => self.zone_of(&target).is_some(),
                        // Without zones we only know the names we hold: a
                        // target we have nothing for is someone else's.
                        None => store.name_exists(&target, now_ms),
                    };
                    answered = true;
                    if !inside || step == CNAME_CHAIN_MAX {
                        break;
                    }
                    current = target;
                    continue;
                }
            }
            // Nothing of the type here: NODATA if the name exists, NXDOMAIN
            // otherwise (after a CNAME, the last name decides: RFC 6604).
            let exists = store.name_exists(&current, now_ms) || (step == 0 && at_apex);
            if !exists {
                rcode = Rcode::NXDOMAIN;
            }
            break;
        }
        if !answered || rcode != Rcode::NOERROR {
            r.authorities.push(self.soa_record(&apex, store));
        } else {
            self.add_glue(r, store, now_ms);
        }
        r.set_rcode(rcode);
    }

    /// Where a set of `n` records starts this time (round robin): the
    /// counter moves only for sets of more than one record, the same on
    /// the fast and the general path.
    fn rotate(&mut self, n: usize) -> usize {
        if n > 1 {
            self.rotation = self.rotation.wrapping_add(1);
            self.rotation % n
        } else {
            0
        }
    }

    /// Appends an RRset rotated by the round-robin counter, with the owner
    /// spelled as it was asked and the remaining TTL.
    fn push_rrset(&mut self, out: &mut Vec<Record>, owner: &Name, set: &RRset, now_ms: UnixMillis) {
        let ttl = set.remaining_ttl(now_ms);
        let n = set.data.len();
        let start = self.rotate(n);
        out.reserve(n);
        for i in 0..n {
            out.push(Record { name: owner.clone(), class: CLASS_IN, ttl, data: set.data[(start + i) % n].clone() });
        }
    }

    /// SOA and NS of a configured zone's apex; true if it added any.
    fn push_apex_records(&self, r: &mut Message, qtype: RType, apex: &Name, store: &RecordStore) -> bool {
        let mut added = false;
        if matches!(qtype, RType::SOA | RType::ANY) {
            let mut soa = self.soa_record(apex, store);
            soa.name = r.questions[0].name.clone();
            r.answers.push(soa);
            added = true;
        }
        if matches!(qtype, RType::NS | RType::ANY) {
            r.answers.push(Record {
                name: r.questions[0].name.clone(),
                class: CLASS_IN,
                ttl: 3600,
                data: RData::Ns(self.mname(apex)),
            });
            added = true;
        }
        added
    }

    fn mname(&self, apex: &Name) -> Name {
        apex.prepend(b"ns").unwrap_or_else(|_| apex.clone())
    }

    fn soa_record(&self, apex: &Name, store: &RecordStore) -> Record {
        let [refresh, retry, expire] = self.config.soa_timers;
        Record {
            name: apex.clone(),
            class: CLASS_IN,
            ttl: self.config.negative_ttl,
            data: RData::Soa(Soa {
                mname: self.mname(apex),
                rname: apex.prepend(b"hostmaster").unwrap_or_else(|_| apex.clone()),
                serial: store.generation(),
                refresh,
                retry,
                expire,
                minimum: self.config.negative_ttl,
            }),
        }
    }

    /// Addresses of MX, SRV and NS targets we hold go in the additional
    /// section, sparing the client a round trip.
    fn add_glue(&self, r: &mut Message, store: &RecordStore, now_ms: UnixMillis) {
        let targets: Vec<Name> = r
            .answers
            .iter()
            .filter_map(|rec| match &rec.data {
                RData::Mx { exchange, .. } => Some(exchange.clone()),
                RData::Srv { target, .. } => Some(target.clone()),
                RData::Ns(n) => Some(n.clone()),
                _ => None,
            })
            .collect();
        for target in targets.iter().take(16) {
            for rtype in [RType::A, RType::AAAA] {
                if let Some(set) = store.get(target, rtype, now_ms) {
                    let ttl = set.remaining_ttl(now_ms);
                    for d in set.data.iter().take(8) {
                        r.additionals.push(Record { name: target.clone(), class: CLASS_IN, ttl, data: d.clone() });
                    }
                }
            }
        }
    }
}

/// Room for a lower-cased query name.
type NameBuf = [u8; super::name::NAME_MAX_BYTES];

/// The SOA's responsible-mailbox label, in wire form.
const HOSTMASTER_LABEL: &[u8] = b"\x0ahostmaster";

impl Authority {
    /// The query path for the common case, without building a [`Message`]:
    /// one question of class IN, at most an EDNS0 OPT, an answer that is a
    /// plain RRset or a negative answer, fitting the size limit. The
    /// response is written into `out` by copying the question's bytes and
    /// pointing at them, and is the same message the general path builds.
    /// Returns false, having counted nothing, for anything else.
    fn try_fast(
        &mut self,
        q: &[u8],
        transport: Transport,
        store: &RecordStore,
        now_ms: UnixMillis,
        out: &mut Vec<u8>,
    ) -> bool {
        if q.len() < 17 {
            return false;
        }
        let flags = u16::from_be_bytes([q[2], q[3]]);
        // QR=0, OPCODE=QUERY; qdcount 1, no answers or authorities.
        let counts = u64::from_be_bytes([q[4], q[5], q[6], q[7], q[8], q[9], 0, 0]);
        if flags & 0xf800 != 0 || counts != 0x0001_0000_0000_0000 {
            return false;
        }
        let arcount = u16::from_be_bytes([q[10], q[11]]);
        if arcount > 1 {
            return false;
        }
        // The name: plain labels only, lower-cased into `key`.
        let mut key: NameBuf = [0; super::name::NAME_MAX_BYTES];
        let mut pos = 12;
        let mut first_label_end = 0;
        loop {
            let Some(&len) = q.get(pos) else { return false };
            let len = len as usize;
            let k = pos - 12;
            if len > 63 || k + 1 + len >= key.len() || pos + 1 + len > q.len() {
                return false;
            }
            key[k] = len as u8;
            if len == 0 {
                break;
            }
            for i in 0..len {
                key[k + 1 + i] = q[pos + 1 + i].to_ascii_lowercase();
            }
            pos += 1 + len;
            if first_label_end == 0 {
                first_label_end = pos;
            }
        }
        let name_len = pos + 1 - 12;
        let key = &key[..name_len];
        let qend = pos + 5;
        if qend > q.len() {
            return false;
        }
        let qtype = RType(u16::from_be_bytes([q[pos + 1], q[pos + 2]]));
        let qclass = u16::from_be_bytes([q[pos + 3], q[pos + 4]]);
        if qclass != CLASS_IN || matches!(qtype, RType::ANY | RType::AXFR | RType::OPT | RType(251)) {
            return false;
        }
        // EDNS: exactly one well-formed OPT of version 0 ends the message.
        let mut edns: Option<(u16, bool)> = None;
        if arcount == 1 {
            let o = qend;
            if q.len() < o + 11 || q[o] != 0 || q[o + 1] != 0 || q[o + 2] != 41 || q[o + 6] != 0 {
                return false;
            }
            let udp_size = u16::from_be_bytes([q[o + 3], q[o + 4]]);
            let dnssec_ok = q[o + 7] & 0x80 != 0;
            let rdlen = u16::from_be_bytes([q[o + 9], q[o + 10]]) as usize;
            let mut p = o + 11;
            if p + rdlen != q.len() {
                return false;
            }
            while p < q.len() {
                if p + 4 > q.len() {
                    return false;
                }
                p += 4 + u16::from_be_bytes([q[p + 2], q[p + 3]]) as usize;
            }
            if p != q.len() {
                return false;
            }
            edns = Some((udp_size, dnssec_ok));
        } else if qend != q.len() {
            return false;
        }
        // Zones: the longest configured apex the name lies in; the apex
        // itself (synthesised SOA/NS) takes the general path.
        let mut apex_offset = match first_label_end {
            0 => None,
            end => Some(end - 12),
        };
        if !self.zone_keys.is_empty() {
            let Some(off) = self.zone_offset(key) else { return false };
            if off == 0 {
                return false;
            }
            apex_offset = Some(off);
        }
        // `hostmaster.<apex>` must stay a legal name; the general path
        // knows what to write when it would not be.
        if apex_offset.is_some_and(|off| key.len() - off + HOSTMASTER_LABEL.len() > super::name::NAME_MAX_BYTES) {
            return false;
        }
        let limit = match transport {
            Transport::Tcp => MESSAGE_MAX_BYTES,
            Transport::Udp => match edns {
                Some((size, _)) => (size as usize).max(CLASSIC_UDP_BYTES).min(self.config.udp_max_bytes as usize),
                None => CLASSIC_UDP_BYTES,
            },
        };
        let hit = store.get_by_key(key, qtype, now_ms);
        if let Some(set) = hit {
            // Types whose answers carry glue take the general path.
            if matches!(set.rtype, RType::MX | RType::SRV | RType::NS) {
                return false;
            }
        } else if qtype != RType::CNAME && store.get_by_key(key, RType::CNAME, now_ms).is_some() {
            return false;
        }
        // Header and question, copied.
        out.clear();
        out.extend_from_slice(&q[..2]);
        let rd_cd = flags & 0x0110;
        out.extend_from_slice(&(0x8400 | rd_cd).to_be_bytes());
        out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
        out.extend_from_slice(&q[12..qend]);
        let rcode;
        match hit {
            Some(set) => {
                rcode = Rcode::NOERROR;
                let ttl = set.remaining_ttl(now_ms);
                let n = set.data.len();
                let start = self.rotate(n);
                for i in 0..n {
                    out.extend_from_slice(&[0xc0, 12]);
                    out.extend_from_slice(&set.rtype.0.to_be_bytes());
                    out.extend_from_slice(&CLASS_IN.to_be_bytes());
                    out.extend_from_slice(&ttl.to_be_bytes());
                    match &set.data[(start + i) % n] {
                        RData::A(ip) => {
                            out.extend_from_slice(&[0, 4]);
                            out.extend_from_slice(&ip.octets());
                        }
                        RData::Aaaa(ip) => {
                            out.extend_from_slice(&[0, 16]);
                            out.extend_from_slice(&ip.octets());
                        }
                        other => {
                            let rdata = wire::encode_rdata(other);
                            out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
                            out.extend_from_slice(&rdata);
                        }
                    }
                }
                out[6..8].copy_from_slice(&(n as u16).to_be_bytes());
            }
            None => {
                rcode = if store.exists_by_key(key, now_ms) { Rcode::NOERROR } else { Rcode::NXDOMAIN };
                // The SOA of the apex: the parent of the name by default.
                let owner_at = apex_offset.map(|off| 12 + off);
                let apex_ref: [u8; 2];
                let apex: &[u8] = match owner_at {
                    Some(at) if key[at - 12] != 0 => {
                        apex_ref = (0xc000 | at as u16).to_be_bytes();
                        &apex_ref
                    }
                    _ => &[0],
                };
                out.extend_from_slice(apex);
                out.extend_from_slice(&RType::SOA.0.to_be_bytes());
                out.extend_from_slice(&CLASS_IN.to_be_bytes());
                out.extend_from_slice(&self.config.negative_ttl.to_be_bytes());
                let len_at = out.len();
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(&[2, b'n', b's']);
                out.extend_from_slice(apex);
                out.extend_from_slice(HOSTMASTER_LABEL);
                out.extend_from_slice(apex);
                let [refresh, retry, expire] = self.config.soa_timers;
                for v in [store.generation(), refresh, retry, expire, self.config.negative_ttl] {
                    out.extend_from_slice(&v.to_be_bytes());
                }
                let rdlen = (out.len() - len_at - 2) as u16;
                out[len_at..len_at + 2].copy_from_slice(&rdlen.to_be_bytes());
                out[8..10].copy_from_slice(&[0, 1]);
                out[3] |= rcode.0 as u8;
            }
        }
        if let Some((_, dnssec_ok)) = edns {
            out.push(0);
            out.extend_from_slice(&RType::OPT.0.to_be_bytes());
            out.extend_from_slice(&self.config.udp_max_bytes.to_be_bytes());
            out.extend_from_slice(&[0, 0, if dnssec_ok { 0x80 } else { 0 }, 0, 0, 0]);
            out[10..12].copy_from_slice(&[0, 1]);
        }
        if out.len() > limit {
            // Truncation is the general path's business.
            self.rotation = self.rotation.wrapping_sub(usize::from(hit.is_some_and(|s| s.data.len() > 1)));
            out.clear();
            return false;
        }
        *self.stats.by_qtype.entry(qtype).or_default() += 1;
        *self.stats.by_rcode.entry(rcode).or_default() += 1;
        true
    }

    /// Offset within `key` where the longest matching zone apex starts.
    fn zone_offset(&self, key: &[u8]) -> Option<usize> {
        let mut best: Option<usize> = None;
        for apex in &self.zone_keys {
            if apex.len() > key.len() {
                continue;
            }
            let off = key.len() - apex.len();
            if key[off..] != apex[..] {
                continue;
            }
            let mut p = 0;
            while p < off {
                p += 1 + key[p] as usize;
            }
            if p == off && best.is_none_or(|b| off < b) {
                best = Some(off);
            }
        }
        best
    }
}

/// Encodes a response under `limit`; if the answer does not fit, the
/// answer is cut at an RRset-agnostic record boundary and TC is set.
fn encode_response(r: &Message, limit: usize) -> (Vec<u8>, bool) {
    let mut e = Encoder::new(&r.header, limit, r.edns.as_ref());
    for q in &r.questions {
        if e.question(q).is_err() {
            e.set_truncated();
            return (e.finish(r.edns.as_ref()), true);
        }
    }
    for rec in &r.answers {
        if e.record(Section::Answer, rec).is_err() {
            e.set_truncated();
            return (e.finish(r.edns.as_ref()), true);
        }
    }
    for rec in &r.authorities {
        if e.record(Section::Authority, rec).is_err() {
            e.set_truncated();
            return (e.finish(r.edns.as_ref()), true);
        }
    }
    for rec in &r.additionals {
        if e.record(Section::Additional, rec).is_err() {
            break;
        }
    }
    (e.finish(r.edns.as_ref()), false)
}
