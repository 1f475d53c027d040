//! Attacks on the node's storage (issue #12, items 9 and 10): a damaged
//! database must stop the node with a clear message (and `--repair` must
//! keep what verifies and fetch the rest from peers), and a write the disk
//! refused must change nothing, with writes working again once space comes
//! back, without a restart.

mod common;

use common::*;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const KEY: &str = "73746f72652061747461636b20746573742c2033322062797465732c206f6b21";
const RECORDS: usize = 200;

fn record_name(i: usize) -> String {
    format!("rec-{i:04}.damage.test")
}

fn rrsets(node: &TestNode) -> u64 {
    node.get("/health").1["stats"]["rrsets"].as_u64().unwrap_or(0)
}

/// A small deterministic generator (xorshift64*): the damage is the same
/// on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn flip_random(bytes: &[u8], seed: u64, count: usize) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let mut rng = Rng(seed);
    for _ in 0..count {
        let at = (rng.next() % out.len() as u64) as usize;
        out[at] ^= 1 << (rng.next() % 8);
    }
    out
}

/// Flips one bit in each of the first ten places a record's name is
/// stored: damage that certainly hits data.
fn flip_in_records(bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let needle = b"rec-00";
    let mut hits = 0;
    let mut i = 0;
    while i + needle.len() <= out.len() && hits < 10 {
        if &out[i..i + needle.len()] == needle {
            out[i + 7] ^= 0x04;
            hits += 1;
            i += needle.len();
        } else {
            i += 1;
        }
    }
    assert!(hits > 0, "no record name found in the database file");
    out
}

/// How a node alone on a data directory started.
enum Start {
    /// It exited, with this code (`None`: killed by a signal).
    Exited(Option<i32>),
    /// It answers `/health`; it is killed when this is dropped.
    Running(Proc, SocketAddr),
}

/// Starts `rumor node` alone on `data` on free loopback ports, its log to
/// `log`; returns the process and its DNS and API addresses.
fn spawn_node(data: &Path, log: std::fs::File) -> (std::process::Child, SocketAddr, SocketAddr) {
    let dns: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let api: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let gossip = format!("127.0.0.1:{}", free_port());
    let child = Command::new(binary())
        .arg("node")
        .args(["--dns", &dns.to_string(), "--api", &api.to_string(), "--gossip", &gossip, "--cluster-key", KEY])
        .arg("--data")
        .arg(data)
        .env("RUMOR_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start rumor node");
    (child, dns, api)
}

/// Runs `rumor node` alone on `data`, until it exits or answers `/health`;
/// also returns everything it logged by then.
fn start_alone(data: &Path) -> (Start, String) {
    let log_path = data.join("alone.log");
    let (child, dns, api) = spawn_node(data, std::fs::File::create(&log_path).unwrap());
    let mut child = Proc(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    let start = loop {
        if let Ok(Some(status)) = child.0.try_wait() {
            break Start::Exited(status.code());
        }
        if ureq::get(&format!("http://{api}/health")).timeout(Duration::from_millis(500)).call().is_ok() {
            break Start::Running(child, dns);
        }
        assert!(Instant::now() < deadline, "the node neither exited nor became ready in 30 s");
        std::thread::sleep(Duration::from_millis(50));
    };
    (start, std::fs::read_to_string(&log_path).unwrap_or_default())
}

fn ip_of(i: usize) -> String {
    format!("10.9.{}.{}", i / 250, i % 250 + 1)
}

/// Removes the database and what damage left beside it.
fn clear_database(data: &Path) {
    for entry in std::fs::read_dir(data).unwrap().flatten() {
        if entry.file_name().to_string_lossy().starts_with("rumor.redb") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[test]
fn a_damaged_database_stops_the_node_until_repair_and_peers_bring_back_the_rest() {
    let mut nodes = start_cluster("store-damage", 2, KEY);
    let batch: Vec<Value> =
        (0..RECORDS).map(|i| serde_json::json!({"name": record_name(i), "ips": [ip_of(i)], "ttl": 3600})).collect();
    for chunk in batch.chunks(50) {
        nodes[0].add(&Value::Array(chunk.to_vec()).to_string());
    }
    assert!(eventually(Duration::from_secs(20), || rrsets(&nodes[1]) == RECORDS as u64), "the peer has every record");
    // A clean stop, then a copy of what it left.
    let mut damaged_node = nodes.remove(0);
    assert!(damaged_node.terminate().is_some(), "the node stops on SIGTERM");
    let data = damaged_node.data.clone();
    let pristine = std::fs::read(data.join("rumor.redb")).expect("the database file");
    let peer = &nodes[0];

    // Random flips may all land in pages the database does not use: such a
    // node may start, but only with every record intact. The other damage
    // always stops it.
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("10 random bytes flipped", flip_random(&pristine, 0x5eed_0010, 10), true),
        ("100 random bytes flipped", flip_random(&pristine, 0x5eed_0100, 100), true),
        ("bits flipped inside stored records", flip_in_records(&pristine), false),
        ("the file emptied (0 bytes)", Vec::new(), false),
        ("the file cut halfway", pristine[..pristine.len() / 2].to_vec(), false),
    ];
    for (what, bytes, may_start) in cases {
        clear_database(&data);
        std::fs::write(data.join("rumor.redb"), &bytes).unwrap();
        let (start, log) = start_alone(&data);
        let status = match start {
            Start::Exited(status) => status,
            Start::Running(node, dns) => {
                assert!(may_start, "{what}: the node started on it:\n{log}");
                for i in 0..RECORDS {
                    let got =
                        run_tool("dig", &["@127.0.0.1", "-p", &dns.port().to_string(), &record_name(i), "+short"]);
                    assert_eq!(
                        got.trim(),
                        ip_of(i),
                        "{what}: the node started, and {} is wrong or lost",
                        record_name(i)
                    );
                }
                println!("{what} ({} bytes): it started, with all {RECORDS} records intact", bytes.len());
                drop(node);
                continue;
            }
        };
        let said = log.lines().find(|l| l.contains("is damaged")).unwrap_or("");
        println!("{what} ({} bytes): exit {status:?}: {said}", bytes.len());
        assert!(status.is_some_and(|c| c != 0), "{what}: the node did not exit with an error ({status:?}):\n{log}");
        assert!(
            said.contains(&data.join("rumor.redb").display().to_string()) && said.contains("--repair"),
            "{what}: no clear refusal naming the file and suggesting --repair:\n{log}"
        );
        assert!(!log.contains("the task ended without a result"), "{what}: {log}");
        // Refused again on the next start (redb may have patched the file).
        let (again, log2) = start_alone(&data);
        assert!(
            matches!(again, Start::Exited(Some(c)) if c != 0) && log2.contains("--repair"),
            "{what}: second start:\n{log2}"
        );

        // --repair: starts, serves what verified, then the peer brings
        // back the rest.
        let extra = ["--cluster-key", KEY, "--repair", "--join", &peer.gossip.to_string()];
        let node = TestNode::start(&data, &extra);
        let first = rrsets(&node);
        assert!(first <= RECORDS as u64, "{what}: {first}");
        let log = std::fs::read_to_string(data.join(format!("node-{}.log", node.dns.port()))).unwrap_or_default();
        let kept: u64 = log
            .split("kept=")
            .nth(1)
            .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{what}: the repair says how many entries it kept:\n{log}"));
        assert!(first >= kept.min(RECORDS as u64), "{what}: it serves what verified ({first} < {kept})");
        assert!(
            eventually(Duration::from_secs(30), || rrsets(&node) == RECORDS as u64),
            "{what}: after joining the peer it has every record again ({} of {RECORDS})",
            rrsets(&node)
        );
        for i in [0, 42, RECORDS - 1] {
            assert_eq!(node.dig(&[&record_name(i), "+short"]).trim(), ip_of(i), "{what}");
        }
        println!("{what}: --repair kept {kept}, served {first} at once, {RECORDS} after joining the peer");
        drop(node);
    }
    drop(damaged_node);
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        let uid = Command::new("id").arg("-u").output().map_err(|e| format!("cannot run id: {e}"))?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            return Err("not root".into());
        }
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!("mount failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A node process, killed when dropped (also when a test fails, so the
/// file system under it can go).
struct Proc(std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A node whose log goes to `log` (not to its data directory, which is the
/// small file system under test).
fn start_logged_elsewhere(data: &Path, log: &Path) -> (Proc, SocketAddr, SocketAddr) {
    for _ in 0..5 {
        let (mut child, dns, api) =
            spawn_node(data, std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap());
        let ready = eventually(Duration::from_secs(20), || {
            matches!(child.try_wait(), Ok(Some(_)))
                || ureq::get(&format!("http://{api}/health")).timeout(Duration::from_secs(1)).call().is_ok()
        });
        if ready && matches!(child.try_wait(), Ok(None)) {
            return (Proc(child), dns, api);
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("the node would not start: {}", std::fs::read_to_string(log).unwrap_or_default());
}

fn post(api: SocketAddr, body: &str) -> (u16, Value) {
    let r = ureq::post(&format!("http://{api}/add")).timeout(Duration::from_secs(20)).send_string(body);
    match r {
        Ok(resp) => (resp.status(), resp.into_json().unwrap_or(Value::Null)),
        Err(ureq::Error::Status(code, resp)) => (code, resp.into_json().unwrap_or(Value::Null)),
        Err(e) => panic!("HTTP request failed: {e}"),
    }
}

fn dig_short(dns: SocketAddr, name: &str) -> String {
    run_tool("dig", &["@127.0.0.1", "-p", &dns.port().to_string(), "+time=2", "+tries=1", name, "+short"])
        .trim()
        .to_string()
}

fn listed(api: SocketAddr, name: &str) -> bool {
    let r = ureq::get(&format!("http://{api}/records/{name}")).timeout(Duration::from_secs(10)).call();
    match r {
        Ok(resp) => {
            let v: Value = resp.into_json().unwrap_or(Value::Null);
            v.to_string().contains("10.")
        }
        Err(_) => false,
    }
}

/// A batch of `n` names `tag-i.full.test`, each with many addresses, so a
/// few batches fill a small disk.
fn batch(tag: &str, n: usize) -> (Vec<String>, String) {
    let names: Vec<String> = (0..n).map(|i| format!("{tag}-{i}.full.test")).collect();
    let body: Vec<Value> = names
        .iter()
        .map(|name| {
            let ips: Vec<String> = (1..=60).map(|j| format!("10.{}.{}.{j}", name.len() % 200, n % 200)).collect();
            serde_json::json!({"name": name, "ips": ips, "ttl": 3600})
        })
        .collect();
    (names, Value::Array(body).to_string())
}

#[test]
fn a_write_the_full_disk_refused_is_not_served_and_writes_work_again_once_space_is_back() {
    let scratch = Scratch::new("store-full");
    let mount = scratch.0.join("small-disk");
    let disk = match Tmpfs::mount(&mount, "2m") {
        Ok(d) => d,
        Err(why) => {
            println!("skipped: this test mounts a 2 MiB tmpfs and cannot here ({why})");
            return;
        }
    };
    let data = disk.0.join("data");
    let log = scratch.0.join("node.log");
    let (mut child, dns, api) = start_logged_elsewhere(&data, &log);
    let pid = child.0.id();
    let (first, body) = batch("before", 5);
    assert_eq!(post(api, &body).0, 200);
    // Fill what is left of the file system.
    {
        use std::io::Write;
        let mut filler = std::fs::File::create(disk.0.join("filler")).unwrap();
        let chunk = vec![0xa5u8; 64 * 1024];
        while filler.write_all(&chunk).is_ok() {}
        let _ = filler.sync_all();
    }
    // Write until the disk refuses (redb may have room left in its file).
    let mut acked: Vec<String> = first.clone();
    let mut refused: Vec<String> = Vec::new();
    let mut refusal = Value::Null;
    for round in 0..200 {
        let (names, body) = batch(&format!("during{round}"), 20);
        let (code, resp) = post(api, &body);
        match code {
            200 => acked.extend(names),
            507 => {
                refused.extend(names);
                refusal = resp;
                if refused.len() >= 60 {
                    break;
                }
            }
            other => panic!("a write on a full disk answered {other}: {resp}"),
        }
    }
    assert!(!refused.is_empty(), "the full disk refused no write ({} acknowledged)", acked.len());
    println!("on the full disk: {} names acknowledged, {} refused: {refusal}", acked.len(), refused.len());
    assert!(refusal.to_string().to_lowercase().contains("disk"), "the refusal says why: {refusal}");
    // Nothing refused is served, by DNS or the API; everything acknowledged is.
    for name in refused.iter().step_by(7) {
        assert_eq!(dig_short(dns, name), "", "{name} was refused yet served");
        assert!(!listed(api, name), "{name} was refused yet listed");
    }
    for name in acked.iter().step_by(11) {
        assert!(!dig_short(dns, name).is_empty(), "{name} was acknowledged but is not served");
    }
    // Space comes back: writes work again, same process.
    std::fs::remove_file(disk.0.join("filler")).unwrap();
    let (after, body) = batch("after", 3);
    let mut code = 0;
    assert!(
        eventually(Duration::from_secs(10), || {
            code = post(api, &body).0;
            code == 200
        }),
        "writes fail after space came back (last answer {code}): {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(child.0.id(), pid);
    assert!(matches!(child.0.try_wait(), Ok(None)), "the node kept running");
    assert!(!dig_short(dns, &after[0]).is_empty());
    // And after a restart the disk agrees with what was answered.
    drop(child);
    let (again, dns, _api) = start_logged_elsewhere(&data, &log);
    for name in refused.iter().step_by(7) {
        assert_eq!(dig_short(dns, name), "", "{name} was refused yet came back after a restart");
    }
    for name in acked.iter().step_by(11).chain(&after) {
        assert!(!dig_short(dns, name).is_empty(), "{name} was acknowledged but lost in the restart");
    }
    drop(again);
    drop(disk);
}
