//! A direct reader and writer of postcard's format for the messages a
//! cluster sends most: probes (`Ping`, `Ack`) and gossip rounds (`Syn`).
//!
//! Every message a node sends is serialized and every message it receives
//! decoded, and through serde each field is a visitor or serializer call
//! with its own error plumbing (and, writing, a `memcpy` per varint): in a
//! 1,000-node simulation the two were a third of all instructions
//! executed. These read and write the same bytes field by field.
//!
//! Postcard stays the definition of the format:
//! * the writer writes exactly postcard's bytes (`tests/gossip_decode.rs`
//!   compares the two on generated packets), and leaves every other body
//!   to postcard;
//! * the reader never has the last word: whatever it is unsure of (another
//!   body kind, any malformed field, bytes left over) it declines with
//!   `None`, and the caller decodes the message with postcard, whose answer
//!   stands, errors included. Its only claim is that a packet it returns is
//!   the one postcard would return for the same bytes; the tests and the
//!   `gossip_packet` fuzz target hold it to that.

use bytes::Bytes;
use compact_str::CompactString;

use super::wire::{Body, MemberState, MemberUpdate, Packet, PeerAddr, Pushed};
use crate::replica::{Entry, Namespace, Version};

/// A cursor over a message's bytes, with postcard's encodings.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    #[inline]
    fn byte(&mut self) -> Option<u8> {
        let b = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    /// Bytes not read yet.
    #[inline]
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// An unsigned LEB128 varint of at most `max` bytes whose last byte
    /// holds at most `last_max`: postcard's rule for a `bits`-bit integer
    /// (a longer or overflowing one is refused; a non-minimal one is not).
    #[inline]
    fn varint(&mut self, max: usize, last_max: u8) -> Option<u64> {
        let b = self.byte()?;
        if b < 0x80 {
            return Some(u64::from(b));
        }
        let mut out = u64::from(b & 0x7F);
        for i in 1..max {
            let b = self.byte()?;
            out |= u64::from(b & 0x7F) << (7 * i);
            if b & 0x80 == 0 {
                return (i < max - 1 || b <= last_max).then_some(out);
            }
        }
        None
    }

    #[inline]
    fn u64(&mut self) -> Option<u64> {
        self.varint(10, 0x01)
    }

    #[inline]
    fn u32(&mut self) -> Option<u32> {
        self.varint(5, 0x0F).map(|v| v as u32)
    }

    #[inline]
    fn u16(&mut self) -> Option<u16> {
        self.varint(3, 0x03).map(|v| v as u16)
    }

    /// A length (postcard's `usize`, a 64-bit varint here).
    #[inline]
    fn len(&mut self) -> Option<usize> {
        usize::try_from(self.u64()?).ok()
    }

    #[inline]
    fn bool(&mut self) -> Option<bool> {
        match self.byte()? {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }

    #[inline]
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    #[inline]
    fn str(&mut self) -> Option<&'a str> {
        let n = self.len()?;
        core::str::from_utf8(self.take(n)?).ok()
    }

    #[inline]
    fn bytes(&mut self) -> Option<Bytes> {
        let n = self.len()?;
        Some(Bytes::copy_from_slice(self.take(n)?))
    }

    #[inline]
    fn addr(&mut self) -> Option<PeerAddr> {
        Some(PeerAddr(CompactString::from(self.str()?)))
    }

    /// A sequence's length and a first capacity for it: the length as
    /// written, bounded by what the bytes left could hold at `min_size`
    /// bytes an element, so a lying length allocates nothing big.
    #[inline]
    fn seq(&mut self, min_size: usize) -> Option<(usize, usize)> {
        let n = self.len()?;
        Some((n, n.min(self.remaining() / min_size)))
    }

    fn member_update(&mut self) -> Option<MemberUpdate> {
        let id = self.u64()?;
        let addr = self.addr()?;
        let incarnation = self.u64()?;
        let state = match self.u32()? {
            0 => MemberState::Alive,
            1 => MemberState::Suspect,
            2 => MemberState::Dead,
            3 => MemberState::Left,
            _ => return None,
        };
        Some(MemberUpdate { id, addr, incarnation, state })
    }

    fn entry(&mut self) -> Option<Entry> {
        let ns = Namespace(self.u16()?);
        let key = self.bytes()?;
        let value = self.bytes()?;
        let writer = self.u64()?;
        let version = Version(self.u64()?);
        let expires_ms = self.u64()?;
        let deleted = self.bool()?;
        Some(Entry { ns, key, value, writer, version, expires_ms, deleted })
    }

    /// A `(writer, version)` list in `replica::marks`' form: a base
    /// version, then (zigzagged writer delta, offset below the base) pairs.
    fn marks(&mut self) -> Option<Vec<(u64, Version)>> {
        let (n, _) = self.seq(1)?;
        if n == 0 {
            return Some(Vec::new());
        }
        let pairs = n - 1;
        if pairs % 2 != 0 {
            return None;
        }
        let base = self.u64()?;
        let mut out = Vec::with_capacity((pairs / 2).min(self.remaining() / 2));
        let mut prev = 0u64;
        for _ in 0..pairs / 2 {
            let dw = self.u64()?;
            let dv = self.u64()?;
            let v = base.checked_sub(dv)?;
            let w = prev.wrapping_add((((dw >> 1) as i64) ^ -((dw & 1) as i64)) as u64);
            out.push((w, Version(v)));
            prev = w;
        }
        Some(out)
    }

    fn body(&mut self) -> Option<Body> {
        Some(match self.u32()? {
            0 => {
                let seq = self.u32()?;
                let hash = self.u64()?;
                let writers = self.u32()?;
                Body::Ping { seq, hash, writers }
            }
            1 => Body::Ack { seq: self.u32()? },
            6 => {
                let summary = match self.byte()? {
                    0 => None,
                    1 => {
                        let hash = self.u64()?;
                        let writers = self.u32()?;
                        Some((hash, writers))
                    }
                    _ => return None,
                };
                // An entry is at least 9 bytes (7 fields, two of them
                // length-prefixed), plus its `prev`.
                let (n, cap) = self.seq(9)?;
                let mut push = Vec::with_capacity(cap);
                for _ in 0..n {
                    let entry = self.entry()?;
                    let prev = Version(self.u64()?);
                    push.push(Pushed { entry, prev });
                }
                let recent = self.marks()?;
                Body::Syn { summary, push, recent }
            }
            _ => return None,
        })
    }
}

/// The packet `buf` holds, if it is a probe or a gossip round that
/// decodes cleanly with nothing left over; `None` otherwise (decode it
/// with postcard then).
pub(super) fn packet(buf: &[u8]) -> Option<Packet> {
    let mut r = Reader { buf, pos: 0 };
    let from = r.u64()?;
    let addr = r.addr()?;
    let incarnation = r.u64()?;
    let sent_ms = r.u64()?;
    let seq = r.u64()?;
    let complete = r.bool()?;
    // An update is at least 4 bytes: id, address length, incarnation, state.
    let (n, cap) = r.seq(4)?;
    let mut updates = Vec::with_capacity(cap);
    for _ in 0..n {
        updates.push(r.member_update()?);
    }
    let body = r.body()?;
    if r.remaining() != 0 {
        return None;
    }
    Some(Packet { from, addr, incarnation, sent_ms, seq, complete, updates, body })
}

/// Appends `v` as postcard writes any unsigned integer: LEB128, seven bits
/// a byte, least significant first.
#[inline]
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends a length-prefixed byte string (postcard's `str` and bytes).
#[inline]
fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn put_entry(out: &mut Vec<u8>, e: &Entry) {
    put_varint(out, u64::from(e.ns.0));
    put_bytes(out, &e.key);
    put_bytes(out, &e.value);
    put_varint(out, e.writer);
    put_varint(out, e.version.0);
    put_varint(out, e.expires_ms);
    out.push(u8::from(e.deleted));
}

/// A `(writer, version)` list in `replica::marks`' form (see its
/// `serialize`: the base is written even for an empty list).
fn put_marks(out: &mut Vec<u8>, marks: &[(u64, Version)]) {
    let base = marks.iter().map(|(_, v)| v.0).max().unwrap_or(0);
    put_varint(out, 1 + 2 * marks.len() as u64);
    put_varint(out, base);
    let mut prev = 0u64;
    for (w, v) in marks {
        let d = w.wrapping_sub(prev) as i64;
        put_varint(out, ((d << 1) ^ (d >> 63)) as u64);
        put_varint(out, base - v.0);
        prev = *w;
    }
}

/// Appends everything of `p` before its body.
fn put_header(out: &mut Vec<u8>, p: &Packet) {
    put_varint(out, p.from);
    put_bytes(out, p.addr.as_str().as_bytes());
    put_varint(out, p.incarnation);
    put_varint(out, p.sent_ms);
    put_varint(out, p.seq);
    out.push(u8::from(p.complete));
    put_varint(out, p.updates.len() as u64);
    for u in &p.updates {
        put_varint(out, u.id);
        put_bytes(out, u.addr.as_str().as_bytes());
        put_varint(out, u.incarnation);
        let state = match u.state {
            MemberState::Alive => 0,
            MemberState::Suspect => 1,
            MemberState::Dead => 2,
            MemberState::Left => 3,
        };
        put_varint(out, state);
    }
}

/// Appends `p` as postcard serializes it, if its body is a probe or a
/// gossip round; false, with nothing written, for any other body.
pub(super) fn write_packet(p: &Packet, out: &mut Vec<u8>) -> bool {
    match &p.body {
        Body::Ping { seq, hash, writers } => {
            put_header(out, p);
            put_varint(out, 0);
            put_varint(out, u64::from(*seq));
            put_varint(out, *hash);
            put_varint(out, u64::from(*writers));
        }
        Body::Ack { seq } => {
            put_header(out, p);
            put_varint(out, 1);
            put_varint(out, u64::from(*seq));
        }
        Body::Syn { summary, push, recent } => {
            put_header(out, p);
            put_varint(out, 6);
            match summary {
                None => out.push(0),
                Some((hash, writers)) => {
                    out.push(1);
                    put_varint(out, *hash);
                    put_varint(out, u64::from(*writers));
                }
            }
            put_varint(out, push.len() as u64);
            for pushed in push {
                put_entry(out, &pushed.entry);
                put_varint(out, pushed.prev.0);
            }
            put_marks(out, recent);
        }
        _ => return false,
    }
    true
}
