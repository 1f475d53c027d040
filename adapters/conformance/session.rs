//! `rumor node --downloads DIR`: one node holding many torrents, driven
//! through the REST API (`/torrents`, `/session`, `/events`), downloading
//! from python3-libtorrent seeders that dial the session's one peer port.

mod common;

use common::bt::*;
use common::{Scratch, TestNode};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const KEY: &str = "73657373696f6e2074657374206b65792c2033322062797465732c206865782e";
const TOKEN: &str = "session-test-token-0123456789";

/// A node with a torrent session, its download directory and peer port.
struct SessionNode {
    node: TestNode,
    downloads: PathBuf,
    bt_port: u16,
}

impl SessionNode {
    fn start(s: &Scratch, extra: &[&str]) -> SessionNode {
        let downloads = s.0.join("downloads");
        let bt_port = common::free_port();
        let port = bt_port.to_string();
        let mut args = vec!["--downloads", downloads.to_str().unwrap(), "--bt-port", &port];
        args.extend(["--api-token", TOKEN, "--cluster-key", KEY]);
        args.extend(extra);
        let data = s.0.join("node");
        std::fs::create_dir_all(&data).unwrap();
        let node = TestNode::start(&data, &args);
        SessionNode { node, downloads, bt_port }
    }

    fn announce_url(&self) -> String {
        self.node.url("/announce")
    }

    fn peer(&self) -> String {
        format!("127.0.0.1:{}", self.bt_port)
    }

    fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<(&str, &[u8])>) -> (u16, Value) {
        let mut req = ureq::request(method, &self.node.url(path)).timeout(Duration::from_secs(20));
        if let Some(t) = token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        let r = match body {
            Some((ctype, bytes)) => req.set("Content-Type", ctype).send_bytes(bytes),
            None => req.call(),
        };
        match r {
            Ok(resp) => (resp.status(), resp.into_json().unwrap_or(Value::Null)),
            Err(ureq::Error::Status(code, resp)) => (code, resp.into_json().unwrap_or(Value::Null)),
            Err(e) => panic!("{method} {path}: {e}"),
        }
    }

    fn get(&self, path: &str) -> Value {
        let (code, v) = self.call("GET", path, None, None);
        assert_eq!(code, 200, "GET {path}: {v}");
        v
    }

    fn write(&self, method: &str, path: &str, json: &str) -> (u16, Value) {
        self.call(method, path, Some(TOKEN), Some(("application/json", json.as_bytes())))
    }

    fn add_bytes(&self, torrent: &Path) -> Value {
        let bytes = std::fs::read(torrent).unwrap();
        let (code, v) = self.call("POST", "/torrents", Some(TOKEN), Some(("application/x-bittorrent", &bytes)));
        assert_eq!(code, 201, "add {}: {v}", torrent.display());
        v
    }

    fn torrent(&self, ih: &str) -> Value {
        self.get(&format!("/torrents/{ih}"))
    }

    /// Waits until `ih` is seeding with every byte, or panics with the
    /// node's view and `others`' logs.
    fn wait_complete(&self, ih: &str, limit: Duration, others: &[&Proc]) {
        let t0 = Instant::now();
        let ok = eventually(limit, || {
            let t = self.torrent(ih);
            t["state"] == "seeding" && t["progress"].as_f64() == Some(1.0)
        });
        if !ok {
            let logs: String = others.iter().map(|o| format!("\n{}'s log:\n{}", o.name, o.log_text())).collect();
            let node_log = std::fs::read_to_string(self.node.data.join(format!("node-{}.log", self.node.dns.port())))
                .unwrap_or_default();
            let tail: String =
                node_log.lines().rev().take(60).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
            panic!("{ih} did not complete: {}\nnode log tail:\n{tail}{logs}", self.torrent(ih));
        }
        eprintln!("{ih}: complete after {:.1} s", t0.elapsed().as_secs_f64());
    }
}

/// A tree named `name` (from `seed`) under `DIR/src-NAME` and its torrent
/// (64 KiB pieces, the node's own tracker: the seeder announces there and
/// the session finds it through the overlay): (the tree, the torrent, the infohash).
fn tree(s: &Scratch, node: &SessionNode, name: &str, seed: u64) -> (PathBuf, PathBuf, String) {
    let src = s.0.join(format!("src-{name}"));
    let data = make_tree(&src, name, seed);
    let torrent = s.0.join(format!("{name}.torrent"));
    let ih = rumor_create(&data, &torrent, &["--piece-size", "65536", "-a", &node.announce_url()]);
    (data, torrent, ih)
}

/// One file of `len` bytes named `name` under `DIR/src-NAME`, and its torrent.
fn big_file(
    s: &Scratch,
    node: &SessionNode,
    name: &str,
    seed: u64,
    len: usize,
    piece: &str,
) -> (PathBuf, PathBuf, String) {
    let src = s.0.join(format!("src-{name}"));
    std::fs::create_dir_all(&src).unwrap();
    let data = src.join(name);
    std::fs::write(&data, content(seed, len)).unwrap();
    let torrent = s.0.join(format!("{name}.torrent"));
    let ih = rumor_create(&data, &torrent, &["--piece-size", piece, "-a", &node.announce_url()]);
    (data, torrent, ih)
}

/// A libtorrent seeder of `torrent` (data in the tree's parent) that
/// dials the session.
fn lt_seeder(s: &Scratch, name: &str, torrent: &Path, data: &Path, node: &SessionNode) -> Proc {
    libtorrent(
        "seed",
        torrent,
        data.parent().unwrap(),
        common::free_port(),
        &[node.peer()],
        &s.0.join(format!("lt-{name}.log")),
    )
}

/// Reads `/events` on a thread into a shared buffer, for as long as the
/// node serves it.
fn sse_log(node: &SessionNode) -> std::sync::Arc<std::sync::Mutex<String>> {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(node.node.api).unwrap();
    write!(c, "GET /events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n").unwrap();
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let out = log.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = c.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    log
}

/// Reads `/events` until an event named `name` comes (or `limit` passes).
fn sse_sees(node: &SessionNode, name: &str, limit: Duration) -> bool {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(node.node.api).unwrap();
    c.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    write!(c, "GET /events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n").unwrap();
    let end = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < end {
        if let Ok(n) = c.read(&mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got);
            if text.contains("text/event-stream") && text.contains(&format!("event: {name}\ndata: {{")) {
                return true;
            }
        }
    }
    false
}

#[test]
fn torrents_added_as_bytes_magnet_and_infohash_complete_from_libtorrent_seeders() {
    let s = Scratch::new("session-add");
    let node = SessionNode::start(&s, &[]);
    let (d1, t1, ih1) = tree(&s, &node, "one", 101);
    let (d2, t2, ih2) = tree(&s, &node, "two", 202);
    let (d3, t3, ih3) = tree(&s, &node, "three", 303);
    // Seeders that dial the session's one port: each connection is routed
    // to its torrent by the infohash it names.
    let lt1 = lt_seeder(&s, "one", &t1, &d1, &node);
    let lt2 = lt_seeder(&s, "two", &t2, &d2, &node);
    let lt3 = lt_seeder(&s, "three", &t3, &d3, &node);
    let v = node.add_bytes(&t1);
    assert_eq!(v["infohash"], ih1.as_str());
    assert_eq!(v["name"], "one");
    let (code, v) = node.write("POST", "/torrents", &format!(r#"{{"magnet": "magnet:?xt=urn:btih:{ih2}&dn=two"}}"#));
    assert_eq!(code, 201, "{v}");
    let (code, v) = node.write("POST", "/torrents", &format!(r#"{{"infohash": "{ih3}"}}"#));
    assert_eq!(code, 201, "{v}");
    // The same again is a conflict that names it.
    let (code, v) = node.write("POST", "/torrents", &format!(r#"{{"infohash": "{ih1}"}}"#));
    assert_eq!((code, v["infohash"].as_str()), (409, Some(ih1.as_str())), "{v}");
    for (ih, lt) in [(&ih1, &lt1), (&ih2, &lt2), (&ih3, &lt3)] {
        node.wait_complete(ih, Duration::from_secs(90), &[lt]);
    }
    assert_same_tree(&d1, &node.downloads.join("one"));
    assert_same_tree(&d2, &node.downloads.join("two"));
    assert_same_tree(&d3, &node.downloads.join("three"));
    // The list is in the order of addition, with the fetched names.
    let list = node.get("/torrents");
    let names: Vec<&str> = list["torrents"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["one", "two", "three"]);
    let detail = node.torrent(&ih2);
    assert_eq!(detail["files"].as_array().unwrap().len(), 4, "{detail}");
    assert!(detail["files"].as_array().unwrap().iter().all(|f| f["done"] == f["size"]), "{detail}");
    let session = node.get("/session");
    assert_eq!(session["torrents"], 3);
    assert_eq!(session["max_active_downloads"], 3);
    // /metrics counts each torrent's pieces.
    let metrics = ureq::get(&node.node.url("/metrics")).call().unwrap().into_string().unwrap();
    let pieces = metainfo_of(&t1).piece_count();
    assert!(metrics.contains(&format!("rumor_torrent_pieces_done{{infohash=\"{ih1}\"}} {pieces}")), "{metrics}");
    assert!(sse_sees(&node, "torrent", Duration::from_secs(5)), "no torrent event on /events");
}

#[test]
fn pause_resume_remove_and_delete_data_do_what_they_say() {
    let s = Scratch::new("session-pause");
    let node = SessionNode::start(&s, &[]);
    let (data, torrent, ih) = tree(&s, &node, "held", 404);
    let lt = lt_seeder(&s, "held", &torrent, &data, &node);
    let bytes = std::fs::read(&torrent).unwrap();
    let (code, v) = node.call("POST", "/torrents?paused=true", Some(TOKEN), Some(("application/x-bittorrent", &bytes)));
    assert_eq!(code, 201, "{v}");
    // Paused: no peer, no byte, for as long as it stays paused.
    std::thread::sleep(Duration::from_secs(3));
    let t = node.torrent(&ih);
    assert_eq!(
        (t["state"].as_str(), t["done"].as_u64(), t["peers"].as_u64()),
        (Some("paused"), Some(0), Some(0)),
        "{t}"
    );
    let (code, v) = node.write("POST", &format!("/torrents/{ih}/resume"), "");
    assert_eq!(code, 200, "{v}");
    node.wait_complete(&ih, Duration::from_secs(60), &[&lt]);
    let (code, v) = node.write("POST", &format!("/torrents/{ih}/pause"), "");
    assert_eq!((code, v["state"].as_str()), (200, Some("paused")), "{v}");
    // Removed without its data: the files stay; /events says so.
    let events = sse_log(&node);
    assert!(eventually(Duration::from_secs(5), || events.lock().unwrap().contains("event: session\ndata: {")));
    let (code, v) = node.write("DELETE", &format!("/torrents/{ih}"), "");
    assert_eq!((code, v["removed"].as_str()), (200, Some(ih.as_str())), "{v}");
    assert_eq!(node.call("GET", &format!("/torrents/{ih}"), None, None).0, 404);
    let removed = format!("event: torrent_removed\ndata: {{\"infohash\":\"{ih}\"}}\n\n");
    assert!(
        eventually(Duration::from_secs(5), || events.lock().unwrap().contains(&removed)),
        "{}",
        events.lock().unwrap()
    );
    assert_same_tree(&data, &node.downloads.join("held"));
    // Added again, it finds its data complete; removed with it, only its
    // own files go: a file beside them and the directory stay.
    node.add_bytes(&torrent);
    node.wait_complete(&ih, Duration::from_secs(30), &[&lt]);
    std::fs::write(node.downloads.join("held/mine.txt"), b"not the torrent's").unwrap();
    std::fs::write(node.downloads.join("other.txt"), b"not the torrent's").unwrap();
    let (code, v) = node.write("DELETE", &format!("/torrents/{ih}?delete_data=true"), "");
    assert_eq!(code, 200, "{v}");
    assert!(!node.downloads.join("held/alpha.bin").exists());
    assert!(!node.downloads.join("held/sub/deeper/gamma.txt").exists());
    assert!(!node.downloads.join("held/sub").exists(), "its emptied directories go too");
    assert!(node.downloads.join("held/mine.txt").exists());
    assert!(node.downloads.join("other.txt").exists());
    // Recheck of an unknown torrent is a 404 with a JSON error.
    let (code, v) = node.write("POST", &format!("/torrents/{ih}/recheck"), "");
    assert_eq!(code, 404, "{v}");
    assert!(v["error"].as_str().is_some(), "{v}");
}

#[test]
fn the_active_download_cap_holds_and_the_queue_follows_the_order_of_addition() {
    let s = Scratch::new("session-cap");
    // Slow enough that the four downloads overlap: 3 MiB at 2 MiB/s.
    let node = SessionNode::start(&s, &["--max-active-downloads", "2", "--max-download-rate", "2M"]);
    let mut seeders = Vec::new();
    let mut hashes = Vec::new();
    for i in 0..4u64 {
        let name = format!("cap{i}");
        let (data, torrent, ih) = big_file(&s, &node, &name, 500 + i, 3 << 20, "65536");
        seeders.push(lt_seeder(&s, &name, &torrent, &data, &node));
        node.add_bytes(&torrent);
        hashes.push(ih);
    }
    let end = Instant::now() + Duration::from_secs(90);
    let mut most = 0;
    let mut saw_queue = false;
    loop {
        let list = node.get("/torrents");
        let states: Vec<String> =
            list["torrents"].as_array().unwrap().iter().map(|t| t["state"].as_str().unwrap().to_string()).collect();
        let downloading = states.iter().filter(|s| *s == "downloading").count();
        most = most.max(downloading);
        assert!(downloading <= 2, "more than 2 downloading: {states:?}");
        if states.iter().any(|s| s == "queued") {
            saw_queue = true;
            // The queue is in the order of addition: a queued torrent
            // never comes before one downloading.
            let first_queued = states.iter().position(|s| s == "queued").unwrap();
            assert!(!states[first_queued..].iter().any(|s| s == "downloading"), "out of order: {states:?}");
        }
        if states.iter().all(|s| s == "seeding") {
            break;
        }
        assert!(Instant::now() < end, "not all complete: {states:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(saw_queue && most == 2, "the cap was never reached (most {most}, queue seen {saw_queue})");
    // Four torrents, one pool of disk threads: none of a torrent's own.
    let disk_threads = disk_thread_names(node.node.child.id());
    assert!(
        !disk_threads.is_empty() && disk_threads.len() <= 4 && disk_threads.iter().all(|n| n.starts_with("bt-disk-")),
        "the session's disk threads: {disk_threads:?}"
    );
    drop(seeders);
}

/// Names of the process's threads that do disk work (`bt-disk*`).
fn disk_thread_names(pid: u32) -> Vec<String> {
    let mut names = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        if let Ok(name) = std::fs::read_to_string(task.path().join("comm")) {
            let name = name.trim().to_string();
            if name.starts_with("bt-disk") {
                names.push(name);
            }
        }
    }
    names
}

#[test]
fn the_global_download_limit_holds_within_ten_percent() {
    let s = Scratch::new("session-rate");
    let limit = 4u64 << 20;
    let node = SessionNode::start(&s, &["--max-download-rate", "4M"]);
    let len = 44usize << 20;
    let (data, torrent, ih) = big_file(&s, &node, "rate", 77, len, "262144");
    let lt = lt_seeder(&s, "rate", &torrent, &data, &node);
    node.add_bytes(&torrent);
    // From the first verified byte to the last.
    let mut start: Option<(Instant, u64)> = None;
    let end = Instant::now() + Duration::from_secs(60);
    let finish = loop {
        let t = node.torrent(&ih);
        let done = t["done"].as_u64().unwrap();
        if done > 0 && start.is_none() {
            start = Some((Instant::now(), done));
        }
        if done == len as u64 {
            break Instant::now();
        }
        assert!(Instant::now() < end, "not complete in time: {t}\n{}", lt.log_text());
        std::thread::sleep(Duration::from_millis(50));
    };
    let (t0, d0) = start.unwrap();
    let rate = (len as u64 - d0) as f64 / (finish - t0).as_secs_f64();
    eprintln!("measured {:.2} MiB/s against a limit of 4 MiB/s", rate / (1 << 20) as f64);
    assert!((rate / limit as f64 - 1.0).abs() < 0.10, "measured {rate:.0} B/s, limit {limit}");
    assert_eq!(std::fs::read(node.downloads.join("rate")).unwrap(), std::fs::read(&data).unwrap());
}

#[test]
fn a_torrent_dropped_in_the_watch_folder_is_added_and_a_bad_one_marked_invalid() {
    let s = Scratch::new("session-watch");
    let watch = s.0.join("watch");
    let node = SessionNode::start(&s, &["--watch", watch.to_str().unwrap()]);
    let (data, torrent, ih) = tree(&s, &node, "watched", 606);
    let lt = lt_seeder(&s, "watched", &torrent, &data, &node);
    std::fs::copy(&torrent, watch.join("w.torrent")).unwrap();
    std::fs::write(watch.join("bad.torrent"), b"d4:infoi1ee").unwrap();
    assert!(eventually(Duration::from_secs(15), || watch.join("w.torrent.added").exists()));
    assert!(eventually(Duration::from_secs(15), || watch.join("bad.torrent.invalid").exists()));
    assert!(!watch.join("w.torrent").exists());
    node.wait_complete(&ih, Duration::from_secs(60), &[&lt]);
    assert_same_tree(&data, &node.downloads.join("watched"));
}

#[test]
fn no_request_or_torrent_reaches_outside_the_download_directory() {
    let s = Scratch::new("session-traversal");
    let node = SessionNode::start(&s, &[]);
    // An infohash that is a path is no infohash.
    for path in ["/torrents/..%2F..%2Fetc%2Fpasswd", "/torrents/../../etc"] {
        let (code, v) = node.call("GET", path, None, None);
        assert!(code == 400 || code == 404, "GET {path}: {code} {v}");
        assert!(v["error"].as_str().is_some(), "{v}");
    }
    let (code, _) = node.call("DELETE", "/torrents/..%2F..?delete_data=true", Some(TOKEN), None);
    assert_eq!(code, 400);
    // A torrent whose name and paths climb out is renamed inside.
    let pieces = vec![[7u8; 20]];
    let files = vec![(vec!["..".to_string(), "..".to_string(), "escaped.txt".to_string()], 1000u64)];
    let mut b = rumor_core::bt::metainfo::TorrentBuilder::multi("..", files, 16384, pieces);
    b.announce_tiers = Vec::new();
    let (bytes, _) = b.build(&rumor_core::bt::metainfo::Limits::default()).unwrap();
    let (code, v) = node.call("POST", "/torrents", Some(TOKEN), Some(("application/x-bittorrent", &bytes)));
    if code == 201 {
        let ih = v["infohash"].as_str().unwrap().to_string();
        let name = v["name"].as_str().unwrap();
        assert!(!name.contains("..") && !name.contains('/'), "{v}");
        // Its files are created (the download starts) under the directory
        // only; nothing appears beside it.
        std::thread::sleep(Duration::from_secs(2));
        let d = node.torrent(&ih);
        for f in d["files"].as_array().unwrap() {
            let p = f["path"].as_str().unwrap();
            assert!(!p.split('/').any(|c| c == ".." || c.is_empty()), "{d}");
        }
        let (code, v) = node.write("DELETE", &format!("/torrents/{ih}?delete_data=true"), "");
        assert_eq!(code, 200, "{v}");
    } else {
        assert_eq!(code, 400, "{v}");
    }
    assert!(!s.0.join("escaped.txt").exists() && !s.0.parent().unwrap().join("escaped.txt").exists());
    assert!(node.downloads.exists());
}

#[test]
fn writes_without_the_token_are_refused_and_reads_stay_open() {
    let s = Scratch::new("session-token");
    let node = SessionNode::start(&s, &[]);
    let (_, torrent, ih) = tree(&s, &node, "guarded", 808);
    let bytes = std::fs::read(&torrent).unwrap();
    let (code, v) = node.call("POST", "/torrents", None, Some(("application/x-bittorrent", &bytes)));
    assert_eq!(code, 401, "{v}");
    assert!(v["error"].as_str().unwrap().contains("Bearer"), "{v}");
    let (code, _) =
        node.call("POST", "/torrents", Some("wrong-token-wrong-token"), Some(("application/x-bittorrent", &bytes)));
    assert_eq!(code, 401);
    assert_eq!(node.get("/torrents")["torrents"].as_array().unwrap().len(), 0);
    node.add_bytes(&torrent);
    for (method, path) in [
        ("POST", format!("/torrents/{ih}/pause")),
        ("PATCH", format!("/torrents/{ih}")),
        ("DELETE", format!("/torrents/{ih}")),
        ("PATCH", "/session".to_string()),
    ] {
        let (code, v) = node.call(method, &path, None, Some(("application/json", b"{\"download_limit\": 1}")));
        assert_eq!(code, 401, "{method} {path}: {v}");
    }
    assert_eq!(node.get("/torrents")["torrents"].as_array().unwrap().len(), 1);
    let (code, v) = node.write("PATCH", &format!("/torrents/{ih}"), r#"{"download_limit": 1048576}"#);
    assert_eq!((code, v["download_limit"].as_u64()), (200, Some(1 << 20)), "{v}");
    let (code, v) = node.write("PATCH", "/session", r#"{"upload_limit": 2097152, "max_active_downloads": 5}"#);
    assert_eq!(
        (code, v["upload_limit"].as_u64(), v["max_active_downloads"].as_u64()),
        (200, Some(2 << 20), Some(5)),
        "{v}"
    );
    // A node without --downloads says how to get a session.
    let plain = TestNode::solo("session-none", &[]);
    let (code, v) = common_get(&plain, "/torrents");
    assert_eq!(code, 404);
    assert!(v["error"].as_str().unwrap().contains("--downloads"), "{v}");
}

fn common_get(node: &TestNode, path: &str) -> (u16, Value) {
    node.get(path)
}

#[test]
fn after_a_restart_a_complete_torrent_is_back_at_once_and_a_changed_file_is_rechecked_and_repaired() {
    let s = Scratch::new("session-resume");
    let mut node = SessionNode::start(&s, &[]);
    let (data, torrent, ih) = big_file(&s, &node, "kept", 99, 8 << 20, "262144");
    let lt = lt_seeder(&s, "kept", &torrent, &data, &node);
    node.add_bytes(&torrent);
    node.wait_complete(&ih, Duration::from_secs(60), &[&lt]);
    let (code, _) = node.write("PATCH", &format!("/torrents/{ih}"), r#"{"upload_limit": 123456}"#);
    assert_eq!(code, 200);
    // A clean stop writes every record; the start reads none of the data.
    assert!(node.node.terminate().is_some_and(|s| s.success()), "the node did not stop cleanly");
    node.node.restart();
    let t0 = Instant::now();
    let back = eventually(Duration::from_secs(5), || node.torrent(&ih)["state"] == "seeding");
    let took = t0.elapsed();
    let t = node.torrent(&ih);
    assert!(back && took < Duration::from_secs(1), "not seeding within a second ({took:?}): {t}");
    assert_eq!((t["progress"].as_f64(), t["upload_limit"].as_u64()), (Some(1.0), Some(123456)), "{t}");
    let log = std::fs::read_to_string(node.node.data.join(format!("node-{}.log", node.node.dns.port()))).unwrap();
    assert!(log.contains("32 pieces trusted, 0 to check again"), "{log}");
    // One file changed while stopped: its pieces are checked again, the
    // damaged one fetched again from the seeder.
    node.node.terminate();
    let file = node.downloads.join("kept");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[5 << 20] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();
    node.node.restart();
    node.wait_complete(&ih, Duration::from_secs(60), &[&lt]);
    assert_eq!(std::fs::read(&file).unwrap(), std::fs::read(&data).unwrap(), "repaired");
    let log = std::fs::read_to_string(node.node.data.join(format!("node-{}.log", node.node.dns.port()))).unwrap();
    assert!(log.contains("0 pieces trusted, 32 to check again (1 files changed)"), "{log}");
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn a_skipped_file_is_not_downloaded_and_the_torrent_counts_as_done_without_it() {
    let s = Scratch::new("session-select");
    let node = SessionNode::start(&s, &[]);
    // Files in torrent order: alpha.bin (1.5 MB), sub/beta.bin (700 KB),
    // sub/deeper/gamma.txt, zeta.bin; beta skipped.
    let (data, torrent, ih) = tree(&s, &node, "picked", 909);
    let lt = lt_seeder(&s, "picked", &torrent, &data, &node);
    let body =
        format!(r#"{{"torrent": "{}", "file_priorities": [1, 0, 1, 2]}}"#, base64(&std::fs::read(&torrent).unwrap()));
    let (code, v) = node.write("POST", "/torrents", &body);
    assert_eq!(code, 201, "{v}");
    node.wait_complete(&ih, Duration::from_secs(60), &[&lt]);
    let t = node.torrent(&ih);
    let files = t["files"].as_array().unwrap();
    let paths: Vec<&str> = files.iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["alpha.bin", "sub/beta.bin", "sub/deeper/gamma.txt", "zeta.bin"]);
    assert_eq!(files.iter().map(|f| f["priority"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 0, 1, 2]);
    // Only the pieces it shares with its neighbours: far from all of it.
    let beta = &files[1];
    assert!(beta["done"].as_u64().unwrap() < beta["size"].as_u64().unwrap() / 2, "{t}");
    for i in [0, 2, 3] {
        assert_eq!(files[i]["done"], files[i]["size"], "{t}");
    }
    assert!(t["size"].as_u64().unwrap() < 1_500_017 + 700_001 + 6 + 333_333, "size counts wanted bytes: {t}");
    for f in ["alpha.bin", "sub/deeper/gamma.txt", "zeta.bin"] {
        assert_eq!(std::fs::read(node.downloads.join("picked").join(f)).unwrap(), std::fs::read(data.join(f)).unwrap());
    }
    // Wanted again: the rest comes.
    let (code, v) = node.write("PATCH", &format!("/torrents/{ih}"), r#"{"file_priorities": [1, 1, 1, 1]}"#);
    assert_eq!(code, 200, "{v}");
    assert!(eventually(Duration::from_secs(60), || {
        let t = node.torrent(&ih);
        t["state"] == "seeding" && t["files"][1]["done"] == t["files"][1]["size"]
    }));
    assert_same_tree(&data, &node.downloads.join("picked"));
}

#[test]
fn the_global_upload_limit_holds_within_ten_percent() {
    let s = Scratch::new("session-upload");
    let limit = 3u64 << 20;
    let node = SessionNode::start(&s, &["--max-upload-rate", "3M"]);
    let len = 30usize << 20;
    let (data, torrent, ih) = big_file(&s, &node, "up", 55, len, "262144");
    // The data is already in the download directory: the session seeds it.
    std::fs::create_dir_all(&node.downloads).unwrap();
    std::fs::copy(&data, node.downloads.join("up")).unwrap();
    node.add_bytes(&torrent);
    assert!(eventually(Duration::from_secs(30), || node.torrent(&ih)["state"] == "seeding"));
    let (mut leech, out) = lt_leech(&s.0, &torrent, node.bt_port);
    // What the session lets out, from the first block sent to the last
    // (the counter of its upload bucket, read every 20 ms).
    let sent = || {
        let m = ureq::get(&node.node.url("/metrics")).call().unwrap().into_string().unwrap();
        let line = m.lines().find(|l| l.starts_with("rumor_session_wire_bytes_total{direction=\"up\"}")).unwrap();
        line.rsplit(' ').next().unwrap().parse::<u64>().unwrap()
    };
    let end = Instant::now() + Duration::from_secs(60);
    let mut first = None;
    let last = loop {
        let n = sent();
        if n > 0 && first.is_none() {
            first = Some((Instant::now(), n));
        }
        if n >= len as u64 {
            break Instant::now();
        }
        assert!(Instant::now() < end, "sent {n} of {len}: {}", leech.log_text());
        std::thread::sleep(Duration::from_millis(20));
    };
    let (t0, n0) = first.unwrap();
    let rate = (len as u64 - n0) as f64 / (last - t0).as_secs_f64();
    assert!(leech.wait_for(Duration::from_secs(30)).is_some_and(|st| st.success()), "{}", leech.log_text());
    // And as the leecher saw it, its start-up included: never above.
    let log = leech.log_text();
    let done = log.lines().find_map(|l| l.strip_prefix("DONE ")).expect("libtorrent says DONE");
    let secs: f64 = done.split(' ').nth(1).unwrap().parse().unwrap();
    let seen = len as f64 / secs;
    eprintln!(
        "sent at {:.2} MiB/s, libtorrent leeched at {:.2} MiB/s, against an upload limit of 3 MiB/s",
        rate / (1 << 20) as f64,
        seen / (1 << 20) as f64
    );
    assert!((rate / limit as f64 - 1.0).abs() < 0.10, "sent at {rate:.0} B/s, limit {limit}");
    assert!(seen < limit as f64 * 1.10, "leeched at {seen:.0} B/s, limit {limit}");
    assert_eq!(std::fs::read(out.join("up")).unwrap(), std::fs::read(&data).unwrap());
}

#[test]
fn an_encrypted_connection_is_routed_to_its_torrent_by_the_mse_skey() {
    let s = Scratch::new("session-mse");
    let node = SessionNode::start(&s, &[]);
    // No tracker: the only way in is the seeder dialing the session's port,
    // RC4 forced, so the listener must find the torrent from the SKEY hash
    // among the session's torrents (two decoys beside it).
    let mut hashes = Vec::new();
    for (name, seed) in [("decoy1", 1u64), ("secret", 2), ("decoy2", 3)] {
        let src = s.0.join(format!("src-{name}"));
        let data = make_tree(&src, name, 1000 + seed);
        let torrent = s.0.join(format!("{name}.torrent"));
        let ih = rumor_create(&data, &torrent, &["--piece-size", "65536"]);
        node.add_bytes(&torrent);
        hashes.push((name, data, torrent, ih));
    }
    let (_, data, torrent, ih) = &hashes[1];
    let mut c = std::process::Command::new(PYTHON);
    c.arg(lt_script()).arg("seed").arg(torrent).arg(data.parent().unwrap()).arg(common::free_port().to_string());
    c.args(["--peer", &node.peer(), "--enc", "forced", "--timeout", "90"]);
    let lt = Proc::spawn("libtorrent seed (RC4 forced)", c, &s.0.join("lt-secret.log"));
    node.wait_complete(ih, Duration::from_secs(60), &[&lt]);
    assert_same_tree(data, &node.downloads.join("secret"));
    for (_, _, _, other) in [&hashes[0], &hashes[2]] {
        assert_eq!(node.torrent(other)["done"], 0, "a decoy got bytes");
    }
}

#[test]
fn with_the_sessions_peer_budget_held_by_useless_peers_a_real_leecher_still_gets_in() {
    // `--max-peers 20`, every slot taken by peers that handshake and then
    // only send keep-alives (reconnecting as they are pushed out): a
    // libtorrent leecher must still get the torrent the session seeds. The
    // listener used to refuse every connection once the budget was full.
    let s = Scratch::new("session-budget-held");
    let node = SessionNode::start(&s, &["--max-peers", "20"]);
    let (data, torrent, ih) = big_file(&s, &node, "held.bin", 93, 2_000_003, "32768");
    std::fs::create_dir_all(&node.downloads).unwrap();
    std::fs::copy(&data, node.downloads.join("held.bin")).unwrap();
    node.add_bytes(&torrent);
    assert!(
        eventually(Duration::from_secs(20), || node.torrent(&ih)["state"] == "seeding"),
        "not seeding its own data: {}",
        node.torrent(&ih)
    );
    let _attack = hold_slots(node.bt_port, 0, 30, &ih);
    assert!(
        eventually(Duration::from_secs(10), || node.torrent(&ih)["peers"].as_u64() >= Some(20)),
        "the attackers never held the budget: {}",
        node.torrent(&ih)
    );
    let (mut lt, out) = lt_leech(&s.0, &torrent, node.bt_port);
    let status = lt.wait_for(Duration::from_secs(30));
    assert!(
        status.is_some_and(|st| st.success()),
        "the leecher did not complete ({status:?}): {}\nits log:\n{}",
        node.torrent(&ih),
        lt.log_text()
    );
    assert_eq!(std::fs::read(out.join("held.bin")).unwrap(), std::fs::read(&data).unwrap());
}
