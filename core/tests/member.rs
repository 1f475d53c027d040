//! The member machine: writes and deletes under the DNS rules, the DNS
//! view and its changes, persistence as an output, lag, refusals; two
//! members wired on virtual time for what crosses the network.

use core::net::Ipv4Addr;

use bytes::Bytes;
use rumor_core::dns::{Name, RData, RRset, RType};
use rumor_core::gossip::{self, Keyring, Now, PeerAddr};
use rumor_core::member::{Command, Config, Event, Input, Member, Output, Persist, ViewChange, WriteError, WriteReport};
use rumor_core::replica::{Change, Namespace, StoreConfig};
use rumor_core::time::{Duration, Instant};

const WALL0: u64 = 1_700_000_000_000;

fn now_at(us: u64) -> Now {
    Now { at: Instant::ZERO + Duration::from_micros(us), wall_ms: WALL0 + us / 1000 }
}

fn config(i: u64) -> Config {
    Config { gossip: gossip::Config::new(PeerAddr::from(format!("n{i}")), Keyring::new(1, [9; 32])), node_id: 100 + i }
}

fn member(i: u64) -> Member {
    Member::new(config(i), now_at(0), 7 + i)
}

fn a(name: &str, ip: u8) -> RRset {
    RRset {
        owner: Name::from_ascii(name).unwrap(),
        rtype: RType::A,
        ttl: 60,
        expires_at_ms: u64::MAX,
        data: vec![RData::A(Ipv4Addr::new(10, 0, 0, ip))],
    }
}

fn cname(name: &str, target: &str) -> RRset {
    RRset {
        owner: Name::from_ascii(name).unwrap(),
        rtype: RType::CNAME,
        ttl: 60,
        expires_at_ms: u64::MAX,
        data: vec![RData::Cname(Name::from_ascii(target).unwrap())],
    }
}

/// Every output of one drain; asserts it ends with a timeout, and returns
/// that too.
fn drain(m: &mut Member) -> (Vec<Output>, Instant) {
    let mut out = Vec::new();
    for _ in 0..100_000 {
        match m.poll_output() {
            Output::Timeout(at) => return (out, at),
            o => out.push(o),
        }
    }
    panic!("the drain never reached its timeout");
}

fn written(out: &[Output]) -> Result<WriteReport, WriteError> {
    let results: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::Event(Event::Written { result, .. }) => Some(result.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(results.len(), 1, "one write result per write: {out:?}");
    results[0].clone()
}

/// The ids of the writes that wait for the disk, in the order given.
fn persisting(out: &[Output]) -> Vec<u64> {
    out.iter()
        .filter_map(|o| match o {
            Output::Event(Event::Persisting { id }) => Some(*id),
            _ => None,
        })
        .collect()
}

/// Drains, and reports every write that waits for the disk as durable
/// (as a driver with a healthy disk does); every output, in order.
fn drain_durable(m: &mut Member, at_us: u64) -> Vec<Output> {
    let (mut out, _) = drain(m);
    for id in persisting(&out) {
        m.handle(now_at(at_us), Input::Persisted { id, result: Ok(()) });
        out.extend(drain(m).0);
    }
    out
}

fn write(m: &mut Member, at_us: u64, id: u64, puts: Vec<RRset>, removes: Vec<(Name, RType)>) -> Vec<Output> {
    m.handle(now_at(at_us), Input::Command(Command::Write { id, puts, removes }));
    drain_durable(m, at_us)
}

/// Sends a write and drains, without answering for the disk.
fn write_pending(m: &mut Member, at_us: u64, id: u64, puts: Vec<RRset>) -> Vec<Output> {
    m.handle(now_at(at_us), Input::Command(Command::Write { id, puts, removes: Vec::new() }));
    drain(m).0
}

fn dns_puts(out: &[Output]) -> Vec<rumor_core::replica::Entry> {
    out.iter()
        .filter_map(|o| match o {
            Output::Persist(Persist::Put(e)) if e.ns == Namespace::DNS => Some(e.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_write_goes_into_the_view_is_persisted_and_reported_before_its_result() {
    let mut m = member(0);
    drain(&mut m);
    let out = write(&mut m, 1_000, 1, vec![a("www.example", 1)], Vec::new());
    assert_eq!(written(&out), Ok(WriteReport { inserted: 1, replaced: 0, removed: 0 }));
    let put = out.iter().position(|o| matches!(o, Output::Persist(Persist::Put(e)) if e.ns == Namespace::DNS));
    let view = out.iter().position(|o| matches!(o, Output::Event(Event::View(ViewChange::Put(_)))));
    let result = out.iter().position(|o| matches!(o, Output::Event(Event::Written { id: 1, .. })));
    assert!(put.is_some() && view.is_some());
    assert!(put < result, "the persist comes before the result it acknowledges");
    let name = Name::from_ascii("WWW.example").unwrap();
    assert!(m.view().get(&name, RType::A, WALL0 + 1).is_some(), "the view ignores case");
    // Again: a replacement.
    let out = write(&mut m, 2_000, 2, vec![a("www.example", 2)], Vec::new());
    assert_eq!(written(&out), Ok(WriteReport { inserted: 0, replaced: 1, removed: 0 }));
}

#[test]
fn deleting_a_name_removes_every_set_and_persists_tombstones() {
    let mut m = member(0);
    let mut aaaa = a("host.example", 1);
    aaaa.rtype = RType::AAAA;
    aaaa.data = vec![RData::Aaaa("2001:db8::1".parse().unwrap())];
    write(&mut m, 1_000, 1, vec![a("host.example", 1), aaaa], Vec::new());
    m.handle(
        now_at(2_000),
        Input::Command(Command::DeleteName { id: 2, name: Name::from_ascii("host.example").unwrap() }),
    );
    let out = drain_durable(&mut m, 2_000);
    assert_eq!(written(&out), Ok(WriteReport { inserted: 0, replaced: 0, removed: 2 }));
    let removed = out.iter().filter(|o| matches!(o, Output::Event(Event::View(ViewChange::Remove(..))))).count();
    let tombstones = out.iter().filter(|o| matches!(o, Output::Persist(Persist::Put(e)) if e.deleted)).count();
    assert_eq!((removed, tombstones), (2, 2));
    assert_eq!(m.view().rrset_count(), 0);
    // Removing what is not there removes nothing and writes nothing.
    let out = write(&mut m, 3_000, 3, Vec::new(), vec![(Name::from_ascii("nothing.example").unwrap(), RType::A)]);
    assert_eq!(written(&out), Ok(WriteReport::default()));
    assert!(!out.iter().any(|o| matches!(o, Output::Persist(_))));
}

#[test]
fn a_cname_beside_other_data_is_refused_and_changes_nothing() {
    let mut m = member(0);
    write(&mut m, 1_000, 1, vec![a("alias.example", 1)], Vec::new());
    let out = write(&mut m, 2_000, 2, vec![cname("alias.example", "target.example")], Vec::new());
    match written(&out) {
        Err(WriteError::Conflict(msg)) => {
            assert!(msg.starts_with("alias.example already has A data"), "{msg}")
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(!out.iter().any(|o| matches!(o, Output::Persist(_) | Output::Transmit(_))));
    // Replacing the A by the CNAME in one write is fine.
    let out = write(
        &mut m,
        3_000,
        3,
        vec![cname("alias.example", "target.example")],
        vec![(Name::from_ascii("alias.example").unwrap(), RType::A)],
    );
    assert_eq!(written(&out), Ok(WriteReport { inserted: 1, replaced: 0, removed: 1 }));
}

#[test]
fn a_write_over_a_store_limit_is_refused_with_a_sentence() {
    let mut c = config(0);
    c.gossip.store = StoreConfig { value_bytes_max: 8, ..StoreConfig::default() };
    let mut m = Member::new(c, now_at(0), 1);
    let out = write(&mut m, 1_000, 1, vec![a("big.example", 1)], Vec::new());
    match written(&out) {
        Err(WriteError::Refused(msg)) => {
            assert!(msg.starts_with("the replicated store refused big.example A"), "{msg}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(m.view().rrset_count(), 0);
}

#[test]
fn an_expiring_set_wakes_the_member_and_leaves_the_view_on_time() {
    let mut m = member(0);
    let mut set = a("brief.example", 1);
    set.expires_at_ms = WALL0 + 5_000;
    write(&mut m, 1_000, 1, vec![set], Vec::new());
    let (_, at) = drain(&mut m);
    // The gossip rounds come sooner; the expiry is never later than due.
    assert!(at <= Instant::ZERO + Duration::from_millis(5_000));
    let mut t = at;
    let mut removed = false;
    while t <= Instant::ZERO + Duration::from_millis(6_000) && !removed {
        m.handle(now_at(t.as_micros()), Input::Timeout);
        let (out, next) = drain(&mut m);
        removed = out.iter().any(|o| matches!(o, Output::Event(Event::View(ViewChange::Remove(..)))));
        assert!(next > t || removed, "the deadline moves on");
        t = next;
    }
    assert!(removed, "the set left the view");
    assert_eq!(m.view().rrset_count(), 0);
}

#[test]
fn a_restore_rebuilds_the_view_and_persists_the_next_incarnation() {
    let mut m = member(0);
    let out = write(&mut m, 1_000, 1, vec![a("kept.example", 1)], Vec::new());
    let entries: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::Persist(Persist::Put(e)) => Some(e.clone()),
            _ => None,
        })
        .collect();
    let mut again = Member::new(config(0), now_at(10_000), 2);
    drain(&mut again);
    again.restore(entries, 4);
    let (out, _) = drain(&mut again);
    assert!(out.contains(&Output::Persist(Persist::Incarnation(5))), "{out:?}");
    assert_eq!(again.view().rrset_count(), 1);
    // A fresh directory is no earlier run: nothing to persist.
    let mut fresh = member(1);
    fresh.restore(Vec::new(), 0);
    assert!(!drain(&mut fresh).0.iter().any(|o| matches!(o, Output::Persist(_))));
}

#[test]
fn provider_writes_pass_through_to_gossip_and_come_back_as_provider_changes() {
    let mut m = member(0);
    let write = gossip::Command::Write {
        ns: Namespace::PROVIDERS,
        key: Bytes::from_static(b"some-provider-key"),
        value: Bytes::from_static(b"v"),
        expires_ms: 0,
    };
    m.handle(now_at(1_000), Input::Command(Command::Gossip(write)));
    let (out, _) = drain(&mut m);
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Event(Event::Providers(Change::Applied(e))) if e.ns == Namespace::PROVIDERS)));
    assert!(out.iter().any(|o| matches!(o, Output::Persist(Persist::Put(_)))));
    assert!(!out.iter().any(|o| matches!(o, Output::Event(Event::View(_)))));
    // A lookup with no member to ask ends at once.
    let lookup = gossip::Command::Lookup { id: 9, ns: Namespace::PROVIDERS, prefix: Bytes::new() };
    m.handle(now_at(2_000), Input::Command(Command::Gossip(lookup)));
    assert!(drain(&mut m).0.contains(&Output::Event(Event::Gossip(gossip::Event::LookupDone { id: 9, found: 0 }))));
}

/// Two members on virtual time; B's wall clock runs `skew_ms` behind.
fn run_pair(a: &mut Member, b: &mut Member, from_us: u64, to_us: u64, skew_ms: u64) {
    let mut t = from_us;
    let mut inflight: Vec<(u64, usize, PeerAddr, Vec<u8>)> = Vec::new();
    let mut deadlines = [Instant::ZERO; 2];
    while t < to_us {
        for (i, m) in [&mut *a, &mut *b].into_iter().enumerate() {
            let now = Now { at: now_at(t).at, wall_ms: now_at(t).wall_ms - if i == 1 { skew_ms } else { 0 } };
            let mut delivered = Vec::new();
            inflight.retain(|(at, to, from, bytes)| {
                if *to == i && *at <= t {
                    delivered.push((from.clone(), bytes.clone()));
                    false
                } else {
                    true
                }
            });
            for (from, bytes) in delivered {
                m.handle(now, Input::Receive { from, bytes });
            }
            if deadlines[i] <= now.at {
                m.handle(now, Input::Timeout);
            }
            loop {
                match m.poll_output() {
                    Output::Transmit(tx) => {
                        let to = if tx.to.0 == "n0" { 0 } else { 1 };
                        inflight.push((t + 2_000, to, PeerAddr::from(format!("n{i}")), tx.bytes));
                    }
                    Output::Timeout(at) => {
                        deadlines[i] = at;
                        break;
                    }
                    _ => {}
                }
            }
        }
        t += 1_000;
    }
}

#[test]
fn a_write_on_one_member_reaches_the_other_s_view_and_its_lag_is_measured() {
    let (mut one, mut two) = (member(0), member(1));
    two.handle(now_at(0), Input::Command(Command::Join(vec![PeerAddr("n0".into())])));
    run_pair(&mut one, &mut two, 0, 3_000_000, 0);
    assert_eq!(two.members().filter(|m| m.2 == gossip::MemberState::Alive).count(), 1);
    write(&mut one, 3_000_000, 1, vec![a("first.example", 1), a("second.example", 2)], Vec::new());
    run_pair(&mut one, &mut two, 3_000_000, 5_000_000, 0);
    assert_eq!(two.view().rrset_count(), 2);
    let lag = two.lag();
    assert_eq!(lag.count, 2, "{lag:?}");
    assert!(lag.max_ms >= 2 && lag.max_ms < 1_000, "{lag:?}");
    assert_eq!(one.lag().count, 0, "own writes are not measured");
}

#[test]
fn a_write_is_persisted_first_and_applied_only_once_the_disk_says_it_is_durable() {
    let mut m = member(0);
    drain(&mut m);
    let out = write_pending(&mut m, 1_000, 1, vec![a("later.example", 1)]);
    assert_eq!(persisting(&out), vec![1]);
    assert_eq!(dns_puts(&out).len(), 1, "the entry to make durable: {out:?}");
    let last_put = out.iter().rposition(|o| matches!(o, Output::Persist(_))).unwrap();
    let waiting = out.iter().position(|o| matches!(o, Output::Event(Event::Persisting { .. }))).unwrap();
    assert!(last_put < waiting, "the persists come before the event that names them");
    assert!(!out.iter().any(|o| matches!(o, Output::Event(Event::Written { .. } | Event::View(_)))));
    assert_eq!(m.view().rrset_count(), 0, "nothing is served before it is durable");
    assert!(m
        .store()
        .get(Namespace::DNS, &rumor_core::member::dns_key(&a("later.example", 1).owner, RType::A), WALL0 + 1)
        .is_none());
    m.handle(now_at(2_000), Input::Persisted { id: 1, result: Ok(()) });
    let (out, _) = drain(&mut m);
    assert_eq!(written(&out), Ok(WriteReport { inserted: 1, replaced: 0, removed: 0 }));
    assert!(out.iter().any(|o| matches!(o, Output::Event(Event::View(ViewChange::Put(_))))));
    assert!(dns_puts(&out).is_empty(), "its row is on disk already: {out:?}");
    assert_eq!(m.view().rrset_count(), 1);
}

#[test]
fn a_write_whose_persist_fails_changes_no_view_no_store_and_no_peer() {
    let (mut one, mut two) = (member(0), member(1));
    two.handle(now_at(0), Input::Command(Command::Join(vec![PeerAddr("n0".into())])));
    run_pair(&mut one, &mut two, 0, 3_000_000, 0);
    let entries_before = one.store().len();
    let sent_before = one.gossip().stats().messages_out;
    let out = write_pending(&mut one, 3_000_000, 1, vec![a("refused.example", 1)]);
    assert_eq!(persisting(&out), vec![1]);
    one.handle(now_at(3_001_000), Input::Persisted { id: 1, result: Err("No space left on device".into()) });
    let (out, _) = drain(&mut one);
    match written(&out) {
        Err(WriteError::Storage(msg)) => assert!(msg.contains("No space left on device"), "{msg}"),
        other => panic!("expected a storage error, got {other:?}"),
    }
    assert!(!out.iter().any(|o| matches!(o, Output::Event(Event::View(_)) | Output::Transmit(_))), "{out:?}");
    assert_eq!(one.view().rrset_count(), 0);
    assert_eq!(one.store().len(), entries_before, "the store holds nothing of it");
    assert_eq!(one.gossip().stats().messages_out, sent_before, "no push went out");
    // The disk's row goes back to what the store holds: nothing.
    assert!(out.iter().any(|o| matches!(o, Output::Persist(Persist::Remove(ns, _)) if *ns == Namespace::DNS)));
    run_pair(&mut one, &mut two, 3_001_000, 6_000_000, 0);
    assert_eq!(two.view().rrset_count(), 0, "the peer never hears of it");
    // The next write, once the disk is back, goes through.
    write(&mut one, 6_000_000, 2, vec![a("accepted.example", 2)], Vec::new());
    run_pair(&mut one, &mut two, 6_000_000, 8_000_000, 0);
    assert_eq!((one.view().rrset_count(), two.view().rrset_count()), (1, 1));
}

#[test]
fn an_earlier_write_applied_late_does_not_overwrite_a_later_one_on_disk() {
    let mut m = member(0);
    drain(&mut m);
    let first = write_pending(&mut m, 1_000, 1, vec![a("same.example", 1)]);
    let second = write_pending(&mut m, 1_500, 2, vec![a("same.example", 2)]);
    assert_eq!((dns_puts(&first).len(), dns_puts(&second).len()), (1, 1));
    // Both are durable in that order; the first applies: the row on disk is
    // the second's, and stays so.
    m.handle(now_at(2_000), Input::Persisted { id: 1, result: Ok(()) });
    let out = drain(&mut m).0;
    assert!(written(&out).is_ok());
    assert!(dns_puts(&out).is_empty() && !out.iter().any(|o| matches!(o, Output::Persist(Persist::Remove(..)))));
    m.handle(now_at(2_500), Input::Persisted { id: 2, result: Ok(()) });
    assert!(written(&drain(&mut m).0).is_ok());
    let name = Name::from_ascii("same.example").unwrap();
    assert_eq!(m.view().get(&name, RType::A, WALL0 + 3).unwrap().data, a("same.example", 2).data);
}

#[test]
fn a_failed_write_puts_back_on_disk_what_an_earlier_one_applied() {
    let mut m = member(0);
    drain(&mut m);
    write_pending(&mut m, 1_000, 1, vec![a("back.example", 1)]);
    write_pending(&mut m, 1_500, 2, vec![a("back.example", 2)]);
    m.handle(now_at(2_000), Input::Persisted { id: 1, result: Ok(()) });
    drain(&mut m);
    m.handle(now_at(2_500), Input::Persisted { id: 2, result: Err("disk full".into()) });
    let out = drain(&mut m).0;
    assert!(matches!(written(&out), Err(WriteError::Storage(_))));
    let rows = dns_puts(&out);
    assert_eq!(rows.len(), 1, "the first write's entry goes back on disk: {out:?}");
    assert_eq!(rows[0].value.as_ref(), a("back.example", 1).to_bytes().as_slice());
}

#[test]
fn a_conflict_that_arose_while_the_disk_worked_refuses_the_write_and_restores_the_row() {
    let mut m = member(0);
    drain(&mut m);
    write_pending(&mut m, 1_000, 1, vec![a("both.example", 1)]);
    write_pending(&mut m, 1_500, 2, vec![cname("both.example", "elsewhere.example")]);
    m.handle(now_at(2_000), Input::Persisted { id: 1, result: Ok(()) });
    drain(&mut m);
    m.handle(now_at(2_500), Input::Persisted { id: 2, result: Ok(()) });
    let out = drain(&mut m).0;
    assert!(matches!(written(&out), Err(WriteError::Conflict(_))), "{out:?}");
    assert!(out.iter().any(|o| matches!(o, Output::Persist(Persist::Remove(..)))), "the CNAME's row goes: {out:?}");
    assert_eq!(m.view().rrset_count(), 1);
}

#[test]
fn writes_beyond_the_pending_limit_are_refused_at_once() {
    let mut m = member(0);
    drain(&mut m);
    for id in 0..rumor_core::member::PENDING_WRITES_MAX as u64 {
        let out = write_pending(&mut m, 1_000, id, vec![a(&format!("h{id}.example"), 1)]);
        assert_eq!(persisting(&out), vec![id]);
    }
    let out = write_pending(&mut m, 1_000, u64::MAX, vec![a("one-too-many.example", 1)]);
    assert!(matches!(written(&out), Err(WriteError::Refused(_))));
    assert!(!out.iter().any(|o| matches!(o, Output::Persist(_))));
}

#[test]
fn remote_entries_for_a_key_a_write_holds_reach_the_disk_once_the_write_ends() {
    let (mut one, mut two) = (member(0), member(1));
    two.handle(now_at(0), Input::Command(Command::Join(vec![PeerAddr("n0".into())])));
    run_pair(&mut one, &mut two, 0, 3_000_000, 0);
    write_pending(&mut one, 3_000_000, 1, vec![a("raced.example", 1)]);
    write(&mut two, 3_000_000, 1, vec![a("raced.example", 2)], Vec::new());
    // Two's write arrives at one while one's own waits for the disk.
    let mut rows = Vec::new();
    let mut t = 3_000_000;
    while t < 4_000_000 {
        run_pair(&mut one, &mut two, t, t + 10_000, 0);
        t += 10_000;
    }
    let name = Name::from_ascii("raced.example").unwrap();
    assert!(one.view().get(&name, RType::A, WALL0 + 4_000).is_some(), "the remote write is served");
    one.handle(now_at(t), Input::Persisted { id: 1, result: Err("disk full".into()) });
    let out = drain(&mut one).0;
    rows.extend(dns_puts(&out));
    assert_eq!(rows.len(), 1, "{out:?}");
    assert_eq!(rows[0].value.as_ref(), a("raced.example", 2).to_bytes().as_slice(), "the remote entry, now on disk");
}
