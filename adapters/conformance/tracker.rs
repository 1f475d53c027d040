//! Every node is a BitTorrent tracker backed by the overlay: a peer that
//! announces to one node is found by peers announcing to another.

mod common;

use common::*;
use rumor_core::bt::metainfo::InfoHash;
use rumor_core::bt::tracker::{
    parse_announce_response, parse_scrape_response, scrape_request_url, AnnounceEvent, AnnounceRequest,
};
use std::time::Duration;

const KEY: &str = "747261636b657220746573742063757374657220206b65792c20332062797465";

fn announce(node: &TestNode, ih: InfoHash, port: u16, left: u64, event: AnnounceEvent) -> Vec<u8> {
    let req = AnnounceRequest {
        info_hash: ih,
        peer_id: [port as u8; 20],
        port,
        uploaded: 0,
        downloaded: 0,
        left,
        event,
        numwant: Some(50),
        key: None,
        compact: true,
    };
    let url = req.url(&node.url("/announce"));
    let resp = ureq::get(&url).timeout(Duration::from_secs(5)).call().expect("announce");
    let mut body = Vec::new();
    std::io::Read::read_to_end(&mut resp.into_reader(), &mut body).unwrap();
    body
}

fn peer_ports(body: &[u8]) -> Vec<u16> {
    let r = parse_announce_response(body).expect("a tracker response");
    let mut ports: Vec<u16> = r.peers.iter().map(|p| p.addr.port()).collect();
    ports.sort();
    ports
}

#[test]
fn peers_announced_to_one_node_are_found_through_another() {
    let [a, b]: [TestNode; 2] = start_cluster("tr", 2, KEY).try_into().ok().unwrap();
    let ih = InfoHash([0x42; 20]);
    // A seeder announces to A; nobody else is there yet.
    assert!(peer_ports(&announce(&a, ih, 7001, 0, AnnounceEvent::Started)).is_empty());
    // A leecher announcing to B is told about the seeder, once gossip has
    // carried it over.
    assert!(
        eventually(Duration::from_secs(10), || peer_ports(&announce(&b, ih, 7002, 100, AnnounceEvent::Started))
            == vec![7001]),
        "B knows A's seeder"
    );
    // And the seeder, announcing again to A, now sees the leecher.
    assert!(eventually(Duration::from_secs(10), || peer_ports(&announce(&a, ih, 7001, 0, AnnounceEvent::None))
        == vec![7002]));
    let r = parse_announce_response(&announce(&a, ih, 7001, 0, AnnounceEvent::None)).unwrap();
    assert_eq!((r.complete, r.incomplete), (Some(1), Some(1)));
    assert_eq!(r.interval, 120);

    // The leecher completes: scrape on either node counts it.
    announce(&b, ih, 7002, 0, AnnounceEvent::Completed);
    let scrape = |n: &TestNode| {
        let url = scrape_request_url(&n.url("/scrape"), &[ih]);
        let resp = ureq::get(&url).call().unwrap();
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut resp.into_reader(), &mut body).unwrap();
        parse_scrape_response(&body).unwrap()[&ih]
    };
    assert!(eventually(Duration::from_secs(10), || {
        let s = scrape(&a);
        (s.complete, s.incomplete, s.downloaded) == (2, 0, 1)
    }));

    // The JSON view.
    let (code, v) = a.get(&format!("/providers/{}", ih.to_hex()));
    assert_eq!(code, 200);
    assert_eq!(v["providers"].as_array().unwrap().len(), 2, "{v}");

    // A peer that stops is gone everywhere.
    announce(&b, ih, 7002, 0, AnnounceEvent::Stopped);
    assert!(
        eventually(Duration::from_secs(10), || peer_ports(&announce(&a, ih, 7001, 0, AnnounceEvent::None)).is_empty())
    );
}

#[test]
fn a_bad_announce_gets_a_bencoded_failure() {
    let n = TestNode::solo("tr-bad", &[]);
    let resp = ureq::get(&n.url("/announce?info_hash=short&port=1")).call().unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_string().unwrap();
    assert!(body.starts_with("d14:failure reason"), "{body}");
    let (code, _) = n.get("/providers/nothex");
    assert_eq!(code, 400);
}

#[test]
fn an_announce_the_local_overlay_can_answer_does_not_wait_for_the_network() {
    let [a, b]: [TestNode; 2] = start_cluster("tr-local", 2, KEY).try_into().ok().unwrap();
    assert!(eventually(Duration::from_secs(10), || a.alive_members() == 2));
    // B freezes: it still looks alive to A for a while, but answers nothing.
    let stop = |sig: &str| std::process::Command::new("kill").arg(sig).arg(b.child.id().to_string()).status();
    stop("-STOP").unwrap();
    let ih = InfoHash([0x43; 20]);
    let timed = |port: u16| {
        let t = std::time::Instant::now();
        let ports = peer_ports(&announce(&a, ih, port, 100, AnnounceEvent::Started));
        (ports, t.elapsed())
    };
    // The first peer of a torrent: A knows no provider, so it asks its
    // members and waits for the answer (here: for the lookup timeout).
    let (first, asked) = timed(7101);
    // The second: A's own store has the first, so it answers at once.
    let (second, local) = timed(7102);
    stop("-CONT").unwrap();
    eprintln!("first announce (network lookup): {asked:?}; second (local store): {local:?}");
    assert!(first.is_empty());
    assert_eq!(second, vec![7101]);
    if asked < Duration::from_millis(400) {
        // Seen once in many runs (2.6 ms): say what A thought of B and
        // what its tracker and gossip counted, so the next one explains
        // itself.
        let (_, members) = a.get("/members");
        let metrics = ureq::get(&a.url("/metrics")).call().unwrap().into_string().unwrap();
        let counters: Vec<&str> = metrics
            .lines()
            .filter(|l| !l.starts_with('#') && (l.contains("tracker") || l.contains("gossip")))
            .collect();
        panic!(
            "the first announce did not wait for the lookup: {asked:?}\nA's members: {members}\n{}",
            counters.join("\n")
        );
    }
    assert!(local * 2 < asked, "the local answer did not wait: {local:?} against {asked:?}");
}

/// Regression: `rumor get --no-seed` announced `completed` and, on exit, a
/// `stopped` on another connection a few microseconds later; the stop
/// could be handled first, and the late `completed` listed the peer as a
/// seeder again for two intervals.
#[test]
fn a_completed_announce_racing_its_stopped_does_not_leave_a_seeder() {
    let dir = Scratch::new("tr-stop-race");
    let n = TestNode::start(&dir.0, &[]);
    let ih = InfoHash([0x44; 20]);
    let listed = |port: u16| {
        let (code, v) = n.get(&format!("/providers/{}", ih.to_hex()));
        assert_eq!(code, 200);
        v["providers"].as_array().unwrap().iter().any(|p| p["addr"].as_str().unwrap().ends_with(&format!(":{port}")))
    };
    // Both in flight at once, as the client sends them.
    announce(&n, ih, 7201, 100, AnnounceEvent::Started);
    assert!(listed(7201));
    std::thread::scope(|s| {
        s.spawn(|| announce(&n, ih, 7201, 0, AnnounceEvent::Completed));
        s.spawn(|| announce(&n, ih, 7201, 0, AnnounceEvent::Stopped));
    });
    assert!(!listed(7201), "the stopped peer is still listed");
    // The worst order, made certain: the stop is handled first.
    announce(&n, ih, 7202, 100, AnnounceEvent::Started);
    announce(&n, ih, 7202, 0, AnnounceEvent::Stopped);
    announce(&n, ih, 7202, 0, AnnounceEvent::Completed);
    assert!(!listed(7202), "a completed delivered after the stop listed the peer again");
    // The completion still counts for scrape.
    let url = scrape_request_url(&n.url("/scrape"), &[ih]);
    let mut body = Vec::new();
    std::io::Read::read_to_end(&mut ureq::get(&url).call().unwrap().into_reader(), &mut body).unwrap();
    let s = parse_scrape_response(&body).unwrap()[&ih];
    assert_eq!((s.complete, s.downloaded), (0, 2));
    // A new session of the same peer is listed again.
    announce(&n, ih, 7202, 0, AnnounceEvent::Started);
    assert!(listed(7202));
}
