use bytes::Bytes;
use proptest::prelude::*;
use rumor_core::bt::metadata::*;
use rumor_core::bt::metainfo::{InfoHash, Limits, TorrentBuilder};

fn info() -> (InfoHash, Vec<u8>) {
    // 2000 pieces -> a 40 KB info dict: three metadata pieces.
    let pieces: Vec<[u8; 20]> = (0..2000u32).map(|i| [(i % 251) as u8; 20]).collect();
    let (_, m) = TorrentBuilder::single("big", 2000 * 16384, 16384, pieces).build(&Limits::default()).unwrap();
    (m.info_hash, m.info_bytes)
}

#[test]
fn metadata_pieces_assemble_into_the_torrent() {
    let (ih, bytes) = info();
    let mut a = MetadataAssembler::new(ih, bytes.len() as u64, METADATA_SIZE_MAX).unwrap();
    assert_eq!(a.piece_count(), 3);
    let chunks: Vec<Bytes> = bytes.chunks(METADATA_PIECE_LEN).map(Bytes::copy_from_slice).collect();
    assert!(a.add(2, chunks[2].clone(), &Limits::default()).unwrap().is_none());
    assert!(a.add(0, chunks[0].clone(), &Limits::default()).unwrap().is_none());
    assert_eq!(a.missing().collect::<Vec<_>>(), vec![1]);
    let m = a.add(1, chunks[1].clone(), &Limits::default()).unwrap().unwrap();
    assert_eq!(m.info_hash, ih);
    assert_eq!(m.name, "big");
}

#[test]
fn metadata_that_does_not_hash_to_the_infohash_is_dropped() {
    let (ih, mut bytes) = info();
    bytes[100] ^= 1;
    let mut a = MetadataAssembler::new(ih, bytes.len() as u64, METADATA_SIZE_MAX).unwrap();
    let mut last = Ok(None);
    for (i, c) in bytes.chunks(METADATA_PIECE_LEN).enumerate() {
        last = a.add(i as u32, Bytes::copy_from_slice(c), &Limits::default());
    }
    assert_eq!(last, Err(MetadataError::HashMismatch));
    assert_eq!(a.missing().count(), 3);
}

#[test]
fn absurd_sizes_and_wrong_piece_lengths_are_refused() {
    let ih = InfoHash([0; 20]);
    assert_eq!(MetadataAssembler::new(ih, 0, METADATA_SIZE_MAX).unwrap_err(), MetadataError::BadSize(0));
    assert!(MetadataAssembler::new(ih, 1 << 40, METADATA_SIZE_MAX).is_err());
    let mut a = MetadataAssembler::new(ih, 20_000, METADATA_SIZE_MAX).unwrap();
    let e = a.add(1, Bytes::from(vec![0; 100]), &Limits::default()).unwrap_err();
    assert_eq!(e, MetadataError::BadPiece(1));
    assert!(a.add(2, Bytes::from(vec![0; 10]), &Limits::default()).is_err());
}

#[test]
fn a_data_message_carries_raw_bytes_after_the_dictionary() {
    let m = MetadataMessage::Data { piece: 1, total_size: 20_000, data: Bytes::from_static(b"RAWd1:xe") };
    let b = m.encode();
    assert!(b.starts_with(b"d8:msg_typei1e5:piecei1e10:total_sizei20000ee"));
    assert_eq!(MetadataMessage::parse(&Bytes::from(b)).unwrap(), m);
}

proptest! {
    #[test]
    fn metadata_messages_round_trip(kind in 0u8..3, piece in any::<u32>(), size in 0u64..1 << 40, data in proptest::collection::vec(any::<u8>(), 0..300)) {
        let m = match kind {
            0 => MetadataMessage::Request { piece },
            1 => MetadataMessage::Data { piece, total_size: size, data: Bytes::from(data) },
            _ => MetadataMessage::Reject { piece },
        };
        prop_assert_eq!(MetadataMessage::parse(&Bytes::from(m.encode())).unwrap(), m);
    }

    #[test]
    fn parsing_arbitrary_metadata_payloads_never_panics(b in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = MetadataMessage::parse(&Bytes::from(b));
    }
}
