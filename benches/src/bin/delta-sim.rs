//! Simulates base-selection policies on a dump series before they go into the store: each day's
//! dump is cut with Cairn's chunker; an exact duplicate costs nothing; a new chunk is stored as a
//! zstd delta against its bases when that is under a quarter of its raw size (as the store
//! does), otherwise whole (zstd 1). Chains are limited as the store limits them (between D/2 and
//! D deltas, by chunk id). Policies differ in how bases are found:
//!
//! - `pos:D`: positional, as the store's `PositionalSelector`: the previous day's chunks that
//!   overlap the new chunk's range (at most 3), the two streams re-anchored by duplicates.
//! - `sketch:D`: content-based: the stored chunks (of any day) sharing the most super-features
//!   with the new chunk (at most `K` of them, `sketch:D:K`), positional when none shares one.
//! - `mix:D`: the best content match first, then positional candidates to fill up to 3.
//!
//! Flags after a third colon (`pos:16:1:rl`): `r` delta-encodes a chunk whose chain would pass
//! its limit against its chain's root (depth 1) instead of storing it whole; `l` stores the
//! chunk list as a delta against the previous day's.
//!
//! Costs: the blob (plus 87 bytes of seal and trailer entry, 32 per base) and the chunk list (36 bytes per chunk, or
//! its delta), every day.
//!
//! Usage: `delta-sim DUMP_DIR AVG_KIB LEVEL POLICY...` e.g. `delta-sim series 64 3 pos:16 sketch:16`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use cairn_store::chunker::{Chunker, ChunkerParams};
use cairn_store::sketch::{Sketch, SUPER_FEATURES};

struct Stored {
    data: Vec<u8>,
    depth: u32,
    /// The chunk stored whole that this one's chain (through first bases) starts from.
    root: [u8; 32],
}

fn delta(level: i32, base: &[u8], data: &[u8]) -> usize {
    use zstd::zstd_safe::{CCtx, CParameter};
    let mut cctx = CCtx::create();
    cctx.set_parameter(CParameter::CompressionLevel(level)).unwrap();
    cctx.set_parameter(CParameter::WindowLog(24)).unwrap();
    cctx.ref_prefix(base).unwrap();
    let mut out = vec![0u8; zstd::zstd_safe::compress_bound(data.len())];
    cctx.compress2(&mut out[..], data).unwrap()
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Pos,
    Sketch,
    Mix,
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().expect("usage: delta-sim DUMP_DIR AVG_KIB LEVEL POLICY..."));
    let avg: u32 = args.next().expect("AVG_KIB").parse().unwrap();
    let level: i32 = args.next().expect("LEVEL").parse().unwrap();
    let policies: Vec<String> = args.collect();
    let days = cairn_benches::dump_days(&dir).expect("dump dir");
    let chunker = Chunker::new(ChunkerParams::with_avg(avg * 1024), &[42; 32]);
    let sketcher = cairn_store::sketch::Sketcher::new(&[7; 32]);
    let mut z = zstd::bulk::Compressor::new(1).unwrap();
    for policy in &policies {
        let parts: Vec<&str> = policy.split(':').collect();
        let kind = match parts[0] {
            "pos" => Kind::Pos,
            "sketch" => Kind::Sketch,
            "mix" => Kind::Mix,
            p => panic!("unknown policy {p}"),
        };
        let max_depth: u32 = parts.get(1).map_or(16, |d| d.parse().unwrap());
        let k: usize = parts.get(2).map_or(1, |d| d.parse().unwrap());
        let flags = parts.get(3).copied().unwrap_or("");
        // r: a chunk whose chain would pass its limit is delta-encoded against its chain's root
        // (depth 1) rather than stored whole; l: the chunk list is a delta against yesterday's.
        let (rebase, list_delta) = (flags.contains('r'), flags.contains('l'));
        let mut store: HashMap<[u8; 32], Stored> = HashMap::new();
        let mut features: HashMap<u64, Vec<[u8; 32]>> = HashMap::new();
        let mut prev: Vec<(u64, [u8; 32], usize)> = Vec::new(); // (offset, id, len) of yesterday
        let mut total_later = 0u64;
        let mut worst_depth = 0;
        let mut prev_list: Vec<u8> = Vec::new();
        let mut sketch_time = Duration::ZERO;
        for (d, path) in days.iter().enumerate() {
            let data = std::fs::read(path).unwrap();
            let prev_at: HashMap<[u8; 32], u64> = prev.iter().map(|(o, id, _)| (*id, *o)).collect();
            let mut cur = Vec::new();
            let (mut added, mut n_delta, mut n_full, mut n_dup, mut n_found, mut n_rebased) = (0u64, 0, 0, 0, 0, 0);
            let mut off = 0u64;
            let mut shift = 0i64;
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
                            if let Some(o) = prev_at.get(&id) {
                                shift = *o as i64 - start as i64;
                            }
                            return Ok::<_, ()>(());
                        }
                        // Positional candidates: yesterday's chunks over [start, end) + shift.
                        let ps = (start as i64 + shift).max(0) as u64;
                        let pe = ps + c.len() as u64;
                        let i = prev.partition_point(|(o, _, l)| o + *l as u64 <= ps);
                        let positional: Vec<[u8; 32]> = prev[i..]
                            .iter()
                            .take_while(|(o, _, _)| *o < pe)
                            .map(|p| p.1)
                            .take(3)
                            .collect();
                        let t = Instant::now();
                        let sk: Sketch = sketcher.sketch(c);
                        sketch_time += t.elapsed();
                        let mut counts: HashMap<[u8; 32], usize> = HashMap::new();
                        let keyed = |(pos, f): (usize, &u32)| ((pos as u64) << 32) | *f as u64;
                        for f in sk.0.iter().enumerate().map(keyed) {
                            for cand in features.get(&f).into_iter().flatten() {
                                *counts.entry(*cand).or_default() += 1;
                            }
                        }
                        let mut similar: Vec<([u8; 32], usize)> = counts.into_iter().collect();
                        // Most features shared first; among equals the positional one, then newest.
                        similar.sort_by_key(|(cid, n)| (std::cmp::Reverse(*n), !positional.contains(cid)));
                        if !similar.is_empty() {
                            n_found += 1;
                        }
                        let bases: Vec<[u8; 32]> = match kind {
                            Kind::Pos => positional,
                            Kind::Sketch if similar.is_empty() => positional,
                            Kind::Sketch => similar.iter().take(k).map(|s| s.0).collect(),
                            Kind::Mix => {
                                let mut b: Vec<[u8; 32]> = similar.iter().take(k).map(|s| s.0).collect();
                                for p in positional {
                                    if b.len() < 3 && !b.contains(&p) {
                                        b.push(p);
                                    }
                                }
                                b
                            }
                        };
                        for f in sk.0.iter().enumerate().map(keyed) {
                            let v = features.entry(f).or_default();
                            v.insert(0, id);
                            v.truncate(4);
                        }
                        let full = z.compress(c).unwrap().len();
                        let mut stored = Stored {
                            data: c.to_vec(),
                            depth: 0,
                            root: id,
                        };
                        let mut cost = full;
                        let mut bases = bases;
                        if !bases.is_empty() {
                            let mut depth = bases.iter().map(|b| store[b].depth).max().unwrap() + 1;
                            let limit = max_depth - id[0] as u32 % (max_depth / 2 + 1);
                            if depth > limit && rebase {
                                bases = vec![store[&bases[0]].root];
                                depth = 1;
                                n_rebased += 1;
                            }
                            if depth <= limit {
                                let base: Vec<u8> = bases.iter().flat_map(|b| store[b].data.iter().copied()).collect();
                                let dl = delta(level, &base, c) + 32 * bases.len();
                                if dl < full.min(c.len() / 4) {
                                    cost = dl;
                                    stored.depth = depth;
                                    stored.root = store[&bases[0]].root;
                                }
                            }
                        }
                        if stored.depth > 0 {
                            n_delta += 1;
                        } else {
                            n_full += 1;
                        }
                        worst_depth = worst_depth.max(stored.depth);
                        added += cost as u64 + 87;
                        store.insert(id, stored);
                        Ok(())
                    },
                    |_| (),
                )
                .unwrap();
            let list: Vec<u8> = cur
                .iter()
                .flat_map(|(_, id, l)| id.iter().copied().chain((*l as u32).to_le_bytes()))
                .collect();
            let list_cost = if list_delta && !prev_list.is_empty() {
                delta(level, &prev_list, &list)
            } else {
                list.len()
            };
            added += list_cost as u64;
            println!(
                "{policy:>10} day{d}: added {added:>11} (list {list_cost}, delta {n_delta}, full {n_full}, rebased {n_rebased}, dup {n_dup}, similar found {n_found})"
            );
            prev_list = list;
            if d > 0 {
                total_later += added;
            }
            prev = cur;
        }
        println!(
            "{policy:>10} mean later day: {} bytes, deepest chain {worst_depth}, sketching {:.2} s ({} features/chunk)",
            total_later / (days.len() as u64 - 1),
            sketch_time.as_secs_f64(),
            SUPER_FEATURES
        );
    }
}
