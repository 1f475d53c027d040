//! rumor against real BitTorrent software: libtorrent (python3-libtorrent)
//! as seeder and leecher, opentracker as tracker, mktorrent and rumor as
//! torrent makers.

mod common;

use common::bt::*;
use common::{free_port, Scratch};
use std::time::Duration;

#[test]
fn rumor_downloads_a_multi_file_mktorrent_torrent_from_a_libtorrent_seeder_byte_for_byte() {
    let s = Scratch::new("bt-lt-seed");
    let Fixture { src, data, torrent, .. } = mktorrent_fixture(&s.0, 1);
    let lt_port = free_port();
    let seeder = libtorrent("seed", &torrent, &src, lt_port, &[], &s.0.join("lt.log"));
    let (mut get, out) = rumor_leech(&s.0, "get", &torrent, &["--peer", &format!("127.0.0.1:{lt_port}")]);
    assert_downloads(&mut get, &out, &data, Duration::from_secs(60), &[&seeder]);
}

#[test]
fn a_libtorrent_leecher_downloads_from_a_rumor_seeder() {
    let s = Scratch::new("bt-lt-leech");
    let Fixture { src, data, torrent, .. } =
        fixture(&s.0, 2, &["--announce", "http://127.0.0.1:1/announce", "--piece-size", "32768"]);
    let port = free_port();
    let seeder = rumor_seed(&s.0, "seed", &torrent, &src, port, &[]);
    let (mut lt, out) = lt_leech(&s.0, &torrent, port);
    assert_downloads(&mut lt, &out, &data, Duration::from_secs(90), &[&seeder]);
}

#[test]
fn rumor_fetches_the_metadata_of_a_magnet_link_from_a_libtorrent_seeder() {
    let s = Scratch::new("bt-lt-magnet-seed");
    let Fixture { src, data, torrent, ih } = mktorrent_fixture(&s.0, 3);
    let lt_port = free_port();
    let seeder = libtorrent("seed", &torrent, &src, lt_port, &[], &s.0.join("lt.log"));
    wait_listening(lt_port);
    let link = format!("magnet:?xt=urn:btih:{ih}&dn=payload&x.pe=127.0.0.1:{lt_port}");
    let (mut get, out) = rumor_leech(&s.0, "get", &link, &["--metadata-timeout", "60"]);
    assert_downloads(&mut get, &out, &data, Duration::from_secs(90), &[&seeder]);
    assert!(get.log_text().contains("got the metadata"));
}

#[test]
fn libtorrent_fetches_the_metadata_of_a_magnet_link_from_a_rumor_seeder() {
    let s = Scratch::new("bt-lt-magnet-leech");
    let Fixture { src, data, torrent, ih, .. } = fixture(&s.0, 4, &["--piece-size", "32768"]);
    let port = free_port();
    let seeder = rumor_seed(&s.0, "seed", &torrent, &src, port, &[]);
    wait_listening(port);
    let link = format!("magnet:?xt=urn:btih:{ih}&x.pe=127.0.0.1:{port}");
    let (mut lt, out) = lt_leech(&s.0, &link, port);
    assert_downloads(&mut lt, &out, &data, Duration::from_secs(90), &[&seeder]);
}

fn tracker_round_trip(scheme: &str, dead: &str) {
    let s = Scratch::new(&format!("bt-opentracker-{scheme}"));
    let tport = free_port();
    // A dead tracker first, then opentracker: one dead tracker must not stall.
    let live = format!("{scheme}://127.0.0.1:{tport}/announce");
    let Fixture { src, data, torrent, ih: hash } = fixture(&s.0, 3, &["--announce", dead, "--announce", &live]);
    let _tracker = opentracker(&s.0, tport, std::slice::from_ref(&hash));
    let seeder = rumor_seed(&s.0, "seed", &torrent, &src, free_port(), &["--bind", "127.0.0.1"]);
    // The leecher knows no peer: only opentracker can introduce them.
    let (mut get, out) = rumor_leech(&s.0, "get", &torrent, &[]);
    assert_downloads(&mut get, &out, &data, Duration::from_secs(90), &[&seeder]);
}

#[test]
fn two_rumors_find_each_other_through_opentracker_over_http_despite_a_refusing_first_tier() {
    tracker_round_trip("http", &format!("http://127.0.0.1:{}/announce", free_port()));
}

#[test]
fn two_rumors_find_each_other_through_opentracker_over_udp_despite_a_silent_first_tier() {
    // A UDP socket that never answers: the announce times out (15 s, BEP 15)
    // and the next tier is tried.
    let black_hole = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dead = format!("udp://{}/announce", black_hole.local_addr().unwrap());
    tracker_round_trip("udp", &dead);
    drop(black_hole);
}
