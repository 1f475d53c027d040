use core::net::SocketAddr;
use proptest::prelude::*;
use rumor_core::bt::announce::*;
use rumor_core::bt::metainfo::InfoHash;
use rumor_core::bt::tracker::{encode_announce_response, encode_failure, udp, AnnounceResponse, TrackerPeer};
use rumor_core::time::{Duration, Instant};

fn t(s: u64) -> Instant {
    Instant::ZERO + Duration::from_secs(s)
}

fn drain(a: &mut Announcer) -> (Vec<Output>, Instant) {
    let mut v = Vec::new();
    loop {
        match a.poll_output() {
            Output::Timeout(at) => return (v, at),
            o => v.push(o),
        }
    }
}

fn ok_body(interval: u32, peer: &str) -> Vec<u8> {
    let r = AnnounceResponse {
        interval,
        peers: vec![TrackerPeer { addr: peer.parse().unwrap(), peer_id: None }],
        ..AnnounceResponse::default()
    };
    encode_announce_response(&r, true)
}

fn announcer(tiers: &[&[&str]]) -> Announcer {
    let tiers: Vec<Vec<String>> = tiers.iter().map(|t| t.iter().map(|s| s.to_string()).collect()).collect();
    Announcer::new(AnnounceConfig::new([7; 20], 6881), InfoHash([1; 20]), &tiers, 1000, t(0), 1)
}

fn get(o: &[Output]) -> (RequestId, String) {
    o.iter()
        .find_map(|o| match o {
            Output::HttpGet { id, url } => Some((*id, url.clone())),
            _ => None,
        })
        .expect("an HTTP GET")
}

#[test]
fn the_first_announce_says_started_and_the_answer_sets_the_interval() {
    let mut a = announcer(&[&["http://a/announce"]]);
    let (o, _) = drain(&mut a);
    let (id, url) = get(&o);
    assert!(url.starts_with("http://a/announce?info_hash="));
    assert!(url.contains("&event=started") && url.contains("&left=1000"));
    a.handle(t(1), Input::HttpBody { id, body: ok_body(1800, "1.2.3.4:5") });
    let (o, at) = drain(&mut a);
    assert_eq!(o, vec![Output::Event(Event::Peers(vec!["1.2.3.4:5".parse::<SocketAddr>().unwrap()]))]);
    assert_eq!(at, t(1801));
    a.handle(t(100), Input::Timeout);
    assert!(drain(&mut a).0.is_empty(), "an early timeout does nothing");
    a.handle(t(1801), Input::Timeout);
    let (_, url) = get(&drain(&mut a).0);
    assert!(!url.contains("event="));
}

#[test]
fn a_failing_tracker_hands_over_to_the_next_which_then_comes_first() {
    let mut a = announcer(&[&["http://a/announce", "http://b/announce"]]);
    let (o, _) = drain(&mut a);
    let (id, url) = get(&o);
    let first = if url.starts_with("http://a") { "http://a/announce" } else { "http://b/announce" };
    let second = if first.contains("//a") { "http://b/announce" } else { "http://a/announce" };
    a.handle(t(1), Input::RequestFailed { id });
    let (o, _) = drain(&mut a);
    assert!(matches!(&o[0], Output::Event(Event::TrackerError { tracker, error: None }) if tracker == first));
    let (id2, url2) = get(&o);
    assert!(url2.starts_with(second));
    a.handle(t(2), Input::HttpBody { id: id2, body: ok_body(60, "1.1.1.1:1") });
    assert_eq!(a.trackers()[0][0], second);
}

#[test]
fn a_failure_reason_moves_to_the_next_tier() {
    let mut a = announcer(&[&["http://a/announce"], &["http://b/announce"]]);
    let (id, _) = get(&drain(&mut a).0);
    a.handle(t(1), Input::HttpBody { id, body: encode_failure("nope") });
    let (o, _) = drain(&mut a);
    assert!(matches!(&o[0], Output::Event(Event::TrackerError { error: Some(_), .. })));
    assert!(get(&o).1.starts_with("http://b/announce"));
}

#[test]
fn an_unanswered_request_times_out_with_growing_backoff() {
    let mut a = announcer(&[&["http://a/announce"]]);
    let (_, at) = drain(&mut a);
    assert_eq!(at, t(15));
    a.handle(t(15), Input::Timeout);
    let (o, at) = drain(&mut a);
    assert!(matches!(&o[0], Output::Event(Event::TrackerError { .. })));
    // All trackers failed once: retry after 30 s, then wait 30 s for it.
    assert_eq!(at, t(45));
    a.handle(t(45), Input::Timeout);
    let (o, at) = drain(&mut a);
    assert!(get(&o).1.contains("event=started"), "the event is kept until a success");
    assert_eq!(at, t(75));
}

#[test]
fn a_udp_tracker_gets_a_connect_then_an_announce() {
    let mut a = announcer(&[&["udp://tr.example:6969/announce"]]);
    let (o, _) = drain(&mut a);
    let Output::UdpSend { id, payload, tracker } = &o[0] else { panic!("{o:?}") };
    assert_eq!(tracker, "udp://tr.example:6969/announce");
    let udp::Request::Connect { transaction_id } = udp::Request::parse(payload).unwrap() else { panic!() };
    // A stale transaction id is ignored.
    let wrong = udp::Response::Connect { transaction_id: transaction_id ^ 1, connection_id: 1 };
    a.handle(t(1), Input::UdpDatagram { id: *id, bytes: wrong.encode(), ipv6: false });
    assert!(drain(&mut a).0.is_empty());
    let conn = udp::Response::Connect { transaction_id, connection_id: 0xABCD };
    a.handle(t(1), Input::UdpDatagram { id: *id, bytes: conn.encode(), ipv6: false });
    let (o, _) = drain(&mut a);
    let Output::UdpSend { id, payload, .. } = &o[0] else { panic!("{o:?}") };
    let udp::Request::Announce { connection_id, transaction_id, request, .. } = udp::Request::parse(payload).unwrap()
    else {
        panic!()
    };
    assert_eq!(connection_id, 0xABCD);
    assert_eq!(request.port, 6881);
    let peers: Vec<SocketAddr> = vec!["5.6.7.8:9".parse().unwrap()];
    let ans = udp::Response::Announce { transaction_id, interval: 900, leechers: 0, seeders: 1, peers: peers.clone() };
    a.handle(t(2), Input::UdpDatagram { id: *id, bytes: ans.encode(), ipv6: false });
    let (o, at) = drain(&mut a);
    assert_eq!(o, vec![Output::Event(Event::Peers(peers))]);
    assert_eq!(at, t(902));
    // Within a minute the connection id would be reused; after, a new connect.
    a.handle(t(902), Input::Timeout);
    let (o, _) = drain(&mut a);
    let Output::UdpSend { payload, .. } = &o[0] else { panic!() };
    assert!(matches!(udp::Request::parse(payload).unwrap(), udp::Request::Connect { .. }));
}

#[test]
fn stopping_announces_stopped_then_goes_quiet() {
    let mut a = announcer(&[&["http://a/announce"]]);
    let (id, _) = get(&drain(&mut a).0);
    a.handle(t(1), Input::HttpBody { id, body: ok_body(60, "1.1.1.1:1") });
    drain(&mut a);
    a.handle(t(2), Input::Progress { uploaded: 10, downloaded: 20, left: 30 });
    a.handle(t(3), Input::Stop);
    let (o, _) = drain(&mut a);
    let (id, url) = get(&o);
    assert!(url.contains("event=stopped") && url.contains("uploaded=10"));
    a.handle(t(4), Input::HttpBody { id, body: ok_body(60, "1.1.1.1:1") });
    let (o, at) = drain(&mut a);
    assert!(o.is_empty(), "no peers after stopping");
    assert_eq!(at, Instant::NEVER);
}

#[test]
fn unsupported_schemes_are_dropped_and_nothing_is_announced_without_trackers() {
    let mut a = announcer(&[&["wss://x", "magnet:?"]]);
    assert!(a.trackers().is_empty());
    let (o, at) = drain(&mut a);
    assert!(o.is_empty());
    assert_eq!(at, Instant::NEVER);
}

proptest! {
    #[test]
    fn arbitrary_answers_never_panic_the_announcer(
        answers in proptest::collection::vec((0u8..4, proptest::collection::vec(any::<u8>(), 0..120), 0u64..40), 0..20),
    ) {
        let mut a = announcer(&[&["http://a/announce", "udp://b:1/announce"], &["udp://c:2"]]);
        let mut now = t(0);
        let mut last_id = 0;
        for (kind, bytes, dt) in answers {
            let (o, _) = drain(&mut a);
            for x in &o {
                match x {
                    Output::HttpGet { id, .. } | Output::UdpSend { id, .. } => last_id = *id,
                    _ => {}
                }
            }
            now += Duration::from_secs(dt);
            let input = match kind {
                0 => Input::HttpBody { id: last_id, body: bytes },
                1 => Input::UdpDatagram { id: last_id, bytes, ipv6: dt & 1 == 1 },
                2 => Input::RequestFailed { id: last_id },
                _ => Input::Timeout,
            };
            a.handle(now, input);
        }
        drain(&mut a);
    }
}

#[test]
fn a_stop_while_completed_is_in_flight_waits_for_it_then_says_stopped() {
    let mut a = announcer(&[&["http://a/announce"]]);
    let (id, _) = get(&drain(&mut a).0);
    a.handle(t(1), Input::HttpBody { id, body: ok_body(1800, "1.2.3.4:5") });
    drain(&mut a);
    a.handle(t(2), Input::Completed);
    let (id, url) = get(&drain(&mut a).0);
    assert!(url.contains("&event=completed"));
    // The user stops a microsecond later: `completed` must not be dropped.
    a.handle(t(2), Input::Stop);
    let (o, at) = drain(&mut a);
    assert!(o.is_empty(), "nothing new while completed is in flight: {o:?}");
    assert!(at > t(2) && at < Instant::NEVER, "the in-flight request's deadline bounds the wait");
    a.handle(t(3), Input::HttpBody { id, body: ok_body(1800, "1.2.3.4:5") });
    let (o, _) = drain(&mut a);
    let (id, url) = get(&o);
    assert!(url.contains("&event=stopped"), "{url}");
    assert!(!o.iter().any(|o| matches!(o, Output::Event(Event::Peers(_)))), "no peers handed out once stopping");
    a.handle(t(4), Input::HttpBody { id, body: ok_body(1800, "1.2.3.4:5") });
    assert_eq!(drain(&mut a).1, Instant::NEVER, "idle once stopped was answered");
}

#[test]
fn a_stop_after_completed_failed_still_says_stopped() {
    let mut a = announcer(&[&["http://a/announce"]]);
    let (id, _) = get(&drain(&mut a).0);
    a.handle(t(1), Input::HttpBody { id, body: ok_body(1800, "1.2.3.4:5") });
    drain(&mut a);
    a.handle(t(2), Input::Completed);
    let (id, _) = get(&drain(&mut a).0);
    a.handle(t(2), Input::Stop);
    drain(&mut a);
    a.handle(t(3), Input::RequestFailed { id });
    let (_, url) = get(&drain(&mut a).0);
    assert!(url.contains("&event=stopped"), "{url}");
}

#[test]
fn the_status_shows_each_tracker_not_contacted_then_updating_then_working_or_in_error() {
    let mut a = announcer(&[&["http://a/announce"], &["http://b/announce"]]);
    let (o, _) = drain(&mut a);
    let (id, _) = get(&o);
    let s = a.status();
    assert_eq!(s.len(), 2);
    assert_eq!((s[0].url.as_str(), s[0].tier, s[0].state), ("http://a/announce", 0, TrackerState::Updating));
    assert_eq!((s[1].tier, s[1].state, s[1].peers, s[1].last_announce), (1, TrackerState::NotContacted, None, None));
    a.handle(t(3), Input::HttpBody { id, body: encode_failure("unregistered torrent") });
    let (o, _) = drain(&mut a);
    let s = a.status();
    assert_eq!(s[0].state, TrackerState::Error);
    assert_eq!(s[0].last_announce, Some(t(3)));
    assert!(s[0].error.as_deref().is_some_and(|e| e.contains("unregistered torrent")), "{:?}", s[0].error);
    assert_eq!(s[1].state, TrackerState::Updating, "the next tier is asked at once");
    let (id, _) = get(&o);
    a.handle(t(4), Input::HttpBody { id, body: ok_body(1800, "1.2.3.4:5") });
    drain(&mut a);
    let s = a.status();
    assert_eq!(
        (s[1].state, s[1].peers, s[1].last_announce, s[1].error.clone()),
        (TrackerState::Working, Some(1), Some(t(4)), None)
    );
    assert_eq!(TrackerState::Working.as_str(), "working");
    assert_eq!(TrackerState::NotContacted.as_str(), "not contacted");
}

#[test]
fn a_tracker_that_never_answers_shows_an_error_once_its_request_times_out() {
    let mut a = announcer(&[&["http://a/announce"]]);
    drain(&mut a);
    a.handle(t(60), Input::Timeout);
    drain(&mut a);
    let s = a.status();
    assert_eq!(s[0].state, TrackerState::Error);
    assert!(s[0].error.is_some() && s[0].peers.is_none());
}
