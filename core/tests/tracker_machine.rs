//! The overlay tracker machine: parked announces and their bound, the
//! lookup retry, provider expiry, snatches, and stops that must win over
//! announces delivered late; then the tracker wired to a member.

use core::net::{IpAddr, Ipv4Addr, SocketAddr};

use bytes::Bytes;
use rumor_core::bt::metainfo::InfoHash;
use rumor_core::bt::tracker::{parse_announce_response, AnnounceEvent, AnnounceRequest, AnnounceResponse};
use rumor_core::gossip::{self, Keyring, Now, PeerAddr};
use rumor_core::member::{self, Member};
use rumor_core::overlay::tracker::{Config, Event, Input, Output, Tracker};
use rumor_core::overlay::{provider_key, Provider};
use rumor_core::replica::{Change, Entry, Namespace, Version};
use rumor_core::time::{Duration, Instant};

const WALL0: u64 = 1_700_000_000_000;
const IP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));

fn at_ms(ms: u64) -> Now {
    Now { at: Instant::ZERO + Duration::from_millis(ms), wall_ms: WALL0 + ms }
}

fn request(ih: InfoHash, port: u16, left: u64, event: AnnounceEvent) -> AnnounceRequest {
    AnnounceRequest {
        info_hash: ih,
        peer_id: [port as u8; 20],
        port,
        uploaded: 0,
        downloaded: 0,
        left,
        event,
        numwant: None,
        key: None,
        compact: true,
    }
}

fn drain(t: &mut Tracker) -> (Vec<Output>, Instant) {
    let mut out = Vec::new();
    for _ in 0..100_000 {
        match t.poll_output() {
            Output::Timeout(at) => return (out, at),
            o => out.push(o),
        }
    }
    panic!("the drain never reached its timeout");
}

fn answer(out: &[Output], id: u64) -> Option<AnnounceResponse> {
    out.iter().find_map(|o| match o {
        Output::Event(Event::Answer { id: i, body }) if *i == id => Some(parse_announce_response(body).unwrap()),
        _ => None,
    })
}

fn lookup_of(out: &[Output]) -> Option<u32> {
    out.iter().find_map(|o| match o {
        Output::Gossip(gossip::Command::Lookup { id, .. }) => Some(*id),
        _ => None,
    })
}

fn writes_provider(out: &[Output]) -> bool {
    out.iter().any(|o| matches!(o, Output::Gossip(gossip::Command::Write { key, .. }) if key.len() == 38))
}

/// A provider entry as another node wrote it.
fn remote_provider(ih: InfoHash, port: u16, at_ms: u64, deleted: bool) -> Entry {
    let addr = SocketAddr::new(IP, port);
    let p = Provider {
        addr,
        peer_id: None,
        seeder: true,
        announced_ms: WALL0 + at_ms,
        expires_ms: WALL0 + at_ms + 300_000,
    };
    Entry {
        ns: Namespace::PROVIDERS,
        key: Bytes::from(provider_key(&ih, addr)),
        value: if deleted { Bytes::new() } else { Bytes::from(rumor_core::overlay::provider_value(&p)) },
        writer: 77,
        version: Version::new(WALL0 + at_ms, 0),
        expires_ms: if deleted { 0 } else { p.expires_ms },
        deleted,
    }
}

fn announce(t: &mut Tracker, ms: u64, id: u64, req: AnnounceRequest) -> Vec<Output> {
    t.handle(at_ms(ms), Input::Announce { id, request: req, from: IP });
    drain(t).0
}

#[test]
fn a_lone_peer_waits_for_a_lookup_and_is_told_what_it_found() {
    let mut t = Tracker::new(Config::new(120), at_ms(0));
    let ih = InfoHash([1; 20]);
    let out = announce(&mut t, 10, 1, request(ih, 6881, 100, AnnounceEvent::Started));
    assert!(writes_provider(&out));
    let lookup = lookup_of(&out).expect("a lookup");
    assert!(answer(&out, 1).is_none(), "parked");
    assert_eq!(t.parked(), 1);
    // The lookup brings a provider another node holds, then ends.
    t.handle(at_ms(200), Input::Store(Change::Applied(remote_provider(ih, 7000, 5, false))));
    t.handle(at_ms(210), Input::LookupDone { id: lookup });
    let (out, _) = drain(&mut t);
    let r = answer(&out, 1).expect("answered when the lookup ended");
    assert_eq!(r.peers.iter().map(|p| p.addr.port()).collect::<Vec<_>>(), vec![7000]);
    assert_eq!((r.interval, r.complete, r.incomplete), (120, Some(1), Some(1)));
    assert_eq!(t.parked(), 0);
    assert_eq!(t.stats().answered_after_lookup, 1);
}

#[test]
fn a_parked_announce_is_answered_at_the_park_timeout_if_the_lookup_never_ends() {
    let mut t = Tracker::new(Config::new(120), at_ms(0));
    let out = announce(&mut t, 0, 1, request(InfoHash([2; 20]), 6881, 100, AnnounceEvent::Started));
    assert!(lookup_of(&out).is_some());
    let (_, deadline) = drain(&mut t);
    assert_eq!(deadline, Instant::ZERO + t.config().park_timeout);
    t.handle(Now { at: deadline, wall_ms: WALL0 + 2_000 }, Input::Timeout);
    let (out, _) = drain(&mut t);
    assert!(answer(&out, 1).unwrap().peers.is_empty());
    assert_eq!(t.stats().answered_on_timeout, 1);
}

#[test]
fn a_torrent_is_looked_up_at_most_once_per_lookup_again() {
    let mut t = Tracker::new(Config::new(120), at_ms(0));
    let ih = InfoHash([3; 20]);
    let out = announce(&mut t, 0, 1, request(ih, 1, 100, AnnounceEvent::Started));
    t.handle(at_ms(10), Input::LookupDone { id: lookup_of(&out).unwrap() });
    drain(&mut t);
    // Still alone (its only provider is itself), soon after: answered at once.
    let out = announce(&mut t, 20, 2, request(ih, 1, 100, AnnounceEvent::None));
    assert!(lookup_of(&out).is_none() && answer(&out, 2).is_some(), "asked recently");
    // Past lookup_again it asks again.
    let later = t.config().lookup_again.as_millis() + 100;
    let out = announce(&mut t, later, 3, request(ih, 1, 100, AnnounceEvent::None));
    assert!(lookup_of(&out).is_some());
}

#[test]
fn no_more_than_parked_max_announces_wait_at_once() {
    let mut c = Config::new(120);
    c.parked_max = 3;
    let mut t = Tracker::new(c, at_ms(0));
    for i in 0..10u8 {
        let out =
            announce(&mut t, u64::from(i), u64::from(i), request(InfoHash([i; 20]), 6881, 1, AnnounceEvent::Started));
        assert!(t.parked() <= 3);
        if i >= 3 {
            assert!(answer(&out, u64::from(i)).is_some(), "answered at once past the bound");
        }
    }
    assert_eq!(t.stats().park_full, 7);
    assert_eq!(t.stats().parked_peak, 3);
}

#[test]
fn a_provider_is_listed_for_two_intervals_and_a_margin_then_expires() {
    let mut t = Tracker::new(Config::new(60), at_ms(0));
    let ih = InfoHash([4; 20]);
    let out = announce(&mut t, 0, 1, request(ih, 1, 0, AnnounceEvent::Started));
    let expires = out.iter().find_map(|o| match o {
        Output::Gossip(gossip::Command::Write { expires_ms, key, .. }) if key.len() == 38 => Some(*expires_ms),
        _ => None,
    });
    assert_eq!(expires, Some(WALL0 + (2 * 60 + 30) * 1000));
    assert_eq!(t.overlay().lookup(&ih, WALL0 + 149_000, 10, None).len(), 1);
    assert!(t.overlay().lookup(&ih, WALL0 + 150_000, 10, None).is_empty());
}

#[test]
fn a_stop_deletes_the_provider_and_gets_no_peers() {
    let mut t = Tracker::new(Config::new(120), at_ms(0));
    let ih = InfoHash([5; 20]);
    t.handle(at_ms(0), Input::Store(Change::Applied(remote_provider(ih, 7000, 0, false))));
    announce(&mut t, 1, 1, request(ih, 1, 100, AnnounceEvent::Started));
    let out = announce(&mut t, 2, 2, request(ih, 1, 100, AnnounceEvent::Stopped));
    assert!(out.iter().any(|o| matches!(o, Output::Gossip(gossip::Command::Delete { .. }))));
    assert!(answer(&out, 2).unwrap().peers.is_empty());
    assert_eq!(t.overlay().lookup(&ih, WALL0 + 3, 10, None).len(), 1, "only the other provider is left");
}

#[test]
fn a_completed_delivered_after_its_stop_does_not_list_the_peer_again() {
    let mut t = Tracker::new(Config::new(120), at_ms(0));
    let ih = InfoHash([6; 20]);
    announce(&mut t, 0, 1, request(ih, 1, 100, AnnounceEvent::Started));
    // The client sent completed, then stopped on another connection a few
    // microseconds later; the stop is handled first.
    announce(&mut t, 5_000, 2, request(ih, 1, 0, AnnounceEvent::Stopped));
    let out = announce(&mut t, 5_000, 3, request(ih, 1, 0, AnnounceEvent::Completed));
    assert!(!writes_provider(&out), "no provider write: {out:?}");
    assert!(answer(&out, 3).is_some());
    assert!(t.overlay().lookup(&ih, WALL0 + 5_001, 10, None).is_empty());
    assert_eq!(t.overlay().counts(&ih, WALL0 + 5_001).seeders, 0);
    assert_eq!(t.overlay().downloaded(&ih), 1, "the completion still counts");
    assert_eq!(t.stats().late_after_stop, 1);
    // A regular announce delivered late is held back as well.
    let out = announce(&mut t, 6_000, 4, request(ih, 1, 0, AnnounceEvent::None));
    assert!(!writes_provider(&out));
    // A new session is listed at once.
    let out = announce(&mut t, 7_000, 5, request(ih, 1, 0, AnnounceEvent::Started));
    assert!(writes_provider(&out));
    assert_eq!(t.overlay().counts(&ih, WALL0 + 7_001).seeders, 1);
}

#[test]
fn the_hold_after_a_stop_ends() {
    let mut t = Tracker::new(Config::new(120), at_ms(0));
    let ih = InfoHash([7; 20]);
    announce(&mut t, 0, 1, request(ih, 1, 0, AnnounceEvent::Stopped));
    let hold = t.config().stopped_hold.as_millis();
    let out = announce(&mut t, hold + 1, 2, request(ih, 1, 0, AnnounceEvent::None));
    assert!(writes_provider(&out), "a client that restarts without `started` is listed after the hold");
}

#[test]
fn a_stop_written_on_another_node_holds_late_announces_here_too() {
    let mut t = Tracker::new(Config::new(120), at_ms(0));
    let ih = InfoHash([8; 20]);
    t.handle(at_ms(1_000), Input::Store(Change::Applied(remote_provider(ih, 1, 1_000, true))));
    let out = announce(&mut t, 1_050, 1, request(ih, 1, 0, AnnounceEvent::Completed));
    assert!(!writes_provider(&out));
    // An old tombstone (a provider that expired long ago) holds nothing.
    let ih2 = InfoHash([9; 20]);
    t.handle(at_ms(100_000), Input::Store(Change::Applied(remote_provider(ih2, 1, 0, true))));
    let out = announce(&mut t, 100_001, 2, request(ih2, 1, 0, AnnounceEvent::None));
    assert!(writes_provider(&out));
}

#[test]
fn a_scrape_counts_seeders_leechers_and_completions() {
    let mut t = Tracker::new(Config::new(120), at_ms(0));
    let ih = InfoHash([10; 20]);
    announce(&mut t, 0, 1, request(ih, 1, 0, AnnounceEvent::Started));
    announce(&mut t, 1, 2, request(ih, 2, 50, AnnounceEvent::Started));
    announce(&mut t, 2, 3, request(ih, 3, 0, AnnounceEvent::Completed));
    t.handle(at_ms(3), Input::Scrape { id: 9, hashes: vec![ih, InfoHash([11; 20])] });
    let (out, _) = drain(&mut t);
    let body = out
        .iter()
        .find_map(|o| match o {
            Output::Event(Event::Answer { id: 9, body }) => Some(body.clone()),
            _ => None,
        })
        .unwrap();
    let files = rumor_core::bt::tracker::parse_scrape_response(&body).unwrap();
    let s = files[&ih];
    assert_eq!((s.complete, s.incomplete, s.downloaded), (2, 1, 1));
    assert_eq!(files[&InfoHash([11; 20])].complete, 0);
}

/// Drives a tracker and a member together, as the node does.
fn step(t: &mut Tracker, m: &mut Member, now: Now, input: Input) -> Vec<Output> {
    let mut answers = Vec::new();
    let mut to_tracker = vec![input];
    for _ in 0..1_000 {
        let mut to_member = Vec::new();
        for i in to_tracker.drain(..) {
            t.handle(now, i);
        }
        for o in drain(t).0 {
            match o {
                Output::Gossip(c) => to_member.push(c),
                other => answers.push(other),
            }
        }
        if to_member.is_empty() {
            return answers;
        }
        for c in to_member {
            m.handle(now, member::Input::Command(member::Command::Gossip(c)));
        }
        loop {
            match m.poll_output() {
                member::Output::Event(member::Event::Providers(c)) => to_tracker.push(Input::Store(c)),
                member::Output::Event(member::Event::Gossip(gossip::Event::LookupDone { id, .. })) => {
                    to_tracker.push(Input::LookupDone { id })
                }
                member::Output::Timeout(_) => break,
                _ => {}
            }
        }
    }
    panic!("tracker and member never settled");
}

#[test]
fn through_a_member_the_raced_stop_leaves_a_tombstone_in_the_store() {
    let config =
        member::Config { gossip: gossip::Config::new(PeerAddr("n0".into()), Keyring::new(1, [1; 32])), node_id: 1 };
    let mut m = Member::new(config, at_ms(0), 3);
    let mut t = Tracker::new(Config::new(120), at_ms(0));
    let ih = InfoHash([12; 20]);
    let started = step(
        &mut t,
        &mut m,
        at_ms(0),
        Input::Announce { id: 1, request: request(ih, 1, 9, AnnounceEvent::Started), from: IP },
    );
    assert!(answer(&started, 1).is_some(), "a member with no peers ends its lookup at once");
    step(
        &mut t,
        &mut m,
        at_ms(10),
        Input::Announce { id: 2, request: request(ih, 1, 0, AnnounceEvent::Stopped), from: IP },
    );
    step(
        &mut t,
        &mut m,
        at_ms(10),
        Input::Announce { id: 3, request: request(ih, 1, 0, AnnounceEvent::Completed), from: IP },
    );
    let key = provider_key(&ih, SocketAddr::new(IP, 1));
    assert!(m.store().get(Namespace::PROVIDERS, &key, WALL0 + 11).is_none(), "no live provider entry");
    assert!(t.overlay().lookup(&ih, WALL0 + 11, 10, None).is_empty());
}

// Issue #12 item 3: what one address can make the tracker write is bounded.

fn announce_from(t: &mut Tracker, ms: u64, id: u64, req: AnnounceRequest, from: IpAddr) -> Vec<Output> {
    t.handle(at_ms(ms), Input::Announce { id, request: req, from });
    drain(t).0
}

fn failure_of(out: &[Output], id: u64) -> Option<String> {
    out.iter().find_map(|o| match o {
        Output::Event(Event::Answer { id: i, body }) if *i == id => match parse_announce_response(body) {
            Err(e) => Some(e.to_string()),
            Ok(_) => None,
        },
        _ => None,
    })
}

/// A config whose bounds are not in the way of the one a test looks at.
fn roomy() -> Config {
    let mut c = Config::new(120);
    c.rate_burst = u32::MAX / 2;
    c.rate_per_s = 1_000;
    c
}

#[test]
fn announces_past_an_addresss_burst_get_a_rate_limit_failure_and_write_nothing() {
    let mut c = Config::new(120);
    c.rate_burst = 5;
    c.rate_per_s = 2;
    let mut t = Tracker::new(c, at_ms(0));
    for i in 0..5u8 {
        let out = announce(&mut t, 0, u64::from(i), request(InfoHash([i; 20]), 6881, 1, AnnounceEvent::Started));
        assert!(writes_provider(&out), "within the burst");
    }
    let out = announce(&mut t, 0, 9, request(InfoHash([9; 20]), 6881, 1, AnnounceEvent::Started));
    assert!(!writes_provider(&out) && lookup_of(&out).is_none(), "nothing written past the burst");
    assert!(failure_of(&out, 9).expect("answered").contains("announce rate limit"));
    // Another address has a bucket of its own.
    let other = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
    let out = announce_from(&mut t, 0, 10, request(InfoHash([10; 20]), 6881, 1, AnnounceEvent::Started), other);
    assert!(writes_provider(&out));
    // Half a second later one token is back (2 a second), not two.
    let out = announce(&mut t, 500, 11, request(InfoHash([11; 20]), 6881, 1, AnnounceEvent::Started));
    assert!(writes_provider(&out));
    let out = announce(&mut t, 500, 12, request(InfoHash([12; 20]), 6881, 1, AnnounceEvent::Started));
    assert!(failure_of(&out, 12).is_some());
    assert_eq!(t.stats().rate_limited, 2);
    t.check_invariants();
}

#[test]
fn an_ipv6_host_cannot_pass_its_rate_by_changing_its_interface_id() {
    let mut c = Config::new(120);
    c.rate_burst = 3;
    c.rate_per_s = 1;
    let mut t = Tracker::new(c, at_ms(0));
    for i in 0..4u16 {
        let from: IpAddr = format!("2001:db8:1:2::{:x}", i + 1).parse().unwrap();
        let out = announce_from(
            &mut t,
            0,
            u64::from(i),
            request(InfoHash([i as u8; 20]), 6881, 1, AnnounceEvent::None),
            from,
        );
        assert_eq!(failure_of(&out, u64::from(i)).is_some(), i == 3, "announce {i}");
    }
}

#[test]
fn the_rate_buckets_are_bounded_whatever_the_number_of_addresses() {
    let mut c = Config::new(120);
    c.rate_addresses_max = 50;
    let mut t = Tracker::new(c, at_ms(0));
    for i in 0..500u32 {
        let from = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
        announce_from(&mut t, 0, u64::from(i), request(InfoHash([1; 20]), 6881, 1, AnnounceEvent::None), from);
        t.check_invariants();
    }
}

#[test]
fn thirty_thousand_ports_of_one_address_make_at_most_the_per_address_bound_of_providers() {
    let mut c = roomy();
    c.providers_per_address_max = 100;
    let mut t = Tracker::new(c, at_ms(0));
    let ih = InfoHash([5; 20]);
    let mut written = 0;
    for port in 1..=30_000u16 {
        let out = announce(&mut t, 0, u64::from(port), request(ih, port, 1, AnnounceEvent::None));
        written += usize::from(writes_provider(&out));
        // The first is alone and waits on a lookup; the rest are answered.
        assert!(port == 1 || answer(&out, u64::from(port)).is_some(), "still answered");
    }
    assert_eq!(written, 100);
    assert_eq!(t.overlay().providers(), 100);
    assert_eq!(t.stats().not_recorded, 29_900);
    // A known provider is still refreshed at the bound.
    let out = announce(&mut t, 1_000, 1, request(ih, 1, 0, AnnounceEvent::None));
    assert!(writes_provider(&out));
    // Another address is not held back by this one.
    let other = IpAddr::V4(Ipv4Addr::new(10, 9, 9, 9));
    assert!(writes_provider(&announce_from(&mut t, 1_000, 2, request(ih, 1, 0, AnnounceEvent::None), other)));
}

#[test]
fn providers_of_one_torrent_and_in_all_are_bounded() {
    let mut c = roomy();
    c.providers_per_torrent_max = 10;
    c.providers_max = 25;
    let mut t = Tracker::new(c, at_ms(0));
    let ih = InfoHash([6; 20]);
    for i in 0..20u32 {
        let from = IpAddr::V4(Ipv4Addr::from(0x0a01_0000 + i));
        announce_from(&mut t, 0, u64::from(i), request(ih, 6881, 1, AnnounceEvent::None), from);
    }
    assert_eq!(t.overlay().providers_of(&ih), 10);
    // Random torrents from many addresses stop at the total.
    for i in 0..100u32 {
        let from = IpAddr::V4(Ipv4Addr::from(0x0a02_0000 + i));
        let mut h = [7u8; 20];
        h[..4].copy_from_slice(&i.to_be_bytes());
        announce_from(&mut t, 0, u64::from(i), request(InfoHash(h), 6881, 1, AnnounceEvent::None), from);
    }
    assert_eq!(t.overlay().providers(), 25);
    // Once they expire there is room again.
    let later = 2 * 120_000 + t.config().expiry_margin.as_millis() + t.config().sweep_every.as_millis() + 1;
    t.handle(at_ms(later), Input::Timeout);
    drain(&mut t);
    assert_eq!(t.overlay().providers(), 0);
    let out = announce(&mut t, later, 1, request(InfoHash([8; 20]), 6881, 1, AnnounceEvent::None));
    assert!(writes_provider(&out));
}

#[test]
fn snatches_are_kept_an_hour_and_bounded_per_torrent() {
    let mut c = roomy();
    c.snatches_per_torrent_max = 3;
    c.providers_per_address_max = 5;
    let mut t = Tracker::new(c, at_ms(0));
    let ih = InfoHash([9; 20]);
    let mut snatch_writes = Vec::new();
    for port in 1..=10u16 {
        let out = announce(&mut t, 0, u64::from(port), request(ih, port, 0, AnnounceEvent::Completed));
        for o in out {
            if let Output::Gossip(gossip::Command::Write { key, expires_ms, .. }) = o {
                if key.len() == 42 {
                    snatch_writes.push(expires_ms);
                }
            }
        }
    }
    assert_eq!(snatch_writes.len(), 3);
    assert!(snatch_writes.iter().all(|e| *e == WALL0 + 3_600_000), "{snatch_writes:?}");
    assert_eq!(t.overlay().downloaded(&ih), 3);
}

#[test]
fn an_announce_interval_is_cut_to_what_the_stores_provider_lifetime_holds() {
    let c = Config::new(100_000);
    let ttl_ms = 2 * u64::from(c.interval_s) * 1000 + c.expiry_margin.as_millis();
    assert!(ttl_ms <= rumor_core::replica::PROVIDERS_LIFETIME_MAX_MS);
    assert!(c.snatch_ttl.as_millis() <= rumor_core::replica::PROVIDERS_LIFETIME_MAX_MS);
}
