//! BitTorrent test helpers: processes killed by PID on drop, a libtorrent
//! peer (python3-libtorrent under the system python), opentracker,
//! mktorrent, and deterministic content.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The system python that has the libtorrent bindings (not pyenv's).
pub const PYTHON: &str = "/usr/bin/python3";

/// The libtorrent peer script.
pub fn lt_script() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../conformance/common/lt_peer.py"))
}

/// A child process killed (by its PID) when dropped; output goes to a log.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
    pub name: String,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr into `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Proc {
        let f = std::fs::File::create(log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc { child, log: log.to_path_buf(), name: name.to_string() }
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the process to exit, up to `limit`; None if it did not.
    pub fn wait_for(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Sends SIGINT (as Ctrl-C does).
    pub fn interrupt(&self) {
        unsafe_free_kill(self.child.id(), "-INT");
    }
}

fn unsafe_free_kill(pid: u32, sig: &str) {
    let _ = Command::new("kill").arg(sig).arg(pid.to_string()).status();
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[allow(unused_imports)] // not every suite uses every one
pub use super::{eventually, rumor, rumor_output};

/// `rumor seed TORRENT SRC --quiet --port PORT EXTRA...`, its output in
/// `DIR/TAG.log`.
pub fn rumor_seed(dir: &Path, tag: &str, torrent: &Path, src: &Path, port: u16, extra: &[&str]) -> Proc {
    let mut c = rumor(&["seed"]);
    c.arg(torrent).arg(src).args(["--quiet", "--port", &port.to_string()]).args(extra);
    Proc::spawn(tag, c, &dir.join(format!("{tag}.log")))
}

/// `rumor get WHAT -o DIR/out-TAG --no-seed --quiet --port 0 EXTRA...`, its
/// output in `DIR/TAG.log`; returns the process and its output directory.
pub fn rumor_leech(dir: &Path, tag: &str, what: impl AsRef<OsStr>, extra: &[&str]) -> (Proc, PathBuf) {
    let out = dir.join(format!("out-{tag}"));
    let mut c = get_command(what, &out, 0);
    c.args(extra);
    (Proc::spawn(tag, c, &dir.join(format!("{tag}.log"))), out)
}

/// `rumor get WHAT -o OUT --no-seed --quiet --port PORT` as a command.
pub fn get_command(what: impl AsRef<OsStr>, out: &Path, port: u16) -> Command {
    let mut c = rumor(&["get"]);
    c.arg(what.as_ref()).arg("-o").arg(out).args(["--no-seed", "--quiet", "--port", &port.to_string()]);
    c
}

/// Waits up to `limit` for `p` to exit successfully; otherwise panics with
/// its log and those of `others` (the peers it was talking to).
pub fn assert_success(p: &mut Proc, limit: Duration, others: &[&Proc]) {
    let status = p.wait_for(limit);
    if !status.is_some_and(|s| s.success()) {
        let logs: String = others.iter().map(|o| format!("\n{}'s log:\n{}", o.name, o.log_text())).collect();
        panic!("{} did not finish ({status:?}); its log:\n{}{logs}", p.name, p.log_text());
    }
}

/// [`assert_success`], then the download in `out` is the tree `src`.
pub fn assert_downloads(p: &mut Proc, out: &Path, src: &Path, limit: Duration, others: &[&Proc]) {
    assert_success(p, limit, others);
    assert_same_tree(src, &out.join(src.file_name().unwrap()));
}

/// Waits until something accepts TCP on 127.0.0.1:`port` (20 s at most).
pub fn wait_listening(port: u16) {
    let up = eventually(Duration::from_secs(20), || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    assert!(up, "nothing listens on 127.0.0.1:{port}");
}

/// The infohash of a .torrent file.
pub fn info_hash_of(torrent: &Path) -> rumor_core::bt::metainfo::InfoHash {
    metainfo_of(torrent).info_hash
}

/// A .torrent file, parsed.
pub fn metainfo_of(torrent: &Path) -> rumor_core::bt::metainfo::Metainfo {
    rumor_core::bt::metainfo::Metainfo::parse(&std::fs::read(torrent).unwrap()).unwrap()
}

/// Deterministic pseudo-random bytes (xorshift), `len` of them.
pub fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes a small multi-file tree under `root/name`: odd sizes, a
/// subdirectory, an empty-ish file; returns its path.
pub fn make_tree(root: &Path, name: &str, seed: u64) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(dir.join("sub/deeper")).unwrap();
    std::fs::write(dir.join("alpha.bin"), content(seed, 1_500_000 + 17)).unwrap();
    std::fs::write(dir.join("sub/beta.bin"), content(seed + 1, 700_001)).unwrap();
    std::fs::write(dir.join("sub/deeper/gamma.txt"), b"gamma\n").unwrap();
    std::fs::write(dir.join("zeta.bin"), content(seed + 2, 333_333)).unwrap();
    dir
}

/// Asserts two trees hold the same files with the same bytes.
pub fn assert_same_tree(a: &Path, b: &Path) {
    fn list(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                list(root, &e.path(), out);
            } else {
                out.push(e.path().strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    let (mut la, mut lb) = (Vec::new(), Vec::new());
    list(a, a, &mut la);
    list(b, b, &mut lb);
    la.sort();
    lb.sort();
    assert_eq!(la, lb, "the trees list different files");
    for f in la {
        assert!(std::fs::read(a.join(&f)).unwrap() == std::fs::read(b.join(&f)).unwrap(), "{} differs", f.display());
    }
}

/// Checks the system python has libtorrent; panics with the install hint.
pub fn require_libtorrent() {
    let ok = Command::new(PYTHON)
        .args(["-c", "import libtorrent"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "these tests need python3-libtorrent for {PYTHON} (apt-get install python3-libtorrent)");
}

/// A libtorrent peer: `mode` is "seed" or "leech"; `torrent` a .torrent
/// path or (to leech) a magnet link.
pub fn libtorrent(
    mode: &str,
    torrent: impl AsRef<std::ffi::OsStr>,
    save: &Path,
    port: u16,
    peers: &[String],
    log: &Path,
) -> Proc {
    require_libtorrent();
    let mut c = Command::new(PYTHON);
    c.arg(lt_script()).arg(mode).arg(torrent.as_ref()).arg(save).arg(port.to_string());
    for p in peers {
        c.args(["--peer", p]);
    }
    c.args(["--timeout", "90"]);
    Proc::spawn(&format!("libtorrent {mode}"), c, log)
}

/// A libtorrent leecher of `what` (a .torrent or a magnet link) that
/// dials 127.0.0.1:`port`, saving into `DIR/out-lt` (its log: `DIR/lt.log`);
/// returns it and the output directory.
pub fn lt_leech(dir: &Path, what: impl AsRef<std::ffi::OsStr>, port: u16) -> (Proc, PathBuf) {
    let out = dir.join("out-lt");
    std::fs::create_dir_all(&out).unwrap();
    let peer = format!("127.0.0.1:{port}");
    (libtorrent("leech", what, &out, super::free_port(), &[peer], &dir.join("lt.log")), out)
}

/// opentracker on 127.0.0.1:`port` (HTTP and UDP), whitelisting `hashes`.
/// Debian's build only serves whitelisted infohashes; run as root it
/// chroots to `-d` before reading the whitelist, so the path is given
/// inside that directory then (as another user it stays put).
pub fn opentracker(dir: &Path, port: u16, hashes: &[String]) -> Proc {
    let wl_dir = dir.join("opentracker");
    std::fs::create_dir_all(&wl_dir).unwrap();
    std::fs::write(wl_dir.join("whitelist"), hashes.join("\n") + "\n").unwrap();
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    let wl = if root { PathBuf::from("/whitelist") } else { wl_dir.join("whitelist") };
    let mut c = Command::new("opentracker");
    c.args(["-i", "127.0.0.1", "-p", &port.to_string(), "-P", &port.to_string(), "-d"]).arg(&wl_dir).arg("-w").arg(wl);
    let p = Proc::spawn("opentracker", c, &dir.join("opentracker.log"));
    // Wait until it answers HTTP.
    let end = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < end, "opentracker did not start: {}", p.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    p
}

/// mktorrent DIR with `announce` and piece size 2^`piece_log2`.
pub fn mktorrent(src: &Path, announce: &str, piece_log2: u32, out: &Path) {
    let o = Command::new("mktorrent")
        .args(["-a", announce, "-l", &piece_log2.to_string(), "-o"])
        .arg(out)
        .arg(src)
        .output()
        .expect("mktorrent is installed (apt-get install mktorrent)");
    assert!(o.status.success(), "mktorrent failed: {}", String::from_utf8_lossy(&o.stderr));
}

/// The files most tests start from: a tree made by [`make_tree`] and a
/// .torrent of it.
pub struct Fixture {
    /// `DIR/src`, the directory a seeder is given.
    pub src: PathBuf,
    /// `DIR/src/payload`, the tree itself.
    pub data: PathBuf,
    /// `DIR/t.torrent`.
    pub torrent: PathBuf,
    /// The torrent's infohash, in hex.
    pub ih: String,
}

/// The tree `payload` (from `seed`) under `DIR/src`, and `DIR/t.torrent` of
/// it made by `rumor create CREATE_ARGS`.
pub fn fixture(dir: &Path, seed: u64, create_args: &[&str]) -> Fixture {
    let src = dir.join("src");
    let data = make_tree(&src, "payload", seed);
    let torrent = dir.join("t.torrent");
    let ih = rumor_create(&data, &torrent, create_args);
    Fixture { src, data, torrent, ih }
}

/// [`fixture`] with the torrent made by mktorrent instead (32 KiB pieces,
/// a tracker nobody runs).
pub fn mktorrent_fixture(dir: &Path, seed: u64) -> Fixture {
    let src = dir.join("src");
    let data = make_tree(&src, "payload", seed);
    let torrent = dir.join("t.torrent");
    mktorrent(&data, "http://127.0.0.1:1/announce", 15, &torrent);
    let ih = info_hash_of(&torrent).to_hex();
    Fixture { src, data, torrent, ih }
}

/// `rumor create` and the infohash it prints.
pub fn rumor_create(src: &Path, out: &Path, extra: &[&str]) -> String {
    let o = rumor(&["create"]).arg(src).arg("-o").arg(out).args(extra).output().unwrap();
    assert!(o.status.success(), "rumor create failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

/// True if `cmd` is on the PATH.
pub fn have_command(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Panics with the install hint unless `cmd` is installed.
pub fn require(cmd: &str, package: &str) {
    assert!(have_command(cmd), "this test needs {cmd} (apt-get install {package}; see .ci/apt-packages)");
}

/// aria2's options for a quiet, loopback-only BitTorrent peer.
const ARIA2_COMMON: &[&str] = &[
    "--enable-dht=false",
    "--enable-dht6=false",
    "--bt-enable-lpd=false",
    "--enable-peer-exchange=false",
    "--interface=127.0.0.1",
    "--bt-external-ip=127.0.0.1",
    "--follow-torrent=false",
    "--file-allocation=none",
    "--console-log-level=warn",
    "--summary-interval=0",
    "--bt-stop-timeout=0",
];

/// aria2 seeding `torrent` from the data under `dir` (checked first), on
/// 127.0.0.1:`port`, for up to `minutes`.
pub fn aria2_seed(dir: &Path, torrent: &Path, data_dir: &Path, port: u16) -> Proc {
    require("aria2c", "aria2");
    let mut c = Command::new("aria2c");
    c.args(ARIA2_COMMON)
        .args(["-V", "--seed-ratio=0", "--seed-time=5", &format!("--listen-port={port}"), "-d"])
        .arg(data_dir)
        .arg(torrent);
    Proc::spawn("aria2 seed", c, &dir.join("aria2-seed.log"))
}

/// aria2 downloading `what` (a .torrent or a magnet link) into `out`,
/// listening on `ports` (a range: with a magnet link aria2 binds once for
/// the metadata and again for the download); it exits 0 when complete.
pub fn aria2_leech(dir: &Path, what: impl AsRef<OsStr>, out: &Path, ports: (u16, u16)) -> Proc {
    require("aria2c", "aria2");
    std::fs::create_dir_all(out).unwrap();
    let mut c = Command::new("aria2c");
    c.args(ARIA2_COMMON)
        .args(["--seed-time=0", &format!("--listen-port={}-{}", ports.0, ports.1), "-d"])
        .arg(out)
        .arg(what.as_ref());
    Proc::spawn("aria2 leech", c, &dir.join("aria2-leech.log"))
}

/// A transmission-daemon with its RPC on 127.0.0.1:`rpc` and peers on
/// 127.0.0.1:`peer_port`, saving into `download_dir`.
pub struct Transmission {
    pub proc: Proc,
    pub rpc: u16,
}

impl Transmission {
    pub fn start(dir: &Path, download_dir: &Path, rpc: u16, peer_port: u16) -> Transmission {
        require("transmission-daemon", "transmission-daemon");
        require("transmission-remote", "transmission-cli");
        let conf = dir.join("transmission-conf");
        std::fs::create_dir_all(&conf).unwrap();
        std::fs::create_dir_all(download_dir).unwrap();
        let mut c = Command::new("transmission-daemon");
        c.args(["-f", "-g"]).arg(&conf).arg("-w").arg(download_dir).args([
            "-p",
            &rpc.to_string(),
            "-P",
            &peer_port.to_string(),
            "--no-dht",
            "--no-lpd",
            "--no-portmap",
            "-i",
            "127.0.0.1",
            "-r",
            "127.0.0.1",
            "-a",
            "127.0.0.1",
            "-T",
            "--encryption-preferred",
        ]);
        let proc = Proc::spawn("transmission", c, &dir.join("transmission.log"));
        wait_listening(rpc);
        Transmission { proc, rpc }
    }

    /// `transmission-remote RPC ARGS...`'s output.
    pub fn remote(&self, args: &[&OsStr]) -> String {
        let o = Command::new("transmission-remote").arg(self.rpc.to_string()).args(args).output().unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
    }

    /// Adds a .torrent or a magnet link.
    pub fn add(&self, what: impl AsRef<OsStr>) {
        let out = self.remote(&[OsStr::new("-a"), what.as_ref()]);
        assert!(out.contains("success"), "transmission-remote -a: {out}");
    }

    /// True once its (only) torrent has every piece, verified.
    pub fn complete(&self) -> bool {
        self.remote(&[OsStr::new("-t"), OsStr::new("1"), OsStr::new("-i")]).contains("Percent Done: 100%")
    }
}

/// Holds `IDLE` connections that send nothing and `KA` that send a
/// handshake for `INFOHASH` and then a keep-alive every 10 s, reading and
/// discarding what comes; any the seeder closes is opened again (at most
/// one round of reopening every half second). Prints "open" once the
/// first round is up.
const HOLD_SLOTS: &str = r#"
import os, socket, sys, time, selectors
port, idle, ka, ih = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), bytes.fromhex(sys.argv[4])
# Each connection its own peer id: one id for all would make them
# duplicates of one peer, and only the last would stay.
def hs():
    return b"\x13BitTorrent protocol" + bytes(8) + ih + b"-AT0001-" + os.urandom(12)
sel = selectors.DefaultSelector()
def conn(shake):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=1)
        if shake:
            s.sendall(hs())
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, shake)
        return True
    except OSError:
        return False
want = {False: idle, True: ka}
have = {False: 0, True: 0}
def top_up():
    for shake in (False, True):
        while have[shake] < want[shake] and conn(shake):
            have[shake] += 1
top_up()
print("open", flush=True)
last_ka = time.time()
last_round = time.time()
while True:
    for key, _ in sel.select(timeout=0.2):
        s = key.fileobj
        try:
            data = s.recv(65536)
        except BlockingIOError:
            continue
        except OSError:
            data = b""
        if not data:
            sel.unregister(s)
            s.close()
            have[key.data] -= 1
    now = time.time()
    if now - last_ka >= 10:
        last_ka = now
        for key in list(sel.get_map().values()):
            if key.data:
                try:
                    key.fileobj.send(b"\0\0\0\0")
                except OSError:
                    pass
    if now - last_round >= 0.5:
        last_round = now
        top_up()
"#;

/// Starts [`HOLD_SLOTS`] against 127.0.0.1:`port`.
pub fn hold_slots(port: u16, idle: usize, keepalive: usize, ih: &str) -> super::Attacker {
    super::python_attacker(HOLD_SLOTS, &[port.to_string(), idle.to_string(), keepalive.to_string(), ih.to_string()])
}
