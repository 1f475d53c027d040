//! Hostile bytes never panic the envelope/message decoder, nor the machine.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use proptest::prelude::*;
use rumor_core::gossip::{open, Config, Gossip, Input, Keyring, Now, Output, PeerAddr};

const KEY: [u8; 32] = [5; 32];

/// Seals arbitrary plaintext under the cluster key, so the parser behind the
/// AEAD sees hostile input too (a peer that holds the key but misbehaves).
fn seal_raw(plain: &[u8]) -> Vec<u8> {
    let c = XChaCha20Poly1305::new(&KEY.into());
    let header = [1u8, 1u8];
    let nonce = [9u8; 24];
    let ct = c.encrypt(XNonce::from_slice(&nonce), Payload { msg: plain, aad: &header }).unwrap();
    let mut out = header.to_vec();
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn opening_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let ring = Keyring::new(1, KEY);
        let _ = open(&ring, &bytes, 65_536);
    }

    #[test]
    fn parsing_arbitrary_authenticated_plaintext_never_panics(
        flag in 0u8..3,
        body in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let ring = Keyring::new(1, KEY);
        let mut plain = vec![flag];
        plain.extend_from_slice(&body);
        let _ = open(&ring, &seal_raw(&plain), 65_536);
    }

    #[test]
    fn the_machine_drops_arbitrary_authenticated_messages_without_panicking(
        msgs in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 1..20),
    ) {
        let now = Now { at: rumor_core::time::Instant::ZERO, wall_ms: 1_700_000_000_000 };
        let mut g = Gossip::new(Config::new(PeerAddr::from("me"), Keyring::new(1, KEY)), 1, now, 3);
        for m in msgs {
            let mut plain = vec![0u8];
            plain.extend_from_slice(&m);
            g.handle(now, Input::Receive { from: PeerAddr::from("x"), bytes: seal_raw(&plain) });
            while !matches!(g.poll_output(), Output::Timeout(_)) {}
        }
    }
}

// ----- the direct reader of probes and gossip rounds, held to postcard -----

use bytes::Bytes;
use rumor_core::gossip::{
    decode_packet, decode_packet_fast, encode_packet, Body, DecodeError, MemberState, MemberUpdate, Packet, Pushed,
};
use rumor_core::replica::{Entry, Namespace, Version};

/// What postcard alone makes of `bytes` as a whole packet.
fn by_postcard(bytes: &[u8]) -> Result<Packet, DecodeError> {
    match postcard::take_from_bytes::<Packet>(bytes) {
        Ok((p, [])) => Ok(p),
        _ => Err(DecodeError::BadFormat),
    }
}

/// Integers spread over every varint length, edges included.
fn any_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..200,
        any::<u64>(),
        (0u32..64).prop_map(|b| 1u64 << b),
        (1u32..64).prop_map(|b| (1u64 << b) - 1),
        Just(u64::MAX)
    ]
}

fn any_u32() -> impl Strategy<Value = u32> {
    prop_oneof![0u32..200, any::<u32>(), Just(u32::MAX)]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof!["n[0-9]{1,6}", "[0-9.]{7,15}:[0-9]{1,5}", "\\PC{0,30}"]
}

fn blob() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..40).prop_map(Bytes::from)
}

fn update() -> impl Strategy<Value = MemberUpdate> {
    (any_u64(), text(), any_u64(), 0u8..4).prop_map(|(id, addr, incarnation, s)| MemberUpdate {
        id,
        addr: addr.as_str().into(),
        incarnation,
        state: [MemberState::Alive, MemberState::Suspect, MemberState::Dead, MemberState::Left][s as usize],
    })
}

fn entry() -> impl Strategy<Value = Entry> {
    (any::<u16>(), blob(), blob(), any_u64(), any_u64(), any_u64(), any::<bool>()).prop_map(
        |(ns, key, value, writer, version, expires_ms, deleted)| Entry {
            ns: Namespace(ns),
            key,
            value,
            writer,
            version: Version(version),
            expires_ms,
            deleted,
        },
    )
}

fn marks() -> impl Strategy<Value = Vec<(u64, Version)>> {
    prop::collection::vec((any_u64(), any_u64().prop_map(Version)), 0..6)
}

/// Bodies the direct reader takes (probes, rounds) and some it leaves to
/// postcard.
fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        (any_u32(), any_u64(), any_u32()).prop_map(|(seq, hash, writers)| Body::Ping { seq, hash, writers }),
        any_u32().prop_map(|seq| Body::Ack { seq }),
        (
            prop::option::of((any_u64(), any_u32())),
            prop::collection::vec(
                (entry(), any_u64().prop_map(Version)).prop_map(|(entry, prev)| Pushed { entry, prev }),
                0..4
            ),
            marks(),
        )
            .prop_map(|(summary, push, recent)| Body::Syn { summary, push, recent }),
        Just(Body::Join),
        Just(Body::Leave),
        (any_u32(), any_u64(), text()).prop_map(|(seq, target, a)| Body::PingReq {
            seq,
            target,
            target_addr: a.as_str().into()
        }),
        (any_u32(), prop::collection::vec(entry(), 0..3)).prop_map(|(id, entries)| Body::Found { id, entries }),
    ]
}

fn packet() -> impl Strategy<Value = Packet> {
    (any_u64(), text(), any_u64(), any_u64(), any_u64(), any::<bool>(), prop::collection::vec(update(), 0..7), body())
        .prop_map(|(from, addr, incarnation, sent_ms, seq, complete, updates, body)| Packet {
            from,
            addr: addr.as_str().into(),
            incarnation,
            sent_ms,
            seq,
            complete,
            updates,
            body,
        })
}

/// A change to a valid encoding: a byte replaced, inserted or removed, or
/// the end cut off.
#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        (any::<usize>(), prop_oneof![Just(0x80u8), Just(0xFF), Just(0x01), Just(0x02), any::<u8>()])
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Remove),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(mut bytes: Vec<u8>, m: &Mutation) -> Vec<u8> {
    let n = bytes.len().max(1);
    match *m {
        Mutation::Set(i, b) if !bytes.is_empty() => bytes[i % n] = b,
        Mutation::Insert(i, b) => bytes.insert(i % (bytes.len() + 1), b),
        Mutation::Remove(i) if !bytes.is_empty() => {
            bytes.remove(i % n);
        }
        Mutation::Truncate(i) => bytes.truncate(i % n),
        _ => {}
    }
    bytes
}

/// The one claim the direct reader makes: a packet it returns is the one
/// postcard returns for the same bytes; and the decoder as a whole always
/// answers as postcard does.
fn agrees_with_postcard(bytes: &[u8]) -> Result<(), TestCaseError> {
    let general = by_postcard(bytes);
    if let Some(fast) = decode_packet_fast(bytes) {
        prop_assert_eq!(Ok(fast), general.clone());
    }
    prop_assert_eq!(decode_packet(bytes), general);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn the_direct_reader_decodes_every_probe_and_round_as_postcard_does(p in packet()) {
        let bytes = postcard::to_allocvec(&p).unwrap();
        let direct = matches!(p.body, Body::Ping { .. } | Body::Ack { .. } | Body::Syn { .. });
        let fast = decode_packet_fast(&bytes);
        prop_assert_eq!(fast.is_some(), direct, "the direct reader takes exactly probes and rounds");
        if let Some(fast) = fast {
            prop_assert_eq!(&fast, &p);
        }
        prop_assert_eq!(decode_packet(&bytes), Ok(p));
    }

    #[test]
    fn a_changed_encoding_decodes_as_postcard_decodes_it(p in packet(), ms in prop::collection::vec(mutation(), 1..4)) {
        let mut bytes = postcard::to_allocvec(&p).unwrap();
        for m in &ms {
            bytes = mutate(bytes, m);
        }
        agrees_with_postcard(&bytes)?;
    }

    #[test]
    fn arbitrary_bytes_decode_as_postcard_decodes_them(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        agrees_with_postcard(&bytes)?;
    }
}

#[test]
fn varints_at_postcard_limits_decode_as_postcard_decodes_them() {
    // An Ack whose sequence is written with every length and last byte a
    // 32-bit varint may have (and one too many), after a minimal header.
    let header = postcard::to_allocvec(&Packet {
        from: 1,
        addr: "n1".into(),
        incarnation: 0,
        sent_ms: 0,
        seq: 0,
        complete: false,
        updates: vec![],
        body: Body::Join,
    })
    .unwrap();
    let header = &header[..header.len() - 1]; // without Join's variant byte
    let mut seen_fast = 0;
    for len in 1..=6usize {
        for last in [0x00u8, 0x01, 0x0F, 0x10, 0x7F] {
            let mut bytes = header.to_vec();
            bytes.push(1); // Ack
            bytes.extend(std::iter::repeat_n(0xFF, len - 1));
            bytes.push(last);
            let general = by_postcard(&bytes);
            if let Some(fast) = decode_packet_fast(&bytes) {
                seen_fast += 1;
                assert_eq!(Ok(fast), general, "len {len}, last {last:#x}");
            }
            assert_eq!(decode_packet(&bytes), general, "len {len}, last {last:#x}");
        }
    }
    assert!(seen_fast > 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn every_packet_is_written_as_postcard_writes_it(p in packet(), prefix in prop::collection::vec(any::<u8>(), 0..30)) {
        let mut expected = prefix.clone();
        expected.extend(postcard::to_allocvec(&p).unwrap());
        prop_assert_eq!(encode_packet(&p, prefix), expected);
    }
}
