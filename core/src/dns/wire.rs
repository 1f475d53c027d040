//! The DNS wire format: decoding hostile bytes into a [`Message`] and
//! encoding a [`Message`] with name compression and a size limit.
//!
//! Decoding never panics and never allocates more than the input can
//! justify: section counts are checked against the bytes left, compression
//! pointers may only point backwards and are followed at most
//! [`POINTER_HOPS_MAX`] times, labels are at most 63 bytes and names 255.
//! Every error carries the offset where it was found.

use super::message::*;
use super::name::{Name, LABEL_MAX_BYTES, NAME_MAX_BYTES};
use core::fmt;
use core::net::{Ipv4Addr, Ipv6Addr};
use nom::bytes::complete::take;
use nom::number::complete::{be_u16, be_u32, u8 as nom_u8};
use nom::IResult;

/// Largest DNS message (TCP length prefix is 16 bits).
pub const MESSAGE_MAX_BYTES: usize = 65_535;
/// Size of the fixed header.
pub const HEADER_BYTES: usize = 12;
/// Most compression pointers followed while reading one name.
pub const POINTER_HOPS_MAX: usize = 64;
/// Smallest possible record (root name, type, class, ttl, rdlength).
const RECORD_MIN_BYTES: usize = 11;
/// Smallest possible question (root name, type, class).
const QUESTION_MIN_BYTES: usize = 5;
/// Most names remembered for compression while encoding one message; past
/// it names are written in full, which is correct, only larger.
const COMPRESSION_ENTRIES_MAX: usize = 256;

/// What went wrong while decoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeErrorKind {
    /// The message ended in the middle of a field.
    Truncated,
    /// A compression pointer pointed at or after itself.
    ForwardPointer,
    /// More than [`POINTER_HOPS_MAX`] pointers in one name.
    TooManyPointers,
    /// A label type other than plain (00) or pointer (11).
    BadLabelType,
    /// A name longer than 255 bytes once decompressed.
    NameTooLong,
    /// Rdata whose length does not match its type's layout.
    BadRdata,
    /// More than one OPT record, or an OPT record not owned by the root.
    BadOpt,
    /// Bytes left over after the last section.
    TrailingBytes,
    /// A message larger than 65535 bytes.
    TooLarge,
}

impl fmt::Display for DecodeErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DecodeErrorKind::Truncated => "truncated",
            DecodeErrorKind::ForwardPointer => "compression pointer does not point backwards",
            DecodeErrorKind::TooManyPointers => "too many compression pointers",
            DecodeErrorKind::BadLabelType => "unknown label type",
            DecodeErrorKind::NameTooLong => "name longer than 255 bytes",
            DecodeErrorKind::BadRdata => "rdata does not match its type",
            DecodeErrorKind::BadOpt => "misplaced or repeated OPT record",
            DecodeErrorKind::TrailingBytes => "trailing bytes after the message",
            DecodeErrorKind::TooLarge => "message larger than 65535 bytes",
        })
    }
}

impl DecodeErrorKind {
    /// A short stable label, for metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            DecodeErrorKind::Truncated => "truncated",
            DecodeErrorKind::ForwardPointer => "forward_pointer",
            DecodeErrorKind::TooManyPointers => "too_many_pointers",
            DecodeErrorKind::BadLabelType => "bad_label_type",
            DecodeErrorKind::NameTooLong => "name_too_long",
            DecodeErrorKind::BadRdata => "bad_rdata",
            DecodeErrorKind::BadOpt => "bad_opt",
            DecodeErrorKind::TrailingBytes => "trailing_bytes",
            DecodeErrorKind::TooLarge => "too_large",
        }
    }
}

/// A decode failure and the byte offset where it was detected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeError {
    /// Offset into the message.
    pub offset: usize,
    /// What was wrong there.
    pub kind: DecodeErrorKind,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at offset {}", self.kind, self.offset)
    }
}

impl std::error::Error for DecodeError {}

/// A read position in a whole message (names need the whole message to
/// follow compression pointers).
struct Reader<'a> {
    msg: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn err(&self, kind: DecodeErrorKind) -> DecodeError {
        DecodeError { offset: self.pos, kind }
    }

    fn run<T>(&mut self, parser: impl Fn(&'a [u8]) -> IResult<&'a [u8], T>) -> Result<T, DecodeError> {
        let input = &self.msg[self.pos..];
        match parser(input) {
            Ok((rest, value)) => {
                self.pos = self.msg.len() - rest.len();
                Ok(value)
            }
            Err(_) => Err(self.err(DecodeErrorKind::Truncated)),
        }
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        self.run(nom_u8)
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        self.run(be_u16)
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        self.run(be_u32)
    }
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        self.run(take(n))
    }
    fn remaining(&self) -> usize {
        self.msg.len() - self.pos
    }

    /// Reads a possibly compressed name starting at the current position.
    fn name(&mut self) -> Result<Name, DecodeError> {
        let mut wire = super::name::NameBytes::new();
        let mut pos = self.pos;
        let mut hops = 0usize;
        // Where reading resumes once the name is done: after the first
        // pointer, or after the root label if there is none.
        let mut resume: Option<usize> = None;
        loop {
            let len = *self.msg.get(pos).ok_or(DecodeError { offset: pos, kind: DecodeErrorKind::Truncated })? as usize;
            match len & 0xc0 {
                0x00 => {
                    if len == 0 {
                        wire.push(0);
                        self.pos = resume.unwrap_or(pos + 1);
                        return Ok(Name::from_wire_unchecked(wire));
                    }
                    debug_assert!(len <= LABEL_MAX_BYTES);
                    let label = self
                        .msg
                        .get(pos + 1..pos + 1 + len)
                        .ok_or(DecodeError { offset: pos, kind: DecodeErrorKind::Truncated })?;
                    if wire.len() + 1 + len + 1 > NAME_MAX_BYTES {
                        return Err(DecodeError { offset: pos, kind: DecodeErrorKind::NameTooLong });
                    }
                    wire.push(len as u8);
                    wire.extend_from_slice(label);
                    pos += 1 + len;
                }
                0xc0 => {
                    let low =
                        *self.msg.get(pos + 1).ok_or(DecodeError { offset: pos, kind: DecodeErrorKind::Truncated })?
                            as usize;
                    let target = ((len & 0x3f) << 8) | low;
                    if target >= pos {
                        return Err(DecodeError { offset: pos, kind: DecodeErrorKind::ForwardPointer });
                    }
                    hops += 1;
                    if hops > POINTER_HOPS_MAX {
                        return Err(DecodeError { offset: pos, kind: DecodeErrorKind::TooManyPointers });
                    }
                    if resume.is_none() {
                        resume = Some(pos + 2);
                    }
                    pos = target;
                }
                _ => return Err(DecodeError { offset: pos, kind: DecodeErrorKind::BadLabelType }),
            }
        }
    }
}

/// The header and the four section counts as they stand on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawHeader {
    /// The header fields.
    pub header: Header,
    /// QDCOUNT.
    pub qdcount: u16,
    /// ANCOUNT.
    pub ancount: u16,
    /// NSCOUNT.
    pub nscount: u16,
    /// ARCOUNT.
    pub arcount: u16,
}

/// Decodes only the 12-byte header; a server uses it to answer FORMERR to
/// a query whose body it cannot parse.
pub fn decode_header(msg: &[u8]) -> Result<RawHeader, DecodeError> {
    let mut r = Reader { msg, pos: 0 };
    let id = r.u16()?;
    let flags = r.u16()?;
    let header = Header {
        id,
        qr: flags & 0x8000 != 0,
        opcode: ((flags >> 11) & 0x0f) as u8,
        aa: flags & 0x0400 != 0,
        tc: flags & 0x0200 != 0,
        rd: flags & 0x0100 != 0,
        ra: flags & 0x0080 != 0,
        z: flags & 0x0040 != 0,
        ad: flags & 0x0020 != 0,
        cd: flags & 0x0010 != 0,
        rcode: (flags & 0x000f) as u8,
    };
    Ok(RawHeader { header, qdcount: r.u16()?, ancount: r.u16()?, nscount: r.u16()?, arcount: r.u16()? })
}

/// Decodes a whole message. Fails on trailing bytes.
pub fn decode(msg: &[u8]) -> Result<Message, DecodeError> {
    if msg.len() > MESSAGE_MAX_BYTES {
        return Err(DecodeError { offset: MESSAGE_MAX_BYTES, kind: DecodeErrorKind::TooLarge });
    }
    let raw = decode_header(msg)?;
    let mut r = Reader { msg, pos: HEADER_BYTES };
    let mut m = Message { header: raw.header, ..Message::default() };
    // Capacities are bounded by what the remaining bytes could hold, so a
    // forged count cannot make us allocate.
    let cap = |count: u16, min: usize, r: &Reader| (count as usize).min(r.remaining() / min);
    m.questions.reserve(cap(raw.qdcount, QUESTION_MIN_BYTES, &r));
    for _ in 0..raw.qdcount {
        let name = r.name()?;
        let qtype = RType(r.u16()?);
        let qclass = r.u16()?;
        m.questions.push(Question { name, qtype, qclass });
    }
    m.answers.reserve(cap(raw.ancount, RECORD_MIN_BYTES, &r));
    for _ in 0..raw.ancount {
        m.answers.push(read_record(&mut r)?.into_record(&r)?);
    }
    m.authorities.reserve(cap(raw.nscount, RECORD_MIN_BYTES, &r));
    for _ in 0..raw.nscount {
        m.authorities.push(read_record(&mut r)?.into_record(&r)?);
    }
    m.additionals.reserve(cap(raw.arcount, RECORD_MIN_BYTES, &r));
    for _ in 0..raw.arcount {
        let start = r.pos;
        match read_record(&mut r)? {
            Parsed::Opt(edns, owner_is_root) => {
                if m.edns.is_some() || !owner_is_root {
                    return Err(DecodeError { offset: start, kind: DecodeErrorKind::BadOpt });
                }
                m.edns = Some(edns);
            }
            other => m.additionals.push(other.into_record(&r)?),
        }
    }
    if r.remaining() != 0 {
        return Err(r.err(DecodeErrorKind::TrailingBytes));
    }
    Ok(m)
}

enum Parsed {
    Record(Record),
    Opt(Edns, bool),
}

impl Parsed {
    fn into_record(self, r: &Reader) -> Result<Record, DecodeError> {
        match self {
            Parsed::Record(rec) => Ok(rec),
            // OPT is only meaningful in the additional section.
            Parsed::Opt(..) => Err(r.err(DecodeErrorKind::BadOpt)),
        }
    }
}

fn read_record(r: &mut Reader) -> Result<Parsed, DecodeError> {
    let name = r.name()?;
    let rtype = RType(r.u16()?);
    let class = r.u16()?;
    let ttl = r.u32()?;
    let rdlength = r.u16()? as usize;
    let rdata_start = r.pos;
    if r.remaining() < rdlength {
        return Err(r.err(DecodeErrorKind::Truncated));
    }
    let rdata_end = rdata_start + rdlength;
    if rtype == RType::OPT {
        let mut options = Vec::new();
        while r.pos < rdata_end {
            let code = r.u16()?;
            let len = r.u16()? as usize;
            if r.pos + len > rdata_end {
                return Err(r.err(DecodeErrorKind::BadRdata));
            }
            options.push(EdnsOption { code, data: r.bytes(len)?.to_vec() });
        }
        let edns = Edns {
            udp_size: class,
            ext_rcode: (ttl >> 24) as u8,
            version: (ttl >> 16) as u8,
            dnssec_ok: ttl & 0x8000 != 0,
            options,
        };
        return Ok(Parsed::Opt(edns, name.is_root()));
    }
    let data = read_rdata(r, rtype, rdata_end)?;
    if r.pos != rdata_end {
        return Err(DecodeError { offset: rdata_start, kind: DecodeErrorKind::BadRdata });
    }
    Ok(Parsed::Record(Record { name, class, ttl, data }))
}

fn read_rdata(r: &mut Reader, rtype: RType, end: usize) -> Result<RData, DecodeError> {
    let start = r.pos;
    let bad = DecodeError { offset: start, kind: DecodeErrorKind::BadRdata };
    let len = end - start;
    // A name inside rdata must not run past the rdata.
    let name_in = |r: &mut Reader| -> Result<Name, DecodeError> {
        let n = r.name()?;
        if r.pos > end {
            return Err(bad);
        }
        Ok(n)
    };
    Ok(match rtype {
        RType::A => {
            if len != 4 {
                return Err(bad);
            }
            let b = r.bytes(4)?;
            RData::A(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
        }
        RType::AAAA => {
            if len != 16 {
                return Err(bad);
            }
            let b: [u8; 16] = r.bytes(16)?.try_into().map_err(|_| bad)?;
            RData::Aaaa(Ipv6Addr::from(b))
        }
        RType::CNAME => RData::Cname(name_in(r)?),
        RType::NS => RData::Ns(name_in(r)?),
        RType::PTR => RData::Ptr(name_in(r)?),
        RType::MX => {
            if len < 3 {
                return Err(bad);
            }
            let preference = r.u16()?;
            RData::Mx { preference, exchange: name_in(r)? }
        }
        RType::TXT => {
            let mut strings = Vec::new();
            while r.pos < end {
                let n = r.u8()? as usize;
                if r.pos + n > end {
                    return Err(bad);
                }
                strings.push(r.bytes(n)?.to_vec());
            }
            RData::Txt(strings)
        }
        RType::SRV => {
            if len < 7 {
                return Err(bad);
            }
            let priority = r.u16()?;
            let weight = r.u16()?;
            let port = r.u16()?;
            RData::Srv { priority, weight, port, target: name_in(r)? }
        }
        RType::SOA => {
            let mname = name_in(r)?;
            let rname = name_in(r)?;
            if end.saturating_sub(r.pos) != 20 {
                return Err(bad);
            }
            RData::Soa(Soa {
                mname,
                rname,
                serial: r.u32()?,
                refresh: r.u32()?,
                retry: r.u32()?,
                expire: r.u32()?,
                minimum: r.u32()?,
            })
        }
        _ => RData::Unknown { rtype, data: r.bytes(len)?.to_vec() },
    })
}

/// Decodes one record's rdata standing alone (names uncompressed), as the
/// record store persists and replicates it.
pub fn decode_rdata(rtype: RType, bytes: &[u8]) -> Result<RData, DecodeError> {
    if rtype == RType::OPT {
        return Err(DecodeError { offset: 0, kind: DecodeErrorKind::BadOpt });
    }
    let mut r = Reader { msg: bytes, pos: 0 };
    let data = read_rdata(&mut r, rtype, bytes.len())?;
    if r.pos != bytes.len() {
        return Err(r.err(DecodeErrorKind::BadRdata));
    }
    Ok(data)
}

/// Encodes one record's rdata standing alone, names uncompressed; the
/// inverse of [`decode_rdata`].
pub fn encode_rdata(data: &RData) -> Vec<u8> {
    let mut e = Encoder::new(&Header::default(), MESSAGE_MAX_BYTES, None);
    e.buf.clear();
    e.rdata_uncompressed(data);
    e.buf
}

/// Writes messages with name compression under a byte limit.
///
/// Sections must be written in order (question, answer, authority,
/// additional); [`Encoder::finish`] patches the counts. A record that does
/// not fit is rolled back whole, so the output is always a valid message.
pub struct Encoder {
    buf: Vec<u8>,
    limit: usize,
    /// Offsets of names (and their suffixes) already written.
    names: Vec<u16>,
    counts: [u16; 4],
    /// Bytes kept free for the OPT record written by `finish`.
    reserve: usize,
    /// Write every name in full (standalone rdata).
    compress_off: bool,
}

/// Section indexes for [`Encoder::record`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    /// Answer section.
    Answer = 1,
    /// Authority section.
    Authority = 2,
    /// Additional section.
    Additional = 3,
}

/// A record did not fit under the encoder's limit; nothing was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoRoom;

impl Encoder {
    /// Starts a message of at most `limit` bytes (clamped to 65535) whose
    /// OPT record, if `edns` is set, will be written by `finish`.
    pub fn new(header: &Header, limit: usize, edns: Option<&Edns>) -> Encoder {
        let limit = limit.clamp(HEADER_BYTES, MESSAGE_MAX_BYTES);
        let mut buf = Vec::with_capacity(limit.min(4096));
        buf.extend_from_slice(&header.id.to_be_bytes());
        buf.extend_from_slice(&flags(header).to_be_bytes());
        buf.extend_from_slice(&[0; 8]);
        let reserve = edns.map_or(0, |e| RECORD_MIN_BYTES + e.options.iter().map(|o| 4 + o.data.len()).sum::<usize>());
        Encoder { buf, limit, names: Vec::new(), counts: [0; 4], reserve, compress_off: false }
    }

    fn room(&self) -> usize {
        self.limit.saturating_sub(self.reserve)
    }

    /// Writes a question.
    pub fn question(&mut self, q: &Question) -> Result<(), NoRoom> {
        let mark = self.mark();
        self.name(&q.name, true);
        self.buf.extend_from_slice(&q.qtype.0.to_be_bytes());
        self.buf.extend_from_slice(&q.qclass.to_be_bytes());
        self.commit(mark, 0)
    }

    /// Writes a record into `section`, or leaves the message untouched.
    pub fn record(&mut self, section: Section, rec: &Record) -> Result<(), NoRoom> {
        let mark = self.mark();
        self.name(&rec.name, true);
        self.buf.extend_from_slice(&rec.data.rtype().0.to_be_bytes());
        self.buf.extend_from_slice(&rec.class.to_be_bytes());
        self.buf.extend_from_slice(&rec.ttl.to_be_bytes());
        let len_at = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]);
        self.rdata(&rec.data);
        let rdlen = self.buf.len() - len_at - 2;
        if rdlen > u16::MAX as usize {
            self.rollback(mark);
            return Err(NoRoom);
        }
        self.buf[len_at..len_at + 2].copy_from_slice(&(rdlen as u16).to_be_bytes());
        self.commit(mark, section as usize)
    }

    /// Sets the TC bit.
    pub fn set_truncated(&mut self) {
        self.buf[2] |= 0x02;
    }

    /// Writes the OPT record (if any), patches the counts, returns the bytes.
    pub fn finish(mut self, edns: Option<&Edns>) -> Vec<u8> {
        if let Some(e) = edns {
            self.buf.push(0);
            self.buf.extend_from_slice(&RType::OPT.0.to_be_bytes());
            self.buf.extend_from_slice(&e.udp_size.to_be_bytes());
            let ttl = ((e.ext_rcode as u32) << 24) | ((e.version as u32) << 16) | if e.dnssec_ok { 0x8000 } else { 0 };
            self.buf.extend_from_slice(&ttl.to_be_bytes());
            let len: usize = e.options.iter().map(|o| 4 + o.data.len()).sum();
            self.buf.extend_from_slice(&(len.min(u16::MAX as usize) as u16).to_be_bytes());
            for o in &e.options {
                self.buf.extend_from_slice(&o.code.to_be_bytes());
                self.buf.extend_from_slice(&(o.data.len() as u16).to_be_bytes());
                self.buf.extend_from_slice(&o.data);
            }
            self.counts[3] += 1;
        }
        for (i, c) in self.counts.iter().enumerate() {
            self.buf[4 + 2 * i..6 + 2 * i].copy_from_slice(&c.to_be_bytes());
        }
        self.buf
    }

    fn mark(&self) -> (usize, usize) {
        (self.buf.len(), self.names.len())
    }

    fn rollback(&mut self, (len, names): (usize, usize)) {
        self.buf.truncate(len);
        self.names.truncate(names);
    }

    fn commit(&mut self, mark: (usize, usize), section: usize) -> Result<(), NoRoom> {
        if self.buf.len() > self.room() || self.counts[section] == u16::MAX {
            self.rollback(mark);
            return Err(NoRoom);
        }
        self.counts[section] += 1;
        Ok(())
    }

    fn rdata_uncompressed(&mut self, data: &RData) {
        self.compress_off = true;
        self.rdata(data);
    }

    fn rdata(&mut self, data: &RData) {
        match data {
            RData::A(ip) => self.buf.extend_from_slice(&ip.octets()),
            RData::Aaaa(ip) => self.buf.extend_from_slice(&ip.octets()),
            RData::Cname(n) | RData::Ns(n) | RData::Ptr(n) => self.name(n, true),
            RData::Mx { preference, exchange } => {
                self.buf.extend_from_slice(&preference.to_be_bytes());
                self.name(exchange, true);
            }
            RData::Txt(strings) => {
                for s in strings {
                    let s = &s[..s.len().min(255)];
                    self.buf.push(s.len() as u8);
                    self.buf.extend_from_slice(s);
                }
            }
            RData::Srv { priority, weight, port, target } => {
                self.buf.extend_from_slice(&priority.to_be_bytes());
                self.buf.extend_from_slice(&weight.to_be_bytes());
                self.buf.extend_from_slice(&port.to_be_bytes());
                // RFC 2782: the target is not compressed.
                self.name(target, false);
            }
            RData::Soa(soa) => {
                self.name(&soa.mname, true);
                self.name(&soa.rname, true);
                for v in [soa.serial, soa.refresh, soa.retry, soa.expire, soa.minimum] {
                    self.buf.extend_from_slice(&v.to_be_bytes());
                }
            }
            RData::Unknown { data, .. } => self.buf.extend_from_slice(data),
        }
    }

    /// Writes `name`, pointing at an earlier copy of its longest known
    /// suffix when `compress` is set.
    fn name(&mut self, name: &Name, compress: bool) {
        let compress = compress && !self.compress_off;
        let wire = name.as_wire();
        let first_new = self.names.len();
        let mut pos = 0;
        let mut pointer = None;
        while wire[pos] != 0 {
            if compress {
                // Only names written in full are candidates, so the search
                // never reads the part of this name not yet written.
                if let Some(off) = self.find_suffix(&self.names[..first_new], &wire[pos..]) {
                    pointer = Some(off);
                    break;
                }
            }
            let here = self.buf.len();
            if compress && here < 0x3fff && self.names.len() < COMPRESSION_ENTRIES_MAX {
                self.names.push(here as u16);
            }
            let len = wire[pos] as usize;
            self.buf.extend_from_slice(&wire[pos..pos + 1 + len]);
            pos += 1 + len;
        }
        match pointer {
            Some(off) => self.buf.extend_from_slice(&(0xc000 | off).to_be_bytes()),
            None => self.buf.push(0),
        }
    }

    fn find_suffix(&self, candidates: &[u16], suffix: &[u8]) -> Option<u16> {
        candidates.iter().copied().find(|&off| names_equal_at(&self.buf, off as usize, suffix))
    }
}

/// Compares the (possibly compressed) name written at `off` in `buf` with
/// the uncompressed `wire`, byte for byte: compression must not change the
/// letter case a client sees. Only sees names this encoder wrote, so
/// pointers are known to go backwards.
fn names_equal_at(buf: &[u8], mut off: usize, wire: &[u8]) -> bool {
    let mut pos = 0;
    loop {
        let len = buf[off] as usize;
        if len & 0xc0 == 0xc0 {
            off = ((len & 0x3f) << 8) | buf[off + 1] as usize;
            continue;
        }
        if len != wire[pos] as usize {
            return false;
        }
        if len == 0 {
            return true;
        }
        if buf[off + 1..off + 1 + len] != wire[pos + 1..pos + 1 + len] {
            return false;
        }
        off += 1 + len;
        pos += 1 + len;
    }
}

fn flags(h: &Header) -> u16 {
    (h.qr as u16) << 15
        | ((h.opcode as u16 & 0x0f) << 11)
        | (h.aa as u16) << 10
        | (h.tc as u16) << 9
        | (h.rd as u16) << 8
        | (h.ra as u16) << 7
        | (h.z as u16) << 6
        | (h.ad as u16) << 5
        | (h.cd as u16) << 4
        | (h.rcode as u16 & 0x0f)
}

/// Encodes a whole message with compression and no size limit other than
/// 65535 bytes. Records that would pass it are left out and TC is set.
pub fn encode(msg: &Message) -> Vec<u8> {
    encode_limited(msg, MESSAGE_MAX_BYTES).0
}

/// Encodes a message into at most `limit` bytes. If an answer or authority
/// record does not fit, it and everything after it are left out and TC is
/// set; additional records that do not fit are just left out (RFC 2181
/// section 9). Returns the bytes and whether TC was set.
pub fn encode_limited(msg: &Message, limit: usize) -> (Vec<u8>, bool) {
    let mut e = Encoder::new(&msg.header, limit, msg.edns.as_ref());
    let mut truncated = false;
    for q in &msg.questions {
        if e.question(q).is_err() {
            truncated = true;
            break;
        }
    }
    if !truncated {
        'sections: for (section, records) in [
            (Section::Answer, &msg.answers),
            (Section::Authority, &msg.authorities),
            (Section::Additional, &msg.additionals),
        ] {
            for rec in records {
                if e.record(section, rec).is_err() {
                    if section != Section::Additional {
                        truncated = true;
                    }
                    break 'sections;
                }
            }
        }
    }
    if truncated {
        e.set_truncated();
    }
    (e.finish(msg.edns.as_ref()), truncated)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, qtype: RType) -> Message {
        Message {
            header: Header { id: 0xbeef, rd: true, ..Header::default() },
            questions: vec![Question { name: Name::from_ascii(name).unwrap(), qtype, qclass: CLASS_IN }],
            ..Message::default()
        }
    }

    #[test]
    fn a_query_matches_the_bytes_dig_sends() {
        let bytes = encode(&query("free.local", RType::A));
        assert_eq!(bytes, b"\xbe\xef\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x04free\x05local\x00\x00\x01\x00\x01");
        assert_eq!(decode(&bytes).unwrap(), query("free.local", RType::A));
    }

    #[test]
    fn repeated_names_are_compressed_and_decompressed() {
        let mut m = query("free.local", RType::A);
        m.header.qr = true;
        for i in 0..3 {
            m.answers.push(Record {
                name: Name::from_ascii("FREE.local").unwrap(),
                class: CLASS_IN,
                ttl: 60,
                data: RData::A(Ipv4Addr::new(10, 0, 0, i)),
            });
        }
        let bytes = encode(&m);
        // Question 28 bytes; the first answer points at "local" (2 + 5 +
        // 10 + 4), the next two at the first answer's owner (2 + 10 + 4).
        assert_eq!(bytes.len(), 28 + 21 + 2 * 16);
        let back = decode(&bytes).unwrap();
        // Compression never changes the spelling.
        assert_eq!(back.answers[0].name.to_string(), "FREE.local.");
        assert_eq!(back.answers.len(), 3);
    }

    #[test]
    fn forward_and_self_pointers_are_refused_with_their_offset() {
        let mut bytes = encode(&query("x", RType::A));
        // Replace the name with a pointer to itself.
        bytes.truncate(12);
        bytes.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert_eq!(decode(&bytes), Err(DecodeError { offset: 12, kind: DecodeErrorKind::ForwardPointer }));
    }

    #[test]
    fn forged_counts_fail_without_allocating() {
        let mut bytes = encode(&query("x", RType::A));
        bytes[6] = 0xff;
        bytes[7] = 0xff;
        assert_eq!(decode(&bytes).unwrap_err().kind, DecodeErrorKind::Truncated);
    }

    #[test]
    fn truncation_sets_tc_and_keeps_the_opt_record() {
        let mut m = query("big.local", RType::A);
        m.header.qr = true;
        m.edns = Some(Edns::default());
        for i in 0..100u8 {
            m.answers.push(Record {
                name: Name::from_ascii("big.local").unwrap(),
                class: CLASS_IN,
                ttl: 60,
                data: RData::A(Ipv4Addr::new(10, 0, 1, i)),
            });
        }
        let (bytes, tc) = encode_limited(&m, 512);
        assert!(tc);
        assert!(bytes.len() <= 512);
        let back = decode(&bytes).unwrap();
        assert!(back.header.tc);
        assert!(back.edns.is_some());
        assert!(!back.answers.is_empty() && back.answers.len() < 100);
    }

    #[test]
    fn two_opt_records_are_refused() {
        let mut m = query("x", RType::A);
        m.edns = Some(Edns::default());
        let mut bytes = encode(&m);
        let opt = bytes[bytes.len() - 11..].to_vec();
        bytes.extend_from_slice(&opt);
        bytes[11] = 2;
        assert_eq!(decode(&bytes).unwrap_err().kind, DecodeErrorKind::BadOpt);
    }
}
