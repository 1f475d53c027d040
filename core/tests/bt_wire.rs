use bytes::Bytes;
use proptest::prelude::*;
use rumor_core::bt::metainfo::InfoHash;
use rumor_core::bt::wire::*;

fn no_handshake(piece_count: u32) -> DecoderConfig {
    DecoderConfig { piece_count, expect_handshake: false, ..DecoderConfig::default() }
}

/// The most a decoder under `DecoderConfig { piece_count, .. }` keeps
/// besides one chunk: one partial message.
fn d_max(piece_count: u32) -> usize {
    4 + DecoderConfig { piece_count, ..DecoderConfig::default() }.message_len_max() as usize
}

fn decode_all(cfg: DecoderConfig, bytes: &[u8]) -> Vec<Result<Message, WireError>> {
    let mut d = Decoder::new(cfg);
    d.feed(bytes);
    std::iter::from_fn(|| d.next()).collect()
}

fn block() -> impl Strategy<Value = BlockRef> {
    (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(index, begin, length)| BlockRef { index, begin, length })
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        Just(Message::KeepAlive),
        Just(Message::Choke),
        Just(Message::Unchoke),
        Just(Message::Interested),
        Just(Message::NotInterested),
        any::<u32>().prop_map(Message::Have),
        // 100 pieces -> 13 bytes, last 4 bits spare and zero.
        proptest::collection::vec(any::<u8>(), 13).prop_map(|mut b| {
            b[12] &= 0xF0;
            Message::Bitfield(Bytes::from(b))
        }),
        block().prop_map(Message::Request),
        (any::<u32>(), any::<u32>(), proptest::collection::vec(any::<u8>(), 0..=16384))
            .prop_map(|(index, begin, d)| Message::Piece { index, begin, data: Bytes::from(d) }),
        block().prop_map(Message::Cancel),
        any::<u16>().prop_map(Message::Port),
        any::<u32>().prop_map(Message::Suggest),
        Just(Message::HaveAll),
        Just(Message::HaveNone),
        block().prop_map(Message::Reject),
        any::<u32>().prop_map(Message::AllowedFast),
        (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..300))
            .prop_map(|(id, p)| { Message::Extended { id, payload: Bytes::from(p) } }),
    ]
}

#[test]
fn a_handshake_round_trips_and_advertises_fast_and_extended() {
    let h = Handshake::new(InfoHash([3; 20]), [9; 20]);
    let mut b = Vec::new();
    h.encode(&mut b);
    assert_eq!(b.len(), Handshake::LEN);
    let p = Handshake::parse(&b).unwrap();
    assert_eq!(p, h);
    assert!(p.supports_extended() && p.supports_fast() && !p.supports_dht());
}

#[test]
fn the_decoder_yields_the_handshake_then_messages() {
    let mut b = Vec::new();
    Handshake::new(InfoHash([1; 20]), [2; 20]).encode(&mut b);
    Message::Interested.encode(&mut b);
    let mut d = Decoder::new(DecoderConfig::default());
    d.feed(&b[..40]);
    assert!(d.take_handshake().is_none());
    assert!(d.next().is_none());
    d.feed(&b[40..]);
    assert_eq!(d.take_handshake().unwrap().unwrap().peer_id, [2; 20]);
    assert_eq!(d.next(), Some(Ok(Message::Interested)));
    assert_eq!(d.next(), None);
}

#[test]
fn a_wrong_protocol_string_is_fatal() {
    let mut d = Decoder::new(DecoderConfig::default());
    d.feed(&[0u8; 68]);
    let e = d.take_handshake().unwrap().unwrap_err();
    assert_eq!(e.kind, WireErrorKind::NotBitTorrent);
    assert!(d.is_dead());
}

#[test]
fn an_oversized_length_is_refused_before_its_body_arrives() {
    let mut d = Decoder::new(no_handshake(10));
    d.feed(&[0x00, 0x20, 0x00, 0x00]);
    let e = d.next().unwrap().unwrap_err();
    assert!(matches!(e.kind, WireErrorKind::TooLong { id: None, .. }));
    assert!(e.is_fatal());
    assert_eq!(d.next(), None);
}

#[test]
fn a_piece_larger_than_a_block_is_refused() {
    let mut b = Vec::new();
    encode_piece_header(0, 0, 16385, &mut b);
    let r = decode_all(no_handshake(10), &b);
    assert!(matches!(r[0].as_ref().unwrap_err().kind, WireErrorKind::TooLong { id: Some(7), len: 16394, max: 16393 }));
}

#[test]
fn a_fixed_size_message_with_the_wrong_length_is_refused() {
    let r = decode_all(no_handshake(10), &[0, 0, 0, 2, 4, 0]);
    assert_eq!(r[0].as_ref().unwrap_err().kind, WireErrorKind::BadLength { id: 4, len: 2 });
}

#[test]
fn a_bitfield_must_match_the_piece_count_and_have_clear_spare_bits() {
    let ok = Message::Bitfield(Bytes::from_static(&[0xFF, 0xC0])).to_vec();
    assert!(decode_all(no_handshake(10), &ok)[0].is_ok());
    let spare = Message::Bitfield(Bytes::from_static(&[0xFF, 0xE0])).to_vec();
    assert_eq!(decode_all(no_handshake(10), &spare)[0].as_ref().unwrap_err().kind, WireErrorKind::BitfieldSpareBits);
    let short = Message::Bitfield(Bytes::from_static(&[0xFF])).to_vec();
    assert_eq!(
        decode_all(no_handshake(10), &short)[0].as_ref().unwrap_err().kind,
        WireErrorKind::BadBitfield { expected: 2, found: 1 }
    );
    let long = Message::Bitfield(Bytes::from(vec![0; 3])).to_vec();
    assert!(matches!(
        decode_all(no_handshake(10), &long)[0].as_ref().unwrap_err().kind,
        WireErrorKind::TooLong { id: Some(5), .. }
    ));
}

#[test]
fn an_unknown_message_is_skipped_and_decoding_goes_on() {
    let mut b = vec![0, 0, 0, 3, 99, 1, 2];
    Message::Unchoke.encode(&mut b);
    let r = decode_all(no_handshake(10), &b);
    assert_eq!(r.len(), 2);
    let e = r[0].as_ref().unwrap_err();
    assert_eq!(e.kind, WireErrorKind::UnknownId(99));
    assert!(!e.is_fatal());
    assert_eq!(r[1], Ok(Message::Unchoke));
}

#[test]
fn errors_carry_the_stream_offset_of_the_bad_message() {
    let mut b = Message::Choke.to_vec();
    b.extend_from_slice(&[0, 0, 0, 2, 4, 0]);
    let r = decode_all(no_handshake(10), &b);
    assert_eq!(r[1].as_ref().unwrap_err().offset, 5);
}

#[test]
fn the_extension_handshake_round_trips() {
    let mut h = ExtHandshake {
        v: Some("rumor 0.1".into()),
        metadata_size: Some(31_337),
        reqq: Some(250),
        p: Some(6881),
        yourip: Some(vec![10, 0, 0, 1]),
        ..ExtHandshake::default()
    };
    h.m.insert("ut_metadata".into(), 2);
    h.m.insert("ut_pex".into(), 1);
    let Message::Extended { id: 0, payload } = h.to_message() else { panic!() };
    assert_eq!(ExtHandshake::parse(&payload).unwrap(), h);
}

#[test]
fn an_extension_handshake_with_odd_values_keeps_what_is_usable() {
    let p = b"d1:md11:ut_metadatai3e6:ut_pexi999ee4:reqqi-1e1:v3:abce";
    let h = ExtHandshake::parse(p).unwrap();
    assert_eq!(h.m.get("ut_metadata"), Some(&3));
    assert_eq!(h.m.get("ut_pex"), None);
    assert_eq!(h.reqq, None);
    assert_eq!(h.v.as_deref(), Some("abc"));
    assert!(ExtHandshake::parse(b"i1e").is_err());
}

proptest! {
    #[test]
    fn messages_round_trip_whatever_the_chunking(
        msgs in proptest::collection::vec(message(), 0..20),
        chunk in 1usize..200,
    ) {
        let mut bytes = Vec::new();
        for m in &msgs { m.encode(&mut bytes); }
        let mut d = Decoder::new(no_handshake(100));
        let mut got = Vec::new();
        for c in bytes.chunks(chunk) {
            d.feed(c);
            while let Some(r) = d.next() { got.push(r.unwrap()); }
        }
        prop_assert_eq!(got, msgs);
        prop_assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn a_piece_whose_header_is_fed_apart_from_its_payload_shares_the_payload_chunk(
        msgs in proptest::collection::vec(message(), 0..20),
        blocks in proptest::collection::vec((any::<u32>(), any::<u32>(), 1usize..2000), 1..6),
    ) {
        // The way the connection task reads a download: each piece's
        // header in a chunk of its own, then its payload in another (the
        // payload's own buffer), other messages in whatever chunks came.
        let mut bytes = Vec::new();
        let mut cuts = vec![0usize];
        let mut payloads = Vec::new();
        let pieces = blocks.iter().map(|&(index, begin, n)| {
            Message::Piece { index, begin, data: Bytes::from(vec![(n % 251) as u8; n]) }
        });
        let all: Vec<Message> = msgs.iter().cloned().zip(pieces.clone()).flat_map(|(a, b)| [a, b]).chain(pieces.skip(msgs.len())).collect();
        for m in &all {
            m.encode(&mut bytes);
            if let Message::Piece { data, .. } = m {
                let start = bytes.len() - data.len();
                cuts.push(start - PIECE_HEADER_LEN);
                cuts.push(start);
                payloads.push(start);
            }
            cuts.push(bytes.len());
        }
        cuts.dedup();
        let bytes = Bytes::from(bytes);
        let mut d = Decoder::new(no_handshake(100));
        let mut got = Vec::new();
        for w in cuts.windows(2) {
            d.feed_bytes(bytes.slice(w[0]..w[1]));
            while let Some(r) = d.next() { got.push(r.unwrap()); }
        }
        let mut starts = payloads.iter();
        for m in &got {
            if let Message::Piece { data, .. } = m {
                let start = *starts.next().expect("as many pieces as sent");
                prop_assert_eq!(data.as_ptr(), bytes[start..].as_ptr(), "the payload was copied");
            }
        }
        prop_assert_eq!(got, all);
        prop_assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn messages_fed_as_shared_chunks_round_trip_whatever_the_chunking_and_mix_of_feeds(
        msgs in proptest::collection::vec(message(), 0..20),
        cuts in proptest::collection::vec((1usize..40_000, any::<bool>()), 1..40),
        handshake in any::<bool>(),
    ) {
        let hs = Handshake::new(InfoHash([5; 20]), [6; 20]);
        let mut bytes = Vec::new();
        if handshake { hs.encode(&mut bytes); }
        for m in &msgs { m.encode(&mut bytes); }
        let bytes = Bytes::from(bytes);
        let mut d = Decoder::new(DecoderConfig { expect_handshake: handshake, ..no_handshake(100) });
        let mut got = Vec::new();
        let mut at = 0;
        let mut cut = cuts.iter().cycle();
        while at < bytes.len() {
            let (n, shared) = *cut.next().expect("cycles");
            let end = (at + n).min(bytes.len());
            if shared { d.feed_bytes(bytes.slice(at..end)) } else { d.feed(&bytes[at..end]) }
            at = end;
            if handshake && got.is_empty() {
                if let Some(h) = d.take_handshake() { prop_assert_eq!(h.unwrap(), hs); got.push(None); }
            }
            while let Some(r) = d.next() { got.push(Some(r.unwrap())); }
        }
        let got: Vec<Message> = got.into_iter().flatten().collect();
        prop_assert_eq!(got, msgs);
        prop_assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn decoding_arbitrary_shared_chunks_never_panics_and_ends_after_a_fatal_error(
        b in proptest::collection::vec(any::<u8>(), 0..4000),
        cut in 1usize..700,
        pieces in 0u32..100,
        hs in any::<bool>(),
    ) {
        let b = Bytes::from(b);
        let mut d = Decoder::new(DecoderConfig { piece_count: pieces, expect_handshake: hs, ..DecoderConfig::default() });
        let mut dead = false;
        for start in (0..b.len()).step_by(cut) {
            d.feed_bytes(b.slice(start..(start + cut).min(b.len())));
            let _ = d.take_handshake();
            while let Some(r) = d.next() {
                prop_assert!(!dead, "a message after a fatal error");
                if matches!(r, Err(ref e) if e.is_fatal()) { dead = true; }
            }
            prop_assert!(d.buffered() <= cut + d_max(pieces));
        }
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(
        b in proptest::collection::vec(any::<u8>(), 0..2000),
        pieces in 0u32..100,
        hs in any::<bool>(),
    ) {
        let mut d = Decoder::new(DecoderConfig { piece_count: pieces, expect_handshake: hs, ..DecoderConfig::default() });
        d.feed(&b);
        let _ = d.take_handshake();
        let mut n = 0;
        while let Some(r) = d.next() {
            n += 1;
            prop_assert!(n <= b.len() + 1);
            if matches!(r, Err(ref e) if e.is_fatal()) { prop_assert!(d.next().is_none()); break; }
        }
        let _ = ExtHandshake::parse(&b);
    }
}
