//! The two halves joined: a torrent whose tracker is a name in the
//! cluster's DNS, served by a rumor node's tracker, and clients that
//! resolve it there and register their own names.

mod common;

use common::bt::*;
use common::{start_cluster, Scratch, TestNode};
use std::time::Duration;

#[test]
fn a_leecher_finds_a_seeder_through_a_tracker_named_in_the_cluster_dns() {
    let s = Scratch::new("bt-cluster");
    let node = TestNode::solo("bt-cluster-node", &[]);
    // The tracker's name is a record in the cluster.
    node.add(r#"{"name":"tracker.rumor.test","ips":["127.0.0.1"],"ttl":600}"#);
    let announce = format!("http://tracker.rumor.test:{}/announce", node.api.port());
    let Fixture { data: src, torrent, .. } = fixture(&s.0, 11, &["-a", &announce, "--piece-size", "65536"]);
    let dns = node.dns.to_string();
    let api = node.api.to_string();

    let register = ["--dns", &dns, "--register", "seeder.rumor.test", "--api", &api];
    let seeder = rumor_seed(&s.0, "seeder", &torrent, &s.0.join("src"), 0, &register);
    // The seeder registered its own name.
    assert!(
        eventually(Duration::from_secs(20), || node.dig(&["seeder.rumor.test", "+short"]).trim() == "127.0.0.1"),
        "the seeder's name is in the cluster DNS; its log:\n{}",
        seeder.log_text()
    );

    let (mut leecher, out) = rumor_leech(&s.0, "leecher", &torrent, &["--dns", &dns]);
    assert_downloads(&mut leecher, &out, &src, Duration::from_secs(60), &[&seeder]);
    // The node's tracker knows the seeder; the system resolver cannot
    // resolve tracker.rumor.test, so the name came from the cluster.
    let (_, providers) = node.get(&format!("/providers/{}", info_hash_of(&torrent)));
    assert!(!providers["providers"].as_array().unwrap().is_empty(), "{providers}");
    assert!(std::net::ToSocketAddrs::to_socket_addrs(&("tracker.rumor.test", 80)).is_err());
}

const KEY: &str = "6f7665726c617920746573742063757374657220206b65792c20332062797465";

/// `--overlay` at `node`'s gossip with the cluster's key, and its DNS.
fn attached_to(node: &TestNode) -> [String; 6] {
    let [gossip, dns] = [node.gossip.to_string(), node.dns.to_string()];
    ["--overlay".into(), gossip, "--cluster-key".into(), KEY.into(), "--dns".into(), dns]
}

/// Runs `rumor get --no-seed` attached to `node` (its gossip and its DNS).
fn leech_on(s: &Scratch, torrent: &std::path::Path, node: &TestNode, tag: &str) -> (Proc, std::path::PathBuf) {
    let flags = attached_to(node);
    rumor_leech(&s.0, tag, torrent, &flags.each_ref().map(String::as_str))
}

fn seed_on(s: &Scratch, torrent: &std::path::Path, node: &TestNode) -> Proc {
    let flags = attached_to(node);
    rumor_seed(&s.0, "seeder", torrent, &s.0.join("src"), 0, &flags.each_ref().map(String::as_str))
}

fn all_complete(src: &std::path::Path, leechers: Vec<(Proc, std::path::PathBuf)>, seeder: &Proc) {
    for (mut p, out) in leechers {
        assert_downloads(&mut p, &out, src, Duration::from_secs(90), &[seeder]);
    }
}

#[test]
fn clients_on_three_nodes_find_each_other_through_the_overlay_and_the_cluster_dns() {
    let s = Scratch::new("bt-overlay3");
    let nodes = start_cluster("bt-overlay3-node", 3, KEY);
    // The tracker's name is added through one node; every node answers it.
    nodes[1].add(r#"{"name":"tracker.rumor.test","ips":["127.0.0.1"],"ttl":600}"#);
    assert!(eventually(Duration::from_secs(10), || nodes
        .iter()
        .all(|n| n.dig(&["tracker.rumor.test", "+short"]).trim() == "127.0.0.1")));
    let announce = format!("http://tracker.rumor.test:{}/announce", nodes[0].api.port());
    let Fixture { data: src, torrent, .. } = fixture(&s.0, 23, &["-a", &announce, "--piece-size", "65536"]);
    let seeder = seed_on(&s, &torrent, &nodes[0]);
    let leechers = vec![leech_on(&s, &torrent, &nodes[1], "leecher1"), leech_on(&s, &torrent, &nodes[2], "leecher2")];
    all_complete(&src, leechers, &seeder);
}

#[test]
fn a_torrent_with_no_tracker_at_all_is_shared_through_the_overlay_alone() {
    let s = Scratch::new("bt-trackerless");
    let nodes = start_cluster("bt-trackerless-node", 3, KEY);
    let Fixture { data: src, torrent, .. } = fixture(&s.0, 29, &["--piece-size", "65536"]);
    let seeder = seed_on(&s, &torrent, &nodes[0]);
    let leechers = vec![leech_on(&s, &torrent, &nodes[1], "leecher1"), leech_on(&s, &torrent, &nodes[2], "leecher2")];
    all_complete(&src, leechers, &seeder);
    // Every node's overlay lists the three providers.
    let ih = info_hash_of(&torrent);
    assert!(eventually(Duration::from_secs(10), || nodes.iter().all(|n| {
        let (_, v) = n.get(&format!("/providers/{ih}"));
        v["providers"].as_array().is_some_and(|p| p.len() >= 3)
    })));
}

#[test]
fn a_client_in_the_overlay_keeps_the_members_connections_to_it_open() {
    // A seeder in the overlay is a member: the nodes push gossip to it on
    // connections it keeps. It used to close every one of them after the
    // 5 s given to connections that have not shown the cluster key yet
    // (it never marked them as a member's), and the nodes warned, again and
    // again, that it closes their connections.
    let s = Scratch::new("bt-overlay-conns");
    let nodes = start_cluster("bt-overlay-conns-node", 2, KEY);
    let Fixture { torrent, .. } = fixture(&s.0, 29, &["--piece-size", "65536"]);
    let seeder = seed_on(&s, &torrent, &nodes[0]);
    let log = |n: &TestNode| std::fs::read_to_string(n.data.join(format!("node-{}.log", n.dns.port()))).unwrap();
    // Past the deadline three times over, and then some: a node warns
    // after three connections closed on it right after its first frames.
    std::thread::sleep(Duration::from_secs(22));
    for n in &nodes {
        let text = log(n);
        assert!(text.contains("overlay") || text.contains("member"), "the node's log is not the one expected:\n{text}");
        let warned: Vec<&str> = text.lines().filter(|l| l.contains("keeps failing")).collect();
        assert!(
            warned.is_empty(),
            "the node warns of closed connections: {warned:#?}\nthe seeder's log:\n{}",
            seeder.log_text()
        );
    }
}
