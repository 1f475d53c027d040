//! Torrents made by other clients (issue 13): padding files, BEP 47
//! attributes and symlinks, BEP 52 hybrids, Windows and hostile names,
//! pieces of 64 MiB. python3-libtorrent makes them (or the test writes the
//! bencode by hand) and seeds them; rumor downloads them into safe paths,
//! byte for byte; and what libtorrent refuses, rumor refuses too.

mod common;

use common::bt::*;
use common::Scratch;
use rumor_core::bt::bencode::Value;
use rumor_core::bt::metainfo::{Metainfo, PieceHasher};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The libtorrent helper of this suite.
fn wild_script() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../conformance/common/lt_wild.py"))
}

/// Runs `lt_wild.py ARGS...` to the end; its stdout.
fn lt_wild(args: &[&std::ffi::OsStr]) -> String {
    require_libtorrent();
    let o = Command::new(PYTHON).arg(wild_script()).args(args).output().unwrap();
    assert!(o.status.success(), "lt_wild.py {args:?} failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

/// A tree as people share them: a name with spaces and UTF-8, an empty
/// file, a nested executable, a symlink to it, odd sizes (so padding files
/// are needed).
fn wild_tree(root: &Path) -> PathBuf {
    let dir = root.join("payload");
    std::fs::create_dir_all(dir.join("sub/deeper")).unwrap();
    std::fs::write(dir.join("a b é.bin"), content(1, 40_001)).unwrap();
    std::fs::write(dir.join("empty"), b"").unwrap();
    std::fs::write(dir.join("sub/run.sh"), content(2, 70_001)).unwrap();
    std::fs::set_permissions(dir.join("sub/run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(dir.join("sub/deeper/ü.txt"), b"tief\n").unwrap();
    std::os::unix::fs::symlink("sub/run.sh", dir.join("link")).unwrap();
    dir
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode()
}

/// libtorrent makes a torrent of `KIND` from the wild tree and seeds it;
/// rumor downloads it. The result is the same tree: bytes, the symlink (as
/// a link), the x bit, and no padding file anywhere.
fn download_made_by_libtorrent(kind: &str) {
    let s = Scratch::new(&format!("bt-wild-{kind}"));
    let src = s.0.join("src");
    let data = wild_tree(&src);
    let torrent = s.0.join("t.torrent");
    lt_wild(&["make".as_ref(), data.as_os_str(), torrent.as_os_str(), kind.as_ref(), "16384".as_ref()]);
    let meta = metainfo_of(&torrent);
    assert!(meta.files.iter().any(|f| f.padding), "libtorrent made no padding files");
    assert_eq!(meta.hybrid, kind == "hybrid");
    let lt_port = common::free_port();
    let seeder = libtorrent("seed", &torrent, &src, lt_port, &[], &s.0.join("lt.log"));
    let (mut get, out) = rumor_leech(&s.0, "get", &torrent, &["--peer", &format!("127.0.0.1:{lt_port}")]);
    assert_downloads(&mut get, &out, &data, Duration::from_secs(60), &[&seeder]);
    let got = out.join("payload");
    assert!(!got.join(".pad").exists(), "a padding file was written");
    assert_ne!(mode(&got.join("sub/run.sh")) & 0o100, 0, "the executable lost its x bit");
    assert_eq!(mode(&got.join("a b é.bin")) & 0o111, 0);
    assert_eq!(std::fs::read_link(got.join("link")).unwrap(), PathBuf::from("sub/run.sh"));
}

#[test]
fn a_hybrid_libtorrent_torrent_with_padding_a_symlink_and_an_executable_downloads_as_the_same_tree() {
    download_made_by_libtorrent("hybrid");
}

#[test]
fn a_magnet_link_to_a_libtorrent_hybrid_fetches_its_metadata_and_downloads_by_the_v1_infohash() {
    let s = Scratch::new("bt-wild-magnet");
    let src = s.0.join("src");
    let data = wild_tree(&src);
    let torrent = s.0.join("t.torrent");
    let ih = lt_wild(&["make".as_ref(), data.as_os_str(), torrent.as_os_str(), "hybrid".as_ref(), "16384".as_ref()]);
    let lt_port = common::free_port();
    let seeder = libtorrent("seed", &torrent, &src, lt_port, &[], &s.0.join("lt.log"));
    wait_listening(lt_port);
    let link = format!("magnet:?xt=urn:btih:{}&x.pe=127.0.0.1:{lt_port}", ih.trim());
    let (mut get, out) = rumor_leech(&s.0, "get", &link, &["--metadata-timeout", "60"]);
    assert_downloads(&mut get, &out, &data, Duration::from_secs(90), &[&seeder]);
    assert_ne!(mode(&out.join("payload/sub/run.sh")) & 0o100, 0);
}

#[test]
fn a_v1_libtorrent_torrent_with_padding_files_downloads_as_the_same_tree() {
    download_made_by_libtorrent("v1pad");
}

#[test]
fn a_libtorrent_leecher_downloads_a_padded_hybrid_torrent_from_a_rumor_seeder() {
    // Seeding reads padding as zeros (it was never written) and serves
    // the hybrid under its v1 infohash.
    let s = Scratch::new("bt-wild-seed");
    let src = s.0.join("src");
    let data = wild_tree(&src);
    let torrent = s.0.join("t.torrent");
    lt_wild(&["make".as_ref(), data.as_os_str(), torrent.as_os_str(), "hybrid".as_ref(), "16384".as_ref()]);
    let port = common::free_port();
    let seeder = rumor_seed(&s.0, "seed", &torrent, &src, port, &[]);
    wait_listening(port);
    let (mut lt, out) = lt_leech(&s.0, &torrent, port);
    assert_downloads(&mut lt, &out, &data, Duration::from_secs(90), &[&seeder]);
    assert!(!src.join("payload/.pad").exists(), "the seeder wrote a padding file");
}

#[test]
fn a_v2_only_torrent_is_refused_with_a_sentence_that_says_so() {
    let s = Scratch::new("bt-wild-v2");
    let data = wild_tree(&s.0.join("src"));
    let torrent = s.0.join("t.torrent");
    lt_wild(&["make".as_ref(), data.as_os_str(), torrent.as_os_str(), "v2".as_ref(), "16384".as_ref()]);
    let out = s.0.join("out");
    let o = get_command(&torrent, &out, common::free_port()).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("refused: v2-only torrents are not supported yet"), "{err}");
    assert!(!out.join("payload").exists());
}

/// Bencode of a multi-file torrent over `content` with these raw paths.
fn hand_made(name: &[u8], files: &[(&[&[u8]], usize)], content: &[u8], piece_length: u64) -> Vec<u8> {
    let mut h = PieceHasher::new(piece_length);
    h.update(content);
    let pieces: Vec<u8> = h.finish().concat();
    let list = files
        .iter()
        .map(|(path, len)| {
            Value::dict()
                .insert("length", Value::Int(*len as i64))
                .insert("path", Value::List(path.iter().map(|c| Value::bytes(c.to_vec())).collect()))
        })
        .collect();
    let info = Value::dict()
        .insert("files", Value::List(list))
        .insert("name", Value::bytes(name.to_vec()))
        .insert("piece length", Value::Int(piece_length as i64))
        .insert("pieces", Value::bytes(pieces));
    Value::dict().insert("info", info).to_bytes()
}

#[test]
fn hostile_and_windows_names_download_into_safe_paths_inside_the_output_directory() {
    let s = Scratch::new("bt-wild-names");
    let long = [&[b'n'; 300][..], b".txt"].concat();
    // (raw path, length, where rumor must put it under out/NAME)
    let cases: Vec<(Vec<&[u8]>, usize, String)> = vec![
        (vec![b"..", b"..", b"escaped.txt"], 10_000, "_/_/escaped.txt".into()),
        (vec![b"C:\\Windows\\evil.exe"], 20_000, "C:_Windows_evil.exe".into()),
        (vec![b"/etc/passwd"], 5_000, "_etc_passwd".into()),
        (vec![b"ok", b"", b"f"], 30_000, "ok/_/f".into()),
        (vec![&long], 7_000, format!("{}.txt", "n".repeat(251))),
        (vec![b"Readme.md"], 1_000, "Readme.md".into()),
        (vec![b"README.md"], 2_000, "README.1.md".into()),
        (vec![b"nul\0byte"], 3_000, "nul_byte".into()),
        (vec![b"caf\xe9"], 4_000, "caf_".into()),
    ];
    let total: usize = cases.iter().map(|c| c.1).sum();
    let data = content(9, total);
    let files: Vec<(&[&[u8]], usize)> = cases.iter().map(|(p, l, _)| (&p[..], *l)).collect();
    let bytes = hand_made(b"wild\\dir", &files, &data, 16384);
    let torrent = s.0.join("t.torrent");
    std::fs::write(&torrent, &bytes).unwrap();
    std::fs::write(s.0.join("content"), &data).unwrap();
    // The seeder: libtorrent, with the files where its own sanitizing puts them.
    let save = s.0.join("lt-save");
    lt_wild(&["materialize".as_ref(), torrent.as_os_str(), save.as_os_str(), s.0.join("content").as_os_str()]);
    let lt_port = common::free_port();
    let seeder = libtorrent("seed", &torrent, &save, lt_port, &[], &s.0.join("lt.log"));
    let (mut get, out) = rumor_leech(&s.0, "get", &torrent, &["--peer", &format!("127.0.0.1:{lt_port}")]);
    assert_success(&mut get, Duration::from_secs(60), &[&seeder]);
    let log = get.log_text();
    assert!(log.contains(r#""../../escaped.txt" is stored as "_/_/escaped.txt""#), "renames are not logged:\n{log}");
    // Every file where it belongs, byte for byte, and nothing else anywhere.
    let root = out.join("wild_dir");
    let mut at = 0;
    for (_, len, want) in &cases {
        let got = std::fs::read(root.join(want)).unwrap_or_else(|e| panic!("{want}: {e}"));
        assert!(got == data[at..at + len], "{want} differs");
        at += len;
    }
    let mut found = Vec::new();
    fn walk(d: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push(p);
            }
        }
    }
    walk(&out, &mut found);
    assert_eq!(found.len(), cases.len(), "{found:?}");
    let beside: Vec<_> = std::fs::read_dir(&s.0).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(!beside.iter().any(|n| n.to_string_lossy().contains("escaped")), "{beside:?}");
    assert!(!Path::new("/tmp/escaped.txt").exists());
}

/// How libtorrent and rumor each judge a torrent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    /// Both accept.
    Both,
    /// Both refuse.
    Neither,
    /// libtorrent accepts and rumor refuses on purpose (said why).
    OnlyLibtorrent(&'static str),
}

fn info_dict(entries: Vec<(&str, Value<'static>)>) -> Vec<u8> {
    let mut info = Value::dict();
    for (k, v) in entries {
        info = info.insert(k, v);
    }
    Value::dict().insert("info", info).to_bytes()
}

fn bs(b: &[u8]) -> Value<'static> {
    Value::bytes(b.to_vec())
}

fn file(len: i64, path: &[&[u8]]) -> Value<'static> {
    Value::dict().insert("length", Value::Int(len)).insert("path", Value::List(path.iter().map(|c| bs(c)).collect()))
}

fn single(len: i64, pl: i64, hashes: usize) -> Vec<(&'static str, Value<'static>)> {
    vec![
        ("length", Value::Int(len)),
        ("name", bs(b"f.bin")),
        ("piece length", Value::Int(pl)),
        ("pieces", bs(&vec![1u8; 20 * hashes])),
    ]
}

fn multi(files: Vec<Value<'static>>, total: usize) -> Vec<(&'static str, Value<'static>)> {
    vec![
        ("files", Value::List(files)),
        ("name", bs(b"d")),
        ("piece length", Value::Int(16384)),
        ("pieces", bs(&vec![1u8; 20 * total.div_ceil(16384)])),
    ]
}

fn v2_leaf(len: i64, root: u8) -> Value<'static> {
    Value::dict().insert("", Value::dict().insert("length", Value::Int(len)).insert("pieces root", bs(&[root; 32])))
}

fn with(
    mut e: Vec<(&'static str, Value<'static>)>,
    k: &'static str,
    v: Value<'static>,
) -> Vec<(&'static str, Value<'static>)> {
    e.retain(|(x, _)| *x != k);
    e.push((k, v));
    e
}

fn without(mut e: Vec<(&'static str, Value<'static>)>, k: &str) -> Vec<(&'static str, Value<'static>)> {
    e.retain(|(x, _)| *x != k);
    e
}

#[test]
fn what_libtorrent_refuses_rumor_refuses_too() {
    use Verdict::*;
    let tree = |len_b: i64| Value::dict().insert("a", v2_leaf(16384, 1)).insert("b", v2_leaf(len_b, 2));
    let hybrid = |len_b: i64, pl: i64| {
        let files = vec![file(16384, &[b"a"]), file(5000, &[b"b"])];
        with(
            with(with(multi(files, 21384), "file tree", tree(len_b)), "meta version", Value::Int(2)),
            "piece length",
            Value::Int(pl),
        )
    };
    let link = |target: &[&[u8]]| {
        file(0, &[b"l"])
            .insert("attr", bs(b"l"))
            .insert("symlink path", Value::List(target.iter().map(|c| bs(c)).collect()))
    };
    let cases: Vec<(&str, Vec<u8>, Verdict)> = vec![
        ("a plain single file", info_dict(single(40_000, 16384, 3)), Both),
        ("pieces of 128 MiB", info_dict(single(300 << 20, 128 << 20, 3)), Both),
        (
            "names with .., /, \\, NUL, empty",
            info_dict(multi(
                vec![file(10, &[b"..", b"x"]), file(10, &[b"/etc", b"a\\b"]), file(10, &[b"n\0", b""])],
                30,
            )),
            Both,
        ),
        ("a 300-byte name", info_dict(multi(vec![file(10, &[&[b'x'; 300]])], 10)), Both),
        ("names that differ in case", info_dict(multi(vec![file(10, &[b"A"]), file(10, &[b"a"])], 20)), Both),
        (
            "a symlink out of the torrent",
            info_dict(multi(vec![file(10, &[b"f"]), link(&[b"..", b"..", b"etc"])], 10)),
            Both,
        ),
        ("a consistent hybrid", info_dict(hybrid(5000, 16384)), Both),
        ("piece length 0", info_dict(single(10, 0, 1)), Neither),
        ("a negative piece length", info_dict(single(10, -16384, 1)), Neither),
        ("too few piece hashes", info_dict(single(40_000, 16384, 2)), Neither),
        ("too many piece hashes", info_dict(single(40_000, 16384, 4)), Neither),
        ("'pieces' not a multiple of 20", info_dict(with(single(10, 16384, 1), "pieces", bs(&[1u8; 21]))), Neither),
        ("a negative length", info_dict(single(-1, 16384, 1)), Neither),
        ("no content", info_dict(single(0, 16384, 0)), Neither),
        ("no name", info_dict(without(single(10, 16384, 1), "name")), Neither),
        ("no pieces (v1)", info_dict(without(single(10, 16384, 1), "pieces")), Neither),
        ("no info", Value::dict().insert("announce", bs(b"http://x/")).to_bytes(), Neither),
        ("a single file named ..", info_dict(with(single(10, 16384, 1), "name", bs(b".."))), Neither),
        ("a file with no path", info_dict(multi(vec![file(10, &[])], 10)), Neither),
        ("meta version 3", info_dict(with(hybrid(5000, 16384), "meta version", Value::Int(3))), Neither),
        ("a hybrid whose v1 and v2 files differ", info_dict(hybrid(5001, 16384)), Neither),
        ("a hybrid with pieces not a power of two", info_dict(hybrid(5000, 3 * 16384 / 2)), Neither),
        ("a file tree without meta version", info_dict(without(hybrid(5000, 16384), "meta version")), Neither),
        ("meta version 2 without a file tree", info_dict(without(hybrid(5000, 16384), "file tree")), Neither),
        (
            "v2 only",
            info_dict(without(without(hybrid(5000, 16384), "pieces"), "files")),
            OnlyLibtorrent("v2-only torrents are not supported yet"),
        ),
        ("not bencode", b"d4:infod".to_vec(), Neither),
    ];
    let s = Scratch::new("bt-wild-judge");
    let mut paths = Vec::new();
    for (i, (_, bytes, _)) in cases.iter().enumerate() {
        let p = s.0.join(format!("{i}.torrent"));
        std::fs::write(&p, bytes).unwrap();
        paths.push(p);
    }
    let args: Vec<&std::ffi::OsStr> =
        std::iter::once("judge".as_ref()).chain(paths.iter().map(|p| p.as_os_str())).collect();
    let lt_says = lt_wild(&args);
    let lt_lines: Vec<&str> = lt_says.lines().collect();
    assert_eq!(lt_lines.len(), cases.len(), "{lt_says}");
    let mut table = String::new();
    let mut wrong = Vec::new();
    for ((what, bytes, want), lt) in cases.iter().zip(&lt_lines) {
        let lt_ok = *lt == "ok";
        let rumor = Metainfo::parse(bytes);
        let got = match (lt_ok, &rumor) {
            (true, Ok(_)) => Both,
            (false, Err(_)) => Neither,
            (true, Err(_)) => OnlyLibtorrent(""),
            (false, Ok(_)) => {
                wrong.push(format!("{what}: libtorrent refuses ({lt}) and rumor accepts"));
                continue;
            }
        };
        let rumor_says = match &rumor {
            Ok(_) => "ok".to_string(),
            Err(e) => format!("refused: {e}"),
        };
        table.push_str(&format!("{what:45} libtorrent: {lt:50.50} rumor: {rumor_says:.90}\n"));
        let agrees = match (want, got) {
            (OnlyLibtorrent(why), OnlyLibtorrent(_)) => rumor_says.contains(why),
            (w, g) => *w == g,
        };
        if !agrees {
            wrong.push(format!("{what}: expected {want:?}, libtorrent says {lt}, rumor says {rumor_says}"));
        }
    }
    eprintln!("{table}");
    assert!(wrong.is_empty(), "{}\n\n{table}", wrong.join("\n"));
}

/// Peak resident memory of a finished process run under GNU time
/// (`-f %M`, KiB), from the last line of its log.
fn peak_rss_kib(log: &str) -> u64 {
    log.lines()
        .rev()
        .find_map(|l| l.strip_prefix("PEAK_RSS_KIB "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no PEAK_RSS_KIB line in:\n{log}"))
}

/// Downloads `data` (as `big.bin`) cut in pieces of `piece` bytes from a
/// libtorrent seeder with `rumor get`; its peak RSS in KiB.
fn peak_rss_of_download(s: &Scratch, data: &[u8], piece: usize) -> u64 {
    let src = s.0.join(format!("src-{piece}"));
    std::fs::create_dir_all(&src).unwrap();
    let file = src.join("big.bin");
    std::fs::write(&file, data).unwrap();
    let torrent = s.0.join(format!("t-{piece}.torrent"));
    lt_wild(&["make".as_ref(), file.as_os_str(), torrent.as_os_str(), "hybrid".as_ref(), piece.to_string().as_ref()]);
    assert_eq!(metainfo_of(&torrent).piece_length, piece as u64);
    let lt_port = common::free_port();
    let seeder = libtorrent("seed", &torrent, &src, lt_port, &[], &s.0.join(format!("lt-{piece}.log")));
    let out = s.0.join(format!("out-{piece}"));
    let mut c = Command::new("/usr/bin/time");
    c.args(["-f", "PEAK_RSS_KIB %M", "--"]).arg(common::binary());
    c.arg("get").arg(&torrent).arg("-o").arg(&out);
    c.args(["--no-seed", "--quiet", "--port", "0", "--peer", &format!("127.0.0.1:{lt_port}")]);
    c.env("RUMOR_LOG", "info");
    let mut get = Proc::spawn("rumor get", c, &s.0.join(format!("get-{piece}.log")));
    assert_success(&mut get, Duration::from_secs(240), &[&seeder]);
    assert!(std::fs::read(out.join("big.bin")).unwrap() == data, "big.bin differs");
    std::fs::remove_dir_all(&out).unwrap();
    peak_rss_kib(&get.log_text())
}

#[test]
fn pieces_of_64_mib_download_with_memory_well_below_one_piece() {
    let s = Scratch::new("bt-wild-big");
    let piece = 64usize << 20;
    // Three whole pieces and a short fourth: holding pieces in memory would
    // show as a peak of several times 64 MiB. The same file in 256 KiB
    // pieces is the baseline: what a download costs whatever its pieces
    // (runtime, buffers, the disk queue's 16 MiB, which a loaded machine
    // fills more; alone, the peak moved between 52 and 67 MiB).
    let data = content(77, 3 * piece + 12_345);
    let small = peak_rss_of_download(&s, &data, 256 << 10);
    let big = peak_rss_of_download(&s, &data, piece);
    eprintln!("rumor get of 3 x 64 MiB pieces: peak RSS {} MiB; in 256 KiB pieces: {} MiB", big / 1024, small / 1024);
    assert!(
        big < small + 32 * 1024,
        "peak RSS {big} KiB with 64 MiB pieces against {small} KiB with 256 KiB pieces: half a piece or more"
    );
}
