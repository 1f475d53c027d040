//! A cluster of both adapters' binaries: tokio nodes (`rumor`) and smol
//! nodes (`rumor-smol`) gossip with each other, and a write made through
//! either kind is answered by `dig` on all of them. The wire formats are
//! the core's, so this holds by construction; the test keeps it so.

mod common;

use common::*;
use std::time::Duration;

const KEY: &str = "6d6978656420636c7573746572206b65792c2074686972747920747700000000";
const CONVERGE: Duration = Duration::from_secs(10);

fn binaries() -> (std::path::PathBuf, std::path::PathBuf) {
    (sibling_binary("rumor"), sibling_binary("rumor-smol"))
}

#[test]
fn tokio_and_smol_nodes_form_one_cluster() {
    let (tokio_bin, smol_bin) = binaries();
    let mut nodes = start_cluster_of("mixed", &[tokio_bin.clone(), smol_bin.clone(), tokio_bin, smol_bin], KEY);

    // Every node sees the three others alive.
    assert!(
        eventually(CONVERGE, || nodes.iter().all(|n| n.alive_members() == 4)),
        "membership converges across runtimes"
    );

    // A write through a smol node reaches the tokio nodes, and back.
    let (code, resp) = nodes[1].post("/add", r#"{"name":"from-smol.mixed","ips":["10.9.0.1"],"ttl":300}"#);
    assert_eq!(code, 200, "{resp}");
    let (code, resp) = nodes[2].post("/add", r#"{"name":"from-tokio.mixed","ips":["10.9.0.2"],"ttl":300}"#);
    assert_eq!(code, 200, "{resp}");
    for (name, ip) in [("from-smol.mixed", "10.9.0.1"), ("from-tokio.mixed", "10.9.0.2")] {
        assert!(
            eventually(CONVERGE, || nodes.iter().all(|n| n.dig(&[name, "+short"]).trim() == ip)),
            "{name} is answered by every node"
        );
    }

    // A delete through a tokio node removes it from the smol nodes.
    assert_eq!(nodes[0].post("/del", r#"{"name":"from-smol.mixed"}"#).0, 200);
    assert!(eventually(CONVERGE, || nodes.iter().all(|n| status(&n.dig(&["from-smol.mixed"])) == "NXDOMAIN")));

    // A smol node restarted from its data rejoins and catches up.
    nodes[3].kill9();
    assert_eq!(nodes[0].post("/add", r#"{"name":"missed.mixed","ips":["10.9.0.3"],"ttl":300}"#).0, 200);
    nodes[3].restart();
    assert!(eventually(CONVERGE, || nodes[3].dig(&["missed.mixed", "+short"]).trim() == "10.9.0.3"));
    assert_eq!(nodes[3].dig(&["from-tokio.mixed", "+short"]).trim(), "10.9.0.2", "its data survived");
}
