//! Local Service Discovery (BEP 14): clients on one network find each
//! other by multicast on 239.192.152.143:6771, with no tracker and no
//! `--peer`. Multicast loops back through this host's default interface,
//! so processes here hear each other (and every other test's clients: the
//! torrents here are made of content no other test uses).
//!
//! The harness switches LSD off for every other test (`RUMOR_NO_LSD`);
//! these remove the variable.

mod common;

use common::bt::*;
use common::{free_port, Scratch};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// `rumor ARGS...` with LSD left on.
fn rumor_lsd(args: &[&str]) -> Command {
    let mut c = rumor(args);
    c.env_remove("RUMOR_NO_LSD");
    c
}

/// `rumor seed TORRENT SRC` with LSD on, no tracker and no `--peer`.
fn seed_lsd(dir: &Path, tag: &str, torrent: &Path, src: &Path, extra: &[&str]) -> Proc {
    let mut c = rumor_lsd(&["seed"]);
    c.arg(torrent).arg(src).args(["--quiet", "--port", &free_port().to_string()]).args(extra);
    Proc::spawn(tag, c, &dir.join(format!("{tag}.log")))
}

/// `rumor get WHAT -o DIR/out-TAG --no-seed` with LSD on (WHAT: a .torrent,
/// a magnet link or an infohash); the process and its output directory.
fn get_lsd(dir: &Path, tag: &str, torrent: impl AsRef<std::ffi::OsStr>, extra: &[&str]) -> (Proc, PathBuf) {
    let out = dir.join(format!("out-{tag}"));
    let mut c = rumor_lsd(&["get"]);
    c.arg(torrent.as_ref()).arg("-o").arg(&out).args(["--no-seed", "--quiet", "--port", &free_port().to_string()]);
    c.args(extra);
    (Proc::spawn(tag, c, &dir.join(format!("{tag}.log"))), out)
}

fn status(control: SocketAddr) -> serde_json::Value {
    let mut s = TcpStream::connect(control).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    serde_json::from_str(buf.split("\r\n\r\n").nth(1).unwrap_or_default()).unwrap()
}

#[test]
fn rumor_seed_and_rumor_get_find_each_other_by_lsd_with_no_tracker_and_no_peer() {
    let s = Scratch::new("bt-lsd");
    // No --announce: the torrent has no tracker at all.
    let Fixture { src, data, torrent, .. } = fixture(&s.0, 1401, &["--piece-size", "32768"]);
    assert!(metainfo_of(&torrent).announce_tiers.is_empty());
    let seed = seed_lsd(&s.0, "seed", &torrent, &src, &[]);
    let (mut get, out) = get_lsd(&s.0, "get", &torrent, &[]);
    assert_downloads(&mut get, &out, &data, Duration::from_secs(30), &[&seed]);
}

#[test]
fn rumor_get_of_a_bare_infohash_finds_a_seeder_by_lsd_alone() {
    let s = Scratch::new("bt-lsd-magnet");
    let Fixture { src, data, torrent, ih } = fixture(&s.0, 1406, &["--piece-size", "32768"]);
    let seed = seed_lsd(&s.0, "seed", &torrent, &src, &[]);
    let (mut get, out) = get_lsd(&s.0, "get", &ih, &["--metadata-timeout", "30"]);
    assert_downloads(&mut get, &out, &data, Duration::from_secs(45), &[&seed]);
    assert!(get.log_text().contains("local service discovery"), "{}", get.log_text());
}

#[test]
fn with_no_lsd_or_a_private_torrent_they_do_not_find_each_other() {
    let s = Scratch::new("bt-lsd-off");
    // --no-lsd on the downloader: it neither announces nor listens.
    let a = s.0.join("a");
    let fa = fixture(&a, 1402, &["--piece-size", "32768"]);
    let _seed_a = seed_lsd(&a, "seed", &fa.torrent, &fa.src, &[]);
    let ca: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let (_get_a, _) = get_lsd(&a, "get", &fa.torrent, &["--no-lsd", "--control", &ca.to_string()]);
    // A private torrent (BEP 27): LSD is never used, whatever the flags.
    let b = s.0.join("b");
    let fb = fixture(&b, 1403, &["--piece-size", "32768", "--private"]);
    let cb: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _seed_b = seed_lsd(&b, "seed", &fb.torrent, &fb.src, &["--control", &cb.to_string()]);
    let (_get_b, _) = get_lsd(&b, "get", &fb.torrent, &[]);
    assert!(eventually(Duration::from_secs(20), || TcpStream::connect(ca).is_ok() && TcpStream::connect(cb).is_ok()));
    // Found peers are dialed within a second (the LSD test above completes
    // in about one): eight seconds is far past that.
    std::thread::sleep(Duration::from_secs(8));
    for c in [ca, cb] {
        let st = status(c);
        assert_eq!(st["peers_known"], 0, "{st}");
        assert_eq!(st["peers_connected"], 0, "{st}");
    }
}

/// A libtorrent session with LSD on (`enable_lsd`), listening on every
/// address: `seed` serves SAVE, `leech` downloads into it and prints DONE.
const LT_LSD: &str = r#"
import sys, time, libtorrent as lt
mode, torrent, save, port, limit = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
s = lt.session({"listen_interfaces": "0.0.0.0:%d" % port, "enable_dht": False, "enable_lsd": True,
    "enable_upnp": False, "enable_natpmp": False, "enable_outgoing_utp": False, "enable_incoming_utp": False,
    "allow_multiple_connections_per_ip": True, "alert_mask": lt.alert.category_t.peer_notification})
p = lt.add_torrent_params()
p.ti = lt.torrent_info(torrent)
p.save_path = save
h = s.add_torrent(p)
start = time.time()
while time.time() - start < limit:
    for a in s.pop_alerts():
        if a.what() == "lsd_peer":
            print("%.1f %s" % (time.time() - start, a.message()), flush=True)
    if mode == "leech" and h.status().is_seeding:
        print("DONE %.1f" % (time.time() - start), flush=True)
        sys.exit(0)
    time.sleep(0.1)
print("TIMEOUT", flush=True)
sys.exit(mode == "leech")
"#;

fn lt_lsd(dir: &Path, mode: &str, torrent: &Path, save: &Path) -> Proc {
    require_libtorrent();
    std::fs::create_dir_all(save).unwrap();
    let mut c = Command::new(PYTHON);
    c.arg("-c").arg(LT_LSD).arg(mode).arg(torrent).arg(save).arg(free_port().to_string()).arg("60");
    Proc::spawn(&format!("libtorrent {mode}"), c, &dir.join(format!("lt-{mode}.log")))
}

#[test]
fn libtorrent_and_rumor_find_each_other_by_lsd_both_ways() {
    let s = Scratch::new("bt-lsd-lt");
    // libtorrent downloads from a rumor seeder.
    let a = s.0.join("a");
    let fa = fixture(&a, 1404, &["--piece-size", "32768"]);
    let seed = seed_lsd(&a, "seed", &fa.torrent, &fa.src, &[]);
    let mut lt = lt_lsd(&a, "leech", &fa.torrent, &a.join("out-lt"));
    assert_downloads(&mut lt, &a.join("out-lt"), &fa.data, Duration::from_secs(60), &[&seed]);
    // rumor downloads from a libtorrent seeder.
    let b = s.0.join("b");
    let fb = fixture(&b, 1405, &["--piece-size", "32768"]);
    let lt_seed = lt_lsd(&b, "seed", &fb.torrent, &fb.src);
    let (mut get, out) = get_lsd(&b, "get", &fb.torrent, &[]);
    assert_downloads(&mut get, &out, &fb.data, Duration::from_secs(60), &[&lt_seed]);
}
