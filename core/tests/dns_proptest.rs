//! Property tests of the DNS codec and authority: what we build parses back
//! to the same message, and no bytes at all make either panic.

use core::net::{Ipv4Addr, Ipv6Addr};
use proptest::prelude::*;
use rumor_core::dns::*;

fn label() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_-]{1,12}"
}

fn name() -> impl Strategy<Value = Name> {
    prop::collection::vec(label(), 0..5).prop_map(|labels| Name::from_ascii(&labels.join(".")).unwrap())
}

fn rdata() -> impl Strategy<Value = RData> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|b| RData::A(Ipv4Addr::from(b))),
        any::<[u8; 16]>().prop_map(|b| RData::Aaaa(Ipv6Addr::from(b))),
        name().prop_map(RData::Cname),
        name().prop_map(RData::Ns),
        name().prop_map(RData::Ptr),
        (any::<u16>(), name()).prop_map(|(preference, exchange)| RData::Mx { preference, exchange }),
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..4).prop_map(RData::Txt),
        (any::<u16>(), any::<u16>(), any::<u16>(), name()).prop_map(|(priority, weight, port, target)| RData::Srv {
            priority,
            weight,
            port,
            target
        }),
        (name(), name(), any::<[u32; 5]>()).prop_map(|(mname, rname, n)| RData::Soa(Soa {
            mname,
            rname,
            serial: n[0],
            refresh: n[1],
            retry: n[2],
            expire: n[3],
            minimum: n[4],
        })),
        (1000u16..2000, prop::collection::vec(any::<u8>(), 0..30))
            .prop_map(|(t, data)| { RData::Unknown { rtype: RType(t), data } }),
    ]
}

fn record() -> impl Strategy<Value = Record> {
    (name(), any::<u16>(), any::<u32>(), rdata()).prop_map(|(name, class, ttl, data)| Record { name, class, ttl, data })
}

fn header() -> impl Strategy<Value = Header> {
    (any::<u16>(), any::<[bool; 9]>(), 0u8..16, 0u8..16).prop_map(|(id, f, opcode, rcode)| Header {
        id,
        qr: f[0],
        opcode,
        aa: f[1],
        tc: f[2],
        rd: f[3],
        ra: f[4],
        z: f[5],
        ad: f[6],
        cd: f[7],
        rcode,
    })
}

fn edns() -> impl Strategy<Value = Option<Edns>> {
    prop::option::of(
        (
            any::<u16>(),
            any::<u8>(),
            any::<u8>(),
            any::<bool>(),
            prop::collection::vec((any::<u16>(), prop::collection::vec(any::<u8>(), 0..20)), 0..3),
        )
            .prop_map(|(udp_size, ext_rcode, version, dnssec_ok, opts)| Edns {
                udp_size,
                ext_rcode,
                version,
                dnssec_ok,
                options: opts.into_iter().map(|(code, data)| EdnsOption { code, data }).collect(),
            }),
    )
}

fn message() -> impl Strategy<Value = Message> {
    (
        header(),
        prop::collection::vec(
            (name(), any::<u16>(), any::<u16>()).prop_map(|(name, t, qclass)| Question {
                name,
                qtype: RType(t),
                qclass,
            }),
            0..3,
        ),
        prop::collection::vec(record(), 0..6),
        prop::collection::vec(record(), 0..3),
        prop::collection::vec(record(), 0..3),
        edns(),
    )
        .prop_map(|(header, questions, answers, authorities, additionals, edns)| Message {
            header,
            questions,
            answers,
            authorities,
            additionals,
            edns,
        })
}

proptest! {
    #[test]
    fn built_messages_parse_back_identical(m in message()) {
        let bytes = encode(&m);
        prop_assert!(bytes.len() <= 65_535);
        let back = decode(&bytes).map_err(|e| TestCaseError::fail(format!("{e} in {bytes:?}")))?;
        prop_assert_eq!(back, m);
    }

    #[test]
    fn limited_encoding_stays_under_the_limit_and_parses(m in message(), limit in 12usize..600) {
        let (bytes, _tc) = encode_limited(&m, limit);
        // The header and the OPT record are always written.
        let opt = m.edns.as_ref().map_or(0, |e| 11 + e.options.iter().map(|o| 4 + o.data.len()).sum::<usize>());
        prop_assert!(bytes.len() <= limit.max(12) + opt);
        prop_assert!(decode(&bytes).is_ok());
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = decode(&bytes);
        let _ = decode_header(&bytes);
    }

    #[test]
    fn decoding_corrupted_messages_never_panics(m in message(), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut bytes = encode(&m);
        for (at, v) in flips {
            let i = at.index(bytes.len());
            bytes[i] = v;
        }
        let _ = decode(&bytes);
    }

    #[test]
    fn the_authority_answers_or_drops_any_bytes_without_panicking(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let mut store = RecordStore::new();
        store.put(RRset {
            owner: Name::from_ascii("a.b").unwrap(),
            rtype: RType::A,
            ttl: 10,
            expires_at_ms: 10_000,
            data: vec![RData::A(Ipv4Addr::LOCALHOST)],
        });
        let mut auth = Authority::new(AuthorityConfig::default());
        let mut r = Vec::new();
        match auth.answer(0, &bytes, Transport::Udp, &store, &mut r) {
            Verdict::Reply => {
                prop_assert!(r.len() <= 512);
                prop_assert!(decode(&r).is_ok());
            }
            Verdict::Drop | Verdict::Forward => prop_assert!(r.is_empty()),
        }
    }

    #[test]
    fn names_round_trip_through_text(n in name()) {
        let text = n.to_string();
        prop_assert_eq!(Name::from_ascii(&text).unwrap(), n);
    }
}

proptest! {
    #[test]
    fn stored_rrsets_read_back_and_garbage_never_panics(
        owner in name(),
        data in prop::collection::vec(rdata(), 1..5),
        ttl in any::<u32>(),
        expires_at_ms in any::<u64>(),
        garbage in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        // An RRset holds one type: keep the data of the first record's type.
        let rtype = data[0].rtype();
        let data: Vec<RData> = data.into_iter().filter(|d| d.rtype() == rtype).collect();
        let set = RRset { owner, rtype, ttl, expires_at_ms, data };
        prop_assert_eq!(RRset::from_bytes(&set.to_bytes()).unwrap(), set);
        let _ = RRset::from_bytes(&garbage);
    }

    #[test]
    fn rdata_text_round_trips(d in rdata()) {
        let text = rumor_core::dns::text::rdata_to_text(&d);
        prop_assert_eq!(rumor_core::dns::text::rdata_from_text(d.rtype(), &text).unwrap(), d);
    }
}

/// A store over a few names and types, so random queries hit, miss, meet
/// CNAMEs, empty non-terminals and expired sets.
fn small_store() -> impl Strategy<Value = (RecordStore, u64)> {
    let owner = prop::sample::select(vec!["a.x", "b.a.x", "A.y", "x", "c.d.e.x", "m.y"]);
    let set = (owner, 0usize..6, 1u32..100, 0u64..50_000, prop::collection::vec(any::<[u8; 4]>(), 1..5));
    (prop::collection::vec(set, 0..10), 0u64..60_000).prop_map(|(sets, now)| {
        let mut store = RecordStore::new();
        for (owner, kind, ttl, exp, ips) in sets {
            let data: Vec<RData> = match kind {
                0 => ips.iter().map(|b| RData::A((*b).into())).collect(),
                1 => ips.iter().map(|b| RData::Aaaa(Ipv6Addr::from([b[0]; 16]))).collect(),
                2 => vec![RData::Txt(vec![ips[0].to_vec()])],
                3 => vec![RData::Cname(Name::from_ascii("a.x").unwrap())],
                4 => vec![RData::Mx { preference: 1, exchange: Name::from_ascii("m.y").unwrap() }],
                _ => vec![RData::Ptr(Name::from_ascii("b.a.x").unwrap())],
            };
            let name = Name::from_ascii(owner).unwrap();
            // Keep the CNAME rule, as the API does.
            let rtype = data[0].rtype();
            let clash = store.rrsets_at(&name, 0).any(|s| (s.rtype == RType::CNAME) != (rtype == RType::CNAME));
            if !clash {
                store.put(RRset { owner: name, rtype, ttl, expires_at_ms: exp, data });
            }
        }
        (store, now)
    })
}

fn fast_query() -> impl Strategy<Value = Vec<u8>> {
    let qname = prop::sample::select(vec!["a.x", "B.A.x", "a.y", "x", "d.e.x", "e.x", "nope.x", "m.Y", ".", "q"]);
    let qtype = prop::sample::select(vec![1u16, 28, 16, 5, 15, 12, 6, 2, 99]);
    (qname, qtype, prop::option::of(0u16..5000), any::<bool>(), any::<u16>()).prop_map(|(n, t, edns, dnssec_ok, id)| {
        encode(&Message {
            header: Header { id, rd: id % 2 == 0, cd: id % 3 == 0, ..Header::default() },
            questions: vec![Question { name: Name::from_ascii(n).unwrap(), qtype: RType(t), qclass: CLASS_IN }],
            edns: edns.map(|udp_size| Edns { udp_size, dnssec_ok, ..Edns::default() }),
            ..Message::default()
        })
    })
}

proptest! {
    #[test]
    fn the_fast_path_answers_exactly_as_the_general_path(
        (store, now) in small_store(),
        queries in prop::collection::vec(fast_query(), 1..20),
        zoned in any::<bool>(),
        tcp in any::<bool>(),
    ) {
        let config = AuthorityConfig {
            zones: if zoned { vec![Zone { apex: Name::from_ascii("x").unwrap() }] } else { Vec::new() },
            ..AuthorityConfig::default()
        };
        let transport = if tcp { Transport::Tcp } else { Transport::Udp };
        let mut fast = Authority::new(config.clone());
        let mut general = Authority::new(AuthorityConfig { fast_path: false, ..config });
        let (mut got, mut want) = (Vec::new(), Vec::new());
        for q in &queries {
            let expected = general.answer(now, q, transport, &store, &mut want);
            let verdict = fast.answer(now, q, transport, &store, &mut got);
            prop_assert_eq!(verdict, expected);
            if verdict == Verdict::Reply {
                prop_assert_eq!(decode(&got).unwrap(), decode(&want).unwrap());
            }
        }
    }
}

#[derive(Debug, Clone)]
enum StoreOp {
    Put(usize, bool, u64),
    RemoveRRset(usize, bool),
    RemoveName(usize),
    Expire(u64),
}

const UNIVERSE: [&str; 7] = ["x", "a.x", "b.a.x", "c.b.a.x", "y", "z.y", "Q.z.Y"];

proptest! {
    /// The store against a plain reference: a map from (lower-case name,
    /// type) to expiry, where existence is "a live set at the name or
    /// below it".
    #[test]
    fn the_store_agrees_with_a_plain_reference_model(
        ops in prop::collection::vec(prop_oneof![
            (0usize..7, any::<bool>(), 1u64..100).prop_map(|(n, a, e)| StoreOp::Put(n, a, e)),
            (0usize..7, any::<bool>()).prop_map(|(n, a)| StoreOp::RemoveRRset(n, a)),
            (0usize..7).prop_map(StoreOp::RemoveName),
            (0u64..100).prop_map(StoreOp::Expire),
        ], 1..40),
        probe_at in 0u64..100,
    ) {
        let names: Vec<Name> = UNIVERSE.iter().map(|n| Name::from_ascii(n).unwrap()).collect();
        let mut store = RecordStore::new();
        let mut model: std::collections::BTreeMap<(Vec<u8>, u16), u64> = Default::default();
        let key = |n: &Name| n.to_lowercase().as_wire().to_vec();
        for op in ops {
            match op {
                StoreOp::Put(i, is_a, exp) => {
                    let (rtype, data) = if is_a {
                        (RType::A, RData::A(Ipv4Addr::LOCALHOST))
                    } else {
                        (RType::TXT, RData::Txt(vec![b"t".to_vec()]))
                    };
                    store.put(RRset { owner: names[i].clone(), rtype, ttl: 100, expires_at_ms: exp, data: vec![data] });
                    model.insert((key(&names[i]), rtype.0), exp);
                }
                StoreOp::RemoveRRset(i, is_a) => {
                    let rtype = if is_a { RType::A } else { RType::TXT };
                    let had = model.remove(&(key(&names[i]), rtype.0)).is_some();
                    prop_assert_eq!(store.remove_rrset(&names[i], rtype), had);
                }
                StoreOp::RemoveName(i) => {
                    let k = key(&names[i]);
                    let before = model.len();
                    model.retain(|(n, _), _| *n != k);
                    prop_assert_eq!(store.remove_name(&names[i]), before - model.len());
                }
                StoreOp::Expire(now) => {
                    store.expire(now);
                    model.retain(|_, exp| *exp > now);
                }
            }
            for n in &names {
                for rtype in [RType::A, RType::TXT] {
                    let live = model.get(&(key(n), rtype.0)).is_some_and(|e| *e > probe_at);
                    prop_assert_eq!(store.get(n, rtype, probe_at).is_some(), live);
                }
                let exists = model.iter().any(|((owner, _), exp)| {
                    *exp > probe_at && Name::from_wire(owner).unwrap().is_within(n)
                });
                prop_assert_eq!(store.name_exists(n, probe_at), exists, "{}", n);
                prop_assert_eq!(store.exists_by_key(&key(n), probe_at), exists);
            }
        }
    }
}

proptest! {
    #[test]
    fn provider_entries_of_any_bytes_never_panic_the_overlay(
        key in prop::collection::vec(any::<u8>(), 0..60),
        value in prop::collection::vec(any::<u8>(), 0..80),
        deleted in any::<bool>(),
    ) {
        use rumor_core::replica::{Change, Entry, Namespace, Version};
        let e = Entry {
            ns: Namespace::PROVIDERS,
            key: key.clone().into(),
            value: value.into(),
            writer: 1,
            version: Version(1),
            expires_ms: 0,
            deleted,
        };
        let mut o = rumor_core::overlay::Overlay::new();
        o.follow(&Change::Applied(e));
        o.follow(&Change::Removed { ns: Namespace::PROVIDERS, key: key.into() });
        prop_assert_eq!(o.torrents(), 0);
    }
}
