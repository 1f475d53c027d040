//! `rumor torrent ...` against a node's torrent session: add (a .torrent
//! file, a magnet link), ls, show, pause, resume, recheck, rm, each with
//! `--json` parsed and checked, the table within 80 columns, an ID as an
//! infohash prefix, and the API's refusals passed on.

mod common;

use common::bt::*;
use common::{Scratch, TestNode};
use serde_json::Value;
use std::time::Duration;

const KEY: &str = "746f7272656e7420636c69207465737420636c7573746572206b657920333262";
const TOKEN: &str = "torrent-cli-test-token-0123456789";

/// `rumor torrent ARGS --api NODE [--token TOKEN]`: (success, stdout, stderr).
fn cli(node: &TestNode, token: bool, args: &[&str]) -> (bool, String, String) {
    let mut c = rumor(&["torrent"]);
    c.args(args).args(["--api", &node.api.to_string()]);
    c.env_remove("RUMOR_API_TOKEN").env_remove("COLUMNS");
    if token {
        c.args(["--token", TOKEN]);
    }
    let o = c.output().expect("run rumor torrent");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The same with `--json`, parsed; panics unless it succeeds.
fn json(node: &TestNode, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let (ok, out, err) = cli(node, true, &all);
    assert!(ok, "rumor torrent {args:?} failed: {err}");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("rumor torrent {args:?} printed no JSON ({e}): {out}"))
}

fn node_with_session(s: &Scratch) -> (TestNode, std::path::PathBuf) {
    let downloads = s.0.join("downloads");
    let dir = s.0.join("node");
    std::fs::create_dir_all(&dir).unwrap();
    let bt_port = common::free_port().to_string();
    let node = TestNode::start(
        &dir,
        &[
            "--cluster-key",
            KEY,
            "--api-token",
            TOKEN,
            "--downloads",
            downloads.to_str().unwrap(),
            "--bt-port",
            &bt_port,
        ],
    );
    (node, downloads)
}

#[test]
fn a_torrent_file_is_added_paused_listed_in_80_columns_shown_by_prefix_and_removed() {
    let s = Scratch::new("torrent-cli-file");
    let fx = fixture(&s.0, 81, &["--piece-size", "65536"]);
    let (node, _downloads) = node_with_session(&s);
    let torrent = fx.torrent.to_str().unwrap();

    let added = json(&node, &["add", torrent, "--paused", "--download-limit", "300k"]);
    assert_eq!(added["infohash"], fx.ih.as_str(), "{added}");
    assert_eq!(added["name"], "payload", "{added}");

    // Again: the node's 409, passed on with its reason.
    let (ok, _, err) = cli(&node, true, &["add", torrent]);
    assert!(!ok && err.contains("409") && err.contains("already"), "{err}");

    // Without the token: refused, and the message says what is missing.
    let (ok, _, err) = cli(&node, false, &["resume", &fx.ih]);
    assert!(!ok && err.contains("401") && err.contains("Bearer"), "{err}");

    let list = json(&node, &["ls"]);
    let torrents = list["torrents"].as_array().expect("a list");
    assert_eq!(torrents.len(), 1, "{list}");
    assert_eq!(torrents[0]["state"], "paused", "{list}");
    assert_eq!(torrents[0]["download_limit"], 300 * 1024, "{list}");

    let (ok, table, err) = cli(&node, false, &["ls"]);
    assert!(ok, "{err}");
    for line in table.lines() {
        assert!(line.chars().count() <= 80, "a line of {} columns: {line}", line.chars().count());
    }
    let row = table.lines().find(|l| l.starts_with(&fx.ih[..8])).unwrap_or_else(|| panic!("no row: {table}"));
    assert!(row.contains("paused") && row.ends_with("payload") && row.contains("0%"), "{row}");
    assert!(table.lines().last().unwrap().starts_with("Sum:"), "{table}");

    // A prefix names it; `show` lists every file of the torrent.
    let prefix = &fx.ih[..6];
    let shown = json(&node, &["show", prefix]);
    assert_eq!(shown["infohash"], fx.ih.as_str());
    let files = shown["files"].as_array().expect("files");
    assert_eq!(files.len(), metainfo_of(&fx.torrent).files.len(), "{shown}");
    assert!(files.iter().any(|f| f["path"].as_str().is_some_and(|p| p.ends_with("alpha.bin"))), "{shown}");
    let (ok, text, err) = cli(&node, false, &["show", prefix]);
    assert!(ok, "{err}");
    assert!(text.contains(&format!("Infohash:  {}", fx.ih)) && text.contains("State:     paused"), "{text}");
    assert!(text.contains("Files:") && text.contains("alpha.bin") && text.contains("limit 300 KiB/s"), "{text}");

    // Not a torrent of this node, not an ID at all.
    let (ok, _, err) = cli(&node, false, &["show", "ffff"]);
    assert!(!ok && err.contains("no torrent's infohash starts with ffff"), "{err}");
    let (ok, _, err) = cli(&node, false, &["show", "payload"]);
    assert!(!ok && err.contains("is no torrent ID"), "{err}");

    let removed = json(&node, &["rm", prefix]);
    assert_eq!(removed["removed"], fx.ih.as_str(), "{removed}");
    assert_eq!(json(&node, &["ls"])["torrents"].as_array().map(Vec::len), Some(0));
}

#[test]
fn a_magnet_link_downloads_from_libtorrent_then_pauses_resumes_rechecks_and_is_removed_with_its_data() {
    let s = Scratch::new("torrent-cli-magnet");
    let fx = fixture(&s.0, 83, &["--piece-size", "65536"]);
    let seed_port = common::free_port();
    let _seeder = libtorrent("seed", &fx.torrent, &fx.src, seed_port, &[], &s.0.join("seeder.log"));
    wait_listening(seed_port);
    let (node, downloads) = node_with_session(&s);
    // The peer by name: the session resolves x.pe as `rumor get` does.
    let magnet = format!("magnet:?xt=urn:btih:{}&x.pe=localhost:{seed_port}", fx.ih);

    let added = json(&node, &["add", &magnet]);
    assert_eq!(added["infohash"], fx.ih.as_str(), "{added}");
    let prefix = &fx.ih[..10];
    let mut last = Value::Null;
    let done = eventually(Duration::from_secs(120), || {
        last = json(&node, &["show", prefix]);
        last["state"] == "seeding" && last["progress"].as_f64() == Some(1.0)
    });
    assert!(done, "not complete in 120 s: {last}");
    assert_eq!(last["name"], "payload");
    assert_eq!(last["done"], last["size"], "{last}");
    assert_same_tree(&fx.data, &downloads.join("payload"));

    let paused = json(&node, &["pause", prefix]);
    assert_eq!(paused["state"], "paused", "{paused}");
    let (ok, out, err) = cli(&node, true, &["resume", prefix]);
    assert!(ok, "{err}");
    assert!(out.starts_with(&format!("{} payload: ", fx.ih)), "{out}");
    let rechecked = json(&node, &["recheck", prefix]);
    assert_eq!(rechecked["infohash"], fx.ih.as_str(), "{rechecked}");
    let back = eventually(Duration::from_secs(60), || {
        last = json(&node, &["show", prefix]);
        last["state"] == "seeding"
    });
    assert!(back, "not seeding again after the recheck: {last}");
    assert_eq!(last["progress"].as_f64(), Some(1.0), "the data on disk is whole: {last}");

    let removed = json(&node, &["rm", prefix, "--delete-data"]);
    assert_eq!(removed["removed"], fx.ih.as_str(), "{removed}");
    assert!(!downloads.join("payload").exists(), "--delete-data leaves the files");
    assert!(downloads.exists(), "the download directory itself stays");
    assert_eq!(json(&node, &["ls"])["torrents"].as_array().map(Vec::len), Some(0));
}
