//! Simulates delta-encoding policies on a dump series before they go into the store: each day's
//! dump is cut with Cairn's chunker; an exact duplicate costs nothing; a new chunk is stored
//! either whole (zstd 1) or as a zstd delta against the previous day's chunk that overlaps it most
//! (same byte offsets), whichever is smaller. Policies differ in which base is allowed:
//!
//! - `chain:D`: the previous version itself, as long as the chain stays at most D deltas deep
//!   (reading a chunk decodes up to D deltas); at depth D the chunk is stored whole.
//! - `root`: always the previous version's full ancestor (depth 1: one delta to decode), so the
//!   delta carries every change since that ancestor.
//!
//! Usage: `delta-sim DUMP_DIR AVG_KIB LEVEL POLICY...` e.g. `delta-sim series 64 3 chain:8 root`.

use std::collections::HashMap;
use std::path::PathBuf;

use cairn_store::chunker::{Chunker, ChunkerParams};

#[derive(Clone)]
struct Stored {
    /// The chunk's bytes (kept for the next day's deltas).
    data: Vec<u8>,
    /// Deltas to decode to read this chunk (0 = stored whole).
    depth: u32,
    /// The full chunk this one's chain starts from.
    root: [u8; 32],
}

fn delta(level: i32, base: &[u8], data: &[u8]) -> usize {
    use zstd::zstd_safe::{CCtx, CParameter};
    let mut cctx = CCtx::create();
    cctx.set_parameter(CParameter::CompressionLevel(level)).unwrap();
    cctx.set_parameter(CParameter::WindowLog(22)).unwrap();
    cctx.ref_prefix(base).unwrap();
    let mut out = vec![0u8; zstd::zstd_safe::compress_bound(data.len())];
    cctx.compress2(&mut out[..], data).unwrap()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().expect("usage: delta-sim DUMP_DIR AVG_KIB LEVEL POLICY..."));
    let avg: u32 = args.next().expect("AVG_KIB").parse().unwrap();
    let level: i32 = args.next().expect("LEVEL").parse().unwrap();
    let policies: Vec<String> = args.collect();
    let days = cairn_benches::dump_days(&dir).expect("dump dir");
    let chunker = Chunker::new(ChunkerParams::with_avg(avg * 1024), &[42; 32]);
    let mut z = zstd::bulk::Compressor::new(1).unwrap();
    for policy in &policies {
        let (is_root, max_depth, multi) = match policy.split_once(':') {
            Some(("chain", d)) => (false, d.parse::<u32>().unwrap(), false),
            Some(("multi", d)) => (false, d.parse::<u32>().unwrap(), true),
            _ if policy == "root" => (true, 1, false),
            _ => panic!("unknown policy {policy}"),
        };
        let mut store: HashMap<[u8; 32], Stored> = HashMap::new();
        let mut prev: Vec<(u64, [u8; 32], usize)> = Vec::new(); // (offset, id, len) of yesterday
        let mut total_later = 0u64;
        let mut worst_depth = 0;
        for (d, path) in days.iter().enumerate() {
            let data = std::fs::read(path).unwrap();
            let mut cur = Vec::new();
            let (mut added, mut n_delta, mut n_full, mut n_dup) = (0u64, 0, 0, 0);
            let mut off = 0u64;
            let mut pi = 0usize;
            chunker
                .for_each_chunk(
                    &data[..],
                    |c| {
                        let id = *blake3::hash(c).as_bytes();
                        let (start, end) = (off, off + c.len() as u64);
                        cur.push((off, id, c.len()));
                        off = end;
                        if store.contains_key(&id) {
                            n_dup += 1;
                            return Ok::<_, ()>(());
                        }
                        // Yesterday's chunk overlapping [start, end) the most.
                        while pi + 1 < prev.len() && prev[pi].0 + (prev[pi].2 as u64) <= start {
                            pi += 1;
                        }
                        let mut best: Option<([u8; 32], u64)> = None;
                        let mut overlapping = Vec::new();
                        let mut j = pi;
                        while j < prev.len() && prev[j].0 < end {
                            let (o, pid, l) = prev[j];
                            let ov = end.min(o + l as u64).saturating_sub(start.max(o));
                            if best.is_none_or(|b| ov > b.1) {
                                best = Some((pid, ov));
                            }
                            if ov > 0 {
                                overlapping.push(pid);
                            }
                            j += 1;
                        }
                        if multi && !overlapping.is_empty() {
                            overlapping.truncate(3);
                            let depth = overlapping.iter().map(|p| store[p].depth).max().unwrap() + 1;
                            let full = z.compress(c).unwrap().len();
                            let mut cost = full;
                            let mut stored = Stored {
                                data: c.to_vec(),
                                depth: 0,
                                root: id,
                            };
                            if depth <= max_depth {
                                let base: Vec<u8> =
                                    overlapping.iter().flat_map(|p| store[p].data.iter().copied()).collect();
                                let dl = delta(level, &base, c);
                                if dl < full / 2 {
                                    cost = dl;
                                    stored.depth = depth;
                                }
                            }
                            if stored.depth > 0 {
                                n_delta += 1
                            } else {
                                n_full += 1
                            }
                            worst_depth = worst_depth.max(stored.depth);
                            added += cost as u64 + 87 + 32 * overlapping.len() as u64;
                            store.insert(id, stored);
                            return Ok(());
                        }
                        let full = z.compress(c).unwrap().len();
                        let mut stored = Stored {
                            data: c.to_vec(),
                            depth: 0,
                            root: id,
                        };
                        let mut cost = full;
                        if let Some((pid, _)) = best {
                            let p = &store[&pid];
                            let (base_id, depth) = if is_root { (p.root, 1) } else { (pid, p.depth + 1) };
                            if depth <= max_depth {
                                let base = &store[&base_id].data;
                                let dl = delta(level, base, c);
                                if dl < full / 2 {
                                    cost = dl;
                                    stored.depth = depth;
                                    stored.root = store[&base_id].root;
                                }
                            }
                        }
                        if stored.depth > 0 {
                            n_delta += 1;
                        } else {
                            n_full += 1;
                        }
                        worst_depth = worst_depth.max(stored.depth);
                        added += cost as u64 + 87; // + seal and trailer overhead per blob
                        store.insert(id, stored);
                        Ok(())
                    },
                    |_| (),
                )
                .unwrap();
            // Chunk list: 36 bytes per chunk, stored again when it changes (upper bound).
            added += 36 * cur.len() as u64;
            println!("{policy:>8} day{d}: added {added:>11} (delta {n_delta}, full {n_full}, dup {n_dup})");
            if d > 0 {
                total_later += added;
            }
            prev = cur;
        }
        println!(
            "{policy:>8} mean later day: {} bytes, deepest chain {worst_depth}",
            total_later / (days.len() as u64 - 1)
        );
    }
}
