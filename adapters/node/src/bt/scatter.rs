//! Where a connection's reads put the peer's bytes: each block's payload
//! straight into a page-aligned buffer of its own, so that the direct
//! write takes it as it is and nothing copies it between the socket and
//! the disk.
//!
//! The stream after the handshake is length-prefixed messages, and in a
//! download nearly all of them are piece messages of one 16 KiB block. So
//! each read is one vectored read (`readv`) over places laid out as if
//! the next messages were such blocks: 13 bytes for a header, then a
//! block buffer, again and again. [`Frame`] follows the length prefixes
//! of what actually came, so each read's layout starts where the stream
//! really is (the rest of a header, the rest of a payload whose buffer is
//! carried over, or the rest of some other message in a plain buffer).
//! When other messages come between the blocks, the bytes land out of
//! place for the rest of that read; nothing is lost, since every byte is
//! handed on in stream order and the decoder
//! ([`rumor_core::bt::wire::Decoder`]) takes any chunking. Only a payload
//! that fills a block buffer exactly, fed after its header as a chunk of
//! its own, reaches the disk without a copy (the decoder slices it out of
//! that chunk).

use super::storage::{BlockBuf, BlockPool, POOL_BLOCK_BYTES};
use bytes::Bytes;
use rumor_core::bt::wire::PIECE_HEADER_LEN;
use std::io::IoSliceMut;
use std::sync::Arc;

/// The payload of the block every client asks for.
pub const BLOCK: usize = 16 * 1024;
const _: () = assert!(BLOCK == POOL_BLOCK_BYTES, "a block buffer holds one block");

/// The length prefix of a piece message carrying one whole block.
const WHOLE_BLOCK_LEN: u32 = (9 + BLOCK) as u32;

/// The piece message's id.
const PIECE_ID: u8 = 7;

/// Bytes of the BitTorrent handshake, which has no length prefix.
const HANDSHAKE_LEN: u32 = 68;

/// Header-and-block pairs in one read at most (1 MiB of blocks).
const PAIRS_MAX: usize = 64;

/// Out-of-place bytes in a block buffer up to this many are copied out,
/// and the buffer kept; more are handed on in the buffer.
const COPY_OUT_MAX: usize = 2048;

/// Where the stream stands, from the length prefixes seen so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Between messages or in a length prefix: the first `have` bytes of
    /// the next message's length and id (at most 4 are kept here: the
    /// fifth makes it a body).
    Head {
        /// The bytes seen.
        bytes: [u8; 5],
        /// How many.
        have: u8,
    },
    /// Inside a message, `left` bytes of it still to come.
    Body {
        /// Bytes still to come.
        left: u32,
        /// The message is a piece message of one whole block.
        whole_block: bool,
    },
}

impl Frame {
    /// The start of a connection: the 68-byte handshake comes first.
    pub fn handshake() -> Frame {
        Frame::Body { left: HANDSHAKE_LEN, whole_block: false }
    }

    fn boundary() -> Frame {
        Frame::Head { bytes: [0; 5], have: 0 }
    }

    /// Moves past `data`, the next bytes of the stream.
    pub fn advance(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match self {
                Frame::Body { left, .. } => {
                    let n = (*left as usize).min(data.len());
                    *left -= n as u32;
                    data = &data[n..];
                    if *left == 0 {
                        *self = Frame::boundary();
                    }
                }
                Frame::Head { bytes, have } => {
                    bytes[*have as usize] = data[0];
                    *have += 1;
                    data = &data[1..];
                    let len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
                    if *have == 4 && len == 0 {
                        // A keep-alive.
                        *self = Frame::boundary();
                    } else if *have == 5 {
                        let whole_block = len == WHOLE_BLOCK_LEN && bytes[4] == PIECE_ID;
                        *self = if len == 1 { Frame::boundary() } else { Frame::Body { left: len - 1, whole_block } };
                    }
                }
            }
        }
    }
}

/// What comes first in a read's layout, before the header-and-block pairs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lead {
    /// Nothing: the pairs start at once.
    None,
    /// The rest of the carried block.
    Carry,
    /// This many bytes into the plain buffer.
    Plain(usize),
}

/// One read's layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Plan {
    lead: Lead,
    /// Bytes of the first pair's header place (less than 13 when part of
    /// the header came already).
    first_head: usize,
    /// Header-and-block pairs after the lead.
    pairs: usize,
}

/// The places one connection reads into, and where its stream stands.
pub struct Scatter {
    frame: Frame,
    pool: Arc<BlockPool>,
    /// Block buffers laid out for the pairs, kept from read to read
    /// (`None`: handed on, lent again before the next read).
    blocks: Vec<Option<BlockBuf>>,
    heads: Vec<[u8; PIECE_HEADER_LEN]>,
    /// A block buffer holding the start of a payload whose rest is still
    /// to come, and how many bytes it holds.
    carry: Option<(BlockBuf, usize)>,
    /// The plain buffer, when the layout has one.
    plain: Vec<u8>,
    plain_max: usize,
    pairs_max: usize,
    plan: Plan,
}

impl Scatter {
    /// Reads of at most about `chunk` bytes (at least one block), block
    /// buffers from `pool`.
    pub fn new(pool: Arc<BlockPool>, chunk: usize) -> Scatter {
        let pairs_max = (chunk / BLOCK).clamp(1, PAIRS_MAX);
        Scatter {
            frame: Frame::handshake(),
            pool,
            blocks: Vec::new(),
            heads: vec![[0; PIECE_HEADER_LEN]; pairs_max],
            carry: None,
            plain: Vec::new(),
            plain_max: chunk.max(BLOCK),
            pairs_max,
            plan: Plan { lead: Lead::None, first_head: PIECE_HEADER_LEN, pairs: 0 },
        }
    }

    fn plan(&self) -> Plan {
        let pairs = self.pairs_max;
        let head = PIECE_HEADER_LEN;
        if self.carry.is_some() {
            return Plan { lead: Lead::Carry, first_head: head, pairs: pairs - 1 };
        }
        match self.frame {
            Frame::Head { have, .. } => Plan { lead: Lead::None, first_head: head - have as usize, pairs },
            // In a block's header (or at its payload's start: a place of
            // no bytes, then the block).
            Frame::Body { left, whole_block: true } if left as usize >= BLOCK => {
                Plan { lead: Lead::None, first_head: left as usize - BLOCK, pairs }
            }
            Frame::Body { left, .. } if left as usize <= self.plain_max => {
                Plan { lead: Lead::Plain(left as usize), first_head: head, pairs: pairs - 1 }
            }
            Frame::Body { .. } => Plan { lead: Lead::Plain(self.plain_max), first_head: head, pairs: 0 },
        }
    }

    /// The places for the next read, in stream order: pass them to one
    /// vectored read, then its count to [`Scatter::filled`].
    pub fn places(&mut self) -> Vec<IoSliceMut<'_>> {
        let plan = self.plan();
        self.plan = plan;
        if self.blocks.len() < plan.pairs {
            self.blocks.resize_with(plan.pairs, || None);
        }
        for b in &mut self.blocks[..plan.pairs] {
            if b.is_none() {
                *b = Some(self.pool.lend());
            }
        }
        let Scatter { carry, plain, heads, blocks, .. } = self;
        let mut places = Vec::with_capacity(1 + 2 * plan.pairs);
        match plan.lead {
            Lead::None => {}
            Lead::Carry => {
                let (b, have) = carry.as_mut().expect("planned with a carry");
                places.push(IoSliceMut::new(&mut b.as_mut_slice()[*have..]));
            }
            Lead::Plain(n) => {
                if plain.len() < n {
                    plain.resize(n, 0);
                }
                places.push(IoSliceMut::new(&mut plain[..n]));
            }
        }
        for (i, (h, b)) in heads.iter_mut().zip(blocks.iter_mut()).take(plan.pairs).enumerate() {
            let n = if i == 0 { plan.first_head } else { PIECE_HEADER_LEN };
            places.push(IoSliceMut::new(&mut h[..n]));
            places.push(IoSliceMut::new(b.as_mut().expect("lent above").as_mut_slice()));
        }
        places
    }

    /// Accounts for `n` bytes that the read over [`Scatter::places`] put
    /// in them, and hands on, in stream order, every chunk that is ready
    /// (all of them but a block buffer that holds the start of a payload
    /// whose rest is still to come).
    pub fn filled(&mut self, n: usize, mut emit: impl FnMut(Bytes)) {
        let plan = self.plan;
        // How much each place got, in order: the lead, then header and
        // block of each pair.
        let mut left = n;
        let mut take = |cap: usize| {
            let m = left.min(cap);
            left -= m;
            m
        };
        let lead_got = match plan.lead {
            Lead::None => 0,
            Lead::Carry => take(BLOCK - self.carry.as_ref().map_or(0, |c| c.1)),
            Lead::Plain(n) => take(n),
        };
        let mut pair_got = [(0usize, 0usize); PAIRS_MAX];
        let pairs = plan.pairs.min(pair_got.len());
        for (i, got) in pair_got.iter_mut().enumerate().take(pairs) {
            let h = take(if i == 0 { plan.first_head } else { PIECE_HEADER_LEN });
            *got = (h, take(BLOCK));
        }
        // The frame after all of it, in order.
        match plan.lead {
            Lead::None => {}
            Lead::Carry => {
                let (b, have) = self.carry.as_mut().expect("planned with a carry");
                self.frame.advance(&b.as_mut_slice()[*have..*have + lead_got]);
                *have += lead_got;
            }
            Lead::Plain(_) => self.frame.advance(&self.plain[..lead_got]),
        }
        for (i, &(h, b)) in pair_got[..pairs].iter().enumerate() {
            self.frame.advance(&self.heads[i][..h]);
            if b > 0 {
                let block = self.blocks[i].as_mut().expect("lent for the read");
                self.frame.advance(&block.as_mut_slice()[..b]);
            }
        }
        // A block buffer partly filled by the last bytes read is carried
        // to the next read when it holds the start of a whole block's
        // payload: then the rest of the message is exactly its room.
        let payload_rest = match self.frame {
            Frame::Body { left, whole_block: true } => Some(left as usize),
            _ => None,
        };
        let last_pair = pair_got[..pairs].iter().rposition(|&(h, b)| h + b > 0);
        // Hand on, in order.
        if plan.lead == Lead::Carry {
            let (b, have) = self.carry.take().expect("planned with a carry");
            if have == BLOCK {
                emit(b.into_bytes(BLOCK));
            } else if last_pair.is_none() && payload_rest == Some(BLOCK - have) {
                self.carry = Some((b, have));
            } else {
                emit(out_of_place(b, have, &mut None));
            }
        } else if let Lead::Plain(_) = plan.lead {
            if lead_got > COPY_OUT_MAX {
                // Handed on as it is; the next plain read gets a new one.
                let mut plain = std::mem::take(&mut self.plain);
                plain.truncate(lead_got);
                emit(Bytes::from(plain));
            } else if lead_got > 0 {
                emit(Bytes::copy_from_slice(&self.plain[..lead_got]));
            }
        }
        for (i, &(h, b)) in pair_got[..pairs].iter().enumerate() {
            if h > 0 {
                emit(Bytes::copy_from_slice(&self.heads[i][..h]));
            }
            if b == 0 {
                continue;
            }
            let block = self.blocks[i].take().expect("lent for the read");
            if b == BLOCK {
                emit(block.into_bytes(BLOCK));
            } else if Some(i) == last_pair && payload_rest == Some(BLOCK - b) {
                self.carry = Some((block, b));
            } else {
                emit(out_of_place(block, b, &mut self.blocks[i]));
            }
        }
        // The plain buffer is for messages that are not blocks, rare in a
        // download: it does not stay large once used for something big.
        if self.plain.len() > COPY_OUT_MAX {
            self.plain = Vec::new();
        }
    }
}

/// The first `len` bytes of `block`, which hold bytes out of place (not
/// one payload): a few are copied out and the buffer goes back to `keep`
/// for the next read; more are handed on in the buffer.
fn out_of_place(block: BlockBuf, len: usize, keep: &mut Option<BlockBuf>) -> Bytes {
    if len <= COPY_OUT_MAX {
        let mut block = block;
        let bytes = Bytes::copy_from_slice(&block.as_mut_slice()[..len]);
        *keep = Some(block);
        bytes
    } else {
        block.into_bytes(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumor_core::bt::wire::{BlockRef, Decoder, DecoderConfig, Handshake, Message};

    /// A readv over `places` from `stream` at `at`, of at most `max` bytes.
    fn readv(places: &mut [IoSliceMut<'_>], stream: &[u8], at: &mut usize, max: usize) -> usize {
        let mut n = 0;
        for p in places.iter_mut() {
            let m = p.len().min(stream.len() - *at).min(max - n);
            p[..m].copy_from_slice(&stream[*at..*at + m]);
            *at += m;
            n += m;
        }
        n
    }

    fn stream(msgs: &[Message]) -> Vec<u8> {
        let mut s = Vec::new();
        Handshake::new(rumor_core::bt::metainfo::InfoHash([1; 20]), [2; 20]).encode(&mut s);
        for m in msgs {
            m.encode(&mut s);
        }
        s
    }

    fn block(i: u32, len: usize) -> Message {
        Message::Piece { index: i, begin: 0, data: Bytes::from(vec![i as u8; len]) }
    }

    /// Reads `s` in reads of the sizes in `sizes` (cycled), decodes what
    /// is handed on, and returns the messages and how many payloads came
    /// in aligned buffers without a copy.
    fn run(s: &[u8], sizes: &[usize], chunk: usize) -> (Vec<Message>, usize) {
        let pool = BlockPool::new();
        let mut sc = Scatter::new(pool, chunk);
        let mut d = Decoder::new(DecoderConfig { piece_count: 1000, ..DecoderConfig::default() });
        let (mut at, mut got, mut aligned) = (0, Vec::new(), 0);
        let mut handshake = false;
        let mut size = sizes.iter().cycle();
        while at < s.len() {
            let mut places = sc.places();
            let n = readv(&mut places, s, &mut at, *size.next().expect("cycles"));
            drop(places);
            let mut chunks = Vec::new();
            sc.filled(n, |b| chunks.push(b));
            for c in chunks {
                d.feed_bytes(c);
                if !handshake {
                    handshake = d.take_handshake().is_some_and(|h| h.is_ok());
                }
                while let Some(m) = d.next() {
                    let m = m.expect("every byte in order");
                    if let Message::Piece { data, .. } = &m {
                        if super::super::storage::direct_ready(data) && data.len() == BLOCK {
                            aligned += 1;
                        }
                    }
                    got.push(m);
                }
            }
        }
        assert!(handshake);
        assert_eq!(d.buffered(), 0, "nothing held back at the end");
        (got, aligned)
    }

    #[test]
    fn whole_blocks_land_in_aligned_buffers_whatever_the_read_sizes() {
        let msgs: Vec<Message> = (0..40).map(|i| block(i, BLOCK)).collect();
        let s = stream(&msgs);
        for sizes in [vec![usize::MAX], vec![1000], vec![7, 16_397, 30_000], vec![13], vec![3]] {
            let (got, aligned) = run(&s, &sizes, 128 * 1024);
            assert_eq!(got, msgs, "read sizes {sizes:?}");
            // The first block may come in the read that ends the
            // handshake, out of place; every later one is aligned.
            assert!(aligned >= msgs.len() - 1, "read sizes {sizes:?}: {aligned} of {} aligned", msgs.len());
        }
    }

    #[test]
    fn other_messages_between_blocks_come_through_and_the_blocks_after_them_are_aligned_again() {
        // Another message after every third block, as a peer that is
        // downloading too sends `have`s and requests between them.
        let mut msgs = Vec::new();
        for i in 0..60u32 {
            msgs.push(block(i, BLOCK));
            if i % 3 != 2 {
                continue;
            }
            match i / 3 % 5 {
                0 => msgs.push(Message::Have(i)),
                1 => msgs.push(Message::Request(BlockRef { index: i, begin: 0, length: 16384 })),
                2 => msgs.push(Message::Bitfield(Bytes::from(vec![0xff; 125]))),
                3 => msgs.push(Message::Extended { id: 1, payload: Bytes::from(vec![b'x'; 40_000]) }),
                _ => msgs.push(Message::KeepAlive),
            }
        }
        // A short last block, as a torrent's last piece has.
        msgs.push(block(99, 1000));
        let s = stream(&msgs);
        for sizes in [vec![usize::MAX], vec![4096], vec![5, 16_400, 100_000], vec![3]] {
            let (got, aligned) = run(&s, &sizes, 128 * 1024);
            assert_eq!(got, msgs, "read sizes {sizes:?}");
            // A message between blocks puts the rest of that read out of
            // place (the layout is made before the read); the next read
            // starts in place again.
            let want = 15;
            assert!(aligned >= want, "read sizes {sizes:?}: {aligned} of 60 aligned");
        }
    }

    #[test]
    fn arbitrary_bytes_are_handed_on_in_order_and_nothing_panics() {
        // Not BitTorrent at all: whatever the lengths say, every byte
        // comes out once, in order.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let s: Vec<u8> = (0..100_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Mostly small length bytes, so lengths vary.
                if x.is_multiple_of(3) {
                    (x >> 8) as u8
                } else {
                    (x % 5) as u8
                }
            })
            .collect();
        for sizes in [vec![usize::MAX], vec![3], vec![16_397, 20]] {
            let mut sc = Scatter::new(BlockPool::new(), 64 * 1024);
            let (mut at, mut out) = (0, Vec::new());
            let mut size = sizes.iter().cycle();
            while at < s.len() {
                let mut places = sc.places();
                let n = readv(&mut places, &s, &mut at, *size.next().expect("cycles"));
                drop(places);
                sc.filled(n, |b| out.extend_from_slice(&b));
            }
            let held = sc.carry.as_ref().map_or(0, |c| c.1);
            assert_eq!(out.len() + held, s.len());
            assert_eq!(out[..], s[..out.len()]);
        }
    }
}
