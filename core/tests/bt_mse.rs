//! The MSE handshake machine: an initiator and a responder agree for any
//! split of either byte stream; refusals are the ones the config asks for;
//! hostile bytes never panic; the numbers match an independent
//! implementation of the spec.

use proptest::prelude::*;
use rumor_core::bt::metainfo::InfoHash;
use rumor_core::bt::mse::{Config, Error, Handshake, Method, Methods, Outcome, Output, Secret, HANDSHAKE_MAX};

/// One side of a driven pair: its machine, then what it ended with and the
/// payload it received after the handshake (decrypted).
struct Side {
    hs: Handshake,
    outcome: Option<Outcome>,
    failed: Option<Error>,
    app: Vec<u8>,
    /// Payload this side sends as soon as its handshake is done.
    payload: Vec<u8>,
}

impl Side {
    fn new(hs: Handshake, payload: &[u8]) -> Side {
        Side { hs, outcome: None, failed: None, app: Vec::new(), payload: payload.to_vec() }
    }

    /// Drains the machine into `wire` (bytes toward the other side).
    fn drain(&mut self, wire: &mut Vec<u8>) {
        loop {
            match self.hs.poll_output() {
                Output::Transmit(b) => wire.extend_from_slice(&b),
                Output::Done(mut o) => {
                    let mut p = self.payload.clone();
                    if let Some(k) = &mut o.send {
                        k.apply(&mut p);
                    }
                    wire.extend_from_slice(&p);
                    self.app.extend_from_slice(&o.leftover);
                    self.outcome = Some(o);
                }
                Output::Failed(e) => self.failed = Some(e),
                Output::Pending => return,
            }
        }
    }

    /// Bytes from the other side: the machine's until it is done, then
    /// payload through the receive keystream.
    fn deliver(&mut self, bytes: &[u8]) {
        match &mut self.outcome {
            None => self.hs.receive(bytes),
            Some(o) => {
                let mut b = bytes.to_vec();
                if let Some(k) = &mut o.receive {
                    k.apply(&mut b);
                }
                self.app.extend_from_slice(&b);
            }
        }
    }
}

/// Runs the pair to the end, cutting each direction's bytes into chunks
/// of the sizes in `cuts` (cycled); a bounded number of rounds, so a
/// machine that stops making progress fails the test instead of hanging.
fn drive(a: &mut Side, b: &mut Side, cuts: &[usize]) {
    let (mut a_to_b, mut b_to_a) = (Vec::new(), Vec::new());
    let mut i = 0;
    for _ in 0..100_000 {
        a.drain(&mut a_to_b);
        b.drain(&mut b_to_a);
        if a_to_b.is_empty() && b_to_a.is_empty() {
            return;
        }
        for (wire, to) in [(&mut a_to_b, &mut *b), (&mut b_to_a, &mut *a)] {
            let n = cuts[i % cuts.len()].clamp(1, wire.len().max(1)).min(wire.len());
            i += 1;
            let chunk: Vec<u8> = wire.drain(..n).collect();
            if to.failed.is_none() && !chunk.is_empty() {
                to.deliver(&chunk);
            }
        }
    }
    panic!("the handshake did not settle");
}

fn secret(k: u8, seed: u64) -> Secret {
    Secret { private_key: [k; 20], pad_seed: seed }
}

fn methods() -> impl Strategy<Value = Methods> {
    prop_oneof![Just(Methods::PLAINTEXT), Just(Methods::RC4), Just(Methods::BOTH)]
}

const IH: InfoHash = InfoHash([0xab; 20]);

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn initiator_and_responder_agree_for_any_split_of_the_streams(
        mine in methods(),
        theirs in methods(),
        prefer_rc4 in any::<bool>(),
        ka in 1u8..=255, kb in 1u8..=255,
        sa in any::<u64>(), sb in any::<u64>(),
        cuts in proptest::collection::vec(1usize..700, 1..8),
        pa in proptest::collection::vec(any::<u8>(), 0..300),
        pb in proptest::collection::vec(any::<u8>(), 0..300),
        ia in proptest::collection::vec(any::<u8>(), 0..100),
    ) {
        let served = [InfoHash([1; 20]), IH, InfoHash([2; 20])];
        let mut a = Side::new(Handshake::initiator(Config { methods: mine, allow_plain: false, prefer_rc4: false }, IH, secret(ka, sa), ia.clone()), &pa);
        let mut b = Side::new(Handshake::responder(Config { methods: theirs, allow_plain: true, prefer_rc4 }, &served, secret(kb, sb)), &pb);
        drive(&mut a, &mut b, &cuts);
        let common = Methods(mine.0 & theirs.0);
        if common == Methods::NONE {
            prop_assert_eq!(b.failed, Some(Error::NoCommonMethod));
            prop_assert!(a.outcome.is_none());
            return Ok(());
        }
        let want = if common.contains(Methods::RC4) && (prefer_rc4 || !common.contains(Methods::PLAINTEXT)) {
            Method::Rc4
        } else {
            Method::Plaintext
        };
        let (oa, ob) = (a.outcome.as_ref().expect("initiator done"), b.outcome.as_ref().expect("responder done"));
        prop_assert_eq!(oa.method, want);
        prop_assert_eq!(ob.method, want);
        prop_assert_eq!(ob.info_hash, Some(IH));
        prop_assert_eq!(oa.send.is_some(), want == Method::Rc4);
        // The responder sees the initial payload, then what the initiator
        // sent after the handshake; the initiator what the responder sent.
        let mut want_b = ia.clone();
        want_b.extend_from_slice(&pa);
        prop_assert_eq!(&b.app, &want_b);
        prop_assert_eq!(&a.app, &pb);
    }

    #[test]
    fn a_responder_never_panics_on_any_bytes_in_any_split(
        bytes in proptest::collection::vec(any::<u8>(), 0..2000),
        cuts in proptest::collection::vec(1usize..300, 1..8),
        plain in any::<bool>(),
    ) {
        let mut h = Handshake::responder(Config { methods: Methods::BOTH, allow_plain: plain, prefer_rc4: false }, &[IH], secret(3, 4));
        let mut at = 0;
        let mut i = 0;
        while at < bytes.len() {
            let n = cuts[i % cuts.len()].min(bytes.len() - at);
            h.receive(&bytes[at..at + n]);
            at += n;
            i += 1;
            while !matches!(h.poll_output(), Output::Pending) {}
        }
        // Random bytes past every pad cannot hold the sync value.
        if bytes.len() >= 96 + 512 + 20 && bytes[0] != 19 {
            prop_assert!(h.is_ended());
        }
    }

    #[test]
    fn an_initiator_never_panics_on_any_bytes_in_any_split(
        bytes in proptest::collection::vec(any::<u8>(), 0..2000),
        cuts in proptest::collection::vec(1usize..300, 1..8),
    ) {
        let mut h = Handshake::initiator(Config { methods: Methods::BOTH, allow_plain: false, prefer_rc4: false }, IH, secret(3, 4), Vec::new());
        let mut at = 0;
        let mut i = 0;
        while at < bytes.len() {
            let n = cuts[i % cuts.len()].min(bytes.len() - at);
            h.receive(&bytes[at..at + n]);
            at += n;
            i += 1;
            while !matches!(h.poll_output(), Output::Pending) {}
        }
        if bytes.len() >= 96 + 512 + 8 {
            prop_assert!(h.is_ended());
        }
    }
}

fn outputs(h: &mut Handshake) -> Vec<Output> {
    let mut v = Vec::new();
    loop {
        match h.poll_output() {
            Output::Pending => return v,
            o => v.push(o),
        }
    }
}

#[test]
fn a_plain_bittorrent_handshake_passes_through_a_responder_that_allows_it() {
    let mut hs = b"\x13BitTorrent protocol".to_vec();
    hs.extend_from_slice(&[0; 48]);
    let mut h = Handshake::responder(
        Config { methods: Methods::BOTH, allow_plain: true, prefer_rc4: false },
        &[IH],
        secret(1, 1),
    );
    h.receive(&hs[..5]);
    assert!(outputs(&mut h).is_empty(), "five bytes of the prefix decide nothing");
    h.receive(&hs[5..]);
    match outputs(&mut h).as_slice() {
        [Output::Done(o)] => {
            assert_eq!(o.method, Method::None);
            assert_eq!(o.leftover, hs);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_responder_that_requires_encryption_refuses_a_plain_handshake() {
    let mut h = Handshake::responder(
        Config { methods: Methods::RC4, allow_plain: false, prefer_rc4: false },
        &[IH],
        secret(1, 1),
    );
    h.receive(b"\x13BitTorrent protocol\0\0\0\0\0\0\0\0");
    assert!(matches!(outputs(&mut h).as_slice(), [Output::Failed(Error::PlainRefused)]));
}

#[test]
fn a_responder_with_no_methods_refuses_an_encrypted_handshake() {
    let mut h = Handshake::responder(
        Config { methods: Methods::NONE, allow_plain: true, prefer_rc4: false },
        &[IH],
        secret(1, 1),
    );
    h.receive(&[0x55; 96]);
    assert!(matches!(outputs(&mut h).as_slice(), [Output::Failed(Error::MseRefused)]));
}

#[test]
fn a_responder_refuses_a_torrent_it_does_not_serve() {
    let config = Config { methods: Methods::BOTH, allow_plain: false, prefer_rc4: false };
    let mut a = Side::new(Handshake::initiator(config, InfoHash([9; 20]), secret(5, 6), Vec::new()), b"");
    let mut b = Side::new(Handshake::responder(config, &[IH], secret(7, 8)), b"");
    drive(&mut a, &mut b, &[1000]);
    assert_eq!(b.failed, Some(Error::UnknownInfoHash));
    assert!(a.outcome.is_none());
}

#[test]
fn the_longest_handshake_fits_the_documented_bound() {
    assert_eq!(HANDSHAKE_MAX, 96 + 512 + 20 + 20 + 8 + 4 + 2 + 512 + 2 + 65535);
}

/// The byte stream `from` sends toward a peer with secret `[7; 20]` and
/// pad seed 1 (the fuzz target's fixed machine), driven to the end.
fn transcript(initiator_is_fixed: bool) -> Vec<u8> {
    let config = Config { methods: Methods::BOTH, allow_plain: false, prefer_rc4: true };
    let fixed = secret(7, 1);
    let other = secret(5, 2);
    let (sa, sb) = if initiator_is_fixed { (fixed, other) } else { (other, fixed) };
    let mut a = Side::new(Handshake::initiator(config, IH, sa, b"hello".to_vec()), b"after");
    let mut b = Side::new(Handshake::responder(config, &[IH], sb), b"reply");
    let (mut ab, mut ba, mut rec_ab, mut rec_ba) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..100 {
        a.drain(&mut ab);
        b.drain(&mut ba);
        if ab.is_empty() && ba.is_empty() {
            break;
        }
        rec_ab.extend_from_slice(&ab);
        rec_ba.extend_from_slice(&ba);
        b.deliver(&std::mem::take(&mut ab));
        a.deliver(&std::mem::take(&mut ba));
    }
    assert!(a.outcome.is_some() && b.outcome.is_some());
    if initiator_is_fixed {
        rec_ba
    } else {
        rec_ab
    }
}

/// Writes the fuzz target's seeds (`cargo test -p rumor-core --test bt_mse
/// -- --ignored`): real transcripts, so mutations reach every stage.
#[test]
#[ignore]
fn write_the_fuzz_seeds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/bt_mse");
    std::fs::create_dir_all(&dir).unwrap();
    let mut seeds: Vec<(&str, Vec<u8>)> = Vec::new();
    seeds.push(("responder-transcript", [&[0x1c][..], &transcript(false)].concat()));
    seeds.push(("initiator-transcript", [&[0x0d][..], &transcript(true)].concat()));
    let mut plain = b"\x10\x13BitTorrent protocol".to_vec();
    plain.extend_from_slice(&[0; 48]);
    seeds.push(("plain-handshake", plain));
    seeds.push(("pair-both", vec![0x0e, 3, 9, 1, 50, 200]));
    seeds.push(("pair-rc4-vs-plaintext", vec![0x0a, 1, 0, 7]));
    for (name, bytes) in seeds {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn transmit(h: &mut Handshake) -> Vec<u8> {
    match h.poll_output() {
        Output::Transmit(b) => b,
        other => panic!("expected a transmit, got {other:?}"),
    }
}

/// Values from an independent implementation of the spec (Python's
/// `pow`, `hashlib.sha1` and a textbook RC4) for private keys `[7; 20]`
/// (A) and `[9; 20]` (B) and infohash `[0xab; 20]`. The end-to-end check
/// against a real client is the `bt_encryption` conformance suite
/// (libtorrent with RC4 forced).
#[test]
fn the_exchange_matches_an_independent_implementation_of_the_spec() {
    let ya = unhex("ef73bd17b32dc4378e4f3d64b1b7692650f67cce83e48b902f304e26e139ba934cbd8d8260c5baf425e9bafd171b535e67340464866f90768f458ecc206d067eef265ccc96da8b36cf9a573a89cc87e453920fda0c48d967703be3f13a6247dc");
    let yb = unhex("eed39e0b44c70cea647823ab1bcab45c62d2e14a74c29fb422e62484577459abc73ab42d08e97b0bd7340e1875807413936569904008c0195718de7226f0cc420d7e838f081d22d4a73ea8d5db4f9d108aec2057e53627d37efd7c04c2f99630");
    let step3 =
        unhex("d2c6b9cb511ebb2a9d63541944e24baed3feddbd3d417aa9be3c38b05843cfbca43b53944b54f99a785a48a33f63a5f7");
    let vc_b = unhex("7d6d0100e0ff85c0");
    let config = Config { methods: Methods::BOTH, allow_plain: false, prefer_rc4: true };
    let mut a = Handshake::initiator(config, IH, secret(7, 1), Vec::new());
    let mut b = Handshake::responder(config, &[IH], secret(9, 1));
    let a1 = transmit(&mut a);
    assert_eq!(a1[..96], ya[..], "Ya");
    b.receive(&a1);
    let b2 = transmit(&mut b);
    assert_eq!(b2[..96], yb[..], "Yb");
    a.receive(&b2);
    let a3 = transmit(&mut a);
    assert_eq!(a3[..48], step3[..], "HASH('req1', S), the obfuscated SKEY, and VC under keyA");
    b.receive(&a3);
    let b4 = transmit(&mut b);
    assert_eq!(b4[..8], vc_b[..], "VC under keyB");
    assert!(matches!(b.poll_output(), Output::Done(o) if o.method == Method::Rc4));
}

#[test]
fn an_initiator_answered_with_a_plain_handshake_fails_at_once() {
    let mut h = Handshake::initiator(
        Config { methods: Methods::BOTH, allow_plain: false, prefer_rc4: false },
        IH,
        secret(1, 1),
        Vec::new(),
    );
    transmit(&mut h);
    h.receive(b"\x13BitTorrent protocol\0\0\0\0\0\0\0\0");
    assert!(matches!(outputs(&mut h).as_slice(), [Output::Failed(Error::PeerSpeaksPlain)]));
}
