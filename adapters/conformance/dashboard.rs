//! The web dashboard in a real browser: headless Chromium driven by
//! Selenium (`common/dashboard.py`) against a node with a torrent session
//! and an API token. The page adds a record (asking for the token on the
//! first write) that `dig` then answers, adds a torrent by magnet link and
//! watches its progress bar reach 100% from a libtorrent seeder, pauses and
//! removes it, and shows a write without the token refused. What the page
//! claims is checked again here against the node's DNS, API and disk.

mod common;

use common::bt::*;
use common::{Scratch, TestNode};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const KEY: &str = "64617368626f617264207465737420636c7573746572206b65792c2033322062";
const TOKEN: &str = "dashboard-test-token-0123456789";

/// The browser script.
fn script() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../conformance/common/dashboard.py"))
}

/// Where a failing run leaves its screenshot and page (kept after the test).
fn artifacts(tag: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("dashboard-{tag}-{}", std::process::id()))
}

/// Fails, saying what to install, unless Chromium, its driver and Selenium
/// for the system python are there: this test is never skipped.
fn require_browser() {
    let missing: Vec<&str> = [("/usr/bin/chromium", "chromium"), ("/usr/bin/chromedriver", "chromium-driver")]
        .into_iter()
        .filter(|(path, _)| !Path::new(path).exists())
        .map(|(_, pkg)| pkg)
        .collect();
    let selenium =
        Command::new(PYTHON).args(["-c", "import selenium"]).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    let mut missing = missing;
    if !selenium {
        missing.push("python3-selenium");
    }
    assert!(
        missing.is_empty(),
        "the dashboard test drives headless Chromium with Selenium: apt-get install {} (see .ci/apt-packages)",
        missing.join(" ")
    );
}

/// Runs the browser script with `args` (up to 4 minutes) and panics with its
/// log and the node's unless it passes.
fn run_browser(s: &Scratch, node: &TestNode, tag: &str, args: &[String]) -> String {
    let art = artifacts(tag);
    let mut c = Command::new(PYTHON);
    c.arg(script())
        .args(["--url", &node.url(""), "--token", TOKEN, "--dns-port", &node.dns.port().to_string()])
        .arg("--artifacts")
        .arg(&art)
        .args(["--timeout", "220"])
        .args(args);
    let mut p = Proc::spawn("dashboard.py", c, &s.0.join(format!("{tag}-browser.log")));
    let status = p.wait_for(Duration::from_secs(240));
    let log = p.log_text();
    if !status.is_some_and(|st| st.success()) {
        let node_log =
            std::fs::read_to_string(node.data.join(format!("node-{}.log", node.dns.port()))).unwrap_or_default();
        let tail: Vec<&str> = node_log.lines().rev().take(60).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!(
            "the browser run failed ({status:?}; screenshot and page in {}):\n{log}\nthe node's last log lines:\n{}",
            art.display(),
            tail.join("\n")
        );
    }
    assert!(log.contains("\nPASS"), "{log}");
    println!("{log}");
    log
}

#[test]
fn the_dashboard_adds_a_record_downloads_a_magnet_and_shows_a_write_without_the_token_refused() {
    require_browser();
    require_libtorrent();
    require("dig", "bind9-dnsutils");
    let s = Scratch::new("dashboard");
    let fx = fixture(&s.0, 71, &["--piece-size", "65536"]);
    let files = metainfo_of(&fx.torrent).files.len();
    let seed_port = common::free_port();
    let _seeder = libtorrent("seed", &fx.torrent, &fx.src, seed_port, &[], &s.0.join("seeder.log"));
    wait_listening(seed_port);
    let downloads = s.0.join("downloads");
    let node_dir = s.0.join("node");
    std::fs::create_dir_all(&node_dir).unwrap();
    let bt_port = common::free_port().to_string();
    // The download limit keeps the download several seconds long, so the
    // page shows the bar moving, not only its end.
    let node = TestNode::start(
        &node_dir,
        &[
            "--cluster-key",
            KEY,
            "--api-token",
            TOKEN,
            "--downloads",
            downloads.to_str().unwrap(),
            "--bt-port",
            &bt_port,
            "--max-download-rate",
            "512k",
        ],
    );
    let name = "web.dashboard.test";
    let magnet = format!("magnet:?xt=urn:btih:{}&dn=payload&x.pe=127.0.0.1:{seed_port}", fx.ih);
    let args: Vec<String> = [
        "--name",
        name,
        "--magnet",
        &magnet,
        "--infohash",
        &fx.ih,
        "--files",
        &files.to_string(),
        "--torrent-file",
        fx.torrent.to_str().unwrap(),
        "--expect-partial",
        "--download-timeout",
        "120",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let log = run_browser(&s, &node, "full", &args);
    assert!(log.contains("ok: the progress bar reached 100%"), "{log}");

    // What the page said, checked from outside it.
    assert_eq!(node.dig(&["+short", name]).trim(), "10.9.8.7");
    assert!(node.dig(&["+short", name, "MX"]).trim().is_empty(), "the MX set deleted on the page is gone");
    assert_eq!(common::status(&node.dig(&[&format!("refused.{name}")])), "NXDOMAIN");
    let (code, list) = node.get("/torrents");
    assert_eq!(code, 200);
    assert_eq!(list["torrents"].as_array().map(Vec::len), Some(0), "removed on the page: {list}");
    // Removed without its data: the download is there, byte for byte.
    assert_same_tree(&fx.data, &downloads.join("payload"));
}

#[test]
fn a_node_without_a_torrent_session_serves_the_dashboard_and_says_so_in_the_torrents_view() {
    require_browser();
    require("dig", "bind9-dnsutils");
    let s = Scratch::new("dashboard-nosession");
    let node_dir = s.0.join("node");
    std::fs::create_dir_all(&node_dir).unwrap();
    let node = TestNode::start(&node_dir, &["--cluster-key", KEY, "--api-token", TOKEN]);
    // Such a node may serve no event stream (the session's routes, /events
    // among them, answer 404): the page then says it polls, and still
    // shows writes made elsewhere within its 2 s poll.
    let args: Vec<String> = ["--name", "plain.dashboard.test", "--skip-torrents", "--allow-polling"]
        .iter()
        .map(|a| a.to_string())
        .collect();
    let log = run_browser(&s, &node, "nosession", &args);
    assert!(
        log.contains("ok: the torrents view says: this node has no torrent session (start it with --downloads DIR)"),
        "{log}"
    );
    assert_eq!(node.dig(&["+short", "plain.dashboard.test"]).trim(), "10.9.8.7");
}

#[test]
fn the_page_and_its_files_come_with_their_types_a_validator_and_a_policy_that_keeps_them_on_the_node() {
    let s = Scratch::new("dashboard-files");
    let node = TestNode::start(&s.0, &["--ephemeral"]);
    let get = |path: &str, etag: Option<&str>| {
        let mut req = ureq::get(&node.url(path)).timeout(Duration::from_secs(10));
        if let Some(t) = etag {
            req = req.set("If-None-Match", t);
        }
        match req.call() {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("GET {path}: {e}"),
        }
    };
    for (path, ty) in [
        ("/", "text/html; charset=utf-8"),
        ("/dashboard/app.js", "text/javascript; charset=utf-8"),
        ("/dashboard/style.css", "text/css; charset=utf-8"),
    ] {
        let r = get(path, None);
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.header("content-type"), Some(ty), "{path}");
        assert_eq!(r.header("cache-control"), Some("no-cache"), "{path}");
        let csp = r.header("content-security-policy").unwrap_or_default().to_string();
        assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"), "{path}: {csp}");
        let tag = r.header("etag").expect("an ETag").to_string();
        let body = r.into_string().unwrap();
        assert!(!body.is_empty());
        // Asked again with its tag: 304, no body.
        let again = get(path, Some(&tag));
        assert_eq!(again.status(), 304, "{path}");
        assert!(again.into_string().unwrap().is_empty());
    }
    let page = get("/", None).into_string().unwrap();
    assert!(
        page.contains("id=\"error\"") && page.contains("id=\"token-form\""),
        "the page has its error and token elements"
    );
    let r = get("/dashboard/../Cargo.toml", None);
    assert_eq!(r.status(), 404);
    let r = get("/dashboard/secret.txt", None);
    assert_eq!(r.status(), 404);
    let body: serde_json::Value = r.into_json().unwrap();
    assert!(body["error"].as_str().unwrap().contains("no such dashboard file"), "{body}");
}
