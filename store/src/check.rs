//! `cairn check`: is everything every snapshot needs present and intact?
//!
//! Without `--read-data` the check is structural and cheap: every pack trailer is read and
//! authenticated again and its size compared with the index, every manifest is decrypted, and
//! every chunk any snapshot references (through stored chunk lists and tree listings too) must be
//! in the index. With `--read-data` (or a subset of packs) every selected pack is read whole, its
//! hash compared with its name, and every blob in it decrypted, decompressed and verified; the
//! snapshots that reference a damaged blob are named. A delta is verified by decoding it through
//! its bases; a chunk is only as good as its base, so damage is propagated along delta chains
//! (and a delta whose base no pack holds is damaged too) before snapshots are judged.

use std::collections::HashSet;

use crate::error::Result;
use crate::id::{ChunkId, PackId};
use crate::pack::{self, pack_path};
use crate::progress::Progress;
use crate::read::BlobReader;
use crate::repo::Repository;

/// How much pack data to read.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum ReadData {
    #[default]
    None,
    All,
    /// Percentage of packs (chosen at random), 0 < p <= 100.
    Subset(f64),
}

/// Options for `cairn check`.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    pub read_data: ReadData,
}

/// What check found.
#[derive(Debug, Default, serde::Serialize)]
pub struct CheckReport {
    pub snapshots: usize,
    pub packs: usize,
    pub packs_read: usize,
    pub blobs_verified: u64,
    /// Longest delta chain in the repository (deltas to decode to read one chunk).
    pub deepest_delta_chain: u8,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    /// Snapshots that cannot be fully restored.
    pub damaged_snapshots: Vec<String>,
}

impl CheckReport {
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }
}

impl Repository {
    /// Checks the repository; problems go into the report, only failures to run are errors.
    pub fn check(&self, opts: &CheckOptions, progress: &dyn Progress) -> Result<CheckReport> {
        // A shared lock: backups may run beside a check, an exclusive operation (prune) may not.
        let _lock = self.read_lock("check")?;
        self.check_unlocked(opts, progress)
    }

    /// The check, under a lock the caller holds.
    pub(crate) fn check_unlocked(&self, opts: &CheckOptions, progress: &dyn Progress) -> Result<CheckReport> {
        let mut report = CheckReport::default();
        let (synced, idx, sync) = self.sync_index()?;
        for (id, e) in &sync.unreadable {
            report.errors.push(format!("pack {id}: {e}"));
        }
        let leftovers = self.store.leftovers()?;
        if !leftovers.is_empty() {
            report.warnings.push(format!(
                "{} temporary file(s) in tmp/ from interrupted or running backups (removed by the next backup on their host)",
                leftovers.len()
            ));
        }

        // 1. Packs: trailer authenticates and matches the index; optionally read everything.
        let packs = idx.packs()?;
        report.packs = packs.len() + sync.unreadable.len();
        // Damaged copies (pack, blob): a chunk is lost only when every copy of it is damaged.
        let mut damaged: HashSet<(PackId, ChunkId)> = HashSet::new();
        let selected: HashSet<PackId> = match opts.read_data {
            ReadData::None => HashSet::new(),
            ReadData::All => packs.iter().map(|p| p.0).collect(),
            ReadData::Subset(pct) => packs
                .iter()
                .filter(|_| rand::random::<f64>() * 100.0 < pct)
                .map(|p| p.0)
                .collect(),
        };
        let total_read: u64 = packs.iter().filter(|p| selected.contains(&p.0)).map(|p| p.1).sum();
        let data_reader = BlobReader::with_cache(&synced, crate::cache::ChunkCache::shared(crate::read::CACHE_BYTES))?;
        progress.start("check packs", Some(total_read));
        for (id, size) in &packs {
            let entries = idx.pack_entries(id)?;
            match self.store.size(&pack_path(id)) {
                Ok(s) if s == *size => {}
                Ok(s) => {
                    report.errors.push(format!(
                        "pack {id}: size {s} differs from the {size} bytes indexed (truncated?)"
                    ));
                    damaged.extend(entries.iter().map(|e| (*id, e.id)));
                    continue;
                }
                Err(e) => {
                    report.errors.push(format!("pack {id}: {e}"));
                    damaged.extend(entries.iter().map(|e| (*id, e.id)));
                    continue;
                }
            }
            if let Err(e) = pack::read_trailer(self.store.as_ref(), &self.keys, id) {
                report.errors.push(e.to_string());
                damaged.extend(entries.iter().map(|e| (*id, e.id)));
                continue;
            }
            if selected.contains(id) {
                report.packs_read += 1;
                self.read_pack(id, &entries, &data_reader, &mut report, &mut damaged)?;
                progress.advance(*size);
            }
        }
        progress.finish();

        // What backups on this host must not deduplicate against (`trust.rs`).
        let read: HashSet<PackId> = selected.iter().copied().collect();
        crate::trust::record_damage(&self.opts.cache_dir, &self.config.repo_id, &damaged, |p| {
            opts.read_data == ReadData::All || read.contains(p)
        })?;
        let mut bad_blobs: HashSet<ChunkId> = HashSet::new();
        for (_, blob) in &damaged {
            let locs = idx.locations(blob)?;
            if locs.iter().all(|l| damaged.contains(&(l.pack, *blob))) {
                bad_blobs.insert(*blob);
            }
        }

        // 2. Damage spreads along delta chains: a delta of a damaged or absent base is damaged.
        let before = bad_blobs.len();
        let bad_blobs = idx.broken_closure(&bad_blobs)?;
        if bad_blobs.len() > before {
            report.errors.push(format!(
                "{} delta chunk(s) depend on damaged or missing bases",
                bad_blobs.len() - before
            ));
        }

        report.deepest_delta_chain = idx.deepest_chain()?;

        // 3. Snapshots: every referenced blob present and not damaged.
        let reader = BlobReader::new(&synced)?;
        for snap in self.snapshots()? {
            report.snapshots += 1;
            let snap = match snap {
                Ok(s) => s,
                Err(e) => {
                    report.errors.push(e.to_string());
                    continue;
                }
            };
            let mut problems = Vec::new();
            for item in &snap.items {
                let contents = match synced.item_contents(item) {
                    Ok(c) => c,
                    Err((c, e)) => {
                        problems.push(format!("item {:?}: tree listing: {e}", item.name));
                        c
                    }
                };
                for c in &contents {
                    // (count, up to three example chunk ids) of missing and of damaged chunks.
                    let missing = std::cell::RefCell::new((0u64, Vec::new()));
                    let damaged = std::cell::RefCell::new((0u64, Vec::new()));
                    let lookup_err = std::cell::RefCell::new(None);
                    let note = |cell: &std::cell::RefCell<(u64, Vec<ChunkId>)>, id: &ChunkId| {
                        let mut c = cell.borrow_mut();
                        c.0 += 1;
                        if c.1.len() < 3 {
                            c.1.push(*id);
                        }
                    };
                    let check_id = |id: &ChunkId| {
                        if bad_blobs.contains(id) {
                            note(&damaged, id);
                        } else {
                            match reader.index.contains(id) {
                                Ok(true) => {}
                                Ok(false) => note(&missing, id),
                                Err(e) => *lookup_err.borrow_mut() = Some(e),
                            }
                        }
                    };
                    let walked = reader.for_each_leaf(c, &mut |id| check_id(id), &mut |r| {
                        check_id(&r.0);
                        Ok(())
                    });
                    if let Some(e) = lookup_err.into_inner() {
                        return Err(e);
                    }
                    if let Err(e) = walked {
                        problems.push(format!("item {:?}: chunk list unreadable: {e}", item.name));
                    }
                    let examples = |ids: &[ChunkId]| ids.iter().map(|i| i.to_hex()).collect::<Vec<_>>().join(", ");
                    let (n, ids) = missing.into_inner();
                    if n > 0 {
                        problems.push(format!(
                            "item {:?}: {n} chunk(s) missing, e.g. {}",
                            item.name,
                            examples(&ids)
                        ));
                    }
                    let (n, ids) = damaged.into_inner();
                    if n > 0 {
                        problems.push(format!(
                            "item {:?}: {n} chunk(s) damaged, e.g. {}",
                            item.name,
                            examples(&ids)
                        ));
                    }
                }
            }
            if !problems.is_empty() {
                report.damaged_snapshots.push(snap.name.clone());
                for p in problems {
                    report.errors.push(format!("snapshot {:?}: {p}", snap.name));
                }
            }
        }
        Ok(report)
    }

    fn read_pack(
        &self,
        id: &PackId,
        entries: &[pack::PackEntry],
        reader: &BlobReader,
        report: &mut CheckReport,
        bad: &mut HashSet<(PackId, ChunkId)>,
    ) -> Result<()> {
        let data = match self.store.get(&pack_path(id)) {
            Ok(d) => d,
            Err(e) => {
                report.errors.push(format!("pack {id}: {e}"));
                bad.extend(entries.iter().map(|e| (*id, e.id)));
                return Ok(());
            }
        };
        if blake3::hash(&data).as_bytes() != id.as_bytes() {
            report.errors.push(format!(
                "pack {id}: content does not match its name (damaged or tampered)"
            ));
        }
        let sketcher = crate::sketch::Sketcher::new(&self.keys.sketch_key());
        for e in entries {
            let range = e.offset as usize..(e.offset as usize + e.length as usize);
            let ok = data
                .get(range)
                .ok_or_else(|| "outside the file".to_string())
                .and_then(|b| verify_blob(&self.keys, reader, id, &e.id, b).map_err(|err| err.to_string()));
            match ok {
                Ok(chunk) => {
                    report.blobs_verified += 1;
                    // A wrong sketch loses nothing (it only proposes delta bases, which are
                    // verified like any content), but says the writer was wrong: reported.
                    if !e.sketch.is_empty() && sketcher.sketch(&chunk) != e.sketch {
                        report.errors.push(format!(
                            "pack {id}: blob {}: the sketch in the trailer does not match the chunk \
                             (the chunk itself is intact)",
                            e.id
                        ));
                    }
                }
                Err(why) => {
                    report.errors.push(format!("pack {id}: blob {}: {why}", e.id));
                    // A delta that opens fine failed through a base: that is the base's damage,
                    // spread along the chain below, not this copy's.
                    let own = !data
                        .get(e.offset as usize..(e.offset as usize + e.length as usize))
                        .is_some_and(|b| crate::blob::intact_alone(&self.keys, &e.id, b));
                    if own {
                        bad.insert((*id, e.id));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Decodes a blob's copy in `pack` from its sealed bytes (a delta is resolved through its bases,
/// never through this copy): its chunk.
fn verify_blob(
    keys: &crate::crypto::Keys,
    reader: &BlobReader,
    pack: &PackId,
    id: &ChunkId,
    sealed: &[u8],
) -> Result<Vec<u8>> {
    let opened = crate::blob::open_blob(keys, id, sealed)?;
    let prefix = reader.prefix_for(id, Some(*pack), &opened.bases)?;
    opened.finish(keys, id, prefix.as_slice())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::progress::NoProgress;
    use crate::repo::test_repo;
    use crate::write::BackupOptions;

    fn all() -> CheckOptions {
        CheckOptions {
            read_data: ReadData::All,
        }
    }

    #[test]
    fn check_finds_damaged_and_missing_packs_and_names_the_snapshots_they_hurt() {
        let dir = tempfile::tempdir().unwrap();
        let repo = test_repo(dir.path());
        let stream: Vec<u8> = (0..3_000_000u32)
            .map(|n| (n.wrapping_mul(2654435761) >> 9) as u8)
            .collect();
        let b = crate::repo::test_backup(&repo, "s");
        b.add_stream("data", &stream[..]).unwrap();
        b.commit().unwrap();

        let clean = repo.check(&all(), &NoProgress).unwrap();
        assert!(clean.ok(), "{:?}", clean.errors);
        assert_eq!((clean.snapshots, clean.packs_read), (1, clean.packs));
        assert!(clean.blobs_verified > 0);

        // One flipped byte in the blob area of a pack.
        let packs = repo.store.list("packs/").unwrap();
        let victim = &packs[0].name;
        let mut bytes = repo.store.get(victim).unwrap();
        bytes[100] ^= 1;
        repo.store.delete(victim).unwrap();
        repo.store.put(victim, &bytes).unwrap();
        let r = repo.check(&all(), &NoProgress).unwrap();
        assert!(!r.ok());
        assert_eq!(r.damaged_snapshots, vec!["s".to_string()], "{:?}", r.errors);

        // A pack gone from the repository but still in the cache.
        repo.store.delete(victim).unwrap();
        let r = repo
            .check(
                &CheckOptions {
                    read_data: ReadData::None,
                },
                &NoProgress,
            )
            .unwrap();
        assert!(!r.ok(), "a missing pack is an error");
        assert_eq!(r.damaged_snapshots, vec!["s".to_string()], "{:?}", r.errors);
    }

    /// Backups of a format 2 repository record a sketch for every data chunk; check recomputes
    /// them, and a trailer whose sketch does not match its chunk is reported (nothing is lost).
    #[test]
    fn check_verifies_the_sketches_in_trailers() {
        let dir = tempfile::tempdir().unwrap();
        let repo = test_repo(dir.path());
        assert!(repo.config.sketches(), "new repositories keep sketches");
        let stream: Vec<u8> = (0..1_000_000u32)
            .map(|n| (n.wrapping_mul(2654435761) >> 9) as u8)
            .collect();
        let b = repo.backup(BackupOptions::default(), Arc::new(NoProgress)).unwrap();
        b.add_stream("data", &stream[..]).unwrap();
        b.commit().unwrap();
        let (_, idx) = repo.synced().unwrap();
        let entries: Vec<_> = idx
            .packs()
            .unwrap()
            .iter()
            .flat_map(|(p, _)| idx.pack_entries(p).unwrap())
            .collect();
        let data: Vec<_> = entries
            .iter()
            .filter(|e| e.kind == crate::blob::BlobKind::Data)
            .collect();
        assert!(!data.is_empty() && data.iter().all(|e| !e.sketch.is_empty()));
        assert!(repo.check(&all(), &NoProgress).unwrap().ok());

        // A pack whose trailer carries a wrong sketch for an intact chunk.
        let chunk = b"a chunk whose sketch is recorded wrongly, long enough to be sampled: \
                      0123456789 abcdefghij 0123456789 klmnopqrst 0123456789 uvwxyz 0123456789 \
                      0123456789 abcdefghij 0123456789 klmnopqrst 0123456789 uvwxyz 0123456789"
            .repeat(20);
        let id = repo.keys.chunk_id(&chunk);
        let sealed = crate::blob::Encoder::new(1)
            .encode(&repo.keys, &id, crate::blob::BlobKind::Data, &chunk)
            .unwrap();
        let mut w = crate::pack::PackWriter::new(repo.store.as_ref()).unwrap();
        let wrong = crate::sketch::Sketch([7; crate::sketch::SUPER_FEATURES]);
        w.add(
            id,
            crate::blob::BlobKind::Data,
            chunk.len() as u32,
            &sealed,
            &[],
            0,
            wrong,
        )
        .unwrap();
        let pack = w.finish(&repo.keys).unwrap();
        let r = repo.check(&all(), &NoProgress).unwrap();
        assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
        assert!(
            r.errors[0].contains(&pack.id.to_string()) && r.errors[0].contains("sketch"),
            "{:?}",
            r.errors
        );
        assert!(r.damaged_snapshots.is_empty());
    }
}
