//! Keyframes: prune turns the delta chains around so that the newest version of every item reads
//! without deltas, and older versions read through *reverse* deltas against newer ones.
//!
//! Backups write forward deltas: a changed chunk is stored against the previous version's
//! chunks, so after a week of daily backups the newest dump is the most expensive to read (its
//! changed chunks decode through up to a week of deltas). Prune then, for the newest complete
//! version of each item (`K`, its data chunks):
//!
//! 1. finds `D`: every chunk of `K` with a copy stored as a delta (outside packs already marked
//!    for deletion), and, following bases (of the copies readers take, [`Index::bases`]), every
//!    chunk those chains read;
//! 2. stores each delta chunk of `K` whole (a *keyframe*), and each chunk of `D` outside `K` as a
//!    delta against the chunks of `D` that used it as a base (its *referrers*, newer versions),
//!    or whole when no delta is worth it. Roots that were whole and whose reverse delta saves
//!    nothing keep their copy;
//! 3. returns the chunks given new copies; prune then repacks every pack that holds an old copy
//!    of one of them (copying the pack's other live blobs) and marks those packs for deletion,
//!    as for any repack.
//!
//! In steady state (prune after every backup) `D` is the chunks the last backup changed and
//! their previous versions (yesterday's keyframes): each keyframe becomes a reverse delta, each
//! new delta a keyframe, and restoring N versions back reads through at most N deltas.
//!
//! *No cycle, ever.* The new copies point only from a chunk of `D` to its referrers, the reverse
//! of edges of the (acyclic) graph readers follow, and keyframes point nowhere: the new copies
//! alone are acyclic, and chunks outside `D` never gain a copy that points into... anything new.
//! While old and new copies both exist (until the marked packs go), readers take the copy with the
//! shortest recorded chain ([`Index::locations`]); every copy's recorded depth is 1 + the depth
//! of its bases' copies *when it was written*, and those copies still exist in that window, so
//! the depths readers follow strictly decrease. Once the old packs are deleted, a chunk of `D`
//! has only its new copy. A rewrite that is not ordered (a cycle in what the index says) is
//! skipped with a warning rather than guessed at.
//!
//! *A prune killed while deleting* breaks "those copies still exist": of the packs it deletes,
//! some are gone and some left (a CI run met it). An old delta copy of X against Y may then
//! remain, with its recorded depth counted through Y's old whole copy, now deleted, while Y's
//! only copy is the new reverse delta against X. The chunks are not lost (X's new copy reads
//! without Y), but the copies with the shortest recorded chains loop. Readers therefore take a
//! copy by trying them in order and passing over one whose chain comes back to a copy being
//! decoded ([`crate::read::BlobReader`]); the next prune deletes the rest (its marker remains).
//!
//! *Crash.* New copies go into new packs (published whole, like any pack) and into the index
//! before prune marks anything; a crash leaves extra copies, which the next prune repacks away.

use std::collections::{HashMap, HashSet};

use crate::blob::{BlobKind, Encoder};
use crate::error::Result;
use crate::id::{ChunkId, PackId};
use crate::index::Index;
use crate::pack::{Copier, FinishedPack, PackEntry};
use crate::progress::Progress;
use crate::read::BlobReader;
use crate::repo::{Repository, Synced};
use crate::sketch::{Sketch, Sketcher};
use crate::snapshot::{Item, ItemKind, Snapshot};

/// Referrers a reverse delta is encoded against (the zstd prefix is their concatenation).
const REVERSE_BASES: usize = 2;

/// What the rewrite did.
#[derive(Debug, Default)]
pub(crate) struct Rewrite {
    /// Chunks given a new copy (their old copies' packs are to be repacked).
    pub rewritten: HashSet<ChunkId>,
    /// Chain depth of each new copy.
    pub depth: HashMap<ChunkId, u8>,
    /// Packs the new copies went into.
    pub packs: Vec<FinishedPack>,
    pub keyframes: u64,
    pub reverse_deltas: u64,
    /// Sealed bytes of the new copies.
    pub bytes: u64,
    pub warning: Option<String>,
}

/// The newest complete version of each item among `kept` (by name; the later listed wins a tie
/// of times, as a backup picks the version it deltas against).
pub(crate) fn newest_items(kept: &[Snapshot]) -> Vec<&Item> {
    let mut newest: HashMap<&str, (i64, &Item)> = HashMap::new();
    for s in kept {
        for item in &s.items {
            if newest.get(item.name.as_str()).is_none_or(|(t, _)| *t <= s.time) {
                newest.insert(&item.name, (s.time, item));
            }
        }
    }
    let mut items: Vec<(i64, &Item)> = newest.into_values().collect();
    items.sort_by(|a, b| (a.0, &a.1.name).cmp(&(b.0, &b.1.name)));
    items.into_iter().map(|(_, i)| i).collect()
}

/// The chunks to rewrite, in an order where a chunk comes after every referrer it is encoded
/// against: keyframes (in stream order), then reverse deltas.
struct Graph {
    /// Chunks of `K` stored as deltas, in stream order.
    keyframes: Vec<ChunkId>,
    /// Chunks of `D` outside `K`, each after its referrers.
    reverse: Vec<ChunkId>,
    /// Of each chunk of `D` outside `K`: the chunks of `D` whose read copy uses it as a base.
    referrers: HashMap<ChunkId, Vec<ChunkId>>,
    /// Chunks of `D` whose read copy is whole.
    whole: HashSet<ChunkId>,
}

/// The data chunks of the newest complete version of each item (`K`), in stream order, once each.
pub(crate) fn newest_chunks(synced: &Synced, kept: &[Snapshot]) -> Result<Vec<ChunkId>> {
    let reader = BlobReader::new(synced)?;
    let (mut seen, mut order) = (HashSet::new(), Vec::new());
    for item in newest_items(kept) {
        // Content chunks only: a tree's listing is metadata, stored as such.
        let contents = match &item.kind {
            ItemKind::Stream { content } => vec![content.clone()],
            ItemKind::Tree { listing, .. } => synced
                .tree_entries(listing)?
                .into_iter()
                .filter_map(|e| e.content)
                .collect(),
        };
        for c in &contents {
            reader.for_each_leaf(c, &mut |_| {}, &mut |r| {
                if seen.insert(r.0) {
                    order.push(r.0);
                }
                Ok(())
            })?;
        }
    }
    Ok(order)
}

fn graph(idx: &Index, order: &[ChunkId], marked: &HashSet<PackId>) -> Result<std::result::Result<Graph, String>> {
    let newest: HashSet<ChunkId> = order.iter().copied().collect();
    let mut keyframes = Vec::new();
    let mut bases_of: HashMap<ChunkId, Vec<ChunkId>> = HashMap::new();
    let mut todo = Vec::new();
    for &id in order {
        // Any delta copy outside the marked packs: also one that a keyframe already beats, which
        // is what a prune killed half way through leaves (the chains behind it are then turned
        // around again, and the packs with the old copies repacked).
        let mut bases: Vec<ChunkId> = Vec::new();
        for (pack, copy_bases) in idx.delta_copies(&id)? {
            if marked.contains(&pack) {
                continue;
            }
            for b in copy_bases {
                if !bases.contains(&b) {
                    bases.push(b);
                }
            }
        }
        if !bases.is_empty() {
            keyframes.push(id);
            todo.extend(bases.iter().copied());
            bases_of.insert(id, bases);
        }
    }
    let mut whole = HashSet::new();
    let mut referrers: HashMap<ChunkId, Vec<ChunkId>> = HashMap::new();
    for (id, bases) in &bases_of {
        for b in bases {
            referrers.entry(*b).or_default().push(*id);
        }
    }
    while let Some(id) = todo.pop() {
        if bases_of.contains_key(&id) || whole.contains(&id) {
            continue;
        }
        let bases = idx.bases(&id)?;
        if bases.is_empty() {
            whole.insert(id);
        }
        for b in &bases {
            referrers.entry(*b).or_default().push(id);
            todo.push(*b);
        }
        bases_of.insert(id, bases);
    }
    // Kahn's order over the chunks outside K: a chunk is ready once every referrer outside K is.
    let outside: Vec<ChunkId> = bases_of
        .keys()
        .chain(whole.iter())
        .filter(|id| !newest.contains(*id))
        .copied()
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let mut pending: HashMap<ChunkId, usize> = outside
        .iter()
        .map(|id| {
            let n = referrers[id].iter().filter(|r| !newest.contains(*r)).count();
            (*id, n)
        })
        .collect();
    let mut ready: Vec<ChunkId> = pending.iter().filter(|(_, n)| **n == 0).map(|(id, _)| *id).collect();
    ready.sort();
    let mut reverse = Vec::with_capacity(outside.len());
    while let Some(id) = ready.pop() {
        reverse.push(id);
        for b in bases_of.get(&id).map(Vec::as_slice).unwrap_or_default() {
            if let Some(n) = pending.get_mut(b) {
                *n -= 1;
                if *n == 0 {
                    ready.push(*b);
                }
            }
        }
    }
    if reverse.len() != outside.len() {
        return Ok(Err(format!(
            "keyframes skipped: the delta chains of {} chunk(s) do not end (run `cairn check`)",
            outside.len() - reverse.len()
        )));
    }
    referrers.retain(|id, _| !newest.contains(id));
    whole.retain(|id| !newest.contains(id));
    Ok(Ok(Graph {
        keyframes,
        reverse,
        referrers,
        whole,
    }))
}

impl Repository {
    /// Stores the newest version of each item without deltas and the chains behind it reversed
    /// (see the module documentation). With `dry_run`, only counts.
    pub(crate) fn rewrite_keyframes(
        &self,
        synced: &Synced,
        idx: &mut Index,
        newest: &[ChunkId],
        marked: &HashSet<PackId>,
        dry_run: bool,
        progress: &dyn Progress,
    ) -> Result<Rewrite> {
        let mut out = Rewrite::default();
        let g = match graph(idx, newest, marked)? {
            Ok(g) => g,
            Err(w) => {
                out.warning = Some(w);
                return Ok(out);
            }
        };
        if dry_run {
            out.keyframes = g.keyframes.len() as u64;
            out.reverse_deltas = g.reverse.len() as u64;
            out.rewritten = g.keyframes.iter().chain(&g.reverse).copied().collect();
            return Ok(out);
        }
        progress.start("prune: keyframes", Some((g.keyframes.len() + g.reverse.len()) as u64));
        let reader = BlobReader::with_cache(synced, crate::cache::ChunkCache::shared(crate::read::CACHE_BYTES * 4))?;
        let mut enc = Encoder::with_delta_level(self.config.compression_level, self.config.delta.level);
        let sketcher = self.config.sketches().then(|| Sketcher::new(&self.keys.sketch_key()));
        let mut frames = Copier::new(self.store.as_ref(), &self.keys, self.config.pack_size);
        let mut reverse = Copier::new(self.store.as_ref(), &self.keys, self.config.pack_size);
        let publish = |fin: Option<FinishedPack>, idx: &mut Index, out: &mut Rewrite| -> Result<()> {
            if let Some(fin) = fin {
                idx.add_pack(&fin)?;
                out.packs.push(fin);
                crate::util::crash_point("prune-keyframes");
            }
            Ok(())
        };
        let entry = |id: ChunkId, kind, raw_len: usize, depth, sketch| PackEntry {
            id,
            kind,
            offset: 0,
            length: 0,
            raw_len: raw_len as u32,
            bases: Vec::new(),
            depth,
            sketch,
        };
        for id in &g.keyframes {
            let data = reader.read_shared(id)?;
            let sealed = enc.encode(&self.keys, id, BlobKind::Data, &data)?;
            let sketch = sketcher.as_ref().map(|s| s.sketch(&data)).unwrap_or_default();
            let fin = frames.add(&entry(*id, BlobKind::Data, data.len(), 0, sketch), &sealed)?;
            publish(fin, idx, &mut out)?;
            out.rewritten.insert(*id);
            out.depth.insert(*id, 0);
            out.keyframes += 1;
            out.bytes += sealed.len() as u64;
            progress.advance(1);
        }
        for id in &g.reverse {
            progress.advance(1);
            let data = reader.read_shared(id)?;
            let refs: Vec<ChunkId> = g.referrers[id].iter().take(REVERSE_BASES).copied().collect();
            let prefix = reader.prefix_for(id, None, &refs)?;
            let was_whole = g.whole.contains(id);
            // What the chunk costs whole: its stored copy if that is whole, else encoded now.
            let whole = if was_whole {
                None
            } else {
                Some(enc.encode(&self.keys, id, BlobKind::Data, &data)?)
            };
            let whole_len = match &whole {
                Some(w) => w.len(),
                None => idx.locations(id)?.first().map_or(usize::MAX, |l| l.length as usize),
            };
            let delta = enc.encode_delta(&self.keys, id, &data, &refs, prefix.as_slice(), whole_len / 4 * 3)?;
            let (sealed, e) = match (delta, whole) {
                (Some(d), _) => {
                    let depth = 1 + refs
                        .iter()
                        .map(|r| out.depth.get(r).copied().unwrap_or(0))
                        .max()
                        .unwrap_or(0);
                    let mut e = entry(*id, BlobKind::Delta, data.len(), depth, Sketch::default());
                    e.bases = refs;
                    out.reverse_deltas += 1;
                    (d, e)
                }
                // A root whose reverse delta saves too little keeps its whole copy.
                (None, None) => {
                    out.depth.insert(*id, 0);
                    continue;
                }
                (None, Some(w)) => {
                    let sketch = sketcher.as_ref().map(|s| s.sketch(&data)).unwrap_or_default();
                    out.keyframes += 1;
                    (w, entry(*id, BlobKind::Data, data.len(), 0, sketch))
                }
            };
            out.depth.insert(*id, e.depth);
            out.rewritten.insert(*id);
            out.bytes += sealed.len() as u64;
            let fin = reverse.add(&e, &sealed)?;
            publish(fin, idx, &mut out)?;
        }
        let fin = frames.finish()?;
        publish(fin, idx, &mut out)?;
        let fin = reverse.finish()?;
        publish(fin, idx, &mut out)?;
        progress.finish();
        Ok(out)
    }
}

/// The packs holding an old copy of a rewritten chunk: prune repacks them. Delta copies must go
/// (one left beside the new ones could point the wrong way); whole copies could stay, counted
/// dead, until their packs thin out, but on dumps whose changes are scattered that left the
/// repository half again as large after a week (docs/benchmarks.md), so they go too.
pub(crate) fn superseded_packs(idx: &Index, rw: &Rewrite) -> Result<HashSet<PackId>> {
    let new: HashSet<PackId> = rw.packs.iter().map(|p| p.id).collect();
    let mut out = HashSet::new();
    for id in &rw.rewritten {
        for loc in idx.locations(id)? {
            if !new.contains(&loc.pack) {
                out.insert(loc.pack);
            }
        }
    }
    Ok(out)
}
