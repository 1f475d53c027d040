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
fn unsafe_names_are_renamed_into_safe_paths_and_listed() {
    let cases: Vec<(Value<'static>, Vec<&str>, Vec<PathFix>)> = vec![
        (path(&[b""]), vec!["_"], vec![PathFix::DotOrEmpty]),
        (path(&[b"."]), vec!["_"], vec![PathFix::DotOrEmpty]),
        (path(&[b"a", b"..", b"..", b"x"]), vec!["a", "_", "_", "x"], vec![PathFix::DotOrEmpty]),
        (path(&[b"/etc"]), vec!["_etc"], vec![PathFix::Separator]),
        (path(&[b"dir\\sub\\f.txt"]), vec!["dir_sub_f.txt"], vec![PathFix::Separator]),
        (path(&[b"a\0b\n"]), vec!["a_b_"], vec![PathFix::Control]),
        (path(&[b"caf\xe9.txt"]), vec!["caf_.txt"], vec![PathFix::NotUtf8]),
        (path(&["\u{202e}txt.exe".as_bytes()]), vec!["txt.exe"], vec![PathFix::Bidi]),
        (path(&[b"ok", b"fine.txt"]), vec!["ok", "fine.txt"], vec![]),
    ];
    for (p, want, fixes) in cases {
        let m = Metainfo::parse(&multi_torrent(vec![p])).unwrap();
        assert_eq!(m.files[0].path, want);
        if fixes.is_empty() {
            assert!(m.renamed.is_empty(), "{:?}", m.renamed);
        } else {
            assert_eq!(m.renamed.len(), 1);
            assert_eq!(m.renamed[0].file, Some(0));
            assert_eq!(m.renamed[0].fixes, fixes);
            assert_eq!(m.renamed[0].path, want.join("/"));
        }
    }
}

#[test]
fn a_name_longer_than_255_bytes_is_shortened_on_a_character_boundary_keeping_its_extension() {
    let long = format!("{}.mkv", "é".repeat(200)); // 404 bytes
    let m = Metainfo::parse(&multi_torrent(vec![path(&[long.as_bytes()])])).unwrap();
    let name = &m.files[0].path[0];
    assert!(name.len() <= 255, "{}", name.len());
    assert!(name.ends_with(".mkv"));
    assert!(name.starts_with("éé"));
    assert_eq!(m.renamed[0].fixes, vec![PathFix::TooLong]);
    // No extension: just cut.
    let m = Metainfo::parse(&multi_torrent(vec![path(&[&[b'x'; 300]])])).unwrap();
    assert_eq!(m.files[0].path[0], "x".repeat(255));
}

#[test]
fn duplicate_names_get_a_number_before_the_extension_even_when_only_the_case_differs() {
    let b = multi_torrent(vec![
        path(&[b"a.txt"]),
        path(&[b"A.TXT"]),
        path(&[b"a.txt"]),
        path(&[b"d"]),
        path(&[b"d", b"x"]),
        path(&[b"dir\\f"]),
        path(&[b"dir/f"]),
    ]);
    let m = Metainfo::parse(&b).unwrap();
    let got: Vec<String> = m.files.iter().map(|f| f.path.join("/")).collect();
    assert_eq!(got, vec!["a.txt", "A.1.TXT", "a.2.txt", "d.1", "d/x", "dir_f", "dir_f.1"]);
    assert!(m.renamed.iter().any(|r| r.file == Some(1) && r.fixes == vec![PathFix::Duplicate]));
    assert!(m.renamed.iter().any(|r| r.file == Some(6) && r.fixes == vec![PathFix::Separator, PathFix::Duplicate]));
    assert!(m.renamed.iter().all(|r| r.to_string().contains(" is stored as ")));
}

#[test]
fn a_torrent_of_endless_duplicate_names_is_refused() {
    let limits = Limits { duplicates_max: 5, ..Limits::default() };
    let b = multi_torrent((0..10).map(|_| path(&[b"same"])).collect());
    assert_eq!(Metainfo::parse_with(&b, &limits).unwrap_err().kind, MetainfoErrorKind::TooManyDuplicates);
    let b = multi_torrent((0..6).map(|_| path(&[b"same"])).collect());
    assert!(Metainfo::parse_with(&b, &limits).is_ok());
}

fn with_files(files: Vec<Value<'static>>, pl: i64) -> Vec<u8> {
    let total: i64 = files.iter().map(|f| f.get("length").and_then(Value::as_int).unwrap_or(0)).sum();
    let info = Value::dict()
        .insert("files", Value::List(files))
        .insert("name", Value::bytes("d"))
        .insert("piece length", Value::Int(pl))
        .insert("pieces", Value::bytes(vec![3u8; 20 * (total.max(1) as usize).div_ceil(pl as usize)]));
    Value::dict().insert("info", info).to_bytes()
}

fn entry(len: i64, p: Value<'static>, attr: &str) -> Value<'static> {
    Value::dict().insert("attr", Value::bytes(attr)).insert("length", Value::Int(len)).insert("path", p)
}

#[test]
fn symlinks_have_no_data_and_count_as_inside_only_when_they_name_a_file_or_directory_of_the_torrent() {
    let link = |p: &[&[u8]], target: &[&[u8]]| {
        // A length on a symlink is ignored (libtorrent counts 0 too).
        entry(99, path(p), "l").insert("symlink path", path(target))
    };
    let b = with_files(
        vec![
            entry(10, path(&[b"sub", b"real.bin"]), ""),
            link(&[b"to-file"], &[b"sub", b"real.bin"]),
            link(&[b"to-dir"], &[b"sub"]),
            link(&[b"up"], &[b"..", b"..", b"etc", b"passwd"]),
            link(&[b"abs"], &[b"/etc/passwd"]),
            link(&[b"loop"], &[b"loop"]),
        ],
        16384,
    );
    let m = Metainfo::parse(&b).unwrap();
    assert_eq!(m.total_length, 10);
    let inside: Vec<bool> = m.files[1..].iter().map(|f| f.symlink.as_ref().unwrap().inside).collect();
    assert_eq!(inside, vec![true, true, false, false, false]);
    assert!(m.files[1..].iter().all(|f| f.length == 0));
    assert_eq!(m.files[3].symlink.as_ref().unwrap().target, vec!["_", "_", "etc", "passwd"]);
    // Without a target it is a plain file of its length.
    let b = with_files(vec![entry(10, path(&[b"f"]), "l")], 16384);
    let m = Metainfo::parse(&b).unwrap();
    assert!(m.files[0].symlink.is_none());
    assert_eq!(m.total_length, 10);
}

#[test]
fn padding_files_may_lack_a_path_and_may_share_one() {
    let pad = |len: i64| Value::dict().insert("attr", Value::bytes("p")).insert("length", Value::Int(len));
    let b = with_files(
        vec![
            entry(10, path(&[b"a"]), "x"),
            pad(16374),
            entry(10, path(&[b"b"]), "h"),
            entry(16374, path(&[b".pad", b"16374"]), "p"),
            entry(10, path(&[b"c"]), ""),
            entry(16374, path(&[b".pad", b"16374"]), "p"),
        ],
        16384,
    );
    let m = Metainfo::parse(&b).unwrap();
    assert_eq!(m.files[1].path, vec![".pad", "16374"]);
    assert!(m.files[1].padding && m.files[3].padding && m.files[5].padding);
    assert_eq!(m.files[5].path, vec![".pad", "16374"], "padding files are never written, so never renamed");
    assert!(m.files[0].executable && m.files[2].hidden);
    assert_eq!(m.files[4].offset, 2 * 16384);
    assert!(m.renamed.is_empty());
}

/// A hybrid torrent in the shape python3-libtorrent 2.0 writes: v1
/// `files` with padding, and a v2 `file tree` of the same files.
fn hybrid(tree_len_b: i64, version: Option<i64>, with_pieces: bool, with_tree: bool) -> Vec<u8> {
    let root = |x: u8| Value::bytes(vec![x; 32]);
    let leaf = |len: i64, r: Value<'static>| {
        Value::dict().insert("", Value::dict().insert("length", Value::Int(len)).insert("pieces root", r))
    };
    let tree = Value::dict()
        .insert("a.bin", leaf(40000, root(1)))
        .insert("sub", Value::dict().insert("b.bin", leaf(tree_len_b, root(2))));
    let files = Value::List(vec![
        entry(40000, path(&[b"a.bin"]), ""),
        entry(9152, path(&[b".pad", b"9152"]), "p"),
        entry(70000, path(&[b"sub", b"b.bin"]), ""),
    ]);
    let mut info = Value::dict()
        .insert("files", files)
        .insert("name", Value::bytes("h"))
        .insert("piece length", Value::Int(16384));
    if with_tree {
        info = info.insert("file tree", tree);
    }
    if with_pieces {
        info = info.insert("pieces", Value::bytes(vec![5u8; 20 * (119152usize).div_ceil(16384)]));
    }
    if let Some(v) = version {
        info = info.insert("meta version", Value::Int(v));
    }
    Value::dict().insert("info", info).insert("piece layers", Value::dict()).to_bytes()
}

#[test]
fn a_hybrid_torrent_is_read_by_its_v1_part_under_its_v1_infohash() {
    let b = hybrid(70000, Some(2), true, true);
    let m = Metainfo::parse(&b).unwrap();
    assert!(m.hybrid);
    assert_eq!(m.files.len(), 3);
    assert_eq!(m.files[2].path, vec!["sub", "b.bin"]);
    assert_eq!(m.files[2].offset, 49152);
    assert_eq!(m.info_hash.0, sha(&m.info_bytes));
}

#[test]
fn v2_only_unknown_versions_and_inconsistent_hybrids_are_refused_with_a_sentence() {
    let e = Metainfo::parse(&hybrid(70000, Some(2), false, true)).unwrap_err();
    assert_eq!(e.kind, MetainfoErrorKind::V2Only);
    assert!(e.to_string().starts_with("v2-only torrents are not supported yet"), "{e}");
    let e = Metainfo::parse(&hybrid(70000, Some(3), true, true)).unwrap_err();
    assert_eq!(e.kind, MetainfoErrorKind::UnknownVersion(3));
    let e = Metainfo::parse(&hybrid(70001, Some(2), true, true)).unwrap_err();
    assert_eq!(e.kind, MetainfoErrorKind::HybridMismatch);
    assert!(e.to_string().contains("describe different files"), "{e}");
    let e = Metainfo::parse(&hybrid(70000, None, true, true)).unwrap_err();
    assert_eq!(e.kind, MetainfoErrorKind::Missing("meta version"));
    let e = Metainfo::parse(&hybrid(70000, Some(2), true, false)).unwrap_err();
    assert_eq!(e.kind, MetainfoErrorKind::Missing("file tree"));
    assert!(e.to_string().contains("has no v2 'file tree'"), "{e}");
}

#[test]
fn pieces_of_128_mib_are_accepted_and_larger_ones_refused() {
    let mk = |pl: i64| {
        let info = Value::dict()
            .insert("length", Value::Int(300 << 20))
            .insert("name", Value::bytes("big"))
            .insert("piece length", Value::Int(pl))
            .insert("pieces", Value::bytes(vec![0u8; 20 * (300usize << 20).div_ceil(pl as usize)]));
        Metainfo::parse(&Value::dict().insert("info", info).to_bytes())
    };
    assert_eq!(mk(128 << 20).unwrap().pieces.len(), 3);
    assert_eq!(mk(64 << 20).unwrap().layout().piece_size(4), 44 << 20);
    assert_eq!(mk(256 << 20).unwrap_err().kind, MetainfoErrorKind::BadPieceLength(256 << 20));
}

#[test]
fn the_utf8_name_and_path_keys_are_preferred() {
    let f = Value::dict()
        .insert("length", Value::Int(5))
        .insert("path", path(&[b"\xe9t\xe9"]))
        .insert("path.utf-8", path(&["été".as_bytes()]));
    let info = Value::dict()
        .insert("files", Value::List(vec![f]))
        .insert("name", Value::bytes(&b"r\xe9p"[..]))
        .insert("name.utf-8", Value::bytes("rép"))
        .insert("piece length", Value::Int(16384))
        .insert("pieces", Value::bytes(vec![0u8; 20]));
    let m = Metainfo::parse(&Value::dict().insert("info", info).to_bytes()).unwrap();
    assert_eq!(m.name, "rép");
    assert_eq!(m.files[0].path, vec!["été"]);
    assert!(m.renamed.is_empty());
}

#[test]
fn a_directory_name_of_dot_dot_becomes_the_infohash() {
    let info = Value::dict()
        .insert("files", Value::List(vec![entry(5, path(&[b"f"]), "")]))
        .insert("name", Value::bytes(".."))
        .insert("piece length", Value::Int(16384))
        .insert("pieces", Value::bytes(vec![0u8; 20]));
    let m = Metainfo::parse(&Value::dict().insert("info", info).to_bytes()).unwrap();
    assert_eq!(m.name, m.info_hash.to_hex());
    assert_eq!(m.renamed[0].file, None);
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
    assert_eq!(mk(100, 1 << 28, 20), MetainfoErrorKind::BadPieceLength(1 << 28));
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn whatever_the_names_every_written_path_is_safe_and_unique(
        names in proptest::collection::vec(
            proptest::collection::vec(
                proptest::collection::vec(
                    prop_oneof![Just(b'.'), Just(b'/'), Just(b'\\'), Just(0u8), Just(b'a'), Just(b'A'), Just(0xc3), Just(0xa9), any::<u8>()],
                    0..40,
                ),
                1..4,
            ),
            1..12,
        ),
    ) {
        let paths: Vec<Value<'static>> =
            names.iter().map(|p| Value::List(p.iter().map(|c| Value::bytes(c.clone())).collect())).collect();
        let m = Metainfo::parse(&multi_torrent(paths)).unwrap();
        let mut seen = std::collections::BTreeSet::new();
        let mut dirs = std::collections::BTreeSet::new();
        for f in &m.files {
            for c in &f.path {
                prop_assert!(!c.is_empty() && c != "." && c != "..", "{:?}", f.path);
                prop_assert!(c.len() <= 255);
                prop_assert!(!c.contains('/') && !c.contains('\\') && !c.chars().any(char::is_control));
            }
            let lower: Vec<String> = f.path.iter().map(|c| c.to_lowercase()).collect();
            for n in 1..lower.len() {
                dirs.insert(lower[..n].join("/"));
            }
            prop_assert!(seen.insert(lower.join("/")), "two files at {:?}", f.path);
        }
        prop_assert!(seen.is_disjoint(&dirs), "a file is also a directory");
        prop_assert_eq!(m.files.iter().map(|f| f.length).sum::<u64>(), m.total_length);
    }
}

#[test]
fn a_piece_takes_the_highest_priority_of_the_files_it_overlaps() {
    // Files of 10, 20000, 30000 and 5 bytes in 16 KiB pieces:
    // piece 0 = a + b, piece 1 = b + c, piece 2 = c, piece 3 = c + d.
    let b = with_files(
        vec![
            entry(10, path(&[b"a"]), ""),
            entry(20000, path(&[b"b"]), ""),
            entry(30000, path(&[b"c"]), ""),
            entry(5, path(&[b"d"]), ""),
        ],
        16384,
    );
    let m = Metainfo::parse(&b).unwrap();
    assert_eq!(m.piece_count(), 4);
    assert_eq!(m.piece_priorities(&[1, 1, 1, 1]), vec![1, 1, 1, 1]);
    // Skipping b keeps pieces 0 and 1: a and c are wanted and share them.
    assert_eq!(m.piece_priorities(&[1, 0, 1, 1]), vec![1, 1, 1, 1]);
    assert_eq!(m.piece_priorities(&[0, 0, 1, 0]), vec![0, 1, 1, 1]);
    assert_eq!(m.piece_priorities(&[0, 1, 0, 0]), vec![1, 1, 0, 0]);
    assert_eq!(m.piece_priorities(&[0, 0, 0, 2]), vec![0, 0, 0, 2]);
    assert_eq!(m.piece_priorities(&[0, 0, 0, 0]), vec![0, 0, 0, 0]);
    // High wins a shared piece; values above 2 are 2; missing files are 1.
    assert_eq!(m.piece_priorities(&[7, 0]), vec![2, 1, 1, 1]);
    assert_eq!(m.piece_priorities(&[]), vec![1, 1, 1, 1]);
}

#[test]
fn padding_files_do_not_make_a_piece_wanted() {
    let pad = |len: i64| Value::dict().insert("attr", Value::bytes("p")).insert("length", Value::Int(len));
    let b = with_files(
        vec![entry(10, path(&[b"a"]), ""), pad(16374), entry(16384, path(&[b"b"]), ""), entry(0, path(&[b"e"]), "")],
        16384,
    );
    let m = Metainfo::parse(&b).unwrap();
    // The pad shares piece 0 with a; skipping a leaves piece 0 unwanted
    // even though the pad is "wanted".
    assert_eq!(m.piece_priorities(&[0, 1, 1, 2]), vec![0, 1]);
    assert_eq!(m.piece_priorities(&[1, 0, 0, 0]), vec![1, 0]);
}

#[test]
fn file_progress_counts_each_files_bytes_in_verified_pieces() {
    // a 10, b 20000, c 30000, d 5 in 16 KiB pieces: piece 0 = a + b[..16374],
    // piece 1 = b[16374..] + c[..12758], piece 2 = c, piece 3 = c + d.
    let b = with_files(
        vec![
            entry(10, path(&[b"a"]), ""),
            entry(20000, path(&[b"b"]), ""),
            entry(30000, path(&[b"c"]), ""),
            entry(5, path(&[b"d"]), ""),
        ],
        16384,
    );
    let m = Metainfo::parse(&b).unwrap();
    let have = |ps: &[u32]| {
        let mut h = rumor_core::bt::bitfield::Bitfield::new(4);
        for p in ps {
            h.set(*p);
        }
        h
    };
    assert_eq!(m.file_progress(&have(&[])), vec![0, 0, 0, 0]);
    assert_eq!(m.file_progress(&have(&[0, 1, 2, 3])), vec![10, 20000, 30000, 5]);
    assert_eq!(m.file_progress(&have(&[0])), vec![10, 16374, 0, 0]);
    assert_eq!(m.file_progress(&have(&[1, 3])), vec![0, 3626, 12758 + (30000 - 12758 - 16384), 5]);
    // A bitfield of the wrong length never panics.
    assert_eq!(m.file_progress(&rumor_core::bt::bitfield::Bitfield::new(1)), vec![0, 0, 0, 0]);
}
