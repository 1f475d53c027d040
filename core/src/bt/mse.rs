//! Message Stream Encryption (MSE, also called PE): the obfuscated
//! handshake many BitTorrent clients speak before the BitTorrent handshake,
//! as a pure machine (bytes in, bytes out, an [`Outcome`]).
//!
//! The exchange, A the side that dialed, B the side that accepted:
//!
//! ```text
//! 1 A->B: Ya, PadA
//! 2 B->A: Yb, PadB
//! 3 A->B: HASH('req1', S), HASH('req2', SKEY) xor HASH('req3', S),
//!         ENCRYPT(VC, crypto_provide, len(PadC), PadC, len(IA)), ENCRYPT(IA)
//! 4 B->A: ENCRYPT(VC, crypto_select, len(PadD), PadD), ENCRYPT2(payload)
//! 5 A->B: ENCRYPT2(payload)
//! ```
//!
//! `Y = 2^X mod P` with the 768-bit prime [`P_HEX`] and 160-bit private
//! keys `X`, all numbers 96 bytes big-endian; `S` is the shared secret;
//! `SKEY` the infohash (B finds which of its torrents A wants by comparing
//! the second hash against each one it serves); `HASH` is SHA-1; `VC` eight
//! zero bytes; pads are 0 to 512 bytes; lengths are big-endian. `ENCRYPT`
//! is RC4 keyed with `HASH('keyA', S, SKEY)` from A to B and `HASH('keyB',
//! S, SKEY)` from B to A, with the first 1024 bytes of keystream discarded;
//! `ENCRYPT2` is the method B selected from what A provided: RC4 (the same
//! streams, continued) or plaintext. Each side finds where the other's
//! encrypted part starts by scanning past the random pad for a value only
//! the holder of `S` can compute (B for `HASH('req1', S)`, A for the
//! encrypted `VC`).
//!
//! Use it: make a [`Handshake::initiator`] (for a connection we dialed) or
//! a [`Handshake::responder`] (for one we accepted), write every
//! [`Output::Transmit`] to the peer in order, feed everything read to
//! [`Handshake::receive`], and drain [`Handshake::poll_output`] after each
//! call until it says [`Output::Pending`]. It ends with [`Output::Done`]
//! (switch the stream to the [`Outcome`]: its keystreams and the plaintext
//! already received) or [`Output::Failed`] (close the connection). The
//! machine has no timers: the adapter bounds how long it waits.
//!
//! A responder also takes a plain BitTorrent handshake (it starts with 19
//! and `BitTorrent protocol`; anything else is tried as MSE) when the
//! config allows it, and says so with [`Method::None`].
//!
//! Randomness comes in as an input ([`Secret`]): the private key from the
//! operating system, the pads from a seed. Limits: pads at most
//! [`PAD_MAX`], an initial payload at most [`IA_MAX`], served infohashes at
//! most [`INFO_HASHES_MAX`]; the machine holds at most [`HANDSHAKE_MAX`]
//! bytes of the peer's handshake plus the last slice given to it, and each
//! stage fails as soon as it has more bytes than a valid peer could send
//! before what it looks for.

use super::metainfo::InfoHash;
use crate::rand::Rng;
use crypto_bigint::modular::runtime_mod::{DynResidue, DynResidueParams};
use crypto_bigint::{Encoding, U192, U768};
use rc4::consts::U20;
use rc4::{KeyInit, StreamCipher};
use sha1::{Digest, Sha1};
use std::collections::VecDeque;

/// The prime modulus of the key exchange (768 bits), hex.
pub const P_HEX: &str = "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A63A36210000000000090563";
/// Length of a public key (`Y`) and of the shared secret on the wire.
pub const KEY_BYTES: usize = 96;
/// Length of a private key, as the adapter passes it in.
pub const PRIVATE_KEY_BYTES: usize = 20;
/// Longest pad either side may send (PadA, PadB, PadC, PadD).
pub const PAD_MAX: usize = 512;
/// Longest initial payload (IA) a peer may send in step 3 (its `u16`
/// length field's limit).
pub const IA_MAX: usize = u16::MAX as usize;
/// Most infohashes a responder looks an incoming `SKEY` up among.
pub const INFO_HASHES_MAX: usize = 4096;
/// Keystream bytes discarded from each RC4 stream before use.
pub const RC4_DISCARD_BYTES: usize = 1024;
/// The verification constant: eight zero bytes.
const VC: [u8; 8] = [0; 8];
/// The start of a plain BitTorrent handshake.
const PLAIN_PREFIX: &[u8; 20] = b"\x13BitTorrent protocol";
/// The longest handshake a peer may send before its payload: the
/// initiator's, all pads and the initial payload at their maximum.
pub const HANDSHAKE_MAX: usize = KEY_BYTES + PAD_MAX + 20 + 20 + 8 + 4 + 2 + PAD_MAX + 2 + IA_MAX;

/// Sets of crypto methods, as in `crypto_provide` and `crypto_select`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Methods(pub u32);

impl Methods {
    /// Plaintext after the handshake (the handshake itself is obfuscated).
    pub const PLAINTEXT: Methods = Methods(0x01);
    /// RC4 for the whole stream.
    pub const RC4: Methods = Methods(0x02);
    /// Either.
    pub const BOTH: Methods = Methods(0x03);
    /// Neither (a responder so configured refuses every MSE handshake).
    pub const NONE: Methods = Methods(0);

    /// True if `m` is in the set.
    pub fn contains(self, m: Methods) -> bool {
        m.0 != 0 && self.0 & m.0 == m.0
    }
}

/// What a side accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Methods we provide (initiator) or may select (responder).
    pub methods: Methods,
    /// A responder takes a plain BitTorrent handshake instead of MSE.
    pub allow_plain: bool,
    /// A responder offered both methods selects RC4 (otherwise plaintext,
    /// as libtorrent does by default: the handshake stays obfuscated and
    /// the payload costs no cipher; a peer that wants RC4 offers only it).
    pub prefer_rc4: bool,
}

/// The randomness a handshake needs, from the adapter.
#[derive(Clone, Copy, Debug)]
pub struct Secret {
    /// The private key `X`, big-endian: 160 bits from the operating
    /// system's random source, fresh for every connection.
    pub private_key: [u8; PRIVATE_KEY_BYTES],
    /// Seeds the pad lengths and PadA/PadB contents (obfuscation, not
    /// secrecy).
    pub pad_seed: u64,
}

/// What the two sides agreed to carry after the handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// No MSE at all: the peer sent a plain BitTorrent handshake.
    None,
    /// MSE negotiated plaintext: the payload is not encrypted.
    Plaintext,
    /// MSE negotiated RC4: every payload byte goes through the keystreams.
    Rc4,
}

/// One direction's RC4 keystream, already past the handshake bytes.
/// (Boxed: the cipher state is 258 bytes, and outputs move it around.)
pub struct Keystream(Box<rc4::Rc4<U20>>);

impl Keystream {
    fn new(key: &[u8; 20]) -> Keystream {
        let mut c = Box::new(rc4::Rc4::<U20>::new(key.into()));
        c.apply_keystream(&mut [0u8; RC4_DISCARD_BYTES]);
        Keystream(c)
    }

    /// Encrypts or decrypts `buf` in place (RC4 is its own inverse); call
    /// it on every byte of the direction, in order.
    pub fn apply(&mut self, buf: &mut [u8]) {
        self.0.apply_keystream(buf);
    }
}

impl std::fmt::Debug for Keystream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keystream(..)")
    }
}

/// A finished handshake: how to carry the rest of the connection.
#[derive(Debug)]
pub struct Outcome {
    /// The method agreed.
    pub method: Method,
    /// The torrent the connection is for (the one dialed for, or the one
    /// an incoming MSE handshake named); `None` for a plain handshake.
    pub info_hash: Option<InfoHash>,
    /// For [`Method::Rc4`]: encrypts what we send from now on.
    pub send: Option<Keystream>,
    /// For [`Method::Rc4`]: decrypts what we receive from now on.
    pub receive: Option<Keystream>,
    /// Payload already received past the handshake, as plaintext (the
    /// peer's initial payload, then whatever followed it): hand it to the
    /// BitTorrent layer before anything read later.
    pub leftover: Vec<u8>,
}

/// Why a handshake failed; every one closes the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// A plain BitTorrent handshake, and the config refuses them.
    PlainRefused,
    /// An MSE handshake, and the config provides no method.
    MseRefused,
    /// We dialed with MSE and the peer answered with a plain BitTorrent
    /// handshake (it does not speak MSE: dial it again in plain).
    PeerSpeaksPlain,
    /// The peer's public key is 0, 1, `P-1` or not below `P`.
    BadKey,
    /// What we scan for did not come within the longest pad.
    NoSync,
    /// The peer asked for a torrent we do not serve.
    UnknownInfoHash,
    /// The decrypted verification constant is not zero (wrong keys).
    BadVc,
    /// A pad or initial payload length over its limit.
    TooLong,
    /// No method both sides accept.
    NoCommonMethod,
    /// The responder selected a method we did not provide, or several.
    BadSelect,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Error::PlainRefused => "a plain BitTorrent handshake, and encryption is required",
            Error::MseRefused => "an encrypted handshake, and encryption is off",
            Error::PeerSpeaksPlain => "the peer answered with a plain BitTorrent handshake",
            Error::BadKey => "the peer's public key is not a valid Diffie-Hellman value",
            Error::NoSync => "no synchronisation point within the longest pad",
            Error::UnknownInfoHash => "the peer asked for a torrent we do not serve",
            Error::BadVc => "the verification constant does not decrypt to zero",
            Error::TooLong => "a pad or initial payload over its limit",
            Error::NoCommonMethod => "no crypto method both sides accept",
            Error::BadSelect => "the peer selected a method we did not provide",
        };
        f.write_str(s)
    }
}

impl std::error::Error for Error {}

/// What the machine asks of its driver.
#[derive(Debug)]
pub enum Output {
    /// Write these bytes to the peer (before anything later).
    Transmit(Vec<u8>),
    /// The handshake succeeded; nothing more comes from this machine.
    Done(Outcome),
    /// The handshake failed; close the connection.
    Failed(Error),
    /// Nothing to do until more bytes arrive (or the handshake ended and
    /// its last output was taken).
    Pending,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Initiator,
    Responder,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Responder: plain BitTorrent or MSE?
    Detect,
    /// The peer's public key.
    PeerKey,
    /// Scanning for the sync value.
    Sync,
    /// Responder: the obfuscated infohash.
    Skey,
    /// The fixed encrypted fields after the sync point.
    Head,
    /// Responder: PadC and len(IA); initiator: PadD.
    Pad(usize),
    /// Responder: the initial payload.
    Ia(usize),
    Ended,
}

/// The MSE handshake of one connection (see the module docs).
pub struct Handshake {
    role: Role,
    config: Config,
    state: State,
    /// Bytes from the peer; `buf[..pos]` are parsed.
    buf: Vec<u8>,
    pos: usize,
    /// Where the peer's key ended (the scan for the sync value starts there).
    key_end: usize,
    private: U192,
    rng: Rng,
    out: VecDeque<Output>,
    secret: [u8; KEY_BYTES],
    /// Responder: the infohashes served and their `HASH('req2', ih)`.
    served: Vec<(InfoHash, [u8; 20])>,
    info_hash: Option<InfoHash>,
    send: Option<Keystream>,
    receive: Option<Keystream>,
    /// Initiator: the encrypted VC to scan for; responder: `HASH('req1', S)`.
    sync: Vec<u8>,
    /// Positions after `key_end` already searched for `sync` without a
    /// match, so bytes arriving in small pieces are not searched again.
    sync_searched: usize,
    /// Initiator: the initial payload to send in step 3.
    initial: Vec<u8>,
    /// Responder: the method provided by the peer; initiator: selected.
    methods: Methods,
    /// Responder: the decrypted initial payload.
    ia: Vec<u8>,
}

fn hash(parts: &[&[u8]]) -> [u8; 20] {
    let mut h = Sha1::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

fn modulus() -> U768 {
    U768::from_be_hex(P_HEX)
}

/// `2^x mod P`, 96 bytes big-endian.
fn public_key(x: &U192) -> [u8; KEY_BYTES] {
    modpow(&U768::from_u8(2), &modulus(), x)
}

/// `y^x mod P`, or `None` for a degenerate `y`.
fn shared_secret(y: &[u8], x: &U192) -> Option<[u8; KEY_BYTES]> {
    let p = modulus();
    let y = U768::from_be_slice(y);
    // 0, 1 and P-1 give a secret an observer can guess; P and above are
    // not numbers mod P.
    if y <= U768::ONE || y >= p.wrapping_sub(&U768::ONE) {
        return None;
    }
    Some(modpow(&y, &p, x))
}

/// `base^x mod p` for a 160-bit `x`, 96 bytes big-endian.
#[cfg(not(fuzzing))]
fn modpow(base: &U768, p: &U768, x: &U192) -> [u8; KEY_BYTES] {
    let params = DynResidueParams::new(p);
    DynResidue::new(base, params).pow_bounded_exp(x, 160).retrieve().to_be_bytes()
}

/// Under `cargo fuzz` only: the same, remembering the last few results.
/// The fuzz target's keys are fixed and most inputs keep the seeds' public
/// keys, so nearly every exponentiation repeats; without the memo each
/// input costs two 768-bit exponentiations (about 500 inputs a second),
/// with it the fuzzer spends its time on the handshake's parsing, which is
/// what it is there to test.
#[cfg(fuzzing)]
fn modpow(base: &U768, p: &U768, x: &U192) -> [u8; KEY_BYTES] {
    use std::cell::RefCell;
    type Memo = Vec<((u64, u64), [u8; KEY_BYTES])>;
    thread_local!(static MEMO: RefCell<Memo> = const { RefCell::new(Vec::new()) });
    const MEMO_MAX: usize = 16;
    // Entries are found by a 128-bit fingerprint of (base, x), not by
    // comparing the numbers: libFuzzer traces every memcmp, and comparing
    // 120-byte keys cost more than the exponentiations saved. A collision
    // could only make one fuzz input's handshake fail, never hide a panic.
    let words = base.as_words().iter().chain(x.as_words());
    let print = words.fold((0xcbf2_9ce4_8422_2325u64, 0x9e37_79b9_7f4a_7c15u64), |(a, b), &w| {
        (
            (a ^ w as u64).wrapping_mul(0x100_0000_01b3),
            (b ^ w as u64).rotate_left(23).wrapping_mul(0xff51_afd7_ed55_8ccd),
        )
    });
    if let Some(hit) = MEMO.with(|m| m.borrow().iter().find(|(f, _)| *f == print).map(|(_, v)| *v)) {
        return hit;
    }
    let params = DynResidueParams::new(p);
    let out = DynResidue::new(base, params).pow_bounded_exp(x, 160).retrieve().to_be_bytes();
    MEMO.with(|m| {
        let mut m = m.borrow_mut();
        if m.len() == MEMO_MAX {
            m.remove(0);
        }
        m.push((print, out));
    });
    out
}

fn private_key(secret: &Secret) -> U192 {
    let mut b = [0u8; 24];
    b[24 - PRIVATE_KEY_BYTES..].copy_from_slice(&secret.private_key);
    U192::from_be_slice(&b)
}

impl Handshake {
    /// The handshake of a connection we dialed for `info_hash`, providing
    /// `config.methods`, with `initial_payload` (at most [`IA_MAX`]
    /// bytes; usually empty, and the BitTorrent handshake follows once the
    /// method is known) carried in step 3. Its first output is step 1.
    ///
    /// # Panics
    /// If `initial_payload` is longer than [`IA_MAX`] (a caller's bug).
    pub fn initiator(config: Config, info_hash: InfoHash, secret: Secret, initial_payload: Vec<u8>) -> Handshake {
        assert!(initial_payload.len() <= IA_MAX, "the initial payload fits its u16 length");
        let mut h = Handshake::new(Role::Initiator, config, secret);
        h.info_hash = Some(info_hash);
        h.initial = initial_payload;
        h.state = State::PeerKey;
        h.send_key();
        h
    }

    /// The handshake of a connection we accepted, for any torrent in
    /// `served`, selecting from `config.methods`.
    ///
    /// # Panics
    /// If `served` has more than [`INFO_HASHES_MAX`] entries (a caller's
    /// bug: each one costs a hash per handshake).
    pub fn responder(config: Config, served: &[InfoHash], secret: Secret) -> Handshake {
        assert!(served.len() <= INFO_HASHES_MAX, "at most INFO_HASHES_MAX served torrents");
        let mut h = Handshake::new(Role::Responder, config, secret);
        h.served = served.iter().map(|ih| (*ih, hash(&[b"req2", &ih.0]))).collect();
        h.state = State::Detect;
        h
    }

    fn new(role: Role, config: Config, secret: Secret) -> Handshake {
        Handshake {
            role,
            config,
            state: State::Detect,
            buf: Vec::new(),
            pos: 0,
            key_end: 0,
            private: private_key(&secret),
            rng: Rng::new(secret.pad_seed),
            out: VecDeque::new(),
            secret: [0; KEY_BYTES],
            served: Vec::new(),
            info_hash: None,
            send: None,
            receive: None,
            sync: Vec::new(),
            sync_searched: 0,
            initial: Vec::new(),
            methods: Methods::NONE,
            ia: Vec::new(),
        }
    }

    /// True once the machine has said [`Output::Done`] or [`Output::Failed`].
    pub fn is_ended(&self) -> bool {
        self.state == State::Ended
    }

    /// Bytes read from the peer, in order. After the end they are ignored.
    pub fn receive(&mut self, bytes: &[u8]) {
        if self.state == State::Ended {
            return;
        }
        self.buf.extend_from_slice(bytes);
        while self.state != State::Ended && self.step() {}
    }

    /// The next thing to do; [`Output::Pending`] when there is nothing.
    pub fn poll_output(&mut self) -> Output {
        self.out.pop_front().unwrap_or(Output::Pending)
    }

    fn avail(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn fail(&mut self, e: Error) {
        self.state = State::Ended;
        self.buf = Vec::new();
        self.out.push_back(Output::Failed(e));
    }

    /// Step 1 or 2: our public key and a random pad.
    fn send_key(&mut self) {
        let mut msg = public_key(&self.private).to_vec();
        let pad = self.rng.below(PAD_MAX as u64 + 1) as usize;
        let start = msg.len();
        msg.resize(start + pad, 0);
        self.rng.fill(&mut msg[start..]);
        self.out.push_back(Output::Transmit(msg));
    }

    /// Takes `n` bytes, decrypted with the receive keystream.
    fn take_decrypted(&mut self, n: usize) -> Vec<u8> {
        let mut v = self.buf[self.pos..self.pos + n].to_vec();
        self.pos += n;
        if let Some(k) = &mut self.receive {
            k.apply(&mut v);
        }
        v
    }

    /// Parses what it can; true if the state moved (try again).
    fn step(&mut self) -> bool {
        match self.state {
            State::Detect => self.detect(),
            State::PeerKey => {
                // A plain peer that sends its handshake without waiting for
                // ours: no key will come (a key starting with these 20
                // bytes has odds of 2^-160), so say so now rather than at
                // the adapter's deadline.
                if self.role == Role::Initiator && self.buf.starts_with(PLAIN_PREFIX) {
                    self.fail(Error::PeerSpeaksPlain);
                    return true;
                }
                if self.avail() < KEY_BYTES {
                    return false;
                }
                let Some(s) = shared_secret(&self.buf[self.pos..self.pos + KEY_BYTES], &self.private) else {
                    self.fail(Error::BadKey);
                    return true;
                };
                self.secret = s;
                self.pos += KEY_BYTES;
                self.key_end = self.pos;
                match self.role {
                    Role::Initiator => self.send_step3(),
                    Role::Responder => self.sync = hash(&[b"req1", &self.secret]).to_vec(),
                }
                self.state = State::Sync;
                true
            }
            State::Sync => {
                let window = &self.buf[self.key_end..];
                let limit = PAD_MAX + self.sync.len();
                let hay = &window[..window.len().min(limit)];
                let from = self.sync_searched.min(hay.len());
                let first = self.sync[0];
                let found =
                    hay[from..].windows(self.sync.len()).position(|w| w[0] == first && w == self.sync.as_slice());
                self.sync_searched = from + hay.len().saturating_sub(from + self.sync.len() - 1);
                match found.map(|at| from + at) {
                    Some(at) => {
                        self.pos = self.key_end + at + self.sync.len();
                        self.state = match self.role {
                            Role::Initiator => State::Head,
                            Role::Responder => State::Skey,
                        };
                        true
                    }
                    None if window.len() >= limit => {
                        self.fail(Error::NoSync);
                        true
                    }
                    None => false,
                }
            }
            State::Skey => {
                if self.avail() < 20 {
                    return false;
                }
                let req3 = hash(&[b"req3", &self.secret]);
                let mut req2 = [0u8; 20];
                for (i, b) in req2.iter_mut().enumerate() {
                    *b = self.buf[self.pos + i] ^ req3[i];
                }
                self.pos += 20;
                let Some(ih) = self.served.iter().find(|(_, h)| *h == req2).map(|(ih, _)| *ih) else {
                    self.fail(Error::UnknownInfoHash);
                    return true;
                };
                self.info_hash = Some(ih);
                self.make_keys();
                self.state = State::Head;
                true
            }
            State::Head => self.head(),
            State::Pad(n) => {
                let need = n + if self.role == Role::Responder { 2 } else { 0 };
                if self.avail() < need {
                    return false;
                }
                let v = self.take_decrypted(need);
                match self.role {
                    Role::Initiator => self.finish(),
                    Role::Responder => {
                        let ia = u16::from_be_bytes([v[n], v[n + 1]]) as usize;
                        self.state = State::Ia(ia);
                    }
                }
                true
            }
            State::Ia(n) => {
                if self.avail() < n {
                    return false;
                }
                self.ia = self.take_decrypted(n);
                self.respond();
                true
            }
            State::Ended => false,
        }
    }

    fn detect(&mut self) -> bool {
        let have = &self.buf[..self.buf.len().min(PLAIN_PREFIX.len())];
        if have.is_empty() {
            return false;
        }
        if have == &PLAIN_PREFIX[..have.len()] {
            if have.len() < PLAIN_PREFIX.len() {
                return false;
            }
            if !self.config.allow_plain {
                self.fail(Error::PlainRefused);
                return true;
            }
            let leftover = std::mem::take(&mut self.buf);
            self.end(Outcome { method: Method::None, info_hash: None, send: None, receive: None, leftover });
            return true;
        }
        if self.config.methods.0 & Methods::BOTH.0 == 0 {
            self.fail(Error::MseRefused);
            return true;
        }
        self.send_key();
        self.state = State::PeerKey;
        true
    }

    /// Both keystreams, once `S` and `SKEY` are known.
    fn make_keys(&mut self) {
        let ih = self.info_hash.expect("the infohash is known before the keys").0;
        let key_a = hash(&[b"keyA", &self.secret, &ih]);
        let key_b = hash(&[b"keyB", &self.secret, &ih]);
        let (send, receive) = match self.role {
            Role::Initiator => (key_a, key_b),
            Role::Responder => (key_b, key_a),
        };
        self.send = Some(Keystream::new(&send));
        self.receive = Some(Keystream::new(&receive));
    }

    /// Initiator, step 3.
    fn send_step3(&mut self) {
        self.make_keys();
        let ih = self.info_hash.expect("an initiator knows its infohash").0;
        let req3 = hash(&[b"req3", &self.secret]);
        let mut msg = hash(&[b"req1", &self.secret]).to_vec();
        msg.extend(hash(&[b"req2", &ih]).iter().zip(req3).map(|(a, b)| a ^ b));
        let mut enc = VC.to_vec();
        enc.extend_from_slice(&self.config.methods.0.to_be_bytes());
        let pad = self.rng.below(PAD_MAX as u64 + 1) as usize;
        enc.extend_from_slice(&(pad as u16).to_be_bytes());
        enc.resize(enc.len() + pad, 0);
        enc.extend_from_slice(&(self.initial.len() as u16).to_be_bytes());
        enc.append(&mut self.initial);
        self.send.as_mut().expect("keys made above").apply(&mut enc);
        msg.append(&mut enc);
        self.out.push_back(Output::Transmit(msg));
        // What B's step 4 starts with: VC under B's keystream. Encrypting
        // it here also moves our receive keystream past those 8 bytes.
        let mut vc = VC;
        self.receive.as_mut().expect("keys made above").apply(&mut vc);
        self.sync = vc.to_vec();
    }

    /// The fixed encrypted fields after the sync point.
    fn head(&mut self) -> bool {
        match self.role {
            Role::Responder => {
                if self.avail() < 14 {
                    return false;
                }
                let v = self.take_decrypted(14);
                if v[..8] != VC {
                    self.fail(Error::BadVc);
                    return true;
                }
                self.methods = Methods(u32::from_be_bytes([v[8], v[9], v[10], v[11]]));
                let pad = u16::from_be_bytes([v[12], v[13]]) as usize;
                if pad > PAD_MAX {
                    self.fail(Error::TooLong);
                    return true;
                }
                self.state = State::Pad(pad);
                true
            }
            Role::Initiator => {
                if self.avail() < 6 {
                    return false;
                }
                let v = self.take_decrypted(6);
                let select = Methods(u32::from_be_bytes([v[0], v[1], v[2], v[3]]));
                let pad = u16::from_be_bytes([v[4], v[5]]) as usize;
                if select != Methods::PLAINTEXT && select != Methods::RC4 || !self.config.methods.contains(select) {
                    self.fail(Error::BadSelect);
                    return true;
                }
                if pad > PAD_MAX {
                    self.fail(Error::TooLong);
                    return true;
                }
                self.methods = select;
                self.state = State::Pad(pad);
                true
            }
        }
    }

    /// Responder, step 4, once the initial payload is in.
    fn respond(&mut self) {
        let common = Methods(self.methods.0 & self.config.methods.0);
        let select = if common.contains(Methods::PLAINTEXT) && !self.config.prefer_rc4 {
            Methods::PLAINTEXT
        } else if common.contains(Methods::RC4) {
            Methods::RC4
        } else if common.contains(Methods::PLAINTEXT) {
            Methods::PLAINTEXT
        } else {
            self.fail(Error::NoCommonMethod);
            return;
        };
        let mut enc = VC.to_vec();
        enc.extend_from_slice(&select.0.to_be_bytes());
        let pad = self.rng.below(PAD_MAX as u64 + 1) as usize;
        enc.extend_from_slice(&(pad as u16).to_be_bytes());
        enc.resize(enc.len() + pad, 0);
        self.send.as_mut().expect("keys made before step 4").apply(&mut enc);
        self.out.push_back(Output::Transmit(enc));
        self.methods = select;
        self.finish();
    }

    /// Ends with the negotiated method; the rest of the buffer is payload.
    fn finish(&mut self) {
        let mut leftover = std::mem::take(&mut self.ia);
        let rest = self.buf.split_off(self.pos);
        let rc4 = self.methods == Methods::RC4;
        let start = leftover.len();
        leftover.extend_from_slice(&rest);
        if rc4 {
            self.receive.as_mut().expect("keys made before the end").apply(&mut leftover[start..]);
        }
        let (method, send, receive) =
            if rc4 { (Method::Rc4, self.send.take(), self.receive.take()) } else { (Method::Plaintext, None, None) };
        self.end(Outcome { method, info_hash: self.info_hash, send, receive, leftover });
    }

    fn end(&mut self, outcome: Outcome) {
        self.state = State::Ended;
        self.buf = Vec::new();
        self.pos = 0;
        self.out.push_back(Output::Done(outcome));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prime_is_768_bits_and_odd() {
        assert_eq!(P_HEX.len(), KEY_BYTES * 2);
        let p = modulus().to_be_bytes();
        assert_eq!(p[0], 0xff);
        assert_eq!(p[KEY_BYTES - 1] & 1, 1);
    }

    #[test]
    fn both_sides_of_the_exchange_compute_the_same_secret() {
        let xa = private_key(&Secret { private_key: [7; 20], pad_seed: 0 });
        let xb = private_key(&Secret { private_key: [9; 20], pad_seed: 0 });
        let (ya, yb) = (public_key(&xa), public_key(&xb));
        assert_eq!(shared_secret(&yb, &xa), shared_secret(&ya, &xb));
    }

    #[test]
    fn degenerate_public_keys_are_refused() {
        let x = private_key(&Secret { private_key: [7; 20], pad_seed: 0 });
        let p = modulus();
        for y in [U768::ZERO, U768::ONE, p.wrapping_sub(&U768::ONE), p, U768::MAX] {
            assert_eq!(shared_secret(&y.to_be_bytes(), &x), None);
        }
    }
}
