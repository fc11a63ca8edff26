//! Criterion benchmarks of each pipeline stage on dump-like data: chunking, keyed hashing,
//! compression (several zstd levels), sealing, whole-blob encode (compress + seal + verify) and
//! packing. Run: `cargo bench -p cairn-benches --bench store`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use cairn_store::blob::{BlobKind, Encoder};
use cairn_store::chunker::{Chunker, ChunkerParams};
use cairn_store::crypto::{Keys, Secrets};

/// SQL-dump-like bytes: INSERT rows with random digits, like sysbench's tables.
fn dump_like(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x1234_5678;
    let mut out = Vec::with_capacity(n + 256);
    let mut id = 0u64;
    while out.len() < n {
        out.extend_from_slice(format!("({id},{},'", x % 100_000).as_bytes());
        for i in 0..119 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            out.push(if i % 12 == 11 { b'-' } else { b'0' + (x % 10) as u8 });
        }
        out.extend_from_slice(b"'),\n");
        id += 1;
    }
    out.truncate(n);
    out
}

fn stages(c: &mut Criterion) {
    let data = dump_like(16 << 20);
    let keys = Keys::new(Secrets::generate());
    let mut g = c.benchmark_group("stages");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(data.len() as u64));
    for avg in [16u32 << 10, 64 << 10, 256 << 10, 1 << 20] {
        let chunker = Chunker::new(ChunkerParams::with_avg(avg), &[7; 32]);
        g.bench_with_input(BenchmarkId::new("chunk", avg / 1024), &data, |b, d| {
            b.iter(|| {
                let mut n = 0usize;
                chunker
                    .for_each_chunk(
                        &d[..],
                        |_| {
                            n += 1;
                            Ok::<_, ()>(())
                        },
                        |_| (),
                    )
                    .unwrap();
                n
            })
        });
    }
    g.bench_function("keyed_blake3", |b| b.iter(|| keys.chunk_id(&data)));
    let chunks: Vec<&[u8]> = data.chunks(64 << 10).collect();
    for level in [1, 3, 6] {
        let mut z = zstd::bulk::Compressor::new(level).unwrap();
        g.bench_function(BenchmarkId::new("zstd", level), |b| {
            b.iter(|| chunks.iter().map(|c| z.compress(c).unwrap().len()).sum::<usize>())
        });
    }
    g.bench_function("seal_xchacha20poly1305", |b| {
        b.iter(|| chunks.iter().map(|c| keys.seal(b"aad", c).len()).sum::<usize>())
    });
    for level in [1, 3] {
        let mut enc = Encoder::new(level);
        let ids: Vec<_> = chunks.iter().map(|c| keys.chunk_id(c)).collect();
        g.bench_function(BenchmarkId::new("encode_blob_verified", level), |b| {
            b.iter(|| {
                chunks
                    .iter()
                    .zip(&ids)
                    .map(|(c, id)| enc.encode(&keys, id, BlobKind::Data, c).unwrap().len())
                    .sum::<usize>()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, stages);
criterion_main!(benches);
