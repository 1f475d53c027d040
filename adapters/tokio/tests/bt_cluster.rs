//! The two halves joined: a torrent whose tracker is a name in the
//! cluster's DNS, served by a rumor node's tracker, and clients that
//! resolve it there and register their own names.

mod common;

use common::bt::*;
use common::{Scratch, TestNode};
use std::time::Duration;

#[test]
fn a_leecher_finds_a_seeder_through_a_tracker_named_in_the_cluster_dns() {
    let s = Scratch::new("bt-cluster");
    let node_dir = s.0.join("node");
    std::fs::create_dir_all(&node_dir).unwrap();
    let node = TestNode::start(&node_dir, &[]);
    // The tracker's name is a record in the cluster.
    let (code, resp) = node.post("/add", r#"{"name":"tracker.rumor.test","ips":["127.0.0.1"],"ttl":600}"#);
    assert_eq!(code, 200, "{resp}");
    let announce = format!("http://tracker.rumor.test:{}/announce", node.api.port());
    let src = make_tree(&s.0.join("src"), "payload", 11);
    let torrent = s.0.join("p.torrent");
    rumor_create(&src, &torrent, &["-a", &announce, "--piece-size", "65536"]);
    let dns = node.dns.to_string();
    let api = node.api.to_string();

    let mut seed = rumor(&["seed"]);
    seed.arg(&torrent).arg(s.0.join("src"));
    seed.args(["--quiet", "--port", "0", "--dns", &dns, "--register", "seeder.rumor.test", "--api", &api]);
    let seeder = Proc::spawn("seeder", seed, &s.0.join("seeder.log"));
    // The seeder registered its own name.
    assert!(
        eventually(Duration::from_secs(20), || node.dig(&["seeder.rumor.test", "+short"]).trim() == "127.0.0.1"),
        "the seeder's name is in the cluster DNS; its log:\n{}",
        seeder.log_text()
    );

    let out = s.0.join("out");
    let mut get = rumor(&["get"]);
    get.arg(&torrent).arg("-o").arg(&out).args(["--no-seed", "--quiet", "--port", "0", "--dns", &dns]);
    let mut leecher = Proc::spawn("leecher", get, &s.0.join("leecher.log"));
    let status_code = leecher.wait_for(Duration::from_secs(60));
    assert!(
        status_code.is_some_and(|c| c.success()),
        "the leecher completes ({status_code:?}); its log:\n{}\nthe seeder's:\n{}",
        leecher.log_text(),
        seeder.log_text()
    );
    assert_same_tree(&src, &out.join("payload"));
    // The node's tracker knows the seeder; the system resolver cannot
    // resolve tracker.rumor.test, so the name came from the cluster.
    let (_, providers) = node.get(&format!("/providers/{}", infohash_of(&torrent)));
    assert!(!providers["providers"].as_array().unwrap().is_empty(), "{providers}");
    assert!(std::net::ToSocketAddrs::to_socket_addrs(&("tracker.rumor.test", 80)).is_err());
}

fn infohash_of(torrent: &std::path::Path) -> String {
    let bytes = std::fs::read(torrent).unwrap();
    rumor_core::bt::metainfo::Metainfo::parse(&bytes).unwrap().info_hash.to_hex()
}
