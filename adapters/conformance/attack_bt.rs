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
use common::{free_port, Scratch};
use std::time::{Duration, Instant};

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
    let _attack = hold_slots(port, idle, keepalive, &ih);
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
