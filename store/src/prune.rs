//! Forgetting snapshots and pruning the data no snapshot needs any more.
//!
//! `forget` deletes snapshot manifests (the roots). `prune` then works under an exclusive
//! lock, so no backup, restore or check runs beside it (a backup that starts meanwhile waits for
//! the lock, and prune waits for backups already running):
//!
//! 1. *Plan.* The live set is every blob a complete snapshot references (leaves, chunk-list
//!    chunks, tree listings and their files' chunks) plus, transitively, the bases of every live
//!    delta. Failed snapshots are roots of nothing and are removed. Each pack is then *kept*
//!    (enough of it is live), *repacked* (less than `repack_below` of its bytes are live) or
//!    *deleted* (nothing live). A kept pack that holds a dead delta whose base would go is
//!    repacked as well, so that every blob left in the repository can still be decoded.
//! 2. *Copy.* Live blobs of repacked packs that no kept pack also holds are copied, still
//!    sealed (each one authenticated on the way), into new packs, which are published and
//!    fsynced like any pack.
//! 3. *Index.* The new packs are added to the index cache and the old ones removed from it.
//! 4. *Delete.* Only now are the manifests of failed snapshots and the old pack files deleted.
//!
//! A crash at any point leaves every blob a kept snapshot needs in some pack on disk: before
//! step 4 nothing was deleted, and in step 4 every live blob of a deleted pack already sits in a
//! published new pack or in a kept one. What a crash can leave behind is extra copies (packs
//! that a next prune deletes) and files in `tmp/`.
//!
//! Memory follows the live set (one 32-byte id per live blob, a few tens of bytes with the set's
//! overhead) plus one pack being copied; time follows the kept snapshots' chunk lists (read to
//! find the live set) and the bytes deleted and copied, not the repository's size.

use std::collections::HashSet;

use serde::Serialize;

use crate::blob;
use crate::error::{Error, Result};
use crate::id::{ChunkId, PackId};
use crate::pack::{pack_path, FinishedPack, PackEntry, PackWriter};
use crate::progress::Progress;
use crate::repo::Repository;
use crate::restore::BlobReader;
use crate::snapshot::Snapshot;

/// How prune decides.
#[derive(Debug, Clone, Copy)]
pub struct PruneOptions {
    /// Only plan; change nothing.
    pub dry_run: bool,
    /// Repack a pack when less than this fraction of its bytes is live (0 never repacks,
    /// 1 repacks every pack with any dead blob).
    pub repack_below: f64,
}

impl Default for PruneOptions {
    fn default() -> Self {
        Self {
            dry_run: false,
            repack_below: 0.5,
        }
    }
}

/// What prune found and did (or, with `dry_run`, would do).
#[derive(Debug, Default, Clone, Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    /// Failed snapshots removed.
    pub failed_snapshots: Vec<String>,
    pub snapshots_kept: usize,
    pub live_blobs: u64,
    pub packs_before: u64,
    pub bytes_before: u64,
    pub packs_deleted: u64,
    pub packs_repacked: u64,
    pub packs_written: u64,
    /// Live bytes copied out of repacked packs.
    pub bytes_copied: u64,
    pub bytes_after: u64,
}

/// One pack's fate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Keep,
    Repack,
    Delete,
}

impl Repository {
    /// Deletes the manifests of the named snapshots. Their data stays until `prune`.
    pub fn forget(&self, names: &[String]) -> Result<()> {
        let _lock = self.lock(false, "forget")?;
        for n in names {
            if !self.snapshot_exists(n) {
                return Err(Error::UnknownSnapshot(n.clone()));
            }
        }
        for n in names {
            self.backend
                .remove(&crate::snapshot::manifest_path(&self.snapshot_id(n)))?;
        }
        Ok(())
    }

    /// Removes failed snapshots and every blob no remaining snapshot needs; see the module
    /// documentation for the order that keeps this crash-safe.
    pub fn prune(&self, opts: &PruneOptions, progress: &dyn Progress) -> Result<PruneReport> {
        let _lock = self.lock(true, "prune")?;
        let mut idx = self.index()?;
        let mut report = PruneReport {
            dry_run: opts.dry_run,
            ..Default::default()
        };
        let mut kept: Vec<Snapshot> = Vec::new();
        for s in self.snapshots()? {
            // An unreadable manifest may name blobs we cannot see: refuse rather than guess.
            let s = s.map_err(|e| {
                Error::Invalid(format!(
                    "prune needs every snapshot manifest readable: {e} (run `cairn check`)"
                ))
            })?;
            if s.is_complete() {
                kept.push(s);
            } else {
                report.failed_snapshots.push(s.name.clone());
            }
        }
        report.snapshots_kept = kept.len();

        // 1. Plan.
        progress.start("prune: find live data", None);
        let reader = BlobReader::new(self, idx.reopen()?);
        let mut live: HashSet<ChunkId> = HashSet::new();
        for s in &kept {
            for item in &s.items {
                for c in &self.item_contents(item).map_err(|(_, e)| e)? {
                    let mut meta = Vec::new();
                    reader.for_each_leaf(c, &mut |id| meta.push(*id), &mut |r| {
                        live.insert(r.0);
                        Ok(())
                    })?;
                    live.extend(meta);
                }
            }
        }
        let mut frontier: Vec<ChunkId> = live.iter().copied().collect();
        while let Some(id) = frontier.pop() {
            for b in idx.bases(&id)? {
                if live.insert(b) {
                    frontier.push(b);
                }
            }
        }
        report.live_blobs = live.len() as u64;
        progress.finish();

        let mut packs: Vec<(PackId, u64)> = Vec::new();
        for b in 0..=255u8 {
            packs.extend(idx.packs_with_prefix(b)?);
        }
        report.packs_before = packs.len() as u64;
        report.bytes_before = packs.iter().map(|p| p.1).sum();
        let mut fates: Vec<(PackId, u64, Fate)> = Vec::with_capacity(packs.len());
        // Of each kept pack: every blob in it, and the bases of its dead deltas.
        let mut kept_blobs: Vec<(usize, Vec<ChunkId>, Vec<Vec<ChunkId>>)> = Vec::new();
        for (id, size) in &packs {
            let entries = idx.pack_entries(id)?;
            let live_bytes: u64 = entries
                .iter()
                .filter(|e| live.contains(&e.id))
                .map(|e| u64::from(e.length))
                .sum();
            let total: u64 = entries.iter().map(|e| u64::from(e.length)).sum();
            let fate = if live_bytes == 0 {
                Fate::Delete
            } else if (live_bytes as f64) < opts.repack_below * total as f64 {
                Fate::Repack
            } else {
                Fate::Keep
            };
            if fate == Fate::Keep {
                let dead_deltas = entries
                    .iter()
                    .filter(|e| !e.bases.is_empty() && !live.contains(&e.id))
                    .map(|e| e.bases.clone())
                    .collect();
                kept_blobs.push((fates.len(), entries.iter().map(|e| e.id).collect(), dead_deltas));
            }
            fates.push((*id, *size, fate));
        }
        // A kept pack may hold dead deltas whose bases go with the packs deleted or repacked.
        // Such a blob could never be read again, so its pack is repacked (dropping it) too;
        // that can strand dead deltas elsewhere, hence the loop. Live blobs never strand: their
        // bases are live.
        loop {
            let survivors: HashSet<ChunkId> = kept_blobs
                .iter()
                .filter(|(i, _, _)| fates[*i].2 == Fate::Keep)
                .flat_map(|(_, ids, _)| ids.iter().copied())
                .collect();
            let mut changed = false;
            for (i, _, dead_deltas) in &kept_blobs {
                if fates[*i].2 == Fate::Keep
                    && dead_deltas
                        .iter()
                        .flatten()
                        .any(|b| !survivors.contains(b) && !live.contains(b))
                {
                    fates[*i].2 = Fate::Repack;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        let mut secured: HashSet<ChunkId> = kept_blobs
            .iter()
            .filter(|(i, _, _)| fates[*i].2 == Fate::Keep)
            .flat_map(|(_, ids, _)| ids.iter().copied())
            .filter(|id| live.contains(id))
            .collect();
        drop(kept_blobs);
        for (_, size, fate) in &fates {
            match fate {
                Fate::Delete => report.packs_deleted += 1,
                Fate::Repack => report.packs_repacked += 1,
                Fate::Keep => report.bytes_after += size,
            }
        }

        // 2. Copy the live blobs of repacked packs (estimated in a dry run).
        let mut written: Vec<FinishedPack> = Vec::new();
        let repack: Vec<&(PackId, u64, Fate)> = fates.iter().filter(|f| f.2 == Fate::Repack).collect();
        progress.start("prune: repack", Some(repack.iter().map(|f| f.1).sum()));
        let mut writer: Option<PackWriter> = None;
        for (id, size, _) in &repack {
            let entries = idx.pack_entries(id)?;
            let wanted: Vec<&PackEntry> = entries
                .iter()
                .filter(|e| live.contains(&e.id) && !secured.contains(&e.id))
                .collect();
            if opts.dry_run {
                report.bytes_copied += wanted.iter().map(|e| u64::from(e.length)).sum::<u64>();
                secured.extend(wanted.iter().map(|e| e.id));
                progress.advance(*size);
                continue;
            }
            let data = self.backend.read(&pack_path(id))?;
            for e in wanted {
                let sealed = data
                    .get(e.offset as usize..e.offset as usize + e.length as usize)
                    .ok_or_else(|| crate::error::corrupt(format!("pack {id}"), "a blob lies outside the file"))?;
                // Authenticate before copying, so prune never spreads a damaged blob; the bases
                // recorded in the new trailer are the blob's own (the index's `bases` table is
                // keyed by chunk id and may mix several stored versions of one chunk).
                let opened = blob::open_blob(&self.keys, &e.id, sealed)?;
                let w = match &mut writer {
                    Some(w) => w,
                    None => writer.insert(PackWriter::new(self.backend.as_ref())?),
                };
                w.add(e.id, e.kind, e.raw_len, sealed, &opened.bases, e.depth)?;
                report.bytes_copied += u64::from(e.length);
                secured.insert(e.id);
                if w.len() >= self.config.pack_size {
                    written.push(writer.take().expect("present").finish(&self.keys)?);
                    crate::util::crash_point("prune-copying");
                }
            }
            progress.advance(*size);
        }
        if let Some(w) = writer.take() {
            if !w.is_empty() {
                written.push(w.finish(&self.keys)?);
                crate::util::crash_point("prune-copying");
            }
        }
        progress.finish();
        report.packs_written = written.len() as u64;
        report.bytes_after += written.iter().map(|p| p.size).sum::<u64>();
        if opts.dry_run {
            // Copied blobs would fill new packs of about the same bytes.
            report.bytes_after += report.bytes_copied;
            report.packs_written = report.bytes_copied.div_ceil(self.config.pack_size.max(1));
            return Ok(report);
        }

        // 3. Index: new packs in, old packs out, before any file is deleted.
        for p in &written {
            idx.add_pack(p)?;
        }
        let gone: Vec<PackId> = fates.iter().filter(|f| f.2 != Fate::Keep).map(|f| f.0).collect();
        for id in &gone {
            idx.remove_pack(id)?;
        }
        crate::util::crash_point("prune-indexed");

        // 4. Delete.
        for name in &report.failed_snapshots {
            self.backend
                .remove(&crate::snapshot::manifest_path(&self.snapshot_id(name)))?;
        }
        progress.start("prune: delete", Some(gone.len() as u64));
        for id in &gone {
            self.backend.remove(&pack_path(id))?;
            progress.advance(1);
            crate::util::crash_point("prune-deleting");
        }
        progress.finish();
        Ok(report)
    }
}
