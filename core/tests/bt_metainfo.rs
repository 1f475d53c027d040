use proptest::prelude::*;
use rumor_core::bt::bencode::{self, Value};
use rumor_core::bt::metainfo::*;
use sha1::{Digest, Sha1};

fn sha(b: &[u8]) -> [u8; 20] {
    Sha1::digest(b).into()
}

fn single_torrent(len: u64, pl: u64) -> Vec<u8> {
    let n = len.div_ceil(pl) as usize;
    let info = Value::dict()
        .insert("length", Value::Int(len as i64))
        .insert("name", Value::bytes("a.bin"))
        .insert("piece length", Value::Int(pl as i64))
        .insert("pieces", Value::bytes(vec![7u8; 20 * n]));
    Value::dict().insert("announce", Value::bytes("http://t.example/announce")).insert("info", info).to_bytes()
}

fn multi_torrent(paths: Vec<Value<'static>>) -> Vec<u8> {
    let files =
        paths.into_iter().map(|p| Value::dict().insert("length", Value::Int(10)).insert("path", p)).collect::<Vec<_>>();
    let n = files.len();
    let info = Value::dict()
        .insert("files", Value::List(files))
        .insert("name", Value::bytes("dir"))
        .insert("piece length", Value::Int(16384))
        .insert("pieces", Value::bytes(vec![1u8; 20 * ((n as u64 * 10).div_ceil(16384)) as usize]));
    Value::dict().insert("info", info).to_bytes()
}

fn path(cs: &[&[u8]]) -> Value<'static> {
    Value::List(cs.iter().map(|c| Value::bytes(c.to_vec())).collect())
}

#[test]
fn a_single_file_torrent_parses_with_its_pieces_and_tracker() {
    let b = single_torrent(40_000, 16384);
    let m = Metainfo::parse(&b).unwrap();
    assert_eq!(m.name, "a.bin");
    assert_eq!(m.total_length, 40_000);
    assert_eq!(m.pieces.len(), 3);
    assert!(!m.multi_file);
    assert_eq!(m.files[0].path, vec!["a.bin".to_string()]);
    assert_eq!(m.announce.as_deref(), Some("http://t.example/announce"));
    assert_eq!(m.announce_tiers, vec![vec!["http://t.example/announce".to_string()]]);
}

#[test]
fn the_infohash_is_the_sha1_of_the_exact_info_bytes() {
    let b = single_torrent(40_000, 16384);
    let start = b.windows(5).position(|w| w == b"4:inf").unwrap() + 6;
    let info = &b[start..b.len() - 1];
    let m = Metainfo::parse(&b).unwrap();
    assert_eq!(m.info_hash.0, sha(info));
    assert_eq!(m.info_bytes, info);
    let again = Metainfo::from_info_bytes(info, &Limits::default()).unwrap();
    assert_eq!(again.info_hash, m.info_hash);
    assert_eq!(InfoHash::from_hex(&m.info_hash.to_hex()), Some(m.info_hash));
}

#[test]
fn unknown_keys_inside_info_change_the_infohash_because_they_are_hashed_verbatim() {
    let b = single_torrent(100, 16384);
    let mut v = bencode::decode(&b).unwrap();
    let Value::Dict(d) = &mut v else { panic!() };
    let Value::Dict(i) = d.get_mut(&b"info"[..]).unwrap() else { panic!() };
    i.insert(b"x-extra".to_vec().into(), Value::bytes("hi"));
    let b2 = v.to_bytes();
    let m1 = Metainfo::parse(&b).unwrap();
    let m2 = Metainfo::parse(&b2).unwrap();
    assert_ne!(m1.info_hash, m2.info_hash);
}

#[test]
fn a_multi_file_torrent_lists_files_with_offsets() {
    let b = multi_torrent(vec![path(&[b"a", b"x.txt"]), path(&[b"b.txt"])]);
    let m = Metainfo::parse(&b).unwrap();
    assert!(m.multi_file);
    assert_eq!(m.files.len(), 2);
    assert_eq!(m.files[0].path, vec!["a".to_string(), "x.txt".to_string()]);
    assert_eq!(m.files[1].offset, 10);
    assert_eq!(m.total_length, 20);
}

#[test]
fn hostile_paths_are_refused_with_the_reason() {
    let cases: Vec<(Value<'static>, PathProblem)> = vec![
        (path(&[]), PathProblem::NoComponents),
        (path(&[b""]), PathProblem::Empty),
        (path(&[b"."]), PathProblem::Dot),
        (path(&[b"a", b".."]), PathProblem::DotDot),
        (path(&[b"/etc"]), PathProblem::Separator),
        (path(&[b"a\\b"]), PathProblem::Separator),
        (path(&[b"a\0b"]), PathProblem::Nul),
        (path(&[b"\xff"]), PathProblem::NotUtf8),
    ];
    for (p, want) in cases {
        let b = multi_torrent(vec![p]);
        let e = Metainfo::parse(&b).unwrap_err();
        assert_eq!(e.kind, MetainfoErrorKind::BadPath(want), "{e}");
        assert!(e.offset > 0);
    }
}

#[test]
fn a_name_of_dot_dot_is_refused() {
    let info = Value::dict()
        .insert("length", Value::Int(1))
        .insert("name", Value::bytes(".."))
        .insert("piece length", Value::Int(16384))
        .insert("pieces", Value::bytes(vec![0u8; 20]));
    let b = Value::dict().insert("info", info).to_bytes();
    assert_eq!(Metainfo::parse(&b).unwrap_err().kind, MetainfoErrorKind::BadPath(PathProblem::DotDot));
}

#[test]
fn bad_piece_geometry_is_refused() {
    let mk = |len: i64, pl: i64, plen: usize| {
        let info = Value::dict()
            .insert("length", Value::Int(len))
            .insert("name", Value::bytes("n"))
            .insert("piece length", Value::Int(pl))
            .insert("pieces", Value::bytes(vec![0u8; plen]));
        Metainfo::parse(&Value::dict().insert("info", info).to_bytes()).unwrap_err().kind
    };
    assert_eq!(mk(100, 0, 20), MetainfoErrorKind::BadPieceLength(0));
    assert_eq!(mk(100, -5, 20), MetainfoErrorKind::BadPieceLength(-5));
    assert_eq!(mk(100, 1 << 27, 20), MetainfoErrorKind::BadPieceLength(1 << 27));
    assert_eq!(mk(100, 16384, 19), MetainfoErrorKind::PiecesNotMultipleOf20(19));
    assert_eq!(mk(40_000, 16384, 40), MetainfoErrorKind::PieceCountMismatch { expected: 3, found: 2 });
    assert_eq!(mk(0, 16384, 0), MetainfoErrorKind::NoContent);
    assert_eq!(mk(-1, 16384, 0), MetainfoErrorKind::Invalid("length"));
    assert_eq!(mk(1 << 50, 1 << 26, 20), MetainfoErrorKind::TotalTooLarge);
}

#[test]
fn too_many_files_are_refused() {
    let limits = Limits { files_max: 2, ..Limits::default() };
    let b = multi_torrent(vec![path(&[b"a"]), path(&[b"b"]), path(&[b"c"])]);
    assert_eq!(Metainfo::parse_with(&b, &limits).unwrap_err().kind, MetainfoErrorKind::TooManyFiles);
}

#[test]
fn announce_list_tiers_are_kept_in_order() {
    let b = single_torrent(10, 16384);
    let mut v = bencode::decode(&b).unwrap();
    let tiers = Value::List(vec![
        Value::List(vec![Value::bytes("udp://a"), Value::bytes("udp://b")]),
        Value::List(vec![Value::bytes("http://c")]),
    ]);
    if let Value::Dict(d) = &mut v {
        d.insert(b"announce-list".to_vec().into(), tiers);
    }
    let m = Metainfo::parse(&v.to_bytes()).unwrap();
    assert_eq!(
        m.announce_tiers,
        vec![vec!["udp://a".to_string(), "udp://b".to_string()], vec!["http://c".to_string()]]
    );
}

#[test]
fn the_builder_is_deterministic_and_its_output_parses() {
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
    let pl = choose_piece_length(data.len() as u64);
    let mut h = PieceHasher::new(pl);
    h.update(&data);
    let pieces = h.finish();
    let files = vec![(vec!["a".to_string()], 60_000), (vec!["b".to_string(), "c".to_string()], 40_000)];
    let mut b1 = TorrentBuilder::multi("root", files.clone(), pl, pieces.clone());
    b1.announce_tiers = vec![vec!["http://x/announce".into()]];
    let (bytes1, m1) = b1.build(&Limits::default()).unwrap();
    let (bytes2, m2) = b1.clone().build(&Limits::default()).unwrap();
    assert_eq!(bytes1, bytes2);
    assert_eq!(m1.info_hash, m2.info_hash);
    assert_eq!(m1.files[1].path, vec!["b".to_string(), "c".to_string()]);
    assert_eq!(m1.pieces, pieces);
    // Tracker options don't change the infohash.
    let b3 = TorrentBuilder::multi("root", files, pl, pieces);
    assert_eq!(b3.build(&Limits::default()).unwrap().1.info_hash, m1.info_hash);
}

#[test]
fn the_builder_refuses_unsorted_files() {
    let files = vec![(vec!["b".to_string()], 1), (vec!["a".to_string()], 1)];
    let b = TorrentBuilder::multi("r", files, 16384, vec![[0; 20]]);
    assert_eq!(b.build(&Limits::default()).unwrap_err().kind, MetainfoErrorKind::UnsortedFiles);
}

#[test]
fn piece_length_choice_aims_at_one_to_two_thousand_pieces() {
    assert_eq!(choose_piece_length(0), 16384);
    assert_eq!(choose_piece_length(1 << 20), 16384);
    assert_eq!(choose_piece_length(1 << 50), 16 << 20);
    for total in [100u64 << 20, 700 << 20, 4 << 30, 20 << 30] {
        let p = choose_piece_length(total);
        assert!(p.is_power_of_two());
        let n = total.div_ceil(p);
        assert!((1000..=2000).contains(&n), "{total} -> {p} -> {n}");
    }
}

#[test]
fn a_block_spanning_files_maps_to_each_file_in_order() {
    let l = FileLayout::new(16, vec![5, 0, 20, 7]);
    assert_eq!(l.piece_count(), 2);
    assert_eq!(l.piece_size(1), 16);
    let s = l.spans(0, 3, 10).unwrap();
    assert_eq!(s, vec![FileSpan { file: 0, offset: 3, length: 2 }, FileSpan { file: 2, offset: 0, length: 8 }]);
    let s = l.piece_spans(1).unwrap();
    assert_eq!(s, vec![FileSpan { file: 2, offset: 11, length: 9 }, FileSpan { file: 3, offset: 0, length: 7 }]);
    assert!(l.spans(1, 10, 7).is_none());
    assert!(l.piece_spans(2).is_none());
}

proptest! {
    #[test]
    fn parsing_arbitrary_bytes_never_panics(b in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Metainfo::parse(&b);
        let _ = bencode::decode(&b);
    }

    #[test]
    fn parsing_a_mutated_torrent_never_panics(i in 0usize..200, x in any::<u8>(), cut in 0usize..300) {
        let mut b = multi_torrent(vec![path(&[b"a", b"b"]), path(&[b"c"])]);
        let i = i % b.len();
        b[i] = x;
        b.truncate(cut.max(1));
        let _ = Metainfo::parse(&b);
    }

    #[test]
    fn hashing_is_independent_of_chunking(
        data in proptest::collection::vec(any::<u8>(), 0..3000),
        cuts in proptest::collection::vec(0usize..3000, 0..8),
        pl in 1u64..700,
    ) {
        let mut one = PieceHasher::new(pl);
        one.update(&data);
        let mut many = PieceHasher::new(pl);
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (data.len() + 1)).collect();
        cuts.sort();
        let mut prev = 0;
        for c in cuts.into_iter().chain([data.len()]) {
            many.update(&data[prev..c]);
            prev = c;
        }
        let expect: Vec<[u8; 20]> = data.chunks(pl as usize).map(sha).collect();
        prop_assert_eq!(one.finish(), expect.clone());
        prop_assert_eq!(many.finish(), expect);
    }

    #[test]
    fn spans_cover_the_block_contiguously(
        lens in proptest::collection::vec(0u64..100, 1..10),
        pl in 1u64..64,
        piece in 0u32..50, off in 0u64..64, len in 0u64..64,
    ) {
        let l = FileLayout::new(pl, lens.clone());
        if let Some(spans) = l.spans(piece, off, len) {
            prop_assert_eq!(spans.iter().map(|s| s.length).sum::<u64>(), len);
            let mut abs = piece as u64 * pl + off;
            let mut starts = vec![0u64];
            for x in &lens { starts.push(starts.last().unwrap() + x); }
            for s in spans {
                prop_assert!(s.length > 0);
                prop_assert_eq!(starts[s.file] + s.offset, abs);
                prop_assert!(s.offset + s.length <= lens[s.file]);
                abs += s.length;
            }
        }
    }

    #[test]
    fn built_torrents_round_trip(
        lens in proptest::collection::vec(1u64..50_000, 1..6),
        announce in proptest::option::of("[a-z]{1,8}"),
    ) {
        let files: Vec<(Vec<String>, u64)> =
            lens.iter().enumerate().map(|(i, l)| (vec![format!("f{i}")], *l)).collect();
        let total: u64 = lens.iter().sum();
        let pl = choose_piece_length(total);
        let n = total.div_ceil(pl) as usize;
        let pieces: Vec<[u8; 20]> = (0..n).map(|i| [i as u8; 20]).collect();
        let mut b = TorrentBuilder::multi("d", files, pl, pieces.clone());
        if let Some(a) = &announce { b.announce_tiers = vec![vec![format!("http://{a}/announce")]]; }
        let (bytes, m) = b.build(&Limits::default()).unwrap();
        let again = Metainfo::parse(&bytes).unwrap();
        prop_assert_eq!(&again, &m);
        prop_assert_eq!(again.pieces, pieces);
        prop_assert_eq!(again.files.iter().map(|f| f.length).collect::<Vec<_>>(), lens);
    }
}

#[test]
fn a_torrent_with_unsorted_keys_parses_and_hashes_its_info_bytes_verbatim() {
    // Keys out of order at both levels; the infohash must cover the info
    // dictionary exactly as written.
    let info = b"d6:lengthi5e12:piece lengthi16384e4:name1:x6:pieces20:aaaaaaaaaaaaaaaaaaaae";
    let mut t = b"d4:info".to_vec();
    t.extend_from_slice(info);
    t.extend_from_slice(b"8:announce5:http:e");
    let m = Metainfo::parse(&t).unwrap();
    assert_eq!(m.info_hash.0, sha(info));
    assert_eq!(m.name, "x");
    assert_eq!(m.announce.as_deref(), Some("http:"));
}

#[test]
fn bep47_padding_and_executable_files_are_flagged() {
    let f = |len: i64, path: Value<'static>, attr: &str| {
        Value::dict().insert("attr", Value::bytes(attr)).insert("length", Value::Int(len)).insert("path", path)
    };
    let files = Value::List(vec![
        f(10, path(&[b"run.sh"]), "x"),
        f(16374, path(&[b".pad", b"16374"]), "p"),
        f(5, path(&[b"b"]), ""),
    ]);
    let info = Value::dict()
        .insert("files", files)
        .insert("name", Value::bytes("d"))
        .insert("piece length", Value::Int(16384))
        .insert("pieces", Value::bytes(vec![0u8; 40]));
    let m = Metainfo::parse(&Value::dict().insert("info", info).to_bytes()).unwrap();
    assert!(m.files[0].executable && !m.files[0].padding);
    assert!(m.files[1].padding);
    assert!(!m.files[2].padding && !m.files[2].executable);
    assert_eq!(m.files[2].offset, 16384, "the padding aligned it to a piece");
}

#[test]
fn a_torrent_rebuilt_from_fetched_metadata_keeps_its_infohash_and_trackers() {
    // What a magnet download has: the bare info dictionary and the link's
    // trackers. Written out and read back, it is the same torrent.
    let original = Metainfo::parse(&multi_torrent(vec![path(&[b"a", b"x.bin"]), path(&[b"b.txt"])])).unwrap();
    let mut fetched = Metainfo::from_info_bytes(&original.info_bytes, &Limits::default()).unwrap();
    fetched.announce_tiers = vec![vec!["http://a.example/announce".into()], vec!["udp://b.example:80".into()]];
    fetched.comment = Some("from a magnet".into());
    let file = fetched.to_torrent_bytes();
    let back = Metainfo::parse(&file).unwrap();
    assert_eq!(back.info_hash, original.info_hash);
    assert_eq!(back.files, original.files);
    assert_eq!(back.pieces, original.pieces);
    assert_eq!(back.announce.as_deref(), Some("http://a.example/announce"));
    assert_eq!(back.announce_tiers, fetched.announce_tiers);
    assert_eq!(back.comment.as_deref(), Some("from a magnet"));
    // And with no trackers at all (a trackerless torrent found by overlay).
    let bare = Metainfo::from_info_bytes(&original.info_bytes, &Limits::default()).unwrap();
    let back = Metainfo::parse(&bare.to_torrent_bytes()).unwrap();
    assert_eq!(back.info_hash, original.info_hash);
    assert!(back.announce.is_none() && back.announce_tiers.is_empty());
}
