//! Test harness: real `rumor node` processes on free loopback ports, killed
//! by PID when dropped, and the real `dig`/`kdig` against them.
#![allow(dead_code)]

use serde_json::Value;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The binary under test: `RUMOR_BIN` if set, else the binary of the
/// adapter crate running this suite (`rumor` for rumor-tokio, `rumor-smol`
/// for rumor-smol): the same tests run against every adapter.
pub fn binary() -> PathBuf {
    std::env::var_os("RUMOR_BIN").map(PathBuf::from).unwrap_or_else(own_binary)
}

/// This adapter crate's own binary.
pub fn own_binary() -> PathBuf {
    let own = option_env!("CARGO_BIN_EXE_rumor").or(option_env!("CARGO_BIN_EXE_rumor-smol"));
    PathBuf::from(own.expect("the conformance suite runs from an adapter crate with a rumor binary"))
}

/// Another adapter's binary, built beside this one (`cargo test --workspace`
/// builds every adapter's binary before any test runs).
pub fn sibling_binary(name: &str) -> PathBuf {
    let path = own_binary().with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: build it first (cargo build -p {}), or run cargo test --workspace",
        path.display(),
        if name == "rumor" { "rumor-tokio" } else { name }
    );
    path
}

/// A port free on 127.0.0.1 for both TCP and UDP right now.
///
/// It is taken below the kernel's ephemeral range (32768 and up), never
/// from it: a port the kernel handed out and took back can be given again
/// at once as the local port of any process's outgoing connection, and a
/// node started on it a moment later then fails with "Address already in
/// use" (seen in CI). Within this process a counter never hands out the
/// same port twice; the starting point depends on the process id, so two
/// test binaries running at once start far apart.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 10_000;
    const SPAN: u32 = 22_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = (std::process::id() % 2_000) * 11;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (LOW + (start + n) % SPAN) as u16;
        let Ok(_tcp) = TcpListener::bind(("127.0.0.1", port)) else { continue };
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port found");
}

/// A unique scratch directory under the target dir, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "rumor-test-{tag}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running node.
pub struct TestNode {
    pub child: Child,
    /// The binary it runs (restarts use it again).
    pub bin: PathBuf,
    pub dns: SocketAddr,
    pub api: SocketAddr,
    pub gossip: SocketAddr,
    pub data: PathBuf,
    pub extra: Vec<String>,
    /// The scratch directory this node owns (see [`TestNode::solo`]),
    /// removed after the process is killed.
    scratch: Option<Scratch>,
}

impl TestNode {
    /// Starts a node with a data directory in `data` and extra flags.
    pub fn start(data: &std::path::Path, extra: &[&str]) -> TestNode {
        Self::start_bin(&binary(), data, extra)
    }

    /// Starts a node with a scratch data directory of its own, named after
    /// `tag` and removed when the node is dropped.
    pub fn solo(tag: &str, extra: &[&str]) -> TestNode {
        let scratch = Scratch::new(tag);
        let mut node = Self::start(&scratch.0, extra);
        node.scratch = Some(scratch);
        node
    }

    /// Starts a node of the binary `bin` (another adapter's, for mixed
    /// clusters).
    pub fn start_bin(bin: &std::path::Path, data: &std::path::Path, extra: &[&str]) -> TestNode {
        // A port found free may be taken by a parallel test before the node
        // binds it: a node that exits at once is started again elsewhere.
        let mut last = String::new();
        for _ in 0..5 {
            let dns: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            let api: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            let gossip: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            match Self::try_start_bin(bin, dns, api, gossip, data, extra) {
                Ok(node) => return node,
                Err(e) => last = e,
            }
        }
        panic!("the node would not start: {last}");
    }

    /// Starts a node on given addresses.
    pub fn start_at(
        dns: SocketAddr,
        api: SocketAddr,
        gossip: SocketAddr,
        data: &std::path::Path,
        extra: &[&str],
    ) -> TestNode {
        Self::try_start_bin(&binary(), dns, api, gossip, data, extra).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts a node; `Err` with its log if it exits or never gets ready.
    pub fn try_start_bin(
        bin: &std::path::Path,
        dns: SocketAddr,
        api: SocketAddr,
        gossip: SocketAddr,
        data: &std::path::Path,
        extra: &[&str],
    ) -> Result<TestNode, String> {
        let log_path = data.join(format!("node-{}.log", dns.port()));
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new(bin)
            .arg("node")
            .args(["--dns", &dns.to_string(), "--api", &api.to_string(), "--gossip", &gossip.to_string()])
            .arg("--data")
            .arg(data)
            .args(extra)
            .env("RUMOR_LOG", "debug")
            // A torrent session's peers must be the ones its test gives:
            // no LSD (one multicast group for every test on the host), and
            // no DHT unless the test gives the DHT to join (`--dht-bootstrap`).
            .env("RUMOR_NO_LSD", "1")
            .env("RUMOR_NO_DHT", if extra.contains(&"--dht-bootstrap") { "0" } else { "1" })
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start rumor node");
        let mut node = TestNode {
            child,
            bin: bin.to_path_buf(),
            dns,
            api,
            gossip,
            data: data.to_path_buf(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            scratch: None,
        };
        if node.wait_ready() {
            return Ok(node);
        }
        node.kill9();
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        Err(format!("node on {} did not become ready; its log:\n{log}", node.api))
    }

    /// True once /health answers; false if the process exits or 20 s pass.
    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(r) = ureq::get(&self.url("/health")).timeout(Duration::from_secs(1)).call() {
                if r.status() == 200 {
                    return true;
                }
            }
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.api)
    }

    /// POSTs raw text as the body (no JSON content type, as curl -d does).
    pub fn post(&self, path: &str, body: &str) -> (u16, Value) {
        self.post_with(path, body, None)
    }

    pub fn post_with(&self, path: &str, body: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = ureq::post(&self.url(path))
            .timeout(Duration::from_secs(10))
            .set("Content-Type", "application/x-www-form-urlencoded");
        if let Some(t) = token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        response(req.send_string(body))
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        response(ureq::get(&self.url(path)).timeout(Duration::from_secs(10)).call())
    }

    /// POSTs a record to `/add` and asserts the node took it.
    pub fn add(&self, body: &str) {
        let (code, resp) = self.post("/add", body);
        assert_eq!(code, 200, "add {body} -> {resp}");
    }

    /// How many members `/members` lists as alive (this node included).
    pub fn alive_members(&self) -> usize {
        let (_, m) = self.get("/members");
        m["members"].as_array().map_or(0, |a| a.iter().filter(|m| m["state"] == "alive").count())
    }

    /// Kills the process with SIGKILL and waits for it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Asks for a clean stop (SIGTERM) and waits up to 10 s.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Starts the same node again on the same ports and data.
    pub fn restart(&mut self) {
        self.kill9();
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        let mut again = TestNode::try_start_bin(&self.bin, self.dns, self.api, self.gossip, &self.data, &extra)
            .unwrap_or_else(|e| panic!("{e}"));
        again.scratch = self.scratch.take();
        *self = again;
    }

    /// `dig @node -p port ARGS` with bounded time; returns stdout.
    pub fn dig(&self, args: &[&str]) -> String {
        run_tool("dig", &[&["@127.0.0.1", "-p", &self.dns.port().to_string(), "+time=2", "+tries=1"], args].concat())
    }

    /// `kdig` likewise.
    pub fn kdig(&self, args: &[&str]) -> String {
        run_tool("kdig", &[&["@127.0.0.1", "-p", &self.dns.port().to_string(), "+time=2", "+retry=0"], args].concat())
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a cluster of `n` nodes sealed with `key`: the first alone, the
/// others joining it; each has a scratch directory of its own named after
/// `tag` (as [`TestNode::solo`]).
pub fn start_cluster(tag: &str, n: usize, key: &str) -> Vec<TestNode> {
    start_cluster_of(tag, &vec![binary(); n], key)
}

/// [`start_cluster`] with node `i` running the binary `bins[i]`.
pub fn start_cluster_of(tag: &str, bins: &[PathBuf], key: &str) -> Vec<TestNode> {
    let mut nodes: Vec<TestNode> = Vec::new();
    for (i, bin) in bins.iter().enumerate() {
        let scratch = Scratch::new(&format!("{tag}-{i}"));
        let join = nodes.first().map(|first| first.gossip.to_string());
        let mut extra = vec!["--cluster-key", key];
        extra.extend(join.as_deref().map(|j| ["--join", j]).into_iter().flatten());
        let mut node = TestNode::start_bin(bin, &scratch.0, &extra);
        node.scratch = Some(scratch);
        nodes.push(node);
    }
    nodes
}

/// `rumor ARGS...` as a command (its log level: `RUMOR_TEST_LOG`, or info).
/// Local Service Discovery is off (`RUMOR_NO_LSD`): every client of every
/// test on this host shares one multicast group, and a test's peers must
/// be the ones it gives; the LSD tests remove the variable.
pub fn rumor(args: &[&str]) -> Command {
    let mut c = Command::new(binary());
    c.args(args).env("RUMOR_LOG", std::env::var("RUMOR_TEST_LOG").unwrap_or_else(|_| "info".into()));
    c.env("RUMOR_NO_LSD", "1");
    c
}

/// Runs `rumor ARGS...` to the end.
pub fn rumor_output(args: &[&str]) -> std::process::Output {
    rumor(args).output().expect("run rumor")
}

fn response(r: Result<ureq::Response, ureq::Error>) -> (u16, Value) {
    match r {
        Ok(resp) => {
            let code = resp.status();
            (code, resp.into_json().unwrap_or(Value::Null))
        }
        Err(ureq::Error::Status(code, resp)) => (code, resp.into_json().unwrap_or(Value::Null)),
        Err(e) => panic!("HTTP request failed: {e}"),
    }
}

/// Runs a DNS tool; panics with a clear message if it is not installed.
pub fn run_tool(tool: &str, args: &[&str]) -> String {
    let out = Command::new("timeout")
        .arg("10")
        .arg(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {tool} ({e}); install bind9-dnsutils and knot-dnsutils"));
    assert!(out.status.code() != Some(127), "{tool} is not installed; install bind9-dnsutils and knot-dnsutils");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `status:` of a dig answer.
pub fn status(dig_output: &str) -> String {
    dig_output.split("status: ").nth(1).and_then(|s| s.split(',').next()).unwrap_or("NO ANSWER").to_string()
}

/// Answer-section lines of a full dig output (`name ttl class type data`).
pub fn answers(dig_output: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut in_answer = false;
    for line in dig_output.lines() {
        if line.starts_with(";; ANSWER SECTION") {
            in_answer = true;
            continue;
        }
        if in_answer {
            if line.trim().is_empty() || line.starts_with(";;") {
                break;
            }
            out.push(line.split_whitespace().map(str::to_string).collect());
        }
    }
    out
}

/// Polls `check` until it returns true or `limit` passes.
pub fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
pub mod bt;

/// An attacker process (a python3 script), killed when dropped, and what
/// its first line said after `open`.
pub struct Attacker(pub Child, pub String);

impl Drop for Attacker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `python3 -c script args...` and waits for its first line, which
/// must start with `open` (the script says so once its connections are
/// up, and may say more after it).
#[allow(dead_code)]
pub fn python_attacker(script: &str, args: &[String]) -> Attacker {
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 runs the attacker");
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.as_mut().unwrap()), &mut line).unwrap();
    let said = line.trim().strip_prefix("open").unwrap_or_else(|| panic!("the attacker started: {line:?}"));
    let said = said.trim().to_string();
    Attacker(child, said)
}

/// Resident memory of a process, in KiB (Linux); 0 if it is gone.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
