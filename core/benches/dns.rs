//! Codec and authority costs: parse a query, build a response, answer a
//! query against 10,000 names (hit, miss, and a round-robin set).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rumor_core::dns::*;
use std::hint::black_box;
use std::net::Ipv4Addr;

const NOW: u64 = 1_700_000_000_000;

fn query(name: &str, edns: bool) -> Vec<u8> {
    encode(&Message {
        header: Header { id: 7, rd: true, ..Header::default() },
        questions: vec![Question { name: Name::from_ascii(name).unwrap(), qtype: RType::A, qclass: CLASS_IN }],
        edns: edns.then(Edns::default),
        ..Message::default()
    })
}

fn store(names: usize) -> RecordStore {
    let mut s = RecordStore::new();
    for i in 0..names {
        s.put(RRset {
            owner: Name::from_ascii(&format!("host{i}.bench.local")).unwrap(),
            rtype: RType::A,
            ttl: 3600,
            expires_at_ms: NOW + 3_600_000,
            data: vec![RData::A(Ipv4Addr::from(0x0a00_0000 + i as u32))],
        });
    }
    s.put(RRset {
        owner: Name::from_ascii("rr.bench.local").unwrap(),
        rtype: RType::A,
        ttl: 3600,
        expires_at_ms: NOW + 3_600_000,
        data: (1..=4).map(|i| RData::A(Ipv4Addr::new(10, 1, 1, i))).collect(),
    });
    s
}

fn codec(c: &mut Criterion) {
    let q = query("host4242.bench.local", true);
    let mut g = c.benchmark_group("dns_codec");
    g.throughput(Throughput::Elements(1));
    g.bench_function("decode_query", |b| b.iter(|| decode(black_box(&q)).unwrap()));
    let mut auth = Authority::new(AuthorityConfig::default());
    let s = store(10);
    let mut resp = Vec::new();
    let verdict = auth.answer(NOW, &query("rr.bench.local", true), Transport::Udp, &s, &mut resp);
    assert_eq!(verdict, Verdict::Reply);
    let msg = decode(&resp).unwrap();
    g.bench_function("decode_response_4a", |b| b.iter(|| decode(black_box(&resp)).unwrap()));
    g.bench_function("encode_response_4a", |b| b.iter(|| encode(black_box(&msg))));
    g.finish();
}

fn authority(c: &mut Criterion) {
    let s = store(10_000);
    let mut g = c.benchmark_group("dns_authority_10k_names");
    g.throughput(Throughput::Elements(1));
    for (label, name) in
        [("hit", "host4242.bench.local"), ("miss_nxdomain", "nohost.bench.local"), ("round_robin_4", "rr.bench.local")]
    {
        let q = query(name, true);
        let mut auth = Authority::new(AuthorityConfig::default());
        // One reply buffer reused across queries, as the UDP server does.
        let mut out = Vec::with_capacity(1232);
        g.bench_function(label, |b| {
            b.iter_batched_ref(
                || (),
                |_| auth.answer(NOW, black_box(&q), Transport::Udp, &s, &mut out),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, codec, authority);
criterion_main!(benches);
