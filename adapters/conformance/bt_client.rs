//! The rumor BitTorrent client on its own: deterministic torrents, resume
//! from partial data, the control API, tracker events and Ctrl-C.

mod common;

use common::bt::*;
use common::{free_port, Scratch};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[test]
fn the_same_content_and_piece_size_always_give_the_same_infohash() {
    let s = Scratch::new("bt-create");
    let a = make_tree(&s.0.join("one"), "payload", 7);
    let b = make_tree(&s.0.join("two"), "payload", 7);
    let ha = rumor_create(&a, &s.0.join("a.torrent"), &["--piece-size", "65536"]);
    let hb = rumor_create(&b, &s.0.join("b.torrent"), &["--piece-size", "65536"]);
    assert_eq!(ha, hb, "same tree, same piece size, different infohash");
    assert_eq!(ha.len(), 40);
    let hc = rumor_create(&a, &s.0.join("c.torrent"), &["--piece-size", "32768"]);
    assert_ne!(ha, hc, "the piece size must matter");
    // mktorrent orders files the same way, so it agrees on the infohash.
    let mk = s.0.join("mk.torrent");
    mktorrent(&a, "http://127.0.0.1:1/announce", 16, &mk);
    let bytes = std::fs::read(&mk).unwrap();
    // "info" sorts after every other top-level key mktorrent writes.
    let info_at = bytes.windows(6).position(|w| w == b"4:info").unwrap() + 6;
    let h = sha1_hex(&bytes[info_at..bytes.len() - 1]);
    assert_eq!(h, ha, "mktorrent and rumor disagree on the infohash");
}

fn sha1_hex(b: &[u8]) -> String {
    use sha1::{Digest, Sha1};
    hex::encode(Sha1::digest(b))
}

#[test]
fn a_single_file_gets_a_sensible_piece_size_and_a_bad_piece_size_is_refused() {
    let s = Scratch::new("bt-create-single");
    let f = s.0.join("one.bin");
    std::fs::write(&f, content(1, 3_000_000)).unwrap();
    rumor_create(&f, &s.0.join("t.torrent"), &[]);
    let t = std::fs::read(s.0.join("t.torrent")).unwrap();
    let text = String::from_utf8_lossy(&t);
    assert!(text.contains("12:piece lengthi16384e"), "3 MB should get 16 KiB pieces");
    let o = rumor(&["create"]).arg(&f).arg("-o").arg(s.0.join("u.torrent")).args(["--piece-size", "1000"]).output();
    let o = o.unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("power of two"));
}

fn seed_proc(s: &Scratch, torrent: &std::path::Path, dir: &std::path::Path, port: u16, extra: &[&str]) -> Proc {
    rumor_seed(&s.0, &format!("seed-{port}"), torrent, dir, port, extra)
}

#[test]
fn starting_again_on_partial_data_fetches_only_what_is_missing() {
    let s = Scratch::new("bt-resume");
    let Fixture { src, data, torrent, .. } = fixture(&s.0, 9, &["--piece-size", "32768"]);
    // Partial copy: alpha.bin with a damaged middle, beta.bin missing.
    let out = s.0.join("out");
    let copy = out.join("payload");
    std::fs::create_dir_all(copy.join("sub/deeper")).unwrap();
    let mut alpha = std::fs::read(data.join("alpha.bin")).unwrap();
    alpha[700_000..720_000].fill(0);
    std::fs::write(copy.join("alpha.bin"), alpha).unwrap();
    std::fs::copy(data.join("zeta.bin"), copy.join("zeta.bin")).unwrap();
    std::fs::copy(data.join("sub/deeper/gamma.txt"), copy.join("sub/deeper/gamma.txt")).unwrap();
    let port = free_port();
    let _seed = seed_proc(&s, &torrent, &src, port, &[]);
    let o = get_command(&torrent, &out, free_port()).args(["--peer", &format!("127.0.0.1:{port}")]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "{err}");
    assert_same_tree(&data, &copy);
    let line = err.lines().find(|l| l.contains("pieces present")).expect("a check report");
    let present: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(present > 40, "the intact pieces were not recognised: {line}");
    let run = err.lines().find(|l| l.contains("this run:")).expect("a summary");
    let got: u64 = run.split("this run: ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    let total = 1_500_017 + 700_001 + 6 + 333_333;
    assert!(got < total / 2, "fetched {got} of {total} bytes: more than was missing");
    assert!(got >= 700_001, "beta.bin alone is 700001 bytes, got {got}");
}

fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    let code = buf.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = buf.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
    (code, body)
}

fn status(addr: SocketAddr) -> serde_json::Value {
    let (code, body) = http(addr, "GET", "/status");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[test]
fn the_control_api_reports_status_and_pauses_and_resumes() {
    let s = Scratch::new("bt-control");
    let Fixture { src, torrent, .. } = fixture(&s.0, 11, &["--piece-size", "16384"]);
    let seed_port = free_port();
    let _seed = seed_proc(&s, &torrent, &src, seed_port, &[]);
    let control: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let out = s.0.join("out");
    let mut c = rumor(&["get"]);
    c.arg(&torrent).arg("-o").arg(&out).args(["--quiet", "--port", &free_port().to_string()]);
    c.args(["--peer", &format!("127.0.0.1:{seed_port}"), "--control", &control.to_string()]);
    let _get = Proc::spawn("rumor get", c, &s.0.join("get.log"));
    assert!(eventually(Duration::from_secs(20), || TcpStream::connect(control).is_ok()), "no control API");
    assert_eq!(http(control, "GET", "/health").0, 200);
    let total = 1_500_017 + 700_001 + 6 + 333_333u64;
    assert!(eventually(Duration::from_secs(30), || status(control)["state"] == "seeding"), "never completed");
    let st = status(control);
    assert_eq!(st["name"], "payload");
    assert_eq!(st["bytes_total"], total);
    assert_eq!(st["bytes_done"], total);
    assert_eq!(st["progress"], 1.0);
    assert_eq!(st["eta_secs"], 0);
    assert!(st["peers_known"].as_u64().unwrap() >= 1);
    assert!(st["downloaded"].as_u64().unwrap() >= total, "{st}");
    assert!(st["pieces_verified"].as_u64().unwrap() >= 1, "{st}");
    let (code, metrics) = http(control, "GET", "/metrics");
    assert_eq!(code, 200);
    for needle in [
        "# TYPE rumor_bt_payload_bytes_total counter",
        "rumor_bt_pieces_total{",
        "result=\"failed\"} 0",
        "rumor_bt_peers{",
        "rumor_bt_progress_ratio{",
    ] {
        assert!(metrics.contains(needle), "{needle} missing in:\n{metrics}");
    }
    assert_eq!(http(control, "POST", "/pause").0, 204);
    let st = status(control);
    assert_eq!(st["state"], "paused");
    assert_eq!(st["peers_connected"], 0);
    assert_eq!(http(control, "POST", "/resume").0, 204);
    assert_eq!(status(control)["state"], "seeding");
}

/// A tracker that records every announce query and answers with no peers.
fn fake_tracker() -> (u16, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { return };
            let mut line = String::new();
            let mut r = BufReader::new(c.try_clone().unwrap());
            if r.read_line(&mut line).is_err() {
                continue;
            }
            s2.lock().unwrap().push(line.clone());
            let body = b"d8:intervali1800e5:peers0:e";
            let _ = write!(c, "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
            let _ = c.write_all(body);
        }
    });
    (port, seen)
}

#[test]
fn announces_carry_started_completed_and_stopped_and_ctrl_c_exits_cleanly() {
    let s = Scratch::new("bt-events");
    let (tport, seen) = fake_tracker();
    let Fixture { src, torrent, .. } =
        fixture(&s.0, 13, &["--announce", &format!("http://127.0.0.1:{tport}/announce")]);
    let seed_port = free_port();
    let seed = seed_proc(&s, &torrent, &src, seed_port, &[]);
    let port_q = format!("port={seed_port}&");
    let has = |ev: &str, port: &str| seen.lock().unwrap().iter().any(|l| l.contains(ev) && l.contains(port));
    assert!(eventually(Duration::from_secs(10), || has("event=started", &port_q)), "no started announce");
    let get_port = free_port();
    let o =
        get_command(&torrent, &s.0.join("out"), get_port).args(["--peer", &format!("127.0.0.1:{seed_port}")]).output();
    let o = o.unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let gq = format!("port={get_port}&");
    assert!(has("event=started", &gq) && has("event=completed", &gq) && has("event=stopped", &gq), "{seen:?}");
    let mut seed = seed;
    seed.interrupt();
    let st = seed.wait_for(Duration::from_secs(10));
    assert!(st.is_some_and(|s| s.success()), "Ctrl-C did not exit cleanly: {}", seed.log_text());
    assert!(has("event=stopped", &port_q), "the seeder did not announce stopped: {seen:?}");
}

#[test]
fn seeding_a_directory_without_the_data_fails_with_a_clear_error() {
    let s = Scratch::new("bt-seed-missing");
    let Fixture { torrent, .. } = fixture(&s.0, 15, &[]);
    let empty = s.0.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let o = rumor(&["seed"]).arg(&torrent).arg(&empty).args(["--quiet", "--port", "0"]).output().unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("none of"), "{err}");
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0, "seed created files");
}

#[test]
fn a_control_api_on_a_public_address_needs_an_explicit_flag() {
    let s = Scratch::new("bt-control-public");
    let Fixture { src, torrent, .. } = fixture(&s.0, 17, &[]);
    let o = rumor(&["seed"])
        .arg(&torrent)
        .arg(&src)
        .args(["--quiet", "--port", "0", "--control", &format!("0.0.0.0:{}", free_port())])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--control-public"));
}

#[test]
fn two_peers_that_dial_each_other_keep_one_connection_between_them() {
    // Two leechers with nothing yet, each given the other with --peer:
    // each dials the other (again after its first dial fails, if the
    // other was not listening yet), so two connections join them. Both
    // must close the same one and keep the other, for good.
    let s = Scratch::new("bt-dup-conn");
    let Fixture { torrent, .. } = fixture(&s.0, 12, &["--piece-size", "16384"]);
    let ports = [free_port(), free_port()];
    let controls: Vec<SocketAddr> = (0..2).map(|_| format!("127.0.0.1:{}", free_port()).parse().unwrap()).collect();
    let procs: Vec<Proc> = (0..2)
        .map(|i| {
            let mut c = rumor(&["get"]);
            c.arg(&torrent).arg("-o").arg(s.0.join(format!("out{i}")));
            c.args(["--quiet", "--bind", "127.0.0.1", "--port", &ports[i].to_string()]);
            c.args(["--peer", &format!("127.0.0.1:{}", ports[1 - i]), "--control", &controls[i].to_string()]);
            c.env("RUMOR_LOG", "info,rumor_node::bt::client=debug");
            Proc::spawn(&format!("get{i}"), c, &s.0.join(format!("get{i}.log")))
        })
        .collect();
    for c in &controls {
        assert!(eventually(Duration::from_secs(20), || TcpStream::connect(c).is_ok()), "no control API");
    }
    let closed = |p: &Proc| p.log_text().matches("a second connection to the same peer").count();
    assert!(
        eventually(Duration::from_secs(30), || procs.iter().map(closed).sum::<usize>() > 0),
        "no second connection was ever closed; the logs:\n{}\n{}",
        procs[0].log_text(),
        procs[1].log_text()
    );
    // Settled: one connection on each side, and it stays (no closing and
    // dialing again in a loop).
    assert!(
        eventually(Duration::from_secs(10), || controls.iter().all(|c| status(*c)["peers_connected"] == 1)),
        "not one connection each: {} / {}",
        status(controls[0]),
        status(controls[1])
    );
    // Each side logs the one it closed. The side whose own dial was
    // closed by the other dials once more after its backoff (1 s, with
    // jitter), sees the duplicate itself and then leaves it: let that pass.
    std::thread::sleep(Duration::from_secs(3));
    let before: usize = procs.iter().map(closed).sum();
    for _ in 0..8 {
        std::thread::sleep(Duration::from_millis(500));
        for c in &controls {
            assert_eq!(status(*c)["peers_connected"], 1, "{}", status(*c));
        }
    }
    assert_eq!(
        procs.iter().map(closed).sum::<usize>(),
        before,
        "connections are still being closed; the logs:\n{}\n{}",
        procs[0].log_text(),
        procs[1].log_text()
    );
}
