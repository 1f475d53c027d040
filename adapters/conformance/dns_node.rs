//! A real `rumor node` answering real DNS clients (dig, kdig) and the
//! original system's HTTP API.

mod common;

use common::*;
use std::net::UdpSocket;
use std::time::Duration;

/// An API token (a node refuses one under 16 characters).
const TOKEN: &str = "dns-node-test-token-0123";
/// A node with a token needs a cluster key.
const KEY: &str = "646e73206e6f646520746573742063757374657220206b65792c203332206279";

#[test]
fn the_seed_example_works_with_curl_style_posts_and_dig() {
    let node = TestNode::solo("seed", &[]);
    node.add(r#"{"name":"free.local","ips":["10.1.0.15"],"ttl":360}"#);
    let out = node.dig(&["free.local"]);
    assert_eq!(status(&out), "NOERROR");
    assert!(out.contains(" aa"), "authoritative answer: {out}");
    let a = answers(&out);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0][3], "A");
    assert_eq!(a[0][4], "10.1.0.15");
    let ttl: u32 = a[0][1].parse().unwrap();
    assert!((358..=360).contains(&ttl), "ttl {ttl}");
    // kdig agrees.
    let k = node.kdig(&["free.local", "A", "+short"]);
    assert_eq!(k.trim(), "10.1.0.15");
}

#[test]
fn ipv6_addresses_are_served_as_aaaa() {
    let node = TestNode::solo("aaaa", &[]);
    node.add(r#"{"name":"v6.local","ips":["2001:db8::7","10.0.0.7"],"ttl":60}"#);
    assert_eq!(node.dig(&["v6.local", "AAAA", "+short"]).trim(), "2001:db8::7");
    assert_eq!(node.dig(&["v6.local", "A", "+short"]).trim(), "10.0.0.7");
}

#[test]
fn the_ttl_counts_down_and_the_name_expires_to_nxdomain() {
    let node = TestNode::solo("ttl", &[]);
    node.add(r#"{"name":"short.local","ips":["10.0.0.1"],"ttl":3}"#);
    let first: u32 = answers(&node.dig(&["short.local"]))[0][1].parse().unwrap();
    std::thread::sleep(Duration::from_millis(1_100));
    let second: u32 = answers(&node.dig(&["short.local"]))[0][1].parse().unwrap();
    assert!(second < first, "ttl went from {first} to {second}");
    assert!(
        eventually(Duration::from_secs(5), || status(&node.dig(&["short.local"])) == "NXDOMAIN"),
        "the record expires"
    );
    // Expired records are not listed either.
    let (_, list) = node.get("/list");
    assert_eq!(list.as_array().unwrap().len(), 0);
}

#[test]
fn a_deleted_name_is_nxdomain() {
    let node = TestNode::solo("del", &[]);
    node.add(r#"{"name":"gone.local","ips":["10.0.0.2"],"ttl":60}"#);
    let (code, _) = node.post("/del", r#"{"name":"gone.local"}"#);
    assert_eq!(code, 200);
    assert_eq!(status(&node.dig(&["gone.local"])), "NXDOMAIN");
    let (code, body) = node.post("/delete", r#"{"name":"gone.local"}"#);
    assert_eq!(code, 404, "{body}");
}

#[test]
fn a_name_without_the_type_is_nodata_with_an_soa() {
    let node = TestNode::solo("nodata", &[]);
    node.add(r#"{"name":"only4.local","ips":["10.0.0.3"],"ttl":60}"#);
    let out = node.dig(&["only4.local", "AAAA"]);
    assert_eq!(status(&out), "NOERROR");
    assert!(answers(&out).is_empty());
    assert!(out.contains("AUTHORITY SECTION") && out.contains("SOA"), "{out}");
    let nx = node.dig(&["missing.local"]);
    assert_eq!(status(&nx), "NXDOMAIN");
    assert!(nx.contains("SOA"), "negative answers carry an SOA: {nx}");
}

#[test]
fn several_addresses_rotate_round_robin() {
    let node = TestNode::solo("rr", &[]);
    node.add(r#"{"name":"rr.local","ips":["10.0.0.1","10.0.0.2","10.0.0.3"],"ttl":60}"#);
    let firsts: std::collections::BTreeSet<String> =
        (0..3).map(|_| node.dig(&["rr.local", "+short"]).lines().next().unwrap_or("").to_string()).collect();
    assert_eq!(firsts.len(), 3, "each address leads once in three queries: {firsts:?}");
}

#[test]
fn queries_over_tcp_are_answered() {
    let node = TestNode::solo("tcp", &[]);
    node.add(r#"{"name":"tcp.local","ips":["10.0.0.4"],"ttl":60}"#);
    let out = node.dig(&["+tcp", "tcp.local"]);
    assert!(out.contains("(TCP)"), "{out}");
    assert_eq!(answers(&out)[0][4], "10.0.0.4");
    assert_eq!(node.kdig(&["+tcp", "tcp.local", "+short"]).trim(), "10.0.0.4");
}

#[test]
fn large_sets_truncate_over_udp_and_come_whole_over_tcp() {
    let node = TestNode::solo("tc", &[]);
    let ips: Vec<String> = (0..100).map(|i| format!("\"10.9.{}.{}\"", i / 200, i % 200 + 1)).collect();
    node.add(&format!(r#"{{"name":"big.local","ips":[{}],"ttl":60}}"#, ips.join(",")));
    let plain = node.dig(&["+noedns", "+ignore", "big.local"]);
    assert!(plain.contains(" tc"), "TC without EDNS: {plain}");
    assert!(plain.contains("MSG SIZE  rcvd: ") && msg_size(&plain) <= 512);
    let edns = node.dig(&["+bufsize=4096", "+ignore", "big.local"]);
    assert!(edns.contains("; EDNS: version: 0"), "EDNS echoed: {edns}");
    assert!(edns.contains(" tc"), "1,600 bytes of answers exceed our 1232-byte UDP limit");
    assert!(msg_size(&edns) <= 1232);
    let small = node.dig(&["+bufsize=1232", "+ignore", "+short", "rr-none.local"]);
    assert!(small.is_empty());
    // Without +ignore dig retries over TCP and gets everything.
    let full = node.dig(&["big.local"]);
    assert_eq!(answers(&full).len(), 100);
}

fn msg_size(out: &str) -> usize {
    out.split("MSG SIZE  rcvd: ").nth(1).and_then(|s| s.trim().parse().ok()).unwrap()
}

#[test]
fn malformed_packets_get_formerr_or_silence_and_the_server_keeps_answering() {
    let node = TestNode::solo("malformed", &[]);
    node.add(r#"{"name":"ok.local","ips":["10.0.0.5"],"ttl":60}"#);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    // A header that claims a question, then a label running off the end.
    let bad = [0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0x3f, b'a', b'b'];
    sock.send_to(&bad, node.dns).unwrap();
    let mut buf = [0u8; 512];
    let (n, _) = sock.recv_from(&mut buf).expect("FORMERR comes back");
    assert_eq!(&buf[..2], &[0x12, 0x34]);
    assert_eq!(buf[3] & 0x0f, 1, "rcode FORMERR");
    assert!(n >= 12);
    // Too short to be a header: no answer at all.
    sock.send_to(&[1, 2, 3], node.dns).unwrap();
    assert!(sock.recv_from(&mut buf).is_err(), "no answer to 3 bytes");
    // A compression loop.
    let looped = [0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1];
    sock.send_to(&looped, node.dns).unwrap();
    let (_, _) = sock.recv_from(&mut buf).expect("FORMERR for a pointer loop");
    assert_eq!(buf[3] & 0x0f, 1);
    assert_eq!(node.dig(&["ok.local", "+short"]).trim(), "10.0.0.5");
}

#[test]
fn other_record_types_are_written_through_the_rest_form() {
    let node = TestNode::solo("types", &[]);
    node.add(r#"{"name":"mail.local","ips":["10.0.0.25"],"ttl":60}"#);
    for body in [
        r#"{"name":"local","type":"MX","ttl":60,"data":["10 mail.local"]}"#,
        r#"{"name":"www.local","type":"CNAME","ttl":60,"data":["mail.local"]}"#,
        r#"{"name":"t.local","type":"TXT","ttl":60,"data":["hello world"]}"#,
        r#"{"name":"_sip._udp.local","type":"SRV","ttl":60,"data":["0 5 5060 mail.local"]}"#,
    ] {
        let (code, resp) = node.post("/records", body);
        assert_eq!(code, 200, "{body}: {resp}");
    }
    let mx = node.dig(&["local", "MX"]);
    assert_eq!(answers(&mx)[0][5], "mail.local.");
    assert!(mx.contains("ADDITIONAL SECTION") && mx.contains("10.0.0.25"), "glue: {mx}");
    let cname = answers(&node.dig(&["www.local", "A"]));
    assert_eq!(cname[0][3], "CNAME");
    assert_eq!(cname[1][4], "10.0.0.25");
    assert_eq!(node.dig(&["t.local", "TXT", "+short"]).trim(), "\"hello world\"");
    assert_eq!(node.dig(&["_sip._udp.local", "SRV", "+short"]).trim(), "0 5 5060 mail.local.");
    // A CNAME cannot join other data.
    let (code, _) = node.post("/records", r#"{"name":"mail.local","type":"CNAME","ttl":60,"data":["x.local"]}"#);
    assert_eq!(code, 409);
}

#[test]
fn bad_requests_get_400_with_a_json_error_and_change_nothing() {
    let node = TestNode::solo("bad", &[]);
    for body in [
        "not json",
        r#"{"name":"x.local"}"#,
        r#"{"name":"bad name.local","ips":["10.0.0.1"],"ttl":60}"#,
        r#"{"name":"x.local","ips":["10.0.0.300"],"ttl":60}"#,
        r#"{"name":"x.local","ips":["10.0.0.1"],"ttl":0}"#,
        r#"{"name":"x.local","ips":["10.0.0.1"],"ttl":99999999999}"#,
        r#"{"name":"x.local","ips":[],"ttl":60}"#,
    ] {
        let (code, resp) = node.post("/add", body);
        assert_eq!(code, 400, "{body} -> {resp}");
        assert!(resp["error"].as_str().is_some_and(|e| !e.is_empty()), "{resp}");
    }
    let (_, list) = node.get("/list");
    assert_eq!(list.as_array().unwrap().len(), 0);
}

#[test]
fn a_token_guards_writes_but_not_reads() {
    let node = TestNode::solo("token", &["--api-token", TOKEN, "--cluster-key", KEY]);
    let body = r#"{"name":"t.local","ips":["10.0.0.9"],"ttl":60}"#;
    assert_eq!(node.post("/add", body).0, 401);
    assert_eq!(node.post_with("/add", body, Some("wrong")).0, 401);
    assert_eq!(node.post_with("/add", body, Some(TOKEN)).0, 200);
    assert_eq!(node.get("/list").0, 200);
}

#[test]
fn records_survive_a_kill_9_and_restart() {
    let mut node = TestNode::solo("persist", &[]);
    node.add(r#"{"name":"keep.local","ips":["10.0.0.10"],"ttl":600}"#);
    node.add(r#"{"name":"drop.local","ips":["10.0.0.11"],"ttl":600}"#);
    assert_eq!(node.post("/del", r#"{"name":"drop.local"}"#).0, 200);
    node.restart();
    assert_eq!(node.dig(&["keep.local", "+short"]).trim(), "10.0.0.10");
    assert_eq!(status(&node.dig(&["drop.local"])), "NXDOMAIN");
    let ttl: u32 = answers(&node.dig(&["keep.local"]))[0][1].parse().unwrap();
    assert!(ttl <= 600 && ttl > 590, "the remaining TTL is kept across restarts: {ttl}");
}

#[test]
fn sigterm_stops_the_node_cleanly() {
    let mut node = TestNode::solo("term", &[]);
    let status = node.terminate().expect("the node exits within 10 s");
    assert!(status.success(), "{status:?}");
}

#[test]
fn zones_refuse_or_forward_outside_names() {
    let upstream = TestNode::solo("zones-up", &["--ephemeral"]);
    upstream.add(r#"{"name":"elsewhere.example","ips":["192.0.2.1"],"ttl":60}"#);
    let upstream_addr = upstream.dns.to_string();
    let node = TestNode::solo("zones", &["--zone", "rumor.test", "--upstream", &upstream_addr, "--ephemeral"]);
    node.add(r#"{"name":"a.rumor.test","ips":["10.0.0.12"],"ttl":60}"#);
    assert_eq!(node.dig(&["a.rumor.test", "+short"]).trim(), "10.0.0.12");
    let nx = node.dig(&["b.rumor.test"]);
    assert_eq!(status(&nx), "NXDOMAIN");
    assert!(nx.contains("rumor.test.") && nx.contains("SOA"));
    assert_eq!(node.dig(&["elsewhere.example", "+short"]).trim(), "192.0.2.1", "forwarded");
    assert_eq!(node.dig(&["+tcp", "elsewhere.example", "+short"]).trim(), "192.0.2.1");
    let soa = node.dig(&["rumor.test", "SOA"]);
    assert_eq!(answers(&soa).len(), 1);
    let refusing = TestNode::solo("zones-refuse", &["--zone", "rumor.test", "--ephemeral"]);
    assert_eq!(status(&refusing.dig(&["elsewhere.example"])), "REFUSED");
}

#[test]
fn the_dns_cli_adds_lists_queries_and_removes() {
    let node = TestNode::solo("cli", &[]);
    let api = node.api.to_string();
    let dns = node.dns.to_string();
    let rumor = |args: &[&str]| {
        let out = std::process::Command::new(binary()).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    rumor(&["dns", "add", "cli.local", "10.0.0.20", "--ttl", "120", "--api", &api]);
    rumor(&["dns", "add", "cli.local", "--type", "TXT", "hi there", "--api", &api]);
    let ls = rumor(&["dns", "ls", "--api", &api]);
    assert!(ls.contains("cli.local") && ls.contains("10.0.0.20") && ls.contains("\"hi there\""), "{ls}");
    let q = rumor(&["dns", "query", "cli.local", "A", "--server", &dns]);
    assert!(q.contains("NOERROR") && q.contains("10.0.0.20"), "{q}");
    let q = rumor(&["dns", "query", "cli.local", "TXT", "--server", &dns, "--tcp"]);
    assert!(q.contains("hi there"), "{q}");
    rumor(&["dns", "rm", "cli.local", "--api", &api]);
    let q = rumor(&["dns", "query", "cli.local", "--server", &dns]);
    assert!(q.contains("NXDOMAIN"), "{q}");
}

#[test]
fn metrics_are_served_in_prometheus_text_format() {
    let node = TestNode::solo("metrics", &[]);
    node.add(r#"{"name":"m.local","ips":["10.0.0.30"],"ttl":60}"#);
    node.dig(&["m.local"]);
    node.dig(&["nope.local"]);
    let body = ureq::get(&node.url("/metrics")).call().unwrap().into_string().unwrap();
    for line in [
        "# TYPE rumor_dns_rrsets gauge",
        "rumor_dns_rrsets 1",
        "rumor_dns_queries_total{qtype=\"A\"} 2",
        "rumor_dns_responses_total{rcode=\"NXDOMAIN\"} 1",
        "rumor_dns_responses_total{rcode=\"NOERROR\"} 1",
        "rumor_members{state=\"alive\"} 0",
    ] {
        assert!(body.lines().any(|l| l == line), "missing {line:?} in:\n{body}");
    }
}

#[test]
fn the_node_serves_dns_over_ipv6() {
    let dir = Scratch::new("v6");
    let port = free_port();
    let dns: std::net::SocketAddr = format!("[::1]:{port}").parse().unwrap();
    let api: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let gossip: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let node = TestNode::start_at(dns, api, gossip, &dir.0, &[]);
    node.add(r#"{"name":"six.local","ips":["2001:db8::6","10.0.0.6"],"ttl":60}"#);
    let p = port.to_string();
    let udp = run_tool("dig", &["@::1", "-p", &p, "+time=2", "+tries=1", "+short", "six.local", "AAAA"]);
    assert_eq!(udp.trim(), "2001:db8::6");
    let tcp = run_tool("dig", &["@::1", "-p", &p, "+time=2", "+tries=1", "+short", "+tcp", "six.local", "A"]);
    assert_eq!(tcp.trim(), "10.0.0.6");
}

#[test]
fn a_node_on_wildcard_addresses_starts_whatever_the_host_name_resolves_to() {
    // The defaults bind 0.0.0.0 and advertise this host's address; a host
    // whose name maps only to loopback must still start.
    let dir = Scratch::new("wildcard");
    let dns: std::net::SocketAddr = format!("0.0.0.0:{}", free_port()).parse().unwrap();
    let api: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let gossip: std::net::SocketAddr = format!("0.0.0.0:{}", free_port()).parse().unwrap();
    let node = TestNode::start_at(dns, api, gossip, &dir.0, &[]);
    node.add(r#"{"name":"wild.local","ips":["10.0.0.8"],"ttl":60}"#);
    assert_eq!(node.dig(&["wild.local", "+short"]).trim(), "10.0.0.8");
}

#[test]
fn unknown_paths_and_methods_get_a_json_error_with_404_and_405() {
    let node = TestNode::solo("fallback", &[]);
    let (code, body) = node.get("/no/such/path");
    assert_eq!(code, 404, "{body}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("/no/such/path")), "{body}");
    let (code, body) = node.post("/list", "");
    assert_eq!(code, 405, "{body}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("POST")), "{body}");
    let (code, body) = node.get("/add");
    assert_eq!(code, 405, "{body}");
    assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{body}");
}

/// Runs `rumor ARGS...`, asserts it failed, and returns its stderr.
fn fails(args: &[&str]) -> String {
    let o = rumor_output(args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "{args:?} succeeded: {err}");
    err
}

#[test]
fn the_dns_cli_tells_a_node_that_is_not_running_from_a_host_that_does_not_resolve() {
    let nobody = format!("127.0.0.1:{}", free_port());
    let err = fails(&["dns", "ls", "--api", &nobody]);
    let want = format!("cannot reach the node at {nobody}: connection refused (is `rumor node` running?)");
    assert!(err.contains(&want), "{err}");
    let err = fails(&["dns", "add", "x.local", "10.0.0.1", "--api", &format!("http://{nobody}/")]);
    assert!(err.contains(&want), "{err}");
    let err = fails(&["dns", "ls", "--api", "nosuch.invalid:6969"]);
    assert!(err.contains("cannot resolve host nosuch.invalid"), "{err}");
    assert!(!err.contains("refused"), "{err}");
    // The DNS port likewise, over UDP and TCP.
    for extra in [&[][..], &["--tcp"][..]] {
        let err = fails(&[&["dns", "query", "x.local", "--server", &nobody][..], extra].concat());
        assert!(err.contains(&format!("cannot reach the DNS server at {nobody}: connection refused")), "{err}");
        let err = fails(&[&["dns", "query", "x.local", "--server", "nosuch.invalid:53"][..], extra].concat());
        assert!(err.contains("cannot resolve host nosuch.invalid"), "{err}");
    }
}

#[test]
fn dns_add_takes_api_token_like_every_command_and_still_the_old_token_flag() {
    let node = TestNode::solo("cli-token", &["--api-token", TOKEN, "--cluster-key", KEY]);
    let api = node.api.to_string();
    let add =
        |name: &str, extra: &[&str]| rumor_output(&[&["dns", "add", name, "10.0.0.21", "--api", &api], extra].concat());
    let o = add("new.local", &["--api-token", TOKEN]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = add("old.local", &["--token", TOKEN]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = add("none.local", &[]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("the node said 401"), "{o:?}");
    assert_eq!(node.dig(&["new.local", "+short"]).trim(), "10.0.0.21");
    assert_eq!(node.dig(&["old.local", "+short"]).trim(), "10.0.0.21");
    // The old name works but is not advertised.
    let help = String::from_utf8_lossy(&rumor_output(&["dns", "add", "--help"]).stdout).into_owned();
    assert!(help.contains("--api-token") && !help.contains("--token"), "{help}");
}
