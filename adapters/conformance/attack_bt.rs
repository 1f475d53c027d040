//! Issue #12, item 8: connections that never handshake, or handshake and
//! then send only keep-alives, held all of a seeder's peer slots and a real
//! client got nothing. Replayed here, scaled down, against `rumor seed` of
//! a small torrent: 200 idle connections and 60 that handshake and then
//! only send keep-alives; then 70 keep-alive-only ones alone. Each is
//! reopened as soon as the seeder closes it. A libtorrent leecher must
//! still get the whole torrent within 20 s (before the fix: 0 bytes).
//! It prints its figures (bytes the real client got, time to complete).
//!
//! The attacker is a small Python script (`python3`), as the original
//! attack was.

mod common;

use common::bt::*;
use common::{free_port, python_attacker, Attacker, Scratch};
use std::time::{Duration, Instant};

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

fn attack(port: u16, idle: usize, keepalive: usize, ih: &str) -> Attacker {
    python_attacker(HOLD_SLOTS, &[port.to_string(), idle.to_string(), keepalive.to_string(), ih.to_string()])
}

/// What the libtorrent leecher's log says it has: the bytes of a `DONE`
/// line, or the progress of its last status line times `total`.
fn lt_bytes(log: &str, total: u64) -> u64 {
    for l in log.lines().rev() {
        if let Some(rest) = l.strip_prefix("DONE ") {
            return rest.split_whitespace().next().and_then(|b| b.parse().ok()).unwrap_or(total);
        }
        if let Some(p) = l.split_whitespace().find_map(|w| w.strip_prefix("progress=")) {
            return (p.parse::<f64>().unwrap_or(0.0) * total as f64) as u64;
        }
    }
    0
}

fn leecher_completes_under_attack(tag: &str, idle: usize, keepalive: usize, limit: Duration) {
    let s = Scratch::new(tag);
    let Fixture { src, data, torrent, ih } =
        fixture(&s.0, 8, &["--announce", "http://127.0.0.1:1/announce", "--piece-size", "32768"]);
    let total = metainfo_of(&torrent).total_length;
    let port = free_port();
    let seeder = rumor_seed(&s.0, "seed", &torrent, &src, port, &["--bind", "127.0.0.1"]);
    wait_listening(port);
    let _attack = attack(port, idle, keepalive, &ih);
    std::thread::sleep(Duration::from_secs(3));
    let started = Instant::now();
    let (mut lt, out) = lt_leech(&s.0, &torrent, port);
    let status = lt.wait_for(limit);
    let took = started.elapsed();
    let got = lt_bytes(&lt.log_text(), total);
    eprintln!(
        "attack_bt: {idle} idle + {keepalive} keep-alive-only connections: the libtorrent leecher got {got} of \
         {total} bytes, {} in {:.1} s",
        if status.is_some_and(|s| s.success()) { "complete" } else { "not complete" },
        took.as_secs_f64()
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "the leecher got {got} of {total} bytes in {limit:?} ({status:?}); its log:\n{}\nthe seeder's log:\n{}",
        lt.log_text(),
        seeder.log_text()
    );
    assert_same_tree(&data, &out.join(data.file_name().unwrap()));
}

#[test]
fn idle_and_keepalive_only_connections_do_not_keep_a_real_leecher_from_a_seeder() {
    // Four times the seeder's 50 slots of idle connections, and more
    // keep-alive-only peers than slots: a connection without a handshake
    // gives way at once.
    leecher_completes_under_attack("attack-bt-idle", 200, 60, Duration::from_secs(20));
}

#[test]
fn keepalive_only_peers_holding_every_slot_give_way_to_a_real_leecher() {
    // More keep-alive-only peers than slots, nothing idle: a peer of no
    // use gives way (the one of no use the longest), however often the
    // others reconnect.
    leecher_completes_under_attack("attack-bt-keepalive", 0, 70, Duration::from_secs(20));
}
