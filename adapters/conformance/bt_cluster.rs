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

const KEY: &str = "6f7665726c617920746573742063757374657220206b65792c20332062797465";

fn three_nodes(s: &Scratch) -> Vec<TestNode> {
    let dirs: Vec<std::path::PathBuf> = (0..3).map(|i| s.0.join(format!("node{i}"))).collect();
    for d in &dirs {
        std::fs::create_dir_all(d).unwrap();
    }
    let first = TestNode::start(&dirs[0], &["--cluster-key", KEY]);
    let join = first.gossip.to_string();
    let mut nodes = vec![first];
    for d in &dirs[1..] {
        nodes.push(TestNode::start(d, &["--cluster-key", KEY, "--join", &join]));
    }
    nodes
}

/// Runs `rumor get --no-seed` attached to `node` (its gossip and its DNS).
fn leech(s: &Scratch, torrent: &std::path::Path, node: &TestNode, tag: &str) -> (Proc, std::path::PathBuf) {
    let out = s.0.join(format!("out-{tag}"));
    let mut get = rumor(&["get"]);
    get.arg(torrent).arg("-o").arg(&out).args(["--no-seed", "--quiet", "--port", "0"]);
    get.args(["--overlay", &node.gossip.to_string(), "--cluster-key", KEY, "--dns", &node.dns.to_string()]);
    (Proc::spawn(tag, get, &s.0.join(format!("{tag}.log"))), out)
}

fn seed_on(s: &Scratch, torrent: &std::path::Path, node: &TestNode) -> Proc {
    let mut seed = rumor(&["seed"]);
    seed.arg(torrent).arg(s.0.join("src")).args(["--quiet", "--port", "0"]);
    seed.args(["--overlay", &node.gossip.to_string(), "--cluster-key", KEY, "--dns", &node.dns.to_string()]);
    Proc::spawn("seeder", seed, &s.0.join("seeder.log"))
}

fn both_complete(s: &Scratch, src: &std::path::Path, leechers: Vec<(Proc, std::path::PathBuf)>, seeder: &Proc) {
    for (mut p, out) in leechers {
        let code = p.wait_for(Duration::from_secs(90));
        assert!(
            code.is_some_and(|c| c.success()),
            "{} completes ({code:?}); its log:\n{}\nthe seeder's:\n{}",
            p.name,
            p.log_text(),
            seeder.log_text()
        );
        assert_same_tree(src, &out.join("payload"));
    }
    let _ = s;
}

#[test]
fn clients_on_three_nodes_find_each_other_through_the_overlay_and_the_cluster_dns() {
    let s = Scratch::new("bt-overlay3");
    let nodes = three_nodes(&s);
    // The tracker's name is added through one node; every node answers it.
    let (code, _) = nodes[1].post("/add", r#"{"name":"tracker.rumor.test","ips":["127.0.0.1"],"ttl":600}"#);
    assert_eq!(code, 200);
    assert!(common::eventually(Duration::from_secs(10), || nodes
        .iter()
        .all(|n| n.dig(&["tracker.rumor.test", "+short"]).trim() == "127.0.0.1")));
    let announce = format!("http://tracker.rumor.test:{}/announce", nodes[0].api.port());
    let src = make_tree(&s.0.join("src"), "payload", 23);
    let torrent = s.0.join("p.torrent");
    rumor_create(&src, &torrent, &["-a", &announce, "--piece-size", "65536"]);
    let seeder = seed_on(&s, &torrent, &nodes[0]);
    let leechers = vec![leech(&s, &torrent, &nodes[1], "leecher1"), leech(&s, &torrent, &nodes[2], "leecher2")];
    both_complete(&s, &src, leechers, &seeder);
}

#[test]
fn a_torrent_with_no_tracker_at_all_is_shared_through_the_overlay_alone() {
    let s = Scratch::new("bt-trackerless");
    let nodes = three_nodes(&s);
    let src = make_tree(&s.0.join("src"), "payload", 29);
    let torrent = s.0.join("p.torrent");
    rumor_create(&src, &torrent, &["--piece-size", "65536"]);
    let seeder = seed_on(&s, &torrent, &nodes[0]);
    let leechers = vec![leech(&s, &torrent, &nodes[1], "leecher1"), leech(&s, &torrent, &nodes[2], "leecher2")];
    both_complete(&s, &src, leechers, &seeder);
    // Every node's overlay lists the three providers.
    let ih = infohash_of(&torrent);
    assert!(common::eventually(Duration::from_secs(10), || nodes.iter().all(|n| {
        let (_, v) = n.get(&format!("/providers/{ih}"));
        v["providers"].as_array().is_some_and(|p| p.len() >= 3)
    })));
}
