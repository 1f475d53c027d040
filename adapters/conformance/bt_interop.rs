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
    let src = s.0.join("src");
    let data = make_tree(&src, "payload", 1);
    let torrent = s.0.join("t.torrent");
    mktorrent(&data, "http://127.0.0.1:1/announce", 15, &torrent);
    let lt_port = free_port();
    let _seeder = libtorrent("seed", &torrent, &src, lt_port, &[], &s.0.join("lt.log"));
    let out = s.0.join("out");
    let mut get = Proc::spawn(
        "rumor get",
        {
            let mut c = rumor(&["get"]);
            c.arg(&torrent).arg("-o").arg(&out).args(["--no-seed", "--quiet", "--port", &free_port().to_string()]);
            c.args(["--peer", &format!("127.0.0.1:{lt_port}")]);
            c
        },
        &s.0.join("get.log"),
    );
    let status = get.wait_for(Duration::from_secs(60));
    assert!(status.is_some_and(|s| s.success()), "rumor get did not finish: {}", get.log_text());
    assert_same_tree(&data, &out.join("payload"));
}

#[test]
fn a_libtorrent_leecher_downloads_from_a_rumor_seeder() {
    let s = Scratch::new("bt-lt-leech");
    let src = s.0.join("src");
    let data = make_tree(&src, "payload", 2);
    let torrent = s.0.join("t.torrent");
    rumor_create(&data, &torrent, &["--announce", "http://127.0.0.1:1/announce", "--piece-size", "32768"]);
    let port = free_port();
    let _seed = Proc::spawn(
        "rumor seed",
        {
            let mut c = rumor(&["seed"]);
            c.arg(&torrent).arg(&src).args(["--quiet", "--port", &port.to_string()]);
            c
        },
        &s.0.join("seed.log"),
    );
    let out = s.0.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let mut leech =
        libtorrent("leech", &torrent, &out, free_port(), &[format!("127.0.0.1:{port}")], &s.0.join("lt.log"));
    let status = leech.wait_for(Duration::from_secs(90));
    assert!(status.is_some_and(|s| s.success()), "libtorrent did not finish: {}", leech.log_text());
    assert_same_tree(&data, &out.join("payload"));
}

#[test]
fn rumor_fetches_the_metadata_of_a_magnet_link_from_a_libtorrent_seeder() {
    let s = Scratch::new("bt-lt-magnet-seed");
    let src = s.0.join("src");
    let data = make_tree(&src, "payload", 3);
    let torrent = s.0.join("t.torrent");
    mktorrent(&data, "http://127.0.0.1:1/announce", 15, &torrent);
    let ih = rumor_core::bt::metainfo::Metainfo::parse(&std::fs::read(&torrent).unwrap()).unwrap().info_hash;
    let lt_port = free_port();
    let seeder = libtorrent("seed", &torrent, &src, lt_port, &[], &s.0.join("lt.log"));
    assert!(eventually(Duration::from_secs(20), || std::net::TcpStream::connect(("127.0.0.1", lt_port)).is_ok()));
    let link = format!("magnet:?xt=urn:btih:{ih}&dn=payload&x.pe=127.0.0.1:{lt_port}");
    let out = s.0.join("out");
    let mut get = Proc::spawn(
        "rumor get",
        {
            let mut c = rumor(&["get", &link]);
            c.arg("-o").arg(&out).args(["--no-seed", "--quiet", "--port", "0", "--metadata-timeout", "60"]);
            c
        },
        &s.0.join("get.log"),
    );
    let status = get.wait_for(Duration::from_secs(90));
    assert!(
        status.is_some_and(|s| s.success()),
        "rumor get did not finish: {}\nlibtorrent: {}",
        get.log_text(),
        seeder.log_text()
    );
    assert!(get.log_text().contains("got the metadata"));
    assert_same_tree(&data, &out.join("payload"));
}

#[test]
fn libtorrent_fetches_the_metadata_of_a_magnet_link_from_a_rumor_seeder() {
    let s = Scratch::new("bt-lt-magnet-leech");
    let src = s.0.join("src");
    let data = make_tree(&src, "payload", 4);
    let torrent = s.0.join("t.torrent");
    let ih = rumor_create(&data, &torrent, &["--piece-size", "32768"]);
    let port = free_port();
    let _seed = Proc::spawn(
        "rumor seed",
        {
            let mut c = rumor(&["seed"]);
            c.arg(&torrent).arg(&src).args(["--quiet", "--port", &port.to_string()]);
            c
        },
        &s.0.join("seed.log"),
    );
    assert!(eventually(Duration::from_secs(20), || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()));
    let out = s.0.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let link = format!("magnet:?xt=urn:btih:{ih}&x.pe=127.0.0.1:{port}");
    let mut leech = libtorrent("leech", &link, &out, free_port(), &[format!("127.0.0.1:{port}")], &s.0.join("lt.log"));
    let status = leech.wait_for(Duration::from_secs(90));
    assert!(status.is_some_and(|s| s.success()), "libtorrent did not finish: {}", leech.log_text());
    assert_same_tree(&data, &out.join("payload"));
}

fn tracker_round_trip(scheme: &str, dead: &str) {
    let s = Scratch::new(&format!("bt-opentracker-{scheme}"));
    let src = s.0.join("src");
    let data = make_tree(&src, "payload", 3);
    let torrent = s.0.join("t.torrent");
    let tport = free_port();
    // A dead tracker first, then opentracker: one dead tracker must not stall.
    let live = format!("{scheme}://127.0.0.1:{tport}/announce");
    let hash = rumor_create(&data, &torrent, &["--announce", dead, "--announce", &live]);
    let tracker = opentracker(&s.0, tport, std::slice::from_ref(&hash));
    let _ = &tracker;
    let seed_port = free_port();
    let _seed = Proc::spawn(
        "rumor seed",
        {
            let mut c = rumor(&["seed"]);
            c.arg(&torrent).arg(&src).args(["--quiet", "--port", &seed_port.to_string(), "--bind", "127.0.0.1"]);
            c
        },
        &s.0.join("seed.log"),
    );
    // The leecher knows no peer: only opentracker can introduce them.
    let out = s.0.join("out");
    let mut get = Proc::spawn(
        "rumor get",
        {
            let mut c = rumor(&["get"]);
            c.arg(&torrent).arg("-o").arg(&out).args(["--no-seed", "--quiet", "--port", &free_port().to_string()]);
            c
        },
        &s.0.join("get.log"),
    );
    let status = get.wait_for(Duration::from_secs(90));
    assert!(status.is_some_and(|s| s.success()), "rumor get did not finish: {}", get.log_text());
    assert_same_tree(&data, &out.join("payload"));
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
