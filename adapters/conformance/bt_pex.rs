//! Peer exchange (BEP 11), sending side: a peer that speaks `ut_pex` hears
//! from rumor of the other peers rumor is connected to.

mod common;

use common::bt::*;
use common::{free_port, Scratch};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

/// A libtorrent peer of TORRENT listening on 127.0.0.1:PORT that
/// downloads at 8 KiB/s, so it stays connected to the seeder for minutes
/// instead of finishing and leaving. (In upload mode it would hang up on
/// a seeder at once: nothing to trade.)
const LT_IDLE: &str = r#"
import sys, time, libtorrent as lt
torrent, save, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = lt.session({"listen_interfaces": "127.0.0.1:%d" % port, "enable_dht": False, "enable_lsd": False,
    "enable_upnp": False, "enable_natpmp": False, "enable_outgoing_utp": False, "enable_incoming_utp": False,
    "allow_multiple_connections_per_ip": True})
p = lt.add_torrent_params()
p.ti = lt.torrent_info(torrent)
p.save_path = save
h = s.add_torrent(p)
h.set_download_limit(8192)
while True:
    st = h.status()
    print("peers=%d progress=%.3f" % (st.num_peers, st.progress), flush=True)
    time.sleep(1)
"#;

/// A raw peer: handshakes with 127.0.0.1:ARGV[1] for infohash ARGV[2]
/// advertising `ut_pex` (on id 5) and listening port ARGV[3], then prints
/// every peer exchange message it gets as `PEX SECONDS added=IP:PORT/FLAGS,...
/// dropped=...`, until one names ARGV[5] (IP:PORT) or ARGV[4] seconds pass.
/// Keep-alives every 20 s.
const RAW_PEX_PEER: &str = r#"
import socket, struct, sys, time
port, ih, my_port, limit, want = int(sys.argv[1]), bytes.fromhex(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
def bdecode(b, i=0):
    c = b[i:i+1]
    if c == b"i":
        j = b.index(b"e", i); return int(b[i+1:j]), j + 1
    if c == b"l":
        i += 1; out = []
        while b[i:i+1] != b"e":
            v, i = bdecode(b, i); out.append(v)
        return out, i + 1
    if c == b"d":
        i += 1; out = {}
        while b[i:i+1] != b"e":
            k, i = bdecode(b, i); v, i = bdecode(b, i); out[k] = v
        return out, i + 1
    j = b.index(b":", i); n = int(b[i:j]); return b[j+1:j+1+n], j + 1 + n
def peers(c, w):
    out = []
    for k in range(0, len(c) - w + 1, w):
        ip = socket.inet_ntop(socket.AF_INET if w == 6 else socket.AF_INET6, c[k:k+w-2])
        out.append("%s:%d" % (ip, struct.unpack(">H", c[k+w-2:k+w])[0]))
    return out
s = socket.create_connection(("127.0.0.1", port), timeout=5)
reserved = bytearray(8); reserved[5] |= 0x10
s.sendall(b"\x13BitTorrent protocol" + bytes(reserved) + ih + b"-PY0001-" + b"x" * 12)
ext = b"d1:md6:ut_pexi5ee1:pi%de1:v6:rawpexe" % my_port
s.sendall(struct.pack(">IBB", len(ext) + 2, 20, 0) + ext)
print("open", flush=True)
s.settimeout(1)
buf, start, last_ka = b"", time.time(), time.time()
while time.time() - start < limit:
    if time.time() - last_ka > 20:
        s.sendall(b"\0\0\0\0"); last_ka = time.time()
    try:
        d = s.recv(65536)
    except socket.timeout:
        continue
    if not d:
        print("closed", flush=True); break
    buf += d
    if len(buf) >= 68 and buf[:20] == b"\x13BitTorrent protocol":
        buf = buf[68:]
    while len(buf) >= 4:
        n = struct.unpack(">I", buf[:4])[0]
        if len(buf) < 4 + n:
            break
        msg, buf = buf[4:4+n], buf[4+n:]
        if n >= 2 and msg[0] == 20 and msg[1] == 5:
            m, _ = bdecode(msg[2:])
            f = m.get(b"added.f", b"")
            added = ["%s/%d" % (a, f[i] if i < len(f) else 0) for i, a in enumerate(peers(m.get(b"added", b""), 6))]
            added += peers(m.get(b"added6", b""), 18)
            dropped = peers(m.get(b"dropped", b""), 6) + peers(m.get(b"dropped6", b""), 18)
            print("PEX %.1f added=%s dropped=%s" % (time.time() - start, ",".join(added), ",".join(dropped)), flush=True)
            if any(a.split("/")[0] == want for a in added):
                sys.exit(0)
sys.exit(1)
"#;

fn peers_connected(control: SocketAddr) -> u64 {
    let Ok(mut s) = TcpStream::connect(control) else { return 0 };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = write!(s, "GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    let body = buf.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str::<serde_json::Value>(body).ok().and_then(|v| v["peers_connected"].as_u64()).unwrap_or(0)
}

#[test]
fn a_peer_that_speaks_ut_pex_hears_of_another_peer_connected_to_rumor_within_70_seconds() {
    require_libtorrent();
    let s = Scratch::new("bt-pex");
    let Fixture { src, torrent, ih, .. } = fixture(&s.0, 1301, &["--piece-size", "32768"]);
    // libtorrent, idle, which the seeder dials: an outgoing connection, so
    // rumor knows where it listens and that it is reachable.
    let lt_port = free_port();
    let lt_dir = s.0.join("out-lt");
    std::fs::create_dir_all(&lt_dir).unwrap();
    let mut c = Command::new(PYTHON);
    c.arg("-c").arg(LT_IDLE).arg(&torrent).arg(&lt_dir).arg(lt_port.to_string());
    let lt = Proc::spawn("libtorrent", c, &s.0.join("lt.log"));
    wait_listening(lt_port);
    let port = free_port();
    let control: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let lt_addr = format!("127.0.0.1:{lt_port}");
    let seed = rumor_seed(
        &s.0,
        "seed",
        &torrent,
        &src,
        port,
        &["--peer", &lt_addr, "--control", &control.to_string(), "--no-lsd"],
    );
    assert!(
        eventually(Duration::from_secs(30), || peers_connected(control) >= 1),
        "the seeder never connected to libtorrent:\n{}\n{}",
        seed.log_text(),
        lt.log_text()
    );
    // The raw peer, from the moment libtorrent is connected.
    let my_port = free_port();
    let _listener = std::net::TcpListener::bind(("127.0.0.1", my_port)).unwrap();
    let started = Instant::now();
    let out = Command::new("python3")
        .arg("-c")
        .arg(RAW_PEX_PEER)
        .args([port.to_string(), ih.clone(), my_port.to_string(), "70".into(), lt_addr.clone()])
        .output()
        .unwrap();
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "no PEX message named libtorrent ({lt_addr}) within 70 s; the raw peer said:\n{text}{}\nseed:\n{}",
        String::from_utf8_lossy(&out.stderr),
        seed.log_text()
    );
    let pex: Vec<&str> = text.lines().filter(|l| l.starts_with("PEX")).collect();
    // Nothing else is connected: the first message is the one.
    assert_eq!(pex.len(), 1, "{text}");
    let added = pex[0].split(" added=").nth(1).unwrap().split(' ').next().unwrap();
    assert!(
        added.split(',').any(|p| p == format!("{lt_addr}/16")),
        "libtorrent is named reachable (flag 0x10), not a seed: {}",
        pex[0]
    );
    assert!(!pex[0].contains(&format!(":{my_port}")), "the raw peer was named to itself: {}", pex[0]);
    assert!(took < Duration::from_secs(75), "took {took:?}");
    eprintln!("the PEX message came {took:?} after the raw peer started: {}", pex[0]);
}
