//! Benchmarks of the last-writer-wins merge and of applying remote entries.

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use rumor_core::replica::{merge, Entry, Namespace, Store, StoreConfig, Version};

fn entry(i: u64, writer: u64) -> Entry {
    Entry {
        ns: Namespace::DNS,
        key: Bytes::from(format!("host{}.example.A", i % 1000)),
        value: Bytes::from_static(b"\x0a\x00\x00\x01"),
        writer,
        version: Version::new(1_700_000_000_000 + i, 0),
        expires_ms: 0,
        deleted: false,
    }
}

fn benches(c: &mut Criterion) {
    let a = entry(1, 1);
    let b = entry(2, 2);
    c.bench_function("merge two entries", |bench| bench.iter(|| merge(black_box(a.clone()), black_box(b.clone()))));
    let batch: Vec<Entry> = (0..10_000).map(|i| entry(i, i % 7)).collect();
    c.bench_function("apply 10k remote entries to an empty store", |bench| {
        bench.iter(|| {
            let mut s = Store::new(StoreConfig::default(), 99);
            for e in &batch {
                let _ = s.apply(e.clone(), 1_800_000_000_000);
            }
            while s.drain_changes().is_some() {}
            s.len()
        })
    });
}

criterion_group!(merge_benches, benches);

fn envelope(c: &mut Criterion) {
    use rumor_core::gossip::{open, seal, Body, Keyring, MemberState, MemberUpdate, Packet};
    let ring = Keyring::new(1, [7; 32]);
    let p = Packet {
        from: 1,
        addr: "10.0.0.1:5300".into(),
        incarnation: 3,
        sent_ms: 1_700_000_000_000,
        seq: 1_740_800_000_000_001,
        complete: true,
        updates: (0..2)
            .map(|i| MemberUpdate { id: i, addr: "10.0.0.2:5300".into(), incarnation: 1, state: MemberState::Alive })
            .collect(),
        body: Body::Syn { summary: Some((0xdead_beef, 12)), push: vec![], recent: vec![] },
    };
    let sealed = seal(&ring, [1; 24], &p, 256);
    c.bench_function("seal a small gossip packet", |b| b.iter(|| seal(&ring, black_box([1; 24]), black_box(&p), 256)));
    c.bench_function("open a small gossip packet", |b| b.iter(|| open(&ring, black_box(&sealed), 65_536)));
}

/// A gossip round as the simulator sends most: one pushed entry, a piggybacked
/// update, no summary. Encoded and decoded by the direct codec (what
/// `seal` and `open` use) and by postcard through serde (the definition).
fn packet_codec(c: &mut Criterion) {
    use rumor_core::gossip::{decode_packet, encode_packet, Body, MemberState, MemberUpdate, Packet, Pushed};
    use rumor_core::replica::{Entry, Namespace, Version};
    let p = Packet {
        from: 1_000_017,
        addr: "10.0.0.17:5300".into(),
        incarnation: 0,
        sent_ms: 1_700_000_000_123,
        seq: 1_740_800_000_000_001,
        complete: true,
        updates: vec![MemberUpdate {
            id: 1_000_042,
            addr: "10.0.0.42:5300".into(),
            incarnation: 1,
            state: MemberState::Alive,
        }],
        body: Body::Syn {
            summary: None,
            push: vec![Pushed {
                entry: Entry {
                    ns: Namespace(1),
                    key: bytes::Bytes::from_static(b"free.local"),
                    value: bytes::Bytes::from_static(&[10, 1, 0, 15, 1, 104]),
                    writer: 1_000_003,
                    version: Version(1_700_000_000_100 << 16),
                    expires_ms: 1_700_000_360_000,
                    deleted: false,
                },
                prev: Version(1_700_000_000_000 << 16),
            }],
            recent: vec![],
        },
    };
    let bytes = postcard::to_allocvec(&p).expect("serializes");
    c.bench_function("encode a gossip round (direct)", |b| {
        b.iter(|| encode_packet(black_box(&p), Vec::with_capacity(128)))
    });
    c.bench_function("encode a gossip round (postcard)", |b| {
        b.iter(|| postcard::to_extend(black_box(&p), Vec::with_capacity(128)).expect("serializes"))
    });
    c.bench_function("decode a gossip round (direct)", |b| b.iter(|| decode_packet(black_box(&bytes))));
    c.bench_function("decode a gossip round (postcard)", |b| {
        b.iter(|| postcard::from_bytes::<Packet>(black_box(&bytes)).expect("decodes"))
    });
}

criterion_group!(envelope_benches, envelope, packet_codec);
criterion_main!(merge_benches, envelope_benches);
