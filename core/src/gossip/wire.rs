//! Gossip messages and the authenticated envelope they travel in.
//!
//! Envelope: `[version = 5][key id][24-byte nonce][XChaCha20-Poly1305
//! ciphertext + 16-byte tag]`, with the first two bytes as associated data.
//! The plaintext is `[flags][body]`: flag bit 0 says the body is LZ4
//! compressed (size-prepended); the body is a postcard-serialized [`Packet`].
//!
//! Version 3 added the sender's wall-clock time and a per-sender sequence
//! number to every [`Packet`], inside the AEAD so they cannot be forged: the
//! receiver drops a message sent too long ago, or one it has already seen
//! (see the `replay` module), so a captured message cannot be replayed.
//! Nodes of this version neither open nor are opened by version 2 nodes
//! (the version byte differs): a cluster upgrades all at once.
//!
//! Version 4 added the recent writers to `Syn` and `Digest` (issue 16): a
//! node behind on one of them starts its digest there.
//!
//! Version 5 writes every `(writer, version)` list (digests, watermark
//! claims, recent writers) in a compact form (`replica::marks`): a
//! 1,024-writer digest of random ids went from about 19 KB to 13 KB.
//!
//! Nonces are 24 random bytes from the machine's seeded [`Rng`](crate::rand::Rng):
//! with XChaCha's 192-bit nonces random choice is safe, *provided* the adapter
//! seeds the machine from OS entropy (a fixed seed reused across restarts
//! would repeat nonces under the same key). Only the simulator uses fixed
//! seeds.

use bytes::Bytes;
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use crate::replica::{Delta, Digest, Entry, FullChunk, Namespace, NodeId, Version};

/// The envelope format version this code writes and reads.
pub const ENVELOPE_VERSION: u8 = 5;
/// Bytes of envelope around the plaintext: version, key id, nonce, tag.
pub const ENVELOPE_OVERHEAD: usize = 2 + 24 + 16;
const FLAG_LZ4: u8 = 1;

/// The address a peer is reached at: opaque to the machine ("host:port" for
/// the TCP adapter, "n17" in the simulator). Ordered and serializable so it
/// can travel in messages and key maps.
///
/// Held inline up to 24 bytes (every IPv4 "host:port" and most IPv6 ones):
/// the machine clones and compares addresses on every message (round
/// targets, piggybacked member updates, replay and member maps), and a heap
/// `String` made each of those a cold pointer chase and an allocation. The
/// wire form is the same string either way.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PeerAddr(pub CompactString);

impl PeerAddr {
    /// The address as text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl From<&str> for PeerAddr {
    fn from(s: &str) -> Self {
        PeerAddr(CompactString::from(s))
    }
}

impl From<String> for PeerAddr {
    fn from(s: String) -> Self {
        PeerAddr(CompactString::from(s))
    }
}

impl core::fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A 256-bit cluster key with a one-byte id.
#[derive(Clone)]
struct Key {
    id: u8,
    /// Kept only to compare keyrings (the cipher holds the same bytes).
    bytes: [u8; 32],
    cipher: XChaCha20Poly1305,
}

/// The cluster keys: messages are sealed with the primary key and opened with
/// whichever key works (the id in the envelope is tried first). To rotate
/// without downtime: add the new key everywhere, then make it primary
/// everywhere, then remove the old one.
#[derive(Clone)]
pub struct Keyring {
    /// Shared by the keyring's clones (copied on write): every simulated
    /// node holds the same keys, and one copy stays in the cache where a
    /// copy per node was a cache miss per message sealed.
    keys: Arc<Vec<Key>>,
    primary: u8,
    /// Simulation only (feature `unsealed-sim`): envelopes are written and
    /// read with the same layout and size but no cipher and no tag check.
    unsealed: bool,
}

impl core::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let ids: Vec<u8> = self.keys.iter().map(|k| k.id).collect();
        f.debug_struct("Keyring")
            .field("ids", &ids)
            .field("primary", &self.primary)
            .field("unsealed", &self.unsealed)
            .finish()
    }
}

impl PartialEq for Keyring {
    fn eq(&self, other: &Self) -> bool {
        self.primary == other.primary
            && self.unsealed == other.unsealed
            && self.keys.len() == other.keys.len()
            && self.keys.iter().zip(other.keys.iter()).all(|(a, b)| a.id == b.id && a.bytes == b.bytes)
    }
}

impl Eq for Keyring {}

/// How many keys a [`Keyring`] holds at most.
pub const KEYRING_KEYS_MAX: usize = 8;

/// A misuse of the [`Keyring`] API (nothing changed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyringError {
    /// No key with that id.
    UnknownKey,
    /// The keyring already holds [`KEYRING_KEYS_MAX`] keys.
    Full,
    /// The primary key cannot be removed.
    IsPrimary,
}

impl Keyring {
    /// A keyring with one key, `id`, as primary.
    pub fn new(id: u8, key: [u8; 32]) -> Self {
        Keyring {
            keys: Arc::new(vec![Key { id, bytes: key, cipher: XChaCha20Poly1305::new(&key.into()) }]),
            primary: id,
            unsealed: false,
        }
    }

    /// A keyring for a *simulated* network that skips the cipher: messages
    /// keep the envelope's layout and size (so byte counts are those of the
    /// sealed protocol) but are neither encrypted nor authenticated, and
    /// such a keyring opens any envelope. It exists only with the
    /// `unsealed-sim` feature, which only the simulator enables: about a
    /// sixth of a large simulated cluster's time went to the AEAD.
    #[cfg(feature = "unsealed-sim")]
    pub fn unsealed_for_simulation(id: u8, key: [u8; 32]) -> Self {
        Keyring { unsealed: true, ..Keyring::new(id, key) }
    }

    /// True for a keyring from [`Keyring::unsealed_for_simulation`].
    pub fn is_unsealed(&self) -> bool {
        self.unsealed
    }

    /// Adds (or replaces) key `id` for opening; it is not used to seal until
    /// made primary.
    pub fn add(&mut self, id: u8, key: [u8; 32]) -> Result<(), KeyringError> {
        let cipher = XChaCha20Poly1305::new(&key.into());
        let keys = Arc::make_mut(&mut self.keys);
        if let Some(k) = keys.iter_mut().find(|k| k.id == id) {
            k.cipher = cipher;
            k.bytes = key;
            return Ok(());
        }
        if keys.len() >= KEYRING_KEYS_MAX {
            return Err(KeyringError::Full);
        }
        keys.push(Key { id, bytes: key, cipher });
        Ok(())
    }

    /// Makes key `id` the one messages are sealed with.
    pub fn set_primary(&mut self, id: u8) -> Result<(), KeyringError> {
        if !self.keys.iter().any(|k| k.id == id) {
            return Err(KeyringError::UnknownKey);
        }
        self.primary = id;
        Ok(())
    }

    /// Removes key `id` (not the primary).
    pub fn remove(&mut self, id: u8) -> Result<(), KeyringError> {
        if id == self.primary {
            return Err(KeyringError::IsPrimary);
        }
        if !self.keys.iter().any(|k| k.id == id) {
            return Err(KeyringError::UnknownKey);
        }
        Arc::make_mut(&mut self.keys).retain(|k| k.id != id);
        Ok(())
    }

    fn primary(&self) -> &Key {
        self.keys.iter().find(|k| k.id == self.primary).expect("the primary key is always in the ring")
    }
}

/// SWIM state of a member as carried in updates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum MemberState {
    /// Answering probes.
    Alive,
    /// Missed a probe; declared dead unless it refutes in time.
    Suspect,
    /// Confirmed unreachable.
    Dead,
    /// Left on purpose.
    Left,
}

/// A membership update piggybacked on messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberUpdate {
    /// Whom it is about.
    pub id: NodeId,
    /// Where that member is reached.
    pub addr: PeerAddr,
    /// The member's incarnation the update refers to.
    pub incarnation: u64,
    /// The state claimed.
    pub state: MemberState,
}

/// A freshly written entry pushed to peers, with the writer's previous
/// version so that a peer holding everything up to `prev` can advance its
/// watermark without a round of anti-entropy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pushed {
    /// The entry.
    pub entry: Entry,
    /// The writer's version before this write.
    pub prev: Version,
}

/// What a message asks or tells.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// SWIM probe; answer with `Ack { seq }`.
    Ping {
        /// Probe sequence number.
        seq: u32,
        /// The sender's settled summary hash, as in `Syn`: a mismatch
        /// starts an anti-entropy exchange, so probes double as pull rounds.
        hash: u64,
        /// Writers in the sender's settled watermark map.
        writers: u32,
    },
    /// Answer to a `Ping`.
    Ack {
        /// The probe's sequence number.
        seq: u32,
    },
    /// Asks the receiver to probe `target` for us (indirect probe).
    PingReq {
        /// Our probe's sequence number, echoed in the `IndirectAck`.
        seq: u32,
        /// The member to probe.
        target: NodeId,
        /// Where to reach it.
        target_addr: PeerAddr,
    },
    /// The relay reached the target of our `PingReq`.
    IndirectAck {
        /// The original probe's sequence number.
        seq: u32,
        /// The member that answered.
        target: NodeId,
    },
    /// A node asks to join; answered by `JoinReply`.
    Join,
    /// A sample of the sender's members.
    JoinReply {
        /// Members known alive.
        members: Vec<MemberUpdate>,
    },
    /// A gossip round: freshly written entries, and on anti-entropy rounds
    /// a summary of what the sender holds.
    Syn {
        /// The sender's anti-entropy summary, [`Store::settled_summary`](crate::replica::Store::settled_summary):
        /// the hash of its watermarks and the number of writers in its
        /// watermark map, leaving out writes younger than the settling
        /// time. A mismatch makes the receiver start a digest exchange.
        /// Push-only messages carry none: under a steady write load every
        /// summary differs while pushes are in flight, and comparing them
        /// on every push turned each push into a digest exchange.
        summary: Option<(u64, u32)>,
        /// Fresh entries (push).
        push: Vec<Pushed>,
        /// With a summary, when the sender's watermark map is larger than
        /// one digest: writers of entries that reached it lately, with the
        /// newest version it holds of each (at most
        /// `Config::recent_writers_max`). A receiver behind on one starts
        /// its digest window at that writer.
        #[serde(with = "crate::replica::marks")]
        recent: Vec<(NodeId, Version)>,
    },
    /// "Your summary differs from mine: here is how far I have seen each
    /// writer; send me what is newer."
    Digest {
        /// The sender's digest (maybe a window of it).
        digest: Digest,
        /// As in `Syn`: writers of entries that reached the sender lately,
        /// so the node whose summary started the exchange learns which
        /// writers it is behind on before it sends its own digest.
        #[serde(with = "crate::replica::marks")]
        recent: Vec<(NodeId, Version)>,
    },
    /// Entries the receiver lacks; with `digest`, also asks for the reverse.
    Delta {
        /// The entries and watermarks.
        delta: Delta,
        /// The sender's digest if it wants the receiver's newer entries.
        digest: Option<Digest>,
    },
    /// "You are behind by more than the grace period: ask me for a full
    /// state transfer."
    NeedFull,
    /// Asks for the next chunk of a full state transfer.
    FullRequest {
        /// The key the previous chunk ended at, `None` to start.
        after: Option<(Namespace, Bytes)>,
    },
    /// A chunk of a full state transfer.
    Full {
        /// The `after` of the request it answers: the taker accepts only
        /// the chunk for the cursor it is at, so a late or repeated answer
        /// (requests are sent again when no answer comes) cannot move it
        /// back or skip keys.
        after: Option<(Namespace, Bytes)>,
        /// The chunk.
        chunk: FullChunk,
    },
    /// The sender leaves the cluster.
    Leave,
    /// Asks for the live entries of `ns` whose keys start with `prefix`
    /// (the overlay asks for a torrent's providers it has none of yet);
    /// answered by `Found`.
    Lookup {
        /// Echoed in the answer.
        id: u32,
        /// Namespace searched.
        ns: Namespace,
        /// Key prefix.
        prefix: Bytes,
    },
    /// Answer to `Lookup`: at most one message's worth of live entries.
    Found {
        /// The lookup's id.
        id: u32,
        /// The entries.
        entries: Vec<Entry>,
    },
}

impl Body {
    /// Names of the body kinds, indexed by [`Body::kind`].
    pub const KINDS: [&'static str; 15] = [
        "ping",
        "ack",
        "ping_req",
        "indirect_ack",
        "join",
        "join_reply",
        "syn",
        "digest",
        "delta",
        "need_full",
        "full_request",
        "full",
        "leave",
        "lookup",
        "found",
    ];

    /// This body's kind, an index into [`Body::KINDS`].
    pub fn kind(&self) -> usize {
        match self {
            Body::Ping { .. } => 0,
            Body::Ack { .. } => 1,
            Body::PingReq { .. } => 2,
            Body::IndirectAck { .. } => 3,
            Body::Join => 4,
            Body::JoinReply { .. } => 5,
            Body::Syn { .. } => 6,
            Body::Digest { .. } => 7,
            Body::Delta { .. } => 8,
            Body::NeedFull => 9,
            Body::FullRequest { .. } => 10,
            Body::Full { .. } => 11,
            Body::Leave => 12,
            Body::Lookup { .. } => 13,
            Body::Found { .. } => 14,
        }
    }
}

/// One message: who sends it, its membership updates and its body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Packet {
    /// The sender's node id.
    pub from: NodeId,
    /// Where the sender is reached (replies go there, not to the transport
    /// source address).
    pub addr: PeerAddr,
    /// The sender's incarnation.
    pub incarnation: u64,
    /// The sender's wall clock when it sealed the message, in Unix
    /// milliseconds: a message older (or newer) than the receiver's
    /// `Config::replay_window` is dropped as stale.
    pub sent_ms: u64,
    /// The sender's message sequence number: one more for each message it
    /// seals, from a base derived from its wall clock at start (so a
    /// restarted node's numbers continue above the ones it used before).
    /// A receiver drops a (sender, sequence) it has already accepted.
    pub seq: u64,
    /// Whether the sender knows its whole tombstone-collection history
    /// ([`Store::history_complete`](crate::replica::Store::history_complete)):
    /// only such a node is a safe source of a full state transfer.
    pub complete: bool,
    /// Piggybacked membership updates.
    pub updates: Vec<MemberUpdate>,
    /// The message proper.
    pub body: Body,
}

/// Why received bytes were dropped. The input changed nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than an envelope.
    TooShort,
    /// Longer than the message size limit.
    TooLarge,
    /// Unknown envelope version.
    BadVersion,
    /// No key in the ring opens it (wrong cluster key or tampered).
    Auth,
    /// Unknown flag bits or a bad compressed body.
    BadCompression,
    /// The body is not a valid packet.
    BadFormat,
    /// Authentic, but sent longer ago than the replay window (or further in
    /// the future than it: a clock too far off), or its sequence number is
    /// below the sender's window: possibly a replay, certainly too late.
    Stale,
    /// Authentic, but its (sender, sequence) was already accepted: a
    /// replayed message. Also a new sender when the replay table is full of
    /// senders heard within the window.
    Replayed,
}

/// Where the serialized packet starts in a sealed envelope: after the
/// version, the key id, the 24-byte nonce and the compression flag.
const PLAINTEXT_AT: usize = 2 + 24 + 1;

/// Bytes of packet a new envelope has room for before it grows (most
/// packets are smaller).
const SEAL_ROOM: usize = 256;

/// Serializes, maybe compresses, and seals `packet` with the keyring's
/// primary key and `nonce`. Bodies of at least `compress_min_bytes` are
/// compressed when that makes them smaller.
pub fn seal(keys: &Keyring, nonce: [u8; 24], packet: &Packet, compress_min_bytes: usize) -> Vec<u8> {
    let key = keys.primary();
    let header = [ENVELOPE_VERSION, key.id];
    // One buffer: header, nonce, flag, then the packet serialized straight
    // after them and encrypted in place, then the tag. Room for a typical
    // packet up front: grown from nothing, the buffer was reallocated five
    // or six times per message.
    let mut out = Vec::with_capacity(ENVELOPE_OVERHEAD + 1 + SEAL_ROOM);
    out.extend_from_slice(&header);
    out.extend_from_slice(&nonce);
    out.push(0);
    let mut out = encode_packet(packet, out);
    let body_len = out.len() - PLAINTEXT_AT;
    if body_len >= compress_min_bytes {
        let compressed = lz4_flex::compress_prepend_size(&out[PLAINTEXT_AT..]);
        if compressed.len() < body_len {
            out.truncate(PLAINTEXT_AT - 1);
            out.push(FLAG_LZ4);
            out.extend_from_slice(&compressed);
        }
    }
    if keys.unsealed {
        out.extend_from_slice(&[0; 16]);
        return out;
    }
    let tag = key
        .cipher
        .encrypt_in_place_detached(XNonce::from_slice(&nonce), &header, &mut out[PLAINTEXT_AT - 1..])
        .expect("encryption of a bounded buffer cannot fail");
    out.extend_from_slice(&tag);
    out
}

/// Appends `packet` serialized (postcard's format) to `out`: probes and
/// gossip rounds by a direct writer of the same bytes, the rest by
/// postcard.
pub fn encode_packet(packet: &Packet, mut out: Vec<u8>) -> Vec<u8> {
    if super::direct::write_packet(packet, &mut out) {
        return out;
    }
    postcard::to_extend(packet, out).expect("packets always serialize")
}

/// Opens an envelope: checks size and version, authenticates with the
/// keyring (the named key first, then the others), decompresses within
/// `bytes_max`, and parses the packet. Never panics on any input.
pub fn open(keys: &Keyring, bytes: &[u8], bytes_max: usize) -> Result<Packet, DecodeError> {
    if bytes.len() > bytes_max {
        return Err(DecodeError::TooLarge);
    }
    if bytes.len() < ENVELOPE_OVERHEAD + 1 {
        return Err(DecodeError::TooShort);
    }
    if bytes[0] != ENVELOPE_VERSION {
        return Err(DecodeError::BadVersion);
    }
    let header = &bytes[..2];
    let nonce = XNonce::from_slice(&bytes[2..26]);
    let (ct, tag) = bytes[26..].split_at(bytes.len() - 26 - 16);
    if keys.unsealed {
        return parse_plaintext(ct, bytes_max);
    }
    let tag = Tag::from_slice(tag);
    // The tag is checked before anything is decrypted, so a failed key
    // leaves the buffer as it was for the next one.
    let mut plain = ct.to_vec();
    let mut try_key = |k: &Key| k.cipher.decrypt_in_place_detached(nonce, header, &mut plain, tag).is_ok();
    let named = keys.keys.iter().find(|k| k.id == bytes[1]);
    let opened = named.is_some_and(&mut try_key) || keys.keys.iter().filter(|k| k.id != bytes[1]).any(&mut try_key);
    if !opened {
        return Err(DecodeError::Auth);
    }
    parse_plaintext(&plain, bytes_max)
}

/// Parses an opened plaintext: `[flags][body]`, the body maybe LZ4.
fn parse_plaintext(plain: &[u8], bytes_max: usize) -> Result<Packet, DecodeError> {
    let (flags, body) = plain.split_first().ok_or(DecodeError::BadFormat)?;
    let decompressed;
    let body = match *flags {
        0 => body,
        FLAG_LZ4 => {
            if body.len() < 4 {
                return Err(DecodeError::BadCompression);
            }
            let n = u32::from_le_bytes([body[0], body[1], body[2], body[3]]) as usize;
            if n > bytes_max.saturating_mul(4) {
                return Err(DecodeError::TooLarge);
            }
            decompressed = lz4_flex::decompress_size_prepended(body).map_err(|_| DecodeError::BadCompression)?;
            &decompressed[..]
        }
        _ => return Err(DecodeError::BadCompression),
    };
    decode_packet(body)
}

/// Decodes a serialized [`Packet`] (the plaintext's body): the whole of
/// `body`, with nothing left over. Probes and gossip rounds are read
/// directly ([`decode_packet_fast`]); anything else, and anything that
/// reader declines, by postcard.
pub fn decode_packet(body: &[u8]) -> Result<Packet, DecodeError> {
    if let Some(packet) = super::direct::packet(body) {
        return Ok(packet);
    }
    let (packet, rest) = postcard::take_from_bytes::<Packet>(body).map_err(|_| DecodeError::BadFormat)?;
    if !rest.is_empty() {
        return Err(DecodeError::BadFormat);
    }
    Ok(packet)
}

/// The direct reader behind [`decode_packet`] alone: the packet, if `body`
/// is a probe or a gossip round it reads cleanly; `None` leaves the answer
/// to postcard. Public so tests and the fuzzer can hold it to postcard's.
#[doc(hidden)]
pub fn decode_packet_fast(body: &[u8]) -> Option<Packet> {
    super::direct::packet(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet() -> Packet {
        Packet {
            from: 7,
            addr: "n7".into(),
            incarnation: 1,
            sent_ms: 1_700_000_000_000,
            seq: 5,
            complete: true,
            updates: vec![],
            body: Body::Syn { summary: Some((42, 1)), push: vec![], recent: vec![(7, Version(9))] },
        }
    }

    #[test]
    fn a_sealed_packet_opens_with_the_same_key() {
        let ring = Keyring::new(1, [9; 32]);
        let b = seal(&ring, [3; 24], &packet(), 64);
        assert_eq!(open(&ring, &b, 1 << 16).unwrap(), packet());
    }

    #[cfg(feature = "unsealed-sim")]
    #[test]
    fn an_unsealed_envelope_has_the_sealed_size_and_a_real_keyring_refuses_it() {
        let ring = Keyring::new(1, [9; 32]);
        let plain = Keyring::unsealed_for_simulation(1, [9; 32]);
        assert!(plain.is_unsealed() && !ring.is_unsealed());
        let b = seal(&plain, [3; 24], &packet(), 64);
        assert_eq!(b.len(), seal(&ring, [3; 24], &packet(), 64).len());
        assert_eq!(open(&plain, &b, 1 << 16).unwrap(), packet());
        assert_eq!(open(&ring, &b, 1 << 16), Err(DecodeError::Auth));
    }

    #[test]
    fn a_wrong_key_or_a_flipped_bit_is_refused() {
        let ring = Keyring::new(1, [9; 32]);
        let other = Keyring::new(1, [8; 32]);
        let mut b = seal(&ring, [3; 24], &packet(), 64);
        assert_eq!(open(&other, &b, 1 << 16), Err(DecodeError::Auth));
        let last = b.len() - 1;
        b[last] ^= 1;
        assert_eq!(open(&ring, &b, 1 << 16), Err(DecodeError::Auth));
    }

    #[test]
    fn rotation_opens_messages_sealed_with_either_key() {
        let old = Keyring::new(1, [1; 32]);
        let mut both = Keyring::new(1, [1; 32]);
        both.add(2, [2; 32]).unwrap();
        both.set_primary(2).unwrap();
        let from_old = seal(&old, [0; 24], &packet(), 64);
        let from_new = seal(&both, [0; 24], &packet(), 64);
        assert!(open(&both, &from_old, 1 << 16).is_ok());
        assert!(open(&both, &from_new, 1 << 16).is_ok());
        assert_eq!(open(&old, &from_new, 1 << 16), Err(DecodeError::Auth));
        assert_eq!(both.remove(2), Err(KeyringError::IsPrimary));
    }

    #[test]
    fn large_repetitive_bodies_are_compressed() {
        let ring = Keyring::new(1, [9; 32]);
        let mut p = packet();
        p.updates = (0..50)
            .map(|i| MemberUpdate {
                id: i,
                addr: "node-with-a-long-name:5300".into(),
                incarnation: 0,
                state: MemberState::Alive,
            })
            .collect();
        let raw = postcard::to_allocvec(&p).unwrap().len();
        let b = seal(&ring, [3; 24], &p, 64);
        assert!(b.len() < raw, "{} !< {}", b.len(), raw);
        assert_eq!(open(&ring, &b, 1 << 16).unwrap(), p);
    }
}
