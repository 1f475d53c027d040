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
        match auth.handle_query(&bytes, Transport::Udp, &store, 0) {
            Verdict::Reply(r) => {
                prop_assert!(r.len() <= 512);
                prop_assert!(decode(&r).is_ok());
            }
            Verdict::Drop | Verdict::Forward => {}
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
