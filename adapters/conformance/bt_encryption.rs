//! Message Stream Encryption against libtorrent (python3-libtorrent): with
//! RC4 forced on libtorrent's side both ways, rumor seeds to it and
//! downloads from it; `--encryption require` refuses a plain-only
//! libtorrent cleanly, and the default (`prefer`) still works with it.

mod common;

use common::bt::*;
use common::{free_port, Scratch};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// What the encryption layer logs, on top of the usual.
const LOG: &str = "info,rumor_node::bt::mse_stream=debug";

/// A libtorrent peer with `--enc ENC` (forced: RC4 only; disabled: plain
/// only), dialing `peers`.
fn lt(dir: &Path, mode: &str, torrent: &Path, save: &Path, port: u16, peers: &[String], enc: &str) -> Proc {
    require_libtorrent();
    let mut c = Command::new(PYTHON);
    c.arg(lt_script()).arg(mode).arg(torrent).arg(save).arg(port.to_string());
    for p in peers {
        c.args(["--peer", p]);
    }
    c.args(["--timeout", "90", "--enc", enc]);
    Proc::spawn(&format!("libtorrent {mode} ({enc})"), c, &dir.join(format!("lt-{mode}.log")))
}

fn seed(dir: &Path, torrent: &Path, src: &Path, port: u16, extra: &[&str]) -> Proc {
    let mut c = rumor(&["seed"]);
    c.arg(torrent).arg(src).args(["--quiet", "--port", &port.to_string()]).args(extra).env("RUMOR_LOG", LOG);
    Proc::spawn("rumor seed", c, &dir.join("seed.log"))
}

fn leech(dir: &Path, torrent: &Path, peer: u16, extra: &[&str]) -> (Proc, PathBuf) {
    let out = dir.join("out-rumor");
    let mut c = get_command(torrent, &out, 0);
    c.args(["--peer", &format!("127.0.0.1:{peer}")]).args(extra).env("RUMOR_LOG", LOG);
    (Proc::spawn("rumor get", c, &dir.join("get.log")), out)
}

#[test]
fn a_libtorrent_leecher_that_forces_rc4_downloads_from_a_rumor_seeder() {
    let s = Scratch::new("bt-enc-lt-leech");
    let Fixture { src, data, torrent, .. } = fixture(&s.0, 21, &["--piece-size", "32768"]);
    let port = free_port();
    let seeder = seed(&s.0, &torrent, &src, port, &[]);
    wait_listening(port);
    let out = s.0.join("out-lt");
    std::fs::create_dir_all(&out).unwrap();
    let mut leecher = lt(&s.0, "leech", &torrent, &out, free_port(), &[format!("127.0.0.1:{port}")], "forced");
    assert_downloads(&mut leecher, &out, &data, Duration::from_secs(90), &[&seeder]);
    assert!(seeder.log_text().contains("encryption handshake done: Rc4"), "seeder log:\n{}", seeder.log_text());
}

#[test]
fn rumor_downloads_from_a_libtorrent_seeder_that_forces_rc4() {
    let s = Scratch::new("bt-enc-lt-seed");
    let Fixture { src, data, torrent, .. } = mktorrent_fixture(&s.0, 22);
    let lt_port = free_port();
    let seeder = lt(&s.0, "seed", &torrent, &src, lt_port, &[], "forced");
    wait_listening(lt_port);
    let (mut get, out) = leech(&s.0, &torrent, lt_port, &[]);
    assert_downloads(&mut get, &out, &data, Duration::from_secs(90), &[&seeder]);
    assert!(get.log_text().contains("encryption handshake done: Rc4"), "log:\n{}", get.log_text());
}

#[test]
fn rumor_requiring_encryption_refuses_a_plain_only_libtorrent_both_ways() {
    let s = Scratch::new("bt-enc-require");
    let Fixture { src, torrent, .. } = mktorrent_fixture(&s.0, 23);
    // rumor dials a plain-only seeder: the handshake fails, no fallback.
    let lt_port = free_port();
    let lt_seeder = lt(&s.0, "seed", &torrent, &src, lt_port, &[], "disabled");
    wait_listening(lt_port);
    let (mut get, _out) = leech(&s.0, &torrent, lt_port, &["--encryption", "require"]);
    // A plain-only leecher dials a rumor seeder that requires encryption.
    let port = free_port();
    let seeder = seed(&s.0, &torrent, &src, port, &["--encryption", "require"]);
    wait_listening(port);
    let out = s.0.join("out-lt");
    std::fs::create_dir_all(&out).unwrap();
    let mut lt_leecher = lt(&s.0, "leech", &torrent, &out, free_port(), &[format!("127.0.0.1:{port}")], "disabled");
    let refused = |p: &Proc, what: &str| p.log_text().contains(what);
    let both = eventually(Duration::from_secs(30), || {
        refused(&get, "encryption is required") && refused(&seeder, "incoming encryption handshake:")
    });
    assert!(both, "get log:\n{}\nseed log:\n{}", get.log_text(), seeder.log_text());
    // Refused cleanly: both rumors still run, nothing came through.
    let end = Instant::now() + Duration::from_secs(3);
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(get.child.try_wait().unwrap().is_none(), "rumor get exited: {}", get.log_text());
    assert!(lt_leecher.child.try_wait().unwrap().is_none(), "libtorrent finished: {}", lt_leecher.log_text());
    assert!(!get.log_text().contains("panicked") && !seeder.log_text().contains("panicked"));
    drop(lt_seeder);
}

#[test]
fn rumor_preferring_encryption_still_trades_with_a_plain_only_libtorrent() {
    let s = Scratch::new("bt-enc-prefer");
    let Fixture { src, data, torrent, .. } = mktorrent_fixture(&s.0, 24);
    let lt_port = free_port();
    let seeder = lt(&s.0, "seed", &torrent, &src, lt_port, &[], "disabled");
    wait_listening(lt_port);
    let (mut get, out) = leech(&s.0, &torrent, lt_port, &[]);
    assert_downloads(&mut get, &out, &data, Duration::from_secs(90), &[&seeder]);
    assert!(get.log_text().contains("dialing again in plain"), "log:\n{}", get.log_text());
}

#[test]
fn two_rumors_obfuscate_by_default_and_use_rc4_when_one_requires_it() {
    let s = Scratch::new("bt-enc-rumors");
    let Fixture { src, data, torrent, .. } = fixture(&s.0, 25, &["--piece-size", "32768"]);
    for (tag, get_policy, want) in [("default", "prefer", "Plaintext"), ("required", "require", "Rc4")] {
        let port = free_port();
        let seeder = seed(&s.0, &torrent, &src, port, &[]);
        wait_listening(port);
        let (mut get, out) = leech(&s.0, &torrent, port, &["--encryption", get_policy]);
        assert_downloads(&mut get, &out, &data, Duration::from_secs(60), &[&seeder]);
        let done = format!("encryption handshake done: {want}");
        assert!(get.log_text().contains(&done), "{tag}: get log:\n{}", get.log_text());
        assert!(seeder.log_text().contains(&done), "{tag}: seed log:\n{}", seeder.log_text());
        std::fs::remove_dir_all(&out).unwrap();
    }
}
