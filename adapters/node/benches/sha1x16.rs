//! SHA-1 of pieces: sixteen at once in AVX-512 lanes against one by one
//! with the `sha1` crate (SHA instructions where the CPU has them).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rumor_node::sha1x16::{available, digest_pieces_with, LANES};
use std::hint::black_box;

fn pieces(c: &mut Criterion) {
    // Sixteen 1 MiB pieces in 16 KiB blocks, as a download holds them.
    let data: Vec<Vec<Vec<u8>>> =
        (0..LANES).map(|i| (0..64).map(|b| vec![(i * 64 + b) as u8; 16 * 1024]).collect()).collect();
    let refs: Vec<&[Vec<u8>]> = data.iter().map(|p| p.as_slice()).collect();
    let mut g = c.benchmark_group("sha1_pieces");
    g.throughput(Throughput::Bytes((LANES * (1 << 20)) as u64));
    g.sample_size(20);
    g.bench_function(BenchmarkId::new("one_by_one", "16x1MiB"), |b| {
        b.iter(|| black_box(digest_pieces_with(black_box(&refs), false)))
    });
    if available() {
        g.bench_function(BenchmarkId::new("sixteen_lanes", "16x1MiB"), |b| {
            b.iter(|| black_box(digest_pieces_with(black_box(&refs), true)))
        });
    }
    g.finish();
}

criterion_group!(benches, pieces);
criterion_main!(benches);
