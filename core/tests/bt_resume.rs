//! Fast resume records: the stored form survives a round trip and refuses
//! damage without panicking; the plan trusts exactly the recorded pieces
//! of unchanged files.
use proptest::prelude::*;
use rumor_core::bt::bencode::Value;
use rumor_core::bt::bitfield::Bitfield;
use rumor_core::bt::metainfo::Metainfo;
use rumor_core::bt::resume::*;

const IH: [u8; 20] = [7; 20];

fn record() -> TorrentRecord {
    TorrentRecord {
        torrent: Some(b"d4:infod4:name1:xee".to_vec()),
        magnet: Some("magnet:?xt=urn:btih:0707070707070707070707070707070707070707".into()),
        added_at_ms: 1_700_000_000_000,
        paused: true,
        download_limit: Some(1 << 20),
        upload_limit: None,
        file_priorities: vec![1, 0, 2],
        queue_position: 4,
        have: vec![0b1010_0000],
        stamps: vec![FileStamp { size: 10, mtime_ns: 1_700_000_000_123_456_789 }, FileStamp::default()],
    }
}

#[test]
fn a_record_round_trips_through_its_stored_form() {
    let r = record();
    let bytes = encode(&IH, &r);
    assert_eq!(bytes[0], RECORD_VERSION);
    assert_eq!(decode(&IH, &bytes), Ok(r));
    assert_eq!(decode(&IH, &encode(&IH, &TorrentRecord::default())), Ok(TorrentRecord::default()));
}

#[test]
fn a_damaged_record_is_refused_whatever_byte_is_hit() {
    let bytes = encode(&IH, &record());
    for i in 0..bytes.len() {
        for bit in [0x01, 0x80] {
            let mut bad = bytes.clone();
            bad[i] ^= bit;
            assert!(decode(&IH, &bad).is_err(), "byte {i} bit {bit:#x}");
        }
    }
    for len in 0..bytes.len() {
        assert!(decode(&IH, &bytes[..len]).is_err(), "cut to {len}");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(decode(&IH, &longer).is_err());
    assert_eq!(decode(&[8; 20], &bytes), Err(RecordError::Checksum), "a record under another infohash");
    let mut newer = bytes.clone();
    newer[0] = RECORD_VERSION + 1;
    assert_eq!(decode(&IH, &newer), Err(RecordError::UnknownVersion(RECORD_VERSION + 1)));
    assert_eq!(decode(&IH, &[]), Err(RecordError::Empty));
    assert!(matches!(decode(&IH, &vec![1u8; RECORD_BYTES_MAX + 1]), Err(RecordError::TooLarge(_))));
}

/// Files a (10 B), b (20000 B), c (30000 B), d (5 B) in 16 KiB pieces:
/// piece 0 = a + b, piece 1 = b + c, piece 2 = c, piece 3 = c + d.
fn meta() -> Metainfo {
    let f = |len: i64, name: &str| {
        Value::dict().insert("length", Value::Int(len)).insert("path", Value::List(vec![Value::bytes(name)]))
    };
    let info = Value::dict()
        .insert("files", Value::List(vec![f(10, "a"), f(20000, "b"), f(30000, "c"), f(5, "d")]))
        .insert("name", Value::bytes("t"))
        .insert("piece length", Value::Int(16384))
        .insert("pieces", Value::bytes(vec![0u8; 80]));
    Metainfo::parse(&Value::dict().insert("info", info).to_bytes()).unwrap()
}

fn stamps() -> Vec<FileStamp> {
    (0..4).map(|i| FileStamp { size: [10, 20000, 30000, 5][i], mtime_ns: 1_000 + i as i128 }).collect()
}

fn with_have(pieces: &[u32], stamps: Vec<FileStamp>) -> TorrentRecord {
    let mut b = Bitfield::new(4);
    for &p in pieces {
        b.set(p);
    }
    TorrentRecord { have: b.to_wire(), stamps, ..TorrentRecord::default() }
}

fn ones(b: &Bitfield) -> Vec<u32> {
    b.iter_ones().collect()
}

#[test]
fn unchanged_files_keep_every_recorded_piece_without_hashing() {
    let m = meta();
    let r = with_have(&[0, 1, 3], stamps());
    let p = plan(&m, &r, &stamps());
    assert_eq!(ones(&p.trusted), vec![0, 1, 3]);
    assert!(p.recheck.is_empty() && p.changed_files.is_empty());
}

#[test]
fn a_touched_file_has_every_piece_it_overlaps_rechecked() {
    let m = meta();
    let r = with_have(&[0, 1, 2, 3], stamps());
    let mut now = stamps();
    now[1].mtime_ns += 1; // b touched: pieces 0 and 1, shared with a and c
    let p = plan(&m, &r, &now);
    assert_eq!(p.changed_files, vec![1]);
    assert_eq!(p.recheck, vec![0, 1]);
    assert_eq!(ones(&p.trusted), vec![2, 3]);
    // A touched last file: only its piece.
    let mut now = stamps();
    now[3].mtime_ns = 0;
    let p = plan(&m, &r, &now);
    assert_eq!((p.recheck.clone(), ones(&p.trusted)), (vec![3], vec![0, 1, 2]));
}

#[test]
fn a_truncated_file_leaves_its_pieces_untrusted() {
    let m = meta();
    let r = with_have(&[0, 1, 2, 3], stamps());
    let mut now = stamps();
    now[2] = FileStamp { size: 100, mtime_ns: now[2].mtime_ns };
    let p = plan(&m, &r, &now);
    assert_eq!(p.changed_files, vec![2]);
    assert_eq!(p.recheck, vec![1, 2, 3]);
    assert_eq!(ones(&p.trusted), vec![0]);
    // Missing altogether (and missing from the stamps given): the same.
    let p = plan(&m, &r, &stamps()[..2]);
    assert_eq!(p.changed_files, vec![2, 3]);
    assert_eq!(ones(&p.trusted), vec![0]);
}

#[test]
fn pieces_not_recorded_are_not_trusted_but_a_changed_file_gets_them_checked() {
    let m = meta();
    let r = with_have(&[], stamps());
    let mut now = stamps();
    now[2].mtime_ns += 5; // someone copied c in while we were down
    let p = plan(&m, &r, &now);
    assert!(ones(&p.trusted).is_empty());
    assert_eq!(p.recheck, vec![1, 2, 3]);
}

#[test]
fn a_record_that_does_not_fit_the_torrent_trusts_nothing() {
    let m = meta();
    let mut r = with_have(&[0, 1, 2, 3], stamps());
    r.have = vec![0xFF, 0xFF];
    let p = plan(&m, &r, &stamps());
    assert!(ones(&p.trusted).is_empty());
    assert_eq!(p.recheck, vec![0, 1, 2, 3]);
    assert_eq!(p.changed_files, vec![0, 1, 2, 3]);
    let mut r = with_have(&[0, 1, 2, 3], stamps());
    r.stamps.pop();
    let p = plan(&m, &r, &stamps());
    assert!(ones(&p.trusted).is_empty());
    assert_eq!(p.recheck, vec![0, 1, 2, 3]);
}

fn any_record() -> impl Strategy<Value = TorrentRecord> {
    (
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
        proptest::option::of(".{0,40}"),
        any::<u64>(),
        any::<bool>(),
        (proptest::option::of(any::<u64>()), proptest::option::of(any::<u64>())),
        proptest::collection::vec(any::<u8>(), 0..8),
        any::<u32>(),
        proptest::collection::vec(any::<u8>(), 0..4),
        proptest::collection::vec((any::<u64>(), any::<i128>()), 0..6),
    )
        .prop_map(|(torrent, magnet, added_at_ms, paused, (dl, ul), file_priorities, queue_position, have, st)| {
            TorrentRecord {
                torrent,
                magnet,
                added_at_ms,
                paused,
                download_limit: dl,
                upload_limit: ul,
                file_priorities,
                queue_position,
                have,
                stamps: st.into_iter().map(|(size, mtime_ns)| FileStamp { size, mtime_ns }).collect(),
            }
        })
}

proptest! {
    #[test]
    fn any_record_round_trips(r in any_record(), key in any::<[u8; 20]>()) {
        prop_assert_eq!(decode(&key, &encode(&key, &r)), Ok(r));
    }

    #[test]
    fn any_bytes_decode_or_are_refused_without_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode(&IH, &bytes);
        // Past the checksum: the body decoder meets the bytes themselves.
        if let Ok(r) = decode_body(&bytes) {
            prop_assert_eq!(decode(&IH, &encode(&IH, &r)), Ok(r));
        }
    }

    #[test]
    fn a_record_body_cut_or_bent_anywhere_never_panics(r in any_record(), at in any::<prop::sample::Index>(), x in 1u8..) {
        let full = encode(&IH, &r);
        let body = &full[1 + 8..]; // past the version byte and the checksum
        let _ = decode_body(&body[..at.index(body.len() + 1)]);
        if !body.is_empty() {
            let mut bent = body.to_vec();
            bent[at.index(body.len())] ^= x;
            let _ = decode_body(&bent);
        }
    }

    #[test]
    fn the_plan_trusts_only_recorded_pieces_of_unchanged_files(
        have in proptest::collection::vec(any::<bool>(), 4),
        touched in proptest::collection::vec(any::<bool>(), 4),
    ) {
        let m = meta();
        let recorded: Vec<u32> = (0..4).filter(|p| have[*p as usize]).collect();
        let r = with_have(&recorded, stamps());
        let mut now = stamps();
        for (i, t) in touched.iter().enumerate() {
            if *t {
                now[i].size += 1;
            }
        }
        let p = plan(&m, &r, &now);
        let layout = m.layout();
        for piece in 0..4u32 {
            let files: Vec<usize> = layout.piece_spans(piece).unwrap().iter().map(|s| s.file).collect();
            let dirty = files.iter().any(|f| touched[*f]);
            prop_assert_eq!(p.recheck.contains(&piece), dirty, "piece {}", piece);
            prop_assert_eq!(p.trusted.get(piece), have[piece as usize] && !dirty, "piece {}", piece);
        }
        let changed: Vec<usize> = (0..4).filter(|i| touched[*i]).collect();
        prop_assert_eq!(p.changed_files, changed);
    }
}
