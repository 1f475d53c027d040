//! The discovery a node's torrent session shares between its torrents: one
//! DHT node (`--dht-port`) finding the peers of a bare infohash whose only
//! source is a libtorrent seeder in a private DHT on loopback; each
//! tracker's status in `GET /torrents/{infohash}`; and a paused magnet
//! that fetches nothing.

mod common;

use common::bt::*;
use common::{Scratch, TestNode};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const KEY: &str = "73657373696f6e2d64687420746573742c2033322062797465732c206865782e";
const TOKEN: &str = "session-dht-token-0123456789";

/// A node with a torrent session downloading into `DIR/downloads`.
fn session_node(s: &Scratch, extra: &[&str]) -> TestNode {
    let downloads = s.0.join("downloads");
    let port = common::free_port().to_string();
    let mut args = vec!["--downloads", downloads.to_str().unwrap(), "--bt-port", &port];
    args.extend(["--api-token", TOKEN, "--cluster-key", KEY]);
    args.extend(extra);
    let data = s.0.join("node");
    std::fs::create_dir_all(&data).unwrap();
    TestNode::start(&data, &args)
}

fn call(node: &TestNode, method: &str, path: &str, json: Option<&str>) -> (u16, Value) {
    let mut req = ureq::request(method, &node.url(path)).timeout(Duration::from_secs(20));
    req = req.set("Authorization", &format!("Bearer {TOKEN}"));
    let r = match json {
        Some(body) => req.set("Content-Type", "application/json").send_string(body),
        None => req.call(),
    };
    match r {
        Ok(resp) => (resp.status(), resp.into_json().unwrap_or(Value::Null)),
        Err(ureq::Error::Status(code, resp)) => (code, resp.into_json().unwrap_or(Value::Null)),
        Err(e) => panic!("{method} {path}: {e}"),
    }
}

fn torrent(node: &TestNode, ih: &str) -> Value {
    let (code, v) = call(node, "GET", &format!("/torrents/{ih}"), None);
    assert_eq!(code, 200, "{v}");
    v
}

fn node_log(node: &TestNode) -> String {
    std::fs::read_to_string(node.data.join(format!("node-{}.log", node.dns.port()))).unwrap_or_default()
}

/// Five libtorrent DHT sessions on loopback bootstrapped to one another,
/// the first seeding `torrent` from `src` and announcing it to the DHT.
fn lt_dht_seeder(s: &Scratch, ports: &[u16], torrent: &Path, src: &Path) -> Proc {
    require_libtorrent();
    let mut c = Command::new(PYTHON);
    let list: Vec<String> = ports.iter().map(|p| p.to_string()).collect();
    c.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../conformance/common/lt_dht.py")).arg(list.join(","));
    c.arg("--seed").arg(torrent).arg(src);
    Proc::spawn("libtorrent dht", c, &s.0.join("lt-dht.log"))
}

#[test]
fn a_session_fetches_a_bare_infohash_whose_only_source_is_a_libtorrent_seeder_in_the_dht() {
    let s = Scratch::new("session-dht");
    // No tracker in the torrent, and the seeder announces to no overlay:
    // the DHT is the only way to it.
    let f = fixture(&s.0, 81, &["--piece-size", "65536"]);
    let ports: Vec<u16> = (0..5).map(|_| common::free_port()).collect();
    let lt = lt_dht_seeder(&s, &ports, &f.torrent, &f.src);
    let ok = common::eventually(Duration::from_secs(30), || lt.log_text().contains("READY"));
    assert!(ok, "the libtorrent DHT did not settle: {}", lt.log_text());
    let dht_port = common::free_port().to_string();
    let boot = format!("127.0.0.1:{}", ports[1]);
    let node = session_node(&s, &["--dht-port", &dht_port, "--dht-bootstrap", &boot]);
    let (code, v) = call(&node, "POST", "/torrents", Some(&format!(r#"{{"infohash": "{}"}}"#, f.ih)));
    assert_eq!(code, 201, "{v}");
    // The seeder announces every 5 s from READY on; a lookup that comes too
    // early finds nobody and is repeated 30 s later.
    let done = common::eventually(Duration::from_secs(150), || {
        let t = torrent(&node, &f.ih);
        t["state"] == "seeding" && t["progress"].as_f64() == Some(1.0)
    });
    let log = node_log(&node);
    assert!(done, "not complete: {}\nnode log:\n{log}\nlibtorrent:\n{}", torrent(&node, &f.ih), lt.log_text());
    assert_same_tree(&f.data, &s.0.join("downloads").join("payload"));
    let found = format!("new peers of {}", f.ih);
    assert!(log.lines().any(|l| l.contains("dht:") && l.contains(&found)), "peers came from the DHT: {log}");
    // The session's node keeps its routing table with the node's data on
    // the way out: our id and the libtorrent nodes it knew.
    let mut node = node;
    assert!(node.terminate().is_some_and(|st| st.success()), "the node stops cleanly");
    let saved = std::fs::read(node.data.join("dht-state")).expect("the DHT state is kept in the node's data");
    let v = rumor_core::bt::bencode::decode(&saved).unwrap();
    assert_eq!(v.get("id").and_then(|i| i.as_bytes()).map(<[u8]>::len), Some(20));
    let nodes = v.get("nodes").and_then(|n| n.as_bytes()).unwrap();
    assert!(!nodes.is_empty() && nodes.len().is_multiple_of(26), "the libtorrent nodes are saved");
    drop(lt);
}

#[test]
fn each_tracker_shows_its_status_and_a_paused_magnet_fetches_nothing() {
    let s = Scratch::new("session-trackers");
    let node = session_node(&s, &[]);
    // A tracker nobody runs (the discard port refuses at once) and the
    // node's own: one errs, the other works.
    let f = fixture(&s.0, 82, &["--piece-size", "65536", "-a", "http://127.0.0.1:9/announce"]);
    let bytes = std::fs::read(&f.torrent).unwrap();
    let r = ureq::post(&node.url("/torrents"))
        .set("Authorization", &format!("Bearer {TOKEN}"))
        .set("Content-Type", "application/x-bittorrent")
        .send_bytes(&bytes)
        .expect("add the torrent");
    assert_eq!(r.status(), 201);
    let mut last = Value::Null;
    let ok = common::eventually(Duration::from_secs(30), || {
        last = torrent(&node, &f.ih);
        last["trackers"][0]["status"] == "error"
    });
    assert!(ok, "the dead tracker is not shown in error: {last}");
    let t = &last["trackers"][0];
    assert_eq!(t["url"], "http://127.0.0.1:9/announce");
    assert!(t["error"].as_str().is_some_and(|e| !e.is_empty()), "{t}");
    let when = t["last_announce_ms"].as_u64().expect("when it was last asked");
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    assert!(when <= now_ms + 1000 && now_ms - when < 60_000, "{when} vs {now_ms}");
    let overlay = last["trackers"].as_array().unwrap().last().unwrap().clone();
    let ok = common::eventually(Duration::from_secs(10), || {
        torrent(&node, &f.ih)["trackers"].as_array().unwrap().last().unwrap()["status"] == "working"
    });
    assert!(ok, "the node's own tracker works: {overlay}");

    // A magnet added paused shows paused and fetches nothing; one paused
    // while fetching stops; resumed, it fetches again.
    let held = "1111111111111111111111111111111111111111";
    let (code, v) = call(&node, "POST", "/torrents", Some(&format!(r#"{{"infohash": "{held}", "paused": true}}"#)));
    assert_eq!(code, 201, "{v}");
    let fetching = "2222222222222222222222222222222222222222";
    let (code, v) = call(&node, "POST", "/torrents", Some(&format!(r#"{{"infohash": "{fetching}"}}"#)));
    assert_eq!(code, 201, "{v}");
    assert_eq!(torrent(&node, held)["state"], "paused");
    let ok = common::eventually(Duration::from_secs(10), || {
        node_log(&node).contains(&format!("{fetching}: fetching the metadata"))
    });
    assert!(ok, "the unpaused magnet fetches: {}", node_log(&node));
    let (code, v) = call(&node, "POST", &format!("/torrents/{fetching}/pause"), None);
    assert_eq!((code, v["state"].as_str()), (200, Some("paused")), "{v}");
    let ok = common::eventually(Duration::from_secs(10), || {
        node_log(&node).contains(&format!("torrent {fetching}: paused; its metadata fetch stopped"))
    });
    assert!(ok, "the paused magnet's fetch stopped: {}", node_log(&node));
    assert!(!node_log(&node).contains(&format!("{held}: fetching the metadata")), "a magnet added paused fetched");
    let (code, v) = call(&node, "POST", &format!("/torrents/{held}/resume"), None);
    assert_eq!((code, v["state"].as_str()), (200, Some("metadata")), "{v}");
    let ok = common::eventually(Duration::from_secs(10), || {
        node_log(&node).contains(&format!("{held}: fetching the metadata"))
    });
    assert!(ok, "resumed, it fetches: {}", node_log(&node));
    // After a restart the paused one still fetches nothing, the other does.
    let mut node = node;
    assert!(node.terminate().is_some_and(|st| st.success()), "the node stops cleanly");
    node.restart();
    assert_eq!(torrent(&node, fetching)["state"], "paused");
    let ok = common::eventually(Duration::from_secs(10), || {
        node_log(&node).contains(&format!("{held}: fetching the metadata"))
    });
    assert!(ok, "the resumed magnet fetches after the restart: {}", node_log(&node));
    assert!(
        !node_log(&node).contains(&format!("{fetching}: fetching the metadata")),
        "a paused magnet fetched after the restart"
    );
}

#[test]
fn a_session_finds_a_seeder_of_a_bare_infohash_by_lsd_alone() {
    let s = Scratch::new("session-lsd");
    // Content no other test uses: every LSD client on this host hears it.
    let f = fixture(&s.0, 1483, &["--piece-size", "32768"]);
    // The node with LSD left on (the harness's TestNode turns it off), and
    // no DHT: LSD is its only way to the seeder.
    let api = format!("127.0.0.1:{}", common::free_port());
    let downloads = s.0.join("downloads");
    let mut c = rumor(&["node", "--api", &api, "--cluster-key", KEY, "--api-token", TOKEN, "--no-dht"]);
    c.args(["--dns", &format!("127.0.0.1:{}", common::free_port())]);
    c.args(["--gossip", &format!("127.0.0.1:{}", common::free_port())]);
    c.args(["--bt-port", &common::free_port().to_string()]).arg("--data").arg(s.0.join("node"));
    c.arg("--downloads").arg(&downloads).env_remove("RUMOR_NO_LSD");
    let node = Proc::spawn("node", c, &s.0.join("node.log"));
    let url = |path: &str| format!("http://{api}{path}");
    let up = common::eventually(Duration::from_secs(20), || ureq::get(&url("/health")).call().is_ok());
    assert!(up, "the node did not start: {}", node.log_text());
    let r = ureq::post(&url("/torrents"))
        .set("Authorization", &format!("Bearer {TOKEN}"))
        .send_json(serde_json::json!({ "infohash": f.ih }))
        .expect("add the infohash");
    assert_eq!(r.status(), 201);
    // The seeder starts after the session serves the torrent: it is the
    // seeder's announce the session hears (the session's own went out
    // while nobody served it), so the session dials it.
    let mut seed = rumor(&["seed"]);
    seed.arg(&f.torrent).arg(&f.src).args(["--quiet", "--no-dht", "--port", &common::free_port().to_string()]);
    seed.env_remove("RUMOR_NO_LSD");
    let seed = Proc::spawn("seed", seed, &s.0.join("seed.log"));
    let state = || -> Value { ureq::get(&url(&format!("/torrents/{}", f.ih))).call().unwrap().into_json().unwrap() };
    let done = common::eventually(Duration::from_secs(60), || {
        let t = state();
        t["state"] == "seeding" && t["progress"].as_f64() == Some(1.0)
    });
    assert!(done, "not complete: {}\nnode:\n{}\nseed:\n{}", state(), node.log_text(), seed.log_text());
    assert_same_tree(&f.data, &downloads.join("payload"));
    let log = node.log_text();
    let found = format!("peers of {}", f.ih);
    assert!(log.lines().any(|l| l.contains("local service discovery:") && l.contains(&found)), "{log}");
    assert!(
        log.contains(&format!("got the metadata of {} (", f.ih)) && !log.contains(") from \n"),
        "the session dialed the seeder: {log}"
    );
}
