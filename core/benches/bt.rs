//! Benchmarks of the BitTorrent codecs and picker. CI only checks that they
//! compile (`cargo bench --no-run`).
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rumor_core::bt::bitfield::Bitfield;
use rumor_core::bt::picker::{Picker, PickerConfig, Received};
use rumor_core::bt::wire::{Decoder, DecoderConfig, Message};

fn wire_decode(c: &mut Criterion) {
    let mut stream = Vec::new();
    for i in 0..256u32 {
        Message::Have(i).encode(&mut stream);
        Message::Piece { index: i, begin: 0, data: Bytes::from(vec![7u8; 16384]) }.encode(&mut stream);
    }
    let mut g = c.benchmark_group("wire");
    g.throughput(Throughput::Bytes(stream.len() as u64));
    g.bench_function("decode 256 blocks in 1500-byte reads", |b| {
        b.iter(|| {
            let mut d =
                Decoder::new(DecoderConfig { piece_count: 1000, expect_handshake: false, ..DecoderConfig::default() });
            let mut n = 0;
            for chunk in stream.chunks(1500) {
                d.feed(chunk);
                while let Some(m) = d.next() {
                    n += m.is_ok() as usize;
                }
            }
            n
        })
    });
    g.finish();
}

fn picker(c: &mut Criterion) {
    let pieces = 100_000u32;
    let mut g = c.benchmark_group("picker");
    g.bench_function("pick and receive 1000 blocks of a 100k-piece torrent, 50 peers", |b| {
        b.iter_batched(
            || {
                let mut p = Picker::new(16384, pieces as u64 * 16384, PickerConfig::default(), 1);
                for peer in 0..50u64 {
                    let mut bf = Bitfield::new(pieces);
                    for i in 0..pieces {
                        if (i as u64 * 2654435761 + peer * 40503) % 7 < 3 {
                            bf.set(i);
                        }
                    }
                    p.peer_bitfield(peer, &bf);
                }
                p
            },
            |mut p| {
                for round in 0..20u64 {
                    for peer in 0..50u64 {
                        let _ = round;
                        for r in p.pick(peer, 1) {
                            if let Received::New { piece_complete: true, .. } = p.block_received(peer, r) {
                                p.piece_verified(r.index);
                            }
                        }
                    }
                }
                p
            },
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, wire_decode, picker);
criterion_main!(benches);
