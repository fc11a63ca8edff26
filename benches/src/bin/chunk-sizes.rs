//! Measures how chunk size trades deduplication against metadata on a dump series:
//! for each average chunk size, chunks every day's dump with Cairn's chunker and reports per day
//! the bytes of chunks not seen on any earlier day (raw, and zstd-1 compressed per chunk) and the
//! chunk count. Usage: `chunk-sizes DUMP_DIR [AVG_KIB...]` (defaults 16 32 64 128 256 512 1024).

use std::collections::HashSet;
use std::path::PathBuf;

use cairn_store::chunker::{Chunker, ChunkerParams};

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().expect("usage: chunk-sizes DUMP_DIR [AVG_KIB...]"));
    let mut avgs: Vec<u32> = args.map(|a| a.parse().expect("average size in KiB")).collect();
    if avgs.is_empty() {
        avgs = vec![16, 32, 64, 128, 256, 512, 1024];
    }
    let days = cairn_benches::dump_days(&dir).expect("dump dir");
    println!(
        "{:>8} {:>6} {:>8} {:>14} {:>14}",
        "avg_kib", "day", "chunks", "new_raw", "new_zstd1"
    );
    for avg in avgs {
        let chunker = Chunker::new(ChunkerParams::with_avg(avg * 1024), &[42; 32]);
        let mut seen: HashSet<[u8; 32]> = HashSet::new();
        let mut z = zstd::bulk::Compressor::new(1).unwrap();
        let mut later = Vec::new();
        for (d, path) in days.iter().enumerate() {
            let f = std::fs::File::open(path).expect("dump file");
            let (mut chunks, mut new_raw, mut new_z) = (0u64, 0u64, 0u64);
            chunker
                .for_each_chunk(
                    std::io::BufReader::new(f),
                    |c| {
                        chunks += 1;
                        if seen.insert(*blake3::hash(c).as_bytes()) {
                            new_raw += c.len() as u64;
                            new_z += z.compress(c).unwrap().len() as u64;
                        }
                        Ok::<_, std::io::Error>(())
                    },
                    |e| e,
                )
                .expect("read dump");
            println!("{avg:>8} {d:>6} {chunks:>8} {new_raw:>14} {new_z:>14}");
            if d > 0 {
                later.push(new_z);
            }
        }
        if !later.is_empty() {
            later.sort();
            println!("{avg:>8} median-later-day new_zstd1 = {}", later[later.len() / 2]);
        }
    }
}
