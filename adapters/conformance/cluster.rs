//! Three real nodes on loopback replicating through gossip: what one is
//! told, `dig` finds on the others.

mod common;

use common::*;
use std::time::Duration;

const KEY: &str = "6b6579206f66207468652074657374206375737465722c203332206279746573";
const OTHER_KEY: &str = "0000000000000000000000000000000000000000000000000000000000000001";
/// Gossip converges in well under a second here; this leaves room for a
/// loaded CI machine.
const CONVERGE: Duration = Duration::from_secs(10);

fn answers_everywhere(nodes: &[TestNode], name: &str, want: &str) -> bool {
    eventually(CONVERGE, || nodes.iter().all(|n| n.dig(&[name, "+short"]).trim() == want))
}

fn nxdomain_everywhere(nodes: &[TestNode], name: &str) -> bool {
    eventually(CONVERGE, || nodes.iter().all(|n| status(&n.dig(&[name])) == "NXDOMAIN"))
}

#[test]
fn a_record_added_on_one_node_is_answered_by_all() {
    let nodes = start_cluster("c1", 3, KEY);
    nodes[1].add(r#"{"name":"free.local","ips":["10.1.0.15"],"ttl":360}"#);
    assert!(answers_everywhere(&nodes, "free.local", "10.1.0.15"), "the record reaches every node");
    // Every node sees the two others.
    assert!(eventually(CONVERGE, || nodes.iter().all(|n| n.alive_members() == 3)));
    // A TTL that counts down on every node, not reset by replication.
    let ttl: u32 = answers(&nodes[2].dig(&["free.local"]))[0][1].parse().unwrap();
    assert!(ttl <= 360 && ttl > 340, "{ttl}");
    // The receiving nodes measured how long the write took to arrive.
    let metrics = ureq::get(&nodes[0].url("/metrics")).call().unwrap().into_string().unwrap();
    let value = |name: &str| -> u64 {
        metrics.lines().find_map(|l| l.strip_prefix(name)?.trim().parse().ok()).unwrap_or_else(|| panic!("{name}"))
    };
    assert!(value("rumor_gossip_convergence_lag_ms_count ") >= 1, "{metrics}");
    assert!(value("rumor_gossip_convergence_lag_max_ms ") < 10_000);
}

#[test]
fn deletes_and_expiries_disappear_everywhere() {
    let nodes = start_cluster("c2", 3, KEY);
    nodes[0].add(r#"{"name":"gone.local","ips":["10.0.0.1"],"ttl":600}"#);
    nodes[0].add(r#"{"name":"brief.local","ips":["10.0.0.2"],"ttl":3}"#);
    assert!(answers_everywhere(&nodes, "gone.local", "10.0.0.1"));
    assert_eq!(nodes[2].post("/del", r#"{"name":"gone.local"}"#).0, 200);
    assert!(nxdomain_everywhere(&nodes, "gone.local"), "the delete reaches every node");
    assert!(nxdomain_everywhere(&nodes, "brief.local"), "the expiry holds everywhere");
    // And neither comes back.
    std::thread::sleep(Duration::from_secs(2));
    assert!(nodes.iter().all(|n| status(&n.dig(&["gone.local"])) == "NXDOMAIN"));
    assert!(nodes.iter().all(|n| status(&n.dig(&["brief.local"])) == "NXDOMAIN"));
}

#[test]
fn a_killed_node_keeps_its_data_and_catches_up_after_restart() {
    let mut nodes = start_cluster("c3", 3, KEY);
    nodes[2].add(r#"{"name":"kept.local","ips":["10.0.0.3"],"ttl":600}"#);
    nodes[0].add(r#"{"name":"doomed.local","ips":["10.0.0.4"],"ttl":600}"#);
    assert!(answers_everywhere(&nodes, "doomed.local", "10.0.0.4"));
    nodes[2].kill9();
    nodes[0].add(r#"{"name":"missed.local","ips":["10.0.0.5"],"ttl":600}"#);
    assert_eq!(nodes[1].post("/del", r#"{"name":"doomed.local"}"#).0, 200);
    nodes[2].restart();
    let back = &nodes[2..];
    assert_eq!(back[0].dig(&["kept.local", "+short"]).trim(), "10.0.0.3", "its own acknowledged write survived");
    assert!(answers_everywhere(back, "missed.local", "10.0.0.5"), "it learns what it missed");
    assert!(nxdomain_everywhere(back, "doomed.local"), "a delete made while it was down is not resurrected");
    assert!(answers_everywhere(&nodes[..2], "kept.local", "10.0.0.3"));
}

#[test]
fn a_node_with_another_key_is_not_admitted() {
    let nodes = start_cluster("c4", 2, KEY);
    let stranger = TestNode::solo("c4-stranger", &["--cluster-key", OTHER_KEY, "--join", &nodes[0].gossip.to_string()]);
    stranger.add(r#"{"name":"intruder.local","ips":["10.6.6.6"],"ttl":600}"#);
    nodes[0].add(r#"{"name":"inside.local","ips":["10.0.0.6"],"ttl":600}"#);
    assert!(answers_everywhere(&nodes, "inside.local", "10.0.0.6"));
    std::thread::sleep(Duration::from_secs(3));
    for n in &nodes {
        assert_eq!(status(&n.dig(&["intruder.local"])), "NXDOMAIN");
        let (_, m) = n.get("/members");
        assert_eq!(m["members"].as_array().unwrap().len(), 2, "the stranger is no member: {m}");
    }
    assert_eq!(status(&stranger.dig(&["inside.local"])), "NXDOMAIN");
    let (_, health) = nodes[0].get("/health");
    assert!(health["stats"]["gossip_dropped_auth"].as_u64().unwrap() > 0, "its messages were refused: {health}");
}

#[test]
fn a_join_target_may_be_a_dns_name() {
    let first = TestNode::solo("c5-0", &["--cluster-key", KEY]);
    // "localhost" resolves to 127.0.0.1 (and maybe ::1, which nobody
    // answers on): the node joins whatever address works.
    let target = format!("localhost:{}", first.gossip.port());
    let second = TestNode::solo("c5-1", &["--cluster-key", KEY, "--join", &target]);
    second.add(r#"{"name":"named.local","ips":["10.0.0.7"],"ttl":600}"#);
    assert!(answers_everywhere(&[first, second], "named.local", "10.0.0.7"));
}
